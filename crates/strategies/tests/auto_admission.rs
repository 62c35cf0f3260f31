//! `auto` admission across instances sharing one Redis: whatever way demand is split across
//! the instances, they admit exactly the limit once demand reaches it, and the shared counter
//! holds what was admitted, not what was claimed: an instance gives back the unused part of
//! its claim when demand moves elsewhere, when it goes idle, when its store is replaced (a
//! reload) and at a clean stop.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::deployment;
use ferrolite_cache::testing::{config, raw_client, redis_url, unique_prefix};
use ferrolite_cache::{Clock, DualCache, ManualClock, SystemClock, Window};
use ferrolite_strategies::{AdmissionMode, StrategyError, Target, Targets, UsageStore};
use ferrolite_types::Deployment;
use fred::prelude::KeysInterface;

/// An hour-long sliding window: a run near a bucket boundary still counts the previous bucket
/// almost fully, so no result depends on when the test runs.
fn window() -> Window {
    Window::sliding(Duration::from_secs(3600)).unwrap()
}

/// One instance: its own cache (its own sync task and claims) on the shared Redis.
struct Instance {
    usage: Arc<UsageStore>,
    target: Target,
}

async fn instances(n: usize, url: &str, prefix: &str, limits: &Deployment) -> Vec<Instance> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let cache = DualCache::connect(config(url, prefix)).await.unwrap();
        let targets = Targets::new(std::slice::from_ref(limits)).unwrap();
        let usage =
            Arc::new(UsageStore::new(cache, &targets, window(), AdmissionMode::Auto).unwrap());
        let target = targets.iter().next().unwrap().clone();
        out.push(Instance { usage, target });
    }
    out
}

/// One call on `instance`: whether it was admitted (its permit ends at once; the request stays
/// counted in the window).
async fn call(instance: &Instance) -> bool {
    match instance.usage.admit(&instance.target, 0).await {
        Ok(_permit) => true,
        Err(StrategyError::RateLimited { .. }) => false,
        Err(other) => panic!("{other:?}"),
    }
}

/// `n` calls on `instance`, one after the other; how many were admitted.
async fn one_at_a_time(instance: &Instance, n: usize) -> usize {
    let mut admitted = 0;
    for _ in 0..n {
        admitted += usize::from(call(instance).await);
    }
    admitted
}

/// `n` concurrent calls on `instance`; how many were admitted.
async fn at_once(instance: &Instance, n: usize) -> usize {
    let mut handles = Vec::with_capacity(n);
    for _ in 0..n {
        let usage = Arc::clone(&instance.usage);
        let target = instance.target.clone();
        handles.push(tokio::spawn(async move {
            call(&Instance { usage, target }).await
        }));
    }
    let mut admitted = 0;
    for handle in handles {
        admitted += usize::from(handle.await.unwrap());
    }
    admitted
}

/// The deployment's request count in Redis (the current and the previous hour bucket, so a run
/// that crosses the hour still sees every request).
async fn redis_requests(url: &str, prefix: &str, id: &str) -> i64 {
    let raw = raw_client(url).await;
    let now = SystemClock.now_ms();
    let base = format!("{{{id}}}:openai/{id}:rpm");
    let mut total = 0;
    for at in [now, now.saturating_sub(3_600_000)] {
        let key = format!("{prefix}{}", window().bucket_key(&base, at));
        total += raw.get::<Option<i64>, _>(&key).await.unwrap().unwrap_or(0);
    }
    total
}

async fn stop(instances: &[Instance]) {
    for instance in instances {
        instance.usage.cache().shutdown().await.unwrap();
    }
}

