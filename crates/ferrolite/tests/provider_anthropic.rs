//! The native Anthropic backend against a fake Anthropic on loopback, built from Anthropic's
//! published Messages API reference: the fake checks what it is sent (`x-api-key`,
//! `anthropic-version`, `content-type`, a body Anthropic accepts: `model`, `max_tokens`, turns
//! alternating from `user`, blocks of known types, tool results answering the calls before
//! them) and answers 400 in Anthropic's error shape otherwise; it answers whole and streamed
//! (Anthropic's event order, with `ping`s) and fails on request with each error class. The calls
//! go through a real router with the HTTP backend.
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
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use ferrolite::http::HttpBackend;
use ferrolite::router::{Backend, BackendRequest, Native, RouterSettings};
use ferrolite::types::{Deployment, DeploymentId, ErrorClass, Protocol, Secret};
use ferrolite::{Request, Router};
use futures_util::StreamExt;
use parking_lot::Mutex;
use serde_json::{Value, json};

const KEY: &str = "sk-ant-test-key";

/// What the fake was sent: per request, its headers and body.
#[derive(Default)]
struct Seen {
    requests: Mutex<Vec<(HeaderMap, Value)>>,
}

impl Seen {
    fn bodies_for(&self, model: &str) -> Vec<Value> {
        self.requests
            .lock()
            .iter()
            .filter(|(_, b)| b["model"] == model)
            .map(|(_, b)| b.clone())
            .collect()
    }

    fn last(&self) -> (HeaderMap, Value) {
        self.requests.lock().last().cloned().unwrap()
    }
}

/// Anthropic's error answer.
fn error(status: u16, kind: &str, message: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        axum::Json(json!({"type": "error", "error": {"type": kind, "message": message}})),
    )
        .into_response()
}

/// Why Anthropic would refuse `body`, if it would.
fn invalid(body: &Value) -> Option<String> {
    const FIELDS: &[&str] = &[
        "model",
        "messages",
        "max_tokens",
        "system",
        "stop_sequences",
        "temperature",
        "top_p",
        "top_k",
        "metadata",
        "stream",
        "tools",
        "tool_choice",
        "thinking",
        "service_tier",
    ];
    let object = body.as_object()?;
    if let Some(extra) = object.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Some(format!("{extra}: Extra inputs are not permitted"));
    }
    if !body["model"].is_string() {
        return Some("model: Field required".into());
    }
    if body["max_tokens"].as_u64().is_none_or(|n| n == 0) {
        return Some("max_tokens: Field required".into());
    }
    match &body["system"] {
        Value::Null | Value::String(_) => {}
        Value::Array(blocks) => {
            if blocks
                .iter()
                .any(|b| b["type"] != "text" || !b["text"].is_string())
            {
                return Some("system: blocks must be text".into());
            }
        }
        _ => return Some("system: Input should be a valid list".into()),
    }
    let turns = body["messages"].as_array()?;
    if turns.is_empty() {
        return Some("messages: at least one message is required".into());
    }
    let tool_blocks = turns.iter().any(|t| {
        t["content"].as_array().is_some_and(|b| {
            b.iter()
                .any(|b| b["type"] == "tool_use" || b["type"] == "tool_result")
        })
    });
    if tool_blocks && body["tools"].as_array().is_none_or(Vec::is_empty) {
        return Some(
            "Requests which include `tool_use` or `tool_result` blocks must define tools.".into(),
        );
    }
    let mut calls: Vec<String> = Vec::new();
    for (i, turn) in turns.iter().enumerate() {
        let role = turn["role"].as_str().unwrap_or("");
        let expected = if i % 2 == 0 { "user" } else { "assistant" };
        if role != expected {
            return Some(format!(
                "messages.{i}.role: roles must alternate between \"user\" and \"assistant\", starting with \"user\""
            ));
        }
        let blocks = match &turn["content"] {
            Value::String(_) => continue,
            Value::Array(blocks) => blocks,
            _ => {
                return Some(format!(
                    "messages.{i}.content: Input should be a valid list"
                ));
            }
        };
        let mut answered = Vec::new();
        for (j, block) in blocks.iter().enumerate() {
            let at = format!("messages.{i}.content.{j}");
            match (role, block["type"].as_str().unwrap_or("")) {
                (_, "text") if block["text"].is_string() => {}
                ("user", "image") => {
                    let source = &block["source"];
                    let ok = match source["type"].as_str() {
                        Some("base64") => {
                            ["image/png", "image/jpeg", "image/gif", "image/webp"]
                                .contains(&source["media_type"].as_str().unwrap_or(""))
                                && source["data"].is_string()
                        }
                        Some("url") => source["url"].is_string(),
                        _ => false,
                    };
                    if !ok {
                        return Some(format!("{at}.source: invalid image source"));
                    }
                }
                ("user", "tool_result") => {
                    let id = block["tool_use_id"].as_str().unwrap_or("");
                    if !calls.iter().any(|c| c == id) {
                        return Some(format!(
                            "{at}: unexpected `tool_use_id` found in `tool_result` blocks: {id}"
                        ));
                    }
                    answered.push(id.to_string());
                }
                ("assistant", "tool_use")
                    if block["id"].is_string()
                        && block["name"].is_string()
                        && block["input"].is_object() => {}
                ("assistant", "thinking" | "redacted_thinking") => {}
                (_, other) => return Some(format!("{at}.type: unknown block type `{other}`")),
            }
        }
        calls = if role == "assistant" {
            blocks
                .iter()
                .filter(|b| b["type"] == "tool_use")
                .map(|b| b["id"].as_str().unwrap_or("").to_string())
                .collect()
        } else {
            Vec::new()
        };
    }
    None
}

