//! Optimizers over the flat parameter buffer, and learning-rate schedules.
//!
//! SGD with momentum (PyTorch's form):  `v = mu*v + g;  p -= lr*v`.
//! Adam (Kingma & Ba, PyTorch's form):  `m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2;
//!                                       p -= lr * (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps)`.
//! The state (v for SGD, m and v for Adam) is stored as 0 where it would be subnormal
//! ([`flush_subnormal`]).
//! Weight decay, when set, is decoupled (AdamW-style) for both: `p -= lr*wd*p` before the update.
//! The per-step scalars (the decay factor, Adam's bias corrections) are computed once, by
//! [`OptimizerConfig::scalars`], for both backends. The update functions here are the reference:
//! the CPU backend runs them on chunks in parallel, and the GPU kernels are tested against them.
//!
//! An optimizer's state is a list of named per-parameter buffers ([`OptimizerKind::state_names`]):
//! the backends own them, checkpoints store them under those names.

use crate::error::{Error, Result, Setting};
use multiversion::multiversion;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    Sgd,
    Adam,
}

impl OptimizerKind {
    pub const ALL: [OptimizerKind; 2] = [OptimizerKind::Adam, OptimizerKind::Sgd];

    /// The per-parameter buffers this optimizer keeps, in order: what a backend allocates and
    /// a checkpoint stores as `optimizer.<name>`.
    pub fn state_names(self) -> &'static [&'static str] {
        match self {
            OptimizerKind::Sgd => &["velocity"],
            OptimizerKind::Adam => &["m", "v"],
        }
    }
}

impl fmt::Display for OptimizerKind {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::Adam => "adam",
        })
    }
}

impl FromStr for OptimizerKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Setting::Optimizer.one_of(s, &Self::ALL)
    }
}

/// Learning-rate schedule over the whole run (all epochs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// The base rate throughout.
    Constant,
    /// The base rate, times 0.1 from half way through, times 0.01 from three quarters.
    Step,
    /// Cosine annealing from the base rate to zero, step by step.
    Cosine,
}

impl Schedule {
    pub const ALL: [Schedule; 3] = [Schedule::Constant, Schedule::Step, Schedule::Cosine];
    /// The rate for step `step` (0-based) of `total` steps.
    pub fn lr(self, base: f32, step: u64, total: u64) -> f32 {
        let progress = step as f64 / total.max(1) as f64;
        let factor = match self {
            Schedule::Constant => 1.0,
            Schedule::Step if progress >= 0.75 => 0.01,
            Schedule::Step if progress >= 0.5 => 0.1,
            Schedule::Step => 1.0,
            Schedule::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
        };
        (base as f64 * factor) as f32
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Schedule::Constant => "constant",
            Schedule::Step => "step",
            Schedule::Cosine => "cosine",
        })
    }
}

impl FromStr for Schedule {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Setting::Schedule.one_of(s, &Self::ALL)
    }
}

/// The scalars one update step needs beyond the optimizer's fixed settings, computed once on
/// the CPU for both backends (the GPU reads them from its per-step table).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepScalars {
    /// This step's learning rate (after the schedule).
    pub lr: f32,
    /// `1 - lr * weight_decay`: decoupled weight decay as a factor on the parameters.
    pub decay: f32,
    /// Adam: `lr / (1 - beta1^t)`, the bias-corrected step size.
    pub adam_step: f32,
    /// Adam: `1 / sqrt(1 - beta2^t)`, the second moment's bias correction.
    pub adam_v_scale: f32,
}

/// Optimizer settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct OptimizerConfig {
    pub kind: OptimizerKind,
    /// Base learning rate.
    pub lr: f32,
    /// SGD momentum `mu`.
    pub momentum: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// Decoupled weight decay (0 = none).
    pub weight_decay: f32,
}

