//! Subnormal floats (magnitudes under `f32::MIN_POSITIVE`, about 1.2e-38) flushed to zero
//! while the CPU backend computes: a result that would be subnormal is 0 (FTZ), and a subnormal
//! operand is read as 0 (DAZ).
//!
//! Why: training makes them, and on Intel cores every operation on one takes a microcode assist
//! of a hundred cycles or more. Adam's first moment decays by `beta1` at each step a weight's
//! gradient is zero (a unit that is dead for the batch, a pixel blank in every image of it),
//! and reaches the subnormal range after a few hundred such steps; small gradients square into
//! it in the second moment. On a 2-core Xeon, B1 on Fashion-MNIST slowed from 43,000 samples/s
//! in its first epoch to 27,500 in its fourth; flushed, its epochs held 41,000-48,000 with no
//! such trend (2026-12-03, README "Measured results"). TensorFlow and XLA (so JAX) flush the same way on
//! their CPU threads.
//!
//! What it changes: values under 1.2e-38, far below anything that moves a weight, become 0
//! (GPUs may flush them too: WGSL allows it). Determinism: every part of every parallel region,
//! on whichever thread, and the serial work between them run flushed, so which thread computes
//! an element still changes nothing.
//!
//! Only on x86_64, where the mode is the MXCSR register's FTZ and DAZ bits. Elsewhere this does
//! nothing: wasm32 has no such mode, and on aarch64 (FPCR's FZ bit) it is not measured or tested
//! here. On every target the optimizers store a subnormal moment as 0 themselves
//! (`optim::flush_subnormal`), which covers the main source where this does nothing.
//!
//! Outside Rust's guarantees: Rust and LLVM assume the default floating-point environment
//! (`core::arch` deprecated `_mm_setcsr`, whose documentation warns that changing the mode is
//! undefined behaviour to the language). What is relied on instead, as TensorFlow and XLA rely on it in C++: the mode is set and put
//! back by opaque `asm` blocks around calls through `dyn` closures and a thread's whole life, so
//! the arithmetic meant to run flushed runs between them, and no float constant the compiler
//! folds is subnormal. What could go wrong is numeric only (a subnormal kept or flushed where
//! the other was meant), never memory safety.

/// The calling thread flushes subnormals until this is dropped, which puts its earlier mode
/// back: code outside the backend computes as before, but for what the backend calls while it
/// holds the guard (a span's progress callback).
pub(crate) struct Flushed {
    #[cfg(target_arch = "x86_64")]
    saved: u32,
    /// The mode is the thread's: the guard must be dropped on the thread that made it.
    _not_send: std::marker::PhantomData<*const ()>,
}

/// MXCSR's flush-to-zero (bit 15) and denormals-are-zero (bit 6).
#[cfg(target_arch = "x86_64")]
const FTZ_DAZ: u32 = 1 << 15 | 1 << 6;

/// Flushes subnormals on the calling thread while the returned guard lives.
pub(crate) fn flushed() -> Flushed {
    // A new thread starts in the mode of the thread that starts it: rayon's pool is started
    // (where it is not yet) before the mode changes, so that its threads are not born flushing
    // for good.
    #[cfg(target_arch = "x86_64")]
    let _ = super::super::parallel::threads();
    Flushed::here()
}

impl Flushed {
    /// [`flushed`] for a thread that cannot start rayon's pool: one of its threads, or one of
    /// the team's helpers (which never call into rayon).
    pub(crate) fn here() -> Flushed {
        #[cfg(target_arch = "x86_64")]
        {
            let saved = mxcsr();
            set_mxcsr(saved | FTZ_DAZ);
            Flushed {
                saved,
                _not_send: std::marker::PhantomData,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        Flushed {
            _not_send: std::marker::PhantomData,
        }
    }
}

impl Drop for Flushed {
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        set_mxcsr(self.saved);
    }
}

#[cfg(target_arch = "x86_64")]
fn mxcsr() -> u32 {
    let mut value = 0u32;
    // SAFETY: stores the 32-bit MXCSR register into a local.
    unsafe {
        std::arch::asm!("stmxcsr [{}]", in(reg) &mut value, options(nostack, preserves_flags))
    };
    value
}

/// Sets MXCSR. Only its FTZ and DAZ bits are ever changed here (rounding and exception masks
/// stay as the thread had them; see the module's note on what this relies on).
#[cfg(target_arch = "x86_64")]
fn set_mxcsr(value: u32) {
    // SAFETY: loads MXCSR from a local holding the register's own value with at most FTZ and
    // DAZ added (valid bits on every x86_64 processor with SSE2, which x86_64 has).
    unsafe {
        std::arch::asm!("ldmxcsr [{}]", in(reg) &value, options(nostack, readonly, preserves_flags))
    };
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use std::hint::black_box;

    /// Half the smallest normal f32: subnormal unflushed, 0 flushed.
    fn half_smallest() -> f32 {
        black_box(f32::MIN_POSITIVE) * black_box(0.5)
    }

    #[test]
    fn flushes_while_held_and_restores_after() {
        assert!(half_smallest() > 0.0, "subnormals are kept by default");
        {
            let _flushed = flushed();
            assert_eq!(half_smallest(), 0.0);
            // DAZ: a subnormal operand reads as zero.
            let sub = black_box(f32::from_bits(1));
            assert_eq!(sub * black_box(2.0), 0.0);
            {
                let _again = flushed();
                assert_eq!(half_smallest(), 0.0);
            }
            assert_eq!(
                half_smallest(),
                0.0,
                "an inner guard restores the outer mode"
            );
        }
        assert!(half_smallest() > 0.0, "the thread's mode is back");
    }

    #[test]
    fn every_part_of_a_region_runs_flushed_on_any_thread() {
        use super::super::team::{on_team, Exec};
        use std::sync::atomic::{AtomicUsize, Ordering};
        let kept = AtomicUsize::new(0);
        let job = |_| {
            if half_smallest() != 0.0 {
                kept.fetch_add(1, Ordering::Relaxed);
            }
        };
        // As the backend's entry points hold it for the caller's serial work.
        let _flushed = flushed();
        Exec::Pool.for_each(64, &job);
        on_team(|exec| exec.for_each(64, &job));
        assert_eq!(
            kept.load(Ordering::Relaxed),
            0,
            "parts computed a subnormal"
        );
        // rayon's threads compute as before once the region is over.
        assert!(rayon::broadcast(|_| half_smallest() > 0.0)
            .into_iter()
            .all(|kept| kept));
    }
}
