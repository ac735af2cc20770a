//! What a model's two ends are made for, decided by the data it trains on: how many features
//! it reads and in what form, how many classes it tells apart and by what names, and how the
//! data was read (so `eval`, `predict` and `--resume` read theirs the same way). A checkpoint
//! stores it; one written before data was general reads as [`DataSpec::mnist`]. Beside the
//! form ([`Input`]) are the values in it ([`Features`]).

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// Most features per sample accepted (a 1,024 x 1,024 grey image; every width up to it runs on
/// both backends, the GPU's binding limits permitting).
pub const MAX_FEATURES: usize = 1 << 20;
/// Most classes accepted.
pub const MAX_CLASSES: usize = 65_536;
/// Bytes enter the first layer scaled by this (0..=255 to 0..=1); floats enter as they are.
pub const BYTE_SCALE: f32 = 1.0 / 255.0;

/// How the features are stored and enter the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Input {
    /// u8 (pixels): kept as bytes, scaled by [`BYTE_SCALE`] as a batch is read.
    Bytes,
    /// f32, used as they are.
    Floats,
}

impl Input {
    /// What a stored value is multiplied by as it enters the first layer.
    pub fn scale(self) -> f32 {
        match self {
            Input::Bytes => BYTE_SCALE,
            Input::Floats => 1.0,
        }
    }
}

/// The features of every sample, row-major, `width` per sample.
#[derive(Clone, Debug, PartialEq)]
pub enum Features {
    Bytes(Vec<u8>),
    Floats(Vec<f32>),
}

impl Features {
    /// Values stored (samples x width).
    pub fn len(&self) -> usize {
        match self {
            Features::Bytes(v) => v.len(),
            Features::Floats(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn input(&self) -> Input {
        match self {
            Features::Bytes(_) => Input::Bytes,
            Features::Floats(_) => Input::Floats,
        }
    }

    /// The stored bytes (little-endian f32 for floats), for fingerprints.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Features::Bytes(v) => v,
            Features::Floats(v) => bytemuck::cast_slice(v),
        }
    }
}

impl std::fmt::Display for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(match self {
            Input::Bytes => "bytes",
            Input::Floats => "floats",
        })
    }
}

/// The options a file was read with: `eval` and `--resume` read the data again with them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReadOptions {
    /// A CSV file's label column (None: the last).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The share of a single file held out as the test split, by a permutation drawn from
    /// [`SPLIT_SEED`](crate::dataset::SPLIT_SEED) (None: the data came with its own test split).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_fraction: Option<f64>,
    /// Features standardised by the training split's mean and deviation.
    #[serde(default)]
    pub standardize: bool,
}

/// Per-feature `(x - mean) / deviation`, from the training split (a constant feature keeps a
/// deviation of 1, so it maps to 0 rather than to a division by zero).
#[derive(Clone, Debug, PartialEq)]
pub struct Standardization {
    pub mean: Vec<f32>,
    pub deviation: Vec<f32>,
}

impl Standardization {
    /// Mean and deviation of each of `width` features over `n` samples (`read(i, out)` writes
    /// sample `i`'s features), summed in f64 in sample order: the same data gives the same bits.
    pub fn fit(width: usize, n: usize, read: impl Fn(usize, &mut [f32])) -> Self {
        let mut row = vec![0.0f32; width];
        let mut sum = vec![0.0f64; width];
        for i in 0..n {
            read(i, &mut row);
            sum.iter_mut().zip(&row).for_each(|(s, &x)| *s += x as f64);
        }
        let mean: Vec<f64> = sum.iter().map(|s| s / n.max(1) as f64).collect();
        let mut squares = vec![0.0f64; width];
        for i in 0..n {
            read(i, &mut row);
            for ((q, &x), m) in squares.iter_mut().zip(&row).zip(&mean) {
                *q += (x as f64 - m).powi(2);
            }
        }
        let deviation = squares
            .iter()
            .map(|q| {
                let d = (q / n.max(1) as f64).sqrt() as f32;
                if d > f32::EPSILON && d.is_finite() {
                    d
                } else {
                    1.0
                }
            })
            .collect();
        Standardization {
            mean: mean.iter().map(|&m| m as f32).collect(),
            deviation,
        }
    }

    /// Standardises one sample in place.
    pub fn apply(&self, row: &mut [f32]) {
        for ((x, m), d) in row.iter_mut().zip(&self.mean).zip(&self.deviation) {
            *x = (*x - m) / d;
        }
    }
}

/// A model's ends and how its data is read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataSpec {
    /// Features per sample: the first layer's width.
    pub features: usize,
    /// Classes: the last layer's width.
    pub classes: usize,
    /// How the features are stored (after any standardisation: standardised data is floats).
    pub input: Input,
    /// `[height, width, channels]` when the features are an image's pixels (row-major,
    /// channels last): what `predict` scales a picture to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<[usize; 3]>,
    /// The classes' names, in class order, when the labels were names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names: Option<Vec<String>>,
    #[serde(default)]
    pub read: ReadOptions,
    /// Present when `read.standardize`; stored as the checkpoint's `input.mean` and
    /// `input.deviation` tensors.
    #[serde(skip)]
    pub standardization: Option<Standardization>,
}

