//! `gpumlp bench`: GEMM throughput (a large square product and B1's own shapes) and the
//! training-step speed of workload B1 (784-512-256-10, batch 128, Adam) on synthetic data, on
//! the chosen device. Every timing waits for the device inside the timed region, and each
//! figure is printed with its GFLOP/s so it can be held against the hardware's peak.

use crate::cli::BenchArgs;
use crate::devices;
use anyhow::Result;
use gpumlp::backend::cpu::matmul_row_major;
use gpumlp::backend::gpu::{GemmBench, GpuBackend, GpuContext};
use gpumlp::backend::{Backend, Split, StepHyper};
use gpumlp::model::init_params;
use gpumlp::{Architecture, CpuBackend, Dataset, OptimizerConfig, OptimizerKind};
use serde_json::json;
use std::time::Instant;

/// B1's five large products as (m, k, n), in the order a step runs them.
const B1_SHAPES: [(usize, usize, usize, &str); 5] = [
    (128, 784, 512, "forward layer 1"),
    (128, 512, 256, "forward layer 2"),
    (512, 128, 784, "weight grad layer 1"),
    (256, 128, 512, "weight grad layer 2"),
    (128, 256, 512, "input grad layer 2"),
];
const BATCH: usize = 128;
/// Timed steps of the training benchmark (one pass over 12,800 synthetic samples).
const STEPS: usize = 100;
/// Aim for at least this long per timing, so a measurement is not all launch overhead.
const MIN_SECONDS: f64 = 0.3;

/// Seconds per call of `f`, after one warm-up call, over enough repetitions to be measurable.
fn time_per_call(mut f: impl FnMut(usize) -> Result<()>) -> Result<f64> {
    let start = Instant::now();
    f(1)?;
    let once = start.elapsed().as_secs_f64().max(1e-6);
    let reps = ((MIN_SECONDS / once).ceil() as usize).clamp(1, 1000);
    let start = Instant::now();
    f(reps)?;
    Ok(start.elapsed().as_secs_f64() / reps as f64)
}

fn gemm_seconds(gpu: Option<&GpuContext>, m: usize, k: usize, n: usize) -> Result<f64> {
    match gpu {
        Some(ctx) => {
            let bench = GemmBench::new(ctx, m, n, k)?;
            time_per_call(|reps| Ok(bench.run(ctx, reps)?))
        }
        None => {
            let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
            let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
            let mut c = vec![0.0f32; m * n];
            time_per_call(|reps| {
                for _ in 0..reps {
                    matmul_row_major(&mut c, &a, &b, m, k, n);
                }
                Ok(())
            })
        }
    }
}

/// Seconds per B1 training step, including the wait for the device at the end.
fn step_seconds(mut backend: Box<dyn Backend>) -> Result<f64> {
    let arch = Architecture::mlp(&[512, 256])?;
    let n = STEPS * BATCH;
    let images: Vec<u8> = (0..n * 784)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    backend.upload(Split::Train, &Dataset::new("synthetic", images, labels)?)?;
    backend.set_params(&init_params(&arch, 1))?;
    let order: Vec<u32> = (0..n as u32).collect();
    let mut epoch = |steps: usize| -> Result<()> {
        let hypers: Vec<StepHyper> = (1..=steps as u64)
            .map(|t| StepHyper { lr: 1e-3, t })
            .collect();
        backend.train(&order[..steps * BATCH], BATCH, &hypers, &mut |_| {})?;
        // Reads back, so the device has finished.
        pollster::block_on(backend.take_stats(Split::Train))?;
        Ok(())
    };
    epoch(10)?;
    let start = Instant::now();
    epoch(STEPS)?;
    Ok(start.elapsed().as_secs_f64() / STEPS as f64)
}

pub fn run(args: BenchArgs) -> Result<()> {
    let gpu = devices::open_gpu(&args.device.device)?;
    let arch = Architecture::mlp(&[512, 256])?;
    let adam = OptimizerConfig::new(OptimizerKind::Adam);
    let (device, software) = match &gpu {
        Some(ctx) => (
            json!({"name": ctx.info.name, "kind": ctx.kind(), "backend": ctx.info.backend.to_str()}),
            ctx.kind() == "software-gpu",
        ),
        None => (
            serde_json::to_value(CpuBackend::new(&arch, &adam).device())?,
            false,
        ),
    };
    println!(
        "device: {} ({}, {})",
        device["name"].as_str().unwrap_or("?"),
        device["kind"].as_str().unwrap_or("?"),
        device["backend"].as_str().unwrap_or("?")
    );
    let size = args
        .size
        .map_or(if software { 1024 } else { 4096 }, |s| s as usize);

    let mut gemms = Vec::new();
    let shapes = std::iter::once((size, size, size, "square")).chain(B1_SHAPES);
    for (m, k, n, what) in shapes {
        let seconds = gemm_seconds(gpu.as_ref(), m, k, n)?;
        let gflops = 2.0 * (m * k * n) as f64 / seconds / 1e9;
        println!(
            "GEMM {m}x{k}x{n} ({what}): {:.3} ms, {gflops:.1} GFLOP/s",
            seconds * 1e3
        );
        gemms.push(
            json!({"m": m, "k": k, "n": n, "what": what, "seconds": seconds, "gflops": gflops}),
        );
    }

    let backend: Box<dyn Backend> = match gpu {
        Some(ctx) => Box::new(GpuBackend::new(ctx, &arch, &adam)?),
        None => Box::new(CpuBackend::new(&arch, &adam)),
    };
    let step = step_seconds(backend)?;
    let flops = (arch.train_flops_per_sample() * BATCH) as f64;
    let epoch = step * 60_000usize.div_ceil(BATCH) as f64;
    println!(
        "B1 training step (784-512-256-10, batch {BATCH}, Adam): {:.3} ms, {:.0} samples/s, {:.1} GFLOP/s; {epoch:.3} s per 60,000-sample epoch",
        step * 1e3,
        BATCH as f64 / step,
        flops / step / 1e9
    );
    if args.json {
        println!(
            "{}",
            json!({
                "device": device,
                "gemm": gemms,
                "train_step": {
                    "workload": "B1", "batch": BATCH, "seconds": step,
                    "samples_per_second": BATCH as f64 / step, "gflops": flops / step / 1e9,
                    "epoch_seconds_60000": epoch,
                },
            })
        );
    }
    Ok(())
}
