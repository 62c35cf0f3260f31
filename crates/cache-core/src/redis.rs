//! The Redis tier, the [`RemoteStore`] of ferrolite's shared state: a fred client set up so
//! that an outage never hangs a caller, the key namespace, the Lua scripts (run by SHA, loaded
//! again on `NOSCRIPT`), the sync's pipeline, and typed decoding of replies.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fred::clients::Pipeline;
use fred::prelude::{
    Builder, Client, ClientLike, Config, Error as FredError, ErrorKind, KeysInterface,
    LuaInterface, Options, ReconnectPolicy,
};
use fred::types::{ClusterHash, CustomCommand, Value};

use crate::config::RedisConfig;
use crate::counter::{ExpiryMode, Kind, Num};
use crate::error::CacheError;
use crate::remote::ScriptReply;
use crate::remote::{
    AdmitCheck, AdmitReceipt, BoxFuture, PendingCancel, RemoteStore, RoundTrip, SyncItem, SyncReply,
};
use crate::script::{Health, LuaScript, redact_url};

/// How long a counter's sequence hash outlives the counter: a push resent after the counter
/// expired (the reply was lost, Redis came back late) is still recognised as applied.
const SEQ_GRACE_MS: u64 = 600_000;

/// How long an admission's marker (and a withdrawal's tombstone) lives. A withdrawal is sent at
/// the first sync after Redis answers again, so a minute covers it with room to spare; one that
/// came later would find no marker and leave the admission counted — the safe direction (a slot
/// held too long, never one given twice). Every strict admission writes one such key, so it is
/// kept short.
const MARKER_TTL_MS: u64 = 60_000;

/// Whether a fred error means "Redis could not be reached / cannot serve right now" (as opposed
/// to Redis answering with an error about the command). fred reports some of these with
/// `ErrorKind::Unknown` (no connection to route to) and passes Redis' transient refusals through
/// as text (`LOADING` while it replays its AOF after a restart, `BUSY`, `TRYAGAIN`...).
fn is_unavailable(error: &FredError) -> bool {
    const TRANSIENT: [&str; 6] = [
        "Failed to route command",
        "LOADING",
        "BUSY",
        "TRYAGAIN",
        "MASTERDOWN",
        "CLUSTERDOWN",
    ];
    matches!(
        error.kind(),
        ErrorKind::IO
            | ErrorKind::Timeout
            | ErrorKind::Canceled
            | ErrorKind::Backpressure
            | ErrorKind::Routing
    ) || TRANSIENT
        .iter()
        .any(|prefix| error.details().starts_with(prefix))
}

/// `key` ends in a `{hash tag}` section Redis Cluster hashes on.
fn has_hash_tag(key: &str) -> bool {
    key.find('{')
        .and_then(|open| key[open + 1..].find('}'))
        .is_some_and(|close| close > 0)
}

/// The Redis tier (see the module documentation).
pub(crate) struct RedisStore {
    client: Client,
    prefix: String,
    fast: Options,
    /// Where to probe for a quick "connection refused" at startup (host, port).
    probe: Vec<(String, u16)>,
    connect_timeout: Duration,
    incr: LuaScript,
    admit: LuaScript,
    admit_cancel: LuaScript,
    set_later: LuaScript,
    lease: LuaScript,
    /// Counts the leases of many keys (one server, or one slot of a cluster).
    count_leases: LuaScript,
    /// The outage state, shared with the cache (which reads it on its hot path).
    health: Arc<Health>,
    /// Set once the connection was closed, so it is closed once (fred logs a warning for a
    /// second QUIT).
    closed: AtomicBool,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Parses the URL and builds the client (no I/O yet); outages are recorded in `health`.
    pub(crate) fn new(config: &RedisConfig, health: Arc<Health>) -> Result<Self, CacheError> {
        let invalid = |reason: String| CacheError::InvalidRedisUrl {
            url: redact_url(&config.url),
            reason,
        };
        config.check_url()?;
        let mut fred_config =
            Config::from_url(&config.url).map_err(|e| invalid(e.details().to_string()))?;
        // Reconnect in the background on the first connection too: a Redis that is down at
        // startup must not stop a fail-open router from serving.
        fred_config.fail_fast = false;
        let probe = match &fred_config.server {
            fred::types::config::ServerConfig::Centralized { server } => {
                vec![(server.host.to_string(), server.port)]
            }
            fred::types::config::ServerConfig::Clustered { hosts, .. } => {
                hosts.iter().map(|s| (s.host.to_string(), s.port)).collect()
            }
            _ => Vec::new(),
        };
        let client = Builder::from_config(fred_config)
            .with_performance_config(|perf| {
                perf.default_command_timeout = config.command_timeout;
            })
            .with_connection_config(|conn| {
                conn.connection_timeout = config.connect_timeout;
                conn.internal_command_timeout =
                    config.command_timeout.max(Duration::from_millis(500));
                // fred needs a second attempt to follow a cluster redirection or reach a node it
                // connects to lazily. Resending is harmless here: pushes are applied once per
                // sequence number, reads are idempotent, and caller-facing scripts run with
                // their own single-attempt options (`fast`).
                conn.max_command_attempts = 3;
                conn.unresponsive.max_timeout =
                    Some(config.command_timeout.max(Duration::from_millis(500)) * 4);
                conn.unresponsive.interval = Duration::from_millis(250);
            })
            // Retry forever: with a finite policy a dropped connection leaves fred dead while
            // `is_connected()` still says true, and every later command hangs.
            .set_policy(ReconnectPolicy::new_exponential(
                0,
                100,
                u32::try_from(crate::config::RECONNECT_MAX_DELAY.as_millis()).unwrap_or(5_000),
                2,
            ))
            .build()
            .map_err(|e| invalid(e.details().to_string()))?;
        Ok(RedisStore {
            client,
            prefix: config.key_prefix.clone(),
            fast: Options {
                fail_fast: true,
                timeout: Some(config.command_timeout),
                max_attempts: Some(1),
                ..Options::default()
            },
            probe,
            connect_timeout: config.connect_timeout,
            incr: LuaScript::new("ferrolite_incr_v2", include_str!("lua/incr_v2.lua")),
            admit: LuaScript::new("ferrolite_admit_v2", include_str!("lua/admit_v2.lua")),
            admit_cancel: LuaScript::new(
                "ferrolite_admit_cancel_v2",
                include_str!("lua/admit_cancel_v2.lua"),
            ),
            set_later: LuaScript::new(
                "ferrolite_set_later_v1",
                include_str!("lua/set_later_v1.lua"),
            ),
            lease: LuaScript::new("ferrolite_lease_v1", include_str!("lua/lease_v1.lua")),
            count_leases: LuaScript::new(
                "ferrolite_count_leases_v1",
                include_str!("lua/count_leases_v1.lua"),
            ),
            health,
            closed: AtomicBool::new(false),
        })
    }

