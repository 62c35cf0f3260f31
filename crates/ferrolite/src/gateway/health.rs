//! The operator's endpoints: `GET /health` (each deployment's health check, LiteLLM's shape),
//! `GET /health/liveliness`, `GET /health/readiness`, `GET /metrics` and
//! `GET /provider/budgets`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::auth::Caller;
use super::errors::{GatewayError, outage_retry_after, set_retry_after};
use super::state::Gateway;

/// `GET /health` (master key only): runs every deployment's health check now, as LiteLLM's
/// proxy does, and answers in its shape: `{healthy_endpoints, unhealthy_endpoints,
/// healthy_count, unhealthy_count}`, each endpoint with its `model`, `model_name`, `model_id`,
/// `api_base`, `api_version`, `custom_llm_provider`, `rpm`, `tpm` (and `error` when it
/// failed), never its key. `?model=` keeps one model group's (or one `litellm_params.model`'s)
/// deployments, `?model_id=` one deployment. The results also steer health-check routing.
pub(super) async fn health(
    State(gateway): State<Arc<Gateway>>,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let settings = gateway.settings.load_full();
    match Gateway::caller(&settings, &headers) {
        Err(refused) => return refused.into_response(),
        Ok(Caller::Key(key)) => {
            return GatewayError::NeedsMaster {
                key: key.name.clone(),
                path: "/health",
            }
            .into_response();
        }
        Ok(_) => {}
    }
    let router = gateway.router.load_full();
    let deployments = router.deployments();
    let wanted = |d: &ferrolite_types::Deployment| {
        query
            .get("model")
            .is_none_or(|m| &d.model_name == m || &d.model == m)
            && query.get("model_id").is_none_or(|id| d.id().as_str() == id)
    };
    let results = router.check_health().await;
    let (mut healthy, mut unhealthy) = (Vec::new(), Vec::new());
    for (id, result) in results {
        let Some(deployment) = deployments.iter().find(|d| d.id() == id) else {
            continue;
        };
        if !wanted(deployment) {
            continue;
        }
        let mut endpoint = serde_json::json!({
            "model": deployment.model,
            "model_name": deployment.model_name,
            "model_id": id.as_str(),
        });
        if let Some(object) = endpoint.as_object_mut() {
            let optional: [(&str, Option<serde_json::Value>); 5] = [
                ("api_base", deployment.api_base.clone().map(Into::into)),
                (
                    "api_version",
                    deployment.api_version.clone().map(Into::into),
                ),
                (
                    "custom_llm_provider",
                    deployment.custom_llm_provider.clone().map(Into::into),
                ),
                ("rpm", deployment.rpm.map(Into::into)),
                ("tpm", deployment.tpm.map(Into::into)),
            ];
            for (field, value) in optional {
                if let Some(value) = value {
                    object.insert(field.into(), value);
                }
            }
            if let Err(e) = &result {
                object.insert("error".into(), e.message.clone().into());
            }
        }
        match result {
            Ok(()) => healthy.push(endpoint),
            Err(_) => unhealthy.push(endpoint),
        }
    }
    let (healthy_count, unhealthy_count) = (healthy.len(), unhealthy.len());
    axum::Json(serde_json::json!({
        "healthy_endpoints": healthy,
        "unhealthy_endpoints": unhealthy,
        "healthy_count": healthy_count,
        "unhealthy_count": unhealthy_count,
    }))
    .into_response()
}

