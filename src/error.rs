//! The core crate's error type. Every variant names the thing that is wrong (a file, a tensor,
//! a setting) so the program can print it as one line and the user knows what to fix.

/// What went wrong in the core crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An IDX image or label file that is malformed, truncated or inconsistent.
    #[error("{name}: {reason}")]
    Idx { name: String, reason: String },
    /// A training or evaluation setting that cannot work (zero sizes, non-finite rates...).
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

impl Error {
    pub(crate) fn idx(name: &str, reason: impl Into<String>) -> Self {
        Error::Idx {
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
