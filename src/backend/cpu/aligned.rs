//! Buffers of `f32` that start on a cache line. Column blocks of a product start on multiples
//! of 64 values (`matmul`), and so do their parts of the weights that the optimizer updates in
//! them; with the buffers aligned, no two threads ever write one line. A `Vec<f32>` from the
//! allocator starts 16 bytes into a line, and its blocks' edges then shared lines on every row.

use std::ops::{Deref, DerefMut};

/// One cache line of values.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// A growable `[f32]` whose first value starts a cache line.
#[derive(Clone, Default)]
pub(crate) struct AlignedVec {
    lines: Vec<Line>,
    len: usize,
}

impl AlignedVec {
    /// `len` zeros.
    pub fn zeros(len: usize) -> Self {
        let mut v = AlignedVec::default();
        v.resize(len);
        v
    }

    /// Makes it `len` values long, new values zero.
    pub fn resize(&mut self, len: usize) {
        // Zero what a shrink drops, so that growing again shows zeros, as a Vec would.
        let kept = self.len.min(len);
        self[kept..].fill(0.0);
        self.lines.resize(len.div_ceil(16), Line([0.0; 16]));
        self.len = len;
    }
}

impl Deref for AlignedVec {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        // SAFETY: `Line` is `repr(C)` over `[f32; 16]`, so the lines are `16 * lines.len()`
        // contiguous initialised values, and `len` never exceeds that.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast(), self.len) }
    }
}

impl DerefMut for AlignedVec {
    fn deref_mut(&mut self) -> &mut [f32] {
        // SAFETY: as in `deref`, borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast(), self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_a_line_and_grows_with_zeros() {
        let mut v = AlignedVec::zeros(20);
        assert_eq!(v.as_ptr() as usize % 64, 0);
        v.iter_mut().for_each(|x| *x = 1.0);
        v.resize(5);
        assert_eq!(&v[..], &[1.0; 5]);
        v.resize(40);
        assert_eq!(v.len(), 40);
        assert!(v[5..].iter().all(|&x| x == 0.0), "{:?}", &v[..]);
    }
}
