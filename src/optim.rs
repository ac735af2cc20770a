//! Optimizers over the flat parameter buffer, and learning-rate schedules.
//!
//! SGD with momentum (PyTorch's form):  `v = mu*v + g;  p -= lr*v`.
//! Adam (Kingma & Ba, PyTorch's form):  `m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2;
//!                                       p -= lr * (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps)`.
//! Weight decay, when set, is decoupled (AdamW-style) for both: `p -= lr*wd*p` before the update.
//! The functions here are the reference: the CPU backend runs them on chunks in parallel, and the
//! GPU kernels are tested against them.

use crate::error::{Error, Result};
use multiversion::multiversion;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    Sgd,
    Adam,
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
        let check = |name: &str, v: f32, lo: f32, hi: f32, hi_open: bool| {
            let ok = v.is_finite() && v >= lo && if hi_open { v < hi } else { v <= hi };
            if ok {
                Ok(())
            } else {
                let close = if hi_open { ")" } else { "]" };
                Err(Error::Config(format!("--{name} {v} is out of range: it must be a finite number in [{lo}, {hi}{close}")))
            }
        };
        if !(self.lr.is_finite() && self.lr > 0.0 && self.lr <= 10.0) {
            return Err(Error::Config(format!(
                "--lr {} is out of range: it must be a finite number in (0, 10]",
                self.lr
            )));
        }
        check("momentum", self.momentum, 0.0, 1.0, true)?;
        check("beta1", self.beta1, 0.0, 1.0, true)?;
        check("beta2", self.beta2, 0.0, 1.0, true)?;
        check("weight-decay", self.weight_decay, 0.0, 1.0, false)?;
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(Error::Config(format!(
                "--eps {} must be a finite positive number",
                self.eps
            )));
        }
        Ok(())
    }
}

/// One SGD-with-momentum update of `p` (and its velocity `vel`) from gradient `g`.
// Compiled also for AVX2 and AVX-512 and picked at run time: the baseline x86-64 build is SSE2,
// and these loops are bound by `sqrt` and division throughput. Elementwise IEEE operations give
// the same bits at any vector width.
#[multiversion(targets("x86_64+avx512f", "x86_64+avx2+fma"))]
pub fn sgd_update(cfg: &OptimizerConfig, lr: f32, p: &mut [f32], g: &[f32], vel: &mut [f32]) {
    let decay = 1.0 - lr * cfg.weight_decay;
    for ((p, &g), v) in p.iter_mut().zip(g).zip(vel) {
        *v = cfg.momentum * *v + g;
        *p = *p * decay - lr * *v;
    }
}

/// One Adam update of `p` and its moments `m`, `v`; `t` is the 1-based step number.
#[multiversion(targets("x86_64+avx512f", "x86_64+avx2+fma"))]
pub fn adam_update(
    cfg: &OptimizerConfig,
    lr: f32,
    t: u64,
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
) {
    let (b1, b2) = (cfg.beta1, cfg.beta2);
    let t = t.min(i32::MAX as u64) as i32;
    // Bias corrections folded into two scalars, as PyTorch does.
    let step_size = lr / (1.0 - b1.powi(t));
    let v_scale = 1.0 / (1.0 - b2.powi(t)).sqrt();
    let decay = 1.0 - lr * cfg.weight_decay;
    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m).zip(v) {
        *m = b1 * *m + (1.0 - b1) * g;
        *v = b2 * *v + (1.0 - b2) * g * g;
        *p = *p * decay - step_size * *m / ((*v).sqrt() * v_scale + cfg.eps);
    }
}
