//! `latency-based-routing`: the deployment that answered fastest lately (`lowest_latency.py`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use ferrolite_cache::Clock;
use ferrolite_types::{ErrorClass, LearnedState, PerDeployment};
use parking_lot::Mutex;

use crate::candidates::{Candidates, Pool};
use crate::pick::{fits, lowest, uniform};
use crate::score_tree::ScoreTree;
use crate::{
    Outcome, Rng, RouteContext, Score, Strategy, StrategyError, StrategyName, Target, Targets,
    UsageView,
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

    /// The published mean (NaN: none) and the newest sample's time (0: none), as a
    /// [`ScoreTree`] keeps them.
    fn state(&self) -> (f64, u64) {
        (
            f64::from_bits(self.mean.load(Ordering::Acquire)),
            self.newest_ms.load(Ordering::Acquire),
        )
    }
}

#[derive(Debug)]
struct Slot {
    latency: Samples,
    ttft: Samples,
    /// The score trees this deployment is a leaf of (tree, position), told when its latency
    /// samples change. A slot outlives snapshots (it is kept by id), so a strategy of an older
    /// snapshot recording a sample updates the trees of the newer one.
    trees: Mutex<Vec<(Weak<ScoreTree>, usize)>>,
}

impl Slot {
    fn new() -> Self {
        Slot {
            latency: Samples::new(),
            ttft: Samples::new(),
            trees: Mutex::new(Vec::new()),
        }
    }

    /// Makes this deployment leaf `position` of `tree` (and forgets trees dropped since).
    fn watch(&self, tree: &Arc<ScoreTree>, position: usize) {
        let mut trees = self.trees.lock();
        trees.retain(|(t, _)| t.strong_count() > 0);
        trees.push((Arc::downgrade(tree), position));
    }

    /// Tells the trees this deployment is in its latency samples' new state. Locks the slot's
    /// list, then each tree (building a tree never holds the tree while it takes a slot's list).
    fn latency_changed(&self) {
        let mut trees = self.trees.lock();
        trees.retain(|(t, _)| t.strong_count() > 0);
        for (tree, position) in trees.iter() {
            if let Some(tree) = tree.upgrade() {
                tree.set(*position, || self.latency.state());
            }
        }
    }
}

/// Up to this many members within the buffer are walked in the tree; more are drawn from (a
/// walk reads members in order, a draw at random: a cache miss each over a large pool).
const FEW: usize = 64;

/// Lowest mean latency over the last `max_latency_list_size` samples younger than `ttl`:
/// seconds per output token for completions that report usage (raw seconds otherwise), time to
/// first token for streaming requests when known; a timeout records a 1000 s penalty.
/// Deployments without samples count as 0 and are tried first; the pick is random among the
/// deployments within `lowest_latency_buffer` of the lowest. Deployments at a limit are skipped.
/// Time to first token is sampled for streamed calls (those that report one).
///
/// Samples are kept per deployment id ([`LearnedState`]): a new snapshot keeps what was learned
/// of unchanged deployments.
///
/// Cost: over a pool of more than 32 members a few random draws first look for a candidate
/// with room and no fresh sample (score 0, the lowest there is). Failing that, a non-streaming
/// pick descends the pool's score tree (a tournament tree over the members' means, updated
/// when a sample is recorded; expiry needs no update, see `score_tree.rs`): the lowest score
/// with room, skipping subtrees that cannot beat it, then a uniform draw among the candidates
/// with room within the buffer of it — a few draws over the pool, else the tree's members
/// within. The decisions are the scan's: the same floor, the same set, each member of it
/// equally likely (the random sequence differs from the scan's). Streaming picks rank by time
/// to first token, falling back to the latency mean when it expired: no subtree minimum
/// captures that switch, so they scan (one pass for the floor, one for the draw).
#[derive(Debug)]
pub struct LatencyBased {
    rng: Rng,
    clock: Arc<dyn Clock>,
    learned: Arc<LearnedState<Slot>>,
    slots: PerDeployment<Arc<Slot>>,
    ttl_ms: u64,
    buffer: f64,
    size: usize,
    /// This strategy and those it hands over to share the samples (`learned`) that keep a
    /// pool's score tree up to date: the tree a pool keeps is theirs when built by one of
    /// this family.
    family: u64,
}

