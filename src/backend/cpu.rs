//! The multi-threaded CPU backend: the fallback where no GPU is, and the reference the GPU
//! backend is tested against.
//!
//! Dimension legend: `B` batch, `I` a layer's inputs, `O` its outputs. Per layer `l`:
//!   forward   `Z = A @ W^T + b`            A `[B,I]`, W `[O,I]`, Z `[B,O]`; `A' = f(Z)`
//!   backward  `dW = dZ^T @ A`   `[O,I]`;  `db = sum_rows(dZ)`  `[O]`
//!             `dA = dZ @ W`     `[B,I]`;  `dZ_prev = dA * f'` (not needed for layer 0)
//! with `f` the architecture's [`Activation`](crate::model::Activation) (`f'` read off `A'`, or
//! off `Z`, kept for that, where the activation needs it) and at the top
//! `dZ = (softmax(Z) - onehot(y)) / mean_over`: `mean_over` is the batch for the gradient of its
//! mean cross-entropy, a global batch for a data-parallel rank's share of it.
//! GEMMs go to the `gemm` crate, which measured fastest of the GEMM crates on these shapes
//! (see README); its threads come from rayon (none on wasm32: see `parallel.rs`). Every reduction outside the GEMMs runs in a fixed
//! order, so a seed gives bit-identical results run after run.

use super::parallel::*;
use super::{ready, Backend, DeviceInfo, LocalFuture, Split, Stats, StepHyper, Tensor};
use crate::dataset::Dataset;
use crate::error::Result;
use crate::idx::{CLASSES, PIXELS};
use crate::model::{Architecture, ParamLayout, INPUT_SCALE};
use crate::optim::{adam_update, sgd_update, OptimizerConfig, OptimizerKind};

/// Parameters per parallel chunk of the optimizer update: big enough to amortise a task.
const UPDATE_CHUNK: usize = 1 << 15;

pub struct CpuBackend {
    arch: Architecture,
    layout: ParamLayout,
    params: Vec<f32>,
    grads: Vec<f32>,
    /// The optimizer attached for training, and its state buffers (one per
    /// `kind.state_names()`).
    optimizer: Option<(OptimizerConfig, Vec<Vec<f32>>)>,
    train: Dataset,
    test: Dataset,
    /// `acts[0]` is the normalised input batch, `acts[l]` layer `l-1`'s output after the
    /// activation, and the last one the logits; each `[B, sizes[l]]`.
    acts: Vec<Vec<f32>>,
    /// `pre[l]` layer `l-1`'s output before the activation, kept for hidden layers only where
    /// the activation's derivative needs it (empty otherwise).
    pre: Vec<Vec<f32>>,
    /// Softmax of the logits, `[B, 10]`.
    probs: Vec<f32>,
    /// Gradients of the loss with respect to each layer's pre-activation `Z`, `[B, sizes[l+1]]`.
    dz: Vec<Vec<f32>>,
    /// Labels of the last forward batch.
    labels: Vec<u8>,
    batch: usize,
    /// What the last forward's loss gradient is divided by (see [`Backend::forward`]).
    mean_over: usize,
    stats: [Stats; 2],
}

impl CpuBackend {
    /// A backend for `arch` with zero parameters (set them with [`Backend::write`]).
    pub fn new(arch: &Architecture) -> Self {
        let layout = ParamLayout::new(arch);
        let n = layout.len;
        let empty = Dataset {
            images: Vec::new(),
            labels: Vec::new(),
        };
        CpuBackend {
            arch: arch.clone(),
            layout,
            params: vec![0.0; n],
            grads: vec![0.0; n],
            optimizer: None,
            train: empty.clone(),
            test: empty,
            acts: vec![Vec::new(); arch.sizes.len()],
            pre: vec![Vec::new(); arch.sizes.len()],
            probs: Vec::new(),
            dz: vec![Vec::new(); arch.layers()],
            labels: Vec::new(),
            batch: 0,
            mean_over: 1,
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
            a.resize(b * self.arch.sizes[l], 0.0);
        }
        if self.arch.activation.needs_pre_activation() {
            let hidden = 1..self.arch.layers();
            for (l, z) in self.pre.iter_mut().enumerate() {
                z.resize(
                    if hidden.contains(&l) {
                        b * self.arch.sizes[l]
                    } else {
                        0
                    },
                    0.0,
                );
            }
        }
        for (l, d) in self.dz.iter_mut().enumerate() {
            d.resize(b * self.arch.sizes[l + 1], 0.0);
        }
        self.probs.resize(b * CLASSES, 0.0);
    }
}

/// A read-only matrix view with arbitrary strides, so transposes cost nothing.
#[derive(Clone, Copy)]
struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Mat<'a> {
    /// A row-major `rows x cols` matrix.
    fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Mat {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }
    fn t(self) -> Self {
        Mat {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }
}

/// Below this many multiply-adds a GEMM runs on one thread: splitting costs more than it gains.
const PARALLEL_MACS: usize = 1 << 21;

