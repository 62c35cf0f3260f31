//! What one call used.

use serde::{Deserialize, Serialize};

/// Token usage and cost of one call, as the provider reported it.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Input tokens.
    pub prompt_tokens: u64,
    /// Output tokens.
    pub completion_tokens: u64,
    /// Total tokens (prompt + completion unless the provider says otherwise).
    pub total_tokens: u64,
    /// Cost in USD, when known.
    pub cost: Option<f64>,
}

impl Usage {
    /// Usage with `total_tokens = prompt + completion` and no cost.
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
            cost: None,
        }
    }

    /// The cost of this usage at the given per-token prices, in USD.
    pub fn cost_at(&self, input_cost_per_token: f64, output_cost_per_token: f64) -> f64 {
        self.prompt_tokens as f64 * input_cost_per_token
            + self.completion_tokens as f64 * output_cost_per_token
    }
}
