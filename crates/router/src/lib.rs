//! # ferrolite-router
//!
//! ferrolite's router: resolve a model group, filter (cooldown, budgets, tags, context window, order), pick, admit, call, record, and on failure retry, cool down and fall back.
//!
//! Layering: `types <- cache-core <- {strategies, budgets} <- router <- ferrolite <- cli`.
//! This crate is reserved for the `Router`; it is filled by a later issue and exposes nothing yet, so that
//! the workspace, its lints and its CI are in place for it.
