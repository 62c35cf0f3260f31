//! The router's settings: LiteLLM's routing settings (`Router.__init__`) with LiteLLM's effective
//! defaults, and the checks that run when a router is built.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use ferrolite_budgets::BudgetsConfig;
use ferrolite_cache::Window;
use ferrolite_strategies::{AdmissionMode, StrategyConfig, StrategyName};
use ferrolite_types::{AllowedFailsPolicy, ErrorClass};

use crate::RouterError;
use crate::{ResponseCacheSettings, WaitQueueSettings};

/// Retries per error class (LiteLLM's `RetryPolicy`); `None` leaves a class to the next rule.
/// A policy that gives a count for the error replaces the should-retry table (in LiteLLM, a
/// count from `get_num_retries_from_retry_policy` skips `should_retry_this_error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetryPolicy {
    /// 400s, including context-window and content-policy errors.
    pub bad_request: Option<u32>,
    /// 401 and 403.
    pub authentication: Option<u32>,
    /// Timeouts.
    pub timeout: Option<u32>,
    /// 429.
    pub rate_limit: Option<u32>,
    /// Content-policy refusals (before `bad_request`).
    pub content_policy: Option<u32>,
    /// 500.
    pub internal_server: Option<u32>,
    /// 503.
    pub service_unavailable: Option<u32>,
    /// 404.
    pub not_found: Option<u32>,
    /// Any error no field above names.
    pub default: Option<u32>,
}

impl RetryPolicy {
    /// The retries this policy gives `class`, most specific field first (LiteLLM walks the
    /// exception's class hierarchy the same way).
    pub fn retries_for(&self, class: &ErrorClass) -> Option<u32> {
        let specific = match class {
            ErrorClass::NotFound => self.not_found,
            ErrorClass::Authentication | ErrorClass::PermissionDenied => self.authentication,
            ErrorClass::Timeout => self.timeout,
            ErrorClass::RateLimited { .. } => self.rate_limit,
            ErrorClass::ContentPolicy => self.content_policy.or(self.bad_request),
            ErrorClass::ContextWindowExceeded | ErrorClass::BadRequest { .. } => self.bad_request,
            ErrorClass::ServerError { status: 503 } => self.service_unavailable,
            ErrorClass::ServerError { status: 500 } => self.internal_server,
            _ => None,
        };
        specific.or(self.default)
    }
}

