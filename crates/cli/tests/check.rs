//! `ferrolite check` as a process, beside `ferrolite serve`: a config is validated the same way
//! by check, at startup and on reload; values come from the environment as LiteLLM reads them;
//! deployments ferrolite cannot call are listed (check) or refused (serve); and every config
//! this repository shows its users (examples/, the YAML in the docs) passes check.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use ferrolite_cache::testing::free_port;

/// A fresh directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrolite-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `ferrolite ARGS` with `env` set, to completion (serve is bounded by its exit on a bad
/// config).
fn ferrolite(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferrolite"));
    command.args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const GOOD: &str = r#"
model_list:
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o, mock_response: "good"}
"#;

const MALFORMED_REDIS: &str = r#"
model_list:
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o, mock_response: "bad"}
router_settings:
  redis_url: "redis//:hunter2-secret@127.0.0.1:6379"
"#;

/// Regression (issue 16): a `redis_url` missing its `:` passed `check` and reload (neither
/// connected) and failed only at startup, with the password in the message.
#[test]
fn check_startup_and_reload_refuse_a_malformed_redis_url_alike_without_the_password() {
    let dir = scratch("malformed-redis");
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, MALFORMED_REDIS).unwrap();
    let expected = "router_settings.redis_url: invalid Redis URL `***@127.0.0.1:6379`: the \
                    scheme must be redis://, rediss://, redis-cluster:// or redis-sentinel://, \
                    got none";

    let check = ferrolite(&["check", "--config", bad.to_str().unwrap()], &[]);
    assert!(!check.status.success(), "check passed it");
    let check_error = text(&check.stderr);
    assert!(check_error.contains(expected), "{check_error}");

    let port = free_port().to_string();
    let serve = ferrolite(
        &["serve", "--config", bad.to_str().unwrap(), "--port", &port],
        &[],
    );
    assert!(!serve.status.success(), "serve started");
    let serve_error = text(&serve.stderr);
    assert!(serve_error.contains(expected), "{serve_error}");

    // Reload: a running gateway is handed the same file.
    let live = dir.join("live.yaml");
    std::fs::write(&live, GOOD).unwrap();
    let (mut child, _port) = common::spawn_serve(&live, &[], Stdio::piped(), Stdio::piped());
    std::fs::write(&live, MALFORMED_REDIS).unwrap();
    let kill = |signal: &str| {
        assert!(
            Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status()
                .unwrap()
                .success()
        );
    };
    kill("-HUP");
    std::thread::sleep(Duration::from_millis(1500));
    kill("-TERM");
    let status = child.wait().unwrap();
    let mut reload_error = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut reload_error)
        .unwrap();
    assert!(status.success(), "{reload_error}");
    assert!(reload_error.contains(expected), "{reload_error}");
    for output in [&check_error, &serve_error, &reload_error] {
        assert!(!output.contains("hunter2"), "{output}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Regression (issue 16): only strings could come from `os.environ/NAME`; a port, a limit, a
/// count or a flag from the environment was a type error.
#[test]
fn numbers_and_booleans_come_from_the_environment_converted_and_checked() {
    let dir = scratch("env-numbers");
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        r#"
model_list:
  - model_name: g
    litellm_params:
      model: openai/gpt-4o
      mock_response: hi
      rpm: os.environ/T16_RPM
      tpm: os.environ/T16_TPM
      weight: os.environ/T16_WEIGHT
router_settings:
  redis_host: os.environ/T16_REDIS_HOST
  redis_port: os.environ/T16_REDIS_PORT
  num_retries: os.environ/T16_RETRIES
  enable_tag_filtering: os.environ/T16_TAGS
litellm_settings:
  cache: os.environ/T16_CACHE
"#,
    )
    .unwrap();
    let env = [
        ("T16_RPM", "120"),
        ("T16_TPM", "90000"),
        ("T16_WEIGHT", "2.5"),
        ("T16_REDIS_HOST", "127.0.0.1"),
        ("T16_REDIS_PORT", "6380"),
        ("T16_RETRIES", "4"),
        ("T16_TAGS", "True"),
        ("T16_CACHE", "true"),
    ];
    let out = ferrolite(&["check", "--config", config.to_str().unwrap()], &env);
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(shown.contains("num_retries 4"), "{shown}");
    assert!(
        shown.contains("state: Redis redis://127.0.0.1:6380"),
        "{shown}"
    );
    assert!(shown.contains("rpm 120, tpm 90000"), "{shown}");
    assert!(shown.contains("response cache: on"), "{shown}");

    // A value that is not one: the field and the variable are named, the value is not shown.
    let mut wrong = env;
    wrong[4] = ("T16_REDIS_PORT", "sk-not-a-port-value");
    let out = ferrolite(&["check", "--config", config.to_str().unwrap()], &wrong);
    assert!(!out.status.success());
    let error = text(&out.stderr);
    assert!(
        error.contains(
            "router_settings.redis_port: expected an integer from 0 to 65535, got the environment \
             variable `T16_REDIS_PORT` (named by `os.environ/T16_REDIS_PORT`), whose value is not \
             one (the value is not shown) (line 12, column 15)"
        ),
        "{error}"
    );
    assert!(!error.contains("sk-not-a-port-value"), "{error}");
    let _ = std::fs::remove_dir_all(dir);
}

const UNSUPPORTED: &str = r#"
model_list:
  - model_name: claude
    litellm_params: {model: sagemaker/my-endpoint}
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o, mock_response: hi}
"#;

