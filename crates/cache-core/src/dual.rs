//! `DualCache`: the local tier (moka values, atomic counters) in front of the Redis tier.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::CacheError;
use crate::clock::{Clock, SystemClock};
use crate::config::{CacheConfig, FailureMode};
use crate::counter::{CounterCell, CounterOptions, Kind, Num};
use crate::redis::RedisStore;
use crate::window::WindowedCounter;

/// A value in the local tier, with the clock time at which it stops being served.
#[derive(Debug, Clone)]
struct LocalValue {
    value: Arc<str>,
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
}

pub(crate) struct Inner {
    pub(crate) config: CacheConfig,
    pub(crate) clock: Arc<dyn Clock>,
    local: moka::future::Cache<String, LocalValue>,
    pub(crate) counters: RwLock<HashMap<Arc<str>, Arc<CounterCell>>>,
    pub(crate) windows: Mutex<HashMap<String, Arc<WindowedCounter>>>,
    pub(crate) redis: Option<RedisStore>,
    /// This instance's id in the exactly-once flush protocol.
    pub(crate) instance: String,
    /// Last flush sequence number used (they only grow).
    pub(crate) seq: AtomicU64,
    overflows: AtomicU64,
    stop: Arc<Notify>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// The last sync error reported, to log a persistent one once rather than every interval.
    pub(crate) last_sync_error: Mutex<Option<String>>,
    /// One sync at a time: a manual `sync_now` racing the sync task would otherwise apply an
    /// older read-back after a newer one, or acknowledge one push twice.
    pub(crate) sync_lock: tokio::sync::Mutex<()>,
}

