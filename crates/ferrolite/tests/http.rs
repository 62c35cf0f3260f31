//! The HTTP backend against a real HTTP server on loopback (axum): what it sends, how it maps
//! statuses and error bodies, Retry-After in both forms, streaming with usage, a stream that
//! breaks after its first chunk, a server that never answers, a closed port.
#![cfg(feature = "http")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::sync::Arc;
use std::time::Duration;

use axum::Router as Server;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use ferrolite::http::HttpBackend;
use ferrolite::router::{Backend, BackendRequest};
use ferrolite::types::{Deployment, ErrorClass, Secret};
use ferrolite::{Request, RouterError};
use futures_util::StreamExt;
use parking_lot::Mutex;

/// What the server saw: path, query, auth headers, body.
#[derive(Default)]
struct Seen {
    requests: Mutex<Vec<(String, String, HeaderMap, serde_json::Value)>>,
}

fn answer(model: &str, usage: bool) -> serde_json::Value {
    let mut body = serde_json::json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    });
    if usage {
        body["usage"] =
            serde_json::json!({"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15});
    }
    body
}

fn sse(events: &[serde_json::Value], done: bool) -> String {
    let mut out = String::new();
    for e in events {
        out.push_str(&format!("data: {e}\n\n"));
    }
    if done {
        out.push_str("data: [DONE]\n\n");
    }
    out
}

/// Behaves as the request's model says.
async fn behave(
    State(seen): State<Arc<Seen>>,
    path: Option<Path<String>>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
    body: axum::Json<serde_json::Value>,
) -> Response {
    let body = body.0;
    let model = body["model"].as_str().unwrap_or("").to_string();
    let query: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    seen.requests.lock().push((
        path.map(|p| p.0).unwrap_or_default(),
        query.join("&"),
        headers,
        body.clone(),
    ));
    let json =
        |status: StatusCode, value: serde_json::Value| (status, axum::Json(value)).into_response();
    match model.as_str() {
        "rate-limited" => {
            let mut r = json(
                StatusCode::TOO_MANY_REQUESTS,
                serde_json::json!({"error": {"message": "slow down"}}),
            );
            r.headers_mut().insert("retry-after", "7".parse().unwrap());
            r
        }
        "rate-limited-date" => {
            let at = std::time::SystemTime::now() + Duration::from_secs(30);
            let mut r = json(
                StatusCode::TOO_MANY_REQUESTS,
                serde_json::json!({"error": {"message": "slow down"}}),
            );
            r.headers_mut()
                .insert("retry-after", httpdate::fmt_http_date(at).parse().unwrap());
            r
        }
        "context" => json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"error": {"message": "This model's maximum context length is 8192 tokens.", "code": "context_length_exceeded"}}),
        ),
        "filtered" => json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"error": {"message": "filtered by the content management policy", "code": "content_filter"}}),
        ),
        "unauthorized" => json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({"error": {"message": "bad key"}}),
        ),
        "missing" => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": {"message": "no such model"}}),
        ),
        "down" => json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"error": {"message": "overloaded"}}),
        ),
        "hang" => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        "stream" => {
            let events = [
                serde_json::json!({"choices": [{"index": 0, "delta": {"content": "Hel"}}]}),
                serde_json::json!({"choices": [{"index": 0, "delta": {"content": "lo"}}]}),
                serde_json::json!({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}}),
            ];
            // Split across writes, CRLF line endings, to exercise the parser.
            let text = sse(&events, true).replace('\n', "\r\n");
            let (a, b) = text.split_at(text.len() / 2);
            let parts: Vec<Result<String, std::io::Error>> =
                vec![Ok(a.to_string()), Ok(b.to_string())];
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(futures_util::stream::iter(parts)))
                .unwrap()
        }
        "stream-break" => {
            let first = sse(
                &[serde_json::json!({"choices": [{"index": 0, "delta": {"content": "Hel"}}]})],
                false,
            );
            let parts = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(first)]).chain(
                futures_util::stream::once(async {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Err(std::io::Error::other("upstream died"))
                }),
            );
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(parts))
                .unwrap()
        }
        // 100 of its 120 prompt tokens read from OpenAI's prompt cache, whole or streamed.
        "gpt-4o-mini" => {
            let usage = serde_json::json!({"prompt_tokens": 120, "completion_tokens": 5,
                "total_tokens": 125, "prompt_tokens_details": {"cached_tokens": 100, "audio_tokens": 0}});
            if body["stream"] == true {
                let events = [
                    serde_json::json!({"choices": [{"index": 0, "delta": {"content": "hi"}}]}),
                    serde_json::json!({"choices": [], "usage": usage}),
                ];
                Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(Body::from(sse(&events, true)))
                    .unwrap()
            } else {
                let mut body = answer(&model, false);
                body["usage"] = usage;
                json(StatusCode::OK, body)
            }
        }
        "embedder" => json(
            StatusCode::OK,
            serde_json::json!({"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.1]}],
                "model": "embedder", "usage": {"prompt_tokens": 4, "total_tokens": 4}}),
        ),
        other => json(StatusCode::OK, answer(other, true)),
    }
}

