//! Budgets shared through Redis: convergence, exact reservations across instances, outages.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrolite_budgets::{BudgetConfig, BudgetError, BudgetLedger, BudgetsConfig};
use ferrolite_cache::testing::{RedisProcess, config, redis_required, redis_url, unique_prefix};
use ferrolite_cache::{CacheConfig, DualCache, RedisConfig};
use ferrolite_types::Deployment;

fn budgets(limit: f64) -> BudgetsConfig {
    BudgetsConfig {
        providers: [("openai".to_string(), BudgetConfig::new(limit, "1d"))].into(),
        ..BudgetsConfig::default()
    }
}

fn deployments() -> Vec<Deployment> {
    vec![Deployment {
        id: Some("d".into()),
        ..Deployment::new("g", "openai/gpt-4o")
    }]
}

async fn instance(cache_config: CacheConfig, limit: f64) -> (Arc<BudgetLedger>, DualCache) {
    let cache = DualCache::connect(cache_config).await.unwrap();
    (
        Arc::new(BudgetLedger::new(cache.clone(), &budgets(limit), &deployments()).unwrap()),
        cache,
    )
}

async fn spend(ledger: &BudgetLedger) -> f64 {
    ledger.status().await.unwrap()[0].spend
}

#[tokio::test]
async fn two_instances_converge_on_the_same_spend_within_one_sync() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("budget-converge");
    let (a, cache_a) = instance(config(&url, &prefix), 100.0).await;
    let (b, cache_b) = instance(config(&url, &prefix), 100.0).await;
    a.record(0, &[], 1.25).await.unwrap();
    b.record(0, &[], 2.5).await.unwrap();
    // Both windows agreed on one start.
    assert_eq!(
        a.status().await.unwrap()[0].window_start_ms,
        b.status().await.unwrap()[0].window_start_ms
    );
    cache_a.sync_now().await.unwrap();
    cache_b.sync_now().await.unwrap();
    cache_a.sync_now().await.unwrap();
    assert!((spend(&a).await - 3.75).abs() < 1e-9);
    assert!((spend(&b).await - 3.75).abs() < 1e-9);
    // A new instance sees the current window and its spend.
    let (c, _) = instance(config(&url, &prefix), 100.0).await;
    let status = c.status().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await; // one read-back of the new counter
    assert_eq!(
        status[0].window_start_ms,
        a.status().await.unwrap()[0].window_start_ms
    );
    assert!((spend(&c).await - 3.75).abs() < 1e-9, "{}", spend(&c).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_hundred_concurrent_reservations_over_two_instances_never_pass_the_limit() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("budget-storm");
    let (a, _ca) = instance(config(&url, &prefix), 10.0).await;
    let (b, _cb) = instance(config(&url, &prefix), 10.0).await;
    let mut handles = Vec::new();
    for i in 0..500 {
        let ledger = Arc::clone(if i % 2 == 0 { &a } else { &b });
        handles.push(tokio::spawn(async move {
            match ledger.reserve(0, &[], 0.3).await {
                Ok(reservation) => {
                    // The call cost a little less than reserved.
                    ledger.settle(reservation, 0.25).unwrap();
                    true
                }
                Err(BudgetError::Exceeded { .. }) => false,
                Err(other) => panic!("{other:?}"),
            }
        }));
    }
    let mut admitted = 0;
    for h in handles {
        admitted += usize::from(h.await.unwrap());
    }
    // Every reservation is checked atomically in Redis against reservations and settled costs:
    // at least 33 calls fit (10 / 0.3) and refunds may let a few more in; none overspends.
    assert!(admitted >= 33, "{admitted}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let total = spend(&a).await;
        if (total - 0.25 * admitted as f64).abs() < 1e-6 {
            assert!(total <= 10.0, "spent {total} of 10");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "spend {total}, expected {}",
            0.25 * admitted as f64
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_mid_run_loses_no_spend() {
    if std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            !redis_required(),
            "FERROLITE_REQUIRE_REDIS=1 but redis-server is not installed"
        );
        return;
    }
    let mut server = RedisProcess::start(true);
    let prefix = unique_prefix("budget-outage");
    let cache_config = CacheConfig {
        redis: Some(RedisConfig {
            command_timeout: Duration::from_millis(200),
            ..RedisConfig::new(server.url()).with_prefix(&prefix)
        }),
        sync_interval: Duration::from_millis(20),
        ..CacheConfig::default()
    };
    let (ledger, cache) = instance(cache_config.clone(), 1_000.0).await;
    let mut expected = 0.0;
    for i in 0..60 {
        if i == 20 {
            server.kill();
        }
        if i == 40 {
            server.restart();
        }
        let reservation = ledger.reserve(0, &[], 0.5).await.unwrap();
        ledger.settle(reservation, 0.125).unwrap();
        expected += 0.125;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let report = cache.sync_now().await.unwrap();
        if report.unsettled == 0 && report.errors.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "{report:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A fresh instance reads the spend from Redis.
    let (fresh, fresh_cache) = instance(cache_config, 1_000.0).await;
    fresh.status().await.unwrap();
    fresh_cache.sync_now().await.unwrap();
    let seen = spend(&fresh).await;
    assert!(
        (seen - expected).abs() < 1e-9,
        "Redis holds {seen}, expected {expected}"
    );
}
