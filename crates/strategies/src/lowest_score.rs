//! `least-busy` (`least_busy.py`), `cost-based-routing` (`lowest_cost.py`) and the usage-based
//! strategies (`lowest_tpm_rpm.py`, `lowest_tpm_rpm_v2.py`): the deployment with the lowest score
//! among those within their limits, random among ties.

use std::sync::Arc;

use crate::pick::{fits, lowest};
use crate::{Rng, RouteContext, Strategy, StrategyError, StrategyName, Target, Targets, UsageView};

/// The lowest-score strategies:
/// - **least-busy**: fewest calls in flight, counted across instances through the cache
///   (`{group}_request_count:{id}`, floored at 0); ties at random, not by list order (LiteLLM
///   #39322).
/// - **usage-based-routing** (v1 and v2): fewest tokens in the window. In ferrolite every
///   admission checks rpm and tpm atomically (exact in process, or across instances in strict
///   mode), so v1 and v2 differ only in name; both names are accepted.
/// - **cost-based-routing**: cheapest `input_cost_per_token + output_cost_per_token`
///   (unpriced deployments cost [`crate::DEFAULT_COST_PER_TOKEN`] each way, as in LiteLLM).
///   Deliberate difference: equal costs are broken at random instead of by list order, so twin
///   deployments share the load.
#[derive(Debug)]
pub struct LowestScore {
    rng: Rng,
    name: StrategyName,
    score: fn(&UsageView<'_>, &Target) -> f64,
}

impl LowestScore {
    /// least-busy.
    pub fn least_busy(rng: Rng) -> Self {
        LowestScore {
            rng,
            name: StrategyName::LeastBusy,
            score: |view, t| view.in_flight(t.ix) as f64,
        }
    }

    /// Lowest tokens in the window: usage-based-routing v1 or v2 (`name`).
    pub fn lowest_tokens(rng: Rng, name: StrategyName) -> Self {
        LowestScore {
            rng,
            name,
            score: |view, t| view.tpm(t.ix),
        }
    }

    /// cost-based-routing.
    pub fn cost_based(rng: Rng) -> Self {
        LowestScore {
            rng,
            name: StrategyName::CostBased,
            score: |_, t| t.cost_per_token,
        }
    }
}

impl Strategy for LowestScore {
    fn name(&self) -> StrategyName {
        self.name
    }

    fn pick<'t>(
        &self,
        ctx: &RouteContext<'_>,
        eligible: &[&'t Target],
        view: &UsageView<'_>,
    ) -> Result<&'t Target, StrategyError> {
        lowest(
            eligible,
            &self.rng,
            fits(view, ctx.estimated_tokens()),
            |t| (self.score)(view, t),
        )
        .ok_or_else(|| StrategyError::no_capacity(ctx, eligible, view))
    }

    fn for_snapshot(&self, _targets: &Targets) -> Arc<dyn Strategy> {
        Arc::new(LowestScore {
            rng: self.rng.split(),
            name: self.name,
            score: self.score,
        })
    }
}
