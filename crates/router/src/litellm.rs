//! LiteLLM's Prometheus metrics (its `PrometheusLogger`, `litellm/integrations/prometheus.py`),
//! beside ferrolite's own, so that the Grafana dashboards LiteLLM publishes work unchanged: the
//! deployment metrics (`litellm_deployment_state`, `litellm_deployment_*_responses`,
//! `litellm_deployment_cooled_down`, the fallbacks), latency, spend and tokens, with LiteLLM's
//! names, types, label names and label values.
//!
//! Each deployment's handles are registered with the recorder once, at its first event (and
//! again only when the recorder changes), so a call builds no metric key and allocates no label;
//! only the rare events (a failure class first seen on a deployment, a fallback) register a key
//! of their own.
//!
//! Labels ferrolite has no value for (the virtual key's `hashed_api_key`, `team`, `user`,
//! `end_user`, `client_ip`, `user_agent`, ...) are present with the value LiteLLM's exposition
//! shows for a label it left unset, `None` (prometheus_client renders a Python `None` as the
//! text `None`).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ferrolite_types::{Deployment, ErrorClass, Usage};
use metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder};
use parking_lot::Mutex;

/// The value of a label ferrolite has no value for, as LiteLLM's exposition shows an unset one.
pub const ABSENT: &str = "None";

/// Metric handles registered with the `metrics` recorder in use, made again when another
/// recorder is in use (a test's local recorder beside the process-wide one): what keeps a
/// request from building a metric key or looking one up in the recorder's registry. The
/// router's LiteLLM metrics and the gateway's own keep their handles in one.
pub struct PerRecorder<T> {
    current: arc_swap::ArcSwapOption<Registered<T>>,
}

/// Handles and the recorder they were registered with.
struct Registered<T> {
    /// The recorder's address, which tells one recorder from another.
    recorder: usize,
    handles: T,
}

impl<T> Default for PerRecorder<T> {
    fn default() -> Self {
        PerRecorder {
            current: arc_swap::ArcSwapOption::empty(),
        }
    }
}

impl<T> PerRecorder<T> {
    /// Runs `f` on the handles of the recorder in use, made by `make` when it has none yet.
    pub fn with<R>(
        &self,
        make: impl FnOnce(&dyn Recorder) -> T,
        f: impl FnOnce(&T, &dyn Recorder) -> R,
    ) -> R {
        metrics::with_recorder(|recorder| {
            let id = std::ptr::from_ref(recorder).cast::<()>() as usize;
            let loaded = self.current.load();
            let fresh;
            let registered = match loaded.as_deref() {
                Some(registered) if registered.recorder == id => registered,
                _ => {
                    fresh = Arc::new(Registered {
                        recorder: id,
                        handles: make(recorder),
                    });
                    self.current.store(Some(Arc::clone(&fresh)));
                    &*fresh
                }
            };
            f(&registered.handles, recorder)
        })
    }
}

