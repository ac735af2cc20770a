//! Training behaviour of the CPU backend: the accuracy README.md states, determinism, exact
//! resume from a checkpoint, the optimizers against hand-computed updates, and its buffers read
//! and written in the parameter layout.

mod common;

use gpumlp::backend::{Backend, Split, Tensor};
use gpumlp::dataset;
use gpumlp::optim::{adam_update, sgd_update};
use gpumlp::{
    Checkpoint, CpuBackend, OptimizerConfig, OptimizerKind, Schedule, TrainConfig, Trainer,
};
use pollster::block_on;

fn cpu(config: &TrainConfig) -> Box<CpuBackend> {
    Box::new(CpuBackend::new(
        &config.architecture(&gpumlp::DataSpec::mnist()).unwrap(),
    ))
}

fn trainer(config: TrainConfig, data: &gpumlp::Splits) -> Trainer {
    Trainer::new(config.clone(), cpu(&config), data).unwrap()
}

/// One epoch, waited for.
fn epoch(t: &mut Trainer) -> gpumlp::train::EpochResult {
    block_on(t.train_epoch(&mut |_, _| {})).unwrap()
}

fn evaluate(t: &mut Trainer) -> gpumlp::Stats {
    block_on(t.evaluate()).unwrap()
}

fn checkpoint_bytes(t: &mut Trainer) -> Vec<u8> {
    block_on(t.checkpoint()).unwrap().to_bytes().unwrap()
}

fn small_config(epochs: usize) -> TrainConfig {
    TrainConfig {
        hidden: vec![64, 32],
        epochs,
        batch: 50,
        seed: 3,
        ..TrainConfig::default()
    }
}

#[test]
fn default_settings_reach_the_readme_accuracy_on_the_sample() {
    let data = dataset::mnist_sample();
    assert_eq!((data.train.len(), data.test.len()), (8000, 2000));
    let mut t = trainer(TrainConfig::default(), &data);
    while !t.finished() {
        epoch(&mut t);
    }
    let test = evaluate(&mut t);
    // README.md: "at least 96.0% test accuracy" with the defaults.
    assert!(
        test.accuracy() >= 0.960,
        "test accuracy {} is below the README's 96.0%",
        test.accuracy()
    );
    assert!(test.loss() < 0.2, "test loss {}", test.loss());
}

#[test]
fn same_seed_gives_identical_runs_and_checkpoint_bytes() {
    let data = common::small_sample(1000, 200);
    let run = || {
        let mut t = trainer(small_config(2), &data);
        let mut log = Vec::new();
        while !t.finished() {
            let e = epoch(&mut t);
            let test = evaluate(&mut t);
            log.push((
                e.train.loss_sum.to_bits(),
                e.train.correct,
                test.loss_sum.to_bits(),
                test.correct,
            ));
        }
        (log, checkpoint_bytes(&mut t))
    };
    let (log_a, bytes_a) = run();
    let (log_b, bytes_b) = run();
    assert_eq!(log_a, log_b);
    assert!(
        bytes_a == bytes_b,
        "checkpoints of two identical runs differ"
    );
    // And a different seed really is different (so the equality above means something).
    let mut other = small_config(2);
    other.seed = 4;
    let mut t = trainer(other, &data);
    epoch(&mut t);
    assert!(checkpoint_bytes(&mut t) != bytes_a);
}

