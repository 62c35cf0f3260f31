//! The `Router`: its public face, and the spine of the call path. Each stage is a module of
//! its own, a method on the router's [`Inner`] that takes the request's running state
//! ([`Call`]) as `&mut Call`:
//!
//! ```text
//! Router::call / stream
//!   admit_key              the API key's rpm/tpm, once per request          keys.rs
//!   front                  the response cache: hit, lead, wait or bypass    response_cache.rs
//!   route                  validate, take the snapshot, resolve the model   resolve.rs
//!     with_fallbacks       the destination, then its fallback chain (context-window,
//!                          content-policy or generic, max_fallbacks, no target twice)
//!       order_levels       the group's `order` tiers, lowest first          fallback.rs
//!         with_retries     attempts until one succeeds or `Decide` says stop;
//!                          backoff between                                  retry.rs
//!           attempt        the wait queue, then filter -> pick -> admit -> call
//!             filter       health checks, cooldowns, budgets, tags, region,
//!                          context window, order tier, retry skips           filter.rs
//!             pick         the affinity pin, else the strategy on one usage view
//!             admit        rpm + tpm, concurrency slot, budget reservation,
//!                          half-open probe: one guard, `Held`                admit.rs
//!             call_deployment   the backend under the attempt timeout, then the
//!                          one place outcomes are recorded (`succeeded`,
//!                          `failed`: tokens, cost, latency, cooldown)         attempt.rs
//!   a stream's tail        its chunks; recorded through the same place when it
//!                          ends, given back by its `Held` when dropped       stream.rs
//! ```

use std::sync::Arc;

use arc_swap::ArcSwap;
use ferrolite_cache::DualCache;
use ferrolite_strategies::Rng;
use ferrolite_types::{Deployment, DeploymentId};
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::attempt::{Answer, Success};
use crate::backend::{Backend, BackendError};
use crate::call::{Call, Summary};
use crate::filter::check_output_limit;
use crate::inner::Inner;
use crate::keys::HeldKey;
use crate::queue::WaitQueue;
use crate::resolve::{Destination, default_max_tokens, members, resolve};
use crate::response_cache::{Controls, Front, ResponseCache};
use crate::retry_budget::RetryBudget;
use crate::snapshot::Snapshot;
use crate::stream::{RouterStream, Tail};
use crate::{
    Observer, Replicas, Request, RouterError, RouterResponse, RouterSettings, RouterState,
    StateOptions,
};

/// Routes calls to the deployments of model groups (see the crate documentation).
///
/// Cloning is cheap: clones share one router.
#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("groups", &self.model_groups())
            .finish_non_exhaustive()
    }
}

