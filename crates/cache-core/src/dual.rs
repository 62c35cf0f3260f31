//! The core of [`DualCache`]: the registries of counters and watched deadlines, the local tier
//! of values, the shared tier's store and its outage state, and the sync task. The facets
//! (`kv.rs`, `counters.rs`, `deadlines.rs`, `leases.rs`, `admission.rs`, `shared.rs`) build on
//! this module through `Inner`'s methods; its fields are private here, and nothing here names
//! a facet.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Mutex, MutexGuard, RwLock};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::clock::{Clock, SystemClock};
use crate::config::{CacheConfig, FailureMode};
use crate::counter::{CellCore, CounterCell, CounterOptions, CounterValue, Kind};
use crate::dense::{Adoption, CellRef, DenseFamily, FamilyKeys};
use crate::error::CacheError;
use crate::pipeline::{SyncReport, SyncState};
use crate::registry::{ByKey, Registry, lookup};
use crate::remote::{NoRemote, PendingCancel, RemoteStore};
use crate::script::Health;
use crate::values::LocalValues;
use crate::watched::WatchedCell;

/// Numbers describing the cache's state, for tests, metrics and operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Counter keys tracked now.
    pub tracked_keys: usize,
    /// Counter keys refused because `max_tracked_keys` was reached.
    pub tracked_key_overflows: u64,
    /// Redis outages seen (each counted once, however long it lasted).
    pub redis_outages: u64,
    /// Redis commands that failed because Redis was unreachable or slow.
    pub redis_errors: u64,
    /// Whether Redis is considered down right now.
    pub redis_down: bool,
    /// Full scans of the counter registry for expired keys (at most one per sync interval on
    /// the callers' path, however many new keys are refused).
    pub prune_scans: u64,
    /// Watched deadlines tracked now.
    pub watched_keys: usize,
}

/// Work a user of the cache runs at the start of every sync, before the queued deltas are
/// pushed, so what it queues reaches Redis in that same flush: auto admission gives back the
/// unused part of its claims there. Registered with [`DualCache::add_sync_hook`] through a
/// `Weak`, so a hook ends when its owner is dropped.
pub trait SyncHook: Send + Sync {
    /// Runs at the start of a sync at `now_ms` (the cache's window clock); `stopping` at the
    /// clean stop ([`DualCache::shutdown`]), before the last flush: give everything back then.
    /// Must not block: it runs on the sync task.
    fn before_sync(&self, now_ms: u64, stopping: bool);
}

pub(crate) struct Inner {
    config: CacheConfig,
    clock: Arc<dyn Clock>,
    values: LocalValues,
    counters: RwLock<Registry<CounterCell>>,
    /// Counter families (`dense.rs`): one entry each, counted as their cells.
    families: RwLock<Vec<Arc<DenseFamily>>>,
    watched: RwLock<Registry<WatchedCell>>,
    /// The shared tier ([`NoRemote`] when none is configured).
    store: Box<dyn RemoteStore>,
    /// Whether a shared tier is configured (read on the hot path: no call through the store).
    remote: bool,
    /// The shared tier's outage state, shared with the store.
    health: Arc<Health>,
    /// The exactly-once flush protocol's state (instance id, sequence, one sync at a time).
    sync: SyncState,
    /// Serialises local strict admissions (a multi-counter check-and-increment).
    admit_lock: Mutex<()>,
    /// Strict admissions whose reply was lost, to withdraw in the shared tier.
    cancels: Mutex<VecDeque<PendingCancel>>,
    /// Lease slots taken in this process (no shared tier, or it is down and fail-open).
    local_slots: LocalSlots,
    /// Leases given back, to remove from the shared tier with the next sync.
    releases: Mutex<Vec<(String, String)>>,
    /// The outage count when a local strict admission was last logged.
    local_admission_logged: AtomicU64,
    /// The newest clock time windows were evaluated at (see `DualCache::window_now_ms`).
    window_clock: AtomicU64,
    overflows: AtomicU64,
    /// Clock time of the last registry scan on a caller's path, and how many there were.
    last_prune_ms: AtomicU64,
    prune_scans: AtomicU64,
    /// Counters to push at once (`Counter::increment_now`), and whether a task is on it.
    urgent: Mutex<(Vec<CellRef>, bool)>,
    /// `shutdown()` ran: the last flush is done and the connection closed.
    shut_down: AtomicBool,
    stop: Arc<Notify>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// Work run at the start of every sync (see [`SyncHook`]); dead ones are dropped.
    hooks: Mutex<Vec<Weak<dyn SyncHook>>>,
    /// Woken after every sync ([`DualCache::next_sync`]).
    synced: Notify,
}

