//! The OpenAI-compatible HTTP backend (feature `http`): chat completions, text completions and
//! embeddings over reqwest (rustls on ring, connection pooling, HTTP/2 where the server offers
//! it), with server-sent-event streaming.
//!
//! Where a call goes:
//!
//! | provider (model prefix or `custom_llm_provider`) | URL | key header |
//! |---|---|---|
//! | `azure` | `{api_base}/openai/deployments/{deployment}/{path}?api-version={api_version}` | `api-key` |
//! | anything else | `{api_base}/{path}`, `api_base` defaulting per provider (below) | `Authorization: Bearer` |
//!
//! `{path}` is `chat/completions` for a body with `messages`, `embeddings` for one with
//! `input`, `completions` for one with `prompt`. The body goes as the caller sent it, with
//! `model` set to the deployment's model without its provider prefix (`openai/gpt-4o` →
//! `gpt-4o`; for a wildcard deployment such as `openai/*`, the model the client asked for:
//! `openai/o1-mini` → `o1-mini`), and for a stream `stream: true` and `stream_options.include_usage: true` so the
//! last chunk reports the usage.
//!
//! Most providers speak this protocol: set `api_base` to their OpenAI-compatible endpoint.
//! Defaults when `api_base` is not set: `openai` `https://api.openai.com/v1`, `groq`
//! `https://api.groq.com/openai/v1`, `together_ai` `https://api.together.xyz/v1`, `ollama`
//! `http://localhost:11434/v1`, `mistral` `https://api.mistral.ai/v1`, `deepseek`
//! `https://api.deepseek.com/v1`. vLLM (`hosted_vllm/...`) and other self-hosted servers need
//! `api_base`, e.g. `http://gpu-1:8000/v1`.
//!
//! Providers with a protocol of their own have a backend of their own (`providers/`), which
//! this one hands their deployments to:
//!
//! | provider | protocol | URL | key header |
//! |---|---|---|---|
//! | `anthropic` | Anthropic's Messages API | `{api_base}/v1/messages`, `api_base` defaulting to `https://api.anthropic.com` | `x-api-key` (and `anthropic-version`) |
//! | `bedrock` | Bedrock's Converse / ConverseStream | `{endpoint}/model/{modelId}/converse`, endpoint `https://bedrock-runtime.{region}.amazonaws.com` unless `api_base` | SigV4 |
//! | `gemini` | Gemini's `generateContent` | `{api_base}/models/{model}:generateContent`, `api_base` defaulting to `https://generativelanguage.googleapis.com/v1beta` | `x-goog-api-key` |
//! | `vertex_ai`, `vertex_ai_beta` | Gemini's `generateContent` | `https://{location}-aiplatform.googleapis.com/v1/projects/{project}/locations/{location}/publishers/google/models/{model}:generateContent` | `Authorization: Bearer` (a service account's token) |
//!
//! A caller's own Responses API request (`POST /v1/responses`) to an `openai` or `azure`
//! deployment goes to that deployment's Responses endpoint untranslated (`{api_base}/responses`;
//! azure's `{api_base}/openai/responses?api-version=…`) and its answer comes back in the
//! Responses API's form; other providers get its chat translation, and refuse one continuing a
//! stored conversation (`previous_response_id`).
//!
//! Failures are classified for the router: the HTTP status (429 with `Retry-After` in seconds or
//! as an HTTP date), a context-length error body as a context-window error, a content-filter
//! body as a content-policy error, connection failures, and a stream that breaks mid-way.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use bytes::{Buf, Bytes, BytesMut};
use ferrolite_router::{
    Backend, BackendChunk, BackendError, BackendFuture, BackendRequest, BackendResponse,
    BackendStream, BackendStreamFuture, Body, HealthFuture, Prepared,
};
use ferrolite_types::{Deployment, ErrorClass};
use futures_util::StreamExt;

mod plain;
mod responses;

/// How long a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an idle connection is kept for the next call.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// TCP keepalive probes' idle time.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

/// Body fields that never reach a provider (LiteLLM test hooks and routing controls).
const NOT_FOR_PROVIDERS: [&str; 4] = ["mock_response", "metadata_litellm", "caching", "cache"];

/// Calls OpenAI-compatible endpoints (see the module documentation). Cloning is cheap and
/// shares the connection pool.
#[derive(Clone)]
pub struct HttpBackend {
    pub(crate) client: reqwest::Client,
    /// Plain-HTTP upstreams' connections, driven by the calls themselves (`None`: every call
    /// goes through `client`).
    plain: Option<Arc<plain::Pool>>,
    /// The prepared deployments alive, one per distinct set of what they send alike: the
    /// deployments of one endpoint with one key (10,000 model names behind one server) share
    /// one [`Ready`] instead of one each.
    ready: Arc<parking_lot::Mutex<Interned>>,
    /// Vertex AI's access tokens, one source per service account in use.
    pub(crate) google: Arc<crate::providers::gemini::Accounts>,
}

/// The live prepared values by what they hold: whole [`Ready`]s (deployments that differ in
/// nothing sent) and their [`Common`] parts (deployments on one host with one key and the same
/// headers, whatever their paths).
#[derive(Default)]
struct Interned {
    ready: Live<Ready>,
    common: Live<Common>,
}

/// Live values by fingerprint; dead entries are dropped when the map has doubled since the
/// last sweep.
struct Live<T> {
    map: HashMap<Vec<u8>, Weak<T>>,
    sweep_at: usize,
}

impl<T> Default for Live<T> {
    fn default() -> Self {
        Live {
            map: HashMap::new(),
            sweep_at: 0,
        }
    }
}

