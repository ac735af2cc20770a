//! `gpumlp train` on several MPI ranks, started by Open MPI's `mpirun` as users start it: two
//! ranks sharing each batch train the model one process trains, exactly again on a second run,
//! on a software GPU as on the CPU; a rank fed corrupt data ends the job in seconds with its
//! error; a killed rank ends the job, leaving a checkpoint that resumes on any number of ranks.
//!
//! Needs a build with `--features mpi` and `mpirun` (apt-get install openmpi-bin
//! libopenmpi-dev libclang-dev); without them the tests are reported as ignored, with the reason,
//! and fail under CI (CI=true).

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Output, Stdio};
use std::time::{Duration, Instant};

fn main() -> ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    let has_mpirun = Command::new("mpirun")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let missing = if !cfg!(feature = "mpi") {
        Some("built without MPI: cargo test --release --workspace --features mpi")
    } else if !has_mpirun {
        Some("no mpirun: apt-get install openmpi-bin libopenmpi-dev libclang-dev")
    } else {
        None
    };
    // The software-GPU test needs lavapipe too.
    let tmp = tempfile::tempdir().unwrap();
    let has_software = json(&gpumlp(&["devices", "--json"], tmp.path()))
        .as_array()
        .is_some_and(|d| d.iter().any(|a| a["kind"] == "software-gpu"));
    let no_software = missing.or((!has_software)
        .then_some("no software GPU adapter: apt-get install mesa-vulkan-drivers gives lavapipe"));
    let tests: [(&str, fn()); 6] = [
        (
            "sigterm_on_one_rank_stops_every_rank_at_one_step_and_resumes_to_the_same_result",
            sigterm_on_one_rank_stops_every_rank_at_one_step_and_resumes_to_the_same_result,
        ),
        (
            "two_ranks_train_what_one_process_trains_and_repeat_it_exactly",
            two_ranks_train_what_one_process_trains_and_repeat_it_exactly,
        ),
        (
            "two_ranks_on_a_software_gpu_agree_with_two_on_the_cpu",
            two_ranks_on_a_software_gpu_agree_with_two_on_the_cpu,
        ),
        (
            "a_rank_given_corrupt_data_ends_the_job_with_its_error",
            a_rank_given_corrupt_data_ends_the_job_with_its_error,
        ),
        (
            "a_killed_rank_ends_the_job_and_its_checkpoint_resumes_on_any_ranks",
            a_killed_rank_ends_the_job_and_its_checkpoint_resumes_on_any_ranks,
        ),
        (
            "bad_flags_and_single_process_commands_are_refused_on_every_rank",
            bad_flags_and_single_process_commands_are_refused_on_every_rank,
        ),
    ];
    let trials = tests
        .into_iter()
        .map(|(name, body)| {
            let needs = if name.contains("software_gpu") {
                no_software
            } else {
                missing
            };
            gated(name, needs, body)
        })
        .collect();
    libtest_mimic::run(&args, trials).exit_code()
}

/// `mpirun` starting, for each of `apps`, that many ranks of `gpumlp` with those arguments (one
/// app: every rank alike; several: Open MPI's `A : B` form), offline like every test's run.
fn mpirun(apps: &[(usize, &[&str])], cache: &Path) -> Command {
    let mut cmd = Command::new("mpirun");
    // Two ranks may outnumber this machine's cores; the tests may run as root (CI does).
    cmd.arg("--oversubscribe")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("GPUMLP_CACHE_DIR", cache)
        .env("GPUMLP_MNIST_MIRRORS", refused_base())
        .env("GPUMLP_FASHION_MIRRORS", refused_base());
    for (i, (ranks, args)) in apps.iter().enumerate() {
        if i > 0 {
            cmd.arg(":");
        }
        cmd.args(["-n", &ranks.to_string(), env!("CARGO_BIN_EXE_gpumlp")])
            .args(*args);
    }
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("mpirun runs")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A small run's flags: 2,000 digits in batches of 64, 2 epochs on a narrow model.
fn small_run<'a>(data: &'a Path, device: &'a str, save: &'a Path) -> Vec<&'a str> {
    vec![
        "train",
        "--data",
        s(data),
        "--device",
        device,
        "--hidden",
        "32",
        "--batch",
        "64",
        "--epochs",
        "2",
        "--seed",
        "5",
        "--save",
        s(save),
        "--json",
    ]
}

