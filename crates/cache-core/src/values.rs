//! The local tier of values: moka with a TTL per entry, read against the cache's [`Clock`] so
//! that TTLs follow tokio's paused time in tests.
//!
//! [`Clock`]: crate::Clock

use std::sync::Arc;
use std::time::Duration;

/// A value in the local tier, with the clock time at which it stops being served.
#[derive(Debug, Clone)]
struct LocalValue {
    /// `None`: Redis had nothing (negative caching for `remote_read_ttl`).
    value: Option<Arc<str>>,
    ttl: Duration,
    expires_at_ms: u64,
}

/// moka evicts entries after their own TTL; reads also check `expires_at_ms` against the
/// cache's clock.
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

/// The values kept in this process (see the module documentation).
pub(crate) struct LocalValues {
    cache: moka::future::Cache<String, LocalValue>,
}

impl LocalValues {
    /// A tier holding at most `capacity` values.
    pub(crate) fn new(capacity: u64) -> Self {
        LocalValues {
            cache: moka::future::Cache::builder()
                .max_capacity(capacity)
                .expire_after(ValueExpiry)
                .build(),
        }
    }

    /// Keeps `value` (`None`: a cached "Redis has nothing") for `ttl` from `now_ms`.
    pub(crate) async fn insert(
        &self,
        key: &str,
        value: Option<Arc<str>>,
        ttl: Duration,
        now_ms: u64,
    ) {
        let entry = LocalValue {
            value,
            ttl,
            expires_at_ms: now_ms.saturating_add(ttl.as_millis() as u64),
        };
        self.cache.insert(key.to_string(), entry).await;
    }

    /// The entry of `key` if it has not expired at `now_ms`: `Some(None)` is a cached "Redis
    /// has nothing".
    pub(crate) async fn lookup(&self, key: &str, now_ms: u64) -> Option<Option<Arc<str>>> {
        let entry = self.cache.get(key).await?;
        (now_ms < entry.expires_at_ms).then_some(entry.value)
    }

    /// Keeps `value` for `ttl` unless `key` holds a live value; the value now held. One writer
    /// at a time in this process: moka's entry API inserts only when absent.
    pub(crate) async fn insert_if_absent(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
        now_ms: u64,
    ) -> Arc<str> {
        let candidate = LocalValue {
            value: Some(Arc::from(value)),
            ttl,
            expires_at_ms: now_ms.saturating_add(ttl.as_millis() as u64),
        };
        let entry = self
            .cache
            .entry(key.to_string())
            .and_upsert_with(|existing| async move {
                match existing.map(|e| e.into_value()) {
                    Some(current) if now_ms < current.expires_at_ms && current.value.is_some() => {
                        current
                    }
                    _ => candidate,
                }
            })
            .await;
        entry.into_value().value.unwrap_or_else(|| Arc::from(value))
    }
}
