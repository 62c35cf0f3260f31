//! The OpenAI-compatible gateway (feature `gateway`): `ferrolite serve`'s HTTP server over a
//! [`Router`]. Any OpenAI SDK pointed at it gets routing, retries, fallbacks and limits:
//!
//! - `POST /v1/chat/completions`, `/v1/completions`, `/v1/embeddings` (and the same paths
//!   without `/v1`, as LiteLLM's proxy accepts): the body's `model` is the model group; the
//!   answer is the deployment's body with `model` set back to what the client asked for, and
//!   LiteLLM's `x-litellm-*` headers. `"stream": true` answers with server-sent events, passed
//!   through chunk by chunk as they arrive and ended by `data: [DONE]`; a client that goes away
//!   cancels the upstream call and gives back everything the call held.
//!   The chat endpoint needs a `messages` list, completions a `prompt`, embeddings an `input`:
//!   without it the answer is a 400 naming the field, before any routing.
//! - Request tags are read where LiteLLM's proxy reads them (the body's `tags`,
//!   `metadata.tags`, `litellm_metadata.tags`, the `x-litellm-tags` header, the API key's
//!   `tags`) and given to the router (tag routing, tag budgets); the caller's API key, hashed,
//!   is the router's affinity key (`deployment_affinity`).
//! - A stream carries usage only when the client asked for it with
//!   `stream_options.include_usage`, as OpenAI sends it: `"usage": null` on every chunk and a
//!   last chunk with empty `choices` and the usage.
//! - `GET /v1/models` (the model groups and the `model_group_alias` names not `hidden`),
//!   `GET /v1/models/{id}`, `GET /health` (each deployment's health check, LiteLLM's shape),
//!   `GET /health/liveliness`, `GET /health/readiness`.
//! - Errors in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, with the
//!   status a client expects: 400 for a bad body or an unknown group (listing the groups), 401
//!   without the master key, 413 for a body over the limit, 429 with `Retry-After` when nothing
//!   has capacity, 503 with `Retry-After` for every caller while a fail-closed gateway's Redis
//!   is down, the mapped status of an upstream failure.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ferrolite_router::{Request, Router, RouterError, RouterStream};
use ferrolite_types::{Secret, Usage};
use futures_util::StreamExt;

/// How the gateway serves.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// `general_settings.master_key`: when set, every API call needs `Authorization: Bearer
    /// <master_key>`.
    pub master_key: Option<Secret>,
    /// Bodies larger than this are refused with 413 (default 8 MiB).
    pub max_body_bytes: usize,
    /// API keys besides the master key (`ferrolite_settings.api_keys`), each with its groups,
    /// limits and budget.
    pub api_keys: Vec<crate::config::ApiKey>,
    /// The Prometheus recorder `/metrics` renders ([`install_metrics`]); without one `/metrics`
    /// answers 503.
    pub metrics: Option<PrometheusHandle>,
    /// Names `/v1/models` does not list: the `model_group_alias` entries marked `hidden`.
    pub hidden_models: Vec<String>,
}

pub use metrics_exporter_prometheus::PrometheusHandle;

/// Installs the process-wide Prometheus recorder the router's and the cache's metrics
/// (`ferrolite_router_*`, `ferrolite_cache_*`) go to; its handle renders `/metrics`. Once per
/// process: a second call fails.
pub fn install_metrics() -> Result<PrometheusHandle, String> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))
}

impl Default for GatewaySettings {
    fn default() -> Self {
        GatewaySettings {
            master_key: None,
            max_body_bytes: 8 << 20,
            api_keys: Vec::new(),
            metrics: None,
            hidden_models: Vec::new(),
        }
    }
}

struct Gateway {
    router: arc_swap::ArcSwap<Router>,
    settings: arc_swap::ArcSwap<GatewaySettings>,
    /// Request ids: this gateway's prefix and a counter.
    id_prefix: String,
    requests: std::sync::atomic::AtomicU64,
}

impl Gateway {
    /// The request's id: the caller's `x-request-id`, else one of this gateway's.
    fn request_id(&self, headers: &HeaderMap) -> String {
        headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128)
            .map_or_else(
                || {
                    let n = self
                        .requests
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                        + 1;
                    format!("{}-{n}", self.id_prefix)
                },
                str::to_string,
            )
    }
}

/// Swaps the router a running gateway serves (hot reload): calls in flight finish on the
/// router they started with; new calls take the new one.
#[derive(Clone)]
pub struct GatewayHandle {
    gateway: Arc<Gateway>,
}

impl std::fmt::Debug for GatewayHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayHandle").finish_non_exhaustive()
    }
}

impl GatewayHandle {
    /// Serves `router` from now on.
    pub fn reload(&self, router: Router) {
        self.gateway.router.store(Arc::new(router));
    }

