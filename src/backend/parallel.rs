//! Threads for the CPU backend: rayon's thread pool natively (its width also sets the CPU
//! backend's own team, `cpu::team`). On wasm32 there are no threads to start (the browser demo
//! runs the CPU backend on the page's own thread): the backend runs its parts in turn there.

#[cfg(not(target_arch = "wasm32"))]
pub use rayon::prelude::*;

/// Threads the CPU backend splits its work over.
#[cfg(not(target_arch = "wasm32"))]
pub fn threads() -> usize {
    rayon::current_num_threads()
}

#[cfg(target_arch = "wasm32")]
pub fn threads() -> usize {
    1
}
