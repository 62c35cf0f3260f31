//! The leases facet ([`DualCache::leases`]): shared slots with a limit (max parallel requests,
//! half-open probes), each slot taken for a time to live and given back when its [`Lease`]
//! drops.
//!
//! In Redis a key's slots are a sorted set scored by expiry (`ferrolite_lease_v1`, Redis server
//! time): a lease that is never given back — its instance crashed — expires after its TTL, so
//! a crash can never pin a deployment as busy. A holder renews its lease while it works
//! ([`Lease::renew`]). Without Redis (or with Redis down and the cache fail-open) the slots are
//! counted in this process.

use std::sync::Arc;
use std::time::Duration;

use crate::dual::{DualCache, Inner};
use crate::error::CacheError;

/// The cache's leases (see [`DualCache::leases`]).
#[derive(Clone, Copy)]
pub struct Leases<'a> {
    inner: &'a Arc<Inner>,
}

impl std::fmt::Debug for Leases<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases").finish_non_exhaustive()
    }
}

impl DualCache {
    /// The leases: [`take`](Leases::take) a shared slot, [`take_local`](Leases::take_local) one
    /// of this process only.
    pub fn leases(&self) -> Leases<'_> {
        Leases {
            inner: self.inner(),
        }
    }
}

/// One slot held. Dropping it gives the slot back: at once in this process, and in Redis with
/// the next sync (a lease whose instance crashed expires after its TTL instead).
#[must_use = "the slot is given back when the lease drops"]
pub struct Lease {
    key: String,
    token: Option<String>,
    ttl: Duration,
    cache: Arc<Inner>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("key", &self.key)
            .field("shared", &self.token.is_some())
            .finish()
    }
}

impl Lease {
    /// Extends the lease to a full TTL from now (call it while the work runs longer than a
    /// fraction of the TTL). A local lease needs no renewal.
    pub async fn renew(&self) -> Result<(), CacheError> {
        let (Some(token), Some(store)) = (&self.token, self.cache.remote()) else {
            return Ok(());
        };
        store.renew_lease(&self.key, token, self.ttl).await
    }

    /// Gives the slot back now (in Redis, one command): what a holder whose work ended calls,
    /// so the slot is free for every instance at once. Dropping the lease instead gives it back
    /// with the next sync.
    pub async fn release(mut self) {
        let (Some(token), Some(store)) = (self.token.take(), self.cache.remote()) else {
            return; // local: Drop gives it back
        };
        let key = std::mem::take(&mut self.key);
        if self.cache.remote_down() || store.release_lease(&key, &token).await.is_err() {
            self.cache.queue_release(key, token);
        }
    }

    /// Whether the slot is shared through Redis (and so needs renewing while held).
    pub fn is_shared(&self) -> bool {
        self.token.is_some()
    }

    /// The slots' key.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.key.is_empty() {
            return; // released already
        }
        match self.token.take() {
            Some(token) => self
                .cache
                .queue_release(std::mem::take(&mut self.key), token),
            None => self.cache.give_back_local_slot(&self.key),
        }
    }
}

impl Leases<'_> {
    /// Takes one of `limit` slots under `key` for `ttl`: `Ok(None)` when all are taken. With
    /// Redis the slots are shared by every instance (one script call); a reply that is lost
    /// leaves at most a lease that expires after `ttl`. While Redis is down a fail-open cache
    /// counts slots in this process, a fail-closed one refuses.
    pub async fn take(
        self,
        key: &str,
        limit: u64,
        ttl: Duration,
    ) -> Result<Option<Lease>, CacheError> {
        if key.is_empty() || ttl.is_zero() {
            return Err(CacheError::InvalidArgument {
                field: if key.is_empty() { "key" } else { "ttl" },
                value: if key.is_empty() {
                    "\"\"".into()
                } else {
                    "0s".into()
                },
                reason: "a lease needs a key and a TTL of at least 1 ms",
            });
        }
        let inner = self.inner;
        let lease = |token: Option<String>| Lease {
            key: key.to_string(),
            token,
            ttl,
            cache: Arc::clone(inner),
        };
        let local = || Ok(inner.take_local_slot(key, limit).then(|| lease(None)));
        let Some(store) = inner.remote() else {
            return local();
        };
        if inner.remote_down() {
            inner.refuse("lease")?;
            return local();
        }
        let token = inner.next_token();
        match store.take_lease(key, &token, limit, ttl).await {
            Ok(taken) => Ok(taken.then(|| lease(Some(token)))),
            Err(CacheError::Unavailable { .. }) if inner.fail_open() => local(),
            Err(e) => Err(e),
        }
    }

    /// Takes one of `limit` slots under `key` in this process only (no Redis, whatever the
    /// configuration): a cap that holds per instance.
    pub fn take_local(self, key: &str, limit: u64) -> Option<Lease> {
        self.inner.take_local_slot(key, limit).then(|| Lease {
            key: key.to_string(),
            token: None,
            ttl: Duration::from_secs(1),
            cache: Arc::clone(self.inner),
        })
    }

    /// The slots held now under each of `keys`, by every instance: with Redis one round trip
    /// for all the keys (the leases not yet expired), without it (or while it is down) the
    /// slots taken in this process.
    pub async fn held(self, keys: &[&str]) -> Result<Vec<u64>, CacheError> {
        let inner = self.inner;
        let local = || keys.iter().map(|k| inner.local_slots_taken(k)).collect();
        let Some(store) = inner.remote() else {
            return Ok(local());
        };
        if keys.is_empty() || inner.remote_down() {
            return Ok(local());
        }
        // Leases expire by Redis server time: compared with the wall clock, not the cache's.
        let now_ms = crate::clock::Clock::now_ms(&crate::clock::SystemClock);
        match store.count_leases(keys, now_ms).await {
            Ok(counts) => Ok(counts),
            Err(CacheError::Unavailable { .. }) if inner.fail_open() => Ok(local()),
            Err(e) => Err(e),
        }
    }

    /// Slots of `key` taken in this process without Redis (fail-open or no Redis).
    pub fn taken_locally(self, key: &str) -> u64 {
        self.inner.local_slots_taken(key)
    }
}