/// Slots taken in this process, by key (the local tier of leases).
#[derive(Debug, Default)]
struct LocalSlots(Mutex<HashMap<String, u64>>);

impl LocalSlots {
    fn take(&self, key: &str, limit: u64) -> bool {
        let mut slots = self.0.lock();
        // Look up first: no key is allocated for a slot that is counted already.
        let taken = match slots.get_mut(key) {
            Some(taken) => taken,
            None => slots.entry(key.to_string()).or_insert(0),
        };
        if *taken >= limit {
            return false;
        }
        *taken += 1;
        true
    }

    fn give_back(&self, key: &str) {
        let mut slots = self.0.lock();
        if let Some(taken) = slots.get_mut(key) {
            *taken = taken.saturating_sub(1);
            if *taken == 0 {
                slots.remove(key);
            }
        }
    }

    fn taken(&self, key: &str) -> u64 {
        self.0.lock().get(key).copied().unwrap_or(0)
    }
}

/// What the facets ask of the core.
impl Inner {
    /// The cache's configuration.
    pub(crate) fn config(&self) -> &CacheConfig {
        &self.config
    }

    /// The cache's clock.
    #[inline]
    pub(crate) fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The local tier of values.
    pub(crate) fn values(&self) -> &LocalValues {
        &self.values
    }

    /// Whether a shared tier is configured.
    #[inline]
    pub(crate) fn is_remote(&self) -> bool {
        self.remote
    }

    /// The shared tier's store, if one is configured.
    pub(crate) fn remote(&self) -> Option<&dyn RemoteStore> {
        self.remote.then_some(&*self.store)
    }

    /// Whether the shared tier is known to be down (never without one).
    #[inline]
    pub(crate) fn remote_down(&self) -> bool {
        self.remote && self.health.is_down()
    }

    /// Whether the cache serves its local view while the shared tier is down.
    pub(crate) fn fail_open(&self) -> bool {
        self.config.failure_mode == FailureMode::FailOpen
    }

    /// Whether operations must be refused: fail-closed mode while the shared tier is down.
    #[inline]
    pub(crate) fn refuse(&self, operation: &'static str) -> Result<(), CacheError> {
        // The failure mode first: a fail-open cache (the default) never reads the outage state.
        if self.config.failure_mode == FailureMode::FailClosed && self.remote_down() {
            return Err(CacheError::Unavailable {
                operation,
                reason: "Redis is down and the cache is fail-closed".into(),
            });
        }
        Ok(())
    }

    /// This instance's id in the flush protocol.
    pub(crate) fn instance_id(&self) -> &str {
        &self.sync.instance
    }

    /// A token for an admission or a lease, unique across instances.
    pub(crate) fn next_token(&self) -> String {
        self.sync.next_token()
    }

    /// The window clock's time (see [`DualCache::window_now_ms`]).
    pub(crate) fn window_now_ms(&self) -> u64 {
        let now = self.clock.now_ms();
        self.window_clock.fetch_max(now, Ordering::AcqRel).max(now)
    }

