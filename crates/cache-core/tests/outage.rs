//! Redis outages: nothing lost, nothing doubled, nobody hangs; fail-open and fail-closed.
//!
//! Each test runs its own `redis-server` (durable: `appendfsync always`, so a `kill -9` loses
//! nothing Redis acknowledged) and kills and restarts it on the same port.
// Tests may unwrap and panic: a failure is the test failing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferrolite_cache::testing::{RedisProcess, unique_prefix};
use ferrolite_cache::{
    AdmissionSource, CacheConfig, CacheError, CounterOptions, DualCache, FailureMode, LimitCheck,
    RedisConfig, Window,
};
use fred::prelude::{Builder, ClientLike, Config, KeysInterface};

const OPTIONS: CounterOptions = CounterOptions {
    ttl: Duration::from_secs(600),
    expiry: ferrolite_cache::ExpiryMode::FromLastWrite,
};
const COMMAND_TIMEOUT: Duration = Duration::from_millis(200);

fn redis_server_installed() -> bool {
    ferrolite_cache::testing::redis_binaries_installed(&["redis-server"])
}

fn cache_config(url: &str, prefix: &str, failure_mode: FailureMode) -> CacheConfig {
    CacheConfig {
        redis: Some(RedisConfig {
            command_timeout: COMMAND_TIMEOUT,
            connect_timeout: Duration::from_millis(200),
            ..RedisConfig::new(url).with_prefix(prefix)
        }),
        sync_interval: Duration::from_millis(20),
        failure_mode,
        ..CacheConfig::default()
    }
}

/// Records the longest time any call took.
#[derive(Default)]
struct MaxWait(AtomicU64);

impl MaxWait {
    async fn time<T>(&self, call: impl std::future::Future<Output = T>) -> T {
        let start = Instant::now();
        let out = call.await;
        self.0
            .fetch_max(start.elapsed().as_micros() as u64, Ordering::Relaxed);
        out
    }

    fn get(&self) -> Duration {
        Duration::from_micros(self.0.load(Ordering::Relaxed))
    }
}

async fn global(url: &str, key: &str) -> i64 {
    let client = Builder::from_config(Config::from_url(url).unwrap())
        .build()
        .unwrap();
    client.init().await.unwrap();
    let value: Option<i64> = client.get(key).await.unwrap();
    let _ = client.quit().await;
    value.unwrap_or(0)
}

