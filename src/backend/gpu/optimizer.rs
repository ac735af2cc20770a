//! The optimizer kernel family (shaders/optimizer.wgsl): one update of the whole flat parameter
//! buffer per step, by the rule of the backend's optimizer, its per-step scalars read from the
//! step table and its fixed settings from a uniform written once.

use super::bounds;
use super::context::{entry, storage, uniform, words, GpuContext};
use crate::error::Result;
use crate::optim::{OptimizerConfig, OptimizerKind};
use wgpu::util::DeviceExt;

/// Invocations per workgroup, injected into optimizer.wgsl as `WG`.
pub(crate) const WG: u32 = 256;

/// `Opt` in optimizer.wgsl: the optimizer's fixed settings (a test holds the two layouts
/// together: `wgsl_layouts`).
#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct OptParams {
    pub len: u32,
    pub momentum: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    _pad: [u32; 3],
}

/// The update rule of one optimizer: its bind group layout (settings, parameters, gradients,
/// then one state buffer per `OptimizerKind::state_names`) and its pipeline.
pub(crate) struct UpdateKernel {
    layout: wgpu::BindGroupLayout,
    pipeline: wgpu::ComputePipeline,
}

impl UpdateKernel {
    pub fn new(ctx: &GpuContext, step: &wgpu::BindGroupLayout, kind: OptimizerKind) -> Self {
        let mut entries = vec![uniform(0, false), storage(1, false), storage(2, true)];
        let states = kind.state_names().len() as u32;
        entries.extend((3..3 + states).map(|b| storage(b, false)));
        let layout = ctx
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some("optimizer"),
                entries: &entries,
            });
        let entry_point = match kind {
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::Adam => "adam",
        };
        let pipeline = ctx.pipeline(
            "optimizer.wgsl",
            entry_point,
            &layout,
            step,
            &[("WG", WG as f64)],
            "",
        );
        UpdateKernel { layout, pipeline }
    }

    /// Binds `len` parameters, their gradients and the optimizer's state buffers, with `opt`'s
    /// fixed settings, proving first that every buffer holds `len` values.
    pub fn bind(
        &self,
        ctx: &GpuContext,
        opt: &OptimizerConfig,
        len: usize,
        (params, grads, state): (&wgpu::Buffer, &wgpu::Buffer, &[wgpu::Buffer]),
    ) -> Result<wgpu::BindGroup> {
        let mut lens = vec![words(params), words(grads)];
        lens.extend(state.iter().map(words));
        bounds::update(len as u64, &lens)?;
        let settings = ctx
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("optimizer settings"),
                contents: bytemuck::bytes_of(&OptParams {
                    len: len as u32,
                    momentum: opt.momentum,
                    beta1: opt.beta1,
                    beta2: opt.beta2,
                    eps: opt.eps,
                    _pad: [0; 3],
                }),
                usage: wgpu::BufferUsages::UNIFORM,
            });
        let mut entries = vec![entry(0, &settings), entry(1, params), entry(2, grads)];
        entries.extend((3..).zip(state).map(|(i, b)| entry(i, b)));
        Ok(ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("optimizer"),
            layout: &self.layout,
            entries: &entries,
        }))
    }

    /// Encodes the update of `len` parameters (the step table is bound by the caller), as a
    /// 2-D grid of workgroups where one dimension would pass the device's limit.
    pub fn encode(
        &self,
        ctx: &GpuContext,
        pass: &mut wgpu::ComputePass,
        bind: &wgpu::BindGroup,
        len: usize,
    ) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, bind, &[]);
        let groups = (len as u32).div_ceil(WG).max(1);
        let x = groups.min(ctx.limits.max_compute_workgroups_per_dimension);
        pass.dispatch_workgroups(x, groups.div_ceil(x), 1);
    }
}
