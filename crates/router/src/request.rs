//! A request as the router takes it, and what it answers.

use std::time::Duration;

use ferrolite_types::{
    ApproxTokenCounter, ChatMessage, DeploymentId, ManagedResponseId, Protocol, TokenCounter, Usage,
};

use crate::RouterError;

/// One call: the model group (or alias, or deployment id) and the body, plus the per-request
/// routing controls LiteLLM accepts.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// The model group, an alias of one, or a deployment id.
    pub model: String,
    /// The body as the caller sent it (chat completion, completion or embedding request).
    pub body: serde_json::Value,
    /// Input tokens, when the caller counted them; otherwise the router estimates them from
    /// `messages`, `prompt` or `input`, once per request.
    pub input_tokens: Option<u64>,
    /// The request's `max_tokens`, or its `max_completion_tokens` (the larger when both are
    /// given).
    pub max_tokens: Option<u64>,
    /// The request's `n`: choices asked for, each up to `max_tokens` long.
    pub n: Option<u64>,
    /// Whether a stream is asked for.
    pub stream: bool,
    /// The request's tags (budgets; tag routing comes with the filters of a later step).
    pub tags: Vec<String>,
    /// `num_retries` for this request (beats the deployment's and the router's).
    pub num_retries: Option<u32>,
    /// `timeout` per attempt for this request.
    pub timeout: Option<Duration>,
    /// An overall deadline for this request (beats the router's `request_deadline`).
    pub deadline: Option<Duration>,
    /// `disable_fallbacks`.
    pub disable_fallbacks: bool,
    /// `priority` (0-255, lower first): the request's place in the wait queue when its group
    /// has no capacity (as LiteLLM's `Scheduler`; only with `RouterSettings::wait_queue`).
    pub priority: Option<u8>,
    /// The affinity key (a user's API key, a session id) for `deployment_affinity`: requests
    /// with the same key stay on one deployment of a group while it can take them. Only a hash
    /// of it is stored.
    pub affinity_key: Option<String>,
    /// Client-side `fallbacks`: the groups (or deployment ids) to try, in order, when the
    /// requested group fails; used instead of the configured chains (LiteLLM's
    /// client-side fallbacks).
    pub fallbacks: Vec<String>,
    /// Budget scopes charged besides `tags` (as tag budgets), never used for routing: the
    /// gateway puts an API key's budget here.
    pub budget_tags: Vec<String>,
    /// An id for this request that reaches the deployment (the HTTP backend sends it as
    /// `x-request-id`), so a provider's logs and ferrolite's name the same call.
    pub request_id: Option<String>,
    /// `allowed_model_region` (`eu`, `us`): with pre-call checks on, only deployments whose
    /// `region_name` is this region serve the request (a deployment without one does not).
    pub allowed_model_region: Option<String>,
    /// The calling API key's own rate limits (a gateway's `api_keys` entry): the router admits
    /// them once per request, before the response cache, with the same token estimate as a
    /// deployment's ([`crate::Router::token_estimate`]), and settles the tpm to the tokens the
    /// answer used.
    pub key_limits: Option<KeyLimits>,
    /// The caller's request in its own protocol, when it came in another protocol than the
    /// canonical one (`body` is then its translation): a backend that speaks that protocol
    /// sends it as it is (pass-through) and answers in it.
    pub native: Option<Native>,
    /// Whether to explain how the request is routed: the answer's [`RouterResponse::route`]
    /// (or [`crate::RouterStream::route`]) then tells every deployment left out and why, the
    /// strategy's scores, the pick, every attempt and fallback. Off, nothing is recorded.
    pub explain: bool,
    /// Where the explanation goes when the request fails (it asked for one, [`Request::explain`]):
    /// an error carries no route, so a caller that shows it sets a [`crate::RouteSlot`] here and
    /// takes the route after the error. Unset, a failed request's explanation only reaches the
    /// log and [`crate::Event::Explained`].
    pub failed_route: Option<crate::RouteSlot>,
    /// The request's trace, when it is traced: the context of its span (each attempt's span
    /// is a child of it) and where the attempts' spans go ([`crate::spans`]). Unset, nothing
    /// is traced.
    pub trace: Option<crate::spans::Trace>,
}

