//! `GET /v1/models` and `GET /v1/models/{id}`: the names a caller may call.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use super::auth::Caller;
use super::errors::GatewayError;
use super::state::Gateway;

/// The names a caller may call, sorted: the model groups and the `model_group_alias` names
/// (`hidden` ones too with `with_hidden`), only those of its key's groups when the key has
/// some. `Err` with the 401 of a caller that may not call.
fn visible_models(
    gateway: &Gateway,
    headers: &HeaderMap,
    with_hidden: bool,
) -> Result<Vec<String>, GatewayError> {
    let settings = gateway.settings.load_full();
    let caller = Gateway::caller(&settings, headers)?;
    let allowed: Option<&Vec<String>> = match caller {
        Caller::Key(key) => Some(&key.models).filter(|m| !m.is_empty()),
        _ => None,
    };
    let router = gateway.router.load();
    let mut names = router.model_groups();
    names.extend(
        router
            .settings()
            .model_group_alias
            .keys()
            .filter(|alias| with_hidden || !settings.hidden_models.contains(alias))
            .cloned(),
    );
    names.retain(|name| allowed.as_ref().is_none_or(|a| a.contains(name)));
    names.sort();
    names.dedup();
    Ok(names)
}

fn model_object(id: &str) -> serde_json::Value {
    serde_json::json!({"id": id, "object": "model", "created": 0, "owned_by": "ferrolite"})
}

/// `GET /v1/models`: the model groups and the aliases that are not `hidden`.
pub(super) async fn models(State(gateway): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    let names = match visible_models(&gateway, &headers, false) {
        Ok(names) => names,
        Err(refused) => return refused.into_response(),
    };
    let data: Vec<serde_json::Value> = names.iter().map(|id| model_object(id)).collect();
    axum::Json(serde_json::json!({"object": "list", "data": data})).into_response()
}

/// `GET /v1/models/{id}`: one model group or alias; 404 in OpenAI's shape (`model_not_found`)
/// for a name this gateway does not serve to the caller.
pub(super) async fn model(
    State(gateway): State<Arc<Gateway>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    let names = match visible_models(&gateway, &headers, true) {
        Ok(names) => names,
        Err(refused) => return refused.into_response(),
    };
    if names.contains(&id) {
        return axum::Json(model_object(&id)).into_response();
    }
    GatewayError::ModelNotFound(id).into_response()
}
