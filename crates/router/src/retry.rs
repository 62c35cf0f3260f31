//! Whether a failed attempt is retried (LiteLLM's `should_retry_this_error`), how long to wait
//! first ([`Decide`]), and the loop of attempts on one destination ([`Inner::with_retries`]).

use std::time::Duration;

use ferrolite_types::{DeploymentIx, ErrorClass};

use crate::attempt::Success;
use crate::call::{Call, Failure};
use crate::inner::Inner;
use crate::resolve::{Destination, members};
use crate::{Event, Request};

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
    /// Retries made on the destination so far.
    pub(crate) retry: u32,
    /// The destination's retry limit (see [`Decide::limit`]).
    pub(crate) limit: u32,
}

/// The retry decision for one destination of one request, shaped like tower's retry `Policy`:
/// one method says whether a failure is retried and after how long.
pub(crate) struct Decide<'a> {
    inner: &'a Inner,
    request: &'a Request,
    /// The destination's name (its retry policy is looked up by it).
    label: &'a str,
}

impl<'a> Decide<'a> {
    /// The decision for `request`'s attempts on the destination `label`.
    pub(crate) fn new(inner: &'a Inner, request: &'a Request, label: &'a str) -> Self {
        Decide {
            inner,
            request,
            label,
        }
    }

    /// The retries a retry policy allows for `class` (none for a request that asked for no
    /// retries).
    fn policy(&self, class: &ErrorClass) -> Option<u32> {
        (self.request.num_retries != Some(0))
            .then(|| self.inner.settings.retry_policy_for(self.label))
            .flatten()
            .and_then(|p| p.retries_for(class))
    }

    /// The retry limit after a failure of `class`: a retry policy's count for the class, else
    /// the limit `fixed` by an earlier failure, else the request's, the failed deployment's
    /// (`deployment_retries`), the router's.
    pub(crate) fn limit(
        &self,
        class: &ErrorClass,
        fixed: Option<u32>,
        deployment_retries: Option<u32>,
    ) -> u32 {
        self.policy(class).or(fixed).unwrap_or_else(|| {
            self.request
                .num_retries
                .or(deployment_retries)
                .unwrap_or(self.inner.settings.num_retries)
        })
    }

    /// How long to wait before retrying after `failure`, or `None` to stop: only a deployment's
    /// failure is retried, when a retry policy names its class or the should-retry table allows
    /// it, below the limit, and while the retry budget (when there is one) has a retry to spend.
    pub(crate) fn next(&self, failure: &Failure, state: &GroupState) -> Option<Duration> {
        let Failure::Backend {
            class, ix: Some(_), ..
        } = failure
        else {
            return None;
        };
        let allowed = self.policy(class).is_some() || should_retry(class, state);
        if !allowed || state.retry >= state.limit {
            return None;
        }
        if let Some(budget) = &self.inner.retry_budget {
            if !budget.withdraw(self.inner.now_ms()) {
                metrics::counter!("ferrolite_router_retry_budget_exhausted_total").increment(1);
                tracing::debug!(group = self.label, "retry budget spent; not retrying");
                return None;
            }
        }
        let settings = &self.inner.settings;
        let jitter = settings.retry_jitter.mul_f64(self.inner.rng.unit());
        Some(backoff(
            class,
            state.retry,
            state,
            jitter,
            settings.retry_after,
        ))
    }
}

impl Inner {
    /// Attempts on `destination` until one succeeds or the retry rules stop (LiteLLM's
    /// `async_function_with_retries`, [`Decide`]); a failure that says the deployment is wrong for
    /// the request skips it next time; no wait after the last attempt.
    pub(crate) async fn with_retries(
        &self,
        call: &mut Call<'_>,
        destination: &Destination,
    ) -> Result<Success, Failure> {
        let decide = Decide::new(self, call.request, destination.label());
        let mut skip: Vec<DeploymentIx> = Vec::new();
        let mut limit: Option<u32> = None;
        let mut retry = 0u32;
        loop {
            let failure = match self.attempt(call, destination, &skip).await {
                Ok(success) => {
                    // LiteLLM's headers count the retries of the group that answered.
                    call.answered_retries = (retry, limit.filter(|_| retry > 0));
                    return Ok(success);
                }
                Err(failure) => failure,
            };
            // Selection, deadline and state failures are not retried, nor a failure no
            // deployment caused.
            let Failure::Backend {
                class,
                ix: Some(ix),
                ..
            } = &failure
            else {
                return Err(failure);
            };
            let deployment_retries = call.snapshot.deployment(*ix).and_then(|d| d.num_retries);
            let fixed = decide.limit(class, limit, deployment_retries);
            limit = Some(fixed);
            let state = self.group_state(call, destination, retry, fixed);
            let Some(wait) = decide.next(&failure, &state) else {
                return Err(failure);
            };
            if class.skips_failed_deployment() && !skip.contains(ix) {
                skip.push(*ix);
            }
            self.wait(call, wait).await?;
            call.explain(|r| r.waited(wait));
            call.waited_ms = u32::try_from(wait.as_millis()).unwrap_or(u32::MAX);
            retry += 1;
            call.retries += 1;
            self.emit(Event::Retry {
                model_group: destination.label(),
                retry: call.retries,
                wait,
            });
            metrics::counter!("ferrolite_router_retries_total").increment(1);
        }
    }

    /// Healthy and total deployments of the destination now, which chains it has, and its
    /// retries so far against `limit`.
    fn group_state(
        &self,
        call: &Call<'_>,
        destination: &Destination,
        retry: u32,
        limit: u32,
    ) -> GroupState {
        let settings = &self.settings;
        let snapshot = &call.snapshot;
        let now = self.now_ms();
        let (mut healthy, mut all) = (0, 0);
        for ix in members(snapshot, destination) {
            all += 1;
            if snapshot
                .health
                .get(ix)
                .is_some_and(|h| !h.cooldown.is_active(now))
            {
                healthy += 1;
            }
        }
        GroupState {
            healthy,
            all,
            has_fallbacks: self.has_fallbacks(destination.label()),
            context_window_fallbacks: !settings.context_window_fallbacks.is_empty(),
            content_policy_fallbacks: !settings.content_policy_fallbacks.is_empty(),
            retry,
            limit,
        }
    }

    /// Waits `wait` before a retry, unless the request's deadline would pass first.
    async fn wait(&self, call: &mut Call<'_>, wait: Duration) -> Result<(), Failure> {
        if wait.is_zero() {
            return Ok(());
        }
        if let Some(deadline) = call.past_deadline(wait) {
            return Err(deadline);
        }
        sleep(wait).await;
        call.outside += wait;
        Ok(())
    }
}

/// The one place the router waits (retry backoff).
#[allow(clippy::disallowed_methods)]
async fn sleep(wait: Duration) {
    tokio::time::sleep(wait).await;
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
            retry: 0,
            limit: 0,
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
