//! `ferrolite serve`'s background health checks, as LiteLLM's proxy runs them
//! (`_run_background_health_check`): a round of checks of every deployment
//! ([`Router::check_health`](ferrolite::Router::check_health), which records each result in the
//! shared state, so every instance's health-check routing skips a deployment that failed), then
//! a wait of `health_check_interval`, and again. A reload that changes the settings starts a
//! round at once.

use std::sync::Arc;
use std::time::Duration;

use ferrolite::HealthChecks;
use ferrolite::router::{
    Backend, BackendError, BackendFuture, BackendRequest, BackendStreamFuture, HealthFuture,
    Prepared,
};
use ferrolite::types::{Deployment, ErrorClass};
use tokio::sync::watch;

/// A backend whose health checks each get their deployment's `health_check_timeout`, and pass
/// without a call for a deployment with `disable_background_health_check` (the settings are
/// read at each check, so a reload applies to the next round); calls and streams go to the
/// inner backend unchanged.
pub(crate) struct CheckTimeouts {
    inner: Arc<dyn Backend>,
    checks: watch::Receiver<HealthChecks>,
}

impl CheckTimeouts {
    /// `inner` with the timeouts `checks` holds.
    pub(crate) fn new(inner: Arc<dyn Backend>, checks: watch::Receiver<HealthChecks>) -> Self {
        CheckTimeouts { inner, checks }
    }
}

impl Backend for CheckTimeouts {
    fn call<'a>(
        &'a self,
        deployment: &'a Deployment,
        request: &'a BackendRequest,
    ) -> BackendFuture<'a> {
        self.inner.call(deployment, request)
    }

    fn stream<'a>(
        &'a self,
        deployment: &'a Deployment,
        request: &'a BackendRequest,
    ) -> BackendStreamFuture<'a> {
        self.inner.stream(deployment, request)
    }

    fn prepare(&self, deployment: &Deployment) -> Option<Prepared> {
        self.inner.prepare(deployment)
    }

    fn health_check<'a>(&'a self, deployment: &'a Deployment) -> HealthFuture<'a> {
        let id = deployment.id();
        let (timeout, disabled) = {
            let checks = self.checks.borrow();
            (
                checks.timeout(id.as_str()),
                checks.disabled.contains(id.as_str()),
            )
        };
        if disabled {
            return Box::pin(std::future::ready(Ok(())));
        }
        let check = self.inner.health_check(deployment);
        Box::pin(async move {
            match tokio::time::timeout(timeout, check).await {
                Ok(result) => result,
                Err(_) => Err(BackendError::new(
                    ErrorClass::Timeout,
                    format!("no answer to the health check within {timeout:?}"),
                )),
            }
        })
    }
}

/// Runs rounds of checks while `checks` says they are on, on the router `handle` serves now.
/// Never completes.
pub(crate) async fn run(
    handle: &ferrolite::gateway::GatewayHandle,
    mut checks: watch::Receiver<HealthChecks>,
) {
    loop {
        let current = checks.borrow_and_update().clone();
        if current.background {
            let results = handle.router().check_health().await;
            let unhealthy: Vec<String> = results
                .iter()
                .filter(|(_, r)| r.is_err())
                .map(|(id, _)| id.to_string())
                .collect();
            tracing::info!(
                checked = results.len(),
                unhealthy = unhealthy.len(),
                "health checks done{}",
                if unhealthy.is_empty() {
                    String::new()
                } else {
                    format!("; unhealthy: {}", unhealthy.join(", "))
                }
            );
        }
        let wait = if current.background {
            current.interval
        } else {
            Duration::MAX
        };
        tokio::select! {
            () = pause(wait) => {}
            changed = checks.changed() => {
                if changed.is_err() {
                    return std::future::pending().await;
                }
            }
        }
    }
}

/// Waits `wait` (forever for `Duration::MAX`).
// The process' own schedule of checks waits in real time.
#[allow(clippy::disallowed_methods)]
async fn pause(wait: Duration) {
    if wait == Duration::MAX {
        return std::future::pending().await;
    }
    tokio::time::sleep(wait).await;
}
