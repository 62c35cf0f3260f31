//! When a failure cools a deployment down (LiteLLM's `router_utils/cooldown_handlers.py`), and
//! for how long.
//!
//! Cooldowns are watched deadlines (`{id}:cooldown`): written to Redis at once ("set if later",
//! so re-cooling only extends), read by every instance from memory, seen by the others within
//! one sync interval.

use std::time::Duration;

use ferrolite_cache::{CounterOptions, hash_tagged};
use ferrolite_types::{Deployment, ErrorClass};

use crate::RouterSettings;

/// LiteLLM's `DEFAULT_FAILURE_THRESHOLD_PERCENT`: a deployment failing more than this share of
/// its calls in the minute is cooled down...
const FAILURE_RATE: f64 = 0.5;
/// ...once it has had at least this many (`DEFAULT_FAILURE_THRESHOLD_MINIMUM_REQUESTS`).
const FAILURE_RATE_MINIMUM: i64 = 5;
/// A lone deployment failing every call is cooled down after this many
/// (`SINGLE_DEPLOYMENT_TRAFFIC_FAILURE_THRESHOLD`).
const LONE_FAILURE_MINIMUM: i64 = 1000;

/// One failed call of a deployment, as the cooldown rules see it.
pub(crate) struct Incident<'a> {
    pub(crate) deployment: &'a Deployment,
    /// Its id (computed once per snapshot; `Deployment::id` hashes).
    pub(crate) id: &'a ferrolite_types::DeploymentId,
    /// The snapshot's failure and success counts, and the deployment's position in them.
    pub(crate) outcomes: &'a crate::snapshot::Outcomes,
    pub(crate) position: usize,
    pub(crate) class: &'a ErrorClass,
    /// Deployments in the deployment's group.
    pub(crate) group_size: usize,
    /// Whether the requested group has a fallback chain.
    pub(crate) has_fallbacks: bool,
}

/// LiteLLM's exception class name for a class: the allowed-fails counter suffix.
fn class_name(class: &ErrorClass) -> &'static str {
    match class {
        ErrorClass::RateLimited { .. } => "RateLimitError",
        ErrorClass::Timeout => "Timeout",
        ErrorClass::ContextWindowExceeded | ErrorClass::BadRequest { .. } => "BadRequestError",
        ErrorClass::ContentPolicy => "ContentPolicyViolationError",
        ErrorClass::Authentication | ErrorClass::PermissionDenied => "AuthenticationError",
        ErrorClass::NotFound => "NotFoundError",
        ErrorClass::BudgetExceeded => "BudgetExceededError",
        ErrorClass::ServerError { .. } => "InternalServerError",
        ErrorClass::Connection => "APIConnectionError",
    }
}

/// How long a cooldown for this failure lasts: the deployment's `cooldown_time`, else the
/// provider's `Retry-After` (no cap, as LiteLLM), else the router's. `None` when that is zero
/// (`cooldown_time: 0` disables cooldowns for the deployment).
pub(crate) fn cooldown_length(
    settings: &RouterSettings,
    deployment: &Deployment,
    class: &ErrorClass,
) -> Option<Duration> {
    let length = deployment
        .cooldown_duration()
        .or(class.retry_after())
        .unwrap_or(settings.cooldown_time);
    (length.as_nanos() > 0).then_some(length)
}

/// Decides whether `incident` cools its deployment down (LiteLLM's `_should_run_cooldown_logic`
/// and `_should_cooldown_deployment`); counts it first. Returns the cooldown's length.
pub(crate) async fn decide(
    settings: &RouterSettings,
    cache: &ferrolite_cache::DualCache,
    incident: &Incident<'_>,
) -> Option<Duration> {
    let Incident {
        deployment,
        id,
        outcomes,
        position,
        class,
        group_size,
        has_fallbacks,
    } = incident;
    if let Err(error) = outcomes.fails.increment(*position, 1) {
        tracing::debug!(%error, "could not count a failure");
    }
    if settings.disable_cooldowns {
        return None;
    }
    let length = cooldown_length(settings, deployment, class)?;
    let deployment_policy = deployment
        .allowed_fails_policy
        .as_ref()
        .and_then(|p| p.for_class(class));
    if !class.is_cooldown_relevant() && deployment_policy.is_none() {
        return None;
    }
    let router_policy = settings
        .allowed_fails_policy
        .as_ref()
        .and_then(|p| p.for_class(class));
    let single = *group_size <= 1;
    let lone = single && !has_fallbacks;
    if matches!(class, ErrorClass::BudgetExceeded)
        && single
        && deployment_policy.is_none()
        && router_policy.is_none()
    {
        return None;
    }
    let cool = if deployment.allowed_fails_policy.is_some() || deployment.allowed_fails.is_some() {
        // The deployment's own allowance.
        if deployment_policy.is_none()
            && single
            && (deployment.allowed_fails.is_some() || router_policy.is_none())
        {
            return None;
        }
        let ttl = deployment
            .cooldown_duration()
            .unwrap_or(settings.cooldown_time);
        let allowance = Allowance::of(deployment_policy, deployment.allowed_fails, 0, class);
        allowance.exceeded(cache, id, ttl)
    } else if settings.allowed_fails_policy.is_none() && settings.allowed_fails.is_none() {
        // LiteLLM's default: failure rates in the minute.
        let fails = outcomes.fails.value(*position).max(0);
        let total = fails + outcomes.successes.value(*position).max(0);
        let rate = if total == 0 {
            0.0
        } else {
            fails as f64 / total as f64
        };
        (matches!(class, ErrorClass::RateLimited { .. }) && !single)
            || (rate >= 1.0 && total >= LONE_FAILURE_MINIMUM)
            || (rate > FAILURE_RATE && total >= FAILURE_RATE_MINIMUM && !single)
            || !class.is_retryable()
    } else {
        // The router's allowance.
        if lone && router_policy.is_none() {
            return None;
        }
        let allowance = Allowance::of(router_policy, settings.allowed_fails, 3, class);
        allowance.exceeded(cache, id, settings.cooldown_time)
    };
    cool.then_some(length)
}

/// Failures allowed before a cooldown, and the counter they are counted in: per error class when
/// a policy names the class, else one "generic" counter.
struct Allowance {
    allowed: u32,
    suffix: &'static str,
}

impl Allowance {
    /// The policy's entry for `class` if there is one, else `fails`, else `default`.
    fn of(policy: Option<u32>, fails: Option<u32>, default: u32, class: &ErrorClass) -> Self {
        match policy {
            Some(allowed) => Allowance {
                allowed,
                suffix: class_name(class),
            },
            None => Allowance {
                allowed: fails.unwrap_or(default),
                suffix: "generic",
            },
        }
    }

    /// Counts one failure in a window of `ttl` from the first; whether the count is now over the
    /// allowance.
    fn exceeded(
        &self,
        cache: &ferrolite_cache::DualCache,
        id: &ferrolite_types::DeploymentId,
        ttl: Duration,
    ) -> bool {
        let key = hash_tagged(id.as_str(), &format!(":allowed_fails:{}", self.suffix));
        let window = CounterOptions::fixed_ttl(ttl.max(Duration::from_millis(1)));
        match cache.counters().increment(&key, 1, window) {
            Ok(count) => count > i64::from(self.allowed),
            Err(error) => {
                tracing::warn!(%error, "could not count an allowed failure");
                false
            }
        }
    }
}
