//! The network's wiring on the GPU: the datasets resident on it, the per-batch-size buffers
//! (activations and the loss gradient) and every product of the network bound to them, and the
//! order in which a step's dispatches are encoded.
//!
//! Per step, `1 + 3L` dispatches for `L` layers (10 for B1): one GEMM per layer with bias and
//! the activation fused (the first reading its input straight from the resident dataset through
//! the step's shuffled order), softmax cross-entropy forward and backward with the running stats
//! in one kernel, then per layer the weight-gradient GEMM with the bias gradient fused (the
//! first layer's reading the dataset again) and (but for the first layer) the input-gradient
//! GEMM with the activation's derivative fused, and one optimizer kernel over the flat buffer
//! (encoded by the backend, which owns the optimizer).
//!
//! The batch buffers are made for a capacity and made again only when a larger batch comes; an
//! upload binds the new dataset to the calls that read it, nothing else.

use super::bounds::{self, Operand};
use super::context::{words, GpuContext};
use super::gemm::{
    DataFormat, DataSide, Epilogue, GemmCall, GemmKernels, GemmOperands, BATCH_K, BATCH_M,
};
use super::softmax_xent::SoftmaxKernel;
use crate::backend::Split;
use crate::dataset::Features;
use crate::error::{Error, Result};
use crate::model::{Architecture, ParamLayout};
use wgpu::util::DeviceExt;

/// The kernel families every backend runs, built once (the optimizer's comes with it).
pub(crate) struct Kernels {
    pub gemm: GemmKernels,
    pub softmax: SoftmaxKernel,
}

/// A dataset resident on the GPU: each sample `format.row_words` u32 words (bytes packed four
/// to a word, or f32), zero-padded to whole vec4s so the first layer reads it four at a time.
pub(crate) struct SplitData {
    pub samples: wgpu::Buffer,
    pub format: DataFormat,
    pub labels: wgpu::Buffer,
    /// Batch order: the epoch's permutation, or the rows of a single forward.
    pub order: wgpu::Buffer,
    pub len: usize,
}

impl SplitData {
    /// `data` uploaded for `split`, its order buffer holding at least `min_order` rows.
    pub fn upload(
        ctx: &GpuContext,
        split: Split,
        data: &crate::Dataset,
        min_order: usize,
    ) -> Result<Self> {
        let format = DataFormat::new(data.input(), data.width);
        let words = data.len() * format.row_words as usize;
        let bytes = 4 * words as u64;
        let limit = ctx.binding_limit();
        if bytes > limit {
            return Err(Error::Gpu(format!(
                "the {split:?} set's {} samples ({} MiB) exceed this GPU's storage binding limit of {} MiB",
                data.len(),
                bytes >> 20,
                limit >> 20
            )));
        }
        let name = split_name(split);
        let init = |label: String, contents: &[u8]| {
            ctx.device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(&label),
                    // A buffer cannot be empty.
                    contents: if contents.is_empty() {
                        &[0; 4]
                    } else {
                        contents
                    },
                    usage: wgpu::BufferUsages::STORAGE,
                })
        };
        let row = 4 * format.row_words as usize;
        let samples = match &data.features {
            // MNIST's 784 bytes are whole words: uploaded as they are.
            Features::Bytes(v) if data.width == row => init(format!("{name} samples"), v),
            features => {
                let stored = features.as_bytes();
                let size = stored.len() / (data.len() * data.width).max(1);
                let mut padded = vec![0u8; 4 * words];
                for (to, from) in padded
                    .chunks_exact_mut(row)
                    .zip(stored.chunks_exact(size * data.width))
                {
                    to[..from.len()].copy_from_slice(from);
                }
                init(format!("{name} samples"), &padded)
            }
        };
        let labels = init(format!("{name} labels"), bytemuck::cast_slice(&data.labels));
        Ok(SplitData {
            samples,
            format,
            labels,
            order: order_buffer(ctx, split, data.len().max(min_order)),
            len: data.len(),
        })
    }

    /// Grows the order buffer to hold `rows` (a batch may repeat rows, so it can be longer than
    /// the set); says whether it made a new one, which the products reading it must bind.
    pub fn hold_order(&mut self, ctx: &GpuContext, split: Split, rows: usize) -> bool {
        let grow = words(&self.order) < rows as u64;
        if grow {
            self.order = order_buffer(ctx, split, rows);
        }
        grow
    }
}

