//! `simple-shuffle`: a weighted random pick (LiteLLM's default strategy, `simple_shuffle.py`).

use std::sync::Arc;

use crate::pick::{fits, uniform, weighted};
use crate::{Rng, RouteContext, Strategy, StrategyError, StrategyName, Target, Targets, UsageView};

/// Picks at random, weighted by the first of these that any eligible deployment declares:
/// request-scoped weights, `weight`, `rpm`, `tpm`; uniformly when none does. As in LiteLLM, a
/// deployment that does not declare the chosen metric weighs 0 and is not picked.
///
/// Deliberate difference: LiteLLM's simple-shuffle ignores limits (rpm only weighs); ferrolite
/// never picks a deployment at its rpm/tpm limit, and an explicit 0 blocks.
#[derive(Debug)]
pub struct SimpleShuffle {
    rng: Rng,
}

impl SimpleShuffle {
    /// A simple-shuffle strategy.
    pub fn new(rng: Rng) -> Self {
        SimpleShuffle { rng }
    }
}

impl Strategy for SimpleShuffle {
    fn name(&self) -> StrategyName {
        StrategyName::SimpleShuffle
    }

    fn pick<'t>(
        &self,
        ctx: &RouteContext<'_>,
        eligible: &[&'t Target],
        view: &UsageView<'_>,
    ) -> Result<&'t Target, StrategyError> {
        ctx.validate()?;
        let keep = fits(view, ctx.estimated_tokens());
        // The first weight set that gives a positive weight to a deployment with room decides
        // (an undeclared weight counts 0); when none does, a uniform pick among those with room.
        let request = ctx.weights.and_then(|weights| {
            weighted(eligible, &self.rng, &keep, |t| {
                weights.get(&t.id).copied().unwrap_or(0.0)
            })
        });
        let metrics: [fn(&Target) -> Option<f64>; 3] = [
            |t| t.weight,
            |t| t.rpm.map(|v| v as f64),
            |t| t.tpm.map(|v| v as f64),
        ];
        let chosen = request
            .or_else(|| {
                metrics.into_iter().find_map(|metric| {
                    weighted(eligible, &self.rng, &keep, |t| metric(t).unwrap_or(0.0))
                })
            })
            .or_else(|| uniform(eligible, &self.rng, &keep));
        chosen.ok_or_else(|| StrategyError::no_capacity(ctx, eligible, view))
    }

    fn for_snapshot(&self, _targets: &Targets) -> Arc<dyn Strategy> {
        Arc::new(SimpleShuffle::new(self.rng.split()))
    }
}
