//! The CPU backend's gradients against central differences of its own loss, on a tiny network
//! and a real batch. Every parameter is checked; the test refuses to pass on gradients that are
//! mostly zero, which would make the comparison empty.

mod common;

use gpumlp::backend::{Backend, Split, Tensor};
use gpumlp::model::{init_params, Architecture};
use gpumlp::{Activation, CpuBackend};
use pollster::block_on;

fn mean_loss(backend: &mut CpuBackend, batch: &[u32]) -> f64 {
    block_on(backend.take_stats(Split::Train)).unwrap();
    backend.forward(Split::Train, batch, batch.len()).unwrap();
    block_on(backend.take_stats(Split::Train)).unwrap().loss()
}

#[test]
fn gradients_match_central_differences_for_every_activation() {
    for activation in Activation::ALL {
        gradients_match_central_differences(activation);
    }
}

fn gradients_match_central_differences(activation: Activation) {
    let data = common::small_sample(16, 1);
    let arch = Architecture::mlp(&[6, 5])
        .unwrap()
        .with_activation(activation);
    let mut backend = CpuBackend::new(&arch);
    backend.upload(Split::Train, &data.train).unwrap();
    let mut params = init_params(&arch, 7);
    // Non-zero biases so every unit's kink is away from typical pre-activations.
    let layout = backend.layout().clone();
    for l in 0..arch.layers() {
        for (i, p) in params[layout.bias(l).range()].iter_mut().enumerate() {
            *p = 0.1 * ((i % 3) as f32 - 0.8);
        }
    }
    backend.write(Tensor::Params, &params).unwrap();
    let batch: Vec<u32> = (0..8).collect();
    backend.forward(Split::Train, &batch, batch.len()).unwrap();
    backend.backward().unwrap();
    let analytic = block_on(backend.read(Tensor::Grads)).unwrap();

    // A step small enough not to cross a kink of the piecewise-linear activations; the smooth
    // ones take a larger step, which keeps the f32 rounding of the losses (about 1e-4 / eps of
    // the gradient) below the tolerance where their gradients are small (sigmoid).
    let eps = match activation {
        Activation::Relu | Activation::LeakyRelu => 1e-3f32,
        _ => 1e-2,
    };
    let mut numeric = vec![0.0f32; params.len()];
    for i in 0..params.len() {
        if analytic[i] == 0.0 && i < layout.bias(0).offset {
            // First-layer weights of pixels that are zero in the whole batch: the loss does not
            // depend on them at all, so skip the two forwards (counted below as zeros).
            continue;
        }
        let saved = params[i];
        params[i] = saved + eps;
        backend.write(Tensor::Params, &params).unwrap();
        let up = mean_loss(&mut backend, &batch);
        params[i] = saved - eps;
        backend.write(Tensor::Params, &params).unwrap();
        let down = mean_loss(&mut backend, &batch);
        params[i] = saved;
        numeric[i] = ((up - down) / (2.0 * eps as f64)) as f32;
    }

    let nonzero = analytic.iter().filter(|g| g.abs() > 1e-6).count();
    assert!(
        nonzero > params.len() / 10,
        "only {nonzero} of {} gradients are non-zero",
        params.len()
    );
    let largest = analytic.iter().fold(0.0f32, |m, g| m.max(g.abs()));
    assert!(
        largest > 1e-3,
        "largest gradient {largest} is too small to test anything"
    );
    // The losses are f32 sums near 2.3, whose last bit is 2.4e-7: differenced over 2*eps that
    // leaves up to about 1.2e-4 of noise at eps 1e-3 (a one-bit change in the forward's rounding
    // moved one leaky-relu gradient's estimate from 3.7e-5 to 8.9e-5, the true value 1.2e-5).
    // This tolerance takes that noise and still catches a gradient 2% off (checked by scaling
    // the top gradient by 1.02).
    let noise = 2.4e-7 / (2.0 * eps);
    common::assert_close(
        &format!("{activation} gradient"),
        &analytic,
        &numeric,
        5e-5f32.max(1.5 * noise),
        5e-3,
    );
    for l in 0..arch.layers() {
        let w = layout.weight(l).range();
        assert!(
            analytic[w].iter().any(|g| g.abs() > 1e-4),
            "{activation}: layer {l}'s weight gradient is all zero"
        );
    }
}
