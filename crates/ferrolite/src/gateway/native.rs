//! Clients of other protocols than OpenAI's chat completions: Anthropic's Messages API
//! (`POST /v1/messages`, `POST /v1/messages/count_tokens`) and OpenAI's Responses API
//! (`POST /v1/responses`).
//!
//! A call takes the same steps as a chat completion (auth, body, keys, route, answer), with
//! its body translated to the canonical chat form the router routes
//! ([`ferrolite_protocols`]), so groups, limits, budgets, fallbacks, the response cache and the
//! `x-litellm-*` headers work the same whatever protocol came in. The caller's own body goes
//! with the request ([`ferrolite_router::Native`]): a deployment that speaks the caller's
//! protocol (an `anthropic/` deployment for `/v1/messages`, an `openai/` or `azure/` one for
//! `/v1/responses`) is sent it untranslated, cache-control blocks and every provider field
//! intact, and its answer passes back untranslated too. Any other deployment is called in its
//! own protocol and its canonical answer translated to the caller's: whole, or as the
//! protocol's streaming events (`event: {type}` and `data: {json}`, as Anthropic and OpenAI
//! send them).
//!
//! Errors are in the caller's protocol's shape: Anthropic's
//! `{"type": "error", "error": {"type", "message"}}` for `/v1/messages`, OpenAI's for
//! `/v1/responses`, with the status and `Retry-After` of the gateway's one table
//! ([`super::errors`]). A request a protocol cannot translate is a 400 naming the field.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use ferrolite_protocols::{TranslateError, anthropic, responses};
use ferrolite_router::{Native, NativeExtras, RouterResponse, RouterStream, Untranslated};
use ferrolite_types::{ChatMessage, Protocol, TiktokenCounter, TokenCounter};
use futures_util::StreamExt;
use serde_json::Value;

use super::answer::{ANSWER_HEADERS, Answered, ROUTE_FIELD, litellm_headers, with_route};
use super::errors::GatewayError;
use super::state::Gateway;
use super::{CALL_ID, REQUEST_ID, body, keys};

/// The protocol a client called in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Inbound {
    /// Anthropic's Messages API.
    Messages,
    /// Anthropic's token counting (`/v1/messages/count_tokens`): no call is routed.
    CountTokens,
    /// OpenAI's Responses API.
    Responses,
}

/// Fields of a caller's body that are the gateway's and the router's, never a provider's:
/// taken out of the native body that passes through.
const GATEWAY_FIELDS: [&str; 11] = [
    "tags",
    "litellm_metadata",
    "fallbacks",
    "priority",
    "num_retries",
    "disable_fallbacks",
    "mock_response",
    "metadata_litellm",
    "caching",
    "cache",
    "timeout",
];

/// A Messages caller's headers an `anthropic/` deployment gets with the request it passes
/// through (as LiteLLM's proxy forwards `anthropic-beta`): the beta features it asked for, and
/// the API version it writes (instead of the default).
const FORWARDED: [&str; 2] = ["anthropic-beta", "anthropic-version"];

/// The most parts of a request left out of its translation before it is refused.
const MOST_PARTS_LEFT_OUT: usize = 16;

/// Top-level fields a request is not routed without.
const ESSENTIAL: [&str; 4] = ["model", "messages", "input", "system"];

