//! `ferrolite serve` as a process: an OpenAI client routes through it, and SIGTERM stops it
//! cleanly (exit 0).
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

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::types::{ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequestArgs};

const CONFIG: &str = r#"
model_list:
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o, mock_response: "served by ferrolite"}
router_settings:
  provider_budget_config:
    openai: {budget_limit: 10, time_period: 1d}
general_settings:
  master_key: sk-serve-test
"#;

#[test]
fn serve_answers_an_openai_client_and_stops_cleanly_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("ferrolite-serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    let cached = CONFIG.replace(
        "router_settings:\n",
        "router_settings:\n  cache_responses: true\n",
    );
    std::fs::write(&config, cached).unwrap();
    let (mut child, port) = start_with(&config, &["--log-format", "json"]);
    assert_eq!(ask(port), "served by ferrolite");
    assert_eq!(
        ask(port),
        "served by ferrolite",
        "again, from the response cache"
    );
    let (status, _, metrics) = exchange(port, "GET", "/metrics", None, "");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("ferrolite_response_cache_hits_total 1")
            && metrics.contains("ferrolite_response_cache_misses_total 1")
            && metrics.contains("ferrolite_response_cache_entries 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ferrolite_router_requests_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ferrolite_gateway_requests_total{status=\"200\"}"),
        "{metrics}"
    );
    let (status, _, budgets) =
        exchange(port, "GET", "/provider/budgets", Some("sk-serve-test"), "");
    assert_eq!(status, 200);
    assert!(
        budgets.contains("\"providers\"") && budgets.contains("openai"),
        "{budgets}"
    );
    let (status, _, _) = exchange(port, "GET", "/provider/budgets", None, "");
    assert_eq!(status, 401);
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert!(status.success(), "exit {status:?}; stdout: {stdout}");
    assert!(
        stdout.contains("ferrolite gateway on http://127.0.0.1:"),
        "{stdout}"
    );
    assert!(stdout.contains("ferrolite gateway stopped"), "{stdout}");
    // --log-format json: one JSON object per line, the answered call with its request id.
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let answered: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"))
        })
        .filter(|v| v["fields"]["message"] == "answered")
        .collect();
    assert!(!answered.is_empty(), "{stderr}");
    assert!(
        answered[0]["span"]["id"]
            .as_str()
            .unwrap()
            .starts_with("ferrolite-"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// One chat completion's text through the gateway on `port`.
fn ask(port: u16) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = Client::with_config(
            OpenAIConfig::new()
                .with_api_base(format!("http://127.0.0.1:{port}/v1"))
                .with_api_key("sk-serve-test"),
        );
        let request = CreateChatCompletionRequestArgs::default()
            .model("gpt-4o")
            .messages([ChatCompletionRequestUserMessageArgs::default()
                .content("hi")
                .build()
                .unwrap()
                .into()])
            .build()
            .unwrap();
        let answer = client.chat().create(request).await.unwrap();
        answer.choices[0]
            .message
            .content
            .clone()
            .unwrap_or_default()
    })
}

