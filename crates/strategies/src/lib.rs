//! # ferrolite-strategies
//!
//! ferrolite's routing strategies: given a request and the deployments of a model group that
//! the router found eligible, pick one — in well under a microsecond for ten deployments.
//!
//! | name | picks |
//! |---|---|
//! | `simple-shuffle` | at random, weighted by request weights, else `weight`, else `rpm`, else `tpm` |
//! | `least-busy` | fewest calls in flight (shared across instances), random among ties |
//! | `usage-based-routing` | lowest tokens in the window, within rpm/tpm limits |
//! | `usage-based-routing-v2` | the same, and admits each call atomically against the rpm limit (in process, or across instances in strict mode) |
//! | `latency-based-routing` | lowest recent latency (per output token; TTFT when streaming), within a buffer |
//! | `cost-based-routing` | cheapest per token |
//! | `p2c-ewma` | power of two choices on peak-EWMA latency x in-flight |
//!
//! Every strategy skips deployments at their limits (exactly `rpm` requests per window; an
//! explicit 0 blocks) and reads usage from a [`UsageStore`] shared through ferrolite-cache.
//!
//! Layering: `types <- cache-core <- {strategies, budgets} <- router <- ferrolite`. The router
//! filters (cooldown, budgets, tags, context window, order) before a strategy sees the list.

mod config;
mod context;
mod latency;
mod lowest_score;
mod p2c;
mod pick;
mod rng;
mod shuffle;
mod strategy;
mod target;
mod usage;
mod usage_based;

pub use config::{RoutingStrategyArgs, StrategyConfig, StrategyName, ValidatedArgs, build};
pub use context::RouteContext;
pub use latency::{LatencyBased, TIMEOUT_PENALTY_SECS};
pub use lowest_score::LowestScore;
pub use p2c::{DEFAULT_DECAY, P2cEwma};
pub use rng::Rng;
pub use shuffle::SimpleShuffle;
pub use strategy::{
    AdmitFuture, CallOutcome, CapacitySnapshot, NoCapacity, Strategy, StrategyError,
};
pub use target::{DEFAULT_COST_PER_TOKEN, Target};
pub use usage::{IN_FLIGHT_TTL, UsageStore, UsageView};
pub use usage_based::{AdmissionMode, UsageBased};
