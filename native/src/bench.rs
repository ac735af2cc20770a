//! `gpumlp bench`: GEMM throughput (a large square product and B1's own shapes) and the
//! training-step speed of workload B1 (784-512-256-10, batch 128, Adam) on synthetic data, on
//! the chosen device. Every timing waits for the device inside the timed region, and each
//! figure is printed with its GFLOP/s so it can be held against the hardware's peak. On a GPU it
//! also says which GEMM variant runs each shape (`--tune`: every candidate's time), the
//! dispatches per training step and the CPU time spent encoding them.

use crate::cli::BenchArgs;
use crate::devices;
use crate::ranks::Job;
use crate::tuning::TuningCache;
use crate::workload::{self, b1_step_seconds, b1_step_times, BATCH};
use anyhow::Result;
use gpumlp::backend::cpu::{clock, matmul_row_major, step_products};
use gpumlp::backend::gpu::{GemmProbe, GpuBackend, Shape};
use gpumlp::backend::{Backend, StepHyper};
use gpumlp::CpuBackend;
use serde_json::{json, Value};
use std::time::Instant;

/// Timed steps of the training benchmark (one pass over 12,800 synthetic samples).
const STEPS: usize = 100;
/// Aim for at least this long per timing, so a measurement is not all launch overhead.
const MIN_SECONDS: f64 = 0.3;
/// Rounds of the CPU's outside-the-products share, and the time per product in each.
const SHARE_ROUNDS: usize = 7;
const SHARE_PRODUCT_SECONDS: f64 = 0.03;

/// Seconds per call of `f`, after one warm-up call, over enough repetitions to take at least
/// `min_seconds`.
fn time_per_call(min_seconds: f64, mut f: impl FnMut(usize) -> Result<()>) -> Result<f64> {
    let start = Instant::now();
    f(1)?;
    let once = start.elapsed().as_secs_f64().max(1e-6);
    let reps = ((min_seconds / once).ceil() as usize).clamp(1, 1000);
    let start = Instant::now();
    f(reps)?;
    Ok(start.elapsed().as_secs_f64() / reps as f64)
}

/// Seconds per `m x k x n` product on the CPU backend, its operands laid out as in a B1 step
/// (`a_t`, `b_t`: read transposed).
fn cpu_gemm_seconds(
    (m, k, n): (usize, usize, usize),
    transposed: (bool, bool),
    min_seconds: f64,
) -> Result<f64> {
    let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
    let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
    let mut c = vec![0.0f32; m * n];
    time_per_call(min_seconds, |reps| {
        matmul_row_major(&mut c, (&a, &b), (m, k, n), transposed, reps);
        Ok(())
    })
}

/// B1's five large products (those below the top layer) as `(m, k, n, a_t, b_t, what)`, laid
/// out as the device's step lays them out: the CPU backend keeps its weights transposed.
fn b1_products(on_cpu: bool) -> Vec<(usize, usize, usize, bool, bool, String)> {
    if !on_cpu {
        let shapes = workload::GEMM_SHAPES.iter();
        return shapes
            .map(|&(m, k, n, a_t, b_t, what)| (m, k, n, a_t, b_t, what.to_string()))
            .collect();
    }
    let sizes = &workload::architecture().sizes;
    step_products(sizes, BATCH)
        .into_iter()
        .filter(|p| p.layer + 2 < sizes.len())
        .map(|p| {
            let what = format!("{} layer {}", p.what, p.layer + 1);
            (p.m, p.k, p.n, p.a_t, p.b_t, what)
        })
        .collect()
}

/// The share of a B1 step on the CPU spent outside its products, read two ways in each of
/// [`SHARE_ROUNDS`] rounds (on a shared machine whose speed drifts, both halves of a round see
/// about the same machine), each sorted:
/// - `alone`: one minus the time of B1's five large products timed alone (warm caches, back to
///   back), over the step's;
/// - `in_step`: one minus the thread-time inside all of the step's products' `gemm` calls,
///   timed in the step itself, over the step's time on every thread; `fused`, `update` and
///   `idle`, the parts of that spent in the work fused into the products' blocks, in the
///   optimizer's update, and waiting (a thread done with its parts of a region waiting for the
///   others to finish theirs, or for the leading thread's serial work between regions);
/// - `update_alone`: the optimizer's update of every parameter timed alone (the backend's own
///   `update`, on rayon's pool, back to back), its wall time over the step's: set beside
///   `update` (thread time over every thread's), as the two are alike where the update keeps
///   every thread busy. At B1's size it is bound by memory (exact and estimated square roots
///   and divisions measured alike: README, "Measured results"): the part of the share outside
///   the products that no reordering around them removes. (Inside the step, layer 0's
///   update reads a gradient still in cache; alone, every gradient comes from memory.)
struct OutsideShares {
    alone: Vec<f64>,
    in_step: Vec<f64>,
    fused: Vec<f64>,
    update: Vec<f64>,
    idle: Vec<f64>,
    update_alone: Vec<f64>,
}

