//! ferrolite's developer tasks, run as `cargo xtask <task>` (the alias lives in `.cargo/config.toml`).
//!
//! - `cargo xtask ci`: format check, clippy with warnings denied, the whole workspace's tests
//!   against a real Redis, the docs with warnings denied, and the facade built without its
//!   default features. It stops at the first failure.
//! - `cargo xtask redis`: starts a private `redis-server` on a free loopback port for a developer,
//!   prints its URL and runs until interrupted.
//! - `cargo xtask bench [ARGS]`: runs the criterion benches (`cargo bench -p ferrolite-benches`),
//!   then the end-to-end load (`cargo run --release -p ferrolite-benches --features tools --bin e2e`), which
//!   prints one JSON line, then the scale benchmark (below).
//! - `cargo xtask bench scale [ARGS]`: only the scale benchmark: builds the release `ferrolite`
//!   and runs `benches/scale.rs` (`ferrolite serve` over one group of 10 / 1,000 / 10,000
//!   deployments, mocked and over HTTP to a loopback upstream, loaded by `benches/load.rs` in
//!   another process); a table, and JSON in `target/scale.json`. `ci` never runs it.
//! - `cargo xtask catalogue --from FILE`: refreshes the model catalogue the facade embeds
//!   (`crates/ferrolite/data/catalogue.json`) from LiteLLM's `model_prices_and_context_window.json`,
//!   keeping the fields the router uses.
//!
//! Redis for the tests: `REDIS_URL` when it is set; otherwise a private `redis-server` (no
//! persistence) that is stopped afterwards, even when the tests fail. `FERROLITE_REQUIRE_REDIS=1`
//! is set so that a test needing Redis fails instead of skipping. Fault and cluster tests start
//! their own `redis-server` processes (a three-master cluster joined with `redis-cli`), so both
//! binaries must be installed; `ci` stops with the install command when one is missing.
//!
//! Python for the tests: the official `openai` and `anthropic` SDKs, at the versions pinned in
//! `xtask/python-requirements.txt`, in a virtual environment at `target/python-venv` (created
//! with `python3 -m venv`, filled by its own pip, and reused while its marker matches the
//! requirements file, so only the first run installs). `FERROLITE_PYTHON` names its interpreter
//! and `FERROLITE_REQUIRE_PYTHON=1` makes a test needing it fail instead of skipping. `ci` stops
//! with the install command when `python3` or its `venv` module is missing.
//! `cargo xtask python` makes (or checks) the same environment and prints its interpreter's path.
//!
//! A browser for the tests: the dashboard's test (`/ui`) drives headless Chromium through
//! ChromeDriver. `ci` finds `chromium` and `chromedriver` (or the binaries `FERROLITE_CHROMIUM`
//! and `FERROLITE_CHROMEDRIVER` name); when they are missing it installs Debian's packages
//! (`apt-get install -y chromium chromium-driver`) if it runs as root, and otherwise stops with
//! that command. `FERROLITE_REQUIRE_BROWSER=1` makes a test needing them fail instead of skipping.

use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

