//! The one error type of ferrolite-cache.

/// Everything that can go wrong in the cache, naming the key, field or value involved.
/// Secrets (the Redis password) never appear: URLs are shown with the password replaced by `***`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CacheError {
    /// The Redis URL could not be used.
    #[error("invalid Redis URL `{url}`: {reason}")]
    InvalidRedisUrl {
        /// The URL, password redacted.
        url: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A configuration value out of its range.
    #[error("invalid cache setting `{field}` = {value}: {reason}")]
    InvalidConfig {
        /// The setting.
        field: &'static str,
        /// The value given.
        value: String,
        /// What is accepted.
        reason: &'static str,
    },
    /// An argument of a call was unusable (empty key, zero TTL, NaN delta...).
    #[error("invalid argument `{field}` = {value}: {reason}")]
    InvalidArgument {
        /// The argument.
        field: &'static str,
        /// The value given.
        value: String,
        /// What is accepted.
        reason: &'static str,
    },
    /// Redis is down or did not answer in time, and the operation needs it (fail-closed mode, a
    /// strict admission with fail-closed, or an explicitly remote operation).
    #[error("Redis unavailable during `{operation}`: {reason}")]
    Unavailable {
        /// What was being done.
        operation: &'static str,
        /// The client's error.
        reason: String,
    },
    /// Redis answered with an error (wrong type, script error...).
    #[error("Redis error during `{operation}` on key `{key}`: {reason}")]
    Redis {
        /// What was being done.
        operation: &'static str,
        /// The key involved (without the namespace prefix).
        key: String,
        /// Redis' error text.
        reason: String,
    },
    /// Redis answered, but not with what ferrolite expects there (a string where a counter is
    /// expected, a reply of the wrong shape).
    #[error("unexpected Redis reply for key `{key}`: expected {expected}, got {got}")]
    UnexpectedReply {
        /// The key involved (without the namespace prefix), or the script name.
        key: String,
        /// What was expected.
        expected: &'static str,
        /// What came back (truncated).
        got: String,
    },
    /// A key already used as one kind of counter was asked for as another.
    #[error("key `{key}` is a {existing} counter, not a {requested} counter")]
    KindMismatch {
        /// The key.
        key: String,
        /// Its kind.
        existing: &'static str,
        /// The kind asked for.
        requested: &'static str,
    },
    /// The bound on tracked counter keys is reached and none could be pruned.
    #[error(
        "cannot track counter `{key}`: {limit} keys are tracked already (raise max_tracked_keys)"
    )]
    TrackedKeysFull {
        /// The key refused.
        key: String,
        /// The configured bound.
        limit: usize,
    },
}
