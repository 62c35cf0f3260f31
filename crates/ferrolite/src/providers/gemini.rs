//! Google's Gemini models through their own protocol (`generateContent`, and
//! `streamGenerateContent?alt=sse` for streams): the Gemini API (`gemini/`, an API key) and
//! Vertex AI (`vertex_ai/`, `vertex_ai_beta/`, a service account). The request is translated
//! from the canonical chat form and the answer back by [`ferrolite_protocols::gemini`].
//!
//! | provider | URL | authentication |
//! |---|---|---|
//! | `gemini` | `{api_base}/models/{model}:generateContent`, `api_base` defaulting to `https://generativelanguage.googleapis.com/v1beta` | `x-goog-api-key: {api_key}` (`api_key`, else the `GEMINI_API_KEY` environment variable) |
//! | `vertex_ai` | `https://{location}-aiplatform.googleapis.com/v1/projects/{project}/locations/{location}/publishers/google/models/{model}:generateContent` (`aiplatform.googleapis.com` for the `global` location); with `api_base`, `{api_base}:generateContent` as LiteLLM builds it | `Authorization: Bearer` an OAuth access token of `vertex_credentials` |
//!
//! The key travels in a header, never in the URL, so it cannot reach a log or an error.
//!
//! `vertex_credentials` is a service-account key (the JSON file Google's console downloads,
//! by path, or its content): ferrolite signs a JWT with its `private_key` (RS256) and trades it
//! at its `token_uri` for an access token (the OAuth 2.0 JWT-bearer grant, RFC 7523), keeps the
//! token for the deployments with the same credentials, and fetches a new one 5 minutes before
//! it expires (half-way through for a token that lives less than 10 minutes); concurrent calls
//! wait for one fetch. `vertex_project` defaults to the key's `project_id` and
//! `vertex_location` to `us-central1`, as in LiteLLM. Application default credentials (gcloud's,
//! the metadata server's) are not read: give the key.
//!
//! Failures are classified from Google's error body (`{"error": {"code", "message",
//! "status"}}`): 429 or `RESOURCE_EXHAUSTED` is a rate limit (with `Retry-After`, or the
//! `RetryInfo` detail's `retryDelay`), a prompt over the model's input limit a context-window
//! error, a safety block a content-policy error, an invalid key an authentication error, and
//! the rest by status. A prompt Gemini blocked (`promptFeedback.blockReason`) is a
//! content-policy error.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use ferrolite_protocols::gemini::{ChatChunks, answer_to_chat, blocked, request_bytes_from_chat};
use ferrolite_protocols::sse::SseParser;
use ferrolite_router::{
    BackendChunk, BackendError, BackendFuture, BackendRequest, BackendResponse, BackendStream,
    BackendStreamFuture, Body, Prepared,
};
use ferrolite_types::{Deployment, ErrorClass, Protocol};
use futures_util::StreamExt;
use serde_json::Value;

use crate::http::{HttpBackend, bad_answer, model_name, provider_of, retry_after, without_url};

/// The Gemini API's base URL, when a `gemini/` deployment sets no `api_base`.
pub const GEMINI_API_BASE: &str = "https://generativelanguage.googleapis.com/v1beta";
/// The OAuth scope Vertex AI's access tokens are asked for.
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// The JWT-bearer grant type (RFC 7523).
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// How long before its expiry an access token is replaced.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// Vertex AI's location when a deployment names none (LiteLLM's default).
const DEFAULT_LOCATION: &str = "us-central1";

/// The access tokens of the service accounts in use, one source per distinct credentials,
/// shared by every deployment that names them (kept while a deployment holds them).
#[derive(Default)]
pub(crate) struct Accounts {
    sources: parking_lot::Mutex<HashMap<[u8; 32], Weak<TokenSource>>>,
}

