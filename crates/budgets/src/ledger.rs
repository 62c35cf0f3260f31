//! The budget ledger: windows per scope, the per-request check, reserve-then-settle accounting.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ferrolite_cache::{
    CacheError, CounterOptions, DualCache, FloatCounter, LuaScript, ScriptReply,
};
use ferrolite_types::{Deployment, DeploymentIndex, DeploymentIx, PerDeployment};
use parking_lot::{Mutex, RwLock};

use crate::{
    BudgetConfig, BudgetDuration, BudgetError, BudgetsConfig, Exceeded, ReservationPolicy, Scope,
    WindowAlignment,
};

/// Spend counters outlive their window by this much, so a late settlement still finds them.
const GRACE_MS: u64 = 60_000;

/// Output tokens of this many recent calls per deployment are kept to learn its estimate.
pub const LEARNED_SAMPLES: usize = 128;
/// The learned estimate is used once this many calls were seen.
pub const LEARNED_MIN_SAMPLES: usize = 20;
/// The percentile of recent output tokens a call without `max_tokens` reserves.
pub const LEARNED_PERCENTILE: f64 = 0.99;
/// Output tokens reserved when nothing is known of a model's output: no `max_tokens`, no
/// learned percentile yet, no `max_output_tokens` (in `model_info` or the catalogue). LiteLLM's
/// `DEFAULT_MAX_TOKENS` (`litellm/constants.py`).
pub const UNKNOWN_OUTPUT_LIMIT: u64 = 4_096;

/// The output tokens of a deployment's recent calls that set no `max_tokens`, and their high
/// percentile. Kept per router instance: nothing to share, no round trip; a new instance (or a
/// new snapshot after a reload) reserves the output limit until it has learned again.
#[derive(Debug, Default)]
struct OutputSamples {
    ring: Mutex<(Vec<u64>, usize)>,
    /// [`LEARNED_PERCENTILE`] of the ring, once it holds [`LEARNED_MIN_SAMPLES`]; 0 before.
    percentile: std::sync::atomic::AtomicU64,
}

impl OutputSamples {
    fn observe(&self, tokens: u64) {
        let mut samples = {
            let mut ring = self.ring.lock();
            let (values, next) = &mut *ring;
            if values.len() < LEARNED_SAMPLES {
                values.push(tokens);
            } else {
                values[*next] = tokens;
            }
            *next = (*next + 1) % LEARNED_SAMPLES;
            if values.len() < LEARNED_MIN_SAMPLES {
                return;
            }
            values.clone()
        };
        // The rank-th smallest, found in linear time: no full sort per settled call.
        let len = samples.len();
        let rank = (len as f64 * LEARNED_PERCENTILE).ceil() as usize;
        let (_, nth, _) = samples.select_nth_unstable(rank.clamp(1, len) - 1);
        let value = (*nth).max(1);
        self.percentile
            .store(value, std::sync::atomic::Ordering::Relaxed);
    }

    fn percentile(&self) -> Option<u64> {
        Some(self.percentile.load(std::sync::atomic::Ordering::Relaxed)).filter(|p| *p > 0)
    }
}

/// What a call's estimate on one deployment is made of.
#[derive(Debug)]
struct EstimateBasis {
    input_price: f64,
    output_price: f64,
    /// `max_tokens` (or `max_completion_tokens`) of the deployment's `litellm_params`: sent with
    /// every call that sets none, so it bounds the output.
    default_max_tokens: Option<u64>,
    /// The model's output limit.
    output_limit: Option<u64>,
    learned: OutputSamples,
}

/// One scope's current window.
#[derive(Clone)]
struct Window {
    start_ms: u64,
    end_ms: u64,
    spend: FloatCounter,
    /// Anchored on this instance's clock while Redis was unreachable (fail-open): replaced by
    /// the window every instance agrees on once Redis is back, its spend moved there.
    provisional: bool,
}

struct ScopeState {
    scope: Scope,
    limit: f64,
    duration: BudgetDuration,
    /// `{budgets}provider_spend:openai:1d`, completed by `:{window start}`.
    spend_base: String,
    /// `{budgets}provider_budget_start_time:openai`: the rolling window's anchor.
    anchor_key: String,
    window: RwLock<Option<Window>>,
}

