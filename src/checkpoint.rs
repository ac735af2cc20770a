//! Checkpoints as safetensors files: one f32 tensor per layer weight (`layers.{l}.weight`,
//! `[out, in]`) and bias (`layers.{l}.bias`), plus, for resuming, the optimizer moments over the
//! flat buffer (`optimizer.m`, `optimizer.v`). The metadata holds one key, `gpumlp`, whose value
//! is a JSON object with the architecture, the input normalisation and the training state; one
//! key because safetensors writes its metadata map in hash order, and one key keeps the bytes
//! of a checkpoint identical for identical runs.

use crate::backend::{Backend, CpuBackend, Split};
use crate::dataset::Dataset;
use crate::error::{Error, Result};
use crate::idx::{CLASSES, PIXELS};
use crate::model::{Architecture, ParamLayout};
use crate::train::TrainConfig;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

const META_KEY: &str = "gpumlp";
const FORMAT_VERSION: u32 = 1;
/// Pixels are scaled by this before the first layer (u8 0..=255 to 0..=1).
pub const INPUT_SCALE: f32 = 1.0 / 255.0;

/// A trained model, with what resuming needs when it was saved by a training run.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// Where it came from (a path), for error messages; not stored.
    pub name: String,
    pub architecture: Architecture,
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
    #[serde(skip)]
    pub m: Vec<f32>,
    #[serde(skip)]
    pub v: Vec<f32>,
}

#[derive(Serialize, Deserialize)]
struct Meta {
    format_version: u32,
    architecture: Vec<usize>,
    activation: String,
    input_scale: f32,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    training: Option<TrainingState>,
}

fn view(shape: Vec<usize>, data: &[f32]) -> TensorView<'_> {
    TensorView::new(Dtype::F32, shape, bytemuck::cast_slice(data)).expect("shape matches data")
}

impl Checkpoint {
    /// The safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let layout = ParamLayout::new(&self.architecture);
        let meta = Meta {
            format_version: FORMAT_VERSION,
            architecture: self.architecture.sizes.clone(),
            activation: "relu".into(),
            input_scale: INPUT_SCALE,
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
        if let Some(t) = &self.training {
            tensors.push(("optimizer.m".into(), view(vec![t.m.len()], &t.m)));
            tensors.push(("optimizer.v".into(), view(vec![t.v.len()], &t.v)));
        }
        let json = serde_json::to_string(&meta).expect("metadata serialises");
        let info = std::collections::HashMap::from([(META_KEY.to_string(), json)]);
        safetensors::serialize(tensors, Some(info))
            .map_err(|e| Error::checkpoint(&self.name, format!("cannot serialise: {e}")))
    }

    /// Class probabilities of `images` (784 pixels each) under this model, `[n, 10]` row-major,
    /// on the CPU backend: what `predict` and the browser demo's drawing and grid use.
    pub fn probabilities(&self, images: &[u8]) -> Result<Vec<f32>> {
        let n = images.len() / PIXELS;
        let mut cpu = CpuBackend::new(&self.architecture);
        cpu.set_params(&self.params);
        // Labels are unknown; zeros only feed the loss, which nobody reads here.
        cpu.upload(
            Split::Test,
            &Dataset::new("images", images.to_vec(), vec![0; n])?,
        )?;
        cpu.forward(Split::Test, &(0..n as u32).collect::<Vec<_>>())?;
        Ok(cpu
            .logits()
            .chunks_exact(CLASSES)
            .flat_map(softmax)
            .collect())
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
        if meta.format_version != FORMAT_VERSION {
            return Err(bad(format!(
                "format version {} is not supported (this gpumlp reads {FORMAT_VERSION})",
                meta.format_version
            )));
        }
        let sizes = &meta.architecture;
        if sizes.len() < 2 || sizes[0] != PIXELS || sizes[sizes.len() - 1] != CLASSES {
            return Err(bad(format!(
                "architecture {sizes:?} is not a {PIXELS}-input, {CLASSES}-class MLP"
            )));
        }
        let architecture =
            Architecture::mlp(&sizes[1..sizes.len() - 1]).map_err(|e| bad(e.to_string()))?;
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
        let training = match meta.training {
            Some(mut t) => {
                t.config
                    .validate()
                    .map_err(|e| bad(format!("training settings: {e}")))?;
                if t.config.hidden != architecture.hidden() {
                    return Err(bad(
                        "training settings disagree with the architecture".into()
                    ));
                }
                t.m = read("optimizer.m", &[layout.len])?;
                t.v = read("optimizer.v", &[layout.len])?;
                Some(t)
            }
            None => None,
        };
        Ok(Checkpoint {
            name: name.to_string(),
            architecture,
            params,
            training,
        })
    }
}

/// Probabilities from one row of logits.
fn softmax(z: &[f32]) -> Vec<f32> {
    let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = z.iter().map(|v| (v - max).exp()).collect();
    let sum: f32 = e.iter().sum();
    e.into_iter().map(|v| v / sum).collect()
}
