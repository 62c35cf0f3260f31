//! `ferrolite serve` through faults: its own `redis-server` killed under it, in fail-closed
//! and fail-open mode (what callers and `/health/readiness` see), and `/metrics` as a scraper
//! reads it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{exchange, spawn_serve};
use ferrolite_cache::testing::{RedisProcess, redis_binaries_installed};

const MASTER: &str = "sk-faults-master";
const KEY: &str = "sk-faults-api-key";

/// A config over one mock deployment on `redis` with `failure_mode`, the master key and one API
/// key with an rpm (so its calls are admitted in the shared state).
fn config(dir: &std::path::Path, redis: &str, failure_mode: &str) -> std::path::PathBuf {
    let path = dir.join("config.yaml");
    std::fs::write(
        &path,
        format!(
            r#"
model_list:
  - model_name: gpt-4o
    litellm_params: {{model: openai/gpt-4o, rpm: 100000, mock_response: ok}}
router_settings:
  num_retries: 0
  redis_url: {redis}
general_settings:
  master_key: {MASTER}
ferrolite_settings:
  failure_mode: {failure_mode}
  api_keys:
    - {{name: team, key: {KEY}, rpm: 100000}}
"#
        ),
    )
    .unwrap();
    path
}

fn temp_dir(test: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrolite-faults-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts `ferrolite serve` on a free port and waits until it listens.
fn start(config: &std::path::Path) -> (std::process::Child, u16) {
    spawn_serve(config, &[], Stdio::null(), Stdio::piped())
}

fn stop(mut child: std::process::Child) -> String {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    stderr
}

fn chat(port: u16, key: &str) -> (u16, String, String) {
    exchange(
        port,
        "POST",
        "/v1/chat/completions",
        Some(key),
        r#"{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}"#,
    )
}

/// The `Retry-After` of a head, in seconds.
fn retry_after(head: &str) -> Option<u64> {
    head.lines()
        .find_map(|l| l.strip_prefix("retry-after:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Waits until the gateway's readiness reports Redis down (the first failed command marks it).
fn wait_until_redis_down(port: u16) -> (u16, String, String) {
    let started = Instant::now();
    loop {
        // Calls make the gateway use Redis, and so notice it is gone.
        let _ = chat(port, MASTER);
        let readiness = exchange(port, "GET", "/health/readiness", None, "");
        let body: serde_json::Value = serde_json::from_str(&readiness.2).unwrap();
        if body["redis_down"] == true {
            return readiness;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the gateway never saw Redis down: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn fail_closed_refusals_are_503_with_retry_after_in_openais_shape_for_every_caller() {
    if !redis_binaries_installed(&["redis-server"]) {
        return;
    }
    let mut redis = RedisProcess::start(false);
    let dir = temp_dir("closed-refusals");
    let (gateway, port) = start(&config(&dir, &redis.url(), "fail_closed"));
    assert_eq!(chat(port, MASTER).0, 200, "with Redis up, the master key");
    assert_eq!(chat(port, KEY).0, 200, "with Redis up, the API key");
    redis.kill();
    wait_until_redis_down(port);
    for (caller, key) in [("master key", MASTER), ("API key", KEY)] {
        let (status, head, body) = chat(port, key);
        assert_eq!(status, 503, "{caller}: {head}\n{body}");
        let seconds = retry_after(&head).unwrap_or_else(|| panic!("{caller}: {head}"));
        assert!(
            (1..=5).contains(&seconds),
            "{caller}: Retry-After {seconds} s, the reconnect interval"
        );
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        let error = &body["error"];
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains("shared state is unavailable"),
            "{caller}: {body}"
        );
        assert_eq!(error["type"], "api_error", "{caller}: {body}");
        assert_eq!(error["code"], "503", "{caller}: {body}");
        assert!(error.get("param").is_some(), "{caller}: {body}");
    }
    stop(gateway);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn readiness_is_503_only_when_a_fail_closed_gateway_loses_redis_and_degraded_200_in_fail_open() {
    if !redis_binaries_installed(&["redis-server"]) {
        return;
    }
    for mode in ["fail_open", "fail_closed"] {
        let mut redis = RedisProcess::start(false);
        let dir = temp_dir(&format!("readiness-{mode}"));
        let (gateway, port) = start(&config(&dir, &redis.url(), mode));
        let (status, _, body) = exchange(port, "GET", "/health/readiness", None, "");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (status, body["status"].as_str()),
            (200, Some("healthy")),
            "{mode}, Redis up: {body}"
        );
        redis.kill();
        let (status, head, body) = wait_until_redis_down(port);
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        if mode == "fail_open" {
            assert_eq!(
                (status, body["status"].as_str()),
                (200, Some("degraded")),
                "fail-open, Redis down: still serving, so still ready: {body}"
            );
            assert_eq!(chat(port, MASTER).0, 200, "fail-open answers without Redis");
            assert_eq!(chat(port, KEY).0, 200, "fail-open answers without Redis");
        } else {
            assert_eq!(
                (status, body["status"].as_str()),
                (503, Some("unhealthy")),
                "fail-closed, Redis down: cannot serve: {body}"
            );
            assert!(retry_after(&head).is_some(), "{head}");
            assert_eq!(
                chat(port, MASTER).0,
                503,
                "fail-closed refuses without Redis"
            );
        }
        stop(gateway);
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn metrics_show_each_budgets_remaining_usd_once() {
    let dir = temp_dir("budget-gauge");
    let path = dir.join("config.yaml");
    std::fs::write(
        &path,
        format!(
            r#"
model_list:
  - model_name: gpt-4o
    litellm_params: {{model: openai/gpt-4o, mock_response: ok}}
router_settings:
  provider_budget_config:
    openai: {{budget_limit: 10, time_period: 1d}}
litellm_settings:
  tag_budget_config:
    paid: {{max_budget: 5, budget_duration: 1d}}
general_settings:
  master_key: {MASTER}
"#
        ),
    )
    .unwrap();
    let (gateway, port) = start(&path);
    assert_eq!(chat(port, MASTER).0, 200);
    // Twice: the first scrape sets the gauges, the second must not add others.
    for _ in 0..2 {
        let (status, _, metrics) = exchange(port, "GET", "/metrics", None, "");
        assert_eq!(status, 200);
        let samples: Vec<&str> = metrics
            .lines()
            .filter(|l| l.starts_with("ferrolite_budget_remaining_usd"))
            .collect();
        assert_eq!(samples.len(), 2, "one sample per budget: {samples:#?}");
        assert!(
            samples
                .iter()
                .any(|s| s.contains(r#"scope="provider""#) && s.contains(r#"name="openai""#)),
            "{samples:#?}"
        );
        assert!(
            samples
                .iter()
                .any(|s| s.contains(r#"scope="tag""#) && s.contains(r#"name="paid""#)),
            "{samples:#?}"
        );
    }
    stop(gateway);
    let _ = std::fs::remove_dir_all(dir);
}
