//! Counters: atomics in this process, summed across instances through Redis.
//!
//! A counter cell holds three numbers:
//! - `base`: the global value last read from Redis (excluding the two below);
//! - `pending`: deltas added here and not yet pushed;
//! - `inflight`: deltas pushed and not yet acknowledged by Redis.
//!
//! The local view is `base + inflight + pending`. An increment is one atomic add on `pending`,
//! so the hot path never waits on Redis and concurrent increments sum exactly. The sync task
//! moves `pending` to `inflight`, pushes it with a sequence number, and on the reply sets `base`
//! to the global value and clears `inflight` (see `pipeline.rs`). While it does, a reader may
//! see a delta twice for an instant (never zero times): the local view errs on the side of
//! "more used", which is the safe side for limits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use crate::error::CacheError;

/// When a counter's TTL starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExpiryMode {
    /// The TTL starts at the first write and is not extended (`PEXPIRE … NX`): a fixed window
    /// such as LiteLLM's allowed-fails counter.
    FromFirstWrite,
    /// Every write extends the TTL (default): the counter lives while it is used.
    #[default]
    FromLastWrite,
}

/// How a counter is kept: its TTL (required, so that state is bounded) and when the TTL starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterOptions {
    /// How long the counter lives.
    pub ttl: Duration,
    /// When the TTL starts.
    pub expiry: ExpiryMode,
}

impl CounterOptions {
    /// A counter living `ttl` after its last write.
    pub fn ttl(ttl: Duration) -> Self {
        CounterOptions {
            ttl,
            expiry: ExpiryMode::FromLastWrite,
        }
    }

    /// A counter living `ttl` after its first write.
    pub fn fixed_ttl(ttl: Duration) -> Self {
        CounterOptions {
            ttl,
            expiry: ExpiryMode::FromFirstWrite,
        }
    }

    pub(crate) fn ttl_ms(&self, key: &str) -> Result<u64, CacheError> {
        let ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        if ms == 0 {
            return Err(CacheError::InvalidArgument {
                field: "ttl",
                value: format!("{:?} (key `{key}`)", self.ttl),
                reason: "a counter needs a TTL of at least 1 ms",
            });
        }
        Ok(ms)
    }
}

/// A number of either kind, as pushed to and read from Redis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    pub(crate) fn is_zero(self) -> bool {
        match self {
            Num::Int(v) => v == 0,
            Num::Float(v) => v == 0.0,
        }
    }

    fn neg(self) -> Num {
        match self {
            Num::Int(v) => Num::Int(v.wrapping_neg()),
            Num::Float(v) => Num::Float(-v),
        }
    }

    #[inline]
    pub(crate) fn as_f64(self) -> f64 {
        match self {
            Num::Int(v) => v as f64,
            Num::Float(v) => v,
        }
    }
}

/// Counter kind, fixed when the key is first used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Int,
    Float,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Int => "integer",
            Kind::Float => "float",
        }
    }
}

/// A number a counter holds: `i64` ([`IntCounter`](crate::IntCounter)) or `f64`
/// ([`FloatCounter`](crate::FloatCounter)).
pub trait CounterValue: Copy + Send + Sync + std::fmt::Debug + private::Sealed + 'static {}

impl CounterValue for i64 {}
impl CounterValue for f64 {}

#[allow(private_interfaces)]
pub(crate) mod private {
    use super::{Kind, Num};
    use crate::error::CacheError;

    /// What the cache needs of a counter's number; sealed, so only `i64` and `f64` qualify.
    pub trait Sealed {
        const KIND: Kind;
        fn to_num(self) -> Num;
        fn from_num(n: Num) -> Self;
        fn check(self, key: &str) -> Result<(), CacheError>;
    }

    impl Sealed for i64 {
        const KIND: Kind = Kind::Int;
        fn to_num(self) -> Num {
            Num::Int(self)
        }
        #[inline]
        fn from_num(n: Num) -> Self {
            match n {
                Num::Int(v) => v,
                Num::Float(v) => v as i64,
            }
        }
        fn check(self, _key: &str) -> Result<(), CacheError> {
            Ok(())
        }
    }

