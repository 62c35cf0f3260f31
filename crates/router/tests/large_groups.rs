//! Groups larger than a pick scans at once (the fast paths and the per-group summaries of
//! cooldowns and tiers), on paused time.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use ferrolite_router::RouterSettings;
use ferrolite_strategies::StrategyName;
use ferrolite_types::Deployment;

fn no_retries() -> RouterSettings {
    RouterSettings {
        num_retries: 0,
        ..settings()
    }
}

fn group(n: usize) -> Vec<Deployment> {
    (0..n).map(|i| dep("g", &format!("{i}"))).collect()
}

/// Calls the group `n` times; the deployments that answered.
async fn answered(s: &Setup, n: usize) -> HashSet<String> {
    let mut seen = HashSet::new();
    for _ in 0..n {
        seen.insert(s.call("g").await.unwrap().deployment_id.to_string());
    }
    seen
}

#[tokio::test(start_paused = true)]
async fn a_cooling_member_of_a_large_group_is_never_picked_and_is_again_once_its_cooldown_ends() {
    for strategy in [
        StrategyName::SimpleShuffle,
        StrategyName::LeastBusy,
        StrategyName::CostBased,
    ] {
        let settings = RouterSettings {
            routing_strategy: strategy,
            ..no_retries()
        };
        let s = setup(group(40), settings).await;
        // Nobody cooling: the group's summary lets every call skip the cooldown scan.
        assert_eq!(answered(&s, 400).await.len(), 40, "{strategy}");
        // All but two cool down (another instance's cooldowns arrive the same way).
        for i in 2..40 {
            s.cool(&format!("{i}"), 10).await;
        }
        let seen = answered(&s, 200).await;
        assert_eq!(
            seen,
            HashSet::from(["0".to_string(), "1".to_string()]),
            "{strategy}: a cooling deployment was picked"
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(
            answered(&s, 600).await.len(),
            40,
            "{strategy}: the cooldowns ended, every member is eligible again"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_member_the_router_cooled_down_leaves_a_large_group_until_its_cooldown_ends() {
    let settings = RouterSettings {
        cooldown_time: Duration::from_secs(30),
        ..no_retries()
    };
    let s = setup(group(40), settings).await;
    // A rate limit cools a deployment with siblings down: the next calls go elsewhere.
    s.script.on("7", [rate_limited()]);
    while !s.cooled("7") {
        let _ = s.call("g").await;
    }
    let seen = answered(&s, 400).await;
    assert!(!seen.contains("7"), "the cooling deployment was picked");
    assert_eq!(seen.len(), 39);
    tokio::time::advance(Duration::from_secs(30)).await;
    assert!(answered(&s, 800).await.contains("7"));
}

#[tokio::test(start_paused = true)]
async fn a_large_group_picks_from_its_lowest_available_tier() {
    // 40 deployments in `order` 1 and 40 in `order` 2.
    let deployments: Vec<Deployment> = (0..80)
        .map(|i| Deployment {
            order: Some(1 + i / 40),
            ..dep("g", &format!("{i}"))
        })
        .collect();
    let s = setup(deployments, no_retries()).await;
    let tier = |seen: &HashSet<String>, order: u32| {
        seen.iter()
            .all(|id| 1 + id.parse::<u32>().unwrap() / 40 == order)
    };
    let seen = answered(&s, 300).await;
    assert!(tier(&seen, 1), "{seen:?}");
    assert_eq!(seen.len(), 40);
    // Tier 1 cooling, all but one: that one takes every call.
    for i in 1..40 {
        s.cool(&format!("{i}"), 10).await;
    }
    assert_eq!(answered(&s, 50).await, HashSet::from(["0".to_string()]));
    // All of tier 1 cooling: tier 2.
    s.cool("0", 10).await;
    let seen = answered(&s, 300).await;
    assert!(tier(&seen, 2), "{seen:?}");
    assert_eq!(seen.len(), 40);
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!(tier(&answered(&s, 100).await, 1));
}

#[tokio::test(start_paused = true)]
async fn an_unhealthy_member_of_a_large_group_is_skipped_while_its_failed_check_is_fresh() {
    let settings = RouterSettings {
        enable_health_check_routing: true,
        health_check_staleness: Duration::from_secs(60),
        ..no_retries()
    };
    let s = setup(group(40), settings).await;
    // Every check passes: the group's summary of failed checks lets calls skip the scan.
    s.router.check_health().await;
    assert_eq!(answered(&s, 400).await.len(), 40);
    s.script.health(
        "3",
        Some(ferrolite_types::ErrorClass::ServerError { status: 500 }),
    );
    tokio::time::advance(Duration::from_millis(5)).await;
    s.router.check_health().await;
    let seen = answered(&s, 400).await;
    assert!(!seen.contains("3"), "the unhealthy deployment was picked");
    assert_eq!(seen.len(), 39);
    // The failed result goes stale: the deployment is eligible again.
    tokio::time::advance(Duration::from_secs(60)).await;
    assert!(answered(&s, 800).await.contains("3"));
}