impl Accounts {
    /// The token source of `credentials` (`vertex_credentials`), shared: the live one of the
    /// same key, else a new one (the key read and its private key parsed only then).
    fn source(&self, credentials: &str) -> Result<Arc<TokenSource>, String> {
        let text = ServiceAccount::text(credentials)?;
        let fingerprint: [u8; 32] = {
            use sha2::Digest;
            sha2::Sha256::digest(text.as_bytes()).into()
        };
        if let Some(live) = self
            .sources
            .lock()
            .get(&fingerprint)
            .and_then(Weak::upgrade)
        {
            return Ok(live);
        }
        let account = ServiceAccount::parse(&text)?;
        let mut sources = self.sources.lock();
        if let Some(live) = sources.get(&fingerprint).and_then(Weak::upgrade) {
            return Ok(live);
        }
        sources.retain(|_, s| s.strong_count() > 0);
        let source = Arc::new(TokenSource {
            account,
            current: parking_lot::Mutex::default(),
            fetch: tokio::sync::Mutex::new(()),
        });
        sources.insert(fingerprint, Arc::downgrade(&source));
        Ok(source)
    }
}

/// A service-account key: who signs, with what, and where tokens are issued.
pub struct ServiceAccount {
    client_email: String,
    token_uri: String,
    project_id: Option<String>,
    key: ring::signature::RsaKeyPair,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

impl ServiceAccount {
    /// Reads `vertex_credentials`: a service-account key's JSON, or the path of a file holding
    /// it. The error says what is wrong without the credentials' content.
    pub fn load(credentials: &str) -> Result<ServiceAccount, String> {
        Self::parse(&Self::text(credentials)?)
    }

    /// The key's JSON text: `credentials` itself, or the file it names.
    fn text(credentials: &str) -> Result<String, String> {
        if credentials.trim_start().starts_with('{') {
            return Ok(credentials.to_string());
        }
        std::fs::read_to_string(credentials.trim())
            .map_err(|e| format!("the service-account key file cannot be read ({})", e.kind()))
    }

    /// A service-account key from its JSON text.
    fn parse(text: &str) -> Result<ServiceAccount, String> {
        let json: Value = serde_json::from_str(text)
            .map_err(|_| "not a service-account key: not JSON".to_string())?;
        let field = |name: &str| {
            json.get(name)
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("not a service-account key: `{name}` is missing"))
        };
        if json.get("type").and_then(Value::as_str) != Some("service_account") {
            return Err(
                "not a service-account key (`type` is not `service_account`; application default \
                 credentials are not supported)"
                    .to_string(),
            );
        }
        let client_email = field("client_email")?.to_string();
        let token_uri = field("token_uri")?.to_string();
        let der = pem_pkcs8(field("private_key")?)
            .ok_or_else(|| "the `private_key` is not a PEM private key".to_string())?;
        let key = ring::signature::RsaKeyPair::from_pkcs8(&der)
            .map_err(|_| "the `private_key` is not a PKCS#8 RSA key".to_string())?;
        let project_id = json
            .get("project_id")
            .and_then(Value::as_str)
            .map(str::to_string);
        Ok(ServiceAccount {
            client_email,
            token_uri,
            project_id,
            key,
        })
    }

    /// The project the key belongs to, when it says.
    pub fn project_id(&self) -> Option<&str> {
        self.project_id.as_deref()
    }

    /// The signed JWT asking for a token, issued at `now` (Unix seconds).
    fn assertion(&self, now: u64) -> Result<String, String> {
        let header = base64url(br#"{"alg":"RS256","typ":"JWT"}"#);
        let claims = serde_json::json!({
            "iss": self.client_email,
            "scope": SCOPE,
            "aud": self.token_uri,
            "iat": now,
            "exp": now + 3600,
        });
        let mut jwt = format!("{header}.{}", base64url(claims.to_string().as_bytes()));
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &ring::signature::RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                jwt.as_bytes(),
                &mut signature,
            )
            .map_err(|_| "the JWT could not be signed".to_string())?;
        jwt.push('.');
        jwt.push_str(&base64url(&signature));
        Ok(jwt)
    }
}

