//! Usage state every strategy reads: requests and tokens per window, and calls in flight, per
//! deployment, shared between router instances through the [`DualCache`].
//!
//! One key family (LiteLLM reference W8 lists three): `{id}:{model}:rpm:{bucket}` and
//! `{id}:{model}:tpm:{bucket}` — with one-minute fixed windows the bucket is LiteLLM's UTC
//! `HH-MM`, so the keys are the ones LiteLLM's v2 strategy writes — and
//! `{group}_request_count:{id}` for calls in flight (LiteLLM's least-busy key).
//!
//! Hot path: the counter handles of the current (and, for sliding windows, previous) bucket of
//! every deployment live in one epoch, swapped once per window. A pick takes the epoch's read
//! lock once, reads the clock once, and per candidate does a few atomic loads — no key is built,
//! hashed or allocated.

use std::time::Duration;

use ferrolite_cache::{CacheError, CounterOptions, DualCache, IntCounter, Window, WindowKind};
use parking_lot::{RwLock, RwLockReadGuard};

use crate::{StrategyError, Target};

/// LiteLLM's `IN_FLIGHT_COUNT_TTL_SECONDS`: an in-flight counter not touched for this long
/// expires (a crashed instance cannot pin a deployment as busy forever).
pub const IN_FLIGHT_TTL: Duration = Duration::from_secs(3600);

struct SlotKeys {
    rpm: String,
    tpm: String,
}

/// The counters of one window bucket (and the one before, for sliding windows).
struct Epoch {
    bucket: u64,
    rpm: Vec<[Option<IntCounter>; 2]>,
    tpm: Vec<[Option<IntCounter>; 2]>,
}

/// Per-deployment usage of one model group's deployments, indexed by [`Target::slot`].
pub struct UsageStore {
    cache: DualCache,
    window: Window,
    keys: Vec<SlotKeys>,
    epoch: RwLock<Epoch>,
    in_flight: Vec<IntCounter>,
}

impl std::fmt::Debug for UsageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageStore")
            .field("window", &self.window)
            .field("deployments", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl UsageStore {
    /// Usage for `targets` of `model_group`, counted over `window` (ferrolite's default is
    /// [`Window::MINUTE_SLIDING`]; [`Window::MINUTE_FIXED`] reproduces LiteLLM's minutes).
    pub fn new(
        cache: DualCache,
        model_group: &str,
        targets: &[Target],
        window: Window,
    ) -> Result<Self, StrategyError> {
        let keys: Vec<SlotKeys> = targets
            .iter()
            .map(|t| SlotKeys {
                rpm: format!("{}:{}:rpm", t.id, t.model),
                tpm: format!("{}:{}:tpm", t.id, t.model),
            })
            .collect();
        let in_flight = targets
            .iter()
            .map(|t| {
                cache.counter(
                    &format!("{model_group}_request_count:{}", t.id),
                    CounterOptions::ttl(IN_FLIGHT_TTL),
                )
            })
            .collect::<Result<Vec<_>, CacheError>>()?;
        let epoch = Epoch {
            bucket: u64::MAX,
            rpm: Vec::new(),
            tpm: Vec::new(),
        };
        Ok(UsageStore {
            cache,
            window,
            keys,
            epoch: RwLock::new(epoch),
            in_flight,
        })
    }

    /// How many deployments (slots) the store holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the store holds no deployment.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The window limits are counted over.
    pub fn window(&self) -> Window {
        self.window
    }

    /// The cache the counters live in.
    pub fn cache(&self) -> &DualCache {
        &self.cache
    }

    /// A consistent read view at the current time (one clock read, one lock).
    pub fn view(&self) -> Result<UsageView<'_>, StrategyError> {
        let now_ms = self.cache.clock().now_ms();
        let bucket = self.window.bucket(now_ms);
        {
            let epoch = self.epoch.read();
            if epoch.bucket == bucket {
                return Ok(self.make_view(epoch, now_ms));
            }
        }
        self.rotate(bucket, now_ms)?;
        Ok(self.make_view(self.epoch.read(), now_ms))
    }

    fn make_view<'a>(&'a self, epoch: RwLockReadGuard<'a, Epoch>, now_ms: u64) -> UsageView<'a> {
        let previous_weight = match self.window.kind() {
            WindowKind::Fixed => 0.0,
            WindowKind::Sliding => {
                let elapsed = now_ms - self.window.bucket_start_ms(now_ms);
                1.0 - elapsed as f64 / self.window.length_ms() as f64
            }
        };
        UsageView {
            store: self,
            epoch,
            now_ms,
            previous_weight,
        }
    }

    /// Moves the epoch to `bucket`: the current counters become the previous ones.
    fn rotate(&self, bucket: u64, now_ms: u64) -> Result<(), StrategyError> {
        let mut epoch = self.epoch.write();
        if epoch.bucket == bucket {
            return Ok(());
        }
        let options = CounterOptions::ttl(Duration::from_millis(self.window.retention_ms()));
        let sliding = self.window.kind() == WindowKind::Sliding;
        let previous_start = now_ms.saturating_sub(self.window.length_ms());
        let counter = |base: &str, at: u64| {
            self.cache
                .counter(&self.window.bucket_key(base, at), options)
        };
        let mut rpm = Vec::with_capacity(self.keys.len());
        let mut tpm = Vec::with_capacity(self.keys.len());
        let continues = epoch.bucket != u64::MAX && epoch.bucket + 1 == bucket;
        for (slot, keys) in self.keys.iter().enumerate() {
            let (rpm_prev, tpm_prev) = if !sliding {
                (None, None)
            } else if continues {
                (epoch.rpm[slot][0].clone(), epoch.tpm[slot][0].clone())
            } else {
                (
                    Some(counter(&keys.rpm, previous_start)?),
                    Some(counter(&keys.tpm, previous_start)?),
                )
            };
            rpm.push([Some(counter(&keys.rpm, now_ms)?), rpm_prev]);
            tpm.push([Some(counter(&keys.tpm, now_ms)?), tpm_prev]);
        }
        *epoch = Epoch { bucket, rpm, tpm };
        Ok(())
    }

    /// Counts one request on `slot` (any strategy's admission).
    pub fn count_request(&self, slot: usize) -> Result<(), StrategyError> {
        let view = self.view()?;
        view.current(&view.epoch.rpm, slot)?.increment(1)?;
        Ok(())
    }

    /// Counts one request on `slot` only if the window then holds at most `limit` requests:
    /// `Ok(count)` or `Err(count before)`. Increment first, check, undo on excess: N concurrent
    /// callers in this process admit exactly `limit - count`.
    pub fn try_count_request(
        &self,
        slot: usize,
        limit: u64,
    ) -> Result<Result<f64, f64>, StrategyError> {
        let view = self.view()?;
        let counter = view.current(&view.epoch.rpm, slot)?;
        let current = counter.increment(1)? as f64;
        let estimate = current + view.previous(&view.epoch.rpm, slot);
        if estimate > limit as f64 {
            counter.increment(-1)?;
            return Ok(Err(estimate - 1.0));
        }
        Ok(Ok(estimate))
    }

    /// Adds `tokens` to `slot`'s token count.
    pub fn record_tokens(&self, slot: usize, tokens: u64) -> Result<(), StrategyError> {
        let view = self.view()?;
        let tokens = i64::try_from(tokens).unwrap_or(i64::MAX);
        view.current(&view.epoch.tpm, slot)?.increment(tokens)?;
        Ok(())
    }

    /// Adds `delta` (+1 at the start of a call, -1 at its end) to `slot`'s calls in flight. A
    /// decrement never takes the count below 0 (an end whose start expired with the counter, as
    /// LiteLLM's `increment_with_floor`), so it cannot hide a later call.
    pub fn add_in_flight(&self, slot: usize, delta: i64) -> Result<(), StrategyError> {
        let counter = self
            .in_flight
            .get(slot)
            .ok_or(StrategyError::UnknownSlot { slot })?;
        let delta = if delta < 0 {
            delta.max(-counter.value().max(0))
        } else {
            delta
        };
        if delta != 0 {
            counter.increment(delta)?;
        }
        Ok(())
    }
}