impl<T> Live<T> {
    /// The live value of `fingerprint`, else `value` itself, kept for the next.
    fn share(&mut self, fingerprint: Vec<u8>, value: T) -> Arc<T> {
        if let Some(live) = self.map.get(&fingerprint).and_then(Weak::upgrade) {
            return live;
        }
        let value = Arc::new(value);
        if self.map.len() >= self.sweep_at {
            self.map.retain(|_, r| r.strong_count() > 0);
            self.sweep_at = (self.map.len() * 2).max(64);
        }
        self.map.insert(fingerprint, Arc::downgrade(&value));
        value
    }
}

impl Interned {
    /// The live `Ready` equal to `ready`'s parts, else a new one sharing what it can.
    fn share(&mut self, common: Common, paths: Bytes, ends: [u16; 2]) -> Arc<Ready> {
        let common_fingerprint = common.fingerprint();
        let mut fingerprint = common_fingerprint.clone();
        fingerprint.extend_from_slice(&paths);
        fingerprint.extend_from_slice(&ends[0].to_le_bytes());
        fingerprint.extend_from_slice(&ends[1].to_le_bytes());
        let common = self.common.share(common_fingerprint, common);
        self.ready.share(
            fingerprint,
            Ready {
                common,
                paths,
                ends,
            },
        )
    }
}

impl std::fmt::Debug for HttpBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpBackend")
            .field("client", &self.client)
            .field("plain", &self.plain.is_some())
            .finish()
    }
}

/// The HTTP client could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the HTTP client could not be built: {0}")]
pub struct HttpBackendError(String);

/// Builds an [`HttpBackend`] with settings other than the defaults.
#[derive(Debug, Clone)]
pub struct HttpBackendBuilder {
    idle_timeout: Duration,
}

impl HttpBackendBuilder {
    /// How long an idle connection is kept for the next call (default 90 s); one idle longer
    /// is closed, not used again.
    pub fn idle_timeout(mut self, idle_timeout: Duration) -> Self {
        self.idle_timeout = idle_timeout;
        self
    }

    /// The backend (see [`HttpBackend::new`]).
    pub fn build(self) -> Result<HttpBackend, HttpBackendError> {
        // reqwest with `rustls-no-provider` needs a process-wide crypto provider; a second
        // install (another backend, another library) is refused harmlessly.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_keepalive(TCP_KEEPALIVE)
            .pool_idle_timeout(self.idle_timeout)
            .build()
            .map_err(|e| HttpBackendError(e.to_string()))?;
        let proxied = ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"]
            .iter()
            .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()));
        let plain = (!proxied).then(|| {
            Arc::new(plain::Pool::new(
                CONNECT_TIMEOUT,
                self.idle_timeout,
                TCP_KEEPALIVE,
            ))
        });
        Ok(HttpBackend {
            client,
            plain,
            ready: Arc::default(),
            google: Arc::default(),
        })
    }
}

impl HttpBackend {
    /// A backend with a pooled client: 10 s to connect, TCP keepalive, HTTP/2 when offered,
    /// idle connections kept 90 s ([`HttpBackend::builder`] sets otherwise).
    /// Plain-HTTP (`http://`) upstreams are called over HTTP/1.1 connections of its own, each
    /// driven by the call that uses it (no connection task to hand the request to and the
    /// answer back from), unless a proxy is configured (`http_proxy`, `all_proxy`), which
    /// reqwest then honours for every call.
    pub fn new() -> Result<Self, HttpBackendError> {
        Self::builder().build()
    }

    /// A builder of a backend with other settings than [`HttpBackend::new`]'s.
    pub fn builder() -> HttpBackendBuilder {
        HttpBackendBuilder {
            idle_timeout: IDLE_TIMEOUT,
        }
    }

    /// A backend over a client the application configured (proxies, certificates, timeouts):
    /// every call goes through it.
    pub fn with_client(client: reqwest::Client) -> Self {
        HttpBackend {
            client,
            plain: None,
            ready: Arc::default(),
            google: Arc::default(),
        }
    }

