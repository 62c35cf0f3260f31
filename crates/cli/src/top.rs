//! `ferrolite top --url URL --key KEY`: a gateway's `/router/state` live in the terminal
//! (ratatui over crossterm), refreshed every `--interval` seconds: the replicas, then every
//! deployment with its state, windows and leases against their limits, latency, errors and
//! cooldown. Keys (shown on screen): `g` sorts by group, `e` by errors, `f` by fullness, `r`
//! refreshes now, `q` (or Esc, Ctrl-C) quits.

use std::time::{Duration, Instant};

use ferrolite::router::{Condition, RouterState};
use ratatui::Frame;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table};

use crate::TopArgs;
use crate::status::{
    DEPLOYMENT_COLUMNS, REPLICA_COLUMNS, Sort, clock, deployment_cells, replica_cells, rows,
};

/// What the screen shows.
#[derive(Debug, Clone, Default)]
pub struct Top {
    /// The gateway's address.
    pub url: String,
    /// The last state read, if any.
    pub state: Option<RouterState>,
    /// The deployments' order.
    pub sort: Sort,
    /// Why the last refresh failed, if it did (the last state read stays on screen).
    pub error: Option<String>,
}

/// What a key does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Leave.
    Quit,
    /// Read the state now.
    Refresh,
    /// Order the deployments so.
    Sort(Sort),
    /// Nothing.
    None,
}

/// The action of a key press.
pub fn action(code: KeyCode, modifiers: KeyModifiers) -> Action {
    match code {
        KeyCode::Char('c') if modifiers.contains(KeyModifiers::CONTROL) => Action::Quit,
        KeyCode::Char('q') | KeyCode::Esc => Action::Quit,
        KeyCode::Char('r') => Action::Refresh,
        KeyCode::Char('g') => Action::Sort(Sort::Group),
        KeyCode::Char('e') => Action::Sort(Sort::Errors),
        KeyCode::Char('f') => Action::Sort(Sort::Fullness),
        _ => Action::None,
    }
}

/// The keys' line at the bottom of the screen.
pub const KEYS: &str =
    "q quit   g sort by group   e sort by errors   f sort by fullness   r refresh";

/// The colour of a deployment's row.
fn row_style(state: Condition) -> Style {
    match state {
        Condition::Healthy => Style::default(),
        Condition::Cooldown => Style::default().fg(Color::Red),
        Condition::Unhealthy => Style::default().fg(Color::Magenta),
        Condition::Probing => Style::default().fg(Color::Yellow),
    }
}

/// Column widths from the cells: each as wide as its widest cell (header included).
fn widths<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> Vec<Constraint> {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    widths
        .iter()
        .map(|w| Constraint::Length(u16::try_from(*w).unwrap_or(u16::MAX)))
        .collect()
}

/// Draws `top` on `frame`.
pub fn draw(frame: &mut Frame, top: &Top) {
    let area = frame.area();
    let replicas = top.state.as_ref().map_or(0, |s| s.replicas.len());
    let [title, replicas_area, deployments_area, status, keys] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(u16::try_from(replicas.min(8)).unwrap_or(8) + 3),
        Constraint::Min(3),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let Some(state) = &top.state else {
        frame.render_widget(
            Paragraph::new(format!("ferrolite top: {} (reading...)", top.url)),
            title,
        );
        if let Some(error) = &top.error {
            frame.render_widget(
                Paragraph::new(error.as_str()).style(Style::default().fg(Color::Red)),
                status,
            );
        }
        frame.render_widget(Paragraph::new(KEYS), keys);
        return;
    };
    let now = state.generated_at_ms;
    frame.render_widget(
        Paragraph::new(Line::from(format!(
            "ferrolite top: {}  replica {}  {}  {} UTC  sorted by {}",
            top.url,
            state.replica,
            if state.shared {
                "shared (Redis)"
            } else {
                "this process only"
            },
            clock(now),
            top.sort.name()
        )))
        .style(bold),
        title,
    );

    let replica_cells: Vec<[String; 6]> = state
        .replicas
        .iter()
        .map(|r| replica_cells(state, r))
        .collect();
    let widths_r = widths(REPLICA_COLUMNS, &replica_cells);
    let replica_rows = state.replicas.iter().zip(&replica_cells).map(|(r, cells)| {
        let style = if r.same_config {
            Style::default()
        } else {
            Style::default().fg(Color::Yellow)
        };
        Row::new(cells.iter().cloned().map(Cell::from)).style(style)
    });
    frame.render_widget(
        Table::new(replica_rows, widths_r)
            .column_spacing(2)
            .header(Row::new(REPLICA_COLUMNS).style(bold))
            .block(Block::bordered().title(format!(" Replicas ({}) ", state.replicas.len()))),
        replicas_area,
    );

    let rows = rows(state, top.sort);
    let cells: Vec<[String; 11]> = rows.iter().map(|r| deployment_cells(r, now)).collect();
    let widths_d = widths(DEPLOYMENT_COLUMNS, &cells);
    let deployment_rows = rows.iter().zip(&cells).map(|(r, cells)| {
        Row::new(cells.iter().cloned().map(Cell::from)).style(row_style(r.deployment.state))
    });
    frame.render_widget(
        Table::new(deployment_rows, widths_d)
            .column_spacing(2)
            .header(Row::new(DEPLOYMENT_COLUMNS).style(bold))
            .block(Block::bordered().title(format!(
                " Deployments ({}) in {} groups ",
                rows.len(),
                state.groups.len()
            ))),
        deployments_area,
    );
    let line = match &top.error {
        Some(error) => Paragraph::new(format!("refresh failed: {error}"))
            .style(Style::default().fg(Color::Red)),
        None => {
            let cooling = rows
                .iter()
                .filter(|r| r.deployment.state == Condition::Cooldown)
                .count();
            Paragraph::new(format!("{cooling} cooling down"))
        }
    };
    frame.render_widget(line, status);
    frame.render_widget(
        Paragraph::new(KEYS).style(Style::default().add_modifier(Modifier::DIM)),
        keys,
    );
}

