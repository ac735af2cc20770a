//! The seam between the training loop and the hardware.
//!
//! A [`Backend`] is built for one architecture. It owns the flat parameter buffer (laid out by
//! [`ParamLayout`]), its gradient, the datasets uploaded once and, once an optimizer is attached
//! for training, the optimizer's named state buffers. Training, data-parallel ranks, evaluation
//! and the tests all speak the same step vocabulary: `forward`, `backward`, `update`, `read`,
//! `write`. The training loop hands a backend spans of steps (batch order and learning rates)
//! and never waits for it: loss and accuracy accumulate inside the backend and are read with
//! [`Backend::take_stats`] once per epoch. Everything read back from a backend comes through one
//! asynchronous path (a GPU readback cannot block in a browser); the program blocks on those
//! futures at its edge, the page awaits them.

pub mod cpu;
pub mod gpu;
mod parallel;

use crate::dataset::Dataset;
use crate::error::Result;
use crate::model::ParamLayout;
use crate::optim::OptimizerConfig;
use serde::Serialize;

pub use cpu::{argmax, CpuBackend};
/// Threads the CPU backend splits its work over.
pub use parallel::threads as cpu_threads;

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

impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, other: Stats) {
        self.loss_sum += other.loss_sum;
        self.correct += other.correct;
        self.count += other.count;
    }
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

/// Checks that `data` fits the network `arch` before a backend takes it: its features are the
/// first layer's width and every label is one of the last layer's classes.
pub(crate) fn check_upload(
    arch: &crate::model::Architecture,
    split: Split,
    data: &crate::Dataset,
) -> Result<()> {
    let (inputs, classes) = (arch.sizes[0], arch.sizes[arch.layers()]);
    if data.width != inputs {
        return Err(crate::Error::Config(format!(
            "the {split:?} set's samples have {} features, the network reads {inputs}",
            data.width
        )));
    }
    if data.classes() > classes {
        return Err(crate::Error::Config(format!(
            "the {split:?} set has labels up to {}, the network has {classes} classes",
            data.classes() - 1
        )));
    }
    Ok(())
}

/// One of the buffers a backend holds, read and written through [`Backend::read`] and
/// [`Backend::write`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tensor {
    /// The flat parameter buffer (`layout().len` values).
    Params,
    /// The gradient buffer, laid out like the parameters.
    Grads,
    /// The gradient buffer as the backend keeps it: as long as `Grads`, its values in the
    /// backend's own order (the CPU backend keeps each layer's weights transposed). For work
    /// element by element that writes the result back, such as data-parallel ranks summing
    /// their gradients, without paying twice for a conversion to the parameter layout.
    GradsAsKept,
    /// The attached optimizer's state buffer `k` (its name is `state_names()[k]`), laid out
    /// like the parameters.
    State(usize),
    /// The last forward's logits, `[rows, classes]` row-major (read only).
    Logits,
}

/// Consecutive training steps: step `i` trains on the rows `order[i * batch..]` of the training
/// set (the last batch may be short) with `hypers[i]`. The one place batches are cut into steps.
#[derive(Clone, Copy, Debug)]
pub struct Span<'a> {
    order: &'a [u32],
    batch: usize,
    hypers: &'a [StepHyper],
}

/// One step of a [`Span`].
#[derive(Clone, Copy, Debug)]
pub struct Step<'a> {
    /// Where its rows start in the span's order.
    pub offset: usize,
    pub rows: &'a [u32],
    pub hyper: StepHyper,
}

impl<'a> Span<'a> {
    /// Steps of `batch` rows over `order`, one per value in `hypers`.
    pub fn new(order: &'a [u32], batch: usize, hypers: &'a [StepHyper]) -> Result<Self> {
        if batch == 0 || hypers.is_empty() || order.len().div_ceil(batch) != hypers.len() {
            return Err(crate::Error::Config(format!(
                "a span of {} steps cannot cut {} rows into batches of {batch}",
                hypers.len(),
                order.len()
            )));
        }
        Ok(Span {
            order,
            batch,
            hypers,
        })
    }

    /// Steps `from..to` of the span.
    pub fn steps_between(&self, from: usize, to: usize) -> Span<'a> {
        let to = to.min(self.hypers.len());
        let from = from.min(to);
        Span {
            order: &self.order[(from * self.batch).min(self.order.len())
                ..(to * self.batch).min(self.order.len())],
            batch: self.batch,
            hypers: &self.hypers[from..to],
        }
    }

    pub fn steps(&self) -> impl Iterator<Item = Step<'a>> + 'a {
        let batch = self.batch;
        self.order
            .chunks(batch)
            .zip(self.hypers)
            .enumerate()
            .map(move |(i, (rows, &hyper))| Step {
                offset: i * batch,
                rows,
                hyper,
            })
    }

    pub fn len(&self) -> usize {
        self.hypers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hypers.is_empty()
    }

    /// Every row of every step, in order.
    pub fn order(&self) -> &'a [u32] {
        self.order
    }

    /// The rows of a full step (the largest batch of the span).
    pub fn batch(&self) -> usize {
        self.batch.min(self.order.len())
    }
}

