//! Strict admission: check several windowed limits and increment all of them, or none, in one
//! atomic step — in Redis (one Lua script) so that N instances together admit exactly the limit,
//! or in this process when no Redis is configured or it is down and the cache is fail-open.
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

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::CacheError;
use crate::ScriptReply;
use crate::counter::CounterOptions;
use crate::dual::{DualCache, IntCounter};
use crate::error::truncate;
use crate::redis::RedisStore;
use crate::window::{Window, WindowKind};

/// How long an admission's marker (and a withdrawal's tombstone) lives. A withdrawal is sent at
/// the first sync after Redis answers again, so a minute covers it with room to spare; one that
/// came later would find no marker and leave the admission counted — the safe direction (a slot
/// held too long, never one given twice). Every strict admission writes one such key, so it is
/// kept short.
const MARKER_TTL_MS: u64 = 60_000;

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

/// The outcome of [`DualCache::admit`].
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

/// A withdrawal of an admission whose reply was lost, waiting to reach Redis.
#[derive(Debug, Clone)]
pub(crate) struct PendingCancel {
    marker: String,
    counters: Vec<String>,
    deltas: Vec<u64>,
    marker_ttl_ms: u64,
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

impl DualCache {
    /// Admits a request against every limit in `checks` atomically: if each `count + delta <=
    /// limit`, all counters are incremented and `admitted` is true; otherwise none is.
    ///
    /// With Redis this is one `EVALSHA` round trip (`ferrolite_admit_v2`). While Redis is known
    /// to be down, a fail-open cache decides locally at once ([`AdmissionSource::Local`]) and a
    /// fail-closed one refuses at once with [`CacheError::Unavailable`] — neither waits for a
    /// timeout. A reply that times out is withdrawn (see the module documentation).
    pub async fn admit(&self, checks: &[LimitCheck]) -> Result<Admission, CacheError> {
        validate(checks)?;
        let now = self.window_now_ms();
        let slots = checks
            .iter()
            .map(|c| self.slot(c, now))
            .collect::<Result<Vec<_>, _>>()?;
        let inner = &self.inner;
        let Some(redis) = &inner.redis else {
            return self.admit_locally(checks, slots, now);
        };
        if redis.health.is_down() {
            return self.degrade(checks, slots, now, "Redis is down");
        }
        let token = format!(
            "{}-{}",
            inner.sync.instance,
            inner.sync.seq.fetch_add(1, Ordering::Relaxed) + 1
        );
        let first = redis.key(slots[0].current.key());
        let marker = format!("{}:admission:{token}", RedisStore::tag_of(&first));
        let marker_ttl = MARKER_TTL_MS;
        let mut keys = Vec::with_capacity(1 + 2 * checks.len());
        let mut args = Vec::with_capacity(1 + 5 * checks.len());
        keys.push(marker.clone());
        args.push(marker_ttl.to_string());
        for (check, slot) in checks.iter().zip(&slots) {
            keys.push(redis.key(slot.current.key()));
            keys.push(
                redis.key(
                    &check
                        .window
                        .bucket_key(&check.key, now.saturating_sub(check.window.length_ms())),
                ),
            );
            args.push(check.delta.to_string());
            args.push(check.limit.to_string());
            args.push(slot.bucket_start_ms.to_string());
            args.push(match check.window.kind() {
                WindowKind::Fixed => "0".to_string(),
                WindowKind::Sliding => check.window.length_ms().to_string(),
            });
            args.push(check.window.retention_ms().to_string());
        }
        match redis.eval(&redis.admit, keys, args).await {
            Ok(reply) => {
                let decoded = decode_admission(reply, checks.len())?;
                for (slot, raw) in slots.iter().zip(&decoded.raw) {
                    slot.current.observe_global(*raw);
                }
                Ok(Admission {
                    admitted: decoded.admitted,
                    counts: decoded.counts,
                    now_ms: decoded.now_ms,
                    source: AdmissionSource::Redis,
                    taken: taken(checks, slots),
                })
            }
            Err(CacheError::Unavailable { reason, .. }) => {
                // The script may or may not run; withdraw it either way.
                inner.queue_cancel(PendingCancel {
                    counters: slots.iter().map(|s| redis.key(s.current.key())).collect(),
                    deltas: checks.iter().map(|c| c.delta).collect(),
                    marker,
                    marker_ttl_ms: marker_ttl,
                });
                self.degrade(checks, slots, now, &reason)
            }
            Err(e) => Err(e),
        }
    }

    /// Redis cannot decide: fail-open decides locally (and says so once per outage), fail-closed
    /// refuses.
    fn degrade(
        &self,
        checks: &[LimitCheck],
        slots: Vec<Slot>,
        now: u64,
        reason: &str,
    ) -> Result<Admission, CacheError> {
        if !self.inner.fail_open() {
            return Err(CacheError::Unavailable {
                operation: "admit",
                reason: format!("{reason}; the cache is fail-closed"),
            });
        }
        self.inner.note_local_admission();
        self.admit_locally(checks, slots, now)
    }

