//! Budget scenarios (LiteLLM's `RouterBudgetLimiting`: provider, deployment and tag budgets),
//! windows on a hand-moved clock, reservations.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::sync::Arc;

use ferrolite_budgets::{
    BudgetConfig, BudgetError, BudgetLedger, BudgetsConfig, LEARNED_MIN_SAMPLES, LEARNED_SAMPLES,
    ReservationPolicy, Scope, UNKNOWN_OUTPUT_LIMIT, WindowAlignment,
};
use ferrolite_cache::{CacheConfig, DualCache, ManualClock};
use ferrolite_types::{Deployment, DeploymentIndex, DeploymentIx};

const DAY: u64 = 86_400_000;
/// 2024-01-31T10:00:00Z
const JAN_31_2024: u64 = 1_706_695_200_000;

fn dep(id: &str, model: &str) -> Deployment {
    Deployment {
        id: Some(id.into()),
        ..Deployment::new("group", model)
    }
}

/// A ledger over `deployments`, its clock, and the deployments' indices in order.
async fn ledger(
    config: BudgetsConfig,
    deployments: &[Deployment],
    start_ms: u64,
) -> (BudgetLedger, ManualClock, Vec<DeploymentIx>) {
    let clock = ManualClock::new(start_ms);
    let cache = DualCache::connect_with_clock(CacheConfig::default(), Arc::new(clock.clone()))
        .await
        .unwrap();
    let index = DeploymentIndex::of(deployments).unwrap();
    (
        BudgetLedger::new(cache, &config, &index, deployments).unwrap(),
        clock,
        index.iter().map(|(ix, _)| ix).collect(),
    )
}

fn new_ledger(
    cache: DualCache,
    config: &BudgetsConfig,
    deployments: &[Deployment],
) -> Result<BudgetLedger, BudgetError> {
    BudgetLedger::new(
        cache,
        config,
        &DeploymentIndex::of(deployments).unwrap(),
        deployments,
    )
}

fn providers(entries: &[(&str, f64, &str)]) -> BudgetsConfig {
    BudgetsConfig {
        providers: entries
            .iter()
            .map(|(p, l, d)| (p.to_string(), BudgetConfig::new(*l, d)))
            .collect(),
        ..BudgetsConfig::default()
    }
}

/// The positions of the deployments the budgets allow.
async fn allowed(ledger: &BudgetLedger, d: &[DeploymentIx], tags: &[String]) -> Vec<usize> {
    let check = ledger.check(tags).await.unwrap();
    (0..d.len())
        .filter(|i| ledger.allows(&check, d[*i]))
        .collect()
}

#[tokio::test]
async fn s106_an_exhausted_provider_budget_moves_traffic_to_the_other_provider() {
    let deployments = [dep("oa", "openai/gpt-4o"), dep("az", "azure/gpt-4o")];
    let (ledger, _, d) = ledger(
        providers(&[("openai", 1e-12, "1d"), ("azure", 100.0, "1d")]),
        &deployments,
        JAN_31_2024,
    )
    .await;
    assert_eq!(allowed(&ledger, &d, &[]).await, vec![0, 1]);
    ledger.record(d[0], &[], 0.002).await.unwrap();
    assert_eq!(allowed(&ledger, &d, &[]).await, vec![1]);
}

#[tokio::test]
async fn s107_every_candidate_over_budget_is_one_error_listing_the_scopes() {
    let deployments = [
        dep("a1", "anthropic/claude-3-5-sonnet"),
        dep("a2", "anthropic/claude-3-haiku"),
    ];
    let (ledger, _, d) = ledger(
        providers(&[("anthropic", 1e-12, "1d")]),
        &deployments,
        JAN_31_2024,
    )
    .await;
    ledger.record(d[1], &[], 0.01).await.unwrap();
    let check = ledger.check(&[]).await.unwrap();
    assert!(!ledger.allows(&check, d[0]) && !ledger.allows(&check, d[1]));
    let err = ledger.exceeded_error(&check, &[d[0], d[1]]);
    let text = err.to_string();
    assert!(text.starts_with("No deployments available - crossed budget: Exceeded budget for provider anthropic: 0.01 >= 0.000000000001"), "{text}");
    let BudgetError::Exceeded { exceeded } = err else {
        panic!()
    };
    assert_eq!(
        exceeded.len(),
        1,
        "listed once though two deployments share it"
    );
}

