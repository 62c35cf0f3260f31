//! An upstream's answer reaches the client as the upstream's bytes, over real HTTP on loopback:
//! the gateway changes only `model` (whole answers and streamed chunks, with and without the
//! client asking for usage), and an upstream answer that is not one JSON object (not JSON, not
//! UTF-8, cut short, an array) is a typed backend error (a 502 server error).
#![cfg(all(feature = "gateway", feature = "http"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::sync::Arc;

use axum::response::Response;
use axum::routing::post;
use ferrolite::gateway::{GatewaySettings, app, serve};
use ferrolite::http::HttpBackend;
use ferrolite::router::{Backend, BackendRequest};
use ferrolite::types::{Deployment, ErrorClass};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KEY: &str = "sk-bytes-master";

/// An answer no serialiser would write: keys out of order, `model` in the middle, whitespace,
/// unicode escapes (a surrogate pair too), a number beyond `f64` and one beyond `i64`.
const ANSWER: &str = "{ \"z_last\" : 1e400,\n  \"id\":\"chatcmpl-\\u00e9\\ud83d\\ude00\", \"model\": \"gpt-4o-2024-08-06\",\"big\":12345678901234567890,\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"caf\\u00e9 \\\"q\\\"\"},\"finish_reason\":\"stop\"}], \"usage\": {\"total_tokens\": 9, \"prompt_tokens\": 5, \"completion_tokens\": 4} }";

/// A streamed chunk with choices, and the usage-only last chunk, in the same spirit.
const CHUNK: &str = "{\"id\":\"c\", \"model\" :\"up\",\"x\":1E+2,\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\\u0048i\"},\"finish_reason\":null}],\"z\":12345678901234567890 }";
const USAGE_CHUNK: &str = "{\"id\":\"c\",\"choices\":[],\"model\":\"up\",\"usage\":{\"completion_tokens\":2,\"prompt_tokens\":3}}";

