//! A caller's own Responses API request through a real `Router` and `HttpBackend` to a fake
//! OpenAI server on loopback: to an `openai` or `azure` deployment it reaches `/responses`
//! untranslated (`previous_response_id` and built-in tools intact) and its answer, whole or
//! streamed, comes back in the Responses API's form with its usage counted; a request without
//! one, or to another provider, still goes to `/chat/completions`.
#![cfg(feature = "http")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::sync::Arc;

use axum::Router as Server;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use ferrolite::http::HttpBackend;
use ferrolite::router::Native;
use ferrolite::types::{Deployment, ErrorClass, ManagedResponseId, Protocol, Secret};
use ferrolite::{Request, RouterError};
use futures_util::StreamExt;
use parking_lot::Mutex;
use serde_json::{Value, json};

const KEY: &str = "sk-test-responses";

/// What the server saw: path, query, body.
#[derive(Default)]
struct Seen {
    requests: Mutex<Vec<(String, String, Value)>>,
}

/// A response object as OpenAI writes it.
fn response_object(model: &str) -> Value {
    json!({
        "id": "resp_upstream_1",
        "object": "response",
        "created_at": 1_741_476_542,
        "status": "completed",
        "model": model,
        "output": [{
            "type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": "Hello there", "annotations": []}],
        }],
        "parallel_tool_calls": true,
        "previous_response_id": "resp_prev_7",
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": 21, "input_tokens_details": {"cached_tokens": 4},
            "output_tokens": 7, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 28,
        },
    })
}

/// The events of a streamed response: created, the text in two deltas, completed (with
/// usage), unless the model says otherwise.
fn events(model: &str) -> String {
    let mut completed = response_object(model);
    completed["usage"]["output_tokens"] = json!(2);
    completed["usage"]["total_tokens"] = json!(23);
    let mut list = vec![
        json!({"type": "response.created", "sequence_number": 0,
               "response": {"id": "resp_upstream_1", "object": "response", "status": "in_progress", "output": []}}),
        json!({"type": "response.output_text.delta", "sequence_number": 1, "item_id": "msg_1",
               "output_index": 0, "content_index": 0, "delta": "Hel"}),
        json!({"type": "response.output_text.delta", "sequence_number": 2, "item_id": "msg_1",
               "output_index": 0, "content_index": 0, "delta": "lo"}),
    ];
    match model {
        "error-mid-stream" => list.push(json!({
            "type": "error", "sequence_number": 3, "code": "server_error",
            "message": "The server had an error while processing your request", "param": null,
        })),
        "cut-short" => {}
        _ => list.push(
            json!({"type": "response.completed", "sequence_number": 3, "response": completed}),
        ),
    }
    let mut out = String::new();
    for event in list {
        out.push_str(&format!(
            "event: {}\ndata: {event}\n\n",
            event["type"].as_str().unwrap()
        ));
    }
    out
}

/// The fake OpenAI (and Azure) endpoints: `/responses` and `/chat/completions`, each checking
/// the key header.
async fn behave(
    State(seen): State<Arc<Seen>>,
    uri: Uri,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
    body: axum::Json<Value>,
) -> Response {
    let body = body.0;
    let path = uri.path().to_string();
    let mut query: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    query.sort();
    seen.requests
        .lock()
        .push((path.clone(), query.join("&"), body.clone()));
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let authorized = if path.starts_with("/openai/") {
        header("api-key") == Some(KEY) && header("authorization").is_none()
    } else {
        header("authorization") == Some(&format!("Bearer {KEY}"))
    };
    if !authorized {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}})),
        )
            .into_response();
    }
    if header("content-type") != Some("application/json") {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, "json please").into_response();
    }
    let model = body["model"].as_str().unwrap_or("").to_string();
    if model == "rate-limited" {
        let mut r = (
            StatusCode::TOO_MANY_REQUESTS,
            axum::Json(
                json!({"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}}),
            ),
        )
            .into_response();
        r.headers_mut().insert("retry-after", "3".parse().unwrap());
        return r;
    }
    if path.ends_with("/chat/completions") {
        return axum::Json(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "chat"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
        }))
        .into_response();
    }
    if !path.ends_with("/responses") {
        return StatusCode::NOT_FOUND.into_response();
    }
    if body["stream"] == true {
        // Split across writes, to exercise the parser.
        let text = events(&model);
        let (a, b) = text.split_at(text.len() / 3);
        let parts: Vec<Result<String, std::io::Error>> = vec![Ok(a.to_string()), Ok(b.to_string())];
        return Response::builder()
            .header("content-type", "text/event-stream")
            .body(Body::from_stream(futures_util::stream::iter(parts)))
            .unwrap();
    }
    axum::Json(response_object(&model)).into_response()
}

