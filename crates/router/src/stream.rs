//! Streams: the rest of a stream an attempt opened ([`Tail`], recorded when it ends through the
//! attempt's one recording place, given back by its `Held` when dropped), the
//! [`RouterStream`] a caller reads, and the [`Recorder`] that keeps a stream's answer in the
//! response cache.

use std::sync::Arc;
use std::time::Duration;

use ferrolite_types::DeploymentId;
use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::attempt::{Delivered, Opened};
use crate::backend::{BackendChunk, BackendError};
use crate::call::Summary;
use crate::inner::Inner;
use crate::response_cache::{Controls, Identity, Remembered, assemble};
use crate::{RouterError, RouterResponse, Tried};

/// The rest of a stream an attempt opened, with everything its call holds until it ends.
pub(crate) struct Tail {
    inner: Arc<Inner>,
    /// The stream, and what its call holds (boxed once, by the attempt that opened it).
    opened: Box<Opened>,
    done: bool,
    /// What the stream's end recorded, for [`RouterStream`].
    end: Arc<Mutex<Option<StreamEnd>>>,
}

/// What a stream's clean end recorded.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct StreamEnd {
    pub(crate) usage: Option<ferrolite_types::Usage>,
    pub(crate) cost: Option<f64>,
}

impl Drop for Tail {
    fn drop(&mut self) {
        // Dropped before its end (a client that went away): the guard gives back the slot and
        // in-flight count and charges the budget for what was generated so far (see `Held`);
        // then the queue's head is woken.
        drop(self.opened.held.take());
        if let Some(deployment) = self.opened.snapshot.deployment(self.opened.ix) {
            self.inner.wake_queue(&deployment.model_name);
        }
    }
}

impl Tail {
    /// The rest of the stream `opened`, and its first chunk.
    pub(crate) fn new(inner: Arc<Inner>, mut opened: Box<Opened>) -> (BackendChunk, Self) {
        let first = std::mem::take(&mut opened.first);
        let tail = Tail {
            inner,
            opened,
            done: false,
            end: Arc::default(),
        };
        (first, tail)
    }

    /// The next chunk; at the end of the stream its outcome is recorded first.
    async fn next(&mut self) -> Option<Result<BackendChunk, RouterError>> {
        if self.done {
            return None;
        }
        let Opened { held, rest, .. } = &mut *self.opened;
        let next = match held {
            Some(held) => {
                let ttl = self.inner.settings.lease_ttl;
                held.renewing(rest.next(), ttl).await
            }
            None => rest.next().await,
        };
        match next {
            Some(Ok(chunk)) => {
                if let Some(held) = &mut self.opened.held {
                    held.streamed(&chunk);
                }
                Some(Ok(chunk))
            }
            None => {
                self.done = true;
                self.finish().await;
                None
            }
            Some(Err(error)) => {
                self.done = true;
                Some(Err(self.fail(error).await))
            }
        }
    }

    /// The stream ended cleanly: record it as a call's success.
    async fn finish(&mut self) {
        let Some(mut held) = self.opened.held.take() else {
            return;
        };
        let usage = held.stream_usage();
        let delivered = Delivered {
            usage,
            latency: self.opened.started.elapsed(),
            time_to_first_token: Some(self.opened.time_to_first_token),
        };
        let cost = self
            .inner
            .succeeded(&self.opened.snapshot, &mut held, &delivered)
            .await;
        *self.end.lock() = Some(StreamEnd { usage, cost });
    }

