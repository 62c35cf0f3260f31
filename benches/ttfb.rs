//! Time to first byte of a stream through `ferrolite serve`, translated against passed through
//! (target: a translated stream's within 1 ms of a passed-through one).
//!
//! It starts a loopback upstream in this process that streams as Anthropic's Messages API
//! (`POST /v1/messages`) and as OpenAI's chat completions (`POST /v1/chat/completions`), the
//! release `ferrolite serve` as its own process over two groups (`native`: an `anthropic/`
//! deployment, `compat`: an `openai/` one, both on that upstream), and measures from this
//! process, one request at a time, the time from sending a streamed request to the first byte
//! of the answer's body, for four paths, alternating them request by request:
//!
//! - `chat->openai`: chat completions in, OpenAI out (no translation: the floor);
//! - `messages->anthropic`: Messages in, Anthropic out (passed through untranslated);
//! - `messages->openai`: Messages in, translated to chat, OpenAI out, chunks translated back;
//! - `chat->anthropic`: chat completions in, translated to Messages, events translated back.
//!
//! ```text
//! cargo build --release -p ferrolite-cli -p ferrolite-benches --features ferrolite-benches/tools
//! ttfb [--ferrolite target/release/ferrolite] [--requests 400]
//! ```
//!
//! It prints each path's median, p90 and p99 in milliseconds. The machine is shared: compare
//! the paths of one run (they alternate, so they share its noise).

// A load that cannot set up has nothing to measure: failing loudly is right here.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The upstream's answer to one streamed call: Anthropic's events for `/v1/messages`, OpenAI's
/// chunks for anything else, in one chunked body.
fn stream_of(path: &str) -> Vec<u8> {
    let mut events = String::new();
    if path.ends_with("/messages") {
        events.push_str("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n");
        events.push_str("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
        for word in ["Hello", " there", " from", " the", " upstream"] {
            events.push_str(&format!("event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"{word}\"}}}}\n\n"));
        }
        events.push_str(
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        );
        events.push_str("event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":5}}\n\n");
        events.push_str("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    } else {
        let chunk = |delta: &str, finish: &str| {
            format!(
                "data: {{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":{finish}}}]}}\n\n"
            )
        };
        events.push_str(&chunk("{\"role\":\"assistant\",\"content\":\"\"}", "null"));
        for word in ["Hello", " there", " from", " the", " upstream"] {
            events.push_str(&chunk(&format!("{{\"content\":\"{word}\"}}"), "null"));
        }
        events.push_str(&chunk("{}", "\"stop\""));
        events.push_str("data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":5,\"total_tokens\":17}}\n\n");
        events.push_str("data: [DONE]\n\n");
    }
    let mut out =
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
            .to_vec();
    out.extend_from_slice(format!("{:x}\r\n", events.len()).as_bytes());
    out.extend_from_slice(events.as_bytes());
    out.extend_from_slice(b"\r\n0\r\n\r\n");
    out
}

/// Serves keep-alive connections: each request's head and body read, its stream written.
async fn upstream(listener: tokio::net::TcpListener) {
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let mut buffer = Vec::new();
            let mut read = [0u8; 16 * 1024];
            loop {
                // The head, then as many body bytes as it announces.
                let head_end = loop {
                    if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                        break at + 4;
                    }
                    match socket.read(&mut read).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buffer.extend_from_slice(&read[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
                let path = head
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_string();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while buffer.len() < head_end + length {
                    match socket.read(&mut read).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buffer.extend_from_slice(&read[..n]),
                    }
                }
                buffer.drain(..head_end + length);
                if socket.write_all(&stream_of(&path)).await.is_err() {
                    return;
                }
            }
        });
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut ferrolite = PathBuf::from("target/release/ferrolite");
    let mut requests = 400usize;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--ferrolite" => ferrolite = PathBuf::from(&args[i + 1]),
            "--requests" => requests = args[i + 1].parse().expect("--requests N"),
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap().port();
    tokio::spawn(upstream(listener));

    let dir = std::env::temp_dir().join(format!("ferrolite-ttfb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "model_list:\n  - model_name: native\n    litellm_params: {{model: anthropic/claude-sonnet-4-5, api_base: \"http://127.0.0.1:{up}\", api_key: sk-ant-bench}}\n  - model_name: compat\n    litellm_params: {{model: openai/gpt-4o, api_base: \"http://127.0.0.1:{up}/v1\", api_key: sk-bench}}\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let mut serve = Command::new(&ferrolite)
        .args(["serve", "--config", config.to_str().unwrap()])
        .args(["--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", ferrolite.display()));
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "never listened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let paths: [(&str, &str, serde_json::Value); 4] = [
        (
            "chat->openai",
            "/v1/chat/completions",
            serde_json::json!({"model": "compat", "stream": true, "messages": [{"role": "user", "content": "Say hello"}]}),
        ),
        (
            "messages->anthropic",
            "/v1/messages",
            serde_json::json!({"model": "native", "stream": true, "max_tokens": 64, "messages": [{"role": "user", "content": "Say hello"}]}),
        ),
        (
            "messages->openai",
            "/v1/messages",
            serde_json::json!({"model": "compat", "stream": true, "max_tokens": 64, "messages": [{"role": "user", "content": "Say hello"}]}),
        ),
        (
            "chat->anthropic",
            "/v1/chat/completions",
            serde_json::json!({"model": "native", "stream": true, "max_tokens": 64, "messages": [{"role": "user", "content": "Say hello"}]}),
        ),
    ];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
    for round in 0..requests + 20 {
        for (i, (name, path, body)) in paths.iter().enumerate() {
            let sent = Instant::now();
            let mut response = client
                .post(format!("{base}{path}"))
                .header("x-api-key", "unused")
                .json(body)
                .send()
                .await
                .unwrap();
            assert!(
                response.status().is_success(),
                "{name}: {}",
                response.status()
            );
            let first = response.chunk().await.unwrap();
            let ttfb = sent.elapsed();
            assert!(first.is_some(), "{name}: an empty stream");
            while response.chunk().await.unwrap().is_some() {}
            // The first rounds warm connections and caches.
            if round >= 20 {
                times[i].push(ttfb.as_secs_f64() * 1e3);
            }
        }
    }
    let _ = Command::new("kill").arg(serve.id().to_string()).status();
    let _ = serve.wait();
    println!("| path | median ms | p90 ms | p99 ms |\n|---|---|---|---|");
    for ((name, _, _), mut measured) in paths.iter().zip(times) {
        measured.sort_by(f64::total_cmp);
        println!(
            "| {name} | {:.3} | {:.3} | {:.3} |",
            percentile(&measured, 0.5),
            percentile(&measured, 0.9),
            percentile(&measured, 0.99)
        );
    }
}
