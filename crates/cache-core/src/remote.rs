//! The shared tier as the cache sees it: [`RemoteStore`], everything the cache asks of the store
//! every instance shares, and [`NoRemote`], the store of a cache that shares nothing.
//!
//! The trait is shaped the way TensorZero keeps its rate-limit store (`RateLimitQueries`, with
//! a Postgres and a Valkey implementation and a disabled one): whole requests in, typed receipts
//! out, one method per protocol step, and an implementation that is always "not configured".
//! The Redis implementation (fred, behind the `redis` feature) lives in `redis.rs`; it owns the
//! key namespace, the Lua scripts and the decoding of replies, so nothing above this module
//! speaks Redis.
//!
//! The hot path never goes through the trait: a counter increment, a value read and a deadline
//! read touch only the local tier. The store is called by the sync task, by strict admission,
//! by lease and deadline writes, and by value reads that miss locally — each a round trip, next
//! to which the boxed future is noise.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::counter::{ExpiryMode, Kind, Num};
use crate::error::CacheError;
use crate::script::LuaScript;

/// A boxed future borrowing the store: what a [`RemoteStore`] method returns.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

// The requests and receipts below are built and read by a store that reaches a shared tier
// (Redis, with the `redis` feature); a build without one keeps them as the trait's contract.
/// One tracked key in a sync's round trip.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
#[derive(Debug, Clone, Copy)]
pub(crate) enum SyncItem<'a> {
    /// Apply a counter's `delta` once per (instance, `seq`), refresh its expiry, read its global
    /// value back.
    Push {
        key: &'a str,
        seq: u64,
        delta: Num,
        ttl_ms: u64,
        expiry: ExpiryMode,
        kind: Kind,
    },
    /// Read a counter's global value (absent is 0).
    Read { key: &'a str, kind: Kind },
    /// Read a watched deadline (absent is 0: not set).
    ReadDeadline { key: &'a str },
    /// Send a deadline Redis has not taken yet ("set if later") and read it back.
    SendDeadline {
        key: &'a str,
        until_ms: u64,
        ttl_ms: u64,
    },
}

/// What one [`SyncItem`] came back with.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum SyncReply {
    /// A push was applied (now or before): the global value and the key's remaining TTL.
    Pushed { global: Num, ttl_ms: Option<u64> },
    /// A counter's global value.
    Value(Num),
    /// A deadline in Unix ms (0: not set).
    Deadline(u64),
}

/// The outcome of one sync round trip.
#[derive(Debug, Default)]
pub(crate) struct RoundTrip {
    /// One entry per item, in order. `None`: no usable answer (no reply, the script had to be
    /// loaded again); the item is sent again as is next time. `Some(Err)`: the reply could not
    /// be read as the item's type ([`CacheError::UnexpectedReply`]) or Redis refused the
    /// command ([`CacheError::Redis`]).
    pub(crate) replies: Vec<Option<Result<SyncReply, CacheError>>>,
    /// Errors of the round trip as a whole: Redis unavailable (once), scripts that could not
    /// be loaded again.
    pub(crate) errors: Vec<CacheError>,
}

/// One limit of a strict admission, in the keys of its window buckets.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
#[derive(Debug, Clone)]
pub(crate) struct AdmitCheck<'a> {
    /// The current bucket's counter key.
    pub(crate) current: &'a str,
    /// The previous bucket's counter key (read for sliding windows).
    pub(crate) previous: String,
    pub(crate) delta: u64,
    pub(crate) limit: u64,
    pub(crate) bucket_start_ms: u64,
    /// The window's length for a sliding window, 0 for a fixed one.
    pub(crate) sliding_ms: u64,
    /// How long a bucket's counter is kept.
    pub(crate) retention_ms: u64,
}

/// A strict admission's receipt from the store.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AdmitReceipt {
    pub(crate) admitted: bool,
    /// Each limit's count in its window, in the order of the checks.
    pub(crate) counts: Vec<f64>,
    /// Each current bucket's raw global value.
    pub(crate) raw: Vec<i64>,
    /// The store's time the windows were evaluated at.
    pub(crate) now_ms: u64,
}

/// The withdrawal of an admission whose reply was lost, waiting to reach the store: if the
/// admission ran, its deltas are given back; if not, it is stopped from running.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
#[derive(Debug, Clone)]
pub(crate) struct PendingCancel {
    /// The admission's token.
    pub(crate) token: String,
    /// The current-bucket counter keys the admission incremented, in order.
    pub(crate) counters: Vec<String>,
    pub(crate) deltas: Vec<u64>,
}

