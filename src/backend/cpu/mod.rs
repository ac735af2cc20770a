//! The multi-threaded CPU backend: the fallback where no GPU is, and the reference the GPU
//! backend is tested against.
//!
//! Dimension legend: `B` batch, `I` a layer's inputs, `O` its outputs. Per layer `l`, with the
//! weights kept transposed, `Wt = W^T` `[I,O]` (the parameter layout's `W` is `[O,I]`; read and
//! write convert):
//!   forward   `Z = A @ Wt + b`             A `[B,I]`, Z `[B,O]`; `A' = f(Z)`
//!   backward  `dWt = A^T @ dZ`  `[I,O]`;  `db = sum_rows(dZ)`  `[O]`
//!             `dA = dZ @ Wt^T`  `[B,I]`;  `dZ_prev = dA * f'` (not needed for layer 0)
//! with `f` the architecture's [`Activation`](crate::model::Activation) (`f'` read off `A'`, or
//! off `Z`, kept for that, where the activation needs it) and at the top
//! `dZ = (softmax(Z) - onehot(y)) / mean_over`: `mean_over` is the batch for the gradient of its
//! mean cross-entropy, a global batch for a data-parallel rank's share of it.
//! GEMMs go to the `gemm` crate, which measured fastest of the GEMM crates on these shapes
//! (see README), on blocks of the output run in parallel (on rayon's threads, or on the
//! spinning team of `team.rs` for a span of steps; none on wasm32: see `parallel.rs`); the work
//! around each product rides on its blocks while they are in cache (`matmul`, `fused`): the
//! bias and the activation in forward, the activation's derivative on the input gradient, the
//! bias gradient beside each weight gradient, and the optimizer's update on the first layer's
//! weight gradient (cut into blocks of whole rows for that; the other products into column
//! blocks). Every element is computed by one fixed sequence of operations whatever the thread
//! count (`matmul` says why), every thread flushing subnormals alike (`subnormals` says why
//! they are flushed), so a seed gives bit-identical results run after run.
//!
//! Why `Wt`: `gemm` runs these products faster with it. Single-threaded, on a 2-core AVX-512
//! EPYC (2026-12-02), B1's five large products took 1.48 ms instead of 1.60 (forward layer 2:
//! 157 us instead of 250, whose `[O,I]` operand `gemm` reads at a power-of-two stride).

mod aligned;
pub mod clock;
mod fused;
mod matmul;
mod subnormals;
mod team;

pub use matmul::matmul_row_major;

use super::parallel::*;
use super::{ready, Backend, DeviceInfo, LocalFuture, Split, Stats, StepHyper, Tensor};
use crate::data_spec::Input;
use crate::dataset::Dataset;
use crate::error::Result;
use crate::model::{Architecture, ParamLayout};
use crate::optim::{adam_update, sgd_update, OptimizerConfig, OptimizerKind, StepScalars};
use aligned::AlignedVec;
use matmul::{block_count, matmul_blocks, product, row_product, Block, Disjoint, Mat};
use team::{Exec, Parts};

/// Parameters per parallel chunk of the optimizer update: big enough to amortise a task.
const UPDATE_CHUNK: usize = 1 << 15;

pub struct CpuBackend {
    arch: Architecture,
    layout: ParamLayout,
    params: AlignedVec,
    grads: AlignedVec,
    /// The optimizer attached for training, and its state buffers (one per
    /// `kind.state_names()`).
    optimizer: Option<(OptimizerConfig, Vec<AlignedVec>)>,
    train: Dataset,
    test: Dataset,
    /// `acts[0]` is the normalised input batch, `acts[l]` layer `l-1`'s output after the
    /// activation, and the last one the logits; each `[B, sizes[l]]`.
    acts: Vec<AlignedVec>,
    /// `pre[l]` layer `l-1`'s output before the activation, kept for hidden layers only where
    /// the activation's derivative needs it (empty otherwise).
    pre: Vec<AlignedVec>,
    /// Softmax of the logits, `[B, classes]`.
    probs: AlignedVec,
    /// Gradients of the loss with respect to each layer's pre-activation `Z`, `[B, sizes[l+1]]`.
    dz: Vec<AlignedVec>,
    /// Labels of the last forward batch.
    labels: Vec<u32>,
    /// Each row's loss and hit in the last forward.
    row_stats: Vec<RowStats>,
    /// The next training batch, gathered during the last backward of a span.
    next: Staged,
    batch: usize,
    /// What the last forward's loss gradient is divided by (see [`Backend::forward`]).
    mean_over: usize,
    /// The split the last forward read, until that split is uploaded again.
    forwarded: Option<Split>,
    stats: [Stats; 2],
}

