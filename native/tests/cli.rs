//! The `gpumlp` program end to end: training and its outputs, eval reproducing train, predict,
//! determinism and exact resume through the command line, the offline default, and the contract
//! for bad input (exit status 2, one line naming the file or flag, no panic, no partial file).

mod common;

use common::*;
use std::path::Path;

/// `dir/m.st`: a model trained on the built-in sample with `--hidden hidden` for `epochs`.
fn sample_model(dir: &Path, hidden: &str, epochs: &str) -> std::path::PathBuf {
    let model = dir.join("m.st");
    assert_ok(&gpumlp(
        &[
            "train",
            "--data",
            "mnist-sample",
            "--hidden",
            hidden,
            "--epochs",
            epochs,
            "--save",
            s(&model),
        ],
        dir,
    ));
    model
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn train_writes_every_output_and_eval_reproduces_its_accuracy() {
    let tmp = tempfile::tempdir().unwrap();
    let data = sample_dir(&tmp.path().join("data"), 1500, 400, true);
    let (model, metrics, plot) = (
        tmp.path().join("m.safetensors"),
        tmp.path().join("run.jsonl"),
        tmp.path().join("c.png"),
    );
    let args = [
        "train",
        "--data",
        s(&data),
        "--hidden",
        "48",
        "--epochs",
        "2",
        "--batch",
        "64",
        "--save",
        s(&model),
    ];
    let out = gpumlp(
        &[
            &args[..],
            &["--metrics", s(&metrics), "--plot", s(&plot), "--json"],
        ]
        .concat(),
        tmp.path(),
    );
    assert_ok(&out);
    let j = json(&out);
    for field in [
        "test_accuracy",
        "epochs",
        "train_seconds",
        "samples_per_second",
    ] {
        assert!(j[field].is_number(), "--json lacks {field}: {j}");
    }
    assert_eq!(j["epochs"], 2);
    assert_eq!(j["device"]["kind"], "cpu");
    assert!(j["device"]["name"].is_string() && j["device"]["backend"].is_string());
    assert_eq!(
        (j["data"]["train"].as_u64(), j["data"]["test"].as_u64()),
        (Some(1500), Some(400))
    );
    let accuracy = j["test_accuracy"].as_f64().unwrap();
    assert!(
        accuracy > 0.6,
        "accuracy {accuracy} after 2 epochs on 1,500 digits"
    );

    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&metrics)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["epoch"], 2);
    assert_eq!(lines[1]["test_accuracy"].as_f64(), Some(accuracy));
    assert!(
        std::fs::read(&plot).unwrap().starts_with(b"\x89PNG"),
        "--plot did not write a PNG"
    );

    let eval = gpumlp(&["eval", "--model", s(&model), "--json"], tmp.path());
    assert_ok(&eval);
    assert_eq!(
        json(&eval)["test_accuracy"].as_f64(),
        Some(accuracy),
        "eval disagrees with train"
    );
    assert_eq!(
        listing(tmp.path())
            .iter()
            .filter(|n| n.contains(".tmp"))
            .count(),
        0
    );
}

#[test]
fn the_activation_is_a_setting_that_checkpoints_keep_and_eval_reproduces() {
    let tmp = tempfile::tempdir().unwrap();
    let data = sample_dir(&tmp.path().join("data"), 1000, 300, true);
    let model = tmp.path().join("gelu.st");
    let out = gpumlp(
        &[
            "train",
            "--data",
            s(&data),
            "--hidden",
            "24",
            "--epochs",
            "2",
            "--batch",
            "32",
            "--activation",
            "gelu",
            "--save",
            s(&model),
            "--json",
        ],
        tmp.path(),
    );
    assert_ok(&out);
    assert!(
        stderr(&out).contains("784-24-10 (gelu)"),
        "{}",
        stderr(&out)
    );
    let j = json(&out);
    assert_eq!(j["config"]["activation"], "gelu");
    let accuracy = j["test_accuracy"].as_f64().unwrap();
    assert!(accuracy > 0.6, "gelu learned nothing: {accuracy}");
    let eval = gpumlp(&["eval", "--model", s(&model), "--json"], tmp.path());
    assert_ok(&eval);
    assert_eq!(json(&eval)["test_accuracy"].as_f64(), Some(accuracy));
    // Resuming keeps the run's activation: another one is refused, naming the flag.
    let resumed = gpumlp(
        &[
            "train",
            "--resume",
            s(&model),
            "--epochs",
            "3",
            "--activation",
            "tanh",
        ],
        tmp.path(),
    );
    assert_refused(
        &resumed,
        &["--activation", "resumed run keeps its settings"],
    );
    let bad = gpumlp(&["train", "--activation", "swish"], tmp.path());
    assert_refused(&bad, &["--activation", "swish"]);
}

