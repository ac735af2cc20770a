//! `gpumlp eval` and `gpumlp predict`: a saved model on a test set, or on pictures of digits.

use crate::cli::{EvalArgs, PredictArgs};
use crate::data;
use crate::devices;
use crate::files::read;
use anyhow::{anyhow, Result};
use gpumlp::backend::{Backend, Split};
use gpumlp::idx::CLASSES;
use gpumlp::{Checkpoint, CpuBackend, Dataset};
use serde_json::json;
use std::path::Path;

fn load_model(path: &Path) -> Result<Checkpoint> {
    Ok(Checkpoint::from_bytes(
        &path.display().to_string(),
        &read(path)?,
    )?)
}

pub fn eval(args: EvalArgs) -> Result<()> {
    let ckpt = load_model(&args.model)?;
    let source = data::choose(&args.data, Some(&ckpt))?;
    let data = data::load(&source, &mut |note| eprintln!("note: {note}"))?;
    if data.test.is_empty() {
        anyhow::bail!(
            "--data {}: the test set holds no images to evaluate on",
            data.name
        );
    }
    let mut backend = devices::open(&args.device.device, &ckpt.architecture)?;
    backend.set_params(&ckpt.params);
    backend.upload(Split::Test, &data.test)?;
    let stats = backend.evaluate(Split::Test)?;
    let device = backend.device();
    println!(
        "test accuracy {:.2}% (loss {:.4}) on {} test images of {} on {}",
        100.0 * stats.accuracy(),
        stats.loss(),
        data.test.len(),
        data.name,
        device.name
    );
    if args.json {
        println!(
            "{}",
            json!({
                "test_accuracy": stats.accuracy(),
                "test_loss": stats.loss(),
                "device": device,
                "data": { "name": data.name, "test": data.test.len() },
                "model": args.model,
            })
        );
    }
    Ok(())
}

/// Loads a PNG or JPEG as grayscale; transparent pixels count as white paper, so a digit drawn
/// on a transparent canvas reads as dark ink on light.
fn load_luma(path: &Path) -> Result<(u32, u32, Vec<u8>)> {
    let bytes = read(path)?;
    let img = image::load_from_memory(&bytes)
        .map_err(|e| anyhow!("{}: not a readable PNG or JPEG image ({e})", path.display()))?
        .to_luma_alpha8();
    let luma = img
        .pixels()
        .map(|p| {
            let (l, a) = (p.0[0] as f32, p.0[1] as f32 / 255.0);
            (l * a + 255.0 * (1.0 - a)).round() as u8
        })
        .collect();
    Ok((img.width(), img.height(), luma))
}

pub fn predict(args: PredictArgs) -> Result<()> {
    let ckpt = load_model(&args.model)?;
    let mut images = Vec::new();
    for path in &args.images {
        let (w, h, luma) = load_luma(path)?;
        let digit = gpumlp::preprocess::digit_from_luma(w, h, &luma)
            .map_err(|e| anyhow!("{}: {e}", path.display()))?;
        images.extend_from_slice(&digit);
    }
    let n = args.images.len();
    let mut backend = CpuBackend::new(&ckpt.architecture);
    backend.set_params(&ckpt.params);
    // Labels are unknown; zeros only feed the loss, which nobody reads here.
    backend.upload(Split::Test, &Dataset::new("images", images, vec![0; n])?)?;
    backend.forward(Split::Test, &(0..n as u32).collect::<Vec<_>>())?;
    let logits = backend.logits();
    let mut results = Vec::new();
    for (path, z) in args.images.iter().zip(logits.chunks_exact(CLASSES)) {
        let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exp: Vec<f32> = z.iter().map(|&v| (v - max).exp()).collect();
        let sum: f32 = exp.iter().sum();
        let probs: Vec<f32> = exp.iter().map(|e| e / sum).collect();
        let class = gpumlp::backend::argmax(&probs);
        let listing: Vec<String> = probs
            .iter()
            .enumerate()
            .map(|(c, p)| format!("{c}:{p:.3}"))
            .collect();
        println!(
            "{}: {class} (p = {:.3})  {}",
            path.display(),
            probs[class],
            listing.join(" ")
        );
        results.push(json!({ "file": path, "class": class, "probabilities": probs }));
    }
    if args.json {
        println!("{}", serde_json::Value::Array(results));
    }
    Ok(())
}
