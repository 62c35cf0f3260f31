//! The response cache's hit path through `Router::call`: a 2 KB chat body is canonicalised and
//! hashed into its key, then answered from the memory tier (target: <= 2 µs median), or from
//! Redis with the memory tier off (one `GET` round trip).
//!
//! Run: `cargo bench -p ferrolite-benches --bench response_cache`.

// A benchmark that cannot set up has nothing to measure: failing loudly is right here.
#![allow(clippy::expect_used, clippy::disallowed_methods)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use ferrolite_cache::{CacheConfig, DualCache, RedisConfig};
use ferrolite_router::{
    Backend, BackendFuture, BackendRequest, BackendResponse, Request, ResponseCacheSettings,
    Router, RouterSettings,
};
use ferrolite_types::{Deployment, Usage};

/// Answers at once with a ~600-byte chat completion.
struct Answer;

impl Backend for Answer {
    fn call<'a>(&'a self, _: &'a Deployment, _: &'a BackendRequest) -> BackendFuture<'a> {
        Box::pin(async {
            Ok(BackendResponse {
                protocol: Default::default(),
                body: serde_json::json!({
                    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1_767_225_600,
                    "model": "gpt-4o-2024-08-06",
                    "choices": [{"index": 0, "finish_reason": "stop", "message": {
                        "role": "assistant",
                        "content": "word ".repeat(80)}}],
                    "usage": {"prompt_tokens": 500, "completion_tokens": 80, "total_tokens": 580}
                })
                .into(),
                usage: Some(Usage::new(500, 80)),
                time_to_first_token: None,
            })
        })
    }
}

/// A chat body of about 2 KB: a system prompt, a user question, sampling parameters.
fn request() -> Request {
    let body = serde_json::json!({
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You are a careful assistant. ".repeat(40)},
            {"role": "user", "content": "Summarise the following text in one line: ".repeat(20)},
        ],
        "temperature": 0.2, "top_p": 1.0, "max_tokens": 256, "seed": 7,
        "user": "bench", "metadata": {"trace": "t-1"},
    });
    assert!(
        (1_800..2_400).contains(&body.to_string().len()),
        "a 2 KB body"
    );
    Request::new("gpt-4o", body)
}

fn router(rt: &tokio::runtime::Runtime, cache: DualCache, memory_bytes: u64) -> Router {
    let settings = RouterSettings {
        response_cache: Some(ResponseCacheSettings {
            memory_bytes,
            ..ResponseCacheSettings::default()
        }),
        ..RouterSettings::default()
    };
    let deployment = Deployment::new("gpt-4o", "openai/gpt-4o");
    let router = Router::new(vec![deployment], settings, cache, Arc::new(Answer)).expect("router");
    // The first call stores the answer (or finds it in Redis from an earlier run).
    rt.block_on(router.call(request())).expect("stored");
    router
}

/// Benchmarks `router.call` on fresh requests from `make` (built outside the timing), each a
/// cache hit.
fn hit(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    rt: &tokio::runtime::Runtime,
    router: &Router,
    make: impl Fn() -> Request,
) {
    group.bench_function(name, |b| {
        b.to_async(rt).iter_batched(
            &make,
            |request| async {
                let answer = router.call(request).await.expect("answered");
                assert!(answer.cache_hit);
                black_box(answer)
            },
            BatchSize::SmallInput,
        )
    });
}

fn hits(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut group = c.benchmark_group("response_cache");
    group.measurement_time(Duration::from_secs(5));
    let cache = rt
        .block_on(DualCache::connect(CacheConfig::default()))
        .expect("cache");
    let memory = router(&rt, cache, 64 << 20);
    hit(&mut group, "memory_hit_2kb_body", &rt, &memory, request);
    let small = || {
        Request::new(
            "gpt-4o",
            serde_json::json!({"messages": [{"role": "user", "content": "hi"}]}),
        )
    };
    rt.block_on(memory.call(small())).expect("stored");
    hit(&mut group, "memory_hit_tiny_body", &rt, &memory, small);
    let body = request();
    group.bench_function("key_of_2kb_body", |b| {
        b.iter(|| black_box(memory.response_cache_key(&body).expect("a key")))
    });
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let config = CacheConfig {
        redis: Some(RedisConfig::new(url.as_str()).with_prefix("ferrolite-bench-responses:")),
        ..CacheConfig::default()
    };
    match rt.block_on(DualCache::connect(config)) {
        Ok(cache) if !cache.stats().redis_down => {
            // No memory tier: every hit is read from Redis.
            let shared = router(&rt, cache, 0);
            hit(&mut group, "redis_hit_2kb_body", &rt, &shared, request);
        }
        _ => eprintln!("redis_hit_2kb_body: no Redis at {url}; skipped"),
    }
    group.finish();
}

criterion_group!(benches, hits);
criterion_main!(benches);
