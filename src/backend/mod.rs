//! The seam between the training loop and the hardware.
//!
//! A [`Backend`] owns the flat parameter buffer (laid out by [`ParamLayout`]), its gradient and
//! the optimizer moments, and the datasets uploaded once. The training loop only hands it batch
//! indices and step hyper-parameters; loss and accuracy accumulate inside the backend and are
//! read with [`Backend::take_stats`] once per epoch, so a GPU backend never has to stop
//! for a readback per step. `forward`/`backward`/`step` are separate so one test body can compare
//! logits, gradients and updates across backends.

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

/// Per-step values the optimizer needs beyond its configuration.
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

    /// Makes `data` the dataset that batches of `split` are drawn from.
    fn upload(&mut self, split: Split, data: &Dataset) -> Result<()>;
    /// Number of samples uploaded for `split`.
    fn len(&self, split: Split) -> usize;

    fn set_params(&mut self, params: &[f32]);
    fn params(&mut self) -> Vec<f32>;
    /// Optimizer moments: SGD's velocity in `m` (and `v` unused), or Adam's `m` and `v`.
    fn set_optimizer_state(&mut self, m: &[f32], v: &[f32]);
    fn optimizer_state(&mut self) -> (Vec<f32>, Vec<f32>);

    /// Forward pass over rows `indices` of `split`, keeping what backward needs; adds the batch's
    /// loss and correct count to the running [`Stats`] of `split`.
    fn forward(&mut self, split: Split, indices: &[u32]) -> Result<()>;
    /// Gradient of the batch's mean loss for the last forward, overwriting the gradient buffer.
    fn backward(&mut self);
    /// One optimizer update from the gradient buffer.
    fn step(&mut self, opt: &OptimizerConfig, hyper: StepHyper);

    /// The last forward's logits, `[batch, 10]` row-major.
    fn logits(&mut self) -> Vec<f32>;
    /// The gradient buffer, laid out like the parameters.
    fn grads(&mut self) -> Vec<f32>;
    /// Returns the stats accumulated for `split` since the last call and starts afresh.
    fn take_stats(&mut self, split: Split) -> Stats;

    /// [`Backend::take_stats`] without blocking: the GPU backend awaits its readback, which is
    /// the only way in a browser. Natively, and on the CPU, it is the synchronous call.
    fn take_stats_async(&mut self, split: Split) -> LocalFuture<'_, Stats> {
        let stats = self.take_stats(split);
        Box::pin(std::future::ready(stats))
    }

    /// [`Backend::params`] without blocking (see `take_stats_async`).
    fn params_async(&mut self) -> LocalFuture<'_, Vec<f32>> {
        let params = self.params();
        Box::pin(std::future::ready(params))
    }

    /// [`Backend::evaluate`] without blocking (see `take_stats_async`).
    fn evaluate_async(&mut self, split: Split) -> LocalFuture<'_, Result<Stats>> {
        Box::pin(async move {
            self.take_stats_async(split).await;
            let indices: Vec<u32> = (0..self.len(split) as u32).collect();
            for chunk in indices.chunks(EVAL_BATCH) {
                self.forward(split, chunk)?;
            }
            Ok(self.take_stats_async(split).await)
        })
    }

    /// One epoch: batches of `batch` consecutive entries of `order` (the last may be short),
    /// step `i` with `hypers[i]`. `progress(done, total)` follows the steps. A GPU backend
    /// encodes the whole epoch without waiting; this default runs [`Backend::train_step`]s.
    fn train_epoch(
        &mut self,
        order: &[u32],
        batch: usize,
        opt: &OptimizerConfig,
        hypers: &[StepHyper],
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<()> {
        for (i, (indices, hyper)) in order.chunks(batch).zip(hypers).enumerate() {
            self.train_step(indices, opt, *hyper)?;
            progress(i + 1, hypers.len());
        }
        Ok(())
    }

    /// One training step on rows `indices` of the training set.
    fn train_step(
        &mut self,
        indices: &[u32],
        opt: &OptimizerConfig,
        hyper: StepHyper,
    ) -> Result<()> {
        self.forward(Split::Train, indices)?;
        self.backward();
        self.step(opt, hyper);
        Ok(())
    }

    /// Loss and accuracy over all of `split`, in fixed chunks so the result never depends on
    /// who asks. Stats pending for `split` are discarded first.
    fn evaluate(&mut self, split: Split) -> Result<Stats> {
        self.take_stats(split);
        let indices: Vec<u32> = (0..self.len(split) as u32).collect();
        for chunk in indices.chunks(EVAL_BATCH) {
            self.forward(split, chunk)?;
        }
        Ok(self.take_stats(split))
    }
}
