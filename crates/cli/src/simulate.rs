//! `ferrolite simulate`: a workload through the real router (the code path a library user
//! gets), against mock deployments that behave as the config's `mock_*` settings and
//! `simulation.failures` say.
//!
//! In memory (the default) the run is on tokio's paused clock: simulated time jumps over the
//! mock latencies, so a workload of minutes finishes in seconds, and the wall time a call takes
//! is the router's own overhead. With `--redis` it runs in real time against Redis, with
//! `--instances` routers sharing it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use ferrolite::cache::{CacheConfig, DualCache, RedisConfig, TokioClock};
use ferrolite::mock::{FailureWindow, MockBackend, MockSpec, litellm_error_class};
use ferrolite::router::{Event, Observer};
use ferrolite::strategies::Rng;
use ferrolite::{Config, Request, Router, RouterError};
use futures_util::StreamExt;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::time::Instant;

/// The workload, from the config's `simulation` section and the command line.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Requests to send.
    pub requests: u64,
    /// Requests in flight at once (closed loop: each caller sends its next request when the
    /// last one is answered).
    pub concurrency: u32,
    /// Arrivals per second (open loop, Poisson): requests arrive whatever is in flight; when
    /// set, `concurrency` does not apply.
    pub rate: Option<f64>,
    /// Stop sending after this long (simulated time in memory), even before `requests`.
    pub duration: Option<Duration>,
    /// Request tags and their shares (a request carries one tag, or none with the rest).
    pub tags: Vec<(String, f64)>,
    /// Groups and their shares.
    pub groups: Vec<(String, f64)>,
    /// Mean prompt tokens.
    pub prompt_tokens: u64,
    /// `max_tokens` per request.
    pub max_tokens: u64,
    /// Share of streamed requests.
    pub stream_share: f64,
    /// Share of requests that repeat one of 16 recurring prompts.
    pub repeat_share: f64,
    /// Router instances.
    pub instances: u32,
    /// Redis shared by the instances; in memory (paused time) without.
    pub redis: Option<String>,
    /// Random seed.
    pub seed: u64,
    /// The request (1 for the first sent) whose routing is explained in the report
    /// ([`Report::explained`]).
    pub explain: Option<u64>,
}

/// What one deployment saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeploymentReport {
    /// Its id.
    pub id: String,
    /// Its group.
    pub group: String,
    /// Calls that reached it.
    pub requests: u64,
    /// Calls it answered.
    pub successes: u64,
    /// 429s it answered.
    pub rate_limited: u64,
    /// Other failures.
    pub failures: u64,
    /// Cooldowns it got.
    pub cooldowns: u64,
    /// Latency of its successful calls, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Tokens of its successful calls.
    pub tokens: u64,
    /// USD.
    pub spend: f64,
    /// Its rpm limit, if any.
    pub rpm: Option<u64>,
    /// The highest count of its rpm window at any call, as the router counts it (a sliding
    /// window weighs the previous minute; a fixed one counts the current minute).
    pub peak_rpm: f64,
    /// `cooldown` spans as (from, to) seconds from the start.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cooldown_spans: Vec<(f64, f64)>,
    /// Its rpm window's count over the run (seconds, count), for the report.
    #[serde(skip)]
    pub rpm_timeline: Vec<(f64, f64)>,
}

/// What one group saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GroupReport {
    /// Requests sent to it.
    pub requests: u64,
    /// Answered (possibly by a fallback).
    pub succeeded: u64,
    /// Failed after retries and fallbacks.
    pub failed: u64,
    /// Retries made.
    pub retries: u64,
    /// Fallbacks taken from it.
    pub fallbacks: u64,
}