impl CpuBackend {
    /// A backend for `arch` with zero parameters (set them with [`Backend::write`]).
    pub fn new(arch: &Architecture) -> Self {
        let layout = ParamLayout::new(arch);
        let n = layout.len;
        let empty = Dataset::empty(Input::Bytes, arch.sizes[0]);
        CpuBackend {
            arch: arch.clone(),
            layout,
            params: AlignedVec::zeros(n),
            grads: AlignedVec::zeros(n),
            optimizer: None,
            train: empty.clone(),
            test: empty,
            acts: vec![AlignedVec::default(); arch.sizes.len()],
            pre: vec![AlignedVec::default(); arch.sizes.len()],
            probs: AlignedVec::default(),
            dz: vec![AlignedVec::default(); arch.layers()],
            labels: Vec::new(),
            row_stats: Vec::new(),
            next: Staged::default(),
            batch: 0,
            mean_over: 1,
            forwarded: None,
            stats: [Stats::default(); 2],
        }
    }

    fn data(&self, split: Split) -> &Dataset {
        match split {
            Split::Train => &self.train,
            Split::Test => &self.test,
        }
    }

    /// Sizes every activation buffer for a batch of `b` (reallocating only when `b` changes).
    fn resize(&mut self, b: usize) {
        if self.batch == b {
            return;
        }
        self.batch = b;
        for (l, a) in self.acts.iter_mut().enumerate() {
            a.resize(b * self.arch.sizes[l]);
        }
        if self.arch.activation.needs_pre_activation() {
            let hidden = 1..self.arch.layers();
            for (l, z) in self.pre.iter_mut().enumerate() {
                z.resize(if hidden.contains(&l) {
                    b * self.arch.sizes[l]
                } else {
                    0
                });
            }
        }
        for (l, d) in self.dz.iter_mut().enumerate() {
            d.resize(b * self.arch.sizes[l + 1]);
        }
        self.probs.resize(b * self.classes());
        self.row_stats.resize(b, RowStats::default());
    }
}

/// One product of a training step on this backend: `m x k x n`, its operands read transposed
/// or not (`a_t`, `b_t`) as [`matmul_row_major`] takes them.
pub struct StepProduct {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub a_t: bool,
    pub b_t: bool,
    /// Its layer, from 0.
    pub layer: usize,
    /// "forward", "weight grad" or "input grad".
    pub what: &'static str,
}

/// The products of one training step of the network `sizes` on a batch of `b`, their operands
/// laid out as the step lays them out (what `gpumlp bench` times): the forwards, then the
/// weight gradients, then the input gradients (none for the first layer).
pub fn step_products(sizes: &[usize], b: usize) -> Vec<StepProduct> {
    let layers = || sizes.windows(2).map(|w| (w[0], w[1])).enumerate();
    let product = |layer, (m, k, n), (a_t, b_t), what| StepProduct {
        m,
        k,
        n,
        a_t,
        b_t,
        layer,
        what,
    };
    // Z = A @ Wt; dWt = A^T @ dZ; dA = dZ @ Wt^T.
    let forward = layers().map(|(l, (i, o))| product(l, (b, i, o), (false, false), "forward"));
    let weight = layers().map(|(l, (i, o))| product(l, (i, b, o), (true, false), "weight grad"));
    let input = layers()
        .skip(1)
        .map(|(l, (i, o))| product(l, (b, o, i), (false, true), "input grad"));
    forward.chain(weight).chain(input).collect()
}

/// Index of the largest value (the first one on ties).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best
}