/// A request as the caller wrote it, in a protocol other than the canonical chat form
/// ([`Request::native`]). Cloning shares the body.
#[derive(Debug, Clone, PartialEq)]
pub struct Native {
    /// The protocol it is written in.
    pub protocol: Protocol,
    /// The request's body as the caller sent it.
    pub body: std::sync::Arc<serde_json::Value>,
    /// What the router and the backends know of it besides its body, when there is anything
    /// ([`NativeExtras`]; shared: a request's future holds it, and is kept small).
    pub extras: Option<std::sync::Arc<NativeExtras>>,
}

/// What the router and the backends know of a caller's request besides its body
/// ([`Native::extras`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NativeExtras {
    /// What the canonical translation could not carry, when it is not whole: the request is
    /// routed on the rest, and only a deployment that takes the caller's body as it is (one of
    /// its protocol) may answer it; any other refuses the call naming the field.
    pub untranslated: Option<Untranslated>,
    /// Headers of the caller's request for the upstream of its protocol, `(name, value)` with
    /// lowercase names (a Messages caller's `anthropic-beta` and `anthropic-version`): sent
    /// with the body when it passes through, never with a translation.
    pub headers: Vec<(String, String)>,
}

impl Native {
    /// What the canonical translation could not carry ([`NativeExtras::untranslated`]).
    pub fn untranslated(&self) -> Option<&Untranslated> {
        self.extras.as_deref()?.untranslated.as_ref()
    }

    /// The caller's headers for the upstream of its protocol ([`NativeExtras::headers`]).
    pub fn headers(&self) -> &[(String, String)] {
        self.extras
            .as_deref()
            .map_or(&[][..], |extras| extras.headers.as_slice())
    }

    /// The deployment that stored the conversation this request continues: for a Responses
    /// request, the one its `previous_response_id` names when the id is one the router handed
    /// out ([`ManagedResponseId`], LiteLLM's form). The router sends the request there while
    /// that deployment is among the candidates; the backend sends the upstream its own id.
    pub fn continues(&self) -> Option<String> {
        if self.protocol != Protocol::OpenAiResponses {
            return None;
        }
        let id = self.body.get("previous_response_id")?.as_str()?;
        ManagedResponseId::decode(id).map(|id| id.deployment)
    }
}

/// A field of a caller's request its canonical translation could not carry
/// ([`NativeExtras::untranslated`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Untranslated {
    /// The field, as a JSON path in the caller's body (`tools[0].type`).
    pub field: String,
    /// Why it could not be translated.
    pub reason: String,
}

/// An API key's requests and tokens per minute, counted in the shared state under
/// `{api-key:NAME}:rpm` and `{api-key:NAME}:tpm` (sliding minute windows), so every instance
/// agrees. A request over either is refused with [`RouterError::KeyLimited`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyLimits {
    /// The key's name (in its counters' keys and in the refusal).
    pub name: String,
    /// Requests per minute, when limited.
    pub rpm: Option<u64>,
    /// Tokens per minute, when limited (a request holds its estimate until it is answered).
    pub tpm: Option<u64>,
}

/// The body fields that bound a call's output tokens: OpenAI's older `max_tokens` and its
/// newer `max_completion_tokens`.
pub(crate) const OUTPUT_FIELDS: [&str; 2] = ["max_tokens", "max_completion_tokens"];

/// The largest `max_tokens` any request may ask for, whatever the model (2^32 - 1): far above
/// every model's output limit, and low enough that no sum of a request's token figures comes
/// near the 64-bit counters' range.
pub const MAX_TOKENS: u64 = u32::MAX as u64;

/// The most choices (`n`) a request may ask for: OpenAI's limit. With [`MAX_TOKENS`] it bounds
/// a request's output estimate to under 2^39 tokens.
pub const MAX_CHOICES: u64 = 128;

/// Body fields that are routing controls, not provider parameters: read by the router and
/// removed from the body a deployment receives (a provider would refuse them).
pub(crate) const ROUTING_FIELDS: [&str; 4] =
    ["fallbacks", "priority", "num_retries", "disable_fallbacks"];