/// A server on a free loopback port; its base URL.
async fn serve() -> (String, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let app = Server::new()
        .route("/v1/{*path}", post(behave))
        .route("/openai/deployments/{*path}", post(behave))
        .with_state(Arc::clone(&seen));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), seen)
}

fn openai(base: &str, model: &str) -> Deployment {
    Deployment {
        api_base: Some(format!("{base}/v1")),
        api_key: Some(Secret::new("sk-test-123")),
        extra_headers: [("x-org".to_string(), Secret::new("acme"))].into(),
        ..Deployment::new("g", format!("openai/{model}"))
    }
}

fn chat(stream: bool) -> BackendRequest {
    BackendRequest {
        trace: None,
        native: None,
        body: serde_json::json!({"model": "ignored", "messages": [{"role": "user", "content": "hi"}], "mock_response": "x"}),
        stream,
        request_id: Some("req-42".into()),
        deployment_id: None,
        prepared: None,
    }
}

#[tokio::test]
async fn a_chat_call_sends_the_model_without_its_prefix_and_the_bearer_key_and_reads_usage() {
    let (base, seen) = serve().await;
    let backend = HttpBackend::new().unwrap();
    let response = backend
        .call(&openai(&base, "gpt-4o"), &chat(false))
        .await
        .unwrap();
    assert_eq!(
        response.body.to_value().unwrap()["choices"][0]["message"]["content"],
        "hi"
    );
    assert_eq!(response.usage.unwrap().total_tokens, 15);
    let requests = seen.requests.lock();
    let (path, _, headers, body) = &requests[0];
    assert_eq!(path, "chat/completions");
    assert_eq!(headers["authorization"], "Bearer sk-test-123");
    assert_eq!(
        headers["x-request-id"], "req-42",
        "the request's id reaches the provider"
    );
    assert_eq!(body["model"], "gpt-4o");
    assert!(
        body.get("mock_response").is_none(),
        "test hooks never reach a provider"
    );
    assert!(body.get("stream").is_none());
}

#[tokio::test]
async fn embeddings_and_text_completions_go_to_their_endpoints() {
    let (base, seen) = serve().await;
    let backend = HttpBackend::new().unwrap();
    let embed = BackendRequest {
        trace: None,
        native: None,
        body: serde_json::json!({"model": "x", "input": ["a", "b"]}),
        stream: false,
        request_id: None,
        deployment_id: None,
        prepared: None,
    };
    let response = backend
        .call(&openai(&base, "embedder"), &embed)
        .await
        .unwrap();
    assert_eq!(response.usage.unwrap().prompt_tokens, 4);
    let complete = BackendRequest {
        trace: None,
        native: None,
        body: serde_json::json!({"model": "x", "prompt": "once upon"}),
        stream: false,
        request_id: None,
        deployment_id: None,
        prepared: None,
    };
    backend
        .call(&openai(&base, "davinci"), &complete)
        .await
        .unwrap();
    let paths: Vec<String> = seen.requests.lock().iter().map(|r| r.0.clone()).collect();
    assert_eq!(paths, ["embeddings", "completions"]);
    assert!(
        seen.requests.lock()[0].2.get("x-request-id").is_none(),
        "no id, no header"
    );
}

