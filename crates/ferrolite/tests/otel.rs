//! OpenTelemetry traces end to end: a request through the gateway (real HTTP on loopback, the
//! HTTP backend, a scripted upstream that fails its first call) exported to a loopback OTLP
//! receiver, over HTTP/protobuf (an axum server decoding `ExportTraceServiceRequest`) and over
//! gRPC (a tonic server with the collector's trace service).
#![cfg(all(feature = "otel", feature = "gateway", feature = "http"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::collections::HashMap;
use std::sync::Arc;

use ferrolite::config::OtelProtocol;
use ferrolite::gateway::{GatewaySettings, app, serve};
use ferrolite::otel::{Otel, OtelTarget};
use ferrolite::types::Secret;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use parking_lot::Mutex;
use prost::Message;

/// What the receiver got: every export request, and the headers each came with.
#[derive(Default)]
struct Received {
    exports: Vec<ExportTraceServiceRequest>,
    headers: Vec<HashMap<String, String>>,
}

type Shared = Arc<Mutex<Received>>;

/// An OTLP/HTTP receiver on loopback (`POST /v1/traces`, protobuf); its base URL.
async fn http_receiver(received: Shared) -> String {
    use axum::routing::post;
    let app = axum::Router::new()
        .route(
            "/v1/traces",
            post(
                |axum::extract::State(received): axum::extract::State<Shared>,
                 headers: axum::http::HeaderMap,
                 body: axum::body::Bytes| async move {
                    let request = ExportTraceServiceRequest::decode(body).unwrap();
                    let mut got = received.lock();
                    got.exports.push(request);
                    got.headers.push(header_map(&headers));
                    (
                        [("content-type", "application/x-protobuf")],
                        ExportTraceServiceResponse::default().encode_to_vec(),
                    )
                },
            ),
        )
        .with_state(received);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn header_map(headers: &axum::http::HeaderMap) -> HashMap<String, String> {
    headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect()
}

/// The collector's trace service, keeping what it is sent.
struct Collector(Shared);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let headers = header_map(&request.metadata().clone().into_headers());
        let mut got = self.0.lock();
        got.exports.push(request.into_inner());
        got.headers.push(headers);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// An OTLP/gRPC receiver on loopback; its URL.
async fn grpc_receiver(received: Shared) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Collector(received)))
            .serve_with_incoming(incoming),
    );
    format!("http://{addr}")
}