/// Each epoch's metrics line without its timings.
fn metrics_without_times(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| {
            let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
            let o = v.as_object_mut().unwrap();
            o.remove("seconds");
            o.remove("samples_per_second");
            v
        })
        .collect()
}

/// Asserts that two `--json` summaries' `key` differ by at most `tolerance`.
fn close(key: &str, a: &serde_json::Value, b: &serde_json::Value, tolerance: f64) {
    let (a, b) = (a[key].as_f64().unwrap(), b[key].as_f64().unwrap());
    assert!((a - b).abs() <= tolerance, "{key}: {a} vs {b}");
}

/// Asserts that two runs' summaries agree: losses within `loss`, test accuracy within `accuracy`.
fn same_results(a: &serde_json::Value, b: &serde_json::Value, loss: f64, accuracy: f64) {
    close("test_loss", a, b, loss);
    close("train_loss", a, b, loss);
    close("test_accuracy", a, b, accuracy);
}

fn two_ranks_train_what_one_process_trains_and_repeat_it_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let data = sample_dir(&tmp.path().join("data"), 2000, 500, false);
    let out = |name: &str| tmp.path().join(name);
    let alone = gpumlp(&small_run(&data, "cpu", &out("alone.st")), tmp.path());
    assert_ok(&alone);

    let mut pairs = Vec::new();
    for run_name in ["pair-a", "pair-b"] {
        let save = out(&format!("{run_name}.st"));
        let metrics = out(&format!("{run_name}.jsonl"));
        let mut args = small_run(&data, "cpu", &save);
        args.extend(["--metrics", s(&metrics)]);
        let pair = run(&mut mpirun(&[(2, &args)], tmp.path()));
        assert_ok(&pair);
        // Rank 0 alone speaks.
        let err = stderr(&pair);
        assert_eq!(err.matches("training 784-32-10").count(), 1, "{err}");
        assert!(err.contains("CPU (1 threads) x 2 ranks"), "{err}");
        assert_eq!(stdout(&pair).matches("test accuracy").count(), 1);
        let summary = json(&pair);
        assert_eq!(summary["ranks"], 2);
        assert_eq!(summary["rank_devices"].as_array().unwrap().len(), 2);
        pairs.push((summary, metrics, std::fs::read(&save).unwrap()));
    }

    // Deterministic: the same metrics and the same checkpoint, to the byte.
    assert_eq!(
        metrics_without_times(&pairs[0].1),
        metrics_without_times(&pairs[1].1)
    );
    assert!(pairs[0].2 == pairs[1].2, "the checkpoints differ");

    // What one process trains with the same global batch, to float rounding.
    let (one, two) = (json(&alone), &pairs[0].0);
    same_results(&one, two, 1e-4, 2.0 / 500.0);
}

