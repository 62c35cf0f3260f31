//! The routing settings: `router_settings` first, then `litellm_settings` (LiteLLM reads the
//! globals only when the router's own argument is unset), then ferrolite's own
//! `ferrolite_settings`. One function per block, in the order [`settings_of`] applies them.

use std::collections::HashMap;

use ferrolite_budgets::{BudgetsConfig, ReservationPolicy, WindowAlignment};
use ferrolite_cache::Window;
use ferrolite_router::{RetryBudgetSettings, RouterSettings, WaitQueueSettings};
use ferrolite_strategies::AdmissionMode;

use super::budgets::check_budget;
use super::cache::response_cache_of;
use crate::config::ConfigError;
use crate::config::env::Seconds;
use crate::config::raw::{
    AdmissionDe, AliasTarget, BudgetEstimateDe, BudgetWindowsDe, FallbackList,
    RawFerroliteSettings, RawLitellmSettings, RawRouterSettings, RawWaitQueue, WindowDe,
};

/// The routing settings: `router_settings` first, then `litellm_settings` (LiteLLM reads the
/// globals only when the router's own argument is unset), then ferrolite's.
pub(super) fn settings_of(
    mut rs: RawRouterSettings,
    mut ls: RawLitellmSettings,
    mut fs: RawFerroliteSettings,
) -> Result<RouterSettings, ConfigError> {
    let mut s = RouterSettings::default();
    let response_cache = response_cache_of(&rs, &ls, &fs)?;
    strategy_of(&mut s, &rs, &fs)?;
    retries_of(&mut s, &mut rs, &ls);
    timeouts_of(&mut s, &rs, &ls)?;
    cooldowns_of(&mut s, &rs);
    fallbacks_of(&mut s, &mut rs, &mut ls)?;
    aliases_of(&mut s, &mut rs, &mut ls);
    budgets_of(&mut s, &mut rs, &mut ls, &fs)?;
    pre_call_checks_of(&mut s, &rs);
    // ferrolite's own
    admission_of(&mut s, &fs);
    retry_budget_of(&mut s, &fs)?;
    s.half_open = fs.half_open.unwrap_or(false);
    s.litellm_metrics = fs.litellm_metrics.unwrap_or(true);
    if let Some(affinity) = fs.deployment_affinity {
        s.deployment_affinity = affinity;
    }
    wait_queue_of(&mut s, &rs, fs.wait_queue.take())?;
    if let Some(ttl) = fs.lease_ttl {
        if ttl.0 < 0.003 {
            return Err(ConfigError::at(
                "ferrolite_settings.lease_ttl",
                format!("expected at least 0.003 seconds, got {}", ttl.0),
            ));
        }
        s.lease_ttl = ttl.duration();
    }
    s.response_cache = response_cache;
    Ok(s)
}

/// `routing_strategy`, its arguments, and ferrolite's `seed` for the strategies' randomness.
fn strategy_of(
    s: &mut RouterSettings,
    rs: &RawRouterSettings,
    fs: &RawFerroliteSettings,
) -> Result<(), ConfigError> {
    if let Some(strategy) = rs.routing_strategy {
        s.routing_strategy = strategy.0;
    }
    s.strategy.args.ttl = rs.routing_strategy_args.ttl.map(|t| t.0);
    s.strategy.args.lowest_latency_buffer = rs.routing_strategy_args.lowest_latency_buffer;
    s.strategy.args.max_latency_list_size = rs.routing_strategy_args.max_latency_list_size;
    s.strategy
        .args
        .validate()
        .map_err(|e| ConfigError::at("router_settings.routing_strategy_args", e.to_string()))?;
    s.strategy.seed = fs.seed;
    Ok(())
}

