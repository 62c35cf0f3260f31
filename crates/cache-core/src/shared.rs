//! The shared-tier facet ([`DualCache::shared`]): the tier every instance shares, on its own —
//! whether it is configured and up, values kept there without a local copy, and the scripts of
//! the crates above.

use std::time::Duration;

use crate::dual::{DualCache, Inner};
use crate::error::CacheError;
use crate::remote::ScriptReply;
use crate::script::LuaScript;

/// The shared tier alone (see [`DualCache::shared`]).
#[derive(Clone, Copy)]
pub struct Shared<'a> {
    inner: &'a Inner,
}

impl std::fmt::Debug for Shared<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("configured", &self.is_configured())
            .field("up", &self.is_up())
            .finish()
    }
}

impl DualCache {
    /// The shared tier (Redis) on its own: [`is_configured`](Shared::is_configured),
    /// [`is_up`](Shared::is_up), [`get`](Shared::get) / [`set`](Shared::set) without a local
    /// copy, [`eval`](Shared::eval) for a crate's own script.
    pub fn shared(&self) -> Shared<'_> {
        Shared {
            inner: self.inner(),
        }
    }
}

impl<'a> Shared<'a> {
    /// Whether a Redis tier is configured.
    pub fn is_configured(self) -> bool {
        self.inner.is_remote()
    }

    /// Whether Redis is configured and currently reachable (as far as the last command knew).
    pub fn is_up(self) -> bool {
        self.inner.is_remote() && !self.inner.remote_down()
    }

    /// Whether the cache serves its local view while Redis is down.
    pub fn is_fail_open(self) -> bool {
        self.inner.fail_open()
    }

    /// This instance's id in the flush protocol (unique per `DualCache`).
    pub fn instance_id(self) -> &'a str {
        self.inner.instance_id()
    }

    /// Stores `value` for `ttl` in Redis only, without a local copy (for values a caller keeps
    /// in its own, differently bounded, local tier: response bodies). Whether Redis took it:
    /// `false` without Redis or while it is down. A Redis error other than unavailability is
    /// returned.
    pub async fn set(self, key: &str, value: &str, ttl: Duration) -> Result<bool, CacheError> {
        if ttl.is_zero() {
            return Err(CacheError::InvalidArgument {
                field: "ttl",
                value: format!("{ttl:?} (key `{key}`)"),
                reason: "a value needs a TTL of at least 1 ms",
            });
        }
        let Some(store) = self.inner.remote() else {
            return Ok(false);
        };
        if self.inner.remote_down() {
            return Ok(false);
        }
        match store.set(key, value, ttl).await {
            Ok(()) => Ok(true),
            Err(CacheError::Unavailable { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The value of `key` in Redis only, without keeping a local copy; `None` without Redis,
    /// while it is down, or when it has none.
    pub async fn get(self, key: &str) -> Result<Option<String>, CacheError> {
        let Some(store) = self.inner.remote() else {
            return Ok(None);
        };
        if self.inner.remote_down() {
            return Ok(None);
        }
        match store.get(key).await {
            Ok(value) => Ok(value),
            Err(CacheError::Unavailable { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Runs `script` in Redis (by SHA, loading it on `NOSCRIPT`) with `keys` (namespaced like
    /// every other key) and `args`; the reply as a [`ScriptReply`] for the script's own typed
    /// decoder. `Ok(None)` when no Redis is configured. While Redis is down,
    /// [`CacheError::Unavailable`] at once, and the caller decides how to degrade.
    pub async fn eval(
        self,
        script: &LuaScript,
        keys: &[&str],
        args: Vec<String>,
    ) -> Result<Option<ScriptReply>, CacheError> {
        let Some(store) = self.inner.remote() else {
            return Ok(None);
        };
        if self.inner.remote_down() {
            return Err(CacheError::Unavailable {
                operation: "script",
                reason: "Redis is down".into(),
            });
        }
        store.eval(script, keys, args).await.map(Some)
    }
}