/// A run's results.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Requests sent.
    pub requests: u64,
    /// Answered.
    pub succeeded: u64,
    /// Failed.
    pub failed: u64,
    /// Failures by error, as the caller saw them.
    pub errors: BTreeMap<String, u64>,
    /// Simulated (or, with Redis, real) seconds the run took.
    pub duration_s: f64,
    /// Router overhead per call (time outside the backends), microseconds: measured per call in
    /// real-time runs (with Redis); `None` on simulated time.
    pub overhead_p50_us: Option<f64>,
    /// 99th percentile.
    pub overhead_p99_us: Option<f64>,
    /// Wall-clock CPU per request over the whole run (router, mock backend and workload),
    /// microseconds: on simulated time, the cost of routing.
    pub cpu_per_request_us: f64,
    /// By deployment.
    pub deployments: Vec<DeploymentReport>,
    /// By requested group.
    pub groups: BTreeMap<String, GroupReport>,
    /// Budgets at the end: scope, spend, limit.
    pub budgets: Vec<(String, f64, f64)>,
    /// Whether any deployment's rpm window ever counted more than its rpm.
    pub limit_exceeded: bool,
    /// Whether the response cache was on.
    pub response_cache: bool,
    /// Requests the response cache answered (no deployment called).
    pub cache_hits: u64,
    /// Each call that reached a deployment: seconds into the run and the deployment (for the
    /// report's charts).
    #[serde(skip)]
    pub timeline: Vec<(f64, String)>,
    /// Every successful call: when it ended (seconds) and its latency (ms).
    #[serde(skip)]
    pub latencies: Vec<(f64, f64)>,
    /// How the request `--explain` named was routed (absent without `--explain`, or when the
    /// run ended before it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explained: Option<Explained>,
}

/// The routing of one request of the run (`--explain N`).
#[derive(Debug, Clone, Serialize)]
pub struct Explained {
    /// Which request (1 for the first sent).
    pub request: u64,
    /// Seconds into the run when it was routed.
    pub at_s: f64,
    /// How.
    pub route: ferrolite::router::Route,
}

/// Events the routers report, gathered across instances.
#[derive(Default)]
struct Watch {
    started: Mutex<Option<Instant>>,
    /// The caches' clock, which cooldown deadlines are on.
    clock: Mutex<Option<Arc<dyn ferrolite::cache::Clock>>>,
    /// Each call that reached a deployment: seconds into the run, the cache clock's ms, id.
    attempts: Mutex<Vec<(f64, u64, String)>>,
    rate_limited: Mutex<BTreeMap<String, u64>>,
    failures: Mutex<BTreeMap<String, u64>>,
    cooldowns: Mutex<BTreeMap<String, Vec<(f64, f64)>>>,
    retries: Mutex<BTreeMap<String, u64>>,
    fallbacks: Mutex<BTreeMap<String, u64>>,
    /// Successful calls' latency (ms) by deployment, with when they ended.
    latencies: Mutex<BTreeMap<String, Vec<(f64, f64)>>>,
    /// The routing of the request asked to be explained, with when (seconds into the run).
    explained: Mutex<Option<(f64, ferrolite::router::Route)>>,
}

impl Watch {
    fn now(&self) -> f64 {
        self.started
            .lock()
            .map_or(0.0, |s| s.elapsed().as_secs_f64())
    }
}

