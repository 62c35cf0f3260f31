//! `usage-based-routing` (v1) and `usage-based-routing-v2`: the deployment with the lowest token
//! usage in the current window (`lowest_tpm_rpm.py`, `lowest_tpm_rpm_v2.py`).

use std::sync::Arc;

use ferrolite_cache::{LimitCheck, hash_tagged};

use crate::strategy::AdmitFuture;
use crate::{
    LowestScore, Rng, RouteContext, Strategy, StrategyError, StrategyName, Target, UsageStore,
};

/// How v2 admits a call against the rpm limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AdmissionMode {
    /// Check and count on the local view of the shared counters, atomically in this process
    /// (N concurrent requests against rpm = L admit exactly L here); other instances' requests
    /// are seen within one sync interval.
    #[default]
    Batched,
    /// One atomic Lua check-and-increment in Redis per call: all instances together admit
    /// exactly the limit. One Redis round trip per call.
    Strict,
}

/// Lowest tokens in the window among deployments where `tpm + input_tokens <= tpm_limit` and
/// `rpm + 1 <= rpm_limit` (read from the shared view), random among ties. v2 also admits each
/// call atomically against the rpm limit ([`AdmissionMode`]); v1 only counts it.
#[derive(Debug)]
pub struct UsageBased {
    /// The pick: lowest tokens among deployments with room.
    lowest: LowestScore,
    v2: bool,
    admission: AdmissionMode,
}

impl UsageBased {
    /// usage-based-routing (v1).
    pub fn v1(usage: Arc<UsageStore>, rng: Rng) -> Self {
        UsageBased {
            lowest: LowestScore::lowest_tokens(usage, rng, StrategyName::UsageBased),
            v2: false,
            admission: AdmissionMode::Batched,
        }
    }

    /// usage-based-routing-v2 with the given admission.
    pub fn v2(usage: Arc<UsageStore>, rng: Rng, admission: AdmissionMode) -> Self {
        UsageBased {
            lowest: LowestScore::lowest_tokens(usage, rng, StrategyName::UsageBasedV2),
            v2: true,
            admission,
        }
    }

    async fn admit_v2(&self, target: &Target) -> Result<(), StrategyError> {
        let Some(limit) = target.rpm else {
            return self.usage().count_request(target.slot);
        };
        let rejected = |current: f64| StrategyError::RateLimited {
            id: target.id.clone(),
            limit,
            current,
        };
        match self.admission {
            AdmissionMode::Batched => self
                .usage()
                .try_count_request(target.slot, limit)?
                .map(|_| ())
                .map_err(rejected),
            AdmissionMode::Strict => {
                let check = LimitCheck {
                    key: hash_tagged(target.id.as_str(), ":rpm"),
                    delta: 1.0,
                    limit: limit as f64,
                    window: self.usage().window(),
                };
                let admission = self
                    .usage()
                    .cache()
                    .admit(std::slice::from_ref(&check))
                    .await?;
                if !admission.admitted {
                    return Err(rejected(
                        admission.counts.first().copied().unwrap_or(f64::NAN),
                    ));
                }
                // Keep the shared view the selection reads in step with the admissions.
                self.usage().count_request(target.slot)
            }
        }
    }
}

impl Strategy for UsageBased {
    fn name(&self) -> StrategyName {
        self.lowest.name()
    }

    fn usage(&self) -> &UsageStore {
        self.lowest.usage()
    }

    fn pick<'t>(
        &self,
        ctx: &RouteContext<'_>,
        eligible: &[&'t Target],
    ) -> Result<&'t Target, StrategyError> {
        self.lowest.pick(ctx, eligible)
    }

    fn admit<'a>(&'a self, target: &'a Target, _ctx: &'a RouteContext<'_>) -> AdmitFuture<'a> {
        if self.v2 {
            Box::pin(self.admit_v2(target))
        } else {
            Box::pin(async move { self.usage().count_request(target.slot) })
        }
    }
}
