//! The gateway over real HTTP on loopback, called by a maintained OpenAI client (async-openai)
//! and by plain HTTP where the client hides what is checked (status codes, headers, raw SSE).
#![cfg(all(feature = "gateway", feature = "http"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::time::Duration;

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::types::{
    ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequestArgs,
    CreateCompletionRequestArgs, CreateEmbeddingRequestArgs,
};
use ferrolite::Router;
use ferrolite::gateway::{GatewaySettings, app, serve};
use ferrolite::mock::{MockBackend, MockSpec};
use ferrolite::types::{Deployment, DeploymentId, ErrorClass, Secret};
use futures_util::StreamExt;

const KEY: &str = "sk-gateway-test";

/// A plain HTTP client (reqwest with rustls needs its crypto provider installed once).
fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// A gateway on a free port over a mocked router, behind the master key; its base URL.
async fn gateway(router: Router) -> String {
    gateway_with(
        router,
        GatewaySettings {
            master_key: Some(Secret::new(KEY)),
            max_body_bytes: 64 * 1024,
            ..GatewaySettings::default()
        },
    )
    .await
}

/// A gateway on a free port over `router` with `settings`; its base URL.
async fn gateway_with(router: Router, settings: GatewaySettings) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(
        listener,
        app(router, settings),
        std::future::pending(),
    ));
    format!("http://{addr}")
}

async fn mocked(spec: MockSpec) -> Router {
    Router::builder()
        .deployment(Deployment {
            id: Some("one".into()),
            ..Deployment::new("gpt-4o", "openai/gpt-4o")
        })
        .deployment(Deployment {
            id: Some("emb".into()),
            ..Deployment::new("embedder", "openai/text-embedding-3-small")
        })
        .backend(MockBackend::new(spec))
        .build()
        .await
        .unwrap()
}

fn client(base: &str, key: &str) -> Client<OpenAIConfig> {
    Client::with_config(
        OpenAIConfig::new()
            .with_api_base(format!("{base}/v1"))
            .with_api_key(key),
    )
}

fn chat(model: &str, stream: bool) -> async_openai::types::CreateChatCompletionRequest {
    let mut args = CreateChatCompletionRequestArgs::default();
    args.model(model)
        .messages([ChatCompletionRequestUserMessageArgs::default()
            .content("Say hello")
            .build()
            .unwrap()
            .into()]);
    if stream {
        args.stream(true);
    }
    args.build().unwrap()
}

