//! Counter families: the same counter for each of N things (the requests of every deployment
//! in this minute), allocated together as one slab of cells and tracked as one registry entry.
//!
//! A family's cell is 56 bytes (`CellCore`: the counter's state without key or TTL); the key
//! of cell `i` is built from the family's [`FamilyKeys`] only when the sync pushes or reads
//! back that cell, or an error names it. A keyed counter costs a 128-byte cell, its key and a
//! registry slot (~200 bytes); at 10,000 deployments and four counters each, a family is 2.2 MB
//! instead of 8.5.
//!
//! The semantics are those of keyed counters (`counter.rs`): the local view is `base +
//! inflight + pending`, increments are pushed exactly once with the sync (`pipeline.rs`), the
//! global values are read back, the TTL and expiry mode hold per cell, the fail-open and
//! fail-closed paths are the same, and the cells count against `max_tracked_keys`.
//!
//! One key, one cell, owned by the newest family that holds the key: a family made while other
//! families of the same [class](FamilyKeys::class) hold some of its keys adopts those cells —
//! each one's count, pending deltas, unacknowledged push and expiry move into the new family's
//! cell, and the old cell is marked moved and forwards reads and writes there (as a keyed
//! counter asked for twice is one cell). So the usage counters of a deployment that stays in a
//! reloaded configuration are one cell for the old store (its permits still settle there) and
//! the new one, counted once. Ownership only moves forward: a new family holds no reference to
//! an old one, and an old family lives only while something of its own uses it (its store, a
//! permit's handle). Then the prune moves the cells it still owns that count (those of keys no
//! newer family holds — a removed or renamed deployment's — unexpired or owing Redis) into
//! keyed counters (`spill_to_keys`), which a later family bringing the key back adopts like a
//! family's cell, and the slab goes. Reloads therefore keep no old slab alive: the live
//! families of a class are the live configuration's and the old ones still in use, whatever
//! the number of reloads. A family no newer one adopted from (a whole configuration's, or a
//! window bucket's) is kept whole while it has not expired, as before.
//!
//! An increment that resolved an old cell just before its move lands there after it; the sync
//! hands it on to the cell that adopted it (`drain_strays`), so it reaches Redis once, through
//! that cell. The sync's steps on a cell (push, acknowledgement, read-back) check under the
//! cell's lock whether it moved and then go to the adopting cell, so an acknowledgement of a
//! push taken before the move clears it where the push now lives. An old family's table of
//! where its moved cells went (`Forward`, 8 bytes a cell) is rebuilt at every adoption to point
//! at the cells' current owners, so it never holds a family that only forwards further.
//!
//! A key held by a family and by a keyed counter of the same cache are two cells in this
//! process (each reads the other's deltas back with the sync, and their sum in Redis is exact,
//! as between two instances): keep a key in one of them.

use std::borrow::Cow;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::RwLock;

use crate::counter::{CellCore, CounterCell, CounterValue, ExpiryMode, Kind, Moved, Num};
use crate::counters::Counter;
use crate::dual::Inner;
use crate::error::CacheError;
use crate::registry::{ByKey, Registry, lookup};

/// How a family names its cells in Redis: the key of cell `index`, without the namespace
/// prefix, exactly the key a keyed counter of the same thing would have (a cluster of
/// instances that count the same thing through families and through keyed counters agrees).
pub trait FamilyKeys: Send + Sync + 'static {
    /// Writes the key of cell `index` (< the family's length) to `out` (empty when called).
    fn write_key(&self, index: usize, out: &mut String);

    /// Families of one class may hold the same keys (the same metric of the same window
    /// bucket): a new family adopts the cells of the keys live families of its class hold
    /// (see the module documentation). The empty class (the default) shares nothing and costs
    /// nothing; a shared class costs a key built per cell the live families of the class own
    /// when a family is made.
    fn class(&self) -> &str {
        ""
    }
}