#[tokio::test]
async fn s113_a_deployment_budget_blocks_that_deployment_only() {
    let deployments = [
        Deployment {
            max_budget: Some(1e-12),
            budget_duration: Some("1d".into()),
            ..dep("tiny", "openai/gpt-4o")
        },
        dep("free", "openai/gpt-4o-mini"),
    ];
    let (ledger, _, d) = ledger(BudgetsConfig::default(), &deployments, JAN_31_2024).await;
    ledger.record(d[0], &[], 0.5).await.unwrap();
    let check = ledger.check(&[]).await.unwrap();
    assert!(!ledger.allows(&check, d[0]));
    assert!(ledger.allows(&check, d[1]));
    assert!(
        ledger
            .exceeded_error(&check, &[d[0]])
            .to_string()
            .contains("Exceeded budget for deployment tiny: 0.5 >= ")
    );
}

#[tokio::test]
async fn tag_budgets_apply_to_requests_carrying_the_tag() {
    let config = BudgetsConfig {
        tags: [("team-a".to_string(), BudgetConfig::new(1.0, "1d"))].into(),
        ..BudgetsConfig::default()
    };
    let (ledger, _, d) = ledger(config, &[dep("d", "openai/gpt-4o")], JAN_31_2024).await;
    let team_a = vec!["team-a".to_string()];
    ledger.record(d[0], &team_a, 1.0).await.unwrap();
    assert_eq!(allowed(&ledger, &d, &team_a).await, Vec::<usize>::new());
    assert_eq!(allowed(&ledger, &d, &["team-b".to_string()]).await, vec![0]);
    assert_eq!(allowed(&ledger, &d, &[]).await, vec![0]);
}

#[tokio::test]
async fn a_budget_without_a_limit_or_window_is_a_config_error() {
    let cache = DualCache::connect(CacheConfig::default()).await.unwrap();
    let deployments = [dep("d", "openai/gpt-4o")];
    let no_limit = BudgetsConfig {
        providers: [(
            "openai".to_string(),
            BudgetConfig {
                max_budget: None,
                budget_duration: Some("1d".into()),
            },
        )]
        .into(),
        ..BudgetsConfig::default()
    };
    assert_eq!(
        new_ledger(cache.clone(), &no_limit, &deployments).unwrap_err(),
        BudgetError::MissingLimit {
            scope: Scope::Provider("openai".into())
        }
    );
    let no_window = providers(&[("openai", 5.0, "")]);
    assert!(matches!(
        new_ledger(cache.clone(), &no_window, &deployments),
        Err(BudgetError::InvalidDuration { .. })
    ));
    let negative = providers(&[("openai", -1.0, "1d")]);
    assert!(matches!(
        new_ledger(cache.clone(), &negative, &deployments),
        Err(BudgetError::InvalidLimit { .. })
    ));
    let half = [Deployment {
        max_budget: Some(3.0),
        ..dep("d", "openai/gpt-4o")
    }];
    assert!(matches!(
        new_ledger(cache, &BudgetsConfig::default(), &half),
        Err(BudgetError::MissingDuration {
            scope: Scope::Deployment(_)
        })
    ));
}

