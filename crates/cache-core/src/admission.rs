//! The admission facet ([`DualCache::admission`]), strict admission: check several windowed
//! limits and increment all of them, or none, in one atomic step — in Redis (one Lua script)
//! so that N instances together admit exactly the limit, or in this process when no Redis is
//! configured or it is down and the cache is fail-open.
//!
//! The counters are the window-bucket counters of the batched pipeline (`{base}:{bucket}`,
//! [`crate::Window::bucket_key`]): strict admission writes the keys selection reads, so there is
//! one key family, and what an admission took can be given back with a negative increment of the
//! same counter ([`Admission::undo`], or a settlement of actual tokens) through the pipeline.
//!
//! What happens when the reply does not come back in time (Redis frozen, network cut) is
//! defined: the admission is withdrawn with `ferrolite_admit_cancel_v2`, sent until Redis takes
//! it. If the script ran, the cancel gives its deltas back; if it had not run yet, the cancel
//! leaves a tombstone and the script changes nothing when it does run. So a fail-closed cache
//! that reports [`CacheError::Unavailable`] has consumed nothing, and a fail-open one that then
//! decides locally counts the call once (locally, pushed to Redis by the pipeline later).

use std::time::Duration;

use crate::counter::CounterOptions;
use crate::counters::IntCounter;
use crate::dual::DualCache;
use crate::error::CacheError;
use crate::remote::{AdmitCheck, PendingCancel};
use crate::window::{Window, WindowKind};

/// The cache's strict admissions (see [`DualCache::admission`]).
#[derive(Clone, Copy)]
pub struct Admissions<'a> {
    cache: &'a DualCache,
}

impl std::fmt::Debug for Admissions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admissions").finish_non_exhaustive()
    }
}

impl DualCache {
    /// Strict admission: [`admit`](Admissions::admit) a request against several windowed
    /// limits at once.
    pub fn admission(&self) -> Admissions<'_> {
        Admissions { cache: self }
    }
}

/// One limit an admission must respect: `count(key) + delta <= limit` within `window`.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitCheck {
    /// The counter's base key; the window's bucket is appended (`{base}:{bucket}`, LiteLLM's
    /// `HH-MM` for one-minute fixed windows). On Redis Cluster every key of one admission must
    /// share a `{hash tag}` (see [`crate::hash_tagged`]).
    pub key: String,
    /// What the request takes: 1 for a request count, the estimated tokens for a token limit.
    pub delta: u64,
    /// The limit; `0` blocks every request.
    pub limit: u64,
    /// The window the limit holds over.
    pub window: Window,
}

/// Where an admission was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdmissionSource {
    /// In Redis: shared by every instance.
    Redis,
    /// In this process: no Redis configured, or Redis down and the cache fail-open (the limits
    /// then hold per instance until Redis is back; counted in
    /// `ferrolite_cache_local_admissions_total`).
    Local,
}

/// The outcome of [`Admissions::admit`].
#[derive(Debug, Clone)]
#[must_use = "an admission took capacity; undo it if the call does not go ahead"]
pub struct Admission {
    /// Whether every limit had room; if so, every counter was incremented.
    pub admitted: bool,
    /// Each limit's count in its window after the call, in the order of the checks (including
    /// the delta when admitted).
    pub counts: Vec<f64>,
    /// The time the windows were evaluated at (Redis server time, or the cache's clock).
    pub now_ms: u64,
    /// Where it was decided.
    pub source: AdmissionSource,
    /// The current-bucket counter of each check, in order, with the delta taken.
    taken: Vec<(IntCounter, u64)>,
}

impl Admission {
    /// The current-bucket counter of each check, in the order of the checks: give back or add
    /// to it (e.g. settle a token estimate to the actual count) with
    /// [`IntCounter::increment`].
    pub fn counters(&self) -> impl Iterator<Item = &IntCounter> {
        self.taken.iter().map(|(c, _)| c)
    }