/// A service account's current access token and the one fetch of the next.
pub(crate) struct TokenSource {
    account: ServiceAccount,
    current: parking_lot::Mutex<Current>,
    /// Held while a token is fetched: concurrent callers wait for that fetch, not their own.
    fetch: tokio::sync::Mutex<()>,
}

/// The token in use and how the last fetch went.
#[derive(Default)]
struct Current {
    token: Option<Token>,
    /// Fetches tried so far.
    attempts: u64,
    /// The last fetch's failure, until one succeeds.
    failure: Option<BackendError>,
}

struct Token {
    value: Arc<str>,
    refresh_at: Instant,
}

impl TokenSource {
    fn valid(&self) -> Option<Arc<str>> {
        let current = self.current.lock();
        current
            .token
            .as_ref()
            .filter(|t| Instant::now() < t.refresh_at)
            .map(|t| t.value.clone())
    }

    /// A valid access token: the current one, or a new one fetched once for every caller
    /// waiting (who all get its failure, if it fails, rather than each trying again).
    async fn token(&self, client: &reqwest::Client) -> Result<Arc<str>, BackendError> {
        if let Some(token) = self.valid() {
            return Ok(token);
        }
        let attempts = self.current.lock().attempts;
        let _fetching = self.fetch.lock().await;
        {
            let current = self.current.lock();
            // Another caller fetched while this one waited: its token, or its failure.
            if let Some(token) = current
                .token
                .as_ref()
                .filter(|t| Instant::now() < t.refresh_at)
            {
                return Ok(token.value.clone());
            }
            if current.attempts != attempts {
                if let Some(failure) = &current.failure {
                    return Err(failure.clone());
                }
            }
        }
        let fetched = self.fetch_token(client).await;
        let mut current = self.current.lock();
        current.attempts += 1;
        match fetched {
            Ok(token) => {
                let value = token.value.clone();
                current.token = Some(token);
                current.failure = None;
                Ok(value)
            }
            Err(error) => {
                current.failure = Some(error.clone());
                Err(error)
            }
        }
    }

    async fn fetch_token(&self, client: &reqwest::Client) -> Result<Token, BackendError> {
        let failed = |class: ErrorClass, why: String| {
            BackendError::new(
                class,
                format!("vertex_credentials: no access token from the token endpoint: {why}"),
            )
        };
        // The JWT's times are wall-clock times, read as the token endpoint will.
        #[allow(clippy::disallowed_methods)]
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let assertion = self
            .account
            .assertion(now)
            .map_err(|why| failed(ErrorClass::Authentication, why))?;
        let form = format!(
            "grant_type={}&assertion={assertion}",
            form_encode(JWT_BEARER)
        );
        let started = Instant::now();
        let response = client
            .post(&self.account.token_uri)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(form)
            .send()
            .await
            .map_err(|e| {
                let class = if e.is_timeout() {
                    ErrorClass::Timeout
                } else {
                    ErrorClass::Connection
                };
                failed(class, without_url(&e))
            })?;
        let status = response.status().as_u16();
        let body = response.bytes().await.unwrap_or_default();
        let json: Option<Value> = serde_json::from_slice(&body).ok();
        if !(200..300).contains(&status) {
            // OAuth's error body: `error` and `error_description`, nothing of the request.
            let said = json
                .as_ref()
                .map(|j| {
                    [j.get("error"), j.get("error_description")]
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(": ")
                })
                .unwrap_or_default();
            let said: String = said.chars().take(300).collect();
            let class = if (400..500).contains(&status) {
                ErrorClass::Authentication
            } else {
                ErrorClass::from_status(status, None)
            };
            return Err(failed(class, format!("HTTP {status} {said}")));
        }
        let json = json
            .ok_or_else(|| failed(ErrorClass::Authentication, "the answer is not JSON".into()))?;
        let value = json
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| failed(ErrorClass::Authentication, "no access_token".into()))?;
        let lifetime = Duration::from_secs(
            json.get("expires_in")
                .and_then(Value::as_u64)
                .unwrap_or(3600),
        );
        Ok(Token {
            value: Arc::from(value),
            refresh_at: refresh_at(started, lifetime),
        })
    }
}

