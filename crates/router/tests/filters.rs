//! Tag routing, the context-window pre-call check, the retry budget and observers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use ferrolite_router::{
    Event, Observer, Request, RetryBudgetSettings, RouterError, RouterSettings,
};
use ferrolite_types::{Deployment, ErrorClass};
use parking_lot::Mutex;

fn tagged(id: &str, tags: &[&str]) -> Deployment {
    Deployment {
        tags: tags.iter().map(|t| t.to_string()).collect(),
        ..dep("g", id)
    }
}

fn tag_settings(match_any: bool) -> RouterSettings {
    RouterSettings {
        enable_tag_filtering: true,
        tag_filtering_match_any: match_any,
        ..settings()
    }
}

/// The deployments 40 calls with `tags` went to.
async fn served(s: &Setup, tags: &[&str]) -> Result<HashSet<String>, RouterError> {
    let mut seen = HashSet::new();
    for _ in 0..40 {
        let mut request = Request::new("g", serde_json::json!({}));
        request.tags = tags.iter().map(|t| t.to_string()).collect();
        seen.insert(s.router.call(request).await?.deployment_id.to_string());
    }
    Ok(seen)
}

fn set(ids: &[&str]) -> HashSet<String> {
    ids.iter().map(|i| i.to_string()).collect()
}

#[tokio::test(start_paused = true)]
async fn tags_route_to_matching_deployments_then_to_default_ones() {
    let deployments = vec![
        tagged("eu", &["eu", "paid"]),
        tagged("us", &["us", "paid"]),
        tagged("fallback", &["default"]),
    ];
    let any = setup(deployments.clone(), tag_settings(true)).await;
    assert_eq!(served(&any, &["eu"]).await.unwrap(), set(&["eu"]));
    assert_eq!(
        served(&any, &["eu", "us"]).await.unwrap(),
        set(&["eu", "us"])
    );
    assert_eq!(served(&any, &["paid", "!us"]).await.unwrap(), set(&["eu"]));
    assert_eq!(served(&any, &["&us"]).await.unwrap(), set(&["us"]));
    assert_eq!(served(&any, &["asia"]).await.unwrap(), set(&["fallback"]));
    assert_eq!(served(&any, &[]).await.unwrap(), set(&["fallback"]));

    let all = setup(deployments, tag_settings(false)).await;
    assert_eq!(served(&all, &["eu", "paid"]).await.unwrap(), set(&["eu"]));
    // Tags the group knows but no one deployment carries all of: refused, not sent to the
    // `default` deployment (LiteLLM's `get_deployments_for_tag`); unknown tags still go there.
    let err = served(&all, &["eu", "us"]).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "Not allowed to access model due to tags configuration. Passed model=g and tags=['eu', 'us']"
    );
    assert_eq!(served(&all, &["asia"]).await.unwrap(), set(&["fallback"]));
}

#[tokio::test(start_paused = true)]
async fn tags_that_match_nothing_without_a_default_are_refused() {
    let s = setup(
        vec![tagged("eu", &["eu"]), tagged("us", &["us"])],
        tag_settings(true),
    )
    .await;
    assert_eq!(
        served(&s, &[]).await.unwrap(),
        set(&["eu", "us"]),
        "untagged: all"
    );
    let err = served(&s, &["asia"]).await.unwrap_err();
    assert!(matches!(err, RouterError::NoTagMatch { .. }), "{err:?}");
    assert!(
        err.to_string().contains("due to tags configuration"),
        "{err}"
    );
    assert_eq!(err.kind(), ferrolite_router::ErrorKind::Request);
}

#[tokio::test(start_paused = true)]
async fn the_context_window_check_drops_small_deployments_and_falls_back_when_none_fits() {
    let small = Deployment {
        max_input_tokens: Some(100),
        ..dep("g", "small")
    };
    let large = Deployment {
        max_input_tokens: Some(10_000),
        ..dep("g", "large")
    };
    let mut settings = RouterSettings {
        enable_pre_call_checks: true,
        ..settings()
    };
    settings
        .context_window_fallbacks
        .insert("g".into(), vec!["huge".into()]);
    let s = setup(vec![small, large, dep("huge", "h")], settings).await;
    let request = |tokens: u64| {
        let mut r = Request::new("g", serde_json::json!({}));
        r.input_tokens = Some(tokens);
        r
    };
    for _ in 0..20 {
        let answer = s.router.call(request(500)).await.unwrap();
        assert_eq!(answer.deployment_id.as_str(), "large");
    }
    let answer = s.router.call(request(50_000)).await.unwrap();
    assert_eq!(answer.model_group, "huge");
    assert!(s.script.called().iter().all(|id| id != "small"));
}

