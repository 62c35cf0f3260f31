//! The YAML as written: the document, its sections and the value shapes LiteLLM allows, read
//! with serde. Nothing here checks more than a value's type (and what [`super::env`] checks as
//! it reads); `super::convert` makes a [`Config`](super::Config) of them.

use std::collections::BTreeMap;

use ferrolite_budgets::BudgetConfig;
use ferrolite_router::RetryPolicy;
use ferrolite_strategies::StrategyName;
use ferrolite_types::AllowedFailsPolicy;
use serde::{Deserialize, Deserializer};

use super::Simulation;
use super::env::{
    CredentialValue, EnvString, Seconds, SecretValue, Share, env_opt, env_string, env_string_opt,
};

#[derive(Debug, Default, Deserialize)]
/// The document: LiteLLM's sections, ferrolite's own and the `simulation` workload.
#[serde(default)]
pub(super) struct RawConfig {
    pub(super) model_list: Option<Vec<RawModel>>,
    pub(super) router_settings: RawRouterSettings,
    pub(super) litellm_settings: RawLitellmSettings,
    pub(super) general_settings: RawGeneralSettings,
    pub(super) ferrolite_settings: RawFerroliteSettings,
    pub(super) simulation: Option<Simulation>,
}

/// One `model_list` entry.
#[derive(Debug, Deserialize)]
pub(super) struct RawModel {
    pub(super) model_name: String,
    pub(super) litellm_params: RawParams,
    #[serde(default)]
    pub(super) model_info: RawModelInfo,
    /// LiteLLM's strategies also read limits at the entry's top level.
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) rpm: Option<u64>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) tpm: Option<u64>,
}

/// A `model_list` entry's `litellm_params`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawParams {
    #[serde(deserialize_with = "env_string")]
    pub(super) model: String,
    #[serde(default)]
    pub(super) api_base: Option<EnvString>,
    #[serde(default)]
    pub(super) api_key: Option<SecretValue>,
    #[serde(default)]
    pub(super) api_version: Option<EnvString>,
    #[serde(default, deserialize_with = "env_string_opt")]
    pub(super) custom_llm_provider: Option<String>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) rpm: Option<u64>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) tpm: Option<u64>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) max_parallel_requests: Option<u32>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) weight: Option<f64>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) order: Option<u32>,
    #[serde(default)]
    pub(super) timeout: Option<Seconds>,
    #[serde(default)]
    pub(super) request_timeout: Option<Seconds>,
    #[serde(default)]
    pub(super) stream_timeout: Option<Seconds>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) num_retries: Option<u32>,
    #[serde(default)]
    pub(super) cooldown_time: Option<Seconds>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) max_budget: Option<f64>,
    #[serde(default, deserialize_with = "env_string_opt")]
    pub(super) budget_duration: Option<String>,
    #[serde(default)]
    pub(super) tags: Vec<String>,
    #[serde(default, deserialize_with = "env_string_opt")]
    pub(super) region_name: Option<String>,
    #[serde(default, deserialize_with = "env_string_opt")]
    pub(super) base_model: Option<String>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) input_cost_per_token: Option<f64>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) output_cost_per_token: Option<f64>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) cache_read_input_token_cost: Option<f64>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) cache_creation_input_token_cost: Option<f64>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) cache_creation_input_token_cost_above_1hr: Option<f64>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) max_input_tokens: Option<u64>,
    #[serde(default)]
    pub(super) mock_response: Option<MockResponseDe>,
    #[serde(default)]
    pub(super) mock_timeout: Option<bool>,
    // request parameters sent with every call unless the request sets them
    #[serde(default)]
    pub(super) temperature: Option<serde_json::Value>,
    #[serde(default)]
    pub(super) top_p: Option<serde_json::Value>,
    #[serde(default)]
    pub(super) max_tokens: Option<serde_json::Value>,
    #[serde(default)]
    pub(super) max_completion_tokens: Option<serde_json::Value>,
    #[serde(default)]
    pub(super) seed: Option<serde_json::Value>,
    #[serde(default)]
    pub(super) stop: Option<serde_json::Value>,
    #[serde(default)]
    pub(super) presence_penalty: Option<serde_json::Value>,
    #[serde(default)]
    pub(super) frequency_penalty: Option<serde_json::Value>,
    #[serde(default)]
    pub(super) response_format: Option<serde_json::Value>,
    #[serde(default)]
    pub(super) reasoning_effort: Option<serde_json::Value>,
    // HTTP headers for every call (`extra_headers` wins over `headers`)
    #[serde(default)]
    pub(super) extra_headers: BTreeMap<String, SecretValue>,
    #[serde(default)]
    pub(super) headers: BTreeMap<String, SecretValue>,
    #[serde(default)]
    pub(super) organization: Option<EnvString>,
    // provider credentials and places (Bedrock, Vertex AI), as LiteLLM names them
    #[serde(default)]
    pub(super) aws_access_key_id: Option<SecretValue>,
    #[serde(default)]
    pub(super) aws_secret_access_key: Option<SecretValue>,
    #[serde(default)]
    pub(super) aws_session_token: Option<SecretValue>,
    #[serde(default)]
    pub(super) aws_region_name: Option<SecretValue>,
    #[serde(default)]
    pub(super) aws_bedrock_runtime_endpoint: Option<EnvString>,
    #[serde(default)]
    pub(super) vertex_project: Option<SecretValue>,
    #[serde(default)]
    pub(super) vertex_location: Option<SecretValue>,
    #[serde(default)]
    pub(super) vertex_credentials: Option<CredentialValue>,
    // ferrolite's mock behaviour (for `ferrolite simulate` and tests)
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) mock_latency_ms: Option<f64>,
    #[serde(default)]
    pub(super) mock_jitter: Option<Share>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) mock_ttft_ms: Option<f64>,
    #[serde(default)]
    pub(super) mock_error_rates: BTreeMap<String, Share>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) mock_rpm: Option<u64>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) mock_tpm: Option<u64>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) mock_output_tokens: Option<u64>,
}

