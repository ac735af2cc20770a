//! Data-parallel training in the core, with ranks as threads of this test (the program's MPI
//! ranks are tested in native/tests/mpi.rs): ranks sharing each global batch train the model one
//! process trains with that batch, deterministically, and stop together when they diverge.

mod common;

use gpumlp::collective::Collective;
use gpumlp::train::EpochResult;
use gpumlp::{CpuBackend, Stats, TrainConfig, Trainer};
use pollster::block_on;
use std::sync::{Arc, Barrier, Mutex};

/// Ranks as threads: each deposits its values, waits for the others, and every rank reduces
/// the deposits in rank order (so every rank gets the same bits, as MPI promises).
struct Threads {
    rank: usize,
    ranks: usize,
    barrier: Arc<Barrier>,
    slots: Arc<Mutex<Vec<Vec<f64>>>>,
}

impl Threads {
    fn group(ranks: usize) -> Vec<Threads> {
        let barrier = Arc::new(Barrier::new(ranks));
        let slots = Arc::new(Mutex::new(vec![Vec::new(); ranks]));
        (0..ranks)
            .map(|rank| Threads {
                rank,
                ranks,
                barrier: barrier.clone(),
                slots: slots.clone(),
            })
            .collect()
    }

    fn exchange(&self, mine: Vec<f64>) -> Vec<Vec<f64>> {
        self.slots.lock().unwrap()[self.rank] = mine;
        self.barrier.wait();
        let all = self.slots.lock().unwrap().clone();
        // Nobody deposits the next values before everyone has read these.
        self.barrier.wait();
        all
    }
}

impl Collective for Threads {
    fn rank(&self) -> usize {
        self.rank
    }
    fn ranks(&self) -> usize {
        self.ranks
    }
    fn sum_f32(&self, values: &mut [f32]) -> gpumlp::Result<()> {
        let all = self.exchange(values.iter().map(|&v| v as f64).collect());
        for (i, v) in values.iter_mut().enumerate() {
            *v = all.iter().fold(0.0f32, |s, r| s + r[i] as f32);
        }
        Ok(())
    }
    fn sum_f64(&self, values: &mut [f64]) -> gpumlp::Result<()> {
        let all = self.exchange(values.to_vec());
        for (i, v) in values.iter_mut().enumerate() {
            *v = all.iter().fold(0.0, |s, r| s + r[i]);
        }
        Ok(())
    }
    fn gather_u64(&self, value: u64) -> gpumlp::Result<Vec<u64>> {
        // u64 -> f64 is exact below 2^53: send the value as two halves.
        let all = self.exchange(vec![(value >> 32) as f64, (value & 0xffff_ffff) as f64]);
        Ok(all
            .iter()
            .map(|r| ((r[0] as u64) << 32) | r[1] as u64)
            .collect())
    }
}

fn config(epochs: usize) -> TrainConfig {
    TrainConfig {
        hidden: vec![32],
        epochs,
        batch: 64,
        seed: 11,
        ..TrainConfig::default()
    }
}

/// What one rank saw: each epoch's result and test stats, and the final parameters.
type Run = (Vec<(EpochResult, Stats)>, Vec<f32>);

/// Trains `configs[r]` on rank `r` of a group of threads (all the same unless a test wants a
/// rank to differ); returns every rank's run, or its first error.
fn train_ranks(configs: Vec<TrainConfig>) -> Vec<gpumlp::Result<Run>> {
    let data = common::small_sample(1000, 300);
    let group = Threads::group(configs.len());
    std::thread::scope(|scope| {
        let handles: Vec<_> = group
            .into_iter()
            .zip(configs)
            .map(|(ranks, config)| {
                let data = &data;
                scope.spawn(move || {
                    let arch = config.architecture()?;
                    let backend = Box::new(CpuBackend::new(&arch, &config.optimizer));
                    let mut t = Trainer::in_group(config, backend, data, Box::new(ranks))?;
                    let mut epochs = Vec::new();
                    while !t.finished() {
                        let e = block_on(t.train_epoch(&mut |_, _| {}))?;
                        epochs.push((e, block_on(t.evaluate())?));
                    }
                    Ok((epochs, block_on(t.backend.params())?))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn two_ranks_train_the_model_one_process_trains() {
    let alone = train_ranks(vec![config(2)]).pop().unwrap().unwrap();
    let pair: Vec<Run> = train_ranks(vec![config(2); 2])
        .into_iter()
        .map(Result::unwrap)
        .collect();
    // The ranks agree to the bit (checked by the trainer, and here).
    assert_eq!(pair[0], pair[1]);
    let (epochs, params) = &pair[0];
    // 1000 samples in batches of 64: the last batch of 40 is shared 20/20.
    for ((got, got_test), (want, want_test)) in epochs.iter().zip(&alone.0) {
        assert_eq!(got.epoch, want.epoch);
        assert_eq!(got.train.count, 1000);
        assert_eq!(got_test.count, 300, "each rank evaluates its half");
        assert!((got.train.loss() - want.train.loss()).abs() < 1e-4);
        assert!((got_test.loss() - want_test.loss()).abs() < 1e-4);
        assert!((got_test.accuracy() - want_test.accuracy()).abs() <= 2.0 / 300.0);
    }
    common::assert_close("parameters after 2 epochs", params, &alone.1, 1e-4, 1e-3);
}

#[test]
fn ranks_are_deterministic_and_share_uneven_batches() {
    // Three ranks share batches of 64 as 22/21/21 and the last batch of 40 as 14/13/13.
    let first: Vec<Run> = train_ranks(vec![config(1); 3])
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let second: Vec<Run> = train_ranks(vec![config(1); 3])
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(first, second);
    let alone = train_ranks(vec![config(1)]).pop().unwrap().unwrap();
    common::assert_close("parameters", &first[2].1, &alone.1, 1e-4, 1e-3);
}

#[test]
fn ranks_that_diverge_stop_together() {
    let mut other = config(1);
    other.optimizer.lr *= 2.0;
    for result in train_ranks(vec![config(1), other]) {
        let err = result.unwrap_err().to_string();
        assert!(
            err.contains("rank 1's parameters differ from rank 0's"),
            "{err}"
        );
    }
}

#[test]
fn more_ranks_than_a_batch_holds_are_refused() {
    let mut tiny = config(1);
    tiny.batch = 2;
    for result in train_ranks(vec![tiny; 3]) {
        let err = result.unwrap_err().to_string();
        assert!(err.contains("3 ranks cannot share a batch of 2"), "{err}");
    }
}
