//! A scripted backend and router setup for the router's scenario tests (retries and backoff,
//! fallbacks, cooldowns), on tokio's paused time: waits are exact and nothing sleeps for real.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use ferrolite_cache::{CacheConfig, DualCache, TokioClock};
use ferrolite_router::{
    Backend, BackendChunk, BackendError, BackendFuture, BackendRequest, BackendResponse,
    BackendStream, BackendStreamFuture, Request, Router, RouterSettings,
};
use ferrolite_types::{Deployment, DeploymentId, ErrorClass, Usage};
use parking_lot::Mutex;
use tokio::time::Instant;

/// What one call does.
#[derive(Debug, Clone)]
pub enum Step {
    /// Answers at once with usage 10 + 5 tokens.
    Ok,
    /// Answers with this body at once.
    Body(serde_json::Value),
    /// Fails at once.
    Fail(ErrorClass),
    /// Never answers.
    Hang,
    /// Answers like `Ok` after this long.
    Delay(Duration),
    /// Fails after this long.
    FailAfter(Duration, ErrorClass),
    /// Answers a stream with these pieces (a plain call gets the pieces' last usage).
    Stream(Vec<Piece>),
}

/// One piece of a scripted stream.
#[derive(Debug, Clone)]
pub enum Piece {
    /// Waits this long.
    Wait(Duration),
    /// Sends a chunk `{"n": i}` (i counts the chunks).
    Chunk,
    /// Sends a chat chunk whose delta carries this text.
    Text(&'static str),
    /// Sends a chunk reporting this usage.
    Usage(Usage),
    /// Fails the stream.
    Fail(ErrorClass),
    /// Never sends anything again.
    Hang,
}

pub fn rate_limited() -> Step {
    Step::Fail(ErrorClass::RateLimited { retry_after: None })
}

pub fn status(code: u16) -> Step {
    Step::Fail(ErrorClass::from_status(code, None))
}

/// A backend whose calls follow a script: per deployment id first, then a shared queue, then Ok.
#[derive(Default)]
pub struct Script {
    per_deployment: Mutex<HashMap<String, VecDeque<Step>>>,
    shared: Mutex<VecDeque<Step>>,
    /// Every call: the deployment id and when it started.
    pub calls: Mutex<Vec<(String, Instant)>>,
    /// Per deployment: calls running now, and the most that ever ran at once.
    pub concurrency: Arc<Mutex<HashMap<String, (u32, u32)>>>,
    /// Every body a deployment received, in order.
    pub bodies: Mutex<Vec<serde_json::Value>>,
    /// Deployments whose health checks fail, and how.
    pub unhealthy: Mutex<HashMap<String, ErrorClass>>,
}

/// Counts a call as running until dropped (finished, failed or cancelled).
struct Running {
    id: String,
    concurrency: Arc<Mutex<HashMap<String, (u32, u32)>>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some((now, _)) = self.concurrency.lock().get_mut(&self.id) {
            *now -= 1;
        }
    }
}

impl Script {
    pub fn on(&self, id: &str, steps: impl IntoIterator<Item = Step>) {
        self.per_deployment
            .lock()
            .entry(id.to_string())
            .or_default()
            .extend(steps);
    }

    pub fn next(&self, steps: impl IntoIterator<Item = Step>) {
        self.shared.lock().extend(steps);
    }

    /// The deployment ids called, in order.
    pub fn called(&self) -> Vec<String> {
        self.calls.lock().iter().map(|(id, _)| id.clone()).collect()
    }

    /// The most calls that ran at once on `id`.
    pub fn max_concurrency(&self, id: &str) -> u32 {
        self.concurrency.lock().get(id).map_or(0, |(_, max)| *max)
    }

    /// The time between consecutive calls.
    pub fn gaps(&self) -> Vec<Duration> {
        let calls = self.calls.lock();
        calls.windows(2).map(|w| w[1].1 - w[0].1).collect()
    }
}

