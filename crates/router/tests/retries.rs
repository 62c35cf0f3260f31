//! Retries and backoff (LiteLLM's `async_function_with_retries`), on paused time.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use std::time::Duration;

use common::*;
use ferrolite_router::{Request, RetryPolicy, RouterError, RouterSettings};
use ferrolite_types::{Deployment, ErrorClass};

#[tokio::test(start_paused = true)]
async fn s13_lone_deployment_rate_limit_retries_with_exponential_backoff() {
    let s = setup(vec![dep("g", "1")], retries(2)).await;
    s.script.next([rate_limited(), rate_limited(), Step::Ok]);
    let answer = s.call("g").await.unwrap();
    assert_eq!(s.script.called(), ["1", "1", "1"]);
    assert_eq!(s.script.gaps(), [secs(0.5), secs(1.0)]);
    assert_eq!(answer.attempted_retries, 2);
}

/// Deliberate difference: LiteLLM sleeps once more after the last failed attempt.
#[tokio::test(start_paused = true)]
async fn s14_lone_deployment_raises_the_last_error_once_retries_run_out_without_a_last_sleep() {
    let s = setup(vec![dep("g", "1")], retries(1)).await;
    s.script.next([rate_limited(), status(500)]);
    let started = tokio::time::Instant::now();
    let err = s.call("g").await.unwrap_err();
    assert!(
        matches!(&err, RouterError::Backend { class: ErrorClass::ServerError { status: 500 }, tried, .. } if tried.len() == 2),
        "{err:?}"
    );
    assert_eq!(s.script.gaps(), [secs(0.5)]);
    assert_eq!(
        started.elapsed(),
        secs(0.5),
        "no sleep after the last attempt"
    );
}

#[tokio::test(start_paused = true)]
async fn s15_rate_limit_with_an_available_sibling_repicks_without_waiting() {
    let s = setup(vec![dep("g", "1"), dep("g", "2")], retries(1)).await;
    s.script.next([rate_limited(), Step::Ok]);
    s.call("g").await.unwrap();
    let called = s.script.called();
    assert_eq!(called.len(), 2);
    assert_ne!(
        called[0], called[1],
        "the cooled deployment is not picked again"
    );
    assert_eq!(s.script.gaps(), [Duration::ZERO]);
}