#[tokio::test]
async fn azure_deployments_use_the_deployment_url_the_api_version_and_the_api_key_header() {
    let (base, seen) = serve().await;
    let backend = HttpBackend::new().unwrap();
    let azure = Deployment {
        api_base: Some(base.clone()),
        api_key: Some(Secret::new("azure-key")),
        api_version: Some("2024-06-01".into()),
        ..Deployment::new("g", "azure/my-gpt4o-eu")
    };
    backend.call(&azure, &chat(false)).await.unwrap();
    let requests = seen.requests.lock();
    let (path, query, headers, body) = &requests[0];
    assert_eq!(path, "my-gpt4o-eu/chat/completions");
    assert_eq!(query, "api-version=2024-06-01");
    assert_eq!(headers["api-key"], "azure-key");
    assert!(headers.get("authorization").is_none());
    assert_eq!(body["model"], "my-gpt4o-eu");
}

async fn class_of(base: &str, model: &str) -> ErrorClass {
    HttpBackend::new()
        .unwrap()
        .call(&openai(base, model), &chat(false))
        .await
        .unwrap_err()
        .class
}

#[tokio::test]
async fn statuses_and_error_bodies_map_to_error_classes() {
    let (base, _) = serve().await;
    assert_eq!(
        class_of(&base, "rate-limited").await,
        ErrorClass::RateLimited {
            retry_after: Some(Duration::from_secs(7))
        }
    );
    match class_of(&base, "rate-limited-date").await {
        ErrorClass::RateLimited {
            retry_after: Some(after),
        } => assert!(
            after > Duration::from_secs(25) && after <= Duration::from_secs(30),
            "{after:?}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        class_of(&base, "context").await,
        ErrorClass::ContextWindowExceeded
    );
    assert_eq!(class_of(&base, "filtered").await, ErrorClass::ContentPolicy);
    assert_eq!(
        class_of(&base, "unauthorized").await,
        ErrorClass::Authentication
    );
    assert_eq!(class_of(&base, "missing").await, ErrorClass::NotFound);
    assert_eq!(
        class_of(&base, "down").await,
        ErrorClass::ServerError { status: 503 }
    );
}

#[tokio::test]
async fn a_closed_port_is_a_connection_error() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let class = class_of(&format!("http://127.0.0.1:{port}"), "gpt-4o").await;
    assert_eq!(class, ErrorClass::Connection);
}

#[tokio::test]
async fn a_stream_passes_its_chunks_and_the_usage_of_the_last_one() {
    let (base, seen) = serve().await;
    let backend = HttpBackend::new().unwrap();
    let mut stream = backend
        .stream(&openai(&base, "stream"), &chat(true))
        .await
        .unwrap();
    let mut chunks = Vec::new();
    while let Some(chunk) = stream.next().await {
        chunks.push(chunk.unwrap());
    }
    assert_eq!(chunks.len(), 3);
    assert_eq!(
        chunks[0].body.to_value().unwrap()["choices"][0]["delta"]["content"],
        "Hel"
    );
    assert_eq!(chunks[2].usage.unwrap().total_tokens, 11);
    let body = &seen.requests.lock()[0].3;
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"]["include_usage"], true);
}

#[tokio::test]
async fn a_stream_that_breaks_after_its_first_chunk_ends_with_a_connection_error() {
    let (base, _) = serve().await;
    let backend = HttpBackend::new().unwrap();
    let mut stream = backend
        .stream(&openai(&base, "stream-break"), &chat(true))
        .await
        .unwrap();
    assert!(stream.next().await.unwrap().is_ok());
    let error = stream.next().await.unwrap().unwrap_err();
    assert_eq!(error.class, ErrorClass::Connection, "{error}");
    assert!(stream.next().await.is_none());
}

