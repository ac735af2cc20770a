//! gpumlp: train a multilayer perceptron on labelled data: MNIST-style images, NumPy arrays, CSV
//! tables.
//!
//! The core crate takes bytes and configurations, never paths or terminals, so the same code runs
//! in the command-line program (`native/`) and in the browser (`web/`):
//! - [`idx`], [`numpy`], [`csv_table`] and [`dataset`]: the data formats, each checked before
//!   anything is allocated from what a file claims; samples of any width and class count; the
//!   built-in sample of 10,000 real MNIST digits;
//! - [`data_spec`]: what the data makes of a model's ends (features, classes, names), stored in
//!   its checkpoint;
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
pub mod csv_table;
pub mod data_spec;
pub mod dataset;
pub mod error;
pub mod idx;
pub mod inference;
pub mod model;
pub mod numpy;
pub mod optim;
pub mod preprocess;
pub mod train;

pub use backend::{Backend, CpuBackend, DeviceInfo, Span, Split, Stats, Tensor};
pub use checkpoint::Checkpoint;
pub use collective::{Collective, SingleProcess};
pub use config::{Precision, TrainConfig};
pub use data_spec::{DataSpec, Input};
pub use dataset::{Dataset, Features, Splits};
pub use error::{Error, Result, Setting};
pub use model::{Activation, Architecture, ParamLayout};
pub use optim::{OptimizerConfig, OptimizerKind, Schedule};
pub use train::Trainer;