/// The longest a token is used for, whatever lifetime the token endpoint gave it.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// When a token fetched at `started` that lives `lifetime` is fetched again: a margin before it
/// expires, and within [`MAX_TOKEN_LIFETIME`].
fn refresh_at(started: Instant, lifetime: Duration) -> Instant {
    let lifetime = lifetime.min(MAX_TOKEN_LIFETIME);
    let margin = REFRESH_MARGIN.min(lifetime / 2);
    started.checked_add(lifetime - margin).unwrap_or(started)
}

/// How one deployment is called, worked out once per snapshot ([`prepare`]).
#[derive(Clone)]
pub(crate) struct Target {
    /// The URL without its `:method` (`…/models/{model}`).
    base: String,
    auth: Auth,
}

#[derive(Clone)]
enum Auth {
    /// The Gemini API's key.
    ApiKey(ferrolite_types::Secret),
    /// Vertex AI's service account.
    Vertex(Arc<TokenSource>),
}

/// The URL of `deployment`'s model without the method, and how it authenticates.
fn target(
    backend: &HttpBackend,
    deployment: &Deployment,
    model: &str,
) -> Result<Target, BackendError> {
    let bad = |message: String| BackendError::new(ErrorClass::BadRequest { status: 400 }, message);
    let provider = provider_of(deployment)?;
    let param = |name: &str| {
        deployment
            .provider_params
            .get(name)
            .map(|s| s.expose().trim().to_string())
            .filter(|s| !s.is_empty())
    };
    if provider == "gemini" {
        let key = match &deployment.api_key {
            Some(key) => key.clone(),
            None => std::env::var("GEMINI_API_KEY")
                .ok()
                .filter(|k| !k.is_empty())
                .map(ferrolite_types::Secret::new)
                .ok_or_else(|| {
                    BackendError::new(
                        ErrorClass::Authentication,
                        format!(
                            "gemini deployment `{}` needs api_key (or GEMINI_API_KEY)",
                            deployment.id()
                        ),
                    )
                })?,
        };
        let base = deployment
            .api_base
            .as_deref()
            .unwrap_or(GEMINI_API_BASE)
            .trim_end_matches('/');
        return Ok(Target {
            base: format!("{base}/models/{model}"),
            auth: Auth::ApiKey(key),
        });
    }
    let credentials = param("vertex_credentials").ok_or_else(|| {
        bad(format!(
            "vertex_ai deployment `{}` needs vertex_credentials",
            deployment.id()
        ))
    })?;
    let source = backend.google.source(&credentials).map_err(|why| {
        BackendError::new(
            ErrorClass::Authentication,
            format!("vertex_credentials: {why}"),
        )
    })?;
    let project = param("vertex_project")
        .or_else(|| source.account.project_id().map(str::to_string))
        .ok_or_else(|| {
            bad(format!(
                "vertex_ai deployment `{}` needs vertex_project",
                deployment.id()
            ))
        })?;
    let location = param("vertex_location").unwrap_or_else(|| DEFAULT_LOCATION.to_string());
    let base = match deployment.api_base.as_deref() {
        Some(api_base) => api_base.trim_end_matches('/').to_string(),
        None => vertex_url(&project, &location, model),
    };
    Ok(Target {
        base,
        auth: Auth::Vertex(source),
    })
}

/// Vertex AI's URL of a Google model in `project` at `location` (without the method).
pub fn vertex_url(project: &str, location: &str, model: &str) -> String {
    let host = if location == "global" {
        "aiplatform.googleapis.com".to_string()
    } else {
        format!("{location}-aiplatform.googleapis.com")
    };
    format!(
        "https://{host}/v1/projects/{project}/locations/{location}/publishers/google/models/{model}"
    )
}

/// What a Gemini or Vertex AI deployment prepares once per snapshot: its URL and credentials
/// (the token source shared with the deployments of the same service account). `None` for a
/// wildcard deployment (its URL names the model each call asks for) or one whose calls fail
/// before they are sent.
pub(crate) fn prepare(backend: &HttpBackend, deployment: &Deployment) -> Option<Prepared> {
    if deployment.model.contains('*') {
        return None;
    }
    target(backend, deployment, model_name(&deployment.model))
        .ok()
        .map(Prepared::new)
}

