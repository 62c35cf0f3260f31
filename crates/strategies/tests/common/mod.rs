//! Shared setup for the strategy tests.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::sync::Arc;
use std::time::Duration;

use ferrolite_cache::{CacheConfig, DualCache, ManualClock, Window};
use ferrolite_strategies::{
    AdmissionMode, CallOutcome, Candidates, Exclusions, Outcome, Permit, Pool, RouteContext,
    Strategy, StrategyConfig, StrategyError, StrategyName, Target, Targets, UsageStore, build,
};
use ferrolite_types::{Deployment, DeploymentId, ErrorClass};
use parking_lot::Mutex;

pub const GROUP: &str = "gpt-4o";
/// 2026-01-01T00:00:30Z: half-way through a minute.
pub const T0: u64 = 1_767_225_630_000;

pub struct Setup {
    pub all: Targets,
    pub targets: Vec<Target>,
    pub strategy: Arc<dyn Strategy>,
    pub usage: Arc<UsageStore>,
    pub cache: DualCache,
    pub clock: ManualClock,
    /// Permits held to keep calls in flight.
    held: Mutex<Vec<Permit>>,
}

impl Setup {
    pub fn eligible(&self) -> Vec<&Target> {
        self.targets.iter().collect()
    }

    /// The strategy's pick among `eligible`, on a fresh usage view: the pool of every target,
    /// less those not in `eligible` (as the router's filters leave them out).
    pub fn pick_from(
        &self,
        ctx: &RouteContext<'_>,
        eligible: &[&Target],
    ) -> Result<&Target, StrategyError> {
        let pool = Pool::new(&self.all, self.all.iter().map(|t| t.ix));
        let mut excluded = Exclusions::new(pool.len());
        for (position, ix) in pool.members().iter().enumerate() {
            if !eligible.iter().any(|t| t.ix == *ix) {
                excluded.insert(position);
            }
        }
        let candidates = Candidates::without(&self.all, &pool, &excluded);
        self.strategy.pick(ctx, candidates, &self.usage.view())
    }

    pub fn pick(&self, ctx: &RouteContext<'_>) -> &Target {
        let eligible = self.eligible();
        self.pick_from(ctx, &eligible).unwrap()
    }

    pub fn pick_id(&self, ctx: &RouteContext<'_>) -> String {
        self.pick(ctx).id.to_string()
    }

    pub fn target(&self, id: &str) -> &Target {
        self.targets.iter().find(|t| t.id.as_str() == id).unwrap()
    }

    /// Counts how often each id is picked in `n` picks.
    pub fn histogram(
        &self,
        ctx: &RouteContext<'_>,
        n: usize,
    ) -> std::collections::HashMap<String, usize> {
        let mut counts = std::collections::HashMap::new();
        for _ in 0..n {
            *counts.entry(self.pick_id(ctx)).or_insert(0) += 1;
        }
        counts
    }

    /// One request in `target`'s window (no limit check).
    pub fn count_request(&self, target: &Target) {
        self.usage.record(target, 1, 0).unwrap();
    }

    /// Tokens in `target`'s window (no limit check).
    pub fn record_tokens(&self, target: &Target, tokens: i64) {
        self.usage.record(target, 0, tokens).unwrap();
    }

    /// Admits a call of the context's estimated tokens.
    pub async fn admit(
        &self,
        target: &Target,
        ctx: &RouteContext<'_>,
    ) -> Result<Permit, StrategyError> {
        self.usage.admit(target, ctx.estimated_tokens()).await
    }

    /// Keeps `n` more calls in flight on `target` (each also counts a request).
    pub async fn hold_in_flight(&self, target: &Target, n: usize) {
        for _ in 0..n {
            let permit = self.usage.admit(target, 0).await.unwrap();
            self.held.lock().push(permit);
        }
    }

    /// Ends every held call on `target`.
    pub fn release_in_flight(&self, target: &Target) {
        self.held.lock().retain(|p| p.ix() != target.ix);
    }

    /// A successful call on `target`: the strategy learns from it, its tokens are counted.
    pub fn succeed(&self, target: &Target, outcome: &CallOutcome) {
        self.strategy.observe(target, &Outcome::Success(outcome));
        if let Some(usage) = outcome.usage {
            self.record_tokens(target, usage.total_tokens as i64);
        }
    }

    /// A usage store on this setup's cache for another snapshot's targets.
    pub fn usage_for(&self, targets: &Targets) -> UsageStore {
        UsageStore::new(
            self.cache.clone(),
            targets,
            Window::MINUTE_SLIDING,
            AdmissionMode::Batched,
        )
        .unwrap()
    }

    /// A failed call on `target`.
    pub fn fail(&self, target: &Target, error: &ErrorClass) {
        self.strategy.observe(target, &Outcome::Failure(error));
    }
}

pub fn deployment(id: &str) -> Deployment {
    Deployment {
        id: Some(id.to_string()),
        ..Deployment::new(GROUP, format!("openai/{id}"))
    }
}

pub async fn setup_with(
    deployments: Vec<Deployment>,
    name: StrategyName,
    config: StrategyConfig,
    window: Window,
) -> Setup {
    let clock = ManualClock::new(T0);
    let cache = DualCache::connect_with_clock(CacheConfig::default(), Arc::new(clock.clone()))
        .await
        .unwrap();
    let all = Targets::new(&deployments).unwrap();
    let usage =
        Arc::new(UsageStore::new(cache.clone(), &all, window, AdmissionMode::Batched).unwrap());
    let config = StrategyConfig {
        seed: Some(config.seed.unwrap_or(42)),
        ..config
    };
    let strategy = build(name, &config, &all, Arc::new(clock.clone())).unwrap();
    Setup {
        targets: all.iter().cloned().collect(),
        all,
        strategy,
        usage,
        cache,
        clock,
        held: Mutex::new(Vec::new()),
    }
}

pub async fn setup(deployments: Vec<Deployment>, name: StrategyName) -> Setup {
    setup_with(
        deployments,
        name,
        StrategyConfig::default(),
        Window::MINUTE_SLIDING,
    )
    .await
}

pub fn ids(ids: &[&str]) -> Vec<DeploymentId> {
    ids.iter().map(|i| DeploymentId::new(*i)).collect()
}

pub fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}
