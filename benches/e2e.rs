//! The end-to-end load: `Router::call` through the facade with an instant mock backend, 10
//! deployments of one group, usage-based-routing-v2 with rpm/tpm limits: latency at
//! concurrency 1 and throughput at concurrency 100, in memory, with batched Redis and with
//! strict Redis. Prints one JSON line, so the numbers can be set beside LiteLLM's measured the
//! same way (LiteLLM 1.106.2: 3.7 ms per call at concurrency 1, 249 calls/s at 100).
//!
//! Then the gateway: `ferrolite::gateway` on loopback over `mock_response`-style deployments, and
//! a load generator in the same process (64 callers, keep-alive, non-streaming chat
//! completions of a realistic body) sharing the two cores: requests/s and p50/p99 latency, in
//! memory and with batched Redis; and the resident size with 1,000 deployments configured.
//!
//! Run: `cargo run --release -p ferrolite-benches --features tools --bin e2e` (Redis at `REDIS_URL`, else
//! `redis://127.0.0.1:6379`; the Redis modes are left out when none answers).

// A load that cannot set up has nothing to measure: failing loudly is right here.
#![allow(clippy::expect_used, clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use ferrolite::cache::{CacheConfig, DualCache, RedisConfig};
use ferrolite::mock::{MockBackend, MockSpec};
use ferrolite::router::RouterSettings;
use ferrolite::strategies::{AdmissionMode, StrategyName};
use ferrolite::types::Deployment;
use ferrolite::{Request, Router};

fn deployments() -> Vec<Deployment> {
    (0..10)
        .map(|i| Deployment {
            id: Some(format!("d{i}")),
            rpm: Some(1 << 50),
            tpm: Some(1 << 60),
            ..Deployment::new("gpt-4o", format!("azure/gpt-4o-{i}"))
        })
        .collect()
}

fn request() -> Request {
    let mut request = Request::new(
        "gpt-4o",
        serde_json::json!({"messages": [{"role": "user", "content": "hello"}], "max_tokens": 100}),
    );
    request.input_tokens = Some(300);
    request
}

async fn router(admission: AdmissionMode, redis: Option<&str>) -> Option<Router> {
    cached_router(admission, redis, false).await
}

/// [`router`], with the response cache on when `cached`.
async fn cached_router(
    admission: AdmissionMode,
    redis: Option<&str>,
    cached: bool,
) -> Option<Router> {
    let mut config = CacheConfig::default();
    if let Some(url) = redis {
        config.redis = Some(RedisConfig::new(url).with_prefix("ferrolite-e2e:"));
    }
    let cache = DualCache::connect(config).await.ok()?;
    if redis.is_some() && cache.stats().redis_down {
        return None;
    }
    let mut settings = RouterSettings {
        routing_strategy: StrategyName::UsageBasedV2,
        admission,
        ..RouterSettings::default()
    };
    settings.strategy.seed = Some(7);
    if cached {
        settings.response_cache = Some(ferrolite::router::ResponseCacheSettings::default());
    }
    Router::builder()
        .deployments(deployments())
        .settings(settings)
        .cache(cache)
        .backend(MockBackend::new(MockSpec::reply("ok")))
        .build()
        .await
        .ok()
}

/// p50 and p99 of `n` sequential calls, microseconds.
async fn latency(router: &Router, n: usize) -> (f64, f64) {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        router.call(request()).await.expect("routed");
        samples.push(started.elapsed().as_secs_f64() * 1e6);
    }
    samples.sort_by(f64::total_cmp);
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    (at(0.5), at(0.99))
}

/// Calls per second with 100 callers for `length`.
async fn throughput(router: &Router, length: Duration) -> f64 {
    let started = Instant::now();
    let callers: Vec<_> = (0..100)
        .map(|_| {
            let router = router.clone();
            tokio::spawn(async move {
                let mut calls = 0u64;
                while started.elapsed() < length {
                    router.call(request()).await.expect("routed");
                    calls += 1;
                }
                calls
            })
        })
        .collect();
    let mut total = 0;
    for caller in callers {
        total += caller.await.expect("joined");
    }
    total as f64 / started.elapsed().as_secs_f64()
}

/// A realistic chat completion body (about 1 KB).
fn chat_body() -> serde_json::Value {
    serde_json::json!({
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant that answers questions about the weather in short, precise sentences, citing the data you were given."},
            {"role": "user", "content": "Here is today's data: Berlin 12 C and cloudy, Paris 15 C and sunny, Madrid 22 C and clear, Oslo 4 C with light rain, Rome 19 C and partly cloudy. Which city is warmest, which is wettest, and how much warmer is Madrid than Oslo? Answer in three sentences."}
        ],
        "temperature": 0.2,
        "max_tokens": 200,
        "user": "bench-user-7"
    })
}

