//! Building a router from LiteLLM's `config.yaml`: [`from_config`] with the HTTP backend,
//! [`build_from_config`] with a backend of your own. In code, [`Router::builder()`] (the
//! router crate's [`RouterBuilder`]) takes the backend as a value: the [mock](crate::mock)
//! backend, the HTTP backend, or your own.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), ferrolite::Error> {
//! use ferrolite::mock::{MockBackend, MockSpec};
//! use ferrolite::types::Deployment;
//! use ferrolite::{Request, Router};
//!
//! let router = Router::builder()
//!     .deployment(Deployment::new("gpt-4o", "azure/gpt-4o-eu"))
//!     .deployment(Deployment::new("gpt-4o", "openai/gpt-4o"))
//!     .backend(MockBackend::new(MockSpec::reply("Hi there")))
//!     .build()
//!     .await?;
//! let answer = router.call(Request::new("gpt-4o", serde_json::json!({"messages": []}))).await?;
//! assert_eq!(answer.model_group, "gpt-4o");
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use ferrolite_cache::{CacheConfig, CacheError};
use ferrolite_router::{
    Backend, BackendError, BackendFuture, BackendRequest, BackendStreamFuture, HealthFuture,
    Prepared, Router, RouterBuilder, RouterError,
};
use ferrolite_types::{Deployment, DeploymentId, ErrorClass};

use crate::config::{Config, ConfigError};
use crate::mock::{MockBackend, MockSpec};

/// What can fail when a router is built through the facade.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The deployments or settings are invalid, or a deployment has no backend.
    #[error(transparent)]
    Router(#[from] RouterError),
    /// The state cache could not start.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// The backend could not be built.
    #[error("backend: {0}")]
    Backend(String),
}

/// Loads LiteLLM's `config.yaml` at `path` and builds the router it describes: mocked
/// deployments answer from the mock backend, the others through the HTTP backend (feature
/// `http`). An invalid setting is a [`ConfigError`] naming its path; so is, with the HTTP
/// backend, a deployment it cannot call ([`Config::for_serving`]: refused, or left out with
/// `ferrolite_settings.skip_unsupported_deployments`). With a backend of your own, use
/// [`build_from_config`].
pub async fn from_config(path: impl AsRef<std::path::Path>) -> Result<Router, Error> {
    let config = Config::from_path(path)?;
    #[cfg(feature = "http")]
    let config = config.for_serving()?;
    build_from_config(config, default_backend()?).await
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

/// Builds the router `config` describes: its deployments, settings, state cache (Redis when
/// configured), the response cache's own Redis, and its mocked deployments answered by the
/// mock backend; `backend` calls the others. A deployment or setting the router refuses is a
/// [`ConfigError`] at its configuration path (with its line and column); then a deployment
/// neither mocked nor served by `backend` is [`RouterError::NoBackend`].
pub async fn build_from_config(
    config: Config,
    backend: Option<Arc<dyn Backend>>,
) -> Result<Router, Error> {
    build_from_config_with(config, backend, |builder| builder).await
}

/// [`build_from_config`], with the router builder changed by `adjust` before it builds: a
/// state cache already connected (`|b| b.cache(cache)`, as a hot reload keeps its cache), say.
pub async fn build_from_config_with(
    config: Config,
    backend: Option<Arc<dyn Backend>>,
    adjust: impl FnOnce(RouterBuilder) -> RouterBuilder,
) -> Result<Router, Error> {
    let source = config.source.clone();
    let unserved = match &backend {
        Some(_) => None,
        None => config
            .deployments
            .iter()
            .find(|d| !config.mocks.contains_key(d.id().as_str()))
            .map(|d| RouterError::NoBackend {
                model_group: d.model_name.clone(),
                deployment: d.id().to_string(),
            }),
    };
    let built = adjust(router_builder(config, backend)).build().await;
    match (built, unserved) {
        (Err(e), _) => Err(at_config_path(e, source.0.as_deref())),
        (Ok(_), Some(unserved)) => Err(Error::Router(unserved)),
        (Ok(router), None) => Ok(router),
    }
}

/// The router builder of `config`, its mocked deployments sent to the mock backend and the
/// others to `backend`.
fn router_builder(config: Config, backend: Option<Arc<dyn Backend>>) -> RouterBuilder {
    let mut builder = Router::builder()
        .deployments(config.deployments)
        .cache_config(config.cache.clone());
    if let Some(redis) = config.response_cache_redis {
        builder = builder.response_cache_store(CacheConfig {
            redis: Some(redis),
            failure_mode: config.cache.failure_mode,
            ..CacheConfig::default()
        });
    }
    let backend: Arc<dyn Backend> = match backend {
        Some(backend) if config.mocks.is_empty() => backend,
        other => {
            let mut mock = mock_backend(&config.mocks);
            if let Some(seed) = config.settings.strategy.seed {
                mock = mock.seeded(seed ^ 0x5851_f42d);
            }
            Arc::new(Dispatch {
                mock,
                mocked: config.mocks.into_keys().collect(),
                other,
            })
        }
    };
    builder.settings(config.settings).backend(backend)
}

/// The mock backend of the mocked deployments `mocks` (id -> spec). The spec most of them share
/// is the backend's default, so only the others are stored by id: a fleet of 10,000 deployments
/// mocked alike holds one spec, not 10,000 copies (about 290 bytes each with the id's slot).
/// Only mocked deployments reach this backend ([`Dispatch`]), so the default answers none other.
fn mock_backend(mocks: &BTreeMap<String, MockSpec>) -> MockBackend {
    let common = most_common(mocks.values()).cloned().unwrap_or_default();
    let mut mock = MockBackend::new(common.clone());
    for (id, spec) in mocks {
        if *spec != common {
            mock = mock.with(id.clone(), spec.clone());
        }
    }
    mock
}

/// The value most of `values` equal (the first of those tied), comparing each with at most
/// [`DISTINCT_SEEN`] distinct values met first; `None` when there are none.
pub(crate) fn most_common<'a, T: PartialEq>(
    values: impl IntoIterator<Item = &'a T>,
) -> Option<&'a T> {
    let mut seen: Vec<(&T, usize)> = Vec::new();
    for value in values {
        if let Some((_, count)) = seen.iter_mut().find(|(v, _)| *v == value) {
            *count += 1;
        } else if seen.len() < DISTINCT_SEEN {
            seen.push((value, 1));
        }
    }
    let best = seen.iter().map(|(_, count)| *count).max()?;
    seen.into_iter()
        .find(|(_, count)| *count == best)
        .map(|(value, _)| value)
}