/// A server on a free loopback port; its base URL.
async fn serve() -> (String, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let app = Server::new()
        .route("/v1/{*path}", post(behave))
        .route("/openai/{*path}", post(behave))
        .with_state(Arc::clone(&seen));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), seen)
}

fn deployment(base: &str, model: &str) -> Deployment {
    Deployment {
        api_base: Some(format!("{base}/v1")),
        api_key: Some(Secret::new(KEY)),
        ..Deployment::new("g", model.to_string())
    }
}

async fn router(deployments: Vec<Deployment>) -> ferrolite::Router {
    ferrolite::Router::builder()
        .deployments(deployments)
        .backend(Arc::new(HttpBackend::new().unwrap()))
        .build()
        .await
        .unwrap()
}

/// The caller's Responses request: a continuation with a built-in tool, which only the
/// upstream itself can run.
fn native_body(stream: bool) -> Value {
    let mut body = json!({
        "model": "g",
        "previous_response_id": "resp_prev_7",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "and now?"}]}],
        "instructions": "Be brief.",
        "tools": [{"type": "web_search_preview"}],
        "store": true,
        "max_output_tokens": 64,
        "mock_response": "never sent",
    });
    if stream {
        body["stream"] = json!(true);
    }
    body
}

/// A request as the gateway makes one of a Responses call: the canonical body routed, the
/// caller's own alongside.
fn request(stream: bool) -> Request {
    let mut canonical =
        json!({"model": "g", "messages": [{"role": "user", "content": "and now?"}]});
    if stream {
        canonical["stream"] = json!(true);
    }
    let mut request = Request::new("g", canonical);
    request.native = Some(Native {
        extras: None,
        protocol: Protocol::OpenAiResponses,
        body: Arc::new(native_body(stream)),
    });
    request
}

/// The body the upstream should get: the caller's, with the deployment's model and the
/// fields for ferrolite alone left out.
fn sent_body(model: &str, stream: bool) -> Value {
    let mut body = native_body(stream);
    body["model"] = json!(model);
    body.as_object_mut().unwrap().remove("mock_response");
    body
}

#[tokio::test]
async fn a_responses_request_reaches_openais_responses_endpoint_untranslated() {
    let (base, seen) = serve().await;
    let router = router(vec![deployment(&base, "openai/gpt-4.1")]).await;

    let answer = router.call(request(false)).await.unwrap();

    assert_eq!(answer.protocol, Protocol::OpenAiResponses);
    let body: Value = serde_json::from_str(answer.body.as_str()).unwrap();
    // As the upstream wrote it, but for the id, which names the deployment that answered.
    let mut expected = response_object("gpt-4.1");
    let id = ManagedResponseId::encode("openai", answer.deployment_id.as_str(), "resp_upstream_1");
    expected["id"] = json!(id);
    assert_eq!(body, expected);
    let usage = answer.usage.unwrap();
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.total_tokens
        ),
        (21, 7, 28)
    );
    let requests = seen.requests.lock();
    assert_eq!(requests.len(), 1);
    let (path, query, sent) = &requests[0];
    assert_eq!(path, "/v1/responses");
    assert_eq!(query, "");
    assert_eq!(sent, &sent_body("gpt-4.1", false));
    assert_eq!(sent["previous_response_id"], "resp_prev_7");
}

#[tokio::test]
async fn a_streamed_responses_request_passes_each_event_and_counts_the_completed_usage() {
    let (base, seen) = serve().await;
    let router = router(vec![deployment(&base, "openai/gpt-4.1")]).await;

    let mut stream = router.stream(request(true)).await.unwrap();
    let mut kinds = Vec::new();
    let mut usages = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        assert_eq!(chunk.protocol, Protocol::OpenAiResponses);
        let data: Value = serde_json::from_str(chunk.body.as_str()).unwrap();
        kinds.push(data["type"].as_str().unwrap().to_string());
        usages.push(chunk.usage.map(|u| (u.prompt_tokens, u.completion_tokens)));
    }

    assert_eq!(
        kinds,
        [
            "response.created",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.completed"
        ]
    );
    assert_eq!(usages, [None, None, None, Some((21, 2))]);
    let usage = stream.usage().unwrap();
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (21, 2));
    let requests = seen.requests.lock();
    assert_eq!(requests[0].0, "/v1/responses");
    assert_eq!(requests[0].2, sent_body("gpt-4.1", true));
}

