//! `p2c-ewma`: power of two random choices over peak-EWMA latency (new in ferrolite).
//!
//! Mitzenmacher, "The Power of Two Choices in Randomized Load Balancing" (2001), with the load
//! measure of Finagle's and tower's `PeakEwma` balancer (`tower/src/balance/p2c`, `tower/src/load/
//! peak_ewma.rs`): a latency average that jumps up to a slower sample at once and decays toward
//! faster ones with time constant `tau`, multiplied by the calls in flight + 1. Two candidates are
//! drawn at random and the less loaded one wins, which costs O(1) per pick however large the
//! group and avoids the herding of "always the single best".

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ferrolite_cache::Clock;
use ferrolite_types::{ErrorClass, LearnedState, PerDeployment};

use crate::candidates::{Candidates, TRIES};
use crate::latency::TIMEOUT_PENALTY_SECS;
use crate::pick::{fits, lowest};
use crate::{
    Outcome, Rng, RouteContext, Score, Strategy, StrategyError, StrategyName, Target, Targets,
    UsageView,
};

/// Decay time constant of the EWMA (tower's default is 10 s as well).
pub const DEFAULT_DECAY: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct PeakEwma {
    /// Seconds, as f64 bits (0 = no sample yet).
    value: AtomicU64,
    updated_ms: AtomicU64,
}

impl PeakEwma {
    fn observe(&self, sample: f64, now_ms: u64, tau_ms: f64) {
        let previous = f64::from_bits(self.value.load(Ordering::Acquire));
        let elapsed = now_ms.saturating_sub(self.updated_ms.load(Ordering::Acquire)) as f64;
        let next = if previous == 0.0 || sample > previous {
            sample // peak: a slower sample counts at once
        } else {
            let decay = (-elapsed / tau_ms).exp();
            previous * decay + sample * (1.0 - decay)
        };
        self.value.store(next.to_bits(), Ordering::Release);
        self.updated_ms.store(now_ms, Ordering::Release);
    }

    fn get(&self) -> f64 {
        f64::from_bits(self.value.load(Ordering::Acquire))
    }
}

/// Power of two choices on `peak EWMA latency x (in flight + 1)`, among deployments within
/// their limits. Deployments without a latency sample cost 0 and so are tried first. EWMAs are
/// kept per deployment id: a new snapshot keeps what was learned of unchanged deployments.
#[derive(Debug)]
pub struct P2cEwma {
    rng: Rng,
    clock: Arc<dyn Clock>,
    learned: Arc<LearnedState<PeakEwma>>,
    ewma: PerDeployment<Arc<PeakEwma>>,
    tau_ms: f64,
}

impl P2cEwma {
    /// A p2c-ewma strategy for `targets` with decay time constant `decay`.
    pub fn new(targets: &Targets, rng: Rng, clock: Arc<dyn Clock>, decay: Duration) -> Self {
        let learned = Arc::new(LearnedState::new());
        P2cEwma {
            ewma: learned.bind(targets.index(), PeakEwma::default),
            learned,
            rng,
            clock,
            tau_ms: decay.as_millis().max(1) as f64,
        }
    }

    fn load(&self, view: &UsageView<'_>, target: &Target) -> f64 {
        let latency = self.ewma.get(target.ix).map_or(0.0, |e| e.get());
        latency * (view.in_flight(target.ix) + 1) as f64
    }

    fn sample(&self, target: &Target, seconds: f64) {
        if let Some(ewma) = self.ewma.get(target.ix) {
            ewma.observe(seconds, self.clock.now_ms(), self.tau_ms);
        }
    }
}

impl P2cEwma {
    /// Two distinct candidates, each uniformly at random: positions of the pool, redrawn while
    /// they fall on a member left out (a few times; `None` when that does not find two).
    fn two<'t>(&self, eligible: Candidates<'t, '_>) -> Option<(&'t Target, &'t Target)> {
        if eligible.is_small() && !eligible.is_whole() {
            // As over a list of the candidates (a seeded strategy draws what it always did).
            let list: Vec<&'t Target> = eligible.iter().collect();
            let n = list.len();
            let a = self.rng.below(n);
            let b = (a + 1 + self.rng.below(n - 1)) % n;
            return list.get(a).copied().zip(list.get(b).copied());
        }
        let n = eligible.pool().len();
        if eligible.is_whole() {
            let a = self.rng.below(n);
            let b = (a + 1 + self.rng.below(n - 1)) % n;
            return eligible.at(a).zip(eligible.at(b));
        }
        let a = (0..TRIES).find_map(|_| {
            let p = self.rng.below(n);
            eligible.at(p).map(|t| (p, t))
        })?;
        let b = (0..TRIES).find_map(|_| {
            let p = self.rng.below(n);
            (p != a.0).then(|| eligible.at(p)).flatten()
        })?;
        Some((a.1, b))
    }
}

impl Strategy for P2cEwma {
    fn name(&self) -> StrategyName {
        StrategyName::P2cEwma
    }

    fn pick<'t>(
        &self,
        ctx: &RouteContext<'_>,
        eligible: Candidates<'t, '_>,
        view: &UsageView<'_>,
    ) -> Result<&'t Target, StrategyError> {
        let keep = fits(view, ctx.estimated_tokens());
        if eligible.len() > 2 {
            if let Some((ta, tb)) = self.two(eligible) {
                match (keep(ta), keep(tb)) {
                    (true, true) => {
                        return Ok(if self.load(view, tb) < self.load(view, ta) {
                            tb
                        } else {
                            ta
                        });
                    }
                    (true, false) => return Ok(ta),
                    (false, true) => return Ok(tb),
                    (false, false) => {} // both full: look at everyone
                }
            }
        }
        lowest(eligible.iter(), &self.rng, keep, |t| self.load(view, t))
            .ok_or_else(|| StrategyError::no_capacity(ctx, eligible, view))
    }

    fn score(
        &self,
        _ctx: &RouteContext<'_>,
        target: &Target,
        view: &UsageView<'_>,
    ) -> Option<Score> {
        Some(Score::lower("load", self.load(view, target)))
    }

    fn observe(&self, target: &Target, outcome: &Outcome<'_>) {
        match outcome {
            Outcome::Success(call) => {
                let latency = call.time_to_first_token.unwrap_or(call.latency);
                self.sample(target, latency.as_secs_f64());
            }
            Outcome::Failure(ErrorClass::Timeout) => self.sample(target, TIMEOUT_PENALTY_SECS),
            Outcome::Failure(_) => {}
        }
    }

    fn for_snapshot(&self, targets: &Targets) -> Arc<dyn Strategy> {
        Arc::new(P2cEwma {
            ewma: self.learned.bind(targets.index(), PeakEwma::default),
            learned: Arc::clone(&self.learned),
            rng: self.rng.split(),
            clock: Arc::clone(&self.clock),
            tau_ms: self.tau_ms,
        })
    }
}
