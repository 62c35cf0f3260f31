//! What this replica saw of a deployment's recent calls, for `Router::state`: the latency and
//! time to first token of the last calls (an EWMA, and p50 / p99 over the last
//! [`SAMPLES`]), and 15 minutes of 10-second buckets (requests, errors, p99 latency) for a
//! dashboard's sparklines. Kept in this process only, bounded (a ring each), and allocated on a
//! deployment's first call, so 10,000 idle deployments cost a pointer each.

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// How long one history bucket is.
pub const BUCKET_MS: u64 = 10_000;
/// How many buckets the history keeps (15 minutes).
pub const BUCKETS: usize = 90;
/// How many recent calls the percentiles are taken over.
const SAMPLES: usize = 128;
/// The EWMA's weight of a new sample.
const EWMA_ALPHA: f64 = 0.2;
/// The latency histogram's bins (per history bucket, for its p99): bin `i` holds latencies
/// below `BIN_BASE_MS * BIN_FACTOR^i`; the last holds everything longer.
const BINS: usize = 48;
const BIN_BASE_MS: f64 = 1.0;
const BIN_FACTOR: f64 = 1.25;

/// One deployment's recent calls (see the module documentation).
#[derive(Default)]
pub(crate) struct Recent(Mutex<Option<Box<Stats>>>);

struct Stats {
    latency: Series,
    ttft: Series,
    /// The history ring, by bucket number modulo [`BUCKETS`].
    history: [Bucket; BUCKETS],
    /// The latency histogram of the newest bucket (`newest`), for its p99.
    bins: [u32; BINS],
    newest: u64,
}

#[derive(Clone, Copy, Default)]
struct Bucket {
    /// The bucket's number (Unix ms / [`BUCKET_MS`]); a slot holding an older number is empty.
    number: u64,
    requests: u32,
    errors: u32,
    /// The p99 latency of its successful calls, once the bucket is closed (NaN: none).
    p99_ms: f32,
}

/// A series of samples: an EWMA and a ring of the last [`SAMPLES`].
struct Series {
    ewma: Option<f64>,
    ring: [f32; SAMPLES],
    len: usize,
    next: usize,
}

impl Default for Series {
    fn default() -> Self {
        Series {
            ewma: None,
            ring: [0.0; SAMPLES],
            len: 0,
            next: 0,
        }
    }
}

impl Series {
    fn push(&mut self, ms: f64) {
        self.ewma = Some(match self.ewma {
            Some(ewma) => ewma + EWMA_ALPHA * (ms - ewma),
            None => ms,
        });
        self.ring[self.next] = ms as f32;
        self.next = (self.next + 1) % SAMPLES;
        self.len = (self.len + 1).min(SAMPLES);
    }

    fn summary(&self) -> Percentiles {
        if self.len == 0 {
            return Percentiles::default();
        }
        let mut copy = [0f32; SAMPLES];
        let samples = &mut copy[..self.len];
        samples.copy_from_slice(&self.ring[..self.len]);
        // Two selections, not a sort: each places the sample of its rank where a sort would.
        let mut at = |q: f64| {
            let rank = ((q * self.len as f64).ceil() as usize).clamp(1, self.len);
            let (_, value, _) = samples.select_nth_unstable_by(rank - 1, f32::total_cmp);
            f64::from(*value)
        };
        let p50 = at(0.5);
        let p99 = at(0.99);
        Percentiles {
            ewma: self.ewma.map(round2),
            p50: Some(round2(p50)),
            p99: Some(round2(p99)),
        }
    }
}

/// An EWMA and two percentiles, in milliseconds; `None` before any sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// The exponentially weighted moving average (weight 0.2 for each new call).
    pub ewma: Option<f64>,
    /// The median of the last 128 calls.
    pub p50: Option<f64>,
    /// The 99th percentile of the last 128 calls.
    pub p99: Option<f64>,
}

