//! A retry budget (tower's `retry::budget`, "deposit on success, withdraw on retry"): over a
//! sliding window, retries may number at most a floor per second plus a share of the successes.
//! When a provider starts failing, the successes stop and so do the retries: the router does
//! not multiply the load on a struggling provider (a retry storm).

use std::collections::VecDeque;

use parking_lot::Mutex;

use crate::settings::RetryBudgetSettings;

/// Deposits and withdrawals per second of the window.
#[derive(Debug)]
pub(crate) struct RetryBudget {
    settings: RetryBudgetSettings,
    /// (second, successes, retries), oldest first.
    seconds: Mutex<VecDeque<(u64, u64, u64)>>,
}

impl RetryBudget {
    pub(crate) fn new(settings: RetryBudgetSettings) -> Self {
        RetryBudget {
            settings,
            seconds: Mutex::new(VecDeque::new()),
        }
    }

    fn slot<'a>(
        &self,
        seconds: &'a mut VecDeque<(u64, u64, u64)>,
        now_ms: u64,
    ) -> &'a mut (u64, u64, u64) {
        let second = now_ms / 1000;
        let window = self.settings.window.as_secs().max(1);
        while seconds
            .front()
            .is_some_and(|(s, _, _)| s + window <= second)
        {
            seconds.pop_front();
        }
        if seconds.back().is_none_or(|(s, _, _)| *s < second) {
            seconds.push_back((second, 0, 0));
        }
        let last = seconds.len() - 1;
        &mut seconds[last]
    }

    /// A call succeeded.
    pub(crate) fn deposit(&self, now_ms: u64) {
        let mut seconds = self.seconds.lock();
        self.slot(&mut seconds, now_ms).1 += 1;
    }

    /// Takes one retry from the budget; false when it is spent.
    pub(crate) fn withdraw(&self, now_ms: u64) -> bool {
        let mut seconds = self.seconds.lock();
        self.slot(&mut seconds, now_ms);
        let (successes, retries) = seconds
            .iter()
            .fold((0u64, 0u64), |(s, r), (_, ds, dr)| (s + ds, r + dr));
        let window = self.settings.window.as_secs().max(1);
        let allowed = (self.settings.min_per_second as u64 * window) as f64
            + self.settings.ratio * successes as f64;
        if (retries + 1) as f64 > allowed {
            return false;
        }
        self.slot(&mut seconds, now_ms).2 += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn retries_are_a_floor_plus_a_share_of_successes_over_the_window() {
        let budget = RetryBudget::new(RetryBudgetSettings {
            window: Duration::from_secs(10),
            min_per_second: 0,
            ratio: 0.5,
        });
        assert!(!budget.withdraw(0), "no success yet, no floor: no retry");
        for _ in 0..4 {
            budget.deposit(1_000);
        }
        assert!(budget.withdraw(2_000));
        assert!(budget.withdraw(2_000));
        assert!(!budget.withdraw(2_000), "2 of 4 x 0.5 spent");
        // Ten seconds later the successes have aged out.
        for _ in 0..2 {
            budget.deposit(12_500);
        }
        assert!(budget.withdraw(12_500), "only the new successes count");
        assert!(!budget.withdraw(12_500));
    }
}
