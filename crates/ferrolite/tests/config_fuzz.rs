//! No input makes the configuration loader panic: arbitrary bytes, arbitrary text, and YAML
//! built from the configuration's own keys and odd values.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ferrolite::Config;
use proptest::prelude::*;

const KEYS: &[&str] = &[
    "model_list",
    "model_name",
    "litellm_params",
    "model_info",
    "model",
    "rpm",
    "tpm",
    "weight",
    "router_settings",
    "fallbacks",
    "routing_strategy",
    "num_retries",
    "timeout",
    "tags",
    "provider_budget_config",
    "budget_limit",
    "time_period",
    "ferrolite_settings",
    "admission",
    "wait_queue",
    "api_key",
    "redis_port",
    "redis_host",
    "model_group_alias",
    "retry_policy",
    "mock_response",
    "mock_error_rates",
    "<<",
    "id",
];

const VALUES: &[&str] = &[
    "openai/gpt-4o",
    "-1",
    "1e309",
    "NaN",
    ".inf",
    "~",
    "[]",
    "{}",
    "*a",
    "&a x",
    "os.environ/X",
    "\"\"",
    "18446744073709551616",
    "0",
    "true",
    "fallbacks",
    "[{\"a\": [\"b\"]}]",
    "|\n  x",
    "!!binary aGk=",
    "'quoted'",
    "1mo",
    "auto",
];

fn yamlish() -> impl Strategy<Value = String> {
    let line = (
        0usize..6,
        prop::sample::select(KEYS),
        prop::sample::select(VALUES),
        any::<bool>(),
    )
        .prop_map(|(indent, key, value, item)| {
            let dash = if item { "- " } else { "" };
            format!("{}{dash}{key}: {value}", "  ".repeat(indent))
        });
    prop::collection::vec(line, 0..30).prop_map(|lines| lines.join("\n"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = Config::from_yaml(&text);
    }

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,300}") {
        let _ = Config::from_yaml(&text);
    }

    #[test]
    fn yaml_made_of_config_keys_never_panics_and_errors_name_a_path(text in yamlish()) {
        if let Err(error) = Config::from_yaml(&text) {
            prop_assert!(!error.to_string().is_empty());
        }
    }
}

/// A "billion laughs" document (aliases of aliases) is refused, not expanded.
#[test]
fn an_alias_bomb_is_refused() {
    let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let prev = format!("*a{}", i - 1);
        text.push_str(&format!(
            "a{i}: &a{i} [{}]\n",
            std::iter::repeat_n(prev.as_str(), 10)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    text.push_str("model_list: *a11\n");
    let started = std::time::Instant::now();
    let result = Config::from_yaml(&text);
    let message = result.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message.contains("budget breached"),
        "the alias bomb was not refused by the parser's node budget: {message:?}"
    );
    // Expanded, the document holds 10^12 nodes: refused means it stopped long before that.
    // The bound only tells a refusal from an expansion, with room for a loaded CI machine.
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
}
