//! The GEMM tuner: times the candidate variants of a product shape on the device (on
//! synthetic operands, [`GemmBench`]) and keeps the fastest in the adapter's
//! [`GemmTuning`](super::tuning::GemmTuning); where tuning is off, the rule of thumb decides.

use super::bounds::Operand;
use super::context::GpuContext;
use super::gemm::{Epilogue, GemmCall, GemmKernels, GemmOperands};
use super::tuning::{GemmTuning, Shape, Variant};
use crate::config::Precision;
use crate::error::{Error, Result};
use wgpu::util::DeviceExt;

impl GemmKernels {
    /// The variant for `shape`: the tuned choice, else timed now (tuning on), else the rule of
    /// thumb.
    pub(crate) fn choose(
        &self,
        ctx: &GpuContext,
        step: &wgpu::BindGroupLayout,
        tuning: &mut GemmTuning,
        shape: Shape,
    ) -> Result<Variant> {
        let mixed = self.precision == Precision::Mixed;
        if let Some(v) = tuning.force {
            // A test forcing an f32 tile on a mixed run (or the reverse) means the other kind's
            // rule of thumb.
            if (v.matrix > 0) == mixed {
                return Ok(v);
            }
        }
        // Mixed choices are kept apart from f32 ones for the same shape.
        let key = if mixed {
            format!("mixed {shape}")
        } else {
            shape.to_string()
        };
        if let Some(v) = tuning.choices.get(&key) {
            return Ok(*v);
        }
        let max = ctx.limits.max_compute_invocations_per_workgroup;
        if mixed {
            ctx.check_mixed()?;
            let fallback = shape
                .default_cooperative(&ctx.cooperative)
                .expect("checked: the adapter offers matrices");
            if !tuning.enabled {
                return Ok(fallback);
            }
        } else if !tuning.enabled {
            return Ok(tuning.rule_of_thumb(shape, max));
        }
        #[cfg(not(target_arch = "wasm32"))]
        let start = std::time::Instant::now();
        let timings = self.time_candidates(ctx, step, shape, tuning.no_split)?;
        #[cfg(not(target_arch = "wasm32"))]
        {
            tuning.seconds += start.elapsed().as_secs_f64();
        }
        let best = match timings.iter().min_by(|a, b| a.1.total_cmp(&b.1)) {
            Some((v, _)) => *v,
            None => tuning.rule_of_thumb(shape, max),
        };
        tuning.choices.insert(key.clone(), best);
        tuning.timings.insert(key, timings);
        tuning.changed = true;
        Ok(best)
    }

    /// Seconds per product of every candidate on `shape`, on synthetic operands: each timed as
    /// a run of dispatches in one pass, after a warm-up, waiting for the device. The tiles
    /// first, then the split K of the fastest tile and of the largest (two dispatches each, the
    /// second summing the parts), so a shape times at most 12 candidates.
    pub(crate) fn time_candidates(
        &self,
        ctx: &GpuContext,
        step: &wgpu::BindGroupLayout,
        shape: Shape,
        no_split: bool,
    ) -> Result<Vec<(Variant, f64)>> {
        let mut bench = GemmBench::new(ctx, self, step, shape)?;
        let max = ctx.limits.max_compute_invocations_per_workgroup;
        let mut out = Vec::new();
        if self.precision == Precision::Mixed {
            for variant in super::tuning::cooperative_variants(&ctx.cooperative) {
                out.push((
                    variant,
                    bench.seconds_per_product(ctx, self, step, variant)?,
                ));
            }
            return Ok(out);
        }
        for variant in shape.candidates(max) {
            out.push((
                variant,
                bench.seconds_per_product(ctx, self, step, variant)?,
            ));
        }
        let best = out
            .iter()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(v, _)| *v);
        if let Some(best) = best.filter(|_| !no_split) {
            for variant in shape.split_candidates(best, max) {
                // A split whose workspace passes the binding limit is no candidate.
                if let Ok(seconds) = bench.seconds_per_product(ctx, self, step, variant) {
                    out.push((variant, seconds));
                }
            }
        }
        Ok(out)
    }
}

