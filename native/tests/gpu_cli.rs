//! The program on a GPU adapter (lavapipe in CI): the GEMM tuning cache is written once, reused
//! by later runs, and set aside with a note when it is corrupt; `bench --tune` lists every
//! candidate. Where no software adapter exists the tests are reported as ignored, with the
//! reason, and fail under CI (CI=true).

mod common;

use common::*;
use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    let tmp = tempfile::tempdir().unwrap();
    let devices = gpumlp(&["devices", "--json"], tmp.path());
    let has_software = json(&devices)
        .as_array()
        .is_some_and(|d| d.iter().any(|a| a["kind"] == "software-gpu"));
    let missing = (!has_software)
        .then_some("no software GPU adapter: apt-get install mesa-vulkan-drivers gives lavapipe");
    let tests: [(&str, fn()); 5] = [
        (
            "mixed_precision_is_one_line_where_the_adapter_lacks_cooperative_matrices",
            mixed_precision_is_one_line_where_the_adapter_lacks_cooperative_matrices,
        ),
        (
            "a_device_lost_mid_epoch_ends_with_one_line_and_the_checkpoint_resumes",
            a_device_lost_mid_epoch_ends_with_one_line_and_the_checkpoint_resumes,
        ),
        (
            "the_tuning_cache_is_written_once_reused_and_replaced_when_corrupt",
            the_tuning_cache_is_written_once_reused_and_replaced_when_corrupt,
        ),
        (
            "each_activation_trains_on_the_software_gpu_as_on_the_cpu",
            each_activation_trains_on_the_software_gpu_as_on_the_cpu,
        ),
        (
            "bench_tune_lists_every_candidate_per_shape",
            bench_tune_lists_every_candidate_per_shape,
        ),
    ];
    let trials = tests
        .into_iter()
        .map(|(name, body)| gated(name, missing, body))
        .collect();
    libtest_mimic::run(&args, trials).exit_code()
}

/// The one file in the cache's tuning folder, and its text.
fn tuning_file(cache: &Path) -> (std::path::PathBuf, String) {
    let dir = cache.join("gemm-tuning");
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let text = std::fs::read_to_string(&files[0]).unwrap();
    (files[0].clone(), text)
}

fn the_tuning_cache_is_written_once_reused_and_replaced_when_corrupt() {
    let tmp = tempfile::tempdir().unwrap();
    // A small model, so timing the candidates on a software adapter takes seconds.
    let train = || {
        gpumlp_env(
            &[
                "train",
                "--data",
                "mnist-sample",
                "--device",
                "software",
                "--hidden",
                "24",
                "--batch",
                "64",
                "--epochs",
                "1",
                "--json",
            ],
            tmp.path(),
            &[("GPUMLP_TUNE", "1")],
        )
    };
    let first = train();
    assert_ok(&first);
    assert!(
        stderr(&first).contains("timed the GEMM variants"),
        "{}",
        stderr(&first)
    );
    let (path, text) = tuning_file(tmp.path());
    assert!(
        text.contains("llvmpipe") || text.contains("\"device\""),
        "{text}"
    );
    assert!(
        text.contains("64x784x24 NT"),
        "the first layer's shape is cached: {text}"
    );

    // Reused: nothing timed, nothing written.
    let second = train();
    assert_ok(&second);
    assert!(
        !stderr(&second).contains("timed the GEMM"),
        "{}",
        stderr(&second)
    );
    assert_eq!(tuning_file(tmp.path()).1, text);
    assert_eq!(
        json(&first)["test_accuracy"],
        json(&second)["test_accuracy"]
    );

    // Corrupt: set aside with a note, tuned again, and written whole.
    std::fs::write(&path, "{ not json").unwrap();
    let third = train();
    assert_ok(&third);
    let err = stderr(&third);
    assert!(
        err.contains("ignoring the GEMM tuning cache") && err.contains("timed the GEMM"),
        "{err}"
    );
    assert!(tuning_file(tmp.path()).1.contains("64x784x24 NT"));
}

/// `--precision mixed` on bookworm's lavapipe (no cooperative matrices): one line naming the
/// adapter and what it lacks, before any data is read; `devices` says it has no mixed precision.
fn mixed_precision_is_one_line_where_the_adapter_lacks_cooperative_matrices() {
    let tmp = tempfile::tempdir().unwrap();
    let devices = gpumlp(&["devices", "--json"], tmp.path());
    assert_ok(&devices);
    let software = json(&devices)
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["kind"] == "software-gpu")
        .cloned()
        .unwrap();
    if software["cooperative_matrices"]
        .as_array()
        .unwrap()
        .is_empty()
    {
        assert!(stdout(&devices).contains("no mixed precision"));
        let out = gpumlp(
            &[
                "train",
                "--device",
                "software",
                "--precision",
                "mixed",
                "--data",
                "mnist-sample",
            ],
            tmp.path(),
        );
        let name = software["name"].as_str().unwrap();
        assert_refused(&out, &[name, "--precision mixed", "cooperative matrices"]);
    } else {
        // An adapter with them (sid's lavapipe run directly): a short mixed run trains.
        let out = gpumlp(
            &[
                "train",
                "--device",
                "software",
                "--precision",
                "mixed",
                "--data",
                "mnist-sample",
                "--hidden",
                "16",
                "--epochs",
                "1",
                "--json",
            ],
            tmp.path(),
        );
        assert_ok(&out);
        assert_eq!(json(&out)["config"]["precision"], "mixed");
    }
}

