//! LiteLLM's config.yaml, loaded unchanged: the reference's example configs load and route as
//! LiteLLM would (every deployment mocked with `mock_response`, so no network).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;

use ferrolite::{Config, Request, Router, build_from_config};

async fn router(yaml: &str) -> Router {
    build_from_config(Config::from_yaml(yaml).unwrap(), None)
        .await
        .unwrap()
}

async fn served(router: &Router, model: &str, calls: usize) -> HashSet<String> {
    let mut seen = HashSet::new();
    for _ in 0..calls {
        let answer = router
            .call(Request::new(
                model,
                serde_json::json!({"messages": [{"role": "user", "content": "hi"}]}),
            ))
            .await
            .unwrap();
        seen.insert(answer.deployment_id.to_string());
    }
    seen
}

#[tokio::test]
async fn load_balancing_across_deployments_of_one_group() {
    let r = router(
        r#"
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: azure/gpt-4o-eu
      api_base: https://eu.example.openai.azure.com
      api_key: sk-test
      api_version: "2024-06-01"
      rpm: 600
      mock_response: "Hello from eu"
    model_info:
      id: eu
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      rpm: 600
      mock_response: "Hello from openai"
    model_info:
      id: openai
router_settings:
  routing_strategy: simple-shuffle
  num_retries: 3
"#,
    )
    .await;
    assert_eq!(
        served(&r, "gpt-4o", 40).await,
        HashSet::from(["eu".to_string(), "openai".to_string()])
    );
    assert_eq!(r.settings().num_retries, 3);
}

#[tokio::test]
async fn fallbacks_take_a_failing_group_to_the_next() {
    let r = router(
        r#"
model_list:
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o, mock_response: litellm.InternalServerError}
  - model_name: claude
    litellm_params: {model: anthropic/claude-3-5-sonnet, mock_response: "I am Claude"}
router_settings:
  num_retries: 0
  fallbacks: [{"gpt-4o": ["claude"]}]
"#,
    )
    .await;
    let answer = r
        .call(Request::new("gpt-4o", serde_json::json!({"messages": []})))
        .await
        .unwrap();
    assert_eq!(answer.model_group, "claude");
    assert_eq!(answer.attempted_fallbacks, 1);
    assert_eq!(
        answer.body.to_value().unwrap()["choices"][0]["message"]["content"],
        "I am Claude"
    );
}

#[tokio::test]
async fn litellm_settings_fallbacks_apply_when_router_settings_has_none() {
    let config = Config::from_yaml(
        r#"
model_list:
  - {model_name: a, litellm_params: {model: openai/a, mock_response: x}}
  - {model_name: b, litellm_params: {model: openai/b, mock_response: x}}
litellm_settings:
  num_retries: 4
  request_timeout: 30
  fallbacks: [{"a": "b"}, {"*": ["b"]}]
  context_window_fallbacks: [{"a": ["b"]}]
"#,
    )
    .unwrap();
    assert_eq!(config.settings.num_retries, 4);
    assert_eq!(config.settings.timeout, std::time::Duration::from_secs(30));
    assert_eq!(config.settings.fallbacks["a"], ["b"]);
    assert_eq!(config.settings.default_fallbacks, ["b"]);
    assert_eq!(config.settings.context_window_fallbacks["a"], ["b"]);
}

#[tokio::test]
async fn provider_budgets_refuse_once_spent() {
    let r = router(
        r#"
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      mock_response: "ok"
      input_cost_per_token: 0.01
      output_cost_per_token: 0.01
router_settings:
  num_retries: 0
  provider_budget_config:
    openai: {budget_limit: 0.5, time_period: 1d}
"#,
    )
    .await;
    let mut refused = 0;
    for _ in 0..40 {
        if r.call(Request::new(
            "gpt-4o",
            serde_json::json!({"messages": [{"role": "user", "content": "hi"}]}),
        ))
        .await
        .is_err()
        {
            refused += 1;
        }
    }
    assert!(refused > 0, "the budget ran out");
    let status = r.budget_status().await.unwrap();
    assert!(status[0].spend <= 0.5 + 0.2, "{status:?}");
}

