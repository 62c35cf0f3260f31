//! Selection scenarios for LiteLLM's strategies (simple-shuffle with `order` and weights,
//! latency-based, usage-based-routing-v2, least-busy and cost-based), one behaviour per test.
//! Where ferrolite deliberately differs from LiteLLM the test name says so.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use std::collections::HashMap;

use common::*;
use ferrolite_strategies::{
    CallOutcome, RouteContext, RoutingStrategyArgs, StrategyConfig, StrategyError, StrategyName,
};
use ferrolite_types::{DeploymentId, ErrorClass, Usage};

// ---- simple-shuffle (LiteLLM's `simple_shuffle.py`) -----------------------------------------

#[tokio::test]
async fn s01_shuffle_never_picks_a_deployment_without_the_declared_weight() {
    let s = setup(
        vec![
            deployment("A"),
            ferrolite_types::Deployment {
                weight: Some(1.0),
                ..deployment("B")
            },
            ferrolite_types::Deployment {
                weight: Some(99.0),
                ..deployment("C")
            },
        ],
        StrategyName::SimpleShuffle,
    )
    .await;
    let h = s.histogram(&RouteContext::new(GROUP), 2000);
    assert_eq!(h.get("A"), None);
    assert!(h["C"] > 2 * h.get("B").copied().unwrap_or(0), "{h:?}");
}

#[tokio::test]
async fn s02_shuffle_is_uniform_without_weights() {
    let s = setup(
        vec![deployment("A"), deployment("B"), deployment("C")],
        StrategyName::SimpleShuffle,
    )
    .await;
    let h = s.histogram(&RouteContext::new(GROUP), 3000);
    // 1000 expected each; 3 standard deviations is about 78.
    for id in ["A", "B", "C"] {
        assert!((900..=1100).contains(&h[id]), "{h:?}");
    }
}

#[tokio::test]
async fn s03_shuffle_weighs_by_rpm_when_no_weight_is_declared() {
    let s = setup(
        vec![
            ferrolite_types::Deployment {
                rpm: Some(900),
                ..deployment("A")
            },
            ferrolite_types::Deployment {
                rpm: Some(10),
                ..deployment("B")
            },
        ],
        StrategyName::SimpleShuffle,
    )
    .await;
    let h = s.histogram(&RouteContext::new(GROUP), 9100);
    // P(B) = 10/910: 100 expected, sd ~10.
    let b = h.get("B").copied().unwrap_or(0);
    assert!((65..=135).contains(&b), "{h:?}");
}

#[tokio::test]
async fn s07_request_scoped_weights_override_config_weights_and_missing_ids_weigh_zero() {
    let s = setup(
        vec![
            ferrolite_types::Deployment {
                weight: Some(1.0),
                ..deployment("A")
            },
            ferrolite_types::Deployment {
                weight: Some(1.0),
                ..deployment("B")
            },
        ],
        StrategyName::SimpleShuffle,
    )
    .await;
    let weights: HashMap<DeploymentId, f64> = [(DeploymentId::new("B"), 5.0)].into();
    let ctx = RouteContext {
        weights: Some(&weights),
        ..RouteContext::new(GROUP)
    };
    let h = s.histogram(&ctx, 500);
    assert_eq!(h.get("B"), Some(&500));
}

#[tokio::test]
async fn invalid_request_weights_are_a_typed_error() {
    let s = setup(vec![deployment("A")], StrategyName::SimpleShuffle).await;
    let weights: HashMap<DeploymentId, f64> = [(DeploymentId::new("A"), f64::NAN)].into();
    let ctx = RouteContext {
        weights: Some(&weights),
        ..RouteContext::new(GROUP)
    };
    let eligible = s.eligible();
    assert!(matches!(
        s.pick_from(&ctx, &eligible),
        Err(StrategyError::InvalidRequest {
            field: "weights",
            ..
        })
    ));
}

#[tokio::test]
async fn ferrolite_difference_shuffle_skips_a_deployment_at_its_rpm_limit() {
    let s = setup(
        vec![
            ferrolite_types::Deployment {
                rpm: Some(2),
                ..deployment("A")
            },
            ferrolite_types::Deployment {
                rpm: Some(1000),
                ..deployment("B")
            },
        ],
        StrategyName::SimpleShuffle,
    )
    .await;
    s.count_request(s.target("A"));
    s.count_request(s.target("A"));
    let h = s.histogram(&RouteContext::new(GROUP), 200);
    assert_eq!(
        h.get("A"),
        None,
        "LiteLLM would still pick A ~0.2% of the time"
    );
}

