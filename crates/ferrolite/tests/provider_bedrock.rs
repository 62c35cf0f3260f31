//! The Bedrock backend against a fake Bedrock runtime on loopback, built from AWS's API
//! reference (Converse, ConverseStream, Signature Version 4, the event-stream encoding): the
//! fake recomputes each request's SigV4 signature with its own implementation and the test's
//! secret key and refuses a mismatch as AWS does, checks the session token, validates the
//! Converse body, answers whole and in event-stream frames, and returns each error class on
//! request. Calls go through a real `Router` over the `HttpBackend`.
//!
//! Tests that need the process environment (credentials from `AWS_*` variables, a config's
//! `os.environ/`) run in a child process of this test binary with that environment.
#![cfg(feature = "http")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use ferrolite::http::HttpBackend;
use ferrolite::router::{Backend, BackendRequest};
use ferrolite::types::{Deployment, ErrorClass, Secret};
use ferrolite::{Request, RouterError};
use futures_util::StreamExt;
use parking_lot::Mutex;
use serde_json::{Value, json};

const ACCESS_KEY: &str = "AKIDFERROLITETEST";
const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYFERROLITE";
const REGION: &str = "us-west-2";
const MODEL: &str = "anthropic.claude-3-5-sonnet-20240620-v1:0";

/// One request as the fake received it.
#[derive(Clone)]
struct Seen {
    path: String,
    headers: HeaderMap,
    body: Value,
}

/// The fake runtime's keys, region, expected session token, and what it saw.
struct Fake {
    secrets: HashMap<String, String>,
    region: String,
    token: Option<String>,
    seen: Mutex<Vec<Seen>>,
}

impl Fake {
    fn calls_of(&self, model: &str) -> usize {
        let encoded = encode(model);
        self.seen
            .lock()
            .iter()
            .filter(|s| s.path.starts_with(&format!("/model/{encoded}/")))
            .count()
    }
}

/// SigV4's URI encoding: all but the unreserved characters as `%XX`.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    ring::hmac::sign(&key, data.as_bytes()).as_ref().to_vec()
}

