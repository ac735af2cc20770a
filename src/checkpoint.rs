//! Checkpoints as safetensors files: one f32 tensor per layer weight (`layers.{l}.weight`,
//! `[out, in]`) and bias (`layers.{l}.bias`), plus, for resuming, the optimizer's state buffers
//! over the flat buffer, each under its name (`optimizer.velocity` for SGD, `optimizer.m` and
//! `optimizer.v` for Adam), and for a model of standardised features their mean and deviation
//! (`input.mean`, `input.deviation`). The metadata holds one key, `gpumlp`, whose value is a JSON
//! object with the architecture, the activation, the input scale, the data's description
//! ([`DataSpec`]: features, classes, names, how it was read) and the training state; one
//! key because safetensors writes its metadata map in hash order, and one key keeps the bytes
//! of a checkpoint identical for identical runs.
//!
//! Format 1 (gpumlp before the optimizer state was named) stored `optimizer.m` and `optimizer.v`
//! for every optimizer, SGD's velocity in `m`; it still loads. A checkpoint without `data`
//! (written before data was general) is a model of MNIST's 784 bytes and 10 classes.

use crate::config::TrainConfig;
use crate::data_spec::{DataSpec, Standardization};
use crate::error::{Error, Result};
use crate::model::{Activation, Architecture, ParamLayout};
use crate::optim::OptimizerKind;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

const META_KEY: &str = "gpumlp";
/// The format written; 3 is 2 with a position inside an epoch (`within_epoch`), written only
/// when there is one, so that an older gpumlp refuses such a checkpoint rather than resume it
/// at the epoch's start.
const FORMAT_VERSION: u32 = 3;
const FORMAT_WITHOUT_POSITION: u32 = 2;
/// The oldest format this gpumlp reads.
const OLDEST_FORMAT: u32 = 1;

/// A trained model, with what resuming needs when it was saved by a training run.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// Where it came from (a path), for error messages; not stored.
    pub name: String,
    pub architecture: Architecture,
    /// What the model's ends were made for.
    pub data: DataSpec,
    /// The flat parameter buffer.
    pub params: Vec<f32>,
    pub training: Option<TrainingState>,
}

/// How far a run got, and its optimizer state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingState {
    pub config: TrainConfig,
    /// Epochs completed.
    pub epoch: usize,
    /// Optimizer steps completed.
    pub step: u64,
    /// Name of the data trained on.
    pub data: String,
    /// Steps already taken of the epoch under way (0 at an epoch's end), and what its training
    /// batches gave so far: a run stopped mid-epoch (a preempted machine) resumes at that step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within_epoch: Option<WithinEpoch>,
    /// The optimizer's state buffers, in the order of `config.optimizer.kind.state_names()`
    /// (stored as tensors, not in the metadata).
    #[serde(skip)]
    pub optimizer_state: Vec<Vec<f32>>,
}

/// Where a run stopped inside an epoch.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct WithinEpoch {
    /// Steps of the epoch taken.
    pub steps: usize,
    /// The summed loss, correct count and sample count of those steps' batches.
    pub loss_sum: f64,
    pub correct: u64,
    pub count: u64,
}

/// The tensor name of optimizer state buffer `name`.
fn state_tensor(name: &str) -> String {
    format!("optimizer.{name}")
}

fn relu() -> String {
    Activation::Relu.to_string()
}

#[derive(Serialize, Deserialize)]
struct Meta {
    format_version: u32,
    architecture: Vec<usize>,
    /// Absent from checkpoints written before the activation was a setting: ReLU.
    #[serde(default = "relu")]
    activation: String,
    input_scale: f32,
    /// Absent from checkpoints written before data was general: MNIST.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    data: Option<DataSpec>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    training: Option<TrainingState>,
}

const MEAN_TENSOR: &str = "input.mean";
const DEVIATION_TENSOR: &str = "input.deviation";

fn view(shape: Vec<usize>, data: &[f32]) -> TensorView<'_> {
    TensorView::new(Dtype::F32, shape, bytemuck::cast_slice(data)).expect("shape matches data")
}