// ---- latency-based (LiteLLM's `lowest_latency.py`) ------------------------------------------

fn done(latency: f64, completion_tokens: Option<u64>, ttft: Option<f64>) -> CallOutcome {
    CallOutcome {
        latency: secs(latency),
        time_to_first_token: ttft.map(secs),
        usage: completion_tokens.map(|c| Usage::new(10, c)),
    }
}

#[tokio::test]
async fn s81_latency_picks_the_faster_deployment() {
    let s = setup(
        vec![deployment("1234"), deployment("5678")],
        StrategyName::LatencyBased,
    )
    .await;
    let ctx = RouteContext::new(GROUP);
    s.succeed(s.target("1234"), &done(3.0, None, None));
    s.succeed(s.target("5678"), &done(2.0, None, None));
    assert_eq!(s.histogram(&ctx, 50).get("5678"), Some(&50));
}

#[tokio::test]
async fn s83_latency_ranks_streams_by_time_to_first_token_and_calls_by_time_per_token() {
    let s = setup(
        vec![deployment("dep1"), deployment("dep2")],
        StrategyName::LatencyBased,
    )
    .await;
    let stream = RouteContext {
        stream: true,
        ..RouteContext::new(GROUP)
    };
    s.succeed(s.target("dep1"), &done(4.0, Some(50), Some(1.0))); // 0.08 s/token
    s.succeed(s.target("dep2"), &done(3.0, Some(50), Some(3.0))); // 0.06 s/token
    assert_eq!(s.pick_id(&RouteContext::new(GROUP)), "dep2");
    assert_eq!(s.pick_id(&stream), "dep1");
}

#[tokio::test]
async fn s84_latency_skips_deployments_at_their_rpm_limit() {
    for (rpm_1234, expected) in [(1u64, None), (5, Some("1234"))] {
        let s = setup(
            vec![
                ferrolite_types::Deployment {
                    rpm: Some(rpm_1234),
                    ..deployment("1234")
                },
                ferrolite_types::Deployment {
                    rpm: Some(3),
                    ..deployment("5678")
                },
            ],
            StrategyName::LatencyBased,
        )
        .await;
        for id in ["1234", "5678"] {
            for _ in 0..3 {
                s.count_request(s.target(id));
            }
        }
        let eligible = s.eligible();
        let picked = s
            .pick_from(&RouteContext::new(GROUP), &eligible)
            .ok()
            .map(|t| t.id.to_string());
        assert_eq!(picked.as_deref(), expected, "rpm limit {rpm_1234}");
    }
}

#[tokio::test]
async fn s85_latency_samples_expire_after_the_configured_ttl() {
    let config = StrategyConfig {
        args: RoutingStrategyArgs {
            ttl: Some(3.0),
            ..Default::default()
        },
        ..Default::default()
    };
    let s = setup_with(
        vec![deployment("slow"), deployment("fast")],
        StrategyName::LatencyBased,
        config,
        ferrolite_cache::Window::MINUTE_SLIDING,
    )
    .await;
    let ctx = RouteContext::new(GROUP);
    s.succeed(s.target("slow"), &done(5.0, None, None));
    s.succeed(s.target("fast"), &done(1.0, None, None));
    assert_eq!(s.histogram(&ctx, 20).get("fast"), Some(&20));
    s.clock.advance_ms(3_000);
    // Both forgotten: both count as unexplored (0 s) and share the traffic again.
    let h = s.histogram(&ctx, 200);
    assert!(h.get("slow").copied().unwrap_or(0) > 50, "{h:?}");
}

#[tokio::test]
async fn s87_timeouts_are_penalised_so_traffic_moves_to_the_fast_deployment() {
    let s = setup(
        vec![deployment("slow"), deployment("fast")],
        StrategyName::LatencyBased,
    )
    .await;
    let ctx = RouteContext::new(GROUP);
    s.succeed(s.target("slow"), &done(0.5, None, None));
    s.succeed(s.target("fast"), &done(0.9, None, None));
    for _ in 0..3 {
        s.fail(s.target("slow"), &ErrorClass::Timeout);
    }
    assert_eq!(s.histogram(&ctx, 10).get("fast"), Some(&10));
}

#[tokio::test]
async fn s88_unexplored_deployments_share_the_first_picks() {
    let s = setup(
        vec![
            deployment("a"),
            deployment("b"),
            deployment("c"),
            deployment("d"),
        ],
        StrategyName::LatencyBased,
    )
    .await;
    assert!(s.histogram(&RouteContext::new(GROUP), 10).len() > 1);
}

