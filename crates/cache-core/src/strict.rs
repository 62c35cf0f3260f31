//! Strict admission: check several windowed limits and increment all of them, or none, in one
//! atomic step — in Redis (one Lua script, Redis server time) so that N instances together admit
//! exactly the limit, or in this process when no Redis is configured.

use std::sync::Arc;

use fred::types::Value;

use crate::CacheError;
use crate::dual::DualCache;
use crate::error::truncate;
use crate::window::{Window, WindowedCounter};

/// One limit an admission must respect: `count(key) + delta <= limit` within `window`.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitCheck {
    /// The counter's key (one Redis hash per key; fields are window buckets). On Redis Cluster
    /// all keys of one admission must share a `{hash tag}` (see [`crate::hash_tagged`]).
    pub key: String,
    /// What the request adds: 1 for a request count, the estimated tokens for a token limit.
    pub delta: f64,
    /// The limit; `0` blocks every request.
    pub limit: f64,
    /// The window the limit holds over.
    pub window: Window,
}

/// Where an admission was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdmissionSource {
    /// In Redis: shared by every instance.
    Redis,
    /// In this process: no Redis configured, or Redis down and the cache fail-open (the limits
    /// then hold per instance until Redis is back).
    Local,
}

/// The outcome of [`DualCache::admit`].
#[derive(Debug, Clone, PartialEq)]
pub struct Admission {
    /// Whether every limit had room; if so, every counter was incremented.
    pub admitted: bool,
    /// Each counter's count after the call, in the order of the checks (including the delta
    /// when admitted).
    pub counts: Vec<f64>,
    /// The time the windows were evaluated at (Redis server time, or the cache's clock).
    pub now_ms: u64,
    /// Where it was decided.
    pub source: AdmissionSource,
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
        for (field, value) in [("delta", check.delta), ("limit", check.limit)] {
            if !value.is_finite() || value < 0.0 {
                return Err(CacheError::InvalidArgument {
                    field,
                    value: format!("{value} (key `{}`)", check.key),
                    reason: "must be a finite number >= 0",
                });
            }
        }
    }
    Ok(())
}

impl DualCache {
    /// Admits a request against every limit in `checks` atomically: if each `count + delta <=
    /// limit`, all counters are incremented and `admitted` is true; otherwise none is.
    ///
    /// With Redis this is one `EVALSHA` round trip (`ferrolite_admit_v1`). While Redis is down,
    /// a fail-open cache decides locally ([`AdmissionSource::Local`]) and a fail-closed one
    /// returns [`CacheError::Unavailable`].
    pub async fn admit(&self, checks: &[LimitCheck]) -> Result<Admission, CacheError> {
        validate(checks)?;
        let inner = &self.inner;
        let Some(redis) = &inner.redis else {
            return self.admit_locally(checks);
        };
        if redis.health.is_down() && inner.fail_open() {
            // Do not wait on a Redis known to be down; the sync task notices the recovery.
            return self.admit_locally(checks);
        }
        let keys = checks.iter().map(|c| redis.key(&c.key)).collect();
        let mut args = Vec::with_capacity(checks.len() * 4);
        for check in checks {
            args.push(check.delta.to_string());
            args.push(check.limit.to_string());
            args.push(check.window.length_ms().to_string());
            args.push(check.window.kind().as_str().to_string());
        }
        match redis.eval(&redis.admit, keys, args).await {
            Ok(reply) => decode_admission(reply, checks.len()),
            Err(CacheError::Unavailable { .. }) if inner.fail_open() => self.admit_locally(checks),
            Err(e) => Err(e),
        }
    }

    fn admit_locally(&self, checks: &[LimitCheck]) -> Result<Admission, CacheError> {
        let now_ms = self.inner.clock.now_ms();
        // Every local admission mutates its counters under this one lock, so a multi-key
        // check-and-increment is atomic.
        let mut windows = self.inner.windows.lock();
        let mut counters = Vec::with_capacity(checks.len());
        for check in checks {
            // Look up before inserting: no key is allocated for a counter that exists.
            let counter = match windows.get(&check.key) {
                Some(counter) => counter,
                None => windows
                    .entry(check.key.clone())
                    .or_insert_with(|| Arc::new(WindowedCounter::new(check.window))),
            };
            if counter.window() != check.window {
                return Err(CacheError::InvalidArgument {
                    field: "window",
                    value: format!("{:?} (key `{}`)", check.window, check.key),
                    reason: "a key keeps the window it was first used with",
                });
            }
            counters.push(Arc::clone(counter));
        }
        let counts: Vec<f64> = counters.iter().map(|c| c.estimate(now_ms)).collect();
        let admitted = checks
            .iter()
            .zip(&counts)
            .all(|(check, count)| count + check.delta <= check.limit);
        let counts = if admitted {
            counters
                .iter()
                .zip(checks)
                .map(|(counter, check)| counter.add(now_ms, check.delta))
                .collect()
        } else {
            counts
        };
        Ok(Admission {
            admitted,
            counts,
            now_ms,
            source: crate::AdmissionSource::Local,
        })
    }
}

/// Decodes `{admitted, now_ms, count_1..count_n}`.
fn decode_admission(reply: Value, n: usize) -> Result<Admission, CacheError> {
    let unexpected = |got: &dyn std::fmt::Debug| CacheError::UnexpectedReply {
        key: "ferrolite_admit_v1".into(),
        expected: "[admitted, now_ms, one count per key]",
        got: truncate(&format!("{got:?}")),
    };
    let items = match reply {
        Value::Array(items) if items.len() == n + 2 => items,
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
    let counts = items[2..]
        .iter()
        .map(|v| {
            v.as_f64()
                .filter(|f| f.is_finite())
                .ok_or_else(|| unexpected(v))
        })
        .collect::<Result<Vec<f64>, _>>()?;
    Ok(Admission {
        admitted,
        counts,
        now_ms,
        source: AdmissionSource::Redis,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_of_the_wrong_shape_are_typed_errors() {
        let err = decode_admission(Value::String("OK".into()), 1).unwrap_err();
        assert!(
            matches!(err, CacheError::UnexpectedReply { ref key, .. } if key == "ferrolite_admit_v1")
        );
        let bad_count = Value::Array(vec![
            Value::Integer(1),
            Value::String("5".into()),
            Value::String("x".into()),
        ]);
        assert!(decode_admission(bad_count, 1).is_err());
        let ok = Value::Array(vec![
            Value::Integer(0),
            Value::String("5".into()),
            Value::String("2.5".into()),
        ]);
        assert_eq!(
            decode_admission(ok, 1).unwrap(),
            Admission {
                admitted: false,
                counts: vec![2.5],
                now_ms: 5,
                source: AdmissionSource::Redis
            }
        );
    }
}
