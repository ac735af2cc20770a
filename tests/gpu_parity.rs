//! The GPU backend against the CPU backend, on the same seed and batch: forward logits, every
//! gradient, the parameters and moments after one SGD and one Adam step (and moments that would
//! be subnormal stored as zero), the running stats, a short training run, and dispatches past
//! 65,535 workgroups. Tolerances are `abs + rel * |ref|` with the CPU as the reference.
//!
//! Runs on any adapter, a software one included (CI installs lavapipe). With no adapter at all
//! the tests are reported as ignored, with the reason, in the test summary, and fail under CI
//! (CI=true). A harness of its own (libtest-mimic) makes that decision at run time.

mod common;

use gpumlp::backend::gpu::{self, GpuBackend, GpuContext};
use gpumlp::backend::{Backend, Span, Split, StepHyper, Tensor};
use gpumlp::model::init_params;
use gpumlp::{
    Activation, Architecture, CpuBackend, Dataset, Features, OptimizerConfig, OptimizerKind,
    Schedule, TrainConfig, Trainer,
};
use pollster::block_on;
use std::process::ExitCode;

const TESTS: [(&str, common::GpuTest); 14] = [
    (
        "mixed_precision_runs_only_where_the_adapter_has_cooperative_matrices",
        mixed_precision_runs_only_where_the_adapter_has_cooperative_matrices,
    ),
    (
        "any_feature_and_class_count_bytes_or_floats_match_the_cpu",
        any_feature_and_class_count_bytes_or_floats_match_the_cpu,
    ),
    (
        "every_gemm_variant_gives_the_cpus_logits_and_gradients",
        every_gemm_variant_gives_the_cpus_logits_and_gradients,
    ),
    (
        "forward_logits_stats_and_every_gradient_match_the_cpu",
        forward_logits_stats_and_every_gradient_match_the_cpu,
    ),
    (
        "one_sgd_and_one_adam_step_match_the_cpu",
        one_sgd_and_one_adam_step_match_the_cpu,
    ),
    (
        "moments_that_would_be_subnormal_are_stored_as_zero_as_on_the_cpu",
        moments_that_would_be_subnormal_are_stored_as_zero_as_on_the_cpu,
    ),
    (
        "a_short_training_run_ends_within_a_point_of_the_cpu",
        a_short_training_run_ends_within_a_point_of_the_cpu,
    ),
    (
        "dispatches_past_65535_workgroups_cover_every_parameter",
        dispatches_past_65535_workgroups_cover_every_parameter,
    ),
    (
        "data_beyond_the_storage_binding_limit_is_refused_clearly",
        data_beyond_the_storage_binding_limit_is_refused_clearly,
    ),
    (
        "state_and_readbacks_round_trip_and_wrong_lengths_are_refused",
        state_and_readbacks_round_trip_and_wrong_lengths_are_refused,
    ),
    (
        "backward_and_update_after_a_span_of_steps_match_the_cpu",
        backward_and_update_after_a_span_of_steps_match_the_cpu,
    ),
    (
        "every_activation_gives_the_cpus_logits_gradients_and_step",
        every_activation_gives_the_cpus_logits_gradients_and_step,
    ),
    (
        "a_device_lost_mid_training_is_an_error_from_then_on_not_a_panic",
        a_device_lost_mid_training_is_an_error_from_then_on_not_a_panic,
    ),
    (
        "an_allocation_the_driver_refuses_is_an_error_not_a_panic",
        an_allocation_the_driver_refuses_is_an_error_not_a_panic,
    ),
];

fn main() -> ExitCode {
    common::quiet_mesa();
    let args = libtest_mimic::Arguments::from_args();
    let adapter = first_adapter();
    let missing = match &adapter {
        Some(a) => {
            eprintln!(
                "GPU tests on {:?} (subgroup reductions: {})",
                a.get_info().name,
                a.features().contains(wgpu::Features::SUBGROUP)
            );
            None
        }
        None => Some("no GPU adapter: apt-get install mesa-vulkan-drivers gives lavapipe"),
    };
    // Every test twice: trusted kernels, and checked as in a browser.
    let mut trials = common::per_mode(&TESTS, adapter, missing);
    if std::env::var_os(WITHOUT_ADAPTERS).is_none() {
        trials.push(libtest_mimic::Trial::test(
            "without_an_adapter_the_summary_counts_the_tests_as_ignored",
            || {
                without_an_adapter_the_summary_counts_the_tests_as_ignored();
                Ok(())
            },
        ));
    }
    libtest_mimic::run(&args, trials).exit_code()
}