impl Request {
    /// A request for `model` with `body`.
    pub fn new(model: impl Into<String>, body: serde_json::Value) -> Self {
        let max_tokens = OUTPUT_FIELDS
            .iter()
            .filter_map(|field| body.get(*field).and_then(serde_json::Value::as_u64))
            .max();
        let n = body.get("n").and_then(serde_json::Value::as_u64);
        let priority = body
            .get("priority")
            .and_then(serde_json::Value::as_u64)
            .and_then(|p| u8::try_from(p).ok());
        let stream = body
            .get("stream")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false);
        let num_retries = body
            .get("num_retries")
            .and_then(serde_json::Value::as_u64)
            .and_then(|n| u32::try_from(n).ok());
        let disable_fallbacks = body
            .get("disable_fallbacks")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false);
        // Client-side fallbacks: names, or objects naming a `model`.
        let fallbacks = body
            .get("fallbacks")
            .and_then(serde_json::Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(|item| item.as_str().or_else(|| item.get("model")?.as_str()))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        Request {
            model: model.into(),
            body,
            max_tokens,
            n,
            stream,
            priority,
            num_retries,
            disable_fallbacks,
            fallbacks,
            ..Request::default()
        }
    }

    /// Checks the fields, before any backend is called.
    pub(crate) fn validate(&self) -> Result<(), RouterError> {
        if self.model.trim().is_empty() {
            return Err(RouterError::InvalidRequest {
                field: "model",
                value: format!("{:?}", self.model),
                reason: "a model group, alias or deployment id is required",
            });
        }
        for field in OUTPUT_FIELDS {
            if let Some(value) = self.body.get(field) {
                if !value.is_null() && value.as_u64().is_none_or(|m| m == 0 || m > MAX_TOKENS) {
                    return Err(RouterError::InvalidRequest {
                        field,
                        value: value.to_string(),
                        reason: "a positive integer (at most 4294967295, and the model's output limit)",
                    });
                }
            }
        }
        if let Some(value) = self.body.get("n") {
            if !value.is_null() && value.as_u64().is_none_or(|n| n == 0 || n > MAX_CHOICES) {
                return Err(RouterError::InvalidRequest {
                    field: "n",
                    value: value.to_string(),
                    reason: "an integer from 1 to 128",
                });
            }
        }
        if let Some(value) = self.body.get("priority") {
            if !value.is_null() && value.as_u64().is_none_or(|p| p > 255) {
                return Err(RouterError::InvalidRequest {
                    field: "priority",
                    value: value.to_string(),
                    reason: "an integer from 0 (first) to 255",
                });
            }
        }
        if let Some(value) = self.body.get("fallbacks") {
            let valid = value.is_null()
                || value.as_array().is_some_and(|items| {
                    items.iter().all(|item| {
                        item.as_str().is_some()
                            || item.get("model").and_then(|m| m.as_str()).is_some()
                    })
                });
            if !valid {
                return Err(RouterError::InvalidRequest {
                    field: "fallbacks",
                    value: value.to_string(),
                    reason: "a list of model groups (names, or objects with a `model`)",
                });
            }
        }
        if let Some(value) = self.body.get("num_retries") {
            if !value.is_null() && value.as_u64().is_none_or(|n| n > u64::from(u32::MAX)) {
                return Err(RouterError::InvalidRequest {
                    field: "num_retries",
                    value: value.to_string(),
                    reason: "a non-negative integer",
                });
            }
        }
        for (field, value) in [("timeout", self.timeout), ("deadline", self.deadline)] {
            if value.is_some_and(|d| d.is_zero()) {
                return Err(RouterError::InvalidRequest {
                    field,
                    value: "0s".into(),
                    reason: "must be greater than zero",
                });
            }
        }
        Ok(())
    }

    /// The output tokens a call may produce: `n` x `max_tokens`, where a request without
    /// `max_tokens` takes `default` (a deployment's own `max_tokens`), else 0. Saturating.
    pub fn output_tokens(&self, default: Option<u64>) -> u64 {
        self.n
            .unwrap_or(1)
            .max(1)
            .saturating_mul(self.max_tokens.or(default).unwrap_or(0))
    }

    /// Input tokens: the caller's count, or an estimate from the body (counted once): chat
    /// `messages` (text content, or the text parts of multi-part content), a completion's
    /// `prompt` or an embedding's `input` (a string or a list of strings).
    pub fn input_tokens(&self) -> u64 {
        if let Some(tokens) = self.input_tokens {
            return tokens;
        }
        let counter = ApproxTokenCounter;
        if let Some(messages) = self.body.get("messages").and_then(|m| m.as_array()) {
            let texts: Vec<std::borrow::Cow<'_, str>> =
                messages.iter().map(|m| text_of(m.get("content"))).collect();
            let messages: Vec<ChatMessage<'_>> = messages
                .iter()
                .zip(&texts)
                .map(|(m, content)| ChatMessage {
                    role: m.get("role").and_then(|r| r.as_str()).unwrap_or(""),
                    content,
                    name: m.get("name").and_then(|n| n.as_str()),
                })
                .collect();
            return counter.count_messages(&self.model, &messages) as u64;
        }
        for field in ["prompt", "input"] {
            match self.body.get(field) {
                Some(serde_json::Value::String(text)) => {
                    return counter.count_text(&self.model, text) as u64;
                }
                Some(serde_json::Value::Array(items)) => {
                    return items
                        .iter()
                        .filter_map(|item| item.as_str())
                        .map(|text| counter.count_text(&self.model, text) as u64)
                        .fold(0u64, u64::saturating_add);
                }
                _ => {}
            }
        }
        0
    }
}

