//! The CPU backend's matrix products: the `gemm` crate's single-threaded kernel on column
//! blocks of the output, the blocks run in parallel (`team::Exec`), with the work around a
//! product fused into each block while it is in cache (a bias copied in before, an activation
//! or its derivative after, a share of a bias gradient beside).
//!
//! Why results are bit-identical whatever the thread count: each output element is computed by
//! one `gemm` call as one fixed sequence of multiply-adds over k (the kernel's k-blocking
//! depends on k and the cache sizes only, not on the block's width), the threads only split the
//! output's columns, and what runs before and after a block is element-wise, or sums over rows
//! in a fixed order, per element.

use super::super::parallel::threads;
use super::team::Exec;
use std::marker::PhantomData;

/// A read-only matrix view with arbitrary strides, so transposes cost nothing.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Mat<'a> {
    /// A row-major `rows x cols` matrix.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Mat {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    pub fn t(self) -> Self {
        Mat {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }
}

/// Below this many multiply-adds a product runs on one thread: splitting costs more than it gains.
const PARALLEL_MACS: usize = 1 << 21;

/// Columns `c0..c1` of every row of a row-major `[rows, n]` output: one thread's block. Other
/// threads hold the other columns, so each row's part is handed out as a `&mut` slice.
pub(crate) struct Block<'a> {
    ptr: *mut f32,
    pub rows: usize,
    pub n: usize,
    pub c0: usize,
    pub c1: usize,
    /// Which block of how many this is (for work split by blocks, such as a bias gradient).
    pub index: usize,
    pub count: usize,
    _output: PhantomData<&'a mut [f32]>,
}

impl Block<'_> {
    /// Row `r`'s part of the block.
    pub fn row(&mut self, r: usize) -> &mut [f32] {
        assert!(r < self.rows, "row {r} of {}", self.rows);
        // SAFETY: `ptr` is the output's start, which holds `rows * n` values (checked by
        // `matmul_blocks`); blocks own disjoint column ranges, and the `&mut self` borrow keeps
        // one row slice of this block alive at a time.
        unsafe {
            std::slice::from_raw_parts_mut(self.ptr.add(r * self.n + self.c0), self.c1 - self.c0)
        }
    }
}

/// `dst = a @ b` (or `dst += a @ b` when `accumulate`), `dst` row-major `[a.rows, b.cols]`.
pub(crate) fn matmul(dst: &mut [f32], a: Mat, b: Mat, accumulate: bool) {
    matmul_blocks(&Exec::Pool, dst, a, b, accumulate, |_| {}, |_| {});
}

/// [`matmul`] with `before(block)` run on each column block of the output just before its
/// product (e.g. a bias copied in, then accumulated onto) and `after(block)` just after it,
/// while the block is in cache.
///
/// Large products are split by output columns into two blocks per thread, each a
/// single-threaded `gemm` call: on the 2-core machines this measured faster than `gemm`'s own
/// rayon mode, which leaves B1's middle-sized shapes (128x512x256) on one thread.
pub(crate) fn matmul_blocks(
    exec: &Exec,
    dst: &mut [f32],
    a: Mat,
    b: Mat,
    accumulate: bool,
    before: impl Fn(&mut Block) + Sync,
    after: impl Fn(&mut Block) + Sync,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(k, b.rows, "inner dimensions differ");
    assert_eq!(dst.len(), m * n, "destination has the wrong size");
    for x in [a, b] {
        if x.rows > 0 && x.cols > 0 {
            assert!(
                (x.rows - 1) * x.row_stride + (x.cols - 1) * x.col_stride < x.data.len(),
                "view out of bounds"
            );
        }
    }
    if m == 0 || n == 0 {
        return;
    }
    let threads = threads();
    let count = if m * n * k >= PARALLEL_MACS && threads > 1 {
        (2 * threads).min(n.div_ceil(16))
    } else {
        1
    };
    let ptrs = SendPtrs(dst.as_mut_ptr(), a.data.as_ptr(), b.data.as_ptr());
    let block = |index: usize| {
        let ptrs = &ptrs;
        // Block edges on whole cache lines of the output (16 floats), so no two threads write
        // the same line.
        let edge = |i: usize| {
            if i == count {
                n
            } else {
                (n * i / count).next_multiple_of(16).min(n)
            }
        };
        let (c0, c1) = (edge(index), edge(index + 1));
        let mut block = Block {
            ptr: ptrs.0,
            rows: m,
            n,
            c0,
            c1,
            index,
            count,
            _output: PhantomData,
        };
        before(&mut block);
        // SAFETY: the asserts above keep every index the strides can form inside the slices;
        // blocks write disjoint column ranges of `dst`, which is exclusively borrowed and
        // distinct from `a` and `b`; `before` and `after` touch only this block's columns.
        if c1 > c0 {
            unsafe {
                gemm::gemm(
                    m,
                    c1 - c0,
                    k,
                    ptrs.0.add(c0),
                    1,
                    n as isize,
                    accumulate,
                    ptrs.1,
                    a.col_stride as isize,
                    a.row_stride as isize,
                    ptrs.2.add(c0 * b.col_stride),
                    b.col_stride as isize,
                    b.row_stride as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        }
        after(&mut block);
    };
    exec.for_each(count, &block);
}

/// `dst = a @ b` for row-major `a` `[m, k]` and `b` `[k, n]`, with the backend's threading:
/// what `gpumlp bench` times.
pub fn matmul_row_major(dst: &mut [f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize) {
    matmul(dst, Mat::new(a, m, k), Mat::new(b, k, n), false);
}

/// Raw pointers of one product, shared by its column blocks.
struct SendPtrs(*mut f32, *const f32, *const f32);
// SAFETY: `matmul_blocks` hands each block a disjoint part of the destination and only reads
// the inputs.
unsafe impl Sync for SendPtrs {}

/// A buffer that the blocks of one product write in disjoint parts (the parameters and the
/// optimizer state updated beside a weight gradient's blocks, a bias gradient's shares).
pub(crate) struct Disjoint<'a> {
    ptr: *mut f32,
    len: usize,
    _buffer: PhantomData<&'a mut [f32]>,
}

// SAFETY: every caller of `part` hands disjoint ranges to different threads (its contract).
unsafe impl Sync for Disjoint<'_> {}

impl<'a> Disjoint<'a> {
    pub fn new(buffer: &'a mut [f32]) -> Self {
        Disjoint {
            ptr: buffer.as_mut_ptr(),
            len: buffer.len(),
            _buffer: PhantomData,
        }
    }

    /// The values `range` of the buffer.
    ///
    /// # Safety
    /// No two parts alive at once may overlap: callers take only ranges of their own block.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn part(&self, range: std::ops::Range<usize>) -> &mut [f32] {
        assert!(
            range.start <= range.end && range.end <= self.len,
            "part out of bounds"
        );
        // SAFETY: in bounds (asserted); disjoint from every other live part (the contract).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(range.start), range.len()) }
    }
}