/// Softmax of each row of `logits` (`classes` wide) into `probs`, and each row's cross-entropy
/// against `labels` and whether its largest logit is the label's, into `rows`.
fn softmax_xent_forward(
    logits: &[f32],
    classes: usize,
    labels: &[u32],
    probs: &mut [f32],
    rows: &mut [RowStats],
) {
    let each = logits
        .chunks_exact(classes)
        .zip(probs.chunks_exact_mut(classes))
        .zip(labels)
        .zip(rows);
    for (((z, p), &y), row) in each {
        let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f32;
        for (p, &z) in p.iter_mut().zip(z) {
            *p = (z - max).exp();
            sum += *p;
        }
        for p in p.iter_mut() {
            *p /= sum;
        }
        *row = RowStats {
            // -log softmax(z)_y = log(sum exp(z - max)) - (z_y - max), stable for any logits.
            loss: (sum.ln() - (z[y as usize] - max)) as f64,
            hit: argmax(z) == y as usize,
        };
    }
}

/// `z = a @ weight + bias` for a layer of `inp` inputs and `out` outputs (`weight` its `Wt`,
/// `[inp, out]`), over as many rows as `z` holds, per column block of `z`: the product, the
/// bias added to the block, then `after(block)`, while the block is in cache. (The bias added
/// after the product rather than copied in for the product to add onto: one pass over the
/// block instead of two, and the block's first write is the product's.)
fn affine(
    exec: &Exec,
    z: &mut [f32],
    a: &[f32],
    weight: &[f32],
    bias: &[f32],
    (inp, out): (usize, usize),
    after: impl Fn(&mut Block) + Sync,
) {
    let rows = z.len() / out;
    matmul_blocks(
        exec,
        z,
        Mat::new(a, rows, inp),
        Mat::new(weight, inp, out),
        |block| {
            let bias = &bias[block.c0..block.c1];
            for r in 0..block.rows {
                fused::add(block.row(r), bias);
            }
            after(block)
        },
    )
}

/// One row's cross-entropy, and whether the class it predicts is its label.
#[derive(Clone, Copy, Default)]
struct RowStats {
    loss: f64,
    hit: bool,
}

impl CpuBackend {
    /// The last forward's logits, `[batch, classes]` row-major.
    pub(crate) fn output(&self) -> &[f32] {
        &self.acts[self.arch.layers()]
    }

    fn classes(&self) -> usize {
        self.arch.sizes[self.arch.layers()]
    }
}

impl Backend for CpuBackend {
    fn device(&self) -> DeviceInfo {
        DeviceInfo {
            name: format!("CPU ({} threads)", threads()),
            kind: "cpu".into(),
            backend: "rayon".into(),
        }
    }

    fn layout(&self) -> &ParamLayout {
        &self.layout
    }

    fn upload(&mut self, split: Split, data: &Dataset) -> Result<()> {
        super::check_upload(&self.arch, split, data)?;
        match split {
            Split::Train => self.train = data.clone(),
            Split::Test => self.test = data.clone(),
        }
        if self.forwarded == Some(split) {
            self.forwarded = None;
        }
        if split == Split::Train {
            self.next.current = false;
        }
        Ok(())
    }

    fn attach_optimizer(&mut self, optimizer: &OptimizerConfig) -> Result<()> {
        let state = vec![AlignedVec::zeros(self.layout.len); optimizer.kind.state_names().len()];
        self.optimizer = Some((*optimizer, state));
        Ok(())
    }

    fn write(&mut self, tensor: Tensor, values: &[f32]) -> Result<()> {
        super::check_write(
            tensor,
            values,
            &self.layout,
            self.optimizer.as_ref().map(|o| &o.0),
        )?;
        let target = match tensor {
            Tensor::Params => &mut self.params,
            Tensor::Grads | Tensor::GradsAsKept => &mut self.grads,
            Tensor::State(k) => &mut self.optimizer.as_mut().expect("checked").1[k],
            Tensor::Logits => unreachable!("refused by check_write"),
        };
        match tensor {
            Tensor::GradsAsKept => target.copy_from_slice(values),
            _ => relayout(&self.layout, values, target, true),
        }
        Ok(())
    }

