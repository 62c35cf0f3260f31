//! The mock backend: deployments that answer without a network, for tests, examples and
//! `ferrolite simulate`. It behaves as its [`MockSpec`] says — LiteLLM's `mock_response` (a
//! fixed reply, or an error to raise), a latency with jitter, a time to first token for
//! streams, error rates by class, and provider-side rpm/tpm limits that answer 429 with
//! `Retry-After` as a real provider does. A request's own `mock_response` field wins.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use ferrolite::mock::{MockBackend, MockSpec};
//! use ferrolite::router::{Request, Router, RouterSettings};
//! use ferrolite::cache::{CacheConfig, DualCache};
//! use ferrolite::types::Deployment;
//!
//! let deployment = Deployment::new("gpt-4o", "openai/gpt-4o");
//! let backend = MockBackend::new(MockSpec::reply("Hello!"));
//! let cache = DualCache::connect(CacheConfig::default()).await?;
//! let router = Router::new(vec![deployment], RouterSettings::default(), cache, Arc::new(backend))?;
//! let answer = router.call(Request::new("gpt-4o", serde_json::json!({"messages": []}))).await?;
//! assert_eq!(answer.body["choices"][0]["message"]["content"], "Hello!");
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::time::Duration;

use ferrolite_router::{
    Backend, BackendChunk, BackendError, BackendFuture, BackendRequest, BackendResponse,
    BackendStream, BackendStreamFuture, HealthFuture,
};
use ferrolite_strategies::Rng;
use ferrolite_types::{ApproxTokenCounter, Deployment, ErrorClass, TokenCounter, Usage};
use parking_lot::Mutex;
use tokio::time::Instant;

/// What a mock deployment answers.
#[derive(Debug, Clone, PartialEq)]
pub enum MockResponse {
    /// This text (the completion's content).
    Text(String),
    /// This failure, every time.
    Error(ErrorClass),
}

/// How one mock deployment behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct MockSpec {
    /// The answer (LiteLLM's `mock_response`).
    pub response: MockResponse,
    /// Mean time to the whole answer.
    pub latency: Duration,
    /// Jitter as a share of `latency`: each call takes `latency x (1 ± jitter)`, uniformly.
    pub jitter: f64,
    /// Time to the first chunk of a stream (default: a tenth of `latency`).
    pub time_to_first_token: Option<Duration>,
    /// Share of calls that fail with each class, checked in order (0..=1 each).
    pub error_rates: Vec<(ErrorClass, f64)>,
    /// Provider-side requests per minute: past it, 429 with `Retry-After` until the minute ends.
    pub rpm: Option<u64>,
    /// Provider-side tokens per minute, the same way.
    pub tpm: Option<u64>,
    /// Completion tokens reported per answer (when the reply is not counted).
    pub output_tokens: Option<u64>,
}

impl Default for MockSpec {
    fn default() -> Self {
        MockSpec::reply("This is a mock response.")
    }
}

impl MockSpec {
    /// Answers `text` at once.
    pub fn reply(text: impl Into<String>) -> Self {
        MockSpec {
            response: MockResponse::Text(text.into()),
            latency: Duration::ZERO,
            jitter: 0.0,
            time_to_first_token: None,
            error_rates: Vec::new(),
            rpm: None,
            tpm: None,
            output_tokens: None,
        }
    }

    /// Fails every call with `class`.
    pub fn failing(class: ErrorClass) -> Self {
        MockSpec {
            response: MockResponse::Error(class),
            ..MockSpec::default()
        }
    }
}

/// Parses LiteLLM's `mock_response` value: an exception name (`litellm.RateLimitError`,
/// `RateLimitError`, ...) raises that class; anything else is the reply's text.
pub fn parse_mock_response(value: &str) -> MockResponse {
    match litellm_error_class(value) {
        Some(class) => MockResponse::Error(class),
        None => MockResponse::Text(value.to_string()),
    }
}

