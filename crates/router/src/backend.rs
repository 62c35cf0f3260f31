//! The `Backend` trait: how the router calls one deployment.

use std::any::Any;
use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ferrolite_types::{Deployment, DeploymentId, ErrorClass, Protocol, Usage};

use crate::{Body, Native};

/// A request body as the backend receives it: the caller's body with `model` replaced by the
/// deployment's model.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendRequest {
    /// The body (chat completion, text completion or embedding request).
    pub body: serde_json::Value,
    /// Whether the caller asked for a stream.
    pub stream: bool,
    /// The request's id ([`Request::request_id`](crate::Request::request_id)), for the
    /// provider's logs (the HTTP backend sends it as `x-request-id`).
    pub request_id: Option<String>,
    /// The called deployment's id as the router knows it (derived once per snapshot), so a
    /// backend that dispatches by id does not derive it again per call
    /// ([`Deployment::id`] hashes the deployment's identity); `None` in a request built by
    /// hand, where a backend derives it ([`BackendRequest::deployment_id_of`]).
    pub deployment_id: Option<DeploymentId>,
    /// What the backend prepared of the called deployment ([`Backend::prepare`]) when the
    /// router took it into its snapshot; `None` in a request built by hand, or when the backend
    /// prepared nothing. Only the backend that prepared it reads it.
    pub prepared: Option<Prepared>,
    /// The caller's request in its own protocol, when it came in another one than the
    /// canonical chat form ([`Request::native`](crate::Request::native)): a backend whose
    /// deployment speaks that protocol may send it as it is, and then answers in it
    /// ([`BackendResponse::protocol`]); any other sends `body`.
    pub native: Option<Native>,
    /// The trace context of this attempt's span, when the request is traced
    /// ([`Request::trace`](crate::Request::trace)): a backend sends it upstream as W3C
    /// `traceparent` (and `tracestate`) headers, so the provider's spans continue the trace.
    pub trace: Option<crate::spans::TraceParent>,
}

/// What a backend prepared of one deployment once ([`Backend::prepare`]), so that its calls do
/// not work it out again (a URL parsed, headers validated): the router keeps it with the
/// deployment for the life of its snapshot and hands it to every call of that deployment in
/// [`BackendRequest::prepared`]. Cloning shares it.
#[derive(Clone)]
pub struct Prepared(Arc<dyn Any + Send + Sync>);

impl Prepared {
    /// `value`, prepared.
    pub fn new<T: Any + Send + Sync>(value: T) -> Self {
        Prepared(Arc::new(value))
    }

    /// A value already shared (several deployments prepared alike hold one).
    pub fn shared<T: Any + Send + Sync>(value: Arc<T>) -> Self {
        Prepared(value)
    }

    /// The prepared value, when it is a `T`.
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Prepared(..)")
    }
}

/// Two requests' prepared values are equal when they are the same one.
impl PartialEq for Prepared {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl BackendRequest {
    /// The id of `deployment`, the one this request is for: the router's (borrowed), else
    /// derived.
    pub fn deployment_id_of(&self, deployment: &Deployment) -> Cow<'_, DeploymentId> {
        match &self.deployment_id {
            Some(id) => Cow::Borrowed(id),
            None => Cow::Owned(deployment.id()),
        }
    }
}

/// A backend's successful answer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BackendResponse {
    /// The provider's response body, as its bytes ([`Body::parse`] checks an upstream's answer;
    /// [`Body::from_value`] makes one from a tree).
    pub body: Body,
    /// Token usage, when the provider reported it (its `cost`, when known, is the call's cost;
    /// otherwise the router prices the usage with the deployment's per-token prices).
    pub usage: Option<Usage>,
    /// Time to the first streamed chunk, for streamed calls.
    pub time_to_first_token: Option<Duration>,
    /// The protocol `body` is in: the canonical chat form unless the backend passed the
    /// caller's own request through ([`BackendRequest::native`]) and answers in its protocol.
    pub protocol: Protocol,
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

/// One chunk of a streamed answer, as the provider sent it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BackendChunk {
    /// The chunk's body (an OpenAI `chat.completion.chunk`, say), as the provider's bytes.
    pub body: Body,
    /// Token usage, when this chunk reports it (OpenAI's last chunk with
    /// `stream_options.include_usage`). The last usage seen is the call's.
    pub usage: Option<Usage>,
    /// The protocol `body` is in ([`BackendResponse::protocol`]): a pass-through stream's
    /// chunks are the events of the caller's protocol, each one's `data` (whose `type` names
    /// the event, in Anthropic's and the Responses API's streams).
    pub protocol: Protocol,
}

/// A streamed answer: chunks until the provider ends it, or an error that ends it.
pub type BackendStream =
    Pin<Box<dyn futures_core::Stream<Item = Result<BackendChunk, BackendError>> + Send + 'static>>;

/// The future a streaming call returns: the stream once the provider accepted the call.
pub type BackendStreamFuture<'a> =
    Pin<Box<dyn Future<Output = Result<BackendStream, BackendError>> + Send + 'a>>;

/// The future a health check returns: `Ok` when the deployment answers.
pub type HealthFuture<'a> = Pin<Box<dyn Future<Output = Result<(), BackendError>> + Send + 'a>>;

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
///                 body: serde_json::json!({"model": request.body["model"], "choices": []}).into(),
///                 usage: Some(Usage::new(10, 5)),
///                 time_to_first_token: None,
///                 protocol: Default::default(),
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

    /// Calls `deployment` with `request` as a stream. The router waits for the first chunk
    /// under the stream timeout (time to first token) and hands the rest to its caller chunk
    /// by chunk. The default calls [`Backend::call`] and streams its answer as one chunk.
    fn stream<'a>(
        &'a self,
        deployment: &'a Deployment,
        request: &'a BackendRequest,
    ) -> BackendStreamFuture<'a> {
        Box::pin(async move {
            let response = self.call(deployment, request).await?;
            let chunk = BackendChunk {
                body: response.body,
                usage: response.usage,
                protocol: response.protocol,
            };
            Ok(
                Box::pin(futures_util::stream::once(std::future::ready(Ok(chunk))))
                    as BackendStream,
            )
        })
    }

    /// Checks that `deployment` answers (LiteLLM's background health checks).
    /// The router runs it from [`Router::check_health`](crate::Router::check_health) and keeps
    /// a failed deployment out of picks until the next check passes. The default passes.
    fn health_check<'a>(&'a self, deployment: &'a Deployment) -> HealthFuture<'a> {
        let _ = deployment;
        Box::pin(std::future::ready(Ok(())))
    }

    /// Works out once what every call of `deployment` would otherwise work out again (the
    /// HTTP backend: its URLs parsed, its key and extra headers validated). The router calls it
    /// for each deployment as it builds a snapshot and passes the result with each call of
    /// that deployment in [`BackendRequest::prepared`]; a call without it must behave the same.
    /// The default prepares nothing.
    fn prepare(&self, deployment: &Deployment) -> Option<Prepared> {
        let _ = deployment;
        None
    }
}

// The router holds its backend as a trait object.
const _: Option<std::sync::Arc<dyn Backend>> = None;
