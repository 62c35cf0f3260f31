//! The official Python SDKs (`openai`, `anthropic`) as clients of the gateway: each script in
//! `tests/sdk/` runs in the Python that `FERROLITE_PYTHON` names (`cargo xtask ci` makes that
//! virtual environment and sets it; without it the venv at `target/python-venv` is used when
//! present), against a gateway served on loopback with a master key, routing to scripted
//! upstreams on loopback. The SDKs parse what the gateway sends as they parse OpenAI's and
//! Anthropic's own answers, so a field out of shape fails here even when plain HTTP looks fine.
//!
//! Without Python the tests print a note and pass, unless `FERROLITE_REQUIRE_PYTHON=1` (set by
//! `cargo xtask ci`), when they fail.
//!
//! The scripts (`openai_client.py`, `anthropic_client.py`, their shared `steps.py`) run one
//! suite of SDK calls each time and print one JSON line per call (what the SDK parsed, or the
//! exception it raised), which the tests here assert on.
//!
//! The matrix: every script runs against every model group of [`groups`]; each group's
//! upstream scripts the same answer ([`TEXT`], [`USAGE`], the [`TOOL`] call when offered tools,
//! the text again once given the tool's result), so the assertions are the same whichever
//! provider's protocol the gateway translated to. A provider's fake joins the matrix as one
//! more [`Group`]: its `model_list` entry pointing at the fake, pushed in [`groups`] (as
//! [`anthropic_native`] over a scripted Anthropic Messages API, [`bedrock_converse`] over a
//! scripted Bedrock runtime, [`gemini_native`] over a scripted Gemini API).
//! `Group::received` carries what the OpenAI-compatible upstream received, `Group::calls`
//! what any group's upstream received, for the checks of the translated request (system
//! prompt, tools, tool results, images, limits, stop sequences, temperature) in the
//! upstream's own API.
#![cfg(all(feature = "gateway", feature = "http"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use ferrolite::gateway::{GatewaySettings, app, serve};
use serde_json::{Value, json};

/// The gateway's master key, which the SDKs send as their API key.
const KEY: &str = "sk-sdk-master";

/// The key the gateway sends to the OpenAI-compatible upstream.
const UPSTREAM_KEY: &str = "sk-sdk-upstream";

/// The model the OpenAI-compatible deployment names upstream.
const UPSTREAM_MODEL: &str = "gpt-4o-upstream";

/// The text every upstream answers a call without tools with, and the pieces it streams it in.
const TEXT: &str = "Hello from upstream";
const PIECES: [&str; 3] = ["Hel", "lo from", " upstream"];

/// The usage every upstream reports: prompt (input) and completion (output) tokens.
const USAGE: (u64, u64) = (11, 7);

/// The tool every tool step offers and every upstream calls when offered tools, with these
/// arguments.
const TOOL: &str = "get_weather";
const TOOL_ARGUMENTS: &str = r#"{"city":"Paris"}"#;

/// The 1x1 PNG the image steps send (`tests/sdk/steps.py`'s `PNG_BASE64`).
const PNG_BASE64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";

/// How long one script may run (several calls, the SDK's import included).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(90);

/// The Python interpreter with the SDKs, or `None` (and a note) when there is none and the
/// run does not require it.
fn python() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("FERROLITE_PYTHON").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    // The venv `cargo xtask python` makes, complete when its marker is written.
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/python-venv");
    if venv.join("ferrolite-requirements.txt").exists() {
        return Some(venv.join("bin/python"));
    }
    assert!(
        std::env::var("FERROLITE_REQUIRE_PYTHON").as_deref() != Ok("1"),
        "FERROLITE_REQUIRE_PYTHON=1 but FERROLITE_PYTHON is not set: run `cargo xtask python` \
         and set FERROLITE_PYTHON to the interpreter it prints"
    );
    eprintln!(
        "note: SDK client test skipped: FERROLITE_PYTHON is not set and target/python-venv does \
         not exist (`cargo xtask python` makes it)"
    );
    None
}

/// One call an upstream received: its path, the step its user message names, its body.
struct Call {
    path: &'static str,
    step: String,
    body: Value,
}

/// What an upstream received, in order.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<Call>>>);

impl Received {
    fn push(&self, path: &'static str, step: String, body: Value) {
        self.0.lock().unwrap().push(Call { path, step, body });
    }

    /// The bodies of the calls `step` made to `path` upstream.
    fn at(&self, path: &str, step: &str) -> Vec<Value> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|call| call.path == path && call.step == step)
            .map(|call| call.body.clone())
            .collect()
    }

    /// The chat completions `step` made upstream (the canonical form, translated).
    fn of(&self, step: &str) -> Vec<Value> {
        self.at(CHAT_PATH, step)
    }

    /// The Responses API calls `step` made upstream (a caller's request passed through).
    fn passed_through(&self, step: &str) -> Vec<Value> {
        self.at(RESPONSES_PATH, step)
    }

    /// How many calls `step` made upstream, whatever the path.
    fn all(&self, step: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|call| call.step == step)
            .count()
    }
}

const CHAT_PATH: &str = "/v1/chat/completions";
const RESPONSES_PATH: &str = "/v1/responses";

/// One model group of the matrix: its `model_list` entries (YAML list items, indented two
/// spaces) and, for the OpenAI-compatible upstream, the calls it received.
struct Group {
    name: &'static str,
    model_list: String,
    received: Option<Received>,
    /// The model a `/v1/messages` answer names: the group when the gateway translated it, the
    /// deployment's own when an Anthropic deployment's answer passed through as it came.
    messages_model: &'static str,
    /// The same for `/v1/responses` (passed through by an OpenAI deployment).
    responses_model: &'static str,
    /// The API the group's upstream speaks.
    api: Api,
    /// What the group's upstream received, whatever its API.
    calls: Received,
}

/// The API of a group's upstream, for the checks of what it received.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Api {
    OpenAi,
    Anthropic,
    Bedrock,
    Gemini,
}

/// The model groups every script runs against: an OpenAI-compatible deployment (the caller's
/// Responses requests pass through, chat and Messages requests are translated), an
/// Anthropic one (Messages requests pass through, the others are translated), a Bedrock
/// (Converse) and a Gemini API one (every request translated). Another
/// provider's fake joins as one more group whose upstream answers [`TEXT`], [`USAGE`] and the
/// [`TOOL`] call as [`openai_upstream`] does.
async fn groups() -> Vec<Group> {
    vec![
        openai_compatible().await,
        anthropic_native().await,
        bedrock_converse().await,
        gemini_native().await,
    ]
}

/// The model an `anthropic/` deployment names upstream.
const ANTHROPIC_MODEL: &str = "claude-upstream";

/// The path of Anthropic's Messages API.
const MESSAGES_PATH: &str = "/v1/messages";

/// The Anthropic deployment (`anthropic/`), over [`anthropic_upstream`].
async fn anthropic_native() -> Group {
    let received = Received::default();
    let base = anthropic_upstream(received.clone()).await;
    Group {
        name: "sdk-anthropic",
        model_list: format!(
            "  - model_name: sdk-anthropic\n    litellm_params: {{model: anthropic/{ANTHROPIC_MODEL}, \
             api_base: \"{base}\", api_key: {UPSTREAM_KEY}}}\n"
        ),
        received: None,
        messages_model: ANTHROPIC_MODEL,
        responses_model: "sdk-anthropic",
        api: Api::Anthropic,
        calls: received,
    }
}

/// What is wrong with a Messages request, as Anthropic would refuse it.
fn invalid_message(headers: &HeaderMap, body: &Value) -> Option<String> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if header("x-api-key") != Some(UPSTREAM_KEY) {
        return Some("x-api-key: not the deployment's key".into());
    }
    if header("anthropic-version").is_none() {
        return Some("anthropic-version: required".into());
    }
    if body["model"] != ANTHROPIC_MODEL {
        return Some(format!("model: {} is not {ANTHROPIC_MODEL}", body["model"]));
    }
    if !body["max_tokens"].is_u64() {
        return Some("max_tokens: required".into());
    }
    let Some(messages) = body["messages"].as_array().filter(|m| !m.is_empty()) else {
        return Some("messages: a non-empty list is required".into());
    };
    for (i, message) in messages.iter().enumerate() {
        let role = message["role"].as_str().unwrap_or("");
        if !["user", "assistant"].contains(&role) {
            return Some(format!("messages[{i}].role: {role:?}"));
        }
        let blocks = match &message["content"] {
            Value::String(_) => continue,
            Value::Array(blocks) => blocks,
            _ => return Some(format!("messages[{i}].content: required")),
        };
        for (j, block) in blocks.iter().enumerate() {
            let ok = match block["type"].as_str() {
                Some("text") => block["text"].is_string(),
                Some("image") => block["source"]["type"].is_string(),
                Some("tool_use") => block["id"].is_string() && block["input"].is_object(),
                Some("tool_result") => block["tool_use_id"].is_string(),
                _ => false,
            };
            if !ok {
                return Some(format!("messages[{i}].content[{j}]: {block}"));
            }
        }
    }
    for (i, tool) in body["tools"].as_array().into_iter().flatten().enumerate() {
        if !tool["name"].is_string() || !tool["input_schema"].is_object() {
            return Some(format!(
                "tools[{i}]: a name and an input_schema are required"
            ));
        }
    }
    None
}

