//! A provider budget shared by three gateways on one Redis (strict admission), each with its
//! own router and cache, over real HTTP on loopback in front of a scripted upstream whose usage
//! (and so each call's cost) is known: the spend stays within the budget plus what the
//! documentation allows, whether calls come one at a time or all at once.
#![cfg(all(feature = "gateway", feature = "http", feature = "redis"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use common::redis::redis_url;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use ferrolite::gateway::{GatewaySettings, app, serve};
use ferrolite::types::Secret;
use ferrolite::{Config, build_from_config};

const KEY: &str = "sk-budget-test";
/// USD per output token: 100 output tokens cost $0.01.
const OUTPUT_PRICE: f64 = 0.0001;
/// USD per input token: 1,000 input tokens cost $0.01.
const INPUT_PRICE: f64 = 0.000_01;
const BUDGET: f64 = 0.50;
/// The model's output limit (`model_info.max_output_tokens`).
const OUTPUT_LIMIT: u64 = 400;

/// What the scripted upstream answers to its n-th call (from 0): prompt and completion tokens.
type Script = Arc<dyn Fn(u64) -> (u64, u64) + Send + Sync>;

/// The scripted upstream: its script, how long each call takes, and what it served.
struct Upstream {
    script: Script,
    delay: Duration,
    calls: AtomicU64,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
}

impl Upstream {
    /// What the calls it answered cost, in USD, at the deployment's prices.
    fn spend(&self) -> f64 {
        self.prompt_tokens.load(Ordering::SeqCst) as f64 * INPUT_PRICE
            + self.completion_tokens.load(Ordering::SeqCst) as f64 * OUTPUT_PRICE
    }
}

async fn complete(State(upstream): State<Arc<Upstream>>) -> axum::Json<serde_json::Value> {
    let n = upstream.calls.fetch_add(1, Ordering::SeqCst);
    let (prompt, completion) = (upstream.script)(n);
    if !upstream.delay.is_zero() {
        tokio::time::sleep(upstream.delay).await;
    }
    upstream.prompt_tokens.fetch_add(prompt, Ordering::SeqCst);
    upstream
        .completion_tokens
        .fetch_add(completion, Ordering::SeqCst);
    axum::Json(serde_json::json!({
        "id": format!("chatcmpl-{n}"),
        "object": "chat.completion",
        "created": 0,
        "model": "gpt-4o",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    }))
}

/// The upstream on a free loopback port: its base URL and its books.
async fn upstream(delay: Duration, script: Script) -> (String, Arc<Upstream>) {
    let state = Arc::new(Upstream {
        script,
        delay,
        calls: AtomicU64::new(0),
        prompt_tokens: AtomicU64::new(0),
        completion_tokens: AtomicU64::new(0),
    });
    let app = axum::Router::new()
        .route("/v1/chat/completions", post(complete))
        .with_state(Arc::clone(&state));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), state)
}

/// Three gateways, each with its own router and cache, on one Redis under a fresh key prefix,
/// sharing a $0.50 provider budget; `extra` goes under `ferrolite_settings`. Their base URLs.
async fn three_gateways(redis: &str, upstream: &str, test: &str, extra: &str) -> Vec<String> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let yaml = format!(
        r#"
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_base: {upstream}/v1
      api_key: sk-upstream
      input_cost_per_token: {INPUT_PRICE}
      output_cost_per_token: {OUTPUT_PRICE}
    model_info: {{id: upstream, max_output_tokens: {OUTPUT_LIMIT}}}
router_settings:
  num_retries: 0
  redis_url: {redis}
  provider_budget_config:
    openai: {{budget_limit: {BUDGET}, time_period: 1d}}
general_settings:
  master_key: {KEY}
ferrolite_settings:
  admission: strict
  redis_key_prefix: "budget-{test}-{nanos}:"
{extra}
"#
    );
    let mut bases = Vec::new();
    for _ in 0..3 {
        let config = Config::from_yaml(&yaml).unwrap();
        let backend: Arc<dyn ferrolite::router::Backend> =
            Arc::new(ferrolite::http::HttpBackend::new().unwrap());
        let router = build_from_config(config, Some(backend)).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let settings = GatewaySettings {
            master_key: Some(Secret::new(KEY)),
            ..GatewaySettings::default()
        };
        tokio::spawn(serve(
            listener,
            app(router, settings),
            std::future::pending(),
        ));
        bases.push(format!("http://{addr}"));
    }
    bases
}

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// One chat completion through the gateway at `base`: its status.
async fn chat(client: &reqwest::Client, base: &str, body: &serde_json::Value) -> u16 {
    client
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn without_max_tokens() -> serde_json::Value {
    serde_json::json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
}

/// `n` calls one after the other, rotated over `bases`: how many were admitted. Every refusal
/// is a 429.
async fn one_at_a_time(bases: &[String], n: usize, body: &serde_json::Value) -> usize {
    let client = http();
    let mut admitted = 0;
    for i in 0..n {
        match chat(&client, &bases[i % bases.len()], body).await {
            200 => admitted += 1,
            status => assert_eq!(status, 429, "call {i}"),
        }
    }
    admitted
}

/// The issue's run: $0.01 a call, no `max_tokens`, one call at a time through three gateways.
/// A call without `max_tokens` reserved only its input (here nothing), and a settled cost
/// reached Redis with the next sync: 67 to 79 calls went through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_max_tokens_one_at_a_time_through_three_gateways_spend_at_most_the_budget_plus_one_call()
 {
    let Some(redis) = redis_url() else { return };
    // 100 output tokens, no input: $0.01 a call.
    let (base, upstream) = upstream(Duration::ZERO, Arc::new(|_| (0, 100))).await;
    let bases = three_gateways(&redis, &base, "sequential", "").await;
    let admitted = one_at_a_time(&bases, 100, &without_max_tokens()).await;
    let spend = upstream.spend();
    assert!(
        spend <= BUDGET + 0.01 + 1e-9,
        "{admitted} calls admitted, ${spend} spent of ${BUDGET}"
    );
    assert!(
        admitted >= 40,
        "the budget takes 50 calls of $0.01: {admitted} admitted"
    );
}

/// A call can cost more than its reservation even with `max_tokens` (the provider counts more
/// input tokens than the router: images, tools). Settled one at a time through three gateways,
/// each settlement reaches Redis before the next call reserves; with the batched sync, the next
/// gateway reserved against a total that missed the last calls' costs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settled_cost_above_the_estimate_reaches_the_other_gateways_before_their_next_call() {
    let Some(redis) = redis_url() else { return };
    // The provider bills 1,000 input tokens ($0.01) for a prompt the router counts as a few.
    let (base, upstream) = upstream(Duration::ZERO, Arc::new(|_| (1_000, 0))).await;
    let bases = three_gateways(&redis, &base, "settle-now", "").await;
    let body = serde_json::json!({"model": "gpt-4o", "max_tokens": 1,
        "messages": [{"role": "user", "content": "hi"}]});
    let admitted = one_at_a_time(&bases, 100, &body).await;
    let spend = upstream.spend();
    assert!(
        spend <= BUDGET + 0.01 + 1e-9,
        "{admitted} calls admitted, ${spend} spent of ${BUDGET}"
    );
    assert!(admitted >= 40, "{admitted} admitted");
}

