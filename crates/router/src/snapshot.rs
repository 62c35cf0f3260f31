//! One snapshot of the deployment list: everything that must agree (deployments, targets, usage,
//! strategy, budget ledger, cooldown deadlines, failure counters) built together, never mixed
//! with another snapshot's. The router swaps whole snapshots.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use ferrolite_budgets::BudgetLedger;
use ferrolite_cache::{
    CounterOptions, Deadline, DualCache, FamilyKeys, IntCounterFamily, LatestDeadline, hash_tagged,
};
use ferrolite_strategies::{Pool, Strategy, Target, Targets, UsageStore, build};
use ferrolite_types::{Deployment, DeploymentIx, PerDeployment};

use crate::backend::{Backend, Prepared};
use crate::{RouterError, RouterSettings};

/// How long a deployment's failure and success counts last (LiteLLM's `{id}:fails` TTL).
pub(crate) const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// Per-deployment state the failure path reads and writes, shared through the cache.
pub(crate) struct Health {
    /// `{id}:cooldown`: until when the deployment is cooled down.
    pub(crate) cooldown: Deadline,
    /// The deployment's concurrency cap and the key of its slots (`{id}:parallel`).
    pub(crate) parallel: Option<Parallel>,
    /// With health-check routing: when its last health checks passed and failed (boxed: off by
    /// default, and 8 bytes a deployment then rather than the 32 of the unboxed option).
    pub(crate) checks: Option<Box<Checks>>,
    /// With half-open recovery: the probe lease's key and `{id}:probe_passed` (boxed, as
    /// `checks`).
    pub(crate) probation: Option<Box<Probation>>,
}

/// `{id}:fails` and `{id}:successes` in the current minute, of every deployment of a snapshot
/// by position: two counter families (56 bytes a counter, the keys built when synced).
pub(crate) struct Outcomes {
    pub(crate) fails: IntCounterFamily,
    pub(crate) successes: IntCounterFamily,
}

impl Outcomes {
    fn new(cache: &DualCache, targets: &Targets) -> Result<Self, RouterError> {
        let ids: Arc<[ferrolite_types::DeploymentId]> =
            targets.index().iter().map(|(_, id)| id.clone()).collect();
        let window = CounterOptions::fixed_ttl(FAILURE_WINDOW);
        let family = |suffix: &'static str| {
            let keys = OutcomeKeys {
                ids: Arc::clone(&ids),
                suffix,
            };
            cache.counters().family(ids.len(), Arc::new(keys), window)
        };
        Ok(Outcomes {
            fails: family(":fails")?,
            successes: family(":successes")?,
        })
    }
}

/// `{id}<suffix>` by position.
struct OutcomeKeys {
    ids: Arc<[ferrolite_types::DeploymentId]>,
    suffix: &'static str,
}

impl FamilyKeys for OutcomeKeys {
    fn write_key(&self, index: usize, out: &mut String) {
        if let Some(id) = self.ids.get(index) {
            out.push('{');
            out.push_str(id.as_str());
            out.push('}');
            out.push_str(self.suffix);
        }
    }

    /// The next snapshot's counts of an unchanged deployment are this one's cells.
    fn class(&self) -> &str {
        self.suffix
    }
}

/// How long after a cooldown ends the deployment stays half-open unless a call succeeds
/// earlier (then it is closed again: every instance routes to it freely).
pub(crate) const PROBATION: Duration = Duration::from_secs(600);

/// Half-open recovery of one deployment: after a cooldown ends, one call at a time (the probe,
/// a lease of one slot shared by every instance) until one succeeds. A success moves
/// `{id}:probe_passed` to its time plus [`PROBATION`]; the deployment is half-open while the
/// last cooldown ended less than [`PROBATION`] ago and no success came after it.
pub(crate) struct Probation {
    pub(crate) probe_key: String,
    pub(crate) passed: Deadline,
}

