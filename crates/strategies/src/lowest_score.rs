//! `least-busy` (`least_busy.py`) and `cost-based-routing` (`lowest_cost.py`): the deployment
//! with the lowest score among those within their limits, random among ties. The usage-based
//! strategies pick the same way, by tokens in the window (`crate::UsageBased`).

use std::sync::Arc;

use crate::pick::{fits, lowest};
use crate::{
    Rng, RouteContext, Strategy, StrategyError, StrategyName, Target, UsageStore, UsageView,
};

/// The lowest-score strategies:
/// - **least-busy**: fewest calls in flight, counted across instances through the cache
///   (`{group}_request_count:{id}`, floored at 0); ties at random, not by list order (LiteLLM
///   #39322).
/// - **cost-based-routing**: cheapest `input_cost_per_token + output_cost_per_token`
///   (unpriced deployments cost [`crate::DEFAULT_COST_PER_TOKEN`] each way, as in LiteLLM).
///   Deliberate difference: equal costs are broken at random instead of by list order, so twin
///   deployments share the load.
#[derive(Debug)]
pub struct LowestScore {
    usage: Arc<UsageStore>,
    rng: Rng,
    name: StrategyName,
    score: fn(&UsageView<'_>, &Target) -> f64,
}

impl LowestScore {
    /// least-busy over `usage`.
    pub fn least_busy(usage: Arc<UsageStore>, rng: Rng) -> Self {
        LowestScore {
            usage,
            rng,
            name: StrategyName::LeastBusy,
            score: |view, t| view.in_flight(t.slot) as f64,
        }
    }

    /// Lowest tokens in the window: the pick of usage-based-routing v1 and v2 (`name`).
    pub(crate) fn lowest_tokens(usage: Arc<UsageStore>, rng: Rng, name: StrategyName) -> Self {
        LowestScore {
            usage,
            rng,
            name,
            score: |view, t| view.tpm(t.slot),
        }
    }

    /// cost-based-routing over `usage`.
    pub fn cost_based(usage: Arc<UsageStore>, rng: Rng) -> Self {
        LowestScore {
            usage,
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

    fn usage(&self) -> &UsageStore {
        &self.usage
    }

    fn pick<'t>(
        &self,
        ctx: &RouteContext<'_>,
        eligible: &[&'t Target],
    ) -> Result<&'t Target, StrategyError> {
        let view = self.usage.view()?;
        lowest(eligible, &self.rng, fits(&view, ctx.input_tokens), |t| {
            (self.score)(&view, t)
        })
        .ok_or_else(|| StrategyError::no_capacity(ctx, eligible, &view))
    }
}