fn sha256(data: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

/// An AWS JSON error answer.
fn aws_error(status: StatusCode, kind: &str, message: &str) -> Response {
    let mut response = (status, axum::Json(json!({ "message": message }))).into_response();
    response
        .headers_mut()
        .insert("x-amzn-errortype", kind.parse().unwrap());
    response
}

/// Why the fake refused a request's signature: the AWS error type and message (a 403).
struct Denied(&'static str, &'static str);

/// Checks the request's Signature Version 4 as AWS documents it ("Create a signed AWS API
/// request"): the canonical request (method, the path URI-encoded again, the query, the
/// signed headers, the payload's SHA-256), the string to sign, the signing key derived from
/// the secret, date, region and service.
fn verify(
    fake: &Fake,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Denied> {
    let denied = |kind: &'static str, message: &'static str| Err(Denied(kind, message));
    let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return denied(
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        );
    };
    let Some(fields) = auth.strip_prefix("AWS4-HMAC-SHA256 ") else {
        return denied("IncompleteSignatureException", "unknown algorithm");
    };
    let mut credential = "";
    let mut signed_headers = "";
    let mut signature = "";
    for field in fields.split(", ") {
        if let Some(v) = field.strip_prefix("Credential=") {
            credential = v;
        } else if let Some(v) = field.strip_prefix("SignedHeaders=") {
            signed_headers = v;
        } else if let Some(v) = field.strip_prefix("Signature=") {
            signature = v;
        }
    }
    let scope: Vec<&str> = credential.split('/').collect();
    let [key_id, date, region, service, "aws4_request"] = scope[..] else {
        return denied("IncompleteSignatureException", "bad credential scope");
    };
    let Some(secret) = fake.secrets.get(key_id) else {
        return denied(
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        );
    };
    if region != fake.region || service != "bedrock" {
        return denied(
            "InvalidSignatureException",
            "Credential should be scoped to a valid region and service.",
        );
    }
    let signed: Vec<&str> = signed_headers.split(';').collect();
    if let Some(token) = &fake.token {
        let sent = headers
            .get("x-amz-security-token")
            .and_then(|v| v.to_str().ok());
        if sent != Some(token.as_str()) || !signed.contains(&"x-amz-security-token") {
            return denied(
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            );
        }
    }
    for required in ["host", "x-amz-date"] {
        if !signed.contains(&required) {
            return denied(
                "IncompleteSignatureException",
                "host and x-amz-date must be signed",
            );
        }
    }
    let canonical_uri: Vec<String> = path.split('/').map(encode).collect();
    let mut canonical_headers = String::new();
    for name in &signed {
        let value = headers
            .get(*name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        canonical_headers.push_str(&format!("{name}:{value}\n"));
    }
    let canonical_request = format!(
        "POST\n{}\n{query}\n{canonical_headers}\n{signed_headers}\n{}",
        canonical_uri.join("/"),
        sha256(body)
    );
    let amz_date = headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{date}/{region}/{service}/aws4_request\n{}",
        sha256(canonical_request.as_bytes())
    );
    let mut key = hmac(format!("AWS4{secret}").as_bytes(), date);
    key = hmac(&key, region);
    key = hmac(&key, service);
    key = hmac(&key, "aws4_request");
    if hex(&hmac(&key, &string_to_sign)) != signature {
        return denied(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. \
             Check your AWS Secret Access Key and signing method. Consult the service \
             documentation for details.",
        );
    }
    Ok(())
}

/// Validates a Converse body as the API reference describes it: `messages` alternate,
/// starting with the user's; each content block is one known member.
fn validate(body: &Value) -> Result<(), String> {
    let messages = body["messages"].as_array().ok_or("messages is required")?;
    if messages.is_empty() {
        return Err("messages must not be empty".into());
    }
    for (i, message) in messages.iter().enumerate() {
        let role = message["role"].as_str().unwrap_or("");
        let expected = if i % 2 == 0 { "user" } else { "assistant" };
        if role != expected {
            return Err(format!(
                "A conversation must alternate between user and assistant roles (messages.{i})"
            ));
        }
        let content = message["content"].as_array().ok_or("content is required")?;
        if content.is_empty() {
            return Err(format!("messages.{i}.content must not be empty"));
        }
        for block in content {
            let object = block.as_object().ok_or("a content block is an object")?;
            let known = [
                "text",
                "image",
                "document",
                "toolUse",
                "toolResult",
                "reasoningContent",
                "cachePoint",
                "guardContent",
            ];
            if object.len() != 1 || !known.contains(&object.keys().next().unwrap().as_str()) {
                return Err(format!("unknown content block {block}"));
            }
            if let Some(image) = block.get("image") {
                let format = image["format"].as_str().unwrap_or("");
                let bytes = image["source"]["bytes"].as_str().unwrap_or("");
                if !["png", "jpeg", "gif", "webp"].contains(&format)
                    || bytes.is_empty()
                    || !bytes
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
                {
                    return Err("image.source.bytes is not base64".into());
                }
            }
            if (block.get("toolUse").is_some() || block.get("toolResult").is_some())
                && body.get("toolConfig").is_none()
            {
                return Err(
                    "The toolConfig field must be defined when using toolUse and toolResult content blocks."
                        .into(),
                );
            }
        }
    }
    Ok(())
}

/// The usage every answer reports.
fn usage() -> Value {
    json!({"inputTokens": 10, "outputTokens": 5, "totalTokens": 17, "cacheReadInputTokens": 2})
}

/// What the answer says about the request: an echo of the last user text, or of its image.
fn reply_text(body: &Value) -> String {
    let last = body["messages"].as_array().unwrap().last().unwrap();
    for block in last["content"].as_array().unwrap() {
        if let Some(image) = block.get("image") {
            return format!(
                "an image ({}, {} base64 bytes)",
                image["format"].as_str().unwrap(),
                image["source"]["bytes"].as_str().unwrap().len()
            );
        }
        if let Some(result) = block.get("toolResult") {
            return format!(
                "the tool said {}",
                result["content"][0]["text"].as_str().unwrap()
            );
        }
    }
    let text = last["content"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["text"].as_str())
        .collect::<Vec<_>>()
        .join(" ");
    format!("echo: {text}")
}

/// The first tool of the request, when it has tools and the last turn is not a tool result.
fn wants_tool(body: &Value) -> Option<String> {
    let name = body["toolConfig"]["tools"][0]["toolSpec"]["name"].as_str()?;
    let last = body["messages"].as_array()?.last()?;
    if last["content"][0].get("toolResult").is_some() {
        return None;
    }
    Some(name.to_string())
}

/// One event-stream frame.
fn frame(kind: &str, name: &str, payload: &Value) -> Vec<u8> {
    let type_header = if kind == "event" {
        ":event-type"
    } else {
        ":exception-type"
    };
    let message = Message::new_from_parts(
        vec![
            Header::new(
                ":message-type",
                HeaderValue::String(kind.to_string().into()),
            ),
            Header::new(type_header, HeaderValue::String(name.to_string().into())),
            Header::new(
                ":content-type",
                HeaderValue::String("application/json".to_string().into()),
            ),
        ],
        serde_json::to_vec(payload).unwrap(),
    );
    let mut out = Vec::new();
    write_message_to(&message, &mut out).unwrap();
    out
}

/// An event-stream answer, its bytes cut at odd places to exercise incremental decoding.
fn event_stream(frames: Vec<u8>) -> Response {
    let cuts = [0, 5, frames.len() / 3, frames.len() / 2 + 7, frames.len()];
    let parts: Vec<Result<Vec<u8>, std::io::Error>> = cuts
        .windows(2)
        .map(|w| Ok(frames[w[0]..w[1]].to_vec()))
        .collect();
    Response::builder()
        .header("content-type", "application/vnd.amazon.eventstream")
        .header("x-amzn-requestid", "req-stream-1")
        .body(Body::from_stream(futures_util::stream::iter(parts)))
        .unwrap()
}

/// The fake runtime's one handler: checks, then behaves as the model id says.
async fn runtime(
    axum::extract::State(fake): axum::extract::State<Arc<Fake>>,
    request: axum::extract::Request,
) -> Response {
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or("").to_string();
    let headers = request.headers().clone();
    let bytes = axum::body::to_bytes(request.into_body(), usize::MAX)
        .await
        .unwrap();
    if let Err(Denied(kind, message)) = verify(&fake, &path, &query, &headers, &bytes) {
        return aws_error(StatusCode::FORBIDDEN, kind, message);
    }
    let segments: Vec<&str> = path.split('/').collect();
    let ["", "model", model, action] = segments[..] else {
        return aws_error(
            StatusCode::NOT_FOUND,
            "UnknownOperationException",
            "no such path",
        );
    };
    let model = decode(model);
    let body: Value = match serde_json::from_slice(&bytes) {
        Ok(body) => body,
        Err(_) => {
            return aws_error(
                StatusCode::BAD_REQUEST,
                "SerializationException",
                "not JSON",
            );
        }
    };
    fake.seen.lock().push(Seen {
        path: path.clone(),
        headers,
        body: body.clone(),
    });
    if let Err(message) = validate(&body) {
        return aws_error(StatusCode::BAD_REQUEST, "ValidationException", &message);
    }
    match model.as_str() {
        "throttled" => {
            return aws_error(
                StatusCode::TOO_MANY_REQUESTS,
                "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/",
                "Too many requests, please wait before trying again.",
            );
        }
        "too-long" => {
            return aws_error(
                StatusCode::BAD_REQUEST,
                "ValidationException",
                "Input is too long for requested model.",
            );
        }
        "denied" => {
            return aws_error(
                StatusCode::FORBIDDEN,
                "AccessDeniedException",
                "You don't have access to the model with the specified model ID.",
            );
        }
        "unavailable" => {
            return aws_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailableException",
                "Bedrock is unable to process your request.",
            );
        }
        _ => {}
    }
    let tool = wants_tool(&body);
    if action == "converse" {
        let content = match &tool {
            Some(name) => json!([
                {"text": "Let me look."},
                {"toolUse": {"toolUseId": "tooluse_1", "name": name, "input": {"city": "Paris"}}}
            ]),
            None => json!([{"text": reply_text(&body)}]),
        };
        let answer = json!({
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": if tool.is_some() { "tool_use" } else { "end_turn" },
            "usage": usage(),
            "metrics": {"latencyMs": 12},
        });
        let mut response = axum::Json(answer).into_response();
        response
            .headers_mut()
            .insert("x-amzn-requestid", "req-1".parse().unwrap());
        return response;
    }
    if action != "converse-stream" {
        return aws_error(
            StatusCode::NOT_FOUND,
            "UnknownOperationException",
            "no such action",
        );
    }
    let mut frames = Vec::new();
    frames.extend(frame(
        "event",
        "messageStart",
        &json!({"role": "assistant"}),
    ));
    if model == "stream-exception" {
        frames.extend(frame(
            "event",
            "contentBlockDelta",
            &json!({"contentBlockIndex": 0, "delta": {"text": "Hel"}}),
        ));
        frames.extend(frame(
            "exception",
            "modelStreamErrorException",
            &json!({"message": "The model stopped unexpectedly.", "originalStatusCode": 500}),
        ));
        return event_stream(frames);
    }
    if model == "stream-cut" {
        frames.extend(frame(
            "event",
            "contentBlockDelta",
            &json!({"contentBlockIndex": 0, "delta": {"text": "Hel"}}),
        ));
        let next = frame(
            "event",
            "contentBlockDelta",
            &json!({"contentBlockIndex": 0, "delta": {"text": "lo"}}),
        );
        frames.extend(&next[..next.len() / 2]);
        return event_stream(frames);
    }
    if model == "stream-closed" || model == "stream-no-metadata" {
        // Whole frames, then the connection closes cleanly before the answer's end.
        frames.extend(frame(
            "event",
            "contentBlockDelta",
            &json!({"contentBlockIndex": 0, "delta": {"text": "Hel"}}),
        ));
        if model == "stream-no-metadata" {
            frames.extend(frame(
                "event",
                "messageStop",
                &json!({"stopReason": "end_turn"}),
            ));
        }
        return event_stream(frames);
    }
    if model == "stream-throttled" {
        frames.extend(frame(
            "exception",
            "throttlingException",
            &json!({"message": "Too many tokens, please wait before trying again."}),
        ));
        return event_stream(frames);
    }
    let text = reply_text(&body);
    let (a, b) = text.split_at(text.len() / 2);
    for piece in [a, b] {
        frames.extend(frame(
            "event",
            "contentBlockDelta",
            &json!({"contentBlockIndex": 0, "delta": {"text": piece}, "p": "abcdef"}),
        ));
    }
    frames.extend(frame(
        "event",
        "contentBlockStop",
        &json!({"contentBlockIndex": 0}),
    ));
    if let Some(name) = &tool {
        frames.extend(frame(
            "event",
            "contentBlockStart",
            &json!({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "tooluse_2", "name": name}}}),
        ));
        for piece in ["{\"city\":", " \"Paris\"}"] {
            frames.extend(frame(
                "event",
                "contentBlockDelta",
                &json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": piece}}}),
            ));
        }
        frames.extend(frame(
            "event",
            "contentBlockStop",
            &json!({"contentBlockIndex": 1}),
        ));
    }
    frames.extend(frame(
        "event",
        "messageStop",
        &json!({"stopReason": if tool.is_some() { "tool_use" } else { "end_turn" }}),
    ));
    frames.extend(frame(
        "event",
        "metadata",
        &json!({"usage": usage(), "metrics": {"latencyMs": 20}}),
    ));
    event_stream(frames)
}