/// Everything the cache asks of the tier it shares with other instances.
///
/// Keys are given without the store's namespace; the store adds it. Every method answers
/// [`CacheError::Unavailable`] when the store cannot be reached or is too slow (each call has
/// a timeout), and keeps the outage state it was given up to date.
pub(crate) trait RemoteStore: Send + Sync + std::fmt::Debug {
    /// Whether a shared tier is configured (`false` for [`NoRemote`]).
    fn is_configured(&self) -> bool;

    /// Starts connecting, waits up to `wait` for the first connection and, once connected,
    /// loads the scripts. Whether it connected; the store keeps reconnecting either way.
    fn connect(&self, wait: Duration) -> BoxFuture<'_, bool>;

    /// A cheap command that keeps the outage state fresh when a sync has nothing to send.
    fn check_health(&self) -> BoxFuture<'_, ()>;

    /// Closes the connection (once).
    fn quit(&self) -> BoxFuture<'_, ()>;

    /// Whether [`quit`](Self::quit) ran.
    fn is_closed(&self) -> bool;

    /// A value (`None`: absent).
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<String>, CacheError>>;

    /// Several values in one round trip, in order.
    fn get_many<'a>(
        &'a self,
        keys: &'a [&'a str],
    ) -> BoxFuture<'a, Result<Vec<Option<String>>, CacheError>>;

    /// Stores a value for `ttl`.
    fn set<'a>(
        &'a self,
        key: &'a str,
        value: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), CacheError>>;

    /// Stores a value for `ttl` unless the key holds one; the value now stored.
    fn set_if_absent<'a>(
        &'a self,
        key: &'a str,
        value: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<String, CacheError>>;

    /// Runs a script (of a crate above this one) with `keys` and `args`.
    fn eval<'a>(
        &'a self,
        script: &'a LuaScript,
        keys: &'a [&'a str],
        args: Vec<String>,
    ) -> BoxFuture<'a, Result<ScriptReply, CacheError>>;

    /// One sync round trip: pushes and reads, exactly once per (`instance`, sequence).
    fn sync<'a>(&'a self, instance: &'a str, items: &'a [SyncItem<'a>])
    -> BoxFuture<'a, RoundTrip>;

    /// Moves a deadline to `until_ms` unless it is later already ("set if later"), keeping the
    /// key `ttl_ms`; the deadline now stored.
    fn set_later<'a>(
        &'a self,
        key: &'a str,
        until_ms: u64,
        ttl_ms: u64,
    ) -> BoxFuture<'a, Result<u64, CacheError>>;

    /// Checks every limit and increments all of them or none, atomically, with the store's
    /// time; `token` names the admission for a later [`cancel`](Self::cancel).
    fn admit<'a>(
        &'a self,
        token: &'a str,
        checks: &'a [AdmitCheck<'a>],
    ) -> BoxFuture<'a, Result<AdmitReceipt, CacheError>>;

    /// Withdraws an admission whose reply was lost.
    fn cancel<'a>(&'a self, cancel: &'a PendingCancel) -> BoxFuture<'a, Result<(), CacheError>>;

    /// Takes one of `limit` slots of `key` for `ttl` under `token`; whether there was one.
    fn take_lease<'a>(
        &'a self,
        key: &'a str,
        token: &'a str,
        limit: u64,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, CacheError>>;

    /// Extends a slot to a full `ttl` from now.
    fn renew_lease<'a>(
        &'a self,
        key: &'a str,
        token: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), CacheError>>;

    /// Gives one slot back.
    fn release_lease<'a>(
        &'a self,
        key: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Result<(), CacheError>>;

    /// Gives several `(key, token)` slots back in one round trip; whether the store took each.
    fn release_leases<'a>(&'a self, pending: &'a [(String, String)]) -> BoxFuture<'a, Vec<bool>>;

    /// The slots held under each key whose expiry lies after `now_ms` (Unix ms), in one round
    /// trip.
    fn count_leases<'a>(
        &'a self,
        keys: &'a [&'a str],
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<u64>, CacheError>>;
}

/// The store of a cache that shares nothing: always "not configured". The cache checks
/// [`RemoteStore::is_configured`] before it calls a store, so these answers are a guard, not a
/// path: every operation is refused as unavailable, and nothing is ever sent.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct NoRemote;

fn not_configured(operation: &'static str) -> CacheError {
    CacheError::Unavailable {
        operation,
        reason: "no shared tier is configured".into(),
    }
}

