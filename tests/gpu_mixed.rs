//! Mixed precision (`--precision mixed`: GEMM operands in f16, sums in f32, on cooperative
//! matrices) against the CPU backend's f32: every mixed-precision variant's logits and
//! gradients within an f16 tolerance, and a short run on the sample within half a point of f32.
//!
//! It needs an adapter with cooperative matrices: a real GPU, or Debian sid's lavapipe, which
//! `scripts/sid-lavapipe` lays out in `target/sid-lavapipe` (`scripts/test` does, first). When
//! the default adapter has none and that folder is ready, this harness runs itself again on it
//! (through sid's dynamic loader). Where neither is there the tests are reported as ignored,
//! with the reason, and fail under CI (CI=true).
//!
//! The tolerance: an operand rounded to f16 is off by at most 2^-11 of itself, so a product of
//! two by about 1e-3; over a sum of K such terms the errors add like a random walk, about
//! 1e-3 * sqrt(K) of a typical term, under 3% of the sum's typical size for K = 784. Each value
//! must be within 3% of the reference's root mean square plus 3% of itself. The gradients are
//! compared under tanh: ReLU's derivative is a step, and a pre-activation within f16's rounding
//! of zero flips it, changing that unit's whole gradient row for that sample (seen here: one row
//! of 96 on one batch), a discrete difference no tolerance on values describes; the ReLU run is
//! held to f32's accuracy instead.

mod common;

use gpumlp::backend::gpu::{self, GpuBackend, GpuContext};
use gpumlp::backend::{Backend, Split, Tensor};
use gpumlp::model::init_params;
use gpumlp::{
    Activation, Architecture, CpuBackend, OptimizerConfig, OptimizerKind, Precision, TrainConfig,
    Trainer,
};
use pollster::block_on;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Set in the copy of this harness that runs on sid's lavapipe.
const ON_SID: &str = "GPUMLP_TEST_ON_SID_LAVAPIPE";

const TESTS: [(&str, common::GpuTest); 2] = [
    (
        "every_mixed_variant_gives_the_cpus_logits_and_gradients_within_f16",
        every_mixed_variant_gives_the_cpus_logits_and_gradients_within_f16,
    ),
    (
        "a_short_mixed_run_ends_within_half_a_point_of_f32",
        a_short_mixed_run_ends_within_half_a_point_of_f32,
    ),
];

fn main() -> ExitCode {
    common::quiet_mesa();
    let args = libtest_mimic::Arguments::from_args();
    let adapter = block_on(gpu::adapters())
        .into_iter()
        .find(|a| !GpuContext::cooperative_sizes(a).is_empty());
    if adapter.is_none() && std::env::var_os(ON_SID).is_none() {
        if let Some(sid) = sid_lavapipe() {
            return run_on(&sid);
        }
    }
    let missing = adapter.is_none().then_some(
        "no adapter with cooperative matrices: scripts/sid-lavapipe lays out one (scripts/test does)",
    );
    if let Some(a) = &adapter {
        eprintln!(
            "mixed-precision tests on {:?} (matrices {:?})",
            a.get_info().name,
            GpuContext::cooperative_sizes(a)
        );
    }
    // Each test with trusted kernels, and checked as in a browser (naga's runtime bounds checks,
    // the plain reductions).
    let trials = common::per_mode(&TESTS, adapter, missing);
    libtest_mimic::run(&args, trials).exit_code()
}

/// sid's lavapipe, where `scripts/sid-lavapipe` laid it out.
fn sid_lavapipe() -> Option<PathBuf> {
    let dir = std::env::var_os("GPUMLP_SID_LAVAPIPE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/sid-lavapipe"));
    dir.join("ready").is_file().then_some(dir)
}

