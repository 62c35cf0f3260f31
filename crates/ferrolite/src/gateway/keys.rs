//! Step 3, keys: an API key's model groups (403 outside them), its rpm/tpm limits given to the
//! router with the request (the router admits them once per request, in the shared state, with
//! the token count a deployment's limits use, and settles the tpm to the tokens the answer
//! used: [`ferrolite_router::KeyLimits`]), and its budget tag.

use ferrolite_router::{KeyLimits, Request};

use super::auth::Caller;
use super::errors::GatewayError;
use crate::config::ApiKey;

/// Readies the call of `request` by `caller`: nothing to do for the master key or anyone; an
/// API key's groups (403), limits and budget tag otherwise.
pub(super) fn admit(caller: &Caller<'_>, request: &mut Request) -> Result<(), GatewayError> {
    let Some(key) = caller.key() else {
        return Ok(());
    };
    allowed(key, &request.model)?;
    if key.rpm.is_some() || key.tpm.is_some() {
        request.key_limits = Some(KeyLimits {
            name: key.name.clone(),
            rpm: key.rpm,
            tpm: key.tpm,
        });
    }
    if key.budget {
        request.budget_tags.push(key.budget_tag());
    }
    Ok(())
}

/// The 403 of a key that may not call model group `model`.
fn allowed(key: &ApiKey, model: &str) -> Result<(), GatewayError> {
    if key.models.is_empty() || key.models.iter().any(|m| m == model) {
        return Ok(());
    }
    Err(GatewayError::ModelNotAllowed {
        key: key.name.clone(),
        model: model.to_string(),
        allowed: key.models.clone(),
    })
}
