//! The GEMM kernel family (shaders/gemm.wgsl): the pipelines of its variants and one bound
//! product of the network ([`GemmCall`]), which runs the variant the tuner (`tuner`) chooses for
//! each batch size.
//!
//! A variant is a block tile `BM x BN` and a register tile `TM x TN` per invocation, set as
//! pipeline-overridable constants of the one WGSL file, as are the operands' layouts (A or A^T,
//! B or B^T) and the epilogue. Which variant runs a shape is decided on the device: timed at its
//! first use where tuning is on ([`GemmTuning`], cached by the program per adapter and driver),
//! else by a rule of thumb that keeps enough workgroups in flight.

use super::bounds::{self, EpilogueReach, GemmBuffers, Operand};
use super::context::{entry, storage, uniform, words, GpuContext};
use super::tuning::{Shape, Variant};
use crate::config::Precision;
use crate::data_spec::Input;
use crate::error::{Error, Result};
use crate::model::Activation;
use std::cell::RefCell;
use std::collections::HashMap;
use wgpu::util::DeviceExt;

/// `Gemm` in gemm_common.wgsl (a test holds the two layouts together: `wgsl_layouts`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct GemmParams {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub batch_dim: u32,
    pub a_off: u32,
    pub lda: u32,
    pub b_off: u32,
    pub ldb: u32,
    pub c_off: u32,
    pub aux_off: u32,
    pub db_off: u32,
    /// Where epilogue 2 keeps the pre-activation, in C's buffer (when `KEEP_PRE`).
    pub pre_off: u32,
}

/// Which of M or K follows the step's batch size (gemm.wgsl's `batch_dim`).
pub(crate) const BATCH_M: u32 = 1;
pub(crate) const BATCH_K: u32 = 2;

/// The GEMM kernels' epilogues, each the value of the WGSL constant [`Epilogue::wgsl_name`] names
/// (in gemm_common.wgsl).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Epilogue {
    None = 0,
    /// `+ bias[j]`.
    Bias = 1,
    /// `activate(. + bias[j])`, the pre-activation kept beside C where the activation's
    /// derivative needs it.
    BiasActivate = 2,
    /// `backward(., aux[i, j])`: the activation's derivative applied, read off its output or
    /// its pre-activation.
    ActivationGrad = 3,
    /// No change to C, and the row sums of A (the bias gradient) written beside it.
    RowSums = 4,
}

/// The codes as the layout test checks them against gemm_common.wgsl.
#[cfg(test)]
impl Epilogue {
    pub const ALL: [Epilogue; 5] = [
        Epilogue::None,
        Epilogue::Bias,
        Epilogue::BiasActivate,
        Epilogue::ActivationGrad,
        Epilogue::RowSums,
    ];

    /// The WGSL constant of this epilogue's code.
    pub fn wgsl_name(self) -> &'static str {
        match self {
            Epilogue::None => "EPILOGUE_NONE",
            Epilogue::Bias => "EPILOGUE_BIAS",
            Epilogue::BiasActivate => "EPILOGUE_BIAS_ACTIVATE",
            Epilogue::ActivationGrad => "EPILOGUE_ACTIVATION_GRAD",
            Epilogue::RowSums => "EPILOGUE_ROW_SUMS",
        }
    }
}

/// How a call reads its operands and ends: A transposed, B transposed, A read four elements at
/// a time, B likewise, and the epilogue. One pipeline per `Layout` and variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Layout {
    pub a_t: bool,
    pub b_t: bool,
    pub a_vec: bool,
    pub b_vec: bool,
    /// The operand is the first layer's input, read from the dataset (`DataSide`) stored as
    /// `data_format` (the default where neither is).
    pub a_data: bool,
    pub b_data: bool,
    pub data_format: DataFormat,
    pub epilogue: Epilogue,
    /// The activation epilogues 2 and 3 apply (compiled into the pipeline).
    pub activation: Activation,
    /// Epilogue 2 keeps the pre-activation at `pre_off` of C's buffer.
    pub keep_pre: bool,
}

/// Which operand of a call is the first layer's input, read straight from the dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DataSide {
    A,
    B,
}

