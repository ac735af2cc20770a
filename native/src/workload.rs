//! Workload B1 (784-512-256-10, batch 128, Adam) as a timing probe on synthetic data: what
//! `gpumlp bench` reports and what `auto` and `gpumlp devices` compare devices by. Its one
//! definition.

use anyhow::Result;
use gpumlp::backend::cpu::clock;
use gpumlp::backend::{Backend, Span, Split, StepHyper, Tensor};
use gpumlp::model::init_params;
use gpumlp::{Architecture, Dataset, OptimizerConfig, OptimizerKind};
use std::time::Instant;

/// B1's batch.
pub const BATCH: usize = 128;

/// B1's five large products as (m, k, n, A transposed, B transposed) as the GPU backend lays
/// them out (the CPU backend's: `gpumlp::backend::cpu::step_products`).
pub const GEMM_SHAPES: [(usize, usize, usize, bool, bool, &str); 5] = [
    (128, 784, 512, false, true, "forward layer 1"),
    (128, 512, 256, false, true, "forward layer 2"),
    (512, 128, 784, true, false, "weight grad layer 1"),
    (256, 128, 512, true, false, "weight grad layer 2"),
    (128, 256, 512, false, false, "input grad layer 2"),
];
/// B1's network: 784-512-256-10 with the default activation.
pub fn architecture() -> Architecture {
    Architecture::mlp(&[512, 256]).expect("B1 is a valid architecture")
}

/// B1's optimizer.
pub fn optimizer() -> OptimizerConfig {
    OptimizerConfig::new(OptimizerKind::Adam)
}

/// Trains `steps` steps of B1 on synthetic data after a warm-up of 2 (whose first step also
/// compiles a GPU's pipelines) on `backend` (built for [`architecture`]); returns seconds per
/// step, waiting for the device at the end. `auto` and `gpumlp devices` time each device this way.
pub fn b1_step_seconds(backend: &mut dyn Backend, steps: usize) -> Result<f64> {
    Ok(b1_step_times(backend, steps)?.step)
}

/// Seconds per B1 step: the step's own, and the CPU threads' summed over them in the parts
/// that `gpumlp::backend::cpu::clock` counts (zero unless its count is on).
pub struct StepTimes {
    pub step: f64,
    /// Inside the products' `gemm` calls.
    pub products: f64,
    /// In the work fused into the products' blocks.
    pub fused: f64,
    /// In the optimizer's update.
    pub update: f64,
    /// A team's threads waiting (at a region's end, or for the leader's serial work).
    pub idle: f64,
}

/// [`b1_step_seconds`], with what the CPU's clock counted in the timed steps.
pub fn b1_step_times(backend: &mut dyn Backend, steps: usize) -> Result<StepTimes> {
    let n = steps.max(2) * BATCH;
    let images: Vec<u8> = (0..n * 784)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    backend.upload(
        Split::Train,
        &Dataset::digits("synthetic", images, &labels)?,
    )?;
    backend.write(Tensor::Params, &init_params(&architecture(), 1))?;
    backend.attach_optimizer(&optimizer())?;
    let order: Vec<u32> = (0..n as u32).collect();
    let mut epoch = |steps: usize| -> Result<()> {
        let hypers: Vec<StepHyper> = (1..=steps as u64)
            .map(|t| StepHyper { lr: 1e-3, t })
            .collect();
        backend.train(
            Span::new(&order[..steps * BATCH], BATCH, &hypers)?,
            &mut |_| {},
        )?;
        // Reads back, so the device has finished.
        pollster::block_on(backend.take_stats(Split::Train))?;
        Ok(())
    };
    epoch(2)?;
    let counted = || {
        [
            clock::product_seconds(),
            clock::fused_seconds(),
            clock::update_seconds(),
            clock::idle_seconds(),
        ]
    };
    let before = counted();
    let start = Instant::now();
    epoch(steps)?;
    let seconds = start.elapsed().as_secs_f64();
    let after = counted();
    let [products, fused, update, idle] = std::array::from_fn(|i| after[i] - before[i]);
    let per_step = |s: f64| s / steps as f64;
    Ok(StepTimes {
        step: per_step(seconds),
        products: per_step(products),
        fused: per_step(fused),
        update: per_step(update),
        idle: per_step(idle),
    })
}
