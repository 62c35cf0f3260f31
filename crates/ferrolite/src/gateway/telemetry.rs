//! The gateway's own metrics, `ferrolite_gateway_requests_total{status}` and
//! `ferrolite_gateway_request_seconds`, recorded per request through handles registered once
//! (per status code, and per recorder): a request builds no metric key, allocates no label and
//! looks nothing up in the recorder's registry.

use std::sync::OnceLock;
use std::time::Duration;

use ferrolite_router::litellm::PerRecorder;
use metrics::{Counter, Histogram, Key, Label, Level, Metadata, Recorder};

/// The requests answered, by status (`status` label).
const REQUESTS: &str = "ferrolite_gateway_requests_total";

/// The time from a request's arrival at the handler to its answer (headers), in seconds.
const SECONDS: &str = "ferrolite_gateway_request_seconds";

/// What the metrics are recorded with: as `metrics::counter!` in this module would.
static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// The lowest and highest status code with a handle of its own (others are registered per
/// request, as before).
const FIRST_STATUS: u16 = 100;
const LAST_STATUS: u16 = 599;

/// The gateway's metric handles for the recorder in use.
#[derive(Default)]
pub(super) struct Telemetry {
    handles: PerRecorder<Handles>,
}

/// The handles registered with one recorder; a status's counter is registered at its first
/// request (a status never answered shows no series, as with the macros).
struct Handles {
    seconds: Histogram,
    requests: Box<[OnceLock<Counter>]>,
}

impl Telemetry {
    /// Counts a request answered with `status` after `elapsed`.
    pub(super) fn record(&self, status: u16, elapsed: Duration) {
        self.handles.with(Handles::new, |handles, recorder| {
            let index = status.checked_sub(FIRST_STATUS).map(usize::from);
            match index.and_then(|i| handles.requests.get(i)) {
                Some(slot) => slot
                    .get_or_init(|| recorder.register_counter(&requests_key(status), &METADATA))
                    .increment(1),
                None => recorder
                    .register_counter(&requests_key(status), &METADATA)
                    .increment(1),
            }
            handles.seconds.record(elapsed.as_secs_f64());
        });
    }
}

impl Handles {
    fn new(recorder: &dyn Recorder) -> Self {
        Handles {
            seconds: recorder.register_histogram(&Key::from_static_name(SECONDS), &METADATA),
            requests: (FIRST_STATUS..=LAST_STATUS)
                .map(|_| OnceLock::new())
                .collect(),
        }
    }
}

/// The key of the requests answered with `status`.
fn requests_key(status: u16) -> Key {
    Key::from_parts(REQUESTS, vec![Label::new("status", status.to_string())])
}
