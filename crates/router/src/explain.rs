//! A request's routing explained ([`Route`]): every deployment the filters left out and why,
//! the strategy's scores, the pick, every attempt and every fallback. Recorded only for a
//! request that asks for it ([`crate::Request::explain`]): the call's recorder is then set, and
//! the filter, the pick, the attempts and the fallbacks fill it; otherwise nothing is recorded
//! and nothing is allocated.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use ferrolite_types::{DeploymentIx, ErrorClass};
use serde::Serialize;

/// How a request was routed: the answer to `x-ferrolite-explain: true` (the gateway's
/// `ferrolite_route` object and `x-ferrolite-route` header).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Route {
    /// The model the request asked for.
    pub model: String,
    /// The routing strategy (`simple-shuffle`, `least-busy`, ...).
    pub strategy: String,
    /// Whether the response cache answered (no deployment was called: `picks` and `attempts`
    /// are empty).
    pub cache_hit: bool,
    /// The group that answered, when one did.
    pub model_group: Option<String>,
    /// The deployment that answered, when one did.
    pub deployment: Option<String>,
    /// One selection per attempt made (or tried): the candidates, why each one left out was,
    /// the scores and the pick.
    pub picks: Vec<Pick>,
    /// Every call of a deployment, in order.
    pub attempts: Vec<Attempt>,
    /// Every move to another group (a fallback) or `order` tier, in order.
    pub fallbacks: Vec<Fallback>,
    /// Selections left out of `picks` (absent when none was): a request that waits long in
    /// the wait queue selects again on every try, so `picks` keeps the first
    /// [`MAX_PICKS`] - 1 and the last.
    #[serde(skip_serializing_if = "is_zero")]
    pub picks_omitted: u32,
}

/// At most this many selections are kept in [`Route::picks`].
pub const MAX_PICKS: usize = 32;

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Where the explanation of a request that fails is left ([`crate::Request::failed_route`]):
/// a successful request carries its [`Route`] in its answer, a failed one has only its
/// [`crate::RouterError`], so whoever shows the failure (the gateway's error answer) gives the
/// request a slot and takes the route from it after the error. Clones share the slot.
#[derive(Debug, Clone, Default)]
pub struct RouteSlot(Arc<parking_lot::Mutex<Option<Box<Route>>>>);

impl RouteSlot {
    /// An empty slot.
    pub fn new() -> Self {
        Self::default()
    }

    /// The route left by the failed request, once (`None` before a failure, or when the request
    /// did not ask for an explanation).
    pub fn take(&self) -> Option<Box<Route>> {
        self.0.lock().take()
    }

    /// Leaves `route` in the slot.
    pub(crate) fn put(&self, route: Box<Route>) {
        *self.0.lock() = Some(route);
    }
}

/// One selection: the destination's deployments through the filters and the strategy.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Pick {
    /// The destination: a model group (with `order N` when a tier is targeted), a deployment
    /// id, a model name.
    pub destination: String,
    /// What the strategy's `score` measures (`in_flight`, `tpm`, `cost_per_token`,
    /// `latency`, `ttft`, `load`); absent for a strategy that does not rank (simple-shuffle).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<&'static str>,
    /// Every deployment of the destination, in the configured order.
    pub candidates: Vec<Candidate>,
    /// The deployment picked and admitted; absent when none was.
    pub picked: Option<String>,
    /// How it was picked: `strategy`, or `affinity` (the request's affinity pin).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<&'static str>,
    /// Why nothing was picked, when nothing was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One deployment of a selection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    /// The deployment's id.
    pub deployment: String,
    /// Why it was left out (a stable name: see [`Excluded`]); absent when it was a candidate
    /// of the strategy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub excluded: Option<Excluded>,
    /// The reason with its numbers (`rpm 600/600`, `cooldown until ... (12.5 s left)`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The strategy's score of it (see [`Pick::score`]), when it was scored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
}