    /// Serves `router` with `settings` (master key, API keys, body limit, metrics) from now on.
    pub fn reload_with(&self, router: Router, settings: GatewaySettings) {
        self.gateway.settings.store(Arc::new(settings));
        self.gateway.router.store(Arc::new(router));
    }

    /// The router served now.
    pub fn router(&self) -> Arc<Router> {
        self.gateway.router.load_full()
    }
}

/// The gateway's routes over `router`.
pub fn app(router: Router, settings: GatewaySettings) -> axum::Router {
    app_with_handle(router, settings).0
}

/// The gateway's routes over `router`, and the handle that swaps the router (hot reload).
pub fn app_with_handle(router: Router, settings: GatewaySettings) -> (axum::Router, GatewayHandle) {
    let state = Arc::new(Gateway {
        router: arc_swap::ArcSwap::from_pointee(router),
        settings: arc_swap::ArcSwap::from_pointee(settings),
        id_prefix: format!("ferrolite-{}", std::process::id()),
        requests: std::sync::atomic::AtomicU64::new(0),
    });
    let handle = GatewayHandle {
        gateway: Arc::clone(&state),
    };
    let app = axum::Router::new()
        .route("/v1/chat/completions", post(completions))
        .route("/chat/completions", post(completions))
        .route("/v1/completions", post(completions))
        .route("/completions", post(completions))
        .route("/v1/embeddings", post(completions))
        .route("/embeddings", post(completions))
        .route("/v1/models", get(models))
        .route("/models", get(models))
        .route("/v1/models/{*id}", get(model))
        .route("/models/{*id}", get(model))
        .route("/health", get(health))
        .route("/health/liveliness", get(liveliness))
        .route("/health/readiness", get(readiness))
        .route("/metrics", get(metrics_text))
        .route("/provider/budgets", get(provider_budgets))
        .with_state(state);
    (app, handle)
}

/// Serves `app` on `listener` with the default [`ServerSettings`] until `shutdown` completes,
/// then lets the calls in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, app, ServerSettings::default(), shutdown).await
}

/// Serves `app` on `listener` with `settings` (timeouts, connection cap, header limit: see
/// [`crate::server`]) until `shutdown` completes, then lets the calls in flight finish.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    settings: ServerSettings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    crate::server::serve(listener, app, settings, shutdown).await
}

pub use crate::server::ServerSettings;

/// An error in OpenAI's shape.
fn error(status: StatusCode, message: &str, kind: &str, param: Option<&str>) -> Response {
    let body = serde_json::json!({
        "error": {
            "message": message,
            "type": kind,
            "param": param,
            "code": status.as_u16().to_string(),
        }
    });
    (status, axum::Json(body)).into_response()
}

/// The shared state's outage behind a router error, if it is one: Redis unreachable while the
/// cache fails closed, however deep the router found it (admission, budgets, state).
fn state_outage(e: &RouterError) -> Option<&ferrolite_cache::CacheError> {
    use ferrolite_cache::CacheError;
    let cache = match e {
        RouterError::Cache(cache)
        | RouterError::Budget(ferrolite_budgets::BudgetError::Cache(cache))
        | RouterError::Strategy(ferrolite_strategies::StrategyError::Cache(cache)) => cache,
        _ => return None,
    };
    matches!(cache, CacheError::Unavailable { .. }).then_some(cache)
}

/// The refusal of a call this gateway cannot serve while its shared state (Redis) is down and
/// it fails closed: the same for every caller, 503 in OpenAI's shape with `Retry-After` of the
/// longest wait between two reconnection attempts (`RECONNECT_MAX_DELAY`, at least 1 s), the
/// time after Redis is back within which the gateway serves again.
fn state_unavailable(e: &ferrolite_cache::CacheError) -> Response {
    let mut response = error(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("the shared state is unavailable, retry later: {e}"),
        "api_error",
        None,
    );
    retry_after_outage(&mut response);
    response
}

/// Sets `Retry-After` to the wait after a shared-state outage: the longest wait between two
/// reconnection attempts (`RECONNECT_MAX_DELAY`), in whole seconds, at least 1.
fn retry_after_outage(response: &mut Response) {
    let seconds = ferrolite_cache::RECONNECT_MAX_DELAY
        .as_secs_f64()
        .ceil()
        .max(1.0);
    if let Ok(value) = HeaderValue::from_str(&format!("{seconds:.0}")) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
}

