//! How a failed call is classified, and what the router does with each class.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The class of a failed provider call. The router's retry, cooldown and fallback decisions read
/// only this, never provider-specific error text.
///
/// The predicates follow LiteLLM 1.109.1 (the `should_retry` status table of its retries, and
/// `_is_cooldown_required` in `router_utils/cooldown_handlers.py`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ErrorClass {
    /// 429, with the provider's `Retry-After` when it sent one.
    RateLimited {
        /// How long the provider asked us to wait.
        retry_after: Option<Duration>,
    },
    /// The attempt ran past its timeout (408).
    Timeout,
    /// The prompt does not fit the model's context window (a 400).
    ContextWindowExceeded,
    /// The provider refused the content (a 400).
    ContentPolicy,
    /// 401.
    Authentication,
    /// 403.
    PermissionDenied,
    /// 404.
    NotFound,
    /// Any other 4xx the provider sent (400, 409, 422, ...).
    BadRequest {
        /// The HTTP status.
        status: u16,
    },
    /// 402, or a provider's "insufficient credit" / budget error.
    BudgetExceeded,
    /// 5xx.
    ServerError {
        /// The HTTP status.
        status: u16,
    },
    /// The connection failed before an HTTP status was received.
    Connection,
}

impl ErrorClass {
    /// Classifies an HTTP status (with the `Retry-After` header, if any). Statuses below 400 are
    /// not errors a provider reports; they are classified as server errors so that a
    /// misbehaving endpoint is still retried and cooled down.
    ///
    /// ```
    /// use ferrolite_types::ErrorClass;
    /// assert_eq!(ErrorClass::from_status(401, None), ErrorClass::Authentication);
    /// assert!(ErrorClass::from_status(503, None).is_retryable());
    /// assert!(!ErrorClass::from_status(400, None).is_retryable());
    /// ```
    pub fn from_status(status: u16, retry_after: Option<Duration>) -> Self {
        match status {
            401 => ErrorClass::Authentication,
            402 => ErrorClass::BudgetExceeded,
            403 => ErrorClass::PermissionDenied,
            404 => ErrorClass::NotFound,
            408 => ErrorClass::Timeout,
            429 => ErrorClass::RateLimited { retry_after },
            400..=499 => ErrorClass::BadRequest { status },
            _ => ErrorClass::ServerError { status },
        }
    }

    /// The HTTP status this class stands for (`None` for connection errors).
    pub fn status(&self) -> Option<u16> {
        Some(match self {
            ErrorClass::RateLimited { .. } => 429,
            ErrorClass::Timeout => 408,
            ErrorClass::ContextWindowExceeded | ErrorClass::ContentPolicy => 400,
            ErrorClass::Authentication => 401,
            ErrorClass::PermissionDenied => 403,
            ErrorClass::NotFound => 404,
            ErrorClass::BadRequest { status } | ErrorClass::ServerError { status } => *status,
            ErrorClass::BudgetExceeded => 402,
            ErrorClass::Connection => return None,
        })
    }

    /// The provider's `Retry-After`, if it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ErrorClass::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }

    /// Whether the same request may be retried (LiteLLM's `should_retry`): 408, 409, 429, 5xx
    /// and connection errors.
    pub fn is_retryable(&self) -> bool {
        match self.status() {
            None => true,
            Some(status) => matches!(status, 408 | 409 | 429) || status >= 500,
        }
    }

    /// Whether the request may be retried on *another* deployment of the group even though
    /// [`is_retryable`](Self::is_retryable) is false: 401 and 403 (a bad key on one deployment says
    /// nothing about its siblings).
    pub fn is_retryable_on_sibling(&self) -> bool {
        self.is_retryable()
            || matches!(
                self,
                ErrorClass::Authentication | ErrorClass::PermissionDenied
            )
    }

    /// Whether a retry must skip the deployment that failed (LiteLLM's retry-skip list): true
    /// for every error that is not retryable on the same deployment.
    pub fn skips_failed_deployment(&self) -> bool {
        !self.is_retryable()
    }

    /// Whether this error counts toward cooling the deployment down (LiteLLM's
    /// `_is_cooldown_required`): connection errors do not; among 4xx only 401, 402, 404, 408 and
    /// 429 do; 5xx do.
    pub fn is_cooldown_relevant(&self) -> bool {
        match self.status() {
            None => false,
            Some(status @ 400..=499) => matches!(status, 401 | 402 | 404 | 408 | 429),
            Some(_) => true,
        }
    }
}

