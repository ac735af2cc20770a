//! The GPU backend: the same MLP as the CPU backend, in WGSL compute shaders through wgpu
//! (Vulkan, Metal, DX12; WebGPU in the browser).
//!
//! Everything is created once: pipelines, bind groups, the parameter and gradient buffers and
//! the optimizer's state buffers (one per `OptimizerKind::state_names`), the batch buffers
//! (sized for the largest batch seen), and each dataset, uploaded once as packed bytes. An epoch
//! uploads its shuffled order and a table of per-step values (one 256-byte uniform slot per
//! step, bound with a dynamic offset), then encodes every step's dispatches with no readback;
//! loss and accuracy accumulate in a GPU buffer that is read when the trainer asks for the
//! epoch's stats. Steps are submitted in chunks, waiting for the chunk before last, so progress
//! is real and the queue never runs far ahead.
//!
//! Per step, `1 + 3L` dispatches for `L` layers (10 for B1): one GEMM per layer with bias and
//! the activation fused (the first reading its input straight from the resident dataset through
//! the step's shuffled order), softmax cross-entropy forward and backward with the running stats
//! in one kernel, then per layer the weight-gradient GEMM with the bias gradient fused (the
//! first layer's reading the dataset again) and (but for the first layer) the input-gradient
//! GEMM with the activation's derivative fused, and one optimizer kernel over the flat buffer.
//!
//! Natively the kernels run without naga's runtime bounds checks (see `context::GpuContext`):
//! every dispatch's indices are proven in range first by `bounds`.
//!
//! Modules: `context` (device, pipelines, readback), `bounds` (index proofs), `gemm` (the GEMM
//! family and its tuner), `tuning` (the variants and the choices per shape), `softmax_xent` and
//! `optimizer` (the two small kernel families), `kernels` (the WGSL sources); this file holds
//! the buffers and the order of the dispatches.

pub mod bounds;
mod context;
pub mod gemm;
pub mod kernels;
mod optimizer;
mod softmax_xent;
pub mod tuning;

pub use context::{adapters, device_kind, runtime_dir_for_mesa, GpuContext};
pub use gemm::GemmProbe;
pub use tuning::{GemmTuning, Shape, Variant, VARIANTS};

use super::{Backend, DeviceInfo, Inspect, LocalFuture, Split, Stats, StepHyper};
use crate::dataset::Dataset;
use crate::error::{Error, Result};
use crate::idx::{CLASSES, PIXELS};
use crate::model::{Activation, Architecture, ParamLayout};
use crate::optim::{OptimizerConfig, OptimizerKind};
use bounds::Operand;
use context::{uniform, words};
use gemm::{DataSide, Epilogue, GemmCall, GemmKernels, GemmOperands, BATCH_K, BATCH_M};
use optimizer::UpdateKernel;
use softmax_xent::SoftmaxKernel;
use wgpu::util::DeviceExt;

/// Bytes between two steps' slots in the step table (WebGPU's dynamic-offset alignment).
const SLOT: u64 = 256;
/// Steps per submitted command buffer during an epoch.
const STEPS_PER_SUBMIT: usize = 32;

/// One step's slot of the step table; mirrors `Step` in common.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct StepSlot {
    order_offset: u32,
    batch: u32,
    train: u32,
    split: u32,
    inv_batch: f32,
    lr: f32,
    decay: f32,
    adam_step: f32,
    adam_v_scale: f32,
}

impl StepSlot {
    /// A step over `batch` rows of `split` from `order_offset` of its order, whose loss
    /// gradient is the batch's mean (see [`StepSlot::mean_over`]).
    fn new(split: Split, order_offset: usize, batch: usize) -> Self {
        StepSlot {
            order_offset: order_offset as u32,
            batch: batch as u32,
            train: (split == Split::Train) as u32,
            split: split as u32,
            inv_batch: 1.0 / batch as f32,
            ..Default::default()
        }
    }

    /// Divides the loss gradient by `n` instead of the batch size: a data-parallel rank's share
    /// of a global batch of `n` rows.
    fn mean_over(mut self, n: usize) -> Self {
        self.inv_batch = 1.0 / n as f32;
        self
    }