    impl Sealed for f64 {
        const KIND: Kind = Kind::Float;
        fn to_num(self) -> Num {
            Num::Float(self)
        }
        #[inline]
        fn from_num(n: Num) -> Self {
            n.as_f64()
        }
        fn check(self, key: &str) -> Result<(), CacheError> {
            super::check_finite(key, self)
        }
    }
}

/// An error unless `delta` is a finite number.
pub(crate) fn check_finite(key: &str, delta: f64) -> Result<(), CacheError> {
    if delta.is_finite() {
        Ok(())
    } else {
        Err(CacheError::InvalidArgument {
            field: "delta",
            value: format!("{delta} (key `{key}`)"),
            reason: "must be a finite number",
        })
    }
}

/// The state of one counter without its key and TTL: what a counter family holds per cell
/// (`dense.rs`), and the first part of a keyed [`CounterCell`].
///
/// 56 bytes: the five atomics a read loads, the kind (read with every value: it says how to read
/// the bits), and what only writes and the sync task touch.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct CellCore {
    base: AtomicU64,
    pending: AtomicU64,
    inflight: AtomicU64,
    /// Clock time (ms) at which the counter expires; 0 before the first write.
    expires_at: AtomicU64,
    /// Clock time (ms) of the last global value read from Redis (0: never). A remote counter
    /// whose local expiry passed still serves `base` when it was read back after that expiry:
    /// the key lives on in Redis (other instances write it) and the sync keeps `base` fresh.
    refreshed_at: AtomicU64,
    pub(crate) kind: Kind,
    pub(crate) expiry: ExpiryMode,
    /// Whether the last reply for this key could not be decoded (a string where a number is
    /// expected): the local view is then not the shared one, and readers that must know ask.
    bad_reply: std::sync::atomic::AtomicBool,
    /// Taken by the sync task's steps and by a read-back told from outside, so that a push, its
    /// acknowledgement and a read-back do not interleave, and by a move (`move_into`).
    lock: Mutex<()>,
    /// A newer counter family of the class adopted this cell (`dense.rs`): its state now lives
    /// in the family's cell, and this one only catches increments that raced the move, which
    /// are drained there. Set once, under `lock`; never cleared.
    moved: std::sync::atomic::AtomicBool,
    /// Sequence number of the unacknowledged push in `inflight`; 0 when none. Read and written
    /// under `lock` only.
    unacked: AtomicU64,
}

/// A cell operation found the cell moved to a newer family (`CellCore::move_into`): resolve
/// the cell again and retry there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Moved;

/// A family cell's size (see [`CellCore`]).
pub(crate) const CORE_SIZE: usize = 56;
const _: () = assert!(std::mem::size_of::<CellCore>() == CORE_SIZE);

/// One keyed counter's state. Shared by the registry, the handles and the sync task.
///
/// Laid out for the read path and for memory: what a read loads (the five atomics and `kind`)
/// comes first, and the cell is padded so that its `Arc` allocation is exactly 128 bytes (the
/// cell's 112 and the two reference counts), a jemalloc size class whose slots start on 64-byte
/// boundaries, so a read touches one cache line (bytes 16-59 of the slot) — a pick over 1,000
/// deployments reads 4,000 counters, and their cells outgrow the L2 cache. An `align(64)` on the cell did the same
/// at 192 bytes a cell (the reference counts padded to a line of their own). Counters kept per
/// deployment belong in a counter family (`dense.rs`): 56 bytes a cell and no key stored.
/// The key is stored once, here (the registry finds the cell by it, see `registry.rs`).
#[derive(Debug)]
#[repr(C)]
pub(crate) struct CounterCell {
    pub(crate) core: CellCore,
    // Below: what only writes, the sync task and errors read (the slot's second line).
    pub(crate) ttl_ms: u64,
    pub(crate) key: Box<str>,
    /// Up to [`CELL_SIZE`] (see the type's documentation).
    _pad: [u8; CELL_PADDING],
}

/// The size of a [`CounterCell`]: with the `Arc`'s two counts, a 128-byte allocation.
const CELL_SIZE: usize = 112;

/// The bytes after the cell's last field that bring it to [`CELL_SIZE`]: the fields take 80
/// (the core's 56, `ttl_ms`, the key).
const CELL_PADDING: usize = CELL_SIZE - 80;

