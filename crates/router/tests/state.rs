//! `Router::state`: the cluster's routing state as every replica sees it. Two routers, each
//! with its own cache, on one real Redis stand for two replicas: what one does (a cooldown
//! and its cause, calls in a window) shows in the other's state; replicas beat into Redis,
//! are listed with their config compared, and disappear when they stop. The JSON field names
//! are a stable API and pinned here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::{dep, settings};
use ferrolite_cache::testing::{
    RedisCluster, config, redis_binaries_installed, redis_url, unique_prefix,
};
use ferrolite_cache::{CacheConfig, DualCache, ManualClock};
use ferrolite_router::{
    Backend, BackendError, BackendFuture, BackendRequest, BackendResponse, Condition, ReplicaInfo,
    ReplicaSettings, Replicas, Request, Router, RouterSettings, RouterState,
};
use ferrolite_types::{Deployment, ErrorClass, Usage};

/// Deployments whose id starts with `bad` answer 429 with a message naming a key; every other one answers with
/// 10 + 5 tokens.
struct Upstream;

impl Backend for Upstream {
    fn call<'a>(&'a self, deployment: &'a Deployment, _: &'a BackendRequest) -> BackendFuture<'a> {
        Box::pin(async move {
            if deployment
                .id
                .as_deref()
                .is_some_and(|id| id.starts_with("bad"))
            {
                return Err(BackendError::new(
                    ErrorClass::RateLimited { retry_after: None },
                    "Rate limit reached for key sk-live-0123456789abcdef on requests per min",
                ));
            }
            Ok(BackendResponse {
                usage: Some(Usage::new(10, 5)),
                ..BackendResponse::default()
            })
        })
    }
}

fn deployments() -> Vec<Deployment> {
    vec![
        Deployment {
            rpm: Some(600),
            max_parallel_requests: Some(10),
            api_base: Some("https://user:pw@eu.example.com/v1?api-key=abc".into()),
            ..dep("gpt-4o", "good")
        },
        dep("gpt-4o", "bad"),
        dep("other", "solo"),
    ]
}

fn router_settings() -> RouterSettings {
    RouterSettings {
        num_retries: 0,
        ..settings()
    }
}

/// A replica: its router, cache and heartbeat, on the Redis at `url` under `prefix` (or in
/// memory), with the config hash `config`, on `clock`.
struct Replica {
    router: Router,
    cache: DualCache,
    replicas: Replicas,
}

async fn replica(
    url: Option<&str>,
    prefix: &str,
    config_hash: &str,
    clock: &Arc<ManualClock>,
) -> Replica {
    let cache_config = match url {
        Some(url) => config(url, prefix),
        None => CacheConfig::default(),
    };
    replica_of(
        cache_config,
        deployments(),
        router_settings(),
        config_hash,
        clock,
    )
    .await
}

/// A replica of `list` with `settings` on a cache of `cache_config`.
async fn replica_of(
    cache_config: CacheConfig,
    list: Vec<Deployment>,
    settings: RouterSettings,
    config_hash: &str,
    clock: &Arc<ManualClock>,
) -> Replica {
    let cache = DualCache::connect_with_clock(cache_config, clock.clone())
        .await
        .unwrap();
    let router = Router::new(list, settings, cache.clone(), Arc::new(Upstream)).unwrap();
    let replicas = Replicas::new(
        cache.clone(),
        ReplicaInfo::this_process(config_hash, clock_now(clock)),
        ReplicaSettings::default(),
    );
    Replica {
        router,
        cache,
        replicas,
    }
}

fn clock_now(clock: &Arc<ManualClock>) -> u64 {
    ferrolite_cache::Clock::now_ms(&**clock)
}

/// A clock at a fixed minute boundary (2026-01-01T00:00:00Z) plus a second.
fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(1_767_225_601_000))
}

async fn call(router: &Router, group: &str) -> Result<(), ferrolite_router::RouterError> {
    router
        .call(Request::new(
            group,
            serde_json::json!({"messages": [{"role": "user", "content": "hi"}]}),
        ))
        .await
        .map(drop)
}

fn deployment<'s>(state: &'s RouterState, id: &str) -> &'s ferrolite_router::DeploymentState {
    state
        .groups
        .iter()
        .flat_map(|g| &g.deployments)
        .find(|d| d.id == id)
        .unwrap_or_else(|| panic!("no deployment {id} in {state:#?}"))
}