/// A scripted Anthropic Messages API: it checks each request as Anthropic would and answers
/// [`TEXT`] (or, offered tools and not answering a tool's result, a `tool_use` of the first
/// one) with [`USAGE`], whole or as Anthropic's events. Its base URL (without `/v1`).
async fn anthropic_upstream(received: Received) -> String {
    use axum::routing::post;
    let app = axum::Router::new().route(
        MESSAGES_PATH,
        post(
            move |headers: HeaderMap, axum::Json(body): axum::Json<Value>| {
                let received = received.clone();
                async move {
                    received.push(MESSAGES_PATH, step_of(&body), body.clone());
                    if let Some(reason) = invalid_message(&headers, &body) {
                        let error = json!({"type": "error", "error": {
                            "type": "invalid_request_error",
                            "message": format!("fake upstream: {reason}")}});
                        return (StatusCode::BAD_REQUEST, axum::Json(error)).into_response();
                    }
                    let answered = body["messages"]
                        .as_array()
                        .and_then(|m| m.last())
                        .and_then(|m| m["content"].as_array())
                        .is_some_and(|blocks| blocks.iter().any(|b| b["type"] == "tool_result"));
                    let tool = body["tools"][0]["name"]
                        .as_str()
                        .filter(|_| !answered)
                        .map(str::to_string);
                    message_answer(tool.as_deref(), body["stream"] == true)
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// Anthropic's answer, whole or streamed: [`TEXT`], or a `tool_use` of `tool`.
fn message_answer(tool: Option<&str>, stream: bool) -> Response {
    let (block, stop) = match tool {
        Some(name) => (
            json!({"type": "tool_use", "id": "toolu_upstream", "name": name,
                "input": serde_json::from_str::<Value>(TOOL_ARGUMENTS).unwrap()}),
            "tool_use",
        ),
        None => (json!({"type": "text", "text": TEXT}), "end_turn"),
    };
    let message = |content: Value, stop: Value, output: u64| {
        json!({"id": "msg_upstream", "type": "message", "role": "assistant",
            "model": ANTHROPIC_MODEL, "content": content, "stop_reason": stop,
            "stop_sequence": null, "usage": {"input_tokens": USAGE.0, "output_tokens": output}})
    };
    if !stream {
        return axum::Json(message(json!([block]), stop.into(), USAGE.1)).into_response();
    }
    let mut events =
        vec![json!({"type": "message_start", "message": message(json!([]), Value::Null, 1)})];
    match tool {
        Some(name) => {
            events.push(json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "tool_use", "id": "toolu_upstream", "name": name,
                "input": {}}}));
            let (a, b) = TOOL_ARGUMENTS.split_at(8);
            for piece in [a, b] {
                events.push(json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "input_json_delta", "partial_json": piece}}));
            }
        }
        None => {
            events.push(json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}}));
            events.push(json!({"type": "ping"}));
            for piece in PIECES {
                events.push(json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": piece}}));
            }
        }
    }
    events.push(json!({"type": "content_block_stop", "index": 0}));
    events.push(json!({"type": "message_delta",
        "delta": {"stop_reason": stop, "stop_sequence": null},
        "usage": {"output_tokens": USAGE.1}}));
    events.push(json!({"type": "message_stop"}));
    let text: String = events
        .iter()
        .map(|event| {
            format!(
                "event: {}\ndata: {event}\n\n",
                event["type"].as_str().unwrap()
            )
        })
        .collect();
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(axum::body::Body::from(text))
        .unwrap()
}

/// The model id a `bedrock/` deployment names upstream.
const BEDROCK_MODEL: &str = "anthropic.claude-sdk-v1:0";

/// The AWS credentials and region of the `bedrock/` deployment.
const AWS_KEY_ID: &str = "AKIDSDKCLIENTS";
const AWS_SECRET: &str = "sdk-clients-secret-key";
const AWS_REGION: &str = "us-west-2";

/// The paths of Bedrock's Converse API for [`BEDROCK_MODEL`] (its `:` percent-encoded).
const CONVERSE_PATH: &str = "/model/anthropic.claude-sdk-v1%3A0/converse";
const CONVERSE_STREAM_PATH: &str = "/model/anthropic.claude-sdk-v1%3A0/converse-stream";

/// The Bedrock deployment (`bedrock/`, the Converse API), over [`bedrock_runtime`].
async fn bedrock_converse() -> Group {
    let received = Received::default();
    let base = bedrock_runtime(received.clone()).await;
    Group {
        name: "sdk-bedrock",
        model_list: format!(
            "  - model_name: sdk-bedrock\n    litellm_params: {{model: \"bedrock/{BEDROCK_MODEL}\", \
             api_base: \"{base}\", aws_access_key_id: {AWS_KEY_ID}, \
             aws_secret_access_key: {AWS_SECRET}, aws_region_name: {AWS_REGION}}}\n"
        ),
        received: None,
        messages_model: "sdk-bedrock",
        responses_model: "sdk-bedrock",
        api: Api::Bedrock,
        calls: received,
    }
}

/// What is wrong with a Converse request, as Bedrock would refuse it: the signature's
/// presence (its key id and date; `provider_bedrock.rs` recomputes whole signatures), then
/// the body (messages alternate starting with the user's, each content block one known
/// member, tool blocks only with a `toolConfig`).
fn invalid_converse(headers: &HeaderMap, body: &Value) -> Option<String> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let credential = format!("AWS4-HMAC-SHA256 Credential={AWS_KEY_ID}/");
    if !header("authorization").is_some_and(|a| a.starts_with(&credential)) {
        return Some("authorization: not signed with the deployment's key".into());
    }
    if header("x-amz-date").is_none() {
        return Some("x-amz-date: required".into());
    }
    let Some(messages) = body["messages"].as_array().filter(|m| !m.is_empty()) else {
        return Some("messages: a non-empty list is required".into());
    };
    for (i, message) in messages.iter().enumerate() {
        let expected = if i % 2 == 0 { "user" } else { "assistant" };
        if message["role"] != expected {
            return Some(format!(
                "A conversation must alternate between user and assistant roles (messages.{i})"
            ));
        }
        let Some(blocks) = message["content"].as_array().filter(|c| !c.is_empty()) else {
            return Some(format!(
                "messages.{i}.content: a non-empty list is required"
            ));
        };
        for (j, block) in blocks.iter().enumerate() {
            let ok = match block.as_object().map(|o| o.keys().collect::<Vec<_>>()) {
                Some(keys) if keys.len() == 1 => match keys[0].as_str() {
                    "text" => block["text"].is_string(),
                    "image" => block["image"]["source"]["bytes"].is_string(),
                    "toolUse" => {
                        block["toolUse"]["toolUseId"].is_string()
                            && block["toolUse"]["input"].is_object()
                            && body["toolConfig"].is_object()
                    }
                    "toolResult" => {
                        block["toolResult"]["toolUseId"].is_string()
                            && block["toolResult"]["content"].is_array()
                            && body["toolConfig"].is_object()
                    }
                    _ => false,
                },
                _ => false,
            };
            if !ok {
                return Some(format!("messages.{i}.content.{j}: {block}"));
            }
        }
    }
    for (i, tool) in body["toolConfig"]["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        if !tool["toolSpec"]["name"].is_string()
            || !tool["toolSpec"]["inputSchema"]["json"].is_object()
        {
            return Some(format!(
                "toolConfig.tools.{i}: a toolSpec with a name and an inputSchema"
            ));
        }
    }
    None
}

/// A scripted Bedrock runtime: it checks each Converse request ([`invalid_converse`]) and
/// answers [`TEXT`] (or, given a `toolConfig` and not answering a tool's result, a `toolUse`
/// of its first tool) with [`USAGE`], whole or as event-stream frames. Its base URL.
async fn bedrock_runtime(received: Received) -> String {
    use axum::routing::post;
    let handler = |path: &'static str| {
        let received = received.clone();
        post(
            move |headers: HeaderMap, axum::Json(body): axum::Json<Value>| {
                let received = received.clone();
                async move {
                    received.push(path, step_of(&body), body.clone());
                    if let Some(reason) = invalid_converse(&headers, &body) {
                        let mut response = (
                            StatusCode::BAD_REQUEST,
                            axum::Json(json!({"message": format!("fake upstream: {reason}")})),
                        )
                            .into_response();
                        response
                            .headers_mut()
                            .insert("x-amzn-errortype", "ValidationException".parse().unwrap());
                        return response;
                    }
                    let answered = body["messages"]
                        .as_array()
                        .and_then(|m| m.last())
                        .and_then(|m| m["content"].as_array())
                        .is_some_and(|blocks| blocks.iter().any(|b| b.get("toolResult").is_some()));
                    let tool = body["toolConfig"]["tools"][0]["toolSpec"]["name"]
                        .as_str()
                        .filter(|_| !answered);
                    converse_answer(tool, path == CONVERSE_STREAM_PATH)
                }
            },
        )
    };
    let app = axum::Router::new()
        .route(CONVERSE_PATH, handler(CONVERSE_PATH))
        .route(CONVERSE_STREAM_PATH, handler(CONVERSE_STREAM_PATH));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// One AWS event-stream frame of an event `name` with a JSON payload.
