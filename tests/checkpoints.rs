//! Checkpoint compatibility: files written by earlier gpumlp versions still load and resume,
//! the optimizer state is stored by name, and a checkpoint naming an unknown activation is
//! refused.
//!
//! `tests/data/v1-*.safetensors` were written by gpumlp before the optimizer state was named
//! (format 1, commit 7a57b9f): `gpumlp train --data mnist-sample --hidden 8 --epochs 2` with
//! `--optimizer adam`, and with `--optimizer sgd --momentum 0.8 --schedule step`, on the CPU.

use gpumlp::{dataset, Activation, Checkpoint, CpuBackend, OptimizerKind, Trainer};
use pollster::block_on;
use safetensors::SafeTensors;

const V1_ADAM: &[u8] = include_bytes!("data/v1-adam-784-8-10.safetensors");
const V1_SGD: &[u8] = include_bytes!("data/v1-sgd-784-8-10.safetensors");

/// The f32 tensor `name` of a safetensors file.
fn tensor(bytes: &[u8], name: &str) -> Vec<f32> {
    let st = SafeTensors::deserialize(bytes).unwrap();
    bytemuck::pod_collect_to_vec(st.tensor(name).unwrap().data())
}

/// Resumes `ckpt` to 3 epochs on the CPU; returns the test accuracy and the new checkpoint.
fn resume_to_3(ckpt: &Checkpoint) -> (f64, Checkpoint) {
    let data = dataset::mnist_sample();
    let backend = CpuBackend::new(&ckpt.architecture);
    let mut t = Trainer::resume(ckpt, 3, Box::new(backend), &data).unwrap();
    block_on(t.train_epoch(&mut |_, _| {})).unwrap();
    let test = block_on(t.evaluate()).unwrap();
    (test.accuracy(), block_on(t.checkpoint()).unwrap())
}

#[test]
fn format_1_checkpoints_load_and_resume_as_they_did() {
    // (file, optimizer, test accuracy the writing version reported after resuming to 3 epochs)
    for (bytes, kind, accuracy_then) in [
        (V1_ADAM, OptimizerKind::Adam, 0.678),
        (V1_SGD, OptimizerKind::Sgd, 0.8345),
    ] {
        let ckpt = Checkpoint::from_bytes("v1", bytes).unwrap();
        let state = ckpt.training.as_ref().unwrap();
        assert_eq!(state.config.optimizer.kind, kind);
        assert_eq!((state.epoch, state.step), (2, 126));
        assert!(ckpt.params[..784 * 8] == tensor(bytes, "layers.0.weight"));
        // Format 1 kept SGD's velocity in `optimizer.m`; Adam's m and v keep their names.
        assert_eq!(state.optimizer_state.len(), kind.state_names().len());
        assert!(state.optimizer_state[0] == tensor(bytes, "optimizer.m"));
        if kind == OptimizerKind::Adam {
            assert!(state.optimizer_state[1] == tensor(bytes, "optimizer.v"));
        }
        assert!(state.optimizer_state[0].iter().any(|&x| x != 0.0));

        // The resumed run lands where the version that wrote the file landed (bit-identical on
        // the machine that wrote it; GEMM kernels round differently on other CPUs).
        let (accuracy, resumed) = resume_to_3(&ckpt);
        assert!(
            (accuracy - accuracy_then).abs() < 0.005,
            "{kind}: {accuracy} after resuming, {accuracy_then} then"
        );

        // Written again, the state is stored under its own names and reads back the same.
        let bytes = resumed.to_bytes().unwrap();
        let names: Vec<String> = SafeTensors::deserialize(&bytes)
            .unwrap()
            .names()
            .into_iter()
            .filter(|n| n.starts_with("optimizer."))
            .map(String::from)
            .collect();
        let mut want: Vec<String> = kind
            .state_names()
            .iter()
            .map(|n| format!("optimizer.{n}"))
            .collect();
        let mut names = names;
        names.sort();
        want.sort();
        assert_eq!(names, want);
        let reread = Checkpoint::from_bytes("v2", &bytes).unwrap();
        assert!(reread.training == resumed.training && reread.params == resumed.params);
    }
}

#[test]
fn an_unknown_activation_is_refused() {
    let ckpt = Checkpoint::from_bytes("v1", V1_ADAM).unwrap();
    let bytes = ckpt.to_bytes().unwrap();
    // Same length, so the header's offsets stay valid: "relu" -> "selu" in the JSON header.
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let at = bytes[8..8 + header_len]
        .windows(4)
        .position(|w| w == b"relu")
        .expect("the activation is in the header")
        + 8;
    let mut spoiled = bytes.clone();
    spoiled[at..at + 4].copy_from_slice(b"selu");
    let err = Checkpoint::from_bytes("odd.st", &spoiled)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("odd.st") && err.contains("'selu'") && err.contains("activation"),
        "{err}"
    );
}

#[test]
fn a_checkpoint_without_an_activation_is_relu_and_resumes() {
    // A format-1 checkpoint's training settings predate the activation setting; blank out its
    // metadata's `"activation":"relu",` too (spaces: the same length, so the header's offsets
    // stay valid), as a checkpoint written before either existed.
    let bytes = V1_ADAM.to_vec();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let key = br#"\"activation\":\"relu\","#;
    let mut old = bytes.clone();
    let header = &mut old[8..8 + header_len];
    let at = header
        .windows(key.len())
        .position(|w| w == key)
        .expect("the metadata names the activation");
    header[at..at + key.len()].fill(b' ');
    let loaded = Checkpoint::from_bytes("old.st", &old).unwrap();
    let ckpt = Checkpoint::from_bytes("v1", V1_ADAM).unwrap();
    assert_eq!(loaded.architecture.activation, Activation::Relu);
    assert_eq!(loaded.params, ckpt.params);
    assert_eq!(resume_to_3(&loaded).0, resume_to_3(&ckpt).0);
}
