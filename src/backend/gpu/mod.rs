//! The GPU backend: the same MLP as the CPU backend, in WGSL compute shaders through wgpu
//! (Vulkan, Metal, DX12; WebGPU in the browser).
//!
//! Everything is created once: pipelines, bind groups, the parameter and gradient buffers and
//! the optimizer's state buffers (one per `OptimizerKind::state_names`), the batch buffers (sized for the largest batch seen), and each dataset, uploaded once
//! as packed bytes. An epoch uploads its shuffled order and a table of per-step values (one
//! 256-byte uniform slot per step, bound with a dynamic offset), then encodes every step's
//! dispatches with no readback; loss and accuracy accumulate in a GPU buffer that is read when
//! the trainer asks for the epoch's stats. Steps are submitted in chunks, waiting for the chunk
//! before last, so progress is real and the queue never runs far ahead.
//!
//! Per step: gather (batch from the resident dataset), one GEMM per layer with bias and the
//! activation fused, softmax cross-entropy forward and backward in one kernel, the stats accumulation,
//! then per layer the weight-gradient GEMM, the bias-gradient reduction and the input-gradient
//! GEMM with the activation's derivative fused, and one optimizer kernel over the flat buffer.

pub mod kernels;

use super::{Backend, DeviceInfo, Inspect, LocalFuture, Split, Stats, StepHyper};
use crate::dataset::Dataset;
use crate::error::{Error, Result};
use crate::idx::{CLASSES, PIXELS};
use crate::model::{Activation, Architecture, ParamLayout};
use crate::optim::{OptimizerConfig, OptimizerKind};
use wgpu::util::DeviceExt;

/// Every GPU adapter this platform offers, in a stable order (the numbering of
/// `gpumlp devices`): Vulkan, Metal and DX12 natively (`WGPU_BACKEND` narrows them), the
/// browser's WebGPU adapter on wasm32. The program, the tests and the page all enumerate here.
pub async fn adapters() -> Vec<wgpu::Adapter> {
    #[cfg(not(target_arch = "wasm32"))]
    let (descriptor, backends) = (
        wgpu::InstanceDescriptor::new_without_display_handle_from_env(),
        wgpu::Backends::PRIMARY,
    );
    #[cfg(target_arch = "wasm32")]
    let (descriptor, backends) = (
        wgpu::InstanceDescriptor {
            backends: wgpu::Backends::BROWSER_WEBGPU,
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        },
        wgpu::Backends::BROWSER_WEBGPU,
    );
    wgpu::Instance::new(descriptor)
        .enumerate_adapters(backends)
        .await
}

/// Bytes between two steps' slots in the step table (WebGPU's dynamic-offset alignment).
const SLOT: u64 = 256;
/// Steps per submitted command buffer during an epoch.
const STEPS_PER_SUBMIT: usize = 32;
/// Workgroup size of the 1-D kernels (gather, softmax, bias gradient, optimizer).
const WG: u32 = 256;
/// Output tile of a GEMM workgroup (gemm.wgsl's TILE).
const GEMM_TILE: u32 = 64;

/// On a Linux machine with no desktop session, Mesa's Vulkan drivers print "error:
/// XDG_RUNTIME_DIR is invalid or not set" on every adapter enumeration. Where that variable is
/// unset, this makes a private (0700) folder for it and returns it, for the caller to set
/// before it starts any thread (the program and the GPU tests do, first thing in `main`).
pub fn runtime_dir_for_mesa() -> Option<std::path::PathBuf> {
    #[cfg(target_os = "linux")]
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt};
        let uid = std::fs::metadata("/proc/self")
            .map(|m| m.uid())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("gpumlp-runtime-{uid}"));
        let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
        return Some(dir);
    }
    None
}

/// A device and its queue, with what the adapter says about itself. Created apart from the
/// backend so that tests and the program can choose the adapter. Cloning shares the device.
#[derive(Clone)]
pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
}