/// How a resident dataset stores its samples: bytes packed four to a u32 word or f32, each
/// sample padded to whole vec4s (`row_words` words), `features` of them read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct DataFormat {
    pub input: Option<Input>,
    pub features: u32,
    pub row_words: u32,
}

impl DataFormat {
    pub fn new(input: Input, features: usize) -> Self {
        let row_words = match input {
            Input::Bytes => features.div_ceil(4),
            Input::Floats => features.next_multiple_of(4),
        };
        DataFormat {
            input: Some(input),
            features: features as u32,
            row_words: row_words as u32,
        }
    }
}

impl Layout {
    /// The pipeline constants both GEMM kernels (gemm.wgsl, gemm_mixed.wgsl) take from the
    /// layout: operand orientation, the dataset's storage, the epilogue.
    fn constants(&self) -> Vec<(&'static str, f64)> {
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        let input = self.data_format.input;
        vec![
            ("A_T", flag(self.a_t)),
            ("B_T", flag(self.b_t)),
            ("A_FROM_DATA", flag(self.a_data)),
            ("B_FROM_DATA", flag(self.b_data)),
            ("ROW_WORDS", self.data_format.row_words as f64),
            ("DATA_FLOATS", flag(input == Some(Input::Floats))),
            ("INPUT_SCALE", input.map_or(1.0, Input::scale) as f64),
            ("EPILOGUE", self.epilogue as u32 as f64),
            ("KEEP_PRE", flag(self.keep_pre)),
        ]
    }

    /// The layout of a product of at most `m x k` by `k x n` whose `batch_dim` follows the
    /// batch: vec4 loads where the operand's offset, leading dimension and contiguous extent are
    /// multiples of 4 and that extent is not the batch (a short batch could end mid-vector).
    fn new(
        (m, n, k, batch_dim): (u32, u32, u32, u32),
        a: Operand,
        b: Operand,
        epilogue: Epilogue,
        data: Option<(DataSide, DataFormat)>,
        (activation, keep_pre): (Activation, bool),
    ) -> Self {
        let side = data.map(|(side, _)| side);
        let aligned = |o: Operand, extent: u32, extent_is_batch: bool| {
            o.offset.is_multiple_of(4)
                && o.ld.is_multiple_of(4)
                && extent.is_multiple_of(4)
                && !extent_is_batch
        };
        let (a_extent, a_batch) = if a.transposed {
            (m, batch_dim == BATCH_M)
        } else {
            (k, batch_dim == BATCH_K)
        };
        let (b_extent, b_batch) = if b.transposed {
            (k, batch_dim == BATCH_K)
        } else {
            (n, false)
        };
        Layout {
            a_t: a.transposed,
            b_t: b.transposed,
            a_vec: aligned(a, a_extent, a_batch),
            b_vec: aligned(b, b_extent, b_batch),
            a_data: side == Some(DataSide::A),
            b_data: side == Some(DataSide::B),
            data_format: data.map(|(_, f)| f).unwrap_or_default(),
            epilogue,
            activation,
            keep_pre,
        }
    }
}

/// The family's bind group layout and its pipelines, compiled as variants are chosen.
pub(crate) struct GemmKernels {
    pub layout: wgpu::BindGroupLayout,
    /// f32 runs gemm.wgsl's variants; mixed gemm_mixed.wgsl's (cooperative matrices).
    pub precision: Precision,
    pipelines: RefCell<HashMap<(Layout, Variant), wgpu::ComputePipeline>>,
    /// `reduce_split` per layout and split factor.
    reducers: RefCell<HashMap<(Layout, u32), wgpu::ComputePipeline>>,
    /// Bound where a call reads no dataset (bindings 5 and 6) or an operand comes from one.
    pub placeholder: wgpu::Buffer,
}