#[test]
fn litellm_spellings_of_a_budget_parse() {
    let config: BudgetConfig =
        serde_json::from_str(r#"{"budget_limit": 100, "time_period": "1d"}"#).unwrap();
    assert_eq!(config, BudgetConfig::new(100.0, "1d"));
    let config: BudgetConfig =
        serde_json::from_str(r#"{"max_budget": 5, "budget_duration": "1mo"}"#).unwrap();
    assert_eq!(config, BudgetConfig::new(5.0, "1mo"));
}

#[tokio::test]
async fn a_rolling_window_starts_at_first_use_and_the_next_one_at_the_next_use() {
    let (ledger, clock, d) = ledger(
        providers(&[("openai", 10.0, "1d")]),
        &[dep("d", "openai/gpt-4o")],
        JAN_31_2024,
    )
    .await;
    ledger.record(d[0], &[], 4.0).await.unwrap();
    let status = ledger.status().await.unwrap();
    assert_eq!(
        (
            status[0].spend,
            status[0].window_start_ms,
            status[0].resets_at_ms
        ),
        (4.0, Some(JAN_31_2024), Some(JAN_31_2024 + DAY))
    );
    clock.advance_ms(DAY - 1);
    ledger.record(d[0], &[], 1.0).await.unwrap();
    assert_eq!(ledger.status().await.unwrap()[0].spend, 5.0);
    // Three days of silence, then a call: its window starts then (LiteLLM's rolling windows).
    clock.advance_ms(3 * DAY);
    ledger.record(d[0], &[], 2.0).await.unwrap();
    let status = ledger.status().await.unwrap();
    assert_eq!(
        (status[0].spend, status[0].window_start_ms),
        (2.0, Some(JAN_31_2024 + 4 * DAY - 1))
    );
}

#[tokio::test]
async fn a_monthly_window_from_january_31_of_a_leap_year_ends_on_february_29() {
    let deployments = [Deployment {
        max_budget: Some(10.0),
        budget_duration: Some("1mo".into()),
        ..dep("d", "openai/gpt-4o")
    }];
    let (ledger, clock, d) = ledger(BudgetsConfig::default(), &deployments, JAN_31_2024).await;
    ledger.record(d[0], &[], 7.0).await.unwrap();
    let feb_29 = JAN_31_2024 + 29 * DAY;
    assert_eq!(ledger.status().await.unwrap()[0].resets_at_ms, Some(feb_29));
    clock.set_ms(feb_29 - 1);
    assert_eq!(ledger.status().await.unwrap()[0].spend, 7.0);
    clock.set_ms(feb_29);
    ledger.record(d[0], &[], 1.0).await.unwrap();
    let status = ledger.status().await.unwrap();
    assert_eq!(
        (status[0].spend, status[0].window_start_ms),
        (1.0, Some(feb_29))
    );
    // Feb 29 + 1mo = Mar 29.
    assert_eq!(status[0].resets_at_ms, Some(feb_29 + 29 * DAY));
}

#[tokio::test]
async fn calendar_windows_reset_at_utc_midnight_and_on_the_first_of_the_month() {
    let config = BudgetsConfig {
        alignment: WindowAlignment::Calendar,
        ..providers(&[("openai", 10.0, "1d"), ("azure", 10.0, "1mo")])
    };
    let deployments = [dep("o", "openai/gpt-4o"), dep("a", "azure/gpt-4o")];
    let (ledger, clock, d) = ledger(config, &deployments, JAN_31_2024).await;
    ledger.record(d[0], &[], 3.0).await.unwrap();
    ledger.record(d[1], &[], 3.0).await.unwrap();
    let midnight = JAN_31_2024 - 10 * 3_600_000 + DAY; // 2024-02-01T00:00Z
    let status = ledger.status().await.unwrap();
    let openai = status
        .iter()
        .find(|s| s.scope == Scope::Provider("openai".into()))
        .unwrap();
    assert_eq!(
        (openai.window_start_ms, openai.resets_at_ms),
        (Some(midnight - DAY), Some(midnight))
    );
    clock.set_ms(midnight);
    for s in ledger.status().await.unwrap() {
        assert_eq!(
            (s.spend, s.window_start_ms),
            (0.0, Some(midnight)),
            "{:?}",
            s.scope
        );
    }
}

#[tokio::test]
async fn reservations_hold_an_estimate_and_settle_to_the_actual_cost() {
    let deployments = [Deployment {
        input_cost_per_token: Some(1e-3),
        output_cost_per_token: Some(2e-3),
        max_budget: Some(1.0),
        budget_duration: Some("1d".into()),
        ..dep("d", "openai/gpt-4o")
    }];
    let (ledger, _, d) = ledger(BudgetsConfig::default(), &deployments, JAN_31_2024).await;
    let estimate = ledger.estimate(d[0], 100, Some(200)); // 0.1 + 0.4
    assert!((estimate - 0.5).abs() < 1e-12);
    let first = ledger.reserve(d[0], &[], estimate).await.unwrap();
    let second = ledger.reserve(d[0], &[], estimate).await.unwrap();
    // Both estimates are held: a third does not fit.
    assert!(matches!(
        ledger.reserve(d[0], &[], estimate).await,
        Err(BudgetError::Exceeded { .. })
    ));
    ledger.settle(first, 0.2).unwrap(); // refunds 0.3
    ledger.release(second).unwrap(); // refunds 0.5
    let spend = ledger.status().await.unwrap()[0].spend;
    assert!((spend - 0.2).abs() < 1e-9, "{spend}");
    assert!(matches!(
        ledger.settle(ledger.reserve(d[0], &[], 0.0).await.unwrap(), f64::NAN),
        Err(BudgetError::InvalidCost { .. })
    ));
}

/// What a call without `max_tokens` reserves: the deployment's default `max_tokens`, else the
/// learned high percentile of its recent output (once enough calls were seen), else the model's
/// output limit, else a fixed 4,096; never more than the limit. `worst_case` skips the learned
/// percentile.
#[tokio::test]
async fn a_call_without_max_tokens_reserves_the_default_the_learned_percentile_or_the_output_limit()
{
    let priced = |id: &str| Deployment {
        output_cost_per_token: Some(1e-3),
        max_output_tokens: Some(1_000),
        max_budget: Some(100.0),
        budget_duration: Some("1d".into()),
        ..dep(id, "openai/gpt-4o")
    };
    let mut with_default = priced("default");
    with_default
        .default_params
        .insert("max_tokens".into(), serde_json::json!(50));
    let unknown_limit = Deployment {
        max_output_tokens: None,
        ..priced("unknown")
    };
    let deployments = [priced("learns"), with_default, unknown_limit];
    for policy in [ReservationPolicy::Estimate, ReservationPolicy::WorstCase] {
        let config = BudgetsConfig {
            reservation: policy,
            ..BudgetsConfig::default()
        };
        let (ledger, _, d) = ledger(config, &deployments, JAN_31_2024).await;
        assert_eq!(
            ledger.output_estimate(d[0], Some(20)),
            Some(20),
            "the request's own"
        );
        assert_eq!(
            ledger.output_estimate(d[0], Some(5_000)),
            Some(1_000),
            "capped at the limit"
        );
        assert_eq!(
            ledger.output_estimate(d[1], None),
            Some(50),
            "the deployment's default"
        );
        assert_eq!(
            ledger.output_estimate(d[0], None),
            Some(1_000),
            "nothing learned yet"
        );
        assert_eq!(
            ledger.output_estimate(d[2], None),
            Some(UNKNOWN_OUTPUT_LIMIT)
        );
        for i in 0..LEARNED_MIN_SAMPLES as u64 - 1 {
            ledger.observe_output(d[0], 100 + i);
        }
        assert_eq!(
            ledger.output_estimate(d[0], None),
            Some(1_000),
            "too few calls yet"
        );
        ledger.observe_output(d[0], 300);
        let learned = match policy {
            ReservationPolicy::WorstCase => 1_000,
            _ => 300,
        };
        assert_eq!(ledger.output_estimate(d[0], None), Some(learned));
        // The recent calls replace the old: 128 calls of 80 tokens bring the estimate down.
        for _ in 0..LEARNED_SAMPLES {
            ledger.observe_output(d[0], 80);
        }
        let learned = match policy {
            ReservationPolicy::WorstCase => 1_000,
            _ => 80,
        };
        assert_eq!(ledger.output_estimate(d[0], None), Some(learned));
        assert!((ledger.estimate(d[0], 0, None) - learned as f64 * 1e-3).abs() < 1e-12);
    }
}

#[tokio::test]
async fn without_reservations_admission_holds_nothing() {
    let config = BudgetsConfig {
        reservation: ReservationPolicy::None,
        ..providers(&[("openai", 1.0, "1d")])
    };
    let deployments = [Deployment {
        input_cost_per_token: Some(1.0),
        ..dep("d", "openai/gpt-4o")
    }];
    let (ledger, _, d) = ledger(config, &deployments, JAN_31_2024).await;
    assert_eq!(ledger.estimate(d[0], 1_000, Some(1_000)), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reservations_in_one_process_never_pass_the_limit() {
    let (ledger, _, d) = ledger(
        providers(&[("openai", 10.0, "1d")]),
        &[dep("d", "openai/gpt-4o")],
        JAN_31_2024,
    )
    .await;
    let ledger = Arc::new(ledger);
    let d = d[0];
    let mut handles = Vec::new();
    for _ in 0..500 {
        let ledger = Arc::clone(&ledger);
        handles.push(tokio::spawn(async move {
            match ledger.reserve(d, &[], 0.3).await {
                Ok(reservation) => {
                    ledger.settle(reservation, 0.3).unwrap();
                    true
                }
                Err(_) => false,
            }
        }));
    }
    let mut admitted = 0;
    for h in handles {
        admitted += usize::from(h.await.unwrap());
    }
    assert_eq!(admitted, 33); // floor(10 / 0.3)
    assert!(ledger.status().await.unwrap()[0].spend <= 10.0);
}

/// Regression (review of 79b0912): `Reservation` was `Clone` (it could be settled twice) and a
/// dropped one held its amount until the window ended.
#[tokio::test]
async fn a_reservation_dropped_unsettled_releases_its_hold() {
    let (ledger, _, d) = ledger(
        providers(&[("openai", 1.0, "1d")]),
        &[dep("d", "openai/gpt-4o")],
        JAN_31_2024,
    )
    .await;
    let d = d[0];
    let call = async {
        let _held = ledger.reserve(d, &[], 0.8).await.unwrap();
        std::future::pending::<()>().await; // the call is dropped by a timeout
    };
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(10), call)
            .await
            .is_err()
    );
    assert_eq!(ledger.status().await.unwrap()[0].spend, 0.0);
    let again = ledger.reserve(d, &[], 0.8).await.unwrap();
    ledger.settle(again, 0.5).unwrap();
    assert_eq!(ledger.status().await.unwrap()[0].spend, 0.5);
}
