//! The response cache (LiteLLM's `cache_responses`): an identical request is answered from the
//! cache without admission or a backend call — it counts no rpm/tpm and costs nothing — in
//! memory (moka, bounded in bytes) and in Redis (shared by every instance). A burst of identical
//! requests that miss shares one backend call (single flight).
//!
//! The key is `response:` and a SHA-256 of a canonical encoding of the model group (or its
//! caching group), the namespace and the body without the fields that do not change the answer
//! ([`IGNORED`]): object keys sorted at every level, lengths before strings, so key order and
//! whitespace do not matter. The memory tier is indexed by a fast seeded hash of the same
//! encoding and answers only when the stored encoding is byte-equal to the request's, so a hit
//! computes no SHA-256 and a fast-hash collision can never serve another request's answer.
//!
//! A request's `cache` object controls it, as LiteLLM's: `use-cache` (`false` passes the cache
//! by; `true` opts in when the cache is opt-in), `no-cache` (do not read), `no-store` (do not
//! write), `ttl` (seconds to keep this answer), `s-maxage` (accept only entries younger than
//! this many seconds), `namespace` (a separate key space).

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use ferrolite_cache::DualCache;
use ferrolite_types::{DeploymentId, Usage};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::{BackendChunk, Body, RouterError, RouterResponse};

/// Body fields that do not change the answer: left out of the key.
pub const IGNORED: [&str; 10] = [
    "user",
    "metadata",
    "stream",
    "stream_options",
    "cache",
    "priority",
    "fallbacks",
    "num_retries",
    "disable_fallbacks",
    "timeout",
];

/// How responses are cached.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseCacheSettings {
    /// How long an answer is kept unless the request says (LiteLLM's default: one hour).
    pub ttl: Duration,
    /// The memory tier's bound in bytes (answers are evicted past it); 0 keeps answers in
    /// Redis only.
    pub memory_bytes: u64,
    /// Whether answers are also kept in Redis (when the router's cache has Redis).
    pub redis: bool,
    /// `caching_groups`: groups that share entries, e.g. `[["gpt-4o", "gpt-4o-azure"]]`.
    pub caching_groups: Vec<Vec<String>>,
    /// Opt-in caching (LiteLLM's `cache_params.mode: default_off`): only requests whose `cache`
    /// says `"use-cache": true` read or write the cache.
    pub opt_in: bool,
    /// The namespace of requests that name none (LiteLLM's `cache_params.namespace`).
    pub namespace: Option<String>,
    /// Top-level body fields left out of the key besides [`IGNORED`] (fields of your own that
    /// do not change the answer, such as a client's trace id).
    pub ignore_fields: Vec<String>,
}

