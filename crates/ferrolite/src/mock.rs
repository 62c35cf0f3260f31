//! The mock backend: deployments that answer without a network, for tests, examples and
//! `ferrolite simulate`. It behaves as its [`MockSpec`] says — LiteLLM's `mock_response` (a
//! fixed reply, an error to raise, or for embeddings a vector), `mock_timeout`, a latency with
//! jitter, a time to first token for streams, error rates by class, and provider-side rpm/tpm
//! limits that answer 429 with `Retry-After` as a real provider does. A request's own
//! `mock_response` and `mock_timeout` fields win.
//!
//! Answers have OpenAI's shape, as LiteLLM's `mock_completion` and `mock_embedding` give them:
//! `n` choices (indexes 0 to n-1, in every streamed chunk too), an `id` unique to the call
//! (`chatcmpl-...`, the same on every chunk of a stream), `created` the Unix time of the call,
//! `delta.role: "assistant"` on a stream's first chunk, and one embedding per input.
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
//! assert_eq!(answer.body.to_value()?["choices"][0]["message"]["content"], "Hello!");
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ferrolite_router::{
    Backend, BackendChunk, BackendError, BackendFuture, BackendRequest, BackendResponse,
    BackendStream, BackendStreamFuture, Body, HealthFuture,
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
    /// This vector as every input's embedding (LiteLLM's `mock_response` as a list of
    /// floats); a chat or text completion answers its JSON text.
    Embedding(Vec<f64>),
}

/// The embedding LiteLLM's `mock_embedding` answers when `mock_response` is no vector: 1,536
/// zeros (the size of OpenAI's `text-embedding-3-small`).
pub const DEFAULT_EMBEDDING_DIMENSIONS: usize = 1536;

/// The most choices a mock answer carries (`n` above it is answered with this many).
const MAX_CHOICES: u64 = 128;

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
    /// LiteLLM's `mock_timeout`: every call waits the request's `timeout` (seconds), else the
    /// deployment's, then fails as a timeout ("This is a mock timeout error"); with neither it
    /// waits until the router's attempt timeout ends it.
    pub timeout: bool,
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
            timeout: false,
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
    /// Answer ids: random per backend (never seeded, so two processes never share them) and
    /// a counter (so one process never repeats one).
    ids: (u64, AtomicU64),
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
    /// `mock_timeout`: wait this long (forever without one), then fail as a timeout.
    TimeOut(Option<Duration>),
    Answer {
        answer: Answer,
        usage: Usage,
        latency: Duration,
        first: Duration,
    },
}

/// The content of one answer and what identifies it.
struct Answer {
    kind: Kind,
    /// The completion's text, or for embeddings the vector of each input.
    text: String,
    embedding: Vec<f64>,
    /// Choices of a completion, embeddings of an embedding call.
    count: u64,
    id: String,
    created: u64,
    model: serde_json::Value,
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
            ids: (Rng::from_entropy().next_u64(), AtomicU64::new(0)),
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

