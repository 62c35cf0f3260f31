//! The Responses API passed through: a caller's own `POST /v1/responses` request
//! ([`BackendRequest::native`] in [`Protocol::OpenAiResponses`]) sent untranslated to an
//! upstream that serves the Responses API itself, as LiteLLM calls a provider's native
//! Responses API where it has one (its `responses_api_provider_config`) and bridges to chat
//! completions for the others.
//!
//! | provider | URL | key header |
//! |---|---|---|
//! | `openai` | `{api_base}/responses` (`api_base` defaulting to `https://api.openai.com/v1`) | `Authorization: Bearer` |
//! | `azure` | `{api_base}/openai/responses?api-version={api_version}`; `{api_base}/openai/v1/responses?api-version=…` for `api_version` `preview` (the default) or `latest` | `api-key` |
//!
//! The body goes as the caller wrote it (`previous_response_id`, built-in tools, `store` and
//! every other field intact), with `model` set to the deployment's model without its provider
//! prefix, `stream` set as the call streams or not, and the fields that never reach a provider
//! left out. The answer comes back in the Responses API's own form
//! ([`Protocol::OpenAiResponses`]): whole, the body as the upstream wrote it, its usage read
//! from `usage.input_tokens` / `usage.output_tokens`; streamed, each server-sent event's data
//! as one chunk, the usage read from the `response.completed` (or `.incomplete`, `.failed`)
//! event. Errors are classified as the chat endpoint's are; an `error` event ends the stream
//! with its error.
//!
//! The response's id, in the whole answer and in every event that carries it, is the one
//! LiteLLM hands out ([`ManagedResponseId`]: the provider, the deployment's id and the
//! upstream's id, base64-encoded), so that a follow-up's `previous_response_id` leads the
//! router back to the deployment that stored the conversation
//! ([`ferrolite_router::Native::continues`]); the upstream is sent its own id back.
//!
//! Deployments of other providers get the request's chat translation, as LiteLLM's bridge
//! does; one that continues a stored conversation (`previous_response_id`, `conversation`),
//! which only the upstream that stored it has, is refused by them as a bad request naming the
//! field.

use bytes::Bytes;
use ferrolite_protocols::sse::SseParser;
use ferrolite_router::{
    BackendChunk, BackendError, BackendFuture, BackendRequest, BackendResponse, BackendStream,
    BackendStreamFuture, Body, Native,
};
use ferrolite_types::{Deployment, ErrorClass, ManagedResponseId, Protocol, Usage};
use futures_util::StreamExt;

use super::{
    HttpBackend, NOT_FOR_PROVIDERS, bad_answer, classify, default_base, failed, model_name,
    provider_of, retry_after, transport_error, without_url,
};

/// The Azure `api-version` of a Responses call when the deployment sets none (LiteLLM's
/// `AZURE_DEFAULT_RESPONSES_API_VERSION`).
const AZURE_DEFAULT_VERSION: &str = "preview";

/// The call of `deployment` when the caller's request is a Responses request it cannot take
/// translated: passed through to a deployment that serves the Responses API itself, refused
/// (naming `previous_response_id`) by any other when the request continues a stored
/// conversation. `None`: the call goes as its canonical translation.
pub(crate) fn call_natively<'a>(
    backend: &'a HttpBackend,
    deployment: &'a Deployment,
    request: &'a BackendRequest,
) -> Option<BackendFuture<'a>> {
    if let Some(native) = passes_through(deployment, request) {
        return Some(call(backend, deployment, request, native));
    }
    let refused = refused(request)?;
    Some(Box::pin(async move { Err(refused) }))
}

/// [`call_natively`], streamed.
pub(crate) fn stream_natively<'a>(
    backend: &'a HttpBackend,
    deployment: &'a Deployment,
    request: &'a BackendRequest,
) -> Option<BackendStreamFuture<'a>> {
    if let Some(native) = passes_through(deployment, request) {
        return Some(stream(backend, deployment, request, native));
    }
    let refused = refused(request)?;
    Some(Box::pin(async move { Err(refused) }))
}

/// The refusal of a Responses request continuing a stored conversation
/// (`previous_response_id`, `conversation`) by a deployment it does not pass through to: its
/// translation left that out, and only the upstream that stored the conversation has it.
fn refused(request: &BackendRequest) -> Option<BackendError> {
    let native = request.native.as_ref()?;
    if native.protocol != Protocol::OpenAiResponses {
        return None;
    }
    let field = ["previous_response_id", "conversation"]
        .into_iter()
        .find(|field| native.body.get(field).is_some_and(|v| !v.is_null()))?;
    let error = ferrolite_protocols::TranslateError::new(
        field,
        "needs the upstream's stored conversation: only an OpenAI deployment called through \
         /v1/responses can continue it",
    );
    Some(BackendError::new(
        ErrorClass::BadRequest { status: 400 },
        error.to_string(),
    ))
}

