//! The WGSL kernels, gathered in one place. Each file of `shaders/` is one kernel family and is
//! compiled with `shaders/common.wgsl` (the per-step uniform and the dispatch helper) in front.

/// Shared declarations prepended to every kernel file.
pub const COMMON: &str = include_str!("../../../shaders/common.wgsl");

/// `(file name, source)` of every kernel family.
pub const FILES: [(&str, &str); 3] = [
    ("gemm.wgsl", include_str!("../../../shaders/gemm.wgsl")),
    (
        "softmax_xent.wgsl",
        include_str!("../../../shaders/softmax_xent.wgsl"),
    ),
    (
        "optimizer.wgsl",
        include_str!("../../../shaders/optimizer.wgsl"),
    ),
];

/// The source the GPU compiles for `file`: the common prelude, then the file.
pub fn source(file: &str) -> String {
    let (_, body) = FILES
        .iter()
        .find(|(name, _)| *name == file)
        .expect("a kernel file of FILES");
    format!("{COMMON}\n{body}")
}
