//! Fallbacks (LiteLLM's `async_function_with_fallbacks`): chains, attempted-fallbacks counts,
//! `disable_fallbacks`, per-target fields; on paused time.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use common::*;
use ferrolite_router::{Request, RouterError, RouterSettings};
use ferrolite_types::{Deployment, ErrorClass};

fn chains(entries: &[(&str, &[&str])]) -> RouterSettings {
    let mut settings = RouterSettings {
        num_retries: 0,
        ..settings()
    };
    for (from, to) in entries {
        settings
            .fallbacks
            .insert(from.to_string(), to.iter().map(|t| t.to_string()).collect());
    }
    settings
}

#[tokio::test(start_paused = true)]
async fn s40_each_fallback_target_is_tried_in_order_until_one_answers() {
    let s = setup(
        vec![dep("a", "a1"), dep("b", "b1"), dep("c", "c1")],
        chains(&[("a", &["b", "c"])]),
    )
    .await;
    s.script.on("a1", [status(500)]);
    s.script.on("b1", [status(500)]);
    let answer = s.call("a").await.unwrap();
    assert_eq!(s.script.called(), ["a1", "b1", "c1"]);
    assert_eq!(
        (answer.model_group.as_str(), answer.attempted_fallbacks),
        ("c", 2)
    );
}

#[tokio::test(start_paused = true)]
async fn s41_a_first_try_success_reports_no_fallback() {
    let s = setup(
        vec![dep("a", "a1"), dep("b", "b1")],
        chains(&[("a", &["b"])]),
    )
    .await;
    assert_eq!(s.call("a").await.unwrap().attempted_fallbacks, 0);
    s.script.on("a1", [status(500)]);
    assert_eq!(s.call("a").await.unwrap().attempted_fallbacks, 1);
}

#[tokio::test(start_paused = true)]
async fn s42_disable_fallbacks_raises_the_primary_error() {
    let mut settings = chains(&[("a", &["b"])]);
    settings.default_fallbacks = vec!["b".into()];
    let s = setup(vec![dep("a", "a1"), dep("b", "b1")], settings).await;
    s.script.on("a1", [status(500)]);
    let mut request = Request::new("a", serde_json::json!({}));
    request.disable_fallbacks = true;
    assert!(s.router.call(request).await.is_err());
    assert_eq!(s.script.called(), ["a1"]);
}

#[tokio::test(start_paused = true)]
async fn s43_default_and_specific_chains_terminate_with_the_primary_error() {
    let mut settings = chains(&[("bad", &["bad2"])]);
    settings.default_fallbacks = vec!["bad".into()];
    let s = setup(vec![dep("bad", "x"), dep("bad2", "y")], settings).await;
    s.script.next([status(401), status(401), status(401)]);
    let err = s.call("bad").await.unwrap_err();
    assert!(
        matches!(&err, RouterError::Backend { model_group, class: ErrorClass::Authentication, .. } if model_group == "bad"),
        "{err:?}"
    );
    assert_eq!(s.script.called(), ["x", "y"], "no target twice, no loop");
}

#[tokio::test(start_paused = true)]
async fn s45_context_window_error_takes_its_own_chain_without_retrying() {
    let mut settings = chains(&[("a", &["b"])]);
    settings.num_retries = 3;
    settings
        .context_window_fallbacks
        .insert("a".into(), vec!["big".into()]);
    let s = setup(
        vec![dep("a", "a1"), dep("b", "b1"), dep("big", "c9")],
        settings,
    )
    .await;
    s.script
        .on("a1", [Step::Fail(ErrorClass::ContextWindowExceeded)]);
    let answer = s.call("a").await.unwrap();
    assert_eq!(s.script.called(), ["a1", "c9"]);
    assert_eq!(answer.model_group, "big");
}

#[tokio::test(start_paused = true)]
async fn s47_context_window_error_without_its_chain_uses_the_generic_chain() {
    let s = setup(
        vec![dep("a", "a1"), dep("b", "b1")],
        chains(&[("a", &["b"])]),
    )
    .await;
    s.script
        .on("a1", [Step::Fail(ErrorClass::ContextWindowExceeded)]);
    assert_eq!(s.call("a").await.unwrap().model_group, "b");
}

#[tokio::test(start_paused = true)]
async fn s48_a_fallback_to_a_deployment_id_is_served_even_while_it_cools_down() {
    let s = setup(
        vec![dep("gpt-4", "d1"), dep("gpt-4", "my-specific-model-id")],
        chains(&[("gpt-4", &["my-specific-model-id"])]),
    )
    .await;
    s.cool("my-specific-model-id", 60).await;
    s.script.on("d1", [status(500)]);
    let answer = s.call("gpt-4").await.unwrap();
    assert_eq!(answer.deployment_id.as_str(), "my-specific-model-id");
    assert_eq!(s.script.called(), ["d1", "my-specific-model-id"]);
}

