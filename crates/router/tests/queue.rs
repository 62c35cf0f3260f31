//! The wait queue (LiteLLM's `Scheduler` and `max_parallel_requests`): with `wait_queue` set, a
//! request that finds no capacity waits for a slot in `priority` order instead of failing at once;
//! bounded in length and time. On paused time: the turns are exact.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use std::time::Duration;

use common::*;
use ferrolite_router::{Request, RouterError, RouterSettings, WaitQueueSettings};
use ferrolite_types::Deployment;
use tokio::time::Instant;

/// One deployment "1" of group "g" with one concurrency slot, and a wait queue.
async fn one_slot(queue: WaitQueueSettings) -> Setup {
    let d = Deployment {
        max_parallel_requests: Some(1),
        ..dep("g", "1")
    };
    setup(
        vec![d],
        RouterSettings {
            num_retries: 0,
            wait_queue: Some(queue),
            ..settings()
        },
    )
    .await
}

fn request(priority: Option<u8>) -> Request {
    let mut body = serde_json::json!({});
    if let Some(p) = priority {
        body["priority"] = p.into();
    }
    Request::new("g", body)
}

/// Starts a call in the background.
fn spawn_call(
    s: &Setup,
    priority: Option<u8>,
) -> tokio::task::JoinHandle<Result<ferrolite_router::RouterResponse, RouterError>> {
    let router = s.router.clone();
    tokio::spawn(async move { router.call(request(priority)).await })
}

async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

#[tokio::test(start_paused = true)]
async fn a_call_past_the_cap_waits_for_the_slot_and_gets_it_the_moment_it_frees() {
    let s = one_slot(WaitQueueSettings::default()).await;
    s.script
        .on("1", [Step::Delay(Duration::from_millis(1000)), Step::Ok]);
    let start = Instant::now();
    let first = spawn_call(&s, None);
    settle().await;
    let second = s.router.call(request(None)).await.unwrap();
    assert_eq!(second.deployment_id.as_str(), "1");
    first.await.unwrap().unwrap();
    let calls = s.script.calls.lock().clone();
    assert_eq!(calls.len(), 2);
    // Woken when the first call ended, not at the next 30 ms poll.
    assert_eq!(calls[1].1 - start, Duration::from_millis(1000));
}

