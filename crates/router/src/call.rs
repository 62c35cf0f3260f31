//! One request's running state across its attempts, retries and fallbacks ([`Call`]), and why
//! a destination failed ([`Failure`]).

use std::sync::Arc;
use std::time::Duration;

use ferrolite_types::{DeploymentId, DeploymentIx, ErrorClass};
use tokio::time::Instant;

use parking_lot::Mutex;

use crate::explain::Recorder;
use crate::keys::HeldKey;
use crate::snapshot::Snapshot;
use crate::{Request, RouterError, Tried};

/// A request's running state, built once per request and passed as `&mut Call` through the
/// stages, with the snapshot it routes on (every attempt of the request sees the same one).
pub(crate) struct Call<'r> {
    /// The deployment list and its state, as the request found them.
    pub(crate) snapshot: Arc<Snapshot>,
    pub(crate) request: &'r Request,
    /// The budget scopes of the call: its tags and its extra budget tags.
    pub(crate) budget_tags: Vec<String>,
    pub(crate) input_tokens: u64,
    pub(crate) started: Instant,
    /// When the request's own deadline passes, and its length.
    pub(crate) deadline: Option<(Instant, Duration)>,
    pub(crate) attempts: u32,
    pub(crate) retries: u32,
    /// The retries of the group (or tier) that answered, and its retry limit when it retried.
    pub(crate) answered_retries: (u32, Option<u32>),
    pub(crate) fallbacks: u32,
    /// Destinations named so far (no target twice in one request): a handful, searched in
    /// order (a list is half a set's size in the call's future, and needs no hasher).
    pub(crate) attempted: Vec<String>,
    pub(crate) tried: Vec<Tried>,
    /// Time spent in backends and backoffs (the rest is the router's overhead).
    pub(crate) outside: Duration,
    /// The backoff waited before the next attempt, in milliseconds (its span reports it),
    /// then zero.
    pub(crate) waited_ms: u32,
    /// The calling API key's admission, until an attempt answers (it then holds it).
    pub(crate) key: Option<HeldKey>,
    /// The request's routing explanation, recorded only when it asks for one.
    pub(crate) explain: Option<Box<Mutex<Recorder>>>,
}

impl<'r> Call<'r> {
    /// The state of `request`, started at `started`, routed on `snapshot` to the destination
    /// called `first`; `deadline` is the router's default deadline.
    pub(crate) fn new(
        snapshot: Arc<Snapshot>,
        request: &'r Request,
        started: Instant,
        deadline: Option<Duration>,
        first: &str,
    ) -> Self {
        let budget_tags = if request.budget_tags.is_empty() {
            request.tags.clone()
        } else {
            request
                .tags
                .iter()
                .chain(&request.budget_tags)
                .cloned()
                .collect()
        };
        let explain = request.explain.then(|| {
            let strategy = snapshot.strategy.name().as_str();
            Box::new(Mutex::new(Recorder::new(&request.model, strategy)))
        });
        Call {
            snapshot,
            input_tokens: request.input_tokens(),
            budget_tags,
            request,
            started,
            deadline: request.deadline.or(deadline).map(|d| (started + d, d)),
            attempts: 0,
            retries: 0,
            answered_retries: (0, None),
            fallbacks: 0,
            attempted: vec![first.to_string()],
            tried: Vec::new(),
            outside: Duration::ZERO,
            waited_ms: 0,
            key: None,
            explain,
        }
    }

    /// Records into the request's explanation, when it asks for one (nothing otherwise).
    #[inline]
    pub(crate) fn explain(&self, record: impl FnOnce(&mut Recorder)) {
        if let Some(recorder) = &self.explain {
            record(&mut recorder.lock());
        }
    }

    /// The request's deadline error, when it has passed (or would, `wait` from now).
    pub(crate) fn past_deadline(&self, wait: Duration) -> Option<Failure> {
        let (deadline, length) = self.deadline?;
        (Instant::now() + wait >= deadline).then_some(Failure::Deadline(
            RouterError::DeadlineExceeded {
                deadline: length,
                attempts: self.attempts,
            },
        ))
    }
}

/// Why a destination failed.
pub(crate) enum Failure {
    /// The backend failed.
    Backend {
        model_group: String,
        /// The deployment that failed; `None` when no deployment was called (the context
        /// window check found none large enough).
        ix: Option<DeploymentIx>,
        deployment: DeploymentId,
        class: ErrorClass,
        message: String,
    },
    /// Nothing could be picked or admitted (all cooled, no capacity, over budget).
    Selection(RouterError),
    /// The request's own deadline passed: nothing more is tried.
    Deadline(RouterError),
    /// The router's state failed.
    Other(RouterError),
}

impl Failure {
    /// What went wrong, in a line (an explanation's `error`).
    pub(crate) fn describe(&self) -> String {
        match self {
            Failure::Backend { message, .. } => message.clone(),
            Failure::Selection(e) | Failure::Deadline(e) | Failure::Other(e) => e.to_string(),
        }
    }

    /// The backend's error class, when a backend failed.
    pub(crate) fn class(&self) -> Option<&ErrorClass> {
        match self {
            Failure::Backend { class, .. } => Some(class),
            _ => None,
        }
    }

    /// Whether nothing more is to be tried for the request (its deadline passed, or the
    /// router's state failed).
    pub(crate) fn is_final(&self) -> bool {
        matches!(self, Failure::Deadline(_) | Failure::Other(_))
    }

    /// The error the caller sees: a backend failure names the group (`primary` when the
    /// failure had none) and every deployment `tried`.
    pub(crate) fn into_error(self, primary: String, tried: Vec<Tried>) -> RouterError {
        match self {
            Failure::Backend {
                model_group,
                deployment,
                class,
                message,
                ..
            } => RouterError::Backend {
                model_group: if model_group.is_empty() {
                    primary
                } else {
                    model_group
                },
                deployment,
                class,
                message,
                tried,
            },
            Failure::Selection(e) | Failure::Deadline(e) | Failure::Other(e) => e,
        }
    }
}

/// What a routed call's success says besides its answer.
pub(crate) struct Summary {
    /// Retries in the group that answered, and its limit when it retried.
    pub(crate) retries: (u32, Option<u32>),
    pub(crate) fallbacks: u32,
    /// Deployments called, the one that answered included.
    pub(crate) attempts: u32,
    /// The answering deployment's `api_base`.
    pub(crate) api_base: Option<String>,
    /// The router's own time (to the first chunk, for a stream).
    pub(crate) overhead: Duration,
    /// How the request was routed, when it asked.
    pub(crate) route: Option<Box<crate::Route>>,
}