#[tokio::test(start_paused = true)]
async fn s51_when_every_fallback_fails_the_primary_error_lists_what_was_tried() {
    let s = setup(
        vec![dep("a", "a1"), dep("b", "b1")],
        chains(&[("a", &["b"])]),
    )
    .await;
    s.script.on("a1", [status(503)]);
    s.script.on("b1", [status(401)]);
    let err = s.call("a").await.unwrap_err();
    let RouterError::Backend {
        model_group,
        class,
        tried,
        ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(model_group, "a");
    assert_eq!(*class, ErrorClass::ServerError { status: 503 });
    assert_eq!(tried.len(), 2);
    assert!(err.to_string().contains("Tried: a (a1)"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn s52_a_content_filtered_response_falls_back_on_the_content_policy_chain() {
    let mut settings = chains(&[]);
    settings
        .content_policy_fallbacks
        .insert("a".into(), vec!["b".into()]);
    let s = setup(vec![dep("a", "a1"), dep("b", "b1")], settings).await;
    s.script.on(
        "a1",
        [Step::Body(
            serde_json::json!({"choices": [{"finish_reason": "content_filter"}]}),
        )],
    );
    assert_eq!(s.call("a").await.unwrap().model_group, "b");
}

#[tokio::test(start_paused = true)]
async fn max_fallbacks_bounds_the_targets_tried() {
    let mut settings = chains(&[("a", &["b", "c", "d"])]);
    settings.max_fallbacks = 2;
    let s = setup(
        vec![
            dep("a", "a1"),
            dep("b", "b1"),
            dep("c", "c1"),
            dep("d", "d1"),
        ],
        settings,
    )
    .await;
    s.script.next(std::iter::repeat_n(status(500), 10));
    assert!(s.call("a").await.is_err());
    assert_eq!(s.script.called(), ["a1", "b1", "c1"]);
}

#[tokio::test(start_paused = true)]
async fn order_tiers_are_tried_lowest_first_before_external_fallbacks() {
    let first = Deployment {
        order: Some(1),
        ..dep("a", "primary")
    };
    let second = Deployment {
        order: Some(2),
        ..dep("a", "backup")
    };
    let s = setup(
        vec![second, first, dep("b", "b1")],
        chains(&[("a", &["b"])]),
    )
    .await;
    assert_eq!(s.call("a").await.unwrap().deployment_id.as_str(), "primary");
    s.script.on("primary", [status(500)]);
    let answer = s.call("a").await.unwrap();
    assert_eq!(answer.deployment_id.as_str(), "backup");
    assert_eq!(
        answer.attempted_fallbacks, 0,
        "an order tier is not an external fallback"
    );
}

#[tokio::test(start_paused = true)]
async fn client_side_fallbacks_replace_the_configured_chain() {
    let s = setup(
        vec![dep("a", "a1"), dep("b", "b1"), dep("c", "c1")],
        chains(&[("a", &["b"])]),
    )
    .await;
    s.script.on("a1", [status(500)]);
    let request = Request::new(
        "a",
        serde_json::json!({"fallbacks": [{"model": "c"}], "messages": []}),
    );
    let answer = s.router.call(request).await.unwrap();
    assert_eq!(s.script.called(), ["a1", "c1"]);
    assert_eq!(answer.model_group, "c");
}

#[tokio::test(start_paused = true)]
async fn routing_fields_are_read_by_the_router_and_never_sent_to_a_deployment() {
    let s = setup(vec![dep("a", "a1"), dep("b", "b1")], chains(&[])).await;
    s.script.on("a1", [status(500), status(500)]);
    let request = Request::new(
        "a",
        serde_json::json!({
            "fallbacks": ["b"], "num_retries": 1, "priority": 3, "disable_fallbacks": false,
            "messages": [], "temperature": 0.2
        }),
    );
    s.router.call(request).await.unwrap();
    assert_eq!(
        s.script.called(),
        ["a1", "a1", "b1"],
        "num_retries 1, then b"
    );
    for body in s.script.bodies.lock().iter() {
        let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["messages", "model", "temperature"], "{body}");
    }
}

#[tokio::test]
async fn malformed_client_side_fallbacks_are_refused_before_any_call() {
    let s = setup(vec![dep("a", "a1")], chains(&[])).await;
    let err = s
        .router
        .call(Request::new("a", serde_json::json!({"fallbacks": [1, 2]})))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RouterError::InvalidRequest {
                field: "fallbacks",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(s.script.called().is_empty());
}

/// S50: a client-side fallback object's own fields (its `messages`, say) replace the request's
/// for that hop only.
#[tokio::test(start_paused = true)]
async fn s50_a_fallback_objects_own_fields_are_sent_to_that_hop() {
    let s = setup(vec![dep("a", "a1"), dep("b", "b1")], chains(&[])).await;
    s.script.on("a1", [status(500)]);
    let request = Request::new(
        "a",
        serde_json::json!({
            "messages": [{"role": "user", "content": "long prompt for a"}],
            "temperature": 0.2,
            "fallbacks": [{"model": "b", "messages": [{"role": "user", "content": "short for b"}]}],
        }),
    );
    let answer = s.router.call(request).await.unwrap();
    assert_eq!(answer.model_group, "b");
    let bodies = s.script.bodies.lock().clone();
    assert_eq!(bodies[0]["messages"][0]["content"], "long prompt for a");
    assert_eq!(bodies[1]["messages"][0]["content"], "short for b");
    assert_eq!(
        bodies[1]["temperature"], 0.2,
        "the rest of the request stays"
    );
    assert!(bodies[1].get("fallbacks").is_none());
}

#[tokio::test(start_paused = true)]
async fn an_order_tier_with_nothing_available_is_passed_over_without_picking_a_lower_tier_again() {
    // Tier 1 weighs far more than tier 3: were tier 1 eligible again, it would be picked.
    let tier = |id: &str, order: u32, weight: f64| Deployment {
        order: Some(order),
        weight: Some(weight),
        ..dep("g", id)
    };
    let s = setup(
        vec![tier("1", 1, 1e6), tier("2", 2, 1.0), tier("3", 3, 1.0)],
        chains(&[]),
    )
    .await;
    s.cool("2", 60).await;
    s.script.on("1", (0..8).map(|_| status(500)));
    let answer = s.call("g").await.unwrap();
    // Tier 2 has nothing available: LiteLLM's order filter gives none for it (the failed tier 1
    // is not picked again), and the order fallback goes on to tier 3.
    assert_eq!(s.script.called(), ["1", "3"]);
    assert_eq!(answer.deployment_id.as_str(), "3");
}