    /// Fills in the optimizer's scalars for step `h` (the same values the CPU backend uses).
    fn with_hyper(mut self, opt: &OptimizerConfig, h: StepHyper) -> Self {
        let s = opt.scalars(h.lr, h.t);
        self.lr = s.lr;
        self.decay = s.decay;
        self.adam_step = s.adam_step;
        self.adam_v_scale = s.adam_v_scale;
        self
    }
}

/// The GEMM epilogues that apply `activation` after a hidden layer, and its derivative in backward.
fn activation_epilogues(activation: Activation) -> (Epilogue, Epilogue) {
    match activation {
        Activation::Relu => (Epilogue::BiasRelu, Epilogue::ReluMask),
    }
}

/// A dataset resident on the GPU.
struct SplitData {
    images: wgpu::Buffer,
    labels: wgpu::Buffer,
    /// Batch order: the epoch's permutation, or the indices of a single forward.
    order: wgpu::Buffer,
    len: usize,
}

/// Buffers and bind groups that depend on the batch capacity and the datasets.
struct BatchResources {
    capacity: usize,
    /// `acts[l]` layer l-1's output after the activation, the last the logits. (`acts[0]`, the
    /// input, is never made: the first layer reads the dataset.)
    acts: Vec<wgpu::Buffer>,
    /// The logits' gradient, which the softmax writes.
    dz_top: wgpu::Buffer,
    forward: Vec<GemmCall>,
    /// Weight gradient of layer l, with its bias gradient.
    weight_grad: Vec<GemmCall>,
    /// `input_grad[l - 1]` for layers l >= 1.
    input_grad: Vec<GemmCall>,
    /// Per split: the softmax reads the batch's labels from that split's dataset.
    softmax: [Option<wgpu::BindGroup>; 2],
}

/// The kernel families a backend runs, built once.
struct Kernels {
    /// The step table's layout (group 1 of every kernel).
    step: wgpu::BindGroupLayout,
    gemm: GemmKernels,
    softmax: SoftmaxKernel,
    /// The update rule of the backend's optimizer.
    update: UpdateKernel,
}

impl Kernels {
    fn new(ctx: &GpuContext, optimizer: OptimizerKind) -> Self {
        let step = step_layout(&ctx.device);
        Kernels {
            gemm: GemmKernels::new(&ctx.device),
            softmax: SoftmaxKernel::new(ctx, &step),
            update: UpdateKernel::new(ctx, &step, optimizer),
            step,
        }
    }
}

pub struct GpuBackend {
    ctx: GpuContext,
    arch: Architecture,
    layout: ParamLayout,
    optimizer: OptimizerConfig,
    kernels: Kernels,
    params: wgpu::Buffer,
    grads: wgpu::Buffer,
    /// The optimizer's state buffers, one per `optimizer.kind.state_names()`.
    state: Vec<wgpu::Buffer>,
    /// Running loss sum, correct count and sample count per split: `[4 * split + 0..3]`.
    stats: wgpu::Buffer,
    optimizer_bind: wgpu::BindGroup,
    steps: wgpu::Buffer,
    steps_capacity: usize,
    step_bind: wgpu::BindGroup,
    data: [Option<SplitData>; 2],
    batch: BatchResources,
    /// The slot of the last single forward, which `backward` and `update` reuse.
    last: Option<StepSlot>,
    /// CPU seconds spent encoding training steps into their passes, and the steps (natively).
    encoding: (f64, usize),
}