/// How a router routes, retries, cools down and falls back. `Default` gives LiteLLM's effective
/// defaults (those of `Router.__init__`) where design.md does not say otherwise.
#[derive(Debug, Clone)]
pub struct RouterSettings {
    /// `routing_strategy` (default `simple-shuffle`).
    pub routing_strategy: StrategyName,
    /// `routing_strategy_args` and the random seed.
    pub strategy: StrategyConfig,
    /// Retries per model group (LiteLLM's effective default: 2).
    pub num_retries: u32,
    /// `retry_policy`.
    pub retry_policy: Option<RetryPolicy>,
    /// `model_group_retry_policy`: a group's own policy replaces `retry_policy`.
    pub model_group_retry_policy: HashMap<String, RetryPolicy>,
    /// `allowed_fails` set on the router. `None` (default) keeps LiteLLM's failure-rate rules;
    /// a value switches to counting failures per deployment against it.
    pub allowed_fails: Option<u32>,
    /// `allowed_fails_policy` set on the router.
    pub allowed_fails_policy: Option<AllowedFailsPolicy>,
    /// `cooldown_time` (default 5 s).
    pub cooldown_time: Duration,
    /// `disable_cooldowns`.
    pub disable_cooldowns: bool,
    /// `fallbacks`: group (or deployment id) -> the groups or deployment ids to try, in order.
    pub fallbacks: HashMap<String, Vec<String>>,
    /// `default_fallbacks` (LiteLLM's `{"*": [...]}` entry): used when a group has no entry.
    pub default_fallbacks: Vec<String>,
    /// `context_window_fallbacks`.
    pub context_window_fallbacks: HashMap<String, Vec<String>>,
    /// `content_policy_fallbacks`.
    pub content_policy_fallbacks: HashMap<String, Vec<String>>,
    /// `max_fallbacks`: fallback targets tried per request at most (default 5).
    pub max_fallbacks: u32,
    /// Router `timeout` per attempt (LiteLLM: 6000 s).
    pub timeout: Duration,
    /// Router `stream_timeout` per attempt of a streamed call.
    pub stream_timeout: Option<Duration>,
    /// `model_group_alias`: alias -> group.
    pub model_group_alias: HashMap<String, String>,
    /// The rate window of rpm/tpm limits (ferrolite: a sliding minute; LiteLLM's fixed minutes
    /// with [`Window::MINUTE_FIXED`]).
    pub window: Window,
    /// How rpm/tpm admissions are decided.
    pub admission: AdmissionMode,
    /// Provider, deployment and tag budgets.
    pub budgets: BudgetsConfig,
    /// The most jitter added to a backoff (LiteLLM's `JITTER` = 0.75 s).
    pub retry_jitter: Duration,
    /// `retry_after`: the shortest wait before a retry that waits at all (LiteLLM's minimum
    /// backoff; default 0). As in LiteLLM it raises the exponential backoff (0.5 s doubling),
    /// which stays capped at 8 s, and does not delay a retry that goes at once to another
    /// healthy deployment of the group or one that follows the provider's `Retry-After`.
    pub retry_after: Duration,
    /// An overall deadline over a request's attempts, backoffs and fallbacks (new in
    /// ferrolite; LiteLLM gives each attempt the full timeout and has none). `None`: no deadline.
    pub request_deadline: Option<Duration>,
    /// `enable_tag_filtering` (LiteLLM's tag-based routing).
    pub enable_tag_filtering: bool,
    /// `tag_filtering_match_any` (default true): a deployment matches when it carries any of
    /// the request's tags; false: all of them.
    pub tag_filtering_match_any: bool,
    /// `enable_pre_call_checks`: drop deployments whose `max_input_tokens` the request exceeds
    /// (LiteLLM's `_pre_call_checks`).
    pub enable_pre_call_checks: bool,
    /// `default_max_parallel_requests`: the concurrency cap of deployments that derive none.
    pub default_max_parallel_requests: Option<u32>,
    /// An optional retry budget (new in ferrolite): retries allowed as a share of recent
    /// successes, so a failing provider cannot start a retry storm.
    pub retry_budget: Option<RetryBudgetSettings>,
    /// `enable_health_check_routing` (LiteLLM's setting of that name): deployments whose last
    /// health check ([`Router::check_health`](crate::Router::check_health)) failed are not picked.
    pub enable_health_check_routing: bool,
    /// `health_check_staleness_threshold`: a failed check older than this no longer counts
    /// (LiteLLM: twice the 300 s check interval).
    pub health_check_staleness: Duration,
    /// `health_check_ignore_transient_errors`: a check answered with 429 or a timeout does not
    /// mark the deployment unhealthy.
    pub health_check_ignore_transient_errors: bool,
    /// Requests that find no capacity wait in a bounded queue, in `priority` order, instead of
    /// failing at once (`None`, the default: fail at once, as LiteLLM does).
    pub wait_queue: Option<WaitQueueSettings>,
    /// Half-open recovery (new in ferrolite; LiteLLM's recovery is purely time-based, W19):
    /// after a cooldown ends, one call at a time (shared by every instance) probes the
    /// deployment until one succeeds; a failure while half-open cools it down again at once.
    pub half_open: bool,
    /// `deployment_affinity` (an `optional_pre_call_checks` entry in LiteLLM):
    /// a request with an affinity key (a user's key, a session) goes to the deployment that key
    /// used last in the group, so provider prompt caches hit; it yields when that deployment is
    /// cooled down, unhealthy, full or over budget, and the pin moves to the one used.
    pub deployment_affinity: bool,
    /// `deployment_affinity_ttl_seconds`: how long a pin lasts after it was made (default 1 h).
    pub deployment_affinity_ttl: Duration,
    /// `ferrolite_settings.litellm_metrics`: record LiteLLM's Prometheus metrics
    /// ([`crate::litellm`]) beside ferrolite's own (default on).
    pub litellm_metrics: bool,
    /// How long a shared concurrency slot (or half-open probe) is held without renewal: a
    /// crashed instance's slots free themselves after this long (default 30 s; a running call
    /// renews its slot every third of it).
    pub lease_ttl: Duration,
    /// `default_priority`: the priority of a request that gives none (LiteLLM's `Scheduler`);
    /// `None` queues such requests after every prioritised one.
    pub default_priority: Option<u8>,
    /// `cache_responses`: answer identical requests from a response cache (memory, and Redis
    /// when the router's cache has it) without calling a deployment; `None`, the default, as
    /// LiteLLM: no response cache.
    pub response_cache: Option<ResponseCacheSettings>,
}

/// A retry budget, after tower's `retry::budget`: over the last `window`, retries may number at
/// most `min_per_second x window` plus `ratio x` the successes seen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudgetSettings {
    /// How far back successes and retries count.
    pub window: Duration,
    /// Retries always allowed per second, whatever the successes (so a quiet router can retry).
    pub min_per_second: u32,
    /// Retries allowed per success.
    pub ratio: f64,
}

