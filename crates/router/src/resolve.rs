//! Resolution (LiteLLM's `_common_checks_available_deployment`): the model a request names -> where
//! the call goes (a [`Destination`]), the deployments it covers, and the model each deployment is
//! called with.

use ferrolite_types::{Deployment, DeploymentId, DeploymentIx};

use crate::snapshot::Snapshot;
use crate::wildcard::wildcard_group;
use crate::{RouterError, RouterSettings};

/// Where a request (or a fallback hop) goes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Destination {
    /// A model group, optionally one `order` tier of it.
    Group { name: String, order: Option<u32> },
    /// One deployment, named by id (cooldowns do not apply: LiteLLM serves an id target even
    /// while it cools down).
    Deployment { ix: DeploymentIx, id: String },
    /// The deployments whose `litellm_params.model` is the name asked for (resolution step 7),
    /// whatever their groups.
    Model {
        name: String,
        members: Vec<DeploymentIx>,
    },
}

impl Destination {
    /// The name fallback chains and retry policies are looked up by.
    pub(crate) fn label(&self) -> &str {
        match self {
            Destination::Group { name, .. } | Destination::Model { name, .. } => name,
            Destination::Deployment { id, .. } => id,
        }
    }
}

/// Resolution (LiteLLM's `_common_checks_available_deployment`): a model group, an alias of one, a
/// deployment id, a wildcard group, the deployments with that `litellm_params.model`, else the
/// first default fallback.
pub(crate) fn resolve(
    snapshot: &Snapshot,
    settings: &RouterSettings,
    model: &str,
) -> Result<Destination, RouterError> {
    let group = |name: &str| Destination::Group {
        name: name.to_string(),
        order: None,
    };
    if snapshot.groups.contains_key(model) {
        return Ok(group(model));
    }
    if let Some(target) = settings.model_group_alias.get(model) {
        return Ok(group(target));
    }
    if let Some(target) = snapshot.targets.by_id(&DeploymentId::new(model)) {
        return Ok(Destination::Deployment {
            ix: target.ix,
            id: model.to_string(),
        });
    }
    // Wildcard groups (`openai/*`, then the catch-all `*`), most specific first.
    if let Some((pattern, _)) = wildcard_group(&snapshot.patterns, model) {
        return Ok(group(pattern));
    }
    // A deployment's own model name (`litellm_params.model`, e.g. `azure/gpt-4o-eu`).
    let members: Vec<DeploymentIx> = snapshot
        .targets
        .iter()
        .filter(|t| snapshot.deployment(t.ix).is_some_and(|d| d.model == model))
        .map(|t| t.ix)
        .collect();
    if !members.is_empty() {
        return Ok(Destination::Model {
            name: model.to_string(),
            members,
        });
    }
    // LiteLLM's last resort: the first default fallback (`fallbacks: [{"*": [...]}]`).
    if let Some(first) = settings.default_fallbacks.first() {
        if first != model {
            return resolve(snapshot, settings, first);
        }
    }
    Err(RouterError::UnknownModel {
        model: model.to_string(),
    })
}

/// The deployments of a destination, in configuration order (an `order` tier is chosen among
/// the available ones by the order filter).
pub(crate) fn members<'s>(
    snapshot: &'s Snapshot,
    destination: &'s Destination,
) -> impl Iterator<Item = DeploymentIx> + 's {
    let (one, group) = match destination {
        Destination::Deployment { ix, .. } => (Some(*ix), &[][..]),
        Destination::Model { members, .. } => (None, members.as_slice()),
        Destination::Group { name, .. } => (
            None,
            snapshot.groups.get(name).map_or(&[][..], |g| g.members()),
        ),
    };
    one.into_iter().chain(group.iter().copied())
}

/// The model a deployment is called with: its own, or for a wildcard deployment (`openai/*` in
/// a group `openai/*`, `*` in the group `*`) the requested model put in place of the `*`.
pub(crate) fn model_for<'d>(
    deployment: &'d Deployment,
    requested: &str,
) -> std::borrow::Cow<'d, str> {
    if deployment.model.contains('*') {
        let group = std::slice::from_ref(&deployment.model_name);
        if let Some((_, capture)) = wildcard_group(group, requested) {
            return deployment.model.replacen('*', &capture, 1).into();
        }
    }
    deployment.model.as_str().into()
}

/// A deployment's own `max_tokens` (`litellm_params`), sent with calls that set none.
pub(crate) fn default_max_tokens(deployment: Option<&Deployment>) -> Option<u64> {
    deployment
        .and_then(|d| d.default_params.get("max_tokens"))
        .and_then(serde_json::Value::as_u64)
}