    /// Starts connecting and waits up to `wait` for the first connection, then loads the
    /// scripts (a failure there is retried on first use). Returns whether it connected; the
    /// client keeps reconnecting in the background either way.
    async fn connect(&self, wait: Duration) -> bool {
        let _handle = self.client.connect();
        // Nothing listening answers at once: do not wait the whole `wait` for it (the client
        // keeps reconnecting in the background either way).
        let connected = if self.refused_everywhere().await {
            false
        } else {
            tokio::time::timeout(wait, self.client.wait_for_connect())
                .await
                .is_ok_and(|r| r.is_ok())
        };
        if connected {
            self.health.record_ok();
            for script in [&self.incr, &self.admit, &self.admit_cancel, &self.set_later] {
                let _ = self.load(script).await;
            }
        } else {
            self.health
                .record_unavailable("connect", "no connection within initial_connect_wait");
        }
        connected
    }

    /// Whether every configured server refused a TCP connection outright (nothing listening).
    /// A timeout or any other outcome is not a refusal: the caller then waits as configured.
    async fn refused_everywhere(&self) -> bool {
        if self.probe.is_empty() {
            return false;
        }
        for (host, port) in &self.probe {
            let attempt = tokio::time::timeout(
                self.connect_timeout,
                tokio::net::TcpStream::connect((host.as_str(), *port)),
            )
            .await;
            match attempt {
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                _ => return false,
            }
        }
        true
    }

    /// A cheap `GET` that keeps the health state fresh when a sync has nothing else to send.
    async fn check_health(&self) {
        let ping: Result<Value, _> = self.client.get(self.key("ferrolite:health")).await;
        match ping {
            Ok(_) => self.health.record_ok(),
            Err(e) => {
                self.error("health check", "", &e);
            }
        }
    }