/// No target (a slot of [`Forward`] whose cell did not move).
const NONE: u32 = u32::MAX;

/// Where an old family's moved cells went: slot `i` is `(target, index)` in `targets`, or
/// [`NONE`]. Published before the cells it names are marked moved, and replaced as a whole.
#[derive(Debug)]
struct Forward {
    targets: Vec<Arc<DenseFamily>>,
    slots: Box<[(u32, u32)]>,
}

impl Forward {
    fn empty(len: usize) -> Self {
        Forward {
            targets: Vec::new(),
            slots: vec![(NONE, 0); len].into_boxed_slice(),
        }
    }

    /// The position of `family` in `targets`, added if new.
    fn target(&mut self, family: &Arc<DenseFamily>) -> u32 {
        match self.targets.iter().position(|t| Arc::ptr_eq(t, family)) {
            Some(t) => t as u32,
            None => {
                self.targets.push(Arc::clone(family));
                (self.targets.len() - 1) as u32
            }
        }
    }
}

/// One family's cells and how they are kept.
pub(crate) struct DenseFamily {
    keys: Arc<dyn FamilyKeys>,
    /// Where cells adopted by newer families went (`None` until one is).
    forward: RwLock<Option<Arc<Forward>>>,
    /// The cells not moved to a newer family: what the family counts against
    /// `max_tracked_keys` and what the sync pushes and reads back for it.
    owned: AtomicUsize,
    pub(crate) ttl_ms: u64,
    /// Whether the cache has a shared tier (read with every value).
    pub(crate) remote: bool,
    pub(crate) cells: Box<[CellCore]>,
}

impl std::fmt::Debug for DenseFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DenseFamily")
            .field("len", &self.cells.len())
            .field("owned", &self.owned())
            .field("ttl_ms", &self.ttl_ms)
            .finish_non_exhaustive()
    }
}

impl DenseFamily {
    pub(crate) fn new(
        len: usize,
        keys: Arc<dyn FamilyKeys>,
        kind: Kind,
        ttl_ms: u64,
        expiry: ExpiryMode,
        remote: bool,
    ) -> Self {
        DenseFamily {
            keys,
            forward: RwLock::new(None),
            owned: AtomicUsize::new(len),
            ttl_ms,
            remote,
            cells: (0..len).map(|_| CellCore::new(kind, expiry)).collect(),
        }
    }

    /// How the family names its cells.
    pub(crate) fn keys(&self) -> &dyn FamilyKeys {
        &*self.keys
    }

    /// The key of cell `index`.
    pub(crate) fn key(&self, index: usize) -> String {
        let mut key = String::new();
        self.keys.write_key(index, &mut key);
        key
    }

    /// The cells this family owns (its slots less those a newer family adopted).
    pub(crate) fn owned(&self) -> usize {
        self.owned.load(Ordering::Acquire)
    }

    /// Whether some of its cells were adopted by a newer family.
    fn has_moved(&self) -> bool {
        self.owned() < self.cells.len()
    }

    /// Where moved cell `index` went (one step), if the table says.
    fn forwarded(&self, index: usize) -> Option<(Arc<DenseFamily>, u32)> {
        let forward = self.forward.read();
        let forward = forward.as_ref()?;
        let (target, at) = *forward.slots.get(index)?;
        let family = forward.targets.get(target as usize)?;
        Some((Arc::clone(family), at))
    }

