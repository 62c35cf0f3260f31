//! The increment pipeline: how queued counter deltas reach Redis, exactly once, and how watched
//! deadlines are read back.
//!
//! Every `sync_interval` the sync task runs `Inner::sync_once` (in `dual.rs`), which calls
//! [`flush`]; the round trip itself is the store's ([`RemoteStore::sync`], in `redis.rs` for
//! Redis):
//! 1. For every tracked counter, take what it owes Redis (`CellCore::take_for_flush`): the
//!    unacknowledged push of the last sync if there is one (same sequence number), otherwise
//!    everything pending under a new sequence number. Deltas are coalesced per key: a counter
//!    incremented 10,000 times since the last sync sends one number.
//! 2. Send one pipeline: for each counter with a delta, `EVALSHA ferrolite_incr_v2` (apply
//!    once per (instance, sequence), refresh the expiry, return the global value and its TTL);
//!    for each other tracked counter, `GET`; for each watched deadline, `GET` (or, when a local
//!    write did not reach Redis, `EVALSHA ferrolite_set_later_v1` again).
//! 3. Per reply: set the counter's base to the global value and clear what was acknowledged.
//!    A reply that did not arrive leaves the push unacknowledged, to be sent again as is.
//! 4. Send the withdrawals of strict admissions whose reply was lost (`admission.rs`) and the
//!    releases of leases given back (`leases.rs`).
//! 5. Prune counters that expired, owe nothing and have no live handle.
//!
//! The queue is bounded by the tracked-key bound (`max_tracked_keys`): values coalesce per key,
//! so only a new key can overflow it, and that is refused with a typed error, counted and logged.

use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::clock::{Clock, SystemClock};
use crate::counter::Num;
use crate::dense::CellRef;
use crate::error::CacheError;
use crate::remote::{RemoteStore, SyncItem, SyncReply};
use crate::watched::WatchedCell;

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
    /// Last sequence number used (they only grow); admission and lease tokens draw from it too.
    seq: AtomicU64,
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

    /// A token no other admission or lease of any instance uses: the instance id and the next
    /// sequence number.
    pub(crate) fn next_token(&self) -> String {
        format!("{}-{}", self.instance, self.next_seq())
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

/// Pushes what `cells` owe and reads the others (and the watched deadlines) back, in one
/// round trip to `store` (see the module docs).
pub(crate) async fn flush(
    store: &dyn RemoteStore,
    sync: &SyncState,
    cells: &[CellRef],
    watched: &[Arc<WatchedCell>],
    now_ms: u64,
    report: &mut SyncReport,
) {
    // A family's keys are built here, for this round trip only (`dense.rs`).
    let keys: Vec<std::borrow::Cow<'_, str>> = cells.iter().map(CellRef::key).collect();
    let (items, deltas) = plan(sync, cells, &keys, watched, now_ms);
    let trip = store.sync(&sync.instance, &items).await;
    let mut replies = trip.replies.into_iter();
    for (((cell, key), delta), reply) in cells.iter().zip(&keys).zip(deltas).zip(replies.by_ref()) {
        // A cell a newer family adopted since the push was taken is acknowledged where the push
        // moved (`dense.rs`).
        match (delta, reply) {
            (Some(delta), Some(Ok(SyncReply::Pushed { global, ttl_ms }))) => {
                cell.on_live(|core| {
                    core.ack(global, delta, now_ms, ttl_ms)?;
                    core.set_bad_reply(false);
                    Ok(())
                });
                report.pushed += 1;
            }
            (None, Some(Ok(SyncReply::Value(global)))) => {
                cell.on_live(|core| {
                    core.refresh(global, now_ms)?;
                    core.set_bad_reply(false);
                    Ok(())
                });
                report.refreshed += 1;
            }
            (_, Some(Ok(other))) => report.errors.push(CacheError::UnexpectedReply {
                key: key.to_string(),
                expected: "a counter's value",
                got: format!("{other:?}"),
            }),
            (_, Some(Err(e))) => {
                // A reply that is no number: the local view is not the shared one (see
                // `Counter::check_remote`). A command Redis refused says nothing about that.
                if matches!(e, CacheError::UnexpectedReply { .. }) {
                    cell.core().set_bad_reply(true);
                }
                report.errors.push(e);
            }
            (_, None) => {}
        }
    }
    for (cell, reply) in watched.iter().zip(replies) {
        match reply {
            Some(Ok(SyncReply::Deadline(until))) => {
                cell.observe(until);
                if until >= cell.until() {
                    cell.set_unsent(false);
                }
                report.refreshed += 1;
            }
            Some(Ok(other)) => report.errors.push(CacheError::UnexpectedReply {
                key: cell.key.to_string(),
                expected: "a deadline",
                got: format!("{other:?}"),
            }),
            Some(Err(e)) => report.errors.push(e),
            None => {}
        }
    }
    report.errors.extend(trip.errors);
}

/// The round trip's items: for each counter what it owes (`take_for_flush`, the delta kept to
/// acknowledge it) or a read, then for each watched deadline a read or, when a local write did
/// not reach the store and still lies ahead, the write again.
fn plan<'a>(
    sync: &SyncState,
    cells: &'a [CellRef],
    keys: &'a [std::borrow::Cow<'a, str>],
    watched: &'a [Arc<WatchedCell>],
    now_ms: u64,
) -> (Vec<SyncItem<'a>>, Vec<Option<Num>>) {
    let mut items = Vec::with_capacity(cells.len() + watched.len());
    let mut deltas = Vec::with_capacity(cells.len());
    for (cell_ref, key) in cells.iter().zip(keys) {
        let item = cell_ref.on_live(|cell| {
            Ok(match cell.take_for_flush(|| sync.next_seq())? {
                Some((seq, delta)) => {
                    deltas.push(Some(delta));
                    SyncItem::Push {
                        key,
                        seq,
                        delta,
                        ttl_ms: cell.ttl_ms(),
                        expiry: cell.expiry,
                        kind: cell.kind,
                    }
                }
                None => {
                    deltas.push(None);
                    SyncItem::Read {
                        key,
                        kind: cell.kind,
                    }
                }
            })
        });
        items.push(item);
    }
    for cell in watched {
        let until = cell.until();
        if cell.is_unsent() && until <= now_ms {
            // It passed before the store could take it: nothing left to send (and the registry
            // may forget it).
            cell.set_unsent(false);
        }
        items.push(if cell.is_unsent() && until > now_ms {
            SyncItem::SendDeadline {
                key: &cell.key,
                until_ms: until,
                ttl_ms: until - now_ms,
            }
        } else {
            SyncItem::ReadDeadline { key: &cell.key }
        });
    }
    (items, deltas)
}
