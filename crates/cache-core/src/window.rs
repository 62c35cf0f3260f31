//! Window math for rate limits, in one place: which bucket a moment falls in, how much of a
//! window a count still weighs, and the key each bucket is stored under.
//!
//! Two kinds of windows:
//! - **fixed**: calendar-aligned buckets (`floor(now / length)`), LiteLLM's behaviour. A client
//!   can spend the limit at 12:00:59 and again at 12:01:00 (LiteLLM keys its per-minute
//!   counters by calendar minute; sliding windows, LiteLLM issue #3065, are not implemented).
//! - **sliding** (ferrolite's default): the sliding-window-counter approximation used by
//!   Cloudflare and Redis' rate-limiting patterns: `estimate = prev * (1 - elapsed/length) + cur`,
//!   where `elapsed` is the time since the current bucket started. It bounds a burst across a
//!   boundary to the limit, with two counters per key instead of a log of timestamps.
//!
//! The strict-mode Lua script (`lua/admit_v1.lua`) implements the same formulas; the tests
//! check this module against a brute-force model.

use std::time::Duration;

use parking_lot::Mutex;

use crate::error::CacheError;

/// How counts age out of a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WindowKind {
    /// Calendar-aligned buckets; the count resets at each boundary.
    Fixed,
    /// Two buckets, the previous one weighted by how much of it still overlaps the window.
    Sliding,
}

impl WindowKind {
    /// The name used in Lua script arguments and configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            WindowKind::Fixed => "fixed",
            WindowKind::Sliding => "sliding",
        }
    }
}

/// A rate window: its kind and its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    kind: WindowKind,
    length_ms: u64,
}

impl Window {
    /// A window of `length` (at least 1 ms).
    pub fn new(kind: WindowKind, length: Duration) -> Result<Self, CacheError> {
        let length_ms = u64::try_from(length.as_millis()).unwrap_or(u64::MAX);
        if length_ms == 0 {
            return Err(CacheError::InvalidArgument {
                field: "window",
                value: format!("{length:?}"),
                reason: "a window must be at least 1 ms long",
            });
        }
        Ok(Window { kind, length_ms })
    }

    /// A fixed window (LiteLLM's calendar buckets).
    pub fn fixed(length: Duration) -> Result<Self, CacheError> {
        Self::new(WindowKind::Fixed, length)
    }

    /// A sliding window.
    pub fn sliding(length: Duration) -> Result<Self, CacheError> {
        Self::new(WindowKind::Sliding, length)
    }

    /// One minute, fixed: the window of LiteLLM's `…:rpm:{HH-MM}` keys.
    pub const MINUTE_FIXED: Window = Window {
        kind: WindowKind::Fixed,
        length_ms: 60_000,
    };

    /// One minute, sliding: ferrolite's default rpm/tpm window.
    pub const MINUTE_SLIDING: Window = Window {
        kind: WindowKind::Sliding,
        length_ms: 60_000,
    };

    /// The window's kind.
    pub fn kind(&self) -> WindowKind {
        self.kind
    }

    /// The window's length in milliseconds.
    pub fn length_ms(&self) -> u64 {
        self.length_ms
    }

    /// The bucket `now_ms` falls in.
    pub fn bucket(&self, now_ms: u64) -> u64 {
        now_ms / self.length_ms
    }

    /// When the bucket containing `now_ms` started.
    pub fn bucket_start_ms(&self, now_ms: u64) -> u64 {
        self.bucket(now_ms) * self.length_ms
    }

    /// How long a bucket's count must be kept: one window for fixed, two for sliding (the
    /// previous bucket still weighs in).
    pub fn retention_ms(&self) -> u64 {
        match self.kind {
            WindowKind::Fixed => self.length_ms,
            WindowKind::Sliding => self.length_ms.saturating_mul(2),
        }
    }

    /// How much the previous bucket still weighs at `now_ms`: `1 - elapsed / length` for a
    /// sliding window, 0 for a fixed one.
    pub fn previous_weight(&self, now_ms: u64) -> f64 {
        match self.kind {
            WindowKind::Fixed => 0.0,
            WindowKind::Sliding => {
                1.0 - (now_ms - self.bucket_start_ms(now_ms)) as f64 / self.length_ms as f64
            }
        }
    }

    /// The count the window holds at `now_ms`, given the current bucket's count and the
    /// previous bucket's.
    pub fn estimate(&self, previous: f64, current: f64, now_ms: u64) -> f64 {
        match self.kind {
            WindowKind::Fixed => current,
            WindowKind::Sliding => {
                let elapsed =
                    (now_ms - self.bucket_start_ms(now_ms)) as f64 / self.length_ms as f64;
                previous * (1.0 - elapsed) + current
            }
        }
    }

