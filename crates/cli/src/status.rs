//! `ferrolite status --url URL --key KEY`: a gateway's `GET /router/state` (the cluster's
//! routing state) as tables in the terminal — the replicas, the model groups, every deployment
//! with its windows and leases against their limits, and the cooldowns in force with their
//! cause. `ferrolite top` (`top.rs`) shows the same rows live; both take them from here.

use std::fmt::Write as _;
use std::time::Duration;

use ferrolite::router::{Condition, DeploymentState, RouterState};

use crate::StatusArgs;

/// Reads `/router/state` from the gateway at `url` with the master key `key` (without each
/// deployment's history, which neither view shows).
pub(crate) async fn fetch(
    client: &reqwest::Client,
    url: &str,
    key: Option<&str>,
) -> Result<RouterState, String> {
    let endpoint = format!("{}/router/state?history=false", url.trim_end_matches('/'));
    let mut request = client.get(&endpoint);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request
        .send()
        .await
        .map_err(|e| format!("cannot reach {endpoint}: {}", without_url(e)))?;
    let status = response.status();
    if status == reqwest::StatusCode::UNAUTHORIZED {
        return Err(format!(
            "{endpoint} answered 401: give the gateway's master key with --key"
        ));
    }
    if status == reqwest::StatusCode::FORBIDDEN {
        return Err(format!(
            "{endpoint} answered 403: the router state needs the master key, not an API key"
        ));
    }
    if !status.is_success() {
        return Err(format!("{endpoint} answered {status}"));
    }
    response
        .json::<RouterState>()
        .await
        .map_err(|e| format!("{endpoint} answered something that is not a router state: {e}"))
}

/// A reqwest error's text without the URL it names (it is in the message already).
fn without_url(error: reqwest::Error) -> String {
    use std::error::Error as _;
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

/// A client for the status views (TLS through rustls and ring, as the gateway's backends).
pub(crate) fn client(timeout: Duration) -> Result<reqwest::Client, String> {
    // A second install (another client in this process) fails harmlessly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// `ferrolite status`.
pub(crate) fn status_command(args: &StatusArgs) -> Result<String, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let key = args
        .key
        .clone()
        .or_else(|| std::env::var("FERROLITE_KEY").ok());
    let state = runtime.block_on(async {
        let client = client(crate::seconds("--timeout", args.timeout)?)?;
        fetch(&client, &args.url, key.as_deref()).await
    })?;
    if args.json {
        return serde_json::to_string_pretty(&state).map_err(|e| e.to_string());
    }
    Ok(render(&state, &args.url))
}

/// How the deployments are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sort {
    /// By group, then configuration order.
    #[default]
    Group,
    /// Most failing first (error rate, then failures).
    Errors,
    /// Fullest first (the highest of rpm, tpm and leases against their limits).
    Fullness,
}

impl Sort {
    /// Its name on screen.
    pub fn name(self) -> &'static str {
        match self {
            Sort::Group => "group",
            Sort::Errors => "errors",
            Sort::Fullness => "fullness",
        }
    }
}

/// One deployment's row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Its group.
    pub group: String,
    /// Its deployment.
    pub deployment: DeploymentState,
}

/// How full a deployment is: the highest of its rpm, tpm and leases against their limits
/// (0 without limits).
pub fn fullness(d: &DeploymentState) -> f64 {
    let share = |used: u64, limit: Option<u64>| match limit {
        Some(0) => 1.0,
        Some(limit) => used as f64 / limit as f64,
        None => 0.0,
    };
    share(d.rpm.used, d.rpm.limit)
        .max(share(d.tpm.used, d.tpm.limit))
        .max(share(d.leases.held, d.leases.max))
}

/// Every deployment of `state` as a row, in `sort` order.
pub fn rows(state: &RouterState, sort: Sort) -> Vec<Row> {
    let mut rows: Vec<Row> = state
        .groups
        .iter()
        .flat_map(|g| {
            g.deployments.iter().map(|d| Row {
                group: g.model_group.clone(),
                deployment: d.clone(),
            })
        })
        .collect();
    match sort {
        Sort::Group => {}
        Sort::Errors => rows.sort_by(|a, b| {
            let (a, b) = (&a.deployment.errors, &b.deployment.errors);
            b.rate.total_cmp(&a.rate).then(b.fails.cmp(&a.fails))
        }),
        Sort::Fullness => {
            rows.sort_by(|a, b| fullness(&b.deployment).total_cmp(&fullness(&a.deployment)));
        }
    }
    rows
}

