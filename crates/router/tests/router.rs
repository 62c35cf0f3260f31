//! The router as a whole: bad input rejected before any call, nothing leaked by dropped calls,
//! snapshot swaps, budgets, and two routers sharing one Redis.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use ferrolite_budgets::{BudgetConfig, BudgetsConfig};
use ferrolite_cache::testing::{config, redis_url, unique_prefix};
use ferrolite_cache::{CacheConfig, DualCache};
use ferrolite_router::{Request, Router, RouterError, RouterSettings};
use ferrolite_types::{Deployment, DeploymentId, TypesError};

async fn build(
    deployments: Vec<Deployment>,
    settings: RouterSettings,
) -> Result<Router, RouterError> {
    let cache = DualCache::connect(CacheConfig::default()).await.unwrap();
    Router::new(deployments, settings, cache, Arc::new(Script::default()))
}

/// One deployment "1" of group "g" at these prices, under an OpenAI budget of `limit` a day.
async fn with_openai_budget(limit: f64, input: f64, output: f64) -> Setup {
    let budgets = BudgetsConfig {
        providers: [("openai".to_string(), BudgetConfig::new(limit, "1d"))].into(),
        ..BudgetsConfig::default()
    };
    let d = Deployment {
        input_cost_per_token: Some(input),
        output_cost_per_token: Some(output),
        ..dep("g", "1")
    };
    setup(
        vec![d],
        RouterSettings {
            budgets,
            ..settings()
        },
    )
    .await
}

#[tokio::test]
async fn an_unknown_model_is_a_typed_400_in_litellms_words_without_the_group_list() {
    let s = setup(vec![dep("gpt-4o", "1"), dep("claude", "2")], settings()).await;
    let err = s.call("gpt-5").await.unwrap_err();
    assert_eq!(
        err,
        RouterError::UnknownModel {
            model: "gpt-5".into(),
        }
    );
    assert_eq!(
        err.to_string(),
        "Invalid model name passed in model=gpt-5. Call `/v1/models` to view available models for your key."
    );
    assert_eq!(err.kind(), ferrolite_router::ErrorKind::Request);
    assert!(s.script.called().is_empty());
}

#[tokio::test]
async fn aliases_deployment_ids_and_the_star_group_resolve() {
    let mut settings = settings();
    settings
        .model_group_alias
        .insert("gpt4".into(), "gpt-4o".into());
    let s = setup(vec![dep("gpt-4o", "1"), dep("*", "catch-all")], settings).await;
    assert_eq!(s.call("gpt4").await.unwrap().model_group, "gpt-4o");
    assert_eq!(s.call("1").await.unwrap().deployment_id.as_str(), "1");
    assert_eq!(
        s.call("anything").await.unwrap().deployment_id.as_str(),
        "catch-all"
    );
}

#[tokio::test]
async fn bad_requests_are_refused_before_any_backend_call() {
    let s = setup(vec![dep("g", "1")], settings()).await;
    let err = s
        .router
        .call(Request::new("", serde_json::json!({})))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RouterError::InvalidRequest { field: "model", .. }),
        "{err:?}"
    );
    let err = s
        .router
        .call(Request::new("g", serde_json::json!({"max_tokens": -5})))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RouterError::InvalidRequest {
                field: "max_tokens",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(s.script.called().is_empty());
}

