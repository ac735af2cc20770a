//! Every WGSL kernel file parses and validates with naga, as the GPU will compile it (with the
//! common prelude in front), without needing a GPU.

use gpumlp::backend::gpu::{gemm, kernels};
use gpumlp::Activation;

#[test]
fn every_kernel_file_validates_with_naga() {
    // Each file as compiled without subgroup operations and with them (the reducing kernels
    // differ; the subgroup version needs the device's SUBGROUP capability), with each
    // activation's functions injected (the GEMM calls them).
    for (((file, _), subgroups), activation) in kernels::FILES
        .iter()
        .flat_map(|f| [(*f, false), (*f, true)])
        .flat_map(|f| Activation::ALL.map(|a| (f, a)))
    {
        // The mixed-precision GEMM also gets its matrix size and types (16 x 16 here; 8 x 8 in
        // `every_mixed_matrix_size_validates`) and needs f16 and cooperative matrices.
        let mixed = file == "gemm_mixed.wgsl";
        let injected = if mixed {
            format!("{}\n{}", gemm::mixed_prelude(16), activation.wgsl())
        } else {
            activation.wgsl()
        };
        let source = kernels::source(file, subgroups, &injected);
        let module = naga::front::wgsl::parse_str(&source)
            .unwrap_or_else(|e| panic!("{file} does not parse:\n{}", e.emit_to_string(&source)));
        let mut capabilities = if subgroups {
            naga::valid::Capabilities::SUBGROUP
        } else {
            naga::valid::Capabilities::empty()
        };
        if mixed {
            capabilities |= naga::valid::Capabilities::SHADER_FLOAT16
                | naga::valid::Capabilities::COOPERATIVE_MATRIX;
        }
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), capabilities)
            .subgroup_stages(naga::valid::ShaderStages::COMPUTE)
            .subgroup_operations(naga::valid::SubgroupOperationSet::all())
            .validate(&module)
            .unwrap_or_else(|e| {
                panic!(
                    "{file} (subgroups {subgroups}, {activation}) does not validate:\n{}",
                    e.emit_to_string(&source)
                )
            });
        assert!(!module.entry_points.is_empty(), "{file} has no entry point");
        // Each file opens with its math and bindings (the project's convention).
        let body = kernels::FILES.iter().find(|(f, _)| *f == file).unwrap().1;
        assert!(
            body.starts_with(&format!("// {file}:")) && body.contains("Bindings"),
            "{file} lacks its header"
        );
    }
    for (file, body) in [
        kernels::REDUCE_PLAIN,
        kernels::REDUCE_SUBGROUP,
        kernels::GEMM_COMMON,
    ] {
        assert!(
            body.starts_with(&format!("// {file}:")),
            "{file} lacks its header"
        );
    }
}

#[test]
fn every_mixed_matrix_size_validates() {
    for size in [8, 16] {
        let injected = format!(
            "{}\n{}",
            gemm::mixed_prelude(size),
            gpumlp::Activation::Gelu.wgsl()
        );
        let source = kernels::source("gemm_mixed.wgsl", false, &injected);
        let module = naga::front::wgsl::parse_str(&source).unwrap();
        let capabilities = naga::valid::Capabilities::SHADER_FLOAT16
            | naga::valid::Capabilities::COOPERATIVE_MATRIX;
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), capabilities)
            .validate(&module)
            .unwrap_or_else(|e| panic!("{size}x{size}: {}", e.emit_to_string(&source)));
    }
}