impl Observer for Watch {
    fn on_event(&self, event: &Event<'_>) {
        let now = self.now();
        match event {
            Event::Attempt { deployment, .. } => {
                let clock_ms = self.clock.lock().as_ref().map_or(0, |c| c.now_ms());
                self.attempts
                    .lock()
                    .push((now, clock_ms, deployment.to_string()));
            }
            Event::Success {
                deployment,
                latency,
            } => {
                self.latencies
                    .lock()
                    .entry(deployment.to_string())
                    .or_default()
                    .push((now, latency.as_secs_f64() * 1e3));
            }
            Event::Failure { deployment, class } => {
                let map = if matches!(class, ferrolite::types::ErrorClass::RateLimited { .. }) {
                    &self.rate_limited
                } else {
                    &self.failures
                };
                *map.lock().entry(deployment.to_string()).or_default() += 1;
            }
            Event::CooldownSet {
                deployment,
                until_ms,
                ..
            } => {
                // `until_ms` is on the cache clock; the span is kept in seconds of this run.
                let clock_now = self.clock.lock().as_ref().map_or(0, |c| c.now_ms());
                let length = until_ms.saturating_sub(clock_now) as f64 / 1e3;
                self.cooldowns
                    .lock()
                    .entry(deployment.to_string())
                    .or_default()
                    .push((now, now + length));
            }
            Event::Retry { model_group, .. } => {
                *self
                    .retries
                    .lock()
                    .entry(model_group.to_string())
                    .or_default() += 1;
            }
            Event::Fallback { from, .. } => {
                *self.fallbacks.lock().entry(from.to_string()).or_default() += 1;
            }
            Event::Explained { route } => {
                *self.explained.lock() = Some((now, (*route).clone()));
            }
            _ => {}
        }
    }
}

/// Percentile `p` (0..=1) of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Runs `workload` over the router `config` describes. `progress` is told of each finished
/// request.
pub async fn run(
    config: Config,
    workload: &Workload,
    progress: &(dyn Fn(u64, u64) + Send + Sync),
) -> Result<Report, RouterError> {
    let watch = Arc::new(Watch::default());
    let routers = build_routers(&config, workload, &watch).await?;
    let started = Instant::now();
    let wall = std::time::Instant::now();
    *watch.started.lock() = Some(started);
    let rng = Rng::seeded(workload.seed);
    let total_weight: f64 = workload.groups.iter().map(|(_, w)| w).sum();
    let outcomes: Mutex<Vec<Outcome>> =
        Mutex::new(Vec::with_capacity(workload.requests.min(1 << 16) as usize));
    let done = std::sync::atomic::AtomicU64::new(0);
    let expired = || workload.duration.is_some_and(|d| started.elapsed() >= d);
    // One request: its group, size, stream flag and tag drawn from the seeded generator.
    let (outcomes_ref, done_ref, rng_ref, routers_ref) = (&outcomes, &done, &rng, &routers);
    let send = move |i: u64| {
        let (outcomes, done, rng, routers) = (outcomes_ref, done_ref, rng_ref, routers_ref);
        let group = pick_group(&workload.groups, total_weight, rng.unit());
        let tokens = (workload.prompt_tokens as f64 * (0.5 + rng.unit())).max(1.0) as usize;
        let stream = rng.unit() < workload.stream_share;
        let tag = pick_tag(&workload.tags, rng.unit());
        // A recurring prompt (the same body every time), or one no other request has.
        let prompt = if workload.repeat_share > 0.0 && rng.unit() < workload.repeat_share {
            let k = (rng.unit() * 16.0) as u64;
            Prompt {
                label: format!("recurring prompt {k}"),
                words: workload.prompt_tokens.max(1) as usize,
            }
        } else {
            Prompt {
                label: format!("request {i}"),
                words: tokens,
            }
        };
        let router = &routers[(i % routers.len() as u64) as usize];
        let explain = workload.explain == Some(i + 1);
        async move {
            let outcome = one_request(
                router,
                &group,
                prompt,
                (workload.max_tokens, stream, explain),
                tag,
            )
            .await;
            outcomes.lock().push(outcome);
            let finished = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            progress(finished, workload.requests);
        }
    };
    match workload.rate {
        Some(rate) => {
            // Open loop: Poisson arrivals at `rate` per second.
            let mut in_flight = futures_util::stream::FuturesUnordered::new();
            let mut next_at = started;
            let mut i = 0;
            while i < workload.requests && !expired() {
                tokio::select! {
                    _ = tokio::time::sleep_until(next_at) => {
                        in_flight.push(send(i));
                        i += 1;
                        let gap = -(1.0 - rng.unit()).max(1e-12).ln() / rate;
                        // At a rate so low that the next arrival is beyond any clock, none comes.
                        match Duration::try_from_secs_f64(gap).ok().and_then(|gap| next_at.checked_add(gap)) {
                            Some(at) => next_at = at,
                            None => break,
                        }
                    }
                    Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
                }
            }
            while in_flight.next().await.is_some() {}
        }
        None => {
            // Closed loop: `concurrency` callers.
            let next = std::sync::atomic::AtomicU64::new(0);
            let worker = |_: u32| async {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= workload.requests || expired() {
                        break;
                    }
                    send(i).await;
                }
            };
            let workers: Vec<_> = (0..workload.concurrency.max(1)).map(worker).collect();
            futures_util::future::join_all(workers).await;
        }
    }
    let duration = started.elapsed();
    let budgets = match routers.first() {
        Some(router) => router
            .budget_status()
            .await
            .map(|status| {
                status
                    .into_iter()
                    .map(|s| (s.scope.to_string(), s.spend, s.limit))
                    .collect()
            })
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let mut report = summarize(&config, &watch, outcomes.into_inner(), duration, budgets);
    report.explained = watch.explained.lock().take().and_then(|(at_s, route)| {
        Some(Explained {
            request: workload.explain?,
            at_s,
            route,
        })
    });
    report.cpu_per_request_us =
        wall.elapsed().as_secs_f64() * 1e6 / workload.requests.max(1) as f64;
    if workload.redis.is_none() {
        // On simulated time the router's clock does not move while it works.
        report.overhead_p50_us = None;
        report.overhead_p99_us = None;
    }
    for router in &routers {
        if let Err(e) = router.cache().shutdown().await {
            tracing::warn!(error = %e, "could not shut a cache down");
        }
    }
    Ok(report)
}