#[test]
fn a_run_saved_mid_epoch_resumes_at_that_step_to_the_uninterrupted_bytes_and_metrics() {
    let data = common::small_sample(1000, 200);
    let config = small_config(3); // 20 steps an epoch
    let mut whole = trainer(config.clone(), &data);
    let mut whole_log = Vec::new();
    while !whole.finished() {
        whole_log.push(epoch(&mut whole).train);
    }

    // Stopped after 7 steps of epoch 2, as a preempted machine would be.
    let mut first = trainer(config.clone(), &data);
    let mut log = vec![epoch(&mut first).train];
    assert!(!block_on(first.advance(7, &mut |_, _| {})).unwrap());
    let bytes = checkpoint_bytes(&mut first);
    drop(first);
    let ckpt = Checkpoint::from_bytes("mid-epoch", &bytes).unwrap();
    let within = ckpt.training.as_ref().unwrap().within_epoch.unwrap();
    assert_eq!(within.steps, 7);
    let mut resumed = Trainer::resume(&ckpt, 3, cpu(&config), &data).unwrap();
    assert_eq!((resumed.epoch, resumed.step), (1, 27));
    assert_eq!(resumed.epoch_progress(), (7, 20));
    while !resumed.finished() {
        log.push(epoch(&mut resumed).train);
    }
    // The same batches: the same counts, and loss sums equal but for the order of the additions.
    assert_eq!(log.len(), whole_log.len());
    for (got, want) in log.iter().zip(&whole_log) {
        assert_eq!((got.count, got.correct), (want.count, want.correct));
        assert!((got.loss_sum - want.loss_sum).abs() <= 1e-12 * want.loss_sum);
    }
    assert!(
        checkpoint_bytes(&mut whole) == checkpoint_bytes(&mut resumed),
        "the resumed run's checkpoint differs from the uninterrupted one's"
    );
}

#[test]
fn resumed_run_equals_uninterrupted_run() {
    let data = common::small_sample(1000, 200);
    for (kind, schedule) in [
        (OptimizerKind::Adam, Schedule::Cosine),
        (OptimizerKind::Sgd, Schedule::Step),
    ] {
        let mut config = small_config(3);
        config.optimizer = OptimizerConfig::new(kind);
        config.schedule = schedule;

        let mut whole = trainer(config.clone(), &data);
        while !whole.finished() {
            epoch(&mut whole);
        }

        let mut first = trainer(config.clone(), &data);
        epoch(&mut first);
        let bytes = checkpoint_bytes(&mut first);
        drop(first);
        let ckpt = Checkpoint::from_bytes("epoch-1", &bytes).unwrap();
        let mut resumed = Trainer::resume(&ckpt, 3, cpu(&config), &data).unwrap();
        assert_eq!((resumed.epoch, resumed.step), (1, 20));
        while !resumed.finished() {
            epoch(&mut resumed);
        }
        assert_eq!(
            checkpoint_bytes(&mut whole),
            checkpoint_bytes(&mut resumed),
            "{kind:?}: resumed run differs from the uninterrupted one"
        );
    }
}

#[test]
fn checkpoint_round_trip_and_evaluation_reproduce() {
    let data = common::small_sample(500, 300);
    let mut t = trainer(small_config(1), &data);
    epoch(&mut t);
    let reported = evaluate(&mut t);
    let ckpt = block_on(t.checkpoint()).unwrap();
    let loaded = Checkpoint::from_bytes("m", &ckpt.to_bytes().unwrap()).unwrap();
    assert_eq!(loaded.params, ckpt.params);
    assert_eq!(loaded.training, ckpt.training);
    // Evaluation needs no optimizer.
    let mut fresh = CpuBackend::new(&loaded.architecture);
    fresh.write(Tensor::Params, &loaded.params).unwrap();
    fresh.upload(Split::Test, &data.test).unwrap();
    let len = data.test.len();
    assert_eq!(
        block_on(fresh.evaluate(Split::Test, len)).unwrap(),
        reported
    );
}