impl GpuBackend {
    /// A backend for `arch` trained by `optimizer` on `ctx`, with zero parameters and state (set
    /// them with `set_params` and `set_state`).
    pub fn new(ctx: GpuContext, arch: &Architecture, optimizer: &OptimizerConfig) -> Result<Self> {
        let layout = ParamLayout::new(arch);
        let kernels = Kernels::new(&ctx, optimizer.kind);
        let device = &ctx.device;

        let bytes = 4 * layout.len as u64;
        // Checked before anything is allocated: an oversized buffer is a validation panic in wgpu.
        if bytes
            > ctx
                .limits
                .max_storage_buffer_binding_size
                .min(ctx.limits.max_buffer_size)
        {
            return Err(Error::Gpu(format!(
                "{} parameters ({} MiB) exceed this GPU's storage binding limit of {} MiB",
                layout.len,
                bytes >> 20,
                ctx.limits.max_storage_buffer_binding_size >> 20
            )));
        }
        let flat = |label: &str| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: padded(layout.len),
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        };
        let (params, grads) = (flat("params"), flat("grads"));
        let state: Vec<wgpu::Buffer> = optimizer
            .kind
            .state_names()
            .iter()
            .map(|name| flat(&format!("optimizer {name}")))
            .collect();
        let stats = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("stats"),
            size: 32,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let optimizer_bind =
            kernels
                .update
                .bind(&ctx, optimizer, layout.len, (&params, &grads, &state))?;
        let (steps, step_bind) = step_table(device, &kernels.step, 1);
        let batch = BatchResources::new(
            &ctx,
            &kernels,
            arch,
            &layout,
            [None, None],
            (&params, &grads, &stats),
            0,
        )?;
        Ok(GpuBackend {
            arch: arch.clone(),
            layout,
            optimizer: *optimizer,
            kernels,
            params,
            grads,
            state,
            stats,
            optimizer_bind,
            steps,
            steps_capacity: 1,
            step_bind,
            data: [None, None],
            batch,
            last: None,
            encoding: (0.0, 0),
            ctx,
        })
    }

    /// Grows the batch buffers (and the order buffers that hold single batches) to `batch` rows,
    /// and has every GEMM choose its variant for `batch` rows.
    fn prepare(&mut self, batch: usize) -> Result<()> {
        if batch > self.batch.capacity {
            let widest = *self.arch.sizes.iter().max().expect("layers") as u64;
            let bytes = 4 * widest * batch as u64;
            if bytes > self.ctx.limits.max_storage_buffer_binding_size {
                return Err(Error::Gpu(format!(
                    "a batch of {batch} needs {} MiB activation buffers, over this GPU's {} MiB storage binding limit: use a smaller batch size",
                    bytes >> 20,
                    self.ctx.limits.max_storage_buffer_binding_size >> 20
                )));
            }
            for (split, data) in self.data.iter_mut().enumerate() {
                if let Some(d) = data {
                    if words(&d.order) < batch as u64 {
                        let name = if split == 0 { "train" } else { "test" };
                        d.order = order_buffer(
                            &self.ctx.device,
                            &format!("{name} order"),
                            d.len.max(batch),
                        );
                    }
                }
            }
            self.rebind(batch)?;
        }
        let mut tuning = self
            .ctx
            .tuning
            .lock()
            .map_err(|_| Error::Gpu("the GEMM tuning was poisoned".into()))?;
        let b = &mut self.batch;
        for call in b
            .forward
            .iter_mut()
            .chain(&mut b.weight_grad)
            .chain(&mut b.input_grad)
        {
            call.prepare(
                &self.ctx,
                &self.kernels.gemm,
                &self.kernels.step,
                &mut tuning,
                batch as u32,
            )?;
        }
        Ok(())
    }

    /// Makes the batch buffers for `capacity` rows and binds the network's products and the
    /// softmax to them and to the uploaded datasets.
    fn rebind(&mut self, capacity: usize) -> Result<()> {
        self.batch = BatchResources::new(
            &self.ctx,
            &self.kernels,
            &self.arch,
            &self.layout,
            [self.data[0].as_ref(), self.data[1].as_ref()],
            (&self.params, &self.grads, &self.stats),
            capacity,
        )?;
        Ok(())
    }

    /// Proves the dataset reads of batches of at most `batch` rows taken from
    /// `order[..order_end]` of `split` (the first layer's products and the softmax's labels), and
    /// the softmax over them. (Every GEMM was proven when it was bound.)
    fn prove(&self, split: Split, batch: usize, order_end: usize) -> Result<()> {
        let d = self.data[split as usize]
            .as_ref()
            .ok_or_else(|| Error::Config(format!("no {split:?} set was uploaded")))?;
        if batch > self.batch.capacity {
            return Err(Error::Gpu(format!(
                "internal error: a batch of {batch} on buffers made for {}",
                self.batch.capacity
            )));
        }
        bounds::dataset(
            order_end as u64,
            words(&d.order),
            d.len as u64,
            (words(&d.images), words(&d.labels)),
            PIXELS as u64,
        )?;
        let layers = self.arch.layers();
        bounds::softmax(
            batch as u64,
            CLASSES as u64,
            (
                words(&self.batch.acts[layers]),
                words(&self.batch.dz_top),
                words(&self.stats),
            ),
        )
    }

    fn ensure_steps(&mut self, steps: usize) {
        if steps > self.steps_capacity {
            (self.steps, self.step_bind) = step_table(&self.ctx.device, &self.kernels.step, steps);
            self.steps_capacity = steps;
        }
    }

    fn write_slots(&self, slots: &[StepSlot]) {
        let mut bytes = vec![0u8; slots.len() * SLOT as usize];
        for (i, s) in slots.iter().enumerate() {
            bytes[i * SLOT as usize..][..std::mem::size_of::<StepSlot>()]
                .copy_from_slice(bytemuck::bytes_of(s));
        }
        self.ctx.queue.write_buffer(&self.steps, 0, &bytes);
    }

    /// The layers, and softmax cross-entropy with the stats, for a batch of `batch` rows of
    /// `split` (the first layer reads them from the dataset).
    fn encode_forward(
        &self,
        pass: &mut wgpu::ComputePass,
        split: Split,
        slot: usize,
        batch: usize,
    ) {
        pass.set_bind_group(1, &self.step_bind, &[(slot as u64 * SLOT) as u32]);
        for call in &self.batch.forward {
            call.encode(pass, batch as u32, split as usize);
        }
        self.kernels.softmax.encode(
            pass,
            self.batch.softmax[split as usize]
                .as_ref()
                .expect("the split was uploaded"),
        );
    }

    /// The gradients of a training batch of `batch` rows (the first layer's weight gradient
    /// reads them from the training set again).
    fn encode_backward(&self, pass: &mut wgpu::ComputePass, slot: usize, batch: usize) {
        pass.set_bind_group(1, &self.step_bind, &[(slot as u64 * SLOT) as u32]);
        for l in (0..self.arch.layers()).rev() {
            self.batch.weight_grad[l].encode(pass, batch as u32, Split::Train as usize);
            if l > 0 {
                self.batch.input_grad[l - 1].encode(pass, batch as u32, Split::Train as usize);
            }
        }
    }

    fn encode_update(&self, pass: &mut wgpu::ComputePass, slot: usize) {
        pass.set_bind_group(1, &self.step_bind, &[(slot as u64 * SLOT) as u32]);
        self.kernels
            .update
            .encode(&self.ctx, pass, &self.optimizer_bind, self.layout.len);
    }

    /// Encodes `work` in one compute pass and submits it.
    fn submit(
        &self,
        label: &str,
        work: impl FnOnce(&mut wgpu::ComputePass),
    ) -> wgpu::SubmissionIndex {
        let mut encoder = self
            .ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(label),
                timestamp_writes: None,
            });
            work(&mut pass);
        }
        self.ctx.queue.submit([encoder.finish()])
    }

    /// Zeroes the running stats of `split`.
    fn reset_stats(&self, split: Split) {
        self.ctx
            .queue
            .write_buffer(&self.stats, 16 * split as u64, &[0u8; 16]);
    }

    /// Encodes a forward pass over rows `indices` of `split` (see [`Inspect::forward`]), its
    /// loss gradient (which the softmax writes) divided by `mean_over`.
    fn forward_rows(&mut self, split: Split, indices: &[u32], mean_over: usize) -> Result<()> {
        super::check_batch(split, indices, self.len(split))?;
        self.prepare(indices.len())?;
        self.prove(split, indices.len(), indices.len())?;
        let d = self.data[split as usize]
            .as_ref()
            .expect("checked by check_batch");
        self.ctx
            .queue
            .write_buffer(&d.order, 0, bytemuck::cast_slice(indices));
        let slot = StepSlot::new(split, 0, indices.len()).mean_over(mean_over);
        self.write_slots(&[slot]);
        self.submit("forward", |pass| {
            self.encode_forward(pass, split, 0, indices.len())
        });
        self.last = Some(slot);
        Ok(())
    }

    /// Dispatches per training step (`gpumlp bench` reports it).
    pub fn dispatches_per_step(&self) -> usize {
        1 + 3 * self.arch.layers()
    }

    /// Seconds per training step of each kernel family (the GEMMs, the softmax, the optimizer)
    /// at `batch` rows, each family's dispatches of a step run alone `reps` times in one pass,
    /// timed as [`GpuContext::time_pass`] can (GPU timestamps, else the wall clock): what
    /// `gpumlp bench` reports. Needs a training set uploaded and trained on (its order buffer
    /// holds the rows read). Natively only.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn family_seconds(
        &mut self,
        batch: usize,
        reps: usize,
    ) -> Result<Vec<(&'static str, f64)>> {
        self.prepare(batch)?;
        self.prove(Split::Train, batch, batch)?;
        // A rate of 0 leaves the parameters as they are (decay 1, step 0).
        let slot = StepSlot::new(Split::Train, 0, batch)
            .with_hyper(&self.optimizer, StepHyper { lr: 0.0, t: 1 });
        self.write_slots(&[slot]);
        let b = batch as u32;
        let families: [(&'static str, &dyn Fn(&mut wgpu::ComputePass)); 3] = [
            ("gemm", &|pass| {
                pass.set_bind_group(1, &self.step_bind, &[0]);
                for call in &self.batch.forward {
                    call.encode(pass, b, Split::Train as usize);
                }
                self.encode_backward(pass, 0, batch);
            }),
            ("softmax_xent", &|pass| {
                pass.set_bind_group(1, &self.step_bind, &[0]);
                let bind = self.batch.softmax[0].as_ref().expect("uploaded");
                self.kernels.softmax.encode(pass, bind);
            }),
            ("optimizer", &|pass| self.encode_update(pass, 0)),
        ];
        let mut out = Vec::new();
        for (name, encode) in families {
            let run = |reps: usize| {
                self.ctx
                    .time_pass(name, |pass| (0..reps).for_each(|_| encode(pass)))
            };
            run(1)?;
            out.push((name, run(reps)? / reps as f64));
        }
        self.reset_stats(Split::Train);
        Ok(out)
    }

    /// Mean CPU time spent encoding one training step's dispatches so far (None before any,
    /// and in a browser, which has no clock for it).
    pub fn encode_seconds_per_step(&self) -> Option<f64> {
        (self.encoding.1 > 0 && self.encoding.0 > 0.0)
            .then(|| self.encoding.0 / self.encoding.1 as f64)
    }
}

