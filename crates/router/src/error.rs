//! The router's one error type.

use std::time::Duration;

use ferrolite_budgets::BudgetError;
use ferrolite_cache::CacheError;
use ferrolite_strategies::StrategyError;
use ferrolite_types::{DeploymentId, ErrorClass, TypesError};

/// One attempt that failed, for the "what was tried" list of an error.
#[derive(Debug, Clone, PartialEq)]
pub struct Tried {
    /// The model group (or the deployment id a fallback named).
    pub model_group: String,
    /// The deployment called.
    pub deployment: DeploymentId,
    /// How it failed.
    pub class: ErrorClass,
    /// The provider's message.
    pub message: String,
}

/// Everything that can go wrong in routing, naming the group, deployment, field or value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RouterError {
    /// No model group, alias, wildcard group or deployment id of that name (LiteLLM's 400,
    /// with its text; the groups served are listed by `/v1/models`, not in the error).
    #[error(
        "Invalid model name passed in model={model}. Call `/v1/models` to view available models for your key."
    )]
    UnknownModel {
        /// The name asked for.
        model: String,
    },
    /// A request field out of range, found before any backend call.
    #[error("invalid request {field} = {value}: {reason}")]
    InvalidRequest {
        /// The field.
        field: &'static str,
        /// The value given.
        value: String,
        /// What is accepted.
        reason: &'static str,
    },
    /// A setting out of range, found when the router is built.
    #[error("invalid router setting `{field}` = {value}: {reason}")]
    InvalidSettings {
        /// The setting (with its entry, e.g. `fallbacks.gpt-4o`).
        field: String,
        /// The value given.
        value: String,
        /// What is accepted.
        reason: &'static str,
    },
    /// A deployment that cannot be routed to, found when the router is built.
    #[error("invalid deployment {index} (`{model_name}`): {source}")]
    InvalidDeployment {
        /// Its position in the list given.
        index: usize,
        /// Its model group.
        model_name: String,
        /// What is wrong.
        source: TypesError,
    },
    /// Every deployment of the group is cooling down (LiteLLM's `RouterRateLimitError`,
    /// `all_deployments_in_cooldown`).
    #[error("No deployments available for selected model. All deployments of `{model_group}` are in cooldown. Try again in {} seconds.", retry_in.as_secs_f64().ceil())]
    AllCooledDown {
        /// The group.
        model_group: String,
        /// When the first cooldown ends.
        retry_in: Duration,
    },
    /// The request's tags match no deployment of the group, and they are tags the group knows
    /// or none of its deployments is tagged `default` (LiteLLM's `get_deployments_for_tag`,
    /// with its message; the tags printed as LiteLLM prints them, `['a', 'b']`).
    #[error(
        "Not allowed to access model due to tags configuration. Passed model={model_group} and tags={}",
        python_list(tags)
    )]
    NoTagMatch {
        /// The group.
        model_group: String,
        /// The request's tags.
        tags: Vec<String>,
    },
    /// No deployment had room (rpm/tpm limits) or budget.
    #[error("{0}")]
    NoCapacity(String),
    /// An `order` tier the router moved on to has no deployment available now (cooling down,
    /// unhealthy, over budget, filtered out); as in LiteLLM, a lower tier is not picked again
    /// and the next tier is tried.
    #[error(
        "No deployments available for selected model. No deployment of `{model_group}` with order={order} is available."
    )]
    NoDeploymentInTier {
        /// The group.
        model_group: String,
        /// The tier.
        order: u32,
    },
    /// The backend failed and retries and fallbacks did not help: the primary group's error,
    /// with every attempt that was made.
    #[error("{class} - {message}. Received Model Group={model_group} (deployment {deployment}){}", tried_suffix(.tried))]
    Backend {
        /// The primary group.
        model_group: String,
        /// The deployment of the primary group's last attempt.
        deployment: DeploymentId,
        /// How it failed.
        class: ErrorClass,
        /// The provider's message.
        message: String,
        /// Every failed attempt of the request, in order.
        tried: Vec<Tried>,
    },
    /// The request's overall deadline passed (the caller's own limit: no deployment is blamed).
    #[error("request deadline of {} seconds exceeded after {attempts} attempt(s)", deadline.as_secs_f64())]
    DeadlineExceeded {
        /// The deadline.
        deadline: Duration,
        /// Attempts made.
        attempts: u32,
    },
    /// A deployment has nothing to call it with: the router was built without a backend.
    #[error(
        "deployment `{deployment}` of `{model_group}` has no backend: give the builder one with \
         `.backend(...)`, or mock it with `mock_response`"
    )]
    NoBackend {
        /// Its model group.
        model_group: String,
        /// Its id.
        deployment: String,
    },
    /// The shared state failed (Redis down in fail-closed mode, ...).
    #[error("state: {0}")]
    Cache(#[from] CacheError),
    /// Routing state or strategy error.
    #[error("{0}")]
    Strategy(#[from] StrategyError),
    /// A budget error other than "exceeded" (configuration, state).
    #[error("{0}")]
    Budget(#[from] BudgetError),
}

fn tried_suffix(tried: &[Tried]) -> String {
    if tried.len() <= 1 {
        return String::new();
    }
    let list: Vec<String> = tried
        .iter()
        .map(|t| format!("{} ({}): {}", t.model_group, t.deployment, t.class.name()))
        .collect();
    format!(". Tried: {}", list.join("; "))
}

/// What kind of failure a [`RouterError`] is, in the router's terms (no transport's status):
/// whether the request is at fault, there is no room now, the deadline passed, a deployment
/// failed, the shared state failed, or the router was set up wrong. The gateway maps each kind
/// to its HTTP status (`ferrolite::gateway`'s error table).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ErrorKind<'a> {
    /// The request cannot be served as asked (unknown model, invalid field, tags that match no
    /// deployment): sending it again does not help.
    Request,
    /// No deployment has room now (cooldown, rpm/tpm, parallel slots, wait queue, budget):
    /// the same request may succeed later.
    Capacity,
    /// The request's own deadline passed.
    Deadline,
    /// The deployments failed as this class says, and retries and fallbacks did not help.
    Upstream(&'a ErrorClass),
    /// The shared state failed (found by the router itself, its budgets or its strategy).
    State(&'a CacheError),
    /// The router's own side failed: its settings, deployments, strategy or budget accounting.
    Internal,
}

impl RouterError {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind<'_> {
        match self {
            RouterError::UnknownModel { .. }
            | RouterError::InvalidRequest { .. }
            | RouterError::NoTagMatch { .. } => ErrorKind::Request,
            RouterError::AllCooledDown { .. }
            | RouterError::NoCapacity(_)
            | RouterError::NoDeploymentInTier { .. }
            | RouterError::Budget(BudgetError::Exceeded { .. }) => ErrorKind::Capacity,
            RouterError::Backend { class, .. } => ErrorKind::Upstream(class),
            RouterError::DeadlineExceeded { .. } => ErrorKind::Deadline,
            RouterError::Cache(cache)
            | RouterError::Budget(BudgetError::Cache(cache))
            | RouterError::Strategy(StrategyError::Cache(cache)) => ErrorKind::State(cache),
            RouterError::InvalidSettings { .. }
            | RouterError::InvalidDeployment { .. }
            | RouterError::NoBackend { .. }
            | RouterError::Strategy(_)
            | RouterError::Budget(_) => ErrorKind::Internal,
        }
    }
}

/// A list of strings as Python prints it (`['a', 'b']`), for messages LiteLLM's users match.
fn python_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("'{i}'")).collect();
    format!("[{}]", quoted.join(", "))
}
