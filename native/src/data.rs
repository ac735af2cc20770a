//! Where training data comes from: `--data mnist | fashion-mnist | mnist-sample | DIR`, or, by
//! default, MNIST when it is cached or can be downloaded and the built-in sample otherwise.
//!
//! Environment overrides (for mirrors behind a proxy, and for tests): `GPUMLP_CACHE_DIR` (else
//! `$XDG_CACHE_HOME/gpumlp`, else `~/.cache/gpumlp`), `GPUMLP_MNIST_MIRRORS` and
//! `GPUMLP_FASHION_MIRRORS` (comma-separated base URLs), `GPUMLP_FASHION_DIR` (else Debian's
//! `/usr/share/datasets/fashion-mnist`).

use crate::download::{self, RemoteFile};
use crate::files;
use anyhow::{anyhow, bail, Result};
use gpumlp::dataset::{self, Dataset, Splits};
use gpumlp::Checkpoint;
use std::path::{Path, PathBuf};

/// The four IDX files of a dataset, by their usual names (each may also end in `.gz`).
pub const IDX_FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// Published gz MD5s of MNIST, in the order of [`IDX_FILES`].
const MNIST_MD5: [&str; 4] = [
    "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "d53e105ee54ea40749a09fcbcd1e9432",
    "9fb629c4189551a2d022fa330f9573f3",
    "ec29112dd5afa0611ce80d1b7f02629c",
];
const MNIST_MIRRORS: [&str; 2] = [
    "https://storage.googleapis.com/cvdf-datasets/mnist",
    "https://ossci-datasets.s3.amazonaws.com/mnist",
];

/// Published gz MD5s of Fashion-MNIST.
const FASHION_MD5: [&str; 4] = [
    "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "25c81989df183df01b3e8a0aad5dffbe",
    "bef4ecab320f06d8554ea6380940ec79",
    "bb300cfdad3c16e7a12a480ee83cd310",
];
const FASHION_MIRRORS: [&str; 1] = ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com"];
const DEBIAN_FASHION_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// What `--data` asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataSource {
    /// MNIST if cached or downloadable, else the sample.
    Auto,
    Mnist,
    FashionMnist,
    Sample,
    Dir(PathBuf),
}

impl DataSource {
    /// Parses a `--data` value; anything but the names is a folder, which must exist.
    pub fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "auto" => DataSource::Auto,
            "mnist" => DataSource::Mnist,
            "fashion-mnist" => DataSource::FashionMnist,
            "mnist-sample" => DataSource::Sample,
            dir if Path::new(dir).is_dir() => DataSource::Dir(PathBuf::from(dir)),
            other => {
                return Err(format!(
                    "{other} is neither a dataset name (mnist, fashion-mnist, mnist-sample) nor an existing folder"
                ))
            }
        })
    }
}

/// The data to use: `--data` when given, else the data `model` was trained on (so `eval` and
/// `--resume` carry on where `train` left off), else the default.
pub fn choose(given: &Option<DataSource>, model: Option<&Checkpoint>) -> Result<DataSource> {
    match (given, model.and_then(|m| Some((m, m.training.as_ref()?)))) {
        (Some(source), _) => Ok(source.clone()),
        (None, Some((model, state))) => DataSource::parse(&state.data).map_err(|e| {
            anyhow!(
                "{}: the data it was trained on is gone ({e}); name the data with --data",
                model.name
            )
        }),
        (None, None) => Ok(DataSource::Auto),
    }
}

pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("GPUMLP_CACHE_DIR") {
        return dir.into();
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("gpumlp")
}

fn mirrors(var: &str, defaults: &[&str]) -> Vec<String> {
    match std::env::var(var) {
        Ok(list) => list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        Err(_) => defaults.iter().map(|s| s.to_string()).collect(),
    }
}

/// Loads the data `source` names. When the default falls back to the sample, `notice` receives a
/// one-line note and the details behind it (which `-v` prints).
pub fn load(source: &DataSource, notice: &mut dyn FnMut(&str, &str)) -> Result<Splits> {
    match source {
        DataSource::Sample => Ok(dataset::mnist_sample()),
        DataSource::Dir(dir) => load_dir(dir, &dir.display().to_string()),
        DataSource::Mnist => load_or_download(
            "mnist",
            &MNIST_MD5,
            &mirrors("GPUMLP_MNIST_MIRRORS", &MNIST_MIRRORS),
        )
        .map_err(|e| {
            anyhow!(
                "--data mnist: {e:#}; offline, put the four IDX .gz files in {}, or use --data mnist-sample",
                cache_dir().join("mnist").display()
            )
        }),
        DataSource::FashionMnist => {
            let local = std::env::var_os("GPUMLP_FASHION_DIR")
                .map(PathBuf::from)
                .unwrap_or(DEBIAN_FASHION_DIR.into());
            if local.is_dir() {
                load_dir(&local, "fashion-mnist")
            } else {
                load_or_download(
                    "fashion-mnist",
                    &FASHION_MD5,
                    &mirrors("GPUMLP_FASHION_MIRRORS", &FASHION_MIRRORS),
                )
            }
        }
        DataSource::Auto => {
            match load_or_download(
                "mnist",
                &MNIST_MD5,
                &mirrors("GPUMLP_MNIST_MIRRORS", &MNIST_MIRRORS),
            ) {
                Ok(splits) => Ok(splits),
                Err(e) => {
                    notice(
                        "MNIST is not cached and could not be downloaded: using the built-in sample (8,000 train / 2,000 test digits)",
                        &format!(
                            "full MNIST is not in {} ({e:#}); put its four IDX .gz files there to use it offline",
                            cache_dir().join("mnist").display()
                        ),
                    );
                    Ok(dataset::mnist_sample())
                }
            }
        }
    }
}

/// Loads `name` from the cache, downloading the files that are missing. Stops at the first file
/// that no mirror serves, so an offline machine gives up after one round of attempts.
fn load_or_download(name: &str, md5: &[&str; 4], mirrors: &[String]) -> Result<Splits> {
    let dir = cache_dir().join(name);
    for (file, md5) in IDX_FILES.iter().zip(md5) {
        let gz = format!("{file}.gz");
        if !dir.join(&gz).is_file() {
            download::fetch(
                mirrors,
                &RemoteFile {
                    name: gz,
                    md5: md5.to_string(),
                },
                &dir,
            )?;
        }
    }
    load_dir(&dir, name)
}

/// Loads the four IDX files (raw or gz) of a folder.
pub fn load_dir(dir: &Path, name: &str) -> Result<Splits> {
    let find = |base: &str| -> Result<PathBuf> {
        for candidate in [dir.join(format!("{base}.gz")), dir.join(base)] {
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
        bail!(
            "--data {}: no {base} or {base}.gz in that folder",
            dir.display()
        )
    };
    let paths = IDX_FILES.map(find);
    let [train_images, train_labels, test_images, test_labels] = paths;
    let pair = |images: Result<PathBuf>, labels: Result<PathBuf>| -> Result<Dataset> {
        let (images, labels) = (images?, labels?);
        Ok(Dataset::from_idx(
            &images.display().to_string(),
            &files::read(&images)?,
            &labels.display().to_string(),
            &files::read(&labels)?,
        )?)
    };
    Ok(Splits {
        name: name.to_string(),
        train: pair(train_images, train_labels)?,
        test: pair(test_images, test_labels)?,
    })
}