/// One product alone on synthetic operands: what the tuner times and `gpumlp bench` reports.
// In a browser the candidates cannot be timed (`seconds_per_product`), so nothing reads these.
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) struct GemmBench {
    call: GemmCall,
    step_bind: wgpu::BindGroup,
    shape: Shape,
    /// The operands, kept alive with the call that binds them.
    _buffers: [wgpu::Buffer; 3],
}

impl GemmBench {
    pub(crate) fn new(
        ctx: &GpuContext,
        kernels: &GemmKernels,
        step: &wgpu::BindGroupLayout,
        shape: Shape,
    ) -> Result<Self> {
        let device = &ctx.device;
        let (m, n, k) = (shape.m as u64, shape.n as u64, shape.k as u64);
        let largest = 4 * (m * k).max(k * n).max(m * n);
        if largest > ctx.limits.max_storage_buffer_binding_size {
            return Err(Error::Gpu(format!(
                "a {shape} product needs {} MiB buffers, over this GPU's binding limit",
                largest >> 20
            )));
        }
        let filled = |label: &str, len: u64| {
            // Padded to whole vec4s, as the backend's buffers are.
            let data: Vec<f32> = (0..len.next_multiple_of(4))
                .map(|i| ((i % 13) as f32 - 6.0) * 0.01)
                .collect();
            device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytemuck::cast_slice(&data),
                usage: wgpu::BufferUsages::STORAGE,
            })
        };
        let (a, b, c) = (
            filled("bench a", m * k),
            filled("bench b", k * n),
            filled("bench c", m * n),
        );
        let operand = |transposed: bool, rows: u64, cols: u64| Operand {
            offset: 0,
            ld: if transposed { rows } else { cols },
            transposed,
        };
        // A weight gradient's shape is timed with its epilogue (the bias-gradient sums), the
        // others plain: what decides whether K may be split.
        let epilogue = if shape.a_t {
            Epilogue::RowSums
        } else {
            Epilogue::None
        };
        let call = GemmCall::new(
            ctx,
            kernels,
            "bench gemm",
            (shape.m, shape.n, shape.k, 0),
            epilogue,
            GemmOperands {
                a: (&a, operand(shape.a_t, m, k)),
                b: (&b, operand(shape.b_t, k, n)),
                c: (&c, 0),
                aux: (&a, 0),
                activation: (crate::model::Activation::Relu, None),
                data: None,
            },
        )?;
        let (_, step_bind) = super::step_table::table(&ctx.device, step, 1);
        Ok(GemmBench {
            call,
            step_bind,
            shape,
            _buffers: [a, b, c],
        })
    }

    /// Seconds per product with `variant`: one warm-up run (after the pipelines are compiled),
    /// then enough repetitions in one pass to take about 2 ms, timed as
    /// [`GpuContext::time_pass`] can (GPU timestamps, else the wall clock around the wait).
    /// Natively only: a browser can neither wait for the GPU nor read a clock this way.
    pub(crate) fn seconds_per_product(
        &mut self,
        ctx: &GpuContext,
        kernels: &GemmKernels,
        step: &wgpu::BindGroupLayout,
        variant: Variant,
    ) -> Result<f64> {
        #[cfg(target_arch = "wasm32")]
        {
            let _ = (ctx, kernels, step, variant);
            Err(Error::Gpu("GEMM timing needs a native build".into()))
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = self.shape;
            self.call.forget_choices();
            self.call
                .prepare(ctx, kernels, step, self.shape.m, |_| Ok(variant))?;
            let run = |reps: usize| {
                ctx.time_pass("gemm timing", |pass| {
                    pass.set_bind_group(1, &self.step_bind, &[0]);
                    for _ in 0..reps {
                        self.call.encode(pass, self.shape.m, 0);
                    }
                })
            };
            let once = run(1)?.max(1e-6);
            let reps = ((2e-3 / once).ceil() as usize).clamp(1, 200);
            Ok(run(reps)? / reps as f64)
        }
    }
}
