//! The scale benchmark: `ferrolite serve` over one group of 10, 1,000 and 10,000 deployments,
//! mocked (`mock_response`) and over HTTP to a loopback upstream, loaded from another process.
//! A benchmark, never a test: `cargo xtask bench scale` runs it alone (after building the
//! release binaries), `cargo xtask bench` after the criterion benches.
//!
//! For each mode and size it writes a config (`model_list` of N entries named `big`, each with
//! rpm and tpm limits it never reaches; HTTP deployments each with their own `api_base`,
//! `http://127.0.0.1:PORT/dI/v1`, so they are distinct deployments on one upstream process),
//! starts the release `ferrolite serve` with the default log level (its output to /dev/null),
//! waits until it listens, and then:
//!
//! - reads its resident size (`VmRSS`) idle, after a second;
//! - warms it up (16 connections for `--warmup` seconds);
//! - for HTTP, calls the upstream directly at concurrency 1 (the floor the gateway adds to);
//! - drives it with the `load` binary (a separate process, keep-alive HTTP/1.1) at each
//!   concurrency for `--seconds`: requests/s, p50/p99, and the gateway's CPU per request (its
//!   utime + stime from `/proc/PID/stat` over the run, divided by the requests answered);
//! - reads its resident size after the load (`VmRSS`, and the peak `VmHWM`).
//!
//! It prints a table and writes every figure as JSON (default `target/scale.json`).
//!
//! ```text
//! scale [--ferrolite target/release/ferrolite] [--load target/release/load] [--seconds 5]
//!       [--warmup 1] [--sizes 10,1000,10000] [--concurrency 1,16,64] [--modes mock,http]
//!       [--label TEXT] [--out target/scale.json]
//! ```
//!
//! Linux only (reads `/proc`). The figures are medians of nothing: one run each; the machine is
//! shared, so compare runs made side by side.

// A load that cannot set up has nothing to measure: failing loudly is right here.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

struct Args {
    ferrolite: PathBuf,
    load: PathBuf,
    seconds: f64,
    warmup: f64,
    sizes: Vec<usize>,
    concurrency: Vec<usize>,
    modes: Vec<String>,
    label: String,
    out: PathBuf,
}

fn list<T: std::str::FromStr>(value: &str, flag: &str) -> Vec<T> {
    value
        .split(',')
        .map(|v| {
            v.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{flag}: a comma-separated list, got {value}"))
        })
        .collect()
}

fn args() -> Args {
    // Binaries sit side by side in target/release; the JSON goes to target/.
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe.parent().expect("exe dir").to_path_buf();
    let target = bin.parent().map_or_else(|| bin.clone(), Path::to_path_buf);
    let mut args = Args {
        ferrolite: bin.join("ferrolite"),
        load: bin.join("load"),
        seconds: 5.0,
        warmup: 1.0,
        sizes: vec![10, 1_000, 10_000],
        concurrency: vec![1, 16, 64],
        modes: vec!["mock".into(), "http".into()],
        label: String::new(),
        out: target.join("scale.json"),
    };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let value = given
            .next()
            .unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--ferrolite" => args.ferrolite = value.into(),
            "--load" => args.load = value.into(),
            "--seconds" => args.seconds = value.parse().expect("--seconds: a number"),
            "--warmup" => args.warmup = value.parse().expect("--warmup: a number"),
            "--sizes" => args.sizes = list(&value, "--sizes"),
            "--concurrency" => args.concurrency = list(&value, "--concurrency"),
            "--modes" => args.modes = list(&value, "--modes"),
            "--label" => args.label = value,
            "--out" => args.out = value.into(),
            other => panic!("unknown flag {other}"),
        }
    }
    for mode in &args.modes {
        assert!(
            mode == "mock" || mode == "http",
            "--modes: mock and/or http, got {mode}"
        );
    }
    args
}

/// The config of one run: one group `big` of `size` deployments.
fn config(mode: &str, size: usize, upstream: u16) -> String {
    let mut yaml = String::from("model_list:\n");
    for i in 0..size {
        let params = if mode == "mock" {
            format!("model: openai/gpt-4o-{i}, api_key: sk-x, mock_response: ok")
        } else {
            format!(
                "model: openai/gpt-4o, api_base: \"http://127.0.0.1:{upstream}/d{i}/v1\", api_key: sk-x"
            )
        };
        let _ = writeln!(
            yaml,
            "  - model_name: big\n    litellm_params: {{{params}, rpm: 100000000, tpm: 100000000000}}"
        );
    }
    yaml
}

/// A field of `/proc/PID/status` in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