#[tokio::test]
async fn latency_buffer_spreads_traffic_over_near_equal_deployments() {
    let config = StrategyConfig {
        args: RoutingStrategyArgs {
            lowest_latency_buffer: Some(0.5),
            ..Default::default()
        },
        ..Default::default()
    };
    let s = setup_with(
        vec![deployment("a"), deployment("b"), deployment("c")],
        StrategyName::LatencyBased,
        config,
        ferrolite_cache::Window::MINUTE_SLIDING,
    )
    .await;
    let ctx = RouteContext::new(GROUP);
    for (id, latency) in [("a", 1.0), ("b", 1.4), ("c", 1.6)] {
        s.succeed(s.target(id), &done(latency, None, None));
    }
    let h = s.histogram(&ctx, 400);
    assert!(h["a"] > 100 && h["b"] > 100, "{h:?}");
    assert_eq!(h.get("c"), None, "1.6 > 1.0 * 1.5");
}

#[tokio::test]
async fn s89_ferrolite_zero_limits_block_and_large_or_unset_limits_do_not() {
    for name in StrategyName::all() {
        let s = setup(
            vec![
                ferrolite_types::Deployment {
                    tpm: Some(0),
                    ..deployment("zero-tpm")
                },
                ferrolite_types::Deployment {
                    rpm: Some(0),
                    ..deployment("zero-rpm")
                },
            ],
            name,
        )
        .await;
        let eligible = s.eligible();
        assert!(
            matches!(
                s.pick_from(&RouteContext::new(GROUP), &eligible),
                Err(StrategyError::NoCapacity(_))
            ),
            "{name}"
        );
        let s = setup(
            vec![
                ferrolite_types::Deployment {
                    rpm: Some(1_000_000),
                    ..deployment("big")
                },
                deployment("unset"),
            ],
            name,
        )
        .await;
        assert_eq!(
            s.histogram(&RouteContext::new(GROUP), 200)
                .values()
                .sum::<usize>(),
            200,
            "{name}"
        );
    }
}

// ---- usage-based (LiteLLM's `lowest_tpm_rpm_v2.py`) -----------------------------------------

#[tokio::test]
async fn s91_usage_based_picks_the_deployment_with_fewer_tokens() {
    for name in [StrategyName::UsageBased, StrategyName::UsageBasedV2] {
        let s = setup(vec![deployment("1234"), deployment("5678")], name).await;
        s.record_tokens(s.target("1234"), 50);
        s.record_tokens(s.target("5678"), 20);
        assert_eq!(
            s.histogram(&RouteContext::new(GROUP), 20).get("5678"),
            Some(&20),
            "{name}"
        );
    }
}

#[tokio::test]
async fn s92_a_request_that_would_pass_the_tpm_limit_gets_no_capacity_listing_usage() {
    let s = setup(
        vec![ferrolite_types::Deployment {
            tpm: Some(1440),
            ..deployment("only")
        }],
        StrategyName::UsageBasedV2,
    )
    .await;
    s.record_tokens(&s.targets[0], 1439);
    let eligible = s.eligible();
    let ctx = RouteContext {
        input_tokens: 2,
        ..RouteContext::new(GROUP)
    };
    let err = s.pick_from(&ctx, &eligible).unwrap_err();
    let StrategyError::NoCapacity(no) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(no.deployments[0].current_tpm, 1439.0);
    assert_eq!(no.deployments[0].tpm_limit, Some(1440));
    assert!(
        err.to_string()
            .starts_with("No deployments available for selected model. Passed model=gpt-4o"),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("only: {current_tpm: 1439, tpm_limit: 1440"),
        "{err}"
    );
    // One token fits exactly.
    let fits = RouteContext {
        input_tokens: 1,
        ..RouteContext::new(GROUP)
    };
    assert_eq!(s.pick_from(&fits, &eligible).unwrap().id.as_str(), "only");
}

#[tokio::test]
async fn s94_tpm_zero_is_always_no_capacity() {
    let s = setup(
        vec![ferrolite_types::Deployment {
            tpm: Some(0),
            ..deployment("only")
        }],
        StrategyName::UsageBasedV2,
    )
    .await;
    let eligible = s.eligible();
    assert!(matches!(
        s.pick_from(&RouteContext::new(GROUP), &eligible),
        Err(StrategyError::NoCapacity(_))
    ));
}