#[tokio::test(start_paused = true)]
async fn s16_rate_limit_with_every_sibling_cooled_falls_back_when_a_chain_exists() {
    let mut settings = retries(3);
    settings.fallbacks.insert("a".into(), vec!["b".into()]);
    let s = setup(vec![dep("a", "1"), dep("a", "2"), dep("b", "5")], settings).await;
    s.cool("2", 60).await;
    s.script.on("1", [rate_limited()]);
    let answer = s.call("a").await.unwrap();
    assert_eq!(s.script.called(), ["1", "5"]);
    assert_eq!(answer.model_group, "b");
    assert_eq!(
        (answer.attempted_retries, answer.attempted_fallbacks),
        (0, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn s17_rate_limit_with_every_sibling_cooled_and_no_chain_stops() {
    let s = setup(vec![dep("a", "1"), dep("a", "2")], retries(3)).await;
    s.cool("2", 60).await;
    s.script.on("1", [rate_limited()]);
    let err = s.call("a").await.unwrap_err();
    assert!(
        matches!(
            err,
            RouterError::Backend {
                class: ErrorClass::RateLimited { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(s.script.called(), ["1"]);
}

#[tokio::test(start_paused = true)]
async fn s18_authentication_error_with_siblings_repicks_and_skips_the_failed_deployment() {
    for _ in 0..5 {
        let s = setup(vec![dep("g", "1"), dep("g", "2")], retries(1)).await;
        s.script.next([status(401), Step::Ok]);
        s.call("g").await.unwrap();
        let called = s.script.called();
        assert_ne!(called[0], called[1]);
        assert_eq!(s.script.gaps(), [Duration::ZERO]);
    }
}

#[tokio::test(start_paused = true)]
async fn s19_authentication_error_on_a_lone_deployment_is_not_retried() {
    let s = setup(vec![dep("g", "1")], retries(3)).await;
    s.script.next([status(401)]);
    assert!(s.call("g").await.is_err());
    assert_eq!(s.script.called().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn s20_not_found_is_never_retried_even_with_siblings() {
    let s = setup(vec![dep("g", "1"), dep("g", "2")], retries(3)).await;
    s.script.next([status(404)]);
    let err = s.call("g").await.unwrap_err();
    assert_eq!(
        err.kind(),
        ferrolite_router::ErrorKind::Upstream(&ErrorClass::NotFound)
    );
    assert_eq!(s.script.called().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn s21_bad_request_skips_the_retries_and_falls_back() {
    let mut settings = retries(3);
    settings.fallbacks.insert("a".into(), vec!["b".into()]);
    let s = setup(vec![dep("a", "1"), dep("a", "2"), dep("b", "5")], settings).await;
    s.script.next([status(400)]);
    let answer = s.call("a").await.unwrap();
    assert_eq!(s.script.called().len(), 2);
    assert_eq!(answer.model_group, "b");
}

#[tokio::test(start_paused = true)]
async fn s22_connection_errors_retry_at_once_and_do_not_cool_down() {
    let s = setup(vec![dep("g", "1"), dep("g", "2")], retries(1)).await;
    s.script
        .next([Step::Fail(ErrorClass::Connection), Step::Ok]);
    s.call("g").await.unwrap();
    assert_eq!(s.script.gaps(), [Duration::ZERO]);
    assert!(!s.cooled("1") && !s.cooled("2"));
}

#[tokio::test(start_paused = true)]
async fn s24_retry_after_is_obeyed_on_a_lone_deployment() {
    let s = setup(vec![dep("g", "1")], retries(1)).await;
    s.script.next([Step::Fail(ErrorClass::RateLimited {
        retry_after: Some(Duration::from_secs(3)),
    })]);
    s.call("g").await.unwrap();
    assert_eq!(s.script.gaps(), [secs(3.0)]);
}

#[tokio::test(start_paused = true)]
async fn s26_retry_after_is_ignored_when_a_sibling_is_available() {
    let s = setup(vec![dep("g", "1"), dep("g", "2")], retries(1)).await;
    s.script.next([Step::Fail(ErrorClass::RateLimited {
        retry_after: Some(Duration::from_secs(60)),
    })]);
    s.call("g").await.unwrap();
    assert_eq!(s.script.gaps(), [Duration::ZERO]);
}

#[tokio::test(start_paused = true)]
async fn s31_retry_policy_retries_a_bad_request_and_skips_the_failed_deployment() {
    let settings = RouterSettings {
        retry_policy: Some(RetryPolicy {
            bad_request: Some(1),
            ..RetryPolicy::default()
        }),
        ..retries(0)
    };
    let s = setup(vec![dep("g", "1"), dep("g", "2")], settings).await;
    s.script.next([status(400), Step::Ok]);
    s.call("g").await.unwrap();
    let called = s.script.called();
    assert_eq!(called.len(), 2);
    assert_ne!(called[0], called[1]);
}

#[tokio::test(start_paused = true)]
async fn s34_a_deployments_own_retries_beat_the_router_default() {
    let d = Deployment {
        num_retries: Some(1),
        ..dep("g", "1")
    };
    let s = setup(vec![d], retries(0)).await;
    s.script.next([rate_limited()]);
    s.call("g").await.unwrap();
    assert_eq!(s.script.gaps(), [secs(0.5)]);
}

#[tokio::test(start_paused = true)]
async fn s38_a_deployment_that_always_times_out_is_called_num_retries_plus_one_times() {
    for n in 0..4u32 {
        let d = Deployment {
            timeout: Some(1.0),
            ..dep("g", "1")
        };
        let s = setup(vec![d], retries(n)).await;
        s.script.on("1", std::iter::repeat_n(Step::Hang, 10));
        let err = s.call("g").await.unwrap_err();
        assert!(
            matches!(
                err,
                RouterError::Backend {
                    class: ErrorClass::Timeout,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(s.script.called().len() as u32, n + 1);
    }
}

#[tokio::test(start_paused = true)]
async fn s39_a_stream_takes_the_stream_timeout_and_a_plain_call_the_timeout() {
    let d = Deployment {
        timeout: Some(10.0),
        stream_timeout: Some(1.0),
        ..dep("g", "1")
    };
    let s = setup(vec![d], retries(0)).await;
    s.script.on("1", [Step::Hang, Step::Hang]);
    let started = tokio::time::Instant::now();
    let streamed = Request::new("g", serde_json::json!({"stream": true}));
    assert!(s.router.stream(streamed).await.is_err());
    assert_eq!(started.elapsed(), secs(1.0));
    let started = tokio::time::Instant::now();
    assert!(s.call("g").await.is_err());
    assert_eq!(started.elapsed(), secs(10.0));
}

/// New in ferrolite: an overall deadline over attempts and backoffs.
#[tokio::test(start_paused = true)]
async fn a_request_deadline_bounds_retries_and_backoffs() {
    let s = setup(vec![dep("g", "1")], retries(5)).await;
    s.script.next(std::iter::repeat_n(status(500), 10));
    let mut request = Request::new("g", serde_json::json!({}));
    request.deadline = Some(Duration::from_secs(2));
    let started = tokio::time::Instant::now();
    let err = s.router.call(request).await.unwrap_err();
    assert!(
        matches!(err, RouterError::DeadlineExceeded { .. }),
        "{err:?}"
    );
    assert!(started.elapsed() <= secs(2.0));
    // 0.5 s and 1 s fit; the 2 s backoff would pass the deadline: 3 attempts.
    assert_eq!(s.script.called().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn retry_after_setting_is_the_shortest_backoff_and_stays_under_litellms_8_s_cap() {
    let settings = RouterSettings {
        retry_after: Duration::from_secs(3),
        ..retries(4)
    };
    let s = setup(vec![dep("g", "1")], settings).await;
    s.script
        .next([status(500), status(500), status(500), status(500), Step::Ok]);
    let answer = s.call("g").await.unwrap();
    // 0.5 s, 1 s, 2 s raised to 3 s; then 4 s as it is.
    assert_eq!(
        s.script.gaps(),
        [secs(3.0), secs(3.0), secs(3.0), secs(4.0)]
    );
    assert_eq!(answer.attempted_retries, 4);

    let capped = RouterSettings {
        retry_after: Duration::from_secs(20),
        ..retries(1)
    };
    let s = setup(vec![dep("g", "1")], capped).await;
    s.script.next([status(500), Step::Ok]);
    s.call("g").await.unwrap();
    assert_eq!(s.script.gaps(), [secs(8.0)], "LiteLLM's MAX_RETRY_DELAY");
}

#[tokio::test(start_paused = true)]
async fn retry_after_setting_does_not_delay_a_retry_on_a_healthy_sibling() {
    let settings = RouterSettings {
        retry_after: Duration::from_secs(3),
        ..retries(1)
    };
    let s = setup(vec![dep("g", "1"), dep("g", "2")], settings).await;
    s.script.next([status(500), Step::Ok]);
    s.call("g").await.unwrap();
    assert_eq!(s.script.gaps(), [Duration::ZERO]);
}
