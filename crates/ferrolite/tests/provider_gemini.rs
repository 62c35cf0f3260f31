//! `gemini/` and `vertex_ai/` deployments against a fake Gemini / Vertex AI server on loopback,
//! built from Google's API reference: it checks the API key header (Gemini API) or a bearer
//! token it issued (Vertex AI), the path naming the model (and project and location), and a
//! body `generateContent` accepts (roles `user` / `model`, known part types, known
//! `generationConfig` fields); it answers whole and streamed (`alt=sse`) and returns each error
//! class on request. Its token endpoint verifies the service account's RS256 JWT with the
//! account's public key (an RSA key pair made by `openssl` for the test) and its claims, and
//! issues tokens with the lifetime the test sets.
#![cfg(feature = "http")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router as Server;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use ferrolite::http::HttpBackend;
use ferrolite::router::RouterSettings;
use ferrolite::router::{Backend, BackendRequest};
use ferrolite::types::{Deployment, ErrorClass, Secret};
use ferrolite::{Request, RouterError};
use futures_util::StreamExt;
use parking_lot::Mutex;
use serde_json::{Value, json};

const API_KEY: &str = "AIza-test-key-123";
const CLIENT_EMAIL: &str = "ferrolite-test@test-project.iam.gserviceaccount.com";
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// A test-only RSA key pair, made by `openssl` now: its PKCS#8 PEM and its public key (the DER
/// `RSAPublicKey` ring verifies with).
struct TestKey {
    pem: String,
    public: Vec<u8>,
}

fn test_key() -> TestKey {
    let out = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .output()
        .expect("openssl makes the test's RSA key");
    assert!(out.status.success(), "openssl failed");
    let pem = String::from_utf8(out.stdout).unwrap();
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    let der = base64_decode(&body, false);
    let pair = ring::signature::RsaKeyPair::from_pkcs8(&der).unwrap();
    use ring::signature::KeyPair;
    TestKey {
        pem,
        public: pair.public_key().as_ref().to_vec(),
    }
}

/// Standard or URL-safe base64, padding optional.
fn base64_decode(text: &str, url: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut buffer, mut bits) = (0u32, 0);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' if !url => 62,
            b'/' if !url => 63,
            b'-' if url => 62,
            b'_' if url => 63,
            b'=' => break,
            _ => panic!("not base64: {c}"),
        };
        buffer = buffer << 6 | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    out
}

/// One call the fake saw: path, query, headers, body.
type Seen = (String, HashMap<String, String>, HeaderMap, Value);

/// The fake's state: what it accepts and what it saw.
#[derive(Default)]
struct Fake {
    base: Mutex<String>,
    /// The service account's public key the token endpoint verifies with.
    public_key: Mutex<Vec<u8>>,
    /// The lifetime of the tokens it issues, in seconds.
    expires_in: AtomicU64,
    issued: Mutex<HashSet<String>>,
    token_fetches: AtomicU64,
    token_refusals: AtomicU64,
    /// Per generateContent call: path, query, headers, body.
    seen: Mutex<Vec<Seen>>,
    /// Requests to any other path (method and path).
    stray: Mutex<Vec<String>>,
}

/// Any path the fake does not serve: recorded, 404.
async fn stray(State(fake): State<Arc<Fake>>, request: axum::extract::Request) -> Response {
    fake.stray
        .lock()
        .push(format!("{} {}", request.method(), request.uri()));
    google_error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such path")
}

fn google_error(status: StatusCode, google: &str, message: &str) -> Response {
    (
        status,
        axum::Json(
            json!({"error": {"code": status.as_u16(), "message": message, "status": google}}),
        ),
    )
        .into_response()
}

/// What `generateContent` refuses in a body, if anything (Google's API reference: `contents`
/// of `Content {role: user | model, parts}`, a `Part` is one of its data fields).
fn invalid(body: &Value) -> Option<String> {
    let contents = body.get("contents")?.as_array();
    let Some(contents) = contents.filter(|c| !c.is_empty()) else {
        return Some("contents is not specified".into());
    };
    for (i, content) in contents.iter().enumerate() {
        let role = content.get("role").and_then(Value::as_str);
        if !matches!(role, Some("user" | "model")) {
            return Some(format!("contents[{i}].role must be user or model"));
        }
        let parts = content.get("parts").and_then(Value::as_array)?;
        if parts.is_empty() {
            return Some(format!("contents[{i}].parts must not be empty"));
        }
        for part in parts {
            let data: Vec<&String> = part
                .as_object()?
                .keys()
                .filter(|k| !matches!(k.as_str(), "thought" | "thoughtSignature"))
                .collect();
            let known = [
                "text",
                "inlineData",
                "fileData",
                "functionCall",
                "functionResponse",
            ];
            if data.len() != 1 || !known.contains(&data[0].as_str()) {
                return Some(format!("contents[{i}].parts has an unknown part {part}"));
            }
        }
    }
    for (k, _) in body.as_object()? {
        let known = [
            "contents",
            "systemInstruction",
            "generationConfig",
            "tools",
            "toolConfig",
            "safetySettings",
            "cachedContent",
        ];
        if !known.contains(&k.as_str()) {
            return Some(format!(
                "Invalid JSON payload received. Unknown name \"{k}\""
            ));
        }
    }
    if let Some(config) = body.get("generationConfig") {
        for (k, _) in config.as_object()? {
            let known = [
                "maxOutputTokens",
                "temperature",
                "topP",
                "topK",
                "stopSequences",
                "candidateCount",
                "responseMimeType",
                "responseSchema",
                "thinkingConfig",
                "seed",
                "presencePenalty",
                "frequencyPenalty",
                "responseLogprobs",
                "logprobs",
            ];
            if !known.contains(&k.as_str()) {
                return Some(format!("Unknown name \"{k}\" at 'generation_config'"));
            }
        }
    }
    None
}

