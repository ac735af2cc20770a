//! The CPU backend's matrix products: the `gemm` crate's single-threaded kernel on blocks of
//! the output (column blocks, [`product`]; or blocks of whole rows, [`row_product`]), the
//! blocks run in parallel (`team::Exec`), with the work around a product fused into each block
//! while it is in cache (`fused`: a bias and an activation, or its derivative, after the
//! product; the bias gradient of its units beside; for the first layer's weight gradient, the
//! optimizer's update).
//!
//! Why results are bit-identical whatever the thread count: the blocks are cut from the shape of
//! the product alone (never from the number of threads), each block is one `gemm` call, which
//! computes each of its elements by one fixed sequence of operations for that block's shape,
//! and what runs after a block is element-wise, or sums over rows in a fixed order, per
//! element; every thread flushes subnormals alike (`subnormals`). Which thread runs a block
//! changes nothing.

use super::clock;
use super::team::{Exec, Parts};
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

    /// Columns `c0..c1`.
    pub fn columns(self, c0: usize, c1: usize) -> Self {
        Mat {
            data: &self.data[(c0 * self.col_stride).min(self.data.len())..],
            cols: c1 - c0,
            ..self
        }
    }

    /// Rows `r0..r1`.
    pub fn rows(self, r0: usize, r1: usize) -> Self {
        Mat {
            data: &self.data[(r0 * self.row_stride).min(self.data.len())..],
            rows: r1 - r0,
            ..self
        }
    }

    /// Panics unless every index the view can form is inside its slice.
    fn check(&self) {
        if self.rows > 0 && self.cols > 0 {
            assert!(
                (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride
                    < self.data.len(),
                "view out of bounds"
            );
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

/// Multiply-adds per column block of a product: splitting finer costs more than it gains (each
/// block packs the left operand again).
#[cfg(not(all(target_arch = "wasm32", feature = "wasm-threads")))]
const BLOCK_MACS: usize = 1 << 23;
/// In the browser's threaded build, finer: there the small networks the demo trains (784-128-10's
/// largest products are 12.8M multiply-adds) would otherwise run their products whole, on one
/// thread.
#[cfg(all(target_arch = "wasm32", feature = "wasm-threads"))]
const BLOCK_MACS: usize = 1 << 21;

/// Where column blocks may start: a multiple of the 64 rows that `gemm`'s widest f32 kernel
/// covers with AVX-512 (the output's columns are the rows of the transposed product it runs). A
/// narrower remainder runs on a thinner, slower kernel: edges on 16 columns left forward layer
/// 1 of B1 (512 columns in 6 blocks, 80 and 96 wide) 10% slower. 64 floats are also whole cache
/// lines, so no two blocks write the same line. (16 in the browser, whose SIMD is 4 wide and
/// whose small networks need narrow blocks to use its threads.)
#[cfg(not(target_arch = "wasm32"))]
const EDGE: usize = 64;
#[cfg(target_arch = "wasm32")]
const EDGE: usize = 16;

/// Columns `c0..c1` of every row of a row-major `[rows, n]` output: one thread's block. Other
/// threads hold the other columns, so each row's part is handed out as a `&mut` slice.
pub(crate) struct Block<'a> {
    ptr: *mut f32,
    pub rows: usize,
    pub n: usize,
    pub c0: usize,
    pub c1: usize,
    _output: PhantomData<&'a mut [f32]>,
}

impl Block<'_> {
    /// Row `r`'s part of the block.
    pub fn row(&mut self, r: usize) -> &mut [f32] {
        assert!(r < self.rows, "row {r} of {}", self.rows);
        // SAFETY: `ptr` is the output's start, which holds `rows * n` values (checked by
        // `product`); blocks own disjoint column ranges, and the `&mut self` borrow keeps
        // one row slice of this block alive at a time.
        unsafe {
            std::slice::from_raw_parts_mut(self.ptr.add(r * self.n + self.c0), self.c1 - self.c0)
        }
    }
}

/// How many column blocks an `m x k x n` product is cut into: from the shape alone, so that the
/// thread count changes nothing in the results.
pub(crate) fn block_count(m: usize, k: usize, n: usize) -> usize {
    (m * n * k / BLOCK_MACS).clamp(1, n.div_ceil(EDGE).max(1))
}

/// How many blocks of whole rows [`row_product`] cuts an `m x k x n` product into: about
/// `BLOCK_MACS` multiply-adds each, and at least two (where there are two rows), so that the
/// work riding on the blocks (the first layer's update) is shared however small the network.
fn row_block_count(m: usize, k: usize, n: usize) -> usize {
    (m * n * k / BLOCK_MACS).clamp(2.min(m), m.max(1))
}

/// `dst = a @ b`, `dst` row-major `[a.rows, b.cols]`, as the parts of a parallel region, one
/// per column block of the output, with `after(block)` run on each block just after its
/// product, while the block is in cache.
///
/// Large products are split by output columns into blocks of about `BLOCK_MACS` multiply-adds
/// and at least `EDGE` columns, each a single-threaded `gemm` call: on the 2-core machines this
/// measured faster than `gemm`'s own rayon mode, which leaves B1's middle-sized shapes
/// (128x512x256) on one thread.
pub(crate) fn product<'a>(
    dst: &'a mut [f32],
    a: Mat<'a>,
    b: Mat<'a>,
    after: impl Fn(&mut Block) + Sync + 'a,
) -> Parts<'a> {
    assert_eq!(a.cols, b.rows, "inner dimensions differ");
    let n = b.cols;
    let (m, k) = (a.rows, a.cols);
    assert_eq!(dst.len(), m * n, "destination has the wrong size");
    let count = block_count(m, k, n);
    let edge = move |i: usize| {
        if i == count {
            n
        } else {
            (n * i / count).next_multiple_of(EDGE).min(n)
        }
    };
    let ptrs = SendPtrs(dst.as_mut_ptr());
    let block = move |index: usize| {
        let ptrs = &ptrs;
        let (c0, c1) = (edge(index), edge(index + 1));
        let mut block = Block {
            ptr: ptrs.0,
            rows: m,
            n,
            c0,
            c1,
            _output: PhantomData,
        };
        // SAFETY: blocks write disjoint column ranges of `dst`, which is exclusively borrowed
        // and distinct from `a` and `b`, `n` apart from row to row; `after` touches only this
        // block's columns.
        unsafe { gemm_into(ptrs.0.add(c0), n, a, b.columns(c0, c1)) };
        let fused = clock::start();
        after(&mut block);
        clock::stop(fused, &clock::FUSED);
    };
    Parts::new(count, block)
}

