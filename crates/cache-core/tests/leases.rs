//! Leases: shared slots with a limit, released on drop, expiring when their holder crashed.
// Tests may unwrap and panic: a failure is the test failing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::time::Duration;

use ferrolite_cache::testing::{config, redis_url, unique_prefix};
use ferrolite_cache::{CacheConfig, DualCache};

#[tokio::test]
async fn two_instances_share_the_slots_and_a_dropped_lease_frees_its_slot() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("leases");
    let a = DualCache::connect(config(&url, &prefix)).await.unwrap();
    let b = DualCache::connect(config(&url, &prefix)).await.unwrap();
    let ttl = Duration::from_secs(30);
    let mut held = Vec::new();
    for i in 0..6 {
        let cache = if i % 2 == 0 { &a } else { &b };
        if let Some(lease) = cache.leases().take("{d1}:parallel", 4, ttl).await.unwrap() {
            held.push(lease);
        }
    }
    assert_eq!(held.len(), 4, "4 slots across both instances");
    assert!(
        b.leases()
            .take("{d1}:parallel", 4, ttl)
            .await
            .unwrap()
            .is_none()
    );
    drop(held.pop());
    a.sync_now().await.unwrap();
    b.sync_now().await.unwrap();
    let again = b.leases().take("{d1}:parallel", 4, ttl).await.unwrap();
    assert!(
        again.is_some(),
        "the released slot is free for the other instance"
    );
    held.push(again.unwrap());
    for lease in &held {
        lease.renew().await.unwrap();
    }
    drop(held);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_lease_whose_holder_crashed_expires_after_its_ttl() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("lease-crash");
    let crashed = DualCache::connect(config(&url, &prefix)).await.unwrap();
    let ttl = Duration::from_millis(300);
    let lease = crashed
        .leases()
        .take("{d1}:parallel", 1, ttl)
        .await
        .unwrap()
        .unwrap();
    std::mem::forget(lease); // the instance dies holding it: nothing gives it back
    let other = DualCache::connect(config(&url, &prefix)).await.unwrap();
    assert!(
        other
            .leases()
            .take("{d1}:parallel", 1, ttl)
            .await
            .unwrap()
            .is_none()
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(
        other
            .leases()
            .take("{d1}:parallel", 1, ttl)
            .await
            .unwrap()
            .is_some(),
        "the crashed holder's lease expired"
    );
    other.shutdown().await.unwrap();
    crashed.shutdown().await.unwrap();
}

#[tokio::test]
async fn without_redis_slots_are_counted_in_process() {
    let cache = DualCache::connect(CacheConfig::default()).await.unwrap();
    let ttl = Duration::from_secs(30);
    let first = cache.leases().take("k", 2, ttl).await.unwrap().unwrap();
    let second = cache.leases().take("k", 2, ttl).await.unwrap().unwrap();
    assert!(cache.leases().take("k", 2, ttl).await.unwrap().is_none());
    assert_eq!(cache.leases().taken_locally("k"), 2);
    drop(first);
    assert_eq!(cache.leases().taken_locally("k"), 1);
    assert!(cache.leases().take("k", 2, ttl).await.unwrap().is_some());
    drop(second);
    assert!(cache.leases().take("", 2, ttl).await.is_err());
    cache.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_slots_held_are_counted_for_every_instance_in_one_read() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("lease-count");
    let a = DualCache::connect(config(&url, &prefix)).await.unwrap();
    let b = DualCache::connect(config(&url, &prefix)).await.unwrap();
    let ttl = Duration::from_secs(30);
    let first = a.leases().take("{d1}:parallel", 4, ttl).await.unwrap();
    let second = b.leases().take("{d1}:parallel", 4, ttl).await.unwrap();
    let probe = b.leases().take("{d2}:probe", 1, ttl).await.unwrap();
    let keys = ["{d1}:parallel", "{d2}:probe", "{d3}:parallel"];
    assert_eq!(a.leases().held(&keys).await.unwrap(), [2, 1, 0]);
    first.unwrap().release().await;
    drop(probe);
    b.sync_now().await.unwrap();
    assert_eq!(b.leases().held(&keys).await.unwrap(), [1, 0, 0]);
    // Many keys at once (one script on one server): each counted, in order.
    let many: Vec<String> = (0..300).map(|i| format!("{{m{i}}}:parallel")).collect();
    let mut taken = Vec::new();
    for key in many.iter().step_by(7) {
        taken.push(a.leases().take(key, 4, ttl).await.unwrap().unwrap());
    }
    let names: Vec<&str> = many.iter().map(String::as_str).collect();
    let counts = b.leases().held(&names).await.unwrap();
    let expected: Vec<u64> = (0..300).map(|i| u64::from(i % 7 == 0)).collect();
    assert_eq!(counts, expected);
    drop(taken);
    drop(second);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn without_redis_the_slots_held_are_this_process_ones() {
    let cache = DualCache::connect(CacheConfig::default()).await.unwrap();
    let lease = cache
        .leases()
        .take("{d1}:parallel", 2, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        cache
            .leases()
            .held(&["{d1}:parallel", "{d2}:parallel"])
            .await
            .unwrap(),
        [1, 0]
    );
    drop(lease);
    assert_eq!(cache.leases().held(&["{d1}:parallel"]).await.unwrap(), [0]);
    cache.shutdown().await.unwrap();
}
