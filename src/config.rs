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

/// The arithmetic of the GEMMs: f32 throughout, or f16 operands with f32 sums on cooperative
/// matrices (a GPU's tensor cores) with everything else in f32 (master weights, optimizer state,
/// softmax, bias and activation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    Mixed,
}

impl Precision {
    pub const ALL: [Precision; 2] = [Precision::F32, Precision::Mixed];
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Mixed => "mixed",
        })
    }
}

impl std::str::FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Setting::Precision.one_of(s, &Self::ALL)
    }
}

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
    /// The GEMMs' arithmetic (a run saved before it was a setting is f32).
    #[serde(default)]
    pub precision: Precision,
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
            precision: Precision::F32,
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