/// The target of one call: the prepared one, else worked out now.
fn target_of<'a>(
    backend: &HttpBackend,
    deployment: &Deployment,
    request: &'a BackendRequest,
) -> Result<(Cow<'a, Target>, String), BackendError> {
    let wanted = match request.body.get("model").and_then(Value::as_str) {
        Some(asked) if deployment.model.contains('*') => asked,
        _ => deployment.model.as_str(),
    };
    let model = model_name(wanted).to_string();
    if deployment.model.contains('*') {
        check_model(&model)?;
    }
    if let Some(target) = request.prepared.as_ref().and_then(|p| p.get::<Target>()) {
        return Ok((Cow::Borrowed(target), model));
    }
    Ok((Cow::Owned(target(backend, deployment, &model)?), model))
}

/// Refuses a model name a client asked a wildcard deployment for that could not stand as one
/// path segment of the URL as it is: characters other than ASCII letters, digits and `._@-`,
/// or a `.` / `..` segment (the URL would then name another path on Google's host, called with
/// the deployment's credentials).
fn check_model(model: &str) -> Result<(), BackendError> {
    let fits = !model.is_empty()
        && model != "."
        && model != ".."
        && model
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'));
    if fits {
        return Ok(());
    }
    let shown: String = model.chars().take(200).collect();
    Err(BackendError::new(
        ErrorClass::BadRequest { status: 400 },
        format!("model `{shown}` is not a Google model name (letters, digits and `._@-` only)"),
    ))
}

/// The call as a reqwest request: the translated body to `{base}:{method}`, authenticated.
async fn send(
    backend: &HttpBackend,
    deployment: &Deployment,
    request: &BackendRequest,
    stream: bool,
) -> Result<(reqwest::Response, String), BackendError> {
    if request.body.get("messages").is_none() {
        return Err(BackendError::new(
            ErrorClass::BadRequest { status: 400 },
            format!(
                "deployment `{}` serves chat completions only (Gemini's generateContent)",
                deployment.id()
            ),
        ));
    }
    let (target, model) = target_of(backend, deployment, request)?;
    let body = request_bytes_from_chat(&request.body, &model).map_err(|e| {
        BackendError::new(
            ErrorClass::BadRequest { status: 400 },
            format!("the request cannot be sent to Gemini: {e}"),
        )
    })?;
    let url = if stream {
        format!("{}:streamGenerateContent?alt=sse", target.base)
    } else {
        format!("{}:generateContent", target.base)
    };
    let mut builder = backend.client.post(url);
    builder = match &target.auth {
        Auth::ApiKey(key) => {
            let mut value = reqwest::header::HeaderValue::from_str(key.expose()).map_err(|_| {
                BackendError::new(
                    ErrorClass::Authentication,
                    "the api_key is not a valid header value",
                )
            })?;
            value.set_sensitive(true);
            builder.header("x-goog-api-key", value)
        }
        Auth::Vertex(source) => {
            let token = source.token(&backend.client).await?;
            builder.bearer_auth(&*token)
        }
    };
    if let Some(id) = &request.request_id {
        builder = builder.header("x-request-id", id.as_str());
    }
    for (name, value) in &deployment.extra_headers {
        builder = builder.header(name.as_str(), value.expose());
    }
    let mut trace = reqwest::header::HeaderMap::new();
    crate::http::add_trace_context(&mut trace, request.trace.as_ref());
    if !trace.is_empty() {
        builder = builder.headers(trace);
    }
    let response = builder
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| crate::http::transport_error(&e))?;
    if !response.status().is_success() {
        return Err(failed(response).await);
    }
    // The answer names the model as the provider knows it (without the provider prefix), as
    // an OpenAI-compatible provider's answer does.
    Ok((response, model))
}

