//! The command line (the contract README.md documents). Values are parsed by the core crate's
//! own types as clap reads them, and the run's settings are checked by the core before any work;
//! either way a bad flag fails with a message naming it ([`flag`] maps the core's setting names).

use crate::data::DataSource;
use clap::builder::TypedValueParser;
use clap::{Args, Parser, Subcommand};
use gpumlp::{Activation, Architecture, OptimizerKind, Precision, Schedule, Setting};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "gpumlp",
    version,
    about = "Train, evaluate and use an MLP classifier on labelled data: MNIST-style images, NumPy arrays, CSV tables"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Print the details behind notes (why the built-in sample was used, ...)
    #[arg(short, long, global = true)]
    pub verbose: bool,
}

// Parsed once per run: a smaller enum would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train a model (by default on MNIST, or on the built-in sample when MNIST cannot be had)
    Train(TrainArgs),
    /// Evaluate a saved model on a dataset's test set
    Eval(EvalArgs),
    /// Classify pictures (PNG or JPEG) or the rows of a CSV table or .npy array
    Predict(PredictArgs),
    /// List the devices gpumlp can train on
    Devices(DevicesArgs),
    /// Measure GEMM throughput and B1 training-step speed on a device
    Bench(BenchArgs),
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// mnist, fashion-mnist, mnist-sample, a folder with the four IDX files (gz or raw) or with
    /// .npy arrays (x_train.npy, y_train.npy, ...), an .npz archive, or a .csv table
    /// [default: mnist when cached or downloadable, else mnist-sample]
    #[arg(long, value_parser = DataSource::parse)]
    pub data: Option<DataSource>,
    /// A CSV table's label column, by its header name [default: the last column]
    #[arg(long, value_name = "NAME")]
    pub label: Option<String>,
    /// Share of a single file (CSV, or arrays without x_test/y_test) held out for testing, cut
    /// by a fixed seeded permutation [default: 0.2]
    #[arg(long, value_name = "F", value_parser = parse_fraction)]
    pub test_fraction: Option<f64>,
    /// Standardise every feature by the training split's mean and deviation (kept in the model
    /// and applied by eval and predict)
    #[arg(long)]
    pub standardize: bool,
    /// Hidden layer widths, comma-separated (the first and last layers' widths come from the
    /// data), or the whole network as 784-512-256-10, checked against the data [default: 512,256]
    #[arg(long, value_parser = parse_hidden)]
    pub hidden: Option<Hidden>,
    /// Passes over the training set [default: 20]
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Samples per step [default: 128]
    #[arg(long)]
    pub batch: Option<usize>,
    /// The hidden layers' activation [default: relu]
    #[arg(long, value_parser = one_of(&Activation::ALL))]
    pub activation: Option<Activation>,
    /// Optimizer [default: adam]
    #[arg(long, value_parser = one_of(&OptimizerKind::ALL))]
    pub optimizer: Option<OptimizerKind>,
    /// Base learning rate [default: 0.002 for adam, 0.05 for sgd]
    #[arg(long, allow_negative_numbers = true, value_parser = parse_float)]
    pub lr: Option<f32>,
    /// SGD momentum [default: 0.9]
    #[arg(long, allow_negative_numbers = true, value_parser = parse_float)]
    pub momentum: Option<f32>,
    /// Decoupled weight decay [default: 0]
    #[arg(long, allow_negative_numbers = true, value_parser = parse_float)]
    pub weight_decay: Option<f32>,
    /// Learning-rate schedule over the run [default: cosine]
    #[arg(long, value_parser = one_of(&Schedule::ALL))]
    pub schedule: Option<Schedule>,
    /// The GEMMs' arithmetic: f32, or mixed (f16 operands, f32 sums, on a GPU's cooperative
    /// matrices) [default: f32]
    #[arg(long, value_parser = one_of(&Precision::ALL))]
    pub precision: Option<Precision>,
    /// Seed of the initial weights and the shuffling [default: 1]
    #[arg(long)]
    pub seed: Option<u64>,
    #[command(flatten)]
    pub device: DeviceArg,
    /// Also save the checkpoint every N steps within an epoch (with --save), bounding what a
    /// kill -9 can lose
    #[arg(long, value_name = "STEPS", value_parser = clap::value_parser!(u64).range(1..))]
    pub save_every: Option<u64>,
    /// Save the model and optimizer state here after every epoch (safetensors)
    #[arg(long, value_name = "FILE")]
    pub save: Option<PathBuf>,
    /// Continue the run saved in this checkpoint, up to --epochs in all
    #[arg(long, value_name = "FILE")]
    pub resume: Option<PathBuf>,
    /// Write one JSON line per epoch here
    #[arg(long, value_name = "FILE")]
    pub metrics: Option<PathBuf>,
    /// Draw the loss and accuracy curves into this PNG file
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Print a JSON summary object as the last line of standard output
    #[arg(long)]
    pub json: bool,
}