#[tokio::test]
async fn tag_routing_and_aliases() {
    let r = router(
        r#"
model_list:
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o, tags: [free], mock_response: free}
    model_info: {id: free}
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o-paid, tags: [paid], mock_response: paid}
    model_info: {id: paid}
router_settings:
  enable_tag_filtering: true
  model_group_alias:
    gpt4: gpt-4o
    hidden-alias: {model: gpt-4o, hidden: true}
"#,
    )
    .await;
    for _ in 0..10 {
        let mut request = Request::new("gpt4", serde_json::json!({"messages": []}));
        request.tags = vec!["paid".into()];
        let answer = r.call(request).await.unwrap();
        assert_eq!(answer.deployment_id.as_str(), "paid");
    }
    let answer = r
        .call(Request::new(
            "hidden-alias",
            serde_json::json!({"messages": []}),
        ))
        .await
        .unwrap();
    assert_eq!(answer.model_group, "gpt-4o");
}

#[tokio::test]
async fn anchors_and_merge_keys_fill_deployments() {
    let config = Config::from_yaml(
        r#"
x-azure: &azure
  api_base: https://eu.example.openai.azure.com
  api_version: "2024-06-01"
  rpm: 100
  mock_response: hi
model_list:
  - model_name: gpt-4o
    litellm_params:
      <<: *azure
      model: azure/gpt-4o-1
  - model_name: gpt-4o
    litellm_params:
      <<: *azure
      model: azure/gpt-4o-2
      rpm: 200
"#,
    )
    .unwrap();
    assert_eq!(config.deployments[0].rpm, Some(100));
    assert_eq!(
        config.deployments[1].rpm,
        Some(200),
        "a key beside the merge wins"
    );
    assert_eq!(
        config.deployments[1].api_base.as_deref(),
        Some("https://eu.example.openai.azure.com")
    );
    // The anchor's top-level `x-` key holds the anchor: neither an error nor a warning.
    assert!(
        config.warnings.iter().all(|w| w.path != "x-azure"),
        "{:?}",
        config.warnings
    );
}

#[test]
fn secrets_from_the_environment_never_appear_in_debug_output() {
    // Cargo sets CARGO_MANIFEST_DIR for the test process: it stands in for a secret.
    let secret = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    let config = Config::from_yaml(
        r#"
model_list:
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o, api_key: os.environ/CARGO_MANIFEST_DIR}
router_settings:
  redis_host: localhost
  redis_port: 6379
  redis_password: os.environ/CARGO_MANIFEST_DIR
general_settings:
  master_key: os.environ/CARGO_MANIFEST_DIR
"#,
    )
    .unwrap();
    let key = config.deployments[0].api_key.as_ref().unwrap();
    assert_eq!(key.expose(), secret);
    let shown = format!("{config:?}");
    assert!(!shown.contains(&secret), "{shown}");
    assert_eq!(
        config.master_key.as_ref().map(|k| k.expose().to_string()),
        Some(secret.clone())
    );
    let url = &config.cache.redis.as_ref().unwrap().url;
    assert!(
        url.starts_with("redis://:%2F") && url.ends_with("@localhost:6379"),
        "the password reaches the connection, percent-encoded"
    );
}

#[test]
fn keys_litellm_knows_but_ferrolite_does_not_implement_are_listed() {
    let config = Config::from_yaml(
        r#"
model_list:
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o, aws_role_name: r, mystery_knob: 1}
router_settings:
  cache_kwargs: {}
  typo_setting: 3
litellm_settings:
  drop_params: true
"#,
    )
    .unwrap();
    let lines = config.not_honoured();
    assert!(
        lines.contains(
            &"model_list[0].litellm_params.aws_role_name: accepted, not implemented".to_string()
        ),
        "{lines:?}"
    );
    assert!(
        lines.contains(
            &"model_list[0].litellm_params.mystery_knob: unknown key, ignored".to_string()
        ),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"router_settings.cache_kwargs: accepted, not implemented".to_string()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"router_settings.typo_setting: unknown key, ignored".to_string()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"litellm_settings.drop_params: accepted, not implemented".to_string()),
        "{lines:?}"
    );
}

