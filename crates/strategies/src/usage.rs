//! Usage state: requests and tokens per window, and calls in flight, per deployment, shared
//! between router instances through the [`DualCache`]; and admission, which takes a slot and
//! hands back a [`Permit`] that gives the in-flight slot back when dropped.
//!
//! One key family (LiteLLM reference W8 lists three), hash-tagged per deployment so every
//! multi-key script runs on Redis Cluster: `{id}:{model}:rpm:{bucket}` and
//! `{id}:{model}:tpm:{bucket}` — LiteLLM's keys with the id as hash tag; with one-minute fixed
//! windows the bucket is LiteLLM's UTC `HH-MM` — and `{group}_request_count:{id}` for calls in
//! flight (LiteLLM's least-busy key). Selection reads these counters, batched admission
//! increments them, and strict admission (`ferrolite_admit_v2`) checks and increments the same
//! keys in Redis.
//!
//! Hot path: the counters of the current (and, for sliding windows, previous) bucket of every
//! deployment live in one epoch, swapped once per window, as counter families
//! ([`IntCounterFamily`]: one slab of cells per metric and bucket, indexed by the deployment's
//! position, keys built only when the cache syncs a cell). A view takes the epoch's read lock
//! once and reads the clock once; per candidate it does a few atomic loads in those slabs — no
//! key is built, hashed or allocated, and no handle is followed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ferrolite_cache::{
    Admission, CacheError, CounterOptions, Deadline, DualCache, FamilyKeys, IntCounter,
    IntCounterFamily, LimitCheck, SyncHook, Window,
};
use ferrolite_types::{DeploymentId, DeploymentIx};
use parking_lot::{RwLock, RwLockReadGuard};

use crate::{StrategyError, Target, Targets};

/// LiteLLM's `IN_FLIGHT_COUNT_TTL_SECONDS`: an in-flight counter not touched for this long
/// expires (a crashed instance cannot pin a deployment as busy forever).
pub const IN_FLIGHT_TTL: Duration = Duration::from_secs(3600);

/// How an admission is decided against the rpm/tpm limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AdmissionMode {
    /// Increment, check, undo on excess, on the local view of the shared counters: exact in
    /// this process (N concurrent requests against rpm = L admit exactly L); other instances'
    /// requests are seen within one sync interval.
    #[default]
    Batched,
    /// One atomic Lua check-and-increment in Redis per call over rpm and tpm together: all
    /// instances together admit exactly the limits. One Redis round trip per call.
    Strict,
    /// Exact like `Strict`, with a round trip only every so many calls: each instance claims a
    /// block of admissions from the shared count with the strict script and admits from it
    /// locally. A block is sized to the instance's own rate over two sync intervals and to at
    /// most an eighth of the room left, so far from a limit one round trip serves many calls,
    /// and near it the block shrinks to one call: strict. Every admission is backed by a claim
    /// the script checked, so all instances together never pass a limit. While the shared
    /// count says a limit is reached, a call is refused without a round trip.
    ///
    /// What a block leaves unused is given back to the shared count (so the shared count
    /// holds what was admitted, not what was claimed): when the window moves on, when no call
    /// drew on it for two sync intervals (demand moved elsewhere), when another instance is
    /// refused while this one holds it, when the store is replaced (a reload) and at the
    /// cache's clean stop ([`DualCache::shutdown`]). An instance refused while others hold
    /// unused claims asks for them back and waits for them, at most a few sync intervals, so
    /// all instances together admit exactly the limit however demand is split between them.
    Auto,
}

/// How many sync intervals a call refused in auto mode waits at most for other instances to
/// give back their unused claims (each answers within two of its own).
const RECLAIM_WAIT_SYNCS: u32 = 8;

/// A claim no call drew on for this many sync intervals is given back: a block is sized to
/// two intervals of this instance's demand, so its demand moved elsewhere.
const IDLE_SYNCS: u64 = 2;

/// Auto mode's claims of every deployment of a store. The cache runs it as a [`SyncHook`] at
/// the start of every sync, where it gives back claims left unused; dropping it (the store
/// was replaced) gives back every claim.
struct Claims {
    /// Built in auto mode only (empty otherwise).
    states: Vec<AutoState>,
    window: Window,
    /// A claim idle for this long is given back (ms).
    idle_ms: u64,
}

impl SyncHook for Claims {
    fn before_sync(&self, now_ms: u64, stopping: bool) {
        let bucket = self.window.bucket(now_ms);
        for state in self.states.iter() {
            let leftover = {
                let mut quota = state.quota.lock();
                if quota.is_empty() {
                    continue;
                }
                let give_back = stopping
                    || quota.bucket != bucket
                    || now_ms.saturating_sub(quota.last_use_ms) >= self.idle_ms
                    || state.reclaim.as_ref().is_some_and(|d| d.is_active(now_ms));
                if !give_back {
                    continue;
                }
                quota.drain()
            };
            leftover.give_back();
        }
    }
}

impl Drop for Claims {
    fn drop(&mut self) {
        for state in self.states.iter() {
            let leftover = state.quota.lock().drain();
            leftover.give_back();
        }
    }
}

/// What a claim left unused, taken out of it, to give back to the shared count.
struct Leftover([(Option<IntCounter>, Option<IntCounter>, u64); 2]);

impl Leftover {
    /// Gives the amounts back to the counters they were claimed from (and takes them off the
    /// count of unused claims); they reach Redis with the next flush.
    fn give_back(self) {
        for (counter, unused, amount) in self.0 {
            give_back(counter.as_ref(), amount);
            give_back(unused.as_ref(), amount);
        }
    }
}

/// Auto mode's state of one deployment: the claim, and the lock one claim at a time is made
/// under (callers that find the claim used up wait for the claim in flight rather than each
/// sending their own: under load, one round trip serves everyone waiting).
#[derive(Default)]
struct AutoState {
    quota: parking_lot::Mutex<Quota>,
    claiming: tokio::sync::Mutex<()>,
    /// Shared through Redis: set by an instance refused while others hold unused claims;
    /// while it runs, every instance gives its unused claim back at each sync and claims only
    /// what each call needs. `None` without Redis (one instance: nobody else holds claims).
    reclaim: Option<Deadline>,
    /// The bucket and the shared unused counts when a wait for claims came back empty: while
    /// they are no higher (a crashed instance's claim stays counted until its bucket ends), a
    /// refusal does not wait again.
    futile: parking_lot::Mutex<Option<(u64, i64)>>,
}

