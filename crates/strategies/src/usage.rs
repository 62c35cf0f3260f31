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
//! Hot path: the counter handles of the current (and, for sliding windows, previous) bucket of
//! every deployment live in one epoch, swapped once per window. A view takes the epoch's read
//! lock once and reads the clock once; per candidate it does a few atomic loads — no key is
//! built, hashed or allocated.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ferrolite_cache::{
    Admission, CacheError, CounterOptions, DualCache, IntCounter, LimitCheck, Window, hash_tagged,
};
use ferrolite_types::{DeploymentIx, PerDeployment};
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
}

struct Keys {
    rpm: String,
    tpm: String,
}

/// The counters of one window bucket (and the one before, for sliding windows), by position.
struct Epoch {
    bucket: u64,
    rpm: Vec<[Option<IntCounter>; 2]>,
    tpm: Vec<[Option<IntCounter>; 2]>,
}

/// Per-deployment usage of one snapshot's deployments, reached by [`DeploymentIx`].
pub struct UsageStore {
    cache: DualCache,
    window: Window,
    mode: AdmissionMode,
    generation: u32,
    keys: PerDeployment<Keys>,
    epoch: RwLock<Epoch>,
    in_flight: PerDeployment<IntCounter>,
    /// Rotations that could not build the next bucket's counters (registry full): the old
    /// epoch is kept; logged on the first and every power of two.
    rotation_failures: AtomicU64,
}