/// `num_retries`, LiteLLM's `retry_policy` and `model_group_retry_policy`, and `retry_after`.
fn retries_of(s: &mut RouterSettings, rs: &mut RawRouterSettings, ls: &RawLitellmSettings) {
    if let Some(n) = rs.num_retries.or(ls.num_retries) {
        s.num_retries = n;
    }
    s.retry_policy = rs.retry_policy.map(Into::into);
    s.model_group_retry_policy = std::mem::take(&mut rs.model_group_retry_policy)
        .into_iter()
        .map(|(group, policy)| (group, policy.into()))
        .collect();
    if let Some(t) = rs.retry_after {
        s.retry_after = t.duration();
    }
}

/// `timeout` (else `litellm_settings.request_timeout`) and `stream_timeout`: above 0.
fn timeouts_of(
    s: &mut RouterSettings,
    rs: &RawRouterSettings,
    ls: &RawLitellmSettings,
) -> Result<(), ConfigError> {
    if let Some(t) = rs.timeout.or(ls.request_timeout) {
        if t.0 == 0.0 {
            let path = if rs.timeout.is_some() {
                "router_settings.timeout"
            } else {
                "litellm_settings.request_timeout"
            };
            return Err(ConfigError::at(
                path,
                "expected a number of seconds > 0, got 0",
            ));
        }
        s.timeout = t.duration();
    }
    if let Some(t) = rs.stream_timeout {
        if t.0 == 0.0 {
            return Err(ConfigError::at(
                "router_settings.stream_timeout",
                "expected a number of seconds > 0, got 0",
            ));
        }
        s.stream_timeout = Some(t.duration());
    }
    Ok(())
}

/// `allowed_fails`, `allowed_fails_policy`, `cooldown_time` and `disable_cooldowns`.
fn cooldowns_of(s: &mut RouterSettings, rs: &RawRouterSettings) {
    s.allowed_fails = rs.allowed_fails;
    s.allowed_fails_policy = rs.allowed_fails_policy;
    if let Some(t) = rs.cooldown_time {
        // LiteLLM: `cooldown_time or 5` — a router-level 0 means the default.
        if t.0 > 0.0 {
            s.cooldown_time = t.duration();
        }
    }
    s.disable_cooldowns = rs.disable_cooldowns.unwrap_or(false);
}

/// Fallback chains by group.
type Chains = HashMap<String, Vec<String>>;

/// Splits LiteLLM's fallback lists into chains by group, and the `*` entry (when there is one).
fn chains(list: FallbackList, field: &str) -> Result<(Chains, Option<Vec<String>>), ConfigError> {
    let mut chains = HashMap::new();
    let mut star = None;
    for (i, item) in list.into_iter().enumerate() {
        for (from, targets) in item {
            let targets = targets.into_vec();
            if from == "*" {
                star = Some(targets);
            } else if chains.insert(from.clone(), targets).is_some() {
                return Err(ConfigError::at(
                    format!("{field}[{i}].{from}"),
                    format!("the group {from:?} has a second fallback entry"),
                ));
            }
        }
    }
    Ok((chains, star))
}

/// The chains of one kind of fallback list (`key`): `router_settings`' when it sets the list,
/// else `litellm_settings`'.
fn chains_of(
    key: &str,
    router: Option<FallbackList>,
    litellm: Option<FallbackList>,
) -> Result<(Chains, Option<Vec<String>>), ConfigError> {
    match router {
        Some(list) => chains(list, &format!("router_settings.{key}")),
        None => chains(
            litellm.unwrap_or_default(),
            &format!("litellm_settings.{key}"),
        ),
    }
}

