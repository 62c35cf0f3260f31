//! A `tower::Service` over the router (feature `tower`), so a router composes with tower
//! middleware: timeouts, load shedding, concurrency limits, tracing.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use std::time::Duration;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//! use ferrolite::mock::{MockBackend, MockSpec};
//! use ferrolite::service::RouterService;
//! use ferrolite::types::Deployment;
//! use ferrolite::{Request, Router};
//!
//! let router = Router::builder()
//!     .deployment(Deployment::new("gpt-4o", "openai/gpt-4o"))
//!     .backend(MockBackend::new(MockSpec::reply("hi")))
//!     .build()
//!     .await?;
//! let mut service = ServiceBuilder::new()
//!     .concurrency_limit(64)
//!     .service(RouterService::new(router));
//! let answer = service
//!     .ready()
//!     .await?
//!     .call(Request::new("gpt-4o", serde_json::json!({"messages": []})))
//!     .await?;
//! assert_eq!(answer.model_group, "gpt-4o");
//! # Ok(()) }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use ferrolite_router::{Request, Router, RouterError, RouterResponse};

/// The router as a `tower::Service<Request>`: always ready (admission, limits and queueing are
/// the router's); each call is [`Router::call`].
#[derive(Clone, Debug)]
pub struct RouterService {
    router: Router,
}

impl RouterService {
    /// A service over `router`.
    pub fn new(router: Router) -> Self {
        RouterService { router }
    }

    /// The router.
    pub fn router(&self) -> &Router {
        &self.router
    }
}

impl tower::Service<Request> for RouterService {
    type Response = RouterResponse;
    type Error = RouterError;
    type Future = Pin<Box<dyn Future<Output = Result<RouterResponse, RouterError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let router = self.router.clone();
        Box::pin(async move { router.call(request).await })
    }
}