/// Calls a Gemini or Vertex AI deployment and reads its whole answer.
pub(crate) fn call<'a>(
    backend: &'a HttpBackend,
    deployment: &'a Deployment,
    request: &'a BackendRequest,
) -> BackendFuture<'a> {
    Box::pin(async move {
        let (response, model) = send(backend, deployment, request, false).await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| bad_answer(format!("the answer broke off: {}", without_url(&e))))?;
        let answer: Value = serde_json::from_slice(&bytes)
            .map_err(|e| bad_answer(format!("the answer is not JSON: {e}")))?;
        if let Some(reason) = prompt_blocked(&answer) {
            return Err(reason);
        }
        let chat = answer_to_chat(&answer, &model)
            .map_err(|e| bad_answer(format!("the answer cannot be read: {e}")))?;
        let body = Body::from_value(&chat);
        Ok(BackendResponse {
            usage: body.usage(),
            body,
            time_to_first_token: None,
            protocol: Protocol::OpenAiChat,
        })
    })
}

/// A prompt Gemini refused to answer at all, as a content-policy error.
fn prompt_blocked(answer: &Value) -> Option<BackendError> {
    let none = answer
        .get("candidates")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    let reason = blocked(answer)?;
    none.then(|| {
        BackendError::new(
            ErrorClass::ContentPolicy,
            format!("Gemini blocked the prompt: {reason}"),
        )
    })
}

/// Streams a call of a Gemini or Vertex AI deployment: its server-sent events translated to
/// chat completion chunks, the last with the usage.
pub(crate) fn stream<'a>(
    backend: &'a HttpBackend,
    deployment: &'a Deployment,
    request: &'a BackendRequest,
) -> BackendStreamFuture<'a> {
    Box::pin(async move {
        let (response, model) = send(backend, deployment, request, true).await?;
        let state = Events {
            bytes: Box::pin(response.bytes_stream()),
            parser: SseParser::new(),
            chunks: ChatChunks::new(&model),
            ready: std::collections::VecDeque::new(),
            done: false,
            answered: false,
            finished: false,
        };
        let stream = futures_util::stream::unfold(state, |mut events| async move {
            events.next().await.map(|item| (item, events))
        });
        Ok(Box::pin(stream) as BackendStream)
    })
}

type Bytes = std::pin::Pin<
    Box<dyn futures_util::Stream<Item = Result<bytes::Bytes, reqwest::Error>> + Send>,
>;

/// A Gemini stream being read: bytes to events to chunks.
struct Events {
    bytes: Bytes,
    parser: SseParser,
    chunks: ChatChunks,
    ready: std::collections::VecDeque<Result<BackendChunk, BackendError>>,
    done: bool,
    /// Whether any event came.
    answered: bool,
    /// Whether a candidate's `finishReason` came (a stream without one was cut off).
    finished: bool,
}

impl Events {
    fn chunk(value: &Value) -> BackendChunk {
        let body = Body::from_value(value);
        BackendChunk {
            usage: body.usage(),
            body,
            protocol: Protocol::OpenAiChat,
        }
    }

    /// Translates one event's data; false when the stream is over (an error queued).
    fn event(&mut self, data: &str) -> bool {
        let data = data.trim();
        if data.is_empty() || data == "[DONE]" {
            return true;
        }
        self.answered = true;
        let event: Value = match serde_json::from_str(data) {
            Ok(event) => event,
            Err(e) => {
                self.ready
                    .push_back(Err(bad_answer(format!("a stream event is not JSON: {e}"))));
                return false;
            }
        };
        if let Some(error) = event.get("error") {
            let status = error
                .get("code")
                .and_then(Value::as_u64)
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or(500);
            self.ready.push_back(Err(classify(status, None, data)));
            return false;
        }
        if let Some(error) = prompt_blocked(&event) {
            self.ready.push_back(Err(error));
            return false;
        }
        if event
            .get("candidates")
            .and_then(Value::as_array)
            .is_some_and(|c| c.iter().any(|c| c.get("finishReason").is_some()))
        {
            self.finished = true;
        }
        match self.chunks.push(&event) {
            Ok(chunks) => {
                self.ready.extend(chunks.iter().map(|c| Ok(Self::chunk(c))));
                true
            }
            Err(e) => {
                self.ready.push_back(Err(bad_answer(format!(
                    "a stream event cannot be read: {e}"
                ))));
                false
            }
        }
    }