/// The caller's Responses request, when `deployment` serves the Responses API itself and the
/// call passes through.
fn passes_through<'a>(deployment: &Deployment, request: &'a BackendRequest) -> Option<&'a Native> {
    let native = request.native.as_ref()?;
    if native.protocol != Protocol::OpenAiResponses {
        return None;
    }
    serves_responses(deployment).then_some(native)
}

/// Whether `deployment` serves the Responses API itself (an `openai` or `azure` one).
pub(crate) fn serves_responses(deployment: &Deployment) -> bool {
    deployment
        .provider()
        .is_ok_and(|provider| matches!(provider.as_str(), "openai" | "azure"))
}

/// Calls `deployment`'s Responses endpoint with the caller's request; the whole answer.
fn call<'a>(
    backend: &'a HttpBackend,
    deployment: &'a Deployment,
    request: &'a BackendRequest,
    native: &'a Native,
) -> BackendFuture<'a> {
    Box::pin(async move {
        let sent = outgoing(backend, deployment, request, native, false)?;
        let response = backend
            .client
            .execute(sent)
            .await
            .map_err(|e| transport_error(&e))?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            let retry = retry_after(response.headers());
            let body = response.text().await.unwrap_or_default();
            return Err(classify(status, retry, &body));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| bad_answer(format!("the answer is not JSON: {}", without_url(&e))))?;
        let body = Body::parse(bytes).map_err(|e| bad_answer(format!("the answer is {e}")))?;
        let body = Answerer::of(deployment, request).whole(body);
        Ok(BackendResponse {
            usage: usage_of(body.raw("usage").map(|raw| raw.get())),
            body,
            time_to_first_token: None,
            protocol: Protocol::OpenAiResponses,
        })
    })
}

/// Streams a call of `deployment`'s Responses endpoint with the caller's request: each event
/// as one chunk.
fn stream<'a>(
    backend: &'a HttpBackend,
    deployment: &'a Deployment,
    request: &'a BackendRequest,
    native: &'a Native,
) -> BackendStreamFuture<'a> {
    Box::pin(async move {
        let sent = outgoing(backend, deployment, request, native, true)?;
        let response = backend
            .client
            .execute(sent)
            .await
            .map_err(|e| transport_error(&e))?;
        if !response.status().is_success() {
            return Err(failed(response).await);
        }
        let events = Events {
            answerer: Answerer::of(deployment, request),
            bytes: Box::pin(response.bytes_stream()),
            parser: SseParser::new(),
            ready: std::collections::VecDeque::new(),
            ended: false,
            eof: false,
            done: false,
        };
        let stream = futures_util::stream::unfold(events, |mut events| async move {
            events.next().await.map(|item| (item, events))
        });
        Ok(Box::pin(stream) as BackendStream)
    })
}

/// The body sent: the caller's Responses request with `model` the deployment's, `stream` as
/// the call is (`true`, else left out), `previous_response_id` the upstream's own id when the
/// caller sent a managed one, and without the router's fields ([`NOT_FOR_PROVIDERS`]).
struct Sent<'a> {
    fields: &'a serde_json::Map<String, serde_json::Value>,
    model: &'a str,
    stream: bool,
    previous: Option<&'a str>,
}

impl serde::Serialize for Sent<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        for (name, value) in self.fields {
            let name = name.as_str();
            if name == "model" || name == "stream" || NOT_FOR_PROVIDERS.contains(&name) {
                continue;
            }
            match (name, self.previous) {
                ("previous_response_id", Some(previous)) => {
                    map.serialize_entry(name, previous)?;
                }
                _ => map.serialize_entry(name, value)?,
            }
        }
        map.serialize_entry("model", self.model)?;
        if self.stream {
            map.serialize_entry("stream", &true)?;
        }
        map.end()
    }
}