impl GpuContext {
    /// Opens `adapter` with its own limits (larger storage bindings than WebGPU's defaults).
    pub async fn new(adapter: &wgpu::Adapter) -> Result<Self> {
        let limits = adapter.limits();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("gpumlp"),
                required_limits: limits.clone(),
                ..Default::default()
            })
            .await
            .map_err(|e| {
                Error::Gpu(format!(
                    "{}: cannot open the device: {e}",
                    adapter.get_info().name
                ))
            })?;
        Ok(GpuContext {
            device,
            queue,
            info: adapter.get_info(),
            limits,
        })
    }

    /// The adapter's type in the words `--json` and `gpumlp devices` use.
    pub fn kind(&self) -> &'static str {
        device_kind(self.info.device_type)
    }
}

/// "discrete-gpu", "integrated-gpu", "software-gpu" (lavapipe, SwiftShader, WARP) or "virtual-gpu".
pub fn device_kind(t: wgpu::DeviceType) -> &'static str {
    match t {
        wgpu::DeviceType::DiscreteGpu => "discrete-gpu",
        wgpu::DeviceType::IntegratedGpu => "integrated-gpu",
        wgpu::DeviceType::Cpu => "software-gpu",
        wgpu::DeviceType::VirtualGpu => "virtual-gpu",
        wgpu::DeviceType::Other => "other-gpu",
    }
}

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

/// Mirrors `Gemm` in gemm.wgsl.
#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct GemmParams {
    m: u32,
    n: u32,
    k: u32,
    batch_dim: u32,
    a_off: u32,
    a_rs: u32,
    a_cs: u32,
    b_off: u32,
    b_rs: u32,
    b_cs: u32,
    c_off: u32,
    aux_off: u32,
    epilogue: u32,
    _pad: [u32; 3],
}

/// Mirrors `Opt` in optimizer.wgsl: the optimizer's fixed settings, written once.
#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct OptParams {
    len: u32,
    momentum: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    _pad: [u32; 3],
}

const BATCH_M: u32 = 1;
const BATCH_K: u32 = 2;
const EPI_NONE: u32 = 0;
const EPI_BIAS: u32 = 1;
const EPI_BIAS_RELU: u32 = 2;
const EPI_RELU_MASK: u32 = 3;

/// The GEMM epilogues that apply `activation` after a hidden layer, and its derivative in backward.
fn activation_epilogues(activation: Activation) -> (u32, u32) {
    match activation {
        Activation::Relu => (EPI_BIAS_RELU, EPI_RELU_MASK),
    }
}

/// One GEMM of the network, with its bind group built once.
struct GemmCall {
    bind: wgpu::BindGroup,
    params: GemmParams,
}

/// A dataset resident on the GPU.
struct SplitData {
    images: wgpu::Buffer,
    labels: wgpu::Buffer,
    /// Batch order: the epoch's permutation, or the indices of a single forward.
    order: wgpu::Buffer,
    len: usize,
}

/// Buffers and bind groups that depend on the batch capacity and the datasets. (The gradient
/// and per-row buffers live on in the bind groups that use them.)
struct BatchResources {
    capacity: usize,
    /// `acts[0]` the input batch, `acts[l]` layer l-1's output after ReLU, the last the logits.
    acts: Vec<wgpu::Buffer>,
    labels: wgpu::Buffer,
    gather: [Option<wgpu::BindGroup>; 2],
    forward: Vec<GemmCall>,
    weight_grad: Vec<GemmCall>,
    /// `input_grad[l]` for layers l >= 1 (index l - 1).
    input_grad: Vec<GemmCall>,
    bias_grad: Vec<wgpu::BindGroup>,
    softmax: wgpu::BindGroup,
    accumulate: wgpu::BindGroup,
}

struct Pipelines {
    gather: wgpu::ComputePipeline,
    gemm: wgpu::ComputePipeline,
    softmax: wgpu::ComputePipeline,
    accumulate: wgpu::ComputePipeline,
    bias_grad: wgpu::ComputePipeline,
    /// The update rule of the backend's optimizer.
    optimizer: wgpu::ComputePipeline,
}