// The cell is exactly `CELL_SIZE` bytes (a field added must come out of the padding), and what
// a read loads ends before byte 48 of the slot's first line (the `Arc`'s counts take 16).
const _: () = assert!(std::mem::size_of::<CounterCell>() == CELL_SIZE);
const _: () = assert!(std::mem::offset_of!(CellCore, bad_reply) < 48);

impl super::registry::Keyed for CounterCell {
    fn key(&self) -> &str {
        &self.key
    }
}

impl std::ops::Deref for CounterCell {
    type Target = CellCore;

    #[inline]
    fn deref(&self) -> &CellCore {
        &self.core
    }
}

impl CounterCell {
    pub(crate) fn new(key: Box<str>, kind: Kind, ttl_ms: u64, expiry: ExpiryMode) -> Self {
        CounterCell {
            core: CellCore::new(kind, expiry),
            key,
            ttl_ms,
            _pad: [0; CELL_PADDING],
        }
    }

    /// Adds `delta` locally and queues it for Redis; returns the new local view.
    #[cfg(test)]
    pub(crate) fn increment(&self, delta: Num, now_ms: u64, remote: bool) -> Num {
        self.core.increment(delta, now_ms, remote, self.ttl_ms)
    }

    /// See [`CellCore::touch_with`].
    #[cfg(test)]
    pub(crate) fn touch_with(&self, now_ms: u64, remote: bool, between: impl FnOnce()) {
        self.core.touch_with(now_ms, remote, self.ttl_ms, between);
    }
}

impl CellCore {
    pub(crate) fn new(kind: Kind, expiry: ExpiryMode) -> Self {
        let zero = Self::zero_bits(kind);
        CellCore {
            kind,
            expiry,
            base: AtomicU64::new(zero),
            pending: AtomicU64::new(zero),
            inflight: AtomicU64::new(zero),
            expires_at: AtomicU64::new(0),
            refreshed_at: AtomicU64::new(0),
            bad_reply: std::sync::atomic::AtomicBool::new(false),
            lock: Mutex::new(()),
            moved: std::sync::atomic::AtomicBool::new(false),
            unacked: AtomicU64::new(0),
        }
    }

    /// Whether a newer family adopted this cell (see `moved`).
    #[inline]
    pub(crate) fn is_moved(&self) -> bool {
        self.moved.load(Ordering::Acquire)
    }

    /// Moves this cell's state into `target`, a cell of a new family that no one else reaches
    /// yet, and marks this one moved (see [`DenseFamily`](crate::dense)): the global value and
    /// when it was read, the expiry, an unacknowledged push (its sequence and delta: the sync
    /// acknowledges it on `target`, which sends it again as is if the reply is lost), and what
    /// is pending, taken atomically (an increment racing the move lands here after it, and
    /// [`take_stray`](Self::take_stray) hands it on). The value here is left as it was, for a
    /// reader that resolved this cell just before the move. False if it was moved already.
    pub(crate) fn move_into(&self, target: &CellCore) -> bool {
        let _guard = self.lock.lock();
        if self.is_moved() {
            return false;
        }
        let _target = target.lock.lock();
        for (from, to) in [
            (&self.base, &target.base),
            (&self.inflight, &target.inflight),
            (&self.expires_at, &target.expires_at),
            (&self.refreshed_at, &target.refreshed_at),
            (&self.unacked, &target.unacked),
        ] {
            to.store(from.load(Ordering::Acquire), Ordering::Release);
        }
        target.set_bad_reply(self.has_bad_reply());
        let pending = self
            .pending
            .swap(Self::zero_bits(self.kind), Ordering::AcqRel);
        Self::add(&target.pending, self.num(pending));
        self.moved.store(true, Ordering::Release);
        true
    }

    /// What increments that raced the move of this (moved) cell left here, taken: to add to the
    /// cell that adopted it. `None` when nothing is left or the cell was not moved.
    pub(crate) fn take_stray(&self) -> Option<Num> {
        if !self.is_moved() || self.load(&self.pending).is_zero() {
            return None;
        }
        let pending = self
            .pending
            .swap(Self::zero_bits(self.kind), Ordering::AcqRel);
        Some(self.num(pending)).filter(|n| !n.is_zero())
    }

