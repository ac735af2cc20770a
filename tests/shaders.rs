//! Every WGSL kernel file parses and validates with naga, as the GPU will compile it (with the
//! common prelude in front), without needing a GPU.

use gpumlp::backend::gpu::kernels;

#[test]
fn every_kernel_file_validates_with_naga() {
    assert_eq!(kernels::FILES.len(), 3);
    for (file, _) in kernels::FILES {
        let source = kernels::source(file);
        let module = naga::front::wgsl::parse_str(&source)
            .unwrap_or_else(|e| panic!("{file} does not parse:\n{}", e.emit_to_string(&source)));
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::empty(),
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{file} does not validate:\n{}", e.emit_to_string(&source)));
        assert!(!module.entry_points.is_empty(), "{file} has no entry point");
        // Each file opens with its math and bindings (the project's convention).
        let body = kernels::FILES.iter().find(|(f, _)| *f == file).unwrap().1;
        assert!(
            body.starts_with(&format!("// {file}:")) && body.contains("Bindings"),
            "{file} lacks its header"
        );
    }
}