/// A deployment's recent history: one entry per 10-second bucket, oldest first, the last
/// one the bucket in progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// How long one bucket is (10).
    pub bucket_seconds: u64,
    /// Calls that ended in each bucket (answered or failed).
    pub requests: Vec<u32>,
    /// Calls that failed in each bucket.
    pub errors: Vec<u32>,
    /// The p99 latency (ms) of each bucket's successful calls; `null` when there was none.
    pub p99_ms: Vec<Option<f64>>,
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn bin_of(ms: f64) -> usize {
    if ms < BIN_BASE_MS {
        return 0;
    }
    let bin = ((ms / BIN_BASE_MS).ln() / BIN_FACTOR.ln()).floor() as usize + 1;
    bin.min(BINS - 1)
}

/// The middle of bin `i` (its geometric mean), the value a p99 in that bin is reported as.
fn bin_value(i: usize) -> f64 {
    if i == 0 {
        return BIN_BASE_MS / 2.0;
    }
    let low = BIN_BASE_MS * BIN_FACTOR.powi(i as i32 - 1);
    low * BIN_FACTOR.sqrt()
}

fn p99_of(bins: &[u32; BINS]) -> Option<f64> {
    let total: u64 = bins.iter().map(|c| u64::from(*c)).sum();
    if total == 0 {
        return None;
    }
    let rank = (total as f64 * 0.99).ceil() as u64;
    let mut seen = 0u64;
    for (i, count) in bins.iter().enumerate() {
        seen += u64::from(*count);
        if seen >= rank {
            return Some(round2(bin_value(i)));
        }
    }
    None
}

impl Stats {
    fn new() -> Box<Self> {
        Box::new(Stats {
            latency: Series::default(),
            ttft: Series::default(),
            history: [Bucket::default(); BUCKETS],
            bins: [0; BINS],
            newest: 0,
        })
    }

    /// The bucket of `now_ms`, closing the one before it (its p99) when time moved on.
    fn bucket(&mut self, now_ms: u64) -> &mut Bucket {
        let number = now_ms / BUCKET_MS;
        if number > self.newest {
            let closed = &mut self.history[(self.newest % BUCKETS as u64) as usize];
            if closed.number == self.newest {
                closed.p99_ms = p99_of(&self.bins).map_or(f32::NAN, |v| v as f32);
            }
            self.bins = [0; BINS];
            self.newest = number;
        }
        let slot = &mut self.history[(number % BUCKETS as u64) as usize];
        if slot.number != number {
            *slot = Bucket {
                number,
                requests: 0,
                errors: 0,
                p99_ms: f32::NAN,
            };
        }
        slot
    }
}

impl Recent {
    /// A call that answered at `now_ms` after `latency_ms` (its first token after `ttft_ms`).
    pub(crate) fn success(&self, now_ms: u64, latency_ms: f64, ttft_ms: Option<f64>) {
        let mut stats = self.0.lock();
        let stats = stats.get_or_insert_with(Stats::new);
        stats.latency.push(latency_ms);
        if let Some(ttft) = ttft_ms {
            stats.ttft.push(ttft);
        }
        let newest = now_ms / BUCKET_MS >= stats.newest;
        let bucket = stats.bucket(now_ms);
        bucket.requests = bucket.requests.saturating_add(1);
        if newest {
            let bin = bin_of(latency_ms);
            stats.bins[bin] = stats.bins[bin].saturating_add(1);
        }
    }

    /// A call that failed at `now_ms`.
    pub(crate) fn failure(&self, now_ms: u64) {
        let mut stats = self.0.lock();
        let bucket = stats.get_or_insert_with(Stats::new).bucket(now_ms);
        bucket.requests = bucket.requests.saturating_add(1);
        bucket.errors = bucket.errors.saturating_add(1);
    }

