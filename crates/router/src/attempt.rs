//! One attempt on a destination: filter, pick (the affinity pin or the strategy), admit, call
//! the deployment under the attempt timeout — and the one place a call's outcome is recorded
//! ([`Inner::succeeded`], [`Inner::failed`]), for whole answers and for streams alike.

use std::sync::Arc;
use std::time::Duration;

use ferrolite_strategies::{CallOutcome, Candidates, Outcome, RouteContext, StrategyError, Target};
use ferrolite_types::{Deployment, DeploymentId, DeploymentIx, ErrorClass, Usage};
use futures_util::StreamExt;
use tokio::time::Instant;

use crate::admit::{Held, Refused};
use crate::backend::{BackendChunk, BackendError, BackendRequest, BackendResponse, BackendStream};
use crate::call::{Call, Failure};
use crate::cooldown;
use crate::explain::{Excluded, class_label};
use crate::inner::Inner;
use crate::queue::Ticket;
use crate::resolve::{Destination, model_for};
use crate::snapshot::Snapshot;
use crate::{Event, Request, RouterError, RouterSettings, Tried};

/// A successful attempt.
pub(crate) struct Success {
    pub(crate) answer: Answer,
    pub(crate) deployment: DeploymentId,
    pub(crate) model_group: String,
}

/// What a successful attempt answered.
pub(crate) enum Answer {
    /// A whole response, recorded already.
    Complete {
        body: crate::Body,
        usage: Option<Usage>,
        cost: Option<f64>,
        protocol: ferrolite_types::Protocol,
    },
    /// A stream's first chunk and the rest, recorded when it ends.
    Stream(Box<Opened>),
}

/// A stream an attempt opened: its first chunk, the rest, and what its call holds until the
/// stream ends.
pub(crate) struct Opened {
    /// The snapshot the call was routed on, and the deployment streaming.
    pub(crate) snapshot: Arc<Snapshot>,
    pub(crate) ix: DeploymentIx,
    pub(crate) first: BackendChunk,
    pub(crate) rest: BackendStream,
    /// What the call holds; taken when the stream's outcome is recorded.
    pub(crate) held: Option<Held>,
    /// When the attempt started, and how long its first chunk took.
    pub(crate) started: Instant,
    pub(crate) time_to_first_token: Duration,
    /// Whether the destination has a fallback chain (a failure's cooldown reads it).
    pub(crate) has_fallbacks: bool,
    /// The request's failed attempts before this one.
    pub(crate) tried: Vec<Tried>,
}

/// What a call that answered reports for its recording.
pub(crate) struct Delivered {
    pub(crate) usage: Option<Usage>,
    pub(crate) latency: Duration,
    pub(crate) time_to_first_token: Option<Duration>,
    /// Whether the call was streamed (its time to first token is a stream's).
    pub(crate) streamed: bool,
}

/// A deployment picked and admitted.
struct Picked {
    ix: DeploymentIx,
    held: Held,
    /// The request's affinity key in the destination, to pin on success.
    affinity: Option<String>,
}

/// What the backend answered an attempt.
enum Reply {
    Complete(BackendResponse),
    Stream {
        first: BackendChunk,
        rest: BackendStream,
    },
}

