//! Choosing what to train on. This build has the CPU backend only; the GPU backend (wgpu) will
//! plug in here with the policy of design.md: auto = discrete GPU, else integrated GPU, else CPU;
//! a software adapter only when asked for.

use crate::cli::Device;
use anyhow::{bail, Result};
use gpumlp::{Architecture, CpuBackend};

/// The backend `device` asks for.
pub fn open(device: &Device, arch: &Architecture) -> Result<CpuBackend> {
    match device {
        Device::Auto | Device::Cpu => Ok(CpuBackend::new(arch)),
        Device::Gpu | Device::IntegratedGpu | Device::Software => {
            bail!("--device {}: this build of gpumlp has no GPU backend yet; use --device cpu (or auto)", name(device))
        }
        Device::Index(i) => {
            bail!("--device {i}: there is no GPU adapter {i}; `gpumlp devices` lists what there is")
        }
    }
}

fn name(device: &Device) -> &'static str {
    match device {
        Device::Gpu => "gpu",
        Device::IntegratedGpu => "igpu",
        Device::Software => "software",
        _ => "auto",
    }
}

/// `gpumlp devices`.
pub fn run(json: bool) -> Result<()> {
    let cpu = gpumlp::backend::Backend::device(&CpuBackend::new(&Architecture::mlp(&[1])?));
    println!(
        "cpu: {} - backend {} (set RAYON_NUM_THREADS to change the thread count)",
        cpu.name, cpu.backend
    );
    println!("gpu adapters: none (this build has no GPU backend yet)");
    if json {
        println!(
            "{}",
            serde_json::json!([{ "index": null, "name": cpu.name, "kind": cpu.kind, "backend": cpu.backend }])
        );
    }
    Ok(())
}
