//! The step table: one 256-byte uniform slot per training step (`Step` in common.wgsl), bound
//! with a dynamic offset as group 1 of every kernel, so a whole span of steps is encoded at once
//! and each dispatch reads its own step's rows, batch size, loss scale and optimizer scalars.

use super::context::uniform;
use crate::backend::{Split, StepHyper};
use crate::optim::OptimizerConfig;

/// Bytes between two steps' slots (WebGPU's dynamic-offset alignment).
pub(crate) const SLOT: u64 = 256;

/// One step's slot; `Step` in common.wgsl (a test holds the two layouts together).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct StepSlot {
    pub order_offset: u32,
    pub batch: u32,
    pub split: u32,
    pub inv_batch: f32,
    pub lr: f32,
    pub decay: f32,
    pub adam_step: f32,
    pub adam_v_scale: f32,
}

/// The optimizer's scalars of a slot: the tail of `StepSlot` from `lr` on, written alone by an
/// update that follows a forward.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct HyperScalars {
    lr: f32,
    decay: f32,
    adam_step: f32,
    adam_v_scale: f32,
}

impl StepSlot {
    /// A step over `batch` rows of `split` from `order_offset` of its order, whose loss
    /// gradient is the rows' summed loss divided by `mean_over`.
    pub fn new(split: Split, order_offset: usize, batch: usize, mean_over: usize) -> Self {
        StepSlot {
            order_offset: order_offset as u32,
            batch: batch as u32,
            split: split as u32,
            inv_batch: 1.0 / mean_over.max(1) as f32,
            ..Default::default()
        }
    }

    /// Fills in the optimizer's scalars for step `h` (the same values the CPU backend uses).
    pub fn with_hyper(mut self, opt: &OptimizerConfig, h: StepHyper) -> Self {
        let s = opt.scalars(h.lr, h.t);
        self.lr = s.lr;
        self.decay = s.decay;
        self.adam_step = s.adam_step;
        self.adam_v_scale = s.adam_v_scale;
        self
    }
}

/// The table's buffer and bind group, grown to the longest span seen.
pub(crate) struct StepTable {
    pub layout: wgpu::BindGroupLayout,
    buffer: wgpu::Buffer,
    bind: wgpu::BindGroup,
    capacity: usize,
}

impl StepTable {
    pub fn new(device: &wgpu::Device) -> Self {
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("step"),
            entries: &[uniform(0, true)],
        });
        let (buffer, bind) = table(device, &layout, 1);
        StepTable {
            layout,
            buffer,
            bind,
            capacity: 1,
        }
    }

    /// Writes `slots` from slot 0 on, growing the table first if they do not fit.
    pub fn write(&mut self, device: &wgpu::Device, queue: &wgpu::Queue, slots: &[StepSlot]) {
        if slots.len() > self.capacity {
            (self.buffer, self.bind) = table(device, &self.layout, slots.len());
            self.capacity = slots.len();
        }
        let mut bytes = vec![0u8; slots.len() * SLOT as usize];
        for (i, s) in slots.iter().enumerate() {
            bytes[i * SLOT as usize..][..std::mem::size_of::<StepSlot>()]
                .copy_from_slice(bytemuck::bytes_of(s));
        }
        queue.write_buffer(&self.buffer, 0, &bytes);
    }

    /// Writes the optimizer's scalars for `h` into slot `slot`, leaving the rest of it (the
    /// rows the slot's forward and backward ran on) as it is.
    pub fn write_hyper(
        &self,
        queue: &wgpu::Queue,
        slot: usize,
        opt: &OptimizerConfig,
        h: StepHyper,
    ) {
        let s = StepSlot::default().with_hyper(opt, h);
        let scalars = HyperScalars {
            lr: s.lr,
            decay: s.decay,
            adam_step: s.adam_step,
            adam_v_scale: s.adam_v_scale,
        };
        let at = slot as u64 * SLOT + std::mem::offset_of!(StepSlot, lr) as u64;
        queue.write_buffer(&self.buffer, at, bytemuck::bytes_of(&scalars));
    }

    /// Binds slot `slot` as group 1 of the kernels that follow in `pass`.
    pub fn bind(&self, pass: &mut wgpu::ComputePass, slot: usize) {
        pass.set_bind_group(1, &self.bind, &[(slot as u64 * SLOT) as u32]);
    }
}

/// A table of `steps` slots and its bind group.
pub(crate) fn table(
    device: &wgpu::Device,
    layout: &wgpu::BindGroupLayout,
    steps: usize,
) -> (wgpu::Buffer, wgpu::BindGroup) {
    let buffer = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("step table"),
        size: SLOT * steps.max(1) as u64,
        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some("step"),
        layout,
        entries: &[wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &buffer,
                offset: 0,
                size: wgpu::BufferSize::new(std::mem::size_of::<StepSlot>() as u64),
            }),
        }],
    });
    (buffer, bind)
}
