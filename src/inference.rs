//! Using a trained model: class probabilities for samples, on the CPU backend (a few pictures or
//! table rows are far too little work to be worth a GPU). What `gpumlp predict` and the browser
//! demo's drawing canvas and digit grid run.

use crate::backend::{Backend, CpuBackend, Split, Tensor};
use crate::dataset::{Dataset, Features};
use crate::error::Result;
use crate::model::Architecture;

/// Class probabilities of `features` (samples of the model's input width, labels unused)
/// under the model `architecture` with `params`, `[n, classes]` row-major.
pub fn probabilities(
    architecture: &Architecture,
    params: &[f32],
    features: Features,
) -> Result<Vec<f32>> {
    let width = architecture.sizes[0];
    let n = features.len() / width;
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut cpu = CpuBackend::new(architecture);
    cpu.write(Tensor::Params, params)?;
    // Labels are unknown; zeros only feed the loss, which nobody reads here.
    cpu.upload(
        Split::Test,
        &Dataset::new("samples", features, width, vec![0; n])?,
    )?;
    cpu.forward(Split::Test, &(0..n as u32).collect::<Vec<_>>(), n)?;
    let classes = architecture.sizes[architecture.layers()];
    Ok(cpu
        .output()
        .chunks_exact(classes)
        .flat_map(softmax)
        .collect())
}

/// Probabilities from one row of logits.
fn softmax(z: &[f32]) -> Vec<f32> {
    let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = z.iter().map(|v| (v - max).exp()).collect();
    let sum: f32 = e.iter().sum();
    e.into_iter().map(|v| v / sum).collect()
}
