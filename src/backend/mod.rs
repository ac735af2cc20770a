//! The seam between the training loop and the hardware.
//!
//! A [`Backend`] is built for one architecture and one optimizer. It owns the flat parameter
//! buffer (laid out by [`ParamLayout`]), its gradient, the optimizer's named state buffers and the
//! datasets uploaded once. The training loop hands it spans of steps (batch order and learning
//! rates) and never waits for it: loss and accuracy accumulate inside the backend and are read
//! with [`Backend::take_stats`] once per epoch. Everything read back from a backend comes through
//! one asynchronous path (a GPU readback cannot block in a browser); the program blocks on those
//! futures at its edge, the page awaits them.
//!
//! [`Inspect`] opens one training step into its parts (forward, backward, update) for tests
//! that compare backends part by part; training never uses it.

pub mod cpu;
pub mod gpu;
mod parallel;

use crate::dataset::Dataset;
use crate::error::Result;
use crate::model::ParamLayout;
use crate::optim::OptimizerConfig;
use serde::Serialize;

pub use cpu::{argmax, CpuBackend};

/// A boxed future that need not be `Send` (wgpu's futures in the browser are not).
pub type LocalFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + 'a>>;

/// Which uploaded dataset a batch is drawn from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

/// Batch size used for evaluation (it has no effect on the result, only on memory and speed).
pub const EVAL_BATCH: usize = 1000;

/// What a backend runs on, as reported to users and in `--json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeviceInfo {
    /// E.g. "CPU (2 threads)" or the GPU adapter's name.
    pub name: String,
    /// "cpu", "discrete-gpu", "integrated-gpu", "software-gpu".
    pub kind: String,
    /// "rayon" for the CPU backend; "vulkan", "metal", "dx12", "webgpu" for GPUs.
    pub backend: String,
}

/// Summed loss and correct predictions over the samples forwarded since the last `take_stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Stats {
    pub loss_sum: f64,
    pub correct: u64,
    pub count: u64,
}

impl Stats {
    /// Mean cross-entropy.
    pub fn loss(&self) -> f64 {
        self.loss_sum / self.count.max(1) as f64
    }
    /// Fraction classified correctly, in [0, 1].
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.count.max(1) as f64
    }
}

/// What the trainer tells the backend about one step beyond its batch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepHyper {
    /// This step's learning rate (after the schedule).
    pub lr: f32,
    /// 1-based count of optimizer steps taken, including this one (Adam's bias correction).
    pub t: u64,
}

/// Checks a batch of `indices` into a set of `len` samples (shared by the backends).
pub(crate) fn check_batch(split: Split, indices: &[u32], len: usize) -> Result<()> {
    if indices.is_empty() {
        return Err(crate::Error::Config(
            "a batch needs at least one sample".into(),
        ));
    }
    if let Some(&bad) = indices.iter().find(|&&i| i as usize >= len) {
        return Err(crate::Error::Config(format!(
            "sample index {bad} is past the {len} samples of the {split:?} set"
        )));
    }
    Ok(())
}

pub trait Backend {
    fn device(&self) -> DeviceInfo;
    fn layout(&self) -> &ParamLayout;
    /// The optimizer this backend was built for (its state buffers are
    /// `optimizer().kind.state_names()`).
    fn optimizer(&self) -> &OptimizerConfig;

    /// Makes `data` the dataset that batches of `split` are drawn from.
    fn upload(&mut self, split: Split, data: &Dataset) -> Result<()>;
    /// Number of samples uploaded for `split`.
    fn len(&self, split: Split) -> usize;

    /// Replaces the parameters (`layout().len` values).
    fn set_params(&mut self, params: &[f32]) -> Result<()>;
    fn params(&mut self) -> LocalFuture<'_, Result<Vec<f32>>>;
    /// Replaces the optimizer state: one buffer of `layout().len` values per state name.
    fn set_state(&mut self, state: &[Vec<f32>]) -> Result<()>;
    fn state(&mut self) -> LocalFuture<'_, Result<Vec<Vec<f32>>>>;