/// A fake runtime on a free loopback port that knows the test's key (and expects `token`).
async fn fake(token: Option<&str>) -> (String, Arc<Fake>) {
    let fake = Arc::new(Fake {
        secrets: HashMap::from([(ACCESS_KEY.to_string(), SECRET_KEY.to_string())]),
        region: REGION.to_string(),
        token: token.map(str::to_string),
        seen: Mutex::new(Vec::new()),
    });
    let app = axum::Router::new()
        .fallback(runtime)
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), fake)
}

/// A bedrock deployment of `model` on the fake, with its keys in its parameters.
fn bedrock(base: &str, model: &str, token: Option<&str>) -> Deployment {
    let mut params = std::collections::BTreeMap::from([
        ("aws_access_key_id".to_string(), Secret::new(ACCESS_KEY)),
        ("aws_secret_access_key".to_string(), Secret::new(SECRET_KEY)),
        ("aws_region_name".to_string(), Secret::new(REGION)),
    ]);
    if let Some(token) = token {
        params.insert("aws_session_token".into(), Secret::new(token));
    }
    Deployment {
        id: Some(model.to_string()),
        api_base: Some(base.to_string()),
        provider_params: params,
        ..Deployment::new("g", format!("bedrock/{model}"))
    }
}

async fn router(deployments: Vec<Deployment>) -> ferrolite::Router {
    ferrolite::Router::builder()
        .deployments(deployments)
        .backend(Arc::new(HttpBackend::new().unwrap()))
        .build()
        .await
        .unwrap()
}

