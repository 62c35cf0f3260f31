//! Step 1, auth: who calls — the master key's holder, one of the API keys, or anyone when
//! neither is configured — and the request's id.

use axum::http::{HeaderMap, header};
use ferrolite_types::Secret;

use super::errors::GatewayError;
use super::state::{Gateway, GatewaySettings};
use crate::config::ApiKey;

/// Who is calling.
pub(super) enum Caller<'a> {
    /// No key is configured: anyone may call.
    Anyone,
    /// The master key's holder.
    Master,
    /// One of the API keys (the call's settings').
    Key(&'a ApiKey),
}

impl Gateway {
    /// Who calls, by `settings`: the master key's holder, one of the API keys, or anyone when
    /// neither is configured; a 401 otherwise.
    pub(super) fn caller<'a>(
        settings: &'a GatewaySettings,
        headers: &HeaderMap,
    ) -> Result<Caller<'a>, GatewayError> {
        if settings.master_key.is_none() && settings.api_keys.is_empty() {
            return Ok(Caller::Anyone);
        }
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .or_else(|| headers.get("api-key").and_then(|v| v.to_str().ok()))
            // Anthropic's clients send it as `x-api-key`.
            .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()));
        let Some(given) = given.filter(|g| !g.is_empty()) else {
            return Err(GatewayError::NoKey);
        };
        if let Some(master) = &settings.master_key {
            if constant_time_eq(given.as_bytes(), master.expose().as_bytes()) {
                return Ok(Caller::Master);
            }
        }
        let hash = ApiKey::hash(given);
        match settings
            .api_keys
            .iter()
            .find(|k| constant_time_eq(&k.key_sha256, &hash))
        {
            Some(key) => Ok(Caller::Key(key)),
            None => Err(GatewayError::InvalidKey),
        }
    }

    /// The request's id: the caller's `x-request-id`, else one of this gateway's (its prefix,
    /// `-`, and the count of ids given).
    pub(super) fn request_id(&self, headers: &HeaderMap) -> String {
        headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128)
            .map_or_else(
                || {
                    let n = self
                        .requests
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                        + 1;
                    let mut digits = itoa::Buffer::new();
                    let digits = digits.format(n);
                    let mut id = String::with_capacity(self.id_prefix.len() + 1 + digits.len());
                    id.push_str(&self.id_prefix);
                    id.push('-');
                    id.push_str(digits);
                    id
                },
                str::to_string,
            )
    }
}

/// The header that asks for a routing explanation.
const EXPLAIN: &str = "x-ferrolite-explain";

impl Caller<'_> {
    /// Whether the request asks for a routing explanation (`x-ferrolite-explain: true`) and
    /// its caller may have one: the master key's holder, an API key configured with
    /// `explain: true`, or anyone on a gateway without keys. Any other caller's header is
    /// ignored (the call is answered without an explanation).
    pub(super) fn explains(&self, headers: &HeaderMap) -> bool {
        let asked = headers
            .get(EXPLAIN)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true") || v.trim() == "1");
        if !asked {
            return false;
        }
        let allowed = match self {
            Caller::Anyone | Caller::Master => true,
            Caller::Key(key) => key.explain,
        };
        if !allowed {
            tracing::debug!(
                "x-ferrolite-explain ignored: the API key may not ask for explanations"
            );
        }
        allowed
    }

    /// The API key calling, if it is one.
    pub(super) fn key(&self) -> Option<&ApiKey> {
        match self {
            Caller::Key(key) => Some(*key),
            _ => None,
        }
    }

    /// The identity `deployment_affinity` keys on, as LiteLLM's `user_api_key_hash`: the
    /// SHA-256 (hex) of the caller's key; none when no key is configured. An API key's hash
    /// is the one kept at load; the master key's is computed only here, for a router that
    /// uses affinity.
    pub(super) fn affinity_key(&self, master: Option<&Secret>) -> Option<String> {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let hash = match self {
            Caller::Anyone => return None,
            Caller::Master => ApiKey::hash(master?.expose()),
            Caller::Key(key) => key.key_sha256,
        };
        let mut hex = String::with_capacity(2 * hash.len());
        for byte in hash {
            hex.push(char::from(DIGITS[usize::from(byte >> 4)]));
            hex.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
        }
        Some(hex)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