    /// One call of `deployment` as it goes out: URL (unless `prepared` has it), key header, body
    /// bytes.
    fn outgoing<'a>(
        &self,
        deployment: &'a Deployment,
        request: &'a BackendRequest,
        prepared: Option<&'a Ready>,
    ) -> Result<Outgoing<'a>, BackendError> {
        // A wildcard deployment (`openai/*`) calls the model the client asked for, which the
        // router puts in the body (`openai/o1-mini`); any other calls its own model.
        let wanted = match request
            .body
            .get("model")
            .and_then(serde_json::Value::as_str)
        {
            Some(asked) if deployment.model.contains('*') => asked,
            _ => deployment.model.as_str(),
        };
        let model = model_name(wanted);
        let kind = crate::mock::kind(&request.body);
        let body = body_bytes(
            &request.body,
            model,
            request.stream,
            kind != crate::mock::Kind::Embedding,
        );
        let key = deployment.api_key.as_ref().map(|k| k.expose());
        let (to, key) = match prepared {
            Some(ready) => (To::Ready(ready, kind), None),
            None => {
                let provider = provider_of(deployment)?;
                let url = url_of(deployment, &provider, model, kind.path())?;
                let key = key.map(if provider == "azure" {
                    Key::ApiKey
                } else {
                    Key::Bearer
                });
                (To::Url(url), key)
            }
        };
        Ok(Outgoing {
            to,
            key,
            request_id: request.request_id.as_deref(),
            trace: request.trace.as_ref(),
            deployment,
            body,
        })
    }

    /// What every plain-HTTP call of `deployment` sends alike, when they can all be sent
    /// through the pool: the URL of each endpoint split, the host's connections found, the key
    /// and extra headers validated. `None` (each call works it out, or fails as it would) for a
    /// TLS upstream, with a proxy, for a deployment whose calls fail before they are sent, and
    /// for a wildcard azure deployment (its URL names the model the client asks for).
    fn ready(&self, deployment: &Deployment) -> Option<Arc<Ready>> {
        let pool = self.plain.as_ref()?;
        let provider = provider_of(deployment).ok()?;
        let azure = provider == "azure";
        if azure && deployment.model.contains('*') {
            return None;
        }
        let model = model_name(&deployment.model);
        let kinds = [
            crate::mock::Kind::Chat,
            crate::mock::Kind::Completion,
            crate::mock::Kind::Embedding,
        ];
        let mut targets = Vec::with_capacity(kinds.len());
        for kind in kinds {
            let url = url_of(deployment, &provider, model, kind.path()).ok()?;
            targets.push(plain::target(&url)?);
        }
        let route = pool.route(targets.first()?);
        // Every endpoint's URL shares the deployment's base, so its host.
        if targets
            .iter()
            .any(|t| t.authority != targets[0].authority || t.address != targets[0].address)
        {
            return None;
        }
        // The three request targets, one after another in one buffer.
        let mut paths = Vec::new();
        let mut ends = [0u16; 3];
        for (end, target) in ends.iter_mut().zip(&targets) {
            paths.extend_from_slice(target.path.path_and_query()?.as_str().as_bytes());
            *end = u16::try_from(paths.len()).ok()?;
        }
        let key = match deployment.api_key.as_ref().map(|k| k.expose()) {
            Some(key) if azure => Some(plain::header("api-key", key, true).ok()?),
            Some(key) => Some(plain::header("authorization", &bearer(key), true).ok()?),
            None => None,
        };
        let mut extra = Vec::with_capacity(deployment.extra_headers.len());
        for (name, value) in &deployment.extra_headers {
            extra.push(plain::header(name, value.expose(), false).ok()?);
        }
        let content_type = !extra
            .iter()
            .any(|(name, _)| name == hyper::header::CONTENT_TYPE);
        let common = Common {
            route,
            key,
            extra: extra.into_boxed_slice(),
            content_type,
        };
        let ready = self
            .ready
            .lock()
            .share(common, Bytes::from(paths), [ends[0], ends[1]]);
        // Every path is taken as the call will take it.
        [
            crate::mock::Kind::Chat,
            crate::mock::Kind::Completion,
            crate::mock::Kind::Embedding,
        ]
        .into_iter()
        .all(|kind| ready.path(kind).is_some())
        .then_some(ready)
    }

    /// Sends a call and reads its whole answer: a plain-HTTP upstream through the pool, any
    /// other through reqwest.
    async fn send(&self, outgoing: Outgoing<'_>) -> Result<Reply, BackendError> {
        if let Some(pool) = &self.plain {
            let header_failed = |message| {
                BackendError::new(ErrorClass::Connection, format!("request failed: {message}"))
            };
            match &outgoing.to {
                To::Ready(ready, kind) => {
                    let headers = outgoing.ready_headers(ready).map_err(header_failed)?;
                    let path = ready.path(*kind).ok_or_else(|| {
                        header_failed("the deployment's request target is not valid".to_string())
                    })?;
                    let body = Bytes::from(outgoing.body);
                    return plain_reply(
                        pool.send(&ready.common.route, hyper::Uri::from(path), headers, body)
                            .await,
                    );
                }
                To::Url(url) => {
                    if let Some(target) = plain::target(url) {
                        let headers = outgoing.headers().map_err(header_failed)?;
                        let route = pool.route(&target);
                        let body = Bytes::from(outgoing.body);
                        return plain_reply(pool.send(&route, target.path, headers, body).await);
                    }
                }
            }
        }
        let response = self
            .client
            .execute(outgoing.reqwest(&self.client)?)
            .await
            .map_err(|e| transport_error(&e))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        if !(200..300).contains(&status) {
            let body = response.bytes().await.unwrap_or_default();
            return Ok(Reply {
                status,
                headers,
                body,
            });
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| bad_answer(format!("the answer is not JSON: {}", without_url(&e))))?;
        Ok(Reply {
            status,
            headers,
            body,
        })
    }
}

/// The key header of a call.
enum Key<'a> {
    /// `Authorization: Bearer {key}`.
    Bearer(&'a str),
    /// Azure's `api-key: {key}`.
    ApiKey(&'a str),
}

/// Where a call goes.
enum To<'a> {
    /// Through the plain-HTTP pool as its deployment was prepared, to this endpoint.
    Ready(&'a Ready, crate::mock::Kind),
    /// This URL, worked out for the call.
    Url(String),
}

/// What every plain-HTTP call of one deployment sends alike, worked out once per snapshot
/// ([`Backend::prepare`]): the part it shares with the deployments on its host with its key
/// and headers, and its own request targets.
struct Ready {
    common: Arc<Common>,
    /// The request targets of chat completions, text completions and embeddings, one after
    /// another; `ends` are where the first two end.
    paths: Bytes,
    ends: [u16; 2],
}

/// What the deployments on one host with one key and the same extra headers send alike.
struct Common {
    /// The host's connections and `host` header.
    route: plain::Route,
    /// The key header (`authorization: Bearer …` or azure's `api-key`), marked sensitive.
    key: Option<(hyper::header::HeaderName, hyper::header::HeaderValue)>,
    /// The deployment's extra headers, in order.
    extra: Box<[(hyper::header::HeaderName, hyper::header::HeaderValue)]>,
    /// Whether `content-type: application/json` is added (no extra header sets it).
    content_type: bool,
}

impl Common {
    /// Everything it holds, as bytes: two with the same fingerprint send the same bytes to the
    /// same host (the key's value included: it is kept in memory as the deployment keeps it,
    /// never printed).
    fn fingerprint(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        let mut put = |bytes: &[u8]| {
            out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            out.extend_from_slice(bytes);
        };
        put(self.route.address().as_bytes());
        put(self.route.host_header().map_or(&[][..], |h| h.as_bytes()));
        for (name, value) in self.key.iter().chain(self.extra.iter()) {
            put(name.as_str().as_bytes());
            put(value.as_bytes());
        }
        put(&[u8::from(self.key.is_some()), u8::from(self.content_type)]);
        out
    }
}

impl Ready {
    /// The request target of `kind`'s endpoint (a slice of the shared buffer, checked when
    /// the deployment was prepared).
    fn path(&self, kind: crate::mock::Kind) -> Option<hyper::http::uri::PathAndQuery> {
        let [first, second] = self.ends.map(usize::from);
        let range = match kind {
            crate::mock::Kind::Chat => 0..first,
            crate::mock::Kind::Completion => first..second,
            crate::mock::Kind::Embedding => second..self.paths.len(),
        };
        let bytes = self
            .paths
            .get(range.clone())
            .map(|_| self.paths.slice(range))?;
        hyper::http::uri::PathAndQuery::from_maybe_shared(bytes).ok()
    }
}

/// One call as it goes out.
struct Outgoing<'a> {
    to: To<'a>,
    /// The key header, when the call works out its own headers (`to` is a URL).
    key: Option<Key<'a>>,
    request_id: Option<&'a str>,
    /// The attempt's trace context, sent upstream.
    trace: Option<&'a ferrolite_router::spans::TraceParent>,
    /// The deployment called (its extra headers).
    deployment: &'a Deployment,
    /// The body's JSON, written once.
    body: Vec<u8>,
}

