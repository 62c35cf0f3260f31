//! Budget configuration, in LiteLLM's spellings.

use std::collections::BTreeMap;

use serde::Deserialize;

/// One budget: a limit in USD per window. Accepts LiteLLM's two spellings: `max_budget` /
/// `budget_duration` and `budget_limit` / `time_period`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// USD per window.
    #[serde(default, alias = "budget_limit")]
    pub max_budget: Option<f64>,
    /// The window, e.g. `1d`, `30d`, `1mo`.
    #[serde(default, alias = "time_period")]
    pub budget_duration: Option<String>,
}

impl BudgetConfig {
    /// A budget of `limit` USD per `duration`.
    pub fn new(limit: f64, duration: &str) -> Self {
        BudgetConfig {
            max_budget: Some(limit),
            budget_duration: Some(duration.to_string()),
        }
    }
}

/// Where windows start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WindowAlignment {
    /// From the first use of the scope; when a window ends, the next use starts the next one
    /// (LiteLLM's behaviour, the default).
    #[default]
    Rolling,
    /// Aligned to the UTC calendar: midnight for days, Monday for weeks, the first of the month
    /// for months.
    Calendar,
}

/// What is reserved when a call is admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReservationPolicy {
    /// Nothing: the check happens before the call and the cost is charged after it (LiteLLM's
    /// behaviour; concurrent calls can overspend).
    None,
    /// An estimate at the deployment's prices, held until the call settles (default): the input
    /// tokens, plus the request's `max_tokens`, else the deployment's default `max_tokens`, else
    /// a learned high percentile of its recent output, else the model's output limit.
    /// Concurrent calls cannot overspend what they reserved; a call whose output passes its
    /// estimate overspends by the difference (`ferrolite_settings.budget_estimate: learned`).
    #[default]
    Estimate,
    /// As `Estimate` without the learned percentile: a call without `max_tokens` reserves the
    /// model's output limit, so the spend never passes the limit, and calls near it that would
    /// have fit are refused (`ferrolite_settings.budget_estimate: worst_case`).
    WorstCase,
}

/// All budget settings of a router.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BudgetsConfig {
    /// `provider_budget_config`: provider name -> budget.
    pub providers: BTreeMap<String, BudgetConfig>,
    /// `tag_budget_config`: request tag -> budget.
    pub tags: BTreeMap<String, BudgetConfig>,
    /// Where windows start.
    pub alignment: WindowAlignment,
    /// What admission reserves.
    pub reservation: ReservationPolicy,
}