/// The call as a reqwest request: URL, key header, extra headers, the caller's body.
fn outgoing(
    backend: &HttpBackend,
    deployment: &Deployment,
    request: &BackendRequest,
    native: &Native,
    stream: bool,
) -> Result<reqwest::Request, BackendError> {
    // A wildcard deployment (`openai/*`) calls the model the client asked for, which the
    // router puts in the canonical body; any other calls its own model.
    let wanted = match request
        .body
        .get("model")
        .and_then(serde_json::Value::as_str)
    {
        Some(asked) if deployment.model.contains('*') => asked,
        _ => deployment.model.as_str(),
    };
    let model = model_name(wanted);
    let provider = provider_of(deployment)?;
    let url = url_of(deployment, &provider)?;
    let serde_json::Value::Object(fields) = &*native.body else {
        return Err(BackendError::new(
            ErrorClass::BadRequest { status: 400 },
            "a Responses request is a JSON object",
        ));
    };
    // The upstream's own id of a response the router handed out under its managed id.
    let previous = fields
        .get("previous_response_id")
        .and_then(serde_json::Value::as_str)
        .and_then(ManagedResponseId::decode)
        .map(|id| id.response_id);
    // Written from the caller's body as it is (no copy of it): a map serialises without fail.
    let bytes = serde_json::to_vec(&Sent {
        fields,
        model,
        stream,
        previous: previous.as_deref(),
    })
    .unwrap_or_default();
    let builder = backend.client.post(url);
    let builder = match deployment.api_key.as_ref().map(|k| k.expose()) {
        Some(key) if provider == "azure" => builder.header("api-key", key),
        Some(key) => builder.bearer_auth(key),
        None => builder,
    };
    let mut builder = match request.request_id.as_deref() {
        Some(id) => builder.header("x-request-id", id),
        None => builder,
    };
    for (name, value) in &deployment.extra_headers {
        builder = builder.header(name.as_str(), value.expose());
    }
    let mut sent = builder.build().map_err(|e| transport_error(&e))?;
    sent.headers_mut()
        .entry(reqwest::header::CONTENT_TYPE)
        .or_insert(reqwest::header::HeaderValue::from_static(
            "application/json",
        ));
    crate::http::add_trace_context(sent.headers_mut(), request.trace.as_ref());
    *sent.body_mut() = Some(bytes.into());
    Ok(sent)
}

/// The Responses endpoint of `deployment` (see the module documentation).
fn url_of(deployment: &Deployment, provider: &str) -> Result<String, BackendError> {
    let needs_base = |what: &str| {
        BackendError::new(
            ErrorClass::BadRequest { status: 400 },
            format!(
                "deployment `{}` ({provider}) needs api_base{what}",
                deployment.id()
            ),
        )
    };
    if provider == "azure" {
        let base = deployment
            .api_base
            .as_deref()
            .ok_or_else(|| needs_base(""))?
            .trim_end_matches('/');
        let version = deployment
            .api_version
            .as_deref()
            .unwrap_or(AZURE_DEFAULT_VERSION);
        let path = if matches!(version, "preview" | "latest") {
            "/openai/v1/responses"
        } else {
            "/openai/responses"
        };
        // The resource's endpoint, also when `api_base` names a path under it.
        let base = [
            "/openai/v1/responses",
            "/openai/responses",
            "/openai/v1",
            "/openai",
        ]
        .iter()
        .find_map(|path| base.strip_suffix(path))
        .unwrap_or(base);
        return Ok(format!("{base}{path}?api-version={version}"));
    }
    let base = deployment
        .api_base
        .as_deref()
        .or_else(|| default_base(provider))
        .ok_or_else(|| needs_base(": its OpenAI endpoint"))?;
    Ok(format!("{}/responses", base.trim_end_matches('/')))
}

/// The usage of a Responses `usage` object's JSON.
fn usage_of(json: Option<&str>) -> Option<Usage> {
    let usage: serde_json::Value = serde_json::from_str(json?).ok()?;
    let count = |field: &str| usage.get(field).and_then(serde_json::Value::as_u64);
    let input = count("input_tokens")?;
    let output = count("output_tokens").unwrap_or(0);
    let mut found = Usage::new(input, output);
    if let Some(total) = count("total_tokens") {
        found.total_tokens = total;
    }
    found.cache_read_tokens = usage
        .pointer("/input_tokens_details/cached_tokens")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    Some(found)
}

/// The deployment a pass-through call answers from, as the ids of its responses name it
/// ([`ManagedResponseId`]): a follow-up's `previous_response_id` then leads the router back to
/// it.
struct Answerer {
    provider: String,
    deployment: String,
}

impl Answerer {
    fn of(deployment: &Deployment, request: &BackendRequest) -> Self {
        Answerer {
            provider: provider_of(deployment).unwrap_or_default(),
            deployment: request.deployment_id_of(deployment).as_str().to_string(),
        }
    }

    /// `id` as the router hands it out.
    fn managed(&self, id: &str) -> String {
        ManagedResponseId::encode(&self.provider, &self.deployment, id)
    }

    /// A whole answer with its `id` managed; every other byte as the upstream wrote it.
    fn whole(&self, body: Body) -> Body {
        let Some(id) = body.get::<String>("id") else {
            return body;
        };
        let Ok(managed) = serde_json::value::to_raw_value(&self.managed(&id)) else {
            return body;
        };
        let mut out = Vec::with_capacity(body.len() + managed.get().len());
        body.write_edited(&[("id", Some(&managed))], &mut out);
        Body::parse(Bytes::from(out)).unwrap_or(body)
    }