impl ResponseCacheSettings {
    /// A TTL and a memory bound above zero; a group in at most one caching group.
    pub(crate) fn validate(&self) -> Result<(), RouterError> {
        let invalid = |field: &str, value: String, reason| RouterError::InvalidSettings {
            field: format!("response_cache.{field}"),
            value,
            reason,
        };
        if self.ttl.is_zero() {
            return Err(invalid(
                "ttl",
                format!("{:?}", self.ttl),
                "must be greater than zero",
            ));
        }
        if self.memory_bytes == 0 && !self.redis {
            return Err(invalid(
                "memory_bytes",
                "0".into(),
                "with Redis off the memory tier is the only one: give it some bytes",
            ));
        }
        let mut seen = HashSet::new();
        for (i, group) in self.caching_groups.iter().enumerate() {
            if group.is_empty() {
                return Err(invalid(
                    &format!("caching_groups[{i}]"),
                    "[]".into(),
                    "a caching group names at least one model group",
                ));
            }
            for model in group {
                if !seen.insert(model.as_str()) {
                    return Err(invalid(
                        &format!("caching_groups[{i}]"),
                        model.clone(),
                        "a model group belongs to at most one caching group",
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Default for ResponseCacheSettings {
    fn default() -> Self {
        ResponseCacheSettings {
            ttl: Duration::from_secs(3600),
            memory_bytes: 64 << 20,
            redis: true,
            caching_groups: Vec::new(),
            opt_in: false,
            namespace: None,
            ignore_fields: Vec::new(),
        }
    }
}

/// A cached answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// Format version.
    pub(crate) v: u32,
    pub(crate) stored_ms: u64,
    pub(crate) expires_ms: u64,
    /// The whole answer (for a streamed one: its chunks assembled), as its bytes.
    pub(crate) body: Body,
    /// A streamed answer's chunks as the deployment sent them (replayed as they were).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) chunks: Option<Vec<Body>>,
    pub(crate) usage: Option<(u64, u64, u64)>,
    pub(crate) deployment: String,
    pub(crate) model_group: String,
}

/// The format version of entries (an entry of another version is a miss).
const VERSION: u32 = 1;

impl Entry {
    /// The entry for `answer`, kept for `ttl` from `now_ms`.
    pub(crate) fn of(
        answer: &RouterResponse,
        chunks: Option<Vec<Body>>,
        now_ms: u64,
        ttl: Duration,
    ) -> Self {
        Entry {
            v: VERSION,
            stored_ms: now_ms,
            expires_ms: now_ms.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
            body: answer.body.clone(),
            chunks,
            usage: answer
                .usage
                .map(|u| (u.prompt_tokens, u.completion_tokens, u.total_tokens)),
            deployment: answer.deployment_id.as_str().to_string(),
            model_group: answer.model_group.clone(),
        }
    }

    /// The answer this entry gives a request now: no retries, no cost, the cache's key.
    pub(crate) fn answer(&self, key: &str, started: Instant) -> RouterResponse {
        RouterResponse {
            body: self.body.clone(),
            usage: self.usage(),
            deployment_id: DeploymentId::new(self.deployment.as_str()),
            model_group: self.model_group.clone(),
            attempted_retries: 0,
            max_retries: None,
            attempted_fallbacks: 0,
            attempts: 0,
            api_base: None,
            response_cost: Some(0.0),
            overhead: started.elapsed(),
            cache_hit: true,
            cache_key: Some(key.to_string()),
            protocol: ferrolite_types::Protocol::OpenAiChat,
            route: None,
        }
    }

    /// The chunks a streamed request that hits this entry receives: the stored chunks, or one
    /// chunk made from a whole answer.
    pub(crate) fn replay(&self) -> Vec<BackendChunk> {
        let usage = self.usage();
        match &self.chunks {
            Some(chunks) => {
                let last = chunks.len().saturating_sub(1);
                chunks
                    .iter()
                    .enumerate()
                    .map(|(i, body)| BackendChunk {
                        body: body.clone(),
                        usage: if i == last { usage } else { None },
                        protocol: ferrolite_types::Protocol::OpenAiChat,
                    })
                    .collect()
            }
            None => vec![BackendChunk {
                body: chunk_of(&self.body),
                usage,
                protocol: ferrolite_types::Protocol::OpenAiChat,
            }],
        }
    }

    pub(crate) fn usage(&self) -> Option<Usage> {
        self.usage.map(|(p, c, t)| {
            let mut usage = Usage::new(p, c);
            usage.total_tokens = t;
            usage
        })
    }
}

/// A request's `cache` controls.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Controls {
    /// `use-cache`: `false` bypasses the cache; `true` is needed when the cache is opt-in.
    pub(crate) use_cache: Option<bool>,
    pub(crate) no_cache: bool,
    pub(crate) no_store: bool,
    pub(crate) ttl: Option<Duration>,
    pub(crate) s_maxage: Option<Duration>,
    pub(crate) namespace: Option<String>,
}

impl Controls {
    /// The controls of a body's `cache` object; a malformed one is a typed error.
    pub(crate) fn of(body: &serde_json::Value) -> Result<Self, RouterError> {
        let Some(cache) = body.get("cache") else {
            return Ok(Controls::default());
        };
        let invalid = |reason| RouterError::InvalidRequest {
            field: "cache",
            value: cache.to_string(),
            reason,
        };
        let object = cache.as_object().ok_or_else(|| {
            invalid("an object with no-cache, no-store, ttl, s-maxage, namespace")
        })?;
        let flag = |name: &str| object.get(name).and_then(|v| v.as_bool()).unwrap_or(false);
        let seconds = |name: &str| -> Result<Option<Duration>, RouterError> {
            match object.get(name) {
                None | Some(serde_json::Value::Null) => Ok(None),
                // A number too large for a duration (`1e20`) is refused like a negative one.
                Some(v) => match v.as_f64().and_then(|s| Duration::try_from_secs_f64(s).ok()) {
                    Some(duration) => Ok(Some(duration)),
                    None => Err(invalid(
                        "ttl and s-maxage are non-negative numbers of seconds",
                    )),
                },
            }
        };
        Ok(Controls {
            use_cache: object.get("use-cache").and_then(|v| v.as_bool()),
            no_cache: flag("no-cache"),
            no_store: flag("no-store"),
            ttl: seconds("ttl")?,
            s_maxage: seconds("s-maxage")?,
            namespace: object
                .get("namespace")
                .and_then(|n| n.as_str())
                .map(str::to_string),
        })
    }
}

/// What a flight's leader publishes to the requests that waited for it.
type Landed = Option<Result<RouterResponse, RouterError>>;

/// An answer in the memory tier, with the request it answers: its key and its canonical
/// encoding, compared byte for byte on every hit (the memory tier's index is a fast hash, so
/// two requests never share an answer unless their canonical bodies are equal).
pub(crate) struct Remembered {
    pub(crate) entry: Entry,
    key: String,
    canonical: Box<[u8]>,
}

/// A request the memory tier did not answer: what the rest of the way needs.
#[derive(Default)]
pub(crate) struct Identity {
    /// `response:` and the SHA-256 of the canonical encoding (the Redis key, the flight's key,
    /// `x-litellm-cache-key`).
    pub(crate) key: String,
    /// The memory tier's index.
    fast: u64,
    canonical: Box<[u8]>,
}

/// Where a request stands after the memory tier.
pub(crate) enum Recall {
    /// A fresh answer in memory.
    Hit(Arc<Remembered>),
    /// Not in memory (or not to be read from it).
    Miss(Identity),
}

/// The response cache of one router.
pub(crate) struct ResponseCache {
    settings: ResponseCacheSettings,
    /// The memory tier, by a fast keyed hash of the canonical encoding (`None` with
    /// `memory_bytes: 0`: Redis only).
    memory: Option<moka::sync::Cache<u64, Arc<Remembered>>>,
    /// The memory tier's hasher (seeded at random per process).
    hasher: foldhash::quality::RandomState,
    shared: DualCache,
    /// One miss in flight per key: later identical requests wait for its answer.
    flights: Mutex<HashMap<String, watch::Receiver<Landed>>>,
}

/// A memory entry lives as long as the entry says (freshness is checked on the cache's clock
/// at every read as well, so paused-time tests and `s-maxage` are exact).
struct EntryExpiry;

impl moka::Expiry<u64, Arc<Remembered>> for EntryExpiry {
    fn expire_after_create(
        &self,
        _key: &u64,
        value: &Arc<Remembered>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        let entry = &value.entry;
        Some(Duration::from_millis(
            entry.expires_ms.saturating_sub(entry.stored_ms),
        ))
    }
}

/// Where a request stands in its key's flight.
enum Turn {
    /// It leads a new flight: its answer is sent here.
    Lead(watch::Sender<Landed>),
    /// An identical request leads the flight in the air.
    Wait(watch::Receiver<Landed>),
}

/// What the response cache's front step says of a call.
pub(crate) enum Front<'c> {
    /// The request passes the cache by: route it, keep nothing.
    Bypass,
    /// A fresh answer, in memory or in Redis.
    Hit(Arc<Remembered>),
    /// No answer: route the call and keep its answer ([`Miss::land`], or for a stream
    /// [`Miss::into_parts`]).
    Lead(Miss<'c>),
    /// An identical request is being answered: wait for its answer ([`Waiting::landed`]).
    Wait(Waiting),
}

/// A request the cache has no answer for: what keeping its answer needs, and the flight its
/// waiters wait on (a whole call's). Dropped without landing (the call was cancelled), it ends
/// the flight: the waiters see the channel close and try again.
pub(crate) struct Miss<'c> {
    cache: &'c ResponseCache,
    id: Identity,
    controls: Controls,
    flight: Option<watch::Sender<Landed>>,
}

impl Miss<'_> {
    /// The routed call's `answer`: kept (unless `no-store`), with its key, and sent to the
    /// flight's waiters.
    pub(crate) async fn land(
        mut self,
        answer: Result<RouterResponse, RouterError>,
    ) -> Result<RouterResponse, RouterError> {
        let answer = match answer {
            Ok(answer) => {
                self.cache
                    .keep(&self.id, &self.controls, &answer, None)
                    .await;
                Ok(with_key(answer, &self.id.key))
            }
            Err(error) => Err(error),
        };
        if let Some(flight) = &self.flight {
            flight.send_replace(Some(answer.clone()));
        }
        self.end_flight();
        answer
    }

    /// What a stream's recorder needs: the request's identity and controls.
    pub(crate) fn into_parts(mut self) -> (Identity, Controls) {
        self.end_flight();
        (
            std::mem::take(&mut self.id),
            std::mem::take(&mut self.controls),
        )
    }

    /// Removes the flight this request leads (if it still is the key's).
    fn end_flight(&mut self) {
        let Some(sender) = self.flight.take() else {
            return;
        };
        let mut flights = self.cache.flights.lock();
        if flights
            .get(&self.id.key)
            .is_some_and(|receiver| receiver.same_channel(&sender.subscribe()))
        {
            flights.remove(&self.id.key);
        }
    }
}

impl Drop for Miss<'_> {
    fn drop(&mut self) {
        self.end_flight();
    }
}

/// A request waiting for an identical one's answer.
pub(crate) struct Waiting {
    receiver: watch::Receiver<Landed>,
}

impl Waiting {
    /// The leader's answer (a hit, costing nothing), waited for no longer than `deadline` from
    /// `started`; `None` when the leader was cancelled before it answered (look again).
    pub(crate) async fn landed(
        mut self,
        deadline: Option<Duration>,
        started: Instant,
    ) -> Option<Result<RouterResponse, RouterError>> {
        let landed = self.receiver.wait_for(Option::is_some);
        let landed = match deadline {
            Some(deadline) => {
                match tokio::time::timeout(deadline.saturating_sub(started.elapsed()), landed).await
                {
                    Ok(landed) => landed,
                    Err(_) => {
                        return Some(Err(RouterError::DeadlineExceeded {
                            deadline,
                            attempts: 0,
                        }));
                    }
                }
            }
            None => landed.await,
        };
        match landed.as_deref() {
            Ok(Some(Ok(answer))) => {
                count(true);
                let mut answer = answer.clone();
                answer.cache_hit = true;
                answer.response_cost = Some(0.0);
                answer.attempted_retries = 0;
                answer.attempted_fallbacks = 0;
                answer.overhead = started.elapsed();
                Some(Ok(answer))
            }
            Ok(Some(Err(error))) => Some(Err(error.clone())),
            // The leader was cancelled before it answered.
            Ok(None) | Err(_) => None,
        }
    }
}

thread_local! {
    /// The buffer a request's canonical encoding is written to on a memory hit (reused: a hit
    /// allocates no buffer).
    static CANONICAL: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(4096));
}

impl ResponseCache {
    pub(crate) fn new(settings: ResponseCacheSettings, shared: DualCache) -> Self {
        let memory = (settings.memory_bytes > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(settings.memory_bytes)
                .weigher(|_: &u64, remembered: &Arc<Remembered>| {
                    u32::try_from(remembered.weight()).unwrap_or(u32::MAX)
                })
                .expire_after(EntryExpiry)
                .build()
        });
        ResponseCache {
            settings,
            memory,
            hasher: foldhash::quality::RandomState::default(),
            shared,
            flights: Mutex::new(HashMap::new()),
        }
    }