/// Why a deployment was left out of a selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Excluded {
    /// Its latest health check failed (`enable_health_check_routing`).
    Unhealthy,
    /// It is cooling down.
    Cooldown,
    /// A budget of the call (provider, deployment, tag) has no room for it.
    Budget,
    /// Its tags do not fit the request's (`enable_tag_filtering`).
    Tags,
    /// It cannot take a request whose translation is not whole (not of the caller's protocol).
    Untranslatable,
    /// It is not in the region the request allows (`allowed_model_region`).
    Region,
    /// Its `max_input_tokens` is below the request's input.
    ContextWindow,
    /// It is not in the `order` tier picked from.
    Order,
    /// It failed earlier in this request.
    Skipped,
    /// It is at its requests-per-minute limit.
    Rpm,
    /// The request's tokens would take it over its tokens-per-minute limit.
    Tpm,
    /// Its admission refused the call (another request took the last slot, or the budget
    /// reservation).
    Full,
}

/// One call of a deployment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attempt {
    /// The deployment called.
    pub deployment: String,
    /// Its model group.
    pub model_group: String,
    /// `success` (a whole answer), `streaming` (a stream's first chunk arrived), `error`, or
    /// `deadline` (the request's own deadline passed during it).
    pub outcome: &'static str,
    /// The error's class, for an error (`rate_limited`, `timeout`, `server_error`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
    /// The error's HTTP status, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The retry backoff waited before this attempt, in milliseconds.
    pub wait_ms: u64,
    /// How long the call took (to the first chunk, for a stream), in milliseconds.
    pub latency_ms: f64,
}

/// A move to another destination after a failure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fallback {
    /// The destination that failed.
    pub from: String,
    /// The destination tried next.
    pub to: String,
    /// `fallback` (a fallback chain's group) or `order` (the group's next `order` tier).
    pub kind: &'static str,
    /// The error class that sent the request on, when a deployment's error did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<&'static str>,
}

/// The most bytes of [`Route::summary`].
pub const SUMMARY_MAX: usize = 512;

impl Route {
    /// The route as a JSON value.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// The route as JSON text, its fields in the order documented.
    pub fn to_json_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "null".to_string())
    }

    /// A one-line summary for a header: `group=g; pick=d; excluded=a:cooldown,b:rpm;
    /// attempts=a:error(server_error 500),d:success; fallbacks=g>h`. Printable ASCII only (any
    /// other character is `?`), at most [`SUMMARY_MAX`] bytes (cut with `...`).
    pub fn summary(&self) -> String {
        let mut line = String::with_capacity(128);
        let group = self
            .model_group
            .as_deref()
            .or_else(|| self.picks.first().map(|p| p.destination.as_str()))
            .unwrap_or(&self.model);
        let _ = write!(line, "group={group}");
        let _ = write!(
            line,
            "; pick={}",
            self.deployment.as_deref().unwrap_or("none")
        );
        if self.cache_hit {
            line.push_str("; cache_hit");
        }
        if let Some(pick) = self.picks.last() {
            let excluded: Vec<String> = pick
                .candidates
                .iter()
                .filter_map(|c| {
                    c.excluded
                        .map(|why| format!("{}:{}", c.deployment, why.as_str()))
                })
                .collect();
            if !excluded.is_empty() {
                let _ = write!(line, "; excluded={}", excluded.join(","));
            }
        }
        let attempts: Vec<String> = self
            .attempts
            .iter()
            .map(|a| match (a.error, a.status) {
                (Some(class), Some(status)) => {
                    format!("{}:{}({class} {status})", a.deployment, a.outcome)
                }
                (Some(class), None) => format!("{}:{}({class})", a.deployment, a.outcome),
                _ => format!("{}:{}", a.deployment, a.outcome),
            })
            .collect();
        let _ = write!(line, "; attempts={}", attempts.join(","));
        if !self.fallbacks.is_empty() {
            let hops: Vec<String> = self
                .fallbacks
                .iter()
                .map(|f| format!("{}>{}", f.from, f.to))
                .collect();
            let _ = write!(line, "; fallbacks={}", hops.join(","));
        }
        header_safe(&line, SUMMARY_MAX)
    }
}

/// `text` with every character outside printable ASCII as `?`, cut to `max` bytes (ending in
/// `...` when cut).
fn header_safe(text: &str, max: usize) -> String {
    let mut safe: String = text
        .chars()
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .collect();
    if safe.len() > max {
        safe.truncate(max.saturating_sub(3));
        safe.push_str("...");
    }
    safe
}

