//! Labelled samples in memory, pairs of them as training and test splits, and the built-in
//! sample.
//!
//! Byte features (pixels) stay as the u8 of their files (47 MB for 60,000 digits rather than
//! 188 MB as f32); backends scale them as they read a batch. Float features (tables, arrays
//! saved as f32 or f64, anything standardised) are kept as f32.

// Defined in `data_spec` beside `Input` (so that `data_spec` need not import this module).
pub use crate::data_spec::Features;
use crate::data_spec::{DataSpec, Input, ReadOptions, Standardization, MAX_CLASSES};
use crate::error::{Error, Result};
use crate::idx;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Samples (`width` features each) and their labels (classes `0..`).
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    pub features: Features,
    pub width: usize,
    pub labels: Vec<u32>,
}

impl Dataset {
    /// Pairs features with labels, checking that the counts agree and that every float is
    /// finite; `name` is used in errors.
    pub fn new(name: &str, features: Features, width: usize, labels: Vec<u32>) -> Result<Self> {
        if width == 0 {
            return Err(Error::data(name, "samples of 0 features"));
        }
        if !features.len().is_multiple_of(width) {
            return Err(Error::data(
                name,
                format!(
                    "{} values is not a whole number of {width}-feature samples",
                    features.len()
                ),
            ));
        }
        if features.len() / width != labels.len() {
            return Err(Error::data(
                name,
                format!(
                    "{} samples but {} labels",
                    features.len() / width,
                    labels.len()
                ),
            ));
        }
        if let Features::Floats(v) = &features {
            if let Some(at) = v.iter().position(|x| !x.is_finite()) {
                return Err(Error::data(
                    name,
                    format!(
                        "feature {} of sample {} is {}",
                        at % width,
                        at / width,
                        v[at]
                    ),
                ));
            }
        }
        if let Some(at) = labels.iter().position(|&l| l as usize >= MAX_CLASSES) {
            return Err(Error::data(
                name,
                format!(
                    "label {} of sample {at} is past the {MAX_CLASSES} classes gpumlp takes",
                    labels[at]
                ),
            ));
        }
        Ok(Dataset {
            features,
            width,
            labels,
        })
    }

    /// 28x28 grey images (`n * 784` bytes) and their labels.
    pub fn digits(name: &str, images: Vec<u8>, labels: &[u8]) -> Result<Self> {
        let labels = labels.iter().map(|&l| l as u32).collect();
        Dataset::new(name, Features::Bytes(images), 784, labels)
    }

    /// An empty set of `width`-feature samples.
    pub fn empty(input: Input, width: usize) -> Self {
        Dataset {
            features: match input {
                Input::Bytes => Features::Bytes(Vec::new()),
                Input::Floats => Features::Floats(Vec::new()),
            },
            width: width.max(1),
            labels: Vec::new(),
        }
    }

    /// Parses an image IDX file and a label IDX file (each raw or gzip) into a dataset, with
    /// the images' `[height, width, channels]`.
    pub fn from_idx(
        images_name: &str,
        images: &[u8],
        labels_name: &str,
        labels: &[u8],
    ) -> Result<(Self, [usize; 3])> {
        let images = idx::parse_images(images_name, images)?;
        let labels = idx::parse_labels(labels_name, labels)?;
        let set = Dataset::new(
            &format!("{images_name} and {labels_name}"),
            Features::Bytes(images.pixels),
            images.shape.iter().product(),
            labels.iter().map(|&l| l as u32).collect(),
        )?;
        Ok((set, images.shape))
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn input(&self) -> Input {
        self.features.input()
    }

    /// Classes the labels need: the largest label + 1.
    pub fn classes(&self) -> usize {
        self.labels.iter().max().map_or(0, |&l| l as usize + 1)
    }

    /// The bytes of sample `i` (byte features only).
    pub fn image(&self, i: usize) -> &[u8] {
        match &self.features {
            Features::Bytes(v) => &v[i * self.width..(i + 1) * self.width],
            Features::Floats(_) => &[],
        }
    }

    /// The stored bytes of sample `i`, whatever their type (for prefetching).
    pub fn row_bytes(&self, i: usize) -> &[u8] {
        let size = match self.features {
            Features::Bytes(_) => 1,
            Features::Floats(_) => 4,
        };
        &self.features.as_bytes()[i * self.width * size..(i + 1) * self.width * size]
    }

    /// Sample `i` as the first layer reads it (bytes scaled by 1/255), into `out`.
    pub fn read_row(&self, i: usize, out: &mut [f32]) {
        let at = i * self.width..(i + 1) * self.width;
        match &self.features {
            Features::Bytes(v) => {
                let scale = Input::Bytes.scale();
                for (x, &b) in out.iter_mut().zip(&v[at]) {
                    *x = b as f32 * scale;
                }
            }
            Features::Floats(v) => out.copy_from_slice(&v[at]),
        }
    }

    /// The samples and labels at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Dataset {
        let w = self.width;
        let features = match &self.features {
            Features::Bytes(v) => Features::Bytes(
                indices
                    .iter()
                    .flat_map(|&i| &v[i * w..(i + 1) * w])
                    .copied()
                    .collect(),
            ),
            Features::Floats(v) => Features::Floats(
                indices
                    .iter()
                    .flat_map(|&i| &v[i * w..(i + 1) * w])
                    .copied()
                    .collect(),
            ),
        };
        Dataset {
            features,
            width: w,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
        }
    }

