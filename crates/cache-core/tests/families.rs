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

/// `{d<i>}:<suffix>` for `i < len`, in the class `class`: one configuration's deployments.
struct Fleet {
    len: usize,
    suffix: &'static str,
    class: &'static str,
}

impl FamilyKeys for Fleet {
    fn write_key(&self, index: usize, out: &mut String) {
        if index < self.len {
            out.push_str(&hash_tagged(&format!("d{index}"), self.suffix));
        }
    }

    fn class(&self) -> &str {
        self.class
    }
}

fn fleet(len: usize, suffix: &'static str, class: &'static str) -> Arc<dyn FamilyKeys> {
    Arc::new(Fleet { len, suffix, class })
}

/// Regression: a new family aliased the cells old families of its class held, so every old
/// family stayed alive while a newer one used any of its cells — 50 reloads that each add a
/// deployment kept 51 full slabs alive for good. Now the new family adopts them: the old one
/// goes with the last thing using it, and every count stays exact through the moves.
#[tokio::test]
async fn fifty_reloads_adding_a_deployment_each_keep_the_families_bounded_and_the_counts_exact() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("family-reloads");
    let (a, b) = pair(&url, &prefix).await;
    let (counts, in_flight) = ("rpm:reloads", "in_flight:reloads");
    let mut len = 10;
    let mut current = a
        .counters()
        .family(len, fleet(len, ":rpm", counts), MINUTE)
        .unwrap();
    let mut calls = a
        .counters()
        .family(len, fleet(len, ":calls", in_flight), MINUTE)
        .unwrap();
    let mut expected = vec![0i64; 60];
    for reload in 0..50 {
        // A call in flight on the old configuration, and a handle of its store's.
        let call = reload % len;
        let permit = calls.counter(call).unwrap();
        permit.increment(1).unwrap();
        let stale = current.counter(reload % 3).unwrap();
        current.increment(call, 2).unwrap();
        expected[call] += 2;
        if reload % 5 == 0 {
            a.sync_now().await.unwrap(); // some moves carry an acknowledged count, some not
        }
        // The reload: the next configuration adds a deployment.
        len += 1;
        let next = a
            .counters()
            .family(len, fleet(len, ":rpm", counts), MINUTE)
            .unwrap();
        let next_calls = a
            .counters()
            .family(len, fleet(len, ":calls", in_flight), MINUTE)
            .unwrap();
        assert_eq!(
            next_calls.value(call),
            1,
            "the call in flight, reload {reload}"
        );
        assert_eq!(
            next.value(call),
            expected[call],
            "carried over, reload {reload}"
        );
        // Both configurations count while both live: one cell per key.
        current.increment(call, 1).unwrap();
        stale.increment(3).unwrap();
        next.increment(len - 1, 4).unwrap();
        next.increment(call, 5).unwrap();
        expected[call] += 6;
        expected[reload % 3] += 3;
        expected[len - 1] += 4;
        assert_eq!(
            current.value(call),
            expected[call],
            "old view, reload {reload}"
        );
        assert_eq!(
            next.value(call),
            expected[call],
            "new view, reload {reload}"
        );
        // The call ends on the old configuration's handle; the old store goes.
        permit.increment(-1).unwrap();
        assert_eq!(
            next_calls.value(call),
            0,
            "in flight ends at 0, reload {reload}"
        );
        drop((permit, stale));
        current = next;
        calls = next_calls;
        a.sync_now().await.unwrap();
        for class in [counts, in_flight] {
            let stats = a.counters().family_stats(class);
            assert_eq!(stats.families, 1, "reload {reload}, {class}: {stats:?}");
            assert_eq!(stats.slots, len, "reload {reload}, {class}: {stats:?}");
            assert_eq!(stats.owned, len, "reload {reload}, {class}: {stats:?}");
        }
    }
    assert_eq!(a.stats().tracked_keys, 2 * len, "each key counted once");
    // Another instance counted on the same keys meanwhile.
    let other = b
        .counters()
        .family(len, fleet(len, ":rpm", counts), MINUTE)
        .unwrap();
    other.increment(0, 100).unwrap();
    expected[0] += 100;
    b.sync_now().await.unwrap();
    a.sync_now().await.unwrap();
    let raw = raw_client(&url).await;
    for (i, expected) in expected.iter().enumerate().take(len) {
        let global: Option<i64> = raw
            .get(format!("{prefix}{}", key(i, ":rpm")))
            .await
            .unwrap();
        assert_eq!(global.unwrap_or(0), *expected, "Redis, d{i}");
        assert_eq!(current.value(i), *expected, "local view, d{i}");
        let calls_global: Option<i64> = raw
            .get(format!("{prefix}{}", key(i, ":calls")))
            .await
            .unwrap();
        assert_eq!(calls_global.unwrap_or(0), 0, "in flight in Redis, d{i}");
        assert_eq!(calls.value(i), 0, "in flight here, d{i}");
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// While an old configuration lives (a call in flight on it), the families of its class are
/// the old one and the live one: reloads in between do not pile up slabs either.
#[tokio::test]
async fn a_long_lived_old_family_keeps_only_itself_and_the_newest_family_alive() {
    let cache = DualCache::connect(CacheConfig::default()).await.unwrap();
    let class = "in_flight:long";
    let first = cache
        .counters()
        .family(10, fleet(10, ":c", class), MINUTE)
        .unwrap();
    let permit = first.counter(4).unwrap();
    permit.increment(1).unwrap();
    let mut current = None;
    for len in 11..61 {
        current = Some(
            cache
                .counters()
                .family(len, fleet(len, ":c", class), MINUTE)
                .unwrap(),
        );
        cache.sync_now().await.unwrap();
        let stats = cache.counters().family_stats(class);
        assert!(stats.families <= 2, "{len}: {stats:?}");
        assert_eq!(stats.owned, len, "{len}: {stats:?}");
    }
    let current = current.unwrap();
    assert_eq!(current.value(4), 1);
    permit.increment(-1).unwrap();
    assert_eq!(current.value(4), 0);
    drop((first, permit));
    cache.sync_now().await.unwrap();
    assert_eq!(cache.counters().family_stats(class).families, 1);
    cache.shutdown().await.unwrap();
}

/// A removed deployment's cell stays with the old family that owns it, read back at every sync
/// while that family lives, and not once it is gone (its last handle dropped and its cells
/// expired and settled).
#[tokio::test]
async fn a_removed_deployment_s_cell_is_no_longer_read_back_once_its_last_family_is_gone() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("family-removed");
    let clock = ManualClock::new(1_000_000);
    let cfg = CacheConfig {
        sync_interval: Duration::from_secs(3600),
        ..config(&url, &prefix)
    };
    let cache = DualCache::connect_with_clock(cfg, Arc::new(clock.clone()))
        .await
        .unwrap();
    let class = "rpm:removed";
    let old = cache
        .counters()
        .family(3, fleet(3, ":rpm", class), MINUTE)
        .unwrap();
    old.increment(0, 1).unwrap();
    old.increment(2, 7).unwrap(); // d2, about to be removed
    // The next configuration drops d2.
    let new = cache
        .counters()
        .family(2, fleet(2, ":rpm", class), MINUTE)
        .unwrap();
    assert_eq!(new.value(0), 1);
    let synced = |report: &ferrolite_cache::SyncReport| report.pushed + report.refreshed;
    let report = cache.sync_now().await.unwrap();
    assert_eq!(synced(&report), 3, "d0, d1 and the old d2: {report:?}");
    drop(old);
    // Gone from use, but its own cell was written within its TTL: kept (as a keyed counter,
    // without the old slab), and read.
    let report = cache.sync_now().await.unwrap();
    assert_eq!(synced(&report), 3, "{report:?}");
    assert_eq!(cache.counters().family_stats(class).families, 1);
    assert_eq!(cache.stats().tracked_keys, 3);
    clock.advance_ms(60_000);
    let report = cache.sync_now().await.unwrap();
    assert_eq!(report.pruned, 1, "the old family's own cell: {report:?}");
    let report = cache.sync_now().await.unwrap();
    assert_eq!(
        synced(&report),
        2,
        "only the live configuration's cells: {report:?}"
    );
    let stats = cache.counters().family_stats(class);
    assert_eq!(
        stats,
        ferrolite_cache::FamilyStats {
            families: 1,
            slots: 2,
            owned: 2
        }
    );
    let raw = raw_client(&url).await;
    let d2: i64 = raw
        .get(format!("{prefix}{}", key(2, ":rpm")))
        .await
        .unwrap();
    assert_eq!(d2, 7, "its count reached Redis once");
    cache.shutdown().await.unwrap();
}

