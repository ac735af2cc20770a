//! The core crate's error type. Every variant names the thing that is wrong (a file, a tensor,
//! a setting) so the program can print it as one line and the user knows what to fix.

/// What went wrong in the core crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A data file (IDX, NumPy, CSV) that is malformed, truncated or inconsistent, or data that
    /// does not fit the model or gpumlp's limits.
    #[error("{name}: {reason}")]
    Data { name: String, reason: String },
    /// A setting that cannot work (zero sizes, non-finite rates...). Front ends name the setting
    /// in their own words (a flag, a form field) through [`Setting`].
    #[error("{setting}: {reason}")]
    Setting { setting: Setting, reason: String },
    /// A request that does not fit the run's state (a batch index past the data, an epoch past
    /// the end of the run).
    #[error("{0}")]
    Config(String),
    /// A checkpoint that is truncated, corrupt or does not match what it is loaded into.
    #[error("checkpoint {name}: {reason}")]
    Checkpoint { name: String, reason: String },
    /// A GPU that cannot do what was asked (limits, device loss, no adapter).
    #[error("{0}")]
    Gpu(String),
    /// An image given for prediction that holds no usable digit.
    #[error("{0}")]
    Image(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The settings a user chooses, for errors that name one. `Display` gives the words the core
/// crate uses ("learning rate"); the program maps each to its flag, the page to its form field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setting {
    Hidden,
    Activation,
    Epochs,
    Batch,
    Optimizer,
    LearningRate,
    Momentum,
    Beta1,
    Beta2,
    Eps,
    WeightDecay,
    Schedule,
    Precision,
}

impl std::fmt::Display for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(match self {
            Setting::Hidden => "hidden layers",
            Setting::Activation => "activation",
            Setting::Epochs => "epochs",
            Setting::Batch => "batch size",
            Setting::Optimizer => "optimizer",
            Setting::LearningRate => "learning rate",
            Setting::Momentum => "momentum",
            Setting::Beta1 => "beta1",
            Setting::Beta2 => "beta2",
            Setting::Eps => "epsilon",
            Setting::WeightDecay => "weight decay",
            Setting::Schedule => "schedule",
            Setting::Precision => "precision",
        })
    }
}

impl Setting {
    /// The value of `all` whose name (its `Display`) is `s`; else an error listing the names:
    /// the one `FromStr` of every named setting (optimizer, schedule, activation).
    pub(crate) fn one_of<T: Copy + std::fmt::Display>(self, s: &str, all: &[T]) -> Result<T> {
        if let Some(v) = all.iter().find(|v| v.to_string() == s) {
            return Ok(*v);
        }
        let names: Vec<String> = all.iter().map(T::to_string).collect();
        let list = match names.split_last() {
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        };
        Err(Error::setting(self, format!("'{s}' is not {list}")))
    }
}

impl Error {
    pub(crate) fn setting(setting: Setting, reason: impl Into<String>) -> Self {
        Error::Setting {
            setting,
            reason: reason.into(),
        }
    }
    pub(crate) fn data(name: &str, reason: impl Into<String>) -> Self {
        Error::Data {
            name: name.to_string(),
            reason: reason.into(),
        }
    }
    pub(crate) fn checkpoint(name: &str, reason: impl Into<String>) -> Self {
        Error::Checkpoint {
            name: name.to_string(),
            reason: reason.into(),
        }
    }
}