/// The answer's content blocks and stop reason, by what was asked.
fn reply(body: &Value) -> (Vec<Value>, &'static str) {
    let turns = body["messages"].as_array().unwrap();
    let last = turns.last().unwrap();
    let answered_tool = last["content"]
        .as_array()
        .is_some_and(|b| b.iter().any(|b| b["type"] == "tool_result"));
    let wants_tool = body["tools"].as_array().is_some_and(|t| !t.is_empty())
        && body["tool_choice"]["type"] != "none";
    if answered_tool {
        (
            vec![json!({"type": "text", "text": "It is sunny in Paris."})],
            "end_turn",
        )
    } else if wants_tool {
        let name = body["tools"][0]["name"].clone();
        (
            vec![
                json!({"type": "text", "text": "Let me check."}),
                json!({"type": "tool_use", "id": "toolu_01", "name": name, "input": {"city": "Paris"}}),
            ],
            "tool_use",
        )
    } else {
        (
            vec![json!({"type": "text", "text": "Hello from Claude"})],
            "end_turn",
        )
    }
}

/// The usage of an answer: 100 cache-read tokens when anything was marked for caching, and 20
/// cache-write tokens when the text `<a new book>` was, split by lifetime as Anthropic reports
/// it (`cache_creation`): written for an hour when a block asked for `"ttl": "1h"`.
fn usage(body: &Value) -> Value {
    let text = body.to_string();
    let cached = if text.contains("cache_control") {
        100
    } else {
        0
    };
    let written = if cached > 0 && text.contains("<a new book>") {
        20
    } else {
        0
    };
    let hour = if text.contains("\"ttl\":\"1h\"") {
        written
    } else {
        0
    };
    json!({"input_tokens": 12, "cache_creation_input_tokens": written,
           "cache_creation": {"ephemeral_5m_input_tokens": written - hour, "ephemeral_1h_input_tokens": hour},
           "cache_read_input_tokens": cached, "output_tokens": 7})
}

fn sse(events: &[Value]) -> Response {
    let mut text = String::new();
    for event in events {
        text.push_str(&format!(
            "event: {}\ndata: {event}\n\n",
            event["type"].as_str().unwrap()
        ));
    }
    // In two writes, cut in the middle of an event.
    let (a, b) = text.split_at(text.len() / 2);
    let parts: Vec<Result<String, std::io::Error>> = vec![Ok(a.to_string()), Ok(b.to_string())];
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(futures_util::stream::iter(parts)))
        .unwrap()
}

/// The stream of an answer, in Anthropic's order: `message_start`, per block
/// `content_block_start` / deltas / `content_block_stop` (a `ping` after the first start),
/// `message_delta`, `message_stop`.
fn stream_of(model: &str, blocks: &[Value], stop: &str, usage: &Value) -> Vec<Value> {
    let mut events = vec![json!({"type": "message_start", "message": {
        "id": "msg_01stream", "type": "message", "role": "assistant", "model": model,
        "content": [], "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": usage["input_tokens"],
                  "cache_creation_input_tokens": usage["cache_creation_input_tokens"],
                  "cache_creation": usage["cache_creation"],
                  "cache_read_input_tokens": usage["cache_read_input_tokens"], "output_tokens": 1}}})];
    for (i, block) in blocks.iter().enumerate() {
        if block["type"] == "text" {
            events.push(json!({"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}}));
            let text = block["text"].as_str().unwrap();
            let (a, b) = text.split_at(text.len() / 2);
            for piece in [a, b] {
                events.push(json!({"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": piece}}));
            }
        } else {
            events.push(
                json!({"type": "content_block_start", "index": i, "content_block":
                {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}}),
            );
            let input = block["input"].to_string();
            let (a, b) = input.split_at(input.len() / 2);
            for piece in [a, b] {
                events.push(json!({"type": "content_block_delta", "index": i, "delta": {"type": "input_json_delta", "partial_json": piece}}));
            }
        }
        if i == 0 {
            events.push(json!({"type": "ping"}));
        }
        events.push(json!({"type": "content_block_stop", "index": i}));
    }
    events.push(
        json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null},
        "usage": {"output_tokens": usage["output_tokens"]}}),
    );
    events.push(json!({"type": "message_stop"}));
    events
}

