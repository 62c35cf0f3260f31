//! `ferrolite serve` as a process: the gateway over the router a config describes, its reload
//! (SIGHUP, or the config file changing on disk) and its stop (SIGTERM or Ctrl-C: calls in
//! flight get `--drain` to finish, the state cache flushes, the process exits 0).
//!
//! With `general_settings.background_health_checks` (or `enable_health_check_routing`) it also
//! checks every deployment every `health_check_interval` (see `health.rs`).
//!
//! A reload reads the file, validates it as startup does, and swaps in the router it describes
//! on the same state cache (counts, cooldowns and spend carry over). It is applied once per
//! change of the file's content: the file is read every second and compared with what was last
//! seen, so a SIGHUP sent after an edit, or an edit that keeps the modification time, never
//! reloads twice or not at all. A config that does not load, or that changes a key only a
//! restart applies ([`RESTART_ONLY_KEYS`]), is refused with its reason in the log, and the last
//! good config keeps serving.

use std::path::Path;
use std::time::Duration;

use ferrolite::Config;

use crate::ServeArgs;

/// Keys that take effect only when the process starts: the state cache (its Redis connection,
/// key prefix, sync interval and failure mode) is built once and carried over by every reload,
/// and the HTTP server's connection settings (`ferrolite_settings.server`) hold for the
/// listener's life.
/// A reload whose config describes another state cache is refused, naming the keys that
/// changed (the same Redis written another way, `redis_host` and `redis_port` for
/// `redis_url`, is no change).
pub const RESTART_ONLY_KEYS: &[&str] = &[
    "router_settings.redis_url",
    "router_settings.redis_host",
    "router_settings.redis_port",
    "router_settings.redis_password",
    "ferrolite_settings.redis_key_prefix",
    "ferrolite_settings.sync_interval_ms",
    "ferrolite_settings.failure_mode",
    "ferrolite_settings.server",
    "ferrolite_settings.otel",
];

/// How often the config file is read to see whether it changed.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// How long a changed file must stay the same before it is loaded (an editor or a copy still
/// writing it is not loaded half-written).
const SETTLE: Duration = Duration::from_millis(150);

/// The config being served: its text's digest (to compare the next one with), the values of its
/// restart-only keys (to name those a refused reload changes) and the state cache it describes.
/// The text itself is not kept: at 10,000 deployments it is 1.4 MB, and was held twice.
struct Applied {
    digest: Digest,
    restart_only: Option<Vec<Option<serde_json::Value>>>,
    cache: StateCache,
}

impl Applied {
    fn new(text: &str, cache: StateCache) -> Self {
        Applied {
            digest: digest(text),
            restart_only: restart_only_values(text),
            cache,
        }
    }
}

/// A config text's SHA-256: two texts are the same config file when their digests are equal.
type Digest = [u8; 32];

fn digest(text: &str) -> Digest {
    use sha2::Digest as _;
    sha2::Sha256::digest(text.as_bytes()).into()
}

/// A config's hash as replicas publish it (`/router/state`'s `config_hash`): the first 8 bytes
/// of its text's SHA-256, in hex.
fn config_hash(digest: &Digest) -> String {
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// What of a config only a restart applies (the state cache, the server's connection settings),
/// comparable (the URL is never shown).
#[derive(PartialEq)]
struct StateCache {
    redis: Option<(String, String)>,
    sync_interval: Duration,
    failure_mode: ferrolite::cache::FailureMode,
    server: ferrolite::server::ServerSettings,
}

impl StateCache {
    fn of(config: &Config) -> Self {
        StateCache {
            redis: config
                .cache
                .redis
                .as_ref()
                .map(|r| (r.url.clone(), r.key_prefix.clone())),
            sync_interval: config.cache.sync_interval,
            failure_mode: config.cache.failure_mode,
            server: config.server.clone(),
        }
    }
}

/// OpenTelemetry traces being exported, on a runtime of their own (one thread: the batch
/// exporter's sends stay off the gateway's threads).
pub(crate) struct Traces {
    pub(crate) otel: ferrolite::otel::Otel,
    runtime: tokio::runtime::Runtime,
}

impl Traces {
    /// Exports what is left and stops.
    pub(crate) fn stop(self) {
        if let Err(e) = self.otel.shutdown() {
            tracing::warn!(error = %e, "could not export the last spans");
        }
        drop(self.runtime);
    }
}

/// The traces the config at `path` and the `OTEL_*` variables ask for (`None` when they name
/// no endpoint, or when the config does not load: `serve` then says why).
pub(crate) fn start_traces(path: &Path) -> Result<Option<Traces>, String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(None);
    };
    let Ok(config) = Config::from_yaml(&text) else {
        return Ok(None);
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("ferrolite-otel")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the trace exporter's runtime: {e}"))?;
    let started = {
        let _entered = runtime.enter();
        ferrolite::otel::Otel::start(&config.otel).map_err(|e| e.to_string())?
    };
    Ok(started.map(|otel| Traces { otel, runtime }))
}

