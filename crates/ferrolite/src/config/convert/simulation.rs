//! The `simulation` section: the workload `ferrolite simulate` runs, checked against the
//! deployments it names.

use ferrolite_types::Deployment;

use crate::config::{ConfigError, Simulation};
use crate::mock::litellm_error_class;

/// The simulation section's values and the deployments its failures name.
pub(super) fn check_simulation(
    simulation: &Simulation,
    deployments: &[Deployment],
) -> Result<(), ConfigError> {
    if simulation.concurrency == Some(0) {
        return Err(ConfigError::at(
            "simulation.concurrency",
            "expected at least 1, got 0",
        ));
    }
    if let Some(share) = simulation.stream_share {
        if !(0.0..=1.0).contains(&share) {
            return Err(ConfigError::at(
                "simulation.stream_share",
                format!("expected a share from 0 to 1, got {share}"),
            ));
        }
    }
    for (group, weight) in &simulation.groups {
        if !weight.is_finite() || *weight < 0.0 {
            return Err(ConfigError::at(
                format!("simulation.groups.{group}"),
                format!("expected a non-negative share, got {weight}"),
            ));
        }
    }
    for (i, failure) in simulation.failures.iter().enumerate() {
        let at = |field: &str| format!("simulation.failures[{i}].{field}");
        if !deployments
            .iter()
            .any(|d| d.id().as_str() == failure.deployment)
        {
            return Err(ConfigError::at(
                at("deployment"),
                format!("names no deployment id, got {:?}", failure.deployment),
            ));
        }
        if !(failure.from_s >= 0.0
            && failure.to_s > failure.from_s
            && std::time::Duration::try_from_secs_f64(failure.to_s).is_ok())
        {
            return Err(ConfigError::at(
                at("to_s"),
                format!(
                    "expected 0 <= from_s < to_s, seconds that fit a duration, got {:?} to {:?}",
                    failure.from_s, failure.to_s
                ),
            ));
        }
        if litellm_error_class(&failure.error).is_none() {
            return Err(ConfigError::at(
                at("error"),
                format!("not an error class, got {:?}", failure.error),
            ));
        }
        if !(0.0..=1.0).contains(&failure.rate) {
            return Err(ConfigError::at(
                at("rate"),
                format!("expected a share from 0 to 1, got {}", failure.rate),
            ));
        }
    }
    Ok(())
}
