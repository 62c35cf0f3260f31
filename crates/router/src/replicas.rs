//! The replicas of a cluster: every `ferrolite serve` process sharing one Redis registers a
//! heartbeat (its id, version, config hash, start time and requests per second) every
//! [`ReplicaSettings::interval`], and removes it when it stops. A replica whose last beat is
//! older than [`ReplicaSettings::ttl`] (it crashed, or lost Redis) is no longer listed.
//!
//! In Redis the records are one hash and their last beats one sorted set, both under the hash
//! tag `{ferrolite:replicas}` (one slot of a Redis Cluster), kept by one versioned script
//! (`ferrolite_replicas_v1`). Beats are timed by each replica's clock (the cache's
//! [`ferrolite_cache::Clock`]): replicas' clocks must agree to well within the TTL. Without
//! Redis the cluster is this process.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ferrolite_cache::{DualCache, LuaScript, ScriptReply};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::RouterError;
use crate::state::ReplicaState;

/// The records' key (a hash: id -> JSON).
const RECORDS: &str = "{ferrolite:replicas}";
/// The last beats' key (a sorted set: id scored by Unix ms).
const BEATS: &str = "{ferrolite:replicas}:beats";

/// How often a replica beats and how long a beat counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaSettings {
    /// Between two beats (default 2 s).
    pub interval: Duration,
    /// How long after its last beat a replica is still listed (default 6 s, three beats).
    pub ttl: Duration,
}

impl Default for ReplicaSettings {
    fn default() -> Self {
        ReplicaSettings {
            interval: Duration::from_secs(2),
            ttl: Duration::from_secs(6),
        }
    }
}

/// Who a replica is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaInfo {
    /// Unique in the cluster: `{host}-{pid}-{4 hex digits}` by default.
    pub id: String,
    /// The ferrolite version it runs.
    pub version: String,
    /// A digest of the config it serves (replicas with different ones are flagged).
    pub config_hash: String,
    /// When it started (Unix ms).
    pub started_at_ms: u64,
}

impl ReplicaInfo {
    /// This process, serving a config whose digest is `config_hash`, started at
    /// `started_at_ms`: its id is the host name, the process id and four random hex digits.
    pub fn this_process(config_hash: impl Into<String>, started_at_ms: u64) -> Self {
        use std::hash::{BuildHasher, Hasher};
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| "ferrolite".to_string());
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        ReplicaInfo {
            id: format!("{host}-{}-{:04x}", std::process::id(), random & 0xffff),
            version: env!("CARGO_PKG_VERSION").to_string(),
            config_hash: config_hash.into(),
            started_at_ms,
        }
    }
}

/// A replica's record in Redis.
#[derive(Serialize, Deserialize)]
struct Record {
    #[serde(flatten)]
    info: ReplicaInfo,
    requests_per_second: f64,
}

/// This replica's heartbeat and the cluster's list of replicas (see the module documentation).
pub struct Replicas {
    cache: DualCache,
    me: parking_lot::RwLock<ReplicaInfo>,
    settings: ReplicaSettings,
    script: LuaScript,
    /// Requests this replica served (counted by [`Replicas::count_request`]).
    requests: AtomicU64,
    /// At the last beat: when (ms), the request count, and the rate since the beat before.
    last: Mutex<(u64, u64, f64)>,
}