/// A `model_list` entry's `model_info`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawModelInfo {
    pub(super) id: Option<String>,
    #[serde(default, deserialize_with = "env_string_opt")]
    pub(super) base_model: Option<String>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) max_input_tokens: Option<u64>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) max_output_tokens: Option<u64>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) input_cost_per_token: Option<f64>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) output_cost_per_token: Option<f64>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) cache_read_input_token_cost: Option<f64>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) cache_creation_input_token_cost: Option<f64>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) cache_creation_input_token_cost_above_1hr: Option<f64>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) rpm: Option<u64>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) tpm: Option<u64>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) order: Option<u32>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) allowed_fails: Option<u32>,
    pub(super) allowed_fails_policy: Option<AllowedFailsPolicy>,
    pub(super) cooldown_time: Option<Seconds>,
    #[serde(default, deserialize_with = "env_string_opt")]
    pub(super) mode: Option<String>,
    #[serde(default, deserialize_with = "env_string_opt")]
    pub(super) region_name: Option<String>,
    pub(super) health_check_timeout: Option<Seconds>,
    pub(super) disable_background_health_check: Option<bool>,
}

/// `router_settings`: the arguments of LiteLLM's `Router`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawRouterSettings {
    pub(super) routing_strategy: Option<StrategyDe>,
    pub(super) routing_strategy_args: RawStrategyArgs,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) num_retries: Option<u32>,
    pub(super) timeout: Option<Seconds>,
    pub(super) stream_timeout: Option<Seconds>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) allowed_fails: Option<u32>,
    pub(super) allowed_fails_policy: Option<AllowedFailsPolicy>,
    pub(super) cooldown_time: Option<Seconds>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) disable_cooldowns: Option<bool>,
    pub(super) retry_policy: Option<RawRetryPolicy>,
    pub(super) model_group_retry_policy: BTreeMap<String, RawRetryPolicy>,
    pub(super) fallbacks: Option<FallbackList>,
    pub(super) default_fallbacks: Option<Vec<String>>,
    pub(super) context_window_fallbacks: Option<FallbackList>,
    pub(super) content_policy_fallbacks: Option<FallbackList>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) max_fallbacks: Option<u32>,
    pub(super) retry_after: Option<Seconds>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) enable_pre_call_checks: Option<bool>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) enable_tag_filtering: Option<bool>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) tag_filtering_match_any: Option<bool>,
    pub(super) model_group_alias: BTreeMap<String, AliasTarget>,
    pub(super) provider_budget_config: BTreeMap<String, BudgetConfig>,
    pub(super) redis_url: Option<SecretValue>,
    pub(super) redis_host: Option<EnvString>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) redis_port: Option<u16>,
    pub(super) redis_password: Option<SecretValue>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) redis_db: Option<u32>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) ignore_invalid_deployments: Option<bool>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) default_max_parallel_requests: Option<u32>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) default_priority: Option<u8>,
    pub(super) polling_interval: Option<Seconds>,
    pub(super) optional_pre_call_checks: Vec<String>,
    pub(super) deployment_affinity_ttl_seconds: Option<Seconds>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) enable_health_check_routing: Option<bool>,
    pub(super) health_check_staleness_threshold: Option<Seconds>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) health_check_ignore_transient_errors: Option<bool>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) cache_responses: Option<bool>,
    pub(super) caching_groups: Vec<Vec<String>>,
}

