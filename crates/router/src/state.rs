//! The cluster's routing state as one value ([`RouterState`], `Router::state`): per model group
//! and deployment its cooldown (with its cause), health checks, half-open probe, rpm / tpm in
//! the current window, concurrency leases, latency, errors, budget and recent history, plus the
//! live replicas. What every replica shares (cooldowns, windows, leases, failure counts, spend)
//! is the cluster's view; latency, time to first token and history are this replica's.
//!
//! Built cheaply: the shared counts and deadlines are read from memory (the cache's sync keeps
//! them), and what is only in Redis is read in one round trip per kind, for every deployment at
//! once: the concurrency leases (one pipeline), the causes of the cooldowns in force (one
//! `MGET`), the replicas (one script call), the budgets (when configured).
//!
//! The field names are a stable API (documented in docs/operations.md): fields are added,
//! never renamed.

use std::collections::HashMap;
use std::sync::Arc;

use ferrolite_cache::hash_tagged;
use ferrolite_types::{DeploymentId, ErrorClass};
use serde::{Deserialize, Serialize};

use crate::inner::Inner;
use crate::recent::{History, Percentiles};
use crate::replicas::Replicas;
use crate::snapshot::{PROBATION, Snapshot};

/// The cluster's routing state, as `GET /router/state` answers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouterState {
    /// When it was read (Unix ms).
    pub generated_at_ms: u64,
    /// The answering replica's id.
    pub replica: String,
    /// Whether the state is shared through Redis (`false`: this process only).
    pub shared: bool,
    /// The live replicas, the answering one first.
    pub replicas: Vec<ReplicaState>,
    /// The model groups, by name.
    pub groups: Vec<GroupState>,
}

/// One live replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaState {
    /// Its id.
    pub id: String,
    /// The ferrolite version it runs.
    pub version: String,
    /// The digest of the config it serves.
    pub config_hash: String,
    /// When it started (Unix ms).
    pub started_at_ms: u64,
    /// Its last heartbeat (Unix ms).
    pub last_seen_ms: u64,
    /// Requests it served per second, between its last two heartbeats.
    pub requests_per_second: f64,
    /// Whether its config hash is the answering replica's.
    pub same_config: bool,
}

/// One model group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupState {
    /// The group's name.
    pub model_group: String,
    /// Its deployments, in configuration order.
    pub deployments: Vec<DeploymentState>,
}

/// Whether a deployment is routed to now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// Routed to.
    Healthy,
    /// Cooled down: not routed to until its cooldown ends.
    Cooldown,
    /// Its last health check failed (health-check routing): not routed to.
    Unhealthy,
    /// Half-open after a cooldown: one call at a time until one succeeds.
    Probing,
}

/// A cooldown in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CooldownState {
    /// When it ends (Unix ms).
    pub until_ms: u64,
    /// The class of the failure that caused it (`rate_limited`, `timeout`, `server_error`...);
    /// `null` when the cause is not known (it was set by an older version).
    pub class: Option<String>,
    /// That failure's HTTP status, if it had one.
    pub status: Option<u16>,
    /// The start of the provider's message (at most 200 characters, anything that looks like
    /// a key replaced by `***`).
    pub message: Option<String>,
}

/// A deployment's health checks (health-check routing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthState {
    /// Whether health checks steer routing (`enable_health_check_routing`).
    pub checked: bool,
    /// `false` while its latest check failed and is not stale.
    pub healthy: bool,
    /// When its last check passed (Unix ms).
    pub last_pass_ms: Option<u64>,
    /// When its last check failed (Unix ms).
    pub last_fail_ms: Option<u64>,
}

/// A half-open deployment's probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeState {
    /// Whether a probe call is running (on any replica).
    pub in_flight: bool,
    /// When the deployment became half-open (its cooldown ended; Unix ms).
    pub since_ms: u64,
    /// When it closes by itself if no call succeeds before (Unix ms).
    pub closes_at_ms: u64,
}

/// A count in the current window and its limit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Used {
    /// Counted in the current window by every replica.
    pub used: u64,
    /// The limit; `null` when none.
    pub limit: Option<u64>,
}

/// Concurrency leases.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Leases {
    /// Calls holding a slot now, on every replica.
    pub held: u64,
    /// `max_parallel_requests`; `null` when none.
    pub max: Option<u64>,
}

/// Failures and successes in the current minute.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Errors {
    /// Failed calls.
    pub fails: u64,
    /// Successful calls.
    pub successes: u64,
    /// `fails / (fails + successes)`; 0 without calls.
    pub rate: f64,
}