#[tokio::test(start_paused = true)]
async fn a_spent_retry_budget_stops_retries() {
    let settings = RouterSettings {
        num_retries: 3,
        retry_budget: Some(RetryBudgetSettings {
            window: Duration::from_secs(10),
            min_per_second: 0,
            ratio: 0.5,
        }),
        ..settings()
    };
    let s = setup(vec![dep("g", "1")], settings).await;
    // Two successes earn one retry.
    s.call("g").await.unwrap();
    s.call("g").await.unwrap();
    s.script.next(std::iter::repeat_n(status(500), 10));
    assert!(s.call("g").await.is_err());
    assert_eq!(
        s.script.called().len(),
        2 + 2,
        "one attempt and the one retry earned"
    );
}

#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl Observer for Recorder {
    fn on_event(&self, event: &Event<'_>) {
        let name = match event {
            Event::Attempt { .. } => "attempt",
            Event::Success { .. } => "success",
            Event::Failure { .. } => "failure",
            Event::CooldownSet { .. } => "cooldown",
            Event::Retry { .. } => "retry",
            Event::Fallback { .. } => "fallback",
            Event::BudgetRefused { .. } => "budget",
            _ => "other",
        };
        self.0.lock().push(name.to_string());
    }
}

#[tokio::test(start_paused = true)]
async fn observers_see_attempts_failures_cooldowns_retries_and_fallbacks() {
    let mut settings = RouterSettings {
        num_retries: 1,
        ..settings()
    };
    settings.fallbacks.insert("a".into(), vec!["b".into()]);
    let s = setup(vec![dep("a", "1"), dep("a", "2"), dep("b", "3")], settings).await;
    let recorder = Arc::new(Recorder::default());
    s.router.add_observer(recorder.clone());
    s.script.on(
        "1",
        [Step::Fail(ErrorClass::RateLimited { retry_after: None })],
    );
    s.script.on(
        "2",
        [Step::Fail(ErrorClass::RateLimited { retry_after: None })],
    );
    let answer = s.call("a").await.unwrap();
    assert_eq!(answer.model_group, "b");
    let events = recorder.0.lock().clone();
    assert_eq!(
        events,
        [
            "attempt", "failure", "cooldown", "retry", "attempt", "failure", "cooldown",
            "fallback", "attempt", "success"
        ]
    );
}

/// Chat completions (text or multi-part content), text completions (a prompt or a list) and
/// embeddings (an input or a list) all route, with `model` replaced by the deployment's, and
/// their input is counted for the context-window check.
#[tokio::test(start_paused = true)]
async fn chat_completion_and_embedding_bodies_route_and_are_counted() {
    let small = Deployment {
        max_input_tokens: Some(50),
        ..dep("g", "small")
    };
    let large = Deployment {
        max_input_tokens: Some(100_000),
        ..dep("g", "large")
    };
    let settings = RouterSettings {
        enable_pre_call_checks: true,
        ..settings()
    };
    let s = setup(vec![small, large], settings).await;
    let long = "word ".repeat(400);
    let bodies = [
        serde_json::json!({"messages": [{"role": "user", "content": long}]}),
        serde_json::json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": long},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
        ]}]}),
        serde_json::json!({"prompt": long}),
        serde_json::json!({"prompt": ["short", long]}),
        serde_json::json!({"input": long}),
        serde_json::json!({"input": [long, "short"]}),
    ];
    for body in bodies {
        for _ in 0..5 {
            let answer = s
                .router
                .call(Request::new("g", body.clone()))
                .await
                .unwrap();
            assert_eq!(answer.deployment_id.as_str(), "large", "{body}");
        }
    }
    // Short inputs of each kind fit the small deployment too.
    let mut used = HashSet::new();
    for _ in 0..30 {
        used.insert(
            s.router
                .call(Request::new("g", serde_json::json!({"input": ["a", "b"]})))
                .await
                .unwrap()
                .deployment_id
                .to_string(),
        );
    }
    assert!(used.contains("small"));
    for body in s.script.bodies.lock().iter() {
        assert!(
            body["model"] == "openai/small" || body["model"] == "openai/large",
            "{body}"
        );
    }
}

/// S120: with pre-call checks on, a request allowing only `eu` goes to the deployment in `eu`;
/// one without a region is in none.
#[tokio::test(start_paused = true)]
async fn s120_a_request_allowing_one_region_goes_only_to_deployments_in_it() {
    let eu = Deployment {
        region_name: Some("eu".into()),
        ..dep("g", "eu-1")
    };
    let settings = RouterSettings {
        enable_pre_call_checks: true,
        ..settings()
    };
    let s = setup(vec![eu, dep("g", "unknown-region")], settings).await;
    for _ in 0..20 {
        let mut request = Request::new("g", serde_json::json!({}));
        request.allowed_model_region = Some("eu".into());
        assert_eq!(
            s.router.call(request).await.unwrap().deployment_id.as_str(),
            "eu-1"
        );
    }
    let mut request = Request::new("g", serde_json::json!({}));
    request.allowed_model_region = Some("us".into());
    let err = s.router.call(request).await.unwrap_err();
    assert_eq!(err.kind(), ferrolite_router::ErrorKind::Request, "{err}");
    assert!(err.to_string().contains("allowed_model_region"), "{err}");
}
