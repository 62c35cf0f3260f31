//! `simple-shuffle`: a weighted random pick (LiteLLM's default strategy, `simple_shuffle.py`).

use std::sync::Arc;

use crate::pick::{fits, uniform, weighted};
use crate::{
    NoCapacity, Rng, RouteContext, Strategy, StrategyError, StrategyName, Target, UsageStore,
};

/// Picks at random, weighted by the first of these that any eligible deployment declares:
/// request-scoped weights, `weight`, `rpm`, `tpm`; uniformly when none does. As in LiteLLM, a
/// deployment that does not declare the chosen metric weighs 0 and is not picked.
///
/// Deliberate difference: LiteLLM's simple-shuffle ignores limits (rpm only weighs); ferrolite
/// never picks a deployment at its rpm/tpm limit, and an explicit 0 blocks.
#[derive(Debug)]
pub struct SimpleShuffle {
    usage: Arc<UsageStore>,
    rng: Rng,
}

impl SimpleShuffle {
    /// A simple-shuffle strategy over `usage`.
    pub fn new(usage: Arc<UsageStore>, rng: Rng) -> Self {
        SimpleShuffle { usage, rng }
    }
}

impl Strategy for SimpleShuffle {
    fn name(&self) -> StrategyName {
        StrategyName::SimpleShuffle
    }

    fn usage(&self) -> &UsageStore {
        &self.usage
    }

    fn pick<'t>(
        &self,
        ctx: &RouteContext<'_>,
        eligible: &[&'t Target],
    ) -> Result<&'t Target, StrategyError> {
        ctx.validate()?;
        let view = self.usage.view()?;
        let keep = fits(&view, ctx.input_tokens);
        let declares =
            |metric: fn(&Target) -> Option<f64>| eligible.iter().any(|t| metric(t).is_some());
        let chosen = if let Some(weights) = ctx.weights {
            // Request-scoped weights decide alone: an id missing from them weighs 0.
            weighted(eligible, &self.rng, &keep, |t| {
                weights.get(&t.id).copied().unwrap_or(0.0)
            })
        } else {
            let metrics: [fn(&Target) -> Option<f64>; 3] = [
                |t| t.weight,
                |t| t.rpm.map(|v| v as f64),
                |t| t.tpm.map(|v| v as f64),
            ];
            let mut chosen = None;
            let mut declared = false;
            for metric in metrics {
                if declares(metric) {
                    declared = true;
                    chosen = weighted(eligible, &self.rng, &keep, |t| metric(t).unwrap_or(0.0));
                    if chosen.is_some() {
                        break;
                    }
                }
            }
            if declared {
                chosen
            } else {
                uniform(eligible, &self.rng, &keep)
            }
        };
        chosen.ok_or_else(|| StrategyError::NoCapacity(NoCapacity::of(ctx, eligible, &view)))
    }
}
