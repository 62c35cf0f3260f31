//! Amazon Bedrock (`bedrock/...` and `bedrock/converse/...` deployments): the Converse and
//! ConverseStream APIs, signed with AWS Signature Version 4.
//!
//! A call goes to `POST {endpoint}/model/{modelId}/converse` (a stream to
//! `/converse-stream`), where `modelId` is the deployment's model without its `bedrock/` and
//! `converse/` prefixes, percent-encoded (`anthropic.claude-3-5-sonnet-20240620-v1:0` is sent
//! as `anthropic.claude-3-5-sonnet-20240620-v1%3A0`), and the endpoint is `api_base`, else
//! `aws_bedrock_runtime_endpoint`, else `https://bedrock-runtime.{region}.amazonaws.com`.
//!
//! Where the signing comes from, as LiteLLM names it:
//!
//! | what | `litellm_params` | else the environment |
//! |---|---|---|
//! | region | `aws_region_name` | `AWS_REGION`, `AWS_DEFAULT_REGION` |
//! | access key | `aws_access_key_id` + `aws_secret_access_key` | `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY` |
//! | session token | `aws_session_token` (with the keys above) | `AWS_SESSION_TOKEN` (with the environment's keys) |
//!
//! Profiles (`~/.aws/credentials`, `aws_profile_name`), assumed roles (`aws_role_name`), web
//! identity tokens and the instance metadata service are not read: a deployment needs keys in
//! its parameters or the environment, and one without keys or region is refused when the
//! configuration is loaded, naming the missing parameter. The region, endpoint and credentials
//! are worked out once per deployment ([`Backend::prepare`](ferrolite_router::Backend::prepare));
//! each call is signed (service `bedrock`) at the time it is sent.
//!
//! The request and answers are translated by [`ferrolite_protocols::converse`]. A stream's
//! answer comes in AWS's binary event-stream framing (`application/vnd.amazon.eventstream`),
//! decoded as it arrives. A request with a `response_format` is answered whole and streamed as
//! chunks of that answer (LiteLLM's `fake_stream`), since its JSON is the input of one tool
//! call that is unwrapped at the end.
//!
//! Failures are classified as the OpenAI backend's are: 429 and `ThrottlingException` as a
//! rate limit (with `Retry-After` when sent), a `ValidationException` saying the input is too
//! long as a context-window error, `UnrecognizedClientException` and signature or token errors
//! as an authentication error, `AccessDeniedException` as permission denied,
//! `ServiceUnavailableException`, `ModelNotReadyException` and other 5xx as server errors; the
//! exception events of a stream likewise.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_eventstream::frame::{DecodedFrame, MessageFrameDecoder};
use aws_smithy_runtime_api::client::identity::Identity;
use aws_smithy_types::event_stream::{HeaderValue, Message};
use bytes::{Bytes, BytesMut};
use ferrolite_protocols::converse::{self, ChatChunks, StreamFailure};
use ferrolite_router::{
    BackendChunk, BackendError, BackendFuture, BackendRequest, BackendResponse, BackendStream,
    BackendStreamFuture, Body, Prepared,
};
use ferrolite_types::{Deployment, ErrorClass, Protocol};
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::http::{HttpBackend, bad_answer, retry_after, transport_error, without_url};

/// The SigV4 service name of the Bedrock runtime.
const SERVICE: &str = "bedrock";

/// What every call of one deployment uses alike, worked out once.
#[derive(Debug, Clone)]
pub(crate) struct Ready {
    /// `{endpoint}/model/{modelId}` (the model encoded), or `None` for a wildcard deployment,
    /// whose model is the request's.
    base: Option<String>,
    /// The endpoint, without a trailing `/`.
    endpoint: String,
    region: String,
    identity: Identity,
}

/// What a deployment lacks to be called: the parameter, and what to set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Missing(pub(crate) &'static str, pub(crate) &'static str);

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "needs {} ({})", self.0, self.1)
    }
}

