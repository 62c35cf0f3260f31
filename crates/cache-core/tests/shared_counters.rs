//! Counters shared through Redis: convergence, exactly-once flushes, expiry, typed errors.
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
use ferrolite_cache::{CacheConfig, CacheError, CounterOptions, DualCache};
use fred::prelude::{KeysInterface, LuaInterface};

const MINUTE: CounterOptions = CounterOptions {
    ttl: Duration::from_secs(60),
    expiry: ferrolite_cache::ExpiryMode::FromLastWrite,
};

/// Two caches on one Redis with a long sync interval, so that only `sync_now` syncs.
async fn pair(url: &str, prefix: &str) -> (DualCache, DualCache) {
    let cfg = CacheConfig {
        sync_interval: Duration::from_secs(3600),
        // Long enough that a scheduling stall cannot expire a back-filled value mid-test.
        remote_read_ttl: Duration::from_secs(30),
        ..config(url, prefix)
    };
    (
        DualCache::connect(cfg.clone()).await.unwrap(),
        DualCache::connect(cfg).await.unwrap(),
    )
}

#[tokio::test]
async fn two_instances_converge_on_the_global_counter_after_one_sync_each() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("converge");
    let (a, b) = pair(&url, &prefix).await;
    for _ in 0..7 {
        a.counters().increment("d1:rpm", 1, MINUTE).unwrap();
    }
    b.counters().increment("d1:rpm", 5, MINUTE).unwrap();
    assert_eq!(
        a.counters().value("d1:rpm"),
        Some(7.0),
        "local view before any sync"
    );

    a.sync_now().await.unwrap();
    b.sync_now().await.unwrap();
    a.sync_now().await.unwrap(); // a reads back b's push

    assert_eq!(a.counters().value("d1:rpm"), Some(12.0));
    assert_eq!(b.counters().value("d1:rpm"), Some(12.0));
    let raw = raw_client(&url).await;
    let global: i64 = raw.get(format!("{prefix}d1:rpm")).await.unwrap();
    assert_eq!(global, 12);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_sync_task_pushes_without_being_asked() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("background");
    let a = DualCache::connect(config(&url, &prefix)).await.unwrap();
    let b = DualCache::connect(config(&url, &prefix)).await.unwrap();
    let counter = a.counters().counter("spend", MINUTE).unwrap();
    counter.increment(3).unwrap();
    b.counters().increment("spend", 4, MINUTE).unwrap();
    // sync_interval is 20 ms in tests: a few intervals later both see 7.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while counter.value() != 7 || b.counters().value("spend") != Some(7.0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no convergence: {} / {:?}",
            counter.value(),
            b.counters().value("spend")
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_flush_script_applies_a_resent_sequence_only_once() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("exactly-once");
    let (a, _) = pair(&url, &prefix).await;
    let raw = raw_client(&url).await;
    a.counters().increment("k", 10, MINUTE).unwrap();
    a.sync_now().await.unwrap();
    // A flush whose reply was lost is resent with the same (instance, sequence): the script
    // must apply it once however often it arrives.
    let key = format!("{prefix}k");
    let seq_key = format!("{{{key}}}:seq");
    let body = include_str!("../src/lua/incr_v2.lua");
    let args = vec![
        "inst".to_string(),
        "5".into(),
        "3".into(),
        "60000".into(),
        "always".into(),
        "int".into(),
        "600000".into(),
    ];
    for _ in 0..3 {
        let _: fred::types::Value = raw
            .eval(body, vec![key.clone(), seq_key.clone()], args.clone())
            .await
            .unwrap();
    }
    let global: i64 = raw.get(&key).await.unwrap();
    assert_eq!(global, 13, "10 from the cache + 3 applied once");
    a.sync_now().await.unwrap();
    assert_eq!(a.counters().value("k"), Some(13.0));
    a.shutdown().await.unwrap();
}

