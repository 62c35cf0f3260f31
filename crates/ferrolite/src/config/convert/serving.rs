//! What `ferrolite serve` reads besides the router: the gateway's connection settings
//! (`ferrolite_settings.server`), its API keys (`ferrolite_settings.api_keys`) and the
//! background health checks (`general_settings`).

use std::collections::BTreeMap;

use ferrolite_budgets::BudgetConfig;
use ferrolite_router::RouterSettings;
use ferrolite_types::Deployment;

use super::budgets::check_budget;
use crate::config::raw::{RawApiKey, RawGeneralSettings, RawOtel, RawServer};
use crate::config::{
    ApiKey, ConfigError, ConfigWarning, HealthChecks, OtelConfig, OtelProtocol, WarningKind,
};

/// `ferrolite_settings.otel`, and LiteLLM's `litellm_settings.callbacks`: `otel` among them
/// reads LiteLLM's variables too; any other callback is reported as not implemented.
pub(super) fn otel_of(
    raw: &RawOtel,
    callbacks: Option<&serde_json::Value>,
    warnings: &mut Vec<ConfigWarning>,
) -> Result<OtelConfig, ConfigError> {
    let path = |field: &str| format!("ferrolite_settings.otel.{field}");
    let protocol = match raw.protocol.as_deref() {
        None => None,
        Some(name) => Some(OtelProtocol::parse(name).ok_or_else(|| {
            ConfigError::at(
                path("protocol"),
                format!("expected `http/protobuf` or `grpc`, got `{name}`"),
            )
        })?),
    };
    if let Some(ratio) = raw.sampling_ratio {
        if !(0.0..=1.0).contains(&ratio) {
            return Err(ConfigError::at(
                path("sampling_ratio"),
                format!("expected a number from 0 to 1, got {ratio}"),
            ));
        }
    }
    if let Some(endpoint) = &raw.endpoint {
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(ConfigError::at(
                path("endpoint"),
                "expected an http:// or https:// URL",
            ));
        }
    }
    for name in raw.headers.keys() {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            return Err(ConfigError::at(
                path("headers"),
                format!("`{name}` is not a header name"),
            ));
        }
    }
    let names: Vec<&str> = match callbacks {
        Some(serde_json::Value::String(one)) => one.split(',').map(str::trim).collect(),
        Some(serde_json::Value::Array(list)) => {
            list.iter().filter_map(serde_json::Value::as_str).collect()
        }
        _ => Vec::new(),
    };
    let litellm_callback = names.iter().any(|n| n.eq_ignore_ascii_case("otel"));
    let others = match callbacks {
        Some(serde_json::Value::Array(list)) => list.len() > usize::from(litellm_callback),
        Some(serde_json::Value::String(_)) => names.len() > usize::from(litellm_callback),
        Some(serde_json::Value::Null) | None => false,
        Some(_) => true,
    };
    if others {
        warnings.push(ConfigWarning {
            path: "litellm_settings.callbacks".to_string(),
            kind: WarningKind::NotImplemented,
        });
    }
    Ok(OtelConfig {
        endpoint: raw.endpoint.clone(),
        protocol,
        headers: raw
            .headers
            .iter()
            .map(|(name, value)| (name.clone(), value.0.clone()))
            .collect(),
        service_name: raw.service_name.clone(),
        sampling_ratio: raw.sampling_ratio,
        litellm_callback,
    })
}

/// `ferrolite_settings.server`: timeouts above 0, limits of at least 1 (`max_headers` at most
/// 4096).
pub(super) fn server_of(raw: &RawServer) -> Result<crate::server::ServerSettings, ConfigError> {
    let mut server = crate::server::ServerSettings::default();
    let timeouts = [
        (
            "header_read_timeout",
            raw.header_read_timeout,
            &mut server.header_read_timeout,
        ),
        (
            "body_read_timeout",
            raw.body_read_timeout,
            &mut server.body_read_timeout,
        ),
        (
            "keep_alive_timeout",
            raw.keep_alive_timeout,
            &mut server.keep_alive_timeout,
        ),
    ];
    for (field, value, slot) in timeouts {
        if let Some(value) = value {
            if value.0 <= 0.0 || value.0 > 86_400.0 {
                return Err(ConfigError::at(
                    format!("ferrolite_settings.server.{field}"),
                    format!(
                        "expected a number of seconds above 0, at most 86400, got {}",
                        value.0
                    ),
                ));
            }
            *slot = value.duration();
        }
    }
    if let Some(n) = raw.max_connections {
        if n == 0 {
            return Err(ConfigError::at(
                "ferrolite_settings.server.max_connections",
                "expected at least 1 connection, got 0",
            ));
        }
        server.max_connections = n;
    }
    if let Some(n) = raw.max_headers {
        if !(1..=4096).contains(&n) {
            return Err(ConfigError::at(
                "ferrolite_settings.server.max_headers",
                format!("expected from 1 to 4096 header fields, got {n}"),
            ));
        }
        server.max_headers = n;
    }
    Ok(server)
}