    /// The group whose entries `model` shares: the first of its caching group, else itself.
    fn key_group<'a>(&'a self, model: &'a str) -> &'a str {
        self.settings
            .caching_groups
            .iter()
            .find(|group| group.iter().any(|m| m == model))
            .and_then(|group| group.first())
            .map_or(model, String::as_str)
    }

    /// Appends the canonical encoding of a request: its (caching) group, namespace and body
    /// without `model` and the fields in [`IGNORED`] and `ignore_fields`.
    fn encode_request(
        &self,
        model: &str,
        body: &serde_json::Value,
        namespace: Option<&str>,
        out: &mut Vec<u8>,
    ) {
        encode_str(self.key_group(model), out);
        match namespace.or(self.settings.namespace.as_deref()) {
            Some(namespace) => encode_str(namespace, out),
            None => out.push(b'n'),
        }
        match body.as_object() {
            Some(object) => {
                let kept = |k: &str| {
                    k != "model"
                        && !IGNORED.contains(&k)
                        && !self.settings.ignore_fields.iter().any(|f| f == k)
                };
                encode_object(object.iter().filter(|(k, _)| kept(k)), out);
            }
            None => encode(body, out),
        }
    }

    /// The key of a request (`x-litellm-cache-key`, the Redis key).
    pub(crate) fn key(
        &self,
        model: &str,
        body: &serde_json::Value,
        namespace: Option<&str>,
    ) -> String {
        let mut canonical = Vec::new();
        self.encode_request(model, body, namespace, &mut canonical);
        key_of(&canonical)
    }

