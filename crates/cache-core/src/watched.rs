//! A watched deadline's state (a cooldown, a failed health check, a half-open probe), shared by
//! the registry, the handles ([`crate::Deadline`], in `deadlines.rs`) and the sync task.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::RwLock;

/// One watched key's state, shared by the registry, the handles and the sync task.
#[derive(Debug)]
pub(crate) struct WatchedCell {
    pub(crate) key: Box<str>,
    /// The deadline in Unix ms; 0 when not set. Only moves later (`fetch_max`).
    until: AtomicU64,
    /// A local write Redis has not acknowledged yet.
    unsent: AtomicBool,
    /// Summaries this deadline reports to ([`crate::LatestDeadline`]): each is moved to the
    /// deadline whenever it moves later.
    reports: RwLock<Vec<Weak<AtomicU64>>>,
}

impl crate::registry::Keyed for WatchedCell {
    fn key(&self) -> &str {
        &self.key
    }
}

impl WatchedCell {
    pub(crate) fn new(key: Box<str>) -> Self {
        WatchedCell {
            key,
            until: AtomicU64::new(0),
            unsent: AtomicBool::new(false),
            reports: RwLock::new(Vec::new()),
        }
    }

    pub(crate) fn until(&self) -> u64 {
        self.until.load(Ordering::Acquire)
    }

    /// Takes a deadline read from Redis (or set here); returns the deadline now held.
    pub(crate) fn observe(&self, until_ms: u64) -> u64 {
        let previous = self.until.fetch_max(until_ms, Ordering::AcqRel);
        if until_ms > previous {
            for summary in self.reports.read().iter() {
                if let Some(summary) = summary.upgrade() {
                    summary.fetch_max(until_ms, Ordering::AcqRel);
                }
            }
        }
        previous.max(until_ms)
    }

    /// Reports this deadline to `summary` from now on (and at once): the summary is never
    /// earlier than the deadline. Summaries dropped since are forgotten.
    pub(crate) fn report_to(&self, summary: &Arc<AtomicU64>) {
        {
            let mut reports = self.reports.write();
            reports.retain(|r| r.strong_count() > 0);
            reports.push(Arc::downgrade(summary));
        }
        // After the registration: a move before it is read here, one after it is reported.
        summary.fetch_max(self.until(), Ordering::AcqRel);
    }

    pub(crate) fn is_unsent(&self) -> bool {
        self.unsent.load(Ordering::Acquire)
    }

    pub(crate) fn set_unsent(&self, unsent: bool) {
        self.unsent.store(unsent, Ordering::Release);
    }

    /// Whether the registry may forget it: no handle, nothing to send, deadline passed.
    pub(crate) fn is_idle(&self, now_ms: u64) -> bool {
        !self.is_unsent() && self.until() <= now_ms
    }
}