/// SIGTERM to rank 1 alone in the middle of epoch 1: every rank stops at the same step, rank 0
/// writes a checkpoint at that step (the epoch's statistics summed over the ranks), the job ends
/// with 143, and resuming it on two ranks gives the uninterrupted run's metrics and checkpoint.
fn sigterm_on_one_rank_stops_every_rank_at_one_step_and_resumes_to_the_same_result() {
    let tmp = tempfile::tempdir().unwrap();
    let data = sample_dir(&tmp.path().join("data"), 2000, 500, false);
    let out = |name: &str| tmp.path().join(name);
    // Batches of 16: 125 steps per epoch, so the stop falls inside the epoch.
    let flags = |save: &Path, metrics: &Path| -> Vec<String> {
        let mut args: Vec<String> = small_run(&data, "cpu", save)
            .iter()
            .map(|a| a.to_string())
            .collect();
        let batch = args.iter().position(|a| a == "--batch").unwrap();
        args[batch + 1] = "16".into();
        args.extend(["--metrics".into(), s(metrics).to_string()]);
        args
    };
    let whole_metrics = out("whole.jsonl");
    let whole_args = flags(&out("whole.st"), &whole_metrics);
    let whole_args: Vec<&str> = whole_args.iter().map(String::as_str).collect();
    assert_ok(&run(&mut mpirun(&[(2, &whole_args)], tmp.path())));

    let (save, metrics) = (out("cut.st"), out("cut.jsonl"));
    let args = flags(&save, &metrics);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let stopped = run(mpirun(&[(2, &args)], tmp.path()).env("GPUMLP_TEST_SIGNAL", "1:10:TERM:1"));
    let err = stderr(&stopped);
    assert!(!stopped.status.success(), "{err}");
    // Rank 0 was not signalled: it stops because rank 1 was, at the same step.
    assert!(
        err.contains("stopped by SIGTERM at step 32 of 125 of epoch 1"),
        "{err}"
    );
    let ckpt = gpumlp::Checkpoint::from_bytes("cut", &std::fs::read(&save).unwrap()).unwrap();
    let state = ckpt.training.expect("a checkpoint to resume from");
    let within = state.within_epoch.expect("saved inside epoch 1");
    assert_eq!(
        (state.epoch, within.steps % 32),
        (0, 0),
        "at the end of a slice"
    );
    assert_eq!(
        within.count as usize,
        within.steps * 16,
        "both ranks' samples counted"
    );

    let resumed = run(&mut mpirun(
        &[(
            2,
            &[
                "train",
                "--resume",
                s(&save),
                "--save",
                s(&save),
                "--metrics",
                s(&metrics),
                "--json",
            ][..],
        )],
        tmp.path(),
    ));
    assert_ok(&resumed);
    let last = |p: &Path| metrics_without_times(p).pop().unwrap();
    assert_eq!(last(&metrics), last(&whole_metrics));
    assert!(
        std::fs::read(&save).unwrap() == std::fs::read(out("whole.st")).unwrap(),
        "the resumed checkpoint differs from the uninterrupted run's"
    );
}

fn two_ranks_on_a_software_gpu_agree_with_two_on_the_cpu() {
    let tmp = tempfile::tempdir().unwrap();
    let data = sample_dir(&tmp.path().join("data"), 2000, 500, false);
    let [cpu, gpu] = ["cpu", "software"].map(|device| {
        let save = tmp.path().join(format!("{device}.st"));
        let pair = run(&mut mpirun(
            &[(2, &small_run(&data, device, &save))],
            tmp.path(),
        ));
        assert_ok(&pair);
        json(&pair)
    });
    assert_eq!(gpu["device"]["kind"], "software-gpu");
    same_results(&cpu, &gpu, 1e-3, 3.0 / 500.0);
}

fn a_rank_given_corrupt_data_ends_the_job_with_its_error() {
    let tmp = tempfile::tempdir().unwrap();
    let good = sample_dir(&tmp.path().join("good"), 500, 100, false);
    let bad = sample_dir(&tmp.path().join("bad"), 500, 100, false);
    let images = bad.join("train-images-idx3-ubyte");
    let bytes = std::fs::read(&images).unwrap();
    std::fs::write(&images, &bytes[..bytes.len() - 100]).unwrap();
    let save = tmp.path().join("model.st");
    let args = |data: &Path| {
        [
            "train",
            "--data",
            s(data),
            "--device",
            "cpu",
            "--epochs",
            "50",
            "--save",
            s(&save),
        ]
        .map(str::to_string)
    };
    let (rank0, rank1) = (args(&good), args(&bad));
    let rank0: Vec<&str> = rank0.iter().map(String::as_str).collect();
    let rank1: Vec<&str> = rank1.iter().map(String::as_str).collect();
    let start = Instant::now();
    let job = run(&mut mpirun(&[(1, &rank0), (1, &rank1)], tmp.path()));
    let seconds = start.elapsed().as_secs_f64();
    let err = stderr(&job);
    assert_eq!(job.status.code(), Some(2), "{err}");
    assert!(
        err.lines()
            .any(|l| l.starts_with("error: rank 1: ") && l.contains("truncated")),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(seconds < 30.0, "the job took {seconds:.1} s to end");
    assert!(
        !save.exists(),
        "nothing is saved by a job that never trained"
    );
}

/// The pid of rank `rank` among the processes whose command line holds `marker`.
fn rank_pid(marker: &str, rank: usize) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.find_map(|entry| {
        let dir = entry.ok()?.path();
        let pid: u32 = dir.file_name()?.to_str()?.parse().ok()?;
        let cmdline = std::fs::read(dir.join("cmdline")).ok()?;
        let environ = std::fs::read(dir.join("environ")).ok()?;
        let has = |haystack: &[u8], needle: &str| {
            haystack
                .split(|&b| b == 0)
                .any(|part| part == needle.as_bytes())
        };
        (has(&cmdline, marker) && has(&environ, &format!("OMPI_COMM_WORLD_RANK={rank}")))
            .then_some(pid)
    })
}

