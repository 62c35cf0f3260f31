//! The backends of providers with a protocol of their own (feature `http`), beside the
//! OpenAI-compatible one in [`crate::http`]: each translates the canonical chat request to its
//! provider's protocol ([`ferrolite_protocols`]), sends it with the provider's authentication,
//! and translates the answer (whole or streamed) back, classifying failures as the OpenAI one
//! does so that retries, cooldowns and fallbacks treat every provider alike.
//!
//! [`HttpBackend`] sends a deployment here when its provider's protocol is one of
//! [`NATIVE`]; a caller's request already in that protocol ([`BackendRequest::native`]) passes
//! through untranslated.

use ferrolite_router::{BackendFuture, BackendRequest, BackendStreamFuture, Prepared};
use ferrolite_types::{Deployment, Protocol};

use crate::http::HttpBackend;

pub(crate) mod anthropic;
pub(crate) mod bedrock;
pub(crate) mod gemini;

/// The protocols with a backend of their own here.
const NATIVE: &[Protocol] = &[
    Protocol::AnthropicMessages,
    Protocol::BedrockConverse,
    Protocol::Gemini,
];

/// The protocol `deployment` is called in, when it is not OpenAI's.
pub(crate) fn native(deployment: &Deployment) -> Option<Protocol> {
    let provider = deployment.provider().ok()?;
    let protocol = Protocol::of_provider(provider.as_str());
    NATIVE.contains(&protocol).then_some(protocol)
}

/// Calls `deployment`, which speaks `protocol`.
pub(crate) fn call<'a>(
    backend: &'a HttpBackend,
    protocol: Protocol,
    deployment: &'a Deployment,
    request: &'a BackendRequest,
) -> BackendFuture<'a> {
    // Each provider's module adds its arm.
    match protocol {
        Protocol::AnthropicMessages => anthropic::call(backend, deployment, request),
        Protocol::BedrockConverse => bedrock::call(backend, deployment, request),
        Protocol::Gemini => gemini::call(backend, deployment, request),
        _ => unreachable_protocol(protocol),
    }
}

/// Streams a call of `deployment`, which speaks `protocol`.
pub(crate) fn stream<'a>(
    backend: &'a HttpBackend,
    protocol: Protocol,
    deployment: &'a Deployment,
    request: &'a BackendRequest,
) -> BackendStreamFuture<'a> {
    // Each provider's module adds its arm.
    match protocol {
        Protocol::AnthropicMessages => anthropic::stream(backend, deployment, request),
        Protocol::BedrockConverse => bedrock::stream(backend, deployment, request),
        Protocol::Gemini => gemini::stream(backend, deployment, request),
        _ => Box::pin(async move { Err(not_native(protocol)) }),
    }
}

/// What `deployment`, which speaks `protocol`, prepares once per snapshot.
pub(crate) fn prepare(
    backend: &HttpBackend,
    protocol: Protocol,
    deployment: &Deployment,
) -> Option<Prepared> {
    match protocol {
        Protocol::BedrockConverse => bedrock::prepare(deployment),
        Protocol::Gemini => gemini::prepare(backend, deployment),
        _ => None,
    }
}

fn unreachable_protocol<'a>(protocol: Protocol) -> BackendFuture<'a> {
    Box::pin(async move { Err(not_native(protocol)) })
}

/// The error of a protocol [`native`] never gives.
fn not_native(protocol: Protocol) -> ferrolite_router::BackendError {
    ferrolite_router::BackendError::new(
        ferrolite_types::ErrorClass::BadRequest { status: 400 },
        format!("no backend speaks {protocol}"),
    )
}