    fn num(&self, bits: u64) -> Num {
        match self.kind {
            Kind::Int => Num::Int(bits as i64),
            Kind::Float => Num::Float(f64::from_bits(bits)),
        }
    }

    fn zero_bits(kind: Kind) -> u64 {
        match kind {
            Kind::Int => 0,
            Kind::Float => 0f64.to_bits(),
        }
    }

    #[inline]
    fn load(&self, cell: &AtomicU64) -> Num {
        self.num(cell.load(Ordering::Acquire))
    }

    fn store(&self, cell: &AtomicU64, value: Num) {
        let bits = match value {
            Num::Int(v) => v as u64,
            Num::Float(v) => v.to_bits(),
        };
        cell.store(bits, Ordering::Release);
    }

    fn add(cell: &AtomicU64, delta: Num) {
        match delta {
            // Two's complement: a wrapping add of the bit pattern is an i64 add.
            Num::Int(d) => {
                cell.fetch_add(d as u64, Ordering::AcqRel);
            }
            Num::Float(d) => {
                let _ = cell.fetch_update(Ordering::AcqRel, Ordering::Acquire, |bits| {
                    Some((f64::from_bits(bits) + d).to_bits())
                });
            }
        }
    }

    #[inline]
    fn sum(a: Num, b: Num) -> Num {
        match (a, b) {
            (Num::Int(a), Num::Int(b)) => Num::Int(a.wrapping_add(b)),
            (a, b) => Num::Float(a.as_f64() + b.as_f64()),
        }
    }

    /// Applies the TTL rules at `now_ms` before a write: an expired counter restarts from zero
    /// (keeping deltas still owed to Redis when `remote`), and the expiry is set or extended.
    fn touch(&self, now_ms: u64, remote: bool, ttl_ms: u64) {
        self.touch_with(now_ms, remote, ttl_ms, || {});
    }

