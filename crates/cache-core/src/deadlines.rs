//! The deadlines facet ([`DualCache::deadlines`]): shared state that callers read without a
//! round trip.
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

use crate::dual::{DualCache, Inner};
use crate::error::CacheError;
use crate::watched::WatchedCell;

/// The cache's watched deadlines (see [`DualCache::deadlines`]).
#[derive(Clone, Copy)]
pub struct Deadlines<'a> {
    inner: &'a Arc<Inner>,
}

impl std::fmt::Debug for Deadlines<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deadlines").finish_non_exhaustive()
    }
}

impl DualCache {
    /// The watched deadlines (cooldowns, health checks, half-open probes): see
    /// [`deadline`](Deadlines::deadline).
    pub fn deadlines(&self) -> Deadlines<'_> {
        Deadlines {
            inner: self.inner(),
        }
    }
}

impl Deadlines<'_> {
    /// A handle on the watched deadline `key` (a cooldown, a failed health check, a half-open
    /// probe): registered once, read back by the sync task every interval, read by callers
    /// from memory. See [`Deadline`].
    pub fn deadline(self, key: &str) -> Result<Deadline, CacheError> {
        let cell = self.inner.watched_cell(key)?;
        Ok(Deadline {
            cell,
            cache: Arc::clone(self.inner),
        })
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
/// let cooldown = cache.deadlines().deadline("{d1}:cooldown")?;
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
    cell: Arc<WatchedCell>,
    cache: Arc<Inner>,
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
        let now = self.cache.clock().now_ms();
        if until_ms <= now {
            return Ok(held);
        }
        let Some(store) = self.cache.remote() else {
            return Ok(held);
        };
        if self.cache.remote_down() {
            self.cell.set_unsent(true);
            return Ok(held);
        }
        match store
            .set_later(&self.cell.key, until_ms, until_ms - now)
            .await
        {
            Ok(stored) => {
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

    /// Keeps `latest` at or after this deadline from now on, wherever it is moved (here, or
    /// by another instance and read back by the sync task).
    pub fn report_to(&self, latest: &LatestDeadline) {
        self.cell.report_to(&latest.0);
    }
}

/// The latest of a set of [`Deadline`]s, kept up to date as any of them moves
/// ([`Deadline::report_to`]): when it lies in the past, so does every deadline of the set,
/// which one atomic load tells (a group of deployments none of which is cooling down). It
/// only moves later, as deadlines do.
#[derive(Debug, Clone, Default)]
pub struct LatestDeadline(Arc<std::sync::atomic::AtomicU64>);

impl LatestDeadline {
    /// A summary of no deadline yet.
    pub fn new() -> Self {
        LatestDeadline::default()
    }

    /// The latest deadline reported (Unix ms; 0 when none was ever set).
    #[inline]
    pub fn until_ms(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether some deadline of the set may lie after `now_ms` (`false`: none does).
    #[inline]
    pub fn is_active(&self, now_ms: u64) -> bool {
        self.until_ms() > now_ms
    }
}
