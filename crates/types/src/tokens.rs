//! Token counting for rate limits and context-window checks.

use std::sync::OnceLock;

use tiktoken_rs::CoreBPE;
use tiktoken_rs::tokenizer::{Tokenizer, get_tokenizer};

/// One chat message, as far as token counting is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatMessage<'a> {
    /// `system`, `user`, `assistant`, `tool`.
    pub role: &'a str,
    /// The message text.
    pub content: &'a str,
    /// The optional participant name.
    pub name: Option<&'a str>,
}

/// Tokens OpenAI adds per chat message (`<|start|>{role}\n ... <|end|>`), per name, and once per
/// request to prime the reply; see OpenAI's cookbook "How to count tokens with tiktoken".
const TOKENS_PER_MESSAGE: usize = 3;
const TOKENS_PER_NAME: usize = 1;
const REPLY_PRIMING: usize = 3;

/// Counts tokens for a model. Implementations must be cheap to share (`Send + Sync`).
pub trait TokenCounter: Send + Sync {
    /// Tokens in a plain text for `model` (a provider/model string or a bare name).
    fn count_text(&self, model: &str, text: &str) -> usize;

    /// Tokens of a chat request the way OpenAI counts them: 3 per message, the role and content,
    /// 1 more per `name`, and 3 to prime the reply.
    fn count_messages(&self, model: &str, messages: &[ChatMessage<'_>]) -> usize {
        messages
            .iter()
            .map(|m| {
                TOKENS_PER_MESSAGE
                    + self.count_text(model, m.role)
                    + self.count_text(model, m.content)
                    + m.name
                        .map_or(0, |n| TOKENS_PER_NAME + self.count_text(model, n))
            })
            .sum::<usize>()
            + REPLY_PRIMING
    }
}

/// Exact counts with tiktoken-rs: `o200k_base` for the gpt-4o / gpt-4.1 / o-series family,
/// `cl100k_base` for gpt-4 / gpt-3.5, and **`cl100k_base` as the documented fallback** for models
/// tiktoken does not know (Claude, Gemini, Llama...), which is close enough for limits.
///
/// The encoders take 80-200 ms to build; they are built once per process, on first use, and
/// shared by every counter.
#[derive(Debug, Clone, Copy, Default)]
pub struct TiktokenCounter;

impl TiktokenCounter {
    /// The encoder used for `model` (provider prefixes such as `azure/` are ignored).
    pub fn encoder_for(model: &str) -> &'static CoreBPE {
        let bare = model.rsplit('/').next().unwrap_or(model);
        match get_tokenizer(bare) {
            Some(Tokenizer::O200kBase | Tokenizer::O200kHarmony) => o200k(),
            _ => cl100k(),
        }
    }
}

fn o200k() -> &'static CoreBPE {
    static ENCODER: OnceLock<&'static CoreBPE> = OnceLock::new();
    ENCODER.get_or_init(tiktoken_rs::o200k_base_singleton)
}

fn cl100k() -> &'static CoreBPE {
    static ENCODER: OnceLock<&'static CoreBPE> = OnceLock::new();
    ENCODER.get_or_init(tiktoken_rs::cl100k_base_singleton)
}

impl TokenCounter for TiktokenCounter {
    fn count_text(&self, model: &str, text: &str) -> usize {
        if text.is_empty() {
            return 0;
        }
        Self::encoder_for(model).encode_ordinary(text).len()
    }
}

/// A cheap estimate: one token per 4 bytes of text, rounded up, with the same per-message
/// overhead. Use it where an upper-bound-ish guess is enough and microseconds matter.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApproxTokenCounter;

impl TokenCounter for ApproxTokenCounter {
    fn count_text(&self, _model: &str, text: &str) -> usize {
        text.len().div_ceil(4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiktoken_counts_known_strings() {
        // "hello world" is two tokens in both encodings.
        assert_eq!(TiktokenCounter.count_text("gpt-4o", "hello world"), 2);
        assert_eq!(TiktokenCounter.count_text("azure/gpt-4", "hello world"), 2);
        assert_eq!(TiktokenCounter.count_text("gpt-4o", ""), 0);
    }

    #[test]
    fn model_families_pick_their_encoder() {
        assert!(std::ptr::eq(
            TiktokenCounter::encoder_for("gpt-4o-mini"),
            o200k()
        ));
        assert!(std::ptr::eq(
            TiktokenCounter::encoder_for("openai/o1-preview"),
            o200k()
        ));
        assert!(std::ptr::eq(
            TiktokenCounter::encoder_for("gpt-3.5-turbo"),
            cl100k()
        ));
        // documented fallback for models tiktoken does not know
        assert!(std::ptr::eq(
            TiktokenCounter::encoder_for("anthropic/claude-3-5-sonnet"),
            cl100k()
        ));
    }

    #[test]
    fn chat_messages_include_openai_overheads() {
        let messages = [
            ChatMessage {
                role: "system",
                content: "You are helpful.",
                name: None,
            },
            ChatMessage {
                role: "user",
                content: "hello world",
                name: Some("bob"),
            },
        ];
        let counter = TiktokenCounter;
        let m = "gpt-4o";
        let expected = 3
            + counter.count_text(m, "system")
            + counter.count_text(m, "You are helpful.")
            + 3
            + counter.count_text(m, "user")
            + 2
            + 1
            + counter.count_text(m, "bob")
            + 3;
        assert_eq!(counter.count_messages(m, &messages), expected);
        // by hand: system 1 + "You are helpful." 4, user 1 + "hello world" 2 + name 1+1, 3x3 overhead
        assert_eq!(expected, 19);
    }

    #[test]
    fn approximate_counter_rounds_up() {
        assert_eq!(ApproxTokenCounter.count_text("x", "abcde"), 2);
        assert_eq!(ApproxTokenCounter.count_text("x", ""), 0);
        assert_eq!(ApproxTokenCounter.count_messages("x", &[]), 3);
    }
}