    /// The latency and time-to-first-token summaries, and the history up to `now_ms` (when
    /// `history`).
    pub(crate) fn read(&self, now_ms: u64, history: bool) -> (Percentiles, Percentiles, History) {
        let stats = self.0.lock();
        let Some(stats) = stats.as_ref() else {
            return (
                Percentiles::default(),
                Percentiles::default(),
                if history {
                    empty_history()
                } else {
                    History::default()
                },
            );
        };
        let mut out = History::default();
        if history {
            // Zeroed series filled from the ring's slots that fall in the window: one pass over
            // the 90 slots, most of them empty or stale on a quiet deployment.
            out = empty_history();
            let last = now_ms / BUCKET_MS;
            for (i, slot) in stats.history.iter().enumerate() {
                // How many buckets before the one in progress; a slot never written holds
                // number 0, which is its bucket only in slot 0 (a clock near the epoch, in tests).
                let Some(at) = last
                    .checked_sub(slot.number)
                    .filter(|back| {
                        *back < BUCKETS as u64 && slot.number % BUCKETS as u64 == i as u64
                    })
                    .and_then(|back| usize::try_from(back).ok())
                    .map(|back| BUCKETS - 1 - back)
                else {
                    continue;
                };
                if let (Some(requests), Some(errors), Some(p99)) = (
                    out.requests.get_mut(at),
                    out.errors.get_mut(at),
                    out.p99_ms.get_mut(at),
                ) {
                    *requests = slot.requests;
                    *errors = slot.errors;
                    *p99 = if slot.number == stats.newest {
                        p99_of(&stats.bins)
                    } else {
                        Some(f64::from(slot.p99_ms)).filter(|v| v.is_finite())
                    };
                }
            }
        }
        (stats.latency.summary(), stats.ttft.summary(), out)
    }
}

fn empty_history() -> History {
    History {
        bucket_seconds: BUCKET_MS / 1000,
        requests: vec![0; BUCKETS],
        errors: vec![0; BUCKETS],
        p99_ms: vec![None; BUCKETS],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_taken_over_the_last_calls() {
        let recent = Recent::default();
        for ms in 1..=100 {
            recent.success(0, f64::from(ms), None);
        }
        let (latency, ttft, _) = recent.read(0, false);
        assert_eq!(latency.p50, Some(50.0));
        assert_eq!(latency.p99, Some(99.0));
        assert!(latency.ewma.is_some_and(|e| e > 90.0 && e < 100.0));
        assert_eq!(ttft, Percentiles::default());
    }

    #[test]
    fn history_holds_ninety_buckets_oldest_first_and_forgets_older_ones() {
        let recent = Recent::default();
        let start = 1_000 * BUCKET_MS;
        recent.success(start, 100.0, None);
        recent.failure(start + 1);
        recent.success(start + BUCKET_MS, 10.0, None);
        let (_, _, history) = recent.read(start + BUCKET_MS, true);
        assert_eq!(history.requests.len(), BUCKETS);
        assert_eq!(history.requests[BUCKETS - 2..], [2, 1]);
        assert_eq!(history.errors[BUCKETS - 2..], [1, 0]);
        let p99 = history.p99_ms[BUCKETS - 2].unwrap();
        assert!((80.0..125.0).contains(&p99), "{p99}");
        let p99 = history.p99_ms[BUCKETS - 1].unwrap();
        assert!((8.0..12.5).contains(&p99), "{p99}");
        // 15 minutes later the first bucket has left the window.
        let later = start + BUCKETS as u64 * BUCKET_MS;
        let (_, _, history) = recent.read(later, true);
        assert_eq!(history.requests.iter().sum::<u32>(), 1);
        assert_eq!(history.requests[BUCKETS - 1], 0);
        assert_eq!(history.requests[BUCKETS - 90], 1);
    }

    #[test]
    fn a_history_near_the_clocks_start_is_ninety_buckets_the_last_in_progress() {
        let recent = Recent::default();
        recent.success(5_000, 10.0, None);
        recent.failure(15_000);
        let (_, _, history) = recent.read(15_000, true);
        assert_eq!(history.requests.len(), BUCKETS);
        assert_eq!(history.requests[BUCKETS - 2..], [1, 1]);
        assert_eq!(history.errors[BUCKETS - 2..], [0, 1]);
        assert_eq!(history.requests.iter().sum::<u32>(), 2);
        assert!(history.p99_ms[BUCKETS - 2].is_some());
        assert_eq!(history.p99_ms[..BUCKETS - 2], [None; BUCKETS - 2]);
    }
}