/// The error of a streamed request given to [`Router::call`].
fn streamed() -> RouterError {
    RouterError::InvalidRequest {
        field: "stream",
        value: "true".into(),
        reason: "a streamed call goes through Router::stream",
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
        let snapshot = Snapshot::build(&cache, &settings, &*backend, deployments, None)?;
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

    /// The cluster's routing state (see [`RouterState`]): per group and deployment its
    /// cooldown and cause, health, probe, rpm / tpm, leases, latency, errors, budget and
    /// history, and the live `replicas`, answered as `replicas`' own replica. Reads what is
    /// shared from memory, and what is only in Redis in one round trip per kind.
    pub async fn state(&self, replicas: &Replicas) -> RouterState {
        self.state_with(replicas, StateOptions::default()).await
    }

    /// [`Router::state`] with `options` (e.g. without each deployment's history).
    pub async fn state_with(&self, replicas: &Replicas, options: StateOptions) -> RouterState {
        self.inner.state(replicas, options).await
    }

    /// Runs every deployment's [`Backend::health_check`] at once (each under the router's
    /// timeout) and records the results in the shared state, so every instance's health-check
    /// routing sees them (LiteLLM's `enable_health_check_routing`). Call it on an interval
    /// (LiteLLM's proxy: every `health_check_interval`, 300 s); the gateway does. Returns each
    /// deployment's result.
    pub async fn check_health(&self) -> Vec<(DeploymentId, Result<(), BackendError>)> {
        self.inner.check_health().await
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
            &*self.inner.backend,
            list,
            Some(&current),
        )?;
        self.inner.snapshot.store(Arc::new(next));
        Ok(())
    }

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
        let Ok(destination) = resolve(&snapshot, &self.inner.settings, &request.model) else {
            return Ok(input.saturating_add(request.output_tokens(None)));
        };
        check_output_limit(&snapshot, &destination, request)?;
        let group = match &destination {
            Destination::Group { name, .. } => snapshot.groups.get(name),
            _ => None,
        };
        let default = match group {
            // Prepared with the snapshot.
            Some(group) => group.default_max_tokens,
            None => members(&snapshot, &destination)
                .filter_map(|ix| default_max_tokens(snapshot.deployment(ix)))
                .max(),
        };
        Ok(input.saturating_add(request.output_tokens(default)))
    }

    /// Routes one call: resolves `request.model`, picks and calls a deployment, retries, cools
    /// down and falls back as the settings say. A streamed call goes through [`Router::stream`].
    ///
    /// (Written as a function returning its future so that the request is kept once in the
    /// future, where an `async fn` keeps its argument and a copy of it.)
    #[allow(clippy::manual_async_fn)] // the `async fn` form would copy the request
    pub fn call(
        &self,
        mut request: Request,
    ) -> impl std::future::Future<Output = Result<RouterResponse, RouterError>> + Send + '_ {
        async move { self.call_owned(&mut request).await }
    }

    /// [`Router::call`] on the request it owns.
    async fn call_owned(&self, request: &mut Request) -> Result<RouterResponse, RouterError> {
        if request.stream {
            return Err(streamed());
        }
        let mut key = self.admit_key(request).await?;
        let mut answer = if self.inner.responses.is_none() {
            self.call_routed(request, &mut key).await
        } else {
            // Boxed: the cached path's future stays out of the uncached call's.
            Box::pin(self.call_cached(request, &mut key)).await
        };
        // Not handed to an attempt: the request failed, or the response cache answered it.
        if let Some(key) = key {
            key.unused();
        }
        if let Ok(answer) = &mut answer {
            if answer.cache_hit {
                // A stored answer, or another request's call: nothing was routed for this one.
                answer.route = request.explain.then(|| self.cache_hit_route(request));
            }
        }
        answer
    }

    /// The explanation of a request the response cache answered.
    fn cache_hit_route(&self, request: &Request) -> Box<crate::Route> {
        let route = crate::Route {
            model: request.model.clone(),
            strategy: self
                .inner
                .snapshot
                .load()
                .strategy
                .name()
                .as_str()
                .to_string(),
            cache_hit: true,
            ..crate::Route::default()
        };
        self.inner.explained(&route);
        Box::new(route)
    }

    /// Admits the request's API key ([`Request::key_limits`]) with its token estimate.
    async fn admit_key(&self, request: &mut Request) -> Result<Option<HeldKey>, RouterError> {
        if request.key_limits.is_none() {
            return Ok(None);
        }
        let tokens = self.token_estimate(request)?;
        let Some(limits) = &request.key_limits else {
            return Ok(None);
        };
        self.inner.admit_key(limits, tokens).await
    }

    /// [`Router::call`] through the response cache: a hit answers; the first of concurrent
    /// identical requests that miss routes the call and the others wait for its answer, each no
    /// longer than its deadline.
    async fn call_cached(
        &self,
        request: &Request,
        key: &mut Option<HeldKey>,
    ) -> Result<RouterResponse, RouterError> {
        let Some(responses) = &self.inner.responses else {
            return self.call_routed(request, key).await;
        };
        request.validate()?;
        self.serves(&request.model)?;
        let started = Instant::now();
        let deadline = request.deadline.or(self.inner.settings.request_deadline);
        loop {
            match responses
                .front(self.cache_group(request), &request.body, true)
                .await?
            {
                Front::Bypass => return self.call_routed(request, key).await,
                Front::Hit(remembered) => return Ok(remembered.answer(started)),
                Front::Lead(miss) => return miss.land(self.call_routed(request, key).await).await,
                Front::Wait(waiting) => {
                    if let Some(answer) = waiting.landed(deadline, started).await {
                        return answer;
                    }
                    // The leader was cancelled before it answered: look again.
                }
            }
        }
    }

    /// [`Router::call`] past the response cache.
    async fn call_routed(
        &self,
        request: &Request,
        key: &mut Option<HeldKey>,
    ) -> Result<RouterResponse, RouterError> {
        let (success, summary) = self.route(request, key).await?;
        let Answer::Complete {
            body,
            usage,
            cost,
            protocol,
        } = success.answer
        else {
            return Err(streamed());
        };
        Ok(RouterResponse {
            body,
            usage,
            deployment_id: success.deployment,
            model_group: success.model_group,
            attempted_retries: summary.retries.0,
            max_retries: summary.retries.1,
            attempted_fallbacks: summary.fallbacks,
            attempts: summary.attempts,
            api_base: summary.api_base,
            response_cost: cost,
            overhead: summary.overhead,
            cache_hit: false,
            cache_key: None,
            protocol,
            route: summary.route,
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
        let mut key = self.admit_key(&mut request).await?;
        let mut stream = if self.inner.responses.is_none() {
            self.stream_routed(&request, &mut key).await
        } else {
            // Boxed: the cached path's future stays out of the uncached stream's.
            Box::pin(self.stream_cached(&request, &mut key)).await
        };
        if let Ok(stream) = &mut stream {
            if stream.cache_hit && request.explain {
                stream.route = Some(self.cache_hit_route(&request));
            }
        }
        // Not handed to an attempt: the request failed, or the response cache answered it.
        if let Some(key) = key {
            key.unused();
        }
        stream
    }

    /// [`Router::stream`] through the response cache: a hit replays the stored answer; a miss
    /// routes the stream and stores its answer when it ends cleanly.
    async fn stream_cached(
        &self,
        request: &Request,
        key: &mut Option<HeldKey>,
    ) -> Result<RouterStream, RouterError> {
        let Some(responses) = &self.inner.responses else {
            return self.stream_routed(request, key).await;
        };
        let started = Instant::now();
        request.validate()?;
        self.serves(&request.model)?;
        let miss = match responses
            .front(self.cache_group(request), &request.body, false)
            .await?
        {
            Front::Hit(remembered) => return Ok(RouterStream::replay(&remembered, started)),
            Front::Lead(miss) => miss,
            // A stream joins no flight: `Wait` is only given to whole calls.
            Front::Bypass | Front::Wait(_) => return self.stream_routed(request, key).await,
        };
        let (id, controls) = miss.into_parts();
        let mut stream = self.stream_routed(request, key).await?;
        stream.cache_key = Some(id.key.clone());
        if !controls.no_store {
            stream.record(Arc::clone(&self.inner), id, controls);
        }
        Ok(stream)
    }

    /// [`Router::stream`] past the response cache.
    async fn stream_routed(
        &self,
        request: &Request,
        key: &mut Option<HeldKey>,
    ) -> Result<RouterStream, RouterError> {
        let (success, summary) = self.route(request, key).await?;
        let Answer::Stream(opened) = success.answer else {
            return Err(RouterError::InvalidRequest {
                field: "stream",
                value: "false".into(),
                reason: "the backend answered a streamed call with a whole response",
            });
        };
        let (first, tail) = Tail::new(Arc::clone(&self.inner), opened);
        Ok(RouterStream::new(
            success.deployment,
            success.model_group,
            summary,
            first,
            tail,
        ))
    }

    /// The call path shared by [`Router::call`] and [`Router::stream`]: the request's [`Call`]
    /// on the current snapshot, through its destination and fallbacks. The API key's admission
    /// goes to the attempt that answers; a failed request gives it back in `key`.
    async fn route(
        &self,
        request: &Request,
        key: &mut Option<HeldKey>,
    ) -> Result<(Success, Summary), RouterError> {
        request.validate()?;
        let started = Instant::now();
        let snapshot = self.inner.snapshot.load_full();
        let destination = resolve(&snapshot, &self.inner.settings, &request.model)?;
        check_output_limit(&snapshot, &destination, request)?;
        let primary = destination.label().to_string();
        let deadline = self.inner.settings.request_deadline;
        let mut call = Call::new(snapshot, request, started, deadline, &primary);
        call.key = key.take();
        metrics::counter!("ferrolite_router_requests_total").increment(1);
        match self
            .inner
            .with_fallbacks(&mut call, destination, &request.model)
            .await
        {
            Ok(success) => {
                let route = call.explain.take().map(|recorder| {
                    let mut route = recorder.into_inner().finish(None);
                    route.model_group = Some(success.model_group.clone());
                    route.deployment = Some(success.deployment.as_str().to_string());
                    self.inner.explained(&route);
                    Box::new(route)
                });
                let overhead = call.started.elapsed().saturating_sub(call.outside);
                let snapshot = &call.snapshot;
                let answered = snapshot.targets.by_id(&success.deployment);
                let api_base = answered
                    .and_then(|t| snapshot.deployment(t.ix))
                    .and_then(|d| d.api_base.clone());
                if let Some((litellm, position)) = answered.and_then(|t| snapshot.litellm(t.ix)) {
                    litellm.answered(position, call.started.elapsed());
                }
                metrics::histogram!("ferrolite_router_overhead_seconds")
                    .record(overhead.as_secs_f64());
                let summary = Summary {
                    retries: call.answered_retries,
                    fallbacks: call.fallbacks,
                    attempts: call.attempts,
                    api_base,
                    overhead,
                    route,
                };
                Ok((success, summary))
            }
            Err(failure) => {
                metrics::counter!("ferrolite_router_failures_total").increment(1);
                if let Some(recorder) = call.explain.take() {
                    let route = recorder.into_inner().finish(Some(failure.describe()));
                    self.inner.explained(&route);
                    if let Some(slot) = &request.failed_route {
                        slot.put(Box::new(route));
                    }
                }
                *key = call.key.take();
                Err(failure.into_error(primary, call.tried))
            }
        }
    }
}