    /// The cell counter `index` is now (its own, or the one that adopted it), if in range.
    #[inline]
    pub(crate) fn locate(&self, index: usize) -> Option<CoreRef<'_>> {
        let cell = self.cells.get(index)?;
        if !cell.is_moved() {
            // A family's length fits `u32` (checked when it was made).
            return Some(CoreRef::Slot(self, index as u32));
        }
        Some(self.locate_moved(index))
    }

    #[cold]
    fn locate_moved(&self, index: usize) -> CoreRef<'_> {
        let Some((mut family, mut at)) = self.forwarded(index) else {
            return CoreRef::Slot(self, index as u32);
        };
        // Forwards only point at newer families: the walk ends.
        while family
            .cells
            .get(at as usize)
            .is_some_and(CellCore::is_moved)
        {
            match family.forwarded(at as usize) {
                Some(next) => (family, at) = next,
                None => break,
            }
        }
        CoreRef::Adopted(family, at)
    }

    /// The family and index of the cell counter `index` is now (`this` is the family's `Arc`).
    pub(crate) fn owner_of(this: &Arc<DenseFamily>, index: usize) -> (Arc<DenseFamily>, u32) {
        match this.locate(index) {
            Some(CoreRef::Adopted(family, at)) => (family, at),
            _ => (Arc::clone(this), index as u32),
        }
    }

    /// Hands what increments that raced a move left in the moved cells on to the cells that
    /// adopted them (an increment there, at `now_ms`).
    pub(crate) fn drain_strays(&self, now_ms: u64, remote: bool) {
        if !self.has_moved() {
            return;
        }
        for (index, cell) in self.cells.iter().enumerate() {
            if let Some(delta) = cell.take_stray() {
                if let Some(owner) = self.locate(index) {
                    owner.increment(delta, now_ms, remote, owner.ttl_ms());
                }
            }
        }
    }

    /// Rebuilds the table of where moved cells went so that each names the cell's current owner.
    fn compress(&self) {
        let mut forward = Forward::empty(self.cells.len());
        for (index, cell) in self.cells.iter().enumerate() {
            if cell.is_moved() {
                if let CoreRef::Adopted(family, at) = self.locate_moved(index) {
                    let target = forward.target(&family);
                    forward.slots[index] = (target, at);
                }
            }
        }
        *self.forward.write() = Some(Arc::new(forward));
    }

    /// A reload's leftover that no one uses (the registry holds the only reference, and the
    /// registries' locks are held): moves the cells it still owns that count (unexpired, or
    /// owing Redis) into keyed counters in `counters`, so its slab can go; returns how many.
    /// `None` (nothing moved) when it is no leftover (no newer family adopted any of its
    /// cells: it is a whole configuration's, kept as it is until it expires) or a key it would
    /// move is a keyed counter already (or twice in it).
    #[expect(
        clippy::mutable_key_type,
        reason = "an entry hashes by its cell's key, which never changes (registry.rs)"
    )]
    pub(crate) fn spill_to_keys(
        &self,
        counters: &mut Registry<CounterCell>,
        now_ms: u64,
    ) -> Option<usize> {
        if self.keys.class().is_empty() || !self.has_moved() {
            return None;
        }
        let mut keyed = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (index, cell) in self.cells.iter().enumerate() {
            if !cell.is_moved() && !cell.is_expired_and_settled(now_ms, self.remote) {
                let key = self.key(index);
                if key.is_empty() || lookup(counters, &key).is_some() || !seen.insert(key.clone()) {
                    return None;
                }
                keyed.push((index, key));
            }
        }
        for (index, key) in &keyed {
            let cell = &self.cells[*index];
            let counter =
                CounterCell::new(key.as_str().into(), cell.kind, self.ttl_ms, cell.expiry);
            if cell.move_into(&counter.core) {
                self.owned.fetch_sub(1, Ordering::AcqRel);
            }
            counters.insert(ByKey(Arc::new(counter)));
        }
        Some(keyed.len())
    }

    /// Whether every cell it owns expired (or was never written) and owes Redis nothing, and no
    /// moved cell holds an increment that raced its move.
    pub(crate) fn is_expired_and_settled(&self, now_ms: u64) -> bool {
        self.cells
            .iter()
            .all(|c| c.is_expired_and_settled(now_ms, self.remote))
    }
}

