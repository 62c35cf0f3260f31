//! The budget filter: 100 deployments over 5 providers, every provider and every deployment
//! with a budget, plus tag budgets, with spend recorded — one `BudgetLedger::check` for the
//! request and one `allows` per deployment, as the router runs it before every pick.
//!
//! Run: `cargo bench -p ferrolite-benches --bench budgets`.

// A benchmark that cannot set up has nothing to measure: failing loudly is right here.
#![allow(clippy::expect_used, clippy::disallowed_methods)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use ferrolite_budgets::{BudgetConfig, BudgetLedger, BudgetsConfig};
use ferrolite_cache::{CacheConfig, DualCache, ManualClock};
use ferrolite_types::{Deployment, DeploymentIndex, DeploymentIx};

const PROVIDERS: [&str; 5] = ["openai", "azure", "anthropic", "bedrock", "vertex_ai"];

fn filter(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let clock = ManualClock::new(1_767_225_630_000);
    let cache = rt
        .block_on(DualCache::connect_with_clock(
            CacheConfig::default(),
            Arc::new(clock),
        ))
        .expect("cache");
    let config = BudgetsConfig {
        providers: PROVIDERS
            .iter()
            .map(|p| (p.to_string(), BudgetConfig::new(1_000.0, "1d")))
            .collect(),
        tags: ["team-a", "team-b", "batch"]
            .iter()
            .map(|t| (t.to_string(), BudgetConfig::new(50.0, "1mo")))
            .collect(),
        ..BudgetsConfig::default()
    };
    let deployments: Vec<Deployment> = (0..100)
        .map(|i| Deployment {
            id: Some(format!("d{i}")),
            max_budget: Some(20.0),
            budget_duration: Some("1d".into()),
            ..Deployment::new("g", format!("{}/model-{i}", PROVIDERS[i % PROVIDERS.len()]))
        })
        .collect();
    let index = DeploymentIndex::of(&deployments).expect("index");
    let ledger = BudgetLedger::new(cache, &config, &index, &deployments).expect("ledger");
    let tags = vec!["team-a".to_string()];
    let slots: Vec<DeploymentIx> = index.iter().map(|(ix, _)| ix).collect();
    rt.block_on(async {
        for (i, d) in slots.iter().enumerate() {
            ledger
                .record(*d, &tags, 0.01 * i as f64)
                .await
                .expect("record");
        }
    });
    let mut group = c.benchmark_group("budgets");
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("filter_100_deployments_5_providers_tags", |b| {
        b.to_async(&rt).iter(|| async {
            let check = ledger.check(black_box(&tags)).await.expect("check");
            black_box(slots.iter().filter(|d| ledger.allows(&check, **d)).count())
        })
    });
    group.finish();
}

criterion_group!(benches, filter);
criterion_main!(benches);
