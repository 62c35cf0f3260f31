//! LiteLLM's proxy-level Prometheus metrics (its `PrometheusLogger`'s
//! `litellm_proxy_total_requests_metric` and `litellm_proxy_failed_requests_metric`), counted
//! per request the gateway answers, with LiteLLM's labels; the deployment-level ones are the
//! router's ([`ferrolite_router::litellm`]).
//!
//! A series' handles are registered at its first request (route, requested model, answering
//! deployment, status) and found again by a hash of those values, so a request builds no key
//! and allocates no label once its series exists. The series are capped: past
//! [`MAX_SERIES`], a new requested model is counted under `requested_model="None"` (the model is
//! whatever a client sends).

use ferrolite_router::litellm::{ABSENT, PerRecorder, names, proxy_labels};
use ferrolite_types::ErrorClass;
use metrics::{Counter, Key, Label, Level, Metadata, Recorder};
use parking_lot::RwLock;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

/// What the metrics are recorded with: as `metrics::counter!` in this module would.
static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// The most series kept with their own requested model.
pub(super) const MAX_SERIES: usize = 10_000;

/// One answered request, as the proxy metrics label it.
pub(super) struct Answered<'a> {
    /// The path it was sent to (LiteLLM's `route`).
    pub(super) route: &'a str,
    /// The model it asked for.
    pub(super) requested_model: Option<&'a str>,
    /// The deployment that answered (`x-litellm-model-id`).
    pub(super) model_id: Option<&'a str>,
    /// The status it was answered with.
    pub(super) status: u16,
}

/// One series' handles.
struct Series {
    route: Box<str>,
    model: Box<str>,
    id: Box<str>,
    status: u16,
    total: Counter,
    /// Errors only.
    failed: Option<Counter>,
}

/// The series registered with one recorder.
struct Registered {
    series: RwLock<HashMap<u64, Vec<Series>>>,
    count: std::sync::atomic::AtomicUsize,
}

/// The gateway's LiteLLM proxy metrics.
#[derive(Default)]
pub(super) struct ProxyMetrics {
    registered: PerRecorder<Registered>,
}

impl ProxyMetrics {
    /// Counts an answered request (LiteLLM leaves out the requests refused for their key: 401).
    pub(super) fn record(&self, answered: &Answered<'_>) {
        if answered.status == 401 {
            return;
        }
        self.registered.with(
            |_| Registered {
                series: RwLock::new(HashMap::new()),
                count: std::sync::atomic::AtomicUsize::new(0),
            },
            |registered, recorder| registered.record(recorder, answered),
        );
    }
}

impl Registered {
    fn record(&self, recorder: &dyn Recorder, answered: &Answered<'_>) {
        let route = answered.route;
        let id = answered.model_id.unwrap_or(ABSENT);
        let status = answered.status;
        let mut model = answered.requested_model.unwrap_or(ABSENT);
        let hash = hash_of(route, model, id, status);
        if let Some(series) = self
            .series
            .read()
            .get(&hash)
            .and_then(|v| v.iter().find(|s| s.is(route, model, id, status)))
        {
            series.count();
            return;
        }
        if self.count.load(std::sync::atomic::Ordering::Relaxed) >= MAX_SERIES {
            model = ABSENT;
        }
        let hash = hash_of(route, model, id, status);
        let mut map = self.series.write();
        let bucket = map.entry(hash).or_default();
        if let Some(series) = bucket.iter().find(|s| s.is(route, model, id, status)) {
            series.count();
            return;
        }
        let series = Series::register(recorder, route, model, id, status);
        series.count();
        bucket.push(series);
        self.count
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Series {
    /// Whether this is the series of these label values.
    fn is(&self, route: &str, model: &str, id: &str, status: u16) -> bool {
        self.status == status && &*self.route == route && &*self.model == model && &*self.id == id
    }

    fn register(recorder: &dyn Recorder, route: &str, model: &str, id: &str, status: u16) -> Self {
        let status_text = status.to_string();
        let error = status >= 400;
        let class = ErrorClass::from_status(status, None).name();
        let value = |name: &str| -> String {
            match name {
                "route" => route,
                "requested_model" => model,
                "model_id" => id,
                "status_code" | "exception_status" => &status_text,
                "exception_class" => class,
                _ => ABSENT,
            }
            .to_string()
        };
        let labels = |names: &[&'static str]| -> Vec<Label> {
            names.iter().map(|&n| Label::new(n, value(n))).collect()
        };
        let total = recorder.register_counter(
            &Key::from_parts(
                names::PROXY_TOTAL_REQUESTS,
                labels(proxy_labels::TOTAL_REQUESTS),
            ),
            &METADATA,
        );
        let failed = error.then(|| {
            recorder.register_counter(
                &Key::from_parts(
                    names::PROXY_FAILED_REQUESTS,
                    labels(proxy_labels::FAILED_REQUESTS),
                ),
                &METADATA,
            )
        });
        Series {
            route: route.into(),
            model: model.into(),
            id: id.into(),
            status,
            total,
            failed,
        }
    }

    fn count(&self) {
        self.total.increment(1);
        if let Some(failed) = &self.failed {
            failed.increment(1);
        }
    }
}

fn hash_of(route: &str, model: &str, id: &str, status: u16) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (route, model, id, status).hash(&mut hasher);
    hasher.finish()
}