fn cpu_outside_shares() -> Result<OutsideShares> {
    let mut backend = CpuBackend::new(&workload::architecture());
    let threads = gpumlp::backend::cpu_threads() as f64;
    let [mut alone, mut in_step, mut fused, mut update, mut idle, mut update_alone] =
        [(); 6].map(|_| Vec::new());
    for _ in 0..SHARE_ROUNDS {
        let mut products = 0.0;
        for (m, k, n, a_t, b_t, _) in b1_products(true) {
            products += cpu_gemm_seconds((m, k, n), (a_t, b_t), SHARE_PRODUCT_SECONDS)?;
        }
        clock::count(true);
        let timed = b1_step_times(&mut backend, STEPS);
        clock::count(false);
        let t = timed?;
        // The step's gradients, applied again and again: the update's work does not depend on
        // their values (subnormals are flushed).
        let update_seconds = time_per_call(SHARE_PRODUCT_SECONDS, |reps| {
            for step in 1..=reps as u64 {
                backend.update(StepHyper { lr: 1e-3, t: step })?;
            }
            Ok(())
        })?;
        update_alone.push(update_seconds / t.step);
        let all_threads = threads * t.step;
        alone.push(1.0 - products / t.step);
        in_step.push(1.0 - t.products / all_threads);
        fused.push(t.fused / all_threads);
        update.push(t.update / all_threads);
        idle.push(t.idle / all_threads);
    }
    for shares in [
        &mut alone,
        &mut in_step,
        &mut fused,
        &mut update,
        &mut idle,
        &mut update_alone,
    ] {
        shares.sort_by(f64::total_cmp);
    }
    Ok(OutsideShares {
        alone,
        in_step,
        fused,
        update,
        idle,
        update_alone,
    })
}

/// "median% (lowest-highest%)" of sorted shares.
fn median_and_range(shares: &[f64]) -> String {
    format!(
        "{:.0}% ({:.0}-{:.0}%)",
        100.0 * shares[shares.len() / 2],
        100.0 * shares[0],
        100.0 * shares[shares.len() - 1]
    )
}