    fn read(&mut self, tensor: Tensor) -> LocalFuture<'_, Result<Vec<f32>>> {
        ready(match tensor {
            Tensor::Params => Ok(in_layout(&self.layout, &self.params)),
            Tensor::Grads => Ok(in_layout(&self.layout, &self.grads)),
            Tensor::GradsAsKept => Ok(self.grads.to_vec()),
            Tensor::Logits => match self.forwarded {
                Some(_) => Ok(self.output().to_vec()),
                None => Err(super::no_forward()),
            },
            Tensor::State(k) => match &self.optimizer {
                Some((_, state)) if k < state.len() => Ok(in_layout(&self.layout, &state[k])),
                Some((opt, _)) => Err(crate::Error::Config(format!(
                    "{opt} keeps no state buffer {k}"
                ))),
                None => Err(super::no_optimizer()),
            },
        })
    }

    fn forward(&mut self, split: Split, indices: &[u32], mean_over: usize) -> Result<()> {
        let _flushed = subnormals::flushed();
        self.forward_on(&Exec::Pool, split, indices, mean_over)
    }

    fn backward(&mut self) -> Result<()> {
        let _flushed = subnormals::flushed();
        self.backward_on(&Exec::Pool, None, None)
    }

    fn update(&mut self, hyper: StepHyper) -> Result<()> {
        let _flushed = subnormals::flushed();
        self.update_on(&Exec::Pool, hyper)
    }

    fn take_stats(&mut self, split: Split) -> LocalFuture<'_, Result<Stats>> {
        ready(Ok(std::mem::take(&mut self.stats[split as usize])))
    }

    /// The steps on a team of threads that spin between the step's parallel regions instead of
    /// sleeping (see `team`), each step's update made by its backward (`backward_on`). (Made
    /// instead by the next forward's blocks, just before their weights are multiplied, it
    /// measured slower once the weights were kept `[I,O]`, where a block's weights are a
    /// strided panel: a step 9% slower with one optimizer call per row of the panel, still 6-10%
    /// slower with one call per panel, 2026-12-02.)
    fn train(&mut self, span: super::Span<'_>, progress: &mut dyn FnMut(usize)) -> Result<()> {
        team::on_team(|exec| {
            let mut steps = span.steps().peekable();
            let mut i = 0;
            while let Some(step) = steps.next() {
                let rows = step.rows;
                self.forward_on(exec, Split::Train, rows, rows.len())?;
                // The next batch's images are scattered over the training set: ask for them now,
                // so they arrive while backward multiplies (and gathers them beside its first
                // products).
                let next = steps.peek().map(|next| next.rows);
                if let Some(rows) = next {
                    prefetch_images(&self.train, rows);
                }
                self.backward_on(exec, next, Some(step.hyper))?;
                i += 1;
                progress(i);
            }
            Ok(())
        })
    }
}

impl CpuBackend {
    /// [`Backend::forward`], its parallel regions run by `exec`.
    fn forward_on(
        &mut self,
        exec: &Exec,
        split: Split,
        indices: &[u32],
        mean_over: usize,
    ) -> Result<()> {
        let b = indices.len();
        self.forwarded = None;
        super::check_batch(split, indices, self.data(split).len())?;
        self.resize(b);
        self.mean_over = mean_over.max(1);
        // Gather and normalise the batch; `split` is a field borrow apart from `acts`.
        let data = match split {
            Split::Train => &self.train,
            Split::Test => &self.test,
        };
        if self.next.holds(split, indices) {
            // Gathered by the last backward.
            std::mem::swap(&mut self.acts[0], &mut self.next.input);
            std::mem::swap(&mut self.labels, &mut self.next.labels);
        } else {
            // On one thread: split over threads it measured several times slower (each core
            // writing lines the other last read; README, "Measured results").
            gather(data, indices, &mut self.acts[0]);
            labels_of(data, indices, &mut self.labels);
        }
        self.next.current = false;

        let layers = self.arch.layers();
        let f = self.arch.activation;
        for l in 0..layers - 1 {
            let (inp, out) = (self.arch.sizes[l], self.arch.sizes[l + 1]);
            let (weight, bias) = (
                &self.params[self.layout.weight(l).range()],
                &self.params[self.layout.bias(l).range()],
            );
            let (lower, upper) = self.acts.split_at_mut(l + 1);
            let (a, z) = (&lower[l], &mut upper[0]);
            let pre = f
                .needs_pre_activation()
                .then(|| Disjoint::new(&mut self.pre[l + 1]));
            // Z = A @ Wt + bias, then f(Z) (Z kept first where backward needs it), per block of
            // output units.
            affine(exec, z, a, weight, bias, (inp, out), |block| {
                for r in 0..block.rows {
                    let (c0, c1) = (r * out + block.c0, r * out + block.c1);
                    let z = block.row(r);
                    if let Some(pre) = &pre {
                        // SAFETY: this block's own columns of row r.
                        unsafe { pre.part(c0..c1) }.copy_from_slice(z);
                    }
                    fused::activate(f, z);
                }
            });
        }

        self.top_forward(exec);
        // Summed in row order, on one thread, whoever computed the rows.
        let stats = &mut self.stats[split as usize];
        stats.loss_sum += self.row_stats.iter().map(|r| r.loss).sum::<f64>();
        stats.correct += self.row_stats.iter().filter(|r| r.hit).count() as u64;
        stats.count += b as u64;
        self.forwarded = Some(split);
        Ok(())
    }
}