impl AutoState {
    /// Keeps what a block claim took beyond the call's need (`extra` requests and tokens) as
    /// this instance's claim when the claim is still for `bucket`; a claim that outlived its
    /// bucket is given back at once.
    fn keep_extra(
        &self,
        bucket: u64,
        now_ms: u64,
        [rpm, tpm]: [&Option<IntCounter>; 2],
        [unused_rpm, unused_tpm]: [Option<IntCounter>; 2],
        extra: [u64; 2],
    ) {
        let mut quota = self.quota.lock();
        if quota.bucket == bucket {
            quota.requests += extra[0];
            quota.tokens += extra[1];
            quota.rpm = rpm.clone();
            quota.tpm = tpm.clone();
            quota.unused_rpm = unused_rpm;
            quota.unused_tpm = unused_tpm;
            quota.last_use_ms = now_ms;
        } else {
            drop(quota);
            Leftover([
                (rpm.clone(), unused_rpm, extra[0]),
                (tpm.clone(), unused_tpm, extra[1]),
            ])
            .give_back();
        }
    }
}

/// Admissions an instance claimed from a deployment's shared count and has not used yet
/// ([`AdmissionMode::Auto`]), and its recent demand, which sizes the next claim.
#[derive(Default)]
struct Quota {
    /// The window bucket the claim was made in; a claim is used only in its own bucket.
    bucket: u64,
    requests: u64,
    tokens: u64,
    /// The counters the claim was taken from.
    rpm: Option<IntCounter>,
    tpm: Option<IntCounter>,
    /// The shared counts of claimed-and-unused requests and tokens the claim added to: other
    /// instances read them to know whether waiting for claims to come back can help.
    unused_rpm: Option<IntCounter>,
    unused_tpm: Option<IntCounter>,
    /// When a call last drew on (or asked for) this claim.
    last_use_ms: u64,
    /// Demand in the current sync interval, and in the last one.
    since_ms: u64,
    asked_requests: u64,
    asked_tokens: u64,
    rate_requests: u64,
    rate_tokens: u64,
}

impl Quota {
    /// Counts one call's demand.
    fn note(&mut self, now_ms: u64, interval_ms: u64, tokens: u64) {
        self.last_use_ms = now_ms;
        let elapsed = now_ms.saturating_sub(self.since_ms);
        if elapsed >= interval_ms {
            let intervals = (elapsed / interval_ms.max(1)).max(1);
            self.rate_requests = self.asked_requests / intervals;
            self.rate_tokens = self.asked_tokens / intervals;
            self.asked_requests = 0;
            self.asked_tokens = 0;
            self.since_ms = now_ms;
        }
        self.asked_requests += 1;
        self.asked_tokens = self.asked_tokens.saturating_add(tokens);
    }

    /// The block to claim: what the call needs, plus this instance's demand for two sync
    /// intervals, at most an eighth of the room left, in whole multiples of the call's need
    /// (calls of one size leave no unusable remainder).
    fn block(need: u64, rate: u64, asked: u64, room: Option<f64>) -> u64 {
        let Some(room) = room else { return 0 };
        let demand = rate.max(asked).saturating_mul(2);
        let share = (room.max(0.0) / 8.0).floor() as u64;
        let block = need.max(demand.min(share));
        match need {
            0 => block,
            need => block / need * need,
        }
    }

    /// Takes what a call needs from the claim, if it covers it.
    fn try_take(
        &mut self,
        bucket: u64,
        requests: u64,
        tokens: u64,
    ) -> Option<[Option<IntCounter>; 2]> {
        if self.bucket != bucket || self.requests < requests || self.tokens < tokens {
            return None;
        }
        self.requests -= requests;
        self.tokens -= tokens;
        give_back(self.unused_rpm.as_ref(), requests);
        give_back(self.unused_tpm.as_ref(), tokens);
        Some([self.rpm.clone(), self.tpm.clone()])
    }

    /// Whether nothing is left of the claim.
    fn is_empty(&self) -> bool {
        self.requests == 0 && self.tokens == 0
    }

    /// Takes everything left of the claim out of it.
    fn drain(&mut self) -> Leftover {
        let requests = std::mem::take(&mut self.requests);
        let tokens = std::mem::take(&mut self.tokens);
        Leftover([
            (self.rpm.clone(), self.unused_rpm.clone(), requests),
            (self.tpm.clone(), self.unused_tpm.clone(), tokens),
        ])
    }

    /// Empties a claim of an earlier bucket; returns what it left unused.
    fn take_leftover(&mut self, bucket: u64) -> Option<Leftover> {
        let stale = self.bucket != bucket && !self.is_empty();
        self.bucket = bucket;
        stale.then(|| self.drain())
    }
}

/// What a deployment's keys are built from (its id, its model and its group; equal models and
/// groups share one string).
struct KeyParts {
    id: DeploymentId,
    model: Arc<str>,
    group: Arc<str>,
}

impl KeyParts {
    /// `{id}:{model}:{metric}`: the base key of a metric (the window's bucket is appended).
    fn base_key(&self, metric: &str) -> String {
        let mut key = String::new();
        self.write_base(metric, &mut key);
        key
    }

    fn write_base(&self, metric: &str, out: &mut String) {
        out.push('{');
        out.push_str(self.id.as_str());
        out.push_str("}:");
        out.push_str(&self.model);
        out.push(':');
        out.push_str(metric);
    }
}

/// The keys of one metric's counters in one window bucket: `{id}:{model}:{metric}:{bucket}`.
struct BucketKeys {
    parts: Arc<[KeyParts]>,
    metric: &'static str,
    /// `:{bucket}` (what [`Window::bucket_key`] appends).
    bucket: Box<str>,
    /// The metric and the bucket: stores of two snapshots share the cells of a key.
    class: Box<str>,
}