fn split_name(split: Split) -> &'static str {
    match split {
        Split::Train => "train",
        Split::Test => "test",
    }
}

fn order_buffer(ctx: &GpuContext, split: Split, len: usize) -> wgpu::Buffer {
    ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(&format!("{} order", split_name(split))),
        size: 4 * len.max(1) as u64,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}

/// Bytes for `len` f32, padded to whole vec4s (the GEMM reads its operands as vec4 arrays)
/// and at least one.
pub(crate) fn padded(len: usize) -> u64 {
    4 * len.max(1).next_multiple_of(4) as u64
}

/// The flat buffers the network's products read and write.
#[derive(Clone, Copy)]
pub(crate) struct Flat<'a> {
    pub params: &'a wgpu::Buffer,
    pub grads: &'a wgpu::Buffer,
    pub stats: &'a wgpu::Buffer,
}

/// Buffers for batches of up to `capacity` rows and the network's products bound to them.
pub(crate) struct Network {
    pub capacity: usize,
    /// How the datasets its first layer reads store their samples.
    pub format: DataFormat,
    /// The logits' width.
    classes: usize,
    /// `acts[l]` layer l-1's output after the activation, the last the logits; for a hidden
    /// layer whose activation's derivative needs it, followed by its pre-activation (at
    /// an offset of `capacity * width`). (`acts[0]`, the input, is never made: the first layer reads the
    /// dataset.)
    pub acts: Vec<wgpu::Buffer>,
    /// The logits' gradient, which the softmax writes.
    dz_top: wgpu::Buffer,
    forward: Vec<GemmCall>,
    /// Weight gradient of layer l, with its bias gradient.
    weight_grad: Vec<GemmCall>,
    /// `input_grad[l - 1]` for layers l >= 1.
    input_grad: Vec<GemmCall>,
    /// Per split: the softmax reads the batch's labels from that split's dataset.
    softmax: [Option<wgpu::BindGroup>; 2],
}

