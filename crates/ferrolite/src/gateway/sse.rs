//! Step 5, answer as a stream: server-sent events passed through chunk by chunk, with usage
//! only when the client asked for it, as OpenAI sends it.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use ferrolite_router::RouterStream;
use futures_util::StreamExt;
use serde_json::value::RawValue;

use super::answer::{ANSWER_HEADERS, Answered, litellm_headers};
use super::errors::status_of;

/// A routed stream as server-sent events: each chunk as it arrives, `data: [DONE]` at the end,
/// an error event if the stream breaks. Dropping the response (a client that went away) drops
/// the router's stream, which gives back what the call held.
///
/// The upstream is always asked for usage (the router needs the counts); the client sees it
/// only when it asked (`include_usage`), as OpenAI sends it ([`StreamUsage`]).
///
/// `span` is the request's tracing span: the stream holds it until it ends, and records the
/// usage in it then.
pub(super) fn sse(
    stream: RouterStream,
    model: String,
    include_usage: bool,
    span: super::trace::Traced,
) -> Response {
    let mut headers = HeaderMap::with_capacity(ANSWER_HEADERS);
    litellm_headers(&mut headers, Answered::from(&stream));
    let usage = StreamUsage::new(include_usage, &model);
    let events =
        futures_util::stream::unfold(Some((stream, usage, span)), move |state| async move {
            let (mut stream, mut usage, span) = state?;
            loop {
                match stream.next().await {
                    Some(Ok(chunk)) => {
                        let mut event = Vec::with_capacity(chunk.body.len() + 32);
                        event.extend_from_slice(b"data: ");
                        if !usage.chunk(&chunk.body, &mut event) {
                            continue;
                        }
                        event.extend_from_slice(b"\n\n");
                        return Some((
                            Ok::<_, Infallible>(Bytes::from(event)),
                            Some((stream, usage, span)),
                        ));
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
                        super::trace::usage(&span, stream.usage().as_ref());
                        let mut tail = Vec::new();
                        if usage.last_chunk(&mut tail) {
                            tail.extend_from_slice(b"\n\n");
                        }
                        tail.extend_from_slice(b"data: [DONE]\n\n");
                        return Some((Ok(Bytes::from(tail)), None));
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

/// A JSON text this module writes, as a raw value.
fn raw(json: String) -> Box<RawValue> {
    RawValue::from_string(json).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

/// A stream's usage as the client asked for it. Without `stream_options.include_usage` no
/// chunk carries `usage` and the usage-only chunk (empty `choices`) is not sent, so code that
/// reads `chunk.choices[0]` never meets an empty list; with it, as OpenAI: `"usage": null` on
/// every chunk with choices and one last chunk with empty `choices` and the usage (made from
/// the last chunk when the upstream put its usage on a chunk with choices).
///
/// Each chunk is written as the upstream's bytes with only `model` (and `usage`, as above)
/// changed.
struct StreamUsage {
    include: bool,
    /// The model the client asked for, as a JSON string.
    model: Box<RawValue>,
    /// Usage seen on a chunk with choices, not yet sent.
    held: Option<Box<RawValue>>,
    /// Whether the usage-only chunk was sent.
    sent: bool,
    /// The last chunk with choices: the fields the made-up last chunk copies.
    last: Option<ferrolite_router::Body>,
}

impl StreamUsage {
    fn new(include: bool, model: &str) -> Self {
        StreamUsage {
            include,
            model: raw(serde_json::to_string(model).unwrap_or_default()),
            held: None,
            sent: false,
            last: None,
        }
    }

    /// Appends the chunk as the client sees it, with `model` set to what it asked for;
    /// `false` (having appended nothing) drops it.
    fn chunk(&mut self, body: &ferrolite_router::Body, out: &mut Vec<u8>) -> bool {
        if !body.is_object() {
            out.extend_from_slice(body.as_bytes());
            return true;
        }
        let model = Some(&*self.model);
        let usage = body.raw("usage").filter(|u| u.get() != "null");
        let usage_only = body.is_empty_array("choices");
        if !self.include {
            // A chunk that only carried the usage the client did not ask for is not sent.
            if usage_only && usage.is_some() {
                return false;
            }
            body.write_edited(&[("model", model), ("usage", None)], out);
            return true;
        }
        match usage {
            Some(_) if usage_only => {
                body.write_edited(&[("model", model)], out);
                self.held = None;
                self.sent = true;
            }
            usage => {
                if let Some(usage) = usage {
                    self.held = Some(usage.to_owned());
                }
                body.write_edited(&[("model", model), ("usage", Some(RawValue::NULL))], out);
                if !usage_only {
                    self.last = Some(body.clone());
                }
            }
        }
        true
    }

    /// Appends `data: ` and the usage-only chunk still owed to a client that asked for usage,
    /// at the stream's end: the last chunk with choices, its `choices` emptied and the usage
    /// set; `false` (having appended nothing) when none is owed.
    fn last_chunk(&mut self, out: &mut Vec<u8>) -> bool {
        if !self.include || self.sent {
            return false;
        }
        let Some(usage) = self.held.take() else {
            return false;
        };
        let last = self.last.take().unwrap_or_default();
        let defaults = [
            ("id", raw("\"\"".into())),
            ("object", raw("\"chat.completion.chunk\"".into())),
            ("created", raw("0".into())),
        ];
        let empty = raw("[]".into());
        let mut edits: Vec<(&str, Option<&RawValue>)> = defaults
            .iter()
            .filter(|(field, _)| last.raw(field).is_none())
            .map(|(field, value)| (*field, Some(&**value)))
            .collect();
        edits.extend([
            ("model", Some(&*self.model)),
            ("choices", Some(&*empty)),
            ("usage", Some(&*usage)),
        ]);
        out.extend_from_slice(b"data: ");
        last.write_edited(&edits, out);
        self.sent = true;
        true
    }
}