/// The step table's bind group layout (group 1 of every kernel).
fn step_layout(device: &wgpu::Device) -> wgpu::BindGroupLayout {
    device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some("step"),
        entries: &[uniform(0, true)],
    })
}

fn step_table(
    device: &wgpu::Device,
    layout: &wgpu::BindGroupLayout,
    steps: usize,
) -> (wgpu::Buffer, wgpu::BindGroup) {
    let buffer = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("step table"),
        size: SLOT * steps.max(1) as u64,
        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("step"),
        layout,
        entries: &[wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &buffer,
                offset: 0,
                size: wgpu::BufferSize::new(std::mem::size_of::<StepSlot>() as u64),
            }),
        }],
    });
    (buffer, bind)
}

/// Bytes for `len` f32, padded to whole vec4s (the GEMM reads its operands as vec4 arrays)
/// and at least one.
fn padded(len: usize) -> u64 {
    4 * len.max(1).next_multiple_of(4) as u64
}

fn order_buffer(device: &wgpu::Device, label: &str, len: usize) -> wgpu::Buffer {
    device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: 4 * len.max(1) as u64,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}

/// Stats from the three floats of a split's slot in the stats buffer.
fn stats_from(s: &[f32]) -> Stats {
    Stats {
        loss_sum: s[0] as f64,
        correct: s[1] as u64,
        count: s[2] as u64,
    }
}