struct Layouts {
    step: wgpu::BindGroupLayout,
    gather: wgpu::BindGroupLayout,
    gemm: wgpu::BindGroupLayout,
    softmax: wgpu::BindGroupLayout,
    accumulate: wgpu::BindGroupLayout,
    bias_grad: wgpu::BindGroupLayout,
    /// The optimizer's settings, parameters, gradients and its state buffers.
    optimizer: wgpu::BindGroupLayout,
}

pub struct GpuBackend {
    ctx: GpuContext,
    arch: Architecture,
    layout: ParamLayout,
    optimizer: OptimizerConfig,
    layouts: Layouts,
    pipelines: Pipelines,
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
    /// The slot of the last single forward, which `backward` and `step` reuse.
    last: Option<StepSlot>,
}

fn storage(binding: u32, read_only: bool) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

fn uniform(binding: u32, dynamic: bool) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Uniform,
            has_dynamic_offset: dynamic,
            min_binding_size: None,
        },
        count: None,
    }
}

impl GpuBackend {
    /// A backend for `arch` trained by `optimizer` on `ctx`, with zero parameters and state (set
    /// them with `set_params` and `set_state`).
    pub fn new(ctx: GpuContext, arch: &Architecture, optimizer: &OptimizerConfig) -> Result<Self> {
        let layout = ParamLayout::new(arch);
        let device = &ctx.device;
        let layouts = Layouts::new(device, optimizer.kind);
        let pipelines = Pipelines {
            gather: make_pipeline(
                device,
                "gather.wgsl",
                "gather",
                &layouts.gather,
                &layouts.step,
            ),
            gemm: make_pipeline(device, "gemm.wgsl", "gemm", &layouts.gemm, &layouts.step),
            softmax: make_pipeline(
                device,
                "softmax_xent.wgsl",
                "softmax_xent",
                &layouts.softmax,
                &layouts.step,
            ),
            accumulate: make_pipeline(
                device,
                "accuracy.wgsl",
                "accumulate",
                &layouts.accumulate,
                &layouts.step,
            ),
            bias_grad: make_pipeline(
                device,
                "bias_grad.wgsl",
                "bias_grad",
                &layouts.bias_grad,
                &layouts.step,
            ),
            optimizer: make_pipeline(
                device,
                "optimizer.wgsl",
                match optimizer.kind {
                    OptimizerKind::Sgd => "sgd",
                    OptimizerKind::Adam => "adam",
                },
                &layouts.optimizer,
                &layouts.step,
            ),
        };

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
                size: 4 * layout.len as u64,
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
        let opt_params = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("optimizer settings"),
            contents: bytemuck::bytes_of(&OptParams {
                len: layout.len as u32,
                momentum: optimizer.momentum,
                beta1: optimizer.beta1,
                beta2: optimizer.beta2,
                eps: optimizer.eps,
                _pad: [0; 3],
            }),
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let mut entries = vec![entry(0, &opt_params), entry(1, &params), entry(2, &grads)];
        entries.extend((3..).zip(&state).map(|(i, b)| entry(i, b)));
        let optimizer_bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("optimizer"),
            layout: &layouts.optimizer,
            entries: &entries,
        });
        let (steps, step_bind) = step_table(device, &layouts.step, 1);
        let batch = BatchResources::new(
            &ctx,
            &layouts,
            arch,
            &layout,
            [None, None],
            &params,
            &grads,
            &stats,
            0,
        );
        Ok(GpuBackend {
            arch: arch.clone(),
            layout,
            optimizer: *optimizer,
            layouts,
            pipelines,
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
            ctx,
        })
    }

    /// Grows the batch buffers (and the order buffers that hold single batches) to `batch` rows.
    fn ensure_capacity(&mut self, batch: usize) -> Result<()> {
        if batch <= self.batch.capacity {
            return Ok(());
        }
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
                if d.order.size() < 4 * batch as u64 {
                    d.order = order_buffer(
                        &self.ctx.device,
                        if split == 0 {
                            "train order"
                        } else {
                            "test order"
                        },
                        d.len.max(batch),
                    );
                }
            }
        }
        self.batch = BatchResources::new(
            &self.ctx,
            &self.layouts,
            &self.arch,
            &self.layout,
            [self.data[0].as_ref(), self.data[1].as_ref()],
            &self.params,
            &self.grads,
            &self.stats,
            batch,
        );
        Ok(())
    }

    fn ensure_steps(&mut self, steps: usize) {
        if steps > self.steps_capacity {
            (self.steps, self.step_bind) = step_table(&self.ctx.device, &self.layouts.step, steps);
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

    /// A 1-D dispatch of `n` invocations as a 2-D grid within the per-dimension limit.
    fn dispatch_1d(&self, pass: &mut wgpu::ComputePass, n: usize) {
        let groups = (n as u32).div_ceil(WG).max(1);
        let max = self.ctx.limits.max_compute_workgroups_per_dimension;
        let x = groups.min(max);
        pass.dispatch_workgroups(x, groups.div_ceil(x), 1);
    }

    fn encode_gemm(&self, pass: &mut wgpu::ComputePass, call: &GemmCall, batch: usize) {
        let m = if call.params.batch_dim == BATCH_M {
            batch as u32
        } else {
            call.params.m
        };
        pass.set_pipeline(&self.pipelines.gemm);
        pass.set_bind_group(0, &call.bind, &[]);
        pass.dispatch_workgroups(call.params.n.div_ceil(GEMM_TILE), m.div_ceil(GEMM_TILE), 1);
    }

    /// Gather, the layers, softmax cross-entropy and the stats, for a batch of `batch`.
    fn encode_forward(
        &self,
        pass: &mut wgpu::ComputePass,
        split: Split,
        slot: usize,
        batch: usize,
    ) {
        pass.set_bind_group(1, &self.step_bind, &[(slot as u64 * SLOT) as u32]);
        pass.set_pipeline(&self.pipelines.gather);
        pass.set_bind_group(
            0,
            self.batch.gather[split as usize]
                .as_ref()
                .expect("uploaded"),
            &[],
        );
        self.dispatch_1d(pass, batch * PIXELS / 4);
        for call in &self.batch.forward {
            self.encode_gemm(pass, call, batch);
        }
        pass.set_pipeline(&self.pipelines.softmax);
        pass.set_bind_group(0, &self.batch.softmax, &[]);
        self.dispatch_1d(pass, batch);
        pass.set_pipeline(&self.pipelines.accumulate);
        pass.set_bind_group(0, &self.batch.accumulate, &[]);
        pass.dispatch_workgroups(1, 1, 1);
    }

    fn encode_backward(&self, pass: &mut wgpu::ComputePass, slot: usize, batch: usize) {
        pass.set_bind_group(1, &self.step_bind, &[(slot as u64 * SLOT) as u32]);
        for l in (0..self.arch.layers()).rev() {
            self.encode_gemm(pass, &self.batch.weight_grad[l], batch);
            pass.set_pipeline(&self.pipelines.bias_grad);
            pass.set_bind_group(0, &self.batch.bias_grad[l], &[]);
            self.dispatch_1d(pass, self.arch.sizes[l + 1]);
            if l > 0 {
                self.encode_gemm(pass, &self.batch.input_grad[l - 1], batch);
            }
        }
    }

    fn encode_update(&self, pass: &mut wgpu::ComputePass, slot: usize) {
        pass.set_bind_group(1, &self.step_bind, &[(slot as u64 * SLOT) as u32]);
        pass.set_pipeline(&self.pipelines.optimizer);
        pass.set_bind_group(0, &self.optimizer_bind, &[]);
        self.dispatch_1d(pass, self.layout.len);
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

    /// Copies `len` f32 from `buffer` at element `offset` back to the CPU: the backend's one
    /// readback path. The copy is submitted at once; the future resolves when the GPU has mapped
    /// it (natively this call waits for the device; in the browser the map completes when
    /// control returns to the event loop).
    fn read_f32(
        &self,
        buffer: &wgpu::Buffer,
        offset: usize,
        len: usize,
    ) -> impl std::future::Future<Output = Result<Vec<f32>>> + 'static {
        let size = 4 * len.max(1) as u64;
        let staging = self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self
            .ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("readback"),
            });
        if len > 0 {
            encoder.copy_buffer_to_buffer(buffer, 4 * offset as u64, &staging, 0, size);
        }
        self.ctx.queue.submit([encoder.finish()]);
        let (tx, rx) = futures_channel::oneshot::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        #[cfg(not(target_arch = "wasm32"))]
        let waited = self
            .ctx
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| Error::Gpu(format!("waiting for the GPU: {e}")));
        #[cfg(target_arch = "wasm32")]
        let waited = Ok(());
        async move {
            waited?;
            let lost = |e: &dyn std::fmt::Display| {
                Error::Gpu(format!(
                    "reading back from the GPU failed (device lost?): {e}"
                ))
            };
            rx.await.map_err(|e| lost(&e))?.map_err(|e| lost(&e))?;
            let data = bytemuck::pod_collect_to_vec::<u8, f32>(
                &staging.get_mapped_range(..).map_err(|e| lost(&e))?,
            );
            staging.unmap();
            Ok(data.into_iter().take(len).collect())
        }
    }

    /// Zeroes the running stats of `split`.
    fn reset_stats(&self, split: Split) {
        self.ctx
            .queue
            .write_buffer(&self.stats, 16 * split as u64, &[0u8; 16]);
    }

    /// Encodes a forward pass over rows `indices` of `split` (see [`Inspect::forward`]).
    fn forward_rows(&mut self, split: Split, indices: &[u32]) -> Result<()> {
        super::check_batch(split, indices, self.len(split))?;
        self.ensure_capacity(indices.len())?;
        let d = self.data[split as usize]
            .as_ref()
            .expect("checked by check_batch");
        self.ctx
            .queue
            .write_buffer(&d.order, 0, bytemuck::cast_slice(indices));
        let slot = StepSlot::new(split, 0, indices.len());
        self.write_slots(&[slot]);
        self.submit("forward", |pass| {
            self.encode_forward(pass, split, 0, indices.len())
        });
        self.last = Some(slot);
        Ok(())
    }
}

