//! What a router is made of, shared by its clones and by every stage of the call path (the
//! stages are methods on [`Inner`], each in its own module; `router.rs` holds the public face).

use std::sync::Arc;

use arc_swap::ArcSwap;
use ferrolite_cache::DualCache;
use ferrolite_strategies::Rng;
use parking_lot::Mutex;

use crate::backend::Backend;
use crate::queue::WaitQueue;
use crate::response_cache::ResponseCache;
use crate::retry_budget::RetryBudget;
use crate::snapshot::Snapshot;
use crate::{Event, Observer, RouterSettings};

/// One router's settings, state and collaborators.
pub(crate) struct Inner {
    pub(crate) settings: RouterSettings,
    pub(crate) cache: DualCache,
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) snapshot: ArcSwap<Snapshot>,
    /// One snapshot rebuild at a time (calls never take it).
    pub(crate) writer: Mutex<()>,
    /// Backoff jitter.
    pub(crate) rng: Rng,
    pub(crate) retry_budget: Option<RetryBudget>,
    pub(crate) queue: Option<WaitQueue>,
    /// The response cache (`cache_responses`), when on.
    pub(crate) responses: Option<ResponseCache>,
    pub(crate) observers: parking_lot::RwLock<Vec<Arc<dyn Observer>>>,
}

impl Inner {
    /// Tells every observer of `event`.
    pub(crate) fn emit(&self, event: Event<'_>) {
        for observer in self.observers.read().iter() {
            observer.on_event(&event);
        }
    }

    /// Reports a request's routing explanation: to the log (debug level) and the observers.
    pub(crate) fn explained(&self, route: &crate::Route) {
        if tracing::enabled!(tracing::Level::DEBUG) {
            tracing::debug!(summary = %route.summary(), route = %route.to_json_text(), "routing explained");
        }
        self.emit(Event::Explained { route });
    }

    /// Wakes the head of `group`'s wait queue, if there is one.
    pub(crate) fn wake_queue(&self, group: &str) {
        if let Some(queue) = &self.queue {
            queue.wake(group);
        }
    }

    /// Whether a failure in the group (or deployment) `label` has a generic fallback chain.
    pub(crate) fn has_fallbacks(&self, label: &str) -> bool {
        let settings = &self.settings;
        settings.fallbacks.contains_key(label) || !settings.default_fallbacks.is_empty()
    }

    /// The cache's clock, now (Unix ms).
    pub(crate) fn now_ms(&self) -> u64 {
        self.cache.clock().now_ms()
    }
}
