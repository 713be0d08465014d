//! The `[validator]` section of the config, parsed strictly.

use serde::Deserialize;

use crate::{Error, Result};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValidatorConfig {
    /// Samples per challenge (c): a miner missing 10% of a shard fails one
    /// 44-sample challenge with probability 0.99.
    pub samples: u16,
    /// The longest a miner may take to answer, and its deadline until its
    /// link is measured; after that the deadline follows the link (see
    /// `deadline.rs`), usually well under a second.
    pub deadline_secs: u64,
    /// Seconds before an unanswered challenge is asked again (then 4x and
    /// 16x that), before the silence is scored.
    pub reask_secs: f64,
    /// Challenges per second, over all miners.
    pub challenges_per_sec: f64,
    /// Challenges per second to any one miner.
    pub per_miner_per_sec: f64,
    /// Challenges in flight at once.
    pub max_in_flight: usize,
    /// Seconds a miner may stay silent before its shards are rebuilt elsewhere.
    pub grace_secs: u64,
    /// Seconds between two weight settings.
    pub weights_interval_secs: u64,
    /// Seconds between re-reads of the audited datasets' placements.
    pub refresh_secs: u64,
    /// Rebuild lost shards (turn off to only score).
    pub repair: bool,
}

impl Default for ValidatorConfig {
    fn default() -> Self {
        ValidatorConfig {
            samples: 44,
            deadline_secs: 10,
            reask_secs: 60.0,
            challenges_per_sec: 4.0,
            per_miner_per_sec: 0.5,
            max_in_flight: 8,
            grace_secs: 3600,
            weights_interval_secs: 600,
            refresh_secs: 300,
            repair: true,
        }
    }
}

impl ValidatorConfig {
    /// Reads `[validator]` from a node config (defaults when absent).
    pub fn from_node_config(config: &cairn_node::config::Config) -> Result<Self> {
        let c: ValidatorConfig = match &config.validator {
            None => ValidatorConfig::default(),
            Some(t) => toml::Value::Table(t.clone())
                .try_into()
                .map_err(|e: toml::de::Error| {
                    Error::Config(format!("[validator]: {}", e.message().trim()))
                })?,
        };
        if c.samples == 0 || c.samples > cairn_proof::MAX_SAMPLES {
            return Err(Error::Config(format!(
                "[validator] samples = {}: must be between 1 and {}",
                c.samples,
                cairn_proof::MAX_SAMPLES
            )));
        }
        if !(c.reask_secs >= 0.0 && c.reask_secs.is_finite()) {
            return Err(Error::Config(format!(
                "[validator] reask_secs = {}: must be zero or more seconds",
                c.reask_secs
            )));
        }
        for (name, v) in [
            ("challenges_per_sec", c.challenges_per_sec),
            ("per_miner_per_sec", c.per_miner_per_sec),
        ] {
            if !(v > 0.0 && v.is_finite()) {
                return Err(Error::Config(format!(
                    "[validator] {name} = {v}: must be a positive number"
                )));
            }
        }
        if c.max_in_flight == 0 || c.deadline_secs == 0 || c.weights_interval_secs == 0 {
            return Err(Error::Config(
                "[validator] max_in_flight, deadline_secs and weights_interval_secs must be at least 1".into(),
            ));
        }
        Ok(c)
    }
}