/// Anthropic's `POST /v1/messages`, failing as the model's name asks.
async fn messages(State(seen): State<Arc<Seen>>, headers: HeaderMap, body: String) -> Response {
    if headers.get("x-api-key").and_then(|k| k.to_str().ok()) != Some(KEY) {
        return error(401, "authentication_error", "invalid x-api-key");
    }
    if headers.get("anthropic-version").is_none() {
        return error(
            400,
            "invalid_request_error",
            "anthropic-version: header is required",
        );
    }
    if headers
        .get("content-type")
        .and_then(|c| c.to_str().ok())
        .is_none_or(|c| !c.starts_with("application/json"))
    {
        return error(
            400,
            "invalid_request_error",
            "content-type must be application/json",
        );
    }
    let Ok(body) = serde_json::from_str::<Value>(&body) else {
        return error(400, "invalid_request_error", "the body is not JSON");
    };
    seen.requests.lock().push((headers, body.clone()));
    if let Some(why) = invalid(&body) {
        return error(400, "invalid_request_error", &why);
    }
    let model = body["model"].as_str().unwrap().to_string();
    match model.as_str() {
        "claude-429" => {
            let mut r = error(
                429,
                "rate_limit_error",
                "Number of request tokens has exceeded your per-minute rate limit",
            );
            r.headers_mut().insert("retry-after", "2".parse().unwrap());
            return r;
        }
        "claude-529" => return error(529, "overloaded_error", "Overloaded"),
        "claude-long" => {
            return error(
                400,
                "invalid_request_error",
                "prompt is too long: 208310 tokens > 200000 maximum",
            );
        }
        _ => {}
    }
    let (blocks, stop) = reply(&body);
    let usage = usage(&body);
    if body["stream"] == true {
        let mut events = stream_of(&model, &blocks, stop, &usage);
        if model == "claude-overloaded-mid-stream" {
            events.truncate(3);
            events.push(json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}));
        }
        return sse(&events);
    }
    let mut answer = json!({"id": "msg_01whole", "type": "message", "role": "assistant", "model": model,
        "content": blocks, "stop_reason": stop, "stop_sequence": null, "usage": usage});
    if model == "claude-no-usage" {
        answer.as_object_mut().unwrap().remove("usage");
    }
    axum::Json(answer).into_response()
}

/// The fake on a free loopback port: its base URL and what it saw.
async fn serve() -> (String, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let app = Server::new()
        .route("/v1/messages", post(messages))
        .with_state(Arc::clone(&seen));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), seen)
}

fn claude(base: &str, group: &str, model: &str) -> Deployment {
    Deployment {
        id: Some(model.to_string()),
        api_base: Some(base.to_string()),
        api_key: Some(Secret::new(KEY)),
        input_cost_per_token: Some(0.000_003),
        output_cost_per_token: Some(0.000_015),
        ..Deployment::new(group, format!("anthropic/{model}"))
    }
}

async fn router(deployments: Vec<Deployment>, settings: RouterSettings) -> Router {
    Router::builder()
        .deployments(deployments)
        .settings(settings)
        .backend(HttpBackend::new().unwrap())
        .build()
        .await
        .unwrap()
}

fn hello() -> Value {
    json!({"messages": [{"role": "system", "content": "Be brief."},
                        {"role": "user", "content": "Hi"}]})
}

#[tokio::test]
async fn a_whole_answer_is_translated_with_its_usage_and_cost() {
    let (base, seen) = serve().await;
    let router = router(
        vec![claude(&base, "claude", "claude-ok")],
        RouterSettings::default(),
    )
    .await;
    let mut request = Request::new("claude", hello());
    request.request_id = Some("req-7".into());
    let answer = router.call(request).await.unwrap();

    let (headers, body) = seen.last();
    assert_eq!(headers["x-api-key"], KEY);
    assert_eq!(headers["anthropic-version"], "2023-06-01");
    assert_eq!(headers["x-request-id"], "req-7");
    assert_eq!(body["model"], "claude-ok");
    assert_eq!(body["max_tokens"], 4096);
    assert_eq!(body["system"], "Be brief.");
    assert_eq!(body["messages"], json!([{"role": "user", "content": "Hi"}]));

    assert_eq!(answer.protocol, Protocol::OpenAiChat);
    let chat = answer.body.to_value().unwrap();
    assert_eq!(chat["object"], "chat.completion");
    assert_eq!(
        chat["choices"][0]["message"]["content"],
        "Hello from Claude"
    );
    assert_eq!(chat["choices"][0]["finish_reason"], "stop");
    let usage = answer.usage.unwrap();
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (12, 7));
    let cost = answer.response_cost.unwrap();
    assert!(
        (cost - (12.0 * 0.000_003 + 7.0 * 0.000_015)).abs() < 1e-12,
        "{cost}"
    );
}

#[tokio::test]
async fn a_stream_is_translated_to_chunks_ending_with_the_usage() {
    let (base, seen) = serve().await;
    let router = router(
        vec![claude(&base, "claude", "claude-ok")],
        RouterSettings::default(),
    )
    .await;
    let mut body = hello();
    body["stream"] = true.into();
    let mut request = Request::new("claude", body);
    request.stream = true;
    let mut stream = router.stream(request).await.unwrap();
    let mut chunks = Vec::new();
    while let Some(chunk) = stream.next().await {
        chunks.push(chunk.unwrap().body.to_value().unwrap());
    }
    assert_eq!(seen.last().1["stream"], true);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello from Claude");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["prompt_tokens"], 12);
    assert_eq!(last["usage"]["completion_tokens"], 7);
    let usage = stream.usage().unwrap();
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (12, 7));
}