impl GemmKernels {
    pub fn new(device: &wgpu::Device, precision: Precision) -> Self {
        GemmKernels {
            precision,
            layout: device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some("gemm"),
                entries: &[
                    uniform(0, false),
                    storage(1, true),
                    storage(2, true),
                    storage(3, false),
                    storage(4, true),
                    storage(5, true),
                    storage(6, true),
                ],
            }),
            pipelines: RefCell::new(HashMap::new()),
            reducers: RefCell::new(HashMap::new()),
            placeholder: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("placeholder"),
                size: 16,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            }),
        }
    }

    /// The pipeline of `variant` for this layout and epilogue, compiled on first use.
    pub(crate) fn pipeline(
        &self,
        ctx: &GpuContext,
        step: &wgpu::BindGroupLayout,
        layout: Layout,
        variant: Variant,
    ) -> Result<wgpu::ComputePipeline> {
        if variant.matrix > 0 {
            return self.mixed_pipeline(ctx, step, layout, variant);
        }
        bounds::gemm_variant(
            variant.bm,
            variant.bn,
            variant.tm,
            variant.tn,
            ctx.limits.max_compute_invocations_per_workgroup,
        )?;
        bounds::split(variant.split, layout.epilogue == Epilogue::RowSums)?;
        let key = (layout, variant);
        if let Some(p) = self.pipelines.borrow().get(&key) {
            return Ok(p.clone());
        }
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        let mut constants = layout.constants();
        constants.extend([
            ("BM", variant.bm as f64),
            ("BN", variant.bn as f64),
            ("TM", variant.tm as f64),
            ("TN", variant.tn as f64),
            ("A_VEC", flag(layout.a_vec)),
            ("B_VEC", flag(layout.b_vec)),
            ("SPLIT", variant.split as f64),
            ("WG", variant.invocations() as f64),
        ]);
        let pipeline = ctx.pipeline(
            "gemm.wgsl",
            "gemm",
            &self.layout,
            step,
            &constants,
            &layout.activation.wgsl(),
        );
        self.pipelines.borrow_mut().insert(key, pipeline.clone());
        Ok(pipeline)
    }

    /// A mixed-precision variant's pipeline (gemm_mixed.wgsl), compiled on first use: one
    /// subgroup per workgroup, the loss scale on products whose A is a loss gradient.
    fn mixed_pipeline(
        &self,
        ctx: &GpuContext,
        step: &wgpu::BindGroupLayout,
        layout: Layout,
        variant: Variant,
    ) -> Result<wgpu::ComputePipeline> {
        ctx.check_mixed()?;
        bounds::cooperative_variant(variant.matrix, variant.tm, variant.tn, &ctx.cooperative)?;
        let key = (layout, variant);
        if let Some(p) = self.pipelines.borrow().get(&key) {
            return Ok(p.clone());
        }
        let loss_gradient = matches!(
            layout.epilogue,
            Epilogue::RowSums | Epilogue::ActivationGrad
        );
        let mut constants = layout.constants();
        constants.extend([
            ("TMC", variant.tm as f64),
            ("TNC", variant.tn as f64),
            ("WG", ctx.subgroup_size as f64),
            ("A_SCALE", if loss_gradient { LOSS_SCALE } else { 1.0 }),
        ]);
        let m = variant.matrix;
        let prelude = format!("{}\n{}", mixed_prelude(m), layout.activation.wgsl());
        let pipeline = ctx.pipeline(
            "gemm_mixed.wgsl",
            "gemm",
            &self.layout,
            step,
            &constants,
            &prelude,
        );
        self.pipelines.borrow_mut().insert(key, pipeline.clone());
        Ok(pipeline)
    }

    /// The second dispatch of a product split in `split` parts: sums them and applies this
    /// layout's epilogue.
    fn reducer(
        &self,
        ctx: &GpuContext,
        step: &wgpu::BindGroupLayout,
        layout: Layout,
        split: u32,
    ) -> wgpu::ComputePipeline {
        let key = (layout, split);
        if let Some(p) = self.reducers.borrow().get(&key) {
            return p.clone();
        }
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        let pipeline = ctx.pipeline(
            "gemm.wgsl",
            "reduce_split",
            &self.layout,
            step,
            &[
                ("EPILOGUE", layout.epilogue as u32 as f64),
                ("KEEP_PRE", flag(layout.keep_pre)),
                ("SPLIT", split as f64),
            ],
            &layout.activation.wgsl(),
        );
        self.reducers.borrow_mut().insert(key, pipeline.clone());
        pipeline
    }
}