    /// Closes the connection (once).
    async fn quit(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            let _ = self.client.quit().await;
        }
    }

    /// Whether [`quit`](Self::quit) ran.
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The namespaced key.
    fn key(&self, key: &str) -> String {
        let mut full = String::with_capacity(self.prefix.len() + key.len());
        full.push_str(&self.prefix);
        full.push_str(key);
        full
    }

    /// A prefix in the hash slot of `full_key`: its `{hash tag}` section (with whatever
    /// precedes it), or the whole key in braces when it has none.
    fn tag_of(full_key: &str) -> String {
        if has_hash_tag(full_key) {
            if let Some(close) = full_key
                .find('{')
                .and_then(|open| full_key[open..].find('}').map(|c| open + c))
            {
                return full_key[..=close].to_string();
            }
        }
        format!("{{{full_key}}}")
    }

    /// The key of the per-counter hash of applied sequence numbers, in the counter's hash slot.
    fn seq_key(full_key: &str) -> String {
        if has_hash_tag(full_key) {
            format!("{full_key}:seq")
        } else {
            format!("{{{full_key}}}:seq")
        }
    }

    /// Maps a fred error to a typed error and updates the health state.
    fn error(&self, operation: &'static str, key: &str, error: &FredError) -> CacheError {
        if is_unavailable(error) {
            self.health.record_unavailable(operation, error.details());
            CacheError::Unavailable {
                operation,
                reason: error.details().to_string(),
            }
        } else {
            CacheError::Redis {
                operation,
                key: key.to_string(),
                reason: error.details().to_string(),
            }
        }
    }

    /// `GET` with fail-fast options.
    async fn get(&self, key: &str) -> Result<Option<String>, CacheError> {
        let reply: Result<Value, _> = self
            .client
            .with_options(&self.fast)
            .get(self.key(key))
            .await;
        match reply {
            Ok(value) => {
                self.health.record_ok();
                decode_string(key, value)
            }
            Err(e) => Err(self.error("get", key, &e)),
        }
    }

    /// `ZREM key member` with fail-fast options.
    async fn remove_member(&self, key: &str, member: &str) -> Result<(), CacheError> {
        let reply: Result<Value, _> = self
            .client
            .with_options(&self.fast)
            .custom(
                CustomCommand::new_static("ZREM", ClusterHash::FirstKey, false),
                vec![self.key(key), member.to_string()],
            )
            .await;
        match reply {
            Ok(_) => {
                self.health.record_ok();
                Ok(())
            }
            Err(e) => Err(self.error("lease release", key, &e)),
        }
    }

    /// `SET key value PX ttl` with fail-fast options.
    async fn set(&self, key: &str, value: &str, ttl: Duration) -> Result<(), CacheError> {
        self.set_px("set", key, value, ttl, false).await.map(|_| ())
    }

    /// `SET key value NX PX ttl GET` with fail-fast options: the value now stored (the one given
    /// if the key was absent, else the one that was there).
    async fn set_if_absent(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<String, CacheError> {
        let previous = self.set_px("set_if_absent", key, value, ttl, true).await?;
        Ok(decode_string(key, previous)?.unwrap_or_else(|| value.to_string()))
    }

    /// `SET key value PX ttl`, with `NX GET` when `only_if_absent`; the raw reply.
    async fn set_px(
        &self,
        operation: &'static str,
        key: &str,
        value: &str,
        ttl: Duration,
        only_if_absent: bool,
    ) -> Result<Value, CacheError> {
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
        let reply: Result<Value, _> = self
            .client
            .with_options(&self.fast)
            .set(
                self.key(key),
                value,
                Some(fred::types::Expiration::PX(ttl_ms)),
                only_if_absent.then_some(fred::types::SetOptions::NX),
                only_if_absent,
            )
            .await;
        match reply {
            Ok(value) => {
                self.health.record_ok();
                Ok(value)
            }
            Err(e) => Err(self.error(operation, key, &e)),
        }
    }

    /// `MGET` with fail-fast options; one entry per key, `None` where Redis has nothing.
    async fn mget(&self, keys: &[&str]) -> Result<Vec<Option<String>>, CacheError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let full: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        if self.client.is_clustered() {
            // One MGET may only name keys of one slot on a cluster (else `CROSSSLOT`): one
            // MGET per slot, in one pipeline that fred sends to each slot's node.
            let slots = by_slot(&full);
            if slots.len() > 1 {
                return self.mget_by_slot(keys, full, &slots).await;
            }
        }
        let reply: Result<Value, _> = self.client.with_options(&self.fast).mget(full).await;
        match reply {
            Ok(value) => {
                self.health.record_ok();
                decode_mget(keys, value)
            }
            Err(e) => Err(self.error("mget", keys.first().copied().unwrap_or(""), &e)),
        }
    }

    /// [`RedisStore::mget`] on a cluster, of keys in several `slots` (each slot with the
    /// positions of its keys): the values in the order of `keys`.
    async fn mget_by_slot(
        &self,
        keys: &[&str],
        mut full: Vec<String>,
        slots: &[Vec<usize>],
    ) -> Result<Vec<Option<String>>, CacheError> {
        let pipe = self.client.pipeline();
        for positions in slots {
            if let Err(e) = queue_mget(&pipe, &mut full, positions).await {
                return Err(self.error("mget", keys.first().copied().unwrap_or(""), &e));
            }
        }
        let replies: Vec<Result<Value, FredError>> = pipe.try_all().await;
        let mut out = vec![None; keys.len()];
        for (positions, reply) in slots.iter().zip(replies) {
            let group: Vec<&str> = positions
                .iter()
                .filter_map(|i| keys.get(*i).copied())
                .collect();
            let value = match reply {
                Ok(value) => value,
                Err(e) => {
                    return Err(self.error("mget", group.first().copied().unwrap_or(""), &e));
                }
            };
            for (i, value) in positions.iter().zip(decode_mget(&group, value)?) {
                if let Some(slot) = out.get_mut(*i) {
                    *slot = value;
                }
            }
        }
        self.health.record_ok();
        Ok(out)
    }

    /// Runs a script by SHA with fail-fast options, loading it on `NOSCRIPT`.
    async fn eval(
        &self,
        script: &LuaScript,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<ScriptReply, CacheError> {
        let client = self.client.with_options(&self.fast);
        let first: Result<Value, _> = client
            .evalsha(&script.sha, keys.clone(), args.clone())
            .await;
        let result = match first {
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                self.load(script).await?;
                client.evalsha(&script.sha, keys, args).await
            }
            other => other,
        };
        match result {
            Ok(value) => {
                self.health.record_ok();
                Ok(reply_of(value))
            }
            Err(e) => Err(self.error("script", script.name, &e)),
        }
    }

    /// `ZREM`s each `(key, member)` in one pipeline; whether Redis took each.
    async fn remove_members(&self, pending: &[(String, String)]) -> Vec<bool> {
        let pipe = self.client.pipeline();
        for (key, member) in pending {
            let queued: Result<(), _> = pipe
                .custom(
                    CustomCommand::new_static("ZREM", ClusterHash::FirstKey, false),
                    vec![self.key(key), member.clone()],
                )
                .await;
            if let Err(e) = queued {
                tracing::debug!(error = %e, "could not queue a lease release");
            }
        }
        let replies: Vec<Result<Value, FredError>> = pipe.try_all().await;
        (0..pending.len())
            .map(|i| replies.get(i).is_some_and(Result::is_ok))
            .collect()
    }

    /// `ZCOUNT key (now_ms +inf` of each key: the leases not yet expired. On one server, one
    /// script runs them all (one command, where a pipeline sends, encodes and answers one per
    /// key); on a cluster, whose keys spread over as many slots as deployments, one pipeline.
    async fn count_members(&self, keys: &[&str], now_ms: u64) -> Result<Vec<u64>, CacheError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        if !self.client.is_clustered() {
            let full: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
            let reply = self
                .eval(&self.count_leases, full, vec![now_ms.to_string()])
                .await?;
            return match reply {
                ScriptReply::Array(items) if items.len() == keys.len() => Ok(items
                    .iter()
                    .map(|count| count.as_i64().map_or(0, |n| n.max(0) as u64))
                    .collect()),
                other => Err(CacheError::UnexpectedReply {
                    key: self.count_leases.name.into(),
                    expected: "an array with one count per key",
                    got: truncate(&format!("{other:?}")),
                }),
            };
        }
        let pipe = self.client.pipeline();
        let after = format!("({now_ms}");
        for key in keys {
            let queued: Result<(), _> = pipe
                .custom(
                    CustomCommand::new_static("ZCOUNT", ClusterHash::FirstKey, false),
                    vec![self.key(key), after.clone(), "+inf".to_string()],
                )
                .await;
            if let Err(e) = queued {
                return Err(self.error("zcount", key, &e));
            }
        }
        let replies: Vec<Result<Value, FredError>> = pipe.try_all().await;
        let mut counts = Vec::with_capacity(keys.len());
        for (key, reply) in keys.iter().zip(replies) {
            match reply {
                Ok(value) => {
                    self.health.record_ok();
                    counts.push(value.as_u64().unwrap_or(0));
                }
                Err(e) => return Err(self.error("zcount", key, &e)),
            }
        }
        Ok(counts)
    }

    /// `SCRIPT LOAD`s a script — on every primary of a Redis Cluster, where each node keeps its
    /// own script cache (a script loaded on one node answers `NOSCRIPT` on the others).
    async fn load(&self, script: &LuaScript) -> Result<(), CacheError> {
        let client = self.client.with_options(&self.fast);
        let loaded: Result<String, _> = if self.client.is_clustered() {
            client
                .script_load_cluster::<Value, _>(script.body)
                .await
                .map(|_| script.sha.clone())
        } else {
            client.script_load(script.body).await
        };
        match loaded {
            Ok(sha) if sha == script.sha => Ok(()),
            Ok(sha) => Err(CacheError::UnexpectedReply {
                key: script.name.to_string(),
                expected: "the script's SHA-1",
                got: sha,
            }),
            Err(e) => Err(self.error("script load", script.name, &e)),
        }
    }
}