    /// The stream broke after its first chunk: record the failure (it counts towards the
    /// deployment's cooldown) and end the stream with the error. The budget is charged for
    /// the usage the provider reported before it broke, else nothing.
    async fn fail(&mut self, error: BackendError) -> RouterError {
        let opened = &mut *self.opened;
        let model_group = opened
            .snapshot
            .deployment(opened.ix)
            .map(|d| d.model_name.clone())
            .unwrap_or_default();
        let deployment = opened
            .snapshot
            .target(opened.ix)
            .map(|t| t.id.clone())
            .unwrap_or_else(|| DeploymentId::new(""));
        if let Some(mut held) = opened.held.take() {
            let failed = self.inner.failed(
                &opened.snapshot,
                &mut held,
                opened.has_fallbacks,
                &error.class,
                &error.message,
            );
            Box::pin(failed).await;
        }
        let mut tried = std::mem::take(&mut opened.tried);
        tried.push(Tried {
            model_group: model_group.clone(),
            deployment: deployment.clone(),
            class: error.class.clone(),
            message: error.message.clone(),
        });
        tracing::warn!(%deployment, class = ?error.class, "stream failed after its first chunk");
        RouterError::Backend {
            model_group,
            deployment,
            class: error.class,
            message: error.message,
            tried,
        }
    }
}

/// A routed stream: the chunks as the deployment sends them, with what LiteLLM puts in its
/// `x-litellm-*` headers known before the first chunk. The call's usage and cost are known once
/// the stream has ended ([`RouterStream::usage`], [`RouterStream::response_cost`]).
///
/// Dropping it early (a client that went away) cancels the deployment's stream, gives back the
/// call's in-flight count and slot, and charges its budget for what was generated so far.
pub struct RouterStream {
    /// `x-litellm-model-id`: the deployment streaming.
    pub deployment_id: DeploymentId,
    /// `x-litellm-model-group`.
    pub model_group: String,
    /// `x-litellm-attempted-retries`: the retries within the group that answered.
    pub attempted_retries: u32,
    /// `x-litellm-max-retries`: the answering group's retry limit, when it retried.
    pub max_retries: Option<u32>,
    /// `x-litellm-attempted-fallbacks`.
    pub attempted_fallbacks: u32,
    /// `x-litellm-model-api-base`: the streaming deployment's `api_base`, when it has one.
    pub api_base: Option<String>,
    /// The router's own time up to the first chunk.
    pub overhead: Duration,
    /// Time to the first chunk of the attempt that answered.
    pub time_to_first_token: Duration,
    /// Whether the response cache answered (the stream replays a stored answer).
    pub cache_hit: bool,
    /// `x-litellm-cache-key`: the response cache's key for this request, when the cache is on.
    pub cache_key: Option<String>,
    end: Arc<Mutex<Option<StreamEnd>>>,
    chunks: std::pin::Pin<
        Box<dyn futures_core::Stream<Item = Result<BackendChunk, RouterError>> + Send>,
    >,
}

impl std::fmt::Debug for RouterStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterStream")
            .field("deployment_id", &self.deployment_id)
            .field("model_group", &self.model_group)
            .finish_non_exhaustive()
    }
}

impl RouterStream {
    /// The stream of `deployment_id` in `model_group`: `first`, then `tail`'s chunks.
    pub(crate) fn new(
        deployment_id: DeploymentId,
        model_group: String,
        summary: Summary,
        first: BackendChunk,
        tail: Tail,
    ) -> Self {
        let end = Arc::clone(&tail.end);
        let time_to_first_token = tail.opened.time_to_first_token;
        let chunks =
            futures_util::stream::unfold((Some(first), tail), |(mut first, mut tail)| async move {
                let item = match first.take() {
                    Some(first) => Some(Ok(first)),
                    None => tail.next().await,
                };
                item.map(|item| (item, (None, tail)))
            });
        RouterStream {
            deployment_id,
            model_group,
            attempted_retries: summary.retries.0,
            max_retries: summary.retries.1,
            attempted_fallbacks: summary.fallbacks,
            api_base: summary.api_base,
            overhead: summary.overhead,
            time_to_first_token,
            cache_hit: false,
            cache_key: None,
            end,
            chunks: Box::pin(chunks),
        }
    }