#[test]
fn optimizers_match_hand_computed_updates() {
    let mut cfg = OptimizerConfig::new(OptimizerKind::Sgd);
    cfg.momentum = 0.5;
    let (mut p, mut vel) = (vec![1.0f32, -2.0], vec![0.2f32, 0.0]);
    sgd_update(&cfg, &cfg.scalars(0.1, 1), &mut p, &[0.4, -1.0], &mut vel);
    // v = 0.5*0.2 + 0.4 = 0.5, p = 1 - 0.05;  v = -1, p = -2 + 0.1
    common::assert_close("sgd v", &vel, &[0.5, -1.0], 1e-7, 0.0);
    common::assert_close("sgd p", &p, &[0.95, -1.9], 1e-6, 0.0);

    let cfg = OptimizerConfig::new(OptimizerKind::Adam);
    let (mut p, mut m, mut v) = (vec![1.0f32], vec![0.0f32], vec![0.0f32]);
    adam_update(&cfg, &cfg.scalars(0.01, 1), &mut p, &[0.5], &mut m, &mut v);
    // Step 1: m_hat = g, v_hat = g^2, so p moves by lr * g/|g| (minus eps) = 0.01.
    common::assert_close("adam m", &m, &[0.05], 1e-7, 0.0);
    common::assert_close("adam v", &v, &[0.00025], 0.0, 1e-4);
    common::assert_close("adam p", &p, &[0.99], 1e-6, 0.0);
    adam_update(&cfg, &cfg.scalars(0.01, 2), &mut p, &[-0.5], &mut m, &mut v);
    // m = 0.9*0.05 - 0.05 = -0.005, m_hat = -0.005/0.19; v = 0.999*0.00025 + 0.00025, v_hat = v/(1-0.999^2)
    let m_hat = -0.005f64 / 0.19;
    let v_hat = (0.999 * 0.00025 + 0.001 * 0.25) / (1.0 - 0.999f64 * 0.999);
    let want = 0.99 - 0.01 * m_hat / (v_hat.sqrt() + 1e-8);
    common::assert_close("adam p, step 2", &p, &[want as f32], 1e-6, 0.0);
}

#[test]
fn optimizers_store_subnormal_moments_as_zero() {
    // Decaying with a zero gradient, each moment would land just under f32::MIN_POSITIVE
    // (1.18e-38): the optimizers store 0 there on every target, with or without the hardware's
    // flushing mode (this test thread runs in the default mode, keeping subnormals).
    let tiny = 1.2e-38f32;
    let adam = OptimizerConfig::new(OptimizerKind::Adam);
    // beta2 = 0.999 takes v only just under.
    let (mut p, mut m, mut v) = (
        vec![0.5f32, 0.5, 0.5],
        vec![tiny, 0.25, -tiny],
        vec![1.176e-38, 1.0, 1.176e-38],
    );
    let scalars = adam.scalars(1e-3, 9);
    adam_update(&adam, &scalars, &mut p, &[0.0; 3], &mut m, &mut v);
    assert_eq!((m[0], v[0]), (0.0, 0.0), "the first moments flushed");
    assert_eq!((m[1], v[1]), (0.225, 0.999), "normal moments kept");
    // As the hardware's flush does: a zero of the value's sign.
    assert_eq!(
        m[2].to_bits(),
        (-0.0f32).to_bits(),
        "a negative moment flushed to -0"
    );
    assert_eq!(
        (p[0], p[2]),
        (0.5, 0.5),
        "a weight with no moment left does not move"
    );

    let mut sgd = OptimizerConfig::new(OptimizerKind::Sgd);
    sgd.momentum = 0.5;
    let (mut p, mut vel) = (vec![0.5f32], vec![tiny]);
    sgd_update(&sgd, &sgd.scalars(0.1, 1), &mut p, &[0.0], &mut vel);
    assert_eq!((vel[0], p[0]), (0.0, 0.5));
}

#[test]
fn schedules_follow_their_definitions() {
    assert_eq!(Schedule::Constant.lr(0.1, 99, 100), 0.1);
    assert_eq!(Schedule::Step.lr(1.0, 49, 100), 1.0);
    assert!((Schedule::Step.lr(1.0, 50, 100) - 0.1).abs() < 1e-7);
    assert!((Schedule::Step.lr(1.0, 75, 100) - 0.01).abs() < 1e-8);
    assert_eq!(Schedule::Cosine.lr(1.0, 0, 100), 1.0);
    assert!((Schedule::Cosine.lr(1.0, 50, 100) - 0.5).abs() < 1e-6);
    assert!(Schedule::Cosine.lr(1.0, 99, 100) < 1e-3);
}