/// This harness again, with the same arguments, on sid's lavapipe.
fn run_on(sid: &Path) -> ExitCode {
    let lib = sid.join("root/usr/lib/x86_64-linux-gnu");
    eprintln!(
        "no adapter here has cooperative matrices: running on sid's lavapipe ({})",
        sid.display()
    );
    let status = std::process::Command::new(lib.join("ld-linux-x86-64.so.2"))
        .arg("--library-path")
        .arg(&lib)
        .arg(std::env::current_exe().unwrap())
        .args(std::env::args_os().skip(1))
        .env("VK_DRIVER_FILES", sid.join("lvp.json"))
        .env("VK_ICD_FILENAMES", sid.join("lvp.json"))
        .env(ON_SID, "1")
        .status()
        .expect("sid's dynamic loader runs");
    ExitCode::from(status.code().unwrap_or(1) as u8)
}

/// `got` within 3% of `want`'s root mean square plus 3% of each value (see the header).
fn within_f16(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let rms = (want.iter().map(|x| x * x).sum::<f32>() / want.len().max(1) as f32).sqrt();
    common::assert_close(what, got, want, 0.03 * rms, 0.03);
}

fn every_mixed_variant_gives_the_cpus_logits_and_gradients_within_f16(ctx: GpuContext) {
    let data = common::small_sample(300, 100);
    let batch: Vec<u32> = (0..37).map(|i| (i * 53 + 7) % 300).collect();
    let opt = OptimizerConfig::new(OptimizerKind::Adam);
    for variant in gpu::cooperative_variants(&ctx.cooperative) {
        for hidden in [[70, 33], [96, 40]] {
            let arch = Architecture::mlp(&hidden)
                .unwrap()
                .with_activation(Activation::Tanh);
            let what = format!("{variant} on {arch}");
            ctx.tuning.lock().unwrap().force = Some(variant);
            let params = init_params(&arch, 11);
            let mut cpu = CpuBackend::new(&arch);
            let mut gpu = GpuBackend::with_precision(ctx.clone(), &arch, Precision::Mixed).unwrap();
            for b in [&mut cpu as &mut dyn Backend, &mut gpu] {
                b.attach_optimizer(&opt).unwrap();
                b.write(Tensor::Params, &params).unwrap();
                b.upload(Split::Train, &data.train).unwrap();
                b.forward(Split::Train, &batch, batch.len()).unwrap();
                b.backward().unwrap();
            }
            within_f16(
                &format!("{what} logits"),
                &block_on(gpu.read(Tensor::Logits)).unwrap(),
                &block_on(cpu.read(Tensor::Logits)).unwrap(),
            );
            let (g, c) = (
                block_on(gpu.read(Tensor::Grads)).unwrap(),
                block_on(cpu.read(Tensor::Grads)).unwrap(),
            );
            for e in &gpu.layout().entries.clone() {
                within_f16(&format!("{what} {}", e.name), &g[e.range()], &c[e.range()]);
            }
        }
    }
    ctx.tuning.lock().unwrap().force = None;
}

fn a_short_mixed_run_ends_within_half_a_point_of_f32(ctx: GpuContext) {
    let data = gpumlp::dataset::mnist_sample();
    let config = |precision| TrainConfig {
        hidden: vec![64],
        epochs: 2,
        precision,
        ..TrainConfig::default()
    };
    let arch = config(Precision::F32).architecture(&data.spec).unwrap();
    let accuracy = |backend: Box<dyn Backend>, precision| {
        let mut t = Trainer::new(config(precision), backend, &data).unwrap();
        let mut accuracy = 0.0;
        while !t.finished() {
            block_on(t.train_epoch(&mut |_, _| {})).unwrap();
            accuracy = block_on(t.evaluate()).unwrap().accuracy();
        }
        accuracy
    };
    let f32_accuracy = accuracy(Box::new(CpuBackend::new(&arch)), Precision::F32);
    let mixed = GpuBackend::with_precision(ctx, &arch, Precision::Mixed).unwrap();
    let mixed_accuracy = accuracy(Box::new(mixed), Precision::Mixed);
    println!("test accuracy: f32 (CPU) {f32_accuracy:.4}, mixed {mixed_accuracy:.4}");
    assert!(
        (mixed_accuracy - f32_accuracy).abs() <= 0.005,
        "mixed {mixed_accuracy} against f32 {f32_accuracy}"
    );
}
