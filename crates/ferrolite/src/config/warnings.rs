//! The keys a configuration holds and ferrolite does not read: each becomes a
//! [`ConfigWarning`], classified against LiteLLM's own keys (accepted and not implemented,
//! ignored by LiteLLM's router too, or unknown).

use super::{ConfigWarning, WarningKind};

/// The keys the parser passed over (`serde_ignored`'s paths, as [`render_ignored`] writes them)
/// as warnings.
pub(super) fn warnings_of(ignored: Vec<String>) -> Vec<ConfigWarning> {
    ignored
        .into_iter()
        // Top-level `x-...` keys hold YAML anchors for the rest of the file (a common
        // convention in LiteLLM configs): used, not ignored.
        .filter(|path| !path.starts_with("x-") || path.contains(['.', '[']))
        .map(|path| ConfigWarning {
            kind: classify(&path),
            path,
        })
        .collect()
}

/// `serde_ignored`'s path as `model_list[0].litellm_params.key`.
pub(super) fn render_ignored(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", render_ignored(parent)),
        Path::Map { parent, key } => {
            let parent = render_ignored(parent);
            if parent.is_empty() {
                key.to_string()
            } else {
                format!("{parent}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => render_ignored(parent),
    }
}

/// Keys LiteLLM reads that ferrolite accepts without acting on, by section.
const LITELLM_KEYS: &[(&str, &[&str])] = &[
    (
        "litellm_params",
        &[
            "itpm",
            "otpm",
            "tpd",
            "rpd",
            "daily_reset_time",
            "timeout_by_service_tier",
            "stream_timeout_by_service_tier",
            "tag_regex",
            "litellm_credential_name",
            "configurable_clientside_auth_params",
            "aws_role_name",
            "drop_params",
            "max_retries",
            "use_in_pass_through",
            "merge_reasoning_content_in_choices",
            "input_cost_per_second",
            "output_cost_per_second",
            "model_info",
            "region",
        ],
    ),
    (
        "model_info",
        &[
            "blocked",
            "team_id",
            "team_public_model_name",
            "enable_tag_filtering",
            "allow_fail_open",
            "tier",
            "access_windows",
            "mode",
            "supports_vision",
            "supports_function_calling",
            "litellm_provider",
            "description",
            "access_groups",
            "db_model",
            "updated_at",
            "created_at",
            "updated_by",
            "created_by",
            "health_check_model",
            "health_check_max_tokens",
            "health_check_params",
        ],
    ),
    (
        "router_settings",
        &[
            "cache_kwargs",
            "client_ttl",
            "set_verbose",
            "debug_level",
            "default_litellm_params",
            "tag_routing_prefix",
            "plugins",
            "routing_groups",
            "alerting_config",
            "router_general_settings",
            "model_group_affinity_config",
            "background_health_check_model_groups",
            "enable_weighted_failover",
            "enable_mid_stream_fallback_continuation",
            "fallback_access_check",
            "fallback_budget_check",
            "auto_router_capability_limit",
            "session_affinity_repin_on_failover",
            "assistants_config",
            "search_tools",
            "guardrail_list",
            "model_group_retry_policy_hidden",
            "health_check_interval",
        ],
    ),
    (
        "litellm_settings",
        &[
            "drop_params",
            "set_verbose",
            "json_logs",
            "callbacks",
            "success_callback",
            "failure_callback",
            "service_callback",
            "turn_off_message_logging",
            "redact_user_api_key_info",
            "max_budget",
            "budget_duration",
            "telemetry",
            "modify_params",
            "enable_preview_features",
            "default_internal_user_params",
            "max_internal_user_budget",
            "internal_user_budget_duration",
            "upperbound_key_generate_params",
            "default_team_settings",
            "mcp_aliases",
            "guardrails",
            "num_retries_per_request",
            "force_ipv4",
            "ssl_verify",
            "disable_end_user_cost_tracking",
            "return_response_headers",
            "enable_json_schema_validation",
        ],
    ),
    (
        "cache_params",
        &[
            "username",
            "ssl",
            "redis_startup_nodes",
            "service_name",
            "sentinel_nodes",
            "supported_call_types",
            "max_connections",
            "s3_bucket_name",
            "s3_region_name",
            "s3_path",
            "disk_cache_dir",
            "similarity_threshold",
            "qdrant_semantic_cache_embedding_model",
            "redis_semantic_cache_embedding_model",
        ],
    ),
    (
        "general_settings",
        &[
            "database_url",
            "database_connection_pool_limit",
            "database_connection_timeout",
            "store_model_in_db",
            "store_prompts_in_spend_logs",
            "alerting",
            "alerting_threshold",
            "alert_types",
            "proxy_batch_write_at",
            "disable_spend_logs",
            "disable_master_key_return",
            "enforce_user_param",
            "allowed_routes",
            "admin_only_routes",
            "public_routes",
            "custom_auth",
            "health_check_details",
            "health_check_concurrency",
            "health_check_skip_disabled_background_models",
            "background_health_check_model_groups",
            "use_redis_transaction_buffer",
            "max_parallel_requests",
            "global_max_parallel_requests",
            "infer_model_from_keys",
            "maximum_spend_logs_retention_period",
            "ui_access_mode",
            "litellm_key_header_name",
            "user_header_name",
            "pass_through_endpoints",
            "disable_reset_budget",
            "proxy_budget_rescheduler_min_time",
            "proxy_budget_rescheduler_max_time",
        ],
    ),
    (
        "",
        &[
            "environment_variables",
            "guardrails",
            "mcp_servers",
            "credential_list",
            "vector_store_registry",
            "search_tools",
            "callback_settings",
            "model_group_settings",
            "files_settings",
            "finetune_settings",
            "assistant_settings",
            "include",
        ],
    ),
];

/// Keys LiteLLM accepts where its Router then ignores them, by section: `litellm_settings`
/// sets module globals (`setattr(litellm, key, value)` in the proxy's `load_config`), and the
/// Router reads only some (`num_retries`, `request_timeout`, `max_fallbacks`, the fallback
/// lists, `allowed_fails`). `cooldown_time` and `disable_cooldowns` are Router arguments only
/// (`cooldown_time or DEFAULT_COOLDOWN_TIME_SECONDS`); `allowed_fails` is read, but
/// `_is_allowed_fails_set_on_router` treats a router value equal to `litellm.allowed_fails` as
/// unset, so the failure-rate rules stay.
const IGNORED_BY_LITELLM: &[(&str, &[&str])] = &[(
    "litellm_settings",
    &["allowed_fails", "cooldown_time", "disable_cooldowns"],
)];

/// Whether LiteLLM knows the key at `path` (its last segment, in its section).
fn classify(path: &str) -> WarningKind {
    let segments: Vec<&str> = path.split('.').collect();
    let Some(key) = segments.last() else {
        return WarningKind::Unknown;
    };
    let key = key.split('[').next().unwrap_or(key);
    let section = if segments.len() == 1 {
        ""
    } else {
        let parent = segments[segments.len() - 2];
        parent.split('[').next().unwrap_or(parent)
    };
    let in_list = |list: &[(&str, &[&str])]| {
        list.iter()
            .any(|(s, keys)| *s == section && keys.contains(&key))
    };
    if in_list(IGNORED_BY_LITELLM) {
        return WarningKind::IgnoredByLitellm;
    }
    if in_list(LITELLM_KEYS) {
        WarningKind::NotImplemented
    } else {
        WarningKind::Unknown
    }
}