    /// The memory tier's answer to a request, or what the rest of the way needs. A hit costs
    /// the encoding (into a reused buffer), a fast hash and a byte comparison; the SHA-256 is
    /// only computed on a miss.
    pub(crate) fn recall(
        &self,
        model: &str,
        body: &serde_json::Value,
        controls: &Controls,
    ) -> Recall {
        let probe = |canonical: &mut Vec<u8>| {
            canonical.clear();
            self.encode_request(model, body, controls.namespace.as_deref(), canonical);
            let fast = self.hasher.hash_one(canonical.as_slice());
            if !controls.no_cache {
                if let Some(remembered) = self.remembered(fast, canonical, controls) {
                    return Recall::Hit(remembered);
                }
            }
            Recall::Miss(Identity {
                key: key_of(canonical),
                fast,
                canonical: canonical.as_slice().into(),
            })
        };
        let recall = CANONICAL.with(|buffer| match buffer.try_borrow_mut() {
            Ok(mut canonical) => {
                let recall = probe(&mut canonical);
                if canonical.capacity() > 1 << 16 {
                    // One huge body does not pin a huge buffer for good.
                    *canonical = Vec::with_capacity(4096);
                }
                Some(recall)
            }
            Err(_) => None,
        });
        recall.unwrap_or_else(|| probe(&mut Vec::new()))
    }

    /// A fresh memory entry for exactly this canonical encoding.
    fn remembered(
        &self,
        fast: u64,
        canonical: &[u8],
        controls: &Controls,
    ) -> Option<Arc<Remembered>> {
        let remembered = self.memory.as_ref()?.get(&fast)?;
        (*remembered.canonical == *canonical && self.fresh(&remembered.entry, controls))
            .then_some(remembered)
    }

    /// Whether `entry` may answer now: not expired, and no older than the request's `s-maxage`.
    fn fresh(&self, entry: &Entry, controls: &Controls) -> bool {
        let now_ms = self.now_ms();
        entry.expires_ms > now_ms
            && controls.s_maxage.is_none_or(|max| {
                now_ms.saturating_sub(entry.stored_ms)
                    <= u64::try_from(max.as_millis()).unwrap_or(u64::MAX)
            })
    }

    /// A fresh entry for the request: memory (it may have been stored since the request's
    /// first look), then Redis. A Redis entry that does not decode is a miss (logged), never an
    /// answer; one that does is kept in memory too.
    pub(crate) async fn lookup(
        &self,
        id: &Identity,
        controls: &Controls,
    ) -> Option<Arc<Remembered>> {
        if let Some(remembered) = self.remembered(id.fast, &id.canonical, controls) {
            return Some(remembered);
        }
        if !self.settings.redis {
            return None;
        }
        let text = match self.shared.shared().get(&id.key).await {
            Ok(Some(text)) => text,
            Ok(None) => return None,
            Err(error) => {
                tracing::debug!(%error, "response cache: Redis read failed; a miss");
                return None;
            }
        };
        let entry = match serde_json::from_str::<Entry>(&text) {
            Ok(entry) if entry.v == VERSION => entry,
            Ok(_) | Err(_) => {
                metrics::counter!("ferrolite_response_cache_corrupt_total").increment(1);
                tracing::warn!(
                    key = %id.key,
                    "response cache: an entry in Redis does not decode; a miss"
                );
                return None;
            }
        };
        if !self.fresh(&entry, controls) {
            return None;
        }
        Some(self.remember(id, entry))
    }

