//! Properties over random groups: no strategy picks an ineligible or full deployment, none
//! reports no capacity while one fits, and weighted shuffle frequencies follow the weights.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use common::*;
use ferrolite_strategies::{RouteContext, StrategyConfig, StrategyError, StrategyName, Target};
use ferrolite_types::Deployment;
use proptest::prelude::*;

/// (rpm limit, tpm limit, requests used, tokens used, eligible)
type Spec = (Option<u64>, Option<u64>, u64, u64, bool);

#[derive(Debug, Clone)]
struct Case {
    deployments: Vec<Spec>,
    input_tokens: u64,
    seed: u64,
}

fn limit() -> impl Strategy<Value = Option<u64>> {
    prop_oneof![
        Just(None),
        Just(Some(0)),
        (1u64..6).prop_map(Some),
        (100u64..200).prop_map(Some)
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        proptest::collection::vec(
            (
                limit(),
                limit(),
                0u64..6,
                0u64..150,
                proptest::bool::weighted(0.8),
            ),
            1..8,
        ),
        0u64..60,
        any::<u64>(),
    )
        .prop_map(|(deployments, input_tokens, seed)| Case {
            deployments,
            input_tokens,
            seed,
        })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    #[test]
    fn no_strategy_picks_an_ineligible_or_full_deployment_nor_gives_up_while_one_fits(case in case()) {
      for name in StrategyName::all() {
        let deployments: Vec<Deployment> = case
            .deployments
            .iter()
            .enumerate()
            .map(|(i, (rpm, tpm, _, _, _))| Deployment {
                rpm: *rpm,
                tpm: *tpm,
                // Half declare a weight: shuffle must still use the others when those are full.
                weight: (i % 2 == 0).then_some(1.0 + i as f64),
                ..deployment(&format!("d{i}"))
            })
            .collect();
        let config = StrategyConfig { seed: Some(case.seed), ..Default::default() };
        let s = runtime().block_on(setup_with(deployments, name, config, ferrolite_cache::Window::MINUTE_SLIDING));
        for (position, (_, _, requests, tokens, _)) in case.deployments.iter().enumerate() {
            let target = &s.targets[position];
            for _ in 0..*requests {
                s.count_request(target);
            }
            s.record_tokens(target, *tokens as i64);
        }
        let eligible: Vec<&Target> =
            s.targets.iter().zip(&case.deployments).filter(|(_, d)| d.4).map(|(t, _)| t).collect();
        let ctx = RouteContext { input_tokens: case.input_tokens, ..RouteContext::new(GROUP) };
        // The model: what fits, from the raw numbers.
        let fits = |t: &Target| {
            let (rpm, tpm, requests, tokens, _) = case.deployments[t.ix.index()];
            rpm.is_none_or(|l| l > 0 && requests < l) && tpm.is_none_or(|l| l > 0 && tokens + case.input_tokens <= l)
        };
        for _ in 0..5 {
            match s.pick_from(&ctx, &eligible) {
                Ok(t) => {
                    prop_assert!(eligible.iter().any(|e| e.ix == t.ix), "{name} picked an ineligible deployment");
                    prop_assert!(fits(t), "{name} picked {} over a limit", t.id);
                }
                Err(StrategyError::NoCapacity(no)) => {
                    prop_assert!(!eligible.iter().any(|t| fits(t)), "{name} gave up while one fits");
                    prop_assert_eq!(no.deployments.len(), eligible.len());
                }
                Err(other) => prop_assert!(false, "{name}: {other:?}"),
            }
        }
      }
    }

    #[test]
    fn weighted_shuffle_frequencies_converge_to_the_weights(
        weights in proptest::collection::vec(1u32..10, 1..5),
        seed in any::<u64>(),
    ) {
        let deployments: Vec<Deployment> = weights
            .iter()
            .enumerate()
            .map(|(i, w)| Deployment { weight: Some(f64::from(*w)), ..deployment(&format!("d{i}")) })
            .collect();
        let config = StrategyConfig { seed: Some(seed), ..Default::default() };
        let s = runtime().block_on(setup_with(deployments, StrategyName::SimpleShuffle, config, ferrolite_cache::Window::MINUTE_SLIDING));
        let n = 4_000;
        let h = s.histogram(&RouteContext::new(GROUP), n);
        let total: u32 = weights.iter().sum();
        for (i, w) in weights.iter().enumerate() {
            let expected = f64::from(*w) / f64::from(total);
            let seen = h.get(&format!("d{i}")).copied().unwrap_or(0) as f64 / n as f64;
            // 4,000 draws: the standard deviation of a frequency is at most 0.008; allow 5 of them.
            prop_assert!((seen - expected).abs() < 0.04, "d{i}: {seen} vs {expected} ({h:?})");
        }
    }
}
