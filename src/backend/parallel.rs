//! Data parallelism for the CPU backend: rayon's thread pool natively. On wasm32 there are no
//! threads to start (the browser demo runs the CPU backend on the page's own thread), so the
//! same calls run sequentially there, through std iterators of the same names.

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

#[cfg(target_arch = "wasm32")]
pub trait SequentialSlice<T> {
    fn par_chunks(&self, n: usize) -> std::slice::Chunks<'_, T>;
    fn par_chunks_mut(&mut self, n: usize) -> std::slice::ChunksMut<'_, T>;
    fn par_iter(&self) -> std::slice::Iter<'_, T>;
}

#[cfg(target_arch = "wasm32")]
impl<T> SequentialSlice<T> for [T] {
    fn par_chunks(&self, n: usize) -> std::slice::Chunks<'_, T> {
        self.chunks(n)
    }
    fn par_chunks_mut(&mut self, n: usize) -> std::slice::ChunksMut<'_, T> {
        self.chunks_mut(n)
    }
    fn par_iter(&self) -> std::slice::Iter<'_, T> {
        self.iter()
    }
}

#[cfg(target_arch = "wasm32")]
pub trait SequentialRange {
    fn into_par_iter(self) -> std::ops::Range<usize>;
}

#[cfg(target_arch = "wasm32")]
impl SequentialRange for std::ops::Range<usize> {
    fn into_par_iter(self) -> std::ops::Range<usize> {
        self
    }
}
