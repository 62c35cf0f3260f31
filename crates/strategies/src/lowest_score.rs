//! `least-busy` (`least_busy.py`), `cost-based-routing` (`lowest_cost.py`) and the usage-based
//! strategies (`lowest_tpm_rpm.py`, `lowest_tpm_rpm_v2.py`): the deployment with the lowest score
//! among those within their limits, random among ties.

use std::sync::Arc;

use crate::candidates::{Candidates, TRIES};
use crate::pick::{fits, lowest, uniform};
use crate::{
    Rng, RouteContext, Score, Strategy, StrategyError, StrategyName, Target, Targets, UsageView,
};

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
///
/// Cost: cost-based walks the pool's cost levels (prepared per snapshot) from the cheapest and
/// draws among the candidates with room at the first level that has any. least-busy and
/// usage-based first draw a few candidates at random and take one with nothing in flight (no
/// tokens in the window) and room: the score is never below 0, so when any candidate with room
/// scores 0 the answer is a uniform draw among those, which is what a draw accepted only at 0
/// is. Otherwise (a loaded group) they scan the candidates, one pass over dense counters.
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

impl LowestScore {
    /// cost-based: at the cheapest cost level with a candidate `keep` accepts, one of those
    /// uniformly (a few draws within the level, else a pass over it).
    fn cheapest<'t>(
        &self,
        eligible: Candidates<'t, '_>,
        keep: &impl Fn(&Target) -> bool,
    ) -> Option<&'t Target> {
        eligible.pool().cost_levels().find_map(|level| {
            (0..TRIES)
                .find_map(|_| {
                    let position = level.get(self.rng.below(level.len()))?;
                    eligible.at(*position as usize).filter(|t| keep(t))
                })
                .or_else(|| {
                    let members = level.iter().filter_map(|p| eligible.at(*p as usize));
                    uniform(members, &self.rng, keep)
                })
        })
    }
}

impl Strategy for LowestScore {
    fn name(&self) -> StrategyName {
        self.name
    }

    fn pick<'t>(
        &self,
        ctx: &RouteContext<'_>,
        eligible: Candidates<'t, '_>,
        view: &UsageView<'_>,
    ) -> Result<&'t Target, StrategyError> {
        let keep = fits(view, ctx.estimated_tokens());
        let score = |t: &Target| (self.score)(view, t);
        let chosen = if eligible.is_small() {
            // A small pool is scanned at once (see `Candidates::is_small`).
            lowest(eligible.iter(), &self.rng, &keep, score)
        } else if self.name == StrategyName::CostBased {
            self.cheapest(eligible, &keep)
        } else {
            eligible
                .draw_uniform(&self.rng, |t| score(t) <= 0.0 && keep(t))
                .or_else(|| lowest(eligible.iter(), &self.rng, &keep, score))
        };
        chosen.ok_or_else(|| StrategyError::no_capacity(ctx, eligible, view))
    }

    fn score(
        &self,
        _ctx: &RouteContext<'_>,
        target: &Target,
        view: &UsageView<'_>,
    ) -> Option<Score> {
        let name = match self.name {
            StrategyName::LeastBusy => "in_flight",
            StrategyName::CostBased => "cost_per_token",
            _ => "tpm",
        };
        Some(Score::lower(name, (self.score)(view, target)))
    }

    fn for_snapshot(&self, _targets: &Targets) -> Arc<dyn Strategy> {
        Arc::new(LowestScore {
            rng: self.rng.split(),
            name: self.name,
            score: self.score,
        })
    }
}
