//! The hidden layers' activations, each defined once: its function and its derivative as the
//! Rust the CPU backend runs, and as the WGSL the GPU's GEMM epilogues are given (`activate`
//! after the bias in forward, `backward` on the input gradient), the same formula with the same
//! constants.
//!
//! Backward needs `f'(z)`. For ReLU, leaky ReLU, tanh and sigmoid it is a function of the
//! output `a = f(z)`, so backward reads it off the activations it keeps anyway; GELU's is not
//! (GELU is not monotonic), so a GELU network also keeps each hidden layer's pre-activation `z`.

use crate::error::{Error, Result, Setting};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A hidden layer's activation. The CPU backend applies it through these methods, the GPU
/// backend compiles [`Activation::wgsl`] into its GEMM epilogues, and checkpoints record it
/// (one without it is ReLU) and refuse one they do not know.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    #[default]
    Relu,
    LeakyRelu,
    Tanh,
    Sigmoid,
    Gelu,
}

/// Leaky ReLU's slope for negative inputs.
pub const LEAKY_SLOPE: f32 = 0.01;
/// tanh's argument is clamped to +-15 (tanh(15) is 1 in f32): some GPUs compute tanh through
/// `exp`, which overflows for large arguments.
const TANH_LIMIT: f32 = 15.0;
/// sigmoid's argument is clamped to +-80 so `exp(-z)` stays finite (sigmoid(-80) ~ 1.8e-35).
const SIGMOID_LIMIT: f32 = 80.0;
/// GELU's tanh approximation: `0.5 z (1 + tanh(C (z + A z^3)))`, C = sqrt(2 / pi).
const GELU_C: f32 = 0.797_884_6;
const GELU_A: f32 = 0.044_715;

fn tanh(x: f32) -> f32 {
    x.clamp(-TANH_LIMIT, TANH_LIMIT).tanh()
}

impl Activation {
    pub const ALL: [Activation; 5] = [
        Activation::Relu,
        Activation::LeakyRelu,
        Activation::Tanh,
        Activation::Sigmoid,
        Activation::Gelu,
    ];

    /// `f(z)`.
    #[inline]
    pub fn apply(self, z: f32) -> f32 {
        match self {
            Activation::Relu => z.max(0.0),
            Activation::LeakyRelu => {
                if z > 0.0 {
                    z
                } else {
                    LEAKY_SLOPE * z
                }
            }
            Activation::Tanh => tanh(z),
            Activation::Sigmoid => 1.0 / (1.0 + (-z.clamp(-SIGMOID_LIMIT, SIGMOID_LIMIT)).exp()),
            Activation::Gelu => 0.5 * z * (1.0 + tanh(GELU_C * (z + GELU_A * z * z * z))),
        }
    }

    /// Whether backward reads `f'` off the pre-activation `z` (which must then be kept) rather
    /// than off the output `a = f(z)`.
    pub fn needs_pre_activation(self) -> bool {
        self == Activation::Gelu
    }

    /// `d * f'(z)`, from `x`: the output `a = f(z)`, or `z` itself where
    /// [`Activation::needs_pre_activation`]. Written as selects so it vectorises.
    #[inline]
    pub fn backward(self, d: f32, x: f32) -> f32 {
        match self {
            Activation::Relu => {
                if x > 0.0 {
                    d
                } else {
                    0.0
                }
            }
            Activation::LeakyRelu => {
                if x > 0.0 {
                    d
                } else {
                    LEAKY_SLOPE * d
                }
            }
            Activation::Tanh => d * (1.0 - x * x),
            Activation::Sigmoid => d * x * (1.0 - x),
            Activation::Gelu => {
                let t = tanh(GELU_C * (x + GELU_A * x * x * x));
                let du = GELU_C * (1.0 + 3.0 * GELU_A * x * x);
                d * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du)
            }
        }
    }

    /// The WGSL of `activate(z)` and `backward(d, x)`: the formulas above, which the GPU's GEMM
    /// file is compiled with.
    pub fn wgsl(self) -> String {
        let clamp_tanh = format!("tanh(clamp(u, -{TANH_LIMIT:?}, {TANH_LIMIT:?}))");
        let (activate, backward) = match self {
            Activation::Relu => (
                "return max(z, 0.0);".to_string(),
                "return select(0.0, d, x > 0.0);".to_string(),
            ),
            Activation::LeakyRelu => (
                format!("return select({LEAKY_SLOPE:?} * z, z, z > 0.0);"),
                format!("return select({LEAKY_SLOPE:?} * d, d, x > 0.0);"),
            ),
            Activation::Tanh => (
                format!("let u = z; return {clamp_tanh};"),
                "return d * (1.0 - x * x);".to_string(),
            ),
            Activation::Sigmoid => (
                format!(
                    "return 1.0 / (1.0 + exp(-clamp(z, -{SIGMOID_LIMIT:?}, {SIGMOID_LIMIT:?})));"
                ),
                "return d * x * (1.0 - x);".to_string(),
            ),
            Activation::Gelu => (
                format!(
                    "let u = {GELU_C:?} * (z + {GELU_A:?} * z * z * z); return 0.5 * z * (1.0 + {clamp_tanh});"
                ),
                format!(
                    "let u = {GELU_C:?} * (x + {GELU_A:?} * x * x * x); let t = {clamp_tanh}; \
                     let du = {GELU_C:?} * (1.0 + 3.0 * {GELU_A:?} * x * x); \
                     return d * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du);"
                ),
            ),
        };
        format!(
            "// The hidden layers' activation: {self} (gpumlp::activation).\n\
             fn activate(z: f32) -> f32 {{ {activate} }}\n\
             fn backward(d: f32, x: f32) -> f32 {{ {backward} }}\n"
        )
    }
}

impl fmt::Display for Activation {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Activation::Relu => "relu",
            Activation::LeakyRelu => "leaky-relu",
            Activation::Tanh => "tanh",
            Activation::Sigmoid => "sigmoid",
            Activation::Gelu => "gelu",
        })
    }
}

impl FromStr for Activation {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Setting::Activation.one_of(s, &Self::ALL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_derivative_matches_a_central_difference_of_its_function() {
        for f in Activation::ALL {
            for z in [-3.0f32, -0.7, -0.1, 0.2, 0.9, 2.5] {
                let h = 1e-3;
                let numeric = (f.apply(z + h) - f.apply(z - h)) / (2.0 * h);
                let x = if f.needs_pre_activation() {
                    z
                } else {
                    f.apply(z)
                };
                let analytic = f.backward(1.0, x);
                assert!(
                    (numeric - analytic).abs() < 2e-3,
                    "{f} at {z}: f' is {analytic}, the difference says {numeric}"
                );
            }
        }
    }

    #[test]
    fn names_round_trip_and_an_unknown_one_lists_the_choices() {
        for f in Activation::ALL {
            assert_eq!(f.to_string().parse::<Activation>().unwrap(), f);
            let json = serde_json::to_string(&f).unwrap();
            assert_eq!(json, format!("\"{f}\""));
        }
        let err = "swish".parse::<Activation>().unwrap_err().to_string();
        assert!(err.contains("gelu") && err.contains("leaky-relu"), "{err}");
    }
}
