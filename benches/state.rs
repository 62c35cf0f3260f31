//! `Router::state` (the cluster's routing state, `GET /router/state`) over 1,000 deployments
//! in 50 groups with 10 replicas registered, on the local Redis: every deployment has been
//! called (latency samples and history), half have `max_parallel_requests` (their leases are
//! counted in Redis), one in twenty is cooled down with its cause stored. Measured: the state
//! read and serialized to JSON (with and without the histories), and one request through the
//! gateway's endpoint over loopback HTTP. Target: <= 5 ms.
//!
//! Run: `cargo bench -p ferrolite-benches --bench state` (needs Redis at `REDIS_URL`, default
//! `redis://127.0.0.1:6379`).

// A benchmark that cannot set up has nothing to measure: failing loudly is right here.
#![allow(clippy::expect_used, clippy::disallowed_methods)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use ferrolite_cache::{CacheConfig, DualCache, RedisConfig};
use ferrolite_router::{
    Backend, BackendError, BackendFuture, BackendRequest, BackendResponse, ReplicaInfo,
    ReplicaSettings, Replicas, Request, Router, RouterSettings, StateOptions,
};
use ferrolite_types::{Deployment, ErrorClass, Usage};

/// The allocator the `ferrolite` binary ships with (`crates/cli/src/main.rs`): what a call
/// allocates costs here what it costs in `ferrolite serve`.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Deployments whose id ends in `-cool` answer 429; the others at once.
struct Upstream;

impl Backend for Upstream {
    fn call<'a>(&'a self, d: &'a Deployment, _: &'a BackendRequest) -> BackendFuture<'a> {
        Box::pin(async move {
            if d.id.as_deref().is_some_and(|id| id.ends_with("-cool")) {
                return Err(BackendError::new(
                    ErrorClass::RateLimited { retry_after: None },
                    "Rate limit reached for requests",
                ));
            }
            Ok(BackendResponse {
                usage: Some(Usage::new(300, 100)),
                ..BackendResponse::default()
            })
        })
    }
}

const DEPLOYMENTS: usize = 1_000;
const GROUPS: usize = 50;
const REPLICAS: usize = 10;

fn deployments() -> Vec<Deployment> {
    (0..DEPLOYMENTS)
        .map(|i| {
            let id = if i % 20 == 0 {
                format!("d{i}-cool")
            } else {
                format!("d{i}")
            };
            Deployment {
                id: Some(id),
                rpm: Some(10_000),
                tpm: Some(1_000_000),
                max_parallel_requests: (i % 2 == 0).then_some(50),
                api_base: Some(format!("https://eu-{i}.example.com/v1")),
                ..Deployment::new(format!("group-{}", i % GROUPS), format!("azure/gpt-4o-{i}"))
            }
        })
        .collect()
}

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string())
}

fn state(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let config = CacheConfig {
        redis: Some(RedisConfig::new(redis_url()).with_prefix("ferrolite-bench-state:")),
        ..CacheConfig::default()
    };
    let cache = match rt.block_on(DualCache::connect(config)) {
        Ok(cache) if !cache.stats().redis_down => cache,
        _ => {
            eprintln!("state: no Redis at {}; skipped", redis_url());
            return;
        }
    };
    let settings = RouterSettings {
        num_retries: 0,
        ..RouterSettings::default()
    };
    let router =
        Router::new(deployments(), settings, cache.clone(), Arc::new(Upstream)).expect("router");
    let replicas: Vec<Arc<Replicas>> = (0..REPLICAS)
        .map(|i| {
            Arc::new(Replicas::new(
                cache.clone(),
                ReplicaInfo {
                    id: format!("bench-replica-{i}"),
                    version: "0.1.0".into(),
                    config_hash: if i < 8 { "same" } else { "other" }.into(),
                    started_at_ms: 0,
                },
                ReplicaSettings {
                    // Listed for the whole run.
                    ttl: Duration::from_secs(3600),
                    ..ReplicaSettings::default()
                },
            ))
        })
        .collect();
    rt.block_on(async {
        for replica in &replicas {
            replica.beat().await.expect("beat");
        }
        // Every deployment called a few times (by id): latency samples, history, cooldowns.
        for round in 0..3 {
            for d in deployments() {
                let id = d.id.clone().expect("id");
                if round > 0 && id.ends_with("-cool") {
                    continue;
                }
                let _ = router
                    .call(Request::new(
                        id,
                        serde_json::json!({"messages": [{"role": "user", "content": "hi"}]}),
                    ))
                    .await;
            }
        }
        cache.sync_now().await.expect("sync");
    });
    let me = Arc::clone(&replicas[0]);
    let sample = rt.block_on(router.state(&me));
    let cooling = sample
        .groups
        .iter()
        .flat_map(|g| &g.deployments)
        .filter(|d| d.cooldown.is_some())
        .count();
    let bytes = serde_json::to_vec(&sample).expect("json").len();
    eprintln!(
        "state: {} replicas, {cooling} deployments cooling, {bytes} bytes of JSON with histories",
        sample.replicas.len()
    );

    let mut group = c.benchmark_group("router_state");
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("state_and_json_1000_deployments_10_replicas", |b| {
        b.to_async(&rt).iter(|| async {
            let state = router.state(&me).await;
            black_box(serde_json::to_vec(&state).expect("json"))
        })
    });
    group.bench_function("state_and_json_no_history", |b| {
        b.to_async(&rt).iter(|| async {
            let state = router
                .state_with(&me, StateOptions { history: false })
                .await;
            black_box(serde_json::to_vec(&state).expect("json"))
        })
    });

    // The endpoint over loopback HTTP, as a dashboard reads it.
    let settings = ferrolite::gateway::GatewaySettings {
        replicas: Some(Arc::clone(&me)),
        ..Default::default()
    };
    let app = ferrolite::gateway::app(router.clone(), settings);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("listener");
    let address = listener.local_addr().expect("address");
    rt.spawn(ferrolite::gateway::serve(
        listener,
        app,
        std::future::pending(),
    ));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let url = format!("http://{address}/router/state");
    // With the histories, and without them as the dashboard polls it every second (the
    // histories once per 10-second bucket) and `ferrolite status` / `top` read it.
    let light = format!("{url}?history=false");
    for (name, url) in [
        ("http_get_router_state_1000_deployments", &url),
        ("http_get_router_state_no_history", &light),
    ] {
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                let body = client
                    .get(url.as_str())
                    .send()
                    .await
                    .expect("answer")
                    .bytes()
                    .await
                    .expect("body");
                black_box(body.len())
            })
        });
    }
    group.finish();
    rt.block_on(async {
        for replica in &replicas {
            let _ = replica.leave().await;
        }
    });
}

criterion_group!(benches, state);
criterion_main!(benches);
