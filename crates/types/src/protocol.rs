//! The wire protocols a request or an answer can be in.

use serde::{Deserialize, Serialize};

/// The protocol a body is written in. The router routes one canonical form, OpenAI's chat
/// completions ([`Protocol::OpenAiChat`]); a request that came in another protocol is
/// translated to it, and a backend answers in the canonical form or, when it passed the
/// caller's own request through, in the caller's protocol (the gateway then passes it through
/// too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// OpenAI's chat completions (and text completions and embeddings): the canonical form.
    #[default]
    OpenAiChat,
    /// OpenAI's Responses API (`POST /v1/responses`).
    OpenAiResponses,
    /// Anthropic's Messages API (`POST /v1/messages`).
    AnthropicMessages,
    /// Amazon Bedrock's Converse and ConverseStream APIs.
    BedrockConverse,
    /// Google's Gemini `generateContent` / `streamGenerateContent` (Gemini API and Vertex AI).
    Gemini,
}

impl Protocol {
    /// The protocol's name as `ferrolite check` and errors show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::OpenAiChat => "openai_chat",
            Protocol::OpenAiResponses => "openai_responses",
            Protocol::AnthropicMessages => "anthropic_messages",
            Protocol::BedrockConverse => "bedrock_converse",
            Protocol::Gemini => "gemini",
        }
    }

    /// The protocol a deployment of `provider` (LiteLLM's provider name) is called in:
    /// `anthropic` speaks Messages, `bedrock` Converse, `gemini`, `vertex_ai` and
    /// `vertex_ai_beta` Gemini's; every other provider OpenAI's.
    pub fn of_provider(provider: &str) -> Protocol {
        match provider {
            "anthropic" => Protocol::AnthropicMessages,
            "bedrock" => Protocol::BedrockConverse,
            "gemini" | "vertex_ai" | "vertex_ai_beta" => Protocol::Gemini,
            _ => Protocol::OpenAiChat,
        }
    }
}

impl Protocol {
    /// Whether a deployment of `provider` takes a caller's request written in `self` as it is
    /// (passed through untranslated): an `anthropic` deployment a Messages request, an
    /// `openai` or `azure` one a Responses request (they serve the Responses API), any
    /// deployment a chat request.
    pub fn passes_through_to(self, provider: &str) -> bool {
        match self {
            Protocol::OpenAiChat => true,
            Protocol::OpenAiResponses => matches!(provider, "openai" | "azure"),
            other => Protocol::of_provider(provider) == other,
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Protocol;

    #[test]
    fn a_callers_protocol_passes_through_only_to_deployments_that_speak_it() {
        let messages = Protocol::AnthropicMessages;
        assert!(messages.passes_through_to("anthropic"));
        assert!(!messages.passes_through_to("bedrock"));
        assert!(!messages.passes_through_to("openai"));
        let responses = Protocol::OpenAiResponses;
        assert!(responses.passes_through_to("openai"));
        assert!(responses.passes_through_to("azure"));
        assert!(!responses.passes_through_to("hosted_vllm"));
        assert!(!responses.passes_through_to("anthropic"));
        assert!(Protocol::OpenAiChat.passes_through_to("gemini"));
        assert_eq!(Protocol::of_provider("vertex_ai"), Protocol::Gemini);
    }
}