    fn slot(&self, check: &LimitCheck, now: u64) -> Result<Slot, CacheError> {
        let options = CounterOptions::ttl(Duration::from_millis(check.window.retention_ms()));
        let current = self.counter(&check.window.bucket_key(&check.key, now), options)?;
        let (previous, previous_weight) = match check.window.kind() {
            WindowKind::Fixed => (None, 0.0),
            WindowKind::Sliding => {
                let at = now.saturating_sub(check.window.length_ms());
                (
                    Some(self.counter(&check.window.bucket_key(&check.key, at), options)?),
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
        &self,
        checks: &[LimitCheck],
        slots: Vec<Slot>,
        now: u64,
    ) -> Result<Admission, CacheError> {
        let _serial = self.inner.admit_lock.lock();
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

impl crate::dual::Inner {
    /// Queues the withdrawal of an admission (bounded: the oldest is dropped, and logged).
    pub(crate) fn queue_cancel(&self, cancel: PendingCancel) {
        let mut queue = self.cancels.lock();
        if queue.len() >= self.config.max_tracked_keys {
            queue.pop_front();
            metrics::counter!("ferrolite_cache_admission_cancels_dropped_total").increment(1);
            tracing::warn!(
                "too many admissions awaiting withdrawal; the oldest is dropped and may stay counted"
            );
        }
        queue.push_back(cancel);
    }

    /// Sends the queued withdrawals; those Redis did not take stay queued.
    pub(crate) async fn send_cancels(&self, redis: &RedisStore) -> Vec<CacheError> {
        let pending: Vec<PendingCancel> = self.cancels.lock().drain(..).collect();
        let mut errors = Vec::new();
        let mut failed = Vec::new();
        let mut down = false;
        for cancel in pending {
            if down {
                failed.push(cancel);
                continue;
            }
            let mut keys = Vec::with_capacity(1 + cancel.counters.len());
            keys.push(cancel.marker.clone());
            keys.extend(cancel.counters.iter().cloned());
            let mut args = vec![cancel.marker_ttl_ms.to_string()];
            args.extend(cancel.deltas.iter().map(u64::to_string));
            match redis.eval(&redis.admit_cancel, keys, args).await {
                Ok(_) => {}
                Err(e @ CacheError::Unavailable { .. }) => {
                    down = true;
                    errors.push(e);
                    failed.push(cancel);
                }
                Err(e) => errors.push(e), // a Redis error will not go away by resending
            }
        }
        if !failed.is_empty() {
            let mut queue = self.cancels.lock();
            for cancel in failed.into_iter().rev() {
                queue.push_front(cancel);
            }
        }
        errors
    }

    /// Counts an admission decided locally while Redis is configured, and logs the first of each
    /// outage.
    fn note_local_admission(&self) {
        metrics::counter!("ferrolite_cache_local_admissions_total").increment(1);
        let outages = self.redis.as_ref().map_or(0, |r| r.health.outages());
        if self.local_admission_logged.swap(outages, Ordering::AcqRel) != outages {
            tracing::warn!(
                "strict admission decided on this instance's local view while Redis is unreachable: \
                 each instance now admits up to the full limit (N instances, N x the limit) until Redis is back"
            );
        }
    }
}

struct Decoded {
    admitted: bool,
    counts: Vec<f64>,
    raw: Vec<i64>,
    now_ms: u64,
}

/// Decodes `{status, now_ms, (count_i, raw_i)...}`.
fn decode_admission(reply: ScriptReply, n: usize) -> Result<Decoded, CacheError> {
    let unexpected = |got: &dyn std::fmt::Debug| CacheError::UnexpectedReply {
        key: "ferrolite_admit_v2".into(),
        expected: "[status, now_ms, then a count and a raw value per limit]",
        got: truncate(&format!("{got:?}")),
    };
    let items = match reply {
        ScriptReply::Array(items) if items.len() == 2 + 2 * n => items,
        other => return Err(unexpected(&other)),
    };
    let admitted = match items[0].as_i64() {
        Some(1) => true,
        Some(0) => false,
        _ => return Err(unexpected(&items[0])),
    };
    let now_ms = items[1]
        .as_i64()
        .and_then(|v| u64::try_from(v).ok())
        .ok_or_else(|| unexpected(&items[1]))?;
    let mut counts = Vec::with_capacity(n);
    let mut raw = Vec::with_capacity(n);
    for pair in items[2..].chunks(2) {
        counts.push(
            pair[0]
                .as_f64()
                .filter(|f| f.is_finite())
                .ok_or_else(|| unexpected(&pair[0]))?,
        );
        raw.push(pair[1].as_i64().ok_or_else(|| unexpected(&pair[1]))?);
    }
    Ok(Decoded {
        admitted,
        counts,
        raw,
        now_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_of_the_wrong_shape_are_typed_errors() {
        let err = decode_admission(ScriptReply::Text("OK".into()), 1)
            .err()
            .unwrap();
        assert!(
            matches!(err, CacheError::UnexpectedReply { ref key, .. } if key == "ferrolite_admit_v2")
        );
        let bad_count = ScriptReply::Array(vec![
            ScriptReply::Int(1),
            ScriptReply::Int(5),
            ScriptReply::Text("x".into()),
            ScriptReply::Int(1),
        ]);
        assert!(decode_admission(bad_count, 1).is_err());
        let cancelled = ScriptReply::Array(vec![ScriptReply::Int(2), ScriptReply::Int(5)]);
        assert!(decode_admission(cancelled, 1).is_err());
        let ok = ScriptReply::Array(vec![
            ScriptReply::Int(0),
            ScriptReply::Int(5),
            ScriptReply::Text("2.5".into()),
            ScriptReply::Int(2),
        ]);
        let decoded = decode_admission(ok, 1).unwrap();
        assert!(!decoded.admitted);
        assert_eq!(decoded.counts, vec![2.5]);
        assert_eq!(decoded.raw, vec![2]);
        assert_eq!(decoded.now_ms, 5);
    }
}
