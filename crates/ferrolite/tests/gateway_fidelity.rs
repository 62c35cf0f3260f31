//! Drop-in fidelity of the gateway's HTTP surface, over real HTTP on loopback: request tags
//! from every place LiteLLM's proxy reads them, deployment affinity by API key, a stream's
//! usage chunk only for clients that asked, the input a chat / completion / embedding call
//! needs, `/v1/models/{id}`, `/health` and `model_group_alias` listing.
#![cfg(all(feature = "gateway", feature = "http"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::types::{
    ChatCompletionRequestUserMessageArgs, ChatCompletionStreamOptions, CreateChatCompletionRequest,
    CreateChatCompletionRequestArgs,
};
use ferrolite::Router;
use ferrolite::gateway::{GatewaySettings, app, serve};
use ferrolite::mock::{MockBackend, MockSpec};
use ferrolite::types::{Deployment, DeploymentId, ErrorClass, Secret};
use futures_util::StreamExt;

const KEY: &str = "sk-fidelity-master";

/// A plain HTTP client (reqwest with rustls needs its crypto provider installed once).
fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
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

/// A gateway over `yaml` as `ferrolite serve` builds it (the config's master key, API keys and
/// hidden aliases), with `backend` or the config's mocks; its base URL.
async fn gateway_from_yaml(
    yaml: &str,
    backend: Option<Arc<dyn ferrolite::router::Backend>>,
) -> String {
    let config = ferrolite::Config::from_yaml(yaml).unwrap();
    let settings = GatewaySettings {
        master_key: config.master_key.clone(),
        api_keys: config.api_keys.clone(),
        hidden_models: config.hidden_aliases.clone(),
        ..GatewaySettings::default()
    };
    let router = ferrolite::build_from_config(config, backend).await.unwrap();
    gateway_with(router, settings).await
}

fn client(base: &str, key: &str) -> Client<OpenAIConfig> {
    Client::with_config(
        OpenAIConfig::new()
            .with_api_base(format!("{base}/v1"))
            .with_api_key(key),
    )
}

/// Posts a chat completion `body` (with `model: g` and a message added) with `key` and extra
/// `headers`; the status, the deployment that answered and the body.
async fn chat_with(
    base: &str,
    key: &str,
    headers: &[(&str, &str)],
    mut body: serde_json::Value,
) -> (u16, String, serde_json::Value) {
    body["model"] = "g".into();
    body["messages"] = serde_json::json!([{"role": "user", "content": "hi"}]);
    let mut request = http()
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let deployment = response
        .headers()
        .get("x-litellm-model-id")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (
        status,
        deployment,
        response.json().await.unwrap_or_default(),
    )
}

/// The deployments 12 calls went to (each must succeed).
async fn served(
    base: &str,
    key: &str,
    headers: &[(&str, &str)],
    body: serde_json::Value,
) -> HashSet<String> {
    let mut seen = HashSet::new();
    for _ in 0..12 {
        let (status, deployment, answer) = chat_with(base, key, headers, body.clone()).await;
        assert_eq!(status, 200, "{answer}");
        seen.insert(deployment);
    }
    seen
}

fn set(ids: &[&str]) -> HashSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

/// Group `g`: `free`, `paid` and `fallback` (tagged `default`), mocked; tag filtering on; the
/// API key `tagged` carries the tag `paid`.
fn tags_yaml(match_any: bool) -> String {
    format!(
        r#"
model_list:
  - model_name: g
    litellm_params: {{model: openai/gpt-4o, mock_response: "hi", tags: [free, eu]}}
    model_info: {{id: free}}
  - model_name: g
    litellm_params: {{model: openai/gpt-4o, mock_response: "hi", tags: [paid, eu]}}
    model_info: {{id: paid}}
  - model_name: g
    litellm_params: {{model: openai/gpt-4o, mock_response: "hi", tags: [default]}}
    model_info: {{id: fallback}}
router_settings:
  enable_tag_filtering: true
  tag_filtering_match_any: {match_any}
general_settings:
  master_key: {KEY}
ferrolite_settings:
  api_keys:
    - {{name: tagged, key: sk-tagged-123456, tags: [paid]}}
"#
    )
}