/// A tag by share, or none for the share left over (shares summing under 1).
fn pick_tag(tags: &[(String, f64)], draw: f64) -> Option<String> {
    let total: f64 = tags.iter().map(|(_, s)| s).sum();
    let mut target = draw * total.max(1.0);
    for (tag, share) in tags {
        if target < *share {
            return Some(tag.clone());
        }
        target -= share;
    }
    None
}

fn pick_group(groups: &[(String, f64)], total: f64, draw: f64) -> String {
    let mut target = draw * total;
    for (group, weight) in groups {
        if target < *weight {
            return group.clone();
        }
        target -= weight;
    }
    groups.last().map(|(g, _)| g.clone()).unwrap_or_default()
}

/// A request's prompt: a label that makes it unique (or recurring) and its length in words.
struct Prompt {
    label: String,
    words: usize,
}

/// One request's outcome.
struct Outcome {
    /// Answered by the response cache.
    cache_hit: bool,
    group: String,
    answered_by: Option<String>,
    error: Option<String>,
    retries: u32,
    fallbacks: u32,
    /// The router's own time for this call (real time only).
    overhead_us: f64,
    tokens: u64,
    cost: f64,
}

async fn one_request(
    router: &Router,
    group: &str,
    prompt: Prompt,
    (max_tokens, stream, explain): (u64, bool, bool),
    tag: Option<String>,
) -> Outcome {
    let content = format!("{}: {}", prompt.label, "word ".repeat(prompt.words));
    let body = serde_json::json!({
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "stream": stream,
    });
    let mut request = Request::new(group, body);
    request.tags = tag.into_iter().collect();
    request.explain = explain;
    let mut outcome = Outcome {
        group: group.to_string(),
        cache_hit: false,
        answered_by: None,
        error: None,
        retries: 0,
        fallbacks: 0,
        overhead_us: 0.0,
        tokens: 0,
        cost: 0.0,
    };
    if stream {
        match router.stream(request).await {
            Ok(mut chunks) => {
                let mut failed = None;
                while let Some(chunk) = chunks.next().await {
                    if let Err(e) = chunk {
                        failed = Some(e);
                    }
                }
                outcome.cache_hit = chunks.cache_hit;
                outcome.retries = chunks.attempted_retries;
                outcome.fallbacks = chunks.attempted_fallbacks;
                outcome.overhead_us = chunks.overhead.as_secs_f64() * 1e6;
                match failed {
                    Some(e) => outcome.error = Some(error_name(&e)),
                    None => {
                        outcome.answered_by = Some(chunks.deployment_id.to_string());
                        outcome.tokens = chunks.usage().map_or(0, |u| u.total_tokens);
                        outcome.cost = chunks.response_cost().unwrap_or(0.0);
                    }
                }
            }
            Err(e) => outcome.error = Some(error_name(&e)),
        }
    } else {
        match router.call(request).await {
            Ok(answer) => {
                outcome.answered_by = Some(answer.deployment_id.to_string());
                outcome.cache_hit = answer.cache_hit;
                outcome.retries = answer.attempted_retries;
                outcome.fallbacks = answer.attempted_fallbacks;
                outcome.overhead_us = answer.overhead.as_secs_f64() * 1e6;
                outcome.tokens = answer.usage.map_or(0, |u| u.total_tokens);
                outcome.cost = answer.response_cost.unwrap_or(0.0);
            }
            Err(e) => outcome.error = Some(error_name(&e)),
        }
    }
    outcome
}