/// An answer for `model` (a model name the tests use to ask for a behaviour).
#[allow(clippy::result_large_err)]
fn answer_for(model: &str, body: &Value) -> Result<Vec<Value>, Response> {
    let usage = json!({"promptTokenCount": 11, "candidatesTokenCount": 4, "totalTokenCount": 15});
    Ok(match model {
        "rate-limited" | "rate-limited-long" => {
            let delay = if model == "rate-limited" {
                "0.05s"
            } else {
                "30s"
            };
            let mut r = (
                StatusCode::TOO_MANY_REQUESTS,
                axum::Json(json!({"error": {"code": 429, "message": "Resource has been exhausted (e.g. check quota).",
                    "status": "RESOURCE_EXHAUSTED", "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}]}})),
            )
                .into_response();
            r.headers_mut().insert("x-fake", "429".parse().unwrap());
            return Err(r);
        }
        "too-long" => {
            return Err(google_error(
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
            ));
        }
        "denied" => {
            return Err(google_error(
                StatusCode::FORBIDDEN,
                "PERMISSION_DENIED",
                "Permission denied on resource project.",
            ));
        }
        "down" => {
            return Err(google_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "The model is overloaded. Please try again later.",
            ));
        }
        "empty" => Vec::new(),
        // Part of an answer, then the connection closes cleanly without a finishReason.
        "cut" => vec![
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}, "index": 0}],
                "usageMetadata": {"promptTokenCount": 11, "totalTokenCount": 11}}),
        ],
        // One event whose line is longer than a server-sent event may be (16 MiB).
        "long-line" => vec![
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "x".repeat(17 << 20)}]}, "index": 0}]}),
        ],
        "breaks" => vec![
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}, "index": 0}]}),
            json!({"error": {"code": 500, "message": "Internal error encountered.", "status": "INTERNAL"}}),
        ],
        "blocked" => vec![json!({"promptFeedback": {"blockReason": "SAFETY"},
            "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9}})],
        "unsafe-answer" => vec![
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "I can"}]},
            "finishReason": "SAFETY", "index": 0}], "usageMetadata": usage}),
        ],
        "tools" => vec![
            json!({"candidates": [{"content": {"role": "model", "parts": [
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]}, "index": 0}],
                "usageMetadata": usage, "responseId": "resp-tools"}),
            json!({"candidates": [{"content": {"role": "model", "parts": [
                {"functionCall": {"name": "get_time", "args": {"zone": "CET"}}}]}, "finishReason": "STOP", "index": 0}],
                "usageMetadata": usage, "responseId": "resp-tools"}),
        ],
        _ => {
            let words = body["contents"]
                .as_array()
                .map_or(0, |c| c.len())
                .to_string();
            vec![
                json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "thinking…", "thought": true}]}, "index": 0}],
                    "usageMetadata": {"promptTokenCount": 11, "totalTokenCount": 11}, "responseId": "resp-1",
                    "modelVersion": model}),
                json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hello "}]}, "index": 0}],
                    "usageMetadata": {"promptTokenCount": 11, "candidatesTokenCount": 1, "totalTokenCount": 12},
                    "responseId": "resp-1", "modelVersion": model}),
                json!({"candidates": [{"content": {"role": "model", "parts": [{"text": format!("from {model} after {words}")}]},
                    "finishReason": "STOP", "index": 0}],
                    "usageMetadata": {"promptTokenCount": 11, "candidatesTokenCount": 4, "thoughtsTokenCount": 2,
                        "totalTokenCount": 17, "cachedContentTokenCount": 3},
                    "responseId": "resp-1", "modelVersion": model}),
            ]
        }
    })
}

/// A stream's events merged into one answer, as `generateContent` gives it whole.
fn whole(events: Vec<Value>) -> Value {
    let mut parts: Vec<Value> = Vec::new();
    let mut last = events.last().cloned().unwrap_or(json!({}));
    for event in &events {
        if let Some(p) = event["candidates"][0]["content"]["parts"].as_array() {
            parts.extend(p.iter().cloned());
        }
    }
    if last.get("candidates").is_some() {
        last["candidates"][0]["content"] = json!({"role": "model", "parts": parts});
    }
    last
}

/// `model:method` from the path's last segment, the answer for it.
fn respond(model_method: &str, query: &HashMap<String, String>, body: &Value) -> Response {
    let Some((model, method)) = model_method.split_once(':') else {
        return google_error(StatusCode::NOT_FOUND, "NOT_FOUND", "no method");
    };
    if let Some(why) = invalid(body) {
        return google_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", &why);
    }
    let events = match answer_for(model, body) {
        Ok(events) => events,
        Err(response) => return response,
    };
    match method {
        "generateContent" => axum::Json(whole(events)).into_response(),
        "streamGenerateContent" => {
            if query.get("alt").map(String::as_str) != Some("sse") {
                // Without alt=sse Google streams a JSON array, which is not what is asked for.
                return google_error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_ARGUMENT",
                    "expected alt=sse",
                );
            }
            let text: String = events
                .iter()
                .map(|e| format!("data: {e}\r\n\r\n"))
                .collect();
            ([("content-type", "text/event-stream")], text).into_response()
        }
        _ => google_error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such method"),
    }
}

/// The Gemini API: `POST /v1beta/models/{model}:{method}` with `x-goog-api-key`.
async fn gemini_api(
    State(fake): State<Arc<Fake>>,
    Path(rest): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    fake.seen
        .lock()
        .push((rest.clone(), query.clone(), headers.clone(), body.clone()));
    if query.contains_key("key") {
        return google_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "key in the URL",
        );
    }
    match headers.get("x-goog-api-key").and_then(|v| v.to_str().ok()) {
        Some(API_KEY) => {}
        Some(_) => {
            return google_error(
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                "API key not valid. Please pass a valid API key.",
            );
        }
        None => {
            return google_error(
                StatusCode::FORBIDDEN,
                "PERMISSION_DENIED",
                "Method doesn't allow unregistered callers",
            );
        }
    }
    respond(&rest, &query, &body)
}

