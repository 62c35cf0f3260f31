//! Test support for ferrolite's own tests (feature `test-support`): which Redis to use, unique
//! key prefixes, and private `redis-server` processes that fault tests kill and restart.
//!
//! Rules (see the README): tests use `REDIS_URL` when it is set, otherwise the conventional
//! `redis://127.0.0.1:6379` if something answers there. A test that needs Redis and finds none
//! is skipped with a message, unless `FERROLITE_REQUIRE_REDIS=1` (set by `cargo xtask ci`),
//! where it fails.
#![allow(
    clippy::panic,
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::disallowed_methods
)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::{CacheConfig, RedisConfig};

mod loopback;

/// Whether tests must fail rather than skip without Redis.
pub fn redis_required() -> bool {
    std::env::var("FERROLITE_REQUIRE_REDIS").is_ok_and(|v| v == "1")
}

/// The Redis URL tests should use, or `None` to skip (never `None` when Redis is required:
/// that panics with the reason).
pub fn redis_url() -> Option<String> {
    if let Ok(url) = std::env::var("REDIS_URL") {
        if !url.is_empty() {
            return Some(url);
        }
    }
    if ping(6379) {
        return Some("redis://127.0.0.1:6379".to_string());
    }
    if redis_required() {
        panic!(
            "FERROLITE_REQUIRE_REDIS=1 but REDIS_URL is unset and nothing answers on 127.0.0.1:6379"
        );
    }
    eprintln!("skipping: no Redis (set REDIS_URL, or run `cargo xtask ci`)");
    None
}

/// Whether the Redis binaries fault and cluster tests start (`redis-server`, and `redis-cli`
/// for clusters) are installed; panics when they are not and Redis is required, otherwise
/// says the test is skipped.
pub fn redis_binaries_installed(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|tool| Command::new(tool).arg("--version").output().is_err())
        .collect();
    if missing.is_empty() {
        return true;
    }
    if redis_required() {
        panic!(
            "FERROLITE_REQUIRE_REDIS=1 but {} not installed (apt-get install redis-server)",
            missing.join(" and ")
        );
    }
    eprintln!("skipping: {} not installed", missing.join(" and "));
    false
}

/// A plain fred client on `url`, for tests that look at Redis behind the cache's back.
pub async fn raw_client(url: &str) -> fred::prelude::Client {
    use fred::prelude::ClientLike;
    let client = fred::prelude::Builder::from_config(
        fred::prelude::Config::from_url(url).expect("a valid Redis URL"),
    )
    .build()
    .expect("a fred client");
    client.init().await.expect("connect to Redis");
    client
}

/// A fault-test cache configuration on a private server: `prefix`, a 200 ms command timeout
/// and a 20 ms sync interval, so outages are noticed and recoveries flushed quickly.
pub fn fault_config(url: &str, prefix: &str) -> CacheConfig {
    CacheConfig {
        redis: Some(RedisConfig {
            command_timeout: Duration::from_millis(200),
            ..RedisConfig::new(url).with_prefix(prefix)
        }),
        sync_interval: Duration::from_millis(20),
        ..CacheConfig::default()
    }
}

/// A key prefix no other test (or test run) uses, so tests can share one Redis in parallel.
pub fn unique_prefix(test: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "ferrolite-test:{test}:{}-{nanos}-{}:",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A cache configuration for tests on `url` with a unique prefix and a short sync interval.
pub fn config(url: &str, prefix: &str) -> CacheConfig {
    CacheConfig {
        redis: Some(RedisConfig::new(url).with_prefix(prefix)),
        sync_interval: Duration::from_millis(20),
        ..CacheConfig::default()
    }
}

pub use loopback::ping;

/// A free loopback port (panics when the system has none).
pub fn free_port() -> u16 {
    loopback::free_port().expect("bind a free loopback port")
}

/// The size of one Redis script call's future (`EVALSHA`, loading the script on `NOSCRIPT`) as
/// the Redis tier builds it: the yardstick of tests that check a caller's future does not hold
/// one inline (the store boxes it, so no facet's future shows it).
pub fn redis_script_future_size() -> usize {
    crate::redis::script_future_size()
}

/// A private `redis-server` on a free loopback port, killed on drop. With `durable`, every write
/// is appended and fsynced before Redis answers (`appendfsync always`), so a `kill -9` loses
/// nothing Redis acknowledged — the fault tests need that to count exactly.
pub struct RedisProcess {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    durable: bool,
    /// A cluster node (`--cluster-enabled yes`, its node file in `dir`).
    clustered: bool,
}

impl RedisProcess {
    /// Starts one (panics if `redis-server` is not installed).
    pub fn start(durable: bool) -> Self {
        Self::start_with(durable, false)
    }

    fn start_with(durable: bool, clustered: bool) -> Self {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("ferrolite-redis-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the redis dir");
        let mut process = RedisProcess {
            child: None,
            port,
            dir,
            durable,
            clustered,
        };
        process.spawn();
        process
    }

    fn spawn(&mut self) {
        let mut command = Command::new("redis-server");
        command
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.durable {
            command.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            command.args(["--appendonly", "no"]);
        }
        if self.clustered {
            command
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
                .arg("--cluster-config-file")
                .arg(self.dir.join("nodes.conf"));
        }
        let child = command.spawn().unwrap_or_else(|e| {
            panic!("cannot start redis-server ({e}); install it: apt-get install redis-server")
        });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ping(self.port) {
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not start",
                self.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `redis://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server with SIGKILL (no shutdown, no goodbye to clients).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server with SIGSTOP: connections stay open, nothing is answered, commands
    /// queue in the socket until [`resume`](Self::resume).
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused server run again (SIGCONT); it then executes what queued meanwhile.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status()
                .expect("run kill");
            assert!(status.success(), "kill {signal} failed");
        }
    }

    /// Starts the server again on the same port (and, when durable, with the same data).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A private Redis Cluster of three masters on free loopback ports (`redis-server
/// --cluster-enabled yes`, joined with `redis-cli --cluster create`), stopped on drop. Tests
/// run the cache's scripts and pipelines on it with the same assertions as on one server.
pub struct RedisCluster {
    nodes: Vec<RedisProcess>,
}

impl RedisCluster {
    /// Starts and joins the cluster, and waits until every slot is served (panics if
    /// `redis-server` or `redis-cli` is missing).
    pub fn start() -> Self {
        let nodes: Vec<RedisProcess> = (0..3).map(|_| RedisProcess::start_clustered()).collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let output = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-cli ({e}); install it: apt-get install redis-tools")
            });
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        let cluster = RedisCluster { nodes };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cluster.nodes.iter().all(|n| n.cluster_ok()) {
            assert!(
                Instant::now() < deadline,
                "the cluster never reached state ok"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        cluster
    }

    /// `redis-cluster://127.0.0.1:{port}?node=127.0.0.1:{port}&...`: every node, as fred reads
    /// a cluster URL ([`crate::RedisConfig::cluster`] builds the same from a list).
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        crate::RedisConfig::cluster(&nodes).url
    }
}

impl RedisProcess {
    fn start_clustered() -> Self {
        Self::start_with(false, true)
    }

    /// Whether `CLUSTER INFO` says `cluster_state:ok`.
    fn cluster_ok(&self) -> bool {
        Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "cluster", "info"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
    }
}
