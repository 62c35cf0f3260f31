//! The native Anthropic backend: an `anthropic/` deployment is called in Anthropic's Messages
//! API, `POST {api_base}/v1/messages`.
//!
//! - `api_base` defaults to `https://api.anthropic.com`; one that already ends in `/v1/messages`
//!   is called as it is (as LiteLLM's `AnthropicModelInfo.get_complete_url` does).
//! - Headers: `x-api-key` (the deployment's key), `anthropic-version`
//!   ([`ANTHROPIC_VERSION`] unless the deployment's extra headers set it), `content-type:
//!   application/json` (unless they set it), the extra headers, `x-request-id`. A request that
//!   passes through also carries its caller's `anthropic-beta` (after the deployment's own
//!   betas) and `anthropic-version` (unless the extra headers set one), as LiteLLM's proxy
//!   forwards them; a translated one never does.
//! - The model is the deployment's without its `anthropic/` prefix (for a wildcard deployment,
//!   the one the client asked for).
//! - A canonical request is translated ([`upstream::request_from_chat`]) and the answer
//!   translated back, whole or streamed. A caller's own Messages request
//!   ([`BackendRequest::native`]) passes through untranslated, only its `model` replaced (and
//!   `stream` set as the call is): `cache_control` and every other field reach Anthropic as the
//!   caller wrote them, and the answer comes back in Messages form (a stream as each event's
//!   data, `ping`s included).
//! - Failures are classified by [`upstream::error_class`] (429 with `Retry-After`, 529
//!   overloaded, "prompt is too long", authentication, content filtering); an `error` event in a
//!   stream likewise. The usage (cache reads and writes counted in the prompt tokens, as LiteLLM
//!   counts them) goes to the router for limits, budgets and cost.

use std::collections::VecDeque;

use ferrolite_protocols::anthropic::{ANTHROPIC_VERSION, upstream};
use ferrolite_protocols::sse::{SseEvent, SseParser};
use ferrolite_router::{
    BackendChunk, BackendError, BackendFuture, BackendRequest, BackendResponse, BackendStream,
    BackendStreamFuture, Body,
};
use ferrolite_types::{Deployment, ErrorClass, Protocol, Usage};
use futures_util::StreamExt;
use serde_json::Value;

use crate::http::{HttpBackend, bad_answer, model_name, retry_after, transport_error, without_url};

/// Where an `anthropic` deployment without `api_base` is called.
pub(crate) const DEFAULT_BASE: &str = "https://api.anthropic.com";

/// The Messages endpoint of `deployment`.
pub(crate) fn url_of(deployment: &Deployment) -> String {
    let base = deployment
        .api_base
        .as_deref()
        .unwrap_or(DEFAULT_BASE)
        .trim_end_matches('/');
    if base.ends_with("/v1/messages") {
        base.to_string()
    } else {
        format!("{base}/v1/messages")
    }
}

/// The model Anthropic is asked for: the deployment's without its provider prefix, or for a
/// wildcard deployment (`anthropic/*`) the one the client asked for.
fn model_of<'a>(deployment: &'a Deployment, request: &'a BackendRequest) -> &'a str {
    let wanted = match request.body.get("model").and_then(Value::as_str) {
        Some(asked) if deployment.model.contains('*') => asked,
        _ => deployment.model.as_str(),
    };
    model_name(wanted)
}

/// The body sent: the caller's Messages request with `model` replaced, or the canonical one
/// translated; `stream` as the call is. Also whether it passes through.
fn body_of(
    deployment: &Deployment,
    request: &BackendRequest,
    stream: bool,
) -> Result<(Vec<u8>, bool), BackendError> {
    let model = model_of(deployment, request);
    let mut body = match &request.native {
        Some(native) if native.protocol == Protocol::AnthropicMessages => (*native.body).clone(),
        _ => {
            // Written straight from the canonical request's parts, `model` and `stream` set.
            let body =
                upstream::request_bytes_from_chat(&request.body, model, stream).map_err(|e| {
                    BackendError::new(ErrorClass::BadRequest { status: 400 }, e.to_string())
                })?;
            return Ok((body, false));
        }
    };
    let native = true;
    let object = body.as_object_mut().ok_or_else(|| {
        BackendError::new(
            ErrorClass::BadRequest { status: 400 },
            "the request is not a JSON object",
        )
    })?;
    object.insert("model".into(), model.into());
    if stream {
        object.insert("stream".into(), true.into());
    } else {
        object.remove("stream");
    }
    // Writing a tree of `Value`s into a Vec does not fail.
    Ok((serde_json::to_vec(&body).unwrap_or_default(), native))
}