/// The cells a new family adopts from the live families of its class: `(family, its cell,
/// the new family's cell)`, planned before the family is admitted under `max_tracked_keys`.
pub(crate) struct Adoption {
    moves: Vec<(usize, u32, u32)>,
    /// Keyed counters no one holds (a leftover's cells kept as keys, see
    /// [`DenseFamily::spill_to_keys`]) and the new family's cell each becomes.
    keyed: Vec<(Arc<CounterCell>, u32)>,
}

impl Adoption {
    /// For every key of `new` that a cell of kind `kind` owned by one of `live` holds, that
    /// cell; for the others, a keyed counter of `counters` that no handle holds, if any.
    #[expect(
        clippy::mutable_key_type,
        reason = "an entry hashes by its cell's key, which never changes (registry.rs)"
    )]
    pub(crate) fn plan(
        new: &DenseFamily,
        live: &[Arc<DenseFamily>],
        counters: &Registry<CounterCell>,
        kind: Kind,
    ) -> Self {
        let mut held: HashMap<String, (usize, u32)> = HashMap::new();
        for (f, family) in live.iter().enumerate() {
            for (index, cell) in family.cells.iter().enumerate() {
                if cell.kind == kind && !cell.is_moved() {
                    held.entry(family.key(index)).or_insert((f, index as u32));
                }
            }
        }
        let (mut moves, mut keyed) = (Vec::new(), Vec::new());
        if held.is_empty() && counters.is_empty() {
            return Adoption { moves, keyed };
        }
        let mut key = String::new();
        for index in 0..new.cells.len() {
            key.clear();
            new.keys.write_key(index, &mut key);
            if let Some((f, at)) = held.remove(&key) {
                moves.push((f, at, index as u32));
            } else if let Some(cell) = lookup(counters, &key) {
                // The registry's reference only: no handle can write it meanwhile.
                if Arc::strong_count(cell) == 1 && cell.kind == kind && !cell.is_moved() {
                    keyed.push((Arc::clone(cell), index as u32));
                }
            }
        }
        Adoption { moves, keyed }
    }

    /// How many cells move.
    pub(crate) fn len(&self) -> usize {
        self.moves.len() + self.keyed.len()
    }

    /// Moves the planned cells into `new` (which no one else reaches yet): first each losing
    /// family's table says where they go, then each cell moves under its lock (and is marked
    /// moved), then every live family's table is rebuilt to name the current owners.
    #[expect(
        clippy::mutable_key_type,
        reason = "an entry hashes by its cell's key, which never changes (registry.rs)"
    )]
    pub(crate) fn apply(
        self,
        new: &Arc<DenseFamily>,
        live: &[Arc<DenseFamily>],
        counters: &mut Registry<CounterCell>,
    ) {
        for (cell, index) in &self.keyed {
            if let Some(to) = new.cells.get(*index as usize) {
                cell.core.move_into(to);
                counters.remove(&*cell.key);
            }
        }
        if self.moves.is_empty() {
            return;
        }
        for (f, family) in live.iter().enumerate() {
            if !self.moves.iter().any(|m| m.0 == f) {
                continue;
            }
            let mut forward = match family.forward.read().as_deref() {
                Some(current) => Forward {
                    targets: current.targets.clone(),
                    slots: current.slots.clone(),
                },
                None => Forward::empty(family.cells.len()),
            };
            let target = forward.target(new);
            for &(_, at, index) in self.moves.iter().filter(|m| m.0 == f) {
                if let Some(slot) = forward.slots.get_mut(at as usize) {
                    *slot = (target, index);
                }
            }
            *family.forward.write() = Some(Arc::new(forward));
        }
        for &(f, at, index) in &self.moves {
            if let (Some(family), Some(to)) = (live.get(f), new.cells.get(index as usize)) {
                if family
                    .cells
                    .get(at as usize)
                    .is_some_and(|c| c.move_into(to))
                {
                    family.owned.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
        for family in live {
            if family.has_moved() {
                family.compress();
            }
        }
    }
}

/// The cell a counter is now: a keyed one, a family's own, or the one that adopted a family's
/// moved cell.
pub(crate) enum CoreRef<'a> {
    Cell(&'a CounterCell),
    Slot(&'a DenseFamily, u32),
    Adopted(Arc<DenseFamily>, u32),
}

impl std::ops::Deref for CoreRef<'_> {
    type Target = CellCore;

    #[inline]
    fn deref(&self) -> &CellCore {
        match self {
            CoreRef::Cell(cell) => &cell.core,
            // The indexes were checked when the references were made.
            CoreRef::Slot(family, index) => &family.cells[*index as usize],
            CoreRef::Adopted(family, index) => &family.cells[*index as usize],
        }
    }
}

impl CoreRef<'_> {
    /// The counter's TTL (its cell's, or its family's).
    pub(crate) fn ttl_ms(&self) -> u64 {
        match self {
            CoreRef::Cell(cell) => cell.ttl_ms,
            CoreRef::Slot(family, _) => family.ttl_ms,
            CoreRef::Adopted(family, _) => family.ttl_ms,
        }
    }

    /// Adds `delta` as an increment does (see `CellCore::increment`).
    fn increment(&self, delta: Num, now_ms: u64, remote: bool, ttl_ms: u64) {
        CellCore::increment(self, delta, now_ms, remote, ttl_ms);
    }
}

/// A counter's cell: keyed (tracked by its key) or one of a family (which may have moved to a
/// newer family since: every use resolves it).
#[derive(Debug, Clone)]
pub(crate) enum CellRef {
    Single(Arc<CounterCell>),
    /// A family and the cell's index (always within the family).
    Dense(Arc<DenseFamily>, u32),
}

impl CellRef {
    /// The cell as it is now.
    #[inline]
    pub(crate) fn core(&self) -> CoreRef<'_> {
        match self {
            CellRef::Single(cell) => CoreRef::Cell(cell),
            CellRef::Dense(family, index) => family
                .locate(*index as usize)
                .unwrap_or(CoreRef::Slot(family, *index)),
        }
    }

    /// Runs a step of the sync protocol on the cell as it is now, again on the adopting cell if
    /// the cell moved meanwhile (the step checks under the cell's lock).
    pub(crate) fn on_live<R>(&self, mut step: impl FnMut(&CoreRef<'_>) -> Result<R, Moved>) -> R {
        loop {
            if let Ok(done) = step(&self.core()) {
                return done;
            }
        }
    }

    pub(crate) fn key(&self) -> Cow<'_, str> {
        match self {
            CellRef::Single(cell) => Cow::Borrowed(&cell.key),
            CellRef::Dense(family, index) => Cow::Owned(family.key(*index as usize)),
        }
    }

    /// Whether both name the same cell (now).
    pub(crate) fn same(&self, other: &CellRef) -> bool {
        std::ptr::eq::<CellCore>(&*self.core(), &*other.core())
    }
}