/// LiteLLM's metric names, as its `/metrics` shows them (prometheus_client adds `_total` to a
/// counter's name).
pub mod names {
    /// Gauge: 0 healthy, 1 partial outage (a failed call), 2 complete outage (cooled down).
    pub const DEPLOYMENT_STATE: &str = "litellm_deployment_state";
    /// Gauge: requests left in the deployment's rpm window.
    pub const REMAINING_REQUESTS: &str = "litellm_remaining_requests_metric";
    /// Gauge: tokens left in the deployment's tpm window.
    pub const REMAINING_TOKENS: &str = "litellm_remaining_tokens_metric";
    /// Counter: calls a deployment answered.
    pub const DEPLOYMENT_SUCCESS: &str = "litellm_deployment_success_responses_total";
    /// Counter: calls a deployment failed, by `exception_status` and `exception_class`.
    pub const DEPLOYMENT_FAILURE: &str = "litellm_deployment_failure_responses_total";
    /// Counter: calls of a deployment, success and failure.
    pub const DEPLOYMENT_TOTAL: &str = "litellm_deployment_total_requests_total";
    /// Histogram: a call's latency (a stream's time to first token) per output token.
    pub const LATENCY_PER_OUTPUT_TOKEN: &str = "litellm_deployment_latency_per_output_token";
    /// Counter: cooldowns of a deployment, by `exception_status`.
    pub const COOLED_DOWN: &str = "litellm_deployment_cooled_down_total";
    /// Counter: fallbacks that answered.
    pub const SUCCESSFUL_FALLBACKS: &str = "litellm_deployment_successful_fallbacks_total";
    /// Counter: fallbacks that failed.
    pub const FAILED_FALLBACKS: &str = "litellm_deployment_failed_fallbacks_total";
    /// Histogram: a request's latency through the router, retries and fallbacks included.
    pub const REQUEST_TOTAL_LATENCY: &str = "litellm_request_total_latency_metric";
    /// Histogram: the answering deployment's call.
    pub const LLM_API_LATENCY: &str = "litellm_llm_api_latency_metric";
    /// Histogram: a stream's time to first token.
    pub const TIME_TO_FIRST_TOKEN: &str = "litellm_llm_api_time_to_first_token_metric";
    /// Counter in LiteLLM: spend (USD); a gauge that only grows here (the `metrics` facade's
    /// counters count integers).
    pub const SPEND: &str = "litellm_spend_metric_total";
    /// Counter: input + output tokens.
    pub const TOTAL_TOKENS: &str = "litellm_total_tokens_metric_total";
    /// Counter: input tokens.
    pub const INPUT_TOKENS: &str = "litellm_input_tokens_metric_total";
    /// Counter: output tokens.
    pub const OUTPUT_TOKENS: &str = "litellm_output_tokens_metric_total";
    /// Counter: requests the proxy answered, by `status_code`.
    pub const PROXY_TOTAL_REQUESTS: &str = "litellm_proxy_total_requests_metric_total";
    /// Counter: requests the proxy answered with an error.
    pub const PROXY_FAILED_REQUESTS: &str = "litellm_proxy_failed_requests_metric_total";
    /// Gauge: a provider budget's remaining USD, by `api_provider`.
    pub const PROVIDER_REMAINING_BUDGET: &str = "litellm_provider_remaining_budget_metric";
}

/// LiteLLM's `LATENCY_BUCKETS` (seconds), the buckets of its latency histograms.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.00625, 0.0125, 0.025, 0.05, 0.1, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0,
    5.5, 6.0, 6.5, 7.0, 7.5, 8.0, 8.5, 9.0, 9.5, 10.0, 15.0, 20.0, 25.0, 30.0, 60.0, 120.0, 180.0,
    240.0, 300.0,
];

/// prometheus_client's default buckets, those of `litellm_deployment_latency_per_output_token`.
pub const DEFAULT_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// LiteLLM's histograms and their buckets, for a Prometheus exporter to render them as
/// histograms (with `_bucket` series) as LiteLLM's does.
pub const HISTOGRAMS: &[(&str, &[f64])] = &[
    (names::REQUEST_TOTAL_LATENCY, LATENCY_BUCKETS),
    (names::LLM_API_LATENCY, LATENCY_BUCKETS),
    (names::TIME_TO_FIRST_TOKEN, LATENCY_BUCKETS),
    (names::LATENCY_PER_OUTPUT_TOKEN, DEFAULT_BUCKETS),
];

/// What the metrics are recorded with: as `metrics::counter!` in this module would.
static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// LiteLLM's `_get_exception_class_name`: the provider, capitalized, a dot, and the exception
/// type (`Openai.RateLimitError`); the type alone without a provider.
pub fn exception_class(provider: Option<&str>, class: &ErrorClass) -> String {
    let name = class.name();
    let mut chars = provider.unwrap_or_default().chars();
    match chars.next() {
        Some(first) => {
            let mut out = String::with_capacity(name.len() + 16);
            out.extend(first.to_uppercase());
            out.push_str(chars.as_str());
            out.push('.');
            out.push_str(name);
            out
        }
        None => name.to_string(),
    }
}

