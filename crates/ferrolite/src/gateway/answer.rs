//! Step 5, answer: a routed call's JSON answer with `model` set back to what the client asked
//! for, and LiteLLM's `x-litellm-*` headers (a stream's are the same, [`super::sse`]).

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use ferrolite_router::{RouterResponse, RouterStream};

/// The answer to a call: the deployment's bytes with only `model` set to what the client asked
/// for (spliced in where it stands: key order, numbers and escapes stay the upstream's), and
/// the answer headers.
pub(super) fn json(answer: RouterResponse, model: String) -> Response {
    let mut headers = HeaderMap::new();
    litellm_headers(&mut headers, Answered::from(&answer));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let mut response = Response::new(axum::body::Body::from(answer.body.with_model(&model)));
    *response.headers_mut() = headers;
    response
}

/// What the answer headers say about a routed call.
pub(super) struct Answered<'a> {
    deployment: &'a str,
    group: &'a str,
    retries: u32,
    max_retries: Option<u32>,
    fallbacks: u32,
    api_base: Option<&'a str>,
    cost: Option<f64>,
    overhead: Duration,
    cache_key: Option<&'a str>,
    cache_hit: bool,
}

impl<'a> From<&'a RouterResponse> for Answered<'a> {
    fn from(answer: &'a RouterResponse) -> Self {
        Answered {
            deployment: answer.deployment_id.as_str(),
            group: &answer.model_group,
            retries: answer.attempted_retries,
            max_retries: answer.max_retries,
            fallbacks: answer.attempted_fallbacks,
            api_base: answer.api_base.as_deref(),
            cost: answer.response_cost,
            overhead: answer.overhead,
            cache_key: answer.cache_key.as_deref(),
            cache_hit: answer.cache_hit,
        }
    }
}

impl<'a> From<&'a RouterStream> for Answered<'a> {
    fn from(stream: &'a RouterStream) -> Self {
        Answered {
            deployment: stream.deployment_id.as_str(),
            group: &stream.model_group,
            retries: stream.attempted_retries,
            max_retries: stream.max_retries,
            fallbacks: stream.attempted_fallbacks,
            api_base: stream.api_base.as_deref(),
            // A stream's cost is known at its end; a replayed one costs nothing.
            cost: stream.cache_hit.then_some(0.0),
            overhead: stream.overhead,
            cache_key: stream.cache_key.as_deref(),
            cache_hit: stream.cache_hit,
        }
    }
}

/// The headers LiteLLM's proxy sets on an answer, plus ferrolite's overhead and cache-hit
/// headers.
pub(super) fn litellm_headers(headers: &mut HeaderMap, answered: Answered<'_>) {
    let mut set = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    set("x-litellm-model-id", answered.deployment.to_string());
    set("x-litellm-model-group", answered.group.to_string());
    set("x-litellm-attempted-retries", answered.retries.to_string());
    if let Some(max) = answered.max_retries {
        set("x-litellm-max-retries", max.to_string());
    }
    if let Some(base) = answered.api_base {
        set("x-litellm-model-api-base", base.to_string());
    }
    set(
        "x-litellm-attempted-fallbacks",
        answered.fallbacks.to_string(),
    );
    if let Some(cost) = answered.cost {
        set("x-litellm-response-cost", format!("{cost}"));
    }
    if let Some(key) = answered.cache_key {
        set("x-litellm-cache-key", key.to_string());
        set("x-ferrolite-cache-hit", answered.cache_hit.to_string());
    }
    set(
        "x-ferrolite-overhead-ms",
        format!("{:.3}", answered.overhead.as_secs_f64() * 1e3),
    );
}