impl Probation {
    /// Whether `cooldown` has ended and no call has succeeded since.
    pub(crate) fn half_open(&self, cooldown: &Deadline, now_ms: u64) -> bool {
        let Some(ended) = cooldown.until_ms() else {
            return false;
        };
        let closes = ended + PROBATION.as_millis() as u64;
        ended <= now_ms && now_ms < closes && self.passed.until_ms().unwrap_or(0) <= closes
    }
}

/// A deployment's latest health-check results (`{id}:healthy_at`, `{id}:unhealthy_at`): each
/// the Unix ms at which that result goes stale (the check's time plus the staleness threshold).
/// Two deadlines that only move forward, so every instance agrees on the latest result whichever
/// instance ran the check, and a result nobody refreshes expires by itself.
pub(crate) struct Checks {
    pub(crate) passed: Deadline,
    pub(crate) failed: Deadline,
}

impl Checks {
    /// Whether the latest check failed and is not stale yet.
    pub(crate) fn unhealthy(&self, now_ms: u64) -> bool {
        let failed = self.failed.until_ms().unwrap_or(0);
        failed > now_ms && failed > self.passed.until_ms().unwrap_or(0)
    }
}

/// A deployment's concurrency cap.
pub(crate) struct Parallel {
    pub(crate) limit: u64,
    /// The key of the shared slots' lease (`{id}:parallel`); empty for a per-instance cap,
    /// which takes no lease (10,000 deployments with derived caps kept 10,000 unused keys).
    pub(crate) key: Box<str>,
    /// Set explicitly (`max_parallel_requests` or the router's default): shared exactly by every
    /// instance through leases. Derived from rpm/tpm (LiteLLM's heuristic): held per instance,
    /// as LiteLLM holds it, without a Redis round trip per call.
    pub(crate) shared: bool,
    /// Calls holding a per-instance slot (derived caps); carried over by id across snapshots.
    pub(crate) local: Arc<std::sync::atomic::AtomicU64>,
}

/// A per-instance concurrency slot, given back when dropped.
pub(crate) struct LocalSlot(Arc<std::sync::atomic::AtomicU64>);

impl LocalSlot {
    /// Takes a slot if fewer than `limit` are held.
    pub(crate) fn take(counter: &Arc<std::sync::atomic::AtomicU64>, limit: u64) -> Option<Self> {
        use std::sync::atomic::Ordering;
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held < limit).then_some(held + 1)
            })
            .ok()
            .map(|_| LocalSlot(Arc::clone(counter)))
    }
}

impl Drop for LocalSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// LiteLLM's concurrency cap (`MaxParallelRequestsLimit`): `max_parallel_requests`, else `rpm`,
/// else `tpm / 1000 x 6` (at least 1; "Azure: 6 rpm per 1000 tpm"), else the router's default; and
/// whether it was set explicitly (see [`Parallel::shared`]).
pub(crate) fn parallel_limit(deployment: &Deployment, default: Option<u32>) -> Option<(u64, bool)> {
    if let Some(max) = deployment.max_parallel_requests {
        return Some((u64::from(max), true));
    }
    deployment
        .rpm
        .or(deployment.tpm.map(|tpm| (tpm / 1000 * 6).max(1)))
        .map(|derived| (derived, false))
        .or(default.map(|d| (u64::from(d), true)))
}

/// One `order` tier of a group: its pool, and where each member sits in the group's pool.
pub(crate) struct Tier {
    pub(crate) order: u32,
    pub(crate) pool: Pool,
    pub(crate) in_group: Vec<u32>,
}

/// What the filters and the pick need of a set of deployments (a model group, or the
/// deployments a request names otherwise), prepared once: the members as a [`Pool`], its
/// `order` tiers, what any member declares (so a filter that cannot remove anything is not
/// run), and summaries of the members' cooldowns and failed health checks (so that when none
/// is cooling or unhealthy, finding so costs one atomic load).
pub(crate) struct Group {
    pub(crate) pool: Pool,
    /// The tiers by ascending `order`; empty when no member has an `order`.
    pub(crate) tiers: Vec<Tier>,
    /// Whether some member is tagged `default`.
    pub(crate) any_default: bool,
    /// The smallest `max_input_tokens` of a member, when one has any.
    pub(crate) min_input_limit: Option<u64>,
    /// The largest `max_output_tokens`, when every member has one.
    pub(crate) output_limit: Option<u64>,
    /// The largest default `max_tokens` of a member.
    pub(crate) default_max_tokens: Option<u64>,
    /// The latest cooldown end of a member (`None`: not kept; scan).
    pub(crate) cooling: Option<LatestDeadline>,
    /// The latest failed health check's staleness time of a member (`None`: not kept; scan).
    pub(crate) failing: Option<LatestDeadline>,
}

