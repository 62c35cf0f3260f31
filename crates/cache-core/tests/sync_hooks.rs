//! Sync hooks: work a user of the cache queues at the start of a sync reaches Redis in that
//! same flush; the clean stop runs the hooks with `stopping` before the last flush; a dropped
//! hook no longer runs; `next_sync` completes once a sync has run.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use ferrolite_cache::testing::{raw_client, redis_url, unique_prefix};
use ferrolite_cache::{CacheConfig, CounterOptions, DualCache, IntCounter, RedisConfig, SyncHook};
use fred::prelude::KeysInterface;

/// Adds one to a counter at every sync; remembers whether it was told the cache is stopping.
struct Adds {
    counter: IntCounter,
    runs: AtomicUsize,
    stopping: AtomicBool,
}

impl SyncHook for Adds {
    fn before_sync(&self, _now_ms: u64, stopping: bool) {
        self.runs.fetch_add(1, Ordering::SeqCst);
        self.stopping.fetch_or(stopping, Ordering::SeqCst);
        self.counter.increment(1).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_s_increments_reach_redis_in_the_same_sync_and_the_clean_stop_tells_it() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("sync-hooks");
    // Syncs an hour apart: only the syncs this test asks for run.
    let cache = DualCache::connect(CacheConfig {
        redis: Some(RedisConfig::new(&url).with_prefix(&prefix)),
        sync_interval: Duration::from_secs(3600),
        ..CacheConfig::default()
    })
    .await
    .unwrap();
    let raw = raw_client(&url).await;
    let value = || async {
        raw.get::<Option<i64>, _>(format!("{prefix}k"))
            .await
            .unwrap()
    };
    let hook = Arc::new(Adds {
        counter: cache
            .counters()
            .counter("k", CounterOptions::ttl(Duration::from_secs(60)))
            .unwrap(),
        runs: AtomicUsize::new(0),
        stopping: AtomicBool::new(false),
    });
    let weak: Weak<dyn SyncHook> = Arc::downgrade(&(hook.clone() as Arc<dyn SyncHook>));
    cache.add_sync_hook(weak);

    let next = cache.next_sync();
    cache.sync_now().await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), next)
        .await
        .expect("next_sync completes after a sync");
    assert_eq!(
        value().await,
        Some(1),
        "the hook's increment is in that sync's flush"
    );
    assert!(!hook.stopping.load(Ordering::SeqCst));

    cache.shutdown().await.unwrap();
    assert!(
        hook.stopping.load(Ordering::SeqCst),
        "the clean stop says so"
    );
    assert_eq!(value().await, Some(2), "and flushes what the hook gave");

    let runs = hook.runs.load(Ordering::SeqCst);
    drop(hook);
    cache.sync_now().await.unwrap();
    assert_eq!(runs, 2);
}

#[tokio::test]
async fn a_dropped_hook_no_longer_runs() {
    let cache = DualCache::connect(CacheConfig::default()).await.unwrap();
    let counter = cache
        .counters()
        .counter("k", CounterOptions::ttl(Duration::from_secs(60)))
        .unwrap();
    let hook: Arc<dyn SyncHook> = Arc::new(Adds {
        counter: counter.clone(),
        runs: AtomicUsize::new(0),
        stopping: AtomicBool::new(false),
    });
    cache.add_sync_hook(Arc::downgrade(&hook));
    cache.sync_now().await.unwrap();
    assert_eq!(counter.value(), 1);
    drop(hook);
    cache.sync_now().await.unwrap();
    assert_eq!(counter.value(), 1);
    cache.shutdown().await.unwrap();
}