fn event_frame(name: &str, payload: &Value) -> Vec<u8> {
    use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
    let header = |name: &str, value: &str| {
        Header::new(
            name.to_string(),
            HeaderValue::String(value.to_string().into()),
        )
    };
    let message = Message::new_from_parts(
        vec![
            header(":message-type", "event"),
            header(":event-type", name),
            header(":content-type", "application/json"),
        ],
        serde_json::to_vec(payload).unwrap(),
    );
    let mut out = Vec::new();
    aws_smithy_eventstream::frame::write_message_to(&message, &mut out).unwrap();
    out
}

/// Converse's answer, whole or as `/converse-stream`'s frames: [`TEXT`], or a `toolUse` of
/// `tool`.
fn converse_answer(tool: Option<&str>, stream: bool) -> Response {
    let stop = if tool.is_some() {
        "tool_use"
    } else {
        "end_turn"
    };
    let usage = json!({"inputTokens": USAGE.0, "outputTokens": USAGE.1,
        "totalTokens": USAGE.0 + USAGE.1});
    if !stream {
        let block = match tool {
            Some(name) => json!({"toolUse": {"toolUseId": "tooluse_weather", "name": name,
                "input": serde_json::from_str::<Value>(TOOL_ARGUMENTS).unwrap()}}),
            None => json!({"text": TEXT}),
        };
        return axum::Json(json!({
            "output": {"message": {"role": "assistant", "content": [block]}},
            "stopReason": stop, "usage": usage, "metrics": {"latencyMs": 1}}))
        .into_response();
    }
    let mut frames = event_frame("messageStart", &json!({"role": "assistant"}));
    match tool {
        Some(name) => {
            frames.extend(event_frame(
                "contentBlockStart",
                &json!({"contentBlockIndex": 0,
                    "start": {"toolUse": {"toolUseId": "tooluse_weather", "name": name}}}),
            ));
            let (a, b) = TOOL_ARGUMENTS.split_at(8);
            for piece in [a, b] {
                frames.extend(event_frame(
                    "contentBlockDelta",
                    &json!({"contentBlockIndex": 0, "delta": {"toolUse": {"input": piece}}}),
                ));
            }
        }
        None => {
            for piece in PIECES {
                frames.extend(event_frame(
                    "contentBlockDelta",
                    &json!({"contentBlockIndex": 0, "delta": {"text": piece}}),
                ));
            }
        }
    }
    frames.extend(event_frame(
        "contentBlockStop",
        &json!({"contentBlockIndex": 0}),
    ));
    frames.extend(event_frame("messageStop", &json!({"stopReason": stop})));
    frames.extend(event_frame(
        "metadata",
        &json!({"usage": usage, "metrics": {"latencyMs": 1}}),
    ));
    // Cut at an odd place, so the gateway decodes frames split across reads.
    let cut = frames.len() / 3;
    let parts: Vec<Result<Vec<u8>, std::io::Error>> =
        vec![Ok(frames[..cut].to_vec()), Ok(frames[cut..].to_vec())];
    Response::builder()
        .header("content-type", "application/vnd.amazon.eventstream")
        .body(axum::body::Body::from_stream(futures_util::stream::iter(
            parts,
        )))
        .unwrap()
}

/// The model a `gemini/` deployment names upstream.
const GEMINI_MODEL: &str = "gemini-sdk-upstream";

/// The paths of the Gemini API's `generateContent` and `streamGenerateContent` for
/// [`GEMINI_MODEL`].
const GENERATE_PATH: &str = "/v1beta/models/gemini-sdk-upstream:generateContent";
const GENERATE_STREAM_PATH: &str = "/v1beta/models/gemini-sdk-upstream:streamGenerateContent";

/// The Gemini API deployment (`gemini/`, an API key), over [`gemini_api`].
async fn gemini_native() -> Group {
    let received = Received::default();
    let base = gemini_api(received.clone()).await;
    Group {
        name: "sdk-gemini",
        model_list: format!(
            "  - model_name: sdk-gemini\n    litellm_params: {{model: gemini/{GEMINI_MODEL}, \
             api_base: \"{base}/v1beta\", api_key: {UPSTREAM_KEY}}}\n"
        ),
        received: None,
        messages_model: "sdk-gemini",
        responses_model: "sdk-gemini",
        api: Api::Gemini,
        calls: received,
    }
}

/// What is wrong with a `generateContent` request, as Google would refuse it: the key, the
/// `alt=sse` of a stream, `contents` of `user` and `model` turns whose parts are each one
/// known member, the request's fields.
fn invalid_generate(
    headers: &HeaderMap,
    query: Option<&str>,
    stream: bool,
    body: &Value,
) -> Option<String> {
    if headers.get("x-goog-api-key").and_then(|v| v.to_str().ok()) != Some(UPSTREAM_KEY) {
        return Some("x-goog-api-key: not the deployment's key".into());
    }
    if stream && query != Some("alt=sse") {
        return Some(format!("alt=sse is required, the query is {query:?}"));
    }
    let Some(contents) = body["contents"].as_array().filter(|c| !c.is_empty()) else {
        return Some("contents is not specified".into());
    };
    for (i, content) in contents.iter().enumerate() {
        if !["user", "model"].contains(&content["role"].as_str().unwrap_or("")) {
            return Some(format!("contents[{i}].role must be user or model"));
        }
        let Some(parts) = content["parts"].as_array().filter(|p| !p.is_empty()) else {
            return Some(format!("contents[{i}].parts must not be empty"));
        };
        for (j, part) in parts.iter().enumerate() {
            let ok = match part.as_object().map(|o| o.keys().collect::<Vec<_>>()) {
                Some(keys) if keys.len() == 1 => match keys[0].as_str() {
                    "text" => part["text"].is_string(),
                    "inlineData" => {
                        part["inlineData"]["mimeType"].is_string()
                            && part["inlineData"]["data"].is_string()
                    }
                    "functionCall" => part["functionCall"]["name"].is_string(),
                    "functionResponse" => {
                        part["functionResponse"]["name"].is_string()
                            && part["functionResponse"]["response"].is_object()
                    }
                    _ => false,
                },
                _ => false,
            };
            if !ok {
                return Some(format!("contents[{i}].parts[{j}]: {part}"));
            }
        }
    }
    let known = [
        "contents",
        "systemInstruction",
        "generationConfig",
        "tools",
        "toolConfig",
        "safetySettings",
    ];
    if let Some(field) = body
        .as_object()
        .and_then(|o| o.keys().find(|k| !known.contains(&k.as_str())))
    {
        return Some(format!(
            "Invalid JSON payload received. Unknown name \"{field}\""
        ));
    }
    None
}

/// A scripted Gemini API: it checks each request ([`invalid_generate`]) and answers [`TEXT`]
/// (or, given tools and not answering a function's result, a `functionCall` of the first one)
/// with [`USAGE`], whole or as server-sent events. Its base URL (without `/v1beta`).
async fn gemini_api(received: Received) -> String {
    use axum::routing::post;
    let handler = |path: &'static str| {
        let received = received.clone();
        post(
            move |uri: axum::http::Uri, headers: HeaderMap, axum::Json(body): axum::Json<Value>| {
                let received = received.clone();
                async move {
                    let as_messages: Vec<Value> = body["contents"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|c| json!({"role": c["role"], "content": c["parts"]}))
                        .collect();
                    received.push(
                        path,
                        step_of(&json!({"messages": as_messages})),
                        body.clone(),
                    );
                    let stream = path == GENERATE_STREAM_PATH;
                    if let Some(reason) = invalid_generate(&headers, uri.query(), stream, &body) {
                        let error = json!({"error": {"code": 400,
                            "message": format!("fake upstream: {reason}"),
                            "status": "INVALID_ARGUMENT"}});
                        return (StatusCode::BAD_REQUEST, axum::Json(error)).into_response();
                    }
                    let answered = body["contents"]
                        .as_array()
                        .and_then(|c| c.last())
                        .and_then(|c| c["parts"].as_array())
                        .is_some_and(|parts| {
                            parts.iter().any(|p| p.get("functionResponse").is_some())
                        });
                    let tool = body["tools"][0]["functionDeclarations"][0]["name"]
                        .as_str()
                        .filter(|_| !answered);
                    gemini_answer(tool, stream)
                }
            },
        )
    };
    let app = axum::Router::new()
        .route(GENERATE_PATH, handler(GENERATE_PATH))
        .route(GENERATE_STREAM_PATH, handler(GENERATE_STREAM_PATH));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// The Gemini API's answer, whole or as `alt=sse` events: [`TEXT`], or a `functionCall` of