    /// The Redis key of the bucket containing `now_ms`: `{base}:{HH-MM}` (UTC) for one-minute
    /// fixed windows, as LiteLLM writes them, and `{base}:{bucket number}` otherwise. Built at the
    /// Redis boundary only, never per candidate on the hot path.
    pub fn bucket_key(&self, base: &str, now_ms: u64) -> String {
        if *self == Self::MINUTE_FIXED {
            let suffix = litellm_minute_suffix(now_ms);
            let mut key = String::with_capacity(base.len() + 6);
            key.push_str(base);
            key.push(':');
            key.extend(suffix.iter().map(|b| char::from(*b)));
            key
        } else {
            format!("{base}:{}", self.bucket(now_ms))
        }
    }
}

/// The `HH-MM` (UTC) suffix of LiteLLM's per-minute keys, without allocating.
pub fn litellm_minute_suffix(now_ms: u64) -> [u8; 5] {
    let minute_of_day = (now_ms / 60_000) % (24 * 60);
    let (h, m) = ((minute_of_day / 60) as u8, (minute_of_day % 60) as u8);
    [
        b'0' + h / 10,
        b'0' + h % 10,
        b'-',
        b'0' + m / 10,
        b'0' + m % 10,
    ]
}

/// An in-process windowed counter: the local form of a rate limit, used where no Redis is
/// configured and as the fail-open fallback of strict admission. `try_add` checks and adds
/// under one lock, so N concurrent callers against a limit L admit exactly L.
#[derive(Debug)]
pub struct WindowedCounter {
    window: Window,
    state: Mutex<Buckets>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Buckets {
    bucket: u64,
    current: f64,
    previous: f64,
}

impl Buckets {
    /// Rolls the buckets forward to the one containing `now_ms`.
    /// Returns the time to evaluate the window at: `now_ms`, or the start of the newest bucket
    /// seen when the clock stepped back before it.
    fn roll(&mut self, window: &Window, now_ms: u64) -> u64 {
        let bucket = window.bucket(now_ms);
        // A wall clock stepped backwards does not reopen the window: counts stay where they are
        // until time catches up with the newest bucket seen.
        if bucket <= self.bucket {
            return now_ms.max(self.bucket.saturating_mul(window.length_ms()));
        }
        self.previous = if bucket == self.bucket + 1 {
            self.current
        } else {
            0.0
        };
        self.current = 0.0;
        self.bucket = bucket;
        now_ms
    }
}

impl WindowedCounter {
    /// An empty counter.
    pub fn new(window: Window) -> Self {
        WindowedCounter {
            window,
            state: Mutex::new(Buckets::default()),
        }
    }

    /// The counter's window.
    pub fn window(&self) -> Window {
        self.window
    }

    /// The count in the window at `now_ms`.
    pub fn estimate(&self, now_ms: u64) -> f64 {
        let mut state = self.state.lock();
        let now_ms = state.roll(&self.window, now_ms);
        self.window.estimate(state.previous, state.current, now_ms)
    }

    /// Adds `delta` unconditionally; returns the new estimate.
    pub fn add(&self, now_ms: u64, delta: f64) -> f64 {
        let mut state = self.state.lock();
        let now_ms = state.roll(&self.window, now_ms);
        state.current += delta;
        self.window.estimate(state.previous, state.current, now_ms)
    }

    /// Adds `delta` if the estimate stays `<= limit`: `Ok(new estimate)`, or `Err(current
    /// estimate)` when it would not fit.
    pub fn try_add(&self, now_ms: u64, delta: f64, limit: f64) -> Result<f64, f64> {
        let mut state = self.state.lock();
        let now_ms = state.roll(&self.window, now_ms);
        let estimate = self.window.estimate(state.previous, state.current, now_ms);
        if estimate + delta > limit {
            return Err(estimate);
        }
        state.current += delta;
        Ok(estimate + delta)
    }