/// Set in the copy of this harness that runs with no adapter (so it does not run itself again).
const WITHOUT_ADAPTERS: &str = "GPUMLP_TEST_WITHOUT_ADAPTERS";

/// This harness again, offered no adapter (`WGPU_BACKEND=metal` on a machine without Metal, or
/// `dx12` on one with it): every GPU test must be ignored with its reason, not passed; under
/// CI=true every one must fail.
fn without_an_adapter_the_summary_counts_the_tests_as_ignored() {
    let none = if cfg!(target_os = "macos") {
        "dx12"
    } else {
        "metal"
    };
    let run = |ci: bool| {
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.env("WGPU_BACKEND", none)
            .env(WITHOUT_ADAPTERS, "1")
            .env_remove("CI");
        if ci {
            cmd.env("CI", "true");
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (ok, stdout) = run(false);
    let n = 2 * TESTS.len();
    assert!(ok, "{stdout}");
    assert!(
        stdout.contains(&format!("0 passed; 0 failed; {n} ignored")),
        "{stdout}"
    );
    assert!(stdout.contains("ignored: no GPU adapter"), "{stdout}");
    let (ok, stdout) = run(true);
    assert!(!ok, "under CI a missing adapter must fail: {stdout}");
    assert!(stdout.contains(&format!("{n} failed")), "{stdout}");
}

/// The first adapter, preferring real GPUs to software ones.
fn first_adapter() -> Option<wgpu::Adapter> {
    let mut adapters = block_on(gpu::adapters());
    adapters.sort_by_key(|a| a.get_info().device_type == wgpu::DeviceType::Cpu);
    adapters.into_iter().next()
}

/// Layer widths that are not multiples of the 64-wide GEMM tile, so every edge is exercised.
fn arch() -> Architecture {
    Architecture::mlp(&[70, 33]).unwrap()
}

/// Widths that are multiples of 4, so the GEMMs read most operands four floats at a time.
fn aligned_arch() -> Architecture {
    Architecture::mlp(&[96, 40]).unwrap()
}

/// A CPU and a GPU backend for `opt` with the same parameters and the same data.
fn pair(ctx: GpuContext, opt: &OptimizerConfig) -> (CpuBackend, GpuBackend) {
    pair_for(&arch(), ctx, opt)
}

fn pair_for(
    arch: &Architecture,
    ctx: GpuContext,
    opt: &OptimizerConfig,
) -> (CpuBackend, GpuBackend) {
    let data = common::small_sample(300, 100);
    let params = init_params(arch, 11);
    let mut cpu = CpuBackend::new(arch);
    let mut gpu = GpuBackend::new(ctx, arch).unwrap();
    for b in [&mut cpu as &mut dyn Backend, &mut gpu] {
        b.attach_optimizer(opt).unwrap();
        b.write(Tensor::Params, &params).unwrap();
        b.upload(Split::Train, &data.train).unwrap();
        b.upload(Split::Test, &data.test).unwrap();
    }
    (cpu, gpu)
}

/// `n` samples of `width` generated features (bytes, or floats in -2..2) labelled `0..classes`
/// so that every class up to the last appears.
fn generated(n: usize, width: usize, classes: usize, floats: bool) -> Dataset {
    let value = |i: usize| (i.wrapping_mul(2_654_435_761) >> 7) % 256;
    let features = if floats {
        Features::Floats(
            (0..n * width)
                .map(|i| value(i) as f32 / 64.0 - 2.0)
                .collect(),
        )
    } else {
        Features::Bytes((0..n * width).map(|i| value(i) as u8).collect())
    };
    let labels = (0..n)
        .map(|i| if i == 0 { classes - 1 } else { (i * 37) % classes } as u32)
        .collect();
    Dataset::new("generated", features, width, labels).unwrap()
}

/// Widths the MNIST path never sees: features not a multiple of 4 (bytes padded to whole
/// words, floats to whole vec4s), 3 classes, 1,000 classes; on the first two, the largest and
/// smallest tiles, each also with K split.
fn any_feature_and_class_count_bytes_or_floats_match_the_cpu(ctx: GpuContext) {
    let cases = [
        (13, 3, true, true),
        (30, 7, false, true),
        (21, 1000, true, false),
        (64, 5, false, false),
    ];
    for (features, classes, floats, every_variant) in cases {
        let arch = Architecture::new(features, &[24], classes).unwrap();
        let train = generated(300, features, classes, floats);
        let test = generated(100, features, classes, floats);
        let (largest, smallest) = (gpu::VARIANTS[0], gpu::VARIANTS[5]);
        let variants: Vec<Option<gpu::Variant>> = if every_variant {
            [largest, smallest, largest.split(2), smallest.split(8)]
                .map(Some)
                .to_vec()
        } else {
            vec![None]
        };
        for variant in variants {
            ctx.tuning.lock().unwrap().force = variant;
            let what = format!(
                "{} {arch} ({variant:?})",
                if floats { "floats" } else { "bytes" }
            );
            let params = init_params(&arch, 5);
            let mut cpu = CpuBackend::new(&arch);
            let mut gpu = GpuBackend::new(ctx.clone(), &arch).unwrap();
            for b in [&mut cpu as &mut dyn Backend, &mut gpu] {
                b.attach_optimizer(&adam()).unwrap();
                b.write(Tensor::Params, &params).unwrap();
                b.upload(Split::Train, &train).unwrap();
                b.upload(Split::Test, &test).unwrap();
                b.forward(Split::Train, &batch(), 37).unwrap();
                b.backward().unwrap();
            }
            let (g, c) = (
                block_on(gpu.read(Tensor::Logits)).unwrap(),
                block_on(cpu.read(Tensor::Logits)).unwrap(),
            );
            assert_eq!(c.len(), 37 * classes, "{what}");
            common::assert_close(&format!("{what} logits"), &g, &c, 1e-4, 1e-4);
            let (g, c) = (
                block_on(gpu.read(Tensor::Grads)).unwrap(),
                block_on(cpu.read(Tensor::Grads)).unwrap(),
            );
            common::assert_close(&format!("{what} gradients"), &g, &c, 1e-5, 1e-3);
            let (gs, cs) = (
                block_on(gpu.take_stats(Split::Train)).unwrap(),
                block_on(cpu.take_stats(Split::Train)).unwrap(),
            );
            assert_eq!((gs.count, gs.correct), (cs.count, cs.correct), "{what}");
            let (ge, ce) = (
                block_on(gpu.evaluate(Split::Test, 100)).unwrap(),
                block_on(cpu.evaluate(Split::Test, 100)).unwrap(),
            );
            assert_eq!((ge.count, ge.correct), (ce.count, ce.correct), "{what}");
            assert!(
                (ge.loss_sum - ce.loss_sum).abs() < 1e-4 * ce.loss_sum,
                "{what}: test loss {} vs {}",
                ge.loss_sum,
                ce.loss_sum
            );
        }
    }
    ctx.tuning.lock().unwrap().force = None;
}

/// `--precision mixed` on an adapter without cooperative matrices (bookworm's lavapipe, where
/// these tests run) is one line naming the adapter and what it lacks; on one with them it
/// builds (tests/gpu_mixed.rs tests what it computes).
fn mixed_precision_runs_only_where_the_adapter_has_cooperative_matrices(ctx: GpuContext) {
    let name = ctx.info.name.clone();
    let has = !ctx.cooperative.is_empty();
    match GpuBackend::with_precision(ctx, &arch(), gpumlp::Precision::Mixed) {
        Ok(_) => assert!(has, "mixed precision built without cooperative matrices"),
        Err(e) => {
            let e = e.to_string();
            assert!(!has, "{e}");
            assert!(
                e.starts_with(&name) && e.contains("cooperative matrices") && !e.contains('\n'),
                "{e}"
            );
        }
    }
}

/// Writes every optimizer state buffer.
fn set_state(b: &mut dyn Backend, state: &[Vec<f32>]) {
    for (k, values) in state.iter().enumerate() {
        b.write(Tensor::State(k), values).unwrap();
    }
}

/// Reads every state buffer of `kind`.
fn state_of(b: &mut dyn Backend, kind: OptimizerKind) -> Vec<Vec<f32>> {
    (0..kind.state_names().len())
        .map(|k| block_on(b.read(Tensor::State(k))).unwrap())
        .collect()
}

fn adam() -> OptimizerConfig {
    OptimizerConfig::new(OptimizerKind::Adam)
}

/// A ragged batch of 37 shuffled rows.
fn batch() -> Vec<u32> {
    (0..37).map(|i| (i * 53 + 7) % 300).collect()
}

fn forward_logits_stats_and_every_gradient_match_the_cpu(ctx: GpuContext) {
    let (mut cpu, mut gpu) = pair(ctx, &adam());
    for b in [&mut cpu as &mut dyn Backend, &mut gpu] {
        b.forward(Split::Train, &batch(), 37).unwrap();
        b.backward().unwrap();
    }
    same_logits("logits", &mut gpu, &mut cpu);
    let (g, c) = (
        block_on(gpu.read(Tensor::Grads)).unwrap(),
        block_on(cpu.read(Tensor::Grads)).unwrap(),
    );
    assert!(
        c.iter().filter(|x| x.abs() > 1e-6).count() > c.len() / 10,
        "too few non-zero gradients to compare"
    );
    for e in &gpu.layout().entries.clone() {
        common::assert_close(&e.name, &g[e.range()], &c[e.range()], 1e-5, 1e-3);
    }
    let (gs, cs) = (
        block_on(gpu.take_stats(Split::Train)).unwrap(),
        block_on(cpu.take_stats(Split::Train)).unwrap(),
    );
    assert_eq!((gs.count, gs.correct), (cs.count, cs.correct));
    assert!(
        (gs.loss_sum - cs.loss_sum).abs() < 1e-4 * cs.loss_sum,
        "loss sum {} vs {}",
        gs.loss_sum,
        cs.loss_sum
    );
    // Evaluation over the whole test set, in chunks, agrees too.
    let (ge, ce) = (
        block_on(gpu.evaluate(Split::Test, 100)).unwrap(),
        block_on(cpu.evaluate(Split::Test, 100)).unwrap(),
    );
    assert_eq!((ge.count, ge.correct), (ce.count, ce.correct));
}

/// Every tile, and the largest and the smallest with K split in 2, 4 and 8 parts: what the
/// variant tests force in turn.
fn variants_to_test() -> Vec<gpu::Variant> {
    let mut all = gpu::VARIANTS.to_vec();
    let (largest, smallest) = (gpu::VARIANTS[0], gpu::VARIANTS[gpu::VARIANTS.len() - 1]);
    for parts in gpu::SPLITS {
        all.extend([largest.split(parts), smallest.split(parts)]);
    }
    all
}

/// The network's products run by each GEMM variant in turn (every layout and epilogue, on
/// widths that are not multiples of any tile, read one float at a time and, where aligned,
/// four; K split into parts that are ragged or empty: 33 in 8 parts of 8), against the CPU.
fn every_gemm_variant_gives_the_cpus_logits_and_gradients(ctx: GpuContext) {
    for (v, arch) in variants_to_test()
        .into_iter()
        .flat_map(|v| [(v, arch()), (v, aligned_arch())])
    {
        let variant = &format!("{v} on {arch}")[..];
        ctx.tuning.lock().unwrap().force = Some(v);
        let (mut cpu, mut gpu) = pair_for(&arch, ctx.clone(), &adam());
        for b in [&mut cpu as &mut dyn Backend, &mut gpu] {
            b.forward(Split::Train, &batch(), 37).unwrap();
            b.backward().unwrap();
        }
        same_logits(&format!("{variant} logits"), &mut gpu, &mut cpu);
        let (g, c) = (
            block_on(gpu.read(Tensor::Grads)).unwrap(),
            block_on(cpu.read(Tensor::Grads)).unwrap(),
        );
        for e in &gpu.layout().entries.clone() {
            let what = format!("{variant} {}", e.name);
            common::assert_close(&what, &g[e.range()], &c[e.range()], 1e-5, 1e-3);
        }
        // A batch of 150 crosses a 128-row tile; evaluation uses chunks of up to 1,000 rows.
        let rows: Vec<u32> = (0..150).map(|i| (i * 7) % 300).collect();
        gpu.forward(Split::Train, &rows, rows.len()).unwrap();
        cpu.forward(Split::Train, &rows, rows.len()).unwrap();
        same_logits(&format!("{variant} logits, 150 rows"), &mut gpu, &mut cpu);
        if v.split > 1 {
            assert!(
                gpu.dispatches_per_step() > 1 + 3 * arch.layers(),
                "{variant}: no product was split"
            );
        }
    }
    ctx.tuning.lock().unwrap().force = None;
}

/// The last forward's logits agree (1e-4 + 1e-4 of the CPU's).
fn same_logits(what: &str, gpu: &mut GpuBackend, cpu: &mut CpuBackend) {
    let (g, c) = (
        block_on(gpu.read(Tensor::Logits)).unwrap(),
        block_on(cpu.read(Tensor::Logits)).unwrap(),
    );
    assert!(
        !c.is_empty() && c.len() % 10 == 0,
        "{what}: {} logits",
        c.len()
    );
    common::assert_close(what, &g, &c, 1e-4, 1e-4);
}

fn one_sgd_and_one_adam_step_match_the_cpu(ctx: GpuContext) {
    for kind in [OptimizerKind::Sgd, OptimizerKind::Adam] {
        let mut opt = OptimizerConfig::new(kind);
        opt.weight_decay = 0.01;
        let (mut cpu, mut gpu) = pair(ctx.clone(), &opt);
        let n = cpu.layout().len;
        // Non-zero state, as mid-training: the update then depends smoothly on the gradient
        // (Adam's very first step is sign(g), which rounding can flip for gradients near zero).
        let first: Vec<f32> = (0..n).map(|i| ((i % 97) as f32 - 48.0) * 1e-5).collect();
        let second: Vec<f32> = (0..n).map(|i| 1e-6 + (i % 89) as f32 * 1e-7).collect();
        let state = [first, second][..kind.state_names().len()].to_vec();
        let hyper = StepHyper { lr: 0.01, t: 7 };
        for b in [&mut cpu as &mut dyn Backend, &mut gpu] {
            set_state(b, &state);
            b.forward(Split::Train, &batch(), 37).unwrap();
            b.backward().unwrap();
            b.update(hyper).unwrap();
        }
        let gpu_params = block_on(gpu.read(Tensor::Params)).unwrap();
        common::assert_close(
            &format!("{kind:?} parameters"),
            &gpu_params,
            &block_on(cpu.read(Tensor::Params)).unwrap(),
            1e-6,
            1e-4,
        );
        let (gs, cs) = (state_of(&mut gpu, kind), state_of(&mut cpu, kind));
        assert_eq!(gs.len(), kind.state_names().len());
        for ((name, g), c) in kind.state_names().iter().zip(&gs).zip(&cs) {
            common::assert_close(&format!("{kind:?} {name}"), g, c, 1e-9, 1e-3);
        }
        assert!(
            gpu_params != init_params(&arch(), 11),
            "{kind:?}: the step changed nothing"
        );
    }
}

/// The optimizer's moments flushed on the GPU as on the CPU (`optim::flush_subnormal`,
/// `flush` in optimizer.wgsl): from a state at f32's smallest normal magnitude and a zero
/// gradient, the decayed moments would be subnormal, and both backends store a zero; a normal
/// state beside them decays as usual. (An adapter that flushes subnormals by itself passes
/// either way; one that keeps them, as lavapipe does, catches a missing flush.)
fn moments_that_would_be_subnormal_are_stored_as_zero_as_on_the_cpu(ctx: GpuContext) {
    for kind in [OptimizerKind::Sgd, OptimizerKind::Adam] {
        let (mut cpu, mut gpu) = pair(ctx.clone(), &OptimizerConfig::new(kind));
        let n = cpu.layout().len;
        // Every third moment normal (1e-3); the rest at the smallest normal magnitude, the
        // first moment (or the velocity) of either sign, the second positive.
        let start = |i: usize, signed: bool| match (i % 3, signed && i % 2 == 1) {
            (0, _) => 1e-3,
            (_, true) => -f32::MIN_POSITIVE,
            (_, false) => f32::MIN_POSITIVE,
        };
        let state: Vec<Vec<f32>> = (0..kind.state_names().len())
            .map(|k| (0..n).map(|i| start(i, k == 0)).collect())
            .collect();
        for b in [&mut cpu as &mut dyn Backend, &mut gpu] {
            set_state(b, &state);
            b.write(Tensor::Grads, &vec![0.0; n]).unwrap();
            b.update(StepHyper { lr: 0.01, t: 3 }).unwrap();
        }
        let (gs, cs) = (state_of(&mut gpu, kind), state_of(&mut cpu, kind));
        for (k, name) in kind.state_names().iter().enumerate() {
            let normal = |values: &[f32]| values.iter().step_by(3).copied().collect::<Vec<_>>();
            let (g_normal, c_normal) = (normal(&gs[k]), normal(&cs[k]));
            assert!(
                g_normal.iter().all(|&g| g.is_normal() && g < 1e-3),
                "{kind:?} {name}: a normal moment did not decay"
            );
            common::assert_close(&format!("{kind:?} {name}"), &g_normal, &c_normal, 0.0, 1e-6);
            // The rest: a zero of either sign (the CPU's hardware flush may make the product's
            // -0 a +0 in the sum that follows, before the software flush sees it).
            for i in (0..n).filter(|i| i % 3 != 0) {
                let (g, c) = (gs[k][i], cs[k][i]);
                assert!(
                    g == 0.0 && c == 0.0,
                    "{kind:?} {name}[{i}]: {:e} -> GPU {g:e}, CPU {c:e}",
                    state[k][i]
                );
            }
        }
    }
}

fn a_short_training_run_ends_within_a_point_of_the_cpu(ctx: GpuContext) {
    let data = gpumlp::dataset::mnist_sample();
    // 8,000 / 96 leaves a short last batch every epoch.
    let config = TrainConfig {
        hidden: vec![32],
        epochs: 2,
        batch: 96,
        schedule: Schedule::Cosine,
        ..TrainConfig::default()
    };
    let arch = config.architecture(&data.spec).unwrap();
    let run = |backend: Box<dyn Backend>| {
        let mut t = Trainer::new(config.clone(), backend, &data).unwrap();
        let mut train = Vec::new();
        while !t.finished() {
            train.push(block_on(t.train_epoch(&mut |_, _| {})).unwrap().train);
        }
        let test = block_on(t.evaluate()).unwrap();
        (
            train,
            test,
            block_on(t.backend.read(Tensor::Params)).unwrap(),
        )
    };
    let (cpu_train, cpu_test, cpu_params) = run(Box::new(CpuBackend::new(&arch)));
    let (gpu_train, gpu_test, gpu_params) = run(Box::new(GpuBackend::new(ctx, &arch).unwrap()));
    eprintln!(
        "test accuracy: cpu {} gpu {}",
        cpu_test.accuracy(),
        gpu_test.accuracy()
    );
    assert!(
        cpu_test.accuracy() > 0.85,
        "the CPU run itself did not learn: {}",
        cpu_test.accuracy()
    );
    assert!((gpu_test.accuracy() - cpu_test.accuracy()).abs() <= 0.01);
    for (g, c) in gpu_train.iter().zip(&cpu_train) {
        assert_eq!(g.count, c.count);
        assert!(
            (g.loss() - c.loss()).abs() < 1e-2,
            "epoch train loss {} vs {}",
            g.loss(),
            c.loss()
        );
    }
    // 166 steps later the parameters still agree closely.
    common::assert_close(
        "parameters after training",
        &gpu_params,
        &cpu_params,
        1e-3,
        1e-2,
    );
}

fn dispatches_past_65535_workgroups_cover_every_parameter(ctx: GpuContext) {
    // 784*8192 + 8192*2100 + 2100*10 parameters: more than 65,535 x 256, so the optimizer's
    // one-dimensional dispatch needs a second grid row.
    let arch = Architecture::mlp(&[8192, 2100]).unwrap();
    let opt = OptimizerConfig::new(OptimizerKind::Sgd);
    let mut gpu = GpuBackend::new(ctx, &arch).unwrap();
    gpu.attach_optimizer(&opt).unwrap();
    let n = gpu.layout().len;
    assert!(n > 65_535 * 256, "{n} parameters fit one row");
    // SGD with zero gradient and unit velocity: every parameter moves by exactly -lr * momentum.
    gpu.write(Tensor::Params, &vec![0.0; n]).unwrap();
    gpu.write(Tensor::State(0), &vec![1.0; n]).unwrap();
    gpu.update(StepHyper { lr: 0.5, t: 1 }).unwrap();
    let p = block_on(gpu.read(Tensor::Params)).unwrap();
    let want = -0.5 * opt.momentum;
    for i in [0, 65_535 * 256 - 1, 65_535 * 256, n - 1] {
        assert_eq!(p[i], want, "parameter {i} was not updated");
    }
    assert!(p.iter().all(|&x| x == want), "some parameters were skipped");
}

fn data_beyond_the_storage_binding_limit_is_refused_clearly(mut ctx: GpuContext) {
    // Pretend the device binds at most 1 MiB: 2,000 images (1.5 MiB) cannot be resident.
    ctx.limits.max_storage_buffer_binding_size = 1 << 20;
    let mut gpu = GpuBackend::new(ctx, &arch()).unwrap();
    let data = common::small_sample(2000, 10);
    let err = gpu
        .upload(Split::Train, &data.train)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("2000 samples") && err.contains("storage binding limit"),
        "{err}"
    );
    // A batch whose activations would not fit is refused the same way, not a validation panic.
    gpu.upload(Split::Test, &data.test).unwrap();
    let huge: Vec<u32> = (0..5000).map(|i| i % 10).collect();
    let err = gpu
        .forward(Split::Test, &huge, huge.len())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("batch of 5000") && err.contains("smaller batch"),
        "{err}"
    );
}

