//! The request's span for distributed tracing (exported by `ferrolite::otel`, feature `otel`,
//! or any [`SpanSink`] given in [`GatewaySettings::traces`](super::GatewaySettings::traces)):
//! one per call, the parent of the router's attempt spans, continuing the client's trace
//! (`traceparent`, `tracestate`). It records the call's HTTP side (method, route, status), its
//! id (`x-litellm-call-id`), the model group, whether it streams, the route decision (the
//! deployment picked, the attempts, retries and fallbacks) and the GenAI attributes of the
//! answer (its model, its token counts). No prompt or answer text, no key.
//!
//! The span's values are gathered as the call goes ([`Traced`]) and the span is built once,
//! when the call ends (a stream's when its last chunk is sent), and handed to the sink. Without
//! a sink nothing is traced: every function below returns at its first check.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::SystemTime;

use axum::http::{HeaderMap, HeaderName};
use ferrolite_router::spans::{Attr, FinishedSpan, SpanContext, SpanKind, SpanSink, Trace, int};
use ferrolite_router::{Request, RouterResponse, RouterStream};

use super::answer::Answered;
use ferrolite_types::{DeploymentId, Usage};

/// The route a call came by and its request span's name.
#[derive(Debug, Clone, Copy)]
pub(super) struct Route {
    /// The path (`http.route`).
    pub(super) path: &'static str,
    /// `POST {path}`.
    pub(super) span: &'static str,
}

/// A call's request span while the call goes (cloning shares it); it is finished and handed
/// to the sink when the last clone drops. `Traced::default()` traces nothing.
#[derive(Clone, Default)]
pub(super) struct Traced(Option<Arc<RequestSpan>>);

/// What the request span knows from the start, and what it learns as the call goes.
struct RequestSpan {
    trace: Trace,
    /// The client's span, when the client started the trace.
    parent: Option<u64>,
    route: Route,
    id: String,
    start: SystemTime,
    fields: parking_lot::Mutex<Fields>,
}

/// The values learnt as the call goes.
#[derive(Default)]
struct Fields {
    model_group: Option<String>,
    stream: Option<bool>,
    operation: Option<&'static str>,
    max_tokens: Option<i64>,
    temperature: Option<f64>,
    response_model: Option<String>,
    input_tokens: Option<i64>,
    output_tokens: Option<i64>,
    /// Shared with the answer (no copy of the id).
    deployment: Option<DeploymentId>,
    route_group: Option<String>,
    /// Attempts, retries, fallbacks.
    counts: Option<[i64; 3]>,
    cache_hit: Option<bool>,
    status: Option<u16>,
}

/// W3C trace context's headers (as `HeaderName`s, so finding them parses no name).
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The request span of a call to `route` (the path it was routed by) with id `id`, continuing
/// the trace of the client's `traceparent` (and `tracestate`) when `headers` carry one, a new
/// trace (sampled as `sink` says) otherwise. Traces nothing without a sink.
pub(super) fn request(
    sink: Option<&Arc<dyn SpanSink>>,
    route: Route,
    id: &str,
    headers: &HeaderMap,
) -> Traced {
    let Some(sink) = sink else {
        return Traced(None);
    };
    let client = headers
        .get(&TRACEPARENT)
        .and_then(|value| SpanContext::from_traceparent(value.as_bytes()));
    let (context, parent, state) = match client {
        Some(client) => (
            client.child(),
            Some(client.span_id),
            headers
                .get(&TRACESTATE)
                .and_then(|value| value.to_str().ok())
                .map(str::trim)
                .filter(|state| !state.is_empty())
                .map(Arc::from),
        ),
        None => {
            let root = SpanContext::root(false);
            let sampled = sink.sample(root.trace_id);
            (SpanContext { sampled, ..root }, None, None)
        }
    };
    Traced(Some(Arc::new(RequestSpan {
        trace: Trace {
            request: context,
            state,
            sink: Arc::clone(sink),
        },
        parent,
        route,
        id: id.to_string(),
        start: ferrolite_router::spans::now(),
        fields: parking_lot::Mutex::new(Fields::default()),
    })))
}

impl Traced {
    /// Records into the span, when the call is traced and sampled.
    #[inline]
    fn record(&self, write: impl FnOnce(&mut Fields)) {
        if let Some(span) = &self.0 {
            if span.trace.request.sampled {
                write(&mut span.fields.lock());
            }
        }
    }
}

