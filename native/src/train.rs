//! `gpumlp train`: settings from flags (or from the checkpoint being resumed), data, the epoch
//! loop with progress on stderr, and the outputs: checkpoint and metrics after every epoch (each
//! written atomically, so an interrupted run leaves whole files to resume from), the plot at the
//! end, and the summary on stdout.
//!
//! As one rank of a data-parallel job ([`Job`]) every rank trains; rank 0 alone prints and
//! writes the outputs.

use crate::cli::TrainArgs;
use crate::data;
use crate::files::{check_writable, write_atomic};
use crate::interrupt::{Interrupted, Signal, Stop, TestSignal};
use crate::ranks::Job;
use crate::{devices, plot, progress};
use anyhow::{bail, Context, Result};
use gpumlp::data_spec::ReadOptions;
use gpumlp::{Checkpoint, OptimizerConfig, TrainConfig, Trainer};
use pollster::block_on;
use serde_json::json;
use std::time::Instant;

pub fn run(args: TrainArgs, notice: &mut dyn FnMut(&str, &str), job: &Job) -> Result<()> {
    // Rank 0 alone prints and writes, so it alone checks the output paths.
    let lead = job.leads();
    let outputs = [
        ("--save", &args.save),
        ("--metrics", &args.metrics),
        ("--plot", &args.plot),
    ];
    if args.save_every.is_some() && (args.save.is_none() || job.ranks > 1) {
        bail!("--save-every: needs --save, and a single process (not several ranks)");
    }
    for (flag, path) in outputs.into_iter().filter(|_| lead) {
        if let Some(path) = path {
            check_writable(flag, path)?;
        }
    }
    let resume = match &args.resume {
        Some(path) => Some(Checkpoint::from_bytes(
            &path.display().to_string(),
            &crate::files::read(path)?,
        )?),
        None => None,
    };
    let config = settings(&args, resume.as_ref())?;
    config.validate()?;
    // The device first: a missing one, or one that cannot run the precision asked for, fails
    // before any data is read.
    let gpu = devices::open_gpu(&args.device.device, job)?;
    devices::check_precision(gpu.as_ref(), config.precision)?;

    // The checkpoint resumed and its training state.
    let saved = resume
        .as_ref()
        .and_then(|c| Some((c, c.training.as_ref()?)));
    if let Some((_, state)) = saved {
        if state.epoch >= config.epochs {
            bail!(
                "--resume {}: the run already did {} epochs; ask for more with --epochs",
                args.resume.as_ref().unwrap().display(),
                state.epoch
            );
        }
    }
    let source = data::choose(&args.data, resume.as_ref())?;
    let reading = match &resume {
        Some(ckpt) => {
            if args.label.is_some() || args.test_fraction.is_some() || args.standardize {
                bail!(
                    "--label, --test-fraction and --standardize: a resumed run reads its data as {} records",
                    ckpt.name
                );
            }
            data::Reading::like(&ckpt.data)
        }
        None => data::Reading {
            read: ReadOptions {
                label: args.label.clone(),
                test_fraction: args.test_fraction,
                standardize: args.standardize,
            },
            model: None,
        },
    };
    let data = data::load(&source, &reading, notice)?;
    if let Some(whole) = args.hidden.as_ref().filter(|h| h.whole).map(|h| &h.network) {
        let (inputs, classes) = (whole.sizes[0], whole.sizes[whole.layers()]);
        if (inputs, classes) != (data.spec.features, data.spec.classes) {
            bail!(
                "--hidden {whole}: {} has {} features and {} classes; give the hidden widths alone ({})",
                data.name,
                data.spec.features,
                data.spec.classes,
                whole.hidden().iter().map(usize::to_string).collect::<Vec<_>>().join(",")
            );
        }
    }
    let arch = match &resume {
        Some(ckpt) => ckpt.architecture.clone(),
        None => config.architecture(&data.spec)?,
    };
    let (backend, tuning, device_loss) = devices::on(gpu, &arch, config.precision)?;
    if let Some((ckpt, state)) = saved.filter(|_| lead) {
        resume_notes(&args, ckpt, state, &config);
    }
    let group = job.collective();
    let mut trainer = match &resume {
        Some(ckpt) => Trainer::resume_in_group(ckpt, config.epochs, backend, &data, group)?,
        None => Trainer::in_group(config, backend, &data, group)?,
    };
    let device = trainer.backend.device();
    let rank_devices = job.gather_text(&device.name);
    let on = devices_text(&rank_devices);
    if lead {
        eprintln!(
            "training {} ({}) on {} ({} train / {} test) with {} on {on}, epochs {}..{}",
            arch,
            arch.activation,
            data.name,
            data.train.len(),
            data.test.len(),
            trainer.config.optimizer,
            trainer.epoch + 1,
            trainer.config.epochs
        );
    }

    // Every process stops cleanly on SIGTERM or SIGINT; the ranks of a job agree after every
    // slice whether any was asked to, so all stop at the same step.
    let stop = Stop::install()?;
    let requested = |trainer: &Trainer| -> Result<Option<Signal>> {
        let mine = stop.requested();
        if job.ranks == 1 {
            return Ok(mine);
        }
        let all = trainer.gather(mine.map_or(0, |s| s.number() as u64))?;
        Ok(all.into_iter().find_map(|n| Signal::from_number(n as i32)))
    };
    let test_signal = TestSignal::from_env(job.rank)?;
    let mut since_save = 0u64;
    let mut metrics = String::new();
    let mut points = Vec::new();
    let (mut train_seconds, mut samples) = (0.0f64, 0usize);
    let mut last = None;
    while !trainer.finished() {
        if let Some(signal) = requested(&trainer)? {
            // Between epochs: the epoch's checkpoint is already written.
            return Err(interrupted(&args, signal, &trainer).into());
        }
        let bar = if lead {
            progress::epoch_bar(
                trainer.epoch + 1,
                trainer.config.epochs,
                trainer.steps_per_epoch(),
            )
        } else {
            indicatif::ProgressBar::hidden()
        };
        let start = Instant::now();
        let number = trainer.epoch + 1;
        // Rows this run trains of the epoch (fewer where it resumes one saved mid-epoch).
        let rows = data
            .train
            .len()
            .saturating_sub(trainer.epoch_progress().0 * trainer.config.batch);
        let stopped = |e: gpumlp::Error| {
            anyhow::Error::from(e).context(format!("training stopped during epoch {number}"))
        };
        // In slices, looking between them for a signal and for `--save-every`.
        loop {
            let before = trainer.epoch_progress().0;
            let ended = block_on(trainer.advance(SLICE, &mut |done, _| {
                bar.set_position(done as u64);
                if let Some(loss) = &device_loss {
                    loss.at(number, done);
                }
                if let Some(test) = &test_signal {
                    test.at(number, done);
                }
            }))
            .map_err(stopped)?;
            if ended {
                break;
            }
            since_save += (trainer.epoch_progress().0 - before) as u64;
            if let Some(signal) = requested(&trainer)? {
                bar.finish_and_clear();
                if let Some(path) = &args.save {
                    // Every rank takes part (the epoch's statistics so far are summed); rank 0 writes.
                    let checkpoint = block_on(trainer.checkpoint())?;
                    if lead {
                        write_atomic(path, &checkpoint.to_bytes()?).context("--save")?;
                    }
                }
                return Err(interrupted(&args, signal, &trainer).into());
            }
            if let (Some(every), Some(path)) = (args.save_every, &args.save) {
                if since_save >= every {
                    save_checkpoint(&mut trainer, path)?;
                    since_save = 0;
                }
            }
        }
        let epoch = block_on(trainer.finish_epoch()).map_err(stopped)?;
        let seconds = start.elapsed().as_secs_f64();
        bar.finish_and_clear();
        let test = block_on(trainer.evaluate())?;
        if let Some(tuning) = &tuning {
            tuning.save()?;
        }
        train_seconds += seconds;
        samples += rows;
        let rate = rows as f64 / seconds;
        if !lead {
            continue;
        }
        eprintln!(
            "epoch {:>3}/{}  loss {:.4}  train {:6.2}%  test loss {:.4}  test {:6.2}%  lr {:.2e}  {:.2} s  {:.0} samples/s",
            epoch.epoch,
            trainer.config.epochs,
            epoch.train.loss(),
            100.0 * epoch.train.accuracy(),
            test.loss(),
            100.0 * test.accuracy(),
            epoch.lr,
            seconds,
            rate
        );
        let line = json!({
            "epoch": epoch.epoch,
            "train_loss": epoch.train.loss(),
            "train_accuracy": epoch.train.accuracy(),
            "test_loss": test.loss(),
            "test_accuracy": test.accuracy(),
            "lr": json_f32(epoch.lr),
            "seconds": seconds,
            "samples_per_second": rate,
        });
        metrics.push_str(&format!("{line}\n"));
        if let Some(path) = &args.metrics {
            write_atomic(path, metrics.as_bytes())?;
        }
        if let Some(path) = &args.save {
            save_checkpoint(&mut trainer, path)?;
            since_save = 0;
        }
        points.push(plot::Point {
            epoch: epoch.epoch,
            train_loss: epoch.train.loss(),
            test_loss: test.loss(),
            train_accuracy: epoch.train.accuracy(),
            test_accuracy: test.accuracy(),
        });
        last = Some((epoch, test));
    }
    if !lead {
        return Ok(());
    }
    if let Some(path) = &args.plot {
        let title = format!("{arch} on {}", data.name);
        plot::write(path, &title, &points)?;
    }

    let (epoch, test) = last.expect("at least one epoch ran");
    let rate = samples as f64 / train_seconds;
    println!(
        "test accuracy {:.2}% after {} on {} ({} train / {} test), {:.1} s of training at {:.0} samples/s on {}",
        100.0 * test.accuracy(),
        epochs(trainer.epoch),
        data.name,
        data.train.len(),
        data.test.len(),
        train_seconds,
        rate,
        on
    );
    if let Some(path) = &args.save {
        println!("saved {}", path.display());
    }
    if job.ranks > 1 {
        let t = job.traffic();
        eprintln!(
            "note: rank 0 summed {:.1} MB over {} ranks in {} all-reduces taking {:.2} s, {:.0}% of its training time",
            t.bytes as f64 / 1e6,
            job.ranks,
            t.calls,
            t.seconds,
            100.0 * t.seconds / train_seconds
        );
    }
    if args.json {
        let c = &trainer.config;
        println!(
            "{}",
            json!({
                "test_accuracy": test.accuracy(),
                "test_loss": test.loss(),
                "train_accuracy": epoch.train.accuracy(),
                "train_loss": epoch.train.loss(),
                "epochs": trainer.epoch,
                "train_seconds": train_seconds,
                "samples_per_second": rate,
                "device": device,
                "ranks": job.ranks,
                "rank_devices": rank_devices,
                "allreduce": job.traffic(),
                "data": data::describe(&data),
                "config": {
                    "hidden": c.hidden, "activation": c.activation, "batch": c.batch, "optimizer": c.optimizer.kind, "lr": json_f32(c.optimizer.lr),
                    "schedule": c.schedule, "seed": c.seed, "precision": c.precision,
                },
                "model": args.save,
            })
        );
    }
    Ok(())
}