#[tokio::test]
async fn ferrolite_difference_a_deployment_takes_exactly_rpm_requests_not_rpm_minus_one() {
    let s = setup(
        vec![ferrolite_types::Deployment {
            rpm: Some(50),
            ..deployment("only")
        }],
        StrategyName::UsageBased,
    )
    .await;
    let ctx = RouteContext::new(GROUP);
    let eligible = s.eligible();
    let mut admitted = 0;
    while let Ok(t) = s.pick_from(&ctx, &eligible) {
        drop(s.admit(t, &ctx).await.unwrap());
        admitted += 1;
        assert!(admitted <= 50);
    }
    assert_eq!(admitted, 50, "LiteLLM admits 49");
}

#[tokio::test]
async fn ferrolite_difference_sliding_windows_allow_no_burst_at_the_minute_boundary() {
    let s = setup(
        vec![ferrolite_types::Deployment {
            rpm: Some(10),
            ..deployment("only")
        }],
        StrategyName::UsageBased,
    )
    .await;
    let ctx = RouteContext::new(GROUP);
    let eligible = s.eligible();
    s.clock.set_ms(T0 - 30_000 + 59_000); // 12:00:59 of the minute
    for _ in 0..10 {
        let t = s.pick_from(&ctx, &eligible).unwrap();
        drop(s.admit(t, &ctx).await.unwrap());
    }
    s.clock.advance_ms(1_001); // just past the boundary
    assert!(
        s.pick_from(&ctx, &eligible).is_err(),
        "a fixed window would admit 10 more now"
    );
    s.clock.advance_ms(30_000); // half the previous minute has aged out
    assert!(s.pick_from(&ctx, &eligible).is_ok());
}

// ---- least-busy and cost (LiteLLM's `least_busy.py`, `lowest_cost.py`) ----------------------

#[tokio::test]
async fn s101_least_busy_picks_the_fewest_in_flight() {
    let s = setup(
        vec![deployment("0"), deployment("1"), deployment("2")],
        StrategyName::LeastBusy,
    )
    .await;
    for (id, n) in [("0", 10), ("1", 1), ("2", 50)] {
        s.hold_in_flight(s.target(id), n).await;
    }
    assert_eq!(
        s.histogram(&RouteContext::new(GROUP), 20).get("1"),
        Some(&20)
    );
    // "0" is busy-free but not eligible (the router filtered it): never chosen.
    s.release_in_flight(s.target("0"));
    let eligible = vec![s.target("1"), s.target("2")];
    assert_eq!(
        s.pick_from(&RouteContext::new(GROUP), &eligible)
            .unwrap()
            .id
            .as_str(),
        "1"
    );
}

#[tokio::test]
async fn s102_least_busy_breaks_ties_at_random() {
    let s = setup(
        vec![deployment("a"), deployment("b"), deployment("c")],
        StrategyName::LeastBusy,
    )
    .await;
    let h = s.histogram(&RouteContext::new(GROUP), 600);
    for id in ["a", "b", "c"] {
        assert!(h[id] > 60, "{h:?}"); // each > 10%
    }
}

#[tokio::test]
async fn s103_in_flight_returns_to_zero_and_never_goes_negative() {
    let s = setup(vec![deployment("a")], StrategyName::LeastBusy).await;
    let ctx = RouteContext::new(GROUP);
    let a = s.target("a");
    let permit = s.admit(a, &ctx).await.unwrap();
    assert_eq!(s.usage.view().in_flight(a.ix), 1);
    drop(permit); // the call ended, or its future was dropped by a timeout
    assert_eq!(s.usage.view().in_flight(a.ix), 0);
    // A call whose in-flight counter expired (IN_FLIGHT_TTL) while it ran ends without a
    // count to take back: the end must not push the count below zero.
    let stray = s.admit(a, &ctx).await.unwrap();
    s.clock.advance_ms(2 * 3_600_000);
    assert_eq!(s.usage.view().in_flight(a.ix), 0);
    drop(stray);
    let current = s.admit(a, &ctx).await.unwrap();
    assert_eq!(
        s.usage.view().in_flight(a.ix),
        1,
        "the stray end did not hide this call"
    );
    drop(current);
}

/// Guards that release on drop (review of 79b0912: a dropped attempt leaked its in-flight
/// count for up to an hour).
#[tokio::test]
async fn a_call_dropped_mid_flight_gives_its_in_flight_slot_back() {
    let s = setup(vec![deployment("a")], StrategyName::LeastBusy).await;
    let a = s.target("a").clone();
    let usage = std::sync::Arc::clone(&s.usage);
    let call = async move {
        let _permit = usage.admit(&a, 0).await.unwrap();
        std::future::pending::<()>().await; // a backend that never answers
    };
    let timed_out = tokio::time::timeout(std::time::Duration::from_millis(20), call).await;
    assert!(timed_out.is_err());
    assert_eq!(s.usage.view().in_flight(s.target("a").ix), 0);
}

