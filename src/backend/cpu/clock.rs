//! The CPU backend's own account of where a step's thread-time goes, counted while switched
//! on: inside the products' `gemm` calls, and apart from them in the work fused into their
//! blocks (a bias and an activation, its derivative, a bias gradient), in the optimizer's
//! update, and idle (a team's threads waiting at a region's end for the others, or for the
//! leading thread's serial work between regions). `gpumlp bench` sets these against a step's
//! time for the share of the step outside the products and what it is made of. Process-wide:
//! every CPU backend counts while it is on. (Native only: the browser has no clock here, and
//! nothing counts there.)

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

static ON: AtomicBool = AtomicBool::new(false);
pub(super) static PRODUCTS: AtomicU64 = AtomicU64::new(0);
pub(super) static FUSED: AtomicU64 = AtomicU64::new(0);
pub(super) static UPDATE: AtomicU64 = AtomicU64::new(0);
pub(super) static IDLE: AtomicU64 = AtomicU64::new(0);

/// Switches every count on or off.
pub fn count(on: bool) {
    ON.store(on, Ordering::Relaxed);
}

/// Seconds counted so far inside `gemm` calls, summed over threads.
pub fn product_seconds() -> f64 {
    PRODUCTS.load(Ordering::Relaxed) as f64 * 1e-9
}

/// Seconds counted so far in the work fused into the products' blocks, summed over threads.
pub fn fused_seconds() -> f64 {
    FUSED.load(Ordering::Relaxed) as f64 * 1e-9
}

/// Seconds counted so far in the optimizer's update, summed over threads.
pub fn update_seconds() -> f64 {
    UPDATE.load(Ordering::Relaxed) as f64 * 1e-9
}

/// Seconds counted so far with a team's thread waiting, summed over threads.
pub fn idle_seconds() -> f64 {
    IDLE.load(Ordering::Relaxed) as f64 * 1e-9
}

#[cfg(not(target_arch = "wasm32"))]
pub(super) fn start() -> Option<std::time::Instant> {
    ON.load(Ordering::Relaxed).then(std::time::Instant::now)
}

#[cfg(not(target_arch = "wasm32"))]
pub(super) fn stop(start: Option<std::time::Instant>, count: &AtomicU64) {
    if let Some(start) = start {
        count.fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
}

#[cfg(target_arch = "wasm32")]
pub(super) fn start() {}

#[cfg(target_arch = "wasm32")]
pub(super) fn stop(_: (), _: &AtomicU64) {}