fn wait_for(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("the job did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn a_killed_rank_ends_the_job_and_its_checkpoint_resumes_on_any_ranks() {
    let tmp = tempfile::tempdir().unwrap();
    let data = sample_dir(&tmp.path().join("data"), 1000, 200, false);
    let save: PathBuf = tmp.path().join("killed.st");
    let long_run = [
        "train",
        "--data",
        s(&data),
        "--device",
        "cpu",
        "--hidden",
        "32",
        "--batch",
        "50",
        "--epochs",
        "1000",
        "--schedule",
        "constant",
        "--save",
        s(&save),
    ];
    let mut job = mpirun(&[(2, &long_run)], tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Once a checkpoint is there, kill rank 1 in the middle of whatever it is doing.
    let start = Instant::now();
    while !save.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no checkpoint after 60 s"
        );
        if let Some(status) = job.try_wait().unwrap() {
            panic!("the job ended before its first checkpoint: {status}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid = rank_pid(s(&save), 1).expect("rank 1 is running");
    let killed = Command::new("kill").args(["-9", &pid.to_string()]).status();
    assert!(killed.unwrap().success());
    let status = wait_for(&mut job, Duration::from_secs(30));
    assert!(!status.success(), "the job must fail when a rank dies");

    // The last checkpoint is whole, and resumes, alone or on two ranks.
    let ckpt = gpumlp::Checkpoint::from_bytes("killed.st", &std::fs::read(&save).unwrap())
        .expect("the checkpoint is whole");
    let done = ckpt.training.expect("it holds the training state").epoch;
    assert!(done < 1000, "the run was killed before its end");
    let more = (done + 1).to_string();
    let resumed = tmp.path().join("resumed.st");
    let resume = |ranks: usize| {
        let args = [
            "train",
            "--resume",
            s(&save),
            "--data",
            s(&data),
            "--device",
            "cpu",
            "--epochs",
            &more,
            "--save",
            s(&resumed),
            "--json",
        ];
        let out = if ranks == 1 {
            gpumlp(&args, tmp.path())
        } else {
            run(&mut mpirun(&[(ranks, &args)], tmp.path()))
        };
        assert_ok(&out);
        let summary = json(&out);
        assert_eq!(summary["epochs"].as_u64(), Some(done as u64 + 1));
        summary
    };
    let (one, two) = (resume(1), resume(2));
    close("test_loss", &one, &two, 1e-4);
}

fn bad_flags_and_single_process_commands_are_refused_on_every_rank() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 2] = [
        (
            &["train", "--data", "mnist-sample", "--epochs", "0"],
            "error: rank 0: --epochs 0 is out of range",
        ),
        (
            &["eval", "--model", "m.st"],
            "only `gpumlp train` runs on several ranks",
        ),
    ];
    for (args, needle) in cases {
        let start = Instant::now();
        let job = run(&mut mpirun(&[(2, args)], tmp.path()));
        let err = stderr(&job);
        assert_eq!(job.status.code(), Some(2), "{err}");
        assert!(err.contains(needle), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(start.elapsed() < Duration::from_secs(30));
    }
}