    /// Trains `steps.len()` steps without waiting for the device: step `i` on the rows
    /// `order[i * batch..]` of the training set (the last batch may be short) with `steps[i]`.
    /// `progress(done)` follows the steps as they are handed to the device.
    fn train(
        &mut self,
        order: &[u32],
        batch: usize,
        steps: &[StepHyper],
        progress: &mut dyn FnMut(usize),
    ) -> Result<()>;

    /// Forward and backward over rows `rows` of the training set: the gradient of their summed
    /// loss divided by `mean_over` (the global batch they are a share of), read back (stats
    /// accumulate as in `train`). With [`Backend::apply_gradient`] this is one step taken in two
    /// halves: data-parallel ranks sum their shares' gradients between, which makes the mean
    /// over the global batch.
    fn gradient(&mut self, rows: &[u32], mean_over: usize) -> LocalFuture<'_, Result<Vec<f32>>>;
    /// One optimizer update with `grads` (laid out like the parameters) as the gradient.
    fn apply_gradient(&mut self, grads: &[f32], hyper: StepHyper) -> Result<()>;

    /// Returns the stats accumulated for `split` since the last call and starts afresh.
    fn take_stats(&mut self, split: Split) -> LocalFuture<'_, Result<Stats>>;

    /// Loss and accuracy over all of `split`, in fixed chunks of [`EVAL_BATCH`] so the result
    /// never depends on who asks. Stats pending for `split` are discarded first.
    fn evaluate(&mut self, split: Split) -> LocalFuture<'_, Result<Stats>>;
}

/// One training step taken apart, for tests that compare backends (logits, every gradient,
/// one update) and for the gradient check. Training goes through [`Backend::train`] alone.
pub trait Inspect: Backend {
    /// Forward pass over rows `indices` of `split`, keeping what backward needs; adds the batch's
    /// loss and correct count to the running stats of `split`.
    fn forward(&mut self, split: Split, indices: &[u32]) -> Result<()>;
    /// Gradient of the last forward batch's mean loss, overwriting the gradient buffer.
    fn backward(&mut self) -> Result<()>;
    /// One optimizer update from the gradient buffer.
    fn update(&mut self, hyper: StepHyper) -> Result<()>;
    /// The last forward's logits, `[batch, 10]` row-major.
    fn logits(&mut self) -> LocalFuture<'_, Result<Vec<f32>>>;
    /// The gradient buffer, laid out like the parameters.
    fn grads(&mut self) -> LocalFuture<'_, Result<Vec<f32>>>;
}

/// Checks that `values` holds one model's worth of parameters (or one state buffer).
pub(crate) fn check_len(what: &str, values: &[f32], layout: &ParamLayout) -> Result<()> {
    if values.len() == layout.len {
        Ok(())
    } else {
        Err(crate::Error::Config(format!(
            "{what} holds {} values, the model has {} parameters",
            values.len(),
            layout.len
        )))
    }
}

/// Checks an optimizer state: one buffer per name of the optimizer, each as long as the model.
pub(crate) fn check_state(
    state: &[Vec<f32>],
    opt: &OptimizerConfig,
    layout: &ParamLayout,
) -> Result<()> {
    let names = opt.kind.state_names();
    if state.len() != names.len() {
        return Err(crate::Error::Config(format!(
            "{} keeps {} state buffers ({}), {} were given",
            opt.kind,
            names.len(),
            names.join(", "),
            state.len()
        )));
    }
    for (name, buffer) in names.iter().zip(state) {
        check_len(&format!("optimizer state {name}"), buffer, layout)?;
    }
    Ok(())
}

/// A future that is already resolved (what the CPU backend returns).
pub(crate) fn ready<'a, T: 'a>(value: T) -> LocalFuture<'a, T> {
    Box::pin(std::future::ready(value))
}
