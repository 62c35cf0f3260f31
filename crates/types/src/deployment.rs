//! A deployment: one endpoint serving a model group, with its limits, prices and overrides.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{ErrorClass, Provider, Secret, TypesError};

/// The identity of a deployment, used in every state key (usage counters, cooldowns, budgets).
///
/// It is the explicit `id` when the configuration gives one; otherwise a hash of the canonical
/// JSON of the fields that name the endpoint and the credential (see [`Deployment::id`]). As in
/// LiteLLM, the API key is part of it (two keys on one endpoint are two deployments), but only
/// as a SHA-256: the key itself is never hashed into the id directly nor stored. Unlike
/// LiteLLM's id it does not depend on the order in which the configuration lists the fields,
/// and limits, prices and other settings are not part of it.
// Shared, not copied: the id is kept by every per-deployment table (the index, learned state,
// targets, the usage store), and a derived id is 64 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeploymentId(std::sync::Arc<str>);

impl DeploymentId {
    /// An explicit id.
    pub fn new(id: impl Into<String>) -> Self {
        DeploymentId(id.into().into())
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Serialize for DeploymentId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for DeploymentId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(DeploymentId::new)
    }
}

impl std::fmt::Display for DeploymentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// How many failures of each kind a deployment tolerates before it is cooled down
/// (LiteLLM's `allowed_fails_policy`, with LiteLLM's field names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowedFailsPolicy {
    /// For 400 errors (including context-window errors, as in LiteLLM).
    #[serde(
        rename = "BadRequestErrorAllowedFails",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub bad_request: Option<u32>,
    /// For 401 errors.
    #[serde(
        rename = "AuthenticationErrorAllowedFails",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub authentication: Option<u32>,
    /// For timeouts.
    #[serde(
        rename = "TimeoutErrorAllowedFails",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<u32>,
    /// For 429 errors.
    #[serde(
        rename = "RateLimitErrorAllowedFails",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub rate_limit: Option<u32>,
    /// For content-policy refusals.
    #[serde(
        rename = "ContentPolicyViolationErrorAllowedFails",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub content_policy: Option<u32>,
    /// For 5xx errors.
    #[serde(
        rename = "InternalServerErrorAllowedFails",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub internal_server: Option<u32>,
}

impl AllowedFailsPolicy {
    /// The allowance this policy sets for an error class, if any.
    pub fn for_class(&self, class: &ErrorClass) -> Option<u32> {
        match class {
            ErrorClass::ContentPolicy => self.content_policy,
            ErrorClass::BadRequest { .. } | ErrorClass::ContextWindowExceeded => self.bad_request,
            ErrorClass::Authentication => self.authentication,
            ErrorClass::Timeout => self.timeout,
            ErrorClass::RateLimited { .. } => self.rate_limit,
            ErrorClass::ServerError { .. } => self.internal_server,
            _ => None,
        }
    }
}