impl Default for RetryBudgetSettings {
    fn default() -> Self {
        RetryBudgetSettings {
            window: Duration::from_secs(10),
            min_per_second: 10,
            ratio: 0.2,
        }
    }
}

impl Default for RouterSettings {
    fn default() -> Self {
        RouterSettings {
            routing_strategy: StrategyName::SimpleShuffle,
            strategy: StrategyConfig::default(),
            num_retries: 2,
            retry_policy: None,
            model_group_retry_policy: HashMap::new(),
            allowed_fails: None,
            allowed_fails_policy: None,
            cooldown_time: Duration::from_secs(5),
            disable_cooldowns: false,
            fallbacks: HashMap::new(),
            default_fallbacks: Vec::new(),
            context_window_fallbacks: HashMap::new(),
            content_policy_fallbacks: HashMap::new(),
            max_fallbacks: 5,
            timeout: Duration::from_secs(6000),
            stream_timeout: None,
            model_group_alias: HashMap::new(),
            window: Window::MINUTE_SLIDING,
            admission: AdmissionMode::Batched,
            budgets: BudgetsConfig::default(),
            retry_jitter: Duration::from_millis(750),
            retry_after: Duration::ZERO,
            request_deadline: None,
            enable_tag_filtering: false,
            tag_filtering_match_any: true,
            enable_pre_call_checks: false,
            retry_budget: None,
            default_max_parallel_requests: None,
            enable_health_check_routing: false,
            health_check_staleness: Duration::from_secs(600),
            health_check_ignore_transient_errors: false,
            wait_queue: None,
            half_open: false,
            deployment_affinity: false,
            deployment_affinity_ttl: Duration::from_secs(3600),
            litellm_metrics: true,
            default_priority: None,
            lease_ttl: Duration::from_secs(30),
            response_cache: None,
        }
    }
}

impl RouterSettings {
    /// The retry policy for `group`: its own, else the router's.
    pub(crate) fn retry_policy_for(&self, group: &str) -> Option<&RetryPolicy> {
        self.model_group_retry_policy
            .get(group)
            .or(self.retry_policy.as_ref())
    }

    /// Checks the settings against what the router serves: every fallback key and target is a
    /// model name the router serves (`serves`: a group, an alias, a deployment id or a model
    /// served through a wildcard group), no chain loops back to where it started (a group
    /// listed in its own chain is skipped when a call runs, as LiteLLM does), timeouts are
    /// positive.
    pub(crate) fn validate(
        &self,
        groups: &HashSet<String>,
        serves: &dyn Fn(&str) -> bool,
    ) -> Result<(), RouterError> {
        if let Some(cache) = &self.response_cache {
            cache.validate()?;
        }
        if self.timeout.is_zero() {
            return Err(RouterError::InvalidSettings {
                field: "timeout".into(),
                value: format!("{:?}", self.timeout),
                reason: "must be greater than zero",
            });
        }
        if self.stream_timeout.is_some_and(|t| t.is_zero()) {
            return Err(RouterError::InvalidSettings {
                field: "stream_timeout".into(),
                value: "0s".into(),
                reason: "must be greater than zero",
            });
        }
        if let Some(queue) = &self.wait_queue {
            if queue.max_wait.is_zero() || queue.poll_interval.is_zero() || queue.max_waiting == 0 {
                return Err(RouterError::InvalidSettings {
                    field: "wait_queue".into(),
                    value: format!("{queue:?}"),
                    reason: "max_waiting, max_wait and poll_interval must be greater than zero",
                });
            }
        }
        if self.lease_ttl < Duration::from_millis(3) {
            return Err(RouterError::InvalidSettings {
                field: "lease_ttl".into(),
                value: format!("{:?}", self.lease_ttl),
                reason: "must be at least 3 ms (a running call renews every third of it)",
            });
        }
        if self.deployment_affinity && self.deployment_affinity_ttl.is_zero() {
            return Err(RouterError::InvalidSettings {
                field: "deployment_affinity_ttl_seconds".into(),
                value: "0".into(),
                reason: "must be greater than zero",
            });
        }
        if let Some(budget) = &self.retry_budget {
            if budget.window.is_zero() || !budget.ratio.is_finite() || budget.ratio < 0.0 {
                return Err(RouterError::InvalidSettings {
                    field: "retry_budget".into(),
                    value: format!("{budget:?}"),
                    reason: "a window > 0 and a finite ratio >= 0",
                });
            }
        }
        let known = |name: &str| serves(name);
        for (field, chains) in [
            ("fallbacks", &self.fallbacks),
            ("context_window_fallbacks", &self.context_window_fallbacks),
            ("content_policy_fallbacks", &self.content_policy_fallbacks),
        ] {
            for (from, targets) in chains {
                if !known(from) && from != "*" {
                    return Err(RouterError::InvalidSettings {
                        field: format!("{field}.{from}"),
                        value: from.clone(),
                        reason: "names no model the router serves (group, alias, deployment id or wildcard)",
                    });
                }
                for target in targets {
                    if !known(target) {
                        return Err(RouterError::InvalidSettings {
                            field: format!("{field}.{from}"),
                            value: target.clone(),
                            reason: "falls back to no model the router serves (group, alias, deployment id or wildcard)",
                        });
                    }
                }
            }
            if let Some(cycle) = find_cycle(chains) {
                return Err(RouterError::InvalidSettings {
                    field: field.into(),
                    value: cycle.join(" -> "),
                    reason: "a fallback chain loops back to where it started",
                });
            }
        }
        for target in &self.default_fallbacks {
            if !known(target) {
                return Err(RouterError::InvalidSettings {
                    field: "default_fallbacks".into(),
                    value: target.clone(),
                    reason: "names no model the router serves (group, alias, deployment id or wildcard)",
                });
            }
        }
        for (alias, group) in &self.model_group_alias {
            if !groups.contains(group) {
                return Err(RouterError::InvalidSettings {
                    field: format!("model_group_alias.{alias}"),
                    value: group.clone(),
                    reason: "names no model group",
                });
            }
        }
        for group in self.model_group_retry_policy.keys() {
            if !groups.contains(group) {
                return Err(RouterError::InvalidSettings {
                    field: "model_group_retry_policy".into(),
                    value: group.clone(),
                    reason: "names no model group",
                });
            }
        }
        Ok(())
    }
}