/// Regression (issue 16): a sagemaker deployment was accepted and sent OpenAI's protocol.
#[test]
fn check_lists_deployments_it_cannot_call_and_serve_refuses_them_unless_told_to_skip() {
    let dir = scratch("unsupported");
    let config = dir.join("config.yaml");
    std::fs::write(&config, UNSUPPORTED).unwrap();
    let out = ferrolite(&["check", "--config", config.to_str().unwrap()], &[]);
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        shown.contains("(not callable: provider sagemaker is not implemented)"),
        "{shown}"
    );
    assert!(
        shown.contains("deployments ferrolite cannot call yet (`ferrolite serve` refuses to start"),
        "{shown}"
    );

    let port = free_port().to_string();
    let out = ferrolite(
        &[
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--port",
            &port,
        ],
        &[],
    );
    assert!(!out.status.success(), "serve started");
    let error = text(&out.stderr);
    assert!(
        error.contains(
            "model_list[0]: ferrolite cannot call 1 deployment(s) yet: model_list[0] (claude, id "
        ),
        "{error}"
    );
    assert!(
        error.contains("not callable: provider sagemaker is not implemented"),
        "{error}"
    );

    // Told to skip: serve starts without them, and says so once per deployment.
    std::fs::write(
        &config,
        format!("{UNSUPPORTED}ferrolite_settings:\n  skip_unsupported_deployments: true\n"),
    )
    .unwrap();
    let (mut child, _port) = common::spawn_serve(&config, &[], Stdio::piped(), Stdio::piped());
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("(1 model groups)"), "{stdout}");
    assert_eq!(
        stderr
            .matches("not callable: provider sagemaker is not implemented; left out of routing")
            .count(),
        1,
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The whole configs (with a `model_list`) in fenced YAML blocks of a Markdown file.
fn yaml_configs(markdown: &str) -> Vec<(usize, String)> {
    let mut configs = Vec::new();
    let mut block: Option<(usize, String)> = None;
    for (n, line) in markdown.lines().enumerate() {
        match &mut block {
            None if line.trim_start().starts_with("```yaml") || line.trim_start() == "```yml" => {
                block = Some((n + 1, String::new()));
            }
            Some((start, text)) if line.trim_start().starts_with("```") => {
                if text.contains("model_list:") {
                    configs.push((*start, std::mem::take(text)));
                }
                block = None;
            }
            Some((_, text)) => {
                text.push_str(line);
                text.push('\n');
            }
            None => {}
        }
    }
    configs
}

#[test]
fn every_example_config_and_every_whole_config_in_the_docs_passes_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut checked = Vec::new();
    let mut failed = Vec::new();
    let mut examples: Vec<PathBuf> = std::fs::read_dir(root.join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    examples.sort();
    for path in examples {
        let name = path.display().to_string();
        match ferrolite_cli::check_command(&path) {
            Ok(_) => checked.push(name),
            Err(e) => failed.push(format!("{name}: {e}")),
        }
    }
    let dir = scratch("doc-snippets");
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    docs.push(root.join("README.md"));
    for doc in docs {
        let markdown = std::fs::read_to_string(&doc).unwrap();
        for (line, yaml) in yaml_configs(&markdown) {
            let name = format!("{}:{line}", doc.display());
            let file = dir.join(format!("snippet-{}.yaml", checked.len()));
            std::fs::write(&file, &yaml).unwrap();
            match ferrolite_cli::check_command(&file) {
                Ok(_) => checked.push(name),
                Err(e) => failed.push(format!("{name}: {e}")),
            }
        }
    }
    let _ = std::fs::remove_dir_all(dir);
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    assert!(
        checked.iter().any(|c| c.ends_with("config.yaml"))
            && checked.iter().any(|c| c.contains("configuration.md")),
        "{checked:?}"
    );
}

/// `check` names the protocol each deployment is called in: OpenAI's for `openai/`, Anthropic's
/// Messages API for `anthropic/` (issue 20), never for a mocked one.
#[test]
fn check_shows_the_protocol_each_deployment_is_called_in() {
    let dir = scratch("check-protocols");
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        r#"
model_list:
  - model_name: gpt
    litellm_params: {model: openai/gpt-4o, api_key: sk-test}
  - model_name: claude
    litellm_params: {model: anthropic/claude-sonnet-4-5, api_key: sk-ant-test}
  - model_name: mocked
    litellm_params: {model: anthropic/claude-haiku-4-5, mock_response: "hi"}
"#,
    )
    .unwrap();
    let output = ferrolite(&["check", "--config", config.to_str().unwrap()], &[]);
    let shown = text(&output.stdout);
    assert!(output.status.success(), "{shown}{}", text(&output.stderr));
    let line = |model: &str| {
        shown
            .lines()
            .find(|l| l.contains(model))
            .unwrap_or_else(|| panic!("no line for {model}: {shown}"))
            .to_string()
    };
    assert!(line("openai/gpt-4o").contains("(openai_chat)"), "{shown}");
    assert!(
        line("anthropic/claude-sonnet-4-5").contains("(anthropic_messages)"),
        "{shown}"
    );
    assert!(
        line("anthropic/claude-haiku-4-5").contains("(mock)"),
        "{shown}"
    );
    assert!(!shown.contains("sk-ant-test"), "{shown}");
}

/// Seconds given on the command line that no duration holds are refused with the flag named
/// (they panicked in `Duration::from_secs_f64`).
#[test]
fn seconds_beyond_a_duration_are_refused_naming_the_flag() {
    let config = scratch("seconds-beyond").join("config.yaml");
    std::fs::write(&config, GOOD).unwrap();
    let config = config.to_str().unwrap();
    for (args, flag) in [
        (
            vec![
                "serve", "--config", config, "--port", "0", "--drain", "1e300",
            ],
            "--drain",
        ),
        (
            vec!["simulate", "--config", config, "--duration", "1e300"],
            "--duration",
        ),
        (
            vec![
                "status",
                "--url",
                "http://127.0.0.1:9",
                "--timeout",
                "1e300",
            ],
            "--timeout",
        ),
        (
            vec!["top", "--url", "http://127.0.0.1:9", "--interval", "1e300"],
            "--interval",
        ),
    ] {
        let out = ferrolite(&args, &[]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "{flag}: expected a number of seconds >= 0 that fits a duration, got 1e300"
            )),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
