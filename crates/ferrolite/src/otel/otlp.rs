//! OTLP/HTTP's protobuf (`ExportTraceServiceRequest`) written straight from the queued spans,
//! and sent to the collector: the HTTP/protobuf exporter.
//!
//! The SDK's exporter takes each span as a `SpanData` (a `KeyValue` and a `String` per
//! attribute), converts it into the protobuf crate's types (another allocation per text) and
//! encodes those: about 27,000 instructions a span. The spans here are already compact
//! ([`Batch`]: their texts in one buffer), so they are written as protobuf bytes directly,
//! with no allocation per span: the same message, field for field, as the SDK sends (the
//! tests decode it with `opentelemetry-proto`). gRPC still goes through the SDK's exporter.
//!
//! The wire format: each field is a key (`field << 3 | wire type`) and a value: a varint
//! (wire type 0), eight little-endian bytes (1), a length and that many bytes (2: strings,
//! bytes and nested messages) or four little-endian bytes (5). As `prost` writes them, a
//! field holding its default (0, empty) is left out, except in a `oneof` and in a nested
//! message that is set.

use std::time::{Duration, SystemTime};

use ferrolite_router::spans::SpanKind;

use super::{Batch, OtelError, OtelTarget, Queued, Stored};

/// `opentelemetry.proto.trace.v1.SpanFlags`: the parent's remoteness is known, and is remote.
const HAS_IS_REMOTE: u32 = 0x100;
const IS_REMOTE: u32 = 0x200;
/// W3C's `sampled` trace flag (every exported span is sampled).
const SAMPLED: u32 = 0x01;

fn varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn varint_len(n: u64) -> usize {
    (64 - (n | 1).leading_zeros() as usize).div_ceil(7)
}

/// A field's key.
fn key(out: &mut Vec<u8>, field: u32, wire: u32) {
    varint(out, u64::from(field << 3 | wire));
}

/// A length-delimited field (string, bytes, message) of `len` bytes: its key and length.
fn delimited(out: &mut Vec<u8>, field: u32, len: usize) {
    key(out, field, 2);
    varint(out, len as u64);
}

/// A length-delimited field with its bytes.
fn bytes(out: &mut Vec<u8>, field: u32, data: &[u8]) {
    delimited(out, field, data.len());
    out.extend_from_slice(data);
}

/// What a length-delimited field of `len` bytes takes, key included (fields below 16).
fn delimited_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

fn fixed64(out: &mut Vec<u8>, field: u32, n: u64) {
    key(out, field, 1);
    out.extend_from_slice(&n.to_le_bytes());
}

