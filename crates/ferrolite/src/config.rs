//! LiteLLM's `config.yaml`, loaded unchanged: `model_list`, `router_settings`, the
//! `litellm_settings` that concern routing, `general_settings.master_key`, and ferrolite's own
//! `ferrolite_settings`. YAML anchors and merge keys (`<<: *base`) work; secrets are read from
//! the environment with LiteLLM's `os.environ/NAME`.
//!
//! Every invalid value is a [`ConfigError`] naming its path and the value, with the line and
//! column where the YAML parser saw it:
//!
//! ```text
//! model_list[3].litellm_params.rpm: expected a non-negative integer, got "ten" (line 14, column 12)
//! ```
//!
//! A key ferrolite does not read is not an error: it becomes a [`ConfigWarning`] — "accepted,
//! not implemented" for a key LiteLLM knows (so a user learns exactly what of their config is
//! honoured), "unknown key, ignored" otherwise. `ferrolite_settings` is ferrolite's own, so a
//! key there that ferrolite does not know is an error. docs/configuration.md lists every key.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ferrolite_budgets::{BudgetConfig, BudgetsConfig, ReservationPolicy, WindowAlignment};
use ferrolite_cache::{CacheConfig, FailureMode, RedisConfig, Window};
use ferrolite_router::{
    ResponseCacheSettings, RetryBudgetSettings, RetryPolicy, RouterSettings, WaitQueueSettings,
};
use ferrolite_strategies::{AdmissionMode, StrategyName};
use ferrolite_types::{AllowedFailsPolicy, Deployment, Secret};
use serde::{Deserialize, Deserializer};

use crate::catalogue;
use crate::mock::{MockResponse, MockSpec, litellm_error_class, parse_mock_response};

/// A loaded configuration: what a router is built from.
#[derive(Debug, Clone)]
pub struct Config {
    /// The deployments of `model_list`, completed from the model catalogue where they do not
    /// say (context window, prices).
    pub deployments: Vec<Deployment>,
    /// The routing settings.
    pub settings: RouterSettings,
    /// The state cache: Redis when `router_settings` names one.
    pub cache: CacheConfig,
    /// `general_settings.master_key`, for the gateway.
    pub master_key: Option<Secret>,
    /// Deployments that answer from the mock backend (`mock_response` or `mock_*` settings),
    /// by deployment id.
    pub mocks: BTreeMap<String, MockSpec>,
    /// Keys that were accepted without effect.
    pub warnings: Vec<ConfigWarning>,
    /// The `simulation` section: the workload `ferrolite simulate` runs by default.
    pub simulation: Option<Simulation>,
    /// `ferrolite_settings.api_keys`: the gateway's API keys besides the master key.
    pub api_keys: Vec<ApiKey>,
    /// Deployments ferrolite's backends cannot call yet (a provider whose protocol is not
    /// OpenAI's, a `model_info.mode` the gateway does not serve). `ferrolite serve` refuses to
    /// start with any unless `ferrolite_settings.skip_unsupported_deployments` is set; see
    /// [`Config::for_serving`].
    pub not_callable: Vec<NotCallable>,
    /// `ferrolite_settings.skip_unsupported_deployments`: serve without the deployments in
    /// [`Config::not_callable`] instead of refusing to start.
    pub skip_unsupported_deployments: bool,
    /// The response cache's own Redis: the one `litellm_settings.cache_params` names when
    /// `router_settings` names another for the routing state (when it names none, the routing
    /// state is kept in this one too, and this is `None`).
    pub response_cache_redis: Option<RedisConfig>,
    /// The background health checks `ferrolite serve` runs (`general_settings`).
    pub health_checks: HealthChecks,
    /// The `model_group_alias` names marked `hidden`: callable, not listed by `/v1/models`.
    pub hidden_aliases: Vec<String>,
    /// `ferrolite_settings.server`: the gateway's connection timeouts and limits.
    pub server: crate::server::ServerSettings,
    /// The YAML it was loaded from, to give errors found later (building the router) their
    /// line and column.
    pub(crate) source: Source,
}

/// The background health checks of LiteLLM's proxy (`general_settings.background_health_checks`,
/// `health_check_interval`; `model_info.health_check_timeout`), which `ferrolite serve` runs
/// with [`Router::check_health`](ferrolite_router::Router::check_health).
#[derive(Debug, Clone, PartialEq)]
pub struct HealthChecks {
    /// Whether checks run: `background_health_checks`, or when it is not set,
    /// `enable_health_check_routing` (routing on health needs checks to route on).
    pub background: bool,
    /// The wait after one round of checks before the next (`health_check_interval`, 300 s).
    pub interval: Duration,
    /// How long one deployment's check may take (`model_info.health_check_timeout`, else
    /// LiteLLM's 60 s), by deployment id.
    pub timeouts: BTreeMap<String, Duration>,
    /// Deployments never probed (`model_info.disable_background_health_check`): their check
    /// passes without a call, so health-check routing never skips them.
    pub disabled: std::collections::BTreeSet<String>,
}

impl HealthChecks {
    /// LiteLLM's default timeout of one check (its `HEALTH_CHECK_TIMEOUT_SECONDS`).
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

    /// The timeout of the check of the deployment with id `id`.
    pub fn timeout(&self, id: &str) -> Duration {
        self.timeouts
            .get(id)
            .copied()
            .unwrap_or(Self::DEFAULT_TIMEOUT)
    }
}

impl Default for HealthChecks {
    fn default() -> Self {
        HealthChecks {
            background: false,
            interval: Duration::from_secs(300),
            timeouts: BTreeMap::new(),
            disabled: std::collections::BTreeSet::new(),
        }
    }
}

/// A configuration's YAML text. Never printed: it may hold secrets.
#[derive(Clone, Default)]
pub(crate) struct Source(pub(crate) Option<Arc<str>>);

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(text) => write!(f, "<{} bytes of YAML>", text.len()),
            None => f.write_str("<none>"),
        }
    }
}

/// An API key of the gateway (`ferrolite_settings.api_keys[]`): who may call, which groups,
/// at what rate and spend. Only the SHA-256 of the key is kept; the key itself is never stored
/// or printed.
#[derive(Clone, PartialEq)]
pub struct ApiKey {
    /// Its name (logs, metrics, budgets: the budget scope is the tag `api-key:<name>`).
    pub name: String,
    /// SHA-256 of the key.
    pub key_sha256: [u8; 32],
    /// The model groups it may call (empty: all).
    pub models: Vec<String>,
    /// Requests per minute, shared by every gateway instance.
    pub rpm: Option<u64>,
    /// Tokens per minute (input estimate plus `max_tokens`), shared likewise.
    pub tpm: Option<u64>,
    /// Whether it has a budget (charged as the tag budget `api-key:<name>`).
    pub budget: bool,
    /// Tags every request made with it carries (tag routing, tag budgets), besides the
    /// request's own, as LiteLLM's key `metadata.tags`.
    pub tags: Vec<String>,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("name", &self.name)
            .field("models", &self.models)
            .field("rpm", &self.rpm)
            .field("tpm", &self.tpm)
            .field("budget", &self.budget)
            .field("tags", &self.tags)
            .finish_non_exhaustive()
    }
}

impl ApiKey {
    /// The SHA-256 of a key as presented.
    pub fn hash(key: &str) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(key.as_bytes()).into()
    }

    /// The budget scope (tag) this key's spend is charged to.
    pub fn budget_tag(&self) -> String {
        format!("api-key:{}", self.name)
    }
}

/// A deployment ferrolite cannot call yet, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotCallable {
    /// Its index in `model_list`.
    pub index: usize,
    /// Its id.
    pub deployment: String,
    /// Its model group.
    pub model_group: String,
    /// Why: `provider bedrock is not implemented`, `mode image_generation is not implemented`.
    pub reason: String,
}

impl fmt::Display for NotCallable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "model_list[{}] ({}, id {}): not callable: {}",
            self.index, self.model_group, self.deployment, self.reason
        )
    }
}

/// Providers whose own protocol ferrolite's HTTP backend does not speak yet (it speaks
/// OpenAI's, which `openai`, `azure`, `anthropic`, `gemini`, `groq`, `mistral`, `hosted_vllm`,
/// ... serve): calls to them would be sent a protocol they do not understand.
const NOT_IMPLEMENTED_PROVIDERS: &[&str] = &[
    "bedrock",
    "sagemaker",
    "sagemaker_chat",
    "vertex_ai",
    "vertex_ai_beta",
    "cohere",
    "cohere_chat",
    "replicate",
    "huggingface",
    "watsonx",
    "watsonx_text",
    "ai21",
    "aleph_alpha",
    "palm",
    "cloudflare",
    "predibase",
    "triton",
    "voyage",
    "clarifai",
    "petals",
    "nlp_cloud",
    "baseten",
    "oobabooga",
    "anthropic_text",
];

/// The `model_info.mode`s the gateway serves (chat, text completions, embeddings).
const CALLABLE_MODES: &[&str] = &["chat", "completion", "embedding"];

/// Why a (not mocked) deployment cannot be called, if it cannot.
fn not_callable_reason(deployment: &Deployment, mode: Option<&str>) -> Option<String> {
    if let Ok(provider) = deployment.provider() {
        if NOT_IMPLEMENTED_PROVIDERS.contains(&provider.as_str()) {
            return Some(format!("provider {provider} is not implemented"));
        }
        // The HTTP backend calls `api_base`, or the provider's well-known endpoint; without
        // either every call would fail. A catch-all's provider is the request's.
        #[cfg(feature = "http")]
        if deployment.api_base.is_none()
            && provider.as_str() != "*"
            && crate::http::default_base(provider.as_str()).is_none()
        {
            return Some(format!(
                "provider {provider} needs api_base (its OpenAI-compatible endpoint)"
            ));
        }
    }
    match mode {
        Some(mode) if !CALLABLE_MODES.contains(&mode) => {
            Some(format!("mode {mode} is not implemented"))
        }
        _ => None,
    }
}

/// The `simulation` section (ferrolite's own): the workload `ferrolite simulate` sends through
/// the router and the failures it injects. Command-line flags override it.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Simulation {
    /// Requests to send.
    pub requests: Option<u64>,
    /// Requests in flight at once.
    pub concurrency: Option<u32>,
    /// Open-loop arrivals per second (Poisson) instead of a fixed concurrency.
    pub rate: Option<f64>,
    /// Stop sending after this many seconds.
    pub duration_s: Option<f64>,
    /// Request tags and their shares (`{free: 0.7, paid: 0.3}`); each request carries one.
    pub tags: BTreeMap<String, f64>,
    /// The model groups to request, with their shares of the requests (`{gpt-4o: 3, claude: 1}`).
    pub groups: BTreeMap<String, f64>,
    /// Mean prompt length in tokens (each request draws from half to one and a half of it).
    pub prompt_tokens: Option<u64>,
    /// `max_tokens` of each request.
    pub max_tokens: Option<u64>,
    /// Share of requests that stream (0..=1).
    pub stream_share: Option<f64>,
    /// Share of requests that repeat one of 16 recurring prompts (0..=1), so the response cache
    /// (`cache_responses`) has something to answer; the rest are all different.
    pub repeat_share: Option<f64>,
    /// Failures to inject.
    pub failures: Vec<SimulatedFailure>,
}

/// "Deployment X fails from t = 10 s to t = 20 s".
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatedFailure {
    /// The deployment's id (`model_info.id`).
    pub deployment: String,
    /// Start, in seconds from the simulation's start.
    pub from_s: f64,
    /// End, in seconds.
    pub to_s: f64,
    /// The error, by LiteLLM's exception name (`RateLimitError`, `InternalServerError`, ...).
    #[serde(default = "default_failure")]
    pub error: String,
    /// Share of calls that fail in the window (default 1).
    #[serde(default = "one")]
    pub rate: f64,
}

fn default_failure() -> String {
    "InternalServerError".into()
}

fn one() -> f64 {
    1.0
}

/// A key ferrolite accepted without acting on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// Where, e.g. `router_settings.cache_kwargs`.
    pub path: String,
    /// Whether LiteLLM knows the key.
    pub kind: WarningKind,
}

