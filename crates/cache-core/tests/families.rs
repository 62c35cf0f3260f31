//! Counter families (one slab of cells per family, keys built when synced): the semantics of
//! keyed counters through real Redis — exact sums across instances, the same keys as keyed
//! counters, TTLs, read-back, outages, the tracked-key bound — and one cell per key.
// Tests may unwrap and panic: a failure is the test failing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use ferrolite_cache::testing::{
    RedisProcess, config, raw_client, redis_binaries_installed, redis_url, unique_prefix,
};
use ferrolite_cache::{
    CacheConfig, CacheError, CounterOptions, DualCache, FailureMode, FamilyKeys, LimitCheck,
    ManualClock, RedisConfig, Window, hash_tagged,
};
use fred::prelude::KeysInterface;

const MINUTE: CounterOptions = CounterOptions {
    ttl: Duration::from_secs(60),
    expiry: ferrolite_cache::ExpiryMode::FromLastWrite,
};

/// `{d<i>}:<suffix>`, as the usage store's keys are hash-tagged per deployment.
struct Tagged {
    suffix: &'static str,
    class: &'static str,
}

impl FamilyKeys for Tagged {
    fn write_key(&self, index: usize, out: &mut String) {
        out.push_str(&hash_tagged(&format!("d{index}"), self.suffix));
    }

    fn class(&self) -> &str {
        self.class
    }
}

fn keys(suffix: &'static str) -> Arc<dyn FamilyKeys> {
    Arc::new(Tagged { suffix, class: "" })
}

fn key(index: usize, suffix: &str) -> String {
    hash_tagged(&format!("d{index}"), suffix)
}

/// Two caches on one Redis that sync only when told to.
async fn pair(url: &str, prefix: &str) -> (DualCache, DualCache) {
    let cfg = CacheConfig {
        sync_interval: Duration::from_secs(3600),
        remote_read_ttl: Duration::from_secs(30),
        ..config(url, prefix)
    };
    (
        DualCache::connect(cfg.clone()).await.unwrap(),
        DualCache::connect(cfg).await.unwrap(),
    )
}

#[tokio::test]
async fn two_instances_sum_exactly_and_agree_with_keyed_counters_on_the_same_keys() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("family-sum");
    let (a, b) = pair(&url, &prefix).await;
    // An instance of an older build: keyed counters on the same keys.
    let old = DualCache::connect(CacheConfig {
        sync_interval: Duration::from_secs(3600),
        ..config(&url, &prefix)
    })
    .await
    .unwrap();
    let fa = a.counters().family(100, keys(":m:rpm"), MINUTE).unwrap();
    let fb = b.counters().family(100, keys(":m:rpm"), MINUTE).unwrap();
    for i in 0..100 {
        for _ in 0..(i % 7) {
            fa.increment(i, 1).unwrap();
        }
        fb.increment(i, 10).unwrap();
        old.counters()
            .increment(&key(i, ":m:rpm"), 100, MINUTE)
            .unwrap();
    }
    assert_eq!(fa.value(3), 3, "the local view before any sync");
    for cache in [&a, &b, &old, &a, &b] {
        let report = cache.sync_now().await.unwrap();
        assert!(report.errors.is_empty(), "{report:?}");
    }
    let raw = raw_client(&url).await;
    for i in 0..100 {
        let expected = (i % 7) as i64 + 110;
        let global: i64 = raw
            .get(format!("{prefix}{}", key(i, ":m:rpm")))
            .await
            .unwrap();
        assert_eq!(global, expected, "Redis, key {i}");
        assert_eq!(fa.value(i), expected, "a, key {i}");
        assert_eq!(fb.value(i), expected, "b, key {i}");
    }
    old.sync_now().await.unwrap();
    assert_eq!(old.counters().value(&key(5, ":m:rpm")), Some(115.0));
    // A family's counter is found by its key too (for inspection).
    assert_eq!(a.counters().value(&key(5, ":m:rpm")), Some(115.0));
    assert_eq!(fa.key(5).as_deref(), Some("{d5}:m:rpm"));
    assert_eq!(fa.counter(5).unwrap().key(), "{d5}:m:rpm");
    for cache in [a, b, old] {
        cache.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn an_instance_that_never_wrote_reads_the_counts_back() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("family-read");
    let (a, b) = pair(&url, &prefix).await;
    let fa = a.counters().family(3, keys(":tpm"), MINUTE).unwrap();
    let fb = b.counters().family(3, keys(":tpm"), MINUTE).unwrap();
    fa.increment(2, 40).unwrap();
    a.sync_now().await.unwrap();
    let report = b.sync_now().await.unwrap();
    assert_eq!(report.refreshed, 3, "{report:?}");
    assert_eq!(fb.value(2), 40);
    assert_eq!(fb.value(0), 0);
    // A script's reply told to a family's counter updates the local view at once.
    fb.counter(1).unwrap().observe_global(9);
    assert_eq!(fb.value(1), 9);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_family_s_ttl_is_set_in_redis_and_a_first_write_ttl_is_not_extended() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("family-ttl");
    let (a, _) = pair(&url, &prefix).await;
    let raw = raw_client(&url).await;
    let first_write = CounterOptions::fixed_ttl(Duration::from_secs(30));
    let family = a.counters().family(2, keys(":fails"), first_write).unwrap();
    family.increment(1, 1).unwrap();
    a.sync_now().await.unwrap();
    let redis_key = format!("{prefix}{}", key(1, ":fails"));
    let ttl: i64 = raw.pttl(&redis_key).await.unwrap();
    assert!((29_000..=30_000).contains(&ttl), "ttl {ttl}");
    raw.pexpire::<(), _>(&redis_key, 10_000, None)
        .await
        .unwrap();
    family.increment(1, 1).unwrap();
    a.sync_now().await.unwrap();
    let ttl: i64 = raw.pttl(&redis_key).await.unwrap();
    assert!(ttl <= 10_000, "ttl extended to {ttl}");
    let never: i64 = raw
        .exists(format!("{prefix}{}", key(0, ":fails")))
        .await
        .unwrap();
    assert_eq!(
        never, 0,
        "a counter never written is never written to Redis"
    );
    a.shutdown().await.unwrap();
}