/// Vertex AI: `POST /v1/projects/{project}/locations/{location}/publishers/google/models/{model}:{method}`
/// with a bearer token the token endpoint issued.
async fn vertex(
    State(fake): State<Arc<Fake>>,
    Path(rest): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    fake.seen
        .lock()
        .push((rest.clone(), query.clone(), headers.clone(), body.clone()));
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !fake.issued.lock().contains(token) {
        return google_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
        );
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let [
        project,
        "locations",
        location,
        "publishers",
        "google",
        "models",
        model_method,
    ] = segments[..]
    else {
        return google_error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such path");
    };
    if project != "my-proj" || location != "us-central1" {
        return google_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "no such project or location",
        );
    }
    respond(model_method, &query, &body)
}

/// Google's OAuth token endpoint for the JWT-bearer grant: the assertion's RS256 signature is
/// verified with the account's public key, its claims checked.
async fn token(State(fake): State<Arc<Fake>>, body: String) -> Response {
    let refuse = |why: &str| {
        fake.token_refusals.fetch_add(1, Ordering::SeqCst);
        (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_grant", "error_description": why})),
        )
            .into_response()
    };
    let form: HashMap<String, String> = body
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_string(), v.replace("%3A", ":")))
        .collect();
    if form.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return refuse("unsupported grant_type");
    }
    let Some(assertion) = form.get("assertion") else {
        return refuse("no assertion");
    };
    let pieces: Vec<&str> = assertion.split('.').collect();
    let [header, claims, signature] = pieces[..] else {
        return refuse("not a JWT");
    };
    let header: Value = serde_json::from_slice(&base64_decode(header, true)).unwrap();
    if header["alg"] != "RS256" {
        return refuse("alg is not RS256");
    }
    let public = fake.public_key.lock().clone();
    let key = ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        public,
    );
    let signed = format!("{}.{}", pieces[0], pieces[1]);
    if key
        .verify(signed.as_bytes(), &base64_decode(signature, true))
        .is_err()
    {
        return refuse("Invalid JWT Signature.");
    }
    let claims: Value = serde_json::from_slice(&base64_decode(claims, true)).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let iat = claims["iat"].as_i64().unwrap_or(0);
    let exp = claims["exp"].as_i64().unwrap_or(0);
    let aud = format!("{}/token", fake.base.lock());
    if claims["iss"] != CLIENT_EMAIL
        || claims["aud"] != aud.as_str()
        || claims["scope"] != SCOPE
        || (iat - now).abs() > 60
        || exp - iat != 3600
    {
        return refuse(&format!("bad claims {claims}"));
    }
    let n = fake.token_fetches.fetch_add(1, Ordering::SeqCst) + 1;
    let access = format!("ya29.test-token-{n}");
    fake.issued.lock().insert(access.clone());
    axum::Json(
        json!({"access_token": access, "expires_in": fake.expires_in.load(Ordering::SeqCst),
        "token_type": "Bearer"}),
    )
    .into_response()
}

/// The fake on a free loopback port, verifying JWTs with `key`'s public key; its base URL.
async fn serve(key: &TestKey, expires_in: u64) -> (String, Arc<Fake>) {
    let fake = Arc::new(Fake::default());
    *fake.public_key.lock() = key.public.clone();
    fake.expires_in.store(expires_in, Ordering::SeqCst);
    let app = Server::new()
        .route("/v1beta/models/{*rest}", post(gemini_api))
        .route("/v1/projects/{*rest}", post(vertex))
        .route("/token", post(token))
        .fallback(stray)
        .with_state(Arc::clone(&fake));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let base = format!("http://{addr}");
    *fake.base.lock() = base.clone();
    (base, fake)
}

fn gemini(base: &str, model: &str) -> Deployment {
    Deployment {
        id: Some(format!("gemini-{model}")),
        api_base: Some(format!("{base}/v1beta")),
        api_key: Some(Secret::new(API_KEY)),
        ..Deployment::new("g", format!("gemini/{model}"))
    }
}

fn credentials(base: &str, key: &TestKey) -> String {
    json!({
        "type": "service_account",
        "project_id": "test-project",
        "private_key_id": "0123",
        "private_key": key.pem,
        "client_email": CLIENT_EMAIL,
        "client_id": "42",
        "token_uri": format!("{base}/token"),
    })
    .to_string()
}

/// A Vertex AI deployment of `model`; `api_base` as LiteLLM takes it (the URL up to the model).
fn vertex_deployment(base: &str, model: &str, credentials: &str) -> Deployment {
    Deployment {
        id: Some(format!("vertex-{model}")),
        api_base: Some(format!(
            "{base}/v1/projects/my-proj/locations/us-central1/publishers/google/models/{model}"
        )),
        provider_params: [
            ("vertex_project".to_string(), Secret::new("my-proj")),
            ("vertex_location".to_string(), Secret::new("us-central1")),
            ("vertex_credentials".to_string(), Secret::new(credentials)),
        ]
        .into(),
        ..Deployment::new("v", format!("vertex_ai/{model}"))
    }
}

fn chat(body: Value, stream: bool) -> BackendRequest {
    BackendRequest {
        trace: None,
        native: None,
        body,
        stream,
        request_id: Some("req-7".into()),
        deployment_id: None,
        prepared: None,
    }
}

fn hello() -> Value {
    json!({"model": "g", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello?"},
        {"role": "user", "content": "Say hello"},
    ], "max_tokens": 50, "temperature": 0.2, "stop": ["END"]})
}

