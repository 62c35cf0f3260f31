//! The provider of a deployment, derived from its model string the way LiteLLM does.

use serde::{Deserialize, Serialize};

use crate::TypesError;

/// Provider prefixes LiteLLM accepts in `provider/model` strings (the subset ferrolite knows by
/// name; any other prefix before a `/` is taken as given, as LiteLLM's custom providers are).
const KNOWN_PREFIXES: &[&str] = &[
    "openai",
    "azure",
    "azure_ai",
    "anthropic",
    "bedrock",
    "vertex_ai",
    "gemini",
    "cohere",
    "mistral",
    "groq",
    "together_ai",
    "ollama",
    "ollama_chat",
    "hosted_vllm",
    "huggingface",
    "deepseek",
    "fireworks_ai",
    "openrouter",
    "xai",
    "perplexity",
    "text-completion-openai",
];

/// Bare model-name prefixes and the provider LiteLLM infers for them.
const BARE_PREFIXES: &[(&str, &str)] = &[
    ("gpt-", "openai"),
    ("chatgpt-", "openai"),
    ("o1", "openai"),
    ("o3", "openai"),
    ("o4", "openai"),
    ("text-embedding-", "openai"),
    ("dall-e", "openai"),
    ("whisper", "openai"),
    ("tts-", "openai"),
    ("davinci", "text-completion-openai"),
    ("babbage", "text-completion-openai"),
    ("claude", "anthropic"),
    ("gemini", "vertex_ai"),
    ("command", "cohere"),
    ("mistral", "mistral"),
    ("codestral", "mistral"),
];

/// A provider name as LiteLLM spells it (`openai`, `azure`, `anthropic`, ...). Provider budgets
/// are keyed by this name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Provider(String);

impl Provider {
    /// A provider by name, e.g. `Provider::new("openai")`.
    pub fn new(name: impl Into<String>) -> Self {
        Provider(name.into())
    }

    /// The provider's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Derives the provider from a model string: the prefix of `provider/model`, or for a bare
    /// name the provider LiteLLM infers (`gpt-4o` is `openai`, `claude-3-5-sonnet` is
    /// `anthropic`). A bare name it cannot place is an error naming the model.
    ///
    /// ```
    /// use ferrolite_types::Provider;
    /// assert_eq!(Provider::from_model("azure/gpt-4o-eu").unwrap().as_str(), "azure");
    /// assert_eq!(Provider::from_model("gpt-4o-mini").unwrap().as_str(), "openai");
    /// assert!(Provider::from_model("my-model").is_err());
    /// ```
    pub fn from_model(model: &str) -> Result<Provider, TypesError> {
        let model = model.trim();
        if model.is_empty() {
            return Err(TypesError::Empty { field: "model" });
        }
        if let Some((prefix, rest)) = model.split_once('/') {
            if !prefix.is_empty() && !rest.is_empty() {
                // Known or custom provider prefix: LiteLLM takes the first segment as given.
                let known = KNOWN_PREFIXES.iter().find(|p| **p == prefix);
                return Ok(Provider(known.map_or(prefix, |p| p).to_string()));
            }
            return Err(TypesError::UnknownProvider {
                model: model.to_string(),
            });
        }
        BARE_PREFIXES
            .iter()
            .find(|(prefix, _)| model.starts_with(prefix))
            .map(|(_, provider)| Provider((*provider).to_string()))
            .ok_or_else(|| TypesError::UnknownProvider {
                model: model.to_string(),
            })
    }
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixed_models_take_the_prefix() {
        for (model, provider) in [
            ("azure/my-gpt4o", "azure"),
            ("openai/gpt-4o", "openai"),
            ("anthropic/claude-3-5-sonnet", "anthropic"),
            ("hosted_vllm/meta-llama/Llama-3-8B", "hosted_vllm"),
            ("myproxy/some-model", "myproxy"),
        ] {
            assert_eq!(
                Provider::from_model(model).unwrap().as_str(),
                provider,
                "{model}"
            );
        }
    }

    #[test]
    fn bare_names_are_inferred_as_litellm_does() {
        assert_eq!(Provider::from_model("gpt-4o").unwrap().as_str(), "openai");
        assert_eq!(Provider::from_model("o3-mini").unwrap().as_str(), "openai");
        assert_eq!(
            Provider::from_model("claude-3-haiku").unwrap().as_str(),
            "anthropic"
        );
    }

    #[test]
    fn unplaceable_models_are_typed_errors() {
        assert_eq!(
            Provider::from_model("llama-local"),
            Err(TypesError::UnknownProvider {
                model: "llama-local".into()
            })
        );
        assert_eq!(
            Provider::from_model(" "),
            Err(TypesError::Empty { field: "model" })
        );
        assert!(matches!(
            Provider::from_model("/gpt-4o"),
            Err(TypesError::UnknownProvider { .. })
        ));
    }
}