/// How many distinct values [`most_common`] keeps count of (a config mocks its deployments a
/// few ways at most; past this, one of the first ones is a good enough default).
const DISTINCT_SEEN: usize = 16;

/// Sends mocked deployments to the mock backend and the others to the given one.
struct Dispatch {
    mock: MockBackend,
    /// The mocked deployments' ids: one lookup of the id the router passes with the call.
    mocked: HashSet<String>,
    other: Option<Arc<dyn Backend>>,
}

impl Dispatch {
    fn pick(&self, id: &DeploymentId) -> Option<&dyn Backend> {
        if self.mocked.contains(id.as_str()) {
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
        match self.pick(&request.deployment_id_of(deployment)) {
            Some(backend) => backend.call(deployment, request),
            None => Box::pin(std::future::ready(Err(no_backend(deployment)))),
        }
    }

    fn stream<'a>(
        &'a self,
        deployment: &'a Deployment,
        request: &'a BackendRequest,
    ) -> BackendStreamFuture<'a> {
        match self.pick(&request.deployment_id_of(deployment)) {
            Some(backend) => backend.stream(deployment, request),
            None => Box::pin(std::future::ready(Err(no_backend(deployment)))),
        }
    }

    fn health_check<'a>(&'a self, deployment: &'a Deployment) -> HealthFuture<'a> {
        match self.pick(&deployment.id()) {
            Some(backend) => backend.health_check(deployment),
            None => Box::pin(std::future::ready(Err(no_backend(deployment)))),
        }
    }

    fn prepare(&self, deployment: &Deployment) -> Option<Prepared> {
        self.pick(&deployment.id())?.prepare(deployment)
    }
}

/// A router's refusal of a configuration's deployment or setting, as a [`ConfigError`] at its
/// path, positioned in the YAML `text` when known; a state cache that could not start, as
/// [`Error::Cache`].
fn at_config_path(error: RouterError, text: Option<&str>) -> Error {
    let located = |e: ConfigError| match text {
        Some(text) => Error::Config(e.positioned(text)),
        None => Error::Config(e),
    };
    match error {
        RouterError::InvalidSettings {
            field,
            value,
            reason,
        } => located(ConfigError::at(
            format!("router_settings.{field}"),
            format!("{reason}, got `{value}`"),
        )),
        RouterError::InvalidDeployment { index, source, .. } => located(ConfigError::at(
            format!("model_list[{index}]"),
            source.to_string(),
        )),
        RouterError::Cache(cache) => Error::Cache(cache),
        other => Error::Router(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_common_value_is_found_and_ties_go_to_the_first() {
        assert_eq!(most_common::<u32>([]), None);
        assert_eq!(most_common(&[3, 1, 3, 2, 1, 3]), Some(&3));
        assert_eq!(most_common(&[2, 1, 1, 2]), Some(&2));
        // Past the distinct values it counts, later ones are not counted.
        let many: Vec<u32> = (0..100).chain([99, 99]).collect();
        assert_eq!(most_common(&many), Some(&0));
    }

    /// Every mocked deployment answers as its own spec says, whether that spec became the
    /// backend's default or was stored by id.
    #[tokio::test]
    async fn each_mocked_deployment_answers_its_own_spec() {
        let mut mocks = BTreeMap::new();
        for i in 0..5 {
            mocks.insert(format!("common-{i}"), MockSpec::reply("common"));
        }
        mocks.insert("odd".to_string(), MockSpec::reply("odd"));
        let backend = mock_backend(&mocks);
        for (id, expected) in [
            ("common-0", "common"),
            ("common-4", "common"),
            ("odd", "odd"),
        ] {
            let deployment = Deployment {
                id: Some(id.to_string()),
                ..Deployment::new("g", "openai/gpt-4o")
            };
            let request = BackendRequest {
                trace: None,
                native: None,
                body: serde_json::json!({"messages": [{"role": "user", "content": "hi"}]}),
                stream: false,
                request_id: None,
                deployment_id: None,
                prepared: None,
            };
            let answer = backend
                .call(&deployment, &request)
                .await
                .map_err(|e| e.to_string());
            let text = answer.map(|a| {
                a.body.to_value().unwrap_or_default()["choices"][0]["message"]["content"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            });
            assert_eq!(text.as_deref(), Ok(expected), "deployment {id}");
        }
    }
}
