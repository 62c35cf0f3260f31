//! The `Router` and the call path, top to bottom, one named function per step:
//!
//! ```text
//! call                 validate the request, take the snapshot, resolve the model
//!   with_fallbacks     the group, then its fallback chain (context-window, content-policy or
//!                      generic, max_fallbacks, no target twice); the primary's error if all fail
//!     order_levels     the group's `order` tiers, lowest first, each with its own retries
//!       with_retries   attempts until one succeeds or the retry rules say stop; backoff between
//!         attempt      filter -> pick -> admit -> reserve -> call_deployment
//!           filter     cooldown (watched deadlines, no Redis round trip), budgets, retry-skip
//!           pick       the strategy, on one usage view
//!           admit      rpm + tpm (Permit), then the budget reservation (a refusal gives both back)
//!           call_deployment   the backend under the attempt timeout, then record: tokens,
//!                      cost (settle), latency (observe), success count — or, on failure,
//!                      release, observe, count, and decide the cooldown
//! ```

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use ferrolite_budgets::BudgetError;
use ferrolite_cache::DualCache;
use ferrolite_strategies::{
    CallOutcome, Outcome, Permit, Rng, RouteContext, StrategyError, Target,
};
use ferrolite_types::{Deployment, DeploymentId, DeploymentIx, ErrorClass};
use parking_lot::Mutex;
use tokio::time::Instant;

use futures_util::StreamExt;

use crate::backend::{Backend, BackendChunk, BackendError, BackendRequest, BackendStream};
use crate::cooldown;
use crate::queue::WaitQueue;
use crate::response_cache::{Controls, Identity, Recall, Remembered, ResponseCache, assemble};
use crate::retry::{self, GroupState};
use crate::retry_budget::RetryBudget;
use crate::snapshot::{LocalSlot, Snapshot};
use crate::{Event, Observer, Request, RouterError, RouterResponse, RouterSettings, Tried};

/// Routes calls to the deployments of model groups (see the crate documentation).
///
/// Cloning is cheap: clones share one router.
#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

struct Inner {
    settings: RouterSettings,
    cache: DualCache,
    backend: Arc<dyn Backend>,
    snapshot: ArcSwap<Snapshot>,
    /// One snapshot rebuild at a time (calls never take it).
    writer: Mutex<()>,
    /// Backoff jitter.
    rng: Rng,
    retry_budget: Option<RetryBudget>,
    queue: Option<WaitQueue>,
    /// The response cache (`cache_responses`), when on.
    responses: Option<ResponseCache>,
    observers: parking_lot::RwLock<Vec<Arc<dyn Observer>>>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("groups", &self.model_groups())
            .finish_non_exhaustive()
    }
}

/// Where a request (or a fallback hop) goes.
#[derive(Debug, Clone, PartialEq)]
enum Scope {
    /// A model group, optionally one `order` tier of it.
    Group { name: String, order: Option<u32> },
    /// One deployment, named by id (cooldowns do not apply: LiteLLM serves an id target even
    /// while it cools down).
    Deployment { ix: DeploymentIx, id: String },
    /// The deployments whose `litellm_params.model` is the name asked for (resolution step 7),
    /// whatever their groups.
    Model {
        name: String,
        members: Vec<DeploymentIx>,
    },
}

impl Scope {
    /// The name fallback chains and retry policies are looked up by.
    fn label(&self) -> &str {
        match self {
            Scope::Group { name, .. } | Scope::Model { name, .. } => name,
            Scope::Deployment { id, .. } => id,
        }
    }
}

/// A call's running state across attempts, retries and fallbacks.
struct Call<'r> {
    request: &'r Request,
    /// The budget scopes of the call: its tags and its extra budget tags.
    budget_tags: Vec<String>,
    input_tokens: u64,
    started: Instant,
    deadline: Option<(Instant, Duration)>,
    attempts: u32,
    retries: u32,
    /// The retries of the group (or tier) that answered, and its retry limit when it retried.
    answered_retries: (u32, Option<u32>),
    fallbacks: u32,
    attempted: HashSet<String>,
    tried: Vec<Tried>,
    /// Time spent in backends and backoffs (the rest is the router's overhead).
    outside: Duration,
}

/// A successful attempt.
struct Success {
    answer: Answer,
    deployment: DeploymentId,
    model_group: String,
}

/// What a successful attempt answered.
enum Answer {
    /// A whole response, recorded already.
    Complete {
        body: serde_json::Value,
        usage: Option<ferrolite_types::Usage>,
        cost: Option<f64>,
    },
    /// A stream's first chunk and the rest, recorded when it ends.
    Stream {
        first: BackendChunk,
        tail: Box<Tail>,
    },
}

/// What a routed call's success says besides its answer.
struct Summary {
    /// Retries in the group that answered, and its limit when it retried.
    retries: (u32, Option<u32>),
    fallbacks: u32,
    /// The answering deployment's `api_base`.
    api_base: Option<String>,
    /// The router's own time (to the first chunk, for a stream).
    overhead: Duration,
}

/// Why a scope failed.
enum Failure {
    /// The backend failed.
    Backend {
        model_group: String,
        /// The deployment that failed; `None` when no deployment was called (the context
        /// window check found none large enough).
        ix: Option<DeploymentIx>,
        deployment: DeploymentId,
        class: ErrorClass,
        message: String,
    },
    /// Nothing could be picked or admitted (all cooled, no capacity, over budget).
    Selection(RouterError),
    /// The request's own deadline passed: nothing more is tried.
    Deadline(RouterError),
    /// The router's state failed.
    Other(RouterError),
}

impl Failure {
    fn class(&self) -> Option<&ErrorClass> {
        match self {
            Failure::Backend { class, .. } => Some(class),
            _ => None,
        }
    }
}

impl Router {
    /// A router over `deployments` with `settings`, keeping its shared state in `cache` and
    /// calling deployments through `backend`. Every deployment and setting is checked: a bad
    /// one is a typed error naming it.
    pub fn new(
        deployments: Vec<Deployment>,
        settings: RouterSettings,
        cache: DualCache,
        backend: Arc<dyn Backend>,
    ) -> Result<Self, RouterError> {
        let snapshot = Snapshot::build(&cache, &settings, deployments, None)?;
        let rng = settings
            .strategy
            .seed
            .map_or_else(Rng::from_entropy, |s| Rng::seeded(s ^ 0x6a09_e667));
        let settings_budget = settings.retry_budget.map(RetryBudget::new);
        let queue = settings.wait_queue;
        let responses = settings
            .response_cache
            .clone()
            .map(|r| ResponseCache::new(r, cache.clone()));
        Ok(Router {
            inner: Arc::new(Inner {
                settings,
                cache,
                backend,
                snapshot: ArcSwap::from_pointee(snapshot),
                writer: Mutex::new(()),
                rng,
                retry_budget: settings_budget,
                queue: queue.map(WaitQueue::new),
                responses,
                observers: parking_lot::RwLock::new(Vec::new()),
            }),
        })
    }

    /// The model groups served, sorted.
    pub fn model_groups(&self) -> Vec<String> {
        self.inner.snapshot.load().group_names()
    }

    /// The deployments, in order.
    pub fn deployments(&self) -> Vec<Deployment> {
        self.inner.snapshot.load().deployments.clone()
    }

    /// The router's settings.
    pub fn settings(&self) -> &RouterSettings {
        &self.inner.settings
    }

    /// The state cache.
    pub fn cache(&self) -> &DualCache {
        &self.inner.cache
    }

    /// Registers an observer of this router's events.
    pub fn add_observer(&self, observer: Arc<dyn Observer>) {
        self.inner.observers.write().push(observer);
    }

    fn emit(&self, event: Event<'_>) {
        for observer in self.inner.observers.read().iter() {
            observer.on_event(&event);
        }
    }

    /// Calls in flight on the deployment `id` (shared across instances), if it is routed to.
    pub fn in_flight(&self, id: &DeploymentId) -> Option<u64> {
        let snapshot = self.inner.snapshot.load();
        let target = snapshot.targets.by_id(id)?;
        Some(snapshot.usage.view().in_flight(target.ix))
    }

    /// Requests and tokens in the deployment's current window.
    pub fn usage(&self, id: &DeploymentId) -> Option<(f64, f64)> {
        let snapshot = self.inner.snapshot.load();
        let target = snapshot.targets.by_id(id)?;
        let view = snapshot.usage.view();
        Some((view.rpm(target.ix), view.tpm(target.ix)))
    }

    /// Until when (Unix ms) the deployment `id` is cooled down, if it is now.
    pub fn cooled_until(&self, id: &DeploymentId) -> Option<u64> {
        let snapshot = self.inner.snapshot.load();
        let target = snapshot.targets.by_id(id)?;
        let now = self.inner.cache.clock().now_ms();
        snapshot
            .health
            .get(target.ix)?
            .cooldown
            .until_ms()
            .filter(|until| *until > now)
    }

    /// Every budget's spend, limit and window (LiteLLM's `/provider/budgets`).
    pub async fn budget_status(&self) -> Result<Vec<ferrolite_budgets::ScopeStatus>, RouterError> {
        let snapshot = self.inner.snapshot.load_full();
        Ok(snapshot.ledger.status().await?)
    }

    /// Runs every deployment's [`Backend::health_check`] at once (each under the router's
    /// timeout) and records the results in the shared state, so every instance's health-check
    /// routing sees them (reference §2.17). Call it on an interval (LiteLLM's proxy: every
    /// 300 s); the gateway does. Returns each deployment's result.
    pub async fn check_health(&self) -> Vec<(DeploymentId, Result<(), BackendError>)> {
        let snapshot = self.inner.snapshot.load_full();
        let timeout = self.inner.settings.timeout;
        let checks = snapshot.targets.iter().filter_map(|target| {
            let deployment = snapshot.deployment(target.ix)?;
            let backend = &self.inner.backend;
            Some(async move {
                let result =
                    match tokio::time::timeout(timeout, backend.health_check(deployment)).await {
                        Ok(result) => result,
                        Err(_) => Err(BackendError::new(
                            ErrorClass::Timeout,
                            format!("no answer to the health check within {timeout:?}"),
                        )),
                    };
                (target, result)
            })
        });
        let results = futures_util::future::join_all(checks).await;
        let settings = &self.inner.settings;
        let stale_at =
            self.inner.cache.clock().now_ms() + settings.health_check_staleness.as_millis() as u64;
        let mut report = Vec::with_capacity(results.len());
        for (target, result) in results {
            if let Some(checks) = snapshot
                .health
                .get(target.ix)
                .and_then(|h| h.checks.as_ref())
            {
                let transient = matches!(
                    &result,
                    Err(e) if matches!(e.class, ErrorClass::RateLimited { .. } | ErrorClass::Timeout)
                );
                let mark = match &result {
                    Ok(()) => Some(&checks.passed),
                    Err(_) if transient && settings.health_check_ignore_transient_errors => None,
                    Err(_) => Some(&checks.failed),
                };
                if let Some(mark) = mark {
                    if let Err(e) = mark.extend_to(stale_at).await {
                        tracing::warn!(deployment = %target.id, error = %e, "could not record a health check");
                    }
                }
            }
            if let Err(e) = &result {
                tracing::info!(deployment = %target.id, class = ?e.class, "health check failed");
            }
            report.push((target.id.clone(), result));
        }
        report
    }