/// `used/limit`, `used/-` without a limit.
pub fn used(used: u64, limit: Option<u64>) -> String {
    match limit {
        Some(limit) => format!("{used}/{limit}"),
        None => format!("{used}/-"),
    }
}

/// A number of milliseconds, `-` for none.
pub fn millis(ms: Option<f64>) -> String {
    match ms {
        Some(ms) if ms >= 10_000.0 => format!("{:.1}s", ms / 1000.0),
        Some(ms) if ms >= 100.0 => format!("{ms:.0}ms"),
        Some(ms) => format!("{ms:.1}ms"),
        None => "-".to_string(),
    }
}

/// A state's word.
pub fn condition(state: Condition) -> &'static str {
    match state {
        Condition::Healthy => "healthy",
        Condition::Cooldown => "cooldown",
        Condition::Unhealthy => "unhealthy",
        Condition::Probing => "probing",
    }
}

/// A Unix ms time as `HH:MM:SS` UTC.
pub fn clock(ms: u64) -> String {
    let seconds = (ms / 1000) % 86_400;
    format!(
        "{:02}:{:02}:{:02}",
        seconds / 3600,
        (seconds / 60) % 60,
        seconds % 60
    )
}

/// How far `until` lies after `now` (both Unix ms): `in 1m05s`, `now`.
pub fn in_time(until: u64, now: u64) -> String {
    let seconds = until.saturating_sub(now).div_ceil(1000);
    match seconds {
        0 => "now".to_string(),
        1..60 => format!("in {seconds}s"),
        60..3600 => format!("in {}m{:02}s", seconds / 60, seconds % 60),
        _ => format!("in {}h{:02}m", seconds / 3600, (seconds / 60) % 60),
    }
}

/// How long before `now` `then` was (both Unix ms): `3s ago`.
pub fn ago(then: u64, now: u64) -> String {
    let seconds = now.saturating_sub(then) / 1000;
    match seconds {
        0..60 => format!("{seconds}s ago"),
        60..3600 => format!("{}m ago", seconds / 60),
        _ => format!("{}h ago", seconds / 3600),
    }
}

/// The deployments table's columns.
pub const DEPLOYMENT_COLUMNS: [&str; 11] = [
    "GROUP",
    "DEPLOYMENT",
    "MODEL",
    "STATE",
    "RPM",
    "TPM",
    "LEASES",
    "P50",
    "P99",
    "ERRORS",
    "COOLDOWN",
];

/// A deployment's cells, in [`DEPLOYMENT_COLUMNS`] order.
pub fn deployment_cells(row: &Row, now: u64) -> [String; 11] {
    let d = &row.deployment;
    let errors = if d.errors.fails + d.errors.successes == 0 {
        "-".to_string()
    } else {
        format!(
            "{:.0}% of {}",
            d.errors.rate * 100.0,
            d.errors.fails + d.errors.successes
        )
    };
    let cooldown = d.cooldown.as_ref().map_or_else(
        || "-".to_string(),
        |c| {
            format!(
                "{} {}",
                in_time(c.until_ms, now),
                c.class.as_deref().unwrap_or("")
            )
            .trim_end()
            .to_string()
        },
    );
    [
        row.group.clone(),
        d.id.clone(),
        d.model.clone(),
        condition(d.state).to_string(),
        used(d.rpm.used, d.rpm.limit),
        used(d.tpm.used, d.tpm.limit),
        used(d.leases.held, d.leases.max),
        millis(d.latency_ms.p50),
        millis(d.latency_ms.p99),
        errors,
        cooldown,
    ]
}

/// The replicas table's columns.
pub const REPLICA_COLUMNS: [&str; 6] = ["REPLICA", "VERSION", "CONFIG", "REQ/S", "SEEN", "STARTED"];