/// `router_settings.routing_strategy_args`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawStrategyArgs {
    pub(super) ttl: Option<Seconds>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) lowest_latency_buffer: Option<f64>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) max_latency_list_size: Option<u64>,
}

/// `litellm_settings`: the globals LiteLLM's proxy sets that its router reads.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawLitellmSettings {
    pub(super) model_alias_map: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) num_retries: Option<u32>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) max_fallbacks: Option<u32>,
    pub(super) request_timeout: Option<Seconds>,
    pub(super) fallbacks: Option<FallbackList>,
    pub(super) context_window_fallbacks: Option<FallbackList>,
    pub(super) content_policy_fallbacks: Option<FallbackList>,
    pub(super) default_fallbacks: Option<Vec<String>>,
    pub(super) tag_budget_config: BTreeMap<String, BudgetConfig>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) cache: Option<bool>,
    pub(super) cache_params: Option<RawCacheParams>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) require_auth_for_metrics_endpoint: Option<bool>,
    /// LiteLLM's logging callbacks: `otel` turns on OpenTelemetry traces with LiteLLM's
    /// variables; the others are reported as not implemented.
    pub(super) callbacks: Option<serde_json::Value>,
}

/// LiteLLM proxy's `litellm_settings.cache_params` (the keys ferrolite honours; the rest are
/// reported).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawCacheParams {
    #[serde(rename = "type", deserialize_with = "env_string_opt")]
    pub(super) kind: Option<String>,
    #[serde(deserialize_with = "env_string_opt")]
    pub(super) host: Option<String>,
    #[serde(deserialize_with = "env_opt")]
    pub(super) port: Option<u16>,
    pub(super) password: Option<SecretValue>,
    #[serde(alias = "url")]
    pub(super) redis_url: Option<SecretValue>,
    pub(super) ttl: Option<Seconds>,
    #[serde(default, deserialize_with = "env_string_opt")]
    pub(super) namespace: Option<String>,
    #[serde(default, deserialize_with = "env_string_opt")]
    pub(super) mode: Option<String>,
}