    /// Adds a deployment (or replaces the one with its id): a new snapshot is swapped in; calls
    /// in flight finish on the old one; unchanged deployments keep their state.
    pub fn upsert(&self, deployment: Deployment) -> Result<(), RouterError> {
        let id = deployment.id();
        self.rebuild(|list, position| match position(&id) {
            Some(i) => list[i] = deployment,
            None => list.push(deployment),
        })
    }

    /// Removes the deployment with `id`; whether there was one.
    pub fn remove(&self, id: &DeploymentId) -> Result<bool, RouterError> {
        let mut removed = false;
        self.rebuild(|list, position| {
            if let Some(i) = position(id) {
                list.remove(i);
                removed = true;
            }
        })?;
        Ok(removed)
    }

    /// Builds and swaps in the next snapshot: `change` edits the current list, finding a
    /// deployment's position by id through the current snapshot's index.
    fn rebuild(
        &self,
        change: impl FnOnce(&mut Vec<Deployment>, &dyn Fn(&DeploymentId) -> Option<usize>),
    ) -> Result<(), RouterError> {
        let _one_writer = self.inner.writer.lock();
        let current = self.inner.snapshot.load_full();
        let mut list = current.deployments.clone();
        let index = current.targets.index();
        change(&mut list, &|id| index.ix(id).map(|ix| ix.index()));
        let next = Snapshot::build(
            &self.inner.cache,
            &self.inner.settings,
            list,
            Some(&current),
        )?;
        self.inner.snapshot.store(Arc::new(next));
        Ok(())
    }

    // ---- the call path ------------------------------------------------------------------

    /// The same router with its response cache's answers kept in `store` (and its Redis)
    /// instead of the state cache: for a response cache whose Redis is not the routing state's
    /// (LiteLLM's `cache_params` host beside `router_settings.redis_url`). Call it right after
    /// [`Router::new`], before the router is cloned or called; a router without a response
    /// cache is returned unchanged.
    pub fn with_response_cache_store(mut self, store: DualCache) -> Result<Self, RouterError> {
        let Some(inner) = Arc::get_mut(&mut self.inner) else {
            return Err(RouterError::InvalidSettings {
                field: "response_cache".into(),
                value: "a separate store".into(),
                reason: "must be given before the router is cloned",
            });
        };
        if let Some(settings) = &inner.settings.response_cache {
            inner.responses = Some(ResponseCache::new(settings.clone(), store));
        }
        Ok(self)
    }

    /// The response cache's memory tier: entries and their weight in bytes; `None` when the
    /// response cache is off.
    pub fn response_cache_usage(&self) -> Option<(u64, u64)> {
        self.inner
            .responses
            .as_ref()
            .map(ResponseCache::memory_usage)
    }

    /// The response cache's key for `request` (as `x-litellm-cache-key` shows it); `None` when
    /// the response cache is off. A malformed `cache` object is the error a call would give.
    pub fn response_cache_key(&self, request: &Request) -> Result<Option<String>, RouterError> {
        let Some(responses) = &self.inner.responses else {
            return Ok(None);
        };
        let controls = Controls::of(&request.body)?;
        let model = self.cache_group(request);
        Ok(Some(responses.key(
            model,
            &request.body,
            controls.namespace.as_deref(),
        )))
    }

    /// Whether this router serves `model` now (a group, alias, deployment id or wildcard), so
    /// a cached answer never outlives its group's removal: a group is one map lookup.
    fn serves(&self, model: &str) -> Result<(), RouterError> {
        let snapshot = self.inner.snapshot.load();
        if snapshot.groups.contains_key(model) {
            return Ok(());
        }
        resolve(&snapshot, &self.inner.settings, model).map(drop)
    }

    /// The group a request's cached answers belong to: its alias target, else what it named.
    fn cache_group<'r>(&'r self, request: &'r Request) -> &'r str {
        self.inner
            .settings
            .model_group_alias
            .get(&request.model)
            .unwrap_or(&request.model)
    }

    /// The tokens `request` counts against a tpm limit, as the router counts them for a
    /// deployment's tpm: its input tokens (counted here once, and kept in
    /// `request.input_tokens`) plus `n` x its `max_tokens` (else the largest `max_tokens` the
    /// deployments it resolves to send by default). Checks the request's fields first, as a
    /// call would: a token figure out of range (not a positive integer, above the output limit
    /// of every deployment the request resolves to) is an [`RouterError::InvalidRequest`]
    /// naming the field. A gateway uses it to hold an API key's tpm with the same count.
    /// A model that does not resolve is not an error here (the call reports it).
    pub fn token_estimate(&self, request: &mut Request) -> Result<u64, RouterError> {
        request.validate()?;
        let input = request.input_tokens();
        request.input_tokens = Some(input);
        let snapshot = self.inner.snapshot.load();
        let Ok(scope) = resolve(&snapshot, &self.inner.settings, &request.model) else {
            return Ok(input.saturating_add(request.output_tokens(None)));
        };
        check_output_limit(&snapshot, &scope, request)?;
        let default = members(&snapshot, &scope)
            .filter_map(|ix| default_max_tokens(snapshot.deployment(ix)))
            .max();
        Ok(input.saturating_add(request.output_tokens(default)))
    }

    /// Routes one call: resolves `request.model`, picks and calls a deployment, retries, cools
    /// down and falls back as the settings say. A streamed call goes through [`Router::stream`].
    pub async fn call(&self, request: Request) -> Result<RouterResponse, RouterError> {
        let streamed = || RouterError::InvalidRequest {
            field: "stream",
            value: "true".into(),
            reason: "a streamed call goes through Router::stream",
        };
        if request.stream {
            return Err(streamed());
        }
        let Some(responses) = &self.inner.responses else {
            return self.call_routed(&request).await;
        };
        request.validate()?;
        self.serves(&request.model)?;
        let controls = Controls::of(&request.body)?;
        if responses.bypassed(&controls) {
            return self.call_routed(&request).await;
        }
        let recall = responses.recall(self.cache_group(&request), &request.body, &controls);
        let deadline = request.deadline.or(self.inner.settings.request_deadline);
        // Boxed: the cached path's future stays out of the uncached call's.
        Box::pin(responses.serve(recall, &controls, deadline, || self.call_routed(&request))).await
    }

    /// [`Router::call`] past the response cache.
    async fn call_routed(&self, request: &Request) -> Result<RouterResponse, RouterError> {
        let (success, summary) = self.route(request).await?;
        let Answer::Complete { body, usage, cost } = success.answer else {
            return Err(RouterError::InvalidRequest {
                field: "stream",
                value: "true".into(),
                reason: "a streamed call goes through Router::stream",
            });
        };
        Ok(RouterResponse {
            body,
            usage,
            deployment_id: success.deployment,
            model_group: success.model_group,
            attempted_retries: summary.retries.0,
            max_retries: summary.retries.1,
            attempted_fallbacks: summary.fallbacks,
            api_base: summary.api_base,
            response_cost: cost,
            overhead: summary.overhead,
            cache_hit: false,
            cache_key: None,
        })
    }

    /// Routes one streamed call: the same path as [`Router::call`], where an attempt succeeds
    /// when its first chunk arrives within the stream timeout (time to first token). A stream
    /// that fails before its first chunk is retried and falls back like a call. Once chunks
    /// flow the caller has content, so a later failure ends the stream with the error (the
    /// deployment's failure still counts towards its cooldown); nothing is replayed elsewhere.
    /// The usage and cost are recorded when the stream ends; dropping the stream early gives
    /// back everything the call holds (in-flight count, concurrency slot) and settles its budget
    /// reservation to what the provider generated so far (its usage, if reported, else the
    /// input and the streamed text at about four characters a token).
    pub async fn stream(&self, mut request: Request) -> Result<RouterStream, RouterError> {
        request.stream = true;
        let cached = match &self.inner.responses {
            Some(responses) => {
                let started = Instant::now();
                request.validate()?;
                self.serves(&request.model)?;
                let controls = Controls::of(&request.body)?;
                if responses.bypassed(&controls) {
                    return self.stream_routed(&request).await;
                }
                let id =
                    match responses.recall(self.cache_group(&request), &request.body, &controls) {
                        Recall::Hit(remembered) => {
                            metrics::counter!("ferrolite_response_cache_hits_total").increment(1);
                            return Ok(RouterStream::replay(&remembered, started));
                        }
                        Recall::Miss(id) => id,
                    };
                if !controls.no_cache {
                    if let Some(remembered) = responses.lookup(&id, &controls).await {
                        metrics::counter!("ferrolite_response_cache_hits_total").increment(1);
                        return Ok(RouterStream::replay(&remembered, started));
                    }
                }
                metrics::counter!("ferrolite_response_cache_misses_total").increment(1);
                Some((id, controls))
            }
            None => None,
        };
        let mut stream = self.stream_routed(&request).await?;
        if let Some((id, controls)) = cached {
            stream.cache_key = Some(id.key.clone());
            if !controls.no_store {
                stream.record(self.clone(), id, controls);
            }
        }
        Ok(stream)
    }

    /// [`Router::stream`] past the response cache.
    async fn stream_routed(&self, request: &Request) -> Result<RouterStream, RouterError> {
        let (success, summary) = self.route(request).await?;
        let Answer::Stream { first, tail } = success.answer else {
            return Err(RouterError::InvalidRequest {
                field: "stream",
                value: "false".into(),
                reason: "the backend answered a streamed call with a whole response",
            });
        };
        let mut stream = RouterStream::new(
            success.deployment,
            success.model_group,
            summary.retries.0,
            summary.fallbacks,
            summary.overhead,
            first,
            tail,
        );
        stream.max_retries = summary.retries.1;
        stream.api_base = summary.api_base;
        Ok(stream)
    }