impl Excluded {
    /// Its stable name, as the JSON object writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Excluded::Unhealthy => "unhealthy",
            Excluded::Cooldown => "cooldown",
            Excluded::Budget => "budget",
            Excluded::Tags => "tags",
            Excluded::Untranslatable => "untranslatable",
            Excluded::Region => "region",
            Excluded::ContextWindow => "context_window",
            Excluded::Order => "order",
            Excluded::Skipped => "skipped",
            Excluded::Rpm => "rpm",
            Excluded::Tpm => "tpm",
            Excluded::Full => "full",
        }
    }
}

/// A request's recorder: the route so far, the selection being made, the backoff before the
/// next attempt. Behind a lock in the request's [`crate::call::Call`] (the filter and the pick
/// read the call through a shared reference); never held across an await.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    pub(crate) route: Route,
    /// The selection being made, and its members' indices (parallel to its candidates).
    current: Option<(Pick, Vec<DeploymentIx>)>,
    /// The backoff waited since the last attempt.
    wait: Duration,
}

impl Recorder {
    /// A recorder for a request for `model` routed by `strategy`.
    pub(crate) fn new(model: &str, strategy: &str) -> Self {
        Recorder {
            route: Route {
                model: model.to_string(),
                strategy: strategy.to_string(),
                ..Route::default()
            },
            ..Recorder::default()
        }
    }

    /// A selection of `destination` among `members` (index and id) begins.
    pub(crate) fn begin(&mut self, destination: String, members: Vec<(DeploymentIx, String)>) {
        self.end_pick(None);
        let (ixs, candidates) = members
            .into_iter()
            .map(|(ix, id)| {
                (
                    ix,
                    Candidate {
                        deployment: id,
                        excluded: None,
                        detail: None,
                        score: None,
                    },
                )
            })
            .unzip();
        let pick = Pick {
            destination,
            candidates,
            ..Pick::default()
        };
        self.current = Some((pick, ixs));
    }

    fn candidate(&mut self, ix: DeploymentIx) -> Option<&mut Candidate> {
        let (pick, ixs) = self.current.as_mut()?;
        let position = ixs.iter().position(|i| *i == ix)?;
        pick.candidates.get_mut(position)
    }

    /// Whether `ix` was left out of the current selection already.
    pub(crate) fn is_excluded(&mut self, ix: DeploymentIx) -> bool {
        self.candidate(ix).is_some_and(|c| c.excluded.is_some())
    }

    /// `ix` was left out, `why`.
    pub(crate) fn exclude(&mut self, ix: DeploymentIx, why: Excluded, detail: Option<String>) {
        if let Some(candidate) = self.candidate(ix) {
            if candidate.excluded.is_none() {
                candidate.excluded = Some(why);
                candidate.detail = detail;
            }
        }
    }

    /// The strategy's score of `ix`.
    pub(crate) fn score(&mut self, ix: DeploymentIx, name: &'static str, value: f64) {
        if let Some((pick, _)) = self.current.as_mut() {
            pick.score = Some(name);
        }
        if let Some(candidate) = self.candidate(ix) {
            candidate.score = Some(value);
        }
    }

    /// The request's affinity pin names the deployment to try (before its admission).
    pub(crate) fn pinned(&mut self) {
        if let Some((pick, _)) = self.current.as_mut() {
            pick.by = Some("affinity");
        }
    }

    /// The strategy picks next (an affinity pin tried before was full).
    pub(crate) fn by_strategy(&mut self) {
        if let Some((pick, _)) = self.current.as_mut() {
            pick.by = None;
        }
    }

    /// `id` was picked and admitted: by the affinity pin when it was tried last
    /// ([`Recorder::pinned`]), else by the strategy.
    pub(crate) fn picked(&mut self, id: &str) {
        if let Some((pick, _)) = self.current.as_mut() {
            pick.picked = Some(id.to_string());
            if pick.by.is_none() {
                pick.by = Some("strategy");
            }
        }
    }

    /// The current selection ends, with `error` when nothing was picked.
    pub(crate) fn end_pick(&mut self, error: Option<String>) {
        if let Some((mut pick, _)) = self.current.take() {
            if pick.picked.is_none() {
                pick.error = error;
            }
            if self.route.picks.len() >= MAX_PICKS {
                // The first ones and the latest are kept: the one before goes.
                self.route.picks.pop();
                self.route.picks_omitted = self.route.picks_omitted.saturating_add(1);
            }
            self.route.picks.push(pick);
        }
    }