/// A provider parameter, else an environment variable, non-empty.
fn param_or_env(deployment: &Deployment, param: &str, env: &[&str]) -> Option<String> {
    if let Some(value) = deployment.provider_params.get(param) {
        let value = value.expose().trim();
        if !value.is_empty() {
            return Some(value.to_string());
        }
    }
    env.iter()
        .filter_map(|name| std::env::var(name).ok())
        .map(|v| v.trim().to_string())
        .find(|v| !v.is_empty())
}

/// The deployment's region.
pub(crate) fn region_of(deployment: &Deployment) -> Result<String, Missing> {
    param_or_env(
        deployment,
        "aws_region_name",
        &["AWS_REGION", "AWS_DEFAULT_REGION"],
    )
    .ok_or(Missing(
        "aws_region_name",
        "or the AWS_REGION environment variable",
    ))
}

/// The deployment's credentials: its own keys, else the environment's.
pub(crate) fn credentials_of(deployment: &Deployment) -> Result<Credentials, Missing> {
    let own = |name: &str| {
        deployment
            .provider_params
            .get(name)
            .map(|s| s.expose().trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let env = |name: &str| {
        std::env::var(name)
            .ok()
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let (key, secret, token) = match (own("aws_access_key_id"), own("aws_secret_access_key")) {
        (Some(key), Some(secret)) => (key, secret, own("aws_session_token")),
        (Some(_), None) => {
            return Err(Missing("aws_secret_access_key", "with aws_access_key_id"));
        }
        (None, Some(_)) => {
            return Err(Missing("aws_access_key_id", "with aws_secret_access_key"));
        }
        (None, None) => match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
            (Some(key), Some(secret)) => (key, secret, env("AWS_SESSION_TOKEN")),
            (Some(_), None) => {
                return Err(Missing(
                    "aws_secret_access_key",
                    "or the AWS_SECRET_ACCESS_KEY environment variable",
                ));
            }
            _ => {
                return Err(Missing(
                    "aws_access_key_id",
                    "and aws_secret_access_key, or the AWS_ACCESS_KEY_ID and \
                     AWS_SECRET_ACCESS_KEY environment variables",
                ));
            }
        },
    };
    Ok(Credentials::new(key, secret, token, None, "ferrolite"))
}

/// The Bedrock model id a deployment's model names: without `bedrock/` and `converse/`.
pub(crate) fn model_id(model: &str) -> &str {
    let model = model.strip_prefix("bedrock/").unwrap_or(model);
    model.strip_prefix("converse/").unwrap_or(model)
}

/// `text` percent-encoded as one path segment (all but RFC 3986's unreserved characters).
fn encode_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
    }
    out
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

impl Ready {
    /// The deployment's endpoint, region and credentials, or what it lacks.
    pub(crate) fn of(deployment: &Deployment) -> Result<Ready, Missing> {
        let region = region_of(deployment)?;
        let credentials = credentials_of(deployment)?;
        let endpoint = deployment
            .api_base
            .clone()
            .or_else(|| {
                deployment
                    .provider_params
                    .get("aws_bedrock_runtime_endpoint")
                    .map(|s| s.expose().to_string())
            })
            .unwrap_or_else(|| format!("https://bedrock-runtime.{region}.amazonaws.com"));
        let endpoint = endpoint.trim_end_matches('/').to_string();
        let base = (!deployment.model.contains('*')).then(|| {
            format!(
                "{endpoint}/model/{}",
                encode_segment(model_id(&deployment.model))
            )
        });
        Ok(Ready {
            base,
            endpoint,
            region,
            identity: credentials.into(),
        })
    }

    /// `{endpoint}/model/{modelId}/{action}` for a call asking for `asked` (the request's
    /// model, which a wildcard deployment calls).
    /// A model id that is empty, `.` or `..` is refused: percent-encoding leaves dots as they
    /// are, and such a segment would move the URL to another path of the endpoint.
    fn url(&self, asked: &str, action: &str) -> Result<String, BackendError> {
        match &self.base {
            Some(base) => Ok(format!("{base}/{action}")),
            None => {
                let id = model_id(asked);
                if matches!(id, "" | "." | "..") {
                    return Err(BackendError::new(
                        ErrorClass::BadRequest { status: 400 },
                        format!("model `{asked}` is not a Bedrock model id"),
                    ));
                }
                Ok(format!(
                    "{}/model/{}/{action}",
                    self.endpoint,
                    encode_segment(id)
                ))
            }
        }
    }
}

/// What `deployment`'s calls use alike (`None` when it lacks something: each call then fails
/// naming it).
pub(crate) fn prepare(deployment: &Deployment) -> Option<Prepared> {
    Ready::of(deployment).ok().map(Prepared::new)
}

/// The prepared part of a call, else worked out now.
fn ready<'a>(
    deployment: &Deployment,
    request: &'a BackendRequest,
) -> Result<std::borrow::Cow<'a, Ready>, BackendError> {
    if let Some(ready) = request.prepared.as_ref().and_then(|p| p.get::<Ready>()) {
        return Ok(std::borrow::Cow::Borrowed(ready));
    }
    Ready::of(deployment)
        .map(std::borrow::Cow::Owned)
        .map_err(|missing| {
            let class = if missing.0 == "aws_region_name" {
                ErrorClass::BadRequest { status: 400 }
            } else {
                ErrorClass::Authentication
            };
            BackendError::new(
                class,
                format!("bedrock deployment `{}` {missing}", deployment.id()),
            )
        })
}

