//! usage-based-routing-v2 admission: exact limits in one process and, in strict mode, across
//! instances sharing Redis. Plus the usage keys in Redis (scenarios S90, S96, S97).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use ferrolite_cache::testing::{config, redis_url, unique_prefix};
use ferrolite_cache::{DualCache, Window};
use ferrolite_strategies::{
    AdmissionMode, CallOutcome, RouteContext, Strategy, StrategyConfig, StrategyError,
    StrategyName, Target, UsageStore, build,
};
use ferrolite_types::{Deployment, Usage};
use fred::prelude::{Builder, ClientLike, Config, KeysInterface};

/// Runs `attempts` concurrent admissions on the only target of each strategy, round robin over
/// the strategies; returns how many were admitted.
async fn storm(strategies: Vec<Arc<dyn Strategy>>, target: Target, attempts: usize) -> usize {
    let target = Arc::new(target);
    let mut handles = Vec::with_capacity(attempts);
    for i in 0..attempts {
        let strategy = Arc::clone(&strategies[i % strategies.len()]);
        let target = Arc::clone(&target);
        handles.push(tokio::spawn(async move {
            let ctx = RouteContext::new(GROUP);
            match strategy.admit(&target, &ctx).await {
                Ok(()) => true,
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
    let admitted = storm(vec![Arc::clone(&s.strategy)], s.targets[0].clone(), 10_000).await;
    assert_eq!(admitted, 100);
    assert_eq!(s.usage.view().unwrap().rpm(0), 100.0);
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
        let (strategy, target) = (Arc::clone(&s.strategy), s.targets[0].clone());
        results.push(tokio::spawn(async move {
            strategy.admit(&target, &RouteContext::new(GROUP)).await
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
    rpm: u64,
    window: Window,
) -> (Arc<dyn Strategy>, Target, Arc<UsageStore>) {
    let cache = DualCache::connect(config(url, prefix)).await.unwrap();
    let targets = Target::for_group(&[Deployment {
        rpm: Some(rpm),
        ..deployment("shared")
    }]);
    let usage = Arc::new(UsageStore::new(cache, GROUP, &targets, window).unwrap());
    let strategy = build(
        StrategyName::UsageBasedV2,
        &StrategyConfig {
            admission: AdmissionMode::Strict,
            ..Default::default()
        },
        Arc::clone(&usage),
    )
    .unwrap();
    (strategy, targets[0].clone(), usage)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn strict_mode_two_instances_sharing_rpm_50_admit_exactly_50_together() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("strict-v2");
    // An hour-long sliding window: a run near a boundary still counts the previous bucket
    // almost fully, so the result cannot depend on when the test runs.
    let window = Window::sliding(Duration::from_secs(3600)).unwrap();
    let (a, target, _) = redis_setup(&url, &prefix, 50, window).await;
    let (b, _, usage_b) = redis_setup(&url, &prefix, 50, window).await;
    let admitted = storm(vec![a, b], target, 400).await;
    assert_eq!(
        admitted, 50,
        "LiteLLM: two processes admitted 198 against 100"
    );
    // The shared view the selection reads converges on the same count.
    usage_b.cache().sync_now().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    usage_b.cache().sync_now().await.unwrap();
    assert_eq!(usage_b.view().unwrap().rpm(0), 50.0);
}

#[tokio::test]
async fn s90_s96_usage_lands_under_litellm_v2_keys_with_a_60_second_ttl() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("v2-keys");
    let cache = DualCache::connect(config(&url, &prefix)).await.unwrap();
    let targets = Target::for_group(&[Deployment {
        tpm: Some(1_000),
        ..deployment("1234")
    }]);
    let usage =
        Arc::new(UsageStore::new(cache.clone(), GROUP, &targets, Window::MINUTE_FIXED).unwrap());
    let strategy = build(
        StrategyName::UsageBasedV2,
        &StrategyConfig::default(),
        Arc::clone(&usage),
    )
    .unwrap();
    let ctx = RouteContext::new(GROUP);
    let now = cache.clock().now_ms();
    strategy.admit(&targets[0], &ctx).await.unwrap();
    strategy.on_start(&targets[0], &ctx);
    strategy.on_success(
        &targets[0],
        &ctx,
        &CallOutcome {
            usage: Some(Usage::new(30, 20)),
            ..Default::default()
        },
    );
    cache.sync_now().await.unwrap();

    let minute = Window::MINUTE_FIXED;
    let tpm_key = format!("{prefix}{}", minute.bucket_key("1234:openai/1234:tpm", now));
    let rpm_key = format!("{prefix}{}", minute.bucket_key("1234:openai/1234:rpm", now));
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
}
