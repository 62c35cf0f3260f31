//! Events a router reports as calls go: to observers an application registers (its own metrics,
//! alerts, audit logs). `tracing` and the `metrics` facade get the same facts without one.

use std::time::Duration;

use ferrolite_types::{DeploymentId, ErrorClass};

/// Something that happened in a call.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event<'a> {
    /// A deployment is about to be called.
    Attempt {
        /// Its model group.
        model_group: &'a str,
        /// The deployment.
        deployment: &'a DeploymentId,
    },
    /// The call succeeded.
    Success {
        /// The deployment.
        deployment: &'a DeploymentId,
        /// How long the backend took.
        latency: Duration,
    },
    /// The call failed.
    Failure {
        /// The deployment.
        deployment: &'a DeploymentId,
        /// How.
        class: &'a ErrorClass,
    },
    /// A deployment was cooled down (it is picked again from `until_ms`, Unix ms; cooldowns end
    /// by time, so that is also when it is lifted).
    CooldownSet {
        /// The deployment.
        deployment: &'a DeploymentId,
        /// When the cooldown ends.
        until_ms: u64,
        /// The failure that caused it.
        class: &'a ErrorClass,
    },
    /// The request is retried.
    Retry {
        /// The group retried.
        model_group: &'a str,
        /// Retries so far in this request (this one included).
        retry: u32,
        /// The wait before it.
        wait: Duration,
    },
    /// The request falls back to another target.
    Fallback {
        /// The failed target.
        from: &'a str,
        /// The next one.
        to: &'a str,
    },
    /// A budget refused the request.
    BudgetRefused {
        /// The group.
        model_group: &'a str,
    },
    /// A request that asked for an explanation ([`crate::Request::explain`]) was routed,
    /// whether it was answered or failed: how.
    Explained {
        /// The request's route.
        route: &'a crate::Route,
    },
}

/// Receives a router's [`Event`]s. Called inline on the call path: keep it quick (count, send
/// to a channel), never block.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use ferrolite_router::{Event, Observer};
///
/// #[derive(Default)]
/// struct Cooldowns(AtomicU64);
///
/// impl Observer for Cooldowns {
///     fn on_event(&self, event: &Event<'_>) {
///         if matches!(event, Event::CooldownSet { .. }) {
///             self.0.fetch_add(1, Ordering::Relaxed);
///         }
///     }
/// }
/// ```
pub trait Observer: Send + Sync {
    /// One event.
    fn on_event(&self, event: &Event<'_>);
}

// Routers hold observers as trait objects.
const _: Option<std::sync::Arc<dyn Observer>> = None;