/// Regression (review of 79b0912): the `:seq` hash shared the counter's TTL (a resend after the
/// counter expired was applied again to a fresh key) and, on a key written for ever, gained a
/// field per instance id for ever.
#[tokio::test]
async fn the_sequence_hash_outlives_the_counter_and_stays_bounded() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("seq-bound");
    let raw = raw_client(&url).await;
    let key = format!("{prefix}k");
    let seq_key = format!("{{{key}}}:seq");
    let body = include_str!("../src/lua/incr_v2.lua");
    // Sends one push of +1 as the pipeline would: (instance, sequence 1, grace in ms).
    let push = |instance: String, grace: &'static str| {
        let (raw, keys) = (raw.clone(), vec![key.clone(), seq_key.clone()]);
        async move {
            let args = vec![
                instance,
                "1".to_string(),
                "1".into(),
                "60000".into(),
                "always".into(),
                "int".into(),
                grace.to_string(),
            ];
            let _: fred::types::Value = raw.eval(body, keys, args).await.unwrap();
        }
    };
    push("a".into(), "600000").await;
    let counter_ttl: i64 = raw.pttl(&key).await.unwrap();
    let seq_ttl: i64 = raw.pttl(&seq_key).await.unwrap();
    assert!(
        seq_ttl > counter_ttl + 500_000,
        "seq {seq_ttl} ms, counter {counter_ttl} ms"
    );
    // The counter expires; the resend of the same push arrives afterwards: not applied.
    let _: () = raw.del(&key).await.unwrap();
    push("a".into(), "600000").await;
    let after: Option<i64> = raw.get(&key).await.unwrap();
    assert_eq!(after, None, "a resent push was applied to a fresh key");

    // 100 short-lived instances (grace 1 ms): the hash keeps at most a few dozen fields.
    for i in 0..100 {
        push(format!("i{i}"), "1").await;
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let fields: i64 = raw
        .eval(
            "return redis.call('HLEN', KEYS[1])",
            vec![seq_key.clone()],
            Vec::<String>::new(),
        )
        .await
        .unwrap();
    assert!(fields <= 34, "{fields} fields");
}

#[tokio::test]
async fn float_counters_sum_across_instances() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("float");
    let (a, b) = pair(&url, &prefix).await;
    a.counters()
        .increment_float("spend:openai", 0.25, MINUTE)
        .unwrap();
    b.counters()
        .increment_float("spend:openai", 0.5, MINUTE)
        .unwrap();
    a.sync_now().await.unwrap();
    b.sync_now().await.unwrap();
    a.sync_now().await.unwrap();
    assert_eq!(a.counters().value("spend:openai"), Some(0.75));
    assert_eq!(b.counters().value("spend:openai"), Some(0.75));
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn counters_expire_in_redis_with_their_ttl() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("ttl");
    let (a, _) = pair(&url, &prefix).await;
    let raw = raw_client(&url).await;
    let first_write = CounterOptions::fixed_ttl(Duration::from_secs(30));
    a.counters().increment("fails", 1, first_write).unwrap();
    a.sync_now().await.unwrap();
    let ttl: i64 = raw.pttl(format!("{prefix}fails")).await.unwrap();
    assert!((29_000..=30_000).contains(&ttl), "ttl {ttl}");
    // A later write with a first-write TTL does not extend it (PEXPIRE NX).
    raw.pexpire::<(), _>(format!("{prefix}fails"), 10_000, None)
        .await
        .unwrap();
    a.counters().increment("fails", 1, first_write).unwrap();
    a.sync_now().await.unwrap();
    let ttl: i64 = raw.pttl(format!("{prefix}fails")).await.unwrap();
    assert!(ttl <= 10_000, "ttl extended to {ttl}");
    a.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_key_holding_text_gives_a_typed_error_naming_it() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("bad-value");
    let (a, _) = pair(&url, &prefix).await;
    let raw = raw_client(&url).await;
    raw.set::<(), _, _>(format!("{prefix}rpm"), "abc", None, None, false)
        .await
        .unwrap();
    let _: i64 = raw
        .eval(
            "return redis.call('RPUSH', KEYS[1], 'x')",
            vec![format!("{prefix}list")],
            Vec::<String>::new(),
        )
        .await
        .unwrap();

    // Read back only: the GET returns "abc" where a counter is expected.
    a.counters().increment("rpm", 0, MINUTE).unwrap();
    let report = a.sync_now().await.unwrap();
    assert!(
        report.errors.contains(&CacheError::UnexpectedReply {
            key: "rpm".into(),
            expected: "an integer",
            got: "\"abc\"".into()
        }),
        "{report:?}"
    );

    // A delta on a key of the wrong type: Redis rejects the script; the error names the key and
    // the delta stays queued (nothing lost).
    a.counters().increment("list", 2, MINUTE).unwrap();
    let report = a.sync_now().await.unwrap();
    assert!(
        report.errors.iter().any(|e| matches!(e, CacheError::Redis { key, reason, .. } if key == "list" && reason.contains("WRONGTYPE"))),
        "{report:?}"
    );
    assert_eq!(report.unsettled, 1);
    assert_eq!(a.counters().value("list"), Some(2.0));
    // Stopping cannot flush it either, and says so with an error naming a failing key (the
    // first of its last sync: the rejected delta's or the unreadable counter's).
    let stop = a.shutdown().await.unwrap_err();
    assert!(
        matches!(&stop, CacheError::Redis { key, .. } if key == "list")
            || matches!(&stop, CacheError::UnexpectedReply { key, .. } if key == "rpm"),
        "{stop:?}"
    );
}