impl Outgoing<'_> {
    /// The headers of a call through a prepared deployment, in the order [`Outgoing::headers`]
    /// writes them: only `x-request-id` is validated per call.
    fn ready_headers(&self, ready: &Ready) -> Result<hyper::HeaderMap, String> {
        use hyper::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
        let ready = &*ready.common;
        let mut headers = hyper::HeaderMap::with_capacity(4 + ready.extra.len());
        headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
        if let Some((name, value)) = &ready.key {
            headers.append(name.clone(), value.clone());
        }
        if let Some(id) = self.request_id {
            let value = HeaderValue::from_str(id)
                .map_err(|_| "the value of the header `x-request-id` is not valid".to_string())?;
            headers.append(X_REQUEST_ID, value);
        }
        for (name, value) in &ready.extra {
            headers.append(name.clone(), value.clone());
        }
        if ready.content_type {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        add_trace_context(&mut headers, self.trace);
        Ok(headers)
    }

    /// The call's headers for the plain-HTTP pool: those reqwest would send (`accept: */*`,
    /// the key, `x-request-id`, the deployment's extra headers, `content-type` unless an extra
    /// header set it), `host` and `content-length` left to the pool and hyper.
    fn headers(&self) -> Result<hyper::HeaderMap, String> {
        use hyper::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
        let mut headers = hyper::HeaderMap::with_capacity(6 + self.deployment.extra_headers.len());
        headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
        match self.key {
            Some(Key::Bearer(key)) => {
                let (name, value) = plain::header("authorization", &bearer(key), true)?;
                headers.append(name, value);
            }
            Some(Key::ApiKey(key)) => {
                let (name, value) = plain::header("api-key", key, true)?;
                headers.append(name, value);
            }
            None => {}
        }
        if let Some(id) = self.request_id {
            let (name, value) = plain::header("x-request-id", id, false)?;
            headers.append(name, value);
        }
        for (name, value) in &self.deployment.extra_headers {
            let (name, value) = plain::header(name, value.expose(), false)?;
            headers.append(name, value);
        }
        if !headers.contains_key(CONTENT_TYPE) {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        add_trace_context(&mut headers, self.trace);
        Ok(headers)
    }

    /// The call as a reqwest request.
    fn reqwest(self, client: &reqwest::Client) -> Result<reqwest::Request, BackendError> {
        let To::Url(url) = self.to else {
            // A prepared call goes through the plain-HTTP pool, never here.
            return Err(BackendError::new(
                ErrorClass::Connection,
                "request failed: a prepared call has no URL of its own",
            ));
        };
        let builder = client.post(url);
        let builder = match self.key {
            Some(Key::Bearer(key)) => builder.bearer_auth(key),
            Some(Key::ApiKey(key)) => builder.header("api-key", key),
            None => builder,
        };
        let mut builder = match self.request_id {
            Some(id) => builder.header("x-request-id", id),
            None => builder,
        };
        for (name, value) in &self.deployment.extra_headers {
            builder = builder.header(name.as_str(), value.expose());
        }
        let mut request = builder.build().map_err(|e| transport_error(&e))?;
        request
            .headers_mut()
            .entry(reqwest::header::CONTENT_TYPE)
            .or_insert(reqwest::header::HeaderValue::from_static(
                "application/json",
            ));
        add_trace_context(request.headers_mut(), self.trace);
        *request.body_mut() = Some(self.body.into());
        Ok(request)
    }
}

/// Adds the attempt's trace context (W3C `traceparent`, and the client's `tracestate`) to a
/// call's headers, when the request is traced ([`BackendRequest::trace`]); nothing otherwise.
#[inline]
pub(crate) fn add_trace_context(
    headers: &mut reqwest::header::HeaderMap,
    trace: Option<&ferrolite_router::spans::TraceParent>,
) {
    use reqwest::header::{HeaderName, HeaderValue};
    let Some(trace) = trace else {
        return;
    };
    if let Ok(value) = HeaderValue::from_bytes(&trace.context.traceparent()) {
        headers.insert(HeaderName::from_static("traceparent"), value);
    }
    if let Some(value) = trace
        .state
        .as_deref()
        .and_then(|state| HeaderValue::from_str(state).ok())
    {
        headers.insert(HeaderName::from_static("tracestate"), value);
    }
}

/// A whole answer, any status.
struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Bytes,
}

/// The model name a provider expects: the deployment's model without its provider prefix.
pub(crate) fn model_name(model: &str) -> &str {
    model.split_once('/').map_or(model, |(_, rest)| rest)
}