/// Usage at one moment. Holding it holds the epoch's read lock: keep it for one pick.
pub struct UsageView<'a> {
    store: &'a UsageStore,
    epoch: RwLockReadGuard<'a, Epoch>,
    now_ms: u64,
    previous_weight: f64,
}

impl UsageView<'_> {
    fn current<'v>(
        &'v self,
        counters: &'v [[Option<IntCounter>; 2]],
        slot: usize,
    ) -> Result<&'v IntCounter, StrategyError> {
        counters
            .get(slot)
            .and_then(|c| c[0].as_ref())
            .ok_or(StrategyError::UnknownSlot { slot })
    }

    fn previous(&self, counters: &[[Option<IntCounter>; 2]], slot: usize) -> f64 {
        match counters.get(slot).and_then(|c| c[1].as_ref()) {
            Some(previous) => previous.value_at(self.now_ms).max(0) as f64 * self.previous_weight,
            None => 0.0,
        }
    }

    fn estimate(&self, counters: &[[Option<IntCounter>; 2]], slot: usize) -> f64 {
        let current = counters
            .get(slot)
            .and_then(|c| c[0].as_ref())
            .map_or(0, |c| c.value_at(self.now_ms).max(0));
        current as f64 + self.previous(counters, slot)
    }

    /// Requests in `slot`'s window now.
    pub fn rpm(&self, slot: usize) -> f64 {
        self.estimate(&self.epoch.rpm, slot)
    }

    /// Tokens in `slot`'s window now.
    pub fn tpm(&self, slot: usize) -> f64 {
        self.estimate(&self.epoch.tpm, slot)
    }

    /// Calls in flight on `slot`, never below 0 (a decrement after the counter expired cannot
    /// make a deployment look idler than idle — LiteLLM #39322).
    pub fn in_flight(&self, slot: usize) -> u64 {
        self.store
            .in_flight
            .get(slot)
            .map_or(0, |c| c.value_at(self.now_ms).max(0) as u64)
    }

    /// The time of this view (the cache clock, ms since the epoch).
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Whether `target` can take one more request of `input_tokens` within its limits. An
    /// explicit 0 limit blocks; at `rpm` requests in the window the deployment is full (LiteLLM
    /// stops at `rpm - 1`).
    pub fn fits(&self, target: &Target, input_tokens: u64) -> bool {
        if let Some(limit) = target.rpm {
            if limit == 0 || self.rpm(target.slot) + 1.0 > limit as f64 + 1e-9 {
                return false;
            }
        }
        if let Some(limit) = target.tpm {
            if limit == 0 || self.tpm(target.slot) + input_tokens as f64 > limit as f64 + 1e-9 {
                return false;
            }
        }
        true
    }
}