/// `ferrolite serve`: the gateway until SIGTERM or Ctrl-C; then the calls in flight finish,
/// the cache flushes what it holds, and the process exits 0. `traces`: where the request and
/// attempt spans go, when traces are exported ([`start_traces`]).
pub(crate) fn serve_command(
    args: &ServeArgs,
    traces: Option<std::sync::Arc<dyn ferrolite::router::spans::SpanSink>>,
) -> Result<(), String> {
    let drain = crate::seconds("--drain", args.drain)?;
    let text = read(&args.config)?;
    let config = Config::from_yaml(&text)
        .and_then(Config::for_serving)
        .map_err(|e| e.to_string())?;
    let applied = Applied::new(&text, StateCache::of(&config));
    drop(text);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async {
        let metrics = Some(ferrolite::gateway::install_metrics()?);
        let mut settings = gateway_settings(&config, metrics.clone());
        settings.traces = traces;
        let upkeep = metrics_upkeep(metrics.clone());
        let (health, checks) = tokio::sync::watch::channel(config.health_checks.clone());
        let server = config.server.clone();
        let http: std::sync::Arc<dyn ferrolite::router::Backend> =
            std::sync::Arc::new(ferrolite::http::HttpBackend::new().map_err(|e| e.to_string())?);
        let backend: std::sync::Arc<dyn ferrolite::router::Backend> =
            std::sync::Arc::new(crate::health::CheckTimeouts::new(http, checks.clone()));
        let router = ferrolite::build_from_config(config, Some(std::sync::Arc::clone(&backend)))
            .await
            .map_err(|e| e.to_string())?;
        // The signal handlers first: a SIGTERM sent as soon as the port answers stops cleanly.
        let stop_signal = shutdown_signal();
        let address = format!("{}:{}", args.host, args.port);
        let listener = tokio::net::TcpListener::bind(&address)
            .await
            .map_err(|e| format!("cannot listen on {address}: {e}"))?;
        println!(
            "ferrolite gateway on http://{} ({} model groups)",
            listener
                .local_addr()
                .map_or(address.clone(), |a| a.to_string()),
            router.model_groups().len()
        );
        let cache = router.cache().clone();
        // This process as a replica of the cluster: a heartbeat in Redis until it stops.
        let started = cache.clock().now_ms();
        let replicas = std::sync::Arc::new(ferrolite::router::Replicas::new(
            cache.clone(),
            ferrolite::router::ReplicaInfo::this_process(config_hash(&applied.digest), started),
            ferrolite::router::ReplicaSettings::default(),
        ));
        if let Err(e) = replicas.beat().await {
            tracing::warn!(error = %e, "could not register this replica's heartbeat");
        }
        settings.replicas = Some(std::sync::Arc::clone(&replicas));
        let (app, handle) = ferrolite::gateway::app_with_handle(router, settings);
        // Shutdown: the signal stops new connections; calls in flight get `--drain` to finish.
        let (stopping, stopped) = tokio::sync::watch::channel(false);
        let signal = async move {
            stop_signal.await;
            let _ = stopping.send(true);
        };
        let serving = ferrolite::gateway::serve_with(listener, app, server, signal);
        let reloader = Reloader {
            path: &args.config,
            handle: &handle,
            cache: &cache,
            backend: &backend,
            metrics,
            health: &health,
            replicas: &replicas,
        };
        let reloading = reloader.run(applied);
        let checking = crate::health::run(&handle, checks);
        let beating = replicas.run();
        let deadline = async move {
            let mut stopped = stopped;
            while !*stopped.borrow_and_update() {
                if stopped.changed().await.is_err() {
                    return std::future::pending().await;
                }
            }
            tokio::time::sleep_until(tokio::time::Instant::now() + drain).await;
        };
        tokio::select! {
            served = serving => served.map_err(|e| format!("the server failed: {e}"))?,
            _ = futures_util::future::join4(reloading, checking, upkeep, beating) => {}
            () = deadline => tracing::warn!(
                "calls still in flight after the drain of {drain:?}; stopping anyway"
            ),
        }
        if let Err(e) = replicas.leave().await {
            tracing::warn!(error = %e, "could not remove this replica's heartbeat");
        }
        cache
            .shutdown()
            .await
            .map_err(|e| format!("the cache could not flush: {e}"))?;
        println!("ferrolite gateway stopped");
        Ok(())
    })
}