#[tokio::test]
async fn request_tags_from_every_place_litellm_reads_them_route_the_call() {
    let base = gateway_from_yaml(&tags_yaml(true), None).await;
    let none: &[(&str, &str)] = &[];
    let free = set(&["free"]);
    assert_eq!(
        served(
            &base,
            KEY,
            none,
            serde_json::json!({"metadata": {"tags": ["free"]}})
        )
        .await,
        free,
        "metadata.tags"
    );
    assert_eq!(
        served(
            &base,
            KEY,
            none,
            serde_json::json!({"litellm_metadata": {"tags": ["free"]}})
        )
        .await,
        free,
        "litellm_metadata.tags"
    );
    assert_eq!(
        served(&base, KEY, none, serde_json::json!({"tags": ["free"]})).await,
        free,
        "top-level tags"
    );
    assert_eq!(
        served(
            &base,
            KEY,
            &[("x-litellm-tags", " free , other")],
            serde_json::json!({})
        )
        .await,
        free,
        "the x-litellm-tags header"
    );
    assert_eq!(
        served(&base, "sk-tagged-123456", none, serde_json::json!({})).await,
        set(&["paid"]),
        "the API key's tags"
    );
    // match any: a deployment carrying one of the tags serves.
    assert_eq!(
        served(&base, KEY, none, serde_json::json!({"tags": ["eu"]})).await,
        set(&["free", "paid"])
    );
    // Untagged, or tags no deployment knows: the `default` deployment.
    assert_eq!(
        served(&base, KEY, none, serde_json::json!({})).await,
        set(&["fallback"])
    );
    assert_eq!(
        served(&base, KEY, none, serde_json::json!({"tags": ["asia"]})).await,
        set(&["fallback"])
    );
}

