//! LiteLLM's Prometheus metrics on a real `ferrolite serve`: after successes, a failure that
//! cools a deployment down and falls back, a stream and a refused request, `/metrics` shows each
//! LiteLLM metric under LiteLLM's name, with its label names and values, and the values the
//! calls made; `litellm_settings.require_auth_for_metrics_endpoint` puts `/metrics` behind the
//! master key; `ferrolite_settings.litellm_metrics: false` leaves the metrics out.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufReader, Write};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{exchange, spawn_serve};

const MASTER: &str = "sk-metrics-master";

/// A scripted OpenAI-compatible upstream on loopback: its first `healthy` chat calls are
/// answered (3 input and 5 output tokens; a stream when asked), every later one with a 500.
fn upstream(name: &'static str, healthy: usize) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let calls = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let calls = Arc::clone(&calls);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let Some((_, body)) = common::read_message(&mut reader) else {
                    return;
                };
                let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let usage = serde_json::json!(
                    {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
                );
                let reply = if calls.fetch_add(1, Ordering::SeqCst) >= healthy {
                    let error = serde_json::json!({"error": {"message": "down"}}).to_string();
                    format!(
                        "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{error}",
                        error.len()
                    )
                } else if body["stream"] == true {
                    let chunk = |delta: serde_json::Value, usage: serde_json::Value| {
                        let choices = if usage.is_null() {
                            serde_json::json!([{"index": 0, "delta": delta, "finish_reason": null}])
                        } else {
                            serde_json::json!([])
                        };
                        format!(
                            "data: {}\n\n",
                            serde_json::json!({
                                "id": "chatcmpl-1", "object": "chat.completion.chunk",
                                "created": 1, "model": body["model"],
                                "choices": choices, "usage": usage
                            })
                        )
                    };
                    let events = [
                        chunk(
                            serde_json::json!({"role": "assistant", "content": name}),
                            serde_json::Value::Null,
                        ),
                        chunk(serde_json::json!({}), usage),
                        "data: [DONE]\n\n".to_string(),
                    ]
                    .concat();
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{events}",
                        events.len()
                    )
                } else {
                    let answer = serde_json::json!({
                        "id": "chatcmpl-1", "object": "chat.completion", "created": 1,
                        "model": body["model"],
                        "choices": [{"index": 0, "finish_reason": "stop",
                            "message": {"role": "assistant", "content": name}}],
                        "usage": usage
                    })
                    .to_string();
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                        answer.len()
                    )
                };
                let _ = stream.write_all(reply.as_bytes());
            });
        }
    });
    port
}

/// One series of an exposition: its name, labels and value.
#[derive(Debug)]
struct Series {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The series of a Prometheus text exposition.
fn parse(text: &str) -> Vec<Series> {
    let mut all = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (head, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap(),
        };
        let (name, labels) = match head.split_once('{') {
            None => (head.to_string(), BTreeMap::new()),
            Some((name, rest)) => {
                let rest = rest.strip_suffix('}').unwrap();
                let mut labels = BTreeMap::new();
                let mut chars = rest.chars().peekable();
                while chars.peek().is_some() {
                    let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                    assert_eq!(chars.next(), Some('"'), "{line}");
                    let mut value = String::new();
                    while let Some(c) = chars.next() {
                        match c {
                            '\\' => match chars.next() {
                                Some('n') => value.push('\n'),
                                Some(other) => value.push(other),
                                None => {}
                            },
                            '"' => break,
                            c => value.push(c),
                        }
                    }
                    labels.insert(key, value);
                    if chars.peek() == Some(&',') {
                        chars.next();
                    }
                }
                (name.to_string(), labels)
            }
        };
        all.push(Series {
            name,
            labels,
            value,
        });
    }
    all
}

/// The value of the one series named `name` whose labels include `wanted`; its label names
/// must be exactly `label_names` (plus `le` for a histogram's buckets).
fn value(all: &[Series], name: &str, wanted: &[(&str, &str)], label_names: &[&str]) -> f64 {
    let found: Vec<&Series> = all
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            wanted
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one series {name} with {wanted:?}: {found:?}\n(all of {name}: {:?})",
        all.iter().filter(|s| s.name == name).collect::<Vec<_>>()
    );
    let mut names: Vec<&str> = found[0]
        .labels
        .keys()
        .map(String::as_str)
        .filter(|k| *k != "le")
        .collect();
    names.sort_unstable();
    let mut expected = label_names.to_vec();
    expected.sort_unstable();
    assert_eq!(names, expected, "the label names of {name}");
    found[0].value
}

