//! The training loop, independent of the hardware: epochs of shuffled batches fed to a
//! [`Backend`], the learning-rate schedule, evaluation, and checkpoints to resume from.
//! Whatever reads from the backend is `async` (a browser cannot block on a GPU readback); the
//! program blocks on those futures, the page awaits them.
//!
//! Each epoch's order is a permutation drawn from `(seed, epoch)` alone, so a run resumed from the
//! checkpoint of epoch k continues exactly as the uninterrupted run would have. Timing is the
//! caller's business (the core crate also runs in the browser, where clocks differ).
//!
//! A run may be one rank of several ([`Collective`]): each rank then trains on its share of every
//! global batch, the ranks' gradients are summed before each update, the epoch's stats and the
//! test set's evaluation are summed over the ranks' shares, and the ranks check at each epoch's
//! end that they still hold the same parameters. Alone, a run takes its steps in spans without
//! waiting for the device; in a group, each step waits for the sum of gradients.

use crate::backend::{Backend, Span, Split, Stats, StepHyper, Tensor};
use crate::checkpoint::{Checkpoint, TrainingState, WithinEpoch};
use crate::collective::{fingerprint, share, Collective, Fingerprint, SingleProcess};
use crate::config::TrainConfig;
use crate::data_spec::DataSpec;
use crate::dataset::Splits;
use crate::error::{Error, Result};
use crate::model::{init_params, Architecture, ParamLayout};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

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
    /// What the model's ends are made for (recorded in checkpoints).
    pub spec: DataSpec,
    /// Epochs completed.
    pub epoch: usize,
    /// Optimizer steps completed.
    pub step: u64,
    train_len: usize,
    /// Samples of the test set this backend holds (in a group, this rank's share).
    test_len: usize,
    /// The ranks this run trains with ([`SingleProcess`] when alone).
    group: Box<dyn Collective>,
    /// The epoch under way when it is trained a slice at a time.
    current: Option<EpochInProgress>,
    /// Stats of the epoch under way already taken out of the backend (by a mid-epoch
    /// checkpoint, or restored from one), added to the epoch's result when it ends.
    partial: Stats,
}

/// An epoch being trained in slices: its order and per-step values, and how far it got.
struct EpochInProgress {
    order: Vec<u32>,
    hypers: Vec<StepHyper>,
    done: usize,
}

impl Trainer {
    /// A fresh run: parameters initialised from the seed, the run's optimizer attached with its
    /// state zero, data uploaded. The backend must have been built for the run's architecture.
    pub fn new(config: TrainConfig, backend: Box<dyn Backend>, data: &Splits) -> Result<Self> {
        Self::in_group(config, backend, data, Box::new(SingleProcess))
    }

    /// A fresh run as one rank of `group`: every rank must call this with the same settings and
    /// data (they check that they did). Each rank uploads the whole training set and its share
    /// of the test set.
    pub fn in_group(
        config: TrainConfig,
        backend: Box<dyn Backend>,
        data: &Splits,
        group: Box<dyn Collective>,
    ) -> Result<Self> {
        Self::start(config, backend, data, &data.spec, group, None)
    }