/// A scripted OpenAI-compatible upstream: its first call fails with a 500, every later one
/// answers with 11 input and 7 output tokens. It keeps the `traceparent` of every call.
async fn upstream(traceparents: Arc<Mutex<Vec<String>>>) -> String {
    use axum::response::IntoResponse;
    use axum::routing::post;
    let app = axum::Router::new()
        .route(
            "/v1/chat/completions",
            post(
                |axum::extract::State(seen): axum::extract::State<Arc<Mutex<Vec<String>>>>,
                 headers: axum::http::HeaderMap,
                 body: axum::body::Bytes| async move {
                    let traceparent = headers
                        .get("traceparent")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    let first = {
                        let mut seen = seen.lock();
                        seen.push(traceparent);
                        seen.len() == 1
                    };
                    if first {
                        return (
                            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                            axum::Json(serde_json::json!({"error": {"message": "upstream exploded"}})),
                        )
                            .into_response();
                    }
                    let asked: serde_json::Value =
                        serde_json::from_slice(&body).unwrap_or_default();
                    if asked["stream"] == true {
                        let chunk = |delta: serde_json::Value, usage: serde_json::Value| {
                            format!(
                                "data: {}\n\n",
                                serde_json::json!({
                                    "id": "x", "object": "chat.completion.chunk", "created": 0,
                                    "model": "gpt-4o-2024-08-06",
                                    "choices": [{"index": 0, "delta": delta, "finish_reason": null}],
                                    "usage": usage,
                                })
                            )
                        };
                        let events = [
                            chunk(serde_json::json!({"role": "assistant", "content": "a secret"}), serde_json::Value::Null),
                            chunk(serde_json::json!({"content": " answer"}), serde_json::Value::Null),
                            chunk(
                                serde_json::json!({}),
                                serde_json::json!({"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}),
                            ),
                            "data: [DONE]\n\n".to_string(),
                        ]
                        .concat();
                        return ([("content-type", "text/event-stream")], events).into_response();
                    }
                    axum::Json(serde_json::json!({
                        "id": "x", "object": "chat.completion", "created": 0,
                        "model": "gpt-4o-2024-08-06",
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": "a secret answer"}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
                    }))
                    .into_response()
                },
            ),
        )
        .with_state(traceparents);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/v1")
}

fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn text<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    match attribute(span, key) {
        Some(Value::StringValue(s)) => Some(s),
        _ => None,
    }
}

fn int(span: &Span, key: &str) -> Option<i64> {
    match attribute(span, key) {
        Some(Value::IntValue(i)) => Some(*i),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// An exporter over `protocol` to a loopback receiver, sampling new traces at `ratio`; the
/// runtime it exports on, and what the receiver got.
///
/// As `ferrolite serve` does, the exporter (and here the receiver) run on a runtime of their
/// own, so that flushing (which waits for the export) never blocks the runtime exporting.
fn exporter(protocol: OtelProtocol, ratio: Option<f64>) -> (Otel, tokio::runtime::Runtime, Shared) {
    let exporting = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let received: Shared = Arc::default();
    let endpoint = exporting.block_on(async {
        match protocol {
            OtelProtocol::HttpProtobuf => {
                format!("{}/v1/traces", http_receiver(Arc::clone(&received)).await)
            }
            OtelProtocol::Grpc => grpc_receiver(Arc::clone(&received)).await,
        }
    });
    let otel = {
        let _entered = exporting.enter();
        Otel::start_with(OtelTarget {
            endpoint,
            protocol,
            headers: vec![("x-collector-key".into(), Secret::new("collector-secret"))],
            service_name: "ferrolite-test".into(),
            sampling_ratio: ratio,
        })
        .unwrap()
    };
    (otel, exporting, received)
}

/// A chat completion with a client's `traceparent` through a gateway exporting over
/// `protocol`, the first upstream call failing: the request span continues the client's trace,
/// two attempt spans are its children, and the upstream saw each attempt's context.
fn one_traced_request(protocol: OtelProtocol) {
    let (otel, _exporting, received) = exporter(protocol, None);
    let serving = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (call_id, traceparents) = serving.block_on(async {
        let (base, traceparents) = gateway(otel.sink()).await;
        let response = reqwest::Client::new()
            .post(format!("{base}/v1/chat/completions"))
            .header("traceparent", format!("00-{TRACE_ID}-{CLIENT_SPAN}-01"))
            .header("tracestate", "vendor=abc")
            .json(&serde_json::json!({
                "model": "gpt-4o",
                "messages": [{"role": "user", "content": "a secret prompt"}],
                "max_tokens": 50,
                "temperature": 0.25
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let call_id = response.headers()["x-litellm-call-id"]
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(response.headers()["x-litellm-attempted-retries"], "1");
        let seen = traceparents.lock().clone();
        (call_id, seen)
    });

    // Everything ended is exported before force_flush returns.
    otel.force_flush().unwrap();
    check(&received, &call_id, &traceparents);
    otel.shutdown().unwrap();
}

/// A gateway over the scripted upstream (two deployments, two retries), its spans given to
/// `traces`; its base URL, and the `traceparent` of each upstream call as they come.
async fn gateway(
    traces: Arc<dyn ferrolite::router::spans::SpanSink>,
) -> (String, Arc<Mutex<Vec<String>>>) {
    let traceparents = Arc::new(Mutex::new(Vec::new()));
    let upstream = upstream(Arc::clone(&traceparents)).await;
    let config = ferrolite::Config::from_yaml(&format!(
        r#"
model_list:
  - model_name: gpt-4o
    litellm_params: {{model: openai/gpt-4o, api_base: "{upstream}", api_key: sk-upstream-key}}
    model_info: {{id: first}}
  - model_name: gpt-4o
    litellm_params: {{model: openai/gpt-4o, api_base: "{upstream}", api_key: sk-upstream-key}}
    model_info: {{id: second}}
router_settings:
  num_retries: 2
"#
    ))
    .unwrap();
    let backend = Arc::new(ferrolite::http::HttpBackend::new().unwrap());
    let router = ferrolite::build_from_config(config, Some(backend))
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve(
        listener,
        app(
            router,
            GatewaySettings {
                traces: Some(traces),
                ..GatewaySettings::default()
            },
        ),
        std::future::pending(),
    ));
    (base, traceparents)
}

/// Every span the receiver got.
fn spans_of(received: &Shared) -> Vec<Span> {
    let got = received.lock();
    got.exports
        .iter()
        .flat_map(|export| &export.resource_spans)
        .flat_map(|resource| &resource.scope_spans)
        .flat_map(|scope| scope.spans.iter().cloned())
        .collect()
}

/// What the receiver got: the request span, its two attempt spans, the upstream's parents.
fn check(received: &Shared, call_id: &str, traceparents: &[String]) {
    let got = received.lock();
    // The exporter's own headers reach the collector.
    assert!(
        got.headers
            .iter()
            .all(|h| h.get("x-collector-key").map(String::as_str) == Some("collector-secret"))
    );
    let mut spans: Vec<Span> = Vec::new();
    for export in &got.exports {
        for resource in &export.resource_spans {
            let service = resource
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
                .and_then(|kv| kv.value.as_ref())
                .and_then(|v| v.value.as_ref());
            assert_eq!(service, Some(&Value::StringValue("ferrolite-test".into())));
            for scope in &resource.scope_spans {
                spans.extend(scope.spans.iter().cloned());
            }
        }
    }
    drop(got);

    let requests: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name.starts_with("POST "))
        .collect();
    assert_eq!(requests.len(), 1, "one request span: {spans:#?}");
    let request = requests[0];
    assert_eq!(request.name, "POST /v1/chat/completions");
    assert_eq!(hex(&request.trace_id), TRACE_ID, "the client's trace");
    assert_eq!(
        hex(&request.parent_span_id),
        CLIENT_SPAN,
        "the client's span"
    );
    assert_eq!(request.trace_state, "vendor=abc");
    assert_eq!(request.kind, 2, "a server span");
    assert_eq!(text(request, "http.request.method"), Some("POST"));
    assert_eq!(text(request, "http.route"), Some("/v1/chat/completions"));
    assert_eq!(int(request, "http.response.status_code"), Some(200));
    assert_eq!(text(request, "ferrolite.request.id"), Some(call_id));
    assert_eq!(text(request, "ferrolite.model_group"), Some("gpt-4o"));
    assert_eq!(
        attribute(request, "ferrolite.stream"),
        Some(&Value::BoolValue(false))
    );
    assert_eq!(text(request, "gen_ai.operation.name"), Some("chat"));
    assert_eq!(text(request, "gen_ai.request.model"), Some("gpt-4o"));
    assert_eq!(
        text(request, "gen_ai.response.model"),
        Some("gpt-4o-2024-08-06")
    );
    assert_eq!(int(request, "gen_ai.usage.input_tokens"), Some(11));
    assert_eq!(int(request, "gen_ai.usage.output_tokens"), Some(7));
    assert_eq!(int(request, "gen_ai.request.max_tokens"), Some(50));
    assert_eq!(int(request, "ferrolite.route.attempts"), Some(2));
    assert_eq!(int(request, "ferrolite.route.retries"), Some(1));
    assert_eq!(int(request, "ferrolite.route.fallbacks"), Some(0));
    assert!(text(request, "ferrolite.route.deployment").is_some());

    let mut attempts: Vec<&Span> = spans.iter().filter(|s| s.name == "chat gpt-4o").collect();
    attempts.sort_by_key(|s| int(s, "ferrolite.attempt"));
    assert_eq!(
        attempts.len(),
        2,
        "a failed attempt and its retry: {spans:#?}"
    );
    for (number, attempt) in attempts.iter().enumerate() {
        assert_eq!(hex(&attempt.trace_id), TRACE_ID);
        assert_eq!(
            attempt.parent_span_id, request.span_id,
            "a child of the request"
        );
        assert_eq!(attempt.kind, 3, "a client span");
        assert_eq!(int(attempt, "ferrolite.attempt"), Some(number as i64 + 1));
        assert_eq!(int(attempt, "ferrolite.retry"), Some(number as i64));
        assert_eq!(text(attempt, "gen_ai.operation.name"), Some("chat"));
        assert_eq!(text(attempt, "gen_ai.provider.name"), Some("openai"));
        assert_eq!(text(attempt, "gen_ai.system"), Some("openai"));
        assert_eq!(text(attempt, "gen_ai.request.model"), Some("gpt-4o"));
        assert_eq!(int(attempt, "gen_ai.request.max_tokens"), Some(50));
        assert_eq!(
            attribute(attempt, "gen_ai.request.temperature"),
            Some(&Value::DoubleValue(0.25))
        );
        assert_eq!(text(attempt, "server.address"), Some("127.0.0.1"));
        assert_eq!(text(attempt, "ferrolite.model_group"), Some("gpt-4o"));
        assert!(int(attempt, "ferrolite.retry.wait_ms").is_some());
    }
    let (failed, answered) = (attempts[0], attempts[1]);
    assert_eq!(text(failed, "ferrolite.outcome"), Some("failure"));
    assert_eq!(text(failed, "error.type"), Some("server_error"));
    assert_eq!(failed.status.as_ref().map(|s| s.code), Some(2), "an error");
    assert_eq!(text(answered, "ferrolite.outcome"), Some("success"));
    assert_eq!(int(answered, "gen_ai.usage.input_tokens"), Some(11));
    assert_eq!(int(answered, "gen_ai.usage.output_tokens"), Some(7));
    assert_eq!(
        text(answered, "gen_ai.response.model"),
        Some("gpt-4o-2024-08-06")
    );

    // Each upstream call carried its attempt's context: the same trace, the attempt as parent.
    assert_eq!(traceparents.len(), 2);
    for (traceparent, attempt) in traceparents.iter().zip(&attempts) {
        let parts: Vec<&str> = traceparent.split('-').collect();
        assert_eq!(parts.len(), 4, "a W3C traceparent: {traceparent}");
        assert_eq!(parts[1], TRACE_ID);
        assert_eq!(parts[2], hex(&attempt.span_id));
    }

    // No prompt, answer or key in any attribute.
    let everything = format!("{spans:?}");
    for secret in ["a secret prompt", "a secret answer", "sk-upstream-key"] {
        assert!(!everything.contains(secret), "{secret} was exported");
    }
}

#[test]
fn a_traced_request_is_exported_over_http_protobuf() {
    one_traced_request(OtelProtocol::HttpProtobuf);
}

#[test]
fn a_traced_request_is_exported_over_grpc() {
    one_traced_request(OtelProtocol::Grpc);
}

/// A stream's request span ends when the stream does: it carries the usage of the stream's last
/// chunk, and the attempt that failed before the stream started is its child too.
#[test]
fn a_streamed_request_is_exported_when_the_stream_ends() {
    let (otel, _exporting, received) = exporter(OtelProtocol::HttpProtobuf, None);
    let serving = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (text, traceparents) = serving.block_on(async {
        let (base, traceparents) = gateway(otel.sink()).await;
        let response = reqwest::Client::new()
            .post(format!("{base}/v1/chat/completions"))
            .header("traceparent", format!("00-{TRACE_ID}-{CLIENT_SPAN}-01"))
            .json(&serde_json::json!({
                "model": "gpt-4o",
                "messages": [{"role": "user", "content": "a secret prompt"}],
                "stream": true,
                "stream_options": {"include_usage": true}
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        let seen = traceparents.lock().clone();
        (text, seen)
    });
    assert!(
        text.contains(" answer") && text.ends_with("data: [DONE]\n\n"),
        "{text}"
    );
    otel.force_flush().unwrap();
    let spans = spans_of(&received);
    let requests: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name.starts_with("POST "))
        .collect();
    assert_eq!(requests.len(), 1, "{spans:#?}");
    let request = requests[0];
    assert_eq!(hex(&request.trace_id), TRACE_ID);
    assert_eq!(
        attribute(request, "ferrolite.stream"),
        Some(&Value::BoolValue(true))
    );
    assert_eq!(int(request, "http.response.status_code"), Some(200));
    assert_eq!(int(request, "gen_ai.usage.input_tokens"), Some(11));
    assert_eq!(int(request, "gen_ai.usage.output_tokens"), Some(7));
    assert_eq!(int(request, "ferrolite.route.attempts"), Some(2));
    assert!(
        request.end_time_unix_nano > request.start_time_unix_nano,
        "the span has a length"
    );
    let attempts: Vec<&Span> = spans.iter().filter(|s| s.name == "chat gpt-4o").collect();
    assert_eq!(attempts.len(), 2, "{spans:#?}");
    assert!(attempts.iter().all(|a| a.parent_span_id == request.span_id));
    assert_eq!(traceparents.len(), 2);
    let everything = format!("{spans:?}");
    assert!(!everything.contains("a secret"), "no prompt or answer text");
    otel.shutdown().unwrap();
}

/// `sampling_ratio: 0` records no new trace, yet each upstream call still carries its
/// attempt's context (not sampled: flag `00`); a client's sampled trace is recorded whatever
/// the ratio (the parent decides), and a client's unsampled one is not.
#[test]
fn the_sampling_ratio_decides_new_traces_and_the_client_decides_its_own() {
    let (otel, _exporting, received) = exporter(OtelProtocol::HttpProtobuf, Some(0.0));
    let serving = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let body =
        serde_json::json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
    let seen = serving.block_on(async {
        let (base, traceparents) = gateway(otel.sink()).await;
        let client = reqwest::Client::new();
        for traceparent in [
            None,
            Some(format!("00-{TRACE_ID}-{CLIENT_SPAN}-00")),
            Some(format!("00-{TRACE_ID}-{CLIENT_SPAN}-01")),
        ] {
            let mut request = client
                .post(format!("{base}/v1/chat/completions"))
                .json(&body);
            if let Some(traceparent) = traceparent {
                request = request.header("traceparent", traceparent);
            }
            assert_eq!(request.send().await.unwrap().status(), 200);
        }
        traceparents.lock().clone()
    });
    // The first request failed once and was retried: 2 + 1 + 1 upstream calls.
    assert_eq!(seen.len(), 4, "{seen:?}");
    let flags: Vec<&str> = seen.iter().map(|t| &t[t.len() - 2..]).collect();
    assert_eq!(flags, ["00", "00", "00", "01"]);
    assert!(
        seen[0][3..35] != *TRACE_ID && seen[0][3..35] == seen[1][3..35],
        "a new trace, one per request"
    );
    assert_eq!(&seen[2][3..35], TRACE_ID);
    otel.force_flush().unwrap();
    let spans = spans_of(&received);
    assert_eq!(
        spans.len(),
        2,
        "only the sampled client's request and attempt: {spans:#?}"
    );
    assert!(spans.iter().all(|s| hex(&s.trace_id) == TRACE_ID));
    assert!(spans.iter().any(|s| hex(&s.parent_span_id) == CLIENT_SPAN));
    otel.shutdown().unwrap();
}
