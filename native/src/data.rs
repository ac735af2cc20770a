//! Where training data comes from: `--data mnist | fashion-mnist | mnist-sample | DIR | FILE`,
//! or, by default, MNIST when it is cached or can be downloaded and the built-in sample
//! otherwise. A folder holds the four IDX files or NumPy `.npy` arrays (`x_train.npy`, ...); a
//! file is an `.npz` archive or a CSV table. How a file is read (`--label`, `--test-fraction`,
//! `--standardize`) is recorded in the model, so `eval` and `--resume` read it alike.
//!
//! Environment overrides (for mirrors behind a proxy, and for tests): `GPUMLP_CACHE_DIR` (else
//! `$XDG_CACHE_HOME/gpumlp`, else `~/.cache/gpumlp`), `GPUMLP_MNIST_MIRRORS` and
//! `GPUMLP_FASHION_MIRRORS` (comma-separated base URLs), `GPUMLP_FASHION_DIR` (else Debian's
//! `/usr/share/datasets/fashion-mnist`).

use crate::download::{self, RemoteFile};
use crate::files;
use anyhow::{anyhow, bail, Result};
use gpumlp::data_spec::{DataSpec, ReadOptions};
use gpumlp::dataset::{self, Dataset, Splits};
use gpumlp::{csv_table, numpy, Checkpoint};
use std::path::{Path, PathBuf};

/// The test split cut from a single file when `--test-fraction` is not given.
pub const DEFAULT_TEST_FRACTION: f64 = 0.2;

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
    /// Four IDX files, or `.npy` arrays.
    Dir(PathBuf),
    /// An `.npz` archive.
    Npz(PathBuf),
    /// A CSV table.
    Csv(PathBuf),
}

impl DataSource {
    /// Parses a `--data` value; anything but the names is a folder or a file, which must exist.
    pub fn parse(s: &str) -> Result<Self, String> {
        let path = Path::new(s);
        let extension = path.extension().map(|e| e.to_string_lossy().to_lowercase());
        Ok(match s {
            "auto" => DataSource::Auto,
            "mnist" => DataSource::Mnist,
            "fashion-mnist" => DataSource::FashionMnist,
            "mnist-sample" => DataSource::Sample,
            dir if path.is_dir() => DataSource::Dir(PathBuf::from(dir)),
            file if path.is_file() => match extension.as_deref() {
                Some("npz") => DataSource::Npz(PathBuf::from(file)),
                Some("csv") => DataSource::Csv(PathBuf::from(file)),
                Some("npy") => {
                    return Err(format!(
                        "{file}: one .npy array holds no labels; give the folder holding x_train.npy and y_train.npy (or x.npy and y.npy)"
                    ))
                }
                _ => {
                    return Err(format!(
                        "{file}: not a data file gpumlp reads (an .npz archive or a .csv table; or a folder of IDX or .npy files)"
                    ))
                }
            },
            other => {
                return Err(format!(
                    "{other} is neither a dataset name (mnist, fashion-mnist, mnist-sample) nor an existing folder or file"
                ))
            }
        })
    }

    /// Whether it is one file or set of arrays, which `--test-fraction` cuts.
    fn is_single(&self) -> bool {
        matches!(
            self,
            DataSource::Npz(_) | DataSource::Csv(_) | DataSource::Dir(_)
        )
    }
}

/// How to read the data: the flags of a new run, or a model's record of them, with the model
/// whose ends the data must fit.
#[derive(Clone, Debug, Default)]
pub struct Reading<'a> {
    pub read: ReadOptions,
    pub model: Option<&'a DataSpec>,
}

