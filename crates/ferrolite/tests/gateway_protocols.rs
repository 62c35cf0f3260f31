//! The gateway's other protocols over real HTTP on loopback: Anthropic's Messages API
//! (`/v1/messages`, `/v1/messages/count_tokens`) and OpenAI's Responses API (`/v1/responses`),
//! translated to the canonical chat form and back for any deployment — whole answers, streams
//! in each protocol's events, errors in each protocol's shape, with the router's limits, cache
//! and `x-litellm-*` headers as for a chat completion.
#![cfg(all(feature = "gateway", feature = "http"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use ferrolite::Router;
use ferrolite::gateway::{GatewaySettings, app, serve};
use ferrolite::mock::{MockBackend, MockSpec};
use ferrolite::protocols::sse::{SseEvent, SseParser};
use ferrolite::types::{Deployment, ErrorClass, Secret};
use serde_json::{Value, json};

const KEY: &str = "sk-gateway-protocols";

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// A gateway on a free port over a router of one mocked group `claude` (deployment `one`,
/// rpm 2), behind the master key; its base URL.
async fn gateway(spec: MockSpec) -> String {
    let router = Router::builder()
        .deployment(Deployment {
            id: Some("one".into()),
            rpm: Some(2),
            ..Deployment::new("claude", "anthropic/claude-sonnet-4-5")
        })
        .backend(MockBackend::new(spec))
        .build()
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let settings = GatewaySettings {
        master_key: Some(Secret::new(KEY)),
        ..GatewaySettings::default()
    };
    tokio::spawn(serve(
        listener,
        app(router, settings),
        std::future::pending(),
    ));
    format!("http://{addr}")
}

