//! `x-ferrolite-explain: true` over real HTTP on loopback: the gateway, its HTTP backend and a
//! scripted upstream, with the routing state in Redis. The answer's `ferrolite_route` names
//! each deployment left out with its numbers, the pick and every attempt; `x-ferrolite-route`
//! sums it up in one header line; only callers allowed to ask get either.
#![cfg(all(feature = "gateway", feature = "http"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use axum::http::HeaderValue;
use common::redis::redis_url;
use ferrolite::gateway::{GatewaySettings, app, serve};
use serde_json::{Value, json};

const MASTER: &str = "sk-explain-master";
/// An API key configured with `explain: true`.
const VIEWER: &str = "sk-viewer-123456";
/// An API key without it.
const PLAIN: &str = "sk-plain-1234567";

/// A suffix that keeps this run's deployments (and their state in Redis) its own.
fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{nanos:x}")
}

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// The scripted upstream (OpenAI's protocol): the model `limited` answers 429, `broken` 500,
/// `hungry` a chat answer of 5,000 + 2,000 tokens, any other a chat answer (streamed when asked) naming the model; embeddings answer a vector.
async fn upstream() -> String {
    use axum::response::IntoResponse;
    use axum::routing::post;
    async fn chat(axum::Json(body): axum::Json<Value>) -> axum::response::Response {
        let model = body["model"].as_str().unwrap_or("").to_string();
        match model.as_str() {
            "limited" => (
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                axum::Json(json!({"error": {"message": "slow down"}})),
            )
                .into_response(),
            "broken" => (
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(json!({"error": {"message": "upstream exploded"}})),
            )
                .into_response(),
            _ if body["stream"].as_bool() == Some(true) => {
                let chunk = json!({"id": "x", "object": "chat.completion.chunk", "created": 0, "model": model,
                    "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]});
                axum::response::Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(axum::body::Body::from(format!(
                        "data: {chunk}\n\ndata: [DONE]\n\n"
                    )))
                    .unwrap()
            }
            // `hungry` reports far more tokens than any estimate of the request.
            _ => axum::Json(json!({
                "id": "x", "object": "chat.completion", "created": 0, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("from {model}")}, "finish_reason": "stop"}],
                "usage": if model == "hungry" {
                    json!({"prompt_tokens": 5000, "completion_tokens": 2000, "total_tokens": 7000})
                } else {
                    json!({"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7})
                }
            }))
            .into_response(),
        }
    }
    async fn embeddings(axum::Json(body): axum::Json<Value>) -> axum::Json<Value> {
        axum::Json(json!({
            "object": "list", "model": body["model"],
            "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
            "usage": {"prompt_tokens": 2, "total_tokens": 2}
        }))
    }
    let app = axum::Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/embeddings", post(embeddings));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/v1")
}

/// A gateway on a free port over the config `yaml` (its master key and API keys), calling
/// deployments through the HTTP backend; its base URL.
async fn gateway(yaml: &str) -> String {
    let config = ferrolite::Config::from_yaml(yaml).unwrap();
    let settings = GatewaySettings {
        master_key: config.master_key.clone(),
        api_keys: config.api_keys.clone(),
        ..GatewaySettings::default()
    };
    let backend = std::sync::Arc::new(ferrolite::http::HttpBackend::new().unwrap());
    let router = ferrolite::build_from_config(config, Some(backend))
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(
        listener,
        app(router, settings),
        std::future::pending(),
    ));
    format!("http://{addr}")
}

/// Posts `body` to `path` with `key`, asking for an explanation when `explain`.
async fn post(base: &str, path: &str, key: &str, explain: bool, body: Value) -> reqwest::Response {
    let mut request = http()
        .post(format!("{base}{path}"))
        .bearer_auth(key)
        .json(&body);
    if explain {
        request = request.header("x-ferrolite-explain", "true");
    }
    request.send().await.unwrap()
}