impl<'a> Reading<'a> {
    /// For a model: as it was read when it was trained.
    pub fn like(model: &'a DataSpec) -> Self {
        Reading {
            read: model.read.clone(),
            model: Some(model),
        }
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

/// Loads the data `source` names, read as `reading` says: a single file cut into splits,
/// standardised, and checked against the model's ends where there is a model. When the default
/// falls back to the sample, `notice` receives a one-line note and the details behind it
/// (which `-v` prints).
pub fn load(
    source: &DataSource,
    reading: &Reading,
    notice: &mut dyn FnMut(&str, &str),
) -> Result<Splits> {
    let read = &reading.read;
    // The flags of a new run must apply; a model's record applies where it can.
    let flags = reading.model.is_none();
    let csv = matches!(source, DataSource::Csv(_));
    if flags && read.label.is_some() && !csv {
        bail!("--label: names a CSV table's label column, and the data is not a CSV file");
    }
    if flags && read.test_fraction.is_some() && !source.is_single() {
        bail!("--test-fraction: the data comes with its own test split");
    }
    let mut splits = match source {
        DataSource::Npz(path) | DataSource::Csv(path) | DataSource::Dir(path) => {
            load_path(source, path, reading)?
        }
        other => load_named(other, notice)?,
    };
    if flags && read.test_fraction.is_some() && splits.spec.read.test_fraction.is_none() {
        bail!(
            "--test-fraction: {} comes with its own test split",
            splits.name
        );
    }
    if csv {
        splits.spec.read.label = read.label.clone();
    }
    match reading.model {
        Some(model) => {
            if model.read.standardize {
                splits.standardize(model.standardization.as_ref())?;
            }
            model.accepts(&splits.spec, &splits.name)?;
        }
        None if read.standardize => splits.standardize(None)?,
        None => {}
    }
    Ok(splits)
}

/// A folder (IDX or `.npy` files), an `.npz` archive or a CSV table.
fn load_path(source: &DataSource, path: &Path, reading: &Reading) -> Result<Splits> {
    let name = path.display().to_string();
    let fraction = reading.read.test_fraction.unwrap_or(DEFAULT_TEST_FRACTION);
    Ok(match source {
        DataSource::Npz(_) => numpy::splits(
            &name,
            numpy::read_npz(&name, &files::read(path)?)?,
            fraction,
        )?,
        DataSource::Csv(_) => {
            let names = reading.model.and_then(|m| m.names.as_deref());
            let table = csv_table::read(
                &name,
                &files::read(path)?,
                reading.read.label.as_deref(),
                names,
            )?;
            Splits::cut(&name, table.data, fraction, None, table.names)?
        }
        _ if has_npy(path) => {
            let mut arrays = Vec::new();
            for stem in ["x_train", "y_train", "x_test", "y_test", "x", "y"] {
                let file = path.join(format!("{stem}.npy"));
                if file.is_file() {
                    let file_name = file.display().to_string();
                    arrays.push(numpy::read_npy(&file_name, stem, &files::read(&file)?)?);
                }
            }
            numpy::splits(&name, arrays, fraction)?
        }
        _ => {
            if reading.read.test_fraction.is_some() && reading.model.is_none() {
                bail!(
                    "--test-fraction: {name} holds IDX files, which come with their own test split"
                );
            }
            load_dir(path, &name)?
        }
    })
}

/// Whether a folder holds NumPy arrays (and not IDX files).
fn has_npy(dir: &Path) -> bool {
    ["x_train.npy", "x.npy"]
        .iter()
        .any(|f| dir.join(f).is_file())
}

/// The named datasets.
fn load_named(source: &DataSource, notice: &mut dyn FnMut(&str, &str)) -> Result<Splits> {
    match source {
        DataSource::Sample => Ok(dataset::mnist_sample()),
        DataSource::Dir(_) | DataSource::Npz(_) | DataSource::Csv(_) => {
            unreachable!("paths are loaded by load_path")
        }
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
    let pair =
        |images: Result<PathBuf>, labels: Result<PathBuf>| -> Result<(Dataset, [usize; 3])> {
            let (images, labels) = (images?, labels?);
            Ok(Dataset::from_idx(
                &images.display().to_string(),
                &files::read(&images)?,
                &labels.display().to_string(),
                &files::read(&labels)?,
            )?)
        };
    let (train, shape) = pair(train_images, train_labels)?;
    let (test, test_shape) = pair(test_images, test_labels)?;
    if shape != test_shape {
        bail!("--data {name}: training images are {shape:?}, test images {test_shape:?}");
    }
    Ok(Splits::new(name, train, test, Some(shape), None)?)
}

/// The data's part of a `--json` summary: its name, sizes and what it makes of the model.
pub fn describe(data: &Splits) -> serde_json::Value {
    let spec = &data.spec;
    serde_json::json!({
        "name": data.name,
        "train": data.train.len(),
        "test": data.test.len(),
        "features": spec.features,
        "classes": spec.classes,
        "input": spec.input,
        "image": spec.image,
        "names": spec.names,
        "test_fraction": spec.read.test_fraction,
        "standardized": spec.read.standardize,
    })
}