impl std::fmt::Debug for UsageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageStore")
            .field("window", &self.window)
            .field("mode", &self.mode)
            .field("deployments", &self.keys.len())
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
        let keys = index.map(|ix, id| {
            let model = targets.get(ix).map_or("", |t| t.model.as_str());
            Keys {
                rpm: hash_tagged(id.as_str(), &format!(":{model}:rpm")),
                tpm: hash_tagged(id.as_str(), &format!(":{model}:tpm")),
            }
        });
        let in_flight = index.try_map(|ix, id| {
            let group = targets.get(ix).map_or("", |t| &*t.model_name);
            cache.counter(
                &format!("{group}_request_count:{id}"),
                CounterOptions::ttl(IN_FLIGHT_TTL),
            )
        })?;
        Ok(UsageStore {
            cache,
            window,
            mode,
            generation: index.generation(),
            keys,
            epoch: RwLock::new(Epoch {
                bucket: u64::MAX,
                rpm: Vec::new(),
                tpm: Vec::new(),
            }),
            in_flight,
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
        let counter = |base: &str, at: u64| {
            self.cache
                .counter(&self.window.bucket_key(base, at), options)
        };
        let continues = epoch.bucket != u64::MAX && epoch.bucket + 1 == bucket;
        let mut rpm = Vec::with_capacity(self.keys.len());
        let mut tpm = Vec::with_capacity(self.keys.len());
        for (position, keys) in self.keys.iter().enumerate() {
            let (rpm_prev, tpm_prev) = if !sliding {
                (None, None)
            } else if continues {
                (
                    epoch.rpm.get(position).and_then(|c| c[0].clone()),
                    epoch.tpm.get(position).and_then(|c| c[0].clone()),
                )
            } else {
                (
                    Some(counter(&keys.rpm, previous_start)?),
                    Some(counter(&keys.tpm, previous_start)?),
                )
            };
            rpm.push([Some(counter(&keys.rpm, now_ms)?), rpm_prev]);
            tpm.push([Some(counter(&keys.tpm, now_ms)?), tpm_prev]);
        }
        Ok(Epoch { bucket, rpm, tpm })
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
            .get(target.ix)
            .ok_or(StrategyError::UnknownDeployment { ix: target.ix })?
            .clone();
        // The slot first: if it cannot be taken (fail-closed, Redis down) nothing else is.
        in_flight.increment(1)?;
        let tokens_i = i64::try_from(tokens).unwrap_or(i64::MAX);
        match self.take(target, tokens).await {
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
    async fn take(
        &self,
        target: &Target,
        tokens: u64,
    ) -> Result<(IntCounter, IntCounter), StrategyError> {
        let tokens_i = i64::try_from(tokens).unwrap_or(i64::MAX);
        let strict =
            self.mode == AdmissionMode::Strict && (target.rpm.is_some() || target.tpm.is_some());
        let taken = if strict {
            let keys = self
                .keys
                .get(target.ix)
                .ok_or(StrategyError::UnknownDeployment { ix: target.ix })?;
            let mut checks = Vec::with_capacity(2);
            let mut metrics = Vec::with_capacity(2);
            for (metric, key, delta, limit) in [
                ("rpm", &keys.rpm, 1, target.rpm),
                ("tpm", &keys.tpm, tokens, target.tpm),
            ] {
                if let Some(limit) = limit {
                    metrics.push(metric);
                    checks.push(LimitCheck {
                        key: key.clone(),
                        delta,
                        limit,
                        window: self.window,
                    });
                }
            }
            let admission = self.cache.admit(&checks).await?;
            if !admission.admitted {
                return Err(refusal(target, &checks, &metrics, &admission));
            }
            // The limited metrics were taken by the script, in the bucket it evaluated; the
            // other one is only counted, in the current bucket.
            let mut taken = admission.counters().cloned();
            let view = self.view();
            let (view_rpm, view_tpm) = view.counters(target.ix)?;
            let unknown = || StrategyError::UnknownDeployment { ix: target.ix };
            let rpm = match target.rpm {
                Some(_) => taken.next().ok_or_else(unknown)?,
                None => {
                    view_rpm.increment(1)?;
                    view_rpm.clone()
                }
            };
            let tpm = match target.tpm {
                Some(_) => taken.next().ok_or_else(unknown)?,
                None => {
                    view_tpm.increment(tokens_i)?;
                    view_tpm.clone()
                }
            };
            (rpm, tpm)
        } else {
            let view = self.view();
            let (rpm, tpm) = view.counters(target.ix)?;
            let rpm_now = rpm.increment(1)? as f64 + view.previous(&view.epoch.rpm, target.ix);
            let tpm_now =
                tpm.increment(tokens_i)? as f64 + view.previous(&view.epoch.tpm, target.ix);
            let over =
                |limit: Option<u64>, count: f64| limit.is_some_and(|l| count > l as f64 + 1e-9);
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
            (rpm.clone(), tpm.clone())
        };
        Ok(taken)
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
}

impl UsageView<'_> {
    /// The position of `ix` in this store; `None` for another snapshot's index.
    #[inline]
    fn position(&self, ix: DeploymentIx) -> Option<usize> {
        (ix.generation() == self.store.generation).then_some(ix.index())
    }

    fn counters(&self, ix: DeploymentIx) -> Result<(&IntCounter, &IntCounter), StrategyError> {
        let position = self
            .position(ix)
            .ok_or(StrategyError::UnknownDeployment { ix })?;
        match (
            self.epoch.rpm.get(position).and_then(|c| c[0].as_ref()),
            self.epoch.tpm.get(position).and_then(|c| c[0].as_ref()),
        ) {
            (Some(rpm), Some(tpm)) => Ok((rpm, tpm)),
            _ => Err(StrategyError::UnknownDeployment { ix }),
        }
    }

    fn previous(&self, counters: &[[Option<IntCounter>; 2]], ix: DeploymentIx) -> f64 {
        self.position(ix)
            .and_then(|p| counters.get(p))
            .map_or(0.0, |c| self.weighted(c[1].as_ref()))
    }

    /// The previous bucket's count, weighted by its overlap with the window.
    #[inline]
    fn weighted(&self, previous: Option<&IntCounter>) -> f64 {
        match previous {
            Some(previous) => previous.value_at(self.now_ms).max(0) as f64 * self.previous_weight,
            None => 0.0,
        }
    }

    /// The window's count at a position already checked against this snapshot.
    #[inline]
    fn estimate_at(&self, counters: &[[Option<IntCounter>; 2]], position: usize) -> f64 {
        match counters.get(position) {
            Some([current, previous]) => {
                let current = current
                    .as_ref()
                    .map_or(0, |c| c.value_at(self.now_ms).max(0));
                current as f64 + self.weighted(previous.as_ref())
            }
            None => 0.0,
        }
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

    /// Calls in flight on the deployment, never below 0 (a decrement after the counter expired
    /// cannot make a deployment look idler than idle — LiteLLM #39322).
    #[inline]
    pub fn in_flight(&self, ix: DeploymentIx) -> u64 {
        self.store
            .in_flight
            .get(ix)
            .map_or(0, |c| c.value_at(self.now_ms).max(0) as u64)
    }

    /// The time of this view (the cache's window clock, ms since the epoch).
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Whether `target` can take one more request of `tokens` within its limits. An explicit 0
    /// limit blocks; at `rpm` requests in the window the deployment is full (LiteLLM stops at
    /// `rpm - 1`). A target of another snapshot never fits.
    #[inline]
    pub fn fits(&self, target: &Target, tokens: u64) -> bool {
        let Some(position) = self.position(target.ix) else {
            return false;
        };
        if let Some(limit) = target.rpm {
            if limit == 0 || self.estimate_at(&self.epoch.rpm, position) + 1.0 > limit as f64 + 1e-9
            {
                return false;
            }
        }
        if let Some(limit) = target.tpm {
            if limit == 0
                || self.estimate_at(&self.epoch.tpm, position) + tokens as f64 > limit as f64 + 1e-9
            {
                return false;
            }
        }
        true
    }
}
