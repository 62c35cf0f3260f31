//! Strategies by name, `routing_strategy_args`, and building a strategy.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use ferrolite_cache::Clock;

use crate::{
    LatencyBased, LowestScore, P2cEwma, Rng, SimpleShuffle, Strategy, StrategyError, Targets,
};

/// A routing strategy, by LiteLLM's names plus `p2c-ewma`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StrategyName {
    /// `simple-shuffle` (the default).
    #[default]
    SimpleShuffle,
    /// `least-busy`.
    LeastBusy,
    /// `usage-based-routing`.
    UsageBased,
    /// `usage-based-routing-v2`.
    UsageBasedV2,
    /// `latency-based-routing`.
    LatencyBased,
    /// `cost-based-routing`.
    CostBased,
    /// `p2c-ewma`.
    P2cEwma,
}

impl StrategyName {
    /// Every name accepted, in the order of the docs.
    pub const VALID: [&'static str; 7] = [
        "simple-shuffle",
        "least-busy",
        "usage-based-routing",
        "usage-based-routing-v2",
        "latency-based-routing",
        "cost-based-routing",
        "p2c-ewma",
    ];

    const ALL: [StrategyName; 7] = [
        StrategyName::SimpleShuffle,
        StrategyName::LeastBusy,
        StrategyName::UsageBased,
        StrategyName::UsageBasedV2,
        StrategyName::LatencyBased,
        StrategyName::CostBased,
        StrategyName::P2cEwma,
    ];

    /// The strategy's name as configured.
    pub fn as_str(self) -> &'static str {
        Self::VALID[self as usize]
    }

    /// Every strategy.
    pub fn all() -> [StrategyName; 7] {
        Self::ALL
    }
}

impl FromStr for StrategyName {
    type Err = StrategyError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == name)
            .ok_or_else(|| StrategyError::UnknownStrategy {
                name: name.to_string(),
            })
    }
}

impl std::fmt::Display for StrategyName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// LiteLLM's `routing_strategy_args` (read by latency-based routing), unvalidated.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RoutingStrategyArgs {
    /// Seconds a latency sample counts (default 3600).
    pub ttl: Option<f64>,
    /// Relative margin within which deployments count as equally fast (default 0).
    pub lowest_latency_buffer: Option<f64>,
    /// Samples kept per deployment (default 10).
    pub max_latency_list_size: Option<u64>,
}

/// [`RoutingStrategyArgs`] checked, with defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ValidatedArgs {
    /// Sample lifetime.
    pub ttl: Duration,
    /// Latency buffer (>= 0).
    pub lowest_latency_buffer: f64,
    /// Samples kept per deployment (1..=10,000).
    pub max_latency_list_size: usize,
}

impl RoutingStrategyArgs {
    /// Checks each argument, naming the first one out of range.
    pub fn validate(&self) -> Result<ValidatedArgs, StrategyError> {
        let ttl_secs = self.ttl.unwrap_or(3600.0);
        let ttl = Duration::try_from_secs_f64(ttl_secs)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| StrategyError::InvalidArgs {
                field: "ttl",
                value: ttl_secs.to_string(),
                reason: "seconds, finite and > 0",
            })?;
        let buffer = self.lowest_latency_buffer.unwrap_or(0.0);
        if !buffer.is_finite() || buffer < 0.0 {
            return Err(StrategyError::InvalidArgs {
                field: "lowest_latency_buffer",
                value: buffer.to_string(),
                reason: "a finite number >= 0 (0.5 = within 50% of the fastest)",
            });
        }
        let size = self.max_latency_list_size.unwrap_or(10);
        if !(1..=10_000).contains(&size) {
            return Err(StrategyError::InvalidArgs {
                field: "max_latency_list_size",
                value: size.to_string(),
                reason: "between 1 and 10000",
            });
        }
        Ok(ValidatedArgs {
            ttl,
            lowest_latency_buffer: buffer,
            max_latency_list_size: size as usize,
        })
    }
}

/// How to build a strategy.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StrategyConfig {
    /// `routing_strategy_args`.
    pub args: RoutingStrategyArgs,
    /// Seed of the strategy's random choices; `None` seeds from the process' entropy.
    pub seed: Option<u64>,
}

/// Builds the strategy `name` for the deployments of `targets`; `clock` dates the samples of
/// the strategies that learn (the cache's clock, so tests can run on paused time).
pub fn build(
    name: StrategyName,
    config: &StrategyConfig,
    targets: &Targets,
    clock: Arc<dyn Clock>,
) -> Result<Arc<dyn Strategy>, StrategyError> {
    let args = config.args.validate()?;
    let rng = config.seed.map_or_else(Rng::from_entropy, Rng::seeded);
    Ok(match name {
        StrategyName::SimpleShuffle => Arc::new(SimpleShuffle::new(rng)),
        StrategyName::LeastBusy => Arc::new(LowestScore::least_busy(rng)),
        StrategyName::UsageBased | StrategyName::UsageBasedV2 => {
            Arc::new(LowestScore::lowest_tokens(rng, name))
        }
        StrategyName::LatencyBased => Arc::new(LatencyBased::new(
            targets,
            rng,
            clock,
            args.ttl,
            args.lowest_latency_buffer,
            args.max_latency_list_size,
        )),
        StrategyName::CostBased => Arc::new(LowestScore::cost_based(rng)),
        StrategyName::P2cEwma => {
            Arc::new(P2cEwma::new(targets, rng, clock, crate::p2c::DEFAULT_DECAY))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_valid_ones() {
        for name in StrategyName::all() {
            assert_eq!(name.as_str().parse::<StrategyName>(), Ok(name));
        }
        let err = "lowest-latency".parse::<StrategyName>().unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("`lowest-latency`")
                && text.contains("usage-based-routing-v2")
                && text.contains("p2c-ewma"),
            "{text}"
        );
    }

    #[test]
    fn routing_args_are_validated_by_field() {
        let ok = RoutingStrategyArgs::default().validate().unwrap();
        assert_eq!(
            (ok.ttl, ok.lowest_latency_buffer, ok.max_latency_list_size),
            (Duration::from_secs(3600), 0.0, 10)
        );
        let bad = |args: RoutingStrategyArgs| match args.validate() {
            Err(StrategyError::InvalidArgs { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            bad(RoutingStrategyArgs {
                ttl: Some(0.0),
                ..Default::default()
            }),
            "ttl"
        );
        assert_eq!(
            bad(RoutingStrategyArgs {
                ttl: Some(f64::NAN),
                ..Default::default()
            }),
            "ttl"
        );
        assert_eq!(
            bad(RoutingStrategyArgs {
                lowest_latency_buffer: Some(-0.1),
                ..Default::default()
            }),
            "lowest_latency_buffer"
        );
        assert_eq!(
            bad(RoutingStrategyArgs {
                max_latency_list_size: Some(0),
                ..Default::default()
            }),
            "max_latency_list_size"
        );
    }
}