/// Why a key had no effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarningKind {
    /// LiteLLM reads this key; ferrolite does not implement it.
    NotImplemented,
    /// Neither LiteLLM nor ferrolite knows the key (a typo?).
    Unknown,
    /// LiteLLM accepts the key and its router ignores it too (`litellm_settings.cooldown_time`).
    IgnoredByLitellm,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            WarningKind::NotImplemented => write!(f, "{}: accepted, not implemented", self.path),
            WarningKind::Unknown => write!(f, "{}: unknown key, ignored", self.path),
            WarningKind::IgnoredByLitellm => write!(
                f,
                "{}: accepted, no effect (LiteLLM's router ignores it too; set it in router_settings)",
                self.path
            ),
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// A value (or the YAML around it) is invalid.
    #[error("{}{message}{}", prefix(path), position(*.line, *.column))]
    Invalid {
        /// Where, e.g. `model_list[3].litellm_params.rpm` (empty for the whole document).
        path: String,
        /// What is wrong, naming the value.
        message: String,
        /// The line (from 1), when known.
        line: Option<u64>,
        /// The column (from 1), when known.
        column: Option<u64>,
    },
    /// The file could not be read.
    #[error("cannot read {file}: {reason}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        reason: String,
    },
}

/// A collection [`locate`] is walking: a mapping (with the path of the key whose value comes
/// next) or a sequence (with the next item's index).
enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, index: usize },
}

/// A node begins at `at`: records a key (`scalar`, where a key is due) or a sequence item, and
/// gives the node's path when it is a value (or the document).
fn begin(
    stack: &mut [Frame],
    places: &mut Vec<(String, u64, u64)>,
    scalar: Option<&str>,
    at: (u64, u64),
) -> Option<String> {
    let Some(frame) = stack.last_mut() else {
        return Some(String::new());
    };
    match frame {
        Frame::Map { path, key } => match key.take() {
            Some(value_path) => Some(value_path),
            None => {
                let name = scalar.unwrap_or("?");
                let child = if path.is_empty() {
                    name.to_string()
                } else {
                    format!("{path}.{name}")
                };
                places.push((child.clone(), at.0, at.1));
                *key = Some(child);
                None
            }
        },
        Frame::Seq { path, index } => {
            let item = format!("{path}[{index}]");
            *index += 1;
            places.push((item.clone(), at.0, at.1));
            Some(item)
        }
    }
}

/// The line and column (from 1) of the key (or sequence item) at `path` in the YAML `text`, as
/// this module writes paths (`model_list[3].litellm_params.rpm`). A path that skips a list
/// index (`router_settings.fallbacks.g` for `fallbacks: [{g: [...]}]`) matches when exactly one
/// place does; otherwise the nearest enclosing key that can be found.
fn locate(text: &str, path: &str) -> Option<(u64, u64)> {
    use serde_saphyr::granit_parser::{Event, Parser};
    let mut places: Vec<(String, u64, u64)> = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    for item in Parser::new_from_str(text) {
        let Ok((event, span)) = item else { break };
        let at = (span.start.line() as u64, span.start.col() as u64 + 1);
        match event {
            Event::Scalar(value, ..) => {
                begin(&mut stack, &mut places, Some(&value), at);
            }
            Event::Alias(_) => {
                begin(&mut stack, &mut places, None, at);
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                // A collection as a value (or the document): walked under its path.
                if let Some(path) = begin(&mut stack, &mut places, None, at) {
                    stack.push(match event {
                        Event::MappingStart(..) => Frame::Map { path, key: None },
                        _ => Frame::Seq { path, index: 0 },
                    });
                } else {
                    // A collection used as a key: walked, but its paths mean nothing.
                    stack.push(Frame::Seq {
                        path: String::from("?"),
                        index: 0,
                    });
                }
            }
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
            }
            _ => {}
        }
    }
    let without_indices = |p: &str| {
        let mut out = String::with_capacity(p.len());
        let mut skipping = false;
        for c in p.chars() {
            match c {
                '[' => skipping = true,
                ']' => skipping = false,
                c if !skipping => out.push(c),
                _ => {}
            }
        }
        out
    };
    let mut wanted = path.to_string();
    loop {
        if let Some((_, line, column)) = places.iter().find(|(p, ..)| *p == wanted) {
            return Some((*line, *column));
        }
        let loose = without_indices(&wanted);
        let item = wanted.ends_with(']');
        let mut matches = places
            .iter()
            .filter(|(p, ..)| p.ends_with(']') == item && without_indices(p) == loose);
        if let (Some((_, line, column)), None) = (matches.next(), matches.next()) {
            return Some((*line, *column));
        }
        // The nearest enclosing key or item.
        let cut = wanted.rfind(['.', '['])?;
        wanted.truncate(cut);
    }
}

fn prefix(path: &str) -> String {
    if path.is_empty() {
        "the document: ".to_string()
    } else {
        format!("{path}: ")
    }
}

fn position(line: Option<u64>, column: Option<u64>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!(" (line {line}, column {column})"),
        (Some(line), None) => format!(" (line {line})"),
        _ => String::new(),
    }
}

impl ConfigError {
    /// An invalid value at `path`, without a position.
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            path: path.into(),
            message: message.into(),
            line: None,
            column: None,
        }
    }

    /// The error with the position of its path in `text` when it has none yet (a check across
    /// keys, made after parsing): the line and column of the key, found by walking the YAML.
    pub(crate) fn positioned(self, text: &str) -> Self {
        match self {
            ConfigError::Invalid {
                path,
                message,
                line: None,
                column: None,
            } if !path.is_empty() => {
                let (line, column) = locate(text, &path).unzip();
                ConfigError::Invalid {
                    path,
                    message,
                    line,
                    column,
                }
            }
            other => other,
        }
    }

    /// The path the error names.
    pub fn path(&self) -> &str {
        match self {
            ConfigError::Invalid { path, .. } => path,
            ConfigError::Read { file, .. } => file,
        }
    }
}

impl Config {
    /// Reads and loads the file at `path`.
    pub fn from_path(path: impl AsRef<std::path::Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            file: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Config::from_yaml(&text)
    }

    /// Loads a configuration from YAML text.
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        if text.trim().is_empty() {
            return Err(ConfigError::at(
                "model_list",
                "required: the configuration is empty",
            ));
        }
        let options = serde_saphyr::options! { with_snippet: false };
        let mut failed_at = String::new();
        let mut ignored: Vec<String> = Vec::new();
        let parsed: Result<RawConfig, serde_saphyr::Error> =
            serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
                let mut track = serde_path_to_error::Track::new();
                let tracked = serde_path_to_error::Deserializer::new(de, &mut track);
                let result = serde_ignored::deserialize(tracked, |path| {
                    ignored.push(render_ignored(&path));
                });
                result.inspect_err(|_| failed_at = track.path().to_string())
            });
        let raw = parsed.map_err(|e| parse_error(text, &failed_at, &e))?;
        let warnings = ignored
            .into_iter()
            // Top-level `x-...` keys hold YAML anchors for the rest of the file (a common
            // convention in LiteLLM configs): used, not ignored.
            .filter(|path| !path.starts_with("x-") || path.contains(['.', '[']))
            .map(|path| ConfigWarning {
                kind: classify(&path),
                path,
            })
            .collect();
        let mut config = raw.into_config(warnings).map_err(|e| e.positioned(text))?;
        config.source = Source(Some(Arc::from(text)));
        Ok(config)
    }

    /// The configuration `ferrolite serve` runs: with no deployment in
    /// [`Config::not_callable`] as it is; otherwise an error naming each, unless
    /// `ferrolite_settings.skip_unsupported_deployments` is set, in which case they are left out
    /// of routing with one warning each. Startup and reload both go through it, and
    /// `ferrolite check` reports the same deployments.
    pub fn for_serving(mut self) -> Result<Config, ConfigError> {
        if self.not_callable.is_empty() {
            return Ok(self);
        }
        let listed: Vec<String> = self.not_callable.iter().map(ToString::to_string).collect();
        if !self.skip_unsupported_deployments {
            let first = self.not_callable.first().map_or(0, |n| n.index);
            let error = ConfigError::at(
                format!("model_list[{first}]"),
                format!(
                    "ferrolite cannot call {} deployment(s) yet: {}; remove them, or set \
                     ferrolite_settings.skip_unsupported_deployments: true to serve without them",
                    listed.len(),
                    listed.join("; ")
                ),
            );
            return Err(match &self.source.0 {
                Some(text) => error.positioned(text),
                None => error,
            });
        }
        for line in &listed {
            tracing::warn!("{line}; left out of routing (skip_unsupported_deployments)");
        }
        let skipped: Vec<&str> = self
            .not_callable
            .iter()
            .map(|n| n.deployment.as_str())
            .collect();
        self.deployments
            .retain(|d| !skipped.contains(&d.id().as_str()));
        if self.deployments.is_empty() {
            return Err(ConfigError::at(
                "model_list",
                "every deployment is not callable (skip_unsupported_deployments left none)",
            ));
        }
        self.not_callable.clear();
        Ok(self)
    }

    /// The keys accepted without effect, one line each (what `ferrolite check` prints).
    pub fn not_honoured(&self) -> Vec<String> {
        self.warnings.iter().map(ToString::to_string).collect()
    }
}

// ---- errors from the parser ----------------------------------------------------------------

/// A parser error as a [`ConfigError`]: the path the deserializer was at, a message that names
/// what was expected and the value found, and the position.
fn parse_error(text: &str, path: &str, error: &serde_saphyr::Error) -> ConfigError {
    let location = error.location();
    let (line, column) = match location {
        Some(l) if l.line() > 0 => (Some(l.line()), Some(l.column())),
        _ => (None, None),
    };
    let raw = error.to_string();
    // "error: line 5 column 12: invalid u64" -> "invalid u64"
    let message = match raw.split_once(": ") {
        Some((head, rest)) if head.starts_with("error") => match rest.split_once(": ") {
            Some((pos, rest)) if pos.starts_with("line ") => rest.to_string(),
            _ => rest.to_string(),
        },
        _ => raw.clone(),
    };
    let mut message = message
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    // Serde's own messages end with the position, which the error shows once already.
    if let Some(at) = message.rfind(" at line ") {
        if message[at..].contains(", column ") {
            message.truncate(at);
        }
    }
    let mut path = path
        .trim_start_matches('.')
        .trim_end_matches(".?")
        .to_string();
    let secret = is_secret(&path);
    let got = || {
        line.zip(column)
            .and_then(|(l, c)| scalar_at(text, l, c))
            .map_or_else(|| "nothing".to_string(), |token| show(&token, secret))
    };
    let message = if let Some(key) = message.strip_prefix("duplicate mapping key: ") {
        let key = key.split(',').next().unwrap_or(key);
        format!("the key `{key}` appears twice")
    } else if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|m| m.strip_suffix('`'))
    {
        if !path.is_empty() && path != "?" {
            path.push('.');
        } else {
            path.clear();
        }
        path.push_str(field);
        "required".to_string()
    } else if let Some(expected) = expected_of(&message) {
        format!("expected {expected}, got {}", got())
    } else {
        message
    };
    ConfigError::Invalid {
        path: if path == "?" { String::new() } else { path },
        message,
        line,
        column,
    }
}

/// What a parser message says was expected, in words.
fn expected_of(message: &str) -> Option<&'static str> {
    let lower = message.to_ascii_lowercase();
    Some(if lower.starts_with("invalid u8") {
        "an integer from 0 to 255"
    } else if lower.starts_with("invalid u16") {
        "an integer from 0 to 65535"
    } else if ["invalid u64", "invalid u32", "invalid usize"]
        .iter()
        .any(|m| lower.starts_with(m))
    {
        "a non-negative integer"
    } else if lower.starts_with("invalid i64") || lower.starts_with("invalid i32") {
        "an integer"
    } else if lower.starts_with("invalid floating point") || lower.contains("expected f64") {
        "a number"
    } else if lower.contains("invalid bool") || lower.contains("expected a boolean") {
        "true or false"
    } else if lower.contains("sequence start") || lower.contains("expected a sequence") {
        "a list"
    } else if lower.contains("mapping start") || lower.contains("expected a map") {
        "a mapping"
    } else if lower.contains("expected a string") || lower.contains("expected string") {
        "a string"
    } else {
        return None;
    })
}