/// `x-request-id`.
const X_REQUEST_ID: hyper::header::HeaderName =
    hyper::header::HeaderName::from_static("x-request-id");

/// `Bearer {key}`.
pub(crate) fn bearer(key: &str) -> String {
    let mut value = String::with_capacity(7 + key.len());
    value.push_str("Bearer ");
    value.push_str(key);
    value
}

/// A deployment's provider, or the bad-request error of a call to it.
pub(crate) fn provider_of(deployment: &Deployment) -> Result<String, BackendError> {
    deployment
        .provider()
        .map(|provider| provider.as_str().to_string())
        .map_err(|e| BackendError::new(ErrorClass::BadRequest { status: 400 }, e.to_string()))
}

/// The URL of a call of `deployment` (of `provider`) to `model`'s endpoint `path` (see the
/// module documentation), or the bad-request error of a deployment without the `api_base` it
/// needs.
fn url_of(
    deployment: &Deployment,
    provider: &str,
    model: &str,
    path: &str,
) -> Result<String, BackendError> {
    if provider == "azure" {
        let base = deployment.api_base.as_deref().ok_or_else(|| {
            BackendError::new(
                ErrorClass::BadRequest { status: 400 },
                format!("azure deployment `{}` needs api_base", deployment.id()),
            )
        })?;
        // A wildcard deployment's model is the client's: it must stay one segment of the path
        // (an Azure deployment name: letters, digits, `._-`), not move the URL elsewhere on
        // the operator's resource.
        let fits = !matches!(model, "" | "." | "..")
            && model
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if deployment.model.contains('*') && !fits {
            let shown: String = model.chars().take(200).collect();
            return Err(BackendError::new(
                ErrorClass::BadRequest { status: 400 },
                format!(
                    "model `{shown}` is not an Azure deployment name (letters, digits and `._-` only)"
                ),
            ));
        }
        let version = deployment.api_version.as_deref().unwrap_or("2024-10-21");
        return Ok(format!(
            "{}/openai/deployments/{model}/{path}?api-version={version}",
            base.trim_end_matches('/')
        ));
    }
    let base = deployment
        .api_base
        .as_deref()
        .or_else(|| default_base(provider))
        .ok_or_else(|| {
            BackendError::new(
                ErrorClass::BadRequest { status: 400 },
                format!(
                    "deployment `{}` ({provider}) needs api_base: its OpenAI-compatible endpoint",
                    deployment.id()
                ),
            )
        })?;
    let base = base.trim_end_matches('/');
    let mut url = String::with_capacity(base.len() + 1 + path.len());
    url.push_str(base);
    url.push('/');
    url.push_str(path);
    Ok(url)
}

/// A plain-HTTP call's answer as a reply, or its failure classified.
fn plain_reply(answer: Result<plain::Answer, plain::Failed>) -> Result<Reply, BackendError> {
    let answer = answer.map_err(|e| {
        let class = match e {
            plain::Failed::ConnectTimeout => ErrorClass::Timeout,
            _ => ErrorClass::Connection,
        };
        BackendError::new(class, format!("request failed: {e}"))
    })?;
    let body = match answer.body {
        Ok(body) => body,
        // An error answer that broke off is classified by its status.
        Err(_) if !(200..300).contains(&answer.status) => Bytes::new(),
        Err(e) => return Err(bad_answer(format!("the answer is not JSON: {e}"))),
    };
    Ok(Reply {
        status: answer.status,
        headers: answer.headers,
        body,
    })
}

/// The body a provider gets, written once from the caller's: `model` set, the fields that
/// never reach a provider left out, and for a stream `stream: true` and (when `usage_option`:
/// not for embeddings) `stream_options.include_usage: true`; `stream` left out otherwise. The
/// keys come out in the order a `serde_json::Map` keeps them (sorted), as when the edits were
/// made on a copy of the caller's body and that copy serialised.
fn body_bytes(body: &serde_json::Value, model: &str, stream: bool, usage_option: bool) -> Vec<u8> {
    let Some(object) = body.as_object() else {
        // Not an object: sent as it is (a `Value` always serialises).
        return serde_json::to_vec(body).unwrap_or_default();
    };
    let mut edits: [(&str, Option<Field<'_>>); 7] = [
        ("model", Some(Field::Str(model))),
        (NOT_FOR_PROVIDERS[0], None),
        (NOT_FOR_PROVIDERS[1], None),
        (NOT_FOR_PROVIDERS[2], None),
        (NOT_FOR_PROVIDERS[3], None),
        ("stream", stream.then_some(Field::True)),
        ("stream_options", None),
    ];
    let edit_count = if stream && usage_option {
        edits[6].1 = Some(match object.get("stream_options") {
            Some(serde_json::Value::Object(options)) => Field::Usage(Some(options)),
            Some(other) => Field::Value(other),
            None => Field::Usage(None),
        });
        7
    } else {
        6
    };
    let fields = Fields(edited(object, &edits[..edit_count]));
    let mut out = Vec::with_capacity(128);
    // Writing into a Vec does not fail, nor does a tree of `Value`s.
    let _ = serde_json::to_writer(&mut out, &fields);
    out
}

/// A field of the body a provider gets.
#[derive(Clone, Copy)]
enum Field<'a> {
    /// The caller's value.
    Value(&'a serde_json::Value),
    /// A string (`model`).
    Str(&'a str),
    /// `true` (`stream`).
    True,
    /// `stream_options` with `include_usage: true`: the caller's other options, if any.
    Usage(Option<&'a serde_json::Map<String, serde_json::Value>>),
}

/// An object's fields in the order they are written.
struct Fields<'a>(Vec<(&'a str, Field<'a>)>);

/// `object`'s fields with `edits` made: a field named there is replaced (`Some`) or left out
/// (`None`), a replacement the object does not have added, in the map's own (sorted) order.
fn edited<'a>(
    object: &'a serde_json::Map<String, serde_json::Value>,
    edits: &[(&'a str, Option<Field<'a>>)],
) -> Vec<(&'a str, Field<'a>)> {
    let mut fields = Vec::with_capacity(object.len() + edits.len());
    for (name, value) in object {
        match edits.iter().find(|(edit, _)| *edit == name.as_str()) {
            Some((_, Some(field))) => fields.push((name.as_str(), *field)),
            Some((_, None)) => {}
            None => fields.push((name.as_str(), Field::Value(value))),
        }
    }
    let mut added = false;
    for (name, field) in edits {
        if let Some(field) = field {
            if !object.contains_key(*name) {
                fields.push((*name, *field));
                added = true;
            }
        }
    }
    if added {
        fields.sort_by(|a, b| a.0.cmp(b.0));
    }
    fields
}

impl serde::Serialize for Fields<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, field) in &self.0 {
            map.serialize_entry(name, field)?;
        }
        map.end()
    }
}