#[tokio::test]
async fn azure_deployments_pass_through_to_their_responses_endpoint_with_the_api_key_header() {
    let (base, seen) = serve().await;
    let dated = Deployment {
        api_base: Some(base.clone()),
        api_version: Some("2025-04-01-preview".into()),
        id: Some("dated".into()),
        ..deployment(&base, "azure/my-gpt-4o")
    };
    let answer = router(vec![dated])
        .await
        .call(request(false))
        .await
        .unwrap();
    assert_eq!(answer.protocol, Protocol::OpenAiResponses);
    let preview = Deployment {
        api_base: Some(format!("{base}/openai/v1/")),
        id: Some("preview".into()),
        ..deployment(&base, "azure/my-gpt-4o")
    };
    let answer = router(vec![preview])
        .await
        .call(request(false))
        .await
        .unwrap();
    assert_eq!(answer.usage.unwrap().total_tokens, 28);
    // An api_base that names the resource with a slash.
    let slashed = Deployment {
        api_base: Some(format!("{base}/")),
        api_version: Some("2025-04-01-preview".into()),
        id: Some("slashed".into()),
        ..deployment(&base, "azure/my-gpt-4o")
    };
    router(vec![slashed])
        .await
        .call(request(false))
        .await
        .unwrap();

    let requests = seen.requests.lock();
    assert_eq!(requests[0].0, "/openai/responses");
    assert_eq!(requests[0].1, "api-version=2025-04-01-preview");
    assert_eq!(requests[0].2, sent_body("my-gpt-4o", false));
    assert_eq!(requests[1].0, "/openai/v1/responses");
    assert_eq!(requests[1].1, "api-version=preview");
    assert_eq!(requests[2].0, "/openai/responses");
}

#[tokio::test]
async fn a_request_without_a_native_body_or_to_another_provider_goes_to_chat_completions() {
    let (base, seen) = serve().await;
    // No Responses request: the chat endpoint.
    let router_openai = router(vec![deployment(&base, "openai/gpt-4.1")]).await;
    let mut plain = request(false);
    plain.native = None;
    let answer = router_openai.call(plain).await.unwrap();
    assert_eq!(answer.protocol, Protocol::OpenAiChat);
    assert_eq!(answer.usage.unwrap().total_tokens, 6);
    // A Responses request to a provider without the Responses API: its chat translation.
    let vllm = router(vec![deployment(&base, "hosted_vllm/llama")]).await;
    let mut fresh = request(false);
    let mut body = native_body(false);
    body.as_object_mut().unwrap().remove("previous_response_id");
    fresh.native = Some(Native {
        extras: None,
        protocol: Protocol::OpenAiResponses,
        body: Arc::new(body),
    });
    let answer = vllm.call(fresh).await.unwrap();
    assert_eq!(answer.protocol, Protocol::OpenAiChat);

    let requests = seen.requests.lock();
    assert_eq!(requests.len(), 2);
    for (path, _, body) in requests.iter() {
        assert_eq!(path, "/v1/chat/completions");
        assert!(body.get("messages").is_some());
        assert!(body.get("previous_response_id").is_none());
    }
}

#[tokio::test]
async fn a_continuation_to_a_deployment_without_the_responses_api_is_refused_naming_the_field() {
    let (base, seen) = serve().await;
    let router = router(vec![deployment(&base, "hosted_vllm/llama")]).await;
    let refused = |err: RouterError| match err {
        RouterError::Backend { class, message, .. } => {
            assert_eq!(class, ErrorClass::BadRequest { status: 400 });
            assert!(message.contains("`previous_response_id`"), "{message}");
            assert!(message.contains("/v1/responses"), "{message}");
        }
        other => panic!("{other:?}"),
    };
    refused(router.call(request(false)).await.unwrap_err());
    refused(router.stream(request(true)).await.unwrap_err());
    // Also when the id names the deployment itself.
    let id = router.deployments()[0].id();
    let managed = ManagedResponseId::encode("hosted_vllm", id.as_str(), "resp_1");
    refused(router.call(continuing(&managed, false)).await.unwrap_err());
    // Nothing was sent.
    assert!(seen.requests.lock().is_empty());
    // Without the continuation, the same request goes as its chat translation.
    let mut fresh = request(false);
    let mut body = native_body(false);
    body.as_object_mut().unwrap().remove("previous_response_id");
    fresh.native = Some(Native {
        extras: None,
        protocol: Protocol::OpenAiResponses,
        body: Arc::new(body),
    });
    assert_eq!(
        router.call(fresh).await.unwrap().protocol,
        Protocol::OpenAiChat
    );
    assert_eq!(seen.requests.lock()[0].0, "/v1/chat/completions");
}

