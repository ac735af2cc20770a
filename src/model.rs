//! The network's shape and where each parameter lives in the flat parameter buffer.
//!
//! Layer `l` maps `sizes[l]` inputs to `sizes[l+1]` outputs: `z = a @ W^T + b`, then the
//! [`Activation`] on every layer but the last, whose logits go to softmax cross-entropy. The
//! first layer's width is the data's features, the last's its classes ([`DataSpec`]). `W` is
//! `[out, in]` row-major (the
//! PyTorch convention, so checkpoints read naturally elsewhere). All weights and biases sit in one
//! f32 buffer, layer by layer, weight before bias; [`ParamLayout`] is the table of offsets that
//! the CPU backend, the GPU backend, the optimizers and the checkpoints share.

use crate::data_spec::{DataSpec, MAX_CLASSES, MAX_FEATURES};
use crate::error::{Error, Result, Setting};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use std::fmt;
use std::str::FromStr;

pub use crate::activation::Activation;

/// Layer widths from input to output, e.g. `[784, 512, 256, 10]`, and the hidden activation.
///
/// Displays as `784-512-256-10`; parses from that form or from the hidden widths alone as users
/// type them (`512,256`, MNIST's ends).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Architecture {
    pub sizes: Vec<usize>,
    pub activation: Activation,
}

/// Hidden layers wider than this are refused: the user almost certainly mistyped.
pub const MAX_HIDDEN: usize = 16_384;
/// Most hidden layers accepted.
pub const MAX_HIDDEN_LAYERS: usize = 16;
/// Most parameters accepted (2^27: 512 MiB per f32 buffer, and a backend keeps four), so a
/// typo or a hostile checkpoint is an error rather than an allocation that takes the machine down.
pub const MAX_PARAMS: usize = 1 << 27;

impl Architecture {
    /// MNIST's ends (784 inputs, 10 classes) around the given hidden widths.
    pub fn mlp(hidden: &[usize]) -> Result<Self> {
        Architecture::new(784, hidden, 10)
    }

    /// The ends `spec` gives around the given hidden widths.
    pub fn for_data(spec: &DataSpec, hidden: &[usize]) -> Result<Self> {
        Architecture::new(spec.features, hidden, spec.classes)
    }

    /// `inputs` features, the given hidden widths, `classes` outputs.
    pub fn new(inputs: usize, hidden: &[usize], classes: usize) -> Result<Self> {
        if !(1..=MAX_FEATURES).contains(&inputs) || !(2..=MAX_CLASSES).contains(&classes) {
            return Err(Error::setting(
                Setting::Hidden,
                format!(
                    "a network of {inputs} inputs and {classes} classes: gpumlp takes 1 to {MAX_FEATURES} inputs and 2 to {MAX_CLASSES} classes"
                ),
            ));
        }
        if let Some(&bad) = hidden.iter().find(|&&h| h == 0 || h > MAX_HIDDEN) {
            return Err(Error::setting(
                Setting::Hidden,
                format!("layer width {bad} must be between 1 and {MAX_HIDDEN}"),
            ));
        }
        if hidden.is_empty() {
            return Err(Error::setting(
                Setting::Hidden,
                "at least one layer width is needed",
            ));
        }
        if hidden.len() > MAX_HIDDEN_LAYERS {
            return Err(Error::setting(
                Setting::Hidden,
                format!(
                    "{} layers is more than the {MAX_HIDDEN_LAYERS} supported",
                    hidden.len()
                ),
            ));
        }
        let mut sizes = vec![inputs];
        sizes.extend_from_slice(hidden);
        sizes.push(classes);
        let arch = Architecture {
            sizes,
            activation: Activation::Relu,
        };
        let params = ParamLayout::new(&arch).len;
        if params > MAX_PARAMS {
            return Err(Error::setting(
                Setting::Hidden,
                format!("{arch} makes {params} parameters, more than the {MAX_PARAMS} supported"),
            ));
        }
        Ok(arch)
    }

    /// The same layers with another hidden activation.
    pub fn with_activation(self, activation: Activation) -> Self {
        Architecture { activation, ..self }
    }

