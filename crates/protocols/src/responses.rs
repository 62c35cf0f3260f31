//! OpenAI's Responses API as clients call the gateway in it (`POST /v1/responses`): a request
//! translated to the canonical chat form, canonical answers (whole and streamed) translated
//! back.

use serde_json::Value;

use crate::TranslateError;

/// A Responses request as the canonical chat request.
pub fn request_to_chat(request: &Value) -> Result<Value, TranslateError> {
    let _ = request;
    Err(TranslateError::new(
        "",
        "the Responses API is not translated yet",
    ))
}

/// A canonical `chat.completion` as a Responses answer (`object: response`), for `request`
/// (the Responses request it answers: its `instructions`, tools and settings are echoed).
pub fn answer_from_chat(answer: &Value, request: &Value) -> Result<Value, TranslateError> {
    let _ = (answer, request);
    Err(TranslateError::new(
        "",
        "the Responses API is not translated yet",
    ))
}

/// A canonical stream as Responses stream events: each event's data, whose `type` names it
/// (`response.created`, `response.output_text.delta`, `response.completed`, ...).
#[derive(Debug, Default)]
pub struct EventsFromChat {
    request: Value,
}

impl EventsFromChat {
    /// The translator of one stream answering `request` (the Responses request).
    pub fn new(request: &Value) -> Self {
        EventsFromChat {
            request: request.clone(),
        }
    }

    /// The events one canonical chunk makes.
    pub fn push(&mut self, chunk: &Value) -> Result<Vec<Value>, TranslateError> {
        let _ = (chunk, &self.request);
        Err(TranslateError::new(
            "",
            "the Responses API is not translated yet",
        ))
    }

    /// The events that end the stream once the canonical one has ended.
    pub fn finish(&mut self) -> Vec<Value> {
        Vec::new()
    }
}