/// A new family of latency-based strategies.
fn new_family() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
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
            family: new_family(),
        }
    }

    /// The score tree of `pool`: the pool keeps it, built on the first call for the pool
    /// (when the router prepares it, else the first pick over it) and dropped with it; `None`
    /// when a strategy of another family built the pool's tree.
    fn tree<'p>(&self, pool: &'p Pool) -> Option<&'p Arc<ScoreTree>> {
        pool.scores(self.family, || self.build_tree(pool))
    }

    /// A score tree over `pool`'s members, its leaves watching their latency samples.
    fn build_tree(&self, pool: &Pool) -> Arc<ScoreTree> {
        let tree = Arc::new(ScoreTree::new(pool.len(), self.ttl_ms));
        let members = pool.members();
        // Each slot learns of the tree before the tree reads it: a sample recorded meanwhile
        // updates the tree after the fill (which holds the tree), or is read by it.
        for (position, ix) in members.iter().enumerate() {
            if let Some(slot) = self.slots.get(*ix) {
                slot.watch(&tree, position);
            }
        }
        tree.fill(|position| {
            members
                .get(position)
                .and_then(|ix| self.slots.get(*ix))
                .map_or((f64::NAN, 0), |slot| slot.latency.state())
        });
        tree
    }

    /// latency-based over a large pool, not streaming, through the pool's score tree: when some
    /// member scores 0, the draws at 0 as for streaming picks; then the lowest score with room
    /// by a descent, and a uniform choice among the candidates with room within the buffer of
    /// it: by reservoir over the tree's members within when they are few, else by draws over
    /// the pool (whose accepted draw is uniform over the same set), else by reservoir over all
    /// of them. Which way is taken depends on the state only, not on the draws.
    fn pick_by_tree<'t>(
        &self,
        eligible: Candidates<'t, '_>,
        tree: &ScoreTree,
        now: u64,
        keep: &impl Fn(&Target) -> bool,
    ) -> Option<&'t Target> {
        let score = |t: &Target| self.score(t, false, now);
        if tree.lowest(now) <= 0.0 {
            if let Some(chosen) = eligible.draw_uniform(&self.rng, |t| score(t) <= 0.0 && keep(t)) {
                return Some(chosen);
            }
        }
        let floor = tree.floor(now, |position, below| {
            let target = eligible.at(position)?;
            let value = score(target);
            (value < below && keep(target)).then_some(value)
        });
        if floor.is_infinite() {
            return None;
        }
        let ceiling = floor * (1.0 + self.buffer);
        let within = |t: &Target| score(t) <= ceiling && keep(t);
        let by_reservoir = |limit: usize| {
            let mut chosen = None;
            let mut seen = 0usize;
            let complete = tree.each_within(now, ceiling, limit, |position| {
                if let Some(target) = eligible.at(position).filter(|t| within(t)) {
                    seen += 1;
                    if self.rng.below(seen) == 0 {
                        chosen = Some(target);
                    }
                }
            });
            complete.then_some(chosen)
        };
        if let Some(chosen) = by_reservoir(FEW) {
            return chosen;
        }
        eligible
            .draw_uniform(&self.rng, within)
            .or_else(|| by_reservoir(usize::MAX).flatten())
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

    fn score(
        &self,
        ctx: &RouteContext<'_>,
        target: &Target,
        _view: &UsageView<'_>,
    ) -> Option<Score> {
        let name = if ctx.stream { "ttft" } else { "latency" };
        Some(Score::lower(
            name,
            self.score(target, ctx.stream, self.clock.now_ms()),
        ))
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
            if !ctx.stream {
                if let Some(tree) = self.tree(eligible.pool()) {
                    return self
                        .pick_by_tree(eligible, tree, now, &keep)
                        .ok_or_else(no_capacity);
                }
            }
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
                slot.latency_changed();
                if let Some(ttft) = call.time_to_first_token {
                    slot.ttft
                        .record(ttft.as_secs_f64(), now, self.size, self.ttl_ms);
                }
            }
            Outcome::Failure(ErrorClass::Timeout) => {
                slot.latency
                    .record(TIMEOUT_PENALTY_SECS, now, self.size, self.ttl_ms);
                slot.latency_changed();
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
            family: self.family,
        })
    }

    /// Builds the score tree of a pool of more than a few members, so that the first pick over
    /// it does not.
    fn prepare(&self, pool: &Pool) {
        if pool.len() > crate::candidates::SMALL {
            self.tree(pool);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;
    use std::time::Duration;

    use ferrolite_cache::{CacheConfig, Clock, DualCache, ManualClock, Window};
    use ferrolite_types::Deployment;
    use proptest::prelude::*;

    use super::LatencyBased;
    use crate::Strategy as _;
    use crate::candidates::SMALL;
    use crate::pick::fits;
    use crate::{
        AdmissionMode, CallOutcome, Candidates, Exclusions, Outcome, Pool, Rng, RouteContext,
        StrategyError, Targets, UsageStore,
    };

    const T0: u64 = 1_767_225_630_000;
    const TTL_MS: u64 = 1_000;

    /// One deployment: its rpm limit, requests already in the window, latency samples as
    /// (time after T0 in ms, seconds), and whether the filters left it out.
    #[derive(Debug, Clone)]
    struct Spec {
        rpm: Option<u64>,
        requests: u64,
        samples: Vec<(u64, u64)>,
        excluded: bool,
    }

    fn spec() -> impl proptest::strategy::Strategy<Value = Spec> {
        (
            prop_oneof![Just(None), (1u64..3).prop_map(Some)],
            0u64..3,
            // Few distinct latencies (ties) and times on both sides of the TTL.
            proptest::collection::vec((0u64..2_500, 1u64..5), 0..3),
            proptest::bool::weighted(0.2),
        )
            .prop_map(|(rpm, requests, samples, excluded)| Spec {
                rpm,
                requests,
                samples,
                excluded,
            })
    }

    /// A pool keeps its score tree: the one the strategy prepared is the one its picks (and the
    /// strategy's successor for a later snapshot) read, another strategy's picks over the pool
    /// do not use it, and it goes when the pool goes.
    #[test]
    fn a_pools_score_tree_lives_with_the_pool() {
        let clock = ManualClock::new(T0);
        let deployments: Vec<Deployment> = (0..SMALL + 8)
            .map(|i| Deployment {
                id: Some(format!("d{i}")),
                ..Deployment::new("g", format!("openai/m{i}"))
            })
            .collect();
        let targets = Targets::new(&deployments).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let cache = rt
            .block_on(DualCache::connect_with_clock(
                CacheConfig::default(),
                Arc::new(clock.clone()),
            ))
            .unwrap();
        let usage = UsageStore::new(
            cache,
            &targets,
            Window::MINUTE_SLIDING,
            AdmissionMode::Batched,
        )
        .unwrap();
        let view = usage.view();
        let latency = |seed| {
            LatencyBased::new(
                &targets,
                Rng::seeded(seed),
                Arc::new(clock.clone()),
                Duration::from_millis(TTL_MS),
                0.0,
                2,
            )
        };
        let strategy = latency(1);
        let pool = Pool::new(&targets, targets.iter().map(|t| t.ix));
        strategy.prepare(&pool);
        let prepared = Arc::downgrade(strategy.tree(&pool).unwrap());

        // The fastest deployment is the one pick: the tree heard of the samples.
        for (i, target) in targets.iter().enumerate() {
            let call = CallOutcome {
                latency: Duration::from_millis(100 + i as u64),
                ..CallOutcome::default()
            };
            strategy.observe(target, &Outcome::Success(&call));
        }
        let excluded = Exclusions::new(pool.len());
        let eligible = Candidates::without(&targets, &pool, &excluded);
        let ctx = RouteContext::new("g");
        let first = targets.iter().next().unwrap().ix;
        assert_eq!(strategy.pick(&ctx, eligible, &view).unwrap().ix, first);
        let successor = strategy.for_snapshot(&targets);
        assert_eq!(successor.pick(&ctx, eligible, &view).unwrap().ix, first);
        let kept = strategy.tree(&pool).unwrap();
        assert!(Arc::ptr_eq(kept, &prepared.upgrade().unwrap()));

        // A strategy of another family scans: it has not heard of the samples.
        let other = latency(2);
        assert!(other.tree(&pool).is_none());
        let mut picked = BTreeSet::new();
        for _ in 0..200 {
            picked.insert(other.pick(&ctx, eligible, &view).unwrap().ix.index());
        }
        assert!(picked.len() > 1, "{picked:?}");

        drop(pool);
        assert!(prepared.upgrade().is_none());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Over a pool larger than [`SMALL`], the tree finds the floor the scan finds and the
        /// same set of candidates within the buffer of it (the tree built before the samples,
        /// kept up to date by them), and the pick is one of them.
        #[test]
        fn the_tree_gives_the_scans_floor_and_set(
            specs in proptest::collection::vec(spec(), SMALL + 1..SMALL + 60),
            buffer in prop_oneof![Just(0.0), Just(0.5), Just(2.0)],
            now in 2_000u64..3_000,
            seed in any::<u64>(),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let clock = ManualClock::new(T0);
                let cache = DualCache::connect_with_clock(
                    CacheConfig::default(),
                    Arc::new(clock.clone()),
                )
                .await
                .unwrap();
                let deployments: Vec<Deployment> = specs
                    .iter()
                    .enumerate()
                    .map(|(i, s)| Deployment {
                        id: Some(format!("d{i}")),
                        rpm: s.rpm,
                        ..Deployment::new("g", format!("openai/m{i}"))
                    })
                    .collect();
                let targets = Targets::new(&deployments).unwrap();
                let usage = UsageStore::new(
                    cache.clone(),
                    &targets,
                    Window::MINUTE_SLIDING,
                    AdmissionMode::Batched,
                )
                .unwrap();
                let strategy = LatencyBased::new(
                    &targets,
                    Rng::seeded(seed),
                    Arc::new(clock.clone()),
                    Duration::from_millis(TTL_MS),
                    buffer,
                    2,
                );
                let pool = Pool::new(&targets, targets.iter().map(|t| t.ix));
                let mut excluded = Exclusions::new(pool.len());
                for (p, s) in specs.iter().enumerate() {
                    if s.excluded {
                        excluded.insert(p);
                    }
                }
                let eligible = Candidates::without(&targets, &pool, &excluded);
                // The tree exists before any sample: every one reaches it as an update.
                let tree = strategy.tree(&pool).unwrap();
                let mut samples: Vec<(u64, usize, u64)> = specs
                    .iter()
                    .enumerate()
                    .flat_map(|(i, s)| s.samples.iter().map(move |(at, secs)| (*at, i, *secs)))
                    .collect();
                samples.sort();
                for (at, i, secs) in samples {
                    clock.set_ms(T0 + at);
                    let call = CallOutcome {
                        latency: Duration::from_millis(secs * 100),
                        ..CallOutcome::default()
                    };
                    let target = targets.iter().nth(i).unwrap();
                    strategy.observe(target, &Outcome::Success(&call));
                }
                clock.set_ms(T0 + now);
                for (target, s) in targets.iter().zip(&specs) {
                    usage.record(target, s.requests as i64, 0).unwrap();
                }
                let view = usage.view();
                let keep = fits(&view, 0);
                let now = clock.now_ms();
                let score = |t: &crate::Target| strategy.score(t, false, now);

                // The scan.
                let floor = eligible
                    .iter()
                    .filter(|t| keep(t))
                    .map(score)
                    .fold(f64::INFINITY, f64::min);
                let ceiling = floor * (1.0 + buffer);
                let expected: BTreeSet<usize> = eligible
                    .iter()
                    .filter(|t| keep(t) && score(t) <= ceiling)
                    .map(|t| t.ix.index())
                    .collect();

                // The tree.
                let tree_floor = tree.floor(now, |p, below| {
                    let t = eligible.at(p)?;
                    let v = score(t);
                    (v < below && keep(t)).then_some(v)
                });
                prop_assert_eq!(tree_floor, floor);
                let mut within = BTreeSet::new();
                if floor.is_finite() {
                    tree.each_within(now, ceiling, usize::MAX, |p| {
                        if let Some(t) = eligible.at(p).filter(|t| keep(t) && score(t) <= ceiling) {
                            within.insert(t.ix.index());
                        }
                    });
                }
                prop_assert_eq!(&within, &expected);

                let ctx = RouteContext::new("g");
                for _ in 0..20 {
                    match strategy.pick(&ctx, eligible, &view) {
                        Ok(t) => prop_assert!(expected.contains(&t.ix.index())),
                        Err(StrategyError::NoCapacity(_)) => prop_assert!(expected.is_empty()),
                        Err(other) => prop_assert!(false, "{other:?}"),
                    }
                }
                Ok(())
            })?;
        }
    }
}
