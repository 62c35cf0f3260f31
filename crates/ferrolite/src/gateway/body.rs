//! Step 2, body: the request read and checked (size, JSON object, `model`, the endpoint's
//! input), then made the router's [`Request`]: its tags where LiteLLM's proxy reads them, the
//! `Cache-Control` header as the body's `cache` controls, and its id.

use axum::body::Body;
use axum::http::{HeaderMap, header};
use ferrolite_router::Request;

use super::errors::GatewayError;
use crate::config::ApiKey;

/// A request body that passed the checks.
pub(super) struct Parsed {
    /// The JSON object.
    pub(super) body: serde_json::Value,
    /// The model group asked for.
    pub(super) model: String,
    /// Whether a stream's client asked for usage (`stream_options.include_usage`).
    pub(super) include_usage: bool,
}

/// Reads `body` (413 over `limit` bytes) and checks it: a JSON object (400 otherwise) with a
/// `model` and the input `endpoint` needs.
pub(super) async fn read(
    body: Body,
    limit: usize,
    endpoint: Endpoint,
) -> Result<Parsed, GatewayError> {
    let body = read_object(body, limit).await?;
    let Some(model) = body
        .get("model")
        .and_then(|m| m.as_str())
        .map(str::to_string)
    else {
        return Err(GatewayError::NoModel);
    };
    endpoint.check_input(&body)?;
    let include_usage = body
        .get("stream_options")
        .and_then(|options| options.get("include_usage"))
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    Ok(Parsed {
        body,
        model,
        include_usage,
    })
}

/// Reads `body` (413 over `limit` bytes) as one JSON object (400 otherwise).
pub(super) async fn read_object(
    body: Body,
    limit: usize,
) -> Result<serde_json::Value, GatewayError> {
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| GatewayError::BodyTooLarge(limit))?;
    match serde_json::from_slice(&bytes) {
        Ok(body @ serde_json::Value::Object(_)) => Ok(body),
        Ok(_) => Err(GatewayError::NotAnObject),
        Err(e) => Err(GatewayError::InvalidJson(e.to_string())),
    }
}

/// The router's request for `body`: the `Cache-Control` header applied, the tags taken out
/// (with the API key's), `id` its request id.
pub(super) fn request(
    mut body: serde_json::Value,
    model: &str,
    headers: &HeaderMap,
    key: Option<&ApiKey>,
    id: String,
) -> Request {
    cache_control(headers, &mut body);
    let tags = request_tags(headers, &mut body, key);
    let mut request = Request::new(model, body);
    request.request_id = Some(id);
    request.tags = tags;
    request
}

/// `Cache-Control: no-cache` / `no-store` on the request, as the body's `cache` controls
/// (LiteLLM's names); a `cache` value that is not an object is left for the router to refuse.
fn cache_control(headers: &HeaderMap, body: &mut serde_json::Value) {
    let Some(value) = headers
        .get(header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
    else {
        return;
    };
    let directives: Vec<String> = value
        .split(',')
        .map(|d| d.trim().to_ascii_lowercase())
        .filter(|d| d == "no-cache" || d == "no-store")
        .collect();
    if directives.is_empty() {
        return;
    }
    let Some(object) = body.as_object_mut() else {
        return;
    };
    let cache = object
        .entry("cache")
        .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
    if let Some(cache) = cache.as_object_mut() {
        for directive in directives {
            cache.insert(directive, serde_json::Value::Bool(true));
        }
    }
}

/// Which OpenAI endpoint a call came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Endpoint {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/completions`.
    Completions,
    /// `/v1/embeddings`.
    Embeddings,
}

impl Endpoint {
    /// The endpoint of a call to `path`.
    pub(super) fn of(path: &str) -> Self {
        if path.ends_with("chat/completions") {
            Endpoint::Chat
        } else if path.ends_with("embeddings") {
            Endpoint::Embeddings
        } else {
            Endpoint::Completions
        }
    }

    /// The 400 of a body without the input this endpoint needs (`messages` a list, `prompt`,
    /// `input`).
    fn check_input(self, body: &serde_json::Value) -> Result<(), GatewayError> {
        let (field, valid, expected) = match self {
            Endpoint::Chat => (
                "messages",
                body.get("messages").is_some_and(|m| m.is_array()),
                "a list of messages",
            ),
            Endpoint::Completions => (
                "prompt",
                body.get("prompt")
                    .is_some_and(|p| p.is_string() || p.is_array()),
                "a string or a list",
            ),
            Endpoint::Embeddings => (
                "input",
                body.get("input")
                    .is_some_and(|i| i.is_string() || i.is_array()),
                "a string or a list",
            ),
        };
        if valid {
            return Ok(());
        }
        let message = match body.get(field) {
            None | Some(serde_json::Value::Null) => format!("`{field}` is required: {expected}"),
            Some(other) => format!("`{field}` must be {expected}, got {other}"),
        };
        Err(GatewayError::MissingInput { field, message })
    }
}

/// The request's tags, where LiteLLM's proxy reads them: the API key's `tags`, the
/// `x-litellm-tags` header (comma-separated), the body's `tags`, `metadata.tags` and
/// `litellm_metadata.tags` (lists of strings; other shapes carry no tags), without repeats.
/// The body's tags are removed from it: they are for the router, not the deployment.
fn request_tags(
    headers: &HeaderMap,
    body: &mut serde_json::Value,
    key: Option<&ApiKey>,
) -> Vec<String> {
    let mut tags: Vec<String> = key.map(|k| k.tags.clone()).unwrap_or_default();
    for value in headers.get_all("x-litellm-tags") {
        if let Ok(value) = value.to_str() {
            tags.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_string),
            );
        }
    }
    let strings = |value: Option<serde_json::Value>| -> Vec<String> {
        match value {
            Some(serde_json::Value::Array(items)) => items
                .into_iter()
                .filter_map(|item| match item {
                    serde_json::Value::String(tag) if !tag.trim().is_empty() => Some(tag),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    };
    if let Some(object) = body.as_object_mut() {
        tags.extend(strings(object.remove("tags")));
        for field in ["metadata", "litellm_metadata"] {
            let Some(metadata) = object.get_mut(field).and_then(|m| m.as_object_mut()) else {
                continue;
            };
            if !metadata.get("tags").is_some_and(|t| t.is_array()) {
                continue;
            }
            tags.extend(strings(metadata.remove("tags")));
            if metadata.is_empty() {
                object.remove(field);
            }
        }
    }
    // Without repeats, first seen first: a handful of tags, so no set and no clones.
    let mut unique: Vec<String> = Vec::with_capacity(tags.len());
    for tag in tags {
        if !unique.contains(&tag) {
            unique.push(tag);
        }
    }
    unique
}
