//! Secrets are never printed: every secret field of the config, given each wrong shape with a
//! recognisable value, is looked for in every channel ferrolite writes to — the config error
//! (`Display` and `Debug`), `ferrolite check`'s stdout and stderr, `ferrolite serve`'s output at
//! startup (text and JSON logs), a refused reload's log, the gateway's error bodies and
//! `/metrics`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::exchange_raw;
use ferrolite_cache::testing::free_port;

/// The text of every secret in the wrong-shape configs.
const SECRET: &str = "zq-SEKRET-7431";
/// The number-shaped secret.
const SECRET_NUMBER: &str = "736251948057";

const BASE: &str = "model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      mock_response: ok
";

/// Every secret field of the config: a name, and the YAML appended to [`BASE`] with `@@` where
/// the value goes and the indentation of the field's key.
const FIELDS: &[(&str, &str, usize)] = &[
    ("api_key", "      api_key: @@\n", 6),
    (
        "extra_headers",
        "      extra_headers:\n        X-Secret: @@\n",
        8,
    ),
    ("headers", "      headers:\n        X-Secret: @@\n", 8),
    (
        "aws_secret_access_key",
        "      aws_secret_access_key: @@\n",
        6,
    ),
    ("aws_session_token", "      aws_session_token: @@\n", 6),
    ("vertex_credentials", "      vertex_credentials: @@\n", 6),
    ("master_key", "general_settings:\n  master_key: @@\n", 2),
    ("redis_url", "router_settings:\n  redis_url: @@\n", 2),
    (
        "redis_password",
        "router_settings:\n  redis_host: 127.0.0.1\n  redis_port: 6379\n  redis_password: @@\n",
        2,
    ),
    (
        "cache_params.redis_url",
        "litellm_settings:\n  cache: true\n  cache_params:\n    type: redis\n    redis_url: @@\n",
        4,
    ),
    (
        "cache_params.url",
        "litellm_settings:\n  cache: true\n  cache_params:\n    type: redis\n    url: @@\n",
        4,
    ),
    (
        "cache_params.password",
        "litellm_settings:\n  cache: true\n  cache_params:\n    host: 127.0.0.1\n    password: @@\n",
        4,
    ),
    (
        "ferrolite_settings.redis_url",
        "ferrolite_settings:\n  redis_url: @@\n",
        2,
    ),
    (
        "api_keys[].key",
        "ferrolite_settings:\n  api_keys:\n    - name: k\n      key: @@\n",
        6,
    ),
];

/// The wrong shapes: a name and the value written at indentation `indent`; the text that must
/// never be printed.
fn shapes(indent: usize) -> Vec<(&'static str, String, &'static str)> {
    let inner = " ".repeat(indent + 2);
    vec![
        (
            "block map",
            format!("\n{inner}inner: {SECRET}\n{inner}other: {SECRET}"),
            SECRET,
        ),
        ("flow map", format!("{{inner: {SECRET}}}"), SECRET),
        ("block list", format!("\n{inner}- {SECRET}"), SECRET),
        ("flow list", format!("[{SECRET}, two]"), SECRET),
        ("number", SECRET_NUMBER.to_string(), SECRET_NUMBER),
        ("bool", "false".to_string(), "got false"),
        ("nested", format!("{{a: [{{b: {SECRET}}}]}}"), SECRET),
    ]
}