/// The model the call asks for (the request's, for a wildcard deployment) and its id.
fn asked<'a>(deployment: &'a Deployment, request: &'a BackendRequest) -> &'a str {
    match request.body.get("model").and_then(Value::as_str) {
        Some(asked) if deployment.model.contains('*') => asked,
        _ => deployment.model.as_str(),
    }
}

/// The signed request of a call.
fn signed(
    backend: &HttpBackend,
    deployment: &Deployment,
    ready: &Ready,
    url: &str,
    body: Vec<u8>,
    stream: bool,
    trace: Option<&ferrolite_router::spans::TraceParent>,
) -> Result<reqwest::Request, BackendError> {
    let accept = if stream {
        "application/vnd.amazon.eventstream"
    } else {
        "application/json"
    };
    let headers = [("content-type", "application/json"), ("accept", accept)];
    let signable = SignableRequest::new(
        "POST",
        url,
        headers.iter().copied(),
        SignableBody::Bytes(&body),
    )
    .map_err(|e| signing_failed(&e))?;
    // The one wall-clock read of a call: a signature carries the time it was made.
    #[allow(clippy::disallowed_methods)]
    let now = SystemTime::now();
    let params = v4::SigningParams::builder()
        .identity(&ready.identity)
        .region(&ready.region)
        .name(SERVICE)
        .time(now)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| signing_failed(&e))?
        .into();
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| signing_failed(&e))?
        .into_parts();
    let mut builder = backend
        .client
        .post(url)
        .header("content-type", "application/json")
        .header("accept", accept);
    for (name, value) in instructions.headers() {
        builder = builder.header(name, value);
    }
    // The deployment's extra headers go unsigned (AWS checks only the signed ones).
    for (name, value) in &deployment.extra_headers {
        builder = builder.header(name.as_str(), value.expose());
    }
    let mut request = builder.build().map_err(|e| transport_error(&e))?;
    // Unsigned, as the extra headers.
    crate::http::add_trace_context(request.headers_mut(), trace);
    *request.body_mut() = Some(body.into());
    Ok(request)
}

fn signing_failed(error: &dyn std::fmt::Display) -> BackendError {
    BackendError::new(
        ErrorClass::BadRequest { status: 400 },
        format!("the request could not be signed: {error}"),
    )
}

/// The Converse body of a call.
fn converse_body(request: &BackendRequest) -> Result<Vec<u8>, BackendError> {
    converse::request_bytes_from_chat(&request.body).map_err(|e| {
        BackendError::new(
            ErrorClass::BadRequest { status: 400 },
            format!("the request cannot be sent to Bedrock: {e}"),
        )
    })
}