impl BatchResources {
    /// Buffers for batches of up to `capacity` rows, and the network's products bound to them
    /// and to each uploaded split's dataset (each proven in range as it is bound).
    fn new(
        ctx: &GpuContext,
        kernels: &Kernels,
        arch: &Architecture,
        layout: &ParamLayout,
        data: [Option<&SplitData>; 2],
        (params, grads, stats): (&wgpu::Buffer, &wgpu::Buffer, &wgpu::Buffer),
        capacity: usize,
    ) -> Result<Self> {
        let device = &ctx.device;
        let cap = capacity.max(1);
        let f32_buffer = |label: String, len: usize| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(&label),
                size: padded(len),
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            })
        };
        let acts: Vec<_> = arch
            .sizes
            .iter()
            .enumerate()
            .map(|(l, &n)| f32_buffer(format!("activations {l}"), if l == 0 { 1 } else { cap * n }))
            .collect();
        let dz: Vec<_> = (0..arch.layers())
            .map(|l| f32_buffer(format!("dz {l}"), cap * arch.sizes[l + 1]))
            .collect();
        let datasets = data.map(|d| d.map(|d| (&d.images, &d.order)));
        // Row-major `[rows, cols]` read as is, or read transposed.
        let plain = |offset: usize, ld: usize| Operand::row_major(offset as u64, ld as u64);
        let transposed = |offset: usize, ld: usize| Operand {
            transposed: true,
            ..plain(offset, ld)
        };
        // The first layer's input: read from the dataset, not from a buffer.
        let input = |l: usize, side| (l == 0).then_some((side, datasets));
        let placeholder = &kernels.gemm.placeholder;
        let layers = arch.layers();
        let (activate, derivative) = activation_epilogues(arch.activation);
        let (mut forward, mut weight_grad, mut input_grad) = (Vec::new(), Vec::new(), Vec::new());
        let cap32 = cap as u32;
        for l in 0..layers {
            let (inp, out) = (arch.sizes[l], arch.sizes[l + 1]);
            let (w, b) = (layout.weight(l).offset, layout.bias(l).offset);
            let (i32_, o32) = (inp as u32, out as u32);
            let x = if l == 0 { placeholder } else { &acts[l] };
            // Z = X @ W^T + b, then the activation (not on the logits)
            forward.push(GemmCall::new(
                ctx,
                &kernels.gemm,
                &format!("forward {l}"),
                (cap32, o32, i32_, BATCH_M),
                if l + 1 < layers {
                    activate
                } else {
                    Epilogue::Bias
                },
                GemmOperands {
                    a: (x, plain(0, inp)),
                    b: (params, transposed(w, inp)),
                    c: (&acts[l + 1], 0),
                    aux: (params, b as u64),
                    data: input(l, DataSide::A),
                },
            )?);
            // dW = dZ^T @ X, and db = dZ^T @ 1 beside it
            weight_grad.push(GemmCall::new(
                ctx,
                &kernels.gemm,
                &format!("weight grad {l}"),
                (o32, i32_, cap32, BATCH_K),
                Epilogue::RowSums,
                GemmOperands {
                    a: (&dz[l], transposed(0, out)),
                    b: (x, plain(0, inp)),
                    c: (grads, w as u64),
                    aux: (grads, b as u64),
                    data: input(l, DataSide::B),
                },
            )?);
            if l > 0 {
                // dX = (dZ @ W) * f'(X), the derivative read off the activation's output
                input_grad.push(GemmCall::new(
                    ctx,
                    &kernels.gemm,
                    &format!("input grad {l}"),
                    (cap32, i32_, o32, BATCH_M),
                    derivative,
                    GemmOperands {
                        a: (&dz[l], plain(0, out)),
                        b: (params, plain(w, inp)),
                        c: (&dz[l - 1], 0),
                        aux: (&acts[l], 0),
                        data: None,
                    },
                )?);
            }
        }
        let dz_top = dz[layers - 1].clone();
        let softmax = data.map(|d| {
            d.map(|d| {
                kernels
                    .softmax
                    .bind(ctx, (&acts[layers], &d.labels, &dz_top, stats, &d.order))
            })
        });
        Ok(BatchResources {
            capacity,
            acts,
            dz_top,
            forward,
            weight_grad,
            input_grad,
            softmax,
        })
    }
}

