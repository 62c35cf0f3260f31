//! Cooldowns (LiteLLM's `router_utils/cooldown_handlers.py`), on paused time.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use std::time::Duration;

use common::*;
use ferrolite_router::{Request, RouterError, RouterSettings};
use ferrolite_types::{AllowedFailsPolicy, Deployment, DeploymentId, ErrorClass};

fn no_retries() -> RouterSettings {
    RouterSettings {
        num_retries: 0,
        ..settings()
    }
}

#[tokio::test(start_paused = true)]
async fn s53_a_bad_request_never_cools_a_deployment_down() {
    let settings = RouterSettings {
        allowed_fails: Some(0),
        cooldown_time: Duration::from_secs(300),
        ..no_retries()
    };
    let s = setup(vec![dep("g", "1")], settings).await;
    s.script.next([status(400)]);
    assert!(s.call("g").await.is_err());
    assert!(!s.cooled("1"));
    s.call("g").await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn s54_a_deployment_cooldown_time_of_zero_disables_its_cooldowns() {
    let d = Deployment {
        cooldown_time: Some(0.0),
        ..dep("g", "1")
    };
    let s = setup(vec![d, dep("g", "2")], no_retries()).await;
    s.script.on("1", [rate_limited()]);
    s.script.on("2", [rate_limited()]);
    let _ = s.call("g").await;
    assert!(!s.cooled("1"));
}

#[tokio::test(start_paused = true)]
async fn s56_a_rate_limit_cools_a_deployment_with_siblings_but_not_a_lone_one() {
    let lone = setup(vec![dep("g", "1")], no_retries()).await;
    lone.script.next([rate_limited()]);
    let _ = lone.call("g").await;
    assert!(!lone.cooled("1"));

    let pair = setup(vec![dep("g", "1"), dep("g", "2")], no_retries()).await;
    pair.script.next([rate_limited()]);
    let _ = pair.call("g").await;
    assert_eq!(pair.cooled("1") as u8 + pair.cooled("2") as u8, 1);
}

#[tokio::test(start_paused = true)]
async fn s63_s65_a_failure_rate_over_half_cools_down_after_five_calls() {
    let s = setup(vec![dep("g", "1"), dep("g", "2")], no_retries()).await;
    s.script.on("1", std::iter::repeat_n(status(500), 10));
    let router = &s.router;
    // Only "1" is failing; "2" stays healthy. Call until "1" has failed 5 times.
    let mut fails = 0;
    while fails < 5 {
        let before = s.script.called().len();
        let _ = s.call("g").await;
        if s.script.called()[before..].iter().any(|id| id == "1") {
            fails += 1;
            if fails < 5 {
                assert!(!s.cooled("1"), "cooled after {fails} failures");
            }
        }
    }
    assert!(s.cooled("1"), "5 of 5 failed");
    assert!(router.cooled_until(&DeploymentId::new("2")).is_none());

    // 3 failures among 10 calls (30 %): no cooldown.
    let s = setup(vec![dep("g", "a"), dep("g", "b")], no_retries()).await;
    for _ in 0..7 {
        s.script.on("a", [Step::Ok]);
    }
    s.script.on("a", [status(500), status(500), status(500)]);
    for _ in 0..40 {
        let _ = s.call("g").await;
    }
    assert!(!s.cooled("a"));
}

#[tokio::test(start_paused = true)]
async fn s70_a_single_auth_error_cools_a_deployment_with_siblings() {
    let s = setup(vec![dep("g", "1"), dep("g", "2")], no_retries()).await;
    s.script.on("1", [status(401)]);
    s.script.on("2", [status(401)]);
    let _ = s.call("g").await;
    assert!(s.cooled("1") || s.cooled("2"));
}

#[tokio::test(start_paused = true)]
async fn s73_a_deployment_allowed_fails_of_zero_cools_on_the_first_failure() {
    let primary = Deployment {
        allowed_fails: Some(0),
        ..dep("g", "primary")
    };
    let settings = RouterSettings {
        allowed_fails: Some(10),
        ..no_retries()
    };
    let s = setup(vec![primary, dep("g", "secondary")], settings).await;
    s.script.on("primary", [rate_limited()]);
    s.script.on("secondary", [rate_limited()]);
    while !s.script.called().iter().any(|c| c == "primary")
        || !s.script.called().iter().any(|c| c == "secondary")
    {
        let _ = s.call("g").await;
    }
    assert!(s.cooled("primary"));
    assert!(!s.cooled("secondary"), "10 allowed on the router");
}

#[tokio::test(start_paused = true)]
async fn s74_a_deployment_policy_counts_each_error_class_separately() {
    let primary = Deployment {
        allowed_fails_policy: Some(AllowedFailsPolicy {
            rate_limit: Some(0),
            internal_server: Some(5),
            ..AllowedFailsPolicy::default()
        }),
        ..dep("g", "primary")
    };
    let s = setup(vec![primary], no_retries()).await;
    s.script.on("primary", std::iter::repeat_n(status(500), 5));
    for _ in 0..5 {
        let _ = s.call("g").await;
    }
    assert!(!s.cooled("primary"), "5 of 5 allowed");
    s.script.on("primary", [status(500)]);
    let _ = s.call("g").await;
    assert!(s.cooled("primary"), "the 6th cools it");
}

#[tokio::test(start_paused = true)]
async fn s78_when_every_deployment_cools_down_the_error_says_when_to_try_again() {
    let s = setup(vec![dep("g", "1"), dep("g", "2")], no_retries()).await;
    s.cool("1", 30).await;
    s.cool("2", 12).await;
    let err = s.call("g").await.unwrap_err();
    assert!(
        matches!(&err, RouterError::AllCooledDown { retry_in, .. } if *retry_in == Duration::from_secs(12)),
        "{err:?}"
    );
    assert!(err.to_string().contains("Try again in 12 seconds"), "{err}");
    assert_eq!(err.kind(), ferrolite_router::ErrorKind::Capacity);
    assert!(s.script.called().is_empty());
}

#[tokio::test(start_paused = true)]
async fn s79_the_callers_own_deadline_blames_no_deployment() {
    let s = setup(vec![dep("g", "1"), dep("g", "2")], no_retries()).await;
    s.script.next([Step::Hang]);
    let mut request = Request::new("g", serde_json::json!({}));
    request.deadline = Some(Duration::from_secs(1));
    let err = s.router.call(request).await.unwrap_err();
    assert!(
        matches!(err, RouterError::DeadlineExceeded { .. }),
        "{err:?}"
    );
    assert!(!s.cooled("1") && !s.cooled("2"));
}

#[tokio::test(start_paused = true)]
async fn s80_a_cooled_deployment_is_never_picked_until_its_cooldown_ends() {
    let s = setup(vec![dep("g", "1"), dep("g", "2")], no_retries()).await;
    s.cool("1", 5).await;
    for _ in 0..50 {
        assert_eq!(s.call("g").await.unwrap().deployment_id.as_str(), "2");
    }
    tokio::time::advance(Duration::from_secs(5)).await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..50 {
        seen.insert(s.call("g").await.unwrap().deployment_id.to_string());
    }
    assert_eq!(seen.len(), 2, "both eligible again, no probe needed");
}

/// Deliberate difference: LiteLLM keeps the first, shorter cooldown when re-cooling.
#[tokio::test(start_paused = true)]
async fn re_cooling_a_cooled_deployment_extends_its_cooldown() {
    let s = setup(vec![dep("g", "1"), dep("g", "2")], no_retries()).await;
    s.cool("1", 60).await;
    let first = s.router.cooled_until(&DeploymentId::new("1")).unwrap();
    s.cool("1", 5).await;
    assert_eq!(s.router.cooled_until(&DeploymentId::new("1")), Some(first));
    s.cool("1", 120).await;
    assert!(s.router.cooled_until(&DeploymentId::new("1")).unwrap() > first);
}

#[tokio::test(start_paused = true)]
async fn retry_after_sets_the_cooldown_length() {
    let s = setup(vec![dep("g", "1"), dep("g", "2")], no_retries()).await;
    s.script.next([Step::Fail(ErrorClass::RateLimited {
        retry_after: Some(Duration::from_secs(42)),
    })]);
    let _ = s.call("g").await;
    let now = s.cache.clock().now_ms();
    let until = ["1", "2"]
        .iter()
        .find_map(|id| s.router.cooled_until(&DeploymentId::new(*id)))
        .unwrap();
    assert_eq!(until - now, 42_000);
}

fn half_open() -> RouterSettings {
    RouterSettings {
        half_open: true,
        ..no_retries()
    }
}

/// New in ferrolite (LiteLLM's recovery is purely time-based, reference W19): after a cooldown,
/// one probe call at a time until one succeeds.
#[tokio::test(start_paused = true)]
async fn half_open_recovery_lets_one_probe_through_after_a_cooldown_until_it_succeeds() {
    let s = setup(vec![dep("g", "1")], half_open()).await;
    s.cool("1", 5).await;
    tokio::time::advance(Duration::from_millis(5_001)).await;
    s.script.on(
        "1",
        [Step::Delay(Duration::from_secs(1)), Step::Ok, Step::Ok],
    );
    let router = s.router.clone();
    let probe =
        tokio::spawn(async move { router.call(Request::new("g", serde_json::json!({}))).await });
    tokio::time::sleep(Duration::from_millis(1)).await;
    let err = s.call("g").await.unwrap_err();
    assert!(
        err.to_string().contains("one probe call at a time"),
        "{err}"
    );
    assert_eq!(err.kind(), ferrolite_router::ErrorKind::Capacity);
    probe.await.unwrap().unwrap();
    // Recovered: calls run side by side again.
    let (a, b) = tokio::join!(s.call("g"), s.call("g"));
    a.unwrap();
    b.unwrap();
    assert_eq!(s.script.called().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_failed_half_open_probe_cools_the_deployment_down_again_at_once() {
    let s = setup(vec![dep("g", "1")], half_open()).await;
    s.cool("1", 5).await;
    tokio::time::advance(Duration::from_millis(5_001)).await;
    s.script.on("1", [status(500)]);
    s.call("g").await.unwrap_err();
    assert!(s.cooled("1"), "the probe failed: cooled again");
    // Without half-open recovery, a lone deployment's 500 does not cool it down (LiteLLM).
    let s = setup(vec![dep("g", "1")], no_retries()).await;
    s.cool("1", 5).await;
    tokio::time::advance(Duration::from_millis(5_001)).await;
    s.script.on("1", [status(500)]);
    s.call("g").await.unwrap_err();
    assert!(!s.cooled("1"));
}

#[tokio::test(start_paused = true)]
async fn while_a_probe_runs_other_calls_go_to_the_siblings() {
    let s = setup(vec![dep("g", "1"), dep("g", "2")], half_open()).await;
    s.cool("1", 5).await;
    tokio::time::advance(Duration::from_millis(5_001)).await;
    s.script.on("1", [Step::Hang]);
    // Calls until one picks deployment 1 and hangs there as the probe.
    let mut probe = None;
    for _ in 0..50 {
        let router = s.router.clone();
        let call =
            tokio::spawn(
                async move { router.call(Request::new("g", serde_json::json!({}))).await },
            );
        tokio::time::sleep(Duration::from_millis(1)).await;
        if call.is_finished() {
            call.await.unwrap().unwrap();
        } else {
            probe = Some(call);
            break;
        }
    }
    let probe = probe.expect("deployment 1 was picked as the probe");
    for _ in 0..20 {
        assert_eq!(s.call("g").await.unwrap().deployment_id.as_str(), "2");
    }
    probe.abort();
}