/// One deployment of a model group: where calls go and the limits that hold there.
///
/// Field names follow LiteLLM's `litellm_params` / `model_info`, so a deployment deserializes from
/// the flattened form of a LiteLLM `model_list` entry. Construct it in code with
/// [`Deployment::new`] and struct update syntax, then call [`Deployment::validate`].
///
/// ```
/// use ferrolite_types::{Deployment, Secret};
/// let d = Deployment {
///     rpm: Some(600),
///     api_key: Some(Secret::new("sk-...")),
///     ..Deployment::new("gpt-4o", "azure/gpt-4o-eu")
/// };
/// d.validate().unwrap();
/// assert_eq!(d.provider().unwrap().as_str(), "azure");
/// // Two keys on one endpoint are two deployments, as in LiteLLM.
/// assert_ne!(d.id(), d.clone().with_api_key("sk-second").id());
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deployment {
    /// Explicit id (`model_info.id`); when absent the id is derived, see [`Deployment::id`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The model group this deployment serves (`model_name`).
    pub model_name: String,
    /// The provider/model string (`azure/gpt-4o-eu`, `openai/gpt-4o`, `gpt-4o`).
    pub model: String,
    /// Overrides the provider derived from `model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_llm_provider: Option<String>,
    /// Endpoint base URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_base: Option<String>,
    /// API key; never printed, serialized as `***`; its SHA-256 is part of the derived id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<Secret>,
    /// API version (Azure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Requests per minute this deployment accepts. `0` means blocked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    /// Tokens per minute this deployment accepts. `0` means blocked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    /// Concurrent calls allowed on this deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel_requests: Option<u32>,
    /// simple-shuffle weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    /// Priority tier; lower is tried first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<u32>,
    /// Tags for tag routing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Context window, for the pre-call context check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_input_tokens: Option<u64>,
    /// The most output tokens the model produces in one call (`model_info.max_output_tokens`,
    /// else the catalogue's): what a budget reservation holds for a call without `max_tokens`
    /// when nothing better is known, and under `budget_estimate: worst_case`; a request asking
    /// for more (`max_tokens`, `max_completion_tokens`) is refused before any call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u64>,
    /// USD per input token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_cost_per_token: Option<f64>,
    /// USD per output token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_cost_per_token: Option<f64>,
    /// USD per input token read from the provider's prompt cache (LiteLLM's
    /// `cache_read_input_token_cost`); cache reads cost `input_cost_per_token` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_input_token_cost: Option<f64>,
    /// USD per input token written to the provider's prompt cache (LiteLLM's
    /// `cache_creation_input_token_cost`); cache writes cost `input_cost_per_token` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_token_cost: Option<f64>,
    /// USD per input token written to the prompt cache for an hour (LiteLLM's
    /// `cache_creation_input_token_cost_above_1hr`, Anthropic's `ttl: "1h"` cache blocks);
    /// `cache_creation_input_token_cost` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_token_cost_above_1hr: Option<f64>,
    /// Per-attempt timeout in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
    /// Per-attempt timeout for streaming calls, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_timeout: Option<f64>,
    /// Retries for calls routed here (overrides the router's default, not the request's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_retries: Option<u32>,
    /// Cooldown in seconds after a failure that cools this deployment; `0` disables cooldowns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown_time: Option<f64>,
    /// Failures tolerated before a cooldown (overrides the router's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_fails: Option<u32>,
    /// Failures tolerated per error kind (overrides the router's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_fails_policy: Option<AllowedFailsPolicy>,
    /// Spend limit in USD per `budget_duration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_budget: Option<f64>,
    /// Budget window, e.g. `1d`, `30d`, `1mo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_duration: Option<String>,
    /// The region the deployment serves from (`region_name`, e.g. `eu`, `us`): the pre-call
    /// checks keep a request that allows only some regions on deployments in them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region_name: Option<String>,
    /// Request parameters from `litellm_params` (`temperature`, `max_tokens`, `stop`, ...) sent
    /// with every call of this deployment whose request does not set them: the request's own
    /// values win, as in LiteLLM.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub default_params: serde_json::Map<String, serde_json::Value>,
    /// HTTP headers sent with every call of this deployment (`litellm_params.extra_headers`,
    /// `headers`): a gateway's own key, an organisation id. Values are secrets: never printed.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub extra_headers: std::collections::BTreeMap<String, Secret>,
    /// The provider's own `litellm_params`, as LiteLLM spells them: `aws_access_key_id`,
    /// `aws_secret_access_key`, `aws_session_token`, `aws_region_name` (Bedrock),
    /// `vertex_project`, `vertex_location`, `vertex_credentials` (Vertex AI). Values are
    /// secrets: never printed. The region and project names are part of the derived id (two
    /// regions are two deployments), the credentials only as a SHA-256.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub provider_params: std::collections::BTreeMap<String, Secret>,
}

/// Provider parameters that name a place, not a credential: part of the id in clear.
const PLACE_PARAMS: [&str; 3] = ["aws_region_name", "vertex_project", "vertex_location"];

impl Deployment {
    /// A deployment of `model` serving `model_name`, with every other field unset.
    pub fn new(model_name: impl Into<String>, model: impl Into<String>) -> Self {
        Deployment {
            model_name: model_name.into(),
            model: model.into(),
            ..Deployment::default()
        }
    }

