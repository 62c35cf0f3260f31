//! An answer is the upstream's bytes: the usage read from them equals what a tree reads, and
//! the response cache (memory and Redis) answers a hit with exactly the bytes it stored, for
//! whole answers and streamed chunks.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::sync::Arc;
use std::time::Duration;

use ferrolite_cache::testing::{config, redis_url, unique_prefix};
use ferrolite_cache::{CacheConfig, DualCache};
use ferrolite_router::{
    Backend, BackendChunk, BackendFuture, BackendRequest, BackendResponse, BackendStream,
    BackendStreamFuture, Body, Request, ResponseCacheSettings, Router, RouterSettings,
};
use ferrolite_types::{Deployment, Usage};
use futures_util::StreamExt;
use proptest::prelude::*;

/// An answer no serialiser would write: keys out of order, `model` in the middle, whitespace,
/// unicode escapes, a number beyond `f64` and one beyond `i64`.
const ANSWER: &str = "{ \"z_last\" : 1e400,\n  \"id\":\"chatcmpl-\\u00e9\\ud83d\\ude00\", \"model\": \"gpt-4o-2024-08-06\",\"big\":12345678901234567890,\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"caf\\u00e9 \\\"q\\\"\"},\"finish_reason\":\"stop\"}], \"usage\": {\"total_tokens\": 9, \"prompt_tokens\": 5, \"completion_tokens\": 4, \"prompt_tokens_details\": {\"cached_tokens\": 1.0e2}} }";

/// Chunks of a stream in the same spirit.
const CHUNKS: [&str; 2] = [
    "{\"model\":\"up\",\"x\":1E+2,\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\\u0048i\"}}]}",
    "{\"choices\":[],   \"usage\":{\"completion_tokens\":2,\"prompt_tokens\":3}, \"model\":\"up\"}",
];

/// Answers [`ANSWER`], or streams [`CHUNKS`]; counts its calls.
#[derive(Default)]
struct Odd {
    calls: std::sync::atomic::AtomicUsize,
}

impl Backend for Odd {
    fn call<'a>(&'a self, _: &'a Deployment, _: &'a BackendRequest) -> BackendFuture<'a> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let body = Body::parse(ANSWER).unwrap();
        Box::pin(async move {
            Ok(BackendResponse {
                protocol: Default::default(),
                usage: body.usage(),
                body,
                time_to_first_token: None,
            })
        })
    }

    fn stream<'a>(&'a self, _: &'a Deployment, _: &'a BackendRequest) -> BackendStreamFuture<'a> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let chunks: Vec<_> = CHUNKS
            .iter()
            .map(|text| {
                let body = Body::parse(*text).unwrap();
                Ok(BackendChunk {
                    protocol: Default::default(),
                    usage: body.usage(),
                    body,
                })
            })
            .collect();
        Box::pin(async move { Ok(Box::pin(futures_util::stream::iter(chunks)) as BackendStream) })
    }
}

fn cached(redis: bool) -> RouterSettings {
    RouterSettings {
        response_cache: Some(ResponseCacheSettings {
            ttl: Duration::from_secs(600),
            redis,
            ..ResponseCacheSettings::default()
        }),
        ..RouterSettings::default()
    }
}

async fn router(cache: CacheConfig, redis: bool) -> (Router, Arc<Odd>, DualCache) {
    let cache = DualCache::connect(cache).await.unwrap();
    let backend = Arc::new(Odd::default());
    let router = Router::new(
        vec![Deployment::new("g", "openai/gpt-4o")],
        cached(redis),
        cache.clone(),
        backend.clone(),
    )
    .unwrap();
    (router, backend, cache)
}

fn ask(prompt: &str) -> Request {
    Request::new(
        "g",
        serde_json::json!({"messages": [{"role": "user", "content": prompt}]}),
    )
}

fn ask_stream(prompt: &str) -> Request {
    let mut request = ask(prompt);
    request.stream = true;
    request
}

async fn chunks(router: &Router, request: Request) -> (bool, Vec<Vec<u8>>) {
    let mut stream = router.stream(request).await.unwrap();
    let hit = stream.cache_hit;
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.push(chunk.unwrap().body.as_bytes().to_vec());
    }
    (hit, out)
}