impl Layouts {
    fn new(device: &wgpu::Device, optimizer: OptimizerKind) -> Self {
        let bgl = |label: &str, entries: &[wgpu::BindGroupLayoutEntry]| {
            device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(label),
                entries,
            })
        };
        Layouts {
            step: bgl("step", &[uniform(0, true)]),
            gather: bgl(
                "gather",
                &[
                    storage(0, true),
                    storage(1, true),
                    storage(2, true),
                    storage(3, false),
                    storage(4, false),
                ],
            ),
            gemm: bgl(
                "gemm",
                &[
                    uniform(0, false),
                    storage(1, true),
                    storage(2, true),
                    storage(3, false),
                    storage(4, true),
                ],
            ),
            softmax: bgl(
                "softmax_xent",
                &[
                    storage(0, true),
                    storage(1, true),
                    storage(2, false),
                    storage(3, false),
                ],
            ),
            accumulate: bgl("accuracy", &[storage(0, true), storage(1, false)]),
            bias_grad: bgl(
                "bias_grad",
                &[uniform(0, false), storage(1, true), storage(2, false)],
            ),
            optimizer: {
                let mut entries = vec![uniform(0, false), storage(1, false), storage(2, true)];
                let states = optimizer.state_names().len() as u32;
                entries.extend((3..3 + states).map(|b| storage(b, false)));
                bgl("optimizer", &entries)
            },
        }
    }
}