    /// [`touch`](Self::touch), with `between` run after the expiry is claimed and before the
    /// reset: tests use it to land an increment exactly there.
    pub(crate) fn touch_with(
        &self,
        now_ms: u64,
        remote: bool,
        ttl_ms: u64,
        between: impl FnOnce(),
    ) {
        let expires = self.expires_at.load(Ordering::Acquire);
        let next = now_ms.saturating_add(ttl_ms);
        if expires == 0 || now_ms >= expires {
            // What the expired period holds, read before the expiry is claimed: the reset takes
            // exactly this away, so an increment landing after the claim (the next period's)
            // survives it. One racing the instant of expiry may land in either period.
            let old_pending = self.load(&self.pending);
            if self
                .expires_at
                .compare_exchange(expires, next, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
                && expires != 0
            {
                between();
                // A remote base read back after the expiry is the live global value; an older
                // one belonged to the expired key.
                if !remote || self.refreshed_at.load(Ordering::Acquire) < expires {
                    self.store(&self.base, Self::zero_num(self.kind));
                }
                if !remote {
                    Self::add(&self.pending, old_pending.neg());
                }
            }
        } else if self.expiry == ExpiryMode::FromLastWrite && next > expires {
            self.expires_at.store(next, Ordering::Release);
        }
    }

    fn zero_num(kind: Kind) -> Num {
        match kind {
            Kind::Int => Num::Int(0),
            Kind::Float => Num::Float(0.0),
        }
    }

    /// Adds `delta` locally and queues it for Redis; returns the new local view. `ttl_ms` is the
    /// counter's (the keyed cell's own, or its family's).
    pub(crate) fn increment(&self, delta: Num, now_ms: u64, remote: bool, ttl_ms: u64) -> Num {
        self.touch(now_ms, remote, ttl_ms);
        Self::add(&self.pending, delta);
        self.value(now_ms, remote)
    }

    /// The local view at `now_ms`.
    #[inline]
    pub(crate) fn value(&self, now_ms: u64, remote: bool) -> Num {
        let expires = self.expires_at.load(Ordering::Acquire);
        let owed = Self::sum(self.load(&self.inflight), self.load(&self.pending));
        if expires != 0 && now_ms >= expires {
            if !remote {
                return Self::zero_num(self.kind);
            }
            // This instance's TTL ran out, but the global value read back since is current.
            if self.refreshed_at.load(Ordering::Acquire) < expires {
                return owed;
            }
        }
        Self::sum(self.load(&self.base), owed)
    }

    /// Whether the last reply for this key could not be decoded.
    pub(crate) fn has_bad_reply(&self) -> bool {
        self.bad_reply.load(Ordering::Acquire)
    }

    /// Records whether the last reply for this key decoded.
    pub(crate) fn set_bad_reply(&self, bad: bool) {
        self.bad_reply.store(bad, Ordering::Release);
    }

    // ---- sync task side -------------------------------------------------------------------

    /// The delta to push now, with its sequence number: the unacknowledged one again if the last
    /// push failed (same sequence, so Redis applies it at most once), otherwise everything
    /// pending under a new sequence number. `None` when there is nothing to push; `Err(Moved)`
    /// when the cell was moved (the caller resolves the cell again and retries there).
    pub(crate) fn take_for_flush(
        &self,
        next_seq: impl FnOnce() -> u64,
    ) -> Result<Option<(u64, Num)>, Moved> {
        let _guard = self.lock.lock();
        if self.is_moved() {
            return Err(Moved);
        }
        Ok(self.take_locked(next_seq))
    }

    fn take_locked(&self, next_seq: impl FnOnce() -> u64) -> Option<(u64, Num)> {
        let unacked = self.unacked.load(Ordering::Acquire);
        if unacked != 0 {
            return Some((unacked, self.load(&self.inflight)));
        }
        let pending = self.load(&self.pending);
        if pending.is_zero() {
            return None;
        }
        // inflight first, then pending: a concurrent reader sees the delta twice, never zero times.
        Self::add(&self.inflight, pending);
        Self::add(&self.pending, pending.neg());
        let seq = next_seq();
        self.unacked.store(seq, Ordering::Release);
        Some((seq, pending))
    }

    /// Redis applied (or had already applied) the push of `delta` at `now_ms`; `global` is the
    /// counter's value after it and `ttl_ms` the key's remaining lifetime in Redis, when known.
    /// A fixed-TTL counter takes Redis' expiry (set by the first instance that wrote the key),
    /// so increments are not counted locally in a key that Redis is about to drop.
    pub(crate) fn ack(
        &self,
        global: Num,
        delta: Num,
        now_ms: u64,
        ttl_ms: Option<u64>,
    ) -> Result<(), Moved> {
        let _guard = self.lock.lock();
        if self.is_moved() {
            return Err(Moved);
        }
        self.store(&self.base, global);
        Self::add(&self.inflight, delta.neg());
        self.refreshed_at.store(now_ms, Ordering::Release);
        if let Some(ttl) = ttl_ms {
            if self.expiry == ExpiryMode::FromFirstWrite {
                self.expires_at
                    .store(now_ms.saturating_add(ttl).max(1), Ordering::Release);
            }
        }
        self.unacked.store(0, Ordering::Release);
        Ok(())
    }

    /// A read-back of the global value at `now_ms`; ignored while a push is unacknowledged (the
    /// reply to that push is exact); `Err(Moved)` as for [`take_for_flush`](Self::take_for_flush).
    pub(crate) fn refresh(&self, global: Num, now_ms: u64) -> Result<(), Moved> {
        let _guard = self.lock.lock();
        if self.is_moved() {
            return Err(Moved);
        }
        if self.unacked.load(Ordering::Acquire) == 0 {
            self.store(&self.base, global);
            self.refreshed_at.store(now_ms, Ordering::Release);
        }
        Ok(())
    }

    /// Whether nothing is owed to Redis (a moved cell owes only what raced its move).
    pub(crate) fn is_settled(&self) -> bool {
        let _guard = self.lock.lock();
        if self.is_moved() {
            return self.load(&self.pending).is_zero();
        }
        self.unacked.load(Ordering::Acquire) == 0 && self.load(&self.pending).is_zero()
    }

    /// Whether the counter has expired (or was never written) at `now_ms` and owes Redis
    /// nothing (without Redis, nothing is ever owed: `pending` is the local value itself).
    pub(crate) fn is_expired_and_settled(&self, now_ms: u64, remote: bool) -> bool {
        if self.is_moved() {
            // Its state lives in the cell that adopted it; only a raced increment is left.
            return self.load(&self.pending).is_zero();
        }
        let expires = self.expires_at.load(Ordering::Acquire);
        (expires == 0 || now_ms >= expires) && (!remote || self.is_settled())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cell(kind: Kind) -> CounterCell {
        CounterCell::new("k".into(), kind, 60_000, ExpiryMode::FromLastWrite)
    }

    #[test]
    fn float_counters_add() {
        let c = cell(Kind::Float);
        c.increment(Num::Float(0.5), 1, false);
        c.increment(Num::Float(0.25), 1, false);
        assert_eq!(c.value(2, false), Num::Float(0.75));
    }

    #[test]
    fn local_only_counters_reset_after_their_ttl() {
        let c = CounterCell::new("k".into(), Kind::Int, 1_000, ExpiryMode::FromFirstWrite);
        c.increment(Num::Int(3), 10, false);
        c.increment(Num::Int(3), 900, false); // does not extend a first-write TTL
        assert_eq!(c.value(1_009, false), Num::Int(6));
        assert_eq!(c.value(1_010, false), Num::Int(0));
        assert_eq!(c.increment(Num::Int(1), 1_500, false), Num::Int(1));
    }

    #[test]
    fn last_write_ttl_is_extended_by_writes() {
        let c = cell(Kind::Int);
        c.increment(Num::Int(1), 0, false);
        c.increment(Num::Int(1), 50_000, false);
        assert_eq!(c.value(100_000, false), Num::Int(2));
        assert_eq!(c.value(110_000, false), Num::Int(0));
    }

    #[test]
    fn a_failed_push_is_resent_with_the_same_sequence() {
        let c = cell(Kind::Int);
        c.increment(Num::Int(5), 0, true);
        let first = c.take_for_flush(|| 7).unwrap();
        assert_eq!(first, Some((7, Num::Int(5))));
        c.increment(Num::Int(2), 1, true);
        // No ack: the same push again, the new delta waits.
        assert_eq!(c.take_for_flush(|| 8).unwrap(), Some((7, Num::Int(5))));
        assert_eq!(c.value(2, true), Num::Int(7));
        c.ack(Num::Int(5), Num::Int(5), 2, None).unwrap();
        assert_eq!(c.value(2, true), Num::Int(7));
        assert_eq!(c.take_for_flush(|| 9).unwrap(), Some((9, Num::Int(2))));
        c.ack(Num::Int(107), Num::Int(2), 3, None).unwrap(); // another instance added 100 meanwhile
        assert_eq!(c.value(3, true), Num::Int(107));
        assert!(c.is_settled());
    }

    /// Regression (review of 79b0912): an increment landing between the thread that claims a
    /// local counter's expiry and its reset was erased with the expired period.
    #[test]
    fn an_increment_racing_the_expiry_reset_is_kept() {
        let c = CounterCell::new("k".into(), Kind::Int, 1_000, ExpiryMode::FromFirstWrite);
        c.increment(Num::Int(5), 0, false);
        // At 1_000 the counter has expired; another caller's increment lands mid-reset.
        c.touch_with(1_000, false, || CellCore::add(&c.core.pending, Num::Int(1)));
        assert_eq!(c.value(1_001, false), Num::Int(1));
    }

    /// Regression: a remote counter whose local TTL ran out served only what it owed, ignoring
    /// the global value the sync kept reading back (an instance that had not written a
    /// deployment's in-flight counter for an hour read the shared count as 0).
    #[test]
    fn a_remote_counter_past_its_local_ttl_serves_the_global_value_read_back() {
        let c = CounterCell::new("k".into(), Kind::Int, 1_000, ExpiryMode::FromLastWrite);
        c.increment(Num::Int(1), 0, true);
        let (seq, delta) = c.take_for_flush(|| 1).unwrap().unwrap();
        assert_eq!(seq, 1);
        c.ack(Num::Int(1), delta, 10, None).unwrap();
        // Other instances keep the key alive; the sync reads 40 back after our TTL ran out.
        c.refresh(Num::Int(40), 5_000).unwrap();
        assert_eq!(c.value(5_001, true), Num::Int(40));
        // An increment after the local expiry keeps the live base.
        assert_eq!(c.increment(Num::Int(2), 5_002, true), Num::Int(42));
        // Without a read-back since the expiry, the old base is not served.
        let d = CounterCell::new("d".into(), Kind::Int, 1_000, ExpiryMode::FromLastWrite);
        d.refresh(Num::Int(9), 1).unwrap();
        d.increment(Num::Int(1), 2, true);
        let (_, delta) = d.take_for_flush(|| 2).unwrap().unwrap();
        d.ack(Num::Int(10), delta, 3, None).unwrap();
        assert_eq!(d.value(2_000, true), Num::Int(0));
    }

    /// A fixed-TTL counter adopts the expiry Redis reports (set by the first writer anywhere).
    #[test]
    fn a_fixed_ttl_counter_takes_the_expiry_redis_reports() {
        let c = CounterCell::new("k".into(), Kind::Int, 60_000, ExpiryMode::FromFirstWrite);
        c.increment(Num::Int(1), 50_000, true);
        let (_, delta) = c.take_for_flush(|| 1).unwrap().unwrap();
        // Another instance created the key at 0: Redis drops it at 60_000, not 110_000.
        c.ack(Num::Int(7), delta, 50_100, Some(9_900)).unwrap();
        assert_eq!(c.value(59_999, true), Num::Int(7));
        c.increment(Num::Int(1), 60_000, true);
        assert_eq!(c.value(60_001, true), Num::Int(1), "a new window");
    }

    /// One step of a simulated run: an increment, or a flush that Redis applies, loses, or
    /// applies without the reply arriving.
    #[derive(Debug, Clone)]
    enum Step {
        Increment(i64),
        Flush(Outcome),
        Remote(i64),
    }

    #[derive(Debug, Clone, Copy)]
    enum Outcome {
        Applied,
        Lost,
        AppliedReplyLost,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (-5i64..50).prop_map(Step::Increment),
            prop_oneof![
                Just(Outcome::Applied),
                Just(Outcome::Lost),
                Just(Outcome::AppliedReplyLost)
            ]
            .prop_map(Step::Flush),
            (0i64..20).prop_map(Step::Remote),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Coalescing and retries preserve sums: after a final successful flush, the simulated
        /// Redis (which dedups by sequence like `incr_v1.lua`) holds exactly the increments of
        /// this instance plus those of others, and the local view equals it.
        #[test]
        fn coalescing_and_retries_preserve_sums(steps in proptest::collection::vec(step(), 0..80)) {
            let c = cell(Kind::Int);
            let (mut redis, mut last_seq, mut next_seq, mut local_sum, mut remote_sum) = (0i64, 0u64, 0u64, 0i64, 0i64);
            let mut apply = |seq: u64, delta: Num, redis: &mut i64| {
                if seq > last_seq {
                    last_seq = seq;
                    if let Num::Int(d) = delta { *redis += d; }
                }
            };
            for s in steps.iter().cloned().chain([Step::Flush(Outcome::Applied), Step::Flush(Outcome::Applied)]) {
                match s {
                    Step::Increment(d) => { c.increment(Num::Int(d), 0, true); local_sum += d; }
                    Step::Remote(d) => { redis += d; remote_sum += d; }
                    Step::Flush(outcome) => {
                        if let Some((seq, delta)) = c.take_for_flush(|| { next_seq += 1; next_seq }).unwrap() {
                            match outcome {
                                Outcome::Applied => { apply(seq, delta, &mut redis); c.ack(Num::Int(redis), delta, 0, None).unwrap(); }
                                Outcome::Lost => {}
                                Outcome::AppliedReplyLost => apply(seq, delta, &mut redis),
                            }
                        } else {
                            c.refresh(Num::Int(redis), 0).unwrap();
                        }
                    }
                }
            }
            prop_assert_eq!(redis, local_sum + remote_sum);
            prop_assert_eq!(c.value(0, true), Num::Int(redis));
            prop_assert!(c.is_settled());
        }
    }
}