// The loopback helpers ferrolite's test support uses too; included by path so that xtask keeps
// no dependency on the workspace's crates (it builds before them in `cargo xtask ci`).
#[path = "../../crates/cache-core/src/testing/loopback.rs"]
mod loopback;
use loopback::{free_port, ping};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("redis") => redis_foreground(),
        Some("python") => python_venv().map(|python| println!("{python}")),
        Some("bench") if args.get(1).map(String::as_str) == Some("scale") => scale(&args[2..]),
        Some("bench") => cargo(
            &[
                &["bench", "-p", "ferrolite-benches", "--"],
                &as_strs(&args[1..])[..],
            ]
            .concat(),
            &[],
        )
        .and_then(|()| {
            // The end-to-end load: one JSON line beside LiteLLM's numbers.
            cargo(
                &[
                    "run",
                    "--release",
                    "-p",
                    "ferrolite-benches",
                    "--features",
                    "tools",
                    "--bin",
                    "e2e",
                ],
                &[],
            )
        })
        .and_then(|()| scale(&[])),
        Some("catalogue") => match (args.get(1).map(String::as_str), args.get(2)) {
            (Some("--from"), Some(file)) => catalogue(file),
            _ => Err(
                "usage: cargo xtask catalogue --from model_prices_and_context_window.json".into(),
            ),
        },
        _ => Err(
            "usage: cargo xtask <ci | redis | python | bench [criterion args] | bench scale [scale args] \
             | catalogue --from FILE>"
                .to_string(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The fields of a LiteLLM catalogue entry the router uses.
const CATALOGUE_FIELDS: [&str; 9] = [
    "litellm_provider",
    "mode",
    "max_input_tokens",
    "max_output_tokens",
    "input_cost_per_token",
    "output_cost_per_token",
    "cache_read_input_token_cost",
    "cache_creation_input_token_cost",
    "cache_creation_input_token_cost_above_1hr",
];

/// Writes the trimmed catalogue: one entry per line, sorted by name, so a refresh diffs well.
fn catalogue(from: &str) -> Result<(), String> {
    let text = std::fs::read_to_string(from).map_err(|e| format!("cannot read {from}: {e}"))?;
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&text).map_err(|e| format!("{from} is not a JSON object: {e}"))?;
    let mut names: Vec<&String> = map.keys().filter(|k| *k != "sample_spec").collect();
    names.sort();
    let mut out = String::from("{\n");
    let mut kept = 0usize;
    for name in names {
        let Some(entry) = map.get(name).and_then(|e| e.as_object()) else {
            continue;
        };
        let trimmed: serde_json::Map<String, serde_json::Value> = CATALOGUE_FIELDS
            .iter()
            .filter_map(|f| entry.get(*f).map(|v| ((*f).to_string(), v.clone())))
            .collect();
        if trimmed.is_empty() {
            continue;
        }
        if kept > 0 {
            out.push_str(",\n");
        }
        let key = serde_json::Value::String(name.clone()).to_string();
        out.push_str(&format!("{key}:{}", serde_json::Value::Object(trimmed)));
        kept += 1;
    }
    out.push_str("\n}\n");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/ferrolite/data");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let target = dir.join("catalogue.json");
    std::fs::write(&target, out).map_err(|e| format!("cannot write {}: {e}", target.display()))?;
    println!("{kept} models written to {}", target.display());
    Ok(())
}

/// The scale benchmark: builds the release `ferrolite` binary and the benches' `load` and
/// `scale` binaries, then runs `scale` (which starts `ferrolite serve` over 10 / 1,000 /
/// 10,000 deployments and loads it from another process) with `args`.
/// The feature that builds the benches package's programs (load generators, memory probes,
/// the end-to-end load), named from the workspace.
const BENCH_TOOLS: &str = "ferrolite-benches/tools";

fn scale(args: &[String]) -> Result<(), String> {
    cargo(
        &[
            "build",
            "--release",
            "-p",
            "ferrolite-cli",
            "-p",
            "ferrolite-benches",
            "--features",
            BENCH_TOOLS,
            "--bin",
            "ferrolite",
            "--bin",
            "load",
            "--bin",
            "scale",
        ],
        &[],
    )?;
    cargo(
        &[
            &[
                "run",
                "--release",
                "-p",
                "ferrolite-benches",
                "--features",
                "tools",
                "--bin",
                "scale",
                "--",
            ],
            &as_strs(args)[..],
        ]
        .concat(),
        &[],
    )
}

fn as_strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// The CI job: each step must pass before the next runs.
fn ci() -> Result<(), String> {
    // Fault tests start their own `redis-server`s and the cluster tests join three of them
    // with `redis-cli --cluster create`, whatever REDIS_URL says: both binaries are needed.
    for tool in ["redis-server", "redis-cli"] {
        if Command::new(tool).arg("--version").output().is_err() {
            return Err(format!(
                "`{tool}` is not installed; the tests need a real Redis. Install it with \
                 `apt-get install redis-server` (Debian/Ubuntu; it brings redis-cli) or \
                 `brew install redis` (macOS), then run `cargo xtask ci` again"
            ));
        }
    }
    // The SDKs' environment and the browser first: a missing one stops the run before anything
    // is built.
    let python = python_venv()?;
    let (chromium, chromedriver) = browser()?;
    cargo(&["fmt", "--all", "--check"], &[])?;
    cargo(
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            // The benches package's programs (built only with this feature) checked too.
            "--features",
            BENCH_TOOLS,
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;

    // The server guard lives until the end of this block, so the server stops whether the
    // tests passed or not.
    {
        let (url, _server) = match std::env::var("REDIS_URL") {
            Ok(url) if !url.is_empty() => {
                println!("xtask: using REDIS_URL from the environment");
                (url, None)
            }
            _ => {
                let server = RedisServer::start()?;
                (server.url(), Some(server))
            }
        };
        cargo(
            &[
                "test",
                "--workspace",
                "--all-targets",
                "--features",
                BENCH_TOOLS,
            ],
            &[
                ("REDIS_URL", url.as_str()),
                ("FERROLITE_REQUIRE_REDIS", "1"),
                ("FERROLITE_PYTHON", python.as_str()),
                ("FERROLITE_REQUIRE_PYTHON", "1"),
                ("FERROLITE_CHROMIUM", chromium.as_str()),
                ("FERROLITE_CHROMEDRIVER", chromedriver.as_str()),
                ("FERROLITE_REQUIRE_BROWSER", "1"),
            ],
        )?;
        // Doc tests run separately: `--all-targets` does not include them.
        cargo(
            &["test", "--workspace", "--doc"],
            &[
                ("REDIS_URL", url.as_str()),
                ("FERROLITE_REQUIRE_REDIS", "1"),
            ],
        )?;
    }

    cargo(
        &["doc", "--workspace", "--no-deps"],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )?;
    // The facade without its optional parts (Redis, HTTP backend, tower) still builds, and
    // without Redis it refuses a configured one and routes in memory.
    cargo(&["check", "-p", "ferrolite", "--no-default-features"], &[])?;
    cargo(
        &[
            "test",
            "-p",
            "ferrolite",
            "--no-default-features",
            "--test",
            "no_redis",
        ],
        &[],
    )?;
    println!("xtask: ci passed");
    Ok(())
}

/// Headless Chromium and its ChromeDriver for the dashboard's test: their paths. Installs
/// Debian's packages when they are missing and this runs as root with `apt-get`; otherwise
/// stops with the command that installs them.
fn browser() -> Result<(String, String), String> {
    const INSTALL: &str = "apt-get install -y chromium chromium-driver";
    let find = || {
        let chromium = std::env::var("FERROLITE_CHROMIUM")
            .ok()
            .filter(|p| !p.is_empty())
            .or_else(|| which("chromium"))
            .or_else(|| which("chromium-browser"));
        let driver = std::env::var("FERROLITE_CHROMEDRIVER")
            .ok()
            .filter(|p| !p.is_empty())
            .or_else(|| which("chromedriver"));
        chromium.zip(driver)
    };
    if let Some(found) = find() {
        return Ok(found);
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0");
    if root && which("apt-get").is_some() {
        run(
            Command::new("apt-get")
                .args(["install", "-y", "chromium", "chromium-driver"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
            INSTALL,
        )?;
        if let Some(found) = find() {
            return Ok(found);
        }
    }
    Err(format!(
        "headless Chromium and ChromeDriver are needed for the dashboard's test. Install them \
         with `sudo {INSTALL}` (Debian/Ubuntu), or name them in FERROLITE_CHROMIUM and \
         FERROLITE_CHROMEDRIVER, then run `cargo xtask ci` again"
    ))
}

/// `program`'s path on `PATH`, if it is there.
fn which(program: &str) -> Option<String> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .map(|found| found.display().to_string())
}

/// The pinned SDKs, one `name==version` a line (comments allowed), as pip reads them.
const PYTHON_REQUIREMENTS: &str = "xtask/python-requirements.txt";

/// The workspace's root (xtask lives one level below it).
fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| std::path::PathBuf::from("."))
}

/// Makes the tests' Python environment, `target/python-venv` (git ignores `target/`), with the
/// SDKs of [`PYTHON_REQUIREMENTS`], unless it is already complete: its marker file holds the
/// requirements it was filled from and is written only after pip succeeded, so an interrupted
/// install is redone and a changed requirements file reinstalls. The interpreter's path.
fn python_venv() -> Result<String, String> {
    let root = workspace_root();
    let requirements_path = root.join(PYTHON_REQUIREMENTS);
    let requirements = std::fs::read_to_string(&requirements_path)
        .map_err(|e| format!("cannot read {}: {e}", requirements_path.display()))?;
    let venv = root.join("target").join("python-venv");
    let python = venv.join("bin").join("python");
    let marker = venv.join("ferrolite-requirements.txt");
    let python_text = python.display().to_string();
    let runs = |program: &std::path::Path, args: &[&str]| {
        Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if std::fs::read_to_string(&marker).is_ok_and(|m| m == requirements)
        && runs(&python, &["-c", ""])
    {
        eprintln!("xtask: Python SDKs already in {}", venv.display());
        return Ok(python_text);
    }
    // `ensurepip` is what Debian's `python3` lacks without `python3-venv`: `venv` then fails.
    // The pinned SDKs need Python 3.10 or later.
    if !runs(
        std::path::Path::new("python3"),
        &[
            "-c",
            "import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 10))",
        ],
    ) {
        return Err(
            "`python3` (3.10 or later) with its `venv` module is needed for the SDK client \
             tests. Install it with `apt-get install -y python3 python3-venv` (Debian/Ubuntu) \
             or `brew install python` (macOS), then run `cargo xtask ci` again"
                .to_string(),
        );
    }
    let started = Instant::now();
    // A fresh environment: whatever an older or interrupted install left is thrown away.
    let _ = std::fs::remove_dir_all(&venv);
    run(
        Command::new("python3").args(["-m", "venv"]).arg(&venv),
        "python3 -m venv",
    )?;
    run(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .arg("-r")
            .arg(&requirements_path),
        "pip install",
    )?;
    std::fs::write(&marker, &requirements)
        .map_err(|e| format!("cannot write {}: {e}", marker.display()))?;
    eprintln!(
        "xtask: Python SDKs installed in {} ({:.1?})",
        venv.display(),
        started.elapsed()
    );
    Ok(python_text)
}

/// Runs `command`, which `what` names in the error when it fails.
fn run(command: &mut Command, what: &str) -> Result<(), String> {
    eprintln!("xtask: {what}");
    let status = command
        .status()
        .map_err(|e| format!("could not run {what}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{what}` failed ({status})"))
    }
}

fn redis_foreground() -> Result<(), String> {
    let mut server = RedisServer::start()?;
    println!("{}", server.url());
    println!("xtask: redis-server is running; press Ctrl-C to stop it");
    server
        .child
        .wait()
        .map_err(|e| format!("waiting for redis-server: {e}"))?;
    Ok(())
}

fn cargo(args: &[&str], envs: &[(&str, &str)]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    println!("xtask: cargo {}", args.join(" "));
    let status = Command::new(cargo)
        .args(args)
        .envs(envs.iter().copied())
        .status()
        .map_err(|e| format!("could not run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` failed ({status})", args.join(" ")))
    }
}

/// A private `redis-server` on a free loopback port, with no persistence; killed on drop.
struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    fn start() -> Result<Self, String> {
        let port = free_port().map_err(|e| format!("no free loopback port: {e}"))?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                format!(
                    "could not start redis-server ({e}). Install it (Debian/Ubuntu: \
                     `apt-get install redis-server`, macOS: `brew install redis`) or set REDIS_URL \
                     to a running server"
                )
            })?;
        let server = RedisServer { child, port };
        server.wait_ready(Duration::from_secs(10))?;
        println!("xtask: started redis-server on {}", server.url());
        Ok(server)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn wait_ready(&self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if ping(self.port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "redis-server on port {} did not answer PING within {limit:?}",
            self.port
        ))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
