//! The `Strategy` trait, its errors, and what the router reports back after a call.

use std::sync::Arc;
use std::time::Duration;

use ferrolite_cache::CacheError;
use ferrolite_types::{DeploymentId, DeploymentIx, ErrorClass, Usage};

use crate::{Candidates, Pool, RouteContext, StrategyName, Target, Targets, UsageView};

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

/// How a call ended, for the strategies that learn from it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome<'a> {
    /// It succeeded.
    Success(&'a CallOutcome),
    /// It failed with this class of error.
    Failure(&'a ErrorClass),
}

/// What a strategy ranks a deployment by for one request ([`Strategy::score`]), as an
/// explanation of a pick shows it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// What is measured (`in_flight`, `tpm`, `cost_per_token`, `latency`, `ttft`, `load`).
    pub name: &'static str,
    /// Its value for the deployment now.
    pub value: f64,
    /// Whether the strategy prefers a lower value (every scoring strategy here does).
    pub lower_is_better: bool,
}

impl Score {
    /// A score where lower wins.
    pub fn lower(name: &'static str, value: f64) -> Self {
        Score {
            name,
            value,
            lower_is_better: true,
        }
    }
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
    /// Tokens the request would add (input + `max_tokens`).
    pub tokens: u64,
    /// Every eligible deployment with its usage and limits.
    pub deployments: Vec<CapacitySnapshot>,
}

impl std::fmt::Display for NoCapacity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "No deployments available for selected model. Passed model={} (tokens {}). Deployments={{",
            self.model_group, self.tokens
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
    pub fn of(ctx: &RouteContext<'_>, eligible: Candidates<'_, '_>, view: &UsageView<'_>) -> Self {
        NoCapacity {
            model_group: ctx.model_group.to_string(),
            tokens: ctx.estimated_tokens(),
            deployments: eligible
                .iter()
                .map(|t| CapacitySnapshot {
                    id: t.id.clone(),
                    current_tpm: view.tpm(t.ix),
                    tpm_limit: t.tpm,
                    current_rpm: view.rpm(t.ix),
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
    #[error("Deployment {id} over defined {metric} limit={limit}, current usage={current}")]
    RateLimited {
        /// The deployment.
        id: DeploymentId,
        /// `rpm` or `tpm`.
        metric: &'static str,
        /// That limit.
        limit: u64,
        /// Its count in the window before this call.
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
    /// A deployment index of another snapshot (a stale target).
    #[error("deployment index {ix} does not belong to this snapshot")]
    UnknownDeployment {
        /// The index.
        ix: DeploymentIx,
    },
    /// The deployment list could not be indexed (two deployments with one id).
    #[error("{0}")]
    Deployments(#[from] ferrolite_types::TypesError),
    /// The usage state failed (Redis down in fail-closed mode, tracked-key bound reached...).
    #[error("usage state: {0}")]
    Cache(#[from] CacheError),
}

impl StrategyError {
    /// The error of a pick that found no room: every eligible deployment with its usage.
    pub fn no_capacity(
        ctx: &RouteContext<'_>,
        eligible: Candidates<'_, '_>,
        view: &UsageView<'_>,
    ) -> Self {
        StrategyError::NoCapacity(NoCapacity::of(ctx, eligible, view))
    }
}

/// A routing algorithm with one job: given the request and the deployments the router found
/// eligible (healthy, within budget, right tags and context window) as [`Candidates`] — a
/// [`crate::Pool`] prepared per snapshot, less what the filters left out — pick one, reading
/// usage from the one [`UsageView`] the router took for this request. Admission and in-flight
/// accounting are the router's ([`crate::UsageStore::admit`] and its [`crate::Permit`]);
/// strategies that learn from outcomes do so through [`Strategy::observe`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use ferrolite_cache::{CacheConfig, DualCache, Window};
/// use ferrolite_strategies::{
///     AdmissionMode, CallOutcome, Candidates, Outcome, Pool, RouteContext, StrategyConfig,
///     StrategyName, Targets, UsageStore, build,
/// };
/// use ferrolite_types::Deployment;
///
/// let deployments = [Deployment::new("gpt-4o", "azure/a"), Deployment::new("gpt-4o", "openai/gpt-4o")];
/// let targets = Targets::new(&deployments)?;
/// let cache = DualCache::connect(CacheConfig::default()).await?;
/// let usage = UsageStore::new(cache.clone(), &targets, Window::MINUTE_SLIDING, AdmissionMode::Batched)?;
/// let strategy = build(StrategyName::LeastBusy, &StrategyConfig::default(), &targets, cache.clock().clone())?;
///
/// // Once per snapshot: the group's pool (members, running weights, cost levels).
/// let pool = Pool::new(&targets, targets.group("gpt-4o").map(|t| t.ix));
/// let ctx = RouteContext::new("gpt-4o");
/// let chosen = strategy.pick(&ctx, Candidates::new(&targets, &pool), &usage.view())?;
/// let permit = usage.admit(chosen, ctx.estimated_tokens()).await?; // in flight until dropped
/// strategy.observe(chosen, &Outcome::Success(&CallOutcome::default()));
/// drop(permit);
/// # Ok(()) }
/// ```
pub trait Strategy: Send + Sync {
    /// The strategy's name.
    fn name(&self) -> StrategyName;

    /// Picks one of `eligible`, or says why none can take the request.
    fn pick<'t>(
        &self,
        ctx: &RouteContext<'_>,
        eligible: Candidates<'t, '_>,
        usage: &UsageView<'_>,
    ) -> Result<&'t Target, StrategyError>;

    /// Learns from how a call on `target` ended (latency samples, EWMAs). Most strategies
    /// learn nothing.
    fn observe(&self, _target: &Target, _outcome: &Outcome<'_>) {}

    /// The same strategy for a new snapshot of the deployment list, keeping what it learned of
    /// the deployments still present (by id).
    fn for_snapshot(&self, targets: &Targets) -> Arc<dyn Strategy>;

    /// Prepares what picks over `pool` read (latency-based's score tree, which the pool then
    /// keeps), so that the first pick does not build it. A router calls it for each pool of a
    /// snapshot as it builds the snapshot; without it, the first pick over the pool prepares
    /// it. Most strategies prepare nothing.
    fn prepare(&self, _pool: &Pool) {}

    /// What the strategy ranks `target` by for the request `ctx` in `usage`, for explaining a
    /// pick (never called on a pick's own path). A strategy that does not rank (a random
    /// draw) reports none, which is the default.
    fn score(
        &self,
        _ctx: &RouteContext<'_>,
        _target: &Target,
        _usage: &UsageView<'_>,
    ) -> Option<Score> {
        None
    }
}

// The router holds strategies as trait objects.
const _: Option<Arc<dyn Strategy>> = None;

/// Reads `Duration` for the docs of [`CallOutcome`].
const _: Duration = Duration::ZERO;