/// Calls the Converse API.
pub(crate) fn call<'a>(
    backend: &'a HttpBackend,
    deployment: &'a Deployment,
    request: &'a BackendRequest,
) -> BackendFuture<'a> {
    Box::pin(async move {
        let (answer, request_id) = converse_answer(backend, deployment, request).await?;
        let model = model_id(asked(deployment, request));
        let id = format!("chatcmpl-{request_id}");
        // Written straight from the answer's parts, read borrowed from its bytes.
        let json_mode = converse::json_mode(&request.body);
        let chat = converse::answer_bytes_to_chat_bytes(&answer, model, json_mode, &id)
            .map_err(|e| bad_answer(format!("the answer is not a Converse answer: {e}")))?;
        let body = Body::parse(chat).map_err(|e| bad_answer(format!("the answer is {e}")))?;
        Ok(BackendResponse {
            usage: body.usage(),
            body,
            time_to_first_token: None,
            protocol: Protocol::OpenAiChat,
        })
    })
}

/// One Converse call's answer as a `chat.completion`.
async fn whole(
    backend: &HttpBackend,
    deployment: &Deployment,
    request: &BackendRequest,
) -> Result<Value, BackendError> {
    let (answer, request_id) = converse_answer(backend, deployment, request).await?;
    let answer: Value = serde_json::from_slice(&answer)
        .map_err(|e| bad_answer(format!("the answer is not JSON: {e}")))?;
    let model = model_id(asked(deployment, request));
    let mut chat = converse::answer_to_chat_in(&answer, model, converse::json_mode(&request.body))
        .map_err(|e| bad_answer(format!("the answer is not a Converse answer: {e}")))?;
    chat["id"] = format!("chatcmpl-{request_id}").into();
    Ok(chat)
}

/// One Converse call's answer, as its bytes, and its request id.
async fn converse_answer(
    backend: &HttpBackend,
    deployment: &Deployment,
    request: &BackendRequest,
) -> Result<(Bytes, String), BackendError> {
    let ready = ready(deployment, request)?;
    let url = ready.url(asked(deployment, request), "converse")?;
    let sent = signed(
        backend,
        deployment,
        &ready,
        &url,
        converse_body(request)?,
        false,
        request.trace.as_ref(),
    )?;
    let response = backend
        .client
        .execute(sent)
        .await
        .map_err(|e| transport_error(&e))?;
    if !response.status().is_success() {
        return Err(failed(response).await);
    }
    let request_id = request_id(response.headers());
    let bytes = response
        .bytes()
        .await
        .map_err(|e| bad_answer(format!("the answer broke off: {}", without_url(&e))))?;
    Ok((bytes, request_id))
}

/// `x-amzn-requestid`, the answer's id.
fn request_id(headers: &reqwest::header::HeaderMap) -> String {
    headers
        .get("x-amzn-requestid")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("bedrock")
        .to_string()
}

/// Streams a ConverseStream call.
pub(crate) fn stream<'a>(
    backend: &'a HttpBackend,
    deployment: &'a Deployment,
    request: &'a BackendRequest,
) -> BackendStreamFuture<'a> {
    Box::pin(async move {
        if converse::json_mode(&request.body) {
            let chat = whole(backend, deployment, request).await?;
            let chunks = chunks_of_answer(&chat).into_iter().map(|c| Ok(chunk(&c)));
            return Ok(Box::pin(futures_util::stream::iter(chunks)) as BackendStream);
        }
        let ready = ready(deployment, request)?;
        let model = model_id(asked(deployment, request)).to_string();
        let url = ready.url(asked(deployment, request), "converse-stream")?;
        let sent = signed(
            backend,
            deployment,
            &ready,
            &url,
            converse_body(request)?,
            true,
            request.trace.as_ref(),
        )?;
        let response = backend
            .client
            .execute(sent)
            .await
            .map_err(|e| transport_error(&e))?;
        if !response.status().is_success() {
            return Err(failed(response).await);
        }
        let id = format!("chatcmpl-{}", request_id(response.headers()));
        let events = Events {
            bytes: response.bytes_stream(),
            buffer: BytesMut::new(),
            decoder: MessageFrameDecoder::new(),
            chunks: ChatChunks::with_id(&model, &id),
            pending: std::collections::VecDeque::new(),
            done: false,
            stopped: false,
            metadata: false,
        };
        Ok(Box::pin(events.into_stream()) as BackendStream)
    })
}