/// `fallbacks`, `default_fallbacks`, `context_window_fallbacks`, `content_policy_fallbacks`
/// and `max_fallbacks`.
fn fallbacks_of(
    s: &mut RouterSettings,
    rs: &mut RawRouterSettings,
    ls: &mut RawLitellmSettings,
) -> Result<(), ConfigError> {
    let (fallbacks, star) = chains_of("fallbacks", rs.fallbacks.take(), ls.fallbacks.take())?;
    s.fallbacks = fallbacks;
    // An explicit `"*"` entry wins over `default_fallbacks`, as in LiteLLM's Router (which
    // appends `default_fallbacks` as a `"*"` entry only when `fallbacks` has none).
    s.default_fallbacks = match star {
        Some(star) => star,
        None => rs
            .default_fallbacks
            .take()
            .or(ls.default_fallbacks.take())
            .unwrap_or_default(),
    };
    s.context_window_fallbacks = chains_of(
        "context_window_fallbacks",
        rs.context_window_fallbacks.take(),
        ls.context_window_fallbacks.take(),
    )?
    .0;
    s.content_policy_fallbacks = chains_of(
        "content_policy_fallbacks",
        rs.content_policy_fallbacks.take(),
        ls.content_policy_fallbacks.take(),
    )?
    .0;
    if let Some(n) = rs.max_fallbacks.or(ls.max_fallbacks) {
        s.max_fallbacks = n;
    }
    Ok(())
}

/// `model_group_alias`, then the proxy's `litellm_settings.model_alias_map`.
fn aliases_of(s: &mut RouterSettings, rs: &mut RawRouterSettings, ls: &mut RawLitellmSettings) {
    s.model_group_alias = std::mem::take(&mut rs.model_group_alias)
        .into_iter()
        .map(|(alias, target)| {
            let group = match target {
                AliasTarget::Group(group) => group,
                AliasTarget::Detailed { model, .. } => model,
            };
            (alias, group)
        })
        .collect();
    // The proxy maps a request's model through `litellm.model_alias_map` before routing: an
    // alias as `model_group_alias` gives one (whose own entries win).
    for (alias, group) in std::mem::take(&mut ls.model_alias_map) {
        s.model_group_alias.entry(alias).or_insert(group);
    }
}

/// The provider budgets (`provider_budget_config`), the tag budgets (`tag_budget_config`), and
/// ferrolite's `budget_windows` and `budget_estimate`.
fn budgets_of(
    s: &mut RouterSettings,
    rs: &mut RawRouterSettings,
    ls: &mut RawLitellmSettings,
    fs: &RawFerroliteSettings,
) -> Result<(), ConfigError> {
    for (name, budget) in &rs.provider_budget_config {
        check_budget(
            &format!("router_settings.provider_budget_config.{name}"),
            budget,
        )?;
    }
    for (tag, budget) in &ls.tag_budget_config {
        check_budget(&format!("litellm_settings.tag_budget_config.{tag}"), budget)?;
    }
    s.budgets = BudgetsConfig {
        providers: std::mem::take(&mut rs.provider_budget_config),
        tags: std::mem::take(&mut ls.tag_budget_config),
        alignment: match fs.budget_windows {
            Some(BudgetWindowsDe::Calendar) => WindowAlignment::Calendar,
            _ => WindowAlignment::Rolling,
        },
        reservation: match fs.budget_estimate {
            Some(BudgetEstimateDe::WorstCase) => ReservationPolicy::WorstCase,
            _ => ReservationPolicy::Estimate,
        },
    };
    Ok(())
}

/// The filters before a call: pre-call checks, tag filtering, `optional_pre_call_checks`
/// (deployment affinity), health-check routing, and the default limits of a deployment and a
/// request.
fn pre_call_checks_of(s: &mut RouterSettings, rs: &RawRouterSettings) {
    s.enable_pre_call_checks = rs.enable_pre_call_checks.unwrap_or(false);
    s.enable_tag_filtering = rs.enable_tag_filtering.unwrap_or(false);
    s.tag_filtering_match_any = rs.tag_filtering_match_any.unwrap_or(true);
    s.default_max_parallel_requests = rs.default_max_parallel_requests;
    s.default_priority = rs.default_priority;
    for (i, check) in rs.optional_pre_call_checks.iter().enumerate() {
        match check.as_str() {
            "deployment_affinity" | "session_affinity" => s.deployment_affinity = true,
            // Always on: budgets and limits, and a Responses follow-up's route to the
            // deployment that stored its conversation.
            "router_budget_limiting"
            | "enforce_model_rate_limits"
            | "responses_api_deployment_check" => {}
            other => {
                tracing::warn!(
                    check = other,
                    "router_settings.optional_pre_call_checks[{i}]: accepted, not implemented"
                );
            }
        }
    }
    if let Some(ttl) = rs.deployment_affinity_ttl_seconds {
        s.deployment_affinity_ttl = ttl.duration();
    }
    s.enable_health_check_routing = rs.enable_health_check_routing.unwrap_or(false);
    if let Some(t) = rs.health_check_staleness_threshold {
        s.health_check_staleness = t.duration();
    }
    s.health_check_ignore_transient_errors =
        rs.health_check_ignore_transient_errors.unwrap_or(false);
}