impl ErrorClass {
    /// The name LiteLLM gives this class of error (its exception type): `RateLimitError`,
    /// `Timeout`, `ContextWindowExceededError`, ...
    pub fn name(&self) -> &'static str {
        match self {
            ErrorClass::RateLimited { .. } => "RateLimitError",
            ErrorClass::Timeout => "Timeout",
            ErrorClass::ContextWindowExceeded => "ContextWindowExceededError",
            ErrorClass::ContentPolicy => "ContentPolicyViolationError",
            ErrorClass::Authentication => "AuthenticationError",
            ErrorClass::PermissionDenied => "PermissionDeniedError",
            ErrorClass::NotFound => "NotFoundError",
            ErrorClass::BadRequest { status: 422 } => "UnprocessableEntityError",
            ErrorClass::BadRequest { .. } => "BadRequestError",
            ErrorClass::BudgetExceeded => "BudgetExceededError",
            ErrorClass::ServerError { status: 502 } => "BadGatewayError",
            ErrorClass::ServerError { status: 503 } => "ServiceUnavailableError",
            ErrorClass::ServerError { .. } => "InternalServerError",
            ErrorClass::Connection => "APIConnectionError",
        }
    }
}

/// The class as a sentence for people: LiteLLM's exception name, then what happened.
///
/// ```
/// use std::time::Duration;
/// use ferrolite_types::ErrorClass;
/// let class = ErrorClass::RateLimited { retry_after: Some(Duration::from_secs(7)) };
/// assert_eq!(
///     class.to_string(),
///     "RateLimitError: the provider rate-limited the call (it asked to retry after 7 seconds)"
/// );
/// ```
impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: ", self.name())?;
        match self {
            ErrorClass::RateLimited { retry_after } => {
                f.write_str("the provider rate-limited the call")?;
                if let Some(after) = retry_after {
                    write!(
                        f,
                        " (it asked to retry after {} seconds)",
                        after.as_secs_f64()
                    )?;
                }
                Ok(())
            }
            ErrorClass::Timeout => f.write_str("the provider did not answer in time"),
            ErrorClass::ContextWindowExceeded => {
                f.write_str("the request does not fit the model's context window")
            }
            ErrorClass::ContentPolicy => f.write_str("the provider refused the content"),
            ErrorClass::Authentication => f.write_str("the provider refused the credentials"),
            ErrorClass::PermissionDenied => f.write_str("the provider denied access"),
            ErrorClass::NotFound => f.write_str("the provider does not know the model or route"),
            ErrorClass::BadRequest { status } => {
                write!(f, "the provider refused the request (HTTP {status})")
            }
            ErrorClass::BudgetExceeded => {
                f.write_str("the provider's budget or credit is exhausted (HTTP 402)")
            }
            ErrorClass::ServerError { status } => {
                write!(f, "the provider failed (HTTP {status})")
            }
            ErrorClass::Connection => f.write_str("the provider could not be reached"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_mapping_round_trips() {
        for status in [400, 401, 402, 403, 404, 408, 409, 422, 429, 500, 502, 503] {
            assert_eq!(
                ErrorClass::from_status(status, None).status(),
                Some(status),
                "{status}"
            );
        }
    }

    #[test]
    fn retryable_statuses_match_litellm_should_retry() {
        let retryable: Vec<u16> = [400, 401, 402, 403, 404, 408, 409, 422, 429, 500, 503]
            .into_iter()
            .filter(|s| ErrorClass::from_status(*s, None).is_retryable())
            .collect();
        assert_eq!(retryable, vec![408, 409, 429, 500, 503]);
        assert!(ErrorClass::Connection.is_retryable());
        assert!(!ErrorClass::ContextWindowExceeded.is_retryable());
    }

    #[test]
    fn auth_errors_retry_only_on_siblings_and_skip_the_failed_deployment() {
        for class in [ErrorClass::Authentication, ErrorClass::PermissionDenied] {
            assert!(!class.is_retryable());
            assert!(class.is_retryable_on_sibling());
            assert!(class.skips_failed_deployment());
        }
        assert!(!ErrorClass::NotFound.is_retryable_on_sibling());
        assert!(!ErrorClass::Connection.skips_failed_deployment());
    }

    #[test]
    fn cooldown_relevance_matches_litellm() {
        let relevant: Vec<u16> = [400, 401, 402, 403, 404, 408, 409, 422, 429, 500, 503]
            .into_iter()
            .filter(|s| ErrorClass::from_status(*s, None).is_cooldown_relevant())
            .collect();
        assert_eq!(relevant, vec![401, 402, 404, 408, 429, 500, 503]);
        assert!(!ErrorClass::Connection.is_cooldown_relevant());
        assert!(!ErrorClass::ContentPolicy.is_cooldown_relevant());
    }

    #[test]
    fn retry_after_is_kept_on_rate_limits() {
        let class = ErrorClass::from_status(429, Some(Duration::from_secs(3)));
        assert_eq!(class.retry_after(), Some(Duration::from_secs(3)));
        assert_eq!(ErrorClass::Timeout.retry_after(), None);
    }
}
