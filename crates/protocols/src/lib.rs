//! # ferrolite-protocols
//!
//! The wire protocols ferrolite speaks, as translators to and from one canonical form: OpenAI's
//! chat completions, the form the router routes, caches and counts. A protocol clients call in
//! ([`anthropic::client`], [`responses`]) has a translator from its requests to the canonical
//! form and from canonical answers (whole and streamed) back to its own; a protocol upstreams
//! are called in ([`anthropic::upstream`], [`converse`], [`gemini`]) has one from canonical
//! requests to its own and from its answers back. N protocols in and M out take N + M
//! translators.
//!
//! Every translator reads `serde_json::Value` trees and is pure (no I/O): the gateway and the
//! HTTP backends do the sending. A translation whose result is sent as it is (an upstream's
//! request, an answer to a client, a canonical answer from an upstream's) is also written
//! straight to bytes (`request_bytes_from_chat`, `answer_bytes_from_chat`,
//! `answer_bytes_to_chat`), from the borrowed parts of its input rather than a tree of its
//! own: the same JSON as the `Value` translator's, for less work on a call's path; the answers
//! to clients are also read from the canonical answer's bytes without a tree of owned strings
//! (`answer_bytes_from_chat_bytes`). What a
//! protocol cannot express is refused with a [`TranslateError`] naming the field, never
//! dropped silently.
//!
//! This crate sits beside the router in the layering (`types <- protocols <- ferrolite`): it
//! knows nothing of routing.

pub mod anthropic;
pub mod converse;
pub(crate) mod doc;
pub mod gemini;
pub(crate) mod out;
pub mod responses;
pub mod sse;

pub use ferrolite_types::Protocol;
use serde_json::value::RawValue;

/// A request or answer that cannot be translated: the field (a JSON path such as
/// `messages[2].content[0].type`) and why. The gateway answers it as a 400 naming the field;
/// a backend as a bad request (a request) or a bad answer (an upstream's answer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}`: {reason}")]
pub struct TranslateError {
    /// The field, as a JSON path in the body being translated.
    pub field: String,
    /// Why it cannot be translated.
    pub reason: String,
}

/// A canonical assistant tool call's parts, as every upstream protocol takes them: its `id`,
/// its function's `name`, and its `arguments` checked to be JSON, as their text (empty
/// arguments as `{}`); `at` is the call's path, for the error naming a missing or malformed
/// part.
pub(crate) fn tool_call_parts<'c>(
    call: &'c serde_json::Value,
    at: &str,
) -> Result<(&'c str, &'c str, &'c RawValue), TranslateError> {
    use serde_json::Value;
    let id = call
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| TranslateError::new(format!("{at}.id"), "missing"))?;
    let function = call
        .get("function")
        .ok_or_else(|| TranslateError::new(format!("{at}.function"), "missing"))?;
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| TranslateError::new(format!("{at}.function.name"), "missing"))?;
    let arguments = function
        .get("arguments")
        .and_then(Value::as_str)
        .unwrap_or("");
    let arguments = if arguments.trim().is_empty() {
        "{}"
    } else {
        arguments
    };
    let input = serde_json::from_str::<&RawValue>(arguments).map_err(|e| {
        TranslateError::new(format!("{at}.function.arguments"), format!("not JSON: {e}"))
    })?;
    Ok((id, name, input))
}

/// Whether checked JSON text is an object.
pub(crate) fn is_object(raw: &RawValue) -> bool {
    raw.get().trim_start().starts_with('{')
}

impl TranslateError {
    /// `field` cannot be translated because of `reason`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        TranslateError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