    /// Whether the counter holds nothing that still counts at `now_ms` (so it can be dropped).
    pub fn is_idle(&self, now_ms: u64) -> bool {
        let state = self.state.lock();
        self.window.bucket(now_ms) > state.bucket + 1
            || (state.current == 0.0 && state.previous == 0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn minute_suffix_matches_litellm_utc_format() {
        // 2024-01-01T13:07:42Z
        let t = 1_704_114_462_000;
        assert_eq!(&litellm_minute_suffix(t), b"13-07");
        assert_eq!(
            Window::MINUTE_FIXED.bucket_key("d1:gpt-4o:rpm", t),
            "d1:gpt-4o:rpm:13-07"
        );
        assert_eq!(&litellm_minute_suffix(0), b"00-00");
        assert_eq!(&litellm_minute_suffix(86_399_999), b"23-59");
    }

    #[test]
    fn other_windows_key_by_bucket_number() {
        let w = Window::sliding(Duration::from_secs(10)).unwrap();
        assert_eq!(w.bucket_key("k", 25_000), "k:2");
    }

    #[test]
    fn zero_length_window_is_rejected() {
        assert!(matches!(
            Window::fixed(Duration::ZERO),
            Err(CacheError::InvalidArgument {
                field: "window",
                ..
            })
        ));
    }

    #[test]
    fn fixed_window_resets_at_the_boundary() {
        let c = WindowedCounter::new(Window::MINUTE_FIXED);
        for _ in 0..10 {
            assert!(c.try_add(59_000, 1.0, 10.0).is_ok());
        }
        assert_eq!(c.try_add(59_999, 1.0, 10.0), Err(10.0));
        // LiteLLM's 2x burst: a full limit again one millisecond later.
        assert_eq!(c.try_add(60_000, 1.0, 10.0), Ok(1.0));
    }

    #[test]
    fn sliding_window_carries_the_previous_bucket_across_the_boundary() {
        let c = WindowedCounter::new(Window::MINUTE_SLIDING);
        for _ in 0..10 {
            assert!(c.try_add(59_000, 1.0, 10.0).is_ok());
        }
        // Right after the boundary the previous minute still weighs ~fully: no burst.
        assert!(c.try_add(60_001, 1.0, 10.0).is_err());
        // Half-way through the next minute half of it has aged out.
        assert!((c.estimate(90_000) - 5.0).abs() < 1e-9);
        // Two windows later nothing is left.
        assert_eq!(c.estimate(180_000), 0.0);
        assert!(c.is_idle(180_000));
    }

    /// Regression (review of 79b0912): a backwards step of the wall clock zeroed both buckets,
    /// so local admission re-admitted a full limit.
    #[test]
    fn a_clock_stepping_backwards_does_not_reopen_the_window() {
        let c = WindowedCounter::new(Window::MINUTE_SLIDING);
        for _ in 0..10 {
            assert!(c.try_add(125_000, 1.0, 10.0).is_ok());
        }
        // The clock steps back two minutes (NTP correction, VM resume).
        assert_eq!(c.try_add(5_000, 1.0, 10.0), Err(10.0));
        assert!(c.estimate(5_000) >= 10.0);
    }

    /// A brute-force model: every event with its timestamp; the estimate recomputed from scratch.
    fn model_estimate(window: &Window, events: &[(u64, f64)], now: u64) -> f64 {
        let bucket = window.bucket(now);
        let sum = |b: u64| {
            events
                .iter()
                .filter(|(t, _)| window.bucket(*t) == b)
                .map(|(_, d)| d)
                .sum::<f64>()
        };
        let current = sum(bucket);
        let previous = if bucket == 0 { 0.0 } else { sum(bucket - 1) };
        window.estimate(previous, current, now)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn counter_matches_the_model(
            sliding in any::<bool>(),
            length in 1u64..5_000,
            steps in proptest::collection::vec((0u64..3_000, 0u32..20), 1..60),
        ) {
            let kind = if sliding { WindowKind::Sliding } else { WindowKind::Fixed };
            let window = Window::new(kind, Duration::from_millis(length)).unwrap();
            let counter = WindowedCounter::new(window);
            let mut now = 0u64;
            let mut events = Vec::new();
            for (gap, delta) in steps {
                now += gap;
                let got = counter.add(now, f64::from(delta));
                events.push((now, f64::from(delta)));
                let want = model_estimate(&window, &events, now);
                prop_assert!((got - want).abs() < 1e-6, "at {now}: {got} != {want}");
            }
        }

        #[test]
        fn try_add_never_exceeds_the_limit(
            length in 1u64..1_000,
            limit in 0u32..50,
            times in proptest::collection::vec(0u64..200, 1..200),
        ) {
            let window = Window::new(WindowKind::Sliding, Duration::from_millis(length)).unwrap();
            let counter = WindowedCounter::new(window);
            let mut now = 0;
            for gap in times {
                now += gap;
                let _ = counter.try_add(now, 1.0, f64::from(limit));
                prop_assert!(counter.estimate(now) <= f64::from(limit) + 1e-9);
            }
        }
    }
}