/// A replica's cells, in [`REPLICA_COLUMNS`] order (the answering one marked `*`, another
/// config flagged).
pub fn replica_cells(state: &RouterState, r: &ferrolite::router::ReplicaState) -> [String; 6] {
    let now = state.generated_at_ms;
    let mut id = r.id.clone();
    if r.id == state.replica {
        id.push_str(" *");
    }
    let mut config = if r.config_hash.is_empty() {
        "-".to_string()
    } else {
        r.config_hash.clone()
    };
    if !r.same_config {
        config.push_str(" (different config)");
    }
    [
        id,
        r.version.clone(),
        config,
        format!("{:.1}", r.requests_per_second),
        ago(r.last_seen_ms, now),
        clock(r.started_at_ms),
    ]
}

/// Lines of a table: a header and rows, each column as wide as its widest cell.
fn table<const N: usize>(out: &mut String, header: [&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (cell, width) in cells.zip(widths) {
            let _ = write!(text, "  {cell:<width$}");
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
}

/// The whole state as text: a title line, then the replicas, groups, deployments and
/// cooldowns tables.
pub fn render(state: &RouterState, url: &str) -> String {
    let now = state.generated_at_ms;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "ferrolite at {url}: replica {}, {}, at {} UTC",
        state.replica,
        if state.shared {
            "state shared through Redis"
        } else {
            "state of this process only (no Redis)"
        },
        clock(now)
    );
    let other = state.replicas.iter().filter(|r| !r.same_config).count();
    let _ = writeln!(
        out,
        "\nReplicas ({}{})",
        state.replicas.len(),
        if other > 0 {
            format!(", {other} with a different config")
        } else {
            String::new()
        }
    );
    let replicas: Vec<[String; 6]> = state
        .replicas
        .iter()
        .map(|r| replica_cells(state, r))
        .collect();
    table(&mut out, REPLICA_COLUMNS, &replicas);

    let _ = writeln!(out, "\nModel groups ({})", state.groups.len());
    let groups: Vec<[String; 6]> = state
        .groups
        .iter()
        .map(|g| {
            let count = |c: Condition| g.deployments.iter().filter(|d| d.state == c).count();
            let rpm: u64 = g.deployments.iter().map(|d| d.rpm.used).sum();
            let tpm: u64 = g.deployments.iter().map(|d| d.tpm.used).sum();
            [
                g.model_group.clone(),
                g.deployments.len().to_string(),
                count(Condition::Healthy).to_string(),
                (count(Condition::Cooldown) + count(Condition::Unhealthy)).to_string(),
                rpm.to_string(),
                tpm.to_string(),
            ]
        })
        .collect();
    table(
        &mut out,
        ["GROUP", "DEPLOYMENTS", "HEALTHY", "OUT", "RPM", "TPM"],
        &groups,
    );

    let rows = rows(state, Sort::Group);
    let _ = writeln!(
        out,
        "\nDeployments ({}; rpm, tpm, leases and errors in the current window of every replica, \
         latency of this replica's calls)",
        rows.len()
    );
    let cells: Vec<[String; 11]> = rows.iter().map(|r| deployment_cells(r, now)).collect();
    table(&mut out, DEPLOYMENT_COLUMNS, &cells);

    let cooling: Vec<[String; 6]> = rows
        .iter()
        .filter_map(|r| {
            let c = r.deployment.cooldown.as_ref()?;
            Some([
                r.group.clone(),
                r.deployment.id.clone(),
                format!("{} ({})", clock(c.until_ms), in_time(c.until_ms, now)),
                c.class.clone().unwrap_or_else(|| "-".into()),
                c.status.map_or_else(|| "-".into(), |s| s.to_string()),
                c.message.clone().unwrap_or_default(),
            ])
        })
        .collect();
    let _ = writeln!(out, "\nCooldowns ({})", cooling.len());
    if cooling.is_empty() {
        out.push_str("  none\n");
    } else {
        table(
            &mut out,
            [
                "GROUP",
                "DEPLOYMENT",
                "UNTIL (UTC)",
                "CAUSE",
                "STATUS",
                "MESSAGE",
            ],
            &cooling,
        );
    }
    out
}