#[tokio::test]
async fn admission_holds_input_and_max_tokens_and_settles_to_the_actual_count() {
    let s = setup(
        vec![ferrolite_types::Deployment {
            tpm: Some(1_000),
            ..deployment("a")
        }],
        StrategyName::UsageBasedV2,
    )
    .await;
    let a = s.target("a");
    let ctx = RouteContext {
        input_tokens: 100,
        max_tokens: Some(500),
        ..RouteContext::new(GROUP)
    };
    let mut first = s.admit(a, &ctx).await.unwrap();
    assert_eq!(s.usage.view().tpm(a.ix), 600.0);
    // A second call of up to 600 tokens does not fit next to the first one's estimate.
    assert!(matches!(
        s.admit(a, &ctx).await,
        Err(StrategyError::RateLimited {
            metric: "tpm",
            limit: 1_000,
            ..
        })
    ));
    assert!(s.pick_from(&ctx, &s.eligible()).is_err());
    // The first call used 150 tokens: the estimate is settled, and there is room again.
    first.settle_tokens(150).unwrap();
    assert_eq!(s.usage.view().tpm(a.ix), 150.0);
    let second = s.admit(a, &ctx).await.unwrap();
    assert_eq!(s.usage.view().tpm(a.ix), 750.0);
    // The second call does not go ahead (its budget reservation failed): everything returns.
    second.undo().unwrap();
    assert_eq!(s.usage.view().tpm(a.ix), 150.0);
    assert_eq!(s.usage.view().rpm(a.ix), 1.0);
    assert_eq!(s.usage.view().in_flight(a.ix), 1);
    drop(first);
}

#[tokio::test]
async fn s104_cost_routing_picks_the_cheapest() {
    let priced = |id: &str, input: f64, output: f64| ferrolite_types::Deployment {
        input_cost_per_token: Some(input),
        output_cost_per_token: Some(output),
        ..deployment(id)
    };
    let s = setup(
        vec![
            priced("chatgpt-v-experimental", 3e-5, 3e-5),
            priced("chatgpt-v-1", 1e-9, 1e-8),
            priced("chatgpt-v-5", 10.0, 12.0),
            deployment("unpriced"),
        ],
        StrategyName::CostBased,
    )
    .await;
    assert_eq!(
        s.histogram(&RouteContext::new(GROUP), 50)
            .get("chatgpt-v-1"),
        Some(&50)
    );
}

#[tokio::test]
async fn cost_routing_moves_on_when_the_cheapest_is_full() {
    let s = setup(
        vec![
            ferrolite_types::Deployment {
                input_cost_per_token: Some(1e-9),
                rpm: Some(1),
                ..deployment("cheap")
            },
            ferrolite_types::Deployment {
                input_cost_per_token: Some(1e-6),
                ..deployment("dear")
            },
        ],
        StrategyName::CostBased,
    )
    .await;
    let ctx = RouteContext::new(GROUP);
    let first = s.pick(&ctx);
    assert_eq!(first.id.as_str(), "cheap");
    drop(s.admit(first, &ctx).await.unwrap());
    assert_eq!(s.pick_id(&ctx), "dear");
}

// ---- p2c-ewma -------------------------------------------------------------------------------

#[tokio::test]
async fn p2c_prefers_the_less_loaded_of_two() {
    let s = setup(
        vec![deployment("fast"), deployment("slow")],
        StrategyName::P2cEwma,
    )
    .await;
    let ctx = RouteContext::new(GROUP);
    s.succeed(s.target("fast"), &done(0.1, None, None));
    s.succeed(s.target("slow"), &done(2.0, None, None));
    assert_eq!(s.histogram(&ctx, 20).get("fast"), Some(&20));
    // Enough calls in flight on the fast one make it the more loaded.
    s.hold_in_flight(s.target("fast"), 30).await;
    assert_eq!(s.pick_id(&ctx), "slow");
}

#[tokio::test]
async fn p2c_spreads_load_over_a_large_group_of_equals() {
    let deployments = (0..100).map(|i| deployment(&format!("d{i}"))).collect();
    let s = setup(deployments, StrategyName::P2cEwma).await;
    let h = s.histogram(&RouteContext::new(GROUP), 2000);
    assert!(h.len() > 90, "only {} of 100 used", h.len());
}