/// `tool`.
fn gemini_answer(tool: Option<&str>, stream: bool) -> Response {
    let usage = json!({"promptTokenCount": USAGE.0, "candidatesTokenCount": USAGE.1,
        "totalTokenCount": USAGE.0 + USAGE.1});
    let event = |parts: Value, last: bool| {
        let mut event = json!({"candidates": [{"content": {"role": "model", "parts": parts},
            "index": 0}], "responseId": "resp-sdk", "modelVersion": GEMINI_MODEL});
        if last {
            event["candidates"][0]["finishReason"] = "STOP".into();
            event["usageMetadata"] = usage.clone();
        } else {
            event["usageMetadata"] = json!({"promptTokenCount": USAGE.0,
                "totalTokenCount": USAGE.0});
        }
        event
    };
    let call = |name: &str| {
        json!([{"functionCall": {"name": name,
            "args": serde_json::from_str::<Value>(TOOL_ARGUMENTS).unwrap()}}])
    };
    if !stream {
        let parts = match tool {
            Some(name) => call(name),
            None => json!([{"text": TEXT}]),
        };
        return axum::Json(event(parts, true)).into_response();
    }
    let events = match tool {
        Some(name) => vec![event(call(name), true)],
        None => PIECES
            .iter()
            .enumerate()
            .map(|(i, piece)| event(json!([{"text": piece}]), i == PIECES.len() - 1))
            .collect(),
    };
    let text: String = events
        .iter()
        .map(|e| format!("data: {e}\r\n\r\n"))
        .collect();
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(axum::body::Body::from(text))
        .unwrap()
}

/// The OpenAI-compatible deployment (`openai/`), over [`openai_upstream`].
async fn openai_compatible() -> Group {
    let received = Received::default();
    let base = openai_upstream(received.clone()).await;
    Group {
        name: "sdk-openai",
        model_list: format!(
            "  - model_name: sdk-openai\n    litellm_params: {{model: openai/{UPSTREAM_MODEL}, \
             api_base: \"{base}\", api_key: {UPSTREAM_KEY}}}\n"
        ),
        received: Some(received.clone()),
        messages_model: "sdk-openai",
        responses_model: UPSTREAM_MODEL,
        api: Api::OpenAi,
        calls: received,
    }
}

/// The step the request's user message names (`Say hello (STEP)`, the last user message with
/// text: Anthropic sends a tool's result as a user message), whether its content is a string
/// or a list of text parts; in `messages` (chat completions, Anthropic) or a Responses
/// request's `input`.
fn step_of(body: &Value) -> String {
    let text_of = |content: &Value| match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<String>(),
        _ => String::new(),
    };
    let text = match (&body["messages"], &body["input"]) {
        (Value::Array(messages), _) | (_, Value::Array(messages)) => messages
            .iter()
            .rev()
            .filter(|m| m["role"] == "user")
            .map(|m| text_of(&m["content"]))
            .find(|text| !text.is_empty())
            .unwrap_or_default(),
        (_, Value::String(input)) => input.clone(),
        _ => String::new(),
    };
    text.rsplit_once('(')
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .unwrap_or("?")
        .to_string()
}

/// What is wrong with a chat completion request, as OpenAI would refuse it.
fn invalid(headers: &HeaderMap, body: &Value) -> Option<String> {
    let bearer = format!("Bearer {UPSTREAM_KEY}");
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(bearer.as_str()) {
        return Some("authorization: not the deployment's key".into());
    }
    if body["model"] != UPSTREAM_MODEL {
        return Some(format!("model: {} is not {UPSTREAM_MODEL}", body["model"]));
    }
    let Some(messages) = body["messages"].as_array().filter(|m| !m.is_empty()) else {
        return Some("messages: a non-empty list is required".into());
    };
    for (i, message) in messages.iter().enumerate() {
        let role = message["role"].as_str().unwrap_or("");
        if !["system", "developer", "user", "assistant", "tool"].contains(&role) {
            return Some(format!("messages[{i}].role: {role:?}"));
        }
        if role != "assistant" && message["content"].is_null() {
            return Some(format!("messages[{i}].content: required"));
        }
        if let Some(parts) = message["content"].as_array() {
            for (j, part) in parts.iter().enumerate() {
                let ok = match part["type"].as_str() {
                    Some("text") => part["text"].is_string(),
                    Some("image_url") => part["image_url"]["url"].is_string(),
                    _ => false,
                };
                if !ok {
                    return Some(format!("messages[{i}].content[{j}]: {part}"));
                }
            }
        }
        if role == "tool" && !message["tool_call_id"].is_string() {
            return Some(format!("messages[{i}].tool_call_id: required"));
        }
        for (j, call) in message["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let arguments = call["function"]["arguments"].as_str();
            if call["type"] != "function"
                || !call["id"].is_string()
                || !call["function"]["name"].is_string()
                || arguments
                    .and_then(|a| serde_json::from_str::<Value>(a).ok())
                    .is_none()
            {
                return Some(format!("messages[{i}].tool_calls[{j}]: {call}"));
            }
        }
    }
    if let Some(tools) = body.get("tools").filter(|t| !t.is_null()) {
        let Some(tools) = tools.as_array() else {
            return Some("tools: a list is required".into());
        };
        for (i, tool) in tools.iter().enumerate() {
            if tool["type"] != "function" || !tool["function"]["name"].is_string() {
                return Some(format!("tools[{i}]: a function with a name is required"));
            }
        }
    }
    if !matches!(
        body.get("stream"),
        None | Some(Value::Bool(_)) | Some(Value::Null)
    ) {
        return Some("stream: a boolean".into());
    }
    None
}