/// A chunk's body, with its usage read.
fn chunk(value: &Value) -> BackendChunk {
    let body = Body::from_value(value);
    BackendChunk {
        usage: body.usage(),
        body,
        protocol: Protocol::OpenAiChat,
    }
}

/// A whole `chat.completion` as the chunks of a stream: the role, the content, the finish
/// reason, the usage.
fn chunks_of_answer(chat: &Value) -> Vec<Value> {
    let head = |delta: Value, finish: Value| {
        json!({
            "id": chat["id"], "object": "chat.completion.chunk", "created": chat["created"],
            "model": chat["model"],
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
    };
    let choice = &chat["choices"][0];
    let message = &choice["message"];
    let mut delta = json!({"role": "assistant", "content": message["content"]});
    if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
        let indexed: Vec<Value> = calls
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut c = c.clone();
                c["index"] = i.into();
                c
            })
            .collect();
        delta["tool_calls"] = Value::Array(indexed);
    }
    let mut out = vec![
        head(delta, Value::Null),
        head(json!({}), choice["finish_reason"].clone()),
    ];
    if let Some(usage) = chat.get("usage") {
        out.push(json!({
            "id": chat["id"], "object": "chat.completion.chunk", "created": chat["created"],
            "model": chat["model"], "choices": [], "usage": usage,
        }));
    }
    out
}

/// A ConverseStream answer's events, decoded as they arrive, as chunks.
struct Events<S> {
    bytes: S,
    buffer: BytesMut,
    decoder: MessageFrameDecoder,
    chunks: ChatChunks,
    pending: std::collections::VecDeque<Value>,
    done: bool,
    /// `messageStop` was read.
    stopped: bool,
    /// `metadata` (the usage, the last event) was read.
    metadata: bool,
}

/// A header's string value.
fn header<'m>(message: &'m Message, name: &str) -> Option<&'m str> {
    message
        .headers()
        .iter()
        .find(|h| h.name().as_str() == name)
        .and_then(|h| match h.value() {
            HeaderValue::String(s) => Some(s.as_str()),
            _ => None,
        })
}

impl<S> Events<S>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, reqwest::Error>> + Send + Unpin + 'static,
{
    /// The chunks of one decoded message, or the failure it reports.
    fn message(&mut self, message: &Message) -> Result<Vec<Value>, BackendError> {
        let payload: Value = if message.payload().is_empty() {
            json!({})
        } else {
            serde_json::from_slice(message.payload())
                .map_err(|e| bad_answer(format!("a stream event is not JSON: {e}")))?
        };
        let kind = match header(message, ":message-type") {
            Some("event") => header(message, ":event-type"),
            Some("exception") => header(message, ":exception-type"),
            Some("error") => {
                let code = header(message, ":error-code").unwrap_or("error");
                let text = header(message, ":error-message").unwrap_or("");
                return Err(classify_exception(code, text, None));
            }
            _ => None,
        }
        .ok_or_else(|| bad_answer("a stream event without its type".to_string()))?
        .to_string();
        match kind.as_str() {
            "messageStop" => self.stopped = true,
            "metadata" => self.metadata = true,
            _ => {}
        }
        self.chunks.push(&kind, &payload).map_err(|f| match f {
            StreamFailure::Exception {
                exception_type,
                message,
            } => classify_exception(&exception_type, &message, None),
            StreamFailure::Bad(e) => bad_answer(format!("a stream event is not Converse's: {e}")),
        })
    }