#[test]
fn ferrolite_settings_reach_the_router_and_the_cache() {
    let config = Config::from_yaml(
        r#"
model_list:
  - {model_name: g, litellm_params: {model: openai/g}}
router_settings:
  redis_url: redis://127.0.0.1:6379
ferrolite_settings:
  admission: auto
  window: fixed
  sync_interval_ms: 50
  failure_mode: fail_closed
  request_deadline: 20
  half_open: true
  deployment_affinity: true
  retry_budget: {ratio: 0.5}
  wait_queue: {max_waiting: 10, max_wait: 5}
  lease_ttl: 10
  redis_key_prefix: "app:"
"#,
    )
    .unwrap();
    let s = &config.settings;
    assert_eq!(s.admission, ferrolite::strategies::AdmissionMode::Auto);
    assert_eq!(s.window, ferrolite::cache::Window::MINUTE_FIXED);
    assert_eq!(s.request_deadline, Some(std::time::Duration::from_secs(20)));
    assert!(s.half_open && s.deployment_affinity);
    assert_eq!(s.retry_budget.unwrap().ratio, 0.5);
    assert_eq!(s.wait_queue.unwrap().max_waiting, 10);
    assert_eq!(s.lease_ttl, std::time::Duration::from_secs(10));
    assert_eq!(
        config.cache.sync_interval,
        std::time::Duration::from_millis(50)
    );
    assert_eq!(
        config.cache.failure_mode,
        ferrolite::cache::FailureMode::FailClosed
    );
    let redis = config.cache.redis.as_ref().unwrap();
    assert_eq!(redis.url, "redis://127.0.0.1:6379");
    assert_eq!(redis.key_prefix, "app:");
}

#[test]
fn the_catalogue_fills_what_a_deployment_does_not_say_and_model_info_wins() {
    let config = Config::from_yaml(
        r#"
model_list:
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o}
  - model_name: gpt-4o
    litellm_params: {model: azure/my-eu-deployment}
    model_info: {base_model: azure/gpt-4o}
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o, input_cost_per_token: 0.5}
    model_info: {max_input_tokens: 1000}
  - model_name: custom
    litellm_params: {model: openai/my-own-model}
  - model_name: claude
    litellm_params: {model: anthropic/claude-sonnet-4-5, api_key: sk-ant-test}
  - model_name: claude
    litellm_params: {model: anthropic/claude-sonnet-4-5, api_key: sk-ant-test, cache_creation_input_token_cost: 0.5, cache_creation_input_token_cost_above_1hr: 0.75}
    model_info: {cache_read_input_token_cost: 0.25}
"#,
    )
    .unwrap();
    let d = &config.deployments;
    let claude = ferrolite::catalogue::lookup("claude-sonnet-4-5").unwrap();
    assert_eq!(d[4].cache_read_input_token_cost, Some(3e-7));
    assert_eq!(d[4].cache_creation_input_token_cost, Some(3.75e-6));
    assert_eq!(
        d[4].cache_read_input_token_cost,
        claude.cache_read_input_token_cost
    );
    assert_eq!(
        d[5].cache_read_input_token_cost,
        Some(0.25),
        "model_info wins"
    );
    assert_eq!(d[5].cache_creation_input_token_cost, Some(0.5));
    // One-hour cache writes: the catalogue's price, or the configuration's.
    assert_eq!(d[4].cache_creation_input_token_cost_above_1hr, Some(6e-6));
    assert_eq!(d[5].cache_creation_input_token_cost_above_1hr, Some(0.75));
    assert_eq!(d[3].cache_creation_input_token_cost_above_1hr, None);
    assert_eq!(d[3].cache_read_input_token_cost, None);
    let facts = ferrolite::catalogue::lookup("gpt-4o").unwrap();
    assert_eq!(d[0].max_input_tokens, facts.max_input_tokens);
    assert_eq!(d[0].input_cost_per_token, facts.input_cost_per_token);
    assert_eq!(d[0].output_cost_per_token, facts.output_cost_per_token);
    assert_eq!(
        d[1].max_input_tokens,
        ferrolite::catalogue::lookup("azure/gpt-4o")
            .unwrap()
            .max_input_tokens,
        "an Azure deployment gets its context window through base_model"
    );
    assert_eq!(d[2].max_input_tokens, Some(1000), "model_info wins");
    assert_eq!(d[2].input_cost_per_token, Some(0.5));
    assert_eq!(d[3].max_input_tokens, None);
}

