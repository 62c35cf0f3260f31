//! What the Redis tier and the rest of the cache share whether or not Redis support is built
//! (the `redis` feature): Lua script handles, the outage tracker, key helpers.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A Lua script shipped with ferrolite: its versioned name, its text and its SHA-1. Scripts are
/// run with `EVALSHA` and loaded again when Redis answers `NOSCRIPT` (after a restart or a
/// `SCRIPT FLUSH`). The `_vN` suffix changes whenever the script's contract does, so old and new
/// instances can run side by side during a rolling deploy.
///
/// Crates above ferrolite-cache ship their own scripts this way (`include_str!` of a `.lua`
/// file) and run them with [`Shared::eval`](crate::Shared::eval).
#[derive(Debug, Clone)]
pub struct LuaScript {
    pub(crate) name: &'static str,
    pub(crate) body: &'static str,
    /// The SHA-1 `EVALSHA` names the script by (computed by the Redis tier's client library,
    /// so only with the `redis` feature).
    #[cfg(feature = "redis")]
    pub(crate) sha: String,
}

impl LuaScript {
    /// A script with a versioned name (`ferrolite_budget_reserve_v1`) and its text.
    pub fn new(name: &'static str, body: &'static str) -> Self {
        LuaScript {
            name,
            body,
            #[cfg(feature = "redis")]
            sha: fred::util::sha1_hash(body),
        }
    }

    /// The script's versioned name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The script's text.
    pub fn body(&self) -> &'static str {
        self.body
    }
}

/// Tracks whether Redis is reachable, so that an outage is logged once (and counted once in the
/// `ferrolite_cache_redis_outages_total` metric) rather than on every failed command.
#[derive(Debug, Default)]
pub(crate) struct Health {
    down: AtomicBool,
    outages: AtomicU64,
    errors: AtomicU64,
    /// Whether the cache serves its local view during an outage (the log line says which).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))] // recorded by the Redis tier only
    fail_open: bool,
}

impl Health {
    /// A tracker for a cache that serves its local view during an outage (`fail_open`) or not.
    pub(crate) fn new(fail_open: bool) -> Self {
        Health {
            fail_open,
            ..Health::default()
        }
    }

    pub(crate) fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    pub(crate) fn outages(&self) -> u64 {
        self.outages.load(Ordering::Relaxed)
    }

    pub(crate) fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// A command reached the shared tier: an outage, if there was one, is over.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))] // recorded by the Redis tier only
    pub(crate) fn record_ok(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::info!("Redis reachable again; queued deltas are being flushed");
        }
    }

    /// A command could not reach the shared tier: counted, and an outage starts (logged once).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))] // recorded by the Redis tier only
    pub(crate) fn record_unavailable(&self, operation: &'static str, reason: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("ferrolite_cache_redis_errors_total").increment(1);
        if !self.down.swap(true, Ordering::Relaxed) {
            self.outages.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("ferrolite_cache_redis_outages_total").increment(1);
            if self.fail_open {
                tracing::warn!(
                    operation,
                    reason,
                    "Redis unreachable; serving from this instance's local view (limits now hold per instance) and keeping deltas until it is back"
                );
            } else {
                tracing::warn!(
                    operation,
                    reason,
                    "Redis unreachable; the cache is fail-closed: operations that need the shared state are refused until it is back"
                );
            }
        }
    }
}

/// The URL with its passwords (user information, `...password=` query parameters) replaced
/// by `***`, for error messages and logs; text that is no URL is `***` up to its host.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        // Not a URL (a missing `:` in `redis//:pw@host`): whatever precedes the host may be a
        // password, and without an `@` the whole text may be one (a password written where the
        // URL goes).
        return match url.rsplit_once('@') {
            Some((_, host)) => format!("***@{host}"),
            None => "***".to_string(),
        };
    };
    // A query may carry passwords too (a sentinel URL's `sentinelPassword`).
    let (address, query) = match url.split_once('?') {
        Some((address, query)) => (address, Some(query)),
        None => (url, None),
    };
    let rest = address.get(scheme_end + 3..).unwrap_or("");
    let mut out = match rest.rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}://{}:***@{}", &url[..scheme_end], user, &rest[at + 1..])
        }
        None => address.to_string(),
    };
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if name.to_ascii_lowercase().contains("password") => {
                    format!("{name}=***")
                }
                _ => pair.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
}

/// Builds `{tag}rest`, a key that Redis Cluster places by `tag` alone, so that every key of one
/// multi-key script can share a slot.
pub fn hash_tagged(tag: &str, rest: &str) -> String {
    let mut key = String::with_capacity(tag.len() + rest.len() + 2);
    key.push('{');
    key.push_str(tag);
    key.push('}');
    key.push_str(rest);
    key
}