impl Checkpoint {
    /// The safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let layout = ParamLayout::new(&self.architecture);
        let meta = Meta {
            format_version: match &self.training {
                Some(t) if t.within_epoch.is_some() => FORMAT_VERSION,
                _ => FORMAT_WITHOUT_POSITION,
            },
            architecture: self.architecture.sizes.clone(),
            activation: self.architecture.activation.to_string(),
            input_scale: self.data.input.scale(),
            data: Some(self.data.clone()),
            training: self.training.clone(),
        };
        let mut tensors: Vec<(String, TensorView)> = layout
            .entries
            .iter()
            .map(|e| {
                (
                    e.name.clone(),
                    view(e.shape.clone(), &self.params[e.range()]),
                )
            })
            .collect();
        if let Some(s) = &self.data.standardization {
            for (name, values) in [(MEAN_TENSOR, &s.mean), (DEVIATION_TENSOR, &s.deviation)] {
                tensors.push((name.to_string(), view(vec![values.len()], values)));
            }
        }
        if let Some(t) = &self.training {
            let names = t.config.optimizer.kind.state_names();
            for (name, buffer) in names.iter().zip(&t.optimizer_state) {
                tensors.push((state_tensor(name), view(vec![buffer.len()], buffer)));
            }
        }
        let json = serde_json::to_string(&meta).expect("metadata serialises");
        let info = std::collections::HashMap::from([(META_KEY.to_string(), json)]);
        safetensors::serialize(tensors, Some(info))
            .map_err(|e| Error::checkpoint(&self.name, format!("cannot serialise: {e}")))
    }

    /// Parses and checks a checkpoint; `name` (a path, usually) is used in errors.
    pub fn from_bytes(name: &str, bytes: &[u8]) -> Result<Self> {
        let bad = |reason: String| Error::checkpoint(name, reason);
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| bad(format!("not a valid safetensors file ({e})")))?;
        let (_, header) = SafeTensors::read_metadata(bytes)
            .map_err(|e| bad(format!("unreadable header ({e})")))?;
        let json = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get(META_KEY))
            .ok_or_else(|| bad("no gpumlp metadata: it was not written by gpumlp".into()))?;
        let meta: Meta = serde_json::from_str(json)
            .map_err(|e| bad(format!("malformed gpumlp metadata ({e})")))?;
        if !(OLDEST_FORMAT..=FORMAT_VERSION).contains(&meta.format_version) {
            return Err(bad(format!(
                "format version {} is not supported (this gpumlp reads {OLDEST_FORMAT} to {FORMAT_VERSION})",
                meta.format_version
            )));
        }
        let activation: Activation = meta.activation.parse().map_err(|e| bad(format!("{e}")))?;
        let mut data = meta.data.unwrap_or_else(DataSpec::mnist);
        if meta.input_scale != data.input.scale() {
            return Err(bad(format!(
                "input scale {} is not the {} this gpumlp feeds a model of {} features",
                meta.input_scale,
                data.input.scale(),
                data.input
            )));
        }
        let sizes = &meta.architecture;
        if sizes.len() < 3 || sizes[0] != data.features || sizes[sizes.len() - 1] != data.classes {
            return Err(bad(format!(
                "architecture {sizes:?} is not an MLP from its data's {} features to its {} classes",
                data.features, data.classes
            )));
        }
        let architecture =
            Architecture::new(data.features, &sizes[1..sizes.len() - 1], data.classes)
                .map_err(|e| bad(e.to_string()))?
                .with_activation(activation);
        let layout = ParamLayout::new(&architecture);
        // The tensors must be in the file: check its size before allocating from the metadata.
        if (bytes.len() as u64) < 4 * layout.len as u64 {
            return Err(bad(format!(
                "the metadata's architecture {sizes:?} needs {} bytes of weights, the file has {}",
                4 * layout.len,
                bytes.len()
            )));
        }

        let read = |tensor: &str, shape: &[usize]| -> Result<Vec<f32>> {
            let t = st
                .tensor(tensor)
                .map_err(|_| bad(format!("tensor {tensor} is missing")))?;
            if t.dtype() != Dtype::F32 || t.shape() != shape {
                return Err(bad(format!(
                    "tensor {tensor} is {:?} {:?}, expected F32 {shape:?}",
                    t.dtype(),
                    t.shape()
                )));
            }
            Ok(t.data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect())
        };
        let mut params = vec![0.0f32; layout.len];
        for e in &layout.entries {
            params[e.range()].copy_from_slice(&read(&e.name, &e.shape)?);
        }
        if let Some(i) = params.iter().position(|p| !p.is_finite()) {
            return Err(bad(format!(
                "parameter {i} is not finite: the model diverged or the file is corrupt"
            )));
        }
        if data.read.standardize {
            data.standardization = Some(Standardization {
                mean: read(MEAN_TENSOR, &[data.features])?,
                deviation: read(DEVIATION_TENSOR, &[data.features])?,
            });
        }
        data.check_limits("its data")
            .map_err(|e| bad(e.to_string()))?;
        let training = match meta.training {
            Some(mut t) => {
                t.config
                    .validate()
                    .map_err(|e| bad(format!("training settings: {e}")))?;
                if t.config.hidden != architecture.hidden()
                    || t.config.activation != architecture.activation
                {
                    return Err(bad(
                        "training settings disagree with the architecture".into()
                    ));
                }
                let kind = t.config.optimizer.kind;
                let stored_as = |name: &str| match (meta.format_version, kind, name) {
                    (1, OptimizerKind::Sgd, "velocity") => state_tensor("m"),
                    _ => state_tensor(name),
                };
                t.optimizer_state = kind
                    .state_names()
                    .iter()
                    .map(|name| read(&stored_as(name), &[layout.len]))
                    .collect::<Result<_>>()?;
                Some(t)
            }
            None => None,
        };
        Ok(Checkpoint {
            name: name.to_string(),
            architecture,
            data,
            params,
            training,
        })
    }
}
