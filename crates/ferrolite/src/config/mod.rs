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
//!
//! A configuration flows through this module's files in this order ([`Config::from_yaml`]):
//!
//! 1. `raw.rs`: the YAML as written — `RawConfig` and the sections it holds, with the serde
//!    shapes LiteLLM allows (a fallback target as one name or a list, an alias as a group or
//!    `{model, hidden}`, LiteLLM's `RetryPolicy` field names);
//! 2. `env.rs`: the scalars those types are read with — `os.environ/NAME` strings, secrets and
//!    numbers, seconds and shares, each checked as it is read;
//! 3. `warnings.rs`: the keys the parser passed over, each classified against LiteLLM's own key
//!    table (not implemented, ignored by LiteLLM too, or unknown);
//! 4. `convert/`: the raw document as a [`Config`], one file per topic — `deployment.rs`
//!    (`model_list`, the catalogue, mocks, what cannot be called), `settings.rs` (the routing
//!    settings, one function per block), `cache.rs` (the state cache's and the response cache's
//!    Redis), `budgets.rs`, `serving.rs` (the gateway's connection settings, API keys and
//!    health checks) and `simulation.rs`;
//! 5. `locate.rs`: where an error is — the line and column of a path in the YAML, and the
//!    parser's errors in words (never showing a secret).
//!
//! The public types live here: [`Config`] and what it holds ([`HealthChecks`], [`ApiKey`],
//! [`NotCallable`], [`Simulation`]), [`ConfigWarning`] and [`ConfigError`].

mod convert;
mod env;
mod locate;
mod raw;
mod warnings;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ferrolite_cache::{CacheConfig, RedisConfig};
use ferrolite_router::RouterSettings;
use ferrolite_types::{Deployment, Secret};
use serde::Deserialize;

use crate::mock::MockSpec;

/// OpenTelemetry traces as the configuration asks for them (`ferrolite_settings.otel`, and
/// LiteLLM's `litellm_settings.callbacks: ["otel"]`); the `OTEL_*` variables complete it when
/// the traces are started (`ferrolite::otel`, feature `otel`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OtelConfig {
    /// `endpoint`: the collector's URL (for HTTP, its base: `/v1/traces` is added unless the
    /// URL ends with it).
    pub endpoint: Option<String>,
    /// `protocol`: `http/protobuf` or `grpc`.
    pub protocol: Option<OtelProtocol>,
    /// `headers`: sent with every export (values may be `os.environ/NAME`).
    pub headers: Vec<(String, Secret)>,
    /// `service_name`: the resource's `service.name`.
    pub service_name: Option<String>,
    /// `sampling_ratio`: the share of new traces sampled (0 to 1); a trace continued from a
    /// client's `traceparent` follows the client's decision.
    pub sampling_ratio: Option<f64>,
    /// `litellm_settings.callbacks` names `otel`: LiteLLM's `OTEL_EXPORTER`, `OTEL_ENDPOINT` and
    /// `OTEL_HEADERS` variables are read too.
    pub litellm_callback: bool,
}

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtelProtocol {
    /// Protobuf over HTTP (`http/protobuf`, port 4318).
    HttpProtobuf,
    /// gRPC (`grpc`, port 4317).
    Grpc,
}

impl OtelProtocol {
    /// The protocol a name says: `http/protobuf` (also LiteLLM's `otlp_http`, and `http/json`,
    /// exported as protobuf), `grpc` (also LiteLLM's `otlp_grpc`).
    pub fn parse(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "http/protobuf" | "http" | "otlp_http" | "http/json" => {
                Some(OtelProtocol::HttpProtobuf)
            }
            "grpc" | "otlp_grpc" => Some(OtelProtocol::Grpc),
            _ => None,
        }
    }
}

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
    /// `litellm_settings.require_auth_for_metrics_endpoint`: `/metrics` needs the master key
    /// (default false: open, as LiteLLM documents it).
    pub require_auth_for_metrics: bool,
    /// `ferrolite_settings.otel` and LiteLLM's `callbacks: ["otel"]`: OpenTelemetry traces.
    pub otel: OtelConfig,
    /// The YAML it was loaded from, to give errors found later (building the router) their
    /// line and column.
    pub(crate) source: Source,
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
        let parsed: Result<raw::RawConfig, serde_saphyr::Error> =
            serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
                let mut track = serde_path_to_error::Track::new();
                let tracked = serde_path_to_error::Deserializer::new(de, &mut track);
                let result = serde_ignored::deserialize(tracked, |path| {
                    ignored.push(warnings::render_ignored(&path));
                });
                result.inspect_err(|_| failed_at = track.path().to_string())
            });
        let raw = parsed.map_err(|e| locate::parse_error(text, &failed_at, &e))?;
        let warnings = warnings::warnings_of(ignored);
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
    /// Whether its callers may ask for a routing explanation (`x-ferrolite-explain: true`):
    /// the deployments left out and why, the scores, the pick, the attempts.
    pub explain: bool,
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
            .field("explain", &self.explain)
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

/// How an [`ConfigError::Invalid`] begins: its path, or "the document".
fn prefix(path: &str) -> String {
    if path.is_empty() {
        "the document: ".to_string()
    } else {
        format!("{path}: ")
    }
}

/// How an [`ConfigError::Invalid`] ends: its line and column, when known.
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
                let (line, column) = locate::locate(text, &path).unzip();
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