impl CpuBackend {
    /// The top layer's forward: `Z = A @ Wt + bias`, the softmax and each row's loss and hit.
    /// Its product is usually a single column block (B1's is 128 x 256 x 10), and would run on
    /// one thread with the softmax after it while the others wait (20-34 us a step): then each
    /// half of the batch is a part of one region, its rows' product, softmax and loss.
    fn top_forward(&mut self, exec: &Exec) {
        let (b, l) = (self.batch, self.arch.layers() - 1);
        let (inp, out) = (self.arch.sizes[l], self.arch.sizes[l + 1]);
        let (weight, bias) = (
            &self.params[self.layout.weight(l).range()],
            &self.params[self.layout.bias(l).range()],
        );
        let (lower, upper) = self.acts.split_at_mut(l + 1);
        let (a, z) = (&lower[l], &mut upper[0][..]);
        let product = |exec: &Exec, a: &[f32], z: &mut [f32]| {
            affine(exec, z, a, weight, bias, (inp, out), |_| {})
        };
        if block_count(b, inp, out) > 1 {
            product(exec, a, z);
            let labels = &self.labels;
            softmax_xent_forward(z, out, labels, &mut self.probs, &mut self.row_stats);
            return;
        }
        // Two halves of the rows (cut by the batch alone), each locked by its one part.
        let cut = b / 2;
        let (z0, z1) = z.split_at_mut(cut * out);
        let (p0, p1) = self.probs.split_at_mut(cut * out);
        let (s0, s1) = self.row_stats.split_at_mut(cut);
        let (a0, a1) = a.split_at(cut * inp);
        let (y0, y1) = self.labels.split_at(cut);
        let halves = [(a0, z0, p0, y0, s0), (a1, z1, p1, y1, s1)].map(std::sync::Mutex::new);
        exec.for_each(2, &|half| {
            let (a, z, p, y, s) = &mut *halves[half].lock().unwrap();
            product(&Exec::Serial, a, z);
            softmax_xent_forward(z, out, y, p, s);
        });
    }

    /// [`Backend::update`], in one region run by `exec`.
    fn update_on(&mut self, exec: &Exec, hyper: StepHyper) -> Result<()> {
        let (opt, state) = self.optimizer.as_mut().ok_or_else(super::no_optimizer)?;
        let s = opt.scalars(hyper.lr, hyper.t);
        let state = state.iter_mut().map(|buffer| &mut buffer[..]).collect();
        let all = Updater::new(opt, &s, &mut self.params, state);
        exec.run(&[update_parts(all, &self.grads)]);
        Ok(())
    }