/// The health-check keys of `general_settings`: the background checks, and the routing keys
/// LiteLLM's proxy also reads there (where `router_settings` does not set them; `router_says`
/// tells which it set).
pub(super) fn health_checks_of(
    gs: &RawGeneralSettings,
    router_says: (bool, bool, bool),
    settings: &mut RouterSettings,
    checks: &mut HealthChecks,
) -> Result<(), ConfigError> {
    let (routing, staleness, transient) = router_says;
    if let (false, Some(on)) = (routing, gs.enable_health_check_routing) {
        settings.enable_health_check_routing = on;
    }
    if let (false, Some(t)) = (staleness, gs.health_check_staleness_threshold) {
        settings.health_check_staleness = t.duration();
    }
    if let (false, Some(on)) = (transient, gs.health_check_ignore_transient_errors) {
        settings.health_check_ignore_transient_errors = on;
    }
    checks.background = gs
        .background_health_checks
        .unwrap_or(settings.enable_health_check_routing);
    if let Some(interval) = gs.health_check_interval {
        if interval.0 <= 0.0 {
            return Err(ConfigError::at(
                "general_settings.health_check_interval",
                "expected a number of seconds above 0, got 0",
            ));
        }
        checks.interval = interval.duration();
    }
    Ok(())
}

/// The gateway's API keys, and the tag budgets of those that have one.
pub(super) fn api_keys_of(
    raw: &[RawApiKey],
    deployments: &[Deployment],
) -> Result<(Vec<ApiKey>, BTreeMap<String, BudgetConfig>), ConfigError> {
    let mut keys = Vec::with_capacity(raw.len());
    let mut budgets = BTreeMap::new();
    for (i, key) in raw.iter().enumerate() {
        let at = |field: &str| format!("ferrolite_settings.api_keys[{i}].{field}");
        if key.name.trim().is_empty() {
            return Err(ConfigError::at(at("name"), "required: a name for the key"));
        }
        if key.key.0.expose().len() < 8 {
            return Err(ConfigError::at(at("key"), "expected at least 8 characters"));
        }
        if keys.iter().any(|k: &ApiKey| k.name == key.name) {
            return Err(ConfigError::at(
                at("name"),
                format!("a second key named {:?}", key.name),
            ));
        }
        for model in &key.models {
            if !deployments.iter().any(|d| &d.model_name == model) {
                return Err(ConfigError::at(
                    at("models"),
                    format!("names no model group, got {model:?}"),
                ));
            }
        }
        if key.tags.iter().any(|t| t.trim().is_empty()) {
            return Err(ConfigError::at(at("tags"), "expected non-empty tags"));
        }
        let entry = ApiKey {
            name: key.name.clone(),
            key_sha256: ApiKey::hash(key.key.0.expose()),
            models: key.models.clone(),
            rpm: key.rpm,
            tpm: key.tpm,
            budget: key.max_budget.is_some(),
            tags: key.tags.clone(),
            explain: key.explain,
        };
        if keys
            .iter()
            .any(|k: &ApiKey| k.key_sha256 == entry.key_sha256)
        {
            return Err(ConfigError::at(
                at("key"),
                "the same key as an earlier entry",
            ));
        }
        if key.max_budget.is_some() || key.budget_duration.is_some() {
            let budget = BudgetConfig {
                max_budget: key.max_budget,
                budget_duration: key.budget_duration.clone(),
            };
            check_budget(&format!("ferrolite_settings.api_keys[{i}]"), &budget)?;
            budgets.insert(entry.budget_tag(), budget);
        }
        keys.push(entry);
    }
    Ok((keys, budgets))
}