    /// Holds off every other local strict admission until the guard drops.
    pub(crate) fn lock_admissions(&self) -> MutexGuard<'_, ()> {
        self.admit_lock.lock()
    }

    /// The cell of a tracked counter, if `key` is tracked: a keyed one, or else the family cell
    /// that owns the key (found by building the families' keys, one by one).
    pub(crate) fn counter_cell(&self, key: &str) -> Option<CellRef> {
        if let Some(cell) = lookup(&self.counters.read(), key) {
            return Some(CellRef::Single(Arc::clone(cell)));
        }
        let families = self.families.read();
        let mut built = String::new();
        for family in families.iter() {
            for (index, cell) in family.cells.iter().enumerate() {
                if cell.is_moved() {
                    continue; // the family that adopted it is listed too
                }
                built.clear();
                family.keys().write_key(index, &mut built);
                if built == key {
                    // A family's length fits `u32` (checked when it was made).
                    return Some(CellRef::Dense(Arc::clone(family), index as u32));
                }
            }
        }
        None
    }

    /// Takes one of `limit` slots of `key` in this process.
    pub(crate) fn take_local_slot(&self, key: &str, limit: u64) -> bool {
        self.local_slots.take(key, limit)
    }

    /// Gives a slot of `key` taken in this process back.
    pub(crate) fn give_back_local_slot(&self, key: &str) {
        self.local_slots.give_back(key);
    }

    /// Slots of `key` taken in this process.
    pub(crate) fn local_slots_taken(&self, key: &str) -> u64 {
        self.local_slots.taken(key)
    }

    /// Queues a lease's release for the next sync (bounded: past the bound the lease is left to
    /// expire by its TTL).
    pub(crate) fn queue_release(&self, key: String, token: String) {
        let mut releases = self.releases.lock();
        if releases.len() < self.config.max_tracked_keys {
            releases.push((key, token));
        }
    }

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

    /// Counts an admission decided locally while a shared tier is configured, and logs the
    /// first of each outage.
    pub(crate) fn note_local_admission(&self) {
        metrics::counter!("ferrolite_cache_local_admissions_total").increment(1);
        let outages = if self.remote {
            self.health.outages()
        } else {
            0
        };
        if self.local_admission_logged.swap(outages, Ordering::AcqRel) != outages {
            tracing::warn!(
                "strict admission decided on this instance's local view while Redis is unreachable: \
                 each instance now admits up to the full limit (N instances, N x the limit) until Redis is back"
            );
        }
    }

    /// Drops counters that expired, owe Redis nothing and have no handle outside the registry,
    /// and watched deadlines that passed with no handle left; returns how many. A family no one
    /// uses any more that a newer one adopted cells of (a reload's leftover) and whose own cells
    /// still count (a removed deployment's, unexpired or owing Redis) is not kept whole: those
    /// cells become keyed counters (`DenseFamily::spill_to_keys`) and its slab goes.
    #[expect(
        clippy::mutable_key_type,
        reason = "an entry hashes by its cell's key, which never changes (registry.rs)"
    )]
    fn prune_counters(&self, counters: &mut Registry<CounterCell>) -> usize {
        let (now, remote) = (self.clock.now_ms(), self.is_remote());
        let before = counters.len();
        counters.retain(|ByKey(cell)| {
            !(Arc::strong_count(cell) == 1 && cell.is_expired_and_settled(now, remote))
        });
        let pruned = before - counters.len();
        let mut watched = self.watched.write();
        let before = watched.len();
        watched.retain(|ByKey(cell)| !(Arc::strong_count(cell) == 1 && cell.is_idle(now)));
        let pruned = pruned + (before - watched.len());
        let mut families = self.families.write();
        for family in families.iter() {
            family.drain_strays(now, remote);
        }
        let before: usize = families.iter().map(|f| f.owned()).sum();
        let mut kept_as_keys = 0;
        families.retain(|family| {
            if Arc::strong_count(family) != 1 {
                return true;
            }
            if family.is_expired_and_settled(now) {
                return false;
            }
            // A reload's leftover: its cells that still count become keyed counters.
            match family.spill_to_keys(counters, now) {
                Some(cells) => {
                    kept_as_keys += cells;
                    false
                }
                None => true,
            }
        });
        let after: usize = families.iter().map(|f| f.owned()).sum();
        pruned + (before - after - kept_as_keys)
    }

    /// Adds `delta` to `cell` (the one increment path of handles and keys); fails only in
    /// fail-closed mode while Redis is down, and then adds nothing.
    #[inline]
    pub(crate) fn add_ref<V: CounterValue>(
        &self,
        cell: &CellRef,
        delta: V,
    ) -> Result<V, CacheError> {
        let core = cell.core();
        self.add_to(&core, core.ttl_ms(), || cell.key(), delta)
    }

    /// [`add_ref`](Self::add_ref) on a cell's state, its TTL, and its key (built only for an
    /// error).
    #[inline]
    fn add_to<'k, V: CounterValue>(
        &self,
        core: &CellCore,
        ttl_ms: u64,
        key: impl FnOnce() -> std::borrow::Cow<'k, str>,
        delta: V,
    ) -> Result<V, CacheError> {
        if delta.check("").is_err() {
            delta.check(&key())?;
        }
        self.refuse("increment")?;
        Ok(V::from_num(core.increment(
            delta.to_num(),
            self.clock.now_ms(),
            self.is_remote(),
            ttl_ms,
        )))
    }

    /// Whether the registries are full: counters, families' cells and watched keys share
    /// `max_tracked_keys`.
    fn tracked(&self, counters: usize) -> usize {
        counters + self.watched.read().len() + self.family_cells()
    }

    /// The cells the tracked families own (a cell a newer family adopted counts once, with the
    /// family that adopted it).
    fn family_cells(&self) -> usize {
        self.families.read().iter().map(|f| f.owned()).sum()
    }

    /// A new family of `len` counters, tracked from now on (refused as a whole when the cells
    /// it adds do not fit under `max_tracked_keys`: the cells of keys a live family of its
    /// class holds move to it, and count once, with it).
    pub(crate) fn family(
        &self,
        len: usize,
        keys: Arc<dyn FamilyKeys>,
        kind: Kind,
        options: CounterOptions,
    ) -> Result<Arc<DenseFamily>, CacheError> {
        let named = Arc::clone(&keys);
        let name = || {
            let mut key = String::new();
            if len > 0 {
                named.write_key(0, &mut key);
            }
            format!("{key} (a family of {len})")
        };
        if u32::try_from(len).is_err() {
            return Err(CacheError::InvalidArgument {
                field: "len",
                value: len.to_string(),
                reason: "a counter family holds at most 2^32 - 1 counters",
            });
        }
        let ttl_ms = options.ttl_ms(&name())?;
        // Families are made one at a time: under the counters' lock, held to the end.
        let mut counters = self.counters.write();
        let class = keys.class().to_string();
        let family = DenseFamily::new(len, keys, kind, ttl_ms, options.expiry, self.is_remote());
        let live: Vec<Arc<DenseFamily>> = if class.is_empty() {
            Vec::new()
        } else {
            self.families
                .read()
                .iter()
                .filter(|f| f.keys().class() == class)
                .cloned()
                .collect()
        };
        let adoption = Adoption::plan(&family, &live, &counters, kind);
        // The cells it adopts leave their families: they count once, with it.
        let added = len - adoption.len();
        let fits = |counters: &Registry<CounterCell>| {
            self.tracked(counters.len()).saturating_add(added) <= self.config.max_tracked_keys
        };
        if !fits(&counters) {
            self.prune_if_due(&mut counters);
        }
        if !fits(&counters) {
            return Err(self.refuse_key(&name()));
        }
        let family = Arc::new(family);
        adoption.apply(&family, &live, &mut counters);
        self.families.write().push(Arc::clone(&family));
        Ok(family)
    }

    /// The tracked families of `class` (diagnostics: see `Counters::family_stats`).
    pub(crate) fn family_stats(&self, class: &str) -> crate::counters::FamilyStats {
        let families = self.families.read();
        let mut stats = crate::counters::FamilyStats::default();
        for family in families.iter().filter(|f| f.keys().class() == class) {
            stats.families += 1;
            stats.slots += family.cells.len();
            stats.owned += family.owned();
        }
        stats
    }

    /// Every tracked counter cell: the keyed ones, then each family's.
    fn all_cells(&self) -> Vec<CellRef> {
        let mut cells: Vec<CellRef> = self
            .counters
            .read()
            .iter()
            .map(|e| CellRef::Single(Arc::clone(&e.0)))
            .collect();
        let now = self.clock.now_ms();
        for family in self.families.read().iter() {
            family.drain_strays(now, self.is_remote());
            cells.reserve(family.owned());
            for (index, cell) in family.cells.iter().enumerate() {
                // A cell a newer family adopted is listed with that family.
                if !cell.is_moved() {
                    // A family's length fits `u32` (checked when it was made).
                    cells.push(CellRef::Dense(Arc::clone(family), index as u32));
                }
            }
        }
        cells
    }

    /// A caller's path found the registry full: scan it for expired keys at most once per sync
    /// interval (the sync task prunes every interval anyway). During an outage nothing can be
    /// pruned, and an O(n) scan under the write lock on every refused call would stall callers.
    #[expect(
        clippy::mutable_key_type,
        reason = "an entry hashes by its cell's key, which never changes (registry.rs)"
    )]
    fn prune_if_due(&self, counters: &mut Registry<CounterCell>) {
        let now = self.clock.now_ms();
        let last = self.last_prune_ms.load(Ordering::Acquire);
        let interval = self.config.sync_interval.as_millis() as u64;
        if last != 0 && now < last.saturating_add(interval) {
            return;
        }
        self.last_prune_ms.store(now.max(1), Ordering::Release);
        self.prune_scans.fetch_add(1, Ordering::Relaxed);
        self.prune_counters(counters);
    }

    /// Counts and logs a key refused because the registries are full.
    fn refuse_key(&self, key: &str) -> CacheError {
        let n = self.overflows.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("ferrolite_cache_tracked_key_overflows_total").increment(1);
        if n.is_power_of_two() || n == 0 {
            tracing::warn!(
                key,
                limit = self.config.max_tracked_keys,
                refused_so_far = n + 1,
                "key refused: max_tracked_keys reached"
            );
        }
        CacheError::TrackedKeysFull {
            key: key.to_string(),
            limit: self.config.max_tracked_keys,
        }
    }

    /// The cell of counter `key`, tracked from now on (refused when the registries are full).
    pub(crate) fn cell(
        &self,
        key: &str,
        kind: Kind,
        options: CounterOptions,
    ) -> Result<Arc<CounterCell>, CacheError> {
        if key.is_empty() {
            return Err(CacheError::InvalidArgument {
                field: "key",
                value: "\"\"".into(),
                reason: "keys must not be empty",
            });
        }
        if let Some(cell) = lookup(&self.counters.read(), key) {
            return check_kind(cell, kind).map(|()| Arc::clone(cell));
        }
        let ttl_ms = options.ttl_ms(key)?;
        let mut counters = self.counters.write();
        if let Some(cell) = lookup(&counters, key) {
            return check_kind(cell, kind).map(|()| Arc::clone(cell));
        }
        if self.tracked(counters.len()) >= self.config.max_tracked_keys {
            self.prune_if_due(&mut counters);
        }
        if self.tracked(counters.len()) >= self.config.max_tracked_keys {
            return Err(self.refuse_key(key));
        }
        let cell = Arc::new(CounterCell::new(key.into(), kind, ttl_ms, options.expiry));
        counters.insert(ByKey(Arc::clone(&cell)));
        Ok(cell)
    }

    /// The cell of watched deadline `key`, tracked from now on (refused when the registries are
    /// full).
    pub(crate) fn watched_cell(&self, key: &str) -> Result<Arc<WatchedCell>, CacheError> {
        if key.is_empty() {
            return Err(CacheError::InvalidArgument {
                field: "key",
                value: "\"\"".into(),
                reason: "keys must not be empty",
            });
        }
        if let Some(cell) = lookup(&self.watched.read(), key) {
            return Ok(Arc::clone(cell));
        }
        let mut counters = self.counters.write();
        if self.tracked(counters.len()) >= self.config.max_tracked_keys {
            self.prune_if_due(&mut counters);
        }
        let mut watched = self.watched.write();
        if let Some(cell) = lookup(&watched, key) {
            return Ok(Arc::clone(cell));
        }
        if counters.len() + watched.len() + self.family_cells() >= self.config.max_tracked_keys {
            return Err(self.refuse_key(key));
        }
        let cell = Arc::new(WatchedCell::new(key.into()));
        watched.insert(ByKey(Arc::clone(&cell)));
        Ok(cell)
    }
}