impl serde::Serialize for Field<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Field::Value(value) => value.serialize(serializer),
            Field::Str(text) => serializer.serialize_str(text),
            Field::True => serializer.serialize_bool(true),
            Field::Usage(options) => {
                let edit = [("include_usage", Some(Field::True))];
                match options {
                    Some(options) => Fields(edited(options, &edit)).serialize(serializer),
                    None => Fields(vec![("include_usage", Field::True)]).serialize(serializer),
                }
            }
        }
    }
}

/// A provider's OpenAI-compatible endpoint, when it has a well-known one (the `api_base` a
/// deployment of that provider may leave out; `azure` has none, nor do providers called in
/// their own protocol, such as `anthropic`, whose backends know their endpoints).
pub fn default_base(provider: &str) -> Option<&'static str> {
    Some(match provider {
        "openai" | "text-completion-openai" => "https://api.openai.com/v1",
        "groq" => "https://api.groq.com/openai/v1",
        "together_ai" => "https://api.together.xyz/v1",
        "ollama" | "ollama_chat" => "http://localhost:11434/v1",
        "mistral" => "https://api.mistral.ai/v1",
        "deepseek" => "https://api.deepseek.com/v1",
        _ => return None,
    })
}

/// A failure before any answer: the transport's kind.
pub(crate) fn transport_error(error: &reqwest::Error) -> BackendError {
    let class = if error.is_timeout() {
        ErrorClass::Timeout
    } else {
        ErrorClass::Connection
    };
    BackendError::new(class, format!("request failed: {}", without_url(error)))
}

/// A reqwest error's text without the URL (it can carry a key in its query).
pub(crate) fn without_url(error: &reqwest::Error) -> String {
    let mut shown = error.to_string();
    if let Some(url) = error.url() {
        shown = shown.replace(url.as_str(), "<url>");
    }
    shown
}

/// `Retry-After`: seconds, or an HTTP date.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return delay_of_seconds(seconds);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    // The one wall-clock read of the backend: an HTTP date is wall-clock time.
    #[allow(clippy::disallowed_methods)]
    let now = SystemTime::now();
    Some(
        at.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_RETRY_DELAY),
    )
}

/// The longest wait an upstream's retry delay is taken at (a longer one is cut to it).
pub(crate) const MAX_RETRY_DELAY: Duration = Duration::from_secs(24 * 60 * 60);

/// A retry delay an upstream gave in seconds, at most [`MAX_RETRY_DELAY`]; `None` when it is
/// negative or not a number.
pub(crate) fn delay_of_seconds(seconds: f64) -> Option<Duration> {
    if seconds.is_nan() || seconds < 0.0 {
        return None;
    }
    Some(
        Duration::try_from_secs_f64(seconds)
            .unwrap_or(MAX_RETRY_DELAY)
            .min(MAX_RETRY_DELAY),
    )
}

/// Classifies an error answer: the status, refined by the body (context length, content
/// filter), with `Retry-After`.
pub(crate) fn classify(status: u16, retry: Option<Duration>, body: &str) -> BackendError {
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let error = parsed.as_ref().and_then(|b| b.get("error"));
    let code = error
        .and_then(|e| e.get("code"))
        .and_then(|c| c.as_str())
        .unwrap_or("");
    let message = error
        .and_then(|e| e.get("message"))
        .and_then(|m| m.as_str())
        .map_or_else(|| body.chars().take(500).collect(), str::to_string);
    let lower = message.to_ascii_lowercase();
    let class = if code == "context_length_exceeded"
        || lower.contains("maximum context length")
        || lower.contains("context length")
        || lower.contains("context window")
    {
        ErrorClass::ContextWindowExceeded
    } else if code == "content_filter"
        || code == "content_policy_violation"
        || lower.contains("content management policy")
        || lower.contains("content filter")
    {
        ErrorClass::ContentPolicy
    } else {
        ErrorClass::from_status(status, retry)
    };
    BackendError::new(class, format!("HTTP {status}: {message}"))
}

/// Reads an error answer and classifies it.
pub(crate) async fn failed(response: reqwest::Response) -> BackendError {
    let status = response.status().as_u16();
    let retry = retry_after(response.headers());
    let body = response.text().await.unwrap_or_default();
    classify(status, retry, &body)
}

/// An answer that could not be read, or is not one JSON object: the upstream failed (502).
pub(crate) fn bad_answer(message: String) -> BackendError {
    BackendError::new(ErrorClass::ServerError { status: 502 }, message)
}

/// The refusal of a call whose caller's request its canonical translation could not carry
/// whole ([`ferrolite_router::Native::untranslated`]) by a deployment that would send the
/// translation: only one that takes the caller's body as it is (an `anthropic` deployment for
/// a Messages request, an `openai` or `azure` one for a Responses request) may answer it.
fn untranslatable(deployment: &Deployment, request: &BackendRequest) -> Option<BackendError> {
    let native = request.native.as_ref()?;
    let missing = native.untranslated()?;
    let provider = deployment
        .provider()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    if native.protocol.passes_through_to(&provider) {
        return None;
    }
    Some(BackendError::new(
        ErrorClass::BadRequest { status: 400 },
        format!(
            "`{}`: {}; a {provider} deployment is sent its translation, which cannot carry it \
             (only a deployment of the caller's protocol, {}, takes the request as it is)",
            missing.field, missing.reason, native.protocol
        ),
    ))
}

