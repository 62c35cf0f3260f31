//! `ferrolite check --config FILE`: a config validated as `ferrolite serve` would start it, and
//! what it describes, in the order a reader checks it — the state and caches, each group with
//! its deployments and fallbacks, the budgets, the deployments that cannot be called, and the
//! keys accepted without effect.

use std::fmt::Write as _;
use std::path::Path;

use ferrolite::Config;
use ferrolite::types::Deployment;

/// `ferrolite check`: the groups, their deployments, strategy, limits, fallbacks and budgets,
/// and the keys accepted without effect; an invalid config is the error with its path.
pub fn check_command(path: &Path) -> Result<String, String> {
    let config = Config::from_path(path).map_err(|e| e.to_string())?;
    build_in_memory(&config)?;
    let mut out = String::new();
    write_summary(&mut out, &config);
    write_groups(&mut out, &config);
    write_budgets(&mut out, &config);
    write_not_callable(&mut out, &config);
    write_not_honoured(&mut out, &config);
    Ok(out)
}

/// Builds the router (in memory, mocked) so cross-key checks run as they would at start.
fn build_in_memory(config: &Config) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut probe = config.clone();
    probe.cache.redis = None;
    probe.response_cache_redis = None;
    runtime
        .block_on(async {
            let mock = ferrolite::mock::MockBackend::new(ferrolite::mock::MockSpec::default());
            ferrolite::build_from_config(probe, Some(std::sync::Arc::new(mock)))
                .await
                .map(drop)
        })
        .map_err(|e| e.to_string())
}

/// The first lines: deployments and strategy, where the state is kept, the health checks and
/// the response cache.
fn write_summary(out: &mut String, config: &Config) {
    let s = &config.settings;
    let _ = writeln!(
        out,
        "config OK: {} deployments, routing_strategy {}, num_retries {}, admission {:?}",
        config.deployments.len(),
        s.routing_strategy,
        s.num_retries,
        s.admission
    );
    let _ = writeln!(
        out,
        "state: {}",
        config.cache.redis.as_ref().map_or_else(
            || "in memory (this process only)".to_string(),
            |r| format!("Redis {}", ferrolite::cache::redacted_url(&r.url))
        )
    );
    let checks = &config.health_checks;
    if checks.background || s.enable_health_check_routing {
        let _ = writeln!(
            out,
            "health checks: {}; routing on their results: {}",
            if checks.background {
                format!(
                    "every {} s under `ferrolite serve`",
                    checks.interval.as_secs_f64()
                )
            } else {
                "not run by this instance (background_health_checks: false)".to_string()
            },
            if s.enable_health_check_routing {
                "on"
            } else {
                "off"
            }
        );
    }
    write_response_cache(out, config);
}

/// The response cache's line, when it is on: TTL, memory, where it is shared, caching groups.
fn write_response_cache(out: &mut String, config: &Config) {
    let Some(cache) = &config.settings.response_cache else {
        return;
    };
    let groups: Vec<String> = cache
        .caching_groups
        .iter()
        .map(|g| format!("[{}]", g.join(", ")))
        .collect();
    let _ = writeln!(
        out,
        "response cache: on, TTL {} s, memory {:.1} MiB{}{}",
        cache.ttl.as_secs_f64(),
        cache.memory_bytes as f64 / (1 << 20) as f64,
        match (&config.response_cache_redis, &config.cache.redis) {
            _ if !cache.redis => ", this process only".to_string(),
            (Some(own), _) => format!(
                ", shared through its own Redis {}",
                ferrolite::cache::redacted_url(&own.url)
            ),
            (None, Some(_)) => ", shared through Redis".to_string(),
            (None, None) => ", this process only".to_string(),
        },
        if groups.is_empty() {
            String::new()
        } else {
            format!(", caching groups {}", groups.join(" "))
        }
    );
}

