//! `gpumlp eval` and `gpumlp predict`: a saved model on a test set, or on pictures of digits.

use crate::cli::{EvalArgs, PredictArgs};
use crate::data;
use crate::devices;
use crate::files::read;
use crate::ranks::Job;
use anyhow::{anyhow, Result};
use gpumlp::backend::{argmax, Split, Tensor};
use gpumlp::idx::CLASSES;
use gpumlp::inference::probabilities;
use gpumlp::preprocess::{digit_from_luma, luma_over_white};
use gpumlp::Checkpoint;
use pollster::block_on;
use serde_json::json;
use std::path::Path;

fn load_model(path: &Path) -> Result<Checkpoint> {
    Ok(Checkpoint::from_bytes(
        &path.display().to_string(),
        &read(path)?,
    )?)
}

pub fn eval(args: EvalArgs, notice: &mut dyn FnMut(&str, &str)) -> Result<()> {
    let ckpt = load_model(&args.model)?;
    let source = data::choose(&args.data, Some(&ckpt))?;
    let data = data::load(&source, notice)?;
    if let Some(trained_on) = ckpt.training.as_ref().map(|t| &t.data) {
        if *trained_on != data.name {
            eprintln!(
                "note: {} was trained on {trained_on}; evaluating it on {}",
                args.model.display(),
                data.name
            );
        }
    }
    if data.test.is_empty() {
        anyhow::bail!(
            "--data {}: the test set holds no images to evaluate on",
            data.name
        );
    }
    let (mut backend, tuning, _) =
        devices::open(&args.device.device, &ckpt.architecture, &Job::alone())?;
    backend.write(Tensor::Params, &ckpt.params)?;
    backend.upload(Split::Test, &data.test)?;
    let stats = block_on(backend.evaluate(Split::Test, data.test.len()))?;
    if let Some(tuning) = tuning {
        tuning.save()?;
    }
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

/// Loads a PNG or JPEG as gray levels over white paper (see `preprocess::luma_over_white`).
fn load_luma(path: &Path) -> Result<(u32, u32, Vec<u8>)> {
    let bytes = read(path)?;
    let img = image::load_from_memory(&bytes)
        .map_err(|e| anyhow!("{}: not a readable PNG or JPEG image ({e})", path.display()))?
        .to_rgba8();
    Ok((img.width(), img.height(), luma_over_white(img.as_raw())))
}

pub fn predict(args: PredictArgs) -> Result<()> {
    let ckpt = load_model(&args.model)?;
    let mut images = Vec::new();
    for path in &args.images {
        let (w, h, luma) = load_luma(path)?;
        let digit = digit_from_luma(w, h, &luma).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        images.extend_from_slice(&digit);
    }
    let probabilities = probabilities(&ckpt.architecture, &ckpt.params, &images)?;
    let mut results = Vec::new();
    for (path, probs) in args.images.iter().zip(probabilities.chunks_exact(CLASSES)) {
        let class = argmax(probs);
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
