//! The training loop, independent of the hardware: epochs of shuffled batches fed to a
//! [`Backend`], the learning-rate schedule, evaluation, and checkpoints to resume from.
//!
//! Each epoch's order is a permutation drawn from `(seed, epoch)` alone, so a run resumed from the
//! checkpoint of epoch k continues exactly as the uninterrupted run would have. Timing is the
//! caller's business (the core crate also runs in the browser, where clocks differ).

use crate::backend::{Backend, Split, Stats, StepHyper};
use crate::checkpoint::{Checkpoint, TrainingState};
use crate::dataset::Splits;
use crate::error::{Error, Result};
use crate::model::{init_params, Architecture};
use crate::optim::{OptimizerConfig, OptimizerKind, Schedule};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Largest batch accepted (bigger ones would only hide a typo).
pub const MAX_BATCH: usize = 65_536;
/// Most epochs accepted in one run.
pub const MAX_EPOCHS: usize = 100_000;

/// Everything that decides a training run's result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Hidden layer widths.
    pub hidden: Vec<usize>,
    /// Total epochs of the run (the schedule spans them all).
    pub epochs: usize,
    pub batch: usize,
    pub optimizer: OptimizerConfig,
    pub schedule: Schedule,
    pub seed: u64,
}

impl Default for TrainConfig {
    /// The defaults of `gpumlp train`: they reach the accuracy README.md states on the sample.
    fn default() -> Self {
        TrainConfig {
            hidden: vec![512, 256],
            epochs: 20,
            batch: 128,
            optimizer: OptimizerConfig::new(OptimizerKind::Adam),
            schedule: Schedule::Cosine,
            seed: 1,
        }
    }
}

impl TrainConfig {
    pub fn architecture(&self) -> Result<Architecture> {
        Architecture::mlp(&self.hidden)
    }

    /// Rejects settings that cannot train, naming the flag.
    pub fn validate(&self) -> Result<()> {
        if self.hidden.is_empty() {
            return Err(Error::Config(
                "--hidden needs at least one layer width".into(),
            ));
        }
        self.architecture()?;
        if self.batch == 0 || self.batch > MAX_BATCH {
            return Err(Error::Config(format!(
                "--batch {} is out of range: it must be between 1 and {MAX_BATCH}",
                self.batch
            )));
        }
        if self.epochs == 0 || self.epochs > MAX_EPOCHS {
            return Err(Error::Config(format!(
                "--epochs {} is out of range: it must be between 1 and {MAX_EPOCHS}",
                self.epochs
            )));
        }
        self.optimizer.validate()
    }
}

/// The order in which epoch `epoch` (0-based) visits `n` training samples.
pub fn epoch_order(seed: u64, epoch: usize, n: usize) -> Vec<u32> {
    let mut order: Vec<u32> = (0..n as u32).collect();
    // Distinct, well-mixed stream per (seed, epoch): ChaCha takes the epoch as its stream number.
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch as u64);
    order.shuffle(&mut rng);
    order
}

/// What one epoch of training did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EpochResult {
    /// 1-based number of the epoch just finished.
    pub epoch: usize,
    /// Loss and accuracy on the training batches, as they were seen during the epoch.
    pub train: Stats,
    /// Learning rate of the epoch's last step.
    pub lr: f32,
}

/// A run in progress: the configuration, the backend holding the model, and how far it got.
/// The backend's training-set stats belong to the trainer: each epoch's result is what
/// accumulated since the previous epoch ended.
pub struct Trainer {
    pub config: TrainConfig,
    pub backend: Box<dyn Backend>,
    /// Name of the data it trains on (recorded in checkpoints).
    pub data_name: String,
    /// Epochs completed.
    pub epoch: usize,
    /// Optimizer steps completed.
    pub step: u64,
    train_len: usize,
    /// The epoch under way when it is trained a slice at a time.
    current: Option<EpochInProgress>,
}

