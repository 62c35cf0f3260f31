//! Watched deadlines (cooldowns) and cached reads: shared state read without a round trip.
// Tests may unwrap and panic: a failure is the test failing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::sync::Arc;
use std::time::Duration;

use ferrolite_cache::testing::{config, raw_client, redis_url, unique_prefix};
use ferrolite_cache::{CacheConfig, CacheError, CounterOptions, DualCache, ManualClock};
use fred::prelude::KeysInterface;

#[tokio::test]
async fn a_deadline_set_on_one_instance_is_seen_by_another_after_one_sync() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("deadline-seen");
    let a = DualCache::connect(config(&url, &prefix)).await.unwrap();
    let b = DualCache::connect(config(&url, &prefix)).await.unwrap();
    let seen_by_b = b.deadlines().deadline("{d1}:cooldown").unwrap();
    let now = a.clock().now_ms();
    assert!(!seen_by_b.is_active(now));

    a.deadlines()
        .deadline("{d1}:cooldown")
        .unwrap()
        .extend_to(now + 5_000)
        .await
        .unwrap();
    b.sync_now().await.unwrap();
    assert_eq!(seen_by_b.until_ms(), Some(now + 5_000));
    assert!(seen_by_b.is_active(now + 4_999));
    assert!(!seen_by_b.is_active(now + 5_000));
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn re_setting_a_deadline_only_ever_extends_it() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("deadline-extend");
    let a = DualCache::connect(config(&url, &prefix)).await.unwrap();
    let b = DualCache::connect(config(&url, &prefix)).await.unwrap();
    let now = a.clock().now_ms();
    a.deadlines()
        .deadline("{d1}:cooldown")
        .unwrap()
        .extend_to(now + 60_000)
        .await
        .unwrap();
    // b has not synced: it proposes a shorter cooldown; Redis keeps the later one and says so.
    let held = b
        .deadlines()
        .deadline("{d1}:cooldown")
        .unwrap()
        .extend_to(now + 5_000)
        .await
        .unwrap();
    assert_eq!(held, now + 60_000);
    let raw = raw_client(&url).await;
    let stored: u64 = raw.get(format!("{prefix}{{d1}}:cooldown")).await.unwrap();
    assert_eq!(stored, now + 60_000);
    let ttl: i64 = raw.pttl(format!("{prefix}{{d1}}:cooldown")).await.unwrap();
    assert!(
        ttl > 50_000 && ttl <= 60_000,
        "the key lives until the deadline: {ttl}"
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_missing_key_is_read_from_redis_once_per_remote_read_ttl() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("negative-cache");
    let cache = DualCache::connect(CacheConfig {
        remote_read_ttl: Duration::from_millis(300),
        ..config(&url, &prefix)
    })
    .await
    .unwrap();
    assert_eq!(cache.kv().get("cooldown").await.unwrap(), None);
    // Another instance writes it; within remote_read_ttl the cached "absent" is served (no
    // round trip), afterwards Redis is asked again.
    let raw = raw_client(&url).await;
    let _: () = raw
        .set(format!("{prefix}cooldown"), "429", None, None, false)
        .await
        .unwrap();
    assert_eq!(cache.kv().get("cooldown").await.unwrap(), None);
    assert_eq!(
        cache.kv().batch_get(&["cooldown"]).await.unwrap(),
        vec![None]
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        cache.kv().get("cooldown").await.unwrap().as_deref(),
        Some("429")
    );
    cache.shutdown().await.unwrap();
}

/// Regression (review of 79b0912): with the key registry full and nothing prunable (an outage),
/// every new key ran an O(n) scan under the registry's write lock on the caller's path.
#[tokio::test]
async fn a_full_registry_is_scanned_at_most_once_per_sync_interval() {
    let clock = ManualClock::new(1_000_000);
    let cache = DualCache::connect_with_clock(
        CacheConfig {
            max_tracked_keys: 10,
            sync_interval: Duration::from_secs(3600),
            ..CacheConfig::default()
        },
        Arc::new(clock.clone()),
    )
    .await
    .unwrap();
    let live: Vec<_> = (0..10)
        .map(|i| {
            cache
                .counters()
                .counter(
                    &format!("live{i}"),
                    CounterOptions::ttl(Duration::from_secs(60)),
                )
                .unwrap()
        })
        .collect();
    for i in 0..1_000 {
        assert!(matches!(
            cache.counters().counter(
                &format!("new{i}"),
                CounterOptions::ttl(Duration::from_secs(60))
            ),
            Err(CacheError::TrackedKeysFull { .. })
        ));
    }
    assert_eq!(cache.stats().prune_scans, 1);
    assert_eq!(cache.stats().tracked_key_overflows, 1_000);
    // Watched deadlines share the bound.
    assert!(matches!(
        cache.deadlines().deadline("{d}:cooldown"),
        Err(CacheError::TrackedKeysFull { .. })
    ));
    clock.advance_ms(3_600_000);
    drop(live);
    // A sync interval later the next refused key may scan again, and this time frees room.
    cache
        .counters()
        .counter("after", CounterOptions::ttl(Duration::from_secs(60)))
        .unwrap();
    assert_eq!(cache.stats().prune_scans, 2);
    cache.shutdown().await.unwrap();
}