    /// A stream that replays a cached answer: no deployment is called, it costs nothing.
    pub(crate) fn replay(remembered: &Remembered, started: Instant) -> Self {
        let entry = &remembered.entry;
        let chunks = entry.replay();
        RouterStream {
            deployment_id: DeploymentId::new(entry.deployment.as_str()),
            model_group: entry.model_group.clone(),
            attempted_retries: 0,
            max_retries: None,
            attempted_fallbacks: 0,
            api_base: None,
            overhead: started.elapsed(),
            time_to_first_token: started.elapsed(),
            cache_hit: true,
            cache_key: Some(remembered.key().to_string()),
            end: Arc::new(Mutex::new(Some(StreamEnd {
                usage: entry.usage(),
                cost: Some(0.0),
            }))),
            chunks: Box::pin(futures_util::stream::iter(chunks.into_iter().map(Ok))),
        }
    }

    /// Stores the stream's answer in the response cache once it has ended without an error
    /// (a stream that breaks or is dropped before its end stores nothing).
    pub(crate) fn record(&mut self, inner: Arc<Inner>, id: Identity, controls: Controls) {
        let chunks = std::mem::replace(&mut self.chunks, Box::pin(futures_util::stream::empty()));
        let recorder = Recorder {
            inner,
            id,
            controls,
            end: Arc::clone(&self.end),
            deployment_id: self.deployment_id.clone(),
            model_group: self.model_group.clone(),
        };
        let recorded = futures_util::stream::unfold(
            (chunks, Vec::new(), Some(recorder)),
            |(mut chunks, mut seen, recorder)| async move {
                match chunks.next().await {
                    // A pass-through stream (the caller's own protocol) is not stored: the
                    // cache keeps answers in the canonical form.
                    Some(Ok(chunk)) if chunk.protocol != ferrolite_types::Protocol::OpenAiChat => {
                        Some((Ok(chunk), (chunks, Vec::new(), None)))
                    }
                    Some(Ok(chunk)) => {
                        if recorder.is_some() {
                            seen.push(chunk.body.clone());
                        }
                        Some((Ok(chunk), (chunks, seen, recorder)))
                    }
                    // A broken stream is never stored.
                    Some(Err(error)) => Some((Err(error), (chunks, Vec::new(), None))),
                    None => {
                        if let Some(recorder) = recorder {
                            recorder.store(seen).await;
                        }
                        None
                    }
                }
            },
        );
        self.chunks = Box::pin(recorded);
    }

    /// The call's token usage, once the stream has ended cleanly (when the provider reported it).
    pub fn usage(&self) -> Option<ferrolite_types::Usage> {
        self.end.lock().and_then(|end| end.usage)
    }

    /// `x-litellm-response-cost`, once the stream has ended cleanly.
    pub fn response_cost(&self) -> Option<f64> {
        self.end.lock().and_then(|end| end.cost)
    }
}

/// What a recorded stream needs to store its answer when it ends.
struct Recorder {
    inner: Arc<Inner>,
    id: Identity,
    controls: Controls,
    end: Arc<Mutex<Option<StreamEnd>>>,
    deployment_id: DeploymentId,
    model_group: String,
}

impl Recorder {
    async fn store(self, chunks: Vec<crate::Body>) {
        let Some(responses) = &self.inner.responses else {
            return;
        };
        let end = *self.end.lock();
        let Some(end) = end else {
            return;
        };
        let answer = RouterResponse {
            body: assemble(&chunks),
            usage: end.usage,
            deployment_id: self.deployment_id,
            model_group: self.model_group,
            attempted_retries: 0,
            max_retries: None,
            attempted_fallbacks: 0,
            api_base: None,
            response_cost: end.cost,
            overhead: Duration::ZERO,
            cache_hit: false,
            cache_key: None,
            protocol: ferrolite_types::Protocol::OpenAiChat,
        };
        responses
            .keep(&self.id, &self.controls, &answer, Some(chunks))
            .await;
    }
}

impl futures_core::Stream for RouterStream {
    type Item = Result<BackendChunk, RouterError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.chunks.as_mut().poll_next(cx)
    }
}
