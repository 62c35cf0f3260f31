//! Snapshots of the deployment list: one dense index per snapshot, state carried over by id.
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
use ferrolite_cache::{CacheConfig, DualCache, ManualClock, Window};
use ferrolite_strategies::{
    AdmissionMode, CallOutcome, Candidates, Outcome, Pool, RouteContext, StrategyConfig,
    StrategyError, StrategyName, Targets, UsageStore, build,
};
use ferrolite_types::Deployment;

fn done(seconds: f64) -> CallOutcome {
    CallOutcome {
        latency: Duration::from_secs_f64(seconds),
        ..CallOutcome::default()
    }
}

#[tokio::test]
async fn learned_latency_carries_over_a_swap_that_reorders_and_adds_deployments() {
    for name in [StrategyName::LatencyBased, StrategyName::P2cEwma] {
        let s = setup(vec![deployment("slow"), deployment("fast")], name).await;
        s.strategy
            .observe(s.target("slow"), &Outcome::Success(&done(5.0)));
        s.strategy
            .observe(s.target("fast"), &Outcome::Success(&done(0.1)));

        // The next snapshot lists the deployments the other way round and adds one (left out of
        // the eligible list: without a sample it would be explored first).
        let next =
            Targets::new(&[deployment("fast"), deployment("new"), deployment("slow")]).unwrap();
        let strategy = s.strategy.for_snapshot(&next);
        let usage = s.usage_for(&next);
        let pool = Pool::new(
            &next,
            next.iter().filter(|t| t.id.as_str() != "new").map(|t| t.ix),
        );
        for _ in 0..20 {
            let picked = strategy
                .pick(
                    &RouteContext::new(GROUP),
                    Candidates::new(&next, &pool),
                    &usage.view(),
                )
                .unwrap();
            assert_eq!(
                picked.id.as_str(),
                "fast",
                "{name}: the samples were lost or mixed up"
            );
        }
    }
}

#[tokio::test]
async fn a_target_of_an_old_snapshot_never_fits_and_cannot_be_admitted() {
    let s = setup(
        vec![
            deployment("a"),
            Deployment {
                rpm: Some(0),
                ..deployment("b")
            },
        ],
        StrategyName::SimpleShuffle,
    )
    .await;
    // b is removed; a new snapshot puts c where a was.
    let next = Targets::new(&[deployment("c")]).unwrap();
    let usage = s.usage_for(&next);
    let stale = s.target("a");
    assert_eq!(stale.ix.index(), 0);
    assert!(!usage.view().fits(stale, 0));
    assert!(matches!(
        usage.admit(stale, 0).await,
        Err(StrategyError::UnknownDeployment { .. })
    ));
}

#[tokio::test]
async fn usage_of_unchanged_deployments_carries_over_a_swap() {
    let s = setup(
        vec![
            deployment("a"),
            Deployment {
                rpm: Some(3),
                ..deployment("b")
            },
        ],
        StrategyName::SimpleShuffle,
    )
    .await;
    for _ in 0..3 {
        drop(
            s.admit(s.target("b"), &RouteContext::new(GROUP))
                .await
                .unwrap(),
        );
    }
    // b's limit is raised (its id is unchanged: limits are not identity), a is removed.
    let raised = Deployment {
        rpm: Some(4),
        ..deployment("b")
    };
    assert_eq!(raised.id(), s.target("b").id);
    let next = Targets::new(&[raised]).unwrap();
    let usage = s.usage_for(&next);
    let b = next.iter().next().unwrap();
    assert_eq!(usage.view().rpm(b.ix), 3.0);
    drop(usage.admit(b, 0).await.unwrap());
    assert!(usage.admit(b, 0).await.is_err(), "4 of 4 taken");
}

/// Regression (review of 79b0912): `TrackedKeysFull` while rotating to the next window failed
/// every pick of the group.
#[tokio::test]
async fn a_failed_window_rotation_keeps_the_old_counters_and_picks_go_on() {
    let clock = ManualClock::new(T0);
    // One deployment: its in-flight counter and one rpm and one tpm counter (a fixed window
    // keeps no previous bucket) fill the registry exactly.
    let cache = DualCache::connect_with_clock(
        CacheConfig {
            max_tracked_keys: 3,
            ..CacheConfig::default()
        },
        Arc::new(clock.clone()),
    )
    .await
    .unwrap();
    let targets = Targets::new(&[Deployment {
        rpm: Some(100),
        ..deployment("a")
    }])
    .unwrap();
    let usage = UsageStore::new(
        cache.clone(),
        &targets,
        Window::MINUTE_FIXED,
        AdmissionMode::Batched,
    )
    .unwrap();
    let strategy = build(
        StrategyName::UsageBasedV2,
        &StrategyConfig::default(),
        &targets,
        Arc::new(clock.clone()),
    )
    .unwrap();
    let a = targets.iter().next().unwrap();
    drop(usage.admit(a, 0).await.unwrap());
    clock.advance_ms(60_000);
    let pool = Pool::new(&targets, [a.ix]);
    for _ in 0..10 {
        let view = usage.view();
        assert_eq!(
            strategy
                .pick(
                    &RouteContext::new(GROUP),
                    Candidates::new(&targets, &pool),
                    &view
                )
                .unwrap()
                .id
                .as_str(),
            "a"
        );
    }
    assert!(usage.rotation_failures() >= 1);
    cache.shutdown().await.unwrap();
}
