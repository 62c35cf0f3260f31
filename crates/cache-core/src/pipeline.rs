//! The increment pipeline: how queued counter deltas reach Redis, exactly once, and how watched
//! deadlines are read back.
//!
//! Every `sync_interval` the sync task runs `Inner::sync_once` (in `dual.rs`), which calls
//! [`flush`]:
//! 1. For every tracked counter, take what it owes Redis (`CounterCell::take_for_flush`): the
//!    unacknowledged push of the last sync if there is one (same sequence number), otherwise
//!    everything pending under a new sequence number. Deltas are coalesced per key: a counter
//!    incremented 10,000 times since the last sync sends one number.
//! 2. Send one pipeline: for each counter with a delta, `EVALSHA ferrolite_incr_v2` (apply
//!    once per (instance, sequence), refresh the expiry, return the global value and its TTL);
//!    for each other tracked counter, `GET`; for each watched deadline, `GET` (or, when a local
//!    write did not reach Redis, `EVALSHA ferrolite_set_later_v1` again).
//! 3. Per reply: set the counter's base to the global value and clear what was acknowledged.
//!    A reply that did not arrive leaves the push unacknowledged, to be sent again as is.
//! 4. Send the withdrawals of strict admissions whose reply was lost (`strict.rs`).
//! 5. Prune counters that expired, owe nothing and have no live handle.
//!
//! The queue is bounded by the tracked-key bound (`max_tracked_keys`): values coalesce per key,
//! so only a new key can overflow it, and that is refused with a typed error, counted and logged.

use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

#[cfg(feature = "redis")]
use fred::prelude::{ClientLike, KeysInterface};
#[cfg(feature = "redis")]
use fred::types::{ClusterHash, CustomCommand, Value};
use parking_lot::Mutex;

use crate::CacheError;
use crate::clock::{Clock, SystemClock};
use crate::counter::{CounterCell, ExpiryMode, Kind, Num};
#[cfg(feature = "redis")]
use crate::redis::{RedisStore, decode_deadline, decode_number};

/// Without Redis support there is nothing to flush to (and no store to call this with).
#[cfg(not(feature = "redis"))]
pub(crate) async fn flush(
    redis: &crate::redis::RedisStore,
    sync: &SyncState,
    cells: &[Arc<CounterCell>],
    watched: &[Arc<WatchedCell>],
    now_ms: u64,
    report: &mut SyncReport,
) {
    redis.flush(sync, cells, watched, now_ms, report).await;
}
use crate::watched::WatchedCell;

/// How long a counter's sequence hash outlives the counter: a push resent after the counter
/// expired (the reply was lost, Redis came back late) is still recognised as applied.
pub(crate) const SEQ_GRACE_MS: u64 = 600_000;

/// What one sync did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncReport {
    /// Counters whose delta Redis acknowledged.
    pub pushed: usize,
    /// Counters and watched deadlines whose global value was read back without a delta.
    pub refreshed: usize,
    /// Counters that still owe Redis a delta after this sync (Redis down or erroring).
    pub unsettled: usize,
    /// Counters and watched deadlines pruned because they expired.
    pub pruned: usize,
    /// Per-key errors (typed; a Redis outage appears once).
    pub errors: Vec<CacheError>,
}

/// The exactly-once flush protocol's state: who this instance is, the last sequence number
/// used, one sync at a time, and which keys are currently failing (each logged once when it
/// goes bad).
#[derive(Debug)]
pub(crate) struct SyncState {
    /// This instance's id in the protocol.
    pub(crate) instance: String,
    /// Last sequence number used (they only grow); strict admission tokens draw from it too.
    pub(crate) seq: AtomicU64,
    /// One sync at a time: a manual `sync_now` racing the sync task would otherwise apply an
    /// older read-back after a newer one, or acknowledge one push twice.
    lock: tokio::sync::Mutex<()>,
    /// Keys whose last reply was an error, so each is logged when it goes bad, not every sync.
    bad_keys: Mutex<HashSet<String>>,
}

impl Default for SyncState {
    fn default() -> Self {
        Self::new()
    }
}

impl SyncState {
    pub(crate) fn new() -> Self {
        SyncState {
            instance: instance_id(),
            seq: AtomicU64::new(0),
            lock: tokio::sync::Mutex::new(()),
            bad_keys: Mutex::new(HashSet::new()),
        }
    }

