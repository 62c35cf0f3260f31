//! The Redis tier: a fred client set up so that an outage never hangs a caller, the key
//! namespace, Lua scripts run by SHA, and typed decoding of replies.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fred::prelude::{
    Builder, Client, ClientLike, Config, Error as FredError, ErrorKind, KeysInterface,
    LuaInterface, Options, ReconnectPolicy,
};
use fred::types::Value;

use crate::CacheError;
use crate::ScriptReply;
use crate::config::RedisConfig;
use crate::counter::{Kind, Num};
use crate::error::truncate;
pub(crate) use crate::script::{Health, LuaScript, redact_url};

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

pub(crate) struct RedisStore {
    client: Client,
    prefix: String,
    fast: Options,
    /// Where to probe for a quick "connection refused" at startup (host, port).
    probe: Vec<(String, u16)>,
    connect_timeout: Duration,
    pub(crate) incr: LuaScript,
    pub(crate) admit: LuaScript,
    pub(crate) admit_cancel: LuaScript,
    pub(crate) set_later: LuaScript,
    pub(crate) lease: LuaScript,
    pub(crate) health: Health,
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
    /// Parses the URL and builds the client (no I/O yet).
    pub(crate) fn new(config: &RedisConfig, fail_open: bool) -> Result<Self, CacheError> {
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
            health: Health::new(fail_open),
            closed: AtomicBool::new(false),
        })
    }

    /// Starts connecting and waits up to `wait` for the first connection. Returns whether it
    /// connected; the client keeps reconnecting in the background either way.
    pub(crate) async fn connect(&self, wait: Duration) -> bool {
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
    pub(crate) async fn check_health(&self) {
        let ping: Result<Value, _> = self.client.get(self.key("ferrolite:health")).await;
        match ping {
            Ok(_) => self.health.record_ok(),
            Err(e) => {
                self.error("health check", "", &e);
            }
        }
    }

    /// Closes the connection (once).
    pub(crate) async fn quit(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            let _ = self.client.quit().await;
        }
    }

    /// Whether [`quit`](Self::quit) ran.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The namespaced key.
    pub(crate) fn key(&self, key: &str) -> String {
        let mut full = String::with_capacity(self.prefix.len() + key.len());
        full.push_str(&self.prefix);
        full.push_str(key);
        full
    }

    /// A prefix in the hash slot of `full_key`: its `{hash tag}` section (with whatever
    /// precedes it), or the whole key in braces when it has none.
    pub(crate) fn tag_of(full_key: &str) -> String {
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
    pub(crate) fn seq_key(full_key: &str) -> String {
        if has_hash_tag(full_key) {
            format!("{full_key}:seq")
        } else {
            format!("{{{full_key}}}:seq")
        }
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// Maps a fred error to a typed error and updates the health state.
    pub(crate) fn error(
        &self,
        operation: &'static str,
        key: &str,
        error: &FredError,
    ) -> CacheError {
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
    pub(crate) async fn get(&self, key: &str) -> Result<Option<String>, CacheError> {
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
    pub(crate) async fn remove_member(&self, key: &str, member: &str) -> Result<(), CacheError> {
        let reply: Result<Value, _> = self
            .client
            .with_options(&self.fast)
            .custom(
                fred::types::CustomCommand::new_static(
                    "ZREM",
                    fred::types::ClusterHash::FirstKey,
                    false,
                ),
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
    pub(crate) async fn set(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<(), CacheError> {
        self.set_px("set", key, value, ttl, false).await.map(|_| ())
    }

    /// `SET key value NX PX ttl GET` with fail-fast options: the value now stored (the one given
    /// if the key was absent, else the one that was there).
    pub(crate) async fn set_if_absent(
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
    pub(crate) async fn mget(&self, keys: &[&str]) -> Result<Vec<Option<String>>, CacheError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let full: Vec<String> = keys.iter().map(|k| self.key(k)).collect();
        let reply: Result<Value, _> = self.client.with_options(&self.fast).mget(full).await;
        let value = match reply {
            Ok(v) => {
                self.health.record_ok();
                v
            }
            Err(e) => return Err(self.error("mget", keys.first().copied().unwrap_or(""), &e)),
        };
        let items = match value {
            Value::Array(items) if items.len() == keys.len() => items,
            // A single key comes back unwrapped from some servers.
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

    /// Runs a script by SHA with fail-fast options, loading it on `NOSCRIPT`.
    pub(crate) async fn eval(
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
    pub(crate) async fn remove_members(&self, pending: &[(String, String)]) -> Vec<bool> {
        use fred::types::{ClusterHash, CustomCommand};
        let pipe = self.client().pipeline();
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

    /// `SCRIPT LOAD`s a script — on every primary of a Redis Cluster, where each node keeps its
    /// own script cache (a script loaded on one node answers `NOSCRIPT` on the others).
    pub(crate) async fn load(&self, script: &LuaScript) -> Result<(), CacheError> {
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

/// A reply that should be a string value or nil.
pub(crate) fn decode_string(key: &str, value: Value) -> Result<Option<String>, CacheError> {
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
pub(crate) fn reply_of(value: Value) -> ScriptReply {
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
pub(crate) fn decode_deadline(key: &str, value: Value) -> Result<u64, CacheError> {
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
pub(crate) fn decode_number(key: &str, value: Value, kind: Kind) -> Result<Num, CacheError> {
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
}
