//! The cost of OpenTelemetry traces on a routed call: `Router::call` at 10 deployments (the
//! `router` bench's in-memory setup, an instant backend) in a request span as the gateway opens
//! it, side by side with traces off (no exporter: the spans are disabled callsites) and on
//! (`ferrolite::otel` exporting over OTLP/HTTP to a loopback receiver through the batch
//! exporter, which runs on a runtime of its own as in `ferrolite serve`).
//!
//! Run: `cargo bench -p ferrolite-benches --bench otel`.

// A benchmark that cannot set up has nothing to measure: failing loudly is right here.
#![allow(clippy::expect_used, clippy::disallowed_methods)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use ferrolite::config::OtelProtocol;
use ferrolite::otel::{Otel, OtelTarget, TARGET};
use ferrolite_cache::{CacheConfig, DualCache};
use ferrolite_router::{
    Backend, BackendFuture, BackendRequest, BackendResponse, Request, Router, RouterSettings,
};
use ferrolite_strategies::StrategyName;
use ferrolite_types::{Deployment, Usage};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

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
                body: serde_json::json!({"model": "gpt-4o-2024-08-06"}).into(),
                usage: Some(Usage::new(300, 100)),
                time_to_first_token: None,
            })
        })
    }
}

fn router(rt: &tokio::runtime::Runtime) -> Router {
    let deployments = (0..10)
        .map(|i| Deployment {
            id: Some(format!("d{i}")),
            rpm: Some(1 << 50),
            tpm: Some(1 << 60),
            api_base: Some(format!("https://eu-{i}.example.com/v1")),
            ..Deployment::new("gpt-4o", format!("openai/gpt-4o-{i}"))
        })
        .collect();
    let settings = RouterSettings {
        routing_strategy: StrategyName::UsageBasedV2,
        ..RouterSettings::default()
    };
    let cache = rt
        .block_on(DualCache::connect(CacheConfig::default()))
        .expect("cache");
    Router::new(deployments, settings, cache, Arc::new(Instant)).expect("router")
}

fn request() -> Request {
    let body = serde_json::json!({"messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 100, "temperature": 0.5});
    let mut request = Request::new("gpt-4o", body);
    request.input_tokens = Some(300);
    request.max_tokens = Some(100);
    request
}

/// The gateway's request span as `gateway/trace.rs` opens and fills it: the same target and
/// fields, the values known at the start given at creation, the rest recorded a few at a time
/// (`spans::record_all`), as the gateway does for a whole answer.
async fn traced_call(router: &Router) {
    use ferrolite_router::spans::{int, record_all};
    let route = "/v1/chat/completions";
    let span = tracing::info_span!(
        target: TARGET,
        "request",
        otel.name = format!("POST {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = "POST",
        http.route = route,
        http.response.status_code = tracing::field::Empty,
        ferrolite.request.id = "ferrolite-1-1",
        ferrolite.model_group = tracing::field::Empty,
        ferrolite.stream = tracing::field::Empty,
        gen_ai.operation.name = tracing::field::Empty,
        gen_ai.request.model = tracing::field::Empty,
        gen_ai.request.max_tokens = tracing::field::Empty,
        gen_ai.request.temperature = tracing::field::Empty,
        gen_ai.response.model = tracing::field::Empty,
        gen_ai.usage.input_tokens = tracing::field::Empty,
        gen_ai.usage.output_tokens = tracing::field::Empty,
        ferrolite.route.deployment = tracing::field::Empty,
        ferrolite.route.model_group = tracing::field::Empty,
        ferrolite.route.attempts = tracing::field::Empty,
        ferrolite.route.retries = tracing::field::Empty,
        ferrolite.route.fallbacks = tracing::field::Empty,
        ferrolite.cache_hit = tracing::field::Empty,
    );
    let request = request();
    if !span.is_disabled() {
        record_all(
            &span,
            [
                ("ferrolite.model_group", &request.model.as_str()),
                ("ferrolite.stream", &request.stream),
                ("gen_ai.operation.name", &"chat"),
                ("gen_ai.request.model", &request.model.as_str()),
                ("gen_ai.request.max_tokens", &request.max_tokens.map(int)),
                (
                    "gen_ai.request.temperature",
                    &request
                        .body
                        .get("temperature")
                        .and_then(serde_json::Value::as_f64),
                ),
            ],
        );
    }
    let answer = router
        .call(request)
        .instrument(span.clone())
        .await
        .expect("routed");
    if !span.is_disabled() {
        record_all(
            &span,
            [
                ("ferrolite.route.deployment", &answer.deployment_id.as_str()),
                ("ferrolite.route.model_group", &answer.model_group.as_str()),
                ("ferrolite.route.attempts", &i64::from(answer.attempts)),
                (
                    "ferrolite.route.retries",
                    &i64::from(answer.attempted_retries),
                ),
                (
                    "ferrolite.route.fallbacks",
                    &i64::from(answer.attempted_fallbacks),
                ),
                ("ferrolite.cache_hit", &answer.cache_hit),
            ],
        );
        let model: Option<String> = answer.body.get("model");
        let usage = answer.usage.as_ref();
        record_all(
            &span,
            [
                ("gen_ai.response.model", &model),
                (
                    "gen_ai.usage.input_tokens",
                    &usage.map(|u| int(u.prompt_tokens)),
                ),
                (
                    "gen_ai.usage.output_tokens",
                    &usage.map(|u| int(u.completion_tokens)),
                ),
            ],
        );
        record_all(
            &span,
            [
                ("http.response.status_code", &200i64),
                ("otel.status_code", &None::<&str>),
            ],
        );
    }
    black_box(answer);
}

/// A loopback OTLP/HTTP receiver that answers every export; its traces URL.
fn receiver(rt: &tokio::runtime::Runtime) -> String {
    rt.block_on(async {
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(|body: axum::body::Bytes| async move {
                black_box(body.len());
                [("content-type", "application/x-protobuf")]
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/v1/traces")
    })
}

fn otel(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let router = router(&rt);
    let mut group = c.benchmark_group("otel");
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("call_10_deployments_traces_off", |b| {
        b.to_async(&rt).iter(|| traced_call(&router))
    });
    let exporting = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("exporter runtime");
    let endpoint = receiver(&exporting);
    let otel = {
        let _entered = exporting.enter();
        Otel::start_with(OtelTarget {
            endpoint,
            protocol: OtelProtocol::HttpProtobuf,
            headers: Vec::new(),
            service_name: "ferrolite-bench".into(),
            sampling_ratio: None,
        })
        .expect("otel")
    };
    {
        let subscriber = tracing_subscriber::registry().with(otel.layer());
        let _default = tracing::subscriber::set_default(subscriber);
        group.bench_function("call_10_deployments_traces_on", |b| {
            b.to_async(&rt).iter(|| traced_call(&router))
        });
    }
    group.finish();
    otel.shutdown().expect("shutdown");
}

criterion_group!(benches, otel);
criterion_main!(benches);