impl std::fmt::Debug for Replicas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicas")
            .field("me", &self.me)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Replicas {
    /// The replica `me`, beating into `cache`'s Redis (when it has one) as `settings` say.
    pub fn new(cache: DualCache, me: ReplicaInfo, settings: ReplicaSettings) -> Self {
        let now = cache.clock().now_ms();
        Replicas {
            cache,
            me: parking_lot::RwLock::new(me),
            settings,
            script: LuaScript::new("ferrolite_replicas_v1", include_str!("lua/replicas_v1.lua")),
            requests: AtomicU64::new(0),
            last: Mutex::new((now, 0, 0.0)),
        }
    }

    /// Who this replica is.
    pub fn me(&self) -> ReplicaInfo {
        self.me.read().clone()
    }

    /// This replica's id.
    pub fn id(&self) -> String {
        self.me.read().id.clone()
    }

    /// Records that this replica serves another config now (a reload): published with the
    /// next beat.
    pub fn set_config_hash(&self, config_hash: impl Into<String>) {
        self.me.write().config_hash = config_hash.into();
    }

    /// The heartbeat's settings.
    pub fn settings(&self) -> ReplicaSettings {
        self.settings
    }

    /// Counts one request served (its requests per second are published with each beat).
    pub fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests per second between the last two beats (0 before the first).
    pub fn requests_per_second(&self) -> f64 {
        self.last.lock().2
    }

    /// Updates the rate at `now`.
    fn measure(&self, now: u64) -> f64 {
        let count = self.requests.load(Ordering::Relaxed);
        let mut last = self.last.lock();
        let (at, before, rate) = *last;
        if now > at {
            let rate = (count.saturating_sub(before)) as f64 * 1000.0 / (now - at) as f64;
            *last = (now, count, rate);
            rate
        } else {
            rate
        }
    }

    fn record(&self, requests_per_second: f64) -> Result<String, RouterError> {
        serde_json::to_string(&Record {
            info: self.me(),
            requests_per_second: (requests_per_second * 100.0).round() / 100.0,
        })
        .map_err(|_| {
            RouterError::Cache(ferrolite_cache::CacheError::InvalidArgument {
                field: "replica",
                value: self.id(),
                reason: "its record does not encode as JSON",
            })
        })
    }

    async fn run_script(
        &self,
        op: &str,
        record: Option<String>,
    ) -> Result<Option<ScriptReply>, RouterError> {
        let now = self.cache.clock().now_ms();
        let mut args = vec![
            op.to_string(),
            now.to_string(),
            self.settings.ttl.as_millis().to_string(),
        ];
        if op != "list" {
            args.push(self.id());
        }
        args.extend(record);
        self.cache
            .shared()
            .eval(&self.script, &[RECORDS, BEATS], args)
            .await
            .map_err(RouterError::Cache)
    }

    /// One beat: this replica's record, with its requests per second since the last beat.
    /// Nothing to do without Redis.
    pub async fn beat(&self) -> Result<(), RouterError> {
        let rate = self.measure(self.cache.clock().now_ms());
        if !self.cache.shared().is_configured() {
            return Ok(());
        }
        let record = self.record(rate)?;
        self.run_script("beat", Some(record)).await.map(drop)
    }

    /// Removes this replica's record (a replica that stops).
    pub async fn leave(&self) -> Result<(), RouterError> {
        if !self.cache.shared().is_configured() {
            return Ok(());
        }
        self.run_script("leave", None).await.map(drop)
    }

    /// Beats every [`ReplicaSettings::interval`], forever (a beat that fails is logged and
    /// the next one tried). Run it beside the server; call [`Replicas::leave`] when it stops.
    pub async fn run(&self) {
        let mut ticks = tokio::time::interval(self.settings.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            ticks.tick().await;
            match self.beat().await {
                Ok(()) => failing = false,
                Err(error) if !failing => {
                    failing = true;
                    tracing::warn!(%error, "could not register this replica's heartbeat");
                }
                Err(_) => {}
            }
        }
    }

    /// The live replicas, this one first, then by id; each flagged when its config hash is
    /// not this replica's. Without Redis (or while it is down), this replica alone.
    pub async fn list(&self) -> Vec<ReplicaState> {
        let now = self.cache.clock().now_ms();
        let info = self.me();
        let me = ReplicaState {
            id: info.id.clone(),
            version: info.version.clone(),
            config_hash: info.config_hash.clone(),
            started_at_ms: info.started_at_ms,
            last_seen_ms: now,
            requests_per_second: self.requests_per_second(),
            same_config: true,
        };
        let mut out = vec![me];
        if !self.cache.shared().is_up() {
            return out;
        }
        let reply = match self.run_script("list", None).await {
            Ok(Some(ScriptReply::Array(items))) => items,
            Ok(_) => return out,
            Err(error) => {
                tracing::debug!(%error, "could not list the replicas");
                return out;
            }
        };
        for entry in reply.chunks_exact(3) {
            let [ScriptReply::Text(id), ScriptReply::Text(record), seen] = entry else {
                continue;
            };
            if *id == info.id {
                continue;
            }
            let Ok(record) = serde_json::from_str::<Record>(record) else {
                continue;
            };
            out.push(ReplicaState {
                id: id.clone(),
                same_config: record.info.config_hash == info.config_hash,
                version: record.info.version,
                config_hash: record.info.config_hash,
                started_at_ms: record.info.started_at_ms,
                last_seen_ms: seen.as_i64().map_or(0, |v| v.max(0) as u64),
                requests_per_second: record.requests_per_second,
            });
        }
        if let Some(rest) = out.get_mut(1..) {
            rest.sort_by(|a, b| a.id.cmp(&b.id));
        }
        out
    }
}
