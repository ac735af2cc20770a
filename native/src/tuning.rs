//! The GEMM tuning cache: which kernel variant runs each product shape fastest, timed on the
//! device at the shape's first use (see `gpumlp::backend::gpu::gemm`) and kept per adapter and
//! driver in `<cache>/gemm-tuning/`, so later runs start at once. A cache file that is
//! unreadable or for another device is set aside with a note and tuned again.

use crate::data::cache_dir;
use crate::files::write_atomic;
use anyhow::Result;
use gpumlp::backend::gpu::{GemmTuning, GpuContext};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// A context's tuning and the file it is kept in.
pub struct TuningCache {
    tuning: Arc<Mutex<GemmTuning>>,
    path: PathBuf,
}

impl TuningCache {
    /// Loads the cached choices for `ctx`'s adapter into it.
    pub fn load(ctx: &GpuContext) -> TuningCache {
        let mut tuning = ctx.tuning.lock().expect("tuning lock");
        let name = tuning
            .device
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect::<Vec<_>>()
            .join("-");
        let path = cache_dir().join("gemm-tuning").join(format!("{name}.json"));
        if let Ok(text) = std::fs::read_to_string(&path) {
            match GemmTuning::from_json(&text, &tuning.device) {
                Ok(cached) => tuning.choices = cached.choices,
                Err(e) => eprintln!(
                    "note: ignoring the GEMM tuning cache {} ({e}); tuning again",
                    path.display()
                ),
            }
        }
        TuningCache {
            tuning: ctx.tuning.clone(),
            path,
        }
    }

    /// Writes the choices back if the backend timed new shapes (once: it says so in a note).
    pub fn save(&self) -> Result<()> {
        let mut tuning = self.tuning.lock().expect("tuning lock");
        if !tuning.changed {
            return Ok(());
        }
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        write_atomic(&self.path, tuning.to_json().as_bytes())?;
        eprintln!(
            "note: timed the GEMM variants for {} product shapes on this GPU in {:.2} s; kept in {}",
            tuning.timings.len(),
            tuning.seconds,
            self.path.display()
        );
        tuning.changed = false;
        Ok(())
    }
}
