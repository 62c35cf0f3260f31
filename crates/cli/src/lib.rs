//! # ferrolite-cli
//!
//! The `ferrolite` command:
//!
//! - `ferrolite simulate [--config FILE]`: sends a workload through the real router against
//!   mock deployments (as the config's `mock_*` settings and `simulation` section say) and
//!   prints what the router did: per deployment, per group, budgets, overhead, limits.
//! - `ferrolite check --config FILE`: validates a config and prints the groups it describes
//!   and the keys it accepted without effect ([`check_command`]).
//! - `ferrolite serve --config FILE [--port 4000] [--host 127.0.0.1]`: the OpenAI-compatible
//!   gateway over the router (`ferrolite::gateway`), reloaded on SIGHUP or when the file
//!   changes, with LiteLLM's background health checks ([`serve`]).
//! - `ferrolite status --url URL --key KEY`: a running gateway's `/router/state` (the
//!   cluster's routing state) as tables: replicas, groups, deployments, cooldowns.
//! - `ferrolite top --url URL --key KEY`: the same, live, in a terminal UI sorted by group,
//!   errors or fullness.
//!
//! Layering: `types <- cache-core <- {strategies, budgets} <- router <- ferrolite <- cli`.

mod check;
pub mod explain;
mod health;
mod lines;
mod logs;
pub mod report;
pub mod serve;
pub mod simulate;
pub mod status;
pub mod top;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ferrolite::Config;

pub use crate::check::check_command;
use crate::simulate::{Report, Workload};

/// The example config `simulate` uses when none is given.
pub const EXAMPLE_CONFIG: &str = include_str!("../../../examples/config.yaml");

/// ferrolite: an LLM deployment router.
#[derive(Debug, Parser)]
#[command(name = "ferrolite", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Log lines as text or as JSON (one object per line); the level comes from FERROLITE_LOG
    /// (default: info for serve, error otherwise).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How log lines are written (to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send a workload through the router against mock deployments and report what it did.
    Simulate(SimulateArgs),
    /// Validate a config and print the model groups it describes.
    Check(CheckArgs),
    /// Serve an OpenAI-compatible gateway over the router a config describes.
    Serve(ServeArgs),
    /// Show a running gateway's routing state (replicas, groups, deployments, cooldowns).
    Status(StatusArgs),
    /// Show a running gateway's routing state live, refreshing, in a terminal UI.
    Top(TopArgs),
}

/// `ferrolite status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The gateway's address.
    #[arg(long, default_value = "http://127.0.0.1:4000")]
    pub url: String,
    /// The gateway's master key (default: the FERROLITE_KEY environment variable).
    #[arg(long)]
    pub key: Option<String>,
    /// Print the state as JSON (`/router/state` without histories) instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Seconds to wait for the gateway's answer.
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
}

/// `ferrolite top`.
#[derive(Debug, clap::Args)]
pub struct TopArgs {
    /// The gateway's address.
    #[arg(long, default_value = "http://127.0.0.1:4000")]
    pub url: String,
    /// The gateway's master key (default: the FERROLITE_KEY environment variable).
    #[arg(long)]
    pub key: Option<String>,
    /// Seconds between two refreshes.
    #[arg(long, default_value_t = 2.0)]
    pub interval: f64,
}

/// `ferrolite serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// LiteLLM config.yaml.
    #[arg(long)]
    pub config: PathBuf,
    /// The port (LiteLLM's proxy uses 4000).
    #[arg(long, default_value_t = 4000)]
    pub port: u16,
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Seconds calls in flight get to finish after SIGTERM or Ctrl-C.
    #[arg(long, default_value_t = 30.0)]
    pub drain: f64,
}