/// LiteLLM's `exception_status` of a failure: its HTTP status (a connection error is LiteLLM's
/// `APIConnectionError`, status 500).
pub fn exception_status(class: &ErrorClass) -> u16 {
    class.status().unwrap_or(500)
}

/// The label values of one deployment, as LiteLLM gives them.
struct Labels {
    /// `requested_model` / `model_group`: the deployment's model group.
    group: String,
    /// `litellm_model_name` / `model`: the deployment's model without its provider prefix.
    model: String,
    /// `model_id`.
    id: String,
    /// `api_base` (empty without one).
    api_base: String,
    /// `api_provider`.
    provider: String,
}

impl Labels {
    fn of(deployment: &Deployment) -> Self {
        let provider = deployment
            .provider()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default();
        // LiteLLM's `model` after `get_llm_provider`: `openai/gpt-4o` is `gpt-4o`.
        let model = match deployment.model.split_once('/') {
            Some((prefix, rest)) if prefix == provider && !rest.is_empty() => rest,
            _ => deployment.model.as_str(),
        };
        Labels {
            group: deployment.model_name.clone(),
            model: model.to_string(),
            id: deployment.id().as_str().to_string(),
            api_base: deployment.api_base.clone().unwrap_or_default(),
            provider,
        }
    }

    /// The labels named, in order: a deployment's own from it, the rest [`ABSENT`]
    /// (`extra` first: a label the event sets).
    fn pick(&self, names: &[&'static str], extra: &[(&'static str, &str)]) -> Vec<Label> {
        names
            .iter()
            .map(|&name| {
                let value = extra
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| *v)
                    .unwrap_or_else(|| match name {
                        "requested_model" | "model_group" => &self.group,
                        "litellm_model_name" | "model" => &self.model,
                        "model_id" => &self.id,
                        "api_base" => &self.api_base,
                        "api_provider" => &self.provider,
                        _ => ABSENT,
                    });
                Label::new(name, value.to_string())
            })
            .collect()
    }
}

/// LiteLLM's label names of each metric (`PrometheusMetricLabels`).
mod labels {
    pub(super) const DEPLOYMENT_STATE: &[&str] =
        &["litellm_model_name", "model_id", "api_base", "api_provider"];
    pub(super) const REMAINING: &[&str] = &[
        "model_group",
        "api_provider",
        "api_base",
        "litellm_model_name",
        "hashed_api_key",
        "api_key_alias",
        "model_id",
    ];
    pub(super) const DEPLOYMENT_TOTAL: &[&str] = &[
        "requested_model",
        "litellm_model_name",
        "model_id",
        "api_base",
        "api_provider",
        "hashed_api_key",
        "api_key_alias",
        "team",
        "team_alias",
        "client_ip",
        "user_agent",
    ];
    pub(super) const DEPLOYMENT_FAILURE: &[&str] = &[
        "requested_model",
        "litellm_model_name",
        "model_id",
        "api_base",
        "api_provider",
        "exception_status",
        "exception_class",
        "hashed_api_key",
        "api_key_alias",
        "team",
        "team_alias",
        "client_ip",
        "user_agent",
    ];
    pub(super) const LATENCY_PER_OUTPUT_TOKEN: &[&str] = &[
        "litellm_model_name",
        "model_id",
        "api_base",
        "api_provider",
        "hashed_api_key",
        "api_key_alias",
        "team",
        "team_alias",
    ];
    pub(super) const COOLED_DOWN: &[&str] = &[
        "litellm_model_name",
        "model_id",
        "api_base",
        "api_provider",
        "exception_status",
    ];
    pub(super) const FALLBACKS: &[&str] = &[
        "requested_model",
        "fallback_model",
        "hashed_api_key",
        "api_key_alias",
        "team",
        "team_alias",
        "exception_status",
        "exception_class",
        "model_id",
    ];
    pub(super) const LLM_API_LATENCY: &[&str] = &[
        "model",
        "hashed_api_key",
        "api_key_alias",
        "team",
        "team_alias",
        "requested_model",
        "end_user",
        "user",
        "model_id",
    ];
    pub(super) const REQUEST_TOTAL_LATENCY: &[&str] = &[
        "end_user",
        "hashed_api_key",
        "api_key_alias",
        "requested_model",
        "team",
        "team_alias",
        "user",
        "model",
        "model_id",
    ];
    pub(super) const SPEND: &[&str] = &[
        "end_user",
        "hashed_api_key",
        "api_key_alias",
        "model",
        "team",
        "team_alias",
        "user",
        "user_email",
        "client_ip",
        "user_agent",
        "model_id",
    ];
    pub(super) const TOKENS: &[&str] = &[
        "end_user",
        "hashed_api_key",
        "api_key_alias",
        "model",
        "team",
        "team_alias",
        "user",
        "user_email",
        "requested_model",
        "model_id",
    ];
}

