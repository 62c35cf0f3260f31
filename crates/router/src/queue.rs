//! The wait queue: with [`WaitQueueSettings`], a request that finds no capacity in its group
//! (every eligible deployment's rpm/tpm or `max_parallel_requests` slots taken) waits for a
//! turn instead of failing at once, in `priority` order (as LiteLLM's `Scheduler`: 0-255, lower
//! first; a request without one after every prioritised one; first come, first served within a
//! priority), bounded in length and in time.
//!
//! Only the head of a group's queue tries; when a call of the group ends, the head is woken at
//! once, and it also retries every `poll_interval` (capacity freed by another instance or by a
//! sliding window is not announced here). A waiter that leaves — admitted, timed out, or its
//! future dropped — wakes the next one. While a group has waiters, a new request of that group
//! queues behind them rather than taking a slot ahead of its turn.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

/// How requests wait for capacity (none: they fail at once, as LiteLLM's
/// `max_parallel_requests` does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitQueueSettings {
    /// Requests waiting per group at most; one more fails at once.
    pub max_waiting: usize,
    /// The longest a request waits (its own deadline may end it sooner).
    pub max_wait: Duration,
    /// How often the head of a queue retries without being woken (LiteLLM's scheduler polls
    /// every 30 ms).
    pub poll_interval: Duration,
}

impl Default for WaitQueueSettings {
    fn default() -> Self {
        WaitQueueSettings {
            max_waiting: 1000,
            max_wait: Duration::from_secs(60),
            poll_interval: Duration::from_millis(30),
        }
    }
}

/// A waiter's place: priority (256 for none), then arrival.
type Place = (u16, u64);

/// The queues of one router, by group.
pub(crate) struct WaitQueue {
    settings: WaitQueueSettings,
    groups: Mutex<HashMap<String, BTreeMap<Place, Arc<Notify>>>>,
    arrivals: AtomicU64,
}

impl WaitQueue {
    pub(crate) fn new(settings: WaitQueueSettings) -> Self {
        WaitQueue {
            settings,
            groups: Mutex::new(HashMap::new()),
            arrivals: AtomicU64::new(0),
        }
    }

    pub(crate) fn settings(&self) -> &WaitQueueSettings {
        &self.settings
    }

    /// Whether `group` has waiters.
    pub(crate) fn has_waiters(&self, group: &str) -> bool {
        self.groups.lock().get(group).is_some_and(|q| !q.is_empty())
    }

    /// Joins `group`'s queue; `None` when it is full.
    pub(crate) fn enter(&self, group: &str, priority: Option<u8>) -> Option<Ticket<'_>> {
        let place = (
            priority.map_or(256, u16::from),
            self.arrivals.fetch_add(1, Ordering::Relaxed),
        );
        let notify = Arc::new(Notify::new());
        let mut groups = self.groups.lock();
        let queue = match groups.get_mut(group) {
            Some(queue) => queue,
            None => groups.entry(group.to_string()).or_default(),
        };
        if queue.len() >= self.settings.max_waiting {
            return None;
        }
        queue.insert(place, Arc::clone(&notify));
        metrics::gauge!("ferrolite_router_queued").increment(1.0);
        Some(Ticket {
            queue: self,
            group: group.to_string(),
            place,
            notify,
        })
    }

    /// Wakes the head of `group`'s queue (a call of the group ended).
    pub(crate) fn wake(&self, group: &str) {
        let groups = self.groups.lock();
        if let Some((_, head)) = groups.get(group).and_then(|q| q.first_key_value()) {
            head.notify_one();
        }
    }
}

/// A place in a group's queue, left when dropped.
pub(crate) struct Ticket<'q> {
    queue: &'q WaitQueue,
    group: String,
    place: Place,
    notify: Arc<Notify>,
}

impl Ticket<'_> {
    /// Whether this waiter is first in its group's queue.
    pub(crate) fn is_head(&self) -> bool {
        let groups = self.queue.groups.lock();
        groups
            .get(&self.group)
            .and_then(|q| q.first_key_value())
            .is_some_and(|(place, _)| *place == self.place)
    }

    /// Waits to be woken or for the next poll, whichever comes first; `false` once `until`
    /// has passed.
    pub(crate) async fn wait(&self, until: Instant) -> bool {
        let now = Instant::now();
        if now >= until {
            return false;
        }
        let poll = (now + self.queue.settings.poll_interval).min(until);
        tokio::select! {
            _ = self.notify.notified() => {}
            _ = tokio::time::sleep_until(poll) => {}
        }
        Instant::now() < until
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut groups = self.queue.groups.lock();
        if let Some(queue) = groups.get_mut(&self.group) {
            queue.remove(&self.place);
            if let Some((_, next)) = queue.first_key_value() {
                next.notify_one();
            } else {
                groups.remove(&self.group);
            }
        }
        metrics::gauge!("ferrolite_router_queued").decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_queue_orders_by_priority_then_arrival_and_is_bounded() {
        let queue = WaitQueue::new(WaitQueueSettings {
            max_waiting: 3,
            ..WaitQueueSettings::default()
        });
        let none = queue.enter("g", None).unwrap();
        let low = queue.enter("g", Some(200)).unwrap();
        let high = queue.enter("g", Some(0)).unwrap();
        assert!(queue.enter("g", Some(0)).is_none(), "full");
        assert!(high.is_head());
        drop(high);
        assert!(low.is_head());
        drop(low);
        assert!(none.is_head());
        drop(none);
        assert!(!queue.has_waiters("g"));
    }
}
