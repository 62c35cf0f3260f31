//! Anthropic's Messages API as clients call the gateway in it (`POST /v1/messages`): a
//! request translated to the canonical chat form, canonical answers (whole and streamed)
//! translated back.

use serde_json::Value;

use crate::TranslateError;

/// A Messages request as the canonical chat request.
pub fn request_to_chat(request: &Value) -> Result<Value, TranslateError> {
    let _ = request;
    Err(TranslateError::new(
        "",
        "the Messages API is not translated yet",
    ))
}

/// A canonical `chat.completion` as a Messages answer (`type: message`).
pub fn answer_from_chat(answer: &Value) -> Result<Value, TranslateError> {
    let _ = answer;
    Err(TranslateError::new(
        "",
        "the Messages API is not translated yet",
    ))
}

/// A canonical stream (`chat.completion.chunk`s) as Messages stream events: each event's data,
/// whose `type` names it (`message_start`, `content_block_start`, `content_block_delta`,
/// `content_block_stop`, `message_delta`, `message_stop`).
#[derive(Debug, Default)]
pub struct EventsFromChat {
    model: String,
}

impl EventsFromChat {
    /// The translator of one stream, answering for `model` (the name the client asked for).
    pub fn new(model: &str) -> Self {
        EventsFromChat {
            model: model.to_string(),
        }
    }

    /// The events one canonical chunk makes.
    pub fn push(&mut self, chunk: &Value) -> Result<Vec<Value>, TranslateError> {
        let _ = (chunk, &self.model);
        Err(TranslateError::new(
            "",
            "the Messages API is not translated yet",
        ))
    }

    /// The events that end the stream once the canonical one has ended.
    pub fn finish(&mut self) -> Vec<Value> {
        Vec::new()
    }
}
