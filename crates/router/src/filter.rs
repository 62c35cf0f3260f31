//! The filters between resolution and the pick: the deployments of a destination a call may go
//! to now — healthy (health checks), not cooling down, within budget, matching the request's
//! tags, region and context window, in the right `order` tier, not skipped by an earlier
//! failure — and the output-limit check a request passes before any of them.

use std::time::Duration;

use ferrolite_strategies::{Candidates, Exclusions, Pool, Target, Targets};
use ferrolite_types::{DeploymentId, DeploymentIx, ErrorClass};

use crate::call::{Call, Failure};
use crate::explain::Excluded;
use crate::inner::Inner;
use crate::resolve::{Destination, members};
use crate::snapshot::{Group, Snapshot};
use crate::{Event, Request, RouterError};

/// The group a selection draws from: the snapshot's (a model group), or one prepared for the
/// request (a deployment named by id, the deployments of one model name).
enum Prepared<'s> {
    Shared(&'s Group),
    Own(Box<Group>),
}

/// What the filters leave a pick: the destination's group, or one `order` tier of it, less the
/// members they left out. Nothing is collected while no filter leaves anything out.
pub(crate) struct Selection<'s> {
    targets: &'s Targets,
    group: Prepared<'s>,
    /// The tier of the group picked from, when the order filter chose one.
    tier: Option<usize>,
    /// Positions of the pool (the group's, or the tier's) left out.
    excluded: Option<Exclusions>,
}

impl<'s> Selection<'s> {
    fn group(&self) -> &Group {
        match &self.group {
            Prepared::Shared(group) => group,
            Prepared::Own(group) => group,
        }
    }

    /// The pool picked from.
    fn pool(&self) -> &Pool {
        let group = self.group();
        self.tier
            .and_then(|t| group.tiers.get(t))
            .map_or(&group.pool, |tier| &tier.pool)
    }

    /// The candidates of the pick.
    pub(crate) fn candidates(&self) -> Candidates<'s, '_> {
        match &self.excluded {
            Some(excluded) => Candidates::without(self.targets, self.pool(), excluded),
            None => Candidates::new(self.targets, self.pool()),
        }
    }

    /// Whether no candidate is left.
    pub(crate) fn is_empty(&self) -> bool {
        self.candidates().is_empty()
    }

    fn any(&self, f: impl Fn(&Target) -> bool) -> bool {
        self.candidates().iter().any(f)
    }

    /// Leaves out the candidates `keep` refuses (one pass; nothing is allocated when it keeps
    /// them all).
    fn retain(&mut self, keep: impl Fn(&Target) -> bool) {
        let candidates = self.candidates();
        let len = candidates.pool().len();
        let dropped: Vec<usize> = (0..len)
            .filter(|p| candidates.at(*p).is_some_and(|t| !keep(t)))
            .collect();
        if dropped.is_empty() {
            return;
        }
        let excluded = self.excluded.get_or_insert_with(|| Exclusions::new(len));
        for position in dropped {
            excluded.insert(position);
        }
    }

    /// Leaves out the deployment `ix` (found full at admission).
    pub(crate) fn remove(&mut self, ix: DeploymentIx) {
        let pool = self.pool();
        let (Some(position), len) = (pool.position(ix), pool.len()) else {
            return;
        };
        self.excluded
            .get_or_insert_with(|| Exclusions::new(len))
            .insert(position);
    }

    /// Picks from tier `index` of the group: the tier's members still candidates.
    fn enter_tier(&mut self, index: usize) {
        let Some(tier) = self.group().tiers.get(index) else {
            return;
        };
        let excluded = self.excluded.as_ref().map(|group_excluded| {
            let mut excluded = Exclusions::new(tier.pool.len());
            for (position, in_group) in tier.in_group.iter().enumerate() {
                if group_excluded.contains(*in_group as usize) {
                    excluded.insert(position);
                }
            }
            excluded
        });
        self.excluded = excluded.filter(|e| e.count() > 0);
        self.tier = Some(index);
    }

    /// Whether some member of tier `index` of the group is still a candidate.
    fn tier_has_candidates(&self, index: usize) -> bool {
        let Some(tier) = self.group().tiers.get(index) else {
            return false;
        };
        match &self.excluded {
            None => !tier.in_group.is_empty(),
            Some(excluded) => tier
                .in_group
                .iter()
                .any(|p| !excluded.contains(*p as usize)),
        }
    }