    /// The features as floats (bytes as they are stored, 0..=255, not scaled), standardised by
    /// `s`.
    fn standardized(&self, s: &Standardization) -> Dataset {
        let mut out = vec![0.0f32; self.features.len()];
        for (i, row) in out.chunks_exact_mut(self.width).enumerate() {
            self.raw_row(i, row);
            s.apply(row);
        }
        Dataset {
            features: Features::Floats(out),
            width: self.width,
            labels: self.labels.clone(),
        }
    }

    /// Sample `i` as stored, as f32 (bytes unscaled).
    fn raw_row(&self, i: usize, out: &mut [f32]) {
        let at = i * self.width..(i + 1) * self.width;
        match &self.features {
            Features::Bytes(v) => out.iter_mut().zip(&v[at]).for_each(|(x, &b)| *x = b as f32),
            Features::Floats(v) => out.copy_from_slice(&v[at]),
        }
    }
}

/// A training set and a test set under one name ("mnist", "mnist-sample", a path...), and
/// what a model trained on them is made for.
#[derive(Clone, Debug)]
pub struct Splits {
    pub name: String,
    pub train: Dataset,
    pub test: Dataset,
    pub spec: DataSpec,
}

impl Splits {
    /// Two sets of the same features; the classes are the labels' (or `names`), the image
    /// shape `image` where the features are pixels. Checks the limits.
    pub fn new(
        name: &str,
        train: Dataset,
        test: Dataset,
        image: Option<[usize; 3]>,
        names: Option<Vec<String>>,
    ) -> Result<Self> {
        if train.width != test.width || train.input() != test.input() {
            return Err(Error::data(
                name,
                format!(
                    "the training samples have {} {} features, the test samples {} {}",
                    train.width,
                    train.input(),
                    test.width,
                    test.input()
                ),
            ));
        }
        let classes = match &names {
            Some(n) => n.len(),
            None => train.classes().max(test.classes()),
        };
        let spec = DataSpec {
            features: train.width,
            classes,
            input: train.input(),
            image,
            names,
            read: ReadOptions::default(),
            standardization: None,
        };
        spec.check_limits(name)?;
        Ok(Splits {
            name: name.to_string(),
            train,
            test,
            spec,
        })
    }

    /// Cuts one set into a test split of `fraction` of it (at least one sample each way) and
    /// a training split of the rest, by a permutation drawn from [`SPLIT_SEED`].
    pub fn cut(
        name: &str,
        all: Dataset,
        fraction: f64,
        image: Option<[usize; 3]>,
        names: Option<Vec<String>>,
    ) -> Result<Self> {
        if !(fraction > 0.0 && fraction < 1.0) {
            return Err(Error::data(
                name,
                format!("a test fraction of {fraction}: it must be above 0 and below 1"),
            ));
        }
        if all.len() < 2 {
            return Err(Error::data(
                name,
                format!(
                    "{} samples cannot be split into training and test",
                    all.len()
                ),
            ));
        }
        let mut order: Vec<usize> = (0..all.len()).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(SPLIT_SEED));
        let test = ((all.len() as f64 * fraction).round() as usize).clamp(1, all.len() - 1);
        let mut splits = Splits::new(
            name,
            all.select(&order[test..]),
            all.select(&order[..test]),
            image,
            names,
        )?;
        splits.spec.read.test_fraction = Some(fraction);
        Ok(splits)
    }

    /// Standardises both splits' features by `given` (a model's), or by the training split's
    /// own mean and deviation; the features become floats.
    pub fn standardize(&mut self, given: Option<&Standardization>) -> Result<()> {
        let s = match given {
            Some(s) => s.clone(),
            None => {
                let train = &self.train;
                Standardization::fit(train.width, train.len(), |i, row| train.raw_row(i, row))
            }
        };
        self.train = self.train.standardized(&s);
        self.test = self.test.standardized(&s);
        self.spec.input = Input::Floats;
        self.spec.read.standardize = true;
        self.spec.standardization = Some(s);
        self.spec.check_limits(&self.name)
    }
}

/// The seed of the permutation that cuts a single file into training and test splits.
pub const SPLIT_SEED: u64 = 0x0073_706c_6974; // "split"

/// The gzip IDX files of the built-in sample: the 10,000 real digits of the MNIST test set.
pub const SAMPLE_IMAGES_GZ: &[u8] =
    include_bytes!("../data/mnist-sample/t10k-images-idx3-ubyte.gz");
pub const SAMPLE_LABELS_GZ: &[u8] =
    include_bytes!("../data/mnist-sample/t10k-labels-idx1-ubyte.gz");
/// How the sample is cut: the first 8,000 of a fixed permutation train, the other 2,000 test.
pub const SAMPLE_TRAIN: usize = 8_000;
const SAMPLE_SPLIT_SEED: u64 = 0x006d_6e69_7374; // "mnist"

/// The built-in sample, split by a fixed seeded permutation into 8,000 train and 2,000 test.
pub fn mnist_sample() -> Splits {
    let (all, _) = Dataset::from_idx(
        "built-in sample images",
        SAMPLE_IMAGES_GZ,
        "built-in sample labels",
        SAMPLE_LABELS_GZ,
    )
    .expect("the built-in sample is checked by the tests");
    split_sample(&all)
}

/// Splits a 10,000-digit set the way the sample is split (exposed so the web demo, which fetches
/// the same gz files, gets the same split).
pub fn split_sample(all: &Dataset) -> Splits {
    let mut order: Vec<usize> = (0..all.len()).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(SAMPLE_SPLIT_SEED));
    let cut = SAMPLE_TRAIN.min(all.len());
    Splits {
        name: "mnist-sample".into(),
        train: all.select(&order[..cut]),
        test: all.select(&order[cut..]),
        spec: DataSpec::mnist(),
    }
}