fn hello() -> Value {
    json!({
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "Hello"},
            {"role": "user", "content": [{"type": "text", "text": "Bedrock"}]},
        ],
        "max_tokens": 100,
        "temperature": 0.5,
        "stop": "END",
    })
}

#[tokio::test]
async fn a_whole_call_is_signed_translated_and_its_usage_and_cost_counted() {
    let (base, fake) = fake(Some("session-token-1")).await;
    let deployment = Deployment {
        input_cost_per_token: Some(1e-6),
        output_cost_per_token: Some(2e-6),
        cache_read_input_token_cost: Some(1e-7),
        ..bedrock(&base, MODEL, Some("session-token-1"))
    };
    let router = router(vec![deployment]).await;
    let answer = router.call(Request::new("g", hello())).await.unwrap();
    let body = answer.body.to_value().unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["id"], "chatcmpl-req-1");
    assert_eq!(body["model"], MODEL);
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "echo: Hello Bedrock"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], 12);
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 2);
    let usage = answer.usage.unwrap();
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.total_tokens
        ),
        (12, 5, 17)
    );
    assert_eq!(usage.cache_read_tokens, 2);
    // The two cache reads at their own price, the other ten input tokens at the input price.
    let cost = answer.response_cost.unwrap();
    assert!(
        (cost - (10.0 * 1e-6 + 2.0 * 1e-7 + 5.0 * 2e-6)).abs() < 1e-12,
        "{cost}"
    );

    let seen = fake.seen.lock()[0].clone();
    assert_eq!(
        seen.path,
        "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
    );
    assert_eq!(seen.body["system"], json!([{"text": "Answer briefly."}]));
    assert_eq!(
        seen.body["messages"],
        json!([{"role": "user", "content": [{"text": "Hello"}, {"text": "Bedrock"}]}])
    );
    assert_eq!(
        seen.body["inferenceConfig"],
        json!({"maxTokens": 100, "temperature": 0.5, "stopSequences": ["END"]})
    );
    let auth = seen.headers["authorization"].to_str().unwrap();
    assert!(
        auth.starts_with(&format!("AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/"))
            && auth.contains(&format!("/{REGION}/bedrock/aws4_request")),
        "{auth}"
    );
    assert!(auth.contains("x-amz-security-token"), "{auth}");
    assert!(!auth.contains(SECRET_KEY));
}