/// A router error as the client sees it, with `Retry-After` on 429s and on the 503 of a
/// shared-state outage.
fn router_error(e: &RouterError) -> Response {
    if let Some(outage) = state_outage(e) {
        return state_unavailable(outage);
    }
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let kind = match status.as_u16() {
        400 | 404 | 413 | 422 => "invalid_request_error",
        401 | 403 => "auth_error",
        429 => "rate_limit_error",
        408 => "timeout",
        _ => "api_error",
    };
    let param = match e {
        RouterError::UnknownModel { .. } => Some("model"),
        RouterError::InvalidRequest { field, .. } => Some(*field),
        _ => None,
    };
    let mut response = error(status, &e.to_string(), kind, param);
    if status == StatusCode::TOO_MANY_REQUESTS {
        let seconds = match e {
            RouterError::AllCooledDown { retry_in, .. } => retry_in.as_secs_f64().ceil().max(1.0),
            RouterError::Backend {
                class:
                    ferrolite_types::ErrorClass::RateLimited {
                        retry_after: Some(after),
                    },
                ..
            } => after.as_secs_f64().ceil().max(1.0),
            _ => 1.0,
        };
        if let Ok(value) = HeaderValue::from_str(&format!("{seconds:.0}")) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
    }
    response
}

impl Gateway {
    /// Who calls: the master key's holder, one of the API keys, or anyone when neither is
    /// configured; `Err` with the 401 otherwise.
    fn caller(&self, headers: &HeaderMap) -> Result<Caller, Box<Response>> {
        let settings = self.settings.load();
        if settings.master_key.is_none() && settings.api_keys.is_empty() {
            return Ok(Caller::Anyone);
        }
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .or_else(|| headers.get("api-key").and_then(|v| v.to_str().ok()));
        let Some(given) = given.filter(|g| !g.is_empty()) else {
            return Err(Box::new(error(
                StatusCode::UNAUTHORIZED,
                "Authentication Error, no API key passed in: send Authorization: Bearer <key>",
                "auth_error",
                None,
            )));
        };
        if let Some(master) = &settings.master_key {
            if constant_time_eq(given.as_bytes(), master.expose().as_bytes()) {
                return Ok(Caller::Master);
            }
        }
        let hash = crate::config::ApiKey::hash(given);
        match settings
            .api_keys
            .iter()
            .find(|k| constant_time_eq(&k.key_sha256, &hash))
        {
            Some(key) => Ok(Caller::Key(Box::new(key.clone()))),
            None => Err(Box::new(error(
                StatusCode::UNAUTHORIZED,
                "Authentication Error, invalid API key",
                "auth_error",
                None,
            ))),
        }
    }

    /// The 401 of a call that may not call, if it is one.
    fn refusal(&self, headers: &HeaderMap) -> Option<Response> {
        self.caller(headers).err().map(|e| *e)
    }

    /// Checks an API key's groups and limits for a call of `model`: 403 outside its groups,
    /// 429 over its rpm or tpm (counted in the shared state, so every gateway instance agrees).
    async fn admit_key(
        &self,
        router: &Router,
        key: &crate::config::ApiKey,
        model: &str,
        tokens: u64,
    ) -> Result<Option<KeyAdmission>, Response> {
        if !key.models.is_empty() && !key.models.iter().any(|m| m == model) {
            return Err(error(
                StatusCode::FORBIDDEN,
                &format!(
                    "API key `{}` may not call model group `{model}`; it may call: {}",
                    key.name,
                    key.models.join(", ")
                ),
                "permission_error",
                Some("model"),
            ));
        }
        let mut checks = Vec::with_capacity(2);
        let tag = format!("api-key:{}", key.name);
        for (metric, limit, delta) in [("rpm", key.rpm, 1), ("tpm", key.tpm, tokens)] {
            if let Some(limit) = limit {
                checks.push(ferrolite_cache::LimitCheck {
                    key: ferrolite_cache::hash_tagged(&tag, &format!(":{metric}")),
                    // More than the limit is refused whatever the count: a huge estimate is
                    // held as limit + 1, so it never reaches the counters' range.
                    delta: delta.min(limit.saturating_add(1)),
                    limit,
                    window: ferrolite_cache::Window::MINUTE_SLIDING,
                });
            }
        }
        if checks.is_empty() {
            return Ok(None);
        }
        let tpm = checks.iter().position(|c| c.key.ends_with(":tpm"));
        match router.cache().admission().admit(&checks).await {
            Ok(admission) if admission.admitted => Ok(Some(KeyAdmission {
                admission,
                tpm,
                estimate: tokens,
            })),
            Ok(admission) => {
                let over = checks
                    .iter()
                    .zip(&admission.counts)
                    .find(|(c, count)| **count + c.delta as f64 > c.limit as f64)
                    .map_or("rpm", |(c, _)| {
                        if c.key.ends_with(":tpm") {
                            "tpm"
                        } else {
                            "rpm"
                        }
                    });
                let mut response = error(
                    StatusCode::TOO_MANY_REQUESTS,
                    &format!("API key `{}` is over its {over} limit", key.name),
                    "rate_limit_error",
                    None,
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                Err(response)
            }
            Err(e @ ferrolite_cache::CacheError::Unavailable { .. }) => Err(state_unavailable(&e)),
            Err(e) => Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("the shared state is unavailable: {e}"),
                "api_error",
                None,
            )),
        }
    }
}

