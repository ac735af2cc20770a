//! Index proofs: before the backend encodes a dispatch of a kernel built without runtime bounds
//! checks, it shows here that the largest index each binding can be read or written at lies
//! inside the buffer bound there. Lengths are in elements (f32 or u32 words) and the arithmetic
//! is done in u64, so a shape whose indices would overflow the shader's u32 is refused too.
//!
//! A failure is a bug in the backend (shapes it built itself), or a request past what the
//! buffers were sized for; either way it is an error before anything runs, never an access out
//! of bounds on the GPU.

use crate::error::{Error, Result};

/// The largest index a kernel's u32 arithmetic can form without wrapping.
const U32_INDEX: u64 = u32::MAX as u64;

/// One operand of a GEMM as the kernel reads it: `rows x cols`, element `(r, c)` at
/// `offset + r * ld + c` (`transposed` false) or `offset + c * ld + r` (true).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Operand {
    pub offset: u64,
    pub ld: u64,
    pub transposed: bool,
}

impl Operand {
    /// A row-major matrix with rows of `ld` elements from `offset`.
    pub fn row_major(offset: u64, ld: u64) -> Self {
        Operand {
            offset,
            ld,
            transposed: false,
        }
    }

    /// The largest index an operand of `rows x cols` reaches (None for an empty one).
    fn last(self, rows: u64, cols: u64) -> Option<u64> {
        if rows == 0 || cols == 0 {
            return None;
        }
        let (outer, inner) = if self.transposed {
            (cols, rows)
        } else {
            (rows, cols)
        };
        Some(self.offset + (outer - 1) * self.ld + (inner - 1))
    }
}

/// Checks that index `last` of binding `what` lies inside its `len` elements.
fn inside(what: &str, last: Option<u64>, len: u64) -> Result<()> {
    match last {
        Some(last) if last >= len || last > U32_INDEX => Err(Error::Gpu(format!(
            "internal error: {what} would be read at element {last}, past its {len}; refused before running"
        ))),
        _ => Ok(()),
    }
}

/// The buffers a GEMM dispatch binds, by their lengths in f32.
#[derive(Clone, Copy, Debug)]
pub struct GemmBuffers {
    pub a: u64,
    pub b: u64,
    pub c: u64,
    pub aux: u64,
}

/// What a GEMM's epilogue reads from `aux` or writes beside `C`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EpilogueReach {
    None,
    /// A bias of N values at this offset of `aux`.
    Bias(u64),
    /// A bias at the first offset of `aux`, and the M x N pre-activation kept at the second
    /// offset of `c`.
    BiasKeepingPre(u64, u64),
    /// An M x N input of the activation's derivative at this offset of `aux`.
    Mask(u64),
    /// M bias-gradient values written at this offset of `c`.
    RowSums(u64),
}

/// Proves a GEMM of at most `m x k` times `k x n` (the batch may shrink M or K, never grow them)
/// with C written row-major at `c_off`. An operand given as None is read from the dataset
/// (see [`dataset`]); its extent along the features must be `features`.
pub fn gemm(
    (m, n, k): (u64, u64, u64),
    a: Option<Operand>,
    b: Option<Operand>,
    c_off: u64,
    epilogue: EpilogueReach,
    buffers: GemmBuffers,
    features: u64,
) -> Result<()> {
    let from_data = |what: &str, extent: u64| {
        if extent == features {
            Ok(())
        } else {
            Err(Error::Gpu(format!(
                "internal error: {what} reads {extent} features per sample, not {features}"
            )))
        }
    };
    match a {
        Some(a) => inside("GEMM operand A", a.last(m, k), buffers.a)?,
        None => from_data("GEMM operand A", k)?,
    }
    match b {
        Some(b) => inside("GEMM operand B", b.last(k, n), buffers.b)?,
        None => from_data("GEMM operand B", n)?,
    }
    inside(
        "GEMM output C",
        Operand::row_major(c_off, n).last(m, n),
        buffers.c,
    )?;
    match epilogue {
        EpilogueReach::None => Ok(()),
        EpilogueReach::Bias(off) => inside("GEMM bias", (n > 0).then(|| off + n - 1), buffers.aux),
        EpilogueReach::BiasKeepingPre(off, pre) => {
            inside("GEMM bias", (n > 0).then(|| off + n - 1), buffers.aux)?;
            inside(
                "GEMM pre-activation",
                Operand::row_major(pre, n).last(m, n),
                buffers.c,
            )
        }
        EpilogueReach::Mask(off) => inside(
            "GEMM mask",
            Operand::row_major(off, n).last(m, n),
            buffers.aux,
        ),
        EpilogueReach::RowSums(off) => inside(
            "GEMM bias gradient",
            (m > 0).then(|| off + m - 1),
            buffers.c,
        ),
    }
}