impl RedisStore {
    /// Queues one sync item into `pipe`. Queuing only fails for invalid arguments, which these
    /// are not; a failure here surfaces as a missing reply.
    async fn queue_item(&self, pipe: &Pipeline<Client>, instance: &str, item: &SyncItem<'_>) {
        let queued: Result<(), FredError> = match *item {
            SyncItem::Push {
                key,
                seq,
                delta,
                ttl_ms,
                expiry,
                kind,
            } => {
                let full = self.key(key);
                let seq_key = Self::seq_key(&full);
                let args = [
                    instance.to_string(),
                    seq.to_string(),
                    num_arg(delta),
                    ttl_ms.to_string(),
                    match expiry {
                        ExpiryMode::FromFirstWrite => "nx".to_string(),
                        ExpiryMode::FromLastWrite => "always".to_string(),
                    },
                    match kind {
                        Kind::Int => "int".to_string(),
                        Kind::Float => "float".to_string(),
                    },
                    SEQ_GRACE_MS.to_string(),
                ];
                pipe.custom(
                    evalsha(),
                    script_args(&self.incr.sha, [full, seq_key], args),
                )
                .await
            }
            SyncItem::Read { key, .. } | SyncItem::ReadDeadline { key } => {
                pipe.get(self.key(key)).await
            }
            SyncItem::SendDeadline {
                key,
                until_ms,
                ttl_ms,
            } => {
                let args = [until_ms.to_string(), ttl_ms.to_string()];
                pipe.custom(
                    evalsha(),
                    script_args(&self.set_later.sha, [self.key(key)], args),
                )
                .await
            }
        };
        if let Err(e) = queued {
            tracing::debug!(error = %e, "could not queue a pipeline command");
        }
    }

    /// One sync round trip: every item in one pipeline, each reply decoded as its item's type.
    /// The reads (a counter's or a deadline's value: most items, one per tracked key) go as
    /// `MGET`s of up to [`READS_PER_MGET`] keys (of one slot each on a cluster), the pushes and
    /// deadlines sent as one script call each.
    async fn sync_items(&self, instance: &str, items: &[SyncItem<'_>]) -> RoundTrip {
        let pipe = self.client.pipeline();
        let mut plan = Vec::new();
        let mut reads = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match item {
                SyncItem::Read { .. } | SyncItem::ReadDeadline { .. } => reads.push(i),
                _ => {
                    self.queue_item(&pipe, instance, item).await;
                    plan.push(Queued::One(i));
                }
            }
        }
        self.queue_reads(&pipe, items, &reads, &mut plan).await;
        let replies: Vec<Result<Value, FredError>> = pipe.try_all().await;
        let mut trip = RoundTrip::default();
        if replies.len() != plan.len() {
            let reason = replies
                .iter()
                .find_map(|r| r.as_ref().err().map(|e| e.details().to_string()))
                .unwrap_or_else(|| {
                    format!("{} replies for {} commands", replies.len(), items.len())
                });
            self.health.record_unavailable("sync", &reason);
            trip.replies = vec![None; items.len()];
            trip.errors.push(CacheError::Unavailable {
                operation: "sync",
                reason,
            });
            return trip;
        }
        let replies = expand(items.len(), plan, replies);
        let (mut reload_scripts, mut unavailable, mut any_ok) = (false, None, false);
        for (item, reply) in items.iter().zip(replies) {
            let Some(reply) = reply else {
                trip.replies.push(None);
                continue;
            };
            trip.replies.push(match reply {
                Ok(value) => {
                    any_ok = true;
                    Some(decode_item(item, value))
                }
                Err(e) if e.details().starts_with("NOSCRIPT") => {
                    reload_scripts = true;
                    None
                }
                Err(e) => match self.error("sync", item_key(item), &e) {
                    CacheError::Unavailable { .. } => {
                        unavailable = Some(e.details().to_string());
                        None
                    }
                    typed => Some(Err(typed)),
                },
            });
        }
        if let Some(reason) = unavailable {
            trip.errors.push(CacheError::Unavailable {
                operation: "sync",
                reason,
            });
        } else if any_ok {
            self.health.record_ok();
        }
        if reload_scripts {
            // Redis restarted or flushed its scripts: load them; the unacknowledged pushes go
            // again next time with the same sequence numbers.
            for script in [&self.incr, &self.set_later] {
                if let Err(e) = self.load(script).await {
                    trip.errors.push(e);
                }
            }
        }
        trip
    }

