//! Deployment affinity (LiteLLM's `deployment_affinity` pre-call check): a key stays on the
//! deployment it used last, and yields when that deployment cannot take the call.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use ferrolite_router::{Request, RouterSettings};
use ferrolite_types::Deployment;

fn affinity() -> RouterSettings {
    RouterSettings {
        deployment_affinity: true,
        num_retries: 0,
        ..settings()
    }
}

fn four() -> Vec<Deployment> {
    (1..=4).map(|i| dep("g", &i.to_string())).collect()
}

async fn call_as(s: &Setup, key: &str) -> String {
    let mut request = Request::new("g", serde_json::json!({}));
    request.affinity_key = Some(key.to_string());
    s.router
        .call(request)
        .await
        .unwrap()
        .deployment_id
        .to_string()
}

#[tokio::test(start_paused = true)]
async fn a_key_stays_on_the_deployment_it_used_and_different_keys_spread() {
    let s = setup(four(), affinity()).await;
    let first = call_as(&s, "user-a").await;
    for _ in 0..20 {
        assert_eq!(call_as(&s, "user-a").await, first);
    }
    let mut used = HashSet::new();
    for i in 0..40 {
        used.insert(call_as(&s, &format!("user-{i}")).await);
    }
    assert!(used.len() > 1, "different keys are spread by the strategy");
}

#[tokio::test(start_paused = true)]
async fn without_affinity_one_key_spreads_over_the_group() {
    let s = setup(
        four(),
        RouterSettings {
            num_retries: 0,
            ..settings()
        },
    )
    .await;
    let mut used = HashSet::new();
    for _ in 0..40 {
        used.insert(call_as(&s, "user-a").await);
    }
    assert!(used.len() > 1);
}

#[tokio::test(start_paused = true)]
async fn the_pin_yields_to_a_cooldown_and_moves_to_the_deployment_used() {
    let s = setup(four(), affinity()).await;
    let first = call_as(&s, "user-a").await;
    s.cool(&first, 60).await;
    let second = call_as(&s, "user-a").await;
    assert_ne!(second, first);
    tokio::time::advance(Duration::from_secs(61)).await;
    // The pin moved: the key stays on the second deployment after the cooldown ends.
    for _ in 0..10 {
        assert_eq!(call_as(&s, "user-a").await, second);
    }
}

#[tokio::test(start_paused = true)]
async fn the_pin_yields_when_its_deployment_is_full() {
    let deployments: Vec<Deployment> = four()
        .into_iter()
        .map(|d| Deployment {
            max_parallel_requests: Some(1),
            ..d
        })
        .collect();
    let s = setup(deployments, affinity()).await;
    let first = call_as(&s, "user-a").await;
    s.script.on(&first, [Step::Hang]);
    let router = s.router.clone();
    let holder = tokio::spawn(async move {
        let mut request = Request::new("g", serde_json::json!({}));
        request.affinity_key = Some("user-a".into());
        router.call(request).await
    });
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_ne!(
        call_as(&s, "user-a").await,
        first,
        "full: the call goes elsewhere"
    );
    holder.abort();
}

#[tokio::test(start_paused = true)]
async fn the_key_itself_is_never_stored() {
    let s = setup(four(), affinity()).await;
    let secret = "sk-live-very-secret";
    let used = call_as(&s, secret).await;
    use sha2::Digest;
    let digest = sha2::Sha256::digest(secret.as_bytes());
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    let pinned = s
        .cache
        .kv()
        .get(&format!("affinity:g:{hex}"))
        .await
        .unwrap();
    assert_eq!(
        pinned.as_deref(),
        Some(used.as_str()),
        "the pin is kept under the key's hash"
    );
    let raw = s
        .cache
        .kv()
        .get(&format!("affinity:g:{secret}"))
        .await
        .unwrap();
    assert_eq!(raw, None);
}