    /// The same deployment with another API key.
    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(Secret::new(key));
        self
    }

    /// The per-token prices that price a call here (an unknown input or output price: 0).
    pub fn token_prices(&self) -> crate::TokenPrices {
        crate::TokenPrices {
            input: self.input_cost_per_token.unwrap_or(0.0),
            output: self.output_cost_per_token.unwrap_or(0.0),
            cache_read: self.cache_read_input_token_cost,
            cache_write: self.cache_creation_input_token_cost,
            cache_write_1h: self.cache_creation_input_token_cost_above_1hr,
        }
    }

    /// The deployment's id: the explicit `id` if set, otherwise the first 32 hex digits of the
    /// SHA-256 of the canonical JSON (keys sorted) of its **identity**: what names the endpoint
    /// and the credential — `model_name`, `model`, `api_base`, `api_version`,
    /// `custom_llm_provider`, and the SHA-256 of `api_key` (hex; absent without a key).
    ///
    /// Two deployments that differ only in their API key (one endpoint, several keys: a common
    /// way to multiply a rate limit) are two deployments, as in LiteLLM, whose id includes the
    /// key. The key enters only through its own SHA-256, so the id reveals nothing of it.
    /// Rotating the key changes the id (and starts the deployment's state afresh), as in LiteLLM;
    /// give an explicit `id` to keep the state across rotations.
    ///
    /// Limits, weights, prices, timeouts, tags and budgets are settings of the deployment, not
    /// its identity: raising `rpm` keeps the id, and so the deployment's counters, cooldowns and
    /// spend. Two deployments that differ only in settings derive the same id — give them
    /// explicit ids.
    ///
    /// Deriving it serializes and hashes: compute it once when a deployment list is loaded, not
    /// per request.
    pub fn id(&self) -> DeploymentId {
        if let Some(id) = &self.id {
            return DeploymentId::new(id.as_str());
        }
        // Serializing through `Value` sorts the keys.
        let mut identity = serde_json::json!({
            "model_name": self.model_name,
            "model": self.model,
            "api_base": self.api_base,
            "api_version": self.api_version,
            "custom_llm_provider": self.custom_llm_provider,
        });
        // Without a key the identity is what it always was, so keyless ids stay as they were.
        if let (Some(key), Some(object)) = (&self.api_key, identity.as_object_mut()) {
            let digest = Sha256::digest(key.expose().as_bytes());
            object.insert("api_key_sha256".into(), hex(&digest).into());
        }
        // Provider parameters (none for most deployments, whose ids stay as they were): the
        // names of places as they are, anything else hashed.
        if let Some(object) = identity.as_object_mut() {
            for (name, value) in &self.provider_params {
                let value = if PLACE_PARAMS.contains(&name.as_str()) {
                    value.expose().to_string()
                } else {
                    hex(&Sha256::digest(value.expose().as_bytes()))
                };
                object.insert(format!("provider_param:{name}"), value.into());
            }
        }
        let digest = Sha256::digest(identity.to_string().as_bytes());
        DeploymentId(hex(&digest[..16]).into())
    }

    /// The provider: `custom_llm_provider` when set, otherwise derived from `model`. A
    /// catch-all deployment (`model: "*"`) has the provider `*`: the requested model decides,
    /// as in LiteLLM.
    pub fn provider(&self) -> Result<Provider, TypesError> {
        match &self.custom_llm_provider {
            Some(p) if !p.trim().is_empty() => Ok(Provider::new(p.trim())),
            _ if self.model.trim() == "*" => Ok(Provider::new("*")),
            _ => Provider::from_model(&self.model),
        }
    }

    /// The per-attempt timeout, if set.
    pub fn timeout_duration(&self) -> Option<Duration> {
        self.timeout
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
    }

    /// The per-attempt streaming timeout, if set.
    pub fn stream_timeout_duration(&self) -> Option<Duration> {
        self.stream_timeout
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
    }

    /// The cooldown override, if set (`Some(ZERO)` disables cooldowns for this deployment).
    pub fn cooldown_duration(&self) -> Option<Duration> {
        self.cooldown_time
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
    }

    /// Checks every field; the first problem found is returned, naming the field and value.
    pub fn validate(&self) -> Result<(), TypesError> {
        if self.model_name.trim().is_empty() {
            return Err(TypesError::Empty {
                field: "model_name",
            });
        }
        if self.model.trim().is_empty() {
            return Err(TypesError::Empty { field: "model" });
        }
        if let Some(id) = &self.id {
            if id.trim().is_empty() {
                return Err(TypesError::Empty { field: "id" });
            }
        }
        self.provider()?;
        let non_negative = [
            ("weight", self.weight),
            ("input_cost_per_token", self.input_cost_per_token),
            ("output_cost_per_token", self.output_cost_per_token),
            (
                "cache_read_input_token_cost",
                self.cache_read_input_token_cost,
            ),
            (
                "cache_creation_input_token_cost",
                self.cache_creation_input_token_cost,
            ),
            (
                "cache_creation_input_token_cost_above_1hr",
                self.cache_creation_input_token_cost_above_1hr,
            ),
            ("cooldown_time", self.cooldown_time),
            ("max_budget", self.max_budget),
            ("timeout", self.timeout),
            ("stream_timeout", self.stream_timeout),
        ];
        for (field, value) in non_negative {
            if let Some(value) = value {
                if !value.is_finite() || value < 0.0 {
                    return Err(TypesError::InvalidNumber { field, value });
                }
            }
        }
        // Durations must also fit a `Duration` and, for timeouts, be positive: LiteLLM skips a
        // configured 0 silently; ferrolite rejects it.
        for (field, value) in [
            ("timeout", self.timeout),
            ("stream_timeout", self.stream_timeout),
        ] {
            if let Some(value) = value {
                if value == 0.0 || Duration::try_from_secs_f64(value).is_err() {
                    return Err(TypesError::OutOfRange {
                        field,
                        value: value.to_string(),
                        reason: "a timeout must be > 0 seconds and fit a duration",
                    });
                }
            }
        }
        if let Some(value) = self.cooldown_time {
            if Duration::try_from_secs_f64(value).is_err() {
                return Err(TypesError::OutOfRange {
                    field: "cooldown_time",
                    value: value.to_string(),
                    reason: "must fit a duration",
                });
            }
        }
        if self.max_parallel_requests == Some(0) {
            return Err(TypesError::OutOfRange {
                field: "max_parallel_requests",
                value: "0".into(),
                reason: "must be >= 1; remove the field for no limit",
            });
        }
        if self.max_budget.is_some() != self.budget_duration.is_some() {
            let (field, value) = match (&self.max_budget, &self.budget_duration) {
                (Some(b), None) => ("budget_duration", format!("missing (max_budget = {b})")),
                (_, d) => ("max_budget", format!("missing (budget_duration = {d:?})")),
            };
            return Err(TypesError::OutOfRange {
                field,
                value,
                reason: "max_budget and budget_duration are set together",
            });
        }
        if let Some(tag) = self.tags.iter().find(|t| t.trim().is_empty()) {
            return Err(TypesError::OutOfRange {
                field: "tags",
                value: format!("{tag:?}"),
                reason: "tags must not be empty",
            });
        }
        Ok(())
    }
}

