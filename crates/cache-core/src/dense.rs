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
//! One key, one cell: a family made while another family of the same [class](FamilyKeys::class)
//! holds some of its keys uses those cells (its own slots for them stay unused), as a keyed
//! counter asked for twice is one cell. So the usage counters of a deployment that stays in a
//! reloaded configuration are the same cells for the old store (its permits still settle
//! there) and the new one. The old family lives as long as a new one uses its cells. A key held
//! by a family and by a keyed counter of the same cache are two cells in this process (each
//! reads the other's deltas back with the sync, and their sum in Redis is exact, as between
//! two instances): keep a key in one of them.

use std::borrow::Cow;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::counter::{CellCore, CounterCell, CounterValue, ExpiryMode, Kind};
use crate::counters::Counter;
use crate::dual::Inner;
use crate::error::CacheError;

/// How a family names its cells in Redis: the key of cell `index`, without the namespace
/// prefix, exactly the key a keyed counter of the same thing would have (a cluster of
/// instances that count the same thing through families and through keyed counters agrees).
pub trait FamilyKeys: Send + Sync + 'static {
    /// Writes the key of cell `index` (< the family's length) to `out` (empty when called).
    fn write_key(&self, index: usize, out: &mut String);

    /// Families of one class may hold the same keys (the same metric of the same window
    /// bucket): a new family uses the cells of the keys a live family of its class holds. The
    /// empty class (the default) shares nothing and costs nothing; a shared class costs a key
    /// built per cell of the live families of the class when a family is made.
    fn class(&self) -> &str {
        ""
    }
}

/// One family's cells and how they are kept.
pub(crate) struct DenseFamily {
    keys: Arc<dyn FamilyKeys>,
    /// The cells of keys another family of the class held when this one was made (`None` when
    /// there were none): reads and writes of those indexes go there.
    aliases: Option<Box<[Option<CellRef>]>>,
    pub(crate) ttl_ms: u64,
    /// Whether the cache has a shared tier (read with every value).
    pub(crate) remote: bool,
    pub(crate) cells: Box<[CellCore]>,
}

impl std::fmt::Debug for DenseFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DenseFamily")
            .field("len", &self.cells.len())
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
            aliases: None,
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

    /// Takes the cells of keys `live` (families of the same class) already hold.
    pub(crate) fn share_with(&mut self, live: &[Arc<DenseFamily>], kind: Kind) {
        let mut held = std::collections::HashMap::new();
        for family in live {
            for index in 0..family.cells.len() {
                let cell = family.resolve(family, index);
                if cell.core().kind == kind {
                    held.insert(family.key(index), cell);
                }
            }
        }
        if held.is_empty() {
            return;
        }
        let mut key = String::new();
        let aliases: Box<[Option<CellRef>]> = (0..self.cells.len())
            .map(|index| {
                key.clear();
                self.keys.write_key(index, &mut key);
                held.remove(&key)
            })
            .collect();
        if aliases.iter().any(Option::is_some) {
            self.aliases = Some(aliases);
        }
    }

    /// The cells this family owns (its slots less those that are another family's cells):
    /// what it counts against `max_tracked_keys` and what the sync reads back for it.
    pub(crate) fn owned(&self) -> usize {
        let aliased = self
            .aliases
            .as_ref()
            .map_or(0, |a| a.iter().filter(|c| c.is_some()).count());
        self.cells.len() - aliased
    }

    /// Whether cell `index` is another family's (its slot here stays unused).
    pub(crate) fn is_alias(&self, index: usize) -> bool {
        self.aliases
            .as_ref()
            .is_some_and(|a| a.get(index).is_some_and(Option::is_some))
    }

    /// The cell counter `index` is (its own, or the one another family held): `this` is the
    /// family's own `Arc`.
    pub(crate) fn resolve(&self, this: &Arc<DenseFamily>, index: usize) -> CellRef {
        if let Some(Some(alias)) = self.aliases.as_ref().and_then(|a| a.get(index)) {
            return alias.clone();
        }
        CellRef::Dense(Arc::clone(this), index as u32)
    }

    /// The state of counter `index` (its own or another family's), if in range.
    #[inline]
    pub(crate) fn core(&self, index: usize) -> Option<&CellCore> {
        if let Some(aliases) = &self.aliases {
            if let Some(Some(alias)) = aliases.get(index) {
                return Some(alias.core());
            }
        }
        self.cells.get(index)
    }

    /// Whether every cell expired (or was never written) and owes Redis nothing.
    pub(crate) fn is_expired_and_settled(&self, now_ms: u64) -> bool {
        self.cells
            .iter()
            .all(|c| c.is_expired_and_settled(now_ms, self.remote))
    }
}

/// A counter's cell: keyed (tracked by its key) or one of a family.
#[derive(Debug, Clone)]
pub(crate) enum CellRef {
    Single(Arc<CounterCell>),
    /// A family and the cell's index (always within the family).
    Dense(Arc<DenseFamily>, u32),
}

impl CellRef {
    #[inline]
    pub(crate) fn core(&self) -> &CellCore {
        match self {
            CellRef::Single(cell) => &cell.core,
            // The index was checked when the reference was made.
            CellRef::Dense(family, index) => &family.cells[*index as usize],
        }
    }

    pub(crate) fn ttl_ms(&self) -> u64 {
        match self {
            CellRef::Single(cell) => cell.ttl_ms,
            CellRef::Dense(family, _) => family.ttl_ms,
        }
    }

    pub(crate) fn key(&self) -> Cow<'_, str> {
        match self {
            CellRef::Single(cell) => Cow::Borrowed(&cell.key),
            CellRef::Dense(family, index) => Cow::Owned(family.key(*index as usize)),
        }
    }

    /// Whether both name the same cell.
    pub(crate) fn same(&self, other: &CellRef) -> bool {
        match (self, other) {
            (CellRef::Single(a), CellRef::Single(b)) => Arc::ptr_eq(a, b),
            (CellRef::Dense(a, i), CellRef::Dense(b, j)) => Arc::ptr_eq(a, b) && i == j,
            _ => false,
        }
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
        match self.family.core(index) {
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
            true => Ok(self.family.resolve(&self.family, index)),
            false => Err(CacheError::InvalidArgument {
                field: "index",
                value: index.to_string(),
                reason: "beyond the counter family's length",
            }),
        }
    }
}