    /// A new answer id with `prefix` (`chatcmpl`, `cmpl`).
    fn next_id(&self, prefix: &str) -> String {
        let n = self.ids.1.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}-{:016x}{n:08x}", self.ids.0)
    }

    /// Decides the call: the request's `mock_response` and `mock_timeout`, else the spec, its
    /// provider-side limits and error rates.
    fn plan(&self, deployment: &Deployment, request: &BackendRequest) -> Plan {
        let id = request.deployment_id_of(deployment);
        let spec = self.spec(id.as_str());
        let body = &request.body;
        let timeout = body
            .get("mock_timeout")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(spec.timeout);
        if timeout {
            let wait = body
                .get("timeout")
                .and_then(serde_json::Value::as_f64)
                .or(deployment.timeout)
                // A number too large for a duration waits like no number: until the
                // router's timeout.
                .and_then(|s| Duration::try_from_secs_f64(s).ok());
            return Plan::TimeOut(wait);
        }
        let response = match body.get("mock_response") {
            Some(serde_json::Value::String(value)) => parse_mock_response(value),
            Some(serde_json::Value::Array(items)) => {
                match items.iter().map(serde_json::Value::as_f64).collect() {
                    Some(vector) => MockResponse::Embedding(vector),
                    None => spec.response.clone(),
                }
            }
            _ => spec.response.clone(),
        };
        let kind = kind(body);
        let (text, embedding) = match response {
            MockResponse::Error(class) => {
                return Plan::Fail(class, "mock_response: a mocked failure".into());
            }
            // Only an embedding call writes the vector: a chat or text answer does not pay for
            // 1,536 zeros it never reads.
            MockResponse::Text(text) if kind == Kind::Embedding => {
                (text, vec![0.0; DEFAULT_EMBEDDING_DIMENSIONS])
            }
            MockResponse::Text(text) => (text, Vec::new()),
            MockResponse::Embedding(vector) => {
                (serde_json::Value::from(vector.clone()).to_string(), vector)
            }
        };
        let count = match kind {
            Kind::Embedding => inputs(body),
            _ => body
                .get("n")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(1)
                .clamp(1, MAX_CHOICES),
        };
        let counter = ApproxTokenCounter;
        let prompt = counter.count_text(&deployment.model, &prompt_text(body)) as u64;
        let completion = match kind {
            Kind::Embedding => 0,
            _ => {
                count
                    * spec
                        .output_tokens
                        .unwrap_or_else(|| counter.count_text(&deployment.model, &text) as u64)
            }
        };
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
        let answer = Answer {
            kind,
            text,
            embedding,
            count,
            id: self.next_id(if kind == Kind::Completion {
                "cmpl"
            } else {
                "chatcmpl"
            }),
            created: unix_now(),
            model: body.get("model").cloned().unwrap_or_default(),
        };
        Plan::Answer {
            answer,
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

/// How many inputs an embedding request has: one per string (or token list) of a list, one
/// for a single string or a single token list.
fn inputs(body: &serde_json::Value) -> u64 {
    match body.get("input") {
        Some(serde_json::Value::Array(items))
            if !items.is_empty() && !items.iter().all(serde_json::Value::is_number) =>
        {
            items.len() as u64
        }
        _ => 1,
    }
}

/// Now as Unix seconds: OpenAI's `created`.
fn unix_now() -> u64 {
    // `created` is wall-clock time by definition.
    #[allow(clippy::disallowed_methods)]
    let now = std::time::SystemTime::now();
    now.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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

/// Appends `value` as JSON.
fn push_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Writing a string, a number or a `Value` to a vector cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

/// Appends `n` as JSON.
fn push_number(out: &mut Vec<u8>, n: u64) {
    use std::io::Write;
    let _ = write!(out, "{n}");
}

/// Appends OpenAI's `usage` object.
fn push_usage(out: &mut Vec<u8>, prompt: u64, completion: Option<u64>, total: u64) {
    out.extend_from_slice(br#"{"prompt_tokens":"#);
    push_number(out, prompt);
    if let Some(completion) = completion {
        out.extend_from_slice(br#","completion_tokens":"#);
        push_number(out, completion);
    }
    out.extend_from_slice(br#","total_tokens":"#);
    push_number(out, total);
    out.push(b'}');
}

/// Appends the fields every answer of a completion starts with: `{"id":..,"object":..,
/// "created":..,"model":..,` (in OpenAI's order).
fn push_head(out: &mut Vec<u8>, answer: &Answer, object: &str) {
    out.extend_from_slice(br#"{"id":"#);
    push_json(out, &answer.id);
    out.extend_from_slice(br#","object":""#);
    out.extend_from_slice(object.as_bytes());
    out.extend_from_slice(br#"","created":"#);
    push_number(out, answer.created);
    out.extend_from_slice(br#","model":"#);
    push_json(out, &answer.model);
}

/// The bytes written as a body (they are JSON by construction; checked all the same).
fn body_of(out: Vec<u8>) -> Body {
    Body::parse(out).unwrap_or_default()
}

/// An OpenAI-shaped whole response, written straight as its bytes (no tree per call).
fn whole(answer: &Answer, usage: &Usage) -> Body {
    let mut out = Vec::with_capacity(256 + answer.text.len() * answer.count as usize);
    let text = {
        let mut text = Vec::with_capacity(answer.text.len() + 2);
        push_json(&mut text, answer.text.as_str());
        text
    };
    match answer.kind {
        Kind::Chat | Kind::Completion => {
            let chat = answer.kind == Kind::Chat;
            push_head(
                &mut out,
                answer,
                if chat {
                    "chat.completion"
                } else {
                    "text_completion"
                },
            );
            push_choices(&mut out, answer.count, |out| {
                if chat {
                    out.extend_from_slice(br#","message":{"role":"assistant","content":"#);
                    out.extend_from_slice(&text);
                    out.extend_from_slice(br#"},"finish_reason":"stop""#);
                } else {
                    out.extend_from_slice(br#","text":"#);
                    out.extend_from_slice(&text);
                    out.extend_from_slice(br#","logprobs":null,"finish_reason":"stop""#);
                }
            });
            out.extend_from_slice(br#","usage":"#);
            push_usage(
                &mut out,
                usage.prompt_tokens,
                Some(usage.completion_tokens),
                usage.total_tokens,
            );
        }
        Kind::Embedding => {
            let mut vector = Vec::with_capacity(answer.embedding.len() * 4);
            push_json(&mut vector, &answer.embedding);
            out.extend_from_slice(br#"{"object":"list","model":"#);
            push_json(&mut out, &answer.model);
            out.extend_from_slice(br#","data":["#);
            for i in 0..answer.count {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(br#"{"object":"embedding","index":"#);
                push_number(&mut out, i);
                out.extend_from_slice(br#","embedding":"#);
                out.extend_from_slice(&vector);
                out.push(b'}');
            }
            out.extend_from_slice(br#"],"usage":"#);
            push_usage(&mut out, usage.prompt_tokens, None, usage.prompt_tokens);
        }
    }
    out.push(b'}');
    body_of(out)
}

/// `,"choices":[...]`: `count` choice objects, each `{"index":I` followed by what `fields`
/// writes, then `}` (shared by whole answers and stream chunks).
fn push_choices(out: &mut Vec<u8>, count: u64, mut fields: impl FnMut(&mut Vec<u8>)) {
    out.extend_from_slice(br#","choices":["#);
    for i in 0..count {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(br#"{"index":"#);
        push_number(out, i);
        fields(out);
        out.push(b'}');
    }
    out.push(b']');
}

/// One OpenAI-shaped stream chunk: `piece` for each of the answer's choices; the first chunk
/// of a chat stream says the role, the last one why it stopped and (with `usage`) the usage.
fn chunk(answer: &Answer, piece: &str, first: bool, usage: Option<&Usage>) -> Body {
    let finish: &[u8] = if usage.is_some() {
        br#""stop""#
    } else {
        b"null"
    };
    let mut out = Vec::with_capacity(192 + piece.len() * answer.count as usize);
    let mut text = Vec::with_capacity(piece.len() + 2);
    push_json(&mut text, piece);
    let completion = answer.kind == Kind::Completion;
    push_head(
        &mut out,
        answer,
        if completion {
            "text_completion"
        } else {
            "chat.completion.chunk"
        },
    );
    push_choices(&mut out, answer.count, |out| {
        if completion {
            out.extend_from_slice(br#","text":"#);
            out.extend_from_slice(&text);
            out.extend_from_slice(br#","logprobs":null"#);
        } else if first {
            out.extend_from_slice(br#","delta":{"role":"assistant","content":"#);
            out.extend_from_slice(&text);
            out.push(b'}');
        } else {
            out.extend_from_slice(br#","delta":{"content":"#);
            out.extend_from_slice(&text);
            out.push(b'}');
        }
        out.extend_from_slice(br#","finish_reason":"#);
        out.extend_from_slice(finish);
    });
    if let Some(usage) = usage {
        out.extend_from_slice(br#","usage":"#);
        push_usage(
            &mut out,
            usage.prompt_tokens,
            Some(usage.completion_tokens),
            usage.total_tokens,
        );
    }
    out.push(b'}');
    body_of(out)
}

/// The one place the mock backend waits.
#[allow(clippy::disallowed_methods)]
async fn sleep(wait: Duration) {
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
}

/// `mock_timeout`: waits `wait` (forever without one: the router's attempt timeout ends the
/// call), then fails as LiteLLM's mock does.
async fn time_out(wait: Option<Duration>) -> BackendError {
    match wait {
        Some(wait) => sleep(wait).await,
        None => std::future::pending::<()>().await,
    }
    BackendError::new(ErrorClass::Timeout, "This is a mock timeout error")
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
                Plan::TimeOut(wait) => Err(time_out(wait).await),
                Plan::Answer {
                    answer,
                    usage,
                    latency,
                    ..
                } => {
                    sleep(latency).await;
                    Ok(BackendResponse {
                        protocol: Default::default(),
                        body: whole(&answer, &usage),
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
        Box::pin(async move {
            let (answer, usage, latency, first) = match plan {
                Plan::Fail(class, message) => return Err(BackendError::new(class, message)),
                Plan::TimeOut(wait) => return Err(time_out(wait).await),
                Plan::Answer {
                    answer,
                    usage,
                    latency,
                    first,
                } => (answer, usage, latency, first),
            };
            let answer = std::sync::Arc::new(answer);
            let pieces: Vec<String> = answer
                .text
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
                    let answer = std::sync::Arc::clone(&answer);
                    async move {
                        match pieces.next() {
                            Some((i, piece)) => {
                                sleep(if first_one { first } else { gap }).await;
                                let usage = (i + 1 == count).then_some(usage);
                                let body = chunk(&answer, &piece, first_one, usage.as_ref());
                                Some((
                                    Ok(BackendChunk {
                                        protocol: Default::default(),
                                        body,
                                        usage,
                                    }),
                                    (pieces, false),
                                ))
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
            MockResponse::Text(_) | MockResponse::Embedding(_) => Ok(()),
        };
        Box::pin(std::future::ready(result))
    }
}
