//! The `Strategy` trait, its errors, and what the router reports back after a call.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ferrolite_cache::CacheError;
use ferrolite_types::{DeploymentId, ErrorClass, Usage};

use crate::{RouteContext, StrategyName, Target, UsageStore, UsageView};

/// What a successful call looked like, for the strategies that learn from it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CallOutcome {
    /// Time from sending the request to the end of the response.
    pub latency: Duration,
    /// Time to the first streamed chunk, for streaming calls.
    pub time_to_first_token: Option<Duration>,
    /// Token usage, when the provider reported it.
    pub usage: Option<Usage>,
}

/// One deployment's state in a [`NoCapacity`] error.
#[derive(Debug, Clone, PartialEq)]
pub struct CapacitySnapshot {
    /// The deployment.
    pub id: DeploymentId,
    /// Tokens in the window.
    pub current_tpm: f64,
    /// Its token limit.
    pub tpm_limit: Option<u64>,
    /// Requests in the window.
    pub current_rpm: f64,
    /// Its request limit.
    pub rpm_limit: Option<u64>,
}

/// No eligible deployment has room: each one's usage and limits, as LiteLLM's "No deployments
/// available for selected model ... Deployments={...}" lists them.
#[derive(Debug, Clone, PartialEq)]
pub struct NoCapacity {
    /// The group asked for.
    pub model_group: String,
    /// Tokens the request would add.
    pub input_tokens: u64,
    /// Every eligible deployment with its usage and limits.
    pub deployments: Vec<CapacitySnapshot>,
}

impl std::fmt::Display for NoCapacity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "No deployments available for selected model. Passed model={} (input tokens {}). Deployments={{",
            self.model_group, self.input_tokens
        )?;
        for (i, d) in self.deployments.iter().enumerate() {
            let limit = |l: Option<u64>| l.map_or_else(|| "none".to_string(), |l| l.to_string());
            write!(
                f,
                "{}{}: {{current_tpm: {}, tpm_limit: {}, current_rpm: {}, rpm_limit: {}}}",
                if i == 0 { "" } else { ", " },
                d.id,
                d.current_tpm,
                limit(d.tpm_limit),
                d.current_rpm,
                limit(d.rpm_limit)
            )?;
        }
        f.write_str("}")
    }
}

impl NoCapacity {
    /// The snapshot of `eligible` in `view`.
    pub fn of(ctx: &RouteContext<'_>, eligible: &[&Target], view: &UsageView<'_>) -> Self {
        NoCapacity {
            model_group: ctx.model_group.to_string(),
            input_tokens: ctx.input_tokens,
            deployments: eligible
                .iter()
                .map(|t| CapacitySnapshot {
                    id: t.id.clone(),
                    current_tpm: view.tpm(t.slot),
                    tpm_limit: t.tpm,
                    current_rpm: view.rpm(t.slot),
                    rpm_limit: t.rpm,
                })
                .collect(),
        }
    }
}

/// Why a strategy could not pick or admit.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StrategyError {
    /// Every eligible deployment is at a limit (or none was eligible).
    #[error("{0}")]
    NoCapacity(NoCapacity),
    /// The admission found the chosen deployment full (another request took the last slot).
    #[error("Deployment {id} over defined rpm limit={limit}, current usage={current}")]
    RateLimited {
        /// The deployment.
        id: DeploymentId,
        /// Its rpm limit.
        limit: u64,
        /// Requests in its window.
        current: f64,
    },
    /// An unknown strategy name.
    #[error("unknown routing strategy `{name}`; valid: {}", StrategyName::VALID.join(", "))]
    UnknownStrategy {
        /// The name given.
        name: String,
    },
    /// A `routing_strategy_args` value out of range.
    #[error("invalid routing_strategy_args.{field} = {value}: {reason}")]
    InvalidArgs {
        /// The argument.
        field: &'static str,
        /// The value given.
        value: String,
        /// What is accepted.
        reason: &'static str,
    },
    /// A request field out of range.
    #[error("invalid request {field} = {value}: {reason}")]
    InvalidRequest {
        /// The field.
        field: &'static str,
        /// The value given.
        value: String,
        /// What is accepted.
        reason: &'static str,
    },
    /// A target whose slot is not in the usage store (targets from another snapshot).
    #[error("deployment slot {slot} is not in this group's usage store")]
    UnknownSlot {
        /// The slot.
        slot: usize,
    },
    /// The usage state failed (Redis down in fail-closed mode, tracked-key bound reached...).
    #[error("usage state: {0}")]
    Cache(#[from] CacheError),
}

