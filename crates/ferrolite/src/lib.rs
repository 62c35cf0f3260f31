//! # ferrolite
//!
//! The facade of ferrolite, a Rust LLM deployment router. Applications depend on this crate
//! alone and reach every layer through it:
//!
//! - [`types`]: deployments, ids, secrets, usage, error classes, token counting;
//! - [`cache`]: the two-tier state cache shared through Redis;
//! - [`strategies`]: the routing strategies;
//! - [`budgets`]: spend budgets and their accounting;
//! - [`router`]: the `Router` (resolution, filters, admission, cooldowns, retries, fallbacks).
//!
//! Layering: `types <- cache-core <- {strategies, budgets} <- router <- ferrolite <- cli`.
//! The builder, the LiteLLM-compatible YAML configuration and the HTTP backends land here as
//! later issues fill them.

pub use ferrolite_budgets as budgets;
pub use ferrolite_cache as cache;
pub use ferrolite_router as router;
pub use ferrolite_strategies as strategies;
pub use ferrolite_types as types;