    /// The call path shared by [`Router::call`] and [`Router::stream`].
    async fn route(&self, request: &Request) -> Result<(Success, Summary), RouterError> {
        request.validate()?;
        let started = Instant::now();
        let snapshot = self.inner.snapshot.load_full();
        let scope = resolve(&snapshot, &self.inner.settings, &request.model)?;
        check_output_limit(&snapshot, &scope, request)?;
        let deadline = request
            .deadline
            .or(self.inner.settings.request_deadline)
            .map(|d| (started + d, d));
        let budget_tags = if request.budget_tags.is_empty() {
            request.tags.clone()
        } else {
            request
                .tags
                .iter()
                .chain(&request.budget_tags)
                .cloned()
                .collect()
        };
        let mut call = Call {
            input_tokens: request.input_tokens(),
            budget_tags,
            request,
            started,
            deadline,
            attempts: 0,
            retries: 0,
            answered_retries: (0, None),
            fallbacks: 0,
            attempted: HashSet::from([scope.label().to_string()]),
            tried: Vec::new(),
            outside: Duration::ZERO,
        };
        metrics::counter!("ferrolite_router_requests_total").increment(1);
        let primary = scope.label().to_string();
        match self
            .with_fallbacks(&snapshot, &mut call, scope, &request.model)
            .await
        {
            Ok(success) => {
                let overhead = call.started.elapsed().saturating_sub(call.outside);
                let api_base = snapshot
                    .targets
                    .by_id(&success.deployment)
                    .and_then(|t| snapshot.deployment(t.ix))
                    .and_then(|d| d.api_base.clone());
                metrics::histogram!("ferrolite_router_overhead_seconds")
                    .record(overhead.as_secs_f64());
                Ok((
                    success,
                    Summary {
                        retries: call.answered_retries,
                        fallbacks: call.fallbacks,
                        api_base,
                        overhead,
                    },
                ))
            }
            Err(failure) => {
                metrics::counter!("ferrolite_router_failures_total").increment(1);
                Err(match failure {
                    Failure::Backend {
                        model_group,
                        deployment,
                        class,
                        message,
                        ..
                    } => RouterError::Backend {
                        model_group: if model_group.is_empty() {
                            primary
                        } else {
                            model_group
                        },
                        deployment,
                        class,
                        message,
                        tried: call.tried,
                    },
                    Failure::Selection(e) | Failure::Deadline(e) | Failure::Other(e) => e,
                })
            }
        }
    }

    /// The scope, then its fallback chain (looked up by the scope's name, then by the name
    /// `asked` for, e.g. a model served through a wildcard group); the scope's own error when
    /// every target fails. A target already tried in this request is skipped: a group named
    /// twice, the failed group itself, or a deployment id already called.
    async fn with_fallbacks(
        &self,
        snapshot: &Arc<Snapshot>,
        call: &mut Call<'_>,
        scope: Scope,
        asked: &str,
    ) -> Result<Success, Failure> {
        let failure = match self.order_levels(snapshot, call, &scope).await {
            Ok(success) => return Ok(success),
            Err(failure) => failure,
        };
        if call.request.disable_fallbacks
            || matches!(failure, Failure::Deadline(_) | Failure::Other(_))
        {
            return Err(failure);
        }
        // The caller's own list for the requested group; else the configured chains.
        let chain = if call.fallbacks == 0 && !call.request.fallbacks.is_empty() {
            call.request.fallbacks.clone()
        } else {
            self.fallback_chain(&[scope.label(), asked], failure.class())
        };
        for target in chain {
            if call.fallbacks >= self.inner.settings.max_fallbacks {
                break;
            }
            if !call.attempted.insert(target.clone()) {
                continue; // no target twice in one request
            }
            let Ok(next) = resolve(snapshot, &self.inner.settings, &target) else {
                continue;
            };
            if let Scope::Deployment { id, .. } = &next {
                if call.tried.iter().any(|t| t.deployment.as_str() == id) {
                    continue; // a deployment that already failed this request is not its own fallback
                }
            }
            call.fallbacks += 1;
            metrics::counter!("ferrolite_router_fallbacks_total").increment(1);
            self.emit(Event::Fallback {
                from: scope.label(),
                to: &target,
            });
            tracing::debug!(from = scope.label(), to = %target, "falling back");
            match Box::pin(self.with_fallbacks(snapshot, call, next, &target)).await {
                Ok(success) => return Ok(success),
                Err(deadline @ Failure::Deadline(_)) => return Err(deadline),
                Err(_) => continue,
            }
        }
        Err(failure)
    }

    /// The fallback targets for a failure of a scope known by `names` (its own name first,
    /// then the name the request asked for): the first name with an entry wins, as in
    /// LiteLLM's `get_fallback_model_group`. A context-window or content-policy error takes its
    /// own chain when such chains are configured (and does not go on to the generic one);
    /// everything else takes `fallbacks`, else the `"*"` entry / `default_fallbacks`.
    fn fallback_chain(&self, names: &[&str], class: Option<&ErrorClass>) -> Vec<String> {
        let settings = &self.inner.settings;
        let typed = match class {
            Some(ErrorClass::ContextWindowExceeded) => Some(&settings.context_window_fallbacks),
            Some(ErrorClass::ContentPolicy) => Some(&settings.content_policy_fallbacks),
            _ => None,
        };
        if let Some(chains) = typed.filter(|c| !c.is_empty()) {
            return names
                .iter()
                .find_map(|name| chains.get(*name))
                .cloned()
                .unwrap_or_default();
        }
        names
            .iter()
            .find_map(|name| settings.fallbacks.get(*name))
            .cloned()
            .unwrap_or_else(|| settings.default_fallbacks.clone())
    }

    fn has_fallbacks(&self, label: &str) -> bool {
        let settings = &self.inner.settings;
        settings.fallbacks.contains_key(label) || !settings.default_fallbacks.is_empty()
    }

