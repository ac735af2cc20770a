//! The device side shared by every kernel family: finding adapters, opening a device, building
//! pipelines (trusted or checked), bind group layout entries, and the one readback path.

use super::kernels;
use super::tuning::GemmTuning;
use crate::error::{Error, Result};
use std::sync::{Arc, Mutex};

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
    /// Whether shaders keep naga's runtime bounds checks. Natively they run without them
    /// (trusted modules: the checks cost many times a GEMM's time on a real GPU, README
    /// "Devices"), safe because the backend
    /// proves every index before it encodes a dispatch (see `bounds`); `GPUMLP_CHECKED=1` turns
    /// them back on for debugging. The browser always keeps them (WebGPU has no trusted modules).
    pub checked: bool,
    /// Whether reductions use subgroup operations (wgpu's SUBGROUP feature, requested natively
    /// where the adapter has it); the plain path is used otherwise (the tests run both).
    pub subgroups: bool,
    /// Whether passes can be timed by the GPU itself (wgpu's TIMESTAMP_QUERY, requested
    /// natively where the adapter has it): see [`GpuContext::time_pass`].
    pub timestamps: bool,
    /// The sizes of the square cooperative matrices (f16 operands, f32 sums) the device was
    /// opened with, for mixed precision (empty where the adapter has none: the browser,
    /// bookworm's lavapipe), and the invocations that run them together (the subgroup size).
    pub cooperative: Vec<u32>,
    pub subgroup_size: u32,
    /// The GEMM variant chosen per shape on this adapter. Shared with clones of the context, so
    /// the program can save what the backend tuned.
    pub tuning: Arc<Mutex<GemmTuning>>,
    /// The first fault the device reported on its own (an error no call returned, such as an
    /// allocation the driver refused, or the device lost), which every later call returns.
    fault: Arc<Mutex<Option<String>>>,
}

impl GpuContext {
    /// The square cooperative matrix sizes `adapter` offers with f16 operands and f32 sums, where it
    /// also has f16 in shaders (natively only: WebGPU has no cooperative matrices), smallest first.
    pub fn cooperative_sizes(adapter: &wgpu::Adapter) -> Vec<u32> {
        let needed = wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX | wgpu::Features::SHADER_F16;
        if cfg!(target_arch = "wasm32") || !adapter.features().contains(needed) {
            return Vec::new();
        }
        let mut sizes: Vec<u32> = adapter
            .cooperative_matrix_properties()
            .iter()
            .filter(|p| {
                p.m_size == p.n_size
                    && p.n_size == p.k_size
                    && matches!(p.m_size, 8 | 16)
                    && p.ab_type == wgpu::CooperativeScalarType::F16
                    && p.cr_type == wgpu::CooperativeScalarType::F32
            })
            .map(|p| p.m_size)
            .collect();
        sizes.sort_unstable();
        sizes.dedup();
        sizes
    }

    /// Opens `adapter` with its own limits (larger storage bindings than WebGPU's defaults),
    /// runtime checks as `GPUMLP_CHECKED` says (off unless it is 1; always on in a browser).
    pub async fn new(adapter: &wgpu::Adapter) -> Result<Self> {
        let checked = cfg!(target_arch = "wasm32")
            || std::env::var("GPUMLP_CHECKED").is_ok_and(|v| v.trim() == "1");
        Self::with_checks(adapter, checked).await
    }

