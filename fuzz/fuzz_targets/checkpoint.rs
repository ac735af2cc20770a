//! A checkpoint (safetensors header, gpumlp metadata, tensors): a file that loads must also
//! save again.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(ckpt) = gpumlp::Checkpoint::from_bytes("fuzz", bytes) {
        ckpt.to_bytes()
            .expect("a checkpoint that loads saves again");
    }
});