/// `dst = a @ b` (or `dst += a @ b` when `accumulate`), `dst` row-major `[a.rows, b.cols]`.
///
/// Large products are split by output columns into two blocks per thread, each a single-threaded
/// `gemm` call. On the 2-core machines this measured faster than `gemm`'s own rayon mode, which
/// leaves B1's middle-sized shapes (128x512x256) on one thread, and each output element is still
/// computed by one fixed sequence of operations, so results stay bit-identical run to run.
fn matmul(dst: &mut [f32], a: Mat, b: Mat, accumulate: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(k, b.rows, "inner dimensions differ");
    assert_eq!(dst.len(), m * n, "destination has the wrong size");
    for x in [a, b] {
        if x.rows > 0 && x.cols > 0 {
            assert!(
                (x.rows - 1) * x.row_stride + (x.cols - 1) * x.col_stride < x.data.len(),
                "view out of bounds"
            );
        }
    }
    if m == 0 || n == 0 {
        return;
    }
    let threads = threads();
    let blocks = if m * n * k >= PARALLEL_MACS && threads > 1 {
        (2 * threads).min(n.div_ceil(16))
    } else {
        1
    };
    let ptrs = SendPtrs(dst.as_mut_ptr(), a.data.as_ptr(), b.data.as_ptr());
    let block = |i: usize| {
        let ptrs = &ptrs;
        let (c0, c1) = (n * i / blocks, n * (i + 1) / blocks);
        // SAFETY: the asserts above keep every index the strides can form inside the slices;
        // blocks write disjoint column ranges of `dst`, which is exclusively borrowed and
        // distinct from `a` and `b`.
        unsafe {
            gemm::gemm(
                m,
                c1 - c0,
                k,
                ptrs.0.add(c0),
                1,
                n as isize,
                accumulate,
                ptrs.1,
                a.col_stride as isize,
                a.row_stride as isize,
                ptrs.2.add(c0 * b.col_stride),
                b.col_stride as isize,
                b.row_stride as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    };
    if blocks == 1 {
        block(0);
    } else {
        (0..blocks).into_par_iter().for_each(block);
    }
}

/// `dst = a @ b` for row-major `a` `[m, k]` and `b` `[k, n]`, with the backend's threading:
/// what `gpumlp bench` times.
pub fn matmul_row_major(dst: &mut [f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize) {
    matmul(dst, Mat::new(a, m, k), Mat::new(b, k, n), false);
}

/// Raw pointers of one `matmul`, shared by its column blocks.
struct SendPtrs(*mut f32, *const f32, *const f32);
// SAFETY: `matmul` hands each block a disjoint part of the destination and only reads the inputs.
unsafe impl Sync for SendPtrs {}

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

/// Softmax of each row of `logits` into `probs`; returns each row's cross-entropy against `labels`.
fn softmax_xent_forward(logits: &[f32], labels: &[u8], probs: &mut [f32]) -> Vec<f64> {
    logits
        .chunks_exact(CLASSES)
        .zip(probs.chunks_exact_mut(CLASSES))
        .zip(labels)
        .map(|((z, p), &y)| {
            let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0f32;
            for (p, &z) in p.iter_mut().zip(z) {
                *p = (z - max).exp();
                sum += *p;
            }
            for p in p.iter_mut() {
                *p /= sum;
            }
            // -log softmax(z)_y = log(sum exp(z - max)) - (z_y - max), stable for any logits.
            (sum.ln() - (z[y as usize] - max)) as f64
        })
        .collect()
}

impl CpuBackend {
    /// The last forward's logits, `[batch, classes]` row-major.
    pub(crate) fn output(&self) -> &[f32] {
        &self.acts[self.arch.layers()]
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
        match split {
            Split::Train => self.train = data.clone(),
            Split::Test => self.test = data.clone(),
        }
        Ok(())
    }

    fn attach_optimizer(&mut self, optimizer: &OptimizerConfig) -> Result<()> {
        let state = vec![vec![0.0; self.layout.len]; optimizer.kind.state_names().len()];
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
            Tensor::Grads => &mut self.grads,
            Tensor::State(k) => &mut self.optimizer.as_mut().expect("checked").1[k],
            Tensor::Logits => unreachable!("refused by check_write"),
        };
        target.copy_from_slice(values);
        Ok(())
    }

    fn read(&mut self, tensor: Tensor) -> LocalFuture<'_, Result<Vec<f32>>> {
        ready(match tensor {
            Tensor::Params => Ok(self.params.clone()),
            Tensor::Grads => Ok(self.grads.clone()),
            Tensor::Logits => Ok(self.output().to_vec()),
            Tensor::State(k) => match &self.optimizer {
                Some((_, state)) if k < state.len() => Ok(state[k].clone()),
                Some((opt, _)) => Err(crate::Error::Config(format!(
                    "{opt} keeps no state buffer {k}"
                ))),
                None => Err(super::no_optimizer()),
            },
        })
    }

    fn forward(&mut self, split: Split, indices: &[u32], mean_over: usize) -> Result<()> {
        let b = indices.len();
        super::check_batch(split, indices, self.data(split).len())?;
        self.resize(b);
        self.mean_over = mean_over.max(1);
        // Gather and normalise the batch; `split` is a field borrow apart from `acts`.
        let data = match split {
            Split::Train => &self.train,
            Split::Test => &self.test,
        };
        self.acts[0]
            .par_chunks_mut(PIXELS)
            .zip(indices.par_iter())
            .for_each(|(row, &i)| {
                for (x, &px) in row.iter_mut().zip(data.image(i as usize)) {
                    *x = px as f32 * INPUT_SCALE;
                }
            });
        self.labels.clear();
        self.labels
            .extend(indices.iter().map(|&i| data.labels[i as usize]));

        let layers = self.arch.layers();
        for l in 0..layers {
            let (inp, out) = (self.arch.sizes[l], self.arch.sizes[l + 1]);
            let (w, bias) = (self.layout.weight(l), self.layout.bias(l));
            let (lower, upper) = self.acts.split_at_mut(l + 1);
            let (a, z) = (&lower[l], &mut upper[0]);
            for row in z.chunks_exact_mut(out) {
                row.copy_from_slice(&self.params[bias.range()]);
            }
            let weight = Mat::new(&self.params[w.range()], out, inp);
            matmul(z, Mat::new(a, b, inp), weight.t(), true);
            if l + 1 < layers {
                let f = self.arch.activation;
                if f.needs_pre_activation() {
                    self.pre[l + 1].copy_from_slice(z);
                }
                z.iter_mut().for_each(|x| *x = f.apply(*x));
            }
        }

        let logits = &self.acts[layers];
        let losses = softmax_xent_forward(logits, &self.labels, &mut self.probs);
        let stats = &mut self.stats[split as usize];
        stats.loss_sum += losses.iter().sum::<f64>();
        stats.correct += logits
            .chunks_exact(CLASSES)
            .zip(&self.labels)
            .filter(|(z, &y)| argmax(z) == y as usize)
            .count() as u64;
        stats.count += b as u64;
        Ok(())
    }

    fn backward(&mut self) -> Result<()> {
        let b = self.batch;
        if b == 0 {
            return Err(crate::Error::Config(
                "backward needs a forward first".into(),
            ));
        }
        let layers = self.arch.layers();
        // Top: dZ = (softmax - onehot) / mean_over.
        let scale = 1.0 / self.mean_over as f32;
        let top = &mut self.dz[layers - 1];
        for ((d, p), &y) in top
            .chunks_exact_mut(CLASSES)
            .zip(self.probs.chunks_exact(CLASSES))
            .zip(&self.labels)
        {
            for (c, (d, &p)) in d.iter_mut().zip(p).enumerate() {
                *d = (p - if c == y as usize { 1.0 } else { 0.0 }) * scale;
            }
        }
        for l in (0..layers).rev() {
            let (inp, out) = (self.arch.sizes[l], self.arch.sizes[l + 1]);
            let (w, bias) = (self.layout.weight(l).range(), self.layout.bias(l).range());
            let (below, this) = self.dz.split_at_mut(l);
            let dz = Mat::new(&this[0], b, out);
            matmul(
                &mut self.grads[w.clone()],
                dz.t(),
                Mat::new(&self.acts[l], b, inp),
                false,
            );
            let db = &mut self.grads[bias];
            db.fill(0.0);
            for row in this[0].chunks_exact(out) {
                db.iter_mut().zip(row).for_each(|(s, &d)| *s += d);
            }
            if l > 0 {
                let da = &mut below[l - 1];
                matmul(da, dz, Mat::new(&self.params[w], out, inp), false);
                let f = self.arch.activation;
                let x = if f.needs_pre_activation() {
                    &self.pre[l]
                } else {
                    &self.acts[l]
                };
                da.iter_mut()
                    .zip(x)
                    .for_each(|(d, &x)| *d = f.backward(*d, x));
            }
        }
        Ok(())
    }

    fn update(&mut self, hyper: StepHyper) -> Result<()> {
        let (opt, state) = self.optimizer.as_mut().ok_or_else(super::no_optimizer)?;
        let opt = &*opt;
        let s = opt.scalars(hyper.lr, hyper.t);
        let chunks = self
            .params
            .par_chunks_mut(UPDATE_CHUNK)
            .zip(self.grads.par_chunks(UPDATE_CHUNK));
        match (opt.kind, state.as_mut_slice()) {
            (OptimizerKind::Sgd, [vel]) => chunks
                .zip(vel.par_chunks_mut(UPDATE_CHUNK))
                .for_each(|((p, g), vel)| sgd_update(opt, &s, p, g, vel)),
            (OptimizerKind::Adam, [m, v]) => chunks
                .zip(m.par_chunks_mut(UPDATE_CHUNK))
                .zip(v.par_chunks_mut(UPDATE_CHUNK))
                .for_each(|(((p, g), m), v)| adam_update(opt, &s, p, g, m, v)),
            _ => unreachable!("state buffers are made from state_names"),
        }
        Ok(())
    }

    fn take_stats(&mut self, split: Split) -> LocalFuture<'_, Result<Stats>> {
        ready(Ok(std::mem::take(&mut self.stats[split as usize])))
    }
}