    /// Queues the `reads` (positions in `items`) as `MGET`s: one per [`READS_PER_MGET`] keys,
    /// on a cluster per slot as well; each is added to `plan` with the items it answers.
    async fn queue_reads(
        &self,
        pipe: &Pipeline<Client>,
        items: &[SyncItem<'_>],
        reads: &[usize],
        plan: &mut Vec<Queued>,
    ) {
        if reads.is_empty() {
            return;
        }
        let mut full: Vec<String> = reads
            .iter()
            .map(|i| self.key(items.get(*i).map_or("", item_key)))
            .collect();
        let groups = if self.client.is_clustered() {
            by_slot(&full)
        } else {
            vec![(0..full.len()).collect()]
        };
        for group in groups {
            for chunk in group.chunks(READS_PER_MGET) {
                if let Err(e) = queue_mget(pipe, &mut full, chunk).await {
                    tracing::debug!(error = %e, "could not queue a pipeline command");
                }
                plan.push(Queued::Reads(
                    chunk
                        .iter()
                        .filter_map(|p| reads.get(*p).copied())
                        .collect(),
                ));
            }
        }
    }

    /// The key of an admission's marker: in the hash slot of its first counter.
    fn marker(&self, first_counter: &str, token: &str) -> String {
        format!(
            "{}:admission:{token}",
            Self::tag_of(&self.key(first_counter))
        )
    }

    /// `ferrolite_admit_v2` over `checks`.
    async fn admit_checks(
        &self,
        token: &str,
        checks: &[AdmitCheck<'_>],
    ) -> Result<AdmitReceipt, CacheError> {
        let first = checks.first().map_or("", |c| c.current);
        let mut keys = Vec::with_capacity(1 + 2 * checks.len());
        let mut args = Vec::with_capacity(1 + 5 * checks.len());
        keys.push(self.marker(first, token));
        args.push(MARKER_TTL_MS.to_string());
        for check in checks {
            keys.push(self.key(check.current));
            keys.push(self.key(&check.previous));
            args.push(check.delta.to_string());
            args.push(check.limit.to_string());
            args.push(check.bucket_start_ms.to_string());
            args.push(check.sliding_ms.to_string());
            args.push(check.retention_ms.to_string());
        }
        let reply = self.eval(&self.admit, keys, args).await?;
        decode_admission(reply, checks.len())
    }

    /// `ferrolite_admit_cancel_v2` for one lost admission.
    async fn cancel_admission(&self, cancel: &PendingCancel) -> Result<(), CacheError> {
        let first = cancel.counters.first().map_or("", String::as_str);
        let mut keys = Vec::with_capacity(1 + cancel.counters.len());
        keys.push(self.marker(first, &cancel.token));
        keys.extend(cancel.counters.iter().map(|k| self.key(k)));
        let mut args = vec![MARKER_TTL_MS.to_string()];
        args.extend(cancel.deltas.iter().map(u64::to_string));
        self.eval(&self.admit_cancel, keys, args).await.map(|_| ())
    }

    /// `ferrolite_lease_v1` with `operation` (`take` or `renew`).
    async fn lease_script(
        &self,
        operation: &str,
        key: &str,
        token: &str,
        limit: u64,
        ttl: Duration,
    ) -> Result<ScriptReply, CacheError> {
        self.eval(
            &self.lease,
            vec![self.key(key)],
            vec![
                operation.to_string(),
                token.to_string(),
                limit.to_string(),
                ttl.as_millis().to_string(),
            ],
        )
        .await
    }

    /// `ferrolite_set_later_v1`: the deadline now stored.
    async fn set_deadline(&self, key: &str, until_ms: u64, ttl_ms: u64) -> Result<u64, CacheError> {
        let reply = self
            .eval(
                &self.set_later,
                vec![self.key(key)],
                vec![until_ms.to_string(), ttl_ms.to_string()],
            )
            .await?;
        deadline_reply(key, &reply)
    }
}

impl RemoteStore for RedisStore {
    fn is_configured(&self) -> bool {
        true
    }

    fn connect(&self, wait: Duration) -> BoxFuture<'_, bool> {
        Box::pin(RedisStore::connect(self, wait))
    }

    fn check_health(&self) -> BoxFuture<'_, ()> {
        Box::pin(RedisStore::check_health(self))
    }

    fn quit(&self) -> BoxFuture<'_, ()> {
        Box::pin(RedisStore::quit(self))
    }

    fn is_closed(&self) -> bool {
        RedisStore::is_closed(self)
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<String>, CacheError>> {
        Box::pin(RedisStore::get(self, key))
    }

    fn get_many<'a>(
        &'a self,
        keys: &'a [&'a str],
    ) -> BoxFuture<'a, Result<Vec<Option<String>>, CacheError>> {
        Box::pin(self.mget(keys))
    }

    fn set<'a>(
        &'a self,
        key: &'a str,
        value: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(RedisStore::set(self, key, value, ttl))
    }

    fn set_if_absent<'a>(
        &'a self,
        key: &'a str,
        value: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<String, CacheError>> {
        Box::pin(RedisStore::set_if_absent(self, key, value, ttl))
    }

    fn eval<'a>(
        &'a self,
        script: &'a LuaScript,
        keys: &'a [&'a str],
        args: Vec<String>,
    ) -> BoxFuture<'a, Result<ScriptReply, CacheError>> {
        let keys = keys.iter().map(|k| self.key(k)).collect();
        Box::pin(RedisStore::eval(self, script, keys, args))
    }

    fn sync<'a>(
        &'a self,
        instance: &'a str,
        items: &'a [SyncItem<'a>],
    ) -> BoxFuture<'a, RoundTrip> {
        Box::pin(self.sync_items(instance, items))
    }

    fn set_later<'a>(
        &'a self,
        key: &'a str,
        until_ms: u64,
        ttl_ms: u64,
    ) -> BoxFuture<'a, Result<u64, CacheError>> {
        Box::pin(self.set_deadline(key, until_ms, ttl_ms))
    }

    fn admit<'a>(
        &'a self,
        token: &'a str,
        checks: &'a [AdmitCheck<'a>],
    ) -> BoxFuture<'a, Result<AdmitReceipt, CacheError>> {
        Box::pin(self.admit_checks(token, checks))
    }

    fn cancel<'a>(&'a self, cancel: &'a PendingCancel) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(self.cancel_admission(cancel))
    }

    fn take_lease<'a>(
        &'a self,
        key: &'a str,
        token: &'a str,
        limit: u64,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, CacheError>> {
        Box::pin(async move {
            let reply = self.lease_script("take", key, token, limit, ttl).await?;
            Ok(int_reply(key, &reply, "an integer")? == 1)
        })
    }

    fn renew_lease<'a>(
        &'a self,
        key: &'a str,
        token: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async move {
            self.lease_script("renew", key, token, 0, ttl)
                .await
                .map(|_| ())
        })
    }

    fn release_lease<'a>(
        &'a self,
        key: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(self.remove_member(key, token))
    }

    fn release_leases<'a>(&'a self, pending: &'a [(String, String)]) -> BoxFuture<'a, Vec<bool>> {
        Box::pin(self.remove_members(pending))
    }

    fn count_leases<'a>(
        &'a self,
        keys: &'a [&'a str],
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<u64>, CacheError>> {
        Box::pin(self.count_members(keys, now_ms))
    }
}