/// A scripted OpenAI-compatible upstream: it checks each chat completion request as OpenAI
/// would (key, model, messages and their parts, tool calls and results, tools) and answers
/// [`TEXT`] (or, offered tools and not answering a tool's result, a call of the first one with
/// [`TOOL_ARGUMENTS`]) whole or streamed, with [`USAGE`] (streamed: in a last
/// chunk when asked with `stream_options.include_usage`); a Responses API request passed
/// through is answered the same in the Responses API's shape ([`responses_upstream`]). Its
/// base URL.
async fn openai_upstream(received: Received) -> String {
    use axum::routing::post;
    let responses = received.clone();
    let app = axum::Router::new()
        .route(
            RESPONSES_PATH,
            post(
                move |headers: HeaderMap, axum::Json(body): axum::Json<Value>| {
                    let received = responses.clone();
                    async move { responses_upstream(&received, &headers, body) }
                },
            ),
        )
        .route(
        CHAT_PATH,
        post(
            move |headers: HeaderMap, axum::Json(body): axum::Json<Value>| {
                let received = received.clone();
                async move {
                    received.push(CHAT_PATH, step_of(&body), body.clone());
                    if let Some(reason) = invalid(&headers, &body) {
                        let error = json!({"error": {"message": format!("fake upstream: {reason}"),
                        "type": "invalid_request_error", "param": null, "code": null}});
                        return (StatusCode::BAD_REQUEST, axum::Json(error)).into_response();
                    }
                    // A tool's result answered: the text; offered tools: a call.
                    let answered = body["messages"]
                        .as_array()
                        .and_then(|m| m.last())
                        .is_some_and(|m| m["role"] == "tool");
                    let tool = body["tools"][0]["function"]["name"]
                        .as_str()
                        .filter(|_| !answered)
                        .map(str::to_string);
                    if body["stream"] == true {
                        let include_usage = body["stream_options"]["include_usage"] == true;
                        streamed(tool.as_deref(), include_usage)
                    } else {
                        axum::Json(whole(tool.as_deref())).into_response()
                    }
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/v1")
}

/// OpenAI's Responses API as the upstream answers it, for a caller's request the gateway
/// passed through: checked as OpenAI would (key, model, `input`), answered with [`TEXT`] (or a
/// `function_call` of the first tool) and [`USAGE`], whole or as the API's events.
fn responses_upstream(received: &Received, headers: &HeaderMap, body: Value) -> Response {
    received.push(RESPONSES_PATH, step_of(&body), body.clone());
    let bearer = format!("Bearer {UPSTREAM_KEY}");
    let problem =
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(bearer.as_str()) {
            Some("authorization: not the deployment's key".to_string())
        } else if body["model"] != UPSTREAM_MODEL {
            Some(format!("model: {} is not {UPSTREAM_MODEL}", body["model"]))
        } else if !(body["input"].is_string() || body["input"].is_array()) {
            Some("input: a string or a list is required".to_string())
        } else {
            None
        };
    if let Some(reason) = problem {
        let error = json!({"error": {"message": format!("fake upstream: {reason}"),
            "type": "invalid_request_error", "param": null, "code": null}});
        return (StatusCode::BAD_REQUEST, axum::Json(error)).into_response();
    }
    let answered = body["input"]
        .as_array()
        .and_then(|i| i.last())
        .is_some_and(|i| i["type"] == "function_call_output");
    let tool = body["tools"][0]["name"].as_str().filter(|_| !answered);
    // An output item; its text or arguments are empty while it is in progress.
    let item = |status: &str, text: &str| match tool {
        Some(name) => json!({"type": "function_call", "id": "fc_sdk", "call_id": "call_weather",
            "name": name, "status": status,
            "arguments": if text.is_empty() { "" } else { TOOL_ARGUMENTS }}),
        None => json!({"type": "message", "id": "msg_sdk", "role": "assistant", "status": status,
            "content": [{"type": "output_text", "text": text, "annotations": []}]}),
    };
    let response = |status: &str, output: Value, usage: Value| {
        json!({"id": "resp_upstream", "object": "response", "created_at": 1, "status": status,
            "model": UPSTREAM_MODEL, "instructions": body["instructions"], "output": output,
            "tools": body.get("tools").cloned().unwrap_or(json!([])), "tool_choice": "auto",
            "parallel_tool_calls": true, "usage": usage})
    };
    let usage = json!({"input_tokens": USAGE.0, "output_tokens": USAGE.1,
        "total_tokens": USAGE.0 + USAGE.1, "input_tokens_details": {"cached_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": 0}});
    let done = response("completed", json!([item("completed", TEXT)]), usage);
    if body["stream"] != true {
        return axum::Json(done).into_response();
    }
    let mut events = vec![
        json!({"type": "response.created",
            "response": response("in_progress", json!([]), Value::Null)}),
        json!({"type": "response.output_item.added", "output_index": 0,
            "item": item("in_progress", "")}),
    ];
    if tool.is_some() {
        let (a, b) = TOOL_ARGUMENTS.split_at(8);
        for piece in [a, b] {
            events.push(json!({"type": "response.function_call_arguments.delta",
                "item_id": "fc_sdk", "output_index": 0, "delta": piece}));
        }
        events.push(json!({"type": "response.function_call_arguments.done",
            "item_id": "fc_sdk", "output_index": 0, "arguments": TOOL_ARGUMENTS}));
    } else {
        let part = |text: &str| json!({"type": "output_text", "text": text, "annotations": []});
        let at = json!({"item_id": "msg_sdk", "output_index": 0, "content_index": 0});
        let with = |mut event: Value| {
            for (k, v) in at.as_object().unwrap() {
                event[k] = v.clone();
            }
            event
        };
        events.push(with(
            json!({"type": "response.content_part.added", "part": part("")}),
        ));
        for piece in PIECES {
            events.push(with(
                json!({"type": "response.output_text.delta", "delta": piece}),
            ));
        }
        events.push(with(
            json!({"type": "response.output_text.done", "text": TEXT}),
        ));
        events.push(with(
            json!({"type": "response.content_part.done", "part": part(TEXT)}),
        ));
    }
    events.push(
        json!({"type": "response.output_item.done", "output_index": 0,
        "item": item("completed", TEXT)}),
    );
    events.push(json!({"type": "response.completed", "response": done}));
    let mut text = String::new();
    for (n, mut event) in events.into_iter().enumerate() {
        event["sequence_number"] = n.into();
        text.push_str(&format!(
            "event: {}\ndata: {event}\n\n",
            event["type"].as_str().unwrap()
        ));
    }
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(axum::body::Body::from(text))
        .unwrap()
}

fn usage_json() -> Value {
    json!({"prompt_tokens": USAGE.0, "completion_tokens": USAGE.1,
        "total_tokens": USAGE.0 + USAGE.1})
}

/// The whole answer: [`TEXT`], or a call of `tool`.
fn whole(tool: Option<&str>) -> Value {
    let (message, finish) = match tool {
        Some(name) => (
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_weather",
                "type": "function", "function": {"name": name, "arguments": TOOL_ARGUMENTS}}]}),
            "tool_calls",
        ),
        None => (json!({"role": "assistant", "content": TEXT}), "stop"),
    };
    json!({"id": "chatcmpl-sdk", "object": "chat.completion", "created": 1,
        "model": UPSTREAM_MODEL, "choices": [{"index": 0, "message": message,
        "finish_reason": finish}], "usage": usage_json()})
}

/// The streamed answer, as OpenAI sends it: a role chunk, the pieces, a finish chunk, the
/// usage chunk when asked for, `[DONE]`.
fn streamed(tool: Option<&str>, include_usage: bool) -> Response {
    let chunk = |delta: Value, finish: Value| {
        let mut chunk = json!({"id": "chatcmpl-sdk", "object": "chat.completion.chunk",
            "created": 1, "model": UPSTREAM_MODEL,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        if include_usage {
            chunk["usage"] = Value::Null;
        }
        format!("data: {chunk}\n\n")
    };
    let mut text = String::new();
    match tool {
        Some(name) => {
            text.push_str(&chunk(
                json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0,
                    "id": "call_weather", "type": "function",
                    "function": {"name": name, "arguments": ""}}]}),
                Value::Null,
            ));
            let (a, b) = TOOL_ARGUMENTS.split_at(8);
            for piece in [a, b] {
                text.push_str(&chunk(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
                    Value::Null,
                ));
            }
            text.push_str(&chunk(json!({}), "tool_calls".into()));
        }
        None => {
            text.push_str(&chunk(
                json!({"role": "assistant", "content": ""}),
                Value::Null,
            ));
            for piece in PIECES {
                text.push_str(&chunk(json!({"content": piece}), Value::Null));
            }
            text.push_str(&chunk(json!({}), "stop".into()));
        }
    }
    if include_usage {
        let usage = json!({"id": "chatcmpl-sdk", "object": "chat.completion.chunk",
            "created": 1, "model": UPSTREAM_MODEL, "choices": [], "usage": usage_json()});
        text.push_str(&format!("data: {usage}\n\n"));
    }
    text.push_str("data: [DONE]\n\n");
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(axum::body::Body::from(text))
        .unwrap()
}

/// A gateway on a free loopback port over `groups` (the HTTP backend, the master key [`KEY`]),
/// built from YAML as `ferrolite serve` builds it; its base URL.
async fn gateway(groups: &[Group]) -> String {
    let model_list: String = groups.iter().map(|g| g.model_list.as_str()).collect();
    let yaml = format!("model_list:\n{model_list}general_settings:\n  master_key: {KEY}\n");
    let config = ferrolite::Config::from_yaml(&yaml).unwrap();
    let settings = GatewaySettings {
        master_key: config.master_key.clone(),
        api_keys: config.api_keys.clone(),
        ..GatewaySettings::default()
    };
    let backend: Arc<dyn ferrolite::router::Backend> =
        Arc::new(ferrolite::http::HttpBackend::new().unwrap());
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

/// What one script printed: its steps' lines by step name.
struct Steps {
    script: String,
    lines: BTreeMap<String, Value>,
}

impl Steps {
    /// The line of `step`, which must have succeeded (the SDK raised nothing).
    fn ok(&self, step: &str) -> &Value {
        let line = self.line(step);
        assert!(
            line.get("exception").is_none(),
            "{}: step {step} raised {}: {}\n{}",
            self.script,
            line["exception"],
            line["message"],
            line["traceback"].as_str().unwrap_or("")
        );
        line
    }

    /// The line of `step`, which must have raised; its exception class, status and body.
    fn raised(&self, step: &str) -> &Value {
        let line = self.line(step);
        assert!(
            line.get("exception").is_some(),
            "{}: step {step} did not raise: {line}",
            self.script
        );
        line
    }

    fn line(&self, step: &str) -> &Value {
        self.lines
            .get(step)
            .unwrap_or_else(|| panic!("{}: no line for step {step}: {:?}", self.script, self.lines))
    }
}

/// Runs `tests/sdk/{script} {suite}` with `python` against the gateway at `base` with its
/// master key, calling model group `model`; the steps it printed.
async fn run(python: &PathBuf, script: &str, suite: &str, base: &str, model: &str) -> Steps {
    run_as(python, script, suite, (base, KEY), model).await
}

/// [`run`] against the server at `base` with `key`.
async fn run_as(
    python: &PathBuf,
    script: &str,
    suite: &str,
    (base, key): (&str, &str),
    model: &str,
) -> Steps {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk");
    let child = tokio::process::Command::new(python)
        .arg(dir.join(script))
        .arg(suite)
        .env("FERROLITE_GATEWAY", base)
        .env("FERROLITE_KEY", key)
        .env("FERROLITE_MODEL", model)
        // The SDKs must reach the gateway directly, whatever proxy the machine names.
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    let output = tokio::time::timeout(SCRIPT_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{script} {suite} ran over {SCRIPT_TIMEOUT:?}"))
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} {suite} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let lines = stdout
        .lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{script}: not a JSON line ({e}): {line}\n{stderr}"));
            (value["step"].as_str().unwrap().to_string(), value)
        })
        .collect();
    Steps {
        script: format!("{script} {suite} ({model})"),
        lines,
    }
}

