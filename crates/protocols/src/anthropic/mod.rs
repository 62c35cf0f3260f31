//! Anthropic's Messages API (`POST /v1/messages`), both ways: [`client`] translates what a
//! client sends the gateway in it to the canonical chat form and the canonical answers back;
//! [`upstream`] translates canonical requests to it for an `anthropic/` deployment and its
//! answers back.

pub mod client;
pub mod upstream;

/// The `anthropic-version` ferrolite sends upstream when the caller's request gives none.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Anthropic's `stop_reason` as the canonical `finish_reason`.
pub fn finish_reason_of(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        // end_turn, stop_sequence, pause_turn
        _ => "stop",
    }
}

/// The canonical `finish_reason` as Anthropic's `stop_reason`.
pub fn stop_reason_of(finish_reason: &str) -> &'static str {
    match finish_reason {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}