#[tokio::test(start_paused = true)]
async fn waiting_requests_get_the_slot_lowest_priority_number_first_then_in_arrival_order() {
    let s = one_slot(WaitQueueSettings::default()).await;
    s.script.on(
        "1",
        [
            Step::Delay(Duration::from_millis(100)),
            Step::Delay(Duration::from_millis(100)),
            Step::Delay(Duration::from_millis(100)),
            Step::Delay(Duration::from_millis(100)),
            Step::Delay(Duration::from_millis(100)),
        ],
    );
    let holder = spawn_call(&s, None);
    settle().await;
    let mut waiting = Vec::new();
    for (name, priority) in [
        ("late-200", Some(200)),
        ("none", None),
        ("urgent-0", Some(0)),
        ("second-200", Some(200)),
    ] {
        let router = s.router.clone();
        waiting.push(tokio::spawn(async move {
            router.call(request(priority)).await.unwrap();
            (name, Instant::now())
        }));
        settle().await;
    }
    holder.await.unwrap().unwrap();
    let mut done = Vec::new();
    for w in waiting {
        done.push(w.await.unwrap());
    }
    done.sort_by_key(|(_, at)| *at);
    let order: Vec<&str> = done.iter().map(|(name, _)| *name).collect();
    assert_eq!(order, ["urgent-0", "late-200", "second-200", "none"]);
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_refuses_at_once() {
    let s = one_slot(WaitQueueSettings {
        max_waiting: 1,
        ..WaitQueueSettings::default()
    })
    .await;
    s.script.on("1", [Step::Hang]);
    let _holder = spawn_call(&s, None);
    settle().await;
    let _waiter = spawn_call(&s, None);
    settle().await;
    let start = Instant::now();
    let err = s.router.call(request(None)).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert!(
        err.to_string().contains("wait queue of `g` is full"),
        "{err}"
    );
    assert_eq!(err.kind(), ferrolite_router::ErrorKind::Capacity);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_gives_up_after_max_wait_or_its_own_deadline() {
    let s = one_slot(WaitQueueSettings {
        max_wait: Duration::from_secs(2),
        ..WaitQueueSettings::default()
    })
    .await;
    s.script.on("1", [Step::Hang]);
    let _holder = spawn_call(&s, None);
    settle().await;
    let start = Instant::now();
    let err = s.router.call(request(None)).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert!(matches!(err, RouterError::NoCapacity(_)), "{err:?}");
    assert!(err.to_string().contains("max_parallel_requests"), "{err}");

    let mut hurried = request(None);
    hurried.deadline = Some(Duration::from_millis(500));
    let start = Instant::now();
    s.router.call(hurried).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(500));
}

#[tokio::test(start_paused = true)]
async fn a_waiter_that_goes_away_passes_its_turn_on() {
    let s = one_slot(WaitQueueSettings::default()).await;
    s.script
        .on("1", [Step::Delay(Duration::from_millis(300)), Step::Ok]);
    let holder = spawn_call(&s, None);
    settle().await;
    let impatient = spawn_call(&s, Some(0));
    settle().await;
    let patient = spawn_call(&s, Some(9));
    settle().await;
    impatient.abort();
    assert!(impatient.await.unwrap_err().is_cancelled());
    holder.await.unwrap().unwrap();
    patient.await.unwrap().unwrap();
    let calls = s.script.calls.lock().clone();
    assert_eq!(calls.len(), 2, "the aborted waiter never called");
}

#[tokio::test]
async fn a_priority_outside_0_to_255_is_refused_before_any_call() {
    let s = one_slot(WaitQueueSettings::default()).await;
    let err = s
        .router
        .call(Request::new("g", serde_json::json!({"priority": 300})))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RouterError::InvalidRequest {
                field: "priority",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(s.script.called().is_empty());
}

#[tokio::test]
async fn a_wait_queue_without_room_or_time_is_refused_when_the_router_is_built() {
    let cache = ferrolite_cache::DualCache::connect(ferrolite_cache::CacheConfig::default())
        .await
        .unwrap();
    let err = ferrolite_router::Router::new(
        vec![dep("g", "1")],
        RouterSettings {
            wait_queue: Some(WaitQueueSettings {
                max_waiting: 0,
                ..WaitQueueSettings::default()
            }),
            ..settings()
        },
        cache,
        std::sync::Arc::new(Script::default()),
    )
    .unwrap_err();
    assert!(err.to_string().contains("wait_queue"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn with_three_slots_six_queued_calls_run_three_at_a_time() {
    let d = Deployment {
        max_parallel_requests: Some(3),
        ..dep("g", "1")
    };
    let s = setup(
        vec![d],
        RouterSettings {
            num_retries: 0,
            wait_queue: Some(WaitQueueSettings::default()),
            ..settings()
        },
    )
    .await;
    s.script.on(
        "1",
        (0..6).map(|_| Step::Delay(Duration::from_millis(1000))),
    );
    let start = Instant::now();
    let calls: Vec<_> = (0..6).map(|_| spawn_call(&s, None)).collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    let starts: Vec<Duration> = s
        .script
        .calls
        .lock()
        .iter()
        .map(|(_, at)| *at - start)
        .collect();
    // Two waves of three: the second three start together when the first three end.
    assert_eq!(
        starts,
        [0, 0, 0, 1000, 1000, 1000].map(Duration::from_millis),
        "{starts:?}"
    );
    assert_eq!(s.script.max_concurrency("1"), 3);
    assert_eq!(start.elapsed(), Duration::from_millis(2000));
}
