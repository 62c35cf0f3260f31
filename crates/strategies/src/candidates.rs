//! The deployments a pick chooses among: a [`Pool`] prepared once per snapshot (a model group,
//! an `order` tier of one), and per request the [`Candidates`] — the pool, less what the
//! router's filters left out ([`Exclusions`]).
//!
//! A pool keeps what the strategies would otherwise recompute on every pick: its members in a
//! dense list (by position), the cumulative weights of each weight metric (simple-shuffle draws
//! by binary search) and its members by cost (cost-based walks the cheapest level first).

use std::sync::{Arc, OnceLock};

use ferrolite_types::DeploymentIx;

use crate::score_tree::ScoreTree;
use crate::{Rng, Target, Targets};

/// simple-shuffle's static weight metrics, in the order they decide: `weight`, `rpm`, `tpm`.
pub(crate) const METRICS: usize = 3;

/// A deployment's weight under simple-shuffle's metric `m` (0 where it declares none).
pub(crate) fn metric_weight(target: &Target, m: usize) -> f64 {
    let value = match m {
        0 => target.weight,
        1 => target.rpm.map(|v| v as f64),
        _ => target.tpm.map(|v| v as f64),
    };
    // `max` also turns NaN into 0.
    value.unwrap_or(0.0).max(0.0)
}

/// A set of deployments of one snapshot prepared for picking: a model group, an `order` tier of
/// one, or any list of deployments. Build it once per snapshot; a pick then reads it without
/// scanning.
#[derive(Debug, Clone, Default)]
pub struct Pool {
    /// latency-based's score tree over the members, built once (when the strategy prepares the
    /// pool, else on its first pick over it) and dropped with the pool. Clones made after it
    /// was built share it.
    scores: OnceLock<PoolScores>,
    /// The members, in snapshot order (ascending index).
    members: Vec<DeploymentIx>,
    /// Per weight metric: the running sum of the members' weights, when any is positive.
    cumulative: [Option<Vec<f64>>; METRICS],
    /// Member positions, cheapest first (ties in member order).
    by_cost: Vec<u32>,
    /// Where each cost level starts in `by_cost` (and its length at the end).
    cost_levels: Vec<u32>,
}

/// A score tree built for a pool, and the family of latency-based strategies whose samples
/// keep it up to date (a strategy and those it hands over to for later snapshots).
#[derive(Debug, Clone)]
struct PoolScores {
    family: u64,
    tree: Arc<ScoreTree>,
}

impl Pool {
    /// The pool of `members` (indices of `targets`; an index of another snapshot is left out).
    pub fn new(targets: &Targets, members: impl IntoIterator<Item = DeploymentIx>) -> Self {
        let mut members: Vec<DeploymentIx> = members
            .into_iter()
            .filter(|ix| targets.get(*ix).is_some())
            .collect();
        members.sort_by_key(|ix| ix.index());
        members.dedup();
        let of = |ix: &DeploymentIx| targets.get(*ix);
        let cumulative = std::array::from_fn(|m| {
            let mut sum = 0.0;
            let running: Vec<f64> = members
                .iter()
                .map(|ix| {
                    sum += of(ix).map_or(0.0, |t| metric_weight(t, m));
                    sum
                })
                .collect();
            (sum > 0.0).then_some(running)
        });
        let cost = |p: &u32| {
            members
                .get(*p as usize)
                .and_then(of)
                .map_or(f64::INFINITY, |t| t.cost_per_token)
        };
        let mut by_cost: Vec<u32> = (0..members.len() as u32).collect();
        by_cost.sort_by(|a, b| cost(a).total_cmp(&cost(b)).then(a.cmp(b)));
        let mut cost_levels = Vec::new();
        for (i, p) in by_cost.iter().enumerate() {
            if i == 0 || cost(p) != cost(&by_cost[i - 1]) {
                cost_levels.push(i as u32);
            }
        }
        cost_levels.push(by_cost.len() as u32);
        Pool {
            scores: OnceLock::new(),
            members,
            cumulative,
            by_cost,
            cost_levels,
        }
    }

    /// The score tree of this pool for the latency-based strategies of `family`, built by
    /// `build` the first time; `None` when a strategy of another family built it first (the
    /// caller then scans: a router's pools are picked over by one snapshot's strategy only).
    pub(crate) fn scores(
        &self,
        family: u64,
        build: impl FnOnce() -> Arc<ScoreTree>,
    ) -> Option<&Arc<ScoreTree>> {
        let scores = self.scores.get_or_init(|| PoolScores {
            family,
            tree: build(),
        });
        (scores.family == family).then_some(&scores.tree)
    }

    /// The members, in snapshot order.
    pub fn members(&self) -> &[DeploymentIx] {
        &self.members
    }

    /// How many members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether it has none.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The position of `ix` among the members (binary search).
    pub fn position(&self, ix: DeploymentIx) -> Option<usize> {
        self.members
            .binary_search_by_key(&ix.index(), |m| m.index())
            .ok()
            .filter(|p| self.members[*p] == ix)
    }