/// The size of one script call's future as the Redis tier builds it, before the store boxes it
/// (see `testing::redis_script_future_size`); 0 if no client could be built.
#[cfg(feature = "test-support")]
pub(crate) fn script_future_size() -> usize {
    let config = RedisConfig::new("redis://127.0.0.1:6379");
    let Ok(store) = RedisStore::new(&config, Arc::new(Health::new(true))) else {
        return 0;
    };
    let future = store.eval(&store.lease, Vec::new(), Vec::new());
    std::mem::size_of_val(&future)
}

/// fred's pipelines have no EVALSHA method; the raw command is hashed on its first key
/// (argument 2) for Redis Cluster.
fn evalsha() -> CustomCommand {
    CustomCommand::new_static("EVALSHA", ClusterHash::Offset(2), false)
}

fn script_args<const K: usize, const A: usize>(
    sha: &str,
    keys: [String; K],
    args: [String; A],
) -> Vec<String> {
    let mut command = Vec::with_capacity(2 + K + A);
    command.push(sha.to_string());
    command.push(K.to_string());
    command.extend(keys);
    command.extend(args);
    command
}

/// A delta as a Redis argument (shortest text that reads back as the same number).
fn num_arg(delta: Num) -> String {
    match delta {
        Num::Int(v) => v.to_string(),
        Num::Float(v) => v.to_string(),
    }
}

/// The key a sync item is about (without the namespace).
fn item_key<'a>(item: &SyncItem<'a>) -> &'a str {
    match *item {
        SyncItem::Push { key, .. }
        | SyncItem::Read { key, .. }
        | SyncItem::ReadDeadline { key }
        | SyncItem::SendDeadline { key, .. } => key,
    }
}

/// A sync item's reply, read as the item's type.
fn decode_item(item: &SyncItem<'_>, value: Value) -> Result<SyncReply, CacheError> {
    match *item {
        SyncItem::Push { key, kind, .. } => decode_push(key, value, kind)
            .map(|(global, ttl_ms)| SyncReply::Pushed { global, ttl_ms }),
        SyncItem::Read { key, kind } => decode_number(key, value, kind).map(SyncReply::Value),
        SyncItem::ReadDeadline { key } | SyncItem::SendDeadline { key, .. } => {
            decode_deadline(key, value).map(SyncReply::Deadline)
        }
    }
}

/// `ferrolite_incr_v2`'s reply: `[value or nil, pttl]`.
fn decode_push(key: &str, value: Value, kind: Kind) -> Result<(Num, Option<u64>), CacheError> {
    match value {
        Value::Array(mut items) if items.len() == 2 => {
            let ttl = items
                .pop()
                .and_then(|t| t.as_i64())
                .and_then(|t| u64::try_from(t).ok());
            let global = decode_number(key, items.pop().unwrap_or(Value::Null), kind)?;
            Ok((global, ttl))
        }
        other => Err(CacheError::UnexpectedReply {
            key: key.to_string(),
            expected: "[value, ttl] from ferrolite_incr_v2",
            got: truncate(&format!("{other:?}")),
        }),
    }
}

/// Decodes `ferrolite_admit_v2`'s `{status, now_ms, (count_i, raw_i)...}`.
fn decode_admission(reply: ScriptReply, n: usize) -> Result<AdmitReceipt, CacheError> {
    let unexpected = |got: &dyn std::fmt::Debug| CacheError::UnexpectedReply {
        key: "ferrolite_admit_v2".into(),
        expected: "[status, now_ms, then a count and a raw value per limit]",
        got: truncate(&format!("{got:?}")),
    };
    let items = match reply {
        ScriptReply::Array(items) if items.len() == 2 + 2 * n => items,
        other => return Err(unexpected(&other)),
    };
    let admitted = match items[0].as_i64() {
        Some(1) => true,
        Some(0) => false,
        _ => return Err(unexpected(&items[0])),
    };
    let now_ms = items[1]
        .as_i64()
        .and_then(|v| u64::try_from(v).ok())
        .ok_or_else(|| unexpected(&items[1]))?;
    let mut counts = Vec::with_capacity(n);
    let mut raw = Vec::with_capacity(n);
    for pair in items[2..].chunks(2) {
        counts.push(
            pair[0]
                .as_f64()
                .filter(|f| f.is_finite())
                .ok_or_else(|| unexpected(&pair[0]))?,
        );
        raw.push(pair[1].as_i64().ok_or_else(|| unexpected(&pair[1]))?);
    }
    Ok(AdmitReceipt {
        admitted,
        counts,
        raw,
        now_ms,
    })
}

/// A script's integer reply for `key` (nil is 0), or a typed error saying what was expected.
fn int_reply(key: &str, reply: &ScriptReply, expected: &'static str) -> Result<i64, CacheError> {
    match reply {
        ScriptReply::Nil => Ok(0),
        other => other.as_i64().ok_or_else(|| CacheError::UnexpectedReply {
            key: key.to_string(),
            expected,
            got: truncate(&format!("{other:?}")),
        }),
    }
}

/// A watched deadline's script reply: nil is 0 (not set), otherwise Unix ms.
fn deadline_reply(key: &str, reply: &ScriptReply) -> Result<u64, CacheError> {
    let expected = "a deadline in Unix milliseconds";
    let value = int_reply(key, reply, expected)?;
    u64::try_from(value).map_err(|_| CacheError::UnexpectedReply {
        key: key.to_string(),
        expected,
        got: value.to_string(),
    })
}