    /// Holds off any other sync until the guard drops.
    pub(crate) async fn one_at_a_time(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.lock.lock().await
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Logs each key that went bad in this sync (and, at debug level, those that recovered).
    pub(crate) fn note_errors(&self, report: &SyncReport) {
        let now_bad: HashSet<String> = report
            .errors
            .iter()
            .filter_map(|e| match e {
                CacheError::UnexpectedReply { key, .. } | CacheError::Redis { key, .. } => {
                    Some(key.clone())
                }
                _ => None,
            })
            .collect();
        let mut bad = self.bad_keys.lock();
        for error in &report.errors {
            if let CacheError::UnexpectedReply { key, .. } | CacheError::Redis { key, .. } = error {
                if !bad.contains(key) {
                    tracing::warn!(%error, key = key.as_str(), "cache sync: Redis rejected a key");
                }
            }
        }
        for key in bad.difference(&now_bad) {
            tracing::debug!(key = key.as_str(), "cache sync: key readable again");
        }
        // A sync that could not reach Redis says nothing about the keys.
        if !report
            .errors
            .iter()
            .any(|e| matches!(e, CacheError::Unavailable { .. }))
        {
            *bad = now_bad;
        }
    }
}

/// A random-enough instance id without another dependency: std's per-process random hash keys
/// mixed with the time and a process-wide counter.
fn instance_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(SystemClock.now_ms());
    hasher.write_u64(NEXT.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    format!("{:016x}", hasher.finish())
}

#[cfg(feature = "redis")]
enum Planned {
    Push(Num),
    Read,
}

#[cfg(feature = "redis")]
/// Pushes what `cells` owe and reads the others (and the watched deadlines) back, in one
/// pipeline (see the module docs).
pub(crate) async fn flush(
    redis: &RedisStore,
    sync: &SyncState,
    cells: &[Arc<CounterCell>],
    watched: &[Arc<WatchedCell>],
    now_ms: u64,
    report: &mut SyncReport,
) {
    let pipe = redis.client().pipeline();
    let mut plan = Vec::with_capacity(cells.len());
    for cell in cells {
        let full = redis.key(&cell.key);
        let taken = cell.take_for_flush(|| sync.next_seq());
        // Queuing into a pipeline only fails for invalid arguments, which these are not; a
        // failure here surfaces as a missing reply below.
        let queued: Result<(), _> = match taken {
            Some((seq, delta)) => {
                let seq_key = RedisStore::seq_key(&full);
                let args = [
                    sync.instance.clone(),
                    seq.to_string(),
                    delta.to_arg(),
                    cell.ttl_ms.to_string(),
                    match cell.expiry {
                        ExpiryMode::FromFirstWrite => "nx".to_string(),
                        ExpiryMode::FromLastWrite => "always".to_string(),
                    },
                    match cell.kind {
                        Kind::Int => "int".to_string(),
                        Kind::Float => "float".to_string(),
                    },
                    SEQ_GRACE_MS.to_string(),
                ];
                plan.push(Planned::Push(delta));
                pipe.custom(
                    evalsha(),
                    script_args(&redis.incr.sha, [full, seq_key], args),
                )
                .await
            }
            None => {
                plan.push(Planned::Read);
                pipe.get(full).await
            }
        };
        if let Err(e) = queued {
            tracing::debug!(error = %e, "could not queue a pipeline command");
        }
    }
    for cell in watched {
        let full = redis.key(&cell.key);
        let until = cell.until();
        if cell.is_unsent() && until <= now_ms {
            // It passed before Redis could take it: nothing left to send (and the registry may
            // forget it).
            cell.set_unsent(false);
        }
        let queued: Result<(), _> = if cell.is_unsent() && until > now_ms {
            let args = [until.to_string(), (until - now_ms).to_string()];
            pipe.custom(evalsha(), script_args(&redis.set_later.sha, [full], args))
                .await
        } else {
            pipe.get(full).await
        };
        if let Err(e) = queued {
            tracing::debug!(error = %e, "could not queue a pipeline command");
        }
    }

    let replies: Vec<Result<Value, fred::error::Error>> = pipe.try_all().await;
    let expected = plan.len() + watched.len();
    if replies.len() != expected {
        let reason = replies
            .iter()
            .find_map(|r| r.as_ref().err().map(|e| e.details().to_string()))
            .unwrap_or_else(|| format!("{} replies for {expected} commands", replies.len()));
        redis.health.record_unavailable("sync", &reason);
        report.errors.push(CacheError::Unavailable {
            operation: "sync",
            reason,
        });
        return;
    }

    let mut reload_script = false;
    let mut unavailable = None;
    let mut any_ok = false;
    let mut replies = replies.into_iter();
    for ((cell, planned), reply) in cells.iter().zip(plan).zip(replies.by_ref()) {
        match reply {
            Ok(value) => {
                any_ok = true;
                let decoded = match planned {
                    Planned::Push(delta) => {
                        decode_push(&cell.key, value, cell.kind).map(|(global, ttl)| {
                            cell.ack(global, delta, now_ms, ttl);
                            report.pushed += 1;
                        })
                    }
                    Planned::Read => decode_number(&cell.key, value, cell.kind).map(|global| {
                        cell.refresh(global, now_ms);
                        report.refreshed += 1;
                    }),
                };
                cell.set_bad_reply(decoded.is_err());
                if let Err(e) = decoded {
                    report.errors.push(e);
                }
            }
            Err(e) if e.details().starts_with("NOSCRIPT") => reload_script = true,
            Err(e) => match redis.error("sync", &cell.key, &e) {
                CacheError::Unavailable { .. } => unavailable = Some(e.details().to_string()),
                typed => report.errors.push(typed),
            },
        }
    }
    for (cell, reply) in watched.iter().zip(replies) {
        match reply {
            Ok(value) => {
                any_ok = true;
                match decode_deadline(&cell.key, value) {
                    Ok(until) => {
                        cell.observe(until);
                        if until >= cell.until() {
                            cell.set_unsent(false);
                        }
                        report.refreshed += 1;
                    }
                    Err(e) => report.errors.push(e),
                }
            }
            Err(e) if e.details().starts_with("NOSCRIPT") => reload_script = true,
            Err(e) => match redis.error("sync", &cell.key, &e) {
                CacheError::Unavailable { .. } => unavailable = Some(e.details().to_string()),
                typed => report.errors.push(typed),
            },
        }
    }
    if let Some(reason) = unavailable {
        report.errors.push(CacheError::Unavailable {
            operation: "sync",
            reason,
        });
    } else if any_ok {
        redis.health.record_ok();
    }
    if reload_script {
        // Redis restarted or flushed its scripts: load them; the unacknowledged pushes go again
        // next time with the same sequence numbers.
        for script in [&redis.incr, &redis.set_later] {
            if let Err(e) = redis.load(script).await {
                report.errors.push(e);
            }
        }
    }
}

#[cfg(feature = "redis")]
/// fred's pipelines have no EVALSHA method; the raw command is hashed on its first key
/// (argument 2) for Redis Cluster.
fn evalsha() -> CustomCommand {
    CustomCommand::new_static("EVALSHA", ClusterHash::Offset(2), false)
}

#[cfg(feature = "redis")]
fn script_args<const K: usize, const A: usize>(
    sha: &str,
    keys: [String; K],
    args: [String; A],
) -> Vec<String> {
    let mut command = Vec::with_capacity(2 + K + A);
    command.push(sha.to_string());
    command.push(K.to_string());
    command.extend(keys);
    command.extend(args);
    command
}

#[cfg(feature = "redis")]
/// `ferrolite_incr_v2`'s reply: `[value or nil, pttl]`.
fn decode_push(key: &str, value: Value, kind: Kind) -> Result<(Num, Option<u64>), CacheError> {
    match value {
        Value::Array(mut items) if items.len() == 2 => {
            let ttl = items
                .pop()
                .and_then(|t| t.as_i64())
                .and_then(|t| u64::try_from(t).ok());
            let global = decode_number(key, items.pop().unwrap_or(Value::Null), kind)?;
            Ok((global, ttl))
        }
        other => Err(CacheError::UnexpectedReply {
            key: key.to_string(),
            expected: "[value, ttl] from ferrolite_incr_v2",
            got: crate::error::truncate(&format!("{other:?}")),
        }),
    }
}
