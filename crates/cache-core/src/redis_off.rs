//! Built without the `redis` feature: there is no Redis tier. The cache runs in this process,
//! and a configured Redis is refused when the cache is built, naming the feature. This stand-in
//! has the Redis tier's shape so the rest of the cache compiles unchanged; it can never be
//! constructed, so none of its methods can run.

use std::convert::Infallible;
use std::time::Duration;

use crate::config::RedisConfig;
use crate::pipeline::{SyncReport, SyncState};
use crate::script::{Health, LuaScript};
use crate::{CacheError, ScriptReply};

/// The Redis tier that is not built (see the module documentation).
#[derive(Debug)]
pub(crate) struct RedisStore {
    never: Infallible,
    pub(crate) incr: LuaScript,
    pub(crate) admit: LuaScript,
    pub(crate) admit_cancel: LuaScript,
    pub(crate) set_later: LuaScript,
    pub(crate) lease: LuaScript,
    pub(crate) health: Health,
}

#[allow(clippy::unused_async)]
impl RedisStore {
    /// Refuses: Redis support is not built.
    pub(crate) fn new(config: &RedisConfig, _fail_open: bool) -> Result<Self, CacheError> {
        Err(CacheError::InvalidConfig {
            field: "redis",
            value: crate::script::redact_url(&config.url),
            reason: "this build has no Redis support: enable ferrolite-cache's `redis` feature",
        })
    }

    pub(crate) async fn connect(&self, _wait: Duration) -> bool {
        match self.never {}
    }

    pub(crate) async fn check_health(&self) {
        match self.never {}
    }

    pub(crate) async fn quit(&self) {
        match self.never {}
    }

    pub(crate) fn is_closed(&self) -> bool {
        match self.never {}
    }

    pub(crate) fn key(&self, _key: &str) -> String {
        match self.never {}
    }

    pub(crate) fn tag_of(full_key: &str) -> String {
        full_key.to_string()
    }

    pub(crate) async fn get(&self, _key: &str) -> Result<Option<String>, CacheError> {
        match self.never {}
    }

    pub(crate) async fn remove_member(&self, _key: &str, _member: &str) -> Result<(), CacheError> {
        match self.never {}
    }

    pub(crate) async fn set(
        &self,
        _key: &str,
        _value: &str,
        _ttl: Duration,
    ) -> Result<(), CacheError> {
        match self.never {}
    }

    pub(crate) async fn set_if_absent(
        &self,
        _key: &str,
        _value: &str,
        _ttl: Duration,
    ) -> Result<String, CacheError> {
        match self.never {}
    }

    pub(crate) async fn mget(&self, _keys: &[&str]) -> Result<Vec<Option<String>>, CacheError> {
        match self.never {}
    }

    pub(crate) async fn eval(
        &self,
        _script: &LuaScript,
        _keys: Vec<String>,
        _args: Vec<String>,
    ) -> Result<ScriptReply, CacheError> {
        match self.never {}
    }

    pub(crate) async fn remove_members(&self, _pending: &[(String, String)]) -> Vec<bool> {
        match self.never {}
    }

    pub(crate) async fn load(&self, _script: &LuaScript) -> Result<(), CacheError> {
        match self.never {}
    }

    /// The sync task's flush (the pipeline's, with Redis).
    pub(crate) async fn flush(
        &self,
        _sync: &SyncState,
        _cells: &[std::sync::Arc<crate::counter::CounterCell>],
        _watched: &[std::sync::Arc<crate::watched::WatchedCell>],
        _now_ms: u64,
        _report: &mut SyncReport,
    ) {
        match self.never {}
    }
}