/// The one request `step` sent to `group`'s upstream on `path`.
fn sent_once(group: &Group, path: &str, step: &str) -> Value {
    let sent = group.calls.at(path, step);
    assert_eq!(
        sent.len(),
        1,
        "{}: {step} sent to {path}: {sent:?}",
        group.name
    );
    sent.into_iter().next().unwrap()
}

/// The paths of `group`'s upstream for a whole and a streamed call, when its API is not
/// OpenAI's (whose checks are `Group::received`'s).
fn native_paths(group: &Group) -> Option<(&'static str, &'static str)> {
    match group.api {
        Api::OpenAi => None,
        Api::Anthropic => Some((MESSAGES_PATH, MESSAGES_PATH)),
        Api::Bedrock => Some((CONVERSE_PATH, CONVERSE_STREAM_PATH)),
        Api::Gemini => Some((GENERATE_PATH, GENERATE_STREAM_PATH)),
    }
}

/// The content blocks (Converse) or parts (Gemini) of a translated request that have `key`,
/// in order, whatever turn they are in.
fn members(sent: &Value, key: &str) -> Vec<Value> {
    let (turns, blocks) = match sent.get("contents") {
        Some(_) => ("contents", "parts"),
        None => ("messages", "content"),
    };
    sent[turns]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|turn| turn[blocks].as_array())
        .flatten()
        .filter_map(|block| block.get(key).cloned())
        .collect()
}

/// The system prompt, token limit and stop sequences or temperature of a request translated
/// to Converse or the Gemini API, as `group`'s upstream received it.
fn assert_generation(
    group: &Group,
    sent: &Value,
    system: Option<&str>,
    limit: u64,
    setting: (&str, Value),
) {
    let (config, system_text, limit_field, setting_field) = match group.api {
        Api::Bedrock => (
            &sent["inferenceConfig"],
            &sent["system"][0]["text"],
            "maxTokens",
            setting.0,
        ),
        Api::Gemini => (
            &sent["generationConfig"],
            &sent["systemInstruction"]["parts"][0]["text"],
            "maxOutputTokens",
            setting.0,
        ),
        _ => unreachable!(),
    };
    match system {
        Some(system) => assert_eq!(system_text, system, "{}: {sent}", group.name),
        None => assert!(system_text.is_null(), "{}: {sent}", group.name),
    }
    assert_eq!(config[limit_field], limit, "{}: {sent}", group.name);
    assert_eq!(config[setting_field], setting.1, "{}: {sent}", group.name);
}

/// The translated tool round trip as a Converse or Gemini upstream received it: the call of
/// [`TOOL`] with [`TOOL_ARGUMENTS`] (Converse: under `call_id`), then its result `Sunny`.
fn assert_native_round_trip(group: &Group, sent: &Value, call_id: &str) {
    let arguments = serde_json::from_str::<Value>(TOOL_ARGUMENTS).unwrap();
    match group.api {
        Api::Bedrock => {
            let uses = members(sent, "toolUse");
            assert_eq!(uses.len(), 1, "{sent}");
            assert_eq!(uses[0]["toolUseId"], call_id, "{sent}");
            assert_eq!(uses[0]["name"], TOOL, "{sent}");
            assert_eq!(uses[0]["input"], arguments, "{sent}");
            let results = members(sent, "toolResult");
            assert_eq!(results.len(), 1, "{sent}");
            assert_eq!(results[0]["toolUseId"], call_id, "{sent}");
            assert!(
                results[0]["content"].to_string().contains("Sunny"),
                "{sent}"
            );
            assert_eq!(
                sent["toolConfig"]["tools"][0]["toolSpec"]["name"], TOOL,
                "{sent}"
            );
        }
        Api::Gemini => {
            let calls = members(sent, "functionCall");
            assert_eq!(calls.len(), 1, "{sent}");
            assert_eq!(calls[0]["name"], TOOL, "{sent}");
            assert_eq!(calls[0]["args"], arguments, "{sent}");
            let results = members(sent, "functionResponse");
            assert_eq!(results.len(), 1, "{sent}");
            assert_eq!(results[0]["name"], TOOL, "{sent}");
            assert!(
                results[0]["response"].to_string().contains("Sunny"),
                "{sent}"
            );
        }
        _ => unreachable!(),
    }
}

/// The translated PNG as a Converse (`image` bytes) or Gemini (`inlineData`) upstream received it.
fn assert_native_image(group: &Group, sent: &Value) {
    match group.api {
        Api::Bedrock => {
            let images = members(sent, "image");
            assert_eq!(images.len(), 1, "{sent}");
            assert_eq!(images[0]["format"], "png", "{sent}");
            assert_eq!(images[0]["source"]["bytes"], PNG_BASE64, "{sent}");
        }
        Api::Gemini => {
            let images = members(sent, "inlineData");
            assert_eq!(images.len(), 1, "{sent}");
            assert_eq!(images[0]["mimeType"], "image/png", "{sent}");
            assert_eq!(images[0]["data"], PNG_BASE64, "{sent}");
        }
        _ => unreachable!(),
    }
}

/// A tool offered as a Converse `toolSpec` or a Gemini `functionDeclaration`, its schema kept.
fn assert_native_tool(group: &Group, sent: &Value) {
    let (name, schema) = match group.api {
        Api::Bedrock => {
            let spec = &sent["toolConfig"]["tools"][0]["toolSpec"];
            (&spec["name"], &spec["inputSchema"]["json"])
        }
        Api::Gemini => {
            let declaration = &sent["tools"][0]["functionDeclarations"][0];
            (&declaration["name"], &declaration["parameters"])
        }
        _ => unreachable!(),
    };
    assert_eq!(name, TOOL, "{sent}");
    assert_eq!(schema["properties"]["city"]["type"], "string", "{sent}");
}

/// A translated tool round trip as the upstream received it: the assistant's call `call_id`
/// of [`TOOL`] with [`TOOL_ARGUMENTS`], then the tool's result (`Sunny`) for it.
fn assert_tool_round_trip(sent: &Value, call_id: &str) {
    let messages = sent["messages"].as_array().unwrap();
    let call = messages
        .iter()
        .find_map(|m| m["tool_calls"].as_array().and_then(|c| c.first()))
        .unwrap_or_else(|| panic!("no tool call: {sent}"));
    assert_eq!(call["id"], call_id, "{sent}");
    assert_eq!(call["function"]["name"], TOOL, "{sent}");
    let arguments: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(
        arguments,
        serde_json::from_str::<Value>(TOOL_ARGUMENTS).unwrap()
    );
    let result = messages
        .iter()
        .find(|m| m["role"] == "tool")
        .unwrap_or_else(|| panic!("no tool result: {sent}"));
    assert_eq!(result["tool_call_id"], call_id, "{sent}");
    assert!(result["content"].to_string().contains("Sunny"), "{sent}");
}

/// A translated image as the upstream received it: an `image_url` part with the PNG's data URL.
fn assert_image(sent: &Value) {
    let url = format!("data:image/png;base64,{PNG_BASE64}");
    let found = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["content"].as_array())
        .flatten()
        .any(|part| part["type"] == "image_url" && part["image_url"]["url"] == url.as_str());
    assert!(found, "no image_url part with the PNG: {sent}");
}

/// The usage OpenAI's chat completions report, as the upstream scripted it.
fn assert_chat_usage(usage: &Value, context: &str) {
    assert_eq!(usage["prompt_tokens"], USAGE.0, "{context}: {usage}");
    assert_eq!(usage["completion_tokens"], USAGE.1, "{context}: {usage}");
    assert_eq!(
        usage["total_tokens"],
        USAGE.0 + USAGE.1,
        "{context}: {usage}"
    );
}

/// The usage the Responses API and the Messages API report (`input_tokens`, `output_tokens`).
fn assert_io_usage(usage: &Value, context: &str) {
    assert_eq!(usage["input_tokens"], USAGE.0, "{context}: {usage}");
    assert_eq!(usage["output_tokens"], USAGE.1, "{context}: {usage}");
}

