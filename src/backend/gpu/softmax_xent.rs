//! The softmax cross-entropy kernel family (shaders/softmax_xent.wgsl): forward, backward and
//! the running stats of a batch in one workgroup, the labels read from a split's dataset through
//! the step's order.

use super::context::{entry, storage, GpuContext};

pub(crate) struct SoftmaxKernel {
    layout: wgpu::BindGroupLayout,
    pipeline: wgpu::ComputePipeline,
}

impl SoftmaxKernel {
    /// The kernel for logits of `classes`.
    pub fn new(ctx: &GpuContext, step: &wgpu::BindGroupLayout, classes: usize) -> Self {
        let layout = ctx
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some("softmax_xent"),
                entries: &[
                    storage(0, true),
                    storage(1, true),
                    storage(2, false),
                    storage(3, false),
                    storage(4, true),
                ],
            });
        // The class count comes from the network, not mirrored in WGSL.
        let pipeline = ctx.pipeline(
            "softmax_xent.wgsl",
            "softmax_xent",
            &layout,
            step,
            &[("CLASSES", classes as f64)],
            "",
        );
        SoftmaxKernel { layout, pipeline }
    }

    /// Binds the logits, a split's labels, the logits' gradient, the stats and the split's
    /// order (ranges proven per dispatch by `bounds::softmax` and `bounds::dataset`).
    pub fn bind(
        &self,
        ctx: &GpuContext,
        (logits, labels, dz, stats, order): (
            &wgpu::Buffer,
            &wgpu::Buffer,
            &wgpu::Buffer,
            &wgpu::Buffer,
            &wgpu::Buffer,
        ),
    ) -> wgpu::BindGroup {
        ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("softmax_xent"),
            layout: &self.layout,
            entries: &[
                entry(0, logits),
                entry(1, labels),
                entry(2, dz),
                entry(3, stats),
                entry(4, order),
            ],
        })
    }

    /// Encodes one batch's softmax (the step table is bound by the caller).
    pub fn encode(&self, pass: &mut wgpu::ComputePass, bind: &wgpu::BindGroup) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, bind, &[]);
        pass.dispatch_workgroups(1, 1, 1);
    }
}