/// The seam: one step vocabulary that both backends speak alike. The required methods are the
/// parts of a step (forward, backward, update) and the buffers read and written; a span of
/// steps and an evaluation are built from them once, here. Each backend overrides
/// [`Backend::train`] alone, to run a span its fastest way with the same results: the GPU
/// encodes it with no readback, the CPU runs it on a team of spinning threads, each step's
/// update made by the next step's forward.
pub trait Backend {
    fn device(&self) -> DeviceInfo;
    fn layout(&self) -> &ParamLayout;

    /// Makes `data` the dataset that rows of `split` are drawn from.
    fn upload(&mut self, split: Split, data: &Dataset) -> Result<()>;

    /// Attaches `optimizer` for training, its state buffers zero (set them with
    /// [`Backend::write`] to resume). Evaluation and inference need none.
    fn attach_optimizer(&mut self, optimizer: &OptimizerConfig) -> Result<()>;

    /// Replaces `tensor`'s values (`layout().len` of them).
    fn write(&mut self, tensor: Tensor, values: &[f32]) -> Result<()>;
    /// Reads `tensor` back (the one way anything comes back from a backend).
    fn read(&mut self, tensor: Tensor) -> LocalFuture<'_, Result<Vec<f32>>>;

    /// Forward pass over rows `rows` of `split`, keeping what backward needs; adds the rows' loss
    /// and correct count to the running stats of `split`. The loss gradient that backward starts
    /// from is the rows' summed loss divided by `mean_over`: their own count for their mean
    /// loss, a global batch's size for a data-parallel rank's share of it.
    fn forward(&mut self, split: Split, rows: &[u32], mean_over: usize) -> Result<()>;
    /// Gradient of the last forward's loss (scaled as it said), overwriting the gradient buffer.
    fn backward(&mut self) -> Result<()>;
    /// One update of the attached optimizer from the gradient buffer.
    fn update(&mut self, hyper: StepHyper) -> Result<()>;

    /// Returns the stats accumulated for `split` since the last call and starts afresh.
    fn take_stats(&mut self, split: Split) -> LocalFuture<'_, Result<Stats>>;

    /// Trains the steps of `span` (forward, backward, update each); `progress(done)` follows
    /// them as they are handed to the device.
    fn train(&mut self, span: Span<'_>, progress: &mut dyn FnMut(usize)) -> Result<()> {
        for (i, step) in span.steps().enumerate() {
            self.forward(Split::Train, step.rows, step.rows.len())?;
            self.backward()?;
            self.update(step.hyper)?;
            progress(i + 1);
        }
        Ok(())
    }

    /// Loss and accuracy over the `len` samples of `split`, in fixed chunks of [`EVAL_BATCH`]
    /// so the result never depends on who asks. Stats pending for `split` are discarded first.
    fn evaluate(&mut self, split: Split, len: usize) -> LocalFuture<'_, Result<Stats>> {
        Box::pin(async move {
            self.take_stats(split).await?;
            let rows: Vec<u32> = (0..len as u32).collect();
            for chunk in rows.chunks(EVAL_BATCH) {
                self.forward(split, chunk, chunk.len())?;
            }
            self.take_stats(split).await
        })
    }
}

/// Checks a write of `values` to `tensor`: a buffer the backend has (state only with an
/// optimizer attached, logits never), and one model's worth of values.
pub(crate) fn check_write(
    tensor: Tensor,
    values: &[f32],
    layout: &ParamLayout,
    optimizer: Option<&OptimizerConfig>,
) -> Result<()> {
    let what = match tensor {
        Tensor::Params => "the parameters".to_string(),
        Tensor::Grads | Tensor::GradsAsKept => "the gradient".to_string(),
        Tensor::Logits => return Err(crate::Error::Config("the logits cannot be written".into())),
        Tensor::State(k) => {
            let opt = optimizer.ok_or_else(no_optimizer)?;
            let names = opt.kind.state_names();
            let name = names.get(k).ok_or_else(|| {
                crate::Error::Config(format!(
                    "{} keeps {} state buffers ({}), not a buffer {k}",
                    opt.kind,
                    names.len(),
                    names.join(", ")
                ))
            })?;
            format!("optimizer state {name}")
        }
    };
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

/// The error for a backward or a logits read with no forward to follow.
pub(crate) fn no_forward() -> crate::Error {
    crate::Error::Config(
        "backward and the logits need a forward first (since the last upload)".into(),
    )
}

/// The error for an update or a state access with no optimizer attached.
pub(crate) fn no_optimizer() -> crate::Error {
    crate::Error::Config("no optimizer is attached: training needs one (attach_optimizer)".into())
}

/// A future that is already resolved (what the CPU backend returns).
pub(crate) fn ready<'a, T: 'a>(value: T) -> LocalFuture<'a, T> {
    Box::pin(std::future::ready(value))
}
