//! Choosing what to train on, and `gpumlp devices`.
//!
//! Policy: `auto` takes a discrete GPU, else an integrated GPU, else the CPU
//! backend; when it finds such a GPU it times one B1 training step on it and on the CPU backend
//! (well under a second), keeps the faster, and caches the verdict per machine (a GPU slower
//! than the cores, as a laptop's integrated one can be, loses to them). A software adapter (lavapipe, SwiftShader, WARP: device type "CPU") is far slower
//! than the CPU backend, so it is used only when asked for with `--device software`. `--device N`
//! takes adapter N as `gpumlp devices` numbers them. Only the primary APIs (Vulkan, Metal, DX12)
//! are considered; `WGPU_BACKEND` narrows them further.
//!
//! In a job of several ranks ([`Job`]) each rank on a machine takes its own adapter of the kind
//! asked for (the local rank's, modulo their number), and `auto` takes a GPU wherever there is
//! one, untimed: ranks timing devices at once would measure each other.

use crate::cli::Device;
use crate::files::write_atomic;
use crate::ranks::Job;
use crate::tuning::TuningCache;
use crate::workload::{self, b1_step_seconds};
use anyhow::{anyhow, bail, Result};
use gpumlp::backend::gpu::GemmTuning;
use gpumlp::backend::gpu::{device_kind, GpuBackend, GpuContext};
use gpumlp::backend::Backend;
use gpumlp::{Architecture, CpuBackend, Precision};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Every adapter wgpu finds, in a stable order (the numbering of `gpumlp devices`).
pub fn adapters() -> Vec<wgpu::Adapter> {
    pollster::block_on(gpumlp::backend::gpu::adapters())
}

/// The adapter `device` selects, or None for the CPU backend; of several adapters of the
/// kind asked for, the `local_rank`-th (modulo their number).
fn select(device: &Device, adapters: &[wgpu::Adapter], local_rank: usize) -> Result<Option<usize>> {
    let find = |wanted: &[wgpu::DeviceType]| {
        let matching: Vec<usize> = adapters
            .iter()
            .enumerate()
            .filter(|(_, a)| wanted.contains(&a.get_info().device_type))
            .map(|(i, _)| i)
            .collect();
        (!matching.is_empty()).then(|| matching[local_rank % matching.len()])
    };
    use wgpu::DeviceType::*;
    let none = |flag: &str, what: &str| {
        anyhow!("--device {flag}: no {what} found; `gpumlp devices` lists what there is")
    };
    Ok(match device {
        Device::Cpu => None,
        Device::Auto => find(&[DiscreteGpu]).or_else(|| find(&[IntegratedGpu])),
        Device::Gpu => Some(
            find(&[DiscreteGpu])
                .or_else(|| find(&[IntegratedGpu]))
                .ok_or_else(|| none("gpu", "GPU adapter"))?,
        ),
        Device::IntegratedGpu => {
            Some(find(&[IntegratedGpu]).ok_or_else(|| none("igpu", "integrated GPU"))?)
        }
        Device::Software => Some(find(&[Cpu]).ok_or_else(|| {
            none(
                "software",
                "software adapter (apt-get install mesa-vulkan-drivers provides lavapipe)",
            )
        })?),
        Device::Index(i) if *i < adapters.len() => Some(*i),
        Device::Index(i) => bail!(
            "--device {i}: there are {} GPU adapters (0..{}); `gpumlp devices` lists them",
            adapters.len(),
            adapters.len().saturating_sub(1) as i64
        ),
    })
}