#[tokio::test]
async fn with_match_all_tags_not_all_on_one_deployment_are_refused_with_litellms_message() {
    let base = gateway_from_yaml(&tags_yaml(false), None).await;
    let none: &[(&str, &str)] = &[];
    assert_eq!(
        served(
            &base,
            KEY,
            none,
            serde_json::json!({"tags": ["paid", "eu"]})
        )
        .await,
        set(&["paid"])
    );
    let (status, _, body) = chat_with(
        &base,
        KEY,
        none,
        serde_json::json!({"metadata": {"tags": ["free", "paid"]}}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error"]["message"],
        "Not allowed to access model due to tags configuration. Passed model=g and tags=['free', 'paid']"
    );
    // The key's tag and the request's, together: no deployment carries both.
    let (status, _, body) = chat_with(
        &base,
        "sk-tagged-123456",
        &[("x-litellm-tags", "free")],
        serde_json::json!({}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    // Tags the group does not know still fall back to the `default` deployment.
    assert_eq!(
        served(&base, KEY, none, serde_json::json!({"tags": ["asia"]})).await,
        set(&["fallback"])
    );
}

#[tokio::test]
async fn with_deployment_affinity_each_api_key_keeps_its_deployment() {
    let yaml = format!(
        r#"
model_list:
  - model_name: g
    litellm_params: {{model: openai/gpt-4o, mock_response: "hi"}}
    model_info: {{id: one}}
  - model_name: g
    litellm_params: {{model: openai/gpt-4o, mock_response: "hi"}}
    model_info: {{id: two}}
  - model_name: g
    litellm_params: {{model: openai/gpt-4o, mock_response: "hi"}}
    model_info: {{id: three}}
router_settings:
  optional_pre_call_checks: [deployment_affinity]
general_settings:
  master_key: {KEY}
ferrolite_settings:
  api_keys:
    - {{name: alice, key: sk-alice-123456}}
    - {{name: bob, key: sk-bob-1234567}}
"#
    );
    let base = gateway_from_yaml(&yaml, None).await;
    for key in ["sk-alice-123456", "sk-bob-1234567", KEY] {
        let seen = served(&base, key, &[], serde_json::json!({})).await;
        assert_eq!(seen.len(), 1, "{key}'s calls went to {seen:?}");
    }
}

/// An OpenAI-like upstream: a chat completion streamed in two chunks; asked for usage
/// (`stream_options.include_usage`), `"usage": null` on those and a last chunk with empty
/// `choices` and the usage, as OpenAI sends it. It notes whether it was asked for usage.
async fn usage_upstream(asked: Arc<AtomicBool>) -> String {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(move |axum::Json(body): axum::Json<serde_json::Value>| {
            let asked = Arc::clone(&asked);
            async move {
                let include = body
                    .pointer("/stream_options/include_usage")
                    .and_then(|v| v.as_bool())
                    .unwrap_or(false);
                asked.store(include, Ordering::SeqCst);
                let chunk = |choices: serde_json::Value, usage: serde_json::Value| {
                    let mut chunk = serde_json::json!({"id": "chatcmpl-1", "object": "chat.completion.chunk",
                        "created": 1, "model": "gpt-4o-2024", "choices": choices});
                    if include {
                        chunk["usage"] = usage;
                    }
                    format!("data: {chunk}\n\n")
                };
                let piece = |text: &str, finish: serde_json::Value| {
                    serde_json::json!([{"index": 0, "delta": {"content": text}, "finish_reason": finish}])
                };
                let mut text = chunk(piece("Hel", serde_json::Value::Null), serde_json::Value::Null);
                text.push_str(&chunk(piece("lo", "stop".into()), serde_json::Value::Null));
                if include {
                    text.push_str(&chunk(
                        serde_json::json!([]),
                        serde_json::json!({"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}),
                    ));
                }
                text.push_str("data: [DONE]\n\n");
                axum::response::Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(axum::body::Body::from(text))
                    .unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/v1")
}

/// The gateway over the HTTP backend and the usage upstream; its base URL and the upstream's
/// "asked for usage" flag.
async fn gateway_over_usage_upstream() -> (String, Arc<AtomicBool>) {
    let asked = Arc::new(AtomicBool::new(false));
    let upstream = usage_upstream(Arc::clone(&asked)).await;
    let yaml = format!(
        r#"
model_list:
  - model_name: g
    litellm_params: {{model: openai/gpt-4o, api_base: "{upstream}", api_key: sk-up}}
general_settings:
  master_key: {KEY}
"#
    );
    let backend: Arc<dyn ferrolite::router::Backend> =
        Arc::new(ferrolite::http::HttpBackend::new().unwrap());
    (gateway_from_yaml(&yaml, Some(backend)).await, asked)
}

/// The `data:` events of a raw SSE answer, `[DONE]` left out (asserted to be last).
async fn raw_events(base: &str, body: serde_json::Value) -> Vec<serde_json::Value> {
    let text = http()
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events: Vec<&str> = text
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| e.strip_prefix("data: ").unwrap())
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"), "{text}");
    events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect()
}

fn stream_request(include_usage: Option<bool>) -> serde_json::Value {
    let mut body = serde_json::json!({"model": "g", "stream": true,
        "messages": [{"role": "user", "content": "hi"}]});
    if let Some(include) = include_usage {
        body["stream_options"] = serde_json::json!({"include_usage": include});
    }
    body
}

#[tokio::test]
async fn a_raw_stream_carries_the_usage_chunk_only_when_the_client_asked_for_it() {
    let (base, asked) = gateway_over_usage_upstream().await;
    for not_asked in [None, Some(false)] {
        let events = raw_events(&base, stream_request(not_asked)).await;
        assert!(
            asked.load(Ordering::SeqCst),
            "ferrolite asks for the counts"
        );
        assert_eq!(events.len(), 2, "{events:?}");
        for event in &events {
            assert!(!event["choices"].as_array().unwrap().is_empty(), "{event}");
            assert!(event.get("usage").is_none(), "{event}");
            assert_eq!(event["model"], "g");
        }
    }
    let events = raw_events(&base, stream_request(Some(true))).await;
    assert_eq!(events.len(), 3, "{events:?}");
    for event in &events[..2] {
        assert!(!event["choices"].as_array().unwrap().is_empty(), "{event}");
        assert!(event["usage"].is_null(), "{event}");
    }
    let last = &events[2];
    assert_eq!(last["choices"], serde_json::json!([]));
    assert_eq!(last["usage"]["total_tokens"], 7);
    assert_eq!(last["id"], "chatcmpl-1");
}

fn stream_chat(include_usage: Option<bool>) -> CreateChatCompletionRequest {
    let mut args = CreateChatCompletionRequestArgs::default();
    args.model("g")
        .stream(true)
        .messages([ChatCompletionRequestUserMessageArgs::default()
            .content("hi")
            .build()
            .unwrap()
            .into()]);
    if let Some(include_usage) = include_usage {
        args.stream_options(ChatCompletionStreamOptions { include_usage });
    }
    args.build().unwrap()
}

/// Every chunk of a stream read with async-openai: its first choice's text (the client code
/// `chunk.choices[0]`, which must not meet an empty list unless usage was asked for) and usage.
async fn openai_stream(
    base: &str,
    include_usage: Option<bool>,
) -> Vec<(Option<String>, Option<u32>)> {
    let mut stream = client(base, KEY)
        .chat()
        .create_stream(stream_chat(include_usage))
        .await
        .unwrap();
    let mut chunks = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        let text = chunk
            .choices
            .first()
            .map(|c| c.delta.content.clone().unwrap_or_default());
        chunks.push((text, chunk.usage.map(|u| u.total_tokens)));
    }
    chunks
}

#[tokio::test]
async fn an_openai_client_sees_the_usage_chunk_only_when_it_asked_for_it() {
    let (base, _) = gateway_over_usage_upstream().await;
    let plain = openai_stream(&base, None).await;
    assert_eq!(
        plain,
        [
            (Some("Hel".to_string()), None),
            (Some("lo".to_string()), None)
        ]
    );
    let with_usage = openai_stream(&base, Some(true)).await;
    assert_eq!(
        with_usage,
        [
            (Some("Hel".to_string()), None),
            (Some("lo".to_string()), None),
            (None, Some(7))
        ]
    );

    // The mock backend reports usage on its last chunk with choices: a client that asked gets
    // it in a chunk of its own, one that did not never sees it.
    let router = Router::builder()
        .deployment(Deployment::new("g", "openai/gpt-4o"))
        .backend(MockBackend::new(MockSpec::reply("one two")))
        .build()
        .await
        .unwrap();
    let settings = GatewaySettings {
        master_key: Some(Secret::new(KEY)),
        ..GatewaySettings::default()
    };
    let base = gateway_with(router, settings).await;
    let plain = openai_stream(&base, None).await;
    assert_eq!(plain.len(), 2, "{plain:?}");
    assert!(
        plain
            .iter()
            .all(|(text, usage)| text.is_some() && usage.is_none())
    );
    let with_usage = openai_stream(&base, Some(true)).await;
    assert_eq!(with_usage.len(), 3, "{with_usage:?}");
    assert!(with_usage[..2].iter().all(|(_, usage)| usage.is_none()));
    let (text, usage) = &with_usage[2];
    assert!(
        text.is_none() && usage.is_some_and(|u| u > 0),
        "{with_usage:?}"
    );
}

#[tokio::test]
async fn a_call_without_its_input_is_a_400_naming_the_field_before_any_routing() {
    let router = Router::builder()
        .deployment(Deployment {
            id: Some("one".into()),
            ..Deployment::new("g", "openai/gpt-4o")
        })
        .backend(MockBackend::new(MockSpec::reply("hi")))
        .build()
        .await
        .unwrap();
    let settings = GatewaySettings {
        master_key: Some(Secret::new(KEY)),
        ..GatewaySettings::default()
    };
    let base = gateway_with(router.clone(), settings).await;
    let post = |path: &'static str, body: serde_json::Value| {
        let base = base.clone();
        async move {
            let response = http()
                .post(format!("{base}{path}"))
                .bearer_auth(KEY)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<serde_json::Value>().await.unwrap())
        }
    };
    for (path, body, field) in [
        (
            "/v1/chat/completions",
            serde_json::json!({"model": "g"}),
            "messages",
        ),
        (
            "/chat/completions",
            serde_json::json!({"model": "g", "messages": "hi"}),
            "messages",
        ),
        (
            "/v1/chat/completions",
            serde_json::json!({"model": "g", "messages": {"role": "user"}, "stream": true}),
            "messages",
        ),
        (
            "/v1/completions",
            serde_json::json!({"model": "g"}),
            "prompt",
        ),
        (
            "/v1/embeddings",
            serde_json::json!({"model": "g", "input": 3}),
            "input",
        ),
    ] {
        let (status, answer) = post(path, body.clone()).await;
        assert_eq!(status, 400, "{path} {body}: {answer}");
        assert_eq!(answer["error"]["param"], field, "{answer}");
        assert_eq!(answer["error"]["type"], "invalid_request_error");
        assert!(
            answer["error"]["message"].as_str().unwrap().contains(field),
            "{answer}"
        );
    }
    assert_eq!(
        router.usage(&DeploymentId::new("one")).unwrap().0,
        0.0,
        "nothing was routed"
    );
    let (status, answer) = post(
        "/v1/chat/completions",
        serde_json::json!({"model": "g", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
}

const MODELS_YAML: &str = r#"
model_list:
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o, mock_response: "hi"}
router_settings:
  model_group_alias:
    shown: gpt-4o
    also-shown: {model: gpt-4o, hidden: false}
    secret: {model: gpt-4o, hidden: true}
general_settings:
  master_key: sk-fidelity-master
ferrolite_settings:
  api_keys:
    - {name: narrow, key: sk-narrow-123456, models: [gpt-4o]}
"#;

#[tokio::test]
async fn models_list_aliases_unless_hidden_and_one_model_is_retrieved_or_404() {
    let base = gateway_from_yaml(MODELS_YAML, None).await;
    let openai = client(&base, KEY);
    let ids: Vec<String> = openai
        .models()
        .list()
        .await
        .unwrap()
        .data
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(ids, ["also-shown", "gpt-4o", "shown"]);
    // A hidden alias is not listed, but it is served.
    let (status, _, _) = {
        let response = http()
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(KEY)
            .json(&serde_json::json!({"model": "secret", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), (), ())
    };
    assert_eq!(status, 200);

    let model = openai.models().retrieve("gpt-4o").await.unwrap();
    assert_eq!(model.id, "gpt-4o");
    assert_eq!(openai.models().retrieve("shown").await.unwrap().id, "shown");
    match openai.models().retrieve("gpt-5").await.unwrap_err() {
        OpenAIError::ApiError(e) => {
            assert_eq!(e.code.as_deref(), Some("model_not_found"), "{e:?}");
            assert!(e.message.contains("gpt-5"), "{e:?}");
        }
        other => panic!("{other:?}"),
    }
    let response = http()
        .get(format!("{base}/v1/models/gpt-5"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    // A key limited to its groups sees only those, here and one by one.
    let narrow = client(&base, "sk-narrow-123456");
    let ids: Vec<String> = narrow
        .models()
        .list()
        .await
        .unwrap()
        .data
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(ids, ["gpt-4o"]);
    let response = http()
        .get(format!("{base}/models/shown"))
        .bearer_auth("sk-narrow-123456")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let unauthorized = http()
        .get(format!("{base}/v1/models/gpt-4o"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401);
}

#[tokio::test]
async fn health_checks_every_deployment_in_litellms_shape_for_the_master_key() {
    let router = Router::builder()
        .deployment(Deployment {
            id: Some("good".into()),
            api_base: Some("https://good.example/v1".into()),
            api_key: Some(Secret::new("sk-never-shown")),
            ..Deployment::new("g", "openai/gpt-4o")
        })
        .deployment(Deployment {
            id: Some("bad".into()),
            ..Deployment::new("g", "openai/gpt-4o-mini")
        })
        .deployment(Deployment {
            id: Some("other".into()),
            ..Deployment::new("h", "openai/gpt-4o")
        })
        .backend(MockBackend::new(MockSpec::reply("hi")).with(
            "bad",
            MockSpec::failing(ErrorClass::ServerError { status: 500 }),
        ))
        .build()
        .await
        .unwrap();
    let config = ferrolite::Config::from_yaml(
        r#"
model_list:
  - model_name: x
    litellm_params: {model: openai/gpt-4o}
ferrolite_settings:
  api_keys:
    - {name: team, key: sk-team-1234567}
"#,
    )
    .unwrap();
    let settings = GatewaySettings {
        master_key: Some(Secret::new(KEY)),
        api_keys: config.api_keys,
        ..GatewaySettings::default()
    };
    let base = gateway_with(router, settings).await;
    let get = |path: &'static str, key: Option<&'static str>| {
        let base = base.clone();
        async move {
            let mut request = http().get(format!("{base}{path}"));
            if let Some(key) = key {
                request = request.bearer_auth(key);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            (status, text)
        }
    };
    assert_eq!(get("/health", None).await.0, 401);
    assert_eq!(get("/health", Some("sk-team-1234567")).await.0, 403);
    let (status, text) = get("/health", Some(KEY)).await;
    assert_eq!(status, 200, "{text}");
    assert!(!text.contains("sk-never-shown"), "{text}");
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["healthy_count"], 2, "{body}");
    assert_eq!(body["unhealthy_count"], 1, "{body}");
    let healthy: HashSet<&str> = body["healthy_endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["model_id"].as_str().unwrap())
        .collect();
    assert_eq!(healthy, HashSet::from(["good", "other"]));
    let good = body["healthy_endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["model_id"] == "good")
        .unwrap();
    assert_eq!(good["model"], "openai/gpt-4o");
    assert_eq!(good["api_base"], "https://good.example/v1");
    let bad = &body["unhealthy_endpoints"][0];
    assert_eq!(bad["model_id"], "bad");
    assert_eq!(bad["model"], "openai/gpt-4o-mini");
    assert!(
        bad["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{bad}"
    );
    // One model group.
    let (_, text) = get("/health?model=h", Some(KEY)).await;
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["healthy_count"], 1, "{body}");
    assert_eq!(body["unhealthy_count"], 0, "{body}");
    assert_eq!(body["healthy_endpoints"][0]["model_id"], "other");
}

/// An upstream that answers a chat completion whose text is the body it received (JSON).
async fn echo_upstream() -> String {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(|axum::Json(body): axum::Json<serde_json::Value>| async move {
            axum::Json(serde_json::json!({
                "id": "x", "object": "chat.completion", "created": 0, "model": "m",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": body.to_string()},
                    "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
            }))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/v1")
}

#[tokio::test]
async fn request_tags_route_the_call_but_never_reach_the_deployment() {
    let upstream = echo_upstream().await;
    let yaml = format!(
        r#"
model_list:
  - model_name: g
    litellm_params: {{model: openai/gpt-4o, api_base: "{upstream}", api_key: sk-up, tags: [free]}}
    model_info: {{id: free}}
  - model_name: g
    litellm_params: {{model: openai/gpt-4o-mini, api_base: "{upstream}", api_key: sk-up, tags: [paid]}}
    model_info: {{id: paid}}
router_settings:
  enable_tag_filtering: true
general_settings:
  master_key: {KEY}
"#
    );
    let backend: Arc<dyn ferrolite::router::Backend> =
        Arc::new(ferrolite::http::HttpBackend::new().unwrap());
    let base = gateway_from_yaml(&yaml, Some(backend)).await;
    let (status, deployment, answer) = chat_with(
        &base,
        KEY,
        &[("x-litellm-tags", "paid")],
        serde_json::json!({
            "tags": ["paid"],
            "metadata": {"tags": ["paid"], "trace": "t-1"},
            "litellm_metadata": {"tags": ["paid"]},
        }),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(deployment, "paid");
    let received: serde_json::Value =
        serde_json::from_str(answer["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(received["model"], "gpt-4o-mini");
    assert!(received.get("tags").is_none(), "{received}");
    assert!(received.get("litellm_metadata").is_none(), "{received}");
    assert_eq!(
        received["metadata"],
        serde_json::json!({"trace": "t-1"}),
        "the rest of metadata is passed on"
    );
}

#[test]
fn an_api_keys_empty_tag_is_a_config_error_naming_the_field() {
    let error = ferrolite::Config::from_yaml(
        r#"
model_list:
  - model_name: g
    litellm_params: {model: openai/gpt-4o}
ferrolite_settings:
  api_keys:
    - {name: team, key: sk-team-1234567, tags: [paid, " "]}
"#,
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("ferrolite_settings.api_keys[0].tags"),
        "{error}"
    );
    assert!(!error.contains("sk-team-1234567"), "{error}");
}

/// A router over one deployment (with an rpm) whose state cache tracks at most `max` counter
/// keys, and a gateway over it with the master key and an API key `team` with an rpm; the
/// cache, to fill its registry of counter keys.
async fn gateway_over_a_small_cache(max: usize) -> (String, ferrolite::cache::DualCache) {
    use ferrolite::cache::{CacheConfig, DualCache};
    let cache = DualCache::connect(CacheConfig {
        max_tracked_keys: max,
        ..CacheConfig::default()
    })
    .await
    .unwrap();
    let router = Router::builder()
        .deployment(Deployment {
            rpm: Some(1_000),
            ..Deployment::new("g", "openai/gpt-4o")
        })
        .cache(cache.clone())
        .backend(MockBackend::new(MockSpec::reply("hi")))
        .build()
        .await
        .unwrap();
    let config = ferrolite::Config::from_yaml(
        r#"
model_list:
  - model_name: g
    litellm_params: {model: openai/gpt-4o}
ferrolite_settings:
  api_keys:
    - {name: team, key: sk-team-1234567, rpm: 100}
"#,
    )
    .unwrap();
    let settings = GatewaySettings {
        master_key: Some(Secret::new(KEY)),
        api_keys: config.api_keys,
        ..GatewaySettings::default()
    };
    (gateway_with(router, settings).await, cache)
}

/// Fills the cache's registry of counter keys.
fn fill_counter_registry(cache: &ferrolite::cache::DualCache) {
    let options = ferrolite::cache::CounterOptions::ttl(std::time::Duration::from_secs(3_600));
    for i in 0.. {
        if cache
            .counters()
            .increment(&format!("filler-{i}"), 1, options)
            .is_err()
        {
            break;
        }
    }
}

/// Regression: a shared-state error other than an outage was a 500 (the router's mapping) or
/// a 503 without `Retry-After` (an API key's limits). The counter registry full is a state a
/// retry can outlast: 503 with `Retry-After`, in OpenAI's shape.
#[tokio::test]
async fn a_full_counter_registry_is_a_503_with_retry_after() {
    let (base, cache) = gateway_over_a_small_cache(64).await;
    fill_counter_registry(&cache);
    let response = http()
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth("sk-team-1234567")
        .json(&serde_json::json!({"model": "g", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "api_error", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("max_tracked_keys")),
        "{body}"
    );
}

/// Regression: the router's own rate counters met a full counter registry (its usage window
/// could not get its first counters) and the call was a 500 "deployment index ... does not
/// belong to this snapshot", hiding the cause. It is the shared-state error it is: 503 with
/// `Retry-After`, naming the registry's bound.
#[tokio::test]
async fn a_full_counter_registry_met_by_the_router_names_the_registry_not_a_stale_index() {
    let (base, cache) = gateway_over_a_small_cache(64).await;
    fill_counter_registry(&cache);
    let response = http()
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&serde_json::json!({"model": "g", "messages": []}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let retry_after = response.headers().get("retry-after").cloned();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(retry_after.unwrap(), "1");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("max_tracked_keys"), "{body}");
    assert!(!message.contains("does not belong"), "{body}");
}