#[tokio::test]
async fn failures_of_the_responses_endpoint_are_classified() {
    let (base, _) = serve().await;
    // 429 with Retry-After.
    let err = HttpBackendCall::new(&base, "openai/rate-limited")
        .call()
        .await;
    assert!(
        matches!(err, ErrorClass::RateLimited { retry_after: Some(d) } if d.as_secs() == 3),
        "{err:?}"
    );
    // A wrong key.
    let wrong = Deployment {
        api_key: Some(Secret::new("sk-wrong")),
        ..deployment(&base, "openai/gpt-4.1")
    };
    let err = router(vec![wrong])
        .await
        .call(request(false))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RouterError::Backend {
                class: ErrorClass::Authentication,
                ..
            }
        ),
        "{err:?}"
    );
    // An `error` event ends the stream with an error; so does a stream cut before its
    // `response.completed`.
    for model in ["openai/error-mid-stream", "openai/cut-short"] {
        let router = router(vec![deployment(&base, model)]).await;
        let mut stream = router.stream(request(true)).await.unwrap();
        let mut passed = 0;
        let mut failed = None;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(_) => passed += 1,
                Err(e) => failed = Some(e),
            }
        }
        assert_eq!(passed, 3, "{model}");
        assert!(failed.is_some(), "{model}");
    }
}

/// A Responses request continuing `previous` (as `request` makes one, else alike).
fn continuing(previous: &str, stream: bool) -> Request {
    let mut request = request(stream);
    let mut body = native_body(stream);
    body["previous_response_id"] = json!(previous);
    request.native = Some(Native {
        extras: None,
        protocol: Protocol::OpenAiResponses,
        body: Arc::new(body),
    });
    request
}

/// Two `openai` deployments of group `g` on one fake upstream, told apart by their models.
fn two_deployments(base: &str) -> Vec<Deployment> {
    vec![
        Deployment {
            id: Some("east".into()),
            ..deployment(base, "openai/gpt-4.1-east")
        },
        Deployment {
            id: Some("west".into()),
            ..deployment(base, "openai/gpt-4.1-west")
        },
    ]
}

/// The models of the calls the upstream received, and the `previous_response_id` of each.
fn received(seen: &Seen) -> Vec<(String, Value)> {
    seen.requests
        .lock()
        .iter()
        .map(|(_, _, body)| {
            (
                body["model"].as_str().unwrap().to_string(),
                body["previous_response_id"].clone(),
            )
        })
        .collect()
}

/// As LiteLLM's `ResponsesApiDeploymentCheck`: the id of a passed-through answer names the
/// deployment that answered (LiteLLM's `_build_responses_api_response_id`), and a follow-up
/// whose `previous_response_id` is that id goes to that deployment, every time, with the
/// upstream's own id sent upstream.
#[tokio::test]
async fn a_follow_up_goes_to_the_deployment_that_stored_its_previous_response() {
    let (base, seen) = serve().await;
    let router = router(two_deployments(&base)).await;
    let first = router.call(continuing("resp_prev_7", false)).await.unwrap();
    let answered: Value = serde_json::from_str(first.body.as_str()).unwrap();
    let id = answered["id"].as_str().unwrap().to_string();
    let decoded = ManagedResponseId::decode(&id).unwrap();
    assert_eq!(decoded.provider, "openai");
    assert_eq!(decoded.deployment, first.deployment_id.as_str());
    assert_eq!(decoded.response_id, "resp_upstream_1");
    let model = format!("gpt-4.1-{}", first.deployment_id.as_str());

    for _ in 0..20 {
        let next = router.call(continuing(&id, false)).await.unwrap();
        assert_eq!(next.deployment_id, first.deployment_id);
    }
    let calls = received(&seen);
    assert_eq!(calls.len(), 21);
    for (called, previous) in &calls[1..] {
        assert_eq!(called, &model);
        assert_eq!(previous, "resp_upstream_1");
    }
}

