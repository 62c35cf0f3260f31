//! Concurrent increments sum exactly, locally and across instances.
// Tests may unwrap and panic: a failure is the test failing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::time::Duration;

use ferrolite_cache::testing::{config, redis_url, unique_prefix};
use ferrolite_cache::{CacheConfig, CounterOptions, DualCache};

const OPTIONS: CounterOptions = CounterOptions {
    ttl: Duration::from_secs(60),
    expiry: ferrolite_cache::ExpiryMode::FromLastWrite,
};

async fn hammer(cache: &DualCache, key: &str, tasks: usize, per_task: usize) {
    let mut handles = Vec::with_capacity(tasks);
    for _ in 0..tasks {
        let cache = cache.clone();
        let key = key.to_string();
        handles.push(tokio::spawn(async move {
            for _ in 0..per_task {
                cache.counters().increment(&key, 1, OPTIONS).unwrap();
            }
        }));
    }
    for handle in handles {
        handle.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_concurrent_local_increments_sum_exactly() {
    let cache = DualCache::connect(CacheConfig::default()).await.unwrap();
    hammer(&cache, "k", 10_000, 1).await;
    assert_eq!(cache.counters().value("k"), Some(10_000.0));
    cache.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_increments_while_the_sync_task_runs_reach_redis_exactly() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("concurrent");
    let a = DualCache::connect(config(&url, &prefix)).await.unwrap();
    let b = DualCache::connect(config(&url, &prefix)).await.unwrap();
    // The sync task (every 20 ms) runs while the increments land.
    tokio::join!(hammer(&a, "k", 100, 100), hammer(&b, "k", 100, 100));
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    let check = DualCache::connect(CacheConfig {
        sync_interval: Duration::from_secs(3600),
        ..config(&url, &prefix)
    })
    .await
    .unwrap();
    check.counters().increment("k", 0, OPTIONS).unwrap();
    check.sync_now().await.unwrap();
    assert_eq!(check.counters().value("k"), Some(20_000.0));
}
