//! The response cache (`cache_responses`): identical requests answered without a backend call,
//! keys that ignore order and formatting, the request's `cache` controls, TTL and `s-maxage` on
//! paused time, the byte bound, single flight, streamed answers stored and replayed, and two
//! routers sharing entries through a real Redis (a corrupt entry there is a miss).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use ferrolite_cache::DualCache;
use ferrolite_cache::testing::{config, redis_url, unique_prefix};
use ferrolite_router::{Request, ResponseCacheSettings, Router, RouterError, RouterSettings};
use ferrolite_types::{DeploymentId, ErrorClass, Usage};
use futures_util::StreamExt;
use serde_json::json;

fn cached(ttl_secs: u64) -> RouterSettings {
    RouterSettings {
        num_retries: 0,
        response_cache: Some(ResponseCacheSettings {
            ttl: Duration::from_secs(ttl_secs),
            ..ResponseCacheSettings::default()
        }),
        ..settings()
    }
}

fn ask(body: serde_json::Value) -> Request {
    Request::new("g", body)
}

fn hello() -> serde_json::Value {
    json!({"messages": [{"role": "user", "content": "hello"}], "temperature": 0.2})
}

fn with_cache(controls: serde_json::Value) -> serde_json::Value {
    let mut body = hello();
    body["cache"] = controls;
    body
}

#[tokio::test(start_paused = true)]
async fn an_identical_request_is_answered_from_the_cache_without_a_call_rpm_or_cost() {
    let d = ferrolite_types::Deployment {
        input_cost_per_token: Some(0.001),
        ..dep("g", "1")
    };
    let s = setup(vec![d], cached(3600)).await;
    let first = s.router.call(ask(hello())).await.unwrap();
    assert!(!first.cache_hit);
    assert!(first.response_cost.unwrap() > 0.0);
    let key = first.cache_key.clone().unwrap();
    assert!(key.starts_with("response:") && key.len() == 9 + 64, "{key}");
    let second = s.router.call(ask(hello())).await.unwrap();
    assert!(second.cache_hit);
    assert_eq!(second.cache_key.as_deref(), Some(key.as_str()));
    assert_eq!(second.body, first.body);
    assert_eq!(second.usage, first.usage);
    assert_eq!(second.deployment_id, DeploymentId::new("1"));
    assert_eq!(second.response_cost, Some(0.0), "a hit costs nothing");
    assert_eq!(
        s.script.called(),
        ["1"],
        "one backend call for two requests"
    );
    let (rpm, _) = s.router.usage(&DeploymentId::new("1")).unwrap();
    assert_eq!(rpm, 1.0, "a hit counts no rpm");
}

