//! An out-of-process HTTP/1.1 load generator for `ferrolite serve`, and the loopback upstream
//! it is measured against: a benchmark tool, never a test.
//!
//! Load (the default mode): `--connections` keep-alive connections each send the same
//! non-streaming chat completion (about 1 KB, `"model": --model`) to `--path` one after the
//! other, for `--seconds` or until `--requests` have been sent in all. The last line on stdout is
//! one JSON object: `requests` (answered 200), `errors` (any other status), `seconds`,
//! `requests_per_s`, `p50_ms`, `p99_ms`, `max_ms` (latency of the 200s, from the first byte
//! written to the last byte read).
//!
//! ```text
//! load --port 4000 --connections 64 --seconds 5 [--host 127.0.0.1] [--path /v1/chat/completions]
//!      [--model big] [--auth sk-...] [--requests N] [--threads 1]
//! ```
//!
//! Upstream (`--upstream`): answers every POST whose path ends in `/chat/completions` with the
//! same small OpenAI chat completion (with `usage`), anything else with 404; HTTP/1.1
//! keep-alive, `Content-Length` or chunked request bodies, on one thread. It prints
//! `listening PORT` once bound (`--port 0`, the default, picks a free one) and runs until
//! killed. Deployments can be told apart by path: `http://127.0.0.1:PORT/d17/v1` as `api_base`
//! answers at `/d17/v1/chat/completions`.
//!
//! Run: `cargo run --release -p ferrolite-benches --features tools --bin load -- --port 4000 --connections 16`.

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

use hdrhistogram::Histogram;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The upstream's answer body.
const ANSWER: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Madrid is warmest, Oslo is wettest, and Madrid is 18 degrees warmer than Oslo."},"finish_reason":"stop"}],"usage":{"prompt_tokens":96,"completion_tokens":20,"total_tokens":116}}"#;

struct Args {
    upstream: bool,
    host: String,
    port: u16,
    path: String,
    model: String,
    auth: Option<String>,
    connections: usize,
    seconds: f64,
    requests: Option<u64>,
    threads: usize,
}

fn args() -> Args {
    let mut args = Args {
        upstream: false,
        host: "127.0.0.1".into(),
        port: 0,
        path: "/v1/chat/completions".into(),
        model: "big".into(),
        auth: None,
        connections: 1,
        seconds: 5.0,
        requests: None,
        threads: 1,
    };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        if flag == "--upstream" {
            args.upstream = true;
            continue;
        }
        let value = given
            .next()
            .unwrap_or_else(|| panic!("{flag} needs a value"));
        let number = |what: &str| -> u64 {
            value
                .parse()
                .unwrap_or_else(|_| panic!("{what}: a number, got {value}"))
        };
        match flag.as_str() {
            "--host" => args.host = value,
            "--port" => args.port = number("--port") as u16,
            "--path" => args.path = value,
            "--model" => args.model = value,
            "--auth" => args.auth = Some(value),
            "--connections" => args.connections = number("--connections").max(1) as usize,
            "--seconds" => args.seconds = value.parse().expect("--seconds: a number"),
            "--requests" => args.requests = Some(number("--requests")),
            "--threads" => args.threads = number("--threads").max(1) as usize,
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

/// A realistic chat completion body (about 1 KB).
fn chat_body(model: &str) -> String {
    serde_json::json!({
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant that answers questions about the weather in short, precise sentences, citing the data you were given."},
            {"role": "user", "content": "Here is today's data: Berlin 12 C and cloudy, Paris 15 C and sunny, Madrid 22 C and clear, Oslo 4 C with light rain, Rome 19 C and partly cloudy. Which city is warmest, which is wettest, and how much warmer is Madrid than Oslo? Answer in three sentences."}
        ],
        "temperature": 0.2,
        "max_tokens": 200,
        "user": "bench-user-7"
    })
    .to_string()
}

/// The head of one HTTP/1.1 message: the start line, `Content-Length`, chunked or not.
struct Head {
    start: String,
    length: usize,
    chunked: bool,
}

/// Reads a message head; `None` at a clean end of the connection before it.
async fn read_head<R: AsyncBufRead + Unpin>(read: &mut R, line: &mut String) -> Option<Head> {
    let mut head = Head {
        start: String::new(),
        length: 0,
        chunked: false,
    };
    loop {
        line.clear();
        let n = read.read_line(line).await.ok()?;
        if n == 0 {
            return None;
        }
        if head.start.is_empty() {
            head.start = line.trim_end().to_string();
            continue;
        }
        if line == "\r\n" || line == "\n" {
            return Some(head);
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            head.length = value.parse().expect("content-length");
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = value.eq_ignore_ascii_case("chunked");
        }
    }
}

/// Reads the body `head` announces into `body`.
async fn read_body<R: AsyncBufRead + Unpin>(
    read: &mut R,
    head: &Head,
    line: &mut String,
    body: &mut Vec<u8>,
) -> std::io::Result<()> {
    body.clear();
    if !head.chunked {
        body.resize(head.length, 0);
        read.read_exact(body).await?;
        return Ok(());
    }
    loop {
        line.clear();
        read.read_line(line).await?;
        let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)
            .expect("chunk size");
        let at = body.len();
        body.resize(at + size, 0);
        read.read_exact(&mut body[at..]).await?;
        line.clear();
        read.read_line(line).await?; // the CRLF after the chunk (or the trailer's end)
        if size == 0 {
            return Ok(());
        }
    }
}