fn hi(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

/// The `x-ferrolite-route` header, checked against `HeaderValue`'s rules and the summary's
/// own (one line of printable ASCII, bounded).
fn route_header(response: &reqwest::Response) -> String {
    let value = response
        .headers()
        .get("x-ferrolite-route")
        .expect("an x-ferrolite-route header")
        .to_str()
        .unwrap()
        .to_string();
    assert!(HeaderValue::from_str(&value).is_ok());
    assert!(value.len() <= ferrolite::router::SUMMARY_MAX);
    assert!(value.bytes().all(|b| b == b' ' || b.is_ascii_graphic()));
    value
}

fn candidate<'a>(pick: &'a Value, id: &str) -> &'a Value {
    pick["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["deployment"] == id)
        .unwrap_or_else(|| panic!("{id} in {pick}"))
}

/// A group of four: one cooled down, one at its rpm limit, one whose tags do not fit, and the
/// one picked. The explanation names each reason with its numbers.
#[tokio::test]
async fn the_explanation_names_each_deployment_left_out_with_its_numbers() {
    let Some(redis) = redis_url() else { return };
    let upstream = upstream().await;
    let run = run_id();
    let yaml = format!(
        r#"
model_list:
  - model_name: g
    litellm_params: {{model: openai/limited, api_base: "{upstream}", api_key: sk-up, tags: [free]}}
    model_info: {{id: cool-{run}}}
  - model_name: g
    litellm_params: {{model: openai/good-model, api_base: "{upstream}", api_key: sk-up, rpm: 1, tags: [free]}}
    model_info: {{id: full-{run}}}
  - model_name: g
    litellm_params: {{model: openai/good-model, api_base: "{upstream}", api_key: sk-up, tags: [paid]}}
    model_info: {{id: tagged-{run}}}
  - model_name: g
    litellm_params: {{model: openai/good-model, api_base: "{upstream}", api_key: sk-up, tags: [free]}}
    model_info: {{id: good-{run}}}
  - model_name: emb
    litellm_params: {{model: openai/embedder, api_base: "{upstream}", api_key: sk-up}}
    model_info: {{id: emb-{run}}}
router_settings:
  num_retries: 0
  routing_strategy: least-busy
  enable_tag_filtering: true
  cooldown_time: 60
  redis_url: {redis}
general_settings:
  master_key: {MASTER}
ferrolite_settings:
  api_keys:
    - {{name: viewer, key: {VIEWER}, explain: true}}
    - {{name: plain, key: {PLAIN}}}
"#
    );
    let base = gateway(&yaml).await;
    // The rate-limited deployment, called by its id, answers 429 and cools down; the one with
    // rpm 1 takes its one request of the minute.
    let cooled = post(
        &base,
        "/v1/chat/completions",
        MASTER,
        false,
        hi(&format!("cool-{run}")),
    )
    .await;
    assert_eq!(cooled.status(), 429);
    let full = post(
        &base,
        "/v1/chat/completions",
        MASTER,
        false,
        hi(&format!("full-{run}")),
    )
    .await;
    assert_eq!(full.status(), 200);

    let mut tagged = hi("g");
    tagged["tags"] = json!(["free"]);
    let response = post(&base, "/v1/chat/completions", VIEWER, true, tagged.clone()).await;
    assert_eq!(response.status(), 200);
    let header = route_header(&response);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "from good-model");
    let route = &body["ferrolite_route"];
    assert_eq!(route["model"], "g");
    assert_eq!(route["strategy"], "least-busy");
    assert_eq!(route["model_group"], "g");
    assert_eq!(route["deployment"], format!("good-{run}"));
    let picks = route["picks"].as_array().unwrap();
    assert_eq!(picks.len(), 1, "{route}");
    let pick = &picks[0];
    assert_eq!(pick["destination"], "g");
    assert_eq!(pick["picked"], format!("good-{run}"));
    assert_eq!(pick["by"], "strategy");
    assert_eq!(pick["score"], "in_flight");
    assert_eq!(pick["candidates"].as_array().unwrap().len(), 4);

    let cool = candidate(pick, &format!("cool-{run}"));
    assert_eq!(cool["excluded"], "cooldown", "{cool}");
    let detail = cool["detail"].as_str().unwrap();
    assert!(detail.starts_with("cooldown until "), "{detail}");
    assert!(detail.contains("s left"), "{detail}");

    let full = candidate(pick, &format!("full-{run}"));
    assert_eq!(full["excluded"], "rpm", "{full}");
    assert_eq!(full["detail"], "rpm 1/1");

    let tagged_out = candidate(pick, &format!("tagged-{run}"));
    assert_eq!(tagged_out["excluded"], "tags", "{tagged_out}");
    assert_eq!(
        tagged_out["detail"],
        r#"deployment tags ["paid"], request tags ["free"]"#
    );

    let good = candidate(pick, &format!("good-{run}"));
    assert!(good.get("excluded").is_none(), "{good}");
    assert_eq!(good["score"], 0.0);

    let attempts = route["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0]["deployment"], format!("good-{run}"));
    assert_eq!(attempts[0]["outcome"], "success");
    assert_eq!(attempts[0]["wait_ms"], 0);
    assert!(attempts[0]["latency_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(route["fallbacks"], json!([]));
    assert!(
        header.starts_with(&format!("group=g; pick=good-{run}; ")),
        "{header}"
    );
    assert!(header.contains(&format!("cool-{run}:cooldown")), "{header}");
    assert!(header.contains(&format!("full-{run}:rpm")), "{header}");
    assert!(
        header.contains(&format!("attempts=good-{run}:success")),
        "{header}"
    );

    // A key without `explain: true`: the header is ignored.
    let plain = post(&base, "/v1/chat/completions", PLAIN, true, tagged.clone()).await;
    assert_eq!(plain.status(), 200);
    assert!(plain.headers().get("x-ferrolite-route").is_none());
    let body: Value = plain.json().await.unwrap();
    assert!(body.get("ferrolite_route").is_none(), "{body}");
    // Not asked: nothing either.
    let unasked = post(&base, "/v1/chat/completions", MASTER, false, tagged.clone()).await;
    assert!(unasked.headers().get("x-ferrolite-route").is_none());
    let body: Value = unasked.json().await.unwrap();
    assert!(body.get("ferrolite_route").is_none(), "{body}");

    // The master key may ask; a stream carries the header only, its events no object.
    let mut streamed = tagged.clone();
    streamed["stream"] = json!(true);
    let stream = post(&base, "/v1/chat/completions", MASTER, true, streamed).await;
    assert_eq!(stream.status(), 200);
    let header = route_header(&stream);
    assert!(
        header.contains(&format!("attempts=good-{run}:streaming")),
        "{header}"
    );
    let text = stream.text().await.unwrap();
    assert!(text.contains("data: [DONE]"), "{text}");
    assert!(!text.contains("ferrolite_route"), "{text}");

    // Embeddings and Anthropic's Messages API carry it too.
    let embedding = post(
        &base,
        "/v1/embeddings",
        VIEWER,
        true,
        json!({"model": "emb", "input": "hello"}),
    )
    .await;
    assert_eq!(embedding.status(), 200);
    route_header(&embedding);
    let body: Value = embedding.json().await.unwrap();
    assert_eq!(body["data"][0]["embedding"], json!([0.1, 0.2]));
    assert_eq!(body["ferrolite_route"]["deployment"], format!("emb-{run}"));

    let mut messages = tagged.clone();
    messages["max_tokens"] = json!(16);
    let answer = post(&base, "/v1/messages", VIEWER, true, messages).await;
    assert_eq!(answer.status(), 200);
    route_header(&answer);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["type"], "message", "{body}");
    assert_eq!(body["ferrolite_route"]["deployment"], format!("good-{run}"));
}

/// A first attempt that fails, its retry, and the fallback that answers: each attempt with its
/// outcome, error class and status, the backoff before the retry, and the fallback taken.
#[tokio::test]
async fn failed_attempts_retries_and_fallbacks_show_in_order() {
    let Some(redis) = redis_url() else { return };
    let upstream = upstream().await;
    let run = run_id();
    let yaml = format!(
        r#"
model_list:
  - model_name: primary
    litellm_params: {{model: openai/broken, api_base: "{upstream}", api_key: sk-up}}
    model_info: {{id: broken-{run}}}
  - model_name: backup
    litellm_params: {{model: openai/good-model, api_base: "{upstream}", api_key: sk-up}}
    model_info: {{id: backup-{run}}}
router_settings:
  num_retries: 1
  fallbacks: [{{"primary": ["backup"]}}]
  redis_url: {redis}
general_settings:
  master_key: {MASTER}
"#
    );
    let base = gateway(&yaml).await;
    let response = post(&base, "/v1/chat/completions", MASTER, true, hi("primary")).await;
    assert_eq!(response.status(), 200);
    let header = route_header(&response);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "from good-model");
    let route = &body["ferrolite_route"];
    assert_eq!(route["model_group"], "backup");
    let attempts = route["attempts"].as_array().unwrap();
    let summary: Vec<(String, String, Value)> = attempts
        .iter()
        .map(|a| {
            (
                a["deployment"].as_str().unwrap().to_string(),
                a["outcome"].as_str().unwrap().to_string(),
                a.get("status").cloned().unwrap_or(Value::Null),
            )
        })
        .collect();
    let broken = format!("broken-{run}");
    assert_eq!(
        summary,
        vec![
            (broken.clone(), "error".to_string(), json!(500)),
            (broken.clone(), "error".to_string(), json!(500)),
            (format!("backup-{run}"), "success".to_string(), Value::Null),
        ],
        "{route}"
    );
    assert_eq!(attempts[0]["error"], "server_error");
    assert_eq!(attempts[0]["wait_ms"], 0);
    // A lone deployment is retried after LiteLLM's backoff (0.5 s, plus jitter).
    assert!(attempts[1]["wait_ms"].as_u64().unwrap() >= 500, "{route}");
    assert_eq!(
        route["fallbacks"],
        json!([{"from": "primary", "to": "backup", "kind": "fallback", "after": "server_error"}])
    );
    let picks = route["picks"].as_array().unwrap();
    assert_eq!(picks.len(), 3, "one selection per attempt: {route}");
    assert_eq!(picks[2]["destination"], "backup");
    assert!(
        header.contains(&format!(
            "attempts={broken}:error(server_error 500),{broken}:error(server_error 500),backup-{run}:success; fallbacks=primary>backup"
        )),
        "{header}"
    );
}