    /// Opens `adapter` with runtime bounds checks on or off (the tests run every kernel both ways).
    pub async fn with_checks(adapter: &wgpu::Adapter, checked: bool) -> Result<Self> {
        let limits = adapter.limits();
        let cooperative = Self::cooperative_sizes(adapter);
        let mixed = wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX | wgpu::Features::SHADER_F16;
        let mut features = if cfg!(target_arch = "wasm32") {
            wgpu::Features::empty()
        } else {
            adapter.features() & (wgpu::Features::SUBGROUP | wgpu::Features::TIMESTAMP_QUERY)
        };
        if !cooperative.is_empty() {
            features |= mixed;
        }
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("gpumlp"),
                required_limits: limits.clone(),
                required_features: features,
                // SAFETY: the one experimental feature requested, cooperative matrices, is used
                // only by gemm_mixed.wgsl, whose every index the host proves as for gemm.wgsl;
                // it is requested only where the adapter reports it.
                experimental_features: if cooperative.is_empty() {
                    wgpu::ExperimentalFeatures::disabled()
                } else {
                    unsafe { wgpu::ExperimentalFeatures::enabled() }
                },
                ..Default::default()
            })
            .await
            .map_err(|e| {
                Error::Gpu(format!(
                    "{}: cannot open the device: {e}",
                    adapter.get_info().name
                ))
            })?;
        let info = adapter.get_info();
        // Without these, wgpu's defaults panic on such faults; here they become errors.
        let fault = Arc::new(Mutex::new(None));
        let record = |fault: &Arc<Mutex<Option<String>>>| {
            let fault = fault.clone();
            move |what: String| {
                if let Ok(mut f) = fault.lock() {
                    f.get_or_insert(what);
                }
            }
        };
        let on_error = record(&fault);
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            // Its text names the call and the cause on the lines after the first.
            on_error(one_line(&e.to_string()))
        }));
        // A lost device is the cause of whatever failed after it (buffers made on a lost device
        // are invalid, and say so first): it replaces any fault recorded before.
        let lost = fault.clone();
        device.set_device_lost_callback(move |reason, message| {
            let what = match reason {
                wgpu::DeviceLostReason::Destroyed => "the device was destroyed".to_string(),
                _ => format!("the device was lost: {}", one_line(&message)),
            };
            if let Ok(mut f) = lost.lock() {
                *f = Some(what);
            }
        });
        let tuning = GemmTuning {
            device: GemmTuning::device_key(&info),
            enabled: tuning_wanted(info.device_type),
            software: info.device_type == wgpu::DeviceType::Cpu,
            no_split: std::env::var("GPUMLP_NO_SPLIT_K").is_ok_and(|v| v.trim() == "1"),
            ..Default::default()
        };
        let subgroup_size = info.subgroup_max_size.clamp(1, 128);
        Ok(GpuContext {
            device,
            queue,
            info,
            limits,
            checked: checked || cfg!(target_arch = "wasm32"),
            subgroups: features.contains(wgpu::Features::SUBGROUP),
            timestamps: features.contains(wgpu::Features::TIMESTAMP_QUERY),
            cooperative,
            subgroup_size,
            tuning: Arc::new(Mutex::new(tuning)),
            fault,
        })
    }

    /// Whether mixed precision can run here, else why not (one line naming the adapter).
    pub fn check_mixed(&self) -> Result<()> {
        if self.cooperative.is_empty() {
            return Err(Error::Gpu(format!(
                "{}: --precision mixed needs cooperative matrices with f16 operands and f32 sums (Vulkan's VK_KHR_cooperative_matrix, Metal's simdgroup matrices), which this adapter lacks",
                self.info.name
            )));
        }
        Ok(())
    }

    /// The most bytes one buffer bound as storage may hold here.
    pub(crate) fn binding_limit(&self) -> u64 {
        self.limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size)
    }

    /// The fault the device reported on its own, if any, as the error every call now returns.
    pub(crate) fn check(&self) -> Result<()> {
        match self.fault.lock().ok().and_then(|f| f.clone()) {
            Some(fault) => Err(Error::Gpu(format!("{}: {fault}", self.info.name))),
            None => Ok(()),
        }
    }

    /// [`GpuContext::check`] after letting the device report what it has without waiting
    /// (natively; a browser reports at its next readback).
    pub(crate) fn poll_faults(&self) -> Result<()> {
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::Poll)
            .map_err(|e| self.failed(format!("polling the GPU: {e}")))?;
        self.check()
    }

    /// `what` failed: the device's own fault where it reported one (the cause), else `what`.
    fn failed(&self, what: impl std::fmt::Display) -> Error {
        match self.check() {
            Err(fault) => fault,
            Ok(()) => Error::Gpu(format!("{}: {what}", self.info.name)),
        }
    }

    /// The adapter's type in the words `--json` and `gpumlp devices` use.
    pub fn kind(&self) -> &'static str {
        device_kind(self.info.device_type)
    }

    /// A pipeline for `entry` of kernel `file` (with the `injected` functions it calls) and the
    /// given pipeline-overridable constants, its own bind group 0, and the step table as group 1.
    pub(crate) fn pipeline(
        &self,
        file: &str,
        entry: &str,
        group0: &wgpu::BindGroupLayout,
        step: &wgpu::BindGroupLayout,
        constants: &[(&str, f64)],
        injected: &str,
    ) -> wgpu::ComputePipeline {
        let desc = wgpu::ShaderModuleDescriptor {
            label: Some(file),
            source: wgpu::ShaderSource::Wgsl(
                kernels::source(file, self.subgroups, injected).into(),
            ),
        };
        let module = if self.checked {
            self.device.create_shader_module(desc)
        } else {
            // SAFETY: every kernel guards its edges explicitly (its header says how), indices
            // into its workgroup and register arrays are bounded by constants the host checks
            // (`bounds::gemm_variant`), and the host proves, before encoding any dispatch, that
            // the largest index each dispatch can form lies inside the buffers it binds
            // (`bounds`). Every loop is bounded by a uniform count. The parity tests run each
            // kernel with the checks on and off.
            unsafe {
                self.device
                    .create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked())
            }
        };
        let layout = self
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(entry),
                bind_group_layouts: &[Some(group0), Some(step)],
                immediate_size: 0,
            });
        self.device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: Some(&layout),
                module: &module,
                entry_point: Some(entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants,
                    // Every kernel writes its workgroup memory before reading it; zeroing it
                    // first is only a safety net, kept where the checks are.
                    zero_initialize_workgroup_memory: self.checked,
                },
                cache: None,
            })
    }

    /// Waits until the GPU has finished `submission` (natively; a browser cannot wait).
    pub(crate) fn wait(&self, submission: wgpu::SubmissionIndex) -> Result<()> {
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(submission),
                timeout: None,
            })
            .map_err(|e| self.failed(format!("waiting for the GPU: {e}")))?;
        #[cfg(target_arch = "wasm32")]
        let _ = submission;
        self.check()
    }

    /// How [`GpuContext::time_pass`] measures, in words for `gpumlp bench`.
    pub fn timer(&self) -> &'static str {
        if self.timestamps {
            "GPU timestamps"
        } else {
            "wall clock"
        }
    }

    /// Runs `work` in one compute pass, waits for it, and returns the seconds it took: between
    /// timestamps the GPU writes at the pass's start and end where the adapter has
    /// TIMESTAMP_QUERY (the pass alone), else the wall clock around submission and wait (which
    /// adds the submission's and the wake-up's latency). Natively only.
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn time_pass(
        &self,
        label: &str,
        work: impl FnOnce(&mut wgpu::ComputePass),
    ) -> Result<f64> {
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) });
        let begin = |encoder: &mut wgpu::CommandEncoder, writes| {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(label),
                timestamp_writes: writes,
            });
            work(&mut pass);
        };
        if !self.timestamps {
            let start = std::time::Instant::now();
            begin(&mut encoder, None);
            self.wait(self.queue.submit([encoder.finish()]))?;
            return Ok(start.elapsed().as_secs_f64());
        }
        let queries = self.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some(label),
            ty: wgpu::QueryType::Timestamp,
            count: 2,
        });
        let resolved = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: 16,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        begin(
            &mut encoder,
            Some(wgpu::ComputePassTimestampWrites {
                query_set: &queries,
                beginning_of_pass_write_index: Some(0),
                end_of_pass_write_index: Some(1),
            }),
        );
        encoder.resolve_query_set(&queries, 0..2, &resolved, 0);
        self.queue.submit([encoder.finish()]);
        let ticks: Vec<u64> = pollster::block_on(self.read::<u64>(&resolved, 0, 2))?;
        let period_ns = self.queue.get_timestamp_period() as f64;
        Ok(ticks[1].saturating_sub(ticks[0]) as f64 * period_ns * 1e-9)
    }

    /// Copies `len` f32 from `buffer` at element `offset` back to the CPU: the backend's one
    /// readback path (see [`GpuContext::read`]).
    pub(crate) fn read_f32(
        &self,
        buffer: &wgpu::Buffer,
        offset: usize,
        len: usize,
    ) -> impl std::future::Future<Output = Result<Vec<f32>>> + 'static {
        self.read::<f32>(buffer, offset, len)
    }

    /// Copies `len` values of `T` from `buffer` at element `offset` back to the CPU. The copy is
    /// submitted at once; the future resolves when the GPU has mapped it (natively this call
    /// waits for the device; in the browser the map completes when control returns to the
    /// event loop).
    pub(crate) fn read<T: bytemuck::Pod>(
        &self,
        buffer: &wgpu::Buffer,
        offset: usize,
        len: usize,
    ) -> impl std::future::Future<Output = Result<Vec<T>>> + 'static {
        let width = std::mem::size_of::<T>() as u64;
        let size = width * len.max(1) as u64;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("readback"),
            });
        if len > 0 {
            encoder.copy_buffer_to_buffer(buffer, width * offset as u64, &staging, 0, size);
        }
        self.queue.submit([encoder.finish()]);
        let (tx, rx) = futures_channel::oneshot::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        #[cfg(not(target_arch = "wasm32"))]
        let waited = self
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| self.failed(format!("waiting for the GPU: {e}")));
        #[cfg(target_arch = "wasm32")]
        let waited = Ok(());
        let ctx = self.clone();
        async move {
            waited?;
            ctx.check()?;
            let lost = |e: &dyn std::fmt::Display| {
                ctx.failed(format!("reading back from the GPU failed: {e}"))
            };
            rx.await.map_err(|e| lost(&e))?.map_err(|e| lost(&e))?;
            let data = bytemuck::pod_collect_to_vec::<u8, T>(
                &staging.get_mapped_range(..).map_err(|e| lost(&e))?,
            );
            staging.unmap();
            Ok(data.into_iter().take(len).collect())
        }
    }
}

