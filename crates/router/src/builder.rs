//! [`Router::builder()`]: deployments, settings, the state cache and the backend, put together.
//!
//! The backend is injected: your own [`Backend`], or one of the facade's (`ferrolite`'s mock
//! and HTTP backends). Loading LiteLLM's `config.yaml` is the facade's too
//! (`ferrolite::build_from_config`), which fills this builder from the configuration.

use std::sync::Arc;

use ferrolite_cache::{CacheConfig, DualCache};
use ferrolite_types::{Deployment, ErrorClass};

use crate::backend::{
    Backend, BackendError, BackendFuture, BackendRequest, BackendStreamFuture, HealthFuture,
    Prepared,
};
use crate::{Router, RouterError, RouterSettings};

/// Builds a [`Router`]: deployments, settings, the state cache and the backend.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), ferrolite_router::RouterError> {
/// use ferrolite_router::{Backend, BackendFuture, BackendRequest, BackendResponse, Request, Router};
/// use ferrolite_types::{Deployment, Usage};
///
/// struct Echo;
/// impl Backend for Echo {
///     fn call<'a>(&'a self, _: &'a Deployment, request: &'a BackendRequest) -> BackendFuture<'a> {
///         Box::pin(async move {
///             Ok(BackendResponse { body: (&request.body).into(), usage: Some(Usage::new(5, 5)), time_to_first_token: None, protocol: Default::default() })
///         })
///     }
/// }
///
/// let router = Router::builder()
///     .deployment(Deployment::new("gpt-4o", "azure/gpt-4o-eu"))
///     .deployment(Deployment::new("gpt-4o", "openai/gpt-4o"))
///     .backend(Echo)
///     .build()
///     .await?;
/// let answer = router.call(Request::new("gpt-4o", serde_json::json!({"messages": []}))).await?;
/// assert_eq!(answer.model_group, "gpt-4o");
/// # Ok(()) }
/// ```
#[derive(Default)]
pub struct RouterBuilder {
    deployments: Vec<Deployment>,
    settings: RouterSettings,
    cache_config: CacheConfig,
    cache: Option<DualCache>,
    backend: Option<Arc<dyn Backend>>,
    /// The response cache's own store (its Redis), when it is not the state cache.
    response_cache_store: Option<CacheConfig>,
}

impl std::fmt::Debug for RouterBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterBuilder")
            .field("deployments", &self.deployments.len())
            .field("backend", &self.backend.is_some())
            .finish_non_exhaustive()
    }
}

impl Router {
    /// A [`RouterBuilder`]: LiteLLM's default settings, an in-memory cache, no backend yet.
    pub fn builder() -> RouterBuilder {
        RouterBuilder::default()
    }
}

impl RouterBuilder {
    /// An empty builder: LiteLLM's default settings, an in-memory cache, no backend.
    pub fn new() -> Self {
        RouterBuilder::default()
    }

    /// Adds a deployment.
    pub fn deployment(mut self, deployment: Deployment) -> Self {
        self.deployments.push(deployment);
        self
    }

    /// Adds deployments.
    pub fn deployments(mut self, deployments: impl IntoIterator<Item = Deployment>) -> Self {
        self.deployments.extend(deployments);
        self
    }

    /// The routing settings.
    pub fn settings(mut self, settings: RouterSettings) -> Self {
        self.settings = settings;
        self
    }

    /// The state cache to connect (Redis or in memory).
    pub fn cache_config(mut self, config: CacheConfig) -> Self {
        self.cache_config = config;
        self
    }

    /// A state cache already connected (shared with other routers of this process, say).
    pub fn cache(mut self, cache: DualCache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// The response cache's own store (its own Redis), connected when the settings enable the
    /// response cache; without one it shares the state cache.
    pub fn response_cache_store(mut self, config: CacheConfig) -> Self {
        self.response_cache_store = Some(config);
        self
    }

    /// The backend that calls the deployments: your own, or one of the facade's
    /// (`ferrolite::mock::MockBackend`, `ferrolite::http::HttpBackend`); an
    /// `Arc<dyn Backend>` already shared is taken as it is.
    pub fn backend(mut self, backend: impl Backend + 'static) -> Self {
        self.backend = Some(Arc::new(backend));
        self
    }

    /// Connects the cache (unless one was given) and builds the router. The deployments and
    /// settings are checked first ([`RouterError::InvalidDeployment`],
    /// [`RouterError::InvalidSettings`]); then that the deployments have a backend to call
    /// them ([`RouterError::NoBackend`]).
    pub async fn build(self) -> Result<Router, RouterError> {
        let unserved = match &self.backend {
            Some(_) => None,
            None => self.deployments.first().map(|d| RouterError::NoBackend {
                model_group: d.model_name.clone(),
                deployment: d.id().to_string(),
            }),
        };
        let backend = self.backend.unwrap_or_else(|| Arc::new(Unset));
        let cache = match self.cache {
            Some(cache) => cache,
            None => DualCache::connect(self.cache_config).await?,
        };
        let mut router = Router::new(self.deployments, self.settings, cache, backend)?;
        if let Some(store) = self.response_cache_store {
            if router.settings().response_cache.is_some() {
                router = router.with_response_cache_store(DualCache::connect(store).await?)?;
            }
        }
        match unserved {
            Some(error) => Err(error),
            None => Ok(router),
        }
    }
}

/// The backend of a router built without one: every call fails as a connection error. Only a
/// router without deployments is built with it (deployments added later find no backend).
struct Unset;

impl Backend for Unset {
    fn call<'a>(&'a self, deployment: &'a Deployment, _: &'a BackendRequest) -> BackendFuture<'a> {
        let error = BackendError::new(
            ErrorClass::Connection,
            format!("no backend for deployment `{}`", deployment.id()),
        );
        Box::pin(std::future::ready(Err(error)))
    }
}

/// A shared backend is a backend: `.backend(Arc::clone(&shared))` calls through it.
impl<B: Backend + ?Sized> Backend for Arc<B> {
    fn call<'a>(
        &'a self,
        deployment: &'a Deployment,
        request: &'a BackendRequest,
    ) -> BackendFuture<'a> {
        (**self).call(deployment, request)
    }

    fn stream<'a>(
        &'a self,
        deployment: &'a Deployment,
        request: &'a BackendRequest,
    ) -> BackendStreamFuture<'a> {
        (**self).stream(deployment, request)
    }

    fn health_check<'a>(&'a self, deployment: &'a Deployment) -> HealthFuture<'a> {
        (**self).health_check(deployment)
    }

    fn prepare(&self, deployment: &Deployment) -> Option<Prepared> {
        (**self).prepare(deployment)
    }
}
