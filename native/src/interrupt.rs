//! Preemption-safe training. SIGTERM (what a cloud provider sends a spot or preemptible machine
//! about 30 s before it reclaims it) or SIGINT (Ctrl-C) asks the run to stop at the end of the
//! slice of steps under way: `gpumlp train` then writes a checkpoint at that step (`--save`),
//! says so in one line and exits with 128 + the signal's number. A second signal stops at once.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The signals that stop a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Term,
    Int,
}

impl Signal {
    /// Its number (SIGTERM 15, SIGINT 2).
    pub fn number(self) -> i32 {
        match self {
            Signal::Term => 15,
            Signal::Int => 2,
        }
    }

    /// The signal of number `n`, if it is one of the two.
    pub fn from_number(n: i32) -> Option<Signal> {
        [Signal::Term, Signal::Int]
            .into_iter()
            .find(|s| s.number() == n)
    }

    fn name(self) -> &'static str {
        match self {
            Signal::Term => "SIGTERM",
            Signal::Int => "SIGINT",
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether a stop was asked for, and by which signal.
pub struct Stop {
    asked: [(Signal, Arc<AtomicBool>); 2],
}

impl Stop {
    /// Starts listening for SIGTERM and SIGINT: the first of either sets a flag the training
    /// loop reads between slices; a second exits at once with 128 + its number.
    pub fn install() -> anyhow::Result<Self> {
        let asked = [Signal::Term, Signal::Int].map(|s| (s, Arc::new(AtomicBool::new(false))));
        #[cfg(unix)]
        for (signal, flag) in &asked {
            let n = signal.number();
            // The order matters: the conditional exit sees the flag the first signal set.
            signal_hook::flag::register_conditional_shutdown(n, 128 + n, flag.clone())?;
            signal_hook::flag::register(n, flag.clone())?;
        }
        Ok(Stop { asked })
    }

    /// The signal that asked the run to stop, if one did.
    pub fn requested(&self) -> Option<Signal> {
        self.asked
            .iter()
            .find(|(_, flag)| flag.load(Ordering::Relaxed))
            .map(|(signal, _)| *signal)
    }
}

/// The end of a run that a signal stopped: the program prints `message` and exits with
/// 128 + the signal's number.
#[derive(Debug)]
pub struct Interrupted {
    pub signal: Signal,
    pub message: String,
}

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Interrupted {}

/// Fault injection for the tests of preemption, not a user setting:
/// `GPUMLP_TEST_SIGNAL=EPOCH:STEP:TERM|INT|KILL[:RANK]` sends the program that signal once
/// training has handed STEP steps of epoch EPOCH to the device (KILL: as `kill -9`, which nothing
/// can catch); with RANK, only that rank of a data-parallel job does.
pub struct TestSignal {
    epoch: usize,
    step: usize,
    /// The signal's number.
    signal: i32,
    sent: std::cell::Cell<bool>,
}

impl TestSignal {
    /// The hook for this process, `rank` of its job.
    pub fn from_env(rank: usize) -> anyhow::Result<Option<Self>> {
        let Ok(at) = std::env::var("GPUMLP_TEST_SIGNAL") else {
            return Ok(None);
        };
        let mut parts: Vec<&str> = at.split(':').collect();
        if parts.len() == 4 {
            match parts[3].parse::<usize>() {
                Ok(r) if r == rank => {}
                Ok(_) => return Ok(None),
                Err(_) => anyhow::bail!("GPUMLP_TEST_SIGNAL={at}: the rank must be a number"),
            }
            parts.pop();
        }
        let parsed = match parts[..] {
            [e, s, sig] => e.parse().ok().zip(s.parse().ok()).zip(match sig {
                "TERM" => Some(Signal::Term.number()),
                "INT" => Some(Signal::Int.number()),
                "KILL" => Some(9),
                _ => None,
            }),
            _ => None,
        };
        let Some(((epoch, step), signal)) = parsed else {
            anyhow::bail!("GPUMLP_TEST_SIGNAL={at}: expected EPOCH:STEP:TERM, :INT or :KILL");
        };
        Ok(Some(TestSignal {
            epoch,
            step,
            signal,
            sent: std::cell::Cell::new(false),
        }))
    }

    /// Sends the signal if training has reached the chosen point (once).
    pub fn at(&self, epoch: usize, step: usize) {
        if epoch == self.epoch && step >= self.step && !self.sent.replace(true) {
            #[cfg(unix)]
            let _ = signal_hook::low_level::raise(self.signal);
        }
    }
}
