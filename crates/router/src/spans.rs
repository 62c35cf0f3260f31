//! Distributed tracing of routed calls: one `attempt` span per deployment called, a child of
//! the request's span, with the OpenTelemetry GenAI semantic-convention attributes and
//! ferrolite's own, and the W3C trace context each attempt sends upstream.
//!
//! A request is traced when it carries a [`Trace`] ([`crate::Request::trace`]): the context of
//! the request's span (the gateway's, or an application's) and the [`SpanSink`] that finished
//! spans go to (the facade crate's `otel` feature exports them over OTLP). The router builds
//! each attempt's span once, when the attempt ends, from what it knows then, and hands it to
//! the sink as a [`FinishedSpan`]: no span is kept open across the call and nothing goes
//! through `tracing`'s span machinery, so a traced call costs a few attribute writes and the
//! sink's own work. An untraced request costs one branch per attempt. No prompt or answer
//! text and no key is recorded.

use std::borrow::Cow;
use std::sync::{Arc, LazyLock};
use std::time::SystemTime;

use ferrolite_strategies::Rng;
use ferrolite_types::{Deployment, DeploymentId, ErrorClass, Usage};

use crate::call::Call;

/// The W3C trace context of one span: the trace it belongs to, its own id, whether the trace
/// is sampled (recorded and exported).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanContext {
    /// The trace (never 0).
    pub trace_id: u128,
    /// The span (never 0).
    pub span_id: u64,
    /// Whether the trace's spans are recorded (`traceparent`'s `sampled` flag).
    pub sampled: bool,
}

