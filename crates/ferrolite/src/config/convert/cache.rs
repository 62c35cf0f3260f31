//! The caches: the state cache (Redis from `router_settings`, or the response cache's when the
//! router names none, as LiteLLM's proxy does) and the response cache's settings.

use std::time::Duration;

use ferrolite_cache::{CacheConfig, FailureMode, RedisConfig};
use ferrolite_router::ResponseCacheSettings;

use crate::config::ConfigError;
use crate::config::raw::{
    FailureModeDe, RawFerroliteSettings, RawLitellmSettings, RawRouterSettings,
};

/// The state cache (Redis from `redis_url`, or `redis_host` + `redis_port` (+ password)), and
/// the response cache's own Redis when `cache_params` names one that is not the state cache's.
pub(super) fn cache_of(
    rs: &RawRouterSettings,
    ls: &RawLitellmSettings,
    fs: &RawFerroliteSettings,
) -> Result<(CacheConfig, Option<RedisConfig>), ConfigError> {
    let mut cache = CacheConfig::default();
    let url = match (&rs.redis_url, &rs.redis_host, rs.redis_port) {
        (Some(url), _, _) => Some(url.0.expose().to_string()),
        (None, Some(host), Some(port)) => {
            // LiteLLM's (deprecated) `redis_db` selects the database.
            let db = rs.redis_db.map_or_else(String::new, |db| format!("/{db}"));
            Some(match &rs.redis_password {
                Some(password) => format!(
                    "redis://:{}@{}:{port}{db}",
                    percent_encode(password.0.expose()),
                    host.0
                ),
                None => format!("redis://{}:{port}{db}", host.0),
            })
        }
        (None, Some(_), None) => {
            return Err(ConfigError::at(
                "router_settings.redis_port",
                "required with redis_host",
            ));
        }
        (None, None, Some(_)) => {
            return Err(ConfigError::at(
                "router_settings.redis_host",
                "required with redis_port",
            ));
        }
        (None, None, None) => None,
    };
    let with_prefix = |url: String| {
        let redis = RedisConfig::new(url);
        match &fs.redis_key_prefix {
            Some(prefix) => redis.with_prefix(prefix.clone()),
            None => redis,
        }
    };
    // The proxy's `_update_redis_cache`: a router without Redis of its own keeps its state in
    // the response cache's Redis (`litellm_settings.cache_params`); a router with its own
    // keeps the answers in the Redis `cache_params` names, when that is another.
    let answers_url = cache_params_redis(rs, ls)?;
    // An invalid URL is reported at the key it was written under (`redis_host` when built
    // from host and port).
    let router_path = if rs.redis_url.is_some() {
        "router_settings.redis_url"
    } else {
        "router_settings.redis_host"
    };
    let answers_path = match ls.cache_params.as_ref() {
        Some(params) if params.redis_url.is_none() && params.host.is_some() => {
            "litellm_settings.cache_params.host"
        }
        _ => "litellm_settings.cache_params.redis_url",
    };
    let (url, url_path, answers) = match (url, answers_url) {
        (Some(url), Some(answers)) if answers != url => {
            let answers = with_prefix(answers);
            answers
                .check_url()
                .map_err(|e| ConfigError::at(answers_path, e.to_string()))?;
            (Some(url), router_path, Some(answers))
        }
        (Some(url), _) => (Some(url), router_path, None),
        (None, answers) => (answers, answers_path, None),
    };
    cache.redis = url.map(with_prefix);
    if let Some(ms) = fs.sync_interval_ms {
        if ms == 0 {
            return Err(ConfigError::at(
                "ferrolite_settings.sync_interval_ms",
                "expected a positive number of milliseconds, got 0",
            ));
        }
        cache.sync_interval = Duration::from_millis(ms);
    }
    if let Some(mode) = fs.failure_mode {
        cache.failure_mode = match mode {
            FailureModeDe::FailOpen => FailureMode::FailOpen,
            FailureModeDe::FailClosed => FailureMode::FailClosed,
        };
    }
    cache
        .validate()
        .map_err(|e| ConfigError::at(url_path, e.to_string()))?;
    Ok((cache, answers))
}