#[tokio::test]
async fn a_stream_is_decoded_from_event_stream_frames_into_chat_chunks_with_usage() {
    let (base, fake) = fake(None).await;
    let router = router(vec![bedrock(&base, MODEL, None)]).await;
    let mut request = hello();
    request["stream"] = true.into();
    let mut stream = router.stream(Request::new("g", request)).await.unwrap();
    let mut chunks = Vec::new();
    while let Some(chunk) = stream.next().await {
        chunks.push(chunk.unwrap());
    }
    let values: Vec<Value> = chunks.iter().map(|c| c.body.to_value().unwrap()).collect();
    assert_eq!(values[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(
        values
            .iter()
            .all(|v| v["object"] == "chat.completion.chunk")
    );
    assert!(values.iter().all(|v| v["id"] == "chatcmpl-req-stream-1"));
    let text: String = values
        .iter()
        .filter_map(|v| v["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "echo: Hello Bedrock");
    let finishes: Vec<&str> = values
        .iter()
        .filter_map(|v| v["choices"][0]["finish_reason"].as_str())
        .collect();
    assert_eq!(finishes, vec!["stop"]);
    let last = values.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["total_tokens"], 17);
    assert_eq!(chunks.last().unwrap().usage.unwrap().prompt_tokens, 12);
    assert_eq!(stream.usage().unwrap().completion_tokens, 5);
    let seen = fake.seen.lock()[0].clone();
    assert!(seen.path.ends_with("/converse-stream"), "{}", seen.path);
    assert_eq!(
        seen.headers["accept"].to_str().unwrap(),
        "application/vnd.amazon.eventstream"
    );
}

fn weather_tools() -> Value {
    json!([{"type": "function", "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }}])
}

#[tokio::test]
async fn tools_are_sent_as_tool_specs_and_tool_uses_come_back_as_tool_calls_whole_and_streamed() {
    let (base, fake) = fake(None).await;
    let router = router(vec![bedrock(&base, MODEL, None)]).await;
    let request = json!({
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": weather_tools(),
        "tool_choice": "required",
    });
    let answer = router
        .call(Request::new("g", request.clone()))
        .await
        .unwrap();
    let body = answer.body.to_value().unwrap();
    let message = &body["choices"][0]["message"];
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(message["content"], "Let me look.");
    assert_eq!(message["tool_calls"][0]["id"], "tooluse_1");
    assert_eq!(message["tool_calls"][0]["function"]["name"], "get_weather");
    let arguments: Value = serde_json::from_str(
        message["tool_calls"][0]["function"]["arguments"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(arguments, json!({"city": "Paris"}));
    let sent = fake.seen.lock()[0].body.clone();
    assert_eq!(
        sent["toolConfig"],
        json!({
            "tools": [{"toolSpec": {
                "name": "get_weather",
                "description": "The weather in a city",
                "inputSchema": {"json": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
            }}],
            "toolChoice": {"any": {}},
        })
    );

    // The tool's result goes back as a user turn the fake validates.
    let follow_up = json!({
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": "Let me look.", "tool_calls": message["tool_calls"]},
            {"role": "tool", "tool_call_id": "tooluse_1", "content": "sunny"},
        ],
        "tools": weather_tools(),
    });
    let answer = router.call(Request::new("g", follow_up)).await.unwrap();
    let body = answer.body.to_value().unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "the tool said sunny"
    );
    let sent = fake.seen.lock()[1].body.clone();
    assert_eq!(
        sent["messages"][1]["content"][1],
        json!({"toolUse": {"toolUseId": "tooluse_1", "name": "get_weather", "input": {"city": "Paris"}}})
    );
    assert_eq!(
        sent["messages"][2],
        json!({"role": "user", "content": [{"toolResult": {"toolUseId": "tooluse_1", "content": [{"text": "sunny"}]}}]})
    );

    // Streamed: the tool call's id and name first, its arguments in pieces.
    let mut streamed = request;
    streamed["stream"] = true.into();
    let mut stream = router.stream(Request::new("g", streamed)).await.unwrap();
    let mut arguments = String::new();
    let mut ids = Vec::new();
    let mut finish = None;
    while let Some(chunk) = stream.next().await {
        let value = chunk.unwrap().body.to_value().unwrap();
        if let Some(calls) = value["choices"][0]["delta"]["tool_calls"].as_array() {
            for call in calls {
                assert_eq!(call["index"], 0);
                if let Some(id) = call["id"].as_str() {
                    ids.push(id.to_string());
                    assert_eq!(call["function"]["name"], "get_weather");
                }
                arguments.push_str(call["function"]["arguments"].as_str().unwrap_or(""));
            }
        }
        if let Some(f) = value["choices"][0]["finish_reason"].as_str() {
            finish = Some(f.to_string());
        }
    }
    assert_eq!(ids, vec!["tooluse_2"]);
    assert_eq!(
        serde_json::from_str::<Value>(&arguments).unwrap(),
        json!({"city": "Paris"})
    );
    assert_eq!(finish.as_deref(), Some("tool_calls"));
}

#[tokio::test]
async fn an_image_goes_as_base64_bytes_and_an_image_url_is_refused_naming_the_field() {
    let (base, fake) = fake(None).await;
    let router = router(vec![bedrock(&base, MODEL, None)]).await;
    let png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
    let request = json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{png}")}},
    ]}]});
    let answer = router.call(Request::new("g", request)).await.unwrap();
    let body = answer.body.to_value().unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        format!("an image (png, {} base64 bytes)", png.len())
    );
    assert_eq!(
        fake.seen.lock()[0].body["messages"][0]["content"][1],
        json!({"image": {"format": "png", "source": {"bytes": png}}})
    );

    let by_url = json!({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
    ]}]});
    let error = router.call(Request::new("g", by_url)).await.unwrap_err();
    let RouterError::Backend { class, message, .. } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(*class, ErrorClass::BadRequest { status: 400 });
    assert!(
        message.contains("messages[0].content[0].image_url.url"),
        "{message}"
    );
    assert_eq!(
        fake.seen.lock().len(),
        1,
        "nothing sent for the refused request"
    );
}