impl Group {
    /// The group of `members` of `snapshot`'s `targets` and `deployments`; with `health`, its
    /// members report their cooldowns and failed checks to the group's summaries.
    pub(crate) fn new(
        targets: &Targets,
        deployments: &[Deployment],
        health: Option<&PerDeployment<Health>>,
        members: Vec<DeploymentIx>,
    ) -> Self {
        let pool = Pool::new(targets, members);
        let deployment = |ix: &DeploymentIx| {
            targets
                .index()
                .position(*ix)
                .and_then(|p| deployments.get(p))
        };
        let of_members = || pool.members().iter().filter_map(deployment);
        let mut orders: Vec<u32> = of_members().filter_map(|d| d.order).collect();
        orders.sort_unstable();
        orders.dedup();
        let tiers = orders
            .into_iter()
            .map(|order| {
                let (in_group, ixs): (Vec<u32>, Vec<DeploymentIx>) = pool
                    .members()
                    .iter()
                    .enumerate()
                    .filter(|(_, ix)| deployment(ix).and_then(|d| d.order) == Some(order))
                    .map(|(p, ix)| (p as u32, *ix))
                    .unzip();
                Tier {
                    order,
                    pool: Pool::new(targets, ixs),
                    in_group,
                }
            })
            .collect();
        let output_limit = of_members().try_fold(0u64, |max, d| {
            d.max_output_tokens.map(|limit| max.max(limit))
        });
        let summary = |deadline: fn(&Health) -> Option<&Deadline>| {
            health.map(|health| {
                let latest = LatestDeadline::new();
                for ix in pool.members() {
                    if let Some(d) = health.get(*ix).and_then(deadline) {
                        d.report_to(&latest);
                    }
                }
                latest
            })
        };
        Group {
            tiers,
            any_default: of_members().any(|d| d.tags.iter().any(|t| t == "default")),
            min_input_limit: of_members().filter_map(|d| d.max_input_tokens).min(),
            output_limit: output_limit.filter(|_| !pool.is_empty()),
            default_max_tokens: of_members()
                .filter_map(|d| crate::resolve::default_max_tokens(Some(d)))
                .max(),
            cooling: summary(|h| Some(&h.cooldown)),
            failing: summary(|h| h.checks.as_ref().map(|c| &c.failed)),
            pool,
        }
    }

    /// The members, in configuration order.
    pub(crate) fn members(&self) -> &[DeploymentIx] {
        self.pool.members()
    }

    /// How many members.
    pub(crate) fn len(&self) -> usize {
        self.pool.len()
    }
}

pub(crate) struct Snapshot {
    pub(crate) deployments: Vec<Deployment>,
    /// What the backend prepared of each deployment (by position), handed to its calls.
    pub(crate) prepared: Vec<Option<Prepared>>,
    pub(crate) targets: Targets,
    /// Group name -> its deployments (in configuration order) and what routing prepared of
    /// them.
    pub(crate) groups: HashMap<String, Group>,
    /// Wildcard group names (`openai/*`, `*`), longest fixed part first: the order requests
    /// that name no group are matched in.
    pub(crate) patterns: Vec<String>,
    pub(crate) usage: UsageStore,
    pub(crate) strategy: Arc<dyn Strategy>,
    pub(crate) ledger: BudgetLedger,
    pub(crate) health: PerDeployment<Health>,
    /// Failures and successes in the current minute, by position.
    pub(crate) outcomes: Outcomes,
    /// Per-instance concurrency counts by deployment id, shared with the next snapshot.
    pub(crate) slots: Arc<ferrolite_types::LearnedState<std::sync::atomic::AtomicU64>>,
    /// This replica's record of each deployment's recent calls (latency, history), carried
    /// over by id to the next snapshot.
    pub(crate) recent: PerDeployment<Arc<crate::recent::Recent>>,
    pub(crate) learned_recent: Arc<ferrolite_types::LearnedState<crate::recent::Recent>>,
}