impl Backend for HttpBackend {
    fn call<'a>(
        &'a self,
        deployment: &'a Deployment,
        request: &'a BackendRequest,
    ) -> BackendFuture<'a> {
        if let Some(refused) = untranslatable(deployment, request) {
            return Box::pin(std::future::ready(Err(refused)));
        }
        if let Some(call) = responses::call_natively(self, deployment, request) {
            return call;
        }
        let ready = request
            .prepared
            .as_ref()
            .and_then(|prepared| prepared.get::<Ready>());
        // A deployment prepared as `Ready` speaks OpenAI's protocol (`prepare` hands the
        // others to their own backends): its calls skip working out the provider again.
        if ready.is_none() {
            if let Some(protocol) = crate::providers::native(deployment) {
                return crate::providers::call(self, protocol, deployment, request);
            }
        }
        let outgoing = self.outgoing(deployment, request, ready);
        Box::pin(async move {
            let reply = self.send(outgoing?).await?;
            if !(200..300).contains(&reply.status) {
                let body = String::from_utf8_lossy(&reply.body);
                return Err(classify(reply.status, retry_after(&reply.headers), &body));
            }
            // The answer's bytes pass through as they are: checked as one JSON object, the
            // usage read from them (no tree is built).
            let body =
                Body::parse(reply.body).map_err(|e| bad_answer(format!("the answer is {e}")))?;
            Ok(BackendResponse {
                usage: body.usage(),
                body,
                time_to_first_token: None,
                protocol: ferrolite_types::Protocol::OpenAiChat,
            })
        })
    }

    fn stream<'a>(
        &'a self,
        deployment: &'a Deployment,
        request: &'a BackendRequest,
    ) -> BackendStreamFuture<'a> {
        if let Some(refused) = untranslatable(deployment, request) {
            return Box::pin(std::future::ready(Err(refused)));
        }
        if let Some(stream) = responses::stream_natively(self, deployment, request) {
            return stream;
        }
        if let Some(protocol) = crate::providers::native(deployment) {
            return crate::providers::stream(self, protocol, deployment, request);
        }
        let sent = self
            .outgoing(deployment, request, None)
            .and_then(|outgoing| outgoing.reqwest(&self.client));
        Box::pin(async move {
            let response = self
                .client
                .execute(sent?)
                .await
                .map_err(|e| transport_error(&e))?;
            if !response.status().is_success() {
                return Err(failed(response).await);
            }
            let events = SseEvents::new(response.bytes_stream());
            Ok(Box::pin(events.into_stream()) as BackendStream)
        })
    }

    /// LiteLLM's health-check probe (`ahealth_check`, as its proxy's `_run_model_health_check`
    /// sends it): a one-message chat completion with `max_tokens: 16`, or for a model the
    /// catalogue lists as an embedding model, an embedding of `["test from litellm"]`. Any
    /// failure of the call fails the check. A wildcard deployment (`openai/*`) names no model
    /// to probe and passes.
    fn health_check<'a>(&'a self, deployment: &'a Deployment) -> HealthFuture<'a> {
        if deployment.model.contains('*') {
            return Box::pin(std::future::ready(Ok(())));
        }
        let body = if crate::catalogue::mode(&deployment.model) == Some("embedding") {
            serde_json::json!({"input": ["test from litellm"]})
        } else {
            serde_json::json!({
                "messages": [{"role": "user", "content": "What's 1 + 1?"}],
                "max_tokens": 16,
            })
        };
        Box::pin(async move {
            let request = BackendRequest {
                trace: None,
                body,
                stream: false,
                request_id: None,
                deployment_id: None,
                prepared: None,
                native: None,
            };
            self.call(deployment, &request).await.map(drop)
        })
    }

    fn prepare(&self, deployment: &Deployment) -> Option<Prepared> {
        if let Some(protocol) = crate::providers::native(deployment) {
            return crate::providers::prepare(self, protocol, deployment);
        }
        self.ready(deployment).map(Prepared::shared)
    }
}

/// Server-sent events of an OpenAI stream, read as they arrive: each `data:` line a chunk (its
/// bytes, checked as one JSON object, with the usage read from them), `data: [DONE]` the end.
/// A body that breaks off is an error chunk.
struct SseEvents<S> {
    bytes: S,
    buffer: BytesMut,
    done: bool,
}

impl<S> SseEvents<S>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, reqwest::Error>> + Send + Unpin + 'static,
{
    fn new(bytes: S) -> Self {
        SseEvents {
            bytes,
            buffer: BytesMut::new(),
            done: false,
        }
    }

    /// The next complete line in the buffer, without its line ending (its bytes, shared with
    /// the buffer's).
    fn line(&mut self) -> Option<Bytes> {
        let end = self.buffer.iter().position(|b| *b == b'\n')?;
        let mut line = self.buffer.split_to(end + 1).freeze();
        line.truncate(end);
        if line.last() == Some(&b'\r') {
            line.truncate(end - 1);
        }
        Some(line)
    }