impl Inner {
    /// One sync: push, read back, withdraw lost admissions, prune (see `pipeline.rs`).
    pub(crate) async fn sync_once(&self) -> SyncReport {
        self.sync_once_with(false).await
    }

    /// Runs the live sync hooks (outside the registry's lock) and forgets the dead ones.
    fn run_hooks(&self, stopping: bool) {
        let live: Vec<Arc<dyn SyncHook>> = {
            let mut hooks = self.hooks.lock();
            hooks.retain(|hook| hook.strong_count() > 0);
            hooks.iter().filter_map(Weak::upgrade).collect()
        };
        if live.is_empty() {
            return;
        }
        let now = self.window_now_ms();
        for hook in live {
            hook.before_sync(now, stopping);
        }
    }

    async fn sync_once_with(&self, stopping: bool) -> SyncReport {
        let report = self.sync_inner(stopping).await;
        self.synced.notify_waiters();
        report
    }

    async fn sync_inner(&self, stopping: bool) -> SyncReport {
        let _one_at_a_time = self.sync.one_at_a_time().await;
        self.run_hooks(stopping);
        let mut report = SyncReport::default();
        if let Some(store) = self.remote() {
            let cells = self.all_cells();
            let watched: Vec<Arc<WatchedCell>> = self
                .watched
                .read()
                .iter()
                .map(|e| Arc::clone(&e.0))
                .collect();
            if cells.is_empty() && watched.is_empty() {
                // Nothing to sync: keep the health state fresh so an outage and the recovery are
                // still seen.
                store.check_health().await;
            } else {
                let now = self.clock.now_ms();
                crate::pipeline::flush(store, &self.sync, &cells, &watched, now, &mut report).await;
            }
            if !self.health.is_down() && !self.cancels.lock().is_empty() {
                report.errors.extend(self.send_cancels(store).await);
            }
            if !self.health.is_down() {
                self.send_releases(store).await;
            }
            report.unsettled = cells.iter().filter(|c| !c.core().is_settled()).count();
        }
        report.pruned = self.prune();
        self.sync.note_errors(&report);
        report
    }