    /// Leaves out everything.
    fn clear(&mut self) {
        let len = self.pool().len();
        let mut excluded = Exclusions::new(len);
        for position in 0..len {
            excluded.insert(position);
        }
        self.excluded = Some(excluded);
    }
}

impl Inner {
    /// The deployments of `destination` a pick may choose: not cooling down (except a
    /// deployment named by id), within budget, and not skipped by an earlier failure of this
    /// request (unless that leaves none). A filter that cannot leave anything out for this
    /// group and request (nobody cooling down or unhealthy, no budget exceeded, no member
    /// with tags, limits or tiers that matter) is not run.
    pub(crate) async fn filter<'s>(
        &self,
        call: &'s Call<'_>,
        destination: &Destination,
        skip: &[DeploymentIx],
    ) -> Result<Selection<'s>, Failure> {
        let snapshot: &'s Snapshot = &call.snapshot;
        let shared = match destination {
            Destination::Group { name, .. } => snapshot.groups.get(name),
            _ => None,
        };
        let group = match shared {
            Some(group) => Prepared::Shared(group),
            None => Prepared::Own(Box::new(Group::new(
                &snapshot.targets,
                &snapshot.deployments,
                None,
                members(snapshot, destination).collect(),
            ))),
        };
        let mut eligible = Selection {
            targets: &snapshot.targets,
            group,
            tier: None,
            excluded: None,
        };
        if call.explain.is_some() {
            begin_explaining(call, destination, &eligible);
        }
        let by_id = matches!(destination, Destination::Deployment { .. });
        if self.settings.enable_health_check_routing && !by_id {
            self.filter_unhealthy(snapshot, &mut eligible);
            self.explain(call, &eligible, Excluded::Unhealthy, false);
        }
        if !by_id {
            if let Err(failure) = self.filter_cooling(snapshot, destination, &mut eligible) {
                self.explain(call, &eligible, Excluded::Cooldown, true);
                return Err(failure);
            }
            self.explain(call, &eligible, Excluded::Cooldown, false);
        }
        if !snapshot.ledger.is_empty() && !eligible.is_empty() {
            if let Err(failure) = self.filter_budgets(call, destination, &mut eligible).await {
                self.explain(call, &eligible, Excluded::Budget, true);
                return Err(failure);
            }
            self.explain(call, &eligible, Excluded::Budget, false);
        }
        if self.settings.enable_tag_filtering {
            if let Err(failure) = self.filter_tags(call, destination, &mut eligible) {
                self.explain(call, &eligible, Excluded::Tags, true);
                return Err(failure);
            }
            self.explain(call, &eligible, Excluded::Tags, false);
        }
        filter_untranslated(call, &mut eligible);
        self.explain(call, &eligible, Excluded::Untranslatable, false);
        if self.settings.enable_pre_call_checks {
            if let Err(failure) = filter_region(call, destination, &mut eligible) {
                self.explain(call, &eligible, Excluded::Region, true);
                return Err(failure);
            }
            self.explain(call, &eligible, Excluded::Region, false);
            if let Err(failure) = filter_context_window(call, destination, &mut eligible) {
                self.explain(call, &eligible, Excluded::ContextWindow, true);
                return Err(failure);
            }
            self.explain(call, &eligible, Excluded::ContextWindow, false);
        }
        filter_continued(call, &mut eligible);
        match destination {
            Destination::Group {
                name,
                order: Some(order),
            } => {
                filter_order(&mut eligible, Some(*order));
                self.explain(call, &eligible, Excluded::Order, false);
                if eligible.is_empty() {
                    return Err(Failure::Selection(RouterError::NoDeploymentInTier {
                        model_group: name.clone(),
                        order: *order,
                    }));
                }
            }
            Destination::Group { order: None, .. } | Destination::Model { .. } => {
                filter_order(&mut eligible, None);
                self.explain(call, &eligible, Excluded::Order, false);
            }
            Destination::Deployment { .. } => {}
        }
        if !skip.is_empty() {
            let candidates = eligible.candidates();
            let skipped = candidates.iter().filter(|t| skip.contains(&t.ix)).count();
            if skipped < candidates.len() {
                eligible.retain(|t| !skip.contains(&t.ix));
                self.explain(call, &eligible, Excluded::Skipped, false);
            }
        }
        Ok(eligible)
    }

    /// Records, for a request that asks for an explanation, the members of the selection that
    /// the filter just run left out (all that were left, when it `failed`), with `why` and its
    /// numbers. Nothing for any other request.
    #[inline]
    fn explain(&self, call: &Call<'_>, eligible: &Selection<'_>, why: Excluded, failed: bool) {
        let Some(recorder) = &call.explain else {
            return;
        };
        let left: Vec<DeploymentIx> = if failed {
            Vec::new()
        } else {
            eligible.candidates().iter().map(|t| t.ix).collect()
        };
        let now = self.now_ms();
        let mut recorder = recorder.lock();
        let members: Vec<DeploymentIx> = members_of(eligible);
        for ix in members {
            if left.contains(&ix) || recorder.is_excluded(ix) {
                continue;
            }
            let detail = detail(call, eligible, why, ix, now);
            recorder.exclude(ix, why, detail);
        }
    }

    /// Health-check state (LiteLLM's `enable_health_check_routing`): a deployment whose latest
    /// check failed is left out, unless that leaves none (a check that fails everywhere says more
    /// about the check than the deployments). When no member's failed check is still fresh
    /// (the group's summary), nothing is scanned.
    fn filter_unhealthy(&self, snapshot: &Snapshot, eligible: &mut Selection<'_>) {
        let now = self.now_ms();
        if eligible
            .group()
            .failing
            .as_ref()
            .is_some_and(|latest| !latest.is_active(now))
        {
            return;
        }
        let unhealthy = |t: &Target| {
            snapshot
                .health
                .get(t.ix)
                .and_then(|h| h.checks.as_ref())
                .is_some_and(|c| c.unhealthy(now))
        };
        if eligible.any(|t| !unhealthy(t)) {
            eligible.retain(|t| !unhealthy(t));
        }
    }

    /// Deployments cooling down are left out; when that leaves none, the error says when the
    /// first is back. When no member's cooldown runs past now (the group's summary), nothing is
    /// scanned.
    fn filter_cooling(
        &self,
        snapshot: &Snapshot,
        destination: &Destination,
        eligible: &mut Selection<'_>,
    ) -> Result<(), Failure> {
        let now = self.now_ms();
        if eligible
            .group()
            .cooling
            .as_ref()
            .is_some_and(|latest| !latest.is_active(now))
        {
            return Ok(());
        }
        let cooling_until = |t: &Target| {
            snapshot
                .health
                .get(t.ix)
                .and_then(|h| h.cooldown.until_ms())
                .filter(|until| *until > now)
        };
        let had_any = !eligible.is_empty();
        eligible.retain(|t| cooling_until(t).is_none());
        if eligible.is_empty() && had_any {
            // Every one cools down: say when the first is back (the error path only).
            let first_end = members(snapshot, destination)
                .filter_map(|ix| snapshot.target(ix))
                .filter_map(cooling_until)
                .min()
                .unwrap_or(now);
            return Err(Failure::Selection(RouterError::AllCooledDown {
                model_group: destination.label().to_string(),
                retry_in: Duration::from_millis(first_end - now),
            }));
        }
        Ok(())
    }

    /// Deployments a budget of the call (provider, deployment, tag) has no room for are left
    /// out; when none is left, the budget error. When no budget is exceeded, nothing is
    /// scanned.
    async fn filter_budgets(
        &self,
        call: &Call<'_>,
        destination: &Destination,
        eligible: &mut Selection<'_>,
    ) -> Result<(), Failure> {
        let ledger = &call.snapshot.ledger;
        let check = Box::pin(ledger.check(&call.budget_tags))
            .await
            .map_err(|e| Failure::Other(e.into()))?;
        if ferrolite_budgets::BudgetLedger::blocks_nothing(&check) {
            return Ok(());
        }
        if let Some(recorder) = &call.explain {
            // Each deployment kept out, with the budgets that keep it out.
            let mut recorder = recorder.lock();
            for t in eligible.candidates().iter() {
                let blocking = ledger.blocking(&check, t.ix);
                if !blocking.is_empty() {
                    let detail = blocking
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ");
                    recorder.exclude(t.ix, Excluded::Budget, Some(detail));
                }
            }
        }
        if !eligible.any(|t| ledger.allows(&check, t.ix)) {
            self.emit(Event::BudgetRefused {
                model_group: destination.label(),
            });
            let candidates: Vec<DeploymentIx> =
                eligible.candidates().iter().map(|t| t.ix).collect();
            return Err(Failure::Selection(
                ledger.exceeded_error(&check, &candidates).into(),
            ));
        }
        eligible.retain(|t| ledger.allows(&check, t.ix));
        Ok(())
    }

    /// Tag routing (LiteLLM's `tag_based_routing.py`): deployments carrying the request's tags (any
    /// of them, or all with `tag_filtering_match_any: false`), none carrying a `!tag`, all carrying
    /// every `&tag`; else, when no deployment of the group knows the request's tags, those tagged
    /// `default`; an untagged request goes to `default` deployments when there are any, else to
    /// all (then nothing is scanned when no member is tagged `default`).
    fn filter_tags(
        &self,
        call: &Call<'_>,
        destination: &Destination,
        eligible: &mut Selection<'_>,
    ) -> Result<(), Failure> {
        let snapshot: &Snapshot = &call.snapshot;
        let request = &call.request.tags;
        if request.is_empty() && !eligible.group().any_default {
            return Ok(());
        }
        let tags_of = |t: &Target| {
            snapshot
                .deployment(t.ix)
                .map_or(&[][..], |d| d.tags.as_slice())
        };
        let is_default = |t: &Target| tags_of(t).iter().any(|tag| tag == "default");
        let any_default = eligible.any(is_default);
        if request.is_empty() {
            if any_default {
                eligible.retain(is_default);
            }
            return Ok(());
        }
        let plain: Vec<&str> = request
            .iter()
            .filter(|t| !t.starts_with('!') && !t.starts_with('&'))
            .map(String::as_str)
            .collect();
        let excluded: Vec<&str> = request.iter().filter_map(|t| t.strip_prefix('!')).collect();
        let required: Vec<&str> = request.iter().filter_map(|t| t.strip_prefix('&')).collect();
        let any = self.settings.tag_filtering_match_any;
        let matches = |t: &Target| {
            let has = |tag: &str| tags_of(t).iter().any(|d| d == tag);
            let plain_ok = plain.is_empty()
                || if any {
                    plain.iter().any(|tag| has(tag))
                } else {
                    plain.iter().all(|tag| has(tag))
                };
            plain_ok && !excluded.iter().any(|tag| has(tag)) && required.iter().all(|tag| has(tag))
        };
        if eligible.any(matches) {
            eligible.retain(matches);
            return Ok(());
        }
        // As LiteLLM's `get_deployments_for_tag`: a tag some deployment of the group carries
        // (one cooling down included) is a routing rule, and a request it does not fit is
        // refused; only tags the group does not know fall back to the `default` deployments.
        let known = members(snapshot, destination)
            .filter_map(|ix| snapshot.deployment(ix))
            .any(|d| d.tags.iter().any(|tag| plain.contains(&tag.as_str())));
        if any_default && !known {
            eligible.retain(is_default);
            return Ok(());
        }
        Err(Failure::Selection(RouterError::NoTagMatch {
            model_group: destination.label().to_string(),
            tags: request.clone(),
        }))
    }
}

