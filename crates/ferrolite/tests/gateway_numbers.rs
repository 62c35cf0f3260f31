//! Numbers a client sends (`max_tokens`, `max_completion_tokens`, `n`, `priority`, ...) through
//! the gateway over real HTTP on loopback, with mock deployments and API keys with small
//! limits: a number out of range is a 400 naming its field, nothing wraps or overflows into a
//! 5xx, and an API key's tpm counts the same tokens as a deployment's.
#![cfg(all(feature = "gateway", feature = "http"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use ferrolite::gateway::{GatewaySettings, app, serve};
use ferrolite::types::Secret;
use proptest::prelude::*;

const MASTER: &str = "sk-master-numbers";

/// A plain HTTP client (reqwest with rustls needs its crypto provider installed once).
fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// A gateway on a free port over `yaml` (its API keys, its mocks); its base URL.
async fn gateway(yaml: &str) -> String {
    let config = ferrolite::Config::from_yaml(yaml).unwrap();
    let settings = GatewaySettings {
        master_key: Some(Secret::new(MASTER)),
        api_keys: config.api_keys.clone(),
        ..GatewaySettings::default()
    };
    let router = ferrolite::build_from_config(config, None).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(
        listener,
        app(router, settings),
        std::future::pending(),
    ));
    format!("http://{addr}")
}

/// Posts a chat completion with `key`; the status and the body.
async fn post(base: &str, key: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let response = http()
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

/// `gpt-4o` is in the catalogue (16,384 output tokens at most); `in-house` is not, so its
/// output limit is unknown.
const LIMITED: &str = r#"
model_list:
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o, mock_response: "hello", mock_output_tokens: 5}
  - model_name: in-house
    litellm_params: {model: openai/in-house-model, mock_response: "hello", mock_output_tokens: 5}
  - model_name: small-output
    litellm_params: {model: openai/in-house-model, mock_response: "hello", mock_output_tokens: 5}
    model_info: {id: small, max_output_tokens: 100}
  - model_name: tpm-limited
    litellm_params: {model: openai/in-house-model, mock_response: "hello", mock_output_tokens: 5, tpm: 1000}
router_settings:
  num_retries: 0
ferrolite_settings:
  api_keys:
    - {name: small, key: sk-small-tpm-123456, tpm: 200}
"#;

