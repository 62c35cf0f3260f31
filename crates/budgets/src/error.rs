//! The one error type of ferrolite-budgets.

use std::fmt;

use ferrolite_cache::CacheError;

use crate::Scope;

/// A scope whose spend reached its limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Exceeded {
    /// The scope.
    pub scope: Scope,
    /// Spend in the current window (including reservations).
    pub spend: f64,
    /// The limit.
    pub limit: f64,
    /// What this call was estimated to cost when the refusal came from its reservation (the
    /// spend alone was within the limit); 0 when the recorded spend alone reached the limit.
    pub estimate: f64,
}

impl fmt::Display for Exceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One shape for both causes (LiteLLM's "Exceeded budget for ...: spend >= limit"): the
        // spend counted against the limit, then, for an estimate, what it is made of.
        if self.estimate > 0.0 {
            write!(
                f,
                "Exceeded budget for {}: {} >= {} (spend {} + this call's estimated cost {})",
                self.scope,
                self.spend + self.estimate,
                self.limit,
                self.spend,
                self.estimate
            )
        } else {
            write!(
                f,
                "Exceeded budget for {}: {} >= {}",
                self.scope, self.spend, self.limit
            )
        }
    }
}

/// What went wrong, naming the value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BudgetError {
    /// A duration that does not parse.
    #[error("invalid budget duration `{value}`: {reason}")]
    InvalidDuration {
        /// The value given.
        value: String,
        /// What is accepted.
        reason: &'static str,
    },
    /// A budget configured without a limit (LiteLLM #33327 silently dropped the deployments).
    #[error("budget for {scope} has no limit: set max_budget (or budget_limit)")]
    MissingLimit {
        /// The scope.
        scope: Scope,
    },
    /// A budget configured without a window.
    #[error("budget for {scope} has no window: set budget_duration (or time_period)")]
    MissingDuration {
        /// The scope.
        scope: Scope,
    },
    /// A limit that is negative or not a number.
    #[error("budget limit for {scope} must be a finite number >= 0, got {value}")]
    InvalidLimit {
        /// The scope.
        scope: Scope,
        /// The value given.
        value: f64,
    },
    /// A cost that is negative or not a number.
    #[error("invalid cost `{field}` = {value}: must be a finite number >= 0")]
    InvalidCost {
        /// What the cost was for.
        field: &'static str,
        /// The value given.
        value: f64,
    },
    /// The deployment's provider could not be told from its model.
    #[error("deployment {deployment}: {reason}")]
    InvalidDeployment {
        /// The deployment's index in the list given.
        deployment: usize,
        /// Why.
        reason: String,
    },
    /// Every candidate is over a budget (LiteLLM: "No deployments available - crossed budget").
    #[error("No deployments available - crossed budget: {}", list(.exceeded))]
    Exceeded {
        /// Every exceeded scope with its spend and limit.
        exceeded: Vec<Exceeded>,
    },
    /// The shared state failed (Redis in fail-closed mode, a reply of the wrong type...).
    #[error("budget state: {0}")]
    Cache(#[from] CacheError),
}

fn list(exceeded: &[Exceeded]) -> String {
    exceeded
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
