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
//! | `usage-based-routing-v2` | the same (every admission checks rpm and tpm atomically in ferrolite) |
//! | `latency-based-routing` | lowest recent latency (per output token; TTFT when streaming), within a buffer |
//! | `cost-based-routing` | cheapest per token |
//! | `p2c-ewma` | power of two choices on peak-EWMA latency x in-flight |
//!
//! Every strategy skips deployments at their limits (exactly `rpm` requests per window; an
//! explicit 0 blocks), reading usage from the one [`UsageView`] the router takes per request.
//! The [`UsageStore`] holds that usage, shared through ferrolite-cache, and admits calls:
//! [`UsageStore::admit`] takes a request and its tokens against the limits (in process, or in
//! Redis in strict mode) and returns a [`Permit`] that ends the call's in-flight count when it
//! drops. Per-deployment state is reached by `DeploymentIx` within one snapshot ([`Targets`]);
//! what strategies learn is kept by deployment id and carried to the next snapshot
//! ([`Strategy::for_snapshot`]).
//!
//! A pick chooses among [`Candidates`]: a [`Pool`] the router prepares per snapshot for each
//! group and `order` tier (its members, the running weights simple-shuffle draws from, the
//! cost levels cost-based walks), less the [`Exclusions`] its filters made. The strategies
//! draw from the pool first and scan only when a few draws found nothing: a pick costs about
//! the same over ten deployments as over ten thousand unless the group is loaded. Loaded,
//! latency-based descends a tree over the pool's latency scores kept up to date as samples
//! are recorded (O(log N)); usage-based still scans (see [`LowestScore`] for why).
//!
//! Layering: `types <- cache-core <- {strategies, budgets} <- router <- ferrolite`. The router
//! filters (cooldown, budgets, tags, context window, order) before a strategy sees the list.

mod candidates;
mod config;
mod context;
mod latency;
mod lowest_score;
mod p2c;
mod pick;
mod rng;
mod score_tree;
mod shuffle;
mod strategy;
mod target;
mod usage;

pub use candidates::{Candidates, Exclusions, Pool};
pub use config::{RoutingStrategyArgs, StrategyConfig, StrategyName, ValidatedArgs, build};
pub use context::RouteContext;
pub use latency::{LatencyBased, TIMEOUT_PENALTY_SECS};
pub use lowest_score::LowestScore;
pub use p2c::{DEFAULT_DECAY, P2cEwma};
pub use rng::Rng;
pub use shuffle::SimpleShuffle;
pub use strategy::{
    CallOutcome, CapacitySnapshot, NoCapacity, Outcome, Score, Strategy, StrategyError,
};
pub use target::{DEFAULT_COST_PER_TOKEN, Target, Targets};
pub use usage::{AdmissionMode, IN_FLIGHT_TTL, Permit, UsageStore, UsageView};