/// LiteLLM's label names (`PrometheusMetricLabels`), as its `/metrics` shows them.
const STATE: &[&str] = &["litellm_model_name", "model_id", "api_base", "api_provider"];
const DEPLOYMENT_TOTAL: &[&str] = &[
    "requested_model",
    "litellm_model_name",
    "model_id",
    "api_base",
    "api_provider",
    "hashed_api_key",
    "api_key_alias",
    "team",
    "team_alias",
    "client_ip",
    "user_agent",
];
const DEPLOYMENT_FAILURE: &[&str] = &[
    "requested_model",
    "litellm_model_name",
    "model_id",
    "api_base",
    "api_provider",
    "exception_status",
    "exception_class",
    "hashed_api_key",
    "api_key_alias",
    "team",
    "team_alias",
    "client_ip",
    "user_agent",
];
const REMAINING: &[&str] = &[
    "model_group",
    "api_provider",
    "api_base",
    "litellm_model_name",
    "hashed_api_key",
    "api_key_alias",
    "model_id",
];
const PER_TOKEN: &[&str] = &[
    "litellm_model_name",
    "model_id",
    "api_base",
    "api_provider",
    "hashed_api_key",
    "api_key_alias",
    "team",
    "team_alias",
];
const COOLED: &[&str] = &[
    "litellm_model_name",
    "model_id",
    "api_base",
    "api_provider",
    "exception_status",
];
const FALLBACKS: &[&str] = &[
    "requested_model",
    "fallback_model",
    "hashed_api_key",
    "api_key_alias",
    "team",
    "team_alias",
    "exception_status",
    "exception_class",
    "model_id",
];
const API_LATENCY: &[&str] = &[
    "model",
    "hashed_api_key",
    "api_key_alias",
    "team",
    "team_alias",
    "requested_model",
    "end_user",
    "user",
    "model_id",
];
const TOTAL_LATENCY: &[&str] = &[
    "end_user",
    "hashed_api_key",
    "api_key_alias",
    "requested_model",
    "team",
    "team_alias",
    "user",
    "model",
    "model_id",
];
const SPEND: &[&str] = &[
    "end_user",
    "hashed_api_key",
    "api_key_alias",
    "model",
    "team",
    "team_alias",
    "user",
    "user_email",
    "client_ip",
    "user_agent",
    "model_id",
];
const TOKENS: &[&str] = &[
    "end_user",
    "hashed_api_key",
    "api_key_alias",
    "model",
    "team",
    "team_alias",
    "user",
    "user_email",
    "requested_model",
    "model_id",
];
const PROXY_TOTAL: &[&str] = &[
    "end_user",
    "hashed_api_key",
    "api_key_alias",
    "requested_model",
    "team",
    "team_alias",
    "user",
    "status_code",
    "user_email",
    "route",
    "client_ip",
    "user_agent",
    "model_id",
];
const PROXY_FAILED: &[&str] = &[
    "end_user",
    "hashed_api_key",
    "api_key_alias",
    "requested_model",
    "team",
    "team_alias",
    "user",
    "user_email",
    "exception_status",
    "exception_class",
    "route",
    "client_ip",
    "user_agent",
    "model_id",
];

