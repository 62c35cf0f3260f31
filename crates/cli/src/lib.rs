//! # ferrolite-cli
//!
//! The `ferrolite` command line (`simulate`, `check`, later `serve`).
//!
//! Layering: `types <- cache-core <- {strategies, budgets} <- router <- ferrolite <- cli`.
//! This crate is reserved for the command's implementation; it is filled by a later issue and exposes nothing yet, so that
//! the workspace, its lints and its CI are in place for it.
