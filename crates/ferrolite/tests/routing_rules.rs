//! LiteLLM's routing rules checked from outside: a config loaded as `ferrolite serve` loads it,
//! the gateway on loopback, the HTTP backend, and a scripted OpenAI-speaking upstream on
//! loopback that records the model of every call it receives (each deployment calls its own
//! upstream model, so the record says which deployment was called, in order).
#![cfg(all(feature = "gateway", feature = "http"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::sync::Arc;

use ferrolite::gateway::{GatewaySettings, app, serve};
use parking_lot::Mutex;

/// The models the upstream received, in order.
type Received = Arc<Mutex<Vec<String>>>;

/// A plain HTTP client (reqwest with rustls needs its crypto provider installed once).
fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// The scripted upstream: a model containing `broken` answers 500, one starting with
/// `limited` 429 with `Retry-After: 12`, `flaky` fails every other call (the first included);
/// anything else answers `from <model>`. Its base URL and what it received.
async fn upstream() -> (String, Received) {
    use axum::response::IntoResponse;
    let received: Received = Arc::default();
    let seen = Arc::clone(&received);
    let answer = move |axum::Json(body): axum::Json<serde_json::Value>| {
        let seen = Arc::clone(&seen);
        async move {
            let model = body["model"].as_str().unwrap_or("").to_string();
            let earlier = {
                let mut seen = seen.lock();
                seen.push(model.clone());
                seen.iter().filter(|m| **m == model).count() - 1
            };
            let failure = |status: axum::http::StatusCode, message: &str| {
                (
                    status,
                    axum::Json(serde_json::json!({"error": {"message": message}})),
                )
                    .into_response()
            };
            if model.contains("broken") || (model == "flaky" && earlier % 2 == 0) {
                return failure(
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    "upstream exploded",
                );
            }
            if model.starts_with("limited") {
                let mut r = failure(axum::http::StatusCode::TOO_MANY_REQUESTS, "slow down");
                r.headers_mut().insert("retry-after", "12".parse().unwrap());
                return r;
            }
            axum::Json(serde_json::json!({
                "id": "x", "object": "chat.completion", "created": 0, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("from {model}")}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
            }))
            .into_response()
        }
    };
    let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(answer));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/v1"), received)
}

/// Loads `yaml` (with `{upstream}` replaced by the upstream's URL) as `ferrolite serve` does.
async fn router(yaml: &str, upstream: &str) -> Result<ferrolite::Router, String> {
    let config = ferrolite::Config::from_yaml(&yaml.replace("{upstream}", upstream))
        .map_err(|e| e.to_string())?;
    let backend = Arc::new(ferrolite::http::HttpBackend::new().unwrap());
    ferrolite::build_from_config(config, Some(backend))
        .await
        .map_err(|e| e.to_string())
}

/// The gateway over `router` on a free port, without keys; its base URL.
async fn gateway(router: ferrolite::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(
        listener,
        app(router, GatewaySettings::default()),
        std::future::pending(),
    ));
    format!("http://{addr}")
}

/// A chat completion through the gateway: status, headers and body.
async fn chat(base: &str, model: &str) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
    let response = http()
        .post(format!("{base}/v1/chat/completions"))
        .json(&serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.json().await.unwrap())
}

fn header<'h>(headers: &'h reqwest::header::HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn with_one_order_value_only_the_ordered_deployments_are_called_never_the_unordered() {
    let (upstream, received) = upstream().await;
    let router = router(
        r#"
model_list:
  - model_name: tiered
    litellm_params: {model: openai/first-a, api_base: "{upstream}", api_key: sk-up, order: 1}
  - model_name: tiered
    litellm_params: {model: openai/first-b, api_base: "{upstream}", api_key: sk-up, order: 1}
  - model_name: tiered
    litellm_params: {model: openai/unordered, api_base: "{upstream}", api_key: sk-up}
"#,
        &upstream,
    )
    .await
    .unwrap();
    let base = gateway(router).await;
    for _ in 0..16 {
        assert_eq!(chat(&base, "tiered").await.0, 200);
    }
    let received = received.lock().clone();
    assert_eq!(received.len(), 16);
    assert!(
        received.iter().all(|m| m.starts_with("first-")),
        "{received:?}"
    );
}

