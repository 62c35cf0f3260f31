//! Admission: what a call on one deployment takes before it goes out — the rpm/tpm permit, a
//! concurrency slot, the half-open probe, the budget reservation — and the calling API key's
//! rpm/tpm, taken once per request (`keys.rs`); held by one guard, [`Held`], which is the
//! only place any of it is given back.

use std::sync::Arc;
use std::time::Duration;

use ferrolite_budgets::{BudgetError, Reservation};
use ferrolite_cache::Lease;
use ferrolite_strategies::{Permit, StrategyError, Target};
use ferrolite_types::{Deployment, DeploymentIx, Usage};
use tokio::time::Instant;

use crate::RouterError;
use crate::backend::BackendChunk;
use crate::call::{Call, Failure};
use crate::inner::Inner;
use crate::keys::HeldKey;
use crate::resolve::default_max_tokens;
use crate::snapshot::{LocalSlot, Snapshot};

/// Everything an admitted call holds until it ends, and the one place it is given back.
///
/// Its ends take `&mut self` (a call's future then holds one guard, not a copy per await
/// level) and leave it empty: a guard that has ended gives nothing back again when dropped.
///
/// How it ends decides what is given back:
/// - [`Held::succeed`]: the call answered. The rpm/tpm window keeps the request with its
///   actual tokens (and so does the calling API key's, when this call answers for it), the
///   budget is charged the actual cost, the slot and probe are freed and the call leaves the
///   in-flight count.
/// - [`Held::fail`]: the call went out and failed (or ran past the caller's deadline). The
///   window keeps the request and its estimated tokens (the provider saw it), the budget hold
///   is released without a charge — or, for a stream that broke, charged the usage the
///   provider reported — and the rest is freed.
/// - [`Held::cancel`]: the call did not go ahead. Everything is given back: the request and
///   its tokens leave the rpm/tpm window ("undo" of the permit), the budget hold is released.
/// - Dropped (a timeout or a client that went away): the permit is dropped (the call leaves
///   the in-flight count; the window keeps the request, as it reached the provider), a local
///   slot goes back at once, a shared slot and the probe with the state's next sync, and the
///   budget hold is released — or, for a stream
///   dropped before its end, charged for what the provider generated so far: its reported
///   usage, else the input and the streamed text at about four characters a token.
pub(crate) struct Held {
    ix: DeploymentIx,
    permit: Option<Permit>,
    slot: Option<Slot>,
    /// The half-open probe's lease, when the deployment is half-open.
    probe: Option<Lease>,
    reservation: Option<Reservation>,
    /// The calling API key's admission, once this call answers the request.
    key: Option<HeldKey>,
    /// A stream's progress, once the call streams (what a drop charges).
    stream: Option<Streamed>,
}

/// What a stream has delivered so far.
struct Streamed {
    snapshot: Arc<Snapshot>,
    /// The request's input tokens (as admitted).
    input_tokens: u64,
    /// The last usage a chunk reported.
    usage: Option<Usage>,
    /// Characters of generated text streamed so far.
    chars: usize,
}

/// A concurrency slot held for one call.
enum Slot {
    /// An explicit cap's slot, shared by every instance.
    Shared(Lease),
    /// A derived cap's slot, in this instance.
    Local(LocalSlot),
}

/// Why admission gave nothing.
pub(crate) enum Refused {
    /// The deployment is full (rpm/tpm, concurrency) or over budget: try another.
    Full(RouterError),
    /// Something else failed: stop.
    Failed(Failure),
}

impl Held {
    /// The deployment admitted.
    pub(crate) fn ix(&self) -> DeploymentIx {
        self.ix
    }

    /// The call answers the request: it holds the API key's admission from now on, settled
    /// with the call.
    pub(crate) fn answer_for(&mut self, key: Option<HeldKey>) {
        self.key = key;
    }

    /// Whether the call is the half-open deployment's probe.
    pub(crate) fn probing(&self) -> bool {
        self.probe.is_some()
    }

    /// Runs `work` (the call, or a stream's next chunk) while holding the slot: a shared slot
    /// is renewed every third of `ttl` while it runs.
    pub(crate) async fn renewing<F: std::future::Future>(
        &self,
        work: F,
        ttl: Duration,
    ) -> F::Output {
        match &self.slot {
            Some(Slot::Shared(lease)) => renewing(work, lease, ttl).await,
            _ => work.await,
        }
    }

    /// The call streams from now on, on `snapshot`, having admitted `input_tokens`: its chunks
    /// are counted ([`Held::streamed`]) for what a drop charges.
    pub(crate) fn stream(&mut self, snapshot: Arc<Snapshot>, input_tokens: u64) {
        self.stream = Some(Streamed {
            snapshot,
            input_tokens,
            usage: None,
            chars: 0,
        });
    }

