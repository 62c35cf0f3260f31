//! Step 5, answer as a stream: server-sent events passed through chunk by chunk, with usage
//! only when the client asked for it, as OpenAI sends it.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use ferrolite_router::RouterStream;
use futures_util::StreamExt;

use super::answer::{Answered, litellm_headers};
use super::errors::status_of;

/// A routed stream as server-sent events: each chunk as it arrives, `data: [DONE]` at the end,
/// an error event if the stream breaks. Dropping the response (a client that went away) drops
/// the router's stream, which gives back what the call held.
///
/// The upstream is always asked for usage (the router needs the counts); the client sees it
/// only when it asked (`include_usage`), as OpenAI sends it ([`StreamUsage`]).
pub(super) fn sse(stream: RouterStream, model: String, include_usage: bool) -> Response {
    let mut headers = HeaderMap::new();
    litellm_headers(&mut headers, Answered::from(&stream));
    let usage = StreamUsage::new(include_usage);
    let events = futures_util::stream::unfold(Some((stream, usage)), move |state| {
        let model = model.clone();
        async move {
            let (mut stream, mut usage) = state?;
            loop {
                match stream.next().await {
                    Some(Ok(chunk)) => {
                        let Some(body) = usage.chunk(chunk.body, &model) else {
                            continue;
                        };
                        let event = Bytes::from(format!("data: {body}\n\n"));
                        return Some((Ok::<_, Infallible>(event), Some((stream, usage))));
                    }
                    Some(Err(e)) => {
                        let body = serde_json::json!({"error": {
                            "message": e.to_string(),
                            "type": "api_error",
                            "param": null,
                            "code": status_of(&e).as_u16().to_string(),
                        }});
                        return Some((Ok(Bytes::from(format!("data: {body}\n\n"))), None));
                    }
                    None => {
                        let mut tail = String::new();
                        if let Some(last) = usage.last_chunk(&model) {
                            tail.push_str(&format!("data: {last}\n\n"));
                        }
                        tail.push_str("data: [DONE]\n\n");
                        return Some((Ok(Bytes::from(tail)), None));
                    }
                }
            }
        }
    });
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

/// A stream's usage as the client asked for it. Without `stream_options.include_usage` no
/// chunk carries `usage` and the usage-only chunk (empty `choices`) is not sent, so code that
/// reads `chunk.choices[0]` never meets an empty list; with it, as OpenAI: `"usage": null` on
/// every chunk with choices and one last chunk with empty `choices` and the usage (made from
/// the last chunk when the upstream put its usage on a chunk with choices).
struct StreamUsage {
    include: bool,
    /// Usage seen on a chunk with choices, not yet sent.
    held: Option<serde_json::Value>,
    /// Whether the usage-only chunk was sent.
    sent: bool,
    /// The last chunk with choices: the fields the made-up last chunk copies.
    last: Option<serde_json::Map<String, serde_json::Value>>,
}

impl StreamUsage {
    fn new(include: bool) -> Self {
        StreamUsage {
            include,
            held: None,
            sent: false,
            last: None,
        }
    }

    /// The chunk as the client sees it, with `model` set to what it asked for; `None` drops it.
    fn chunk(&mut self, mut body: serde_json::Value, model: &str) -> Option<serde_json::Value> {
        let Some(object) = body.as_object_mut() else {
            return Some(body);
        };
        object.insert("model".into(), model.into());
        let usage = object.remove("usage").filter(|u| !u.is_null());
        let usage_only = object
            .get("choices")
            .and_then(|c| c.as_array())
            .is_some_and(Vec::is_empty);
        if !self.include {
            // A chunk that only carried the usage the client did not ask for is not sent.
            return (!(usage_only && usage.is_some())).then_some(body);
        }
        match usage {
            Some(usage) if usage_only => {
                object.insert("usage".into(), usage);
                self.held = None;
                self.sent = true;
            }
            usage => {
                if usage.is_some() {
                    self.held = usage;
                }
                object.insert("usage".into(), serde_json::Value::Null);
                if !usage_only {
                    let mut last = object.clone();
                    last.remove("choices");
                    self.last = Some(last);
                }
            }
        }
        Some(body)
    }

    /// The usage-only chunk still owed to a client that asked for usage, at the stream's end.
    fn last_chunk(&mut self, model: &str) -> Option<serde_json::Value> {
        if !self.include || self.sent {
            return None;
        }
        let usage = self.held.take()?;
        let mut chunk = self.last.take().unwrap_or_default();
        for (field, default) in [
            ("id", serde_json::json!("")),
            ("object", serde_json::json!("chat.completion.chunk")),
            ("created", serde_json::json!(0)),
        ] {
            chunk.entry(field).or_insert(default);
        }
        chunk.insert("model".into(), model.into());
        chunk.insert("choices".into(), serde_json::json!([]));
        chunk.insert("usage".into(), usage);
        self.sent = true;
        Some(serde_json::Value::Object(chunk))
    }
}
