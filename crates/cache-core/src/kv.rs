//! The values facet ([`DualCache::kv`]): strings with a TTL, kept in both tiers.

use std::sync::Arc;
use std::time::Duration;

use crate::dual::{DualCache, Inner};
use crate::error::CacheError;

/// The cache's values (see [`DualCache::kv`]): written to both tiers, read locally first and
/// from Redis on a miss.
#[derive(Clone, Copy)]
pub struct Kv<'a> {
    inner: &'a Inner,
}

impl std::fmt::Debug for Kv<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kv").finish_non_exhaustive()
    }
}

impl DualCache {
    /// The values: [`get`](Kv::get), [`set`](Kv::set), [`batch_get`](Kv::batch_get),
    /// [`set_if_absent`](Kv::set_if_absent), [`get_local`](Kv::get_local).
    pub fn kv(&self) -> Kv<'_> {
        Kv {
            inner: self.inner(),
        }
    }
}

/// An error unless `ttl` is at least 1 ms.
fn check_ttl(key: &str, ttl: Duration) -> Result<(), CacheError> {
    if ttl.is_zero() {
        return Err(CacheError::InvalidArgument {
            field: "ttl",
            value: format!("{ttl:?} (key `{key}`)"),
            reason: "a value needs a TTL of at least 1 ms",
        });
    }
    Ok(())
}

impl Kv<'_> {
    /// Stores `value` for `ttl` in both tiers. While Redis is down a fail-open cache keeps the
    /// value locally and returns `Ok`; a fail-closed one returns [`CacheError::Unavailable`].
    pub async fn set(self, key: &str, value: &str, ttl: Duration) -> Result<(), CacheError> {
        self.inner.refuse("set")?;
        check_ttl(key, ttl)?;
        self.set_local(key, Some(Arc::from(value)), ttl).await;
        match self.inner.remote() {
            Some(store) => match store.set(key, value, ttl).await {
                Err(CacheError::Unavailable { .. }) if self.inner.fail_open() => Ok(()),
                other => other,
            },
            None => Ok(()),
        }
    }

    async fn set_local(self, key: &str, value: Option<Arc<str>>, ttl: Duration) {
        let now = self.inner.clock().now_ms();
        self.inner.values().insert(key, value, ttl, now).await;
    }

    /// The local tier's value, if present and not expired.
    pub async fn get_local(self, key: &str) -> Option<Arc<str>> {
        self.lookup_local(key).await.flatten()
    }

    /// The local tier's entry: `Some(None)` is a cached "Redis has nothing".
    async fn lookup_local(self, key: &str) -> Option<Option<Arc<str>>> {
        let now = self.inner.clock().now_ms();
        self.inner.values().lookup(key, now).await
    }

    /// Whether a read must skip Redis: it is known to be down. Fail-open answers from the local
    /// tier; fail-closed refuses at once (no caller waits for a command timeout).
    fn skip_remote(self, operation: &'static str) -> Result<bool, CacheError> {
        if !self.inner.is_remote() {
            return Ok(true);
        }
        if self.inner.remote_down() {
            self.inner.refuse(operation)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// The value of `key`: local first, then Redis on a miss. What Redis answers — a value or
    /// "nothing" — is kept locally for `remote_read_ttl`, so a key that is normally absent costs
    /// one round trip per `remote_read_ttl`, not one per call. While Redis is known to be down
    /// a fail-open cache answers from the local tier at once and a fail-closed one refuses.
    pub async fn get(self, key: &str) -> Result<Option<Arc<str>>, CacheError> {
        if let Some(value) = self.lookup_local(key).await {
            return Ok(value);
        }
        if self.skip_remote("get")? {
            return Ok(None);
        }
        let Some(store) = self.inner.remote() else {
            return Ok(None);
        };
        match store.get(key).await {
            Ok(value) => {
                let value: Option<Arc<str>> = value.map(Arc::from);
                self.set_local(key, value.clone(), self.inner.config().remote_read_ttl)
                    .await;
                Ok(value)
            }
            Err(CacheError::Unavailable { .. }) if self.inner.fail_open() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The values of several keys, in order: local hits (and cached misses), then one `MGET`
    /// for the rest, whose answers are kept locally like [`get`](Self::get)'s.
    pub async fn batch_get(self, keys: &[&str]) -> Result<Vec<Option<Arc<str>>>, CacheError> {
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
        if missing.is_empty() || self.skip_remote("batch_get")? {
            return Ok(out);
        }
        let Some(store) = self.inner.remote() else {
            return Ok(out);
        };
        let miss_keys: Vec<&str> = missing.iter().map(|i| keys[*i]).collect();
        let values = match store.get_many(&miss_keys).await {
            Ok(values) => values,
            Err(CacheError::Unavailable { .. }) if self.inner.fail_open() => return Ok(out),
            Err(e) => return Err(e),
        };
        for (i, value) in missing.into_iter().zip(values) {
            let value: Option<Arc<str>> = value.map(Arc::from);
            self.set_local(keys[i], value.clone(), self.inner.config().remote_read_ttl)
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
        self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<Arc<str>, CacheError> {
        self.inner.refuse("set_if_absent")?;
        if let Some(store) = self.inner.remote() {
            match store.set_if_absent(key, value, ttl).await {
                Ok(stored) => {
                    let stored: Arc<str> = Arc::from(stored);
                    self.set_local(key, Some(Arc::clone(&stored)), ttl).await;
                    return Ok(stored);
                }
                Err(CacheError::Unavailable { .. }) if self.inner.fail_open() => {}
                Err(e) => return Err(e),
            }
        }
        let now = self.inner.clock().now_ms();
        Ok(self
            .inner
            .values()
            .insert_if_absent(key, value, ttl, now)
            .await)
    }
}
