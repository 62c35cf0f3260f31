//! `auto` admission across two `ferrolite serve` processes on one Redis: demand that moves from
//! one gateway to the other still gets the whole rpm, and after both stop cleanly (SIGTERM)
//! Redis counts what was admitted, not what was claimed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};

use common::spawn_serve;
use ferrolite_cache::testing::{redis_url, unique_prefix};
use ferrolite_cache::{CacheConfig, Clock, DualCache, RedisConfig, SystemClock, Window};

fn start(config: &std::path::Path) -> (Child, u16) {
    spawn_serve(config, &[], Stdio::null(), Stdio::null())
}

/// One chat completion through the gateway on `port`: its HTTP status.
fn chat(port: u16) -> u16 {
    let body = r#"{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}"#;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer sk-auto\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn admitted(port: u16, calls: usize) -> usize {
    (0..calls).filter(|_| chat(port) == 200).count()
}

fn minute() -> u64 {
    SystemClock.now_ms() / 60_000
}

#[test]
fn thirty_calls_through_one_gateway_then_twenty_through_another_admit_fifty_and_redis_counts_fifty()
{
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("serve-auto");
    let dir = std::env::temp_dir().join(format!("ferrolite-auto-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
model_list:
  - model_name: gpt-4o
    litellm_params: {{model: openai/gpt-4o, rpm: 50, mock_response: ok}}
    model_info: {{id: auto-e2e}}
router_settings:
  num_retries: 0
  redis_url: {url}
general_settings:
  master_key: sk-auto
ferrolite_settings:
  admission: auto
  redis_key_prefix: "{prefix}"
"#
        ),
    )
    .unwrap();
    let (mut a, port_a) = start(&config);
    let (mut b, port_b) = start(&config);
    let first_minute = minute();
    let through_a = admitted(port_a, 30);
    let through_b = admitted(port_b, 20);
    let more = admitted(port_a, 1) + admitted(port_b, 1);
    let one_minute = minute() == first_minute;
    for child in [&mut a, &mut b] {
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(child.wait().unwrap().success(), "a clean stop");
    }
    if one_minute {
        assert_eq!(
            (through_a, through_b, more),
            (30, 20, 0),
            "the whole rpm, however the calls are split (regression: 30 + 19)"
        );
    }
    // Redis counts what was admitted (regression: the unused claims stayed counted).
    let total = through_a + through_b + more;
    let requests = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let cache = DualCache::connect(CacheConfig {
                redis: Some(RedisConfig::new(&url).with_prefix(&prefix)),
                ..CacheConfig::default()
            })
            .await
            .unwrap();
            let now = SystemClock.now_ms();
            let mut requests = 0;
            for at in [now, now.saturating_sub(60_000), now.saturating_sub(120_000)] {
                let key = Window::MINUTE_SLIDING.bucket_key("{auto-e2e}:openai/gpt-4o:rpm", at);
                if let Some(value) = cache.kv().get(&key).await.unwrap() {
                    requests += value.parse::<usize>().unwrap();
                }
            }
            cache.shutdown().await.unwrap();
            requests
        });
    assert_eq!(requests, total);
    let _ = std::fs::remove_dir_all(dir);
}