impl Script {
    /// Takes the next step for `deployment` and counts the call as running.
    fn begin(&self, deployment: &Deployment) -> (Step, Running) {
        let id = deployment.id().to_string();
        self.calls.lock().push((id.clone(), Instant::now()));
        let step = self
            .per_deployment
            .lock()
            .get_mut(&id)
            .and_then(VecDeque::pop_front)
            .or_else(|| self.shared.lock().pop_front())
            .unwrap_or(Step::Ok);
        {
            let mut concurrency = self.concurrency.lock();
            let (now, max) = concurrency.entry(id.clone()).or_insert((0, 0));
            *now += 1;
            *max = (*max).max(*now);
        }
        let running = Running {
            id,
            concurrency: Arc::clone(&self.concurrency),
        };
        (step, running)
    }

    /// Makes `id`'s health checks fail with `class` (`None`: pass).
    pub fn health(&self, id: &str, class: Option<ErrorClass>) {
        let mut unhealthy = self.unhealthy.lock();
        match class {
            Some(class) => unhealthy.insert(id.to_string(), class),
            None => unhealthy.remove(id),
        };
    }

    /// Streams running now on `id` (a dropped stream stops counting).
    pub fn running(&self, id: &str) -> u32 {
        self.concurrency.lock().get(id).map_or(0, |(now, _)| *now)
    }
}

impl Backend for Script {
    fn health_check<'a>(
        &'a self,
        deployment: &'a Deployment,
    ) -> ferrolite_router::HealthFuture<'a> {
        let failing = self
            .unhealthy
            .lock()
            .get(&deployment.id().to_string())
            .cloned();
        Box::pin(async move {
            match failing {
                Some(class) => Err(BackendError::new(class, "scripted health check failure")),
                None => Ok(()),
            }
        })
    }

    fn stream<'a>(
        &'a self,
        deployment: &'a Deployment,
        request: &'a BackendRequest,
    ) -> BackendStreamFuture<'a> {
        let (step, running) = self.begin(deployment);
        assert!(request.stream, "a stream's request says stream");
        Box::pin(async move {
            let pieces = match step {
                Step::Stream(pieces) => pieces,
                Step::Ok => vec![Piece::Chunk, Piece::Usage(Usage::new(10, 5))],
                Step::Delay(wait) => vec![
                    Piece::Wait(wait),
                    Piece::Chunk,
                    Piece::Usage(Usage::new(10, 5)),
                ],
                Step::Body(_) => vec![Piece::Chunk],
                Step::Fail(class) => return Err(BackendError::new(class, "scripted failure")),
                Step::FailAfter(wait, class) => {
                    tokio::time::sleep(wait).await;
                    return Err(BackendError::new(class, "scripted failure"));
                }
                Step::Hang => {
                    std::future::pending::<()>().await;
                    return Err(BackendError::new(ErrorClass::Connection, "unreachable"));
                }
            };
            let stream = futures_util::stream::unfold(
                (pieces.into_iter(), 0u32, running),
                |(mut pieces, mut n, running)| async move {
                    loop {
                        match pieces.next()? {
                            Piece::Wait(d) => tokio::time::sleep(d).await,
                            Piece::Chunk => {
                                n += 1;
                                let chunk = BackendChunk {
                                    protocol: Default::default(),
                                    body: serde_json::json!({ "n": n }).into(),
                                    usage: None,
                                };
                                return Some((Ok(chunk), (pieces, n, running)));
                            }
                            Piece::Text(text) => {
                                let chunk = BackendChunk {
                                    protocol: Default::default(),
                                    body: serde_json::json!({
                                        "object": "chat.completion.chunk",
                                        "choices": [{"index": 0, "delta": {"content": text}}],
                                    })
                                    .into(),
                                    usage: None,
                                };
                                return Some((Ok(chunk), (pieces, n, running)));
                            }
                            Piece::Usage(usage) => {
                                let chunk = BackendChunk {
                                    protocol: Default::default(),
                                    body: serde_json::json!({ "usage": true }).into(),
                                    usage: Some(usage),
                                };
                                return Some((Ok(chunk), (pieces, n, running)));
                            }
                            Piece::Fail(class) => {
                                let error = BackendError::new(class, "scripted stream failure");
                                return Some((Err(error), (Vec::new().into_iter(), n, running)));
                            }
                            Piece::Hang => std::future::pending::<()>().await,
                        }
                    }
                },
            );
            Ok(Box::pin(stream) as BackendStream)
        })
    }

    fn call<'a>(
        &'a self,
        deployment: &'a Deployment,
        request: &'a BackendRequest,
    ) -> BackendFuture<'a> {
        let (step, running) = self.begin(deployment);
        self.bodies.lock().push(request.body.clone());
        let model = request.body["model"].clone();
        Box::pin(async move {
            let _running = running;
            let step = match step {
                Step::Delay(wait) => {
                    tokio::time::sleep(wait).await;
                    Step::Ok
                }
                Step::FailAfter(wait, class) => {
                    tokio::time::sleep(wait).await;
                    Step::Fail(class)
                }
                step => step,
            };
            match step {
                Step::Delay(_) | Step::Ok => Ok(BackendResponse {
                    protocol: Default::default(),
                    body:
                        serde_json::json!({"model": model, "choices": [{"finish_reason": "stop"}]})
                            .into(),
                    usage: Some(Usage::new(10, 5)),
                    time_to_first_token: None,
                }),
                Step::Body(body) => Ok(BackendResponse {
                    protocol: Default::default(),
                    body: body.into(),
                    usage: Some(Usage::new(10, 5)),
                    time_to_first_token: None,
                }),
                Step::Fail(class) | Step::FailAfter(_, class) => {
                    Err(BackendError::new(class, "scripted failure"))
                }
                Step::Hang => {
                    std::future::pending::<()>().await;
                    Err(BackendError::new(ErrorClass::Connection, "unreachable"))
                }
                Step::Stream(pieces) => Ok(BackendResponse {
                    protocol: Default::default(),
                    body: serde_json::json!({"model": model}).into(),
                    usage: pieces.iter().rev().find_map(|p| match p {
                        Piece::Usage(u) => Some(*u),
                        _ => None,
                    }),
                    time_to_first_token: None,
                }),
            }
        })
    }
}

