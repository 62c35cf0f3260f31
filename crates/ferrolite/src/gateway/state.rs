//! The gateway's shared state: its settings, and the router and settings every request
//! handler reads.

use ferrolite_router::Router;
use ferrolite_types::Secret;

/// How the gateway serves.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// `general_settings.master_key`: when set, every API call needs `Authorization: Bearer
    /// <master_key>`.
    pub master_key: Option<Secret>,
    /// Bodies larger than this are refused with 413 (default 8 MiB).
    pub max_body_bytes: usize,
    /// API keys besides the master key (`ferrolite_settings.api_keys`), each with its groups,
    /// limits and budget.
    pub api_keys: Vec<crate::config::ApiKey>,
    /// The Prometheus recorder `/metrics` renders ([`install_metrics`]); without one `/metrics`
    /// answers 503.
    pub metrics: Option<PrometheusHandle>,
    /// Names `/v1/models` does not list: the `model_group_alias` entries marked `hidden`.
    pub hidden_models: Vec<String>,
    /// `ferrolite_settings.litellm_metrics`: count LiteLLM's proxy metrics
    /// (`litellm_proxy_total_requests_metric`, `litellm_proxy_failed_requests_metric`) and
    /// render `litellm_provider_remaining_budget_metric` (default on).
    pub litellm_metrics: bool,
    /// `litellm_settings.require_auth_for_metrics_endpoint`: `/metrics` answers only the
    /// master key's holder (401 otherwise); open when false (the default).
    pub require_auth_for_metrics: bool,
    /// This gateway's replica (its heartbeat, `/router/state`'s `replica` and `replicas`),
    /// read when the app is built (a reload keeps it). Without one the gateway is a replica
    /// of its own, with an empty config hash, that does not beat.
    pub replicas: Option<std::sync::Arc<ferrolite_router::Replicas>>,
    /// Where the request and attempt spans go (distributed tracing: `ferrolite::otel`'s
    /// exporter, feature `otel`), read when the app is built (a reload keeps it). Without one
    /// nothing is traced.
    pub traces: Option<std::sync::Arc<dyn ferrolite_router::spans::SpanSink>>,
}

pub use metrics_exporter_prometheus::PrometheusHandle;

/// Installs the process-wide Prometheus recorder the router's and the cache's metrics
/// (`ferrolite_router_*`, `ferrolite_cache_*`, LiteLLM's `litellm_*`) go to; its handle renders
/// `/metrics`. Once per process: a second call fails.
pub fn install_metrics() -> Result<PrometheusHandle, String> {
    prometheus_builder()?
        .install_recorder()
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))
}

/// The Prometheus exporter [`install_metrics`] installs: ferrolite's histograms rendered as
/// summaries, LiteLLM's as histograms with LiteLLM's buckets (its dashboards read their
/// `_bucket` series).
pub fn prometheus_builder() -> Result<metrics_exporter_prometheus::PrometheusBuilder, String> {
    use metrics_exporter_prometheus::Matcher;
    let mut builder = metrics_exporter_prometheus::PrometheusBuilder::new();
    for (name, buckets) in ferrolite_router::litellm::HISTOGRAMS {
        builder = builder
            .set_buckets_for_metric(Matcher::Full((*name).to_string()), buckets)
            .map_err(|e| format!("cannot set the buckets of {name}: {e}"))?;
    }
    Ok(builder)
}

impl Default for GatewaySettings {
    fn default() -> Self {
        GatewaySettings {
            master_key: None,
            max_body_bytes: 8 << 20,
            api_keys: Vec::new(),
            metrics: None,
            hidden_models: Vec::new(),
            litellm_metrics: true,
            require_auth_for_metrics: false,
            replicas: None,
            traces: None,
        }
    }
}

/// What every request handler shares: the router and settings served now (swapped by a
/// reload), and the request-id counter.
pub(super) struct Gateway {
    /// This gateway's replica.
    pub(super) replicas: std::sync::Arc<ferrolite_router::Replicas>,
    /// The router served now.
    pub(super) router: arc_swap::ArcSwap<Router>,
    /// The settings served now.
    pub(super) settings: arc_swap::ArcSwap<GatewaySettings>,
    /// Where the request and attempt spans go ([`GatewaySettings::traces`]).
    pub(super) traces: Option<std::sync::Arc<dyn ferrolite_router::spans::SpanSink>>,
    /// Request ids: this gateway's prefix and a counter.
    pub(super) id_prefix: String,
    /// Request ids given so far.
    pub(super) requests: std::sync::atomic::AtomicU64,
    /// The gateway's own metrics' handles.
    pub(super) telemetry: super::telemetry::Telemetry,
    /// LiteLLM's proxy metrics' handles.
    pub(super) litellm: super::litellm::ProxyMetrics,
}
