//! Choosing what to train on, and `gpumlp devices`.
//!
//! Policy: `auto` takes a discrete GPU, else an integrated GPU, else the CPU
//! backend. A software adapter (lavapipe, SwiftShader, WARP: device type "CPU") is far slower
//! than the CPU backend, so it is used only when asked for with `--device software`. `--device N`
//! takes adapter N as `gpumlp devices` numbers them. Only the primary APIs (Vulkan, Metal, DX12)
//! are considered; `WGPU_BACKEND` narrows them further.

use crate::cli::Device;
use crate::tuning::TuningCache;
use anyhow::{anyhow, bail, Result};
use gpumlp::backend::gpu::{device_kind, GpuBackend, GpuContext};
use gpumlp::backend::Backend;
use gpumlp::{Architecture, CpuBackend, OptimizerConfig};
use serde_json::json;

/// Every adapter wgpu finds, in a stable order (the numbering of `gpumlp devices`).
pub fn adapters() -> Vec<wgpu::Adapter> {
    pollster::block_on(gpumlp::backend::gpu::adapters())
}

/// Rank for `auto`: lower is better; None for adapters `auto` never takes.
fn auto_rank(t: wgpu::DeviceType) -> Option<u8> {
    match t {
        wgpu::DeviceType::DiscreteGpu => Some(0),
        wgpu::DeviceType::IntegratedGpu => Some(1),
        _ => None,
    }
}

/// The adapter `device` selects, or None for the CPU backend.
fn select(device: &Device, adapters: &[wgpu::Adapter]) -> Result<Option<usize>> {
    let find = |wanted: &[wgpu::DeviceType]| {
        adapters
            .iter()
            .enumerate()
            .filter(|(_, a)| wanted.contains(&a.get_info().device_type))
            .map(|(i, _)| i)
            .next()
    };
    use wgpu::DeviceType::*;
    let none = |flag: &str, what: &str| {
        anyhow!("--device {flag}: no {what} found; `gpumlp devices` lists what there is")
    };
    Ok(match device {
        Device::Cpu => None,
        Device::Auto => adapters
            .iter()
            .enumerate()
            .filter_map(|(i, a)| Some((auto_rank(a.get_info().device_type)?, i)))
            .min()
            .map(|(_, i)| i),
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

/// Opens the GPU `device` asks for, or None for the CPU backend.
pub fn open_gpu(device: &Device) -> Result<Option<GpuContext>> {
    if *device == Device::Cpu {
        return Ok(None);
    }
    let adapters = adapters();
    let Some(index) = select(device, &adapters)? else {
        return Ok(None);
    };
    match pollster::block_on(GpuContext::new(&adapters[index])) {
        Ok(context) => Ok(Some(context)),
        // `auto` promises to train somewhere: fall back to the CPU, and say so.
        Err(e) if *device == Device::Auto => {
            eprintln!("note: using the CPU backend: {e}");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// The backend `device` asks for, built for `arch` and `optimizer`, and on a GPU its GEMM
/// tuning cache (save it once the backend has run).
pub fn open(
    device: &Device,
    arch: &Architecture,
    optimizer: &OptimizerConfig,
) -> Result<(Box<dyn Backend>, Option<TuningCache>)> {
    Ok(match open_gpu(device)? {
        Some(context) => {
            let cache = TuningCache::load(&context);
            (
                Box::new(GpuBackend::new(context, arch, optimizer)?),
                Some(cache),
            )
        }
        None => (Box::new(CpuBackend::new(arch, optimizer)), None),
    })
}

/// `gpumlp devices`.
pub fn run(json_out: bool) -> Result<()> {
    let cpu = CpuBackend::new(
        &Architecture::mlp(&[1])?,
        &OptimizerConfig::new(gpumlp::OptimizerKind::Sgd),
    )
    .device();
    let adapters = adapters();
    let chosen = select(&Device::Auto, &adapters)?;
    let mut rows = Vec::new();
    for (i, adapter) in adapters.iter().enumerate() {
        let info = adapter.get_info();
        let limits = adapter.limits();
        let auto = if chosen == Some(i) { "  <- auto" } else { "" };
        println!(
            "{i}: {} - {}, {}, driver {} {}, max buffer {} MiB, max storage binding {} MiB{auto}",
            info.name,
            device_kind(info.device_type),
            info.backend.to_str(),
            info.driver,
            info.driver_info,
            limits.max_buffer_size >> 20,
            limits.max_storage_buffer_binding_size >> 20,
        );
        rows.push(json!({
            "index": i, "name": info.name, "kind": device_kind(info.device_type), "backend": info.backend.to_str(),
            "driver": info.driver, "driver_info": info.driver_info,
            "max_buffer_size": limits.max_buffer_size, "max_storage_binding_size": limits.max_storage_buffer_binding_size,
            "max_workgroups_per_dimension": limits.max_compute_workgroups_per_dimension,
            "auto": chosen == Some(i),
        }));
    }
    if adapters.is_empty() {
        println!("no GPU adapter found (Vulkan, Metal or DX12)");
    }
    let auto = if chosen.is_none() { "  <- auto" } else { "" };
    println!(
        "cpu: {} - backend {} (RAYON_NUM_THREADS sets the thread count){auto}",
        cpu.name, cpu.backend
    );
    rows.push(json!({ "index": null, "name": cpu.name, "kind": cpu.kind, "backend": cpu.backend, "auto": chosen.is_none() }));
    if json_out {
        println!("{}", serde_json::Value::Array(rows));
    }
    Ok(())
}