/// The fields that hold secrets (`SecretValue`): an error about one names the field and the
/// expected type, never the value.
fn is_secret(path: &str) -> bool {
    let last = path.rsplit('.').next().unwrap_or(path);
    let in_headers = path
        .split('.')
        .rev()
        .skip(1)
        .any(|part| part == "extra_headers" || part == "headers");
    in_headers
        || matches!(
            last,
            "api_key" | "master_key" | "redis_url" | "url" | "password" | "redis_password"
        )
        || (last == "key" && path.contains("api_keys["))
}

/// The scalar (or the start of the node) at a 1-based line and column, cut where the scalar
/// ends: at a comment, and inside a flow collection (`{...}`, `[...]`) at the next `,`, `]` or
/// `}`, so that it never runs on into the next fields.
fn scalar_at(text: &str, line: u64, column: u64) -> Option<String> {
    let line = text
        .lines()
        .nth(usize::try_from(line.checked_sub(1)?).ok()?)?;
    let start = usize::try_from(column.checked_sub(1)?).ok()?;
    let before: String = line.chars().take(start).collect();
    let rest: String = line.chars().skip(start).collect();
    let mut rest = match rest.find(" #") {
        Some(comment) => &rest[..comment],
        None => rest.as_str(),
    };
    let in_flow = before.contains(['{', '[']);
    let quoted = rest.starts_with(['"', '\'']);
    if in_flow && !quoted && !rest.starts_with(['{', '[']) {
        if let Some(end) = rest.find([',', ']', '}']) {
            rest = &rest[..end];
        }
    }
    let token = rest.trim();
    (!token.is_empty()).then(|| token.to_string())
}

/// A token as the message shows it: a collection by its kind (never its text: it runs on into
/// the fields it holds), numbers as they are, other text quoted; the value of a `secret` field
/// never.
fn show(token: &str, secret: bool) -> String {
    let plain = !token.starts_with(['"', '\'']);
    if token.starts_with('{') {
        return "a mapping".to_string();
    }
    if token.starts_with('[') || token == "-" || token.starts_with("- ") {
        return "a list".to_string();
    }
    if plain && (token.ends_with(':') || token.contains(": ")) {
        return "a mapping".to_string();
    }
    if secret {
        return "a value of another type (not shown: the field holds a secret)".to_string();
    }
    if token.parse::<f64>().is_ok() {
        return token.to_string();
    }
    let unquoted = token
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .or_else(|| token.strip_prefix('\'').and_then(|t| t.strip_suffix('\'')))
        .unwrap_or(token);
    format!("{unquoted:?}")
}

/// `serde_ignored`'s path as `model_list[0].litellm_params.key`.
fn render_ignored(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", render_ignored(parent)),
        Path::Map { parent, key } => {
            let parent = render_ignored(parent);
            if parent.is_empty() {
                key.to_string()
            } else {
                format!("{parent}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => render_ignored(parent),
    }
}

/// Keys LiteLLM reads that ferrolite accepts without acting on, by section.
const LITELLM_KEYS: &[(&str, &[&str])] = &[
    (
        "litellm_params",
        &[
            "itpm",
            "otpm",
            "tpd",
            "rpd",
            "daily_reset_time",
            "timeout_by_service_tier",
            "stream_timeout_by_service_tier",
            "tag_regex",
            "litellm_credential_name",
            "configurable_clientside_auth_params",
            "vertex_project",
            "vertex_location",
            "vertex_credentials",
            "aws_access_key_id",
            "aws_secret_access_key",
            "aws_region_name",
            "aws_session_token",
            "aws_role_name",
            "drop_params",
            "max_retries",
            "use_in_pass_through",
            "merge_reasoning_content_in_choices",
            "input_cost_per_second",
            "output_cost_per_second",
            "model_info",
            "region",
        ],
    ),
    (
        "model_info",
        &[
            "blocked",
            "team_id",
            "team_public_model_name",
            "enable_tag_filtering",
            "allow_fail_open",
            "tier",
            "access_windows",
            "mode",
            "supports_vision",
            "supports_function_calling",
            "litellm_provider",
            "description",
            "access_groups",
            "db_model",
            "updated_at",
            "created_at",
            "updated_by",
            "created_by",
            "health_check_model",
            "health_check_max_tokens",
            "health_check_params",
        ],
    ),
    (
        "router_settings",
        &[
            "cache_kwargs",
            "client_ttl",
            "set_verbose",
            "debug_level",
            "default_litellm_params",
            "tag_routing_prefix",
            "plugins",
            "routing_groups",
            "alerting_config",
            "router_general_settings",
            "model_group_affinity_config",
            "background_health_check_model_groups",
            "enable_weighted_failover",
            "enable_mid_stream_fallback_continuation",
            "fallback_access_check",
            "fallback_budget_check",
            "auto_router_capability_limit",
            "session_affinity_repin_on_failover",
            "assistants_config",
            "search_tools",
            "guardrail_list",
            "model_group_retry_policy_hidden",
            "health_check_interval",
        ],
    ),
    (
        "litellm_settings",
        &[
            "drop_params",
            "set_verbose",
            "json_logs",
            "callbacks",
            "success_callback",
            "failure_callback",
            "service_callback",
            "turn_off_message_logging",
            "redact_user_api_key_info",
            "max_budget",
            "budget_duration",
            "telemetry",
            "modify_params",
            "enable_preview_features",
            "default_internal_user_params",
            "max_internal_user_budget",
            "internal_user_budget_duration",
            "upperbound_key_generate_params",
            "default_team_settings",
            "mcp_aliases",
            "guardrails",
            "num_retries_per_request",
            "force_ipv4",
            "ssl_verify",
            "disable_end_user_cost_tracking",
            "return_response_headers",
            "enable_json_schema_validation",
        ],
    ),
    (
        "cache_params",
        &[
            "username",
            "ssl",
            "redis_startup_nodes",
            "service_name",
            "sentinel_nodes",
            "supported_call_types",
            "max_connections",
            "s3_bucket_name",
            "s3_region_name",
            "s3_path",
            "disk_cache_dir",
            "similarity_threshold",
            "qdrant_semantic_cache_embedding_model",
            "redis_semantic_cache_embedding_model",
        ],
    ),
    (
        "general_settings",
        &[
            "database_url",
            "database_connection_pool_limit",
            "database_connection_timeout",
            "store_model_in_db",
            "store_prompts_in_spend_logs",
            "alerting",
            "alerting_threshold",
            "alert_types",
            "proxy_batch_write_at",
            "disable_spend_logs",
            "disable_master_key_return",
            "enforce_user_param",
            "allowed_routes",
            "admin_only_routes",
            "public_routes",
            "custom_auth",
            "health_check_details",
            "health_check_concurrency",
            "health_check_skip_disabled_background_models",
            "background_health_check_model_groups",
            "use_redis_transaction_buffer",
            "max_parallel_requests",
            "global_max_parallel_requests",
            "infer_model_from_keys",
            "maximum_spend_logs_retention_period",
            "ui_access_mode",
            "litellm_key_header_name",
            "user_header_name",
            "pass_through_endpoints",
            "disable_reset_budget",
            "proxy_budget_rescheduler_min_time",
            "proxy_budget_rescheduler_max_time",
        ],
    ),
    (
        "",
        &[
            "environment_variables",
            "guardrails",
            "mcp_servers",
            "credential_list",
            "vector_store_registry",
            "search_tools",
            "callback_settings",
            "model_group_settings",
            "files_settings",
            "finetune_settings",
            "assistant_settings",
            "include",
        ],
    ),
];

/// Keys LiteLLM accepts where its Router then ignores them, by section: `litellm_settings`
/// sets module globals (`setattr(litellm, key, value)` in the proxy's `load_config`), and the
/// Router reads only some (`num_retries`, `request_timeout`, `max_fallbacks`, the fallback
/// lists, `allowed_fails`). `cooldown_time` and `disable_cooldowns` are Router arguments only
/// (`cooldown_time or DEFAULT_COOLDOWN_TIME_SECONDS`); `allowed_fails` is read, but
/// `_is_allowed_fails_set_on_router` treats a router value equal to `litellm.allowed_fails` as
/// unset, so the failure-rate rules stay.
const IGNORED_BY_LITELLM: &[(&str, &[&str])] = &[(
    "litellm_settings",
    &["allowed_fails", "cooldown_time", "disable_cooldowns"],
)];

/// Whether LiteLLM knows the key at `path` (its last segment, in its section).
fn classify(path: &str) -> WarningKind {
    let segments: Vec<&str> = path.split('.').collect();
    let Some(key) = segments.last() else {
        return WarningKind::Unknown;
    };
    let key = key.split('[').next().unwrap_or(key);
    let section = if segments.len() == 1 {
        ""
    } else {
        let parent = segments[segments.len() - 2];
        parent.split('[').next().unwrap_or(parent)
    };
    let in_list = |list: &[(&str, &[&str])]| {
        list.iter()
            .any(|(s, keys)| *s == section && keys.contains(&key))
    };
    if in_list(IGNORED_BY_LITELLM) {
        return WarningKind::IgnoredByLitellm;
    }
    if in_list(LITELLM_KEYS) {
        WarningKind::NotImplemented
    } else {
        WarningKind::Unknown
    }
}

// ---- values ----------------------------------------------------------------------------------

/// A string that may be read from the environment (`os.environ/NAME`).
#[derive(Debug, Clone, PartialEq)]
struct EnvString(String);

impl<'de> Deserialize<'de> for EnvString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        resolve_env(&value).map(EnvString)
    }
}

/// `#[serde(deserialize_with)]` for an optional string that may be `os.environ/NAME`.
fn env_string_opt<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<EnvString>::deserialize(deserializer)?.map(|s| s.0))
}

/// `#[serde(deserialize_with)]` for a string that may be `os.environ/NAME`.
fn env_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    Ok(EnvString::deserialize(deserializer)?.0)
}

/// A secret, literal or from the environment (`os.environ/NAME`); never printed.
#[derive(Clone, PartialEq)]
struct SecretValue(Secret);

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> Deserialize<'de> for SecretValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        resolve_env(&value).map(|v| SecretValue(Secret::new(v)))
    }
}

fn resolve_env<E: serde::de::Error>(value: &str) -> Result<String, E> {
    match value.strip_prefix("os.environ/") {
        Some(name) => std::env::var(name).map_err(|_| {
            E::custom(format!(
                "the environment variable `{name}` (named by `os.environ/{name}`) is not set"
            ))
        }),
        None => Ok(value.to_string()),
    }
}

/// A scalar that may be written as itself or read from the environment (`os.environ/NAME`),
/// as LiteLLM reads `redis_port: os.environ/REDIS_PORT`: the variable's text is converted and
/// checked as the scalar written in place would be. A value from the environment is never
/// shown in an error (it may be a secret read through the wrong variable).
trait EnvScalar: Sized {
    /// What is expected, in words (`a non-negative integer`).
    const EXPECTED: &'static str;
    /// From an unsigned integer the YAML holds.
    fn from_u64(value: u64) -> Option<Self>;
    /// From a negative integer the YAML holds.
    fn from_i64(value: i64) -> Option<Self>;
    /// From a fractional number the YAML holds.
    fn from_f64(value: f64) -> Option<Self>;
    /// From a boolean the YAML holds.
    fn from_bool(_value: bool) -> Option<Self> {
        None
    }
    /// From text (an environment variable's, or a quoted scalar).
    fn parse(text: &str) -> Option<Self>;
}

macro_rules! env_integer {
    ($($t:ty => $expected:literal),* $(,)?) => {$(
        impl EnvScalar for $t {
            const EXPECTED: &'static str = $expected;
            fn from_u64(value: u64) -> Option<Self> {
                <$t>::try_from(value).ok()
            }
            fn from_i64(value: i64) -> Option<Self> {
                <$t>::try_from(value).ok()
            }
            fn from_f64(_value: f64) -> Option<Self> {
                None
            }
            fn parse(text: &str) -> Option<Self> {
                text.trim().parse().ok()
            }
        }
    )*};
}

env_integer!(
    u8 => "an integer from 0 to 255",
    u16 => "an integer from 0 to 65535",
    u32 => "a non-negative integer",
    u64 => "a non-negative integer",
    usize => "a non-negative integer",
);

impl EnvScalar for f64 {
    const EXPECTED: &'static str = "a number";
    fn from_u64(value: u64) -> Option<Self> {
        Some(value as f64)
    }
    fn from_i64(value: i64) -> Option<Self> {
        Some(value as f64)
    }
    fn from_f64(value: f64) -> Option<Self> {
        Some(value)
    }
    fn parse(text: &str) -> Option<Self> {
        text.trim().parse().ok()
    }
}

