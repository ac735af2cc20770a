//! Which process of a data-parallel job this is: started by an MPI launcher (`mpirun`,
//! `mpiexec`, `srun`) it is one rank of several, found out from the launcher's environment;
//! otherwise it is alone and nothing changes.
//!
//! MPI is a cargo feature (`--features mpi`, the `mpi` crate over the system's Open MPI or
//! MPICH), because it needs the MPI library to build. A build without it that finds itself
//! started as one of several ranks refuses to run, rather than train the same model N times
//! over and write the same files at once.
//!
//! Failure policy: a rank that fails prints its error and aborts the whole job with exit status 2
//! (`MPI_Abort`), so no rank is left waiting in a collective for one that is gone; a rank that is
//! killed is noticed by the launcher, which ends the others. Only rank 0 writes files, each
//! atomically, so the last checkpoint stays whole either way.

use anyhow::{bail, Result};
use gpumlp::collective::{Collective, SingleProcess};
use serde::Serialize;
use std::cell::Cell;
use std::rc::Rc;

/// What this rank's all-reduces moved and how long they took (its own part of each sum), for
/// the summary: `bytes` is what it contributed, summed over the calls.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Traffic {
    pub calls: u64,
    pub bytes: u64,
    pub seconds: f64,
}

/// Environment variables by which launchers tell a process its rank (Open MPI, MPICH/Hydra and
/// Intel MPI, PMIx as Slurm's `srun --mpi=pmix` sets it, MVAPICH).
const LAUNCHER_RANK: [&str; 4] = [
    "OMPI_COMM_WORLD_RANK",
    "PMI_RANK",
    "PMIX_RANK",
    "MV2_COMM_WORLD_RANK",
];
/// ... and the job's size, where the launcher says it (read only by a build without MPI).
#[cfg(not(feature = "mpi"))]
const LAUNCHER_SIZE: [&str; 4] = [
    "OMPI_COMM_WORLD_SIZE",
    "PMI_SIZE",
    "SLURM_NTASKS",
    "MV2_COMM_WORLD_SIZE",
];

/// This process's place in the job.
pub struct Job {
    /// 0-based rank, and the number of ranks.
    pub rank: usize,
    pub ranks: usize,
    /// Rank among the ranks on this machine, and their number (one device each).
    pub local_rank: usize,
    pub local_ranks: usize,
    /// Filled in by the collectives the trainer runs.
    traffic: Rc<Cell<Traffic>>,
    #[cfg(feature = "mpi")]
    mpi: Option<mpi_job::Mpi>,
}

impl Job {
    /// A process on its own.
    pub fn alone() -> Self {
        Job {
            rank: 0,
            ranks: 1,
            local_rank: 0,
            local_ranks: 1,
            traffic: Rc::default(),
            #[cfg(feature = "mpi")]
            mpi: None,
        }
    }

    /// The job this process belongs to: joins MPI when a launcher started it (and this build
    /// has MPI), else [`Job::alone`].
    pub fn start() -> Result<Self> {
        if !LAUNCHER_RANK.iter().any(|v| std::env::var_os(v).is_some()) {
            return Ok(Job::alone());
        }
        #[cfg(feature = "mpi")]
        {
            let job = mpi_job::join()?;
            if job.local_ranks > 1 {
                share_cores(job.local_ranks);
            }
            Ok(job)
        }
        #[cfg(not(feature = "mpi"))]
        {
            let size = LAUNCHER_SIZE
                .iter()
                .find_map(|v| std::env::var(v).ok()?.parse::<usize>().ok());
            match size {
                Some(n) if n > 1 => bail!(
                    "started by an MPI launcher as one of {n} ranks, but this gpumlp was built without MPI: \
                     build it with `cargo build --release --features mpi` (each rank would otherwise train alone)"
                ),
                _ => Ok(Job::alone()),
            }
        }
    }

    /// Whether this is the rank that prints and writes (rank 0, or the only process).
    pub fn leads(&self) -> bool {
        self.rank == 0
    }

    /// The collective operations the trainer sums gradients and stats with.
    pub fn collective(&self) -> Box<dyn Collective> {
        #[cfg(feature = "mpi")]
        if let Some(mpi) = &self.mpi {
            return Box::new(mpi.group(self.traffic.clone()));
        }
        Box::new(SingleProcess)
    }

    /// The all-reduces of this rank's collectives so far.
    pub fn traffic(&self) -> Traffic {
        self.traffic.get()
    }

    /// Every rank's `text`, in rank order (rank 0 needs them for the summary).
    pub fn gather_text(&self, text: &str) -> Vec<String> {
        #[cfg(feature = "mpi")]
        if let Some(mpi) = &self.mpi {
            return mpi.gather_text(text);
        }
        vec![text.to_string()]
    }

