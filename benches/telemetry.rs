//! What telemetry costs a call: `Router::call` end to end against an instant in-process backend
//! (10 deployments of one group, simple-shuffle, rpm/tpm limits checked on every call, in
//! memory), with the process-wide Prometheus recorder `ferrolite serve` installs, side by side in
//! one run:
//!
//! - `litellm_off`: ferrolite's own metrics only (`ferrolite_settings.litellm_metrics: false`);
//! - `litellm_on`: with LiteLLM's metrics as well (the default): deployment state, success and
//!   total counters, latency histograms, tokens, spend, remaining rpm/tpm.
//!
//! The difference of the medians is what LiteLLM's metrics cost a call. Another variant (e.g.
//! tracing spans exported) is one more entry in [`VARIANTS`].
//!
//! Run: `cargo bench -p ferrolite-benches --bench telemetry`.

// A benchmark that cannot set up has nothing to measure: failing loudly is right here.
#![allow(clippy::expect_used, clippy::disallowed_methods)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use ferrolite_cache::{CacheConfig, DualCache};
use ferrolite_router::{
    Backend, BackendFuture, BackendRequest, BackendResponse, Request, Router, RouterSettings,
};
use ferrolite_types::{Deployment, Usage};

/// The allocator the `ferrolite` binary ships with (`crates/cli/src/main.rs`): what a call
/// allocates costs here what it costs in `ferrolite serve`.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Answers at once.
struct Instant;

impl Backend for Instant {
    fn call<'a>(&'a self, _: &'a Deployment, _: &'a BackendRequest) -> BackendFuture<'a> {
        Box::pin(async {
            Ok(BackendResponse {
                protocol: Default::default(),
                body: serde_json::Value::Null.into(),
                usage: Some(Usage::new(300, 100)),
                time_to_first_token: None,
            })
        })
    }
}

/// How a variant changes the router's settings.
type Configure = fn(&mut RouterSettings);

/// The variants measured: a name and how it changes the router's settings.
const VARIANTS: &[(&str, Configure)] = &[
    ("litellm_off", |s| s.litellm_metrics = false),
    ("litellm_on", |s| s.litellm_metrics = true),
];

fn deployments() -> Vec<Deployment> {
    (0..10)
        .map(|i| Deployment {
            id: Some(format!("d{i}")),
            api_base: Some(format!("https://eu-{i}.example.com/v1")),
            // Limits checked on every call, never reached however long criterion runs.
            rpm: Some(1 << 50),
            tpm: Some(1 << 60),
            input_cost_per_token: Some(1e-9),
            output_cost_per_token: Some(2e-9),
            ..Deployment::new("gpt-4o", format!("azure/gpt-4o-{i}"))
        })
        .collect()
}

fn request() -> Request {
    let body =
        serde_json::json!({"messages": [{"role": "user", "content": "hello"}], "max_tokens": 100});
    let mut request = Request::new("gpt-4o", body);
    request.input_tokens = Some(300);
    request
}

fn call(c: &mut Criterion) {
    let handle = ferrolite::gateway::prometheus_builder()
        .expect("exporter")
        .install_recorder()
        .expect("the process-wide recorder");
    // As `ferrolite serve` does: the histograms' samples drained into their buckets now and
    // then, so that they do not pile up over millions of calls.
    let upkeep = handle.clone();
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_millis(500));
            upkeep.run_upkeep();
        }
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut group = c.benchmark_group("telemetry");
    group.measurement_time(Duration::from_secs(5));
    for (name, configure) in VARIANTS {
        let mut settings = RouterSettings::default();
        settings.strategy.seed = Some(7);
        configure(&mut settings);
        let cache = rt
            .block_on(DualCache::connect(CacheConfig::default()))
            .expect("cache");
        let router =
            Router::new(deployments(), settings, cache, Arc::new(Instant)).expect("router");
        group.bench_function(format!("call_10_deployments_{name}"), |b| {
            b.to_async(&rt)
                .iter(|| async { black_box(router.call(request()).await.expect("routed")) })
        });
    }
    group.finish();
    black_box(handle.render());
}

criterion_group!(benches, call);
criterion_main!(benches);
