//! Budgets shared through Redis: convergence, exact reservations across instances, outages.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrolite_budgets::{BudgetConfig, BudgetError, BudgetLedger, BudgetsConfig};
use ferrolite_cache::testing::{
    RedisCluster, RedisProcess, config, fault_config, redis_binaries_installed, redis_url,
    unique_prefix,
};
use ferrolite_cache::{CacheConfig, DualCache};
use ferrolite_types::{Deployment, DeploymentIndex, DeploymentIx};

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

/// One router instance's ledger, its cache, and the index of the deployment in its snapshot.
async fn instance(
    cache_config: CacheConfig,
    limit: f64,
) -> (Arc<BudgetLedger>, DualCache, DeploymentIx) {
    let cache = DualCache::connect(cache_config).await.unwrap();
    let deployments = deployments();
    let index = DeploymentIndex::of(&deployments).unwrap();
    let d = index.iter().next().unwrap().0;
    (
        Arc::new(BudgetLedger::new(cache.clone(), &budgets(limit), &index, &deployments).unwrap()),
        cache,
        d,
    )
}

/// `calls` concurrent calls alternating over the instances, each reserving `reserve` and
/// settling at `cost`; returns how many were admitted.
async fn storm(
    instances: [(&Arc<BudgetLedger>, DeploymentIx); 2],
    calls: usize,
    reserve: f64,
    cost: f64,
) -> usize {
    let mut handles = Vec::new();
    for i in 0..calls {
        let (ledger, d) = instances[i % 2];
        let ledger = Arc::clone(ledger);
        handles.push(tokio::spawn(async move {
            match ledger.reserve(d, &[], reserve).await {
                Ok(reservation) => {
                    ledger.settle(reservation, cost).unwrap();
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
    admitted
}

async fn spend(ledger: &BudgetLedger) -> f64 {
    ledger.status().await.unwrap()[0].spend
}

#[tokio::test]
async fn two_instances_converge_on_the_same_spend_within_one_sync() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("budget-converge");
    let (a, cache_a, da) = instance(config(&url, &prefix), 100.0).await;
    let (b, cache_b, db) = instance(config(&url, &prefix), 100.0).await;
    a.record(da, &[], 1.25).await.unwrap();
    b.record(db, &[], 2.5).await.unwrap();
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
    let (c, _, _) = instance(config(&url, &prefix), 100.0).await;
    let status = c.status().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await; // one read-back of the new counter
    assert_eq!(
        status[0].window_start_ms,
        a.status().await.unwrap()[0].window_start_ms
    );
    assert!((spend(&c).await - 3.75).abs() < 1e-9, "{}", spend(&c).await);
    cache_a.shutdown().await.unwrap();
    cache_b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_hundred_concurrent_reservations_over_two_instances_never_pass_the_limit() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("budget-storm");
    let (a, _ca, da) = instance(config(&url, &prefix), 10.0).await;
    let (b, _cb, db) = instance(config(&url, &prefix), 10.0).await;
    // The call costs a little less than reserved.
    let admitted = storm([(&a, da), (&b, db)], 500, 0.3, 0.25).await;
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
    if !redis_binaries_installed(&["redis-server"]) {
        return;
    }
    let mut server = RedisProcess::start(true);
    let prefix = unique_prefix("budget-outage");
    let cache_config = fault_config(&server.url(), &prefix);
    let (ledger, cache, d) = instance(cache_config.clone(), 1_000.0).await;
    let mut expected = 0.0;
    for i in 0..60 {
        if i == 20 {
            server.kill();
        }
        if i == 40 {
            server.restart();
        }
        let reservation = ledger.reserve(d, &[], 0.5).await.unwrap();
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
    let (fresh, fresh_cache, _) = instance(cache_config, 1_000.0).await;
    fresh.status().await.unwrap();
    fresh_cache.sync_now().await.unwrap();
    let seen = spend(&fresh).await;
    assert!(
        (seen - expected).abs() < 1e-9,
        "Redis holds {seen}, expected {expected}"
    );
    cache.shutdown().await.unwrap();
    fresh_cache.shutdown().await.unwrap();
}

/// Regression (external check of 79b0912): `status()` reported spend 0.0 for a spend key
/// holding garbage, i.e. an unspent budget.
#[tokio::test]
async fn a_spend_key_holding_garbage_is_an_error_naming_the_key() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("budget-garbage");
    let (ledger, cache, d) = instance(config(&url, &prefix), 100.0).await;
    ledger.record(d, &[], 1.0).await.unwrap();
    cache.sync_now().await.unwrap();
    let start = ledger.status().await.unwrap()[0].window_start_ms.unwrap();
    let key = format!("{{budgets}}provider_spend:openai:1d:{start}");
    cache
        .kv()
        .set(&key, "not a number", Duration::from_secs(60))
        .await
        .unwrap();
    let err = ledger.status().await.unwrap_err();
    assert!(err.to_string().contains(&key), "{err}");
    cache.shutdown().await.unwrap();
}

/// Regression (review of 79b0912): a rolling window started while Redis was down anchored on
/// each instance's clock, and after recovery each instance kept its own window and spend for the
/// whole window: N instances allowed N times the budget. They must converge on one window and
/// one spend.
#[tokio::test]
async fn windows_started_during_an_outage_converge_on_one_window_and_one_spend() {
    if !redis_binaries_installed(&["redis-server"]) {
        return;
    }
    let mut server = RedisProcess::start(false);
    let prefix = unique_prefix("budget-provisional");
    let cache_config = fault_config(&server.url(), &prefix);
    let (a, cache_a, da) = instance(cache_config.clone(), 10.0).await;
    let (b, cache_b, db) = instance(cache_config.clone(), 10.0).await;
    server.kill();
    // Both instances start their window during the outage, at different moments.
    a.record(da, &[], 4.0).await.unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    b.record(db, &[], 4.0).await.unwrap();
    server.restart();
    for cache in [&cache_a, &cache_b] {
        let deadline = Instant::now() + Duration::from_secs(20);
        while cache.stats().redis_down {
            assert!(Instant::now() < deadline, "Redis never came back");
            cache.sync_now().await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // The next use of each ledger joins the shared window.
    a.check(&[]).await.unwrap();
    b.check(&[]).await.unwrap();
    for _ in 0..3 {
        cache_a.sync_now().await.unwrap();
        cache_b.sync_now().await.unwrap();
    }
    let (sa, sb) = (a.status().await.unwrap(), b.status().await.unwrap());
    assert_eq!(sa[0].window_start_ms, sb[0].window_start_ms, "one window");
    assert!((sa[0].spend - 8.0).abs() < 1e-9, "a sees {}", sa[0].spend);
    assert!((sb[0].spend - 8.0).abs() < 1e-9, "b sees {}", sb[0].spend);
    // 8 of 10 spent: a reservation of 3 is refused on either instance.
    assert!(matches!(
        a.reserve(da, &[], 3.0).await,
        Err(BudgetError::Exceeded { .. })
    ));
    cache_a.shutdown().await.unwrap();
    cache_b.shutdown().await.unwrap();
}

/// Budget reservations on a real three-master Redis Cluster: every budget key carries the
/// `{budgets}` hash tag, so the reservation script runs on one slot, exactly as on one server.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reservations_on_a_redis_cluster_never_pass_the_limit() {
    if !redis_binaries_installed(&["redis-server", "redis-cli"]) {
        return;
    }
    let cluster = RedisCluster::start();
    let prefix = unique_prefix("budget-cluster");
    let (a, cache_a, da) = instance(config(&cluster.url(), &prefix), 3.0).await;
    let (b, cache_b, db) = instance(config(&cluster.url(), &prefix), 3.0).await;
    let admitted = storm([(&a, da), (&b, db)], 100, 0.25, 0.25).await;
    assert_eq!(admitted, 12, "3.0 / 0.25");
    cache_a.sync_now().await.unwrap();
    assert!((spend(&a).await - 3.0).abs() < 1e-9);
    cache_a.shutdown().await.unwrap();
    cache_b.shutdown().await.unwrap();
}