    async fn next_chunk(&mut self) -> Option<Result<BackendChunk, BackendError>> {
        loop {
            if let Some(value) = self.pending.pop_front() {
                return Some(Ok(chunk(&value)));
            }
            if self.done {
                return None;
            }
            match self.decoder.decode_frame(&mut self.buffer) {
                Ok(DecodedFrame::Complete(message)) => match self.message(&message) {
                    Ok(values) => self.pending.extend(values),
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                },
                Ok(DecodedFrame::Incomplete) => match self.bytes.next().await {
                    Some(Ok(bytes)) => self.buffer.extend_from_slice(&bytes),
                    Some(Err(e)) => {
                        self.done = true;
                        return Some(Err(BackendError::new(
                            ErrorClass::Connection,
                            format!("the stream broke: {}", without_url(&e)),
                        )));
                    }
                    None => {
                        self.done = true;
                        if !self.buffer.is_empty() {
                            return Some(Err(BackendError::new(
                                ErrorClass::Connection,
                                "the stream ended in the middle of an event",
                            )));
                        }
                        if !self.stopped || !self.metadata {
                            let missing = if self.stopped {
                                "its metadata"
                            } else {
                                "messageStop"
                            };
                            return Some(Err(BackendError::new(
                                ErrorClass::Connection,
                                format!("the stream ended before {missing}"),
                            )));
                        }
                    }
                },
                Err(e) => {
                    self.done = true;
                    return Some(Err(bad_answer(format!(
                        "the stream's event framing is broken: {e}"
                    ))));
                }
            }
        }
    }

    fn into_stream(
        self,
    ) -> impl futures_util::Stream<Item = Result<BackendChunk, BackendError>> + Send {
        futures_util::stream::unfold(self, |mut events| async move {
            events.next_chunk().await.map(|item| (item, events))
        })
    }
}

/// Reads an error answer and classifies it.
async fn failed(response: reqwest::Response) -> BackendError {
    let status = response.status().as_u16();
    let retry = retry_after(response.headers());
    let kind = response
        .headers()
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = response.text().await.unwrap_or_default();
    classify(status, retry, kind.as_deref(), &body)
}