/// Whether GEMM variants are timed at a shape's first use: natively on real GPUs, unless
/// `GPUMLP_TUNE=0`; `GPUMLP_TUNE=1` asks for it on a software adapter too (where timings say
/// nothing about real hardware, so it is off by default). A browser cannot time the GPU.
fn tuning_wanted(device_type: wgpu::DeviceType) -> bool {
    if cfg!(target_arch = "wasm32") {
        return false;
    }
    match std::env::var("GPUMLP_TUNE").as_deref().map(str::trim) {
        Ok("0") => false,
        Ok("1") => true,
        _ => device_type != wgpu::DeviceType::Cpu,
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

/// A storage buffer entry of a bind group layout.
pub(crate) fn storage(binding: u32, read_only: bool) -> wgpu::BindGroupLayoutEntry {
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

/// A uniform buffer entry of a bind group layout (`dynamic`: bound with a dynamic offset).
pub(crate) fn uniform(binding: u32, dynamic: bool) -> wgpu::BindGroupLayoutEntry {
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

/// A whole buffer bound at `binding`.
pub(crate) fn entry(binding: u32, buffer: &wgpu::Buffer) -> wgpu::BindGroupEntry<'_> {
    wgpu::BindGroupEntry {
        binding,
        resource: buffer.as_entire_binding(),
    }
}

/// Elements of f32 (or u32) in `buffer`.
pub(crate) fn words(buffer: &wgpu::Buffer) -> u64 {
    buffer.size() / 4
}

/// A message on one line (wgpu's errors run over several: the error, then the call and cause).
fn one_line(message: &str) -> String {
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines.join(" ")
}