    /// Keeps `entry` in the memory tier (when there is one); the remembered answer.
    fn remember(&self, id: &Identity, entry: Entry) -> Arc<Remembered> {
        let remembered = Arc::new(Remembered {
            entry,
            key: id.key.clone(),
            canonical: id.canonical.clone(),
        });
        if let Some(memory) = &self.memory {
            memory.insert(id.fast, Arc::clone(&remembered));
            metrics::gauge!("ferrolite_response_cache_bytes").set(memory.weighted_size() as f64);
        }
        remembered
    }

    /// Keeps `entry` in memory and (when configured) in Redis; a Redis failure is logged and
    /// the memory tier still has it.
    pub(crate) async fn store(&self, id: &Identity, entry: Entry) {
        let ttl = Duration::from_millis(entry.expires_ms.saturating_sub(entry.stored_ms));
        if ttl.is_zero() {
            return;
        }
        if self.settings.redis {
            match serde_json::to_string(&entry) {
                Ok(text) => {
                    if let Err(error) = self.shared.shared().set(&id.key, &text, ttl).await {
                        tracing::debug!(%error, "response cache: Redis write failed");
                    }
                }
                Err(error) => tracing::warn!(%error, "response cache: an answer does not encode"),
            }
        }
        self.remember(id, entry);
    }

    /// Whether a request passes the cache by: `"use-cache": false`, or an opt-in cache and no
    /// `"use-cache": true`.
    pub(crate) fn bypassed(&self, controls: &Controls) -> bool {
        match controls.use_cache {
            Some(use_cache) => !use_cache,
            None => self.settings.opt_in,
        }
    }

    /// The TTL of a new entry: the request's, else the settings'.
    pub(crate) fn ttl(&self, controls: &Controls) -> Duration {
        controls.ttl.unwrap_or(self.settings.ttl)
    }

    /// The cache's clock (the router's).
    pub(crate) fn now_ms(&self) -> u64 {
        self.shared.clock().now_ms()
    }

    /// Entries in memory and their weight in bytes (after pending maintenance).
    pub(crate) fn memory_usage(&self) -> (u64, u64) {
        match &self.memory {
            Some(memory) => {
                memory.run_pending_tasks();
                (memory.entry_count(), memory.weighted_size())
            }
            None => (0, 0),
        }
    }

    /// The front step of a call through the cache: whether it passes the cache by, is
    /// answered from it (memory, then Redis), or routes and keeps its answer. With `flights`
    /// (whole calls), the first of concurrent identical requests that miss leads the key's
    /// flight and the others wait for its answer; a stream routes on its own.
    pub(crate) async fn front(
        &self,
        model: &str,
        body: &serde_json::Value,
        flights: bool,
    ) -> Result<Front<'_>, RouterError> {
        let controls = Controls::of(body)?;
        if self.bypassed(&controls) {
            return Ok(Front::Bypass);
        }
        let id = match self.recall(model, body, &controls) {
            Recall::Hit(remembered) => return Ok(self.count(Front::Hit(remembered))),
            Recall::Miss(id) => id,
        };
        let miss = |id, flight| {
            self.count(Front::Lead(Miss {
                cache: self,
                id,
                controls: controls.clone(),
                flight,
            }))
        };
        if controls.no_cache {
            return Ok(miss(id, None));
        }
        if let Some(remembered) = self.lookup(&id, &controls).await {
            return Ok(self.count(Front::Hit(remembered)));
        }
        if !flights {
            return Ok(miss(id, None));
        }
        match self.turn(&id.key) {
            Turn::Lead(sender) => {
                // Another leader may have stored the answer since the lookup above (this
                // flight then lands at once: its waiters look again and find it).
                if let Some(remembered) = self.lookup(&id, &controls).await {
                    drop(Miss {
                        cache: self,
                        id,
                        controls,
                        flight: Some(sender),
                    });
                    return Ok(self.count(Front::Hit(remembered)));
                }
                Ok(miss(id, Some(sender)))
            }
            Turn::Wait(receiver) => Ok(Front::Wait(Waiting { receiver })),
        }
    }

    /// Counts a front step's hit or miss.
    fn count<'c>(&self, front: Front<'c>) -> Front<'c> {
        match &front {
            Front::Hit(_) => count(true),
            Front::Lead(_) => count(false),
            Front::Bypass | Front::Wait(_) => {}
        }
        front
    }

    /// Leads `key`'s flight, or waits for the one in the air.
    fn turn(&self, key: &str) -> Turn {
        let mut flights = self.flights.lock();
        if let Some(receiver) = flights.get(key) {
            // A closed channel is a flight whose leader is gone: lead a new one.
            if receiver.has_changed().is_ok() {
                return Turn::Wait(receiver.clone());
            }
        }
        let (sender, receiver) = watch::channel(None);
        flights.insert(key.to_string(), receiver);
        Turn::Lead(sender)
    }

    /// Stores a call's answer unless the request said `no-store`.
    pub(crate) async fn keep(
        &self,
        id: &Identity,
        controls: &Controls,
        answer: &RouterResponse,
        chunks: Option<Vec<Body>>,
    ) {
        // A pass-through answer (the caller's own protocol) is not stored: the cache keeps
        // answers in the canonical form, which every caller's protocol is translated from.
        if controls.no_store || answer.protocol != ferrolite_types::Protocol::OpenAiChat {
            return;
        }
        let entry = Entry::of(answer, chunks, self.now_ms(), self.ttl(controls));
        self.store(id, entry).await;
    }
}

