//! The real Fashion-MNIST files from Debian's `dataset-fashion-mnist` package, which `.ci/run`
//! installs: they must load through `--data fashion-mnist` with the published counts. Where the
//! package is missing this test fails under CI (CI=true) and says loudly that it skipped elsewhere.

use gpumlp_native::data::{load, DataSource};
use std::path::Path;

#[test]
fn debians_fashion_mnist_loads_with_the_published_counts() {
    let dir = Path::new("/usr/share/datasets/fashion-mnist");
    if !dir.is_dir() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install dataset-fashion-mnist (see .ci/run)"
        );
        eprintln!(
            "SKIPPED: {} is missing; `apt-get install dataset-fashion-mnist` to run this test",
            dir.display()
        );
        return;
    }
    let data = load(&DataSource::FashionMnist, &mut |n| {
        panic!("unexpected notice: {n}")
    })
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