/// Deployments `flaky` (group `primary`, rpm and tpm limits) and `steady` (group `backup`), each
/// on its upstream, and `dead` and `gone` (groups of their names) on an upstream that fails
/// every call; `primary` falls back to `backup`, `dead` to `gone`.
fn config(flaky: u16, backup: u16, extra: &str) -> String {
    let dead = upstream("dead", 0);
    format!(
        r#"
model_list:
  - model_name: primary
    litellm_params:
      model: openai/gpt-4o
      api_base: "http://127.0.0.1:{flaky}/v1"
      api_key: sk-up
      rpm: 100
      tpm: 100000
      input_cost_per_token: 0.000001
      output_cost_per_token: 0.000002
    model_info: {{id: flaky}}
  - model_name: backup
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: "http://127.0.0.1:{backup}/v1"
      api_key: sk-up
      input_cost_per_token: 0.000001
      output_cost_per_token: 0.000002
    model_info: {{id: steady}}
  - model_name: dead
    litellm_params:
      model: openai/gpt-4o
      api_base: "http://127.0.0.1:{dead}/v1"
      api_key: sk-up
    model_info: {{id: dead}}
  - model_name: gone
    litellm_params:
      model: openai/gpt-4o
      api_base: "http://127.0.0.1:{dead}/v1"
      api_key: sk-up
    model_info: {{id: gone}}
router_settings:
  num_retries: 0
  allowed_fails: 0
  cooldown_time: 600
  fallbacks: [{{primary: [backup]}}, {{dead: [gone]}}]
  provider_budget_config:
    openai: {{budget_limit: 10, time_period: 1d}}
general_settings:
  master_key: {MASTER}
{extra}"#
    )
}

fn chat(port: u16, model: &str, stream: bool) -> (u16, String) {
    let body = format!(
        r#"{{"model": "{model}", "stream": {stream}, "messages": [{{"role": "user", "content": "hi"}}]}}"#
    );
    let (status, _, body) = exchange(port, "POST", "/v1/chat/completions", Some(MASTER), &body);
    (status, body)
}

fn scrape(port: u16) -> Vec<Series> {
    let (status, _, text) = exchange(port, "GET", "/metrics", Some(MASTER), "");
    assert_eq!(status, 200, "{text}");
    parse(&text)
}