    async fn next(&mut self) -> Option<Result<BackendChunk, BackendError>> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Some(item);
            }
            if self.done {
                return None;
            }
            match self.bytes.next().await {
                Some(Ok(bytes)) => match self.parser.push(&bytes) {
                    Ok(events) => {
                        for event in events {
                            if !self.event(&event.data) {
                                self.done = true;
                                break;
                            }
                        }
                    }
                    Err(e) => {
                        self.done = true;
                        return Some(Err(bad_answer(format!("the stream is cut off: {e}"))));
                    }
                },
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(BackendError::new(
                        ErrorClass::Connection,
                        format!("the stream broke: {}", without_url(&e)),
                    )));
                }
                None => {
                    self.done = true;
                    let mut going = true;
                    if let Some(event) = self.parser.finish() {
                        going = self.event(&event.data);
                    }
                    if going && !self.answered {
                        self.ready.push_back(Err(bad_answer(
                            "the stream ended without an event".to_string(),
                        )));
                    } else if going && !self.finished {
                        self.ready.push_back(Err(BackendError::new(
                            ErrorClass::Connection,
                            "the stream ended before a finishReason",
                        )));
                    } else if going {
                        let last = self.chunks.finish();
                        self.ready.extend(last.iter().map(|c| Ok(Self::chunk(c))));
                    }
                }
            }
        }
    }
}

/// Reads a Google error answer and classifies it.
async fn failed(response: reqwest::Response) -> BackendError {
    let status = response.status().as_u16();
    let retry = retry_after(response.headers());
    let body = response.text().await.unwrap_or_default();
    classify(status, retry, &body)
}

