//! Health checks (LiteLLM's background health checks): every deployment's
//! [`crate::Backend::health_check`] at once, the results recorded in the shared state for
//! health-check routing (LiteLLM's `enable_health_check_routing`).

use ferrolite_types::{DeploymentId, ErrorClass};

use crate::backend::BackendError;
use crate::inner::Inner;

impl Inner {
    /// Runs every deployment's health check at once (each under the router's timeout) and
    /// records the results; returns each deployment's result (see `Router::check_health`).
    pub(crate) async fn check_health(&self) -> Vec<(DeploymentId, Result<(), BackendError>)> {
        let snapshot = self.snapshot.load_full();
        let timeout = self.settings.timeout;
        let checks = snapshot.targets.iter().filter_map(|target| {
            let deployment = snapshot.deployment(target.ix)?;
            let backend = &self.backend;
            Some(async move {
                let result =
                    match tokio::time::timeout(timeout, backend.health_check(deployment)).await {
                        Ok(result) => result,
                        Err(_) => Err(BackendError::new(
                            ErrorClass::Timeout,
                            format!("no answer to the health check within {timeout:?}"),
                        )),
                    };
                (target, result)
            })
        });
        let results = futures_util::future::join_all(checks).await;
        let settings = &self.settings;
        let stale_at =
            self.cache.clock().now_ms() + settings.health_check_staleness.as_millis() as u64;
        let mut report = Vec::with_capacity(results.len());
        for (target, result) in results {
            if let Some(checks) = snapshot
                .health
                .get(target.ix)
                .and_then(|h| h.checks.as_ref())
            {
                let transient = matches!(
                    &result,
                    Err(e) if matches!(e.class, ErrorClass::RateLimited { .. } | ErrorClass::Timeout)
                );
                let mark = match &result {
                    Ok(()) => Some(&checks.passed),
                    Err(_) if transient && settings.health_check_ignore_transient_errors => None,
                    Err(_) => Some(&checks.failed),
                };
                if let Some(mark) = mark {
                    if let Err(e) = mark.extend_to(stale_at).await {
                        tracing::warn!(deployment = %target.id, error = %e, "could not record a health check");
                    }
                }
            }
            if let Err(e) = &result {
                tracing::info!(deployment = %target.id, class = ?e.class, "health check failed");
            }
            report.push((target.id.clone(), result));
        }
        report
    }
}
