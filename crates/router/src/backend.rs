//! The `Backend` trait: how the router calls one deployment.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use ferrolite_types::{Deployment, ErrorClass, Usage};

/// A request body as the backend receives it: the caller's body with `model` replaced by the
/// deployment's model.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendRequest {
    /// The body (chat completion, text completion or embedding request).
    pub body: serde_json::Value,
    /// Whether the caller asked for a stream.
    pub stream: bool,
}

/// A backend's successful answer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BackendResponse {
    /// The provider's response body.
    pub body: serde_json::Value,
    /// Token usage, when the provider reported it (its `cost`, when known, is the call's cost;
    /// otherwise the router prices the usage with the deployment's per-token prices).
    pub usage: Option<Usage>,
    /// Time to the first streamed chunk, for streamed calls.
    pub time_to_first_token: Option<Duration>,
}

/// A backend's failure, classified.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{class:?}: {message}")]
pub struct BackendError {
    /// What kind of failure (the router's retry, cooldown and fallback rules read only this).
    pub class: ErrorClass,
    /// The provider's message (never a secret).
    pub message: String,
}

impl BackendError {
    /// A failure of `class` with `message`.
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        BackendError {
            class,
            message: message.into(),
        }
    }
}

/// The future a backend call returns.
pub type BackendFuture<'a> =
    Pin<Box<dyn Future<Output = Result<BackendResponse, BackendError>> + Send + 'a>>;

/// Calls one deployment. The router picks the deployment, applies the attempt timeout (it drops
/// the future when it runs out), and classifies nothing itself: the backend says what failed.
///
/// ```
/// use ferrolite_router::{Backend, BackendError, BackendFuture, BackendRequest, BackendResponse};
/// use ferrolite_types::{Deployment, ErrorClass, Usage};
///
/// /// Answers every call with a canned body.
/// struct Canned;
///
/// impl Backend for Canned {
///     fn call<'a>(&'a self, deployment: &'a Deployment, request: &'a BackendRequest) -> BackendFuture<'a> {
///         Box::pin(async move {
///             if deployment.model.is_empty() {
///                 return Err(BackendError::new(ErrorClass::NotFound, "no model"));
///             }
///             Ok(BackendResponse {
///                 body: serde_json::json!({"model": request.body["model"], "choices": []}),
///                 usage: Some(Usage::new(10, 5)),
///                 time_to_first_token: None,
///             })
///         })
///     }
/// }
/// ```
pub trait Backend: Send + Sync {
    /// Calls `deployment` with `request`.
    fn call<'a>(
        &'a self,
        deployment: &'a Deployment,
        request: &'a BackendRequest,
    ) -> BackendFuture<'a>;
}

// The router holds its backend as a trait object.
const _: Option<std::sync::Arc<dyn Backend>> = None;