impl EnvScalar for bool {
    const EXPECTED: &'static str = "true or false";
    fn from_u64(_value: u64) -> Option<Self> {
        None
    }
    fn from_i64(_value: i64) -> Option<Self> {
        None
    }
    fn from_f64(_value: f64) -> Option<Self> {
        None
    }
    fn from_bool(value: bool) -> Option<Self> {
        Some(value)
    }
    fn parse(text: &str) -> Option<Self> {
        // As LiteLLM's `str_to_bool` reads an environment variable.
        match text.trim().to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        }
    }
}

/// Reads an [`EnvScalar`] (or nothing, for a YAML null) from any scalar.
struct EnvVisitor<T>(std::marker::PhantomData<T>);

impl<T: EnvScalar> EnvVisitor<T> {
    fn wrong<E: serde::de::Error>(shown: impl fmt::Display) -> E {
        E::custom(format!("expected {}, got {shown}", T::EXPECTED))
    }
}

impl<'de, T: EnvScalar> serde::de::Visitor<'de> for EnvVisitor<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} or os.environ/NAME", T::EXPECTED)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<Self::Value, E> {
        T::from_bool(value)
            .map(Some)
            .ok_or_else(|| Self::wrong(value))
    }

    fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Self::Value, E> {
        T::from_u64(value)
            .map(Some)
            .ok_or_else(|| Self::wrong(value))
    }

    fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Self::Value, E> {
        T::from_i64(value)
            .map(Some)
            .ok_or_else(|| Self::wrong(value))
    }

    fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<Self::Value, E> {
        // `{:?}` keeps the fraction of `100.0`, so "expected an integer" reads right.
        T::from_f64(value)
            .map(Some)
            .ok_or_else(|| Self::wrong(format!("{value:?}")))
    }

    fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Self::Value, E> {
        match value.strip_prefix("os.environ/") {
            Some(name) => {
                let text = resolve_env::<E>(value)?;
                T::parse(&text).map(Some).ok_or_else(|| {
                    E::custom(format!(
                        "expected {}, got the environment variable `{name}` (named by \
                         `os.environ/{name}`), whose value is not one (the value is not shown)",
                        T::EXPECTED
                    ))
                })
            }
            None => T::parse(value)
                .map(Some)
                .ok_or_else(|| Self::wrong(format!("{value:?}"))),
        }
    }
}

/// `#[serde(deserialize_with)]` for an optional scalar that may be `os.environ/NAME`.
fn env_opt<'de, D: Deserializer<'de>, T: EnvScalar>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    deserializer.deserialize_any(EnvVisitor::<T>(std::marker::PhantomData))
}

/// A scalar that may be `os.environ/NAME` where a value is required (not a null).
fn env_required<'de, D: Deserializer<'de>, T: EnvScalar>(deserializer: D) -> Result<T, D::Error> {
    env_opt(deserializer)?
        .ok_or_else(|| serde::de::Error::custom(format!("expected {}, got nothing", T::EXPECTED)))
}

/// A non-negative, finite number of seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Seconds(f64);

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value: f64 = env_required(deserializer)?;
        if !value.is_finite() || value < 0.0 {
            return Err(serde::de::Error::custom(format!(
                "expected a non-negative number of seconds, got {value}"
            )));
        }
        Ok(Seconds(value))
    }
}

impl Seconds {
    fn duration(self) -> Duration {
        Duration::from_secs_f64(self.0)
    }
}

/// LiteLLM's `mock_response`: a reply (or an exception's name), or for embeddings a vector.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
enum MockResponseDe {
    Text(String),
    Vector(Vec<f64>),
}

/// A share from 0 to 1.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Share(f64);

impl<'de> Deserialize<'de> for Share {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value: f64 = env_required(deserializer)?;
        if !(0.0..=1.0).contains(&value) {
            return Err(serde::de::Error::custom(format!(
                "expected a share from 0 to 1, got {value}"
            )));
        }
        Ok(Share(value))
    }
}

/// `routing_strategy`, by LiteLLM's names.
#[derive(Debug, Clone, Copy, PartialEq)]
struct StrategyDe(StrategyName);

impl<'de> Deserialize<'de> for StrategyDe {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = EnvString::deserialize(deserializer)?.0;
        name.parse::<StrategyName>().map(StrategyDe).map_err(|_| {
            let known: Vec<&str> = StrategyName::all().iter().map(|s| s.as_str()).collect();
            serde::de::Error::custom(format!(
                "unknown routing strategy {name:?}; one of: {}",
                known.join(", ")
            ))
        })
    }
}

/// One item's targets: a name or a list of names.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        }
    }
}

/// LiteLLM's fallback lists: `[{"gpt-4o": ["gpt-4o-mini", "claude"]}, {"*": ["default"]}]`.
type FallbackList = Vec<BTreeMap<String, OneOrMany>>;

/// A `model_group_alias` target: the group, or `{model, hidden}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
enum AliasTarget {
    Group(String),
    Detailed {
        model: String,
        #[serde(default)]
        hidden: bool,
    },
}

/// LiteLLM's `RetryPolicy`, with its field names.
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetryPolicy {
    #[serde(
        rename = "BadRequestErrorRetries",
        default,
        deserialize_with = "env_opt"
    )]
    bad_request: Option<u32>,
    #[serde(
        rename = "AuthenticationErrorRetries",
        default,
        deserialize_with = "env_opt"
    )]
    authentication: Option<u32>,
    #[serde(rename = "TimeoutErrorRetries", default, deserialize_with = "env_opt")]
    timeout: Option<u32>,
    #[serde(
        rename = "RateLimitErrorRetries",
        default,
        deserialize_with = "env_opt"
    )]
    rate_limit: Option<u32>,
    #[serde(
        rename = "ContentPolicyViolationErrorRetries",
        default,
        deserialize_with = "env_opt"
    )]
    content_policy: Option<u32>,
    #[serde(
        rename = "InternalServerErrorRetries",
        default,
        deserialize_with = "env_opt"
    )]
    internal_server: Option<u32>,
    #[serde(
        rename = "ServiceUnavailableErrorRetries",
        default,
        deserialize_with = "env_opt"
    )]
    service_unavailable: Option<u32>,
    #[serde(rename = "NotFoundErrorRetries", default, deserialize_with = "env_opt")]
    not_found: Option<u32>,
}

impl From<RawRetryPolicy> for RetryPolicy {
    fn from(raw: RawRetryPolicy) -> Self {
        RetryPolicy {
            bad_request: raw.bad_request,
            authentication: raw.authentication,
            timeout: raw.timeout,
            rate_limit: raw.rate_limit,
            content_policy: raw.content_policy,
            internal_server: raw.internal_server,
            service_unavailable: raw.service_unavailable,
            not_found: raw.not_found,
            default: None,
        }
    }
}

// ---- the document ---------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawConfig {
    model_list: Option<Vec<RawModel>>,
    router_settings: RawRouterSettings,
    litellm_settings: RawLitellmSettings,
    general_settings: RawGeneralSettings,
    ferrolite_settings: RawFerroliteSettings,
    simulation: Option<Simulation>,
}

