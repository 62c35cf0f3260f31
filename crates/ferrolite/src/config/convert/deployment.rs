//! `model_list`: each entry as a [`Deployment`] completed from the model catalogue, its mock
//! behaviour, and whether ferrolite's backends can call it.

use std::collections::BTreeMap;
use std::time::Duration;

use ferrolite_types::{Deployment, Secret};

use super::budgets::check_duration;
use crate::catalogue;
use crate::config::raw::{MockResponseDe, RawModel, RawParams};
use crate::config::{ConfigError, HealthChecks, NotCallable};
use crate::mock::{MockResponse, MockSpec, litellm_error_class, parse_mock_response};

/// Providers whose own protocol ferrolite's HTTP backend does not speak yet (it speaks
/// OpenAI's, which `openai`, `azure`, `groq`, `mistral`, `hosted_vllm`, ... serve, Anthropic's
/// Messages API, Bedrock's Converse API and Gemini's, which `gemini`, `vertex_ai` and
/// `vertex_ai_beta` serve): calls to them would be sent a protocol they do not understand.
const NOT_IMPLEMENTED_PROVIDERS: &[&str] = &[
    "sagemaker",
    "sagemaker_chat",
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
        // either every call would fail. A catch-all's provider is the request's; providers
        // with a backend of their own know their endpoints.
        #[cfg(feature = "http")]
        if deployment.api_base.is_none()
            && provider.as_str() != "*"
            && crate::providers::native(deployment).is_none()
            && crate::http::default_base(provider.as_str()).is_none()
            && crate::providers::native(deployment).is_none()
        {
            return Some(format!(
                "provider {provider} needs api_base (its OpenAI-compatible endpoint)"
            ));
        }
    }
    if let Some(reason) = not_callable_on_gemini(deployment, mode) {
        return Some(reason);
    }
    match mode {
        Some(mode) if !CALLABLE_MODES.contains(&mode) => {
            Some(format!("mode {mode} is not implemented"))
        }
        _ => None,
    }
}

/// Model families Vertex AI serves in their makers' protocols (Anthropic's, OpenAI's), not in
/// Gemini's `generateContent`.
const VERTEX_PARTNER_MODELS: &[&str] = &[
    "claude",
    "llama",
    "mistral",
    "codestral",
    "jamba",
    "deepseek",
    "qwen",
    "gpt-oss",
    "meta/",
];