/// A request refused because nothing could take it: its error answer (OpenAI's shape on chat
/// completions, Anthropic's on `/v1/messages`) carries the explanation too, naming each
/// deployment left out and why; a caller that did not ask gets the plain error.
#[tokio::test]
async fn a_refused_request_explains_why_in_its_error_answer() {
    let Some(redis) = redis_url() else { return };
    let upstream = upstream().await;
    let run = run_id();
    let yaml = format!(
        r#"
model_list:
  - model_name: g
    litellm_params: {{model: openai/limited, api_base: "{upstream}", api_key: sk-up}}
    model_info: {{id: cool-{run}}}
  - model_name: g
    litellm_params: {{model: openai/good-model, api_base: "{upstream}", api_key: sk-up, rpm: 1}}
    model_info: {{id: full-{run}}}
router_settings:
  num_retries: 0
  cooldown_time: 60
  redis_url: {redis}
general_settings:
  master_key: {MASTER}
ferrolite_settings:
  api_keys:
    - {{name: viewer, key: {VIEWER}, explain: true}}
    - {{name: plain, key: {PLAIN}}}
"#
    );
    let base = gateway(&yaml).await;
    let cool = format!("cool-{run}");
    let full = format!("full-{run}");
    assert_eq!(
        post(&base, "/v1/chat/completions", MASTER, false, hi(&cool))
            .await
            .status(),
        429
    );
    assert_eq!(
        post(&base, "/v1/chat/completions", MASTER, false, hi(&full))
            .await
            .status(),
        200
    );

    let response = post(&base, "/v1/chat/completions", VIEWER, true, hi("g")).await;
    assert_eq!(response.status(), 429);
    let header = route_header(&response);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"]["message"].is_string(), "{body}");
    let route = &body["ferrolite_route"];
    assert_eq!(route["model"], "g", "{body}");
    assert!(route["deployment"].is_null(), "{route}");
    assert_eq!(route["attempts"], json!([]), "{route}");
    let pick = &route["picks"][0];
    assert!(pick["picked"].is_null(), "{pick}");
    assert!(pick["error"].is_string(), "{pick}");
    assert_eq!(candidate(pick, &cool)["excluded"], "cooldown", "{pick}");
    let rpm = candidate(pick, &full);
    assert_eq!(rpm["excluded"], "rpm", "{pick}");
    assert_eq!(rpm["detail"], "rpm 1/1");
    assert!(header.starts_with("group=g; "), "{header}");
    assert!(header.contains(&format!("{cool}:cooldown")), "{header}");
    assert!(header.contains(&format!("{full}:rpm")), "{header}");

    // Anthropic's error shape on the Messages API, with the same explanation beside it.
    let mut messages = hi("g");
    messages["max_tokens"] = json!(16);
    let refused = post(&base, "/v1/messages", VIEWER, true, messages.clone()).await;
    assert_eq!(refused.status(), 429);
    route_header(&refused);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
    assert_eq!(
        candidate(&body["ferrolite_route"]["picks"][0], &full)["excluded"],
        "rpm"
    );

    // Not asked, or asked by a key that may not: the error alone.
    for (key, explain) in [(VIEWER, false), (PLAIN, true)] {
        let plain = post(&base, "/v1/chat/completions", key, explain, hi("g")).await;
        assert!(plain.headers().get("x-ferrolite-route").is_none());
        let body: Value = plain.json().await.unwrap();
        assert!(body.get("ferrolite_route").is_none(), "{body}");
    }
}