    /// The running weights of metric `m`, when some member has a positive one.
    pub(crate) fn cumulative(&self, m: usize) -> Option<&[f64]> {
        self.cumulative.get(m).and_then(|c| c.as_deref())
    }

    /// The cost levels, cheapest first: each the positions of the members of one cost.
    pub(crate) fn cost_levels(&self) -> impl Iterator<Item = &[u32]> + '_ {
        self.cost_levels
            .windows(2)
            .filter_map(|w| self.by_cost.get(w[0] as usize..w[1] as usize))
    }
}

/// Positions of a pool left out of a pick (cooling down, over budget, filtered out): a bit set
/// over the pool, sized once per request that leaves anything out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exclusions {
    bits: Vec<u64>,
    count: usize,
}

impl Exclusions {
    /// Nothing excluded, in a pool of `len` members.
    pub fn new(len: usize) -> Self {
        Exclusions {
            bits: vec![0; len.div_ceil(64)],
            count: 0,
        }
    }

    /// Excludes `position`; whether it was not excluded already (a position past the pool is
    /// ignored).
    pub fn insert(&mut self, position: usize) -> bool {
        let Some(word) = self.bits.get_mut(position / 64) else {
            return false;
        };
        let bit = 1u64 << (position % 64);
        let new = *word & bit == 0;
        *word |= bit;
        self.count += usize::from(new);
        new
    }

    /// Whether `position` is excluded.
    #[inline]
    pub fn contains(&self, position: usize) -> bool {
        self.bits
            .get(position / 64)
            .is_some_and(|w| w & (1u64 << (position % 64)) != 0)
    }

    /// How many positions are excluded.
    pub fn count(&self) -> usize {
        self.count
    }
}

/// How many draws a fast path makes before it falls back to the exact scan: when a fifth of
/// the pool would be taken, all 32 miss 0.08 % of the time; when none would, the draws cost
/// about what a scan of 32 members does, so they are tried only over larger pools.
pub(crate) const TRIES: usize = 32;

/// Pools up to this size are scanned at once, as they were before pools had fast paths: a scan
/// of a few dozen dense entries costs about what the draws do, and a seeded strategy then
/// draws the same sequence over a small group as it always did.
pub(crate) const SMALL: usize = 32;

/// The deployments one pick chooses among: a [`Pool`] less its [`Exclusions`] (cheap to copy;
/// built by the router per pick from the filters' result). The targets it hands out live as
/// long as the snapshot's [`Targets`] (`'t`), the pool and exclusions may be shorter-lived (`'c`).
#[derive(Debug, Clone, Copy)]
pub struct Candidates<'t, 'c> {
    targets: &'t Targets,
    pool: &'c Pool,
    excluded: Option<&'c Exclusions>,
}

impl<'t, 'c> Candidates<'t, 'c> {
    /// Every member of `pool`.
    pub fn new(targets: &'t Targets, pool: &'c Pool) -> Self {
        Candidates {
            targets,
            pool,
            excluded: None,
        }
    }

    /// The members of `pool` not in `excluded` (positions in the pool).
    pub fn without(targets: &'t Targets, pool: &'c Pool, excluded: &'c Exclusions) -> Self {
        Candidates {
            targets,
            pool,
            excluded: (excluded.count() > 0).then_some(excluded),
        }
    }

    /// The pool they are drawn from.
    pub fn pool(&self) -> &'c Pool {
        self.pool
    }

    /// How many candidates.
    pub fn len(&self) -> usize {
        self.pool.len() - self.excluded.map_or(0, |e| e.count().min(self.pool.len()))
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the pool is small enough to scan rather than draw from (see [`SMALL`]).
    pub(crate) fn is_small(&self) -> bool {
        self.pool.len() <= SMALL
    }

    /// Whether they are the whole pool (nothing left out).
    pub fn is_whole(&self) -> bool {
        self.excluded.is_none()
    }

    /// The candidate at `position` of the pool, when it is one.
    #[inline]
    pub fn at(&self, position: usize) -> Option<&'t Target> {
        if self.excluded.is_some_and(|e| e.contains(position)) {
            return None;
        }
        self.pool
            .members
            .get(position)
            .and_then(|ix| self.targets.get(*ix))
    }

    /// Whether the deployment `ix` is a candidate.
    pub fn contains(&self, ix: DeploymentIx) -> bool {
        self.pool.position(ix).is_some_and(|p| self.at(p).is_some())
    }

    /// The candidates, in snapshot order.
    pub fn iter(&self) -> impl Iterator<Item = &'t Target> + use<'t, 'c> {
        let this = *self;
        (0..this.pool.len()).filter_map(move |p| this.at(p))
    }

    /// A uniformly random candidate accepted by `keep`, by up to [`TRIES`] draws over the pool
    /// (`None` when none was accepted: the caller scans).
    pub(crate) fn draw_uniform(
        &self,
        rng: &Rng,
        keep: impl Fn(&Target) -> bool,
    ) -> Option<&'t Target> {
        let n = self.pool.len();
        if n == 0 {
            return None;
        }
        (0..TRIES).find_map(|_| self.at(rng.below(n)).filter(|t| keep(t)))
    }
}
