//! What one call used.

use serde::{Deserialize, Serialize};

/// Token usage and cost of one call, as the provider reported it.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Input tokens, the cached ones ([`Usage::cache_read_tokens`],
    /// [`Usage::cache_write_tokens`]) included.
    pub prompt_tokens: u64,
    /// Output tokens.
    pub completion_tokens: u64,
    /// Total tokens (prompt + completion unless the provider says otherwise).
    pub total_tokens: u64,
    /// Input tokens read from the provider's prompt cache (part of `prompt_tokens`): OpenAI's
    /// `prompt_tokens_details.cached_tokens`, Anthropic's `cache_read_input_tokens`, Bedrock's
    /// `cacheReadInputTokens`, Gemini's `cachedContentTokenCount`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_read_tokens: u64,
    /// Input tokens written to the provider's prompt cache (part of `prompt_tokens`):
    /// Anthropic's `cache_creation_input_tokens`, Bedrock's `cacheWriteInputTokens`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_write_tokens: u64,
    /// Of the cache writes, those written to last an hour rather than five minutes
    /// (Anthropic's `usage.cache_creation.ephemeral_1h_input_tokens`, LiteLLM's
    /// `prompt_tokens_details.cache_creation_token_details.ephemeral_1h_input_tokens`): priced at
    /// [`TokenPrices::cache_write_1h`].
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_write_1h_tokens: u64,
    /// Cost in USD, when known.
    pub cost: Option<f64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The per-token prices of a deployment, in USD, that price a call's [`Usage`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TokenPrices {
    /// USD per input token.
    pub input: f64,
    /// USD per output token.
    pub output: f64,
    /// USD per input token read from the prompt cache (`cache_read_input_token_cost`); the
    /// input price when unknown.
    pub cache_read: Option<f64>,
    /// USD per input token written to the prompt cache (`cache_creation_input_token_cost`);
    /// the input price when unknown.
    pub cache_write: Option<f64>,
    /// USD per input token written to the prompt cache for an hour
    /// (`cache_creation_input_token_cost_above_1hr`); the five-minute write price when unknown.
    pub cache_write_1h: Option<f64>,
}