/// A GEMM variant's constants: its workgroup and register arrays (gemm.wgsl's `a_s`, `b_s`,
/// `acc`) hold a tile of at most 128 x 128 with 8 x 8 per invocation, and the invocations must
/// cover the tile exactly.
pub fn gemm_variant(bm: u32, bn: u32, tm: u32, tn: u32, max_invocations: u32) -> Result<()> {
    let ok = [tm, tn].iter().all(|t| *t == 4 || *t == 8)
        && (bm <= 128 && bn <= 128)
        && bm.is_multiple_of(tm)
        && bn.is_multiple_of(tn)
        && bm.is_multiple_of(4)
        && bn.is_multiple_of(4)
        && (bm / tm) * (bn / tn) <= max_invocations.min(256);
    if ok {
        Ok(())
    } else {
        Err(Error::Gpu(format!(
            "internal error: GEMM variant {bm}x{bn} with {tm}x{tn} per invocation does not fit gemm.wgsl's arrays or this GPU's {max_invocations} invocations per workgroup"
        )))
    }
}

/// A mixed-precision variant gemm_mixed.wgsl's arrays hold (at most 2 x 2 matrices of 16 x
/// 16: 32 x 16 halves of A and of B, 32 x 32 f32 of C), of a size the adapter offers.
pub fn cooperative_variant(matrix: u32, tm: u32, tn: u32, offered: &[u32]) -> Result<()> {
    if matches!(matrix, 8 | 16)
        && matches!(tm, 1 | 2)
        && matches!(tn, 1 | 2)
        && offered.contains(&matrix)
    {
        Ok(())
    } else {
        Err(Error::Gpu(format!(
            "internal error: cooperative variant of {tm}x{tn} matrices of {matrix}x{matrix} does not fit gemm_mixed.wgsl or this adapter's sizes {offered:?}"
        )))
    }
}

/// A split factor the kernel has: 1, or 2, 4 or 8 parts of K for a product whose epilogue does
/// not itself sum over K (`row_sums`: the bias gradients).
pub fn split(parts: u32, row_sums: bool) -> Result<()> {
    if parts == 1 || ([2, 4, 8].contains(&parts) && !row_sums) {
        Ok(())
    } else {
        Err(Error::Gpu(format!(
            "internal error: K split in {parts} parts{}",
            if row_sums {
                " for a product summing over K"
            } else {
                ""
            }
        )))
    }
}

/// Proves a split product's workspace: the first pass writes, and the second reads, elements
/// `z * m * n + i * n + j` for z < `parts`, i < `m`, j < `n`.
pub fn split_workspace(parts: u64, m: u64, n: u64, words: u64) -> Result<()> {
    let last = (parts * m * n).checked_sub(1);
    inside("split-K workspace", last, words)
}

/// Proves the reads of the first layer's products and the softmax from the resident dataset:
/// batches read entries `0..order_end` of `order`, whose entries are below `samples` (checked
/// before they are written, by `check_batch`), and each sample is `row_words` u32 words (the
/// kernel reads no further into a row: `gemm.wgsl`'s `features4`).
pub fn dataset(
    order_end: u64,
    order_len: u64,
    samples: u64,
    (stored, labels): (u64, u64),
    row_words: u64,
) -> Result<()> {
    let rows = |n: u64| n.checked_sub(1);
    inside("batch order", rows(order_end), order_len)?;
    inside(
        "dataset samples",
        rows(samples).and_then(|s| (s * row_words + row_words).checked_sub(1)),
        stored,
    )?;
    inside("dataset labels", rows(samples), labels)
}

/// Proves the softmax over `batch` rows of `classes` logits (`z`, `dz`).
pub fn softmax(batch: u64, classes: u64, (z, dz, stats): (u64, u64, u64)) -> Result<()> {
    let last = batch.checked_sub(1).map(|r| r * classes + classes - 1);
    inside("logits", last, z)?;
    inside("logit gradients", last, dz)?;
    inside("stats", Some(7), stats)
}