    /// A stream event with the id of the response it carries managed (`response.id`:
    /// `response.created`, `response.in_progress`, `response.completed`, ...; a top-level
    /// `response_id`); an event that carries none as it came.
    fn event(&self, body: Body) -> Body {
        if body.raw("response").is_none() && body.raw("response_id").is_none() {
            return body;
        }
        let Ok(mut event) = body.to_value() else {
            return body;
        };
        let mut changed = false;
        if let Some(id) = event.pointer_mut("/response/id") {
            if let Some(upstream) = id.as_str() {
                *id = self.managed(upstream).into();
                changed = true;
            }
        }
        if let Some(id) = event.get_mut("response_id") {
            if let Some(upstream) = id.as_str() {
                *id = self.managed(upstream).into();
                changed = true;
            }
        }
        if changed {
            Body::from_value(&event)
        } else {
            body
        }
    }
}

/// The types of the events that end a Responses stream.
const LAST_EVENTS: [&str; 3] = [
    "response.completed",
    "response.incomplete",
    "response.failed",
];

/// A Responses stream's events as they arrive.
struct Events {
    /// Who answers: the ids of its events' responses name it.
    answerer: Answerer,
    bytes: std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<Bytes, reqwest::Error>> + Send + 'static>,
    >,
    parser: SseParser,
    /// Events read and not yet returned.
    ready: std::collections::VecDeque<ferrolite_protocols::sse::SseEvent>,
    /// Whether the last event (`response.completed`, ...) came.
    ended: bool,
    /// Whether the body has been read to its end.
    eof: bool,
    /// Whether the stream is over.
    done: bool,
}

impl Events {
    /// The next chunk, error or end.
    async fn next(&mut self) -> Option<Result<BackendChunk, BackendError>> {
        loop {
            if self.done {
                return None;
            }
            if let Some(event) = self.ready.pop_front() {
                match self.chunk(event) {
                    Some(item) => return Some(item),
                    None => continue,
                }
            }
            if self.eof {
                self.done = true;
                if !self.ended {
                    return Some(Err(BackendError::new(
                        ErrorClass::Connection,
                        "the stream ended before its response.completed event",
                    )));
                }
                return None;
            }
            match self.bytes.next().await {
                Some(Ok(bytes)) => match self.parser.push(&bytes) {
                    Ok(events) => self.ready.extend(events),
                    Err(e) => {
                        self.done = true;
                        return Some(Err(bad_answer(format!("the stream is cut off: {e}"))));
                    }
                },
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(BackendError::new(
                        ErrorClass::Connection,
                        format!("the stream broke: {}", without_url(&e)),
                    )));
                }
                None => {
                    self.eof = true;
                    self.ready.extend(self.parser.finish());
                }
            }
        }
    }

    /// One event as a chunk (`None`: nothing to pass on).
    fn chunk(
        &mut self,
        event: ferrolite_protocols::sse::SseEvent,
    ) -> Option<Result<BackendChunk, BackendError>> {
        let data = event.data.trim();
        if data.is_empty() {
            return None;
        }
        if data == "[DONE]" {
            self.done = true;
            self.ended = true;
            return None;
        }
        let body = match Body::parse(Bytes::copy_from_slice(data.as_bytes())) {
            Ok(body) => body,
            Err(e) => {
                self.done = true;
                return Some(Err(bad_answer(format!("a stream event is {e}"))));
            }
        };
        let kind = body
            .raw("type")
            .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
            .unwrap_or_default();
        if kind == "error" || event.event.as_deref() == Some("error") {
            self.done = true;
            // The event's own fields are an error object's (`code`, `message`).
            let wrapped = format!("{{\"error\":{data}}}");
            return Some(Err(classify(500, None, &wrapped)));
        }
        let body = self.answerer.event(body);
        let usage = if LAST_EVENTS.contains(&kind.as_str()) {
            self.ended = true;
            body.raw("response")
                .and_then(|raw| serde_json::from_str::<serde_json::Value>(raw.get()).ok())
                .and_then(|response| {
                    response
                        .get("usage")
                        .filter(|u| u.is_object())
                        .and_then(|u| usage_of(Some(&u.to_string())))
                })
        } else {
            None
        };
        Some(Ok(BackendChunk {
            body,
            usage,
            protocol: Protocol::OpenAiResponses,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_read_from_the_responses_fields() {
        let usage = usage_of(Some(
            r#"{"input_tokens": 12, "input_tokens_details": {"cached_tokens": 2},
                "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 1},
                "total_tokens": 17}"#,
        ))
        .unwrap_or_else(|| Usage::new(0, 0));
        assert_eq!(
            (
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.total_tokens,
                usage.cache_read_tokens
            ),
            (12, 5, 17, 2)
        );
        assert!(usage_of(Some(r#"{"prompt_tokens": 1}"#)).is_none());
    }
}
