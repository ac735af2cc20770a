//! The command line, as `../shared/notes/design.md` fixes it. Values are checked as they are
//! parsed, so a bad flag fails before any work with a message naming it.

use crate::data::DataSource;
use clap::{Args, Parser, Subcommand, ValueEnum};
use gpumlp::{OptimizerKind, Schedule};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "gpumlp",
    version,
    about = "Train, evaluate and use an MLP digit classifier on MNIST-style data"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train a model (by default on MNIST, or on the built-in sample when MNIST cannot be had)
    Train(TrainArgs),
    /// Evaluate a saved model on a dataset's test set
    Eval(EvalArgs),
    /// Classify pictures of digits (PNG or JPEG, any size, dark on light or light on dark)
    Predict(PredictArgs),
    /// List the devices gpumlp can train on
    Devices(DevicesArgs),
    /// Measure GEMM throughput and B1 training-step speed on a device
    Bench(BenchArgs),
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// mnist, fashion-mnist, mnist-sample, or a folder with the four IDX files (gz or raw)
    /// [default: mnist when cached or downloadable, else mnist-sample]
    #[arg(long, value_parser = DataSource::parse)]
    pub data: Option<DataSource>,
    /// Hidden layer widths, comma-separated [default: 512,256]
    #[arg(long, value_parser = parse_hidden)]
    pub hidden: Option<Hidden>,
    /// Passes over the training set [default: 20]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=gpumlp::train::MAX_EPOCHS as i64))]
    pub epochs: Option<u32>,
    /// Samples per step [default: 128]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=gpumlp::train::MAX_BATCH as i64))]
    pub batch: Option<u32>,
    /// Optimizer [default: adam]
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerArg>,
    /// Base learning rate [default: 0.002 for adam, 0.05 for sgd]
    #[arg(long, allow_negative_numbers = true, value_parser = parse_rate)]
    pub lr: Option<f32>,
    /// SGD momentum [default: 0.9]
    #[arg(long, allow_negative_numbers = true, value_parser = parse_unit)]
    pub momentum: Option<f32>,
    /// Decoupled weight decay [default: 0]
    #[arg(long, allow_negative_numbers = true, value_parser = parse_unit)]
    pub weight_decay: Option<f32>,
    /// Learning-rate schedule over the run [default: cosine]
    #[arg(long, value_enum)]
    pub schedule: Option<ScheduleArg>,
    /// Seed of the initial weights and the shuffling [default: 1]
    #[arg(long)]
    pub seed: Option<u64>,
    #[command(flatten)]
    pub device: DeviceArg,
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
    /// Images of single digits
    #[arg(required = true, value_name = "IMAGE")]
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

/// Hidden widths as given (a newtype so clap keeps the list whole).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hidden(pub Vec<usize>);

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OptimizerArg {
    Adam,
    Sgd,
}

impl From<OptimizerArg> for OptimizerKind {
    fn from(o: OptimizerArg) -> Self {
        match o {
            OptimizerArg::Adam => OptimizerKind::Adam,
            OptimizerArg::Sgd => OptimizerKind::Sgd,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ScheduleArg {
    Constant,
    Step,
    Cosine,
}

impl From<ScheduleArg> for Schedule {
    fn from(s: ScheduleArg) -> Self {
        match s {
            ScheduleArg::Constant => Schedule::Constant,
            ScheduleArg::Step => Schedule::Step,
            ScheduleArg::Cosine => Schedule::Cosine,
        }
    }
}

fn parse_hidden(s: &str) -> Result<Hidden, String> {
    let widths = s
        .split(',')
        .map(|w| match w.trim().parse::<usize>() {
            Ok(n) if (1..=gpumlp::model::MAX_HIDDEN).contains(&n) => Ok(n),
            Ok(n) => Err(format!("layer width {n} must be between 1 and {}", gpumlp::model::MAX_HIDDEN)),
            Err(_) => Err(format!("'{w}' is not a layer width; expected comma-separated positive integers like 512,256")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    // The layer count and the total size are checked here too, so the error names the flag.
    gpumlp::Architecture::mlp(&widths).map_err(|e| e.to_string())?;
    Ok(Hidden(widths))
}

fn parse_float(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(format!("'{s}' is not a finite number")),
    }
}

fn parse_rate(s: &str) -> Result<f32, String> {
    match parse_float(s)? {
        v if v > 0.0 && v <= 10.0 => Ok(v),
        v => Err(format!(
            "{v} is out of range: a learning rate must be in (0, 10]"
        )),
    }
}

fn parse_unit(s: &str) -> Result<f32, String> {
    match parse_float(s)? {
        v if (0.0..1.0).contains(&v) => Ok(v),
        v => Err(format!("{v} is out of range: it must be in [0, 1)")),
    }
}

fn parse_device(s: &str) -> Result<Device, String> {
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