/// ferrolite's `admission`, `window` and `request_deadline`.
fn admission_of(s: &mut RouterSettings, fs: &RawFerroliteSettings) {
    if let Some(mode) = fs.admission {
        s.admission = match mode {
            AdmissionDe::Batched => AdmissionMode::Batched,
            AdmissionDe::Strict => AdmissionMode::Strict,
            AdmissionDe::Auto => AdmissionMode::Auto,
        };
    }
    if let Some(window) = fs.window {
        s.window = match window {
            WindowDe::Sliding => Window::MINUTE_SLIDING,
            WindowDe::Fixed => Window::MINUTE_FIXED,
        };
    }
    s.request_deadline = fs.request_deadline.map(Seconds::duration);
}

/// ferrolite's `retry_budget`: retries per success, over a window, with a floor per second.
fn retry_budget_of(s: &mut RouterSettings, fs: &RawFerroliteSettings) -> Result<(), ConfigError> {
    let Some(budget) = &fs.retry_budget else {
        return Ok(());
    };
    if let Some(ratio) = budget.ratio {
        if !ratio.is_finite() || ratio < 0.0 {
            return Err(ConfigError::at(
                "ferrolite_settings.retry_budget.ratio",
                format!("expected a non-negative number of retries per success, got {ratio}"),
            ));
        }
    }
    if budget.window.is_some_and(|w| w.0 == 0.0) {
        return Err(ConfigError::at(
            "ferrolite_settings.retry_budget.window",
            "expected a number of seconds > 0, got 0",
        ));
    }
    let defaults = RetryBudgetSettings::default();
    s.retry_budget = Some(RetryBudgetSettings {
        window: budget.window.map_or(defaults.window, Seconds::duration),
        min_per_second: budget.min_per_second.unwrap_or(defaults.min_per_second),
        ratio: budget.ratio.unwrap_or(defaults.ratio),
    });
    Ok(())
}

/// The wait queue: LiteLLM queues requests once a default priority is set; ferrolite also on
/// `wait_queue` (whose poll interval defaults to `router_settings.polling_interval`).
fn wait_queue_of(
    s: &mut RouterSettings,
    rs: &RawRouterSettings,
    wait_queue: Option<RawWaitQueue>,
) -> Result<(), ConfigError> {
    if wait_queue.is_none() && rs.default_priority.is_none() {
        return Ok(());
    }
    let defaults = WaitQueueSettings::default();
    let queue = wait_queue.unwrap_or_default();
    let zero = |field: &str, is_zero: bool| {
        if is_zero {
            Err(ConfigError::at(
                format!("ferrolite_settings.wait_queue.{field}"),
                "expected a value > 0, got 0",
            ))
        } else {
            Ok(())
        }
    };
    zero("max_waiting", queue.max_waiting == Some(0))?;
    zero("max_wait", queue.max_wait.is_some_and(|w| w.0 == 0.0))?;
    zero(
        "poll_interval",
        queue.poll_interval.is_some_and(|w| w.0 == 0.0),
    )?;
    s.wait_queue = Some(WaitQueueSettings {
        max_waiting: queue.max_waiting.unwrap_or(defaults.max_waiting),
        max_wait: queue.max_wait.map_or(defaults.max_wait, Seconds::duration),
        poll_interval: queue
            .poll_interval
            .or(rs.polling_interval)
            .map_or(defaults.poll_interval, Seconds::duration),
    });
    Ok(())
}
