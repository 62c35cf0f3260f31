//! The remaining scenarios (retry policies and retries with no healthy deployment left,
//! failure-rate and `allowed_fails` cooldowns, deployment-id and unknown-model routing), each
//! named by its scenario and behaviour (the others live in retries.rs, fallbacks.rs,
//! cooldowns.rs, filters.rs, queue.rs and streams.rs). On paused time.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use common::*;
use ferrolite_router::{Request, RetryPolicy, RouterError, RouterSettings};
use ferrolite_types::{AllowedFailsPolicy, Deployment, ErrorClass};

fn class_of(err: &RouterError) -> ErrorClass {
    match err {
        RouterError::Backend { class, .. } => class.clone(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn s28_s29_with_no_healthy_deployment_left_rate_limits_server_errors_and_timeouts_are_not_retried()
 {
    for (step, class) in [
        (status(500), ErrorClass::ServerError { status: 500 }),
        (status(503), ErrorClass::ServerError { status: 503 }),
        (
            rate_limited(),
            ErrorClass::RateLimited { retry_after: None },
        ),
        (Step::Fail(ErrorClass::Timeout), ErrorClass::Timeout),
    ] {
        // allowed_fails 0: the failure cools deployment 1; 2 is cooled already.
        let settings = RouterSettings {
            allowed_fails: Some(0),
            ..retries(3)
        };
        let s = setup(vec![dep("g", "1"), dep("g", "2")], settings).await;
        s.cool("2", 60).await;
        s.script.on("1", [step]);
        let err = s.call("g").await.unwrap_err();
        assert_eq!(class_of(&err), class);
        assert_eq!(s.script.called(), ["1"], "{class:?}: not retried");
    }
}

#[tokio::test(start_paused = true)]
async fn s32_a_retry_policy_for_bad_requests_retries_a_context_window_error_before_its_fallback() {
    let mut settings = RouterSettings {
        retry_policy: Some(RetryPolicy {
            bad_request: Some(1),
            ..RetryPolicy::default()
        }),
        ..retries(0)
    };
    settings
        .context_window_fallbacks
        .insert("g".into(), vec!["big".into()]);
    let s = setup(vec![dep("g", "1"), dep("big", "9")], settings).await;
    s.script.on(
        "1",
        [Step::Fail(ErrorClass::ContextWindowExceeded), Step::Ok],
    );
    let answer = s.call("g").await.unwrap();
    assert_eq!(answer.model_group, "g", "the policy's retry won");
    assert_eq!(s.script.called(), ["1", "1"]);
    assert_eq!(s.script.gaps(), [secs(0.5)]);
}

#[tokio::test(start_paused = true)]
async fn s36_a_retry_policy_gives_content_policy_errors_three_retries_and_auth_errors_none() {
    let settings = RouterSettings {
        retry_policy: Some(RetryPolicy {
            content_policy: Some(3),
            authentication: Some(0),
            ..RetryPolicy::default()
        }),
        ..retries(1)
    };
    let s = setup(vec![dep("g", "1"), dep("g", "2")], settings).await;
    s.script.next(std::iter::repeat_n(
        Step::Fail(ErrorClass::ContentPolicy),
        10,
    ));
    s.call("g").await.unwrap_err();
    assert_eq!(s.script.called().len(), 4, "one call and exactly 3 retries");

    let s = setup(vec![dep("g", "1"), dep("g", "2")], {
        RouterSettings {
            retry_policy: Some(RetryPolicy {
                authentication: Some(0),
                ..RetryPolicy::default()
            }),
            ..retries(3)
        }
    })
    .await;
    s.script.next([Step::Fail(ErrorClass::Authentication)]);
    s.call("g").await.unwrap_err();
    assert_eq!(s.script.called().len(), 1, "no retry");
}

#[tokio::test(start_paused = true)]
async fn s37_each_group_takes_its_own_retry_policy() {
    let mut settings = retries(5);
    settings.model_group_retry_policy.insert(
        "gpt".into(),
        RetryPolicy {
            content_policy: Some(2),
            ..RetryPolicy::default()
        },
    );
    settings.model_group_retry_policy.insert(
        "bad-model".into(),
        RetryPolicy {
            authentication: Some(0),
            ..RetryPolicy::default()
        },
    );
    let s = setup(
        vec![
            dep("gpt", "1"),
            dep("gpt", "2"),
            dep("gpt", "3"),
            dep("bad-model", "b"),
        ],
        settings,
    )
    .await;
    for id in ["1", "2", "3"] {
        s.script.on(
            id,
            std::iter::repeat_n(Step::Fail(ErrorClass::ContentPolicy), 5),
        );
    }
    s.script.on("b", [Step::Fail(ErrorClass::Authentication)]);
    s.call("gpt").await.unwrap_err();
    assert_eq!(s.script.called().len(), 3, "2 retries");
    s.call("bad-model").await.unwrap_err();
    assert_eq!(s.script.called().len(), 4, "no retry");
}

#[tokio::test(start_paused = true)]
async fn s57_s66_a_lone_deployment_is_never_cooled_by_rate_limits() {
    let s = setup(vec![dep("g", "1"), dep("other", "2")], retries(0)).await;
    s.script.on("1", std::iter::repeat_n(rate_limited(), 20));
    for _ in 0..20 {
        s.call("g").await.unwrap_err();
    }
    assert!(!s.cooled("1"));
}

#[tokio::test(start_paused = true)]
async fn s59_a_router_allowed_fails_policy_cools_a_lone_deployment_after_its_allowance() {
    let d = Deployment {
        timeout: Some(1.0),
        ..dep("g", "1")
    };
    let settings = RouterSettings {
        allowed_fails_policy: Some(AllowedFailsPolicy {
            timeout: Some(1),
            ..AllowedFailsPolicy::default()
        }),
        ..retries(0)
    };
    let s = setup(vec![d], settings).await;
    s.script.on("1", [Step::Hang, Step::Hang]);
    s.call("g").await.unwrap_err();
    assert!(!s.cooled("1"), "one timeout is allowed");
    s.call("g").await.unwrap_err();
    assert!(s.cooled("1"), "the second is over the allowance");
}

/// Calls `g` `n` times without retries; the deployments' scripts decide what fails.
async fn traffic(s: &Setup, n: usize) {
    for _ in 0..n {
        let _ = s.call("g").await;
    }
}

#[tokio::test(start_paused = true)]
async fn s60_deployments_failing_a_quarter_of_their_calls_are_never_cooled() {
    let s = setup(
        vec![dep("g", "1"), dep("g", "2"), dep("g", "3")],
        retries(0),
    )
    .await;
    for id in ["1", "2", "3"] {
        let pattern = [status(500), Step::Ok, Step::Ok, Step::Ok];
        s.script.on(
            id,
            pattern
                .iter()
                .cycle()
                .take(200)
                .cloned()
                .collect::<Vec<_>>(),
        );
    }
    traffic(&s, 100).await;
    for id in ["1", "2", "3"] {
        assert!(!s.cooled(id), "{id}");
    }
}

#[tokio::test(start_paused = true)]
async fn s61_s62_only_the_deployment_failing_most_calls_is_cooled() {
    for failure in [status(500), rate_limited()] {
        let s = setup(
            vec![dep("g", "bad"), dep("g", "2"), dep("g", "3")],
            retries(0),
        )
        .await;
        let bad = [
            failure.clone(),
            failure.clone(),
            failure.clone(),
            Step::Ok,
            Step::Ok,
        ];
        s.script.on(
            "bad",
            bad.iter().cycle().take(200).cloned().collect::<Vec<_>>(),
        );
        traffic(&s, 100).await;
        assert!(s.cooled("bad"), "{failure:?}");
        assert!(!s.cooled("2") && !s.cooled("3"), "{failure:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn s68_a_lone_deployment_with_three_server_errors_and_no_success_is_not_cooled() {
    let s = setup(vec![dep("g", "1")], retries(0)).await;
    s.script.on("1", std::iter::repeat_n(status(500), 3));
    traffic(&s, 3).await;
    assert!(!s.cooled("1"));
}

#[tokio::test(start_paused = true)]
async fn s71_disable_cooldowns_never_cools_a_deployment() {
    let settings = RouterSettings {
        disable_cooldowns: true,
        allowed_fails: Some(0),
        ..retries(0)
    };
    let s = setup(vec![dep("g", "1"), dep("g", "2")], settings).await;
    s.script.next(std::iter::repeat_n(
        Step::Fail(ErrorClass::Authentication),
        10,
    ));
    traffic(&s, 10).await;
    assert!(!s.cooled("1") && !s.cooled("2"));
}

#[tokio::test(start_paused = true)]
async fn s121_a_deployment_id_is_served_while_cooled_and_its_server_error_is_not_retried() {
    let s = setup(vec![dep("g", "1"), dep("g", "2")], retries(3)).await;
    s.cool("1", 60).await;
    let answer = s
        .router
        .call(Request::new("1", serde_json::json!({})))
        .await;
    assert_eq!(answer.unwrap().deployment_id.as_str(), "1");
    s.script.on("1", [status(500)]);
    let err = s
        .router
        .call(Request::new("1", serde_json::json!({})))
        .await
        .unwrap_err();
    assert_eq!(class_of(&err), ErrorClass::ServerError { status: 500 });
    assert_eq!(s.script.called(), ["1", "1"], "served twice, never retried");
}

#[tokio::test(start_paused = true)]
async fn s122_an_unknown_model_without_a_catch_all_is_a_400_naming_the_model() {
    let s = setup(vec![dep("g", "1")], settings()).await;
    let err = s.call("unknown").await.unwrap_err();
    assert_eq!(err.kind(), ferrolite_router::ErrorKind::Request);
    // The text LiteLLM's proxy answers with (its Router's own "There are no healthy
    // deployments for this model" never reaches a proxy client for an unknown name).
    assert!(
        err.to_string()
            .starts_with("Invalid model name passed in model=unknown."),
        "{err}"
    );
}