impl ScopeState {
    fn new(scope: Scope, config: &BudgetConfig) -> Result<Self, BudgetError> {
        let limit = config.max_budget.ok_or_else(|| BudgetError::MissingLimit {
            scope: scope.clone(),
        })?;
        if !limit.is_finite() || limit < 0.0 {
            return Err(BudgetError::InvalidLimit {
                scope,
                value: limit,
            });
        }
        let duration = config
            .budget_duration
            .as_deref()
            .ok_or_else(|| BudgetError::MissingDuration {
                scope: scope.clone(),
            })?
            .parse::<BudgetDuration>()?;
        // The {budgets} hash tag keeps every budget key in one Redis Cluster slot, so one script
        // can reserve across scopes.
        let spend_base = format!(
            "{{budgets}}{}_spend:{}:{duration}",
            scope.kind(),
            scope.name()
        );
        let anchor_key = format!(
            "{{budgets}}{}_budget_start_time:{}",
            scope.kind(),
            scope.name()
        );
        Ok(ScopeState {
            scope,
            limit,
            duration,
            spend_base,
            anchor_key,
            window: RwLock::new(None),
        })
    }

    fn current(&self, now_ms: u64) -> Option<Window> {
        self.window
            .read()
            .as_ref()
            .filter(|w| now_ms < w.end_ms)
            .cloned()
    }

    /// The current window's spend and whether it is provisional, read under one lock (no clone
    /// on the hot path).
    fn current_spend(&self, now_ms: u64) -> Option<(f64, bool)> {
        self.window
            .read()
            .as_ref()
            .filter(|w| now_ms < w.end_ms)
            .map(|w| (w.spend.value_at(now_ms), w.provisional))
    }
}

/// The budgets a call is checked against, computed once per request: which scopes are
/// exceeded. Checking a deployment against it is a few index lookups.
#[derive(Debug, Clone)]
pub struct BudgetCheck {
    /// Spend of every scope that is at or over its limit, by scope index.
    exceeded: Vec<Option<(f64, f64)>>,
    /// Scope indices of the request's tags that have budgets.
    tags: Vec<usize>,
}

/// What an admission reserved, to be settled with the actual cost ([`BudgetLedger::settle`])
/// or released ([`BudgetLedger::release`]). Not `Clone`: it is settled once. One dropped
/// unsettled (a call dropped by a timeout or a disconnected client) releases itself, so a
/// reservation never holds budget past its call.
#[derive(Debug)]
#[must_use = "a reservation is settled with the actual cost, or released if the call failed"]
pub struct Reservation {
    amount: f64,
    entries: Vec<(usize, FloatCounter)>,
    settled: bool,
    /// The deployment whose learned output estimate this call's output feeds, if any.
    learn: Option<DeploymentIx>,
}

impl Reservation {
    /// The amount held on each scope.
    pub fn amount(&self) -> f64 {
        self.amount
    }

    /// Marks the call as one without a `max_tokens` of its own on `deployment`: settled with
    /// [`BudgetLedger::settle_output`], its output tokens feed the deployment's learned
    /// estimate.
    pub fn learn_from(&mut self, deployment: DeploymentIx) {
        self.learn = Some(deployment);
    }

    /// Charges `delta` on every scope held, once, and sends it to Redis at once (not with the
    /// next sync), so a call on another instance right after this one reserves against it.
    fn charge(&mut self, delta: f64) -> Result<(), BudgetError> {
        self.settled = true;
        if delta != 0.0 {
            for (_, spend) in &self.entries {
                spend.increment_now(delta)?;
            }
        }
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.settled && self.amount > 0.0 {
            if let Err(error) = self.charge(-self.amount) {
                tracing::warn!(%error, "could not release a dropped budget reservation");
            }
        }
    }
}

/// One scope as an operator sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ScopeStatus {
    /// The scope.
    pub scope: Scope,
    /// Spend in the current window (reservations included).
    pub spend: f64,
    /// The limit.
    pub limit: f64,
    /// `limit - spend`, never below 0.
    pub remaining: f64,
    /// Start of the current window (Unix ms), if one has started.
    pub window_start_ms: Option<u64>,
    /// When it resets (Unix ms), if a window has started.
    pub resets_at_ms: Option<u64>,
}