/// The response cache's hit and miss metrics, counted in this one place.
fn count(hit: bool) {
    if hit {
        metrics::counter!("ferrolite_response_cache_hits_total").increment(1);
    } else {
        metrics::counter!("ferrolite_response_cache_misses_total").increment(1);
    }
}

/// An answer from a backend, with the key it is cached under.
fn with_key(mut answer: RouterResponse, key: &str) -> RouterResponse {
    answer.cache_key = Some(key.to_string());
    answer
}

/// `response:` and the hex SHA-256 of a canonical encoding.
fn key_of(canonical: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(canonical);
    let mut key = String::with_capacity(9 + 64);
    key.push_str("response:");
    for byte in digest {
        key.push(char::from(HEX[usize::from(byte >> 4)]));
        key.push(char::from(HEX[usize::from(byte & 15)]));
    }
    key
}

impl Remembered {
    /// The answer this gives a request now.
    pub(crate) fn answer(&self, started: Instant) -> RouterResponse {
        self.entry.answer(&self.key, started)
    }

    /// The request's key.
    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// Bytes it weighs in the memory tier: its bodies as JSON, the request's encoding, the key
    /// and some bookkeeping.
    fn weight(&self) -> usize {
        let entry = &self.entry;
        let chunks: usize = entry.chunks.iter().flatten().map(Body::len).sum();
        entry.body.len()
            + chunks
            + entry.deployment.len()
            + entry.model_group.len()
            + self.canonical.len()
            + self.key.len()
            + 128
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `value`'s canonical encoding: a tag byte per value, lengths before strings, arrays
/// and objects (so no two values encode alike), object keys in sorted order whatever order the
/// request had them in. Whitespace and key order never reach it; `1` and `1.0` stay distinct,
/// as they are in JSON.
fn encode(value: &serde_json::Value, out: &mut Vec<u8>) {
    use serde_json::Value;
    match value {
        Value::Null => out.push(b'n'),
        Value::Bool(false) => out.push(b'f'),
        Value::Bool(true) => out.push(b't'),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                out.push(b'u');
                out.extend_from_slice(&u.to_le_bytes());
            } else if let Some(i) = n.as_i64() {
                out.push(b'i');
                out.extend_from_slice(&i.to_le_bytes());
            } else {
                out.push(b'd');
                out.extend_from_slice(&n.as_f64().unwrap_or(f64::NAN).to_bits().to_le_bytes());
            }
        }
        Value::String(text) => encode_str(text, out),
        Value::Array(items) => {
            out.push(b'[');
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                encode(item, out);
            }
        }
        Value::Object(object) => encode_object(object.iter(), out),
    }
}

fn encode_str(text: &str, out: &mut Vec<u8>) {
    out.push(b's');
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// An object's fields, sorted by key: serde_json keeps them sorted already (unless a crate
/// turns on its `preserve_order`), so they are sorted here only when they are not.
fn encode_object<'v>(
    fields: impl Iterator<Item = (&'v String, &'v serde_json::Value)> + Clone,
    out: &mut Vec<u8>,
) {
    out.push(b'{');
    let count = fields.clone().count();
    out.extend_from_slice(&(count as u64).to_le_bytes());
    let mut previous: Option<&String> = None;
    let sorted = fields.clone().all(|(k, _)| {
        let ascending = previous.is_none_or(|p| p < k);
        previous = Some(k);
        ascending
    });
    if sorted {
        for (k, v) in fields {
            encode_str(k, out);
            encode(v, out);
        }
    } else {
        let mut fields: Vec<_> = fields.collect();
        fields.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (k, v) in fields {
            encode_str(k, out);
            encode(v, out);
        }
    }
}

// ---- streams and whole answers -----------------------------------------------------------

/// One stream chunk carrying a whole answer: a chat completion becomes a
/// `chat.completion.chunk` whose deltas hold each choice's message; a text completion is
/// already in its streamed shape. (A cached whole answer replayed to a stream: its tree is
/// built here, once.)
pub(crate) fn chunk_of(body: &Body) -> Body {
    if body.get::<&str>("object") != Some("chat.completion") {
        return body.clone();
    }
    match body.to_value() {
        Ok(value) => Body::from_value(&chunk_of_value(&value)),
        Err(_) => body.clone(),
    }
}

/// [`chunk_of`] on a tree.
fn chunk_of_value(body: &serde_json::Value) -> serde_json::Value {
    let mut chunk = body.clone();
    let Some(object) = chunk.as_object_mut() else {
        return chunk;
    };
    if object.get("object").and_then(|o| o.as_str()) != Some("chat.completion") {
        return chunk;
    }
    object.insert("object".into(), "chat.completion.chunk".into());
    if let Some(choices) = object.get_mut("choices").and_then(|c| c.as_array_mut()) {
        for choice in choices {
            if let Some(choice) = choice.as_object_mut() {
                let mut delta = choice.remove("message").unwrap_or(serde_json::Value::Null);
                if let Some(calls) = delta.get_mut("tool_calls").and_then(|c| c.as_array_mut()) {
                    for (i, call) in calls.iter_mut().enumerate() {
                        if let Some(call) = call.as_object_mut() {
                            call.entry("index").or_insert_with(|| i.into());
                        }
                    }
                }
                choice.insert("delta".into(), delta);
            }
        }
    }
    chunk
}