/// A family of counters, one per index `0..len` (see the module documentation): made with
/// [`Counters::family`](crate::Counters::family). Reads and increments by index are what a
/// [`Counter`] handle does, without a handle; [`counter`](Self::counter) makes one for code
/// that keeps a single counter (a permit).
pub struct CounterFamily<V> {
    family: Arc<DenseFamily>,
    cache: Arc<Inner>,
    _value: PhantomData<fn() -> V>,
}

/// A family of integer counters.
pub type IntCounterFamily = CounterFamily<i64>;

impl<V> Clone for CounterFamily<V> {
    fn clone(&self) -> Self {
        CounterFamily {
            family: Arc::clone(&self.family),
            cache: Arc::clone(&self.cache),
            _value: PhantomData,
        }
    }
}

impl<V> std::fmt::Debug for CounterFamily<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CounterFamily")
            .field("len", &self.family.cells.len())
            .finish_non_exhaustive()
    }
}

impl<V: CounterValue> CounterFamily<V> {
    pub(crate) fn new(family: Arc<DenseFamily>, cache: Arc<Inner>) -> Self {
        CounterFamily {
            family,
            cache,
            _value: PhantomData,
        }
    }

    /// How many counters the family holds.
    pub fn len(&self) -> usize {
        self.family.cells.len()
    }