fn stop(mut child: std::process::Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn metrics_show_litellm_names_labels_and_values_after_successes_a_cooldown_and_a_fallback() {
    let dir =
        std::env::temp_dir().join(format!("ferrolite-litellm-metrics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (flaky, backup) = (upstream("flaky", 2), upstream("steady", usize::MAX));
    let path = dir.join("config.yaml");
    std::fs::write(
        &path,
        config(
            flaky,
            backup,
            "litellm_settings:\n  require_auth_for_metrics_endpoint: true\n",
        ),
    )
    .unwrap();
    let (child, port) = spawn_serve(&path, &[], Stdio::null(), Stdio::null());
    let flaky_base = format!("http://127.0.0.1:{flaky}/v1");
    let flaky_deployment = [
        ("litellm_model_name", "gpt-4o"),
        ("model_id", "flaky"),
        ("api_base", flaky_base.as_str()),
        ("api_provider", "openai"),
    ];

    // Two successes on `flaky`.
    for _ in 0..2 {
        let (status, body) = chat(port, "primary", false);
        assert_eq!(status, 200, "{body}");
    }
    let all = scrape(port);
    assert_eq!(
        value(&all, "litellm_deployment_state", &flaky_deployment, STATE),
        0.0
    );
    let success = [("requested_model", "primary"), ("model_id", "flaky")];
    assert_eq!(
        value(
            &all,
            "litellm_deployment_success_responses_total",
            &success,
            DEPLOYMENT_TOTAL
        ),
        2.0
    );
    let remaining = [("model_group", "primary"), ("model_id", "flaky")];
    assert_eq!(
        value(
            &all,
            "litellm_remaining_requests_metric",
            &remaining,
            REMAINING
        ),
        98.0,
        "rpm 100 less the 2 calls of the window"
    );
    let tokens_left = value(
        &all,
        "litellm_remaining_tokens_metric",
        &remaining,
        REMAINING,
    );
    assert!(
        (99_000.0..100_000.0).contains(&tokens_left),
        "{tokens_left}"
    );

    // The third call fails (500): `flaky` is cooled down, and the request falls back.
    let (status, body) = chat(port, "primary", false);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("steady"), "answered by the fallback: {body}");
    // A stream on `backup` (time to first token), and a request for a group nobody serves.
    let (status, body) = chat(port, "backup", true);
    assert_eq!(status, 200, "{body}");
    assert_eq!(chat(port, "nobody-serves-this", false).0, 400);
    let all = scrape(port);

    assert_eq!(
        value(&all, "litellm_deployment_state", &flaky_deployment, STATE),
        2.0,
        "complete outage once cooled down"
    );
    let steady_base = format!("http://127.0.0.1:{backup}/v1");
    assert_eq!(
        value(
            &all,
            "litellm_deployment_state",
            &[
                ("litellm_model_name", "gpt-4o-mini"),
                ("model_id", "steady"),
                ("api_base", steady_base.as_str()),
                ("api_provider", "openai"),
            ],
            STATE
        ),
        0.0
    );
    assert_eq!(
        value(
            &all,
            "litellm_deployment_success_responses_total",
            &success,
            DEPLOYMENT_TOTAL
        ),
        2.0
    );
    assert_eq!(
        value(
            &all,
            "litellm_deployment_total_requests_total",
            &success,
            DEPLOYMENT_TOTAL
        ),
        3.0,
        "successes and the failure"
    );
    let failure = [
        ("requested_model", "primary"),
        ("litellm_model_name", "gpt-4o"),
        ("model_id", "flaky"),
        ("api_base", flaky_base.as_str()),
        ("api_provider", "openai"),
        ("exception_status", "500"),
        ("exception_class", "Openai.InternalServerError"),
        ("hashed_api_key", "None"),
        ("team", "None"),
    ];
    assert_eq!(
        value(
            &all,
            "litellm_deployment_failure_responses_total",
            &failure,
            DEPLOYMENT_FAILURE
        ),
        1.0
    );
    let cooled = [("model_id", "flaky"), ("exception_status", "500")];
    assert_eq!(
        value(
            &all,
            "litellm_deployment_cooled_down_total",
            &cooled,
            COOLED
        ),
        1.0
    );
    let fell_back = [
        ("requested_model", "primary"),
        ("fallback_model", "backup"),
        ("exception_status", "500"),
        ("exception_class", "Openai.InternalServerError"),
    ];
    assert_eq!(
        value(
            &all,
            "litellm_deployment_successful_fallbacks_total",
            &fell_back,
            FALLBACKS
        ),
        1.0
    );
    assert!(
        all.iter()
            .all(|s| s.name != "litellm_deployment_failed_fallbacks_total"),
        "no fallback failed"
    );
    assert!(
        all.iter()
            .all(|s| !(s.name == "litellm_remaining_requests_metric"
                && s.labels.get("model_id").map(String::as_str) == Some("steady"))),
        "no remaining requests of a deployment without rpm"
    );

    // Latency, tokens and spend of `flaky`'s two answers.
    let by_model = [("model", "gpt-4o"), ("model_id", "flaky")];
    assert_eq!(
        value(
            &all,
            "litellm_llm_api_latency_metric_count",
            &by_model,
            API_LATENCY
        ),
        2.0
    );
    assert_eq!(
        value(
            &all,
            "litellm_llm_api_latency_metric_bucket",
            &[("model_id", "flaky"), ("le", "300")],
            API_LATENCY
        ),
        2.0,
        "LiteLLM's buckets, up to 300 s"
    );
    assert_eq!(
        value(
            &all,
            "litellm_request_total_latency_metric_count",
            &by_model,
            TOTAL_LATENCY
        ),
        2.0
    );
    assert_eq!(
        value(
            &all,
            "litellm_request_total_latency_metric_count",
            &[("model", "gpt-4o-mini"), ("requested_model", "backup")],
            TOTAL_LATENCY
        ),
        2.0,
        "the fallback's answer and the stream"
    );
    assert_eq!(
        value(
            &all,
            "litellm_deployment_latency_per_output_token_count",
            &[("model_id", "flaky")],
            PER_TOKEN
        ),
        2.0
    );
    let flaky_tokens = [("model", "gpt-4o"), ("requested_model", "primary")];
    assert_eq!(
        value(
            &all,
            "litellm_input_tokens_metric_total",
            &flaky_tokens,
            TOKENS
        ),
        6.0
    );
    assert_eq!(
        value(
            &all,
            "litellm_output_tokens_metric_total",
            &flaky_tokens,
            TOKENS
        ),
        10.0
    );
    assert_eq!(
        value(
            &all,
            "litellm_total_tokens_metric_total",
            &flaky_tokens,
            TOKENS
        ),
        16.0
    );
    let spend = value(
        &all,
        "litellm_spend_metric_total",
        &[("model_id", "flaky")],
        SPEND,
    );
    assert!(
        (spend - 0.000026).abs() < 1e-12,
        "2 x (3 x 0.000001 + 5 x 0.000002): {spend}"
    );
    // Only the stream has a time to first token.
    assert_eq!(
        value(
            &all,
            "litellm_llm_api_time_to_first_token_metric_count",
            &[("model_id", "steady")],
            API_LATENCY
        ),
        1.0
    );
    assert!(
        all.iter().all(
            |s| !(s.name.starts_with("litellm_llm_api_time_to_first_token")
                && s.labels.get("model_id").map(String::as_str) == Some("flaky"))
        ),
        "no time to first token for whole answers"
    );

    // The proxy's requests.
    let route = ("route", "/v1/chat/completions");
    assert_eq!(
        value(
            &all,
            "litellm_proxy_total_requests_metric_total",
            &[
                route,
                ("requested_model", "primary"),
                ("status_code", "200"),
                ("model_id", "flaky")
            ],
            PROXY_TOTAL
        ),
        2.0
    );
    assert_eq!(
        value(
            &all,
            "litellm_proxy_total_requests_metric_total",
            &[
                route,
                ("requested_model", "primary"),
                ("status_code", "200"),
                ("model_id", "steady")
            ],
            PROXY_TOTAL
        ),
        1.0,
        "the request the fallback answered"
    );
    assert_eq!(
        value(
            &all,
            "litellm_proxy_failed_requests_metric_total",
            &[
                route,
                ("requested_model", "nobody-serves-this"),
                ("exception_status", "400"),
                ("exception_class", "BadRequestError"),
            ],
            PROXY_FAILED
        ),
        1.0
    );
    let left = value(
        &all,
        "litellm_provider_remaining_budget_metric",
        &[("api_provider", "openai")],
        &["api_provider"],
    );
    assert!(
        (9.99..10.0).contains(&left),
        "10 USD less the spend: {left}"
    );

    // `dead` fails, and so does its fallback `gone`.
    let (status, body) = chat(port, "dead", false);
    assert!(status >= 400, "{status} {body}");
    let all = scrape(port);
    assert_eq!(
        value(
            &all,
            "litellm_deployment_failed_fallbacks_total",
            &[
                ("requested_model", "dead"),
                ("fallback_model", "gone"),
                ("exception_status", "500"),
                ("exception_class", "Openai.InternalServerError"),
            ],
            FALLBACKS
        ),
        1.0
    );
    assert_eq!(
        value(
            &all,
            "litellm_proxy_failed_requests_metric_total",
            &[
                route,
                ("requested_model", "dead"),
                ("exception_status", &status.to_string())
            ],
            PROXY_FAILED
        ),
        1.0
    );

    // Behind the master key.
    let (status, _, body) = exchange(port, "GET", "/metrics", None, "");
    assert_eq!(status, 401, "{body}");
    assert!(!body.contains("litellm_"), "{body}");
    assert_eq!(
        exchange(port, "GET", "/metrics", Some("sk-wrong"), "").0,
        401
    );
    stop(child);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn metrics_are_open_without_the_setting_and_litellm_metrics_can_be_turned_off() {
    let dir = std::env::temp_dir().join(format!("ferrolite-litellm-off-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (flaky, backup) = (
        upstream("flaky", usize::MAX),
        upstream("steady", usize::MAX),
    );
    let path = dir.join("config.yaml");
    std::fs::write(
        &path,
        config(
            flaky,
            backup,
            "ferrolite_settings:\n  litellm_metrics: false\n",
        ),
    )
    .unwrap();
    let (child, port) = spawn_serve(&path, &[], Stdio::null(), Stdio::null());
    assert_eq!(chat(port, "primary", false).0, 200);
    let (status, _, text) = exchange(port, "GET", "/metrics", None, "");
    assert_eq!(
        status, 200,
        "open without require_auth_for_metrics_endpoint: {text}"
    );
    assert!(
        text.contains("ferrolite_router_requests_total"),
        "ferrolite's own metrics: {text}"
    );
    assert!(!text.contains("litellm_"), "LiteLLM's are off: {text}");
    stop(child);
    let _ = std::fs::remove_dir_all(dir);
}
