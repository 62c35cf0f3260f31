//! Where the memory of a router over many deployments goes: a probe to run under a heap
//! profiler (heaptrack, valgrind's massif), never a test.
//!
//! Builds the router a config describes as `ferrolite serve` does (`Config::for_serving`, the
//! HTTP backend for deployments that are not mocked), routes `--calls` chat completions to
//! `--model`, prints the process' resident size after each step on stderr, and exits without
//! dropping anything, so a heap profiler's "leaked" figure is what the router holds. It runs on
//! the system allocator (this binary does not install jemalloc), which heap profilers see.
//!
//! ```text
//! cargo build -p ferrolite-benches --features tools --bin scale_memory
//! heaptrack target/debug/scale_memory --config big.yaml --model big --calls 10000
//! heaptrack_print -f heaptrack.scale_memory.*.zst --print-leaks
//! ```

// A probe that cannot set up has nothing to measure: failing loudly is right here.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::sync::Arc;

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib / 1024.0
}

fn main() {
    let mut config = None;
    let mut model = "big".to_string();
    let mut calls = 0usize;
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let value = given.next().expect("a value after each flag");
        match flag.as_str() {
            "--config" => config = Some(value),
            "--model" => model = value,
            "--calls" => calls = value.parse().expect("--calls: a number"),
            other => panic!("unknown flag {other}"),
        }
    }
    let path = config.expect("--config FILE");
    eprintln!("start: {:.1} MiB", rss_mib());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let config = ferrolite::Config::from_path(&path)
            .and_then(ferrolite::Config::for_serving)
            .expect("config");
        eprintln!("config loaded: {:.1} MiB", rss_mib());
        let http: Arc<dyn ferrolite::router::Backend> =
            Arc::new(ferrolite::http::HttpBackend::new().expect("http backend"));
        let router = ferrolite::build_from_config(config, Some(http))
            .await
            .expect("router");
        eprintln!("router built: {:.1} MiB", rss_mib());
        let body =
            serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
        let mut failed = 0;
        for _ in 0..calls {
            if router
                .call(ferrolite::Request::new(model.clone(), body.clone()))
                .await
                .is_err()
            {
                failed += 1;
            }
        }
        eprintln!(
            "after {calls} calls ({failed} failed): {:.1} MiB",
            rss_mib()
        );
        // Kept alive to the end: the heap profiler's leak report is what the router holds.
        std::mem::forget(router);
    });
    std::mem::forget(runtime);
    std::process::exit(0);
}
