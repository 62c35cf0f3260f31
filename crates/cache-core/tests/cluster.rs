//! The cache on a real three-master Redis Cluster: the batched pipeline, watched deadlines and
//! strict admission (rpm and tpm in one script) with the same assertions as on one server.
// Tests may unwrap and panic: a failure is the test failing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::time::Duration;

use ferrolite_cache::testing::{RedisCluster, redis_binaries_installed, unique_prefix};
use ferrolite_cache::{CacheConfig, CounterOptions, DualCache, LimitCheck, RedisConfig, Window};

fn config(url: &str, prefix: &str) -> CacheConfig {
    CacheConfig {
        redis: Some(RedisConfig::new(url).with_prefix(prefix)),
        sync_interval: Duration::from_millis(20),
        ..CacheConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cache_runs_on_a_three_master_cluster() {
    if !redis_binaries_installed(&["redis-server", "redis-cli"]) {
        return;
    }
    let cluster = RedisCluster::start();
    let url = cluster.url();
    let prefix = unique_prefix("cluster");
    let a = DualCache::connect(config(&url, &prefix)).await.unwrap();
    let b = DualCache::connect(config(&url, &prefix)).await.unwrap();
    assert!(!a.stats().redis_down && !b.stats().redis_down);

    // Batched pipeline: counters spread over every slot sum exactly across instances.
    let minute = CounterOptions::ttl(Duration::from_secs(60));
    for i in 0..50 {
        let key = format!("{{d{i}}}:rpm");
        a.counters().increment(&key, 2, minute).unwrap();
        b.counters().increment(&key, 3, minute).unwrap();
    }
    a.sync_now().await.unwrap();
    b.sync_now().await.unwrap();
    let report = a.sync_now().await.unwrap();
    assert!(report.errors.is_empty(), "{report:?}");
    for i in 0..50 {
        assert_eq!(a.counters().value(&format!("{{d{i}}}:rpm")), Some(5.0));
    }

    // A counter family on one instance and keyed counters on the other, over the same
    // hash-tagged keys (every slot): one sum.
    struct Tagged;
    impl ferrolite_cache::FamilyKeys for Tagged {
        fn write_key(&self, index: usize, out: &mut String) {
            out.push_str(&ferrolite_cache::hash_tagged(&format!("d{index}"), ":tpm"));
        }
    }
    let family = a
        .counters()
        .family(50, std::sync::Arc::new(Tagged), minute)
        .unwrap();
    for i in 0..50 {
        family.increment(i, 2).unwrap();
        b.counters()
            .increment(&format!("{{d{i}}}:tpm"), 3, minute)
            .unwrap();
    }
    a.sync_now().await.unwrap();
    b.sync_now().await.unwrap();
    let report = a.sync_now().await.unwrap();
    assert!(report.errors.is_empty(), "{report:?}");
    for i in 0..50 {
        assert_eq!(family.value(i), 5);
    }

    // Watched deadlines.
    let seen = b.deadlines().deadline("{d7}:cooldown").unwrap();
    let now = a.clock().now_ms();
    a.deadlines()
        .deadline("{d7}:cooldown")
        .unwrap()
        .extend_to(now + 10_000)
        .await
        .unwrap();
    b.sync_now().await.unwrap();
    assert_eq!(seen.until_ms(), Some(now + 10_000));

    // Strict admission, rpm and tpm in one script, over two instances.
    let window = Window::fixed(Duration::from_secs(3600)).unwrap();
    let checks = |tokens: u64| {
        [
            LimitCheck {
                key: "{shared}:m:rpm".into(),
                delta: 1,
                limit: 100,
                window,
            },
            LimitCheck {
                key: "{shared}:m:tpm".into(),
                delta: tokens,
                limit: 1_000,
                window,
            },
        ]
    };
    let mut admitted_tokens = 0;
    for i in 0..40 {
        let cache = if i % 2 == 0 { &a } else { &b };
        let admission = cache.admission().admit(&checks(100)).await.unwrap();
        if admission.admitted {
            admitted_tokens += 100;
        }
    }
    assert_eq!(admitted_tokens, 1_000, "exactly the token limit");

    // Shared values (the response cache's Redis tier) on every node: one instance writes, the
    // other reads.
    for i in 0..30 {
        let key = format!("response:{i:064x}");
        let stored = a
            .shared()
            .set(&key, &format!("answer {i}"), Duration::from_secs(60))
            .await
            .unwrap();
        assert!(stored);
        assert_eq!(
            b.shared().get(&key).await.unwrap(),
            Some(format!("answer {i}"))
        );
    }
    assert_eq!(b.shared().get("response:none").await.unwrap(), None);

    // One read of many values in as many slots (the cooldown causes `Router::state` reads):
    // each written by one instance, read back in order by the other, a missing one `None`.
    let keys: Vec<String> = (0..40).map(|i| format!("{{d{i}}}:cause")).collect();
    for (i, key) in keys.iter().enumerate().filter(|(i, _)| i % 4 != 3) {
        a.kv()
            .set(key, &format!("cause {i}"), Duration::from_secs(60))
            .await
            .unwrap();
    }
    let names: Vec<&str> = keys.iter().map(String::as_str).collect();
    let values = b.kv().batch_get(&names).await.unwrap();
    let expected: Vec<Option<String>> = (0..40)
        .map(|i| (i % 4 != 3).then(|| format!("cause {i}")))
        .collect();
    let got: Vec<Option<String>> = values
        .into_iter()
        .map(|v| v.map(|v| v.to_string()))
        .collect();
    assert_eq!(got, expected);

    // Leases of many deployments (one slot each) counted in one read, by the other instance.
    let ttl = Duration::from_secs(30);
    let lease_keys: Vec<String> = (0..12).map(|i| format!("{{d{i}}}:parallel")).collect();
    let mut held = Vec::new();
    for (i, key) in lease_keys.iter().enumerate() {
        for _ in 0..i % 3 {
            held.push(a.leases().take(key, 4, ttl).await.unwrap().unwrap());
        }
    }
    let names: Vec<&str> = lease_keys.iter().map(String::as_str).collect();
    let counts = b.leases().held(&names).await.unwrap();
    let expected: Vec<u64> = (0..12).map(|i| (i % 3) as u64).collect();
    assert_eq!(counts, expected);
    drop(held);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
