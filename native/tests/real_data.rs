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
    let trial = common::gated(
        "debians_fashion_mnist_loads_with_the_published_counts",
        missing,
        debians_fashion_mnist_loads_with_the_published_counts,
    );
    libtest_mimic::run(&args, vec![trial]).exit_code()
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