/// `general_settings`: the proxy's master key and health checks.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RawGeneralSettings {
    pub(super) master_key: Option<SecretValue>,
    // LiteLLM's proxy reads its health-check keys here (`router_settings` wins for the three it
    // shares with the Router).
    pub(super) background_health_checks: Option<bool>,
    pub(super) health_check_interval: Option<Seconds>,
    pub(super) enable_health_check_routing: Option<bool>,
    pub(super) health_check_staleness_threshold: Option<Seconds>,
    pub(super) health_check_ignore_transient_errors: Option<bool>,
    /// LiteLLM shares health results through Redis only with this key; ferrolite always
    /// shares them through its state, so the value changes nothing.
    #[allow(dead_code)]
    pub(super) use_shared_health_check: Option<bool>,
}

/// `ferrolite_settings`: ferrolite's own keys (an unknown one is an error).
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawFerroliteSettings {
    pub(super) admission: Option<AdmissionDe>,
    pub(super) window: Option<WindowDe>,
    pub(super) budget_windows: Option<BudgetWindowsDe>,
    pub(super) budget_estimate: Option<BudgetEstimateDe>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) sync_interval_ms: Option<u64>,
    pub(super) failure_mode: Option<FailureModeDe>,
    #[serde(default, deserialize_with = "env_string_opt")]
    pub(super) redis_key_prefix: Option<String>,
    pub(super) request_deadline: Option<Seconds>,
    pub(super) retry_budget: Option<RawRetryBudget>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) half_open: Option<bool>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) deployment_affinity: Option<bool>,
    pub(super) wait_queue: Option<RawWaitQueue>,
    pub(super) lease_ttl: Option<Seconds>,
    pub(super) response_cache: Option<RawResponseCache>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) seed: Option<u64>,
    pub(super) api_keys: Vec<RawApiKey>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) skip_unsupported_deployments: Option<bool>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) litellm_metrics: Option<bool>,
    pub(super) server: RawServer,
    pub(super) otel: RawOtel,
}

/// `ferrolite_settings.otel`: OpenTelemetry traces over OTLP.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawOtel {
    #[serde(deserialize_with = "env_string_opt")]
    pub(super) endpoint: Option<String>,
    #[serde(deserialize_with = "env_string_opt")]
    pub(super) protocol: Option<String>,
    pub(super) headers: BTreeMap<String, SecretValue>,
    #[serde(deserialize_with = "env_string_opt")]
    pub(super) service_name: Option<String>,
    #[serde(deserialize_with = "env_opt")]
    pub(super) sampling_ratio: Option<f64>,
}

/// `ferrolite_settings.server`: the gateway's connection timeouts and limits.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) header_read_timeout: Option<Seconds>,
    pub(super) body_read_timeout: Option<Seconds>,
    pub(super) keep_alive_timeout: Option<Seconds>,
    pub(super) max_connections: Option<usize>,
    pub(super) max_headers: Option<usize>,
}

/// One of `ferrolite_settings.api_keys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApiKey {
    pub(super) name: String,
    pub(super) key: SecretValue,
    #[serde(default)]
    pub(super) models: Vec<String>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) rpm: Option<u64>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) tpm: Option<u64>,
    #[serde(default, deserialize_with = "env_opt", alias = "budget_limit")]
    pub(super) max_budget: Option<f64>,
    #[serde(default, deserialize_with = "env_string_opt", alias = "time_period")]
    pub(super) budget_duration: Option<String>,
    #[serde(default)]
    pub(super) tags: Vec<String>,
    #[serde(default)]
    pub(super) explain: bool,
}

/// `ferrolite_settings.admission`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum AdmissionDe {
    Batched,
    Strict,
    Auto,
}

/// `ferrolite_settings.window`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum WindowDe {
    Sliding,
    Fixed,
}

/// `ferrolite_settings.budget_windows`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum BudgetWindowsDe {
    Rolling,
    Calendar,
}

/// `ferrolite_settings.budget_estimate`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum BudgetEstimateDe {
    Learned,
    WorstCase,
}

/// `ferrolite_settings.failure_mode`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum FailureModeDe {
    FailOpen,
    FailClosed,
}