#[tokio::test]
async fn tools_go_as_tool_use_and_come_back_as_tool_results_whole_and_streamed() {
    let (base, seen) = serve().await;
    let router = router(
        vec![claude(&base, "claude", "claude-ok")],
        RouterSettings::default(),
    )
    .await;
    let tools = json!([{"type": "function", "function": {"name": "weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let ask = json!({"messages": [{"role": "user", "content": "Weather in Paris?"}],
                     "tools": tools, "tool_choice": "auto"});
    let answer = router
        .call(Request::new("claude", ask.clone()))
        .await
        .unwrap();
    let chat = answer.body.to_value().unwrap();
    let message = &chat["choices"][0]["message"];
    assert_eq!(chat["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(message["content"], "Let me check.");
    let call = &message["tool_calls"][0];
    assert_eq!(call["id"], "toolu_01");
    assert_eq!(call["function"]["name"], "weather");
    let arguments: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments, json!({"city": "Paris"}));
    let sent = seen.last().1;
    assert_eq!(
        sent["tools"][0]["input_schema"]["properties"]["city"]["type"],
        "string"
    );
    assert_eq!(sent["tool_choice"], json!({"type": "auto"}));

    // The streamed call gives the same call in pieces.
    let mut streamed = ask.clone();
    streamed["stream"] = true.into();
    let mut request = Request::new("claude", streamed);
    request.stream = true;
    let mut stream = router.stream(request).await.unwrap();
    let mut pieces = String::new();
    let mut finish = None;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap().body.to_value().unwrap();
        if let Some(piece) =
            chunk["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str()
        {
            pieces.push_str(piece);
        }
        if let Some(f) = chunk["choices"][0]["finish_reason"].as_str() {
            finish = Some(f.to_string());
        }
    }
    assert_eq!(
        serde_json::from_str::<Value>(&pieces).unwrap(),
        json!({"city": "Paris"})
    );
    assert_eq!(finish.as_deref(), Some("tool_calls"));

    // The result goes back as a tool_result answering the call (the fake checks the ids).
    let follow_up = json!({"messages": [
        {"role": "user", "content": "Weather in Paris?"},
        message.clone(),
        {"role": "tool", "tool_call_id": "toolu_01", "content": "22°C, sunny"},
    ], "tools": tools});
    let answer = router
        .call(Request::new("claude", follow_up))
        .await
        .unwrap();
    let chat = answer.body.to_value().unwrap();
    assert_eq!(
        chat["choices"][0]["message"]["content"],
        "It is sunny in Paris."
    );
    let sent = seen.last().1;
    assert_eq!(
        sent["messages"][1]["content"],
        json!([{"type": "text", "text": "Let me check."},
               {"type": "tool_use", "id": "toolu_01", "name": "weather", "input": {"city": "Paris"}}])
    );
    assert_eq!(
        sent["messages"][2]["content"],
        json!([{"type": "tool_result", "tool_use_id": "toolu_01", "content": "22°C, sunny"}])
    );
}

#[tokio::test]
async fn images_go_as_base64_and_url_sources() {
    let (base, seen) = serve().await;
    let router = router(
        vec![claude(&base, "claude", "claude-ok")],
        RouterSettings::default(),
    )
    .await;
    let body = json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is in these?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"}},
    ]}]});
    router.call(Request::new("claude", body)).await.unwrap();
    let sent = seen.last().1;
    assert_eq!(
        sent["messages"][0]["content"][1],
        json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}})
    );
    assert_eq!(
        sent["messages"][0]["content"][2],
        json!({"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}})
    );
}

fn call_of(body: Value, stream: bool) -> BackendRequest {
    BackendRequest {
        trace: None,
        body,
        stream,
        request_id: None,
        deployment_id: None,
        prepared: None,
        native: None,
    }
}

async fn class_of(deployment: &Deployment) -> ErrorClass {
    HttpBackend::new()
        .unwrap()
        .call(deployment, &call_of(hello(), false))
        .await
        .unwrap_err()
        .class
}

#[tokio::test]
async fn each_anthropic_error_is_classified() {
    let (base, _) = serve().await;
    assert_eq!(
        class_of(&claude(&base, "c", "claude-429")).await,
        ErrorClass::RateLimited {
            retry_after: Some(Duration::from_secs(2))
        }
    );
    assert_eq!(
        class_of(&claude(&base, "c", "claude-529")).await,
        ErrorClass::ServerError { status: 529 }
    );
    assert_eq!(
        class_of(&claude(&base, "c", "claude-long")).await,
        ErrorClass::ContextWindowExceeded
    );
    let wrong_key = Deployment {
        api_key: Some(Secret::new("sk-ant-wrong")),
        ..claude(&base, "c", "claude-ok")
    };
    assert_eq!(class_of(&wrong_key).await, ErrorClass::Authentication);
    // A body Anthropic would refuse is a bad request, not retried.
    let bad = HttpBackend::new()
        .unwrap()
        .call(
            &claude(&base, "c", "claude-ok"),
            &call_of(
                json!({"messages": [{"role": "assistant", "content": "first"}]}),
                false,
            ),
        )
        .await
        .unwrap_err();
    assert_eq!(bad.class, ErrorClass::BadRequest { status: 400 });
    assert!(
        bad.message.contains("roles must alternate"),
        "{}",
        bad.message
    );
    // What Messages cannot express never reaches Anthropic.
    let refused = HttpBackend::new()
        .unwrap()
        .call(
            &claude(&base, "c", "claude-ok"),
            &call_of(
                json!({"messages": [{"role": "user", "content": "x"}], "n": 3}),
                false,
            ),
        )
        .await
        .unwrap_err();
    assert_eq!(refused.class, ErrorClass::BadRequest { status: 400 });
    assert!(refused.message.contains("`n`"), "{}", refused.message);
}

#[tokio::test]
async fn an_overloaded_error_event_mid_stream_ends_the_stream_as_an_overload() {
    let (base, _) = serve().await;
    let backend = HttpBackend::new().unwrap();
    let deployment = claude(&base, "c", "claude-overloaded-mid-stream");
    let request = call_of(hello(), true);
    let mut stream = backend.stream(&deployment, &request).await.unwrap();
    let mut results = Vec::new();
    while let Some(item) = stream.next().await {
        results.push(item);
    }
    let error = results.last().unwrap().as_ref().unwrap_err();
    assert_eq!(error.class, ErrorClass::ServerError { status: 529 });
    assert!(results[..results.len() - 1].iter().all(Result::is_ok));
}

#[tokio::test]
async fn a_rate_limited_deployment_is_cooled_down_and_its_sibling_answers() {
    let (base, seen) = serve().await;
    let limited = Deployment {
        order: Some(1),
        allowed_fails: Some(0),
        ..claude(&base, "claude", "claude-429")
    };
    let sibling = Deployment {
        order: Some(2),
        ..claude(&base, "claude", "claude-ok")
    };
    let settings = RouterSettings {
        num_retries: 2,
        ..RouterSettings::default()
    };
    let router = router(vec![limited, sibling], settings).await;
    let answer = router.call(Request::new("claude", hello())).await.unwrap();
    assert_eq!(answer.deployment_id.as_str(), "claude-ok");
    assert_eq!(seen.bodies_for("claude-429").len(), 1);
    assert!(
        router
            .cooled_until(&DeploymentId::new("claude-429"))
            .is_some()
    );
}

#[tokio::test]
async fn an_overloaded_deployment_is_retried_then_the_fallback_answers() {
    let (base, seen) = serve().await;
    let settings = RouterSettings {
        num_retries: 1,
        fallbacks: [("claude".to_string(), vec!["backup".to_string()])].into(),
        ..RouterSettings::default()
    };
    let router = router(
        vec![
            claude(&base, "claude", "claude-529"),
            claude(&base, "backup", "claude-ok"),
        ],
        settings,
    )
    .await;
    let answer = router.call(Request::new("claude", hello())).await.unwrap();
    assert_eq!(answer.deployment_id.as_str(), "claude-ok");
    assert_eq!(answer.attempted_fallbacks, 1);
    assert_eq!(
        seen.bodies_for("claude-529").len(),
        2,
        "the first call and its retry"
    );
}

/// A Messages request as Anthropic's SDK sends it, with prompt caching.
fn native_request(stream: bool) -> Value {
    let mut body = json!({
        "model": "claude",
        "max_tokens": 300,
        "system": [{"type": "text", "text": "You are a librarian.",
                    "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "<the whole book>", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
            {"type": "text", "text": "Summarise it."}]}],
        "top_k": 5,
        "metadata": {"user_id": "reader-1"},
    });
    if stream {
        body["stream"] = true.into();
    }
    body
}