impl Backend for GpuBackend {
    fn device(&self) -> DeviceInfo {
        DeviceInfo {
            name: self.ctx.info.name.clone(),
            kind: self.ctx.kind().into(),
            backend: self.ctx.info.backend.to_str().into(),
        }
    }

    fn layout(&self) -> &ParamLayout {
        &self.layout
    }

    fn optimizer(&self) -> &OptimizerConfig {
        &self.optimizer
    }

    fn upload(&mut self, split: Split, data: &Dataset) -> Result<()> {
        let bytes = data.images.len() as u64;
        let limit = self
            .ctx
            .limits
            .max_storage_buffer_binding_size
            .min(self.ctx.limits.max_buffer_size);
        if bytes > limit {
            return Err(Error::Gpu(format!(
                "the {split:?} set's {} images ({} MiB) exceed this GPU's storage binding limit of {} MiB",
                data.len(),
                bytes >> 20,
                limit >> 20
            )));
        }
        let device = &self.ctx.device;
        let name = if split == Split::Train {
            "train"
        } else {
            "test"
        };
        let images = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(&format!("{name} images")),
            // 784 bytes per image: whole u32 words, no padding needed.
            contents: if data.images.is_empty() {
                &[0; 4]
            } else {
                &data.images
            },
            usage: wgpu::BufferUsages::STORAGE,
        });
        let labels: Vec<u32> = data.labels.iter().map(|&l| l as u32).collect();
        let labels = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(&format!("{name} labels")),
            contents: if labels.is_empty() {
                &[0; 4]
            } else {
                bytemuck::cast_slice(&labels)
            },
            usage: wgpu::BufferUsages::STORAGE,
        });
        let order = order_buffer(
            device,
            &format!("{name} order"),
            data.len().max(self.batch.capacity),
        );
        self.data[split as usize] = Some(SplitData {
            images,
            labels,
            order,
            len: data.len(),
        });
        // The first layer's products and the softmax read the datasets: bind them again.
        self.rebind(self.batch.capacity)
    }

    fn len(&self, split: Split) -> usize {
        self.data[split as usize].as_ref().map_or(0, |d| d.len)
    }

    fn set_params(&mut self, params: &[f32]) -> Result<()> {
        super::check_len("the parameters", params, &self.layout)?;
        self.ctx
            .queue
            .write_buffer(&self.params, 0, bytemuck::cast_slice(params));
        Ok(())
    }

    fn params(&mut self) -> LocalFuture<'_, Result<Vec<f32>>> {
        Box::pin(self.ctx.read_f32(&self.params, 0, self.layout.len))
    }

    fn set_state(&mut self, state: &[Vec<f32>]) -> Result<()> {
        super::check_state(state, &self.optimizer, &self.layout)?;
        for (buffer, values) in self.state.iter().zip(state) {
            self.ctx
                .queue
                .write_buffer(buffer, 0, bytemuck::cast_slice(values));
        }
        Ok(())
    }

    fn state(&mut self) -> LocalFuture<'_, Result<Vec<Vec<f32>>>> {
        let reads: Vec<_> = self
            .state
            .iter()
            .map(|b| self.ctx.read_f32(b, 0, self.layout.len))
            .collect();
        Box::pin(async move {
            let mut state = Vec::with_capacity(reads.len());
            for read in reads {
                state.push(read.await?);
            }
            Ok(state)
        })
    }

    fn train(
        &mut self,
        order: &[u32],
        batch: usize,
        steps: &[StepHyper],
        progress: &mut dyn FnMut(usize),
    ) -> Result<()> {
        super::check_batch(Split::Train, order, self.len(Split::Train))?;
        let batch = batch.min(order.len());
        self.prepare(batch)?;
        self.prove(Split::Train, batch, order.len())?;
        self.ensure_steps(steps.len());
        let slots: Vec<StepSlot> = order
            .chunks(batch)
            .zip(steps)
            .enumerate()
            .map(|(i, (rows, h))| {
                StepSlot::new(Split::Train, i * batch, rows.len()).with_hyper(&self.optimizer, *h)
            })
            .collect();
        let d = self.data[0].as_ref().expect("checked by check_batch");
        self.ctx
            .queue
            .write_buffer(&d.order, 0, bytemuck::cast_slice(order));
        self.write_slots(&slots);
        let mut in_flight: Option<wgpu::SubmissionIndex> = None;
        for (chunk, first) in slots
            .chunks(STEPS_PER_SUBMIT)
            .zip((0..).step_by(STEPS_PER_SUBMIT))
        {
            let mut encoding = 0.0;
            let index = self.submit("training steps", |pass| {
                #[cfg(not(target_arch = "wasm32"))]
                let start = std::time::Instant::now();
                for (i, s) in chunk.iter().enumerate() {
                    self.encode_forward(pass, Split::Train, first + i, s.batch as usize);
                    self.encode_backward(pass, first + i, s.batch as usize);
                    self.encode_update(pass, first + i);
                }
                #[cfg(not(target_arch = "wasm32"))]
                {
                    encoding = start.elapsed().as_secs_f64();
                }
            });
            self.encoding.0 += encoding;
            self.encoding.1 += chunk.len();
            // Keep at most two chunks queued: progress stays honest and memory bounded. (In a
            // browser nothing can wait: the page's slices of ~30 ms bound the queue instead.)
            if let Some(previous) = in_flight.replace(index) {
                self.ctx.wait(previous)?;
            }
            progress((first + chunk.len()).min(slots.len()));
        }
        self.last = slots.last().copied();
        Ok(())
    }

    fn gradient(&mut self, rows: &[u32], mean_over: usize) -> LocalFuture<'_, Result<Vec<f32>>> {
        match self
            .forward_rows(Split::Train, rows, mean_over)
            .and_then(|()| Inspect::backward(self))
        {
            Ok(()) => Box::pin(self.ctx.read_f32(&self.grads, 0, self.layout.len)),
            Err(e) => super::ready(Err(e)),
        }
    }

    fn apply_gradient(&mut self, grads: &[f32], hyper: StepHyper) -> Result<()> {
        super::check_len("the gradient", grads, &self.layout)?;
        self.ctx
            .queue
            .write_buffer(&self.grads, 0, bytemuck::cast_slice(grads));
        Inspect::update(self, hyper)
    }

    fn take_stats(&mut self, split: Split) -> LocalFuture<'_, Result<Stats>> {
        let read = self.ctx.read_f32(&self.stats, 4 * split as usize, 3);
        self.reset_stats(split);
        Box::pin(async move { Ok(stats_from(&read.await?)) })
    }

    fn evaluate(&mut self, split: Split) -> LocalFuture<'_, Result<Stats>> {
        Box::pin(async move {
            self.reset_stats(split);
            let indices: Vec<u32> = (0..self.len(split) as u32).collect();
            for chunk in indices.chunks(super::EVAL_BATCH) {
                self.forward_rows(split, chunk, chunk.len())?;
            }
            self.take_stats(split).await
        })
    }
}