/// An upstream answering the raw texts above (a stream when asked for one).
async fn upstream() -> String {
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(
            |axum::Json(body): axum::Json<serde_json::Value>| async move {
                let (kind, text) = if body["stream"] == true {
                    (
                        "text/event-stream",
                        format!("data: {CHUNK}\n\ndata: {USAGE_CHUNK}\n\ndata: [DONE]\n\n"),
                    )
                } else {
                    ("application/json", ANSWER.to_string())
                };
                Response::builder()
                    .header("content-type", kind)
                    .body(axum::body::Body::from(text))
                    .unwrap()
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/v1")
}

/// `ferrolite serve`'s gateway over the HTTP backend, group `g` on the upstream; its base URL.
async fn gateway() -> String {
    let upstream = upstream().await;
    let yaml = format!(
        r#"
model_list:
  - model_name: g
    litellm_params: {{model: openai/gpt-4o, api_base: "{upstream}", api_key: sk-up}}
general_settings:
  master_key: {KEY}
"#
    );
    let config = ferrolite::Config::from_yaml(&yaml).unwrap();
    let settings = GatewaySettings {
        master_key: config.master_key.clone(),
        ..GatewaySettings::default()
    };
    let backend: Arc<dyn Backend> = Arc::new(HttpBackend::new().unwrap());
    let router = ferrolite::build_from_config(config, Some(backend))
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(
        listener,
        app(router, settings),
        std::future::pending(),
    ));
    format!("http://{addr}")
}

async fn ask(base: &str, body: serde_json::Value) -> (u16, String) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

fn hello(stream: Option<bool>, include_usage: bool) -> serde_json::Value {
    let mut body =
        serde_json::json!({"model": "g", "messages": [{"role": "user", "content": "hi"}]});
    if let Some(stream) = stream {
        body["stream"] = stream.into();
    }
    if include_usage {
        body["stream_options"] = serde_json::json!({"include_usage": true});
    }
    body
}

#[tokio::test]
async fn a_whole_answer_is_the_upstreams_bytes_with_only_the_model_changed() {
    let base = gateway().await;
    let (status, text) = ask(&base, hello(None, false)).await;
    assert_eq!(status, 200, "{text}");
    let expected = ANSWER.replace("\"model\": \"gpt-4o-2024-08-06\"", "\"model\": \"g\"");
    assert_ne!(expected, ANSWER);
    assert_eq!(text, expected);
}

#[tokio::test]
async fn streamed_chunks_are_the_upstreams_bytes_with_only_the_model_changed() {
    let base = gateway().await;
    let (status, text) = ask(&base, hello(Some(true), false)).await;
    assert_eq!(status, 200, "{text}");
    let chunk = CHUNK.replace("\"model\" :\"up\"", "\"model\" :\"g\"");
    assert_eq!(
        text,
        format!("data: {chunk}\n\ndata: [DONE]\n\n"),
        "without include_usage the usage-only chunk is not sent"
    );
}

#[tokio::test]
async fn streamed_chunks_asked_for_usage_gain_only_a_null_usage() {
    let base = gateway().await;
    let (status, text) = ask(&base, hello(Some(true), true)).await;
    assert_eq!(status, 200, "{text}");
    let chunk = CHUNK
        .replace("\"model\" :\"up\"", "\"model\" :\"g\"")
        .replace(
            "12345678901234567890 }",
            "12345678901234567890 ,\"usage\":null}",
        );
    let usage = USAGE_CHUNK.replace("\"model\":\"up\"", "\"model\":\"g\"");
    assert_eq!(
        text,
        format!("data: {chunk}\n\ndata: {usage}\n\ndata: [DONE]\n\n")
    );
}

/// An upstream that writes `response` (a whole HTTP response, maybe cut short) to every
/// connection and closes it; its base URL.
async fn raw_upstream(response: &'static [u8]) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                // Reads the request's head and body (whatever arrives first), then answers.
                let mut buffer = vec![0u8; 64 * 1024];
                let mut read = 0;
                while let Ok(n) = socket.read(&mut buffer[read..]).await {
                    read += n;
                    let text = String::from_utf8_lossy(&buffer[..read]);
                    if n == 0 || text.contains("\r\n\r\n{") && text.ends_with('}') {
                        break;
                    }
                }
                let _ = socket.write_all(response).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    format!("http://{addr}/v1")
}

async fn answer_of(response: &'static [u8], stream: bool) -> ErrorClass {
    let base = raw_upstream(response).await;
    let deployment = Deployment {
        api_base: Some(base),
        ..Deployment::new("g", "openai/gpt-4o")
    };
    let request = BackendRequest {
        trace: None,
        native: None,
        body: serde_json::json!({"model": "g", "messages": [{"role": "user", "content": "hi"}]}),
        stream,
        request_id: None,
        deployment_id: None,
        prepared: None,
    };
    let backend = HttpBackend::new().unwrap();
    if stream {
        let mut chunks = backend.stream(&deployment, &request).await.unwrap();
        let mut last = None;
        while let Some(chunk) = chunks.next().await {
            if let Err(error) = chunk {
                last = Some(error.class);
            }
        }
        last.expect("the stream ends in an error")
    } else {
        backend.call(&deployment, &request).await.unwrap_err().class
    }
}

const BAD: ErrorClass = ErrorClass::ServerError { status: 502 };

#[tokio::test]
async fn an_answer_that_is_not_an_object_is_a_bad_gateway_error() {
    let array =
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 5\r\n\r\n[1,2]";
    assert_eq!(answer_of(array, false).await, BAD);
    let number =
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n42";
    assert_eq!(answer_of(number, false).await, BAD);
}

#[tokio::test]
async fn an_answer_that_is_not_utf8_is_a_bad_gateway_error() {
    let latin1 =
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 12\r\n\r\n{\"a\":\"caf\xe9\"}";
    assert_eq!(answer_of(latin1, false).await, BAD);
}

#[tokio::test]
async fn a_truncated_answer_is_a_bad_gateway_error() {
    // The connection closes before the promised length...
    let cut = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"id\":\"x\",";
    assert_eq!(answer_of(cut, false).await, BAD);
    // ...or the whole (short) body is an unfinished object.
    let unfinished =
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 10\r\n\r\n{\"id\":\"x\",";
    assert_eq!(answer_of(unfinished, false).await, BAD);
}

#[tokio::test]
async fn a_stream_event_that_is_not_an_object_or_not_utf8_is_a_bad_gateway_error() {
    let array = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: 13\r\n\r\ndata: [1,2]\n\n";
    assert_eq!(answer_of(array, true).await, BAD);
    let latin1 = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: 20\r\n\r\ndata: {\"a\":\"caf\xe9\"}\n\n";
    assert_eq!(answer_of(latin1, true).await, BAD);
    let cut = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: 18\r\n\r\ndata: {\"a\":\"cafe\n\n";
    assert_eq!(answer_of(cut, true).await, BAD);
}