/// LiteLLM's label names of the proxy's request metrics, for the gateway.
pub mod proxy_labels {
    /// `litellm_proxy_total_requests_metric`'s.
    pub const TOTAL_REQUESTS: &[&str] = &[
        "end_user",
        "hashed_api_key",
        "api_key_alias",
        "requested_model",
        "team",
        "team_alias",
        "user",
        "status_code",
        "user_email",
        "route",
        "client_ip",
        "user_agent",
        "model_id",
    ];
    /// `litellm_proxy_failed_requests_metric`'s.
    pub const FAILED_REQUESTS: &[&str] = &[
        "end_user",
        "hashed_api_key",
        "api_key_alias",
        "requested_model",
        "team",
        "team_alias",
        "user",
        "user_email",
        "exception_status",
        "exception_class",
        "route",
        "client_ip",
        "user_agent",
        "model_id",
    ];
}

/// One deployment's handles.
struct Handles {
    state: Gauge,
    /// Registered at the first value (LiteLLM shows no series until it has one: a gauge at 0
    /// would say nothing is left).
    remaining_requests: OnceLock<Gauge>,
    remaining_tokens: OnceLock<Gauge>,
    success: Counter,
    total: Counter,
    latency_per_output_token: Histogram,
    request_total_latency: Histogram,
    llm_api_latency: Histogram,
    /// Registered at the first stream's (LiteLLM has none for whole answers).
    time_to_first_token: OnceLock<Histogram>,
    /// A counter of USD in LiteLLM; the `metrics` facade's counters count integers, so a gauge
    /// that only grows (the exposition's `# TYPE` says `gauge`).
    spend: Gauge,
    total_tokens: Counter,
    input_tokens: Counter,
    output_tokens: Counter,
    /// Failures by (status, class name): registered at a pair's first failure.
    failures: Mutex<Vec<(u16, &'static str, Counter)>>,
    /// Cooldowns by status.
    cooldowns: Mutex<Vec<(u16, Counter)>>,
}

impl Handles {
    fn register(recorder: &dyn Recorder, labels: &Labels) -> Self {
        let key = |name: &'static str, names: &[&'static str]| {
            Key::from_parts(name, labels.pick(names, &[]))
        };
        let counter = |name, names| recorder.register_counter(&key(name, names), &METADATA);
        let gauge = |name, names| recorder.register_gauge(&key(name, names), &METADATA);
        let histogram = |name, names| recorder.register_histogram(&key(name, names), &METADATA);
        Handles {
            state: gauge(names::DEPLOYMENT_STATE, labels::DEPLOYMENT_STATE),
            remaining_requests: OnceLock::new(),
            remaining_tokens: OnceLock::new(),
            success: counter(names::DEPLOYMENT_SUCCESS, labels::DEPLOYMENT_TOTAL),
            total: counter(names::DEPLOYMENT_TOTAL, labels::DEPLOYMENT_TOTAL),
            latency_per_output_token: histogram(
                names::LATENCY_PER_OUTPUT_TOKEN,
                labels::LATENCY_PER_OUTPUT_TOKEN,
            ),
            request_total_latency: histogram(
                names::REQUEST_TOTAL_LATENCY,
                labels::REQUEST_TOTAL_LATENCY,
            ),
            llm_api_latency: histogram(names::LLM_API_LATENCY, labels::LLM_API_LATENCY),
            time_to_first_token: OnceLock::new(),
            spend: gauge(names::SPEND, labels::SPEND),
            total_tokens: counter(names::TOTAL_TOKENS, labels::TOKENS),
            input_tokens: counter(names::INPUT_TOKENS, labels::TOKENS),
            output_tokens: counter(names::OUTPUT_TOKENS, labels::TOKENS),
            failures: Mutex::new(Vec::new()),
            cooldowns: Mutex::new(Vec::new()),
        }
    }
}