/// A caller's request its canonical translation could not carry whole
/// ([`crate::Native::untranslated`]) goes only to the deployments that take it as it is (of
/// the caller's protocol), when the destination has any: a group mixing `anthropic/` and
/// `bedrock/` deployments sends a Messages request with a server tool to the former. When it
/// has none, nothing is left out, and the deployment picked refuses the call naming the field.
fn filter_untranslated(call: &Call<'_>, eligible: &mut Selection<'_>) {
    let Some(native) = &call.request.native else {
        return;
    };
    if native.untranslated().is_none() {
        return;
    }
    let takes = |t: &Target| {
        call.snapshot.deployment(t.ix).is_some_and(|d| {
            d.provider()
                .is_ok_and(|p| native.protocol.passes_through_to(p.as_str()))
        })
    };
    if eligible.any(takes) {
        eligible.retain(takes);
    }
}

/// A request that continues a conversation one deployment stored ([`crate::Native::continues`]:
/// a Responses request whose `previous_response_id` names the deployment that answered it) goes
/// only to that deployment while it is among the candidates, as LiteLLM's
/// `ResponsesApiDeploymentCheck`; otherwise nothing is left out. Running before the order
/// filter, it takes the deployment's own tier.
fn filter_continued(call: &Call<'_>, eligible: &mut Selection<'_>) {
    let Some(deployment) = call.request.native.as_ref().and_then(|n| n.continues()) else {
        return;
    };
    let named = |t: &Target| t.id.as_str() == deployment.as_str();
    if eligible.any(named) {
        eligible.retain(named);
    }
}

