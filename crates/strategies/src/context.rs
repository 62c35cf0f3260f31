//! What a strategy knows of the request.

use std::collections::HashMap;

use ferrolite_types::DeploymentId;

use crate::StrategyError;

/// The request as routing sees it.
#[derive(Debug, Clone, Copy, Default)]
pub struct RouteContext<'a> {
    /// The model group asked for.
    pub model_group: &'a str,
    /// Estimated input tokens.
    pub input_tokens: u64,
    /// The request's `max_tokens`, when given: with the input, what a call may add to a
    /// deployment's tokens in the window (checked against tpm at the pick and held at admission,
    /// then settled to the actual count), and what a budget reservation estimates.
    pub max_tokens: Option<u64>,
    /// Whether the response is streamed (latency routing then ranks by time to first token).
    pub stream: bool,
    /// The request's tags.
    pub tags: &'a [String],
    /// Request-scoped weights for this group (LiteLLM's `_router_weights[group]`): a deployment
    /// absent from the map weighs 0.
    pub weights: Option<&'a HashMap<DeploymentId, f64>>,
}

impl<'a> RouteContext<'a> {
    /// A context for `model_group` with nothing else set.
    pub fn new(model_group: &'a str) -> Self {
        RouteContext {
            model_group,
            ..RouteContext::default()
        }
    }

    /// The tokens a call may add: input + `max_tokens` (0 when not given).
    #[inline]
    pub fn estimated_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.max_tokens.unwrap_or(0))
    }

    /// Checks the request-scoped weights: each must be finite and `>= 0`.
    pub fn validate(&self) -> Result<(), StrategyError> {
        if let Some(weights) = self.weights {
            if let Some((id, w)) = weights.iter().find(|(_, w)| !w.is_finite() || **w < 0.0) {
                return Err(StrategyError::InvalidRequest {
                    field: "weights",
                    value: format!("{id}: {w}"),
                    reason: "a request-scoped weight must be a finite number >= 0",
                });
            }
        }
        Ok(())
    }
}
