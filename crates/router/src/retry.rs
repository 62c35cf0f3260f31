//! Whether a failed attempt is retried (reference §2.7), and how long to wait first.

use std::time::Duration;

use ferrolite_types::ErrorClass;

/// LiteLLM's `INITIAL_RETRY_DELAY`.
const INITIAL_DELAY: Duration = Duration::from_millis(500);
/// LiteLLM's `MAX_RETRY_DELAY`.
const MAX_DELAY: Duration = Duration::from_secs(8);
/// A provider's `Retry-After` is honoured up to this long.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// What the retry decision reads about the group at the time of a failure.
pub(crate) struct GroupState {
    /// Deployments of the group not cooling down (after this failure's cooldown).
    pub(crate) healthy: usize,
    /// Deployments of the group.
    pub(crate) all: usize,
    /// Whether the group has a generic fallback chain.
    pub(crate) has_fallbacks: bool,
    /// Whether context-window fallbacks are configured.
    pub(crate) context_window_fallbacks: bool,
    /// Whether content-policy fallbacks are configured.
    pub(crate) content_policy_fallbacks: bool,
}

/// LiteLLM's `should_retry_this_error` table, in its order: false sends the error on to the
/// fallbacks (or to the caller).
pub(crate) fn should_retry(class: &ErrorClass, group: &GroupState) -> bool {
    match class {
        ErrorClass::ContextWindowExceeded if group.context_window_fallbacks => return false,
        ErrorClass::ContentPolicy if group.content_policy_fallbacks => return false,
        _ => {}
    }
    let sibling_only = matches!(
        class,
        ErrorClass::Authentication | ErrorClass::PermissionDenied
    );
    if class.status().is_some() && !class.is_retryable() && !sibling_only {
        return false; // 400, 402, 404, 422 and the like
    }
    if matches!(class, ErrorClass::RateLimited { .. }) && group.healthy == 0 && group.has_fallbacks
    {
        return false;
    }
    if sibling_only && group.all <= 1 {
        return false;
    }
    group.healthy > 0
}

/// How long to wait before retry number `retry` (0 for the first): nothing when another healthy
/// deployment of the group can take it at once; otherwise the provider's `Retry-After` (up to
/// 60 s), else 0.5 s doubling, at least `min` (LiteLLM's `retry_after`), at most 8 s — plus
/// `jitter` (LiteLLM's `calculate_retry_after`). This is LiteLLM's schedule; its jitter is
/// additive and uniform (up to 0.75 s), which spreads the retries of many callers that failed
/// together ("Exponential Backoff And Jitter", Marc Brooker, AWS Architecture Blog, 2015).
pub(crate) fn backoff(
    class: &ErrorClass,
    retry: u32,
    group: &GroupState,
    jitter: Duration,
    min: Duration,
) -> Duration {
    if group.all != 1 && group.healthy > 0 {
        return Duration::ZERO;
    }
    if let Some(after) = class.retry_after() {
        if !after.is_zero() && after <= MAX_RETRY_AFTER {
            return after + jitter;
        }
    }
    let doubled = INITIAL_DELAY.saturating_mul(1u32 << retry.min(16));
    doubled.max(min).min(MAX_DELAY) + jitter
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(healthy: usize, all: usize) -> GroupState {
        GroupState {
            healthy,
            all,
            has_fallbacks: false,
            context_window_fallbacks: false,
            content_policy_fallbacks: false,
        }
    }

    #[test]
    fn backoff_doubles_from_half_a_second_to_eight() {
        let lone = group(0, 1);
        let waits: Vec<f64> = (0..6)
            .map(|r| {
                backoff(
                    &ErrorClass::ServerError { status: 500 },
                    r,
                    &lone,
                    Duration::ZERO,
                    Duration::ZERO,
                )
                .as_secs_f64()
            })
            .collect();
        assert_eq!(waits, vec![0.5, 1.0, 2.0, 4.0, 8.0, 8.0]);
    }

    #[test]
    fn a_healthy_sibling_means_no_wait_and_retry_after_is_honoured_up_to_a_minute() {
        let limited = ErrorClass::RateLimited {
            retry_after: Some(Duration::from_secs(3)),
        };
        assert_eq!(
            backoff(&limited, 0, &group(1, 2), Duration::ZERO, Duration::ZERO),
            Duration::ZERO
        );
        assert_eq!(
            backoff(
                &limited,
                0,
                &group(0, 1),
                Duration::from_millis(100),
                Duration::ZERO
            ),
            Duration::from_millis(3_100)
        );
        let too_long = ErrorClass::RateLimited {
            retry_after: Some(Duration::from_secs(120)),
        };
        assert_eq!(
            backoff(&too_long, 0, &group(0, 1), Duration::ZERO, Duration::ZERO),
            Duration::from_millis(500)
        );
    }

    #[test]
    fn the_should_retry_table_follows_litellm() {
        let two = group(1, 2);
        assert!(should_retry(&ErrorClass::ServerError { status: 500 }, &two));
        assert!(!should_retry(&ErrorClass::BadRequest { status: 400 }, &two));
        assert!(!should_retry(&ErrorClass::NotFound, &two));
        assert!(should_retry(&ErrorClass::Authentication, &two));
        assert!(!should_retry(&ErrorClass::Authentication, &group(1, 1)));
        assert!(!should_retry(
            &ErrorClass::ServerError { status: 500 },
            &group(0, 2)
        ));
        assert!(should_retry(&ErrorClass::Connection, &two));
    }
}