/// `ferrolite simulate`.
#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// LiteLLM config.yaml (default: the example config in examples/config.yaml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Requests to send (default: the config's simulation.requests, else 2,000).
    #[arg(long)]
    pub requests: Option<u64>,
    /// Requests in flight at once (default: simulation.concurrency, else 20).
    #[arg(long, conflicts_with = "rate")]
    pub concurrency: Option<u32>,
    /// Open-loop arrivals per second (Poisson) instead of a fixed concurrency.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Stop sending after this many seconds (simulated time in memory).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Share of streamed requests, 0 to 1.
    #[arg(long)]
    pub stream_share: Option<f64>,
    /// Share of requests that repeat one of 16 recurring prompts, 0 to 1 (for the response
    /// cache, `cache_responses`).
    #[arg(long)]
    pub repeat_share: Option<f64>,
    /// Redis shared by the router instances (real time); without it the run is in memory on
    /// simulated time.
    #[arg(long)]
    pub redis: Option<String>,
    /// Router instances, each with its own cache.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub instances: u32,
    /// Random seed: the same seed replays the same run.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write a self-contained HTML report with charts to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Run the same seeded workload once per value of a config key and put the results side
    /// by side, e.g. `routing_strategy=simple-shuffle,usage-based-routing-v2` or
    /// `ferrolite_settings.window=fixed,sliding` (a key without a section is looked up in
    /// router_settings, or ferrolite_settings for ferrolite's own keys).
    #[arg(long, value_name = "KEY=A,B")]
    pub compare: Option<String>,
    /// Explain how the N-th request sent (1 for the first) was routed: the deployments left
    /// out and why, the strategy's scores, the pick, every attempt and fallback.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub explain: Option<u64>,
}

/// `ferrolite check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// LiteLLM config.yaml.
    #[arg(long)]
    pub config: PathBuf,
}

