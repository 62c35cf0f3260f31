//! The increment pipeline: how queued counter deltas reach Redis, exactly once.
//!
//! Every `sync_interval` the sync task runs [`Inner::sync_once`]:
//! 1. For every tracked counter, take what it owes Redis (`CounterCell::take_for_flush`): the
//!    unacknowledged push of the last sync if there is one (same sequence number), otherwise
//!    everything pending under a new sequence number. Deltas are coalesced per key: a counter
//!    incremented 10,000 times since the last sync sends one number.
//! 2. Send one pipeline: for each counter with a delta, `EVALSHA ferrolite_incr_v1` (apply
//!    once per (instance, sequence), refresh the expiry, return the global value); for each
//!    other tracked counter, `GET`.
//! 3. Per reply: set the counter's base to the global value and clear what was acknowledged.
//!    A reply that did not arrive leaves the push unacknowledged, to be sent again as is.
//! 4. Prune counters that expired, owe nothing and have no live handle.
//!
//! The queue is bounded by the tracked-key bound (`max_tracked_keys`): values coalesce per key,
//! so only a new key can overflow it, and that is refused with a typed error, counted and logged.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use fred::prelude::{ClientLike, KeysInterface};
use fred::types::{ClusterHash, CustomCommand, Value};

use crate::CacheError;
use crate::counter::{CounterCell, ExpiryMode, Kind, Num};
use crate::dual::Inner;
use crate::redis::{RedisStore, decode_number};

/// What one sync did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyncReport {
    /// Counters whose delta Redis acknowledged.
    pub pushed: usize,
    /// Counters whose global value was read back without a delta.
    pub refreshed: usize,
    /// Counters that still owe Redis a delta after this sync (Redis down or erroring).
    pub unsettled: usize,
    /// Counters pruned because they expired.
    pub pruned: usize,
    /// Per-key errors (typed; a Redis outage appears once).
    pub errors: Vec<CacheError>,
}

enum Planned {
    Push(Num),
    Read,
}

impl Inner {
    /// One sync: push, read back, prune. See the module documentation.
    pub(crate) async fn sync_once(&self) -> Result<SyncReport, CacheError> {
        let _one_at_a_time = self.sync_lock.lock().await;
        let mut report = SyncReport::default();
        if let Some(redis) = &self.redis {
            let cells: Vec<Arc<CounterCell>> = self.counters.read().values().cloned().collect();
            if cells.is_empty() {
                // Nothing to sync: keep the health state fresh so an outage and the recovery are
                // still seen.
                let ping: Result<Value, _> =
                    redis.client().get(redis.key("ferrolite:health")).await;
                match ping {
                    Ok(_) => redis.health.record_ok(),
                    Err(e) => {
                        redis.error("health check", "", &e);
                    }
                }
            } else {
                flush(redis, &self.instance, &self.seq, &cells, &mut report).await;
            }
            report.unsettled = cells.iter().filter(|c| !c.is_settled()).count();
        }
        report.pruned = self.prune();
        self.note_errors(&report);
        Ok(report)
    }
}

/// Pushes what `cells` owe and reads the others back, in one pipeline (see the module docs).
pub(crate) async fn flush(
    redis: &RedisStore,
    instance: &str,
    seq: &AtomicU64,
    cells: &[Arc<CounterCell>],
    report: &mut SyncReport,
) {
    let pipe = redis.client().pipeline();
    let mut plan = Vec::with_capacity(cells.len());
    for cell in cells {
        let full = redis.key(&cell.key);
        let taken = cell.take_for_flush(|| seq.fetch_add(1, Ordering::Relaxed) + 1);
        // Queuing into a pipeline only fails for invalid arguments, which these are not; a
        // failure here surfaces as a missing reply below.
        let queued: Result<(), _> = match taken {
            Some((seq, delta)) => {
                let seq_key = RedisStore::seq_key(&full);
                let args = vec![
                    instance.to_string(),
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
                ];
                plan.push(Planned::Push(delta));
                // fred's pipelines have no EVALSHA method; the raw command is hashed on its
                // first key (argument 2) for Redis Cluster.
                let mut command = Vec::with_capacity(4 + args.len());
                command.extend([redis.incr.sha.clone(), "2".to_string(), full, seq_key]);
                command.extend(args);
                pipe.custom(
                    CustomCommand::new_static("EVALSHA", ClusterHash::Offset(2), false),
                    command,
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

    let replies: Vec<Result<Value, fred::error::Error>> = pipe.try_all().await;
    if replies.len() != plan.len() {
        let reason = replies
            .iter()
            .find_map(|r| r.as_ref().err().map(|e| e.details().to_string()))
            .unwrap_or_else(|| format!("{} replies for {} commands", replies.len(), plan.len()));
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
    for ((cell, planned), reply) in cells.iter().zip(plan).zip(replies) {
        match reply {
            Ok(value) => {
                any_ok = true;
                match decode_number(&cell.key, value, cell.kind) {
                    Ok(global) => match planned {
                        Planned::Push(delta) => {
                            cell.ack(global, delta);
                            report.pushed += 1;
                        }
                        Planned::Read => {
                            cell.refresh(global);
                            report.refreshed += 1;
                        }
                    },
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
        // Redis restarted or flushed its scripts: load it; the unacknowledged pushes go again
        // next time with the same sequence numbers.
        if let Err(e) = redis.load(&redis.incr).await {
            report.errors.push(e);
        }
    }
}

impl Inner {
    /// Drops expired counters (see `Inner::prune_counters`) and idle local windows.
    fn prune(&self) -> usize {
        let pruned = self.prune_counters(&mut self.counters.write());
        let now = self.clock.now_ms();
        let mut windows = self.windows.lock();
        if windows.len() > self.config.max_tracked_keys / 2 {
            windows.retain(|_, w| Arc::strong_count(w) > 1 || !w.is_idle(now));
        }
        pruned
    }

    /// Logs a sync error when it differs from the last one logged, so that a persistent problem
    /// (a key holding a non-number) is reported once, not every interval.
    fn note_errors(&self, report: &SyncReport) {
        let first = report
            .errors
            .iter()
            .find(|e| !matches!(e, CacheError::Unavailable { .. }))
            .map(ToString::to_string);
        let mut last = self.last_sync_error.lock();
        if first != *last {
            if let Some(error) = &first {
                tracing::warn!(%error, errors = report.errors.len(), "cache sync: Redis rejected some counters");
            }
            *last = first;
        }
    }
}
