//! Building a router: [`RouterBuilder`] in code, or [`RouterExt::from_config`] from LiteLLM's
//! `config.yaml`.

use std::collections::BTreeMap;
use std::sync::Arc;

use ferrolite_cache::{CacheConfig, CacheError, DualCache};
use ferrolite_router::{
    Backend, BackendError, BackendFuture, BackendRequest, BackendStreamFuture, HealthFuture,
    Router, RouterError, RouterSettings,
};
use ferrolite_types::{Deployment, ErrorClass};

use crate::config::{Config, ConfigError};
use crate::mock::{MockBackend, MockSpec};

/// What can fail when a router is built through the facade.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The deployments or settings are invalid.
    #[error(transparent)]
    Router(#[from] RouterError),
    /// The state cache could not start.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// The backend could not be built.
    #[error("backend: {0}")]
    Backend(String),
    /// A deployment has nothing to call it with.
    #[error(
        "deployment `{deployment}` of `{model_group}` has no backend: give the builder one with \
         `.backend(...)`, or mock it with `mock_response`"
    )]
    NoBackend {
        /// Its model group.
        model_group: String,
        /// Its id.
        deployment: String,
    },
}

/// Builds a [`Router`]: deployments, settings, the state cache and the backend.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), ferrolite::Error> {
/// use ferrolite::mock::MockSpec;
/// use ferrolite::types::Deployment;
/// use ferrolite::{Request, Router, RouterExt};
///
/// let router = Router::builder()
///     .deployment(Deployment::new("gpt-4o", "azure/gpt-4o-eu"))
///     .deployment(Deployment::new("gpt-4o", "openai/gpt-4o"))
///     .mock_all(MockSpec::reply("Hi there"))
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
    mocks: BTreeMap<String, MockSpec>,
    mock_all: Option<MockSpec>,
    /// The response cache's own store (its Redis), when it is not the state cache.
    response_cache_store: Option<CacheConfig>,
    /// Built from a configuration: the router's refusals are reported at their configuration
    /// path, with the line and column when the YAML text is known.
    config: Option<crate::config::Source>,
}

impl std::fmt::Debug for RouterBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterBuilder")
            .field("deployments", &self.deployments.len())
            .field("mocks", &self.mocks.len())
            .finish_non_exhaustive()
    }
}

impl RouterBuilder {
    /// An empty builder: LiteLLM's default settings, an in-memory cache, no backend.
    pub fn new() -> Self {
        RouterBuilder::default()
    }

    /// Everything a loaded configuration says: deployments, settings, the cache (Redis when
    /// configured), the response cache's own Redis and the mocked deployments.
    pub fn from_config(config: Config) -> Self {
        let response_cache_store = config.response_cache_redis.map(|redis| CacheConfig {
            redis: Some(redis),
            failure_mode: config.cache.failure_mode,
            ..CacheConfig::default()
        });
        RouterBuilder {
            deployments: config.deployments,
            settings: config.settings,
            cache_config: config.cache,
            response_cache_store,
            mocks: config.mocks,
            config: Some(config.source),
            ..RouterBuilder::default()
        }
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

    /// The backend that calls the deployments that are not mocked.
    pub fn backend(mut self, backend: Arc<dyn Backend>) -> Self {
        self.backend = Some(backend);
        self
    }

    /// The deployment with id `id` answers from the mock backend as `spec` says.
    pub fn mock(mut self, id: impl Into<String>, spec: MockSpec) -> Self {
        self.mocks.insert(id.into(), spec);
        self
    }

    /// Every deployment without its own mock answers as `spec` says.
    pub fn mock_all(mut self, spec: MockSpec) -> Self {
        self.mock_all = Some(spec);
        self
    }

    /// Connects the cache (unless one was given) and builds the router. The deployments and
    /// settings are checked first; then that every deployment has something to call it. Built
    /// from a configuration, a deployment or setting the router refuses is a
    /// [`ConfigError`] at its path (with its line and column).
    pub async fn build(mut self) -> Result<Router, Error> {
        let config = self.config.take();
        let built = self.build_router().await;
        match config {
            Some(source) => built.map_err(|e| at_config_path(e, source.0.as_deref())),
            None => built,
        }
    }

    async fn build_router(self) -> Result<Router, Error> {
        let backend = self.resolve_backend();
        let unmocked = if self.backend.is_none() && self.mock_all.is_none() {
            self.deployments
                .iter()
                .find(|d| !self.mocks.contains_key(d.id().as_str()))
                .map(|d| Error::NoBackend {
                    model_group: d.model_name.clone(),
                    deployment: d.id().to_string(),
                })
        } else {
            None
        };
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
        match unmocked {
            Some(error) => Err(error),
            None => Ok(router),
        }
    }

    /// The backend: the given one, with the mocked deployments answered by the mock backend.
    fn resolve_backend(&self) -> Arc<dyn Backend> {
        if self.mocks.is_empty() && self.mock_all.is_none() {
            if let Some(backend) = &self.backend {
                return Arc::clone(backend);
            }
        }
        let mut mock = MockBackend::new(self.mock_all.clone().unwrap_or_default());
        for (id, spec) in &self.mocks {
            mock = mock.with(id.clone(), spec.clone());
        }
        if let Some(seed) = self.settings.strategy.seed {
            mock = mock.seeded(seed ^ 0x5851_f42d);
        }
        let mocked: Vec<String> = if self.mock_all.is_some() {
            Vec::new()
        } else {
            self.mocks.keys().cloned().collect()
        };
        Arc::new(Dispatch {
            mock,
            mock_everything: self.mock_all.is_some(),
            mocked,
            other: self.backend.clone(),
        })
    }
}

/// Sends mocked deployments to the mock backend and the others to the given one.
struct Dispatch {
    mock: MockBackend,
    mock_everything: bool,
    mocked: Vec<String>,
    other: Option<Arc<dyn Backend>>,
}

impl Dispatch {
    fn pick(&self, deployment: &Deployment) -> Option<&dyn Backend> {
        if self.mock_everything || self.mocked.iter().any(|id| id == deployment.id().as_str()) {
            return Some(&self.mock);
        }
        self.other.as_deref()
    }
}

fn no_backend(deployment: &Deployment) -> BackendError {
    BackendError::new(
        ErrorClass::Connection,
        format!("no backend for deployment `{}`", deployment.id()),
    )
}

impl Backend for Dispatch {
    fn call<'a>(
        &'a self,
        deployment: &'a Deployment,
        request: &'a BackendRequest,
    ) -> BackendFuture<'a> {
        match self.pick(deployment) {
            Some(backend) => backend.call(deployment, request),
            None => Box::pin(std::future::ready(Err(no_backend(deployment)))),
        }
    }

    fn stream<'a>(
        &'a self,
        deployment: &'a Deployment,
        request: &'a BackendRequest,
    ) -> BackendStreamFuture<'a> {
        match self.pick(deployment) {
            Some(backend) => backend.stream(deployment, request),
            None => Box::pin(std::future::ready(Err(no_backend(deployment)))),
        }
    }

    fn health_check<'a>(&'a self, deployment: &'a Deployment) -> HealthFuture<'a> {
        match self.pick(deployment) {
            Some(backend) => backend.health_check(deployment),
            None => Box::pin(std::future::ready(Err(no_backend(deployment)))),
        }
    }
}

