//! The mock backend: fixed replies and errors (LiteLLM's `mock_response`), latency with
//! jitter, time to first token, error rates, and provider-side limits answering 429 with
//! Retry-After. On paused time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use ferrolite::mock::{MockBackend, MockResponse, MockSpec, parse_mock_response};
use ferrolite::router::{Backend, BackendRequest};
use ferrolite::types::{Deployment, ErrorClass};
use futures_util::StreamExt;
use tokio::time::Instant;

fn deployment() -> Deployment {
    Deployment {
        id: Some("d".into()),
        ..Deployment::new("g", "openai/gpt-4o")
    }
}

fn chat(stream: bool) -> BackendRequest {
    BackendRequest {
        trace: None,
        native: None,
        body: serde_json::json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hello there"}]}),
        stream,
        request_id: None,
        deployment_id: None,
        prepared: None,
    }
}

#[test]
fn mock_response_names_an_error_or_is_the_reply() {
    assert_eq!(
        parse_mock_response("litellm.RateLimitError"),
        MockResponse::Error(ErrorClass::RateLimited { retry_after: None })
    );
    assert_eq!(
        parse_mock_response("InternalServerError"),
        MockResponse::Error(ErrorClass::ServerError { status: 500 })
    );
    assert_eq!(
        parse_mock_response("Hello!"),
        MockResponse::Text("Hello!".into())
    );
}

#[tokio::test(start_paused = true)]
async fn a_reply_takes_its_latency_and_reports_usage() {
    let spec = MockSpec {
        latency: Duration::from_millis(200),
        output_tokens: Some(7),
        ..MockSpec::reply("four words of reply")
    };
    let backend = MockBackend::new(spec);
    let started = Instant::now();
    let answer = backend.call(&deployment(), &chat(false)).await.unwrap();
    assert_eq!(started.elapsed(), Duration::from_millis(200));
    assert_eq!(
        answer.body.to_value().unwrap()["choices"][0]["message"]["content"],
        "four words of reply"
    );
    let usage = answer.usage.unwrap();
    assert_eq!(usage.completion_tokens, 7);
    assert!(usage.prompt_tokens > 0);
    assert_eq!(
        answer.body.to_value().unwrap()["usage"]["total_tokens"],
        usage.total_tokens
    );
}

#[tokio::test(start_paused = true)]
async fn jitter_spreads_latency_within_its_bounds() {
    let spec = MockSpec {
        latency: Duration::from_millis(100),
        jitter: 0.5,
        ..MockSpec::default()
    };
    let backend = MockBackend::new(spec).seeded(3);
    let mut seen = Vec::new();
    for _ in 0..50 {
        let started = Instant::now();
        backend.call(&deployment(), &chat(false)).await.unwrap();
        seen.push(started.elapsed());
    }
    assert!(
        seen.iter()
            .all(|d| *d >= Duration::from_millis(50) && *d <= Duration::from_millis(150))
    );
    let distinct: std::collections::HashSet<_> = seen.iter().collect();
    assert!(distinct.len() > 10, "jitter varies the latency");
}

#[tokio::test(start_paused = true)]
async fn a_stream_sends_its_first_chunk_after_the_time_to_first_token_and_usage_last() {
    let spec = MockSpec {
        latency: Duration::from_millis(400),
        time_to_first_token: Some(Duration::from_millis(100)),
        ..MockSpec::reply("one two three four")
    };
    let backend = MockBackend::new(spec);
    let started = Instant::now();
    let mut stream = backend.stream(&deployment(), &chat(true)).await.unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(started.elapsed(), Duration::from_millis(100));
    assert_eq!(
        first.body.to_value().unwrap()["object"],
        "chat.completion.chunk"
    );
    let mut text = first.body.to_value().unwrap()["choices"][0]["delta"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    let mut last = None;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        text.push_str(
            chunk.body.to_value().unwrap()["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap(),
        );
        last = Some(chunk);
    }
    assert_eq!(text, "one two three four");
    assert!(
        last.unwrap().usage.is_some(),
        "the last chunk reports the usage"
    );
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(400),
        "the last chunk at the latency"
    );
}

#[tokio::test(start_paused = true)]
async fn error_rates_fail_about_their_share_of_calls() {
    let spec = MockSpec {
        error_rates: vec![(ErrorClass::ServerError { status: 503 }, 0.3)],
        ..MockSpec::default()
    };
    let backend = MockBackend::new(spec).seeded(11);
    let mut failed = 0;
    for _ in 0..1_000 {
        if let Err(e) = backend.call(&deployment(), &chat(false)).await {
            assert_eq!(e.class, ErrorClass::ServerError { status: 503 });
            failed += 1;
        }
    }
    assert!((220..=380).contains(&failed), "{failed} of 1000 failed");
}

#[tokio::test(start_paused = true)]
async fn provider_side_rpm_answers_429_with_retry_after_until_the_minute_ends() {
    let spec = MockSpec {
        rpm: Some(3),
        ..MockSpec::default()
    };
    let backend = MockBackend::new(spec);
    for _ in 0..3 {
        backend.call(&deployment(), &chat(false)).await.unwrap();
    }
    tokio::time::advance(Duration::from_secs(20)).await;
    let err = backend.call(&deployment(), &chat(false)).await.unwrap_err();
    assert_eq!(
        err.class,
        ErrorClass::RateLimited {
            retry_after: Some(Duration::from_secs(40))
        }
    );
    tokio::time::advance(Duration::from_secs(41)).await;
    backend.call(&deployment(), &chat(false)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_request_mock_response_wins_over_the_deployment_spec() {
    let backend = MockBackend::new(MockSpec::reply("from the spec"));
    let mut request = chat(false);
    request.body["mock_response"] = "litellm.ContextWindowExceededError".into();
    let err = backend.call(&deployment(), &request).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::ContextWindowExceeded);
    request.body["mock_response"] = "from the request".into();
    let answer = backend.call(&deployment(), &request).await.unwrap();
    assert_eq!(
        answer.body.to_value().unwrap()["choices"][0]["message"]["content"],
        "from the request"
    );
}

#[tokio::test(start_paused = true)]
async fn embeddings_and_completions_get_their_shapes() {
    let backend = MockBackend::new(MockSpec::default());
    let embed = BackendRequest {
        trace: None,
        native: None,
        body: serde_json::json!({"model": "e", "input": ["a"]}),
        stream: false,
        request_id: None,
        deployment_id: None,
        prepared: None,
    };
    let answer = backend.call(&deployment(), &embed).await.unwrap();
    assert_eq!(answer.body.to_value().unwrap()["object"], "list");
    let vector = &answer.body.to_value().unwrap()["data"][0]["embedding"];
    // LiteLLM's mock_embedding: 1,536 zeros when mock_response gives no vector.
    assert_eq!(
        vector.as_array().map(Vec::len),
        Some(ferrolite::mock::DEFAULT_EMBEDDING_DIMENSIONS)
    );
    assert!(
        vector
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v.as_f64() == Some(0.0))
    );
    let complete = BackendRequest {
        trace: None,
        native: None,
        body: serde_json::json!({"model": "c", "prompt": "once"}),
        stream: false,
        request_id: None,
        deployment_id: None,
        prepared: None,
    };
    let answer = backend.call(&deployment(), &complete).await.unwrap();
    assert_eq!(answer.body.to_value().unwrap()["object"], "text_completion");
}