/// Calls `bad` directly (by id) until it is cooled down.
async fn cool_bad(router: &Router) {
    for _ in 0..3 {
        let _ = call(router, "bad").await;
        if router
            .cooled_until(&ferrolite_types::DeploymentId::new("bad"))
            .is_some()
        {
            return;
        }
    }
    panic!("`bad` was not cooled down");
}

#[tokio::test]
async fn a_cooldown_set_through_one_replica_shows_with_its_cause_in_the_others_state() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("state-cooldown");
    let clock = clock();
    let a = replica(Some(&url), &prefix, "c1", &clock).await;
    let b = replica(Some(&url), &prefix, "c1", &clock).await;
    cool_bad(&a.router).await;
    b.cache.sync_now().await.unwrap();

    let state = b.router.state(&b.replicas).await;
    let bad = deployment(&state, "bad");
    assert_eq!(bad.state, Condition::Cooldown);
    let cooldown = bad.cooldown.as_ref().expect("a cooldown");
    assert!(cooldown.until_ms > clock_now(&clock));
    assert_eq!(cooldown.class.as_deref(), Some("rate_limited"));
    assert_eq!(cooldown.status, Some(429));
    let message = cooldown.message.as_deref().unwrap();
    assert!(
        message.starts_with("Rate limit reached for key ***"),
        "{message}"
    );
    assert!(!message.contains("sk-live"), "{message}");
    assert_eq!(deployment(&state, "good").state, Condition::Healthy);
    assert!(deployment(&state, "good").cooldown.is_none());
    for cache in [a.cache, b.cache] {
        cache.shutdown().await.unwrap();
    }
}