/// An attribute's value, as far as the wire goes.
#[derive(Clone, Copy)]
enum Any<'a> {
    Text(&'a str),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Any<'_> {
    /// The `AnyValue` message's length (its one `oneof` field, always written).
    fn len(self) -> usize {
        match self {
            Any::Text(text) => delimited_len(text.len()),
            Any::Int(n) => 1 + varint_len(n as u64),
            Any::Float(_) => 9,
            Any::Bool(_) => 2,
        }
    }

    fn write(self, out: &mut Vec<u8>) {
        match self {
            Any::Text(text) => bytes(out, 1, text.as_bytes()),
            Any::Bool(b) => {
                key(out, 2, 0);
                out.push(u8::from(b));
            }
            // An `int64` is its two's complement as a varint (ten bytes when negative).
            Any::Int(n) => {
                key(out, 3, 0);
                varint(out, n as u64);
            }
            Any::Float(x) => fixed64(out, 4, x.to_bits()),
        }
    }
}

/// A `KeyValue` as field `field` of the message being written.
fn key_value(out: &mut Vec<u8>, field: u32, name: &str, value: Any<'_>) {
    let any = value.len();
    let name_len = if name.is_empty() {
        0
    } else {
        delimited_len(name.len())
    };
    delimited(out, field, name_len + delimited_len(any));
    if !name.is_empty() {
        bytes(out, 1, name.as_bytes());
    }
    delimited(out, 2, any);
    value.write(out);
}

/// Nanoseconds since the Unix epoch (0 before it), as the SDK writes a span's times.
fn nanos(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Writes export requests for one resource and one instrumentation scope.
#[derive(Debug)]
pub(super) struct Encoder {
    /// `ResourceSpans`' fields before its spans: the resource (field 1), and its schema URL
    /// (field 3), written once.
    resource: Vec<u8>,
    /// `ScopeSpans`' scope (field 1), written once.
    scope: Vec<u8>,
    /// One span's fields, reused from span to span.
    span: Vec<u8>,
    /// The spans of the request being written, each as a `ScopeSpans` field 2.
    spans: Vec<u8>,
}

impl Encoder {
    /// An encoder for spans of `resource` and of the scope named `scope`.
    pub(super) fn new(resource: &opentelemetry_sdk::Resource, scope: &str) -> Encoder {
        let mut attributes = Vec::new();
        for (name, value) in resource.iter() {
            resource_attribute(&mut attributes, name.as_str(), value);
        }
        let mut fields = Vec::new();
        bytes(&mut fields, 1, &attributes);
        if let Some(url) = resource.schema_url().filter(|url| !url.is_empty()) {
            bytes(&mut fields, 3, url.as_bytes());
        }
        let mut scope_message = Vec::new();
        if !scope.is_empty() {
            bytes(&mut scope_message, 1, scope.as_bytes());
        }
        let mut scope_field = Vec::new();
        bytes(&mut scope_field, 1, &scope_message);
        Encoder {
            resource: fields,
            scope: scope_field,
            span: Vec::new(),
            spans: Vec::new(),
        }
    }

    /// The `ExportTraceServiceRequest` of the spans `range` of `batch`.
    pub(super) fn request(&mut self, batch: &Batch, range: std::ops::Range<usize>) -> Vec<u8> {
        self.spans.clear();
        for span in batch.spans.get(range).unwrap_or_default() {
            self.span.clear();
            write_span(&mut self.span, batch, span);
            bytes(&mut self.spans, 2, &self.span);
        }
        let scope_spans = self.scope.len() + self.spans.len();
        let resource_spans = self.resource.len() + delimited_len(scope_spans);
        let mut out = Vec::with_capacity(delimited_len(resource_spans));
        delimited(&mut out, 1, resource_spans);
        out.extend_from_slice(&self.resource);
        delimited(&mut out, 2, scope_spans);
        out.extend_from_slice(&self.scope);
        out.extend_from_slice(&self.spans);
        out
    }
}

/// A resource attribute (any value the SDK's resource holds) as a `Resource` field 1.
fn resource_attribute(out: &mut Vec<u8>, name: &str, value: &opentelemetry::Value) {
    use opentelemetry::{Array, Value};
    let mut any = Vec::new();
    match value {
        Value::Bool(b) => Any::Bool(*b).write(&mut any),
        Value::I64(n) => Any::Int(*n).write(&mut any),
        Value::F64(x) => Any::Float(*x).write(&mut any),
        Value::String(text) => Any::Text(text.as_str()).write(&mut any),
        Value::Array(array) => {
            let mut values = Vec::new();
            let mut item = |value: Any<'_>| {
                delimited(&mut values, 1, value.len());
                value.write(&mut values);
            };
            match array {
                Array::Bool(items) => items.iter().for_each(|b| item(Any::Bool(*b))),
                Array::I64(items) => items.iter().for_each(|n| item(Any::Int(*n))),
                Array::F64(items) => items.iter().for_each(|x| item(Any::Float(*x))),
                Array::String(items) => items.iter().for_each(|t| item(Any::Text(t.as_str()))),
                _ => {}
            }
            bytes(&mut any, 5, &values);
        }
        _ => Any::Text(&value.as_str()).write(&mut any),
    }
    let mut pair = Vec::new();
    if !name.is_empty() {
        bytes(&mut pair, 1, name.as_bytes());
    }
    bytes(&mut pair, 2, &any);
    bytes(out, 1, &pair);
}

/// A `Span` message's fields, as the SDK's conversion of a `SpanData` sets them.
fn write_span(out: &mut Vec<u8>, batch: &Batch, span: &Queued) {
    let text = |start: usize, end: usize| batch.text((start, end));
    bytes(out, 1, &span.context.trace_id.to_be_bytes());
    bytes(out, 2, &span.context.span_id.to_be_bytes());
    if let Some((start, end)) = span.state {
        // As the SDK does: a `tracestate` it cannot read is sent as none.
        let state = text(start, end)
            .parse::<opentelemetry::trace::TraceState>()
            .map(|state| state.header())
            .unwrap_or_default();
        if !state.is_empty() {
            bytes(out, 3, state.as_bytes());
        }
    }
    if let Some((parent, _)) = span.parent {
        bytes(out, 4, &parent.to_be_bytes());
    }
    let name = text(span.name.0, span.name.1);
    if !name.is_empty() {
        bytes(out, 5, name.as_bytes());
    }
    key(out, 6, 0);
    out.push(match span.kind {
        SpanKind::Server => 2,
        SpanKind::Client => 3,
    });
    for (field, time) in [(7, span.start), (8, span.end)] {
        let time = nanos(time);
        if time != 0 {
            fixed64(out, field, time);
        }
    }
    for (name, value) in batch.attributes(span) {
        let value = match *value {
            Stored::Static(t) => Any::Text(t),
            Stored::Text(start, end) => Any::Text(text(start, end)),
            Stored::Int(n) => Any::Int(n),
            Stored::Float(x) => Any::Float(x),
            Stored::Bool(b) => Any::Bool(b),
        };
        key_value(out, 9, name, value);
    }
    // The status, always set: `ERROR` (code 2) or unset (an empty message).
    if span.error {
        delimited(out, 15, 2);
        key(out, 3, 0);
        out.push(2);
    } else {
        delimited(out, 15, 0);
    }
    let remote = span.parent.is_some_and(|(_, remote)| remote);
    let flags = SAMPLED | HAS_IS_REMOTE | if remote { IS_REMOTE } else { 0 };
    key(out, 16, 5);
    out.extend_from_slice(&flags.to_le_bytes());
}

/// The OTLP/HTTP exporter: export requests posted to the collector's traces URL.
#[derive(Debug)]
pub(super) struct HttpExporter {
    client: reqwest::Client,
    endpoint: String,
    headers: reqwest::header::HeaderMap,
    timeout: Duration,
}

impl HttpExporter {
    /// The exporter of `target`, with the headers and the timeout the standard variables
    /// `var` reads add (`OTEL_EXPORTER_OTLP_TRACES_HEADERS` or `OTEL_EXPORTER_OTLP_HEADERS`,
    /// over the configured ones; `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` or
    /// `OTEL_EXPORTER_OTLP_TIMEOUT` in milliseconds, 10 s by default), as the SDK's exporter
    /// reads them; a compression other than `none` is refused.
    pub(super) fn new(
        target: &OtelTarget,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<HttpExporter, OtelError> {
        use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, USER_AGENT};
        // reqwest with `rustls-no-provider` needs a process-wide crypto provider; a second
        // install is refused harmlessly.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .build()
            .map_err(|e| OtelError::Exporter(e.to_string()))?;
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-protobuf"),
        );
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("ferrolite/", env!("CARGO_PKG_VERSION"))),
        );
        let (field, from_vars) = match var("OTEL_EXPORTER_OTLP_TRACES_HEADERS") {
            Some(text) => ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", Some(text)),
            None => (
                "OTEL_EXPORTER_OTLP_HEADERS",
                var("OTEL_EXPORTER_OTLP_HEADERS"),
            ),
        };
        let from_vars = match from_vars {
            Some(text) => super::parse_headers(&text, field)?,
            None => Vec::new(),
        };
        // The variables' headers over the configured ones of the same name.
        for pair in super::header_pairs(&target.headers).chain(super::header_pairs(&from_vars)) {
            let (name, value) = pair?;
            headers.insert(name, value);
        }
        // Exports are sent uncompressed; a compression asked for stops the start, as the SDK's
        // exporter (built without its compression features) did.
        for name in [
            "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
            "OTEL_EXPORTER_OTLP_COMPRESSION",
        ] {
            match var(name).as_deref().map(str::trim) {
                None | Some("") => {}
                Some(none) if none.eq_ignore_ascii_case("none") => break,
                Some(other) => {
                    return Err(OtelError::Invalid {
                        field: name.to_string(),
                        reason: format!("`{other}`: exports are sent uncompressed (`none`)"),
                    });
                }
            }
        }
        let millis = |name: &str| var(name).and_then(|v| v.trim().parse::<u64>().ok());
        let timeout = millis("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT")
            .or_else(|| millis("OTEL_EXPORTER_OTLP_TIMEOUT"))
            .map_or(Duration::from_secs(10), Duration::from_millis);
        Ok(HttpExporter {
            client,
            endpoint: target.endpoint.clone(),
            headers,
            timeout,
        })
    }

    /// Posts one export request.
    pub(super) async fn send(&self, body: Vec<u8>) -> Result<(), String> {
        let response = self
            .client
            .post(&self.endpoint)
            .headers(self.headers.clone())
            .timeout(self.timeout)
            .body(body)
            .send()
            .await
            .map_err(|e| format!("the collector could not be reached: {e}"))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        Err(format!("the collector answered {status}"))
    }
}

#[cfg(test)]
impl HttpExporter {
    /// The value of header `name`, for tests.
    pub(super) fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }
}