#[tokio::test]
async fn a_response_costs_its_tokens_at_catalogue_prices() {
    let r = router(
        r#"
model_list:
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o, mock_response: "four words of reply", mock_output_tokens: 20}
"#,
    )
    .await;
    let answer = r
        .call(Request::new(
            "gpt-4o",
            serde_json::json!({"messages": [{"role": "user", "content": "hello there"}]}),
        ))
        .await
        .unwrap();
    let usage = answer.usage.unwrap();
    let facts = ferrolite::catalogue::lookup("gpt-4o").unwrap();
    let expected = usage.prompt_tokens as f64 * facts.input_cost_per_token.unwrap()
        + usage.completion_tokens as f64 * facts.output_cost_per_token.unwrap();
    assert_eq!(usage.completion_tokens, 20);
    assert!((answer.response_cost.unwrap() - expected).abs() < 1e-12);
}

#[tokio::test]
async fn cost_based_routing_uses_catalogue_prices_for_deployments_without_any() {
    let r = router(
        r#"
model_list:
  - model_name: chat
    litellm_params: {model: openai/gpt-4o, mock_response: x}
    model_info: {id: expensive}
  - model_name: chat
    litellm_params: {model: openai/gpt-4o-mini, mock_response: x}
    model_info: {id: cheap}
router_settings:
  routing_strategy: cost-based-routing
"#,
    )
    .await;
    assert_eq!(
        served(&r, "chat", 20).await,
        HashSet::from(["cheap".to_string()])
    );
}

#[test]
fn cache_responses_turns_the_response_cache_on_and_ferrolite_settings_shape_it() {
    let off = Config::from_yaml(
        "model_list:\n  - {model_name: g, litellm_params: {model: openai/gpt-4o}}\n",
    )
    .unwrap();
    assert_eq!(
        off.settings.response_cache, None,
        "off by default, as LiteLLM"
    );
    let config = Config::from_yaml(
        r#"
model_list:
  - {model_name: gpt-4o, litellm_params: {model: openai/gpt-4o}}
  - {model_name: gpt-4o-azure, litellm_params: {model: azure/gpt-4o, api_base: "https://x.openai.azure.com"}}
router_settings:
  cache_responses: true
  caching_groups: [[gpt-4o, gpt-4o-azure]]
ferrolite_settings:
  response_cache: {ttl: 600, memory_bytes: 1048576, redis: false, ignore_fields: [trace_id]}
"#,
    )
    .unwrap();
    let cache = config.settings.response_cache.clone().unwrap();
    assert_eq!(cache.ttl, std::time::Duration::from_secs(600));
    assert_eq!(cache.memory_bytes, 1 << 20);
    assert!(!cache.redis);
    assert_eq!(cache.ignore_fields, ["trace_id"]);
    assert_eq!(
        cache.caching_groups,
        [vec!["gpt-4o".to_string(), "gpt-4o-azure".to_string()]]
    );
    assert!(
        config.not_honoured().iter().all(|l| !l.contains("cache")),
        "{:?}",
        config.not_honoured()
    );
}

