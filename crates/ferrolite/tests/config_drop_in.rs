//! Configs a LiteLLM user already has, loaded and served through the gateway on loopback:
//! wildcard deployments, one endpoint with several keys, the reliability keys of `litellm_settings`, the response cache's own Redis, and deployments
//! ferrolite cannot call yet.
#![cfg(all(feature = "gateway", feature = "http"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use axum::routing::post;
use ferrolite::gateway::{GatewaySettings, app, serve};
use ferrolite::{Config, Router, build_from_config};

/// A gateway on a free loopback port over `router`, with no key; its base URL.
async fn gateway(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(
        listener,
        app(router, GatewaySettings::default()),
        std::future::pending(),
    ));
    format!("http://{addr}")
}

/// The router a config describes, with the HTTP backend for what is not mocked.
async fn router(yaml: &str) -> Router {
    let backend: Arc<dyn ferrolite::router::Backend> =
        Arc::new(ferrolite::http::HttpBackend::new().unwrap());
    build_from_config(Config::from_yaml(yaml).unwrap(), Some(backend))
        .await
        .unwrap()
}

/// A chat completion of `model` through the gateway: status, headers and body.
async fn chat(base: &str, model: &str, content: &str) -> (u16, HeaderMap, serde_json::Value) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .json(&serde_json::json!({
            "model": model,
            "messages": [{"role": "user", "content": content}],
        }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or_default();
    (status, headers, body)
}

/// An OpenAI-compatible upstream on loopback that answers every chat completion and records
/// the bearer token of each call; its base URL (with `/v1`) and the tokens seen.
async fn upstream() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(move |headers: HeaderMap| {
            let record = Arc::clone(&record);
            async move {
                let token = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                record.lock().unwrap().push(token);
                axum::Json(serde_json::json!({
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "created": 1,
                    "model": "gpt-4o",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
                }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/v1"), seen)
}

/// Regression (issue 16): `model: "*"` did not load ("cannot infer the provider of `*`").
#[tokio::test]
async fn catch_all_and_provider_wildcard_deployments_load_and_route_through_the_gateway() {
    let base = gateway(
        router(
            r#"
model_list:
  - model_name: "*"
    litellm_params: {model: "*", mock_response: "from the catch-all"}
    model_info: {id: catch-all}
  - model_name: "openai/*"
    litellm_params: {model: "openai/*", mock_response: "from openai/*"}
    model_info: {id: openai-wildcard}
"#,
        )
        .await,
    )
    .await;
    let (status, headers, body) = chat(&base, "openai/o1-mini", "hi").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-litellm-model-id"], "openai-wildcard");
    assert_eq!(body["choices"][0]["message"]["content"], "from openai/*");
    let (status, headers, body) = chat(&base, "some-model-nobody-named", "hi").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-litellm-model-id"], "catch-all");
}

#[tokio::test]
async fn a_catch_all_group_served_by_a_provider_wildcard_routes_any_model() {
    let base = gateway(
        router(
            r#"
model_list:
  - model_name: "*"
    litellm_params: {model: "openai/*", mock_response: "any"}
    model_info: {id: any}
"#,
        )
        .await,
    )
    .await;
    for model in ["gpt-4o", "o1-mini", "gpt-3.5-turbo"] {
        let (status, headers, body) = chat(&base, model, "hi").await;
        assert_eq!(status, 200, "{model}: {body}");
        assert_eq!(headers["x-litellm-model-id"], "any");
    }
}

/// Regression (issue 16): two deployments on one endpoint that differ only in their key had
/// one id, so the router refused the second as a duplicate (and, with an explicit id on one,
/// they would have shared counters).
#[tokio::test]
async fn one_endpoint_with_two_keys_is_two_deployments_and_both_keys_are_used() {
    let (api_base, seen) = upstream().await;
    let yaml = format!(
        r#"
model_list:
  - model_name: gpt-4o
    litellm_params: {{model: openai/gpt-4o, api_base: "{api_base}", api_key: sk-first-key-1, rpm: 100}}
  - model_name: gpt-4o
    litellm_params: {{model: openai/gpt-4o, api_base: "{api_base}", api_key: sk-second-key-2, rpm: 100}}
"#
    );
    let config = Config::from_yaml(&yaml).unwrap();
    let ids: Vec<String> = config
        .deployments
        .iter()
        .map(|d| d.id().to_string())
        .collect();
    assert_ne!(ids[0], ids[1]);
    for id in &ids {
        assert!(
            !id.contains("sk-first") && !id.contains("sk-second"),
            "{id}"
        );
    }
    let base = gateway(router(&yaml).await).await;
    let mut answered_by = std::collections::HashSet::new();
    for i in 0..40 {
        let (status, headers, body) = chat(&base, "gpt-4o", &format!("call {i}")).await;
        assert_eq!(status, 200, "{body}");
        answered_by.insert(headers["x-litellm-model-id"].to_str().unwrap().to_string());
    }
    assert_eq!(answered_by.len(), 2, "{answered_by:?}");
    let tokens: std::collections::HashSet<String> = seen.lock().unwrap().iter().cloned().collect();
    assert_eq!(
        tokens,
        ["Bearer sk-first-key-1", "Bearer sk-second-key-2"]
            .map(String::from)
            .into()
    );
}

#[test]
fn a_changed_limit_keeps_the_id_of_a_deployment_with_a_key() {
    let with = |rpm: u32| {
        Config::from_yaml(&format!(
            "model_list:\n  - {{model_name: g, litellm_params: {{model: openai/gpt-4o, api_key: sk-abc-123, rpm: {rpm}}}}}\n"
        ))
        .unwrap()
        .deployments[0]
            .id()
    };
    assert_eq!(with(10), with(5000));
}

/// Regression (issue 16): `litellm_settings.max_fallbacks` and limits at the entry's top level
/// were ignored.
#[test]
fn litellm_settings_reliability_keys_apply_where_router_settings_is_silent() {
    let config = Config::from_yaml(
        r#"
model_list:
  - model_name: a
    litellm_params: {model: openai/gpt-4o}
    rpm: 30
    tpm: 3000
  - model_name: b
    litellm_params: {model: openai/gpt-4o-mini}
litellm_settings:
  num_retries: 4
  request_timeout: 9
  max_fallbacks: 2
  fallbacks: [{a: [b]}]
  context_window_fallbacks: [{a: [b]}]
  allowed_fails: 1
  cooldown_time: 30
"#,
    )
    .unwrap();
    let s = &config.settings;
    assert_eq!(s.num_retries, 4);
    assert_eq!(s.timeout, Duration::from_secs(9));
    assert_eq!(s.max_fallbacks, 2);
    assert_eq!(s.fallbacks["a"], vec!["b".to_string()]);
    assert_eq!(s.context_window_fallbacks["a"], vec!["b".to_string()]);
    assert_eq!(config.deployments[0].rpm, Some(30));
    assert_eq!(config.deployments[0].tpm, Some(3000));
    // LiteLLM's Router ignores these two when they come from litellm_settings: said so.
    let lines = config.not_honoured();
    for key in ["allowed_fails", "cooldown_time"] {
        assert!(
            lines.contains(&format!(
                "litellm_settings.{key}: accepted, no effect (LiteLLM's router ignores it too; set it in router_settings)"
            )),
            "{lines:?}"
        );
    }
    // router_settings wins where it speaks.
    let both = Config::from_yaml(
        "model_list:\n  - {model_name: a, litellm_params: {model: openai/gpt-4o}}\nrouter_settings: {max_fallbacks: 7, num_retries: 1}\nlitellm_settings: {max_fallbacks: 2, num_retries: 4}\n",
    )
    .unwrap();
    assert_eq!(both.settings.max_fallbacks, 7);
    assert_eq!(both.settings.num_retries, 1);
}

/// The Redis tests use: `REDIS_URL`, else 127.0.0.1:6379 when something answers there;
/// `None` skips the test, unless `FERROLITE_REQUIRE_REDIS=1`.
fn redis_url() -> Option<String> {
    if let Ok(url) = std::env::var("REDIS_URL") {
        if !url.is_empty() {
            return Some(url);
        }
    }
    if std::net::TcpStream::connect(("127.0.0.1", 6379)).is_ok() {
        return Some("redis://127.0.0.1:6379".into());
    }
    assert!(
        std::env::var("FERROLITE_REQUIRE_REDIS").as_deref() != Ok("1"),
        "FERROLITE_REQUIRE_REDIS=1 but no Redis"
    );
    eprintln!("skipping: no Redis (set REDIS_URL)");
    None
}

/// Regression (issue 16): `cache_params: {type: redis, host, port}` without a Redis in
/// router_settings kept answers in memory only, silently: a second gateway never saw them.
#[tokio::test]
async fn a_redis_response_cache_with_its_own_host_is_shared_by_two_gateways() {
    let Some(url) = redis_url() else { return };
    // `host` and `port` as LiteLLM's docs write them; `redis_url` for a URL with more in it.
    let redis = match url.strip_prefix("redis://").and_then(|r| r.split_once(':')) {
        Some((host, port)) if !host.contains('@') && port.parse::<u16>().is_ok() => {
            format!("host: \"{host}\", port: {port}")
        }
        _ => format!("redis_url: \"{url}\""),
    };
    let unique = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let namespace = format!("t16-{}-{unique}", std::process::id());
    let yaml = format!(
        r#"
model_list:
  - model_name: g
    litellm_params: {{model: openai/gpt-4o, mock_response: "cached answer"}}
litellm_settings:
  cache: true
  cache_params: {{type: redis, {redis}, namespace: "{namespace}"}}
ferrolite_settings:
  redis_key_prefix: "ferrolite-t16-{namespace}:"
"#
    );
    let config = Config::from_yaml(&yaml).unwrap();
    assert!(
        config.cache.redis.is_some(),
        "the cache's Redis backs the router"
    );
    let one = gateway(router(&yaml).await).await;
    let two = gateway(router(&yaml).await).await;
    let prompt = format!("a prompt only this test sends ({namespace})");
    let (status, headers, _) = chat(&one, "g", &prompt).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-ferrolite-cache-hit"], "false");
    let (status, headers, body) = chat(&two, "g", &prompt).await;
    assert_eq!(status, 200);
    assert_eq!(
        headers["x-ferrolite-cache-hit"], "true",
        "the other gateway's answer, through Redis: {body}"
    );
}

/// The Redis URL without a database path (`redis://host:port/0` -> `redis://host:port`).
fn without_db(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let authority = rest.split('/').next().unwrap();
    format!("{scheme}://{authority}")
}

/// Regression (issue 16): with `router_settings.redis_url` set, the answers went to that Redis
/// whatever `cache_params` named. Here each gateway keeps its routing state in a database of
/// its own and both name one `cache_params` database: an answer one stores, the other serves.
#[tokio::test]
async fn a_response_cache_redis_other_than_the_routing_state_s_holds_the_answers() {
    let Some(url) = redis_url() else { return };
    let server = without_db(&url);
    let unique = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let namespace = format!("t16-own-{}-{unique}", std::process::id());
    let yaml = |routing_db: u32| {
        format!(
            r#"
model_list:
  - model_name: g
    litellm_params: {{model: openai/gpt-4o, mock_response: "cached answer"}}
router_settings:
  redis_url: "{server}/{routing_db}"
litellm_settings:
  cache: true
  cache_params: {{type: redis, redis_url: "{server}/4", namespace: "{namespace}"}}
ferrolite_settings:
  redis_key_prefix: "ferrolite-t16-{namespace}:"
"#
        )
    };
    let config = Config::from_yaml(&yaml(2)).unwrap();
    assert_eq!(
        config.response_cache_redis.as_ref().unwrap().url,
        format!("{server}/4")
    );
    assert_eq!(
        config.cache.redis.as_ref().unwrap().url,
        format!("{server}/2")
    );
    let one = gateway(router(&yaml(2)).await).await;
    let two = gateway(router(&yaml(3)).await).await;
    let prompt = format!("a prompt only this test sends ({namespace})");
    let (status, headers, _) = chat(&one, "g", &prompt).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-ferrolite-cache-hit"], "false");
    let (status, headers, body) = chat(&two, "g", &prompt).await;
    assert_eq!(status, 200);
    assert_eq!(
        headers["x-ferrolite-cache-hit"], "true",
        "served from the cache_params Redis, not the routing state's: {body}"
    );
}

#[test]
fn a_redis_response_cache_with_no_redis_anywhere_is_refused() {
    let error = Config::from_yaml(
        "model_list:\n  - {model_name: g, litellm_params: {model: openai/gpt-4o}}\nlitellm_settings:\n  cache: true\n  cache_params: {type: redis}\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.starts_with("litellm_settings.cache_params.type: `redis` needs a Redis"),
        "{error}"
    );
}

/// Regression (issue 16): `litellm_settings.model_alias_map`, which LiteLLM's proxy applies to
/// a request's model before routing, was accepted without effect.
#[tokio::test]
async fn litellm_settings_model_alias_map_routes_the_alias_to_its_group() {
    let base = gateway(
        router(
            r#"
model_list:
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o, mock_response: "from gpt-4o"}
litellm_settings:
  model_alias_map: {my-alias: gpt-4o}
"#,
        )
        .await,
    )
    .await;
    let (status, _, body) = chat(&base, "my-alias", "hi").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "from gpt-4o");
}

/// Regression (issue 16): `ignore_invalid_deployments` was accepted without effect, so one bad
/// entry stopped the whole config.
#[test]
fn ignore_invalid_deployments_leaves_a_bad_entry_out_instead_of_failing() {
    let yaml = |ignore: bool| {
        format!(
            "model_list:\n  - {{model_name: good, litellm_params: {{model: openai/gpt-4o}}}}\n  - {{model_name: bad, litellm_params: {{model: no-provider-model}}}}\nrouter_settings: {{ignore_invalid_deployments: {ignore}}}\n"
        )
    };
    assert!(Config::from_yaml(&yaml(false)).is_err());
    let config = Config::from_yaml(&yaml(true)).unwrap();
    let groups: Vec<&str> = config
        .deployments
        .iter()
        .map(|d| d.model_name.as_str())
        .collect();
    assert_eq!(groups, vec!["good"]);
}

/// Regression (issue 16): `redis_db` was accepted without effect: the state went to database 0.
#[test]
fn redis_db_selects_the_database_of_redis_host_and_port() {
    let config = Config::from_yaml(
        "model_list:\n  - {model_name: g, litellm_params: {model: openai/gpt-4o}}\nrouter_settings: {redis_host: 127.0.0.1, redis_port: 6379, redis_db: 3}\n",
    )
    .unwrap();
    assert_eq!(config.cache.redis.unwrap().url, "redis://127.0.0.1:6379/3");
}
