//! A tour of ferrolite-cache: counters, a watched cooldown, values and strict admission.
//!
//! Runs in memory by default; set `REDIS_URL` (e.g. `redis://127.0.0.1:6379`) to share the
//! state through Redis, and run it twice at once to watch two instances split one limit.
//!
//! `cargo run -p ferrolite-cache --example cache_demo`
#![allow(clippy::disallowed_methods)]

use std::time::Duration;

use ferrolite_cache::{CacheConfig, CounterOptions, DualCache, LimitCheck, RedisConfig, Window};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let config = match std::env::var("REDIS_URL") {
        Ok(url) => CacheConfig {
            redis: Some(RedisConfig::new(url).with_prefix("ferrolite-demo:")),
            ..CacheConfig::default()
        },
        Err(_) => CacheConfig::default(),
    };
    let cache = DualCache::connect(config).await?;
    println!(
        "cache instance {} ({})",
        cache.shared().instance_id(),
        if cache.shared().is_configured() {
            "shared through Redis"
        } else {
            "in memory"
        }
    );

    // A usage counter: increments are local and instant; the sync task pushes them.
    let tokens = cache
        .counters()
        .counter("demo:d1:tpm", CounterOptions::ttl(Duration::from_secs(60)))?;
    for prompt_tokens in [120, 80, 300] {
        tokens.increment(prompt_tokens)?;
    }
    println!("tokens used this minute (local view): {}", tokens.value());

    // A watched deadline, such as a cooldown: every request reads it from memory; setting it
    // again only ever extends it, and other instances see it within one sync interval.
    let cooldown = cache.deadlines().deadline("demo:{d1}:cooldown")?;
    let now = cache.clock().now_ms();
    cooldown.extend_to(now + 5_000).await?;
    cooldown.extend_to(now + 1_000).await?; // shorter: ignored
    println!(
        "d1 cooled down: {} (for {} ms more)",
        cooldown.is_active(now),
        cooldown.until_ms().unwrap_or(now) - now
    );

    // A plain value with a TTL.
    cache
        .kv()
        .set(
            "demo:d1:last_error",
            r#"{"status":429}"#,
            Duration::from_secs(5),
        )
        .await?;
    println!(
        "last error: {:?}",
        cache.kv().get("demo:d1:last_error").await?
    );

    // Strict admission: rpm = 3 over a sliding minute; five requests, exactly three admitted.
    let rpm = LimitCheck {
        key: "demo:{d1}:rpm".into(),
        delta: 1,
        limit: 3,
        window: Window::MINUTE_SLIDING,
    };
    for request in 1..=5 {
        let admission = cache.admission().admit(std::slice::from_ref(&rpm)).await?;
        println!(
            "request {request}: {} (count in window {:.0}, decided {:?})",
            if admission.admitted {
                "admitted"
            } else {
                "rejected"
            },
            admission.counts[0],
            admission.source
        );
    }

    cache.shutdown().await?;
    Ok(())
}