/// The error class of a LiteLLM exception name (with or without the `litellm.` prefix).
pub fn litellm_error_class(name: &str) -> Option<ErrorClass> {
    let name = name.strip_prefix("litellm.").unwrap_or(name);
    Some(match name {
        "RateLimitError" => ErrorClass::RateLimited { retry_after: None },
        "Timeout" | "APITimeoutError" => ErrorClass::Timeout,
        "ContextWindowExceededError" => ErrorClass::ContextWindowExceeded,
        "ContentPolicyViolationError" => ErrorClass::ContentPolicy,
        "AuthenticationError" => ErrorClass::Authentication,
        "PermissionDeniedError" => ErrorClass::PermissionDenied,
        "NotFoundError" => ErrorClass::NotFound,
        "BadRequestError" => ErrorClass::BadRequest { status: 400 },
        "InternalServerError" => ErrorClass::ServerError { status: 500 },
        "ServiceUnavailableError" => ErrorClass::ServerError { status: 503 },
        "APIConnectionError" => ErrorClass::Connection,
        _ => return None,
    })
}

/// A stretch of time in which a mock deployment fails (`ferrolite simulate`'s failure
/// injection): from `from` to `to` after the backend was built, a share `rate` of its calls
/// fail with `class`.
#[derive(Debug, Clone, PartialEq)]
pub struct FailureWindow {
    /// When it starts, from the backend's start.
    pub from: Duration,
    /// When it ends.
    pub to: Duration,
    /// How calls fail.
    pub class: ErrorClass,
    /// The share of calls that fail (0..=1).
    pub rate: f64,
}

/// A provider-side minute window of one deployment.
#[derive(Debug, Clone, Copy)]
struct Minute {
    started: Instant,
    requests: u64,
    tokens: u64,
}

/// A backend whose deployments answer as their [`MockSpec`] says (see the module
/// documentation). Deployments without their own spec use the default one.
pub struct MockBackend {
    default: MockSpec,
    specs: HashMap<String, MockSpec>,
    windows: HashMap<String, Vec<FailureWindow>>,
    started: Instant,
    rng: Rng,
    minutes: Mutex<HashMap<String, Minute>>,
}

impl std::fmt::Debug for MockBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockBackend")
            .field("default", &self.default)
            .field("deployments", &self.specs.len())
            .finish_non_exhaustive()
    }
}

/// What one mock call does, decided when it starts.
enum Plan {
    Fail(ErrorClass, String),
    Answer {
        text: String,
        usage: Usage,
        latency: Duration,
        first: Duration,
    },
}

impl MockBackend {
    /// Every deployment behaves as `default`.
    pub fn new(default: MockSpec) -> Self {
        MockBackend {
            default,
            specs: HashMap::new(),
            windows: HashMap::new(),
            started: Instant::now(),
            rng: Rng::from_entropy(),
            minutes: Mutex::new(HashMap::new()),
        }
    }

    /// The deployment with id `id` fails as `window` says (times from when this backend was
    /// built).
    pub fn failing_during(mut self, id: impl Into<String>, window: FailureWindow) -> Self {
        self.windows.entry(id.into()).or_default().push(window);
        self
    }

    /// The deployment with id `id` behaves as `spec`.
    pub fn with(mut self, id: impl Into<String>, spec: MockSpec) -> Self {
        self.specs.insert(id.into(), spec);
        self
    }

    /// Seeds the random draws (latency jitter, error rates), for reproducible runs.
    pub fn seeded(mut self, seed: u64) -> Self {
        self.rng = Rng::seeded(seed);
        self
    }

    fn spec(&self, id: &str) -> &MockSpec {
        self.specs.get(id).unwrap_or(&self.default)
    }

