//! The real Fashion-MNIST files from Debian's `dataset-fashion-mnist` package, which `.ci/run`
//! installs: they must load through `--data fashion-mnist` with the published counts. Where the
//! package is missing the test is reported as ignored, with the reason, in the test summary, and
//! fails under CI (CI=true).

mod common;

use gpumlp_native::data::{load, DataSource};
use std::path::Path;
use std::process::ExitCode;

const FOLDER: &str = "/usr/share/datasets/fashion-mnist";

fn main() -> ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    let missing = (!Path::new(FOLDER).is_dir())
        .then_some("no /usr/share/datasets/fashion-mnist: apt-get install dataset-fashion-mnist");
    let trials = vec![
        common::gated(
            "debians_fashion_mnist_loads_with_the_published_counts",
            missing,
            debians_fashion_mnist_loads_with_the_published_counts,
        ),
        common::gated(
            "fashion_mnist_saved_as_npz_trains_exactly_as_from_its_idx_files",
            missing,
            fashion_mnist_saved_as_npz_trains_exactly_as_from_its_idx_files,
        ),
    ];
    libtest_mimic::run(&args, trials).exit_code()
}

/// The IDX files written as Keras's `.npz` (u8 images `[n, 28, 28]`, u8 labels) train to the
/// same losses, to the last digit, as the IDX files themselves.
fn fashion_mnist_saved_as_npz_trains_exactly_as_from_its_idx_files() {
    use gpumlp::numpy::{encode_npy, encode_npz, Values};
    let data = load(
        &DataSource::FashionMnist,
        &Default::default(),
        &mut |n, _| panic!("unexpected notice: {n}"),
    )
    .unwrap();
    let arrays = |set: &gpumlp::Dataset| {
        let images = set.features.as_bytes().to_vec();
        let labels = set.labels.iter().map(|&l| l as u8).collect();
        (
            encode_npy(&[set.len(), 28, 28], &Values::Bytes(images)),
            encode_npy(&[set.len()], &Values::Bytes(labels)),
        )
    };
    let ((x, y), (tx, ty)) = (arrays(&data.train), arrays(&data.test));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let npz = dir.join("fashion.npz");
    let members = [
        ("x_train", x),
        ("y_train", y),
        ("x_test", tx),
        ("y_test", ty),
    ];
    std::fs::write(&npz, encode_npz(&members, true)).unwrap();
    let run = |data: &str, metrics: &Path| {
        let o = common::gpumlp(
            &[
                "train",
                "--data",
                data,
                "--device",
                "cpu",
                "--hidden",
                "32",
                "--epochs",
                "2",
                "--metrics",
                metrics.to_str().unwrap(),
                "--json",
            ],
            &dir,
        );
        common::assert_ok(&o);
        let losses: Vec<(serde_json::Value, serde_json::Value)> = std::fs::read_to_string(metrics)
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (v["train_loss"].clone(), v["test_loss"].clone())
            })
            .collect();
        (losses, common::json(&o)["data"].clone())
    };
    let (from_idx, idx_data) = run(FOLDER, &dir.join("idx.jsonl"));
    let (from_npz, npz_data) = run(npz.to_str().unwrap(), &dir.join("npz.jsonl"));
    assert_eq!(from_idx.len(), 2);
    assert_eq!(from_npz, from_idx);
    for key in ["features", "classes", "image", "input", "train", "test"] {
        assert_eq!(npz_data[key], idx_data[key], "{key}");
    }
}
fn debians_fashion_mnist_loads_with_the_published_counts() {
    assert!(
        Path::new(FOLDER).is_dir(),
        "CI must install dataset-fashion-mnist (see .ci/run)"
    );
    let data = load(
        &DataSource::FashionMnist,
        &Default::default(),
        &mut |n, _| panic!("unexpected notice: {n}"),
    )
    .unwrap();
    assert_eq!(data.name, "fashion-mnist");
    assert_eq!((data.train.len(), data.test.len()), (60_000, 10_000));
    // Fashion-MNIST is balanced: 6,000 training and 1,000 test images per class.
    for (set, per_class) in [(&data.train, 6_000), (&data.test, 1_000)] {
        let mut counts = [0usize; 10];
        set.labels.iter().for_each(|&l| counts[l as usize] += 1);
        assert_eq!(counts, [per_class; 10]);
    }
}
