//! The filters between resolution and the pick: the deployments of a destination a call may go
//! to now — healthy (health checks), not cooling down, within budget, matching the request's
//! tags, region and context window, in the right `order` tier, not skipped by an earlier
//! failure — and the output-limit check a request passes before any of them.

use std::time::Duration;

use ferrolite_strategies::Target;
use ferrolite_types::{DeploymentId, DeploymentIx, ErrorClass};

use crate::call::{Call, Failure};
use crate::inner::Inner;
use crate::resolve::{Destination, members};
use crate::snapshot::Snapshot;
use crate::{Event, Request, RouterError};

impl Inner {
    /// The deployments of `destination` a pick may choose: not cooling down (except a
    /// deployment named by id), within budget, and not skipped by an earlier failure of this
    /// request (unless that leaves none).
    pub(crate) async fn filter<'s>(
        &self,
        call: &'s Call<'_>,
        destination: &Destination,
        skip: &[DeploymentIx],
    ) -> Result<Vec<&'s Target>, Failure> {
        let snapshot: &'s Snapshot = &call.snapshot;
        let mut eligible: Vec<&Target> = members(snapshot, destination)
            .filter_map(|ix| snapshot.target(ix))
            .collect();
        let by_id = matches!(destination, Destination::Deployment { .. });
        if self.settings.enable_health_check_routing && !by_id {
            self.filter_unhealthy(snapshot, &mut eligible);
        }
        if !by_id {
            self.filter_cooling(snapshot, destination, &mut eligible)?;
        }
        if !snapshot.ledger.is_empty() && !eligible.is_empty() {
            self.filter_budgets(call, destination, &mut eligible)
                .await?;
        }
        if self.settings.enable_tag_filtering {
            eligible = self.filter_tags(call, destination, eligible)?;
        }
        if self.settings.enable_pre_call_checks {
            eligible = filter_region(call, destination, eligible)?;
            eligible = filter_context_window(call, destination, eligible)?;
        }
        match destination {
            Destination::Group {
                name,
                order: Some(order),
            } => {
                eligible = filter_order(snapshot, Some(*order), eligible);
                if eligible.is_empty() {
                    return Err(Failure::Selection(RouterError::NoDeploymentInTier {
                        model_group: name.clone(),
                        order: *order,
                    }));
                }
            }
            Destination::Group { order: None, .. } | Destination::Model { .. } => {
                eligible = filter_order(snapshot, None, eligible);
            }
            Destination::Deployment { .. } => {}
        }
        if !skip.is_empty() {
            let kept: Vec<&Target> = eligible
                .iter()
                .copied()
                .filter(|t| !skip.contains(&t.ix))
                .collect();
            if !kept.is_empty() {
                eligible = kept;
            }
        }
        Ok(eligible)
    }

    /// Health-check state (LiteLLM's `enable_health_check_routing`): a deployment whose latest
    /// check failed is left out, unless that leaves none (a check that fails everywhere says more
    /// about the check than the deployments).
    fn filter_unhealthy(&self, snapshot: &Snapshot, eligible: &mut Vec<&Target>) {
        let now = self.now_ms();
        let unhealthy = |t: &Target| {
            snapshot
                .health
                .get(t.ix)
                .and_then(|h| h.checks.as_ref())
                .is_some_and(|c| c.unhealthy(now))
        };
        if eligible.iter().any(|t| !unhealthy(t)) {
            eligible.retain(|t| !unhealthy(t));
        }
    }

    /// Deployments cooling down are left out; when that leaves none, the error says when the
    /// first is back.
    fn filter_cooling(
        &self,
        snapshot: &Snapshot,
        destination: &Destination,
        eligible: &mut Vec<&Target>,
    ) -> Result<(), Failure> {
        let now = self.now_ms();
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
    /// out; when none is left, the budget error.
    async fn filter_budgets(
        &self,
        call: &Call<'_>,
        destination: &Destination,
        eligible: &mut Vec<&Target>,
    ) -> Result<(), Failure> {
        let ledger = &call.snapshot.ledger;
        let check = Box::pin(ledger.check(&call.budget_tags))
            .await
            .map_err(|e| Failure::Other(e.into()))?;
        if !eligible.iter().any(|t| ledger.allows(&check, t.ix)) {
            self.emit(Event::BudgetRefused {
                model_group: destination.label(),
            });
            let candidates: Vec<DeploymentIx> = eligible.iter().map(|t| t.ix).collect();
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
    /// all.
    fn filter_tags<'s>(
        &self,
        call: &'s Call<'_>,
        destination: &Destination,
        eligible: Vec<&'s Target>,
    ) -> Result<Vec<&'s Target>, Failure> {
        let snapshot: &Snapshot = &call.snapshot;
        let tags_of = |t: &Target| {
            snapshot
                .deployment(t.ix)
                .map_or(&[][..], |d| d.tags.as_slice())
        };
        let defaults: Vec<&Target> = eligible
            .iter()
            .copied()
            .filter(|t| tags_of(t).iter().any(|tag| tag == "default"))
            .collect();
        let request = &call.request.tags;
        if request.is_empty() {
            return Ok(if defaults.is_empty() {
                eligible
            } else {
                defaults
            });
        }
        let plain: Vec<&str> = request
            .iter()
            .filter(|t| !t.starts_with('!') && !t.starts_with('&'))
            .map(String::as_str)
            .collect();
        let excluded: Vec<&str> = request.iter().filter_map(|t| t.strip_prefix('!')).collect();
        let required: Vec<&str> = request.iter().filter_map(|t| t.strip_prefix('&')).collect();
        let any = self.settings.tag_filtering_match_any;
        let matching: Vec<&Target> = eligible
            .iter()
            .copied()
            .filter(|t| {
                let has = |tag: &str| tags_of(t).iter().any(|d| d == tag);
                let plain_ok = plain.is_empty()
                    || if any {
                        plain.iter().any(|tag| has(tag))
                    } else {
                        plain.iter().all(|tag| has(tag))
                    };
                plain_ok
                    && !excluded.iter().any(|tag| has(tag))
                    && required.iter().all(|tag| has(tag))
            })
            .collect();
        if !matching.is_empty() {
            return Ok(matching);
        }
        // As LiteLLM's `get_deployments_for_tag`: a tag some deployment of the group carries
        // (one cooling down included) is a routing rule, and a request it does not fit is
        // refused; only tags the group does not know fall back to the `default` deployments.
        let known = members(snapshot, destination)
            .filter_map(|ix| snapshot.deployment(ix))
            .any(|d| d.tags.iter().any(|tag| plain.contains(&tag.as_str())));
        if !defaults.is_empty() && !known {
            return Ok(defaults);
        }
        Err(Failure::Selection(RouterError::NoTagMatch {
            model_group: destination.label().to_string(),
            tags: request.clone(),
        }))
    }
}