/// The whole answer a stream's chunks make: per choice, the content (or text) and tool-call
/// arguments concatenated, the last finish reason; the first chunk's id, model and created;
/// the last usage. (Once per stored stream: the chunks' trees are built here.)
pub(crate) fn assemble(chunks: &[Body]) -> Body {
    let values: Vec<serde_json::Value> = chunks
        .iter()
        .filter_map(|chunk| chunk.to_value().ok())
        .collect();
    Body::from_value(&assemble_values(&values))
}

/// [`assemble`] on trees.
fn assemble_values(chunks: &[serde_json::Value]) -> serde_json::Value {
    use serde_json::{Map, Value};
    let Some(first) = chunks.first() else {
        return Value::Null;
    };
    let chat = first.get("object").and_then(Value::as_str) == Some("chat.completion.chunk");
    let mut choices: Vec<(u64, Map<String, Value>)> = Vec::new();
    let mut usage = Value::Null;
    for chunk in chunks {
        if let Some(u) = chunk.get("usage").filter(|u| !u.is_null()) {
            usage = u.clone();
        }
        for choice in chunk
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
            let at = match choices.iter().position(|(i, _)| *i == index) {
                Some(at) => at,
                None => {
                    choices.push((index, Map::new()));
                    choices.len() - 1
                }
            };
            let whole = &mut choices[at].1;
            if let Some(reason) = choice.get("finish_reason").filter(|r| !r.is_null()) {
                whole.insert("finish_reason".into(), reason.clone());
            }
            if !chat {
                append_text(whole, "text", choice.get("text"));
                continue;
            }
            let Some(delta) = choice.get("delta").and_then(Value::as_object) else {
                continue;
            };
            let message = whole
                .entry("message")
                .or_insert_with(|| Value::Object(Map::new()));
            let Some(message) = message.as_object_mut() else {
                continue;
            };
            if let Some(role) = delta.get("role").filter(|r| !r.is_null()) {
                message.insert("role".into(), role.clone());
            }
            append_text(message, "content", delta.get("content"));
            for call in delta
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                merge_tool_call(message, call);
            }
        }
    }
    choices.sort_by_key(|(i, _)| *i);
    let choices: Vec<Value> = choices
        .into_iter()
        .map(|(index, mut whole)| {
            whole.insert("index".into(), index.into());
            whole.entry("finish_reason").or_insert(Value::Null);
            if chat {
                if let Some(message) = whole.get_mut("message").and_then(Value::as_object_mut) {
                    message.entry("role").or_insert_with(|| "assistant".into());
                    message.entry("content").or_insert(Value::Null);
                }
            }
            Value::Object(whole)
        })
        .collect();
    let mut body = Map::new();
    for field in ["id", "created", "model", "system_fingerprint"] {
        if let Some(value) = first.get(field) {
            body.insert(field.into(), value.clone());
        }
    }
    let object = if chat {
        "chat.completion"
    } else {
        "text_completion"
    };
    body.insert("object".into(), object.into());
    body.insert("choices".into(), Value::Array(choices));
    if !usage.is_null() {
        body.insert("usage".into(), usage);
    }
    Value::Object(body)
}

fn append_text(
    whole: &mut serde_json::Map<String, serde_json::Value>,
    field: &str,
    part: Option<&serde_json::Value>,
) {
    let Some(part) = part.and_then(serde_json::Value::as_str) else {
        return;
    };
    match whole.get_mut(field) {
        Some(serde_json::Value::String(text)) => text.push_str(part),
        _ => {
            whole.insert(field.into(), part.into());
        }
    }
}