impl OptimizerConfig {
    /// Defaults: Adam at 2e-3 (with the default 20-epoch cosine decay it reached 96.30-96.75%
    /// on the sample over seeds 1-10, about 0.3 points above the textbook 1e-3), SGD at 0.05
    /// with momentum 0.9.
    pub fn new(kind: OptimizerKind) -> Self {
        OptimizerConfig {
            kind,
            lr: match kind {
                OptimizerKind::Adam => 2e-3,
                OptimizerKind::Sgd => 0.05,
            },
            momentum: 0.9,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }

    /// Rejects settings that cannot train (non-finite or out-of-range values).
    pub fn validate(&self) -> Result<()> {
        // `inside` is whether a finite `v` lies in the interval written as `range`.
        let check = |setting: Setting, v: f32, inside: bool, range: &str| {
            if v.is_finite() && inside {
                Ok(())
            } else {
                Err(Error::setting(
                    setting,
                    format!("{v} is out of range: it must be a finite number in {range}"),
                ))
            }
        };
        let unit = |v: f32| (0.0..1.0).contains(&v);
        let lr = self.lr;
        check(Setting::LearningRate, lr, lr > 0.0 && lr <= 10.0, "(0, 10]")?;
        check(
            Setting::Momentum,
            self.momentum,
            unit(self.momentum),
            "[0, 1)",
        )?;
        check(Setting::Beta1, self.beta1, unit(self.beta1), "[0, 1)")?;
        check(Setting::Beta2, self.beta2, unit(self.beta2), "[0, 1)")?;
        let decay = self.weight_decay;
        check(
            Setting::WeightDecay,
            decay,
            (0.0..=1.0).contains(&decay),
            "[0, 1]",
        )?;
        check(Setting::Eps, self.eps, self.eps > 0.0, "(0, inf)")
    }

    /// The scalars of step `t` (1-based) at learning rate `lr`: the one definition both
    /// backends use.
    pub fn scalars(&self, lr: f32, t: u64) -> StepScalars {
        let t = t.min(i32::MAX as u64) as i32;
        // Adam's bias corrections folded into two scalars, as PyTorch does.
        StepScalars {
            lr,
            decay: 1.0 - lr * self.weight_decay,
            adam_step: lr / (1.0 - self.beta1.powi(t)),
            adam_v_scale: 1.0 / (1.0 - self.beta2.powi(t)).sqrt(),
        }
    }
}

impl fmt::Display for OptimizerConfig {
    /// `adam lr 0.002` or `sgd lr 0.05 momentum 0.9` (and the weight decay when set).
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} lr {}", self.kind, self.lr)?;
        if self.kind == OptimizerKind::Sgd {
            write!(f, " momentum {}", self.momentum)?;
        }
        if self.weight_decay > 0.0 {
            write!(f, " weight decay {}", self.weight_decay)?;
        }
        Ok(())
    }
}

/// `x`, or a zero of its sign where it is subnormal (under `f32::MIN_POSITIVE`, about 1.2e-38,
/// in magnitude): how the optimizers store their moments and velocity, on every target and in
/// the GPU kernels (`optimizer.wgsl`). A moment decays geometrically at each step its weight's
/// gradient is zero (a dead unit, a pixel blank in the whole batch) and sinks into the
/// subnormal range after a few hundred such steps; on Intel cores every operation on a subnormal is a microcode assist.
/// The CPU backend flushes in hardware on x86_64 (`backend::cpu::subnormals`), where this
/// changes nothing; wasm32 has no such mode, and there this keeps the moments, the main
/// source, out of that range (on a 2-core Xeon with the hardware mode switched off, B1's
/// epochs fell from 48,000 to 37,000-42,000 samples/s over 4; with this, 50,000-58,000 in the
/// first and 51,000-57,000 in the fourth: README, "Measured results").
#[inline(always)]
pub fn flush_subnormal(x: f32) -> f32 {
    if x.abs() < f32::MIN_POSITIVE {
        // A zero of x's sign, as the hardware's flush gives.
        0.0f32.copysign(x)
    } else {
        x
    }
}

/// One SGD-with-momentum update of `p` (and its velocity `vel`) from gradient `g`.
// Compiled also for AVX2 and AVX-512 and picked at run time: the baseline x86-64 build is SSE2,
// and in cache these loops are bound by `sqrt` and division throughput (out of cache, as B1's
// state is, by memory). Elementwise IEEE operations give
// the same bits at any vector width.
#[multiversion(targets("x86_64+avx512f", "x86_64+avx2+fma"))]
pub fn sgd_update(
    cfg: &OptimizerConfig,
    s: &StepScalars,
    p: &mut [f32],
    g: &[f32],
    vel: &mut [f32],
) {
    for ((p, &g), v) in p.iter_mut().zip(g).zip(vel) {
        *v = flush_subnormal(cfg.momentum * *v + g);
        *p = *p * s.decay - s.lr * *v;
    }
}

/// One Adam update of `p` and its moments `m`, `v`, with step `s`'s scalars.
#[multiversion(targets("x86_64+avx512f", "x86_64+avx2+fma"))]
pub fn adam_update(
    cfg: &OptimizerConfig,
    s: &StepScalars,
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
) {
    let (b1, b2) = (cfg.beta1, cfg.beta2);
    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m).zip(v) {
        *m = flush_subnormal(b1 * *m + (1.0 - b1) * g);
        *v = flush_subnormal(b2 * *v + (1.0 - b2) * g * g);
        *p = *p * s.decay - s.adam_step * *m / ((*v).sqrt() * s.adam_v_scale + cfg.eps);
    }
}