impl FamilyKeys for BucketKeys {
    fn write_key(&self, index: usize, out: &mut String) {
        if let Some(parts) = self.parts.get(index) {
            parts.write_base(self.metric, out);
            out.push_str(&self.bucket);
        }
    }

    fn class(&self) -> &str {
        &self.class
    }
}

/// The keys of the in-flight counters: `{group}_request_count:{id}`.
struct InFlightKeys(Arc<[KeyParts]>);

impl FamilyKeys for InFlightKeys {
    fn write_key(&self, index: usize, out: &mut String) {
        if let Some(parts) = self.0.get(index) {
            out.push_str(&parts.group);
            out.push_str("_request_count:");
            out.push_str(parts.id.as_str());
        }
    }

    fn class(&self) -> &str {
        "request_count"
    }
}

/// The counters of one window bucket (and the one before, for sliding windows): one family per
/// metric, indexed by position.
struct Epoch {
    bucket: u64,
    /// The current bucket's and, for sliding windows, the previous one's.
    rpm: [Option<IntCounterFamily>; 2],
    tpm: [Option<IntCounterFamily>; 2],
    /// Auto mode: the current bucket's counts of claimed-and-unused requests and tokens.
    unused: [Option<IntCounterFamily>; 2],
    /// Why the store has no counters yet: its first rotation failed (the cache's key registry
    /// is full). An admission then fails with this error, not as an unknown deployment.
    failed: Option<CacheError>,
}

/// Per-deployment usage of one snapshot's deployments, reached by [`DeploymentIx`].
pub struct UsageStore {
    cache: DualCache,
    window: Window,
    mode: AdmissionMode,
    generation: u32,
    /// What the keys are built from, by position.
    parts: Arc<[KeyParts]>,
    epoch: RwLock<Epoch>,
    in_flight: IntCounterFamily,
    /// Auto mode's claims, per deployment (the cache's sync hook holds it weakly).
    claims: Arc<Claims>,
    /// Admission scripts sent to Redis (strict and auto mode).
    round_trips: AtomicU64,
    /// Rotations that could not build the next bucket's counters (registry full): the old
    /// epoch is kept; logged on the first and every power of two.
    rotation_failures: AtomicU64,
}

impl std::fmt::Debug for UsageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageStore")
            .field("window", &self.window)
            .field("mode", &self.mode)
            .field("deployments", &self.parts.len())
            .finish_non_exhaustive()
    }
}

impl UsageStore {
    /// Usage for `targets`, counted over `window` (ferrolite's default is
    /// [`Window::MINUTE_SLIDING`]; [`Window::MINUTE_FIXED`] reproduces LiteLLM's minutes),
    /// admitted as `mode` says. Counters are keyed by deployment id, so a store built for the
    /// next snapshot finds the counts of unchanged deployments where this one left them.
    pub fn new(
        cache: DualCache,
        targets: &Targets,
        window: Window,
        mode: AdmissionMode,
    ) -> Result<Self, StrategyError> {
        let index = targets.index();
        let mut strings: std::collections::HashMap<String, Arc<str>> = Default::default();
        let mut shared = |text: &str| -> Arc<str> {
            if let Some(known) = strings.get(text) {
                return Arc::clone(known);
            }
            let made: Arc<str> = Arc::from(text);
            strings.insert(text.to_string(), Arc::clone(&made));
            made
        };
        let parts: Arc<[KeyParts]> = index
            .iter()
            .map(|(ix, id)| {
                let target = targets.get(ix);
                KeyParts {
                    id: id.clone(),
                    model: shared(target.map_or("", |t| t.model.as_str())),
                    group: shared(target.map_or("", |t| &*t.model_name)),
                }
            })
            .collect();
        let shared = mode == AdmissionMode::Auto && cache.shared().is_configured();
        let states = if mode == AdmissionMode::Auto {
            parts
                .iter()
                .map(|parts| {
                    let reclaim = if shared {
                        Some(cache.deadlines().deadline(&parts.base_key("reclaim"))?)
                    } else {
                        None
                    };
                    Ok::<_, CacheError>(AutoState {
                        reclaim,
                        ..AutoState::default()
                    })
                })
                .collect::<Result<Vec<_>, _>>()?
        } else {
            Vec::new()
        };
        let interval_ms = u64::try_from(cache.sync_interval().as_millis()).unwrap_or(u64::MAX);
        let claims = Arc::new(Claims {
            states,
            window,
            idle_ms: interval_ms.saturating_mul(IDLE_SYNCS),
        });
        if mode == AdmissionMode::Auto {
            let hook: Arc<dyn SyncHook> = claims.clone();
            cache.add_sync_hook(Arc::downgrade(&hook));
        }
        let in_flight = cache.counters().family(
            parts.len(),
            Arc::new(InFlightKeys(Arc::clone(&parts))),
            CounterOptions::ttl(IN_FLIGHT_TTL),
        )?;
        Ok(UsageStore {
            cache,
            window,
            mode,
            generation: index.generation(),
            parts,
            epoch: RwLock::new(Epoch {
                bucket: u64::MAX,
                rpm: [None, None],
                tpm: [None, None],
                unused: [None, None],
                failed: None,
            }),
            in_flight,
            claims,
            round_trips: AtomicU64::new(0),
            rotation_failures: AtomicU64::new(0),
        })
    }

    /// The window limits are counted over.
    pub fn window(&self) -> Window {
        self.window
    }

    /// How admissions are decided.
    pub fn mode(&self) -> AdmissionMode {
        self.mode
    }

    /// The cache the counters live in.
    pub fn cache(&self) -> &DualCache {
        &self.cache
    }

    /// Admission scripts this store sent to Redis (strict and auto mode): its round trips for
    /// admission.
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    /// Rotations to a new window bucket that failed (the previous bucket's counters were kept).
    pub fn rotation_failures(&self) -> u64 {
        self.rotation_failures.load(Ordering::Relaxed)
    }