/// Runs the command line; the process' exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = if matches!(cli.command, Command::Serve(_)) {
        "info"
    } else {
        "error"
    };
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERROLITE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // OpenTelemetry traces (`ferrolite serve` only), on a runtime of their own.
    let traces = match &cli.command {
        Command::Serve(args) => match serve::start_traces(&args.config) {
            Ok(traces) => traces,
            Err(message) => {
                eprintln!("ferrolite: {message}");
                return ExitCode::FAILURE;
            }
        },
        _ => None,
    };
    let exporter = traces.as_ref().map(|t| &t.otel);
    // Lines go to standard error through a writer thread of their own (`logs`); `flush`
    // writes what is left when dropped.
    let (writer, flush) = logs::batched_stderr();
    // Colour only for a person at a terminal: a pipe, a file or a log collector gets plain text.
    let logs = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(writer);
    // The request path's lines (the gateway's `answered`) are written by `lines`' short way,
    // in the same text or JSON.
    let _ = match cli.log_format {
        LogFormat::Text => tracing_subscriber::registry()
            .with(
                logs.map_event_format(lines::Lines::text)
                    .with_filter(filter),
            )
            .try_init(),
        LogFormat::Json => tracing_subscriber::registry()
            .with(
                logs.json()
                    .map_event_format(lines::Lines::json)
                    .with_filter(filter),
            )
            .try_init(),
    };
    if let Some(otel) = exporter {
        let target = otel.target();
        tracing::info!(
            endpoint = %target.endpoint,
            protocol = ?target.protocol,
            service = %target.service_name,
            "exporting traces over OTLP"
        );
    }
    let result = match cli.command {
        Command::Simulate(args) => simulate_command(&args),
        Command::Check(args) => check_command(&args.config).map(|text| print!("{text}")),
        Command::Serve(args) => serve::serve_command(&args, exporter.map(|otel| otel.sink())),
        Command::Status(args) => status::status_command(&args).map(|text| print!("{text}")),
        Command::Top(args) => top::top_command(&args),
    };
    // The spans ended so far are exported, then every line logged so far is written before
    // the process says anything more or exits.
    if let Some(traces) = traces {
        traces.stop();
    }
    drop(flush);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("ferrolite: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Loads the config at `path`, or the example config.
pub fn load(path: Option<&Path>) -> Result<Config, String> {
    match path {
        Some(path) => Config::from_path(path).map_err(|e| e.to_string()),
        None => Config::from_yaml(EXAMPLE_CONFIG).map_err(|e| format!("examples/config.yaml: {e}")),
    }
}

/// The workload: flags over the config's `simulation` section over defaults.
pub fn workload(config: &Config, args: &SimulateArgs) -> Result<Workload, String> {
    let section = config.simulation.clone().unwrap_or_default();
    let mut groups: Vec<(String, f64)> = section.groups.into_iter().collect();
    if groups.is_empty() {
        let mut names: Vec<String> = config
            .deployments
            .iter()
            .map(|d| d.model_name.clone())
            .filter(|n| !n.contains('*'))
            .collect();
        names.sort();
        names.dedup();
        groups = names.into_iter().map(|n| (n, 1.0)).collect();
    }
    if groups.iter().all(|(_, w)| *w <= 0.0) {
        return Err("simulation.groups: no group has a share above 0".into());
    }
    let stream_share = args.stream_share.or(section.stream_share).unwrap_or(0.0);
    if !(0.0..=1.0).contains(&stream_share) {
        return Err(format!(
            "--stream-share: expected 0 to 1, got {stream_share}"
        ));
    }
    let repeat_share = args.repeat_share.or(section.repeat_share).unwrap_or(0.0);
    if !(0.0..=1.0).contains(&repeat_share) {
        return Err(format!(
            "--repeat-share: expected 0 to 1, got {repeat_share}"
        ));
    }
    let rate = args.rate.or(section.rate);
    if let Some(rate) = rate {
        if !rate.is_finite() || rate <= 0.0 {
            return Err(format!(
                "--rate: expected a number of requests per second > 0, got {rate}"
            ));
        }
    }
    let duration = match args.duration.or(section.duration_s) {
        Some(d) if d > 0.0 => Some(seconds("--duration", d)?),
        Some(d) => return Err(format!("--duration: expected seconds > 0, got {d}")),
        None => None,
    };
    let requests = match (args.requests.or(section.requests), duration) {
        (Some(n), _) => n,
        (None, Some(_)) => u64::MAX, // the duration ends the run
        (None, None) => 2_000,
    };
    Ok(Workload {
        requests,
        rate: if args.concurrency.is_some() {
            None
        } else {
            rate
        },
        duration,
        tags: section.tags.into_iter().collect(),
        concurrency: args
            .concurrency
            .or(section.concurrency)
            .unwrap_or(20)
            .max(1),
        groups,
        prompt_tokens: section.prompt_tokens.unwrap_or(300),
        max_tokens: section.max_tokens.unwrap_or(200),
        stream_share,
        repeat_share,
        instances: args.instances,
        redis: args.redis.clone(),
        seed: args.seed,
        explain: args.explain,
    })
}

/// ferrolite's own settings: a bare `--compare` key among these is in `ferrolite_settings`.
const FERROLITE_KEYS: [&str; 13] = [
    "admission",
    "window",
    "budget_windows",
    "sync_interval_ms",
    "failure_mode",
    "redis_key_prefix",
    "request_deadline",
    "retry_budget",
    "half_open",
    "deployment_affinity",
    "wait_queue",
    "lease_ttl",
    "seed",
];

/// The configs of a `--compare KEY=A,B` run: the config with `KEY` set to each value, labelled.
pub fn compare_configs(text: &str, spec: &str) -> Result<Vec<(String, Config)>, String> {
    let (key, values) = spec
        .split_once('=')
        .ok_or_else(|| format!("--compare: expected KEY=A,B, got {spec:?}"))?;
    let values: Vec<&str> = values
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    if key.trim().is_empty() || values.len() < 2 {
        return Err(format!(
            "--compare: expected a key and at least two values, got {spec:?}"
        ));
    }
    let path: Vec<String> = if key.contains('.') {
        key.split('.').map(str::to_string).collect()
    } else if FERROLITE_KEYS.contains(&key) {
        vec!["ferrolite_settings".into(), key.into()]
    } else {
        vec!["router_settings".into(), key.into()]
    };
    let document: serde_json::Value =
        serde_saphyr::from_str(text).map_err(|e| format!("the config: {e}"))?;
    let mut configs = Vec::with_capacity(values.len());
    for value in values {
        let mut patched = document.clone();
        let mut node = &mut patched;
        for (i, segment) in path.iter().enumerate() {
            let Some(object) = node.as_object_mut() else {
                return Err(format!(
                    "--compare: `{}` is not a section of the config",
                    path[..i].join(".")
                ));
            };
            if i + 1 == path.len() {
                object.insert(segment.clone(), scalar(value));
                break;
            }
            node = object
                .entry(segment.clone())
                .or_insert_with(|| serde_json::json!({}));
        }
        let json = serde_json::to_string(&patched).map_err(|e| e.to_string())?;
        let config =
            Config::from_yaml(&json).map_err(|e| format!("--compare {key}={value}: {e}"))?;
        configs.push((format!("{key}={value}"), config));
    }
    Ok(configs)
}

/// A flag's value as YAML would read it: a number, a boolean, else text.
fn scalar(value: &str) -> serde_json::Value {
    if let Ok(n) = value.parse::<i64>() {
        return n.into();
    }
    if let Ok(f) = value.parse::<f64>() {
        return f.into();
    }
    match value {
        "true" => true.into(),
        "false" => false.into(),
        other => other.into(),
    }
}

/// A comparison row: its name and how to read it from a run's report.
pub type CompareRow = (&'static str, fn(&Report) -> String);

/// The rows of a comparison.
pub fn compare_rows() -> Vec<CompareRow> {
    fn sum(report: &Report, f: fn(&simulate::DeploymentReport) -> u64) -> u64 {
        report.deployments.iter().map(f).sum()
    }
    fn latency(report: &Report, p: f64) -> String {
        let mut values: Vec<f64> = report.latencies.iter().map(|(_, ms)| *ms).collect();
        values.sort_by(f64::total_cmp);
        if values.is_empty() {
            return "-".into();
        }
        format!(
            "{:.0}",
            values[((values.len() - 1) as f64 * p).round() as usize]
        )
    }
    vec![
        ("answered", |r| r.succeeded.to_string()),
        ("failed", |r| r.failed.to_string()),
        ("retries", |r| {
            r.groups
                .values()
                .map(|g| g.retries)
                .sum::<u64>()
                .to_string()
        }),
        ("fallbacks", |r| {
            r.groups
                .values()
                .map(|g| g.fallbacks)
                .sum::<u64>()
                .to_string()
        }),
        ("cache hits", |r| r.cache_hits.to_string()),
        ("429s", |r| sum(r, |d| d.rate_limited).to_string()),
        ("other failures", |r| sum(r, |d| d.failures).to_string()),
        ("cooldowns", |r| sum(r, |d| d.cooldowns).to_string()),
        ("latency p50 ms", |r| latency(r, 0.5)),
        ("latency p99 ms", |r| latency(r, 0.99)),
        ("spend $", |r| {
            format!("{:.4}", r.deployments.iter().map(|d| d.spend).sum::<f64>())
        }),
        ("rpm limits", |r| {
            if r.limit_exceeded { "EXCEEDED" } else { "held" }.to_string()
        }),
        ("duration s", |r| format!("{:.1}", r.duration_s)),
    ]
}

/// A comparison as text: one column per run.
pub fn render_compare(runs: &[(String, Report)]) -> String {
    let mut out = String::new();
    let width = runs
        .iter()
        .map(|(l, _)| l.len())
        .max()
        .unwrap_or(10)
        .max(12);
    let _ = write!(out, "{:<16}", "");
    for (label, _) in runs {
        let _ = write!(out, " {label:>width$}");
    }
    let _ = writeln!(out);
    for (name, value) in compare_rows() {
        let _ = write!(out, "{name:<16}");
        for (_, report) in runs {
            let _ = write!(out, " {:>width$}", value(report));
        }
        let _ = writeln!(out);
    }
    out
}

fn simulate_command(args: &SimulateArgs) -> Result<(), String> {
    if let Some(spec) = &args.compare {
        return compare_command(args, spec);
    }
    let config = load(args.config.as_deref())?;
    let workload = workload(&config, args)?;
    let bar = if workload.requests == u64::MAX {
        // A duration ends the run: no total to count towards.
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {pos} requests {per_sec}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar
    } else {
        let bar = indicatif::ProgressBar::new(workload.requests);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {pos}/{len} requests [{bar:30}] {per_sec} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    };
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) || args.json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let progress = {
        let bar = bar.clone();
        move |done: u64, _total: u64| bar.set_position(done)
    };
    let report = run_blocking(config, &workload, &progress)?;
    bar.finish_and_clear();
    if args.json {
        let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        println!("{json}");
    } else {
        print!("{}", render(&report, &workload));
        if let Some(explained) = &report.explained {
            print!("\n{}", explain::render(explained));
        } else if let Some(n) = workload.explain {
            println!("\nrequest {n} was not sent (the run ended before it)");
        }
    }
    write_report(args, |source| report::html(&report, &workload, source))
}

/// Writes `--report`'s page (built from the config's name), if asked for.
fn write_report(args: &SimulateArgs, page: impl FnOnce(&str) -> String) -> Result<(), String> {
    let Some(path) = &args.report else {
        return Ok(());
    };
    let source = args.config.as_ref().map_or_else(
        || "examples/config.yaml".to_string(),
        |p| p.display().to_string(),
    );
    std::fs::write(path, page(&source))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    if !args.json {
        println!("report: {}", path.display());
    }
    Ok(())
}

fn compare_command(args: &SimulateArgs, spec: &str) -> Result<(), String> {
    let text = match &args.config {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        None => EXAMPLE_CONFIG.to_string(),
    };
    let configs = compare_configs(&text, spec)?;
    let mut runs = Vec::with_capacity(configs.len());
    let mut last = None;
    for (label, config) in configs {
        let workload = workload(&config, args)?;
        let report = run_blocking(config, &workload, &|_, _| {})?;
        runs.push((label, report));
        last = Some(workload);
    }
    if args.json {
        let map: BTreeMap<&str, &Report> = runs.iter().map(|(l, r)| (l.as_str(), r)).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&map).map_err(|e| e.to_string())?
        );
    } else {
        print!("{}", render_compare(&runs));
    }
    match last {
        Some(workload) => write_report(args, |source| {
            report::html_compare(&runs, &workload, source)
        }),
        None => Ok(()),
    }
}

