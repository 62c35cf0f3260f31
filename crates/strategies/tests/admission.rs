//! usage-based-routing-v2 admission: exact limits in one process and, in strict mode, across
//! instances sharing Redis. Plus the usage keys in Redis (scenarios S90, S96, S97).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use ferrolite_cache::testing::{config, redis_url, unique_prefix};
use ferrolite_cache::{DualCache, Window};
use ferrolite_strategies::{
    AdmissionMode, StrategyError, StrategyName, Target, Targets, UsageStore,
};
use ferrolite_types::Deployment;
use fred::prelude::{Builder, ClientLike, Config, KeysInterface};

/// Runs `attempts` concurrent admissions on the only target of each store, round robin over
/// the stores; returns how many were admitted.
async fn storm(stores: Vec<(Arc<UsageStore>, Target)>, attempts: usize) -> usize {
    let mut handles = Vec::with_capacity(attempts);
    for i in 0..attempts {
        let (usage, target) = stores[i % stores.len()].clone();
        handles.push(tokio::spawn(async move {
            match usage.admit(&target, 0).await {
                Ok(_permit) => true,
                Err(StrategyError::RateLimited { .. }) => false,
                Err(other) => panic!("{other:?}"),
            }
        }));
    }
    let mut admitted = 0;
    for handle in handles {
        admitted += usize::from(handle.await.unwrap());
    }
    admitted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_concurrent_v2_admissions_in_one_process_admit_exactly_the_rpm() {
    let s = setup(
        vec![Deployment {
            rpm: Some(100),
            ..deployment("d1")
        }],
        StrategyName::UsageBasedV2,
    )
    .await;
    let admitted = storm(vec![(Arc::clone(&s.usage), s.targets[0].clone())], 10_000).await;
    assert_eq!(admitted, 100);
    assert_eq!(s.usage.view().rpm(s.targets[0].ix), 100.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s97_rpm_one_and_five_concurrent_requests_admit_one_and_name_the_limit() {
    let s = setup(
        vec![Deployment {
            rpm: Some(1),
            ..deployment("d1")
        }],
        StrategyName::UsageBasedV2,
    )
    .await;
    let mut results = Vec::new();
    for _ in 0..5 {
        let (usage, target) = (Arc::clone(&s.usage), s.targets[0].clone());
        results.push(tokio::spawn(async move {
            usage.admit(&target, 0).await.map(drop)
        }));
    }
    let mut errors = Vec::new();
    for r in results {
        if let Err(e) = r.await.unwrap() {
            errors.push(e);
        }
    }
    assert_eq!(errors.len(), 4);
    assert!(
        errors[0].to_string().contains("over defined rpm limit=1"),
        "{}",
        errors[0]
    );
}

async fn redis_setup(
    url: &str,
    prefix: &str,
    limits: Deployment,
    window: Window,
) -> (Arc<UsageStore>, Target) {
    redis_store(url, prefix, limits, window, AdmissionMode::Strict).await
}

async fn redis_store(
    url: &str,
    prefix: &str,
    limits: Deployment,
    window: Window,
    mode: AdmissionMode,
) -> (Arc<UsageStore>, Target) {
    // These tests check that instances admit exactly the limit while Redis answers. 2,000
    // concurrent admissions queue on each instance's connection; on a loaded machine a reply
    // can take longer than the default 250 ms command timeout, and a fail-open cache then
    // (rightly) decides locally, which is not what is measured here: what a late reply does is
    // cache-core's fault tests' subject. So the replies get all the time they need.
    let mut config = config(url, prefix);
    if let Some(redis) = config.redis.as_mut() {
        redis.command_timeout = Duration::from_secs(60);
    }
    let cache = DualCache::connect(config).await.unwrap();
    let targets = Targets::new(&[limits]).unwrap();
    let usage = Arc::new(UsageStore::new(cache, &targets, window, mode).unwrap());
    let target = targets.iter().next().unwrap().clone();
    (usage, target)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn strict_mode_two_instances_sharing_rpm_50_admit_exactly_50_together() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("strict-v2");
    // An hour-long sliding window: a run near a boundary still counts the previous bucket
    // almost fully, so the result cannot depend on when the test runs.
    let window = Window::sliding(Duration::from_secs(3600)).unwrap();
    let limits = Deployment {
        rpm: Some(50),
        ..deployment("shared")
    };
    let a = redis_setup(&url, &prefix, limits.clone(), window).await;
    let b = redis_setup(&url, &prefix, limits, window).await;
    let usage_b = Arc::clone(&b.0);
    let admitted = storm(vec![a, b.clone()], 400).await;
    assert_eq!(
        admitted, 50,
        "LiteLLM: two processes admitted 198 against 100"
    );
    // Strict admission writes the counters selection reads: one key family, so the shared view
    // holds each admission once (regression: every strict request was counted twice, in two
    // families).
    drop(usage_b.view()); // hold this window's counters (b may have won no admission)
    usage_b.cache().sync_now().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    usage_b.cache().sync_now().await.unwrap();
    assert_eq!(usage_b.view().rpm(b.1.ix), 50.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn strict_mode_holds_rpm_and_tpm_in_one_call_across_instances() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("strict-tpm");
    let window = Window::sliding(Duration::from_secs(3600)).unwrap();
    let limits = Deployment {
        rpm: Some(1_000),
        tpm: Some(10_000),
        ..deployment("tokens")
    };
    let (a, target) = redis_setup(&url, &prefix, limits.clone(), window).await;
    let (b, target_b) = redis_setup(&url, &prefix, limits, window).await;
    let mut handles = Vec::new();
    for i in 0..100 {
        let (usage, target) = if i % 2 == 0 {
            (Arc::clone(&a), target.clone())
        } else {
            (Arc::clone(&b), target_b.clone())
        };
        handles.push(tokio::spawn(async move {
            usage.admit(&target, 300).await.map(|p| p.tokens())
        }));
    }
    let mut tokens = 0;
    for handle in handles {
        if let Ok(t) = handle.await.unwrap() {
            tokens += t;
        }
    }
    assert_eq!(tokens, 9_900, "33 calls of 300 tokens fit in 10,000");
    // Settling the actual count gives the difference back to every instance.
    let mut permit = a.admit(&target, 0).await.unwrap();
    permit.settle_tokens(100).unwrap();
    // b may have lost every admission of the storm, and so never have held this window's
    // counters: hold them before the sync reads them back (a new counter reads 0 until then).
    drop(b.view());
    a.cache().sync_now().await.unwrap();
    b.cache().sync_now().await.unwrap();
    assert_eq!(b.view().tpm(target_b.ix), 10_000.0);
    // Each store knows only its own snapshot's indices.
    assert_eq!(b.view().tpm(target.ix), 0.0);
    assert!(matches!(
        b.admit(&target, 1).await,
        Err(StrategyError::UnknownDeployment { .. })
    ));
    assert!(matches!(
        b.admit(&target_b, 1).await,
        Err(StrategyError::RateLimited { metric: "tpm", .. })
    ));
    drop(permit);
}

#[tokio::test]
async fn s90_s96_usage_lands_under_litellm_v2_keys_with_a_60_second_ttl() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("v2-keys");
    let cache = DualCache::connect(config(&url, &prefix)).await.unwrap();
    let targets = Targets::new(&[Deployment {
        tpm: Some(1_000),
        ..deployment("1234")
    }])
    .unwrap();
    let usage = UsageStore::new(
        cache.clone(),
        &targets,
        Window::MINUTE_FIXED,
        AdmissionMode::Batched,
    )
    .unwrap();
    let target = targets.iter().next().unwrap();
    let now = cache.clock().now_ms();
    let mut permit = usage.admit(target, 0).await.unwrap();
    permit.settle_tokens(50).unwrap();
    drop(permit);
    cache.sync_now().await.unwrap();

    // LiteLLM's keys, with the deployment id as the Redis Cluster hash tag.
    let minute = Window::MINUTE_FIXED;
    let tpm_key = format!(
        "{prefix}{}",
        minute.bucket_key("{1234}:openai/1234:tpm", now)
    );
    let rpm_key = format!(
        "{prefix}{}",
        minute.bucket_key("{1234}:openai/1234:rpm", now)
    );
    let raw = Builder::from_config(Config::from_url(&url).unwrap())
        .build()
        .unwrap();
    raw.init().await.unwrap();
    if minute.bucket(cache.clock().now_ms()) != minute.bucket(now) {
        eprintln!("crossed a minute boundary; the keys moved on, nothing to check");
        return;
    }
    assert_eq!(
        raw.get::<Option<i64>, _>(&tpm_key).await.unwrap(),
        Some(50),
        "{tpm_key}"
    );
    assert_eq!(
        raw.get::<Option<i64>, _>(&rpm_key).await.unwrap(),
        Some(1),
        "{rpm_key}"
    );
    let ttl: i64 = raw.pttl(&tpm_key).await.unwrap();
    assert!((1..=60_000).contains(&ttl), "ttl {ttl} ms");
    cache.shutdown().await.unwrap();
}

/// `n` instances' stores for one deployment with `limits`, sharing Redis under `prefix`.
async fn redis_stores(
    n: usize,
    url: &str,
    prefix: &str,
    limits: &Deployment,
    window: Window,
    mode: AdmissionMode,
) -> Vec<(Arc<UsageStore>, Target)> {
    let mut stores = Vec::with_capacity(n);
    for _ in 0..n {
        stores.push(redis_store(url, prefix, limits.clone(), window, mode).await);
    }
    stores
}

/// Runs the same overload (4 instances on one Redis, 2,000 concurrent calls against rpm 200)
/// in `mode`; returns the calls admitted and the admission round trips of all instances.
async fn overload(url: &str, mode: AdmissionMode) -> (usize, u64) {
    let prefix = unique_prefix("auto-v2");
    let window = Window::sliding(Duration::from_secs(3600)).unwrap();
    let limits = Deployment {
        rpm: Some(200),
        ..deployment("shared")
    };
    let stores = redis_stores(4, url, &prefix, &limits, window, mode).await;
    let usages: Vec<Arc<UsageStore>> = stores.iter().map(|(u, _)| Arc::clone(u)).collect();
    let admitted = storm(stores, 2_000).await;
    let round_trips = usages.iter().map(|u| u.round_trips()).sum();
    for usage in usages {
        usage.cache().shutdown().await.unwrap();
    }
    (admitted, round_trips)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auto_mode_admits_what_strict_admits_under_a_four_instance_overload_with_far_fewer_round_trips()
 {
    let Some(url) = redis_url() else { return };
    let (strict_admitted, strict_trips) = overload(&url, AdmissionMode::Strict).await;
    let (auto_admitted, auto_trips) = overload(&url, AdmissionMode::Auto).await;
    eprintln!(
        "strict: {strict_admitted} admitted, {strict_trips} round trips; auto: {auto_admitted} admitted, {auto_trips} round trips"
    );
    assert_eq!(strict_admitted, 200);
    assert_eq!(auto_admitted, 200, "auto is exact too");
    assert_eq!(strict_trips, 2_000, "strict: one round trip per call");
    assert!(
        auto_trips * 20 <= strict_trips,
        "auto made {auto_trips} round trips, strict {strict_trips}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auto_mode_holds_tpm_exactly_across_instances() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("auto-tpm");
    let window = Window::sliding(Duration::from_secs(3600)).unwrap();
    let limits = Deployment {
        tpm: Some(10_000),
        ..deployment("shared")
    };
    let stores = redis_stores(3, &url, &prefix, &limits, window, AdmissionMode::Auto).await;
    let mut handles = Vec::new();
    for i in 0..600 {
        let (usage, target) = stores[i % 3].clone();
        handles.push(tokio::spawn(async move {
            match usage.admit(&target, 100).await {
                Ok(permit) => {
                    std::mem::forget(permit); // the call holds its tokens
                    true
                }
                Err(StrategyError::RateLimited { .. }) => false,
                Err(other) => panic!("{other:?}"),
            }
        }));
    }
    let mut admitted = 0;
    for handle in handles {
        admitted += usize::from(handle.await.unwrap());
    }
    assert_eq!(admitted, 100, "10,000 tokens of 100 each");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_mode_on_a_lone_instance_without_redis_is_exact() {
    let s = setup(
        vec![Deployment {
            rpm: Some(100),
            ..deployment("d1")
        }],
        StrategyName::UsageBasedV2,
    )
    .await;
    let targets = Targets::new(&[Deployment {
        rpm: Some(100),
        ..deployment("d1")
    }])
    .unwrap();
    let usage = Arc::new(
        UsageStore::new(
            s.usage.cache().clone(),
            &targets,
            Window::MINUTE_SLIDING,
            AdmissionMode::Auto,
        )
        .unwrap(),
    );
    let target = targets.iter().next().unwrap().clone();
    let admitted = storm(vec![(usage.clone(), target)], 1_000).await;
    assert_eq!(admitted, 100);
    assert_eq!(usage.round_trips(), 0, "no Redis, no round trip");
}