#[tokio::test]
async fn an_openai_client_gets_chat_completions_streams_completions_and_embeddings() {
    let base = gateway(mocked(MockSpec::reply("Hello there friend")).await).await;
    let client = client(&base, KEY);

    let answer = client.chat().create(chat("gpt-4o", false)).await.unwrap();
    assert_eq!(answer.model, "gpt-4o");
    assert_eq!(
        answer.choices[0].message.content.as_deref(),
        Some("Hello there friend")
    );
    assert!(answer.usage.unwrap().total_tokens > 0);

    let mut stream = client
        .chat()
        .create_stream(chat("gpt-4o", true))
        .await
        .unwrap();
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        assert_eq!(chunk.model, "gpt-4o");
        if let Some(choice) = chunk.choices.first() {
            text.push_str(choice.delta.content.as_deref().unwrap_or(""));
        }
    }
    assert_eq!(text, "Hello there friend");

    let completion = client
        .completions()
        .create(
            CreateCompletionRequestArgs::default()
                .model("gpt-4o")
                .prompt("Once upon")
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(completion.choices[0].text, "Hello there friend");

    let embedding = client
        .embeddings()
        .create(
            CreateEmbeddingRequestArgs::default()
                .model("embedder")
                .input("vectors please")
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(embedding.model, "embedder");
    assert!(!embedding.data[0].embedding.is_empty());

    let models = client.models().list().await.unwrap();
    let ids: Vec<String> = models.data.into_iter().map(|m| m.id).collect();
    assert_eq!(ids, ["embedder", "gpt-4o"]);
}

/// The API error a chat completion of `model` with `key` gets.
async fn chat_error(base: &str, key: &str, model: &str) -> async_openai::error::ApiError {
    api_error(
        client(base, key)
            .chat()
            .create(chat(model, false))
            .await
            .unwrap_err(),
    )
}

fn api_error(e: OpenAIError) -> async_openai::error::ApiError {
    match e {
        OpenAIError::ApiError(e) => e,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn errors_come_in_openais_shape_with_the_right_status() {
    let base = gateway(mocked(MockSpec::default()).await).await;
    // No key, a wrong key.
    let e = chat_error(&base, "", "gpt-4o").await;
    assert!(e.message.contains("no API key"), "{e:?}");
    let e = chat_error(&base, "sk-wrong", "gpt-4o").await;
    assert!(e.message.contains("invalid API key"), "{e:?}");
    assert_eq!(e.r#type.as_deref(), Some("auth_error"));
    // An unknown group: 400 in LiteLLM's words, without the list of groups.
    let e = chat_error(&base, KEY, "gpt-5").await;
    assert!(
        e.message
            .starts_with("Invalid model name passed in model=gpt-5.")
            && !e.message.contains("embedder"),
        "{e:?}"
    );
    assert_eq!(e.param.as_deref(), Some("model"));

    let http = http();
    let post = |body: reqwest::Body| {
        http.post(format!("{base}/v1/chat/completions"))
            .bearer_auth(KEY)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let bad_json = post("{not json".into()).await.unwrap();
    assert_eq!(bad_json.status(), 400);
    let body: serde_json::Value = bad_json.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON"),
        "{body}"
    );
    let no_model = post(r#"{"messages": []}"#.into()).await.unwrap();
    assert_eq!(no_model.status(), 400);
    let body: serde_json::Value = no_model.json().await.unwrap();
    assert_eq!(body["error"]["param"], "model");
    let huge = post(format!(r#"{{"model": "gpt-4o", "x": "{}"}}"#, "a".repeat(100_000)).into())
        .await
        .unwrap();
    assert_eq!(huge.status(), 413);
    let unauthorized = http.get(format!("{base}/v1/models")).send().await.unwrap();
    assert_eq!(unauthorized.status(), 401);
    let alive = http
        .get(format!("{base}/health/liveliness"))
        .send()
        .await
        .unwrap();
    assert_eq!(alive.status(), 200);
    let ready: serde_json::Value = http
        .get(format!("{base}/health/readiness"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "healthy");
}

#[tokio::test]
async fn answers_carry_litellms_headers_and_a_429_carries_retry_after() {
    let base = gateway(mocked(MockSpec::reply("hi")).await).await;
    let http = http();
    let response = http
        .post(format!("{base}/chat/completions"))
        .bearer_auth(KEY)
        .json(&serde_json::json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers();
    assert_eq!(headers["x-litellm-model-id"], "one");
    assert_eq!(headers["x-litellm-model-group"], "gpt-4o");
    assert_eq!(headers["x-litellm-attempted-retries"], "0");
    assert_eq!(headers["x-litellm-attempted-fallbacks"], "0");
    assert!(headers.contains_key("x-litellm-response-cost"));
    assert!(headers.contains_key("x-ferrolite-overhead-ms"));
    assert!(
        headers["x-request-id"]
            .to_str()
            .unwrap()
            .starts_with("ferrolite-")
    );
    let echoed = http
        .post(format!("{base}/chat/completions"))
        .bearer_auth(KEY)
        .header("x-request-id", "client-chosen-42")
        .json(&serde_json::json!({"model": "gpt-4o", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "client-chosen-42");

    // A lone deployment that always rate-limits: after the retries, 429 with Retry-After.
    let limited = Router::builder()
        .deployment(Deployment::new("g", "openai/gpt-4o"))
        .settings(ferrolite::router::RouterSettings {
            num_retries: 0,
            ..Default::default()
        })
        .backend(MockBackend::new(MockSpec::failing(
            ErrorClass::RateLimited {
                retry_after: Some(Duration::from_secs(7)),
            },
        )))
        .build()
        .await
        .unwrap();
    let base = gateway(limited).await;
    let response = http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&serde_json::json!({"model": "g", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(
        response.headers()["retry-after"],
        "7",
        "the provider's Retry-After"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");
}

#[tokio::test]
async fn a_stream_is_passed_through_as_server_sent_events_ending_with_done() {
    let base = gateway(mocked(MockSpec::reply("one two three")).await).await;
    let text = http()
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&serde_json::json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert!(events.iter().all(|e| e.starts_with("data: ")), "{text}");
    assert_eq!(events.last(), Some(&"data: [DONE]"));
    assert_eq!(events.len(), 4, "three words and [DONE]: {text}");
}

#[tokio::test]
async fn clients_that_disconnect_mid_stream_leak_nothing() {
    let router = Router::builder()
        .deployment(Deployment {
            id: Some("slow".into()),
            max_parallel_requests: Some(1000),
            ..Deployment::new("g", "openai/gpt-4o")
        })
        .backend(MockBackend::new(MockSpec {
            latency: Duration::from_secs(30),
            time_to_first_token: Some(Duration::from_millis(1)),
            ..MockSpec::reply("a b c d e f g h")
        }))
        .build()
        .await
        .unwrap();
    let base = gateway(router.clone()).await;
    let http = http();
    for _ in 0..1_000 {
        let response = http
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(KEY)
            .json(&serde_json::json!({"model": "g", "stream": true, "messages": []}))
            .send()
            .await
            .unwrap();
        let mut body = response.bytes_stream();
        let first = body.next().await.unwrap().unwrap();
        assert!(first.starts_with(b"data: "));
        drop(body); // the client goes away mid-stream
    }
    let id = DeploymentId::new("slow");
    let mut in_flight = router.in_flight(&id);
    for _ in 0..250 {
        if in_flight == Some(0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        in_flight = router.in_flight(&id);
    }
    assert_eq!(
        in_flight,
        Some(0),
        "every dropped stream gave its slot back"
    );
}

/// An OpenAI-speaking upstream on loopback: model `broken` answers 500, `slow-429` 429 with
/// Retry-After, anything else a chat completion naming the model it got.
async fn upstream() -> String {
    use axum::routing::post;
    async fn answer(
        headers: axum::http::HeaderMap,
        axum::Json(body): axum::Json<serde_json::Value>,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        let model = body["model"].as_str().unwrap_or("").to_string();
        // Answers with the `x-request-id` it received.
        let model = if model == "echo-id" {
            headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
                .to_string()
        } else {
            model
        };
        let streamed = body["stream"].as_bool().unwrap_or(false);
        let sse = |events: Vec<String>, done: bool| {
            let mut text: String = events
                .into_iter()
                .map(|e| format!("data: {e}\n\n"))
                .collect();
            if done {
                text.push_str("data: [DONE]\n\n");
            }
            text
        };
        let chunk = |model: &str, piece: &str| {
            serde_json::json!({"id": "x", "object": "chat.completion.chunk", "created": 0, "model": model,
                "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": null}]})
            .to_string()
        };
        match model.as_str() {
            "broken" => (
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(serde_json::json!({"error": {"message": "upstream exploded"}})),
            )
                .into_response(),
            "limited" => {
                let mut r = (
                    axum::http::StatusCode::TOO_MANY_REQUESTS,
                    axum::Json(serde_json::json!({"error": {"message": "slow down"}})),
                )
                    .into_response();
                r.headers_mut().insert("retry-after", "12".parse().unwrap());
                r
            }
            "slow" => {
                tokio::time::sleep(std::time::Duration::from_secs(30)).await;
                axum::http::StatusCode::OK.into_response()
            }
            "streamer" if streamed => axum::response::Response::builder()
                .header("content-type", "text/event-stream")
                .body(axum::body::Body::from(sse(
                    vec![chunk(&model, "str"), chunk(&model, "eamed")],
                    true,
                )))
                .unwrap(),
            "breaker" if streamed => {
                let first = sse(vec![chunk(&model, "half")], false);
                let parts = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(first)]).chain(
                    futures_util::stream::once(async {
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        Err(std::io::Error::other("upstream died"))
                    }),
                );
                axum::response::Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(axum::body::Body::from_stream(parts))
                    .unwrap()
            }
            _ => axum::Json(serde_json::json!({
                "id": "x", "object": "chat.completion", "created": 0, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("from {model}")}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
            }))
            .into_response(),
        }
    }
    let app = axum::Router::new().route("/v1/chat/completions", post(answer));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/v1")
}

#[tokio::test]
async fn through_the_http_backend_a_failing_upstream_falls_back_and_the_headers_say_so() {
    let upstream = upstream().await;
    let config = ferrolite::Config::from_yaml(&format!(
        r#"
model_list:
  - model_name: primary
    litellm_params: {{model: openai/broken, api_base: "{upstream}", api_key: sk-up}}
  - model_name: backup
    litellm_params: {{model: openai/good-model, api_base: "{upstream}", api_key: sk-up}}
  - model_name: echo
    litellm_params: {{model: openai/echo-id, api_base: "{upstream}", api_key: sk-up}}
router_settings:
  num_retries: 0
  fallbacks: [{{"primary": ["backup"]}}]
"#
    ))
    .unwrap();
    let backend = std::sync::Arc::new(ferrolite::http::HttpBackend::new().unwrap());
    let router = ferrolite::build_from_config(config, Some(backend))
        .await
        .unwrap();
    let base = gateway(router).await;
    let answer = client(&base, KEY)
        .chat()
        .create(chat("primary", false))
        .await
        .unwrap();
    assert_eq!(
        answer.model, "primary",
        "the client sees the group it asked for"
    );
    assert_eq!(
        answer.choices[0].message.content.as_deref(),
        Some("from good-model")
    );
    let response = http()
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&serde_json::json!({"model": "primary", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-litellm-attempted-fallbacks"], "1");
    assert_eq!(response.headers()["x-litellm-model-group"], "backup");
    // The request's id (the caller's own here) reaches the upstream.
    let echoed: serde_json::Value = http()
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(KEY)
        .header("x-request-id", "trace-7")
        .json(
            &serde_json::json!({"model": "echo", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(echoed["choices"][0]["message"]["content"], "from trace-7");
}

const KEYS_CONFIG: &str = r#"
model_list:
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o, mock_response: "hello", mock_output_tokens: 1000}
    # A call without max_tokens reserves the output limit: 1,500 tokens, not the catalogue's;
    # a call may ask for up to that many.
    model_info: {max_output_tokens: 1500}
  - model_name: other
    litellm_params: {model: openai/gpt-4o-mini, mock_response: "other"}
router_settings:
  num_retries: 0
ferrolite_settings:
  api_keys:
    - {name: team-a, key: sk-team-a-123456, models: [gpt-4o], rpm: 3}
    - {name: team-b, key: sk-team-b-123456, max_budget: 0.02, budget_duration: 1d}
    - {name: team-c, key: sk-team-c-123456, tpm: 2500}
"#;

async fn keyed_gateway() -> String {
    let config = ferrolite::Config::from_yaml(KEYS_CONFIG).unwrap();
    let settings = GatewaySettings {
        master_key: Some(Secret::new(KEY)),
        api_keys: config.api_keys.clone(),
        ..GatewaySettings::default()
    };
    let router = ferrolite::build_from_config(config, None).await.unwrap();
    gateway_with(router, settings).await
}

async fn status_with(base: &str, key: &str, model: &str) -> (u16, serde_json::Value) {
    let response = http()
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

#[tokio::test]
async fn api_keys_hold_their_groups_rate_limits_and_budgets() {
    let base = keyed_gateway().await;
    // team-a: its group only, 3 requests a minute.
    let (status, body) = status_with(&base, "sk-team-a-123456", "other").await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("team-a"),
        "{body}"
    );
    for _ in 0..3 {
        assert_eq!(
            status_with(&base, "sk-team-a-123456", "gpt-4o").await.0,
            200
        );
    }
    let (status, body) = status_with(&base, "sk-team-a-123456", "gpt-4o").await;
    assert_eq!(status, 429, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("rpm"),
        "{body}"
    );
    // The master key is not limited by team-a's rpm.
    assert_eq!(status_with(&base, KEY, "gpt-4o").await.0, 200);
    // team-b: every group, until its budget is spent (1,000 output tokens at catalogue prices
    // cost about $0.01 a call).
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(status_with(&base, "sk-team-b-123456", "gpt-4o").await);
    }
    let served = statuses.iter().filter(|(s, _)| *s == 200).count();
    assert!((1..6).contains(&served), "{statuses:?}");
    let (status, body) = statuses.last().unwrap();
    assert_eq!(*status, 429, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("api-key:team-b"),
        "{body}"
    );
    // team-c: 2,500 tokens a minute; a request holds its input estimate plus max_tokens.
    let with_max = |max: u64| {
        http()
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth("sk-team-c-123456")
            .json(&serde_json::json!({"model": "gpt-4o", "max_tokens": max, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    assert_eq!(with_max(1_500).await.unwrap().status(), 200);
    let over = with_max(1_500).await.unwrap();
    assert_eq!(over.status(), 429);
    let body: serde_json::Value = over.json().await.unwrap();
    assert!(
        body["error"]["message"].as_str().unwrap().contains("tpm"),
        "{body}"
    );
    // The first call was settled to what it used (about 1,010 tokens, not its 1,500-token
    // estimate), so 1,400 more fit in the minute.
    assert_eq!(with_max(1_400).await.unwrap().status(), 200);
    // Wrong key.
    assert_eq!(
        status_with(&base, "sk-nobody-123456", "gpt-4o").await.0,
        401
    );
    // A key sees only its groups.
    let models: serde_json::Value = http()
        .get(format!("{base}/v1/models"))
        .bearer_auth("sk-team-a-123456")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"].as_array().unwrap().len(), 1);
    assert_eq!(models["data"][0]["id"], "gpt-4o");
}

/// The gateway over the HTTP backend, over a loopback upstream: one group per upstream model.
async fn gateway_over_upstream() -> String {
    let upstream = upstream().await;
    let mut yaml = String::from("model_list:\n");
    for (group, model, timeout) in [
        ("limited", "limited", ""),
        ("slow", "slow", ", timeout: 0.3"),
        ("streamer", "streamer", ""),
        ("breaker", "breaker", ""),
    ] {
        yaml.push_str(&format!(
            "  - {{model_name: {group}, litellm_params: {{model: openai/{model}, api_base: \"{upstream}\", api_key: sk-up{timeout}}}}}\n"
        ));
    }
    yaml.push_str("router_settings:\n  num_retries: 0\n");
    let config = ferrolite::Config::from_yaml(&yaml).unwrap();
    let backend = std::sync::Arc::new(ferrolite::http::HttpBackend::new().unwrap());
    let router = ferrolite::build_from_config(config, Some(backend))
        .await
        .unwrap();
    gateway(router).await
}

#[tokio::test]
async fn upstream_rate_limits_timeouts_streams_and_broken_streams_reach_the_client_as_they_should()
{
    let base = gateway_over_upstream().await;
    let post = |model: &'static str, stream: bool| {
        http()
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(KEY)
            .json(&serde_json::json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    // The upstream's 429 and its Retry-After reach the client.
    let limited = post("limited", false).await.unwrap();
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["retry-after"], "12");
    // A slow upstream times out (the deployment's 0.3 s): 408.
    let started = std::time::Instant::now();
    let slow = post("slow", false).await.unwrap();
    assert_eq!(slow.status(), 408);
    assert!(started.elapsed() < Duration::from_secs(5));
    // A stream is passed through, then [DONE].
    let text = post("streamer", true).await.unwrap().text().await.unwrap();
    assert!(
        text.contains("\"str\"") && text.contains("\"eamed\""),
        "{text}"
    );
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    // A stream that breaks after its first chunk: the chunk, then an error event, no [DONE].
    let text = post("breaker", true).await.unwrap().text().await.unwrap();
    assert!(text.contains("\"half\""), "{text}");
    assert!(
        text.contains("\"error\"") && !text.contains("[DONE]"),
        "{text}"
    );
}

#[tokio::test]
async fn the_response_cache_answers_repeats_with_its_headers_and_honours_cache_control() {
    let router = Router::builder()
        .deployment(Deployment {
            id: Some("one".into()),
            ..Deployment::new("gpt-4o", "openai/gpt-4o")
        })
        .settings(ferrolite::router::RouterSettings {
            response_cache: Some(ferrolite::router::ResponseCacheSettings::default()),
            ..Default::default()
        })
        .backend(MockBackend::new(MockSpec::reply("cached words here")))
        .build()
        .await
        .unwrap();
    let base = gateway(router.clone()).await;
    let post = |body: serde_json::Value| {
        http()
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(KEY)
            .json(&body)
    };
    let ask =
        serde_json::json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
    let first = post(ask.clone()).send().await.unwrap();
    assert_eq!(first.headers()["x-ferrolite-cache-hit"], "false");
    let key = first.headers()["x-litellm-cache-key"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(key.starts_with("response:"), "{key}");
    let first: serde_json::Value = first.json().await.unwrap();
    let second = post(ask.clone()).send().await.unwrap();
    assert_eq!(second.headers()["x-ferrolite-cache-hit"], "true");
    assert_eq!(second.headers()["x-litellm-cache-key"], key.as_str());
    assert_eq!(second.headers()["x-litellm-response-cost"], "0");
    let second: serde_json::Value = second.json().await.unwrap();
    assert_eq!(second["choices"], first["choices"]);
    assert_eq!(second["model"], "gpt-4o");
    // An OpenAI client gets the cached answer too.
    let mut request = chat("gpt-4o", false);
    request.messages = vec![
        ChatCompletionRequestUserMessageArgs::default()
            .content("hi")
            .build()
            .unwrap()
            .into(),
    ];
    let answer = client(&base, KEY).chat().create(request).await.unwrap();
    assert_eq!(
        answer.choices[0].message.content.as_deref(),
        first["choices"][0]["message"]["content"].as_str()
    );
    let one = DeploymentId::new("one");
    assert_eq!(
        router.usage(&one).unwrap().0,
        1.0,
        "one backend call so far"
    );
    // Cache-Control: no-cache skips the read (and the answer is stored afresh).
    let fresh = post(ask.clone())
        .header("cache-control", "no-cache")
        .send()
        .await
        .unwrap();
    assert_eq!(fresh.headers()["x-ferrolite-cache-hit"], "false");
    assert_eq!(router.usage(&one).unwrap().0, 2.0);
    // A streamed request for the same answer is replayed as server-sent events.
    let mut streamed = ask.clone();
    streamed["stream"] = serde_json::json!(true);
    let replay = post(streamed).send().await.unwrap();
    assert_eq!(replay.headers()["x-ferrolite-cache-hit"], "true");
    let text = replay.text().await.unwrap();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.last(), Some(&"data: [DONE]"), "{text}");
    let chunk: serde_json::Value =
        serde_json::from_str(events[0].trim_start_matches("data: ")).unwrap();
    assert_eq!(chunk["object"], "chat.completion.chunk");
    assert_eq!(
        chunk["choices"][0]["delta"]["content"],
        first["choices"][0]["message"]["content"]
    );
    assert_eq!(
        router.usage(&one).unwrap().0,
        2.0,
        "the replay called nothing"
    );
}