    /// Gives back everything this admission took (a later step refused the call). Nothing to
    /// do when it was not admitted. The return reaches Redis through the pipeline, exactly once.
    pub fn undo(self) -> Result<(), CacheError> {
        if !self.admitted {
            return Ok(());
        }
        for (counter, delta) in &self.taken {
            counter.increment(-(i64::try_from(*delta).unwrap_or(i64::MAX)))?;
        }
        Ok(())
    }
}

fn validate(checks: &[LimitCheck]) -> Result<(), CacheError> {
    if checks.is_empty() {
        return Err(CacheError::InvalidArgument {
            field: "checks",
            value: "[]".into(),
            reason: "an admission needs at least one limit",
        });
    }
    for check in checks {
        if check.key.is_empty() {
            return Err(CacheError::InvalidArgument {
                field: "key",
                value: "\"\"".into(),
                reason: "keys must not be empty",
            });
        }
        if i64::try_from(check.delta).is_err() {
            return Err(CacheError::InvalidArgument {
                field: "delta",
                value: format!("{} (key `{}`)", check.delta, check.key),
                reason: "must fit a signed 64-bit integer",
            });
        }
    }
    Ok(())
}

/// One check's counters at the admission's time.
struct Slot {
    current: IntCounter,
    previous: Option<IntCounter>,
    bucket_start_ms: u64,
    /// Weight of the previous bucket (0 for fixed windows).
    previous_weight: f64,
}

