//! # ferrolite-budgets
//!
//! ferrolite's spend budgets: provider, deployment and tag budgets over rolling or calendar windows, with reserve-then-settle accounting shared through ferrolite-cache.
//!
//! Layering: `types <- cache-core <- {strategies, budgets} <- router <- ferrolite <- cli`.
//! This crate is reserved for budget windows and accounting; it is filled by a later issue and exposes nothing yet, so that
//! the workspace, its lints and its CI are in place for it.