    /// [`Backend::backward`], its parallel regions run by `exec`; with `update`, the update
    /// too. Each layer's two products share a region. Beside the top layer's goes the gathering
    /// of `next`, rows of the training set, into `self.next` (the next step's batch). The first
    /// layer has one product, its weight gradient, and with `update` each of its blocks updates
    /// its weights right after ([`first_weight_grad`]); beside it go the first layer's bias
    /// gradient and update, and the update of every layer above, whose gradients are final and
    /// whose weights this step no longer reads. Threads done with one piece of a region take up
    /// the next instead of waiting at its end.
    fn backward_on(
        &mut self,
        exec: &Exec,
        next: Option<&[u32]>,
        update: Option<StepHyper>,
    ) -> Result<()> {
        let b = self.batch;
        if self.forwarded.is_none() {
            return Err(super::no_forward());
        }
        if update.is_some() && self.optimizer.is_none() {
            return Err(super::no_optimizer());
        }
        let layers = self.arch.layers();
        // Top: dZ = (softmax - onehot) / mean_over.
        let scale = 1.0 / self.mean_over as f32;
        let classes = self.classes();
        let top = &mut self.dz[layers - 1];
        for ((d, p), &y) in top
            .chunks_exact_mut(classes)
            .zip(self.probs.chunks_exact(classes))
            .zip(&self.labels)
        {
            for (c, (d, &p)) in d.iter_mut().zip(p).enumerate() {
                *d = (p - if c == y as usize { 1.0 } else { 0.0 }) * scale;
            }
        }
        let CpuBackend {
            arch,
            layout,
            params,
            grads,
            optimizer,
            train,
            acts,
            pre,
            dz: dzs,
            next: staged,
            ..
        } = self;
        let f = arch.activation;
        let mut update = match (update, optimizer) {
            (Some(hyper), Some((opt, state))) => {
                Some((&*opt, opt.scalars(hyper.lr, hyper.t), state))
            }
            _ => None,
        };
        for l in (0..layers).rev() {
            let (inp, out) = (arch.sizes[l], arch.sizes[l + 1]);
            let (w, end) = (layout.weight(l).offset, layout.bias(l).range().end);
            let (below, this) = dzs.split_at_mut(l);
            let dz = &this[0];
            let (a, x) = (
                &acts[l],
                if f.needs_pre_activation() {
                    &pre[l]
                } else {
                    &acts[l]
                },
            );
            // This layer's parameters and gradient, and those of the layers above it.
            let (params, params_above) = params[w..].split_at_mut(end - w);
            let (grads, grads_above) = grads[w..].split_at_mut(end - w);
            let (dw, db) = grads.split_at_mut(out * inp);
            let mut pieces = Vec::new();
            if l == 0 {
                let (pw, pb) = params.split_at_mut(out * inp);
                // With the update: the optimizer, the step's scalars, and each state buffer
                // split as the parameters are (this layer's weights, its bias, the layers above).
                let (mut weight_update, mut bias_update, mut above_update) = (None, None, None);
                if let Some((opt, s, state)) = update.as_mut() {
                    let (opt, s) = (&**opt, &*s);
                    let (mut w_state, mut b_state, mut above) =
                        (Vec::new(), Vec::new(), Vec::new());
                    for buffer in state.iter_mut() {
                        let (this, up) = buffer.split_at_mut(end);
                        let (w, b) = this.split_at_mut(out * inp);
                        w_state.push(w);
                        b_state.push(b);
                        above.push(up);
                    }
                    weight_update = Some(Updater::new(opt, s, pw, w_state));
                    bias_update = Some(Updater::new(opt, s, pb, b_state));
                    let above = Updater::new(opt, s, params_above, above);
                    above_update = Some(update_parts(above, grads_above));
                }
                pieces.push(first_weight_grad(
                    dw,
                    Mat::new(a, b, inp).t(),
                    Mat::new(dz, b, out),
                    out,
                    weight_update,
                ));
                // Its bias gradient, and the bias's update with it.
                let db = Disjoint::new(db);
                pieces.push(Parts::new(1, move |_| {
                    // SAFETY: this part alone writes the bias gradient.
                    let db = unsafe { db.part(0..out) };
                    bias_grad(db, dz, out, 0..out);
                    if let Some(bias) = &bias_update {
                        // SAFETY: this part alone touches the bias and its state.
                        unsafe { bias.apply(0..out, db) };
                    }
                }));
                pieces.extend(above_update);
            } else {
                // dA = dZ @ Wt^T, then * f' (read off the layer's input, or its pre-activation,
                // kept for that) per block.
                let weight = &params[..out * inp];
                pieces.push(product(
                    &mut below[l - 1],
                    Mat::new(dz, b, out),
                    Mat::new(weight, inp, out).t(),
                    move |block| {
                        for r in 0..block.rows {
                            let x = &x[r * inp + block.c0..r * inp + block.c1];
                            fused::activation_backward(f, block.row(r), x);
                        }
                    },
                ));
                // dWt = A^T @ dZ per block of output units; each block also sums its units'
                // entries of db (over the rows in order).
                let db = Disjoint::new(db);
                pieces.push(product(
                    dw,
                    Mat::new(a, b, inp).t(),
                    Mat::new(dz, b, out),
                    move |block| {
                        let units = block.c0..block.c1;
                        // SAFETY: db's entries for this block's units are its alone.
                        bias_grad(unsafe { db.part(units.clone()) }, dz, out, units);
                    },
                ));
            }
            if let Some(rows) = next.filter(|_| l + 1 == layers) {
                pieces.push(gather_parts(staged, train, rows));
            }
            exec.run(&pieces);
        }
        Ok(())
    }
}