/// How often the metrics recorder's upkeep runs, as the Prometheus exporter's own upkeep task
/// (`PrometheusBuilder::upkeep_timeout`'s default).
const METRICS_UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Runs the metrics recorder's upkeep every [`METRICS_UPKEEP_INTERVAL`]: it drains the samples
/// histograms collect into their summaries. Without it they are drained only by a scrape of
/// `/metrics`, and a gateway nothing scrapes grows by every call's samples. Never completes.
async fn metrics_upkeep(recorder: Option<ferrolite::gateway::PrometheusHandle>) {
    let Some(recorder) = recorder else {
        return std::future::pending().await;
    };
    let mut ticks = tokio::time::interval(METRICS_UPKEEP_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        recorder.run_upkeep();
    }
}

/// The config file's text.
fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// The gateway's settings from a config.
fn gateway_settings(
    config: &Config,
    metrics: Option<ferrolite::gateway::PrometheusHandle>,
) -> ferrolite::gateway::GatewaySettings {
    ferrolite::gateway::GatewaySettings {
        master_key: config.master_key.clone(),
        api_keys: config.api_keys.clone(),
        hidden_models: config.hidden_aliases.clone(),
        metrics,
        litellm_metrics: config.settings.litellm_metrics,
        require_auth_for_metrics: config.require_auth_for_metrics,
        ..Default::default()
    }
}

/// The sections of a config the restart-only keys are in; the rest (`model_list`, 10,000
/// entries in a large config) is skipped by the parser, not built into a tree.
#[derive(serde::Deserialize)]
struct RestartOnlySections {
    #[serde(default)]
    router_settings: serde_json::Value,
    #[serde(default)]
    ferrolite_settings: serde_json::Value,
}

/// The values of the restart-only keys ([`RESTART_ONLY_KEYS`], in order) in a config's YAML,
/// parsed (so quoting and anchors do not count); `None` when the text does not parse.
fn restart_only_values(text: &str) -> Option<Vec<Option<serde_json::Value>>> {
    let sections = serde_saphyr::from_str::<RestartOnlySections>(text).ok()?;
    let parsed = serde_json::json!({
        "router_settings": sections.router_settings,
        "ferrolite_settings": sections.ferrolite_settings,
    });
    Some(
        RESTART_ONLY_KEYS
            .iter()
            .map(|key| {
                let pointer = format!("/{}", key.replace('.', "/"));
                parsed.pointer(&pointer).cloned()
            })
            .collect(),
    )
}

/// The restart-only keys whose values differ between the served config (`old`, its
/// [`restart_only_values`]) and the YAML `new` (never printed): what a refusal names once the
/// state cache the new config describes differs.
fn restart_only_changes(old: Option<&[Option<serde_json::Value>]>, new: &str) -> Vec<&'static str> {
    let (Some(old), Some(new)) = (old, restart_only_values(new)) else {
        return Vec::new();
    };
    RESTART_ONLY_KEYS
        .iter()
        .zip(old.iter().zip(&new))
        .filter(|(_, (old, new))| old != new)
        .map(|(key, _)| *key)
        .collect()
}

/// Why a reload runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    Hangup,
    FileChanged,
}

/// What a reload needs from the running gateway.
struct Reloader<'a> {
    path: &'a Path,
    handle: &'a ferrolite::gateway::GatewayHandle,
    cache: &'a ferrolite::cache::DualCache,
    backend: &'a std::sync::Arc<dyn ferrolite::router::Backend>,
    metrics: Option<ferrolite::gateway::PrometheusHandle>,
    health: &'a tokio::sync::watch::Sender<ferrolite::HealthChecks>,
    replicas: &'a ferrolite::router::Replicas,
}