/// A streamed answer's events carry the managed id wherever they carry the response's
/// (`response.created`, `response.completed`), and a streamed follow-up goes back too.
#[tokio::test]
async fn a_streamed_answer_names_its_deployment_in_every_response_id() {
    let (base, seen) = serve().await;
    let router = router(two_deployments(&base)).await;
    let mut stream = router.stream(request(true)).await.unwrap();
    let deployment = stream.deployment_id.as_str().to_string();
    let expected = ManagedResponseId::encode("openai", &deployment, "resp_upstream_1");
    let mut ids = Vec::new();
    while let Some(chunk) = stream.next().await {
        let data: Value = serde_json::from_str(chunk.unwrap().body.as_str()).unwrap();
        if let Some(id) = data.pointer("/response/id") {
            ids.push((data["type"].as_str().unwrap().to_string(), id.clone()));
        }
    }
    assert_eq!(
        ids,
        [
            ("response.created".to_string(), json!(expected)),
            ("response.completed".to_string(), json!(expected)),
        ]
    );
    for _ in 0..5 {
        let mut next = router.stream(continuing(&expected, true)).await.unwrap();
        assert_eq!(next.deployment_id.as_str(), deployment);
        while next.next().await.is_some() {}
    }
    for (_, previous) in &received(&seen)[1..] {
        assert_eq!(previous, "resp_upstream_1");
    }
}

/// A managed id naming a deployment that is not in the group routes as usual (as LiteLLM's
/// check keeps every deployment), and the upstream still gets its own id.
#[tokio::test]
async fn a_previous_response_of_a_deployment_outside_the_group_routes_as_usual() {
    let (base, seen) = serve().await;
    let router = router(two_deployments(&base)).await;
    let elsewhere = ManagedResponseId::encode("openai", "elsewhere", "resp_upstream_9");
    let mut answered_by = std::collections::HashSet::new();
    for _ in 0..40 {
        let answer = router.call(continuing(&elsewhere, false)).await.unwrap();
        answered_by.insert(answer.deployment_id.as_str().to_string());
    }
    // Both deployments answered (all 40 on one: a chance of 2^-39).
    assert_eq!(answered_by.len(), 2, "{answered_by:?}");
    for (_, previous) in received(&seen) {
        assert_eq!(previous, "resp_upstream_9");
    }
}

/// An id that is not in the managed form (an upstream's own, base64 of something else, not
/// base64 at all) goes upstream as the client wrote it.
#[tokio::test]
async fn a_previous_response_id_not_in_the_managed_form_goes_upstream_unchanged() {
    let (base, seen) = serve().await;
    let router = router(two_deployments(&base)).await;
    let ids = [
        "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b",
        "resp_bm90IGxpdGVsbG0=",
        "resp_bGl0ZWxsbTpjdXN0b21fbGxtX3Byb3ZpZGVyOm9wZW5haQ==",
        "resp_%%%",
    ];
    for id in ids {
        router.call(continuing(id, false)).await.unwrap();
    }
    let previous: Vec<Value> = received(&seen).into_iter().map(|(_, p)| p).collect();
    assert_eq!(previous, ids.map(|id| json!(id)));
}

/// One call of a deployment straight through the backend, for its error class.
struct HttpBackendCall {
    deployment: Deployment,
}

impl HttpBackendCall {
    fn new(base: &str, model: &str) -> Self {
        HttpBackendCall {
            deployment: deployment(base, model),
        }
    }

    async fn call(&self) -> ErrorClass {
        use ferrolite::router::{Backend, BackendRequest};
        let request = BackendRequest {
            trace: None,
            body: json!({"model": "g", "messages": []}),
            stream: false,
            request_id: Some("req-1".into()),
            deployment_id: None,
            prepared: None,
            native: Some(Native {
                extras: None,
                protocol: Protocol::OpenAiResponses,
                body: Arc::new(native_body(false)),
            }),
        };
        let backend = HttpBackend::new().unwrap();
        backend
            .call(&self.deployment, &request)
            .await
            .unwrap_err()
            .class
    }
}