fn state_and_readbacks_round_trip_and_wrong_lengths_are_refused(ctx: GpuContext) {
    let (mut cpu, mut gpu) = pair(ctx, &adam());
    let n = cpu.layout().len;
    let state = vec![vec![0.25; n], vec![0.5; n]];
    for b in [&mut cpu as &mut dyn Backend, &mut gpu] {
        set_state(b, &state);
        b.forward(Split::Train, &batch(), 37).unwrap();
        assert!(
            b.write(Tensor::State(2), &state[0]).is_err(),
            "adam keeps two buffers"
        );
        assert!(
            b.write(Tensor::Params, &[0.0; 3]).is_err(),
            "three values are not a model"
        );
        assert!(
            b.write(Tensor::Logits, &state[0]).is_err(),
            "logits are read only"
        );
    }
    assert_eq!(state_of(&mut gpu, OptimizerKind::Adam), state);
    let want = block_on(cpu.take_stats(Split::Train)).unwrap();
    let got = block_on(gpu.take_stats(Split::Train)).unwrap();
    assert_eq!((got.count, got.correct), (want.count, want.correct));
    assert_eq!(
        block_on(gpu.read(Tensor::Params)).unwrap(),
        block_on(cpu.read(Tensor::Params)).unwrap(),
        "the parameters as set"
    );
    assert_eq!(
        block_on(gpu.take_stats(Split::Train)).unwrap().count,
        0,
        "taking the stats starts them afresh"
    );
}

