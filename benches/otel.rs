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

/// The gateway's request span (the same target and fields it records).
async fn traced_call(router: &Router) {
    let span = tracing::info_span!(
        target: TARGET,
        "request",
        otel.kind = "server",
        http.request.method = "POST",
        http.route = "/v1/chat/completions",
        http.response.status_code = tracing::field::Empty,
        ferrolite.request.id = "ferrolite-1-1",
        ferrolite.model_group = tracing::field::Empty,
        ferrolite.route.deployment = tracing::field::Empty,
        ferrolite.route.attempts = tracing::field::Empty,
        gen_ai.usage.input_tokens = tracing::field::Empty,
        gen_ai.usage.output_tokens = tracing::field::Empty,
    );
    let answer = router
        .call(request())
        .instrument(span.clone())
        .await
        .expect("routed");
    if !span.is_disabled() {
        span.record("ferrolite.model_group", answer.model_group.as_str());
        span.record("ferrolite.route.deployment", answer.deployment_id.as_str());
        span.record("ferrolite.route.attempts", i64::from(answer.attempts));
        if let Some(usage) = answer.usage {
            span.record("gen_ai.usage.input_tokens", usage.prompt_tokens as i64);
            span.record("gen_ai.usage.output_tokens", usage.completion_tokens as i64);
        }
        span.record("http.response.status_code", 200i64);
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
