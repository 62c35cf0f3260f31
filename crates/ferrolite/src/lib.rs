//! # ferrolite
//!
//! The facade of ferrolite, a Rust LLM deployment router. Applications depend on this crate
//! alone and reach every layer through it:
//!
//! - [`types`]: deployments, ids, secrets, usage, error classes, token counting;
//! - [`cache`]: the two-tier state cache shared through Redis;
//! - [`strategies`]: the routing strategies;
//! - [`budgets`]: spend budgets and their accounting;
//! - [`router`]: the `Router` (resolution, filters, admission, cooldowns, retries, fallbacks);
//! - [`config`]: LiteLLM's `config.yaml`, loaded unchanged;
//! - [`catalogue`]: LiteLLM's model prices and context windows, embedded;
//! - [`mock`]: a backend that answers without a network;
//! - `http` (feature `http`, on by default): the OpenAI-compatible HTTP backend;
//! - `service` (feature `tower`, on by default): the router as a `tower::Service`;
//! - `gateway` (feature `gateway`, on by default): the OpenAI-compatible HTTP gateway;
//! - [`server`]: the gateway's connection settings (timeouts, connection cap, header limit).
//!
//! Layering: `types <- cache-core <- {strategies, budgets} <- router <- ferrolite <- cli`.

mod builder;
pub mod catalogue;
pub mod config;
#[cfg(feature = "gateway")]
pub mod gateway;
#[cfg(feature = "http")]
pub mod http;
pub mod mock;
#[cfg(feature = "otel")]
pub mod otel;
#[cfg(feature = "http")]
mod providers;
pub mod server;
#[cfg(feature = "tower")]
pub mod service;

pub use builder::{Error, build_from_config, build_from_config_with, from_config};
pub use config::{
    Config, ConfigError, ConfigWarning, HealthChecks, NotCallable, OtelConfig, OtelProtocol,
    WarningKind,
};
pub use ferrolite_budgets as budgets;
pub use ferrolite_cache as cache;
pub use ferrolite_protocols as protocols;
pub use ferrolite_router as router;
pub use ferrolite_router::{
    Request, Router, RouterBuilder, RouterError, RouterResponse, RouterStream,
};
pub use ferrolite_strategies as strategies;
pub use ferrolite_types as types;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