    /// Queues `cell` for an immediate push, starting the task that pushes if none is running.
    /// Settlements arriving while a push is in flight go together in the next one.
    pub(crate) fn push_soon(self: &Arc<Self>, cell: &CellRef) {
        if !self.remote || self.shut_down.load(Ordering::Acquire) {
            return;
        }
        let mut urgent = self.urgent.lock();
        if !urgent.0.iter().any(|c| c.same(cell)) {
            urgent.0.push(cell.clone());
        }
        if urgent.1 {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // no runtime: the next sync pushes it
        };
        urgent.1 = true;
        drop(urgent);
        let inner = Arc::downgrade(self);
        spawn_on(&runtime, async move {
            loop {
                let Some(inner) = inner.upgrade() else { return };
                let cells = {
                    let mut urgent = inner.urgent.lock();
                    if urgent.0.is_empty() || inner.shut_down.load(Ordering::Acquire) {
                        urgent.0.clear();
                        urgent.1 = false;
                        return;
                    }
                    std::mem::take(&mut urgent.0)
                };
                let Some(store) = inner.remote() else { return };
                if inner.health.is_down() {
                    continue; // the sync task pushes them once Redis is back
                }
                let _one_at_a_time = inner.sync.one_at_a_time().await;
                let mut report = SyncReport::default();
                let now = inner.clock.now_ms();
                crate::pipeline::flush(store, &inner.sync, &cells, &[], now, &mut report).await;
                inner.sync.note_errors(&report);
            }
        });
    }