    pub fn hidden(&self) -> &[usize] {
        &self.sizes[1..self.sizes.len() - 1]
    }

    pub fn layers(&self) -> usize {
        self.sizes.len() - 1
    }

    /// Multiply-adds of one forward pass per sample (GEMM work dominates everything else).
    pub fn macs_per_sample(&self) -> usize {
        self.sizes.windows(2).map(|w| w[0] * w[1]).sum()
    }

    /// GEMM floating-point operations of one training step per sample: forward (1x), the weight
    /// gradients (1x) and the input gradients of every layer but the first (1x each).
    pub fn train_flops_per_sample(&self) -> usize {
        2 * (3 * self.macs_per_sample() - self.sizes[0] * self.sizes[1])
    }
}

impl fmt::Display for Architecture {
    /// `784-512-256-10`.
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let sizes: Vec<String> = self.sizes.iter().map(|s| s.to_string()).collect();
        f.write_str(&sizes.join("-"))
    }
}

impl FromStr for Architecture {
    type Err = Error;
    /// Hidden widths (`512,256`, with MNIST's ends) or the whole network (`784-512-256-10`).
    fn from_str(s: &str) -> Result<Self> {
        let (separator, whole) = if s.contains('-') {
            ('-', true)
        } else {
            (',', false)
        };
        let widths = s
            .split(separator)
            .map(|w| {
                w.trim().parse::<usize>().map_err(|_| {
                    Error::setting(
                        Setting::Hidden,
                        format!(
                            "'{w}' is not a layer width; expected comma-separated positive integers like 512,256"
                        ),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if !whole {
            return Architecture::mlp(&widths);
        }
        match widths.as_slice() {
            [inputs, hidden @ .., classes] => Architecture::new(*inputs, hidden, *classes),
            _ => Err(Error::setting(
                Setting::Hidden,
                format!("{s} names no hidden layer"),
            )),
        }
    }
}

/// One tensor of the flat buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamEntry {
    /// Checkpoint name: `layers.{l}.weight` or `layers.{l}.bias`.
    pub name: String,
    pub offset: usize,
    pub shape: Vec<usize>,
}

impl ParamEntry {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.numel()
    }
}

/// Offsets of every weight and bias in the flat parameter buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamLayout {
    /// `2 * layers` entries: weight of layer 0, bias of layer 0, weight of layer 1...
    pub entries: Vec<ParamEntry>,
    /// Total number of parameters.
    pub len: usize,
}

impl ParamLayout {
    pub fn new(arch: &Architecture) -> Self {
        let mut entries = Vec::new();
        let mut offset = 0;
        for (l, w) in arch.sizes.windows(2).enumerate() {
            let (inp, out) = (w[0], w[1]);
            for (name, shape) in [
                (format!("layers.{l}.weight"), vec![out, inp]),
                (format!("layers.{l}.bias"), vec![out]),
            ] {
                let entry = ParamEntry {
                    name,
                    offset,
                    shape,
                };
                offset += entry.numel();
                entries.push(entry);
            }
        }
        ParamLayout {
            entries,
            len: offset,
        }
    }

    /// Weight of layer `l`.
    pub fn weight(&self, l: usize) -> &ParamEntry {
        &self.entries[2 * l]
    }

    /// Bias of layer `l`.
    pub fn bias(&self, l: usize) -> &ParamEntry {
        &self.entries[2 * l + 1]
    }
}

/// He-normal weights (`N(0, 2/fan_in)`, right for ReLU) and zero biases, from `seed`.
pub fn init_params(arch: &Architecture, seed: u64) -> Vec<f32> {
    let layout = ParamLayout::new(arch);
    let mut params = vec![0.0f32; layout.len];
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for l in 0..arch.layers() {
        let w = layout.weight(l);
        let std = (2.0 / arch.sizes[l] as f64).sqrt() as f32;
        let normal = Normal::new(0.0f32, std).expect("std is finite and positive");
        for p in &mut params[w.range()] {
            *p = normal.sample(&mut rng);
        }
    }
    params
}
