//! `Strategy::pick` for every strategy at 10, 1,000 and 10,000 deployments, with usage state
//! populated (requests, tokens, calls in flight on four in five, latency samples on all) and
//! every deployment within its limits: usage-based scans every candidate, latency-based
//! descends the pool's score tree, the others draw from the group's pool. Each iteration takes the usage view, as
//! the router does once per request, and picks on it. `admission/batched` admits a call and
//! drops its permit (the in-process path every request takes after the pick).
//!
//! Run: `cargo bench -p ferrolite-benches --bench strategies`. The cache is in memory: in batched
//! mode a pick never touches Redis, so the numbers are the same with Redis configured.

// A benchmark that cannot set up has nothing to measure: failing loudly is right here.
#![allow(clippy::expect_used, clippy::disallowed_methods)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ferrolite_cache::{CacheConfig, DualCache, ManualClock, Window};
use ferrolite_strategies::{
    AdmissionMode, CallOutcome, Candidates, Outcome, Pool, RouteContext, StrategyConfig,
    StrategyName, Target, Targets, UsageStore, build,
};
use ferrolite_types::{Deployment, Usage};

const SIZES: [usize; 3] = [10, 1_000, 10_000];

fn group_of(n: usize) -> Vec<Deployment> {
    (0..n)
        .map(|i| Deployment {
            id: Some(format!("deployment-{i}")),
            rpm: Some(1_000_000),
            tpm: Some(100_000_000),
            weight: Some(1.0 + (i % 7) as f64),
            input_cost_per_token: Some(1e-6 * (1 + i % 5) as f64),
            output_cost_per_token: Some(2e-6),
            ..Deployment::new("gpt-4o", format!("azure/gpt-4o-{i}"))
        })
        .collect()
}

/// Targets and an in-memory usage store for `deployments`, on `clock`.
fn usage_for(
    rt: &tokio::runtime::Runtime,
    clock: &ManualClock,
    deployments: &[Deployment],
) -> (Targets, UsageStore) {
    let targets = Targets::new(deployments).expect("targets");
    let cache = rt
        .block_on(DualCache::connect_with_clock(
            CacheConfig::default(),
            Arc::new(clock.clone()),
        ))
        .expect("cache");
    let usage = UsageStore::new(
        cache,
        &targets,
        Window::MINUTE_SLIDING,
        AdmissionMode::Batched,
    )
    .expect("usage");
    (targets, usage)
}

fn picks(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let clock = ManualClock::new(1_767_225_630_000);
    let mut group = c.benchmark_group("pick");
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    for name in StrategyName::all() {
        for n in SIZES {
            let deployments = group_of(n);
            let (targets, usage) = usage_for(&rt, &clock, &deployments);
            let strategy = build(
                name,
                &StrategyConfig {
                    seed: Some(7),
                    ..Default::default()
                },
                &targets,
                Arc::new(clock.clone()),
            )
            .expect("strategy");
            let ctx = RouteContext {
                input_tokens: 300,
                ..RouteContext::new("gpt-4o")
            };
            let mut in_flight = Vec::new();
            for (i, target) in targets.iter().enumerate() {
                for _ in 0..(i % 5) {
                    usage.record(target, 1, 0).expect("count");
                    in_flight.push(rt.block_on(usage.admit(target, 0)).expect("admit"));
                }
                let outcome = CallOutcome {
                    latency: Duration::from_millis(200 + (i as u64 * 37) % 900),
                    time_to_first_token: Some(Duration::from_millis(50 + (i as u64 * 13) % 300)),
                    usage: Some(Usage::new(500, 100 + (i as u64 % 50))),
                };
                strategy.observe(target, &Outcome::Success(&outcome));
                usage.record(target, 0, 600).expect("tokens");
            }
            // The group's pool, as the router prepares it once per snapshot.
            let pool = Pool::new(&targets, targets.iter().map(|t| t.ix));
            strategy.prepare(&pool);
            group.bench_with_input(BenchmarkId::new(name.as_str(), n), &pool, |b, pool| {
                b.iter(|| {
                    let view = usage.view();
                    let eligible = Candidates::new(&targets, pool);
                    black_box(
                        strategy
                            .pick(black_box(&ctx), eligible, &view)
                            .map(|t| t.ix),
                    )
                })
            });
            drop(in_flight);
        }
    }
    group.finish();
    admission(c, &rt, &clock);
}

/// Admitting a call and dropping its permit, in process (batched mode).
fn admission(c: &mut Criterion, rt: &tokio::runtime::Runtime, clock: &ManualClock) {
    // Limits checked on every call, never reached however long criterion runs.
    let deployments: Vec<Deployment> = group_of(10)
        .into_iter()
        .map(|d| Deployment {
            rpm: Some(1 << 50),
            tpm: Some(1 << 60),
            ..d
        })
        .collect();
    let (targets, usage) = usage_for(rt, clock, &deployments);
    let target = targets.iter().next().expect("a target");
    let mut group = c.benchmark_group("usage");
    group.bench_function("view", |b| b.iter(|| black_box(usage.view().now_ms())));
    let eligible: Vec<&Target> = targets.iter().collect();
    group.bench_function("fits_10", |b| {
        let view = usage.view();
        b.iter(|| black_box(eligible.iter().filter(|t| view.fits(t, 300)).count()))
    });
    group.finish();
    let mut group = c.benchmark_group("admission");
    group.bench_function("batched_admit_and_release", |b| {
        b.to_async(rt).iter(|| async {
            let permit = usage.admit(target, 300).await.expect("admitted");
            black_box(permit.tokens())
        })
    });
    group.finish();
}

criterion_group!(benches, picks);
criterion_main!(benches);
