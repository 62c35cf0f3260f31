//! The counters facet ([`DualCache::counters`]) and the counter handles: numbers applied here at
//! once and summed across instances by the sync task (see `counter.rs` for a cell's state and
//! `pipeline.rs` for the exactly-once push).

use std::borrow::Cow;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::counter::{CounterOptions, CounterValue, Kind, check_finite};
use crate::dense::{CellRef, CounterFamily, FamilyKeys};
use crate::dual::{DualCache, Inner};
use crate::error::CacheError;

/// The cache's counters (see [`DualCache::counters`]).
#[derive(Clone, Copy)]
pub struct Counters<'a> {
    inner: &'a Arc<Inner>,
}

impl std::fmt::Debug for Counters<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counters").finish_non_exhaustive()
    }
}

impl DualCache {
    /// The counters: handles ([`counter`](Counters::counter),
    /// [`float_counter`](Counters::float_counter)) for hot paths, and one-off increments and
    /// reads by key.
    pub fn counters(&self) -> Counters<'_> {
        Counters {
            inner: self.inner(),
        }
    }
}

impl Counters<'_> {
    /// A handle on the integer counter `key`, tracked (and synced) while it or the key is live.
    /// Keep the handle on hot paths: its `increment` is one atomic add.
    pub fn counter(self, key: &str, options: CounterOptions) -> Result<IntCounter, CacheError> {
        self.typed(key, options)
    }

    /// A handle on the float counter `key` (spend in USD, for instance).
    pub fn float_counter(
        self,
        key: &str,
        options: CounterOptions,
    ) -> Result<FloatCounter, CacheError> {
        self.typed(key, options)
    }

    fn typed<V: CounterValue>(
        self,
        key: &str,
        options: CounterOptions,
    ) -> Result<Counter<V>, CacheError> {
        let cell = self.inner.cell(key, V::KIND, options)?;
        Ok(Counter {
            cell: CellRef::Single(cell),
            cache: Arc::clone(self.inner),
            _value: PhantomData,
        })
    }

    /// A family of `len` integer counters allocated together, one per index, keyed in Redis as
    /// `keys` says (see [`CounterFamily`]): for a counter kept per deployment, 56 bytes a
    /// counter and no key stored. Its counters count against `max_tracked_keys` (refused as a
    /// whole when they do not fit) and live while a handle on the family or one of its counters
    /// does, or while a counter has not expired or owes Redis a delta. When `keys` has a class,
    /// the family adopts the cells of its keys that live families of the class own (their
    /// counts and what they owe move to it; the old families' counters forward to it), so the
    /// next snapshot's family keeps the counts and the old one goes with its last user.
    pub fn family(
        self,
        len: usize,
        keys: Arc<dyn FamilyKeys>,
        options: CounterOptions,
    ) -> Result<CounterFamily<i64>, CacheError> {
        self.typed_family(len, keys, options)
    }

    /// A family of float counters (see [`family`](Self::family)).
    pub fn float_family(
        self,
        len: usize,
        keys: Arc<dyn FamilyKeys>,
        options: CounterOptions,
    ) -> Result<CounterFamily<f64>, CacheError> {
        self.typed_family(len, keys, options)
    }

    fn typed_family<V: CounterValue>(
        self,
        len: usize,
        keys: Arc<dyn FamilyKeys>,
        options: CounterOptions,
    ) -> Result<CounterFamily<V>, CacheError> {
        let family = self.inner.family(len, keys, V::KIND, options)?;
        Ok(CounterFamily::new(family, Arc::clone(self.inner)))
    }

    /// Diagnostics: the counter families of `class` ([`FamilyKeys::class`]; `""` for the
    /// families that share nothing) this cache tracks now — those in use, and those kept until
    /// their own cells expire and owe Redis nothing — their slots and the cells they own. What
    /// reloads leave behind shows here: for tests and operators, not for hot paths (it takes
    /// the families' lock).
    pub fn family_stats(self, class: &str) -> FamilyStats {
        self.inner.family_stats(class)
    }

    /// Adds `delta` to the integer counter `key`; returns the local view at once. The delta
    /// reaches Redis with the next sync.
    pub fn increment(
        self,
        key: &str,
        delta: i64,
        options: CounterOptions,
    ) -> Result<i64, CacheError> {
        self.inner.refuse("increment")?;
        let cell = self.inner.cell(key, Kind::Int, options)?;
        self.inner.add_ref(&CellRef::Single(cell), delta)
    }

    /// Adds `delta` to the float counter `key`; returns the local view at once.
    pub fn increment_float(
        self,
        key: &str,
        delta: f64,
        options: CounterOptions,
    ) -> Result<f64, CacheError> {
        check_finite(key, delta)?;
        self.inner.refuse("increment")?;
        let cell = self.inner.cell(key, Kind::Float, options)?;
        self.inner.add_ref(&CellRef::Single(cell), delta)
    }

    /// The local view of a tracked counter (`None` if the key is not tracked). A counter of a
    /// family is found too, by building its family's keys: for inspection, not for hot paths.
    pub fn value(self, key: &str) -> Option<f64> {
        let cell = self.inner.counter_cell(key)?;
        Some(
            cell.core()
                .value(self.inner.clock().now_ms(), self.inner.is_remote())
                .as_f64(),
        )
    }
}