/// Opens the GPU `device` asks for (this rank's, in a job), or None for the CPU backend.
pub fn open_gpu(device: &Device, job: &Job) -> Result<Option<GpuContext>> {
    if *device == Device::Cpu {
        return Ok(None);
    }
    let adapters = adapters();
    let Some(index) = select(device, &adapters, job.local_rank)? else {
        return Ok(None);
    };
    match pollster::block_on(GpuContext::new(&adapters[index])) {
        Ok(context) if *device == Device::Auto && job.ranks == 1 => Ok(faster_than_cpu(context)),
        Ok(context) => Ok(Some(context)),
        // `auto` promises to train somewhere: fall back to the CPU, and say so.
        Err(e) if *device == Device::Auto => {
            eprintln!("note: using the CPU backend: {e}");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// The backend `device` asks for, built for `arch`, and on a GPU its GEMM tuning cache (save
/// it once the backend has run) and the test-only device loss (see [`DeviceLoss`]).
pub fn open(device: &Device, arch: &Architecture, job: &Job) -> Result<Opened> {
    on(open_gpu(device, job)?, arch, Precision::F32)
}

/// A backend, its GPU's tuning cache and the test-only device loss: what [`open`] gives.
pub type Opened = (Box<dyn Backend>, Option<TuningCache>, Option<DeviceLoss>);

/// The backend for `arch` on the GPU [`open_gpu`] opened, its GEMMs in `precision`, or on the
/// CPU (what [`open`] does in two steps, for a program that opens the device before it knows
/// the network).
pub fn on(gpu: Option<GpuContext>, arch: &Architecture, precision: Precision) -> Result<Opened> {
    Ok(match gpu {
        Some(context) => {
            let cache = TuningCache::load(&context);
            let loss = DeviceLoss::from_env(&context)?;
            let backend = GpuBackend::with_precision(context, arch, precision)?;
            (Box::new(backend), Some(cache), loss)
        }
        None => {
            check_precision(None, precision)?;
            (Box::new(CpuBackend::new(arch)), None, None)
        }
    })
}

/// Refuses a precision the device cannot run: mixed on the CPU backend, or on an adapter
/// without cooperative matrices.
pub fn check_precision(gpu: Option<&GpuContext>, precision: Precision) -> Result<()> {
    match (gpu, precision) {
        (_, Precision::F32) => Ok(()),
        (Some(ctx), Precision::Mixed) => Ok(ctx.check_mixed()?),
        (None, Precision::Mixed) => bail!(
            "--precision mixed: the CPU backend computes in f32 only; mixed precision needs a GPU with cooperative matrices (`gpumlp devices` says which have them)"
        ),
    }
}

/// Fault injection for the tests of GPU faults, not a user setting:
/// `GPUMLP_TEST_LOSE_DEVICE=EPOCH:STEP` destroys the GPU device once training has handed STEP
/// steps of epoch EPOCH to it, as a driver reset or a reclaimed adapter would lose it.
pub struct DeviceLoss {
    epoch: usize,
    step: usize,
    ctx: GpuContext,
    done: std::cell::Cell<bool>,
}

impl DeviceLoss {
    fn from_env(ctx: &GpuContext) -> Result<Option<Self>> {
        let Ok(at) = std::env::var("GPUMLP_TEST_LOSE_DEVICE") else {
            return Ok(None);
        };
        let parsed = at
            .split_once(':')
            .and_then(|(e, s)| Some((e.parse().ok()?, s.parse().ok()?)));
        let Some((epoch, step)) = parsed else {
            bail!("GPUMLP_TEST_LOSE_DEVICE={at}: expected EPOCH:STEP");
        };
        Ok(Some(DeviceLoss {
            epoch,
            step,
            ctx: ctx.clone(),
            done: std::cell::Cell::new(false),
        }))
    }

    /// Destroys the device if training has reached the chosen point (once).
    pub fn at(&self, epoch: usize, step: usize) {
        if epoch == self.epoch && step >= self.step && !self.done.replace(true) {
            self.ctx.device.destroy();
        }
    }
}

/// Timed B1 steps per device when `auto` or `devices` compares them (after 2 of warm-up).
const PROBE_STEPS: usize = 4;

/// Seconds per B1 training step (784-512-256-10, batch 128, Adam) on `gpu`, or on the CPU.
fn b1_step(gpu: Option<&GpuContext>) -> Result<f64> {
    let arch = workload::architecture();
    Ok(match gpu {
        Some(ctx) => b1_step_seconds(&mut GpuBackend::new(ctx.clone(), &arch)?, PROBE_STEPS)?,
        None => b1_step_seconds(&mut CpuBackend::new(&arch), PROBE_STEPS)?,
    })
}

/// `auto`'s measured verdict, cached in `<cache>/device-choice.json`.
#[derive(Serialize, Deserialize)]
struct Verdict {
    gpu: String,
    cpu: String,
    gpu_step_seconds: f64,
    cpu_step_seconds: f64,
}

/// What the CPU backend reports about itself (its thread count), without building a model.
pub fn cpu_device() -> gpumlp::DeviceInfo {
    CpuBackend::new(&Architecture::mlp(&[1]).expect("a valid architecture")).device()
}

/// `ctx` if it trains B1 faster than the CPU backend, else None: measured once per machine
/// (GPU, driver and CPU thread count), then read from the cache. Says which and why.
fn faster_than_cpu(ctx: GpuContext) -> Option<GpuContext> {
    let path = crate::data::cache_dir().join("device-choice.json");
    let (gpu, cpu) = (GemmTuning::device_key(&ctx.info), cpu_device().name);
    let cached = std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| serde_json::from_str::<Verdict>(&text).ok())
        .filter(|v| v.gpu == gpu && v.cpu == cpu);
    let (verdict, how) = match cached {
        Some(v) => (v, "cached"),
        None => {
            // Timing the GPU tunes its GEMMs for B1's shapes: keep what that found.
            let tuning = TuningCache::load(&ctx);
            let measured = b1_step(Some(&ctx)).and_then(|g| Ok((g, b1_step(None)?)));
            if let Err(e) = tuning.save() {
                eprintln!("note: the GEMM tuning could not be cached ({e:#})");
            }
            match measured {
                Ok((gpu_step_seconds, cpu_step_seconds)) => {
                    let v = Verdict {
                        gpu,
                        cpu,
                        gpu_step_seconds,
                        cpu_step_seconds,
                    };
                    let json = serde_json::to_string_pretty(&v).expect("verdict serialises");
                    let saved = std::fs::create_dir_all(path.parent().expect("a folder"))
                        .map_err(anyhow::Error::from)
                        .and_then(|()| write_atomic(&path, json.as_bytes()));
                    (
                        v,
                        if saved.is_ok() {
                            "measured now"
                        } else {
                            "measured now, not cached"
                        },
                    )
                }
                Err(e) => {
                    eprintln!(
                        "note: auto: could not time {} ({e:#}); using it",
                        ctx.info.name
                    );
                    return Some(ctx);
                }
            }
        }
    };
    let gpu_wins = verdict.gpu_step_seconds < verdict.cpu_step_seconds;
    eprintln!(
        "note: auto: a B1 step takes {:.2} ms on {} and {:.2} ms on the {} ({how}): using the {}; --device overrides",
        verdict.gpu_step_seconds * 1e3,
        ctx.info.name,
        verdict.cpu_step_seconds * 1e3,
        verdict.cpu,
        if gpu_wins { "GPU" } else { "CPU" }
    );
    gpu_wins.then_some(ctx)
}

/// `gpumlp devices`: every adapter and the CPU backend, each with the time of a B1 step.
pub fn run(json_out: bool) -> Result<()> {
    let cpu = cpu_device();
    let adapters = adapters();
    let cpu_step = b1_step(None)?;
    let mut steps = Vec::new();
    for adapter in &adapters {
        let step = pollster::block_on(GpuContext::new(adapter))
            .map_err(anyhow::Error::from)
            .and_then(|ctx| b1_step(Some(&ctx)));
        steps.push(step.ok());
    }
    // `auto`: its adapter, if that one is measured faster than the CPU.
    let chosen =
        select(&Device::Auto, &adapters, 0)?.filter(|&i| steps[i].is_some_and(|s| s < cpu_step));
    let step_text =
        |s: Option<f64>| s.map_or("not measured".into(), |s| format!("{:.2} ms", s * 1e3));
    let mut rows = Vec::new();
    for (i, adapter) in adapters.iter().enumerate() {
        let info = adapter.get_info();
        let limits = adapter.limits();
        let auto = if chosen == Some(i) { "  <- auto" } else { "" };
        let cooperative = GpuContext::cooperative_sizes(adapter);
        let mixed = match cooperative.as_slice() {
            [] => "no mixed precision".to_string(),
            sizes => format!(
                "mixed precision on {} f16 matrices",
                sizes
                    .iter()
                    .map(|s| format!("{s}x{s}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        println!(
            "{i}: {} - {}, {}, driver {} {}, max buffer {} MiB, max storage binding {} MiB, {mixed}, B1 step {}{auto}",
            info.name,
            device_kind(info.device_type),
            info.backend.to_str(),
            info.driver,
            info.driver_info,
            limits.max_buffer_size >> 20,
            limits.max_storage_buffer_binding_size >> 20,
            step_text(steps[i]),
        );
        rows.push(json!({
            "index": i, "name": info.name, "kind": device_kind(info.device_type), "backend": info.backend.to_str(),
            "driver": info.driver, "driver_info": info.driver_info,
            "max_buffer_size": limits.max_buffer_size, "max_storage_binding_size": limits.max_storage_buffer_binding_size,
            "max_workgroups_per_dimension": limits.max_compute_workgroups_per_dimension,
            "auto": chosen == Some(i), "b1_step_seconds": steps[i],
            "cooperative_matrices": cooperative,
        }));
    }
    if adapters.is_empty() {
        println!("no GPU adapter found (Vulkan, Metal or DX12)");
    }
    let auto = if chosen.is_none() { "  <- auto" } else { "" };
    println!(
        "cpu: {} - backend {} (RAYON_NUM_THREADS sets the thread count), B1 step {}{auto}",
        cpu.name,
        cpu.backend,
        step_text(Some(cpu_step))
    );
    rows.push(json!({ "index": null, "name": cpu.name, "kind": cpu.kind, "backend": cpu.backend, "auto": chosen.is_none(), "b1_step_seconds": cpu_step }));
    if json_out {
        println!("{}", serde_json::Value::Array(rows));
    }
    Ok(())
}