/// A deployment's budget.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BudgetState {
    /// Spend in the current window (USD, reservations included).
    pub spend: f64,
    /// The budget (USD).
    pub limit: f64,
    /// When the window resets (Unix ms), if one has started.
    pub resets_at_ms: Option<u64>,
}

/// One deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentState {
    /// Its id.
    pub id: String,
    /// `litellm_params.model` (`provider/model`).
    pub model: String,
    /// Its provider.
    pub provider: String,
    /// Its `api_base`, without credentials or query string; `null` when none.
    pub api_base: Option<String>,
    /// Whether it is routed to now.
    pub state: Condition,
    /// The cooldown in force; `null` when none.
    pub cooldown: Option<CooldownState>,
    /// Its health checks.
    pub health: HealthState,
    /// Its half-open probe; `null` when it is not half-open.
    pub probe: Option<ProbeState>,
    /// Requests in the current window.
    pub rpm: Used,
    /// Tokens in the current window.
    pub tpm: Used,
    /// When the current window's bucket ends (Unix ms): a fixed window resets then; a
    /// sliding one has let go of a bucket's worth of its count.
    pub window_resets_at_ms: u64,
    /// Concurrency leases.
    pub leases: Leases,
    /// Latency of its recent successful calls on this replica.
    pub latency_ms: Percentiles,
    /// Time to first token of its recent streamed calls on this replica.
    pub ttft_ms: Percentiles,
    /// Failures and successes in the current minute, on every replica.
    pub errors: Errors,
    /// Its budget (`max_budget`); `null` when none.
    pub budget: Option<BudgetState>,
    /// The last 15 minutes on this replica, in 10-second buckets; `null` when not asked for.
    pub history: Option<History>,
}

/// What [`crate::Router::state_with`] includes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateOptions {
    /// Each deployment's history (90 buckets of 3 series: most of the answer's size).
    pub history: bool,
}

impl Default for StateOptions {
    fn default() -> Self {
        StateOptions { history: true }
    }
}

/// The cause of a cooldown, stored beside it (`{id}:cooldown_cause`) for every replica.
#[derive(Serialize, Deserialize)]
pub(crate) struct Cause {
    pub(crate) class: String,
    pub(crate) status: Option<u16>,
    pub(crate) message: String,
}

impl Cause {
    /// The cause of a cooldown for a failure of `class` with `message` (shortened, redacted).
    pub(crate) fn of(class: &ErrorClass, message: &str) -> Self {
        Cause {
            class: crate::explain::class_label(class).to_string(),
            status: class.status(),
            message: redact(message, 200),
        }
    }
}

/// The key a deployment's cooldown cause is stored under.
pub(crate) fn cause_key(id: &DeploymentId) -> String {
    hash_tagged(id.as_str(), ":cooldown_cause")
}