/// One keep-alive connection sending `request` until the deadline or the request budget.
async fn connection(
    address: String,
    request: Arc<Vec<u8>>,
    deadline: Instant,
    budget: Option<Arc<AtomicU64>>,
    errors: Arc<AtomicU64>,
) -> Histogram<u64> {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let stream = TcpStream::connect(&address).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::with_capacity(16 * 1024, read);
    let mut line = String::new();
    let mut body = Vec::new();
    loop {
        if Instant::now() >= deadline {
            break;
        }
        if let Some(budget) = &budget
            && budget
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_err()
        {
            break;
        }
        let sent = Instant::now();
        write.write_all(&request).await.expect("write");
        let head = read_head(&mut read, &mut line)
            .await
            .expect("the server closed the connection");
        read_body(&mut read, &head, &mut line, &mut body)
            .await
            .expect("read body");
        let micros = sent.elapsed().as_micros() as u64;
        if head.start.split_whitespace().nth(1) == Some("200") {
            histogram.saturating_record(micros.max(1));
        } else if errors.fetch_add(1, Ordering::Relaxed) == 0 {
            eprintln!(
                "load: first error: {} {}",
                head.start,
                String::from_utf8_lossy(&body[..body.len().min(300)])
            );
        }
    }
    histogram
}

fn load(args: &Args) {
    let body = chat_body(&args.model);
    let auth = args
        .auth
        .as_ref()
        .map(|key| format!("Authorization: Bearer {key}\r\n"))
        .unwrap_or_default();
    let request = Arc::new(
        format!(
            "POST {} HTTP/1.1\r\nHost: {}:{}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            args.path,
            args.host,
            args.port,
            body.len()
        )
        .into_bytes(),
    );
    let runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    }
    .expect("runtime");
    let errors = Arc::new(AtomicU64::new(0));
    let budget = args.requests.map(|n| Arc::new(AtomicU64::new(n)));
    let seconds = if args.requests.is_some() && args.seconds <= 0.0 {
        86_400.0
    } else {
        args.seconds
    };
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let address = format!("{}:{}", args.host, args.port);
    let total = runtime.block_on(async {
        let tasks: Vec<_> = (0..args.connections)
            .map(|_| {
                tokio::spawn(connection(
                    address.clone(),
                    Arc::clone(&request),
                    deadline,
                    budget.clone(),
                    Arc::clone(&errors),
                ))
            })
            .collect();
        let mut total = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
        for task in tasks {
            total.add(task.await.expect("connection")).expect("merge");
        }
        total
    });
    let elapsed = started.elapsed().as_secs_f64();
    let ms = |micros: u64| (micros as f64 / 10.0).round() / 100.0;
    let report = serde_json::json!({
        "connections": args.connections,
        "requests": total.len(),
        "errors": errors.load(Ordering::Relaxed),
        "seconds": (elapsed * 1000.0).round() / 1000.0,
        "requests_per_s": (total.len() as f64 / elapsed).round(),
        "p50_ms": ms(total.value_at_quantile(0.5)),
        "p99_ms": ms(total.value_at_quantile(0.99)),
        "max_ms": ms(total.max()),
        // Microseconds, for a difference of medians (the added latency of a gateway).
        "p50_us": total.value_at_quantile(0.5),
    });
    println!("{report}");
}

/// The upstream: one thread answering every connection.
fn upstream(args: &Args) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
            .await
            .expect("bind");
        let port = listener.local_addr().expect("address").port();
        println!("listening {port}");
        let ok = Arc::new(
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{ANSWER}",
                ANSWER.len()
            )
            .into_bytes(),
        );
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let ok = Arc::clone(&ok);
            tokio::spawn(async move {
                let _ = stream.set_nodelay(true);
                let (read, mut write) = stream.into_split();
                let mut read = BufReader::with_capacity(16 * 1024, read);
                let mut line = String::new();
                let mut body = Vec::new();
                while let Some(head) = read_head(&mut read, &mut line).await {
                    if read_body(&mut read, &head, &mut line, &mut body)
                        .await
                        .is_err()
                    {
                        return;
                    }
                    let path = head.start.split_whitespace().nth(1).unwrap_or("");
                    let answer: &[u8] =
                        if head.start.starts_with("POST ") && path.ends_with("/chat/completions") {
                            &ok
                        } else {
                            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
                        };
                    if write.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
}

fn main() {
    let args = args();
    if args.upstream {
        upstream(&args);
    } else {
        load(&args);
    }
}
