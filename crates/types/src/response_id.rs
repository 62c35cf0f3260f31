//! The Responses API ids a router hands out, as LiteLLM builds them
//! (`ResponsesAPIRequestUtils._build_responses_api_response_id` and
//! `_decode_responses_api_response_id`): `resp_` followed by the standard base64 (with padding)
//! of `litellm:custom_llm_provider:{provider};model_id:{deployment id};response_id:{upstream
//! id}`. A client that continues a conversation (`previous_response_id`) names the deployment
//! that stored it, and the router sends the request there; the upstream receives its own id.

use base64::Engine as _;

/// A Responses API id that names the deployment that answered (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedResponseId {
    /// The deployment's provider (`openai`, `azure`).
    pub provider: String,
    /// The deployment's id.
    pub deployment: String,
    /// The id the upstream gave its response.
    pub response_id: String,
}

const PREFIX: &str = "resp_";
const PROVIDER: &str = "litellm:custom_llm_provider:";
const DEPLOYMENT: &str = ";model_id:";
const RESPONSE: &str = ";response_id:";

impl ManagedResponseId {
    /// The id handed to a client for the upstream's `response_id`, answered by `deployment` of
    /// `provider`.
    pub fn encode(provider: &str, deployment: &str, response_id: &str) -> String {
        let plain = format!("{PROVIDER}{provider}{DEPLOYMENT}{deployment}{RESPONSE}{response_id}");
        let mut id = String::with_capacity(PREFIX.len() + plain.len().div_ceil(3) * 4);
        id.push_str(PREFIX);
        base64_encode(plain.as_bytes(), &mut id);
        id
    }

    /// The parts of an id [`ManagedResponseId::encode`] made; `None` for any other id (an
    /// upstream's own, or one that is not base64 of that form).
    pub fn decode(id: &str) -> Option<ManagedResponseId> {
        let bytes = base64_decode(id.strip_prefix(PREFIX)?)?;
        let plain = String::from_utf8(bytes).ok()?;
        let rest = plain.strip_prefix(PROVIDER)?;
        let (provider, rest) = rest.split_once(DEPLOYMENT)?;
        let (deployment, response_id) = rest.split_once(RESPONSE)?;
        if deployment.is_empty() || response_id.is_empty() {
            return None;
        }
        Some(ManagedResponseId {
            provider: provider.to_string(),
            deployment: deployment.to_string(),
            response_id: response_id.to_string(),
        })
    }
}

/// Appends `bytes` in standard base64 with padding (RFC 4648, section 4), as Python's
/// `base64.b64encode` writes it.
fn base64_encode(bytes: &[u8], out: &mut String) {
    base64::engine::general_purpose::STANDARD.encode_string(bytes, out);
}

/// Standard base64 with padding; `None` for anything else (other characters, a wrong length,
/// padding in the middle).
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::ManagedResponseId;

    #[test]
    fn an_id_is_litellms_base64_of_provider_deployment_and_upstream_id() {
        let id = ManagedResponseId::encode("openai", "gpt-4o-east", "resp_abc123");
        // Python: "resp_" + base64.b64encode(b"litellm:custom_llm_provider:openai;model_id:gpt-4o-east;response_id:resp_abc123")
        assert_eq!(
            id,
            "resp_bGl0ZWxsbTpjdXN0b21fbGxtX3Byb3ZpZGVyOm9wZW5haTttb2RlbF9pZDpncHQtNG8tZWFzdDtyZXNwb25zZV9pZDpyZXNwX2FiYzEyMw=="
        );
        assert_eq!(
            ManagedResponseId::decode(&id).unwrap(),
            ManagedResponseId {
                provider: "openai".into(),
                deployment: "gpt-4o-east".into(),
                response_id: "resp_abc123".into(),
            }
        );
    }

    #[test]
    fn every_padding_length_round_trips() {
        for upstream in ["r", "re", "res", "resp_1", "resp_12", "resp_123", "a;b:c é"] {
            let id = ManagedResponseId::encode("azure", "d1", upstream);
            assert_eq!(
                ManagedResponseId::decode(&id).unwrap().response_id,
                upstream
            );
        }
    }

    #[test]
    fn other_ids_are_not_decoded() {
        for id in [
            "resp_abc123",
            "resp_",
            "msg_bGl0ZWxsbQ==",
            "resp_bGl0ZWxsbQ==",     // "litellm"
            "resp_aGVsbG87d29ybGQ=", // "hello;world"
            "resp_!!!!",
            "resp_bGl0ZWxsbQ=a",
            "",
        ] {
            assert_eq!(ManagedResponseId::decode(id), None, "{id}");
        }
    }
}