/// Shortens a reply for an error message.
fn truncate(text: &str) -> String {
    const MAX: usize = 64;
    if text.len() <= MAX {
        return text.to_string();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// At most this many keys are read back in one `MGET` of a sync.
const READS_PER_MGET: usize = 512;

/// One command of a sync's pipeline: one item's, or one `MGET` answering several read items
/// (their positions in the sync's items, in the order of its keys).
enum Queued {
    One(usize),
    Reads(Vec<usize>),
}

/// The pipeline's `replies` (one per command of `plan`) as one reply per item of `len` items:
/// an `MGET`'s array is spread over its items, its error given to each of them; an item no
/// command answered is `None`.
fn expand(
    len: usize,
    plan: Vec<Queued>,
    replies: Vec<Result<Value, FredError>>,
) -> Vec<Option<Result<Value, FredError>>> {
    let mut out: Vec<Option<Result<Value, FredError>>> =
        std::iter::repeat_with(|| None).take(len).collect();
    let mut put = |i: usize, reply: Result<Value, FredError>| {
        if let Some(slot) = out.get_mut(i) {
            *slot = Some(reply);
        }
    };
    for (queued, reply) in plan.into_iter().zip(replies) {
        match (queued, reply) {
            (Queued::One(i), reply) => put(i, reply),
            (Queued::Reads(items), Ok(Value::Array(values))) if values.len() == items.len() => {
                for (i, value) in items.into_iter().zip(values) {
                    put(i, Ok(value));
                }
            }
            // A single key's value may come back unwrapped; anything else is each item's
            // unexpected reply (its decoding names the key).
            (Queued::Reads(items), Ok(value)) => {
                for i in items {
                    put(i, Ok(value.clone()));
                }
            }
            (Queued::Reads(items), Err(e)) => {
                for i in items {
                    put(
                        i,
                        Err(FredError::new(e.kind().clone(), e.details().to_string())),
                    );
                }
            }
        }
    }
    out
}

/// The positions of `keys` grouped by their cluster slot, in order of first appearance.
fn by_slot(keys: &[String]) -> Vec<Vec<usize>> {
    // Each slot's place in `groups`: a sync reads thousands of keys spread over as many slots.
    let mut index: std::collections::HashMap<u16, usize> = std::collections::HashMap::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let slot = fred::util::redis_keyslot(key.as_bytes());
        let at = *index.entry(slot).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        if let Some(group) = groups.get_mut(at) {
            group.push(i);
        }
    }
    groups
}

/// Queues an `MGET` of the keys of `full` at `positions` (moved out of `full`, which is not
/// read again).
async fn queue_mget(
    pipe: &Pipeline<Client>,
    full: &mut [String],
    positions: &[usize],
) -> Result<(), FredError> {
    let keys: Vec<String> = positions
        .iter()
        .filter_map(|i| full.get_mut(*i).map(std::mem::take))
        .collect();
    pipe.mget(keys).await
}

/// An MGET reply of `keys`: one value per key (a single key's may come back unwrapped).
fn decode_mget(keys: &[&str], value: Value) -> Result<Vec<Option<String>>, CacheError> {
    let items = match value {
        Value::Array(items) if items.len() == keys.len() => items,
        other if keys.len() == 1 => vec![other],
        other => {
            return Err(CacheError::UnexpectedReply {
                key: "MGET".into(),
                expected: "an array with one entry per key",
                got: truncate(&format!("{other:?}")),
            });
        }
    };
    keys.iter()
        .zip(items)
        .map(|(k, v)| decode_string(k, v))
        .collect()
}

/// A reply that should be a string value or nil.
fn decode_string(key: &str, value: Value) -> Result<Option<String>, CacheError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.to_string())),
        Value::Bytes(b) => {
            String::from_utf8(b.to_vec())
                .map(Some)
                .map_err(|_| CacheError::UnexpectedReply {
                    key: key.to_string(),
                    expected: "UTF-8 text",
                    got: "binary data".into(),
                })
        }
        Value::Integer(i) => Ok(Some(i.to_string())),
        Value::Double(d) => Ok(Some(d.to_string())),
        other => Err(CacheError::UnexpectedReply {
            key: key.to_string(),
            expected: "a string or nil",
            got: truncate(&format!("{other:?}")),
        }),
    }
}

/// The client's reply as a [`ScriptReply`] (no fred type crosses the crate's API).
fn reply_of(value: Value) -> ScriptReply {
    match value {
        Value::Null => ScriptReply::Nil,
        Value::Integer(i) => ScriptReply::Int(i),
        Value::String(s) => ScriptReply::Text(s.to_string()),
        Value::Bytes(b) => ScriptReply::Text(String::from_utf8_lossy(&b).into_owned()),
        Value::Double(d) => ScriptReply::Text(d.to_string()),
        Value::Boolean(b) => ScriptReply::Int(i64::from(b)),
        Value::Array(items) => ScriptReply::Array(items.into_iter().map(reply_of).collect()),
        other => ScriptReply::Other(truncate(&format!("{other:?}"))),
    }
}

/// A watched deadline's reply: nil is 0 (not set), otherwise Unix ms.
fn decode_deadline(key: &str, value: Value) -> Result<u64, CacheError> {
    match decode_number(key, value, Kind::Int)? {
        Num::Int(v) if v >= 0 => Ok(v as u64),
        other => Err(CacheError::UnexpectedReply {
            key: key.to_string(),
            expected: "a deadline in Unix milliseconds",
            got: format!("{other:?}"),
        }),
    }
}

