//! Labelled image sets in memory, and the built-in sample.
//!
//! Images stay as the u8 pixels of the IDX files (47 MB for 60,000 digits rather than 188 MB
//! as f32); backends normalise them when they build a batch.

use crate::error::{Error, Result};
use crate::idx::{self, PIXELS};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Images (`len * 784` u8 pixels) and their labels (`len` classes 0..=9).
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
}

impl Dataset {
    /// Pairs images with labels, checking that the counts agree; `name` is used in errors.
    pub fn new(name: &str, images: Vec<u8>, labels: Vec<u8>) -> Result<Self> {
        if images.len() % PIXELS != 0 {
            return Err(Error::idx(
                name,
                format!(
                    "{} pixel bytes is not a whole number of 28x28 images",
                    images.len()
                ),
            ));
        }
        if images.len() / PIXELS != labels.len() {
            return Err(Error::idx(
                name,
                format!(
                    "{} images but {} labels",
                    images.len() / PIXELS,
                    labels.len()
                ),
            ));
        }
        Ok(Dataset { images, labels })
    }

    /// Parses an image IDX file and a label IDX file (each raw or gzip) into a dataset.
    pub fn from_idx(
        images_name: &str,
        images: &[u8],
        labels_name: &str,
        labels: &[u8],
    ) -> Result<Self> {
        let pixels = idx::parse_images(images_name, images)?;
        let labels = idx::parse_labels(labels_name, labels)?;
        Dataset::new(&format!("{images_name} and {labels_name}"), pixels, labels)
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The 784 pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * PIXELS..(i + 1) * PIXELS]
    }

    /// The images and labels at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Dataset {
        let mut images = Vec::with_capacity(indices.len() * PIXELS);
        for &i in indices {
            images.extend_from_slice(self.image(i));
        }
        Dataset {
            images,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
        }
    }
}

/// A training set and a test set under one name ("mnist", "mnist-sample", a directory...).
#[derive(Clone, Debug)]
pub struct Splits {
    pub name: String,
    pub train: Dataset,
    pub test: Dataset,
}

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
    let all = Dataset::from_idx(
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
    }
}