#[tokio::test]
async fn a_wrong_secret_is_refused_by_the_fakes_signature_check_as_an_authentication_error() {
    let (base, fake) = fake(None).await;
    let mut deployment = bedrock(&base, MODEL, None);
    deployment.provider_params.insert(
        "aws_secret_access_key".into(),
        Secret::new("not-the-secret-key"),
    );
    let backend = HttpBackend::new().unwrap();
    let error = backend
        .call(&deployment, &chat_request(false))
        .await
        .unwrap_err();
    assert_eq!(error.class, ErrorClass::Authentication, "{error:?}");
    assert!(
        error.message.contains(
            "InvalidSignatureException: The request signature we calculated does not match"
        ),
        "{}",
        error.message
    );
    assert!(!error.message.contains("not-the-secret-key"));
    assert!(fake.seen.lock().is_empty(), "refused before the handler");

    // A session token the fake does not expect to be missing: refused too.
    let (base, _) = self::fake(Some("expected-token")).await;
    let error = backend
        .call(&bedrock(&base, MODEL, None), &chat_request(false))
        .await
        .unwrap_err();
    assert_eq!(error.class, ErrorClass::Authentication, "{error:?}");
    assert!(
        error.message.contains("UnrecognizedClientException"),
        "{}",
        error.message
    );
}

fn chat_request(stream: bool) -> BackendRequest {
    BackendRequest {
        trace: None,
        body: json!({"messages": [{"role": "user", "content": "hi"}]}),
        stream,
        request_id: None,
        deployment_id: None,
        prepared: None,
        native: None,
    }
}

#[tokio::test]
async fn each_error_answer_and_stream_exception_is_classified() {
    let (base, _) = fake(None).await;
    let backend = HttpBackend::new().unwrap();
    for (model, expected) in [
        ("throttled", ErrorClass::RateLimited { retry_after: None }),
        ("too-long", ErrorClass::ContextWindowExceeded),
        ("denied", ErrorClass::PermissionDenied),
        ("unavailable", ErrorClass::ServerError { status: 503 }),
    ] {
        let deployment = bedrock(&base, model, None);
        let error = backend
            .call(&deployment, &chat_request(false))
            .await
            .unwrap_err();
        assert_eq!(error.class, expected, "{model}: {error:?}");
        // A stream that is refused before it starts is classified alike.
        let error = match backend.stream(&deployment, &chat_request(true)).await {
            Err(error) => error,
            Ok(_) => panic!("{model}: the stream started"),
        };
        assert_eq!(error.class, expected, "{model} streamed: {error:?}");
    }

    for (model, expected, chunks_before) in [
        (
            "stream-exception",
            ErrorClass::ServerError { status: 502 },
            2,
        ),
        (
            "stream-throttled",
            ErrorClass::RateLimited { retry_after: None },
            1,
        ),
        ("stream-cut", ErrorClass::Connection, 2),
        ("stream-closed", ErrorClass::Connection, 2),
        ("stream-no-metadata", ErrorClass::Connection, 3),
    ] {
        let mut stream = backend
            .stream(&bedrock(&base, model, None), &chat_request(true))
            .await
            .unwrap();
        let mut good = 0;
        let error = loop {
            match stream.next().await {
                Some(Ok(_)) => good += 1,
                Some(Err(error)) => break error,
                None => panic!("{model}: the stream ended without its exception"),
            }
        };
        assert_eq!(good, chunks_before, "{model}");
        assert_eq!(error.class, expected, "{model}: {error:?}");
        if model == "stream-closed" {
            assert!(
                error.message.contains("ended before messageStop"),
                "{}",
                error.message
            );
        }
        assert!(stream.next().await.is_none());
    }
}