#[test]
fn bad_settings_are_refused_with_the_setting_named() {
    use gpumlp::{Error, Setting};
    let data = common::small_sample(10, 10);
    type Spoil = fn(&mut TrainConfig);
    let cases: [(Spoil, Setting, &str); 6] = [
        (|c| c.hidden = vec![0], Setting::Hidden, "layer width 0"),
        (|c| c.hidden = vec![], Setting::Hidden, "at least one"),
        (|c| c.batch = 0, Setting::Batch, "0 is out of range"),
        (|c| c.optimizer.lr = f32::NAN, Setting::LearningRate, "NaN"),
        (
            |c| c.optimizer.momentum = 1.0,
            Setting::Momentum,
            "1 is out",
        ),
        (|c| c.epochs = 0, Setting::Epochs, "0 is out of range"),
    ];
    for (spoil, want_setting, want_reason) in cases {
        let mut c = small_config(1);
        spoil(&mut c);
        match Trainer::new(c, cpu(&small_config(1)), &data).err() {
            Some(Error::Setting { setting, reason }) => {
                assert_eq!(setting, want_setting, "{reason}");
                assert!(
                    reason.contains(want_reason),
                    "'{reason}' lacks '{want_reason}'"
                );
            }
            other => panic!("expected a {want_setting} error, got {other:?}"),
        }
    }
    // The words the core uses for a setting, before a front end maps them to its own.
    assert_eq!(Setting::LearningRate.to_string(), "learning rate");
}

#[test]
fn a_checkpoint_claiming_a_huge_model_is_refused_before_allocating() {
    // A valid safetensors file whose metadata claims 784-8192-8192-10 (74M parameters, 296 MB)
    // while holding one small tensor: refused from the file size, nothing allocated from the claim.
    let meta = r#"{"format_version":1,"architecture":[784,8192,8192,10],"activation":"relu","input_scale":0.003921569}"#;
    let data = vec![0u8; 64];
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![16], &data).unwrap();
    let info = std::collections::HashMap::from([("gpumlp".to_string(), meta.to_string())]);
    let bytes = safetensors::serialize([("layers.0.bias", view)], Some(info)).unwrap();
    let err = Checkpoint::from_bytes("lying.st", &bytes)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("lying.st") && err.contains("needs") && err.contains("the file has"),
        "{err}"
    );
}

#[test]
fn training_in_slices_equals_whole_epochs() {
    let data = common::small_sample(1000, 200);
    let mut whole = trainer(small_config(2), &data);
    let mut whole_results = Vec::new();
    while !whole.finished() {
        whole_results.push(epoch(&mut whole));
    }

    // 20 steps per epoch, trained 7 at a time: slices cross nothing but step boundaries.
    let mut sliced = trainer(small_config(2), &data);
    let mut sliced_results = Vec::new();
    while !sliced.finished() {
        if block_on(sliced.advance(7, &mut |_, _| {})).unwrap() {
            sliced_results.push(block_on(sliced.finish_epoch()).unwrap());
        } else {
            let (done, total) = sliced.epoch_progress();
            assert!(done > 0 && done < total);
            assert!(
                block_on(sliced.finish_epoch()).is_err(),
                "an epoch cannot end before its last step"
            );
            // Mid-epoch, a checkpoint says where in the epoch the run is.
            let ckpt = block_on(sliced.checkpoint()).unwrap();
            let within = ckpt.training.unwrap().within_epoch.unwrap();
            assert_eq!(within.steps, done);
        }
    }
    // The same steps; the mid-epoch checkpoints took the stats out early, which changes only
    // the order of the loss sum's additions.
    assert_eq!(sliced_results.len(), whole_results.len());
    for (s, w) in sliced_results.iter().zip(&whole_results) {
        assert_eq!((s.epoch, s.lr), (w.epoch, w.lr));
        assert_eq!(
            (s.train.count, s.train.correct),
            (w.train.count, w.train.correct)
        );
        assert!((s.train.loss_sum - w.train.loss_sum).abs() <= 1e-12 * w.train.loss_sum);
    }
    assert_eq!(checkpoint_bytes(&mut sliced), checkpoint_bytes(&mut whole));
    assert!(
        block_on(sliced.advance(1, &mut |_, _| {})).is_err(),
        "training past the last epoch must be refused"
    );
}

