//! The model catalogue: LiteLLM's map of model prices and context windows (MIT, Berri AI; see
//! `data/README.md`), trimmed and embedded at build time. The router uses it where a deployment
//! does not say: `max_input_tokens` for the context-window check (through `base_model` for Azure
//! deployments, whose model names are deployment names), the prices per token (prompt-cache reads
//! and writes included) for cost-based routing and for every response's cost (so budgets work without hand-entered prices). A
//! deployment's own `model_info` always wins.
//!
//! Lookup is LiteLLM's: the exact name (`azure/gpt-4o` has its own entry), then the name without
//! its provider prefix (`openai/gpt-4o-mini` → `gpt-4o-mini`).

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::Deserialize;

/// The embedded catalogue file.
const CATALOGUE: &str = include_str!("../data/catalogue.json");

/// What the catalogue knows of one model.
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize)]
pub struct ModelFacts {
    /// Input tokens the model takes at most.
    pub max_input_tokens: Option<u64>,
    /// Output tokens it produces at most.
    pub max_output_tokens: Option<u64>,
    /// USD per input token.
    pub input_cost_per_token: Option<f64>,
    /// USD per output token.
    pub output_cost_per_token: Option<f64>,
    /// USD per input token read from the prompt cache.
    pub cache_read_input_token_cost: Option<f64>,
    /// USD per input token written to the prompt cache (five-minute entries where the
    /// provider has several).
    pub cache_creation_input_token_cost: Option<f64>,
    /// USD per input token written to the prompt cache for an hour (Anthropic's one-hour
    /// entries).
    pub cache_creation_input_token_cost_above_1hr: Option<f64>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(flatten)]
    facts: ModelFacts,
    #[serde(default)]
    litellm_provider: Option<String>,
    #[serde(default)]
    mode: Option<String>,
}

fn entries() -> &'static HashMap<String, Entry> {
    static ENTRIES: OnceLock<HashMap<String, Entry>> = OnceLock::new();
    ENTRIES.get_or_init(|| match serde_json::from_str(CATALOGUE) {
        Ok(map) => map,
        Err(error) => {
            // The file is checked by a test; a broken refresh must not take routing down.
            tracing::error!(%error, "the embedded model catalogue does not parse; it is ignored");
            HashMap::new()
        }
    })
}

/// Models in the catalogue.
pub fn len() -> usize {
    entries().len()
}

/// What the catalogue knows of `model` (a LiteLLM model string such as `gpt-4o`,
/// `azure/gpt-4o` or `openai/gpt-4o-mini`), looked up as LiteLLM does.
pub fn lookup(model: &str) -> Option<ModelFacts> {
    lookup_entry(model).map(|e| e.facts)
}

/// The provider the catalogue names for `model`.
pub fn provider(model: &str) -> Option<&'static str> {
    lookup_entry(model).and_then(|e| e.litellm_provider.as_deref())
}

/// The kind of model the catalogue names for `model` (`chat`, `embedding`, `completion`, ...).
pub fn mode(model: &str) -> Option<&'static str> {
    lookup_entry(model).and_then(|e| e.mode.as_deref())
}

fn lookup_entry(model: &str) -> Option<&'static Entry> {
    let entries = entries();
    if let Some(entry) = entries.get(model) {
        return Some(entry);
    }
    let (_provider, bare) = model.split_once('/')?;
    entries.get(bare)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_catalogue_parses_and_knows_the_common_models() {
        assert!(len() > 4_000, "{} models", len());
        let gpt4o = lookup("gpt-4o").unwrap_or_default();
        assert_eq!(gpt4o.max_input_tokens, Some(128_000));
        assert_eq!(gpt4o.input_cost_per_token, Some(2.5e-6));
        assert_eq!(gpt4o.cache_read_input_token_cost, Some(1.25e-6));
        assert_eq!(
            lookup("openai/gpt-4o"),
            Some(gpt4o),
            "provider prefix stripped"
        );
        assert!(lookup("azure/gpt-4o").is_some());
        assert_eq!(provider("gpt-4o"), Some("openai"));
        assert_eq!(lookup("no-such-model"), None);
        assert_eq!(lookup("azure/my-deployment-name"), None);
    }
}
