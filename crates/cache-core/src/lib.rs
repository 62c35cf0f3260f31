//! # ferrolite-cache
//!
//! The state layer of ferrolite, the Rust LLM deployment router: one cache with two tiers.
//!
//! **Its place.** `types <- cache-core <- {strategies, budgets} <- router <- ferrolite <- cli`:
//! this crate depends on none of the others, and every crate above keeps its shared state here
//! (rate windows, in-flight counts, cooldowns, spend, leases). It can be used alone as a
//! Redis-synced counter cache.
//!
//! - **Local tier**: moka for values (per-entry TTL) and atomics for counters, so every read on
//!   the hot path is local and an increment is one atomic add.
//! - **Shared tier** (optional): Redis through fred, shared by every router instance. Queued
//!   counter deltas are pushed by a background task every `sync_interval` (default 100 ms) in
//!   one pipelined round trip, **exactly once** (a per-instance sequence number checked in Lua),
//!   and the global values read back. Nothing is lost when Redis fails and nothing is counted
//!   twice.
//! - **Strict admission**: one Lua script checks and increments several windowed limits
//!   atomically with Redis server time, so N instances together admit exactly the limit.
//! - **Outages**: fail-open by default (serve the local view, keep deltas, reconnect, flush),
//!   fail-closed as a setting; an outage is logged once and counted in the
//!   `ferrolite_cache_redis_outages_total` metric. Every Redis command has a timeout, so an
//!   outage never hangs a caller.
//!
//! **Its shape.** [`DualCache`] is a narrow core (`dual.rs`: connect, clock, stats, sync,
//! shutdown) with one facet per kind of state, each a module that works on the core through
//! `Inner`'s methods (its fields are private to `dual.rs`):
//!
//! | facet | module | what it holds |
//! |---|---|---|
//! | [`DualCache::kv`] | `kv.rs` | values in both tiers |
//! | [`DualCache::counters`] | `counters.rs`, `dense.rs` | [`IntCounter`] / [`FloatCounter`] handles, [`CounterFamily`] slabs |
//! | [`DualCache::deadlines`] | `deadlines.rs` | watched [`Deadline`]s (cooldowns) |
//! | [`DualCache::leases`] | `leases.rs` | shared slots with a TTL ([`Lease`]) |
//! | [`DualCache::admission`] | `admission.rs` | strict admission ([`Admission`]) |
//! | [`DualCache::shared`] | `shared.rs` | the shared tier alone (status, values, scripts) |
//!
//! Below the core, `remote.rs` names everything the cache asks of the shared tier (the
//! `RemoteStore` trait: push deltas and read back, admit and withdraw, set-if-later, leases,
//! get/set, health) with an implementation that shares nothing; `redis.rs` is the Redis
//! implementation, built with the `redis` feature. `pipeline.rs` holds the exactly-once flush
//! protocol, `counter.rs` and `watched.rs` the cells the hot path reads, `values.rs` the local
//! value tier. The hot path (a counter increment, a value read, a deadline read) never leaves
//! the local tier.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), ferrolite_cache::CacheError> {
//! use ferrolite_cache::{CacheConfig, DualCache, LimitCheck, Window};
//!
//! // `CacheConfig::with_redis("redis://127.0.0.1:6379")` shares the state between instances.
//! let cache = DualCache::connect(CacheConfig::default()).await?;
//! let admission = cache.admission();
//! let check = LimitCheck {
//!     key: "{d1}:rpm".into(),
//!     delta: 1,
//!     limit: 2,
//!     window: Window::MINUTE_SLIDING,
//! };
//! assert!(admission.admit(&[check.clone()]).await?.admitted);
//! let second = admission.admit(&[check.clone()]).await?;
//! assert!(second.admitted);
//! assert!(!admission.admit(&[check.clone()]).await?.admitted); // exactly the limit
//! second.undo()?; // the call did not go ahead: give its slot back
//! assert!(admission.admit(&[check]).await?.admitted);
//! assert!(!cache.shared().is_configured()); // this cache shares nothing
//! cache.shutdown().await?;
//! # Ok(()) }
//! ```

mod admission;
mod clock;
mod config;
mod counter;
mod counters;
mod deadlines;
mod dense;
mod dual;
mod error;
mod kv;
mod leases;
mod pipeline;
#[cfg(feature = "redis")]
mod redis;
mod registry;
mod remote;
mod script;
mod shared;
mod values;
mod watched;
pub mod window;

#[cfg(feature = "test-support")]
pub mod testing;

pub use admission::{Admission, AdmissionSource, Admissions, LimitCheck};
pub use clock::{Clock, ManualClock, SystemClock, TokioClock};
pub use config::{CacheConfig, FailureMode, RECONNECT_MAX_DELAY, RedisConfig};
pub use counter::{CounterOptions, CounterValue, ExpiryMode};
pub use counters::{Counter, Counters, FamilyStats, FloatCounter, IntCounter};
pub use deadlines::{Deadline, Deadlines, LatestDeadline};
pub use dense::{CounterFamily, FamilyKeys, IntCounterFamily};
pub use dual::{CacheStats, DualCache, SyncHook};
pub use error::CacheError;
pub use kv::Kv;
pub use leases::{Lease, Leases};
pub use pipeline::SyncReport;
pub use remote::ScriptReply;
pub use script::redact_url as redacted_url;
pub use script::{LuaScript, hash_tagged};
pub use shared::Shared;
pub use window::{Window, WindowKind, WindowedCounter};