/// Classifies a Bedrock error answer: its status, its error type (the `x-amzn-errortype`
/// header, else the body's `__type`) and message.
pub(crate) fn classify(
    status: u16,
    retry: Option<Duration>,
    kind: Option<&str>,
    body: &str,
) -> BackendError {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|b| b.get("message").or_else(|| b.get("Message")))
        .and_then(Value::as_str)
        .map_or_else(|| body.chars().take(500).collect(), str::to_string);
    let kind = kind
        .map(str::to_string)
        .or_else(|| {
            parsed
                .as_ref()
                .and_then(|b| b.get("__type"))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_default();
    // `ThrottlingException:http://internal.amazon.com/...`, `com.amazon...#ThrottlingException`.
    let kind = kind.split(':').next().unwrap_or("");
    let kind = kind.rsplit('#').next().unwrap_or(kind);
    let mut error = classify_exception(kind, &message, retry);
    if kind.is_empty() || matches!(error.class, ErrorClass::ServerError { status: 500 }) {
        // No type this table knows: the status decides, refined by the message.
        let lower = message.to_ascii_lowercase();
        error.class = if too_long(&lower) {
            ErrorClass::ContextWindowExceeded
        } else if status == 403 {
            ErrorClass::PermissionDenied
        } else {
            ErrorClass::from_status(status, retry)
        };
    }
    error.message = format!("HTTP {status}: {}", error.message);
    error
}

/// Whether an error message says the prompt does not fit.
fn too_long(lower: &str) -> bool {
    lower.contains("too long")
        || lower.contains("too many input tokens")
        || lower.contains("context length")
        || lower.contains("context window")
        || lower.contains("maximum context")
}

/// Classifies a Bedrock exception by its type (`ThrottlingException`, or a stream's
/// `throttlingException`) and message; an unknown type is a server error (500).
pub(crate) fn classify_exception(
    kind: &str,
    message: &str,
    retry: Option<Duration>,
) -> BackendError {
    let lower = message.to_ascii_lowercase();
    let class = match kind.to_ascii_lowercase().as_str() {
        "throttlingexception" | "toomanyrequestsexception" | "servicequotaexceededexception" => {
            ErrorClass::RateLimited { retry_after: retry }
        }
        "validationexception" if too_long(&lower) => ErrorClass::ContextWindowExceeded,
        "validationexception" => ErrorClass::BadRequest { status: 400 },
        "unrecognizedclientexception"
        | "invalidsignatureexception"
        | "incompletesignatureexception"
        | "missingauthenticationtokenexception"
        | "expiredtokenexception"
        | "invalidclienttokenid" => ErrorClass::Authentication,
        "accessdeniedexception" => ErrorClass::PermissionDenied,
        "resourcenotfoundexception" => ErrorClass::NotFound,
        "modeltimeoutexception" => ErrorClass::Timeout,
        "serviceunavailableexception" | "modelnotreadyexception" => {
            ErrorClass::ServerError { status: 503 }
        }
        "modelstreamerrorexception" | "modelerrorexception" => {
            ErrorClass::ServerError { status: 502 }
        }
        _ => ErrorClass::ServerError { status: 500 },
    };
    let shown = if kind.is_empty() {
        message.to_string()
    } else {
        format!("{kind}: {message}")
    };
    BackendError::new(class, shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_id_loses_its_prefixes_and_is_encoded() {
        assert_eq!(
            model_id("bedrock/converse/anthropic.claude-3-5-sonnet-20240620-v1:0"),
            "anthropic.claude-3-5-sonnet-20240620-v1:0"
        );
        assert_eq!(
            model_id("bedrock/amazon.nova-pro-v1:0"),
            "amazon.nova-pro-v1:0"
        );
        assert_eq!(
            encode_segment("anthropic.claude-3-5-sonnet-20240620-v1:0"),
            "anthropic.claude-3-5-sonnet-20240620-v1%3A0"
        );
        assert_eq!(
            encode_segment("arn:aws:bedrock:us-east-1:1:x/y"),
            "arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ax%2Fy"
        );
    }

    #[test]
    fn error_answers_are_classified_by_their_type() {
        let class = |status, kind, body| classify(status, None, kind, body).class;
        assert_eq!(
            class(
                429,
                Some("ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"),
                r#"{"message":"Too many requests"}"#
            ),
            ErrorClass::RateLimited { retry_after: None }
        );
        assert_eq!(
            class(
                400,
                Some("ValidationException"),
                r#"{"message":"Input is too long for requested model."}"#
            ),
            ErrorClass::ContextWindowExceeded
        );
        assert_eq!(
            class(
                400,
                Some("ValidationException"),
                r#"{"message":"bad field"}"#
            ),
            ErrorClass::BadRequest { status: 400 }
        );
        assert_eq!(
            class(
                403,
                Some("UnrecognizedClientException"),
                r#"{"message":"The security token included in the request is invalid."}"#
            ),
            ErrorClass::Authentication
        );
        assert_eq!(
            class(403, Some("AccessDeniedException"), r#"{"message":"no"}"#),
            ErrorClass::PermissionDenied
        );
        assert_eq!(
            class(503, None, r#"{"message":"later"}"#),
            ErrorClass::ServerError { status: 503 }
        );
        assert_eq!(
            class(
                429,
                Some("ModelNotReadyException"),
                r#"{"message":"warming"}"#
            ),
            ErrorClass::ServerError { status: 503 }
        );
        assert_eq!(class(403, None, "{}"), ErrorClass::PermissionDenied);
        // A Retry-After, when sent, reaches the rate limit.
        assert_eq!(
            classify(
                429,
                Some(Duration::from_secs(3)),
                Some("ThrottlingException"),
                "{}"
            )
            .class,
            ErrorClass::RateLimited {
                retry_after: Some(Duration::from_secs(3))
            }
        );
    }
}