/// Through the router: a server that accepts and never answers times out (the deployment's
/// timeout), with a sibling the router answers from it, and a stream reports its time to first
/// token.
#[tokio::test]
async fn through_the_router_a_hanging_server_times_out_a_sibling_answers_and_a_stream_reports_ttft()
{
    let (base, _) = serve().await;
    let hang = Deployment {
        id: Some("hang".into()),
        timeout: Some(0.3),
        ..openai(&base, "hang")
    };
    let good = Deployment {
        id: Some("good".into()),
        ..openai(&base, "gpt-4o")
    };
    let router = ferrolite::Router::builder()
        .deployments([hang.clone()])
        .backend(Arc::new(HttpBackend::new().unwrap()))
        .build()
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let err = router
        .call(Request::new("g", serde_json::json!({"messages": []})))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RouterError::Backend {
                class: ErrorClass::Timeout,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    // With a healthy sibling the timed-out call is retried there (allowed_fails 0: the timeout
    // cools the hanging deployment down, so no retry picks it again).
    let hang = Deployment {
        allowed_fails: Some(0),
        ..hang
    };
    let router = ferrolite::Router::builder()
        .deployments([hang, good.clone()])
        .backend(Arc::new(HttpBackend::new().unwrap()))
        .build()
        .await
        .unwrap();
    for _ in 0..3 {
        let answer = router
            .call(Request::new("g", serde_json::json!({"messages": []})))
            .await
            .unwrap();
        assert_eq!(answer.deployment_id.as_str(), "good");
    }

    let router = ferrolite::Router::builder()
        .deployments([
            good,
            Deployment {
                id: Some("stream".into()),
                ..openai(&base, "stream")
            },
        ])
        .backend(Arc::new(HttpBackend::new().unwrap()))
        .build()
        .await
        .unwrap();
    let mut stream = router
        .stream(Request::new(
            "stream",
            serde_json::json!({"messages": [], "stream": true}),
        ))
        .await
        .unwrap();
    let mut n = 0;
    while let Some(chunk) = stream.next().await {
        chunk.unwrap();
        n += 1;
    }
    assert!(n >= 1);
    assert!(stream.time_to_first_token > Duration::ZERO);
}

/// What a scripted upstream saw: per request, its connection's number, head and body bytes;
/// how many connections it accepted and how many the caller closed.
#[derive(Default)]
struct Script {
    connections: std::sync::atomic::AtomicUsize,
    closed: std::sync::atomic::AtomicUsize,
    requests: Mutex<Vec<(usize, String, Vec<u8>)>>,
}

/// A raw HTTP/1.1 upstream on loopback that records each request's bytes and answers a small
/// chat completion; with `close`, it closes each connection after its answer (with
/// `connection: close` when `say_close`, silently otherwise).
async fn scripted(close: bool, say_close: bool) -> (String, Arc<Script>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let script = Arc::new(Script::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::clone(&script);
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let number = seen
                .connections
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                loop {
                    let head_end = loop {
                        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                            break end + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        let n = socket.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            seen.closed
                                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            return;
                        }
                        buffer.extend_from_slice(&chunk[..n]);
                    };
                    let head = String::from_utf8(buffer[..head_end].to_vec()).unwrap();
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            let (name, value) = l.split_once(':')?;
                            name.eq_ignore_ascii_case("content-length")
                                .then(|| value.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    while buffer.len() < head_end + length {
                        let mut chunk = [0u8; 4096];
                        let n = socket.read(&mut chunk).await.unwrap();
                        assert!(n > 0, "the body broke off");
                        buffer.extend_from_slice(&chunk[..n]);
                    }
                    let body = buffer[head_end..head_end + length].to_vec();
                    buffer.drain(..head_end + length);
                    seen.requests.lock().push((number, head, body));
                    let answer = br#"{"id":"c1","object":"chat.completion","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;
                    let extra = if say_close {
                        "connection: close\r\n"
                    } else {
                        ""
                    };
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\n\r\n",
                        answer.len()
                    );
                    socket.write_all(head.as_bytes()).await.unwrap();
                    socket.write_all(answer).await.unwrap();
                    if close {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), script)
}

#[tokio::test]
async fn the_body_a_provider_gets_is_the_callers_with_only_the_calls_edits_in_sorted_key_order() {
    let (base, script) = scripted(false, false).await;
    let backend = HttpBackend::new().unwrap();
    let request = BackendRequest {
        trace: None,
        native: None,
        body: serde_json::json!({
            "temperature": 0.5, "model": "g", "messages": [{"role": "user", "content": "h\u{e9}\"i"}],
            "mock_response": "x", "caching": true, "stream": true, "user": "u-1",
            "metadata_litellm": {}, "cache": {"no-cache": true}, "n": 1,
        }),
        stream: false,
        request_id: Some("req-7".into()),
        deployment_id: None,
        prepared: None,
    };
    backend
        .call(&openai(&base, "gpt-4o"), &request)
        .await
        .unwrap();
    let mut streamed = request.clone();
    streamed.stream = true;
    streamed.body["stream_options"] = serde_json::json!({"zeta": 1, "include_usage": false});
    // The default stream goes through reqwest; its body is written the same way.
    let _ = backend.stream(&openai(&base, "gpt-4o"), &streamed).await;
    let requests = script.requests.lock();
    assert_eq!(
        String::from_utf8(requests[0].2.clone()).unwrap(),
        r#"{"messages":[{"content":"hé\"i","role":"user"}],"model":"gpt-4o","n":1,"temperature":0.5,"user":"u-1"}"#
    );
    assert_eq!(
        String::from_utf8(requests[1].2.clone()).unwrap(),
        r#"{"messages":[{"content":"hé\"i","role":"user"}],"model":"gpt-4o","n":1,"stream":true,"stream_options":{"include_usage":true,"zeta":1},"temperature":0.5,"user":"u-1"}"#
    );
    let head = requests[0].1.to_ascii_lowercase();
    for header in [
        "authorization: bearer sk-test-123\r\n",
        "x-request-id: req-7\r\n",
        "x-org: acme\r\n",
        "content-type: application/json\r\n",
        "accept: */*\r\n",
    ] {
        assert!(head.contains(header), "{header} missing in {head}");
    }
    assert!(
        head.starts_with("post /v1/chat/completions http/1.1\r\n"),
        "{head}"
    );
    assert!(
        head.contains(&format!("host: {}\r\n", base.trim_start_matches("http://"))),
        "{head}"
    );
}

#[tokio::test]
async fn a_plain_http_upstream_keeps_its_connection_and_one_that_closes_gets_a_new_one() {
    let (base, script) = scripted(false, false).await;
    let backend = HttpBackend::new().unwrap();
    for _ in 0..3 {
        let answer = backend
            .call(&openai(&base, "gpt-4o"), &chat(false))
            .await
            .unwrap();
        assert_eq!(answer.usage.unwrap().total_tokens, 4);
    }
    assert_eq!(
        script.connections.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one kept-alive connection for three calls"
    );

    for say_close in [true, false] {
        let (base, script) = scripted(true, say_close).await;
        for _ in 0..3 {
            backend
                .call(&openai(&base, "gpt-4o"), &chat(false))
                .await
                .unwrap();
            // Let a silent close reach this end before the next call takes the connection.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            script.connections.load(std::sync::atomic::Ordering::SeqCst),
            3,
            "a closed connection is not used again (connection: close said: {say_close})"
        );
    }
}

#[tokio::test]
async fn a_call_dropped_half_way_does_not_leave_its_connection_for_the_next() {
    // A server that never answers: the call is dropped (the router's timeout does that), and
    // the next call to it opens a connection of its own rather than reuse the half-used one.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(socket);
        }
    });
    let backend = HttpBackend::new().unwrap();
    let deployment = openai(&format!("http://{addr}"), "gpt-4o");
    for _ in 0..2 {
        let request = chat(false);
        let call = backend.call(&deployment, &request);
        assert!(
            tokio::time::timeout(Duration::from_millis(100), call)
                .await
                .is_err()
        );
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_error_answer_that_breaks_off_is_still_classified_by_its_status() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = [0u8; 4096];
        let _ = socket.read(&mut request).await;
        let head =
            "HTTP/1.1 429 Too Many Requests\r\nretry-after: 7\r\ncontent-length: 100\r\n\r\n{\"err";
        socket.write_all(head.as_bytes()).await.unwrap();
        // Closed with 95 bytes of the body missing.
    });
    let class = class_of(&format!("http://{addr}"), "gpt-4o").await;
    assert_eq!(
        class,
        ErrorClass::RateLimited {
            retry_after: Some(Duration::from_secs(7))
        }
    );
}