/// A run stopped by `signal` (`GPUMLP_TEST_SIGNAL`, sent at step `at` of epoch 2 of 3, 63 steps
/// each) and resumed from its `--save`: returns the stopped run's output, the step of epoch 2
/// its checkpoint holds (0 at the end of epoch 1), and whether the finished run's checkpoint is
/// byte-identical to an uninterrupted run's.
fn stopped_and_resumed(
    signal: &str,
    at: usize,
    extra: &[&str],
) -> (std::process::Output, usize, bool) {
    let tmp = tempfile::tempdir().unwrap();
    let (stopped, whole) = (tmp.path().join("stopped.st"), tmp.path().join("whole.st"));
    fn args<'a>(save: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
        let run = [
            "train",
            "--data",
            "mnist-sample",
            "--hidden",
            "32",
            "--epochs",
            "3",
        ];
        [&run[..], &["--save", s(save)][..], extra].concat()
    }
    let out = gpumlp_env(
        &args(&stopped, extra),
        tmp.path(),
        &[("GPUMLP_TEST_SIGNAL", &format!("2:{at}:{signal}"))],
    );
    // The position is in the checkpoint's metadata (JSON inside the safetensors header).
    let bytes = std::fs::read(&stopped).unwrap();
    let header = String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]).replace('\\', "");
    let steps = header
        .split(r#""within_epoch":{"steps":"#)
        .nth(1)
        .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap());
    assert_eq!(
        listing(tmp.path()),
        vec!["stopped.st".to_string()],
        "a temporary file was left"
    );
    let resumed = gpumlp(
        &[
            "train",
            "--resume",
            s(&stopped),
            "--epochs",
            "3",
            "--save",
            s(&stopped),
        ],
        tmp.path(),
    );
    assert_ok(&resumed);
    assert_ok(&gpumlp(&args(&whole, extra), tmp.path()));
    let same = std::fs::read(&stopped).unwrap() == std::fs::read(&whole).unwrap();
    (out, steps, same)
}

#[test]
fn sigterm_and_sigint_mid_epoch_save_that_step_and_resume_to_the_uninterrupted_bytes() {
    for (signal, name, status) in [("TERM", "SIGTERM", 143), ("INT", "SIGINT", 130)] {
        // Sent at step 10; noticed at the end of the slice under way.
        let (out, steps, same) = stopped_and_resumed(signal, 10, &[]);
        assert_eq!(steps, 32);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(status), "{err}");
        // Epoch 1's line, then the one line saying where the run stopped and what it kept.
        let last = err.lines().last().unwrap_or("");
        assert!(
            last.starts_with(&format!(
                "stopped by {name} at step 32 of 63 of epoch 2: checkpoint saved to "
            )) && last.contains("--resume"),
            "{err}"
        );
        assert!(
            same,
            "{name}: the resumed run's checkpoint differs from the uninterrupted one's"
        );
    }
}

#[test]
fn save_every_bounds_what_a_kill_9_loses() {
    // Killed (nothing runs after SIGKILL) at step 40 of epoch 2: the checkpoint written every 16
    // steps (at the end of a 32-step slice) holds step 32, and the run resumes from there to
    // the uninterrupted bytes.
    let (out, steps, same) = stopped_and_resumed("KILL", 40, &["--save-every", "16"]);
    assert_eq!(steps, 32, "the --save-every checkpoint");
    assert_eq!(
        out.status.code(),
        None,
        "killed by a signal: {}",
        stderr(&out)
    );
    assert!(
        same,
        "the run resumed from the --save-every checkpoint differs"
    );
}