#[tokio::test]
async fn bad_settings_and_deployments_are_refused_when_the_router_is_built() {
    let mut unknown = settings();
    unknown.fallbacks.insert("a".into(), vec!["nowhere".into()]);
    let err = build(vec![dep("a", "1")], unknown).await.unwrap_err();
    assert!(
        matches!(&err, RouterError::InvalidSettings { field, value, .. } if field == "fallbacks.a" && value == "nowhere"),
        "{err:?}"
    );

    let mut looped = settings();
    looped.fallbacks.insert("a".into(), vec!["b".into()]);
    looped.fallbacks.insert("b".into(), vec!["a".into()]);
    let err = build(vec![dep("a", "1"), dep("b", "2")], looped)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RouterError::InvalidSettings { value, .. } if value == "a -> b -> a"),
        "{err:?}"
    );

    let err = build(vec![dep("a", "1"), dep("b", "1")], settings())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RouterError::InvalidDeployment { index: 1, model_name, source: TypesError::DuplicateId { id } } if id == "1" && model_name == "b"),
        "{err:?}"
    );

    let empty_group = Deployment::new("", "openai/gpt-4o");
    let err = build(vec![empty_group], settings()).await.unwrap_err();
    assert!(
        matches!(
            &err,
            RouterError::InvalidDeployment {
                index: 0,
                source: TypesError::Empty {
                    field: "model_name"
                },
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_call_dropped_mid_flight_leaks_nothing() {
    let s = with_openai_budget(10.0, 0.001, 0.002).await;
    s.script.next([Step::Hang]);
    let mut request = Request::new("g", serde_json::json!({"max_tokens": 100}));
    request.input_tokens = Some(100);
    let call = s.router.call(request);
    assert!(
        tokio::time::timeout(Duration::from_secs(1), call)
            .await
            .is_err()
    );
    let id = DeploymentId::new("1");
    assert_eq!(
        s.router.in_flight(&id),
        Some(0),
        "the in-flight slot came back"
    );
    let spend = s.router.budget_status().await.unwrap()[0].spend;
    assert_eq!(spend, 0.0, "the budget reservation was released");
    // A completed call is charged what it cost: 10 input + 5 output tokens.
    s.call("g").await.unwrap();
    let spend = s.router.budget_status().await.unwrap()[0].spend;
    assert!((spend - 0.02).abs() < 1e-9, "{spend}");
}

#[tokio::test(start_paused = true)]
async fn a_budget_refusal_from_the_estimate_states_spend_and_limit_as_one_from_recorded_spend() {
    // 10 input tokens at 0.001 (0.01) plus max_tokens 100 at 0.001 (0.1): over a 0.05 limit.
    let s = with_openai_budget(0.05, 0.001, 0.001).await;
    let mut request = Request::new("g", serde_json::json!({"max_tokens": 100}));
    request.input_tokens = Some(10);
    let estimated = s.router.call(request).await.unwrap_err().to_string();
    assert!(
        estimated.starts_with(
            "No deployments available - crossed budget: Exceeded budget for provider openai: 0.11 >= 0.05"
        ),
        "{estimated}"
    );
    assert!(
        estimated.contains("(spend 0 + this call's estimated cost 0.11)"),
        "{estimated}"
    );
    // Recorded spend over the limit: the same leading statement, spend >= limit.
    // (Without `max_tokens` a call reserves the model's output; `max_tokens: 1` holds 0.001.)
    let unestimated = || {
        let mut request = Request::new("g", serde_json::json!({"max_tokens": 1}));
        request.input_tokens = Some(0);
        request
    };
    for _ in 0..4 {
        // Next to nothing estimated; each call costs 10 + 5 tokens: 0.015, 0.06 in all.
        s.router.call(unestimated()).await.unwrap();
    }
    let recorded = s.router.call(unestimated()).await.unwrap_err().to_string();
    assert!(!recorded.contains("estimated"), "{recorded}");
    assert!(
        recorded.starts_with(
            "No deployments available - crossed budget: Exceeded budget for provider openai: 0.06"
        ) && recorded.contains(" >= 0.05"),
        "{recorded}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_exhausted_budget_refuses_before_calling() {
    let s = with_openai_budget(0.01, 0.001, 0.0).await;
    s.call("g").await.unwrap(); // 10 input tokens: 0.01, the whole budget
    let err = s.call("g").await.unwrap_err();
    assert!(err.to_string().contains("crossed budget"), "{err}");
    assert_eq!(s.script.called().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn rpm_limits_hold_and_tokens_settle_to_the_actual_count() {
    let d = Deployment {
        rpm: Some(3),
        ..dep("g", "1")
    };
    let s = setup(vec![d], settings()).await;
    for _ in 0..3 {
        s.call("g").await.unwrap();
    }
    let err = s.call("g").await.unwrap_err();
    assert_eq!(err.kind(), ferrolite_router::ErrorKind::Capacity, "{err}");
    assert_eq!(s.script.called().len(), 3);
    // 10 + 5 tokens per call, whatever was estimated.
    assert_eq!(s.router.usage(&DeploymentId::new("1")), Some((3.0, 45.0)));
}

#[tokio::test(start_paused = true)]
async fn a_snapshot_swap_keeps_the_state_of_unchanged_deployments() {
    let d = Deployment {
        rpm: Some(2),
        ..dep("g", "1")
    };
    let s = setup(vec![d.clone(), dep("h", "2")], settings()).await;
    s.call("g").await.unwrap();
    s.call("g").await.unwrap();
    assert!(s.call("g").await.is_err());
    // Raise the limit (the id is unchanged) and add a group: the two requests still count.
    s.router.upsert(Deployment { rpm: Some(3), ..d }).unwrap();
    s.router.upsert(dep("k", "3")).unwrap();
    assert_eq!(s.router.usage(&DeploymentId::new("1")), Some((2.0, 30.0)));
    s.call("g").await.unwrap();
    assert!(s.call("g").await.is_err(), "3 of 3");
    assert_eq!(s.router.model_groups(), ["g", "h", "k"]);
    assert!(s.router.remove(&DeploymentId::new("2")).unwrap());
    assert!(matches!(
        s.call("h").await,
        Err(RouterError::UnknownModel { .. })
    ));
}

#[tokio::test]
async fn two_routers_on_one_redis_see_each_others_cooldowns_within_150_ms_and_both_pick_it_again_after()
 {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("router-cooldown");
    let make = || async {
        let cache = DualCache::connect(config(&url, &prefix)).await.unwrap();
        let script = Arc::new(Script::default());
        let router = Router::new(
            vec![dep("g", "1"), dep("g", "2")],
            RouterSettings {
                num_retries: 0,
                cooldown_time: Duration::from_secs(1),
                ..settings()
            },
            cache.clone(),
            script.clone(),
        )
        .unwrap();
        (router, script, cache)
    };
    let (a, a_script, a_cache) = make().await;
    let (b, b_script, b_cache) = make().await;
    // Router a cools deployment 1 down (a 429 with a sibling).
    a_script.on("1", [rate_limited()]);
    a_script.on("2", [rate_limited()]);
    let _ = a.call(Request::new("g", serde_json::json!({}))).await;
    let cooled = if a.cooled_until(&DeploymentId::new("1")).is_some() {
        "1"
    } else {
        "2"
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(b.cooled_until(&DeploymentId::new(cooled)).is_some());
    for _ in 0..20 {
        let answer = b
            .call(Request::new("g", serde_json::json!({})))
            .await
            .unwrap();
        assert_ne!(answer.deployment_id.as_str(), cooled);
    }
    assert!(b_script.called().iter().all(|id| id != cooled));
    // After the cooldown, both pick it again.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    for router in [&a, &b] {
        let mut picked = false;
        for _ in 0..40 {
            // (Router a still has the other deployment's scripted 429 queued.)
            if let Ok(answer) = router.call(Request::new("g", serde_json::json!({}))).await {
                picked |= answer.deployment_id.as_str() == cooled;
            }
        }
        assert!(picked, "the deployment is picked again after its cooldown");
    }
    a_cache.shutdown().await.unwrap();
    b_cache.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_routers_on_one_redis_never_spend_past_a_budget_by_more_than_one_reservation_each() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("router-budget");
    let budgets = BudgetsConfig {
        providers: [("openai".to_string(), BudgetConfig::new(1.0, "1d"))].into(),
        ..BudgetsConfig::default()
    };
    let d = Deployment {
        input_cost_per_token: Some(0.01), // 10 input tokens: 0.10 a call
        ..dep("g", "1")
    };
    let mut routers = Vec::new();
    let mut caches = Vec::new();
    for _ in 0..2 {
        let cache = DualCache::connect(config(&url, &prefix)).await.unwrap();
        let router = Router::new(
            vec![d.clone()],
            RouterSettings {
                num_retries: 0,
                budgets: budgets.clone(),
                ..settings()
            },
            cache.clone(),
            Arc::new(Script::default()),
        )
        .unwrap();
        routers.push(router);
        caches.push(cache);
    }
    let mut calls = Vec::new();
    for i in 0..60 {
        let router = routers[i % 2].clone();
        calls.push(tokio::spawn(async move {
            let mut request = Request::new("g", serde_json::json!({}));
            request.input_tokens = Some(10);
            router.call(request).await.is_ok()
        }));
    }
    let mut served = 0;
    for call in calls {
        served += usize::from(call.await.unwrap());
    }
    for cache in &caches {
        cache.sync_now().await.unwrap();
    }
    let spend = routers[0].budget_status().await.unwrap()[0].spend;
    // Each reservation holds the estimate (10 input tokens at 0.01) and settles to the actual
    // 10 + 5 tokens' input cost, the same 0.10: at most one reservation over per router.
    assert!(spend <= 1.0 + 2.0 * 0.1 + 1e-9, "spent {spend} of 1.0");
    assert!((10..=12).contains(&served), "{served} calls served");
    for cache in caches {
        cache.shutdown().await.unwrap();
    }
}

/// The call's future is moved at every `.await` level: a Redis command's future (several KB)
/// held inline would be copied on every call, even in memory. They are boxed where they are
/// built (a profile showed 18 % of a call in `memmove` before), so the whole call stays small.
/// (4,160 bytes: the attempt's trace span, boxed and only when exported, and the route
/// decision's attempt count took it past 4,096.)
#[tokio::test]
async fn the_call_future_stays_small() {
    let s = setup(vec![dep("g", "1")], settings()).await;
    // One Redis command's future, as the Redis tier builds it (the cache's store boxes it, so a
    // lease's future no longer shows it).
    let command_size = ferrolite_cache::testing::redis_script_future_size();
    let call = s.router.call(Request::new("g", serde_json::json!({})));
    let call_size = std::mem::size_of_val(&call);
    drop(call);
    assert!(
        call_size < command_size && call_size <= 4160,
        "the call future is {call_size} bytes (one Redis command future: {command_size})"
    );
}

/// As LiteLLM's `_common_checks_available_deployment`: wildcard groups (`openai/*`, `*`) take
/// models that name no group, and the deployment is called with the requested model in place
/// of its `*`.
#[tokio::test]
async fn wildcard_groups_take_unknown_models_and_call_them_by_name() {
    let wildcard = |group: &str, model: &str, id: &str| Deployment {
        id: Some(id.to_string()),
        ..Deployment::new(group, model)
    };
    let s = setup(
        vec![
            dep("gpt-4o", "1"),
            wildcard("openai/*", "openai/*", "openai-any"),
            wildcard("team/*", "azure/team-*", "team-any"),
            wildcard("*", "openai/*", "anything"),
        ],
        settings(),
    )
    .await;
    let routed = |model: &'static str| {
        let router = s.router.clone();
        async move {
            router
                .call(Request::new(model, serde_json::json!({})))
                .await
                .unwrap()
        }
    };
    assert_eq!(routed("openai/gpt-4o-mini").await.model_group, "openai/*");
    assert_eq!(routed("team/gpt-4o").await.model_group, "team/*");
    assert_eq!(routed("claude-3-haiku").await.model_group, "*");
    assert_eq!(
        routed("gpt-4o").await.model_group,
        "gpt-4o",
        "a group name wins"
    );
    let models: Vec<serde_json::Value> = s
        .script
        .bodies
        .lock()
        .iter()
        .map(|b| b["model"].clone())
        .collect();
    assert_eq!(
        models,
        [
            "openai/gpt-4o-mini",
            "azure/team-gpt-4o",
            "openai/claude-3-haiku",
            "openai/1"
        ]
    );
}

/// As LiteLLM's `_common_checks_available_deployment`: a model that matches nothing goes to the
/// first default fallback.
#[tokio::test]
async fn an_unknown_model_goes_to_the_first_default_fallback() {
    let s = setup(
        vec![dep("g", "1"), dep("h", "2")],
        RouterSettings {
            default_fallbacks: vec!["h".into()],
            ..settings()
        },
    )
    .await;
    let answer = s.call("no-such-model").await.unwrap();
    assert_eq!(answer.model_group, "h");
}

/// LiteLLM passes a deployment's `litellm_params` (temperature, max_tokens, ...) with every
/// call; the request's own values win.
#[tokio::test(start_paused = true)]
async fn a_deployments_default_params_reach_the_backend_unless_the_request_sets_them() {
    let mut d = dep("g", "1");
    d.default_params
        .insert("temperature".into(), serde_json::json!(0.1));
    d.default_params
        .insert("max_tokens".into(), serde_json::json!(256));
    let s = setup(vec![d], settings()).await;
    s.router
        .call(Request::new(
            "g",
            serde_json::json!({"messages": [], "temperature": 0.9}),
        ))
        .await
        .unwrap();
    let bodies = s.script.bodies.lock().clone();
    assert_eq!(
        bodies[0]["temperature"], 0.9,
        "the request's own value wins"
    );
    assert_eq!(
        bodies[0]["max_tokens"], 256,
        "the deployment's default fills the gap"
    );
}

/// A deployment's default `max_tokens` counts in its tpm estimate when the request gives none.
#[tokio::test(start_paused = true)]
async fn a_default_max_tokens_counts_in_the_tpm_estimate() {
    let mut d = dep("g", "1");
    d.tpm = Some(1_000);
    d.default_params
        .insert("max_tokens".into(), serde_json::json!(900));
    let settings = RouterSettings {
        admission: ferrolite_strategies::AdmissionMode::Strict,
        num_retries: 0,
        ..settings()
    };
    let s = setup(vec![d], settings).await;
    s.script.on("1", [Step::Hang]);
    let router = s.router.clone();
    let first = tokio::spawn(async move {
        router
            .call(Request::new("g", serde_json::json!({"messages": []})))
            .await
    });
    tokio::task::yield_now().await;
    // 900 tokens are held by the call in flight: another 900 do not fit in 1,000.
    let error = s
        .router
        .call(Request::new("g", serde_json::json!({"messages": []})))
        .await
        .unwrap_err();
    assert!(matches!(error, RouterError::NoCapacity(_)), "{error:?}");
    // A request's own max_tokens wins over the default: 50 fit.
    let small = Request::new("g", serde_json::json!({"messages": [], "max_tokens": 50}));
    assert!(s.router.call(small).await.is_ok());
    first.abort();
}

/// As LiteLLM's `_common_checks_available_deployment`: a name that is no group, alias, id or
/// wildcard is tried as a deployment's `litellm_params.model`.
#[tokio::test(start_paused = true)]
async fn a_deployments_own_model_name_routes_to_the_deployments_with_it() {
    let s = setup(
        vec![dep("g", "1"), dep("g", "2"), dep("h", "3")],
        settings(),
    )
    .await;
    for _ in 0..5 {
        let answer = s.call("openai/2").await.unwrap();
        assert_eq!(answer.deployment_id, DeploymentId::new("2"));
        assert_eq!(answer.model_group, "g");
    }
    assert!(matches!(
        s.call("openai/9").await.unwrap_err(),
        RouterError::UnknownModel { .. }
    ));
}

/// Records the deployment id each call is given.
struct IdRecorder(parking_lot::Mutex<Vec<Option<DeploymentId>>>);

impl ferrolite_router::Backend for IdRecorder {
    fn call<'a>(
        &'a self,
        _deployment: &'a Deployment,
        request: &'a ferrolite_router::BackendRequest,
    ) -> ferrolite_router::BackendFuture<'a> {
        self.0.lock().push(request.deployment_id.clone());
        Box::pin(async {
            Ok(ferrolite_router::BackendResponse {
                protocol: Default::default(),
                body: serde_json::json!({}).into(),
                usage: None,
                time_to_first_token: None,
            })
        })
    }
}

/// A backend that dispatches by deployment (the facade's mock dispatch) is given the id the
/// router derived once for its snapshot, so it never derives it again per call: the same id
/// `Deployment::id` gives, for a deployment without an explicit id too.
#[tokio::test]
async fn a_backend_is_given_the_called_deployments_id() {
    let deployment = Deployment::new("g", "openai/gpt-4o");
    assert!(deployment.id.is_none());
    let expected = deployment.id();
    let recorder = Arc::new(IdRecorder(parking_lot::Mutex::new(Vec::new())));
    let router = Router::builder()
        .deployment(deployment)
        .backend(recorder.clone())
        .build()
        .await
        .unwrap();
    router
        .call(Request::new("g", serde_json::json!({"messages": []})))
        .await
        .unwrap();
    assert_eq!(*recorder.0.lock(), vec![Some(expected)]);
}

/// What [`Preparer`] prepares of a deployment: its id and `api_base`.
type IdAndBase = (String, Option<String>);

/// Prepares each deployment's id and `api_base`; records what each call is given of it.
struct Preparer(parking_lot::Mutex<Vec<Option<IdAndBase>>>);

impl ferrolite_router::Backend for Preparer {
    fn call<'a>(
        &'a self,
        deployment: &'a Deployment,
        request: &'a ferrolite_router::BackendRequest,
    ) -> ferrolite_router::BackendFuture<'a> {
        let prepared = request.prepared.as_ref().and_then(|p| p.get::<IdAndBase>());
        // Prepared of the deployment called, not of another.
        if let Some((id, _)) = prepared {
            assert_eq!(*id, deployment.id().as_str());
        }
        self.0.lock().push(prepared.cloned());
        Box::pin(async {
            Ok(ferrolite_router::BackendResponse {
                protocol: Default::default(),
                body: serde_json::json!({}).into(),
                usage: None,
                time_to_first_token: None,
            })
        })
    }

    fn prepare(&self, deployment: &Deployment) -> Option<ferrolite_router::Prepared> {
        Some(ferrolite_router::Prepared::new((
            deployment.id().as_str().to_string(),
            deployment.api_base.clone(),
        )))
    }
}

/// A backend's preparation of a deployment reaches each call of it, and a new snapshot
/// (a deployment replaced) carries the new deployment's.
#[tokio::test]
async fn a_call_is_given_what_the_backend_prepared_of_its_deployment() {
    let deployment = |base: &str| Deployment {
        id: Some("1".into()),
        api_base: Some(base.into()),
        ..Deployment::new("g", "openai/gpt-4o")
    };
    let preparer = Arc::new(Preparer(parking_lot::Mutex::new(Vec::new())));
    let router = Router::builder()
        .deployment(deployment("http://first"))
        .deployment(Deployment {
            id: Some("2".into()),
            ..Deployment::new("h", "openai/gpt-4o")
        })
        .backend(preparer.clone())
        .build()
        .await
        .unwrap();
    let call =
        |group: &'static str| router.call(Request::new(group, serde_json::json!({"messages": []})));
    call("g").await.unwrap();
    call("h").await.unwrap();
    router.upsert(deployment("http://second")).unwrap();
    call("g").await.unwrap();
    assert_eq!(
        *preparer.0.lock(),
        vec![
            Some(("1".into(), Some("http://first".into()))),
            Some(("2".into(), None)),
            Some(("1".into(), Some("http://second".into()))),
        ]
    );
}

/// Regression: every reload that added a deployment kept one more full-length slab of the
/// `{id}:fails`, `{id}:successes` and in-flight counter families alive for good (a new family
/// aliased the old one's cells). Now the live families of each class are the live snapshot's
/// and, while a call still runs on it, the old snapshot's; counts carry over exactly.
#[tokio::test]
async fn fifty_reloads_adding_a_deployment_each_keep_the_router_s_counter_families_bounded() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix("router-reloads");
    let cache = DualCache::connect(CacheConfig {
        sync_interval: Duration::from_secs(3600),
        ..config(&url, &prefix)
    })
    .await
    .unwrap();
    let script = Arc::new(Script::default());
    let router = Router::new(
        vec![dep("g", "0")],
        settings(),
        cache.clone(),
        script.clone(),
    )
    .unwrap();
    let request = || {
        Request::new(
            "g",
            serde_json::json!({"messages": [{"role": "user", "content": "hi"}]}),
        )
    };
    // A call in flight on the first snapshot through the first reloads.
    script.next([Step::Delay(Duration::from_millis(200))]);
    let long = {
        let (router, request) = (router.clone(), request());
        tokio::spawn(async move { router.call(request).await })
    };
    let first = DeploymentId::new("0");
    while router.in_flight(&first) != Some(1) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let classes = [":fails", ":successes", "request_count"];
    let mut answered = 1; // the long call
    for k in 1..=50usize {
        router.upsert(dep("g", &k.to_string())).unwrap();
        router.call(request()).await.unwrap();
        answered += 1;
        cache.sync_now().await.unwrap();
        for class in classes {
            let stats = cache.counters().family_stats(class);
            assert!(stats.families <= 2, "reload {k}, {class}: {stats:?}");
            assert!(stats.slots <= 2 * (k + 1), "reload {k}, {class}: {stats:?}");
            assert_eq!(stats.owned, k + 1, "reload {k}, {class}: {stats:?}");
        }
    }
    long.await.unwrap().unwrap();
    cache.sync_now().await.unwrap();
    // What Redis holds, read back by another instance.
    let other = DualCache::connect(CacheConfig {
        sync_interval: Duration::from_secs(3600),
        ..config(&url, &prefix)
    })
    .await
    .unwrap();
    let window = ferrolite_cache::CounterOptions::fixed_ttl(Duration::from_secs(60));
    let counted: Vec<_> = (0..=50usize)
        .map(|k| {
            other
                .counters()
                .counter(&format!("{{{k}}}:successes"), window)
                .unwrap()
        })
        .collect();
    other.sync_now().await.unwrap();
    let successes: i64 = counted.iter().map(|c| c.value()).sum();
    for k in 0..=50usize {
        let id = DeploymentId::new(k.to_string());
        assert_eq!(router.in_flight(&id), Some(0), "deployment {k}");
    }
    assert_eq!(
        successes, answered,
        "every success counted once across the reloads"
    );
    for class in classes {
        let stats = cache.counters().family_stats(class);
        assert_eq!(stats.families, 1, "{class}: {stats:?}");
        assert_eq!(stats.slots, 51, "{class}: {stats:?}");
    }
    cache.shutdown().await.unwrap();
    other.shutdown().await.unwrap();
}