/// The run's settings: flags over defaults for a new run; for a resumed run the checkpoint's,
/// with any flag that would change them refused (a resumed run must continue the same run).
fn settings(args: &TrainArgs, resume: Option<&Checkpoint>) -> Result<TrainConfig> {
    let Some(ckpt) = resume else {
        let mut c = TrainConfig::default();
        if let Some(arch) = &args.hidden {
            c.hidden = arch.network.hidden().to_vec();
        }
        c.activation = args.activation.unwrap_or(c.activation);
        if let Some(kind) = args.optimizer {
            c.optimizer = OptimizerConfig::new(kind);
        }
        c.optimizer.lr = args.lr.unwrap_or(c.optimizer.lr);
        c.optimizer.momentum = args.momentum.unwrap_or(c.optimizer.momentum);
        c.optimizer.weight_decay = args.weight_decay.unwrap_or(c.optimizer.weight_decay);
        c.epochs = args.epochs.unwrap_or(c.epochs);
        c.batch = args.batch.unwrap_or(c.batch);
        c.schedule = args.schedule.map_or(c.schedule, Into::into);
        c.seed = args.seed.unwrap_or(c.seed);
        c.precision = args.precision.unwrap_or(c.precision);
        return Ok(c);
    };
    let state = ckpt.training.as_ref().with_context(|| {
        format!(
            "--resume {}: holds a model only, no optimizer state to resume from",
            ckpt.name
        )
    })?;
    let saved = &state.config;
    let conflicts = [
        (
            "--hidden",
            args.hidden
                .as_ref()
                .map(|h| h.network.hidden() != saved.hidden),
        ),
        ("--batch", args.batch.map(|b| b != saved.batch)),
        (
            "--activation",
            args.activation.map(|a| a != saved.activation),
        ),
        (
            "--optimizer",
            args.optimizer.map(|o| o != saved.optimizer.kind),
        ),
        ("--lr", args.lr.map(|v| v != saved.optimizer.lr)),
        (
            "--momentum",
            args.momentum.map(|v| v != saved.optimizer.momentum),
        ),
        (
            "--weight-decay",
            args.weight_decay.map(|v| v != saved.optimizer.weight_decay),
        ),
        ("--schedule", args.schedule.map(|s| s != saved.schedule)),
        ("--seed", args.seed.map(|s| s != saved.seed)),
        ("--precision", args.precision.map(|p| p != saved.precision)),
    ];
    if let Some((flag, _)) = conflicts.iter().find(|(_, differs)| *differs == Some(true)) {
        bail!(
            "{flag} differs from the setting saved in {}: a resumed run keeps its settings",
            ckpt.name
        );
    }
    let mut c = saved.clone();
    c.epochs = args.epochs.unwrap_or(c.epochs);
    Ok(c)
}

