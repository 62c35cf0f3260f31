//! `ferrolite simulate --report FILE.html`: one self-contained HTML file (inline SVG, no script,
//! no network) with the run's charts: requests per deployment over time, latency percentiles
//! over time, cooldowns as bands, each deployment's rpm window against its limit, and budget
//! spend against the limits.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::simulate::{Report, Workload};

const PALETTE: [&str; 8] = [
    "#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777",
];
const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 260.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 160.0;
const TOP: f64 = 20.0;
const BOTTOM: f64 = 40.0;

/// Escapes text for HTML and SVG.
fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A "nice" tick step (1, 2 or 5 times a power of ten) for about `ticks` ticks over `range`.
fn nice_step(range: f64, ticks: f64) -> f64 {
    let raw = (range / ticks).max(1e-9);
    let magnitude = 10f64.powf(raw.log10().floor());
    for step in [1.0, 2.0, 5.0, 10.0] {
        if raw <= step * magnitude {
            return step * magnitude;
        }
    }
    10.0 * magnitude
}

/// An axis' top: the value rounded up to a whole number of nice steps.
fn nice_max(value: f64, ticks: f64) -> f64 {
    if value <= 0.0 {
        return 1.0;
    }
    let step = nice_step(value, ticks);
    (value / step).ceil() * step
}

/// Plot area: x over `[0, x_max]`, y over `[0, y_max]`.
struct Frame {
    x_max: f64,
    y_max: f64,
}

impl Frame {
    fn x(&self, v: f64) -> f64 {
        LEFT + (WIDTH - LEFT - RIGHT) * (v / self.x_max).clamp(0.0, 1.0)
    }
    fn y(&self, v: f64) -> f64 {
        TOP + (HEIGHT - TOP - BOTTOM) * (1.0 - (v / self.y_max).clamp(0.0, 1.0))
    }

    /// Axes, grid lines and labels.
    fn axes(&self, out: &mut String, x_label: &str, y_label: &str) {
        let _ = write!(
            out,
            r##"<svg viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img">"##
        );
        let y_step = nice_step(self.y_max, 4.0);
        for v in (0..=(self.y_max / y_step).round() as u32).map(|i| f64::from(i) * y_step) {
            let y = self.y(v);
            let _ = write!(
                out,
                r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#e5e7eb"/><text x="{}" y="{:.1}" font-size="11" text-anchor="end" fill="#374151">{}</text>"##,
                WIDTH - RIGHT,
                LEFT - 6.0,
                y + 4.0,
                fmt_num(v)
            );
        }
        let x_step = nice_step(self.x_max, 6.0);
        for v in (0..=(self.x_max / x_step).floor() as u32).map(|i| f64::from(i) * x_step) {
            let x = self.x(v);
            let _ = write!(
                out,
                r##"<text x="{x:.1}" y="{}" font-size="11" text-anchor="middle" fill="#374151">{}</text>"##,
                HEIGHT - BOTTOM + 16.0,
                fmt_num(v)
            );
        }
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{}" stroke="#9ca3af"/><line x1="{LEFT}" x2="{}" y1="{}" y2="{}" stroke="#9ca3af"/><text x="{}" y="{}" font-size="12" text-anchor="middle" fill="#111827">{}</text><text x="14" y="{}" font-size="12" text-anchor="middle" fill="#111827" transform="rotate(-90 14 {})">{}</text>"##,
            HEIGHT - BOTTOM,
            WIDTH - RIGHT,
            HEIGHT - BOTTOM,
            HEIGHT - BOTTOM,
            (LEFT + WIDTH - RIGHT) / 2.0,
            HEIGHT - 6.0,
            esc(x_label),
            (TOP + HEIGHT - BOTTOM) / 2.0,
            (TOP + HEIGHT - BOTTOM) / 2.0,
            esc(y_label)
        );
    }
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 || v == v.round() {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// A legend entry at row `i` of the right margin.
fn legend(out: &mut String, i: usize, color: &str, label: &str, dashed: bool) {
    let y = TOP + 14.0 + 18.0 * i as f64;
    let x = WIDTH - RIGHT + 12.0;
    let dash = if dashed {
        r#" stroke-dasharray="5 4""#
    } else {
        ""
    };
    let _ = write!(
        out,
        r##"<line x1="{x}" x2="{}" y1="{y}" y2="{y}" stroke="{color}" stroke-width="3"{dash}/><text x="{}" y="{}" font-size="12" fill="#111827">{}</text>"##,
        x + 18.0,
        x + 24.0,
        y + 4.0,
        esc(label)
    );
}

/// Lines of `series` (name, points), with optional dashed horizontal limits per series.
fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
    limits: &[(String, f64)],
    x_max: f64,
) -> String {
    let y_top = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
        .chain(limits.iter().map(|(_, l)| *l))
        .fold(0.0, f64::max);
    let frame = Frame {
        x_max: x_max.max(1.0),
        y_max: nice_max(y_top * 1.05, 4.0),
    };
    let mut out = format!("<h2>{}</h2>", esc(title));
    frame.axes(&mut out, x_label, y_label);
    for (i, (name, points)) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let path: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", frame.x(*x), frame.y(*y)))
            .collect();
        if !path.is_empty() {
            let _ = write!(
                out,
                r##"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"##,
                path.join(" ")
            );
        }
        legend(&mut out, i, color, name, false);
        if let Some((_, limit)) = limits.iter().find(|(n, _)| n == name) {
            let y = frame.y(*limit);
            let _ = write!(
                out,
                r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="{color}" stroke-width="1.5" stroke-dasharray="5 4"/>"##,
                WIDTH - RIGHT
            );
        }
    }
    if !limits.is_empty() {
        legend(&mut out, series.len(), "#6b7280", "limit (dashed)", true);
    }
    out.push_str("</svg>");
    out
}

