//! The end-to-end load: `Router::call` through the facade with an instant mock backend, 10
//! deployments of one group, usage-based-routing-v2 with rpm/tpm limits: latency at
//! concurrency 1 and throughput at concurrency 100, in memory, with batched Redis and with
//! strict Redis. Prints one JSON line, so the numbers can be set beside LiteLLM's measured the
//! same way (LiteLLM 1.106.2: 3.7 ms per call at concurrency 1, 249 calls/s at 100).
//!
//! Run: `cargo run --release -p ferrolite-benches --bin e2e` (Redis at `REDIS_URL`, else
//! `redis://127.0.0.1:6379`; the Redis modes are left out when none answers).

// A load that cannot set up has nothing to measure: failing loudly is right here.
#![allow(clippy::expect_used, clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use ferrolite::cache::{CacheConfig, DualCache, RedisConfig};
use ferrolite::mock::MockSpec;
use ferrolite::router::RouterSettings;
use ferrolite::strategies::{AdmissionMode, StrategyName};
use ferrolite::types::Deployment;
use ferrolite::{Request, Router, RouterExt};

fn deployments() -> Vec<Deployment> {
    (0..10)
        .map(|i| Deployment {
            id: Some(format!("d{i}")),
            rpm: Some(1 << 50),
            tpm: Some(1 << 60),
            ..Deployment::new("gpt-4o", format!("azure/gpt-4o-{i}"))
        })
        .collect()
}

fn request() -> Request {
    let mut request = Request::new(
        "gpt-4o",
        serde_json::json!({"messages": [{"role": "user", "content": "hello"}], "max_tokens": 100}),
    );
    request.input_tokens = Some(300);
    request
}

async fn router(admission: AdmissionMode, redis: Option<&str>) -> Option<Router> {
    let mut config = CacheConfig::default();
    if let Some(url) = redis {
        config.redis = Some(RedisConfig::new(url).with_prefix("ferrolite-e2e:"));
    }
    let cache = DualCache::connect(config).await.ok()?;
    if redis.is_some() && cache.stats().redis_down {
        return None;
    }
    let mut settings = RouterSettings {
        routing_strategy: StrategyName::UsageBasedV2,
        admission,
        ..RouterSettings::default()
    };
    settings.strategy.seed = Some(7);
    Router::builder()
        .deployments(deployments())
        .settings(settings)
        .cache(cache)
        .mock_all(MockSpec::reply("ok"))
        .build()
        .await
        .ok()
}

/// p50 and p99 of `n` sequential calls, microseconds.
async fn latency(router: &Router, n: usize) -> (f64, f64) {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        router.call(request()).await.expect("routed");
        samples.push(started.elapsed().as_secs_f64() * 1e6);
    }
    samples.sort_by(f64::total_cmp);
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    (at(0.5), at(0.99))
}

/// Calls per second with 100 callers for `length`.
async fn throughput(router: &Router, length: Duration) -> f64 {
    let started = Instant::now();
    let callers: Vec<_> = (0..100)
        .map(|_| {
            let router = router.clone();
            tokio::spawn(async move {
                let mut calls = 0u64;
                while started.elapsed() < length {
                    router.call(request()).await.expect("routed");
                    calls += 1;
                }
                calls
            })
        })
        .collect();
    let mut total = 0;
    for caller in callers {
        total += caller.await.expect("joined");
    }
    total as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let mut summary = serde_json::Map::new();
    for (name, admission, redis) in [
        ("in_memory", AdmissionMode::Batched, None),
        ("redis_batched", AdmissionMode::Batched, Some(url.as_str())),
        ("redis_strict", AdmissionMode::Strict, Some(url.as_str())),
    ] {
        let measured = runtime.block_on(async {
            let router = router(admission, redis).await?;
            let sequential = if redis.is_some() && admission == AdmissionMode::Strict {
                2_000
            } else {
                20_000
            };
            let _ = latency(&router, 500).await; // warm up
            let (p50, p99) = latency(&router, sequential).await;
            let rate = throughput(&router, Duration::from_secs(3)).await;
            let _ = router.cache().shutdown().await;
            Some(serde_json::json!({
                "c1_p50_us": (p50 * 10.0).round() / 10.0,
                "c1_p99_us": (p99 * 10.0).round() / 10.0,
                "c100_calls_per_s": rate.round(),
            }))
        });
        match measured {
            Some(value) => {
                summary.insert(name.into(), value);
            }
            None => eprintln!("{name}: no Redis at {url}; left out"),
        }
    }
    summary.insert(
        "litellm_1_106_2".into(),
        serde_json::json!({"c1_ms_per_call": 3.7, "c100_calls_per_s": 249}),
    );
    println!("{}", serde_json::Value::Object(summary));
}