fn error_name(error: &RouterError) -> String {
    match error {
        RouterError::Backend { class, .. } => format!("{class:?}"),
        RouterError::AllCooledDown { .. } => "AllCooledDown".into(),
        RouterError::NoCapacity(_) => "NoCapacity".into(),
        RouterError::Budget(_) => "BudgetExceeded".into(),
        RouterError::DeadlineExceeded { .. } => "DeadlineExceeded".into(),
        other => format!("{}", ferrolite::gateway::status_of(other).as_u16()),
    }
}

/// The routers of the run: one per instance, each with its own cache (shared through Redis
/// when there is one), all calling one mock backend.
async fn build_routers(
    config: &Config,
    workload: &Workload,
    watch: &Arc<Watch>,
) -> Result<Vec<Router>, RouterError> {
    let mut backend = MockBackend::new(MockSpec::default()).seeded(workload.seed ^ 0x9e37);
    for (id, spec) in &config.mocks {
        backend = backend.with(id.clone(), spec.clone());
    }
    for failure in config.simulation.iter().flat_map(|s| &s.failures) {
        let Some(class) = litellm_error_class(&failure.error) else {
            continue; // checked when the config was loaded
        };
        backend = backend.failing_during(
            failure.deployment.clone(),
            FailureWindow {
                // Both checked when the config was loaded (0 <= from_s < to_s, a duration).
                from: Duration::try_from_secs_f64(failure.from_s).unwrap_or_default(),
                to: Duration::try_from_secs_f64(failure.to_s).unwrap_or(Duration::MAX),
                class,
                rate: failure.rate,
            },
        );
    }
    let backend: Arc<dyn ferrolite::router::Backend> = Arc::new(backend);
    // Simulated time starts at a fixed instant (2026-01-01T00:00:00Z, a minute boundary), so
    // rate windows fall the same way in every run and a seed replays a run exactly.
    let clock: Arc<dyn ferrolite::cache::Clock> =
        Arc::new(TokioClock::starting_at(1_767_225_600_000));
    let mut routers = Vec::new();
    for _ in 0..workload.instances.max(1) {
        let mut cache_config = CacheConfig {
            redis: None,
            ..config.cache.clone()
        };
        if let Some(url) = &workload.redis {
            let prefix = format!("ferrolite-simulate:{}:", workload.seed);
            cache_config.redis = Some(RedisConfig::new(url.clone()).with_prefix(prefix));
        }
        let cache = if workload.redis.is_some() {
            DualCache::connect(cache_config).await?
        } else {
            DualCache::connect_with_clock(cache_config, Arc::clone(&clock)).await?
        };
        let mut settings = config.settings.clone();
        if settings.strategy.seed.is_none() {
            settings.strategy.seed = Some(workload.seed);
        }
        let router = Router::builder()
            .deployments(config.deployments.clone())
            .settings(settings)
            .cache(cache)
            .backend(Arc::clone(&backend))
            .build()
            .await?;
        watch
            .clock
            .lock()
            .get_or_insert_with(|| Arc::clone(router.cache().clock()));
        router.add_observer(Arc::clone(watch) as Arc<dyn Observer>);
        routers.push(router);
    }
    Ok(routers)
}