fn refused<'a, T: Send + 'a>(operation: &'static str) -> BoxFuture<'a, Result<T, CacheError>> {
    Box::pin(std::future::ready(Err(not_configured(operation))))
}

impl RemoteStore for NoRemote {
    fn is_configured(&self) -> bool {
        false
    }

    fn connect(&self, _wait: Duration) -> BoxFuture<'_, bool> {
        Box::pin(std::future::ready(false))
    }

    fn check_health(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }

    fn quit(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }

    fn is_closed(&self) -> bool {
        true
    }

    fn get<'a>(&'a self, _key: &'a str) -> BoxFuture<'a, Result<Option<String>, CacheError>> {
        refused("get")
    }

    fn get_many<'a>(
        &'a self,
        _keys: &'a [&'a str],
    ) -> BoxFuture<'a, Result<Vec<Option<String>>, CacheError>> {
        refused("mget")
    }

    fn set<'a>(
        &'a self,
        _key: &'a str,
        _value: &'a str,
        _ttl: Duration,
    ) -> BoxFuture<'a, Result<(), CacheError>> {
        refused("set")
    }

    fn set_if_absent<'a>(
        &'a self,
        _key: &'a str,
        _value: &'a str,
        _ttl: Duration,
    ) -> BoxFuture<'a, Result<String, CacheError>> {
        refused("set_if_absent")
    }

    fn eval<'a>(
        &'a self,
        _script: &'a LuaScript,
        _keys: &'a [&'a str],
        _args: Vec<String>,
    ) -> BoxFuture<'a, Result<ScriptReply, CacheError>> {
        refused("script")
    }

    fn sync<'a>(
        &'a self,
        _instance: &'a str,
        items: &'a [SyncItem<'a>],
    ) -> BoxFuture<'a, RoundTrip> {
        let errors = if items.is_empty() {
            Vec::new()
        } else {
            vec![not_configured("sync")]
        };
        Box::pin(std::future::ready(RoundTrip {
            replies: vec![None; items.len()],
            errors,
        }))
    }

    fn set_later<'a>(
        &'a self,
        _key: &'a str,
        _until_ms: u64,
        _ttl_ms: u64,
    ) -> BoxFuture<'a, Result<u64, CacheError>> {
        refused("script")
    }

    fn admit<'a>(
        &'a self,
        _token: &'a str,
        _checks: &'a [AdmitCheck<'a>],
    ) -> BoxFuture<'a, Result<AdmitReceipt, CacheError>> {
        refused("admit")
    }

    fn cancel<'a>(&'a self, _cancel: &'a PendingCancel) -> BoxFuture<'a, Result<(), CacheError>> {
        refused("admission cancel")
    }

    fn take_lease<'a>(
        &'a self,
        _key: &'a str,
        _token: &'a str,
        _limit: u64,
        _ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, CacheError>> {
        refused("lease")
    }

    fn renew_lease<'a>(
        &'a self,
        _key: &'a str,
        _token: &'a str,
        _ttl: Duration,
    ) -> BoxFuture<'a, Result<(), CacheError>> {
        refused("lease renewal")
    }

    fn release_lease<'a>(
        &'a self,
        _key: &'a str,
        _token: &'a str,
    ) -> BoxFuture<'a, Result<(), CacheError>> {
        refused("lease release")
    }

    fn release_leases<'a>(&'a self, pending: &'a [(String, String)]) -> BoxFuture<'a, Vec<bool>> {
        Box::pin(std::future::ready(vec![false; pending.len()]))
    }

    fn count_leases<'a>(
        &'a self,
        _keys: &'a [&'a str],
        _now_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<u64>, CacheError>> {
        refused("lease count")
    }
}

/// A script's reply, decoded by the script's own typed decoder (no Redis client type leaks into
/// ferrolite's public API).
#[derive(Debug, Clone, PartialEq)]
pub enum ScriptReply {
    /// Nil.
    Nil,
    /// An integer.
    Int(i64),
    /// A bulk or simple string (a float comes back as text from Lua).
    Text(String),
    /// An array.
    Array(Vec<ScriptReply>),
    /// Anything else, described.
    Other(String),
}

impl ScriptReply {
    /// The integer, or the text parsed as one.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            ScriptReply::Int(i) => Some(*i),
            ScriptReply::Text(t) => t.trim().parse().ok(),
            _ => None,
        }
    }

    /// The number (integer or text), finite.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            ScriptReply::Int(i) => Some(*i as f64),
            ScriptReply::Text(t) => t.trim().parse::<f64>().ok().filter(|v| v.is_finite()),
            _ => None,
        }
    }
}