fn rpm(id: &str, limit: u64) -> Deployment {
    Deployment {
        rpm: Some(limit),
        ..deployment(id)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thirty_calls_on_one_instance_then_twenty_on_another_admit_all_fifty_of_rpm_50() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("auto-30-20");
    let gateways = instances(2, &url, &prefix, &rpm("shared", 50)).await;
    let first = one_at_a_time(&gateways[0], 30).await;
    let second = one_at_a_time(&gateways[1], 20).await;
    assert_eq!(
        (first, second),
        (30, 20),
        "the first instance's unused claim went to the second (regression: 30 + 19, with Redis counting 50)"
    );
    // The limit holds on both.
    assert!(!call(&gateways[0]).await);
    assert!(!call(&gateways[1]).await);
    stop(&gateways).await;
    assert_eq!(redis_requests(&url, &prefix, "shared").await, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_instances_overloaded_in_turn_admit_exactly_the_rpm_and_redis_counts_it() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("auto-moving-overload");
    let gateways = instances(4, &url, &prefix, &rpm("shared", 200)).await;
    // 400 calls against rpm 200, 100 at a time on each instance in turn: demand keeps moving
    // to an instance that holds no claim while the others hold theirs.
    let mut admitted = 0;
    for gateway in &gateways {
        admitted += at_once(gateway, 100).await;
    }
    assert_eq!(admitted, 200);
    stop(&gateways).await;
    assert_eq!(redis_requests(&url, &prefix, "shared").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_clean_stop_leaves_the_shared_counter_at_the_admitted_count() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("auto-clean-stop");
    let gateways = Arc::new(instances(4, &url, &prefix, &rpm("shared", 1_000)).await);
    // 400 calls, round robin over 4 instances, all under the limit.
    let mut handles = Vec::new();
    for i in 0..400 {
        let gateways = Arc::clone(&gateways);
        handles.push(tokio::spawn(async move { call(&gateways[i % 4]).await }));
    }
    let mut admitted = 0;
    for handle in handles {
        admitted += usize::from(handle.await.unwrap());
    }
    assert_eq!(admitted, 400);
    stop(&gateways).await;
    assert_eq!(
        redis_requests(&url, &prefix, "shared").await,
        400,
        "regression: the unused claims stayed counted (405 for 400 calls)"
    );
}

/// One instance on a manual clock (set to now, so Redis' clock agrees): its demand estimate
/// and its idle time move only when the test says, so what it claims is known.
async fn instance_on(
    clock: &ManualClock,
    url: &str,
    prefix: &str,
    limits: &Deployment,
) -> Instance {
    let cache = DualCache::connect_with_clock(config(url, prefix), Arc::new(clock.clone()))
        .await
        .unwrap();
    let targets = Targets::new(std::slice::from_ref(limits)).unwrap();
    let usage = Arc::new(UsageStore::new(cache, &targets, window(), AdmissionMode::Auto).unwrap());
    let target = targets.iter().next().unwrap().clone();
    Instance { usage, target }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_instance_gives_its_unused_claim_back_before_the_window_ends() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("auto-idle");
    let clock = ManualClock::new(SystemClock.now_ms());
    let gateway = instance_on(&clock, &url, &prefix, &rpm("shared", 1_000)).await;
    // 30 calls at one instant: claims of 2, 6, 18 and 54 calls, 50 of them unused.
    assert_eq!(one_at_a_time(&gateway, 30).await, 30);
    gateway.usage.cache().sync_now().await.unwrap();
    assert_eq!(redis_requests(&url, &prefix, "shared").await, 80);
    // Two sync intervals (20 ms here) without a call: the next sync gives the rest back, long
    // before the window ends.
    clock.advance_ms(40);
    gateway.usage.cache().sync_now().await.unwrap();
    assert_eq!(redis_requests(&url, &prefix, "shared").await, 30);
    // Calls drawn on a claim are counted once: the instance goes on from the shared count.
    assert_eq!(one_at_a_time(&gateway, 10).await, 10);
    clock.advance_ms(40);
    gateway.usage.cache().sync_now().await.unwrap();
    assert_eq!(redis_requests(&url, &prefix, "shared").await, 40);
    gateway.usage.cache().shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_replaced_by_a_reload_gives_its_unused_claim_back() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("auto-reload");
    let clock = ManualClock::new(SystemClock.now_ms());
    let gateway = instance_on(&clock, &url, &prefix, &rpm("shared", 1_000)).await;
    let cache = gateway.usage.cache().clone();
    assert_eq!(one_at_a_time(&gateway, 30).await, 30);
    cache.sync_now().await.unwrap();
    assert_eq!(redis_requests(&url, &prefix, "shared").await, 80);
    // A reload builds a new store on the same cache and drops the old one (the clock stands
    // still: nothing is idle).
    drop(gateway);
    cache.sync_now().await.unwrap();
    assert_eq!(redis_requests(&url, &prefix, "shared").await, 30);
    cache.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_split_sixty_then_forty_calls_across_two_instances_fill_the_tpm_exactly() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("auto-tpm-split");
    let limits = Deployment {
        tpm: Some(10_000),
        ..deployment("tokens")
    };
    let gateways = instances(2, &url, &prefix, &limits).await;
    let calls = |instance: &Instance, n: usize| {
        let (usage, target) = (Arc::clone(&instance.usage), instance.target.clone());
        async move {
            let mut admitted = 0;
            for _ in 0..n {
                match usage.admit(&target, 100).await {
                    Ok(_permit) => admitted += 1,
                    Err(StrategyError::RateLimited { .. }) => {}
                    Err(other) => panic!("{other:?}"),
                }
            }
            admitted
        }
    };
    let first = calls(&gateways[0], 60).await;
    let second = calls(&gateways[1], 40).await;
    assert_eq!(
        (first, second),
        (60, 40),
        "100 calls of 100 tokens fill 10,000"
    );
    assert_eq!(calls(&gateways[1], 1).await, 0);
    stop(&gateways).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refusal_at_a_full_limit_waits_for_nothing_when_no_other_instance_holds_a_claim() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("auto-no-wait");
    // Syncs 10 s apart: a refusal that waited for one would take seconds.
    let slow = |url: &str| ferrolite_cache::CacheConfig {
        sync_interval: Duration::from_secs(10),
        ..config(url, &prefix)
    };
    let mut gateways = Vec::new();
    for _ in 0..2 {
        let cache = DualCache::connect(slow(&url)).await.unwrap();
        let targets = Targets::new(&[rpm("full", 50)]).unwrap();
        let usage =
            Arc::new(UsageStore::new(cache, &targets, window(), AdmissionMode::Auto).unwrap());
        let target = targets.iter().next().unwrap().clone();
        gateways.push(Instance { usage, target });
    }
    assert_eq!(one_at_a_time(&gateways[0], 50).await, 50);
    // What the first instance drew on its claims reaches Redis.
    gateways[0].usage.cache().sync_now().await.unwrap();
    let started = std::time::Instant::now();
    assert!(!call(&gateways[1]).await);
    assert!(!call(&gateways[0]).await);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refusals took {:?}",
        started.elapsed()
    );
    stop(&gateways).await;
    assert_eq!(redis_requests(&url, &prefix, "full").await, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn room_held_as_another_instance_s_unused_claim_is_picked_and_admission_gets_it_back() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("auto-pick-reclaim");
    // Both clocks stand still: no claim goes idle, so only a reclaim can move one.
    let clock = ManualClock::new(SystemClock.now_ms());
    let a = instance_on(&clock, &url, &prefix, &rpm("shared", 50)).await;
    let b = instance_on(&clock, &url, &prefix, &rpm("shared", 50)).await;
    let mut through_a = 0;
    for _ in 0..30 {
        through_a += usize::from(routed(&a).await);
    }
    a.usage.cache().sync_now().await.unwrap();
    let claimed = redis_requests(&url, &prefix, "shared").await;
    assert!(
        claimed > 30,
        "the first instance holds an unused claim ({claimed})"
    );
    let mut through_b = 0;
    for _ in 0..20 {
        b.usage.cache().sync_now().await.unwrap();
        through_b += usize::from(routed(&b).await);
    }
    assert_eq!((through_a, through_b), (30, 20));
    assert!(!routed(&a).await && !routed(&b).await);
    a.usage.cache().shutdown().await.unwrap();
    b.usage.cache().shutdown().await.unwrap();
    assert_eq!(redis_requests(&url, &prefix, "shared").await, 50);
}

/// A call as the router makes it: admitted only if selection finds room first.
async fn routed(instance: &Instance) -> bool {
    let fits = instance.usage.view().fits(&instance.target, 0);
    fits && call(instance).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crashed_instance_s_claim_costs_one_wait_per_bucket_not_one_per_refusal() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("auto-crashed");
    let interval = Duration::from_millis(200);
    let cache = DualCache::connect(ferrolite_cache::CacheConfig {
        sync_interval: interval,
        ..config(&url, &prefix)
    })
    .await
    .unwrap();
    let targets = Targets::new(&[rpm("crashed", 10)]).unwrap();
    let usage = Arc::new(UsageStore::new(cache, &targets, window(), AdmissionMode::Auto).unwrap());
    let gateway = Instance {
        usage,
        target: targets.iter().next().unwrap().clone(),
    };
    assert_eq!(one_at_a_time(&gateway, 8).await, 8);
    // An instance that crashed holding a claim of 2: counted, unused, never given back.
    let raw = raw_client(&url).await;
    let now = SystemClock.now_ms();
    let base = "{crashed}:openai/crashed:rpm";
    let key = |base: &str| format!("{prefix}{}", window().bucket_key(base, now));
    let _: i64 = raw.incr_by(key(base), 2).await.unwrap();
    let _: i64 = raw
        .incr_by(key(&format!("{base}:unused")), 2)
        .await
        .unwrap();
    gateway.usage.cache().sync_now().await.unwrap();
    // This instance's own claim goes first.
    let mut admitted = 0;
    while call(&gateway).await {
        admitted += 1;
    }
    assert!(admitted <= 2, "{admitted}");
    // That refusal waited for the crashed claim in vain; the next ones do not wait again.
    let started = std::time::Instant::now();
    for _ in 0..3 {
        assert!(!call(&gateway).await);
    }
    assert!(
        started.elapsed() < interval * 4,
        "three refusals took {:?}",
        started.elapsed()
    );
    gateway.usage.cache().shutdown().await.unwrap();
}