/// A pipeline for `entry` of kernel `file`: its own bind group 0, and the step table as group 1.
fn make_pipeline(
    device: &wgpu::Device,
    file: &str,
    entry: &str,
    group0: &wgpu::BindGroupLayout,
    step: &wgpu::BindGroupLayout,
) -> wgpu::ComputePipeline {
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(file),
        source: wgpu::ShaderSource::Wgsl(kernels::source(file).into()),
    });
    let layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(entry),
        bind_group_layouts: &[Some(group0), Some(step)],
        immediate_size: 0,
    });
    device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(entry),
        layout: Some(&layout),
        module: &module,
        entry_point: Some(entry),
        compilation_options: Default::default(),
        cache: None,
    })
}

/// One GEMM, `C = A @ B` with A `[m, k]` and B `[k, n]` row-major, alone on the GPU: what
/// `gpumlp bench` times. It runs the training kernel (gemm.wgsl) with no epilogue.
pub struct GemmBench {
    pipeline: wgpu::ComputePipeline,
    bind: wgpu::BindGroup,
    step_bind: wgpu::BindGroup,
    groups: (u32, u32),
}

impl GemmBench {
    pub fn new(ctx: &GpuContext, m: usize, n: usize, k: usize) -> Result<Self> {
        let device = &ctx.device;
        let largest = 4 * (m * k).max(k * n).max(m * n) as u64;
        if largest > ctx.limits.max_storage_buffer_binding_size {
            return Err(Error::Gpu(format!(
                "a {m}x{k}x{n} GEMM needs {} MiB buffers, over this GPU's binding limit",
                largest >> 20
            )));
        }
        let layouts = Layouts::new(device, OptimizerKind::Sgd);
        let pipeline = make_pipeline(device, "gemm.wgsl", "gemm", &layouts.gemm, &layouts.step);
        let filled = |label: &str, len: usize| {
            let data: Vec<f32> = (0..len).map(|i| ((i % 13) as f32 - 6.0) * 0.01).collect();
            device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytemuck::cast_slice(&data),
                usage: wgpu::BufferUsages::STORAGE,
            })
        };
        let (a, b, c) = (
            filled("bench a", m * k),
            filled("bench b", k * n),
            filled("bench c", m * n),
        );
        let p = GemmParams {
            m: m as u32,
            n: n as u32,
            k: k as u32,
            a_rs: k as u32,
            a_cs: 1,
            b_rs: n as u32,
            b_cs: 1,
            ..Default::default()
        };
        let params = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("bench gemm"),
            contents: bytemuck::bytes_of(&p),
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("bench gemm"),
            layout: &layouts.gemm,
            entries: &[
                entry(0, &params),
                entry(1, &a),
                entry(2, &b),
                entry(3, &c),
                entry(4, &a),
            ],
        });
        let (steps, step_bind) = step_table(device, &layouts.step, 1);
        ctx.queue.write_buffer(
            &steps,
            0,
            bytemuck::bytes_of(&StepSlot::new(Split::Train, 0, m)),
        );
        let groups = (
            (n as u32).div_ceil(GEMM_TILE),
            (m as u32).div_ceil(GEMM_TILE),
        );
        let max = ctx.limits.max_compute_workgroups_per_dimension;
        if groups.0 > max || groups.1 > max {
            return Err(Error::Gpu(format!(
                "a {m}x{n} output needs more than {max} workgroups per dimension"
            )));
        }
        Ok(GemmBench {
            pipeline,
            bind,
            step_bind,
            groups,
        })
    }

    /// Runs the product `reps` times in one submission and waits until the GPU has finished.
    pub fn run(&self, ctx: &GpuContext, reps: usize) -> Result<()> {
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("bench"),
            });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("bench"),
                timestamp_writes: None,
            });
            pass.set_pipeline(&self.pipeline);
            pass.set_bind_group(0, &self.bind, &[]);
            pass.set_bind_group(1, &self.step_bind, &[0]);
            for _ in 0..reps {
                pass.dispatch_workgroups(self.groups.0, self.groups.1, 1);
            }
        }
        let index = ctx.queue.submit([encoder.finish()]);
        ctx.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(index),
                timeout: None,
            })
            .map_err(|e| Error::Gpu(format!("waiting for the GPU: {e}")))?;
        Ok(())
    }
}

