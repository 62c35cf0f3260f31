//! Health-check routing (LiteLLM's `enable_health_check_routing`): a deployment whose latest
//! health check failed is not picked while that result is fresh, in every instance sharing the
//! state.
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
use ferrolite_cache::DualCache;
use ferrolite_cache::testing::{config, redis_url, unique_prefix};
use ferrolite_router::{Router, RouterSettings};
use ferrolite_types::ErrorClass;

fn health_routing() -> RouterSettings {
    RouterSettings {
        enable_health_check_routing: true,
        health_check_staleness: Duration::from_secs(600),
        ..settings()
    }
}

async fn picked(s: &Setup, calls: usize) -> HashSet<String> {
    let mut seen = HashSet::new();
    for _ in 0..calls {
        seen.insert(s.call("g").await.unwrap().deployment_id.to_string());
    }
    seen
}

#[tokio::test(start_paused = true)]
async fn a_deployment_whose_last_check_failed_is_skipped_until_a_check_passes() {
    let s = setup(vec![dep("g", "1"), dep("g", "2")], health_routing()).await;
    s.script
        .health("1", Some(ErrorClass::ServerError { status: 500 }));
    let report = s.router.check_health().await;
    assert_eq!(report.len(), 2);
    assert!(
        report
            .iter()
            .any(|(id, r)| id.as_str() == "1" && r.is_err())
    );
    assert!(report.iter().any(|(id, r)| id.as_str() == "2" && r.is_ok()));
    assert_eq!(picked(&s, 20).await, HashSet::from(["2".to_string()]));

    s.script.health("1", None);
    tokio::time::advance(Duration::from_millis(5)).await;
    s.router.check_health().await;
    assert_eq!(
        picked(&s, 40).await,
        HashSet::from(["1".to_string(), "2".to_string()])
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_check_older_than_the_staleness_threshold_no_longer_counts() {
    let settings = RouterSettings {
        health_check_staleness: Duration::from_secs(10),
        ..health_routing()
    };
    let s = setup(vec![dep("g", "1"), dep("g", "2")], settings).await;
    s.script.health("1", Some(ErrorClass::Connection));
    s.router.check_health().await;
    assert_eq!(picked(&s, 20).await, HashSet::from(["2".to_string()]));
    tokio::time::advance(Duration::from_secs(11)).await;
    assert!(picked(&s, 40).await.contains("1"));
}

#[tokio::test(start_paused = true)]
async fn when_every_check_fails_every_deployment_stays_pickable() {
    let s = setup(vec![dep("g", "1"), dep("g", "2")], health_routing()).await;
    s.script.health("1", Some(ErrorClass::Connection));
    s.script.health("2", Some(ErrorClass::Connection));
    s.router.check_health().await;
    assert_eq!(picked(&s, 40).await.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn transient_check_errors_are_ignored_when_asked() {
    let settings = RouterSettings {
        health_check_ignore_transient_errors: true,
        ..health_routing()
    };
    let s = setup(vec![dep("g", "1"), dep("g", "2")], settings).await;
    s.script
        .health("1", Some(ErrorClass::RateLimited { retry_after: None }));
    s.script.health("2", Some(ErrorClass::Authentication));
    s.router.check_health().await;
    assert_eq!(picked(&s, 20).await, HashSet::from(["1".to_string()]));
}

#[tokio::test(start_paused = true)]
async fn without_health_check_routing_a_failed_check_changes_nothing() {
    let s = setup(vec![dep("g", "1"), dep("g", "2")], settings()).await;
    s.script.health("1", Some(ErrorClass::Connection));
    s.router.check_health().await;
    assert_eq!(picked(&s, 40).await.len(), 2);
}

#[tokio::test]
async fn a_check_run_by_one_instance_steers_every_instance_within_a_sync_interval() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("router-health");
    let mut routers = Vec::new();
    let mut caches = Vec::new();
    let script = Arc::new(Script::default());
    for _ in 0..2 {
        let cache = DualCache::connect(config(&url, &prefix)).await.unwrap();
        let router = Router::new(
            vec![dep("g", "1"), dep("g", "2")],
            health_routing(),
            cache.clone(),
            script.clone(),
        )
        .unwrap();
        routers.push(router);
        caches.push(cache);
    }
    script.health("2", Some(ErrorClass::ServerError { status: 503 }));
    routers[0].check_health().await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    for _ in 0..20 {
        let answer = routers[1]
            .call(ferrolite_router::Request::new("g", serde_json::json!({})))
            .await
            .unwrap();
        assert_eq!(answer.deployment_id.as_str(), "1");
    }
    for cache in caches {
        cache.shutdown().await.unwrap();
    }
}