/// Proves an update of `len` parameters over `buffers` (parameters, gradients, state).
pub fn update(len: u64, buffers: &[u64]) -> Result<()> {
    buffers
        .iter()
        .try_for_each(|&b| inside("optimizer buffers", len.checked_sub(1), b))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GEMM with both operands in buffers, on 784-pixel images.
    fn g(
        dims: (u64, u64, u64),
        a: Operand,
        b: Operand,
        c_off: u64,
        epilogue: EpilogueReach,
        buffers: GemmBuffers,
    ) -> Result<()> {
        gemm(dims, Some(a), Some(b), c_off, epilogue, buffers, 784)
    }

    const ROW: Operand = Operand {
        offset: 0,
        ld: 784,
        transposed: false,
    };

    fn forward(m: u64, a: u64, b: u64, c: u64) -> Result<()> {
        // Z = X @ W^T for 784 -> 512: W is [512, 784], read transposed.
        let w = Operand {
            offset: 0,
            ld: 784,
            transposed: true,
        };
        g(
            (m, 512, 784),
            ROW,
            w,
            0,
            EpilogueReach::Bias(512 * 784),
            GemmBuffers { a, b, c, aux: b },
        )
    }

    #[test]
    fn a_gemm_that_fits_its_buffers_is_accepted_exactly_at_the_edge() {
        let params = 512 * 784 + 512;
        forward(128, 128 * 784, params, 128 * 512).unwrap();
        // One element short anywhere is refused.
        assert!(forward(128, 128 * 784 - 1, params, 128 * 512).is_err());
        assert!(forward(128, 128 * 784, params - 1, 128 * 512).is_err());
        assert!(forward(128, 128 * 784, params, 128 * 512 - 1).is_err());
        // A batch larger than the buffers were made for is refused.
        assert!(forward(129, 128 * 784, params, 128 * 512).is_err());
    }

    #[test]
    fn strides_offsets_and_epilogues_are_checked() {
        let big = GemmBuffers {
            a: 1 << 20,
            b: 1 << 20,
            c: 1 << 20,
            aux: 100,
        };
        let t = |offset, ld, transposed| Operand {
            offset,
            ld,
            transposed,
        };
        // A transposed [k=64, m=32] at offset 10, ld 32: last index 10 + 63*32 + 31.
        let ok = g(
            (32, 8, 64),
            t(10, 32, true),
            t(0, 8, false),
            0,
            EpilogueReach::None,
            big,
        );
        assert!(ok.is_ok());
        let a_len = 10 + 63 * 32 + 31;
        let short = GemmBuffers { a: a_len, ..big };
        let err = g(
            (32, 8, 64),
            t(10, 32, true),
            t(0, 8, false),
            0,
            EpilogueReach::None,
            short,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("operand A") && err.contains(&a_len.to_string()),
            "{err}"
        );
        // A bias past aux, a mask past aux, row sums past C, on a 4 x 8 product.
        let small = |epilogue, buffers| {
            g(
                (4, 8, 4),
                t(0, 4, false),
                t(0, 8, false),
                0,
                epilogue,
                buffers,
            )
        };
        assert!(small(EpilogueReach::Bias(93), big).is_err());
        assert!(small(EpilogueReach::Bias(92), big).is_ok());
        assert!(small(EpilogueReach::Mask(69), big).is_err());
        let sums = GemmBuffers { c: 40, ..big };
        assert!(small(EpilogueReach::RowSums(37), sums).is_err());
        // A 4 x 8 pre-activation kept at offset 32 of C needs 64 values there.
        let keep = GemmBuffers { c: 64, ..big };
        assert!(small(EpilogueReach::BiasKeepingPre(0, 32), keep).is_ok());
        assert!(small(EpilogueReach::BiasKeepingPre(0, 33), keep).is_err());
        // Indices past u32 are refused even where a buffer would be that large.
        let huge = GemmBuffers {
            a: u64::MAX,
            b: u64::MAX,
            c: u64::MAX,
            aux: 0,
        };
        let wraps = g(
            (1 << 17, 1 << 16, 1 << 16),
            ROW,
            t(0, 1 << 16, false),
            0,
            EpilogueReach::None,
            huge,
        );
        assert!(wraps.is_err());
        // An operand read from the dataset must span exactly its samples' features.
        let data = |k| {
            gemm(
                (128, 8, k),
                None,
                Some(t(0, 8, false)),
                0,
                EpilogueReach::None,
                big,
                784,
            )
        };
        assert!(data(784).is_ok());
        assert!(data(785).is_err());
    }

    #[test]
    fn gemm_variants_must_fit_the_kernels_arrays() {
        gemm_variant(128, 128, 8, 8, 256).unwrap();
        gemm_variant(32, 32, 4, 4, 256).unwrap();
        assert!(
            gemm_variant(256, 64, 8, 8, 256).is_err(),
            "a_s holds 128 rows"
        );
        assert!(gemm_variant(64, 64, 2, 4, 256).is_err(), "TM is 4 or 8");
        assert!(
            gemm_variant(128, 128, 4, 4, 256).is_err(),
            "1,024 invocations"
        );
        assert!(
            gemm_variant(64, 64, 4, 4, 128).is_err(),
            "over the device's limit"
        );
    }

    #[test]
    fn splits_and_their_workspaces_are_checked() {
        split(1, true).unwrap();
        split(4, false).unwrap();
        assert!(split(4, true).is_err(), "the bias sums are never split");
        assert!(split(3, false).is_err());
        split_workspace(4, 128, 512, 4 * 128 * 512).unwrap();
        assert!(split_workspace(4, 128, 512, 4 * 128 * 512 - 1).is_err());
    }

    #[test]
    fn dataset_reads_softmaxes_and_updates_are_checked() {
        let fits = |end, samples| dataset(end, 1000, samples, (60 * 196, 60), 196);
        fits(1000, 60).unwrap();
        assert!(fits(1001, 60).is_err(), "order read past its end");
        assert!(fits(1000, 61).is_err(), "images and labels short");
        assert!(
            dataset(1, 1, 60, (60 * 196 - 1, 60), 196).is_err(),
            "samples short"
        );
        softmax(128, 10, (1280, 1280, 8)).unwrap();
        assert!(softmax(128, 10, (1279, 1280, 8)).is_err());
        assert!(softmax(128, 10, (1280, 1279, 8)).is_err());
        update(10, &[10, 10, 10]).unwrap();
        assert!(update(10, &[10, 9]).is_err());
    }
}
