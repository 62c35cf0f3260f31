//! What a strategy knows of a deployment, prepared once when the deployment list is loaded.

use ferrolite_types::{Deployment, DeploymentId};

/// LiteLLM's price when a deployment's model has no known cost (`lowest_cost.py` falls back to
/// 5.0 per token for input and output alike). ferrolite keeps it, so an unpriced deployment
/// sorts after every priced one.
pub const DEFAULT_COST_PER_TOKEN: f64 = 5.0;

/// A deployment as routing sees it: its dense `slot` (the index of its state in every
/// per-deployment array) and the fields strategies read, copied out of the [`Deployment`] so a
/// pick touches one small struct per candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// Position of this deployment in its group's snapshot; indexes all per-deployment state.
    pub slot: usize,
    /// The deployment's id.
    pub id: DeploymentId,
    /// The provider/model string (part of LiteLLM's usage key `{id}:{model}:rpm:{HH-MM}`).
    pub model: String,
    /// simple-shuffle weight.
    pub weight: Option<f64>,
    /// Requests per window; `Some(0)` blocks.
    pub rpm: Option<u64>,
    /// Tokens per window; `Some(0)` blocks.
    pub tpm: Option<u64>,
    /// Input + output price per token (cost-based routing).
    pub cost_per_token: f64,
}

impl Target {
    /// Prepares a deployment for routing at `slot`.
    pub fn new(slot: usize, deployment: &Deployment) -> Self {
        let priced =
            deployment.input_cost_per_token.is_some() || deployment.output_cost_per_token.is_some();
        let cost_per_token = if priced {
            deployment.input_cost_per_token.unwrap_or(0.0)
                + deployment.output_cost_per_token.unwrap_or(0.0)
        } else {
            2.0 * DEFAULT_COST_PER_TOKEN
        };
        Target {
            slot,
            id: deployment.id(),
            model: deployment.model.clone(),
            weight: deployment.weight,
            rpm: deployment.rpm,
            tpm: deployment.tpm,
            cost_per_token,
        }
    }

    /// Targets for a group's deployments, slots in list order.
    pub fn for_group(deployments: &[Deployment]) -> Vec<Target> {
        deployments
            .iter()
            .enumerate()
            .map(|(slot, d)| Target::new(slot, d))
            .collect()
    }
}
