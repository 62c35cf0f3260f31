//! Fallbacks (LiteLLM's `async_function_with_fallbacks`): a destination, then its fallback chain
//! (context-window, content-policy or generic, `max_fallbacks`, no target twice); and a group's
//! `order` tiers, lowest first, each with its own retries.

use ferrolite_types::ErrorClass;

use crate::attempt::Success;
use crate::call::{Call, Failure};
use crate::inner::Inner;
use crate::resolve::{Destination, resolve};
use crate::{Event, RouterError};

impl Inner {
    /// The destination, then its fallback chain (looked up by the destination's name, then by
    /// the name `asked` for, e.g. a model served through a wildcard group); the destination's
    /// own error when every target fails. A target already tried in this request is skipped: a
    /// group named twice, the failed group itself, or a deployment id already called.
    pub(crate) async fn with_fallbacks(
        &self,
        call: &mut Call<'_>,
        destination: Destination,
        asked: &str,
    ) -> Result<Success, Failure> {
        let failure = match self.order_levels(call, &destination).await {
            Ok(success) => return Ok(success),
            Err(failure) => failure,
        };
        if call.request.disable_fallbacks || failure.is_final() {
            return Err(failure);
        }
        // The caller's own list for the requested group; else the configured chains.
        let chain = if call.fallbacks == 0 && !call.request.fallbacks.is_empty() {
            call.request.fallbacks.clone()
        } else {
            self.fallback_chain(&[destination.label(), asked], failure.class())
        };
        for target in chain {
            if call.fallbacks >= self.settings.max_fallbacks {
                break;
            }
            if call.attempted.contains(&target) {
                continue; // no target twice in one request
            }
            call.attempted.push(target.clone());
            let Ok(next) = resolve(&call.snapshot, &self.settings, &target) else {
                continue;
            };
            if let Destination::Deployment { id, .. } = &next {
                if call.tried.iter().any(|t| t.deployment.as_str() == id) {
                    continue; // a deployment that already failed this request is not its own fallback
                }
            }
            call.fallbacks += 1;
            metrics::counter!("ferrolite_router_fallbacks_total").increment(1);
            self.emit(Event::Fallback {
                from: destination.label(),
                to: &target,
            });
            tracing::debug!(from = destination.label(), to = %target, "falling back");
            call.explain(|r| r.fallback(destination.label(), &target, "fallback", failure.class()));
            let result = Box::pin(self.with_fallbacks(call, next, &target)).await;
            if self.settings.litellm_metrics {
                self.count_fallback(call, &failure, destination.label(), &target, result.is_ok());
            }
            match result {
                Ok(success) => return Ok(success),
                Err(deadline @ Failure::Deadline(_)) => return Err(deadline),
                Err(_) => continue,
            }
        }
        Err(failure)
    }

    /// LiteLLM's fallback metrics: a fallback from `from` to `to` after `failure` answered
    /// (`succeeded`) or failed.
    fn count_fallback(
        &self,
        call: &Call<'_>,
        failure: &Failure,
        from: &str,
        to: &str,
        succeeded: bool,
    ) {
        let provider = match failure {
            Failure::Backend { ix: Some(ix), .. } => call
                .snapshot
                .deployment(*ix)
                .and_then(|d| d.provider().ok()),
            _ => None,
        };
        crate::litellm::fallback(
            succeeded,
            from,
            to,
            failure.class(),
            provider.as_ref().map(|p| p.as_str()),
        );
    }

    /// The fallback targets for a failure of a destination known by `names` (its own name
    /// first, then the name the request asked for): the first name with an entry wins, as in
    /// LiteLLM's `get_fallback_model_group`. A context-window or content-policy error takes its
    /// own chain when such chains are configured (and does not go on to the generic one);
    /// everything else takes `fallbacks`, else the `"*"` entry / `default_fallbacks`.
    fn fallback_chain(&self, names: &[&str], class: Option<&ErrorClass>) -> Vec<String> {
        let settings = &self.settings;
        let typed = match class {
            Some(ErrorClass::ContextWindowExceeded) => Some(&settings.context_window_fallbacks),
            Some(ErrorClass::ContentPolicy) => Some(&settings.content_policy_fallbacks),
            _ => None,
        };
        if let Some(chains) = typed.filter(|c| !c.is_empty()) {
            return names
                .iter()
                .find_map(|name| chains.get(*name))
                .cloned()
                .unwrap_or_default();
        }
        names
            .iter()
            .find_map(|name| settings.fallbacks.get(*name))
            .cloned()
            .unwrap_or_else(|| settings.default_fallbacks.clone())
    }

    /// A group's `order` tiers, lowest first, each with its own retries; a context-window or
    /// content-policy error does not move to the next tier. The first tier's error if all fail.
    async fn order_levels(
        &self,
        call: &mut Call<'_>,
        destination: &Destination,
    ) -> Result<Success, Failure> {
        let Destination::Group { name, order: None } = destination else {
            return self.with_retries(call, destination).await;
        };
        let snapshot = &call.snapshot;
        // The group's `order` levels, ascending (prepared with the snapshot).
        let levels: Vec<u32> = snapshot
            .groups
            .get(name)
            .map(|g| g.tiers.iter().map(|t| t.order).collect())
            .unwrap_or_default();
        if levels.len() <= 1 {
            // One tier (or none): the order filter alone keeps the call on it.
            return self.with_retries(call, destination).await;
        }
        // As LiteLLM: the lowest available tier first, then each higher tier as a target.
        let tiers = std::iter::once(None).chain(levels.iter().skip(1).copied().map(Some));
        let mut first: Option<Failure> = None;
        for order in tiers {
            let level = Destination::Group {
                name: name.clone(),
                order,
            };
            if let (Some(order), Some(failed)) = (order, &first) {
                call.explain(|r| {
                    let to = format!("{name} order {order}");
                    r.fallback(name, &to, "order", failed.class());
                });
            }
            match self.with_retries(call, &level).await {
                Ok(success) => return Ok(success),
                Err(failure) => {
                    let stop = matches!(
                        failure.class(),
                        Some(ErrorClass::ContextWindowExceeded | ErrorClass::ContentPolicy)
                    ) || failure.is_final();
                    first.get_or_insert(failure);
                    if stop {
                        break;
                    }
                }
            }
        }
        Err(first.unwrap_or_else(|| {
            Failure::Selection(RouterError::NoCapacity(format!(
                "no deployment in `{name}`"
            )))
        }))
    }
}