/// Each byte's value as a lowercase hex digit, or `0xff` for a byte that is not one.
const HEX_DIGITS: [u8; 256] = {
    let mut table = [0xff; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

/// The number lowercase hex digits `digits` (at most 16) spell, or `None` for any other byte:
/// a table lookup a digit, their invalid marks gathered and tested once.
fn hex(digits: &[u8]) -> Option<u64> {
    let mut n = 0u64;
    let mut invalid = 0u8;
    for &b in digits {
        let digit = HEX_DIGITS[usize::from(b)];
        invalid |= digit;
        n = (n << 4) | u64::from(digit & 0xf);
    }
    (invalid & 0xf0 == 0).then_some(n)
}

/// Ids drawn for new traces and spans, seeded from the process' random hash keys.
static IDS: LazyLock<Rng> = LazyLock::new(Rng::from_entropy);

/// A random id, never 0 (W3C's invalid id).
fn span_id() -> u64 {
    loop {
        let id = IDS.next_u64();
        if id != 0 {
            return id;
        }
    }
}

impl SpanContext {
    /// The root span of a new trace, `sampled` or not.
    pub fn root(sampled: bool) -> Self {
        let trace_id = loop {
            let id = (u128::from(IDS.next_u64()) << 64) | u128::from(IDS.next_u64());
            if id != 0 {
                break id;
            }
        };
        SpanContext {
            trace_id,
            span_id: span_id(),
            sampled,
        }
    }

    /// A new span of the same trace (a child of this one, when its parent is recorded so).
    pub fn child(&self) -> Self {
        SpanContext {
            span_id: span_id(),
            ..*self
        }
    }

    /// The context a W3C `traceparent` header carries (`00-<trace>-<span>-<flags>`, lowercase
    /// hex), or `None` for a header that is not one (a version other than `00` is read as
    /// `00`'s fields, as the W3C specification asks of a version it does not know).
    pub fn from_traceparent(header: &[u8]) -> Option<Self> {
        let header = header.trim_ascii();
        // `vv-` 32 hex `-` 16 hex `-ff`: 55 bytes; a later version may add `-...` after them.
        let (fields, rest) = header.split_at_checked(55)?;
        let version = hex(fields.get(0..2)?)?;
        if version == 0xff
            || fields.get(2) != Some(&b'-')
            || fields.get(35) != Some(&b'-')
            || fields.get(52) != Some(&b'-')
            || !(rest.is_empty() || (version != 0 && rest.first() == Some(&b'-')))
        {
            return None;
        }
        let trace_id =
            (u128::from(hex(fields.get(3..19)?)?) << 64) | u128::from(hex(fields.get(19..35)?)?);
        let span_id = hex(fields.get(36..52)?)?;
        let flags = hex(fields.get(53..55)?)?;
        (trace_id != 0 && span_id != 0).then_some(SpanContext {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    /// This context as a `traceparent` header's value.
    pub fn traceparent(&self) -> [u8; 55] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
        for (i, slot) in out[3..35].iter_mut().enumerate() {
            *slot = HEX[((self.trace_id >> (124 - 4 * i)) & 0xf) as usize];
        }
        for (i, slot) in out[36..52].iter_mut().enumerate() {
            *slot = HEX[((self.span_id >> (60 - 4 * i)) & 0xf) as usize];
        }
        out[54] = if self.sampled { b'1' } else { b'0' };
        out
    }
}

/// Where a traced request's finished spans go (the facade crate's OTLP exporter, say). Called
/// inline on the call path, once per span: keep it quick (convert, queue), never block.
pub trait SpanSink: Send + Sync + std::fmt::Debug {
    /// Whether a new trace (one no client started) with id `trace_id` is sampled (by default
    /// every one is).
    fn sample(&self, trace_id: u128) -> bool {
        let _ = trace_id;
        true
    }

    /// A span that ended (only a sampled trace's spans are given).
    fn finished(&self, span: FinishedSpan<'_>);
}

/// The wall-clock time a span starts or ends at. Spans are read by a collector beside other
/// services' spans, so they take the system's clock, not the router's ([`ferrolite_cache::Clock`],
/// which a test or a simulation may drive).
#[allow(clippy::disallowed_methods)]
pub fn now() -> SystemTime {
    SystemTime::now()
}

/// A request's trace: the context of the request's span (every attempt's parent), the
/// client's `tracestate` carried along, and where the spans go. Cloning shares the sink.
#[derive(Clone)]
pub struct Trace {
    /// The request span's context.
    pub request: SpanContext,
    /// The W3C `tracestate` that came with the client's `traceparent`, sent upstream with each
    /// attempt's.
    pub state: Option<Arc<str>>,
    /// Where the spans go.
    pub sink: Arc<dyn SpanSink>,
}

impl std::fmt::Debug for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trace")
            .field("request", &self.request)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// The trace context an attempt sends upstream: its own span's `traceparent` and the
/// client's `tracestate` ([`crate::BackendRequest::trace`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    /// The attempt's span.
    pub context: SpanContext,
    /// The `tracestate` to send with it.
    pub state: Option<Arc<str>>,
}

/// A span's kind, as OpenTelemetry names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// Serves a request (the gateway's request span).
    Server,
    /// Calls another service (an attempt).
    Client,
}

/// An attribute's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Attr<'a> {
    /// Text that lives as long as the program (a sink need not copy it).
    Static(&'static str),
    /// Text.
    Str(&'a str),
    /// A signed integer (OpenTelemetry's integers are `i64`).
    Int(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
}

/// A span that ended, as a [`SpanSink`] gets it: borrowed from the call that made it.
#[derive(Debug)]
pub struct FinishedSpan<'a> {
    /// The span's name.
    pub name: Cow<'a, str>,
    /// Server or client.
    pub kind: SpanKind,
    /// The span's own context.
    pub context: SpanContext,
    /// Its parent's span id and whether the parent is remote (a client's span); `None` for a
    /// trace's root.
    pub parent: Option<(u64, bool)>,
    /// The trace's `tracestate`.
    pub state: Option<&'a str>,
    /// When it started.
    pub start: SystemTime,
    /// When it ended.
    pub end: SystemTime,
    /// Whether it ended in error (OpenTelemetry's status `Error`; `Unset` otherwise).
    pub error: bool,
    /// Its attributes by name; a `None` value is left out.
    pub attributes: &'a [(&'static str, Option<Attr<'a>>)],
}

/// An attempt being traced: its context (sent upstream) and when it started.
#[derive(Debug, Clone)]
pub(crate) struct Traced {
    pub(crate) parent: TraceParent,
    started: SystemTime,
    /// The request's counts when the attempt started: its number, retry, backoff, fallback.
    numbers: [i64; 4],
}

/// The trace of an attempt about to be made on `call`'s request: its span's context and
/// start, or `None` when the request is not traced.
#[inline]
pub(crate) fn attempt(call: &Call<'_>) -> Option<Traced> {
    let trace = call.request.trace.as_ref()?;
    Some(Traced {
        parent: TraceParent {
            context: trace.request.child(),
            state: trace.state.clone(),
        },
        started: now(),
        numbers: [
            i64::from(call.attempts) + 1,
            i64::from(call.retries),
            i64::from(call.waited_ms),
            i64::from(call.fallbacks),
        ],
    })
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ended<'a> {
    /// It answered: the model the answer names (a whole answer's), the usage.
    Answered {
        model: Option<&'a str>,
        usage: Option<&'a Usage>,
    },
    /// It failed with this error class.
    Failed(&'a ErrorClass),
}

/// Hands the span of the attempt `traced` on `deployment` (`id`), ended as `ended`, to the
/// request's sink.
pub(crate) fn ended(
    call: &Call<'_>,
    traced: Option<&Traced>,
    deployment: &Deployment,
    id: &DeploymentId,
    ended: Ended<'_>,
) {
    let (Some(traced), Some(trace)) = (traced, call.request.trace.as_ref()) else {
        return;
    };
    if !traced.parent.context.sampled {
        return;
    }
    let request = call.request;
    let operation = operation(&request.body);
    let model = model_name(&deployment.model);
    let provider = provider_of(deployment);
    let provider = provider.as_deref().map(provider_name);
    let [attempt, retry, wait_ms, fallback] = traced.numbers;
    let (outcome, response_model, usage, error) = match ended {
        Ended::Answered { model, usage } => ("success", model, usage, None),
        Ended::Failed(class) => (
            "failure",
            None,
            None,
            Some(crate::explain::class_label(class)),
        ),
    };
    let count = |n: Option<u64>| n.map(|n| Attr::Int(int(n)));
    let attributes = [
        ("gen_ai.operation.name", Some(Attr::Static(operation))),
        ("gen_ai.provider.name", provider.map(Attr::Str)),
        ("gen_ai.system", provider.map(Attr::Str)),
        ("gen_ai.request.model", Some(Attr::Str(model))),
        ("gen_ai.request.max_tokens", count(request.max_tokens)),
        (
            "gen_ai.request.temperature",
            request
                .body
                .get("temperature")
                .and_then(serde_json::Value::as_f64)
                .map(Attr::Float),
        ),
        ("gen_ai.response.model", response_model.map(Attr::Str)),
        (
            "gen_ai.usage.input_tokens",
            count(usage.map(|u| u.prompt_tokens)),
        ),
        (
            "gen_ai.usage.output_tokens",
            count(usage.map(|u| u.completion_tokens)),
        ),
        (
            "server.address",
            deployment
                .api_base
                .as_deref()
                .and_then(host_of)
                .map(Attr::Str),
        ),
        ("ferrolite.deployment.id", Some(Attr::Str(id.as_str()))),
        (
            "ferrolite.model_group",
            Some(Attr::Str(deployment.model_name.as_str())),
        ),
        ("ferrolite.attempt", Some(Attr::Int(attempt))),
        ("ferrolite.retry", Some(Attr::Int(retry))),
        ("ferrolite.retry.wait_ms", Some(Attr::Int(wait_ms))),
        ("ferrolite.fallback", Some(Attr::Int(fallback))),
        ("ferrolite.outcome", Some(Attr::Static(outcome))),
        ("error.type", error.map(Attr::Static)),
    ];
    let mut name = String::with_capacity(operation.len() + 1 + model.len());
    name.push_str(operation);
    name.push(' ');
    name.push_str(model);
    trace.sink.finished(FinishedSpan {
        name: Cow::Owned(name),
        kind: SpanKind::Client,
        context: traced.parent.context,
        parent: Some((trace.request.span_id, false)),
        state: trace.state.as_deref(),
        start: traced.started,
        end: now(),
        error: error.is_some(),
        attributes: &attributes,
    });
}

/// GenAI's `gen_ai.operation.name` of a request body: `chat` (messages), `text_completion`
/// (prompt), `embeddings` (input).
pub fn operation(body: &serde_json::Value) -> &'static str {
    if body.get("messages").is_some() {
        "chat"
    } else if body.get("prompt").is_some() {
        "text_completion"
    } else if body.get("input").is_some() {
        "embeddings"
    } else {
        "chat"
    }
}

/// The model a deployment calls, without LiteLLM's provider prefix.
fn model_name(model: &str) -> &str {
    cut(model, b'/').map_or(model, |(_, name)| name)
}

/// `text` cut at its first `byte` (ASCII), without it: what `split_once` does with a `char`,
/// by bytes (a short name's search is a few compares, not a searcher set up).
fn cut(text: &str, byte: u8) -> Option<(&str, &str)> {
    let at = text.bytes().position(|b| b == byte)?;
    Some((text.get(..at)?, text.get(at + 1..)?))
}

/// A deployment's provider as [`Deployment::provider`] names it, borrowed where it can be (its
/// `custom_llm_provider`, or its model's prefix, which LiteLLM takes as given).
fn provider_of(deployment: &Deployment) -> Option<Cow<'_, str>> {
    if let Some(provider) = deployment
        .custom_llm_provider
        .as_deref()
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        return Some(Cow::Borrowed(provider));
    }
    match cut(deployment.model.trim(), b'/') {
        Some((prefix, rest)) if !prefix.is_empty() && !rest.is_empty() => {
            Some(Cow::Borrowed(prefix))
        }
        _ => deployment
            .provider()
            .ok()
            .map(|p| Cow::Owned(p.as_str().to_string())),
    }
}

/// GenAI's `gen_ai.provider.name` for a LiteLLM provider name (the well-known values of the
/// semantic conventions; any other provider as LiteLLM names it).
fn provider_name(provider: &str) -> &str {
    match provider {
        "azure" | "azure_ai" => "azure.ai.openai",
        "bedrock" | "bedrock_converse" => "aws.bedrock",
        "vertex_ai" | "vertex_ai_beta" => "gcp.vertex_ai",
        "gemini" => "gcp.gemini",
        "mistral" => "mistral_ai",
        "xai" => "x_ai",
        other => other,
    }
}

/// The host of an `api_base` (no scheme, credentials, port or path).
fn host_of(base: &str) -> Option<&str> {
    let rest = match base.bytes().position(|b| b == b':') {
        Some(at) if base.as_bytes().get(at + 1..at + 3) == Some(b"//") => {
            base.get(at + 3..).unwrap_or_default()
        }
        _ => base,
    };
    // Byte by byte: the delimiters are ASCII, so the cut falls on a character boundary.
    let end = rest
        .bytes()
        .position(|b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    let authority = rest.get(..end)?;
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = if let Some(v6) = host.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        host.split(':').next()?
    };
    (!host.is_empty()).then_some(host)
}

/// A count as the signed integer OpenTelemetry's attributes hold.
pub fn int(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_of_an_api_base_leaves_out_scheme_credentials_port_and_path() {
        assert_eq!(
            host_of("https://user:pw@api.example.com:8443/v1?x=1"),
            Some("api.example.com")
        );
        assert_eq!(host_of("http://127.0.0.1:9000"), Some("127.0.0.1"));
        assert_eq!(host_of("http://[::1]:9000/v1"), Some("::1"));
        assert_eq!(host_of("example.com/v1"), Some("example.com"));
        assert_eq!(host_of("https:///v1"), None);
    }

    #[test]
    fn a_deployments_provider_is_the_one_its_provider_method_names() {
        for (model, custom) in [
            ("openai/gpt-4o", None),
            ("azure/my-deployment", None),
            ("bedrock/converse/anthropic.claude", None),
            ("gpt-4o", None),
            ("claude-3-5-sonnet", None),
            ("*", None),
            ("my-model", Some(" vllm ")),
            ("openai/x", Some("")),
        ] {
            let deployment = Deployment {
                custom_llm_provider: custom.map(str::to_string),
                ..Deployment::new("g", model)
            };
            assert_eq!(
                provider_of(&deployment).as_deref(),
                deployment.provider().ok().as_ref().map(|p| p.as_str()),
                "{model} {custom:?}"
            );
        }
    }

    #[test]
    fn providers_take_the_semantic_conventions_names() {
        assert_eq!(provider_name("bedrock"), "aws.bedrock");
        assert_eq!(provider_name("azure"), "azure.ai.openai");
        assert_eq!(provider_name("openai"), "openai");
        assert_eq!(model_name("openai/gpt-4o"), "gpt-4o");
        assert_eq!(model_name("gpt-4o"), "gpt-4o");
    }

    #[test]
    fn a_traceparent_is_read_and_written_as_the_w3c_specification_spells_it() {
        let header = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = SpanContext::from_traceparent(header);
        assert_eq!(
            context,
            Some(SpanContext {
                trace_id: 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736,
                span_id: 0x00f0_67aa_0ba9_02b7,
                sampled: true,
            })
        );
        assert_eq!(context.map(|c| c.traceparent()), Some(*header));
        let unsampled = SpanContext::from_traceparent(
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        );
        assert_eq!(unsampled.map(|c| c.sampled), Some(false));
        // A later version's extra fields are ignored.
        assert!(
            SpanContext::from_traceparent(
                b"cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever"
            )
            .is_some()
        );
        for bad in [
            &b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"[..],
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            b"",
            b"\xff\xfe",
        ] {
            assert_eq!(SpanContext::from_traceparent(bad), None, "{bad:?}");
        }
    }

    proptest::proptest! {
        /// The digits are read as a byte-by-byte reading with the standard library reads
        /// them: any run of bytes of a header's length, mostly hex digits, some of them not.
        #[test]
        fn a_traceparent_is_read_as_the_digits_spell_it(
            bytes in proptest::collection::vec(
                proptest::prop_oneof![
                    60 => proptest::sample::select(b"0123456789abcdef".to_vec()),
                    1 => proptest::sample::select(b"ABCDEFgz-. \xff".to_vec()),
                ],
                55,
            ),
            dashes in proptest::bool::weighted(0.9),
        ) {
            let mut header = bytes;
            if dashes {
                for at in [2, 35, 52] {
                    header[at] = b'-';
                }
            }
            let digits = |range: std::ops::Range<usize>| {
                let text = std::str::from_utf8(&header[range]).ok()?;
                text.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                    .then(|| u128::from_str_radix(text, 16).ok())
                    .flatten()
            };
            let expected = (|| {
                let version = digits(0..2)?;
                if version == 0xff || header[2] != b'-' || header[35] != b'-' || header[52] != b'-' {
                    return None;
                }
                let trace_id = digits(3..35)?;
                let span_id = u64::try_from(digits(36..52)?).ok()?;
                let flags = digits(53..55)?;
                (trace_id != 0 && span_id != 0).then_some(SpanContext {
                    trace_id,
                    span_id,
                    sampled: flags & 1 == 1,
                })
            })();
            proptest::prop_assert_eq!(SpanContext::from_traceparent(&header), expected);
        }
    }

    #[test]
    fn new_traces_and_spans_get_distinct_valid_ids() {
        let root = SpanContext::root(true);
        let child = root.child();
        assert_ne!(root.trace_id, 0);
        assert_eq!(child.trace_id, root.trace_id);
        assert_ne!(child.span_id, root.span_id);
        assert_ne!(child.span_id, 0);
        assert_ne!(SpanContext::root(true).trace_id, root.trace_id);
        let written = root.traceparent();
        assert_eq!(SpanContext::from_traceparent(&written), Some(root));
    }
}