/// Every (label, config, secret) case.
fn cases() -> Vec<(String, String, &'static str)> {
    let mut out = Vec::new();
    for (field, template, indent) in FIELDS {
        for (shape, value, secret) in shapes(*indent) {
            out.push((
                format!("{field} as {shape}"),
                format!("{BASE}{}", template.replace("@@", &value)),
                secret,
            ));
        }
    }
    out
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrolite-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn signal(child: &std::process::Child, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status();
}

/// `ferrolite serve` on `config` with `extra` arguments, until it exits (a refused config) or
/// listens (then it is stopped): its stdout and stderr.
fn serve_output(config: &Path, extra: &[&str]) -> String {
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrolite"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .args(["--port", &port.to_string()])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            signal(&child, "-TERM");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "serve neither exited nor listened"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait().unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    out
}

/// A running `ferrolite serve` whose stderr is collected as it comes.
struct Gateway {
    child: std::process::Child,
    port: u16,
    log: Arc<Mutex<String>>,
}

impl Gateway {
    fn start(config: &Path, extra: &[&str]) -> Gateway {
        let port = free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_ferrolite"))
            .args(["serve", "--config", config.to_str().unwrap()])
            .args(["--port", &port.to_string()])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut pipe = pipe;
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    log.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the gateway never listened: {}",
                log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Gateway { child, port, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// How many reloads it has applied or refused so far.
    fn reloads(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("reload refused") || l.contains("gateway reloaded"))
            .count()
    }

    /// Stops it; everything it wrote.
    fn stop(mut self) -> String {
        signal(&self.child, "-TERM");
        self.child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        self.log()
    }
}

#[test]
fn a_secret_field_of_the_wrong_shape_is_never_printed_by_the_config_error_check_or_serve() {
    let dir = scratch("secret-shapes");
    let config = dir.join("config.yaml");
    let mut leaks = Vec::new();
    for (label, yaml, secret) in cases() {
        let mut channels: Vec<(&str, String)> = Vec::new();
        match ferrolite::Config::from_yaml(&yaml) {
            Err(e) => {
                channels.push(("error (Display)", e.to_string()));
                channels.push(("error (Debug)", format!("{e:?}")));
            }
            Ok(loaded) => channels.push(("config (Debug)", format!("{loaded:?}"))),
        }
        std::fs::write(&config, &yaml).unwrap();
        let check = Command::new(env!("CARGO_BIN_EXE_ferrolite"))
            .args(["check", "--config", config.to_str().unwrap()])
            .output()
            .unwrap();
        channels.push((
            "check stdout",
            String::from_utf8_lossy(&check.stdout).into(),
        ));
        channels.push((
            "check stderr",
            String::from_utf8_lossy(&check.stderr).into(),
        ));
        channels.push(("serve (text log)", serve_output(&config, &[])));
        channels.push((
            "serve (JSON log)",
            serve_output(&config, &["--log-format", "json"]),
        ));
        for (channel, text) in channels {
            if text.contains(secret) {
                leaks.push(format!("{label}: {channel}: {text}"));
            }
        }
    }
    assert!(leaks.is_empty(), "{}", leaks.join("\n---\n"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_reload_refused_for_a_secret_field_of_the_wrong_shape_never_logs_its_value() {
    let dir = scratch("secret-reload");
    let config = dir.join("config.yaml");
    std::fs::write(&config, BASE).unwrap();
    for format in ["text", "json"] {
        std::fs::write(&config, BASE).unwrap();
        let gateway = Gateway::start(&config, &["--log-format", format]);
        for (label, yaml, _) in cases() {
            let before = gateway.reloads();
            std::fs::write(&config, &yaml).unwrap();
            signal(&gateway.child, "-HUP");
            let sent = Instant::now();
            while gateway.reloads() == before {
                assert!(
                    sent.elapsed() < Duration::from_secs(10),
                    "{label}: neither reloaded nor refused: {}",
                    gateway.log()
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let log = gateway.stop();
        assert!(log.contains("reload refused"), "{log}");
        for secret in [SECRET, SECRET_NUMBER, "got false"] {
            assert!(!log.contains(secret), "{format} log shows {secret}: {log}");
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_gateway_never_shows_a_configured_secret_in_error_bodies_metrics_or_its_log() {
    // An upstream that fails every call, so the gateway answers with its own error bodies.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                let _ = stream.read(&mut buf);
                let body = r#"{"error": {"message": "upstream broke", "type": "server_error"}}"#;
                let _ = write!(
                    stream,
                    "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    let dir = scratch("secret-gateway");
    let config = dir.join("config.yaml");
    let secrets = [
        "sk-deployment-zq4471",
        "hdr-zq4472",
        "xhdr-zq4473",
        "sk-master-zq4474",
        "sk-apikey-zq4475",
    ];
    std::fs::write(
        &config,
        format!(
            "model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_base: http://127.0.0.1:{upstream}/v1
      api_key: {}
      headers: {{X-Gateway-Key: {}}}
      extra_headers: {{X-Other-Key: {}}}
      num_retries: 0
general_settings:
  master_key: {}
ferrolite_settings:
  api_keys:
    - {{name: app, key: {}, models: [gpt-4o], rpm: 100}}
",
            secrets[0], secrets[1], secrets[2], secrets[3], secrets[4]
        ),
    )
    .unwrap();
    for format in ["text", "json"] {
        let gateway = Gateway::start(&config, &["--log-format", format]);
        let port = gateway.port;
        let chat = r#"{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}"#;
        let mut answers = vec![
            exchange_raw(port, "POST", "/v1/chat/completions", Some(secrets[3]), chat),
            exchange_raw(port, "POST", "/v1/chat/completions", Some(secrets[4]), chat),
            exchange_raw(port, "POST", "/v1/chat/completions", Some("sk-wrong"), chat),
            exchange_raw(port, "POST", "/v1/chat/completions", None, chat),
            exchange_raw(
                port,
                "POST",
                "/v1/chat/completions",
                Some(secrets[4]),
                r#"{"model": "ghost", "messages": [{"role": "user", "content": "hi"}]}"#,
            ),
            exchange_raw(port, "POST", "/v1/chat/completions", Some(secrets[3]), "{"),
            exchange_raw(port, "GET", "/metrics", Some(secrets[3]), ""),
            exchange_raw(port, "GET", "/metrics", None, ""),
            exchange_raw(port, "GET", "/v1/models", Some(secrets[3]), ""),
            exchange_raw(port, "GET", "/health", Some(secrets[3]), ""),
        ];
        assert!(
            answers[0].starts_with("HTTP/1.1 5") && answers[2].starts_with("HTTP/1.1 401"),
            "{answers:?}"
        );
        assert!(
            answers[6].contains("ferrolite_"),
            "metrics answered: {}",
            answers[6]
        );
        answers.push(gateway.stop());
        for answer in &answers {
            for secret in secrets {
                // The caller's own key sent in the request is not in any answer either.
                assert!(!answer.contains(secret), "{format}: {secret} in {answer}");
            }
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn check_and_serve_never_show_a_password_in_a_redis_urls_query() {
    let dir = scratch("secret-sentinel");
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "{BASE}router_settings:\n  redis_url: \"redis-sentinel://:{SECRET}@127.0.0.1:1/0?sentinelServiceName=m&sentinelPassword={SECRET_NUMBER}\"\n"
        ),
    )
    .unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_ferrolite"))
        .args(["check", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(check.status.success(), "{shown}");
    assert!(
        shown.contains("sentinelServiceName=m&sentinelPassword=***"),
        "{shown}"
    );
    let served = serve_output(&config, &[]);
    for output in [&shown, &served] {
        assert!(
            !output.contains(SECRET) && !output.contains(SECRET_NUMBER),
            "{output}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}