    /// Whether the family holds no counter.
    pub fn is_empty(&self) -> bool {
        self.family.cells.is_empty()
    }

    /// The local view of counter `index` at `now_ms` (a time read once from the cache's
    /// [`Clock`](crate::Clock) for many reads); zero for an index out of range.
    #[inline]
    pub fn value_at(&self, index: usize, now_ms: u64) -> V {
        match self.family.locate(index) {
            Some(cell) => V::from_num(cell.value(now_ms, self.family.remote)),
            None => V::from_num(crate::counter::Num::Int(0)),
        }
    }

    /// The local view of counter `index` now.
    pub fn value(&self, index: usize) -> V {
        self.value_at(index, self.cache.clock().now_ms())
    }

    /// Adds `delta` to counter `index`, as [`Counter::increment`] does; an index out of range
    /// is an error naming it.
    pub fn increment(&self, index: usize, delta: V) -> Result<V, CacheError> {
        let cell = self.cell(index)?;
        self.cache.add_ref(&cell, delta)
    }

    /// A handle on counter `index` (keeps the family alive while it lives).
    pub fn counter(&self, index: usize) -> Result<Counter<V>, CacheError> {
        Ok(Counter::from_ref(
            self.cell(index)?,
            Arc::clone(&self.cache),
        ))
    }

    /// The key of counter `index` in Redis (without the namespace prefix), built now.
    pub fn key(&self, index: usize) -> Option<String> {
        (index < self.len()).then(|| self.family.key(index))
    }

