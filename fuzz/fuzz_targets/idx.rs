//! An IDX file (raw or gzip), as an image file, as a label file, and as a pair split in two.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let _ = gpumlp::idx::parse_images("fuzz", bytes);
    let _ = gpumlp::idx::parse_labels("fuzz", bytes);
    let cut = bytes.first().map_or(0, |&b| b as usize).min(bytes.len());
    let (images, labels) = bytes.split_at(cut);
    let _ = gpumlp::Dataset::from_idx("images", images, "labels", labels);
});
