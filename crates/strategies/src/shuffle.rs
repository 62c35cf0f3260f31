//! `simple-shuffle`: a weighted random pick (LiteLLM's default strategy, `simple_shuffle.py`).

use std::sync::Arc;

use crate::candidates::{Candidates, METRICS, metric_weight};
use crate::pick::{draw_weighted, fits, uniform, weighted};
use crate::{Rng, RouteContext, Strategy, StrategyError, StrategyName, Target, Targets, UsageView};

/// Picks at random, weighted by the first of these that any eligible deployment declares:
/// request-scoped weights, `weight`, `rpm`, `tpm`; uniformly when none does. As in LiteLLM, a
/// deployment that does not declare the chosen metric weighs 0 and is not picked.
///
/// Deliberate difference: LiteLLM's simple-shuffle ignores limits (rpm only weighs); ferrolite
/// never picks a deployment at its rpm/tpm limit, and an explicit 0 blocks.
///
/// Cost: a draw is a binary search in the pool's running weights (prepared per snapshot) and
/// one limit check, taken when the drawn deployment is a candidate with room; after a few
/// rejected draws the pick scans the candidates as the definition says (request-scoped weights
/// always scan: they change per request).
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
        eligible: Candidates<'t, '_>,
        view: &UsageView<'_>,
    ) -> Result<&'t Target, StrategyError> {
        ctx.validate()?;
        let keep = fits(view, ctx.estimated_tokens());
        // The first weight set that gives a positive weight to a deployment with room decides
        // (an undeclared weight counts 0); when none does, a uniform pick among those with room.
        if let Some(weights) = ctx.weights {
            if let Some(chosen) = weighted(eligible, &self.rng, &keep, |t| {
                weights.get(&t.id).copied().unwrap_or(0.0)
            }) {
                return Ok(chosen);
            }
        }
        // Per static metric: a metric no member of the pool weighs is skipped (its total over
        // the candidates with room is 0). A draw the fast path accepts is a candidate with room
        // and a positive weight, so this metric is the first with a positive total: the rule
        // above holds, and the draw has `weighted`'s distribution (see `draw_weighted`). When
        // the draws were all rejected, the exact pass decides, and moves on to the next metric
        // only when this one's total over the candidates with room is 0.
        // A small pool is scanned at once (see `Candidates::is_small`).
        let draw = !eligible.is_small();
        for metric in 0..METRICS {
            if eligible.pool().cumulative(metric).is_none() {
                continue;
            }
            if let Some(chosen) = draw
                .then(|| draw_weighted(eligible, &self.rng, metric, &keep))
                .flatten()
                .or_else(|| weighted(eligible, &self.rng, &keep, |t| metric_weight(t, metric)))
            {
                return Ok(chosen);
            }
        }
        draw.then(|| eligible.draw_uniform(&self.rng, &keep))
            .flatten()
            .or_else(|| uniform(eligible.iter(), &self.rng, &keep))
            .ok_or_else(|| StrategyError::no_capacity(ctx, eligible, view))
    }

    fn for_snapshot(&self, _targets: &Targets) -> Arc<dyn Strategy> {
        Arc::new(SimpleShuffle::new(self.rng.split()))
    }
}
