//! # ferrolite-cache
//!
//! The state layer of ferrolite, the Rust LLM deployment router: one cache with two tiers.
//!
//! - **Local tier**: moka for values (per-entry TTL) and atomics for counters, so every read on
//!   the hot path is local and an increment is one atomic add.
//! - **Redis tier** (optional, through fred): shared by every router instance. Queued counter
//!   deltas are pushed by a background task every `sync_interval` (default 100 ms) in one
//!   pipelined round trip, **exactly once** (a per-instance sequence number checked in Lua), and
//!   the global values read back. Nothing is lost when Redis fails and nothing is counted twice.
//! - **Strict admission**: one Lua script checks and increments several windowed limits
//!   atomically with Redis server time, so N instances together admit exactly the limit.
//! - **Outages**: fail-open by default (serve the local view, keep deltas, reconnect, flush),
//!   fail-closed as a setting; an outage is logged once and counted in the
//!   `ferrolite_cache_redis_outages_total` metric. Every Redis command has a timeout, so an
//!   outage never hangs a caller.
//!
//! Layering: `types <- cache-core <- {strategies, budgets} <- router <- ferrolite`. This crate
//! does not depend on the others and can be used alone as a Redis-synced counter cache.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), ferrolite_cache::CacheError> {
//! use std::time::Duration;
//! use ferrolite_cache::{CacheConfig, DualCache, LimitCheck, Window};
//!
//! // `CacheConfig::with_redis("redis://127.0.0.1:6379")` shares the state between instances.
//! let cache = DualCache::connect(CacheConfig::default()).await?;
//! let check = LimitCheck { key: "{d1}:rpm".into(), delta: 1, limit: 2, window: Window::MINUTE_SLIDING };
//! assert!(cache.admit(&[check.clone()]).await?.admitted);
//! let second = cache.admit(&[check.clone()]).await?;
//! assert!(second.admitted);
//! assert!(!cache.admit(&[check.clone()]).await?.admitted); // exactly the limit
//! second.undo()?; // the call did not go ahead: give its slot back
//! assert!(cache.admit(&[check]).await?.admitted);
//! cache.shutdown().await?;
//! # Ok(()) }
//! ```
// Without the Redis tier, the code that serves only it is unused.
#![cfg_attr(not(feature = "redis"), allow(dead_code, unused_imports))]

mod clock;
mod config;
mod counter;
mod dual;
mod error;
mod lease;
mod pipeline;
#[cfg(feature = "redis")]
mod redis;
#[cfg(not(feature = "redis"))]
#[path = "redis_off.rs"]
mod redis;
mod script;
mod strict;
mod watched;
pub mod window;

#[cfg(feature = "test-support")]
pub mod testing;

pub use clock::{Clock, ManualClock, SystemClock, TokioClock};
pub use config::{CacheConfig, FailureMode, RECONNECT_MAX_DELAY, RedisConfig};
pub use counter::{CounterOptions, ExpiryMode};
pub use dual::{
    CacheStats, Counter, CounterValue, DualCache, FloatCounter, IntCounter, ScriptReply, SyncHook,
};
pub use error::CacheError;
pub use lease::Lease;
pub use pipeline::SyncReport;
pub use script::redact_url as redacted_url;
pub use script::{LuaScript, hash_tagged};
pub use strict::{Admission, AdmissionSource, LimitCheck};
pub use watched::Deadline;
pub use window::{Window, WindowKind, WindowedCounter};