/// The Redis `litellm_settings.cache_params` names (`redis_url`, or `host` + `port` +
/// `password`), when the response cache is on and of type `redis` (the proxy's default).
/// An explicit `type: redis` with no Redis anywhere is an error: the cache is never silently
/// kept in memory only.
fn cache_params_redis(
    rs: &RawRouterSettings,
    ls: &RawLitellmSettings,
) -> Result<Option<String>, ConfigError> {
    let on = rs.cache_responses == Some(true) || ls.cache == Some(true);
    let Some(params) = ls.cache_params.as_ref().filter(|_| on) else {
        return Ok(None);
    };
    if !matches!(params.kind.as_deref(), None | Some("redis")) {
        return Ok(None);
    }
    let url = match (&params.redis_url, &params.host) {
        (Some(url), _) => Some(url.0.expose().to_string()),
        (None, Some(host)) => {
            let port = params.port.unwrap_or(6379);
            Some(match &params.password {
                Some(password) => format!(
                    "redis://:{}@{host}:{port}",
                    percent_encode(password.0.expose())
                ),
                None => format!("redis://{host}:{port}"),
            })
        }
        (None, None) => {
            if params.port.is_some() || params.password.is_some() {
                return Err(ConfigError::at(
                    "litellm_settings.cache_params.host",
                    "required with port or password (or give redis_url)",
                ));
            }
            None
        }
    };
    if url.is_none() && params.kind.as_deref() == Some("redis") {
        return Err(ConfigError::at(
            "litellm_settings.cache_params.type",
            "`redis` needs a Redis: give cache_params host and port (or redis_url), or \
             router_settings.redis_url; `type: local` keeps answers in this process",
        ));
    }
    Ok(url)
}

/// `value` percent-encoded for a URL's user information (everything but unreserved
/// characters), so a password with `/`, `@` or `:` stays one password.
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `router_settings.cache_responses` (the Router's) or `litellm_settings.cache` (the proxy's)
/// turns the response cache on; `caching_groups`, `litellm_settings.cache_params` (`type`,
/// `ttl`, `namespace`) and `ferrolite_settings.response_cache` shape it.
pub(super) fn response_cache_of(
    rs: &RawRouterSettings,
    ls: &RawLitellmSettings,
    fs: &RawFerroliteSettings,
) -> Result<Option<ResponseCacheSettings>, ConfigError> {
    if rs.cache_responses != Some(true) && ls.cache != Some(true) {
        return Ok(None);
    }
    let mut cache = ResponseCacheSettings {
        caching_groups: rs.caching_groups.clone(),
        ..ResponseCacheSettings::default()
    };
    if let Some(params) = &ls.cache_params {
        match params.kind.as_deref() {
            None | Some("redis") => {}
            Some("local") => cache.redis = false,
            Some(other) => {
                return Err(ConfigError::at(
                    "litellm_settings.cache_params.type",
                    format!(
                        "expected `local` or `redis` (ferrolite's response cache tiers), got `{other}`"
                    ),
                ));
            }
        }
        if let Some(ttl) = params.ttl {
            if ttl.0 < 0.001 {
                return Err(ConfigError::at(
                    "litellm_settings.cache_params.ttl",
                    format!("expected at least 0.001 seconds, got {}", ttl.0),
                ));
            }
            cache.ttl = ttl.duration();
        }
        cache.namespace = params.namespace.clone();
        cache.opt_in = match params.mode.as_deref() {
            None | Some("default_on") => false,
            Some("default_off") => true,
            Some(other) => {
                return Err(ConfigError::at(
                    "litellm_settings.cache_params.mode",
                    format!("expected `default_on` or `default_off`, got `{other}`"),
                ));
            }
        };
    }
    for (i, group) in rs.caching_groups.iter().enumerate() {
        if group.is_empty() {
            return Err(ConfigError::at(
                format!("router_settings.caching_groups[{i}]"),
                "expected a list of model groups, got []",
            ));
        }
    }
    let Some(raw) = &fs.response_cache else {
        return Ok(Some(cache));
    };
    if let Some(ttl) = raw.ttl {
        if ttl.0 < 0.001 {
            return Err(ConfigError::at(
                "ferrolite_settings.response_cache.ttl",
                format!("expected at least 0.001 seconds, got {}", ttl.0),
            ));
        }
        cache.ttl = ttl.duration();
    }
    if let Some(redis) = raw.redis {
        cache.redis = redis;
    }
    if let Some(bytes) = raw.memory_bytes {
        if bytes == 0 && !cache.redis {
            return Err(ConfigError::at(
                "ferrolite_settings.response_cache.memory_bytes",
                "expected a number of bytes > 0 with redis: false (0 keeps answers in Redis only), got 0",
            ));
        }
        cache.memory_bytes = bytes;
    }
    cache.ignore_fields = raw.ignore_fields.clone();
    Ok(Some(cache))
}
