//! The settings of a training run, checked once here for every front end.

use crate::data_spec::DataSpec;
use crate::error::{Error, Result, Setting};
use crate::model::{Activation, Architecture};
use crate::optim::{OptimizerConfig, OptimizerKind, Schedule};
use serde::{Deserialize, Serialize};

/// Largest batch accepted (bigger ones would only hide a typo).
pub const MAX_BATCH: usize = 65_536;
/// Most epochs accepted in one run.
pub const MAX_EPOCHS: usize = 100_000;

/// Everything that decides a training run's result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Hidden layer widths.
    pub hidden: Vec<usize>,
    /// The hidden layers' activation (a run saved before it was a setting is ReLU).
    #[serde(default)]
    pub activation: Activation,
    /// Total epochs of the run (the schedule spans them all).
    pub epochs: usize,
    pub batch: usize,
    pub optimizer: OptimizerConfig,
    pub schedule: Schedule,
    pub seed: u64,
}

impl Default for TrainConfig {
    /// The defaults of `gpumlp train`: they reach the accuracy README.md states on the sample.
    fn default() -> Self {
        TrainConfig {
            hidden: vec![512, 256],
            activation: Activation::Relu,
            epochs: 20,
            batch: 128,
            optimizer: OptimizerConfig::new(OptimizerKind::Adam),
            schedule: Schedule::Cosine,
            seed: 1,
        }
    }
}

impl TrainConfig {
    /// The network these settings train on data described by `spec`.
    pub fn architecture(&self, spec: &DataSpec) -> Result<Architecture> {
        Ok(Architecture::for_data(spec, &self.hidden)?.with_activation(self.activation))
    }

    /// Rejects settings that cannot train, naming the setting. (The hidden widths alone: the
    /// parameter count, which depends on the data's ends, is checked by [`Self::architecture`].)
    pub fn validate(&self) -> Result<()> {
        Architecture::new(1, &self.hidden, 2)?;
        let count = |setting: Setting, n: usize, max: usize| {
            if (1..=max).contains(&n) {
                Ok(())
            } else {
                Err(Error::setting(
                    setting,
                    format!("{n} is out of range: it must be between 1 and {max}"),
                ))
            }
        };
        count(Setting::Batch, self.batch, MAX_BATCH)?;
        count(Setting::Epochs, self.epochs, MAX_EPOCHS)?;
        self.optimizer.validate()
    }
}
