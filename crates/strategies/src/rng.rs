//! A small, lock-free, seedable random number generator shared by concurrent picks.
//!
//! wyrand (Wang Yi, <https://github.com/wangyi-fudan/wyhash>): the state advances by a constant
//! with one atomic `fetch_add`, and the output mixes it with one 128-bit multiply. Concurrent
//! callers each get a distinct state, so no lock is taken; a seeded generator used from one
//! thread gives the same sequence every run, which makes the statistical tests deterministic.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

const INCREMENT: u64 = 0xa076_1d64_78bd_642f;
const MIX: u64 = 0xe703_7ed1_a0b4_28db;

/// The random source of a strategy.
#[derive(Debug)]
pub struct Rng(AtomicU64);

impl Rng {
    /// A generator with a fixed seed (tests, reproducible simulations).
    pub fn seeded(seed: u64) -> Self {
        Rng(AtomicU64::new(seed))
    }

    /// A generator seeded from the process' random hash keys.
    pub fn from_entropy() -> Self {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(INCREMENT);
        Rng::seeded(hasher.finish())
    }

    /// A new generator seeded from this one (a strategy for the next snapshot draws on its own,
    /// reproducibly when this one was seeded).
    pub fn split(&self) -> Rng {
        Rng::seeded(self.next_u64())
    }

    /// The next 64 random bits.
    pub fn next_u64(&self) -> u64 {
        let state = self
            .0
            .fetch_add(INCREMENT, Ordering::Relaxed)
            .wrapping_add(INCREMENT);
        let product = u128::from(state) * u128::from(state ^ MIX);
        ((product >> 64) as u64) ^ (product as u64)
    }

    /// A uniform integer in `0..n` (`n > 0`; returns 0 for `n == 0`), by Lemire's multiply-shift.
    pub fn below(&self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// A uniform float in `[0, 1)`.
    pub fn unit(&self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

impl Default for Rng {
    fn default() -> Self {
        Rng::from_entropy()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_generators_repeat_and_spread() {
        let (a, b) = (Rng::seeded(7), Rng::seeded(7));
        let xs: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..5).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        let rng = Rng::seeded(1);
        let mut counts = [0usize; 4];
        for _ in 0..40_000 {
            counts[rng.below(4)] += 1;
        }
        assert!(
            counts.iter().all(|c| (9_000..11_000).contains(c)),
            "{counts:?}"
        );
        assert!(
            (0..1000)
                .map(|_| rng.unit())
                .all(|u| (0.0..1.0).contains(&u))
        );
    }
}