async fn collect(
    backend: &HttpBackend,
    deployment: &Deployment,
    body: Value,
) -> Result<Vec<Value>, ErrorClass> {
    let mut stream = backend
        .stream(deployment, &chat(body, true))
        .await
        .map_err(|e| e.class)?;
    let mut chunks = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| e.class)?;
        chunks.push(chunk.body.to_value().unwrap());
    }
    Ok(chunks)
}

#[tokio::test]
async fn a_gemini_call_sends_the_key_in_a_header_and_a_translated_body_and_reads_the_answer() {
    let key = test_key();
    let (base, fake) = serve(&key, 3600).await;
    let backend = HttpBackend::new().unwrap();
    let deployment = gemini(&base, "gemini-2.5-flash");
    let response = backend
        .call(&deployment, &chat(hello(), false))
        .await
        .unwrap();

    let seen = fake.seen.lock();
    let (path, query, headers, body) = &seen[0];
    assert_eq!(path, "gemini-2.5-flash:generateContent");
    assert!(query.is_empty(), "{query:?}");
    assert_eq!(headers["x-goog-api-key"], API_KEY);
    assert!(headers.get("authorization").is_none());
    assert_eq!(headers["x-request-id"], "req-7");
    assert_eq!(
        body["systemInstruction"],
        json!({"parts": [{"text": "Be brief."}]})
    );
    assert_eq!(
        body["contents"],
        json!([
            {"role": "user", "parts": [{"text": "Hi"}]},
            {"role": "model", "parts": [{"text": "Hello?"}]},
            {"role": "user", "parts": [{"text": "Say hello"}]},
        ])
    );
    assert_eq!(
        body["generationConfig"],
        json!({"maxOutputTokens": 50, "temperature": 0.2, "stopSequences": ["END"]})
    );

    let answer = response.body.to_value().unwrap();
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["model"], "gemini-2.5-flash");
    let message = &answer["choices"][0]["message"];
    assert_eq!(message["content"], "Hello from gemini-2.5-flash after 3");
    assert_eq!(message["reasoning_content"], "thinking…");
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    assert_eq!(answer["usage"]["prompt_tokens"], 11);
    // candidatesTokenCount leaves the thoughts out (11 + 4 != 17): LiteLLM counts them in.
    assert_eq!(answer["usage"]["completion_tokens"], 6);
    assert_eq!(answer["usage"]["total_tokens"], 17);
    assert_eq!(answer["usage"]["prompt_tokens_details"]["cached_tokens"], 3);
    assert_eq!(
        answer["usage"]["completion_tokens_details"]["reasoning_tokens"],
        2
    );
    let usage = response.usage.unwrap();
    assert_eq!(
        (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.total_tokens
        ),
        (11, 6, 17)
    );
    assert_eq!(usage.cache_read_tokens, 3, "cachedContentTokenCount");
}