    /// A retry waited `wait` before the next attempt.
    pub(crate) fn waited(&mut self, wait: Duration) {
        self.wait += wait;
    }

    /// A call of `deployment` (of `model_group`) ended with `outcome` (and `class`, for an
    /// error) after `latency`.
    pub(crate) fn attempt(
        &mut self,
        deployment: &str,
        model_group: &str,
        outcome: &'static str,
        class: Option<&ErrorClass>,
        latency: Duration,
    ) {
        let wait = std::mem::take(&mut self.wait);
        self.route.attempts.push(Attempt {
            deployment: deployment.to_string(),
            model_group: model_group.to_string(),
            outcome,
            error: class.map(class_label),
            status: class.and_then(ErrorClass::status),
            wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            // To the microsecond.
            latency_ms: latency.as_micros() as f64 / 1e3,
        });
    }

    /// The request moved from `from` to `to`.
    pub(crate) fn fallback(
        &mut self,
        from: &str,
        to: &str,
        kind: &'static str,
        after: Option<&ErrorClass>,
    ) {
        self.route.fallbacks.push(Fallback {
            from: from.to_string(),
            to: to.to_string(),
            kind,
            after: after.map(class_label),
        });
    }

    /// The route, its last selection ended (with `error` when nothing was picked).
    pub(crate) fn finish(mut self, error: Option<String>) -> Route {
        self.end_pick(error);
        self.route
    }
}

/// The stable name of an error class: the metrics label, the explanation's and `Router::state`'s
/// cooldown cause, and the attempt span's `error.type` all use it.
pub(crate) fn class_label(class: &ErrorClass) -> &'static str {
    match class {
        ErrorClass::RateLimited { .. } => "rate_limited",
        ErrorClass::Timeout => "timeout",
        ErrorClass::ContextWindowExceeded => "context_window",
        ErrorClass::ContentPolicy => "content_policy",
        ErrorClass::Authentication => "authentication",
        ErrorClass::PermissionDenied => "permission_denied",
        ErrorClass::NotFound => "not_found",
        ErrorClass::BadRequest { .. } => "bad_request",
        ErrorClass::BudgetExceeded => "budget_exceeded",
        ErrorClass::ServerError { .. } => "server_error",
        ErrorClass::Connection => "connection",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_are_bounded_keeping_the_first_and_the_latest() {
        let mut recorder = Recorder::new("g", "simple-shuffle");
        for i in 0..100 {
            recorder.begin(format!("try {i}"), Vec::new());
        }
        let route = recorder.finish(Some("full".into()));
        assert_eq!(route.picks.len(), MAX_PICKS);
        assert_eq!(route.picks_omitted, 100 - MAX_PICKS as u32);
        assert_eq!(route.picks[0].destination, "try 0");
        assert_eq!(
            route.picks[MAX_PICKS - 2].destination,
            format!("try {}", MAX_PICKS - 2)
        );
        assert_eq!(route.picks[MAX_PICKS - 1].destination, "try 99");
        assert_eq!(route.picks[MAX_PICKS - 1].error.as_deref(), Some("full"));
        assert_eq!(route.to_json()["picks_omitted"], 100 - MAX_PICKS as u32);
        let short = Recorder::new("g", "simple-shuffle").finish(None);
        assert!(short.to_json().get("picks_omitted").is_none());
    }

    #[test]
    fn the_summary_is_one_bounded_line_of_printable_ascii() {
        let route = Route {
            model: "g".into(),
            deployment: Some("dé\nploy".into()),
            attempts: (0..200)
                .map(|i| Attempt {
                    deployment: format!("d{i}"),
                    model_group: "g".into(),
                    outcome: "error",
                    error: Some("server_error"),
                    status: Some(500),
                    wait_ms: 0,
                    latency_ms: 1.0,
                })
                .collect(),
            ..Route::default()
        };
        let line = route.summary();
        assert!(line.len() <= SUMMARY_MAX, "{}", line.len());
        assert!(line.ends_with("..."));
        assert!(line.bytes().all(|b| b == b' ' || b.is_ascii_graphic()));
        assert!(line.starts_with("group=g; pick=d??ploy; attempts=d0:error(server_error 500)"));
    }
}