/// The region pre-call check (LiteLLM's `_pre_call_checks`): a request that allows one region goes
/// only to deployments in it; a deployment without a `region_name` is not in any.
fn filter_region<'s>(
    call: &'s Call<'_>,
    destination: &Destination,
    mut eligible: Vec<&'s Target>,
) -> Result<Vec<&'s Target>, Failure> {
    let Some(region) = call.request.allowed_model_region.as_deref() else {
        return Ok(eligible);
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
    Ok(eligible)
}

/// The context-window pre-call check (LiteLLM's `_pre_call_checks`): deployments whose
/// `max_input_tokens` the request's input exceeds are dropped (the tokens are counted once per
/// request); when none is left, a context-window error, which takes the context-window fallbacks.
fn filter_context_window<'s>(
    call: &'s Call<'_>,
    destination: &Destination,
    mut eligible: Vec<&'s Target>,
) -> Result<Vec<&'s Target>, Failure> {
    let tokens = call.input_tokens;
    let limit = |t: &Target| {
        call.snapshot
            .deployment(t.ix)
            .and_then(|d| d.max_input_tokens)
    };
    let largest = eligible.iter().filter_map(|t| limit(t)).max();
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
    Ok(eligible)
}

/// LiteLLM's order filter (`get_order_filtered_deployments`), run on the deployments still
/// available (not cooling down, unhealthy, over budget or filtered out): a targeted tier keeps
/// its own deployments, possibly none (a lower tier is not picked again); otherwise the lowest
/// `order` among them wins and deployments without an `order` are left out — unless none of
/// the available ones has an `order`.
fn filter_order<'s>(
    snapshot: &'s Snapshot,
    target: Option<u32>,
    eligible: Vec<&'s Target>,
) -> Vec<&'s Target> {
    let order_of = |t: &Target| snapshot.deployment(t.ix).and_then(|d| d.order);
    let Some(order) = target.or_else(|| eligible.iter().filter_map(|t| order_of(t)).min()) else {
        return eligible;
    };
    eligible
        .into_iter()
        .filter(|t| order_of(t) == Some(order))
        .collect()
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
    let mut limit = Some(0u64);
    for ix in members(snapshot, destination) {
        limit = match (
            limit,
            snapshot.deployment(ix).and_then(|d| d.max_output_tokens),
        ) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
    }
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