#[test]
fn top_level_x_keys_hold_anchors_and_are_not_reported_as_ignored() {
    let config = Config::from_yaml(
        r#"
x-azure: &azure
  model: azure/gpt-4o
  api_base: https://example.openai.azure.com
  rpm: 60
model_list:
  - model_name: gpt-4o
    litellm_params:
      <<: *azure
    model_info: {x-note: 1}
"#,
    )
    .unwrap();
    assert_eq!(config.deployments[0].rpm, Some(60));
    assert_eq!(
        config.not_honoured(),
        ["model_list[0].model_info.x-note: unknown key, ignored"],
        "only the top-level anchor holder is silent"
    );
}

#[test]
fn request_parameters_in_litellm_params_become_the_deployments_defaults() {
    let config = Config::from_yaml(
        r#"
model_list:
  - model_name: g
    litellm_params:
      model: openai/gpt-4o
      temperature: 0.1
      max_tokens: 256
      stop: ["\n\n"]
      response_format: {type: json_object}
"#,
    )
    .unwrap();
    let defaults = &config.deployments[0].default_params;
    assert_eq!(defaults["temperature"], 0.1);
    assert_eq!(defaults["max_tokens"], 256);
    assert_eq!(defaults["stop"], serde_json::json!(["\n\n"]));
    assert_eq!(defaults["response_format"]["type"], "json_object");
    assert!(
        config.not_honoured().is_empty(),
        "{:?}",
        config.not_honoured()
    );
}

#[test]
fn the_proxys_litellm_settings_cache_turns_the_response_cache_on_too() {
    let config = Config::from_yaml(
        r#"
model_list:
  - {model_name: g, litellm_params: {model: openai/gpt-4o}}
litellm_settings:
  cache: true
  cache_params: {type: local, ttl: 600, namespace: prod, mode: default_off, host: localhost, supported_call_types: [acompletion]}
"#,
    )
    .unwrap();
    let cache = config.settings.response_cache.clone().unwrap();
    assert!(!cache.redis, "type: local keeps answers in this process");
    assert_eq!(cache.ttl, std::time::Duration::from_secs(600));
    assert_eq!(cache.namespace.as_deref(), Some("prod"));
    assert!(cache.opt_in, "mode: default_off");
    let lines = config.not_honoured();
    assert!(
        lines.contains(
            &"litellm_settings.cache_params.supported_call_types: accepted, not implemented"
                .to_string()
        ),
        "{lines:?}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with("litellm_settings.cache:")),
        "{lines:?}"
    );
}

#[test]
fn a_literal_key_in_the_yaml_never_appears_in_debug_output() {
    let config = Config::from_yaml(
        "model_list:\n  - {model_name: g, litellm_params: {model: openai/gpt-4o, api_key: sk-literal-secret-123}}\n",
    )
    .unwrap();
    let shown = format!("{config:?}");
    assert!(!shown.contains("sk-literal-secret-123"), "{shown}");
    assert!(
        shown.contains("bytes of YAML"),
        "the source is kept, not shown: {shown}"
    );
}

#[tokio::test]
async fn errors_found_while_building_the_router_point_at_their_line() {
    let text = r#"
model_list:
  - model_name: g
    litellm_params: {model: openai/gpt-4o, mock_response: hi}
router_settings:
  model_group_alias:
    fast: g
    slow: ghost
"#;
    let config = Config::from_yaml(text).unwrap();
    let error = build_from_config(config, None)
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "router_settings.model_group_alias.slow: names no model group, got `ghost` (line 8, column 5)"
    );
    // The same with a backend given, as `ferrolite check` builds it.
    let config = Config::from_yaml(text).unwrap();
    let mock = ferrolite::mock::MockBackend::new(ferrolite::mock::MockSpec::default());
    let error = build_from_config(config, Some(std::sync::Arc::new(mock)))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.ends_with("(line 8, column 5)"), "{error}");
}

