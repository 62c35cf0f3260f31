//! From the document as written to a [`Config`]: every value checked (a path and a message
//! for each that cannot be used), LiteLLM's defaults and precedences applied. One file per
//! topic, in the order [`RawConfig::into_config`] takes them.

mod budgets;
mod cache;
mod deployment;
mod serving;
mod settings;
mod simulation;

use super::raw::{AliasTarget, RawConfig};
use super::{Config, ConfigError, ConfigWarning, Source};
use cache::cache_of;
use deployment::{Deployments, deployments_of};
use serving::{api_keys_of, health_checks_of, otel_of, server_of};
use settings::settings_of;
use simulation::check_simulation;

impl RawConfig {
    /// The configuration the document describes, with the `warnings` found while parsing it.
    pub(super) fn into_config(self, warnings: Vec<ConfigWarning>) -> Result<Config, ConfigError> {
        let RawConfig {
            model_list,
            router_settings,
            litellm_settings,
            general_settings,
            ferrolite_settings,
            simulation,
        } = self;
        let ignore_invalid = router_settings.ignore_invalid_deployments == Some(true);
        let Deployments {
            deployments,
            mocks,
            not_callable,
            mut health_checks,
        } = deployments_of(model_list, ignore_invalid)?;
        let skip_unsupported_deployments = ferrolite_settings
            .skip_unsupported_deployments
            .unwrap_or(false);
        if let Some(simulation) = &simulation {
            check_simulation(simulation, &deployments)?;
        }
        let (cache, response_cache_redis) =
            cache_of(&router_settings, &litellm_settings, &ferrolite_settings)?;
        let server = server_of(&ferrolite_settings.server)?;
        let mut warnings = warnings;
        let otel = otel_of(
            &ferrolite_settings.otel,
            litellm_settings.callbacks.as_ref(),
            &mut warnings,
        )?;
        let (api_keys, key_budgets) = api_keys_of(&ferrolite_settings.api_keys, &deployments)?;
        let router_says = (
            router_settings.enable_health_check_routing.is_some(),
            router_settings.health_check_staleness_threshold.is_some(),
            router_settings
                .health_check_ignore_transient_errors
                .is_some(),
        );
        let hidden_aliases = router_settings
            .model_group_alias
            .iter()
            .filter(|(_, target)| matches!(target, AliasTarget::Detailed { hidden: true, .. }))
            .map(|(alias, _)| alias.clone())
            .collect();
        let require_auth_for_metrics = litellm_settings
            .require_auth_for_metrics_endpoint
            .unwrap_or(false);
        let mut settings = settings_of(router_settings, litellm_settings, ferrolite_settings)?;
        settings.budgets.tags.extend(key_budgets);
        health_checks_of(
            &general_settings,
            router_says,
            &mut settings,
            &mut health_checks,
        )?;
        Ok(Config {
            deployments,
            settings,
            cache,
            master_key: general_settings.master_key.map(|s| s.0),
            mocks,
            warnings,
            simulation,
            api_keys,
            not_callable,
            skip_unsupported_deployments,
            response_cache_redis,
            health_checks,
            hidden_aliases,
            server,
            require_auth_for_metrics,
            otel,
            source: Source(None),
        })
    }
}
