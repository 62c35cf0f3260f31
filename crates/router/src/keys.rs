//! An API key's own rate limits ([`KeyLimits`]): admitted once per request, before the response
//! cache, in the shared state (`{api-key:NAME}:rpm` and `:tpm`), with the same token estimate
//! as a deployment's; the request's tpm estimate is settled to the tokens its answer used.

use crate::inner::Inner;
use crate::{KeyLimits, RouterError};

/// The calling API key's admission ([`crate::KeyLimits`]), taken once per request: its tpm
/// holds the request's estimate until the tokens the answer used are known. The request's
/// `Call` holds it while attempts run; the attempt that answers hands it to its `Held`.
/// Dropped unsettled (a call cut short, a stream that broke or was dropped), the estimate
/// stays counted. Boxed: a call's future carries it through every stage, and most requests
/// have none.
pub(crate) struct HeldKey(Box<Admitted>);

/// What a key's admission took.
struct Admitted {
    admission: ferrolite_cache::Admission,
    /// The tpm check's place among the admission's counters, when the key has a tpm.
    tpm: Option<usize>,
    estimate: u64,
}

impl HeldKey {
    /// The request used no tokens (it failed, or the response cache answered it): the tpm
    /// gives its estimate back; the request stays counted.
    pub(crate) fn unused(self) {
        self.settle(Some(0));
    }

    /// Replaces the tpm estimate with `actual` tokens (`None`: unknown, the estimate stays).
    pub(crate) fn settle(self, actual: Option<u64>) {
        let Admitted {
            admission,
            tpm,
            estimate,
        } = *self.0;
        let (Some(tpm), Some(actual)) = (tpm, actual) else {
            return;
        };
        let delta = i64::try_from(actual)
            .unwrap_or(i64::MAX)
            .saturating_sub(i64::try_from(estimate).unwrap_or(i64::MAX));
        if delta == 0 {
            return;
        }
        if let Some(counter) = admission.counters().nth(tpm) {
            if let Err(e) = counter.increment(delta) {
                tracing::warn!(error = %e, "could not settle an API key's tokens");
            }
        }
    }
}

impl Inner {
    /// Admits the calling API key's rpm and `tokens` against its tpm ([`KeyLimits`]):
    /// `None` when the key has neither limit; [`RouterError::KeyLimited`] naming the limit it
    /// is over. Counted in the shared state, so every instance agrees.
    pub(crate) async fn admit_key(
        &self,
        limits: &KeyLimits,
        tokens: u64,
    ) -> Result<Option<HeldKey>, RouterError> {
        use ferrolite_cache::{LimitCheck, Window, hash_tagged};
        let mut checks = Vec::with_capacity(2);
        let tag = format!("api-key:{}", limits.name);
        for (metric, limit, delta) in [("rpm", limits.rpm, 1), ("tpm", limits.tpm, tokens)] {
            if let Some(limit) = limit {
                checks.push(LimitCheck {
                    key: hash_tagged(&tag, &format!(":{metric}")),
                    // More than the limit is refused whatever the count: a huge estimate is
                    // held as limit + 1, so it never reaches the counters' range.
                    delta: delta.min(limit.saturating_add(1)),
                    limit,
                    window: Window::MINUTE_SLIDING,
                });
            }
        }
        if checks.is_empty() {
            return Ok(None);
        }
        let tpm = checks.iter().position(|c| c.key.ends_with(":tpm"));
        let admission = Box::pin(self.cache.admission().admit(&checks)).await?;
        if admission.admitted {
            return Ok(Some(HeldKey(Box::new(Admitted {
                admission,
                tpm,
                estimate: tokens,
            }))));
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
        Err(RouterError::KeyLimited {
            key: limits.name.clone(),
            limit: over,
        })
    }
}