/// At most `max` characters of `message`, each word that looks like a credential (a known key
/// prefix, or 32 and more characters of letters, digits, `-` and `_`) replaced by `***`.
pub(crate) fn redact(message: &str, max: usize) -> String {
    const PREFIXES: [&str; 6] = ["sk-", "sk_", "AKIA", "AIza", "xox", "ghp_"];
    let mut out = String::with_capacity(message.len().min(max + 3));
    let mut taken = 0;
    for (i, word) in message.split_whitespace().enumerate() {
        let secret = PREFIXES.iter().any(|p| word.starts_with(p))
            || (word.len() >= 32
                && word
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        let word = if secret { "***" } else { word };
        if i > 0 {
            out.push(' ');
            taken += 1;
        }
        for c in word.chars() {
            if taken >= max {
                out.push('…');
                return out;
            }
            out.push(c);
            taken += 1;
        }
    }
    out
}

/// `api_base` as it may be shown: without a `user:password@` part or a query string.
pub(crate) fn public_base(base: &str) -> String {
    if !base.contains(['@', '?', '#']) {
        return base.to_string();
    }
    let base = base.split(['?', '#']).next().unwrap_or_default();
    match base.split_once("://") {
        Some((scheme, rest)) => {
            let host_end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(host_end);
            let authority = authority.rsplit('@').next().unwrap_or(authority);
            format!("{scheme}://{authority}{path}")
        }
        None => base.rsplit('@').next().unwrap_or(base).to_string(),
    }
}

impl Inner {
    /// The cluster's routing state (see the module documentation).
    pub(crate) async fn state(&self, replicas: &Replicas, options: StateOptions) -> RouterState {
        let snapshot = self.snapshot.load_full();
        let now = self.now_ms();
        let shared = self.cache.shared().is_configured();
        // What is only in Redis, one round trip per kind.
        let leases = self.leases_held(&snapshot, now).await;
        let causes = self.causes(&snapshot, now).await;
        let budgets = self.deployment_budgets(&snapshot).await;
        let replicas_list = replicas.list().await;
        let groups = self.groups(&snapshot, now, &leases, &causes, &budgets, options);
        RouterState {
            generated_at_ms: now,
            replica: replicas.id(),
            shared,
            replicas: replicas_list,
            groups,
        }
    }

    /// Leases held of each deployment's shared concurrency slots (by position) and of its
    /// half-open probe: one round trip for every key.
    async fn leases_held(
        &self,
        snapshot: &Snapshot,
        now: u64,
    ) -> (HashMap<usize, u64>, HashMap<usize, u64>) {
        let mut keys: Vec<&str> = Vec::new();
        let mut owners: Vec<(usize, bool)> = Vec::new();
        for target in snapshot.targets.iter() {
            let Some(health) = snapshot.health.get(target.ix) else {
                continue;
            };
            if let Some(parallel) = health.parallel.as_ref().filter(|p| p.shared) {
                keys.push(&parallel.key);
                owners.push((target.ix.index(), false));
            }
            if let Some(probation) = &health.probation {
                if probation.half_open(&health.cooldown, now) {
                    keys.push(&probation.probe_key);
                    owners.push((target.ix.index(), true));
                }
            }
        }
        let counts = match self.cache.leases().held(&keys).await {
            Ok(counts) => counts,
            Err(error) => {
                tracing::debug!(%error, "could not count the leases held");
                keys.iter()
                    .map(|k| self.cache.leases().taken_locally(k))
                    .collect()
            }
        };
        let (mut parallel, mut probes) = (HashMap::new(), HashMap::new());
        for ((position, probe), count) in owners.into_iter().zip(counts) {
            if probe {
                probes.insert(position, count);
            } else {
                parallel.insert(position, count);
            }
        }
        (parallel, probes)
    }

    /// The causes of the cooldowns in force, by position: one `MGET`.
    async fn causes(&self, snapshot: &Snapshot, now: u64) -> HashMap<usize, Cause> {
        let cooling: Vec<(usize, String)> = snapshot
            .targets
            .iter()
            .filter(|t| {
                snapshot
                    .health
                    .get(t.ix)
                    .is_some_and(|h| h.cooldown.is_active(now))
            })
            .map(|t| (t.ix.index(), cause_key(&t.id)))
            .collect();
        if cooling.is_empty() {
            return HashMap::new();
        }
        let keys: Vec<&str> = cooling.iter().map(|(_, k)| k.as_str()).collect();
        let values = match self.cache.kv().batch_get(&keys).await {
            Ok(values) => values,
            Err(error) => {
                tracing::debug!(%error, "could not read the cooldowns' causes");
                return HashMap::new();
            }
        };
        cooling
            .iter()
            .zip(values)
            .filter_map(|((position, _), value)| {
                let cause = serde_json::from_str::<Cause>(&value?).ok()?;
                Some((*position, cause))
            })
            .collect()
    }

    /// The deployments' own budgets, by deployment id (none without budgets).
    async fn deployment_budgets(&self, snapshot: &Snapshot) -> HashMap<String, BudgetState> {
        if snapshot.ledger.is_empty() {
            return HashMap::new();
        }
        match snapshot.ledger.status().await {
            Ok(status) => status
                .into_iter()
                .filter_map(|s| match s.scope {
                    ferrolite_budgets::Scope::Deployment(id) => Some((
                        id,
                        BudgetState {
                            spend: s.spend,
                            limit: s.limit,
                            resets_at_ms: s.resets_at_ms,
                        },
                    )),
                    _ => None,
                })
                .collect(),
            Err(error) => {
                tracing::debug!(%error, "could not read the budgets");
                HashMap::new()
            }
        }
    }

    /// Every group's state from what was read.
    fn groups(
        &self,
        snapshot: &Arc<Snapshot>,
        now: u64,
        (parallel, probes): &(HashMap<usize, u64>, HashMap<usize, u64>),
        causes: &HashMap<usize, Cause>,
        budgets: &HashMap<String, BudgetState>,
        options: StateOptions,
    ) -> Vec<GroupState> {
        let view = snapshot.usage.view();
        let window = snapshot.usage.window();
        let resets_at = window.bucket_start_ms(now) + window.length_ms();
        let staleness = self.settings.health_check_staleness.as_millis() as u64;
        let mut names: Vec<&String> = snapshot.groups.keys().collect();
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let Some(group) = snapshot.groups.get(name) else {
                continue;
            };
            let mut deployments = Vec::with_capacity(group.len());
            for ix in group.members() {
                let (Some(target), Some(deployment), Some(health)) = (
                    snapshot.target(*ix),
                    snapshot.deployment(*ix),
                    snapshot.health.get(*ix),
                ) else {
                    continue;
                };
                let position = ix.index();
                let cooling = health.cooldown.is_active(now);
                let cooldown = cooling.then(|| {
                    let cause = causes.get(&position);
                    CooldownState {
                        until_ms: health.cooldown.until_ms().unwrap_or(now),
                        class: cause.map(|c| c.class.clone()),
                        status: cause.and_then(|c| c.status),
                        message: cause.map(|c| c.message.clone()),
                    }
                });
                let health_state = match &health.checks {
                    Some(checks) => HealthState {
                        checked: true,
                        healthy: !checks.unhealthy(now),
                        last_pass_ms: checks
                            .passed
                            .until_ms()
                            .map(|t| t.saturating_sub(staleness)),
                        last_fail_ms: checks
                            .failed
                            .until_ms()
                            .map(|t| t.saturating_sub(staleness)),
                    },
                    None => HealthState {
                        checked: false,
                        healthy: true,
                        last_pass_ms: None,
                        last_fail_ms: None,
                    },
                };
                let probe = health.probation.as_ref().and_then(|p| {
                    let ended = health.cooldown.until_ms()?;
                    p.half_open(&health.cooldown, now).then(|| ProbeState {
                        in_flight: probes.get(&position).copied().unwrap_or(0) > 0,
                        since_ms: ended,
                        closes_at_ms: ended + PROBATION.as_millis() as u64,
                    })
                });
                let state = if cooling {
                    Condition::Cooldown
                } else if !health_state.healthy {
                    Condition::Unhealthy
                } else if probe.is_some() {
                    Condition::Probing
                } else {
                    Condition::Healthy
                };
                let fails = snapshot.outcomes.fails.value(position).max(0) as u64;
                let successes = snapshot.outcomes.successes.value(position).max(0) as u64;
                let shared_max = health.parallel.as_ref().filter(|p| p.shared);
                let held = match shared_max {
                    Some(_) => parallel.get(&position).copied().unwrap_or(0),
                    None => view.in_flight(*ix),
                };
                let (latency_ms, ttft_ms, history) = match snapshot.recent.get(*ix) {
                    Some(recent) => {
                        let (latency, ttft, history) = recent.read(now, options.history);
                        (latency, ttft, options.history.then_some(history))
                    }
                    None => Default::default(),
                };
                let id = target.id.as_str();
                deployments.push(DeploymentState {
                    id: id.to_string(),
                    model: deployment.model.clone(),
                    provider: deployment
                        .provider()
                        .map(|p| p.as_str().to_string())
                        .unwrap_or_default(),
                    api_base: deployment.api_base.as_deref().map(public_base),
                    state,
                    cooldown,
                    health: health_state,
                    probe,
                    rpm: Used {
                        used: view.rpm(*ix).round() as u64,
                        limit: target.rpm,
                    },
                    tpm: Used {
                        used: view.tpm(*ix).round() as u64,
                        limit: target.tpm,
                    },
                    window_resets_at_ms: resets_at,
                    leases: Leases {
                        held,
                        max: shared_max.map(|p| p.limit),
                    },
                    latency_ms,
                    ttft_ms,
                    errors: Errors {
                        fails,
                        successes,
                        rate: if fails + successes == 0 {
                            0.0
                        } else {
                            fails as f64 / (fails + successes) as f64
                        },
                    },
                    budget: budgets.get(id).copied(),
                    history,
                });
            }
            out.push(GroupState {
                model_group: name.clone(),
                deployments,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shown_api_base_keeps_no_credentials_or_query() {
        assert_eq!(
            public_base("https://user:pw@example.com/v1?key=abc"),
            "https://example.com/v1"
        );
        assert_eq!(
            public_base("http://127.0.0.1:8000/v1"),
            "http://127.0.0.1:8000/v1"
        );
    }

    #[test]
    fn a_cause_message_is_short_and_names_no_key() {
        let message = redact(
            "Incorrect API key provided: sk-proj-abcdefghijklmnop. You can find your key...",
            200,
        );
        assert_eq!(
            message,
            "Incorrect API key provided: *** You can find your key..."
        );
        let long = redact(&"word ".repeat(100), 200);
        assert!(long.chars().count() <= 201, "{}", long.len());
        assert!(long.ends_with('…'));
        assert_eq!(
            redact("token 0123456789abcdef0123456789abcdef01 leaked", 200),
            "token *** leaked"
        );
    }
}