/// The `chat` suite's steps: the upstream's text and usage, whole and streamed, under `model`.
fn assert_chat_steps(steps: &Steps, model: &str) {
    let chat = steps.ok("chat");
    assert_eq!(chat["model"], model, "{chat}");
    assert_eq!(chat["text"], TEXT, "{chat}");
    assert_eq!(chat["finish_reason"], "stop", "{chat}");
    assert_chat_usage(&chat["usage"], "chat");

    let stream = steps.ok("chat_stream");
    assert_eq!(stream["text"], TEXT, "{stream}");
    assert_eq!(stream["finish_reason"], "stop", "{stream}");
    assert_chat_usage(&stream["usage"], "chat_stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_gets_chat_completions_whole_and_streamed_with_usage() {
    let Some(python) = python() else { return };
    let groups = groups().await;
    let base = gateway(&groups).await;
    for group in &groups {
        let steps = run(&python, "openai_client.py", "chat", &base, group.name).await;
        assert_chat_steps(&steps, group.name);
        if let Some(received) = &group.received {
            let sent = received.of("chat_stream");
            assert_eq!(sent.len(), 1, "{sent:?}");
            assert_eq!(sent[0]["stream"], true, "{}", sent[0]);
        }
        if let Some((_, stream)) = native_paths(group) {
            let sent = sent_once(group, stream, "chat_stream");
            if group.api == Api::Anthropic {
                assert_eq!(sent["stream"], true, "{sent}");
            }
        }
    }
}

/// The text and usage a Responses API `response` object carries, as the upstream scripted them,
/// and the model the client asked for when `group` is given.
fn assert_response(response: &Value, group: Option<&str>, context: &str) {
    assert!(
        response["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("resp")),
        "{context}: {response}"
    );
    assert_eq!(response["object"], "response", "{context}: {response}");
    assert_eq!(response["status"], "completed", "{context}: {response}");
    if let Some(group) = group {
        assert_eq!(response["model"], group, "{context}: {response}");
    }
    assert_eq!(response["text"], TEXT, "{context}: {response}");
    assert_io_usage(&response["usage"], context);
    assert_eq!(
        response["usage"]["total_tokens"],
        USAGE.0 + USAGE.1,
        "{context}: {response}"
    );
}

/// A response whose one output item is a `function_call` of [`TOOL`] with [`TOOL_ARGUMENTS`],
/// with the upstream's usage.
fn assert_function_call(response: &Value, context: &str) {
    let calls: Vec<&Value> = response["output"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|item| item["type"] == "function_call")
        .collect();
    assert_eq!(calls.len(), 1, "{context}: {response}");
    assert_eq!(calls[0]["name"], TOOL, "{context}: {response}");
    let arguments: Value = serde_json::from_str(calls[0]["arguments"].as_str().unwrap())
        .unwrap_or_else(|e| panic!("{context}: arguments not JSON ({e}): {response}"));
    assert_eq!(
        arguments,
        serde_json::from_str::<Value>(TOOL_ARGUMENTS).unwrap(),
        "{context}: {response}"
    );
    assert!(
        calls[0]["call_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "{context}: {response}"
    );
    assert_io_usage(&response["usage"], context);
}

/// A message whose answer is one `tool_use` of [`TOOL`] with [`TOOL_ARGUMENTS`], stopped for
/// it, with the upstream's usage.
fn assert_tool_use(message: &Value, context: &str) {
    assert_eq!(message["stop_reason"], "tool_use", "{context}: {message}");
    let uses: Vec<&Value> = message["content"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|block| block["type"] == "tool_use")
        .collect();
    assert_eq!(uses.len(), 1, "{context}: {message}");
    assert_eq!(uses[0]["name"], TOOL, "{context}: {message}");
    assert_eq!(
        uses[0]["input"],
        serde_json::from_str::<Value>(TOOL_ARGUMENTS).unwrap(),
        "{context}: {message}"
    );
    assert!(
        uses[0]["id"].as_str().is_some_and(|id| !id.is_empty()),
        "{context}: {message}"
    );
    assert_io_usage(&message["usage"], context);
}

/// The `responses` suite's steps: the upstream's text, tool call and usage, whole, streamed
/// (the events in order) and through the SDK's stream helper, each response naming `model`.
fn assert_responses_steps(steps: &Steps, model: &str) {
    let plain = steps.ok("responses_create");
    assert_response(plain, Some(model), "responses_create");

    let stream = steps.ok("responses_stream");
    let types: Vec<&str> = stream["types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(types.first(), Some(&"response.created"), "{stream}");
    assert_eq!(types.last(), Some(&"response.completed"), "{stream}");
    for expected in [
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ] {
        assert!(types.contains(&expected), "no {expected}: {stream}");
    }
    let deltas: String = stream["deltas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert_eq!(deltas, TEXT, "{stream}");
    assert_response(
        &stream["completed"],
        Some(model),
        "responses_stream completed",
    );

    assert_function_call(steps.ok("responses_tool"), "responses_tool");
    let stream = steps.ok("responses_stream_tool");
    assert_function_call(&stream["final"], "responses_stream_tool");
    for expected in [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ] {
        assert!(
            stream["types"]
                .as_array()
                .unwrap()
                .contains(&expected.into()),
            "no {expected}: {stream}"
        );
    }

    let answered = steps.ok("responses_tool_output");
    assert_response(answered, Some(model), "responses_tool_output");
    let image = steps.ok("responses_image");
    assert_response(image, Some(model), "responses_image");

    let helper = steps.ok("responses_helper");
    let deltas: String = helper["deltas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert_eq!(deltas, TEXT, "{helper}");
    assert_response(&helper["final"], Some(model), "responses_helper final");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_gets_responses_whole_streamed_with_a_tool_and_through_the_helper() {
    let Some(python) = python() else { return };
    let groups = groups().await;
    let base = gateway(&groups).await;
    for group in &groups {
        let steps = run(&python, "openai_client.py", "responses", &base, group.name).await;

        assert_responses_steps(&steps, group.responses_model);

        if let Some(received) = &group.received {
            // Translated, `instructions` reach the upstream as the system message, before the
            // input; passed through, as they were.
            assert_eq!(received.all("responses_create"), 1);
            if let Some(sent) = received.passed_through("responses_create").first() {
                assert_eq!(sent["instructions"], "Answer briefly.", "{sent}");
                assert_eq!(sent["input"], "Say hello (responses_create)", "{sent}");
                assert_eq!(sent["max_output_tokens"], 50, "{sent}");
            } else {
                let sent = &received.of("responses_create")[0];
                let messages = sent["messages"].as_array().unwrap();
                assert!(
                    ["system", "developer"].contains(&messages[0]["role"].as_str().unwrap()),
                    "{sent}"
                );
                assert_eq!(messages[0]["content"], "Answer briefly.", "{sent}");
                assert_eq!(messages.last().unwrap()["role"], "user", "{sent}");
                // `max_output_tokens` is the chat request's token limit.
                let limit = sent
                    .get("max_completion_tokens")
                    .unwrap_or(&sent["max_tokens"]);
                assert_eq!(*limit, 50, "{sent}");
            }
            let mut sent = received.of("responses_create");
            sent.extend(received.passed_through("responses_create"));
            assert_eq!(sent[0]["temperature"], 0.5, "{}", sent[0]);
            assert_eq!(received.all("responses_tool"), 1);
            let tool_name = match received.passed_through("responses_tool").first() {
                Some(sent) => sent["tools"][0]["name"].clone(),
                None => received.of("responses_tool")[0]["tools"][0]["function"]["name"].clone(),
            };
            assert_eq!(tool_name, TOOL);
            match received.passed_through("responses_tool_output").first() {
                Some(sent) => assert_eq!(sent["input"].as_array().unwrap().len(), 3, "{sent}"),
                None => {
                    assert_tool_round_trip(&received.of("responses_tool_output")[0], "call_weather")
                }
            }
            match received.passed_through("responses_image").first() {
                Some(sent) => assert_eq!(
                    sent["input"][0]["content"][0]["image_url"],
                    format!("data:image/png;base64,{PNG_BASE64}"),
                    "{sent}"
                ),
                None => assert_image(&received.of("responses_image")[0]),
            }
        }
        match group.api {
            Api::OpenAi => {}
            Api::Anthropic => {
                // Translated to the Messages API: `instructions` as the system prompt.
                let sent = sent_once(group, MESSAGES_PATH, "responses_create");
                assert!(
                    sent["system"].to_string().contains("Answer briefly."),
                    "{sent}"
                );
                assert_eq!(sent["max_tokens"], 50, "{sent}");
                assert_eq!(sent["temperature"], 0.5, "{sent}");
            }
            Api::Bedrock | Api::Gemini => {
                let (whole, stream) = native_paths(group).unwrap();
                let sent = sent_once(group, whole, "responses_create");
                let temperature = ("temperature", json!(0.5));
                assert_generation(group, &sent, Some("Answer briefly."), 50, temperature);
                sent_once(group, stream, "responses_stream");
                assert_native_tool(group, &sent_once(group, whole, "responses_tool"));
                assert_native_round_trip(
                    group,
                    &sent_once(group, whole, "responses_tool_output"),
                    "call_weather",
                );
                assert_native_image(group, &sent_once(group, whole, "responses_image"));
            }
        }
    }
}

/// The control: the fake upstream's own answers (chat completions, and the Responses API as
/// a pass-through would reach it) parse in the SDK and meet the same assertions, so a failure
/// through the gateway is the gateway's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_upstream_answers_the_openai_sdk_as_openai_does() {
    let Some(python) = python() else { return };
    let received = Received::default();
    let upstream = openai_upstream(received.clone()).await;
    let base = upstream.strip_suffix("/v1").unwrap();
    let steps = run_as(
        &python,
        "openai_client.py",
        "chat",
        (base, UPSTREAM_KEY),
        UPSTREAM_MODEL,
    )
    .await;
    assert_chat_steps(&steps, UPSTREAM_MODEL);
    let steps = run_as(
        &python,
        "openai_client.py",
        "responses",
        (base, UPSTREAM_KEY),
        UPSTREAM_MODEL,
    )
    .await;
    assert_responses_steps(&steps, UPSTREAM_MODEL);
    assert_eq!(received.passed_through("responses_create").len(), 1);
    assert_eq!(received.passed_through("responses_stream").len(), 1);
}

/// The text of a Messages API answer's `text` blocks.
fn text_of(message: &Value) -> String {
    message["content"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|block| block["type"] == "text")
        .map(|block| block["text"].as_str().unwrap())
        .collect()
}

/// A Messages API `message` naming `model`, with the upstream's text, usage and `end_turn`.
fn assert_message(message: &Value, model: &str, context: &str) {
    assert_eq!(message["type"], "message", "{context}: {message}");
    assert_eq!(message["role"], "assistant", "{context}: {message}");
    assert!(
        message["id"].as_str().is_some_and(|id| !id.is_empty()),
        "{context}: {message}"
    );
    assert_eq!(message["model"], model, "{context}: {message}");
    assert_eq!(text_of(message), TEXT, "{context}: {message}");
    assert_eq!(message["stop_reason"], "end_turn", "{context}: {message}");
    assert_io_usage(&message["usage"], context);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_anthropic_sdk_gets_messages_with_system_and_tools_streamed_and_counted() {
    let Some(python) = python() else { return };
    let groups = groups().await;
    let base = gateway(&groups).await;
    for group in &groups {
        let steps = run(
            &python,
            "anthropic_client.py",
            "messages",
            &base,
            group.name,
        )
        .await;

        assert_message(
            steps.ok("messages_create"),
            group.messages_model,
            "messages_create",
        );

        assert_tool_use(steps.ok("messages_system_tool"), "messages_system_tool");
        let stream = steps.ok("messages_stream_tool");
        assert_tool_use(&stream["final"], "messages_stream_tool");
        assert!(
            stream["types"]
                .as_array()
                .unwrap()
                .contains(&"content_block_start".into()),
            "{stream}"
        );

        assert_message(
            steps.ok("messages_tool_result"),
            group.messages_model,
            "messages_tool_result",
        );
        assert_message(
            steps.ok("messages_image"),
            group.messages_model,
            "messages_image",
        );

        let helper = steps.ok("messages_stream_helper");
        assert_eq!(helper["text"], TEXT, "{helper}");
        assert_message(
            &helper["final"],
            group.messages_model,
            "messages_stream_helper final",
        );

        let events = steps.ok("messages_stream_events");
        let types: Vec<&str> = events["types"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        // Anthropic's order: message_start, then each block's start, deltas and stop, then
        // message_delta and message_stop (ping events may come anywhere).
        let order: Vec<&str> = types.iter().copied().filter(|t| *t != "ping").collect();
        assert_eq!(order.first(), Some(&"message_start"), "{events}");
        assert_eq!(
            order[order.len().saturating_sub(2)..],
            ["message_delta", "message_stop"],
            "{events}"
        );
        let start = order.iter().position(|t| *t == "content_block_start");
        let stop = order.iter().position(|t| *t == "content_block_stop");
        let delta = order.iter().position(|t| *t == "content_block_delta");
        assert!(start < delta && delta < stop && start.is_some(), "{events}");
        let deltas: String = events["deltas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_str().unwrap())
            .collect();
        assert_eq!(deltas, TEXT, "{events}");

        let count = steps.ok("count_tokens");
        assert!(
            count["input_tokens"].as_u64().is_some_and(|n| n > 0),
            "{count}"
        );

        if let Some(received) = &group.received {
            // `system` reaches the upstream as the system message; the tool as a function.
            let sent = received.of("messages_system_tool");
            assert_eq!(sent.len(), 1, "{sent:?}");
            let first = &sent[0]["messages"][0];
            assert_eq!(first["role"], "system", "{}", sent[0]);
            assert_eq!(sent[0]["tools"][0]["function"]["name"], TOOL, "{}", sent[0]);
            assert_eq!(sent[0]["max_tokens"], 100, "{}", sent[0]);
            // `stop_sequences` is the chat request's `stop` (the SDK no longer sends sampling
            // settings).
            let sent = &received.of("messages_create")[0];
            let stop = &sent["stop"];
            assert!(stop == &json!(["END"]) || stop == "END", "{sent}");
            assert_tool_round_trip(&received.of("messages_tool_result")[0], "toolu_weather");
            assert_image(&received.of("messages_image")[0]);
            // count_tokens is answered by the gateway, not the upstream.
            assert!(received.of("count_tokens").is_empty());
        }
        assert_eq!(group.calls.all("count_tokens"), 0, "{}", group.name);
        match group.api {
            Api::OpenAi => {}
            Api::Anthropic => {
                // Passed through as the SDK sent it.
                let sent = sent_once(group, MESSAGES_PATH, "messages_create");
                assert_eq!(sent["stop_sequences"], json!(["END"]), "{sent}");
                let sent = sent_once(group, MESSAGES_PATH, "messages_system_tool");
                assert_eq!(sent["system"], "Answer briefly.", "{sent}");
                assert_eq!(sent["tools"][0]["name"], TOOL, "{sent}");
            }
            Api::Bedrock | Api::Gemini => {
                let (whole, stream) = native_paths(group).unwrap();
                let sent = sent_once(group, whole, "messages_create");
                assert_generation(group, &sent, None, 100, ("stopSequences", json!(["END"])));
                let sent = sent_once(group, whole, "messages_system_tool");
                assert_generation(
                    group,
                    &sent,
                    Some("Answer briefly."),
                    100,
                    ("stopSequences", Value::Null),
                );
                assert_native_tool(group, &sent);
                assert_native_tool(group, &sent_once(group, stream, "messages_stream_tool"));
                assert_native_round_trip(
                    group,
                    &sent_once(group, whole, "messages_tool_result"),
                    "toolu_weather",
                );
                assert_native_image(group, &sent_once(group, whole, "messages_image"));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_model_is_each_sdks_own_error() {
    let Some(python) = python() else { return };
    let groups = groups().await;
    let base = gateway(&groups).await;
    let model = groups[0].name;

    for group in &groups {
        let openai = run(&python, "openai_client.py", "errors", &base, group.name).await;
        for step in ["chat_unknown_model", "responses_unknown_model"] {
            let error = openai.raised(step);
            // LiteLLM answers an unknown model with a 400 (`Invalid model name passed in model=`).
            assert_eq!(error["exception"], "BadRequestError", "{step}: {error}");
            assert_eq!(error["status"], 400, "{step}: {error}");
            // The openai SDK's `body` is the parsed `error` object.
            let message = error["body"]["message"].as_str().unwrap_or("");
            assert!(message.contains("no-such-model"), "{step}: {error}");
        }
    }

    let anthropic = run(&python, "anthropic_client.py", "errors", &base, model).await;
    let error = anthropic.raised("unknown_model");
    assert!(
        ["BadRequestError", "NotFoundError"].contains(&error["exception"].as_str().unwrap()),
        "{error}"
    );
    // Anthropic's error shape, which the SDK parses into `body`.
    assert_eq!(error["body"]["type"], "error", "{error}");
    assert!(
        ["invalid_request_error", "not_found_error"]
            .contains(&error["body"]["error"]["type"].as_str().unwrap_or("")),
        "{error}"
    );
    let message = error["body"]["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains("no-such-model"), "{error}");

    let error = anthropic.raised("wrong_key");
    assert_eq!(error["exception"], "AuthenticationError", "{error}");
    assert_eq!(error["status"], 401, "{error}");
    assert_eq!(error["body"]["type"], "error", "{error}");
    assert_eq!(
        error["body"]["error"]["type"], "authentication_error",
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_conversation_passes_through_to_openai_or_is_refused_naming_the_field() {
    let Some(python) = python() else { return };
    let groups = groups().await;
    let base = gateway(&groups).await;
    for group in &groups {
        let openai = run(
            &python,
            "openai_client.py",
            "conversation",
            &base,
            group.name,
        )
        .await;
        // `previous_response_id` continues a conversation OpenAI stored: passed through to an
        // OpenAI deployment as it is, refused naming the field by any other.
        let step = "responses_previous_response_id";
        let passed = group
            .received
            .as_ref()
            .and_then(|r| r.passed_through(step).first().cloned());
        match passed {
            Some(sent) => {
                assert_eq!(sent["previous_response_id"], "resp_earlier", "{sent}");
                openai.ok(step);
            }
            None => {
                let error = openai.raised(step);
                assert_eq!(group.calls.all(step), 0, "{}", group.name);
                assert_eq!(error["status"], 400, "{error}");
                assert!(
                    error["body"].to_string().contains("previous_response_id"),
                    "{error}"
                );
            }
        }
    }
}