#[derive(Debug, Deserialize)]
struct RawModel {
    model_name: String,
    litellm_params: RawParams,
    #[serde(default)]
    model_info: RawModelInfo,
    /// LiteLLM's strategies also read limits at the entry's top level.
    #[serde(default, deserialize_with = "env_opt")]
    rpm: Option<u64>,
    #[serde(default, deserialize_with = "env_opt")]
    tpm: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct RawParams {
    #[serde(deserialize_with = "env_string")]
    model: String,
    #[serde(default)]
    api_base: Option<EnvString>,
    #[serde(default)]
    api_key: Option<SecretValue>,
    #[serde(default)]
    api_version: Option<EnvString>,
    #[serde(default, deserialize_with = "env_string_opt")]
    custom_llm_provider: Option<String>,
    #[serde(default, deserialize_with = "env_opt")]
    rpm: Option<u64>,
    #[serde(default, deserialize_with = "env_opt")]
    tpm: Option<u64>,
    #[serde(default, deserialize_with = "env_opt")]
    max_parallel_requests: Option<u32>,
    #[serde(default, deserialize_with = "env_opt")]
    weight: Option<f64>,
    #[serde(default, deserialize_with = "env_opt")]
    order: Option<u32>,
    #[serde(default)]
    timeout: Option<Seconds>,
    #[serde(default)]
    request_timeout: Option<Seconds>,
    #[serde(default)]
    stream_timeout: Option<Seconds>,
    #[serde(default, deserialize_with = "env_opt")]
    num_retries: Option<u32>,
    #[serde(default)]
    cooldown_time: Option<Seconds>,
    #[serde(default, deserialize_with = "env_opt")]
    max_budget: Option<f64>,
    #[serde(default, deserialize_with = "env_string_opt")]
    budget_duration: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default, deserialize_with = "env_string_opt")]
    region_name: Option<String>,
    #[serde(default, deserialize_with = "env_string_opt")]
    base_model: Option<String>,
    #[serde(default, deserialize_with = "env_opt")]
    input_cost_per_token: Option<f64>,
    #[serde(default, deserialize_with = "env_opt")]
    output_cost_per_token: Option<f64>,
    #[serde(default, deserialize_with = "env_opt")]
    max_input_tokens: Option<u64>,
    #[serde(default)]
    mock_response: Option<MockResponseDe>,
    #[serde(default)]
    mock_timeout: Option<bool>,
    // request parameters sent with every call unless the request sets them
    #[serde(default)]
    temperature: Option<serde_json::Value>,
    #[serde(default)]
    top_p: Option<serde_json::Value>,
    #[serde(default)]
    max_tokens: Option<serde_json::Value>,
    #[serde(default)]
    max_completion_tokens: Option<serde_json::Value>,
    #[serde(default)]
    seed: Option<serde_json::Value>,
    #[serde(default)]
    stop: Option<serde_json::Value>,
    #[serde(default)]
    presence_penalty: Option<serde_json::Value>,
    #[serde(default)]
    frequency_penalty: Option<serde_json::Value>,
    #[serde(default)]
    response_format: Option<serde_json::Value>,
    #[serde(default)]
    reasoning_effort: Option<serde_json::Value>,
    // HTTP headers for every call (`extra_headers` wins over `headers`)
    #[serde(default)]
    extra_headers: BTreeMap<String, SecretValue>,
    #[serde(default)]
    headers: BTreeMap<String, SecretValue>,
    #[serde(default)]
    organization: Option<EnvString>,
    // ferrolite's mock behaviour (for `ferrolite simulate` and tests)
    #[serde(default, deserialize_with = "env_opt")]
    mock_latency_ms: Option<f64>,
    #[serde(default)]
    mock_jitter: Option<Share>,
    #[serde(default, deserialize_with = "env_opt")]
    mock_ttft_ms: Option<f64>,
    #[serde(default)]
    mock_error_rates: BTreeMap<String, Share>,
    #[serde(default, deserialize_with = "env_opt")]
    mock_rpm: Option<u64>,
    #[serde(default, deserialize_with = "env_opt")]
    mock_tpm: Option<u64>,
    #[serde(default, deserialize_with = "env_opt")]
    mock_output_tokens: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawModelInfo {
    id: Option<String>,
    #[serde(default, deserialize_with = "env_string_opt")]
    base_model: Option<String>,
    #[serde(default, deserialize_with = "env_opt")]
    max_input_tokens: Option<u64>,
    #[serde(default, deserialize_with = "env_opt")]
    max_output_tokens: Option<u64>,
    #[serde(default, deserialize_with = "env_opt")]
    input_cost_per_token: Option<f64>,
    #[serde(default, deserialize_with = "env_opt")]
    output_cost_per_token: Option<f64>,
    #[serde(default, deserialize_with = "env_opt")]
    rpm: Option<u64>,
    #[serde(default, deserialize_with = "env_opt")]
    tpm: Option<u64>,
    #[serde(default, deserialize_with = "env_opt")]
    order: Option<u32>,
    #[serde(default, deserialize_with = "env_opt")]
    allowed_fails: Option<u32>,
    allowed_fails_policy: Option<AllowedFailsPolicy>,
    cooldown_time: Option<Seconds>,
    #[serde(default, deserialize_with = "env_string_opt")]
    mode: Option<String>,
    #[serde(default, deserialize_with = "env_string_opt")]
    region_name: Option<String>,
    health_check_timeout: Option<Seconds>,
    disable_background_health_check: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawRouterSettings {
    routing_strategy: Option<StrategyDe>,
    routing_strategy_args: RawStrategyArgs,
    #[serde(default, deserialize_with = "env_opt")]
    num_retries: Option<u32>,
    timeout: Option<Seconds>,
    stream_timeout: Option<Seconds>,
    #[serde(default, deserialize_with = "env_opt")]
    allowed_fails: Option<u32>,
    allowed_fails_policy: Option<AllowedFailsPolicy>,
    cooldown_time: Option<Seconds>,
    #[serde(default, deserialize_with = "env_opt")]
    disable_cooldowns: Option<bool>,
    retry_policy: Option<RawRetryPolicy>,
    model_group_retry_policy: BTreeMap<String, RawRetryPolicy>,
    fallbacks: Option<FallbackList>,
    default_fallbacks: Option<Vec<String>>,
    context_window_fallbacks: Option<FallbackList>,
    content_policy_fallbacks: Option<FallbackList>,
    #[serde(default, deserialize_with = "env_opt")]
    max_fallbacks: Option<u32>,
    retry_after: Option<Seconds>,
    #[serde(default, deserialize_with = "env_opt")]
    enable_pre_call_checks: Option<bool>,
    #[serde(default, deserialize_with = "env_opt")]
    enable_tag_filtering: Option<bool>,
    #[serde(default, deserialize_with = "env_opt")]
    tag_filtering_match_any: Option<bool>,
    model_group_alias: BTreeMap<String, AliasTarget>,
    provider_budget_config: BTreeMap<String, BudgetConfig>,
    redis_url: Option<SecretValue>,
    redis_host: Option<EnvString>,
    #[serde(default, deserialize_with = "env_opt")]
    redis_port: Option<u16>,
    redis_password: Option<SecretValue>,
    #[serde(default, deserialize_with = "env_opt")]
    redis_db: Option<u32>,
    #[serde(default, deserialize_with = "env_opt")]
    ignore_invalid_deployments: Option<bool>,
    #[serde(default, deserialize_with = "env_opt")]
    default_max_parallel_requests: Option<u32>,
    #[serde(default, deserialize_with = "env_opt")]
    default_priority: Option<u8>,
    polling_interval: Option<Seconds>,
    optional_pre_call_checks: Vec<String>,
    deployment_affinity_ttl_seconds: Option<Seconds>,
    #[serde(default, deserialize_with = "env_opt")]
    enable_health_check_routing: Option<bool>,
    health_check_staleness_threshold: Option<Seconds>,
    #[serde(default, deserialize_with = "env_opt")]
    health_check_ignore_transient_errors: Option<bool>,
    #[serde(default, deserialize_with = "env_opt")]
    cache_responses: Option<bool>,
    caching_groups: Vec<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawStrategyArgs {
    ttl: Option<Seconds>,
    #[serde(default, deserialize_with = "env_opt")]
    lowest_latency_buffer: Option<f64>,
    #[serde(default, deserialize_with = "env_opt")]
    max_latency_list_size: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawLitellmSettings {
    model_alias_map: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "env_opt")]
    num_retries: Option<u32>,
    #[serde(default, deserialize_with = "env_opt")]
    max_fallbacks: Option<u32>,
    request_timeout: Option<Seconds>,
    fallbacks: Option<FallbackList>,
    context_window_fallbacks: Option<FallbackList>,
    content_policy_fallbacks: Option<FallbackList>,
    default_fallbacks: Option<Vec<String>>,
    tag_budget_config: BTreeMap<String, BudgetConfig>,
    #[serde(default, deserialize_with = "env_opt")]
    cache: Option<bool>,
    cache_params: Option<RawCacheParams>,
}

/// LiteLLM proxy's `litellm_settings.cache_params` (the keys ferrolite honours; the rest are
/// reported).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawCacheParams {
    #[serde(rename = "type", deserialize_with = "env_string_opt")]
    kind: Option<String>,
    #[serde(deserialize_with = "env_string_opt")]
    host: Option<String>,
    #[serde(deserialize_with = "env_opt")]
    port: Option<u16>,
    password: Option<SecretValue>,
    #[serde(alias = "url")]
    redis_url: Option<SecretValue>,
    ttl: Option<Seconds>,
    #[serde(default, deserialize_with = "env_string_opt")]
    namespace: Option<String>,
    #[serde(default, deserialize_with = "env_string_opt")]
    mode: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawGeneralSettings {
    master_key: Option<SecretValue>,
    // LiteLLM's proxy reads its health-check keys here (`router_settings` wins for the three it
    // shares with the Router).
    background_health_checks: Option<bool>,
    health_check_interval: Option<Seconds>,
    enable_health_check_routing: Option<bool>,
    health_check_staleness_threshold: Option<Seconds>,
    health_check_ignore_transient_errors: Option<bool>,
    /// LiteLLM shares health results through Redis only with this key; ferrolite always
    /// shares them through its state, so the value changes nothing.
    #[allow(dead_code)]
    use_shared_health_check: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawFerroliteSettings {
    admission: Option<AdmissionDe>,
    window: Option<WindowDe>,
    budget_windows: Option<BudgetWindowsDe>,
    budget_estimate: Option<BudgetEstimateDe>,
    #[serde(default, deserialize_with = "env_opt")]
    sync_interval_ms: Option<u64>,
    failure_mode: Option<FailureModeDe>,
    #[serde(default, deserialize_with = "env_string_opt")]
    redis_key_prefix: Option<String>,
    request_deadline: Option<Seconds>,
    retry_budget: Option<RawRetryBudget>,
    #[serde(default, deserialize_with = "env_opt")]
    half_open: Option<bool>,
    #[serde(default, deserialize_with = "env_opt")]
    deployment_affinity: Option<bool>,
    wait_queue: Option<RawWaitQueue>,
    lease_ttl: Option<Seconds>,
    response_cache: Option<RawResponseCache>,
    #[serde(default, deserialize_with = "env_opt")]
    seed: Option<u64>,
    api_keys: Vec<RawApiKey>,
    #[serde(default, deserialize_with = "env_opt")]
    skip_unsupported_deployments: Option<bool>,
    server: RawServer,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawServer {
    header_read_timeout: Option<Seconds>,
    body_read_timeout: Option<Seconds>,
    keep_alive_timeout: Option<Seconds>,
    max_connections: Option<usize>,
    max_headers: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApiKey {
    name: String,
    key: SecretValue,
    #[serde(default)]
    models: Vec<String>,
    #[serde(default, deserialize_with = "env_opt")]
    rpm: Option<u64>,
    #[serde(default, deserialize_with = "env_opt")]
    tpm: Option<u64>,
    #[serde(default, deserialize_with = "env_opt", alias = "budget_limit")]
    max_budget: Option<f64>,
    #[serde(default, deserialize_with = "env_string_opt", alias = "time_period")]
    budget_duration: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum AdmissionDe {
    Batched,
    Strict,
    Auto,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum WindowDe {
    Sliding,
    Fixed,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum BudgetWindowsDe {
    Rolling,
    Calendar,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum BudgetEstimateDe {
    Learned,
    WorstCase,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum FailureModeDe {
    FailOpen,
    FailClosed,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawRetryBudget {
    window: Option<Seconds>,
    #[serde(default, deserialize_with = "env_opt")]
    min_per_second: Option<u32>,
    #[serde(default, deserialize_with = "env_opt")]
    ratio: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawResponseCache {
    ttl: Option<Seconds>,
    #[serde(default, deserialize_with = "env_opt")]
    memory_bytes: Option<u64>,
    #[serde(default, deserialize_with = "env_opt")]
    redis: Option<bool>,
    ignore_fields: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawWaitQueue {
    #[serde(default, deserialize_with = "env_opt")]
    max_waiting: Option<usize>,
    max_wait: Option<Seconds>,
    poll_interval: Option<Seconds>,
}

// ---- from the document to a configuration ----------------------------------------------------

/// Fallback chains by group.
type Chains = std::collections::HashMap<String, Vec<String>>;

/// Splits LiteLLM's fallback lists into chains by group, and the `*` entry (when there is one).
fn chains(list: FallbackList, field: &str) -> Result<(Chains, Option<Vec<String>>), ConfigError> {
    let mut chains = std::collections::HashMap::new();
    let mut star = None;
    for (i, item) in list.into_iter().enumerate() {
        for (from, targets) in item {
            let targets = targets.into_vec();
            if from == "*" {
                star = Some(targets);
            } else if chains.insert(from.clone(), targets).is_some() {
                return Err(ConfigError::at(
                    format!("{field}[{i}].{from}"),
                    format!("the group {from:?} has a second fallback entry"),
                ));
            }
        }
    }
    Ok((chains, star))
}

impl RawConfig {
    fn into_config(self, warnings: Vec<ConfigWarning>) -> Result<Config, ConfigError> {
        let RawConfig {
            model_list,
            router_settings,
            litellm_settings,
            general_settings,
            ferrolite_settings,
            simulation,
        } = self;
        let models = model_list
            .ok_or_else(|| ConfigError::at("model_list", "required: at least one deployment"))?;
        let total = models.len();
        if models.is_empty() {
            return Err(ConfigError::at(
                "model_list",
                "required: at least one deployment, got an empty list",
            ));
        }
        let mut deployments = Vec::with_capacity(models.len());
        let mut mocks = BTreeMap::new();
        let mut not_callable = Vec::new();
        let mut health_checks = HealthChecks::default();
        let ignore_invalid = router_settings.ignore_invalid_deployments == Some(true);
        for (i, model) in models.into_iter().enumerate() {
            let mode = model.model_info.mode.clone();
            let check_timeout = model.model_info.health_check_timeout;
            let unchecked = model.model_info.disable_background_health_check == Some(true);
            let (deployment, mock) = match deployment_of(i, model) {
                Ok(built) => built,
                // LiteLLM's `ignore_invalid_deployments`: skipped with a warning, not fatal.
                Err(error) if ignore_invalid => {
                    tracing::warn!(%error, "deployment left out (ignore_invalid_deployments)");
                    continue;
                }
                Err(error) => return Err(error),
            };
            match mock {
                Some(mock) => {
                    mocks.insert(deployment.id().to_string(), mock);
                }
                None => {
                    if let Some(reason) = not_callable_reason(&deployment, mode.as_deref()) {
                        not_callable.push(NotCallable {
                            index: i,
                            deployment: deployment.id().to_string(),
                            model_group: deployment.model_name.clone(),
                            reason,
                        });
                    }
                }
            }
            if let Some(timeout) = check_timeout {
                if timeout.0 <= 0.0 {
                    return Err(ConfigError::at(
                        format!("model_list[{i}].model_info.health_check_timeout"),
                        "expected a number of seconds above 0, got 0",
                    ));
                }
                health_checks
                    .timeouts
                    .insert(deployment.id().to_string(), timeout.duration());
            }
            if unchecked {
                health_checks.disabled.insert(deployment.id().to_string());
            }
            deployments.push(deployment);
        }
        let skip_unsupported_deployments = ferrolite_settings
            .skip_unsupported_deployments
            .unwrap_or(false);
        if deployments.is_empty() {
            return Err(ConfigError::at(
                "model_list",
                format!(
                    "every one of the {total} deployments is invalid (ignore_invalid_deployments left none)"
                ),
            ));
        }
        if let Some(simulation) = &simulation {
            check_simulation(simulation, &deployments)?;
        }
        let (cache, response_cache_redis) =
            cache_of(&router_settings, &litellm_settings, &ferrolite_settings)?;
        let server = server_of(&ferrolite_settings.server)?;
        let (api_keys, key_budgets) = api_keys_of(&ferrolite_settings.api_keys, &deployments)?;
        let router_says = (
            router_settings.enable_health_check_routing.is_some(),
            router_settings.health_check_staleness_threshold.is_some(),
            router_settings
                .health_check_ignore_transient_errors
                .is_some(),
        );
        let hidden_aliases = router_settings
            .model_group_alias
            .iter()
            .filter(|(_, target)| matches!(target, AliasTarget::Detailed { hidden: true, .. }))
            .map(|(alias, _)| alias.clone())
            .collect();
        let mut settings = settings_of(router_settings, litellm_settings, ferrolite_settings)?;
        settings.budgets.tags.extend(key_budgets);
        health_checks_of(
            &general_settings,
            router_says,
            &mut settings,
            &mut health_checks,
        )?;
        Ok(Config {
            deployments,
            settings,
            cache,
            master_key: general_settings.master_key.map(|s| s.0),
            mocks,
            warnings,
            simulation,
            api_keys,
            not_callable,
            skip_unsupported_deployments,
            response_cache_redis,
            health_checks,
            hidden_aliases,
            server,
            source: Source(None),
        })
    }
}

/// `ferrolite_settings.server`: timeouts above 0, limits of at least 1 (`max_headers` at most
/// 4096).
fn server_of(raw: &RawServer) -> Result<crate::server::ServerSettings, ConfigError> {
    let mut server = crate::server::ServerSettings::default();
    let timeouts = [
        (
            "header_read_timeout",
            raw.header_read_timeout,
            &mut server.header_read_timeout,
        ),
        (
            "body_read_timeout",
            raw.body_read_timeout,
            &mut server.body_read_timeout,
        ),
        (
            "keep_alive_timeout",
            raw.keep_alive_timeout,
            &mut server.keep_alive_timeout,
        ),
    ];
    for (field, value, slot) in timeouts {
        if let Some(value) = value {
            if value.0 <= 0.0 || value.0 > 86_400.0 {
                return Err(ConfigError::at(
                    format!("ferrolite_settings.server.{field}"),
                    format!(
                        "expected a number of seconds above 0, at most 86400, got {}",
                        value.0
                    ),
                ));
            }
            *slot = value.duration();
        }
    }
    if let Some(n) = raw.max_connections {
        if n == 0 {
            return Err(ConfigError::at(
                "ferrolite_settings.server.max_connections",
                "expected at least 1 connection, got 0",
            ));
        }
        server.max_connections = n;
    }
    if let Some(n) = raw.max_headers {
        if !(1..=4096).contains(&n) {
            return Err(ConfigError::at(
                "ferrolite_settings.server.max_headers",
                format!("expected from 1 to 4096 header fields, got {n}"),
            ));
        }
        server.max_headers = n;
    }
    Ok(server)
}

/// The health-check keys of `general_settings`: the background checks, and the routing keys
/// LiteLLM's proxy also reads there (where `router_settings` does not set them; `router_says`
/// tells which it set).
fn health_checks_of(
    gs: &RawGeneralSettings,
    router_says: (bool, bool, bool),
    settings: &mut RouterSettings,
    checks: &mut HealthChecks,
) -> Result<(), ConfigError> {
    let (routing, staleness, transient) = router_says;
    if let (false, Some(on)) = (routing, gs.enable_health_check_routing) {
        settings.enable_health_check_routing = on;
    }
    if let (false, Some(t)) = (staleness, gs.health_check_staleness_threshold) {
        settings.health_check_staleness = t.duration();
    }
    if let (false, Some(on)) = (transient, gs.health_check_ignore_transient_errors) {
        settings.health_check_ignore_transient_errors = on;
    }
    checks.background = gs
        .background_health_checks
        .unwrap_or(settings.enable_health_check_routing);
    if let Some(interval) = gs.health_check_interval {
        if interval.0 <= 0.0 {
            return Err(ConfigError::at(
                "general_settings.health_check_interval",
                "expected a number of seconds above 0, got 0",
            ));
        }
        checks.interval = interval.duration();
    }
    Ok(())
}

/// The gateway's API keys, and the tag budgets of those that have one.
fn api_keys_of(
    raw: &[RawApiKey],
    deployments: &[Deployment],
) -> Result<(Vec<ApiKey>, BTreeMap<String, BudgetConfig>), ConfigError> {
    let mut keys = Vec::with_capacity(raw.len());
    let mut budgets = BTreeMap::new();
    for (i, key) in raw.iter().enumerate() {
        let at = |field: &str| format!("ferrolite_settings.api_keys[{i}].{field}");
        if key.name.trim().is_empty() {
            return Err(ConfigError::at(at("name"), "required: a name for the key"));
        }
        if key.key.0.expose().len() < 8 {
            return Err(ConfigError::at(at("key"), "expected at least 8 characters"));
        }
        if keys.iter().any(|k: &ApiKey| k.name == key.name) {
            return Err(ConfigError::at(
                at("name"),
                format!("a second key named {:?}", key.name),
            ));
        }
        for model in &key.models {
            if !deployments.iter().any(|d| &d.model_name == model) {
                return Err(ConfigError::at(
                    at("models"),
                    format!("names no model group, got {model:?}"),
                ));
            }
        }
        if key.tags.iter().any(|t| t.trim().is_empty()) {
            return Err(ConfigError::at(at("tags"), "expected non-empty tags"));
        }
        let entry = ApiKey {
            name: key.name.clone(),
            key_sha256: ApiKey::hash(key.key.0.expose()),
            models: key.models.clone(),
            rpm: key.rpm,
            tpm: key.tpm,
            budget: key.max_budget.is_some(),
            tags: key.tags.clone(),
        };
        if keys
            .iter()
            .any(|k: &ApiKey| k.key_sha256 == entry.key_sha256)
        {
            return Err(ConfigError::at(
                at("key"),
                "the same key as an earlier entry",
            ));
        }
        if key.max_budget.is_some() || key.budget_duration.is_some() {
            let budget = BudgetConfig {
                max_budget: key.max_budget,
                budget_duration: key.budget_duration.clone(),
            };
            check_budget(&format!("ferrolite_settings.api_keys[{i}]"), &budget)?;
            budgets.insert(entry.budget_tag(), budget);
        }
        keys.push(entry);
    }
    Ok((keys, budgets))
}

/// The simulation section's values and the deployments its failures name.
fn check_simulation(
    simulation: &Simulation,
    deployments: &[Deployment],
) -> Result<(), ConfigError> {
    if simulation.concurrency == Some(0) {
        return Err(ConfigError::at(
            "simulation.concurrency",
            "expected at least 1, got 0",
        ));
    }
    if let Some(share) = simulation.stream_share {
        if !(0.0..=1.0).contains(&share) {
            return Err(ConfigError::at(
                "simulation.stream_share",
                format!("expected a share from 0 to 1, got {share}"),
            ));
        }
    }
    for (group, weight) in &simulation.groups {
        if !weight.is_finite() || *weight < 0.0 {
            return Err(ConfigError::at(
                format!("simulation.groups.{group}"),
                format!("expected a non-negative share, got {weight}"),
            ));
        }
    }
    for (i, failure) in simulation.failures.iter().enumerate() {
        let at = |field: &str| format!("simulation.failures[{i}].{field}");
        if !deployments
            .iter()
            .any(|d| d.id().as_str() == failure.deployment)
        {
            return Err(ConfigError::at(
                at("deployment"),
                format!("names no deployment id, got {:?}", failure.deployment),
            ));
        }
        if !(failure.from_s >= 0.0 && failure.to_s > failure.from_s && failure.to_s.is_finite()) {
            return Err(ConfigError::at(
                at("to_s"),
                format!(
                    "expected 0 <= from_s < to_s, got {} to {}",
                    failure.from_s, failure.to_s
                ),
            ));
        }
        if litellm_error_class(&failure.error).is_none() {
            return Err(ConfigError::at(
                at("error"),
                format!("not an error class, got {:?}", failure.error),
            ));
        }
        if !(0.0..=1.0).contains(&failure.rate) {
            return Err(ConfigError::at(
                at("rate"),
                format!("expected a share from 0 to 1, got {}", failure.rate),
            ));
        }
    }
    Ok(())
}

/// A request parameter of `litellm_params`: its name, value, type check and expected type.
type Param<'p> = (
    &'static str,
    &'p Option<serde_json::Value>,
    &'p dyn Fn(&serde_json::Value) -> bool,
    &'static str,
);

/// The request parameters a deployment's `litellm_params` set (sent with every call whose
/// request does not set them), each checked for its JSON type.
fn default_params_of(
    p: &RawParams,
    at: &dyn Fn(&str) -> String,
) -> Result<serde_json::Map<String, serde_json::Value>, ConfigError> {
    use serde_json::Value;
    let number = |v: &Value| v.is_number();
    let integer = |v: &Value| v.as_u64().is_some();
    let stop =
        |v: &Value| v.is_string() || v.as_array().is_some_and(|a| a.iter().all(Value::is_string));
    let params: [Param<'_>; 10] = [
        ("temperature", &p.temperature, &number, "a number"),
        ("top_p", &p.top_p, &number, "a number"),
        ("presence_penalty", &p.presence_penalty, &number, "a number"),
        (
            "frequency_penalty",
            &p.frequency_penalty,
            &number,
            "a number",
        ),
        (
            "max_tokens",
            &p.max_tokens,
            &integer,
            "a non-negative integer",
        ),
        (
            "max_completion_tokens",
            &p.max_completion_tokens,
            &integer,
            "a non-negative integer",
        ),
        (
            "seed",
            &p.seed,
            &|v: &Value| v.is_i64() || v.is_u64(),
            "an integer",
        ),
        ("stop", &p.stop, &stop, "a string or a list of strings"),
        (
            "response_format",
            &p.response_format,
            &Value::is_object,
            "an object",
        ),
        (
            "reasoning_effort",
            &p.reasoning_effort,
            &Value::is_string,
            "a string",
        ),
    ];
    let mut defaults = serde_json::Map::new();
    for (name, value, valid, expected) in params {
        let Some(value) = value else { continue };
        if !valid(value) {
            return Err(ConfigError::at(
                at(name),
                format!("expected {expected}, got {value}"),
            ));
        }
        defaults.insert(name.to_string(), value.clone());
    }
    Ok(defaults)
}

/// One `model_list` entry as a deployment (completed from the catalogue) and its mock
/// behaviour, if it has one.
fn deployment_of(i: usize, raw: RawModel) -> Result<(Deployment, Option<MockSpec>), ConfigError> {
    let RawModel {
        model_name,
        litellm_params: p,
        model_info: info,
        rpm: entry_rpm,
        tpm: entry_tpm,
    } = raw;
    let at = |field: &str| format!("model_list[{i}].litellm_params.{field}");
    let lookup_name = info
        .base_model
        .clone()
        .or(p.base_model.clone())
        .unwrap_or_else(|| p.model.clone());
    let facts = catalogue::lookup(&lookup_name).unwrap_or_default();
    let default_params = default_params_of(&p, &at)?;
    let mut extra_headers = BTreeMap::new();
    for (field, headers) in [("headers", &p.headers), ("extra_headers", &p.extra_headers)] {
        for (name, value) in headers {
            let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
            if name.is_empty() || !name.chars().all(token) {
                return Err(ConfigError::at(
                    at(&format!("{field}.{name}")),
                    format!("expected an HTTP header name (letters, digits, `-`), got {name:?}"),
                ));
            }
            if value
                .0
                .expose()
                .chars()
                .any(|c| c == '\r' || c == '\n' || c == '\0')
            {
                return Err(ConfigError::at(
                    at(&format!("{field}.{name}")),
                    "expected a header value on one line (the value is not shown)",
                ));
            }
            extra_headers.insert(name.to_ascii_lowercase(), value.0.clone());
        }
    }
    // OpenAI's organisation id, as its SDK sends it.
    if let Some(organization) = &p.organization {
        extra_headers
            .entry("openai-organization".to_string())
            .or_insert_with(|| Secret::new(organization.0.clone()));
    }
    let deployment = Deployment {
        id: info.id,
        model_name,
        model: p.model.clone(),
        custom_llm_provider: p.custom_llm_provider,
        api_base: p.api_base.map(|s| s.0),
        api_key: p.api_key.map(|s| s.0),
        api_version: p.api_version.map(|s| s.0),
        rpm: p.rpm.or(info.rpm).or(entry_rpm),
        tpm: p.tpm.or(info.tpm).or(entry_tpm),
        max_parallel_requests: p.max_parallel_requests,
        weight: p.weight,
        order: p.order.or(info.order),
        tags: p.tags,
        max_input_tokens: info
            .max_input_tokens
            .or(p.max_input_tokens)
            .or(facts.max_input_tokens),
        max_output_tokens: info.max_output_tokens.or(facts.max_output_tokens),
        input_cost_per_token: info
            .input_cost_per_token
            .or(p.input_cost_per_token)
            .or(facts.input_cost_per_token),
        output_cost_per_token: info
            .output_cost_per_token
            .or(p.output_cost_per_token)
            .or(facts.output_cost_per_token),
        timeout: p.timeout.or(p.request_timeout).map(|s| s.0),
        stream_timeout: p.stream_timeout.map(|s| s.0),
        num_retries: p.num_retries,
        cooldown_time: p.cooldown_time.or(info.cooldown_time).map(|s| s.0),
        allowed_fails: info.allowed_fails,
        allowed_fails_policy: info.allowed_fails_policy,
        max_budget: p.max_budget,
        budget_duration: p.budget_duration,
        region_name: p.region_name.or(info.region_name),
        default_params,
        extra_headers,
    };
    deployment.validate().map_err(|e| {
        use ferrolite_types::TypesError;
        let field = match &e {
            TypesError::Empty { field }
            | TypesError::InvalidNumber { field, .. }
            | TypesError::OutOfRange { field, .. } => *field,
            TypesError::UnknownProvider { .. } => "model",
            _ => "model",
        };
        let path = if field == "model_name" {
            format!("model_list[{i}].model_name")
        } else if field == "id" {
            format!("model_list[{i}].model_info.id")
        } else {
            at(field)
        };
        ConfigError::at(path, e.to_string())
    })?;
    if deployment.max_budget.is_some() || deployment.budget_duration.is_some() {
        if deployment.max_budget.is_none() {
            return Err(ConfigError::at(
                at("max_budget"),
                "required with budget_duration: the deployment's budget in USD",
            ));
        }
        check_duration(
            &at("budget_duration"),
            deployment.budget_duration.as_deref(),
        )?;
    }
    let mocked = p.mock_response.is_some()
        || p.mock_timeout == Some(true)
        || p.mock_latency_ms.is_some()
        || p.mock_ttft_ms.is_some()
        || !p.mock_error_rates.is_empty()
        || p.mock_rpm.is_some()
        || p.mock_tpm.is_some()
        || p.mock_output_tokens.is_some();
    if !mocked {
        return Ok((deployment, None));
    }
    let millis = |field: &str, value: Option<f64>| -> Result<Option<Duration>, ConfigError> {
        match value {
            None => Ok(None),
            Some(ms) if ms.is_finite() && ms >= 0.0 => Ok(Some(Duration::from_secs_f64(ms / 1e3))),
            Some(ms) => Err(ConfigError::at(
                at(field),
                format!("expected a non-negative number of milliseconds, got {ms}"),
            )),
        }
    };
    let mut error_rates = Vec::new();
    for (name, rate) in p.mock_error_rates {
        let class = litellm_error_class(&name).ok_or_else(|| {
            ConfigError::at(
                at(&format!("mock_error_rates.{name}")),
                "not an error class: one of RateLimitError, Timeout, InternalServerError, \
                 ServiceUnavailableError, APIConnectionError, AuthenticationError, \
                 NotFoundError, BadRequestError, ContextWindowExceededError, \
                 ContentPolicyViolationError",
            )
        })?;
        error_rates.push((class, rate.0));
    }
    let mock = MockSpec {
        response: match p.mock_response {
            None => MockSpec::default().response,
            Some(MockResponseDe::Text(text)) => parse_mock_response(&text),
            Some(MockResponseDe::Vector(vector)) => MockResponse::Embedding(vector),
        },
        timeout: p.mock_timeout.unwrap_or(false),
        latency: millis("mock_latency_ms", p.mock_latency_ms)?.unwrap_or_default(),
        jitter: p.mock_jitter.map_or(0.0, |s| s.0),
        time_to_first_token: millis("mock_ttft_ms", p.mock_ttft_ms)?,
        error_rates,
        rpm: p.mock_rpm,
        tpm: p.mock_tpm,
        output_tokens: p.mock_output_tokens,
    };
    Ok((deployment, Some(mock)))
}

/// The state cache: Redis from `redis_url`, or `redis_host` + `redis_port` (+ password).
/// The state cache, and the response cache's own Redis when `cache_params` names one that is
/// not the state cache's.
fn cache_of(
    rs: &RawRouterSettings,
    ls: &RawLitellmSettings,
    fs: &RawFerroliteSettings,
) -> Result<(CacheConfig, Option<RedisConfig>), ConfigError> {
    let mut cache = CacheConfig::default();
    let url = match (&rs.redis_url, &rs.redis_host, rs.redis_port) {
        (Some(url), _, _) => Some(url.0.expose().to_string()),
        (None, Some(host), Some(port)) => {
            // LiteLLM's (deprecated) `redis_db` selects the database.
            let db = rs.redis_db.map_or_else(String::new, |db| format!("/{db}"));
            Some(match &rs.redis_password {
                Some(password) => format!(
                    "redis://:{}@{}:{port}{db}",
                    percent_encode(password.0.expose()),
                    host.0
                ),
                None => format!("redis://{}:{port}{db}", host.0),
            })
        }
        (None, Some(_), None) => {
            return Err(ConfigError::at(
                "router_settings.redis_port",
                "required with redis_host",
            ));
        }
        (None, None, Some(_)) => {
            return Err(ConfigError::at(
                "router_settings.redis_host",
                "required with redis_port",
            ));
        }
        (None, None, None) => None,
    };
    let with_prefix = |url: String| {
        let redis = RedisConfig::new(url);
        match &fs.redis_key_prefix {
            Some(prefix) => redis.with_prefix(prefix.clone()),
            None => redis,
        }
    };
    // The proxy's `_update_redis_cache`: a router without Redis of its own keeps its state in
    // the response cache's Redis (`litellm_settings.cache_params`); a router with its own
    // keeps the answers in the Redis `cache_params` names, when that is another.
    let answers_url = cache_params_redis(rs, ls)?;
    // An invalid URL is reported at the key it was written under (`redis_host` when built
    // from host and port).
    let router_path = if rs.redis_url.is_some() {
        "router_settings.redis_url"
    } else {
        "router_settings.redis_host"
    };
    let answers_path = match ls.cache_params.as_ref() {
        Some(params) if params.redis_url.is_none() && params.host.is_some() => {
            "litellm_settings.cache_params.host"
        }
        _ => "litellm_settings.cache_params.redis_url",
    };
    let (url, url_path, answers) = match (url, answers_url) {
        (Some(url), Some(answers)) if answers != url => {
            let answers = with_prefix(answers);
            answers
                .check_url()
                .map_err(|e| ConfigError::at(answers_path, e.to_string()))?;
            (Some(url), router_path, Some(answers))
        }
        (Some(url), _) => (Some(url), router_path, None),
        (None, answers) => (answers, answers_path, None),
    };
    cache.redis = url.map(with_prefix);
    if let Some(ms) = fs.sync_interval_ms {
        if ms == 0 {
            return Err(ConfigError::at(
                "ferrolite_settings.sync_interval_ms",
                "expected a positive number of milliseconds, got 0",
            ));
        }
        cache.sync_interval = Duration::from_millis(ms);
    }
    if let Some(mode) = fs.failure_mode {
        cache.failure_mode = match mode {
            FailureModeDe::FailOpen => FailureMode::FailOpen,
            FailureModeDe::FailClosed => FailureMode::FailClosed,
        };
    }
    cache
        .validate()
        .map_err(|e| ConfigError::at(url_path, e.to_string()))?;
    Ok((cache, answers))
}

/// The Redis `litellm_settings.cache_params` names (`redis_url`, or `host` + `port` +
/// `password`), when the response cache is on and of type `redis` (the proxy's default).
/// An explicit `type: redis` with no Redis anywhere is an error: the cache is never silently
/// kept in memory only.
fn cache_params_redis(
    rs: &RawRouterSettings,
    ls: &RawLitellmSettings,
) -> Result<Option<String>, ConfigError> {
    let on = rs.cache_responses == Some(true) || ls.cache == Some(true);
    let Some(params) = ls.cache_params.as_ref().filter(|_| on) else {
        return Ok(None);
    };
    if !matches!(params.kind.as_deref(), None | Some("redis")) {
        return Ok(None);
    }
    let url = match (&params.redis_url, &params.host) {
        (Some(url), _) => Some(url.0.expose().to_string()),
        (None, Some(host)) => {
            let port = params.port.unwrap_or(6379);
            Some(match &params.password {
                Some(password) => format!(
                    "redis://:{}@{host}:{port}",
                    percent_encode(password.0.expose())
                ),
                None => format!("redis://{host}:{port}"),
            })
        }
        (None, None) => {
            if params.port.is_some() || params.password.is_some() {
                return Err(ConfigError::at(
                    "litellm_settings.cache_params.host",
                    "required with port or password (or give redis_url)",
                ));
            }
            None
        }
    };
    if url.is_none() && params.kind.as_deref() == Some("redis") {
        return Err(ConfigError::at(
            "litellm_settings.cache_params.type",
            "`redis` needs a Redis: give cache_params host and port (or redis_url), or \
             router_settings.redis_url; `type: local` keeps answers in this process",
        ));
    }
    Ok(url)
}

/// Checks one budget: a limit (finite, >= 0) and a window LiteLLM's duration syntax accepts.
fn check_budget(path: &str, budget: &BudgetConfig) -> Result<(), ConfigError> {
    match budget.max_budget {
        None => {
            return Err(ConfigError::at(
                format!("{path}.budget_limit"),
                "required: the budget's limit in USD (`budget_limit` or `max_budget`)",
            ));
        }
        Some(limit) if !limit.is_finite() || limit < 0.0 => {
            return Err(ConfigError::at(
                format!("{path}.budget_limit"),
                format!("expected a non-negative number of USD, got {limit}"),
            ));
        }
        Some(_) => {}
    }
    check_duration(
        &format!("{path}.time_period"),
        budget.budget_duration.as_deref(),
    )
}

/// A budget window: required, in LiteLLM's syntax (`30d`, `1mo`, `daily`, ...).
fn check_duration(path: &str, duration: Option<&str>) -> Result<(), ConfigError> {
    let Some(duration) = duration else {
        return Err(ConfigError::at(
            path,
            "required: the budget's window (`time_period` or `budget_duration`, e.g. 1d, 30d, 1mo)",
        ));
    };
    ferrolite_budgets::BudgetDuration::parse(duration)
        .map(drop)
        .map_err(|_| {
            ConfigError::at(
                path,
                format!(
                    "expected a duration such as 30s, 15m, 1h, 1d, 1w, 1mo, daily or monthly, \
                     got {duration:?}"
                ),
            )
        })
}

/// `value` percent-encoded for a URL's user information (everything but unreserved
/// characters), so a password with `/`, `@` or `:` stays one password.
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The routing settings: `router_settings` first, then `litellm_settings` (LiteLLM reads the
/// globals only when the router's own argument is unset), then ferrolite's.
fn settings_of(
    rs: RawRouterSettings,
    ls: RawLitellmSettings,
    fs: RawFerroliteSettings,
) -> Result<RouterSettings, ConfigError> {
    let mut s = RouterSettings::default();
    let response_cache = response_cache_of(&rs, &ls, &fs)?;
    if let Some(strategy) = rs.routing_strategy {
        s.routing_strategy = strategy.0;
    }
    s.strategy.args.ttl = rs.routing_strategy_args.ttl.map(|t| t.0);
    s.strategy.args.lowest_latency_buffer = rs.routing_strategy_args.lowest_latency_buffer;
    s.strategy.args.max_latency_list_size = rs.routing_strategy_args.max_latency_list_size;
    s.strategy
        .args
        .validate()
        .map_err(|e| ConfigError::at("router_settings.routing_strategy_args", e.to_string()))?;
    s.strategy.seed = fs.seed;
    if let Some(n) = rs.num_retries.or(ls.num_retries) {
        s.num_retries = n;
    }
    if let Some(t) = rs.timeout.or(ls.request_timeout) {
        if t.0 == 0.0 {
            let path = if rs.timeout.is_some() {
                "router_settings.timeout"
            } else {
                "litellm_settings.request_timeout"
            };
            return Err(ConfigError::at(
                path,
                "expected a number of seconds > 0, got 0",
            ));
        }
        s.timeout = t.duration();
    }
    if let Some(t) = rs.stream_timeout {
        if t.0 == 0.0 {
            return Err(ConfigError::at(
                "router_settings.stream_timeout",
                "expected a number of seconds > 0, got 0",
            ));
        }
        s.stream_timeout = Some(t.duration());
    }
    s.allowed_fails = rs.allowed_fails;
    s.allowed_fails_policy = rs.allowed_fails_policy;
    if let Some(t) = rs.cooldown_time {
        // LiteLLM: `cooldown_time or 5` — a router-level 0 means the default.
        if t.0 > 0.0 {
            s.cooldown_time = t.duration();
        }
    }
    s.disable_cooldowns = rs.disable_cooldowns.unwrap_or(false);
    s.retry_policy = rs.retry_policy.map(Into::into);
    s.model_group_retry_policy = rs
        .model_group_retry_policy
        .into_iter()
        .map(|(group, policy)| (group, policy.into()))
        .collect();
    let (fallbacks, star) = match rs.fallbacks {
        Some(list) => chains(list, "router_settings.fallbacks")?,
        None => chains(
            ls.fallbacks.unwrap_or_default(),
            "litellm_settings.fallbacks",
        )?,
    };
    s.fallbacks = fallbacks;
    // An explicit `"*"` entry wins over `default_fallbacks`, as in LiteLLM's Router (which
    // appends `default_fallbacks` as a `"*"` entry only when `fallbacks` has none).
    s.default_fallbacks = match star {
        Some(star) => star,
        None => rs
            .default_fallbacks
            .or(ls.default_fallbacks)
            .unwrap_or_default(),
    };
    s.context_window_fallbacks = match rs.context_window_fallbacks {
        Some(list) => chains(list, "router_settings.context_window_fallbacks")?.0,
        None => {
            chains(
                ls.context_window_fallbacks.unwrap_or_default(),
                "litellm_settings.context_window_fallbacks",
            )?
            .0
        }
    };
    s.content_policy_fallbacks = match rs.content_policy_fallbacks {
        Some(list) => chains(list, "router_settings.content_policy_fallbacks")?.0,
        None => {
            chains(
                ls.content_policy_fallbacks.unwrap_or_default(),
                "litellm_settings.content_policy_fallbacks",
            )?
            .0
        }
    };
    if let Some(n) = rs.max_fallbacks.or(ls.max_fallbacks) {
        s.max_fallbacks = n;
    }
    if let Some(t) = rs.retry_after {
        s.retry_after = t.duration();
    }
    s.enable_pre_call_checks = rs.enable_pre_call_checks.unwrap_or(false);
    s.enable_tag_filtering = rs.enable_tag_filtering.unwrap_or(false);
    s.tag_filtering_match_any = rs.tag_filtering_match_any.unwrap_or(true);
    s.model_group_alias = rs
        .model_group_alias
        .into_iter()
        .map(|(alias, target)| {
            let group = match target {
                AliasTarget::Group(group) => group,
                AliasTarget::Detailed { model, .. } => model,
            };
            (alias, group)
        })
        .collect();
    // The proxy maps a request's model through `litellm.model_alias_map` before routing: an
    // alias as `model_group_alias` gives one (whose own entries win).
    for (alias, group) in ls.model_alias_map {
        s.model_group_alias.entry(alias).or_insert(group);
    }
    for (name, budget) in &rs.provider_budget_config {
        check_budget(
            &format!("router_settings.provider_budget_config.{name}"),
            budget,
        )?;
    }
    for (tag, budget) in &ls.tag_budget_config {
        check_budget(&format!("litellm_settings.tag_budget_config.{tag}"), budget)?;
    }
    s.budgets = BudgetsConfig {
        providers: rs.provider_budget_config,
        tags: ls.tag_budget_config,
        alignment: match fs.budget_windows {
            Some(BudgetWindowsDe::Calendar) => WindowAlignment::Calendar,
            _ => WindowAlignment::Rolling,
        },
        reservation: match fs.budget_estimate {
            Some(BudgetEstimateDe::WorstCase) => ReservationPolicy::WorstCase,
            _ => ReservationPolicy::Estimate,
        },
    };
    s.default_max_parallel_requests = rs.default_max_parallel_requests;
    s.default_priority = rs.default_priority;
    for (i, check) in rs.optional_pre_call_checks.iter().enumerate() {
        match check.as_str() {
            "deployment_affinity" | "session_affinity" => s.deployment_affinity = true,
            "router_budget_limiting" | "enforce_model_rate_limits" => {}
            other => {
                tracing::warn!(
                    check = other,
                    "router_settings.optional_pre_call_checks[{i}]: accepted, not implemented"
                );
            }
        }
    }
    if let Some(ttl) = rs.deployment_affinity_ttl_seconds {
        s.deployment_affinity_ttl = ttl.duration();
    }
    s.enable_health_check_routing = rs.enable_health_check_routing.unwrap_or(false);
    if let Some(t) = rs.health_check_staleness_threshold {
        s.health_check_staleness = t.duration();
    }
    s.health_check_ignore_transient_errors =
        rs.health_check_ignore_transient_errors.unwrap_or(false);
    // ferrolite's own
    if let Some(mode) = fs.admission {
        s.admission = match mode {
            AdmissionDe::Batched => AdmissionMode::Batched,
            AdmissionDe::Strict => AdmissionMode::Strict,
            AdmissionDe::Auto => AdmissionMode::Auto,
        };
    }
    if let Some(window) = fs.window {
        s.window = match window {
            WindowDe::Sliding => Window::MINUTE_SLIDING,
            WindowDe::Fixed => Window::MINUTE_FIXED,
        };
    }
    s.request_deadline = fs.request_deadline.map(Seconds::duration);
    if let Some(budget) = fs.retry_budget {
        if let Some(ratio) = budget.ratio {
            if !ratio.is_finite() || ratio < 0.0 {
                return Err(ConfigError::at(
                    "ferrolite_settings.retry_budget.ratio",
                    format!("expected a non-negative number of retries per success, got {ratio}"),
                ));
            }
        }
        if budget.window.is_some_and(|w| w.0 == 0.0) {
            return Err(ConfigError::at(
                "ferrolite_settings.retry_budget.window",
                "expected a number of seconds > 0, got 0",
            ));
        }
        let defaults = RetryBudgetSettings::default();
        s.retry_budget = Some(RetryBudgetSettings {
            window: budget.window.map_or(defaults.window, Seconds::duration),
            min_per_second: budget.min_per_second.unwrap_or(defaults.min_per_second),
            ratio: budget.ratio.unwrap_or(defaults.ratio),
        });
    }
    s.half_open = fs.half_open.unwrap_or(false);
    if let Some(affinity) = fs.deployment_affinity {
        s.deployment_affinity = affinity;
    }
    // LiteLLM queues requests once a default priority is set; ferrolite also on `wait_queue`.
    if fs.wait_queue.is_some() || rs.default_priority.is_some() {
        let defaults = WaitQueueSettings::default();
        let queue = fs.wait_queue.unwrap_or_default();
        let zero = |field: &str, is_zero: bool| {
            if is_zero {
                Err(ConfigError::at(
                    format!("ferrolite_settings.wait_queue.{field}"),
                    "expected a value > 0, got 0",
                ))
            } else {
                Ok(())
            }
        };
        zero("max_waiting", queue.max_waiting == Some(0))?;
        zero("max_wait", queue.max_wait.is_some_and(|w| w.0 == 0.0))?;
        zero(
            "poll_interval",
            queue.poll_interval.is_some_and(|w| w.0 == 0.0),
        )?;
        s.wait_queue = Some(WaitQueueSettings {
            max_waiting: queue.max_waiting.unwrap_or(defaults.max_waiting),
            max_wait: queue.max_wait.map_or(defaults.max_wait, Seconds::duration),
            poll_interval: queue
                .poll_interval
                .or(rs.polling_interval)
                .map_or(defaults.poll_interval, Seconds::duration),
        });
    }
    if let Some(ttl) = fs.lease_ttl {
        if ttl.0 < 0.003 {
            return Err(ConfigError::at(
                "ferrolite_settings.lease_ttl",
                format!("expected at least 0.003 seconds, got {}", ttl.0),
            ));
        }
        s.lease_ttl = ttl.duration();
    }
    s.response_cache = response_cache;
    Ok(s)
}

/// `router_settings.cache_responses` (the Router's) or `litellm_settings.cache` (the proxy's)
/// turns the response cache on; `caching_groups`, `litellm_settings.cache_params` (`type`,
/// `ttl`, `namespace`) and `ferrolite_settings.response_cache` shape it.
fn response_cache_of(
    rs: &RawRouterSettings,
    ls: &RawLitellmSettings,
    fs: &RawFerroliteSettings,
) -> Result<Option<ResponseCacheSettings>, ConfigError> {
    if rs.cache_responses != Some(true) && ls.cache != Some(true) {
        return Ok(None);
    }
    let mut cache = ResponseCacheSettings {
        caching_groups: rs.caching_groups.clone(),
        ..ResponseCacheSettings::default()
    };
    if let Some(params) = &ls.cache_params {
        match params.kind.as_deref() {
            None | Some("redis") => {}
            Some("local") => cache.redis = false,
            Some(other) => {
                return Err(ConfigError::at(
                    "litellm_settings.cache_params.type",
                    format!(
                        "expected `local` or `redis` (ferrolite's response cache tiers), got `{other}`"
                    ),
                ));
            }
        }
        if let Some(ttl) = params.ttl {
            if ttl.0 < 0.001 {
                return Err(ConfigError::at(
                    "litellm_settings.cache_params.ttl",
                    format!("expected at least 0.001 seconds, got {}", ttl.0),
                ));
            }
            cache.ttl = ttl.duration();
        }
        cache.namespace = params.namespace.clone();
        cache.opt_in = match params.mode.as_deref() {
            None | Some("default_on") => false,
            Some("default_off") => true,
            Some(other) => {
                return Err(ConfigError::at(
                    "litellm_settings.cache_params.mode",
                    format!("expected `default_on` or `default_off`, got `{other}`"),
                ));
            }
        };
    }
    for (i, group) in rs.caching_groups.iter().enumerate() {
        if group.is_empty() {
            return Err(ConfigError::at(
                format!("router_settings.caching_groups[{i}]"),
                "expected a list of model groups, got []",
            ));
        }
    }
    let Some(raw) = &fs.response_cache else {
        return Ok(Some(cache));
    };
    if let Some(ttl) = raw.ttl {
        if ttl.0 < 0.001 {
            return Err(ConfigError::at(
                "ferrolite_settings.response_cache.ttl",
                format!("expected at least 0.001 seconds, got {}", ttl.0),
            ));
        }
        cache.ttl = ttl.duration();
    }
    if let Some(redis) = raw.redis {
        cache.redis = redis;
    }
    if let Some(bytes) = raw.memory_bytes {
        if bytes == 0 && !cache.redis {
            return Err(ConfigError::at(
                "ferrolite_settings.response_cache.memory_bytes",
                "expected a number of bytes > 0 with redis: false (0 keeps answers in Redis only), got 0",
            ));
        }
        cache.memory_bytes = bytes;
    }
    cache.ignore_fields = raw.ignore_fields.clone();
    Ok(Some(cache))
}

#[cfg(test)]
mod tests {
    /// Every field declared as a `SecretValue` is one `is_secret` knows, so that an error about
    /// a new secret field never shows its value (a guard on the list, which goes by path).
    #[test]
    fn every_secret_value_field_is_known_as_a_secret() {
        let mut found = Vec::new();
        for line in include_str!("config.rs").lines() {
            let Some((name, ty)) = line.trim().split_once(':') else {
                continue;
            };
            if !ty.contains("SecretValue") || name.contains([' ', '(', '/']) {
                continue;
            }
            let path = if ty.contains("BTreeMap") {
                format!("model_list[0].litellm_params.{name}.X-Header")
            } else if name == "key" {
                format!("ferrolite_settings.api_keys[0].{name}")
            } else {
                format!("section.{name}")
            };
            assert!(super::is_secret(&path), "{path} is not known as a secret");
            found.push(name.to_string());
        }
        assert!(found.len() >= 9, "{found:?}");
        assert!(super::is_secret("litellm_settings.cache_params.url"));
        assert!(!super::is_secret("model_list[0].litellm_params.rpm"));
    }
}