/// Units `units` of a bias gradient, `db = sum_rows(dZ)` (`dz` `[B, out]`), summed over the
/// rows in order.
fn bias_grad(db: &mut [f32], dz: &[f32], out: usize, units: std::ops::Range<usize>) {
    db.fill(0.0);
    for row in dz.chunks_exact(out) {
        fused::add(db, &row[units.clone()]);
    }
}

/// The first layer's weight gradient `dWt = A^T @ dZ` as parts of a region, by blocks of whole
/// rows (the layer's inputs), each block's weights updated by `update` (the optimizer, its
/// step's scalars, the weights and their state buffers) right after their gradient: while it is
/// in cache, and on one thread while the other multiplies, rather than in a region of its own
/// after the gradient (the update is bound by memory, the products by arithmetic). Layers above
/// cannot do this: their weights are still read, by their input gradient's product.
fn first_weight_grad<'a>(
    dw: &'a mut [f32],
    at: Mat<'a>,
    dz: Mat<'a>,
    out: usize,
    update: Option<Updater<'a>>,
) -> Parts<'a> {
    row_product(dw, at, dz, move |rows, grad| {
        if let Some(weights) = &update {
            // SAFETY: these rows of the weights and their state are this block's alone.
            unsafe { weights.apply(rows.start * out..rows.end * out, grad) };
        }
    })
}

/// The optimizer's update of `params` (a stretch of the flat buffers, its state split alike)
/// from `grads` (the same stretch), as parts of a region: chunks of `UPDATE_CHUNK` parameters.
fn update_parts<'a>(params: Updater<'a>, grads: &'a [f32]) -> Parts<'a> {
    let n = params.params.len();
    Parts::new(n.div_ceil(UPDATE_CHUNK), move |chunk| {
        let at = chunk * UPDATE_CHUNK..((chunk + 1) * UPDATE_CHUNK).min(n);
        // SAFETY: each chunk is its own part of the buffers.
        unsafe { params.apply(at.clone(), &grads[at]) };
    })
}

/// The optimizer's update of a stretch of the parameters (a layer's weights, its bias, the
/// layers above it, or all) with their state buffers split alike, for the parts of a region to
/// apply to ranges of their own.
struct Updater<'a> {
    opt: &'a OptimizerConfig,
    s: &'a StepScalars,
    params: Disjoint<'a>,
    state: Vec<Disjoint<'a>>,
}

impl<'a> Updater<'a> {
    fn new(
        opt: &'a OptimizerConfig,
        s: &'a StepScalars,
        params: &'a mut [f32],
        state: Vec<&'a mut [f32]>,
    ) -> Self {
        Updater {
            opt,
            s,
            params: Disjoint::new(params),
            state: state.into_iter().map(Disjoint::new).collect(),
        }
    }

    /// Updates the parameters `at` (indices into this stretch) from their gradient `g`, counted
    /// as the optimizer's time (`clock`).
    ///
    /// # Safety
    /// `at` is the caller's own range: no other live part of the parameters or their state
    /// overlaps it.
    unsafe fn apply(&self, at: std::ops::Range<usize>, g: &[f32]) {
        debug_assert_eq!(at.len(), g.len(), "a gradient for every parameter");
        let clock = clock::start();
        // SAFETY: the caller's contract.
        let p = unsafe { self.params.part(at.clone()) };
        match (self.opt.kind, &self.state[..]) {
            (OptimizerKind::Sgd, [vel]) => {
                sgd_update(self.opt, self.s, p, g, unsafe { vel.part(at) })
            }
            (OptimizerKind::Adam, [m, v]) => adam_update(
                self.opt,
                self.s,
                p,
                g,
                unsafe { m.part(at.clone()) },
                unsafe { v.part(at) },
            ),
            _ => unreachable!("state buffers are made from state_names"),
        }
        clock::stop(clock, &clock::UPDATE);
    }
}