impl Admissions<'_> {
    /// Admits a request against every limit in `checks` atomically: if each `count + delta <=
    /// limit`, all counters are incremented and `admitted` is true; otherwise none is.
    ///
    /// With Redis this is one `EVALSHA` round trip (`ferrolite_admit_v2`). While Redis is known
    /// to be down, a fail-open cache decides locally at once ([`AdmissionSource::Local`]) and a
    /// fail-closed one refuses at once with [`CacheError::Unavailable`] — neither waits for a
    /// timeout. A reply that times out is withdrawn (see the module documentation).
    pub async fn admit(self, checks: &[LimitCheck]) -> Result<Admission, CacheError> {
        self.admit_with(checks, &[]).await
    }

    /// [`admit`](Self::admit), on the counters in `known` where one has the key of a check's
    /// current or previous bucket (a counter of a [`CounterFamily`](crate::CounterFamily) the
    /// caller reads its usage from); the other buckets' counters are found by key as `admit`
    /// does. A family's counter is not in the registry by key: without it here, the admission
    /// would count on a keyed counter of its own, which the family sees only through Redis.
    pub async fn admit_with(
        self,
        checks: &[LimitCheck],
        known: &[IntCounter],
    ) -> Result<Admission, CacheError> {
        validate(checks)?;
        let inner = self.cache.inner();
        let now = inner.window_now_ms();
        let slots = checks
            .iter()
            .map(|c| self.slot(c, now, known))
            .collect::<Result<Vec<_>, _>>()?;
        let Some(store) = inner.remote() else {
            return self.admit_locally(checks, slots, now);
        };
        if inner.remote_down() {
            return self.degrade(checks, slots, now, "Redis is down");
        }
        let token = inner.next_token();
        let current_keys: Vec<std::borrow::Cow<'_, str>> =
            slots.iter().map(|s| s.current.key()).collect();
        let remote_checks: Vec<AdmitCheck<'_>> = checks
            .iter()
            .zip(&slots)
            .zip(&current_keys)
            .map(|((check, slot), current)| AdmitCheck {
                current: current.as_ref(),
                previous: check
                    .window
                    .bucket_key(&check.key, now.saturating_sub(check.window.length_ms())),
                delta: check.delta,
                limit: check.limit,
                bucket_start_ms: slot.bucket_start_ms,
                sliding_ms: match check.window.kind() {
                    WindowKind::Fixed => 0,
                    WindowKind::Sliding => check.window.length_ms(),
                },
                retention_ms: check.window.retention_ms(),
            })
            .collect();
        match store.admit(&token, &remote_checks).await {
            Ok(receipt) => {
                for (slot, raw) in slots.iter().zip(&receipt.raw) {
                    slot.current.observe_global(*raw);
                }
                Ok(Admission {
                    admitted: receipt.admitted,
                    counts: receipt.counts,
                    now_ms: receipt.now_ms,
                    source: AdmissionSource::Redis,
                    taken: taken(checks, slots),
                })
            }
            Err(CacheError::Unavailable { reason, .. }) => {
                // The script may or may not run; withdraw it either way.
                inner.queue_cancel(PendingCancel {
                    token,
                    counters: current_keys.iter().map(|k| k.to_string()).collect(),
                    deltas: checks.iter().map(|c| c.delta).collect(),
                });
                self.degrade(checks, slots, now, &reason)
            }
            Err(e) => Err(e),
        }
    }

    /// Redis cannot decide: fail-open decides locally (and says so once per outage), fail-closed
    /// refuses.
    fn degrade(
        self,
        checks: &[LimitCheck],
        slots: Vec<Slot>,
        now: u64,
        reason: &str,
    ) -> Result<Admission, CacheError> {
        if !self.cache.inner().fail_open() {
            return Err(CacheError::Unavailable {
                operation: "admit",
                reason: format!("{reason}; the cache is fail-closed"),
            });
        }
        self.cache.inner().note_local_admission();
        self.admit_locally(checks, slots, now)
    }

    fn slot(self, check: &LimitCheck, now: u64, known: &[IntCounter]) -> Result<Slot, CacheError> {
        let options = CounterOptions::ttl(Duration::from_millis(check.window.retention_ms()));
        let counters = self.cache.counters();
        let counter = |key: String| match known.iter().find(|c| *c.key() == *key) {
            Some(known) => Ok(known.clone()),
            None => counters.counter(&key, options),
        };
        let current = counter(check.window.bucket_key(&check.key, now))?;
        let (previous, previous_weight) = match check.window.kind() {
            WindowKind::Fixed => (None, 0.0),
            WindowKind::Sliding => {
                let at = now.saturating_sub(check.window.length_ms());
                (
                    Some(counter(check.window.bucket_key(&check.key, at))?),
                    check.window.previous_weight(now),
                )
            }
        };
        Ok(Slot {
            current,
            previous,
            bucket_start_ms: check.window.bucket_start_ms(now),
            previous_weight,
        })
    }

    /// The same check-and-increment in this process, under one lock, on the local view of the
    /// same counters (increments reach Redis through the pipeline when it is reachable).
    fn admit_locally(
        self,
        checks: &[LimitCheck],
        slots: Vec<Slot>,
        now: u64,
    ) -> Result<Admission, CacheError> {
        let _serial = self.cache.inner().lock_admissions();
        let counts: Vec<f64> = slots
            .iter()
            .map(|s| {
                let previous = s
                    .previous
                    .as_ref()
                    .map_or(0.0, |p| p.value_at(now).max(0) as f64 * s.previous_weight);
                s.current.value_at(now).max(0) as f64 + previous
            })
            .collect();
        let admitted = checks
            .iter()
            .zip(&counts)
            .all(|(check, count)| count + check.delta as f64 <= check.limit as f64 + 1e-9);
        let mut counts = counts;
        if admitted {
            for ((check, slot), count) in checks.iter().zip(&slots).zip(counts.iter_mut()) {
                slot.current
                    .increment(i64::try_from(check.delta).unwrap_or(i64::MAX))?;
                *count += check.delta as f64;
            }
        }
        Ok(Admission {
            admitted,
            counts,
            now_ms: now,
            source: AdmissionSource::Local,
            taken: taken(checks, slots),
        })
    }
}

fn taken(checks: &[LimitCheck], slots: Vec<Slot>) -> Vec<(IntCounter, u64)> {
    slots
        .into_iter()
        .zip(checks)
        .map(|(s, c)| (s.current, c.delta))
        .collect()
}
