//! What a strategy knows of a deployment, prepared once per snapshot of the deployment list.

use std::sync::Arc;

use ferrolite_types::{
    Deployment, DeploymentId, DeploymentIndex, DeploymentIx, PerDeployment, TypesError,
};

/// LiteLLM's price when a deployment's model has no known cost (`lowest_cost.py` falls back to
/// 5.0 per token for input and output alike). ferrolite keeps it, so an unpriced deployment
/// sorts after every priced one.
pub const DEFAULT_COST_PER_TOKEN: f64 = 5.0;

/// A deployment as routing sees it: its [`DeploymentIx`] in the snapshot (the index of its state
/// in every per-deployment array) and the fields strategies read, copied out of the
/// [`Deployment`] so a pick touches one small struct per candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// Position of this deployment in its snapshot; indexes all per-deployment state.
    pub ix: DeploymentIx,
    /// The deployment's id.
    pub id: DeploymentId,
    /// The model group it serves.
    pub model_name: Arc<str>,
    /// The provider/model string (part of the usage keys `{id}:{model}:rpm:{bucket}`).
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
    /// Prepares `deployment` (whose id is `id`) for routing at `ix`.
    pub fn new(ix: DeploymentIx, id: DeploymentId, deployment: &Deployment) -> Self {
        let priced =
            deployment.input_cost_per_token.is_some() || deployment.output_cost_per_token.is_some();
        let cost_per_token = if priced {
            deployment.input_cost_per_token.unwrap_or(0.0)
                + deployment.output_cost_per_token.unwrap_or(0.0)
        } else {
            2.0 * DEFAULT_COST_PER_TOKEN
        };
        Target {
            ix,
            id,
            model_name: Arc::from(deployment.model_name.as_str()),
            model: deployment.model.clone(),
            weight: deployment.weight,
            rpm: deployment.rpm,
            tpm: deployment.tpm,
            cost_per_token,
        }
    }
}

/// The targets of one snapshot of the deployment list, every model group together, reached by
/// [`DeploymentIx`]. Build it once per snapshot; the usage store, the strategies and the budget
/// ledger of that snapshot share its [`DeploymentIndex`].
#[derive(Debug, Clone)]
pub struct Targets {
    index: DeploymentIndex,
    targets: PerDeployment<Target>,
}

impl Targets {
    /// Targets for `deployments`, in order. Two deployments with one id are an error.
    pub fn new(deployments: &[Deployment]) -> Result<Self, TypesError> {
        let index = DeploymentIndex::of(deployments)?;
        let targets = index.map(|ix, id| Target::new(ix, id.clone(), &deployments[ix.index()]));
        Ok(Targets { index, targets })
    }

    /// The snapshot's index.
    pub fn index(&self) -> &DeploymentIndex {
        &self.index
    }

    /// The target at `ix` (`None` for an index of another snapshot).
    #[inline]
    pub fn get(&self, ix: DeploymentIx) -> Option<&Target> {
        self.targets.get(ix)
    }

    /// The target with this id.
    pub fn by_id(&self, id: &DeploymentId) -> Option<&Target> {
        self.index.ix(id).and_then(|ix| self.get(ix))
    }

    /// Every target, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &Target> + '_ {
        self.targets.iter()
    }

    /// The targets of `model_group`, in order.
    pub fn group<'a>(&'a self, model_group: &'a str) -> impl Iterator<Item = &'a Target> + 'a {
        self.iter().filter(move |t| &*t.model_name == model_group)
    }

    /// How many targets.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }
}