/// Bytes as lower-case hex digits.
fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duration_that_does_not_fit_is_none_not_a_panic() {
        for absurd in [f64::NAN, f64::INFINITY, -1.0, 1e300] {
            let deployment = Deployment {
                timeout: Some(absurd),
                stream_timeout: Some(absurd),
                cooldown_time: Some(absurd),
                ..Deployment::new("g", "openai/gpt-4o")
            };
            assert_eq!(deployment.timeout_duration(), None, "{absurd}");
            assert_eq!(deployment.stream_timeout_duration(), None, "{absurd}");
            assert_eq!(deployment.cooldown_duration(), None, "{absurd}");
            assert!(deployment.validate().is_err(), "{absurd}");
        }
    }

    fn base() -> Deployment {
        Deployment {
            api_base: Some("https://eu.example.openai.azure.com".into()),
            rpm: Some(100),
            ..Deployment::new("gpt-4o", "azure/gpt-4o-eu")
        }
    }

    #[test]
    fn explicit_id_wins() {
        let d = Deployment {
            id: Some("eu-1".into()),
            ..base()
        };
        assert_eq!(d.id(), DeploymentId::new("eu-1"));
    }

    /// Regression (issue 16): two deployments on one endpoint with different keys had one id,
    /// so they shared counters and cooldowns (and the router refused the duplicate).
    #[test]
    fn derived_id_tells_two_api_keys_on_one_endpoint_apart() {
        assert_ne!(base().with_api_key("a").id(), base().with_api_key("b").id());
        assert_ne!(base().id(), base().with_api_key("a").id());
        assert_eq!(base().with_api_key("a").id(), base().with_api_key("a").id());
    }

    #[test]
    fn derived_id_hashes_the_key_only_through_its_sha256() {
        let key = "sk-very-secret-key";
        let with_key = base().with_api_key(key);
        // The id equals the hash of the identity with the key's SHA-256 in it: the key's bytes
        // reach the id only through that digest.
        let mut identity = serde_json::json!({
            "model_name": "gpt-4o",
            "model": "azure/gpt-4o-eu",
            "api_base": "https://eu.example.openai.azure.com",
            "api_version": null,
            "custom_llm_provider": null,
        });
        identity.as_object_mut().unwrap().insert(
            "api_key_sha256".into(),
            hex(&Sha256::digest(key.as_bytes())).into(),
        );
        let expected = hex(&Sha256::digest(identity.to_string().as_bytes())[..16]);
        assert_eq!(with_key.id().as_str(), expected);
        assert!(!with_key.id().as_str().contains(key));
    }

    #[test]
    fn derived_id_keeps_with_a_changed_limit_and_the_same_key() {
        let tuned = Deployment {
            rpm: Some(5),
            tpm: Some(50),
            ..base().with_api_key("a")
        };
        assert_eq!(tuned.id(), base().with_api_key("a").id());
    }

    #[test]
    fn derived_id_does_not_depend_on_field_order_in_the_config() {
        let a: Deployment = serde_json::from_str(
            r#"{"model_name":"g","model":"openai/gpt-4o","rpm":5,"api_base":"http://x","tags":["a"]}"#,
        )
        .unwrap();
        let b: Deployment = serde_json::from_str(
            r#"{"tags":["a"],"api_base":"http://x","rpm":5,"model":"openai/gpt-4o","model_name":"g"}"#,
        )
        .unwrap();
        assert_eq!(a.id(), b.id());
        assert_eq!(a.id().as_str().len(), 32);
    }

    #[test]
    fn derived_id_changes_with_the_endpoint() {
        let other = Deployment {
            api_base: Some("https://us.example.openai.azure.com".into()),
            ..base()
        };
        assert_ne!(base().id(), other.id());
        let version = Deployment {
            api_version: Some("2024-10-21".into()),
            ..base()
        };
        assert_ne!(base().id(), version.id());
    }

    /// Regression (review of 79b0912): the id hashed every field, so raising a deployment's rpm
    /// changed its id and silently dropped its counters, cooldowns and spend.
    #[test]
    fn derived_id_ignores_limits_weights_prices_timeouts_tags_and_budgets() {
        let tuned = Deployment {
            rpm: Some(10_000),
            tpm: Some(1_000_000),
            weight: Some(3.0),
            order: Some(2),
            input_cost_per_token: Some(1e-6),
            timeout: Some(30.0),
            tags: vec!["eu".into()],
            max_budget: Some(100.0),
            budget_duration: Some("1d".into()),
            max_parallel_requests: Some(8),
            ..base()
        };
        assert_eq!(base().id(), tuned.id());
    }

    #[test]
    fn api_key_is_never_printed_or_serialized() {
        let d = base().with_api_key("sk-very-secret");
        assert!(!format!("{d:?}").contains("sk-very-secret"));
        assert!(
            !serde_json::to_string(&d)
                .unwrap()
                .contains("sk-very-secret")
        );
    }

    #[test]
    fn nan_or_negative_numbers_are_rejected_with_field_and_value() {
        let nan = Deployment {
            weight: Some(f64::NAN),
            ..base()
        };
        assert!(
            matches!(nan.validate(), Err(TypesError::InvalidNumber { field: "weight", value }) if value.is_nan())
        );
        let neg = Deployment {
            input_cost_per_token: Some(-1.0),
            ..base()
        };
        assert_eq!(
            neg.validate(),
            Err(TypesError::InvalidNumber {
                field: "input_cost_per_token",
                value: -1.0
            })
        );
        let neg_cache = Deployment {
            cache_read_input_token_cost: Some(-1e-7),
            ..base()
        };
        assert_eq!(
            neg_cache.validate(),
            Err(TypesError::InvalidNumber {
                field: "cache_read_input_token_cost",
                value: -1e-7
            })
        );
        let zero_timeout = Deployment {
            timeout: Some(0.0),
            ..base()
        };
        assert!(matches!(
            zero_timeout.validate(),
            Err(TypesError::OutOfRange {
                field: "timeout",
                ..
            })
        ));
    }

    #[test]
    fn negative_limits_do_not_parse() {
        let err =
            serde_json::from_str::<Deployment>(r#"{"model_name":"g","model":"gpt-4o","rpm":-5}"#)
                .unwrap_err()
                .to_string();
        assert!(err.contains("-5"), "{err}");
    }

    #[test]
    fn empty_model_and_group_are_rejected() {
        assert_eq!(
            Deployment::new("g", "").validate(),
            Err(TypesError::Empty { field: "model" })
        );
        assert_eq!(
            Deployment::new(" ", "gpt-4o").validate(),
            Err(TypesError::Empty {
                field: "model_name"
            })
        );
    }

    #[test]
    fn budget_needs_both_fields() {
        let d = Deployment {
            max_budget: Some(10.0),
            ..base()
        };
        assert!(matches!(
            d.validate(),
            Err(TypesError::OutOfRange {
                field: "budget_duration",
                ..
            })
        ));
    }

    #[test]
    fn zero_limits_are_valid_and_mean_blocked() {
        let d = Deployment {
            rpm: Some(0),
            tpm: Some(0),
            ..base()
        };
        assert_eq!(d.validate(), Ok(()));
    }

    #[test]
    fn unknown_fields_are_rejected() {
        assert!(
            serde_json::from_str::<Deployment>(r#"{"model_name":"g","model":"gpt-4o","rmp":5}"#)
                .is_err()
        );
    }
}
