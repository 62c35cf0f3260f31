//! `latency-based-routing`: the deployment that answered fastest lately (`lowest_latency.py`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ferrolite_cache::Clock;
use ferrolite_types::{ErrorClass, LearnedState, PerDeployment};
use parking_lot::Mutex;

use crate::candidates::Candidates;
use crate::pick::{fits, lowest, uniform};
use crate::{
    Outcome, Rng, RouteContext, Strategy, StrategyError, StrategyName, Target, Targets, UsageView,
};

/// LiteLLM's penalty sample for a timed-out call: 1000 s.
pub const TIMEOUT_PENALTY_SECS: f64 = 1000.0;

/// Last `size` samples with the time they were taken; their mean is published in an atomic so
/// that picks read one number per candidate.
#[derive(Debug, Default)]
struct Samples {
    window: Mutex<VecDeque<(f64, u64)>>,
    /// Mean as f64 bits; `NaN` bits when there is no sample.
    mean: AtomicU64,
    /// Clock time of the newest sample.
    newest_ms: AtomicU64,
}

impl Samples {
    fn new() -> Self {
        Samples {
            window: Mutex::new(VecDeque::new()),
            mean: AtomicU64::new(f64::NAN.to_bits()),
            newest_ms: AtomicU64::new(0),
        }
    }

    fn record(&self, value: f64, now_ms: u64, size: usize, ttl_ms: u64) {
        if !value.is_finite() || value < 0.0 {
            return; // LiteLLM discards negative / NaN samples
        }
        let mut window = self.window.lock();
        window.push_back((value, now_ms));
        while window.len() > size
            || window
                .front()
                .is_some_and(|(_, at)| at.saturating_add(ttl_ms) <= now_ms)
        {
            window.pop_front();
        }
        let mean = window.iter().map(|(v, _)| v).sum::<f64>() / window.len() as f64;
        self.mean.store(mean.to_bits(), Ordering::Release);
        self.newest_ms.store(now_ms, Ordering::Release);
    }

    /// The mean of the samples still within `ttl_ms`; `None` when there are none.
    fn mean(&self, now_ms: u64, ttl_ms: u64) -> Option<f64> {
        let newest = self.newest_ms.load(Ordering::Acquire);
        if newest == 0 || newest.saturating_add(ttl_ms) <= now_ms {
            return None;
        }
        Some(f64::from_bits(self.mean.load(Ordering::Acquire))).filter(|m| !m.is_nan())
    }
}

#[derive(Debug)]
struct Slot {
    latency: Samples,
    ttft: Samples,
}

impl Slot {
    fn new() -> Self {
        Slot {
            latency: Samples::new(),
            ttft: Samples::new(),
        }
    }
}

/// Lowest mean latency over the last `max_latency_list_size` samples younger than `ttl`:
/// seconds per output token for completions that report usage (raw seconds otherwise), time to
/// first token for streaming requests when known; a timeout records a 1000 s penalty.
/// Deployments without samples count as 0 and are tried first; the pick is random among the
/// deployments within `lowest_latency_buffer` of the lowest. Deployments at a limit are skipped.
/// Time to first token is sampled for streamed calls (those that report one).
///
/// Samples are kept per deployment id ([`LearnedState`]): a new snapshot keeps what was learned
/// of unchanged deployments.
#[derive(Debug)]
pub struct LatencyBased {
    rng: Rng,
    clock: Arc<dyn Clock>,
    learned: Arc<LearnedState<Slot>>,
    slots: PerDeployment<Arc<Slot>>,
    ttl_ms: u64,
    buffer: f64,
    size: usize,
}

impl LatencyBased {
    /// A latency-based strategy for `targets` with LiteLLM's `routing_strategy_args`.
    pub fn new(
        targets: &Targets,
        rng: Rng,
        clock: Arc<dyn Clock>,
        ttl: Duration,
        buffer: f64,
        max_samples: usize,
    ) -> Self {
        let learned = Arc::new(LearnedState::new());
        LatencyBased {
            slots: learned.bind(targets.index(), Slot::new),
            learned,
            rng,
            clock,
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            buffer,
            size: max_samples,
        }
    }