/// Runs the simulation on the right runtime: paused time in memory, real time with Redis.
pub fn run_blocking(
    config: Config,
    workload: &Workload,
    progress: &(dyn Fn(u64, u64) + Send + Sync),
) -> Result<Report, String> {
    let runtime = if workload.redis.is_some() {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
    }
    .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime
        .block_on(simulate::run(config, workload, progress))
        .map_err(|e| e.to_string())
}

/// The report as the tables a user reads.
pub fn render(report: &Report, workload: &Workload) -> String {
    let mut out = String::new();
    write_run(&mut out, report, workload);
    let _ = writeln!(out);
    write_deployments(&mut out, report);
    write_left_out(&mut out, report);
    let _ = writeln!(out);
    write_groups(&mut out, report);
    write_findings(&mut out, report);
    out
}

/// The run in one line: requests, groups, duration, time and state, outcome.
fn write_run(out: &mut String, report: &Report, workload: &Workload) {
    let _ = writeln!(
        out,
        "{} requests to {} over {:.1} s of {} ({}, {} router instance{}): {} answered, {} failed",
        report.requests,
        workload
            .groups
            .iter()
            .map(|(g, _)| g.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        report.duration_s,
        if workload.redis.is_some() {
            "real time"
        } else {
            "simulated time"
        },
        match (&workload.redis, workload.instances) {
            (Some(_), _) => "state in Redis",
            (None, 1) => "state in memory",
            // Nothing shared: each instance holds every limit on its own.
            (None, _) => "state in memory per instance: limits not shared without --redis",
        },
        workload.instances,
        if workload.instances == 1 { "" } else { "s" },
        report.succeeded,
        report.failed,
    );
}

/// The table of deployments: calls, outcomes, cooldowns, latency, tokens, spend, peak rpm.
fn write_deployments(out: &mut String, report: &Report) {
    let _ = writeln!(
        out,
        "{:<22} {:<12} {:>8} {:>8} {:>6} {:>7} {:>9} {:>9} {:>9} {:>10} {:>9} {:>16}",
        "deployment",
        "group",
        "requests",
        "success",
        "429s",
        "failed",
        "cooldowns",
        "p50 ms",
        "p99 ms",
        "tokens",
        "spend $",
        "peak rpm / rpm"
    );
    let shown = shown_deployments(report);
    for d in report
        .deployments
        .iter()
        .enumerate()
        .filter(|(i, _)| shown.as_ref().is_none_or(|s| s.contains(i)))
        .map(|(_, d)| d)
    {
        let limit = d.rpm.map_or_else(
            || format!("{:.0} / -", d.peak_rpm),
            |rpm| format!("{:.0} / {rpm}", d.peak_rpm),
        );
        let _ = writeln!(
            out,
            "{:<22} {:<12} {:>8} {:>8} {:>6} {:>7} {:>9} {:>9.1} {:>9.1} {:>10} {:>9.4} {:>16}",
            truncate(&d.id, 22),
            truncate(&d.group, 12),
            d.requests,
            d.successes,
            d.rate_limited,
            d.failures,
            d.cooldowns,
            d.p50_ms,
            d.p99_ms,
            d.tokens,
            d.spend,
            limit
        );
    }
}

/// Rows of the deployments table past which only the most telling deployments are printed.
const DEPLOYMENT_ROWS: usize = 40;

/// Which deployments the table prints when there are more than [`DEPLOYMENT_ROWS`] (positions
/// in the report; `None`: all): first those with something to see (failures, 429s, cooldowns,
/// a peak over the limit), then the busiest. A line after the table says how many were left
/// out; `--json` and `--report` keep every one.
fn shown_deployments(report: &Report) -> Option<std::collections::HashSet<usize>> {
    if report.deployments.len() <= DEPLOYMENT_ROWS {
        return None;
    }
    let mut order: Vec<usize> = (0..report.deployments.len()).collect();
    order.sort_by_key(|&i| {
        let d = &report.deployments[i];
        let exceeded = d.rpm.is_some_and(|rpm| d.peak_rpm > rpm as f64);
        let notable = exceeded || d.failures > 0 || d.rate_limited > 0 || d.cooldowns > 0;
        (std::cmp::Reverse(notable), std::cmp::Reverse(d.requests), i)
    });
    Some(order.into_iter().take(DEPLOYMENT_ROWS).collect())
}

/// The line under a shortened deployments table: how many deployments and requests it leaves out.
fn write_left_out(out: &mut String, report: &Report) {
    let Some(shown) = shown_deployments(report) else {
        return;
    };
    let (count, requests) = report
        .deployments
        .iter()
        .enumerate()
        .filter(|(i, _)| !shown.contains(i))
        .fold((0u64, 0u64), |(n, r), (_, d)| (n + 1, r + d.requests));
    let _ = writeln!(
        out,
        "... {count} more deployments with {requests} requests not shown (those with failures, 429s or cooldowns and the busiest are); --json or --report lists all"
    );
}

/// The table of model groups: requests, outcomes, retries and fallbacks.
fn write_groups(out: &mut String, report: &Report) {
    let _ = writeln!(
        out,
        "{:<22} {:>8} {:>9} {:>7} {:>8} {:>10}",
        "group", "requests", "answered", "failed", "retries", "fallbacks"
    );
    for (group, g) in &report.groups {
        let _ = writeln!(
            out,
            "{:<22} {:>8} {:>9} {:>7} {:>8} {:>10}",
            truncate(group, 22),
            g.requests,
            g.succeeded,
            g.failed,
            g.retries,
            g.fallbacks
        );
    }
}

/// What the tables do not show: the errors of failed requests, budgets, the response cache,
/// the router's overhead, and whether every rpm limit held.
fn write_findings(out: &mut String, report: &Report) {
    if !report.errors.is_empty() {
        let errors: Vec<String> = report
            .errors
            .iter()
            .map(|(e, n)| format!("{e} x{n}"))
            .collect();
        let _ = writeln!(out, "\nfailed requests: {}", errors.join(", "));
    }
    if !report.budgets.is_empty() {
        let _ = writeln!(out, "\nbudgets:");
        for (scope, spend, limit) in &report.budgets {
            let _ = writeln!(out, "  {scope:<30} ${spend:.4} of ${limit:.2}");
        }
    }
    if report.response_cache {
        let _ = writeln!(
            out,
            "\nresponse cache: {} of {} requests answered from the cache ({:.1} %), no deployment called",
            report.cache_hits,
            report.requests,
            100.0 * report.cache_hits as f64 / report.requests.max(1) as f64
        );
    }
    match (report.overhead_p50_us, report.overhead_p99_us) {
        (Some(p50), Some(p99)) => {
            let _ = writeln!(
                out,
                "\nrouter overhead per call: p50 {p50:.1} us, p99 {p99:.1} us"
            );
        }
        _ => {
            let _ = writeln!(
                out,
                "\nCPU per request (router, mock backend and workload, simulated time): {:.1} us",
                report.cpu_per_request_us
            );
        }
    }
    let _ = writeln!(
        out,
        "rpm limits: {}",
        if report.limit_exceeded {
            "EXCEEDED on some deployment (see peak rpm / rpm)"
        } else {
            "held (no deployment's rpm window ever counted more than its rpm)"
        }
    );
}

/// `text` cut to `width` characters, a `~` marking the cut.
fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let kept: String = text.chars().take(width.saturating_sub(1)).collect();
    format!("{kept}~")
}

/// `value` seconds, the value of `flag` (or of its config field), as a duration: refused with
/// the flag named, not a panic, when it is negative, not a number or too large for one.
pub(crate) fn seconds(flag: &str, value: f64) -> Result<std::time::Duration, String> {
    std::time::Duration::try_from_secs_f64(value).map_err(|_| {
        format!("{flag}: expected a number of seconds >= 0 that fits a duration, got {value:?}")
    })
}
