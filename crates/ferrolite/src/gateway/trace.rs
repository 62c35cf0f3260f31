//! The request's span for distributed tracing (exported by `ferrolite::otel`, feature `otel`):
//! one per call, the parent of the router's attempt spans, continuing the client's trace
//! (`traceparent`, `tracestate`). It records the call's HTTP side (method, route, status), its
//! id (`x-litellm-call-id`), the model group, whether it streams, the route decision (the
//! deployment picked, the attempts, retries and fallbacks) and the GenAI attributes of the
//! answer (its model, its token counts). No prompt or answer text, no key.
//!
//! While nothing exports the span's target it is disabled: creating it is a callsite's branch,
//! and every record below returns at its first check.

use axum::http::HeaderMap;
use ferrolite_router::spans::{TARGET, int, record_all};
use ferrolite_router::{Request, RouterResponse, RouterStream};
use ferrolite_types::Usage;
use tracing::Span;
use tracing::field::Empty;

/// The request span of a call to `route` (the path it was routed by) with id `id`.
pub(super) fn request(route: &'static str, id: &str, headers: &HeaderMap) -> Span {
    // The values known now are given at creation (computed only when the span is enabled);
    // the others are recorded a few at a time ([`record_all`]).
    let span = tracing::info_span!(
        target: TARGET,
        "request",
        otel.name = format!("POST {route}"),
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = "POST",
        http.route = route,
        http.response.status_code = Empty,
        ferrolite.request.id = id,
        ferrolite.model_group = Empty,
        ferrolite.stream = Empty,
        gen_ai.operation.name = Empty,
        gen_ai.request.model = Empty,
        gen_ai.request.max_tokens = Empty,
        gen_ai.request.temperature = Empty,
        gen_ai.response.model = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        ferrolite.route.deployment = Empty,
        ferrolite.route.model_group = Empty,
        ferrolite.route.attempts = Empty,
        ferrolite.route.retries = Empty,
        ferrolite.route.fallbacks = Empty,
        ferrolite.cache_hit = Empty,
    );
    if span.is_disabled() {
        return span;
    }
    #[cfg(feature = "otel")]
    crate::otel::continue_trace(&span, headers);
    #[cfg(not(feature = "otel"))]
    let _ = headers;
    span
}

/// The router's request, as the span tells it: the model group, streaming or not, the
/// operation and what the body asks of the model.
pub(super) fn routing(span: &Span, request: &Request) {
    if span.is_disabled() {
        return;
    }
    let body = &request.body;
    // A Messages or Responses request is a chat, whatever its canonical body holds.
    let operation = if request.native.is_some() {
        "chat"
    } else {
        ferrolite_router::spans::operation(body)
    };
    record_all(
        span,
        [
            ("ferrolite.model_group", &request.model.as_str()),
            ("ferrolite.stream", &request.stream),
            ("gen_ai.operation.name", &operation),
            ("gen_ai.request.model", &request.model.as_str()),
            ("gen_ai.request.max_tokens", &request.max_tokens.map(int)),
            (
                "gen_ai.request.temperature",
                &body.get("temperature").and_then(serde_json::Value::as_f64),
            ),
        ],
    );
}

/// A whole answer: the route decision, the model that answered, the usage.
pub(super) fn answered(span: &Span, answer: &RouterResponse) {
    if span.is_disabled() {
        return;
    }
    decision(
        span,
        answer.deployment_id.as_str(),
        &answer.model_group,
        (
            answer.attempts,
            answer.attempted_retries,
            answer.attempted_fallbacks,
        ),
        answer.cache_hit,
    );
    let model: Option<String> = answer.body.get("model");
    let usage = answer.usage.as_ref();
    record_all(
        span,
        [
            ("gen_ai.response.model", &model),
            (
                "gen_ai.usage.input_tokens",
                &usage.map(|u| int(u.prompt_tokens)),
            ),
            (
                "gen_ai.usage.output_tokens",
                &usage.map(|u| int(u.completion_tokens)),
            ),
        ],
    );
}

/// A stream that started: the route decision (its usage comes at its end, [`usage`]).
pub(super) fn streaming(span: &Span, stream: &RouterStream) {
    if span.is_disabled() {
        return;
    }
    decision(
        span,
        stream.deployment_id.as_str(),
        &stream.model_group,
        (
            stream.attempts,
            stream.attempted_retries,
            stream.attempted_fallbacks,
        ),
        stream.cache_hit,
    );
}

fn decision(
    span: &Span,
    deployment: &str,
    group: &str,
    (attempts, retries, fallbacks): (u32, u32, u32),
    cache_hit: bool,
) {
    record_all(
        span,
        [
            ("ferrolite.route.deployment", &deployment),
            ("ferrolite.route.model_group", &group),
            ("ferrolite.route.attempts", &i64::from(attempts)),
            ("ferrolite.route.retries", &i64::from(retries)),
            ("ferrolite.route.fallbacks", &i64::from(fallbacks)),
            ("ferrolite.cache_hit", &cache_hit),
        ],
    );
}

/// The call's token counts.
pub(super) fn usage(span: &Span, usage: Option<&Usage>) {
    if span.is_disabled() {
        return;
    }
    if let Some(usage) = usage {
        record_all(
            span,
            [
                ("gen_ai.usage.input_tokens", &int(usage.prompt_tokens)),
                ("gen_ai.usage.output_tokens", &int(usage.completion_tokens)),
            ],
        );
    }
}

/// The answer's status (a 5xx marks the span an error, as OpenTelemetry's HTTP conventions
/// say for a server).
pub(super) fn status(span: &Span, status: u16) {
    if span.is_disabled() {
        return;
    }
    // A 5xx marks the span an error; `None` records nothing.
    let error = (status >= 500).then_some("error");
    record_all(
        span,
        [
            ("http.response.status_code", &i64::from(status)),
            ("otel.status_code", &error),
        ],
    );
}
