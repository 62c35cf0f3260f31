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
//! - `POST /v1/messages` (Anthropic's Messages API, `x-api-key` accepted as the key),
//!   `/v1/messages/count_tokens` and `POST /v1/responses` (OpenAI's Responses API): translated
//!   to and from the canonical chat form, or passed through to a deployment of the same
//!   protocol (`native`).
//! - `GET /v1/models` (the model groups and the `model_group_alias` names not `hidden`),
//!   `GET /v1/models/{id}`, `GET /health` (each deployment's health check, LiteLLM's shape),
//!   `GET /health/liveliness`, `GET /health/readiness`, `GET /router/state` (the cluster's
//!   routing state: cooldowns and their causes, windows, leases, latency, replicas).
//! - Errors in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, with the
//!   status a client expects: 400 for a bad body or an unknown group (listing the groups), 401
//!   without the master key, 413 for a body over the limit, 429 with `Retry-After` when nothing
//!   has capacity, 503 with `Retry-After` for every caller while a fail-closed gateway's Redis
//!   is down, the mapped status of an upstream failure (`errors`' one table).
//!
//! One call passes these steps, in order (`handle`), one module each:
//!
//! 1. `auth`: who calls (the master key, an API key, anyone) — 401 otherwise;
//! 2. `body`: the body read and checked (size, JSON, `model`, the endpoint's input), made the
//!    router's request (tags, `Cache-Control`, request id);
//! 3. `keys`: an API key's model groups (403), its rpm/tpm limits (the router admits them:
//!    429 over them) and its budget tag;
//! 4. `route`: the router calls or streams the request;
//! 5. `answer` / `sse`: the answer with LiteLLM's headers, or server-sent events.
//!
//! Around it, `completions` gives the call its id and span and counts it; `models` and
//! `health` serve the read-only endpoints; `errors` turns every failure into OpenAI's
//! shape.

mod answer;
mod auth;
mod body;
mod cluster;
mod errors;
mod health;
mod keys;
mod litellm;
mod models;
mod native;
mod route;
mod sse;
mod state;
mod telemetry;
mod trace;
mod ui;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ferrolite_router::Router;

use body::Endpoint;
use errors::GatewayError;
pub use errors::status_of;
use state::Gateway;
pub use state::{GatewaySettings, PrometheusHandle, install_metrics, prometheus_builder};

/// One call, step by step (each step's module says what it checks and answers); `id` is the
/// request's id, given to the router's request.
async fn handle(
    gateway: &Gateway,
    endpoint: Endpoint,
    headers: HeaderMap,
    body: Body,
    id: String,
    asked: &mut Option<String>,
    span: &trace::Traced,
) -> Result<Response, GatewayError> {
    // The settings of this call, whatever a reload swaps in meanwhile.
    let settings = gateway.settings.load_full();
    // 1. auth: who calls.
    let caller = Gateway::caller(&settings, &headers)?;
    // 2. body: read, checked, made the router's request.
    let parsed = body::read(body, settings.max_body_bytes, endpoint).await?;
    let model = parsed.model;
    if settings.litellm_metrics {
        *asked = Some(model.clone());
    }
    let mut request = body::request(parsed.body, &model, &headers, caller.key(), id);
    request.explain = caller.explains(&headers);
    let router = gateway.router.load_full();
    if router.settings().deployment_affinity {
        request.affinity_key = caller.affinity_key(settings.master_key.as_ref());
    }
    // 3. keys: an API key's groups, limits and budget.
    keys::admit(&caller, &mut request)?;
    trace::routing(span, &mut request);
    // 4 and 5. route, and answer (JSON or server-sent events).
    route::route(&router, request, model, parsed.include_usage, span).await
}

/// LiteLLM's `x-litellm-call-id`: the one id of the request, as in its log lines.
const CALL_ID: HeaderName = HeaderName::from_static("x-litellm-call-id");

/// The request id echoed to the client.
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Chat completions, completions and embeddings: one handler, the body says which. Each call
/// runs in a `request` span carrying its id, which the answer echoes in `x-request-id` and the
/// HTTP backend sends to the upstream.
async fn completions(
    State(gateway): State<Arc<Gateway>>,
    request: axum::extract::Request,
) -> Response {
    use tracing::Instrument;
    // The request taken apart, not its headers and URI extracted as copies.
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    let id = gateway.request_id(&headers);
    let id_header = HeaderValue::from_str(&id).ok();
    let span = tracing::info_span!("request", id = %id);
    let started = std::time::Instant::now();
    let endpoint = Endpoint::of(parts.uri.path());
    let mut asked = None;
    // The request's span for distributed tracing (disabled unless traces are exported).
    let traced = trace::request(
        gateway.traces.as_ref(),
        route_of(parts.uri.path()),
        &id,
        &headers,
    );
    let mut response = handle(&gateway, endpoint, headers, body, id, &mut asked, &traced)
        .instrument(span.clone())
        .await
        .unwrap_or_else(IntoResponse::into_response);
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    trace::status(&traced, status);
    gateway.telemetry.record(status, elapsed);
    gateway.count_litellm(parts.uri.path(), asked.as_deref(), &response);
    gateway.replicas.count_request();
    span.in_scope(|| {
        tracing::info!(status, elapsed_ms = elapsed.as_secs_f64() * 1e3, "answered");
    });
    if let Some(value) = id_header {
        let headers = response.headers_mut();
        headers.insert(CALL_ID, value.clone());
        headers.insert(REQUEST_ID, value);
    }
    response
}

