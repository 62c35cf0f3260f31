//! `max_parallel_requests`: a concurrency cap per deployment, shared by every router instance
//! through leases (LiteLLM keeps it per process, #16011), failing fast when the slots are taken.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use ferrolite_cache::DualCache;
use ferrolite_cache::testing::{config, redis_url, unique_prefix};
use ferrolite_router::{
    Backend, BackendFuture, BackendRequest, BackendResponse, Request, Router, RouterError,
    RouterSettings,
};
use ferrolite_types::{Deployment, DeploymentId};

#[tokio::test(start_paused = true)]
async fn calls_past_the_cap_are_refused_at_once_and_a_finished_call_frees_its_slot() {
    let d = Deployment {
        max_parallel_requests: Some(2),
        ..dep("g", "1")
    };
    let s = setup(
        vec![d],
        RouterSettings {
            num_retries: 0,
            ..settings()
        },
    )
    .await;
    s.script.on("1", [Step::Hang, Step::Hang]);
    let router = s.router.clone();
    let hanging: Vec<_> = (0..2)
        .map(|_| {
            let router = router.clone();
            tokio::spawn(async move { router.call(Request::new("g", serde_json::json!({}))).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(s.router.in_flight(&DeploymentId::new("1")), Some(2));
    let err = s.call("g").await.unwrap_err();
    assert!(err.to_string().contains("max_parallel_requests"), "{err}");
    assert_eq!(err.kind(), ferrolite_router::ErrorKind::Capacity);
    for call in hanging {
        call.abort();
        let _ = call.await;
    }
    assert_eq!(s.router.in_flight(&DeploymentId::new("1")), Some(0));
    s.call("g").await.unwrap();
}

/// Counts calls in flight and the most ever seen.
#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    max: AtomicUsize,
    done: AtomicUsize,
}

impl Backend for Gauge {
    fn call<'a>(&'a self, _: &'a Deployment, _: &'a BackendRequest) -> BackendFuture<'a> {
        Box::pin(async move {
            let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.max.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(3)).await;
            self.now.fetch_sub(1, Ordering::SeqCst);
            self.done.fetch_add(1, Ordering::SeqCst);
            Ok(BackendResponse::default())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_calls_over_two_routers_never_exceed_the_shared_cap() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("router-parallel");
    let gauge = Arc::new(Gauge::default());
    let deployment = Deployment {
        max_parallel_requests: Some(10),
        ..dep("g", "shared")
    };
    let mut routers = Vec::new();
    let mut caches = Vec::new();
    for _ in 0..2 {
        // The cap is shared only while Redis answers: on a command timeout the lease falls
        // back to a per-instance one (fail-open). A loaded CI machine can stall a 1,000-task
        // burst past the default 250 ms, so this test, which is about the shared cap, allows
        // Redis more time.
        let mut config = config(&url, &prefix);
        if let Some(redis) = config.redis.as_mut() {
            redis.command_timeout = Duration::from_secs(10);
        }
        let cache = DualCache::connect(config).await.unwrap();
        let router = Router::new(
            vec![deployment.clone()],
            RouterSettings {
                num_retries: 0,
                ..settings()
            },
            cache.clone(),
            gauge.clone(),
        )
        .unwrap();
        routers.push(router);
        caches.push(cache);
    }
    let mut calls = Vec::new();
    for i in 0..1_000 {
        let router = routers[i % 2].clone();
        calls.push(tokio::spawn(async move {
            router.call(Request::new("g", serde_json::json!({}))).await
        }));
    }
    let mut refused = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => {}
            Err(RouterError::NoCapacity(_)) => refused += 1,
            Err(other) => panic!("{other:?}"),
        }
    }
    let max = gauge.max.load(Ordering::SeqCst);
    assert!(max <= 10, "{max} calls in flight at once");
    assert!(gauge.done.load(Ordering::SeqCst) >= 10);
    assert_eq!(gauge.done.load(Ordering::SeqCst) + refused, 1_000);
    for cache in caches {
        cache.shutdown().await.unwrap();
    }
}

/// A crash: the instance's runtime is dropped with two calls in flight. Its cache never syncs
/// again (a sync interval of an hour stands in for the dead process), so nothing gives the slots
/// back but their lease TTL.
#[test]
fn an_instance_killed_with_calls_in_flight_gives_its_slots_back_within_the_lease_ttl() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("router-crash");
    let settings = RouterSettings {
        num_retries: 0,
        lease_ttl: Duration::from_secs(1),
        ..settings()
    };
    let deployment = Deployment {
        max_parallel_requests: Some(2),
        ..dep("g", "shared")
    };
    let doomed = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let script = Arc::new(Script::default());
    script.on("shared", [Step::Hang, Step::Hang]);
    doomed.block_on(async {
        let config = ferrolite_cache::CacheConfig {
            sync_interval: Duration::from_secs(3600),
            ..config(&url, &prefix)
        };
        let cache = DualCache::connect(config).await.unwrap();
        let router = Router::new(
            vec![deployment.clone()],
            settings.clone(),
            cache,
            script.clone(),
        )
        .unwrap();
        for _ in 0..2 {
            let router = router.clone();
            tokio::spawn(
                async move { router.call(Request::new("g", serde_json::json!({}))).await },
            );
        }
        while script.called().len() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let survivor = tokio::runtime::Runtime::new().unwrap();
    survivor.block_on(async {
        let cache = DualCache::connect(config(&url, &prefix)).await.unwrap();
        let router = Router::new(
            vec![deployment],
            settings,
            cache.clone(),
            Arc::new(Script::default()),
        )
        .unwrap();
        let call = || router.call(Request::new("g", serde_json::json!({})));
        assert!(matches!(call().await, Err(RouterError::NoCapacity(_))));
        let crashed = std::time::Instant::now();
        doomed.shutdown_background();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            matches!(call().await, Err(RouterError::NoCapacity(_))),
            "the dead instance's slots are held until their TTL"
        );
        let freed = loop {
            if call().await.is_ok() {
                break crashed.elapsed();
            }
            assert!(
                crashed.elapsed() < Duration::from_secs(5),
                "slots never freed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(
            freed <= Duration::from_millis(1_500),
            "freed after {freed:?}"
        );
        cache.shutdown().await.unwrap();
    });
}