/// `dst = a @ b` as the parts of a parallel region, one per block of whole rows of the output,
/// cut from the shape alone, with `after(rows, block)` run on each block (its `rows` of `dst`)
/// just after its product, while it is in cache: for work that wants its rows whole and
/// contiguous (the optimizer's update of the first layer's weights right after their
/// gradient). Each block packs its rows of `a` and all of `b`.
pub(crate) fn row_product<'a>(
    dst: &'a mut [f32],
    a: Mat<'a>,
    b: Mat<'a>,
    after: impl Fn(std::ops::Range<usize>, &mut [f32]) + Sync + 'a,
) -> Parts<'a> {
    assert_eq!(a.cols, b.rows, "inner dimensions differ");
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(dst.len(), m * n, "destination has the wrong size");
    let count = row_block_count(m, k, n);
    let edge = move |i: usize| m * i / count;
    let ptrs = SendPtrs(dst.as_mut_ptr());
    Parts::new(count, move |index| {
        let ptrs = &ptrs;
        let rows = edge(index)..edge(index + 1);
        // SAFETY: blocks write disjoint row ranges of `dst`, which is exclusively borrowed and
        // distinct from `a` and `b`.
        unsafe {
            gemm_into(
                ptrs.0.add(rows.start * n),
                n,
                a.rows(rows.start, rows.end),
                b,
            )
        };
        // SAFETY: this block's rows, written above, are its alone.
        let block =
            unsafe { std::slice::from_raw_parts_mut(ptrs.0.add(rows.start * n), rows.len() * n) };
        after(rows, block);
    })
}

/// `dst = a @ b` on this thread, `dst` `[a.rows, b.cols]` with rows `row_stride` apart, timed
/// as product time.
///
/// # Safety
/// `dst` points to a writable matrix of that shape that nothing else reads or writes during the
/// call, and that does not overlap `a` or `b`.
unsafe fn gemm_into(dst: *mut f32, row_stride: usize, a: Mat, b: Mat) {
    a.check();
    b.check();
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // An empty sum: `gemm` would leave `dst` as it was.
        for r in 0..m {
            // SAFETY: row `r` of the caller's `dst`.
            unsafe { std::slice::from_raw_parts_mut(dst.add(r * row_stride), n) }.fill(0.0);
        }
        return;
    }
    let clock = clock::start();
    // SAFETY: `a` and `b` are checked views (every index their strides form is inside their
    // slices); the caller's contract for `dst`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            row_stride as isize,
            false,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
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
    clock::stop(clock, &clock::PRODUCTS);
}

/// [`product`] run as a region of its own.
pub(crate) fn matmul_blocks(
    exec: &Exec,
    dst: &mut [f32],
    a: Mat,
    b: Mat,
    after: impl Fn(&mut Block) + Sync,
) {
    exec.run(&[product(dst, a, b, after)]);
}

/// `dst = A @ B`, `dst` row-major `[m, n]`, `reps` times over, on the threads a span of
/// training steps runs its products on: what `gpumlp bench` times. `A` is `a` read as a
/// row-major `[m, k]`, or as the transpose of a row-major `[k, m]` where `a_t`; `B` likewise
/// `[k, n]`, or the transpose of `[n, k]` where `b_t`.
pub fn matmul_row_major(
    dst: &mut [f32],
    (a, b): (&[f32], &[f32]),
    (m, k, n): (usize, usize, usize),
    (a_t, b_t): (bool, bool),
    reps: usize,
) {
    super::team::on_team(|exec| {
        for _ in 0..reps {
            let a = if a_t {
                Mat::new(a, k, m).t()
            } else {
                Mat::new(a, m, k)
            };
            let b = if b_t {
                Mat::new(b, n, k).t()
            } else {
                Mat::new(b, k, n)
            };
            matmul_blocks(exec, dst, a, b, |_| {});
        }
    });
}

/// The output of one product, shared by its blocks.
struct SendPtrs(*mut f32);
// SAFETY: `product` and `row_product` hand each block a disjoint part of the destination.
unsafe impl Sync for SendPtrs {}

/// A buffer that several threads write in disjoint parts (the parameters and optimizer state
/// updated in chunks, a bias gradient's parts, a pre-activation's blocks).
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

    /// Values in the buffer.
    pub fn len(&self) -> usize {
        self.len
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