    /// The next chunk, error or end.
    async fn next_chunk(&mut self) -> Option<Result<BackendChunk, BackendError>> {
        loop {
            if self.done {
                return None;
            }
            while let Some(mut data) = self.line() {
                if !data.starts_with(b"data:") {
                    continue; // comments, event names, blank separators
                }
                data.advance(5);
                let data = trim(data);
                if &data[..] == b"[DONE]" {
                    self.done = true;
                    return None;
                }
                if data.is_empty() {
                    continue;
                }
                let body = match Body::parse(data) {
                    Ok(body) => body,
                    Err(e) => {
                        self.done = true;
                        return Some(Err(bad_answer(format!("a stream event is {e}"))));
                    }
                };
                if let Some(error) = body.raw("error") {
                    self.done = true;
                    let status = serde_json::from_str::<serde_json::Value>(error.get())
                        .ok()
                        .and_then(|e| e.get("code").and_then(serde_json::Value::as_u64))
                        .and_then(|c| u16::try_from(c).ok())
                        .unwrap_or(500);
                    return Some(Err(classify(status, None, body.as_str())));
                }
                return Some(Ok(BackendChunk {
                    usage: body.usage(),
                    body,
                    protocol: ferrolite_types::Protocol::OpenAiChat,
                }));
            }
            match self.bytes.next().await {
                Some(Ok(bytes)) => self.buffer.extend_from_slice(&bytes),
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(BackendError::new(
                        ErrorClass::Connection,
                        format!("the stream broke: {}", without_url(&e)),
                    )));
                }
                None => {
                    self.done = true;
                    if !self.buffer.is_empty() {
                        return Some(Err(BackendError::new(
                            ErrorClass::Connection,
                            "the stream ended in the middle of an event",
                        )));
                    }
                    return None;
                }
            }
        }
    }

    fn into_stream(
        self,
    ) -> impl futures_util::Stream<Item = Result<BackendChunk, BackendError>> + Send {
        futures_util::stream::unfold(self, |mut events| async move {
            events.next_chunk().await.map(|item| (item, events))
        })
    }
}

/// `data` without the whitespace around it.
fn trim(mut data: Bytes) -> Bytes {
    let start = data
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(data.len());
    let end = data
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |end| end + 1);
    data.truncate(end);
    data.advance(start);
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_or_odd_retry_after_is_capped_or_ignored_not_a_panic() {
        let delay = |value: &str| {
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(reqwest::header::RETRY_AFTER, value.parse().unwrap());
            retry_after(&headers)
        };
        assert_eq!(delay("1e20"), Some(MAX_RETRY_DELAY));
        assert_eq!(delay("inf"), Some(MAX_RETRY_DELAY));
        assert_eq!(delay("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(delay("-3"), None);
        assert_eq!(delay("NaN"), None);
        assert_eq!(
            delay("Fri, 31 Dec 9999 23:59:59 GMT"),
            Some(MAX_RETRY_DELAY)
        );
    }

    #[test]
    fn error_bodies_are_classified_by_what_they_say() {
        let context = r#"{"error": {"message": "This model's maximum context length is 8192 tokens", "code": "context_length_exceeded"}}"#;
        assert_eq!(
            classify(400, None, context).class,
            ErrorClass::ContextWindowExceeded
        );
        let filtered = r#"{"error": {"message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy", "code": "content_filter"}}"#;
        assert_eq!(
            classify(400, None, filtered).class,
            ErrorClass::ContentPolicy
        );
        assert_eq!(
            classify(429, Some(Duration::from_secs(3)), "{}").class,
            ErrorClass::RateLimited {
                retry_after: Some(Duration::from_secs(3))
            }
        );
        assert_eq!(
            classify(503, None, "upstream down").class,
            ErrorClass::ServerError { status: 503 }
        );
    }

    #[test]
    fn the_model_loses_its_provider_prefix() {
        assert_eq!(model_name("openai/gpt-4o"), "gpt-4o");
        assert_eq!(
            model_name("hosted_vllm/meta-llama/Llama-3-8B"),
            "meta-llama/Llama-3-8B"
        );
        assert_eq!(model_name("gpt-4o"), "gpt-4o");
    }

    /// The body as the backend wrote it before: a copy of the caller's, edited, serialised.
    fn copied_and_edited(
        body: &serde_json::Value,
        model: &str,
        stream: bool,
        usage: bool,
    ) -> Vec<u8> {
        let mut body = body.clone();
        if let Some(object) = body.as_object_mut() {
            object.insert("model".into(), model.into());
            for field in NOT_FOR_PROVIDERS {
                object.remove(field);
            }
            if stream {
                object.insert("stream".into(), true.into());
                if usage {
                    object
                        .entry("stream_options")
                        .or_insert_with(|| serde_json::json!({}))
                        .as_object_mut()
                        .map(|o| o.insert("include_usage".into(), true.into()));
                }
            } else {
                object.remove("stream");
            }
        }
        serde_json::to_vec(&body).unwrap()
    }

    #[test]
    fn the_body_is_written_as_the_edited_copy_was() {
        let bodies = [
            serde_json::json!({"model": "g", "messages": [{"role": "user", "content": "hi"}]}),
            serde_json::json!({"messages": [], "mock_response": "x", "cache": {"no-cache": true},
                "caching": false, "metadata_litellm": 1, "stream": false, "a": null, "zz": [1, 2.5]}),
            serde_json::json!({"model": "g", "input": ["a"], "stream": true}),
            serde_json::json!({"prompt": "p", "stream_options": {"x": 1, "include_usage": false}}),
            serde_json::json!({"prompt": "p", "stream_options": "odd", "max_tokens": 3}),
            serde_json::json!({"A": 1, "Z": 2, "_": 3, "model": "m", "~": "\u{e9}\n\"é"}),
            serde_json::json!(["not", "an", "object"]),
            serde_json::json!({}),
        ];
        for body in &bodies {
            for (stream, usage) in [(false, true), (true, true), (true, false)] {
                assert_eq!(
                    String::from_utf8(body_bytes(body, "gpt-4o", stream, usage)).unwrap(),
                    String::from_utf8(copied_and_edited(body, "gpt-4o", stream, usage)).unwrap(),
                    "{body} stream {stream} usage {usage}"
                );
            }
        }
    }
}