fn bench_tune_lists_every_candidate_per_shape() {
    // (The square product comes first, then B1's five shapes.)
    let tmp = tempfile::tempdir().unwrap();
    let out = gpumlp(
        &[
            "bench", "--device", "software", "--size", "64", "--tune", "--json",
        ],
        tmp.path(),
    );
    assert_ok(&out);
    let j = json(&out);
    let gemms = j["gemm"].as_array().unwrap();
    assert_eq!(gemms.len(), 6);
    let mut splits = 0;
    for g in gemms {
        let candidates = g["candidates"].as_array().unwrap();
        // The six tiles, then the splits of K (in parts of at least 128) of the best and the
        // largest tile, never for a weight gradient (A transposed).
        let (k, weight_grad) = (
            g["k"].as_u64().unwrap(),
            g["layout"].as_str().unwrap().contains(" TN"),
        );
        let parts = [2, 4, 8]
            .iter()
            .filter(|&&p| !weight_grad && k >= 128 * p)
            .count();
        let tiles = candidates
            .iter()
            .filter(|c| !c["variant"].as_str().unwrap().contains("k/"))
            .count();
        assert_eq!(tiles, 6, "{g}");
        assert!(
            (parts..=2 * parts).contains(&(candidates.len() - 6)),
            "{parts} split factors: {g}"
        );
        splits += candidates.len() - 6;
        let fastest = candidates
            .iter()
            .min_by(|a, b| {
                a["seconds"]
                    .as_f64()
                    .unwrap()
                    .total_cmp(&b["seconds"].as_f64().unwrap())
            })
            .unwrap();
        assert_eq!(
            g["variant"], fastest["variant"],
            "the fastest candidate is chosen: {g}"
        );
    }
    assert!(splits > 0, "no split of K was timed");
    // Ten, and one more for each of the five products whose K may be split where it is.
    let dispatches = j["train_step"]["dispatches_per_step"].as_u64().unwrap();
    assert!((10..=15).contains(&dispatches), "{dispatches}");
    assert!(j["train_step"]["encode_seconds"].as_f64().unwrap() > 0.0);
}

/// Every activation through the program on the software GPU and on the CPU: the same small run
/// ends within a point of the CPU's accuracy, and `eval` on the GPU reproduces the GPU's.
fn each_activation_trains_on_the_software_gpu_as_on_the_cpu() {
    let tmp = tempfile::tempdir().unwrap();
    for activation in ["relu", "leaky-relu", "tanh", "sigmoid", "gelu"] {
        let model = tmp.path().join(format!("{activation}.st"));
        let run = |device: &str| {
            let out = gpumlp(
                &[
                    "train",
                    "--data",
                    "mnist-sample",
                    "--hidden",
                    "32",
                    "--epochs",
                    "1",
                    "--activation",
                    activation,
                    "--device",
                    device,
                    "--save",
                    model.to_str().unwrap(),
                    "--json",
                ],
                tmp.path(),
            );
            assert_ok(&out);
            json(&out)["test_accuracy"].as_f64().unwrap()
        };
        let cpu = run("cpu");
        let gpu = run("software");
        assert!(
            (gpu - cpu).abs() <= 0.01 && cpu > 0.7,
            "{activation}: software GPU {gpu}, CPU {cpu}"
        );
        let eval = gpumlp(
            &[
                "eval",
                "--model",
                model.to_str().unwrap(),
                "--device",
                "software",
                "--json",
            ],
            tmp.path(),
        );
        assert_ok(&eval);
        assert_eq!(
            json(&eval)["test_accuracy"].as_f64(),
            Some(gpu),
            "{activation}"
        );
    }
}

/// The GPU destroyed in the middle of epoch 2 (the test-only `GPUMLP_TEST_LOSE_DEVICE`): one
/// line naming the epoch, the device and the reason, exit status 2, no temporary file; the
/// checkpoint of epoch 1 is whole and resumes, on the software GPU to the uninterrupted run's
/// accuracy and on the CPU to within a point of it.
fn a_device_lost_mid_epoch_ends_with_one_line_and_the_checkpoint_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m.st");
    let m = model.to_str().unwrap();
    let train = |epochs: &str, extra: &[&str], env: &[(&str, &str)]| {
        let args = [
            &[
                "train",
                "--data",
                "mnist-sample",
                "--hidden",
                "32",
                "--epochs",
                epochs,
            ][..],
            extra,
        ]
        .concat();
        gpumlp_env(&args, tmp.path(), env)
    };
    let lost = train(
        "3",
        &["--device", "software", "--save", m],
        &[("GPUMLP_TEST_LOSE_DEVICE", "2:20")],
    );
    // The run printed its first epoch; its error is the one last line.
    let err = stderr(&lost);
    let last = err.lines().last().unwrap_or("");
    assert_eq!(lost.status.code(), Some(2), "{err}");
    assert!(
        last.starts_with("error: training stopped during epoch 2: ") && last.contains("destroyed"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        listing(tmp.path()),
        vec!["m.st".to_string()],
        "a temporary file was left"
    );
    let accuracy = |out: &std::process::Output| {
        assert_ok(out);
        json(out)["test_accuracy"].as_f64().unwrap()
    };
    let whole = accuracy(&train("3", &["--device", "software", "--json"], &[]));
    for (device, within) in [("software", 0.002), ("cpu", 0.01)] {
        let resumed = accuracy(&gpumlp(
            &[
                "train", "--resume", m, "--epochs", "3", "--device", device, "--json",
            ],
            tmp.path(),
        ));
        assert!(
            (resumed - whole).abs() <= within,
            "resumed on {device}: {resumed}, uninterrupted {whole}"
        );
    }
}
