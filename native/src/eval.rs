//! `gpumlp eval` and `gpumlp predict`: a saved model on a test set, or on pictures, CSV rows
//! or NumPy arrays.

use crate::cli::{EvalArgs, PredictArgs};
use crate::data;
use crate::devices;
use crate::files::read;
use crate::ranks::Job;
use anyhow::{anyhow, Result};
use gpumlp::backend::{argmax, Split, Tensor};
use gpumlp::inference::probabilities;
use gpumlp::preprocess::{digit_from_luma, luma_over_white, scaled_picture};
use gpumlp::{csv_table, numpy, Checkpoint, DataSpec, Features};
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
    let data = data::load(&source, &data::Reading::like(&ckpt.data), notice)?;
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
            "--data {}: the test set holds no samples to evaluate on",
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
        "test accuracy {:.2}% (loss {:.4}) on {} test samples of {} on {}",
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
                "data": data::describe(&data),
                "model": args.model,
            })
        );
    }
    Ok(())
}

/// Loads a PNG or JPEG.
fn load_picture(path: &Path) -> Result<image::DynamicImage> {
    image::load_from_memory(&read(path)?)
        .map_err(|e| anyhow!("{}: not a readable PNG or JPEG image ({e})", path.display()))
}

/// The samples of one file for `spec`'s model: a CSV table's rows, an `.npy` array's samples,
/// or one picture (a digit prepared as MNIST's were, for a 28x28 grey model; else scaled to
/// the model's images).
fn samples(path: &Path, spec: &DataSpec) -> Result<Features> {
    let name = path.display().to_string();
    let extension = path.extension().map(|e| e.to_string_lossy().to_lowercase());
    let features = match extension.as_deref() {
        Some("csv") => Features::Floats(csv_table::read_features(
            &name,
            &read(path)?,
            spec.features,
            spec.read.label.as_deref(),
        )?),
        Some("npy") => {
            let array = numpy::read_npy(&name, "the array", &read(path)?)?;
            let (features, width, _) = numpy::features(&name, array)?;
            if width != spec.features {
                anyhow::bail!(
                    "{name}: samples of {width} features; the model reads {}",
                    spec.features
                );
            }
            features
        }
        _ if spec.is_digit_image() => {
            let rgba = load_picture(path)?.to_rgba8();
            let luma = luma_over_white(rgba.as_raw());
            Features::Bytes(digit_from_luma(rgba.width(), rgba.height(), &luma).map_err(|e| anyhow!("{name}: {e}"))?)
        }
        _ => match spec.image {
            Some(shape) => Features::Bytes(scaled_picture(&load_picture(path)?, shape).map_err(|e| anyhow!("{name}: {e}"))?),
            None => anyhow::bail!(
                "{name}: the model reads tables of {} features, not pictures: give a .csv or .npy file",
                spec.features
            ),
        },
    };
    Ok(spec.prepare(&name, features)?)
}

/// Classes listed after each prediction: all of them up to this many, else the most probable.
const LISTED: usize = 10;

pub fn predict(args: PredictArgs) -> Result<()> {
    let ckpt = load_model(&args.model)?;
    let spec = &ckpt.data;
    let classes = ckpt.architecture.sizes[ckpt.architecture.layers()];
    let mut results = Vec::new();
    for path in &args.images {
        let features = samples(path, spec)?;
        let rows = features.len() / spec.features;
        let probabilities = probabilities(&ckpt.architecture, &ckpt.params, features)?;
        for (row, probs) in probabilities.chunks_exact(classes).enumerate() {
            let class = argmax(probs);
            let mut order: Vec<usize> = (0..classes).collect();
            if classes > LISTED {
                order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
                order.truncate(LISTED);
            }
            let listing: Vec<String> = order
                .iter()
                .map(|&c| format!("{}:{:.3}", spec.class_name(c), probs[c]))
                .collect();
            let which = if rows == 1 {
                path.display().to_string()
            } else {
                format!("{} row {}", path.display(), row + 1)
            };
            let named = match &spec.names {
                Some(_) => format!(" ({})", spec.class_name(class)),
                None => String::new(),
            };
            println!(
                "{which}: {class}{named} (p = {:.3})  {}",
                probs[class],
                listing.join(" ")
            );
            let mut result = json!({ "file": path, "class": class, "probabilities": probs });
            if rows > 1 {
                result["row"] = json!(row + 1);
            }
            if spec.names.is_some() {
                result["name"] = json!(spec.class_name(class));
            }
            results.push(result);
        }
    }
    if args.json {
        println!("{}", serde_json::Value::Array(results));
    }
    Ok(())
}