/// The call as a reqwest request; `native`: the caller's own request passes through, with
/// its forwarded headers ([`forward`]).
fn request_of(
    backend: &HttpBackend,
    deployment: &Deployment,
    request: &BackendRequest,
    body: Vec<u8>,
    native: bool,
) -> Result<reqwest::Request, BackendError> {
    let mut builder = backend
        .client
        .post(url_of(deployment))
        .header(reqwest::header::ACCEPT, "application/json");
    if let Some(key) = &deployment.api_key {
        builder = builder.header("x-api-key", key.expose());
    }
    if let Some(id) = &request.request_id {
        builder = builder.header("x-request-id", id.as_str());
    }
    for (name, value) in &deployment.extra_headers {
        builder = builder.header(name.as_str(), value.expose());
    }
    let mut sent = builder.build().map_err(|e| transport_error(&e))?;
    let headers = sent.headers_mut();
    if native {
        forward(request, headers);
    }
    headers
        .entry("anthropic-version")
        .or_insert(reqwest::header::HeaderValue::from_static(ANTHROPIC_VERSION));
    headers.entry(reqwest::header::CONTENT_TYPE).or_insert(
        reqwest::header::HeaderValue::from_static("application/json"),
    );
    crate::http::add_trace_context(headers, request.trace.as_ref());
    // The key header is never shown (debug output, logs).
    if let Some(key) = headers.get_mut("x-api-key") {
        key.set_sensitive(true);
    }
    *sent.body_mut() = Some(body.into());
    Ok(sent)
}

/// The caller's headers on a call its request passes through
/// ([`ferrolite_router::Native::headers`]): its `anthropic-version` where the deployment's extra
/// headers set none (it then replaces the default), its `anthropic-beta` features after the
/// deployment's own (each once). A value that is no valid header is not sent.
fn forward(request: &BackendRequest, headers: &mut reqwest::header::HeaderMap) {
    let forwarded = request.native.as_ref().map_or(&[][..], |n| n.headers());
    for (name, value) in forwarded {
        let value = match name.as_str() {
            "anthropic-beta" => {
                let mut betas: Vec<&str> = Vec::new();
                let own = headers.get(name).and_then(|v| v.to_str().ok());
                for beta in own
                    .into_iter()
                    .chain([value.as_str()])
                    .flat_map(|v| v.split(','))
                {
                    let beta = beta.trim();
                    if !beta.is_empty() && !betas.contains(&beta) {
                        betas.push(beta);
                    }
                }
                betas.join(",")
            }
            "anthropic-version" if !headers.contains_key(name) => value.clone(),
            _ => continue,
        };
        let (Ok(name), Ok(value)) = (
            reqwest::header::HeaderName::from_bytes(name.as_bytes()),
            reqwest::header::HeaderValue::from_str(&value),
        ) else {
            continue;
        };
        headers.insert(name, value);
    }
}

/// Reads an error answer and classifies it as Anthropic's errors are.
async fn failed(response: reqwest::Response) -> BackendError {
    let status = response.status().as_u16();
    let retry = retry_after(response.headers());
    let body = response.text().await.unwrap_or_default();
    BackendError::new(
        upstream::error_class(status, retry, &body),
        format!("HTTP {status}: {}", upstream::error_message(&body)),
    )
}

/// The usage of a Messages `usage` object, counted as LiteLLM counts it.
fn usage_of_native(usage: Option<&Value>) -> Usage {
    usage_of_chat(&upstream::usage_to_chat(usage))
}