    /// A consistent read view at the current time (one clock read, one lock): the router takes
    /// one per request and the filters, the pick and the "no capacity" error all read it.
    pub fn view(&self) -> UsageView<'_> {
        let now_ms = self.cache.window_now_ms();
        let bucket = self.window.bucket(now_ms);
        {
            let epoch = self.epoch.read();
            if epoch.bucket == bucket {
                return self.make_view(epoch, now_ms);
            }
        }
        self.rotate(bucket, now_ms);
        self.make_view(self.epoch.read(), now_ms)
    }

    fn make_view<'a>(&'a self, epoch: RwLockReadGuard<'a, Epoch>, now_ms: u64) -> UsageView<'a> {
        UsageView {
            store: self,
            previous_weight: self.window.previous_weight(now_ms),
            epoch,
            now_ms,
            auto: self.mode == AdmissionMode::Auto,
        }
    }

    /// Moves the epoch to `bucket`: the current counters become the previous ones. When the
    /// next bucket's counters cannot be had (the cache's key registry is full), the old epoch
    /// stays — picks go on with the last counts rather than failing — and the failure is
    /// counted and logged (first, then every power of two).
    fn rotate(&self, bucket: u64, now_ms: u64) {
        let mut epoch = self.epoch.write();
        if epoch.bucket == bucket {
            return;
        }
        match self.next_epoch(&epoch, bucket, now_ms) {
            Ok(next) => *epoch = next,
            Err(error) => {
                if epoch.bucket == u64::MAX {
                    epoch.failed = Some(error.clone());
                }
                let n = self.rotation_failures.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("ferrolite_usage_rotation_failures_total").increment(1);
                if n == 0 || n.is_power_of_two() {
                    tracing::warn!(%error, failures = n + 1, "usage window rotation failed; keeping the previous window's counters");
                }
            }
        }
    }

    fn next_epoch(&self, epoch: &Epoch, bucket: u64, now_ms: u64) -> Result<Epoch, CacheError> {
        let options = CounterOptions::ttl(Duration::from_millis(self.window.retention_ms()));
        let sliding = self.window.kind() == ferrolite_cache::WindowKind::Sliding;
        let previous_start = now_ms.saturating_sub(self.window.length_ms());
        let family = |metric: &'static str, at: u64| {
            let bucket: Box<str> = self.window.bucket_key("", at).into();
            let keys = BucketKeys {
                parts: Arc::clone(&self.parts),
                metric,
                class: format!("{metric}{bucket}").into(),
                bucket,
            };
            self.cache
                .counters()
                .family(self.parts.len(), Arc::new(keys), options)
        };
        let continues = epoch.bucket != u64::MAX && epoch.bucket + 1 == bucket;
        let (rpm_prev, tpm_prev) = if !sliding {
            (None, None)
        } else if continues {
            (epoch.rpm[0].clone(), epoch.tpm[0].clone())
        } else {
            (
                Some(family("rpm", previous_start)?),
                Some(family("tpm", previous_start)?),
            )
        };
        let rpm = [Some(family("rpm", now_ms)?), rpm_prev];
        let tpm = [Some(family("tpm", now_ms)?), tpm_prev];
        let unused = if self.mode == AdmissionMode::Auto {
            [
                Some(family("rpm:unused", now_ms)?),
                Some(family("tpm:unused", now_ms)?),
            ]
        } else {
            [None, None]
        };
        Ok(Epoch {
            bucket,
            rpm,
            tpm,
            unused,
            failed: None,
        })
    }

    /// Adds requests and tokens to `target`'s current window without a limit check (tests,
    /// simulations, and calls that bypass admission).
    pub fn record(&self, target: &Target, requests: i64, tokens: i64) -> Result<(), StrategyError> {
        let view = self.view();
        let (rpm, tpm) = view.counters(target.ix)?;
        rpm.increment(requests)?;
        tpm.increment(tokens)?;
        Ok(())
    }

    /// Admits one call of up to `tokens` tokens (input + `max_tokens`) on `target`: takes one
    /// request and the tokens from its windows if both fit its limits (an explicit 0 blocks),
    /// else refuses with [`StrategyError::RateLimited`] and takes nothing. The call is counted
    /// in flight until the [`Permit`] drops.
    pub async fn admit(&self, target: &Target, tokens: u64) -> Result<Permit, StrategyError> {
        if target.ix.generation() != self.generation {
            return Err(StrategyError::UnknownDeployment { ix: target.ix });
        }
        let in_flight = self
            .in_flight
            .counter(target.ix.index())
            .map_err(|_| StrategyError::UnknownDeployment { ix: target.ix })?;
        // The slot first: if it cannot be taken (fail-closed, Redis down) nothing else is.
        in_flight.increment(1)?;
        let tokens_i = i64::try_from(tokens).unwrap_or(i64::MAX);
        // The local decisions first (batched, or auto from this instance's claim); the ones
        // that need Redis run boxed, so this future stays small for the common case.
        let taken = match self.take_local(target, tokens) {
            Some(taken) => taken,
            None => Box::pin(self.take_remote(target, tokens)).await,
        };
        match taken {
            Ok((rpm, tpm)) => Ok(Permit {
                ix: target.ix,
                rpm,
                tpm,
                in_flight,
                tokens: tokens_i,
                ended: false,
            }),
            Err(error) => {
                if let Err(e) = in_flight.increment(-1) {
                    tracing::warn!(error = %e, "could not end an in-flight count");
                }
                Err(error)
            }
        }
    }

    /// Takes one request and `tokens` from `target`'s windows, or nothing; returns the counters
    /// they were taken from.
    fn take_local(
        &self,
        target: &Target,
        tokens: u64,
    ) -> Option<Result<(IntCounter, IntCounter), StrategyError>> {
        let limited = target.rpm.is_some() || target.tpm.is_some();
        match self.mode {
            AdmissionMode::Strict if limited => None,
            AdmissionMode::Auto if limited => self.take_claimed(target, tokens),
            _ => Some(self.take_batched(target, tokens)),
        }
    }

    /// The admissions that need Redis: strict, or auto when this instance's claim is used up.
    async fn take_remote(
        &self,
        target: &Target,
        tokens: u64,
    ) -> Result<(IntCounter, IntCounter), StrategyError> {
        match self.mode {
            AdmissionMode::Auto => self.take_auto(target, tokens).await,
            _ => {
                let [rpm, tpm, ..] = self.claim(target, 1, tokens, [0, 0]).await?;
                self.complete(target, [rpm, tpm], tokens)
            }
        }
    }

    /// Batched admission: increment, check, undo on excess, on the local view.
    fn take_batched(
        &self,
        target: &Target,
        tokens: u64,
    ) -> Result<(IntCounter, IntCounter), StrategyError> {
        let tokens_i = i64::try_from(tokens).unwrap_or(i64::MAX);
        let view = self.view();
        let (rpm, tpm) = view.counters(target.ix)?;
        let rpm_now = rpm.increment(1)? as f64 + view.previous(&view.epoch.rpm, target.ix);
        let tpm_now = tpm.increment(tokens_i)? as f64 + view.previous(&view.epoch.tpm, target.ix);
        let over = |limit: Option<u64>, count: f64| limit.is_some_and(|l| count > l as f64 + 1e-9);
        let refused = if over(target.rpm, rpm_now) {
            Some(("rpm", target.rpm.unwrap_or(0), rpm_now - 1.0))
        } else if over(target.tpm, tpm_now) {
            Some(("tpm", target.tpm.unwrap_or(0), tpm_now - tokens as f64))
        } else {
            None
        };
        if let Some((metric, limit, current)) = refused {
            rpm.increment(-1)?;
            tpm.increment(-tokens_i)?;
            return Err(StrategyError::RateLimited {
                id: target.id.clone(),
                metric,
                limit,
                current,
            });
        }
        Ok((rpm, tpm))
    }

    /// Claims `requests` and `tokens` from `target`'s limited windows in Redis with the strict
    /// script (one round trip), or nothing; returns the counters of the limited metrics, then
    /// those of the unused claims. `unused` (auto mode: the part of the claim kept for later
    /// calls, requests and tokens) is added to the shared counts of unused claims in the same
    /// script, so other instances learn at once that waiting for them can help.
    async fn claim(
        &self,
        target: &Target,
        requests: u64,
        tokens: u64,
        unused: [u64; 2],
    ) -> Result<[Option<IntCounter>; 4], StrategyError> {
        let parts = self
            .parts
            .get(target.ix.index())
            .filter(|_| target.ix.generation() == self.generation)
            .ok_or(StrategyError::UnknownDeployment { ix: target.ix })?;
        let mut checks = Vec::with_capacity(4);
        let mut metrics = Vec::with_capacity(2);
        for (metric, delta, limit) in [("rpm", requests, target.rpm), ("tpm", tokens, target.tpm)] {
            if let Some(limit) = limit {
                metrics.push(metric);
                checks.push(LimitCheck {
                    key: parts.base_key(metric),
                    delta,
                    limit,
                    window: self.window,
                });
            }
        }
        // Unlimited counts, checked against no limit: they ride along.
        for (metric, delta) in [("rpm:unused", unused[0]), ("tpm:unused", unused[1])] {
            if delta > 0 {
                checks.push(LimitCheck {
                    key: parts.base_key(metric),
                    delta,
                    limit: u64::MAX,
                    window: self.window,
                });
            }
        }
        if self.cache.shared().is_configured() {
            self.round_trips.fetch_add(1, Ordering::Relaxed);
        }
        // The epoch's counters, so that the admission counts in the cells selection reads.
        let known = self.view().known(target.ix);
        let admission = self.cache.admission().admit_with(&checks, &known).await?;
        if !admission.admitted {
            return Err(refusal(target, &checks, &metrics, &admission));
        }
        // The limited metrics were taken by the script, in the bucket it evaluated, in order.
        let mut taken = admission.counters().cloned();
        let rpm = target.rpm.and_then(|_| taken.next());
        let tpm = target.tpm.and_then(|_| taken.next());
        let unused_rpm = (unused[0] > 0).then(|| taken.next()).flatten();
        let unused_tpm = (unused[1] > 0).then(|| taken.next()).flatten();
        Ok([rpm, tpm, unused_rpm, unused_tpm])
    }

    /// One admission's counters: the claimed ones for the limited metrics; an unlimited metric
    /// is only counted, in the current bucket.
    fn complete(
        &self,
        target: &Target,
        [rpm, tpm]: [Option<IntCounter>; 2],
        tokens: u64,
    ) -> Result<(IntCounter, IntCounter), StrategyError> {
        let counted = |claimed: Option<IntCounter>, view: IntCounter, delta: i64| match claimed {
            Some(counter) => Ok::<_, StrategyError>(counter),
            None => {
                view.increment(delta)?;
                Ok(view)
            }
        };
        let view = self.view();
        let (view_rpm, view_tpm) = view.counters(target.ix)?;
        Ok((
            counted(rpm, view_rpm, 1)?,
            counted(tpm, view_tpm, i64::try_from(tokens).unwrap_or(i64::MAX))?,
        ))
    }

    /// Auto admission's local part: counts the call's demand and takes it from this
    /// instance's claim when that covers it; `None` when a claim is needed.
    fn take_claimed(
        &self,
        target: &Target,
        tokens: u64,
    ) -> Option<Result<(IntCounter, IntCounter), StrategyError>> {
        let Some(state) = self.auto_state(target.ix) else {
            return Some(Err(StrategyError::UnknownDeployment { ix: target.ix }));
        };
        let need_requests = u64::from(target.rpm.is_some());
        let need_tokens = if target.tpm.is_some() { tokens } else { 0 };
        let interval_ms = self.cache.sync_interval().as_millis().max(1) as u64;
        let (bucket, now_ms) = {
            let view = self.view();
            (view.epoch.bucket, view.now_ms)
        };
        let mut quota = state.quota.lock();
        quota.note(now_ms, interval_ms, tokens);
        let claimed = quota.try_take(bucket, need_requests, need_tokens)?;
        drop(quota);
        Some(self.complete(target, claimed, tokens))
    }

    /// Auto admission (see [`AdmissionMode::Auto`]): from this instance's claim when it covers
    /// the call; else, one claim at a time: refused at once when the shared count says a limit
    /// is reached, else a new block is claimed (one round trip), the call's share taken and the
    /// rest kept for the next calls. A call refused while other instances hold unused claims
    /// waits for them to come back ([`await_returned_claims`](Self::await_returned_claims)).
    async fn take_auto(
        &self,
        target: &Target,
        tokens: u64,
    ) -> Result<(IntCounter, IntCounter), StrategyError> {
        let unknown = || StrategyError::UnknownDeployment { ix: target.ix };
        let state = self.auto_state(target.ix).ok_or_else(unknown)?;
        let need_requests = u64::from(target.rpm.is_some());
        let need_tokens = if target.tpm.is_some() { tokens } else { 0 };
        let _one_claim = state.claiming.lock().await;
        // The claim in flight while this call waited may cover it.
        let (bucket, now_ms, rpm_now, tpm_now) = {
            let view = self.view();
            (
                view.epoch.bucket,
                view.now_ms,
                view.rpm(target.ix),
                view.tpm(target.ix),
            )
        };
        // Another instance was refused while claims were held: claim only what calls need.
        let reclaiming = state.reclaim.as_ref().is_some_and(|d| d.is_active(now_ms));
        let (leftover, block_requests, block_tokens) = {
            let mut quota = state.quota.lock();
            let leftover = quota.take_leftover(bucket);
            if let Some(claimed) = quota.try_take(bucket, need_requests, need_tokens) {
                drop(quota);
                if let Some(leftover) = leftover {
                    leftover.give_back();
                }
                return self.complete(target, claimed, tokens);
            }
            let room = |limit: Option<u64>, count: f64| limit.map(|l| l as f64 - count);
            if reclaiming {
                (leftover, need_requests, need_tokens)
            } else {
                (
                    leftover,
                    Quota::block(
                        need_requests,
                        quota.rate_requests,
                        quota.asked_requests,
                        room(target.rpm, rpm_now),
                    ),
                    Quota::block(
                        need_tokens,
                        quota.rate_tokens,
                        quota.asked_tokens,
                        room(target.tpm, tpm_now),
                    ),
                )
            }
        };
        if let Some(leftover) = leftover {
            leftover.give_back();
        }
        // The shared count says a limit is reached: refuse without a round trip, and give back
        // what is left of the claim (too little for this call) so another instance can use it.
        for (metric, limit, count, need) in [
            ("rpm", target.rpm, rpm_now, need_requests),
            ("tpm", target.tpm, tpm_now, need_tokens),
        ] {
            if let Some(limit) = limit {
                if limit == 0 || count + need as f64 > limit as f64 + 1e-9 {
                    self.return_claim(state);
                    let refused = StrategyError::RateLimited {
                        id: target.id.clone(),
                        metric,
                        limit,
                        current: count,
                    };
                    if limit == 0 {
                        return Err(refused);
                    }
                    return self
                        .after_refusal(target, state, need_requests, need_tokens, tokens, refused)
                        .await;
                }
            }
        }
        let extra = [block_requests - need_requests, block_tokens - need_tokens];
        let (claimed, extra) = match self
            .claim(target, block_requests, block_tokens, extra)
            .await
        {
            Ok(claimed) => (claimed, extra),
            Err(StrategyError::RateLimited { .. }) if extra != [0, 0] => {
                // No room for a block: the call alone, as strict mode would.
                match self.claim(target, need_requests, need_tokens, [0, 0]).await {
                    Ok(claimed) => (claimed, [0, 0]),
                    Err(error) => {
                        self.return_claim(state);
                        return self
                            .after_refusal(target, state, need_requests, need_tokens, tokens, error)
                            .await;
                    }
                }
            }
            Err(error) => {
                self.return_claim(state);
                return self
                    .after_refusal(target, state, need_requests, need_tokens, tokens, error)
                    .await;
            }
        };
        let [rpm, tpm, unused_rpm, unused_tpm] = claimed;
        if extra != [0, 0] {
            state.keep_extra(
                bucket,
                now_ms,
                [&rpm, &tpm],
                [unused_rpm, unused_tpm],
                extra,
            );
        }
        self.complete(target, [rpm, tpm], tokens)
    }

    /// A call was refused with `refused`: when it is a rate limit and other instances hold
    /// unused claims, waits for them to come back and admits the call if they make room.
    async fn after_refusal(
        &self,
        target: &Target,
        state: &AutoState,
        need_requests: u64,
        need_tokens: u64,
        tokens: u64,
        refused: StrategyError,
    ) -> Result<(IntCounter, IntCounter), StrategyError> {
        if !matches!(refused, StrategyError::RateLimited { .. }) {
            return Err(refused);
        }
        match self
            .await_returned_claims(target, state, need_requests, need_tokens)
            .await?
        {
            Some([rpm, tpm, ..]) => self.complete(target, [rpm, tpm], tokens),
            None => Err(refused),
        }
    }

    /// Demand moved here while other instances hold unused claims (the shared counts of unused
    /// claims say so): asks them to give their claims back (the shared `reclaim` deadline,
    /// which each reads back within one sync and answers at its next), then claims the call's
    /// need as soon as this instance's read-back shows room. Waits at most
    /// [`RECLAIM_WAIT_SYNCS`] syncs, and not at all when no other instance holds a claim;
    /// `None` when no room came back.
    async fn await_returned_claims(
        &self,
        target: &Target,
        state: &AutoState,
        need_requests: u64,
        need_tokens: u64,
    ) -> Result<Option<[Option<IntCounter>; 4]>, StrategyError> {
        let Some(reclaim) = &state.reclaim else {
            return Ok(None);
        };
        let (bucket, unused) = {
            let view = self.view();
            if !view.claimed_elsewhere(target.ix) {
                return Ok(None);
            }
            (view.epoch.bucket, view.unused_total(target.ix))
        };
        if state
            .futile
            .lock()
            .is_some_and(|(b, seen)| b == bucket && unused <= seen)
        {
            return Ok(None);
        }
        let interval = self.cache.sync_interval();
        let interval_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        let hold = interval_ms.saturating_mul(u64::from(RECLAIM_WAIT_SYNCS) + 2);
        let now = self.cache.clock().now_ms();
        if let Err(error) = reclaim.extend_to(now.saturating_add(hold)).await {
            tracing::warn!(%error, "could not ask other instances for their unused admission claims");
        }
        // A give-back that crossed this instance's read-back (the count not yet down when the
        // unused count already is) is seen one sync later: stop after two syncs without a
        // claim held elsewhere.
        let mut settled = 0;
        for _ in 0..RECLAIM_WAIT_SYNCS {
            // Bounded: no sync runs while Redis is unreachable for long.
            let _ = tokio::time::timeout(interval.saturating_mul(2), self.cache.next_sync()).await;
            let (fits, waiting) = {
                let view = self.view();
                (
                    view.fits(target, need_tokens),
                    view.claimed_elsewhere(target.ix),
                )
            };
            if fits {
                match self.claim(target, need_requests, need_tokens, [0, 0]).await {
                    Ok(claimed) => return Ok(Some(claimed)),
                    Err(StrategyError::RateLimited { .. }) => {}
                    Err(error) => return Err(error),
                }
            }
            settled = if waiting { 0 } else { settled + 1 };
            if settled >= 2 {
                break;
            }
        }
        let view = self.view();
        *state.futile.lock() = Some((view.epoch.bucket, view.unused_total(target.ix)));
        Ok(None)
    }

    /// Gives what is left of this instance's claim back to the shared count.
    /// Auto mode's state of `ix` (`None` in other modes or for another snapshot's index).
    fn auto_state(&self, ix: DeploymentIx) -> Option<&AutoState> {
        (ix.generation() == self.generation)
            .then(|| self.claims.states.get(ix.index()))
            .flatten()
    }

    fn return_claim(&self, state: &AutoState) {
        let left = state.quota.lock().drain();
        left.give_back();
    }
}