    /// Decides the call: the request's `mock_response`, else the spec, its provider-side
    /// limits and error rates.
    fn plan(&self, deployment: &Deployment, request: &BackendRequest) -> Plan {
        let id = deployment.id();
        let spec = self.spec(id.as_str());
        let response = match request.body.get("mock_response").and_then(|v| v.as_str()) {
            Some(value) => parse_mock_response(value),
            None => spec.response.clone(),
        };
        let text = match response {
            MockResponse::Error(class) => {
                return Plan::Fail(class, "mock_response: a mocked failure".into());
            }
            MockResponse::Text(text) => text,
        };
        let counter = ApproxTokenCounter;
        let prompt = counter.count_text(&deployment.model, &prompt_text(&request.body)) as u64;
        let completion = spec
            .output_tokens
            .unwrap_or_else(|| counter.count_text(&deployment.model, &text) as u64);
        let usage = Usage::new(prompt, completion);
        if let Some(refusal) = self.provider_limits(id.as_str(), spec, usage.total_tokens) {
            return refusal;
        }
        let elapsed = self.started.elapsed();
        for window in self.windows.get(id.as_str()).into_iter().flatten() {
            if window.from <= elapsed && elapsed < window.to && self.rng.unit() < window.rate {
                return Plan::Fail(window.class.clone(), "mock failure window".into());
            }
        }
        for (class, rate) in &spec.error_rates {
            if self.rng.unit() < *rate {
                return Plan::Fail(class.clone(), "mock error rate".into());
            }
        }
        let factor = 1.0 + spec.jitter * (2.0 * self.rng.unit() - 1.0);
        let latency = spec.latency.mul_f64(factor.max(0.0));
        let first = spec.time_to_first_token.unwrap_or(latency / 10);
        Plan::Answer {
            text,
            usage,
            latency,
            first,
        }
    }

    /// The provider-side minute: a call past `rpm` or `tpm` is a 429 with `Retry-After` until
    /// the minute ends.
    fn provider_limits(&self, id: &str, spec: &MockSpec, tokens: u64) -> Option<Plan> {
        if spec.rpm.is_none() && spec.tpm.is_none() {
            return None;
        }
        let now = Instant::now();
        let mut minutes = self.minutes.lock();
        let minute = minutes.entry(id.to_string()).or_insert(Minute {
            started: now,
            requests: 0,
            tokens: 0,
        });
        if now.duration_since(minute.started) >= Duration::from_secs(60) {
            *minute = Minute {
                started: now,
                requests: 0,
                tokens: 0,
            };
        }
        let over_rpm = spec.rpm.is_some_and(|rpm| minute.requests + 1 > rpm);
        let over_tpm = spec.tpm.is_some_and(|tpm| minute.tokens + tokens > tpm);
        if over_rpm || over_tpm {
            let retry_after = Duration::from_secs(60).saturating_sub(now - minute.started);
            return Some(Plan::Fail(
                ErrorClass::RateLimited {
                    retry_after: Some(retry_after),
                },
                format!(
                    "mock provider: {} limit reached",
                    if over_rpm { "rpm" } else { "tpm" }
                ),
            ));
        }
        minute.requests += 1;
        minute.tokens += tokens;
        None
    }
}

/// The text a request sends: its messages' contents, prompt or input.
fn prompt_text(body: &serde_json::Value) -> String {
    if let Some(messages) = body.get("messages").and_then(|m| m.as_array()) {
        return messages
            .iter()
            .filter_map(|m| m.get("content").and_then(|c| c.as_str()))
            .collect::<Vec<_>>()
            .join("\n");
    }
    for field in ["prompt", "input"] {
        match body.get(field) {
            Some(serde_json::Value::String(text)) => return text.clone(),
            Some(serde_json::Value::Array(items)) => {
                return items
                    .iter()
                    .filter_map(|i| i.as_str())
                    .collect::<Vec<_>>()
                    .join("\n");
            }
            _ => {}
        }
    }
    String::new()
}

/// The kind of call a body is: a chat completion (`messages`), an embedding (`input`) or a text
/// completion (`prompt`).
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Kind {
    Chat,
    Completion,
    Embedding,
}

impl Kind {
    /// The OpenAI endpoint path of this kind of call.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn path(self) -> &'static str {
        match self {
            Kind::Chat => "chat/completions",
            Kind::Completion => "completions",
            Kind::Embedding => "embeddings",
        }
    }
}

pub(crate) fn kind(body: &serde_json::Value) -> Kind {
    if body.get("messages").is_some() {
        Kind::Chat
    } else if body.get("input").is_some() {
        Kind::Embedding
    } else if body.get("prompt").is_some() {
        Kind::Completion
    } else {
        Kind::Chat
    }
}

fn usage_json(usage: &Usage) -> serde_json::Value {
    serde_json::json!({
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    })
}