/// Merges a tool-call delta into the message's tool calls (by its `index`).
fn merge_tool_call(
    message: &mut serde_json::Map<String, serde_json::Value>,
    delta: &serde_json::Value,
) {
    use serde_json::{Map, Value};
    let index = delta.get("index").and_then(Value::as_u64).unwrap_or(0);
    let calls = message
        .entry("tool_calls")
        .or_insert_with(|| Value::Array(Vec::new()));
    let Some(calls) = calls.as_array_mut() else {
        return;
    };
    let at = calls
        .iter()
        .position(|c| c.get("index").and_then(Value::as_u64) == Some(index));
    let call = match at {
        Some(at) => &mut calls[at],
        None => {
            let mut call = Map::new();
            call.insert("index".into(), index.into());
            calls.push(Value::Object(call));
            let last = calls.len() - 1;
            &mut calls[last]
        }
    };
    let Some(call) = call.as_object_mut() else {
        return;
    };
    for field in ["id", "type"] {
        if let Some(value) = delta.get(field).filter(|v| !v.is_null()) {
            call.insert(field.into(), value.clone());
        }
    }
    if let Some(function) = delta.get("function").and_then(Value::as_object) {
        let whole = call
            .entry("function")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(whole) = whole.as_object_mut() {
            append_text(whole, "name", function.get("name"));
            append_text(whole, "arguments", function.get("arguments"));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_ttl_too_large_for_a_duration_is_a_typed_error_not_a_panic() {
        for ttl in [json!(1e20), json!(-1), json!("x")] {
            let error = Controls::of(&json!({"cache": {"ttl": ttl}})).unwrap_err();
            assert!(
                matches!(error, RouterError::InvalidRequest { field: "cache", .. }),
                "{error:?}"
            );
        }
        let error = Controls::of(&json!({"cache": {"s-maxage": 1e300}})).unwrap_err();
        assert!(matches!(
            error,
            RouterError::InvalidRequest { field: "cache", .. }
        ));
        let controls = Controls::of(&json!({"cache": {"ttl": 1.5}})).unwrap();
        assert_eq!(controls.ttl, Some(Duration::from_millis(1500)));
    }

    #[test]
    fn a_chat_stream_assembles_into_the_whole_answer_and_back() {
        let chunks = [
            json!({"id": "c", "object": "chat.completion.chunk", "created": 5, "model": "m",
                   "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}, "finish_reason": null}]}),
            json!({"id": "c", "object": "chat.completion.chunk", "created": 5, "model": "m",
                   "choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": null},
                               {"index": 1, "delta": {"tool_calls": [{"index": 0, "id": "t", "type": "function",
                                   "function": {"name": "get", "arguments": "{\"a\""}}]}}]}),
            json!({"id": "c", "object": "chat.completion.chunk", "created": 5, "model": "m",
                   "choices": [{"index": 1, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]},
                                "finish_reason": "tool_calls"},
                               {"index": 0, "delta": {}, "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}),
        ];
        let whole = assemble_values(&chunks);
        assert_eq!(
            whole,
            json!({"id": "c", "object": "chat.completion", "created": 5, "model": "m",
                   "choices": [
                       {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Hello"}},
                       {"index": 1, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": null,
                           "tool_calls": [{"index": 0, "id": "t", "type": "function",
                                           "function": {"name": "get", "arguments": "{\"a\":1}"}}]}}],
                   "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})
        );
        let chunk = chunk_of_value(&whole);
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["choices"][0]["delta"]["content"], "Hello");
        assert_eq!(
            assemble_values(&[chunk]),
            whole,
            "one chunk of a whole answer assembles back"
        );
    }

    #[test]
    fn a_text_completion_stream_concatenates_its_text() {
        let chunks = [
            json!({"id": "t", "object": "text_completion", "model": "m", "choices": [{"index": 0, "text": "a", "finish_reason": null}]}),
            json!({"id": "t", "object": "text_completion", "model": "m", "choices": [{"index": 0, "text": "b", "finish_reason": "length"}]}),
        ];
        assert_eq!(
            assemble_values(&chunks),
            json!({"id": "t", "object": "text_completion", "model": "m",
                   "choices": [{"index": 0, "text": "ab", "finish_reason": "length"}]})
        );
        assert_eq!(assemble_values(&[]), serde_json::Value::Null);
    }

    #[test]
    fn the_encoding_ignores_key_order_and_tells_values_apart() {
        let encoded = |text: &str| {
            let mut out = Vec::new();
            encode(&serde_json::from_str(text).unwrap(), &mut out);
            out
        };
        assert_eq!(
            encoded(r#"{"b": [{"y": 1, "x": "é"}], "a": null}"#),
            encoded(r#"{"a":null,"b":[{"x":"é","y":1}]}"#)
        );
        for (a, b) in [
            ("1", "1.0"),
            ("1", "\"1\""),
            (r#"["ab"]"#, r#"["a","b"]"#),
            (r#"{"a": "b"}"#, r#"["a", "b"]"#),
            ("-1", "18446744073709551615"),
            ("null", "false"),
        ] {
            assert_ne!(encoded(a), encoded(b), "{a} vs {b}");
        }
    }

    #[tokio::test]
    async fn a_memory_entry_answers_only_the_request_whose_encoding_it_holds() {
        let shared = DualCache::connect(ferrolite_cache::CacheConfig::default())
            .await
            .unwrap();
        let cache = ResponseCache::new(ResponseCacheSettings::default(), shared);
        let controls = Controls::default();
        let (a, b) = (json!({"prompt": "a"}), json!({"prompt": "b"}));
        let Recall::Miss(id_a) = cache.recall("g", &a, &controls) else {
            panic!("an empty cache has nothing");
        };
        let Recall::Miss(id_b) = cache.recall("g", &b, &controls) else {
            panic!("an empty cache has nothing");
        };
        // B's answer filed under A's index (as a colliding fast hash would): A is not answered.
        let entry = Entry {
            v: VERSION,
            stored_ms: cache.now_ms(),
            expires_ms: cache.now_ms() + 60_000,
            body: json!("the answer to b").into(),
            chunks: None,
            usage: None,
            deployment: "d".into(),
            model_group: "g".into(),
        };
        let forged = Identity {
            key: id_b.key.clone(),
            fast: id_a.fast,
            canonical: id_b.canonical.clone(),
        };
        cache.remember(&forged, entry.clone());
        assert!(matches!(cache.recall("g", &a, &controls), Recall::Miss(_)));
        // Filed properly, B is answered, with its own key.
        cache.remember(&id_b, entry);
        match cache.recall("g", &b, &controls) {
            Recall::Hit(remembered) => assert_eq!(remembered.key(), id_b.key),
            Recall::Miss(_) => panic!("b was stored"),
        }
        assert_eq!(
            id_a.key,
            cache.key("g", &a, None),
            "the key of a miss is the request's key"
        );
    }
}