    /// Drops expired counters and passed deadlines (see `Inner::prune_counters`).
    fn prune(&self) -> usize {
        self.prune_counters(&mut self.counters.write())
    }

    /// Sends the queued withdrawals of lost admissions; those the store did not take stay
    /// queued.
    async fn send_cancels(&self, store: &dyn RemoteStore) -> Vec<CacheError> {
        let pending: Vec<PendingCancel> = self.cancels.lock().drain(..).collect();
        let mut errors = Vec::new();
        let mut failed = Vec::new();
        let mut down = false;
        for cancel in pending {
            if down {
                failed.push(cancel);
                continue;
            }
            match store.cancel(&cancel).await {
                Ok(()) => {}
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

    /// Sends the queued lease releases in one round trip; those the store did not take stay
    /// queued.
    async fn send_releases(&self, store: &dyn RemoteStore) {
        let pending: Vec<(String, String)> = std::mem::take(&mut *self.releases.lock());
        if pending.is_empty() {
            return;
        }
        let taken = store.release_leases(&pending).await;
        let failed: Vec<(String, String)> = pending
            .into_iter()
            .zip(taken)
            .filter_map(|(release, ok)| (!ok).then_some(release))
            .collect();
        if !failed.is_empty() {
            self.releases.lock().extend(failed);
        }
    }
}

impl Drop for Inner {
    /// The last handle is gone. [`DualCache::shutdown`] is the way to stop without loss; a cache
    /// dropped without it that still owes Redis deltas warns (once) and flushes them one last
    /// time in a task on the current runtime — best effort: a runtime that shuts down cancels
    /// the task. Then the connection is closed (fred would otherwise keep it open).
    fn drop(&mut self) {
        if !self.remote {
            return;
        }
        let store = std::mem::replace(&mut self.store, Box::new(NoRemote));
        if store.is_closed() {
            return; // shutdown() flushed and closed already: nothing to say
        }
        let cells = self.all_cells();
        self.counters.get_mut().clear();
        self.families.get_mut().clear();
        let owed = cells.iter().filter(|c| !c.core().is_settled()).count();
        if owed > 0 {
            tracing::warn!(
                owed,
                "cache dropped without shutdown() while it owes Redis deltas; flushing them in the background, best effort (call DualCache::shutdown to stop without loss)"
            );
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let sync = std::mem::take(&mut self.sync);
        let now_ms = self.clock.now_ms();
        spawn_on(&runtime, async move {
            if cells.iter().any(|c| !c.core().is_settled()) {
                let mut report = SyncReport::default();
                crate::pipeline::flush(&*store, &sync, &cells, &[], now_ms, &mut report).await;
                let unsettled = cells.iter().filter(|c| !c.core().is_settled()).count();
                if unsettled > 0 {
                    tracing::warn!(
                        unsettled,
                        "cache dropped while Redis was unreachable; deltas lost"
                    );
                }
            }
            store.quit().await;
        });
    }
}

/// The one place this crate starts tasks (the sync loop, the last flush of a dropped cache).
#[allow(clippy::disallowed_methods)]
fn spawn_on<F>(runtime: &tokio::runtime::Handle, task: F) -> JoinHandle<()>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    runtime.spawn(task)
}

fn check_kind(cell: &CounterCell, kind: Kind) -> Result<(), CacheError> {
    if cell.kind == kind {
        Ok(())
    } else {
        Err(CacheError::KindMismatch {
            key: cell.key.to_string(),
            existing: cell.kind.name(),
            requested: kind.name(),
        })
    }
}

/// The sync task: one sync per interval until stopped or until the cache is gone.
async fn sync_loop(inner: Weak<Inner>, interval: Duration, stop: Arc<Notify>) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is immediate
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.notified() => break,
        }
        let Some(inner) = inner.upgrade() else { break };
        let report = inner.sync_once().await;
        if report.unsettled > 0 {
            tracing::debug!(
                unsettled = report.unsettled,
                "cache sync incomplete; deltas kept for the next one"
            );
        }
    }
    tracing::debug!("cache sync task stopped");
}