#[tokio::test]
async fn when_the_lowest_tier_cools_down_the_next_available_deployments_serve_as_in_litellm() {
    // LiteLLM's order filter runs on the deployments not cooling down: with the only ordered
    // deployment cooled, the unordered one is the lowest available.
    let (upstream, received) = upstream().await;
    let router = router(
        r#"
model_list:
  - model_name: tiered
    litellm_params: {model: openai/limited-first, api_base: "{upstream}", api_key: sk-up, order: 1}
  - model_name: tiered
    litellm_params: {model: openai/unordered, api_base: "{upstream}", api_key: sk-up}
router_settings:
  num_retries: 0
"#,
        &upstream,
    )
    .await
    .unwrap();
    let base = gateway(router).await;
    assert_eq!(
        chat(&base, "tiered").await.0,
        429,
        "the ordered one, limited"
    );
    let (status, _, body) = chat(&base, "tiered").await;
    assert_eq!(status, 200);
    assert_eq!(body["choices"][0]["message"]["content"], "from unordered");
    assert_eq!(*received.lock(), ["limited-first", "unordered"]);
}

const SELF_FALLBACK: &str = r#"
model_list:
  - model_name: g1
    litellm_params: {model: openai/broken-g1, api_base: "{upstream}", api_key: sk-up}
    model_info: {id: g1-only}
  - model_name: g5
    litellm_params: {model: openai/good-g5, api_base: "{upstream}", api_key: sk-up}
router_settings:
  num_retries: 0
  fallbacks: [{"g1": CHAIN}]
"#;

