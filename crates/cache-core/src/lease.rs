//! Leases: shared slots with a limit (max parallel requests, half-open probes), each slot taken
//! for a time to live and given back when its [`Lease`] drops.
//!
//! In Redis a key's slots are a sorted set scored by expiry (`ferrolite_lease_v1`, Redis server
//! time): a lease that is never given back — its instance crashed — expires after its TTL, so
//! a crash can never pin a deployment as busy. A holder renews its lease while it works
//! ([`Lease::renew`]). Without Redis (or with Redis down and the cache fail-open) the slots are
//! counted in this process.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use parking_lot::Mutex;

use crate::CacheError;
use crate::dual::{DualCache, Inner};

/// Slots taken in this process, by key (the local tier of leases).
#[derive(Debug, Default)]
pub(crate) struct LocalSlots(Mutex<HashMap<String, u64>>);

impl LocalSlots {
    fn take(&self, key: &str, limit: u64) -> bool {
        let mut slots = self.0.lock();
        // Look up first: no key is allocated for a slot that is counted already.
        let taken = match slots.get_mut(key) {
            Some(taken) => taken,
            None => slots.entry(key.to_string()).or_insert(0),
        };
        if *taken >= limit {
            return false;
        }
        *taken += 1;
        true
    }

    fn give_back(&self, key: &str) {
        let mut slots = self.0.lock();
        if let Some(taken) = slots.get_mut(key) {
            *taken = taken.saturating_sub(1);
            if *taken == 0 {
                slots.remove(key);
            }
        }
    }

    /// Slots of `key` taken here.
    pub(crate) fn taken(&self, key: &str) -> u64 {
        self.0.lock().get(key).copied().unwrap_or(0)
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
        let (Some(token), Some(redis)) = (&self.token, &self.cache.redis) else {
            return Ok(());
        };
        redis
            .eval(
                &redis.lease,
                vec![redis.key(&self.key)],
                vec![
                    "renew".into(),
                    token.clone(),
                    "0".into(),
                    self.ttl.as_millis().to_string(),
                ],
            )
            .await
            .map(|_| ())
    }

    /// Gives the slot back now (in Redis, one command): what a holder whose work ended calls,
    /// so the slot is free for every instance at once. Dropping the lease instead gives it back
    /// with the next sync.
    pub async fn release(mut self) {
        let (Some(token), Some(redis)) = (self.token.take(), &self.cache.redis) else {
            return; // local: Drop gives it back
        };
        let key = std::mem::take(&mut self.key);
        if redis.health.is_down() || redis.remove_member(&key, &token).await.is_err() {
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
            None => self.cache.local_slots.give_back(&self.key),
        }
    }
}

impl DualCache {
    /// Takes one of `limit` slots under `key` for `ttl`: `Ok(None)` when all are taken. With
    /// Redis the slots are shared by every instance (one script call); a reply that is lost
    /// leaves at most a lease that expires after `ttl`. While Redis is down a fail-open cache
    /// counts slots in this process, a fail-closed one refuses.
    pub async fn lease(
        &self,
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
        let inner = &self.inner;
        let local = |inner: &Arc<Inner>| {
            Ok(inner.local_slots.take(key, limit).then(|| Lease {
                key: key.to_string(),
                token: None,
                ttl,
                cache: Arc::clone(inner),
            }))
        };
        let Some(redis) = &inner.redis else {
            return local(inner);
        };
        if redis.health.is_down() {
            inner.refuse("lease")?;
            return local(inner);
        }
        let token = format!(
            "{}-{}",
            inner.sync.instance,
            inner.sync.seq.fetch_add(1, Ordering::Relaxed) + 1
        );
        let reply = redis
            .eval(
                &redis.lease,
                vec![redis.key(key)],
                vec![
                    "take".into(),
                    token.clone(),
                    limit.to_string(),
                    ttl.as_millis().to_string(),
                ],
            )
            .await;
        match reply {
            Ok(reply) => match crate::script::int_reply(key, &reply, "an integer")? {
                1 => Ok(Some(Lease {
                    key: key.to_string(),
                    token: Some(token),
                    ttl,
                    cache: Arc::clone(inner),
                })),
                _ => Ok(None),
            },
            Err(CacheError::Unavailable { .. }) if inner.fail_open() => local(inner),
            Err(e) => Err(e),
        }
    }

    /// Takes one of `limit` slots under `key` in this process only (no Redis, whatever the
    /// configuration): a cap that holds per instance.
    pub fn local_lease(&self, key: &str, limit: u64) -> Option<Lease> {
        self.inner.local_slots.take(key, limit).then(|| Lease {
            key: key.to_string(),
            token: None,
            ttl: Duration::from_secs(1),
            cache: Arc::clone(&self.inner),
        })
    }

    /// Slots of `key` taken in this process without Redis (fail-open or no Redis).
    pub fn local_leases(&self, key: &str) -> u64 {
        self.inner.local_slots.taken(key)
    }
}

impl Inner {
    /// Queues a lease's release for the next sync (bounded: past the bound the lease is left to
    /// expire by its TTL).
    pub(crate) fn queue_release(&self, key: String, token: String) {
        let mut releases = self.releases.lock();
        if releases.len() < self.config.max_tracked_keys {
            releases.push((key, token));
        }
    }

    /// Sends the queued releases in one pipeline; those Redis did not take stay queued.
    pub(crate) async fn send_releases(&self, redis: &crate::redis::RedisStore) {
        let pending: Vec<(String, String)> = std::mem::take(&mut *self.releases.lock());
        if pending.is_empty() {
            return;
        }
        let taken = redis.remove_members(&pending).await;
        let failed: Vec<(String, String)> = pending
            .into_iter()
            .zip(taken)
            .filter_map(|(release, ok)| (!ok).then_some(release))
            .collect();
        if !failed.is_empty() {
            self.releases.lock().extend(failed);
        }
    }
}