/// The region pre-call check (LiteLLM's `_pre_call_checks`): a request that allows one region goes
/// only to deployments in it; a deployment without a `region_name` is not in any.
fn filter_region(
    call: &Call<'_>,
    destination: &Destination,
    eligible: &mut Selection<'_>,
) -> Result<(), Failure> {
    let Some(region) = call.request.allowed_model_region.as_deref() else {
        return Ok(());
    };
    eligible.retain(|t| {
        call.snapshot
            .deployment(t.ix)
            .and_then(|d| d.region_name.as_deref())
            .is_some_and(|r| r.eq_ignore_ascii_case(region))
    });
    if eligible.is_empty() {
        return Err(Failure::Selection(RouterError::InvalidRequest {
            field: "allowed_model_region",
            value: format!("{region} (model group `{}`)", destination.label()),
            reason: "no deployment of the group serves from this region",
        }));
    }
    Ok(())
}

/// The context-window pre-call check (LiteLLM's `_pre_call_checks`): deployments whose
/// `max_input_tokens` the request's input exceeds are dropped (the tokens are counted once per
/// request); when none is left, a context-window error, which takes the context-window fallbacks.
/// Nothing is scanned when the input fits the group's smallest limit.
fn filter_context_window(
    call: &Call<'_>,
    destination: &Destination,
    eligible: &mut Selection<'_>,
) -> Result<(), Failure> {
    let tokens = call.input_tokens;
    if eligible
        .group()
        .min_input_limit
        .is_none_or(|smallest| tokens <= smallest)
    {
        return Ok(());
    }
    let limit = |t: &Target| {
        call.snapshot
            .deployment(t.ix)
            .and_then(|d| d.max_input_tokens)
    };
    let largest = eligible.candidates().iter().filter_map(limit).max();
    eligible.retain(|t| limit(t).is_none_or(|max| tokens <= max));
    if eligible.is_empty() {
        return Err(Failure::Backend {
            model_group: destination.label().to_string(),
            ix: None,
            deployment: DeploymentId::new(""),
            class: ErrorClass::ContextWindowExceeded,
            message: format!(
                "Context Window exceeded for given call. No models have context window large enough for this call. Model={}, Max Input Tokens={}, Got={tokens}",
                destination.label(),
                largest.unwrap_or(0)
            ),
        });
    }
    Ok(())
}