/// The shared tier's store for `config`: Redis when one is configured (and this build has it),
/// [`NoRemote`] otherwise. Outages are recorded in `health`.
fn open_store(
    config: &CacheConfig,
    health: &Arc<Health>,
) -> Result<Box<dyn RemoteStore>, CacheError> {
    match &config.redis {
        None => Ok(Box::new(NoRemote)),
        #[cfg(feature = "redis")]
        Some(redis) => Ok(Box::new(crate::redis::RedisStore::new(
            redis,
            Arc::clone(health),
        )?)),
        #[cfg(not(feature = "redis"))]
        Some(redis) => {
            let _ = health; // no store to share it with
            Err(CacheError::InvalidConfig {
                field: "redis",
                value: crate::script::redact_url(&redis.url),
                reason: "this build has no Redis support: enable ferrolite-cache's `redis` feature",
            })
        }
    }
}

/// The two-tier cache of ferrolite: a narrow core with facets.
///
/// - [`kv`](Self::kv) — **values**: written to both tiers; read locally first, then from Redis
///   on a miss, and a value read from Redis is trusted locally for `remote_read_ttl`.
/// - [`counters`](Self::counters) — **counters** ([`IntCounter`](crate::IntCounter),
///   [`FloatCounter`](crate::FloatCounter)): applied locally at once and pushed to Redis by the
///   sync task every `sync_interval`, exactly once, in one pipelined round trip; the task then
///   reads every tracked counter's global value back.
/// - [`deadlines`](Self::deadlines) — **watched deadlines** (cooldowns): read from memory,
///   written to Redis at once ("set if later"), read back every sync.
/// - [`leases`](Self::leases) — **leases**: shared slots with a limit, each with a TTL.
/// - [`admission`](Self::admission) — **strict admission**: one Lua script checks and
///   increments several windowed limits atomically in Redis.
/// - [`shared`](Self::shared) — the **shared tier** alone: whether it is configured and up,
///   values without a local copy, scripts of the crates above.
///
/// Without a Redis URL everything stays in this process. Clones share one cache. Call
/// [`DualCache::shutdown`] for a last flush; dropping every clone and handle stops the sync task.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), ferrolite_cache::CacheError> {
/// use std::time::Duration;
/// use ferrolite_cache::{CacheConfig, CounterOptions, DualCache};
///
/// let cache = DualCache::connect(CacheConfig::default()).await?; // in-memory only
/// let rpm = cache
///     .counters()
///     .counter("deployment-1:rpm", CounterOptions::ttl(Duration::from_secs(60)))?;
/// rpm.increment(1)?;
/// assert_eq!(rpm.value(), 1);
/// cache.kv().set("deployment-1:cooldown", "429", Duration::from_secs(5)).await?;
/// assert_eq!(cache.kv().get("deployment-1:cooldown").await?.as_deref(), Some("429"));
/// cache.shutdown().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct DualCache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DualCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DualCache")
            .field("instance", &self.inner.sync.instance)
            .field("store", &self.inner.store)
            .finish_non_exhaustive()
    }
}

impl DualCache {
    /// Builds the cache with the system clock, connects to Redis if configured and starts the
    /// sync task. With fail-open (the default) an unreachable Redis is logged and the cache
    /// starts on its local view; with fail-closed it is an error.
    pub async fn connect(config: CacheConfig) -> Result<Self, CacheError> {
        Self::connect_with_clock(config, Arc::new(SystemClock)).await
    }