/// Gathering `rows` of the training set `data` into `staged`, as two parts of a region (a half
/// of the rows each).
fn gather_parts<'a>(staged: &'a mut Staged, data: &'a Dataset, rows: &'a [u32]) -> Parts<'a> {
    staged.stage(data, rows);
    let input = Disjoint::new(&mut staged.input);
    let half = rows.len() / 2;
    Parts::new(2, move |part| {
        let at = if part == 0 { 0..half } else { half..rows.len() };
        // SAFETY: each part writes the rows of its own half.
        let dst = unsafe { input.part(at.start * data.width..at.end * data.width) };
        gather(data, &rows[at], dst);
    })
}

/// The next step's batch, gathered ahead by [`CpuBackend::backward_on`] (its buffers reused
/// from step to step).
#[derive(Default)]
struct Staged {
    /// Whether `input` and `labels` hold the training set's `rows`.
    current: bool,
    rows: Vec<u32>,
    /// `[rows, width]`, normalised as `Dataset::read_row` does.
    input: AlignedVec,
    labels: Vec<u32>,
}

impl Staged {
    /// Sizes the buffers for `rows` of `data`, fills the labels and records the rows (the
    /// caller fills `input`).
    fn stage(&mut self, data: &Dataset, rows: &[u32]) {
        self.input.resize(rows.len() * data.width);
        labels_of(data, rows, &mut self.labels);
        self.rows.clear();
        self.rows.extend_from_slice(rows);
        self.current = true;
    }

    /// Whether it holds exactly `rows` of the training set.
    fn holds(&self, split: Split, rows: &[u32]) -> bool {
        split == Split::Train && self.current && self.rows == rows
    }
}

/// Copies `src` into `dst`, each layer's weights transposed between the parameter layout's
/// `[O,I]` and this backend's `[I,O]` (`into_backend` says which way), the biases as they are.
fn relayout(layout: &ParamLayout, src: &[f32], dst: &mut [f32], into_backend: bool) {
    for entry in &layout.entries {
        let at = entry.range();
        let (src, dst) = (&src[at.clone()], &mut dst[at]);
        match entry.shape[..] {
            [out, inp] => {
                let (rows, cols) = if into_backend { (out, inp) } else { (inp, out) };
                // In 16 x 16 tiles, so that both sides stay in cache: 5x faster than row by
                // row on B1's weights.
                const TILE: usize = 16;
                for r0 in (0..rows).step_by(TILE) {
                    for c0 in (0..cols).step_by(TILE) {
                        for r in r0..(r0 + TILE).min(rows) {
                            for c in c0..(c0 + TILE).min(cols) {
                                dst[c * rows + r] = src[r * cols + c];
                            }
                        }
                    }
                }
            }
            _ => dst.copy_from_slice(src),
        }
    }
}

/// A buffer of this backend's (parameters, gradient or optimizer state) in the parameter
/// layout.
fn in_layout(layout: &ParamLayout, values: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    relayout(layout, values, &mut out, false);
    out
}

/// The samples at `rows` of `data`, normalised, into `dst` (`[rows, width]`).
fn gather(data: &Dataset, rows: &[u32], dst: &mut [f32]) {
    for (row, &i) in dst.chunks_exact_mut(data.width).zip(rows) {
        data.read_row(i as usize, row);
    }
}

/// The labels at `rows` of `data`, into `out`.
fn labels_of(data: &Dataset, rows: &[u32], out: &mut Vec<u32>) {
    out.clear();
    out.extend(rows.iter().map(|&i| data.labels[i as usize]));
}

/// Hints the processor to bring the images at `rows` into cache (a no-op where there is no
/// such hint); indices past the set are skipped (the next forward refuses them).
fn prefetch_images(data: &Dataset, rows: &[u32]) {
    #[cfg(target_arch = "x86_64")]
    for &i in rows {
        if (i as usize) < data.len() {
            for line in data.row_bytes(i as usize).chunks(64) {
                // SAFETY: a prefetch only hints the cache; the address is inside a live slice.
                unsafe {
                    std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                        line.as_ptr() as *const i8,
                    )
                };
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (data, rows);
}