fn native_call(stream: bool) -> Request {
    let native = native_request(stream);
    let canonical = ferrolite_protocols::anthropic::client::request_to_chat(&native).unwrap();
    let mut request = Request::new("claude", canonical);
    request.stream = stream;
    request.native = Some(Native {
        extras: None,
        protocol: Protocol::AnthropicMessages,
        body: Arc::new(native),
    });
    request
}

#[tokio::test]
async fn a_callers_messages_request_passes_through_with_its_cache_control() {
    let (base, seen) = serve().await;
    let router = router(
        vec![claude(&base, "claude", "claude-ok")],
        RouterSettings::default(),
    )
    .await;
    let answer = router.call(native_call(false)).await.unwrap();

    let mut expected = native_request(false);
    expected["model"] = "claude-ok".into();
    assert_eq!(
        seen.last().1,
        expected,
        "sent as the caller wrote it, only the model replaced"
    );
    assert_eq!(answer.protocol, Protocol::AnthropicMessages);
    let body = answer.body.to_value().unwrap();
    assert_eq!(body["type"], "message");
    assert_eq!(body["id"], "msg_01whole");
    assert_eq!(body["content"][0]["text"], "Hello from Claude");
    assert_eq!(body["usage"]["cache_read_input_tokens"], 100);
    // Cache reads count in the prompt tokens (as LiteLLM counts them), and in the cost at the
    // deployment's price for them (no cache price: the input price).
    let usage = answer.usage.unwrap();
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.cache_read_tokens,
            usage.completion_tokens
        ),
        (112, 100, 7)
    );
    let cost = answer.response_cost.unwrap();
    assert!(
        (cost - (112.0 * 0.000_003 + 7.0 * 0.000_015)).abs() < 1e-12,
        "{cost}"
    );
}