/// Gives `amount` unused claimed admissions back to the shared count.
fn give_back(counter: Option<&IntCounter>, amount: u64) {
    if let (Some(counter), true) = (counter, amount > 0) {
        if let Err(error) = counter.increment(-i64::try_from(amount).unwrap_or(i64::MAX)) {
            tracing::warn!(%error, "could not give back an unused admission claim");
        }
    }
}

/// The refusal of a strict admission: the first limit (`metrics` names each check) with no room.
fn refusal(
    target: &Target,
    checks: &[LimitCheck],
    metrics: &[&'static str],
    admission: &Admission,
) -> StrategyError {
    let over = checks
        .iter()
        .zip(&admission.counts)
        .position(|(check, count)| *count + check.delta as f64 > check.limit as f64 + 1e-9)
        .unwrap_or(0);
    StrategyError::RateLimited {
        id: target.id.clone(),
        metric: metrics.get(over).copied().unwrap_or("rpm"),
        limit: checks.get(over).map_or(0, |c| c.limit),
        current: admission.counts.get(over).copied().unwrap_or(f64::NAN),
    }
}

/// What an admission took, given back as the call ends: the in-flight slot when it drops (a
/// call dropped by a timeout or a disconnected client leaks nothing, as tower's permits), the
/// token estimate settled to the actual count with [`settle_tokens`](Self::settle_tokens), or
/// everything with [`undo`](Self::undo) when the call does not go ahead.
#[derive(Debug)]
#[must_use = "dropping the permit ends the call's in-flight count"]
pub struct Permit {
    ix: DeploymentIx,
    rpm: IntCounter,
    tpm: IntCounter,
    in_flight: IntCounter,
    /// Tokens held in the window (the estimate until settled).
    tokens: i64,
    ended: bool,
}

impl Permit {
    /// The deployment admitted.
    pub fn ix(&self) -> DeploymentIx {
        self.ix
    }

    /// Tokens this call holds in its deployment's window (the estimate until settled).
    pub fn tokens(&self) -> u64 {
        u64::try_from(self.tokens).unwrap_or(0)
    }

    /// Replaces the token estimate by the call's actual count (input + output): the difference
    /// is added to (or given back from) the window it was taken from.
    pub fn settle_tokens(&mut self, actual: u64) -> Result<(), StrategyError> {
        let actual = i64::try_from(actual).unwrap_or(i64::MAX);
        let delta = actual - self.tokens;
        if delta != 0 {
            self.tpm.increment(delta)?;
        }
        self.tokens = actual;
        Ok(())
    }

    /// The call does not go ahead (a budget reservation after it refused, say): gives back the
    /// request, the tokens and the in-flight slot.
    pub fn undo(mut self) -> Result<(), StrategyError> {
        self.end_in_flight();
        self.rpm.increment(-1)?;
        self.tpm.increment(-self.tokens)?;
        Ok(())
    }

    /// One fewer call in flight, never below 0 (an end whose start expired with the counter,
    /// as LiteLLM's `increment_with_floor`), so it cannot hide a later call.
    fn end_in_flight(&mut self) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        let delta = -(self.in_flight.value().clamp(0, 1));
        if delta != 0 {
            if let Err(error) = self.in_flight.increment(delta) {
                tracing::warn!(%error, "could not end an in-flight count");
            }
        }
    }
}