/// The text of a message's `content`: a string, or the `text` of its parts.
fn text_of(content: Option<&serde_json::Value>) -> std::borrow::Cow<'_, str> {
    match content {
        Some(serde_json::Value::String(text)) => text.as_str().into(),
        Some(serde_json::Value::Array(parts)) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(|t| t.as_str()))
            .collect::<Vec<_>>()
            .join("\n")
            .into(),
        _ => "".into(),
    }
}

/// A routed call's answer, with what LiteLLM puts in its `x-litellm-*` headers.
#[derive(Debug, Clone, PartialEq)]
pub struct RouterResponse {
    /// The provider's response body, as the provider's bytes.
    pub body: crate::Body,
    /// Token usage, when reported.
    pub usage: Option<Usage>,
    /// `x-litellm-model-id`: the deployment that answered.
    pub deployment_id: DeploymentId,
    /// `x-litellm-model-group`: the group that answered (a fallback's, after a fallback).
    pub model_group: String,
    /// `x-litellm-attempted-retries`: the retries within the group that answered (as in
    /// LiteLLM, each fallback hop and each `order` tier counts its own from 0).
    pub attempted_retries: u32,
    /// `x-litellm-max-retries`: the retries the answering group allowed, when it retried (as in
    /// LiteLLM, absent when the first attempt answered).
    pub max_retries: Option<u32>,
    /// `x-litellm-attempted-fallbacks`.
    pub attempted_fallbacks: u32,
    /// Deployments called for the request, the one that answered included (0 when the
    /// response cache answered).
    pub attempts: u32,
    /// `x-litellm-model-api-base`: the answering deployment's `api_base`, when it has one.
    pub api_base: Option<String>,
    /// `x-litellm-response-cost`, in USD, when known.
    pub response_cost: Option<f64>,
    /// The router's own time: the call's duration minus time spent in backends and backoffs.
    pub overhead: Duration,
    /// Whether the response cache answered (no deployment was called for this request: its
    /// answer was stored, or an identical request in flight shared its call).
    pub cache_hit: bool,
    /// `x-litellm-cache-key`: the response cache's key for this request, when the cache is on.
    pub cache_key: Option<String>,
    /// The protocol `body` is in: the canonical chat form, or the caller's own when the
    /// deployment passed the caller's request through ([`BackendResponse::protocol`](crate::BackendResponse::protocol)).
    pub protocol: Protocol,
    /// How the request was routed, when it asked ([`Request::explain`]).
    pub route: Option<Box<crate::Route>>,
}