/// An epoch being trained in slices: its order and per-step values, and how far it got.
struct EpochInProgress {
    order: Vec<u32>,
    hypers: Vec<StepHyper>,
    done: usize,
}

impl Trainer {
    /// A fresh run: parameters initialised from the seed, data uploaded to the backend.
    pub fn new(config: TrainConfig, mut backend: Box<dyn Backend>, data: &Splits) -> Result<Self> {
        config.validate()?;
        let arch = config.architecture()?;
        if *backend.layout() != crate::model::ParamLayout::new(&arch) {
            return Err(Error::Config(
                "the backend was built for another architecture".into(),
            ));
        }
        if data.train.is_empty() || data.test.is_empty() {
            return Err(Error::Config(format!(
                "data {}: the training and test sets must both hold samples",
                data.name
            )));
        }
        backend.set_params(&init_params(&arch, config.seed));
        let n = backend.layout().len;
        backend.set_optimizer_state(&vec![0.0; n], &vec![0.0; n]);
        backend.upload(Split::Train, &data.train)?;
        backend.upload(Split::Test, &data.test)?;
        Ok(Trainer {
            config,
            backend,
            data_name: data.name.clone(),
            epoch: 0,
            step: 0,
            train_len: data.train.len(),
            current: None,
        })
    }

    /// Continues the run saved in `ckpt` (which must hold training state) up to `epochs` in all.
    pub fn resume(
        ckpt: &Checkpoint,
        epochs: usize,
        backend: Box<dyn Backend>,
        data: &Splits,
    ) -> Result<Self> {
        let state = ckpt.training.as_ref().ok_or_else(|| {
            Error::checkpoint(
                &ckpt.name,
                "holds a model only, no optimizer state to resume from",
            )
        })?;
        let mut config = state.config.clone();
        config.epochs = epochs;
        let mut trainer = Trainer::new(config, backend, data)?;
        trainer.backend.set_params(&ckpt.params);
        trainer.backend.set_optimizer_state(&state.m, &state.v);
        trainer.epoch = state.epoch;
        trainer.step = state.step;
        Ok(trainer)
    }

    pub fn steps_per_epoch(&self) -> usize {
        self.train_len.div_ceil(self.config.batch)
    }

    pub fn total_steps(&self) -> u64 {
        (self.steps_per_epoch() * self.config.epochs) as u64
    }

    pub fn finished(&self) -> bool {
        self.epoch >= self.config.epochs
    }

    /// Trains one epoch (or what is left of the one under way); `progress(done, total)` follows
    /// its steps.
    pub fn train_epoch(&mut self, progress: &mut dyn FnMut(usize, usize)) -> Result<EpochResult> {
        let total = self.begin_epoch()?;
        self.run_steps(total, progress)?;
        Ok(self.finish_epoch())
    }

    /// Trains at most `max_steps` more steps of the current epoch (starting one if none is under
    /// way) and returns the epoch's result once its last step is done. A caller that must stay
    /// responsive trains this way, yielding between calls; the steps, and so the results, are
    /// exactly those of [`Trainer::train_epoch`].
    pub fn train_steps(&mut self, max_steps: usize) -> Result<Option<EpochResult>> {
        Ok(if self.advance(max_steps)? {
            Some(self.finish_epoch())
        } else {
            None
        })
    }

    /// Trains at most `max_steps` more steps of the current epoch (starting one if needed), and
    /// says whether all its steps are done; the epoch then ends with `finish_epoch(_async)`.
    /// With a GPU backend nothing here waits for the device.
    pub fn advance(&mut self, max_steps: usize) -> Result<bool> {
        let total = self.begin_epoch()?;
        let done = self.epoch_progress().0;
        self.run_steps((done + max_steps).min(total), &mut |_, _| {})?;
        Ok(self.epoch_progress().0 == total)
    }

