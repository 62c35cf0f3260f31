//! What the `ferrolite` command's tests share: a `ferrolite serve` process on a free loopback
//! port, and raw HTTP/1.1 exchanges with it over plain TCP.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferrolite_cache::testing::free_port;

/// Starts `ferrolite serve --config CONFIG` with `extra` arguments on a free port, its stdout
/// and stderr as given, and waits until it listens: the child and its port.
pub fn spawn_serve(
    config: &std::path::Path,
    extra: &[&str],
    stdout: Stdio,
    stderr: Stdio,
) -> (Child, u16) {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_ferrolite"))
        .args([
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--port",
            &port.to_string(),
        ])
        .args(extra)
        .stdout(stdout)
        .stderr(stderr)
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
    (child, port)
}

/// One HTTP/1.1 exchange over a plain TCP connection: the whole response, head and body.
pub fn exchange_raw(port: u16, method: &str, path: &str, key: Option<&str>, body: &str) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let auth = key.map_or_else(String::new, |k| format!("Authorization: Bearer {k}\r\n"));
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

/// One HTTP/1.1 exchange: the status, the head (lower case) and the body.
pub fn exchange(
    port: u16,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> (u16, String, String) {
    let response = exchange_raw(port, method, path, key, body);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (status, head.to_ascii_lowercase(), body.to_string())
}

/// Reads one HTTP/1.1 message (a request or a response) from `reader`: its start line and its
/// body, read by `Content-Length` (none: empty); `None` when the peer closed first.
pub fn read_message(reader: &mut impl std::io::BufRead) -> Option<(String, Vec<u8>)> {
    let mut start = String::new();
    if reader.read_line(&mut start).ok()? == 0 {
        return None;
    }
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        if let Some((key, value)) = line.split_once(':') {
            if key.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((start, body))
}
