//! The GPU backend: the same MLP as the CPU backend, in WGSL compute shaders through wgpu
//! (Vulkan, Metal, DX12; WebGPU in the browser).
//!
//! Everything is created once: pipelines, the parameter and gradient buffers, the optimizer's
//! state buffers when one is attached (one per `OptimizerKind::state_names`), the batch buffers
//! (sized for the largest batch seen) and each dataset, uploaded once as packed bytes. A span of
//! training steps uploads its shuffled order and one slot per step of the step table, then
//! encodes every step's dispatches with no readback; loss and accuracy accumulate in a GPU
//! buffer that is read when the trainer asks for the epoch's stats. Steps are submitted in
//! chunks, waiting for the chunk before last, so progress is real and the queue never runs far
//! ahead.
//!
//! Natively the kernels run without naga's runtime bounds checks (see `context::GpuContext`):
//! every dispatch's indices are proven in range first by `bounds`. A fault the device reports
//! on its own (a lost device, an allocation the driver refuses) is an error from every call
//! after it, never a panic.
//!
//! Modules: `context` (device, pipelines, readback), `bounds` (index proofs), `step_table` (the
//! per-step uniforms), `network` (the datasets, batch buffers and the products wired to them),
//! the kernel families `gemm`, `softmax_xent` and `optimizer`, `tuner` and `tuning` (the GEMM
//! tuner and its choices),
//! `kernels` (the WGSL sources) and `bench` (timings for `gpumlp bench`); this file holds the
//! backend and what it owns.

#[cfg(not(target_arch = "wasm32"))]
mod bench;
pub mod bounds;
mod context;
pub mod gemm;
pub mod kernels;
mod network;
mod optimizer;
mod softmax_xent;
mod step_table;
mod tuner;
pub mod tuning;
#[cfg(test)]
mod wgsl_layouts;

#[cfg(not(target_arch = "wasm32"))]
pub use bench::GemmProbe;
pub use context::{adapters, device_kind, runtime_dir_for_mesa, GpuContext};
pub use tuning::{cooperative_variants, GemmTuning, Shape, Variant, SPLITS, VARIANTS};

use super::{Backend, DeviceInfo, LocalFuture, Span, Split, Stats, StepHyper, Tensor};
use crate::config::Precision;
use crate::dataset::Dataset;
use crate::error::{Error, Result};
use crate::model::{Architecture, ParamLayout};
use crate::optim::OptimizerConfig;
use network::{padded, Flat, Kernels, Network, SplitData};
use optimizer::UpdateKernel;
use softmax_xent::SoftmaxKernel;
use step_table::{StepSlot, StepTable};

/// Steps per submitted command buffer during a span.
const STEPS_PER_SUBMIT: usize = 32;

/// An optimizer attached for training: its update kernel, state buffers and their bind group.
struct Attached {
    config: OptimizerConfig,
    kernel: UpdateKernel,
    /// One per `config.kind.state_names()`.
    state: Vec<wgpu::Buffer>,
    bind: wgpu::BindGroup,
}

/// Where the last forward left its rows: the step-table slot it ran with (backward and update
/// use the same one), its split and its row count.
#[derive(Clone, Copy, Debug)]
struct LastForward {
    slot: usize,
    split: Split,
    batch: usize,
}

pub struct GpuBackend {
    ctx: GpuContext,
    arch: Architecture,
    layout: ParamLayout,
    kernels: Kernels,
    steps: StepTable,
    params: wgpu::Buffer,
    grads: wgpu::Buffer,
    /// Running loss sum, correct count and sample count per split: `[4 * split + 0..3]`.
    stats: wgpu::Buffer,
    optimizer: Option<Attached>,
    data: [Option<SplitData>; 2],
    /// Made at the first forward, and again only for a larger batch.
    network: Option<Network>,
    last: Option<LastForward>,
    /// CPU seconds spent encoding training steps into their passes, and the steps (natively).
    encoding: (f64, usize),
}

impl GpuBackend {
    /// A backend for `arch` on `ctx`, with zero parameters (set them with [`Backend::write`]),
    /// its GEMMs in f32.
    pub fn new(ctx: GpuContext, arch: &Architecture) -> Result<Self> {
        Self::with_precision(ctx, arch, Precision::F32)
    }