impl Gateway {
    /// LiteLLM's proxy metrics of a request to `route` that asked for `asked` and was
    /// answered with `response` (when they are on).
    fn count_litellm(&self, route: &str, asked: Option<&str>, response: &Response) {
        if !self.settings.load().litellm_metrics {
            return;
        }
        self.litellm.record(&litellm::Answered {
            route,
            requested_model: asked,
            model_id: response
                .headers()
                .get("x-litellm-model-id")
                .and_then(|v| v.to_str().ok()),
            status: response.status().as_u16(),
        });
    }
}

/// The routes a call comes by, one list for [`route_of`].
macro_rules! routes {
    ($($path:literal),* $(,)?) => {
        /// The route a call came by (`http.route`: the gateway's routes are fixed paths) and
        /// its request span's name (`POST {route}`), both written once.
        fn route_of(path: &str) -> trace::Route {
            match path {
                $($path => trace::Route { path: $path, span: concat!("POST ", $path) },)*
                _ => trace::Route { path: "", span: "POST" },
            }
        }
    };
}

routes!(
    "/v1/chat/completions",
    "/chat/completions",
    "/v1/completions",
    "/completions",
    "/v1/embeddings",
    "/embeddings",
    "/v1/messages",
    "/messages",
    "/v1/messages/count_tokens",
    "/messages/count_tokens",
    "/v1/responses",
    "/responses",
);

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

/// The paths of Anthropic's Messages API the gateway serves (`messages`, then
/// `count_tokens`, each with and without `/v1`): their errors are in Anthropic's shape.
const MESSAGES_PATHS: [&str; 4] = [
    "/v1/messages",
    "/messages",
    "/v1/messages/count_tokens",
    "/messages/count_tokens",
];

/// The error body the client of `path` reads, for an error the server answers before the
/// gateway's handler does (a body that did not arrive in time): Anthropic's
/// `{"type": "error", "error": {...}}` on the Messages API's paths, OpenAI's
/// `{"error": {...}}` elsewhere.
pub(crate) fn error_body_for(
    path: &str,
    status: axum::http::StatusCode,
    kind: &str,
    message: &str,
) -> serde_json::Value {
    if MESSAGES_PATHS.contains(&path) {
        return errors::anthropic_body(status, message);
    }
    serde_json::json!({
        "error": {
            "message": message,
            "type": kind,
            "param": null,
            "code": status.as_u16().to_string(),
        }
    })
}

/// The gateway's routes over `router`.
pub fn app(router: Router, settings: GatewaySettings) -> axum::Router {
    app_with_handle(router, settings).0
}

/// The gateway's routes over `router`, and the handle that swaps the router (hot reload).
pub fn app_with_handle(router: Router, settings: GatewaySettings) -> (axum::Router, GatewayHandle) {
    let replicas = settings.replicas.clone().unwrap_or_else(|| {
        let cache = router.cache().clone();
        let started = cache.clock().now_ms();
        Arc::new(ferrolite_router::Replicas::new(
            cache,
            ferrolite_router::ReplicaInfo::this_process("", started),
            ferrolite_router::ReplicaSettings::default(),
        ))
    });
    let traces = settings.traces.clone();
    let state = Arc::new(Gateway {
        replicas,
        traces,
        router: arc_swap::ArcSwap::from_pointee(router),
        settings: arc_swap::ArcSwap::from_pointee(settings),
        id_prefix: format!("ferrolite-{}", std::process::id()),
        requests: std::sync::atomic::AtomicU64::new(0),
        telemetry: telemetry::Telemetry::default(),
        litellm: litellm::ProxyMetrics::default(),
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
        .route(MESSAGES_PATHS[0], post(native::messages))
        .route(MESSAGES_PATHS[1], post(native::messages))
        .route(MESSAGES_PATHS[2], post(native::count_tokens))
        .route(MESSAGES_PATHS[3], post(native::count_tokens))
        .route("/v1/responses", post(native::responses))
        .route("/responses", post(native::responses))
        .route("/v1/models", get(models::models))
        .route("/models", get(models::models))
        .route("/v1/models/{*id}", get(models::model))
        .route("/models/{*id}", get(models::model))
        .route("/health", get(health::health))
        .route("/health/liveliness", get(health::liveliness))
        .route("/health/readiness", get(health::readiness))
        .route("/metrics", get(health::metrics_text))
        .route("/provider/budgets", get(health::provider_budgets))
        .route("/router/state", get(cluster::router_state))
        .route("/ui", get(ui::page))
        .route("/ui/", get(ui::page))
        .route("/ui/login", post(ui::login))
        .route("/ui/logout", post(ui::logout))
        .route("/ui/app.js", get(ui::script))
        .route("/ui/app.css", get(ui::style))
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