#[tokio::test]
async fn through_the_router_a_throttled_deployment_is_retried_on_its_sibling_and_cooled_down() {
    let (base, fake) = fake(None).await;
    let throttled = Deployment {
        order: Some(1),
        allowed_fails: Some(0),
        ..bedrock(&base, "throttled", None)
    };
    let good = Deployment {
        order: Some(2),
        ..bedrock(&base, MODEL, None)
    };
    let router = router(vec![throttled.clone(), good]).await;
    let answer = router.call(Request::new("g", hello())).await.unwrap();
    assert_eq!(answer.deployment_id.as_str(), MODEL);
    assert_eq!(answer.attempted_retries, 1);
    assert_eq!(fake.calls_of("throttled"), 1);
    assert!(router.cooled_until(&throttled.id()).is_some());
    // Cooled down: the next calls go straight to the sibling.
    for _ in 0..3 {
        let answer = router.call(Request::new("g", hello())).await.unwrap();
        assert_eq!(answer.deployment_id.as_str(), MODEL);
    }
    assert_eq!(fake.calls_of("throttled"), 1);
    assert_eq!(fake.calls_of(MODEL), 4);
}

#[tokio::test]
async fn a_deployment_without_keys_fails_naming_the_missing_parameter() {
    let (base, fake) = fake(None).await;
    let mut deployment = bedrock(&base, MODEL, None);
    deployment.provider_params.remove("aws_secret_access_key");
    let error = HttpBackend::new()
        .unwrap()
        .call(&deployment, &chat_request(false))
        .await
        .unwrap_err();
    assert_eq!(error.class, ErrorClass::Authentication);
    assert!(
        error.message.contains("needs aws_secret_access_key"),
        "{}",
        error.message
    );
    assert!(fake.seen.lock().is_empty());
}

/// The `AWS_*` variables this file's child processes set or clear.
const AWS_VARIABLES: [&str; 6] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "BEDROCK_TEST_REGION",
];

/// Runs the ignored test `name` of this binary in a child process whose `AWS_*` environment is
/// exactly `env`, and checks that it passed.
fn in_child(name: &str, env: &[(&str, &str)]) {
    common::child::in_child(name, &AWS_VARIABLES, env);
}

#[test]
fn credentials_and_region_come_from_the_standard_environment_variables() {
    in_child(
        "child_calls_with_the_environments_credentials",
        &[
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ("AWS_SESSION_TOKEN", "env-token"),
            ("AWS_DEFAULT_REGION", REGION),
        ],
    );
}

#[tokio::test]
#[ignore = "run by credentials_and_region_come_from_the_standard_environment_variables with its environment"]
async fn child_calls_with_the_environments_credentials() {
    let (base, fake) = fake(Some("env-token")).await;
    let deployment = Deployment {
        id: Some("env".into()),
        api_base: Some(base),
        ..Deployment::new("g", format!("bedrock/converse/{MODEL}"))
    };
    let router = router(vec![deployment]).await;
    let answer = router.call(Request::new("g", hello())).await.unwrap();
    assert_eq!(
        answer.body.to_value().unwrap()["choices"][0]["message"]["content"],
        "echo: Hello Bedrock"
    );
    let seen = fake.seen.lock()[0].clone();
    assert_eq!(
        seen.path,
        "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
    );
    assert_eq!(seen.headers["x-amz-security-token"], "env-token");
}

#[test]
fn a_config_with_the_region_from_os_environ_loads_and_one_without_region_or_keys_is_refused() {
    in_child(
        "child_loads_and_refuses_configs",
        &[
            ("BEDROCK_TEST_REGION", REGION),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ],
    );
}

