//! gpumlp: train a multilayer perceptron on MNIST-style data.
//!
//! The core crate takes bytes and configurations, never paths or terminals, so the same code runs
//! in the command-line program (`native/`) and in the browser (`web/`):
//! - [`idx`] and [`dataset`]: the IDX format, checked before anything is allocated, and the
//!   built-in sample of 10,000 real MNIST digits;
//! - [`model`]: the architecture and the flat parameter buffer's offsets table;
//! - [`activation`]: the hidden layers' activations, each defined once for the CPU and the GPU;
//! - [`config`]: a training run's settings, parsed and checked once for every front end;
//! - [`backend`]: the `Backend` seam, the multi-threaded CPU backend and the wgpu/WGSL GPU backend;
//! - [`optim`], [`train`]: optimizers, schedules and the training loop;
//! - [`collective`]: what the training loop needs from the other ranks of a data-parallel run;
//! - [`checkpoint`]: safetensors checkpoints that resume exactly;
//! - [`inference`]: class probabilities from a trained model;
//! - [`preprocess`]: turning a photo or drawing of a digit into an MNIST-like 28x28 image.

pub mod activation;
pub mod backend;
pub mod checkpoint;
pub mod collective;
pub mod config;
pub mod dataset;
pub mod error;
pub mod idx;
pub mod inference;
pub mod model;
pub mod optim;
pub mod preprocess;
pub mod train;

pub use backend::{Backend, CpuBackend, DeviceInfo, Span, Split, Stats, Tensor};
pub use checkpoint::Checkpoint;
pub use collective::{Collective, SingleProcess};
pub use config::TrainConfig;
pub use dataset::{Dataset, Splits};
pub use error::{Error, Result, Setting};
pub use model::{Activation, Architecture, ParamLayout};
pub use optim::{OptimizerConfig, OptimizerKind, Schedule};
pub use train::Trainer;