/// A reply that should be a counter of `kind`; nil is 0.
fn decode_number(key: &str, value: Value, kind: Kind) -> Result<Num, CacheError> {
    let expected = match kind {
        Kind::Int => "an integer",
        Kind::Float => "a number",
    };
    let text = match (value, kind) {
        (Value::Null, Kind::Int) => return Ok(Num::Int(0)),
        (Value::Null, Kind::Float) => return Ok(Num::Float(0.0)),
        (Value::Integer(i), Kind::Int) => return Ok(Num::Int(i)),
        (Value::Integer(i), Kind::Float) => return Ok(Num::Float(i as f64)),
        (Value::Double(d), Kind::Float) if d.is_finite() => return Ok(Num::Float(d)),
        (Value::String(s), _) => s.to_string(),
        (Value::Bytes(b), _) => String::from_utf8_lossy(&b).into_owned(),
        (other, _) => {
            return Err(CacheError::UnexpectedReply {
                key: key.to_string(),
                expected,
                got: truncate(&format!("{other:?}")),
            });
        }
    };
    let parsed = match kind {
        Kind::Int => text.trim().parse::<i64>().ok().map(Num::Int),
        Kind::Float => text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .map(Num::Float),
    };
    parsed.ok_or_else(|| CacheError::UnexpectedReply {
        key: key.to_string(),
        expected,
        got: truncate(&format!("{text:?}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_syncs_mget_replies_are_spread_over_their_items() {
        let text = |s: &str| Value::String(s.into());
        let plan = vec![
            Queued::One(1),
            Queued::Reads(vec![0, 3, 2]),
            Queued::Reads(vec![4]),
            Queued::Reads(vec![5, 6]),
            Queued::Reads(vec![7]),
        ];
        let replies = vec![
            Ok(Value::Integer(1)),
            Ok(Value::Array(vec![text("a"), Value::Null, text("c")])),
            Ok(text("e")),
            Err(FredError::new(ErrorKind::IO, "connection reset")),
            Ok(Value::Array(vec![text("x"), text("y")])),
        ];
        let out = expand(9, plan, replies);
        let ok = |i: usize| match out.get(i) {
            Some(Some(Ok(value))) => Some(value.clone()),
            _ => None,
        };
        assert_eq!(ok(0), Some(text("a")));
        assert_eq!(ok(1), Some(Value::Integer(1)));
        assert_eq!(ok(2), Some(text("c")));
        assert_eq!(ok(3), Some(Value::Null));
        assert_eq!(ok(4), Some(text("e")));
        for i in [5, 6] {
            match &out[i] {
                Some(Err(e)) => assert_eq!(e.details(), "connection reset"),
                other => panic!("{other:?}"),
            }
        }
        // An array of the wrong length is the item's (unexpected) reply, decoded as such.
        assert!(matches!(ok(7), Some(Value::Array(_))));
        assert!(out[8].is_none(), "no command answered it");
    }
    use crate::hash_tagged;

    #[test]
    fn transient_refusals_count_as_unavailable_and_command_errors_do_not() {
        for (kind, text) in [
            (ErrorKind::Unknown, "Failed to route command."),
            (
                ErrorKind::Unknown,
                "LOADING Redis is loading the dataset in memory",
            ),
            (ErrorKind::IO, "Connection reset by peer"),
            (ErrorKind::Timeout, "Request timed out."),
        ] {
            assert!(is_unavailable(&FredError::new(kind, text)), "{text}");
        }
        for (kind, text) in [
            (
                ErrorKind::InvalidArgument,
                "WRONGTYPE Operation against a key holding the wrong kind of value",
            ),
            (
                ErrorKind::Unknown,
                "ERR value is not an integer or out of range",
            ),
        ] {
            assert!(!is_unavailable(&FredError::new(kind, text)), "{text}");
        }
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("redis://:hunter2@host:6379/0"),
            "redis://:***@host:6379/0"
        );
        assert_eq!(redact_url("redis://user:pw@host"), "redis://user:***@host");
        assert_eq!(redact_url("redis://host:6379"), "redis://host:6379");
        // Regression (issue 16): a URL missing its `:` was shown whole, password included.
        assert_eq!(redact_url("redis//:hunter2@host:6379"), "***@host:6379");
        // Regression (issue 17): text that is no URL at all may be the password itself.
        assert_eq!(redact_url("hunter2"), "***");
        // Regression (issue 17): a sentinel URL's password in its query was shown.
        assert_eq!(
            redact_url(
                "redis-sentinel://:pw@h:26379/0?sentinelServiceName=m&sentinelPassword=hunter2"
            ),
            "redis-sentinel://:***@h:26379/0?sentinelServiceName=m&sentinelPassword=***"
        );
    }

    #[test]
    fn seq_keys_share_the_counter_slot() {
        assert_eq!(RedisStore::seq_key("p:{d1}:rpm"), "p:{d1}:rpm:seq");
        assert_eq!(RedisStore::seq_key("p:d1:rpm"), "{p:d1:rpm}:seq");
        assert_eq!(RedisStore::seq_key("p:{}:x"), "{p:{}:x}:seq");
        assert_eq!(hash_tagged("d1", ":rpm"), "{d1}:rpm");
        assert_eq!(RedisStore::tag_of("p:{d1}:m:rpm:3"), "p:{d1}");
        assert_eq!(RedisStore::tag_of("p:d1:rpm"), "{p:d1:rpm}");
    }

    #[test]
    fn counter_replies_decode_or_name_the_key() {
        assert_eq!(decode_number("k", Value::Null, Kind::Int), Ok(Num::Int(0)));
        assert_eq!(
            decode_number("k", Value::String("42".into()), Kind::Int),
            Ok(Num::Int(42))
        );
        assert_eq!(
            decode_number("k", Value::String("0.25".into()), Kind::Float),
            Ok(Num::Float(0.25))
        );
        assert_eq!(
            decode_number("k", Value::String("abc".into()), Kind::Int),
            Err(CacheError::UnexpectedReply {
                key: "k".into(),
                expected: "an integer",
                got: "\"abc\"".into()
            })
        );
        assert!(matches!(
            decode_number("k", Value::Array(vec![]), Kind::Float),
            Err(CacheError::UnexpectedReply { .. })
        ));
    }

    #[test]
    fn replies_of_the_wrong_shape_are_typed_errors() {
        let err = decode_admission(ScriptReply::Text("OK".into()), 1)
            .err()
            .unwrap();
        assert!(
            matches!(err, CacheError::UnexpectedReply { ref key, .. } if key == "ferrolite_admit_v2")
        );
        let bad_count = ScriptReply::Array(vec![
            ScriptReply::Int(1),
            ScriptReply::Int(5),
            ScriptReply::Text("x".into()),
            ScriptReply::Int(1),
        ]);
        assert!(decode_admission(bad_count, 1).is_err());
        let cancelled = ScriptReply::Array(vec![ScriptReply::Int(2), ScriptReply::Int(5)]);
        assert!(decode_admission(cancelled, 1).is_err());
        let ok = ScriptReply::Array(vec![
            ScriptReply::Int(0),
            ScriptReply::Int(5),
            ScriptReply::Text("2.5".into()),
            ScriptReply::Int(2),
        ]);
        let decoded = decode_admission(ok, 1).unwrap();
        assert!(!decoded.admitted);
        assert_eq!(decoded.counts, vec![2.5]);
        assert_eq!(decoded.raw, vec![2]);
        assert_eq!(decoded.now_ms, 5);
    }
}
