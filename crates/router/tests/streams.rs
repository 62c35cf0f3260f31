//! Streamed calls (LiteLLM's `stream_timeout` and mid-stream fallbacks): time to first token under
//! `stream_timeout`, retries and fallbacks before the first chunk, the documented policy after it,
//! usage recorded when the stream ends, and nothing held once a stream is dropped. On paused time.
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
use ferrolite_budgets::{BudgetConfig, BudgetsConfig};
use ferrolite_router::{
    Backend, BackendFuture, BackendRequest, BackendResponse, Request, Router, RouterError,
    RouterSettings,
};
use ferrolite_types::{Deployment, DeploymentId, ErrorClass, Usage};
use futures_util::StreamExt;

fn streamed() -> Request {
    Request::new(
        "g",
        serde_json::json!({"stream": true, "messages": [{"role": "user", "content": "hi"}]}),
    )
}

#[tokio::test(start_paused = true)]
async fn a_stream_passes_chunks_in_order_and_records_usage_and_cost_when_it_ends() {
    let d = Deployment {
        input_cost_per_token: Some(0.001),
        output_cost_per_token: Some(0.002),
        ..dep("g", "1")
    };
    let s = setup(vec![d], settings()).await;
    s.script.on(
        "1",
        [Step::Stream(vec![
            Piece::Wait(Duration::from_millis(300)),
            Piece::Chunk,
            Piece::Wait(Duration::from_millis(50)),
            Piece::Chunk,
            Piece::Usage(Usage::new(100, 20)),
        ])],
    );
    let id = DeploymentId::new("1");
    let mut stream = s.router.stream(streamed()).await.unwrap();
    assert_eq!(stream.deployment_id, id);
    assert_eq!(stream.model_group, "g");
    assert_eq!(stream.time_to_first_token, Duration::from_millis(300));
    assert_eq!(s.router.in_flight(&id), Some(1), "held while it streams");
    let mut bodies = Vec::new();
    while let Some(chunk) = stream.next().await {
        bodies.push(chunk.unwrap().body.to_value().unwrap());
    }
    assert_eq!(
        bodies,
        [
            serde_json::json!({"n": 1}),
            serde_json::json!({"n": 2}),
            serde_json::json!({"usage": true})
        ]
    );
    assert_eq!(stream.usage(), Some(Usage::new(100, 20)));
    let cost = stream.response_cost().unwrap();
    assert!(
        (cost - (100.0 * 0.001 + 20.0 * 0.002)).abs() < 1e-9,
        "{cost}"
    );
    assert_eq!(s.router.in_flight(&id), Some(0));
    let (requests, tokens) = s.router.usage(&id).unwrap();
    assert_eq!(requests, 1.0);
    assert_eq!(
        tokens, 120.0,
        "the estimate is settled to the reported usage"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_fails_before_its_first_chunk_is_retried_on_a_sibling() {
    let s = setup(vec![dep("g", "1"), dep("g", "2")], retries(2)).await;
    s.script.on(
        "1",
        [Step::Stream(vec![Piece::Fail(ErrorClass::ServerError {
            status: 500,
        })])],
    );
    s.script.on("2", [Step::Stream(vec![Piece::Chunk])]);
    s.script.next([status(500)]);
    let mut stream = s.router.stream(streamed()).await.unwrap();
    assert_eq!(stream.attempted_retries, s.script.called().len() as u32 - 1);
    assert_eq!(
        stream
            .next()
            .await
            .unwrap()
            .unwrap()
            .body
            .to_value()
            .unwrap()["n"],
        1
    );
    assert!(stream.next().await.is_none());
    assert_eq!(s.script.called().last().map(String::as_str), Some("2"));
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_fails_before_its_first_chunk_falls_back_like_a_call() {
    let mut settings = retries(0);
    settings.fallbacks = [("g".to_string(), vec!["h".to_string()])].into();
    let s = setup(vec![dep("g", "1"), dep("h", "2")], settings).await;
    s.script.on(
        "1",
        [Step::Stream(vec![Piece::Fail(ErrorClass::Connection)])],
    );
    let stream = s.router.stream(streamed()).await.unwrap();
    assert_eq!(stream.model_group, "h");
    assert_eq!(stream.attempted_fallbacks, 1);
    assert_eq!(s.script.called(), ["1", "2"]);
}

#[tokio::test(start_paused = true)]
async fn the_stream_timeout_bounds_the_first_chunk_only() {
    let d = Deployment {
        stream_timeout: Some(1.0),
        ..dep("g", "1")
    };
    let s = setup(vec![d, dep("g", "2")], retries(1)).await;
    // Deployment 1 takes 2 s to its first chunk: timed out after 1 s, retried on 2 at once.
    s.script.on(
        "1",
        [Step::Stream(vec![
            Piece::Wait(Duration::from_secs(2)),
            Piece::Chunk,
        ])],
    );
    // Deployment 2 answers at once, then pauses 5 s between chunks: a slow stream, not a
    // timeout.
    s.script.on(
        "2",
        [Step::Stream(vec![
            Piece::Chunk,
            Piece::Wait(Duration::from_secs(5)),
            Piece::Chunk,
        ])],
    );
    let started = tokio::time::Instant::now();
    let mut stream = s.router.stream(streamed()).await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_secs(1));
    assert_eq!(stream.deployment_id, DeploymentId::new("2"));
    let chunks: Vec<_> = (&mut stream).collect().await;
    assert_eq!(chunks.len(), 2);
    assert!(chunks.iter().all(Result::is_ok));
    assert_eq!(started.elapsed(), Duration::from_secs(6));
}

/// The documented policy: once the caller has content, a failure ends the stream with the
/// error; nothing is retried or replayed, and the failure counts towards the cooldown.
#[tokio::test(start_paused = true)]
async fn a_failure_after_the_first_chunk_ends_the_stream_and_cools_the_deployment_down() {
    let s = setup(vec![dep("g", "1"), dep("g", "2")], retries(3)).await;
    let rate_limited = ErrorClass::RateLimited { retry_after: None };
    s.script.next([Step::Stream(vec![
        Piece::Chunk,
        Piece::Fail(rate_limited.clone()),
    ])]);
    let mut stream = s.router.stream(streamed()).await.unwrap();
    let first = stream.deployment_id.clone();
    assert!(stream.next().await.unwrap().is_ok());
    let err = stream.next().await.unwrap().unwrap_err();
    match &err {
        RouterError::Backend {
            class,
            deployment,
            tried,
            ..
        } => {
            assert_eq!(class, &rate_limited);
            assert_eq!(deployment, &first);
            assert_eq!(tried.len(), 1);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        stream.next().await.is_none(),
        "the stream ends after its error"
    );
    assert_eq!(s.script.called().len(), 1, "nothing retried");
    assert_eq!(s.router.in_flight(&first), Some(0));
    assert!(
        s.cooled(first.as_str()),
        "a 429 in a group with siblings cools down"
    );
    assert_eq!(stream.usage(), None, "no clean end, no usage");
}

#[tokio::test(start_paused = true)]
async fn a_dropped_stream_cancels_the_upstream_and_gives_back_its_slot_and_in_flight_count() {
    let d = Deployment {
        max_parallel_requests: Some(1),
        ..dep("g", "1")
    };
    let s = setup(vec![d], retries(0)).await;
    s.script
        .on("1", [Step::Stream(vec![Piece::Chunk, Piece::Hang])]);
    let id = DeploymentId::new("1");
    let mut stream = s.router.stream(streamed()).await.unwrap();
    assert!(stream.next().await.unwrap().is_ok());
    assert_eq!(s.router.in_flight(&id), Some(1));
    assert_eq!(s.script.running("1"), 1);
    let err = s.router.stream(streamed()).await.unwrap_err();
    assert!(err.to_string().contains("max_parallel_requests"), "{err}");
    drop(stream);
    assert_eq!(s.script.running("1"), 0, "the upstream stream is dropped");
    assert_eq!(s.router.in_flight(&id), Some(0));
    let again = s.router.stream(streamed()).await.unwrap();
    assert_eq!(again.deployment_id, id, "the slot is free again");
}

#[tokio::test(start_paused = true)]
async fn a_dropped_stream_is_charged_for_its_input_and_the_text_streamed_so_far() {
    let budgets = BudgetsConfig {
        providers: [("openai".to_string(), BudgetConfig::new(1.0, "1d"))].into(),
        ..BudgetsConfig::default()
    };
    let d = Deployment {
        input_cost_per_token: Some(0.001),
        output_cost_per_token: Some(0.001),
        ..dep("g", "1")
    };
    let s = setup(
        vec![d],
        RouterSettings {
            budgets,
            ..settings()
        },
    )
    .await;
    s.script.on(
        "1",
        [Step::Stream(vec![
            Piece::Text("Paris is"),
            Piece::Text(" the capital"),
            Piece::Hang,
        ])],
    );
    let mut request = streamed();
    request.max_tokens = Some(100);
    let mut stream = s.router.stream(request).await.unwrap();
    assert!(stream.next().await.unwrap().is_ok());
    assert!(stream.next().await.unwrap().is_ok());
    let held = s.router.budget_status().await.unwrap()[0].spend;
    assert!(held > 0.0, "the reservation counts while the stream runs");
    drop(stream);
    let after = s.router.budget_status().await.unwrap()[0].spend;
    // The reservation was the input and 100 output tokens at $0.001; the provider generated
    // 20 characters (5 tokens) before the client went away.
    let expected = held - 0.1 + 5.0 * 0.001;
    assert!(
        (after - expected).abs() < 1e-9,
        "charged {after}, expected {expected}"
    );
}

#[tokio::test]
async fn a_plain_call_that_asks_for_a_stream_is_refused_before_any_backend_call() {
    let s = setup(vec![dep("g", "1")], settings()).await;
    let err = s.router.call(streamed()).await.unwrap_err();
    assert!(
        matches!(
            err,
            RouterError::InvalidRequest {
                field: "stream",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(s.script.called().is_empty());
}

/// A backend that only implements `call`.
struct Whole;

impl Backend for Whole {
    fn call<'a>(&'a self, _: &'a Deployment, request: &'a BackendRequest) -> BackendFuture<'a> {
        Box::pin(async move {
            Ok(BackendResponse {
                protocol: Default::default(),
                body: serde_json::json!({"model": request.body["model"], "whole": true}).into(),
                usage: Some(Usage::new(3, 4)),
                time_to_first_token: None,
            })
        })
    }
}

#[tokio::test]
async fn a_backend_without_streaming_streams_its_whole_answer_as_one_chunk() {
    let cache = ferrolite_cache::DualCache::connect(ferrolite_cache::CacheConfig::default())
        .await
        .unwrap();
    let router = Router::new(
        vec![Deployment::new("g", "openai/gpt-4o")],
        settings(),
        cache,
        Arc::new(Whole),
    )
    .unwrap();
    let mut stream = router.stream(streamed()).await.unwrap();
    let chunk = stream.next().await.unwrap().unwrap();
    let body = chunk.body.to_value().unwrap();
    assert_eq!(body["whole"], true);
    assert_eq!(body["model"], "openai/gpt-4o");
    assert!(stream.next().await.is_none());
    assert_eq!(stream.usage(), Some(Usage::new(3, 4)));
}