/// Spend budgets of a router: provider, deployment and tag budgets, their windows, the
/// per-request check, and reserve-then-settle accounting shared through the [`DualCache`].
///
/// Windows are identified by their start, and spend is kept per window (`…_spend:{scope}:
/// {duration}:{window start}`), so a window rollover writes nothing and can lose nothing:
/// spend recorded as a window ends lands in the window it belongs to. Rolling windows agree on
/// their start across instances with one atomic `SET … NX` when a window begins (the anchor
/// expires with the window, and the next use anchors the next window); calendar windows compute
/// their start.
pub struct BudgetLedger {
    cache: DualCache,
    alignment: WindowAlignment,
    reservation: ReservationPolicy,
    scopes: Vec<ScopeState>,
    /// Per deployment: its scope indices.
    deployments: PerDeployment<Vec<usize>>,
    /// Per deployment: prices, output bounds and learned output, for estimates.
    basis: PerDeployment<EstimateBasis>,
    tags: HashMap<String, usize>,
    reserve_script: LuaScript,
    /// Serialises local check-and-reserve (no Redis, or Redis down and fail-open).
    local: Mutex<()>,
}

impl std::fmt::Debug for BudgetLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BudgetLedger")
            .field(
                "scopes",
                &self.scopes.iter().map(|s| &s.scope).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl BudgetLedger {
    /// The ledger for `config` and the deployments' own budgets (`max_budget` /
    /// `budget_duration`). `deployments` are the snapshot's, in the order of `index` (the
    /// router's one [`DeploymentIndex`]); spend is keyed by scope, so a ledger built for the
    /// next snapshot finds the spend where this one left it.
    pub fn new(
        cache: DualCache,
        config: &BudgetsConfig,
        index: &DeploymentIndex,
        deployments: &[Deployment],
    ) -> Result<Self, BudgetError> {
        if index.len() != deployments.len() {
            return Err(BudgetError::InvalidDeployment {
                deployment: index.len().min(deployments.len()),
                reason: format!(
                    "the index holds {} deployments and the list {}",
                    index.len(),
                    deployments.len()
                ),
            });
        }
        let mut scopes = Vec::new();
        let mut providers = HashMap::new();
        for (name, budget) in &config.providers {
            providers.insert(name.as_str(), scopes.len());
            scopes.push(ScopeState::new(Scope::Provider(name.clone()), budget)?);
        }
        let mut tags = HashMap::new();
        for (name, budget) in &config.tags {
            tags.insert(name.clone(), scopes.len());
            scopes.push(ScopeState::new(Scope::Tag(name.clone()), budget)?);
        }
        let per_deployment = index.try_map(|ix, id| {
            let deployment = &deployments[ix.index()];
            let mut own = Vec::new();
            let provider = deployment
                .provider()
                .map_err(|e| BudgetError::InvalidDeployment {
                    deployment: ix.index(),
                    reason: e.to_string(),
                })?;
            if let Some(scope) = providers.get(provider.as_str()) {
                own.push(*scope);
            }
            if deployment.max_budget.is_some() || deployment.budget_duration.is_some() {
                let budget = BudgetConfig {
                    max_budget: deployment.max_budget,
                    budget_duration: deployment.budget_duration.clone(),
                };
                own.push(scopes.len());
                scopes.push(ScopeState::new(Scope::Deployment(id.to_string()), &budget)?);
            }
            Ok::<_, BudgetError>(own)
        })?;
        let basis = index.map(|ix, _| {
            let deployment = &deployments[ix.index()];
            let param = |name: &str| {
                deployment
                    .default_params
                    .get(name)
                    .and_then(|value| value.as_u64())
            };
            EstimateBasis {
                input_price: deployment.input_cost_per_token.unwrap_or(0.0),
                output_price: deployment.output_cost_per_token.unwrap_or(0.0),
                default_max_tokens: param("max_tokens").or_else(|| param("max_completion_tokens")),
                output_limit: deployment.max_output_tokens.filter(|l| *l > 0),
                learned: OutputSamples::default(),
            }
        });
        Ok(BudgetLedger {
            cache,
            alignment: config.alignment,
            reservation: config.reservation,
            scopes,
            deployments: per_deployment,
            basis,
            tags,
            reserve_script: LuaScript::new(
                "ferrolite_budget_reserve_v1",
                include_str!("lua/reserve_v1.lua"),
            ),
            local: Mutex::new(()),
        })
    }

    /// Whether any budget is configured (the router skips the filter otherwise).
    pub fn is_empty(&self) -> bool {
        self.scopes.is_empty()
    }

    /// The scope's current window, starting one if none is running. A window anchored while
    /// Redis was unreachable is provisional: once Redis is back it is replaced by the window
    /// every instance agrees on, and its spend moves there (N instances that each started a
    /// window during an outage converge on one window and one spend, not N).
    async fn window(&self, index: usize) -> Result<Window, BudgetError> {
        let state = &self.scopes[index];
        let now = self.cache.clock().now_ms();
        let current = state.current(now);
        let provisional = match current {
            Some(window) if !(window.provisional && self.cache.shared().is_up()) => {
                return Ok(window);
            }
            Some(window) => Some(window),
            None => None,
        };
        let start = match self.alignment {
            WindowAlignment::Calendar => state.duration.aligned_start(now),
            WindowAlignment::Rolling => {
                // A provisional window's start is proposed again, so a window that began during
                // the outage keeps its start when no other instance anchored one.
                let proposed = provisional.as_ref().map_or(now, |w| w.start_ms);
                let ttl = Duration::from_millis(
                    state
                        .duration
                        .end_of_window(proposed)
                        .saturating_sub(now)
                        .max(1),
                );
                let agreed = self
                    .cache
                    .kv()
                    .set_if_absent(&state.anchor_key, &proposed.to_string(), ttl)
                    .await?;
                agreed.parse::<u64>().map_err(|_| {
                    BudgetError::Cache(CacheError::UnexpectedReply {
                        key: state.anchor_key.clone(),
                        expected: "a window start in Unix milliseconds",
                        got: agreed.to_string(),
                    })
                })?
            }
        };
        let end = state.duration.end_of_window(start);
        let ttl = Duration::from_millis(end.saturating_sub(now).saturating_add(GRACE_MS));
        let spend = self.cache.counters().float_counter(
            &format!("{}:{start}", state.spend_base),
            CounterOptions::fixed_ttl(ttl),
        )?;
        let window = Window {
            start_ms: start,
            end_ms: end,
            spend,
            provisional: self.cache.shared().is_configured() && !self.cache.shared().is_up(),
        };
        if let Some(old) = provisional {
            if old.start_ms != window.start_ms {
                let moved = old.spend.value();
                if moved != 0.0 {
                    window.spend.increment(moved)?;
                    old.spend.increment(-moved)?;
                }
                tracing::info!(
                    scope = %state.scope,
                    moved,
                    "budget window started during a Redis outage joined the shared window"
                );
            }
        }
        *state.window.write() = Some(window.clone());
        Ok(window)
    }

    /// The scopes a call on `deployment` with `tags` is charged to, each with its current window.
    async fn windows_of(
        &self,
        deployment: DeploymentIx,
        tags: &[String],
    ) -> Result<Vec<(usize, Window)>, BudgetError> {
        let mut indices: Vec<usize> = self.scopes_of(deployment)?.to_vec();
        indices.extend(tags.iter().filter_map(|t| self.tags.get(t).copied()));
        indices.sort_unstable();
        indices.dedup();
        let mut entries = Vec::with_capacity(indices.len());
        for index in indices {
            entries.push((index, self.window(index).await?));
        }
        Ok(entries)
    }

    /// Evaluates every budget that can apply to a request with `tags`, once: the per-request
    /// half of the filter. Then [`BudgetCheck`] answers per deployment.
    pub async fn check(&self, tags: &[String]) -> Result<BudgetCheck, BudgetError> {
        let mut exceeded = vec![None; self.scopes.len()];
        let now = self.cache.clock().now_ms();
        for (index, state) in self.scopes.iter().enumerate() {
            let spend = match state.current_spend(now) {
                Some((spend, provisional)) if !provisional || !self.cache.shared().is_up() => spend,
                _ => self.window(index).await?.spend.value(),
            };
            if spend >= state.limit {
                exceeded[index] = Some((spend, state.limit));
            }
        }
        let tags = tags
            .iter()
            .filter_map(|t| self.tags.get(t).copied())
            .collect();
        Ok(BudgetCheck { exceeded, tags })
    }

    /// The scopes of `deployment`; an error for an index of another snapshot.
    fn scopes_of(&self, deployment: DeploymentIx) -> Result<&[usize], BudgetError> {
        self.deployments
            .get(deployment)
            .map(Vec::as_slice)
            .ok_or_else(|| BudgetError::InvalidDeployment {
                deployment: deployment.index(),
                reason: format!("index {deployment} belongs to another snapshot"),
            })
    }

    /// Whether `deployment` is within every budget of `check` (an index of another snapshot
    /// never is).
    #[inline]
    pub fn allows(&self, check: &BudgetCheck, deployment: DeploymentIx) -> bool {
        let Some(own) = self.deployments.get(deployment) else {
            return false;
        };
        own.iter()
            .chain(&check.tags)
            .all(|s| check.exceeded[*s].is_none())
    }

    /// Whether the check leaves every deployment within budget (no scope is exceeded): a
    /// caller then need not ask [`BudgetLedger::allows`] of each.
    pub fn blocks_nothing(check: &BudgetCheck) -> bool {
        check.exceeded.iter().all(Option::is_none)
    }

    /// The error for a request none of whose `candidates` is within budget: every exceeded scope
    /// that blocks one of them, with its spend and limit.
    pub fn exceeded_error(&self, check: &BudgetCheck, candidates: &[DeploymentIx]) -> BudgetError {
        BudgetError::Exceeded {
            exceeded: self.exceeded_of(check, candidates),
        }
    }

    /// Every exceeded scope of `check` that keeps `deployment` out (its own budgets and the
    /// request's tags'), with its spend and limit: why [`BudgetLedger::allows`] said no, for
    /// an explanation. Empty when it is within budget.
    pub fn blocking(&self, check: &BudgetCheck, deployment: DeploymentIx) -> Vec<Exceeded> {
        self.exceeded_of(check, &[deployment])
    }

    /// The exceeded scopes of `check` that block any of `deployments`, each once, in scope order.
    fn exceeded_of(&self, check: &BudgetCheck, deployments: &[DeploymentIx]) -> Vec<Exceeded> {
        let mut scopes: Vec<usize> = deployments
            .iter()
            .flat_map(|d| {
                self.deployments
                    .get(*d)
                    .map_or(&[][..], Vec::as_slice)
                    .iter()
                    .copied()
            })
            .chain(check.tags.iter().copied())
            .filter(|s| check.exceeded.get(*s).is_some_and(Option::is_some))
            .collect();
        scopes.sort_unstable();
        scopes.dedup();
        scopes
            .into_iter()
            .filter_map(|s| {
                let (spend, limit) = check.exceeded.get(s).copied().flatten()?;
                Some(Exceeded {
                    scope: self.scopes.get(s)?.scope.clone(),
                    spend,
                    limit,
                    estimate: 0.0,
                })
            })
            .collect()
    }

    /// The estimate the reservation policy holds for a call on `deployment` with
    /// `input_tokens` and the request's own `max_tokens` (or `max_completion_tokens`), in USD:
    /// the input at the input price plus, at the output price, the output tokens
    /// [`output_estimate`](Self::output_estimate) expects.
    pub fn estimate(
        &self,
        deployment: DeploymentIx,
        input_tokens: u64,
        max_tokens: Option<u64>,
    ) -> f64 {
        let Some(basis) = self.basis.get(deployment) else {
            return 0.0;
        };
        match self.output_estimate(deployment, max_tokens) {
            Some(output) => {
                input_tokens as f64 * basis.input_price + output as f64 * basis.output_price
            }
            None => 0.0,
        }
    }

    /// The output tokens reserved for a call on `deployment` (`None` under
    /// [`ReservationPolicy::None`]): the request's `max_tokens`, else the deployment's default
    /// `max_tokens`, else — [`ReservationPolicy::Estimate`] — the learned high percentile of its
    /// recent output ([`LEARNED_PERCENTILE`] of the last [`LEARNED_SAMPLES`] calls without
    /// `max_tokens`, once [`LEARNED_MIN_SAMPLES`] are known), else the model's output limit
    /// (`max_output_tokens`), else [`UNKNOWN_OUTPUT_LIMIT`]. [`ReservationPolicy::WorstCase`]
    /// skips the learned percentile. Never more than the output limit.
    pub fn output_estimate(
        &self,
        deployment: DeploymentIx,
        max_tokens: Option<u64>,
    ) -> Option<u64> {
        let basis = self.basis.get(deployment)?;
        let bounded = max_tokens.or(basis.default_max_tokens);
        let tokens = match self.reservation {
            ReservationPolicy::None => return None,
            ReservationPolicy::Estimate => bounded
                .or_else(|| basis.learned.percentile())
                .or(basis.output_limit),
            ReservationPolicy::WorstCase => bounded.or(basis.output_limit),
        };
        let tokens = tokens.unwrap_or(UNKNOWN_OUTPUT_LIMIT);
        Some(basis.output_limit.map_or(tokens, |limit| tokens.min(limit)))
    }

    /// Learns from a finished call on `deployment` that set no `max_tokens` of its own: its
    /// output tokens feed the percentile later calls without `max_tokens` reserve. Calls capped
    /// by a `max_tokens` say nothing of an uncapped output and are not counted.
    pub fn observe_output(&self, deployment: DeploymentIx, output_tokens: u64) {
        if let Some(basis) = self.basis.get(deployment) {
            if basis.default_max_tokens.is_none() {
                basis.learned.observe(output_tokens);
            }
        }
    }

    /// Reserves `amount` on every budget of a call on `deployment` with `tags`, or on none of
    /// them: in Redis with one atomic script (all instances together cannot reserve past a
    /// limit), in this process without Redis or while it is down (fail-open).
    pub async fn reserve(
        &self,
        deployment: DeploymentIx,
        tags: &[String],
        amount: f64,
    ) -> Result<Reservation, BudgetError> {
        if !amount.is_finite() || amount < 0.0 {
            return Err(BudgetError::InvalidCost {
                field: "reservation",
                value: amount,
            });
        }
        let entries = self.windows_of(deployment, tags).await?;
        if entries.is_empty() {
            return Ok(Reservation {
                amount,
                entries: Vec::new(),
                settled: false,
                learn: None,
            });
        }
        let remote = if self.cache.shared().is_up() || !self.cache.shared().is_fail_open() {
            self.reserve_in_redis(&entries, amount).await
        } else {
            Ok(None)
        };
        let admitted = match remote {
            Ok(Some(admitted)) => admitted,
            Ok(None) => self.reserve_locally(&entries, amount)?,
            Err(BudgetError::Cache(CacheError::Unavailable { .. }))
                if self.cache.shared().is_fail_open() =>
            {
                self.reserve_locally(&entries, amount)?
            }
            Err(e) => return Err(e),
        };
        if let Err(exceeded) = admitted {
            return Err(BudgetError::Exceeded { exceeded });
        }
        Ok(Reservation {
            amount,
            entries: entries.into_iter().map(|(i, w)| (i, w.spend)).collect(),
            settled: false,
            learn: None,
        })
    }

    /// `Ok(None)` when no Redis is configured.
    async fn reserve_in_redis(
        &self,
        entries: &[(usize, Window)],
        amount: f64,
    ) -> Result<Option<Result<(), Vec<Exceeded>>>, BudgetError> {
        let now = self.cache.clock().now_ms();
        let keys: Vec<String> = entries
            .iter()
            .map(|(i, w)| format!("{}:{}", self.scopes[*i].spend_base, w.start_ms))
            .collect();
        let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let mut args = vec![amount.to_string()];
        for (index, window) in entries {
            args.push(self.scopes[*index].limit.to_string());
            args.push((window.end_ms.saturating_sub(now) + GRACE_MS).to_string());
        }
        let Some(reply) = self
            .cache
            .shared()
            .eval(&self.reserve_script, &key_refs, args)
            .await?
        else {
            return Ok(None);
        };
        let unexpected = |got: &dyn std::fmt::Debug| {
            BudgetError::Cache(CacheError::UnexpectedReply {
                key: self.reserve_script.name().to_string(),
                expected: "[admitted, one spend per scope]",
                got: format!("{got:?}"),
            })
        };
        let items = match reply {
            ScriptReply::Array(items) if items.len() == entries.len() + 1 => items,
            other => return Err(unexpected(&other)),
        };
        let admitted = items[0].as_i64() == Some(1);
        let mut exceeded = Vec::new();
        for ((index, window), value) in entries.iter().zip(&items[1..]) {
            let spend = value
                .as_f64()
                .filter(|v| v.is_finite())
                .ok_or_else(|| unexpected(value))?;
            window.spend.observe_global(spend);
            let state = &self.scopes[*index];
            if !admitted && spend + amount > state.limit {
                exceeded.push(Exceeded {
                    scope: state.scope.clone(),
                    spend,
                    limit: state.limit,
                    estimate: amount,
                });
            }
        }
        Ok(Some(if admitted { Ok(()) } else { Err(exceeded) }))
    }

    fn reserve_locally(
        &self,
        entries: &[(usize, Window)],
        amount: f64,
    ) -> Result<Result<(), Vec<Exceeded>>, BudgetError> {
        let _serial = self.local.lock();
        let exceeded: Vec<Exceeded> = entries
            .iter()
            .filter_map(|(index, window)| {
                let state = &self.scopes[*index];
                let spend = window.spend.value();
                (spend + amount > state.limit).then(|| Exceeded {
                    scope: state.scope.clone(),
                    spend,
                    limit: state.limit,
                    estimate: amount,
                })
            })
            .collect();
        if !exceeded.is_empty() {
            return Ok(Err(exceeded));
        }
        if amount > 0.0 {
            for (_, window) in entries {
                window.spend.increment(amount)?;
            }
        }
        Ok(Ok(()))
    }

    /// Settles a reservation with the call's actual cost: charges the difference (or refunds
    /// it) on every scope the reservation held, in the window it was made in.
    pub fn settle(&self, mut reservation: Reservation, cost: f64) -> Result<(), BudgetError> {
        if !cost.is_finite() || cost < 0.0 {
            // Dropped unsettled: the hold is released.
            return Err(BudgetError::InvalidCost {
                field: "cost",
                value: cost,
            });
        }
        let delta = cost - reservation.amount;
        reservation.charge(delta)?;
        for (index, spend) in &reservation.entries {
            let state = &self.scopes[*index];
            metrics::gauge!(
                "ferrolite_budget_remaining_usd",
                "scope" => state.scope.kind(),
                "name" => state.scope.name().to_string()
            )
            .set((state.limit - spend.value()).max(0.0));
        }
        Ok(())
    }

    /// [`settle`](Self::settle) for a call that reported `output_tokens`: a reservation marked
    /// with [`Reservation::learn_from`] also teaches its deployment's estimate.
    pub fn settle_output(
        &self,
        reservation: Reservation,
        cost: f64,
        output_tokens: u64,
    ) -> Result<(), BudgetError> {
        if let Some(deployment) = reservation.learn {
            self.observe_output(deployment, output_tokens);
        }
        self.settle(reservation, cost)
    }

    /// Releases a reservation whose call failed: nothing is charged.
    pub fn release(&self, reservation: Reservation) -> Result<(), BudgetError> {
        self.settle(reservation, 0.0)
    }

    /// Charges `cost` for a call that was not reserved (reservation policy `None`).
    pub async fn record(
        &self,
        deployment: DeploymentIx,
        tags: &[String],
        cost: f64,
    ) -> Result<(), BudgetError> {
        let reservation = self.reserve_unchecked(deployment, tags).await?;
        self.settle(reservation, cost)
    }

    async fn reserve_unchecked(
        &self,
        deployment: DeploymentIx,
        tags: &[String],
    ) -> Result<Reservation, BudgetError> {
        let entries = self.windows_of(deployment, tags).await?;
        Ok(Reservation {
            amount: 0.0,
            entries: entries.into_iter().map(|(i, w)| (i, w.spend)).collect(),
            settled: false,
            learn: None,
        })
    }

    /// Every scope's spend, limit and window, for operators; also sets the
    /// `ferrolite_budget_remaining_usd` gauge per scope. With Redis it reads the shared spend
    /// fresh (one sync of the cache), and a spend key holding something that is not a number is
    /// an error naming the key — never reported as an unspent budget.
    pub async fn status(&self) -> Result<Vec<ScopeStatus>, BudgetError> {
        let mut windows = Vec::with_capacity(self.scopes.len());
        for index in 0..self.scopes.len() {
            windows.push(self.window(index).await?);
        }
        if self.cache.shared().is_up() {
            self.cache.sync_now().await?;
        }
        let mut out = Vec::with_capacity(self.scopes.len());
        for (state, window) in self.scopes.iter().zip(windows) {
            window.spend.check_remote()?;
            let spend = window.spend.value();
            let remaining = (state.limit - spend).max(0.0);
            metrics::gauge!(
                "ferrolite_budget_remaining_usd",
                "scope" => state.scope.kind(),
                "name" => state.scope.name().to_string()
            )
            .set(remaining);
            out.push(ScopeStatus {
                scope: state.scope.clone(),
                spend,
                limit: state.limit,
                remaining,
                window_start_ms: Some(window.start_ms),
                resets_at_ms: Some(window.end_ms),
            });
        }
        Ok(out)
    }
}

/// A ledger is shared by the router's tasks.
const _: fn() = || {
    fn shared<T: Send + Sync>() {}
    shared::<BudgetLedger>();
    shared::<Arc<BudgetLedger>>();
};