/// Each model group, by name: its deployments, then its fallbacks.
fn write_groups(out: &mut String, config: &Config) {
    let s = &config.settings;
    let mut groups: Vec<&str> = config
        .deployments
        .iter()
        .map(|d| d.model_name.as_str())
        .collect();
    groups.sort_unstable();
    groups.dedup();
    for group in groups {
        let _ = writeln!(out, "\n{group}");
        for d in config.deployments.iter().filter(|d| d.model_name == group) {
            write_deployment(out, config, d);
        }
        if let Some(chain) = s.fallbacks.get(group) {
            let _ = writeln!(out, "  fallbacks -> {}", chain.join(" -> "));
        } else if !s.default_fallbacks.is_empty() {
            let _ = writeln!(
                out,
                "  fallbacks -> {} (default)",
                s.default_fallbacks.join(" -> ")
            );
        }
        if let Some(chain) = s.context_window_fallbacks.get(group) {
            let _ = writeln!(out, "  context_window_fallbacks -> {}", chain.join(" -> "));
        }
    }
}

/// One deployment's line: id, model, whether it is mocked, cannot be called or the protocol
/// its calls are sent in, its limits.
fn write_deployment(out: &mut String, config: &Config, d: &Deployment) {
    let mut limits = Vec::new();
    if let Some(rpm) = d.rpm {
        limits.push(format!("rpm {rpm}"));
    }
    if let Some(tpm) = d.tpm {
        limits.push(format!("tpm {tpm}"));
    }
    if let Some(max) = d.max_parallel_requests {
        limits.push(format!("max_parallel {max}"));
    }
    if let Some(order) = d.order {
        limits.push(format!("order {order}"));
    }
    if !d.tags.is_empty() {
        limits.push(format!("tags {}", d.tags.join(",")));
    }
    let id = d.id();
    let mocked = if config.mocks.contains_key(id.as_str()) {
        " (mock)".to_string()
    } else if let Some(n) = config
        .not_callable
        .iter()
        .find(|n| n.deployment == id.as_str())
    {
        format!(" (not callable: {})", n.reason)
    } else {
        // The protocol its calls go out in.
        let protocol = d
            .provider()
            .map(|p| ferrolite::types::Protocol::of_provider(p.as_str()))
            .unwrap_or_default();
        format!(" ({protocol})")
    };
    let _ = writeln!(
        out,
        "  {:<24} {}{mocked}  {}",
        d.id().to_string(),
        d.model,
        limits.join(", ")
    );
}

/// The provider and tag budgets, when there are any.
fn write_budgets(out: &mut String, config: &Config) {
    let budgets = &config.settings.budgets;
    if budgets.providers.is_empty() && budgets.tags.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nbudgets:");
    for (name, budget) in budgets.providers.iter().chain(&budgets.tags) {
        let _ = writeln!(
            out,
            "  {name}: ${} per {}",
            budget.max_budget.unwrap_or(0.0),
            budget.budget_duration.as_deref().unwrap_or("?")
        );
    }
}

/// The deployments ferrolite cannot call yet, and what `ferrolite serve` does about them.
fn write_not_callable(out: &mut String, config: &Config) {
    if config.not_callable.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\ndeployments ferrolite cannot call yet ({}):",
        if config.skip_unsupported_deployments {
            "`ferrolite serve` leaves them out of routing: skip_unsupported_deployments"
        } else {
            "`ferrolite serve` refuses to start unless \
             ferrolite_settings.skip_unsupported_deployments: true"
        }
    );
    for n in &config.not_callable {
        let _ = writeln!(out, "  {n}");
    }
}

/// The keys accepted without effect, or that every key is honoured.
fn write_not_honoured(out: &mut String, config: &Config) {
    let notes = config.not_honoured();
    if notes.is_empty() {
        let _ = writeln!(out, "\nevery key is honoured");
    } else {
        let _ = writeln!(out, "\nkeys accepted without effect:");
        for note in notes {
            let _ = writeln!(out, "  {note}");
        }
    }
}