    /// A backend whose GEMMs run in `precision` (mixed: f16 operands, f32 sums, on the
    /// adapter's cooperative matrices; refused, naming the adapter, where it has none).
    pub fn with_precision(
        ctx: GpuContext,
        arch: &Architecture,
        precision: Precision,
    ) -> Result<Self> {
        if precision == Precision::Mixed {
            ctx.check_mixed()?;
        }
        let layout = ParamLayout::new(arch);
        let bytes = 4 * layout.len as u64;
        // Checked before anything is allocated: an oversized buffer is a validation panic in wgpu.
        let limit = ctx.binding_limit();
        if bytes > limit {
            return Err(Error::Gpu(format!(
                "{} parameters ({} MiB) exceed this GPU's storage binding limit of {} MiB",
                layout.len,
                bytes >> 20,
                limit >> 20
            )));
        }
        let steps = StepTable::new(&ctx.device);
        let kernels = Kernels {
            gemm: gemm::GemmKernels::new(&ctx.device, precision),
            softmax: SoftmaxKernel::new(&ctx, &steps.layout, arch.sizes[arch.layers()]),
        };
        let (params, grads) = (
            flat_buffer(&ctx, "params", layout.len),
            flat_buffer(&ctx, "grads", layout.len),
        );
        let stats = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("stats"),
            size: 32,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(GpuBackend {
            arch: arch.clone(),
            layout,
            kernels,
            steps,
            params,
            grads,
            stats,
            optimizer: None,
            data: [None, None],
            network: None,
            last: None,
            encoding: (0.0, 0),
            ctx,
        })
    }

    /// Makes the batch buffers hold `batch` rows (made again only for a larger batch), has
    /// every product choose its variant for `batch` rows, and proves the reads of batches of at
    /// most `batch` rows of `split` from `order[..order_end]`.
    fn prepare(&mut self, split: Split, batch: usize, order_end: usize) -> Result<()> {
        // Whatever the last forward left is overwritten from here on, or lost if this fails.
        self.last = None;
        let capacity = batch.max(self.network.as_ref().map_or(0, |n| n.capacity));
        Network::check_capacity(&self.ctx, &self.arch, capacity)?;
        let data = self.data[split as usize]
            .as_mut()
            .ok_or_else(|| Error::Config(format!("no {split:?} set was uploaded")))?;
        let grown = data.hold_order(&self.ctx, split, order_end);
        let format = data.format;
        if self
            .network
            .as_ref()
            .is_none_or(|n| n.capacity < batch || n.format != format)
        {
            self.network = Some(Network::new(
                &self.ctx,
                &self.kernels,
                &self.arch,
                &self.layout,
                (format, [self.data[0].as_ref(), self.data[1].as_ref()]),
                self.flat(),
                capacity,
            )?);
        } else if grown {
            // A new order buffer: the products and the softmax that read it bind it.
            let data = [self.data[0].as_ref(), self.data[1].as_ref()];
            let network = self.network.as_mut().expect("checked above");
            network.bind_datasets(&self.ctx, &self.kernels, data, &self.stats);
        }
        let network = self.network.as_mut().expect("made above");
        network.prepare(&self.ctx, &self.kernels, &self.steps.layout, batch)?;
        let data = self.data[split as usize].as_ref().expect("checked above");
        network.prove(data, &self.stats, batch, order_end)
    }

    fn flat(&self) -> Flat<'_> {
        Flat {
            params: &self.params,
            grads: &self.grads,
            stats: &self.stats,
        }
    }

    fn network(&self) -> &Network {
        self.network.as_ref().expect("prepared before encoding")
    }

    fn attached(&self) -> Result<&Attached> {
        self.optimizer.as_ref().ok_or_else(super::no_optimizer)
    }

    /// The optimizer's update over the flat buffer, with slot `slot`'s scalars.
    fn encode_update(&self, pass: &mut wgpu::ComputePass, opt: &Attached, slot: usize) {
        self.steps.bind(pass, slot);
        opt.kernel
            .encode(&self.ctx, pass, &opt.bind, self.layout.len);
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

    fn buffer(&self, tensor: Tensor) -> Result<&wgpu::Buffer> {
        match tensor {
            Tensor::Params => Ok(&self.params),
            Tensor::Grads | Tensor::GradsAsKept => Ok(&self.grads),
            Tensor::State(k) => {
                let opt = self.attached()?;
                opt.state.get(k).ok_or_else(|| {
                    Error::Config(format!("{} keeps no state buffer {k}", opt.config.kind))
                })
            }
            Tensor::Logits => Ok(self.network().acts.last().expect("layers")),
        }
    }
}