impl Reloader<'_> {
    /// Reloads on SIGHUP and when the file's content changes (see the module documentation).
    /// Never completes.
    async fn run(self, mut applied: Applied) {
        // The text the watcher last saw (its digest): a change is a text different from it.
        let mut seen = applied.digest;
        let mut ticks = tokio::time::interval(WATCH_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        #[cfg(unix)]
        let mut hangups =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            #[cfg(unix)]
            let hangup = async {
                match hangups.as_mut() {
                    Some(signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let hangup = std::future::pending::<()>();
            let cause = tokio::select! {
                () = hangup => Cause::Hangup,
                _ = ticks.tick() => Cause::FileChanged,
            };
            let text = match read(self.path) {
                Ok(text) => text,
                Err(e) => {
                    if cause == Cause::Hangup {
                        tracing::warn!("reload refused, the current config keeps serving: {e}");
                    }
                    continue;
                }
            };
            let text = match cause {
                Cause::FileChanged if digest(&text) == seen => continue,
                Cause::FileChanged => self.settled(text).await,
                Cause::Hangup => text,
            };
            seen = digest(&text);
            if seen == applied.digest {
                if cause == Cause::Hangup {
                    tracing::info!(
                        path = %self.path.display(),
                        "SIGHUP: the config is the one being served; nothing to reload"
                    );
                }
                continue;
            }
            match self.reload(&text, &applied).await {
                Ok(cache) => applied = Applied::new(&text, cache),
                Err(e) => {
                    tracing::warn!("reload refused, the current config keeps serving: {e}");
                }
            }
        }
    }

    /// The file's text once it has stayed the same for [`SETTLE`].
    // The process' own file watcher waits in real time, as the watch interval does.
    #[allow(clippy::disallowed_methods)]
    async fn settled(&self, mut text: String) -> String {
        for _ in 0..20 {
            tokio::time::sleep(SETTLE).await;
            match read(self.path) {
                Ok(now) if now == text => break,
                Ok(now) => text = now,
                Err(_) => {}
            }
        }
        text
    }

    /// Loads `text`, checks it changes no restart-only key, builds its router on the running
    /// state cache and swaps it in; the state cache it describes.
    async fn reload(&self, text: &str, applied: &Applied) -> Result<StateCache, String> {
        let config = Config::from_yaml(text)
            .and_then(Config::for_serving)
            .map_err(|e| e.to_string())?;
        let cache = StateCache::of(&config);
        if cache != applied.cache {
            // The keys that say it; the same Redis written another way is no change.
            let mut changed = restart_only_changes(applied.restart_only.as_deref(), text);
            if changed.is_empty() {
                changed.push("the state cache's Redis settings");
            }
            return Err(format!(
                "{} changed, and only a restart applies {}",
                changed.join(", "),
                if changed.len() == 1 { "it" } else { "them" }
            ));
        }
        let settings = gateway_settings(&config, self.metrics.clone());
        let checks = config.health_checks.clone();
        let state = self.cache.clone();
        let router = ferrolite::build_from_config_with(
            config,
            Some(std::sync::Arc::clone(self.backend)),
            |builder| builder.cache(state),
        )
        .await
        .map_err(|e| e.to_string())?;
        tracing::info!(
            path = %self.path.display(),
            model_groups = router.model_groups().len(),
            "ferrolite gateway reloaded"
        );
        self.handle.reload_with(router, settings);
        self.replicas.set_config_hash(config_hash(&digest(text)));
        self.health.send_if_modified(|current| {
            let changed = *current != checks;
            *current = checks;
            changed
        });
        Ok(cache)
    }
}

/// Completes on SIGTERM or Ctrl-C. The handlers are installed when it is called, not when it is
/// first polled: a signal sent once the gateway listens stops it cleanly (not by the signal's
/// default action) however soon it comes.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let (mut terminate, mut interrupt) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let terminate = async {
                match terminate.as_mut() {
                    Some(signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let interrupt = async {
                match interrupt.as_mut() {
                    Some(signal) => {
                        signal.recv().await;
                    }
                    None => {
                        let _ = tokio::signal::ctrl_c().await;
                    }
                }
            };
            tokio::select! {
                () = terminate => {}
                () = interrupt => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_restart_only_key_is_in_a_section_the_served_config_keeps() {
        for key in RESTART_ONLY_KEYS {
            let section = key.split('.').next().unwrap_or_default();
            assert!(
                ["router_settings", "ferrolite_settings"].contains(&section),
                "{key}: add its section to RestartOnlySections"
            );
        }
    }

    #[test]
    fn a_refusal_names_the_restart_only_keys_that_changed_and_only_those() {
        let old = "model_list:\n  - model_name: a\n    litellm_params: {model: openai/x}\n\
                   router_settings:\n  redis_host: &h localhost\n  redis_port: 6379\n\
                   ferrolite_settings:\n  failure_mode: fail_open\n";
        let applied = restart_only_values(old).unwrap();
        // Quoting and anchors are no change; the port and the failure mode are.
        let new = "router_settings:\n  redis_host: \"localhost\"\n  redis_port: 6380\n\
                   ferrolite_settings:\n  failure_mode: fail_closed\n\
                   model_list:\n  - model_name: b\n    litellm_params: {model: openai/y}\n";
        assert_eq!(
            restart_only_changes(Some(&applied), new),
            vec![
                "router_settings.redis_port",
                "ferrolite_settings.failure_mode"
            ]
        );
        assert!(restart_only_changes(Some(&applied), old).is_empty());
        assert!(restart_only_changes(Some(&applied), "model_list: [").is_empty());
        assert!(restart_only_changes(None, new).is_empty());
    }
}