/// `ferrolite_settings.retry_budget`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawRetryBudget {
    pub(super) window: Option<Seconds>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) min_per_second: Option<u32>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) ratio: Option<f64>,
}

/// `ferrolite_settings.response_cache`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawResponseCache {
    pub(super) ttl: Option<Seconds>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) memory_bytes: Option<u64>,
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) redis: Option<bool>,
    pub(super) ignore_fields: Vec<String>,
}

/// `ferrolite_settings.wait_queue`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawWaitQueue {
    #[serde(default, deserialize_with = "env_opt")]
    pub(super) max_waiting: Option<usize>,
    pub(super) max_wait: Option<Seconds>,
    pub(super) poll_interval: Option<Seconds>,
}

// ---- value shapes ----------------------------------------------------------------------------

/// LiteLLM's `mock_response`: a reply (or an exception's name), or for embeddings a vector.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub(super) enum MockResponseDe {
    Text(String),
    Vector(Vec<f64>),
}

/// `routing_strategy`, by LiteLLM's names.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct StrategyDe(pub(super) StrategyName);

impl<'de> Deserialize<'de> for StrategyDe {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = EnvString::deserialize(deserializer)?.0;
        name.parse::<StrategyName>().map(StrategyDe).map_err(|_| {
            let known: Vec<&str> = StrategyName::all().iter().map(|s| s.as_str()).collect();
            serde::de::Error::custom(format!(
                "unknown routing strategy {name:?}; one of: {}",
                known.join(", ")
            ))
        })
    }
}

/// One item's targets: a name or a list of names.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    /// The names, one or many.
    pub(super) fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        }
    }
}

/// LiteLLM's fallback lists: `[{"gpt-4o": ["gpt-4o-mini", "claude"]}, {"*": ["default"]}]`.
pub(super) type FallbackList = Vec<BTreeMap<String, OneOrMany>>;

/// A `model_group_alias` target: the group, or `{model, hidden}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub(super) enum AliasTarget {
    Group(String),
    Detailed {
        model: String,
        #[serde(default)]
        hidden: bool,
    },
}

/// LiteLLM's `RetryPolicy`, with its field names.
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetryPolicy {
    #[serde(
        rename = "BadRequestErrorRetries",
        default,
        deserialize_with = "env_opt"
    )]
    pub(super) bad_request: Option<u32>,
    #[serde(
        rename = "AuthenticationErrorRetries",
        default,
        deserialize_with = "env_opt"
    )]
    pub(super) authentication: Option<u32>,
    #[serde(rename = "TimeoutErrorRetries", default, deserialize_with = "env_opt")]
    pub(super) timeout: Option<u32>,
    #[serde(
        rename = "RateLimitErrorRetries",
        default,
        deserialize_with = "env_opt"
    )]
    pub(super) rate_limit: Option<u32>,
    #[serde(
        rename = "ContentPolicyViolationErrorRetries",
        default,
        deserialize_with = "env_opt"
    )]
    pub(super) content_policy: Option<u32>,
    #[serde(
        rename = "InternalServerErrorRetries",
        default,
        deserialize_with = "env_opt"
    )]
    pub(super) internal_server: Option<u32>,
    #[serde(
        rename = "ServiceUnavailableErrorRetries",
        default,
        deserialize_with = "env_opt"
    )]
    pub(super) service_unavailable: Option<u32>,
    #[serde(rename = "NotFoundErrorRetries", default, deserialize_with = "env_opt")]
    pub(super) not_found: Option<u32>,
}

impl From<RawRetryPolicy> for RetryPolicy {
    fn from(raw: RawRetryPolicy) -> Self {
        RetryPolicy {
            bad_request: raw.bad_request,
            authentication: raw.authentication,
            timeout: raw.timeout,
            rate_limit: raw.rate_limit,
            content_policy: raw.content_policy,
            internal_server: raw.internal_server,
            service_unavailable: raw.service_unavailable,
            not_found: raw.not_found,
            default: None,
        }
    }
}