/// A buffer for `len` f32 laid out like the parameters.
fn flat_buffer(ctx: &GpuContext, label: &str, len: usize) -> wgpu::Buffer {
    ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: padded(len),
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST,
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

    fn upload(&mut self, split: Split, data: &Dataset) -> Result<()> {
        self.ctx.poll_faults()?;
        super::check_upload(&self.arch, split, data)?;
        let capacity = self.network.as_ref().map_or(0, |n| n.capacity);
        let uploaded = SplitData::upload(&self.ctx, split, data, capacity)?;
        // One network reads one storage format: a split stored otherwise is dropped.
        let other = &mut self.data[1 - split as usize];
        if other.as_ref().is_some_and(|o| o.format != uploaded.format) {
            *other = None;
        }
        if self
            .network
            .as_ref()
            .is_some_and(|n| n.format != uploaded.format)
        {
            self.network = None;
            self.last = None;
        }
        self.data[split as usize] = Some(uploaded);
        if self.last.is_some_and(|l| l.split == split) {
            self.last = None;
        }
        // The first layer's products and the softmax read the datasets: bind the new one.
        if let Some(network) = &mut self.network {
            let data = [self.data[0].as_ref(), self.data[1].as_ref()];
            network.bind_datasets(&self.ctx, &self.kernels, data, &self.stats);
        }
        Ok(())
    }

    fn attach_optimizer(&mut self, optimizer: &OptimizerConfig) -> Result<()> {
        self.ctx.poll_faults()?;
        let kernel = UpdateKernel::new(&self.ctx, &self.steps.layout, optimizer.kind);
        // New buffers are zero.
        let state: Vec<wgpu::Buffer> = optimizer
            .kind
            .state_names()
            .iter()
            .map(|name| flat_buffer(&self.ctx, &format!("optimizer {name}"), self.layout.len))
            .collect();
        let bind = kernel.bind(
            &self.ctx,
            optimizer,
            self.layout.len,
            (&self.params, &self.grads, &state),
        )?;
        self.optimizer = Some(Attached {
            config: *optimizer,
            kernel,
            state,
            bind,
        });
        Ok(())
    }

    fn write(&mut self, tensor: Tensor, values: &[f32]) -> Result<()> {
        self.ctx.poll_faults()?;
        let opt = self.optimizer.as_ref().map(|o| &o.config);
        super::check_write(tensor, values, &self.layout, opt)?;
        let buffer = self.buffer(tensor)?;
        self.ctx
            .queue
            .write_buffer(buffer, 0, bytemuck::cast_slice(values));
        Ok(())
    }

    fn read(&mut self, tensor: Tensor) -> LocalFuture<'_, Result<Vec<f32>>> {
        let len = match (tensor, self.last) {
            (Tensor::Logits, Some(last)) => last.batch * self.arch.sizes[self.arch.layers()],
            (Tensor::Logits, None) => return super::ready(Err(super::no_forward())),
            _ => self.layout.len,
        };
        match self.buffer(tensor) {
            Ok(buffer) => Box::pin(self.ctx.read_f32(buffer, 0, len)),
            Err(e) => super::ready(Err(e)),
        }
    }

    fn forward(&mut self, split: Split, rows: &[u32], mean_over: usize) -> Result<()> {
        self.ctx.poll_faults()?;
        let len = self.data[split as usize].as_ref().map_or(0, |d| d.len);
        super::check_batch(split, rows, len)?;
        self.prepare(split, rows.len(), rows.len())?;
        let d = self.data[split as usize].as_ref().expect("checked");
        self.ctx
            .queue
            .write_buffer(&d.order, 0, bytemuck::cast_slice(rows));
        let slot = StepSlot::new(split, 0, rows.len(), mean_over);
        self.steps.write(&self.ctx.device, &self.ctx.queue, &[slot]);
        let network = self.network();
        self.submit("forward", |pass| {
            self.steps.bind(pass, 0);
            network.encode_forward(pass, &self.kernels, split, rows.len());
        });
        self.last = Some(LastForward {
            slot: 0,
            split,
            batch: rows.len(),
        });
        Ok(())
    }

    fn backward(&mut self) -> Result<()> {
        self.ctx.poll_faults()?;
        let last = self.last.ok_or_else(super::no_forward)?;
        self.submit("backward", |pass| {
            self.steps.bind(pass, last.slot);
            self.network().encode_backward(pass, last.split, last.batch);
        });
        Ok(())
    }

    fn update(&mut self, hyper: StepHyper) -> Result<()> {
        self.ctx.poll_faults()?;
        let opt = self.attached()?;
        // The last forward's slot keeps its rows; only its optimizer scalars change.
        let slot = self.last.map_or(0, |l| l.slot);
        self.steps
            .write_hyper(&self.ctx.queue, slot, &opt.config, hyper);
        self.submit("update", |pass| self.encode_update(pass, opt, slot));
        Ok(())
    }

    fn take_stats(&mut self, split: Split) -> LocalFuture<'_, Result<Stats>> {
        let read = self.ctx.read_f32(&self.stats, 4 * split as usize, 3);
        self.reset_stats(split);
        Box::pin(async move { Ok(stats_from(&read.await?)) })
    }

    /// A span encoded whole, with no readback: the order and every step's slot uploaded at
    /// once, each step's dispatches reading its own slot.
    fn train(&mut self, span: Span<'_>, progress: &mut dyn FnMut(usize)) -> Result<()> {
        self.ctx.poll_faults()?;
        if span.is_empty() {
            return Ok(());
        }
        let len = self.data[0].as_ref().map_or(0, |d| d.len);
        super::check_batch(Split::Train, span.order(), len)?;
        let config = self.attached()?.config;
        self.prepare(Split::Train, span.batch(), span.order().len())?;
        let slots: Vec<StepSlot> = span
            .steps()
            .map(|s| {
                StepSlot::new(Split::Train, s.offset, s.rows.len(), s.rows.len())
                    .with_hyper(&config, s.hyper)
            })
            .collect();
        let d = self.data[0].as_ref().expect("checked by check_batch");
        self.ctx
            .queue
            .write_buffer(&d.order, 0, bytemuck::cast_slice(span.order()));
        self.steps.write(&self.ctx.device, &self.ctx.queue, &slots);
        let (network, opt) = (self.network(), self.attached()?);
        let mut in_flight: Option<wgpu::SubmissionIndex> = None;
        let mut encoding = (0.0, 0);
        for (chunk, first) in slots
            .chunks(STEPS_PER_SUBMIT)
            .zip((0..).step_by(STEPS_PER_SUBMIT))
        {
            let index = self.submit("training steps", |pass| {
                #[cfg(not(target_arch = "wasm32"))]
                let start = std::time::Instant::now();
                for (i, s) in chunk.iter().enumerate() {
                    self.steps.bind(pass, first + i);
                    network.encode_forward(pass, &self.kernels, Split::Train, s.batch as usize);
                    network.encode_backward(pass, Split::Train, s.batch as usize);
                    self.encode_update(pass, opt, first + i);
                }
                #[cfg(not(target_arch = "wasm32"))]
                {
                    encoding.0 += start.elapsed().as_secs_f64();
                }
            });
            encoding.1 += chunk.len();
            // Keep at most two chunks queued: progress stays honest and memory bounded. (In a
            // browser nothing can wait: the page's slices of ~30 ms bound the queue instead.)
            if let Some(previous) = in_flight.replace(index) {
                self.ctx.wait(previous)?;
            }
            progress((first + chunk.len()).min(slots.len()));
            // A fault the device reported stops the span (a browser, which cannot wait, sees
            // it at the next readback).
            self.ctx.poll_faults()?;
        }
        self.encoding.0 += encoding.0;
        self.encoding.1 += encoding.1;
        let last = slots.last().expect("a span has steps");
        self.last = Some(LastForward {
            slot: slots.len() - 1,
            split: Split::Train,
            batch: last.batch as usize,
        });
        Ok(())
    }
}