#[tokio::test]
async fn every_strategy_reports_no_capacity_on_an_empty_list() {
    for name in StrategyName::all() {
        let s = setup(vec![deployment("a")], name).await;
        let err = s.pick_from(&RouteContext::new(GROUP), &[]).unwrap_err();
        assert!(
            matches!(&err, StrategyError::NoCapacity(n) if n.deployments.is_empty()),
            "{name}: {err:?}"
        );
        assert_eq!(s.strategy.name(), name);
    }
}

#[tokio::test]
async fn shuffle_falls_back_to_a_uniform_pick_when_every_weighted_deployment_is_full() {
    // LiteLLM: "no weight set qualifies -> random.choice(healthy)"; here the weighted one is full.
    let s = setup(
        vec![
            ferrolite_types::Deployment {
                weight: Some(5.0),
                rpm: Some(1),
                ..deployment("weighted")
            },
            deployment("plain"),
        ],
        StrategyName::SimpleShuffle,
    )
    .await;
    s.count_request(s.target("weighted"));
    assert_eq!(s.pick_id(&RouteContext::new(GROUP)), "plain");
}

#[tokio::test]
async fn a_refused_admission_leaves_no_call_in_flight() {
    let s = setup(
        vec![ferrolite_types::Deployment {
            rpm: Some(1),
            ..deployment("a")
        }],
        StrategyName::LeastBusy,
    )
    .await;
    let a = s.target("a");
    let ctx = RouteContext::new(GROUP);
    let first = s.admit(a, &ctx).await.unwrap();
    assert!(matches!(
        s.admit(a, &ctx).await,
        Err(StrategyError::RateLimited { metric: "rpm", .. })
    ));
    assert_eq!(s.usage.view().in_flight(a.ix), 1);
    assert_eq!(s.usage.view().rpm(a.ix), 1.0);
    drop(first);
    assert_eq!(s.usage.view().in_flight(a.ix), 0);
}

// ---- scores, for explaining a pick -------------------------------------------------------

#[tokio::test]
async fn each_ranking_strategy_reports_the_score_it_picks_by_and_shuffle_reports_none() {
    let priced = |id: &str, cost: f64| ferrolite_types::Deployment {
        input_cost_per_token: Some(cost),
        output_cost_per_token: Some(cost),
        ..deployment(id)
    };
    let ctx = RouteContext::new(GROUP);
    let score = |s: &Setup, id: &str| {
        s.strategy
            .score(&ctx, s.target(id), &s.usage.view())
            .map(|score| (score.name, score.value, score.lower_is_better))
    };

    let s = setup(
        vec![deployment("a"), deployment("b")],
        StrategyName::LeastBusy,
    )
    .await;
    s.hold_in_flight(s.target("a"), 2).await;
    assert_eq!(score(&s, "a"), Some(("in_flight", 2.0, true)));
    assert_eq!(score(&s, "b"), Some(("in_flight", 0.0, true)));

    let s = setup(
        vec![priced("a", 0.5), priced("b", 1.0)],
        StrategyName::CostBased,
    )
    .await;
    assert_eq!(score(&s, "a"), Some(("cost_per_token", 1.0, true)));

    let s = setup(
        vec![deployment("a"), deployment("b")],
        StrategyName::UsageBasedV2,
    )
    .await;
    s.record_tokens(s.target("a"), 300);
    assert_eq!(score(&s, "a"), Some(("tpm", 300.0, true)));

    let s = setup(
        vec![deployment("a"), deployment("b")],
        StrategyName::LatencyBased,
    )
    .await;
    s.succeed(s.target("a"), &done(2.0, None, None));
    assert_eq!(score(&s, "a"), Some(("latency", 2.0, true)));
    let stream = RouteContext {
        stream: true,
        ..RouteContext::new(GROUP)
    };
    let ttft = s.strategy.score(&stream, s.target("b"), &s.usage.view());
    assert_eq!(ttft.map(|t| t.name), Some("ttft"));

    let s = setup(
        vec![deployment("a"), deployment("b")],
        StrategyName::P2cEwma,
    )
    .await;
    assert_eq!(score(&s, "a").map(|(name, ..)| name), Some("load"));

    let s = setup(
        vec![deployment("a"), deployment("b")],
        StrategyName::SimpleShuffle,
    )
    .await;
    assert_eq!(score(&s, "a"), None);
}
