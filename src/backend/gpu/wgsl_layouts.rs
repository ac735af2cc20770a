//! Rust and WGSL agree by test, not by comment: every struct the host writes for a kernel
//! (the step slot, the GEMM's and the optimizer's parameters) has the members, offsets and size
//! of its WGSL twin as naga parses the kernel, and every GEMM epilogue code is the value of
//! the WGSL constant that names it. A member added to or renamed in the WGSL fails here, and so
//! does a Rust field that changes the struct's size; a Rust field carved out of padding (`_pad`)
//! must also be added to the list below, which names every field the host sets.

use super::gemm::{Epilogue, GemmParams};
use super::kernels;
use super::optimizer::OptParams;
use super::step_table::StepSlot;
use crate::model::Activation;
use std::mem::{offset_of, size_of};

/// The parsed module of kernel `file`, as the GPU compiles it.
fn module(file: &str) -> naga::Module {
    let source = kernels::source(file, false, &Activation::default().wgsl());
    naga::front::wgsl::parse_str(&source).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// `(member, offset)` of WGSL struct `name` in `module`, and its size.
fn wgsl_struct(module: &naga::Module, name: &str) -> (Vec<(String, usize)>, usize) {
    let (_, ty) = module
        .types
        .iter()
        .find(|(_, t)| t.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no struct {name} in the WGSL"));
    match &ty.inner {
        naga::TypeInner::Struct { members, span } => (
            members
                .iter()
                .map(|m| (m.name.clone().unwrap_or_default(), m.offset as usize))
                .collect(),
            *span as usize,
        ),
        other => panic!("{name} is not a struct: {other:?}"),
    }
}

/// Compares a Rust struct, given as its named fields' offsets (padding fields, named `_...`,
/// left out) and its size, with WGSL struct `name`. Uniform buffers are bound in whole 16-byte
/// rows, so the Rust struct is the WGSL one rounded up to 16 bytes.
fn same_layout(file: &str, name: &str, rust: &[(&str, usize)], rust_size: usize) {
    let (wgsl, span) = wgsl_struct(&module(file), name);
    let wgsl: Vec<(&str, usize)> = wgsl.iter().map(|(n, o)| (n.as_str(), *o)).collect();
    assert_eq!(rust, wgsl, "{name} in {file}: members and offsets differ");
    assert_eq!(
        rust_size,
        span.next_multiple_of(16),
        "{name} in {file}: the Rust struct is {rust_size} bytes, the WGSL one {span}"
    );
}

/// `[(field, offset)]` of a Rust struct's listed fields.
macro_rules! offsets {
    ($t:ty: $($f:ident),*) => { [$((stringify!($f), offset_of!($t, $f))),*] };
}

#[test]
fn host_structs_match_their_wgsl_twins() {
    same_layout(
        "softmax_xent.wgsl",
        "Step",
        &offsets!(StepSlot: order_offset, batch, split, inv_batch, lr, decay, adam_step, adam_v_scale),
        size_of::<StepSlot>(),
    );
    same_layout(
        "gemm.wgsl",
        "Gemm",
        &offsets!(GemmParams: m, n, k, batch_dim, a_off, lda, b_off, ldb, c_off, aux_off, db_off, pre_off),
        size_of::<GemmParams>(),
    );
    same_layout(
        "optimizer.wgsl",
        "Opt",
        &offsets!(OptParams: len, momentum, beta1, beta2, eps),
        size_of::<OptParams>(),
    );
}

#[test]
fn epilogue_codes_match_the_wgsl_constants() {
    let module = module("gemm.wgsl");
    let constant = |name: &str| -> u32 {
        let (_, c) = module
            .constants
            .iter()
            .find(|(_, c)| c.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("gemm.wgsl (with gemm_common.wgsl) has no constant {name}"));
        match module.global_expressions[c.init] {
            naga::Expression::Literal(naga::Literal::U32(v)) => v,
            ref other => panic!("{name} is not a u32 literal: {other:?}"),
        }
    };
    for e in Epilogue::ALL {
        assert_eq!(
            e as u32,
            constant(e.wgsl_name()),
            "epilogue {e:?} and gemm_common.wgsl's {} differ",
            e.wgsl_name()
        );
    }
}
