//! `ferrolite serve` as a process: an OpenAI client routes through it, and SIGTERM stops it
//! cleanly (exit 0).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::types::{ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequestArgs};

const CONFIG: &str = r#"
model_list:
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o, mock_response: "served by ferrolite"}
general_settings:
  master_key: sk-serve-test
"#;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn serve_answers_an_openai_client_and_stops_cleanly_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("ferrolite-serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrolite"))
        .args([
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--port",
            &port.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the gateway never listened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let answer = runtime.block_on(async {
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
        client.chat().create(request).await
    });
    let answer = answer.unwrap();
    assert_eq!(
        answer.choices[0].message.content.as_deref(),
        Some("served by ferrolite")
    );
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
    let _ = std::fs::remove_dir_all(dir);
}