/// LiteLLM's order filter (`get_order_filtered_deployments`), run on the deployments still
/// available (not cooling down, unhealthy, over budget or filtered out): a targeted tier keeps
/// its own deployments, possibly none (a lower tier is not picked again); otherwise the lowest
/// `order` among them wins and deployments without an `order` are left out — unless none of
/// the available ones has an `order`. The tiers are prepared with the snapshot: the pick then
/// draws from the tier's own pool.
fn filter_order(eligible: &mut Selection<'_>, target: Option<u32>) {
    let tiers = &eligible.group().tiers;
    let chosen = match target {
        Some(order) => match tiers.iter().position(|t| t.order == order) {
            Some(index) => index,
            None => return eligible.clear(),
        },
        None => match (0..tiers.len()).find(|i| eligible.tier_has_candidates(*i)) {
            Some(index) => index,
            None => return, // no available deployment has an `order`: all stay
        },
    };
    eligible.enter_tier(chosen);
}

/// Refuses a request whose `max_tokens` (or `max_completion_tokens`) is above the output
/// limit (`max_output_tokens`) of every deployment of `destination`: none of them could serve
/// it. A deployment without a known limit takes any `max_tokens`.
pub(crate) fn check_output_limit(
    snapshot: &Snapshot,
    destination: &Destination,
    request: &Request,
) -> Result<(), RouterError> {
    let Some(asked) = request.max_tokens else {
        return Ok(());
    };
    let group = match destination {
        Destination::Group { name, .. } => snapshot.groups.get(name),
        _ => None,
    };
    let limit = match group {
        // Prepared with the snapshot.
        Some(group) => group.output_limit,
        None => members(snapshot, destination).try_fold(0u64, |max, ix| {
            snapshot
                .deployment(ix)
                .and_then(|d| d.max_output_tokens)
                .map(|limit| max.max(limit))
        }),
    };
    match limit {
        Some(limit) if limit > 0 && asked > limit => {
            let field = crate::request::OUTPUT_FIELDS
                .into_iter()
                .find(|f| {
                    request
                        .body
                        .get(*f)
                        .and_then(serde_json::Value::as_u64)
                        .is_some_and(|v| v > limit)
                })
                .unwrap_or("max_tokens");
            Err(RouterError::InvalidRequest {
                field,
                value: format!(
                    "{asked} (`{}` produces at most {limit} output tokens)",
                    destination.label()
                ),
                reason: "a positive integer up to the model's output limit",
            })
        }
        _ => Ok(()),
    }
}

