//! Step 3, keys: an API key's model groups (403 outside them) and its rpm/tpm limits (429 over
//! them), counted in the shared state so every gateway instance agrees; its budget tag.

use ferrolite_router::{Request, Router, RouterError};

use super::auth::Caller;
use super::errors::GatewayError;
use crate::config::ApiKey;

/// Admits the call of `request` by `caller`: nothing to check for the master key or anyone;
/// an API key's groups, limits (on the router's token estimate, so the key's tpm and a
/// deployment's count the same tokens) and budget tag otherwise.
pub(super) async fn admit(
    router: &Router,
    caller: &Caller,
    request: &mut Request,
) -> Result<Option<KeyAdmission>, GatewayError> {
    let Some(key) = caller.key() else {
        return Ok(None);
    };
    // The router's count (checking the request's token figures first).
    let estimate = router.token_estimate(request)?;
    allowed(key, &request.model)?;
    let admitted = admit_limits(router, key, estimate).await?;
    if key.budget {
        request.budget_tags.push(key.budget_tag());
    }
    Ok(admitted)
}

/// The 403 of a key that may not call model group `model`.
fn allowed(key: &ApiKey, model: &str) -> Result<(), GatewayError> {
    if key.models.is_empty() || key.models.iter().any(|m| m == model) {
        return Ok(());
    }
    Err(GatewayError::ModelNotAllowed {
        key: key.name.clone(),
        model: model.to_string(),
        allowed: key.models.clone(),
    })
}

/// Checks an API key's rpm and tpm for a call of `tokens` (estimated): 429 over either.
async fn admit_limits(
    router: &Router,
    key: &ApiKey,
    tokens: u64,
) -> Result<Option<KeyAdmission>, GatewayError> {
    let mut checks = Vec::with_capacity(2);
    let tag = format!("api-key:{}", key.name);
    for (metric, limit, delta) in [("rpm", key.rpm, 1), ("tpm", key.tpm, tokens)] {
        if let Some(limit) = limit {
            checks.push(ferrolite_cache::LimitCheck {
                key: ferrolite_cache::hash_tagged(&tag, &format!(":{metric}")),
                // More than the limit is refused whatever the count: a huge estimate is
                // held as limit + 1, so it never reaches the counters' range.
                delta: delta.min(limit.saturating_add(1)),
                limit,
                window: ferrolite_cache::Window::MINUTE_SLIDING,
            });
        }
    }
    if checks.is_empty() {
        return Ok(None);
    }
    let tpm = checks.iter().position(|c| c.key.ends_with(":tpm"));
    let admission = router
        .cache()
        .admission()
        .admit(&checks)
        .await
        .map_err(RouterError::Cache)?;
    if admission.admitted {
        return Ok(Some(KeyAdmission {
            admission,
            tpm,
            estimate: tokens,
        }));
    }
    let over = checks
        .iter()
        .zip(&admission.counts)
        .find(|(c, count)| **count + c.delta as f64 > c.limit as f64)
        .map_or("rpm", |(c, _)| {
            if c.key.ends_with(":tpm") {
                "tpm"
            } else {
                "rpm"
            }
        });
    Err(GatewayError::KeyOverLimit {
        key: key.name.clone(),
        metric: over,
    })
}

/// An API key's admission: its tpm holds the request's estimate until the call's actual token
/// count is known ([`KeyAdmission::settle`]).
pub(super) struct KeyAdmission {
    admission: ferrolite_cache::Admission,
    /// The tpm check's place among the admission's counters, when the key has a tpm.
    tpm: Option<usize>,
    estimate: u64,
}

impl KeyAdmission {
    /// Replaces the tpm estimate with `actual` tokens (`None`: unknown, the estimate stays).
    pub(super) fn settle(self, actual: Option<u64>) {
        let (Some(tpm), Some(actual)) = (self.tpm, actual) else {
            return;
        };
        let delta = i64::try_from(actual)
            .unwrap_or(i64::MAX)
            .saturating_sub(i64::try_from(self.estimate).unwrap_or(i64::MAX));
        if delta == 0 {
            return;
        }
        if let Some(counter) = self.admission.counters().nth(tpm) {
            if let Err(e) = counter.increment(delta) {
                tracing::warn!(error = %e, "could not settle an API key's tokens");
            }
        }
    }
}
