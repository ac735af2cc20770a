//! A NumPy `.npy` array and an `.npz` archive, each read and made into splits as `--data` does.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(array) = gpumlp::numpy::read_npy("fuzz.npy", "x", bytes) {
        let _ = gpumlp::numpy::features("fuzz.npy", array.clone());
        let _ = gpumlp::numpy::labels("fuzz.npy", array);
    }
    if let Ok(arrays) = gpumlp::numpy::read_npz("fuzz.npz", bytes) {
        let _ = gpumlp::numpy::splits("fuzz.npz", arrays, 0.2);
    }
});