#[tokio::test]
async fn cache_reads_and_writes_cost_the_catalogues_claude_cache_prices_whole_and_streamed() {
    let (base, _) = serve().await;
    let facts = ferrolite::catalogue::lookup("anthropic/claude-sonnet-4-5").unwrap();
    let (input, output) = (
        facts.input_cost_per_token.unwrap(),
        facts.output_cost_per_token.unwrap(),
    );
    let (read, write) = (
        facts.cache_read_input_token_cost.unwrap(),
        facts.cache_creation_input_token_cost.unwrap(),
    );
    assert!((read - 0.1 * input).abs() < 1e-15 && (write - 1.25 * input).abs() < 1e-15);
    let deployment = Deployment {
        input_cost_per_token: Some(input),
        output_cost_per_token: Some(output),
        cache_read_input_token_cost: Some(read),
        cache_creation_input_token_cost: Some(write),
        ..claude(&base, "claude", "claude-ok")
    };
    let router = router(vec![deployment], RouterSettings::default()).await;
    // LiteLLM's generic_cost_per_token: 12 uncached input tokens, 100 cache reads, 7 output.
    let expected = 12.0 * input + 100.0 * read + 7.0 * output;

    let answer = router.call(native_call(false)).await.unwrap();
    let usage = answer.usage.unwrap();
    assert_eq!((usage.prompt_tokens, usage.cache_read_tokens), (112, 100));
    let cost = answer.response_cost.unwrap();
    assert!((cost - expected).abs() < 1e-12, "{cost} != {expected}");

    let mut stream = router.stream(native_call(true)).await.unwrap();
    while let Some(chunk) = stream.next().await {
        chunk.unwrap();
    }
    assert_eq!(stream.usage().unwrap().cache_read_tokens, 100);
    let cost = stream.response_cost().unwrap();
    assert!((cost - expected).abs() < 1e-12, "{cost} != {expected}");

    // A chat request, translated, with 20 cache writes as well: the canonical usage carries
    // both counts to the cost.
    let request = Request::new(
        "claude",
        json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "<a new book>", "cache_control": {"type": "ephemeral"}}]}]}),
    );
    let answer = router.call(request).await.unwrap();
    let chat = answer.body.to_value().unwrap();
    assert_eq!(chat["usage"]["prompt_tokens"], 132);
    let usage = answer.usage.unwrap();
    assert_eq!(
        (usage.cache_read_tokens, usage.cache_write_tokens),
        (100, 20)
    );
    let expected = 12.0 * input + 100.0 * read + 20.0 * write + 7.0 * output;
    let cost = answer.response_cost.unwrap();
    assert!((cost - expected).abs() < 1e-12, "{cost} != {expected}");
}

