//! # ferrolite-router
//!
//! ferrolite's `Router`: an application asks for a model group; the router resolves it, filters
//! the group's deployments (cooldown, budgets, order), lets the routing strategy pick one on a
//! single usage view, admits the call (rpm and tpm, then the budget reservation), calls it
//! through a [`Backend`] under the attempt timeout and records the outcome — and on failure
//! classifies it, cools the deployment down when the rules say so, retries with backoff and
//! falls back to other groups. The call path reads top to bottom in `router.rs`, which names
//! each stage's module (`resolve`, `filter`, `admit`, `attempt`, `retry`, `fallback`, `stream`).
//!
//! Everything a call takes (the rpm/tpm permit, the concurrency slot, the half-open probe, the
//! budget reservation) is held by one guard that gives it back, so a call dropped by a timeout
//! or a disconnected client leaks nothing.
//! Deployments live in one immutable snapshot behind an atomic pointer: [`Router::upsert`] and
//! [`Router::remove`] swap in a new one without blocking calls in flight, and state of unchanged
//! deployments carries over.
//!
//! Layering: `types <- cache-core <- {strategies, budgets} <- router <- ferrolite <- cli`.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use ferrolite_cache::{CacheConfig, DualCache};
//! use ferrolite_router::{Backend, BackendFuture, BackendRequest, BackendResponse, Request, Router, RouterSettings};
//! use ferrolite_types::{Deployment, Usage};
//!
//! struct Echo;
//! impl Backend for Echo {
//!     fn call<'a>(&'a self, _: &'a Deployment, request: &'a BackendRequest) -> BackendFuture<'a> {
//!         Box::pin(async move {
//!             Ok(BackendResponse { body: (&request.body).into(), usage: Some(Usage::new(5, 5)), time_to_first_token: None, protocol: Default::default() })
//!         })
//!     }
//! }
//!
//! let deployments = vec![Deployment::new("gpt-4o", "azure/gpt-4o-eu"), Deployment::new("gpt-4o", "openai/gpt-4o")];
//! let cache = DualCache::connect(CacheConfig::default()).await?;
//! let router = Router::new(deployments, RouterSettings::default(), cache.clone(), Arc::new(Echo))?;
//! let answer = router.call(Request::new("gpt-4o", serde_json::json!({"messages": []}))).await?;
//! assert_eq!(answer.model_group, "gpt-4o");
//! cache.shutdown().await?;
//! # Ok(()) }
//! ```

mod admit;
mod attempt;
mod backend;
mod body;
mod builder;
mod call;
mod cooldown;
mod error;
mod explain;
mod fallback;
mod filter;
mod health;
mod inner;
mod keys;
pub mod litellm;
mod observer;
mod queue;
mod recent;
mod replicas;
mod request;
mod resolve;
mod response_cache;
mod retry;
mod retry_budget;
mod router;
mod settings;
mod snapshot;
pub mod spans;
mod state;
mod stream;
mod wildcard;

pub use backend::{
    Backend, BackendChunk, BackendError, BackendFuture, BackendRequest, BackendResponse,
    BackendStream, BackendStreamFuture, HealthFuture, Prepared,
};
pub use body::{Body, BodyError};
pub use builder::RouterBuilder;
pub use error::{ErrorKind, RouterError, Tried};
pub use explain::{
    Attempt, Candidate, Excluded, Fallback, MAX_PICKS, Pick, Route, RouteSlot, SUMMARY_MAX,
};
pub use observer::{Event, Observer};
pub use queue::WaitQueueSettings;
pub use recent::{History, Percentiles};
pub use replicas::{ReplicaInfo, ReplicaSettings, Replicas};
pub use request::{
    KeyLimits, MAX_CHOICES, MAX_TOKENS, Native, NativeExtras, Request, RouterResponse, Untranslated,
};
pub use response_cache::{IGNORED as RESPONSE_CACHE_IGNORED_FIELDS, ResponseCacheSettings};
pub use router::Router;
pub use settings::{RetryBudgetSettings, RetryPolicy, RouterSettings};
pub use state::{
    BudgetState, Condition, CooldownState, DeploymentState, Errors, GroupState, HealthState,
    Leases, ProbeState, ReplicaState, RouterState, StateOptions, Used,
};
pub use stream::RouterStream;