fn mib(kib: u64) -> f64 {
    (kib as f64 / 102.4).round() / 10.0
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 on Linux almost everywhere).
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// The CPU time process `pid` has used (user + system), in seconds.
fn cpu_seconds(pid: u32, ticks: f64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    let after = stat.rsplit_once(')').expect("stat format").1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the command: state (0), ..., utime (11), stime (12).
    let utime: f64 = fields[11].parse().expect("utime");
    let stime: f64 = fields[12].parse().expect("stime");
    (utime + stime) / ticks
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs the load generator against `port` and returns its JSON line.
fn load(args: &Args, port: u16, path: &str, connections: usize, seconds: f64) -> Value {
    let out = Command::new(&args.load)
        .args(["--port", &port.to_string(), "--path", path])
        .args(["--connections", &connections.to_string()])
        .args(["--seconds", &seconds.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", args.load.display()));
    assert!(out.status.success(), "load failed: {}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or("")).expect("load's JSON line")
}

/// The loopback upstream (`load --upstream`) and its port.
fn start_upstream(args: &Args) -> (Child, u16) {
    let mut child = Command::new(&args.load)
        .arg("--upstream")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", args.load.display()));
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("upstream's port");
    let port = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|p| p.parse().ok())
        .expect("`listening PORT`");
    (child, port)
}

/// One `ferrolite serve` over `size` deployments, measured at every concurrency.
fn run(args: &Args, mode: &str, size: usize, upstream: u16, dir: &Path, ticks: f64) -> Value {
    let file = dir.join(format!("{mode}-{size}.yaml"));
    std::fs::write(&file, config(mode, size, upstream)).expect("write config");
    let port = free_port();
    let started = Instant::now();
    let mut serve = Command::new(&args.ferrolite)
        .args(["serve", "--config", file.to_str().expect("utf-8 path")])
        .args(["--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", args.ferrolite.display()));
    let pid = serve.id();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = serve.try_wait() {
            panic!("ferrolite serve exited ({status}) over {}", file.display());
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "never listened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let startup_s = started.elapsed().as_secs_f64();
    let startup_cpu_s = cpu_seconds(pid, ticks);
    std::thread::sleep(Duration::from_secs(1));
    let rss_idle = status_kib(pid, "VmRSS:");
    let path = "/v1/chat/completions";
    if args.warmup > 0.0 {
        let _ = load(args, port, path, 16, args.warmup);
    }
    let mut loads = Vec::new();
    let mut direct = Value::Null;
    for &connections in &args.concurrency {
        if mode == "http" && connections == 1 && direct.is_null() {
            direct = load(args, upstream, "/d0/v1/chat/completions", 1, args.seconds);
        }
        let before = cpu_seconds(pid, ticks);
        let mut measured = load(args, port, path, connections, args.seconds);
        let cpu = cpu_seconds(pid, ticks) - before;
        let requests = measured["requests"].as_u64().unwrap_or(0).max(1);
        measured["cpu_us_per_request"] = json!((cpu / requests as f64 * 1e7).round() / 10.0);
        if connections == 1 && !direct.is_null() {
            let added = measured["p50_us"].as_f64().unwrap_or(0.0)
                - direct["p50_us"].as_f64().unwrap_or(0.0);
            measured["added_p50_ms"] = json!((added / 10.0).round() / 100.0);
        }
        eprintln!(
            "scale: {mode} {size} c={connections}: {}",
            serde_json::to_string(&measured).unwrap_or_default()
        );
        loads.push(measured);
    }
    let rss_after = status_kib(pid, "VmRSS:");
    let hwm = status_kib(pid, "VmHWM:");
    stop(&mut serve);
    json!({
        "mode": mode,
        "deployments": size,
        "startup_s": (startup_s * 100.0).round() / 100.0,
        "startup_cpu_s": (startup_cpu_s * 100.0).round() / 100.0,
        "rss_idle_mib": mib(rss_idle),
        "rss_after_load_mib": mib(rss_after),
        "rss_peak_mib": mib(hwm),
        "direct_c1": direct,
        "loads": loads,
    })
}

fn table(runs: &[Value]) -> String {
    let mut out = String::from(
        "| mode | deployments | c | requests/s | p50 ms | p99 ms | CPU µs/request | added p50 ms | RSS idle / after MiB |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for run in runs {
        for load in run["loads"].as_array().into_iter().flatten() {
            let added = load
                .get("added_p50_ms")
                .map_or(String::new(), |v| v.to_string());
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} / {} |",
                run["mode"].as_str().unwrap_or(""),
                run["deployments"],
                load["connections"],
                load["requests_per_s"],
                load["p50_ms"],
                load["p99_ms"],
                load["cpu_us_per_request"],
                added,
                run["rss_idle_mib"],
                run["rss_after_load_mib"],
            );
        }
        if !run["direct_c1"].is_null() {
            let d = &run["direct_c1"];
            let _ = writeln!(
                out,
                "| direct | (upstream) | 1 | {} | {} | {} | | | |",
                d["requests_per_s"], d["p50_ms"], d["p99_ms"]
            );
        }
    }
    out
}

fn main() {
    let args = args();
    for binary in [&args.ferrolite, &args.load] {
        assert!(
            binary.exists(),
            "{} is missing: build it (`cargo build --release -p ferrolite-cli -p ferrolite-benches --features ferrolite-benches/tools`)",
            binary.display()
        );
    }
    let ticks = clock_ticks();
    let dir = std::env::temp_dir().join(format!("ferrolite-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (mut upstream, upstream_port) = start_upstream(&args);
    let mut runs = Vec::new();
    for mode in &args.modes {
        for &size in &args.sizes {
            runs.push(run(&args, mode, size, upstream_port, &dir, ticks));
        }
    }
    let _ = upstream.kill();
    let _ = upstream.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let table = table(&runs);
    println!("{table}");
    let report = json!({
        "label": args.label,
        "ferrolite": args.ferrolite.display().to_string(),
        "seconds_per_load": args.seconds,
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "runs": runs,
    });
    std::fs::write(
        &args.out,
        serde_json::to_string_pretty(&report).expect("JSON"),
    )
    .unwrap_or_else(|e| panic!("cannot write {}: {e}", args.out.display()));
    println!("scale: written to {}", args.out.display());
}