impl Snapshot {
    /// Builds a snapshot of `deployments`, each prepared by `backend` for its calls; a
    /// `previous` snapshot's strategy hands over what it learned of the deployments still
    /// present.
    pub(crate) fn build(
        cache: &DualCache,
        settings: &RouterSettings,
        backend: &dyn Backend,
        deployments: Vec<Deployment>,
        previous: Option<&Snapshot>,
    ) -> Result<Self, RouterError> {
        let targets = targets_of(&deployments)?;
        let mut members: HashMap<String, Vec<DeploymentIx>> = HashMap::new();
        for target in targets.iter() {
            members
                .entry(target.model_name.to_string())
                .or_default()
                .push(target.ix);
        }
        let group_names: HashSet<String> = members.keys().cloned().collect();
        let ids: HashSet<String> = targets.iter().map(|t| t.id.to_string()).collect();
        let mut patterns: Vec<String> = members
            .keys()
            .filter(|name| name.matches('*').count() == 1)
            .cloned()
            .collect();
        patterns.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        // What a request (or a fallback) may name: resolution's steps.
        let serves = |name: &str| {
            group_names.contains(name)
                || ids.contains(name)
                || settings.model_group_alias.contains_key(name)
                || crate::wildcard::wildcard_group(&patterns, name).is_some()
                || deployments.iter().any(|d| d.model == name)
        };
        settings.validate(&group_names, &serves)?;
        let usage = UsageStore::new(cache.clone(), &targets, settings.window, settings.admission)?;
        let strategy = match previous {
            Some(previous) => previous.strategy.for_snapshot(&targets),
            None => build(
                settings.routing_strategy,
                &settings.strategy,
                &targets,
                Arc::clone(cache.clock()),
            )?,
        };
        let ledger = BudgetLedger::new(
            cache.clone(),
            &settings.budgets,
            targets.index(),
            &deployments,
        )?;
        let slots = previous.map_or_else(
            || Arc::new(ferrolite_types::LearnedState::new()),
            |p| Arc::clone(&p.slots),
        );
        let health = health_of(cache, settings, &targets, &deployments, &slots)?;
        let learned_recent = previous.map_or_else(
            || Arc::new(ferrolite_types::LearnedState::new()),
            |p| Arc::clone(&p.learned_recent),
        );
        let recent = learned_recent.bind(targets.index(), crate::recent::Recent::default);
        let outcomes = Outcomes::new(cache, &targets)?;
        let groups = members
            .into_iter()
            .map(|(name, members)| {
                let group = Group::new(&targets, &deployments, Some(&health), members);
                strategy.prepare(&group.pool);
                for tier in &group.tiers {
                    strategy.prepare(&tier.pool);
                }
                (name, group)
            })
            .collect();
        let prepared = deployments.iter().map(|d| backend.prepare(d)).collect();
        Ok(Snapshot {
            deployments,
            prepared,
            targets,
            groups,
            patterns,
            usage,
            strategy,
            ledger,
            health,
            outcomes,
            slots,
            recent,
            learned_recent,
        })
    }

    pub(crate) fn deployment(&self, ix: DeploymentIx) -> Option<&Deployment> {
        self.targets
            .index()
            .position(ix)
            .and_then(|p| self.deployments.get(p))
    }

    /// What the backend prepared of the deployment `ix`.
    pub(crate) fn prepared(&self, ix: DeploymentIx) -> Option<&Prepared> {
        self.targets
            .index()
            .position(ix)
            .and_then(|p| self.prepared.get(p))
            .and_then(Option::as_ref)
    }

    pub(crate) fn target(&self, ix: DeploymentIx) -> Option<&Target> {
        self.targets.get(ix)
    }