    /// Counts a chunk the stream delivered.
    pub(crate) fn streamed(&mut self, chunk: &BackendChunk) {
        if let Some(stream) = &mut self.stream {
            if chunk.usage.is_some() {
                stream.usage = chunk.usage;
            }
            stream.chars += streamed_text_len(&chunk.body);
        }
    }

    /// The last usage the stream reported.
    pub(crate) fn stream_usage(&self) -> Option<Usage> {
        self.stream.as_ref().and_then(|s| s.usage)
    }

    /// The call answered with `usage`: settles the rpm/tpm estimate (the deployment's and the
    /// API key's) to the actual tokens and the budget reservation to the cost, gives back the slot and the probe, and leaves the
    /// in-flight count. Returns the cost (when the usage is known).
    pub(crate) async fn succeed(
        &mut self,
        snapshot: &Snapshot,
        usage: Option<&Usage>,
    ) -> Option<f64> {
        release(self.slot.take()).await;
        if let (Some(u), Some(permit)) = (usage, &mut self.permit) {
            if let Err(e) = permit.settle_tokens(u.total_tokens) {
                tracing::warn!(error = %e, "could not settle tokens");
            }
        }
        if let Some(key) = self.key.take() {
            key.settle(usage.map(|u| u.total_tokens));
        }
        let cost = usage.map(|u| cost_of(snapshot.deployment(self.ix), *u));
        if let Some(reservation) = self.reservation.take() {
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
        end_probe(self.probe.take()).await;
        drop(self.permit.take());
        cost
    }

    /// The call went out and failed: gives back the slot and the probe, releases the budget
    /// hold (a broken stream is charged the usage its provider reported), and leaves the
    /// in-flight count; the rpm/tpm window keeps the request.
    pub(crate) async fn fail(&mut self, snapshot: &Snapshot) {
        release(self.slot.take()).await;
        drop(self.permit.take());
        if let Some(reservation) = self.reservation.take() {
            let settled = match self.stream_usage() {
                Some(usage) => {
                    let cost = cost_of(snapshot.deployment(self.ix), usage);
                    snapshot.ledger.settle(reservation, cost)
                }
                None => snapshot.ledger.release(reservation),
            };
            if let Err(e) = settled {
                tracing::warn!(error = %e, "could not release a budget reservation");
            }
        }
        end_probe(self.probe.take()).await;
    }

    /// The call does not go ahead: gives back everything, the request and its tokens included.
    pub(crate) async fn cancel(&mut self) {
        release(self.slot.take()).await;
        if let Some(permit) = self.permit.take() {
            undo(permit);
        }
        drop(self.reservation.take());
        end_probe(self.probe.take()).await;
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // The slot and the in-flight count first (a waiter may take them at once).
        drop(self.slot.take());
        drop(self.permit.take());
        if let (Some(reservation), Some(stream)) = (self.reservation.take(), &self.stream) {
            // A stream dropped before its end (a client that went away): the provider bills
            // what it generated, so the budget is charged for the input and the text streamed
            // so far (about four characters a token) unless the provider reported usage.
            let usage = stream.usage.unwrap_or_else(|| {
                Usage::new(stream.input_tokens, stream.chars.div_ceil(4) as u64)
            });
            let cost = cost_of(stream.snapshot.deployment(self.ix), usage);
            if let Err(e) = stream.snapshot.ledger.settle(reservation, cost) {
                tracing::warn!(error = %e, "could not settle a dropped stream's reservation");
            }
        }
    }
}

impl Inner {
    /// Takes what a call on `target` needs, in order — rpm + tpm (the permit), a concurrency
    /// slot, the budget reservation, then the probe of a half-open deployment — or nothing: a
    /// refusal gives back what was taken.
    pub(crate) async fn admit(&self, call: &Call<'_>, target: &Target) -> Result<Held, Refused> {
        let snapshot: &Snapshot = &call.snapshot;
        // The three are independent: sent together, so the Redis commands they need (strict
        // or auto admission, a shared slot, the budget reservation) share one round trip of
        // latency, pipelined on the connection.
        // `n` choices, each up to `max_tokens` (the same count as `Router::token_estimate`).
        let output_tokens = call
            .request
            .output_tokens(default_max_tokens(snapshot.deployment(target.ix)));
        let (permit, slot, reservation) = tokio::join!(
            snapshot
                .usage
                .admit(target, call.input_tokens.saturating_add(output_tokens)),
            self.take_slot(snapshot, target),
            reserve(call, target),
        );
        let refused = match (&permit, &slot, &reservation) {
            (Err(e @ StrategyError::RateLimited { .. }), _, _) => {
                Some(Refused::Full(RouterError::NoCapacity(e.to_string())))
            }
            (Err(e), _, _) => Some(Refused::Failed(Failure::Other(e.clone().into()))),
            (_, Err(_), _) => None, // taken below, with its own reason
            (_, _, Err(e @ BudgetError::Exceeded { .. })) => Some(Refused::Full(e.clone().into())),
            (_, _, Err(e)) => Some(Refused::Failed(Failure::Other(e.clone().into()))),
            _ => None,
        };
        let (slot, slot_refusal) = match slot {
            Ok(slot) => (slot, None),
            Err(refused) => (None, Some(refused)),
        };
        let mut held = Held {
            ix: target.ix,
            permit: permit.ok(),
            slot,
            probe: None,
            reservation: reservation.ok().flatten(),
            key: None,
            stream: None,
        };
        if let Some(refused) = refused.or(slot_refusal) {
            held.cancel().await;
            return Err(refused);
        }
        match self.take_probe(snapshot, target).await {
            Ok(probe) => held.probe = probe,
            Err(refused) => {
                held.cancel().await;
                return Err(refused);
            }
        }
        Ok(held)
    }

