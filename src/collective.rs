//! The processes of a data-parallel run, as one of them sees them.
//!
//! Synchronous data parallelism: every process (rank) holds the whole model and the whole
//! training set, takes its share of each global batch, and the ranks' gradients are summed
//! before the identical optimizer update on every rank, so the model is the one a single process
//! would train with the same global batch. The [`Trainer`](crate::Trainer) asks a [`Collective`]
//! for the sums; the program implements it with MPI (`native/src/ranks.rs`), tests with threads,
//! and a run on its own is [`SingleProcess`]. The core crate never links MPI, so the browser
//! build is unchanged.

use crate::error::Result;
use std::ops::Range;

/// Collective operations over the ranks of one run. Every rank calls the same operations in
/// the same order; each call returns on every rank with the same result.
pub trait Collective {
    /// This process's number, `0..ranks()`.
    fn rank(&self) -> usize;
    /// Processes in the run.
    fn ranks(&self) -> usize;
    /// Replaces `values` by their element-wise sum over the ranks.
    fn sum_f32(&self, values: &mut [f32]) -> Result<()>;
    /// Replaces `values` by their element-wise sum over the ranks.
    fn sum_f64(&self, values: &mut [f64]) -> Result<()>;
    /// Every rank's `value`, in rank order.
    fn gather_u64(&self, value: u64) -> Result<Vec<u64>>;
}

/// A run on its own: rank 0 of 1, every sum is the value itself.
pub struct SingleProcess;

impl Collective for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn ranks(&self) -> usize {
        1
    }
    fn sum_f32(&self, _: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn sum_f64(&self, _: &mut [f64]) -> Result<()> {
        Ok(())
    }
    fn gather_u64(&self, value: u64) -> Result<Vec<u64>> {
        Ok(vec![value])
    }
}

/// Rank `rank`'s share of `len` items split over `ranks`: contiguous, in rank order, sizes
/// differing by at most one (the first `len % ranks` ranks take one more).
pub fn share(len: usize, rank: usize, ranks: usize) -> Range<usize> {
    let (base, extra) = (len / ranks, len % ranks);
    let start = rank * base + rank.min(extra);
    start..start + base + usize::from(rank < extra)
}

/// A 64-bit fingerprint of exact bytes (FNV-1a), for ranks to check that they hold the same
/// thing without sending it.
#[derive(Clone, Copy, Debug)]
pub struct Fingerprint(u64);

impl Default for Fingerprint {
    fn default() -> Self {
        Fingerprint(0xcbf2_9ce4_8422_2325)
    }
}

impl Fingerprint {
    /// The fingerprint of what was fed so far, then `bytes`.
    pub fn feed(self, bytes: &[u8]) -> Self {
        Fingerprint(bytes.iter().fold(self.0, |h, &byte| {
            (h ^ byte as u64).wrapping_mul(0x0000_0100_0000_01b3)
        }))
    }

    pub fn value(self) -> u64 {
        self.0
    }
}

/// The fingerprint of `values`' exact bits.
pub fn fingerprint(values: &[f32]) -> u64 {
    Fingerprint::default()
        .feed(bytemuck::cast_slice(values))
        .value()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_every_item_once_in_order() {
        for len in [0, 1, 5, 128, 1000] {
            for ranks in 1..=7 {
                let shares: Vec<_> = (0..ranks).map(|r| share(len, r, ranks)).collect();
                assert_eq!(shares[0].start, 0);
                assert_eq!(shares[ranks - 1].end, len);
                for pair in shares.windows(2) {
                    assert_eq!(pair[0].end, pair[1].start);
                    assert!(pair[0].len() >= pair[1].len());
                    assert!(pair[0].len() - pair[1].len() <= 1);
                }
            }
        }
    }

    #[test]
    fn fingerprint_sees_one_bit() {
        let a = vec![0.5f32, -1.0, 3.25];
        let mut b = a.clone();
        b[2] = f32::from_bits(b[2].to_bits() ^ 1);
        assert_eq!(fingerprint(&a), fingerprint(&a.clone()));
        assert_ne!(fingerprint(&a), fingerprint(&b));
    }
}