#[test]
fn extra_headers_are_kept_as_secrets_and_bad_ones_are_refused() {
    let secret = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    let config = Config::from_yaml(
        r#"
model_list:
  - model_name: g
    litellm_params:
      model: openai/gpt-4o
      organization: org-123
      headers: {X-Org: acme, X-Team: base}
      extra_headers: {X-Team: ml, Helicone-Auth: os.environ/CARGO_MANIFEST_DIR}
"#,
    )
    .unwrap();
    let headers = &config.deployments[0].extra_headers;
    assert_eq!(headers["x-org"].expose(), "acme");
    assert_eq!(
        headers["x-team"].expose(),
        "ml",
        "extra_headers wins over headers"
    );
    assert_eq!(headers["helicone-auth"].expose(), secret);
    assert_eq!(headers["openai-organization"].expose(), "org-123");
    assert!(!format!("{config:?}").contains(&secret));
    assert!(
        config.not_honoured().is_empty(),
        "{:?}",
        config.not_honoured()
    );
    let bad = Config::from_yaml(
        "model_list:\n  - {model_name: g, litellm_params: {model: openai/gpt-4o, extra_headers: {\"bad header\": x}}}\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        bad.starts_with(
            "model_list[0].litellm_params.extra_headers.bad header: expected an HTTP header name"
        ),
        "{bad}"
    );
}

/// A config of `anthropic/` deployments: one with its own key, one without (and one mocked,
/// which needs none).
const ANTHROPIC_KEYS: &str = r#"
model_list:
  - model_name: claude
    litellm_params: {model: anthropic/claude-sonnet-4-5, api_key: sk-ant-own}
  - model_name: claude
    litellm_params: {model: anthropic/claude-haiku-4-5}
  - model_name: mocked
    litellm_params: {model: anthropic/claude-haiku-4-5, mock_response: "hi"}
"#;

/// As LiteLLM reads it: an `anthropic/` deployment without `api_key` takes the
/// `ANTHROPIC_API_KEY` environment variable when the config is loaded (one with its own key
/// keeps it); without either, the error names the deployment's `litellm_params.api_key`.
#[test]
fn an_anthropic_deployment_without_api_key_takes_anthropic_api_key_from_the_environment() {
    common::child::in_child(
        "child_anthropic_keys_come_from_the_environment",
        &[],
        &[("ANTHROPIC_API_KEY", "sk-ant-from-the-environment")],
    );
    common::child::in_child(
        "child_an_anthropic_deployment_without_any_key_is_refused_naming_api_key",
        &["ANTHROPIC_API_KEY"],
        &[],
    );
}

#[test]
#[ignore = "run by an_anthropic_deployment_without_api_key_takes_anthropic_api_key_from_the_environment"]
fn child_anthropic_keys_come_from_the_environment() {
    let config = Config::from_yaml(ANTHROPIC_KEYS).unwrap();
    let keys: Vec<Option<&str>> = config
        .deployments
        .iter()
        .map(|d| d.api_key.as_ref().map(|k| k.expose()))
        .collect();
    assert_eq!(
        keys,
        [
            Some("sk-ant-own"),
            Some("sk-ant-from-the-environment"),
            None
        ]
    );
    assert!(!format!("{config:?}").contains("sk-ant-from-the-environment"));
}

#[test]
#[ignore = "run by an_anthropic_deployment_without_api_key_takes_anthropic_api_key_from_the_environment"]
fn child_an_anthropic_deployment_without_any_key_is_refused_naming_api_key() {
    let error = Config::from_yaml(ANTHROPIC_KEYS).unwrap_err();
    assert_eq!(error.path(), "model_list[1].litellm_params.api_key");
    let message = error.to_string();
    assert!(message.contains("ANTHROPIC_API_KEY"), "{message}");
    assert!(!message.contains("sk-ant-own"), "{message}");
}