/// On a Redis Cluster: what the state reads only from Redis (the cooldowns' causes, one read
/// of keys in as many slots as deployments; the leases; the replicas) is read from every
/// node, as on one server.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_a_redis_cluster_the_state_reads_causes_leases_and_replicas_across_slots() {
    if !redis_binaries_installed(&["redis-server", "redis-cli"]) {
        return;
    }
    let cluster = RedisCluster::start();
    let url = cluster.url();
    let prefix = unique_prefix("state-cluster");
    let clock = clock();
    let bad: Vec<String> = (0..6).map(|i| format!("bad-{i}")).collect();
    let mut list = vec![Deployment {
        rpm: Some(600),
        max_parallel_requests: Some(4),
        ..dep("g", "good")
    }];
    list.extend(bad.iter().map(|id| dep("g", id)));
    let mut routers = Vec::new();
    for _ in 0..2 {
        let replica = replica_of(
            config(&url, &prefix),
            list.clone(),
            router_settings(),
            "c1",
            &clock,
        )
        .await;
        replica.replicas.beat().await.unwrap();
        routers.push(replica);
    }
    let (a, b) = (&routers[0], &routers[1]);
    for id in &bad {
        for _ in 0..3 {
            let _ = call(&a.router, id).await;
        }
    }
    call(&a.router, "good").await.unwrap();
    a.cache.sync_now().await.unwrap();
    // B routed nothing in this window: its first look opens the window's counters, which its
    // next sync (every `sync_interval` in a running replica) fills from Redis.
    let _ = b.router.state(&b.replicas).await;
    b.cache.sync_now().await.unwrap();

    let state = b.router.state(&b.replicas).await;
    assert!(state.shared);
    for id in &bad {
        let cooled = deployment(&state, id);
        assert_eq!(cooled.state, Condition::Cooldown, "{id}");
        let cooldown = cooled.cooldown.as_ref().unwrap();
        assert_eq!(cooldown.class.as_deref(), Some("rate_limited"), "{id}");
        assert!(
            cooldown
                .message
                .as_deref()
                .is_some_and(|m| m.starts_with("Rate limit reached")),
            "{id}: {cooldown:?}"
        );
    }
    let good = deployment(&state, "good");
    assert_eq!(good.rpm.used, 1);
    assert_eq!(good.leases.max, Some(4));
    assert_eq!(good.leases.held, 0);
    assert_eq!(state.replicas.len(), 2, "{:?}", state.replicas);
    for replica in routers {
        replica.cache.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn rpm_used_counts_the_calls_of_both_replicas() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("state-rpm");
    let clock = clock();
    let a = replica(Some(&url), &prefix, "c1", &clock).await;
    let b = replica(Some(&url), &prefix, "c1", &clock).await;
    for _ in 0..3 {
        call(&a.router, "good").await.unwrap();
    }
    for _ in 0..2 {
        call(&b.router, "good").await.unwrap();
    }
    a.cache.sync_now().await.unwrap();
    b.cache.sync_now().await.unwrap();
    a.cache.sync_now().await.unwrap();

    for replica in [&a, &b] {
        let state = replica.router.state(&replica.replicas).await;
        let good = deployment(&state, "good");
        assert_eq!(good.rpm.used, 5, "{:?}", good.rpm);
        assert_eq!(good.rpm.limit, Some(600));
        assert_eq!(good.tpm.used, 75);
        assert_eq!(good.tpm.limit, None);
        assert_eq!(good.errors.successes, 5);
        assert_eq!(good.leases.max, Some(10));
        assert_eq!(good.leases.held, 0);
        assert!(good.window_resets_at_ms > clock_now(&clock));
    }
    // Latency and history are each replica's own.
    let state = a.router.state(&a.replicas).await;
    let history = deployment(&state, "good").history.as_ref().unwrap();
    assert_eq!(history.requests.len(), 90);
    assert_eq!(history.requests.iter().sum::<u32>(), 3);
    assert!(deployment(&state, "good").latency_ms.p50.is_some());
    assert!(deployment(&state, "solo").latency_ms.p50.is_none());
    for cache in [a.cache, b.cache] {
        cache.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn replicas_are_listed_with_another_config_flagged_and_a_stopped_one_disappears() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("state-replicas");
    let clock = clock();
    let a = replica(Some(&url), &prefix, "c1", &clock).await;
    let b = replica(Some(&url), &prefix, "c1", &clock).await;
    let c = replica(Some(&url), &prefix, "c2", &clock).await;
    for r in [&a, &b, &c] {
        r.replicas.beat().await.unwrap();
    }
    let state = a.router.state(&a.replicas).await;
    assert!(state.shared);
    assert_eq!(state.replica, a.replicas.id());
    let ids: Vec<&str> = state.replicas.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert_eq!(ids[0], a.replicas.id(), "the answering replica first");
    let flagged: Vec<&str> = state
        .replicas
        .iter()
        .filter(|r| !r.same_config)
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(flagged, [c.replicas.id().as_str()]);
    let listed_b = state.replicas.iter().find(|r| r.id == b.replicas.id());
    assert_eq!(listed_b.unwrap().version, env!("CARGO_PKG_VERSION"));

    // c stops without leaving (a crash): gone once its TTL passed without a beat.
    let ttl = ReplicaSettings::default().ttl;
    clock.advance_ms(ttl.as_millis() as u64 - 1);
    a.replicas.beat().await.unwrap();
    b.replicas.beat().await.unwrap();
    assert_eq!(a.router.state(&a.replicas).await.replicas.len(), 3);
    clock.advance_ms(2);
    let listed: Vec<String> = a
        .router
        .state(&a.replicas)
        .await
        .replicas
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert!(!listed.contains(&c.replicas.id()), "{listed:?}");
    assert_eq!(listed.len(), 2);

    // b stops cleanly: gone at once.
    b.replicas.leave().await.unwrap();
    let listed = a.router.state(&a.replicas).await.replicas;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, a.replicas.id());
    for cache in [a.cache, b.cache, c.cache] {
        cache.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn without_redis_the_state_is_this_process_alone() {
    let clock = clock();
    let solo = replica(None, "", "c1", &clock).await;
    solo.replicas.beat().await.unwrap();
    call(&solo.router, "good").await.unwrap();
    cool_bad(&solo.router).await;
    let state = solo.router.state(&solo.replicas).await;
    assert!(!state.shared);
    assert_eq!(state.replicas.len(), 1);
    assert_eq!(state.replicas[0].id, solo.replicas.id());
    assert!(state.replicas[0].same_config);
    assert_eq!(deployment(&state, "good").rpm.used, 1);
    let cooldown = deployment(&state, "bad").cooldown.clone().unwrap();
    assert_eq!(cooldown.class.as_deref(), Some("rate_limited"));
    let groups: Vec<&str> = state
        .groups
        .iter()
        .map(|g| g.model_group.as_str())
        .collect();
    assert_eq!(groups, ["gpt-4o", "other"]);
    solo.cache.shutdown().await.unwrap();
}

/// The keys of a JSON object, sorted.
fn keys(value: &serde_json::Value) -> BTreeSet<&str> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect()
}

fn set<'a>(names: &[&'a str]) -> BTreeSet<&'a str> {
    names.iter().copied().collect()
}

