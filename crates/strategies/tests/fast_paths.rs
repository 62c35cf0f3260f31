//! The fast paths over large pools (more than the few dozen members a pick scans at once)
//! decide as the definitions do: the same eligible set, the cheapest / least busy / fewest
//! tokens among the candidates that fit, and simple-shuffle's weighted distribution.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use std::collections::HashMap;

use common::*;
use ferrolite_strategies::{RouteContext, StrategyConfig, StrategyError, StrategyName, Target};
use ferrolite_types::Deployment;
use proptest::prelude::*;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// One deployment of a case: rpm limit, requests used, in flight, tokens used, price level,
/// weight, eligible.
type Spec = (Option<u64>, u64, u64, u64, u8, Option<u8>, bool);

fn spec() -> impl Strategy<Value = Spec> {
    (
        prop_oneof![Just(None), Just(Some(0)), (1u64..4).prop_map(Some)],
        0u64..4,
        0u64..3,
        prop_oneof![Just(0u64), 1u64..500],
        0u8..4,
        prop_oneof![Just(None), (0u8..5).prop_map(Some)],
        proptest::bool::weighted(0.8),
    )
}

/// A group of 33 to 90 deployments (past the size scanned at once) and a seed.
fn case() -> impl Strategy<Value = (Vec<Spec>, u64)> {
    (proptest::collection::vec(spec(), 33..90), any::<u64>())
}

fn group(specs: &[Spec]) -> Vec<Deployment> {
    specs
        .iter()
        .enumerate()
        .map(|(i, (rpm, _, _, _, price, weight, _))| Deployment {
            rpm: *rpm,
            weight: weight.map(f64::from),
            input_cost_per_token: Some(1e-6 * f64::from(*price)),
            ..deployment(&format!("d{i}"))
        })
        .collect()
}

/// Sets up `name` over the case's group, with its usage (in-flight calls count a request each
/// too, so the requests used are at least the calls in flight).
async fn prepared(specs: &[Spec], name: StrategyName, seed: u64) -> Setup {
    let config = StrategyConfig {
        seed: Some(seed),
        ..Default::default()
    };
    let s = setup_with(
        group(specs),
        name,
        config,
        ferrolite_cache::Window::MINUTE_SLIDING,
    )
    .await;
    for (i, (rpm, requests, in_flight, tokens, ..)) in specs.iter().enumerate() {
        let target = s.targets[i].clone();
        // Admission checks the rpm limit: hold no more calls than it lets in.
        let held = rpm.map_or(*in_flight, |limit| (*in_flight).min(limit));
        s.hold_in_flight(&target, held as usize).await;
        for _ in held..*requests {
            s.count_request(&target);
        }
        s.record_tokens(&target, *tokens as i64);
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn fast_paths_pick_what_the_definitions_allow((specs, seed) in case()) {
      for name in StrategyName::all() {
        let rt = runtime();
        let s = rt.block_on(prepared(&specs, name, seed));
        let eligible: Vec<&Target> =
            s.targets.iter().zip(&specs).filter(|(_, d)| d.6).map(|(t, _)| t).collect();
        let ctx = RouteContext::new(GROUP);
        let view = s.usage.view();
        let fitting: Vec<&Target> =
            eligible.iter().copied().filter(|t| view.fits(t, 0)).collect();
        let least = |score: &dyn Fn(&Target) -> f64| {
            fitting.iter().map(|t| score(t)).fold(f64::INFINITY, f64::min)
        };
        let in_flight = |t: &Target| view.in_flight(t.ix) as f64;
        let tokens = |t: &Target| view.tpm(t.ix);
        let cost = |t: &Target| t.cost_per_token;
        for _ in 0..5 {
            match s.pick_from(&ctx, &eligible) {
                Ok(t) => {
                    prop_assert!(eligible.iter().any(|e| e.ix == t.ix), "{name} picked an ineligible deployment");
                    prop_assert!(view.fits(t, 0), "{name} picked {} over a limit", t.id);
                    match name {
                        StrategyName::CostBased => prop_assert_eq!(cost(t), least(&cost), "{} not the cheapest", t.id),
                        StrategyName::LeastBusy => prop_assert_eq!(in_flight(t), least(&in_flight), "{} not the least busy", t.id),
                        StrategyName::UsageBased | StrategyName::UsageBasedV2 => {
                            prop_assert_eq!(tokens(t), least(&tokens), "{} not the fewest tokens", t.id)
                        }
                        _ => {}
                    }
                }
                Err(StrategyError::NoCapacity(no)) => {
                    prop_assert!(fitting.is_empty(), "{name} gave up while one fits");
                    prop_assert_eq!(no.deployments.len(), eligible.len());
                }
                Err(other) => prop_assert!(false, "{name}: {other:?}"),
            }
        }
      }
    }
}

/// Chi-square of `counts` against `expected` shares (each > 0) of `n` draws.
fn chi_square(counts: &HashMap<String, usize>, expected: &HashMap<String, f64>, n: usize) -> f64 {
    let total: f64 = expected.values().sum();
    expected
        .iter()
        .map(|(id, share)| {
            let e = n as f64 * share / total;
            let o = counts.get(id).copied().unwrap_or(0) as f64;
            (o - e).powi(2) / e
        })
        .sum()
}

/// Picks `n` times among `eligible` and counts each id.
fn draws(s: &Setup, eligible: &[&Target], n: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let t = s.pick_from(&RouteContext::new(GROUP), eligible).unwrap();
        *counts.entry(t.id.to_string()).or_insert(0) += 1;
    }
    counts
}