/// Reloads racing increments on other threads and the sync: whatever family an increment went
/// through (one adopted meanwhile, or one that raced the move), it reaches Redis exactly once
/// and the newest family's view sums them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_racing_increments_and_syncs_lose_and_double_nothing() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("family-race");
    let cfg = CacheConfig {
        sync_interval: Duration::from_millis(5),
        ..config(&url, &prefix)
    };
    let cache = DualCache::connect(cfg).await.unwrap();
    let class = "rpm:race";
    let first = cache
        .counters()
        .family(4, fleet(4, ":r", class), MINUTE)
        .unwrap();
    let current = Arc::new(parking_lot::Mutex::new(first));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..2 {
        let (current, stop) = (Arc::clone(&current), Arc::clone(&stop));
        writers.push(std::thread::spawn(move || {
            let mut total = 0i64;
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                // A handle taken before a reload, used after it.
                let family = current.lock().clone();
                let held = family.counter(n % 4).unwrap();
                for _ in 0..50 {
                    family.increment((n + w) % 4, 1).unwrap();
                    held.increment(2).unwrap();
                    total += 3;
                    n += 1;
                }
            }
            total
        }));
    }
    for len in 5..45 {
        let next = cache
            .counters()
            .family(len, fleet(len, ":r", class), MINUTE)
            .unwrap();
        *current.lock() = next;
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let total: i64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
    let family = current.lock().clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let report = cache.sync_now().await.unwrap();
        if report.unsettled == 0 && report.errors.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "unsettled: {report:?}");
    }
    // One more: what the last sync's prune handed on from a raced move is pushed.
    cache.sync_now().await.unwrap();
    let raw = raw_client(&url).await;
    let mut in_redis = 0;
    let mut seen = 0;
    for i in 0..4 {
        let global: Option<i64> = raw.get(format!("{prefix}{}", key(i, ":r"))).await.unwrap();
        in_redis += global.unwrap_or(0);
        seen += family.value(i);
    }
    assert!(total > 1_000, "the writers ran: {total}");
    assert_eq!(in_redis, total, "nothing lost, nothing doubled in Redis");
    assert_eq!(seen, total, "the newest family's view");
    let stats = cache.counters().family_stats(class);
    assert_eq!(stats.families, 1, "{stats:?}");
    cache.shutdown().await.unwrap();
}