/// A cycle in a fallback graph (`a -> b -> a`), as the list of its nodes, if there is one.
fn find_cycle(chains: &HashMap<String, Vec<String>>) -> Option<Vec<String>> {
    fn visit<'a>(
        node: &'a str,
        chains: &'a HashMap<String, Vec<String>>,
        path: &mut Vec<&'a str>,
        done: &mut HashSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| *n == node) {
            let mut cycle: Vec<String> = path[start..].iter().map(|s| s.to_string()).collect();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node);
        // A group listed in its own chain is no loop: a call skips it (LiteLLM does).
        for next in chains
            .get(node)
            .into_iter()
            .flatten()
            .filter(|n| *n != node)
        {
            if let Some(cycle) = visit(next, chains, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node);
        None
    }
    let mut done = HashSet::new();
    let mut roots: Vec<&String> = chains.keys().collect();
    roots.sort();
    for root in roots {
        if let Some(cycle) = visit(root, chains, &mut Vec::new(), &mut done) {
            return Some(cycle);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_in_its_own_chain_is_no_loop_but_a_to_b_to_a_is() {
        let own: HashMap<String, Vec<String>> = [
            ("a".to_string(), vec!["a".to_string(), "b".to_string()]),
            ("b".to_string(), vec!["c".to_string()]),
        ]
        .into();
        assert_eq!(find_cycle(&own), None);
        let looped: HashMap<String, Vec<String>> = [
            ("a".to_string(), vec!["a".to_string(), "b".to_string()]),
            ("b".to_string(), vec!["a".to_string()]),
        ]
        .into();
        assert!(find_cycle(&looped).is_some());
    }

    #[test]
    fn a_loop_is_found_and_a_chain_is_not() {
        let chains: HashMap<String, Vec<String>> = [
            ("a".to_string(), vec!["b".to_string()]),
            ("b".to_string(), vec!["c".to_string()]),
        ]
        .into();
        assert_eq!(find_cycle(&chains), None);
        let looped: HashMap<String, Vec<String>> = [
            ("a".to_string(), vec!["b".to_string()]),
            ("b".to_string(), vec!["a".to_string()]),
        ]
        .into();
        assert_eq!(
            find_cycle(&looped),
            Some(vec!["a".to_string(), "b".to_string(), "a".to_string()])
        );
    }

    #[test]
    fn retry_policies_pick_the_most_specific_field() {
        let policy = RetryPolicy {
            bad_request: Some(1),
            content_policy: Some(3),
            default: Some(7),
            ..RetryPolicy::default()
        };
        assert_eq!(policy.retries_for(&ErrorClass::ContentPolicy), Some(3));
        assert_eq!(
            policy.retries_for(&ErrorClass::ContextWindowExceeded),
            Some(1)
        );
        assert_eq!(policy.retries_for(&ErrorClass::Timeout), Some(7));
    }
}