#[tokio::test]
async fn without_redis_a_family_s_counters_expire_on_the_clock() {
    let clock = ManualClock::new(1_000_000);
    let cache = DualCache::connect_with_clock(CacheConfig::default(), Arc::new(clock.clone()))
        .await
        .unwrap();
    let family = cache
        .counters()
        .family(
            2,
            keys(":x"),
            CounterOptions::fixed_ttl(Duration::from_secs(1)),
        )
        .unwrap();
    family.increment(0, 3).unwrap();
    clock.advance_ms(900);
    family.increment(0, 3).unwrap(); // does not extend a first-write TTL
    assert_eq!(family.value(0), 6);
    clock.advance_ms(100);
    assert_eq!(family.value(0), 0);
    assert_eq!(family.increment(0, 1).unwrap(), 1);
    assert!(matches!(
        family.increment(2, 1),
        Err(CacheError::InvalidArgument { field: "index", .. })
    ));
    assert_eq!(family.value(2), 0, "an index out of range reads 0");
    cache.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_family_counts_as_its_cells_against_the_bound_and_is_pruned_when_unused() {
    let clock = ManualClock::new(1_000_000);
    let cfg = CacheConfig {
        max_tracked_keys: 10,
        ..CacheConfig::default()
    };
    let cache = DualCache::connect_with_clock(cfg, Arc::new(clock.clone()))
        .await
        .unwrap();
    let short = CounterOptions::ttl(Duration::from_secs(1));
    let family = cache.counters().family(8, keys(":a"), short).unwrap();
    assert_eq!(cache.stats().tracked_keys, 8);
    cache.counters().increment("k1", 1, short).unwrap();
    cache.counters().increment("k2", 1, short).unwrap();
    assert!(matches!(
        cache.counters().increment("k3", 1, short),
        Err(CacheError::TrackedKeysFull { limit: 10, .. })
    ));
    assert!(matches!(
        cache.counters().family(1, keys(":b"), short),
        Err(CacheError::TrackedKeysFull { limit: 10, .. })
    ));
    family.increment(0, 1).unwrap();
    clock.advance_ms(1_000);
    // Expired, but a handle holds the family: only the keyed counters go.
    let report = cache.sync_now().await.unwrap();
    assert_eq!(report.pruned, 2);
    assert_eq!(cache.stats().tracked_keys, 8);
    let counter = family.counter(3).unwrap();
    drop(family);
    cache.sync_now().await.unwrap();
    assert_eq!(
        cache.stats().tracked_keys,
        8,
        "a counter's handle holds its family"
    );
    drop(counter);
    let report = cache.sync_now().await.unwrap();
    assert_eq!(report.pruned, 8);
    assert_eq!(cache.stats().tracked_keys, 0);
    cache.shutdown().await.unwrap();
}

#[tokio::test]
async fn families_of_one_class_share_the_cell_of_a_key() {
    let cache = DualCache::connect(CacheConfig::default()).await.unwrap();
    let class = |suffix| -> Arc<dyn FamilyKeys> {
        Arc::new(Tagged {
            suffix,
            class: "rpm:1",
        })
    };
    let old = cache.counters().family(3, class(":rpm"), MINUTE).unwrap();
    old.increment(1, 5).unwrap();
    let held = old.counter(2).unwrap();
    // The next snapshot's family: the same keys, at other positions, and a new one.
    struct Shifted;
    impl FamilyKeys for Shifted {
        fn write_key(&self, index: usize, out: &mut String) {
            out.push_str(&hash_tagged(&format!("d{}", index + 1), ":rpm"));
        }
        fn class(&self) -> &str {
            "rpm:1"
        }
    }
    let new = cache
        .counters()
        .family(3, Arc::new(Shifted), MINUTE)
        .unwrap();
    assert_eq!(new.value(0), 5, "d1 carries over");
    held.increment(2).unwrap(); // a permit of the old store settles on d2
    assert_eq!(new.value(1), 2);
    new.increment(1, 1).unwrap();
    assert_eq!(old.value(2), 3, "one cell, seen through both");
    assert_eq!(new.value(2), 0, "d3 is new");
    // Another class shares nothing.
    let other = cache.counters().family(3, keys(":rpm"), MINUTE).unwrap();
    assert_eq!(other.value(1), 0);
    cache.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_admission_counts_in_the_family_s_cells_it_is_given() {
    let clock = ManualClock::new(3_600_000);
    let cache = DualCache::connect_with_clock(CacheConfig::default(), Arc::new(clock.clone()))
        .await
        .unwrap();
    let window = Window::MINUTE_FIXED;
    struct Bucket(String);
    impl FamilyKeys for Bucket {
        fn write_key(&self, index: usize, out: &mut String) {
            out.push_str(&hash_tagged(&format!("d{index}"), ":rpm"));
            out.push_str(&self.0);
        }
    }
    let now = cache.window_now_ms();
    let family = cache
        .counters()
        .family(2, Arc::new(Bucket(window.bucket_key("", now))), MINUTE)
        .unwrap();
    let check = LimitCheck {
        key: hash_tagged("d1", ":rpm"),
        delta: 1,
        limit: 2,
        window,
    };
    let known = [family.counter(1).unwrap()];
    for _ in 0..2 {
        let admission = cache
            .admission()
            .admit_with(std::slice::from_ref(&check), &known)
            .await
            .unwrap();
        assert!(admission.admitted);
        assert!(admission.counters().next().unwrap().same_cell(&known[0]));
    }
    assert_eq!(family.value(1), 2, "counted in the family");
    let third = cache
        .admission()
        .admit_with(&[check], &known)
        .await
        .unwrap();
    assert!(!third.admitted);
    assert_eq!(cache.stats().tracked_keys, 2, "no keyed counter was made");
    cache.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_redis_mid_run_loses_nothing_in_a_family_and_fail_closed_refuses() {
    if !redis_binaries_installed(&["redis-server"]) {
        return;
    }
    let mut server = RedisProcess::start(true);
    let url = server.url();
    let prefix = unique_prefix("family-outage");
    let cfg = |mode| CacheConfig {
        redis: Some(RedisConfig {
            command_timeout: Duration::from_millis(200),
            connect_timeout: Duration::from_millis(200),
            ..RedisConfig::new(&url).with_prefix(&prefix)
        }),
        sync_interval: Duration::from_millis(20),
        failure_mode: mode,
        ..CacheConfig::default()
    };
    let a = DualCache::connect(cfg(FailureMode::FailOpen))
        .await
        .unwrap();
    let b = DualCache::connect(cfg(FailureMode::FailOpen))
        .await
        .unwrap();
    let closed = DualCache::connect(cfg(FailureMode::FailClosed))
        .await
        .unwrap();
    let closed_family = closed.counters().family(4, keys(":c"), MINUTE).unwrap();
    let total = Arc::new(AtomicI64::new(0));
    let mut writers = Vec::new();
    for cache in [a.clone(), b.clone()] {
        let family = cache.counters().family(4, keys(":n"), MINUTE).unwrap();
        let total = Arc::clone(&total);
        writers.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_millis(1_500);
            let mut n = 0usize;
            while Instant::now() < deadline {
                let delta = (n % 3 + 1) as i64;
                family.increment(n % 4, delta).unwrap();
                total.fetch_add(delta, Ordering::Relaxed);
                n += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            family
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    server.kill();
    // Fail-closed: refused (nothing added) once the outage is seen.
    let seen = Instant::now() + Duration::from_secs(5);
    while !closed.stats().redis_down {
        assert!(Instant::now() < seen, "the outage was not seen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(matches!(
        closed_family.increment(0, 1),
        Err(CacheError::Unavailable { .. })
    ));
    assert_eq!(closed_family.value(0), 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.restart();
    let mut families = Vec::new();
    for writer in writers {
        families.push(writer.await.unwrap());
    }
    for cache in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let report = cache.sync_now().await.unwrap();
            if report.unsettled == 0 && report.errors.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "unsettled: {report:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    a.sync_now().await.unwrap();
    let raw = raw_client(&url).await;
    let mut in_redis = 0;
    let mut seen_by_a = 0;
    for i in 0..4 {
        let global: Option<i64> = raw.get(format!("{prefix}{}", key(i, ":n"))).await.unwrap();
        in_redis += global.unwrap_or(0);
        seen_by_a += families[0].value(i);
    }
    let expected = total.load(Ordering::Relaxed);
    assert!(expected > 500, "the writers ran: {expected}");
    assert_eq!(in_redis, expected, "nothing lost, nothing doubled");
    assert_eq!(seen_by_a, expected);
    // Fail-closed accepts again once Redis is back.
    let back = Instant::now() + Duration::from_secs(10);
    while closed.stats().redis_down {
        assert!(Instant::now() < back, "the recovery was not seen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    closed_family.increment(0, 1).unwrap();
    for cache in [a, b, closed] {
        cache.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn a_family_counts_only_the_cells_it_owns_against_the_bound() {
    // A reload makes the next snapshot's family while the old one lives: the keys they share
    // are one cell each, counted once, so the reload fits where a second full copy would not.
    struct Shifted(usize);
    impl FamilyKeys for Shifted {
        fn write_key(&self, index: usize, out: &mut String) {
            out.push_str(&hash_tagged(&format!("d{}", index + self.0), ":rpm"));
        }
        fn class(&self) -> &str {
            "rpm:reload"
        }
    }
    let cfg = CacheConfig {
        max_tracked_keys: 12,
        ..CacheConfig::default()
    };
    let cache = DualCache::connect(cfg).await.unwrap();
    let first = cache
        .counters()
        .family(10, Arc::new(Shifted(0)), MINUTE)
        .unwrap();
    assert_eq!(cache.stats().tracked_keys, 10);
    // d1..d10: nine keys of the first family, one new.
    let second = cache
        .counters()
        .family(10, Arc::new(Shifted(1)), MINUTE)
        .unwrap();
    assert_eq!(cache.stats().tracked_keys, 11);
    let third = cache
        .counters()
        .family(10, Arc::new(Shifted(2)), MINUTE)
        .unwrap();
    assert_eq!(cache.stats().tracked_keys, 12);
    // Two new keys do not fit.
    assert!(matches!(
        cache.counters().family(10, Arc::new(Shifted(4)), MINUTE),
        Err(CacheError::TrackedKeysFull { limit: 12, .. })
    ));
    // The shared cells are one: what one family counts, the others see.
    third.increment(0, 4).unwrap(); // d2
    assert_eq!(first.value(2), 4);
    assert_eq!(second.value(1), 4);
    cache.shutdown().await.unwrap();
}