#[tokio::test]
async fn a_key_used_as_two_kinds_is_a_typed_error() {
    let cache = DualCache::connect(CacheConfig::default()).await.unwrap();
    cache.counters().increment("k", 1, MINUTE).unwrap();
    assert_eq!(
        cache.counters().increment_float("k", 1.0, MINUTE),
        Err(CacheError::KindMismatch {
            key: "k".into(),
            existing: "integer",
            requested: "float"
        })
    );
    assert!(matches!(
        cache.counters().increment_float("f", f64::NAN, MINUTE),
        Err(CacheError::InvalidArgument { field: "delta", .. })
    ));
    assert!(matches!(
        cache
            .counters()
            .increment("z", 1, CounterOptions::ttl(Duration::ZERO)),
        Err(CacheError::InvalidArgument { field: "ttl", .. })
    ));
    cache.shutdown().await.unwrap();
}

#[tokio::test]
async fn values_are_shared_through_redis_and_read_locally_first() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("values");
    let (a, b) = pair(&url, &prefix).await;
    a.kv()
        .set(
            "deployment:d1:cooldown",
            "{\"status\":429}",
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(b.kv().get_local("deployment:d1:cooldown").await, None);
    assert_eq!(
        b.kv()
            .get("deployment:d1:cooldown")
            .await
            .unwrap()
            .as_deref(),
        Some("{\"status\":429}")
    );
    assert!(
        b.kv().get_local("deployment:d1:cooldown").await.is_some(),
        "back-filled locally"
    );

    a.kv().set("x", "1", Duration::from_secs(5)).await.unwrap();
    let got = b
        .kv()
        .batch_get(&["x", "missing", "deployment:d1:cooldown"])
        .await
        .unwrap();
    let got: Vec<Option<&str>> = got.iter().map(|v| v.as_deref()).collect();
    assert_eq!(got, vec![Some("1"), None, Some("{\"status\":429}")]);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn local_values_expire_on_the_cache_clock() {
    let clock = Arc::new(ferrolite_cache::TokioClock::new());
    let cache = DualCache::connect_with_clock(CacheConfig::default(), clock)
        .await
        .unwrap();
    cache
        .kv()
        .set("cooldown", "1", Duration::from_secs(5))
        .await
        .unwrap();
    tokio::time::advance(Duration::from_millis(4_999)).await;
    assert!(cache.kv().get("cooldown").await.unwrap().is_some());
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(cache.kv().get("cooldown").await.unwrap().is_none());
    cache.shutdown().await.unwrap();
}

#[tokio::test]
async fn malformed_redis_urls_are_typed_errors_without_the_password() {
    for url in [
        "not a url",
        "http://127.0.0.1:6379",
        "redis://:s3cret@127.0.0.1:notaport",
        "redis://:s3cret@127.0.0.1:6379/notadb",
        // Regression (issue 16): without `:` after the scheme the whole URL was the "scheme"
        // and the error showed it, password included.
        "redis//:s3cret@127.0.0.1:6379",
        "",
    ] {
        let err = DualCache::connect(CacheConfig::with_redis(url))
            .await
            .unwrap_err();
        match &err {
            CacheError::InvalidRedisUrl { url: shown, reason } => {
                assert!(!shown.contains("s3cret"), "{shown}");
                assert!(!reason.contains("s3cret"), "{reason}");
            }
            other => panic!("{url}: expected InvalidRedisUrl, got {other:?}"),
        }
        assert!(!err.to_string().contains("s3cret"));
    }
}

#[tokio::test]
async fn invalid_settings_name_the_field() {
    let bad_prefix = CacheConfig {
        redis: Some(ferrolite_cache::RedisConfig::new("redis://127.0.0.1:6379").with_prefix("{x}")),
        ..CacheConfig::default()
    };
    assert!(matches!(
        DualCache::connect(bad_prefix).await,
        Err(CacheError::InvalidConfig {
            field: "redis.key_prefix",
            ..
        })
    ));
    let zero = CacheConfig {
        sync_interval: Duration::ZERO,
        ..CacheConfig::default()
    };
    assert!(matches!(
        DualCache::connect(zero).await,
        Err(CacheError::InvalidConfig {
            field: "sync_interval",
            ..
        })
    ));
}

#[tokio::test]
async fn the_tracked_key_set_is_bounded_and_pruned() {
    let clock = ferrolite_cache::ManualClock::new(1_000_000);
    let cfg = CacheConfig {
        max_tracked_keys: 3,
        ..CacheConfig::default()
    };
    let cache = DualCache::connect_with_clock(cfg, Arc::new(clock.clone()))
        .await
        .unwrap();
    let short = CounterOptions::ttl(Duration::from_secs(1));
    for key in ["a", "b", "c"] {
        cache.counters().increment(key, 1, short).unwrap();
    }
    assert_eq!(
        cache.counters().increment("d", 1, short),
        Err(CacheError::TrackedKeysFull {
            key: "d".into(),
            limit: 3
        })
    );
    assert_eq!(cache.stats().tracked_key_overflows, 1);
    clock.advance_ms(1_000);
    // The expired keys make room.
    cache.counters().increment("d", 1, short).unwrap();
    let report = cache.sync_now().await.unwrap();
    assert_eq!(report.pruned, 0, "a, b, c were pruned when d needed room");
    assert_eq!(cache.stats().tracked_keys, 1);
    cache.shutdown().await.unwrap();
}

#[tokio::test]
async fn dropping_the_cache_stops_the_sync_task() {
    let Some(url) = redis_url() else { return };
    let cache = DualCache::connect(config(&url, &unique_prefix("drop")))
        .await
        .unwrap();
    cache.counters().increment("k", 1, MINUTE).unwrap();
    let weak = cache.downgrade();
    drop(cache);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while weak.upgrade().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cache state outlived its last handle"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn shutdown_flushes_what_is_queued() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("shutdown");
    let cfg = CacheConfig {
        sync_interval: Duration::from_secs(3600),
        ..config(&url, &prefix)
    };
    let cache = DualCache::connect(cfg).await.unwrap();
    cache.counters().increment("k", 42, MINUTE).unwrap();
    cache.shutdown().await.unwrap();
    let raw = raw_client(&url).await;
    let global: i64 = raw.get(format!("{prefix}k")).await.unwrap();
    assert_eq!(global, 42);
}

#[tokio::test]
async fn dropping_a_cache_without_shutdown_still_flushes_what_it_owes() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("drop-flush");
    let cfg = CacheConfig {
        sync_interval: Duration::from_secs(3600),
        ..config(&url, &prefix)
    };
    let cache = DualCache::connect(cfg).await.unwrap();
    cache.counters().increment("k", 17, MINUTE).unwrap();
    drop(cache);
    let raw = raw_client(&url).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let global: Option<i64> = raw.get(format!("{prefix}k")).await.unwrap();
        if global == Some(17) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dropped cache's delta never arrived: {global:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_syncs_neither_double_acknowledge_nor_go_back_in_time() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("concurrent-syncs");
    let (a, _) = pair(&url, &prefix).await;
    for round in 1..=20 {
        a.counters().increment("k", 1, MINUTE).unwrap();
        let syncs: Vec<_> = (0..8)
            .map(|_| {
                let a = a.clone();
                tokio::spawn(async move { a.sync_now().await.unwrap() })
            })
            .collect();
        for sync in syncs {
            sync.await.unwrap();
        }
        assert_eq!(
            a.counters().value("k"),
            Some(f64::from(round)),
            "round {round}"
        );
    }
    let raw = raw_client(&url).await;
    assert_eq!(raw.get::<i64, _>(format!("{prefix}k")).await.unwrap(), 20);
    a.shutdown().await.unwrap();
}