/// Starts the explanation of a selection of `destination`: every member of its group.
fn begin_explaining(call: &Call<'_>, destination: &Destination, eligible: &Selection<'_>) {
    let label = match destination {
        Destination::Group {
            name,
            order: Some(order),
        } => format!("{name} order {order}"),
        other => other.label().to_string(),
    };
    let members: Vec<(DeploymentIx, String)> = eligible
        .group()
        .pool
        .members()
        .iter()
        .filter_map(|ix| call.snapshot.target(*ix))
        .map(|t| (t.ix, t.id.as_str().to_string()))
        .collect();
    call.explain(|r| r.begin(label, members));
}

/// Every member of the selection's group.
fn members_of(eligible: &Selection<'_>) -> Vec<DeploymentIx> {
    eligible.group().pool.members().to_vec()
}

/// The numbers of why `ix` was left out.
fn detail(
    call: &Call<'_>,
    eligible: &Selection<'_>,
    why: Excluded,
    ix: DeploymentIx,
    now_ms: u64,
) -> Option<String> {
    let snapshot = &call.snapshot;
    let deployment = snapshot.deployment(ix);
    match why {
        Excluded::Unhealthy => Some("its latest health check failed".to_string()),
        Excluded::Cooldown => {
            let until = snapshot.health.get(ix)?.cooldown.until_ms()?;
            let left = until.saturating_sub(now_ms) as f64 / 1e3;
            Some(format!(
                "cooldown until {until} (unix ms, {left:.1} s left)"
            ))
        }
        Excluded::Budget => Some("a budget of the call has no room for it".to_string()),
        Excluded::Tags => Some(format!(
            "deployment tags {:?}, request tags {:?}",
            deployment.map_or(&[][..], |d| d.tags.as_slice()),
            call.request.tags
        )),
        Excluded::Untranslatable => {
            let native = call.request.native.as_ref()?;
            let untranslated = native.untranslated()?;
            Some(format!(
                "`{}` does not translate ({}); only a deployment taking {:?} as it is can answer",
                untranslated.field, untranslated.reason, native.protocol
            ))
        }
        Excluded::Region => Some(format!(
            "region {}, request allows {}",
            deployment
                .and_then(|d| d.region_name.as_deref())
                .unwrap_or("none"),
            call.request
                .allowed_model_region
                .as_deref()
                .unwrap_or("any")
        )),
        Excluded::ContextWindow => Some(format!(
            "max_input_tokens {} < input {}",
            deployment
                .and_then(|d| d.max_input_tokens)
                .map_or_else(|| "none".to_string(), |m| m.to_string()),
            call.input_tokens
        )),
        Excluded::Order => {
            let order = deployment
                .and_then(|d| d.order)
                .map_or_else(|| "none".to_string(), |o| o.to_string());
            let tier = eligible
                .tier
                .and_then(|t| eligible.group().tiers.get(t))
                .map_or_else(|| "none".to_string(), |t| t.order.to_string());
            Some(format!("order {order}, tier order {tier} picked"))
        }
        Excluded::Skipped => Some("failed earlier in this request".to_string()),
        Excluded::Rpm | Excluded::Tpm | Excluded::Full => None,
    }
}