#[test]
fn sighup_reloads_a_good_config_once_and_refuses_a_bad_one_once() {
    let dir = std::env::temp_dir().join(format!("ferrolite-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let (child, port) = start_with(&config, &[]);
    assert_eq!(ask(port), "served by ferrolite");
    // A good new config: new answers and a new API key, without a restart.
    let with_key = format!(
        "{}\nferrolite_settings:\n  api_keys:\n    - {{name: late, key: sk-added-later}}\n",
        CONFIG.replace("served by ferrolite", "reloaded")
    );
    assert_eq!(chat_with(port, "sk-added-later", "gpt-4o").0, 401);
    std::fs::write(&config, with_key).unwrap();
    hangup(&child);
    let reloaded = Instant::now();
    while ask(port) != "reloaded" {
        assert!(
            reloaded.elapsed() < Duration::from_secs(10),
            "never reloaded"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        chat_with(port, "sk-added-later", "gpt-4o").0,
        200,
        "the reloaded key is honoured"
    );
    // Long enough for the file watcher to have looked at the changed file too.
    std::thread::sleep(Duration::from_millis(2500));
    // A bad one: refused, the last good one keeps serving.
    std::fs::write(&config, "model_list: []\n").unwrap();
    hangup(&child);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(ask(port), "reloaded");
    let (status, stdout, stderr) = stop_and_collect(child);
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("reload refused") && stderr.contains("model_list"),
        "{stderr}"
    );
    let log = format!("{stdout}{stderr}");
    assert_eq!(
        count(&log, "gateway reloaded"),
        1,
        "one change, one reload: {log}"
    );
    assert_eq!(
        count(&log, "reload refused"),
        1,
        "one bad change, one refusal: {log}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Sends SIGHUP to `child`.
fn hangup(child: &std::process::Child) {
    assert!(
        Command::new("kill")
            .args(["-HUP", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
}

/// How many lines of `log` contain `text`.
fn count(log: &str, text: &str) -> usize {
    log.lines().filter(|l| l.contains(text)).count()
}

#[test]
fn a_reload_that_changes_a_restart_only_key_is_refused_naming_it() {
    let dir = std::env::temp_dir().join(format!("ferrolite-restart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let (child, port) = start_with(&config, &[]);
    assert_eq!(ask(port), "served by ferrolite");
    // Redis and the failure mode belong to the state cache, which a reload keeps.
    let needs_restart = format!(
        "{}\nferrolite_settings:\n  failure_mode: fail_closed\n",
        CONFIG.replace("served by ferrolite", "too late").replace(
            "router_settings:\n",
            "router_settings:\n  redis_url: redis://127.0.0.1:6379\n"
        )
    );
    std::fs::write(&config, needs_restart).unwrap();
    hangup(&child);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        ask(port),
        "served by ferrolite",
        "the last good config serves"
    );
    // Back to a reloadable change: applied.
    std::fs::write(&config, CONFIG.replace("served by ferrolite", "reloadable")).unwrap();
    hangup(&child);
    let reloaded = Instant::now();
    while ask(port) != "reloadable" {
        assert!(
            reloaded.elapsed() < Duration::from_secs(10),
            "never reloaded"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, _, stderr) = stop_and_collect(child);
    assert!(status.success(), "{stderr}");
    let refusal = stderr
        .lines()
        .find(|l| l.contains("reload refused"))
        .unwrap_or_else(|| panic!("no refusal: {stderr}"));
    assert!(
        refusal.contains("router_settings.redis_url")
            && refusal.contains("ferrolite_settings.failure_mode")
            && refusal.contains("restart"),
        "{refusal}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Starts `ferrolite serve` on a free port with `extra` arguments and waits until it listens;
/// the child and its port.
fn start_with(config: &std::path::Path, extra: &[&str]) -> (std::process::Child, u16) {
    spawn_serve(config, extra, Stdio::piped(), Stdio::piped())
}

/// A chat completion of `model` with `key`: the status and the head.
fn chat_with(port: u16, key: &str, model: &str) -> (u16, String) {
    let body =
        format!(r#"{{"model": "{model}", "messages": [{{"role": "user", "content": "hi"}}]}}"#);
    let (status, head, _) = exchange(port, "POST", "/v1/chat/completions", Some(key), &body);
    (status, head)
}

#[test]
fn two_gateways_on_one_redis_in_strict_mode_admit_exactly_the_rpm_under_3x_overload() {
    let Some(url) = ferrolite_cache::testing::redis_url() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("ferrolite-two-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
model_list:
  - model_name: gpt-4o
    litellm_params: {{model: openai/gpt-4o, rpm: 30, mock_response: ok}}
router_settings:
  num_retries: 0
  redis_url: {url}
general_settings:
  master_key: sk-serve-test
ferrolite_settings:
  admission: strict
  window: fixed
  redis_key_prefix: "gateway-{}:"
"#,
            std::process::id()
        ),
    )
    .unwrap();
    let (mut a, port_a) = start_with(&config, &[]);
    let (mut b, port_b) = start_with(&config, &[]);
    let minute = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            / 60
    };
    let first_minute = minute();
    let mut statuses = Vec::new();
    for i in 0..90 {
        statuses.push(
            chat_with(
                if i % 2 == 0 { port_a } else { port_b },
                "sk-serve-test",
                "gpt-4o",
            )
            .0,
        );
    }
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(admitted + refused, 90, "{statuses:?}");
    if minute() == first_minute {
        assert_eq!(
            admitted, 30,
            "one fixed minute: exactly the rpm, across both gateways"
        );
    } else {
        // The run straddled a minute boundary: two windows.
        assert!((30..=60).contains(&admitted), "{admitted} admitted");
    }
    for child in [&mut a, &mut b] {
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(child.wait().unwrap().success());
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sigterm_lets_calls_in_flight_finish_and_a_drain_deadline_bounds_the_wait() {
    let dir = std::env::temp_dir().join(format!("ferrolite-drain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        r#"
model_list:
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o, mock_response: "slow", mock_latency_ms: 800}
  - model_name: glacial
    litellm_params: {model: openai/gpt-4o-mini, mock_response: "never mind", mock_latency_ms: 60000}
general_settings:
  master_key: sk-serve-test
"#,
    )
    .unwrap();
    let stop = |child: &std::process::Child| {
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
    };
    // A call in flight at SIGTERM completes; then the process exits 0.
    let (mut child, port) = start_with(&config, &[]);
    let call = std::thread::spawn(move || chat_with(port, "sk-serve-test", "gpt-4o").0);
    std::thread::sleep(Duration::from_millis(200));
    stop(&child);
    assert_eq!(call.join().unwrap(), 200, "the call in flight finished");
    assert!(child.wait().unwrap().success());

    // A call that would outlast the drain: the process stops after --drain anyway.
    let (mut child, port) = start_with(&config, &["--drain", "0.5"]);
    let _glacial = std::thread::spawn(move || {
        let body = r#"{"model": "glacial", "messages": []}"#;
        exchange(
            port,
            "POST",
            "/v1/chat/completions",
            Some("sk-serve-test"),
            body,
        )
    });
    // Time for the call to reach the router (on a loaded machine 200 ms was not always
    // enough); the call itself lasts 60 s, so it is still in flight at SIGTERM.
    std::thread::sleep(Duration::from_millis(1000));
    let stopping = Instant::now();
    stop(&child);
    assert!(child.wait().unwrap().success());
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "{:?}",
        stopping.elapsed()
    );
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        stderr.contains("still in flight after the drain"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_same_redis_written_as_host_and_port_reloads() {
    let Some(url) = ferrolite_cache::testing::redis_url() else {
        return;
    };
    let Some((host, port)) = url
        .strip_prefix("redis://")
        .and_then(|a| a.trim_end_matches('/').split_once(':'))
        .filter(|(h, p)| !h.contains('@') && p.parse::<u16>().is_ok())
    else {
        return; // a URL with a password or a database: not this test's
    };
    let dir = std::env::temp_dir().join(format!("ferrolite-same-redis-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    let with = |redis: &str, reply: &str| {
        CONFIG
            .replace("served by ferrolite", reply)
            .replace("router_settings:\n", &format!("router_settings:\n{redis}"))
    };
    std::fs::write(&config, with(&format!("  redis_url: {url}\n"), "first")).unwrap();
    let (child, gateway) = start_with(&config, &[]);
    assert_eq!(ask(gateway), "first");
    std::fs::write(
        &config,
        with(
            &format!("  redis_host: {host}\n  redis_port: {port}\n"),
            "same redis",
        ),
    )
    .unwrap();
    hangup(&child);
    let reloaded = Instant::now();
    while ask(gateway) != "same redis" {
        assert!(
            reloaded.elapsed() < Duration::from_secs(10),
            "never reloaded"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, _, stderr) = stop_and_collect(child);
    assert!(status.success(), "{stderr}");
    assert!(!stderr.contains("reload refused"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_changed_config_file_is_reloaded_once_without_a_signal() {
    let dir = std::env::temp_dir().join(format!("ferrolite-watch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let (child, port) = start_with(&config, &[]);
    assert_eq!(ask(port), "served by ferrolite");
    std::thread::sleep(Duration::from_millis(1100)); // a new modification time
    std::fs::write(
        &config,
        CONFIG.replace("served by ferrolite", "changed on disk"),
    )
    .unwrap();
    let changed = Instant::now();
    while ask(port) != "changed on disk" {
        assert!(
            changed.elapsed() < Duration::from_secs(10),
            "never reloaded"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(2500));
    let (status, stdout, stderr) = stop_and_collect(child);
    assert!(status.success(), "{stderr}");
    let log = format!("{stdout}{stderr}");
    assert_eq!(count(&log, "gateway reloaded"), 1, "{log}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_cooldown_set_through_one_gateway_is_honoured_by_the_other_within_150_ms() {
    let Some(url) = ferrolite_cache::testing::redis_url() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("ferrolite-cool-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
model_list:
  - model_name: g
    litellm_params: {{model: openai/a, mock_response: litellm.RateLimitError}}
    model_info: {{id: limited}}
  - model_name: g
    litellm_params: {{model: openai/b, mock_response: ok}}
    model_info: {{id: fine}}
router_settings:
  num_retries: 3
  cooldown_time: 60
  redis_url: {url}
general_settings:
  master_key: sk-serve-test
ferrolite_settings:
  redis_key_prefix: "cool-{}:"
"#,
            std::process::id()
        ),
    )
    .unwrap();
    let (mut a, port_a) = start_with(&config, &[]);
    let (mut b, port_b) = start_with(&config, &[]);
    // Through gateway a, until one call has met the rate-limited deployment (a 429 with a
    // sibling cools it down at once; the retry answers from the other).
    let mut met = false;
    for _ in 0..30 {
        let (status, head) = chat_with(port_a, "sk-serve-test", "g");
        assert_eq!(status, 200, "{head}");
        if head.contains("x-litellm-attempted-retries: 1") {
            met = true;
            break;
        }
    }
    assert!(met, "gateway a never picked the rate-limited deployment");
    std::thread::sleep(Duration::from_millis(150));
    for _ in 0..20 {
        let (status, head) = chat_with(port_b, "sk-serve-test", "g");
        assert_eq!(status, 200, "{head}");
        assert!(head.contains("x-litellm-model-id: fine"), "{head}");
        assert!(
            head.contains("x-litellm-attempted-retries: 0"),
            "b never tried it: {head}"
        );
    }
    for child in [&mut a, &mut b] {
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(child.wait().unwrap().success());
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Stops `child` with SIGTERM and returns its exit status, stdout and stderr.
fn stop_and_collect(mut child: std::process::Child) -> (std::process::ExitStatus, String, String) {
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let status = child.wait().unwrap();
    let (mut stdout, mut stderr) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status, stdout, stderr)
}

#[test]
fn text_logs_written_to_a_pipe_carry_no_ansi_escape_bytes() {
    let dir = std::env::temp_dir().join(format!("ferrolite-ansi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let (child, port) = start_with(&config, &[]);
    assert_eq!(ask(port), "served by ferrolite");
    let (status, _, stderr) = stop_and_collect(child);
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("answered"), "the call was logged: {stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "escape bytes in a piped log: {stderr:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// How a scripted upstream answers health-check probes.
#[derive(Clone, Copy, PartialEq)]
enum Probes {
    Pass,
    Fail,
    /// Never answer (within the test).
    Hang,
}

/// A scripted OpenAI-compatible upstream on loopback: chat calls whose message is "hi" are
/// answered with `name`; any other request is a health-check probe, counted, and answered 503
/// when `sick`. Its port and probe count.
fn upstream(
    name: &'static str,
    sick: bool,
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    upstream_probed(name, if sick { Probes::Fail } else { Probes::Pass })
}

/// [`upstream`], with probes answered as `probes` says.
fn upstream_probed(
    name: &'static str,
    probes_are: Probes,
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let probes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = std::sync::Arc::clone(&probes);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let counted = std::sync::Arc::clone(&counted);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let Some((_, body)) = common::read_message(&mut reader) else {
                    return;
                };
                let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let probe = body["messages"][0]["content"] != "hi";
                if probe {
                    counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if probes_are == Probes::Hang {
                        std::thread::sleep(Duration::from_secs(30));
                        return;
                    }
                }
                let (status, answer) = if probe && probes_are == Probes::Fail {
                    (
                        "503 Service Unavailable",
                        serde_json::json!({"error": {"message": "down"}}),
                    )
                } else {
                    (
                        "200 OK",
                        serde_json::json!({
                            "id": "chatcmpl-1", "object": "chat.completion", "created": 1,
                            "model": body["model"],
                            "choices": [{"index": 0, "finish_reason": "stop",
                                "message": {"role": "assistant", "content": name}}],
                            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
                        }),
                    )
                };
                let answer = answer.to_string();
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                    answer.len()
                );
            });
        }
    });
    (port, probes)
}

/// A config with a group `g` of two deployments on scripted upstreams, `sick` and `fine`, and
/// `extra` appended.
fn health_config(sick: u16, fine: u16, extra: &str) -> String {
    format!(
        r#"
model_list:
  - model_name: g
    litellm_params: {{model: openai/m, api_base: "http://127.0.0.1:{sick}/v1", api_key: sk-up}}
    model_info: {{id: sick}}
  - model_name: g
    litellm_params: {{model: openai/m, api_base: "http://127.0.0.1:{fine}/v1", api_key: sk-up}}
    model_info: {{id: fine}}
{extra}"#
    )
}

/// Waits until `probes` counts at least one probe, then until its round is recorded.
fn after_a_round_of_checks(probes: &std::sync::atomic::AtomicUsize) {
    let started = Instant::now();
    while probes.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no health check reached the upstream"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
}

/// Which deployments answered 20 calls of `g` through the gateway on `port`.
fn answered_by(port: u16) -> std::collections::BTreeSet<String> {
    (0..20)
        .map(|_| {
            let (status, head) = chat_with(port, "sk-serve-test", "g");
            assert_eq!(status, 200, "{head}");
            head.lines()
                .find_map(|l| l.strip_prefix("x-litellm-model-id: "))
                .unwrap()
                .trim()
                .to_string()
        })
        .collect()
}

#[test]
fn background_health_checks_keep_calls_off_a_deployment_that_fails_its_check() {
    let dir = std::env::temp_dir().join(format!("ferrolite-health-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    let (sick, probes) = upstream("sick", true);
    let (fine, _) = upstream("fine", false);
    std::fs::write(
        &config,
        health_config(
            sick,
            fine,
            r"
router_settings:
  num_retries: 0
general_settings:
  master_key: sk-serve-test
  background_health_checks: true
  enable_health_check_routing: true
  health_check_interval: 60
",
        ),
    )
    .unwrap();
    let (child, port) = start_with(&config, &[]);
    after_a_round_of_checks(&probes);
    let answered = answered_by(port);
    let (status, _, stderr) = stop_and_collect(child);
    assert!(status.success(), "{stderr}");
    assert_eq!(
        answered,
        ["fine".to_string()].into(),
        "the deployment that failed its check was picked: {stderr}"
    );
    assert!(stderr.contains("unhealthy: sick"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_health_check_that_outlasts_its_health_check_timeout_fails() {
    let dir = std::env::temp_dir().join(format!("ferrolite-hang-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    let (hanging, probes) = upstream_probed("hanging", Probes::Hang);
    let (fine, _) = upstream("fine", false);
    let text = health_config(
        hanging,
        fine,
        r"
router_settings:
  num_retries: 0
general_settings:
  master_key: sk-serve-test
  background_health_checks: true
  enable_health_check_routing: true
",
    )
    .replace(
        "model_info: {id: sick}",
        "model_info: {id: sick, health_check_timeout: 0.5}",
    );
    std::fs::write(&config, text).unwrap();
    let (child, port) = start_with(&config, &[]);
    after_a_round_of_checks(&probes);
    std::thread::sleep(Duration::from_millis(700)); // the check's timeout, and its record
    let answered = answered_by(port);
    let (status, _, stderr) = stop_and_collect(child);
    assert!(status.success(), "{stderr}");
    assert_eq!(answered, ["fine".to_string()].into(), "{stderr}");
    assert!(stderr.contains("unhealthy: sick"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_deployment_with_disable_background_health_check_is_never_probed_nor_skipped() {
    let dir = std::env::temp_dir().join(format!("ferrolite-unchecked-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    let (sick, sick_probes) = upstream("sick", true);
    let (fine, fine_probes) = upstream("fine", false);
    let text = health_config(
        sick,
        fine,
        r"
router_settings:
  num_retries: 0
general_settings:
  master_key: sk-serve-test
  background_health_checks: true
  enable_health_check_routing: true
",
    )
    .replace(
        "model_info: {id: sick}",
        "model_info: {id: sick, disable_background_health_check: true}",
    );
    std::fs::write(&config, text).unwrap();
    let (child, port) = start_with(&config, &[]);
    after_a_round_of_checks(&fine_probes);
    let answered = answered_by(port);
    let (status, _, stderr) = stop_and_collect(child);
    assert!(status.success(), "{stderr}");
    assert_eq!(
        sick_probes.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "probed: {stderr}"
    );
    assert!(answered.contains("sick"), "skipped: {answered:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_failed_health_check_run_by_one_gateway_steers_another_on_the_same_redis() {
    let Some(url) = ferrolite_cache::testing::redis_url() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("ferrolite-health2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (sick, probes) = upstream("sick", true);
    let (fine, _) = upstream("fine", false);
    let shared = format!(
        "
router_settings:
  num_retries: 0
  redis_url: {url}
ferrolite_settings:
  redis_key_prefix: \"health-{}:\"
general_settings:
  master_key: sk-serve-test
  enable_health_check_routing: true
  health_check_interval: 60
",
        std::process::id()
    );
    // a runs the checks; b only routes on them.
    let checker = dir.join("checker.yaml");
    let router = dir.join("router.yaml");
    std::fs::write(
        &checker,
        health_config(
            sick,
            fine,
            &format!("{shared}  background_health_checks: true\n"),
        ),
    )
    .unwrap();
    std::fs::write(
        &router,
        health_config(
            sick,
            fine,
            &format!("{shared}  background_health_checks: false\n"),
        ),
    )
    .unwrap();
    let (b, port_b) = start_with(&router, &[]);
    let (a, _) = start_with(&checker, &[]);
    after_a_round_of_checks(&probes);
    let seen_by_b = answered_by(port_b);
    for child in [a, b] {
        let (status, _, stderr) = stop_and_collect(child);
        assert!(status.success(), "{stderr}");
    }
    assert_eq!(seen_by_b, ["fine".to_string()].into());
    let _ = std::fs::remove_dir_all(dir);
}

const MOCKS: &str = r#"
model_list:
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o, mock_response: "one two three"}
  - model_name: embed
    litellm_params: {model: openai/text-embedding-3-small, mock_response: [0.5, 0.25]}
  - model_name: stuck
    litellm_params: {model: openai/gpt-4o-mini, mock_timeout: true, timeout: 0.3}
router_settings:
  num_retries: 0
general_settings:
  master_key: sk-serve-test
"#;

/// Starts `ferrolite serve` over [`MOCKS`]; the child, its port and the directory to remove.
fn start_mocks(name: &str) -> (std::process::Child, u16, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("ferrolite-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(&config, MOCKS).unwrap();
    let (child, port) = start_with(&config, &[]);
    (child, port, dir)
}

/// POSTs `body` to `path` with the master key: the status and the body (de-chunked).
fn post(port: u16, path: &str, body: &serde_json::Value) -> (u16, String) {
    let (status, head, text) =
        exchange(port, "POST", path, Some("sk-serve-test"), &body.to_string());
    if !head.contains("transfer-encoding: chunked") {
        return (status, text);
    }
    let mut rest = text.as_str();
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
    (status, out)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn the_mock_answers_n_choices_with_an_id_of_its_own_and_the_time_of_the_call() {
    let (child, port, dir) = start_mocks("mock-n");
    let ask = serde_json::json!({"model": "gpt-4o", "n": 3, "messages": [{"role": "user", "content": "hi"}]});
    let (status, text) = post(port, "/v1/chat/completions", &ask);
    assert_eq!(status, 200, "{text}");
    let first: serde_json::Value = serde_json::from_str(&text).unwrap();
    let choices = first["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3, "{text}");
    for (i, choice) in choices.iter().enumerate() {
        assert_eq!(choice["index"], i, "{text}");
        assert_eq!(choice["message"]["role"], "assistant");
        assert_eq!(choice["message"]["content"], "one two three");
    }
    let created = first["created"].as_u64().unwrap();
    assert!(unix_now().abs_diff(created) <= 5, "created {created}");
    let (_, text) = post(port, "/v1/chat/completions", &ask);
    let second: serde_json::Value = serde_json::from_str(&text).unwrap();
    let id = first["id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-"), "{id}");
    assert_ne!(second["id"], first["id"], "each answer has its own id");
    let (status, _, stderr) = stop_and_collect(child);
    assert!(status.success(), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

/// The `data:` events of a server-sent event stream, without `[DONE]`.
fn events(text: &str) -> Vec<serde_json::Value> {
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str(e).unwrap())
        .collect()
}

#[test]
fn a_mock_stream_carries_n_indexes_one_id_and_the_role_on_its_first_chunk() {
    let (child, port, dir) = start_mocks("mock-stream");
    let ask = serde_json::json!({"model": "gpt-4o", "n": 2, "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let (status, text) = post(port, "/v1/chat/completions", &ask);
    assert_eq!(status, 200, "{text}");
    let chunks: Vec<serde_json::Value> = events(&text)
        .into_iter()
        .filter(|c| !c["choices"].as_array().unwrap().is_empty())
        .collect();
    assert!(chunks.len() >= 2, "{text}");
    let mut texts = [String::new(), String::new()];
    for (n, chunk) in chunks.iter().enumerate() {
        assert_eq!(chunk["id"], chunks[0]["id"], "one id per stream: {text}");
        assert!(chunk["id"].as_str().unwrap().starts_with("chatcmpl-"));
        assert!(unix_now().abs_diff(chunk["created"].as_u64().unwrap()) <= 5);
        let choices = chunk["choices"].as_array().unwrap();
        assert_eq!(choices.len(), 2, "{text}");
        for (i, choice) in choices.iter().enumerate() {
            assert_eq!(choice["index"], i, "{text}");
            let role = &choice["delta"]["role"];
            if n == 0 {
                assert_eq!(role, "assistant", "{text}");
            } else {
                assert!(role.is_null(), "the role only on the first chunk: {text}");
            }
            texts[i].push_str(choice["delta"]["content"].as_str().unwrap_or(""));
        }
    }
    assert_eq!(texts, ["one two three", "one two three"]);
    let (status, _, stderr) = stop_and_collect(child);
    assert!(status.success(), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_mock_embeds_every_input_with_a_mock_response_vector() {
    let (child, port, dir) = start_mocks("mock-embed");
    // The deployment's vector, one per input.
    let (status, text) = post(
        port,
        "/v1/embeddings",
        &serde_json::json!({"model": "embed", "input": ["a", "b", "c"]}),
    );
    assert_eq!(status, 200, "{text}");
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 3, "{text}");
    for (i, item) in data.iter().enumerate() {
        assert_eq!(item["index"], i);
        assert_eq!(item["embedding"], serde_json::json!([0.5, 0.25]));
    }
    // The request's own vector wins; a single string is one input.
    let (status, text) = post(
        port,
        "/v1/embeddings",
        &serde_json::json!({"model": "embed", "input": "one", "mock_response": [1.0, 2.0, 3.0]}),
    );
    assert_eq!(status, 200, "{text}");
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["data"].as_array().unwrap().len(), 1, "{text}");
    assert_eq!(
        body["data"][0]["embedding"],
        serde_json::json!([1.0, 2.0, 3.0])
    );
    let (status, _, stderr) = stop_and_collect(child);
    assert!(status.success(), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn mock_timeout_fails_the_call_as_a_timeout_after_the_timeout() {
    let (child, port, dir) = start_mocks("mock-timeout");
    // The deployment's mock_timeout, after its timeout of 0.3 s.
    let started = Instant::now();
    let (status, text) = post(
        port,
        "/v1/chat/completions",
        &serde_json::json!({"model": "stuck", "messages": [{"role": "user", "content": "hi"}]}),
    );
    let took = started.elapsed();
    assert_eq!(status, 408, "{text}");
    assert!(
        text.contains("timeout") || text.contains("Timeout"),
        "{text}"
    );
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // A request's own mock_timeout and timeout.
    let started = Instant::now();
    let (status, text) = post(
        port,
        "/v1/chat/completions",
        &serde_json::json!({"model": "gpt-4o", "mock_timeout": true, "timeout": 0.2,
            "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(status, 408, "{text}");
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );
    let (status, _, stderr) = stop_and_collect(child);
    assert!(status.success(), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_last_answered_line_is_in_the_log_after_sigterm() {
    // Log lines are written by a thread of their own, in batches: SIGTERM right after the last
    // answer must still find that answer's line written when the process has exited.
    let dir = std::env::temp_dir().join(format!("ferrolite-lastline-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let (mut child, port) = start_with(&config, &[]);
    let mut last_id = String::new();
    for _ in 0..50 {
        let (status, head) = chat_with(port, "sk-serve-test", "gpt-4o");
        assert_eq!(status, 200, "{head}");
        last_id = head
            .lines()
            .find_map(|l| l.strip_prefix("x-request-id: "))
            .unwrap()
            .trim()
            .to_string();
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "exit {status:?}");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let answered = stderr
        .lines()
        .filter(|l| l.contains("answered status=200"))
        .count();
    assert_eq!(answered, 50, "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.contains(&format!("request{{id={last_id}}}")) && l.contains("answered")),
        "no line for {last_id}: {stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