#[tokio::test]
async fn a_whole_answer_and_its_cache_hit_are_the_upstreams_bytes() {
    let (router, backend, _cache) = router(CacheConfig::default(), false).await;
    let first = router.call(ask("hello")).await.unwrap();
    assert_eq!(
        first.body.as_str(),
        ANSWER,
        "the router passes the bytes as they came"
    );
    assert_eq!(first.usage.map(|u| u.total_tokens), Some(9));
    let second = router.call(ask("hello")).await.unwrap();
    assert!(second.cache_hit);
    assert_eq!(second.body.as_str(), ANSWER, "a hit answers the same bytes");
    assert_eq!(backend.calls.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_streamed_answer_replayed_from_the_cache_is_the_same_bytes() {
    let (router, backend, _cache) = router(CacheConfig::default(), false).await;
    let (hit, first) = chunks(&router, ask_stream("s")).await;
    assert!(!hit);
    assert_eq!(first, CHUNKS.map(|c| c.as_bytes().to_vec()));
    let (hit, replayed) = chunks(&router, ask_stream("s")).await;
    assert!(hit);
    assert_eq!(replayed, first);
    assert_eq!(backend.calls.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_shared_through_redis_is_the_same_bytes() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("answer-bytes");
    let (a, _, cache_a) = router(config(&url, &prefix), true).await;
    let (b, backend_b, cache_b) = router(config(&url, &prefix), true).await;
    let first = a.call(ask("shared")).await.unwrap();
    let second = b.call(ask("shared")).await.unwrap();
    assert!(second.cache_hit, "written by one router, read by the other");
    assert_eq!(second.body.as_str(), ANSWER);
    assert_eq!(second.body, first.body);
    assert_eq!(second.usage, first.usage);
    let (_, streamed) = chunks(&a, ask_stream("shared stream")).await;
    let (hit, replayed) = chunks(&b, ask_stream("shared stream")).await;
    assert!(hit);
    assert_eq!(replayed, streamed);
    assert_eq!(backend_b.calls.load(std::sync::atomic::Ordering::SeqCst), 0);
    cache_a.shutdown().await.unwrap();
    cache_b.shutdown().await.unwrap();
}

/// The usage as it was read from a tree before answers passed as bytes.
fn usage_from_tree(body: &serde_json::Value) -> Option<Usage> {
    let usage = body.get("usage")?;
    if usage.is_null() {
        return None;
    }
    let count = |name: &str| usage.get(name).and_then(|v| v.as_u64());
    let mut out = Usage::new(
        count("prompt_tokens").unwrap_or(0),
        count("completion_tokens").unwrap_or(0),
    );
    if let Some(total) = count("total_tokens") {
        out.total_tokens = total;
    }
    Some(out)
}

/// A JSON text for a count: mostly integers, some of every other shape a provider might send.
fn count_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => any::<u64>().prop_map(|n| n.to_string()),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => (0u32..1000).prop_map(|n| format!("{n}.0")),
        1 => (0u32..1000).prop_map(|n| format!("{n}e1")),
        1 => Just("-0".to_string()),
        1 => Just("18446744073709551616".to_string()),
        1 => Just("null".to_string()),
        1 => Just("\"12\"".to_string()),
        1 => Just("[1]".to_string()),
        1 => Just("{\"n\":1}".to_string()),
        1 => Just("true".to_string()),
    ]
}

/// A `usage` field's JSON text: an object of some of the counts (keys repeated, in any order,
/// one escaped, with extra fields), or null, or not an object.
fn usage_text() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("prompt_tokens"),
        Just("completion_tokens"),
        Just("total_tokens"),
        Just("prompt_\\u0074okens"),
        Just("prompt_tokens_details"),
        Just("reasoning_tokens"),
    ];
    let object = proptest::collection::vec((key, count_text()), 0..6).prop_map(|fields| {
        let fields: Vec<String> = fields
            .into_iter()
            .map(|(k, v)| format!("\"{k}\": {v}"))
            .collect();
        format!("{{{}}}", fields.join(" ,"))
    });
    prop_oneof![
        8 => object,
        1 => Just("null".to_string()),
        1 => Just("[3, 4]".to_string()),
        1 => Just("7".to_string()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn usage_read_from_the_bytes_is_what_a_tree_reads(
        usage in proptest::option::of(usage_text()),
        model_first in any::<bool>(),
    ) {
        let text = match (&usage, model_first) {
            (Some(usage), true) => format!("{{\"model\":\"m\",\"usage\":{usage},\"id\":\"x\"}}"),
            (Some(usage), false) => format!("{{\"usage\" : {usage} , \"model\":\"m\"}}"),
            (None, _) => "{\"model\":\"m\"}".to_string(),
        };
        let tree: serde_json::Value = serde_json::from_str(&text).unwrap();
        let body = Body::parse(text.clone().into_bytes()).unwrap();
        prop_assert_eq!(body.usage(), usage_from_tree(&tree), "{}", text);
    }
}