impl StrategyError {
    /// The error of a pick that found no room: every eligible deployment with its usage.
    pub fn no_capacity(ctx: &RouteContext<'_>, eligible: &[&Target], view: &UsageView<'_>) -> Self {
        StrategyError::NoCapacity(NoCapacity::of(ctx, eligible, view))
    }
}

/// A boxed future of an admission.
pub type AdmitFuture<'a> = Pin<Box<dyn Future<Output = Result<(), StrategyError>> + Send + 'a>>;

/// A routing algorithm: given the request and the deployments the router found eligible
/// (healthy, within budget, right tags and context window), pick one; then admit the call
/// against its limits; then learn from how the call went.
///
/// The hooks have default implementations that keep the shared [`UsageStore`] right (requests
/// counted at admission, tokens and in-flight counts at the end of a call); a strategy that
/// overrides one calls [`Strategy::usage`]'s recorders itself.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use ferrolite_cache::{CacheConfig, DualCache, Window};
/// use ferrolite_strategies::{RouteContext, Strategy, StrategyName, Target, UsageStore, build};
/// use ferrolite_types::Deployment;
///
/// let deployments = [Deployment::new("gpt-4o", "azure/a"), Deployment::new("gpt-4o", "openai/gpt-4o")];
/// let targets = Target::for_group(&deployments);
/// let cache = DualCache::connect(CacheConfig::default()).await?;
/// let usage = Arc::new(UsageStore::new(cache, "gpt-4o", &targets, Window::MINUTE_SLIDING)?);
/// let strategy = build(StrategyName::LeastBusy, &Default::default(), usage)?;
///
/// let ctx = RouteContext::new("gpt-4o");
/// let eligible: Vec<&Target> = targets.iter().collect();
/// let chosen = strategy.pick(&ctx, &eligible)?;
/// strategy.admit(chosen, &ctx).await?;
/// strategy.on_start(chosen, &ctx);
/// strategy.on_success(chosen, &ctx, &Default::default());
/// # Ok(()) }
/// ```
pub trait Strategy: Send + Sync {
    /// The strategy's name.
    fn name(&self) -> StrategyName;

    /// The usage state this strategy reads and records.
    fn usage(&self) -> &UsageStore;

    /// Picks one of `eligible`, or says why none can take the request.
    fn pick<'t>(
        &self,
        ctx: &RouteContext<'_>,
        eligible: &[&'t Target],
    ) -> Result<&'t Target, StrategyError>;

    /// Admits the call on `target`: counts the request in its window. usage-based-routing-v2
    /// checks the limit atomically here (in-process, or across instances in strict mode).
    fn admit<'a>(&'a self, target: &'a Target, _ctx: &'a RouteContext<'_>) -> AdmitFuture<'a> {
        Box::pin(async move { self.usage().count_request(target.slot) })
    }

    /// The call on `target` starts.
    fn on_start(&self, target: &Target, _ctx: &RouteContext<'_>) {
        log_state_error(self.usage().add_in_flight(target.slot, 1));
    }

    /// The call on `target` succeeded.
    fn on_success(&self, target: &Target, _ctx: &RouteContext<'_>, outcome: &CallOutcome) {
        record_end(self.usage(), target, outcome.usage.as_ref());
    }

    /// The call on `target` failed.
    fn on_failure(&self, target: &Target, _ctx: &RouteContext<'_>, _error: &ErrorClass) {
        record_end(self.usage(), target, None);
    }
}

// The router holds strategies as trait objects.
const _: Option<Arc<dyn Strategy>> = None;

/// The end of a call in the usage store: one fewer in flight, the tokens counted.
pub(crate) fn record_end(usage: &UsageStore, target: &Target, tokens: Option<&Usage>) {
    log_state_error(usage.add_in_flight(target.slot, -1));
    if let Some(u) = tokens {
        log_state_error(usage.record_tokens(target.slot, u.total_tokens));
    }
}

/// Hooks cannot fail the call they report on; a usage-state error is logged.
pub(crate) fn log_state_error(result: Result<(), StrategyError>) {
    if let Err(error) = result {
        tracing::warn!(%error, "could not record usage");
    }
}
