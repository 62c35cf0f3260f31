//! `least-busy`: the deployment with the fewest calls in flight (`least_busy.py`).

use std::sync::Arc;

use crate::pick::{fits, lowest};
use crate::{
    NoCapacity, Rng, RouteContext, Strategy, StrategyError, StrategyName, Target, UsageStore,
};

/// Picks the deployment with the fewest calls in flight, counted across instances through the
/// cache (`{group}_request_count:{id}`, floored at 0), among those within their limits; ties
/// are broken at random, not by list order (LiteLLM #39322).
#[derive(Debug)]
pub struct LeastBusy {
    usage: Arc<UsageStore>,
    rng: Rng,
}

impl LeastBusy {
    /// A least-busy strategy over `usage`.
    pub fn new(usage: Arc<UsageStore>, rng: Rng) -> Self {
        LeastBusy { usage, rng }
    }
}

impl Strategy for LeastBusy {
    fn name(&self) -> StrategyName {
        StrategyName::LeastBusy
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
            view.in_flight(t.slot) as f64
        })
        .ok_or_else(|| StrategyError::NoCapacity(NoCapacity::of(ctx, eligible, &view)))
    }
}
