//! The spans a routed call opens, for distributed tracing: one `attempt` span per deployment
//! called, a child of the span the call runs in (the gateway's request span), with the
//! OpenTelemetry GenAI semantic-convention attributes and ferrolite's own. They are `tracing`
//! spans of the target [`TARGET`], at level INFO: a subscriber that exports them (the facade
//! crate's `otel` feature, through tracing-opentelemetry) sees them; any other subscriber
//! should leave that target out, and then a span costs a disabled callsite's branch and each
//! record a check of that span. No prompt or answer text and no key is recorded.

use ferrolite_types::{Deployment, DeploymentId, ErrorClass, Usage};
use tracing::Span;
use tracing::field::{Empty, Field, Value};

use crate::call::Call;

/// The target of the request and attempt spans (and the only one an exporting layer needs).
pub const TARGET: &str = "ferrolite_otel";

/// A call's span: the attempt on `deployment` (`id`) about to be made, numbered from the
/// request's state (its attempts so far, retries, fallbacks, the backoff just waited). `None`
/// while nothing exports it (boxed otherwise: a call's future stays as small as untraced).
pub(crate) fn attempt(
    call: &Call<'_>,
    deployment: &Deployment,
    id: &DeploymentId,
) -> Option<Box<Span>> {
    // The values are computed only when the span is enabled (`info_span!` evaluates its fields
    // then), and given at once: one visit of the subscriber, where a `record` per field costs
    // one visit each.
    let request = call.request;
    let span = tracing::info_span!(
        target: TARGET,
        "attempt",
        otel.name = format!(
            "{} {}",
            operation(&request.body),
            model_name(&deployment.model)
        ),
        otel.kind = "client",
        otel.status_code = Empty,
        gen_ai.operation.name = operation(&request.body),
        gen_ai.provider.name = deployment.provider().ok().map(|p| provider_name(p.as_str()).to_string()),
        gen_ai.system = deployment.provider().ok().map(|p| provider_name(p.as_str()).to_string()),
        gen_ai.request.model = model_name(&deployment.model),
        gen_ai.request.max_tokens = request.max_tokens.map(int),
        gen_ai.request.temperature = request
            .body
            .get("temperature")
            .and_then(serde_json::Value::as_f64),
        gen_ai.response.model = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        server.address = deployment.api_base.as_deref().and_then(host_of),
        ferrolite.deployment.id = id.as_str(),
        ferrolite.model_group = deployment.model_name.as_str(),
        ferrolite.attempt = i64::from(call.attempts) + 1,
        ferrolite.retry = i64::from(call.retries),
        ferrolite.retry.wait_ms = i64::from(call.waited_ms),
        ferrolite.fallback = i64::from(call.fallbacks),
        ferrolite.outcome = Empty,
        error.type = Empty,
    );
    (!span.is_disabled()).then(|| Box::new(span))
}

/// Records an attempt that answered: the model the answer names, the usage.
pub(crate) fn answered(span: Option<&Span>, model: Option<&str>, usage: Option<&Usage>) {
    let Some(span) = span else {
        return;
    };
    record_all(
        span,
        [
            ("ferrolite.outcome", &"success"),
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

/// Records an attempt that failed with `class` (its error class, `error.type`).
pub(crate) fn failed(span: Option<&Span>, class: &ErrorClass) {
    let Some(span) = span else {
        return;
    };
    record_all(
        span,
        [
            ("ferrolite.outcome", &"failure"),
            ("otel.status_code", &"error"),
            ("error.type", &crate::explain::class_label(class)),
        ],
    );
}

/// Records `values` (a field's name and its value; a `None` records nothing) in `span` at
/// once: the subscriber is visited once for them all, where [`Span::record`] visits it per
/// field (the registry's lookup, each layer's filter, the exporter's lock on the span's data).
/// A name that is not a field of the span is left out.
pub fn record_all<const N: usize>(span: &Span, values: [(&str, &dyn Value); N]) {
    let Some(metadata) = span.metadata() else {
        return;
    };
    let fields = metadata.fields();
    let found: [Option<Field>; N] = values.map(|(name, _)| fields.field(name));
    let Some(any) = found.iter().flatten().next() else {
        return;
    };
    let pairs: [(&Field, Option<&dyn Value>); N] =
        std::array::from_fn(
            |i| match (found.get(i).and_then(Option::as_ref), values.get(i)) {
                (Some(field), Some((_, value))) => (field, Some(*value)),
                _ => (any, None),
            },
        );
    span.record_all(&fields.value_set(&pairs));
}

/// GenAI's `gen_ai.operation.name` of a request body: `chat` (messages), `text_completion`
/// (prompt), `embeddings` (input).
pub fn operation(body: &serde_json::Value) -> &'static str {
    if body.get("messages").is_some() {
        "chat"
    } else if body.get("prompt").is_some() {
        "text_completion"
    } else if body.get("input").is_some() {
        "embeddings"
    } else {
        "chat"
    }
}

/// The model a deployment calls, without LiteLLM's provider prefix.
fn model_name(model: &str) -> &str {
    model.split_once('/').map_or(model, |(_, name)| name)
}

/// GenAI's `gen_ai.provider.name` for a LiteLLM provider name (the well-known values of the
/// semantic conventions; any other provider as LiteLLM names it).
fn provider_name(provider: &str) -> &str {
    match provider {
        "azure" | "azure_ai" => "azure.ai.openai",
        "bedrock" | "bedrock_converse" => "aws.bedrock",
        "vertex_ai" | "vertex_ai_beta" => "gcp.vertex_ai",
        "gemini" => "gcp.gemini",
        "mistral" => "mistral_ai",
        "xai" => "x_ai",
        other => other,
    }
}

/// The host of an `api_base` (no scheme, credentials, port or path).
fn host_of(base: &str) -> Option<&str> {
    let rest = base.split_once("://").map_or(base, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = if let Some(v6) = host.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        host.split(':').next()?
    };
    (!host.is_empty()).then_some(host)
}

/// A count as the signed integer OpenTelemetry's attributes hold (tracing-opentelemetry
/// exports a `u64` as text).
pub fn int(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_of_an_api_base_leaves_out_scheme_credentials_port_and_path() {
        assert_eq!(
            host_of("https://user:pw@api.example.com:8443/v1?x=1"),
            Some("api.example.com")
        );
        assert_eq!(host_of("http://127.0.0.1:9000"), Some("127.0.0.1"));
        assert_eq!(host_of("http://[::1]:9000/v1"), Some("::1"));
        assert_eq!(host_of("example.com/v1"), Some("example.com"));
        assert_eq!(host_of("https:///v1"), None);
    }

    #[test]
    fn providers_take_the_semantic_conventions_names() {
        assert_eq!(provider_name("bedrock"), "aws.bedrock");
        assert_eq!(provider_name("azure"), "azure.ai.openai");
        assert_eq!(provider_name("openai"), "openai");
        assert_eq!(model_name("openai/gpt-4o"), "gpt-4o");
        assert_eq!(model_name("gpt-4o"), "gpt-4o");
    }
}