async fn wait_settled(cache: &DualCache) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let report = cache.sync_now().await.unwrap();
        if report.unsettled == 0 && report.errors.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still unsettled after recovery: {report:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_redis_mid_run_loses_nothing_doubles_nothing_and_blocks_no_caller() {
    if !redis_server_installed() {
        return;
    }
    let mut server = RedisProcess::start(true);
    let url = server.url();
    let prefix = unique_prefix("outage");
    let a = DualCache::connect(cache_config(&url, &prefix, FailureMode::FailOpen))
        .await
        .unwrap();
    let b = DualCache::connect(cache_config(&url, &prefix, FailureMode::FailOpen))
        .await
        .unwrap();
    let waits = Arc::new(MaxWait::default());
    let total = Arc::new(AtomicU64::new(0));

    // Four writers (two per instance) add 1..=3 every millisecond or so for about 2 s, and also
    // read a value and run a strict admission, timing every call.
    let mut writers = Vec::new();
    for (i, cache) in [a.clone(), a.clone(), b.clone(), b.clone()]
        .into_iter()
        .enumerate()
    {
        let (waits, total) = (Arc::clone(&waits), Arc::clone(&total));
        writers.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_millis(2_000);
            let mut n = 0u64;
            while Instant::now() < deadline {
                let delta = (n % 3 + 1) as i64;
                waits
                    .time(async {
                        cache
                            .counters()
                            .increment("requests", delta, OPTIONS)
                            .unwrap()
                    })
                    .await;
                total.fetch_add(delta as u64, Ordering::Relaxed);
                if n % 20 == 0 {
                    let _ = waits.time(cache.kv().get("some-cooldown")).await.unwrap();
                    let check = LimitCheck {
                        key: format!("w{i}"),
                        delta: 1,
                        limit: 1_000_000_000,
                        window: Window::MINUTE_SLIDING,
                    };
                    let _ = waits.time(cache.admission().admit(&[check])).await.unwrap();
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }));
    }

    tokio::time::sleep(Duration::from_millis(500)).await;
    server.kill();
    tokio::time::sleep(Duration::from_millis(700)).await;
    server.restart();
    for writer in writers {
        writer.await.unwrap();
    }

    wait_settled(&a).await;
    wait_settled(&b).await;
    a.sync_now().await.unwrap(); // read back b's last push
    let expected = total.load(Ordering::Relaxed) as i64;
    assert!(expected > 1_000, "the writers ran: {expected}");
    assert_eq!(global(&url, &format!("{prefix}requests")).await, expected);
    assert_eq!(a.counters().value("requests"), Some(expected as f64));

    assert!(
        a.stats().redis_outages >= 1 && b.stats().redis_outages >= 1,
        "{:?}",
        a.stats()
    );
    assert!(!a.stats().redis_down);
    // Fail-fast commands fail in microseconds; allow scheduling noise on a loaded 2-core box,
    // but nothing near a hang.
    assert!(
        waits.get() <= COMMAND_TIMEOUT * 2,
        "a caller waited {:?}",
        waits.get()
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_refuses_while_redis_is_down_and_recovers() {
    if !redis_server_installed() {
        return;
    }
    let mut server = RedisProcess::start(true);
    let url = server.url();
    let prefix = unique_prefix("fail-closed");
    let cache = DualCache::connect(cache_config(&url, &prefix, FailureMode::FailClosed))
        .await
        .unwrap();
    cache.counters().increment("k", 1, OPTIONS).unwrap();
    wait_settled(&cache).await;

    server.kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cache.stats().redis_down {
        assert!(Instant::now() < deadline, "the outage was never noticed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(matches!(
        cache.counters().increment("k", 1, OPTIONS),
        Err(CacheError::Unavailable { .. })
    ));
    let check = LimitCheck {
        key: "x".into(),
        delta: 1,
        limit: 5,
        window: Window::MINUTE_SLIDING,
    };
    // Redis is known to be down: refused at once, not after a command timeout (regression:
    // every fail-closed admission used to wait the full command timeout).
    let started = Instant::now();
    for _ in 0..20 {
        assert!(matches!(
            cache.admission().admit(std::slice::from_ref(&check)).await,
            Err(CacheError::Unavailable { .. })
        ));
    }
    assert!(
        started.elapsed() < COMMAND_TIMEOUT,
        "20 refusals took {:?}",
        started.elapsed()
    );

    server.restart();
    wait_settled(&cache).await;
    assert_eq!(cache.counters().increment("k", 1, OPTIONS), Ok(2));
    let admission = cache.admission().admit(&[check]).await.unwrap();
    assert_eq!(admission.source, AdmissionSource::Redis);
    cache.shutdown().await.unwrap();
}

#[tokio::test]
async fn fail_open_starts_without_redis_and_fail_closed_does_not() {
    if !redis_server_installed() {
        return;
    }
    // A port nothing listens on.
    let url = format!(
        "redis://127.0.0.1:{}",
        ferrolite_cache::testing::free_port()
    );
    let mut open = cache_config(&url, "p:", FailureMode::FailOpen);
    if let Some(redis) = open.redis.as_mut() {
        redis.initial_connect_wait = Duration::from_secs(2);
    }
    // Regression: a refused connection (nothing listening) waited the whole initial wait.
    let started = Instant::now();
    let cache = DualCache::connect(open.clone()).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "connect took {:?}",
        started.elapsed()
    );
    assert!(cache.stats().redis_down);
    assert_eq!(cache.counters().increment("k", 2, OPTIONS), Ok(2));
    assert_eq!(cache.kv().get("k2").await, Ok(None));
    let closed = CacheConfig {
        failure_mode: FailureMode::FailClosed,
        ..open
    };
    assert!(matches!(
        DualCache::connect(closed).await,
        Err(CacheError::Unavailable {
            operation: "connect",
            ..
        })
    ));
}

/// A private server, a cache on it in `mode`, and an hour-long limit of 10 for the freeze tests.
async fn frozen_setup(
    mode: FailureMode,
) -> Option<(RedisProcess, String, String, DualCache, LimitCheck)> {
    if !redis_server_installed() {
        return None;
    }
    let server = RedisProcess::start(false);
    let url = server.url();
    let prefix = unique_prefix("frozen");
    let cache = DualCache::connect(cache_config(&url, &prefix, mode))
        .await
        .unwrap();
    let check = LimitCheck {
        key: "{d1}:rpm".into(),
        delta: 1,
        limit: 10,
        window: Window::fixed(Duration::from_secs(3600)).unwrap(),
    };
    Some((server, url, prefix, cache, check))
}

/// Regression (external check of 79b0912): with Redis frozen (SIGSTOP) during a burst, every
/// fail-closed caller got `Unavailable`, yet Redis applied the timed-out scripts when it resumed
/// and the window held the full limit. Refused calls must change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admissions_refused_while_redis_was_frozen_consume_nothing() {
    let Some((server, url, prefix, cache, check)) = frozen_setup(FailureMode::FailClosed).await
    else {
        return;
    };
    server.pause();
    let mut calls = Vec::new();
    for _ in 0..30 {
        let (cache, check) = (cache.clone(), check.clone());
        calls.push(tokio::spawn(async move {
            cache.admission().admit(&[check]).await
        }));
    }
    for call in calls {
        assert!(matches!(
            call.await.unwrap(),
            Err(CacheError::Unavailable { .. })
        ));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.resume();
    wait_settled(&cache).await;
    // The withdrawals went out with the syncs after the recovery.
    for _ in 0..5 {
        cache.sync_now().await.unwrap();
    }
    let fresh = DualCache::connect(cache_config(&url, &prefix, FailureMode::FailClosed))
        .await
        .unwrap();
    let mut admitted = 0;
    for _ in 0..15 {
        admitted += usize::from(
            fresh
                .admission()
                .admit(std::slice::from_ref(&check))
                .await
                .unwrap()
                .admitted,
        );
    }
    assert_eq!(
        admitted, 10,
        "the refused callers used up part of the window"
    );
    fresh.shutdown().await.unwrap();
    cache.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_deadline_set_during_an_outage_reaches_redis_when_it_is_back() {
    if !redis_server_installed() {
        return;
    }
    let mut server = RedisProcess::start(false);
    let url = server.url();
    let cache = DualCache::connect(cache_config(&url, "p:", FailureMode::FailOpen))
        .await
        .unwrap();
    let cooldown = cache.deadlines().deadline("{d1}:cooldown").unwrap();
    server.kill();
    let until = cache.clock().now_ms() + 60_000;
    let started = Instant::now();
    assert_eq!(cooldown.extend_to(until).await.unwrap(), until);
    assert!(started.elapsed() <= COMMAND_TIMEOUT * 2);
    assert!(
        cooldown.is_active(until - 1),
        "held locally during the outage"
    );
    // A short one that passes before Redis is back: nothing to send, and forgotten.
    let brief = cache.deadlines().deadline("{d2}:cooldown").unwrap();
    brief.extend_to(cache.clock().now_ms() + 50).await.unwrap();
    drop(brief);
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.restart();
    wait_settled(&cache).await;
    cache.sync_now().await.unwrap();
    assert_eq!(global(&url, "p:{d1}:cooldown").await as u64, until);
    cache.sync_now().await.unwrap();
    assert_eq!(
        cache.stats().watched_keys,
        1,
        "the passed deadline was not forgotten"
    );
    cache.shutdown().await.unwrap();
}

/// The fail-open side of a lost reply: an admission whose script may have run in a frozen
/// Redis is decided locally instead, and the script's effect is withdrawn, so each admission
/// counts once — and the local decisions reach Redis when it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fail_open_admissions_during_a_freeze_are_counted_once() {
    let Some((server, url, prefix, cache, check)) = frozen_setup(FailureMode::FailOpen).await
    else {
        return;
    };
    server.pause();
    let mut admitted = 0;
    for _ in 0..15 {
        let admission = cache
            .admission()
            .admit(std::slice::from_ref(&check))
            .await
            .unwrap();
        assert_eq!(admission.source, AdmissionSource::Local);
        admitted += usize::from(admission.admitted);
    }
    assert_eq!(admitted, 10, "the instance's own view holds the limit");
    server.resume();
    wait_settled(&cache).await;
    for _ in 0..5 {
        cache.sync_now().await.unwrap();
    }
    // Redis holds exactly the 10 local admissions: the timed-out script's was withdrawn.
    let fresh = DualCache::connect(cache_config(&url, &prefix, FailureMode::FailOpen))
        .await
        .unwrap();
    let after = fresh
        .admission()
        .admit(std::slice::from_ref(&check))
        .await
        .unwrap();
    assert_eq!(after.source, AdmissionSource::Redis);
    assert!(!after.admitted, "{after:?}");
    assert!((after.counts[0] - 10.0).abs() < 1e-9, "{after:?}");
    fresh.shutdown().await.unwrap();
    cache.shutdown().await.unwrap();
}