fn chat(model: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut body =
        serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

#[tokio::test]
async fn a_huge_max_tokens_never_wraps_past_an_api_keys_tpm_nor_gives_a_5xx() {
    let base = gateway(LIMITED).await;
    let key = "sk-small-tpm-123456";
    for model in ["gpt-4o", "in-house"] {
        for huge in [
            serde_json::json!(u64::MAX),
            serde_json::json!(u64::MAX - 1),
            serde_json::json!(1u64 << 63),
            serde_json::json!((1u64 << 63) - 1),
            serde_json::json!((1u64 << 63) + 12345),
            serde_json::json!(1u64 << 40),
        ] {
            for field in ["max_tokens", "max_completion_tokens"] {
                let (status, body) =
                    post(&base, key, &chat(model, serde_json::json!({field: huge}))).await;
                assert_eq!(status, 400, "{model} {field}={huge}: {body}");
                assert_eq!(body["error"]["param"], field, "{body}");
            }
        }
    }
    // The largest figures accepted, on a deployment with a tpm: refused by its tpm (a 429),
    // as the master key's holder too, whose calls hold no key limit.
    let (status, body) = post(
        &base,
        MASTER,
        &chat(
            "tpm-limited",
            serde_json::json!({"max_tokens": 4_294_967_295u64, "n": 128}),
        ),
    )
    .await;
    assert_eq!(status, 429, "{body}");
    let (status, body) = post(
        &base,
        MASTER,
        &chat("tpm-limited", serde_json::json!({"max_tokens": u64::MAX})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "max_tokens", "{body}");
    // Within every limit of the model but over the key's tpm: refused by the key, not served.
    let (status, body) = post(
        &base,
        key,
        &chat("in-house", serde_json::json!({"max_tokens": 1_000_000})),
    )
    .await;
    assert_eq!(status, 429, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("tpm"),
        "{body}"
    );
    // The key still serves a call that fits.
    let (status, body) = post(
        &base,
        key,
        &chat("in-house", serde_json::json!({"max_tokens": 50})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn max_tokens_over_the_models_output_limit_is_a_400_naming_the_field() {
    let base = gateway(LIMITED).await;
    // The catalogue's limit for gpt-4o.
    for field in ["max_tokens", "max_completion_tokens"] {
        let (status, body) = post(
            &base,
            MASTER,
            &chat("gpt-4o", serde_json::json!({field: 16_385})),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["param"], field, "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains("16384"),
            "the message names the limit: {body}"
        );
        let (status, body) = post(
            &base,
            MASTER,
            &chat("gpt-4o", serde_json::json!({field: 16_384})),
        )
        .await;
        assert_eq!(status, 200, "at the limit: {body}");
    }
    // The deployment's own `model_info.max_output_tokens` wins over the catalogue.
    let (status, body) = post(
        &base,
        MASTER,
        &chat("small-output", serde_json::json!({"max_tokens": 101})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "max_tokens", "{body}");
    let (status, body) = post(
        &base,
        MASTER,
        &chat("small-output", serde_json::json!({"max_tokens": 100})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn token_figures_that_are_not_positive_integers_are_a_400_naming_the_field() {
    let base = gateway(LIMITED).await;
    for field in ["max_tokens", "max_completion_tokens", "n"] {
        for bad in [
            serde_json::json!(0),
            serde_json::json!(-1),
            serde_json::json!(i64::MIN),
            serde_json::json!(1.5),
            serde_json::json!(1e300),
            serde_json::json!("10"),
            serde_json::json!(true),
            serde_json::json!([1]),
        ]
        .into_iter()
        .chain((field == "n").then(|| serde_json::json!(129)))
        {
            let (status, body) = post(
                &base,
                "sk-small-tpm-123456",
                &chat("in-house", serde_json::json!({field: bad})),
            )
            .await;
            assert_eq!(status, 400, "{field}={bad}: {body}");
            assert_eq!(body["error"]["param"], field, "{field}={bad}: {body}");
        }
    }
}

/// A key and a deployment with the same tpm.
const SAME_TPM: &str = r#"
model_list:
  - model_name: g
    litellm_params: {model: openai/in-house-model, mock_response: "hello", mock_output_tokens: 5, tpm: 1000}
router_settings:
  num_retries: 0
ferrolite_settings:
  api_keys:
    - {name: k, key: sk-same-tpm-123456, tpm: 1000}
"#;

#[tokio::test]
async fn an_api_keys_tpm_counts_the_same_tokens_as_a_deployments_tpm() {
    let base = gateway(SAME_TPM).await;
    // 12 KB of fields that are not prompt text (a long `user`, `metadata`): not tokens the
    // model reads, so neither limit counts them; the request's estimate is its messages plus
    // `max_tokens`, well under both limits.
    let padding = "x".repeat(12_000);
    let body = chat(
        "g",
        serde_json::json!({"max_tokens": 100, "user": padding, "metadata": {"note": padding}}),
    );
    let (status, answer) = post(&base, "sk-same-tpm-123456", &body).await;
    assert_eq!(status, 200, "{answer}");
    // A prompt over both limits: refused by the key first (its estimate is the router's).
    let prompt = "word ".repeat(1_000); // 5,000 bytes: about 1,250 tokens
    let mut body = chat("g", serde_json::json!({}));
    body["messages"][0]["content"] = prompt.into();
    let (status, answer) = post(&base, "sk-same-tpm-123456", &body).await;
    assert_eq!(status, 429, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("API key `k` is over its tpm"),
        "{answer}"
    );
}

// --- the proptest: request numbers of every shape ---------------------------------------------

/// One key with rpm 4 and tpm 300 on a mock deployment whose answers use 5 output tokens per
/// choice; the output limit of `gpt-4o` (catalogue) is 16,384.
const FUZZ: &str = r#"
model_list:
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o, mock_response: "hello", mock_output_tokens: 5}
router_settings:
  num_retries: 0
ferrolite_settings:
  api_keys:
    - {name: fuzz, key: sk-fuzz-123456, rpm: 4, tpm: 300}
"#;

const FUZZ_OUTPUT_LIMIT: u64 = 16_384;

fn number() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        Just(serde_json::Value::Null),
        (0i64..400).prop_map(serde_json::Value::from),
        (-400i64..0).prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        prop_oneof![
            Just(u64::MAX),
            Just(1u64 << 63),
            Just((1u64 << 63) - 1),
            Just(FUZZ_OUTPUT_LIMIT),
            Just(FUZZ_OUTPUT_LIMIT + 1),
        ]
        .prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        (0.0f64..3.0).prop_map(serde_json::Value::from),
        "[0-9-]{0,6}".prop_map(serde_json::Value::from),
        any::<bool>().prop_map(serde_json::Value::from),
    ]
}

const FIELDS: [&str; 9] = [
    "max_tokens",
    "max_completion_tokens",
    "n",
    "temperature",
    "top_p",
    "timeout",
    "num_retries",
    "priority",
    "seed",
];

fn request() -> impl Strategy<Value = serde_json::Map<String, serde_json::Value>> {
    prop::collection::btree_map(prop::sample::select(&FIELDS[..]), number(), 0..4).prop_map(
        |fields| {
            fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect()
        },
    )
}

/// What ferrolite accepts for `field` (`None`: a 400).
fn accepted(field: &str, value: &serde_json::Value) -> bool {
    if value.is_null() {
        return true;
    }
    match field {
        "max_tokens" | "max_completion_tokens" => value
            .as_u64()
            .is_some_and(|v| (1..=FUZZ_OUTPUT_LIMIT).contains(&v)),
        "n" => value.as_u64().is_some_and(|v| (1..=128).contains(&v)),
        "priority" => value.as_u64().is_some_and(|v| v <= 255),
        "num_retries" => value.as_u64().is_some_and(|v| v <= u64::from(u32::MAX)),
        // Passed on to the deployment, as LiteLLM does.
        _ => true,
    }
}

/// The tokens a request holds at admission: the router's estimate of its messages plus
/// `n` x its largest `max_tokens`/`max_completion_tokens`.
fn estimate(fields: &serde_json::Map<String, serde_json::Value>) -> u64 {
    use ferrolite::types::{ApproxTokenCounter, ChatMessage, TokenCounter};
    let input = ApproxTokenCounter.count_messages(
        "gpt-4o",
        &[ChatMessage {
            role: "user",
            content: "hi",
            name: None,
        }],
    ) as u64;
    let max = ["max_tokens", "max_completion_tokens"]
        .iter()
        .filter_map(|f| fields.get(*f).and_then(serde_json::Value::as_u64))
        .max()
        .unwrap_or(0);
    let n = fields
        .get("n")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(1);
    input.saturating_add(n.saturating_mul(max))
}

fn minute() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 60
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn request_numbers_never_give_a_5xx_nor_an_admission_the_keys_limits_refuse(
        requests in prop::collection::vec(request(), 1..7)
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let base = gateway(FUZZ).await;
            let started = minute();
            // What the key has used: requests and tokens (settled to the answers' usage).
            let (mut rpm, mut tpm) = (0u64, 0u64);
            for fields in requests {
                let mut body = chat("gpt-4o", serde_json::json!({}));
                for (k, v) in &fields {
                    body[k] = v.clone();
                }
                let (status, answer) = post(&base, "sk-fuzz-123456", &body).await;
                prop_assert!(status < 500, "{status} for {fields:?}: {answer}");
                let bad = fields.iter().find(|(k, v)| !accepted(k, v));
                if let Some((field, value)) = bad {
                    prop_assert_eq!(status, 400, "{}={} is refused: {}", field, value, answer);
                    prop_assert!(answer["error"]["param"].is_string(), "{answer}");
                    continue;
                }
                let fits = rpm < 4 && tpm.saturating_add(estimate(&fields)) <= 300;
                if started != minute() {
                    // The one-minute window slid: the key's counts decay; stop checking.
                    break;
                }
                if status == 200 {
                    prop_assert!(fits, "admitted over the key's limits (rpm {rpm}, tpm {tpm}) for {fields:?}");
                    rpm += 1;
                    tpm += answer["usage"]["total_tokens"].as_u64().unwrap();
                } else {
                    prop_assert_eq!(status, 429, "{:?}: {}", fields, answer);
                    prop_assert!(!fits, "refused within the key's limits (rpm {rpm}, tpm {tpm}) for {fields:?}: {answer}");
                }
            }
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn a_huge_request_timeout_on_a_mock_timeout_is_answered_not_a_dropped_connection() {
    let base = gateway(LIMITED).await;
    for timeout in [
        serde_json::json!(1e300),
        serde_json::json!(f64::MAX),
        serde_json::json!(u64::MAX),
    ] {
        let body = chat(
            "in-house",
            serde_json::json!({"mock_timeout": true, "timeout": timeout, "num_retries": 0}),
        );
        let response = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            http()
                .post(format!("{base}/v1/chat/completions"))
                .bearer_auth(MASTER)
                .json(&body)
                .send(),
        )
        .await;
        // Waiting (the router's own timeout) is fine; a dropped connection is not.
        if let Ok(response) = response {
            let response = response.unwrap();
            assert!(response.status().as_u16() < 500 || response.status() == 504);
        }
    }
}
