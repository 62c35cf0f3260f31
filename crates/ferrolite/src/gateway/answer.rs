//! Step 5, answer: a routed call's JSON answer with `model` set back to what the client asked
//! for, and LiteLLM's `x-litellm-*` headers (a stream's are the same, [`super::sse`]).

use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::response::Response;
use ferrolite_router::{Route, RouterResponse, RouterStream};

/// The answer to a call: the deployment's bytes with only `model` set to what the client asked
/// for (spliced in where it stands: key order, numbers and escapes stay the upstream's), and
/// the answer headers.
pub(super) fn json(answer: RouterResponse, model: String) -> Response {
    let mut headers = HeaderMap::with_capacity(ANSWER_HEADERS);
    litellm_headers(&mut headers, Answered::from(&answer));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let bytes = match &answer.route {
        Some(route) => with_route(&answer.body, Some(&model), route).into(),
        None => answer.body.with_model(&model),
    };
    let mut response = Response::new(axum::body::Body::from(bytes));
    *response.headers_mut() = headers;
    response
}

/// The answer's field that explains its routing (`x-ferrolite-explain: true`).
pub(super) const ROUTE_FIELD: &str = "ferrolite_route";

/// The answer's bytes with `ferrolite_route` set to `route` (and `model` to `model`, when
/// given), every other byte as the upstream's.
pub(super) fn with_route(
    body: &ferrolite_router::Body,
    model: Option<&str>,
    route: &ferrolite_router::Route,
) -> Vec<u8> {
    use serde_json::value::RawValue;
    let raw = |json: String| RawValue::from_string(json).ok();
    let route = raw(route.to_json_text());
    let model = model.and_then(|m| raw(serde_json::Value::from(m).to_string()));
    let mut edits: Vec<(&str, Option<&RawValue>)> = Vec::with_capacity(2);
    if let Some(model) = &model {
        edits.push(("model", Some(model)));
    }
    if let Some(route) = &route {
        edits.push((ROUTE_FIELD, Some(route)));
    }
    let mut out = Vec::with_capacity(body.len() + 1024);
    body.write_edited(&edits, &mut out);
    out
}

/// What the answer headers say about a routed call.
pub(super) struct Answered<'a> {
    pub(super) deployment: &'a str,
    pub(super) group: &'a str,
    /// Deployments called (not a header: the trace's `ferrolite.route.attempts`).
    pub(super) attempts: u32,
    pub(super) retries: u32,
    max_retries: Option<u32>,
    pub(super) fallbacks: u32,
    api_base: Option<&'a str>,
    cost: Option<f64>,
    overhead: Duration,
    cache_key: Option<&'a str>,
    pub(super) cache_hit: bool,
    route: Option<&'a ferrolite_router::Route>,
}

impl<'a> From<&'a RouterResponse> for Answered<'a> {
    fn from(answer: &'a RouterResponse) -> Self {
        Answered {
            deployment: answer.deployment_id.as_str(),
            group: &answer.model_group,
            attempts: answer.attempts,
            retries: answer.attempted_retries,
            max_retries: answer.max_retries,
            fallbacks: answer.attempted_fallbacks,
            api_base: answer.api_base.as_deref(),
            cost: answer.response_cost,
            overhead: answer.overhead,
            cache_key: answer.cache_key.as_deref(),
            cache_hit: answer.cache_hit,
            route: answer.route.as_deref(),
        }
    }
}

impl<'a> From<&'a RouterStream> for Answered<'a> {
    fn from(stream: &'a RouterStream) -> Self {
        Answered {
            deployment: stream.deployment_id.as_str(),
            group: &stream.model_group,
            attempts: stream.attempts,
            retries: stream.attempted_retries,
            max_retries: stream.max_retries,
            fallbacks: stream.attempted_fallbacks,
            api_base: stream.api_base.as_deref(),
            // A stream's cost is known at its end; a replayed one costs nothing.
            cost: stream.cache_hit.then_some(0.0),
            overhead: stream.overhead,
            cache_key: stream.cache_key.as_deref(),
            cache_hit: stream.cache_hit,
            route: stream.route.as_deref(),
        }
    }
}

/// LiteLLM's `x-litellm-*` answer headers and ferrolite's own, named once.
const MODEL_ID: HeaderName = HeaderName::from_static("x-litellm-model-id");
const MODEL_GROUP: HeaderName = HeaderName::from_static("x-litellm-model-group");
const ATTEMPTED_RETRIES: HeaderName = HeaderName::from_static("x-litellm-attempted-retries");
const MAX_RETRIES: HeaderName = HeaderName::from_static("x-litellm-max-retries");
const MODEL_API_BASE: HeaderName = HeaderName::from_static("x-litellm-model-api-base");
const ATTEMPTED_FALLBACKS: HeaderName = HeaderName::from_static("x-litellm-attempted-fallbacks");
const RESPONSE_COST: HeaderName = HeaderName::from_static("x-litellm-response-cost");
const CACHE_KEY: HeaderName = HeaderName::from_static("x-litellm-cache-key");
const CACHE_HIT: HeaderName = HeaderName::from_static("x-ferrolite-cache-hit");
const OVERHEAD_MS: HeaderName = HeaderName::from_static("x-ferrolite-overhead-ms");
const ROUTE: HeaderName = HeaderName::from_static("x-ferrolite-route");

/// The headers [`litellm_headers`] sets at most, and the two the answer adds (content type,
/// request id): room for them all at once.
pub(super) const ANSWER_HEADERS: usize = 15;