/// POSTs `body` to `path` with Anthropic's headers (`x-api-key`, `anthropic-version`).
async fn anthropic(base: &str, path: &str, body: Value) -> reqwest::Response {
    http()
        .post(format!("{base}{path}"))
        .header("x-api-key", KEY)
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// The server-sent events of a streamed answer, whole.
async fn events(response: reqwest::Response) -> Vec<SseEvent> {
    let bytes = response.bytes().await.unwrap();
    let mut parser = SseParser::new();
    let mut events = parser.push(&bytes).unwrap();
    events.extend(parser.finish());
    events
}

fn data(event: &SseEvent) -> Value {
    serde_json::from_str(&event.data).unwrap()
}

#[tokio::test]
async fn a_messages_client_gets_an_anthropic_answer_from_any_deployment() {
    let base = gateway(MockSpec::reply("Hello from the mock")).await;
    let response = anthropic(
        &base,
        "/v1/messages",
        json!({
            "model": "claude",
            "max_tokens": 64,
            "system": "Be brief.",
            "messages": [{"role": "user", "content": "Say hello"}],
        }),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-litellm-model-id"], "one");
    assert_eq!(response.headers()["x-litellm-model-group"], "claude");
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["type"], "message", "{answer}");
    assert_eq!(answer["role"], "assistant");
    assert_eq!(answer["model"], "claude");
    assert_eq!(answer["content"][0]["type"], "text");
    assert_eq!(answer["content"][0]["text"], "Hello from the mock");
    assert_eq!(answer["stop_reason"], "end_turn");
    assert!(answer["usage"]["input_tokens"].as_u64().unwrap() > 0);
    assert!(answer["usage"]["output_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn a_messages_stream_comes_as_anthropics_events_in_their_order() {
    let base = gateway(MockSpec::reply("one two three four five")).await;
    let response = anthropic(
        &base,
        "/v1/messages",
        json!({
            "model": "claude",
            "max_tokens": 64,
            "stream": true,
            "messages": [{"role": "user", "content": "Count"}],
        }),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let events = events(response).await;
    let names: Vec<&str> = events.iter().filter_map(|e| e.event.as_deref()).collect();
    assert_eq!(names.first(), Some(&"message_start"), "{names:?}");
    assert_eq!(names.last(), Some(&"message_stop"), "{names:?}");
    assert!(names.contains(&"content_block_start"), "{names:?}");
    assert!(names.contains(&"content_block_stop"), "{names:?}");
    assert!(names.contains(&"message_delta"), "{names:?}");
    // Each event's name is its data's `type`.
    for event in &events {
        assert_eq!(
            Some(data(event)["type"].as_str().unwrap()),
            event.event.as_deref()
        );
    }
    let text: String = events
        .iter()
        .map(data)
        .filter(|d| d["type"] == "content_block_delta")
        .map(|d| d["delta"]["text"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(text, "one two three four five");
    let delta = events
        .iter()
        .map(data)
        .find(|d| d["type"] == "message_delta")
        .unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert!(delta["usage"]["output_tokens"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn messages_errors_come_in_anthropics_shape_with_the_tables_status() {
    let base = gateway(MockSpec::reply("hi")).await;
    let body = json!({"model": "claude", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]});
    // No key.
    let response = http()
        .post(format!("{base}/v1/messages"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["error"]["type"], "authentication_error");
    // An unknown group.
    let mut unknown = body.clone();
    unknown["model"] = "gpt-99".into();
    let response = anthropic(&base, "/v1/messages", unknown).await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("gpt-99"),
        "{error}"
    );
    // No `messages`: a 400 naming the field.
    let response = anthropic(
        &base,
        "/v1/messages",
        json!({"model": "claude", "max_tokens": 8}),
    )
    .await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("messages"),
        "{error}"
    );
    // Over the deployment's rpm of 2: a 429 with Retry-After, as Anthropic's rate_limit_error.
    for _ in 0..2 {
        assert_eq!(
            anthropic(&base, "/v1/messages", body.clone())
                .await
                .status(),
            200
        );
    }
    let response = anthropic(&base, "/v1/messages", body).await;
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["type"], "rate_limit_error", "{error}");
}

#[tokio::test]
async fn an_upstream_failure_reaches_a_messages_client_in_anthropics_shape() {
    let spec = MockSpec {
        error_rates: vec![(ErrorClass::ServerError { status: 503 }, 1.0)],
        ..MockSpec::reply("never")
    };
    let base = gateway(spec).await;
    let response = anthropic(
        &base,
        "/v1/messages",
        json!({"model": "claude", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}], "num_retries": 0}),
    )
    .await;
    assert_eq!(response.status(), 503);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["error"]["type"], "api_error");
}

#[tokio::test]
async fn count_tokens_counts_the_translated_prompt_without_a_call() {
    // The deployment fails every call: counting must not call it.
    let spec = MockSpec {
        error_rates: vec![(ErrorClass::ServerError { status: 500 }, 1.0)],
        ..MockSpec::reply("never")
    };
    let base = gateway(spec).await;
    let count = |text: &str| {
        let base = base.clone();
        let text = text.to_string();
        async move {
            let response = anthropic(
                &base,
                "/v1/messages/count_tokens",
                json!({"model": "claude", "messages": [{"role": "user", "content": text}]}),
            )
            .await;
            assert_eq!(response.status(), 200);
            let answer: Value = response.json().await.unwrap();
            answer["input_tokens"].as_u64().unwrap()
        }
    };
    let short = count("hello").await;
    let long = count(&"hello world ".repeat(50)).await;
    assert!(short > 0);
    assert!(long >= short + 90, "{short} {long}");
    // A part the chat form cannot carry (a server tool) is counted without, not refused.
    let response = anthropic(
        &base,
        "/v1/messages/count_tokens",
        json!({"model": "claude", "tools": [{"type": "web_search_20250305", "name": "web_search"}],
               "messages": [{"role": "user", "content": "hello"}]}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["input_tokens"].as_u64().unwrap(), short);
}

#[tokio::test]
async fn a_responses_client_gets_a_response_object_whole_and_streamed() {
    let base = gateway(MockSpec::reply("Hello from the mock")).await;
    let response = http()
        .post(format!("{base}/v1/responses"))
        .bearer_auth(KEY)
        .json(&json!({"model": "claude", "input": "Say hello", "instructions": "Be brief."}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-litellm-model-id"], "one");
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["object"], "response", "{answer}");
    assert_eq!(answer["status"], "completed");
    assert_eq!(answer["model"], "claude");
    let message = answer["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|item| item["type"] == "message")
        .unwrap();
    assert_eq!(message["content"][0]["type"], "output_text");
    assert_eq!(message["content"][0]["text"], "Hello from the mock");
    assert!(answer["usage"]["input_tokens"].as_u64().unwrap() > 0);
    assert!(answer["usage"]["output_tokens"].as_u64().unwrap() > 0);

    let response = http()
        .post(format!("{base}/v1/responses"))
        .bearer_auth(KEY)
        .json(&json!({"model": "claude", "input": "Say hello", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let events = events(response).await;
    let names: Vec<&str> = events.iter().filter_map(|e| e.event.as_deref()).collect();
    assert_eq!(names.first(), Some(&"response.created"), "{names:?}");
    assert_eq!(names.last(), Some(&"response.completed"), "{names:?}");
    let text: String = events
        .iter()
        .map(data)
        .filter(|d| d["type"] == "response.output_text.delta")
        .map(|d| d["delta"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(text, "Hello from the mock");
    let numbers: Vec<u64> = events
        .iter()
        .map(|e| data(e)["sequence_number"].as_u64().unwrap())
        .collect();
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
}

#[tokio::test]
async fn responses_errors_come_in_openais_shape() {
    let base = gateway(MockSpec::reply("hi")).await;
    let response = http()
        .post(format!("{base}/v1/responses"))
        .bearer_auth(KEY)
        .json(&json!({"model": "gpt-99", "input": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
    assert_eq!(error["error"]["param"], "model");
}

/// A gateway over the HTTP backend with one `openai/` group (`compat`) whose upstream is never
/// reached in these tests (port 9 on loopback).
async fn http_gateway() -> String {
    let router = Router::builder()
        .deployment(Deployment {
            id: Some("compat".into()),
            api_base: Some("http://127.0.0.1:9/v1".into()),
            ..Deployment::new("compat", "hosted_vllm/llama").with_api_key("sk-up")
        })
        .backend(ferrolite::http::HttpBackend::new().unwrap())
        .build()
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let settings = GatewaySettings {
        master_key: Some(Secret::new(KEY)),
        ..GatewaySettings::default()
    };
    tokio::spawn(serve(
        listener,
        app(router, settings),
        std::future::pending(),
    ));
    format!("http://{addr}")
}

/// A request with a part the chat form cannot carry is routed on the rest (a deployment of the
/// caller's protocol would take it whole), and a deployment that would be sent the
/// translation refuses it naming the field, before anything is sent.
#[tokio::test]
async fn a_request_the_chat_form_cannot_carry_whole_is_refused_by_a_translating_deployment() {
    let base = http_gateway().await;
    // A Responses built-in tool.
    let response = http()
        .post(format!("{base}/v1/responses"))
        .bearer_auth(KEY)
        .json(&json!({"model": "compat", "input": "hi", "tools": [{"type": "web_search"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("`tools[0]"), "{error}");
    assert!(message.contains("hosted_vllm"), "{error}");
    // A stored conversation, also one whose id names the deployment itself.
    let managed = ferrolite::types::ManagedResponseId::encode("hosted_vllm", "compat", "resp_1");
    for previous in ["resp_1", managed.as_str()] {
        let response = http()
            .post(format!("{base}/v1/responses"))
            .bearer_auth(KEY)
            .json(&json!({"model": "compat", "input": "hi", "previous_response_id": previous}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        let error: Value = response.json().await.unwrap();
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .contains("previous_response_id"),
            "{error}"
        );
    }
    // An Anthropic server tool, in Anthropic's error shape.
    let response = anthropic(
        &base,
        "/v1/messages",
        json!({"model": "compat", "max_tokens": 8,
               "tools": [{"type": "web_search_20250305", "name": "web_search"}],
               "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["type"], "error", "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tools"),
        "{error}"
    );
    // Without its messages nothing is routed: the first error, naming the field.
    let response = anthropic(
        &base,
        "/v1/messages",
        json!({"model": "compat", "max_tokens": 8, "messages": "hi"}),
    )
    .await;
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("messages"),
        "{error}"
    );
}

/// The response cache keys on the canonical form: a repeated Messages call is answered from it
/// (no deployment called) in Anthropic's shape, a repeated Responses call in the Responses API's,
/// with LiteLLM's cache headers.
#[tokio::test]
async fn repeated_calls_of_either_protocol_are_answered_from_the_response_cache() {
    let router = Router::builder()
        .deployment(Deployment {
            id: Some("one".into()),
            ..Deployment::new("claude", "anthropic/claude-sonnet-4-5")
        })
        .settings(ferrolite::router::RouterSettings {
            response_cache: Some(ferrolite::router::ResponseCacheSettings::default()),
            ..ferrolite::router::RouterSettings::default()
        })
        .backend(MockBackend::new(MockSpec::reply("Cached words")))
        .build()
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let settings = GatewaySettings {
        master_key: Some(Secret::new(KEY)),
        ..GatewaySettings::default()
    };
    tokio::spawn(serve(
        listener,
        app(router, settings),
        std::future::pending(),
    ));
    let body = json!({"model": "claude", "max_tokens": 32, "messages": [{"role": "user", "content": "Cache me"}]});
    let first = anthropic(&base, "/v1/messages", body.clone()).await;
    assert_eq!(first.headers()["x-ferrolite-cache-hit"], "false");
    let second = anthropic(&base, "/v1/messages", body).await;
    assert_eq!(second.status(), 200);
    assert_eq!(second.headers()["x-ferrolite-cache-hit"], "true");
    assert_eq!(second.headers()["x-litellm-response-cost"], "0");
    let answer: Value = second.json().await.unwrap();
    assert_eq!(answer["type"], "message", "{answer}");
    assert_eq!(answer["content"][0]["text"], "Cached words");

    let request = || {
        http()
            .post(format!("{base}/v1/responses"))
            .bearer_auth(KEY)
            .json(&json!({"model": "claude", "input": "Cache me too"}))
            .send()
    };
    let first = request().await.unwrap();
    assert_eq!(first.headers()["x-ferrolite-cache-hit"], "false");
    let second = request().await.unwrap();
    assert_eq!(second.headers()["x-ferrolite-cache-hit"], "true");
    let answer: Value = second.json().await.unwrap();
    assert_eq!(answer["object"], "response", "{answer}");
    assert_eq!(answer["output"][0]["content"][0]["text"], "Cached words");
}

/// A Messages request with a part the chat form cannot carry (an Anthropic server tool) goes,
/// in a group that mixes an `anthropic/` deployment with an OpenAI-compatible one, only to the
/// deployment that takes it as it is: every call is answered, none refused by the other (which
/// would be picked about half the time without the filter).
#[tokio::test]
async fn in_a_mixed_group_an_untranslatable_request_goes_to_the_deployment_that_takes_it_whole() {
    // A minimal Anthropic upstream: records what it got, answers one Messages answer.
    let received = std::sync::Arc::new(parking_lot::Mutex::new(Vec::<Value>::new()));
    let seen = std::sync::Arc::clone(&received);
    let upstream = axum::Router::new().route(
        "/v1/messages",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let seen = std::sync::Arc::clone(&seen);
            async move {
                seen.lock().push(body);
                axum::Json(json!({
                    "id": "msg_1", "type": "message", "role": "assistant",
                    "model": "claude-sonnet-4-5", "stop_reason": "end_turn", "stop_sequence": null,
                    "content": [{"type": "text", "text": "searched"}],
                    "usage": {"input_tokens": 9, "output_tokens": 2},
                }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, upstream).await });
    let router = Router::builder()
        .deployment(Deployment {
            id: Some("claude".into()),
            api_base: Some(format!("http://{up}")),
            ..Deployment::new("mixed", "anthropic/claude-sonnet-4-5").with_api_key("sk-ant")
        })
        .deployment(Deployment {
            id: Some("compat".into()),
            api_base: Some("http://127.0.0.1:9/v1".into()),
            ..Deployment::new("mixed", "hosted_vllm/llama").with_api_key("sk-up")
        })
        .backend(ferrolite::http::HttpBackend::new().unwrap())
        .build()
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let settings = GatewaySettings {
        master_key: Some(Secret::new(KEY)),
        ..GatewaySettings::default()
    };
    tokio::spawn(serve(
        listener,
        app(router, settings),
        std::future::pending(),
    ));
    let tool = json!({"type": "web_search_20250305", "name": "web_search", "max_uses": 2});
    for _ in 0..12 {
        let response = anthropic(
            &base,
            "/v1/messages",
            json!({"model": "mixed", "max_tokens": 64, "tools": [tool.clone()],
                   "messages": [{"role": "user", "content": "Search the news"}]}),
        )
        .await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-litellm-model-id"], "claude");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["content"][0]["text"], "searched", "{answer}");
    }
    // Passed through whole: the server tool reached the upstream as the client wrote it.
    let received = received.lock();
    assert_eq!(received.len(), 12);
    assert_eq!(received[0]["tools"][0], tool);
    assert_eq!(received[0]["model"], "claude-sonnet-4-5");
}
