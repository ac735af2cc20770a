//! A picture for `gpumlp predict`: decoded as the program decodes it, then prepared as MNIST's
//! digits were (crop, scale, centre).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(img) = image::load_from_memory(bytes) {
        let img = img.to_rgba8();
        let luma = gpumlp::preprocess::luma_over_white(img.as_raw());
        let _ = gpumlp::preprocess::digit_from_luma(img.width(), img.height(), &luma);
    }
});
