//! `ferrolite simulate --explain N`: one request's routing as a terminal reads it.

use std::fmt::Write as _;

use ferrolite::router::{Pick, Route};

use crate::simulate::Explained;

/// The explanation of one request of a run, as lines for a terminal: the outcome, each
/// selection's deployments (left out and why, or scored), the pick, the attempts, the
/// fallbacks.
pub fn render(explained: &Explained) -> String {
    let route = &explained.route;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "request {} (at {:.3} s): model {}, strategy {}",
        explained.request, explained.at_s, route.model, route.strategy
    );
    write_outcome(&mut out, route);
    for (i, pick) in route.picks.iter().enumerate() {
        let _ = writeln!(out);
        write_pick(&mut out, i + 1, pick);
    }
    if !route.attempts.is_empty() {
        let _ = writeln!(out, "\nattempts");
        for (i, a) in route.attempts.iter().enumerate() {
            let error = match (a.error, a.status) {
                (Some(class), Some(status)) => format!(" {class} {status}"),
                (Some(class), None) => format!(" {class}"),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "  {:>2}. {:<22} {:<14} {:<28} waited {:>7} ms, took {:>9.1} ms",
                i + 1,
                a.deployment,
                a.model_group,
                format!("{}{error}", a.outcome),
                a.wait_ms,
                a.latency_ms
            );
        }
    }
    if !route.fallbacks.is_empty() {
        let _ = writeln!(out, "\nfallbacks");
        for f in &route.fallbacks {
            let after = f.after.map(|a| format!(" after {a}")).unwrap_or_default();
            let _ = writeln!(out, "  {} -> {} ({}{after})", f.from, f.to, f.kind);
        }
    }
    out
}

/// Who answered, or that nobody did.
fn write_outcome(out: &mut String, route: &Route) {
    if route.cache_hit {
        let _ = writeln!(
            out,
            "  answered by the response cache: no deployment was called"
        );
        return;
    }
    let attempts = route.attempts.len();
    let plural = if attempts == 1 { "" } else { "s" };
    match (&route.deployment, &route.model_group) {
        (Some(deployment), Some(group)) => {
            let _ = writeln!(
                out,
                "  answered by {deployment} ({group}) after {attempts} attempt{plural}, {} fallback{}",
                route.fallbacks.len(),
                if route.fallbacks.len() == 1 { "" } else { "s" }
            );
        }
        _ => {
            let _ = writeln!(out, "  failed after {attempts} attempt{plural}");
        }
    }
}

/// One selection: a row per deployment, then the pick or why there was none.
fn write_pick(out: &mut String, n: usize, pick: &Pick) {
    let scored = pick
        .score
        .map(|name| format!(", scored by {name} (lower wins)"))
        .unwrap_or_default();
    let _ = writeln!(out, "pick {n}: {}{scored}", pick.destination);
    for c in &pick.candidates {
        let (state, why) = match c.excluded {
            Some(why) => ("left out", why.as_str()),
            None => ("candidate", ""),
        };
        let mut line = format!("  {:<22} {:<10} {:<15}", c.deployment, state, why);
        if let Some(score) = c.score {
            let _ = write!(line, " score {score:<10.4}");
        }
        if let Some(detail) = &c.detail {
            let _ = write!(line, " {detail}");
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    match (&pick.picked, &pick.error) {
        (Some(picked), _) => {
            let _ = writeln!(out, "  -> {picked} (by {})", pick.by.unwrap_or("strategy"));
        }
        (None, Some(error)) => {
            let _ = writeln!(out, "  -> none: {error}");
        }
        (None, None) => {
            let _ = writeln!(out, "  -> none");
        }
    }
}