/// `{d<n>}:<suffix>` for the names `n` by position, in the class `class`.
struct Named {
    names: Vec<usize>,
    class: &'static str,
}

impl FamilyKeys for Named {
    fn write_key(&self, index: usize, out: &mut String) {
        if let Some(n) = self.names.get(index) {
            out.push_str(&hash_tagged(&format!("d{n}"), ":x"));
        }
    }

    fn class(&self) -> &str {
        self.class
    }
}

/// Regression: a reload that renames a deployment kept the old slab for the renamed one's
/// count. Now the old family goes with its last user; the count of the deployment it alone
/// held stays (a keyed counter, until it expires) and is adopted if the name comes back.
#[tokio::test]
async fn fifty_reloads_renaming_a_deployment_each_keep_one_family_and_the_renamed_counts() {
    let clock = ManualClock::new(1_000_000);
    let cache = DualCache::connect_with_clock(CacheConfig::default(), Arc::new(clock.clone()))
        .await
        .unwrap();
    let class = "x:renames";
    let named = |names: Vec<usize>| -> Arc<dyn FamilyKeys> { Arc::new(Named { names, class }) };
    let mut current = cache
        .counters()
        .family(2, named(vec![0, 1]), MINUTE)
        .unwrap();
    current.increment(0, 1).unwrap();
    for k in 1..=50usize {
        current.increment(1, k as i64).unwrap(); // d<k>
        let next = cache
            .counters()
            .family(2, named(vec![0, k + 1]), MINUTE)
            .unwrap();
        current = next;
        cache.sync_now().await.unwrap();
        let stats = cache.counters().family_stats(class);
        assert_eq!(
            (stats.families, stats.slots, stats.owned),
            (1, 2, 2),
            "reload {k}"
        );
        // d1..d<k> are keyed counters now: 128 bytes each, not a slab each.
        assert_eq!(cache.stats().tracked_keys, 2 + k, "reload {k}");
        assert_eq!(current.value(0), 1, "d0 carried over, reload {k}");
    }
    let d7 = hash_tagged("d7", ":x");
    assert_eq!(cache.counters().value(&d7), Some(7.0));
    // d7 comes back: its count is adopted, not started again.
    let back = cache
        .counters()
        .family(3, named(vec![0, 51, 7]), MINUTE)
        .unwrap();
    assert_eq!(back.value(2), 7);
    assert_eq!(cache.counters().value(&d7), Some(7.0), "one cell");
    drop(current);
    cache.sync_now().await.unwrap();
    assert_eq!(
        cache.stats().tracked_keys,
        3 + 49,
        "d7 counted once, with the family"
    );
    // The renamed ones expire like any counter.
    clock.advance_ms(60_000);
    back.increment(0, 1).unwrap();
    cache.sync_now().await.unwrap();
    assert_eq!(cache.stats().tracked_keys, 3);
    cache.shutdown().await.unwrap();
}