/// `GET /metrics`: Prometheus text of the router's and the cache's metrics, with each budget's
/// remaining USD (`ferrolite_budget_remaining_usd{scope, name}`, once per budget, and LiteLLM's
/// `litellm_provider_remaining_budget_metric{api_provider}` for provider budgets) read fresh
/// for the scrape. With `require_auth_for_metrics_endpoint` only the master key's holder may
/// read it (LiteLLM's `PrometheusAuthMiddleware`): 401 otherwise.
pub(super) async fn metrics_text(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
) -> Response {
    let settings = gateway.settings.load_full();
    if settings.require_auth_for_metrics {
        if let Err(refused) = metrics_caller(&settings, &headers) {
            return refused.into_response();
        }
    }
    match &settings.metrics {
        Some(handle) => {
            let router = gateway.router.load_full();
            // Reading the budgets sets each one's `ferrolite_budget_remaining_usd{scope, name}`
            // gauge; setting it here too, under other labels, showed every budget twice.
            match router.budget_status().await {
                Ok(status) if settings.litellm_metrics => {
                    for scope in status {
                        if let ferrolite_budgets::Scope::Provider(provider) = &scope.scope {
                            metrics::gauge!(
                                ferrolite_router::litellm::names::PROVIDER_REMAINING_BUDGET,
                                "api_provider" => provider.clone()
                            )
                            .set(scope.remaining);
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(error = %e, "budgets not read for /metrics"),
            }
            if let Some((entries, bytes)) = router.response_cache_usage() {
                metrics::gauge!("ferrolite_response_cache_entries").set(entries as f64);
                metrics::gauge!("ferrolite_response_cache_bytes").set(bytes as f64);
            }
            handle.run_upkeep();
            (
                [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                handle.render(),
            )
                .into_response()
        }
        None => GatewayError::NoMetrics.into_response(),
    }
}

/// Who may read `/metrics` when it needs a key: the master key's holder (a gateway without a
/// master key has none to ask for, and stays open).
fn metrics_caller(
    settings: &super::state::GatewaySettings,
    headers: &HeaderMap,
) -> Result<(), GatewayError> {
    if settings.master_key.is_none() {
        return Ok(());
    }
    match Gateway::caller(settings, headers)? {
        Caller::Key(key) => Err(GatewayError::NeedsMaster {
            key: key.name.clone(),
            path: "/metrics",
        }),
        _ => Ok(()),
    }
}

/// `GET /provider/budgets`: every budget's spend, limit and reset time, by kind and name (as
/// LiteLLM's endpoint, with tag and deployment budgets beside the providers').
pub(super) async fn provider_budgets(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
) -> Response {
    if let Err(refused) = Gateway::caller(&gateway.settings.load_full(), &headers) {
        return refused.into_response();
    }
    let router = gateway.router.load_full();
    let status = match router.budget_status().await {
        Ok(status) => status,
        Err(e) => return GatewayError::Router(e).into_response(),
    };
    let mut by_kind: serde_json::Map<String, serde_json::Value> = serde_json::Map::new();
    for scope in status {
        let kind = format!("{}s", scope.scope.kind());
        let name = match &scope.scope {
            ferrolite_budgets::Scope::Provider(n)
            | ferrolite_budgets::Scope::Deployment(n)
            | ferrolite_budgets::Scope::Tag(n) => n.clone(),
        };
        let entry = serde_json::json!({
            "spend": scope.spend,
            "budget_limit": scope.limit,
            "remaining": scope.remaining,
            "window_start_ms": scope.window_start_ms,
            "budget_reset_at_ms": scope.resets_at_ms,
        });
        by_kind
            .entry(kind)
            .or_insert_with(|| serde_json::json!({}))
            .as_object_mut()
            .map(|m| m.insert(name, entry));
    }
    axum::Json(serde_json::Value::Object(by_kind)).into_response()
}

/// `GET /health/liveliness`: the process answers.
pub(super) async fn liveliness() -> &'static str {
    "I'm alive!"
}

/// `GET /health/readiness`: whether a load balancer should send calls here. 503 (`unhealthy`,
/// with `Retry-After`) only when this gateway cannot serve: its Redis is down and it fails
/// closed. A fail-open gateway whose Redis is down still serves from its local view: 200,
/// `degraded`. Otherwise 200, `healthy`.
pub(super) async fn readiness(State(gateway): State<Arc<Gateway>>) -> Response {
    let router = gateway.router.load_full();
    let cache = router.cache();
    let stats = cache.stats();
    let redis_down = cache.shared().is_configured() && stats.redis_down;
    let (status, state) = match (redis_down, cache.shared().is_fail_open()) {
        (false, _) => (StatusCode::OK, "healthy"),
        (true, true) => (StatusCode::OK, "degraded"),
        (true, false) => (StatusCode::SERVICE_UNAVAILABLE, "unhealthy"),
    };
    let body = serde_json::json!({
        "status": state,
        "cache": if cache.shared().is_configured() { "redis" } else { "memory" },
        "redis_down": stats.redis_down,
        "redis_outages": stats.redis_outages,
        "model_groups": router.model_groups().len(),
    });
    let mut response = (status, axum::Json(body)).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        set_retry_after(&mut response, outage_retry_after());
    }
    response
}