#[test]
fn settings_parse_and_display_as_users_write_them() {
    use gpumlp::Architecture;
    let b1: Architecture = "512,256".parse().unwrap();
    assert_eq!(b1.to_string(), "784-512-256-10");
    assert_eq!("784-512-256-10".parse::<Architecture>().unwrap(), b1);
    // The whole form takes any ends (a program checks them against its data).
    let iris: Architecture = "4-32-3".parse().unwrap();
    assert_eq!(iris.sizes, [4, 32, 3]);
    for bad in [
        "",
        "512,,256",
        "abc",
        "0",
        "784-10",
        "784-512-1",
        "0-512-10",
    ] {
        assert!(bad.parse::<Architecture>().is_err(), "'{bad}' parsed");
    }
    for kind in OptimizerKind::ALL {
        assert_eq!(kind.to_string().parse::<OptimizerKind>().unwrap(), kind);
    }
    for schedule in Schedule::ALL {
        assert_eq!(schedule.to_string().parse::<Schedule>().unwrap(), schedule);
    }
    let err = "adamw".parse::<OptimizerKind>().unwrap_err().to_string();
    assert!(err.starts_with("optimizer: 'adamw'"), "{err}");
    assert_eq!(err, "optimizer: 'adamw' is not adam or sgd");
    let err = "linear".parse::<Schedule>().unwrap_err().to_string();
    assert_eq!(err, "schedule: 'linear' is not constant, step or cosine");
    let err = "swish"
        .parse::<gpumlp::Activation>()
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "activation: 'swish' is not relu, leaky-relu, tanh, sigmoid or gelu"
    );
    assert_eq!(
        OptimizerConfig::new(OptimizerKind::Sgd).to_string(),
        "sgd lr 0.05 momentum 0.9"
    );
}

/// The CPU backend keeps its weights transposed; what goes in and comes out is the parameter
/// layout (`layers.{l}.weight` `[out, in]`, so `z = x @ W^T + b`), and the gradient as kept is
/// the same values in the backend's own order, written back unchanged.
#[test]
fn cpu_buffers_read_and_write_in_the_parameter_layout() {
    let data = common::small_sample(4, 1);
    let arch = gpumlp::Architecture::mlp(&[5]).unwrap();
    let mut cpu = CpuBackend::new(&arch);
    cpu.upload(Split::Train, &data.train).unwrap();
    let n = cpu.layout().len;
    // Distinct values everywhere, so any misplaced one shows.
    let params: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 * 1e-4 - 0.05)
        .collect();
    cpu.write(Tensor::Params, &params).unwrap();
    assert_eq!(block_on(cpu.read(Tensor::Params)).unwrap(), params);

    // One forward, its logits against a = relu(x @ W^T + b) layer by layer by hand.
    cpu.forward(Split::Train, &[2], 1).unwrap();
    let mut a = vec![0.0; arch.sizes[0]];
    data.train.read_row(2, &mut a);
    for l in 0..arch.layers() {
        let (w, b) = (cpu.layout().weight(l).range(), cpu.layout().bias(l).range());
        let (inp, out) = (arch.sizes[l], arch.sizes[l + 1]);
        a = (0..out)
            .map(|o| {
                let row = &params[w.start + o * inp..w.start + (o + 1) * inp];
                let z = params[b.start + o] + row.iter().zip(&a).map(|(w, a)| w * a).sum::<f32>();
                if l + 1 < arch.layers() {
                    z.max(0.0)
                } else {
                    z
                }
            })
            .collect();
    }
    let logits = block_on(cpu.read(Tensor::Logits)).unwrap();
    for (o, (got, want)) in logits.iter().zip(&a).enumerate() {
        assert!((got - want).abs() < 1e-4, "logit {o}: {got} against {want}");
    }

    let grads: Vec<f32> = params.iter().map(|p| p * 3.0).collect();
    cpu.write(Tensor::Grads, &grads).unwrap();
    let kept = block_on(cpu.read(Tensor::GradsAsKept)).unwrap();
    let sorted = |v: &[f32]| {
        let mut v = v.to_vec();
        v.sort_by(f32::total_cmp);
        v
    };
    assert_eq!(sorted(&kept), sorted(&grads), "the same values");
    assert_ne!(kept, grads, "kept in the backend's own order");
    cpu.write(Tensor::GradsAsKept, &kept).unwrap();
    assert_eq!(block_on(cpu.read(Tensor::Grads)).unwrap(), grads);
}