    /// Prints `error` (one line) and ends with exit status 2: alone by returning it; in a job of
    /// several ranks by aborting them all (the others may be waiting for this one). A rank
    /// other than 0 waits a moment first: when every rank fails alike (a bad flag), rank 0's
    /// abort ends it before it repeats the same line.
    pub fn fail(&self, error: &str) -> std::process::ExitCode {
        use std::io::Write;
        if self.ranks > 1 && !self.leads() {
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
        // One write, so lines from ranks sharing a terminal do not interleave.
        let _ = std::io::stderr().write_all(format!("{error}\n").as_bytes());
        #[cfg(feature = "mpi")]
        if let Some(mpi) = &self.mpi {
            if self.ranks > 1 {
                mpi.abort(2);
            }
        }
        std::process::ExitCode::from(2)
    }

    /// Refuses commands that make no sense on several ranks at once.
    pub fn only_alone(&self, command: &str) -> Result<()> {
        if self.ranks > 1 {
            bail!(
                "`gpumlp {command}` runs in one process; of the commands only `gpumlp train` runs on several ranks: start it without the MPI launcher"
            );
        }
        Ok(())
    }
}

/// Splits this machine's cores among its `local_ranks` ranks for the CPU backend (unless
/// RAYON_NUM_THREADS says otherwise): each rank's pool gets an equal share, at least one.
#[cfg(feature = "mpi")]
fn share_cores(local_ranks: usize) {
    if std::env::var_os("RAYON_NUM_THREADS").is_some() {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = (cores / local_ranks).max(1);
    // Fails only if the pool already exists, which nothing has started yet.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global();
}

#[cfg(feature = "mpi")]
mod mpi_job {
    use super::{Job, Traffic};
    use anyhow::{anyhow, Result};
    use gpumlp::collective::Collective;
    use mpi::collective::SystemOperation;
    use mpi::environment::Universe;
    use mpi::topology::SimpleCommunicator;
    use mpi::traits::*;
    use std::cell::Cell;
    use std::rc::Rc;
    use std::time::Instant;

    /// MPI, initialised; finalised when dropped (at the end of `main`).
    pub struct Mpi {
        _universe: Universe,
        world: SimpleCommunicator,
    }

    pub fn join() -> Result<Job> {
        // Only the main thread calls MPI (rayon's and wgpu's threads never do).
        let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Funneled)
            .ok_or_else(|| anyhow!("MPI could not be initialised"))?;
        let world = universe.world();
        let (rank, ranks) = (world.rank() as usize, world.size() as usize);
        let (local_rank, local_ranks) = {
            let node = world.split_shared(world.rank());
            (node.rank() as usize, node.size() as usize)
        };
        Ok(Job {
            rank,
            ranks,
            local_rank,
            local_ranks,
            traffic: Rc::default(),
            mpi: Some(Mpi {
                _universe: universe,
                world,
            }),
        })
    }

    impl Mpi {
        pub fn group(&self, traffic: Rc<Cell<Traffic>>) -> Group {
            Group {
                world: self.world.duplicate(),
                traffic,
            }
        }

        pub fn gather_text(&self, text: &str) -> Vec<String> {
            let ranks = self.world.size() as usize;
            let mut lengths = vec![0u64; ranks];
            self.world
                .all_gather_into(&(text.len() as u64), &mut lengths[..]);
            let width = lengths.iter().copied().max().unwrap_or(0) as usize;
            let mut mine = text.as_bytes().to_vec();
            mine.resize(width, 0);
            let mut all = vec![0u8; width * ranks];
            self.world.all_gather_into(&mine[..], &mut all[..]);
            all.chunks(width.max(1))
                .zip(&lengths)
                .map(|(bytes, &n)| String::from_utf8_lossy(&bytes[..n as usize]).into_owned())
                .collect()
        }

        pub fn abort(&self, status: i32) -> ! {
            self.world.abort(status)
        }
    }

    /// The trainer's view of the ranks: its own communicator, so its collectives never mix
    /// with the program's.
    pub struct Group {
        world: SimpleCommunicator,
        traffic: Rc<Cell<Traffic>>,
    }

    impl Group {
        /// Sums `values` over the ranks, counting the traffic.
        fn sum<T: Equivalence + Copy>(&self, values: &mut [T]) {
            let start = Instant::now();
            let mine = values.to_vec();
            self.world
                .all_reduce_into(&mine[..], values, SystemOperation::sum());
            let mut t = self.traffic.get();
            t.calls += 1;
            t.bytes += std::mem::size_of_val(values) as u64;
            t.seconds += start.elapsed().as_secs_f64();
            self.traffic.set(t);
        }
    }

    impl Collective for Group {
        fn rank(&self) -> usize {
            self.world.rank() as usize
        }
        fn ranks(&self) -> usize {
            self.world.size() as usize
        }
        fn sum_f32(&self, values: &mut [f32]) -> gpumlp::Result<()> {
            self.sum(values);
            Ok(())
        }
        fn sum_f64(&self, values: &mut [f64]) -> gpumlp::Result<()> {
            self.sum(values);
            Ok(())
        }
        fn gather_u64(&self, value: u64) -> gpumlp::Result<Vec<u64>> {
            let mut all = vec![0u64; self.ranks()];
            self.world.all_gather_into(&value, &mut all[..]);
            Ok(all)
        }
    }
}