pub fn run(args: BenchArgs) -> Result<()> {
    let gpu = devices::open_gpu(&args.device.device, &Job::alone())?;
    let cache = gpu.as_ref().map(TuningCache::load);
    if args.tune && gpu.is_none() {
        anyhow::bail!(
            "--tune: the CPU backend has no kernel variants to time; pick a GPU with --device"
        );
    }
    let arch = workload::architecture();
    let (device, software) = match &gpu {
        Some(ctx) => (
            json!({"name": ctx.info.name, "kind": ctx.kind(), "backend": ctx.info.backend.to_str(), "runtime_checks": ctx.checked, "timer": ctx.timer()}),
            ctx.kind() == "software-gpu",
        ),
        None => (serde_json::to_value(devices::cpu_device())?, false),
    };
    println!(
        "device: {} ({}, {}{})",
        device["name"].as_str().unwrap_or("?"),
        device["kind"].as_str().unwrap_or("?"),
        device["backend"].as_str().unwrap_or("?"),
        match &gpu {
            Some(ctx) => format!(
                ", {}, kernels timed by {}",
                if ctx.checked {
                    "runtime bounds checks on"
                } else {
                    "trusted kernels"
                },
                ctx.timer()
            ),
            None => String::new(),
        }
    );
    let size = args
        .size
        .map_or(if software { 1024 } else { 4096 }, |s| s as usize);

    let probe = gpu.as_ref().map(GemmProbe::new);
    let mut gemms = Vec::new();
    let mut b1_gemm_seconds = 0.0;
    let square = (size, size, size, false, false, "square".to_string());
    let shapes = std::iter::once(square).chain(b1_products(gpu.is_none()));
    for (m, k, n, a_t, b_t, what) in shapes {
        let flops = 2.0 * (m * k * n) as f64;
        let mut row = json!({"m": m, "k": k, "n": n, "what": what});
        let seconds = match (&gpu, &probe) {
            (Some(ctx), Some(probe)) => {
                let shape = Shape {
                    m: m as u32,
                    n: n as u32,
                    k: k as u32,
                    a_t,
                    b_t,
                };
                // With --tune every candidate is timed, and the fastest is the one that runs.
                let (variant, seconds) = if args.tune {
                    let candidates = probe.candidates(ctx, shape)?;
                    let listing: Vec<String> = candidates
                        .iter()
                        .map(|(v, s)| format!("{v} {:.3} ms", s * 1e3))
                        .collect();
                    println!("  candidates for {shape}: {}", listing.join(", "));
                    row["candidates"] = Value::Array(
                        candidates
                            .iter()
                            .map(|(v, s)| json!({"variant": v.to_string(), "seconds": s, "gflops": flops / s / 1e9}))
                            .collect(),
                    );
                    candidates
                        .into_iter()
                        .min_by(|a, b| a.1.total_cmp(&b.1))
                        .ok_or_else(|| anyhow::anyhow!("no GEMM variant fits this GPU"))?
                } else {
                    probe.seconds(ctx, shape)?
                };
                row["variant"] = json!(variant.to_string());
                row["layout"] = json!(shape.to_string());
                seconds
            }
            _ => cpu_gemm_seconds((m, k, n), (a_t, b_t), MIN_SECONDS)?,
        };
        if what != "square" {
            b1_gemm_seconds += seconds;
        }
        let gflops = flops / seconds / 1e9;
        let variant = row["variant"]
            .as_str()
            .map_or(String::new(), |v| format!(" [{v}]"));
        println!(
            "GEMM {m}x{k}x{n} ({what}): {:.3} ms, {gflops:.1} GFLOP/s{variant}",
            seconds * 1e3
        );
        row["seconds"] = json!(seconds);
        row["gflops"] = json!(gflops);
        gemms.push(row);
    }

    let on_cpu = gpu.is_none();
    let (step, dispatches, encode, families) = match gpu {
        Some(ctx) => {
            let mut backend = GpuBackend::new(ctx, &arch)?;
            let step = b1_step_seconds(&mut backend, STEPS)?;
            let encode = backend.encode_seconds_per_step();
            let families = backend.family_seconds(BATCH, 20)?;
            (step, Some(backend.dispatches_per_step()), encode, families)
        }
        None => (
            b1_step_seconds(&mut CpuBackend::new(&arch), STEPS)?,
            None,
            None,
            Vec::new(),
        ),
    };
    let flops = (arch.train_flops_per_sample() * BATCH) as f64;
    let epoch = step * 60_000usize.div_ceil(BATCH) as f64;
    println!(
        "B1 training step (784-512-256-10, batch {BATCH}, Adam): {:.3} ms, {:.0} samples/s, {:.1} GFLOP/s; {epoch:.3} s per 60,000-sample epoch",
        step * 1e3,
        BATCH as f64 / step,
        flops / step / 1e9
    );
    let (outside_gemms, outside_rounds) = if on_cpu {
        // The CPU: the shares in rounds, their medians the figures (one timing of each half is
        // at the mercy of a noisy neighbour).
        let shares = cpu_outside_shares()?;
        println!(
            "  outside the products, median of {SHARE_ROUNDS} rounds (range): {} of every thread's time in the step (its gemm calls timed in the step; of it {} in the work fused into their blocks, {} waiting for the other threads or the leading thread's serial work, {} in the optimizer's update, which alone on every thread takes {} of a step); {} of a step against B1's five large products timed alone ({:.3} ms)",
            median_and_range(&shares.in_step),
            median_and_range(&shares.fused),
            median_and_range(&shares.idle),
            median_and_range(&shares.update),
            median_and_range(&shares.update_alone),
            median_and_range(&shares.alone),
            b1_gemm_seconds * 1e3,
        );
        (shares.alone[SHARE_ROUNDS / 2], Some(shares))
    } else {
        let share = 1.0 - b1_gemm_seconds / step;
        println!(
            "  B1's five large products alone take {:.3} ms: {:.0}% of a step is outside them",
            b1_gemm_seconds * 1e3,
            100.0 * share
        );
        (share, None)
    };
    if let Some(d) = dispatches {
        let listing: Vec<String> = families
            .iter()
            .map(|(name, s)| format!("{name} {:.3} ms", s * 1e3))
            .collect();
        println!(
            "  per step: {d} dispatches; by kernel family, each alone: {}; CPU encoding {}",
            listing.join(", "),
            encode.map_or("not measured".into(), |e| format!("{:.1} us", e * 1e6))
        );
    }
    if let Some(cache) = &cache {
        cache.save()?;
    }
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
                    "dispatches_per_step": dispatches,
                    "gemm_seconds": b1_gemm_seconds,
                    "outside_gemm_share": outside_gemms,
                    "outside_gemm_share_rounds": outside_rounds.as_ref().map(|s| &s.alone),
                    "outside_gemm_share_in_step": outside_rounds.as_ref().map(|s| s.in_step[SHARE_ROUNDS / 2]),
                    "outside_gemm_share_in_step_rounds": outside_rounds.as_ref().map(|s| &s.in_step),
                    "fused_work_share_in_step": outside_rounds.as_ref().map(|s| s.fused[SHARE_ROUNDS / 2]),
                    "update_share_in_step": outside_rounds.as_ref().map(|s| s.update[SHARE_ROUNDS / 2]),
                    "update_alone_share": outside_rounds.as_ref().map(|s| s.update_alone[SHARE_ROUNDS / 2]),
                    "idle_share_in_step": outside_rounds.as_ref().map(|s| s.idle[SHARE_ROUNDS / 2]),
                    "families": families.iter().map(|(n, s)| json!({"family": n, "seconds": s})).collect::<Vec<_>>(),
                    "encode_seconds": encode,
                },
            })
        );
    }
    Ok(())
}
