//! How the CPU backend runs the parts of one parallel region ([`Exec::for_each`]): on rayon's
//! pool for a single forward or backward, and during a span of training steps on a [`Team`] of
//! threads that spin between regions instead of sleeping.
//!
//! Why a team: a step has about six parallel regions with a little serial work between them
//! (the softmax, the small last layer), long enough for rayon's idle workers to go to sleep,
//! and waking a sleeping thread costs several times the work of a region on these virtual
//! machines (README, "Measured results"). The team lives only while a span is
//! trained, so nothing spins otherwise. Which thread computes a part does not change what it
//! computes, so results are the same on either.

use super::super::parallel::*;
#[cfg(not(target_arch = "wasm32"))]
use super::clock;
use super::subnormals::flushed;
#[cfg(not(target_arch = "wasm32"))]
use std::cell::UnsafeCell;
#[cfg(not(target_arch = "wasm32"))]
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
#[cfg(not(target_arch = "wasm32"))]
use std::sync::Arc;

/// Where the parts of a parallel region run.
pub(crate) enum Exec<'a> {
    /// rayon's pool (sequential on wasm32 unless built with threads).
    Pool,
    /// The calling thread, the parts in turn (inside a part of another region).
    Serial,
    /// A spinning team, for the length of a span.
    #[cfg(not(target_arch = "wasm32"))]
    Team(&'a Team),
    #[cfg(target_arch = "wasm32")]
    #[allow(dead_code)]
    Never(std::marker::PhantomData<&'a ()>),
}

impl Exec<'_> {
    /// Runs `job(i)` for every `i` in `0..count`, in parallel, returning when all are done.
    pub fn for_each(&self, count: usize, job: &(dyn Fn(usize) + Sync)) {
        // One part, or one thread: here. (Handing parts to a pool of one thread costs a wake-up
        // of that thread per region: 8% of a B1 step on one thread, measured with perf.)
        if count == 1 || threads() == 1 {
            return (0..count).for_each(job);
        }
        match self {
            Exec::Serial => (0..count).for_each(job),
            #[cfg(any(not(target_arch = "wasm32"), feature = "wasm-threads"))]
            Exec::Pool => (0..count).into_par_iter().for_each(|i| {
                // On whichever pool thread takes it (the caller's serial work is flushed by
                // the backend's entry points; the pool is running, so `here` will do).
                let _flushed = super::subnormals::Flushed::here();
                job(i)
            }),
            #[cfg(all(target_arch = "wasm32", not(feature = "wasm-threads")))]
            Exec::Pool => (0..count).for_each(job),
            #[cfg(target_arch = "wasm32")]
            Exec::Never(_) => (0..count).for_each(job),
            #[cfg(not(target_arch = "wasm32"))]
            Exec::Team(team) => team.for_each(count, job),
        }
    }
}

/// Work for one parallel region: `count` parts, part `i` done by `run(i)`. Independent pieces of
/// work (a product's blocks, beside another product's, or chunks of an update) share a
/// region through [`Exec::run`], so that threads done with one piece take up the next instead of
/// waiting at the region's end.
pub(crate) struct Parts<'a> {
    count: usize,
    run: Box<dyn Fn(usize) + Sync + 'a>,
}

impl<'a> Parts<'a> {
    pub fn new(count: usize, run: impl Fn(usize) + Sync + 'a) -> Self {
        Parts {
            count,
            run: Box::new(run),
        }
    }
}

impl Exec<'_> {
    /// One region running every part of `pieces`, taken in the order given (so put the long
    /// work first, and short work fills the region's end).
    pub fn run(&self, pieces: &[Parts]) {
        let count = pieces.iter().map(|p| p.count).sum();
        self.for_each(count, &|mut i| {
            for piece in pieces {
                if i < piece.count {
                    return (piece.run)(i);
                }
                i -= piece.count;
            }
        });
    }
}

/// Runs `work` with a team as wide as rayon's pool for its parallel regions (rayon's pool where
/// there is one thread, and on wasm32), the team ending with it; subnormals flushed throughout,
/// on every thread (`subnormals`).
pub(crate) fn on_team<R>(work: impl FnOnce(&Exec) -> R) -> R {
    let _flushed = flushed();
    #[cfg(not(target_arch = "wasm32"))]
    {
        let team = Team::new();
        work(&team.as_ref().map_or(Exec::Pool, Exec::Team))
    }
    #[cfg(target_arch = "wasm32")]
    work(&Exec::Pool)
}

/// The calling thread and `helpers` more, which spin waiting for work until the team is dropped.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) struct Team {
    shared: Arc<Shared>,
    helpers: Vec<std::thread::JoinHandle<()>>,
    /// One job at a time: a team is not shared between threads (`for_each` is not reentrant).
    _one_caller: std::marker::PhantomData<std::cell::Cell<()>>,
}

/// A job handed to the helpers: the closure (its lifetime erased: `for_each` does not return
/// while a helper may still call it) and its part count.
#[cfg(not(target_arch = "wasm32"))]
type Job = (*const (dyn Fn(usize) + Sync), usize);