/// Who is calling.
enum Caller {
    /// No key is configured: anyone may call.
    Anyone,
    /// The master key's holder.
    Master,
    /// One of the API keys.
    Key(Box<crate::config::ApiKey>),
}

impl Caller {
    /// The identity `deployment_affinity` keys on, as LiteLLM's `user_api_key_hash`: the
    /// SHA-256 (hex) of the caller's key; none when no key is configured. An API key's hash
    /// is the one kept at load; the master key's is computed only here, for a router that
    /// uses affinity.
    fn affinity_key(&self, master: Option<&Secret>) -> Option<String> {
        use std::fmt::Write;
        let hash = match self {
            Caller::Anyone => return None,
            Caller::Master => crate::config::ApiKey::hash(master?.expose()),
            Caller::Key(key) => key.key_sha256,
        };
        let mut hex = String::with_capacity(64);
        for byte in hash {
            let _ = write!(hex, "{byte:02x}");
        }
        Some(hex)
    }
}

/// An API key's admission: its tpm holds the request's estimate until the call's actual token
/// count is known ([`KeyAdmission::settle`]).
struct KeyAdmission {
    admission: ferrolite_cache::Admission,
    /// The tpm check's place among the admission's counters, when the key has a tpm.
    tpm: Option<usize>,
    estimate: u64,
}

impl KeyAdmission {
    /// Replaces the tpm estimate with `actual` tokens (`None`: unknown, the estimate stays).
    fn settle(self, actual: Option<u64>) {
        let (Some(tpm), Some(actual)) = (self.tpm, actual) else {
            return;
        };
        let delta = i64::try_from(actual)
            .unwrap_or(i64::MAX)
            .saturating_sub(i64::try_from(self.estimate).unwrap_or(i64::MAX));
        if delta == 0 {
            return;
        }
        if let Some(counter) = self.admission.counters().nth(tpm) {
            if let Err(e) = counter.increment(delta) {
                tracing::warn!(error = %e, "could not settle an API key's tokens");
            }
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What the answer headers say about a routed call.
struct Answered<'a> {
    deployment: &'a str,
    group: &'a str,
    retries: u32,
    max_retries: Option<u32>,
    fallbacks: u32,
    api_base: Option<&'a str>,
    cost: Option<f64>,
    overhead: Duration,
    cache_key: Option<&'a str>,
    cache_hit: bool,
}

impl<'a> From<&'a ferrolite_router::RouterResponse> for Answered<'a> {
    fn from(answer: &'a ferrolite_router::RouterResponse) -> Self {
        Answered {
            deployment: answer.deployment_id.as_str(),
            group: &answer.model_group,
            retries: answer.attempted_retries,
            max_retries: answer.max_retries,
            fallbacks: answer.attempted_fallbacks,
            api_base: answer.api_base.as_deref(),
            cost: answer.response_cost,
            overhead: answer.overhead,
            cache_key: answer.cache_key.as_deref(),
            cache_hit: answer.cache_hit,
        }
    }
}

impl<'a> From<&'a RouterStream> for Answered<'a> {
    fn from(stream: &'a RouterStream) -> Self {
        Answered {
            deployment: stream.deployment_id.as_str(),
            group: &stream.model_group,
            retries: stream.attempted_retries,
            max_retries: stream.max_retries,
            fallbacks: stream.attempted_fallbacks,
            api_base: stream.api_base.as_deref(),
            // A stream's cost is known at its end; a replayed one costs nothing.
            cost: stream.cache_hit.then_some(0.0),
            overhead: stream.overhead,
            cache_key: stream.cache_key.as_deref(),
            cache_hit: stream.cache_hit,
        }
    }
}

/// The headers LiteLLM's proxy sets on an answer, plus ferrolite's overhead and cache-hit
/// headers.
fn litellm_headers(headers: &mut HeaderMap, answered: Answered<'_>) {
    let mut set = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    set("x-litellm-model-id", answered.deployment.to_string());
    set("x-litellm-model-group", answered.group.to_string());
    set("x-litellm-attempted-retries", answered.retries.to_string());
    if let Some(max) = answered.max_retries {
        set("x-litellm-max-retries", max.to_string());
    }
    if let Some(base) = answered.api_base {
        set("x-litellm-model-api-base", base.to_string());
    }
    set(
        "x-litellm-attempted-fallbacks",
        answered.fallbacks.to_string(),
    );
    if let Some(cost) = answered.cost {
        set("x-litellm-response-cost", format!("{cost}"));
    }
    if let Some(key) = answered.cache_key {
        set("x-litellm-cache-key", key.to_string());
        set("x-ferrolite-cache-hit", answered.cache_hit.to_string());
    }
    set(
        "x-ferrolite-overhead-ms",
        format!("{:.3}", answered.overhead.as_secs_f64() * 1e3),
    );
}

