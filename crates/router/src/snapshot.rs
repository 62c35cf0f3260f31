//! One snapshot of the deployment list: everything that must agree (deployments, targets, usage,
//! strategy, budget ledger, cooldown deadlines, failure counters) built together, never mixed
//! with another snapshot's. The router swaps whole snapshots.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use ferrolite_budgets::BudgetLedger;
use ferrolite_cache::{CounterOptions, Deadline, DualCache, IntCounter, hash_tagged};
use ferrolite_strategies::{Strategy, Target, Targets, UsageStore, build};
use ferrolite_types::{Deployment, DeploymentIx, PerDeployment};

use crate::{RouterError, RouterSettings};

/// How long a deployment's failure and success counts last (LiteLLM's `{id}:fails` TTL).
pub(crate) const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// Per-deployment state the failure path reads and writes, shared through the cache.
pub(crate) struct Health {
    /// `{id}:cooldown`: until when the deployment is cooled down.
    pub(crate) cooldown: Deadline,
    /// `{id}:fails` and `{id}:successes` in the current minute.
    pub(crate) fails: IntCounter,
    pub(crate) successes: IntCounter,
    /// The deployment's concurrency cap and the key of its slots (`{id}:parallel`).
    pub(crate) parallel: Option<Parallel>,
    /// With health-check routing: when its last health checks passed and failed.
    pub(crate) checks: Option<Checks>,
    /// With half-open recovery: the probe lease's key and `{id}:probe_passed`.
    pub(crate) probation: Option<Probation>,
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
    pub(crate) key: String,
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

pub(crate) struct Snapshot {
    pub(crate) deployments: Vec<Deployment>,
    pub(crate) targets: Targets,
    /// Group name -> its deployments, in configuration order.
    pub(crate) groups: HashMap<String, Vec<DeploymentIx>>,
    /// Wildcard group names (`openai/*`, `*`), longest fixed part first: the order requests
    /// that name no group are matched in.
    pub(crate) patterns: Vec<String>,
    pub(crate) usage: UsageStore,
    pub(crate) strategy: Arc<dyn Strategy>,
    pub(crate) ledger: BudgetLedger,
    pub(crate) health: PerDeployment<Health>,
    /// Per-instance concurrency counts by deployment id, shared with the next snapshot.
    pub(crate) slots: Arc<ferrolite_types::LearnedState<std::sync::atomic::AtomicU64>>,
}

impl Snapshot {
    /// Builds a snapshot of `deployments`; a `previous` snapshot's strategy hands over what it
    /// learned of the deployments still present.
    pub(crate) fn build(
        cache: &DualCache,
        settings: &RouterSettings,
        deployments: Vec<Deployment>,
        previous: Option<&Snapshot>,
    ) -> Result<Self, RouterError> {
        let targets = targets_of(&deployments)?;
        let mut groups: HashMap<String, Vec<DeploymentIx>> = HashMap::new();
        for target in targets.iter() {
            groups
                .entry(target.model_name.to_string())
                .or_default()
                .push(target.ix);
        }
        let group_names: HashSet<String> = groups.keys().cloned().collect();
        let ids: HashSet<String> = targets.iter().map(|t| t.id.to_string()).collect();
        let mut patterns: Vec<String> = groups
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
        Ok(Snapshot {
            deployments,
            targets,
            groups,
            patterns,
            usage,
            strategy,
            ledger,
            health,
            slots,
        })
    }

    pub(crate) fn deployment(&self, ix: DeploymentIx) -> Option<&Deployment> {
        self.targets
            .index()
            .position(ix)
            .and_then(|p| self.deployments.get(p))
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
    let window = CounterOptions::fixed_ttl(FAILURE_WINDOW);
    let local = slots.bind(targets.index(), std::sync::atomic::AtomicU64::default);
    let (deadlines, counters) = (cache.deadlines(), cache.counters());
    targets.index().try_map(|ix, id| {
        let parallel = parallel_limit(
            &deployments[ix.index()],
            settings.default_max_parallel_requests,
        )
        .map(|(limit, shared)| Parallel {
            limit,
            key: hash_tagged(id.as_str(), ":parallel"),
            shared,
            local: local.get(ix).cloned().unwrap_or_default(),
        });
        let checks = if settings.enable_health_check_routing {
            Some(Checks {
                passed: deadlines.deadline(&hash_tagged(id.as_str(), ":healthy_at"))?,
                failed: deadlines.deadline(&hash_tagged(id.as_str(), ":unhealthy_at"))?,
            })
        } else {
            None
        };
        let probation = if settings.half_open {
            Some(Probation {
                probe_key: hash_tagged(id.as_str(), ":probe"),
                passed: deadlines.deadline(&hash_tagged(id.as_str(), ":probe_passed"))?,
            })
        } else {
            None
        };
        Ok::<_, RouterError>(Health {
            parallel,
            checks,
            probation,
            cooldown: deadlines.deadline(&hash_tagged(id.as_str(), ":cooldown"))?,
            fails: counters.counter(&hash_tagged(id.as_str(), ":fails"), window)?,
            successes: counters.counter(&hash_tagged(id.as_str(), ":successes"), window)?,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