/// Dropping a permit means its call went out and ended (answered, failed, or cut short): only
/// the in-flight count is given back; the request and its tokens stay in the window, as the
/// provider saw them. [`Permit::undo`] is the other ending: the call never went out.
impl Drop for Permit {
    fn drop(&mut self) {
        self.end_in_flight();
    }
}

/// Usage at one moment. Holding it holds the epoch's read lock: keep it for one request.
pub struct UsageView<'a> {
    store: &'a UsageStore,
    epoch: RwLockReadGuard<'a, Epoch>,
    now_ms: u64,
    previous_weight: f64,
    /// Auto mode: unused claims count as room (read per candidate only in that mode).
    auto: bool,
}

impl UsageView<'_> {
    /// The position of `ix` in this store; `None` for another snapshot's index.
    #[inline]
    fn position(&self, ix: DeploymentIx) -> Option<usize> {
        (ix.generation() == self.store.generation).then_some(ix.index())
    }

    fn counters(&self, ix: DeploymentIx) -> Result<(IntCounter, IntCounter), StrategyError> {
        let position = self
            .position(ix)
            .ok_or(StrategyError::UnknownDeployment { ix })?;
        match (&self.epoch.rpm[0], &self.epoch.tpm[0]) {
            (Some(rpm), Some(tpm)) => match (rpm.counter(position), tpm.counter(position)) {
                (Ok(rpm), Ok(tpm)) => Ok((rpm, tpm)),
                _ => Err(StrategyError::UnknownDeployment { ix }),
            },
            _ => Err(self.epoch.failed.clone().map_or(
                StrategyError::UnknownDeployment { ix },
                StrategyError::Cache,
            )),
        }
    }

    /// The epoch's counters of `ix` (current and previous buckets, every metric), for an
    /// admission to count in.
    fn known(&self, ix: DeploymentIx) -> Vec<IntCounter> {
        let Some(position) = self.position(ix) else {
            return Vec::new();
        };
        let epoch = &self.epoch;
        epoch
            .rpm
            .iter()
            .chain(&epoch.tpm)
            .chain(&epoch.unused)
            .flatten()
            .filter_map(|family| family.counter(position).ok())
            .collect()
    }

    fn previous(&self, counters: &[Option<IntCounterFamily>; 2], ix: DeploymentIx) -> f64 {
        self.position(ix)
            .map_or(0.0, |p| self.weighted(counters[1].as_ref(), p))
    }

    /// The previous bucket's count, weighted by its overlap with the window.
    #[inline]
    fn weighted(&self, previous: Option<&IntCounterFamily>, position: usize) -> f64 {
        match previous {
            Some(previous) => {
                previous.value_at(position, self.now_ms).max(0) as f64 * self.previous_weight
            }
            None => 0.0,
        }
    }

    /// The window's count at a position already checked against this snapshot.
    #[inline]
    fn estimate_at(&self, counters: &[Option<IntCounterFamily>; 2], position: usize) -> f64 {
        let current = counters[0]
            .as_ref()
            .map_or(0, |c| c.value_at(position, self.now_ms).max(0));
        current as f64 + self.weighted(counters[1].as_ref(), position)
    }

    /// Requests in the deployment's window now.
    #[inline]
    pub fn rpm(&self, ix: DeploymentIx) -> f64 {
        self.position(ix)
            .map_or(0.0, |p| self.estimate_at(&self.epoch.rpm, p))
    }

    /// Tokens in the deployment's window now.
    #[inline]
    pub fn tpm(&self, ix: DeploymentIx) -> f64 {
        self.position(ix)
            .map_or(0.0, |p| self.estimate_at(&self.epoch.tpm, p))
    }

    /// Auto mode: whether other instances hold claims they have not used in the current
    /// bucket (as far as the last read-back and this instance's own claims tell: this
    /// instance's unused claims are counted here until given back).
    fn claimed_elsewhere(&self, ix: DeploymentIx) -> bool {
        self.position(ix).is_some_and(|p| {
            self.epoch
                .unused
                .iter()
                .flatten()
                .any(|c| c.value_at(p, self.now_ms) > 0)
        })
    }

    /// Auto mode: the shared unused counts (requests + tokens) of the current bucket.
    fn unused_total(&self, ix: DeploymentIx) -> i64 {
        self.position(ix).map_or(0, |p| {
            self.epoch
                .unused
                .iter()
                .flatten()
                .map(|c| c.value_at(p, self.now_ms))
                .sum()
        })
    }

    /// Calls in flight on the deployment, never below 0 (a decrement after the counter expired
    /// cannot make a deployment look idler than idle — LiteLLM #39322).
    #[inline]
    pub fn in_flight(&self, ix: DeploymentIx) -> u64 {
        self.position(ix).map_or(0, |p| {
            self.store.in_flight.value_at(p, self.now_ms).max(0) as u64
        })
    }

    /// The time of this view (the cache's window clock, ms since the epoch).
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Whether `target` can take one more request of `tokens` within its limits. An explicit 0
    /// limit blocks; at `rpm` requests in the window the deployment is full (LiteLLM stops at
    /// `rpm - 1`). A target of another snapshot never fits. In auto mode what is counted is
    /// what was admitted: claims some instance holds unused are room (admission gets them
    /// back, see [`AdmissionMode::Auto`]).
    #[inline]
    pub fn fits(&self, target: &Target, tokens: u64) -> bool {
        let Some(position) = self.position(target.ix) else {
            return false;
        };
        if let Some(limit) = target.rpm {
            let count = self.estimate_at(&self.epoch.rpm, position) - self.unused_at(position, 0);
            if limit == 0 || count + 1.0 > limit as f64 + 1e-9 {
                return false;
            }
        }
        if let Some(limit) = target.tpm {
            let count = self.estimate_at(&self.epoch.tpm, position) - self.unused_at(position, 1);
            if limit == 0 || count + tokens as f64 > limit as f64 + 1e-9 {
                return false;
            }
        }
        true
    }

    /// Auto mode: the requests (`metric` 0) or tokens (1) claimed and not used yet in the
    /// current bucket, by every instance; 0 in the other modes.
    #[inline]
    fn unused_at(&self, position: usize, metric: usize) -> f64 {
        if !self.auto {
            return 0.0;
        }
        self.epoch.unused[metric]
            .as_ref()
            .map_or(0.0, |c| c.value_at(position, self.now_ms).max(0) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::Quota;

    #[test]
    fn a_block_follows_demand_at_most_an_eighth_of_the_room_in_whole_calls() {
        // Far from the limit: two intervals of demand.
        assert_eq!(Quota::block(1, 10, 3, Some(10_000.0)), 20);
        // Near it: an eighth of the room, then the call alone.
        assert_eq!(Quota::block(1, 100, 0, Some(80.0)), 10);
        assert_eq!(Quota::block(1, 100, 0, Some(7.0)), 1);
        // Tokens: whole multiples of the call's need.
        assert_eq!(Quota::block(100, 1_000, 0, Some(2_000.0)), 200);
        assert_eq!(Quota::block(300, 1_000, 0, Some(8_000.0)), 900);
        // An unlimited metric claims nothing.
        assert_eq!(Quota::block(0, 50, 50, None), 0);
    }
}