/// Anthropic's one-hour cache writes (`"ttl": "1h"`) cost LiteLLM's
/// `cache_creation_input_token_cost_above_1hr` (twice the input price for Claude Sonnet 4.5),
/// not the five-minute price: whole, streamed, and passed through for a Messages caller.
#[tokio::test]
async fn one_hour_cache_writes_cost_the_one_hour_price_whole_and_streamed() {
    let (base, _) = serve().await;
    let facts = ferrolite::catalogue::lookup("anthropic/claude-sonnet-4-5").unwrap();
    let (input, output, read, write, hour) = (
        facts.input_cost_per_token.unwrap(),
        facts.output_cost_per_token.unwrap(),
        facts.cache_read_input_token_cost.unwrap(),
        facts.cache_creation_input_token_cost.unwrap(),
        facts.cache_creation_input_token_cost_above_1hr.unwrap(),
    );
    assert!((hour - 2.0 * input).abs() < 1e-15 && hour > write);
    // The catalogue's prices, as `ferrolite serve` fills them in from it.
    let deployment = Deployment {
        input_cost_per_token: Some(input),
        output_cost_per_token: Some(output),
        cache_read_input_token_cost: Some(read),
        cache_creation_input_token_cost: Some(write),
        cache_creation_input_token_cost_above_1hr: Some(hour),
        ..claude(&base, "claude", "claude-ok")
    };
    let router = router(vec![deployment], RouterSettings::default()).await;
    // 12 uncached input tokens, 100 cache reads, 20 writes for an hour, 7 output.
    let expected = 12.0 * input + 100.0 * read + 20.0 * hour + 7.0 * output;
    let body = |stream: bool| {
        json!({"stream": stream, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "<a new book>", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]}]})
    };

    let answer = router
        .call(Request::new("claude", body(false)))
        .await
        .unwrap();
    let chat = answer.body.to_value().unwrap();
    assert_eq!(
        chat["usage"]["prompt_tokens_details"]["cache_creation_token_details"],
        json!({"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 20}),
        "the split kept in the canonical usage, as LiteLLM keeps it"
    );
    let usage = answer.usage.unwrap();
    assert_eq!(
        (usage.cache_write_tokens, usage.cache_write_1h_tokens),
        (20, 20)
    );
    let cost = answer.response_cost.unwrap();
    assert!((cost - expected).abs() < 1e-12, "{cost} != {expected}");

    let mut request = Request::new("claude", body(true));
    request.stream = true;
    let mut stream = router.stream(request).await.unwrap();
    while let Some(chunk) = stream.next().await {
        chunk.unwrap();
    }
    assert_eq!(stream.usage().unwrap().cache_write_1h_tokens, 20);
    let cost = stream.response_cost().unwrap();
    assert!((cost - expected).abs() < 1e-12, "{cost} != {expected}");

    // A Messages caller's request passed through: the same price from Anthropic's own usage.
    let mut native = native_call(false);
    let mut caller = (*native.native.as_ref().unwrap().body).clone();
    caller["messages"][0]["content"] = json!([
        {"type": "text", "text": "<a new book>", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]);
    native.native.as_mut().unwrap().body = Arc::new(caller);
    let answer = router.call(native).await.unwrap();
    assert_eq!(answer.usage.unwrap().cache_write_1h_tokens, 20);
    let cost = answer.response_cost.unwrap();
    assert!((cost - expected).abs() < 1e-12, "{cost} != {expected}");
    // And streamed through: the split read from `message_start`'s usage.
    let mut native = native_call(true);
    let mut caller = (*native.native.as_ref().unwrap().body).clone();
    caller["messages"][0]["content"] = json!([
        {"type": "text", "text": "<a new book>", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]);
    native.native.as_mut().unwrap().body = Arc::new(caller);
    let mut stream = router.stream(native).await.unwrap();
    while let Some(chunk) = stream.next().await {
        chunk.unwrap();
    }
    assert_eq!(stream.usage().unwrap().cache_write_1h_tokens, 20);
    let cost = stream.response_cost().unwrap();
    assert!((cost - expected).abs() < 1e-12, "{cost} != {expected}");
}

#[tokio::test]
async fn a_callers_messages_stream_passes_through_event_by_event() {
    let (base, seen) = serve().await;
    let router = router(
        vec![claude(&base, "claude", "claude-ok")],
        RouterSettings::default(),
    )
    .await;
    let mut stream = router.stream(native_call(true)).await.unwrap();
    let mut kinds = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        assert_eq!(chunk.protocol, Protocol::AnthropicMessages);
        kinds.push(
            chunk.body.to_value().unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let mut expected = native_request(true);
    expected["model"] = "claude-ok".into();
    assert_eq!(seen.last().1, expected);
    assert_eq!(
        kinds,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "ping",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    let usage = stream.usage().unwrap();
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (112, 7));
}

#[tokio::test]
async fn the_deployments_extra_headers_override_anthropic_version_and_add_betas() {
    let (base, seen) = serve().await;
    let deployment = Deployment {
        extra_headers: [
            ("anthropic-version".to_string(), Secret::new("2024-10-22")),
            (
                "anthropic-beta".to_string(),
                Secret::new("prompt-caching-2024-07-31"),
            ),
        ]
        .into(),
        ..claude(&base, "c", "claude-ok")
    };
    HttpBackend::new()
        .unwrap()
        .call(&deployment, &call_of(hello(), false))
        .await
        .unwrap();
    let (headers, _) = seen.last();
    let versions: Vec<_> = headers.get_all("anthropic-version").iter().collect();
    assert_eq!(versions, ["2024-10-22"]);
    assert_eq!(headers["anthropic-beta"], "prompt-caching-2024-07-31");
}

#[tokio::test]
async fn an_api_base_that_names_the_messages_endpoint_is_called_as_it_is() {
    let (base, seen) = serve().await;
    let deployment = Deployment {
        api_base: Some(format!("{base}/v1/messages")),
        ..claude(&base, "c", "claude-ok")
    };
    HttpBackend::new()
        .unwrap()
        .call(&deployment, &call_of(hello(), false))
        .await
        .unwrap();
    assert_eq!(seen.requests.lock().len(), 1);
}

/// The gateway on a free port over `router`, behind a master key; its base URL.
#[cfg(feature = "gateway")]
async fn gateway(router: Router) -> String {
    use ferrolite::gateway::{GatewaySettings, app, serve};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let settings = GatewaySettings {
        master_key: Some(Secret::new("sk-gateway")),
        ..GatewaySettings::default()
    };
    tokio::spawn(serve(
        listener,
        app(router, settings),
        std::future::pending(),
    ));
    format!("http://{addr}")
}

/// The `type`s of a raw Messages event stream, checking each `event:` line names its data.
fn event_types(text: &str) -> Vec<String> {
    let events = ferrolite_protocols::sse::SseParser::new()
        .push(text.as_bytes())
        .unwrap();
    events
        .iter()
        .map(|e| {
            let data: Value = serde_json::from_str(&e.data).unwrap();
            let kind = data["type"].as_str().unwrap().to_string();
            assert_eq!(e.event.as_deref(), Some(kind.as_str()));
            kind
        })
        .collect()
}

#[cfg(feature = "gateway")]
#[tokio::test]
async fn through_the_gateway_a_messages_stream_to_an_anthropic_deployment_comes_back_event_for_event()
 {
    let (base, seen) = serve().await;
    let router = router(
        vec![claude(&base, "claude", "claude-ok")],
        RouterSettings::default(),
    )
    .await;
    let gateway = gateway(router).await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let response = reqwest::Client::new()
        .post(format!("{gateway}/v1/messages"))
        .header("x-api-key", "sk-gateway")
        .header("anthropic-version", "2023-06-01")
        .json(&native_request(true))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert_eq!(
        event_types(&text),
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "ping",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    let mut expected = native_request(true);
    expected["model"] = "claude-ok".into();
    assert_eq!(seen.last().1, expected);
}

#[cfg(feature = "gateway")]
#[tokio::test]
async fn through_the_gateway_a_chat_stream_to_an_anthropic_deployment_is_openai_chunks() {
    let (base, _) = serve().await;
    let router = router(
        vec![claude(&base, "claude", "claude-ok")],
        RouterSettings::default(),
    )
    .await;
    let gateway = gateway(router).await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let response = reqwest::Client::new()
        .post(format!("{gateway}/v1/chat/completions"))
        .bearer_auth("sk-gateway")
        .json(&json!({"model": "claude", "stream": true,
            "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let events = ferrolite_protocols::sse::SseParser::new()
        .push(text.as_bytes())
        .unwrap();
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let content: String = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(&e.data).unwrap())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(content, "Hello from Claude");
}

#[tokio::test]
async fn a_passed_through_answer_without_usage_has_no_usage_rather_than_zero() {
    let (base, _) = serve().await;
    let backend = HttpBackend::new().unwrap();
    let native = native_request(false);
    let canonical = ferrolite_protocols::anthropic::client::request_to_chat(&native).unwrap();
    let request = BackendRequest {
        trace: None,
        native: Some(Native {
            extras: None,
            protocol: Protocol::AnthropicMessages,
            body: Arc::new(native),
        }),
        ..call_of(canonical, false)
    };
    let answer = backend
        .call(&claude(&base, "claude", "claude-no-usage"), &request)
        .await
        .unwrap();
    assert_eq!(answer.protocol, Protocol::AnthropicMessages);
    assert!(answer.body.to_value().unwrap().get("usage").is_none());
    assert_eq!(answer.usage, None);
    // With its usage, the same answer is counted.
    let answer = backend
        .call(&claude(&base, "claude", "claude-ok"), &request)
        .await
        .unwrap();
    let usage = answer.usage.unwrap();
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (112, 7));
}

/// As LiteLLM's proxy forwards `anthropic-beta`: a Messages request passed through to an
/// `anthropic/` deployment carries its caller's `anthropic-beta` (after the deployment's own
/// betas) and `anthropic-version` (instead of the default); a chat completion, translated for
/// the same deployment, carries neither.
#[cfg(feature = "gateway")]
#[tokio::test]
async fn through_the_gateway_a_passed_through_messages_request_carries_the_callers_anthropic_headers()
 {
    let (base, seen) = serve().await;
    let deployment = Deployment {
        extra_headers: [(
            "anthropic-beta".to_string(),
            Secret::new("prompt-caching-2024-07-31"),
        )]
        .into(),
        ..claude(&base, "claude", "claude-ok")
    };
    let gateway = gateway(router(vec![deployment], RouterSettings::default()).await).await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{gateway}/v1/messages"))
        .header("x-api-key", "sk-gateway")
        .header("anthropic-version", "2023-01-01")
        .header(
            "anthropic-beta",
            "context-1m-2025-08-07,prompt-caching-2024-07-31",
        )
        .header("anthropic-beta", "interleaved-thinking-2025-05-14")
        .json(&native_request(false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (headers, _) = seen.last();
    let versions: Vec<_> = headers.get_all("anthropic-version").iter().collect();
    assert_eq!(versions, ["2023-01-01"]);
    let betas: Vec<_> = headers.get_all("anthropic-beta").iter().collect();
    assert_eq!(
        betas,
        ["prompt-caching-2024-07-31,context-1m-2025-08-07,interleaved-thinking-2025-05-14"]
    );

    // Translated (a chat completion): the deployment's headers alone.
    let response = client
        .post(format!("{gateway}/v1/chat/completions"))
        .bearer_auth("sk-gateway")
        .header("anthropic-version", "2023-01-01")
        .header("anthropic-beta", "context-1m-2025-08-07")
        .json(&json!({"model": "claude", "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (headers, _) = seen.last();
    assert_eq!(
        headers["anthropic-version"],
        ferrolite_protocols::anthropic::ANTHROPIC_VERSION
    );
    assert_eq!(headers["anthropic-beta"], "prompt-caching-2024-07-31");

    // Without the caller's headers: the default version.
    let response = client
        .post(format!("{gateway}/v1/messages"))
        .header("x-api-key", "sk-gateway")
        .json(&native_request(false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (headers, _) = seen.last();
    assert_eq!(
        headers["anthropic-version"],
        ferrolite_protocols::anthropic::ANTHROPIC_VERSION
    );
    assert_eq!(headers["anthropic-beta"], "prompt-caching-2024-07-31");
}