#[cfg(not(target_arch = "wasm32"))]
struct Shared {
    /// Bumped by the leader after it has stored a new job.
    generation: AtomicUsize,
    job: UnsafeCell<Job>,
    /// The next part to take.
    next: AtomicUsize,
    /// Helpers done with the current job.
    done: AtomicUsize,
    /// A helper's part panicked (the leader panics in turn rather than wait forever).
    panicked: AtomicBool,
    stop: AtomicBool,
}

// SAFETY: `job` is written only by the leader while no helper reads it (before `generation` is
// bumped, after every helper has reported `done`), and read by helpers only in between; the
// closure it points to is `Sync`.
#[cfg(not(target_arch = "wasm32"))]
unsafe impl Sync for Shared {}
#[cfg(not(target_arch = "wasm32"))]
unsafe impl Send for Shared {}

/// Spins of a waiting thread (a few hundred microseconds: a step's serial gaps are tens) before
/// it yields its core at each check instead, so that on a busy machine a waiting thread does
/// not hold a core that the thread it waits for could use.
#[cfg(not(target_arch = "wasm32"))]
const SPINS: u32 = 1 << 13;

#[cfg(not(target_arch = "wasm32"))]
impl Team {
    /// A team as wide as rayon's pool (`RAYON_NUM_THREADS`), or None on one thread.
    pub fn new() -> Option<Self> {
        let helpers = threads().saturating_sub(1);
        if helpers == 0 {
            return None;
        }
        let noop: &(dyn Fn(usize) + Sync) = &|_| {};
        let shared = Arc::new(Shared {
            generation: AtomicUsize::new(0),
            job: UnsafeCell::new((noop as *const _, 0)),
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let helpers = (0..helpers)
            .map(|_| {
                let shared = shared.clone();
                std::thread::spawn(move || help(&shared))
            })
            .collect();
        Some(Team {
            shared,
            helpers,
            _one_caller: std::marker::PhantomData,
        })
    }

    fn for_each(&self, count: usize, job: &(dyn Fn(usize) + Sync)) {
        let s = &*self.shared;
        // SAFETY: every helper reported `done` for the previous job (or none started), so none
        // reads `job` now. The lifetime is erased; this function waits below until no helper
        // can call the closure any more.
        unsafe {
            let job: *const (dyn Fn(usize) + Sync) = std::mem::transmute(job);
            *s.job.get() = (job, count);
        }
        s.next.store(0, Ordering::Relaxed);
        s.done.store(0, Ordering::Relaxed);
        s.generation.fetch_add(1, Ordering::Release);
        let mine =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| take_parts(s, job, count)));
        // Whatever happened here, the helpers may still be calling `job`: wait for them before
        // it goes out of scope.
        let idle = clock::start();
        let mut spins = 0u32;
        while s.done.load(Ordering::Acquire) < self.helpers.len() {
            wait(&mut spins);
        }
        clock::stop(idle, &clock::IDLE);
        if let Err(panic) = mine {
            std::panic::resume_unwind(panic);
        }
        assert!(
            !s.panicked.load(Ordering::Relaxed),
            "a CPU backend thread panicked"
        );
    }
}

#[cfg(not(target_arch = "wasm32"))]
impl Drop for Team {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        for helper in self.helpers.drain(..) {
            let _ = helper.join();
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn take_parts(s: &Shared, job: &(dyn Fn(usize) + Sync), count: usize) {
    loop {
        let i = s.next.fetch_add(1, Ordering::Relaxed);
        if i >= count {
            return;
        }
        job(i);
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn wait(spins: &mut u32) {
    if *spins < SPINS {
        *spins += 1;
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

/// A helper's life: wait for a new job, take parts of it until none are left, report done.
#[cfg(not(target_arch = "wasm32"))]
fn help(s: &Shared) {
    // Started by the leader, which flushes already; a helper never starts rayon's pool.
    let _flushed = super::subnormals::Flushed::here();
    let mut seen = 0;
    loop {
        // Waiting for the other threads to finish the region, then for the leader's work
        // between regions.
        let idle = clock::start();
        let mut spins = 0u32;
        loop {
            if s.stop.load(Ordering::Acquire) {
                clock::stop(idle, &clock::IDLE);
                return;
            }
            let generation = s.generation.load(Ordering::Acquire);
            if generation != seen {
                seen = generation;
                break;
            }
            wait(&mut spins);
        }
        clock::stop(idle, &clock::IDLE);
        // SAFETY: the leader stored the job before bumping `generation` (Release, seen above
        // with Acquire) and keeps the closure alive until this helper reports `done`.
        let (job, count) = unsafe { *s.job.get() };
        let job = unsafe { &*job };
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| take_parts(s, job, count)));
        if result.is_err() {
            s.panicked.store(true, Ordering::Relaxed);
        }
        s.done.fetch_add(1, Ordering::Release);
    }
}
