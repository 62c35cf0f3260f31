//! # ferrolite-budgets
//!
//! Spend budgets for ferrolite, the Rust LLM deployment router: provider budgets
//! (`provider_budget_config`), deployment budgets (`max_budget` / `budget_duration`) and tag
//! budgets, over rolling or calendar windows, shared exactly between router instances through
//! ferrolite-cache.
//!
//! The router uses a [`BudgetLedger`] in three places:
//! 1. **filter** (before picking): [`BudgetLedger::check`] once per request, then
//!    [`BudgetLedger::allows`] per deployment; when none is allowed,
//!    [`BudgetLedger::exceeded_error`] lists every exceeded scope with its spend and limit;
//! 2. **admit**: [`BudgetLedger::reserve`] holds an estimate ([`BudgetLedger::estimate`]) on every
//!    scope of the call, atomically, or refuses;
//! 3. **settle**: [`BudgetLedger::settle`] charges the actual cost (or refunds the difference);
//!    [`BudgetLedger::release`] when the call failed.
//!
//! Layering: `types <- cache-core <- {strategies, budgets} <- router <- ferrolite`.

mod config;
mod duration;
mod error;
mod ledger;
mod scope;

pub use config::{BudgetConfig, BudgetsConfig, ReservationPolicy, WindowAlignment};
pub use duration::BudgetDuration;
pub use error::{BudgetError, Exceeded};
pub use ledger::{
    BudgetCheck, BudgetLedger, LEARNED_MIN_SAMPLES, LEARNED_PERCENTILE, LEARNED_SAMPLES,
    Reservation, ScopeStatus, UNKNOWN_OUTPUT_LIMIT,
};
pub use scope::Scope;