/// The headers LiteLLM's proxy sets on an answer, plus ferrolite's overhead and cache-hit
/// headers. Names are constants and values are written without `format!` (small counts are
/// static values): a text value costs one copy, a number none or one.
pub(super) fn litellm_headers(headers: &mut HeaderMap, answered: Answered<'_>) {
    let mut set = |name: HeaderName, value: Option<HeaderValue>| {
        if let Some(value) = value {
            headers.insert(name, value);
        }
    };
    set(MODEL_ID, text(answered.deployment));
    set(MODEL_GROUP, text(answered.group));
    set(ATTEMPTED_RETRIES, Some(count(answered.retries)));
    if let Some(max) = answered.max_retries {
        set(MAX_RETRIES, Some(count(max)));
    }
    if let Some(base) = answered.api_base {
        set(MODEL_API_BASE, text(base));
    }
    set(ATTEMPTED_FALLBACKS, Some(count(answered.fallbacks)));
    if let Some(cost) = answered.cost {
        set(RESPONSE_COST, cost_value(cost));
    }
    if let Some(key) = answered.cache_key {
        set(CACHE_KEY, text(key));
        set(
            CACHE_HIT,
            Some(HeaderValue::from_static(if answered.cache_hit {
                "true"
            } else {
                "false"
            })),
        );
    }
    set(OVERHEAD_MS, overhead_value(answered.overhead));
    if let Some(route) = answered.route {
        set_route(headers, route);
    }
}

/// `x-ferrolite-route`: the route's summary, one bounded line of printable ASCII
/// (`Route::summary`).
pub(super) fn set_route(headers: &mut HeaderMap, route: &Route) {
    if let Some(value) = text(&route.summary()) {
        headers.insert(ROUTE, value);
    }
}

/// A text header's value (`None` when it holds a byte a header may not).
fn text(value: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(value).ok()
}

/// A count's value, as its decimal digits: 0-9 without an allocation.
fn count(n: u32) -> HeaderValue {
    const DIGITS: [HeaderValue; 10] = [
        HeaderValue::from_static("0"),
        HeaderValue::from_static("1"),
        HeaderValue::from_static("2"),
        HeaderValue::from_static("3"),
        HeaderValue::from_static("4"),
        HeaderValue::from_static("5"),
        HeaderValue::from_static("6"),
        HeaderValue::from_static("7"),
        HeaderValue::from_static("8"),
        HeaderValue::from_static("9"),
    ];
    usize::try_from(n)
        .ok()
        .and_then(|i| DIGITS.get(i).cloned())
        .unwrap_or_else(|| HeaderValue::from(n))
}

/// `x-litellm-response-cost`: the cost as Rust's `Display` of an `f64` writes it (`0.00042`,
/// `0`), written on the stack (a cost too long for it, `format!`).
fn cost_value(cost: f64) -> Option<HeaderValue> {
    use std::io::Write as _;
    let mut buffer = [0u8; 48];
    let mut rest = &mut buffer[..];
    if write!(rest, "{cost}").is_ok() {
        let written = 48 - rest.len();
        return HeaderValue::from_bytes(buffer.get(..written)?).ok();
    }
    HeaderValue::from_str(&cost.to_string()).ok()
}

/// `x-ferrolite-overhead-ms`: the overhead in milliseconds with three decimals, as
/// `format!("{:.3}", overhead.as_secs_f64() * 1e3)` writes it, from the integer nanoseconds
/// (rounded to the nearest microsecond; a time exactly halfway between two microseconds,
/// where the float's own rounding decides, is formatted as before).
fn overhead_value(overhead: Duration) -> Option<HeaderValue> {
    let nanos = overhead.as_nanos();
    if nanos % 1_000 == 500 {
        return HeaderValue::from_str(&format!("{:.3}", overhead.as_secs_f64() * 1e3)).ok();
    }
    let micros = (nanos + 500) / 1_000;
    let mut digits = itoa::Buffer::new();
    let whole = digits.format(micros / 1_000).as_bytes();
    let thousandths = u16::try_from(micros % 1_000).unwrap_or(0);
    let mut buffer = [0u8; 44];
    let (digits, tail) = buffer.split_at_mut(whole.len());
    digits.copy_from_slice(whole);
    let tail = tail.get_mut(..4)?;
    tail.copy_from_slice(&[
        b'.',
        b'0' + digit(thousandths / 100),
        b'0' + digit(thousandths / 10 % 10),
        b'0' + digit(thousandths % 10),
    ]);
    HeaderValue::from_bytes(buffer.get(..whole.len() + 4)?).ok()
}

/// A decimal digit (0-9) as a byte's offset from `b'0'`.
fn digit(d: u16) -> u8 {
    u8::try_from(d % 10).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use super::{cost_value, count, overhead_value};

    #[test]
    fn the_overhead_is_written_as_the_float_formatting_wrote_it() {
        let mut nanos: Vec<u64> = (0..5_000).collect();
        nanos.extend((0..5_000).map(|n| n * 997 + 1_234_567));
        nanos.extend([
            999_499,
            999_500,
            999_501,
            9_999_999_999,
            86_400_000_000_123,
            u64::from(u32::MAX) * 1_000 + 499,
        ]);
        for n in nanos {
            let overhead = Duration::from_nanos(n);
            let before = format!("{:.3}", overhead.as_secs_f64() * 1e3);
            assert_eq!(overhead_value(overhead).unwrap(), before.as_str(), "{n} ns");
        }
    }

    #[test]
    fn a_cost_and_a_count_are_written_as_display_writes_them() {
        for cost in [0.0, 1.0, 0.00042, 1.5e-7, 123_456.789, 1e-300, f64::MAX] {
            assert_eq!(cost_value(cost).unwrap(), cost.to_string().as_str());
        }
        for n in [0, 1, 9, 10, 11, 99, 1_000, u32::MAX] {
            assert_eq!(count(n), n.to_string().as_str());
        }
    }
}