#[test]
fn same_seed_gives_identical_metrics_and_checkpoint_bytes_whatever_the_thread_count() {
    let tmp = tempfile::tempdir().unwrap();
    let data = sample_dir(&tmp.path().join("data"), 800, 200, false);
    let run = |name: &str, threads: &str| {
        let (model, metrics) = (
            tmp.path().join(format!("{name}.st")),
            tmp.path().join(format!("{name}.jsonl")),
        );
        let out = gpumlp_env(
            &[
                "train",
                "--data",
                s(&data),
                "--hidden",
                "512,33", // multi-block products, blocks of uneven widths
                "--batch",
                "64",
                "--epochs",
                "2",
                "--seed",
                "9",
                "--save",
                s(&model),
                "--metrics",
                s(&metrics),
            ],
            tmp.path(),
            &[("RAYON_NUM_THREADS", threads)],
        );
        assert_ok(&out);
        // Everything but the timings must agree.
        let lines: Vec<String> = std::fs::read_to_string(&metrics)
            .unwrap()
            .lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                v.as_object_mut()
                    .unwrap()
                    .retain(|k, _| !["seconds", "samples_per_second"].contains(&k.as_str()));
                v.to_string()
            })
            .collect();
        (lines, std::fs::read(&model).unwrap())
    };
    let a = run("a", "2");
    for (name, threads) in [("b", "2"), ("one", "1"), ("three", "3")] {
        let b = run(name, threads);
        assert_eq!(a.0, b.0, "metrics differ on {threads} threads");
        assert!(a.1 == b.1, "checkpoints differ on {threads} threads");
    }
}

#[test]
fn resuming_after_an_epoch_gives_the_uninterrupted_result() {
    // Through the program with a constant rate: a 1-epoch run resumed to 2 epochs equals a
    // 2-epoch run byte for byte. (Schedules that depend on the total number of epochs are
    // covered in the core tests, which resume the 3-epoch run's own epoch-1 state.)
    let tmp = tempfile::tempdir().unwrap();
    let data = sample_dir(&tmp.path().join("data"), 600, 200, false);
    let path = |n: &str| tmp.path().join(n);
    let settings = [
        "--hidden",
        "24",
        "--schedule",
        "constant",
        "--optimizer",
        "sgd",
        "--seed",
        "5",
    ];
    let train = |extra: &[&str]| {
        assert_ok(&gpumlp(
            &[&["train", "--data", s(&data)][..], &settings, extra].concat(),
            tmp.path(),
        ))
    };
    train(&["--epochs", "2", "--save", s(&path("whole.st"))]);
    train(&["--epochs", "1", "--save", s(&path("first.st"))]);
    // Resuming takes data and settings from the checkpoint.
    let out = gpumlp(
        &[
            "train",
            "--resume",
            s(&path("first.st")),
            "--epochs",
            "2",
            "--save",
            s(&path("resumed.st")),
        ],
        tmp.path(),
    );
    assert_ok(&out);
    assert!(stderr(&out).contains("epochs 2..2"), "{}", stderr(&out));
    assert!(
        std::fs::read(path("whole.st")).unwrap() == std::fs::read(path("resumed.st")).unwrap(),
        "resumed checkpoint differs"
    );
    // A constant schedule and a --save: nothing to warn about.
    assert!(!stderr(&out).contains("note:"), "{}", stderr(&out));
}

