//! Helpers shared by the core crate's tests.
#![allow(dead_code)]

use gpumlp::dataset::{self, Dataset, Splits};

mod gated;
#[allow(unused_imports)] // not every test file gates its tests
pub use gated::gated;
mod gpu_modes;
#[allow(unused_imports)] // only the GPU harnesses use it
pub use gpu_modes::{per_mode, GpuTest};

/// The first `train` and `test` digits of the built-in sample's splits: real data, small enough
/// for quick runs.
pub fn small_sample(train: usize, test: usize) -> Splits {
    let s = dataset::mnist_sample();
    let first = |d: &Dataset, n: usize| d.select(&(0..n).collect::<Vec<_>>());
    Splits {
        name: "mnist-sample".into(),
        train: first(&s.train, train),
        test: first(&s.test, test),
        spec: s.spec,
    }
}

/// Asserts `|got - want| <= abs + rel * |want|` elementwise, printing the worst offender.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], abs: f32, rel: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let mut worst = (0usize, 0.0f32);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let excess = (g - w).abs() - (abs + rel * w.abs());
        if excess > worst.1 || !g.is_finite() {
            worst = (i, excess.max(f32::MIN_POSITIVE));
        }
    }
    assert!(
        worst.1 <= 0.0,
        "{what}: element {} is {} but should be {} (abs {abs} + rel {rel})",
        worst.0,
        got[worst.0],
        want[worst.0]
    );
}

/// Points Mesa at a private runtime folder when XDG_RUNTIME_DIR is unset (see
/// `gpumlp::backend::gpu::runtime_dir_for_mesa`). Call first thing in a test harness's `main`.
pub fn quiet_mesa() {
    if let Some(dir) = gpumlp::backend::gpu::runtime_dir_for_mesa() {
        // SAFETY: called at the start of main, before the harness starts any thread.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", dir) };
    }
}
