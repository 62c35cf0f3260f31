//! Properties of the ledger: recorded spend is the sum of settled costs, and spend recorded
//! around window rollovers is never lost.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::collections::BTreeMap;
use std::sync::Arc;

use ferrolite_budgets::{BudgetConfig, BudgetLedger, BudgetsConfig};
use ferrolite_cache::{CacheConfig, DualCache, ManualClock};
use ferrolite_types::Deployment;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Reserve an amount, then settle with a cost (or release when None).
    Call { reserve: u32, cost: Option<u32> },
    /// Move the clock.
    Wait(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u32..50, proptest::option::weighted(0.8, 0u32..80)).prop_map(|(reserve, cost)| Op::Call { reserve, cost }),
        1 => (0u64..40_000).prop_map(Op::Wait),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn spend_per_window_is_the_sum_of_settled_costs(ops in proptest::collection::vec(op(), 1..60), rolling in any::<bool>()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let clock = ManualClock::new(1_700_000_000_000);
            let cache = DualCache::connect_with_clock(CacheConfig::default(), Arc::new(clock.clone())).await.unwrap();
            let config = BudgetsConfig {
                providers: [("openai".to_string(), BudgetConfig::new(1e9, "1m"))].into(),
                alignment: if rolling { ferrolite_budgets::WindowAlignment::Rolling } else { ferrolite_budgets::WindowAlignment::Calendar },
                ..BudgetsConfig::default()
            };
            let deployments = [Deployment::new("g", "openai/gpt-4o")];
            let index = ferrolite_types::DeploymentIndex::of(&deployments).unwrap();
            let d0 = index.iter().next().unwrap().0;
            let ledger = BudgetLedger::new(cache, &config, &index, &deployments).unwrap();
            // The model: settled cost per window start.
            let mut model: BTreeMap<u64, f64> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Wait(ms) => clock.advance_ms(ms),
                    Op::Call { reserve, cost } => {
                        let reservation = ledger.reserve(d0, &[], f64::from(reserve) / 100.0).await.unwrap();
                        // The window the reservation was made in is the one its cost belongs to.
                        let window = ledger.status().await.unwrap()[0].window_start_ms.unwrap();
                        if let Some(cost) = cost {
                            // The window may roll between reserve and settle: the cost still
                            // lands in the reservation's window.
                            clock.advance_ms(u64::from(cost) * 100);
                            ledger.settle(reservation, f64::from(cost) / 100.0).unwrap();
                            *model.entry(window).or_insert(0.0) += f64::from(cost) / 100.0;
                        } else {
                            ledger.release(reservation).unwrap();
                            model.entry(window).or_insert(0.0);
                        }
                    }
                }
                let status = ledger.status().await.unwrap();
                let start = status[0].window_start_ms.unwrap();
                let expected = model.get(&start).copied().unwrap_or(0.0);
                prop_assert!((status[0].spend - expected).abs() < 1e-6, "window {start}: {} != {expected}", status[0].spend);
            }
            Ok(())
        })?;
    }
}