#[tokio::test]
async fn the_json_field_names_are_the_documented_ones() {
    let clock = clock();
    let solo = replica(None, "", "c1", &clock).await;
    call(&solo.router, "good").await.unwrap();
    cool_bad(&solo.router).await;
    let state = solo.router.state(&solo.replicas).await;
    let json = serde_json::to_value(&state).unwrap();
    assert_eq!(
        keys(&json),
        set(&["generated_at_ms", "replica", "shared", "replicas", "groups"])
    );
    assert_eq!(
        keys(&json["replicas"][0]),
        set(&[
            "id",
            "version",
            "config_hash",
            "started_at_ms",
            "last_seen_ms",
            "requests_per_second",
            "same_config"
        ])
    );
    let group = &json["groups"][0];
    assert_eq!(keys(group), set(&["model_group", "deployments"]));
    let good = &group["deployments"][0];
    assert_eq!(good["id"], "good");
    assert_eq!(
        keys(good),
        set(&[
            "id",
            "model",
            "provider",
            "api_base",
            "state",
            "cooldown",
            "health",
            "probe",
            "rpm",
            "tpm",
            "window_resets_at_ms",
            "leases",
            "latency_ms",
            "ttft_ms",
            "errors",
            "budget",
            "history"
        ])
    );
    assert_eq!(good["state"], "healthy");
    assert_eq!(good["provider"], "openai");
    assert_eq!(good["api_base"], "https://eu.example.com/v1");
    assert_eq!(
        keys(&good["health"]),
        set(&["checked", "healthy", "last_pass_ms", "last_fail_ms"])
    );
    assert_eq!(keys(&good["rpm"]), set(&["used", "limit"]));
    assert_eq!(keys(&good["tpm"]), set(&["used", "limit"]));
    assert_eq!(keys(&good["leases"]), set(&["held", "max"]));
    for series in ["latency_ms", "ttft_ms"] {
        assert_eq!(keys(&good[series]), set(&["ewma", "p50", "p99"]));
    }
    assert_eq!(good["ttft_ms"]["p50"], serde_json::Value::Null);
    assert_eq!(keys(&good["errors"]), set(&["fails", "successes", "rate"]));
    assert_eq!(
        keys(&good["history"]),
        set(&["bucket_seconds", "requests", "errors", "p99_ms"])
    );
    assert_eq!(good["history"]["bucket_seconds"], 10);
    let bad = &group["deployments"][1];
    assert_eq!(bad["state"], "cooldown");
    assert_eq!(
        keys(&bad["cooldown"]),
        set(&["until_ms", "class", "status", "message"])
    );
    // Read back as the CLI reads it.
    let back: RouterState = serde_json::from_value(json).unwrap();
    assert_eq!(back, state);
    solo.cache.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_half_open_deployment_shows_its_probe() {
    let clock = clock();
    let Replica {
        router,
        cache,
        replicas,
    } = replica_of(
        CacheConfig::default(),
        deployments(),
        RouterSettings {
            half_open: true,
            ..router_settings()
        },
        "c1",
        &clock,
    )
    .await;
    cool_bad(&router).await;
    let until = router
        .cooled_until(&ferrolite_types::DeploymentId::new("bad"))
        .unwrap();
    clock.set_ms(until + 1);
    let state = router.state(&replicas).await;
    let bad = deployment(&state, "bad");
    assert_eq!(bad.state, Condition::Probing);
    let probe = bad.probe.as_ref().unwrap();
    assert_eq!(probe.since_ms, until);
    assert!(!probe.in_flight);
    assert!(deployment(&state, "good").probe.is_none());
    cache.shutdown().await.unwrap();
}
