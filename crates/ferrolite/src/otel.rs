//! OpenTelemetry traces over OTLP (feature `otel`): the gateway's request span and the router's
//! attempt spans (the `tracing` target [`TARGET`]) exported to a collector over HTTP/protobuf or
//! gRPC, with W3C trace context continued from the client and sent to the upstreams.
//!
//! [`Otel::start`] reads the configuration ([`OtelConfig`]) and the standard variables
//! (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
//! `OTEL_EXPORTER_OTLP_PROTOCOL`, `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`,
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_SERVICE_NAME`, `OTEL_SDK_DISABLED`), and with LiteLLM's
//! `callbacks: ["otel"]` LiteLLM's own (`OTEL_EXPORTER`, `OTEL_ENDPOINT`, `OTEL_HEADERS`). With
//! no endpoint anywhere it starts nothing: no layer, and the spans stay disabled callsites.
//! [`Otel::layer`] is the `tracing` layer to add to the subscriber; it takes only [`TARGET`].

use std::collections::HashMap;
use std::sync::Arc;

use hyper::http;
use std::sync::atomic::{AtomicUsize, Ordering};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

use crate::config::{OtelConfig, OtelProtocol};

pub use ferrolite_router::spans::TARGET;

/// How many started [`Otel`]s export: the HTTP backend sends trace context only while one
/// does (otherwise a call pays one load).
static EXPORTING: AtomicUsize = AtomicUsize::new(0);

/// Why the traces could not be started.
#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    /// A setting or variable cannot be used (named, never with a header's value).
    #[error("OpenTelemetry: {field}: {reason}")]
    Invalid {
        /// The setting or variable.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The exporter could not be built.
    #[error("OpenTelemetry: the OTLP exporter: {0}")]
    Exporter(String),
    /// Flushing or shutting down the exporter failed.
    #[error("OpenTelemetry: {0}")]
    Export(String),
}

/// Where and how the traces go, the configuration and the variables taken together.
#[derive(Clone, PartialEq)]
pub struct OtelTarget {
    /// The URL exported to: for HTTP the traces URL itself (`…/v1/traces`).
    pub endpoint: String,
    /// The transport.
    pub protocol: OtelProtocol,
    /// Headers besides the `OTEL_EXPORTER_OTLP_HEADERS` the exporter reads itself.
    pub headers: Vec<(String, ferrolite_types::Secret)>,
    /// The resource's `service.name`.
    pub service_name: String,
    /// The share of new traces sampled, when set.
    pub sampling_ratio: Option<f64>,
}

impl std::fmt::Debug for OtelTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtelTarget")
            .field("endpoint", &self.endpoint)
            .field("protocol", &self.protocol)
            .field(
                "headers",
                &self.headers.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("service_name", &self.service_name)
            .field("sampling_ratio", &self.sampling_ratio)
            .finish()
    }
}

impl OtelTarget {
    /// The target `config` and the variables `var` reads describe, or `None` when no endpoint
    /// is given anywhere (or `OTEL_SDK_DISABLED=true`). The configuration wins over the
    /// variables, the signal's own variables over the general ones, the standard ones over
    /// LiteLLM's.
    pub fn resolve(
        config: &OtelConfig,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<OtelTarget>, OtelError> {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        let litellm = config.litellm_callback;
        let protocol = match config.protocol {
            Some(protocol) => protocol,
            None => {
                let named = [
                    ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", true),
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", true),
                    ("OTEL_EXPORTER", litellm),
                ]
                .into_iter()
                .filter(|(_, read)| *read)
                .find_map(|(name, _)| var(name).map(|value| (name, value)));
                match named {
                    None => OtelProtocol::HttpProtobuf,
                    Some((name, value)) => match OtelProtocol::parse(&value) {
                        Some(protocol) => protocol,
                        // LiteLLM's `console` (and `in_memory`) exporters print or keep spans
                        // in the process: ferrolite exports over OTLP only.
                        None if name == "OTEL_EXPORTER" => OtelProtocol::HttpProtobuf,
                        None => {
                            return Err(OtelError::Invalid {
                                field: name.to_string(),
                                reason: format!(
                                    "expected `http/protobuf` or `grpc`, got `{value}`"
                                ),
                            });
                        }
                    },
                }
            }
        };
        let traces_url = |base: &str| match protocol {
            OtelProtocol::Grpc => base.to_string(),
            OtelProtocol::HttpProtobuf => traces_path(base),
        };
        let endpoint = if let Some(endpoint) = &config.endpoint {
            traces_url(endpoint)
        } else if let Some(endpoint) = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            endpoint
        } else if let Some(endpoint) = var("OTEL_EXPORTER_OTLP_ENDPOINT") {
            traces_url(&endpoint)
        } else if let Some(endpoint) = var("OTEL_ENDPOINT").filter(|_| litellm) {
            traces_url(&endpoint)
        } else {
            return Ok(None);
        };
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(OtelError::Invalid {
                field: "endpoint".to_string(),
                reason: "expected an http:// or https:// URL".to_string(),
            });
        }
        let mut headers = config.headers.clone();
        if litellm {
            if let Some(text) = var("OTEL_HEADERS") {
                headers.extend(parse_headers(&text, "OTEL_HEADERS")?);
            }
        }
        let service_name = config
            .service_name
            .clone()
            .or_else(|| var("OTEL_SERVICE_NAME"))
            .unwrap_or_else(|| "ferrolite".to_string());
        Ok(Some(OtelTarget {
            endpoint,
            protocol,
            headers,
            service_name,
            sampling_ratio: config.sampling_ratio,
        }))
    }
}

/// A base URL with OTLP/HTTP's traces path: as LiteLLM does, a URL that already ends with
/// `/v1/traces` is kept, one ending with `/v1` gets `/traces`.
fn traces_path(base: &str) -> String {
    let base = base.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_string()
    } else if base.ends_with("/v1") {
        format!("{base}/traces")
    } else {
        format!("{base}/v1/traces")
    }
}

/// `name=value,name=value` (values percent-encoded, as the OTLP variables write them).
fn parse_headers(
    text: &str,
    field: &str,
) -> Result<Vec<(String, ferrolite_types::Secret)>, OtelError> {
    let mut headers = Vec::new();
    for pair in text.split(',').filter(|p| !p.trim().is_empty()) {
        let Some((name, value)) = pair.split_once('=') else {
            return Err(OtelError::Invalid {
                field: field.to_string(),
                reason: "expected name=value pairs separated by commas".to_string(),
            });
        };
        headers.push((
            name.trim().to_string(),
            ferrolite_types::Secret::new(percent_decode(value.trim())),
        ));
    }
    Ok(headers)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                let value = hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0);
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Traces being exported: the tracer provider and its batch exporter. Flush it
/// ([`Otel::force_flush`]) or shut it down ([`Otel::shutdown`]) from a thread that may block
/// (not from the only thread of a current-thread runtime): both wait for the exporter task.
#[derive(Debug)]
pub struct Otel {
    provider: SdkTracerProvider,
    target: OtelTarget,
}

impl Otel {
    /// Starts exporting as `config` and the process' variables say, or returns `None` when they
    /// name no endpoint. Must run inside a Tokio runtime, which then runs the batch exporter
    /// (it must outlive the spans exported).
    pub fn start(config: &OtelConfig) -> Result<Option<Otel>, OtelError> {
        match OtelTarget::resolve(config, |name| std::env::var(name).ok())? {
            Some(target) => Otel::start_with(target).map(Some),
            None => Ok(None),
        }
    }

    /// Starts exporting to `target`. Must run inside a Tokio runtime, which then runs the
    /// batch exporter.
    pub fn start_with(target: OtelTarget) -> Result<Otel, OtelError> {
        let exporter = exporter(&target)?;
        let batch = opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .build();
        let processor = Gathered::start(batch);
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(target.service_name.clone())
            .build();
        let mut builder = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(resource);
        if let Some(ratio) = target.sampling_ratio {
            builder = builder.with_sampler(Sampler::ParentBased(Box::new(
                Sampler::TraceIdRatioBased(ratio),
            )));
        }
        let provider = builder.build();
        EXPORTING.fetch_add(1, Ordering::Relaxed);
        Ok(Otel { provider, target })
    }

    /// Where the traces go.
    pub fn target(&self) -> &OtelTarget {
        &self.target
    }

    /// The `tracing` layer that exports the spans of [`TARGET`] (and nothing else).
    pub fn layer<S>(&self) -> impl Layer<S> + Send + Sync + 'static
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
    {
        let tracer = self.provider.tracer("ferrolite");
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_location(false)
            .with_threads(false)
            .with_level(false)
            .with_tracked_inactivity(false)
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target(TARGET, tracing::Level::INFO),
            )
    }

    /// Exports every span ended so far.
    pub fn force_flush(&self) -> Result<(), OtelError> {
        self.provider
            .force_flush()
            .map_err(|e| OtelError::Export(e.to_string()))
    }

    /// Exports what is left and stops the exporter.
    pub fn shutdown(self) -> Result<(), OtelError> {
        EXPORTING.fetch_sub(1, Ordering::Relaxed);
        self.provider
            .shutdown()
            .map_err(|e| OtelError::Export(e.to_string()))
    }
}

/// How many ended spans are gathered before they go to the batch exporter together.
const GATHER: usize = 256;

/// How often spans gathered (fewer than [`GATHER`]) go to the batch exporter.
const GATHER_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// A span processor that gathers ended spans and hands them to `P` (the batch exporter) a few
/// hundred at a time, or every [`GATHER_EVERY`]. The batch exporter's queue wakes its export
/// task on every span it is given: a request span and an attempt span made two cross-thread
/// wake-ups (each a system call) per request; gathered, they make one per [`GATHER`] spans.
#[derive(Debug)]
struct Gathered<P> {
    shared: Arc<GatheredShared<P>>,
}

#[derive(Debug)]
struct GatheredShared<P> {
    /// The batch exporter (behind a lock only for `set_resource`, which takes it mutably).
    inner: parking_lot::RwLock<P>,
    pending: parking_lot::Mutex<Vec<opentelemetry_sdk::trace::SpanData>>,
    /// Shut down: the gathering task stops.
    closed: std::sync::atomic::AtomicBool,
}

impl<P: opentelemetry_sdk::trace::SpanProcessor + 'static> Gathered<P> {
    /// Gathers for `inner`, handing gathered spans on every [`GATHER_EVERY`] from a task of the
    /// current Tokio runtime (it stops when the processor shuts down or is dropped).
    fn start(inner: P) -> Self {
        let shared = Arc::new(GatheredShared {
            inner: parking_lot::RwLock::new(inner),
            pending: parking_lot::Mutex::new(Vec::with_capacity(GATHER)),
            closed: std::sync::atomic::AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&shared);
        // The gathering task lives as long as the processor: owned by it through `weak` and
        // `closed`, like the batch exporter's own task, on the same runtime.
        #[allow(clippy::disallowed_methods)]
        tokio::spawn(async move {
            let mut every = tokio::time::interval(GATHER_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let Some(shared) = weak.upgrade() else { break };
                if shared.closed.load(Ordering::Relaxed) {
                    break;
                }
                shared.hand_on();
            }
        });
        Gathered { shared }
    }
}

impl<P: opentelemetry_sdk::trace::SpanProcessor> GatheredShared<P> {
    /// Hands every gathered span to the batch exporter.
    fn hand_on(&self) {
        let gathered = std::mem::replace(&mut *self.pending.lock(), Vec::with_capacity(GATHER));
        if gathered.is_empty() {
            return;
        }
        let inner = self.inner.read();
        for span in gathered {
            inner.on_end(span);
        }
    }
}

impl<P: opentelemetry_sdk::trace::SpanProcessor> opentelemetry_sdk::trace::SpanProcessor
    for Gathered<P>
{
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &opentelemetry::Context) {
        self.shared.inner.read().on_start(span, cx);
    }

    fn on_end(&self, span: opentelemetry_sdk::trace::SpanData) {
        let full = {
            let mut pending = self.shared.pending.lock();
            pending.push(span);
            pending.len() >= GATHER
        };
        if full {
            self.shared.hand_on();
        }
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.shared.hand_on();
        self.shared.inner.read().force_flush()
    }

    fn shutdown_with_timeout(
        &self,
        timeout: std::time::Duration,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        self.shared.closed.store(true, Ordering::Relaxed);
        self.shared.hand_on();
        self.shared.inner.read().shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.shared.inner.write().set_resource(resource);
    }
}

/// The OTLP span exporter of `target`.
fn exporter(target: &OtelTarget) -> Result<opentelemetry_otlp::SpanExporter, OtelError> {
    let built = match target.protocol {
        OtelProtocol::HttpProtobuf => {
            // reqwest with `rustls-no-provider` needs a process-wide crypto provider; a
            // second install is refused harmlessly.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let client = reqwest::Client::builder()
                .build()
                .map_err(|e| OtelError::Exporter(e.to_string()))?;
            let headers: HashMap<String, String> = target
                .headers
                .iter()
                .map(|(name, value)| (name.clone(), value.expose().to_string()))
                .collect();
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(client)
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(target.endpoint.clone())
                .with_headers(headers)
                .build()
        }
        OtelProtocol::Grpc => {
            let mut headers = reqwest::header::HeaderMap::new();
            for (name, value) in &target.headers {
                let name =
                    reqwest::header::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                        OtelError::Invalid {
                            field: "headers".to_string(),
                            reason: format!("`{name}` is not a header name"),
                        }
                    })?;
                let mut value =
                    reqwest::header::HeaderValue::from_str(value.expose()).map_err(|_| {
                        OtelError::Invalid {
                            field: "headers".to_string(),
                            reason: format!("the value of `{name}` is not a header value"),
                        }
                    })?;
                value.set_sensitive(true);
                headers.append(name, value);
            }
            let mut builder = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_protocol(opentelemetry_otlp::Protocol::Grpc)
                .with_endpoint(target.endpoint.clone())
                .with_metadata(
                    opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(headers),
                );
            if target.endpoint.starts_with("https://") {
                builder = builder.with_tls_config(
                    opentelemetry_otlp::tonic_types::transport::ClientTlsConfig::new()
                        .with_enabled_roots(),
                );
            }
            builder.build()
        }
    };
    built.map_err(|e| OtelError::Exporter(e.to_string()))
}

/// Continues the client's trace in `span` (the request's): its `traceparent` and `tracestate`
/// headers make the span's parent. Nothing when the span is not exported.
pub(crate) fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    if span.is_disabled() || !headers.contains_key("traceparent") {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    if let Err(e) = span.set_parent(parent) {
        tracing::debug!(error = %e, "could not continue the client's trace");
    }
}

/// Adds the current span's trace context (`traceparent`, `tracestate`) to a call's headers:
/// called while the attempt's span is current, it makes the upstream's parent that span.
pub(crate) fn inject(headers: &mut http::HeaderMap) {
    if EXPORTING.load(Ordering::Relaxed) == 0 {
        return;
    }
    let span = tracing::Span::current();
    if span.is_disabled() {
        return;
    }
    let context = span.context();
    TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(headers));
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = list
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn nothing_is_exported_without_an_endpoint() {
        let none = OtelTarget::resolve(&OtelConfig::default(), vars(&[]));
        assert!(matches!(none, Ok(None)));
        // LiteLLM's variables are read only with its `otel` callback.
        let litellm = vars(&[("OTEL_ENDPOINT", "http://collector:4318")]);
        assert!(matches!(
            OtelTarget::resolve(&OtelConfig::default(), &litellm),
            Ok(None)
        ));
        let disabled = vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_SDK_DISABLED", "true"),
        ]);
        assert!(matches!(
            OtelTarget::resolve(&OtelConfig::default(), disabled),
            Ok(None)
        ));
    }

    #[test]
    fn the_standard_variables_name_endpoint_protocol_and_service() -> Result<(), OtelError> {
        let env = vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
            ("OTEL_SERVICE_NAME", "gateway-eu"),
        ]);
        let target = OtelTarget::resolve(&OtelConfig::default(), env)?;
        let target = target.ok_or(OtelError::Export("no target".into()))?;
        assert_eq!(target.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(target.protocol, OtelProtocol::HttpProtobuf);
        assert_eq!(target.service_name, "gateway-eu");
        let env = vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4317"),
        ]);
        let target = OtelTarget::resolve(&OtelConfig::default(), env)?
            .ok_or(OtelError::Export("no target".into()))?;
        assert_eq!(target.endpoint, "http://traces:4317");
        assert_eq!(target.protocol, OtelProtocol::Grpc);
        assert_eq!(target.service_name, "ferrolite");
        let bad = vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon"),
        ]);
        let refused = OtelTarget::resolve(&OtelConfig::default(), bad);
        assert!(
            matches!(&refused, Err(OtelError::Invalid { field, .. }) if field == "OTEL_EXPORTER_OTLP_PROTOCOL")
        );
        Ok(())
    }

    #[test]
    fn litellms_variables_are_read_with_its_otel_callback() -> Result<(), OtelError> {
        let config = OtelConfig {
            litellm_callback: true,
            ..OtelConfig::default()
        };
        let env = vars(&[
            ("OTEL_EXPORTER", "otlp_grpc"),
            ("OTEL_ENDPOINT", "http://collector:4317"),
            ("OTEL_HEADERS", "Authorization=Bearer%20abc,x-team=t1"),
        ]);
        let target =
            OtelTarget::resolve(&config, env)?.ok_or(OtelError::Export("no target".into()))?;
        assert_eq!(target.protocol, OtelProtocol::Grpc);
        assert_eq!(target.endpoint, "http://collector:4317");
        let headers: Vec<(&str, &str)> = target
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.expose()))
            .collect();
        assert_eq!(
            headers,
            vec![("Authorization", "Bearer abc"), ("x-team", "t1")]
        );
        // The header values never show in the target's Debug.
        assert!(!format!("{target:?}").contains("abc"));
        let env = vars(&[
            ("OTEL_EXPORTER", "otlp_http"),
            ("OTEL_ENDPOINT", "https://api.example.com/v1/traces"),
        ]);
        let target =
            OtelTarget::resolve(&config, env)?.ok_or(OtelError::Export("no target".into()))?;
        assert_eq!(target.endpoint, "https://api.example.com/v1/traces");
        Ok(())
    }

    #[test]
    fn the_configuration_wins_over_the_variables() -> Result<(), OtelError> {
        let config = OtelConfig {
            endpoint: Some("http://config:4318/v1".into()),
            service_name: Some("from-config".into()),
            ..OtelConfig::default()
        };
        let env = vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318"),
            ("OTEL_SERVICE_NAME", "from-env"),
        ]);
        let target =
            OtelTarget::resolve(&config, env)?.ok_or(OtelError::Export("no target".into()))?;
        assert_eq!(target.endpoint, "http://config:4318/v1/traces");
        assert_eq!(target.service_name, "from-config");
        Ok(())
    }
}