    /// A group's `order` tiers, lowest first, each with its own retries; a context-window or
    /// content-policy error does not move to the next tier. The first tier's error if all fail.
    async fn order_levels(
        &self,
        snapshot: &Arc<Snapshot>,
        call: &mut Call<'_>,
        scope: &Scope,
    ) -> Result<Success, Failure> {
        let Scope::Group { name, order: None } = scope else {
            return self.with_retries(snapshot, call, scope).await;
        };
        let mut levels: Vec<u32> = snapshot
            .groups
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|ix| snapshot.deployment(*ix).and_then(|d| d.order))
            .collect();
        levels.sort_unstable();
        levels.dedup();
        if levels.len() <= 1 {
            // One tier (or none): the order filter alone keeps the call on it.
            return self.with_retries(snapshot, call, scope).await;
        }
        // As LiteLLM: the lowest available tier first, then each higher tier as a target.
        let tiers = std::iter::once(None).chain(levels.iter().skip(1).copied().map(Some));
        let mut first = None;
        for order in tiers {
            let level = Scope::Group {
                name: name.clone(),
                order,
            };
            match self.with_retries(snapshot, call, &level).await {
                Ok(success) => return Ok(success),
                Err(failure) => {
                    let stop = matches!(
                        failure.class(),
                        Some(ErrorClass::ContextWindowExceeded | ErrorClass::ContentPolicy)
                    ) || matches!(failure, Failure::Deadline(_) | Failure::Other(_));
                    first.get_or_insert(failure);
                    if stop {
                        break;
                    }
                }
            }
        }
        Err(first.unwrap_or_else(|| {
            Failure::Selection(RouterError::NoCapacity(format!(
                "no deployment in `{name}`"
            )))
        }))
    }

    /// Attempts on `scope` until one succeeds or the retry rules stop (reference §2.7): the
    /// retry count is the request's, else the failed deployment's, else the router's; a retry
    /// policy for the error's class replaces the should-retry table; a failure that says the
    /// deployment is wrong for the request skips it next time; no wait after the last attempt.
    async fn with_retries(
        &self,
        snapshot: &Arc<Snapshot>,
        call: &mut Call<'_>,
        scope: &Scope,
    ) -> Result<Success, Failure> {
        let settings = &self.inner.settings;
        let mut skip: Vec<DeploymentIx> = Vec::new();
        let mut retries: Option<u32> = None;
        let mut retry = 0u32;
        loop {
            let failure = match self.attempt(snapshot, call, scope, &skip).await {
                Ok(success) => {
                    // LiteLLM's headers count the retries of the group that answered.
                    call.answered_retries = (retry, retries.filter(|_| retry > 0));
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
            let (ix, class) = (*ix, class.clone());
            let deployment_retries = snapshot.deployment(ix).and_then(|d| d.num_retries);
            let mut limit = *retries.get_or_insert(
                call.request
                    .num_retries
                    .or(deployment_retries)
                    .unwrap_or(settings.num_retries),
            );
            let group = self.group_state(snapshot, scope);
            let policy = (call.request.num_retries != Some(0))
                .then(|| settings.retry_policy_for(scope.label()))
                .flatten()
                .and_then(|p| p.retries_for(&class));
            let allowed = match policy {
                Some(n) => {
                    limit = n;
                    retries = Some(n);
                    true
                }
                None => retry::should_retry(&class, &group),
            };
            if !allowed || retry >= limit {
                return Err(failure);
            }
            if let Some(budget) = &self.inner.retry_budget {
                if !budget.withdraw(self.inner.cache.clock().now_ms()) {
                    metrics::counter!("ferrolite_router_retry_budget_exhausted_total").increment(1);
                    tracing::debug!(group = scope.label(), "retry budget spent; not retrying");
                    return Err(failure);
                }
            }
            if class.skips_failed_deployment() && !skip.contains(&ix) {
                skip.push(ix);
            }
            let jitter = settings.retry_jitter.mul_f64(self.inner.rng.unit());
            let wait = retry::backoff(&class, retry, &group, jitter, settings.retry_after);
            self.wait(call, wait).await?;
            retry += 1;
            call.retries += 1;
            self.emit(Event::Retry {
                model_group: scope.label(),
                retry: call.retries,
                wait,
            });
            metrics::counter!("ferrolite_router_retries_total").increment(1);
        }
    }

    /// Healthy and total deployments of the scope now, and which chains it has.
    fn group_state(&self, snapshot: &Snapshot, scope: &Scope) -> GroupState {
        let settings = &self.inner.settings;
        let now = self.inner.cache.clock().now_ms();
        let (mut healthy, mut all) = (0, 0);
        for ix in members(snapshot, scope) {
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
            has_fallbacks: self.has_fallbacks(scope.label()),
            context_window_fallbacks: !settings.context_window_fallbacks.is_empty(),
            content_policy_fallbacks: !settings.content_policy_fallbacks.is_empty(),
        }
    }

    /// Waits `wait` before a retry, unless the request's deadline would pass first.
    async fn wait(&self, call: &mut Call<'_>, wait: Duration) -> Result<(), Failure> {
        if wait.is_zero() {
            return Ok(());
        }
        if let Some((deadline, length)) = call.deadline {
            if Instant::now() + wait >= deadline {
                return Err(Failure::Deadline(RouterError::DeadlineExceeded {
                    deadline: length,
                    attempts: call.attempts,
                }));
            }
        }
        sleep(wait).await;
        call.outside += wait;
        Ok(())
    }

    /// One attempt, waiting its turn in the group's queue while the group has no capacity
    /// (with a wait queue; without one the first "no capacity" is the answer).
    async fn attempt(
        &self,
        snapshot: &Arc<Snapshot>,
        call: &mut Call<'_>,
        scope: &Scope,
        skip: &[DeploymentIx],
    ) -> Result<Success, Failure> {
        let Some(queue) = &self.inner.queue else {
            return self
                .attempt_once(snapshot, call, scope, skip, &mut None)
                .await;
        };
        let label = scope.label();
        let priority = call
            .request
            .priority
            .or(self.inner.settings.default_priority);
        let until = {
            let max = Instant::now() + queue.settings().max_wait;
            call.deadline.map_or(max, |(deadline, _)| deadline.min(max))
        };
        // Behind the waiters already there, unless this request's priority puts it first.
        let mut ticket = if queue.has_waiters(label) {
            queue.enter(label, priority)
        } else {
            None
        };
        let queued_at = Instant::now();
        let mut reason = format!("no capacity in `{label}`");
        loop {
            if ticket.as_ref().is_none_or(|t| t.is_head()) {
                match self
                    .attempt_once(snapshot, call, scope, skip, &mut ticket)
                    .await
                {
                    Err(Failure::Selection(RouterError::NoCapacity(why))) => {
                        reason = why;
                        if ticket.is_none() {
                            ticket = queue.enter(label, priority);
                        }
                    }
                    other => return other,
                }
            }
            let Some(waiting) = &ticket else {
                return Err(Failure::Selection(RouterError::NoCapacity(format!(
                    "{reason}; the wait queue of `{label}` is full"
                ))));
            };
            let started = Instant::now();
            let in_time = waiting.wait(until).await;
            call.outside += started.elapsed();
            if !in_time {
                return Err(Failure::Selection(RouterError::NoCapacity(format!(
                    "{reason}; none freed while waiting {:?} in the queue",
                    queued_at.elapsed()
                ))));
            }
        }
    }

    /// The cache key of the request's affinity pin in `scope`: a hash of the key (a user's API
    /// key must never be stored), per group.
    fn affinity_key(&self, call: &Call<'_>, scope: &Scope) -> Option<String> {
        use sha2::Digest;
        if !self.inner.settings.deployment_affinity {
            return None;
        }
        let key = call.request.affinity_key.as_deref()?;
        let digest = sha2::Sha256::digest(key.as_bytes());
        let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        Some(format!("affinity:{}:{hex}", scope.label()))
    }

    /// The pinned deployment, when it is among the eligible ones (not cooled down, unhealthy,
    /// over budget or filtered out).
    async fn pinned<'s>(
        &self,
        snapshot: &'s Snapshot,
        key: &str,
        eligible: &[&'s Target],
    ) -> Option<&'s Target> {
        let id = match self.inner.cache.kv().get(key).await {
            Ok(id) => id?,
            Err(e) => {
                tracing::debug!(error = %e, "could not read an affinity pin");
                return None;
            }
        };
        let ix = snapshot.targets.by_id(&DeploymentId::new(&*id))?.ix;
        eligible.iter().copied().find(|t| t.ix == ix)
    }

    /// Pins the request's affinity key to `target` (when it is not pinned there already).
    async fn pin(&self, key: &str, target: &Target) {
        let cache = &self.inner.cache;
        if cache.kv().get(key).await.ok().flatten().as_deref() == Some(target.id.as_str()) {
            return;
        }
        let ttl = self.inner.settings.deployment_affinity_ttl;
        if let Err(e) = cache.kv().set(key, target.id.as_str(), ttl).await {
            tracing::debug!(error = %e, "could not pin an affinity key");
        }
    }

    /// Wakes the head of `group`'s wait queue, if there is one.
    fn wake_queue(&self, group: &str) {
        if let Some(queue) = &self.inner.queue {
            queue.wake(group);
        }
    }

    /// One attempt: filter, pick, admit, reserve, call. A queued request leaves its queue
    /// (`ticket`) the moment it is admitted, before its call runs, so the next waiter can take
    /// another free slot at once.
    async fn attempt_once(
        &self,
        snapshot: &Arc<Snapshot>,
        call: &mut Call<'_>,
        scope: &Scope,
        skip: &[DeploymentIx],
        ticket: &mut Option<crate::queue::Ticket<'_>>,
    ) -> Result<Success, Failure> {
        let mut eligible = self.filter(snapshot, call, scope, skip).await?;
        let affinity = self.affinity_key(call, scope);
        let mut pinned = match &affinity {
            Some(key) => Box::pin(self.pinned(snapshot, key, &eligible)).await,
            None => None,
        };
        let ctx = RouteContext {
            model_group: scope.label(),
            input_tokens: call.input_tokens,
            // `n` x `max_tokens`: the output the admission holds.
            max_tokens: call
                .request
                .max_tokens
                .map(|_| call.request.output_tokens(None)),
            stream: call.request.stream,
            tags: &call.request.tags,
            weights: None,
        };
        loop {
            // pick: the affinity pin while it is eligible and has room, else the strategy
            let target = if let Some(target) = pinned.take() {
                target
            } else {
                let view = snapshot.usage.view();
                match snapshot.strategy.pick(&ctx, &eligible, &view) {
                    Ok(target) => target,
                    Err(StrategyError::NoCapacity(no)) => {
                        return Err(Failure::Selection(RouterError::NoCapacity(no.to_string())));
                    }
                    Err(e) => return Err(Failure::Other(e.into())),
                }
            };
            match self.take(snapshot, call, target).await {
                Ok(taken) => {
                    // Admitted: out of the queue, which wakes the next waiter.
                    drop(ticket.take());
                    let result = self
                        .call_deployment(snapshot, call, scope, target, taken)
                        .await;
                    if !matches!(
                        &result,
                        Ok(Success {
                            answer: Answer::Stream { .. },
                            ..
                        })
                    ) {
                        // The call ended: its slot is free for the head of the queue.
                        self.wake_queue(&target.model_name);
                    }
                    if let (Ok(_), Some(key)) = (&result, &affinity) {
                        Box::pin(self.pin(key, target)).await;
                    }
                    return result;
                }
                Err(Refused::Full(reason)) => {
                    // Another request took the last slot, or the budget: pick again among the others.
                    eligible.retain(|t| t.ix != target.ix);
                    if eligible.is_empty() {
                        return Err(Failure::Selection(reason));
                    }
                }
                Err(Refused::Failed(failure)) => return Err(failure),
            }
        }
    }

    /// Takes what a call on `target` needs, in order — rpm + tpm (the permit), a concurrency
    /// slot, the budget reservation — or nothing: a refusal gives back what was taken.
    async fn take(
        &self,
        snapshot: &Snapshot,
        call: &Call<'_>,
        target: &Target,
    ) -> Result<Taken, Refused> {
        // The three are independent: sent together, so the Redis commands they need (strict
        // or auto admission, a shared slot, the budget reservation) share one round trip of
        // latency, pipelined on the connection.
        // `n` choices, each up to `max_tokens` (the same count as `Router::token_estimate`).
        let output_tokens = call
            .request
            .output_tokens(default_max_tokens(snapshot.deployment(target.ix)));
        // The request's own cap (`max_tokens`, else `max_completion_tokens`, which `Request`
        // reads into it): the budget's estimate falls back on the deployment's default, its
        // learned output, its limit.
        // `n` choices each up to it, as the rate limits count them.
        let requested = call
            .request
            .max_tokens
            .map(|_| call.request.output_tokens(None));
        let reserve = async {
            if snapshot.ledger.is_empty() {
                return Ok(None);
            }
            let estimate = snapshot
                .ledger
                .estimate(target.ix, call.input_tokens, requested);
            // Boxed: the future of a Redis script is large, and most calls never build one.
            let mut reservation = Box::pin(snapshot.ledger.reserve(
                target.ix,
                &call.budget_tags,
                estimate,
            ))
            .await?;
            if requested.is_none() {
                reservation.learn_from(target.ix);
            }
            Ok(Some(reservation))
        };
        let (permit, slot, reservation) = tokio::join!(
            snapshot
                .usage
                .admit(target, call.input_tokens.saturating_add(output_tokens)),
            self.take_slot(snapshot, target),
            reserve,
        );
        let refused = match (&permit, &slot, &reservation) {
            (Err(StrategyError::RateLimited { .. }), _, _) => permit
                .as_ref()
                .err()
                .map(|e| Refused::Full(RouterError::NoCapacity(e.to_string()))),
            (Err(e), _, _) => Some(Refused::Failed(Failure::Other(e.clone().into()))),
            (_, Err(_), _) => None, // taken below, with its own reason
            (_, _, Err(BudgetError::Exceeded { .. })) => reservation
                .as_ref()
                .err()
                .map(|e| Refused::Full(e.clone().into())),
            (_, _, Err(e)) => Some(Refused::Failed(Failure::Other(e.clone().into()))),
            _ => None,
        };
        let (permit, slot, reservation) = match (permit, slot, reservation, refused) {
            (Ok(permit), Ok(slot), Ok(reservation), None) => (permit, slot, reservation),
            (permit, slot, reservation, refused) => {
                // Give back whatever was taken.
                let slot_refusal = match slot {
                    Ok(slot) => {
                        release(slot).await;
                        None
                    }
                    Err(refused) => Some(refused),
                };
                if let Ok(permit) = permit {
                    undo(permit);
                }
                drop(reservation);
                return Err(refused.or(slot_refusal).unwrap_or_else(|| {
                    Refused::Failed(Failure::Other(RouterError::NoCapacity(format!(
                        "deployment {} could not be admitted",
                        target.id
                    ))))
                }));
            }
        };
        let probe = match self.take_probe(snapshot, target).await {
            Ok(probe) => probe,
            Err(refused) => {
                release(slot).await;
                drop(reservation);
                undo(permit);
                return Err(refused);
            }
        };
        Ok(Taken {
            permit,
            slot,
            probe,
            reservation,
        })
    }

    /// The probe's lease when `target` is half-open: one call at a time, across instances,
    /// until one succeeds.
    async fn take_probe(
        &self,
        snapshot: &Snapshot,
        target: &Target,
    ) -> Result<Option<ferrolite_cache::Lease>, Refused> {
        let Some(health) = snapshot.health.get(target.ix) else {
            return Ok(None);
        };
        let Some(probation) = &health.probation else {
            return Ok(None);
        };
        if !probation.half_open(&health.cooldown, self.inner.cache.clock().now_ms()) {
            return Ok(None);
        }
        match Box::pin(self.inner.cache.leases().take(
            &probation.probe_key,
            1,
            self.inner.settings.lease_ttl,
        ))
        .await
        {
            Ok(Some(lease)) => Ok(Some(lease)),
            Ok(None) => Err(Refused::Full(RouterError::NoCapacity(format!(
                "Deployment {} is recovering from a cooldown: one probe call at a time",
                target.id
            )))),
            Err(e) => Err(Refused::Failed(Failure::Other(e.into()))),
        }
    }

    /// A concurrency slot on `target`, when it has a cap: shared through a lease for an explicit
    /// cap, in this instance for a derived one.
    async fn take_slot(
        &self,
        snapshot: &Snapshot,
        target: &Target,
    ) -> Result<Option<Slot>, Refused> {
        let Some(cap) = snapshot
            .health
            .get(target.ix)
            .and_then(|h| h.parallel.as_ref())
        else {
            return Ok(None);
        };
        let taken = if cap.shared {
            Box::pin(self.inner.cache.leases().take(
                &cap.key,
                cap.limit,
                self.inner.settings.lease_ttl,
            ))
            .await
            .map(|l| l.map(Slot::Shared))
            .map_err(|e| Refused::Failed(Failure::Other(e.into())))?
        } else {
            LocalSlot::take(&cap.local, cap.limit).map(Slot::Local)
        };
        match taken {
            Some(slot) => Ok(Some(slot)),
            None => Err(Refused::Full(RouterError::NoCapacity(format!(
                "Deployment {} has all max_parallel_requests slots in use ({})",
                target.id, cap.limit
            )))),
        }
    }

    /// The deployments of `scope` a pick may choose: not cooling down (except a deployment
    /// named by id), within budget, and not skipped by an earlier failure of this request
    /// (unless that leaves none).
    async fn filter<'s>(
        &self,
        snapshot: &'s Snapshot,
        call: &Call<'_>,
        scope: &Scope,
        skip: &[DeploymentIx],
    ) -> Result<Vec<&'s Target>, Failure> {
        let mut eligible: Vec<&Target> = members(snapshot, scope)
            .filter_map(|ix| snapshot.target(ix))
            .collect();
        if self.inner.settings.enable_health_check_routing
            && !matches!(scope, Scope::Deployment { .. })
        {
            // Health-check state (reference §2.17): a deployment whose latest check failed is
            // left out, unless that leaves none (a check that fails everywhere says more about
            // the check than the deployments).
            let now = self.inner.cache.clock().now_ms();
            let unhealthy = |t: &Target| {
                snapshot
                    .health
                    .get(t.ix)
                    .and_then(|h| h.checks.as_ref())
                    .is_some_and(|c| c.unhealthy(now))
            };
            if eligible.iter().any(|t| !unhealthy(t)) {
                eligible.retain(|t| !unhealthy(t));
            }
        }
        if !matches!(scope, Scope::Deployment { .. }) {
            let now = self.inner.cache.clock().now_ms();
            let cooling_until = |t: &Target| {
                snapshot
                    .health
                    .get(t.ix)
                    .and_then(|h| h.cooldown.until_ms())
                    .filter(|until| *until > now)
            };
            let had_any = !eligible.is_empty();
            eligible.retain(|t| cooling_until(t).is_none());
            if eligible.is_empty() && had_any {
                // Every one cools down: say when the first is back (the error path only).
                let first_end = members(snapshot, scope)
                    .filter_map(|ix| snapshot.target(ix))
                    .filter_map(cooling_until)
                    .min()
                    .unwrap_or(now);
                return Err(Failure::Selection(RouterError::AllCooledDown {
                    model_group: scope.label().to_string(),
                    retry_in: Duration::from_millis(first_end - now),
                }));
            }
        }
        if !snapshot.ledger.is_empty() && !eligible.is_empty() {
            let check = Box::pin(snapshot.ledger.check(&call.budget_tags))
                .await
                .map_err(|e| Failure::Other(e.into()))?;
            if !eligible
                .iter()
                .any(|t| snapshot.ledger.allows(&check, t.ix))
            {
                self.emit(Event::BudgetRefused {
                    model_group: scope.label(),
                });
                let candidates: Vec<DeploymentIx> = eligible.iter().map(|t| t.ix).collect();
                return Err(Failure::Selection(
                    snapshot.ledger.exceeded_error(&check, &candidates).into(),
                ));
            }
            eligible.retain(|t| snapshot.ledger.allows(&check, t.ix));
        }
        if self.inner.settings.enable_tag_filtering {
            eligible = self.filter_tags(snapshot, call, scope, eligible)?;
        }
        if self.inner.settings.enable_pre_call_checks {
            eligible = filter_region(snapshot, call, scope, eligible)?;
            eligible = filter_context_window(snapshot, call, scope, eligible)?;
        }
        match scope {
            Scope::Group {
                name,
                order: Some(order),
            } => {
                eligible = filter_order(snapshot, Some(*order), eligible);
                if eligible.is_empty() {
                    return Err(Failure::Selection(RouterError::NoDeploymentInTier {
                        model_group: name.clone(),
                        order: *order,
                    }));
                }
            }
            Scope::Group { order: None, .. } | Scope::Model { .. } => {
                eligible = filter_order(snapshot, None, eligible);
            }
            Scope::Deployment { .. } => {}
        }
        if !skip.is_empty() {
            let kept: Vec<&Target> = eligible
                .iter()
                .copied()
                .filter(|t| !skip.contains(&t.ix))
                .collect();
            if !kept.is_empty() {
                eligible = kept;
            }
        }
        Ok(eligible)
    }

    /// Tag routing (reference §2.13): deployments carrying the request's tags (any of them, or
    /// all with `tag_filtering_match_any: false`), none carrying a `!tag`, all carrying every
    /// `&tag`; else, when no deployment of the group knows the request's tags, those tagged
    /// `default`; an untagged request goes to `default` deployments when there are any, else
    /// to all.
    fn filter_tags<'s>(
        &self,
        snapshot: &'s Snapshot,
        call: &Call<'_>,
        scope: &Scope,
        eligible: Vec<&'s Target>,
    ) -> Result<Vec<&'s Target>, Failure> {
        let tags_of = |t: &Target| {
            snapshot
                .deployment(t.ix)
                .map_or(&[][..], |d| d.tags.as_slice())
        };
        let defaults: Vec<&Target> = eligible
            .iter()
            .copied()
            .filter(|t| tags_of(t).iter().any(|tag| tag == "default"))
            .collect();
        let request = &call.request.tags;
        if request.is_empty() {
            return Ok(if defaults.is_empty() {
                eligible
            } else {
                defaults
            });
        }
        let plain: Vec<&str> = request
            .iter()
            .filter(|t| !t.starts_with('!') && !t.starts_with('&'))
            .map(String::as_str)
            .collect();
        let excluded: Vec<&str> = request.iter().filter_map(|t| t.strip_prefix('!')).collect();
        let required: Vec<&str> = request.iter().filter_map(|t| t.strip_prefix('&')).collect();
        let any = self.inner.settings.tag_filtering_match_any;
        let matching: Vec<&Target> = eligible
            .iter()
            .copied()
            .filter(|t| {
                let has = |tag: &str| tags_of(t).iter().any(|d| d == tag);
                let plain_ok = plain.is_empty()
                    || if any {
                        plain.iter().any(|tag| has(tag))
                    } else {
                        plain.iter().all(|tag| has(tag))
                    };
                plain_ok
                    && !excluded.iter().any(|tag| has(tag))
                    && required.iter().all(|tag| has(tag))
            })
            .collect();
        if !matching.is_empty() {
            return Ok(matching);
        }
        // As LiteLLM's `get_deployments_for_tag`: a tag some deployment of the group carries
        // (one cooling down included) is a routing rule, and a request it does not fit is
        // refused; only tags the group does not know fall back to the `default` deployments.
        let known = members(snapshot, scope)
            .filter_map(|ix| snapshot.deployment(ix))
            .any(|d| d.tags.iter().any(|tag| plain.contains(&tag.as_str())));
        if !defaults.is_empty() && !known {
            return Ok(defaults);
        }
        Err(Failure::Selection(RouterError::NoTagMatch {
            model_group: scope.label().to_string(),
            tags: request.clone(),
        }))
    }

    /// Calls the deployment under the attempt timeout and records the outcome (a stream's when
    /// it ends).
    async fn call_deployment(
        &self,
        snapshot: &Arc<Snapshot>,
        call: &mut Call<'_>,
        scope: &Scope,
        target: &Target,
        taken: Taken,
    ) -> Result<Success, Failure> {
        let Taken {
            mut permit,
            slot,
            probe,
            reservation,
        } = taken;
        let settings = &self.inner.settings;
        let Some(deployment) = snapshot.deployment(target.ix) else {
            undo(permit);
            return Err(Failure::Other(RouterError::NoCapacity(format!(
                "deployment {} left the snapshot",
                target.id
            ))));
        };
        let mut body = call.request.body.clone();
        if let Some(object) = body.as_object_mut() {
            let model = model_for(deployment, &call.request.model).into_owned();
            object.insert("model".into(), model.into());
            for field in crate::request::ROUTING_FIELDS {
                object.remove(field);
            }
            // A client-side fallback given as an object (`{"model": "b", "messages": [...]}`):
            // its other fields replace the request's for that hop (reference S50).
            let hop = call
                .request
                .body
                .get("fallbacks")
                .and_then(serde_json::Value::as_array)
                .and_then(|hops| {
                    hops.iter().find(|hop| {
                        hop.get("model").and_then(serde_json::Value::as_str) == Some(scope.label())
                    })
                })
                .and_then(serde_json::Value::as_object);
            for (name, value) in hop.into_iter().flatten() {
                if name != "model" {
                    object.insert(name.clone(), value.clone());
                }
            }
            for (name, value) in &deployment.default_params {
                if !object.contains_key(name) {
                    object.insert(name.clone(), value.clone());
                }
            }
        }
        let request = BackendRequest {
            body,
            stream: call.request.stream,
            request_id: call.request.request_id.clone(),
        };
        let timeout = attempt_timeout(settings, call.request, deployment);
        let started = Instant::now();
        let (until, callers) = match call.deadline {
            Some((deadline, _)) if deadline < started + timeout => (deadline, true),
            _ => (started + timeout, false),
        };
        call.attempts += 1;
        self.emit(Event::Attempt {
            model_group: &deployment.model_name,
            deployment: &target.id,
        });
        let opened = self.open(deployment, &request);
        let result = match &slot {
            Some(Slot::Shared(lease)) => {
                let ttl = settings.lease_ttl;
                tokio::time::timeout_at(until, renewing(opened, lease, ttl)).await
            }
            _ => tokio::time::timeout_at(until, opened).await,
        };
        let latency = started.elapsed();
        call.outside += latency;
        let model_group = deployment.model_name.clone();
        let (class, message) = match result {
            Ok(Ok(Opened::Stream { first, rest })) => {
                metrics::histogram!("ferrolite_router_ttft_seconds").record(latency.as_secs_f64());
                let tail = Box::new(Tail {
                    router: self.clone(),
                    snapshot: Arc::clone(snapshot),
                    ix: target.ix,
                    has_fallbacks: self.has_fallbacks(scope.label()),
                    permit: Some(permit),
                    slot,
                    probe,
                    reservation,
                    started,
                    time_to_first_token: latency,
                    usage: first.usage,
                    input_tokens: call.input_tokens,
                    streamed_chars: streamed_text_len(&first.body),
                    rest,
                    tried: call.tried.clone(),
                    done: false,
                    end: Arc::default(),
                });
                return Ok(Success {
                    answer: Answer::Stream { first, tail },
                    deployment: target.id.clone(),
                    model_group,
                });
            }
            Ok(Ok(Opened::Complete(response)))
                if !self.content_filtered(&response.body, &model_group) =>
            {
                release(slot).await;
                let cost = self.record_success(
                    snapshot,
                    target,
                    &mut permit,
                    reservation,
                    response.usage,
                    latency,
                    response.time_to_first_token,
                );
                if probe.is_some() {
                    self.close_probation(snapshot, target).await;
                }
                end_probe(probe).await;
                drop(permit);
                return Ok(Success {
                    answer: Answer::Complete {
                        body: response.body,
                        usage: response.usage,
                        cost,
                    },
                    deployment: target.id.clone(),
                    model_group,
                });
            }
            Ok(Ok(Opened::Complete(_))) => (
                ErrorClass::ContentPolicy,
                "Response output was blocked.".to_string(),
            ),
            Ok(Err(error)) => (error.class, error.message),
            Err(_) if callers => {
                // The caller's own deadline: no deployment is blamed, nothing is retried.
                release(slot).await;
                end_probe(probe).await;
                drop(reservation);
                drop(permit);
                return Err(Failure::Deadline(RouterError::DeadlineExceeded {
                    deadline: call.deadline.map_or(timeout, |(_, d)| d),
                    attempts: call.attempts,
                }));
            }
            Err(_) if call.request.stream => (
                ErrorClass::Timeout,
                format!("no first chunk within the stream timeout of {timeout:?}"),
            ),
            Err(_) => (
                ErrorClass::Timeout,
                format!("no answer within the attempt timeout of {timeout:?}"),
            ),
        };
        release(slot).await;
        if let Some(reservation) = reservation {
            if let Err(e) = snapshot.ledger.release(reservation) {
                tracing::warn!(error = %e, "could not release a budget reservation");
            }
        }
        drop(permit);
        Box::pin(self.record_failure(snapshot, target, self.has_fallbacks(scope.label()), &class))
            .await;
        end_probe(probe).await;
        call.tried.push(Tried {
            model_group: model_group.clone(),
            deployment: target.id.clone(),
            class: class.clone(),
            message: message.clone(),
        });
        Err(Failure::Backend {
            model_group,
            ix: Some(target.ix),
            deployment: target.id.clone(),
            class,
            message,
        })
    }

    /// Calls the backend: a whole response, or a stream up to its first chunk.
    async fn open(
        &self,
        deployment: &Deployment,
        request: &BackendRequest,
    ) -> Result<Opened, BackendError> {
        let backend = &self.inner.backend;
        if !request.stream {
            return backend
                .call(deployment, request)
                .await
                .map(Opened::Complete);
        }
        let mut rest = backend.stream(deployment, request).await?;
        match rest.next().await {
            Some(Ok(first)) => Ok(Opened::Stream { first, rest }),
            Some(Err(error)) => Err(error),
            None => Err(BackendError::new(
                ErrorClass::Connection,
                "the stream ended before its first chunk",
            )),
        }
    }

    /// Records a success: the actual tokens (settling the rpm/tpm estimate), the cost (settling
    /// the budget reservation), the success count, the strategy's latency; returns the cost.
    #[allow(clippy::too_many_arguments)]
    fn record_success(
        &self,
        snapshot: &Snapshot,
        target: &Target,
        permit: &mut Permit,
        reservation: Option<ferrolite_budgets::Reservation>,
        usage: Option<ferrolite_types::Usage>,
        latency: Duration,
        time_to_first_token: Option<Duration>,
    ) -> Option<f64> {
        if let Some(u) = &usage {
            if let Err(e) = permit.settle_tokens(u.total_tokens) {
                tracing::warn!(error = %e, "could not settle tokens");
            }
        }
        let cost = usage.map(|u| cost_of(snapshot.deployment(target.ix), u));
        if let Some(reservation) = reservation {
            let settled = match usage {
                Some(u) => snapshot.ledger.settle_output(
                    reservation,
                    cost.unwrap_or(0.0),
                    u.completion_tokens,
                ),
                None => snapshot.ledger.settle(reservation, 0.0),
            };
            if let Err(e) = settled {
                tracing::warn!(error = %e, "could not settle a budget reservation");
            }
        }
        if let Some(health) = snapshot.health.get(target.ix) {
            if let Err(e) = health.successes.increment(1) {
                tracing::debug!(error = %e, "could not count a success");
            }
        }
        if let Some(budget) = &self.inner.retry_budget {
            budget.deposit(self.inner.cache.clock().now_ms());
        }
        self.emit(Event::Success {
            deployment: &target.id,
            latency,
        });
        metrics::histogram!("ferrolite_router_latency_seconds").record(latency.as_secs_f64());
        if let Some(ttft) = time_to_first_token {
            metrics::histogram!("ferrolite_router_ttft_seconds").record(ttft.as_secs_f64());
        }
        snapshot.strategy.observe(
            target,
            &Outcome::Success(&CallOutcome {
                latency,
                time_to_first_token,
                usage,
            }),
        );
        cost
    }

    /// A success of a half-open deployment closes it again, for every instance.
    async fn close_probation(&self, snapshot: &Snapshot, target: &Target) {
        let Some(health) = snapshot.health.get(target.ix) else {
            return;
        };
        let Some(probation) = &health.probation else {
            return;
        };
        let now = self.inner.cache.clock().now_ms();
        if probation.half_open(&health.cooldown, now) {
            let closed = now + crate::snapshot::PROBATION.as_millis() as u64;
            if let Err(e) = Box::pin(probation.passed.extend_to(closed)).await {
                tracing::warn!(error = %e, "could not record a recovery");
            }
            tracing::info!(deployment = %target.id, "deployment recovered from its cooldown");
        }
    }

    /// Records a failure of `target`: the strategy's and the observers' view, the failure
    /// metric, and the cooldown the rules decide (reference §2.9).
    async fn record_failure(
        &self,
        snapshot: &Snapshot,
        target: &Target,
        has_fallbacks: bool,
        class: &ErrorClass,
    ) {
        snapshot.strategy.observe(target, &Outcome::Failure(class));
        self.emit(Event::Failure {
            deployment: &target.id,
            class,
        });
        metrics::counter!("ferrolite_router_attempt_failures_total", "class" => class_label(class))
            .increment(1);
        let (Some(health), Some(deployment)) = (
            snapshot.health.get(target.ix),
            snapshot.deployment(target.ix),
        ) else {
            return;
        };
        let failure = cooldown::Failure {
            deployment,
            id: &target.id,
            health,
            class,
            group_size: snapshot
                .groups
                .get(&deployment.model_name)
                .map_or(1, Vec::len),
            has_fallbacks,
        };
        let settings = &self.inner.settings;
        let now = self.inner.cache.clock().now_ms();
        let half_open = health
            .probation
            .as_ref()
            .is_some_and(|p| p.half_open(&health.cooldown, now));
        let decided = cooldown::decide(settings, &self.inner.cache, &failure).await;
        // A failed probe cools the deployment down again at once (circuit breakers' half-open).
        let decided = match decided {
            None if half_open && class.is_cooldown_relevant() && !settings.disable_cooldowns => {
                cooldown::cooldown_length(settings, deployment, class)
            }
            decided => decided,
        };
        if let Some(length) = decided {
            let until = self.inner.cache.clock().now_ms() + length.as_millis() as u64;
            if let Err(e) = health.cooldown.extend_to(until).await {
                tracing::warn!(error = %e, "could not record a cooldown");
            }
            metrics::counter!("ferrolite_router_cooldowns_total").increment(1);
            self.emit(Event::CooldownSet {
                deployment: &target.id,
                until_ms: until,
                class,
            });
            tracing::info!(deployment = %target.id, ?class, cooldown = ?length, "deployment cooled down");
        }
    }

    /// A non-streamed response the provider cut with `finish_reason: content_filter` counts as a
    /// content-policy error when content-policy fallbacks exist for the group (LiteLLM).
    fn content_filtered(&self, body: &serde_json::Value, group: &str) -> bool {
        self.inner
            .settings
            .content_policy_fallbacks
            .contains_key(group)
            && body
                .pointer("/choices/0/finish_reason")
                .and_then(|r| r.as_str())
                == Some("content_filter")
    }
}

