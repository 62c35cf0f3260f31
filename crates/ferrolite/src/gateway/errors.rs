//! Every error the gateway answers with, and the one table from each to what the client sees:
//! its HTTP status, OpenAI's error `type` and `param`, and `Retry-After`
//! ([`GatewayError::row`]). The body is OpenAI's shape,
//! `{"error": {"message", "type", "param", "code"}}`.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ferrolite_cache::CacheError;
use ferrolite_router::{ErrorKind, Route, RouterError};
use ferrolite_types::ErrorClass;

/// What the gateway refuses or fails with, before it becomes a response.
#[derive(Debug)]
pub(super) enum GatewayError {
    /// No API key in `Authorization: Bearer` or `api-key`.
    NoKey,
    /// A key that is neither the master key nor one of the API keys.
    InvalidKey,
    /// An API key asked for an endpoint only the master key may read.
    NeedsMaster {
        /// The key's name.
        key: String,
        /// The endpoint.
        path: &'static str,
    },
    /// An API key asked for a model group outside its groups.
    ModelNotAllowed {
        /// The key's name.
        key: String,
        /// The group asked for.
        model: String,
        /// The groups it may call.
        allowed: Vec<String>,
    },
    /// The body is over the limit of this many bytes.
    BodyTooLarge(usize),
    /// The body is JSON, but not an object.
    NotAnObject,
    /// The body is not JSON: the parser's message.
    InvalidJson(String),
    /// The body has no `model`.
    NoModel,
    /// The body lacks the input its endpoint needs (`messages`, `prompt`, `input`).
    MissingInput {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// `GET /v1/models/{id}` of a name not served to the caller.
    ModelNotFound(String),
    /// `/metrics` without a recorder.
    NoMetrics,
    /// The request cannot be translated to the canonical form (a field its protocol has and
    /// chat completions do not): a 400 naming the field.
    Untranslatable(ferrolite_protocols::TranslateError),
    /// A deployment's answer could not be translated to the caller's protocol (502).
    BadAnswer(String),
    /// The router (or the shared state it reads) failed.
    Router(RouterError),
    /// An error of a request that asked for its explanation (`x-ferrolite-explain`): the
    /// error's own answer, with the route (`ferrolite_route` in the body, `x-ferrolite-route`).
    Explained(Box<GatewayError>, Box<Route>),
}

impl From<RouterError> for GatewayError {
    fn from(error: RouterError) -> Self {
        GatewayError::Router(error)
    }
}

/// What a client sees of an error: one row of the table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Row<'a> {
    /// The HTTP status.
    pub(super) status: StatusCode,
    /// OpenAI's error `type`.
    pub(super) kind: &'static str,
    /// The request field at fault.
    pub(super) param: Option<&'a str>,
    /// `Retry-After`, in whole seconds.
    pub(super) retry_after: Option<u64>,
    /// The body's `code` when it is not the status (`model_not_found`).
    pub(super) code: Option<&'static str>,
}

const INVALID: &str = "invalid_request_error";

impl<'a> Row<'a> {
    const fn of(status: StatusCode, kind: &'static str) -> Self {
        Row {
            status,
            kind,
            param: None,
            retry_after: None,
            code: None,
        }
    }

    const fn param(self, param: &'a str) -> Self {
        Row {
            param: Some(param),
            ..self
        }
    }

    const fn retry_after(self, seconds: u64) -> Self {
        Row {
            retry_after: Some(seconds),
            ..self
        }
    }
}