/// The head a scripted upstream got, with the port of its `host` header as `PORT`.
fn head_of(script: &Script, index: usize, base: &str) -> String {
    let port = base.rsplit(':').next().unwrap();
    script.requests.lock()[index]
        .1
        .replace(&format!("127.0.0.1:{port}"), "127.0.0.1:PORT")
}

/// The bytes a plain-HTTP upstream gets are the same whether the call's deployment was
/// prepared (as the router does once per snapshot) or not: the request line with azure's
/// deployment path and `api-version` query, the key header (`api-key` for azure, a bearer
/// `authorization` otherwise), `x-request-id`, the extra headers in order, `content-type`
/// unless an extra header sets it, `host`; and the same body.
#[tokio::test]
async fn a_prepared_deployment_sends_the_same_bytes_as_one_worked_out_per_call() {
    let (base, script) = scripted(false, false).await;
    let backend = HttpBackend::new().unwrap();
    let azure = Deployment {
        api_base: Some(format!("{base}/")),
        api_key: Some(Secret::new("azure-key")),
        api_version: Some("2024-06-01".into()),
        extra_headers: [
            ("x-org".to_string(), Secret::new("acme")),
            ("x-team".to_string(), Secret::new("blue")),
        ]
        .into(),
        ..Deployment::new("g", "azure/my-gpt")
    };
    let typed = Deployment {
        extra_headers: [(
            "Content-Type".to_string(),
            Secret::new("application/json; charset=utf-8"),
        )]
        .into(),
        ..openai(&base, "gpt-4o")
    };
    let keyless = Deployment {
        api_base: Some(format!("{base}/v1")),
        ..Deployment::new("g", "hosted_vllm/llama")
    };
    let embed = BackendRequest {
        trace: None,
        native: None,
        body: serde_json::json!({"input": ["a"], "model": "g"}),
        stream: false,
        request_id: None,
        deployment_id: None,
        prepared: None,
    };
    let mut calls = 0;
    for (deployment, request) in [
        (&azure, chat(false)),
        (&azure, embed.clone()),
        (&typed, chat(false)),
        (&keyless, embed.clone()),
    ] {
        let prepared = backend.prepare(deployment);
        assert!(prepared.is_some(), "{deployment:?}");
        let mut ready = request.clone();
        ready.prepared = prepared;
        backend.call(deployment, &request).await.unwrap();
        backend.call(deployment, &ready).await.unwrap();
        let requests = script.requests.lock();
        assert_eq!(requests[calls].1, requests[calls + 1].1, "{deployment:?}");
        assert_eq!(requests[calls].2, requests[calls + 1].2, "{deployment:?}");
        drop(requests);
        calls += 2;
    }
    assert_eq!(
        head_of(&script, 0, &base),
        "POST /openai/deployments/my-gpt/chat/completions?api-version=2024-06-01 HTTP/1.1\r\n\
         accept: */*\r\napi-key: azure-key\r\nx-request-id: req-42\r\nx-org: acme\r\n\
         x-team: blue\r\ncontent-type: application/json\r\nhost: 127.0.0.1:PORT\r\n\
         content-length: 62\r\n\r\n"
    );
    assert_eq!(
        head_of(&script, 2, &base),
        "POST /openai/deployments/my-gpt/embeddings?api-version=2024-06-01 HTTP/1.1\r\n\
         accept: */*\r\napi-key: azure-key\r\nx-org: acme\r\nx-team: blue\r\n\
         content-type: application/json\r\nhost: 127.0.0.1:PORT\r\ncontent-length: 32\r\n\r\n"
    );
    assert_eq!(
        head_of(&script, 4, &base),
        "POST /v1/chat/completions HTTP/1.1\r\naccept: */*\r\n\
         authorization: Bearer sk-test-123\r\nx-request-id: req-42\r\n\
         content-type: application/json; charset=utf-8\r\nhost: 127.0.0.1:PORT\r\n\
         content-length: 62\r\n\r\n"
    );
    assert_eq!(
        head_of(&script, 6, &base),
        "POST /v1/embeddings HTTP/1.1\r\naccept: */*\r\ncontent-type: application/json\r\n\
         host: 127.0.0.1:PORT\r\ncontent-length: 31\r\n\r\n"
    );
}