    fn score(&self, target: &Target, stream: bool, now_ms: u64) -> f64 {
        let Some(slot) = self.slots.get(target.ix) else {
            return 0.0;
        };
        let ttft = if stream {
            slot.ttft.mean(now_ms, self.ttl_ms)
        } else {
            None
        };
        ttft.or_else(|| slot.latency.mean(now_ms, self.ttl_ms))
            .unwrap_or(0.0)
    }
}

impl Strategy for LatencyBased {
    fn name(&self) -> StrategyName {
        StrategyName::LatencyBased
    }

    fn pick<'t>(
        &self,
        ctx: &RouteContext<'_>,
        eligible: Candidates<'t, '_>,
        view: &UsageView<'_>,
    ) -> Result<&'t Target, StrategyError> {
        let now = self.clock.now_ms();
        let keep = fits(view, ctx.estimated_tokens());
        let score = |t: &Target| self.score(t, ctx.stream, now);
        let no_capacity = || StrategyError::no_capacity(ctx, eligible, view);
        // A score is never below 0 (a deployment without samples scores 0): when a candidate
        // with room scores 0, the floor is 0 and so is the ceiling whatever the buffer, and the
        // answer is a uniform draw among the candidates with room at 0 — what a random draw
        // accepted only at 0 is. A few such draws first; else the passes below.
        if !eligible.is_small() {
            if let Some(chosen) = eligible.draw_uniform(&self.rng, |t| score(t) <= 0.0 && keep(t)) {
                return Ok(chosen);
            }
        }
        if self.buffer == 0.0 {
            // Without a buffer the candidates are the ties at the lowest: one pass.
            return lowest(eligible.iter(), &self.rng, &keep, score).ok_or_else(no_capacity);
        }
        // The limits of a candidate scoring above the floor so far are not read.
        let floor = eligible.iter().fold(f64::INFINITY, |floor, t| {
            let value = score(t);
            if value < floor && keep(t) {
                value
            } else {
                floor
            }
        });
        if floor.is_infinite() {
            return Err(no_capacity());
        }
        let ceiling = floor * (1.0 + self.buffer);
        uniform(eligible.iter(), &self.rng, |t| {
            score(t) <= ceiling && keep(t)
        })
        .ok_or_else(no_capacity)
    }

    fn observe(&self, target: &Target, outcome: &Outcome<'_>) {
        let Some(slot) = self.slots.get(target.ix) else {
            return;
        };
        let now = self.clock.now_ms();
        match outcome {
            Outcome::Success(call) => {
                let seconds = call.latency.as_secs_f64();
                let sample = match call.usage {
                    Some(u) if u.completion_tokens > 0 => seconds / u.completion_tokens as f64,
                    _ => seconds,
                };
                slot.latency.record(sample, now, self.size, self.ttl_ms);
                if let Some(ttft) = call.time_to_first_token {
                    slot.ttft
                        .record(ttft.as_secs_f64(), now, self.size, self.ttl_ms);
                }
            }
            Outcome::Failure(ErrorClass::Timeout) => {
                slot.latency
                    .record(TIMEOUT_PENALTY_SECS, now, self.size, self.ttl_ms);
            }
            Outcome::Failure(_) => {}
        }
    }

    fn for_snapshot(&self, targets: &Targets) -> Arc<dyn Strategy> {
        Arc::new(LatencyBased {
            slots: self.learned.bind(targets.index(), Slot::new),
            learned: Arc::clone(&self.learned),
            rng: self.rng.split(),
            clock: Arc::clone(&self.clock),
            ttl_ms: self.ttl_ms,
            buffer: self.buffer,
            size: self.size,
        })
    }
}