fn summarize(
    config: &Config,
    watch: &Watch,
    outcomes: Vec<Outcome>,
    duration: Duration,
    budgets: Vec<(String, f64, f64)>,
) -> Report {
    let mut report = Report {
        requests: outcomes.len() as u64,
        duration_s: duration.as_secs_f64(),
        budgets,
        response_cache: config.settings.response_cache.is_some(),
        ..Report::default()
    };
    let mut overheads: Vec<f64> = Vec::with_capacity(outcomes.len());
    let mut tokens: BTreeMap<String, (u64, f64, u64)> = BTreeMap::new();
    for outcome in &outcomes {
        overheads.push(outcome.overhead_us);
        let group = report.groups.entry(outcome.group.clone()).or_default();
        group.requests += 1;
        match (&outcome.answered_by, &outcome.error) {
            (Some(_), _) if outcome.cache_hit => {
                // Answered without a deployment: no tokens or spend of any deployment's.
                report.succeeded += 1;
                group.succeeded += 1;
                report.cache_hits += 1;
            }
            (Some(id), _) => {
                report.succeeded += 1;
                group.succeeded += 1;
                let entry = tokens.entry(id.clone()).or_default();
                entry.0 += outcome.tokens;
                entry.1 += outcome.cost;
                entry.2 += 1;
            }
            (None, error) => {
                report.failed += 1;
                group.failed += 1;
                *report
                    .errors
                    .entry(error.clone().unwrap_or_default())
                    .or_default() += 1;
            }
        }
        let _ = (outcome.retries, outcome.fallbacks);
    }
    for (group, retries) in watch.retries.lock().iter() {
        report.groups.entry(group.clone()).or_default().retries = *retries;
    }
    for (group, fallbacks) in watch.fallbacks.lock().iter() {
        report.groups.entry(group.clone()).or_default().fallbacks = *fallbacks;
    }
    overheads.sort_by(f64::total_cmp);
    report.overhead_p50_us = Some(percentile(&overheads, 0.5));
    report.overhead_p99_us = Some(percentile(&overheads, 0.99));
    let attempts = std::mem::take(&mut *watch.attempts.lock());
    // Each deployment's attempts (cache-clock ms, seconds into the run), in the order they
    // were made: one pass over the attempts, not one per deployment.
    let mut by_deployment: HashMap<&str, Vec<(u64, f64)>> = HashMap::new();
    for (t, ms, d) in &attempts {
        by_deployment.entry(d.as_str()).or_default().push((*ms, *t));
    }
    let window = config.settings.window;
    for deployment in &config.deployments {
        let id = deployment.id().to_string();
        let mut calls = by_deployment.get(id.as_str()).cloned().unwrap_or_default();
        calls.sort_by_key(|c| c.0);
        let times: Vec<u64> = calls.iter().map(|(ms, _)| *ms).collect();
        let counts = window_counts(&times, window);
        let peak_rpm = counts.iter().copied().fold(0.0, f64::max);
        let rpm_timeline = downsample(
            calls
                .iter()
                .map(|(_, t)| *t)
                .zip(counts.iter().copied())
                .collect(),
            duration.as_secs_f64(),
        );
        let timed = watch.latencies.lock().get(&id).cloned().unwrap_or_default();
        report.latencies.extend(timed.iter().copied());
        let mut latencies: Vec<f64> = timed.iter().map(|(_, ms)| *ms).collect();
        latencies.sort_by(f64::total_cmp);
        let (tokens, spend, successes) = tokens.get(&id).copied().unwrap_or_default();
        let cooldown_spans = watch.cooldowns.lock().get(&id).cloned().unwrap_or_default();
        let entry = DeploymentReport {
            id: id.clone(),
            group: deployment.model_name.clone(),
            requests: times.len() as u64,
            successes,
            rate_limited: watch.rate_limited.lock().get(&id).copied().unwrap_or(0),
            failures: watch.failures.lock().get(&id).copied().unwrap_or(0),
            cooldowns: cooldown_spans.len() as u64,
            p50_ms: percentile(&latencies, 0.5),
            p99_ms: percentile(&latencies, 0.99),
            tokens,
            spend,
            rpm: deployment.rpm,
            peak_rpm,
            cooldown_spans,
            rpm_timeline,
        };
        if entry
            .rpm
            .is_some_and(|rpm| entry.peak_rpm > rpm as f64 + 1e-6)
        {
            report.limit_exceeded = true;
        }
        report.deployments.push(entry);
    }
    report.timeline = attempts.into_iter().map(|(t, _, id)| (t, id)).collect();
    report
}