impl Network {
    /// Buffers for batches of up to `capacity` rows, and the network's products bound to them
    /// and to each uploaded split's dataset (each proven in range as it is bound).
    pub fn new(
        ctx: &GpuContext,
        kernels: &Kernels,
        arch: &Architecture,
        layout: &ParamLayout,
        (format, data): (DataFormat, [Option<&SplitData>; 2]),
        flat: Flat,
        capacity: usize,
    ) -> Result<Self> {
        Self::check_capacity(ctx, arch, capacity)?;
        let device = &ctx.device;
        let cap = capacity.max(1);
        let f32_buffer = |label: String, len: usize| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(&label),
                size: padded(len),
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            })
        };
        let layers = arch.layers();
        let activation = arch.activation;
        // Where a hidden layer's pre-activation is kept in its buffer, if it is.
        let pre_off = |l: usize| {
            (activation.needs_pre_activation() && (1..layers).contains(&l))
                .then(|| cap * arch.sizes[l])
        };
        let acts: Vec<_> = arch
            .sizes
            .iter()
            .enumerate()
            .map(|(l, &n)| {
                let len = match l {
                    0 => 1,
                    _ => cap * n + pre_off(l).map_or(0, |_| cap * n),
                };
                f32_buffer(format!("activations {l}"), len)
            })
            .collect();
        let dz: Vec<_> = (0..arch.layers())
            .map(|l| f32_buffer(format!("dz {l}"), cap * arch.sizes[l + 1]))
            .collect();
        let datasets = datasets(data);
        // Row-major `[rows, cols]` read as is, or read transposed.
        let plain = |offset: usize, ld: usize| Operand::row_major(offset as u64, ld as u64);
        let transposed = |offset: usize, ld: usize| Operand {
            transposed: true,
            ..plain(offset, ld)
        };
        // The first layer's input: read from the dataset, not from a buffer.
        let input = |l: usize, side| (l == 0).then_some((side, format, datasets));
        let placeholder = &kernels.gemm.placeholder;
        let (mut forward, mut weight_grad, mut input_grad) = (Vec::new(), Vec::new(), Vec::new());
        let cap32 = cap as u32;
        let Flat { params, grads, .. } = flat;
        for l in 0..layers {
            let (inp, out) = (arch.sizes[l], arch.sizes[l + 1]);
            let (w, b) = (layout.weight(l).offset, layout.bias(l).offset);
            let (i32_, o32) = (inp as u32, out as u32);
            let x = if l == 0 { placeholder } else { &acts[l] };
            // Z = X @ W^T + b, then the activation (not on the logits)
            forward.push(GemmCall::new(
                ctx,
                &kernels.gemm,
                &format!("forward {l}"),
                (cap32, o32, i32_, BATCH_M),
                if l + 1 < layers {
                    Epilogue::BiasActivate
                } else {
                    Epilogue::Bias
                },
                GemmOperands {
                    a: (x, plain(0, inp)),
                    b: (params, transposed(w, inp)),
                    c: (&acts[l + 1], 0),
                    aux: (params, b as u64),
                    activation: (activation, pre_off(l + 1).map(|o| o as u64)),
                    data: input(l, DataSide::A),
                },
            )?);
            // dW = dZ^T @ X, and db = dZ^T @ 1 beside it
            weight_grad.push(GemmCall::new(
                ctx,
                &kernels.gemm,
                &format!("weight grad {l}"),
                (o32, i32_, cap32, BATCH_K),
                Epilogue::RowSums,
                GemmOperands {
                    a: (&dz[l], transposed(0, out)),
                    b: (x, plain(0, inp)),
                    c: (grads, w as u64),
                    aux: (grads, b as u64),
                    activation: (activation, None),
                    data: input(l, DataSide::B),
                },
            )?);
            if l > 0 {
                // dX = (dZ @ W) * f', read off the activation's output or its kept pre-activation
                input_grad.push(GemmCall::new(
                    ctx,
                    &kernels.gemm,
                    &format!("input grad {l}"),
                    (cap32, i32_, o32, BATCH_M),
                    Epilogue::ActivationGrad,
                    GemmOperands {
                        a: (&dz[l], plain(0, out)),
                        b: (params, plain(w, inp)),
                        c: (&dz[l - 1], 0),
                        aux: (&acts[l], pre_off(l).unwrap_or(0) as u64),
                        activation: (activation, None),
                        data: None,
                    },
                )?);
            }
        }
        let mut network = Network {
            capacity,
            format,
            classes: arch.sizes[layers],
            dz_top: dz[layers - 1].clone(),
            acts,
            forward,
            weight_grad,
            input_grad,
            softmax: [None, None],
        };
        network.bind_softmax(ctx, kernels, data, flat.stats);
        Ok(network)
    }

    /// Refuses a batch whose largest buffer (a layer's activations, with its pre-activation
    /// beside them where kept) would pass the device's storage binding limit.
    pub fn check_capacity(ctx: &GpuContext, arch: &Architecture, capacity: usize) -> Result<()> {
        let kept = if arch.activation.needs_pre_activation() {
            2
        } else {
            1
        };
        let widest = *arch.sizes.iter().max().expect("layers") as u64;
        let bytes = padded(kept * widest as usize * capacity.max(1));
        if bytes > ctx.limits.max_storage_buffer_binding_size {
            return Err(Error::Gpu(format!(
                "a batch of {capacity} needs {} MiB activation buffers, over this GPU's {} MiB storage binding limit: use a smaller batch size",
                bytes >> 20,
                ctx.limits.max_storage_buffer_binding_size >> 20
            )));
        }
        Ok(())
    }

    /// Binds the products that read the datasets (the first layer's) and the softmax (the
    /// labels) to `data`, after an upload.
    pub fn bind_datasets(
        &mut self,
        ctx: &GpuContext,
        kernels: &Kernels,
        data: [Option<&SplitData>; 2],
        stats: &wgpu::Buffer,
    ) {
        for call in [&mut self.forward[0], &mut self.weight_grad[0]] {
            call.bind_datasets(ctx, &kernels.gemm, datasets(data));
        }
        self.bind_softmax(ctx, kernels, data, stats);
    }

    fn bind_softmax(
        &mut self,
        ctx: &GpuContext,
        kernels: &Kernels,
        data: [Option<&SplitData>; 2],
        stats: &wgpu::Buffer,
    ) {
        let logits = self.acts.last().expect("layers");
        self.softmax = data.map(|d| {
            d.map(|d| {
                kernels
                    .softmax
                    .bind(ctx, (logits, &d.labels, &self.dz_top, stats, &d.order))
            })
        });
    }

    /// Has every product choose (and compile) its variant for `batch` rows.
    pub fn prepare(
        &mut self,
        ctx: &GpuContext,
        kernels: &Kernels,
        step: &wgpu::BindGroupLayout,
        batch: usize,
    ) -> Result<()> {
        let mut tuning = ctx
            .tuning
            .lock()
            .map_err(|_| Error::Gpu("the GEMM tuning was poisoned".into()))?;
        for call in self.calls_mut() {
            call.prepare(ctx, &kernels.gemm, step, batch as u32, |shape| {
                kernels.gemm.choose(ctx, step, &mut tuning, shape)
            })?;
        }
        Ok(())
    }

    /// Products run split in K at the largest batch prepared (each a second dispatch).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn split_products(&self) -> usize {
        self.forward
            .iter()
            .chain(&self.weight_grad)
            .chain(&self.input_grad)
            .filter(|c| c.is_split())
            .count()
    }

    fn calls_mut(&mut self) -> impl Iterator<Item = &mut GemmCall> {
        self.forward
            .iter_mut()
            .chain(&mut self.weight_grad)
            .chain(&mut self.input_grad)
    }

    /// Proves the dataset reads of batches of at most `batch` rows of `data` taken from
    /// `order[..order_end]` (the first layer's products and the softmax's labels), and the
    /// softmax over them. (Every GEMM was proven when it was bound.)
    pub fn prove(
        &self,
        data: &SplitData,
        stats: &wgpu::Buffer,
        batch: usize,
        order_end: usize,
    ) -> Result<()> {
        if batch > self.capacity || data.format != self.format {
            return Err(Error::Gpu(format!(
                "internal error: a batch of {batch} {:?} on buffers made for {} {:?}",
                data.format, self.capacity, self.format
            )));
        }
        bounds::dataset(
            order_end as u64,
            words(&data.order),
            data.len as u64,
            (words(&data.samples), words(&data.labels)),
            data.format.row_words as u64,
        )?;
        bounds::softmax(
            batch as u64,
            self.classes as u64,
            (
                words(self.acts.last().expect("layers")),
                words(&self.dz_top),
                words(stats),
            ),
        )
    }

    /// The layers, and softmax cross-entropy with the stats and the loss gradient, for `batch`
    /// rows of `split` (the first layer reads them from the dataset). The step's slot is bound.
    pub fn encode_forward(
        &self,
        pass: &mut wgpu::ComputePass,
        kernels: &Kernels,
        split: Split,
        batch: usize,
    ) {
        for call in &self.forward {
            call.encode(pass, batch as u32, split as usize);
        }
        kernels.softmax.encode(
            pass,
            self.softmax[split as usize]
                .as_ref()
                .expect("the split was uploaded"),
        );
    }

    /// The gradients of `batch` rows of `split` (the first layer's weight gradient reads them
    /// from the dataset again). The step's slot is bound.
    pub fn encode_backward(&self, pass: &mut wgpu::ComputePass, split: Split, batch: usize) {
        for l in (0..self.forward.len()).rev() {
            self.weight_grad[l].encode(pass, batch as u32, split as usize);
            if l > 0 {
                self.input_grad[l - 1].encode(pass, batch as u32, split as usize);
            }
        }
    }

    /// The GEMMs of a step alone (forward, then backward), for timing the family.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn encode_gemms(&self, pass: &mut wgpu::ComputePass, batch: usize) {
        for call in &self.forward {
            call.encode(pass, batch as u32, Split::Train as usize);
        }
        self.encode_backward(pass, Split::Train, batch);
    }

    /// The softmax alone, for timing the family.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn encode_softmax(&self, pass: &mut wgpu::ComputePass, kernels: &Kernels) {
        let bind = self.softmax[0].as_ref().expect("uploaded");
        kernels.softmax.encode(pass, bind);
    }
}

/// Each split's `(samples, order)`, as the products that read a dataset bind them.
fn datasets(data: [Option<&SplitData>; 2]) -> [Option<(&wgpu::Buffer, &wgpu::Buffer)>; 2] {
    data.map(|d| d.map(|d| (&d.samples, &d.order)))
}
