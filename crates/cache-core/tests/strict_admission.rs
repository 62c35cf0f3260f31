//! Strict admission: exact limits across instances, all-or-nothing over several limits.
// Tests may unwrap and panic: a failure is the test failing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::sync::Arc;
use std::time::Duration;

use ferrolite_cache::testing::{config, redis_url, unique_prefix};
use ferrolite_cache::{
    AdmissionSource, CacheConfig, CacheError, DualCache, LimitCheck, TokioClock, Window,
};

fn rpm(key: &str, limit: u64, window: Window) -> LimitCheck {
    LimitCheck {
        key: key.to_string(),
        delta: 1,
        limit,
        window,
    }
}

/// Runs `attempts` admissions spread over `caches`, all at once; returns (admitted, bucket of
/// each admission's evaluation time).
async fn storm(caches: &[DualCache], check: LimitCheck, attempts: usize) -> (usize, Vec<u64>) {
    let mut handles = Vec::with_capacity(attempts);
    for i in 0..attempts {
        let cache = caches[i % caches.len()].clone();
        let check = check.clone();
        handles.push(tokio::spawn(async move {
            cache.admission().admit(&[check]).await.unwrap()
        }));
    }
    let mut admitted = 0;
    let mut buckets = Vec::new();
    for handle in handles {
        let admission = handle.await.unwrap();
        assert_eq!(admission.source, AdmissionSource::Redis);
        buckets.push(check.window.bucket(admission.now_ms));
        if admission.admitted {
            admitted += 1;
        }
    }
    (admitted, buckets)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_attempts_over_four_instances_admit_exactly_the_limit() {
    let Some(url) = redis_url() else { return };
    let window = Window::fixed(Duration::from_secs(3600)).unwrap();
    // A run that straddles a window boundary proves nothing; try again on a fresh key.
    for attempt in 0..3 {
        let prefix = unique_prefix("strict");
        let mut caches = Vec::new();
        for _ in 0..4 {
            caches.push(DualCache::connect(config(&url, &prefix)).await.unwrap());
        }
        let (admitted, buckets) = storm(&caches, rpm("{d1}:rpm", 100, window), 1_000).await;
        for cache in &caches {
            cache.shutdown().await.unwrap();
        }
        if buckets.iter().any(|b| *b != buckets[0]) {
            eprintln!("attempt {attempt} crossed a window boundary; retrying");
            continue;
        }
        assert_eq!(admitted, 100);
        return;
    }
    panic!("three runs crossed a window boundary");
}

#[tokio::test]
async fn an_admission_over_several_limits_increments_all_or_none() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("all-or-none");
    let cache = DualCache::connect(config(&url, &prefix)).await.unwrap();
    let minute = Window::sliding(Duration::from_secs(60)).unwrap();
    let rpm = LimitCheck {
        key: "{d1}:rpm".into(),
        delta: 1,
        limit: 10,
        window: minute,
    };
    let tpm = |tokens: u64| LimitCheck {
        key: "{d1}:tpm".into(),
        delta: tokens,
        limit: 1_000,
        window: minute,
    };

    let first = cache
        .admission()
        .admit(&[rpm.clone(), tpm(900)])
        .await
        .unwrap();
    assert!(first.admitted);
    assert_eq!(first.counts.len(), 2);
    assert!(
        (first.counts[0] - 1.0).abs() < 1e-6 && (first.counts[1] - 900.0).abs() < 1e-3,
        "{first:?}"
    );

    // The token limit has no room for 200 more: neither counter moves.
    let denied = cache
        .admission()
        .admit(&[rpm.clone(), tpm(200)])
        .await
        .unwrap();
    assert!(!denied.admitted);
    let after = cache
        .admission()
        .admit(&[rpm.clone(), tpm(100)])
        .await
        .unwrap();
    assert!(after.admitted);
    assert!(
        (after.counts[0] - 2.0).abs() < 1e-3,
        "rpm moved on the denied call: {after:?}"
    );
    // The strict counters are the batched ones selection reads: one key family.
    let now = cache.window_now_ms();
    assert_eq!(
        cache.counters().value(&minute.bucket_key("{d1}:rpm", now)),
        Some(2.0)
    );
    // Giving an admission back (the budget refused the call) frees its room, through Redis.
    after.undo().unwrap();
    cache.sync_now().await.unwrap();
    let reader = DualCache::connect(config(&url, &prefix)).await.unwrap();
    let again = reader
        .admission()
        .admit(&[rpm.clone(), tpm(100)])
        .await
        .unwrap();
    assert!(again.admitted);
    assert!((again.counts[0] - 2.0).abs() < 1e-3, "{again:?}");
    reader.shutdown().await.unwrap();
    cache.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_zero_limit_blocks_every_request() {
    let Some(url) = redis_url() else { return };
    let cache = DualCache::connect(config(&url, &unique_prefix("zero")))
        .await
        .unwrap();
    let admission = cache
        .admission()
        .admit(&[rpm("k", 0, Window::MINUTE_SLIDING)])
        .await
        .unwrap();
    assert!(!admission.admitted);
    cache.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_checks_and_wrong_key_types_are_typed_errors() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("strict-bad");
    let cache = DualCache::connect(config(&url, &prefix)).await.unwrap();
    assert!(matches!(
        cache.admission().admit(&[]).await,
        Err(CacheError::InvalidArgument {
            field: "checks",
            ..
        })
    ));
    let huge = LimitCheck {
        delta: u64::MAX,
        ..rpm("k", 1, Window::MINUTE_SLIDING)
    };
    assert!(matches!(
        cache.admission().admit(&[huge]).await,
        Err(CacheError::InvalidArgument { field: "delta", .. })
    ));

    // Text where the script expects a count: an error naming the key, and nothing written.
    let now = cache.window_now_ms();
    let taken = Window::MINUTE_SLIDING.bucket_key("{t}:rpm", now);
    cache
        .kv()
        .set(&taken, "not a number", Duration::from_secs(60))
        .await
        .unwrap();
    let err = cache
        .admission()
        .admit(&[rpm("{t}:rpm", 5, Window::MINUTE_SLIDING)])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CacheError::Redis { reason, .. } if reason.contains("not an integer") && reason.contains("{t}:rpm")),
        "{err:?}"
    );
    cache.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn without_redis_admission_is_exact_in_process_and_windows_follow_the_clock() {
    let clock = Arc::new(TokioClock::starting_at(
        1_700_000_000_000 - 1_700_000_000_000 % 60_000,
    ));
    let cache = DualCache::connect_with_clock(CacheConfig::default(), clock)
        .await
        .unwrap();
    let fixed = rpm("d1:rpm", 50, Window::MINUTE_FIXED);
    let mut handles = Vec::new();
    for _ in 0..500 {
        let cache = cache.clone();
        let fixed = fixed.clone();
        handles.push(tokio::spawn(async move {
            cache.admission().admit(&[fixed]).await.unwrap().admitted
        }));
    }
    let mut admitted = 0;
    for handle in handles {
        admitted += usize::from(handle.await.unwrap());
    }
    assert_eq!(admitted, 50);
    tokio::time::advance(Duration::from_secs(60)).await;
    let next = cache.admission().admit(&[fixed]).await.unwrap();
    assert!(next.admitted, "a fixed window resets at the minute");
    assert_eq!(next.source, AdmissionSource::Local);
    cache.shutdown().await.unwrap();
}