/// Classifies a Google error answer (`{"error": {"code", "message", "status", "details"}}`):
/// see the module documentation.
pub(crate) fn classify(status: u16, retry: Option<Duration>, body: &str) -> BackendError {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    // A stream's error event, or an answer that is a list of one error.
    let error = parsed.as_ref().and_then(|b| {
        b.get("error")
            .or_else(|| b.as_array()?.first()?.get("error"))
    });
    let google_status = error
        .and_then(|e| e.get("status"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let message = error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .map_or_else(|| body.chars().take(500).collect(), str::to_string);
    let lower = message.to_ascii_lowercase();
    let class = if status == 429 || google_status == "RESOURCE_EXHAUSTED" {
        let delay = retry.or_else(|| error.and_then(retry_delay));
        ErrorClass::RateLimited { retry_after: delay }
    } else if lower.contains("exceeds the maximum number of tokens")
        || lower.contains("input token count")
        || lower.contains("too long")
        || lower.contains("context window")
    {
        ErrorClass::ContextWindowExceeded
    } else if google_status == "UNAUTHENTICATED"
        || lower.contains("api key not valid")
        || lower.contains("api_key_invalid")
    {
        ErrorClass::Authentication
    } else if google_status == "PERMISSION_DENIED" {
        ErrorClass::PermissionDenied
    } else if (400..500).contains(&status)
        && (message.contains("SAFETY")
            || message.contains("PROHIBITED_CONTENT")
            || lower.contains("blocked due to safety")
            || lower.contains("content policy"))
    {
        ErrorClass::ContentPolicy
    } else {
        ErrorClass::from_status(status, retry)
    };
    let status_text = if google_status.is_empty() {
        String::new()
    } else {
        format!(" {google_status}")
    };
    BackendError::new(class, format!("HTTP {status}{status_text}: {message}"))
}

/// The `retryDelay` of a `google.rpc.RetryInfo` detail (`"36s"`, `"0.5s"`).
fn retry_delay(error: &Value) -> Option<Duration> {
    error.get("details")?.as_array()?.iter().find_map(|detail| {
        let delay = detail.get("retryDelay")?.as_str()?;
        let seconds: f64 = delay.strip_suffix('s')?.parse().ok()?;
        crate::http::delay_of_seconds(seconds)
    })
}

/// `bytes` in base64url without padding (a JWT's encoding).
fn base64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The DER bytes of a PEM `PRIVATE KEY` block (PKCS#8).
fn pem_pkcs8(pem: &str) -> Option<Vec<u8>> {
    let begin = "-----BEGIN PRIVATE KEY-----";
    let end = "-----END PRIVATE KEY-----";
    let start = pem.find(begin)? + begin.len();
    let stop = start + pem[start..].find(end)?;
    base64_decode(&pem[start..stop])
}

/// Standard base64 (whitespace and `\n` escapes skipped, padding optional).
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let text: String = text
        .replace("\\n", "")
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(text.trim_end_matches('='))
        .ok()
}

/// `text` encoded for an `application/x-www-form-urlencoded` body.
fn form_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_retry_delays_and_token_lifetimes_are_capped_not_a_panic() {
        let error = serde_json::json!({"details": [{"retryDelay": "1e20s"}]});
        assert_eq!(retry_delay(&error), Some(Duration::from_secs(86_400)));
        let error = serde_json::json!({"details": [{"retryDelay": "2.5s"}]});
        assert_eq!(retry_delay(&error), Some(Duration::from_millis(2500)));
        let now = Instant::now();
        let at = refresh_at(now, Duration::from_secs(u64::MAX));
        assert_eq!(at, now + Duration::from_secs(86_400) - REFRESH_MARGIN);
        assert_eq!(
            refresh_at(now, Duration::from_secs(3600)),
            now + Duration::from_secs(3600) - REFRESH_MARGIN
        );
    }

    #[test]
    fn base64url_encodes_without_padding() {
        assert_eq!(base64url(b""), "");
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn base64_decodes_what_pem_holds() {
        assert_eq!(base64_decode("Zm9v\nYmFy").unwrap(), b"foobar");
        assert_eq!(base64_decode("Zm8=").unwrap(), b"fo");
        assert!(base64_decode("Zm9v!").is_none());
    }

    #[test]
    fn vertex_urls_name_project_location_and_model() {
        assert_eq!(
            vertex_url("p", "us-central1", "gemini-2.5-flash"),
            "https://us-central1-aiplatform.googleapis.com/v1/projects/p/locations/us-central1/publishers/google/models/gemini-2.5-flash"
        );
        assert_eq!(
            vertex_url("p", "global", "gemini-2.5-pro"),
            "https://aiplatform.googleapis.com/v1/projects/p/locations/global/publishers/google/models/gemini-2.5-pro"
        );
    }

    #[test]
    fn google_errors_are_classified_by_status_and_message() {
        let limited = r#"{"error": {"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "36s"}]}}"#;
        assert_eq!(
            classify(429, None, limited).class,
            ErrorClass::RateLimited {
                retry_after: Some(Duration::from_secs(36))
            }
        );
        let long = r#"{"error": {"code": 400, "message": "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).", "status": "INVALID_ARGUMENT"}}"#;
        assert_eq!(
            classify(400, None, long).class,
            ErrorClass::ContextWindowExceeded
        );
        let key = r#"{"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT"}}"#;
        assert_eq!(classify(400, None, key).class, ErrorClass::Authentication);
        let denied =
            r#"{"error": {"code": 403, "message": "denied", "status": "PERMISSION_DENIED"}}"#;
        assert_eq!(
            classify(403, None, denied).class,
            ErrorClass::PermissionDenied
        );
        let safety = r#"{"error": {"code": 400, "message": "The response was blocked due to SAFETY", "status": "INVALID_ARGUMENT"}}"#;
        assert_eq!(classify(400, None, safety).class, ErrorClass::ContentPolicy);
        assert_eq!(
            classify(503, None, "unavailable").class,
            ErrorClass::ServerError { status: 503 }
        );
    }
}