/// The counter families of one class a cache tracks ([`Counters::family_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FamilyStats {
    /// Families tracked.
    pub families: usize,
    /// Their slots (a family's length), 56 bytes each.
    pub slots: usize,
    /// The cells they own (slots less those a newer family adopted): what counts against
    /// `max_tracked_keys` and what the sync pushes or reads back.
    pub owned: usize,
}

/// A handle on a counter. Cloning is cheap; `increment` is one atomic add and never waits on
/// Redis. [`IntCounter`] for counts, [`FloatCounter`] for spend.
pub struct Counter<V> {
    cell: CellRef,
    cache: Arc<Inner>,
    _value: PhantomData<fn() -> V>,
}

/// A counter of integers (requests, tokens, calls in flight).
pub type IntCounter = Counter<i64>;

/// A counter of floats (spend in USD).
pub type FloatCounter = Counter<f64>;

impl<V> Clone for Counter<V> {
    fn clone(&self) -> Self {
        Counter {
            cell: self.cell.clone(),
            cache: Arc::clone(&self.cache),
            _value: PhantomData,
        }
    }
}

impl<V> std::fmt::Debug for Counter<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counter")
            .field("key", &self.cell.key())
            .finish()
    }
}

impl<V: CounterValue> Counter<V> {
    pub(crate) fn from_ref(cell: CellRef, cache: Arc<Inner>) -> Self {
        Counter {
            cell,
            cache,
            _value: PhantomData,
        }
    }

    /// Adds `delta` (finite, for floats); returns the new local view. Fails only in fail-closed
    /// mode while Redis is down, and then adds nothing.
    pub fn increment(&self, delta: V) -> Result<V, CacheError> {
        self.cache.add_ref(&self.cell, delta)
    }

    /// Adds `delta` as [`increment`](Self::increment) does, and pushes it to Redis at once in a
    /// background task instead of with the next sync: for a value other instances must see
    /// before their next decision (a settled spend). The caller does not wait on Redis. The push
    /// is the sync's exactly-once push (increments made meanwhile, here or by other handles, go
    /// with it); if it fails, the delta stays owed and the next sync sends it.
    pub fn increment_now(&self, delta: V) -> Result<V, CacheError> {
        let value = self.cache.add_ref(&self.cell, delta)?;
        self.cache.push_soon(&self.cell);
        Ok(value)
    }

    /// The local view: the last global value read plus deltas not yet acknowledged.
    #[inline]
    pub fn value(&self) -> V {
        self.value_at(self.cache.clock().now_ms())
    }

    /// The local view at `now_ms`, a time the caller read from the cache's
    /// [`Clock`](crate::Clock) once for many counters (a routing decision over hundreds of
    /// deployments reads the clock once).
    #[inline]
    pub fn value_at(&self, now_ms: u64) -> V {
        V::from_num(self.cell.core().value(now_ms, self.cache.is_remote()))
    }

    /// Tells the counter its global value, as a script that changed the key in Redis returned
    /// it, so the local view does not wait for the next read-back. Ignored while a push of this
    /// counter awaits its acknowledgement (the read-back after it is exact).
    pub fn observe_global(&self, value: V) {
        if value.check("").is_ok() {
            let now_ms = self.cache.clock().now_ms();
            self.cell
                .on_live(|core| core.refresh(value.to_num(), now_ms));
        }
    }

    /// An error when the last value Redis returned for this key could not be read as a number
    /// (the key holds something else): the local view is then not the shared one.
    pub fn check_remote(&self) -> Result<(), CacheError> {
        if self.cell.core().has_bad_reply() {
            return Err(CacheError::UnexpectedReply {
                key: self.cell.key().into_owned(),
                expected: match V::KIND {
                    Kind::Int => "an integer",
                    Kind::Float => "a number",
                },
                got: "a value that is not a number (see the sync warning)".into(),
            });
        }
        Ok(())
    }

    /// The counter's key (without the Redis namespace prefix); a family's counter builds it.
    pub fn key(&self) -> Cow<'_, str> {
        self.cell.key()
    }

    /// Whether both handles are on the same counter cell of this process.
    pub fn same_cell(&self, other: &Counter<V>) -> bool {
        self.cell.same(&other.cell)
    }
}