    fn cell(&self, index: usize) -> Result<CellRef, CacheError> {
        match index < self.family.cells.len() {
            true => {
                let (family, at) = DenseFamily::owner_of(&self.family, index);
                Ok(CellRef::Dense(family, at))
            }
            false => Err(CacheError::InvalidArgument {
                field: "index",
                value: index.to_string(),
                reason: "beyond the counter family's length",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Ids;

    impl FamilyKeys for Ids {
        fn write_key(&self, index: usize, out: &mut String) {
            out.push_str(&format!("{{d{index}}}:c"));
        }

        fn class(&self) -> &str {
            "c"
        }
    }

    fn family(len: usize) -> DenseFamily {
        DenseFamily::new(
            len,
            Arc::new(Ids),
            Kind::Int,
            60_000,
            ExpiryMode::FromLastWrite,
            true,
        )
    }

    fn adopt(old: &Arc<DenseFamily>, len: usize) -> Arc<DenseFamily> {
        let new = family(len);
        let live = [Arc::clone(old)];
        let adoption = Adoption::plan(&new, &live, &Registry::new(), Kind::Int);
        assert_eq!(adoption.len(), old.cells.len().min(len));
        let new = Arc::new(new);
        adoption.apply(&new, &live, &mut Registry::new());
        new
    }

    fn value(cell: &CellRef) -> Num {
        cell.core().value(10, true)
    }

    /// A push taken before the move is acknowledged where it moved, or resent from there with
    /// the same sequence when its reply is lost; the old cell refuses every sync step.
    #[test]
    fn an_unacknowledged_push_moves_with_its_cell() {
        let old = Arc::new(family(2));
        let at0 = CellRef::Dense(Arc::clone(&old), 0);
        let at1 = CellRef::Dense(Arc::clone(&old), 1);
        at0.core().increment(Num::Int(5), 1, true, 60_000);
        at1.core().increment(Num::Int(7), 1, true, 60_000);
        let taken0 = at0.on_live(|c| c.take_for_flush(|| 1));
        let taken1 = at1.on_live(|c| c.take_for_flush(|| 2));
        assert_eq!(
            (taken0, taken1),
            (Some((1, Num::Int(5))), Some((2, Num::Int(7))))
        );
        let new = adopt(&old, 3);
        assert_eq!(old.owned(), 0);
        assert_eq!(old.cells[0].take_for_flush(|| 9), Err(Moved));
        assert_eq!(
            old.cells[0].ack(Num::Int(5), Num::Int(5), 2, None),
            Err(Moved)
        );
        assert_eq!(old.cells[0].refresh(Num::Int(5), 2), Err(Moved));
        // The reply to cell 0's push arrives: acknowledged on the new family's cell.
        at0.on_live(|c| c.ack(Num::Int(5), Num::Int(5), 2, None));
        let new0 = CellRef::Dense(Arc::clone(&new), 0);
        assert_eq!(value(&new0), Num::Int(5));
        assert!(new0.core().is_settled());
        // Cell 1's reply was lost: the new cell resends it as it was.
        let new1 = CellRef::Dense(Arc::clone(&new), 1);
        assert_eq!(
            value(&new1),
            Num::Int(7),
            "counted once while unacknowledged"
        );
        assert_eq!(
            new1.on_live(|c| c.take_for_flush(|| 3)),
            Some((2, Num::Int(7)))
        );
        assert!(at1.same(&new1));
        assert!(!at0.same(&new1));
    }

    /// An increment that resolved the old cell just before its move lands there; the drain hands
    /// it on, once.
    #[test]
    fn an_increment_racing_the_move_is_handed_on_once() {
        let old = Arc::new(family(1));
        let at0 = CellRef::Dense(Arc::clone(&old), 0);
        at0.core().increment(Num::Int(2), 1, true, 60_000);
        let new = adopt(&old, 1);
        let new0 = CellRef::Dense(Arc::clone(&new), 0);
        assert_eq!(value(&new0), Num::Int(2));
        // The raced increment: on the old cell itself.
        old.cells[0].increment(Num::Int(3), 2, true, 60_000);
        assert!(
            !old.is_expired_and_settled(2),
            "it owes the raced increment"
        );
        old.drain_strays(3, true);
        old.drain_strays(3, true);
        assert_eq!(value(&new0), Num::Int(5));
        assert!(old.is_expired_and_settled(3));
        assert_eq!(
            new0.on_live(|c| c.take_for_flush(|| 1)),
            Some((1, Num::Int(5)))
        );
        // Through the old family's handle: resolved to the new cell.
        at0.core().increment(Num::Int(1), 4, true, 60_000);
        assert_eq!(value(&new0), Num::Int(6));
    }

    /// Chains collapse: after three adoptions the oldest family's table names only the newest
    /// family, so the ones between are not held.
    #[test]
    fn an_old_family_holds_only_the_current_owners_of_its_cells() {
        let first = Arc::new(family(2));
        let second = adopt(&first, 3);
        let third = {
            let new = family(4);
            let live = [Arc::clone(&first), Arc::clone(&second)];
            let adoption = Adoption::plan(&new, &live, &Registry::new(), Kind::Int);
            assert_eq!(adoption.len(), 3, "each key from its one owner");
            let new = Arc::new(new);
            adoption.apply(&new, &live, &mut Registry::new());
            new
        };
        assert_eq!((first.owned(), second.owned(), third.owned()), (0, 0, 4));
        let forward = first.forward.read().clone().unwrap();
        assert_eq!(forward.targets.len(), 1);
        assert!(Arc::ptr_eq(&forward.targets[0], &third));
        drop(forward);
        assert_eq!(
            Arc::strong_count(&second),
            1,
            "nothing holds the family between"
        );
        CellRef::Dense(Arc::clone(&first), 1)
            .core()
            .increment(Num::Int(4), 1, true, 60_000);
        assert_eq!(value(&CellRef::Dense(third, 1)), Num::Int(4));
    }
}