/// `Cache-Control: no-cache` / `no-store` on the request, as the body's `cache` controls
/// (LiteLLM's names); a `cache` value that is not an object is left for the router to refuse.
fn cache_control(headers: &HeaderMap, body: &mut serde_json::Value) {
    let Some(value) = headers
        .get(header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
    else {
        return;
    };
    let directives: Vec<String> = value
        .split(',')
        .map(|d| d.trim().to_ascii_lowercase())
        .filter(|d| d == "no-cache" || d == "no-store")
        .collect();
    if directives.is_empty() {
        return;
    }
    let Some(object) = body.as_object_mut() else {
        return;
    };
    let cache = object
        .entry("cache")
        .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
    if let Some(cache) = cache.as_object_mut() {
        for directive in directives {
            cache.insert(directive, serde_json::Value::Bool(true));
        }
    }
}

/// Chat completions, completions and embeddings: one handler, the body says which. Each call
/// runs in a `request` span carrying its id, which the answer echoes in `x-request-id` and the
/// HTTP backend sends to the upstream.
async fn completions(
    State(gateway): State<Arc<Gateway>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    use tracing::Instrument;
    let id = gateway.request_id(&headers);
    let span = tracing::info_span!("request", id = %id);
    let started = std::time::Instant::now();
    let endpoint = Endpoint::of(uri.path());
    let mut response = handle(gateway, endpoint, headers, body, &id)
        .instrument(span.clone())
        .await;
    metrics::counter!(
        "ferrolite_gateway_requests_total",
        "status" => response.status().as_u16().to_string()
    )
    .increment(1);
    metrics::histogram!("ferrolite_gateway_request_seconds")
        .record(started.elapsed().as_secs_f64());
    span.in_scope(|| {
        tracing::info!(
            status = response.status().as_u16(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "answered"
        );
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        // LiteLLM's `x-litellm-call-id`: the one id of the request, as in its log lines.
        response
            .headers_mut()
            .insert("x-litellm-call-id", value.clone());
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// Which OpenAI endpoint a call came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Chat,
    Completions,
    Embeddings,
}

impl Endpoint {
    fn of(path: &str) -> Self {
        if path.ends_with("chat/completions") {
            Endpoint::Chat
        } else if path.ends_with("embeddings") {
            Endpoint::Embeddings
        } else {
            Endpoint::Completions
        }
    }

    /// The 400 of a body without the input this endpoint needs (`messages` a list, `prompt`,
    /// `input`), if it is one.
    fn missing_input(self, body: &serde_json::Value) -> Option<Response> {
        let (field, valid, expected) = match self {
            Endpoint::Chat => (
                "messages",
                body.get("messages").is_some_and(|m| m.is_array()),
                "a list of messages",
            ),
            Endpoint::Completions => (
                "prompt",
                body.get("prompt")
                    .is_some_and(|p| p.is_string() || p.is_array()),
                "a string or a list",
            ),
            Endpoint::Embeddings => (
                "input",
                body.get("input")
                    .is_some_and(|i| i.is_string() || i.is_array()),
                "a string or a list",
            ),
        };
        if valid {
            return None;
        }
        let message = match body.get(field) {
            None | Some(serde_json::Value::Null) => format!("`{field}` is required: {expected}"),
            Some(other) => format!("`{field}` must be {expected}, got {other}"),
        };
        Some(error(
            StatusCode::BAD_REQUEST,
            &message,
            "invalid_request_error",
            Some(field),
        ))
    }
}

/// The request's tags, where LiteLLM's proxy reads them: the API key's `tags`, the
/// `x-litellm-tags` header (comma-separated), the body's `tags`, `metadata.tags` and
/// `litellm_metadata.tags` (lists of strings; other shapes carry no tags), without repeats.
/// The body's tags are removed from it: they are for the router, not the deployment.
fn request_tags(
    headers: &HeaderMap,
    body: &mut serde_json::Value,
    key: Option<&crate::config::ApiKey>,
) -> Vec<String> {
    let mut tags: Vec<String> = key.map(|k| k.tags.clone()).unwrap_or_default();
    for value in headers.get_all("x-litellm-tags") {
        if let Ok(value) = value.to_str() {
            tags.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_string),
            );
        }
    }
    let strings = |value: Option<serde_json::Value>| -> Vec<String> {
        match value {
            Some(serde_json::Value::Array(items)) => items
                .into_iter()
                .filter_map(|item| match item {
                    serde_json::Value::String(tag) if !tag.trim().is_empty() => Some(tag),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    };
    if let Some(object) = body.as_object_mut() {
        tags.extend(strings(object.remove("tags")));
        for field in ["metadata", "litellm_metadata"] {
            let Some(metadata) = object.get_mut(field).and_then(|m| m.as_object_mut()) else {
                continue;
            };
            if !metadata.get("tags").is_some_and(|t| t.is_array()) {
                continue;
            }
            tags.extend(strings(metadata.remove("tags")));
            if metadata.is_empty() {
                object.remove(field);
            }
        }
    }
    // Without repeats, first seen first: a handful of tags, so no set and no clones.
    let mut unique: Vec<String> = Vec::with_capacity(tags.len());
    for tag in tags {
        if !unique.contains(&tag) {
            unique.push(tag);
        }
    }
    unique
}

async fn handle(
    gateway: Arc<Gateway>,
    endpoint: Endpoint,
    headers: HeaderMap,
    body: Body,
    id: &str,
) -> Response {
    let caller = match gateway.caller(&headers) {
        Ok(caller) => caller,
        Err(refused) => return *refused,
    };
    let limit = gateway.settings.load().max_body_bytes;
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the request body is over the limit of {limit} bytes"),
                "invalid_request_error",
                None,
            );
        }
    };
    let body: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(body @ serde_json::Value::Object(_)) => body,
        Ok(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "the request body must be a JSON object",
                "invalid_request_error",
                None,
            );
        }
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("the request body is not valid JSON: {e}"),
                "invalid_request_error",
                None,
            );
        }
    };
    let Some(model) = body
        .get("model")
        .and_then(|m| m.as_str())
        .map(str::to_string)
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "`model` is required: the model group to route to",
            "invalid_request_error",
            Some("model"),
        );
    };
    if let Some(refused) = endpoint.missing_input(&body) {
        return refused;
    }
    let include_usage = body
        .pointer("/stream_options/include_usage")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    let mut body = body;
    cache_control(&headers, &mut body);
    let key = match &caller {
        Caller::Key(key) => Some(key.as_ref()),
        _ => None,
    };
    let tags = request_tags(&headers, &mut body, key);
    let mut request = Request::new(model.clone(), body);
    request.request_id = Some(id.to_string());
    request.tags = tags;
    let router = gateway.router.load_full();
    if router.settings().deployment_affinity {
        request.affinity_key = caller.affinity_key(gateway.settings.load().master_key.as_ref());
    }
    let mut admitted = None;
    if let Caller::Key(key) = caller {
        // The router's count (checking the request's token figures first), so the key's tpm
        // and a deployment's count the same tokens.
        let estimate = match router.token_estimate(&mut request) {
            Ok(estimate) => estimate,
            Err(e) => return router_error(&e),
        };
        match gateway.admit_key(&router, &key, &model, estimate).await {
            Ok(admission) => admitted = admission,
            Err(refused) => return refused,
        }
        if key.budget {
            request.budget_tags.push(key.budget_tag());
        }
    }
    // A key's tpm is settled to the tokens the provider used: none for a failure or a cache
    // hit; a stream's once it has ended.
    let settle = move |tokens: Option<u64>| {
        if let Some(admitted) = admitted {
            admitted.settle(tokens);
        }
    };
    if request.stream {
        return match router.stream(request).await {
            Ok(stream) => {
                let hit = stream.cache_hit;
                sse(stream, model, include_usage, move |usage: Option<Usage>| {
                    settle(if hit {
                        Some(0)
                    } else {
                        usage.map(|u| u.total_tokens)
                    });
                })
            }
            Err(e) => {
                settle(Some(0));
                router_error(&e)
            }
        };
    }
    match router.call(request).await {
        Ok(answer) => {
            settle(match answer.cache_hit {
                true => Some(0),
                false => answer.usage.map(|u| u.total_tokens),
            });
            let mut headers = HeaderMap::new();
            litellm_headers(&mut headers, Answered::from(&answer));
            let mut body = answer.body;
            if let Some(object) = body.as_object_mut() {
                object.insert("model".into(), model.into());
            }
            let mut response = axum::Json(body).into_response();
            response.headers_mut().extend(headers);
            response
        }
        Err(e) => {
            settle(Some(0));
            router_error(&e)
        }
    }
}

