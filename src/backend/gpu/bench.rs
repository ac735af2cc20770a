//! Timings for `gpumlp bench` (natively only: a browser can neither wait for the GPU nor read
//! a clock this way): single GEMMs with the variant the backend would choose or with every
//! candidate, each kernel family of a training step alone, and the CPU time spent encoding.

use super::gemm::GemmKernels;
use super::step_table::{StepSlot, StepTable};
use super::tuner::GemmBench;
use super::tuning::{Shape, Variant};
use super::{GpuBackend, GpuContext};
use crate::backend::{Split, StepHyper};
use crate::error::Result;

/// GEMMs alone, for `gpumlp bench`: a product's time with the variant the backend would choose,
/// or with every candidate.
pub struct GemmProbe {
    kernels: GemmKernels,
    step: wgpu::BindGroupLayout,
}

impl GemmProbe {
    pub fn new(ctx: &GpuContext) -> Self {
        GemmProbe {
            kernels: GemmKernels::new(&ctx.device, crate::config::Precision::F32),
            step: StepTable::new(&ctx.device).layout,
        }
    }

    /// The variant the backend runs `shape` with (tuned now if tuning is on and it is new) and
    /// its seconds per product.
    pub fn seconds(&self, ctx: &GpuContext, shape: Shape) -> Result<(Variant, f64)> {
        let variant = {
            let mut tuning = ctx.tuning.lock().expect("tuning lock");
            self.kernels.choose(ctx, &self.step, &mut tuning, shape)?
        };
        let mut bench = GemmBench::new(ctx, &self.kernels, &self.step, shape)?;
        Ok((
            variant,
            bench.seconds_per_product(ctx, &self.kernels, &self.step, variant)?,
        ))
    }

    /// Every candidate's seconds per product on `shape`, timed now; the fastest becomes the
    /// shape's choice in `ctx.tuning`.
    pub fn candidates(&self, ctx: &GpuContext, shape: Shape) -> Result<Vec<(Variant, f64)>> {
        let mut tuning = ctx.tuning.lock().expect("tuning lock");
        tuning.choices.remove(&shape.to_string());
        tuning.enabled = true;
        self.kernels.choose(ctx, &self.step, &mut tuning, shape)?;
        Ok(tuning.timings[&shape.to_string()].clone())
    }
}

impl GpuBackend {
    /// Dispatches per training step at the largest batch prepared: `1 + 3L` for `L` layers,
    /// and one more for each product whose K is split.
    pub fn dispatches_per_step(&self) -> usize {
        let split = self.network.as_ref().map_or(0, |n| n.split_products());
        1 + 3 * self.arch.layers() + split
    }

    /// Seconds per training step of each kernel family (the GEMMs, the softmax, the optimizer)
    /// at `batch` rows, each family's dispatches of a step run alone `reps` times in one pass,
    /// timed as [`GpuContext::time_pass`] can (GPU timestamps, else the wall clock). Needs a
    /// training set uploaded, an optimizer attached and a span trained (its order buffer
    /// holds the rows read); leaves the parameters as they are.
    pub fn family_seconds(
        &mut self,
        batch: usize,
        reps: usize,
    ) -> Result<Vec<(&'static str, f64)>> {
        self.prepare(Split::Train, batch, batch)?;
        // A rate of 0 leaves the parameters as they are (decay 1, step 0).
        let slot = StepSlot::new(Split::Train, 0, batch, batch)
            .with_hyper(&self.attached()?.config, StepHyper { lr: 0.0, t: 1 });
        self.steps.write(&self.ctx.device, &self.ctx.queue, &[slot]);
        let opt = self.attached()?;
        let network = self.network();
        type Encode<'e> = &'e dyn Fn(&mut wgpu::ComputePass);
        let families: [(&'static str, Encode); 3] = [
            ("gemm", &|pass| {
                self.steps.bind(pass, 0);
                network.encode_gemms(pass, batch);
            }),
            ("softmax_xent", &|pass| {
                self.steps.bind(pass, 0);
                network.encode_softmax(pass, &self.kernels);
            }),
            ("optimizer", &|pass| self.encode_update(pass, opt, 0)),
        ];
        let mut out = Vec::new();
        for (name, encode) in families {
            let run = |reps: usize| {
                self.ctx
                    .time_pass(name, |pass| (0..reps).for_each(|_| encode(pass)))
            };
            run(1)?;
            out.push((name, run(reps)? / reps as f64));
        }
        self.reset_stats(Split::Train);
        Ok(out)
    }

    /// Mean CPU time spent encoding one training step's dispatches so far (None before any).
    pub fn encode_seconds_per_step(&self) -> Option<f64> {
        (self.encoding.1 > 0 && self.encoding.0 > 0.0)
            .then(|| self.encoding.0 / self.encoding.1 as f64)
    }
}