/// `ferrolite top`: reads the state every `--interval`, draws it, until `q`.
pub(crate) fn top_command(args: &TopArgs) -> Result<(), String> {
    if !(args.interval.is_finite() && args.interval >= 0.1) {
        return Err(format!(
            "--interval: expected seconds >= 0.1, got {}",
            args.interval
        ));
    }
    let interval = crate::seconds("--interval", args.interval)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let key = args
        .key
        .clone()
        .or_else(|| std::env::var("FERROLITE_KEY").ok());
    let client = crate::status::client(interval.max(Duration::from_secs(5)))?;
    let read = |top: &mut Top| match runtime.block_on(crate::status::fetch(
        &client,
        &args.url,
        key.as_deref(),
    )) {
        Ok(state) => {
            top.state = Some(state);
            top.error = None;
        }
        Err(e) => top.error = Some(e),
    };
    let mut top = Top {
        url: args.url.clone(),
        ..Top::default()
    };
    // A gateway that cannot be read at all is an error before the screen is taken.
    read(&mut top);
    if let (None, Some(error)) = (&top.state, &top.error) {
        return Err(error.clone());
    }
    let mut terminal = ratatui::try_init().map_err(|e| format!("cannot open the terminal: {e}"))?;
    let result = (|| -> Result<(), String> {
        let mut next = Instant::now() + interval;
        loop {
            terminal
                .draw(|frame| draw(frame, &top))
                .map_err(|e| format!("cannot draw: {e}"))?;
            let wait = next.saturating_duration_since(Instant::now());
            if event::poll(wait).map_err(|e| e.to_string())? {
                if let Event::Key(key) = event::read().map_err(|e| e.to_string())? {
                    if key.kind != KeyEventKind::Press {
                        continue;
                    }
                    match action(key.code, key.modifiers) {
                        Action::Quit => return Ok(()),
                        Action::Refresh => {
                            read(&mut top);
                            next = Instant::now() + interval;
                        }
                        Action::Sort(sort) => top.sort = sort,
                        Action::None => {}
                    }
                }
                continue;
            }
            read(&mut top);
            next = Instant::now() + interval;
        }
    })();
    if let Err(e) = ratatui::try_restore() {
        tracing::warn!(error = %e, "could not restore the terminal");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    /// A state of two groups: `fine` answering, `limited` cooled down by a 429, `busy` near
    /// its rpm limit with failures, and two replicas, one on another config.
    fn state() -> RouterState {
        let deployment = |id: &str,
                          state: &str,
                          rpm: u64,
                          fails: u64,
                          cooldown: serde_json::Value| {
            serde_json::json!({
                "id": id, "model": format!("openai/{id}"), "provider": "openai",
                "api_base": null, "state": state, "cooldown": cooldown,
                "health": {"checked": false, "healthy": true, "last_pass_ms": null, "last_fail_ms": null},
                "probe": null,
                "rpm": {"used": rpm, "limit": 100}, "tpm": {"used": 0, "limit": null},
                "window_resets_at_ms": 1_767_225_660_000u64,
                "leases": {"held": 1, "max": 10},
                "latency_ms": {"ewma": 120.0, "p50": 110.0, "p99": 300.0},
                "ttft_ms": {"ewma": null, "p50": null, "p99": null},
                "errors": {"fails": fails, "successes": 10, "rate": fails as f64 / (fails + 10) as f64},
                "budget": null, "history": null
            })
        };
        serde_json::from_value(serde_json::json!({
            "generated_at_ms": 1_767_225_630_000u64,
            "replica": "host-1-aaaa",
            "shared": true,
            "replicas": [
                {"id": "host-1-aaaa", "version": "0.1.0", "config_hash": "9f2c", "started_at_ms": 0,
                 "last_seen_ms": 1_767_225_630_000u64, "requests_per_second": 12.5, "same_config": true},
                {"id": "host-2-bbbb", "version": "0.1.0", "config_hash": "77aa", "started_at_ms": 0,
                 "last_seen_ms": 1_767_225_629_000u64, "requests_per_second": 3.0, "same_config": false}
            ],
            "groups": [
                {"model_group": "a-group", "deployments": [
                    deployment("fine", "healthy", 10, 0, serde_json::Value::Null),
                    deployment("limited", "cooldown", 5, 1, serde_json::json!(
                        {"until_ms": 1_767_225_690_000u64, "class": "rate_limited", "status": 429, "message": "slow down"}))
                ]},
                {"model_group": "b-group", "deployments": [
                    deployment("busy", "healthy", 95, 5, serde_json::Value::Null)
                ]}
            ]
        }))
        .unwrap()
    }

    /// The screen's lines for `sort`, on a 140 x 20 terminal.
    fn screen(sort: Sort) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(140, 20)).unwrap();
        let top = Top {
            url: "http://gw:4000".into(),
            state: Some(state()),
            sort,
            error: None,
        };
        terminal.draw(|frame| draw(frame, &top)).unwrap();
        let buffer = terminal.backend().buffer();
        (0..buffer.area.height)
            .map(|y| {
                (0..buffer.area.width)
                    .map(|x| buffer[(x, y)].symbol())
                    .collect::<String>()
                    .trim_end()
                    .to_string()
            })
            .collect()
    }

    /// The deployment ids in the order the table shows them.
    fn order(lines: &[String]) -> Vec<&'static str> {
        let mut found: Vec<(usize, &'static str)> = ["fine", "limited", "busy"]
            .into_iter()
            .filter_map(|id| {
                lines
                    .iter()
                    .position(|l| l.contains(&format!("openai/{id}")))
                    .map(|at| (at, id))
            })
            .collect();
        found.sort();
        found.into_iter().map(|(_, id)| id).collect()
    }

    #[test]
    fn the_screen_shows_the_replicas_the_deployments_and_the_keys() {
        let lines = screen(Sort::Group);
        let text = lines.join("\n");
        assert!(lines[0].contains("replica host-1-aaaa"), "{text}");
        assert!(lines[0].contains("00:00:30 UTC"), "{text}");
        assert!(text.contains("Replicas (2)"), "{text}");
        let flagged = lines.iter().find(|l| l.contains("host-2-bbbb")).unwrap();
        assert!(flagged.contains("77aa (different config)"), "{flagged}");
        let mine = lines.iter().find(|l| l.contains("host-1-aaaa *")).unwrap();
        assert!(mine.contains("12.5"), "{mine}");
        let header = lines.iter().find(|l| l.contains("DEPLOYMENT")).unwrap();
        for column in DEPLOYMENT_COLUMNS {
            assert!(header.contains(column), "{header}");
        }
        let limited = lines.iter().find(|l| l.contains("limited")).unwrap();
        for cell in [
            "a-group",
            "cooldown",
            "5/100",
            "0/-",
            "1/10",
            "110ms",
            "300ms",
            "9% of 11",
            "in 1m00s rate_limited",
        ] {
            assert!(limited.contains(cell), "{cell} in {limited}");
        }
        assert!(text.contains("1 cooling down"), "{text}");
        assert_eq!(lines.last().unwrap().trim(), KEYS);
        assert_eq!(order(&lines), ["fine", "limited", "busy"]);
    }

    #[test]
    fn the_keys_sort_by_errors_and_by_fullness() {
        assert_eq!(order(&screen(Sort::Errors)), ["busy", "limited", "fine"]);
        assert_eq!(order(&screen(Sort::Fullness)), ["busy", "fine", "limited"]);
        assert!(screen(Sort::Fullness)[0].contains("sorted by fullness"));
        assert_eq!(
            action(KeyCode::Char('e'), KeyModifiers::NONE),
            Action::Sort(Sort::Errors)
        );
        assert_eq!(
            action(KeyCode::Char('f'), KeyModifiers::NONE),
            Action::Sort(Sort::Fullness)
        );
        assert_eq!(
            action(KeyCode::Char('g'), KeyModifiers::NONE),
            Action::Sort(Sort::Group)
        );
        assert_eq!(action(KeyCode::Char('q'), KeyModifiers::NONE), Action::Quit);
        assert_eq!(
            action(KeyCode::Char('c'), KeyModifiers::CONTROL),
            Action::Quit
        );
    }

    #[test]
    fn a_failed_refresh_keeps_the_last_state_and_says_why() {
        let mut terminal = Terminal::new(TestBackend::new(120, 20)).unwrap();
        let top = Top {
            url: "http://gw:4000".into(),
            state: Some(state()),
            sort: Sort::Group,
            error: Some("cannot reach http://gw:4000/router/state".into()),
        };
        terminal.draw(|frame| draw(frame, &top)).unwrap();
        let buffer = terminal.backend().buffer();
        let text: String = (0..buffer.area.height)
            .flat_map(|y| (0..buffer.area.width).map(move |x| (x, y)))
            .map(|p| buffer[p].symbol().to_string())
            .collect();
        assert!(text.contains("refresh failed: cannot reach"), "{text}");
        assert!(text.contains("limited"), "{text}");
    }
}