/// After a span of steps (the GPU's own encoding of many steps at once), `backward` and
/// `update` act on the span's last step, as the CPU's do: the GPU's record of its last forward
/// follows the span.
fn backward_and_update_after_a_span_of_steps_match_the_cpu(ctx: GpuContext) {
    // SGD: its update is linear in the gradient (Adam's first steps are near sign(g), which
    // rounding can flip where a gradient is almost zero).
    let (mut cpu, mut gpu) = pair(ctx, &OptimizerConfig::new(OptimizerKind::Sgd));
    // Three steps of 40 rows, the last one short (20 rows).
    let order: Vec<u32> = (0..100).map(|i| (i * 29 + 3) % 300).collect();
    let hypers: Vec<StepHyper> = (1..=3).map(|t| StepHyper { lr: 0.01, t }).collect();
    for b in [&mut cpu as &mut dyn Backend, &mut gpu] {
        b.train(Span::new(&order, 40, &hypers).unwrap(), &mut |_| {})
            .unwrap();
        b.backward().unwrap();
    }
    same_logits("the last step's logits", &mut gpu, &mut cpu);
    assert_eq!(block_on(gpu.read(Tensor::Logits)).unwrap().len(), 20 * 10);
    common::assert_close(
        "gradient of the span's last step",
        &block_on(gpu.read(Tensor::Grads)).unwrap(),
        &block_on(cpu.read(Tensor::Grads)).unwrap(),
        1e-5,
        1e-3,
    );
    for b in [&mut cpu as &mut dyn Backend, &mut gpu] {
        b.update(StepHyper { lr: 0.01, t: 4 }).unwrap();
    }
    common::assert_close(
        "parameters after the span and one more update",
        &block_on(gpu.read(Tensor::Params)).unwrap(),
        &block_on(cpu.read(Tensor::Params)).unwrap(),
        1e-5,
        1e-3,
    );
    // A batch longer than its set (rows repeat) grows the set's order buffer without a larger
    // network: the products reading it must read the new one.
    let (wide, rows): (Vec<u32>, Vec<u32>) = (
        (0..150).collect(),
        (0..120).map(|i| (i * 7 + 1) % 100).collect(),
    );
    for b in [&mut cpu as &mut dyn Backend, &mut gpu] {
        b.forward(Split::Train, &wide, wide.len()).unwrap(); // buffers for 150 rows
        b.forward(Split::Test, &rows, rows.len()).unwrap();
    }
    same_logits("120 rows of a 100-row set", &mut gpu, &mut cpu);
    // An upload of the split forwarded ends what backward could use, on both.
    let data = common::small_sample(300, 100);
    for b in [&mut cpu as &mut dyn Backend, &mut gpu] {
        b.upload(Split::Test, &data.test).unwrap();
        assert!(b.backward().is_err(), "backward after an upload");
        assert!(
            block_on(b.read(Tensor::Logits)).is_err(),
            "logits after an upload"
        );
    }
}