impl Inner {
    /// Whether operations must be refused: fail-closed mode while Redis is down.
    fn refuse(&self, operation: &'static str) -> Result<(), CacheError> {
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

    pub(crate) fn is_remote(&self) -> bool {
        self.redis.is_some()
    }

    pub(crate) fn fail_open(&self) -> bool {
        self.config.failure_mode == FailureMode::FailOpen
    }

    /// Drops counters that expired, owe Redis nothing and have no handle outside the registry;
    /// returns how many.
    pub(crate) fn prune_counters(
        &self,
        counters: &mut HashMap<Arc<str>, Arc<CounterCell>>,
    ) -> usize {
        let (now, remote) = (self.clock.now_ms(), self.is_remote());
        let before = counters.len();
        counters.retain(|_, cell| {
            !(Arc::strong_count(cell) == 1 && cell.is_expired_and_settled(now, remote))
        });
        before - counters.len()
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
        if counters.len() >= self.config.max_tracked_keys {
            self.prune_counters(&mut counters);
        }
        if counters.len() >= self.config.max_tracked_keys {
            let n = self.overflows.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("ferrolite_cache_tracked_key_overflows_total").increment(1);
            if n.is_power_of_two() || n == 0 {
                tracing::warn!(
                    key,
                    limit = self.config.max_tracked_keys,
                    refused_so_far = n + 1,
                    "counter key refused: max_tracked_keys reached"
                );
            }
            return Err(CacheError::TrackedKeysFull {
                key: key.to_string(),
                limit: self.config.max_tracked_keys,
            });
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
}

impl Drop for Inner {
    /// The last handle is gone. What the counters still owe Redis is flushed one last time
    /// (best effort, in a task on the current runtime, so dropping a cache without
    /// [`DualCache::shutdown`] loses nothing while Redis answers), then the connection is closed:
    /// fred would otherwise keep it open. Without a runtime nothing can run, and nothing is.
    fn drop(&mut self) {
        let Some(redis) = self.redis.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let cells: Vec<Arc<CounterCell>> = std::mem::take(self.counters.get_mut())
            .into_values()
            .collect();
        let instance = std::mem::take(&mut self.instance);
        let seq = AtomicU64::new(self.seq.load(Ordering::Relaxed));
        runtime.spawn(async move {
            if cells.iter().any(|c| !c.is_settled()) {
                let mut report = crate::SyncReport::default();
                crate::pipeline::flush(&redis, &instance, &seq, &cells, &mut report).await;
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
            .field("instance", &self.inner.instance)
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
                let store = RedisStore::new(redis_config)?;
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
                    let _ = store.load(&store.incr).await;
                    let _ = store.load(&store.admit).await;
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
            windows: Mutex::new(HashMap::new()),
            redis,
            instance: instance_id(),
            seq: AtomicU64::new(0),
            overflows: AtomicU64::new(0),
            stop: Arc::new(Notify::new()),
            task: Mutex::new(None),
            last_sync_error: Mutex::new(None),
            sync_lock: tokio::sync::Mutex::new(()),
            clock,
            config,
        });
        let task = tokio::spawn(sync_loop(
            Arc::downgrade(&inner),
            inner.config.sync_interval,
            Arc::clone(&inner.stop),
        ));
        *inner.task.lock() = Some(task);
        Ok(DualCache { inner })
    }

    /// This instance's id in the flush protocol (unique per `DualCache`).
    pub fn instance_id(&self) -> &str {
        &self.inner.instance
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
        self.set_local(key, Arc::from(value), ttl).await;
        match &self.inner.redis {
            Some(redis) => match redis.set(key, value, ttl).await {
                Err(CacheError::Unavailable { .. }) if self.inner.fail_open() => Ok(()),
                other => other,
            },
            None => Ok(()),
        }
    }

    async fn set_local(&self, key: &str, value: Arc<str>, ttl: Duration) {
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
        let entry = self.inner.local.get(key).await?;
        (self.inner.clock.now_ms() < entry.expires_at_ms).then_some(entry.value)
    }

    /// The value of `key`: local first, then Redis on a miss (then kept locally for
    /// `remote_read_ttl`). While Redis is down a fail-open cache answers from the local tier.
    pub async fn get(&self, key: &str) -> Result<Option<Arc<str>>, CacheError> {
        if let Some(value) = self.get_local(key).await {
            return Ok(Some(value));
        }
        self.inner.refuse("get")?;
        let Some(redis) = &self.inner.redis else {
            return Ok(None);
        };
        match redis.get(key).await {
            Ok(Some(value)) => {
                let value: Arc<str> = Arc::from(value);
                self.set_local(key, Arc::clone(&value), self.inner.config.remote_read_ttl)
                    .await;
                Ok(Some(value))
            }
            Ok(None) => Ok(None),
            Err(CacheError::Unavailable { .. }) if self.inner.fail_open() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The values of several keys, in order: local hits, then one `MGET` for the misses.
    pub async fn batch_get(&self, keys: &[&str]) -> Result<Vec<Option<Arc<str>>>, CacheError> {
        let mut out = Vec::with_capacity(keys.len());
        let mut missing = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let value = self.get_local(key).await;
            if value.is_none() {
                missing.push(i);
            }
            out.push(value);
        }
        let Some(redis) = &self.inner.redis else {
            return Ok(out);
        };
        if missing.is_empty() {
            return Ok(out);
        }
        self.inner.refuse("batch_get")?;
        let miss_keys: Vec<&str> = missing.iter().map(|i| keys[*i]).collect();
        let values = match redis.mget(&miss_keys).await {
            Ok(values) => values,
            Err(CacheError::Unavailable { .. }) if self.inner.fail_open() => return Ok(out),
            Err(e) => return Err(e),
        };
        for (i, value) in missing.into_iter().zip(values) {
            if let Some(value) = value {
                let value: Arc<str> = Arc::from(value);
                self.set_local(
                    keys[i],
                    Arc::clone(&value),
                    self.inner.config.remote_read_ttl,
                )
                .await;
                out[i] = Some(value);
            }
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
                    self.set_local(key, Arc::clone(&stored), ttl).await;
                    return Ok(stored);
                }
                Err(CacheError::Unavailable { .. }) if self.inner.fail_open() => {}
                Err(e) => return Err(e),
            }
        }
        // One writer at a time in this process: moka's entry API inserts only when absent.
        let now = self.inner.clock.now_ms();
        let candidate = LocalValue {
            value: Arc::from(value),
            ttl,
            expires_at_ms: now.saturating_add(ttl.as_millis() as u64),
        };
        let entry = self
            .inner
            .local
            .entry(key.to_string())
            .and_upsert_with(|existing| async move {
                match existing.map(|e| e.into_value()) {
                    Some(current) if now < current.expires_at_ms => current,
                    _ => candidate,
                }
            })
            .await;
        Ok(entry.into_value().value)
    }

    /// Runs `script` in Redis (by SHA, loading it on `NOSCRIPT`) with `keys` (namespaced like
    /// every other key) and `args`. `Ok(None)` when no Redis is configured; while Redis is down,
    /// [`CacheError::Unavailable`], and the caller decides how to degrade.
    pub async fn eval(
        &self,
        script: &crate::LuaScript,
        keys: &[&str],
        args: Vec<String>,
    ) -> Result<Option<crate::RedisValue>, CacheError> {
        let Some(redis) = &self.inner.redis else {
            return Ok(None);
        };
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
        let cell = self.inner.cell(key, Kind::Int, options)?;
        Ok(IntCounter {
            cell,
            cache: Arc::clone(&self.inner),
        })
    }

    /// A handle on the float counter `key` (spend in USD, for instance).
    pub fn float_counter(
        &self,
        key: &str,
        options: CounterOptions,
    ) -> Result<FloatCounter, CacheError> {
        let cell = self.inner.cell(key, Kind::Float, options)?;
        Ok(FloatCounter {
            cell,
            cache: Arc::clone(&self.inner),
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
        Ok(as_i64(cell.increment(
            Num::Int(delta),
            self.inner.clock.now_ms(),
            self.inner.is_remote(),
        )))
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
        Ok(cell
            .increment(
                Num::Float(delta),
                self.inner.clock.now_ms(),
                self.inner.is_remote(),
            )
            .as_f64())
    }

    /// The local view of a tracked counter (`None` if the key is not tracked).
    pub fn counter_value(&self, key: &str) -> Option<f64> {
        let cell = self.inner.counters.read().get(key).cloned()?;
        Some(
            cell.value(self.inner.clock.now_ms(), self.inner.is_remote())
                .as_f64(),
        )
    }

    // ---- lifecycle ------------------------------------------------------------------------

    /// Runs one sync now (push queued deltas, read tracked counters back, prune expired keys)
    /// and reports what happened. The sync task does the same every `sync_interval`.
    pub async fn sync_now(&self) -> Result<crate::SyncReport, CacheError> {
        self.inner.sync_once().await
    }

    /// Stops the sync task after a last flush, and closes the Redis connection. Deltas that
    /// cannot be flushed (Redis down) are reported in the returned error. The cache still
    /// answers afterwards, from its local tier only.
    pub async fn shutdown(&self) -> Result<(), CacheError> {
        self.inner.stop.notify_one();
        let task = self.inner.task.lock().take();
        if let Some(task) = task {
            let _ = task.await;
        }
        let report = self.inner.sync_once().await;
        if let Some(redis) = &self.inner.redis {
            redis.quit().await;
        }
        let report = report?;
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

fn as_i64(n: Num) -> i64 {
    match n {
        Num::Int(v) => v,
        Num::Float(v) => v as i64,
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
        if let Err(error) = inner.sync_once().await {
            tracing::debug!(%error, "cache sync failed; deltas kept for the next one");
        }
    }
    tracing::debug!("cache sync task stopped");
}

/// A handle on an integer counter. Cloning is cheap; `increment` is one atomic add and never
/// waits on Redis.
#[derive(Clone)]
pub struct IntCounter {
    cell: Arc<CounterCell>,
    cache: Arc<Inner>,
}

impl std::fmt::Debug for IntCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntCounter")
            .field("key", &self.cell.key)
            .finish()
    }
}

impl IntCounter {
    /// Adds `delta`; returns the new local view. Fails only in fail-closed mode while Redis is
    /// down, and then adds nothing.
    pub fn increment(&self, delta: i64) -> Result<i64, CacheError> {
        self.cache.refuse("increment")?;
        Ok(as_i64(self.cell.increment(
            Num::Int(delta),
            self.cache.clock.now_ms(),
            self.cache.is_remote(),
        )))
    }

    /// The local view: the last global value read plus deltas not yet acknowledged.
    pub fn value(&self) -> i64 {
        self.value_at(self.cache.clock.now_ms())
    }

    /// The local view at `now_ms`, a time the caller read from the cache's [`Clock`] once for
    /// many counters (a routing decision over hundreds of deployments reads the clock once).
    pub fn value_at(&self, now_ms: u64) -> i64 {
        as_i64(self.cell.value(now_ms, self.cache.is_remote()))
    }

    /// The counter's key (without the Redis namespace prefix).
    pub fn key(&self) -> &str {
        &self.cell.key
    }
}

/// A handle on a float counter (spend, for instance).
#[derive(Clone)]
pub struct FloatCounter {
    cell: Arc<CounterCell>,
    cache: Arc<Inner>,
}

impl std::fmt::Debug for FloatCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FloatCounter")
            .field("key", &self.cell.key)
            .finish()
    }
}

impl FloatCounter {
    /// Tells the counter its global value, as a script that changed the key in Redis returned
    /// it, so the local view does not wait for the next read-back. Ignored while a push of this
    /// counter awaits its acknowledgement (the read-back after it is exact).
    pub fn observe_global(&self, value: f64) {
        if value.is_finite() {
            self.cell.refresh(Num::Float(value));
        }
    }

    /// Adds `delta` (finite); returns the new local view.
    pub fn increment(&self, delta: f64) -> Result<f64, CacheError> {
        check_finite(&self.cell.key, delta)?;
        self.cache.refuse("increment")?;
        Ok(self
            .cell
            .increment(
                Num::Float(delta),
                self.cache.clock.now_ms(),
                self.cache.is_remote(),
            )
            .as_f64())
    }

    /// The local view.
    pub fn value(&self) -> f64 {
        self.value_at(self.cache.clock.now_ms())
    }

    /// The local view at `now_ms`, read once from the cache's [`Clock`] for many counters.
    pub fn value_at(&self, now_ms: u64) -> f64 {
        self.cell.value(now_ms, self.cache.is_remote()).as_f64()
    }

    /// The counter's key (without the Redis namespace prefix).
    pub fn key(&self) -> &str {
        &self.cell.key
    }
}