#[tokio::test]
async fn shuffle_over_a_large_group_draws_by_weight_among_the_candidates_with_room() {
    // 60 deployments weighing 1..=6; every 5th left out by the filters, every 7th full.
    let deployments: Vec<Deployment> = (0..60)
        .map(|i| Deployment {
            weight: Some(1.0 + (i % 6) as f64),
            rpm: (i % 7 == 0).then_some(1),
            ..deployment(&format!("d{i}"))
        })
        .collect();
    let s = setup(deployments, StrategyName::SimpleShuffle).await;
    for t in s.targets.iter().filter(|t| t.rpm == Some(1)) {
        s.count_request(t);
    }
    let eligible: Vec<&Target> = s
        .targets
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 5 != 0)
        .map(|(_, t)| t)
        .collect();
    let expected: HashMap<String, f64> = eligible
        .iter()
        .filter(|t| t.rpm != Some(1))
        .map(|t| (t.id.to_string(), t.weight.unwrap()))
        .collect();
    let n = 40_000;
    let counts = draws(&s, &eligible, n);
    assert!(
        counts.keys().all(|id| expected.contains_key(id)),
        "a left-out or full deployment was picked: {counts:?}"
    );
    // 35 categories (34 degrees of freedom): p = 1e-4 at about 70.
    let chi = chi_square(&counts, &expected, n);
    assert!(chi < 70.0, "chi-square {chi} over {} ids", expected.len());
}

#[tokio::test]
async fn shuffle_over_a_large_group_moves_to_rpm_when_every_weighted_deployment_is_full() {
    // The 10 deployments with a `weight` are full; the other 40 declare rpm 10..50 and have
    // room: rpm decides, as the first metric with a positive weight among those with room.
    let deployments: Vec<Deployment> = (0..50)
        .map(|i| {
            if i < 10 {
                Deployment {
                    weight: Some(5.0),
                    rpm: Some(1),
                    ..deployment(&format!("d{i}"))
                }
            } else {
                Deployment {
                    rpm: Some(10 * (1 + i % 5)),
                    ..deployment(&format!("d{i}"))
                }
            }
        })
        .collect();
    let s = setup(deployments, StrategyName::SimpleShuffle).await;
    for t in s.targets.iter().take(10) {
        s.count_request(t);
    }
    let eligible = s.eligible();
    let expected: HashMap<String, f64> = s
        .targets
        .iter()
        .skip(10)
        .map(|t| (t.id.to_string(), t.rpm.unwrap() as f64))
        .collect();
    let n = 30_000;
    let counts = draws(&s, &eligible, n);
    assert!(
        counts.keys().all(|id| expected.contains_key(id)),
        "{counts:?}"
    );
    // 40 categories (39 degrees of freedom): p = 1e-4 at about 77.
    let chi = chi_square(&counts, &expected, n);
    assert!(chi < 77.0, "chi-square {chi}");
}

#[tokio::test]
async fn least_busy_over_a_large_group_is_uniform_among_the_idle() {
    // 60 deployments, every third idle, the others with one or two calls in flight.
    let s = setup(
        (0..60).map(|i| deployment(&format!("d{i}"))).collect(),
        StrategyName::LeastBusy,
    )
    .await;
    let targets = s.targets.clone();
    for (i, t) in targets.iter().enumerate() {
        s.hold_in_flight(t, i % 3).await;
    }
    let expected: HashMap<String, f64> = targets
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 == 0)
        .map(|(_, t)| (t.id.to_string(), 1.0))
        .collect();
    let eligible = s.eligible();
    let n = 20_000;
    let counts = draws(&s, &eligible, n);
    assert!(
        counts.keys().all(|id| expected.contains_key(id)),
        "{counts:?}"
    );
    // 20 categories (19 degrees of freedom): p = 1e-4 at about 48.
    let chi = chi_square(&counts, &expected, n);
    assert!(chi < 48.0, "chi-square {chi}");
}

#[tokio::test]
async fn cost_based_over_a_large_group_is_uniform_among_the_cheapest_with_room() {
    // Five price levels over 50 deployments; the cheapest level's members are all full but
    // one left out by the filters: the second level decides, uniformly.
    let deployments: Vec<Deployment> = (0..50)
        .map(|i| Deployment {
            input_cost_per_token: Some(1e-6 * (1 + i % 5) as f64),
            rpm: (i % 5 == 0).then_some(1),
            ..deployment(&format!("d{i}"))
        })
        .collect();
    let s = setup(deployments, StrategyName::CostBased).await;
    for t in s.targets.iter().filter(|t| t.rpm == Some(1)) {
        s.count_request(t);
    }
    let eligible: Vec<&Target> = s.targets.iter().filter(|t| t.id.as_str() != "d6").collect();
    let expected: HashMap<String, f64> = eligible
        .iter()
        .filter(|t| (t.cost_per_token - 2e-6).abs() < 1e-12)
        .map(|t| (t.id.to_string(), 1.0))
        .collect();
    assert_eq!(expected.len(), 9);
    let n = 9_000;
    let counts = draws(&s, &eligible, n);
    assert!(
        counts.keys().all(|id| expected.contains_key(id)),
        "{counts:?}"
    );
    // 9 categories (8 degrees of freedom): p = 1e-4 at about 31.
    let chi = chi_square(&counts, &expected, n);
    assert!(chi < 31.0, "chi-square {chi}");
}