/// Horizontal bands per deployment: when each was cooled down.
fn band_chart(title: &str, rows: &[(String, Vec<(f64, f64)>)], x_max: f64) -> String {
    let frame = Frame {
        x_max: x_max.max(1.0),
        y_max: 1.0,
    };
    let mut out = format!("<h2>{}</h2>", esc(title));
    let row_height = (HEIGHT - TOP - BOTTOM) / rows.len().max(1) as f64;
    let _ = write!(
        out,
        r##"<svg viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img">"##
    );
    for (i, (name, spans)) in rows.iter().enumerate() {
        let y = TOP + row_height * i as f64;
        let color = PALETTE[i % PALETTE.len()];
        let _ = write!(
            out,
            r##"<rect x="{LEFT}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{}"/><text x="{}" y="{:.1}" font-size="12" fill="#111827">{}</text>"##,
            WIDTH - LEFT - RIGHT,
            row_height - 4.0,
            if i % 2 == 0 { "#f9fafb" } else { "#f3f4f6" },
            WIDTH - RIGHT + 12.0,
            y + row_height / 2.0 + 4.0,
            esc(name)
        );
        for (from, to) in spans {
            let x1 = frame.x(*from);
            let x2 = frame.x(*to).max(x1 + 2.0);
            let _ = write!(
                out,
                r##"<rect x="{x1:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{color}" opacity="0.8"><title>{} cooled down from {from:.1} s to {to:.1} s</title></rect>"##,
                y + 3.0,
                x2 - x1,
                row_height - 10.0,
                esc(name)
            );
        }
    }
    let x_step = nice_step(frame.x_max, 6.0);
    for v in (0..=(frame.x_max / x_step).floor() as u32).map(|i| f64::from(i) * x_step) {
        let _ = write!(
            out,
            r##"<text x="{:.1}" y="{}" font-size="11" text-anchor="middle" fill="#374151">{}</text>"##,
            frame.x(v),
            HEIGHT - BOTTOM + 16.0,
            fmt_num(v)
        );
    }
    let _ = write!(
        out,
        r##"<text x="{}" y="{}" font-size="12" text-anchor="middle" fill="#111827">seconds into the run</text></svg>"##,
        (LEFT + WIDTH - RIGHT) / 2.0,
        HEIGHT - 6.0
    );
    out
}

/// Horizontal bars: spend against limit per budget.
fn budget_chart(budgets: &[(String, f64, f64)]) -> String {
    let mut out = String::from("<h2>Budget spend against limits</h2>");
    if budgets.is_empty() {
        out.push_str("<p>No budgets configured.</p>");
        return out;
    }
    let height = TOP + 34.0 * budgets.len() as f64 + 10.0;
    let _ = write!(
        out,
        r##"<svg viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" role="img">"##
    );
    let span = WIDTH - 220.0 - RIGHT;
    for (i, (scope, spend, limit)) in budgets.iter().enumerate() {
        let y = TOP + 34.0 * i as f64;
        let share = if *limit > 0.0 {
            (spend / limit).min(1.0)
        } else {
            1.0
        };
        let color = if share >= 1.0 { "#dc2626" } else { "#16a34a" };
        let _ = write!(
            out,
            r##"<text x="10" y="{:.1}" font-size="12" fill="#111827">{}</text><rect x="200" y="{y:.1}" width="{span:.1}" height="22" fill="#e5e7eb"/><rect x="200" y="{y:.1}" width="{:.1}" height="22" fill="{color}"/><text x="{:.1}" y="{:.1}" font-size="12" fill="#111827">${spend:.2} of ${limit:.2} ({:.0} %)</text>"##,
            y + 15.0,
            esc(scope),
            span * share,
            200.0 + span + 8.0,
            y + 15.0,
            share * 100.0
        );
    }
    out.push_str("</svg>");
    out
}

