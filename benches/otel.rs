//! The cost of OpenTelemetry traces on a request: a chat completion through the gateway's
//! routes in process (tower's `oneshot`: no socket), `Router::call` at 10 deployments against
//! an instant backend, side by side with traces off (no sink: nothing is traced), built (every
//! request's request span and attempt span built when they end, and dropped by the sink) and on
//! (the same spans exported over OTLP/HTTP to a loopback receiver by the export task, which
//! runs on a runtime of its own as in `ferrolite serve`).
//!
//! Run: `cargo bench -p ferrolite-benches --bench otel`.

// A benchmark that cannot set up has nothing to measure: failing loudly is right here.
#![allow(clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use criterion::{Criterion, criterion_group, criterion_main};
use ferrolite::config::OtelProtocol;
use ferrolite::gateway::{GatewaySettings, app};
use ferrolite::otel::{Otel, OtelTarget};
use ferrolite_cache::{CacheConfig, DualCache};
use ferrolite_router::RouterSettings;
use ferrolite_router::spans::{FinishedSpan, SpanSink};
use ferrolite_router::{Backend, BackendFuture, BackendRequest, BackendResponse, Router};
use ferrolite_strategies::StrategyName;
use ferrolite_types::{Deployment, Usage};
use tower::ServiceExt;

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
                body: serde_json::json!({"id": "x", "object": "chat.completion",
                    "model": "gpt-4o-2024-08-06", "choices": []})
                .into(),
                usage: Some(Usage::new(300, 100)),
                time_to_first_token: None,
            })
        })
    }
}

/// A sink that drops every span it is given: what building the spans costs, without the
/// export.
#[derive(Debug)]
struct Discard;

impl SpanSink for Discard {
    fn finished(&self, span: FinishedSpan<'_>) {
        black_box(span);
    }
}

/// The gateway over 10 deployments (rpm/tpm checked on every call), its spans given to
/// `traces`.
fn gateway(rt: &tokio::runtime::Runtime, traces: Option<Arc<dyn SpanSink>>) -> axum::Router {
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
    let router = Router::new(deployments, settings, cache, Arc::new(Instant)).expect("router");
    app(
        router,
        GatewaySettings {
            traces,
            ..GatewaySettings::default()
        },
    )
}

const BODY: &str = r#"{"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 100, "temperature": 0.5}"#;

/// One chat completion through `app`, with a client's `traceparent`.
async fn request(app: &axum::Router) {
    let request = axum::http::Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .body(Body::from(BODY))
        .expect("request");
    let response = app.clone().oneshot(request).await.expect("answered");
    assert_eq!(response.status(), 200);
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    black_box(body);
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
    let off = gateway(&rt, None);
    let built = gateway(&rt, Some(Arc::new(Discard)));
    let on = gateway(&rt, Some(otel.sink()));
    // `FERROLITE_BENCH_COUNT=row:N` (off, built or on): instead of timing, N requests of that
    // row and exit, for a count of instructions (`perf stat -e instructions:u`, every thread:
    // the export task's work included) that a shared machine's noise does not move.
    if let Ok(spec) = std::env::var("FERROLITE_BENCH_COUNT") {
        let (row, times) = spec.split_once(':').expect("FERROLITE_BENCH_COUNT=row:N");
        let times: u64 = times.parse().expect("a number of requests");
        let app = match row {
            "off" => &off,
            "built" => &built,
            "on" => &on,
            _ => panic!("row off, built or on"),
        };
        rt.block_on(async {
            for _ in 0..times {
                request(app).await;
            }
        });
        otel.force_flush().expect("flush");
        eprintln!("spans dropped by the exporter: {}", otel.dropped());
        otel.shutdown().expect("shutdown");
        return;
    }
    let mut group = c.benchmark_group("otel");
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("gateway_10_deployments_traces_off", |b| {
        b.to_async(&rt).iter(|| request(&off))
    });
    group.bench_function("gateway_10_deployments_traces_built", |b| {
        b.to_async(&rt).iter(|| request(&built))
    });
    group.bench_function("gateway_10_deployments_traces_on", |b| {
        b.to_async(&rt).iter(|| request(&on))
    });
    group.finish();
    // Spans the collector did not keep up with are dropped, not exported: say how many.
    eprintln!("spans dropped by the exporter: {}", otel.dropped());
    otel.shutdown().expect("shutdown");
}

criterion_group!(benches, otel);
criterion_main!(benches);
