//! Properties over random outcome sequences and random concurrency, some calls dropped
//! mid-flight: never a cooled deployment picked, never more in flight than
//! `max_parallel_requests`, never over an rpm limit in strict mode, every budget reservation
//! settled or released, nothing left in flight.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use ferrolite_budgets::{BudgetConfig, BudgetsConfig};
use ferrolite_router::{Event, Observer, Request, RouterSettings};
use ferrolite_strategies::AdmissionMode;
use ferrolite_types::{Deployment, DeploymentId, ErrorClass};
use futures_util::StreamExt;
use parking_lot::Mutex;
use proptest::prelude::*;

const RPM: u64 = 6;
const PARALLEL: u32 = 2;

/// Checks, at each attempt, that the deployment is not cooling down.
struct Watch {
    router: Mutex<Option<ferrolite_router::Router>>,
    violations: Mutex<Vec<String>>,
    attempts: Mutex<HashMap<String, u64>>,
}

impl Observer for Watch {
    fn on_event(&self, event: &Event<'_>) {
        if let Event::Attempt { deployment, .. } = event {
            *self
                .attempts
                .lock()
                .entry(deployment.to_string())
                .or_insert(0) += 1;
            if let Some(router) = self.router.lock().as_ref() {
                if router.cooled_until(deployment).is_some() {
                    self.violations
                        .lock()
                        .push(format!("{deployment} picked while cooling down"));
                }
            }
        }
    }
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => Just(Step::Ok),
        1 => Just(Step::Fail(ErrorClass::RateLimited { retry_after: None })),
        1 => Just(Step::Fail(ErrorClass::ServerError { status: 500 })),
        1 => Just(Step::Fail(ErrorClass::Authentication)),
        1 => Just(Step::Hang),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn random_outcomes_keep_every_invariant(
        steps in proptest::collection::vec(step(), 0..40),
        calls in 1usize..30,
        dropped in proptest::collection::vec(any::<bool>(), 30),
        streamed in proptest::collection::vec(any::<bool>(), 30),
        auto in any::<bool>(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async move {
            let deployments: Vec<Deployment> = (0..3)
                .map(|i| Deployment {
                    rpm: Some(RPM),
                    max_parallel_requests: Some(PARALLEL),
                    timeout: Some(1.0),
                    input_cost_per_token: Some(0.001),
                    output_cost_per_token: Some(0.001),
                    ..dep("g", &format!("d{i}"))
                })
                .collect();
            let settings = RouterSettings {
                num_retries: 2,
                admission: if auto { AdmissionMode::Auto } else { AdmissionMode::Strict },
                budgets: BudgetsConfig {
                    providers: [("openai".to_string(), BudgetConfig::new(1_000.0, "1d"))].into(),
                    ..BudgetsConfig::default()
                },
                ..settings()
            };
            let s = setup(deployments, settings).await;
            s.script.next(steps);
            let watch = Arc::new(Watch {
                router: Mutex::new(Some(s.router.clone())),
                violations: Mutex::new(Vec::new()),
                attempts: Mutex::new(HashMap::new()),
            });
            s.router.add_observer(watch.clone());
            let mut handles = Vec::new();
            for (&drop_it, &stream) in dropped.iter().zip(&streamed).take(calls) {
                let router = s.router.clone();
                handles.push(tokio::spawn(async move {
                    let call = async move {
                        let request = Request::new("g", serde_json::json!({}));
                        if !stream {
                            return router.call(request).await.map(drop);
                        }
                        let mut chunks = router.stream(request).await?;
                        while let Some(chunk) = chunks.next().await {
                            chunk?;
                        }
                        Ok(())
                    };
                    if drop_it {
                        tokio::time::timeout(Duration::from_millis(500), call).await.ok()
                    } else {
                        Some(call.await)
                    }
                }));
            }
            let mut succeeded = 0u32;
            for handle in handles {
                if let Some(Ok(_)) = handle.await.unwrap() {
                    succeeded += 1;
                }
            }
            prop_assert!(watch.violations.lock().is_empty(), "{:?}", watch.violations.lock());
            // Never over the rpm limit (all within one minute of paused time).
            for (id, attempts) in watch.attempts.lock().iter() {
                prop_assert!(*attempts <= RPM, "{id}: {attempts} attempts over rpm {RPM}");
            }
            // Nothing in flight, and the spend is exactly the successful calls' cost.
            for i in 0..3 {
                let id = DeploymentId::new(format!("d{i}"));
                prop_assert_eq!(s.router.in_flight(&id), Some(0));
            }
            let spend = s.router.budget_status().await.unwrap()[0].spend;
            let expected = f64::from(succeeded) * 15.0 * 0.001;
            prop_assert!((spend - expected).abs() < 1e-9, "spend {spend}, expected {expected}");
            // Concurrency never passed the cap, and every slot came back.
            for i in 0..3 {
                let id = format!("d{i}");
                prop_assert!(s.script.max_concurrency(&id) <= PARALLEL, "{id}: {}", s.script.max_concurrency(&id));
                prop_assert_eq!(s.cache.leases().taken_locally(&format!("{{{id}}}:parallel")), 0);
            }
            Ok(())
        })?;
    }
}