#[tokio::test]
async fn shared_values_live_in_redis_only_expire_with_their_ttl_and_need_one() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("shared-values");
    let (a, b) = pair(&url, &prefix).await;
    assert!(
        a.shared()
            .set("v", "kept", Duration::from_millis(300))
            .await
            .unwrap()
    );
    assert_eq!(b.shared().get("v").await.unwrap().as_deref(), Some("kept"));
    // Redis's TTL ends it for every reader.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(b.shared().get("v").await.unwrap(), None);
    let error = a.shared().set("v", "x", Duration::ZERO).await.unwrap_err();
    assert!(
        matches!(error, CacheError::InvalidArgument { field: "ttl", .. }),
        "{error:?}"
    );
    // Without Redis nothing is stored and nothing found, without an error.
    let local = DualCache::connect(CacheConfig::default()).await.unwrap();
    assert!(
        !local
            .shared()
            .set("v", "x", Duration::from_secs(1))
            .await
            .unwrap()
    );
    assert_eq!(local.shared().get("v").await.unwrap(), None);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// `increment_now` reaches Redis at once, without waiting for a sync (here an hour away), and
/// exactly once: the sync after it sends nothing again.
#[tokio::test]
async fn increment_now_reaches_redis_without_a_sync_and_only_once() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("increment-now");
    let (a, b) = pair(&url, &prefix).await;
    let spend = a.counters().float_counter("spend", MINUTE).unwrap();
    spend.increment(0.25).unwrap(); // batched: goes with the next push
    spend.increment_now(0.5).unwrap();
    let raw = raw_client(&url).await;
    let key = format!("{prefix}spend");
    let started = std::time::Instant::now();
    loop {
        let global: Option<f64> = raw.get(&key).await.unwrap();
        if global == Some(0.75) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "Redis holds {global:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.sync_now().await.unwrap();
    b.counters().increment_float("spend", 0.0, MINUTE).unwrap();
    b.sync_now().await.unwrap();
    let global: f64 = raw.get(&key).await.unwrap();
    assert_eq!(global, 0.75, "nothing sent twice");
    assert_eq!(b.counters().value("spend"), Some(0.75));
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