/// Buckets of `bucket` seconds over `[0, end]`.
fn buckets(end: f64, bucket: f64) -> Vec<f64> {
    let n = (end / bucket).ceil().max(1.0) as usize;
    (0..n).map(|i| i as f64 * bucket).collect()
}

/// The whole report page of one run.
pub fn html(report: &Report, workload: &Workload, source: &str) -> String {
    page(&format!(
        "<h1>ferrolite simulate</h1>\n{}",
        section(report, workload, source)
    ))
}

/// The page of a `--compare` run: a table of the runs side by side, then each run's section.
pub fn html_compare(runs: &[(String, Report)], workload: &Workload, source: &str) -> String {
    let mut body = String::from("<h1>ferrolite simulate: compared</h1>\n");
    body.push_str(&compare_table(runs));
    for (label, report) in runs {
        let _ = write!(
            body,
            "<h1 style=\"margin-top:48px\">{}</h1>\n{}",
            esc(label),
            section(report, workload, source)
        );
    }
    page(&body)
}

/// The runs side by side: one column per run.
fn compare_table(runs: &[(String, Report)]) -> String {
    let mut out = String::from("<table><tr><th>metric</th>");
    for (label, _) in runs {
        let _ = write!(out, "<th>{}</th>", esc(label));
    }
    out.push_str("</tr>");
    for (name, value) in crate::compare_rows() {
        let _ = write!(out, "<tr><td>{}</td>", esc(name));
        for (_, report) in runs {
            let _ = write!(out, "<td>{}</td>", esc(&value(report)));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
    out
}

/// The HTML page around `body`.
fn page(body: &str) -> String {
    format!(
        r##"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>ferrolite simulate</title>
<style>
body {{ font-family: system-ui, -apple-system, Segoe UI, sans-serif; margin: 24px 40px; color: #111827; max-width: 960px; }}
h1 {{ font-size: 22px; }} h2 {{ font-size: 16px; margin-top: 28px; }}
table {{ border-collapse: collapse; font-size: 13px; }}
th, td {{ border-bottom: 1px solid #e5e7eb; padding: 4px 10px; text-align: right; }}
th:first-child, td:first-child, .l {{ text-align: left; }}
.good {{ color: #15803d; }} .bad {{ color: #b91c1c; font-weight: bold; }}
.meta {{ color: #4b5563; font-size: 13px; }}
</style></head><body>
{body}
</body></html>
"##
    )
}

/// One run: its summary, tables and charts.
fn section(report: &Report, workload: &Workload, source: &str) -> String {
    let end = report.duration_s.max(1.0);
    let bucket = (end / 60.0).max(1.0).ceil();
    let starts = buckets(end, bucket);

    let requests = requests_over_time(report, &starts, bucket);
    let (p50, p99) = latency_over_time(report, &starts, bucket);

    // Each deployment's rpm window over time, against its rpm.
    let rpm_series: Vec<(String, Vec<(f64, f64)>)> = report
        .deployments
        .iter()
        .map(|d| (d.id.clone(), d.rpm_timeline.clone()))
        .collect();
    let limits: Vec<(String, f64)> = report
        .deployments
        .iter()
        .filter_map(|d| d.rpm.map(|rpm| (d.id.clone(), rpm as f64)))
        .collect();

    let cooldowns: Vec<(String, Vec<(f64, f64)>)> = report
        .deployments
        .iter()
        .map(|d| (d.id.clone(), d.cooldown_spans.clone()))
        .collect();

    let rows = deployment_rows(report);
    let group_rows = group_rows(report);
    let limits_line = if report.limit_exceeded {
        r#"<p class="bad">An rpm limit was exceeded (see peak / rpm).</p>"#
    } else {
        r#"<p class="good">Every rpm limit held: no deployment's window ever counted more than its rpm.</p>"#
    };
    let cache_line = if report.response_cache {
        format!(
            r#"<p class="meta">Response cache: {} of {} requests answered from the cache ({:.1} %), no deployment called.</p>"#,
            report.cache_hits,
            report.requests,
            100.0 * report.cache_hits as f64 / report.requests.max(1) as f64
        )
    } else {
        String::new()
    };
    format!(
        r##"<p class="meta">{source}: {requests} requests, {concurrency} at a time, over {duration:.1} s of {time}; {succeeded} answered, {failed} failed.</p>
{cache_line}
{limits_line}
<h2>Deployments</h2>
<table><tr><th>deployment</th><th class="l">group</th><th>requests</th><th>success</th><th>429s</th><th>failed</th><th>cooldowns</th><th>p50 ms</th><th>p99 ms</th><th>tokens</th><th>spend $</th><th>peak rpm / rpm</th></tr>{rows}</table>
<h2>Groups</h2>
<table><tr><th>group</th><th>requests</th><th>answered</th><th>failed</th><th>retries</th><th>fallbacks</th></tr>{group_rows}</table>
{requests_chart}
{latency_chart}
{cooldown_chart}
{rpm_chart}
{budget_chart}
"##,
        source = esc(source),
        requests = report.requests,
        concurrency = workload.concurrency,
        duration = report.duration_s,
        time = if workload.redis.is_some() {
            "real time"
        } else {
            "simulated time"
        },
        succeeded = report.succeeded,
        failed = report.failed,
        requests_chart = line_chart(
            "Requests per deployment over time",
            "seconds into the run",
            "calls per second",
            &requests,
            &[],
            end
        ),
        latency_chart = line_chart(
            "Latency percentiles over time (successful calls)",
            "seconds into the run",
            "milliseconds",
            &[("p50".to_string(), p50), ("p99".to_string(), p99)],
            &[],
            end
        ),
        cooldown_chart = band_chart("Cooldowns", &cooldowns, end),
        rpm_chart = line_chart(
            "rpm window per deployment against its limit",
            "seconds into the run",
            "requests in the window",
            &rpm_series,
            &limits,
            end
        ),
        budget_chart = budget_chart(&report.budgets),
    )
}

/// A chart series' points: (x, y).
type Points = Vec<(f64, f64)>;

/// Calls per second to each deployment, per time bucket (`starts`, each `bucket` seconds long),
/// at the buckets' midpoints.
fn requests_over_time(report: &Report, starts: &[f64], bucket: f64) -> Vec<(String, Points)> {
    let mut per_deployment: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for (t, id) in &report.timeline {
        let i = ((t / bucket) as usize).min(starts.len() - 1);
        per_deployment
            .entry(id.as_str())
            .or_insert_with(|| vec![0.0; starts.len()])[i] += 1.0;
    }
    report
        .deployments
        .iter()
        .map(|d| {
            let counts = per_deployment
                .get(d.id.as_str())
                .cloned()
                .unwrap_or_default();
            let points = starts
                .iter()
                .zip(counts.iter().chain(std::iter::repeat(&0.0)))
                .map(|(s, c)| (s + bucket / 2.0, c / bucket))
                .collect();
            (d.id.clone(), points)
        })
        .collect()
}

/// The p50 and p99 latency of successful calls (all deployments) per time bucket, at the
/// buckets' midpoints; a bucket without calls has no point.
fn latency_over_time(report: &Report, starts: &[f64], bucket: f64) -> (Points, Points) {
    let mut latency_buckets: Vec<Vec<f64>> = vec![Vec::new(); starts.len()];
    for (t, ms) in &report.latencies {
        let i = ((t / bucket) as usize).min(starts.len() - 1);
        latency_buckets[i].push(*ms);
    }
    let mut p50 = Vec::new();
    let mut p99 = Vec::new();
    for (start, values) in starts.iter().zip(latency_buckets.iter_mut()) {
        if values.is_empty() {
            continue;
        }
        values.sort_by(f64::total_cmp);
        let at = |p: f64| values[((values.len() - 1) as f64 * p).round() as usize];
        p50.push((start + bucket / 2.0, at(0.5)));
        p99.push((start + bucket / 2.0, at(0.99)));
    }
    (p50, p99)
}

/// The rows of the deployments' table.
fn deployment_rows(report: &Report) -> String {
    let mut rows = String::new();
    for d in &report.deployments {
        let _ = write!(
            rows,
            "<tr><td>{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.0}</td><td>{:.0}</td><td>{}</td><td>{:.4}</td><td>{:.0} / {}</td></tr>",
            esc(&d.id),
            esc(&d.group),
            d.requests,
            d.successes,
            d.rate_limited,
            d.failures,
            d.cooldowns,
            d.p50_ms,
            d.p99_ms,
            d.tokens,
            d.spend,
            d.peak_rpm,
            d.rpm.map_or_else(|| "-".to_string(), |r| r.to_string())
        );
    }
    rows
}

/// The rows of the groups' table.
fn group_rows(report: &Report) -> String {
    let mut group_rows = String::new();
    for (group, g) in &report.groups {
        let _ = write!(
            group_rows,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(group),
            g.requests,
            g.succeeded,
            g.failed,
            g.retries,
            g.fallbacks
        );
    }
    group_rows
}