/// The region pre-call check (reference §2.12): a request that allows one region goes only to
/// deployments in it; a deployment without a `region_name` is not in any.
fn filter_region<'s>(
    snapshot: &'s Snapshot,
    call: &Call<'_>,
    scope: &Scope,
    mut eligible: Vec<&'s Target>,
) -> Result<Vec<&'s Target>, Failure> {
    let Some(region) = call.request.allowed_model_region.as_deref() else {
        return Ok(eligible);
    };
    eligible.retain(|t| {
        snapshot
            .deployment(t.ix)
            .and_then(|d| d.region_name.as_deref())
            .is_some_and(|r| r.eq_ignore_ascii_case(region))
    });
    if eligible.is_empty() {
        return Err(Failure::Selection(RouterError::InvalidRequest {
            field: "allowed_model_region",
            value: format!("{region} (model group `{}`)", scope.label()),
            reason: "no deployment of the group serves from this region",
        }));
    }
    Ok(eligible)
}

/// The context-window pre-call check (reference §2.12): deployments whose `max_input_tokens`
/// the request's input exceeds are dropped (the tokens are counted once per request); when none
/// is left, a context-window error, which takes the context-window fallbacks.
fn filter_context_window<'s>(
    snapshot: &'s Snapshot,
    call: &Call<'_>,
    scope: &Scope,
    mut eligible: Vec<&'s Target>,
) -> Result<Vec<&'s Target>, Failure> {
    let tokens = call.input_tokens;
    let limit = |t: &Target| snapshot.deployment(t.ix).and_then(|d| d.max_input_tokens);
    let largest = eligible.iter().filter_map(|t| limit(t)).max();
    eligible.retain(|t| limit(t).is_none_or(|max| tokens <= max));
    if eligible.is_empty() {
        return Err(Failure::Backend {
            model_group: scope.label().to_string(),
            ix: None,
            deployment: DeploymentId::new(""),
            class: ErrorClass::ContextWindowExceeded,
            message: format!(
                "Context Window exceeded for given call. No models have context window large enough for this call. Model={}, Max Input Tokens={}, Got={tokens}",
                scope.label(),
                largest.unwrap_or(0)
            ),
        });
    }
    Ok(eligible)
}

