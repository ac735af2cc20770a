//! The WGSL kernels, gathered in one place. Each file of `shaders/` is one kernel family and is
//! compiled with `shaders/common.wgsl` (the per-step uniform and the dispatch helper) in front,
//! for the kernels that sum over a workgroup one of the two `workgroup_sum` preludes, the
//! functions the host injects (the GEMM's `activate` and `backward`: `Activation::wgsl`), and
//! for the two GEMM families what they share (`shaders/gemm_common.wgsl`).

/// Shared declarations prepended to every kernel file.
pub const COMMON: &str = include_str!("../../../shaders/common.wgsl");

/// `(file name, source)` of every kernel family.
pub const FILES: [(&str, &str); 4] = [
    ("gemm.wgsl", include_str!("../../../shaders/gemm.wgsl")),
    (
        "gemm_mixed.wgsl",
        include_str!("../../../shaders/gemm_mixed.wgsl"),
    ),
    (
        "softmax_xent.wgsl",
        include_str!("../../../shaders/softmax_xent.wgsl"),
    ),
    (
        "optimizer.wgsl",
        include_str!("../../../shaders/optimizer.wgsl"),
    ),
];

/// `workgroup_sum` with subgroup operations, and by a tree in workgroup memory.
pub const REDUCE_SUBGROUP: (&str, &str) = (
    "reduce_subgroup.wgsl",
    include_str!("../../../shaders/reduce_subgroup.wgsl"),
);
pub const REDUCE_PLAIN: (&str, &str) = (
    "reduce_plain.wgsl",
    include_str!("../../../shaders/reduce_plain.wgsl"),
);

/// The kernel families that call `workgroup_sum`.
const REDUCING: [&str; 1] = ["softmax_xent.wgsl"];

/// What the two GEMM families share (their parameters, bindings, operand constants and
/// epilogue), put in front of each.
pub const GEMM_COMMON: (&str, &str) = (
    "gemm_common.wgsl",
    include_str!("../../../shaders/gemm_common.wgsl"),
);

/// The GEMM kernel families.
const GEMMS: [&str; 2] = ["gemm.wgsl", "gemm_mixed.wgsl"];

/// The source the GPU compiles for `file`: its `enable` directives (which WGSL wants first), the
/// common prelude, the reduction where the file needs one (with subgroup operations when
/// `subgroups`), the `injected` declarations, the GEMMs' shared declarations for a GEMM family,
/// then the rest of the file.
pub fn source(file: &str, subgroups: bool, injected: &str) -> String {
    let (_, body) = FILES
        .iter()
        .find(|(name, _)| *name == file)
        .expect("a kernel file of FILES");
    let reduce = if !REDUCING.contains(&file) {
        ""
    } else if subgroups {
        REDUCE_SUBGROUP.1
    } else {
        REDUCE_PLAIN.1
    };
    let gemm = if GEMMS.contains(&file) {
        GEMM_COMMON.1
    } else {
        ""
    };
    let (enables, rest): (Vec<&str>, Vec<&str>) =
        body.lines().partition(|line| line.starts_with("enable "));
    format!(
        "{}\n{COMMON}\n{reduce}\n{injected}\n{gemm}\n{}",
        enables.join("\n"),
        rest.join("\n")
    )
}
