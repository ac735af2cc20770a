//! Settings as text: every value the command line parses through the core crate, and a run's
//! settings and a data description as the JSON a checkpoint carries, then checked.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let _ = text.parse::<gpumlp::Architecture>();
    let _ = text.parse::<gpumlp::Activation>();
    let _ = text.parse::<gpumlp::OptimizerKind>();
    let _ = text.parse::<gpumlp::Schedule>();
    if let Ok(config) = serde_json::from_str::<gpumlp::TrainConfig>(text) {
        if config.validate().is_ok() {
            // Valid hidden widths; the parameter count still depends on the data's ends.
            let _ = config.architecture(&gpumlp::DataSpec::mnist());
        }
    }
    if let Ok(spec) = serde_json::from_str::<gpumlp::DataSpec>(text) {
        if spec.check_limits("fuzz").is_ok() {
            let _ = gpumlp::Architecture::for_data(&spec, &[8]);
        }
    }
});