/// Each activation (its WGSL injected into the GEMM's epilogues; GELU's derivative read off the
/// kept pre-activation) against the CPU: logits, every gradient, and the parameters after a
/// span of two steps.
fn every_activation_gives_the_cpus_logits_gradients_and_step(ctx: GpuContext) {
    for activation in Activation::ALL {
        let arch = arch().with_activation(activation);
        let sgd = OptimizerConfig::new(OptimizerKind::Sgd);
        let (mut cpu, mut gpu) = pair_for(&arch, ctx.clone(), &sgd);
        for b in [&mut cpu as &mut dyn Backend, &mut gpu] {
            b.forward(Split::Train, &batch(), 37).unwrap();
            b.backward().unwrap();
        }
        same_logits(&format!("{activation} logits"), &mut gpu, &mut cpu);
        let (g, c) = (
            block_on(gpu.read(Tensor::Grads)).unwrap(),
            block_on(cpu.read(Tensor::Grads)).unwrap(),
        );
        assert!(
            c.iter().filter(|x| x.abs() > 1e-6).count() > c.len() / 10,
            "{activation}: too few non-zero gradients to compare"
        );
        for e in &gpu.layout().entries.clone() {
            let what = format!("{activation} {}", e.name);
            common::assert_close(&what, &g[e.range()], &c[e.range()], 1e-5, 1e-3);
        }
        let order: Vec<u32> = (0..80).map(|i| (i * 31 + 5) % 300).collect();
        let hypers: Vec<StepHyper> = (1..=2).map(|t| StepHyper { lr: 0.01, t }).collect();
        for b in [&mut cpu as &mut dyn Backend, &mut gpu] {
            b.train(Span::new(&order, 40, &hypers).unwrap(), &mut |_| {})
                .unwrap();
        }
        common::assert_close(
            &format!("{activation} parameters after two steps"),
            &block_on(gpu.read(Tensor::Params)).unwrap(),
            &block_on(cpu.read(Tensor::Params)).unwrap(),
            1e-5,
            1e-3,
        );
    }
}