#[tokio::test]
async fn a_failed_deployment_is_not_called_again_as_its_own_fallback_the_chain_goes_on() {
    let (upstream, received) = upstream().await;
    let yaml = SELF_FALLBACK.replace("CHAIN", r#"["g1-only", "g5"]"#);
    let base = gateway(router(&yaml, &upstream).await.unwrap()).await;
    let (status, headers, body) = chat(&base, "g1").await;
    assert_eq!(status, 200);
    assert_eq!(body["choices"][0]["message"]["content"], "from good-g5");
    assert_eq!(*received.lock(), ["broken-g1", "good-g5"]);
    assert_eq!(header(&headers, "x-litellm-attempted-fallbacks"), Some("1"));
}

#[tokio::test]
async fn a_group_listed_as_its_own_fallback_loads_and_is_skipped_but_a_real_loop_is_refused() {
    let (upstream, received) = upstream().await;
    let yaml = SELF_FALLBACK.replace("CHAIN", r#"["g1", "g5"]"#);
    let base = gateway(router(&yaml, &upstream).await.unwrap()).await;
    let (status, _, body) = chat(&base, "g1").await;
    assert_eq!(status, 200);
    assert_eq!(body["choices"][0]["message"]["content"], "from good-g5");
    assert_eq!(*received.lock(), ["broken-g1", "good-g5"]);

    let looped = SELF_FALLBACK.replace(
        r#"fallbacks: [{"g1": CHAIN}]"#,
        r#"fallbacks: [{"g1": ["g5"]}, {"g5": ["g1"]}]"#,
    );
    let error = router(&looped, &upstream).await.unwrap_err();
    assert!(error.contains("loops back"), "{error}");
}

const WILDCARD: &str = r#"
model_list:
  - model_name: "openai/*"
    litellm_params: {model: "openai/*", api_base: "{upstream}", api_key: sk-up}
  - model_name: backup
    litellm_params: {model: openai/good-backup, api_base: "{upstream}", api_key: sk-up}
  - model_name: explicit
    litellm_params: {model: openai/good-explicit, api_base: "{upstream}", api_key: sk-up}
  - model_name: default
    litellm_params: {model: openai/good-default, api_base: "{upstream}", api_key: sk-up}
router_settings:
  num_retries: 0
  fallbacks: [{"gpt-broken": ["backup"]}, {"*": ["explicit"]}]
  default_fallbacks: ["default"]
"#;

#[tokio::test]
async fn a_wildcard_deployment_sends_the_requested_model_upstream() {
    let (upstream, received) = upstream().await;
    let only_the_wildcard = r#"
model_list:
  - model_name: "openai/*"
    litellm_params: {model: "openai/*", api_base: "{upstream}", api_key: sk-up}
"#;
    let base = gateway(router(only_the_wildcard, &upstream).await.unwrap()).await;
    let (status, headers, body) = chat(&base, "openai/o1-mini").await;
    assert_eq!(status, 200);
    assert_eq!(
        body["model"], "openai/o1-mini",
        "the client sees what it asked for"
    );
    assert_eq!(header(&headers, "x-litellm-model-group"), Some("openai/*"));
    // A bare name LiteLLM places at a provider is served by that provider's wildcard.
    assert_eq!(chat(&base, "gpt-3.5-turbo").await.0, 200);
    assert_eq!(*received.lock(), ["o1-mini", "gpt-3.5-turbo"]);
}

#[tokio::test]
async fn a_fallback_key_served_through_a_wildcard_loads_and_an_explicit_star_beats_default_fallbacks()
 {
    let (upstream, received) = upstream().await;
    let base = gateway(router(WILDCARD, &upstream).await.unwrap()).await;
    // `gpt-broken` is served by `openai/*`, and has its own chain.
    let (status, _, body) = chat(&base, "gpt-broken").await;
    assert_eq!(status, 200);
    assert_eq!(body["choices"][0]["message"]["content"], "from good-backup");
    // No chain of its own: the explicit "*" entry, not default_fallbacks.
    let (status, _, body) = chat(&base, "openai/broken-other").await;
    assert_eq!(status, 200);
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "from good-explicit"
    );
    assert_eq!(
        *received.lock(),
        ["gpt-broken", "good-backup", "broken-other", "good-explicit"]
    );
}

#[tokio::test]
async fn answers_carry_litellms_call_id_api_base_and_retry_headers_counted_per_group() {
    let (upstream, _) = upstream().await;
    let router = router(
        r#"
model_list:
  - model_name: retrying
    litellm_params: {model: openai/flaky, api_base: "{upstream}", api_key: sk-up}
  - model_name: primary
    litellm_params: {model: openai/broken-primary, api_base: "{upstream}", api_key: sk-up}
  - model_name: backup
    litellm_params: {model: openai/good-backup, api_base: "{upstream}", api_key: sk-up}
router_settings:
  num_retries: 1
  fallbacks: [{"primary": ["backup"]}]
"#,
        &upstream,
    )
    .await
    .unwrap();
    let base = gateway(router).await;
    // The first attempt fails, the retry answers.
    let (status, headers, _) = chat(&base, "retrying").await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-litellm-attempted-retries"), Some("1"));
    assert_eq!(header(&headers, "x-litellm-max-retries"), Some("1"));
    assert_eq!(
        header(&headers, "x-litellm-model-api-base"),
        Some(upstream.as_str())
    );
    let call_id = header(&headers, "x-litellm-call-id").unwrap();
    assert_eq!(Some(call_id), header(&headers, "x-request-id"));
    // The primary retried once and failed; the fallback answered at its first attempt: LiteLLM
    // counts the retries of the group that answered.
    let (status, headers, _) = chat(&base, "primary").await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-litellm-model-group"), Some("backup"));
    assert_eq!(header(&headers, "x-litellm-attempted-fallbacks"), Some("1"));
    assert_eq!(header(&headers, "x-litellm-attempted-retries"), Some("0"));
    assert_eq!(header(&headers, "x-litellm-max-retries"), None);
    assert_ne!(
        header(&headers, "x-litellm-call-id"),
        Some(call_id),
        "one id per request"
    );
}

#[tokio::test]
async fn error_messages_are_litellms_sentences_with_the_upstreams_message_never_debug_text() {
    let (upstream, _) = upstream().await;
    let router = router(
        r#"
model_list:
  - model_name: limited
    litellm_params: {model: openai/limited-one, api_base: "{upstream}", api_key: sk-up}
  - model_name: secret-group-name
    litellm_params: {model: openai/good, api_base: "{upstream}", api_key: sk-up}
router_settings:
  num_retries: 0
"#,
        &upstream,
    )
    .await
    .unwrap();
    let base = gateway(router).await;
    let (status, _, body) = chat(&base, "gpt-5").await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"]["message"],
        "Invalid model name passed in model=gpt-5. Call `/v1/models` to view available models for your key."
    );
    let (status, _, body) = chat(&base, "limited").await;
    assert_eq!(status, 429);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("RateLimitError: "), "{message}");
    assert!(
        message.contains("slow down"),
        "the upstream's own message: {message}"
    );
    for debug in ["RateLimited", "retry_after", "Some(", "{ "] {
        assert!(!message.contains(debug), "{debug} in {message}");
    }
}

#[test]
fn router_settings_retry_after_is_read_and_no_longer_reported_as_not_implemented() {
    let config = ferrolite::Config::from_yaml(
        r#"
model_list:
  - {model_name: g, litellm_params: {model: openai/g, mock_response: x}}
router_settings:
  retry_after: 2.5
"#,
    )
    .unwrap();
    assert_eq!(
        config.settings.retry_after,
        std::time::Duration::from_millis(2500)
    );
    let warnings: Vec<String> = config.warnings.iter().map(ToString::to_string).collect();
    assert!(
        !warnings.iter().any(|w| w.contains("retry_after")),
        "{warnings:?}"
    );
}