/// `openai/` and `azure/` deployments (not mocked) without their own `api_key`, `api_base` or
/// `api_version`.
const OPENAI_AZURE_ENV: &str = r#"
model_list:
  - model_name: gpt
    litellm_params: {model: openai/gpt-4o, api_key: sk-own, api_base: "https://own.example/v1"}
  - model_name: gpt
    litellm_params: {model: openai/gpt-4o}
  - model_name: azure
    litellm_params: {model: azure/gpt-4o-eu}
  - model_name: azure
    litellm_params: {model: azure/gpt-4o-us, api_key: az-own, api_base: "https://us.example", api_version: "2024-06-01"}
  - model_name: mocked
    litellm_params: {model: openai/gpt-4o, mock_response: "hi"}
"#;

/// As LiteLLM reads them: an `openai/` deployment takes `OPENAI_API_KEY` and `OPENAI_BASE_URL`
/// (else `OPENAI_API_BASE`), an `azure/` one `AZURE_OPENAI_API_KEY` (else `AZURE_API_KEY`),
/// `AZURE_API_BASE` and `AZURE_API_VERSION` for what its `litellm_params` leave out, when the
/// config is loaded; what a deployment sets itself is kept, a mocked one takes nothing, and
/// without the variables nothing is filled and nothing refused (unlike Anthropic's key).
#[test]
fn openai_and_azure_deployments_take_what_they_leave_out_from_litellms_variables() {
    common::child::in_child(
        "child_openai_and_azure_fields_come_from_the_environment",
        &["OPENAI_BASE_URL", "AZURE_OPENAI_API_KEY"],
        &[
            ("OPENAI_API_KEY", "sk-openai-from-env"),
            ("OPENAI_API_BASE", "https://openai-base.example/v1"),
            ("AZURE_API_KEY", "az-from-env"),
            ("AZURE_API_BASE", "https://eu.example"),
            ("AZURE_API_VERSION", "2025-01-01-preview"),
        ],
    );
    common::child::in_child(
        "child_openai_and_azure_without_variables_load_as_written",
        &[
            "OPENAI_API_KEY",
            "OPENAI_BASE_URL",
            "OPENAI_API_BASE",
            "AZURE_OPENAI_API_KEY",
            "AZURE_API_KEY",
            "AZURE_API_BASE",
            "AZURE_API_VERSION",
        ],
        &[],
    );
}

/// Each deployment's key, base and version, in order.
fn fields(config: &Config) -> Vec<(Option<&str>, Option<&str>, Option<&str>)> {
    config
        .deployments
        .iter()
        .map(|d| {
            (
                d.api_key.as_ref().map(|k| k.expose()),
                d.api_base.as_deref(),
                d.api_version.as_deref(),
            )
        })
        .collect()
}

#[test]
#[ignore = "run by openai_and_azure_deployments_take_what_they_leave_out_from_litellms_variables"]
fn child_openai_and_azure_fields_come_from_the_environment() {
    let config = Config::from_yaml(OPENAI_AZURE_ENV).unwrap();
    assert_eq!(
        fields(&config),
        [
            (Some("sk-own"), Some("https://own.example/v1"), None),
            (
                Some("sk-openai-from-env"),
                Some("https://openai-base.example/v1"),
                None
            ),
            (
                Some("az-from-env"),
                Some("https://eu.example"),
                Some("2025-01-01-preview")
            ),
            (
                Some("az-own"),
                Some("https://us.example"),
                Some("2024-06-01")
            ),
            (None, None, None),
        ]
    );
    let debug = format!("{config:?}");
    assert!(!debug.contains("sk-openai-from-env"), "{debug}");
    assert!(!debug.contains("az-from-env"), "{debug}");
}

#[test]
#[ignore = "run by openai_and_azure_deployments_take_what_they_leave_out_from_litellms_variables"]
fn child_openai_and_azure_without_variables_load_as_written() {
    let config = Config::from_yaml(OPENAI_AZURE_ENV).unwrap();
    assert_eq!(
        fields(&config),
        [
            (Some("sk-own"), Some("https://own.example/v1"), None),
            (None, None, None),
            (None, None, None),
            (
                Some("az-own"),
                Some("https://us.example"),
                Some("2024-06-01")
            ),
            (None, None, None),
        ]
    );
}
