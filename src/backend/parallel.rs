//! Threads for the CPU backend: rayon's thread pool (its width also sets the CPU backend's own
//! team natively, `cpu::team`). On wasm32 there are threads only in a module built with the
//! `wasm-threads` feature (the browser demo's threaded build, its pool started by
//! wasm-bindgen-rayon from a Web Worker); otherwise the backend runs its parts in turn there.

#[cfg(any(not(target_arch = "wasm32"), feature = "wasm-threads"))]
pub use rayon::prelude::*;

/// Threads the CPU backend splits its work over.
#[cfg(any(not(target_arch = "wasm32"), feature = "wasm-threads"))]
pub fn threads() -> usize {
    rayon::current_num_threads()
}

#[cfg(all(target_arch = "wasm32", not(feature = "wasm-threads")))]
pub fn threads() -> usize {
    1
}