/// Why a `gemini/` or `vertex_ai/` deployment cannot be called, if it cannot: the Gemini
/// backend serves chat completions of Google's models only (not embeddings, not Vertex AI's
/// partner models).
fn not_callable_on_gemini(deployment: &Deployment, mode: Option<&str>) -> Option<String> {
    let provider = deployment.provider().ok()?;
    let provider = provider.as_str();
    if !matches!(provider, "gemini" | "vertex_ai" | "vertex_ai_beta") {
        return None;
    }
    let model = deployment.model.to_ascii_lowercase();
    if provider != "gemini" {
        if let Some(family) = VERTEX_PARTNER_MODELS.iter().find(|f| model.contains(*f)) {
            let family = family.trim_end_matches('/');
            return Some(format!(
                "provider {provider}: {family} models (Vertex AI partner models) are not implemented, only Google's Gemini models"
            ));
        }
    }
    let mode = mode.or_else(|| catalogue::mode(&deployment.model));
    match mode {
        Some(mode) if mode != "chat" => Some(format!(
            "provider {provider}: mode {mode} is not implemented (chat only)"
        )),
        _ => None,
    }
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

/// The deployments of `model_list`, their mocks, those that cannot be called, and their
/// health-check settings.
pub(super) struct Deployments {
    /// The deployments, in `model_list`'s order.
    pub(super) deployments: Vec<Deployment>,
    /// The mock behaviour of the mocked ones, by deployment id.
    pub(super) mocks: BTreeMap<String, MockSpec>,
    /// The (not mocked) deployments ferrolite cannot call yet.
    pub(super) not_callable: Vec<NotCallable>,
    /// Their health-check timeouts and the deployments never probed (the rest of
    /// [`HealthChecks`] comes from `general_settings`).
    pub(super) health_checks: HealthChecks,
}

/// `model_list` as deployments: at least one; an invalid entry is an error, or with LiteLLM's
/// `ignore_invalid_deployments` left out with a warning.
pub(super) fn deployments_of(
    model_list: Option<Vec<RawModel>>,
    ignore_invalid: bool,
) -> Result<Deployments, ConfigError> {
    let models = model_list
        .ok_or_else(|| ConfigError::at("model_list", "required: at least one deployment"))?;
    let total = models.len();
    if models.is_empty() {
        return Err(ConfigError::at(
            "model_list",
            "required: at least one deployment, got an empty list",
        ));
    }
    let mut out = Deployments {
        deployments: Vec::with_capacity(models.len()),
        mocks: BTreeMap::new(),
        not_callable: Vec::new(),
        health_checks: HealthChecks::default(),
    };
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
                out.mocks.insert(deployment.id().to_string(), mock);
            }
            None => {
                if let Some(reason) = not_callable_reason(&deployment, mode.as_deref()) {
                    out.not_callable.push(NotCallable {
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
            out.health_checks
                .timeouts
                .insert(deployment.id().to_string(), timeout.duration());
        }
        if unchecked {
            out.health_checks
                .disabled
                .insert(deployment.id().to_string());
        }
        out.deployments.push(deployment);
    }
    if out.deployments.is_empty() {
        return Err(ConfigError::at(
            "model_list",
            format!(
                "every one of the {total} deployments is invalid (ignore_invalid_deployments left none)"
            ),
        ));
    }
    Ok(out)
}

/// One `model_list` entry as a deployment (completed from the catalogue) and its mock
/// behaviour, if it has one.
fn deployment_of(i: usize, raw: RawModel) -> Result<(Deployment, Option<MockSpec>), ConfigError> {
    let RawModel {
        model_name,
        litellm_params: mut p,
        model_info: info,
        rpm: entry_rpm,
        tpm: entry_tpm,
    } = raw;
    let at = |field: &str| format!("model_list[{i}].litellm_params.{field}");
    let mode = info.mode.clone();
    let lookup_name = info
        .base_model
        .clone()
        .or(p.base_model.clone())
        .unwrap_or_else(|| p.model.clone());
    let facts = catalogue::lookup(&lookup_name).unwrap_or_default();
    let default_params = default_params_of(&p, &at)?;
    let extra_headers = headers_of(&p, &at)?;
    let mut deployment = Deployment {
        id: info.id,
        model_name,
        model: p.model.clone(),
        custom_llm_provider: p.custom_llm_provider.take(),
        api_base: p.api_base.take().map(|s| s.0),
        api_key: p.api_key.take().map(|s| s.0),
        api_version: p.api_version.take().map(|s| s.0),
        rpm: p.rpm.or(info.rpm).or(entry_rpm),
        tpm: p.tpm.or(info.tpm).or(entry_tpm),
        max_parallel_requests: p.max_parallel_requests,
        weight: p.weight,
        order: p.order.or(info.order),
        tags: std::mem::take(&mut p.tags),
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
        cache_read_input_token_cost: info
            .cache_read_input_token_cost
            .or(p.cache_read_input_token_cost)
            .or(facts.cache_read_input_token_cost),
        cache_creation_input_token_cost: info
            .cache_creation_input_token_cost
            .or(p.cache_creation_input_token_cost)
            .or(facts.cache_creation_input_token_cost),
        cache_creation_input_token_cost_above_1hr: info
            .cache_creation_input_token_cost_above_1hr
            .or(p.cache_creation_input_token_cost_above_1hr)
            .or(facts.cache_creation_input_token_cost_above_1hr),
        timeout: p.timeout.or(p.request_timeout).map(|s| s.0),
        stream_timeout: p.stream_timeout.map(|s| s.0),
        num_retries: p.num_retries,
        cooldown_time: p.cooldown_time.or(info.cooldown_time).map(|s| s.0),
        allowed_fails: info.allowed_fails,
        allowed_fails_policy: info.allowed_fails_policy,
        max_budget: p.max_budget,
        budget_duration: p.budget_duration.take(),
        region_name: p.region_name.take().or(info.region_name),
        default_params,
        extra_headers,
        provider_params: provider_params_of(&mut p),
    };
    check_deployment(i, &deployment, &at)?;
    let mock = mock_of(p, &at)?;
    // A deployment not callable anyway is reported as such, not refused for its credentials.
    if mock.is_none() && not_callable_on_gemini(&deployment, mode.as_deref()).is_none() {
        check_provider_params(&deployment, &at)?;
        check_vertex(&deployment, &at)?;
        from_env(&mut deployment, &|name| std::env::var(name).ok(), &at)?;
    }
    Ok((deployment, mock))
}

/// A field of `litellm_params` a deployment may take from the environment.
#[derive(Clone, Copy, PartialEq)]
enum EnvField {
    Key,
    Base,
    Version,
}

impl EnvField {
    fn name(self) -> &'static str {
        match self {
            EnvField::Key => "api_key",
            EnvField::Base => "api_base",
            EnvField::Version => "api_version",
        }
    }
}

/// What a (not mocked) deployment of a provider takes from the environment when its
/// `litellm_params` leave a field out, as LiteLLM reads it (the first variable set wins:
/// `get_secret_str("AZURE_OPENAI_API_KEY") or get_secret_str("AZURE_API_KEY")`, ...), and
/// whether the field is required (without it and the variables the config is refused).
/// Read once, when the config is loaded.
const ENV_DEFAULTS: [(&str, EnvField, &[&str], bool); 7] = [
    ("anthropic", EnvField::Key, &["ANTHROPIC_API_KEY"], true),
    (
        "anthropic",
        EnvField::Base,
        &["ANTHROPIC_API_BASE", "ANTHROPIC_BASE_URL"],
        false,
    ),
    ("openai", EnvField::Key, &["OPENAI_API_KEY"], false),
    (
        "openai",
        EnvField::Base,
        &["OPENAI_BASE_URL", "OPENAI_API_BASE"],
        false,
    ),
    (
        "azure",
        EnvField::Key,
        &["AZURE_OPENAI_API_KEY", "AZURE_API_KEY"],
        false,
    ),
    ("azure", EnvField::Base, &["AZURE_API_BASE"], false),
    ("azure", EnvField::Version, &["AZURE_API_VERSION"], false),
];

/// Fills what a deployment of a provider in [`ENV_DEFAULTS`] left out (or left empty) from
/// `env`; a required field without a value names itself and its variables in the error, never
/// a value.
fn from_env(
    deployment: &mut Deployment,
    env: &dyn Fn(&str) -> Option<String>,
    at: &dyn Fn(&str) -> String,
) -> Result<(), ConfigError> {
    let Ok(provider) = deployment.provider() else {
        return Ok(());
    };
    let provider = provider.as_str().to_string();
    for (_, field, variables, required) in
        ENV_DEFAULTS.iter().filter(|(name, ..)| *name == provider)
    {
        let set = match field {
            EnvField::Key => deployment
                .api_key
                .as_ref()
                .is_some_and(|key| !key.expose().trim().is_empty()),
            EnvField::Base => deployment
                .api_base
                .as_ref()
                .is_some_and(|base| !base.trim().is_empty()),
            EnvField::Version => deployment
                .api_version
                .as_ref()
                .is_some_and(|version| !version.trim().is_empty()),
        };
        if set {
            continue;
        }
        let value = variables
            .iter()
            .find_map(|variable| env(variable).filter(|v| !v.trim().is_empty()));
        match value {
            Some(value) => {
                let value = value.trim();
                match field {
                    EnvField::Key => deployment.api_key = Some(Secret::new(value)),
                    EnvField::Base => deployment.api_base = Some(value.to_string()),
                    EnvField::Version => deployment.api_version = Some(value.to_string()),
                }
            }
            None if *required => {
                return Err(ConfigError::at(
                    at(field.name()),
                    format!(
                        "required for an {provider} deployment (or the {} environment variable)",
                        variables.join(" or ")
                    ),
                ));
            }
            None => {}
        }
    }
    Ok(())
}

/// A (not mocked) Vertex AI deployment names its credentials, a service-account key (its JSON
/// or a readable file holding it), and a project (`vertex_project`, or the key's
/// `project_id`). The error names the field, never the credentials' content.
fn check_vertex(deployment: &Deployment, at: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
    let vertex = deployment
        .provider()
        .is_ok_and(|p| matches!(p.as_str(), "vertex_ai" | "vertex_ai_beta"));
    if !vertex {
        return Ok(());
    }
    let param = |name: &str| {
        deployment
            .provider_params
            .get(name)
            .map(|s| s.expose().trim())
            .filter(|s| !s.is_empty())
    };
    let credentials = param("vertex_credentials").ok_or_else(|| {
        ConfigError::at(
            at("vertex_credentials"),
            "required for vertex_ai: a service-account key (its JSON, or the path of its file); \
             application default credentials are not read",
        )
    })?;
    #[cfg(feature = "http")]
    {
        let account = crate::providers::gemini::ServiceAccount::load(credentials)
            .map_err(|why| ConfigError::at(at("vertex_credentials"), why))?;
        if param("vertex_project").is_none() && account.project_id().is_none() {
            return Err(ConfigError::at(
                at("vertex_project"),
                "required for vertex_ai (the service-account key names no project_id)",
            ));
        }
    }
    #[cfg(not(feature = "http"))]
    {
        let _ = credentials;
        if param("vertex_project").is_none() {
            return Err(ConfigError::at(
                at("vertex_project"),
                "required for vertex_ai",
            ));
        }
    }
    Ok(())
}

/// The provider's own parameters (Bedrock's and Vertex AI's credentials and places), by their
/// LiteLLM names.
fn provider_params_of(p: &mut RawParams) -> BTreeMap<String, Secret> {
    [
        ("aws_access_key_id", p.aws_access_key_id.take().map(|s| s.0)),
        (
            "aws_secret_access_key",
            p.aws_secret_access_key.take().map(|s| s.0),
        ),
        ("aws_session_token", p.aws_session_token.take().map(|s| s.0)),
        ("aws_region_name", p.aws_region_name.take().map(|s| s.0)),
        (
            "aws_bedrock_runtime_endpoint",
            p.aws_bedrock_runtime_endpoint
                .take()
                .map(|s| Secret::new(s.0)),
        ),
        ("vertex_project", p.vertex_project.take().map(|s| s.0)),
        ("vertex_location", p.vertex_location.take().map(|s| s.0)),
        (
            "vertex_credentials",
            p.vertex_credentials.take().map(|s| s.0),
        ),
    ]
    .into_iter()
    .filter_map(|(name, value)| Some((name.to_string(), value?)))
    .collect()
}

/// The HTTP headers a deployment sends with every call: `headers`, then `extra_headers` (which
/// wins), names lowercased; `organization` as OpenAI's SDK sends it, unless a header sets it.
fn headers_of(
    p: &RawParams,
    at: &dyn Fn(&str) -> String,
) -> Result<BTreeMap<String, Secret>, ConfigError> {
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
    Ok(extra_headers)
}

/// The deployment's own checks (its error named at the key it came from), and its budget: a
/// limit and a window together.
fn check_deployment(
    i: usize,
    deployment: &Deployment,
    at: &dyn Fn(&str) -> String,
) -> Result<(), ConfigError> {
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
    Ok(())
}

/// A called (not mocked) deployment of a provider that signs its calls has what it signs
/// with: a `bedrock` one its region and keys, from its parameters or the environment.
fn check_provider_params(
    deployment: &Deployment,
    at: &dyn Fn(&str) -> String,
) -> Result<(), ConfigError> {
    #[cfg(feature = "http")]
    if deployment.provider().is_ok_and(|p| p.as_str() == "bedrock") {
        use crate::providers::bedrock;
        if let Err(bedrock::Missing(param, how)) = bedrock::region_of(deployment)
            .and_then(|_| bedrock::credentials_of(deployment).map(drop))
        {
            return Err(ConfigError::at(
                at(param),
                format!("required for a bedrock deployment ({how})"),
            ));
        }
    }
    let _ = (deployment, at);
    Ok(())
}

/// The mock behaviour `litellm_params` asks for (`mock_response`, `mock_timeout`, ferrolite's
/// `mock_*`), if any.
fn mock_of(p: RawParams, at: &dyn Fn(&str) -> String) -> Result<Option<MockSpec>, ConfigError> {
    let mocked = p.mock_response.is_some()
        || p.mock_timeout == Some(true)
        || p.mock_latency_ms.is_some()
        || p.mock_ttft_ms.is_some()
        || !p.mock_error_rates.is_empty()
        || p.mock_rpm.is_some()
        || p.mock_tpm.is_some()
        || p.mock_output_tokens.is_some();
    if !mocked {
        return Ok(None);
    }
    let millis = |field: &str, value: Option<f64>| -> Result<Option<Duration>, ConfigError> {
        match value {
            None => Ok(None),
            Some(ms) => match Duration::try_from_secs_f64(ms / 1e3) {
                Ok(duration) => Ok(Some(duration)),
                Err(_) => Err(ConfigError::at(
                    at(field),
                    format!(
                        "expected a non-negative number of milliseconds that fits a duration, got {ms:?}"
                    ),
                )),
            },
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
    Ok(Some(MockSpec {
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
    }))
}
