//! `Request::explain`: the route a request took, recorded only when asked — the context window
//! and `order` reasons with their numbers, an `order` tier moved to after a failure.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use common::*;
use ferrolite_router::{Excluded, Request, RouterSettings};
use ferrolite_types::Deployment;

#[tokio::test(start_paused = true)]
async fn the_route_names_context_window_and_order_exclusions_and_the_tier_moved_to() {
    let small = Deployment {
        max_input_tokens: Some(100),
        order: Some(1),
        ..dep("g", "small")
    };
    let primary = Deployment {
        order: Some(1),
        ..dep("g", "primary")
    };
    let backup = Deployment {
        order: Some(2),
        ..dep("g", "backup")
    };
    let settings = RouterSettings {
        enable_pre_call_checks: true,
        num_retries: 0,
        ..settings()
    };
    let s = setup(vec![small, primary, backup], settings).await;
    let request = |explain: bool| {
        let mut r = Request::new("g", serde_json::json!({}));
        r.input_tokens = Some(500);
        r.explain = explain;
        r
    };
    assert!(s.router.call(request(false)).await.unwrap().route.is_none());

    s.script.on("primary", [status(500)]);
    let answer = s.router.call(request(true)).await.unwrap();
    assert_eq!(answer.deployment_id.as_str(), "backup");
    let route = answer.route.unwrap();
    assert_eq!(route.deployment.as_deref(), Some("backup"));

    let first = &route.picks[0];
    assert_eq!(first.destination, "g");
    assert_eq!(first.picked.as_deref(), Some("primary"));
    let why = |pick: &ferrolite_router::Pick, id: &str| {
        let c = pick.candidates.iter().find(|c| c.deployment == id).unwrap();
        (c.excluded, c.detail.clone())
    };
    assert_eq!(
        why(first, "small"),
        (
            Some(Excluded::ContextWindow),
            Some("max_input_tokens 100 < input 500".into())
        )
    );
    assert_eq!(
        why(first, "backup"),
        (
            Some(Excluded::Order),
            Some("order 2, tier order 1 picked".into())
        )
    );
    assert_eq!(why(first, "primary"), (None, None));

    let second = &route.picks[1];
    assert_eq!(second.destination, "g order 2");
    assert_eq!(second.picked.as_deref(), Some("backup"));

    let attempts: Vec<(&str, &str, Option<u16>)> = route
        .attempts
        .iter()
        .map(|a| (a.deployment.as_str(), a.outcome, a.status))
        .collect();
    assert_eq!(
        attempts,
        [("primary", "error", Some(500)), ("backup", "success", None)]
    );
    assert_eq!(route.fallbacks.len(), 1);
    let hop = &route.fallbacks[0];
    assert_eq!(
        (hop.from.as_str(), hop.to.as_str(), hop.kind, hop.after),
        ("g", "g order 2", "order", Some("server_error"))
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_selection_says_why_nothing_was_picked() {
    let s = setup(vec![dep("g", "a"), dep("g", "b")], settings()).await;
    s.cool("a", 30).await;
    s.cool("b", 60).await;
    let explained = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
    struct Keep(std::sync::Arc<parking_lot::Mutex<Vec<ferrolite_router::Route>>>);
    impl ferrolite_router::Observer for Keep {
        fn on_event(&self, event: &ferrolite_router::Event<'_>) {
            if let ferrolite_router::Event::Explained { route } = event {
                self.0.lock().push((*route).clone());
            }
        }
    }
    s.router
        .add_observer(std::sync::Arc::new(Keep(explained.clone())));
    let mut request = Request::new("g", serde_json::json!({}));
    request.explain = true;
    assert!(s.router.call(request).await.is_err());
    let routes = explained.lock();
    assert_eq!(routes.len(), 1);
    let pick = &routes[0].picks[0];
    assert!(pick.picked.is_none());
    assert!(
        pick.error.as_deref().unwrap().contains("cooldown"),
        "{pick:?}"
    );
    for c in &pick.candidates {
        assert_eq!(c.excluded, Some(Excluded::Cooldown), "{c:?}");
        assert!(c.detail.as_deref().unwrap().contains(" s left)"), "{c:?}");
    }
    assert!(routes[0].attempts.is_empty());
}