/// `--hidden`: the network it parses to, and whether it was written whole (`784-512-10`, whose
/// ends the data must have) or as hidden widths alone (`512`).
#[derive(Clone, Debug)]
pub struct Hidden {
    pub network: Architecture,
    pub whole: bool,
}

fn parse_hidden(s: &str) -> Result<Hidden, String> {
    Ok(Hidden {
        network: parse_core::<Architecture>(s)?,
        whole: s.contains('-'),
    })
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A checkpoint written by `gpumlp train --save`
    #[arg(long, value_name = "FILE")]
    pub model: PathBuf,
    /// Dataset to evaluate on [default: the one the model was trained on]
    #[arg(long, value_parser = DataSource::parse)]
    pub data: Option<DataSource>,
    #[command(flatten)]
    pub device: DeviceArg,
    /// Print a JSON object as the last line of standard output
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct PredictArgs {
    /// A checkpoint written by `gpumlp train --save`
    #[arg(long, value_name = "FILE")]
    pub model: PathBuf,
    /// Pictures (PNG or JPEG: of single digits for a 28x28 grey model), CSV tables or .npy
    /// arrays of samples
    #[arg(required = true, value_name = "FILE")]
    pub images: Vec<PathBuf>,
    /// Print a JSON array as the last line of standard output
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct DevicesArgs {
    /// Print a JSON array as the last line of standard output
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub device: DeviceArg,
    /// Side of the square GEMM [default: 4096; 1024 on a software adapter]
    #[arg(long, value_parser = clap::value_parser!(u32).range(16..=16384))]
    pub size: Option<u32>,
    /// On a GPU, time every GEMM variant on each shape and list them
    #[arg(long)]
    pub tune: bool,
    /// Print a JSON object as the last line of standard output
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct DeviceArg {
    /// auto, cpu, gpu, igpu, software, or an index from `gpumlp devices`
    #[arg(long, default_value = "auto", value_parser = parse_device)]
    pub device: Device,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Device {
    Auto,
    Cpu,
    Gpu,
    IntegratedGpu,
    Software,
    Index(usize),
}

/// The flag that sets `setting`, for the core crate's errors.
pub fn flag(setting: Setting) -> &'static str {
    match setting {
        Setting::Hidden => "--hidden",
        Setting::Activation => "activation",
        Setting::Epochs => "--epochs",
        Setting::Batch => "--batch",
        Setting::Optimizer => "--optimizer",
        Setting::LearningRate => "--lr",
        Setting::Momentum => "--momentum",
        Setting::Beta1 => "beta1",
        Setting::Beta2 => "beta2",
        Setting::Eps => "epsilon",
        Setting::WeightDecay => "--weight-decay",
        Setting::Schedule => "--schedule",
        Setting::Precision => "--precision",
    }
}

/// Rewrites a core error about a setting to name the setting's flag.
pub fn name_flag(e: anyhow::Error) -> anyhow::Error {
    // By reference: a downcast by value would drop the context around the error.
    match e.downcast_ref::<gpumlp::Error>() {
        Some(gpumlp::Error::Setting { setting, reason }) => {
            anyhow::anyhow!("{} {reason}", flag(*setting))
        }
        _ => e,
    }
}

/// A value parsed by the core crate's `FromStr` (its message says what is wrong).
fn parse_core<T: std::str::FromStr<Err = gpumlp::Error>>(s: &str) -> Result<T, String> {
    s.parse().map_err(|e| match e {
        gpumlp::Error::Setting { reason, .. } => reason,
        other => other.to_string(),
    })
}

/// One of a core enum's values, by the name it displays (clap lists them in `--help`).
fn one_of<T>(all: &'static [T]) -> impl TypedValueParser<Value = T>
where
    T: std::str::FromStr + std::fmt::Display + Clone + Send + Sync + 'static,
{
    clap::builder::PossibleValuesParser::new(all.iter().map(|v| v.to_string())).map(|s| {
        s.parse()
            .unwrap_or_else(|_| unreachable!("a displayed name parses"))
    })
}

/// A share strictly between 0 and 1.
fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v < 1.0 => Ok(v),
        _ => Err(format!("'{s}' is not a fraction above 0 and below 1")),
    }
}

/// A finite number; its range is the core's to check, for every front end alike.
fn parse_float(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(format!("'{s}' is not a finite number")),
    }
}

/// A `--device` value (the Python package parses its `device=` the same way).
pub fn parse_device(s: &str) -> Result<Device, String> {
    Ok(match s {
        "auto" => Device::Auto,
        "cpu" => Device::Cpu,
        "gpu" => Device::Gpu,
        "igpu" => Device::IntegratedGpu,
        "software" => Device::Software,
        n => Device::Index(n.parse().map_err(|_| {
            format!("'{n}' is not a device: use auto, cpu, gpu, igpu, software, or an index from `gpumlp devices`")
        })?),
    })
}
