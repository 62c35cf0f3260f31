//! Resident memory of `ferrolite serve` over millions of requests, with nothing scraping
//! `/metrics`: a benchmark, never a test (it takes minutes).
//!
//! Starts the `ferrolite` binary given (`serve` on a free loopback port) over one
//! `mock_response` deployment with rpm and tpm limits, a provider budget and the master key,
//! then sends `--requests` non-streaming chat completions from this process (the load
//! generator is out of the gateway's process: plain HTTP/1.1 keep-alive connections,
//! `--concurrency` of them). The gateway's `VmRSS` (`/proc/PID/status`) is sampled after the
//! first 100,000 requests and then every `--every` requests; the last line is one JSON object
//! with the samples and the growth from the 100,000 mark to the end.
//!
//! Run (the binary built first, release or debug):
//! `cargo run --release -p ferrolite-benches --features tools --bin serve_memory -- --ferrolite
//! target/release/ferrolite --requests 5000000`

// A load that cannot set up has nothing to measure: failing loudly is right here.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const CONFIG: &str = r#"
model_list:
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o, rpm: 100000000, tpm: 100000000000, mock_response: "served by ferrolite"}
router_settings:
  num_retries: 0
  provider_budget_config:
    openai: {budget_limit: 1000000, time_period: 1d}
general_settings:
  master_key: sk-bench
"#;

const BODY: &str = r#"{"model": "gpt-4o", "messages": [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "What is the capital of France? Answer in one word."}], "max_tokens": 16}"#;

struct Args {
    ferrolite: String,
    requests: u64,
    concurrency: usize,
    every: u64,
}

fn args() -> Args {
    let mut args = Args {
        ferrolite: "target/release/ferrolite".to_string(),
        requests: 5_000_000,
        concurrency: 32,
        every: 500_000,
    };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let value = given
            .next()
            .unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--ferrolite" => args.ferrolite = value,
            "--requests" => args.requests = value.parse().expect("--requests: a number"),
            "--concurrency" => args.concurrency = value.parse().expect("--concurrency: a number"),
            "--every" => args.every = value.parse().expect("--every: a number"),
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

/// The resident size of process `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Sends requests on one keep-alive connection until `remaining` is spent.
async fn caller(port: u16, sent: Arc<AtomicU64>, total: u64, failures: Arc<AtomicU64>) {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer sk-bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let mut line = String::new();
    let mut body = Vec::new();
    while sent.fetch_add(1, Ordering::Relaxed) < total {
        write.write_all(request.as_bytes()).await.expect("write");
        let mut length = 0usize;
        let mut status = 0u16;
        loop {
            line.clear();
            read.read_line(&mut line).await.expect("read head");
            if status == 0 {
                status = line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .expect("status line");
            }
            let lower = line.to_ascii_lowercase();
            if let Some(value) = lower.strip_prefix("content-length:") {
                length = value.trim().parse().expect("content-length");
            }
            if line == "\r\n" {
                break;
            }
        }
        body.resize(length, 0);
        read.read_exact(&mut body).await.expect("read body");
        if status != 200 {
            failures.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn main() {
    let args = args();
    let dir = std::env::temp_dir().join(format!("ferrolite-serve-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("config.yaml");
    std::fs::write(&config, CONFIG).expect("write config");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut child = std::process::Command::new(&args.ferrolite)
        .args(["serve", "--config", config.to_str().expect("utf-8 path")])
        .args(["--port", &port.to_string()])
        .env("FERROLITE_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start ferrolite serve");
    let pid = child.id();
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never listened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let rss_idle = rss_kib(pid);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let sent = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let mut samples: Vec<(u64, u64)> = Vec::new();
    let mut marks: Vec<u64> = vec![100_000.min(args.requests)];
    let mut next = args.every;
    while next < args.requests {
        if next > 100_000 {
            marks.push(next);
        }
        next += args.every;
    }
    marks.push(args.requests);
    marks.dedup();
    let load_started = Instant::now();
    let mut done_before = 0;
    for mark in marks {
        // Each stage runs its share on fresh keep-alive connections and ends with nothing in
        // flight, so the sample is taken at exactly `mark` requests.
        let stage = mark - done_before;
        let stage_sent = Arc::new(AtomicU64::new(0));
        runtime.block_on(async {
            let mut tasks = Vec::new();
            for _ in 0..args.concurrency {
                tasks.push(tokio::spawn(caller(
                    port,
                    Arc::clone(&stage_sent),
                    stage,
                    Arc::clone(&failures),
                )));
            }
            for task in tasks {
                task.await.expect("caller");
            }
        });
        sent.fetch_add(stage, Ordering::Relaxed);
        done_before = mark;
        let rss = rss_kib(pid);
        let elapsed = load_started.elapsed().as_secs_f64();
        eprintln!(
            "{mark} requests, {:.0} s, {:.0} requests/s, VmRSS {:.1} MiB",
            elapsed,
            mark as f64 / elapsed,
            rss as f64 / 1024.0
        );
        samples.push((mark, rss));
    }
    let elapsed = load_started.elapsed().as_secs_f64();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let first = samples.first().map_or(0, |s| s.1);
    let last = samples.last().map_or(0, |s| s.1);
    let growth = (last as f64 - first as f64) / first.max(1) as f64 * 100.0;
    let report = serde_json::json!({
        "requests": args.requests,
        "concurrency": args.concurrency,
        "failures": failures.load(Ordering::Relaxed),
        "seconds": (elapsed * 10.0).round() / 10.0,
        "requests_per_s": (args.requests as f64 / elapsed).round(),
        "rss_idle_mib": (rss_idle as f64 / 102.4).round() / 10.0,
        "rss_mib_by_requests": samples
            .iter()
            .map(|(n, kib)| serde_json::json!([n, (*kib as f64 / 102.4).round() / 10.0]))
            .collect::<Vec<_>>(),
        "growth_after_100k_percent": (growth * 10.0).round() / 10.0,
    });
    println!("{report}");
}