/// A successful call, as LiteLLM's success event reports it.
pub(crate) struct Succeeded<'a> {
    /// The deployment's call (a stream's, to its end).
    pub(crate) latency: Duration,
    /// A stream's time to first token (`None` for a whole response).
    pub(crate) time_to_first_token: Option<Duration>,
    pub(crate) usage: Option<&'a Usage>,
    pub(crate) cost: Option<f64>,
    /// Requests and tokens left in the deployment's windows, when it has limits.
    pub(crate) remaining: (Option<f64>, Option<f64>),
}

/// A snapshot's LiteLLM metrics: each deployment's label values, and its handles once
/// registered.
pub(crate) struct LitellmMetrics {
    labels: Box<[Labels]>,
    /// Each deployment's handles, by position, registered at its first event.
    registered: PerRecorder<Box<[OnceLock<Handles>]>>,
}

impl LitellmMetrics {
    /// The metrics of `deployments` (by position).
    pub(crate) fn new(deployments: &[Deployment]) -> Self {
        LitellmMetrics {
            labels: deployments.iter().map(Labels::of).collect(),
            registered: PerRecorder::default(),
        }
    }

    /// Runs `f` on the handles of the deployment at `position` for the recorder in use.
    fn with(&self, position: usize, f: impl FnOnce(&Handles, &Labels, &dyn Recorder)) {
        let Some(labels) = self.labels.get(position) else {
            return;
        };
        self.registered.with(
            |_| self.labels.iter().map(|_| OnceLock::new()).collect(),
            |deployments, recorder| {
                if let Some(slot) = deployments.get(position) {
                    let handles = slot.get_or_init(|| Handles::register(recorder, labels));
                    f(handles, labels, recorder);
                }
            },
        );
    }