/// Calls at once from `clients` tasks, rotated over `bases`, `total` in all.
async fn overload(bases: &[String], clients: usize, total: usize) -> (usize, usize) {
    let next = Arc::new(AtomicU64::new(0));
    let admitted = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (bases, next, admitted) = (bases.to_vec(), Arc::clone(&next), Arc::clone(&admitted));
        tasks.push(tokio::spawn(async move {
            let client = http();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst) as usize;
                if i >= total {
                    return;
                }
                match chat(&client, &bases[i % bases.len()], &without_max_tokens()).await {
                    200 => {
                        admitted.fetch_add(1, Ordering::SeqCst);
                    }
                    status => assert_eq!(status, 429, "call {i}"),
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    (admitted.load(Ordering::SeqCst) as usize, total)
}

/// Outputs of 50 tokens ($0.005) for the first 75 calls (enough for every gateway to learn
/// them), then 300 ($0.03): the calls in flight when the output grows produce more than what
/// was learned.
fn drifting(n: u64) -> (u64, u64) {
    (0, if n < 75 { 50 } else { 300 })
}

const CLIENTS: usize = 16;

/// Under a concurrent overload through three gateways, calls without `max_tokens` reserve
/// their deployment's learned output (or its output limit before it has learned): the spend
/// passes the budget by at most what the calls in flight produced beyond their estimates. Here
/// at most 16 calls are in flight and none produces more than 250 tokens ($0.025) beyond the
/// smallest estimate it can get (50 tokens).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_overload_overspends_at_most_the_excess_of_the_calls_in_flight() {
    let Some(redis) = redis_url() else { return };
    let (base, upstream) = upstream(Duration::from_millis(20), Arc::new(drifting)).await;
    let bases = three_gateways(&redis, &base, "overload", "").await;
    let (admitted, total) = overload(&bases, CLIENTS, 200).await;
    let spend = upstream.spend();
    eprintln!("learned: {admitted} of {total} admitted, ${spend} spent");
    let bound = CLIENTS as f64 * 250.0 * OUTPUT_PRICE;
    assert!(
        spend <= BUDGET + bound + 1e-9,
        "{admitted} of {total} admitted, ${spend} spent of ${BUDGET} (+${bound} allowed)"
    );
    assert!(admitted >= 20, "{admitted} of {total} admitted");
}

/// `budget_estimate: worst_case`: a call without `max_tokens` reserves the model's output limit
/// (400 tokens, $0.04), so the same overload never spends more than the budget (with the
/// learned estimate, the calls in flight when the output grows take it past).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_worst_case_estimates_a_concurrent_overload_never_passes_the_budget() {
    let Some(redis) = redis_url() else { return };
    let (base, upstream) = upstream(Duration::from_millis(20), Arc::new(drifting)).await;
    let bases = three_gateways(&redis, &base, "worst-case", "  budget_estimate: worst_case").await;
    let (admitted, total) = overload(&bases, CLIENTS, 200).await;
    let spend = upstream.spend();
    eprintln!("worst case: {admitted} of {total} admitted, ${spend} spent");
    assert!(
        spend <= BUDGET + 1e-9,
        "{admitted} of {total} admitted, ${spend} spent of ${BUDGET}"
    );
    assert!(admitted >= 20, "{admitted} of {total} admitted");
}
