//! Benchmarks of ferrolite-cache: the hot-path counter operations, the windowed-counter check,
//! the `DualCache` increment in batched mode (Redis configured, never awaited), and one
//! strict-mode admission against the local Redis.
//!
//! Run: `cargo bench -p ferrolite-benches --bench cache` (or `cargo xtask bench`). The strict
//! benchmark uses `REDIS_URL`, else `redis://127.0.0.1:6379`, and is skipped when neither answers.

// A benchmark that cannot set up has nothing to measure: failing loudly is right here.
#![allow(clippy::expect_used, clippy::disallowed_methods)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use ferrolite_cache::{
    CacheConfig, CounterOptions, DualCache, LimitCheck, ManualClock, RedisConfig, Window,
    WindowedCounter,
};

const OPTIONS: CounterOptions = CounterOptions {
    ttl: Duration::from_secs(60),
    expiry: ferrolite_cache::ExpiryMode::FromLastWrite,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string())
}

fn local_counter(c: &mut Criterion) {
    let rt = runtime();
    let cache = rt
        .block_on(DualCache::connect(CacheConfig::default()))
        .expect("in-memory cache");
    let counter = cache
        .counters()
        .counter("bench:local", OPTIONS)
        .expect("counter");
    let mut group = c.benchmark_group("local_counter");
    group.bench_function("increment", |b| {
        b.iter(|| black_box(counter.increment(black_box(1))))
    });
    group.bench_function("read", |b| b.iter(|| black_box(counter.value())));
    group.finish();
}

fn windowed_counter(c: &mut Criterion) {
    let clock = ManualClock::new(1_700_000_000_000);
    let sliding = WindowedCounter::new(Window::MINUTE_SLIDING);
    let mut group = c.benchmark_group("windowed_counter");
    group.bench_function("sliding_try_add", |b| {
        b.iter(|| {
            clock.advance_ms(1);
            black_box(sliding.try_add(ferrolite_cache::Clock::now_ms(&clock), 1.0, 1e12))
        })
    });
    group.bench_function("sliding_estimate", |b| {
        b.iter(|| black_box(sliding.estimate(ferrolite_cache::Clock::now_ms(&clock))))
    });
    group.finish();
}

/// A watched deadline (a cooldown) as every request reads it: one atomic load, no Redis.
fn watched_read(c: &mut Criterion) {
    let rt = runtime();
    let cache = rt
        .block_on(DualCache::connect(CacheConfig::default()))
        .expect("in-memory cache");
    let cooldown = cache
        .deadlines()
        .deadline("{bench}:cooldown")
        .expect("deadline");
    let now = cache.clock().now_ms();
    rt.block_on(cooldown.extend_to(now + 60_000))
        .expect("extend");
    let mut group = c.benchmark_group("watched");
    group.bench_function("is_active", |b| {
        b.iter(|| black_box(cooldown.is_active(black_box(now))))
    });
    group.finish();
}

fn dual_cache_batched(c: &mut Criterion) {
    let rt = runtime();
    let config = CacheConfig {
        redis: Some(RedisConfig::new(redis_url()).with_prefix("ferrolite-bench:")),
        ..CacheConfig::default()
    };
    let cache = rt.block_on(DualCache::connect(config)).expect("cache");
    let mut group = c.benchmark_group("dual_cache");
    // By string key: registry lookup + atomic add; the sync task pushes in the background.
    group.bench_function("increment_batched_by_key", |b| {
        b.iter(|| {
            black_box(
                cache
                    .counters()
                    .increment(black_box("bench:batched"), 1, OPTIONS),
            )
        })
    });
    let handle = cache
        .counters()
        .counter("bench:batched-handle", OPTIONS)
        .expect("counter");
    group.bench_function("increment_batched_handle", |b| {
        b.iter(|| black_box(handle.increment(1)))
    });
    group.finish();
    let _ = rt.block_on(cache.shutdown());
}

fn strict_admission(c: &mut Criterion) {
    // One thread drives the client and the benchmark: no cross-thread wake-up per round trip.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let config = CacheConfig {
        redis: Some(RedisConfig::new(redis_url()).with_prefix("ferrolite-bench:")),
        ..CacheConfig::default()
    };
    let cache = match rt.block_on(DualCache::connect(config)) {
        Ok(cache) if !cache.stats().redis_down => cache,
        _ => {
            eprintln!("strict_admission: no Redis at {}; skipped", redis_url());
            return;
        }
    };
    let rpm = LimitCheck {
        key: "{bench}:rpm".into(),
        delta: 1,
        limit: 1_000_000_000_000_000,
        window: Window::MINUTE_SLIDING,
    };
    let tpm = LimitCheck {
        key: "{bench}:tpm".into(),
        delta: 500,
        limit: 1_000_000_000_000_000,
        ..rpm.clone()
    };
    let one = [rpm.clone()];
    let two = [rpm, tpm];
    let cache = Arc::new(cache);
    let mut group = c.benchmark_group("strict_admission");
    // The floor: one GET round trip on loopback with fred, the same client the cache uses.
    let raw = fred::prelude::Builder::from_config(
        fred::prelude::Config::from_url(&redis_url()).expect("the URL the cache accepted"),
    )
    .build()
    .expect("client");
    rt.block_on(fred::prelude::ClientLike::init(&raw))
        .expect("connect");
    group.bench_function("baseline_get_round_trip", |b| {
        b.to_async(&rt).iter(|| async {
            let value: Option<String> =
                fred::prelude::KeysInterface::get(&raw, "ferrolite-bench:none")
                    .await
                    .expect("GET");
            value
        })
    });
    group.bench_function("one_limit", |b| {
        b.to_async(&rt).iter(|| cache.admission().admit(&one))
    });
    group.bench_function("rpm_and_tpm", |b| {
        b.to_async(&rt).iter(|| cache.admission().admit(&two))
    });
    group.finish();
}

criterion_group!(
    benches,
    local_counter,
    windowed_counter,
    watched_read,
    dual_cache_batched,
    strict_admission
);
criterion_main!(benches);