#[test]
fn resuming_warns_of_a_result_not_saved_and_of_a_stretched_schedule() {
    let tmp = tempfile::tempdir().unwrap();
    let model = sample_model(tmp.path(), "8", "1");
    let before = std::fs::read(&model).unwrap();
    // Cosine over 1 epoch ended at a rate of 0; stretched to 3 epochs it starts epoch 2 high.
    let out = gpumlp(
        &["train", "--resume", s(&model), "--epochs", "3"],
        tmp.path(),
    );
    assert_ok(&out);
    let err = stderr(&out);
    assert!(
        err.contains("--resume without --save") && err.contains(&format!("--save {}", s(&model))),
        "{err}"
    );
    assert!(
        err.contains("cosine schedule") && err.contains("from 1 epoch to 3 epochs"),
        "{err}"
    );
    assert!(stdout(&out).contains("after 3 epochs"), "{}", stdout(&out));
    assert!(
        std::fs::read(&model).unwrap() == before,
        "the resumed file was changed"
    );
    // And eval on other data than the model saw says so.
    let fashion = sample_dir(&tmp.path().join("other"), 50, 40, false);
    let out = gpumlp(
        &["eval", "--model", s(&model), "--data", s(&fashion)],
        tmp.path(),
    );
    assert_ok(&out);
    assert!(
        stderr(&out).contains("was trained on mnist-sample; evaluating it on"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn default_train_offline_falls_back_to_the_sample_quickly() {
    let tmp = tempfile::tempdir().unwrap();
    let start = std::time::Instant::now();
    let out = gpumlp(
        &["train", "--epochs", "1", "--hidden", "16", "--json"],
        tmp.path(),
    );
    assert_ok(&out);
    let err = stderr(&out);
    assert_eq!(
        err.lines()
            .filter(|l| l.contains("using the built-in sample"))
            .count(),
        1,
        "{err}"
    );
    assert_eq!(json(&out)["data"]["name"], "mnist-sample");
    assert_eq!(
        (
            json(&out)["data"]["train"].as_u64(),
            json(&out)["data"]["test"].as_u64()
        ),
        (Some(8000), Some(2000))
    );
    assert!(start.elapsed().as_secs() < 60, "took {:?}", start.elapsed());
    assert!(
        listing(tmp.path()).iter().all(|n| !n.contains("tmp")),
        "{:?}",
        listing(tmp.path())
    );
}

#[test]
fn named_datasets_come_from_the_cache_and_debians_folder() {
    let tmp = tempfile::tempdir().unwrap();
    sample_dir(&tmp.path().join("mnist"), 300, 100, true);
    let out = gpumlp(
        &[
            "train", "--data", "mnist", "--epochs", "1", "--hidden", "8", "--json",
        ],
        tmp.path(),
    );
    assert_ok(&out);
    assert_eq!(json(&out)["data"]["name"], "mnist");
    assert_eq!(json(&out)["data"]["train"], 300);
    // The default uses cached MNIST when it is there, with no notice.
    let out = gpumlp(
        &["train", "--epochs", "1", "--hidden", "8", "--json"],
        tmp.path(),
    );
    assert_eq!(json(&out)["data"]["name"], "mnist");
    assert!(!stderr(&out).contains("built-in sample"));

    let fashion = sample_dir(&tmp.path().join("debian-fashion"), 200, 100, true);
    let out = gpumlp_env(
        &[
            "train",
            "--data",
            "fashion-mnist",
            "--epochs",
            "1",
            "--hidden",
            "8",
            "--json",
        ],
        tmp.path(),
        &[("GPUMLP_FASHION_DIR", s(&fashion))],
    );
    assert_ok(&out);
    assert_eq!(json(&out)["data"]["name"], "fashion-mnist");
    // Neither local nor downloadable: one line naming the file and the mirror.
    let out = gpumlp_env(
        &["train", "--data", "fashion-mnist"],
        tmp.path(),
        &[("GPUMLP_FASHION_DIR", "/nonexistent")],
    );
    assert_refused(
        &out,
        &["cannot download train-images-idx3-ubyte.gz", "127.0.0.1"],
    );
}

/// The model's own classes for the first `n` test digits of the sample, straight from the library.
fn classes_of_originals(model: &Path, n: usize) -> Vec<u64> {
    let ckpt = gpumlp::Checkpoint::from_bytes("m", &std::fs::read(model).unwrap()).unwrap();
    let sample = gpumlp::dataset::mnist_sample();
    let probabilities = gpumlp::inference::probabilities(
        &ckpt.architecture,
        &ckpt.params,
        gpumlp::Features::Bytes(sample.test.features.as_bytes()[..n * 784].to_vec()),
    )
    .unwrap();
    probabilities
        .chunks(10)
        .map(|p| gpumlp::backend::argmax(p) as u64)
        .collect()
}

#[test]
fn predict_reads_drawn_digits_of_any_size_and_polarity() {
    let tmp = tempfile::tempdir().unwrap();
    let model = sample_model(tmp.path(), "64", "3");
    let sample = gpumlp::dataset::mnist_sample();
    let n = 20;
    let mut files = Vec::new();
    for i in 0..n {
        // Dark on light and 3x larger, as a drawing would be; PNG and JPEG alternately.
        let digit = sample.test.image(i);
        let img = image::GrayImage::from_fn(84, 84, |x, y| {
            image::Luma([255 - digit[(y / 3 * 28 + x / 3) as usize]])
        });
        let path = tmp
            .path()
            .join(format!("d{i}.{}", if i % 2 == 0 { "png" } else { "jpg" }));
        img.save(&path).unwrap();
        files.push(path);
    }
    let args: Vec<&str> = ["predict", "--model", s(&model), "--json"]
        .into_iter()
        .chain(files.iter().map(|p| s(p)))
        .collect();
    let out = gpumlp(&args, tmp.path());
    assert_ok(&out);
    let results = json(&out);
    let results = results.as_array().unwrap();
    assert_eq!(results.len(), n);
    // Preprocessing must give back what the model sees in the original digit (JPEG artefacts
    // may flip a borderline case), and the model must mostly be right.
    let classes: Vec<u64> = results
        .iter()
        .map(|r| r["class"].as_u64().unwrap())
        .collect();
    let originals = classes_of_originals(&model, n);
    let agree = classes
        .iter()
        .zip(&originals)
        .filter(|(a, b)| a == b)
        .count();
    assert!(
        agree >= n - 1,
        "drawn digits read {classes:?}, the originals {originals:?}"
    );
    let correct = classes
        .iter()
        .zip(&sample.test.labels)
        .filter(|(c, &l)| **c == l as u64)
        .count();
    assert!(
        correct >= n * 3 / 4,
        "only {correct} of {n} drawn digits read correctly"
    );
    let total: f64 = results[0]["probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_f64().unwrap())
        .sum();
    assert!((total - 1.0).abs() < 1e-4);
}

#[test]
fn devices_lists_every_adapter_and_the_cpu_backend() {
    let tmp = tempfile::tempdir().unwrap();
    let out = gpumlp(&["devices", "--json"], tmp.path());
    assert_ok(&out);
    assert!(stdout(&out).contains("threads"));
    let rows = json(&out);
    let rows = rows.as_array().unwrap();
    let cpu = rows
        .iter()
        .find(|r| r["index"].is_null())
        .expect("the CPU backend is listed");
    assert_eq!(cpu["kind"], "cpu");
    // Each device's B1 step is measured (what `auto` compares).
    assert!(cpu["b1_step_seconds"].as_f64().unwrap() > 0.0, "{cpu}");
    assert!(stdout(&out).contains("B1 step"));
    for gpu in rows.iter().filter(|r| !r["index"].is_null()) {
        for field in ["name", "kind", "backend", "driver"] {
            assert!(gpu[field].is_string(), "{field} missing: {gpu}");
        }
        assert!(gpu["b1_step_seconds"].as_f64().unwrap() > 0.0, "{gpu}");
        assert!(gpu["max_storage_binding_size"].as_u64().unwrap() > 0);
        // A software adapter is never the automatic choice.
        if gpu["kind"] == "software-gpu" {
            assert_eq!(gpu["auto"], false);
        }
    }
    assert_eq!(
        rows.iter().filter(|r| r["auto"] == true).count(),
        1,
        "exactly one automatic choice"
    );
}

#[test]
fn bench_reports_gemm_and_training_step_figures() {
    let tmp = tempfile::tempdir().unwrap();
    // Two threads, whatever the machine has: a team, whose waiting is counted.
    let out = gpumlp_env(
        &["bench", "--device", "cpu", "--size", "64", "--json"],
        tmp.path(),
        &[("RAYON_NUM_THREADS", "2")],
    );
    assert_ok(&out);
    let j = json(&out);
    assert_eq!(j["device"]["kind"], "cpu");
    let gemms = j["gemm"].as_array().unwrap();
    assert_eq!(gemms.len(), 6, "the square GEMM and B1's five shapes");
    assert_eq!(
        (gemms[0]["m"].as_u64(), gemms[1]["k"].as_u64()),
        (Some(64), Some(784))
    );
    assert!(gemms.iter().all(|g| g["gflops"].as_f64().unwrap() > 0.0));
    let step = &j["train_step"];
    assert!(
        step["seconds"].as_f64().unwrap() > 0.0
            && step["samples_per_second"].as_f64().unwrap() > 0.0
    );
    // The outside-the-products shares in rounds, sorted, their medians the headlines: against
    // the products timed alone, and against the products' own time inside the step.
    for (median, rounds) in [
        ("outside_gemm_share", "outside_gemm_share_rounds"),
        (
            "outside_gemm_share_in_step",
            "outside_gemm_share_in_step_rounds",
        ),
    ] {
        let rounds: Vec<f64> = step[rounds]
            .as_array()
            .expect("rounds on the CPU")
            .iter()
            .map(|r| r.as_f64().unwrap())
            .collect();
        assert_eq!(rounds.len(), 7);
        assert!(rounds.windows(2).all(|w| w[0] <= w[1]) && rounds[6] < 1.0);
        assert_eq!(step[median].as_f64(), Some(rounds[3]));
    }
    // The products do run inside the step: a share of all of it would mean the clock is off;
    // the work fused into their blocks, the optimizer's update and the threads' waiting are
    // parts of what is outside the gemm calls (each a median of its own rounds, so the three
    // are not summed: medians need not add up).
    let outside = step["outside_gemm_share_in_step"].as_f64().unwrap();
    let fused = step["fused_work_share_in_step"].as_f64().unwrap();
    let update = step["update_share_in_step"].as_f64().unwrap();
    let idle = step["idle_share_in_step"].as_f64().unwrap();
    assert!(
        outside < 0.99 && fused > 0.0 && update > 0.0 && idle > 0.0,
        "{outside} {fused} {update} {idle}"
    );
    assert!(
        fused + update < outside && idle < outside,
        "{outside} {fused} {update} {idle}"
    );
    // The update timed alone, against the step's time.
    let alone = step["update_alone_share"].as_f64().unwrap();
    assert!(alone > 0.0 && alone < 1.0, "{alone}");
}

/// Writes a data folder from the sample, then lets `spoil` damage one of its files.
fn spoiled_dir(root: &Path, spoil: impl FnOnce(&Path)) -> std::path::PathBuf {
    let dir = sample_dir(&root.join("bad"), 100, 50, false);
    spoil(&dir);
    dir
}

#[test]
fn bad_data_is_refused_with_the_file_named_and_nothing_written() {
    let tmp = tempfile::tempdir().unwrap();
    let images = |d: &Path| d.join("train-images-idx3-ubyte");
    let labels = |d: &Path| d.join("train-labels-idx1-ubyte");
    type Spoil = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Spoil, &str)> = vec![
        (
            "wrong magic",
            Box::new(move |d: &Path| std::fs::copy(labels(d), images(d)).map(drop).unwrap()),
            "not an IDX image file",
        ),
        (
            "truncated",
            Box::new(move |d: &Path| {
                let b = std::fs::read(images(d)).unwrap();
                std::fs::write(images(d), &b[..b.len() - 100]).unwrap()
            }),
            "truncated",
        ),
        (
            "billions of images",
            Box::new(move |d: &Path| {
                let mut b = std::fs::read(images(d)).unwrap();
                b[4..8].copy_from_slice(&4_000_000_000u32.to_be_bytes());
                std::fs::write(images(d), b).unwrap()
            }),
            "header claims 4000000000 images",
        ),
        (
            "count mismatch",
            Box::new(move |d: &Path| {
                std::fs::write(labels(d), gpumlp::idx::encode_labels(&[1; 99])).unwrap()
            }),
            "100 samples but 99 labels",
        ),
        (
            "images of no pixels",
            Box::new(move |d: &Path| {
                let mut b = std::fs::read(images(d)).unwrap();
                b[12..16].copy_from_slice(&0u32.to_be_bytes());
                std::fs::write(images(d), b).unwrap()
            }),
            "images of 28x0 make 0 pixels",
        ),
        (
            "corrupt gzip",
            Box::new(move |d: &Path| {
                let mut z = gzip(&std::fs::read(images(d)).unwrap());
                let n = z.len();
                z[n / 2..n / 2 + 32].iter_mut().for_each(|b| *b ^= 0xa5);
                std::fs::remove_file(images(d)).unwrap();
                std::fs::write(d.join("train-images-idx3-ubyte.gz"), z).unwrap()
            }),
            "train-images-idx3-ubyte.gz",
        ),
        (
            "missing file",
            Box::new(move |d: &Path| std::fs::remove_file(labels(d)).unwrap()),
            "no train-labels-idx1-ubyte",
        ),
    ];
    for (what, spoil, needle) in cases {
        let root = tempfile::tempdir_in(tmp.path()).unwrap();
        let dir = spoiled_dir(root.path(), spoil);
        let save = root.path().join("model.st");
        let out = gpumlp(
            &[
                "train",
                "--data",
                s(&dir),
                "--epochs",
                "1",
                "--save",
                s(&save),
                "--metrics",
                s(&root.path().join("m.jsonl")),
            ],
            tmp.path(),
        );
        assert_refused(&out, &[needle]);
        let name_in_error =
            stderr(&out).contains("train-images") || stderr(&out).contains("train-labels");
        assert!(
            name_in_error,
            "{what}: the file is not named: {}",
            stderr(&out)
        );
        assert_eq!(listing(root.path()), ["bad"], "{what}: files were written");
    }
}

#[test]
fn bad_flags_are_refused_with_the_flag_named() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 14] = [
        (&["--data", "/no/such/folder"], "--data"),
        (&["--hidden", "abc"], "--hidden"),
        (&["--hidden", "0"], "--hidden"),
        (&["--hidden", "128,,64"], "--hidden"),
        (&["--hidden", "16384,16384,16384"], "--hidden"),
        (&["--batch", "0"], "--batch"),
        (&["--epochs", "0"], "--epochs"),
        (&["--lr", "nan"], "--lr"),
        (&["--lr", "-1"], "--lr"),
        (&["--momentum", "1.5"], "--momentum"),
        (&["--device", "tpu"], "--device"),
        (&["--save", "/no/such/folder/m.st"], "--save"),
        (&["--precision", "half"], "--precision"),
        (
            &["--precision", "mixed", "--device", "cpu"],
            "--precision mixed",
        ),
    ];
    for (args, flag) in cases {
        let out = gpumlp(
            &[&["train", "--data", "mnist-sample"][..], args].concat(),
            tmp.path(),
        );
        assert_refused(&out, &[flag]);
    }
    // The argument parser's own messages keep what they name, in their one line.
    for (args, named) in [
        (&["eval"][..], &["--model"][..]),
        (&["predict", "--model", "m.st"][..], &["<FILE>"][..]),
        (
            &["train", "--epoch", "2"][..],
            &["'--epoch'", "tip", "'--epochs'"][..],
        ),
        (
            &["train", "--optimizer", "adamw"][..],
            &["--optimizer", "adam, sgd"][..],
        ),
    ] {
        assert_refused(&gpumlp(args, tmp.path()), named);
    }
    // A GPU asked for where this build has none: refused, not silently the CPU.
    assert_refused(
        &gpumlp(&["train", "--device", "gpu"], tmp.path()),
        &["--device gpu"],
    );
}

#[test]
fn bad_checkpoints_are_refused_for_eval_and_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m.st");
    let data = sample_dir(&tmp.path().join("data"), 200, 50, false);
    assert_ok(&gpumlp(
        &[
            "train",
            "--data",
            s(&data),
            "--hidden",
            "16",
            "--epochs",
            "1",
            "--save",
            s(&model),
        ],
        tmp.path(),
    ));
    let bytes = std::fs::read(&model).unwrap();

    let truncated = tmp.path().join("truncated.st");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    // Same header length, another architecture: the tensors no longer fit the metadata.
    let mismatched = tmp.path().join("mismatched.st");
    let at = bytes
        .windows(11)
        .position(|w| w == b"[784,16,10]")
        .expect("architecture in the metadata");
    let mut edited = bytes.clone();
    edited[at..at + 11].copy_from_slice(b"[784,17,10]");
    std::fs::write(&mismatched, edited).unwrap();
    let not_a_checkpoint = tmp.path().join("notes.txt");
    std::fs::write(&not_a_checkpoint, "hello").unwrap();

    for (file, needle) in [
        (&truncated, "truncated.st"),
        (&mismatched, "layers.0.weight"),
        (&not_a_checkpoint, "notes.txt"),
    ] {
        assert_refused(
            &gpumlp(
                &["eval", "--model", s(file), "--data", s(&data)],
                tmp.path(),
            ),
            &[needle],
        );
        let save = tmp.path().join("resumed.st");
        assert_refused(
            &gpumlp(
                &[
                    "train",
                    "--resume",
                    s(file),
                    "--epochs",
                    "2",
                    "--save",
                    s(&save),
                ],
                tmp.path(),
            ),
            &[needle],
        );
        assert!(!save.exists());
    }
    assert_refused(
        &gpumlp(&["eval", "--model", "/no/such/model.st"], tmp.path()),
        &["/no/such/model.st"],
    );
    // A resumed run keeps its settings; finished runs need more epochs.
    assert_refused(
        &gpumlp(
            &[
                "train",
                "--resume",
                s(&model),
                "--epochs",
                "2",
                "--hidden",
                "32",
            ],
            tmp.path(),
        ),
        &["--hidden", "m.st"],
    );
    assert_refused(
        &gpumlp(
            &["train", "--resume", s(&model), "--epochs", "1"],
            tmp.path(),
        ),
        &["--epochs"],
    );
}