/// A routed stream as server-sent events: each chunk as it arrives, `data: [DONE]` at the end,
/// an error event if the stream breaks. Dropping the response (a client that went away) drops
/// the router's stream, which gives back what the call held.
///
/// The upstream is always asked for usage (the router needs the counts); the client sees it
/// only when it asked (`include_usage`), as OpenAI sends it ([`StreamUsage`]).
fn sse(
    stream: RouterStream,
    model: String,
    include_usage: bool,
    ended: impl FnOnce(Option<Usage>) + Send + 'static,
) -> Response {
    let mut headers = HeaderMap::new();
    litellm_headers(&mut headers, Answered::from(&stream));
    let usage = StreamUsage::new(include_usage);
    let events = futures_util::stream::unfold(Some((stream, Some(ended), usage)), move |state| {
        let model = model.clone();
        async move {
            let (mut stream, mut ended, mut usage) = state?;
            loop {
                match stream.next().await {
                    Some(Ok(chunk)) => {
                        let Some(body) = usage.chunk(chunk.body, &model) else {
                            continue;
                        };
                        let event = Bytes::from(format!("data: {body}\n\n"));
                        return Some((Ok::<_, Infallible>(event), Some((stream, ended, usage))));
                    }
                    Some(Err(e)) => {
                        // A broken stream's tokens are unknown: the estimate stays.
                        if let Some(ended) = ended.take() {
                            ended(None);
                        }
                        let body = serde_json::json!({"error": {
                            "message": e.to_string(),
                            "type": "api_error",
                            "param": null,
                            "code": e.status().to_string(),
                        }});
                        return Some((Ok(Bytes::from(format!("data: {body}\n\n"))), None));
                    }
                    None => {
                        if let Some(ended) = ended.take() {
                            ended(stream.usage());
                        }
                        let mut tail = String::new();
                        if let Some(last) = usage.last_chunk(&model) {
                            tail.push_str(&format!("data: {last}\n\n"));
                        }
                        tail.push_str("data: [DONE]\n\n");
                        return Some((Ok(Bytes::from(tail)), None));
                    }
                }
            }
        }
    });
    let mut response = Response::new(Body::from_stream(events));
    response.headers_mut().extend(headers);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// A stream's usage as the client asked for it. Without `stream_options.include_usage` no
/// chunk carries `usage` and the usage-only chunk (empty `choices`) is not sent, so code that
/// reads `chunk.choices[0]` never meets an empty list; with it, as OpenAI: `"usage": null` on
/// every chunk with choices and one last chunk with empty `choices` and the usage (made from
/// the last chunk when the upstream put its usage on a chunk with choices).
struct StreamUsage {
    include: bool,
    /// Usage seen on a chunk with choices, not yet sent.
    held: Option<serde_json::Value>,
    /// Whether the usage-only chunk was sent.
    sent: bool,
    /// The last chunk with choices: the fields the made-up last chunk copies.
    last: Option<serde_json::Map<String, serde_json::Value>>,
}

impl StreamUsage {
    fn new(include: bool) -> Self {
        StreamUsage {
            include,
            held: None,
            sent: false,
            last: None,
        }
    }

    /// The chunk as the client sees it, with `model` set to what it asked for; `None` drops it.
    fn chunk(&mut self, mut body: serde_json::Value, model: &str) -> Option<serde_json::Value> {
        let Some(object) = body.as_object_mut() else {
            return Some(body);
        };
        object.insert("model".into(), model.into());
        let usage = object.remove("usage").filter(|u| !u.is_null());
        let usage_only = object
            .get("choices")
            .and_then(|c| c.as_array())
            .is_some_and(Vec::is_empty);
        if !self.include {
            // A chunk that only carried the usage the client did not ask for is not sent.
            return (!(usage_only && usage.is_some())).then_some(body);
        }
        match usage {
            Some(usage) if usage_only => {
                object.insert("usage".into(), usage);
                self.held = None;
                self.sent = true;
            }
            usage => {
                if usage.is_some() {
                    self.held = usage;
                }
                object.insert("usage".into(), serde_json::Value::Null);
                if !usage_only {
                    let mut last = object.clone();
                    last.remove("choices");
                    self.last = Some(last);
                }
            }
        }
        Some(body)
    }

    /// The usage-only chunk still owed to a client that asked for usage, at the stream's end.
    fn last_chunk(&mut self, model: &str) -> Option<serde_json::Value> {
        if !self.include || self.sent {
            return None;
        }
        let usage = self.held.take()?;
        let mut chunk = self.last.take().unwrap_or_default();
        for (field, default) in [
            ("id", serde_json::json!("")),
            ("object", serde_json::json!("chat.completion.chunk")),
            ("created", serde_json::json!(0)),
        ] {
            chunk.entry(field).or_insert(default);
        }
        chunk.insert("model".into(), model.into());
        chunk.insert("choices".into(), serde_json::json!([]));
        chunk.insert("usage".into(), usage);
        self.sent = true;
        Some(serde_json::Value::Object(chunk))
    }
}

/// The names a caller may call, sorted: the model groups and the `model_group_alias` names
/// (`hidden` ones too with `with_hidden`), only those of its key's groups when the key has
/// some. `Err` with the 401 of a caller that may not call.
fn visible_models(
    gateway: &Gateway,
    headers: &HeaderMap,
    with_hidden: bool,
) -> Result<Vec<String>, Box<Response>> {
    let caller = gateway.caller(headers)?;
    let allowed: Option<Vec<String>> = match caller {
        Caller::Key(key) => Some(key.models).filter(|m| !m.is_empty()),
        _ => None,
    };
    let settings = gateway.settings.load();
    let router = gateway.router.load();
    let mut names = router.model_groups();
    names.extend(
        router
            .settings()
            .model_group_alias
            .keys()
            .filter(|alias| with_hidden || !settings.hidden_models.contains(alias))
            .cloned(),
    );
    names.retain(|name| allowed.as_ref().is_none_or(|a| a.contains(name)));
    names.sort();
    names.dedup();
    Ok(names)
}

fn model_object(id: &str) -> serde_json::Value {
    serde_json::json!({"id": id, "object": "model", "created": 0, "owned_by": "ferrolite"})
}

/// `GET /v1/models`: the model groups and the aliases that are not `hidden`.
async fn models(State(gateway): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    let names = match visible_models(&gateway, &headers, false) {
        Ok(names) => names,
        Err(refused) => return *refused,
    };
    let data: Vec<serde_json::Value> = names.iter().map(|id| model_object(id)).collect();
    axum::Json(serde_json::json!({"object": "list", "data": data})).into_response()
}

/// `GET /v1/models/{id}`: one model group or alias; 404 in OpenAI's shape (`model_not_found`)
/// for a name this gateway does not serve to the caller.
async fn model(
    State(gateway): State<Arc<Gateway>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    let names = match visible_models(&gateway, &headers, true) {
        Ok(names) => names,
        Err(refused) => return *refused,
    };
    if names.contains(&id) {
        return axum::Json(model_object(&id)).into_response();
    }
    let body = serde_json::json!({
        "error": {
            "message": format!("The model `{id}` does not exist or you do not have access to it."),
            "type": "invalid_request_error",
            "param": null,
            "code": "model_not_found",
        }
    });
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}

/// `GET /health` (master key only): runs every deployment's health check now, as LiteLLM's
/// proxy does, and answers in its shape: `{healthy_endpoints, unhealthy_endpoints,
/// healthy_count, unhealthy_count}`, each endpoint with its `model`, `model_name`, `model_id`,
/// `api_base`, `api_version`, `custom_llm_provider`, `rpm`, `tpm` (and `error` when it
/// failed), never its key. `?model=` keeps one model group's (or one `litellm_params.model`'s)
/// deployments, `?model_id=` one deployment. The results also steer health-check routing.
async fn health(
    State(gateway): State<Arc<Gateway>>,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    match gateway.caller(&headers) {
        Err(refused) => return *refused,
        Ok(Caller::Key(key)) => {
            return error(
                StatusCode::FORBIDDEN,
                &format!(
                    "API key `{}` may not read /health: it needs the master key",
                    key.name
                ),
                "permission_error",
                None,
            );
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
/// remaining USD (`ferrolite_budget_remaining_usd{scope, name}`, once per budget) read fresh
/// for the scrape.
async fn metrics_text(State(gateway): State<Arc<Gateway>>) -> Response {
    let settings = gateway.settings.load_full();
    match &settings.metrics {
        Some(handle) => {
            let router = gateway.router.load_full();
            // Reading the budgets sets each one's `ferrolite_budget_remaining_usd{scope, name}`
            // gauge; setting it here too, under other labels, showed every budget twice.
            if let Err(e) = router.budget_status().await {
                tracing::debug!(error = %e, "budgets not read for /metrics");
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
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics are not recorded by this gateway",
            "api_error",
            None,
        ),
    }
}

/// `GET /provider/budgets`: every budget's spend, limit and reset time, by kind and name (as
/// LiteLLM's endpoint, with tag and deployment budgets beside the providers').
async fn provider_budgets(State(gateway): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    if let Some(refused) = gateway.refusal(&headers) {
        return refused;
    }
    let router = gateway.router.load_full();
    let status = match router.budget_status().await {
        Ok(status) => status,
        Err(e) => return router_error(&e),
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
async fn liveliness() -> &'static str {
    "I'm alive!"
}

/// `GET /health/readiness`: whether a load balancer should send calls here. 503 (`unhealthy`,
/// with `Retry-After`) only when this gateway cannot serve: its Redis is down and it fails
/// closed. A fail-open gateway whose Redis is down still serves from its local view: 200,
/// `degraded`. Otherwise 200, `healthy`.
async fn readiness(State(gateway): State<Arc<Gateway>>) -> Response {
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
        retry_after_outage(&mut response);
    }
    response
}