/// The device the run trains on, or what its ranks train on: "CPU (1 threads) x 2 ranks".
fn devices_text(rank_devices: &[String]) -> String {
    match rank_devices {
        [one] => one.clone(),
        [first, rest @ ..] if rest.iter().all(|d| d == first) => {
            format!("{first} x {} ranks", rank_devices.len())
        }
        all => format!("{} ranks: {}", all.len(), all.join(", ")),
    }
}

/// "1 epoch", "20 epochs".
fn epochs(n: usize) -> String {
    format!("{n} epoch{}", if n == 1 { "" } else { "s" })
}

/// What a resumed run would otherwise do silently: train without saving the result, or stretch
/// its schedule over more epochs, which moves the learning rate back up.
fn resume_notes(
    args: &TrainArgs,
    ckpt: &Checkpoint,
    state: &gpumlp::checkpoint::TrainingState,
    config: &TrainConfig,
) {
    if args.save.is_none() {
        eprintln!(
            "note: --resume without --save: the continued run will not be saved (add --save {} to keep it)",
            ckpt.name
        );
    }
    let before = &state.config;
    if config.schedule != gpumlp::Schedule::Constant && config.epochs != before.epochs {
        let per_epoch = (state.step as usize).div_ceil(state.epoch.max(1)) as u64;
        let lr = |epochs: usize| {
            config
                .schedule
                .lr(config.optimizer.lr, state.step, per_epoch * epochs as u64)
        };
        eprintln!(
            "note: the {} schedule spans the whole run: going from {} to {} moves epoch {}'s learning rate from {:.2e} to {:.2e}",
            config.schedule,
            epochs(before.epochs),
            epochs(config.epochs),
            state.epoch + 1,
            lr(before.epochs),
            lr(config.epochs)
        );
    }
}

