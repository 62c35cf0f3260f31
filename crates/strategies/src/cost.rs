//! `cost-based-routing`: the cheapest deployment within its limits (`lowest_cost.py`).

use std::sync::Arc;

use crate::pick::{fits, lowest};
use crate::{
    NoCapacity, Rng, RouteContext, Strategy, StrategyError, StrategyName, Target, UsageStore,
};

/// Cheapest `input_cost_per_token + output_cost_per_token` (unpriced deployments cost
/// [`crate::DEFAULT_COST_PER_TOKEN`] each way, as in LiteLLM) among deployments within their
/// limits. Deliberate difference: equal costs are broken at random instead of by list order,
/// so twin deployments share the load.
#[derive(Debug)]
pub struct CostBased {
    usage: Arc<UsageStore>,
    rng: Rng,
}

impl CostBased {
    /// A cost-based strategy over `usage`.
    pub fn new(usage: Arc<UsageStore>, rng: Rng) -> Self {
        CostBased { usage, rng }
    }
}

impl Strategy for CostBased {
    fn name(&self) -> StrategyName {
        StrategyName::CostBased
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
            t.cost_per_token
        })
        .ok_or_else(|| StrategyError::NoCapacity(NoCapacity::of(ctx, eligible, &view)))
    }
}
