//! The gateway's connections over real TCP on loopback (`ferrolite_settings.server`): slow
//! headers and bodies are cut off, idle connections close, the connection cap makes room
//! without cutting off a client being answered, and ordinary numbers of headers are served.
#![cfg(feature = "gateway")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ferrolite::Config;
use ferrolite::gateway::{GatewaySettings, app, serve_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A gateway over two mocked groups (`fast`, and `slow` answering after 600 ms) with
/// `ferrolite_settings.server: {server}`; its address.
async fn gateway(server: &str) -> SocketAddr {
    let yaml = format!(
        r#"
model_list:
  - model_name: fast
    litellm_params: {{model: openai/gpt-4o, mock_response: "quick"}}
  - model_name: slow
    litellm_params: {{model: openai/gpt-4o-mini, mock_response: "slow", mock_latency_ms: 600}}
ferrolite_settings:
  server: {server}
"#
    );
    let config = Config::from_yaml(&yaml).unwrap();
    let settings = config.server.clone();
    let router = ferrolite::build_from_config(config, None).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve_with(
        listener,
        app(router, GatewaySettings::default()),
        settings,
        std::future::pending(),
    ));
    addr
}

/// A chat completion of `model` as raw HTTP/1.1 (keep-alive).
fn chat(model: &str) -> String {
    let body =
        format!(r#"{{"model": "{model}", "messages": [{{"role": "user", "content": "hi"}}]}}"#);
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Reads one response: its status and body (by `Content-Length`).
async fn response(stream: &mut TcpStream) -> (u16, String) {
    let mut data = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find(&data, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if data.len() >= end + 4 + length {
                let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
                let body = String::from_utf8_lossy(&data[end + 4..end + 4 + length]).into_owned();
                return (status, body);
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("no response within 5 s")
            .unwrap();
        assert!(n > 0, "closed before a whole response: {data:?}");
        data.extend_from_slice(&chunk[..n]);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Waits up to `limit` for the server to close `stream` (end of stream or reset); what it
/// sent before, and when it closed.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> (Option<Instant>, String) {
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Err(_) => return (None, String::from_utf8_lossy(&received).into_owned()),
            Ok(Ok(0) | Err(_)) => {
                return (
                    Some(Instant::now()),
                    String::from_utf8_lossy(&received).into_owned(),
                );
            }
            Ok(Ok(n)) => received.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Whether the server still holds `stream` open (nothing to read, no close, for 100 ms).
async fn still_open(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    tokio::time::timeout(Duration::from_millis(100), stream.read(&mut byte))
        .await
        .is_err()
}

/// Writes `bytes` one at a time, `every` apart, until the server stops taking them.
fn trickle(mut half: tokio::net::tcp::OwnedWriteHalf, bytes: Vec<u8>, every: Duration) {
    tokio::spawn(async move {
        for b in bytes {
            if half.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(every).await;
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_sent_one_byte_at_a_time_are_cut_off_after_the_header_read_timeout() {
    let addr = gateway("{header_read_timeout: 0.3, keep_alive_timeout: 5}").await;
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut read, write) = stream.into_split();
    let started = Instant::now();
    // 400 bytes of headers at one byte every 20 ms would take 8 s.
    let head = format!(
        "GET /v1/models HTTP/1.1\r\nHost: localhost\r\nX-Slow: {}\r\n\r\n",
        "a".repeat(350)
    );
    trickle(write, head.into_bytes(), Duration::from_millis(20));
    let mut byte = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match read.read(&mut byte).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the slow client still connected after 3 s");
    let after = closed - started;
    assert!(
        after >= Duration::from_millis(250) && after < Duration::from_millis(1500),
        "closed after {after:?}, header_read_timeout is 300 ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_sent_too_slowly_gets_a_408_after_the_body_read_timeout_and_the_connection_closes() {
    let addr = gateway("{body_read_timeout: 0.4}").await;
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let body = format!(
        r#"{{"model": "fast", "messages": [], "x": "{}"}}"#,
        "a".repeat(200)
    );
    write
        .write_all(
            format!(
                "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let started = Instant::now();
    // A byte every 20 ms: each read is quick, the whole body would take 5 s.
    trickle(write, body.into_bytes(), Duration::from_millis(20));
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    let closed = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match read.read(&mut chunk).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(n) => received.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .expect("the slow body still being read after 3 s");
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("body_read_timeout"), "{text}");
    let after = closed - started;
    assert!(
        after >= Duration::from_millis(350) && after < Duration::from_millis(2000),
        "closed after {after:?}, body_read_timeout is 400 ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout() {
    let addr = gateway("{keep_alive_timeout: 0.3}").await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // Requests 150 ms apart keep the connection: the timeout counts idle time only.
    for _ in 0..4 {
        stream.write_all(chat("fast").as_bytes()).await.unwrap();
        assert_eq!(response(&mut stream).await.0, 200);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    stream.write_all(chat("fast").as_bytes()).await.unwrap();
    assert_eq!(response(&mut stream).await.0, 200);
    let idle = Instant::now();
    let (closed, _) = closed_within(&mut stream, Duration::from_secs(3)).await;
    let after = closed.expect("the idle connection still open after 3 s") - idle;
    assert!(
        after >= Duration::from_millis(250) && after < Duration::from_millis(1500),
        "closed after {after:?} idle, keep_alive_timeout is 300 ms"
    );

    // A connection that never sends a byte is idle too.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let opened = Instant::now();
    let (closed, _) = closed_within(&mut silent, Duration::from_secs(3)).await;
    let after = closed.expect("the silent connection still open after 3 s") - opened;
    assert!(after < Duration::from_millis(1500), "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_max_connections_a_new_client_is_served_by_closing_the_longest_idle_connection() {
    let addr = gateway("{max_connections: 3, keep_alive_timeout: 30}").await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(addr).await.unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut newcomer = TcpStream::connect(addr).await.unwrap();
    newcomer.write_all(chat("fast").as_bytes()).await.unwrap();
    let (status, body) = tokio::time::timeout(Duration::from_secs(2), response(&mut newcomer))
        .await
        .expect("the fourth client was not served while three connections idled");
    assert_eq!(status, 200, "{body}");
    let (closed, _) = closed_within(&mut idle[0], Duration::from_secs(1)).await;
    assert!(
        closed.is_some(),
        "the longest-idle connection was not closed"
    );
    assert!(still_open(&mut idle[1]).await && still_open(&mut idle[2]).await);
    idle[1].write_all(chat("fast").as_bytes()).await.unwrap();
    assert_eq!(response(&mut idle[1]).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_max_connections_a_new_client_waits_while_every_connection_is_being_answered() {
    let addr = gateway("{max_connections: 2, keep_alive_timeout: 30}").await;
    let started = Instant::now();
    let slow = (0..2)
        .map(|_| {
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(addr).await.unwrap();
                stream.write_all(chat("slow").as_bytes()).await.unwrap();
                response(&mut stream).await
            })
        })
        .collect::<Vec<_>>();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let mut third = TcpStream::connect(addr).await.unwrap();
    third.write_all(chat("fast").as_bytes()).await.unwrap();
    let (status, body) = response(&mut third).await;
    let third_at = started.elapsed();
    assert_eq!(status, 200, "{body}");
    for call in slow {
        let (status, body) = call.await.unwrap();
        assert_eq!(status, 200, "a client being answered was cut off: {body}");
    }
    // The slow calls take 600 ms from the start: the third client waited for one of them.
    assert!(
        third_at >= Duration::from_millis(550),
        "the third client was served at {third_at:?}, before a slow call ended"
    );
}

/// A `GET /v1/models` carrying `n` custom headers besides `Host`: its status.
async fn with_headers(addr: SocketAddr, n: usize) -> u16 {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut request = String::from("GET /v1/models HTTP/1.1\r\nHost: localhost\r\n");
    for i in 0..n {
        request.push_str(&format!("X-Custom-{i}: value-{i}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    response(&mut stream).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_100_custom_headers_is_served_and_more_than_max_headers_is_431() {
    let addr = gateway("{}").await;
    assert_eq!(with_headers(addr, 100).await, 200);
    assert_eq!(with_headers(addr, 250).await, 200);
    assert_eq!(with_headers(addr, 300).await, 431);
    let addr = gateway("{max_headers: 64}").await;
    assert_eq!(with_headers(addr, 60).await, 200);
    assert_eq!(with_headers(addr, 70).await, 431);
}

#[test]
fn server_settings_default_as_documented_and_bad_values_name_their_key() {
    let base = "model_list:\n  - model_name: g\n    litellm_params: {model: openai/gpt-4o}\n";
    let config = Config::from_yaml(base).unwrap();
    assert_eq!(config.server.keep_alive_timeout, Duration::from_secs(5));
    assert_eq!(config.server.header_read_timeout, Duration::from_secs(10));
    assert_eq!(config.server.body_read_timeout, Duration::from_secs(60));
    assert_eq!(config.server.max_connections, 4096);
    assert_eq!(config.server.max_headers, 256);
    for (server, key) in [
        (
            "{keep_alive_timeout: 0}",
            "ferrolite_settings.server.keep_alive_timeout",
        ),
        (
            "{header_read_timeout: -1}",
            "ferrolite_settings.server.header_read_timeout",
        ),
        (
            "{body_read_timeout: 0}",
            "ferrolite_settings.server.body_read_timeout",
        ),
        (
            "{max_connections: 0}",
            "ferrolite_settings.server.max_connections",
        ),
        (
            "{max_headers: 100000}",
            "ferrolite_settings.server.max_headers",
        ),
        ("{max_conections: 10}", "max_conections"),
    ] {
        let yaml = format!("{base}ferrolite_settings:\n  server: {server}\n");
        let error = Config::from_yaml(&yaml).unwrap_err().to_string();
        assert!(error.contains(key), "{server}: {error}");
    }
}

/// Sends `path` the headers of a JSON body and part of it, then stalls (the connection kept
/// open); the answer.
async fn stalled_body(addr: SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let body =
        r#"{"model": "fast", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}"#;
    let (part, _) = body.split_at(20);
    stream
        .write_all(
            format!(
                "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nx-api-key: sk-any\r\nanthropic-version: 2023-06-01\r\nContent-Length: {}\r\n\r\n{part}",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let (status, text) = response(&mut stream).await;
    (status, serde_json::from_str(&text).unwrap())
}

/// The server's 408 for a body that did not arrive in time is in the error shape of the API
/// the client called: Anthropic's on the Messages API's paths
/// (`protocols::anthropic::client::error_body`), OpenAI's on the chat endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_on_the_messages_api_gets_its_408_in_anthropics_error_shape() {
    let addr = gateway("{body_read_timeout: 0.3}").await;
    for path in [
        "/v1/messages",
        "/messages",
        "/v1/messages/count_tokens",
        "/messages/count_tokens",
    ] {
        let (status, error) = stalled_body(addr, path).await;
        assert_eq!(status, 408, "{path}: {error}");
        assert_eq!(error["type"], "error", "{path}: {error}");
        assert_eq!(
            error["error"]["type"], "invalid_request_error",
            "{path}: {error}"
        );
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains("body_read_timeout"), "{path}: {error}");
    }
    let (status, error) = stalled_body(addr, "/v1/chat/completions").await;
    assert_eq!(status, 408);
    assert_eq!(error["error"]["type"], "timeout", "{error}");
    assert_eq!(error["error"]["code"], "408", "{error}");
    assert!(error.get("type").is_none(), "{error}");
}