/// An idle connection past the backend's idle timeout is closed, not used again: when a call
/// finds it idle too long (it opens another), and when a connection is put back after it (the
/// stale one behind is closed then).
#[tokio::test]
async fn an_idle_connection_past_the_idle_timeout_is_closed_and_not_reused() {
    use std::sync::atomic::Ordering::SeqCst;
    let (base, script) = scripted(false, false).await;
    let idle = Duration::from_millis(1_000);
    let backend = HttpBackend::builder().idle_timeout(idle).build().unwrap();
    let deployment = openai(&base, "gpt-4o");
    let call = || async {
        backend.call(&deployment, &chat(false)).await.unwrap();
    };
    let closed = |n: usize| {
        let script = Arc::clone(&script);
        async move {
            for _ in 0..100 {
                if script.closed.load(SeqCst) >= n {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            script.closed.load(SeqCst)
        }
    };

    // Two calls at once open two connections, both kept.
    tokio::join!(call(), call());
    assert_eq!(script.connections.load(SeqCst), 2);
    // Half the timeout later one is used (and put back fresh); the other stays idle.
    tokio::time::sleep(idle / 2).await;
    call().await;
    assert_eq!(script.connections.load(SeqCst), 2);
    // Past the timeout for the other, not for the one used: the call takes the fresh one, and
    // putting it back closes the stale one.
    tokio::time::sleep(idle * 6 / 10).await;
    call().await;
    assert_eq!(script.connections.load(SeqCst), 2);
    assert_eq!(
        closed(1).await,
        1,
        "the stale connection is closed at checkin"
    );

    // Past the timeout for the last one too: the next call closes it and opens a new one.
    tokio::time::sleep(idle * 11 / 10).await;
    call().await;
    assert_eq!(script.connections.load(SeqCst), 3, "a new connection");
    assert_eq!(closed(2).await, 2, "the idle one is closed at checkout");

    // Within the timeout the connection is kept.
    call().await;
    assert_eq!(script.connections.load(SeqCst), 3);
    assert_eq!(script.closed.load(SeqCst), 2);
}

#[tokio::test]
async fn deployments_that_send_alike_share_one_prepared_value() {
    let backend = HttpBackend::new().unwrap();
    let base = "http://127.0.0.1:9";
    // 100 model names behind one server with one key: one prepared value for them all.
    let fleet: Vec<_> = (0..100)
        .map(|i| {
            backend
                .prepare(&openai(base, &format!("model-{i}")))
                .unwrap()
        })
        .collect();
    assert!(fleet.iter().all(|p| *p == fleet[0]));
    // Another key, another path, another extra header: each its own.
    let other_key = Deployment {
        api_key: Some(Secret::new("another-key")),
        ..openai(base, "model-0")
    };
    let other_path = openai(&format!("{base}/v2"), "model-0");
    let other_header = Deployment {
        extra_headers: [("x-team".to_string(), Secret::new("blue"))].into(),
        ..openai(base, "model-0")
    };
    let others: Vec<_> = [&other_key, &other_path, &other_header]
        .into_iter()
        .map(|d| backend.prepare(d).unwrap())
        .collect();
    for (i, p) in others.iter().enumerate() {
        assert!(*p != fleet[0], "deployment {i} shares the fleet's value");
        for q in &others[i + 1..] {
            assert!(p != q);
        }
    }
}

#[tokio::test]
async fn an_azure_wildcard_model_name_that_would_change_the_url_is_refused_before_any_call() {
    let (base, seen) = serve().await;
    let backend = HttpBackend::new().unwrap();
    let wildcard = Deployment {
        api_base: Some(base.clone()),
        api_key: Some(Secret::new("azure-key")),
        ..Deployment::new("g", "azure/*")
    };
    for asked in [
        "azure/../../v1/chat/completions?x=",
        "azure/..",
        "azure/a b",
    ] {
        let mut request = chat(false);
        request.body["model"] = serde_json::json!(asked);
        let error = backend.call(&wildcard, &request).await.unwrap_err();
        assert_eq!(
            error.class,
            ErrorClass::BadRequest { status: 400 },
            "{asked}"
        );
        assert!(error.message.contains(&asked[6..]), "{}", error.message);
    }
    assert!(seen.requests.lock().is_empty());
    // A deployment name goes through.
    let mut request = chat(false);
    request.body["model"] = serde_json::json!("azure/my-gpt4o.eu_2");
    backend.call(&wildcard, &request).await.unwrap();
    assert_eq!(seen.requests.lock()[0].0, "my-gpt4o.eu_2/chat/completions");
}

#[tokio::test]
async fn cached_prompt_tokens_cost_the_catalogues_cache_read_price_whole_and_streamed() {
    let (base, _) = serve().await;
    let config = ferrolite::Config::from_yaml(&format!(
        r#"
model_list:
  - model_name: mini
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{base}/v1", api_key: sk-test-123}}
"#
    ))
    .unwrap();
    let backend: Arc<dyn Backend> = Arc::new(HttpBackend::new().unwrap());
    let router = ferrolite::build_from_config(config, Some(backend))
        .await
        .unwrap();
    let facts = ferrolite::catalogue::lookup("gpt-4o-mini").unwrap();
    let (input, read, output) = (
        facts.input_cost_per_token.unwrap(),
        facts.cache_read_input_token_cost.unwrap(),
        facts.output_cost_per_token.unwrap(),
    );
    assert!(read < input, "the catalogue prices cache reads below input");
    // LiteLLM's generic_cost_per_token: the uncached prompt tokens at the input price, the
    // cached ones at the cache-read price.
    let expected = 20.0 * input + 100.0 * read + 5.0 * output;
    let hello = || serde_json::json!({"messages": [{"role": "user", "content": "hi"}]});

    let answer = router.call(Request::new("mini", hello())).await.unwrap();
    let usage = answer.usage.unwrap();
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.cache_read_tokens,
            usage.completion_tokens
        ),
        (120, 100, 5)
    );
    let cost = answer.response_cost.unwrap();
    assert!((cost - expected).abs() < 1e-15, "{cost} != {expected}");

    let mut request = Request::new("mini", hello());
    request.stream = true;
    let mut stream = router.stream(request).await.unwrap();
    while let Some(chunk) = stream.next().await {
        chunk.unwrap();
    }
    assert_eq!(stream.usage().unwrap().cache_read_tokens, 100);
    let cost = stream.response_cost().unwrap();
    assert!((cost - expected).abs() < 1e-15, "{cost} != {expected}");
}