/// The gateway over `router` on loopback, loaded by 64 keep-alive callers for `length`:
/// requests/s, p50 and p99 in milliseconds.
async fn gateway_load(router: Router, length: Duration) -> (f64, f64, f64) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listener");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let app = ferrolite::gateway::app(router, ferrolite::gateway::GatewaySettings::default());
    tokio::spawn(ferrolite::gateway::serve(
        listener,
        app,
        std::future::pending(),
    ));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .expect("client");
    let body = serde_json::to_vec(&chat_body()).expect("body");
    let started = Instant::now();
    let callers: Vec<_> = (0..64)
        .map(|_| {
            let client = client.clone();
            let body = body.clone();
            let url = format!("{base}/v1/chat/completions");
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while started.elapsed() < length {
                    let sent = Instant::now();
                    let response = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await
                        .expect("sent");
                    assert!(response.status().is_success());
                    let _ = response.bytes().await.expect("read");
                    latencies.push(sent.elapsed().as_secs_f64() * 1e3);
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for caller in callers {
        all.extend(caller.await.expect("joined"));
    }
    let rate = all.len() as f64 / started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    let at = |p: f64| all[((all.len() - 1) as f64 * p).round() as usize];
    (rate, at(0.5), at(0.99))
}

/// The process' resident size in MiB (Linux).
fn resident_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// `--resident`: builds a router over 1,000 deployments (50 groups), routes a call to each
/// group, and prints the process' resident size in MiB.
fn resident_only(runtime: &tokio::runtime::Runtime) {
    let mib = runtime.block_on(async {
        let deployments: Vec<Deployment> = (0..1_000)
            .map(|i| Deployment {
                id: Some(format!("d{i}")),
                rpm: Some(1_000),
                tpm: Some(1_000_000),
                ..Deployment::new(format!("group-{}", i % 50), format!("openai/model-{i}"))
            })
            .collect();
        let router = Router::builder()
            .deployments(deployments)
            .backend(MockBackend::new(MockSpec::reply("ok")))
            .build()
            .await
            .expect("router over 1,000 deployments");
        for i in 0..50 {
            let _ = router
                .call(Request::new(
                    format!("group-{i}"),
                    serde_json::json!({"messages": []}),
                ))
                .await;
        }
        let mib = resident_mib();
        let _ = router.cache().shutdown().await;
        mib
    });
    if let Some(mib) = mib {
        println!("{:.1}", mib);
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    if std::env::args().any(|a| a == "--resident") {
        return resident_only(&runtime);
    }
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let mut summary = serde_json::Map::new();
    for (name, admission, redis) in [
        ("in_memory", AdmissionMode::Batched, None),
        ("redis_batched", AdmissionMode::Batched, Some(url.as_str())),
        ("redis_strict", AdmissionMode::Strict, Some(url.as_str())),
    ] {
        let measured = runtime.block_on(async {
            let router = router(admission, redis).await?;
            let sequential = if redis.is_some() && admission == AdmissionMode::Strict {
                2_000
            } else {
                20_000
            };
            let _ = latency(&router, 500).await; // warm up
            let (p50, p99) = latency(&router, sequential).await;
            let rate = throughput(&router, Duration::from_secs(3)).await;
            let _ = router.cache().shutdown().await;
            Some(serde_json::json!({
                "c1_p50_us": (p50 * 10.0).round() / 10.0,
                "c1_p99_us": (p99 * 10.0).round() / 10.0,
                "c100_calls_per_s": rate.round(),
            }))
        });
        match measured {
            Some(value) => {
                summary.insert(name.into(), value);
            }
            None => eprintln!("{name}: no Redis at {url}; left out"),
        }
    }
    for (name, redis, cached) in [
        ("gateway_in_memory", None, false),
        ("gateway_redis_batched", Some(url.as_str()), false),
        // Every request the same body: answered from the response cache's memory tier.
        ("gateway_response_cache_hits", None, true),
    ] {
        let measured = runtime.block_on(async {
            let router = cached_router(AdmissionMode::Batched, redis, cached).await?;
            let (rate, p50, p99) = gateway_load(router.clone(), Duration::from_secs(5)).await;
            let _ = router.cache().shutdown().await;
            Some(serde_json::json!({
                "c64_requests_per_s": rate.round(),
                "p50_ms": (p50 * 100.0).round() / 100.0,
                "p99_ms": (p99 * 100.0).round() / 100.0,
            }))
        });
        match measured {
            Some(value) => {
                summary.insert(name.into(), value);
            }
            None => eprintln!("{name}: no Redis at {url}; left out"),
        }
    }
    // Resident size with 1,000 deployments configured: measured in a fresh process.
    let resident = std::env::current_exe().ok().and_then(|exe| {
        let out = std::process::Command::new(exe)
            .arg("--resident")
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<f64>()
            .ok()
    });
    if let Some(mib) = resident {
        summary.insert(
            "resident_mib_with_1000_deployments".into(),
            serde_json::json!(mib),
        );
    }
    summary.insert(
        "litellm_1_106_2".into(),
        serde_json::json!({"c1_ms_per_call": 3.7, "c100_calls_per_s": 249}),
    );
    println!("{}", serde_json::Value::Object(summary));
}