    /// A deployment answered: LiteLLM's success event (`set_llm_deployment_success_metrics`,
    /// the latency, spend and token metrics) and `set_deployment_healthy`.
    pub(crate) fn succeeded(&self, position: usize, call: &Succeeded<'_>) {
        self.with(position, |h, labels, recorder| {
            let key = |name: &'static str, names: &[&'static str]| {
                Key::from_parts(name, labels.pick(names, &[]))
            };
            h.state.set(0.0);
            h.success.increment(1);
            h.total.increment(1);
            let latency = call.latency.as_secs_f64();
            h.llm_api_latency.record(latency);
            if let Some(ttft) = call.time_to_first_token {
                h.time_to_first_token
                    .get_or_init(|| {
                        let key = key(names::TIME_TO_FIRST_TOKEN, labels::LLM_API_LATENCY);
                        recorder.register_histogram(&key, &METADATA)
                    })
                    .record(ttft.as_secs_f64());
            }
            if let Some(usage) = call.usage {
                let (input, output) = (usage.prompt_tokens, usage.completion_tokens);
                h.input_tokens.increment(input);
                h.output_tokens.increment(output);
                h.total_tokens.increment(input + output);
                if output > 0 {
                    // A stream's latency is its time to first token here, as LiteLLM's.
                    let seconds = call
                        .time_to_first_token
                        .map_or(latency, |t| t.as_secs_f64());
                    h.latency_per_output_token.record(seconds / output as f64);
                }
            }
            if let Some(cost) = call.cost.filter(|c| c.is_finite() && *c > 0.0) {
                h.spend.increment(cost);
            }
            let remaining = [
                (
                    &h.remaining_requests,
                    names::REMAINING_REQUESTS,
                    call.remaining.0,
                ),
                (
                    &h.remaining_tokens,
                    names::REMAINING_TOKENS,
                    call.remaining.1,
                ),
            ];
            for (slot, name, left) in remaining {
                if let Some(left) = left {
                    slot.get_or_init(|| {
                        recorder.register_gauge(&key(name, labels::REMAINING), &METADATA)
                    })
                    .set(left);
                }
            }
        });
    }

    /// A request answered by the deployment at `position` after `elapsed` (retries and
    /// fallbacks included).
    pub(crate) fn answered(&self, position: usize, elapsed: Duration) {
        self.with(position, |h, _, _| {
            h.request_total_latency.record(elapsed.as_secs_f64());
        });
    }

    /// A deployment's call failed: `set_llm_deployment_failure_metrics` (partial outage).
    pub(crate) fn failed(&self, position: usize, class: &ErrorClass) {
        self.with(position, |h, labels, recorder| {
            h.state.set(1.0);
            h.total.increment(1);
            let status = exception_status(class);
            let name = class.name();
            let mut failures = h.failures.lock();
            match failures.iter().find(|(s, n, _)| *s == status && *n == name) {
                Some((_, _, counter)) => counter.increment(1),
                None => {
                    let status_text = status.to_string();
                    let class_text = exception_class(Some(&labels.provider), class);
                    let key = Key::from_parts(
                        names::DEPLOYMENT_FAILURE,
                        labels.pick(
                            labels::DEPLOYMENT_FAILURE,
                            &[
                                ("exception_status", &status_text),
                                ("exception_class", &class_text),
                            ],
                        ),
                    );
                    let counter = recorder.register_counter(&key, &METADATA);
                    counter.increment(1);
                    failures.push((status, name, counter));
                }
            }
        });
    }

    /// A deployment was cooled down: `set_deployment_complete_outage` and
    /// `increment_deployment_cooled_down`.
    pub(crate) fn cooled_down(&self, position: usize, class: &ErrorClass) {
        self.with(position, |h, labels, recorder| {
            h.state.set(2.0);
            let status = exception_status(class);
            let mut cooldowns = h.cooldowns.lock();
            match cooldowns.iter().find(|(s, _)| *s == status) {
                Some((_, counter)) => counter.increment(1),
                None => {
                    let status_text = status.to_string();
                    let key = Key::from_parts(
                        names::COOLED_DOWN,
                        labels.pick(labels::COOLED_DOWN, &[("exception_status", &status_text)]),
                    );
                    let counter = recorder.register_counter(&key, &METADATA);
                    counter.increment(1);
                    cooldowns.push((status, counter));
                }
            }
        });
    }
}

/// A fallback from `requested` to `fallback` after a failure of `class` (from a deployment of
/// `provider`) answered (`succeeded`) or failed: LiteLLM's `log_success_fallback_event` /
/// `log_failure_fallback_event`. Fallbacks are rare: the key is built per event.
pub(crate) fn fallback(
    succeeded: bool,
    requested: &str,
    fallback: &str,
    class: Option<&ErrorClass>,
    provider: Option<&str>,
) {
    let (status, class_name) = match class {
        Some(class) => (
            exception_status(class).to_string(),
            exception_class(provider, class),
        ),
        None => (ABSENT.to_string(), ABSENT.to_string()),
    };
    let values: Vec<Label> = labels::FALLBACKS
        .iter()
        .map(|&name| {
            let value = match name {
                "requested_model" => requested,
                "fallback_model" => fallback,
                "exception_status" => &status,
                "exception_class" => &class_name,
                _ => ABSENT,
            };
            Label::new(name, value.to_string())
        })
        .collect();
    let name = if succeeded {
        names::SUCCESSFUL_FALLBACKS
    } else {
        names::FAILED_FALLBACKS
    };
    metrics::with_recorder(|recorder| {
        recorder
            .register_counter(&Key::from_parts(name, values), &METADATA)
            .increment(1);
    });
}