pub fn dep(group: &str, id: &str) -> Deployment {
    Deployment {
        id: Some(id.to_string()),
        ..Deployment::new(group, format!("openai/{id}"))
    }
}

/// Settings for exact tests: no jitter, a fixed seed.
pub fn settings() -> RouterSettings {
    let mut settings = RouterSettings {
        retry_jitter: Duration::ZERO,
        ..RouterSettings::default()
    };
    settings.strategy.seed = Some(7);
    settings
}

/// [`settings`] with `n` retries.
pub fn retries(n: u32) -> RouterSettings {
    RouterSettings {
        num_retries: n,
        ..settings()
    }
}

pub struct Setup {
    pub router: Router,
    pub script: Arc<Script>,
    pub cache: DualCache,
}

impl Setup {
    pub async fn call(
        &self,
        model: &str,
    ) -> Result<ferrolite_router::RouterResponse, ferrolite_router::RouterError> {
        self.router
            .call(Request::new(
                model,
                serde_json::json!({"messages": [{"role": "user", "content": "hi"}]}),
            ))
            .await
    }

    /// Cools `id` down for `seconds` as another failure would.
    pub async fn cool(&self, id: &str, seconds: u64) {
        let until = self.cache.clock().now_ms() + seconds * 1000;
        self.cache
            .deadlines()
            .deadline(&format!("{{{id}}}:cooldown"))
            .unwrap()
            .extend_to(until)
            .await
            .unwrap();
    }

    pub fn cooled(&self, id: &str) -> bool {
        self.router.cooled_until(&DeploymentId::new(id)).is_some()
    }
}

pub async fn setup(deployments: Vec<Deployment>, settings: RouterSettings) -> Setup {
    // Paused time from a fixed minute boundary (2026-01-01T00:00:00Z): a test's rate windows
    // never straddle a boundary by chance of when it runs.
    let clock = Arc::new(TokioClock::starting_at(1_767_225_600_000));
    let cache = DualCache::connect_with_clock(CacheConfig::default(), clock)
        .await
        .unwrap();
    let script = Arc::new(Script::default());
    let router = Router::new(deployments, settings, cache.clone(), script.clone()).unwrap();
    Setup {
        router,
        script,
        cache,
    }
}

pub fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}