impl DataSpec {
    /// MNIST and Fashion-MNIST: 28x28 grey bytes, 10 classes (every checkpoint written before
    /// data was general).
    pub fn mnist() -> Self {
        DataSpec {
            features: 784,
            classes: 10,
            input: Input::Bytes,
            image: Some([28, 28, 1]),
            names: None,
            read: ReadOptions::default(),
            standardization: None,
        }
    }

    /// Whether the features are a 28x28 grey image (what the digit preparation and the
    /// browser's drawing canvas make).
    pub fn is_digit_image(&self) -> bool {
        self.image == Some([28, 28, 1])
    }

    /// The name of class `c` (its number where the labels were numbers).
    pub fn class_name(&self, c: usize) -> String {
        match &self.names {
            Some(names) => names.get(c).cloned().unwrap_or_else(|| c.to_string()),
            None => c.to_string(),
        }
    }

    /// Refuses widths beyond the limits; `name` (the data) is used in the error.
    pub fn check_limits(&self, name: &str) -> Result<()> {
        if !(1..=MAX_FEATURES).contains(&self.features) {
            return Err(Error::data(
                name,
                format!(
                    "{} features per sample; gpumlp takes 1 to {MAX_FEATURES}",
                    self.features
                ),
            ));
        }
        if !(2..=MAX_CLASSES).contains(&self.classes) {
            return Err(Error::data(
                name,
                format!("{} classes; gpumlp takes 2 to {MAX_CLASSES}", self.classes),
            ));
        }
        if let Some(names) = &self.names {
            if names.len() != self.classes {
                return Err(Error::data(
                    name,
                    format!("{} class names for {} classes", names.len(), self.classes),
                ));
            }
        }
        if let Some([h, w, c]) = self.image {
            if h.checked_mul(w).and_then(|p| p.checked_mul(c)) != Some(self.features) {
                return Err(Error::data(
                    name,
                    format!("images of {h}x{w}x{c} are not {} features", self.features),
                ));
            }
        }
        match &self.standardization {
            Some(s) if s.mean.len() != self.features || s.deviation.len() != self.features => {
                Err(Error::data(
                    name,
                    format!(
                        "a standardisation of {} features for data of {}",
                        s.mean.len(),
                        self.features
                    ),
                ))
            }
            Some(s)
                if s.mean.iter().chain(&s.deviation).any(|v| !v.is_finite())
                    || s.deviation.iter().any(|&d| d <= 0.0) =>
            {
                Err(Error::data(
                    name,
                    "a standardisation with a non-finite mean or a deviation not above 0",
                ))
            }
            _ => Ok(()),
        }
    }

    /// Samples given for prediction (`features` values each) as the model reads them: bytes or
    /// floats as it was trained on, standardised as it was; `name` is used in errors.
    pub fn prepare(&self, name: &str, features: Features) -> Result<Features> {
        if !features.len().is_multiple_of(self.features) {
            return Err(Error::data(
                name,
                format!(
                    "{} values are not whole samples of the model's {} features",
                    features.len(),
                    self.features
                ),
            ));
        }
        let floats = |f: Features| match f {
            Features::Bytes(v) => v.into_iter().map(f32::from).collect(),
            Features::Floats(v) => v,
        };
        Ok(match (&self.standardization, self.input, features) {
            (Some(s), _, f) => {
                let mut v = floats(f);
                v.chunks_exact_mut(self.features)
                    .for_each(|row| s.apply(row));
                Features::Floats(v)
            }
            (None, Input::Bytes, Features::Bytes(v)) => Features::Bytes(v),
            (None, Input::Bytes, Features::Floats(_)) => {
                return Err(Error::data(
                    name,
                    "floats, but the model was trained on bytes (u8 values 0-255)",
                ))
            }
            (None, Input::Floats, f) => Features::Floats(floats(f)),
        })
    }

    /// Whether a model made for `self` can be evaluated on data described by `data`: the same
    /// features in the same form, and no class the model does not have.
    pub fn accepts(&self, data: &DataSpec, data_name: &str) -> Result<()> {
        if data.features != self.features || data.input != self.input {
            return Err(Error::data(
                data_name,
                format!(
                    "{} {} features per sample, but the model reads {} {}",
                    data.features, data.input, self.features, self.input
                ),
            ));
        }
        if data.classes > self.classes {
            return Err(Error::data(
                data_name,
                format!(
                    "labels up to class {}, but the model knows {} classes",
                    data.classes - 1,
                    self.classes
                ),
            ));
        }
        if data.names.is_some() && data.names != self.names {
            return Err(Error::data(
                data_name,
                "its class names are not the model's",
            ));
        }
        Ok(())
    }
}