#[test]
fn predict_refuses_files_that_are_not_images() {
    let tmp = tempfile::tempdir().unwrap();
    let model = sample_model(tmp.path(), "8", "1");
    let fake = tmp.path().join("digit.png");
    std::fs::write(&fake, "this is text, not a PNG").unwrap();
    assert_refused(
        &gpumlp(&["predict", "--model", s(&model), s(&fake)], tmp.path()),
        &["digit.png"],
    );
    let blank = tmp.path().join("blank.png");
    image::GrayImage::from_pixel(30, 30, image::Luma([255]))
        .save(&blank)
        .unwrap();
    assert_refused(
        &gpumlp(&["predict", "--model", s(&model), s(&blank)], tmp.path()),
        &["blank.png", "no digit found"],
    );
}

/// A write that fails mid-run (the disk full at the second checkpoint, the folder removed):
/// one line naming the file, exit 2, the previous checkpoint whole, no temporary file left; and
/// the temporary file a killed run left is removed by the next run.
#[test]
fn failed_writes_keep_the_previous_checkpoint_and_leave_no_temporary_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("out");
    std::fs::create_dir(&dir).unwrap();
    let model = dir.join("m.st");
    let train = |epochs: &str, env: &[(&str, &str)]| {
        gpumlp_env(
            &[
                "train",
                "--data",
                "mnist-sample",
                "--hidden",
                "16",
                "--epochs",
                epochs,
                "--save",
                s(&model),
            ],
            tmp.path(),
            env,
        )
    };
    let full = train("3", &[("GPUMLP_TEST_FAIL_WRITE", "2")]);
    assert_eq!(full.status.code(), Some(2), "{}", stderr(&full));
    let last = stderr(&full)
        .trim_end()
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    assert!(
        last.contains("m.st: cannot write") && last.contains("No space left on device"),
        "{last}"
    );
    assert_eq!(listing(&dir), ["m.st"], "a temporary file was left");
    let kept = gpumlp::Checkpoint::from_bytes("m", &std::fs::read(&model).unwrap()).unwrap();
    assert_eq!(
        kept.training.unwrap().epoch,
        1,
        "the first epoch's checkpoint is whole"
    );

    // A run killed while writing left `.m.st.tmp-PID` (PID long gone): the next run removes it.
    let stale = dir.join(".m.st.tmp-4194999");
    std::fs::write(&stale, b"half a checkpoint").unwrap();
    let again = train("1", &[]);
    assert_ok(&again);
    assert!(
        stderr(&again).contains("note: removed"),
        "{}",
        stderr(&again)
    );
    assert_eq!(listing(&dir), ["m.st"]);

    // The folder removed during the run: the next checkpoint fails with one line naming it.
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_gpumlp"))
        .args([
            "train",
            "--data",
            "mnist-sample",
            "--hidden",
            "16",
            "--epochs",
            "500",
            "--save",
            s(&model),
        ])
        .env("GPUMLP_CACHE_DIR", tmp.path())
        .env("GPUMLP_MNIST_MIRRORS", refused_base())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let before = std::fs::metadata(&model).unwrap().modified().unwrap();
    while std::fs::metadata(&model).is_ok_and(|m| m.modified().unwrap() == before) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    std::fs::remove_dir_all(&dir).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.trim_end().lines().last().unwrap_or_default();
    assert!(
        last.contains("m.st: cannot write") && !err.contains("panicked"),
        "{err}"
    );
}
