//! A connection flood against `ferrolite serve`: the resident memory of the gateway process
//! idle, with 10,000 keep-alive connections open (each answered once, then idle), and after
//! they close; three rounds. docs/benchmarks.md has the numbers.
//!
//! `cargo run -p ferrolite-benches --features tools --bin flood -- target/debug/ferrolite [connections]`
//! (Linux: reads `/proc/<pid>/status`; needs a file-descriptor limit above the connections).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CONFIG: &str = "model_list:
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o, mock_response: hi}
ferrolite_settings:
  server: {keep_alive_timeout: 60, max_connections: 20000}
";

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024.0
}

fn main() {
    let mut args = std::env::args().skip(1);
    let binary = args
        .next()
        .unwrap_or_else(|| "target/debug/ferrolite".into());
    let connections: usize = args.next().map_or(10_000, |n| n.parse().unwrap());
    let dir = std::env::temp_dir().join(format!("ferrolite-flood-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(&binary)
        .args([
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--port",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never listened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_secs(1));
    let pid = child.id();
    println!("idle: {:.1} MiB", rss_mib(pid));
    for round in 0..3 {
        let mut open = Vec::with_capacity(connections);
        for _ in 0..connections {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(b"GET /health/liveliness HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            open.push(s);
        }
        for s in &mut open {
            let mut buf = [0u8; 512];
            let n = s.read(&mut buf).unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        }
        std::thread::sleep(Duration::from_millis(500));
        println!("round {round}: {connections} open: {:.1} MiB", rss_mib(pid));
        drop(open);
        std::thread::sleep(Duration::from_secs(2));
        println!(
            "round {round}: 2 s after they closed: {:.1} MiB",
            rss_mib(pid)
        );
    }
    for after in [5, 10, 20] {
        std::thread::sleep(Duration::from_secs(if after == 5 { 3 } else { after / 2 }));
        println!("{after} s after the last close: {:.1} MiB", rss_mib(pid));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(dir);
}