/// The usage of a canonical `usage` object, with its cache reads and writes (and of these, the
/// ones written for an hour).
fn usage_of_chat(usage: &Value) -> Usage {
    let count = |name: &str| usage.get(name).and_then(Value::as_u64).unwrap_or(0);
    Usage {
        cache_read_tokens: count("cache_read_input_tokens"),
        cache_write_tokens: count("cache_creation_input_tokens"),
        cache_write_1h_tokens: usage
            .pointer(
                "/prompt_tokens_details/cache_creation_token_details/ephemeral_1h_input_tokens",
            )
            .and_then(Value::as_u64)
            .unwrap_or(0),
        ..Usage::new(count("prompt_tokens"), count("completion_tokens"))
    }
}

/// Calls `deployment` and reads its whole answer.
pub(crate) fn call<'a>(
    backend: &'a HttpBackend,
    deployment: &'a Deployment,
    request: &'a BackendRequest,
) -> BackendFuture<'a> {
    Box::pin(async move {
        let (body, native) = body_of(deployment, request, false)?;
        let sent = request_of(backend, deployment, request, body, native)?;
        let response = backend
            .client
            .execute(sent)
            .await
            .map_err(|e| transport_error(&e))?;
        if !response.status().is_success() {
            return Err(failed(response).await);
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| bad_answer(format!("the answer broke off: {}", without_url(&e))))?;
        if native {
            let answer: Value = serde_json::from_slice(&bytes)
                .map_err(|e| bad_answer(format!("the answer is not JSON: {e}")))?;
            if !answer.is_object() {
                return Err(bad_answer("the answer is not a JSON object".into()));
            }
            let body = Body::parse(bytes).map_err(|e| bad_answer(format!("the answer is {e}")))?;
            return Ok(BackendResponse {
                // No `usage` in the answer is no usage known, not zero tokens.
                usage: answer
                    .get("usage")
                    .filter(|u| u.is_object())
                    .map(|u| usage_of_native(Some(u))),
                body,
                time_to_first_token: None,
                protocol: Protocol::AnthropicMessages,
            });
        }
        // Read borrowed from its bytes and written as the canonical answer's bytes.
        let chat = upstream::answer_bytes_to_chat_bytes(&bytes, model_of(deployment, request))
            .map_err(|e| match e.field.as_str() {
                "" => bad_answer(format!("the answer is {}", e.reason)),
                _ => bad_answer(format!("the answer cannot be read: {e}")),
            })?;
        let body = Body::parse(chat).map_err(|e| bad_answer(format!("the answer is {e}")))?;
        Ok(BackendResponse {
            // The canonical answer always carries the usage it was translated with.
            usage: body.usage(),
            body,
            time_to_first_token: None,
            protocol: Protocol::OpenAiChat,
        })
    })
}

/// Streams a call of `deployment`.
pub(crate) fn stream<'a>(
    backend: &'a HttpBackend,
    deployment: &'a Deployment,
    request: &'a BackendRequest,
) -> BackendStreamFuture<'a> {
    Box::pin(async move {
        let (body, native) = body_of(deployment, request, true)?;
        let sent = request_of(backend, deployment, request, body, native)?;
        let response = backend
            .client
            .execute(sent)
            .await
            .map_err(|e| transport_error(&e))?;
        if !response.status().is_success() {
            return Err(failed(response).await);
        }
        let mode = if native {
            Mode::Native(serde_json::Map::new())
        } else {
            Mode::Chat(upstream::ChatChunks::new(model_of(deployment, request)))
        };
        let events = Events {
            bytes: response.bytes_stream(),
            parser: SseParser::new(),
            pending: VecDeque::new(),
            mode,
            stopped: false,
            done: false,
        };
        Ok(Box::pin(events.into_stream()) as BackendStream)
    })
}

/// What a stream's events become.
enum Mode {
    /// Passed through as they are; the usage so far (`message_start`'s, updated by
    /// `message_delta`'s).
    Native(serde_json::Map<String, Value>),
    /// Translated to canonical chunks.
    Chat(upstream::ChatChunks),
}