/// What gemm_mixed.wgsl's loss gradients (dZ) are multiplied by before they are rounded to f16,
/// and the products divided by after (see the file's header for why 1024).
pub(crate) const LOSS_SCALE: f64 = 1024.0;

/// The declarations the host puts in front of gemm_mixed.wgsl for matrices of side `m`.
pub fn mixed_prelude(m: u32) -> String {
    format!(
        "const MS: u32 = {m}u;\n\
         alias MatA = coop_mat{m}x{m}<f16, A>;\n\
         alias MatB = coop_mat{m}x{m}<f16, B>;\n\
         alias MatC = coop_mat{m}x{m}<f32, C>;"
    )
}

/// The operands of a call: the buffers bound and how each is read.
pub(crate) struct GemmOperands<'a> {
    pub a: (&'a wgpu::Buffer, Operand),
    pub b: (&'a wgpu::Buffer, Operand),
    /// C and the offset it starts at.
    pub c: (&'a wgpu::Buffer, u64),
    /// Bias, or the activation's output or pre-activation for its derivative (unused
    /// otherwise), and its offset.
    pub aux: (&'a wgpu::Buffer, u64),
    /// The activation applied by epilogues 2 and 3, and for epilogue 2 where in C's buffer it
    /// keeps the pre-activation (None: not kept).
    pub activation: (Activation, Option<u64>),
    /// The operand (its buffer above then a placeholder) that is the first layer's input, read
    /// from the dataset stored as the format says, and each split's `(samples, order)` where
    /// uploaded.
    pub data: Option<(DataSide, DataFormat, SplitBuffers<'a>)>,
}

/// Each split's (train, test) `(samples, order)` buffers, where uploaded.
pub(crate) type SplitBuffers<'a> = [Option<(&'a wgpu::Buffer, &'a wgpu::Buffer)>; 2];

/// One product of the network with its bind group built once (a call reading a dataset bound
/// again when another is uploaded), and the pipeline chosen for each batch size it runs at.
pub(crate) struct GemmCall {
    label: String,
    /// The call's parameters, then A, B, C and aux: what every bind group holds.
    buffers: [wgpu::Buffer; 5],
    /// Per split (train, test): a call reading the dataset has one for each uploaded split,
    /// the others the same bind group twice.
    binds: [Option<wgpu::BindGroup>; 2],
    /// Which operand is read from the dataset, if any.
    side: Option<DataSide>,
    params: GemmParams,
    layout: Layout,
    /// Each uploaded split's `(samples, order)`, for a call that reads them (kept to bind a
    /// split variant's first pass).
    datasets: [Option<(wgpu::Buffer, wgpu::Buffer)>; 2],
    /// Where a split variant's parts go, made when one is first chosen.
    workspace: Option<Workspace>,
    /// Per batch size prepared: the variant's pipeline and grid, and for a split variant its
    /// second dispatch.
    chosen: Vec<Chosen>,
}

struct Chosen {
    batch: u32,
    pipeline: wgpu::ComputePipeline,
    /// Workgroups (x, y, the split's parts).
    groups: (u32, u32, u32),
    /// `reduce_split` and its grid.
    reduce: Option<(wgpu::ComputePipeline, (u32, u32))>,
}

/// A split product's workspace, `parts x m x n` f32 (m, n: the call's largest), bound as C for
/// the first pass (per dataset split, as the call's own bind groups are) and as A for the
/// second.
struct Workspace {
    parts: u32,
    partial: [Option<wgpu::BindGroup>; 2],
    reduce: wgpu::BindGroup,
}

impl GemmCall {
    /// Binds `operands` for a product of at most `m x k` by `k x n` (the batch may shrink
    /// `batch_dim`), proving first that no index it can form leaves its buffer.
    pub fn new(
        ctx: &GpuContext,
        kernels: &GemmKernels,
        label: &str,
        (m, n, k, batch_dim): (u32, u32, u32, u32),
        epilogue: Epilogue,
        ops: GemmOperands,
    ) -> Result<Self> {
        let reach = match epilogue {
            Epilogue::None => EpilogueReach::None,
            Epilogue::Bias => EpilogueReach::Bias(ops.aux.1),
            Epilogue::BiasActivate => match ops.activation.1 {
                Some(pre) => EpilogueReach::BiasKeepingPre(ops.aux.1, pre),
                None => EpilogueReach::Bias(ops.aux.1),
            },
            Epilogue::ActivationGrad => EpilogueReach::Mask(ops.aux.1),
            Epilogue::RowSums => EpilogueReach::RowSums(ops.aux.1),
        };
        let side = ops.data.as_ref().map(|(side, _, _)| *side);
        let format = ops.data.as_ref().map(|(side, format, _)| (*side, *format));
        bounds::gemm(
            (m as u64, n as u64, k as u64),
            (side != Some(DataSide::A)).then_some(ops.a.1),
            (side != Some(DataSide::B)).then_some(ops.b.1),
            ops.c.1,
            reach,
            GemmBuffers {
                a: words(ops.a.0),
                b: words(ops.b.0),
                c: words(ops.c.0),
                aux: words(ops.aux.0),
            },
            format.map_or(0, |(_, f)| f.features as u64),
        )?;
        let (db_off, aux_off) = match epilogue {
            Epilogue::RowSums => (ops.aux.1 as u32, 0),
            _ => (0, ops.aux.1 as u32),
        };
        let params = GemmParams {
            m,
            n,
            k,
            batch_dim,
            a_off: ops.a.1.offset as u32,
            lda: ops.a.1.ld as u32,
            b_off: ops.b.1.offset as u32,
            ldb: ops.b.1.ld as u32,
            c_off: ops.c.1 as u32,
            aux_off,
            db_off,
            pre_off: ops.activation.1.unwrap_or(0) as u32,
        };
        let uniform = ctx
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytemuck::bytes_of(&params),
                usage: wgpu::BufferUsages::UNIFORM,
            });
        // The row sums go to C's buffer (the gradients), so aux binds A's buffer, unread.
        let aux = if epilogue == Epilogue::RowSums {
            ops.a.0
        } else {
            ops.aux.0
        };
        let mut call = GemmCall {
            label: label.to_string(),
            buffers: [
                uniform,
                ops.a.0.clone(),
                ops.b.0.clone(),
                ops.c.0.clone(),
                aux.clone(),
            ],
            binds: [None, None],
            side,
            datasets: [None, None],
            workspace: None,
            params,
            layout: Layout::new(
                (m, n, k, batch_dim),
                ops.a.1,
                ops.b.1,
                epilogue,
                format,
                (ops.activation.0, ops.activation.1.is_some()),
            ),
            chosen: Vec::new(),
        };
        call.bind_datasets(ctx, kernels, ops.data.map_or([None, None], |(_, _, d)| d));
        Ok(call)
    }

    /// Binds each split's `(samples, order)` where uploaded, for a call that reads the dataset
    /// (the bounds of those reads are proven per dispatch: `bounds::dataset`). A call that reads
    /// none binds placeholders once.
    pub fn bind_datasets(
        &mut self,
        ctx: &GpuContext,
        kernels: &GemmKernels,
        splits: [Option<(&wgpu::Buffer, &wgpu::Buffer)>; 2],
    ) {
        if self.side.is_none() && self.binds[0].is_some() {
            return;
        }
        self.datasets = splits.map(|s| s.map(|(x, o)| (x.clone(), o.clone())));
        self.binds = self.bind_groups(ctx, kernels, &self.buffers[3]);
        if let Some(parts) = self.workspace.as_ref().map(|w| w.parts) {
            self.workspace = None;
            self.make_workspace(ctx, kernels, parts)
                .expect("a workspace already proven for these parts");
        }
    }

    /// The call's bind groups per dataset split, with `c` bound as C.
    fn bind_groups(
        &self,
        ctx: &GpuContext,
        kernels: &GemmKernels,
        c: &wgpu::Buffer,
    ) -> [Option<wgpu::BindGroup>; 2] {
        let [uniform, a, b, _, aux] = &self.buffers;
        let bind = |(samples, order): (&wgpu::Buffer, &wgpu::Buffer)| {
            ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(&self.label),
                layout: &kernels.layout,
                entries: &[
                    entry(0, uniform),
                    entry(1, a),
                    entry(2, b),
                    entry(3, c),
                    entry(4, aux),
                    entry(5, samples),
                    entry(6, order),
                ],
            })
        };
        match self.side {
            Some(_) => self
                .datasets
                .each_ref()
                .map(|d| d.as_ref().map(|(x, o)| bind((x, o)))),
            None => {
                let one = bind((&kernels.placeholder, &kernels.placeholder));
                [Some(one.clone()), Some(one)]
            }
        }
    }

    /// A workspace for `parts` parts of the call's largest product, proven to hold them, and
    /// the bind groups of both passes.
    fn make_workspace(
        &mut self,
        ctx: &GpuContext,
        kernels: &GemmKernels,
        parts: u32,
    ) -> Result<()> {
        let (m, n) = (self.params.m as u64, self.params.n as u64);
        let len = parts as u64 * m * n;
        let bytes = 4 * len.max(1).next_multiple_of(4);
        if bytes > ctx.binding_limit() {
            return Err(Error::Gpu(format!(
                "{}: K split in {parts} needs a {} MiB workspace, over this GPU's binding limit",
                self.label,
                bytes >> 20
            )));
        }
        let buffer = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(&format!("{} split-K workspace", self.label)),
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        bounds::split_workspace(parts as u64, m, n, bytes / 4)?;
        let [uniform, _, b, c, aux] = &self.buffers;
        let reduce = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&self.label),
            layout: &kernels.layout,
            entries: &[
                entry(0, uniform),
                entry(1, &buffer),
                entry(2, b),
                entry(3, c),
                entry(4, aux),
                entry(5, &kernels.placeholder),
                entry(6, &kernels.placeholder),
            ],
        });
        self.workspace = Some(Workspace {
            parts,
            partial: self.bind_groups(ctx, kernels, &buffer),
            reduce,
        });
        Ok(())
    }

    /// The bind group for `split` (for a call that reads no dataset, the one bind group).
    pub fn bind_group(&self, split: usize) -> &wgpu::BindGroup {
        self.binds[split].as_ref().expect("the split was uploaded")
    }

    /// The shape this call runs at with `batch` rows.
    pub fn shape(&self, batch: u32) -> Shape {
        let p = &self.params;
        Shape {
            m: if p.batch_dim == BATCH_M { batch } else { p.m },
            n: p.n,
            k: if p.batch_dim == BATCH_K { batch } else { p.k },
            a_t: self.layout.a_t,
            b_t: self.layout.b_t,
        }
    }

    /// Chooses (and compiles) the variant this call runs with at `batch`, unless chosen already.
    /// `choose` names the variant for a shape (the tuner's choice); a split of K is dropped
    /// where the epilogue sums over K itself (the weight gradients' bias sums).
    pub fn prepare(
        &mut self,
        ctx: &GpuContext,
        kernels: &GemmKernels,
        step: &wgpu::BindGroupLayout,
        batch: u32,
        choose: impl FnOnce(Shape) -> Result<Variant>,
    ) -> Result<()> {
        if self.chosen.iter().any(|c| c.batch == batch) {
            return Ok(());
        }
        let shape = self.shape(batch);
        let mut variant = choose(shape)?;
        if self.layout.epilogue == Epilogue::RowSums || variant.matrix > 0 {
            variant = variant.split(1);
        }
        // A split whose workspace would pass the binding limit runs whole instead.
        if variant.split > 1
            && self
                .workspace
                .as_ref()
                .is_none_or(|w| w.parts < variant.split)
            && self.make_workspace(ctx, kernels, variant.split).is_err()
        {
            variant = variant.split(1);
        }
        let pipeline = kernels.pipeline(ctx, step, self.layout, variant)?;
        let (x, y) = workgroups(ctx, shape, variant)?;
        let reduce = if variant.split > 1 {
            let elements = self.params.m as u64 * self.params.n as u64;
            let groups = elements.div_ceil(256);
            let max = ctx.limits.max_compute_workgroups_per_dimension as u64;
            let (rx, ry) = (groups.min(max), groups.div_ceil(max));
            if ry > max {
                return Err(Error::Gpu(format!(
                    "{}: a {shape} product is too large to split",
                    self.label
                )));
            }
            let reducer = kernels.reducer(ctx, step, self.layout, variant.split);
            Some((reducer, (rx as u32, ry as u32)))
        } else {
            None
        };
        self.chosen.push(Chosen {
            batch,
            pipeline,
            groups: (x, y, variant.split),
            reduce,
        });
        Ok(())
    }

    /// Whether the variant for the largest batch prepared splits K.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn is_split(&self) -> bool {
        self.chosen
            .iter()
            .max_by_key(|c| c.batch)
            .is_some_and(|c| c.reduce.is_some())
    }

    /// Forgets every variant chosen (the tuner's bench prepares each candidate in turn).
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    pub fn forget_choices(&mut self) {
        self.chosen.clear();
    }

    /// Encodes the product at `batch` rows: the variant prepared for that batch, else (a short
    /// last batch) the one prepared for the largest batch, whose tiles cover it; a split variant
    /// as its two dispatches.
    pub fn encode(&self, pass: &mut wgpu::ComputePass, batch: u32, split: usize) {
        let chosen = self
            .chosen
            .iter()
            .find(|c| c.batch == batch)
            .or_else(|| self.chosen.iter().max_by_key(|c| c.batch))
            .expect("prepared before encoding");
        let (x, y, parts) = chosen.groups;
        // For a shorter batch the extra rows of tiles return at once (gemm.wgsl).
        pass.set_pipeline(&chosen.pipeline);
        match (&chosen.reduce, &self.workspace) {
            (Some((reducer, (rx, ry))), Some(workspace)) => {
                let partial = workspace.partial[split].as_ref();
                pass.set_bind_group(0, partial.expect("the split was uploaded"), &[]);
                pass.dispatch_workgroups(x, y, parts);
                pass.set_pipeline(reducer);
                pass.set_bind_group(0, &workspace.reduce, &[]);
                pass.dispatch_workgroups(*rx, *ry, 1);
            }
            _ => {
                pass.set_bind_group(0, self.bind_group(split), &[]);
                pass.dispatch_workgroups(x, y, 1);
            }
        }
    }
}