impl GatewayError {
    /// The table: the status, `type`, `param` and `Retry-After` of every error.
    pub(super) fn row(&self) -> Row<'_> {
        use GatewayError as E;
        match self {
            E::NoKey | E::InvalidKey => Row::of(StatusCode::UNAUTHORIZED, "auth_error"),
            E::NeedsMaster { .. } => Row::of(StatusCode::FORBIDDEN, "permission_error"),
            E::ModelNotAllowed { .. } => {
                Row::of(StatusCode::FORBIDDEN, "permission_error").param("model")
            }
            E::BodyTooLarge(_) => Row::of(StatusCode::PAYLOAD_TOO_LARGE, INVALID),
            E::NotAnObject | E::InvalidJson(_) => Row::of(StatusCode::BAD_REQUEST, INVALID),
            E::NoModel => Row::of(StatusCode::BAD_REQUEST, INVALID).param("model"),
            E::MissingInput { field, .. } => Row::of(StatusCode::BAD_REQUEST, INVALID).param(field),
            E::ModelNotFound(_) => Row {
                code: Some("model_not_found"),
                ..Row::of(StatusCode::NOT_FOUND, INVALID)
            },
            E::NoMetrics => Row::of(StatusCode::SERVICE_UNAVAILABLE, "api_error"),
            E::Untranslatable(e) => Row::of(StatusCode::BAD_REQUEST, INVALID).param(&e.field),
            E::BadAnswer(_) => Row::of(StatusCode::BAD_GATEWAY, "api_error"),
            E::Router(e) => router_row(e),
            E::Explained(error, _) => error.row(),
        }
    }

    /// The message the client reads.
    fn message(&self) -> String {
        use GatewayError as E;
        match self {
            E::NoKey => {
                "Authentication Error, no API key passed in: send Authorization: Bearer <key>"
                    .into()
            }
            E::InvalidKey => "Authentication Error, invalid API key".into(),
            E::NeedsMaster { key, path } => {
                format!("API key `{key}` may not read {path}: it needs the master key")
            }
            E::ModelNotAllowed {
                key,
                model,
                allowed,
            } => format!(
                "API key `{key}` may not call model group `{model}`; it may call: {}",
                allowed.join(", ")
            ),
            E::BodyTooLarge(limit) => {
                format!("the request body is over the limit of {limit} bytes")
            }
            E::NotAnObject => "the request body must be a JSON object".into(),
            E::InvalidJson(e) => format!("the request body is not valid JSON: {e}"),
            E::NoModel => "`model` is required: the model group to route to".into(),
            E::MissingInput { message, .. } => message.clone(),
            E::ModelNotFound(id) => {
                format!("The model `{id}` does not exist or you do not have access to it.")
            }
            E::NoMetrics => "metrics are not recorded by this gateway".into(),
            E::Untranslatable(e) => format!("the request cannot be translated: {e}"),
            E::BadAnswer(e) => format!("the deployment's answer cannot be translated: {e}"),
            E::Router(e) => match e.kind() {
                ErrorKind::State(cache @ CacheError::Unavailable { .. }) => {
                    format!("the shared state is unavailable, retry later: {cache}")
                }
                _ => e.to_string(),
            },
            E::Explained(error, _) => error.message(),
        }
    }
}

/// The HTTP status the gateway answers a router error with (its row of the table).
///
/// ```
/// use ferrolite::RouterError;
/// let unknown = RouterError::UnknownModel { model: "gpt-5".into() };
/// assert_eq!(ferrolite::gateway::status_of(&unknown).as_u16(), 400);
/// ```
pub fn status_of(error: &RouterError) -> StatusCode {
    router_row(error).status
}

/// A router error's row: its kind's status (an upstream failure keeps the provider's), the
/// request field at fault, and `Retry-After` on a 429 (the cooldown's end, the provider's
/// `Retry-After`, else 1 s) and on a shared-state failure a retry can outlast.
fn router_row(e: &RouterError) -> Row<'_> {
    let status = match e.kind() {
        ErrorKind::Request => StatusCode::BAD_REQUEST,
        ErrorKind::Capacity => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Deadline => StatusCode::REQUEST_TIMEOUT,
        ErrorKind::Upstream(class) => class
            .status()
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        ErrorKind::State(cache) => return state_row(cache),
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let kind = match status.as_u16() {
        400 | 404 | 413 | 422 => INVALID,
        401 | 403 => "auth_error",
        429 => "rate_limit_error",
        408 => "timeout",
        _ => "api_error",
    };
    let mut row = Row::of(status, kind);
    match e {
        RouterError::UnknownModel { .. } => row = row.param("model"),
        RouterError::InvalidRequest { field, .. } => row = row.param(field),
        _ => {}
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        let wait = match e {
            RouterError::AllCooledDown { retry_in, .. } => Some(*retry_in),
            RouterError::Backend {
                class: ErrorClass::RateLimited { retry_after },
                ..
            } => *retry_after,
            _ => None,
        };
        row = row.retry_after(wait.map_or(1, whole_seconds));
    }
    row
}

/// A shared-state failure's row. Redis down while the cache fails closed is the same for
/// every caller: 503, `Retry-After` the longest wait between two reconnection attempts
/// ([`outage_retry_after`]). Other failures a retry can outlast (the tracked-key bound
/// reached, an error Redis answered with) are 503 with `Retry-After: 1`; the rest (a setting or
/// argument out of range, a reply of the wrong shape) are the gateway's own fault, 500.
fn state_row(cache: &CacheError) -> Row<'static> {
    let unavailable = Row::of(StatusCode::SERVICE_UNAVAILABLE, "api_error");
    match cache {
        CacheError::Unavailable { .. } => unavailable.retry_after(outage_retry_after()),
        CacheError::TrackedKeysFull { .. } | CacheError::Redis { .. } => unavailable.retry_after(1),
        CacheError::InvalidRedisUrl { .. }
        | CacheError::InvalidConfig { .. }
        | CacheError::InvalidArgument { .. }
        | CacheError::UnexpectedReply { .. }
        | CacheError::KindMismatch { .. } => {
            Row::of(StatusCode::INTERNAL_SERVER_ERROR, "api_error")
        }
    }
}