/// A Messages stream read as it arrives.
struct Events<S> {
    bytes: S,
    parser: SseParser,
    /// Chunks (or the error) read but not given yet.
    pending: VecDeque<Result<BackendChunk, BackendError>>,
    mode: Mode,
    /// `message_stop` was read.
    stopped: bool,
    /// Nothing more is read.
    done: bool,
}

impl<S> Events<S>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, reqwest::Error>> + Send + Unpin + 'static,
{
    /// Takes one event: its chunks, or the error that ends the stream.
    fn take(&mut self, event: &SseEvent) {
        if self.done {
            return;
        }
        let data: Value = match serde_json::from_str(&event.data) {
            Ok(data) => data,
            Err(e) => return self.fail(bad_answer(format!("a stream event is not JSON: {e}"))),
        };
        let kind = data
            .get("type")
            .and_then(Value::as_str)
            .or(event.event.as_deref())
            .unwrap_or("");
        if kind == "error" {
            let class = upstream::error_class(200, None, &event.data);
            let message = upstream::error_message(&event.data);
            return self.fail(BackendError::new(
                class,
                format!("the stream failed: {message}"),
            ));
        }
        if kind == "message_stop" {
            self.stopped = true;
        }
        match &mut self.mode {
            Mode::Native(usage) => {
                let update = match kind {
                    "message_start" => data.get("message").and_then(|m| m.get("usage")),
                    "message_delta" => data.get("usage"),
                    _ => None,
                };
                let mut chunk_usage = None;
                if let Some(update) = update.and_then(Value::as_object) {
                    upstream::merge_usage(usage, update);
                    chunk_usage = Some(usage_of_native(Some(&Value::Object(usage.clone()))));
                }
                match Body::parse(event.data.clone().into_bytes()) {
                    Ok(body) => self.pending.push_back(Ok(BackendChunk {
                        body,
                        usage: chunk_usage,
                        protocol: Protocol::AnthropicMessages,
                    })),
                    Err(e) => self.fail(bad_answer(format!("a stream event is {e}"))),
                }
            }
            Mode::Chat(chunks) => match chunks.push(event) {
                Ok(out) => {
                    for chunk in out {
                        let body = Body::from_value(&chunk);
                        self.pending.push_back(Ok(BackendChunk {
                            usage: body.usage(),
                            body,
                            protocol: Protocol::OpenAiChat,
                        }));
                    }
                }
                Err(e) => self.fail(bad_answer(format!("a stream event cannot be read: {e}"))),
            },
        }
    }

    /// Ends the stream with `error` after what was read before it.
    fn fail(&mut self, error: BackendError) {
        self.done = true;
        self.pending.push_back(Err(error));
    }

    /// The next chunk, error or end.
    async fn next_chunk(&mut self) -> Option<Result<BackendChunk, BackendError>> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(item);
            }
            if self.done {
                return None;
            }
            match self.bytes.next().await {
                Some(Ok(bytes)) => match self.parser.push(&bytes) {
                    Ok(events) => {
                        for event in events {
                            self.take(&event);
                        }
                    }
                    Err(e) => self.fail(bad_answer(format!("the stream is cut off: {e}"))),
                },
                Some(Err(e)) => self.fail(BackendError::new(
                    ErrorClass::Connection,
                    format!("the stream broke: {}", without_url(&e)),
                )),
                None => {
                    if let Some(event) = self.parser.finish() {
                        self.take(&event);
                    }
                    if !self.done && !self.stopped {
                        self.fail(BackendError::new(
                            ErrorClass::Connection,
                            "the stream ended before message_stop",
                        ));
                    }
                    self.done = true;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_is_the_base_with_v1_messages_unless_the_base_names_it() {
        let mut deployment = Deployment::new("c", "anthropic/claude-x");
        assert_eq!(url_of(&deployment), "https://api.anthropic.com/v1/messages");
        deployment.api_base = Some("https://proxy.example/anthropic/".into());
        assert_eq!(
            url_of(&deployment),
            "https://proxy.example/anthropic/v1/messages"
        );
        deployment.api_base = Some("https://proxy.example/v1/messages".into());
        assert_eq!(url_of(&deployment), "https://proxy.example/v1/messages");
    }
}