#[test]
#[ignore = "run by a_config_with_the_region_from_os_environ_loads_and_one_without_region_or_keys_is_refused with its environment"]
fn child_loads_and_refuses_configs() {
    let loads = ferrolite::Config::from_yaml(&format!(
        r#"
model_list:
  - model_name: claude
    litellm_params:
      model: bedrock/{MODEL}
      aws_region_name: os.environ/BEDROCK_TEST_REGION
      aws_access_key_id: os.environ/AWS_ACCESS_KEY_ID
      aws_secret_access_key: os.environ/AWS_SECRET_ACCESS_KEY
"#
    ))
    .unwrap();
    assert!(loads.not_callable.is_empty(), "{:?}", loads.not_callable);
    assert_eq!(
        loads.deployments[0].provider_params["aws_region_name"].expose(),
        REGION
    );
    let for_serving = loads.for_serving();
    assert!(for_serving.is_ok(), "{:?}", for_serving.err());

    // No region anywhere (AWS_REGION and AWS_DEFAULT_REGION unset): refused, naming it.
    let error = ferrolite::Config::from_yaml(&format!(
        "model_list:\n  - model_name: claude\n    litellm_params: {{model: bedrock/{MODEL}}}\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("model_list[0].litellm_params.aws_region_name")
            && error.contains("required for a bedrock deployment"),
        "{error}"
    );

    // A region but a key without its secret: refused, naming the secret.
    let error = ferrolite::Config::from_yaml(&format!(
        "model_list:\n  - model_name: claude\n    litellm_params: {{model: bedrock/{MODEL}, aws_region_name: {REGION}, aws_access_key_id: AKID}}\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("model_list[0].litellm_params.aws_secret_access_key"),
        "{error}"
    );
    assert!(!error.contains("AKID"), "{error}");
}

/// From a LiteLLM config to an OpenAI client's chat completion, whole and streamed, through
/// the gateway.
#[cfg(feature = "gateway")]
#[tokio::test]
async fn a_config_deployment_answers_an_openai_client_through_the_gateway() {
    use ferrolite::gateway::{GatewaySettings, app, serve};
    let (base, fake) = fake(None).await;
    let config = ferrolite::Config::from_yaml(&format!(
        r#"
model_list:
  - model_name: claude
    litellm_params:
      model: bedrock/converse/{MODEL}
      api_base: {base}
      aws_region_name: {REGION}
      aws_access_key_id: {ACCESS_KEY}
      aws_secret_access_key: {SECRET_KEY}
"#
    ))
    .unwrap()
    .for_serving()
    .unwrap();
    let router = ferrolite::build_from_config(config, Some(Arc::new(HttpBackend::new().unwrap())))
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(serve(
        listener,
        app(router, GatewaySettings::default()),
        std::future::pending(),
    ));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let url = format!("http://{address}/v1/chat/completions");
    let request = json!({"model": "claude", "messages": [{"role": "user", "content": "Hi there"}], "user": "u-1"});
    let response = client.post(&url).json(&request).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "echo: Hi there");
    assert_eq!(body["usage"]["total_tokens"], 17);

    let mut streamed = request;
    streamed["stream"] = true.into();
    let text = client
        .post(&url)
        .json(&streamed)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let content: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(content, "echo: Hi there", "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let seen = fake.seen.lock();
    assert_eq!(seen.len(), 2);
    // Nothing the gateway or the client added (`user`, `stream_options`) reached Bedrock.
    for request in seen.iter() {
        let fields: Vec<&String> = request.body.as_object().unwrap().keys().collect();
        assert_eq!(fields, ["messages"], "{}", request.body);
    }
}

/// `response_format` as LiteLLM asks it of Converse: one forced tool, whose input comes back as
/// the content; a streamed request is answered whole and sent as chunks.
#[tokio::test]
async fn a_response_format_is_a_forced_tool_whose_input_is_the_content_whole_and_streamed() {
    let (base, fake) = fake(None).await;
    let router = router(vec![bedrock(&base, MODEL, None)]).await;
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}}});
    let request = json!({
        "messages": [{"role": "user", "content": "Where?"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "place", "schema": schema}},
    });
    let answer = router
        .call(Request::new("g", request.clone()))
        .await
        .unwrap();
    let body = answer.body.to_value().unwrap();
    let message = &body["choices"][0]["message"];
    assert_eq!(
        serde_json::from_str::<Value>(message["content"].as_str().unwrap()).unwrap(),
        json!({"city": "Paris"})
    );
    assert!(message.get("tool_calls").is_none(), "{body}");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let sent = fake.seen.lock()[0].body.clone();
    assert_eq!(
        sent["toolConfig"],
        json!({
            "tools": [{"toolSpec": {"name": "json_tool_call", "inputSchema": {"json": schema}}}],
            "toolChoice": {"tool": {"name": "json_tool_call"}},
        })
    );

    let mut streamed = request;
    streamed["stream"] = true.into();
    let mut stream = router.stream(Request::new("g", streamed)).await.unwrap();
    let mut content = String::new();
    let mut last = None;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        let value = chunk.body.to_value().unwrap();
        content.push_str(
            value["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or(""),
        );
        last = Some((value, chunk.usage));
    }
    assert_eq!(
        serde_json::from_str::<Value>(&content).unwrap(),
        json!({"city": "Paris"})
    );
    let (value, usage) = last.unwrap();
    assert_eq!(value["choices"], json!([]));
    assert_eq!(usage.unwrap().total_tokens, 17);
    // Answered whole: the second call went to `converse`, not `converse-stream`.
    assert!(fake.seen.lock()[1].path.ends_with("/converse"));
}

#[tokio::test]
async fn a_wildcard_model_id_of_dots_is_refused_before_any_call() {
    let (base, fake) = fake(None).await;
    let backend = HttpBackend::new().unwrap();
    let wildcard = bedrock(&base, "*", None);
    for asked in ["bedrock/..", "bedrock/.", "bedrock/converse/.."] {
        let mut request = chat_request(false);
        request.body["model"] = json!(asked);
        let error = backend.call(&wildcard, &request).await.unwrap_err();
        assert_eq!(
            error.class,
            ErrorClass::BadRequest { status: 400 },
            "{asked}"
        );
        assert!(error.message.contains(asked), "{}", error.message);
        request.stream = true;
        let error = match backend.stream(&wildcard, &request).await {
            Err(error) => error,
            Ok(_) => panic!("{asked}: the stream started"),
        };
        assert_eq!(
            error.class,
            ErrorClass::BadRequest { status: 400 },
            "{asked}"
        );
    }
    assert!(fake.seen.lock().is_empty());
    // A slash or colon in a model id is encoded into its one segment and goes through.
    let mut request = chat_request(false);
    request.body["model"] = json!(format!("bedrock/{MODEL}"));
    backend.call(&wildcard, &request).await.unwrap();
    assert_eq!(fake.calls_of(MODEL), 1);
}