impl Inspect for GpuBackend {
    fn forward(&mut self, split: Split, indices: &[u32]) -> Result<()> {
        self.forward_rows(split, indices, indices.len())
    }

    fn backward(&mut self) -> Result<()> {
        let slot = self
            .last
            .ok_or_else(|| Error::Config("backward needs a forward first".into()))?;
        self.submit("backward", |pass| {
            self.encode_backward(pass, 0, slot.batch as usize)
        });
        Ok(())
    }

    fn update(&mut self, hyper: StepHyper) -> Result<()> {
        let slot = self
            .last
            .unwrap_or_else(|| StepSlot::new(Split::Train, 0, 1))
            .with_hyper(&self.optimizer, hyper);
        self.write_slots(&[slot]);
        self.submit("update", |pass| self.encode_update(pass, 0));
        Ok(())
    }

    fn logits(&mut self) -> LocalFuture<'_, Result<Vec<f32>>> {
        let batch = self.last.map_or(0, |s| s.batch as usize);
        Box::pin(
            self.ctx
                .read_f32(&self.batch.acts[self.arch.layers()], 0, batch * CLASSES),
        )
    }

    fn grads(&mut self) -> LocalFuture<'_, Result<Vec<f32>>> {
        Box::pin(self.ctx.read_f32(&self.grads, 0, self.layout.len))
    }
}
