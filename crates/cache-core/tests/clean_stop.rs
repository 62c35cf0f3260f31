//! A clean stop is silent: `shutdown()` then dropping the cache logs nothing at WARN (regression:
//! every clean stop logged fred's "Attempted to quit client that was already stopped"), while a
//! cache dropped without `shutdown()` owing Redis deltas says so. Its own test binary: it
//! installs the process-wide log subscriber (which also takes fred's `log` records).
// Tests may unwrap and panic: a failure is the test failing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrolite_cache::testing::{config, redis_url, unique_prefix};
use ferrolite_cache::{CounterOptions, DualCache};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn take(&self) -> String {
        String::from_utf8(std::mem::take(&mut *self.0.lock().unwrap())).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_logs_no_warning_and_a_lossy_drop_does() {
    let Some(url) = redis_url() else { return };
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init()
        .unwrap();
    let minute = CounterOptions::ttl(Duration::from_secs(60));

    let cache = DualCache::connect(config(&url, &unique_prefix("clean-stop")))
        .await
        .unwrap();
    cache.counters().increment("k", 1, minute).unwrap();
    cache.shutdown().await.unwrap();
    drop(cache);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logged = captured.take();
    assert!(logged.is_empty(), "a clean stop logged: {logged}");

    // Dropped without shutdown() while it owes Redis a delta: one warning naming the remedy.
    let lossy = DualCache::connect(config(&url, &unique_prefix("lossy-drop")))
        .await
        .unwrap();
    lossy.counters().increment("k", 1, minute).unwrap();
    drop(lossy);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logged = captured.take();
    assert!(logged.contains("WARN"), "{logged}");
    assert!(logged.contains("shutdown()"), "{logged}");
}