    /// Ends an epoch whose steps are all done, reading its stats without blocking (browsers).
    pub async fn finish_epoch_async(&mut self) -> EpochResult {
        let (epoch, lr) = self.close_epoch();
        EpochResult {
            epoch,
            train: self.backend.take_stats_async(Split::Train).await,
            lr,
        }
    }

    /// Loss and accuracy on the test set, without blocking (browsers).
    pub async fn evaluate_async(&mut self) -> Result<Stats> {
        self.backend.evaluate_async(Split::Test).await
    }

    /// Steps done and steps in all of the epoch under way ((0, steps per epoch) between epochs).
    pub fn epoch_progress(&self) -> (usize, usize) {
        self.current
            .as_ref()
            .map_or((0, self.steps_per_epoch()), |c| (c.done, c.hypers.len()))
    }

    /// Draws the next epoch's order and step values unless an epoch is under way; returns its steps.
    fn begin_epoch(&mut self) -> Result<usize> {
        if self.current.is_none() {
            if self.finished() {
                return Err(Error::Config(format!(
                    "the run's {} epochs are done",
                    self.config.epochs
                )));
            }
            let total = self.total_steps();
            let opt = self.config.optimizer;
            let hypers = (1..=self.steps_per_epoch() as u64)
                .map(|i| StepHyper {
                    lr: self.config.schedule.lr(opt.lr, self.step + i - 1, total),
                    t: self.step + i,
                })
                .collect();
            let order = epoch_order(self.config.seed, self.epoch, self.train_len);
            self.current = Some(EpochInProgress {
                order,
                hypers,
                done: 0,
            });
        }
        Ok(self.epoch_progress().1)
    }

    /// Trains the current epoch's steps up to `end`.
    fn run_steps(&mut self, end: usize, progress: &mut dyn FnMut(usize, usize)) -> Result<()> {
        let batch = self.config.batch;
        let current = self.current.as_mut().expect("begin_epoch ran");
        let (start, total) = (current.done, current.hypers.len());
        if end > start {
            let rows = &current.order[start * batch..(end * batch).min(current.order.len())];
            self.backend.train_epoch(
                rows,
                batch,
                &self.config.optimizer,
                &current.hypers[start..end],
                &mut |done, _| progress(start + done, total),
            )?;
            current.done = end;
            self.step += (end - start) as u64;
        }
        Ok(())
    }

    /// Ends an epoch whose steps are all done (see [`Trainer::advance`]).
    pub fn finish_epoch(&mut self) -> EpochResult {
        let (epoch, lr) = self.close_epoch();
        EpochResult {
            epoch,
            train: self.backend.take_stats(Split::Train),
            lr,
        }
    }

    /// Counts the finished epoch; returns its number and its last learning rate.
    fn close_epoch(&mut self) -> (usize, f32) {
        let current = self.current.take().expect("an epoch was under way");
        assert_eq!(
            current.done,
            current.hypers.len(),
            "finish_epoch before the epoch's last step"
        );
        self.epoch += 1;
        (
            self.epoch,
            current
                .hypers
                .last()
                .map_or(self.config.optimizer.lr, |h| h.lr),
        )
    }

    /// Loss and accuracy on the test set.
    pub fn evaluate(&mut self) -> Result<Stats> {
        self.backend.evaluate(Split::Test)
    }

    /// The model and everything needed to resume, as a checkpoint. In the middle of an epoch
    /// (between `train_steps` calls) it holds the model only: a run resumes at epoch boundaries.
    pub fn checkpoint(&mut self) -> Checkpoint {
        let params = self.backend.params();
        let architecture = self.config.architecture().expect("validated in new");
        if self.current.is_some() {
            return Checkpoint {
                name: String::new(),
                architecture,
                params,
                training: None,
            };
        }
        let (m, v) = self.backend.optimizer_state();
        Checkpoint {
            name: String::new(),
            architecture,
            params,
            training: Some(TrainingState {
                config: self.config.clone(),
                epoch: self.epoch,
                step: self.step,
                data: self.data_name.clone(),
                m,
                v,
            }),
        }
    }
}
