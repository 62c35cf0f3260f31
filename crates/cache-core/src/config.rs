//! Settings of the cache and of its Redis connection.

use std::time::Duration;

use crate::error::CacheError;

/// What the cache does while Redis is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailureMode {
    /// Serve from the local view, keep every delta, reconnect and flush when Redis is back
    /// (default).
    #[default]
    FailOpen,
    /// Refuse operations that need the shared view ([`crate::CacheError::Unavailable`]).
    FailClosed,
}

/// The longest wait between two attempts to reconnect to a Redis that went away (the attempts
/// back off from 100 ms, doubling, up to this). A caller refused during an outage can expect
/// the shared state back at most this long after Redis is.
pub const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(5);

/// How to reach Redis.
#[derive(Clone)]
pub struct RedisConfig {
    /// `redis://[:password@]host:port[/db]` or `rediss://...`; cluster and sentinel URLs as fred
    /// accepts them (`redis-cluster://`, `redis-sentinel://`).
    pub url: String,
    /// Prepended to every key, e.g. `ferrolite:`; must not contain `{` or `}` (hash tags belong
    /// to the keys).
    pub key_prefix: String,
    /// Timeout of every command; a Redis that stops answering fails a command after this long
    /// instead of hanging it. Default 250 ms.
    pub command_timeout: Duration,
    /// Timeout of a TCP connect (and TLS handshake). Default 1 s.
    pub connect_timeout: Duration,
    /// How long startup waits for the first connection before carrying on (fail-open) or
    /// failing (fail-closed). Default 2 s.
    pub initial_connect_wait: Duration,
}

impl std::fmt::Debug for RedisConfig {
    /// The URL's password is never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &crate::script::redact_url(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("command_timeout", &self.command_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("initial_connect_wait", &self.initial_connect_wait)
            .finish()
    }
}

impl RedisConfig {
    /// Settings for `url` with the defaults above and the prefix `ferrolite:`.
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            key_prefix: "ferrolite:".to_string(),
            command_timeout: Duration::from_millis(250),
            connect_timeout: Duration::from_secs(1),
            initial_connect_wait: Duration::from_secs(2),
        }
    }

    /// Settings for a Redis Cluster given as a list of `host:port` nodes (any one is enough to
    /// discover the others; listing several survives one being down at startup). Builds
    /// `redis-cluster://first?node=second&node=...`, the form fred reads.
    pub fn cluster<S: AsRef<str>>(nodes: &[S]) -> Self {
        let mut url = String::from("redis-cluster://");
        for (i, node) in nodes.iter().enumerate() {
            match i {
                0 => url.push_str(node.as_ref()),
                1 => {
                    url.push_str("?node=");
                    url.push_str(node.as_ref());
                }
                _ => {
                    url.push_str("&node=");
                    url.push_str(node.as_ref());
                }
            }
        }
        Self::new(url)
    }

    /// The same settings with another key prefix.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Checks the URL without connecting: a scheme Redis speaks and (with the `redis`
    /// feature) a URL the client can parse. The same check runs when the cache connects, so a
    /// URL that passes here is not refused there for its form. The error shows the URL with its
    /// password replaced by `***`.
    pub fn check_url(&self) -> Result<(), CacheError> {
        let invalid = |reason: String| CacheError::InvalidRedisUrl {
            url: crate::script::redact_url(&self.url),
            reason,
        };
        let scheme = self.url.split("://").next().unwrap_or("");
        if !self.url.contains("://")
            || !matches!(
                scheme,
                "redis"
                    | "rediss"
                    | "redis-cluster"
                    | "rediss-cluster"
                    | "redis-sentinel"
                    | "rediss-sentinel"
            )
        {
            let shown = if self.url.contains("://") {
                scheme.to_string()
            } else {
                "none".to_string()
            };
            return Err(invalid(format!(
                "the scheme must be redis://, rediss://, redis-cluster:// or redis-sentinel://, got {shown}"
            )));
        }
        #[cfg(feature = "redis")]
        {
            fred::prelude::Config::from_url(&self.url).map_err(|e| {
                let mut reason = e.details().to_string();
                // The parser's message may quote the user information: never show it.
                let rest = self.url.split_once("://").map_or("", |(_, rest)| rest);
                if let Some((userinfo, _)) = rest.rsplit_once('@') {
                    if !userinfo.is_empty() {
                        reason = reason.replace(userinfo, "***");
                    }
                }
                invalid(reason)
            })?;
        }
        Ok(())
    }
}

/// Settings of a [`crate::DualCache`].
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// The shared tier; `None` runs everything in this process.
    pub redis: Option<RedisConfig>,
    /// How often queued deltas are pushed and tracked counters read back. Default 100 ms.
    pub sync_interval: Duration,
    /// Bound on counter keys this instance tracks (and so on the keys with queued deltas).
    /// Default 100,000.
    pub max_tracked_keys: usize,
    /// Bound on plain values kept in the local tier. Default 100,000.
    pub max_local_values: u64,
    /// How long a value read from Redis is trusted locally before it is read again.
    /// Default 100 ms.
    pub remote_read_ttl: Duration,
    /// Fail-open or fail-closed while Redis is down.
    pub failure_mode: FailureMode,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            redis: None,
            sync_interval: Duration::from_millis(100),
            max_tracked_keys: 100_000,
            max_local_values: 100_000,
            remote_read_ttl: Duration::from_millis(100),
            failure_mode: FailureMode::FailOpen,
        }
    }
}

impl CacheConfig {
    /// Default settings with Redis at `url`.
    pub fn with_redis(url: impl Into<String>) -> Self {
        CacheConfig {
            redis: Some(RedisConfig::new(url)),
            ..CacheConfig::default()
        }
    }

    /// Checks every setting, naming the first one out of range.
    pub fn validate(&self) -> Result<(), CacheError> {
        let positive = |field: &'static str, d: Duration| {
            if d.is_zero() {
                Err(CacheError::InvalidConfig {
                    field,
                    value: format!("{d:?}"),
                    reason: "must be greater than zero",
                })
            } else {
                Ok(())
            }
        };
        positive("sync_interval", self.sync_interval)?;
        positive("remote_read_ttl", self.remote_read_ttl)?;
        if self.max_tracked_keys == 0 {
            return Err(CacheError::InvalidConfig {
                field: "max_tracked_keys",
                value: "0".into(),
                reason: "must be at least 1",
            });
        }
        if let Some(redis) = &self.redis {
            redis.check_url()?;
            positive("redis.command_timeout", redis.command_timeout)?;
            positive("redis.connect_timeout", redis.connect_timeout)?;
            if redis.key_prefix.contains(['{', '}']) {
                return Err(CacheError::InvalidConfig {
                    field: "redis.key_prefix",
                    value: redis.key_prefix.clone(),
                    reason: "must not contain `{` or `}`; put hash tags in the keys",
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod redaction_tests {
    use super::*;

    #[test]
    fn a_redis_url_password_is_never_printed() {
        let config = RedisConfig::new("redis://:hunter2@cache.internal:6379/0");
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("redis://:***@cache.internal:6379/0"),
            "{shown}"
        );
        use crate::script::redact_url;
        assert_eq!(redact_url("rediss://user:pw@h:1"), "rediss://user:***@h:1");
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
    }
}
