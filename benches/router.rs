//! `Router::call` end to end with an instant in-process backend: 10 deployments of one group,
//! usage-based-routing-v2 with rpm/tpm limits and a provider budget, in memory. The median is
//! the router's whole cost per call (resolve, filter, pick, admit, reserve, call, settle,
//! record), since the backend answers at once.
//!
//! `router_scale` calls through one group of 10, 1,000 and 10,000 deployments per strategy (in
//! memory, batched, rpm/tpm limits checked on every call, no budget): the cost of a call as the
//! group grows.
//!
//! Run: `cargo bench -p ferrolite-benches --bench router` (`-- router_scale` for the sizes only).

// A benchmark that cannot set up has nothing to measure: failing loudly is right here.
#![allow(clippy::expect_used, clippy::disallowed_methods)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ferrolite_budgets::{BudgetConfig, BudgetsConfig};
use ferrolite_cache::{CacheConfig, DualCache, RedisConfig};
use ferrolite_router::{
    Backend, BackendFuture, BackendRequest, BackendResponse, Request, Router, RouterSettings,
};
use ferrolite_strategies::{AdmissionMode, StrategyName};
use ferrolite_types::{Deployment, Usage};

/// Answers at once.
struct Instant;

impl Backend for Instant {
    fn call<'a>(&'a self, _: &'a Deployment, _: &'a BackendRequest) -> BackendFuture<'a> {
        Box::pin(async {
            Ok(BackendResponse {
                protocol: Default::default(),
                body: serde_json::Value::Null.into(),
                usage: Some(Usage::new(300, 100)),
                time_to_first_token: None,
            })
        })
    }
}

fn deployments() -> Vec<Deployment> {
    (0..10)
        .map(|i| Deployment {
            id: Some(format!("d{i}")),
            // Limits checked on every call, never reached however long criterion runs.
            rpm: Some(1 << 50),
            tpm: Some(1 << 60),
            input_cost_per_token: Some(1e-9),
            output_cost_per_token: Some(2e-9),
            ..Deployment::new("gpt-4o", format!("azure/gpt-4o-{i}"))
        })
        .collect()
}

fn settings(admission: AdmissionMode) -> RouterSettings {
    let mut settings = RouterSettings {
        routing_strategy: StrategyName::UsageBasedV2,
        admission,
        budgets: BudgetsConfig {
            providers: [("azure".to_string(), BudgetConfig::new(1e12, "1d"))].into(),
            ..BudgetsConfig::default()
        },
        ..RouterSettings::default()
    };

    settings.strategy.seed = Some(7);
    settings
}

fn request() -> Request {
    let body =
        serde_json::json!({"messages": [{"role": "user", "content": "hello"}], "max_tokens": 100});
    let mut request = Request::new("gpt-4o", body);
    request.input_tokens = Some(300);
    request
}

/// A router over [`deployments`] in memory, batched.
fn in_memory_router(rt: &tokio::runtime::Runtime) -> Router {
    let cache = rt
        .block_on(DualCache::connect(CacheConfig::default()))
        .expect("cache");
    Router::new(
        deployments(),
        settings(AdmissionMode::Batched),
        cache,
        Arc::new(Instant),
    )
    .expect("router")
}

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string())
}

fn call(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut group = c.benchmark_group("router");
    group.measurement_time(Duration::from_secs(5));
    let router = in_memory_router(&rt);
    group.bench_function("call_10_deployments_v2_limits_budget", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(router.call(request()).await.expect("routed")) })
    });
    for (name, admission, budget) in [
        ("call_batched_redis", AdmissionMode::Batched, true),
        (
            "call_batched_redis_no_budget",
            AdmissionMode::Batched,
            false,
        ),
        ("call_strict_redis", AdmissionMode::Strict, true),
        ("call_strict_redis_no_budget", AdmissionMode::Strict, false),
        ("call_auto_redis", AdmissionMode::Auto, true),
        ("call_auto_redis_no_budget", AdmissionMode::Auto, false),
    ] {
        let config = CacheConfig {
            redis: Some(RedisConfig::new(redis_url()).with_prefix("ferrolite-bench-router:")),
            ..CacheConfig::default()
        };
        let cache = match rt.block_on(DualCache::connect(config)) {
            Ok(cache) if !cache.stats().redis_down => cache,
            _ => {
                eprintln!("{name}: no Redis at {}; skipped", redis_url());
                continue;
            }
        };
        let mut settings = settings(admission);
        if !budget {
            settings.budgets = BudgetsConfig::default();
        }
        let router =
            Router::new(deployments(), settings, cache, Arc::new(Instant)).expect("router");
        group.bench_function(name, |b| {
            b.to_async(&rt)
                .iter(|| async { black_box(router.call(request()).await.expect("routed")) })
        });
    }
    group.finish();
}

/// 100 calls at once on a 2-worker runtime: the time for the batch (calls/s = 100 / time).
fn concurrency(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let router = in_memory_router(&rt);
    let mut group = c.benchmark_group("router");
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("batch_of_100_concurrent_calls", |b| {
        b.to_async(&rt).iter(|| async {
            let calls: Vec<_> = (0..100)
                .map(|_| {
                    let router = router.clone();
                    tokio::spawn(async move { router.call(request()).await })
                })
                .collect();
            for call in calls {
                black_box(call.await.expect("joined").expect("routed"));
            }
        })
    });
    group.finish();
}

/// A group of `n` deployments with limits, weights and prices (five price levels, seven weights).
fn group_of(n: usize) -> Vec<Deployment> {
    (0..n)
        .map(|i| Deployment {
            id: Some(format!("d{i}")),
            rpm: Some(1 << 50),
            tpm: Some(1 << 60),
            weight: Some(1.0 + (i % 7) as f64),
            input_cost_per_token: Some(1e-9 * (1 + i % 5) as f64),
            output_cost_per_token: Some(2e-9),
            ..Deployment::new("gpt-4o", format!("azure/gpt-4o-{i}"))
        })
        .collect()
}

/// `Router::call` through groups of 10, 1,000 and 10,000 deployments, per strategy.
fn scale(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut group = c.benchmark_group("router_scale");
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    for name in [
        StrategyName::SimpleShuffle,
        StrategyName::LeastBusy,
        StrategyName::UsageBasedV2,
        StrategyName::CostBased,
        StrategyName::LatencyBased,
        StrategyName::P2cEwma,
    ] {
        for n in [10, 1_000, 10_000] {
            let cache = rt
                .block_on(DualCache::connect(CacheConfig::default()))
                .expect("cache");
            let mut settings = RouterSettings {
                routing_strategy: name,
                ..RouterSettings::default()
            };
            settings.strategy.seed = Some(7);
            let router =
                Router::new(group_of(n), settings, cache, Arc::new(Instant)).expect("router");
            group.bench_function(BenchmarkId::new(name.as_str(), n), |b| {
                b.to_async(&rt)
                    .iter(|| async { black_box(router.call(request()).await.expect("routed")) })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, call, concurrency, scale);
criterion_main!(benches);
