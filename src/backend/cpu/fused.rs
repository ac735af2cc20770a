//! The element-wise work fused into the products' blocks (`matmul`), on one row of a block at
//! a time while the block is in cache: the bias added to a layer's output, the activation
//! applied, its derivative applied to an input gradient, a bias gradient's sum of rows.
//!
//! Compiled also for AVX2 and AVX-512 and picked at run time, like the optimizer's loops: the
//! baseline x86-64 build is SSE2, and these run on every element a step's products write. ReLU,
//! the default activation, has loops of its own that vectorise; the others call
//! [`Activation::apply`] per element, their `exp` and `tanh` costing more than the call.
//! Element-wise IEEE operations give the same bits at any vector width.

use crate::model::Activation;
use multiversion::multiversion;

/// `z += bias`.
#[multiversion(targets("x86_64+avx512f", "x86_64+avx2+fma"))]
pub(crate) fn add(z: &mut [f32], bias: &[f32]) {
    for (z, &b) in z.iter_mut().zip(bias) {
        *z += b;
    }
}

/// `z = f(z)`.
#[multiversion(targets("x86_64+avx512f", "x86_64+avx2+fma"))]
pub(crate) fn activate(f: Activation, z: &mut [f32]) {
    match f {
        Activation::Relu => z.iter_mut().for_each(|z| *z = Activation::Relu.apply(*z)),
        f => z.iter_mut().for_each(|z| *z = f.apply(*z)),
    }
}

/// `d = d * f'`, read off `x` (see [`Activation::backward`]).
#[multiversion(targets("x86_64+avx512f", "x86_64+avx2+fma"))]
pub(crate) fn activation_backward(f: Activation, d: &mut [f32], x: &[f32]) {
    match f {
        Activation::Relu => d
            .iter_mut()
            .zip(x)
            .for_each(|(d, &x)| *d = Activation::Relu.backward(*d, x)),
        f => d
            .iter_mut()
            .zip(x)
            .for_each(|(d, &x)| *d = f.backward(*d, x)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectorised loops give what the scalar definitions give, on every activation, over a
    /// length that leaves a remainder at every vector width.
    #[test]
    fn match_the_scalar_definitions() {
        let z: Vec<f32> = (0..37).map(|i| (i as f32 - 18.0) * 0.37).collect();
        let bias: Vec<f32> = (0..37).map(|i| (i % 5) as f32 * 0.1 - 0.2).collect();
        let mut sum = z.clone();
        add(&mut sum, &bias);
        for (i, s) in sum.iter().enumerate() {
            assert_eq!(s.to_bits(), (z[i] + bias[i]).to_bits());
        }
        for f in Activation::ALL {
            let mut a = z.clone();
            activate(f, &mut a);
            let mut d = bias.clone();
            activation_backward(f, &mut d, &z);
            for i in 0..z.len() {
                assert_eq!(a[i].to_bits(), f.apply(z[i]).to_bits(), "{f:?} at {i}");
                assert_eq!(
                    d[i].to_bits(),
                    f.backward(bias[i], z[i]).to_bits(),
                    "{f:?}' at {i}"
                );
            }
        }
    }
}