/// The grid (x over columns, y over rows of tiles) of `variant` on `shape`, refused where a
/// dimension passes the device's limit.
pub(crate) fn workgroups(ctx: &GpuContext, shape: Shape, variant: Variant) -> Result<(u32, u32)> {
    let groups = shape.grid(variant);
    let max = ctx.limits.max_compute_workgroups_per_dimension;
    if groups.0 > max || groups.1 > max {
        return Err(Error::Gpu(format!(
            "a {shape} product needs more than {max} workgroups per dimension"
        )));
    }
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RELU: (Activation, bool) = (Activation::Relu, false);

    fn op(offset: u64, ld: u64, transposed: bool) -> Operand {
        Operand {
            offset,
            ld,
            transposed,
        }
    }

    #[test]
    fn operands_are_read_as_vec4_only_where_every_vector_is_whole() {
        // B1's forward layer 1: X [B, 784] and W [512, 784] read transposed; both aligned.
        let fwd = Layout::new(
            (128, 512, 784, BATCH_M),
            op(0, 784, false),
            op(0, 784, true),
            Epilogue::BiasActivate,
            None,
            RELU,
        );
        assert!(fwd.a_vec && fwd.b_vec);
        // The last layer's weight gradient: dZ^T is 10 rows, contiguous along them: not whole vec4s.
        let dw = Layout::new(
            (10, 256, 128, BATCH_K),
            op(0, 10, true),
            op(0, 256, false),
            Epilogue::RowSums,
            None,
            RELU,
        );
        assert!(!dw.a_vec && dw.b_vec);
        // An odd offset, an odd leading dimension, or the batch as the contiguous extent: no.
        let odd = |a: Operand, dims| {
            Layout::new(dims, a, op(0, 4, false), Epilogue::None, None, RELU).a_vec
        };
        assert!(!odd(op(2, 784, false), (128, 4, 784, 0)));
        assert!(!odd(op(0, 786, false), (128, 4, 784, 0)));
        assert!(!odd(op(0, 128, true), (128, 4, 784, BATCH_M)));
        assert!(odd(op(0, 128, true), (128, 4, 784, 0)));
    }
}
