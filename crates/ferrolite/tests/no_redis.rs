//! Built without the `redis` feature (`cargo test -p ferrolite --no-default-features --test
//! no_redis`, which `cargo xtask ci` runs): a configured Redis is refused naming the feature,
//! and a router works in memory. Empty in builds with Redis.
#![cfg(not(feature = "redis"))]
#![allow(clippy::unwrap_used, clippy::panic)]

use ferrolite::cache::{CacheConfig, CacheError, DualCache};
use ferrolite::mock::{MockBackend, MockSpec};
use ferrolite::types::Deployment;
use ferrolite::{Request, Router};

#[tokio::test]
async fn a_configured_redis_is_refused_naming_the_feature() {
    let err = DualCache::connect(CacheConfig::with_redis("redis://:pw@127.0.0.1:6379"))
        .await
        .err();
    match err {
        Some(CacheError::InvalidConfig {
            field,
            value,
            reason,
        }) => {
            assert_eq!(field, "redis");
            assert!(!value.contains("pw"), "{value}");
            assert!(reason.contains("`redis` feature"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_router_routes_in_memory() {
    let router = Router::builder()
        .deployment(Deployment::new("g", "openai/gpt-4o"))
        .backend(MockBackend::new(MockSpec::reply("hi")))
        .build()
        .await
        .unwrap();
    let answer = router
        .call(Request::new("g", serde_json::json!({"messages": []})))
        .await
        .unwrap();
    assert_eq!(answer.model_group, "g");
}