/// Steps of 40 rows over the first `n` training rows, learning rate 0.01.
fn steps_over(n: u32) -> (Vec<u32>, Vec<StepHyper>) {
    let order: Vec<u32> = (0..n).collect();
    let hypers = (1..=n.div_ceil(40) as u64)
        .map(|t| StepHyper { lr: 0.01, t })
        .collect();
    (order, hypers)
}

/// The device destroyed between spans (as a driver reset or a browser reclaiming the adapter
/// loses it): the next span, readback, forward and update each return the error, naming the
/// device and the reason; nothing panics.
fn a_device_lost_mid_training_is_an_error_from_then_on_not_a_panic(ctx: GpuContext) {
    let (_cpu, mut gpu) = pair(ctx.clone(), &adam());
    let (order, hypers) = steps_over(120);
    let span = || Span::new(&order, 40, &hypers).unwrap();
    gpu.train(span(), &mut |_| {}).unwrap();
    block_on(gpu.take_stats(Split::Train)).unwrap();
    ctx.device.destroy();
    let err = gpu.train(span(), &mut |_| {}).unwrap_err().to_string();
    assert!(
        err.contains(&ctx.info.name) && err.contains("destroyed"),
        "{err}"
    );
    let err = block_on(gpu.read(Tensor::Params)).unwrap_err().to_string();
    assert!(err.contains("destroyed"), "{err}");
    assert!(block_on(gpu.take_stats(Split::Train)).is_err());
    assert!(gpu.forward(Split::Test, &[0, 1, 2], 3).is_err());
    assert!(gpu.update(StepHyper { lr: 0.01, t: 9 }).is_err());
}

/// A buffer past the device's limit, which wgpu refuses with a validation error that would
/// panic without a handler: the backend's next call returns it instead.
fn an_allocation_the_driver_refuses_is_an_error_not_a_panic(ctx: GpuContext) {
    let (_cpu, mut gpu) = pair(ctx.clone(), &adam());
    let _refused = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("too large"),
        size: ctx.limits.max_buffer_size.saturating_add(4),
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let err = gpu
        .forward(Split::Train, &batch(), 37)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&ctx.info.name) && err.contains("too large"),
        "{err}"
    );
}
