//! Shared setup for the strategy tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use ferrolite_cache::{CacheConfig, DualCache, ManualClock, Window};
use ferrolite_strategies::{
    RouteContext, Strategy, StrategyConfig, StrategyName, Target, UsageStore, build,
};
use ferrolite_types::{Deployment, DeploymentId};

pub const GROUP: &str = "gpt-4o";
/// 2026-01-01T00:00:30Z: half-way through a minute.
pub const T0: u64 = 1_767_225_630_000;

pub struct Setup {
    pub targets: Vec<Target>,
    pub strategy: Arc<dyn Strategy>,
    pub usage: Arc<UsageStore>,
    pub clock: ManualClock,
}

impl Setup {
    pub fn eligible(&self) -> Vec<&Target> {
        self.targets.iter().collect()
    }

    pub fn pick(&self, ctx: &RouteContext<'_>) -> &Target {
        let eligible = self.eligible();
        self.strategy.pick(ctx, &eligible).unwrap()
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
    let targets = Target::for_group(&deployments);
    let usage = Arc::new(UsageStore::new(cache, GROUP, &targets, window).unwrap());
    let config = StrategyConfig {
        seed: Some(config.seed.unwrap_or(42)),
        ..config
    };
    let strategy = build(name, &config, Arc::clone(&usage)).unwrap();
    Setup {
        targets,
        strategy,
        usage,
        clock,
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