/// What an admitted call holds until it ends.
struct Taken {
    permit: Permit,
    slot: Option<Slot>,
    /// The half-open probe's lease, when the deployment is half-open.
    probe: Option<ferrolite_cache::Lease>,
    reservation: Option<ferrolite_budgets::Reservation>,
}

/// Why `take` gave nothing.
enum Refused {
    /// The deployment is full (rpm/tpm, concurrency) or over budget: try another.
    Full(RouterError),
    /// Something else failed: stop.
    Failed(Failure),
}

/// A concurrency slot held for one call.
enum Slot {
    /// An explicit cap's slot, shared by every instance.
    Shared(ferrolite_cache::Lease),
    /// A derived cap's slot, in this instance.
    Local(LocalSlot),
}

/// Runs `call`, renewing `lease` every third of its TTL while it runs.
async fn renewing<F: std::future::Future>(
    call: F,
    lease: &ferrolite_cache::Lease,
    ttl: Duration,
) -> F::Output {
    tokio::pin!(call);
    // The first renewal one period out: an interval's immediate first tick would go through the
    // timer driver (a millisecond) on every call.
    let period = (ttl / 3).max(Duration::from_millis(1));
    let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
    loop {
        tokio::select! {
            output = &mut call => return output,
            _ = ticker.tick() => {
                if let Err(e) = Box::pin(lease.renew()).await {
                    tracing::warn!(error = %e, "could not renew a concurrency lease");
                }
            }
        }
    }
}