/// An OpenAI-shaped whole response.
fn whole(model: &serde_json::Value, kind: Kind, text: &str, usage: &Usage) -> serde_json::Value {
    match kind {
        Kind::Chat => serde_json::json!({
            "id": "chatcmpl-mock",
            "object": "chat.completion",
            "created": 0,
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop"
            }],
            "usage": usage_json(usage),
        }),
        Kind::Completion => serde_json::json!({
            "id": "cmpl-mock",
            "object": "text_completion",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "text": text, "finish_reason": "stop"}],
            "usage": usage_json(usage),
        }),
        Kind::Embedding => serde_json::json!({
            "object": "list",
            "model": model,
            "data": [{"object": "embedding", "index": 0, "embedding": [0.0, 0.1, 0.2, 0.3]}],
            "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.prompt_tokens},
        }),
    }
}

/// One OpenAI-shaped stream chunk.
fn chunk(model: &serde_json::Value, kind: Kind, piece: &str, last: bool) -> serde_json::Value {
    let finish = if last {
        serde_json::json!("stop")
    } else {
        serde_json::Value::Null
    };
    match kind {
        Kind::Completion => serde_json::json!({
            "id": "cmpl-mock",
            "object": "text_completion",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "text": piece, "finish_reason": finish}],
        }),
        _ => serde_json::json!({
            "id": "chatcmpl-mock",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": finish}],
        }),
    }
}

/// The one place the mock backend waits.
#[allow(clippy::disallowed_methods)]
async fn sleep(wait: Duration) {
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
}

impl Backend for MockBackend {
    fn call<'a>(
        &'a self,
        deployment: &'a Deployment,
        request: &'a BackendRequest,
    ) -> BackendFuture<'a> {
        let plan = self.plan(deployment, request);
        Box::pin(async move {
            match plan {
                Plan::Fail(class, message) => Err(BackendError::new(class, message)),
                Plan::Answer {
                    text,
                    usage,
                    latency,
                    ..
                } => {
                    sleep(latency).await;
                    let model = &request.body["model"];
                    Ok(BackendResponse {
                        body: whole(model, kind(&request.body), &text, &usage),
                        usage: Some(usage),
                        time_to_first_token: None,
                    })
                }
            }
        })
    }

    fn stream<'a>(
        &'a self,
        deployment: &'a Deployment,
        request: &'a BackendRequest,
    ) -> BackendStreamFuture<'a> {
        let plan = self.plan(deployment, request);
        let model = request.body["model"].clone();
        let kind = kind(&request.body);
        Box::pin(async move {
            let (text, usage, latency, first) = match plan {
                Plan::Fail(class, message) => return Err(BackendError::new(class, message)),
                Plan::Answer {
                    text,
                    usage,
                    latency,
                    first,
                } => (text, usage, latency, first),
            };
            let pieces: Vec<String> = text
                .split_inclusive(' ')
                .map(str::to_string)
                .collect::<Vec<_>>();
            let pieces = if pieces.is_empty() {
                vec![String::new()]
            } else {
                pieces
            };
            // The first chunk at the time to first token, the last at the full latency.
            let gaps = u32::try_from(pieces.len().saturating_sub(1).max(1)).unwrap_or(u32::MAX);
            let gap = latency.saturating_sub(first) / gaps;
            let count = pieces.len();
            let stream = futures_util::stream::unfold(
                (pieces.into_iter().enumerate(), true),
                move |(mut pieces, first_one)| {
                    let model = model.clone();
                    async move {
                        match pieces.next() {
                            Some((i, piece)) => {
                                sleep(if first_one { first } else { gap }).await;
                                let last = i + 1 == count;
                                let body = chunk(&model, kind, &piece, last);
                                let mut out = BackendChunk { body, usage: None };
                                if last {
                                    out.body["usage"] = usage_json(&usage);
                                    out.usage = Some(usage);
                                }
                                Some((Ok(out), (pieces, false)))
                            }
                            None => None,
                        }
                    }
                },
            );
            Ok(Box::pin(stream) as BackendStream)
        })
    }

    fn health_check<'a>(&'a self, deployment: &'a Deployment) -> HealthFuture<'a> {
        let spec = self.spec(deployment.id().as_str());
        let result = match &spec.response {
            MockResponse::Error(class) => Err(BackendError::new(class.clone(), "mocked failure")),
            MockResponse::Text(_) => Ok(()),
        };
        Box::pin(std::future::ready(result))
    }
}