#[tokio::test(start_paused = true)]
async fn keys_ignore_key_order_whitespace_and_non_answer_fields_and_differ_on_temperature() {
    let s = setup(vec![dep("g", "1")], cached(3600)).await;
    let a: serde_json::Value = serde_json::from_str(
        r#"{"model": "g", "temperature": 0.2, "user": "ann", "messages": [{"role": "user", "content": "hello"}]}"#,
    )
    .unwrap();
    let b: serde_json::Value = serde_json::from_str(
        "{\"messages\":[{\"content\":\"hello\",\"role\":\"user\"}],\n  \"metadata\": {\"trace\": 1},\"user\":\"bob\",\"temperature\":0.2}",
    )
    .unwrap();
    let first = s.router.call(ask(a)).await.unwrap();
    let second = s.router.call(ask(b)).await.unwrap();
    assert!(second.cache_hit);
    assert_eq!(first.cache_key, second.cache_key);
    let mut warmer = hello();
    warmer["temperature"] = json!(0.9);
    let third = s.router.call(ask(warmer)).await.unwrap();
    assert!(!third.cache_hit);
    assert_ne!(third.cache_key, first.cache_key);
    let mut seeded = hello();
    seeded["seed"] = json!(1);
    assert!(!s.router.call(ask(seeded)).await.unwrap().cache_hit);
    assert_eq!(s.script.called().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn no_cache_skips_the_read_no_store_skips_the_write_and_a_namespace_is_its_own_space() {
    let s = setup(vec![dep("g", "1")], cached(3600)).await;
    // no-store: answered by the backend, nothing kept.
    let kept = s
        .router
        .call(ask(with_cache(json!({"no-store": true}))))
        .await
        .unwrap();
    assert!(!kept.cache_hit);
    assert!(!s.router.call(ask(hello())).await.unwrap().cache_hit);
    assert_eq!(s.script.called().len(), 2, "no-store kept nothing");
    // The plain call above stored; no-cache does not read it, but stores its fresh answer.
    let fresh = s
        .router
        .call(ask(with_cache(json!({"no-cache": true}))))
        .await
        .unwrap();
    assert!(!fresh.cache_hit);
    assert_eq!(s.script.called().len(), 3);
    assert!(s.router.call(ask(hello())).await.unwrap().cache_hit);
    // A namespace neither reads nor is read by the default space.
    let spaced = ask(with_cache(json!({"namespace": "team-a"})));
    let first = s.router.call(spaced.clone()).await.unwrap();
    assert!(!first.cache_hit);
    assert_ne!(first.cache_key, fresh.cache_key);
    assert!(s.router.call(spaced).await.unwrap().cache_hit);
    assert_eq!(s.script.called().len(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_malformed_cache_object_is_a_typed_error_naming_it() {
    let s = setup(vec![dep("g", "1")], cached(3600)).await;
    for bad in [
        json!("no-cache"),
        json!({"ttl": -1}),
        json!({"s-maxage": "soon"}),
    ] {
        let error = s
            .router
            .call(ask(with_cache(bad.clone())))
            .await
            .unwrap_err();
        match error {
            RouterError::InvalidRequest { field, value, .. } => {
                assert_eq!(field, "cache");
                assert_eq!(value, bad.to_string());
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(s.script.called().is_empty());
}

#[tokio::test(start_paused = true)]
async fn entries_expire_after_their_ttl_and_s_maxage_refuses_older_ones() {
    let s = setup(vec![dep("g", "1")], cached(60)).await;
    s.router.call(ask(hello())).await.unwrap();
    tokio::time::advance(Duration::from_secs(30)).await;
    assert!(
        s.router.call(ask(hello())).await.unwrap().cache_hit,
        "30 s old, TTL 60 s"
    );
    let younger = || ask(with_cache(json!({"s-maxage": 10})));
    assert!(
        !s.router.call(younger()).await.unwrap().cache_hit,
        "30 s is older than s-maxage 10"
    );
    assert_eq!(
        s.script.called().len(),
        2,
        "and its fresh answer replaced the entry"
    );
    tokio::time::advance(Duration::from_secs(5)).await;
    assert!(s.router.call(younger()).await.unwrap().cache_hit, "5 s old");
    tokio::time::advance(Duration::from_secs(61)).await;
    assert!(
        !s.router.call(ask(hello())).await.unwrap().cache_hit,
        "past the TTL"
    );
    // A request's own ttl.
    let short = || ask(with_cache(json!({"ttl": 5, "namespace": "short"})));
    s.router.call(short()).await.unwrap();
    tokio::time::advance(Duration::from_secs(4)).await;
    assert!(s.router.call(short()).await.unwrap().cache_hit);
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(
        !s.router.call(short()).await.unwrap().cache_hit,
        "its own 5 s TTL"
    );
    assert_eq!(s.script.called().len(), 5);
}

#[tokio::test(start_paused = true)]
async fn a_hundred_concurrent_identical_requests_make_one_backend_call() {
    let s = setup(vec![dep("g", "1")], cached(3600)).await;
    s.script.on("1", [Step::Delay(Duration::from_millis(200))]);
    let calls = (0..100).map(|_| s.router.call(ask(hello())));
    let answers = futures_util::future::join_all(calls).await;
    assert_eq!(s.script.called(), ["1"], "one call for the burst");
    let answers: Vec<_> = answers.into_iter().map(Result::unwrap).collect();
    assert_eq!(answers.iter().filter(|a| !a.cache_hit).count(), 1);
    assert!(answers.iter().all(|a| a.body == answers[0].body));
    assert_eq!(s.router.usage(&DeploymentId::new("1")).unwrap().0, 1.0);
}

#[tokio::test(start_paused = true)]
async fn a_failed_call_is_shared_by_its_waiters_and_stores_nothing() {
    let s = setup(vec![dep("g", "1")], cached(3600)).await;
    s.script.on(
        "1",
        [Step::FailAfter(
            Duration::from_millis(100),
            ErrorClass::from_status(500, None),
        )],
    );
    let calls = (0..10).map(|_| s.router.call(ask(hello())));
    let answers = futures_util::future::join_all(calls).await;
    assert!(
        answers
            .iter()
            .all(|a| matches!(a, Err(RouterError::Backend { .. }))),
        "{answers:?}"
    );
    assert_eq!(s.script.called().len(), 1, "the ten shared one failed call");
    let retry = s.router.call(ask(hello())).await.unwrap();
    assert!(!retry.cache_hit, "a failure was never stored");
    assert_eq!(s.script.called().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_gives_up_at_its_own_deadline_and_a_cancelled_leader_hands_over() {
    let s = setup(vec![dep("g", "1")], cached(3600)).await;
    s.script.on("1", [Step::Delay(Duration::from_secs(10))]);
    let router = s.router.clone();
    let leader = tokio::spawn(async move { router.call(ask(hello())).await });
    tokio::task::yield_now().await;
    let mut impatient = ask(hello());
    impatient.deadline = Some(Duration::from_secs(1));
    let started = tokio::time::Instant::now();
    let error = s.router.call(impatient).await.unwrap_err();
    assert!(
        matches!(error, RouterError::DeadlineExceeded { .. }),
        "{error:?}"
    );
    assert_eq!(started.elapsed(), Duration::from_secs(1));
    // Cancel the leader: the next identical request leads a new flight and is answered.
    leader.abort();
    let _ = leader.await;
    let answer = s.router.call(ask(hello())).await.unwrap();
    assert!(!answer.cache_hit);
    assert_eq!(s.script.called().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_memory_tier_stays_within_its_byte_bound() {
    let settings = RouterSettings {
        response_cache: Some(ResponseCacheSettings {
            memory_bytes: 8_000,
            redis: false,
            ..ResponseCacheSettings::default()
        }),
        ..cached(3600)
    };
    let s = setup(vec![dep("g", "1")], settings).await;
    let answer = json!({"choices": [{"message": {"content": "x".repeat(1_000)}}]});
    for i in 0..40 {
        s.script.on("1", [Step::Body(answer.clone())]);
        let mut body = hello();
        body["messages"][0]["content"] = json!(format!("question {i}"));
        s.router.call(ask(body)).await.unwrap();
    }
    let (entries, bytes) = s.router.response_cache_usage().unwrap();
    assert!(bytes <= 8_000, "{bytes} bytes kept");
    assert!(
        (1..=8).contains(&entries),
        "{entries} entries of ~1.1 KB each"
    );
}

fn streamed(body: serde_json::Value) -> Request {
    let mut request = ask(body);
    request.body["stream"] = json!(true);
    request
}

async fn collect(router: &Router, request: Request) -> (bool, Vec<serde_json::Value>) {
    let mut stream = router.stream(request).await.unwrap();
    let hit = stream.cache_hit;
    let mut bodies = Vec::new();
    while let Some(chunk) = stream.next().await {
        bodies.push(chunk.unwrap().body.to_value().unwrap());
    }
    (hit, bodies)
}

#[tokio::test(start_paused = true)]
async fn a_completed_stream_is_stored_and_replayed_chunk_for_chunk() {
    let s = setup(vec![dep("g", "1")], cached(3600)).await;
    s.script.on(
        "1",
        [Step::Stream(vec![
            Piece::Chunk,
            Piece::Wait(Duration::from_millis(50)),
            Piece::Chunk,
            Piece::Usage(Usage::new(7, 3)),
        ])],
    );
    let (hit, first) = collect(&s.router, streamed(hello())).await;
    assert!(!hit);
    let (hit, again) = collect(&s.router, streamed(hello())).await;
    assert!(hit);
    assert_eq!(again, first);
    let mut replay = s.router.stream(streamed(hello())).await.unwrap();
    while replay.next().await.is_some() {}
    assert_eq!(replay.usage(), Some(Usage::new(7, 3)));
    assert_eq!(replay.response_cost(), Some(0.0));
    assert_eq!(s.script.called(), ["1"]);
}

#[tokio::test(start_paused = true)]
async fn a_broken_or_abandoned_stream_is_never_stored() {
    let s = setup(vec![dep("g", "1")], cached(3600)).await;
    s.script.on(
        "1",
        [
            Step::Stream(vec![
                Piece::Chunk,
                Piece::Fail(ErrorClass::from_status(500, None)),
            ]),
            Step::Stream(vec![
                Piece::Chunk,
                Piece::Wait(Duration::from_secs(1)),
                Piece::Chunk,
            ]),
        ],
    );
    let mut broken = s.router.stream(streamed(hello())).await.unwrap();
    assert!(broken.next().await.unwrap().is_ok());
    assert!(broken.next().await.unwrap().is_err());
    assert!(broken.next().await.is_none());
    let mut abandoned = s.router.stream(streamed(hello())).await.unwrap();
    assert!(!abandoned.cache_hit, "the broken stream left nothing");
    assert!(abandoned.next().await.unwrap().is_ok());
    drop(abandoned);
    let (hit, _) = collect(&s.router, streamed(hello())).await;
    assert!(!hit, "the abandoned stream left nothing");
    assert_eq!(s.script.called().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_whole_answer_replays_as_one_chat_chunk_for_a_streamed_request() {
    let s = setup(vec![dep("g", "1")], cached(3600)).await;
    let whole = json!({
        "id": "c1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "Paris."}}],
    });
    s.script.on("1", [Step::Body(whole)]);
    s.router.call(ask(hello())).await.unwrap();
    let (hit, chunks) = collect(&s.router, streamed(hello())).await;
    assert!(hit);
    assert_eq!(
        chunks,
        [json!({
            "id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "delta": {"role": "assistant", "content": "Paris."}}],
        })]
    );
}

#[tokio::test(start_paused = true)]
async fn caching_groups_share_entries_and_other_groups_do_not() {
    let settings = RouterSettings {
        response_cache: Some(ResponseCacheSettings {
            caching_groups: vec![vec!["g".into(), "h".into()]],
            ..ResponseCacheSettings::default()
        }),
        ..cached(3600)
    };
    let s = setup(vec![dep("g", "1"), dep("h", "2"), dep("k", "3")], settings).await;
    s.router.call(ask(hello())).await.unwrap();
    let shared = s.router.call(Request::new("h", hello())).await.unwrap();
    assert!(shared.cache_hit);
    let other = s.router.call(Request::new("k", hello())).await.unwrap();
    assert!(!other.cache_hit);
    assert_eq!(s.script.called(), ["1", "3"]);
}

#[tokio::test(start_paused = true)]
async fn bad_response_cache_settings_are_typed_errors() {
    for (response_cache, field) in [
        (
            ResponseCacheSettings {
                ttl: Duration::ZERO,
                ..ResponseCacheSettings::default()
            },
            "response_cache.ttl",
        ),
        (
            ResponseCacheSettings {
                memory_bytes: 0,
                redis: false,
                ..ResponseCacheSettings::default()
            },
            "response_cache.memory_bytes",
        ),
        (
            ResponseCacheSettings {
                caching_groups: vec![vec!["g".into()], vec!["g".into(), "h".into()]],
                ..ResponseCacheSettings::default()
            },
            "response_cache.caching_groups[1]",
        ),
    ] {
        let settings = RouterSettings {
            response_cache: Some(response_cache),
            ..settings()
        };
        let cache = DualCache::connect(ferrolite_cache::CacheConfig::default())
            .await
            .unwrap();
        let error = Router::new(
            vec![dep("g", "1")],
            settings,
            cache,
            Arc::new(Script::default()),
        )
        .unwrap_err();
        match error {
            RouterError::InvalidSettings { field: f, .. } => assert_eq!(f, field),
            other => panic!("{other:?}"),
        }
    }
}

// ---- shared through Redis --------------------------------------------------------------

async fn redis_router(url: &str, prefix: &str) -> (Router, Arc<Script>, DualCache) {
    router_on(config(url, prefix)).await
}

/// A router with the response cache on a cache with `config`.
async fn router_on(config: ferrolite_cache::CacheConfig) -> (Router, Arc<Script>, DualCache) {
    let cache = DualCache::connect(config).await.unwrap();
    let script = Arc::new(Script::default());
    let router = Router::new(
        vec![dep("g", "1")],
        cached(3600),
        cache.clone(),
        script.clone(),
    )
    .unwrap();
    (router, script, cache)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_routers_share_answers_through_redis() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("response-cache-shared");
    let (a, script_a, cache_a) = redis_router(&url, &prefix).await;
    let (b, script_b, cache_b) = redis_router(&url, &prefix).await;
    let first = a.call(ask(hello())).await.unwrap();
    assert!(!first.cache_hit);
    let second = b.call(ask(hello())).await.unwrap();
    assert!(
        second.cache_hit,
        "written by one router, served by the other"
    );
    assert_eq!(second.body, first.body);
    assert_eq!(second.usage, first.usage);
    assert_eq!(script_a.called().len(), 1);
    assert!(script_b.called().is_empty());
    // A stream stored by one is replayed by the other.
    script_b.on("1", [Step::Stream(vec![Piece::Chunk, Piece::Chunk])]);
    let (hit, chunks) = collect(&b, streamed(json!({"prompt": "stream me"}))).await;
    assert!(!hit);
    let (hit, replayed) = collect(&a, streamed(json!({"prompt": "stream me"}))).await;
    assert!(hit);
    assert_eq!(replayed, chunks);
    cache_a.shutdown().await.unwrap();
    cache_b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_entry_in_redis_is_a_miss_never_an_answer() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("response-cache-corrupt");
    let (a, _, cache_a) = redis_router(&url, &prefix).await;
    let key = a.call(ask(hello())).await.unwrap().cache_key.unwrap();
    for garbage in [
        "not json",
        "{\"v\":1}",
        "{\"v\":99,\"stored_ms\":0}",
        "\u{0}\u{1}\u{2}",
    ] {
        assert!(
            cache_a
                .shared()
                .set(&key, garbage, Duration::from_secs(60))
                .await
                .unwrap()
        );
        // A router with an empty memory tier reads the corrupt entry from Redis.
        let (b, script_b, cache_b) = redis_router(&url, &prefix).await;
        let answer = b.call(ask(hello())).await.unwrap();
        assert!(!answer.cache_hit, "{garbage:?} was not served");
        assert_eq!(script_b.called().len(), 1);
        // Its fresh answer replaced the corrupt entry.
        let (c, script_c, cache_c) = redis_router(&url, &prefix).await;
        assert!(c.call(ask(hello())).await.unwrap().cache_hit);
        assert!(script_c.called().is_empty());
        cache_b.shutdown().await.unwrap();
        cache_c.shutdown().await.unwrap();
    }
    cache_a.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_falls_back_to_the_memory_tier_and_never_fails_a_call() {
    use ferrolite_cache::testing::{RedisProcess, fault_config, redis_binaries_installed};
    if !redis_binaries_installed(&["redis-server"]) {
        return;
    }
    let mut server = RedisProcess::start(false);
    let prefix = unique_prefix("response-cache-outage");
    let (router, script, cache) = router_on(fault_config(&server.url(), &prefix)).await;
    assert!(!router.call(ask(hello())).await.unwrap().cache_hit);
    server.kill();
    let started = std::time::Instant::now();
    // Stored before the outage: answered from memory.
    assert!(router.call(ask(hello())).await.unwrap().cache_hit);
    // A new request is routed and answered; its answer is kept in memory.
    let mut other = hello();
    other["temperature"] = json!(0.7);
    assert!(!router.call(ask(other.clone())).await.unwrap().cache_hit);
    assert!(router.call(ask(other)).await.unwrap().cache_hit);
    assert_eq!(script.called().len(), 2);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "no call waited on the dead Redis for long: {:?}",
        started.elapsed()
    );
    let _ = cache.shutdown().await;
}

// ---- keys over arbitrary bodies ------------------------------------------------------------

mod keys {
    use super::*;
    use proptest::prelude::*;

    fn json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(json!(null)),
            any::<bool>().prop_map(|b| json!(b)),
            any::<i64>().prop_map(|n| json!(n)),
            (-1e6f64..1e6).prop_map(|f| json!(f)),
            "[a-z é\"\\\\\n]{0,12}".prop_map(|s| json!(s)),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                prop::collection::btree_map("[a-z_]{1,6}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// `value` as JSON text with every object's keys in reverse order and extra whitespace.
    fn reordered(value: &serde_json::Value) -> String {
        match value {
            serde_json::Value::Object(object) => {
                let fields: Vec<String> = object
                    .iter()
                    .rev()
                    .map(|(k, v)| format!("\n  {} :  {}", json!(k), reordered(v)))
                    .collect();
                format!("{{{} }}", fields.join(" ,"))
            }
            serde_json::Value::Array(items) => {
                let items: Vec<String> = items.iter().map(reordered).collect();
                format!("[ {} ]", items.join(" , "))
            }
            scalar => scalar.to_string(),
        }
    }

    /// A copy of `value` with its first leaf changed (or, with no leaf, an element added).
    fn changed(value: &serde_json::Value) -> Option<serde_json::Value> {
        match value {
            serde_json::Value::Object(object) => {
                let mut object = object.clone();
                match object
                    .iter()
                    .find_map(|(k, v)| Some((k.clone(), changed(v)?)))
                {
                    Some((k, v)) => object.insert(k, v),
                    None => object.insert("added".into(), json!(0)),
                };
                Some(serde_json::Value::Object(object))
            }
            serde_json::Value::Array(items) => {
                let mut items = items.clone();
                match items
                    .iter()
                    .enumerate()
                    .find_map(|(i, v)| Some((i, changed(v)?)))
                {
                    Some((i, v)) => items[i] = v,
                    None => items.push(json!(0)),
                }
                Some(serde_json::Value::Array(items))
            }
            serde_json::Value::String(s) => Some(json!(format!("{s}!"))),
            serde_json::Value::Bool(b) => Some(json!(!b)),
            serde_json::Value::Null => Some(json!(0)),
            serde_json::Value::Number(n) => Some(match n.as_i64() {
                Some(i) => json!(i.wrapping_add(1)),
                None => json!(n.as_f64().unwrap_or(0.0) + 1.0),
            }),
        }
    }

    fn router() -> Router {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let cache = rt
            .block_on(DualCache::connect(ferrolite_cache::CacheConfig::default()))
            .unwrap();
        Router::new(
            vec![dep("g", "1")],
            cached(3600),
            cache,
            Arc::new(Script::default()),
        )
        .unwrap()
    }

    fn key(router: &Router, body: serde_json::Value) -> String {
        router
            .response_cache_key(&Request::new("g", body))
            .unwrap()
            .unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn equal_bodies_in_any_order_share_a_key_and_a_changed_value_does_not(
            messages in json(),
            extra in json(),
            user in "[a-z]{0,8}",
        ) {
            let router = router();
            // As a request's body arrives: parsed from text (so numbers are what the parser
            // makes of their digits, in both orders).
            let body: serde_json::Value =
                serde_json::from_str(&json!({"messages": messages, "extra": extra}).to_string())
                    .unwrap();
            let text = reordered(&body);
            let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(key(&router, parsed.clone()), key(&router, body.clone()), "{}", text);
            // Fields that do not change the answer do not change the key.
            let mut noted = parsed;
            noted["user"] = json!(user);
            noted["metadata"] = json!({"trace": user});
            noted["stream"] = json!(true);
            prop_assert_eq!(key(&router, noted), key(&router, body.clone()));
            // Any other change does.
            let other = changed(&body).unwrap();
            prop_assert_ne!(key(&router, other), key(&router, body));
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_default_namespace_applies_to_requests_that_name_none() {
    let spaced = RouterSettings {
        response_cache: Some(ResponseCacheSettings {
            namespace: Some("prod".into()),
            ..ResponseCacheSettings::default()
        }),
        ..cached(3600)
    };
    let with_default = setup(vec![dep("g", "1")], spaced).await;
    let without = setup(vec![dep("g", "1")], cached(3600)).await;
    let key = |s: &Setup, body: serde_json::Value| {
        s.router.response_cache_key(&ask(body)).unwrap().unwrap()
    };
    assert_ne!(key(&with_default, hello()), key(&without, hello()));
    assert_eq!(
        key(&with_default, hello()),
        key(&without, with_cache(json!({"namespace": "prod"})))
    );
    assert_eq!(
        key(&with_default, with_cache(json!({"namespace": "team"}))),
        key(&without, with_cache(json!({"namespace": "team"}))),
        "a request's own namespace wins"
    );
}

#[tokio::test(start_paused = true)]
async fn a_removed_group_is_not_answered_from_the_cache() {
    let s = setup(vec![dep("g", "1"), dep("h", "2")], cached(3600)).await;
    s.router.call(ask(hello())).await.unwrap();
    assert!(s.router.call(ask(hello())).await.unwrap().cache_hit);
    s.router.remove(&DeploymentId::new("1")).unwrap();
    let error = s.router.call(ask(hello())).await.unwrap_err();
    assert!(
        matches!(error, RouterError::UnknownModel { .. }),
        "{error:?}"
    );
    let error = s.router.stream(streamed(hello())).await.unwrap_err();
    assert!(
        matches!(error, RouterError::UnknownModel { .. }),
        "{error:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn use_cache_false_passes_the_cache_by_and_an_opt_in_cache_needs_use_cache_true() {
    let s = setup(vec![dep("g", "1")], cached(3600)).await;
    let by = || ask(with_cache(json!({"use-cache": false})));
    let answer = s.router.call(by()).await.unwrap();
    assert!(!answer.cache_hit && answer.cache_key.is_none());
    assert!(
        !s.router.call(by()).await.unwrap().cache_hit,
        "nothing was stored"
    );
    assert_eq!(s.script.called().len(), 2);

    let opt_in = RouterSettings {
        response_cache: Some(ResponseCacheSettings {
            opt_in: true,
            ..ResponseCacheSettings::default()
        }),
        ..cached(3600)
    };
    let s = setup(vec![dep("g", "1")], opt_in).await;
    s.router.call(ask(hello())).await.unwrap();
    assert!(
        !s.router.call(ask(hello())).await.unwrap().cache_hit,
        "not opted in"
    );
    let opted = || ask(with_cache(json!({"use-cache": true})));
    assert!(!s.router.call(opted()).await.unwrap().cache_hit);
    assert!(s.router.call(opted()).await.unwrap().cache_hit);
    let (hit, _) = collect(&s.router, streamed(with_cache(json!({"use-cache": true})))).await;
    assert!(hit, "a streamed request that opts in replays the answer");
    assert_eq!(s.script.called().len(), 3);
}