#[tokio::test]
async fn a_gemini_stream_goes_to_the_sse_endpoint_and_ends_with_the_usage() {
    let key = test_key();
    let (base, fake) = serve(&key, 3600).await;
    let backend = HttpBackend::new().unwrap();
    let chunks = collect(&backend, &gemini(&base, "gemini-2.5-flash"), hello())
        .await
        .unwrap();
    {
        let seen = fake.seen.lock();
        assert_eq!(seen[0].0, "gemini-2.5-flash:streamGenerateContent");
        assert_eq!(seen[0].1.get("alt").map(String::as_str), Some("sse"));
        assert_eq!(seen[0].1.len(), 1, "only alt=sse in the query");
    }
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| {
            c["choices"].get(0)?["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(text, "Hello from gemini-2.5-flash after 3");
    let reasoning: String = chunks
        .iter()
        .filter_map(|c| {
            c["choices"].get(0)?["delta"]["reasoning_content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(reasoning, "thinking…");
    let finishes: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0)?.get("finish_reason"))
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finishes, [&json!("stop")]);
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["completion_tokens"], 6);
    assert_eq!(last["usage"]["total_tokens"], 17);
}

#[tokio::test]
async fn tools_images_and_tool_results_reach_gemini_and_function_calls_come_back() {
    let key = test_key();
    let (base, fake) = serve(&key, 3600).await;
    let backend = HttpBackend::new().unwrap();
    let deployment = gemini(&base, "tools");
    let body = json!({"messages": [
        {"role": "user", "content": [
            {"type": "text", "text": "Weather where this was taken?"},
            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQSkZJRg=="}},
            {"type": "image_url", "image_url": {"url": "gs://photos/paris.png"}},
        ]},
    ], "tools": [
        {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                "additionalProperties": false}}},
        {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object",
            "properties": {"zone": {"type": "string"}}}}},
    ], "tool_choice": "required"});
    let response = backend
        .call(&deployment, &chat(body.clone(), false))
        .await
        .unwrap();
    let answer = response.body.to_value().unwrap();
    assert_eq!(answer["choices"][0]["finish_reason"], "tool_calls");
    let calls = answer["choices"][0]["message"]["tool_calls"]
        .as_array()
        .unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap(),
        json!({"city": "Paris"})
    );
    assert_eq!(calls[1]["function"]["name"], "get_time");
    assert_ne!(calls[0]["id"], calls[1]["id"]);
    {
        let seen = fake.seen.lock();
        let sent = &seen[0].3;
        assert_eq!(
            sent["contents"][0]["parts"],
            json!([
                {"text": "Weather where this was taken?"},
                {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/4AAQSkZJRg=="}},
                {"fileData": {"mimeType": "image/png", "fileUri": "gs://photos/paris.png"}},
            ])
        );
        assert_eq!(
            sent["tools"][0]["functionDeclarations"][0],
            json!({"name": "get_weather", "description": "Weather of a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}})
        );
        assert_eq!(
            sent["toolConfig"],
            json!({"functionCallingConfig": {"mode": "ANY"}})
        );
    }

    // The results go back as function responses named by the calls they answer.
    let mut follow_up = body.clone();
    let messages = follow_up["messages"].as_array_mut().unwrap();
    messages.push(answer["choices"][0]["message"].clone());
    messages
        .push(json!({"role": "tool", "tool_call_id": calls[0]["id"], "content": "18°C, sunny"}));
    messages.push(json!({"role": "tool", "tool_call_id": calls[1]["id"], "content": "14:00"}));
    follow_up["model"] = json!("g");
    follow_up.as_object_mut().unwrap().remove("tool_choice");
    backend
        .call(&gemini(&base, "gemini-2.5-flash"), &chat(follow_up, false))
        .await
        .unwrap();
    let seen = fake.seen.lock();
    let sent = &seen[1].3;
    assert_eq!(
        sent["contents"][1],
        json!({"role": "model", "parts": [
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
            {"functionCall": {"name": "get_time", "args": {"zone": "CET"}}},
        ]})
    );
    assert_eq!(
        sent["contents"][2],
        json!({"role": "user", "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"content": "18°C, sunny"}}},
            {"functionResponse": {"name": "get_time", "response": {"content": "14:00"}}},
        ]})
    );
}

#[tokio::test]
async fn streamed_function_calls_come_back_as_tool_call_deltas() {
    let key = test_key();
    let (base, _) = serve(&key, 3600).await;
    let backend = HttpBackend::new().unwrap();
    let chunks = collect(&backend, &gemini(&base, "tools"), hello())
        .await
        .unwrap();
    let calls: Vec<(u64, String)> = chunks
        .iter()
        .filter_map(|c| {
            c["choices"].get(0)?["delta"]["tool_calls"]
                .as_array()
                .cloned()
        })
        .flatten()
        .map(|c| {
            (
                c["index"].as_u64().unwrap(),
                c["function"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(calls, [(0, "get_weather".into()), (1, "get_time".into())]);
    let finish: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0)?.get("finish_reason"))
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finish, [&json!("tool_calls")]);
}

#[tokio::test]
async fn google_errors_are_classified_whole_and_streamed() {
    let key = test_key();
    let (base, _) = serve(&key, 3600).await;
    let backend = HttpBackend::new().unwrap();
    let cases = [
        (
            "rate-limited",
            ErrorClass::RateLimited {
                retry_after: Some(Duration::from_millis(50)),
            },
        ),
        ("too-long", ErrorClass::ContextWindowExceeded),
        ("denied", ErrorClass::PermissionDenied),
        ("down", ErrorClass::ServerError { status: 503 }),
        ("blocked", ErrorClass::ContentPolicy),
    ];
    for (model, class) in cases {
        let deployment = gemini(&base, model);
        let error = backend
            .call(&deployment, &chat(hello(), false))
            .await
            .unwrap_err();
        assert_eq!(error.class, class, "{model}: {}", error.message);
        assert!(!error.message.contains(API_KEY));
        assert_eq!(
            collect(&backend, &deployment, hello()).await.unwrap_err(),
            class,
            "{model} streamed"
        );
    }
    // A wrong key is an authentication error; none at all is refused too.
    let wrong = Deployment {
        api_key: Some(Secret::new("AIza-wrong")),
        ..gemini(&base, "gemini-2.5-flash")
    };
    let error = backend
        .call(&wrong, &chat(hello(), false))
        .await
        .unwrap_err();
    assert_eq!(error.class, ErrorClass::Authentication, "{}", error.message);
    assert!(!error.message.contains("AIza-wrong"));
    // A body Gemini refuses (a role it has no place for never leaves: it is a bad request).
    let error = backend
        .call(
            &gemini(&base, "gemini-2.5-flash"),
            &chat(
                json!({"messages": [{"role": "user", "content": "x"}], "logit_bias": {"1": 1}}),
                false,
            ),
        )
        .await
        .unwrap_err();
    assert_eq!(error.class, ErrorClass::BadRequest { status: 400 });
    assert!(error.message.contains("logit_bias"), "{}", error.message);
    // An answer that finished on SAFETY is an answer, finished by the content filter.
    let response = backend
        .call(&gemini(&base, "unsafe-answer"), &chat(hello(), false))
        .await
        .unwrap();
    assert_eq!(
        response.body.to_value().unwrap()["choices"][0]["finish_reason"],
        "content_filter"
    );
}

#[tokio::test]
async fn through_the_router_a_rate_limited_gemini_deployment_is_retried_elsewhere_cooled_down_and_usage_and_cost_counted()
 {
    let key = test_key();
    let (base, _) = serve(&key, 3600).await;
    // The rate-limited deployment comes first (order 1) until it is cooled down (Google asks
    // for 30 s).
    let limited = Deployment {
        id: Some("limited".into()),
        model_name: "g".into(),
        order: Some(1),
        ..gemini(&base, "rate-limited-long")
    };
    let good = Deployment {
        id: Some("good".into()),
        model_name: "g".into(),
        order: Some(2),
        input_cost_per_token: Some(0.000_001),
        output_cost_per_token: Some(0.000_004),
        ..gemini(&base, "gemini-2.5-flash")
    };
    let router = ferrolite::Router::builder()
        .deployments([limited.clone(), good])
        .settings(RouterSettings {
            num_retries: 2,
            ..RouterSettings::default()
        })
        .backend(Arc::new(HttpBackend::new().unwrap()))
        .build()
        .await
        .unwrap();
    for i in 0..4 {
        let answer = router.call(Request::new("g", hello())).await.unwrap();
        assert_eq!(answer.deployment_id.as_str(), "good");
        // The first call was retried after the 429; the later ones skip the cooled deployment.
        assert_eq!(answer.attempted_retries, u32::from(i == 0), "call {i}");
        let usage = answer.usage.unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (11, 6));
        let cost = answer.response_cost.unwrap();
        assert!(
            (cost - (11.0 * 0.000_001 + 6.0 * 0.000_004)).abs() < 1e-12,
            "{cost}"
        );
    }
    assert!(
        router
            .cooled_until(&ferrolite::types::DeploymentId::new("limited"))
            .is_some(),
        "a 429 cools the deployment down"
    );
    let (requests, tokens) = router
        .usage(&ferrolite::types::DeploymentId::new("good"))
        .unwrap();
    assert_eq!(requests, 4.0);
    assert_eq!(tokens, 4.0 * 17.0);

    // A stream through the router, with an image: its text comes back and its usage is
    // counted too.
    let mut body = hello();
    body["stream"] = json!(true);
    body["messages"][3]["content"] = json!([
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]);
    let mut stream = router.stream(Request::new("g", body)).await.unwrap();
    assert_eq!(stream.deployment_id.as_str(), "good");
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap().body.to_value().unwrap();
        if let Some(t) = chunk["choices"]
            .get(0)
            .and_then(|c| c["delta"]["content"].as_str())
        {
            text.push_str(t);
        }
    }
    assert_eq!(text, "Hello from gemini-2.5-flash after 3");
    let (requests, tokens) = router
        .usage(&ferrolite::types::DeploymentId::new("good"))
        .unwrap();
    assert_eq!((requests, tokens), (5.0, 5.0 * 17.0));

    // Alone, the rate limit is what the caller gets.
    let limited = Deployment {
        order: None,
        ..gemini(&base, "rate-limited")
    };
    let router = ferrolite::Router::builder()
        .deployments([limited])
        .settings(RouterSettings {
            num_retries: 1,
            ..RouterSettings::default()
        })
        .backend(Arc::new(HttpBackend::new().unwrap()))
        .build()
        .await
        .unwrap();
    let error = router.call(Request::new("g", hello())).await.unwrap_err();
    assert!(
        matches!(
            error,
            RouterError::Backend {
                class: ErrorClass::RateLimited { .. },
                ..
            } | RouterError::AllCooledDown { .. }
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn vertex_calls_share_one_access_token_and_send_it_as_a_bearer() {
    let key = test_key();
    let (base, fake) = serve(&key, 3600).await;
    let backend = Arc::new(HttpBackend::new().unwrap());
    let creds = credentials(&base, &key);
    let flash = vertex_deployment(&base, "gemini-2.5-flash", &creds);
    let pro = vertex_deployment(&base, "gemini-2.5-pro", &creds);
    let router = ferrolite::Router::builder()
        .deployments([flash.clone(), pro.clone()])
        .backend(backend.clone())
        .build()
        .await
        .unwrap();
    // Many calls at once, on two deployments with the same credentials: one token fetch.
    // Addressed by id, half to each deployment.
    let calls = (0..12).map(|i| {
        let router = &router;
        let id = if i % 2 == 0 {
            "vertex-gemini-2.5-flash"
        } else {
            "vertex-gemini-2.5-pro"
        };
        async move { router.call(Request::new(id, hello())).await }
    });
    for answer in futures_util::future::join_all(calls).await {
        let answer = answer.unwrap();
        let body = answer.body.to_value().unwrap();
        assert!(
            body["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .starts_with("Hello from gemini-2.5-"),
            "{body}"
        );
    }
    let mut stream = router.stream(Request::new("v", hello())).await.unwrap();
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap().body.to_value().unwrap();
        if let Some(t) = chunk["choices"]
            .get(0)
            .and_then(|c| c["delta"]["content"].as_str())
        {
            text.push_str(t);
        }
    }
    assert!(text.starts_with("Hello from gemini-2.5-"), "{text}");
    assert_eq!(fake.token_fetches.load(Ordering::SeqCst), 1);
    assert_eq!(fake.token_refusals.load(Ordering::SeqCst), 0);
    let seen = fake.seen.lock();
    assert_eq!(seen.len(), 13);
    let models: HashSet<&str> = seen
        .iter()
        .filter_map(|(path, ..)| path.rsplit('/').next()?.split(':').next())
        .collect();
    assert_eq!(
        models,
        HashSet::from(["gemini-2.5-flash", "gemini-2.5-pro"])
    );
    for (path, _, headers, _) in seen.iter() {
        assert!(
            path.starts_with("my-proj/locations/us-central1/publishers/google/models/gemini-2.5-"),
            "{path}"
        );
        assert_eq!(headers["authorization"], "Bearer ya29.test-token-1");
    }
}

#[tokio::test]
async fn a_vertex_token_is_fetched_again_before_it_expires_and_credentials_may_be_a_file() {
    let key = test_key();
    // Tokens of 2 s: replaced half-way, after 1 s.
    let (base, fake) = serve(&key, 2).await;
    let dir = std::env::temp_dir().join(format!("ferrolite-gemini-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("service-account.json");
    std::fs::write(&file, credentials(&base, &key)).unwrap();
    let deployment = vertex_deployment(&base, "gemini-2.5-flash", file.to_str().unwrap());
    let backend = HttpBackend::new().unwrap();
    let prepared = backend.prepare(&deployment);
    assert!(prepared.is_some());
    let request = BackendRequest {
        trace: None,
        prepared,
        ..chat(hello(), false)
    };
    backend.call(&deployment, &request).await.unwrap();
    backend.call(&deployment, &request).await.unwrap();
    assert_eq!(fake.token_fetches.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    backend.call(&deployment, &request).await.unwrap();
    assert_eq!(fake.token_fetches.load(Ordering::SeqCst), 2);
    let seen = fake.seen.lock();
    assert_eq!(seen[1].2["authorization"], "Bearer ya29.test-token-1");
    assert_eq!(seen[2].2["authorization"], "Bearer ya29.test-token-2");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_jwt_signed_with_another_key_is_refused_by_the_token_endpoint_as_an_auth_error() {
    let key = test_key();
    let other = test_key();
    let (base, fake) = serve(&key, 3600).await;
    // The credentials name the account but hold another private key.
    let forged = credentials(&base, &other);
    let deployment = vertex_deployment(&base, "gemini-2.5-flash", &forged);
    let backend = HttpBackend::new().unwrap();
    let request = BackendRequest {
        trace: None,
        prepared: backend.prepare(&deployment),
        ..chat(hello(), false)
    };
    // Eight calls at once wait for one fetch and all get its failure.
    let calls = (0..8).map(|_| backend.call(&deployment, &request));
    for result in futures_util::future::join_all(calls).await {
        let error = result.unwrap_err();
        assert_eq!(error.class, ErrorClass::Authentication, "{}", error.message);
        assert!(
            error.message.contains("vertex_credentials"),
            "{}",
            error.message
        );
        assert!(
            error.message.contains("Invalid JWT Signature"),
            "{}",
            error.message
        );
        assert!(!error.message.contains("PRIVATE KEY"));
    }
    assert_eq!(fake.token_refusals.load(Ordering::SeqCst), 1);
    // A later call tries again.
    backend.call(&deployment, &request).await.unwrap_err();
    assert_eq!(fake.token_refusals.load(Ordering::SeqCst), 2);
    assert_eq!(fake.token_fetches.load(Ordering::SeqCst), 0);
    assert!(fake.seen.lock().is_empty(), "no call without a token");

    // With the right key the same fake issues a token.
    let good = vertex_deployment(&base, "gemini-2.5-flash", &credentials(&base, &key));
    backend.call(&good, &chat(hello(), false)).await.unwrap();
    assert_eq!(fake.token_fetches.load(Ordering::SeqCst), 1);
}

fn vertex_yaml(params: &str) -> String {
    format!(
        "model_list:\n  - model_name: v\n    litellm_params:\n      model: vertex_ai/gemini-2.5-flash\n{params}"
    )
}

#[test]
fn vertex_deployments_without_usable_credentials_or_a_project_are_refused_at_load_by_field() {
    let key = test_key();
    let creds = credentials("https://oauth2.googleapis.com", &key);
    let quoted = serde_json::to_string(&creds).unwrap();

    let error = ferrolite::Config::from_yaml(&vertex_yaml(
        "      vertex_project: p\n      vertex_location: us-central1\n",
    ))
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("model_list[0].litellm_params.vertex_credentials"),
        "{error}"
    );

    let error = ferrolite::Config::from_yaml(&vertex_yaml(
        "      vertex_project: p\n      vertex_credentials: /nonexistent/secret-path.json\n",
    ))
    .unwrap_err()
    .to_string();
    assert!(error.contains("vertex_credentials"), "{error}");
    assert!(error.contains("cannot be read"), "{error}");
    assert!(!error.contains("secret-path"), "{error}");

    let not_an_account = r#"{"type": "authorized_user", "client_id": "x", "client_secret": "hush", "refresh_token": "r"}"#;
    let error = ferrolite::Config::from_yaml(&vertex_yaml(&format!(
        "      vertex_project: p\n      vertex_credentials: '{not_an_account}'\n"
    )))
    .unwrap_err()
    .to_string();
    assert!(error.contains("vertex_credentials"), "{error}");
    assert!(error.contains("service_account"), "{error}");
    assert!(!error.contains("hush"), "{error}");

    // No vertex_project and a key without project_id.
    let mut no_project: Value = serde_json::from_str(&creds).unwrap();
    no_project.as_object_mut().unwrap().remove("project_id");
    let error = ferrolite::Config::from_yaml(&vertex_yaml(&format!(
        "      vertex_credentials: {}\n",
        serde_json::to_string(&no_project.to_string()).unwrap()
    )))
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("model_list[0].litellm_params.vertex_project"),
        "{error}"
    );
    assert!(!error.contains("PRIVATE KEY"), "{error}");

    // Complete: it loads, and is callable (not refused for serving).
    let config = ferrolite::Config::from_yaml(&vertex_yaml(&format!(
        "      vertex_project: p\n      vertex_location: europe-west4\n      vertex_credentials: {quoted}\n"
    )))
    .unwrap();
    assert!(config.not_callable.is_empty(), "{:?}", config.not_callable);
    // A gemini/ deployment needs no api_base: it has its own endpoint.
    let config = ferrolite::Config::from_yaml(
        "model_list:\n  - model_name: g\n    litellm_params:\n      model: gemini/gemini-2.5-flash\n      api_key: k\n",
    )
    .unwrap();
    assert!(config.not_callable.is_empty(), "{:?}", config.not_callable);
}

#[test]
fn vertex_partner_models_and_gemini_embeddings_are_reported_not_callable() {
    let config = ferrolite::Config::from_yaml(
        r#"
model_list:
  - model_name: claude
    litellm_params: {model: vertex_ai/claude-3-5-sonnet-v2@20241022, vertex_project: p}
  - model_name: embed
    litellm_params: {model: gemini/text-embedding-004, api_key: k}
    model_info: {mode: embedding}
  - model_name: chat
    litellm_params: {model: gemini/gemini-2.5-flash, api_key: k}
"#,
    )
    .unwrap();
    let reasons: Vec<(usize, &str)> = config
        .not_callable
        .iter()
        .map(|n| (n.index, n.reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        [
            (
                0,
                "provider vertex_ai: claude models (Vertex AI partner models) are not implemented, only Google's Gemini models"
            ),
            (
                1,
                "provider gemini: mode embedding is not implemented (chat only)"
            ),
        ]
    );
}

#[tokio::test]
async fn an_embedding_request_to_a_gemini_deployment_is_a_bad_request_before_any_call() {
    let key = test_key();
    let (base, fake) = serve(&key, 3600).await;
    let backend = HttpBackend::new().unwrap();
    let error = backend
        .call(
            &gemini(&base, "gemini-2.5-flash"),
            &chat(json!({"input": ["a"]}), false),
        )
        .await
        .unwrap_err();
    assert_eq!(error.class, ErrorClass::BadRequest { status: 400 });
    assert!(
        error.message.contains("chat completions only"),
        "{}",
        error.message
    );
    assert!(fake.seen.lock().is_empty());
}

#[tokio::test]
async fn a_stream_that_ends_without_an_event_is_a_bad_answer() {
    let key = test_key();
    let (base, _) = serve(&key, 3600).await;
    let backend = HttpBackend::new().unwrap();
    assert_eq!(
        collect(&backend, &gemini(&base, "empty"), hello())
            .await
            .unwrap_err(),
        ErrorClass::ServerError { status: 502 }
    );
}

#[tokio::test]
async fn a_wildcard_gemini_deployment_calls_the_model_the_client_asked_for() {
    let key = test_key();
    let (base, fake) = serve(&key, 3600).await;
    let backend = HttpBackend::new().unwrap();
    let wildcard = gemini(&base, "*");
    assert!(backend.prepare(&wildcard).is_none());
    let mut body = hello();
    body["model"] = json!("gemini/gemini-2.5-pro");
    let response = backend.call(&wildcard, &chat(body, false)).await.unwrap();
    assert_eq!(fake.seen.lock()[0].0, "gemini-2.5-pro:generateContent");
    assert_eq!(response.body.to_value().unwrap()["model"], "gemini-2.5-pro");
}

#[tokio::test]
async fn an_error_event_in_the_middle_of_a_stream_ends_it_classified() {
    let key = test_key();
    let (base, _) = serve(&key, 3600).await;
    let backend = HttpBackend::new().unwrap();
    let mut stream = backend
        .stream(&gemini(&base, "breaks"), &chat(hello(), true))
        .await
        .unwrap();
    let mut text = String::new();
    let mut error = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => {
                let chunk = chunk.body.to_value().unwrap();
                if let Some(t) = chunk["choices"][0]["delta"]["content"].as_str() {
                    text.push_str(t);
                }
            }
            Err(e) => error = Some(e),
        }
    }
    assert_eq!(text, "Hel");
    let error = error.expect("the stream ends with an error");
    assert_eq!(error.class, ErrorClass::ServerError { status: 500 });
    assert!(error.message.contains("INTERNAL"), "{}", error.message);
}

#[tokio::test]
async fn a_wildcard_model_name_that_would_change_the_url_is_refused_before_any_call() {
    let key = test_key();
    let (base, fake) = serve(&key, 3600).await;
    let backend = HttpBackend::new().unwrap();
    let evil = "../../../../x/endpoints/E:rawPredict?";
    for (deployment, asked) in [
        (gemini(&base, "*"), format!("gemini/{evil}")),
        (gemini(&base, "*"), "gemini/..".to_string()),
        (gemini(&base, "*"), "gemini/a b".to_string()),
        (
            Deployment {
                api_base: None,
                ..vertex_deployment(&base, "*", &credentials(&base, &key))
            },
            format!("vertex_ai/{evil}"),
        ),
    ] {
        let mut body = hello();
        body["model"] = json!(asked);
        for stream in [false, true] {
            let error = if stream {
                match backend.stream(&deployment, &chat(body.clone(), true)).await {
                    Err(error) => error,
                    Ok(_) => panic!("{asked}: the stream started"),
                }
            } else {
                backend
                    .call(&deployment, &chat(body.clone(), false))
                    .await
                    .unwrap_err()
            };
            assert_eq!(
                error.class,
                ErrorClass::BadRequest { status: 400 },
                "{asked}"
            );
            let name = asked.split_once('/').unwrap().1;
            assert!(error.message.contains(name), "{}", error.message);
        }
    }
    assert!(fake.seen.lock().is_empty());
    assert!(fake.stray.lock().is_empty(), "{:?}", fake.stray.lock());
    assert_eq!(fake.token_fetches.load(Ordering::SeqCst), 0);
    // A model name Google uses still goes through.
    let mut body = hello();
    body["model"] = json!("gemini/gemini-2.0-flash-001");
    backend
        .call(&gemini(&base, "*"), &chat(body, false))
        .await
        .unwrap();
    assert_eq!(
        fake.seen.lock()[0].0,
        "gemini-2.0-flash-001:generateContent"
    );
}

#[tokio::test]
async fn a_stream_that_closes_before_its_finish_reason_ends_with_a_connection_error() {
    let key = test_key();
    let (base, _) = serve(&key, 3600).await;
    let backend = HttpBackend::new().unwrap();
    let mut stream = backend
        .stream(&gemini(&base, "cut"), &chat(hello(), true))
        .await
        .unwrap();
    let mut text = String::new();
    let mut error = None;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => {
                let chunk = chunk.body.to_value().unwrap();
                assert!(chunk["choices"][0]["finish_reason"].is_null(), "{chunk}");
                if let Some(t) = chunk["choices"][0]["delta"]["content"].as_str() {
                    text.push_str(t);
                }
            }
            Err(e) => error = Some(e),
        }
    }
    assert_eq!(text, "Hel");
    let error = error.expect("the stream ends with an error");
    assert_eq!(error.class, ErrorClass::Connection);
    assert!(error.message.contains("ended before"), "{}", error.message);
}

#[tokio::test]
async fn an_over_long_event_line_ends_the_stream_as_a_bad_answer() {
    let key = test_key();
    let (base, _) = serve(&key, 3600).await;
    let backend = HttpBackend::new().unwrap();
    let mut stream = backend
        .stream(&gemini(&base, "long-line"), &chat(hello(), true))
        .await
        .unwrap();
    let mut error = None;
    while let Some(chunk) = stream.next().await {
        if let Err(e) = chunk {
            error = Some(e);
        }
    }
    let error = error.expect("the stream ends with an error");
    assert_eq!(error.class, ErrorClass::ServerError { status: 502 });
    assert!(error.message.contains("16 MiB"), "{}", error.message);
}
