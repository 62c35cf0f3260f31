//! # ferrolite-types
//!
//! The shared vocabulary of ferrolite, the Rust LLM deployment router: what a [`Deployment`] is and
//! how it is identified ([`DeploymentId`]), how secrets are kept out of logs ([`Secret`]), what a
//! call used ([`Usage`]), how a failed call is classified ([`ErrorClass`]) and how prompts are
//! counted in tokens ([`TokenCounter`]).
//!
//! This crate is the bottom of the layering (`types <- cache-core <- {strategies, budgets} <- router
//! <- ferrolite`): it does no I/O and depends on no other ferrolite crate.

mod deployment;
mod error;
mod error_class;
mod index;
mod protocol;
mod provider;
mod response_id;
mod secret;
mod tokens;
mod usage;

pub use deployment::{AllowedFailsPolicy, Deployment, DeploymentId};
pub use error::TypesError;
pub use error_class::ErrorClass;
pub use index::{DeploymentIndex, DeploymentIx, LearnedState, PerDeployment};
pub use protocol::Protocol;
pub use provider::Provider;
pub use response_id::ManagedResponseId;
pub use secret::Secret;
pub use tokens::{ApproxTokenCounter, ChatMessage, TiktokenCounter, TokenCounter};
pub use usage::{TokenPrices, Usage};