    /// The probe's lease when `target` is half-open: one call at a time, across instances,
    /// until one succeeds.
    async fn take_probe(
        &self,
        snapshot: &Snapshot,
        target: &Target,
    ) -> Result<Option<Lease>, Refused> {
        let Some(health) = snapshot.health.get(target.ix) else {
            return Ok(None);
        };
        let Some(probation) = &health.probation else {
            return Ok(None);
        };
        if !probation.half_open(&health.cooldown, self.now_ms()) {
            return Ok(None);
        }
        // The store boxes its Redis command, so this future is small: no second box.
        match self
            .cache
            .leases()
            .take(&probation.probe_key, 1, self.settings.lease_ttl)
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
            self.cache
                .leases()
                .take(&cap.key, cap.limit, self.settings.lease_ttl)
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
}

/// The budget reservation of a call on `target`, when budgets are configured.
async fn reserve(call: &Call<'_>, target: &Target) -> Result<Option<Reservation>, BudgetError> {
    let ledger = &call.snapshot.ledger;
    if ledger.is_empty() {
        return Ok(None);
    }
    // The request's own cap (`max_tokens`, else `max_completion_tokens`, which `Request`
    // reads into it), `n` choices each up to it, as the rate limits count them: the budget's
    // estimate falls back on the deployment's default, its learned output, its limit.
    let requested = call
        .request
        .max_tokens
        .map(|_| call.request.output_tokens(None));
    let estimate = ledger.estimate(target.ix, call.input_tokens, requested);
    // Boxed: the future of a Redis script is large, and most calls never build one.
    let mut reservation = Box::pin(ledger.reserve(target.ix, &call.budget_tags, estimate)).await?;
    if requested.is_none() {
        reservation.learn_from(target.ix);
    }
    Ok(Some(reservation))
}

/// Runs `work`, renewing `lease` every third of its TTL while it runs.
async fn renewing<F: std::future::Future>(work: F, lease: &Lease, ttl: Duration) -> F::Output {
    tokio::pin!(work);
    // The first renewal one period out: an interval's immediate first tick would go through the
    // timer driver (a millisecond) on every call.
    let period = (ttl / 3).max(Duration::from_millis(1));
    let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
    loop {
        tokio::select! {
            output = &mut work => return output,
            _ = ticker.tick() => {
                if let Err(e) = Box::pin(lease.renew()).await {
                    tracing::warn!(error = %e, "could not renew a concurrency lease");
                }
            }
        }
    }
}

/// A call's cost: the provider's, else its usage at the deployment's per-token prices (cache
/// reads and writes at the deployment's cache prices, when it has them).
fn cost_of(deployment: Option<&Deployment>, usage: Usage) -> f64 {
    usage
        .cost
        .unwrap_or_else(|| deployment.map_or(0.0, |d| usage.cost_with(&d.token_prices())))
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
async fn end_probe(probe: Option<Lease>) {
    if let Some(lease) = probe {
        Box::pin(lease.release()).await;
    }
}

/// Gives a permit back as if its call never went out (see [`Held::cancel`]).
fn undo(permit: Permit) {
    if let Err(e) = permit.undo() {
        tracing::warn!(error = %e, "could not give an admission back");
    }
}

/// The characters of generated text in a stream chunk: each choice's `delta.content`, `text`
/// and tool-call arguments.
fn streamed_text_len(body: &crate::Body) -> usize {
    use crate::body::{fields, items, string_len};
    let Some(choices) = body.raw("choices").and_then(|c| items(c.get())) else {
        return 0;
    };
    choices
        .iter()
        .map(|choice| {
            let [delta, text] = fields(choice.get(), ["delta", "text"]).unwrap_or_default();
            let [content, calls] = delta
                .and_then(|d| fields(d.get(), ["content", "tool_calls"]))
                .unwrap_or_default();
            let calls: usize = calls
                .and_then(|c| items(c.get()))
                .into_iter()
                .flatten()
                .map(|call| {
                    let [function] = fields(call.get(), ["function"]).unwrap_or_default();
                    let [arguments] = function
                        .and_then(|f| fields(f.get(), ["arguments"]))
                        .unwrap_or_default();
                    string_len(arguments)
                })
                .sum();
            string_len(content) + string_len(text) + calls
        })
        .sum()
}
