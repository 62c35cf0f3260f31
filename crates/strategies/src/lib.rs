//! # ferrolite-strategies
//!
//! ferrolite's routing strategies: given the eligible deployments of a model group and their usage, pick one (simple-shuffle, least-busy, usage-based v1/v2, latency-based, cost-based, p2c-ewma).
//!
//! Layering: `types <- cache-core <- {strategies, budgets} <- router <- ferrolite <- cli`.
//! This crate is reserved for the `Strategy` trait and its implementations; it is filled by a later issue and exposes nothing yet, so that
//! the workspace, its lints and its CI are in place for it.