/// The router's request, as the span tells it: the model group, streaming or not, the
/// operation and what the body asks of the model; the request is given the trace, so its
/// attempts' spans are the request span's children.
pub(super) fn routing(traced: &Traced, request: &mut Request) {
    let Some(span) = &traced.0 else {
        return;
    };
    request.trace = Some(span.trace.clone());
    traced.record(|fields| {
        // A Messages or Responses request is a chat, whatever its canonical body holds.
        fields.operation = Some(if request.native.is_some() {
            "chat"
        } else {
            ferrolite_router::spans::operation(&request.body)
        });
        fields.model_group = Some(request.model.clone());
        fields.stream = Some(request.stream);
        fields.max_tokens = request.max_tokens.map(int);
        fields.temperature = request
            .body
            .get("temperature")
            .and_then(serde_json::Value::as_f64);
    });
}

/// A whole answer: the route decision, the model that answered, the usage.
pub(super) fn answered(traced: &Traced, answer: &RouterResponse) {
    traced.record(|fields| {
        decision(fields, &answer.deployment_id, &Answered::from(answer));
        fields.response_model = answer.body.str("model").map(Cow::into_owned);
        usage_of(fields, answer.usage.as_ref());
    });
}

/// A stream that started: the route decision (its usage comes at its end, [`usage`]).
pub(super) fn streaming(traced: &Traced, stream: &RouterStream) {
    traced.record(|fields| decision(fields, &stream.deployment_id, &Answered::from(stream)));
}

/// The route decision, as the answer's `x-litellm-*` headers tell it (`id`: its deployment's).
fn decision(fields: &mut Fields, id: &DeploymentId, answered: &Answered<'_>) {
    fields.deployment = Some(id.clone());
    fields.route_group = Some(answered.group.to_string());
    fields.counts = Some([answered.attempts, answered.retries, answered.fallbacks].map(i64::from));
    fields.cache_hit = Some(answered.cache_hit);
}

fn usage_of(fields: &mut Fields, usage: Option<&Usage>) {
    if let Some(usage) = usage {
        fields.input_tokens = Some(int(usage.prompt_tokens));
        fields.output_tokens = Some(int(usage.completion_tokens));
    }
}

/// The call's token counts.
pub(super) fn usage(traced: &Traced, usage: Option<&Usage>) {
    traced.record(|fields| usage_of(fields, usage));
}

/// The answer's status (a 5xx marks the span an error, as OpenTelemetry's HTTP conventions
/// say for a server).
pub(super) fn status(traced: &Traced, status: u16) {
    traced.record(|fields| fields.status = Some(status));
}

impl Drop for RequestSpan {
    fn drop(&mut self) {
        if !self.trace.request.sampled {
            return;
        }
        fn text(value: &Option<String>) -> Option<Attr<'_>> {
            value.as_deref().map(Attr::Str)
        }
        let RequestSpan {
            trace,
            parent,
            route,
            id,
            start,
            fields,
        } = self;
        let fields = fields.get_mut();
        let number = |value: Option<i64>| value.map(Attr::Int);
        let counts = fields.counts;
        let count = |i: usize| counts.and_then(|c| c.get(i).copied()).map(Attr::Int);
        let attributes = [
            ("http.request.method", Some(Attr::Static("POST"))),
            ("http.route", Some(Attr::Static(route.path))),
            (
                "http.response.status_code",
                fields.status.map(|s| Attr::Int(i64::from(s))),
            ),
            ("ferrolite.request.id", Some(Attr::Str(id))),
            ("ferrolite.model_group", text(&fields.model_group)),
            ("ferrolite.stream", fields.stream.map(Attr::Bool)),
            ("gen_ai.operation.name", fields.operation.map(Attr::Static)),
            ("gen_ai.request.model", text(&fields.model_group)),
            ("gen_ai.request.max_tokens", number(fields.max_tokens)),
            (
                "gen_ai.request.temperature",
                fields.temperature.map(Attr::Float),
            ),
            ("gen_ai.response.model", text(&fields.response_model)),
            ("gen_ai.usage.input_tokens", number(fields.input_tokens)),
            ("gen_ai.usage.output_tokens", number(fields.output_tokens)),
            (
                "ferrolite.route.deployment",
                fields.deployment.as_ref().map(|id| Attr::Str(id.as_str())),
            ),
            ("ferrolite.route.model_group", text(&fields.route_group)),
            ("ferrolite.route.attempts", count(0)),
            ("ferrolite.route.retries", count(1)),
            ("ferrolite.route.fallbacks", count(2)),
            ("ferrolite.cache_hit", fields.cache_hit.map(Attr::Bool)),
        ];
        trace.sink.finished(FinishedSpan {
            name: Cow::Borrowed(route.span),
            kind: SpanKind::Server,
            context: trace.request,
            parent: parent.map(|id| (id, true)),
            state: trace.state.as_deref(),
            start: *start,
            end: ferrolite_router::spans::now(),
            error: fields.status.is_some_and(|s| s >= 500),
            attributes: &attributes,
        });
    }
}
