//! A budget's checks, shared by every place that declares one: a deployment's, a provider's,
//! a tag's and an API key's.

use ferrolite_budgets::BudgetConfig;

use crate::config::ConfigError;

/// Checks one budget: a limit (finite, >= 0) and a window LiteLLM's duration syntax accepts.
pub(super) fn check_budget(path: &str, budget: &BudgetConfig) -> Result<(), ConfigError> {
    match budget.max_budget {
        None => {
            return Err(ConfigError::at(
                format!("{path}.budget_limit"),
                "required: the budget's limit in USD (`budget_limit` or `max_budget`)",
            ));
        }
        Some(limit) if !limit.is_finite() || limit < 0.0 => {
            return Err(ConfigError::at(
                format!("{path}.budget_limit"),
                format!("expected a non-negative number of USD, got {limit}"),
            ));
        }
        Some(_) => {}
    }
    check_duration(
        &format!("{path}.time_period"),
        budget.budget_duration.as_deref(),
    )
}

/// A budget window: required, in LiteLLM's syntax (`30d`, `1mo`, `daily`, ...).
pub(super) fn check_duration(path: &str, duration: Option<&str>) -> Result<(), ConfigError> {
    let Some(duration) = duration else {
        return Err(ConfigError::at(
            path,
            "required: the budget's window (`time_period` or `budget_duration`, e.g. 1d, 30d, 1mo)",
        ));
    };
    ferrolite_budgets::BudgetDuration::parse(duration)
        .map(drop)
        .map_err(|_| {
            ConfigError::at(
                path,
                format!(
                    "expected a duration such as 30s, 15m, 1h, 1d, 1w, 1mo, daily or monthly, \
                     got {duration:?}"
                ),
            )
        })
}
