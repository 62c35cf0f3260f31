//! `DualCache`: the local tier (moka values, atomic counters) in front of the Redis tier.

use std::collections::{HashMap, VecDeque};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::CacheError;
use crate::clock::{Clock, SystemClock};
use crate::config::{CacheConfig, FailureMode};
use crate::counter::{CounterCell, CounterOptions, Kind};
use crate::pipeline::{SyncReport, SyncState};
use crate::redis::RedisStore;
use crate::strict::PendingCancel;
use crate::watched::{Deadline, WatchedCell};

/// A value in the local tier, with the clock time at which it stops being served.
#[derive(Debug, Clone)]
struct LocalValue {
    /// `None`: Redis had nothing (negative caching for `remote_read_ttl`).
    value: Option<Arc<str>>,
    ttl: Duration,
    expires_at_ms: u64,
}

/// moka evicts entries after their own TTL; reads also check `expires_at_ms` against the
/// cache's [`Clock`], so TTLs follow tokio's paused time in tests.
struct ValueExpiry;

impl moka::Expiry<String, LocalValue> for ValueExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &LocalValue,
        _now: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }

    fn expire_after_update(
        &self,
        _key: &String,
        value: &LocalValue,
        _now: std::time::Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

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

pub(crate) struct Inner {
    pub(crate) config: CacheConfig,
    pub(crate) clock: Arc<dyn Clock>,
    local: moka::future::Cache<String, LocalValue>,
    pub(crate) counters: RwLock<HashMap<Arc<str>, Arc<CounterCell>>>,
    pub(crate) watched: RwLock<HashMap<Arc<str>, Arc<WatchedCell>>>,
    pub(crate) redis: Option<RedisStore>,
    /// The exactly-once flush protocol's state (instance id, sequence, one sync at a time).
    pub(crate) sync: SyncState,
    /// Serialises local strict admissions (a multi-counter check-and-increment).
    pub(crate) admit_lock: Mutex<()>,
    /// Strict admissions whose reply was lost, to withdraw in Redis.
    pub(crate) cancels: Mutex<VecDeque<PendingCancel>>,
    /// Lease slots taken in this process (no Redis, or Redis down and fail-open).
    pub(crate) local_slots: crate::lease::LocalSlots,
    /// Leases given back, to remove from Redis with the next sync.
    pub(crate) releases: Mutex<Vec<(String, String)>>,
    /// The outage count when a local strict admission was last logged.
    pub(crate) local_admission_logged: AtomicU64,
    /// The newest clock time windows were evaluated at (see `DualCache::window_now_ms`).
    window_clock: AtomicU64,
    overflows: AtomicU64,
    /// Clock time of the last registry scan on a caller's path, and how many there were.
    last_prune_ms: AtomicU64,
    prune_scans: AtomicU64,
    /// Counters to push at once (`Counter::increment_now`), and whether a task is on it.
    urgent: Mutex<(Vec<Arc<CounterCell>>, bool)>,
    /// `shutdown()` ran: the last flush is done and the connection closed.
    shut_down: AtomicBool,
    stop: Arc<Notify>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// Work run at the start of every sync (see [`SyncHook`]); dead ones are dropped.
    hooks: Mutex<Vec<Weak<dyn SyncHook>>>,
    /// Woken after every sync ([`DualCache::next_sync`]).
    synced: Notify,
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

impl Inner {
    /// Whether operations must be refused: fail-closed mode while Redis is down.
    pub(crate) fn refuse(&self, operation: &'static str) -> Result<(), CacheError> {
        match &self.redis {
            Some(redis)
                if self.config.failure_mode == FailureMode::FailClosed
                    && redis.health.is_down() =>
            {
                Err(CacheError::Unavailable {
                    operation,
                    reason: "Redis is down and the cache is fail-closed".into(),
                })
            }
            _ => Ok(()),
        }
    }

    #[inline]
    pub(crate) fn is_remote(&self) -> bool {
        self.redis.is_some()
    }

    pub(crate) fn fail_open(&self) -> bool {
        self.config.failure_mode == FailureMode::FailOpen
    }

    /// Drops counters that expired, owe Redis nothing and have no handle outside the registry,
    /// and watched deadlines that passed with no handle left; returns how many.
    pub(crate) fn prune_counters(
        &self,
        counters: &mut HashMap<Arc<str>, Arc<CounterCell>>,
    ) -> usize {
        let (now, remote) = (self.clock.now_ms(), self.is_remote());
        let before = counters.len();
        counters.retain(|_, cell| {
            !(Arc::strong_count(cell) == 1 && cell.is_expired_and_settled(now, remote))
        });
        let pruned = before - counters.len();
        let mut watched = self.watched.write();
        let before = watched.len();
        watched.retain(|_, cell| !(Arc::strong_count(cell) == 1 && cell.is_idle(now)));
        pruned + (before - watched.len())
    }

    /// Adds `delta` to `cell` (the one increment path of handles and keys); fails only in
    /// fail-closed mode while Redis is down, and then adds nothing.
    #[inline]
    pub(crate) fn add<V: CounterValue>(
        &self,
        cell: &CounterCell,
        delta: V,
    ) -> Result<V, CacheError> {
        delta.check(&cell.key)?;
        self.refuse("increment")?;
        Ok(V::from_num(cell.increment(
            delta.to_num(),
            self.clock.now_ms(),
            self.is_remote(),
        )))
    }

    /// Whether the registries are full: counters and watched keys share `max_tracked_keys`.
    fn tracked(&self, counters: usize) -> usize {
        counters + self.watched.read().len()
    }

    /// A caller's path found the registry full: scan it for expired keys at most once per sync
    /// interval (the sync task prunes every interval anyway). During an outage nothing can be
    /// pruned, and an O(n) scan under the write lock on every refused call would stall callers.
    fn prune_if_due(&self, counters: &mut HashMap<Arc<str>, Arc<CounterCell>>) {
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

    fn cell(
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
        if let Some(cell) = self.counters.read().get(key) {
            return check_kind(cell, kind).map(|()| Arc::clone(cell));
        }
        let ttl_ms = options.ttl_ms(key)?;
        let mut counters = self.counters.write();
        if let Some(cell) = counters.get(key) {
            return check_kind(cell, kind).map(|()| Arc::clone(cell));
        }
        if self.tracked(counters.len()) >= self.config.max_tracked_keys {
            self.prune_if_due(&mut counters);
        }
        if self.tracked(counters.len()) >= self.config.max_tracked_keys {
            return Err(self.refuse_key(key));
        }
        let key: Arc<str> = Arc::from(key);
        let cell = Arc::new(CounterCell::new(
            Arc::clone(&key),
            kind,
            ttl_ms,
            options.expiry,
        ));
        counters.insert(key, Arc::clone(&cell));
        Ok(cell)
    }

    fn watched_cell(&self, key: &str) -> Result<Arc<WatchedCell>, CacheError> {
        if key.is_empty() {
            return Err(CacheError::InvalidArgument {
                field: "key",
                value: "\"\"".into(),
                reason: "keys must not be empty",
            });
        }
        if let Some(cell) = self.watched.read().get(key) {
            return Ok(Arc::clone(cell));
        }
        let mut counters = self.counters.write();
        if self.tracked(counters.len()) >= self.config.max_tracked_keys {
            self.prune_if_due(&mut counters);
        }
        let mut watched = self.watched.write();
        if let Some(cell) = watched.get(key) {
            return Ok(Arc::clone(cell));
        }
        if counters.len() + watched.len() >= self.config.max_tracked_keys {
            return Err(self.refuse_key(key));
        }
        let key: Arc<str> = Arc::from(key);
        let cell = Arc::new(WatchedCell::new(Arc::clone(&key)));
        watched.insert(key, Arc::clone(&cell));
        Ok(cell)
    }
}

impl Inner {
    /// One sync: push, read back, withdraw lost admissions, prune (see `pipeline.rs`).
    pub(crate) async fn sync_once(&self) -> SyncReport {
        self.sync_once_with(false).await
    }

    /// The window clock's time (see [`DualCache::window_now_ms`]).
    fn window_now_ms(&self) -> u64 {
        let now = self.clock.now_ms();
        self.window_clock.fetch_max(now, Ordering::AcqRel).max(now)
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
        if let Some(redis) = &self.redis {
            let cells: Vec<Arc<CounterCell>> = self.counters.read().values().cloned().collect();
            let watched: Vec<Arc<WatchedCell>> = self.watched.read().values().cloned().collect();
            if cells.is_empty() && watched.is_empty() {
                // Nothing to sync: keep the health state fresh so an outage and the recovery are
                // still seen.
                redis.check_health().await;
            } else {
                let now = self.clock.now_ms();
                crate::pipeline::flush(redis, &self.sync, &cells, &watched, now, &mut report).await;
            }
            if !redis.health.is_down() && !self.cancels.lock().is_empty() {
                report.errors.extend(self.send_cancels(redis).await);
            }
            if !redis.health.is_down() {
                self.send_releases(redis).await;
            }
            report.unsettled = cells.iter().filter(|c| !c.is_settled()).count();
        }
        report.pruned = self.prune();
        self.sync.note_errors(&report);
        report
    }

    /// Queues `cell` for an immediate push, starting the task that pushes if none is running.
    /// Settlements arriving while a push is in flight go together in the next one.
    fn push_soon(self: &Arc<Self>, cell: &Arc<CounterCell>) {
        if self.redis.is_none() || self.shut_down.load(Ordering::Acquire) {
            return;
        }
        let mut urgent = self.urgent.lock();
        if !urgent.0.iter().any(|c| Arc::ptr_eq(c, cell)) {
            urgent.0.push(Arc::clone(cell));
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
                let Some(redis) = &inner.redis else { return };
                if redis.health.is_down() {
                    continue; // the sync task pushes them once Redis is back
                }
                let _one_at_a_time = inner.sync.one_at_a_time().await;
                let mut report = SyncReport::default();
                let now = inner.clock.now_ms();
                crate::pipeline::flush(redis, &inner.sync, &cells, &[], now, &mut report).await;
                inner.sync.note_errors(&report);
            }
        });
    }

    /// Drops expired counters and passed deadlines (see `Inner::prune_counters`).
    fn prune(&self) -> usize {
        self.prune_counters(&mut self.counters.write())
    }
}

impl Drop for Inner {
    /// The last handle is gone. [`DualCache::shutdown`] is the way to stop without loss; a cache
    /// dropped without it that still owes Redis deltas warns (once) and flushes them one last
    /// time in a task on the current runtime — best effort: a runtime that shuts down cancels
    /// the task. Then the connection is closed (fred would otherwise keep it open).
    fn drop(&mut self) {
        let Some(redis) = self.redis.take() else {
            return;
        };
        if redis.is_closed() {
            return; // shutdown() flushed and closed already: nothing to say
        }
        let cells: Vec<Arc<CounterCell>> = std::mem::take(self.counters.get_mut())
            .into_values()
            .collect();
        let owed = cells.iter().filter(|c| !c.is_settled()).count();
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
            if cells.iter().any(|c| !c.is_settled()) {
                let mut report = crate::SyncReport::default();
                crate::pipeline::flush(&redis, &sync, &cells, &[], now_ms, &mut report).await;
                let unsettled = cells.iter().filter(|c| !c.is_settled()).count();
                if unsettled > 0 {
                    tracing::warn!(
                        unsettled,
                        "cache dropped while Redis was unreachable; deltas lost"
                    );
                }
            }
            redis.quit().await;
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

/// The two-tier cache of ferrolite.
///
/// - **Values** (`get` / `set` / `batch_get`): written to both tiers; read locally first, then
///   from Redis on a miss, and a value read from Redis is trusted locally for
///   `remote_read_ttl`.
/// - **Counters** (`increment`, [`IntCounter`], [`FloatCounter`]): applied locally at once and
///   pushed to Redis by the sync task every `sync_interval`, exactly once, in one pipelined round
///   trip; the task then reads every tracked counter's global value back.
/// - **Strict admission** ([`DualCache::admit`]): one Lua script checks and increments several
///   windowed limits atomically in Redis.
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
/// let rpm = cache.counter("deployment-1:rpm", CounterOptions::ttl(Duration::from_secs(60)))?;
/// rpm.increment(1)?;
/// assert_eq!(rpm.value(), 1);
/// cache.set("deployment-1:cooldown", "429", Duration::from_secs(5)).await?;
/// assert_eq!(cache.get("deployment-1:cooldown").await?.as_deref(), Some("429"));
/// cache.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct DualCache {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for DualCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DualCache")
            .field("instance", &self.inner.sync.instance)
            .field("redis", &self.inner.redis)
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
        let redis = match &config.redis {
            Some(redis_config) => {
                let store =
                    RedisStore::new(redis_config, config.failure_mode == FailureMode::FailOpen)?;
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
                if connected {
                    // Load the scripts up front; a failure here is retried on first use.
                    for script in [
                        &store.incr,
                        &store.admit,
                        &store.admit_cancel,
                        &store.set_later,
                    ] {
                        let _ = store.load(script).await;
                    }
                }
                Some(store)
            }
            None => None,
        };
        let local = moka::future::Cache::builder()
            .max_capacity(config.max_local_values)
            .expire_after(ValueExpiry)
            .build();
        let inner = Arc::new(Inner {
            local,
            counters: RwLock::new(HashMap::new()),
            watched: RwLock::new(HashMap::new()),
            redis,
            sync: SyncState::new(),
            admit_lock: Mutex::new(()),
            cancels: Mutex::new(VecDeque::new()),
            local_slots: crate::lease::LocalSlots::default(),
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

    /// This instance's id in the flush protocol (unique per `DualCache`).
    pub fn instance_id(&self) -> &str {
        &self.inner.sync.instance
    }

    /// The cache clock's time for window arithmetic: it never moves backwards, so a wall clock
    /// stepped back (NTP, a resumed VM) cannot reopen a rate window that was full.
    pub fn window_now_ms(&self) -> u64 {
        self.inner.window_now_ms()
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

    /// How often pending increments are pushed and shared values read back.
    pub fn sync_interval(&self) -> Duration {
        self.inner.config.sync_interval
    }

    /// The cache's clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// Whether a Redis tier is configured.
    pub fn has_redis(&self) -> bool {
        self.inner.is_remote()
    }

    /// Current numbers: tracked keys, overflows, outages.
    pub fn stats(&self) -> CacheStats {
        let redis = self.inner.redis.as_ref();
        CacheStats {
            tracked_keys: self.inner.counters.read().len(),
            tracked_key_overflows: self.inner.overflows.load(Ordering::Relaxed),
            redis_outages: redis.map_or(0, |r| r.health.outages()),
            redis_errors: redis.map_or(0, |r| r.health.errors()),
            redis_down: redis.is_some_and(|r| r.health.is_down()),
            prune_scans: self.inner.prune_scans.load(Ordering::Relaxed),
            watched_keys: self.inner.watched.read().len(),
        }
    }

    // ---- values ---------------------------------------------------------------------------

    /// Stores `value` for `ttl` in both tiers. While Redis is down a fail-open cache keeps the
    /// value locally and returns `Ok`; a fail-closed one returns [`CacheError::Unavailable`].
    pub async fn set(&self, key: &str, value: &str, ttl: Duration) -> Result<(), CacheError> {
        self.inner.refuse("set")?;
        if ttl.is_zero() {
            return Err(CacheError::InvalidArgument {
                field: "ttl",
                value: format!("{ttl:?} (key `{key}`)"),
                reason: "a value needs a TTL of at least 1 ms",
            });
        }
        self.set_local(key, Some(Arc::from(value)), ttl).await;
        match &self.inner.redis {
            Some(redis) => match redis.set(key, value, ttl).await {
                Err(CacheError::Unavailable { .. }) if self.inner.fail_open() => Ok(()),
                other => other,
            },
            None => Ok(()),
        }
    }

    async fn set_local(&self, key: &str, value: Option<Arc<str>>, ttl: Duration) {
        let expires_at_ms = self
            .inner
            .clock
            .now_ms()
            .saturating_add(ttl.as_millis() as u64);
        self.inner
            .local
            .insert(
                key.to_string(),
                LocalValue {
                    value,
                    ttl,
                    expires_at_ms,
                },
            )
            .await;
    }

    /// The local tier's value, if present and not expired.
    pub async fn get_local(&self, key: &str) -> Option<Arc<str>> {
        self.lookup_local(key).await.flatten()
    }

    /// The local tier's entry: `Some(None)` is a cached "Redis has nothing".
    async fn lookup_local(&self, key: &str) -> Option<Option<Arc<str>>> {
        let entry = self.inner.local.get(key).await?;
        (self.inner.clock.now_ms() < entry.expires_at_ms).then_some(entry.value)
    }

    /// Whether a read must skip Redis: it is known to be down. Fail-open answers from the local
    /// tier; fail-closed refuses at once (no caller waits for a command timeout).
    fn skip_redis(&self, operation: &'static str) -> Result<bool, CacheError> {
        match &self.inner.redis {
            None => Ok(true),
            Some(redis) if redis.health.is_down() => {
                self.inner.refuse(operation)?;
                Ok(true)
            }
            Some(_) => Ok(false),
        }
    }

    /// The value of `key`: local first, then Redis on a miss. What Redis answers — a value or
    /// "nothing" — is kept locally for `remote_read_ttl`, so a key that is normally absent costs
    /// one round trip per `remote_read_ttl`, not one per call. While Redis is known to be down
    /// a fail-open cache answers from the local tier at once and a fail-closed one refuses.
    pub async fn get(&self, key: &str) -> Result<Option<Arc<str>>, CacheError> {
        if let Some(value) = self.lookup_local(key).await {
            return Ok(value);
        }
        if self.skip_redis("get")? {
            return Ok(None);
        }
        let Some(redis) = &self.inner.redis else {
            return Ok(None);
        };
        match redis.get(key).await {
            Ok(value) => {
                let value: Option<Arc<str>> = value.map(Arc::from);
                self.set_local(key, value.clone(), self.inner.config.remote_read_ttl)
                    .await;
                Ok(value)
            }
            Err(CacheError::Unavailable { .. }) if self.inner.fail_open() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Stores `value` for `ttl` in Redis only, without a local copy (for values a caller keeps
    /// in its own, differently bounded, local tier: response bodies). Whether Redis took it:
    /// `false` without Redis or while it is down. A Redis error other than unavailability is
    /// returned.
    pub async fn set_shared(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<bool, CacheError> {
        if ttl.is_zero() {
            return Err(CacheError::InvalidArgument {
                field: "ttl",
                value: format!("{ttl:?} (key `{key}`)"),
                reason: "a value needs a TTL of at least 1 ms",
            });
        }
        let Some(redis) = &self.inner.redis else {
            return Ok(false);
        };
        if redis.health.is_down() {
            return Ok(false);
        }
        match redis.set(key, value, ttl).await {
            Ok(()) => Ok(true),
            Err(CacheError::Unavailable { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The value of `key` in Redis only, without keeping a local copy; `None` without Redis,
    /// while it is down, or when it has none.
    pub async fn get_shared(&self, key: &str) -> Result<Option<String>, CacheError> {
        let Some(redis) = &self.inner.redis else {
            return Ok(None);
        };
        if redis.health.is_down() {
            return Ok(None);
        }
        match redis.get(key).await {
            Ok(value) => Ok(value),
            Err(CacheError::Unavailable { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The values of several keys, in order: local hits (and cached misses), then one `MGET`
    /// for the rest, whose answers are kept locally like [`get`](Self::get)'s.
    pub async fn batch_get(&self, keys: &[&str]) -> Result<Vec<Option<Arc<str>>>, CacheError> {
        let mut out = Vec::with_capacity(keys.len());
        let mut missing = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            match self.lookup_local(key).await {
                Some(value) => out.push(value),
                None => {
                    missing.push(i);
                    out.push(None);
                }
            }
        }
        if missing.is_empty() || self.skip_redis("batch_get")? {
            return Ok(out);
        }
        let Some(redis) = &self.inner.redis else {
            return Ok(out);
        };
        let miss_keys: Vec<&str> = missing.iter().map(|i| keys[*i]).collect();
        let values = match redis.mget(&miss_keys).await {
            Ok(values) => values,
            Err(CacheError::Unavailable { .. }) if self.inner.fail_open() => return Ok(out),
            Err(e) => return Err(e),
        };
        for (i, value) in missing.into_iter().zip(values) {
            let value: Option<Arc<str>> = value.map(Arc::from);
            self.set_local(keys[i], value.clone(), self.inner.config.remote_read_ttl)
                .await;
            out[i] = value;
        }
        Ok(out)
    }

    /// Stores `value` under `key` for `ttl` unless the key holds a value already; returns the
    /// value now stored, so that concurrent callers on every instance agree on one (the first
    /// writer's). With Redis this is one atomic `SET … NX PX … GET`; while Redis is down a
    /// fail-open cache agrees locally only.
    pub async fn set_if_absent(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<Arc<str>, CacheError> {
        self.inner.refuse("set_if_absent")?;
        if let Some(redis) = &self.inner.redis {
            match redis.set_if_absent(key, value, ttl).await {
                Ok(stored) => {
                    let stored: Arc<str> = Arc::from(stored);
                    self.set_local(key, Some(Arc::clone(&stored)), ttl).await;
                    return Ok(stored);
                }
                Err(CacheError::Unavailable { .. }) if self.inner.fail_open() => {}
                Err(e) => return Err(e),
            }
        }
        // One writer at a time in this process: moka's entry API inserts only when absent.
        let now = self.inner.clock.now_ms();
        let candidate = LocalValue {
            value: Some(Arc::from(value)),
            ttl,
            expires_at_ms: now.saturating_add(ttl.as_millis() as u64),
        };
        let entry = self
            .inner
            .local
            .entry(key.to_string())
            .and_upsert_with(|existing| async move {
                match existing.map(|e| e.into_value()) {
                    Some(current) if now < current.expires_at_ms && current.value.is_some() => {
                        current
                    }
                    _ => candidate,
                }
            })
            .await;
        Ok(entry.into_value().value.unwrap_or_else(|| Arc::from(value)))
    }

    /// Runs `script` in Redis (by SHA, loading it on `NOSCRIPT`) with `keys` (namespaced like
    /// every other key) and `args`; the reply as a [`ScriptReply`] for the script's own typed
    /// decoder. `Ok(None)` when no Redis is configured. While Redis is down,
    /// [`CacheError::Unavailable`] at once, and the caller decides how to degrade.
    pub async fn eval(
        &self,
        script: &crate::LuaScript,
        keys: &[&str],
        args: Vec<String>,
    ) -> Result<Option<ScriptReply>, CacheError> {
        let Some(redis) = &self.inner.redis else {
            return Ok(None);
        };
        if redis.health.is_down() {
            return Err(CacheError::Unavailable {
                operation: "script",
                reason: "Redis is down".into(),
            });
        }
        let keys = keys.iter().map(|k| redis.key(k)).collect();
        redis.eval(script, keys, args).await.map(Some)
    }

    /// Whether Redis is configured and currently reachable (as far as the last command knew).
    pub fn redis_up(&self) -> bool {
        self.inner
            .redis
            .as_ref()
            .is_some_and(|r| !r.health.is_down())
    }

    /// Whether the cache serves its local view while Redis is down.
    pub fn is_fail_open(&self) -> bool {
        self.inner.fail_open()
    }

    // ---- counters -------------------------------------------------------------------------

    /// A handle on the integer counter `key`, tracked (and synced) while it or the key is live.
    /// Keep the handle on hot paths: its `increment` is one atomic add.
    pub fn counter(&self, key: &str, options: CounterOptions) -> Result<IntCounter, CacheError> {
        self.typed_counter(key, options)
    }

    /// A handle on the float counter `key` (spend in USD, for instance).
    pub fn float_counter(
        &self,
        key: &str,
        options: CounterOptions,
    ) -> Result<FloatCounter, CacheError> {
        self.typed_counter(key, options)
    }

    fn typed_counter<V: CounterValue>(
        &self,
        key: &str,
        options: CounterOptions,
    ) -> Result<Counter<V>, CacheError> {
        let cell = self.inner.cell(key, V::KIND, options)?;
        Ok(Counter {
            cell,
            cache: Arc::clone(&self.inner),
            _value: PhantomData,
        })
    }

    /// Adds `delta` to the integer counter `key`; returns the local view at once. The delta
    /// reaches Redis with the next sync.
    pub fn increment(
        &self,
        key: &str,
        delta: i64,
        options: CounterOptions,
    ) -> Result<i64, CacheError> {
        self.inner.refuse("increment")?;
        let cell = self.inner.cell(key, Kind::Int, options)?;
        self.inner.add(&cell, delta)
    }

    /// Adds `delta` to the float counter `key`; returns the local view at once.
    pub fn increment_float(
        &self,
        key: &str,
        delta: f64,
        options: CounterOptions,
    ) -> Result<f64, CacheError> {
        check_finite(key, delta)?;
        self.inner.refuse("increment")?;
        let cell = self.inner.cell(key, Kind::Float, options)?;
        self.inner.add(&cell, delta)
    }

    /// The local view of a tracked counter (`None` if the key is not tracked).
    pub fn counter_value(&self, key: &str) -> Option<f64> {
        let cell = self.inner.counters.read().get(key).cloned()?;
        Some(
            cell.value(self.inner.clock.now_ms(), self.inner.is_remote())
                .as_f64(),
        )
    }

    // ---- watched deadlines ------------------------------------------------------------------

    /// A handle on the watched deadline `key` (a cooldown, a failed health check, a half-open
    /// probe): registered once, read back by the sync task every interval, read by callers
    /// from memory. See [`Deadline`].
    pub fn deadline(&self, key: &str) -> Result<Deadline, CacheError> {
        let cell = self.inner.watched_cell(key)?;
        Ok(Deadline {
            cell,
            cache: Arc::clone(&self.inner),
        })
    }

    // ---- lifecycle ------------------------------------------------------------------------

    /// Runs one sync now (push queued deltas, read tracked counters back, prune expired keys)
    /// and reports what happened. The sync task does the same every `sync_interval`.
    pub async fn sync_now(&self) -> Result<crate::SyncReport, CacheError> {
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
        if let Some(redis) = &self.inner.redis {
            redis.quit().await;
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

/// A number a counter holds: `i64` ([`IntCounter`]) or `f64` ([`FloatCounter`]).
pub trait CounterValue: Copy + Send + Sync + std::fmt::Debug + private::Sealed + 'static {}

impl CounterValue for i64 {}
impl CounterValue for f64 {}

#[allow(private_interfaces)]
mod private {
    use crate::CacheError;
    use crate::counter::{Kind, Num};

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

/// A handle on a counter. Cloning is cheap; `increment` is one atomic add and never waits on
/// Redis. [`IntCounter`] for counts, [`FloatCounter`] for spend.
pub struct Counter<V> {
    cell: Arc<CounterCell>,
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
            cell: Arc::clone(&self.cell),
            cache: Arc::clone(&self.cache),
            _value: PhantomData,
        }
    }
}

impl<V> std::fmt::Debug for Counter<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counter")
            .field("key", &self.cell.key)
            .finish()
    }
}

impl<V: CounterValue> Counter<V> {
    /// Adds `delta` (finite, for floats); returns the new local view. Fails only in fail-closed
    /// mode while Redis is down, and then adds nothing.
    pub fn increment(&self, delta: V) -> Result<V, CacheError> {
        self.cache.add(&self.cell, delta)
    }

    /// Adds `delta` as [`increment`](Self::increment) does, and pushes it to Redis at once in a
    /// background task instead of with the next sync: for a value other instances must see
    /// before their next decision (a settled spend). The caller does not wait on Redis. The push
    /// is the sync's exactly-once push (increments made meanwhile, here or by other handles, go
    /// with it); if it fails, the delta stays owed and the next sync sends it.
    pub fn increment_now(&self, delta: V) -> Result<V, CacheError> {
        let value = self.cache.add(&self.cell, delta)?;
        self.cache.push_soon(&self.cell);
        Ok(value)
    }

    /// The local view: the last global value read plus deltas not yet acknowledged.
    #[inline]
    pub fn value(&self) -> V {
        self.value_at(self.cache.clock.now_ms())
    }

    /// The local view at `now_ms`, a time the caller read from the cache's [`Clock`] once for
    /// many counters (a routing decision over hundreds of deployments reads the clock once).
    #[inline]
    pub fn value_at(&self, now_ms: u64) -> V {
        V::from_num(self.cell.value(now_ms, self.cache.is_remote()))
    }

    /// Tells the counter its global value, as a script that changed the key in Redis returned
    /// it, so the local view does not wait for the next read-back. Ignored while a push of this
    /// counter awaits its acknowledgement (the read-back after it is exact).
    pub fn observe_global(&self, value: V) {
        if value.check(&self.cell.key).is_ok() {
            self.cell.refresh(value.to_num(), self.cache.clock.now_ms());
        }
    }

    /// An error when the last value Redis returned for this key could not be read as a number
    /// (the key holds something else): the local view is then not the shared one.
    pub fn check_remote(&self) -> Result<(), CacheError> {
        if self.cell.has_bad_reply() {
            return Err(CacheError::UnexpectedReply {
                key: self.cell.key.to_string(),
                expected: match V::KIND {
                    Kind::Int => "an integer",
                    Kind::Float => "a number",
                },
                got: "a value that is not a number (see the sync warning)".into(),
            });
        }
        Ok(())
    }

    /// The counter's key (without the Redis namespace prefix).
    pub fn key(&self) -> &str {
        &self.cell.key
    }
}

/// A script's reply, decoded by the script's own typed decoder (no Redis client type leaks into
/// ferrolite's public API).
#[derive(Debug, Clone, PartialEq)]
pub enum ScriptReply {
    /// Nil.
    Nil,
    /// An integer.
    Int(i64),
    /// A bulk or simple string (a float comes back as text from Lua).
    Text(String),
    /// An array.
    Array(Vec<ScriptReply>),
    /// Anything else, described.
    Other(String),
}

impl ScriptReply {
    /// The integer, or the text parsed as one.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            ScriptReply::Int(i) => Some(*i),
            ScriptReply::Text(t) => t.trim().parse().ok(),
            _ => None,
        }
    }

    /// The number (integer or text), finite.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            ScriptReply::Int(i) => Some(*i as f64),
            ScriptReply::Text(t) => t.trim().parse::<f64>().ok().filter(|v| v.is_finite()),
            _ => None,
        }
    }
}
