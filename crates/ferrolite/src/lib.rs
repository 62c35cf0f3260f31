//! # ferrolite
//!
//! The facade of ferrolite, a Rust LLM deployment router: re-exports the layered crates, and will hold the builder, the LiteLLM-compatible YAML config and the HTTP backends.
//!
//! Layering: `types <- cache-core <- {strategies, budgets} <- router <- ferrolite <- cli`.
//! This crate is reserved for the builder, config and backends; it is filled by a later issue and exposes nothing yet, so that
//! the workspace, its lints and its CI are in place for it.

pub use ferrolite_cache as cache;
pub use ferrolite_types as types;