/// The count `window` had at each of the (sorted, cache-clock ms) call times, counted as the
/// router counts: the current bucket's calls up to that time, plus the previous bucket's
/// weighted by its overlap with the window (sliding windows).
fn window_counts(times: &[u64], window: ferrolite::cache::Window) -> Vec<f64> {
    let mut counts = Vec::with_capacity(times.len());
    let mut by_bucket: BTreeMap<u64, f64> = BTreeMap::new();
    for t in times {
        let bucket = window.bucket(*t);
        let current = by_bucket.entry(bucket).or_insert(0.0);
        *current += 1.0;
        let current = *current;
        let previous = bucket
            .checked_sub(1)
            .and_then(|b| by_bucket.get(&b))
            .copied()
            .unwrap_or(0.0);
        counts.push(current + previous * window.previous_weight(*t));
    }
    counts
}

/// The highest count `window` reached at any call.
#[cfg(test)]
fn peak_window_count(times: &[u64], window: ferrolite::cache::Window) -> f64 {
    window_counts(times, window).into_iter().fold(0.0, f64::max)
}

/// At most 300 points: the highest value in each slot of the run.
fn downsample(points: Vec<(f64, f64)>, duration: f64) -> Vec<(f64, f64)> {
    let slots = 300usize;
    let width = (duration / slots as f64).max(1e-9);
    let mut best: BTreeMap<usize, (f64, f64)> = BTreeMap::new();
    for (t, v) in points {
        let slot = ((t / width) as usize).min(slots);
        let entry = best.entry(slot).or_insert((t, v));
        if v > entry.1 {
            *entry = (t, v);
        }
    }
    best.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peak_window_count_is_the_routers_count() {
        use ferrolite::cache::Window;
        let fixed = Window::MINUTE_FIXED;
        // Three calls in one minute, then two in the next: the fixed peak is 3.
        assert_eq!(
            peak_window_count(&[0, 1_000, 2_000, 60_000, 61_000], fixed),
            3.0
        );
        let sliding = Window::MINUTE_SLIDING;
        // Two calls at the end of one minute, one at the start of the next: it counts
        // 1 + 2 x (almost all of the previous minute).
        let peak = peak_window_count(&[59_000, 59_500, 60_001], sliding);
        assert!(peak > 2.9 && peak <= 3.0, "{peak}");
        assert_eq!(peak_window_count(&[], sliding), 0.0);
    }
}