/// `Router::builder()` and `Router::from_config(path)` (bring the trait into scope:
/// `use ferrolite::RouterExt`).
pub trait RouterExt: Sized {
    /// A [`RouterBuilder`].
    fn builder() -> RouterBuilder;

    /// Loads LiteLLM's `config.yaml` at `path` and builds the router it describes: mocked
    /// deployments answer from the mock backend, the others through the HTTP backend (feature
    /// `http`). An invalid setting is a [`ConfigError`] naming its path; so is, with the HTTP
    /// backend, a deployment it cannot call ([`Config::for_serving`]: refused, or left out
    /// with `ferrolite_settings.skip_unsupported_deployments`). With a backend of your own,
    /// use [`build_from_config`].
    fn from_config(
        path: impl AsRef<std::path::Path> + Send,
    ) -> impl std::future::Future<Output = Result<Self, Error>> + Send;
}

impl RouterExt for Router {
    fn builder() -> RouterBuilder {
        RouterBuilder::new()
    }

    async fn from_config(path: impl AsRef<std::path::Path> + Send) -> Result<Self, Error> {
        let config = Config::from_path(path)?;
        #[cfg(feature = "http")]
        let config = config.for_serving()?;
        build_from_config(config, default_backend()?).await
    }
}

/// The backend for deployments that are not mocked: the HTTP backend with the `http` feature.
fn default_backend() -> Result<Option<Arc<dyn Backend>>, Error> {
    #[cfg(feature = "http")]
    {
        let backend = crate::http::HttpBackend::new().map_err(|e| Error::Backend(e.to_string()))?;
        Ok(Some(Arc::new(backend)))
    }
    #[cfg(not(feature = "http"))]
    {
        Ok(None)
    }
}

/// Builds the router `config` describes; `backend` calls the deployments that are not mocked.
/// A deployment or setting the router refuses is reported at its configuration path.
pub async fn build_from_config(
    config: Config,
    backend: Option<Arc<dyn Backend>>,
) -> Result<Router, Error> {
    let mut builder = RouterBuilder::from_config(config);
    builder.backend = backend;
    builder.build().await
}

/// A router's refusal of a configuration's deployment or setting, as a [`ConfigError`] at its
/// path, positioned in the YAML `text` when known.
fn at_config_path(error: Error, text: Option<&str>) -> Error {
    let located = |e: ConfigError| match text {
        Some(text) => Error::Config(e.positioned(text)),
        None => Error::Config(e),
    };
    match error {
        Error::Router(RouterError::InvalidSettings {
            field,
            value,
            reason,
        }) => located(ConfigError::at(
            format!("router_settings.{field}"),
            format!("{reason}, got `{value}`"),
        )),
        Error::Router(RouterError::InvalidDeployment { index, source, .. }) => located(
            ConfigError::at(format!("model_list[{index}]"), source.to_string()),
        ),
        other => other,
    }
}
