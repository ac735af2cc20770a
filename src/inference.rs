//! Using a trained model: class probabilities for 28x28 images, on the CPU backend (one picture
//! or a grid of 48 is far too little work to be worth a GPU). What `gpumlp predict` and the
//! browser demo's drawing canvas and digit grid run.

use crate::backend::{Backend, CpuBackend, Split, Tensor};
use crate::dataset::Dataset;
use crate::error::Result;
use crate::idx::{CLASSES, PIXELS};
use crate::model::Architecture;

/// Class probabilities of `images` (784 pixels each) under the model `architecture` with
/// `params`, `[n, 10]` row-major.
pub fn probabilities(
    architecture: &Architecture,
    params: &[f32],
    images: &[u8],
) -> Result<Vec<f32>> {
    let n = images.len() / PIXELS;
    let mut cpu = CpuBackend::new(architecture);
    cpu.write(Tensor::Params, params)?;
    // Labels are unknown; zeros only feed the loss, which nobody reads here.
    cpu.upload(
        Split::Test,
        &Dataset::new("images", images.to_vec(), vec![0; n])?,
    )?;
    cpu.forward(Split::Test, &(0..n as u32).collect::<Vec<_>>(), n)?;
    Ok(cpu
        .output()
        .chunks_exact(CLASSES)
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