/// The wait after a shared-state outage: the longest wait between two reconnection attempts
/// (`RECONNECT_MAX_DELAY`), in whole seconds, at least 1 — the time after Redis is back within
/// which the gateway serves again.
pub(super) fn outage_retry_after() -> u64 {
    whole_seconds(ferrolite_cache::RECONNECT_MAX_DELAY)
}

/// `wait` in whole seconds, rounded up, at least 1.
fn whole_seconds(wait: Duration) -> u64 {
    let seconds = wait.as_secs_f64().ceil().max(1.0);
    if seconds >= u64::MAX as f64 {
        u64::MAX
    } else {
        seconds as u64
    }
}

/// Sets `Retry-After` to `seconds`.
pub(super) fn set_retry_after(response: &mut Response, seconds: u64) {
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
}

impl GatewayError {
    /// The status and the message the client reads.
    pub(super) fn status_and_message(&self) -> (StatusCode, String) {
        (self.row().status, self.message())
    }

    /// The error in Anthropic's shape (`/v1/messages`), with the table's status and
    /// `Retry-After`.
    pub(super) fn into_anthropic_response(self) -> Response {
        let row = self.row();
        let body = anthropic_body(row.status, &self.message());
        self.respond(row, body)
    }

    /// The answer of `row` with `body`: `Retry-After`, and for an explained error its route.
    fn respond(&self, row: Row<'_>, mut body: serde_json::Value) -> Response {
        let route = match self {
            GatewayError::Explained(_, route) => Some(route),
            _ => None,
        };
        if let (Some(route), Some(object)) = (route, body.as_object_mut()) {
            object.insert("ferrolite_route".into(), route.to_json());
        }
        let mut response = (row.status, axum::Json(body)).into_response();
        if let Some(seconds) = row.retry_after {
            set_retry_after(&mut response, seconds);
        }
        if let Some(route) = route {
            super::answer::set_route(response.headers_mut(), route);
        }
        response
    }
}

/// Anthropic's error body, `{"type": "error", "error": {"type", "message"}}`, with the error
/// type Anthropic gives `status` (the protocols crate's one table).
pub(super) fn anthropic_body(status: StatusCode, message: &str) -> serde_json::Value {
    ferrolite_protocols::anthropic::client::error_body(status.as_u16(), message)
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let row = self.row();
        let body = serde_json::json!({
            "error": {
                "message": self.message(),
                "type": row.kind,
                "param": row.param,
                "code": row.code.map_or_else(|| row.status.as_u16().to_string(), str::to_string),
            }
        });
        self.respond(row, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(cache: CacheError) -> GatewayError {
        GatewayError::Router(RouterError::Cache(cache))
    }

    #[test]
    fn a_full_tracked_key_table_is_a_503_to_retry_not_a_500() {
        let error = state(CacheError::TrackedKeysFull {
            key: "k".into(),
            limit: 10,
        });
        let row = error.row();
        assert_eq!(row.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(row.retry_after, Some(1));
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn a_redis_outage_found_by_the_budgets_is_a_503_with_the_reconnection_wait() {
        let outage = CacheError::Unavailable {
            operation: "reserve",
            reason: "down".into(),
        };
        let error = GatewayError::Router(RouterError::Budget(
            ferrolite_budgets::BudgetError::Cache(outage),
        ));
        let row = error.row();
        assert_eq!(row.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(row.retry_after, Some(outage_retry_after()));
        assert!(outage_retry_after() >= 1);
    }

    #[test]
    fn an_invalid_cache_setting_stays_a_500_without_retry_after() {
        let error = state(CacheError::InvalidConfig {
            field: "max_tracked_keys",
            value: "0".into(),
            reason: "at least 1",
        });
        let row = error.row();
        assert_eq!(row.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(row.retry_after, None);
    }

    #[test]
    fn a_cooldown_is_a_429_whose_retry_after_is_its_end_rounded_up() {
        let error = GatewayError::Router(RouterError::AllCooledDown {
            model_group: "g".into(),
            retry_in: Duration::from_millis(11_200),
        });
        let row = error.row();
        assert_eq!(row.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(row.kind, "rate_limit_error");
        assert_eq!(row.retry_after, Some(12));
    }
}
