//! Data-parallel training in the core, with ranks as threads of this test (the program's MPI
//! ranks are tested in native/tests/mpi.rs): ranks sharing each global batch train the model one
//! process trains with that batch, deterministically, and stop together when they diverge.

mod common;

use gpumlp::collective::Collective;
use gpumlp::train::EpochResult;
use gpumlp::{CpuBackend, Splits, Stats, TrainConfig, Trainer};
use pollster::block_on;
use std::sync::{Arc, Barrier, Mutex};

/// Ranks as threads: each deposits its values, waits for the others, and every rank reduces
/// the deposits in rank order (so every rank gets the same bits, as MPI promises).
struct Threads {
    rank: usize,
    ranks: usize,
    barrier: Arc<Barrier>,
    slots: Arc<Mutex<Vec<Vec<f64>>>>,
    /// Gets its sums of f32 slightly off in the first value (a fault to be caught).
    faulty: bool,
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
                faulty: false,
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
        if self.faulty {
            values[0] += 1e-3;
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

/// A rank's error (its run, if it had one, is too long to print).
fn error_of(result: gpumlp::Result<Run>) -> String {
    match result {
        Ok(_) => panic!("the rank trained to the end"),
        Err(e) => e.to_string(),
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

/// Trains `configs[r]` on rank `r` of a group of threads, all on the same data.
fn train_ranks(configs: Vec<TrainConfig>) -> Vec<gpumlp::Result<Run>> {
    let data = common::small_sample(1000, 300);
    train_ranks_on(configs.into_iter().map(|c| (c, data.clone())).collect())
}

/// Trains `ranks[r]`'s settings and data on rank `r` of a group of threads (all the same unless
/// a test wants a rank to differ); returns every rank's run, or its first error.
fn train_ranks_on(ranks: Vec<(TrainConfig, Splits)>) -> Vec<gpumlp::Result<Run>> {
    train_group(Threads::group(ranks.len()), ranks)
}

fn train_group(group: Vec<Threads>, ranks: Vec<(TrainConfig, Splits)>) -> Vec<gpumlp::Result<Run>> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = group
            .into_iter()
            .zip(ranks)
            .map(|(ranks, (config, data))| {
                scope.spawn(move || {
                    let data = &data;
                    let arch = config.architecture(&data.spec)?;
                    let backend = Box::new(CpuBackend::new(&arch));
                    let mut t = Trainer::in_group(config, backend, data, Box::new(ranks))?;
                    let mut epochs = Vec::new();
                    while !t.finished() {
                        let e = block_on(t.train_epoch(&mut |_, _| {}))?;
                        epochs.push((e, block_on(t.evaluate())?));
                    }
                    Ok((epochs, block_on(t.backend.read(gpumlp::Tensor::Params))?))
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
    let data = common::small_sample(1000, 300);
    let mut group = Threads::group(2);
    group[1].faulty = true;
    for result in train_group(group, vec![(config(1), data); 2]) {
        let err = error_of(result);
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
        let err = error_of(result);
        assert!(err.contains("3 ranks cannot share a batch of 2"), "{err}");
    }
}

#[test]
fn ranks_given_other_data_or_settings_are_refused_before_training() {
    let data = common::small_sample(1000, 300);
    let mut other = data.clone();
    other.train.labels[999] = (other.train.labels[999] + 1) % 10;
    let mut seed = config(1);
    seed.seed += 1;
    for second in [(config(1), other), (seed, data.clone())] {
        for result in train_ranks_on(vec![(config(1), data.clone()), second]) {
            let err = error_of(result);
            assert!(
                err.contains("rank 1 starts another run than rank 0"),
                "{err}"
            );
        }
    }
}
