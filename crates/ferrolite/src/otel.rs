//! OpenTelemetry traces over OTLP (feature `otel`): the gateway's request spans and the
//! router's attempt spans ([`ferrolite_router::spans`]) exported to a collector over
//! HTTP/protobuf or gRPC, with W3C trace context continued from the client and sent to the
//! upstreams.
//!
//! [`Otel::start`] reads the configuration ([`OtelConfig`]) and the standard variables
//! (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
//! `OTEL_EXPORTER_OTLP_PROTOCOL`, `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`,
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_SERVICE_NAME`, `OTEL_SDK_DISABLED`), and with LiteLLM's
//! `callbacks: ["otel"]` LiteLLM's own (`OTEL_EXPORTER`, `OTEL_ENDPOINT`, `OTEL_HEADERS`). With
//! no endpoint anywhere it starts nothing. [`Otel::sink`] is where the spans go: give it to the
//! gateway ([`GatewaySettings::traces`](crate::gateway::GatewaySettings::traces)) or set it as a
//! routed request's [`Trace`](ferrolite_router::spans::Trace)'s sink.
//!
//! The spans do not go through `tracing`: the router and the gateway build each span once, when
//! it ends, and the sink copies it into the waiting batch (three vectors shared by
//! the spans, allocated once) for an export task of its own, which sends them to the collector
//! a few hundred at a time: the request path takes a lock and copies, and wakes the task once
//! per batch. Over HTTP/protobuf the task writes OTLP's protobuf itself (module `otlp`); over gRPC
//! it hands the SDK's exporter each span as a `SpanData`.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use ferrolite_router::spans::{Attr, FinishedSpan, SpanKind, SpanSink};
use opentelemetry::trace::{SpanContext, SpanId, Status, TraceFlags, TraceId, TraceState};
use opentelemetry::{InstrumentationScope, Key, KeyValue, Value};
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::trace::SpanData;

use crate::config::{OtelConfig, OtelProtocol};

mod otlp;

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

/// Traces being exported: the queue the spans are given to ([`Otel::sink`]) and the task that
/// exports them. Flush it ([`Otel::force_flush`]) or shut it down ([`Otel::shutdown`]) from a
/// thread that may block (not from the only thread of a current-thread runtime): both wait for
/// the export task.
#[derive(Debug)]
pub struct Otel {
    sink: Arc<Exporting>,
    commands: tokio::sync::mpsc::UnboundedSender<Command>,
    target: OtelTarget,
}

/// How the export task batches: `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`, `OTEL_BSP_SCHEDULE_DELAY`,
/// `OTEL_BSP_MAX_QUEUE_SIZE`, as the SDK's batch exporter reads them.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Batching {
    /// How many ended spans wait before the export task is woken to send them, and the most
    /// one export request carries (default 512).
    size: usize,
    /// How often the export task sends the spans waiting, fewer than `size` (default 500 ms).
    every: std::time::Duration,
    /// At most this many spans wait: beyond, while the collector does not keep up, new spans
    /// are dropped (and counted) rather than held without bound (default 8,192).
    max_waiting: usize,
}

impl Default for Batching {
    fn default() -> Self {
        Batching {
            size: 512,
            every: std::time::Duration::from_millis(500),
            max_waiting: 8 * 1024,
        }
    }
}

impl Batching {
    /// The batching the `OTEL_BSP_*` variables `var` reads ask for.
    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Batching, OtelError> {
        let number = |name: &str| -> Result<Option<u64>, OtelError> {
            let Some(text) = var(name).filter(|v| !v.trim().is_empty()) else {
                return Ok(None);
            };
            match text.trim().parse::<u64>() {
                Ok(n) if n > 0 => Ok(Some(n)),
                _ => Err(OtelError::Invalid {
                    field: name.to_string(),
                    reason: format!("expected a whole number above 0, got `{}`", text.trim()),
                }),
            }
        };
        let mut batching = Batching::default();
        let count = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        if let Some(n) = number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE")? {
            batching.size = count(n);
        }
        if let Some(ms) = number("OTEL_BSP_SCHEDULE_DELAY")? {
            batching.every = std::time::Duration::from_millis(ms);
        }
        if let Some(n) = number("OTEL_BSP_MAX_QUEUE_SIZE")? {
            batching.max_waiting = count(n);
        }
        // As the SDK does, a batch is never larger than the queue.
        batching.size = batching.size.min(batching.max_waiting);
        Ok(batching)
    }
}

/// How long [`Otel::force_flush`] and [`Otel::shutdown`] wait for the export task.
const WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// What the export task is asked to do besides exporting.
#[derive(Debug)]
enum Command {
    /// Export what waits now, and answer.
    Flush(std::sync::mpsc::Sender<Result<(), OtelError>>),
    /// Export what waits, shut the exporter down, answer and stop.
    Shutdown(std::sync::mpsc::Sender<Result<(), OtelError>>),
}

impl Otel {
    /// Starts exporting as `config` and the process' variables say, or returns `None` when they
    /// name no endpoint. Must run inside a Tokio runtime, which then runs the export task (it
    /// must outlive the spans exported).
    pub fn start(config: &OtelConfig) -> Result<Option<Otel>, OtelError> {
        let var = |name: &str| std::env::var(name).ok();
        match OtelTarget::resolve(config, var)? {
            Some(target) => Otel::start_batched(target, Batching::from_vars(var)?).map(Some),
            None => Ok(None),
        }
    }

    /// Starts exporting to `target`. Must run inside a Tokio runtime, which then runs the
    /// export task.
    pub fn start_with(target: OtelTarget) -> Result<Otel, OtelError> {
        Otel::start_batched(target, Batching::default())
    }

    fn start_batched(target: OtelTarget, batching: Batching) -> Result<Otel, OtelError> {
        use opentelemetry_sdk::trace::SpanExporter as _;
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(target.service_name.clone())
            .build();
        let exporter = match target.protocol {
            OtelProtocol::HttpProtobuf => Exporter::Http {
                exporter: otlp::HttpExporter::new(&target, |name| std::env::var(name).ok())?,
                encoder: otlp::Encoder::new(&resource, SCOPE),
            },
            OtelProtocol::Grpc => {
                let mut exporter = grpc_exporter(&target)?;
                exporter.set_resource(&resource);
                Exporter::Sdk {
                    exporter,
                    scope: InstrumentationScope::builder(SCOPE).build(),
                }
            }
        };
        let sink = Arc::new(Exporting {
            queue: Arc::new(Queue::new(batching)),
            sampling_ratio: target.sampling_ratio,
        });
        let (commands, received) = tokio::sync::mpsc::unbounded_channel();
        // The export task lives until `shutdown`, or until the `Otel` is dropped (its command
        // channel then closes), on the runtime that started it.
        #[allow(clippy::disallowed_methods)]
        tokio::spawn(export(exporter, Arc::clone(&sink.queue), received));
        Ok(Otel {
            sink,
            commands,
            target,
        })
    }

    /// Where the traces go.
    pub fn target(&self) -> &OtelTarget {
        &self.target
    }

    /// Where the spans are given to be exported.
    pub fn sink(&self) -> Arc<dyn SpanSink> {
        Arc::clone(&self.sink) as Arc<dyn SpanSink>
    }

    /// Spans dropped so far because the collector did not keep up (`OTEL_BSP_MAX_QUEUE_SIZE`).
    pub fn dropped(&self) -> u64 {
        self.sink.queue.dropped.load(Ordering::Relaxed)
    }

    /// Exports every span ended so far.
    pub fn force_flush(&self) -> Result<(), OtelError> {
        self.ask(Command::Flush)
    }

    /// Exports what is left and stops the exporter (spans ended later are dropped).
    pub fn shutdown(self) -> Result<(), OtelError> {
        let result = self.ask(Command::Shutdown);
        self.sink.queue.closed.store(true, Ordering::Relaxed);
        result
    }

    fn ask(
        &self,
        command: fn(std::sync::mpsc::Sender<Result<(), OtelError>>) -> Command,
    ) -> Result<(), OtelError> {
        let stopped = || OtelError::Export("the export task has stopped".to_string());
        let (reply, answer) = std::sync::mpsc::channel();
        self.commands.send(command(reply)).map_err(|_| stopped())?;
        answer.recv_timeout(WAIT).map_err(|_| stopped())?
    }
}

/// The spans waiting for the export task.
#[derive(Debug)]
struct Queue {
    batching: Batching,
    waiting: parking_lot::Mutex<Batch>,
    /// The last batch exported, emptied, whose room the next one takes (a batch's vectors are
    /// allocated once, not once a span).
    spare: parking_lot::Mutex<Batch>,
    /// Woken when a batch waits.
    ready: tokio::sync::Notify,
    dropped: std::sync::atomic::AtomicU64,
    /// Shut down: spans are no longer taken.
    closed: std::sync::atomic::AtomicBool,
}

impl Queue {
    fn new(batching: Batching) -> Self {
        Queue {
            batching,
            waiting: parking_lot::Mutex::new(Batch::default()),
            spare: parking_lot::Mutex::new(Batch::default()),
            ready: tokio::sync::Notify::new(),
            dropped: std::sync::atomic::AtomicU64::new(0),
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Queues an ended span (copied into the waiting batch), waking the export task when a
    /// batch waits.
    fn push(&self, span: &FinishedSpan<'_>) {
        let Batching {
            size, max_waiting, ..
        } = self.batching;
        let waiting = {
            let mut waiting = self.waiting.lock();
            if waiting.len() >= max_waiting {
                drop(waiting);
                if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(
                        waiting = max_waiting,
                        "the trace collector does not keep up: spans are dropped"
                    );
                }
                return;
            }
            waiting.push(span);
            waiting.len()
        };
        if waiting == size {
            self.ready.notify_one();
        }
    }

    /// The waiting spans (the spare batch waits in their place).
    fn take(&self) -> Batch {
        let spare = std::mem::take(&mut *self.spare.lock());
        std::mem::replace(&mut *self.waiting.lock(), spare)
    }

    /// A batch exported: emptied and kept for its room.
    fn give_back(&self, mut batch: Batch) {
        batch.clear();
        *self.spare.lock() = batch;
    }
}

/// The instrumentation scope of ferrolite's spans.
const SCOPE: &str = "ferrolite";

/// How the export task sends spans.
#[derive(Debug)]
enum Exporter {
    /// OTLP/HTTP: written as protobuf by ferrolite ([`otlp`]) and posted.
    Http {
        exporter: otlp::HttpExporter,
        encoder: otlp::Encoder,
    },
    /// gRPC: through the SDK's exporter, as its `SpanData`.
    Sdk {
        exporter: opentelemetry_otlp::SpanExporter,
        scope: InstrumentationScope,
    },
}

impl Exporter {
    /// Sends the spans `range` of `batch` in one export request.
    async fn send(&mut self, batch: &Batch, range: std::ops::Range<usize>) -> Result<(), String> {
        use opentelemetry_sdk::trace::SpanExporter as _;
        match self {
            Exporter::Http { exporter, encoder } => {
                exporter.send(encoder.request(batch, range)).await
            }
            Exporter::Sdk { exporter, scope } => {
                let spans = batch.spans.get(range).unwrap_or_default();
                let spans = spans.iter().map(|span| batch.span_data(span, scope));
                exporter
                    .export(spans.collect())
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    }

    fn shutdown(&mut self) -> Result<(), OtelError> {
        use opentelemetry_sdk::trace::SpanExporter as _;
        match self {
            Exporter::Http { .. } => Ok(()),
            Exporter::Sdk { exporter, .. } => exporter
                .shutdown()
                .map_err(|e| OtelError::Export(e.to_string())),
        }
    }
}

/// The export task: sends the waiting spans to the collector when a batch waits, every
/// [`Batching::every`], and when asked ([`Command`]), a batch a request at most.
async fn export(
    mut exporter: Exporter,
    queue: Arc<Queue>,
    mut commands: tokio::sync::mpsc::UnboundedReceiver<Command>,
) {
    let mut failing = Failing::default();
    let Batching { size, every, .. } = queue.batching;
    let mut every = tokio::time::interval(every);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let command = tokio::select! {
            _ = every.tick() => None,
            () = queue.ready.notified() => None,
            command = commands.recv() => match command {
                Some(command) => Some(command),
                // The `Otel` was dropped without a shutdown: send what is left and stop.
                None => Some(Command::Shutdown(std::sync::mpsc::channel().0)),
            },
        };
        let batch = queue.take();
        let mut result = Ok(());
        let mut from = 0;
        while from < batch.len() {
            let to = batch.len().min(from + size.max(1));
            match exporter.send(&batch, from..to).await {
                Ok(()) => failing.exported(),
                Err(error) => {
                    failing.failed(tokio::time::Instant::now().into_std(), &error);
                    result = Err(OtelError::Export(error));
                }
            }
            from = to;
        }
        queue.give_back(batch);
        match command {
            None => {}
            Some(Command::Flush(reply)) => {
                let _ = reply.send(result);
            }
            Some(Command::Shutdown(reply)) => {
                queue.closed.store(true, Ordering::Relaxed);
                let stopped = exporter.shutdown();
                let _ = reply.send(result.and(stopped));
                return;
            }
        }
    }
}

/// How often, at most, failed exports are warned of while the collector stays unreachable.
const WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Exports failing in a row: the first failure is warned of, then one warning a minute (with
/// the count so far) rather than one per export, every 500 ms, while the collector is down; the
/// first export that succeeds again says so.
#[derive(Debug, Default)]
struct Failing {
    /// Exports failed since the last that succeeded.
    failed: u64,
    /// When the last warning was written.
    warned: Option<std::time::Instant>,
}

impl Failing {
    /// An export failed at `now` with `error`; whether it was warned of.
    fn failed(&mut self, now: std::time::Instant, error: &str) -> bool {
        self.failed += 1;
        if self
            .warned
            .is_some_and(|warned| now.saturating_duration_since(warned) < WARN_EVERY)
        {
            return false;
        }
        self.warned = Some(now);
        tracing::warn!(
            error,
            failed_exports = self.failed,
            "could not export spans (warned of at most once a minute while it lasts)"
        );
        true
    }

    /// An export succeeded.
    fn exported(&mut self) {
        if self.failed > 0 {
            tracing::info!(
                failed_exports = self.failed,
                "exporting spans again after failed exports"
            );
        }
        *self = Failing::default();
    }
}

/// The sink of [`Otel`]: each finished span copied into a [`Queued`] and queued for the
/// export task.
#[derive(Debug)]
struct Exporting {
    queue: Arc<Queue>,
    sampling_ratio: Option<f64>,
}

impl SpanSink for Exporting {
    fn sample(&self, trace_id: u128) -> bool {
        self.sampling_ratio
            .is_none_or(|ratio| sampled(trace_id, ratio))
    }

    fn finished(&self, span: FinishedSpan<'_>) {
        if self.queue.closed.load(Ordering::Relaxed) {
            return;
        }
        self.queue.push(&span);
    }
}

/// Whether a new trace is sampled at `ratio`, as the SDK's `TraceIdRatioBased` sampler decides
/// it (the low half of the trace id, halved, against the ratio), so every replica decides alike.
fn sampled(trace_id: u128, ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    // The float-to-integer `as` saturates (a negative or NaN ratio samples nothing).
    let bound = (ratio.max(0.0) * (1u64 << 63) as f64) as u64;
    ((trace_id as u64) >> 1) < bound
}

/// Ended spans waiting for the export task, copied from the calls that ended them into three
/// vectors shared by all of them (the spans, their texts, their attributes): queueing a span
/// allocates nothing once the batch has grown to its usual size (the export task hands the
/// emptied vectors back, [`Queue::give_back`]), and the export task writes the spans from
/// them (as OTLP's protobuf, or as the SDK's `SpanData` for its gRPC exporter).
#[derive(Debug, Default)]
struct Batch {
    spans: Vec<Queued>,
    /// The spans' names, `tracestate`s and text attributes, one after the other.
    text: String,
    /// The spans' attributes, one span's after another's.
    attributes: Vec<(&'static str, Stored)>,
}

/// A span of a [`Batch`]: its texts and attributes are places in the batch's.
#[derive(Debug, Clone)]
struct Queued {
    kind: SpanKind,
    context: ferrolite_router::spans::SpanContext,
    parent: Option<(u64, bool)>,
    start: SystemTime,
    end: SystemTime,
    error: bool,
    name: (usize, usize),
    state: Option<(usize, usize)>,
    attributes: (usize, usize),
}

/// An attribute's value in a [`Batch`].
#[derive(Debug, Clone, Copy)]
enum Stored {
    Static(&'static str),
    /// Its place in the batch's text.
    Text(usize, usize),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Batch {
    fn len(&self) -> usize {
        self.spans.len()
    }

    fn clear(&mut self) {
        self.spans.clear();
        self.text.clear();
        self.attributes.clear();
    }

    /// Copies `span` in.
    fn push(&mut self, span: &FinishedSpan<'_>) {
        let mut place = |text: &str| {
            let start = self.text.len();
            self.text.push_str(text);
            (start, self.text.len())
        };
        let name = place(&span.name);
        let state = span.state.map(&mut place);
        let first = self.attributes.len();
        for (key, value) in span.attributes {
            let value = match value {
                None => continue,
                Some(Attr::Static(t)) => Stored::Static(t),
                Some(Attr::Str(t)) => {
                    let (start, end) = place(t);
                    Stored::Text(start, end)
                }
                Some(Attr::Int(n)) => Stored::Int(*n),
                Some(Attr::Float(x)) => Stored::Float(*x),
                Some(Attr::Bool(b)) => Stored::Bool(*b),
            };
            self.attributes.push((*key, value));
        }
        self.spans.push(Queued {
            kind: span.kind,
            context: span.context,
            parent: span.parent,
            start: span.start,
            end: span.end,
            error: span.error,
            name,
            state,
            attributes: (first, self.attributes.len()),
        });
    }

    /// The text at `place`.
    fn text(&self, (start, end): (usize, usize)) -> &str {
        self.text.get(start..end).unwrap_or_default()
    }

    /// The attributes of `span`.
    fn attributes(&self, span: &Queued) -> &[(&'static str, Stored)] {
        let (first, end) = span.attributes;
        self.attributes.get(first..end).unwrap_or_default()
    }

    /// `span` (one of this batch's) as the SDK's exporter takes it.
    fn span_data(&self, span: &Queued, scope: &InstrumentationScope) -> SpanData {
        let attributes = self
            .attributes(span)
            .iter()
            .map(|(key, value)| {
                let value = match *value {
                    Stored::Static(t) => Value::from(t),
                    Stored::Text(start, end) => Value::from(self.text((start, end)).to_string()),
                    Stored::Int(n) => Value::I64(n),
                    Stored::Float(x) => Value::F64(x),
                    Stored::Bool(b) => Value::Bool(b),
                };
                KeyValue::new(Key::from_static_str(key), value)
            })
            .collect();
        let state = span
            .state
            .and_then(|place| self.text(place).parse::<TraceState>().ok())
            .unwrap_or_default();
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(span.context.trace_id),
                SpanId::from(span.context.span_id),
                TraceFlags::SAMPLED,
                false,
                state,
            ),
            parent_span_id: span
                .parent
                .map_or(SpanId::INVALID, |(id, _)| SpanId::from(id)),
            parent_span_is_remote: span.parent.is_some_and(|(_, remote)| remote),
            span_kind: match span.kind {
                SpanKind::Server => opentelemetry::trace::SpanKind::Server,
                SpanKind::Client => opentelemetry::trace::SpanKind::Client,
            },
            name: Cow::Owned(self.text(span.name).to_string()),
            start_time: span.start,
            end_time: span.end,
            attributes,
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status: if span.error {
                Status::error("")
            } else {
                Status::Unset
            },
            instrumentation_scope: scope.clone(),
        }
    }
}

/// `headers` as HTTP header names and values (the values marked sensitive: never shown), or an
/// error naming a header that cannot be sent (never its value).
fn header_pairs(
    headers: &[(String, ferrolite_types::Secret)],
) -> impl Iterator<Item = Result<(reqwest::header::HeaderName, reqwest::header::HeaderValue), OtelError>>
+ '_ {
    headers.iter().map(|(name, value)| {
        let invalid = |reason: String| OtelError::Invalid {
            field: "headers".to_string(),
            reason,
        };
        let header = reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid(format!("`{name}` is not a header name")))?;
        let mut value = reqwest::header::HeaderValue::from_str(value.expose())
            .map_err(|_| invalid(format!("the value of `{name}` is not a header value")))?;
        value.set_sensitive(true);
        Ok((header, value))
    })
}

/// The SDK's OTLP/gRPC span exporter of `target`.
fn grpc_exporter(target: &OtelTarget) -> Result<opentelemetry_otlp::SpanExporter, OtelError> {
    let mut headers = reqwest::header::HeaderMap::new();
    for pair in header_pairs(&target.headers) {
        let (name, value) = pair?;
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
            opentelemetry_otlp::tonic_types::transport::ClientTlsConfig::new().with_enabled_roots(),
        );
    }
    builder
        .build()
        .map_err(|e| OtelError::Exporter(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(list: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = list
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn a_sampling_ratio_decides_as_the_sdks_trace_id_ratio_sampler() {
        use opentelemetry_sdk::trace::{Sampler, SamplingDecision, ShouldSample};
        for ratio in [0.0, 0.01, 0.25, 0.5, 0.999, 1.0] {
            let sdk = Sampler::TraceIdRatioBased(ratio);
            let mut kept = 0;
            for _ in 0..4_000 {
                let trace_id = ferrolite_router::spans::SpanContext::root(true).trace_id;
                let theirs = sdk.should_sample(
                    None,
                    TraceId::from(trace_id),
                    "request",
                    &opentelemetry::trace::SpanKind::Server,
                    &[],
                    &[],
                );
                let ours = sampled(trace_id, ratio);
                assert_eq!(
                    ours,
                    theirs.decision == SamplingDecision::RecordAndSample,
                    "{ratio} {trace_id:x}"
                );
                kept += usize::from(ours);
            }
            let expected = 4_000.0 * ratio;
            assert!(
                (kept as f64 - expected).abs() <= 150.0,
                "{ratio}: {kept} of 4000 kept"
            );
        }
    }

    /// A server span of 12 ms with `attributes`, a child of a client's span.
    fn finished<'a>(attributes: &'a [(&'static str, Option<Attr<'a>>)]) -> FinishedSpan<'a> {
        use std::time::{Duration, SystemTime};
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        FinishedSpan {
            name: Cow::Borrowed("POST /v1/chat/completions"),
            kind: SpanKind::Server,
            context: ferrolite_router::spans::SpanContext {
                trace_id: 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736,
                span_id: 7,
                sampled: true,
            },
            parent: Some((0x00f0_67aa_0ba9_02b7, true)),
            state: Some("vendor=abc"),
            start,
            end: start + Duration::from_millis(12),
            error: true,
            attributes,
        }
    }

    #[test]
    fn a_finished_span_becomes_the_sdks_span_data() {
        use std::time::Duration;
        let attributes = [
            ("http.route", Some(Attr::Static("/v1/chat/completions"))),
            ("gen_ai.request.model", Some(Attr::Str("gpt-4o"))),
            ("gen_ai.request.max_tokens", Some(Attr::Int(50))),
            ("gen_ai.request.temperature", Some(Attr::Float(0.25))),
            ("ferrolite.stream", Some(Attr::Bool(false))),
            ("gen_ai.response.model", None),
            ("ferrolite.deployment.id", Some(Attr::Str("azure-east"))),
        ];
        let scope = InstrumentationScope::builder("ferrolite").build();
        let mut batch = Batch::default();
        batch.push(&finished(&attributes));
        let data = batch.span_data(&batch.spans[0], &scope);
        assert_eq!(data.name, "POST /v1/chat/completions");
        assert_eq!(data.span_kind, opentelemetry::trace::SpanKind::Server);
        assert_eq!(
            data.span_context.trace_id(),
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap_or(TraceId::INVALID)
        );
        assert_eq!(data.span_context.span_id(), SpanId::from(7));
        assert!(data.span_context.is_sampled());
        assert_eq!(data.span_context.trace_state().header(), "vendor=abc");
        assert_eq!(data.parent_span_id, SpanId::from(0x00f0_67aa_0ba9_02b7));
        assert!(data.parent_span_is_remote);
        assert_eq!(
            data.end_time.duration_since(data.start_time).ok(),
            Some(Duration::from_millis(12))
        );
        assert!(matches!(data.status, Status::Error { .. }));
        let got: Vec<(&str, &Value)> = data
            .attributes
            .iter()
            .map(|kv| (kv.key.as_str(), &kv.value))
            .collect();
        assert_eq!(
            got,
            vec![
                ("http.route", &Value::from("/v1/chat/completions")),
                ("gen_ai.request.model", &Value::from("gpt-4o")),
                ("gen_ai.request.max_tokens", &Value::I64(50)),
                ("gen_ai.request.temperature", &Value::F64(0.25)),
                ("ferrolite.stream", &Value::Bool(false)),
                ("ferrolite.deployment.id", &Value::from("azure-east")),
            ],
            "a value not known is left out"
        );
    }

    /// The export request written from the queued spans is the one the SDK's exporter sends
    /// for the same spans (decoded with `opentelemetry-proto`, compared message for message):
    /// a server span with a remote parent, a `tracestate`, an error and every kind of value;
    /// a client span without a state; a root span; a negative number and a span with no
    /// attributes.
    #[test]
    fn the_export_request_is_the_one_the_sdk_writes() {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
        use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
        use prost::Message as _;
        let attributes = [
            ("http.route", Some(Attr::Static("/v1/chat/completions"))),
            ("gen_ai.request.model", Some(Attr::Str("gpt-4o"))),
            ("gen_ai.request.max_tokens", Some(Attr::Int(50))),
            ("gen_ai.request.temperature", Some(Attr::Float(0.25))),
            ("ferrolite.stream", Some(Attr::Bool(false))),
            ("gen_ai.response.model", None),
            ("ferrolite.deployment.id", Some(Attr::Str("azure-east é"))),
            ("ferrolite.retry.wait_ms", Some(Attr::Int(-3))),
            ("empty", Some(Attr::Str(""))),
            ("ferrolite.cache_hit", Some(Attr::Bool(true))),
            ("long", Some(Attr::Str(&"x".repeat(300)))),
        ];
        let server = finished(&attributes);
        let client = FinishedSpan {
            name: Cow::Borrowed("chat gpt-4o"),
            kind: SpanKind::Client,
            parent: Some((7, false)),
            state: None,
            error: false,
            ..finished(&attributes[1..4])
        };
        let root = FinishedSpan {
            parent: None,
            state: Some("not a valid state ="),
            attributes: &[],
            ..finished(&attributes)
        };
        let mut batch = Batch::default();
        for span in [&server, &client, &root] {
            batch.push(span);
        }
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name("gateway-eu")
            .with_attribute(KeyValue::new(
                "replicas",
                opentelemetry::Value::Array(vec![1i64, 2].into()),
            ))
            .build();
        let mut encoder = otlp::Encoder::new(&resource, SCOPE);
        let written = encoder.request(&batch, 0..3);
        let read = ExportTraceServiceRequest::decode(written.as_slice()).unwrap();
        let scope = InstrumentationScope::builder(SCOPE).build();
        let expected = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(
                batch
                    .spans
                    .iter()
                    .map(|span| batch.span_data(span, &scope))
                    .collect(),
                &ResourceAttributesWithSchema::from(&resource),
            ),
        };
        assert_eq!(read, expected);
        // The encoder is reused from request to request.
        let again = encoder.request(&batch, 1..2);
        let read = ExportTraceServiceRequest::decode(again.as_slice()).unwrap();
        assert_eq!(read.resource_spans[0].scope_spans[0].spans.len(), 1);
        assert_eq!(
            read.resource_spans[0].scope_spans[0].spans[0].name,
            "chat gpt-4o"
        );
    }

    /// The exporter's headers: the configured ones, then the standard variable's (the traces'
    /// own over the general one), a name given twice keeping the variable's value; the timeout
    /// from the variables; a compression refused.
    #[test]
    fn the_http_exporter_reads_the_headers_and_timeout_variables() -> Result<(), OtelError> {
        let target = OtelTarget {
            endpoint: "http://127.0.0.1:4318/v1/traces".to_string(),
            protocol: OtelProtocol::HttpProtobuf,
            headers: vec![
                (
                    "x-team".to_string(),
                    ferrolite_types::Secret::new("a".to_string()),
                ),
                (
                    "x-key".to_string(),
                    ferrolite_types::Secret::new("config".to_string()),
                ),
            ],
            service_name: "ferrolite".to_string(),
            sampling_ratio: None,
        };
        let exporter = otlp::HttpExporter::new(
            &target,
            vars(&[
                ("OTEL_EXPORTER_OTLP_HEADERS", "x-general=1"),
                ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-key=from%20var"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ]),
        )?;
        let debug = format!("{exporter:?}");
        assert!(
            !debug.contains("from var") && !debug.contains("config"),
            "{debug}"
        );
        assert_eq!(exporter.header("x-key").as_deref(), Some("from var"));
        assert_eq!(exporter.header("x-team").as_deref(), Some("a"));
        assert_eq!(exporter.header("x-general"), None);
        assert_eq!(
            exporter.header("content-type").as_deref(),
            Some("application/x-protobuf")
        );
        assert_eq!(exporter.timeout(), std::time::Duration::from_millis(2500));
        let bad = OtelTarget {
            headers: vec![(
                "bad name".to_string(),
                ferrolite_types::Secret::new("v".to_string()),
            )],
            ..target.clone()
        };
        assert!(matches!(
            otlp::HttpExporter::new(&bad, vars(&[])),
            Err(OtelError::Invalid { .. })
        ));
        assert!(
            otlp::HttpExporter::new(&target, vars(&[("OTEL_EXPORTER_OTLP_COMPRESSION", "none")]))
                .is_ok()
        );
        match otlp::HttpExporter::new(
            &target,
            vars(&[("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip")]),
        ) {
            Err(OtelError::Invalid { field, .. }) => {
                assert_eq!(field, "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION");
            }
            other => panic!("gzip is refused: {other:?}"),
        }
        Ok(())
    }

    #[test]
    fn failed_exports_are_warned_of_once_a_minute_until_one_succeeds() {
        let start = std::time::Instant::now();
        let at = |ms: u64| start + std::time::Duration::from_millis(ms);
        let mut failing = Failing::default();
        assert!(failing.failed(at(0), "refused"), "the first failure");
        assert!(!failing.failed(at(500), "refused"), "not every 500 ms");
        assert!(!failing.failed(at(59_999), "refused"));
        assert!(failing.failed(at(60_000), "refused"), "a minute later");
        assert_eq!(failing.failed, 4);
        failing.exported();
        assert_eq!(failing.failed, 0);
        assert!(
            failing.failed(at(60_500), "refused"),
            "a new run of failures"
        );
    }

    #[test]
    fn a_full_queue_drops_and_counts_the_spans_beyond_it() {
        let attributes = [("gen_ai.request.model", Some(Attr::Str("gpt-4o")))];
        let span = finished(&attributes);
        let queue = Queue::new(Batching::default());
        let most = Batching::default().max_waiting;
        for _ in 0..most + 3 {
            queue.push(&span);
        }
        assert_eq!(queue.dropped.load(Ordering::Relaxed), 3);
        let batch = queue.take();
        assert_eq!(batch.len(), most);
        assert_eq!(batch.attributes.len(), most);
        assert_eq!(queue.take().len(), 0, "taken once");
        // The batch given back is emptied, and the next spans go into its room.
        let room = batch.text.capacity();
        queue.give_back(batch);
        let _ = queue.take();
        queue.push(&span);
        let again = queue.take();
        assert_eq!(again.len(), 1, "room again once taken");
        assert_eq!(again.text.capacity(), room);
        assert_eq!(again.text(again.spans[0].name), "POST /v1/chat/completions");
    }

    #[test]
    fn the_batch_processors_variables_set_the_batching() -> Result<(), OtelError> {
        assert_eq!(Batching::from_vars(vars(&[]))?, Batching::default());
        let set = Batching::from_vars(vars(&[
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "100"),
            ("OTEL_BSP_SCHEDULE_DELAY", "2000"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "50"),
        ]))?;
        assert_eq!(
            set,
            Batching {
                size: 50,
                every: std::time::Duration::from_secs(2),
                max_waiting: 50,
            },
            "a batch is never larger than the queue"
        );
        for bad in ["0", "-1", "soon", "1e3"] {
            let refused = Batching::from_vars(vars(&[("OTEL_BSP_SCHEDULE_DELAY", bad)]));
            assert!(
                matches!(&refused, Err(OtelError::Invalid { field, .. }) if field == "OTEL_BSP_SCHEDULE_DELAY"),
                "{bad}: {refused:?}"
            );
        }
        Ok(())
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