impl Inner {
    /// One attempt, waiting its turn in the group's queue while the group has no capacity
    /// (with a wait queue; without one the first "no capacity" is the answer).
    pub(crate) async fn attempt(
        &self,
        call: &mut Call<'_>,
        destination: &Destination,
        skip: &[DeploymentIx],
    ) -> Result<Success, Failure> {
        let Some(queue) = &self.queue else {
            return self.attempt_once(call, destination, skip, &mut None).await;
        };
        let label = destination.label();
        let priority = call.request.priority.or(self.settings.default_priority);
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
                    .attempt_once(call, destination, skip, &mut ticket)
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

    /// One attempt: filter, pick, admit, call. A queued request leaves its queue (`ticket`) the
    /// moment it is admitted, before its call runs, so the next waiter can take another free
    /// slot at once.
    async fn attempt_once(
        &self,
        call: &mut Call<'_>,
        destination: &Destination,
        skip: &[DeploymentIx],
        ticket: &mut Option<Ticket<'_>>,
    ) -> Result<Success, Failure> {
        // Scoped: the result does not stay in the future's state across the call below.
        let Picked { ix, held, affinity } = {
            let picked = self.pick(call, destination, skip).await;
            call.explain(|r| r.end_pick(picked.as_ref().err().map(Failure::describe)));
            picked?
        };
        // Admitted: out of the queue, which wakes the next waiter.
        drop(ticket.take());
        let result = self.call_deployment(call, destination, held).await;
        let snapshot = &call.snapshot;
        if !matches!(
            &result,
            Ok(Success {
                answer: Answer::Stream(_),
                ..
            })
        ) {
            // The call ended: its slot is free for the head of the queue.
            if let Some(target) = snapshot.target(ix) {
                self.wake_queue(&target.model_name);
            }
        }
        if let (Ok(_), Some(key), Some(target)) = (&result, &affinity, snapshot.target(ix)) {
            Box::pin(self.pin(key, target)).await;
        }
        result
    }

    /// Filters the destination's deployments and picks one that admits the call: the affinity
    /// pin while it is eligible and has room, else the strategy's pick; a deployment that
    /// turns out full is left out and the pick runs again among the others.
    async fn pick(
        &self,
        call: &Call<'_>,
        destination: &Destination,
        skip: &[DeploymentIx],
    ) -> Result<Picked, Failure> {
        let snapshot: &Snapshot = &call.snapshot;
        let mut eligible = self.filter(call, destination, skip).await?;
        let affinity = self.affinity_key(call, destination);
        let mut pinned = match &affinity {
            Some(key) => Box::pin(self.pinned(snapshot, key, eligible.candidates())).await,
            None => None,
        };
        let ctx = RouteContext {
            model_group: destination.label(),
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
            let target = if let Some(target) = pinned.take() {
                call.explain(|r| r.pinned());
                target
            } else {
                let view = snapshot.usage.view();
                if call.explain.is_some() {
                    explain_pick(call, &ctx, &eligible, &view);
                }
                match snapshot.strategy.pick(&ctx, eligible.candidates(), &view) {
                    Ok(target) => target,
                    Err(StrategyError::NoCapacity(no)) => {
                        return Err(Failure::Selection(RouterError::NoCapacity(no.to_string())));
                    }
                    Err(e) => return Err(Failure::Other(e.into())),
                }
            };
            match self.admit(call, target).await {
                Ok(held) => {
                    call.explain(|r| r.picked(target.id.as_str()));
                    return Ok(Picked {
                        ix: target.ix,
                        held,
                        affinity,
                    });
                }
                Err(Refused::Full(reason)) => {
                    // Another request took the last slot, or the budget: pick again among the others.
                    call.explain(|r| {
                        r.exclude(target.ix, Excluded::Full, Some(reason.to_string()))
                    });
                    eligible.remove(target.ix);
                    if eligible.is_empty() {
                        return Err(Failure::Selection(reason));
                    }
                }
                Err(Refused::Failed(failure)) => return Err(failure),
            }
        }
    }

    /// The cache key of the request's affinity pin in `destination`: a hash of the key (a
    /// user's API key must never be stored), per group.
    fn affinity_key(&self, call: &Call<'_>, destination: &Destination) -> Option<String> {
        use sha2::Digest;
        if !self.settings.deployment_affinity {
            return None;
        }
        let key = call.request.affinity_key.as_deref()?;
        let digest = sha2::Sha256::digest(key.as_bytes());
        let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        Some(format!("affinity:{}:{hex}", destination.label()))
    }

    /// The pinned deployment, when it is among the eligible ones (not cooled down, unhealthy,
    /// over budget or filtered out).
    async fn pinned<'s>(
        &self,
        snapshot: &'s Snapshot,
        key: &str,
        eligible: Candidates<'s, '_>,
    ) -> Option<&'s Target> {
        let id = match self.cache.kv().get(key).await {
            Ok(id) => id?,
            Err(e) => {
                tracing::debug!(error = %e, "could not read an affinity pin");
                return None;
            }
        };
        let target = snapshot.targets.by_id(&DeploymentId::new(&*id))?;
        eligible.contains(target.ix).then_some(target)
    }

    /// Pins the request's affinity key to `target` (when it is not pinned there already).
    async fn pin(&self, key: &str, target: &Target) {
        let cache = &self.cache;
        if cache.kv().get(key).await.ok().flatten().as_deref() == Some(target.id.as_str()) {
            return;
        }
        let ttl = self.settings.deployment_affinity_ttl;
        if let Err(e) = cache.kv().set(key, target.id.as_str(), ttl).await {
            tracing::debug!(error = %e, "could not pin an affinity key");
        }
    }

    /// Calls the admitted deployment under the attempt timeout and records the outcome (a
    /// stream's when it ends).
    async fn call_deployment(
        &self,
        call: &mut Call<'_>,
        destination: &Destination,
        mut held: Held,
    ) -> Result<Success, Failure> {
        let snapshot = &call.snapshot;
        let (Some(deployment), Some(target)) =
            (snapshot.deployment(held.ix()), snapshot.target(held.ix()))
        else {
            held.cancel().await;
            return Err(Failure::Other(RouterError::NoCapacity(
                "a deployment left the snapshot".to_string(),
            )));
        };
        let mut request = backend_request(call.request, deployment, destination.label());
        request.deployment_id = Some(target.id.clone());
        request.prepared = snapshot.prepared(held.ix()).cloned();
        let timeout = attempt_timeout(&self.settings, call.request, deployment);
        let started = Instant::now();
        let (until, callers) = match call.deadline {
            Some((deadline, _)) if deadline < started + timeout => (deadline, true),
            _ => (started + timeout, false),
        };
        // The attempt's span (when the request is traced): its context goes upstream.
        let traced = crate::spans::attempt(call);
        request.trace = traced.as_ref().map(|t| t.parent.clone());
        call.waited_ms = 0;
        call.attempts += 1;
        self.emit(Event::Attempt {
            model_group: &deployment.model_name,
            deployment: &target.id,
        });
        let open = self.open(deployment, &request);
        let opened = held.renewing(open, self.settings.lease_ttl);
        let result = tokio::time::timeout_at(until, opened).await;
        let latency = started.elapsed();
        call.outside += latency;
        let model_group = deployment.model_name.clone();
        // The attempt's span, handed on as it ends (nothing when the request is not traced).
        let end_span = |call: &Call<'_>, ended| {
            crate::spans::ended(call, traced.as_ref(), deployment, &target.id, ended);
        };
        let (class, message) = match result {
            Ok(Ok(Reply::Stream { first, rest })) => {
                call.explain(|r| {
                    r.attempt(target.id.as_str(), &model_group, "streaming", None, latency);
                });
                end_span(
                    call,
                    crate::spans::Ended::Answered {
                        model: None,
                        usage: first.usage.as_ref(),
                    },
                );
                metrics::histogram!("ferrolite_router_ttft_seconds").record(latency.as_secs_f64());
                held.answer_for(call.key.take());
                held.stream(Arc::clone(snapshot), call.input_tokens);
                held.streamed(&first);
                let opened = Opened {
                    snapshot: Arc::clone(snapshot),
                    ix: target.ix,
                    first,
                    rest,
                    held: Some(held),
                    started,
                    time_to_first_token: latency,
                    has_fallbacks: self.has_fallbacks(destination.label()),
                    tried: call.tried.clone(),
                };
                return Ok(Success {
                    answer: Answer::Stream(Box::new(opened)),
                    deployment: target.id.clone(),
                    model_group,
                });
            }
            Ok(Ok(Reply::Complete(response)))
                if !self.content_filtered(&response.body, &model_group) =>
            {
                call.explain(|r| {
                    r.attempt(target.id.as_str(), &model_group, "success", None, latency);
                });
                if traced.is_some() {
                    let model = response.body.str("model");
                    end_span(
                        call,
                        crate::spans::Ended::Answered {
                            model: model.as_deref(),
                            usage: response.usage.as_ref(),
                        },
                    );
                }
                held.answer_for(call.key.take());
                let delivered = Delivered {
                    usage: response.usage,
                    latency,
                    time_to_first_token: response.time_to_first_token,
                    streamed: false,
                };
                let cost = self.succeeded(snapshot, &mut held, &delivered).await;
                return Ok(Success {
                    answer: Answer::Complete {
                        body: response.body,
                        usage: response.usage,
                        cost,
                        protocol: response.protocol,
                    },
                    deployment: target.id.clone(),
                    model_group,
                });
            }
            Ok(Ok(Reply::Complete(_))) => (
                ErrorClass::ContentPolicy,
                "Response output was blocked.".to_string(),
            ),
            Ok(Err(error)) => (error.class, error.message),
            Err(_) if callers => {
                end_span(call, crate::spans::Ended::Failed(&ErrorClass::Timeout));
                // The caller's own deadline: no deployment is blamed, nothing is retried.
                call.explain(|r| {
                    r.attempt(target.id.as_str(), &model_group, "deadline", None, latency);
                });
                held.fail(snapshot).await;
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
        call.explain(|r| {
            r.attempt(
                target.id.as_str(),
                &model_group,
                "error",
                Some(&class),
                latency,
            );
        });
        end_span(call, crate::spans::Ended::Failed(&class));
        let has_fallbacks = self.has_fallbacks(destination.label());
        Box::pin(self.failed(snapshot, &mut held, has_fallbacks, &class, &message)).await;
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
    ) -> Result<Reply, BackendError> {
        let backend = &self.backend;
        if !request.stream {
            return backend.call(deployment, request).await.map(Reply::Complete);
        }
        let mut rest = backend.stream(deployment, request).await?;
        match rest.next().await {
            Some(Ok(first)) => Ok(Reply::Stream { first, rest }),
            Some(Err(error)) => Err(error),
            None => Err(BackendError::new(
                ErrorClass::Connection,
                "the stream ended before its first chunk",
            )),
        }
    }

    /// Records a call that answered (a whole response, or a stream that ended cleanly) and
    /// settles what it held: a half-open deployment's probe closes its probation, the actual
    /// tokens settle the rpm/tpm estimate, the cost settles the budget reservation, then the
    /// success count, the retry budget's deposit, the observers, the metrics and the strategy's
    /// latency. Returns the cost.
    pub(crate) async fn succeeded(
        &self,
        snapshot: &Snapshot,
        held: &mut Held,
        delivered: &Delivered,
    ) -> Option<f64> {
        let ix = held.ix();
        let Some(target) = snapshot.target(ix) else {
            return held.succeed(snapshot, delivered.usage.as_ref()).await;
        };
        if held.probing() {
            self.close_probation(snapshot, target).await;
        }
        let cost = held.succeed(snapshot, delivered.usage.as_ref()).await;
        if snapshot.health.get(ix).is_some() {
            if let Err(e) = snapshot.outcomes.successes.increment(ix.index(), 1) {
                tracing::debug!(error = %e, "could not count a success");
            }
        }
        if let Some(budget) = &self.retry_budget {
            budget.deposit(self.now_ms());
        }
        let &Delivered {
            usage,
            latency,
            time_to_first_token,
            streamed,
        } = delivered;
        if let Some((litellm, position)) = snapshot.litellm(ix) {
            // LiteLLM's `get_remaining_model_group_usage`: the limit less the window's use.
            let remaining = if target.rpm.is_some() || target.tpm.is_some() {
                let view = snapshot.usage.view();
                (
                    target
                        .rpm
                        .map(|limit| (limit as f64 - view.rpm(ix)).max(0.0)),
                    target
                        .tpm
                        .map(|limit| (limit as f64 - view.tpm(ix)).max(0.0)),
                )
            } else {
                (None, None)
            };
            litellm.succeeded(
                position,
                &crate::litellm::Succeeded {
                    latency,
                    time_to_first_token: time_to_first_token.filter(|_| streamed),
                    usage: usage.as_ref(),
                    cost,
                    remaining,
                },
            );
        }
        self.emit(Event::Success {
            deployment: &target.id,
            latency,
        });
        metrics::histogram!("ferrolite_router_latency_seconds").record(latency.as_secs_f64());
        if let Some(ttft) = time_to_first_token {
            metrics::histogram!("ferrolite_router_ttft_seconds").record(ttft.as_secs_f64());
        }
        if let Some(recent) = snapshot.recent.get(ix) {
            recent.success(
                self.now_ms(),
                latency.as_secs_f64() * 1e3,
                time_to_first_token.map(|t| t.as_secs_f64() * 1e3),
            );
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

    /// Records a call that went out and failed with `class` (a whole call, or a stream that
    /// broke after its first chunk) and gives back what it held: the strategy's and the
    /// observers' view, the failure metric, and the cooldown the rules decide (LiteLLM's
    /// `router_utils/cooldown_handlers.py`), decided while a half-open deployment's probe is
    /// still held.
    pub(crate) async fn failed(
        &self,
        snapshot: &Snapshot,
        held: &mut Held,
        has_fallbacks: bool,
        class: &ErrorClass,
        message: &str,
    ) {
        if let Some(target) = snapshot.target(held.ix()) {
            self.record_failure(snapshot, target, has_fallbacks, class, message)
                .await;
        }
        held.fail(snapshot).await;
    }

    /// A success of a half-open deployment closes it again, for every instance.
    async fn close_probation(&self, snapshot: &Snapshot, target: &Target) {
        let Some(health) = snapshot.health.get(target.ix) else {
            return;
        };
        let Some(probation) = &health.probation else {
            return;
        };
        let now = self.now_ms();
        if probation.half_open(&health.cooldown, now) {
            let closed = now + crate::snapshot::PROBATION.as_millis() as u64;
            if let Err(e) = Box::pin(probation.passed.extend_to(closed)).await {
                tracing::warn!(error = %e, "could not record a recovery");
            }
            tracing::info!(deployment = %target.id, "deployment recovered from its cooldown");
        }
    }

    /// The failure's record: the strategy's and the observers' view, the metric, the cooldown.
    async fn record_failure(
        &self,
        snapshot: &Snapshot,
        target: &Target,
        has_fallbacks: bool,
        class: &ErrorClass,
        message: &str,
    ) {
        snapshot.strategy.observe(target, &Outcome::Failure(class));
        if let Some(recent) = snapshot.recent.get(target.ix) {
            recent.failure(self.now_ms());
        }
        self.emit(Event::Failure {
            deployment: &target.id,
            class,
        });
        metrics::counter!("ferrolite_router_attempt_failures_total", "class" => class_label(class))
            .increment(1);
        if let Some((litellm, position)) = snapshot.litellm(target.ix) {
            litellm.failed(position, class);
        }
        let (Some(health), Some(deployment)) = (
            snapshot.health.get(target.ix),
            snapshot.deployment(target.ix),
        ) else {
            return;
        };
        let incident = cooldown::Incident {
            deployment,
            id: &target.id,
            outcomes: &snapshot.outcomes,
            position: target.ix.index(),
            class,
            group_size: snapshot
                .groups
                .get(&deployment.model_name)
                .map_or(1, |g| g.len()),
            has_fallbacks,
        };
        let settings = &self.settings;
        let now = self.now_ms();
        let half_open = health
            .probation
            .as_ref()
            .is_some_and(|p| p.half_open(&health.cooldown, now));
        let decided = cooldown::decide(settings, &self.cache, &incident).await;
        // A failed probe cools the deployment down again at once (circuit breakers' half-open).
        let decided = match decided {
            None if half_open && class.is_cooldown_relevant() && !settings.disable_cooldowns => {
                cooldown::cooldown_length(settings, deployment, class)
            }
            decided => decided,
        };
        if let Some(length) = decided {
            let until = self.now_ms() + length.as_millis() as u64;
            if let Err(e) = health.cooldown.extend_to(until).await {
                tracing::warn!(error = %e, "could not record a cooldown");
            }
            // Its cause beside it, for every replica's `Router::state`.
            self.record_cause(&target.id, class, message, length).await;
            metrics::counter!("ferrolite_router_cooldowns_total").increment(1);
            if let Some((litellm, position)) = snapshot.litellm(target.ix) {
                litellm.cooled_down(position, class);
            }
            self.emit(Event::CooldownSet {
                deployment: &target.id,
                until_ms: until,
                class,
            });
            tracing::info!(deployment = %target.id, ?class, cooldown = ?length, "deployment cooled down");
        }
    }

    /// Stores why `id` was cooled down (class, status, the start of the message, redacted)
    /// for as long as the cooldown lasts.
    async fn record_cause(
        &self,
        id: &DeploymentId,
        class: &ErrorClass,
        message: &str,
        length: Duration,
    ) {
        let cause = crate::state::Cause::of(class, message);
        let Ok(cause) = serde_json::to_string(&cause) else {
            return;
        };
        let key = crate::state::cause_key(id);
        if let Err(e) = self.cache.kv().set(&key, &cause, length).await {
            tracing::debug!(error = %e, "could not record a cooldown's cause");
        }
    }

    /// A non-streamed response the provider cut with `finish_reason: content_filter` counts as a
    /// content-policy error when content-policy fallbacks exist for the group (LiteLLM).
    fn content_filtered(&self, body: &crate::Body, group: &str) -> bool {
        self.settings.content_policy_fallbacks.contains_key(group)
            && finish_reason(body).as_deref() == Some("content_filter")
    }
}

/// `choices[0].finish_reason` of an answer, read from its bytes.
fn finish_reason(body: &crate::Body) -> Option<std::borrow::Cow<'_, str>> {
    let choices = crate::body::items(body.raw("choices")?.get())?;
    let [reason] = crate::body::fields(choices.first()?.get(), ["finish_reason"])?;
    crate::body::string_of(reason?)
}

/// The body a deployment is called with: the request's, with the deployment's model, without
/// the router's own fields, with a client-side fallback object's fields for the hop `label`,
/// and with the deployment's default parameters where the request sets none.
fn backend_request(request: &Request, deployment: &Deployment, label: &str) -> BackendRequest {
    let mut body = request.body.clone();
    if let Some(object) = body.as_object_mut() {
        let model = model_for(deployment, &request.model).into_owned();
        object.insert("model".into(), model.into());
        for field in crate::request::ROUTING_FIELDS {
            object.remove(field);
        }
        // A client-side fallback given as an object (`{"model": "b", "messages": [...]}`):
        // its other fields replace the request's for that hop (LiteLLM's client-side fallbacks).
        let hop = request
            .body
            .get("fallbacks")
            .and_then(serde_json::Value::as_array)
            .and_then(|hops| {
                hops.iter()
                    .find(|hop| hop.get("model").and_then(serde_json::Value::as_str) == Some(label))
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
    BackendRequest {
        body,
        stream: request.stream,
        request_id: request.request_id.clone(),
        deployment_id: None,
        prepared: None,
        native: request.native.clone(),
        trace: None,
    }
}

/// The attempt timeout (LiteLLM's `_get_timeout`): a stream's `stream_timeout` (deployment, then
/// router) first; else the request's `timeout`, the deployment's, the router's.
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

/// Records the strategy's view of the candidates left by the filters: each one's score, and
/// those at their rpm or tpm limit (which the strategy passes over) with the numbers.
fn explain_pick(
    call: &Call<'_>,
    ctx: &RouteContext<'_>,
    eligible: &crate::filter::Selection<'_>,
    view: &ferrolite_strategies::UsageView<'_>,
) {
    let strategy = &call.snapshot.strategy;
    let tokens = ctx.estimated_tokens();
    call.explain(|r| {
        r.by_strategy();
        for target in eligible.candidates().iter() {
            if let Some(score) = strategy.score(ctx, target, view) {
                r.score(target.ix, score.name, score.value);
            }
            if view.fits(target, tokens) {
                continue;
            }
            let rpm = view.rpm(target.ix);
            match target.rpm {
                Some(limit) if limit == 0 || rpm + 1.0 > limit as f64 + 1e-9 => {
                    r.exclude(target.ix, Excluded::Rpm, Some(format!("rpm {rpm}/{limit}")));
                    continue;
                }
                _ => {}
            }
            let tpm = view.tpm(target.ix);
            let limit = target
                .tpm
                .map_or_else(|| "none".to_string(), |l| l.to_string());
            r.exclude(
                target.ix,
                Excluded::Tpm,
                Some(format!("tpm {tpm} + {tokens} > {limit}")),
            );
        }
    });
}