    /// As [`connect`](Self::connect), with another [`Clock`] (e.g. [`crate::TokioClock`] in
    /// tests on paused time).
    pub async fn connect_with_clock(
        config: CacheConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, CacheError> {
        config.validate()?;
        let health = Arc::new(Health::new(config.failure_mode == FailureMode::FailOpen));
        let store = open_store(&config, &health)?;
        if let Some(redis_config) = &config.redis {
            let connected = store.connect(redis_config.initial_connect_wait).await;
            if !connected && config.failure_mode == FailureMode::FailClosed {
                store.quit().await;
                return Err(CacheError::Unavailable {
                    operation: "connect",
                    reason: format!(
                        "no connection within {:?} and the cache is fail-closed",
                        redis_config.initial_connect_wait
                    ),
                });
            }
        }
        let inner = Arc::new(Inner {
            values: LocalValues::new(config.max_local_values),
            counters: RwLock::new(Registry::new()),
            families: RwLock::new(Vec::new()),
            watched: RwLock::new(Registry::new()),
            remote: store.is_configured(),
            store,
            health,
            sync: SyncState::new(),
            admit_lock: Mutex::new(()),
            cancels: Mutex::new(VecDeque::new()),
            local_slots: LocalSlots::default(),
            releases: Mutex::new(Vec::new()),
            local_admission_logged: AtomicU64::new(0),
            window_clock: AtomicU64::new(0),
            overflows: AtomicU64::new(0),
            last_prune_ms: AtomicU64::new(0),
            prune_scans: AtomicU64::new(0),
            urgent: Mutex::new((Vec::new(), false)),
            shut_down: AtomicBool::new(false),
            stop: Arc::new(Notify::new()),
            task: Mutex::new(None),
            hooks: Mutex::new(Vec::new()),
            synced: Notify::new(),
            clock,
            config,
        });
        let task = spawn_on(
            &tokio::runtime::Handle::current(),
            sync_loop(
                Arc::downgrade(&inner),
                inner.config.sync_interval,
                Arc::clone(&inner.stop),
            ),
        );
        *inner.task.lock() = Some(task);
        Ok(DualCache { inner })
    }

    /// The core the facets work on.
    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    /// The cache's clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// The cache clock's time for window arithmetic: it never moves backwards, so a wall clock
    /// stepped back (NTP, a resumed VM) cannot reopen a rate window that was full.
    pub fn window_now_ms(&self) -> u64 {
        self.inner.window_now_ms()
    }

    /// How often pending increments are pushed and shared values read back.
    pub fn sync_interval(&self) -> Duration {
        self.inner.config.sync_interval
    }

    /// Current numbers: tracked keys, overflows, outages.
    pub fn stats(&self) -> CacheStats {
        let (health, remote) = (&self.inner.health, self.inner.remote);
        CacheStats {
            tracked_keys: self.inner.counters.read().len() + self.inner.family_cells(),
            tracked_key_overflows: self.inner.overflows.load(Ordering::Relaxed),
            redis_outages: if remote { health.outages() } else { 0 },
            redis_errors: if remote { health.errors() } else { 0 },
            redis_down: self.inner.remote_down(),
            prune_scans: self.inner.prune_scans.load(Ordering::Relaxed),
            watched_keys: self.inner.watched.read().len(),
        }
    }

    /// Registers `hook` to run at the start of every sync from now on, and at the clean stop
    /// (see [`SyncHook`]); it ends when its owner drops it.
    pub fn add_sync_hook(&self, hook: Weak<dyn SyncHook>) {
        self.inner.hooks.lock().push(hook);
    }

    /// Completes once a sync (the sync task's, or a [`sync_now`](Self::sync_now)) finishes
    /// after this call — counted from the call, not from the first poll: a caller waiting for
    /// what other instances flush waits on this, never on a bare sleep. Pending forever if no
    /// sync runs: bound it with a timeout.
    pub fn next_sync(&self) -> impl std::future::Future<Output = ()> + Send + '_ {
        self.inner.synced.notified()
    }

    /// Runs one sync now (push queued deltas, read tracked counters back, prune expired keys)
    /// and reports what happened. The sync task does the same every `sync_interval`.
    pub async fn sync_now(&self) -> Result<SyncReport, CacheError> {
        Ok(self.inner.sync_once().await)
    }

    /// Stops the sync task after a last flush, and closes the Redis connection: the way to stop
    /// without loss (dropping the last handle instead flushes in a background task that a
    /// runtime shutting down cancels, and warns). Deltas that cannot be flushed (Redis down) are
    /// reported in the returned error. The cache still answers afterwards, from its local tier.
    /// The [`SyncHook`]s run first with `stopping` set, so what they give back (auto
    /// admission's unused claims) is in the last flush.
    pub async fn shutdown(&self) -> Result<(), CacheError> {
        self.inner.stop.notify_one();
        let task = self.inner.task.lock().take();
        if let Some(task) = task {
            let _ = task.await;
        }
        let report = self.inner.sync_once_with(true).await;
        self.inner.shut_down.store(true, Ordering::Release);
        if let Some(store) = self.inner.remote() {
            store.quit().await;
        }
        match report.errors.into_iter().next() {
            Some(error) if report.unsettled > 0 => Err(error),
            _ => Ok(()),
        }
    }

    /// A weak reference to the shared state, for tests that check nothing outlives the cache.
    #[doc(hidden)]
    pub fn downgrade(&self) -> Weak<impl Sized + Send + Sync + use<>> {
        Arc::downgrade(&self.inner)
    }
}