impl Usage {
    /// Usage with `total_tokens = prompt + completion`, no cached tokens and no cost.
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
            cache_read_tokens: 0,
            cache_write_tokens: 0,
            cache_write_1h_tokens: 0,
            cost: None,
        }
    }

    /// The cost of this usage at the given per-token prices, in USD, every prompt token (cached
    /// or not) at the input price. See [`Usage::cost_with`] for the cache prices.
    pub fn cost_at(&self, input_cost_per_token: f64, output_cost_per_token: f64) -> f64 {
        self.cost_with(&TokenPrices {
            input: input_cost_per_token,
            output: output_cost_per_token,
            cache_read: None,
            cache_write: None,
            cache_write_1h: None,
        })
    }

    /// The cost of this usage at `prices`, in USD, as LiteLLM's `generic_cost_per_token` counts
    /// it: the prompt tokens neither read from nor written to the cache at the input price, the
    /// cache reads at the cache-read price, the cache writes at the cache-write price (each at
    /// the input price when its own is unknown), those written for an hour at the one-hour
    /// write price (LiteLLM's `calculate_cache_writing_cost`; the five-minute price when it is
    /// unknown), the completion tokens at the output price.
    pub fn cost_with(&self, prices: &TokenPrices) -> f64 {
        let reads = self.cache_read_tokens.min(self.prompt_tokens);
        let writes = self
            .cache_write_tokens
            .min(self.prompt_tokens.saturating_sub(reads));
        let hour = self.cache_write_1h_tokens.min(writes);
        let text = self.prompt_tokens - reads - writes;
        let write = prices.cache_write.unwrap_or(prices.input);
        text as f64 * prices.input
            + reads as f64 * prices.cache_read.unwrap_or(prices.input)
            + (writes - hour) as f64 * write
            + hour as f64 * prices.cache_write_1h.unwrap_or(write)
            + self.completion_tokens as f64 * prices.output
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Claude Sonnet 4.5's prices in LiteLLM's model map: $3 / $15 per million tokens, cache
    /// reads at a tenth of the input price, cache writes (five minutes) at 1.25 times it.
    const SONNET: TokenPrices = TokenPrices {
        input: 3e-6,
        output: 15e-6,
        cache_read: Some(3e-7),
        cache_write: Some(3.75e-6),
        cache_write_1h: Some(6e-6),
    };

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1.0)
    }

    #[test]
    fn cache_reads_and_writes_are_priced_at_their_own_prices() {
        let usage = Usage {
            cache_read_tokens: 1000,
            cache_write_tokens: 200,
            ..Usage::new(1300, 50)
        };
        let expected = 100.0 * 3e-6 + 1000.0 * 3e-7 + 200.0 * 3.75e-6 + 50.0 * 15e-6;
        assert!(
            close(usage.cost_with(&SONNET), expected),
            "{}",
            usage.cost_with(&SONNET)
        );
        // A tenth and 1.25 times the input price.
        let reads_only = Usage {
            cache_read_tokens: 1000,
            ..Usage::new(1000, 0)
        };
        assert!(close(reads_only.cost_with(&SONNET), 0.1 * 1000.0 * 3e-6));
        let writes_only = Usage {
            cache_write_tokens: 1000,
            ..Usage::new(1000, 0)
        };
        assert!(close(writes_only.cost_with(&SONNET), 1.25 * 1000.0 * 3e-6));
    }

    #[test]
    fn without_cache_prices_every_prompt_token_is_at_the_input_price() {
        let usage = Usage {
            cache_read_tokens: 1000,
            cache_write_tokens: 200,
            ..Usage::new(1300, 50)
        };
        let flat = TokenPrices {
            cache_read: None,
            cache_write: None,
            cache_write_1h: None,
            ..SONNET
        };
        let expected = 1300.0 * 3e-6 + 50.0 * 15e-6;
        assert!(close(usage.cost_with(&flat), expected));
        assert!(close(usage.cost_at(3e-6, 15e-6), expected));
    }

    #[test]
    fn cache_writes_for_an_hour_are_priced_at_the_one_hour_price() {
        // 300 writes, 100 of them for an hour (Sonnet 4.5: $3.75 and $6 per million).
        let usage = Usage {
            cache_write_tokens: 300,
            cache_write_1h_tokens: 100,
            ..Usage::new(400, 10)
        };
        let expected = 100.0 * 3e-6 + 200.0 * 3.75e-6 + 100.0 * 6e-6 + 10.0 * 15e-6;
        assert!(
            close(usage.cost_with(&SONNET), expected),
            "{}",
            usage.cost_with(&SONNET)
        );
        // Without a one-hour price: the five-minute one; without either: the input price.
        let no_hour = TokenPrices {
            cache_write_1h: None,
            ..SONNET
        };
        let expected = 100.0 * 3e-6 + 300.0 * 3.75e-6 + 10.0 * 15e-6;
        assert!(close(usage.cost_with(&no_hour), expected));
        let flat = TokenPrices {
            cache_write: None,
            ..no_hour
        };
        assert!(close(usage.cost_with(&flat), 400.0 * 3e-6 + 10.0 * 15e-6));
        // One-hour counts beyond the writes are capped by them.
        let over = Usage {
            cache_write_1h_tokens: 1000,
            ..usage
        };
        let expected = 100.0 * 3e-6 + 300.0 * 6e-6 + 10.0 * 15e-6;
        assert!(close(over.cost_with(&SONNET), expected));
    }

    #[test]
    fn cached_counts_beyond_the_prompt_are_capped_by_it() {
        let usage = Usage {
            cache_read_tokens: 80,
            cache_write_tokens: 80,
            ..Usage::new(100, 0)
        };
        let expected = 80.0 * 3e-7 + 20.0 * 3.75e-6;
        assert!(close(usage.cost_with(&SONNET), expected));
    }

    #[test]
    fn zero_cached_counts_are_left_out_of_the_json_and_default_when_absent() {
        let json = serde_json::to_value(Usage::new(1, 2)).unwrap();
        assert!(json.get("cache_read_tokens").is_none());
        let back: Usage = serde_json::from_value(json).unwrap();
        assert_eq!(back, Usage::new(1, 2));
    }
}
