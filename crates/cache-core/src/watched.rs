//! Watched deadlines: shared state that callers read without a round trip.
//!
//! A cooldown ("deployment d is cooled down until T"), a failed health check or a half-open
//! probe is a deadline every router instance must agree on, and every request checks it. So:
//! - **reads are local**: one atomic load ([`Deadline::until_ms`], [`Deadline::is_active`]); no
//!   lock, no allocation, never a Redis round trip;
//! - **writes go to Redis at once** with `ferrolite_set_later_v1` ("set if later"), so setting a
//!   deadline only ever extends it (LiteLLM kept the first, shorter cooldown, #40130);
//! - **the sync task reads every watched key back** in the same pipeline as the counters, every
//!   `sync_interval`: another instance sees a write within one interval (absent = not set);
//! - a write that could not reach Redis (outage) applies locally at once and is sent again by
//!   the sync task until Redis takes it; the script makes resending harmless.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::CacheError;
use crate::dual::Inner;

/// One watched key's state, shared by the registry, the handles and the sync task.
#[derive(Debug)]
pub(crate) struct WatchedCell {
    pub(crate) key: Arc<str>,
    /// The deadline in Unix ms; 0 when not set. Only moves later (`fetch_max`).
    until: AtomicU64,
    /// A local write Redis has not acknowledged yet.
    unsent: AtomicBool,
}

impl WatchedCell {
    pub(crate) fn new(key: Arc<str>) -> Self {
        WatchedCell {
            key,
            until: AtomicU64::new(0),
            unsent: AtomicBool::new(false),
        }
    }

    pub(crate) fn until(&self) -> u64 {
        self.until.load(Ordering::Acquire)
    }

    /// Takes a deadline read from Redis (or set here); returns the deadline now held.
    pub(crate) fn observe(&self, until_ms: u64) -> u64 {
        self.until
            .fetch_max(until_ms, Ordering::AcqRel)
            .max(until_ms)
    }

    pub(crate) fn is_unsent(&self) -> bool {
        self.unsent.load(Ordering::Acquire)
    }

    pub(crate) fn set_unsent(&self, unsent: bool) {
        self.unsent.store(unsent, Ordering::Release);
    }

    /// Whether the registry may forget it: no handle, nothing to send, deadline passed.
    pub(crate) fn is_idle(&self, now_ms: u64) -> bool {
        !self.is_unsent() && self.until() <= now_ms
    }
}

/// A handle on a watched deadline (see the module documentation). Keep it: reading it is one
/// atomic load. Cloning is cheap; the key is tracked while a handle lives or its deadline runs.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), ferrolite_cache::CacheError> {
/// use ferrolite_cache::{CacheConfig, DualCache};
///
/// let cache = DualCache::connect(CacheConfig::default()).await?;
/// let cooldown = cache.deadline("{d1}:cooldown")?;
/// let now = cache.clock().now_ms();
/// assert!(!cooldown.is_active(now));
/// cooldown.extend_to(now + 5_000).await?;
/// cooldown.extend_to(now + 1_000).await?; // never shortens
/// assert_eq!(cooldown.until_ms(), Some(now + 5_000));
/// cache.shutdown().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Deadline {
    pub(crate) cell: Arc<WatchedCell>,
    pub(crate) cache: Arc<Inner>,
}

impl std::fmt::Debug for Deadline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deadline")
            .field("key", &self.cell.key)
            .field("until_ms", &self.cell.until())
            .finish()
    }
}

impl Deadline {
    /// The deadline (Unix ms) as last known here, if one was ever set. It may lie in the past.
    pub fn until_ms(&self) -> Option<u64> {
        Some(self.cell.until()).filter(|u| *u != 0)
    }

    /// Whether the deadline lies after `now_ms` (a time read once from the cache's clock).
    #[inline]
    pub fn is_active(&self, now_ms: u64) -> bool {
        self.cell.until() > now_ms
    }

    /// Moves the deadline to `until_ms` unless it is later already, here at once and in Redis
    /// (one script call, "set if later"); returns the deadline now in force. While Redis is
    /// unreachable the deadline holds here and is sent again by the sync task until Redis
    /// takes it, so the call does not fail and nothing is lost.
    pub async fn extend_to(&self, until_ms: u64) -> Result<u64, CacheError> {
        let held = self.cell.observe(until_ms);
        let now = self.cache.clock.now_ms();
        if until_ms <= now {
            return Ok(held);
        }
        let Some(redis) = &self.cache.redis else {
            return Ok(held);
        };
        if redis.health.is_down() {
            self.cell.set_unsent(true);
            return Ok(held);
        }
        let ttl = until_ms - now;
        let reply = redis
            .eval(
                &redis.set_later,
                vec![redis.key(&self.cell.key)],
                vec![until_ms.to_string(), ttl.to_string()],
            )
            .await;
        match reply {
            Ok(value) => {
                let stored = crate::script::deadline_reply(&self.cell.key, &value)?;
                self.cell.set_unsent(false);
                Ok(self.cell.observe(stored))
            }
            Err(CacheError::Unavailable { .. }) => {
                self.cell.set_unsent(true);
                Ok(held)
            }
            Err(e) => Err(e),
        }
    }

    /// The key (without the Redis namespace prefix).
    pub fn key(&self) -> &str {
        &self.cell.key
    }
}