/// A call's cost: the provider's, else its usage at the deployment's per-token prices.
fn cost_of(deployment: Option<&Deployment>, usage: ferrolite_types::Usage) -> f64 {
    usage.cost.unwrap_or_else(|| {
        usage.cost_at(
            deployment
                .and_then(|d| d.input_cost_per_token)
                .unwrap_or(0.0),
            deployment
                .and_then(|d| d.output_cost_per_token)
                .unwrap_or(0.0),
        )
    })
}

/// Gives a concurrency slot back: a shared one at once in Redis.
async fn release(slot: Option<Slot>) {
    match slot {
        Some(Slot::Shared(lease)) => Box::pin(lease.release()).await,
        Some(Slot::Local(local)) => drop(local),
        None => {}
    }
}

/// Gives a half-open probe's lease back (after its outcome was recorded or not needed).
async fn end_probe(probe: Option<ferrolite_cache::Lease>) {
    if let Some(lease) = probe {
        Box::pin(lease.release()).await;
    }
}

/// What the backend answered an attempt.
enum Opened {
    Complete(crate::BackendResponse),
    Stream {
        first: BackendChunk,
        rest: BackendStream,
    },
}

/// The rest of a stream an attempt opened, with everything its call holds until it ends.
struct Tail {
    router: Router,
    snapshot: Arc<Snapshot>,
    ix: DeploymentIx,
    has_fallbacks: bool,
    permit: Option<Permit>,
    slot: Option<Slot>,
    probe: Option<ferrolite_cache::Lease>,
    reservation: Option<ferrolite_budgets::Reservation>,
    started: Instant,
    time_to_first_token: Duration,
    /// The last usage a chunk reported.
    usage: Option<ferrolite_types::Usage>,
    /// The request's input tokens (as admitted), and the characters of text streamed so far:
    /// what a stream dropped before its end is charged for, when it reported no usage.
    input_tokens: u64,
    streamed_chars: usize,
    rest: BackendStream,
    /// The request's failed attempts before this one.
    tried: Vec<Tried>,
    done: bool,
    /// What the stream's end recorded, for [`RouterStream`].
    end: Arc<Mutex<Option<StreamEnd>>>,
}

/// What a stream's clean end recorded.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct StreamEnd {
    pub(crate) usage: Option<ferrolite_types::Usage>,
    pub(crate) cost: Option<f64>,
}

impl Drop for Tail {
    fn drop(&mut self) {
        // Give the slot and in-flight count back first, then wake the queue's head.
        drop(self.slot.take());
        drop(self.permit.take());
        // Dropped before its end (a client that went away): the provider bills what it
        // generated, so the budget is charged for the input and the text streamed so far
        // (about four characters a token) unless the provider reported usage.
        if let Some(reservation) = self.reservation.take() {
            let usage = self.usage.unwrap_or_else(|| {
                ferrolite_types::Usage::new(
                    self.input_tokens,
                    self.streamed_chars.div_ceil(4) as u64,
                )
            });
            let cost = cost_of(self.snapshot.deployment(self.ix), usage);
            if let Err(e) = self.snapshot.ledger.settle(reservation, cost) {
                tracing::warn!(error = %e, "could not settle a dropped stream's reservation");
            }
        }
        if let Some(deployment) = self.snapshot.deployment(self.ix) {
            self.router.wake_queue(&deployment.model_name);
        }
    }
}

impl Tail {
    /// The next chunk; at the end of the stream its outcome is recorded first.
    async fn next(&mut self) -> Option<Result<BackendChunk, RouterError>> {
        if self.done {
            return None;
        }
        let next = match &self.slot {
            Some(Slot::Shared(lease)) => {
                let ttl = self.router.inner.settings.lease_ttl;
                renewing(self.rest.next(), lease, ttl).await
            }
            _ => self.rest.next().await,
        };
        match next {
            Some(Ok(chunk)) => {
                if chunk.usage.is_some() {
                    self.usage = chunk.usage;
                }
                self.streamed_chars += streamed_text_len(&chunk.body);
                Some(Ok(chunk))
            }
            None => {
                self.done = true;
                self.finish().await;
                None
            }
            Some(Err(error)) => {
                self.done = true;
                Some(Err(self.fail(error).await))
            }
        }
    }

    /// The stream ended cleanly: record it as a call's success.
    async fn finish(&mut self) {
        release(self.slot.take()).await;
        let (Some(mut permit), Some(target)) = (self.permit.take(), self.snapshot.target(self.ix))
        else {
            return;
        };
        let cost = self.router.record_success(
            &self.snapshot,
            target,
            &mut permit,
            self.reservation.take(),
            self.usage,
            self.started.elapsed(),
            Some(self.time_to_first_token),
        );
        if self.probe.is_some() {
            self.router.close_probation(&self.snapshot, target).await;
        }
        drop(permit);
        end_probe(self.probe.take()).await;
        *self.end.lock() = Some(StreamEnd {
            usage: self.usage,
            cost,
        });
    }

    /// The stream broke after its first chunk: record the failure (it counts towards the
    /// deployment's cooldown) and end the stream with the error. The budget is charged for
    /// the usage the provider reported before it broke, else nothing.
    async fn fail(&mut self, error: BackendError) -> RouterError {
        release(self.slot.take()).await;
        drop(self.permit.take());
        if let Some(reservation) = self.reservation.take() {
            let settled = match self.usage {
                Some(usage) => {
                    let cost = cost_of(self.snapshot.deployment(self.ix), usage);
                    self.snapshot.ledger.settle(reservation, cost)
                }
                None => self.snapshot.ledger.release(reservation),
            };
            if let Err(e) = settled {
                tracing::warn!(error = %e, "could not settle a broken stream's reservation");
            }
        }
        let model_group = self
            .snapshot
            .deployment(self.ix)
            .map(|d| d.model_name.clone())
            .unwrap_or_default();
        let deployment = self
            .snapshot
            .target(self.ix)
            .map(|t| t.id.clone())
            .unwrap_or_else(|| DeploymentId::new(""));
        if let Some(target) = self.snapshot.target(self.ix) {
            Box::pin(self.router.record_failure(
                &self.snapshot,
                target,
                self.has_fallbacks,
                &error.class,
            ))
            .await;
        }
        end_probe(self.probe.take()).await;
        let mut tried = std::mem::take(&mut self.tried);
        tried.push(Tried {
            model_group: model_group.clone(),
            deployment: deployment.clone(),
            class: error.class.clone(),
            message: error.message.clone(),
        });
        tracing::warn!(%deployment, class = ?error.class, "stream failed after its first chunk");
        RouterError::Backend {
            model_group,
            deployment,
            class: error.class,
            message: error.message,
            tried,
        }
    }
}

/// A routed stream: the chunks as the deployment sends them, with what LiteLLM puts in its
/// `x-litellm-*` headers known before the first chunk. The call's usage and cost are known once
/// the stream has ended ([`RouterStream::usage`], [`RouterStream::response_cost`]).
///
/// Dropping it early (a client that went away) cancels the deployment's stream, gives back the
/// call's in-flight count and slot, and charges its budget for what was generated so far.
pub struct RouterStream {
    /// `x-litellm-model-id`: the deployment streaming.
    pub deployment_id: DeploymentId,
    /// `x-litellm-model-group`.
    pub model_group: String,
    /// `x-litellm-attempted-retries`: the retries within the group that answered.
    pub attempted_retries: u32,
    /// `x-litellm-max-retries`: the answering group's retry limit, when it retried.
    pub max_retries: Option<u32>,
    /// `x-litellm-attempted-fallbacks`.
    pub attempted_fallbacks: u32,
    /// `x-litellm-model-api-base`: the streaming deployment's `api_base`, when it has one.
    pub api_base: Option<String>,
    /// The router's own time up to the first chunk.
    pub overhead: Duration,
    /// Time to the first chunk of the attempt that answered.
    pub time_to_first_token: Duration,
    /// Whether the response cache answered (the stream replays a stored answer).
    pub cache_hit: bool,
    /// `x-litellm-cache-key`: the response cache's key for this request, when the cache is on.
    pub cache_key: Option<String>,
    end: Arc<Mutex<Option<StreamEnd>>>,
    chunks: std::pin::Pin<
        Box<dyn futures_core::Stream<Item = Result<BackendChunk, RouterError>> + Send>,
    >,
}

impl std::fmt::Debug for RouterStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterStream")
            .field("deployment_id", &self.deployment_id)
            .field("model_group", &self.model_group)
            .finish_non_exhaustive()
    }
}

impl RouterStream {
    fn new(
        deployment_id: DeploymentId,
        model_group: String,
        attempted_retries: u32,
        attempted_fallbacks: u32,
        overhead: Duration,
        first: BackendChunk,
        tail: Box<Tail>,
    ) -> Self {
        let end = Arc::clone(&tail.end);
        let time_to_first_token = tail.time_to_first_token;
        let chunks =
            futures_util::stream::unfold((Some(first), tail), |(mut first, mut tail)| async move {
                let item = match first.take() {
                    Some(first) => Some(Ok(first)),
                    None => tail.next().await,
                };
                item.map(|item| (item, (None, tail)))
            });
        RouterStream {
            deployment_id,
            model_group,
            attempted_retries,
            max_retries: None,
            attempted_fallbacks,
            api_base: None,
            overhead,
            time_to_first_token,
            cache_hit: false,
            cache_key: None,
            end,
            chunks: Box::pin(chunks),
        }
    }

    /// A stream that replays a cached answer: no deployment is called, it costs nothing.
    fn replay(remembered: &Remembered, started: Instant) -> Self {
        let entry = &remembered.entry;
        let chunks = entry.replay();
        RouterStream {
            deployment_id: DeploymentId::new(entry.deployment.as_str()),
            model_group: entry.model_group.clone(),
            attempted_retries: 0,
            max_retries: None,
            attempted_fallbacks: 0,
            api_base: None,
            overhead: started.elapsed(),
            time_to_first_token: started.elapsed(),
            cache_hit: true,
            cache_key: Some(remembered.key().to_string()),
            end: Arc::new(Mutex::new(Some(StreamEnd {
                usage: entry.usage(),
                cost: Some(0.0),
            }))),
            chunks: Box::pin(futures_util::stream::iter(chunks.into_iter().map(Ok))),
        }
    }

    /// Stores the stream's answer in the response cache once it has ended without an error
    /// (a stream that breaks or is dropped before its end stores nothing).
    fn record(&mut self, router: Router, id: Identity, controls: Controls) {
        let chunks = std::mem::replace(&mut self.chunks, Box::pin(futures_util::stream::empty()));
        let end = Arc::clone(&self.end);
        let deployment_id = self.deployment_id.clone();
        let model_group = self.model_group.clone();
        let recorder = Recorder {
            router,
            id,
            controls,
            end,
            deployment_id,
            model_group,
        };
        let recorded = futures_util::stream::unfold(
            (chunks, Vec::new(), Some(recorder)),
            |(mut chunks, mut seen, recorder)| async move {
                use futures_util::StreamExt;
                match chunks.next().await {
                    Some(Ok(chunk)) => {
                        if recorder.is_some() {
                            seen.push(chunk.body.clone());
                        }
                        Some((Ok(chunk), (chunks, seen, recorder)))
                    }
                    // A broken stream is never stored.
                    Some(Err(error)) => Some((Err(error), (chunks, Vec::new(), None))),
                    None => {
                        if let Some(recorder) = recorder {
                            recorder.store(seen).await;
                        }
                        None
                    }
                }
            },
        );
        self.chunks = Box::pin(recorded);
    }