/// An f32 as the JSON number that prints like it (0.001, not 0.0010000000474974513).
fn json_f32(x: f32) -> serde_json::Value {
    x.to_string()
        .parse::<f64>()
        .map_or(serde_json::Value::Null, serde_json::Value::from)
}

/// Steps handed to the device between two looks at the signals and at `--save-every`.
const SLICE: usize = 32;

/// The one line a run stopped by `signal` ends with: where it stopped and what was kept.
fn interrupted(args: &TrainArgs, signal: Signal, trainer: &Trainer) -> Interrupted {
    let (done, total) = trainer.epoch_progress();
    let at = if done == 0 {
        format!("after epoch {}", trainer.epoch)
    } else {
        format!("at step {done} of {total} of epoch {}", trainer.epoch + 1)
    };
    let kept = match &args.save {
        Some(path) => format!(
            "checkpoint saved to {p}; continue with `gpumlp train --resume {p} --save {p}`",
            p = path.display()
        ),
        None => "nothing was saved (no --save)".to_string(),
    };
    Interrupted {
        signal,
        message: format!("stopped by {signal} {at}: {kept}"),
    }
}

/// Writes the run's checkpoint to `path` (`--save`), whole or not at all.
fn save_checkpoint(trainer: &mut Trainer, path: &std::path::Path) -> Result<()> {
    let checkpoint = block_on(trainer.checkpoint())?;
    write_atomic(path, &checkpoint.to_bytes()?).context("--save")
}