/// Takes the part of `request` the JSON path `field` names out of it: the innermost list item
/// on the path (`messages[2].content[0].type` takes out `messages[2].content[0]`), else the
/// top-level field (`tools`, `previous_response_id`). `false` when there is nothing it may
/// take out (an empty path, an essential field, a path that is not in the request).
fn leave_out(request: &mut Value, field: &str) -> bool {
    // The path's steps: object keys and list indices.
    let mut steps: Vec<Result<&str, usize>> = Vec::new();
    for part in field.split('.') {
        let (name, mut rest) = match part.find('[') {
            Some(at) => (&part[..at], &part[at..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            steps.push(Ok(name));
        }
        while let Some(end) = rest.find(']') {
            // The path may hold a client's key names: `get` refuses a cut inside a character
            // (`"a[0]é]"`), and anything but `[digits]` ends the walk.
            match rest.get(1..end).map(str::parse::<usize>) {
                Some(Ok(index)) => steps.push(Err(index)),
                _ => return false,
            }
            rest = rest.get(end + 1..).unwrap_or_default();
        }
    }
    let cut = match steps.iter().rposition(Result::is_err) {
        Some(at) => at,
        None => match steps.first() {
            Some(Ok(name)) if !ESSENTIAL.contains(name) => 0,
            _ => return false,
        },
    };
    let mut at = request;
    for step in &steps[..cut] {
        let next = match step {
            Ok(name) => at.get_mut(*name),
            Err(index) => at.get_mut(*index),
        };
        match next {
            Some(next) => at = next,
            None => return false,
        }
    }
    match (steps.get(cut), at) {
        (Some(Err(index)), Value::Array(items)) if *index < items.len() => {
            items.remove(*index);
            true
        }
        (Some(Ok(name)), Value::Object(object)) => object.remove(*name).is_some(),
        _ => false,
    }
}

impl Inbound {
    /// The protocol of its bodies.
    fn protocol(self) -> Protocol {
        match self {
            Inbound::Messages | Inbound::CountTokens => Protocol::AnthropicMessages,
            Inbound::Responses => Protocol::OpenAiResponses,
        }
    }

    /// The caller's request in the canonical chat form.
    fn to_chat(self, request: &Value) -> Result<Value, TranslateError> {
        match self {
            Inbound::Messages | Inbound::CountTokens => anthropic::client::request_to_chat(request),
            Inbound::Responses => responses::request_to_chat(request),
        }
    }

    /// The caller's request in the canonical chat form, and what the form could not carry
    /// when it is not whole. A request with a field the chat form has no place for (a
    /// provider's server tool, `previous_response_id`, a document block, ...) is translated
    /// without it, a part at a time (the list item, else the top-level field, the error
    /// names), so that it can still be routed to a deployment that takes the caller's body as
    /// it is; one without its `model`, its messages or its input is refused with the first
    /// error.
    fn to_chat_leniently(
        self,
        request: &Value,
    ) -> Result<(Value, Option<TranslateError>), TranslateError> {
        let first = match self.to_chat(request) {
            Ok(chat) => return Ok((chat, None)),
            Err(first) => first,
        };
        let mut rest = request.clone();
        let mut error = first.clone();
        for _ in 0..MOST_PARTS_LEFT_OUT {
            if !leave_out(&mut rest, &error.field) {
                break;
            }
            match self.to_chat(&rest) {
                Ok(chat) => return Ok((chat, Some(first))),
                Err(next) => error = next,
            }
        }
        Err(first)
    }

    /// A canonical answer (its bytes) as the caller's protocol's bytes, with `model` as its
    /// model.
    fn answer_from_chat(
        self,
        answer: &[u8],
        request: &Value,
        model: &str,
    ) -> Result<Vec<u8>, TranslateError> {
        match self {
            Inbound::Messages | Inbound::CountTokens => {
                anthropic::client::answer_bytes_from_chat_bytes(answer, model)
            }
            Inbound::Responses => responses::answer_bytes_from_chat_bytes(answer, request, model),
        }
    }

    /// What the router and the backends know of the caller's request besides its body: what
    /// its translation left out, and the caller's headers its protocol's upstream gets when
    /// the request passes through ([`FORWARDED`], a repeated one's values joined by commas).
    fn extras(
        self,
        headers: &HeaderMap,
        untranslated: Option<TranslateError>,
    ) -> Option<Arc<NativeExtras>> {
        let extras = NativeExtras {
            untranslated: untranslated.map(|e| Untranslated {
                field: e.field,
                reason: e.reason,
            }),
            headers: self.forwarded(headers),
        };
        (extras != NativeExtras::default()).then(|| Arc::new(extras))
    }

    /// The caller's headers its protocol's upstream gets when the request passes through.
    fn forwarded(self, headers: &HeaderMap) -> Vec<(String, String)> {
        if self != Inbound::Messages {
            return Vec::new();
        }
        FORWARDED
            .iter()
            .filter_map(|name| {
                let values: Vec<&str> = headers
                    .get_all(*name)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .collect();
                (!values.is_empty()).then(|| (name.to_string(), values.join(",")))
            })
            .collect()
    }

    /// An error in the caller's protocol's shape.
    fn error(self, error: GatewayError) -> Response {
        match self {
            Inbound::Messages | Inbound::CountTokens => error.into_anthropic_response(),
            Inbound::Responses => error.into_response(),
        }
    }
}

/// `POST /v1/messages`.
pub(super) async fn messages(
    State(gateway): State<Arc<Gateway>>,
    request: axum::extract::Request,
) -> Response {
    call(&gateway, Inbound::Messages, request).await
}

/// `POST /v1/messages/count_tokens`.
pub(super) async fn count_tokens(
    State(gateway): State<Arc<Gateway>>,
    request: axum::extract::Request,
) -> Response {
    call(&gateway, Inbound::CountTokens, request).await
}

/// `POST /v1/responses`.
pub(super) async fn responses(
    State(gateway): State<Arc<Gateway>>,
    request: axum::extract::Request,
) -> Response {
    call(&gateway, Inbound::Responses, request).await
}

/// One call in `inbound`'s protocol, in its `request` span, counted and logged as a chat
/// completion is.
async fn call(gateway: &Gateway, inbound: Inbound, request: axum::extract::Request) -> Response {
    use tracing::Instrument;
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    let id = gateway.request_id(&headers);
    let id_header = HeaderValue::from_str(&id).ok();
    let span = tracing::info_span!("request", id = %id);
    let started = std::time::Instant::now();
    let mut asked = None;
    let traced = super::trace::request(
        gateway.traces.as_ref(),
        super::route_of(parts.uri.path()),
        &id,
        &headers,
    );
    let mut response = handle(gateway, inbound, headers, body, id, &mut asked, &traced)
        .instrument(span.clone())
        .await
        .unwrap_or_else(|error| inbound.error(error));
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    super::trace::status(&traced, status);
    gateway.telemetry.record(status, elapsed);
    gateway.count_litellm(parts.uri.path(), asked.as_deref(), &response);
    gateway.replicas.count_request();
    span.in_scope(|| {
        tracing::info!(status, elapsed_ms = elapsed.as_secs_f64() * 1e3, "answered");
    });
    if let Some(value) = id_header {
        let headers = response.headers_mut();
        headers.insert(CALL_ID, value.clone());
        headers.insert(REQUEST_ID, value);
    }
    response
}

/// The steps of one call (see the module documentation).
async fn handle(
    gateway: &Gateway,
    inbound: Inbound,
    headers: HeaderMap,
    body: Body,
    id: String,
    asked: &mut Option<String>,
    span: &super::trace::Traced,
) -> Result<Response, GatewayError> {
    let settings = gateway.settings.load_full();
    // 1. auth (Anthropic's clients send the key as `x-api-key`).
    let caller = Gateway::caller(&settings, &headers)?;
    // 2. body: read, translated, made the router's request with the caller's own body.
    let mut native = body::read_object(body, settings.max_body_bytes).await?;
    let Some(model) = native
        .get("model")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        return Err(GatewayError::NoModel);
    };
    if settings.litellm_metrics {
        *asked = Some(model.clone());
    }
    // The gateway's and the router's fields (tags, fallbacks, num_retries, cache controls),
    // taken out of the caller's body: they go to the router with its translation, never to a
    // provider.
    let routing = gateway_fields(&mut native);
    if inbound == Inbound::CountTokens {
        // An API key counts only for the groups it may call (no call is made: its limits are
        // not spent).
        keys::admit(
            &caller,
            &mut ferrolite_router::Request::new(model.as_str(), Value::Null),
        )?;
        // What the chat form cannot carry (a document block, a server tool) is left out of
        // the count rather than refused: the count is an estimate either way.
        let (chat, _) = inbound
            .to_chat_leniently(&native)
            .map_err(GatewayError::Untranslatable)?;
        return Ok(axum::Json(serde_json::json!({
            "input_tokens": count_tokens_of(&model, &chat),
        }))
        .into_response());
    }
    let (mut chat, untranslated) = inbound
        .to_chat_leniently(&native)
        .map_err(GatewayError::Untranslatable)?;
    if let Some(object) = chat.as_object_mut() {
        object.extend(routing);
        // A translation that is not whole is no key for the response cache: it would match
        // the answers of requests without what it left out.
        if untranslated.is_some() {
            object.insert(
                "cache".into(),
                serde_json::json!({"no-cache": true, "no-store": true}),
            );
        }
    }
    let mut request = body::request(chat, &model, &headers, caller.key(), id);
    request.explain = caller.explains(&headers);
    // A stream is what the caller asked for, whatever its translation says.
    request.stream = native.get("stream").and_then(Value::as_bool) == Some(true);
    let native = Arc::new(native);
    request.native = Some(Native {
        protocol: inbound.protocol(),
        body: Arc::clone(&native),
        extras: inbound.extras(&headers, untranslated),
    });
    let router = gateway.router.load_full();
    if router.settings().deployment_affinity {
        request.affinity_key = caller.affinity_key(settings.master_key.as_ref());
    }
    // 3. keys.
    keys::admit(&caller, &mut request)?;
    super::trace::routing(span, &mut request);
    // 4 and 5. route, and answer in the caller's protocol.
    let slot = super::route::failure_slot(&mut request);
    let failed = |e| super::route::explained(e, slot.as_ref());
    if request.stream {
        let stream = router.stream(request).await.map_err(failed)?;
        super::trace::streaming(span, &stream);
        return Ok(events(stream, inbound, model, native, span.clone()));
    }
    let answer = router.call(request).await.map_err(failed)?;
    super::trace::answered(span, &answer);
    whole(answer, inbound, &model, &native)
}

/// Takes the gateway's and the router's fields out of a caller's body ([`GATEWAY_FIELDS`], and
/// `metadata.tags`, given as the top-level `tags`), to be given to the router with its
/// translation.
fn gateway_fields(native: &mut Value) -> serde_json::Map<String, Value> {
    let mut taken = serde_json::Map::new();
    let Some(object) = native.as_object_mut() else {
        return taken;
    };
    for field in GATEWAY_FIELDS {
        if let Some(value) = object.remove(field) {
            taken.insert(field.to_string(), value);
        }
    }
    let metadata = object.get_mut("metadata").and_then(Value::as_object_mut);
    if let Some(tags) = metadata.and_then(|metadata| metadata.remove("tags")) {
        let mut all = match taken.remove("tags") {
            Some(Value::Array(tags)) => tags,
            _ => Vec::new(),
        };
        if let Value::Array(more) = tags {
            all.extend(more);
        }
        taken.insert("tags".into(), Value::Array(all));
    }
    taken
}

/// A whole answer in the caller's protocol: a pass-through answer as it came, a canonical
/// one translated, with `model` the name the client asked for.
fn whole(
    answer: RouterResponse,
    inbound: Inbound,
    model: &str,
    request: &Value,
) -> Result<Response, GatewayError> {
    let mut headers = HeaderMap::with_capacity(ANSWER_HEADERS);
    litellm_headers(&mut headers, Answered::from(&answer));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let bytes = if answer.protocol == inbound.protocol() {
        match &answer.route {
            Some(route) => Bytes::from(with_route(&answer.body, None, route)),
            None => Bytes::from(answer.body.as_bytes().to_vec()),
        }
    } else {
        let translated = inbound
            .answer_from_chat(answer.body.as_bytes(), request, model)
            .map_err(|e| GatewayError::BadAnswer(e.to_string()))?;
        match &answer.route {
            // Explaining (rare): the route object added to the translated answer.
            Some(route) => {
                let mut value: Value = serde_json::from_slice(&translated)
                    .map_err(|e| GatewayError::BadAnswer(e.to_string()))?;
                if let Some(object) = value.as_object_mut() {
                    object.insert(ROUTE_FIELD.into(), route.to_json());
                }
                Bytes::from(value.to_string())
            }
            None => Bytes::from(translated),
        }
    };
    let mut response = Response::new(Body::from(bytes));
    *response.headers_mut() = headers;
    Ok(response)
}

/// What turns a canonical stream into the caller's protocol's events.
enum Events {
    Messages(anthropic::client::EventsFromChat),
    Responses(Box<responses::EventsFromChat>),
}

impl Events {
    fn new(inbound: Inbound, model: &str, request: &Value) -> Self {
        match inbound {
            Inbound::Responses => {
                Events::Responses(Box::new(responses::EventsFromChat::new(request)))
            }
            Inbound::Messages | Inbound::CountTokens => {
                Events::Messages(anthropic::client::EventsFromChat::new(model))
            }
        }
    }

    fn push(&mut self, chunk: &Value) -> Result<Vec<Value>, TranslateError> {
        match self {
            Events::Messages(events) => events.push(chunk),
            Events::Responses(events) => events.push(chunk),
        }
    }

    fn finish(&mut self) -> Vec<Value> {
        match self {
            Events::Messages(events) => events.finish(),
            Events::Responses(events) => events.finish(),
        }
    }
}

/// Appends one event: `event: {type}` (the data's `type`, when it has one) and `data: {json}`.
fn write(out: &mut Vec<u8>, data: &[u8], kind: Option<&str>) {
    ferrolite_protocols::sse::write_event(out, kind, data);
}

/// The `type` of an event's data.
fn kind_of(data: &Value) -> Option<&str> {
    data.get("type").and_then(Value::as_str)
}

/// A routed stream as the caller's protocol's server-sent events: a pass-through stream's
/// events as they came, a canonical stream's chunks translated as they arrive. A stream that
/// breaks ends with the protocol's error event.
///
/// `span` is the request's tracing span: the stream holds it until it ends, and records the
/// usage in it then (as the chat completions stream does).
fn events(
    stream: RouterStream,
    inbound: Inbound,
    model: String,
    request: Arc<Value>,
    span: super::trace::Traced,
) -> Response {
    let mut headers = HeaderMap::with_capacity(ANSWER_HEADERS);
    litellm_headers(&mut headers, Answered::from(&stream));
    let translator = Events::new(inbound, &model, &request);
    let events = futures_util::stream::unfold(
        Some((stream, translator, false, span)),
        move |state| async move {
            // `passed`: the stream is passed through (its chunks in the caller's protocol), so
            // the translator has nothing to end.
            let (mut stream, mut translator, mut passed, span) = state?;
            loop {
                let mut out = Vec::new();
                match stream.next().await {
                    Some(Ok(chunk)) if chunk.protocol == inbound.protocol() => {
                        passed = true;
                        let kind = chunk
                            .body
                            .raw("type")
                            .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok());
                        write(&mut out, chunk.body.as_bytes(), kind.as_deref());
                    }
                    Some(Ok(chunk)) => {
                        let translated = chunk
                            .body
                            .to_value()
                            .map_err(|e| TranslateError::new("", e.to_string()))
                            .and_then(|canonical| translator.push(&canonical));
                        match translated {
                            Ok(events) => {
                                for event in &events {
                                    write(&mut out, event.to_string().as_bytes(), kind_of(event));
                                }
                            }
                            Err(e) => {
                                let error = GatewayError::BadAnswer(e.to_string());
                                return Some((Ok(error_event(inbound, error)), None));
                            }
                        }
                    }
                    Some(Err(e)) => {
                        return Some((Ok(error_event(inbound, GatewayError::Router(e))), None));
                    }
                    None if passed => {
                        super::trace::usage(&span, stream.usage().as_ref());
                        return None;
                    }
                    None => {
                        super::trace::usage(&span, stream.usage().as_ref());
                        for event in translator.finish() {
                            write(&mut out, event.to_string().as_bytes(), kind_of(&event));
                        }
                        if out.is_empty() {
                            return None;
                        }
                        return Some((Ok::<_, Infallible>(Bytes::from(out)), None));
                    }
                }
                if !out.is_empty() {
                    return Some((
                        Ok(Bytes::from(out)),
                        Some((stream, translator, passed, span)),
                    ));
                }
            }
        },
    );
    let mut response = Response::new(Body::from_stream(events));
    response.headers_mut().extend(headers);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The event that ends a broken stream: Anthropic's `error` event, or the Responses API's.
fn error_event(inbound: Inbound, error: GatewayError) -> Bytes {
    let (status, message) = error.status_and_message();
    let data = match inbound {
        Inbound::Messages | Inbound::CountTokens => super::errors::anthropic_body(status, &message),
        Inbound::Responses => serde_json::json!({
            "type": "error",
            "code": status.as_u16().to_string(),
            "message": message,
            "param": null,
        }),
    };
    let mut out = Vec::new();
    write(&mut out, data.to_string().as_bytes(), Some("error"));
    Bytes::from(out)
}

/// Input tokens of a canonical request, as `/v1/messages/count_tokens` answers them: its
/// messages (text parts) and tools counted with the model's tokenizer (tiktoken's; the
/// provider's own tokenizer may count a few percent otherwise).
fn count_tokens_of(model: &str, chat: &Value) -> usize {
    let counter = TiktokenCounter;
    let mut texts: Vec<(String, String)> = Vec::new();
    for message in chat
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let role = message
            .get("role")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let content = match message.get("content") {
            Some(Value::String(text)) => text.clone(),
            Some(Value::Array(parts)) => parts
                .iter()
                .filter_map(|part| part.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n"),
            _ => String::new(),
        };
        let calls = message
            .get("tool_calls")
            .map(Value::to_string)
            .unwrap_or_default();
        texts.push((role, content + &calls));
    }
    let messages: Vec<ChatMessage<'_>> = texts
        .iter()
        .map(|(role, content)| ChatMessage {
            role,
            content,
            name: None,
        })
        .collect();
    let tools = chat
        .get("tools")
        .filter(|tools| tools.as_array().is_none_or(|tools| !tools.is_empty()))
        .map(|tools| counter.count_text(model, &tools.to_string()))
        .unwrap_or(0);
    counter.count_messages(model, &messages) + tools
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::leave_out;

    #[test]
    fn the_innermost_list_item_or_the_top_level_field_is_left_out() {
        let mut request = json!({
            "model": "m",
            "tools": [{"type": "web_search"}],
            "messages": [{"role": "user", "content": [{"type": "text"}, {"type": "document"}]}],
        });
        assert!(leave_out(&mut request, "messages[0].content[1].type"));
        assert_eq!(request["messages"][0]["content"], json!([{"type": "text"}]));
        assert!(leave_out(&mut request, "tools[0].type"));
        assert_eq!(request["tools"], json!([]));
        assert!(leave_out(&mut request, "tools"));
        assert!(request.get("tools").is_none());
        // What a request is not routed without, and paths that are not in it.
        assert!(!leave_out(&mut request, "messages"));
        assert!(!leave_out(&mut request, "model"));
        assert!(!leave_out(&mut request, ""));
        assert!(!leave_out(&mut request, "messages[7].content"));
    }

    /// Regression: a client's key name in the error's path (`"a[0]é]"`) cut a string inside a
    /// character and panicked the handler.
    #[test]
    fn a_path_with_a_clients_odd_key_names_is_walked_without_a_panic() {
        let mut request = json!({"model": "m", "a[0]é]": 1, "metadata": {"ü[": 2}});
        for path in [
            "a[0]é]",
            "metadata.ü[",
            "[é]",
            "x[1",
            "]",
            "[]",
            "a[99999999999999999999999]",
        ] {
            let _ = leave_out(&mut request, path);
        }
        assert_eq!(request["model"], "m");
    }
}