    /// The call's token usage, once the stream has ended cleanly (when the provider reported it).
    pub fn usage(&self) -> Option<ferrolite_types::Usage> {
        self.end.lock().and_then(|end| end.usage)
    }

    /// `x-litellm-response-cost`, once the stream has ended cleanly.
    pub fn response_cost(&self) -> Option<f64> {
        self.end.lock().and_then(|end| end.cost)
    }
}

/// What a recorded stream needs to store its answer when it ends.
struct Recorder {
    router: Router,
    id: Identity,
    controls: Controls,
    end: Arc<Mutex<Option<StreamEnd>>>,
    deployment_id: DeploymentId,
    model_group: String,
}

impl Recorder {
    async fn store(self, chunks: Vec<serde_json::Value>) {
        let Some(responses) = &self.router.inner.responses else {
            return;
        };
        let end = *self.end.lock();
        let Some(end) = end else {
            return;
        };
        let answer = RouterResponse {
            body: assemble(&chunks),
            usage: end.usage,
            deployment_id: self.deployment_id,
            model_group: self.model_group,
            attempted_retries: 0,
            max_retries: None,
            attempted_fallbacks: 0,
            api_base: None,
            response_cost: end.cost,
            overhead: Duration::ZERO,
            cache_hit: false,
            cache_key: None,
        };
        responses
            .keep(&self.id, &self.controls, &answer, Some(chunks))
            .await;
    }
}

impl futures_core::Stream for RouterStream {
    type Item = Result<BackendChunk, RouterError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.chunks.as_mut().poll_next(cx)
    }
}

/// The characters of generated text in a stream chunk: each choice's `delta.content`, `text`
/// and tool-call arguments.
fn streamed_text_len(body: &serde_json::Value) -> usize {
    let Some(choices) = body.get("choices").and_then(serde_json::Value::as_array) else {
        return 0;
    };
    let len =
        |v: Option<&serde_json::Value>| v.and_then(serde_json::Value::as_str).map_or(0, str::len);
    choices
        .iter()
        .map(|choice| {
            let delta = choice.get("delta");
            let calls: usize = delta
                .and_then(|d| d.get("tool_calls"))
                .and_then(serde_json::Value::as_array)
                .into_iter()
                .flatten()
                .map(|call| len(call.get("function").and_then(|f| f.get("arguments"))))
                .sum();
            len(delta.and_then(|d| d.get("content"))) + len(choice.get("text")) + calls
        })
        .sum()
}

/// The one place the router waits (retry backoff).
#[allow(clippy::disallowed_methods)]
async fn sleep(wait: Duration) {
    tokio::time::sleep(wait).await;
}

fn undo(permit: Permit) {
    if let Err(e) = permit.undo() {
        tracing::warn!(error = %e, "could not give an admission back");
    }
}

fn class_label(class: &ErrorClass) -> &'static str {
    match class {
        ErrorClass::RateLimited { .. } => "rate_limited",
        ErrorClass::Timeout => "timeout",
        ErrorClass::ContextWindowExceeded => "context_window",
        ErrorClass::ContentPolicy => "content_policy",
        ErrorClass::Authentication => "authentication",
        ErrorClass::PermissionDenied => "permission_denied",
        ErrorClass::NotFound => "not_found",
        ErrorClass::BadRequest { .. } => "bad_request",
        ErrorClass::BudgetExceeded => "budget_exceeded",
        ErrorClass::ServerError { .. } => "server_error",
        ErrorClass::Connection => "connection",
    }
}

/// Resolution (reference §2.3): a model group, an alias of one, a deployment id, a wildcard
/// group, the deployments with that `litellm_params.model`, else the first default fallback.
fn resolve(
    snapshot: &Snapshot,
    settings: &RouterSettings,
    model: &str,
) -> Result<Scope, RouterError> {
    let group = |name: &str| Scope::Group {
        name: name.to_string(),
        order: None,
    };
    if snapshot.groups.contains_key(model) {
        return Ok(group(model));
    }
    if let Some(target) = settings.model_group_alias.get(model) {
        return Ok(group(target));
    }
    if let Some(target) = snapshot.targets.by_id(&DeploymentId::new(model)) {
        return Ok(Scope::Deployment {
            ix: target.ix,
            id: model.to_string(),
        });
    }
    // Wildcard groups (`openai/*`, then the catch-all `*`), most specific first.
    if let Some((pattern, _)) = wildcard_group(&snapshot.patterns, model) {
        return Ok(group(pattern));
    }
    // A deployment's own model name (`litellm_params.model`, e.g. `azure/gpt-4o-eu`).
    let members: Vec<DeploymentIx> = snapshot
        .targets
        .iter()
        .filter(|t| snapshot.deployment(t.ix).is_some_and(|d| d.model == model))
        .map(|t| t.ix)
        .collect();
    if !members.is_empty() {
        return Ok(Scope::Model {
            name: model.to_string(),
            members,
        });
    }
    // LiteLLM's last resort: the first default fallback (`fallbacks: [{"*": [...]}]`).
    if let Some(first) = settings.default_fallbacks.first() {
        if first != model {
            return resolve(snapshot, settings, first);
        }
    }
    Err(RouterError::UnknownModel {
        model: model.to_string(),
    })
}

/// What `*` stands for when `pattern` (a group name like `openai/*` or `*`) matches `model`.
pub(crate) fn wildcard_capture<'m>(pattern: &str, model: &'m str) -> Option<&'m str> {
    let (prefix, suffix) = pattern.split_once('*')?;
    if suffix.contains('*') || model.len() < prefix.len() + suffix.len() {
        return None;
    }
    let middle = model.strip_prefix(prefix)?.strip_suffix(suffix)?;
    Some(middle)
}

/// The wildcard group serving `model` (most specific first) and what its `*` stands for: the
/// model matched as given, else as LiteLLM's pattern router also tries it, prefixed with the
/// provider LiteLLM infers for a bare name (`gpt-3.5-turbo` is served by `openai/*`).
pub(crate) fn wildcard_group<'p>(patterns: &'p [String], model: &str) -> Option<(&'p str, String)> {
    let prefixed = (!model.contains('/'))
        .then(|| ferrolite_types::Provider::from_model(model).ok())
        .flatten()
        .map(|provider| format!("{provider}/{model}"));
    for name in std::iter::once(model).chain(prefixed.as_deref()) {
        if let Some((pattern, capture)) = patterns
            .iter()
            .find_map(|p| wildcard_capture(p, name).map(|c| (p.as_str(), c.to_string())))
        {
            return Some((pattern, capture));
        }
    }
    None
}

/// The model a deployment is called with: its own, or for a wildcard deployment (`openai/*` in
/// a group `openai/*`, `*` in the group `*`) the requested model put in place of the `*`.
fn model_for<'d>(deployment: &'d Deployment, requested: &str) -> std::borrow::Cow<'d, str> {
    if deployment.model.contains('*') {
        let group = std::slice::from_ref(&deployment.model_name);
        if let Some((_, capture)) = wildcard_group(group, requested) {
            return deployment.model.replacen('*', &capture, 1).into();
        }
    }
    deployment.model.as_str().into()
}

/// The deployments of a scope, in configuration order (an `order` tier is chosen among the
/// available ones by [`filter_order`]).
/// A deployment's own `max_tokens` (`litellm_params`), sent with calls that set none.
fn default_max_tokens(deployment: Option<&ferrolite_types::Deployment>) -> Option<u64> {
    deployment
        .and_then(|d| d.default_params.get("max_tokens"))
        .and_then(serde_json::Value::as_u64)
}

/// Refuses a request whose `max_tokens` (or `max_completion_tokens`) is above the output
/// limit (`max_output_tokens`) of every deployment of `scope`: none of them could serve it.
/// A deployment without a known limit takes any `max_tokens`.
fn check_output_limit(
    snapshot: &Snapshot,
    scope: &Scope,
    request: &Request,
) -> Result<(), RouterError> {
    let Some(asked) = request.max_tokens else {
        return Ok(());
    };
    let mut limit = Some(0u64);
    for ix in members(snapshot, scope) {
        limit = match (
            limit,
            snapshot.deployment(ix).and_then(|d| d.max_output_tokens),
        ) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
    }
    match limit {
        Some(limit) if limit > 0 && asked > limit => {
            let field = crate::request::OUTPUT_FIELDS
                .into_iter()
                .find(|f| {
                    request
                        .body
                        .get(*f)
                        .and_then(serde_json::Value::as_u64)
                        .is_some_and(|v| v > limit)
                })
                .unwrap_or("max_tokens");
            Err(RouterError::InvalidRequest {
                field,
                value: format!(
                    "{asked} (`{}` produces at most {limit} output tokens)",
                    scope.label()
                ),
                reason: "a positive integer up to the model's output limit",
            })
        }
        _ => Ok(()),
    }
}

fn members<'s>(
    snapshot: &'s Snapshot,
    scope: &'s Scope,
) -> impl Iterator<Item = DeploymentIx> + 's {
    let (one, group) = match scope {
        Scope::Deployment { ix, .. } => (Some(*ix), &[][..]),
        Scope::Model { members, .. } => (None, members.as_slice()),
        Scope::Group { name, .. } => (
            None,
            snapshot.groups.get(name).map_or(&[][..], Vec::as_slice),
        ),
    };
    one.into_iter().chain(group.iter().copied())
}

/// LiteLLM's order filter (`get_order_filtered_deployments`), run on the deployments still
/// available (not cooling down, unhealthy, over budget or filtered out): a targeted tier keeps
/// its own deployments, possibly none (a lower tier is not picked again); otherwise the lowest
/// `order` among them wins and deployments without an `order` are left out — unless none of
/// the available ones has an `order`.
fn filter_order<'s>(
    snapshot: &'s Snapshot,
    target: Option<u32>,
    eligible: Vec<&'s Target>,
) -> Vec<&'s Target> {
    let order_of = |t: &Target| snapshot.deployment(t.ix).and_then(|d| d.order);
    let Some(order) = target.or_else(|| eligible.iter().filter_map(|t| order_of(t)).min()) else {
        return eligible;
    };
    eligible
        .into_iter()
        .filter(|t| order_of(t) == Some(order))
        .collect()
}

/// The attempt timeout (reference §2.10): a stream's `stream_timeout` (deployment, then router)
/// first; else the request's `timeout`, the deployment's, the router's.
fn attempt_timeout(
    settings: &RouterSettings,
    request: &Request,
    deployment: &Deployment,
) -> Duration {
    if request.stream {
        if let Some(t) = deployment
            .stream_timeout_duration()
            .or(settings.stream_timeout)
        {
            return t;
        }
    }
    request
        .timeout
        .or(deployment.timeout_duration())
        .unwrap_or(settings.timeout)
}