    /// A run from its first epoch, or from where `resumed` left it.
    fn start(
        config: TrainConfig,
        mut backend: Box<dyn Backend>,
        data: &Splits,
        spec: &DataSpec,
        group: Box<dyn Collective>,
        resumed: Option<(&[f32], &TrainingState)>,
    ) -> Result<Self> {
        config.validate()?;
        let arch = config.architecture(spec)?;
        if *backend.layout() != ParamLayout::new(&arch) {
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
        let (mut epoch, mut step) = (0, 0);
        backend.attach_optimizer(&config.optimizer)?;
        match resumed {
            Some((params, state)) => {
                backend.write(Tensor::Params, params)?;
                let names = config.optimizer.kind.state_names();
                if state.optimizer_state.len() != names.len() {
                    return Err(Error::Config(format!(
                        "{} keeps {} state buffers ({}), {} were given",
                        config.optimizer.kind,
                        names.len(),
                        names.join(", "),
                        state.optimizer_state.len()
                    )));
                }
                for (k, buffer) in state.optimizer_state.iter().enumerate() {
                    backend.write(Tensor::State(k), buffer)?;
                }
                (epoch, step) = (state.epoch, state.step);
            }
            None => backend.write(Tensor::Params, &init_params(&arch, config.seed))?,
        }
        let ranks = group.ranks();
        if ranks > config.batch.min(data.test.len()) {
            return Err(Error::Config(format!(
                "{ranks} ranks cannot share a batch of {} samples and a test set of {}: run fewer ranks",
                config.batch,
                data.test.len()
            )));
        }
        backend.upload(Split::Train, &data.train)?;
        let test_len = if ranks == 1 {
            backend.upload(Split::Test, &data.test)?;
            data.test.len()
        } else {
            let mine: Vec<usize> = share(data.test.len(), group.rank(), ranks).collect();
            backend.upload(Split::Test, &data.test.select(&mine))?;
            same_start(&*group, &config, data, resumed)?;
            mine.len()
        };
        let mut trainer = Trainer {
            config,
            backend,
            data_name: data.name.clone(),
            spec: spec.clone(),
            epoch,
            step,
            train_len: data.train.len(),
            test_len,
            group,
            current: None,
            partial: Stats::default(),
        };
        if let Some(within) = resumed.and_then(|(_, state)| state.within_epoch) {
            trainer.resume_within_epoch(within)?;
        }
        Ok(trainer)
    }

    /// Continues the epoch a checkpoint was saved in the middle of, at the step it reached,
    /// with what its batches gave so far (on rank 0 alone: the ranks' stats are summed).
    fn resume_within_epoch(&mut self, within: WithinEpoch) -> Result<()> {
        if within.steps == 0 {
            return Ok(());
        }
        // The epoch's order and rates are drawn from the step count at its start.
        let at_start = self.step.checked_sub(within.steps as u64).ok_or_else(|| {
            Error::Config("the checkpoint's step count is below its position in the epoch".into())
        })?;
        let now = std::mem::replace(&mut self.step, at_start);
        self.begin_epoch()?;
        self.step = now;
        let current = self.current.as_mut().expect("begin_epoch ran");
        if within.steps >= current.hypers.len() {
            return Err(Error::Config(format!(
                "the checkpoint stopped at step {} of an epoch of {} steps",
                within.steps,
                current.hypers.len()
            )));
        }
        current.done = within.steps;
        if self.group.rank() == 0 {
            self.partial = Stats {
                loss_sum: within.loss_sum,
                correct: within.correct,
                count: within.count,
            };
        }
        Ok(())
    }

    /// Continues the run saved in `ckpt` (which must hold training state) up to `epochs` in all.
    pub fn resume(
        ckpt: &Checkpoint,
        epochs: usize,
        backend: Box<dyn Backend>,
        data: &Splits,
    ) -> Result<Self> {
        Self::resume_in_group(ckpt, epochs, backend, data, Box::new(SingleProcess))
    }

    /// [`Trainer::resume`] as one rank of `group`, whatever the number of ranks that saved it.
    pub fn resume_in_group(
        ckpt: &Checkpoint,
        epochs: usize,
        backend: Box<dyn Backend>,
        data: &Splits,
        group: Box<dyn Collective>,
    ) -> Result<Self> {
        let state = ckpt.training.as_ref().ok_or_else(|| {
            Error::checkpoint(
                &ckpt.name,
                "holds a model only, no optimizer state to resume from",
            )
        })?;
        let mut config = state.config.clone();
        config.epochs = epochs;
        ckpt.data.accepts(&data.spec, &data.name)?;
        Self::start(
            config,
            backend,
            data,
            &ckpt.data,
            group,
            Some((&ckpt.params, state)),
        )
    }

    /// Every rank's `value`, in rank order (a collective call: every rank makes it at the same
    /// point of the run; alone, the value itself).
    pub fn gather(&self, value: u64) -> Result<Vec<u64>> {
        self.group.gather_u64(value)
    }

    /// The network trained.
    pub fn architecture(&self) -> Result<Architecture> {
        self.config.architecture(&self.spec)
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

    /// Trains one epoch (or what is left of the one under way) and reads its stats;
    /// `progress(done, total)` follows its steps.
    pub async fn train_epoch(
        &mut self,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<EpochResult> {
        self.advance(usize::MAX, progress).await?;
        self.finish_epoch().await
    }

    /// Trains at most `max_steps` more steps of the current epoch (starting one if none is under
    /// way) and says whether all its steps are done; the epoch then ends with
    /// [`Trainer::finish_epoch`]. Alone, it hands the steps to the device as one span and reads
    /// nothing back (natively the GPU waits only to keep at most two chunks of steps queued). A caller that must stay responsive (the page) trains this way, yielding between
    /// calls; the steps, and so the results, are exactly those of [`Trainer::train_epoch`].
    pub async fn advance(
        &mut self,
        max_steps: usize,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<bool> {
        self.begin_epoch()?;
        let current = self.current.as_mut().expect("begin_epoch ran");
        let (start, total) = (current.done, current.hypers.len());
        let end = start.saturating_add(max_steps).min(total);
        let span = Span::new(&current.order, self.config.batch, &current.hypers)?
            .steps_between(start, end);
        if self.group.ranks() == 1 {
            if !span.is_empty() {
                self.backend
                    .train(span, &mut |done| progress(start + done, total))?;
            }
        } else {
            for (i, step) in span.steps().enumerate() {
                shared_step(&mut *self.backend, &*self.group, step.rows, step.hyper).await?;
                progress(start + i + 1, total);
            }
        }
        current.done = end;
        self.step += (end - start) as u64;
        Ok(end == total)
    }

    /// Ends an epoch whose steps are all done (see [`Trainer::advance`]), reading the stats its
    /// training batches accumulated.
    pub async fn finish_epoch(&mut self) -> Result<EpochResult> {
        let current = self
            .current
            .as_ref()
            .ok_or_else(|| Error::Config("finish_epoch needs an epoch under way".into()))?;
        if current.done != current.hypers.len() {
            return Err(Error::Config(format!(
                "finish_epoch after {} of the epoch's {} steps",
                current.done,
                current.hypers.len()
            )));
        }
        let lr = current
            .hypers
            .last()
            .map_or(self.config.optimizer.lr, |h| h.lr);
        let mut train = self.backend.take_stats(Split::Train).await?;
        train += std::mem::take(&mut self.partial);
        let train = self.sum_stats(train)?;
        if self.group.ranks() > 1 {
            self.check_same_params().await?;
        }
        self.current = None;
        self.epoch += 1;
        Ok(EpochResult {
            epoch: self.epoch,
            train,
            lr,
        })
    }

    /// Steps done and steps in all of the epoch under way ((0, steps per epoch) between epochs).
    pub fn epoch_progress(&self) -> (usize, usize) {
        self.current
            .as_ref()
            .map_or((0, self.steps_per_epoch()), |c| (c.done, c.hypers.len()))
    }

    /// Draws the next epoch's order and step values unless an epoch is under way.
    fn begin_epoch(&mut self) -> Result<()> {
        if self.current.is_some() {
            return Ok(());
        }
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
        Ok(())
    }

    /// Loss and accuracy on the test set (in a group, each rank evaluates its share).
    pub async fn evaluate(&mut self) -> Result<Stats> {
        let mine = self.backend.evaluate(Split::Test, self.test_len).await?;
        self.sum_stats(mine)
    }

    /// The ranks' stats summed (exactly: the counts stay below 2^53).
    fn sum_stats(&self, mine: Stats) -> Result<Stats> {
        let mut values = [mine.loss_sum, mine.correct as f64, mine.count as f64];
        self.group.sum_f64(&mut values)?;
        Ok(Stats {
            loss_sum: values[0],
            correct: values[1] as u64,
            count: values[2] as u64,
        })
    }

    /// Fails on every rank unless every rank holds bit-identical parameters.
    async fn check_same_params(&mut self) -> Result<()> {
        let mine = fingerprint(&self.backend.read(Tensor::Params).await?);
        let all = self.group.gather_u64(mine)?;
        match all.iter().position(|&h| h != all[0]) {
            None => Ok(()),
            Some(rank) => Err(Error::Config(format!(
                "after epoch {} rank {rank}'s parameters differ from rank 0's (fingerprints {:016x} and {:016x}): \
                 the ranks no longer train the same model",
                self.epoch + 1,
                all[rank],
                all[0]
            ))),
        }
    }

    /// The model and everything needed to resume, as a checkpoint: at an epoch's end, or in
    /// the middle of one (between `advance` calls), where it also holds how far the epoch got
    /// and what its batches gave so far (summed over the ranks of a group, every one of which
    /// must call this at the same step), so a resumed run continues at that step exactly, on
    /// any number of ranks.
    pub async fn checkpoint(&mut self) -> Result<Checkpoint> {
        let params = self.backend.read(Tensor::Params).await?;
        let architecture = self.architecture()?;
        let done = self.current.as_ref().map_or(0, |c| c.done);
        let training = {
            // Inside an epoch, what its batches gave so far, summed over the ranks (a collective
            // call: in a group every rank makes it at the same step).
            let within_epoch = if done > 0 {
                self.partial += self.backend.take_stats(Split::Train).await?;
                let mut sums = [
                    self.partial.loss_sum,
                    self.partial.correct as f64,
                    self.partial.count as f64,
                ];
                self.group.sum_f64(&mut sums)?;
                Some(WithinEpoch {
                    steps: done,
                    loss_sum: sums[0],
                    correct: sums[1] as u64,
                    count: sums[2] as u64,
                })
            } else {
                None
            };
            let mut optimizer_state = Vec::new();
            for k in 0..self.config.optimizer.kind.state_names().len() {
                optimizer_state.push(self.backend.read(Tensor::State(k)).await?);
            }
            Some(TrainingState {
                config: self.config.clone(),
                epoch: self.epoch,
                step: self.step,
                data: self.data_name.clone(),
                within_epoch,
                optimizer_state,
            })
        };
        Ok(Checkpoint {
            name: String::new(),
            architecture,
            data: self.spec.clone(),
            params,
            training,
        })
    }
}

/// One step as one rank of `group`: the gradient over this rank's share of the global batch
/// `rows`, its loss divided by the global batch's size, summed over the ranks (which makes the
/// gradient of the global batch's mean loss), then the update every rank makes alike.
async fn shared_step(
    backend: &mut dyn Backend,
    group: &dyn Collective,
    rows: &[u32],
    hyper: StepHyper,
) -> Result<()> {
    let mine = &rows[share(rows.len(), group.rank(), group.ranks())];
    let mut grads = if mine.is_empty() {
        // A short last batch can leave a rank nothing: it adds zero.
        vec![0.0; backend.layout().len]
    } else {
        backend.forward(Split::Train, mine, rows.len())?;
        backend.backward()?;
        backend.read(Tensor::GradsAsKept).await?
    };
    // Summed element by element, so in whatever order the backend keeps them.
    group.sum_f32(&mut grads)?;
    backend.write(Tensor::GradsAsKept, &grads)?;
    backend.update(hyper)
}

/// Fails on every rank unless every rank starts the same run: the same settings, the same data
/// to the byte, and the same checkpoint if resuming. Ranks that started apart would train
/// different models, or wait for each other in different steps.
fn same_start(
    group: &dyn Collective,
    config: &TrainConfig,
    data: &Splits,
    resumed: Option<(&[f32], &TrainingState)>,
) -> Result<()> {
    let settings = serde_json::to_vec(config).map_err(|e| Error::Config(e.to_string()))?;
    let mut print = Fingerprint::default().feed(&settings);
    for set in [&data.train, &data.test] {
        print = print
            .feed(&(set.len() as u64).to_le_bytes())
            .feed(set.features.as_bytes())
            .feed(bytemuck::cast_slice(&set.labels));
    }
    if let Some((params, state)) = resumed {
        print = print
            .feed(&state.step.to_le_bytes())
            .feed(bytemuck::cast_slice(params));
        for buffer in &state.optimizer_state {
            print = print.feed(bytemuck::cast_slice(buffer));
        }
    }
    let all = group.gather_u64(print.value())?;
    match all.iter().position(|&p| p != all[0]) {
        None => Ok(()),
        Some(rank) => Err(Error::Config(format!(
            "rank {rank} starts another run than rank 0 (other settings, data or checkpoint): \
             every rank must be given the same"
        ))),
    }
}