    /// The groups this snapshot serves, sorted.
    pub(crate) fn group_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.groups.keys().cloned().collect();
        names.sort();
        names
    }
}

/// The targets of `deployments`, each checked first: a bad deployment, or one repeating an
/// earlier id, is an error naming it.
fn targets_of(deployments: &[Deployment]) -> Result<Targets, RouterError> {
    for (index, deployment) in deployments.iter().enumerate() {
        deployment
            .validate()
            .map_err(|source| RouterError::InvalidDeployment {
                index,
                model_name: deployment.model_name.clone(),
                source,
            })?;
    }
    Targets::new(deployments).map_err(|source| {
        // Name the entry that repeats an earlier id.
        let index = match &source {
            ferrolite_types::TypesError::DuplicateId { id } => deployments
                .iter()
                .rposition(|d| d.id().as_str() == id)
                .unwrap_or(0),
            _ => 0,
        };
        RouterError::InvalidDeployment {
            index,
            model_name: deployments
                .get(index)
                .map(|d| d.model_name.clone())
                .unwrap_or_default(),
            source,
        }
    })
}

/// Each deployment's failure-path state, shared through `cache`; per-instance concurrency
/// counts come from `slots` (carried over from the previous snapshot).
fn health_of(
    cache: &DualCache,
    settings: &RouterSettings,
    targets: &Targets,
    deployments: &[Deployment],
    slots: &ferrolite_types::LearnedState<std::sync::atomic::AtomicU64>,
) -> Result<PerDeployment<Health>, RouterError> {
    let local = slots.bind(targets.index(), std::sync::atomic::AtomicU64::default);
    let deadlines = cache.deadlines();
    targets.index().try_map(|ix, id| {
        let parallel = parallel_limit(
            &deployments[ix.index()],
            settings.default_max_parallel_requests,
        )
        .map(|(limit, shared)| Parallel {
            limit,
            key: if shared {
                hash_tagged(id.as_str(), ":parallel").into()
            } else {
                Box::default()
            },
            shared,
            local: local.get(ix).cloned().unwrap_or_default(),
        });
        let checks = if settings.enable_health_check_routing {
            Some(Box::new(Checks {
                passed: deadlines.deadline(&hash_tagged(id.as_str(), ":healthy_at"))?,
                failed: deadlines.deadline(&hash_tagged(id.as_str(), ":unhealthy_at"))?,
            }))
        } else {
            None
        };
        let probation = if settings.half_open {
            Some(Box::new(Probation {
                probe_key: hash_tagged(id.as_str(), ":probe"),
                passed: deadlines.deadline(&hash_tagged(id.as_str(), ":probe_passed"))?,
            }))
        } else {
            None
        };
        Ok::<_, RouterError>(Health {
            parallel,
            checks,
            probation,
            cooldown: deadlines.deadline(&hash_tagged(id.as_str(), ":cooldown"))?,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deployments_failure_path_state_stays_small() {
        // Built for every deployment (10,000 in one group is a supported size): the optional
        // parts are boxed and a per-instance cap keeps no lease key.
        assert!(
            std::mem::size_of::<Health>() <= 72,
            "Health is {} bytes",
            std::mem::size_of::<Health>()
        );
    }

    #[test]
    fn the_concurrency_cap_is_derived_as_litellm_does() {
        let d = |max: Option<u32>, rpm: Option<u64>, tpm: Option<u64>| Deployment {
            max_parallel_requests: max,
            rpm,
            tpm,
            ..Deployment::new("g", "openai/gpt-4o")
        };
        let cap = |max, rpm, tpm, default| parallel_limit(&d(max, rpm, tpm), default);
        assert_eq!(cap(Some(4), Some(100), None, None), Some((4, true)));
        assert_eq!(cap(None, Some(100), Some(1), None), Some((100, false)));
        assert_eq!(cap(None, None, Some(10_000), None), Some((60, false)));
        assert_eq!(
            cap(None, None, Some(10), None),
            Some((1, false)),
            "at least 1"
        );
        assert_eq!(cap(None, None, None, Some(8)), Some((8, true)));
        assert_eq!(cap(None, None, None, None), None);
    }
}