/// Stats from the three floats of a split's slot in the stats buffer.
fn stats_from(s: &[f32]) -> Stats {
    Stats {
        loss_sum: s[0] as f64,
        correct: s[1] as u64,
        count: s[2] as u64,
    }
}

fn entry(binding: u32, buffer: &wgpu::Buffer) -> wgpu::BindGroupEntry<'_> {
    wgpu::BindGroupEntry {
        binding,
        resource: buffer.as_entire_binding(),
    }
}

fn order_buffer(device: &wgpu::Device, label: &str, len: usize) -> wgpu::Buffer {
    device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: 4 * len.max(1) as u64,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
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

impl BatchResources {
    #[allow(clippy::too_many_arguments)]
    fn new(
        ctx: &GpuContext,
        layouts: &Layouts,
        arch: &Architecture,
        layout: &ParamLayout,
        data: [Option<&SplitData>; 2],
        params: &wgpu::Buffer,
        grads: &wgpu::Buffer,
        stats: &wgpu::Buffer,
        capacity: usize,
    ) -> Self {
        let device = &ctx.device;
        let cap = capacity.max(1);
        let f32_buffer = |label: String, len: usize| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(&label),
                size: 4 * len.max(1) as u64,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            })
        };
        let acts: Vec<_> = arch
            .sizes
            .iter()
            .enumerate()
            .map(|(l, &n)| f32_buffer(format!("activations {l}"), cap * n))
            .collect();
        let dz: Vec<_> = (0..arch.layers())
            .map(|l| f32_buffer(format!("dz {l}"), cap * arch.sizes[l + 1]))
            .collect();
        let labels = f32_buffer("batch labels".into(), cap);
        let row_stats = f32_buffer("row stats".into(), 2 * cap);
        let bind = |label: &str, layout: &wgpu::BindGroupLayout, buffers: &[&wgpu::Buffer]| {
            let entries: Vec<_> = buffers
                .iter()
                .enumerate()
                .map(|(i, b)| entry(i as u32, b))
                .collect();
            device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(label),
                layout,
                entries: &entries,
            })
        };
        let gemm = |label: String,
                    p: GemmParams,
                    a: &wgpu::Buffer,
                    b: &wgpu::Buffer,
                    c: &wgpu::Buffer,
                    aux: &wgpu::Buffer| {
            let uniform = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(&label),
                contents: bytemuck::bytes_of(&p),
                usage: wgpu::BufferUsages::UNIFORM,
            });
            GemmCall {
                bind: bind(&label, &layouts.gemm, &[&uniform, a, b, c, aux]),
                params: p,
            }
        };
        let gather = data.map(|d| {
            d.map(|d| {
                bind(
                    "gather",
                    &layouts.gather,
                    &[&d.images, &d.labels, &d.order, &acts[0], &labels],
                )
            })
        });
        let layers = arch.layers();
        let mut forward = Vec::new();
        let mut weight_grad = Vec::new();
        let mut input_grad = Vec::new();
        let mut bias_grad = Vec::new();
        for l in 0..layers {
            let (inp, out) = (arch.sizes[l] as u32, arch.sizes[l + 1] as u32);
            let (w, b) = (layout.weight(l).offset as u32, layout.bias(l).offset as u32);
            // Z = A @ W^T (+ b, the activation but on the logits)
            let (activate, derivative) = activation_epilogues(arch.activation);
            let epilogue = if l + 1 < layers { activate } else { EPI_BIAS };
            let p = GemmParams {
                m: cap as u32,
                n: out,
                k: inp,
                batch_dim: BATCH_M,
                a_rs: inp,
                a_cs: 1,
                b_off: w,
                b_rs: 1,
                b_cs: inp,
                aux_off: b,
                epilogue,
                ..Default::default()
            };
            forward.push(gemm(
                format!("forward {l}"),
                p,
                &acts[l],
                params,
                &acts[l + 1],
                params,
            ));
            // dW = dZ^T @ A
            let p = GemmParams {
                m: out,
                n: inp,
                k: cap as u32,
                batch_dim: BATCH_K,
                a_rs: 1,
                a_cs: out,
                b_rs: inp,
                b_cs: 1,
                c_off: w,
                epilogue: EPI_NONE,
                ..Default::default()
            };
            weight_grad.push(gemm(
                format!("weight grad {l}"),
                p,
                &dz[l],
                &acts[l],
                grads,
                params,
            ));
            let uniform = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("bias grad"),
                contents: bytemuck::cast_slice(&[out, b, 0, 0]),
                usage: wgpu::BufferUsages::UNIFORM,
            });
            bias_grad.push(bind(
                "bias grad",
                &layouts.bias_grad,
                &[&uniform, &dz[l], grads],
            ));
            if l > 0 {
                // dZ_prev = (dZ @ W) * f'(A), the derivative read off the activation's output
                let p = GemmParams {
                    m: cap as u32,
                    n: inp,
                    k: out,
                    batch_dim: BATCH_M,
                    a_rs: out,
                    a_cs: 1,
                    b_off: w,
                    b_rs: inp,
                    b_cs: 1,
                    epilogue: derivative,
                    ..Default::default()
                };
                input_grad.push(gemm(
                    format!("input grad {l}"),
                    p,
                    &dz[l],
                    params,
                    &dz[l - 1],
                    &acts[l],
                ));
            }
        }
        let softmax = bind(
            "softmax_xent",
            &layouts.softmax,
            &[&acts[layers], &labels, &dz[layers - 1], &row_stats],
        );
        let accumulate = bind("accuracy", &layouts.accumulate, &[&row_stats, stats]);
        BatchResources {
            capacity,
            acts,
            labels,
            gather,
            forward,
            weight_grad,
            input_grad,
            bias_grad,
            softmax,
            accumulate,
        }
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
        let d = self.data[split as usize].as_ref().unwrap();
        self.batch.gather[split as usize] =
            Some(device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("gather"),
                layout: &self.layouts.gather,
                entries: &[
                    entry(0, &d.images),
                    entry(1, &d.labels),
                    entry(2, &d.order),
                    entry(3, &self.batch.acts[0]),
                    entry(4, &self.batch.labels),
                ],
            }));
        Ok(())
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
        Box::pin(self.read_f32(&self.params, 0, self.layout.len))
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
            .map(|b| self.read_f32(b, 0, self.layout.len))
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
        self.ensure_capacity(batch.min(order.len()))?;
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
            let index = self.submit("training steps", |pass| {
                for (i, s) in chunk.iter().enumerate() {
                    self.encode_forward(pass, Split::Train, first + i, s.batch as usize);
                    self.encode_backward(pass, first + i, s.batch as usize);
                    self.encode_update(pass, first + i);
                }
            });
            // Keep at most two chunks queued: progress stays honest and memory bounded. (In a
            // browser nothing can wait: the page's slices of ~30 ms bound the queue instead.)
            if let Some(previous) = in_flight.replace(index) {
                #[cfg(not(target_arch = "wasm32"))]
                self.ctx
                    .device
                    .poll(wgpu::PollType::Wait {
                        submission_index: Some(previous),
                        timeout: None,
                    })
                    .map_err(|e| Error::Gpu(format!("waiting for the GPU: {e}")))?;
                #[cfg(target_arch = "wasm32")]
                let _ = previous;
            }
            progress((first + chunk.len()).min(slots.len()));
        }
        self.last = slots.last().copied();
        Ok(())
    }

    fn take_stats(&mut self, split: Split) -> LocalFuture<'_, Result<Stats>> {
        let read = self.read_f32(&self.stats, 4 * split as usize, 3);
        self.reset_stats(split);
        Box::pin(async move { Ok(stats_from(&read.await?)) })
    }

    fn evaluate(&mut self, split: Split) -> LocalFuture<'_, Result<Stats>> {
        Box::pin(async move {
            self.reset_stats(split);
            let indices: Vec<u32> = (0..self.len(split) as u32).collect();
            for chunk in indices.chunks(super::EVAL_BATCH) {
                self.forward_rows(split, chunk)?;
            }
            self.take_stats(split).await
        })
    }
}

impl Inspect for GpuBackend {
    fn forward(&mut self, split: Split, indices: &[u32]) -> Result<()> {
        self.forward_rows(split, indices)
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
        Box::pin(self.read_f32(&self.batch.acts[self.arch.layers()], 0, batch * CLASSES))
    }

    fn grads(&mut self) -> LocalFuture<'_, Result<Vec<f32>>> {
        Box::pin(self.read_f32(&self.grads, 0, self.layout.len))
    }
}