/// A deployment kept out by a budget: the explanation names the budget, its spend and its
/// limit (here the provider's, spent by the first call).
#[tokio::test]
async fn a_budget_exclusion_names_the_budget_with_its_spend_and_limit() {
    let Some(redis) = redis_url() else { return };
    let upstream = upstream().await;
    let run = run_id();
    let yaml = format!(
        r#"
model_list:
  - model_name: g
    litellm_params: {{model: openai/hungry, api_base: "{upstream}", api_key: sk-up, input_cost_per_token: 0.001, output_cost_per_token: 0.001}}
    model_info: {{id: spent-{run}}}
router_settings:
  num_retries: 0
  redis_url: {redis}
  provider_budget_config:
    openai: {{budget_limit: 1, time_period: 1d}}
general_settings:
  master_key: {MASTER}
ferrolite_settings:
  redis_key_prefix: "explain-budget-{run}:"
"#
    );
    let base = gateway(&yaml).await;
    // Estimated at a few cents, the call reports 7,000 tokens at $0.001: $7 of the $1.
    let mut small = hi("g");
    small["max_tokens"] = json!(1);
    let first = post(&base, "/v1/chat/completions", MASTER, false, small).await;
    assert_eq!(first.status(), 200);
    let refused = post(&base, "/v1/chat/completions", MASTER, true, hi("g")).await;
    let status = refused.status();
    let body: Value = refused.json().await.unwrap();
    assert_eq!(status, 429, "{body}");
    let spent = candidate(
        &body["ferrolite_route"]["picks"][0],
        &format!("spent-{run}"),
    );
    assert_eq!(spent["excluded"], "budget", "{body}");
    let detail = spent["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("Exceeded budget for provider openai: 7"),
        "{detail}"
    );
    assert!(detail.ends_with(">= 1"), "{detail}");
}
