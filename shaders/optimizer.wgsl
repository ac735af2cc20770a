// optimizer.wgsl: one update of the whole flat parameter buffer, one invocation per parameter.
//
//   sgd:   v = mu*v + g;                          p = p*(1 - lr*wd) - lr*v
//   adam:  m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2
//          p = p*(1 - lr*wd) - step_size*m / (sqrt(v)*v_scale + eps)
//          (step_size = lr/(1 - b1^t), v_scale = 1/sqrt(1 - b2^t), computed on the CPU per step
//           exactly as the CPU backend's reference `optim.rs` does)
// Bindings (group 0): 0 params (uniform Opt), 1 p f32[P] (rw), 2 g f32[P], 3 m f32[P] (rw),
//                     4 v f32[P] (rw).

struct Opt {
    len: u32,
    momentum: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
}

@group(0) @binding(0) var<uniform> opt: Opt;
@group(0) @binding(1) var<storage, read_write> p: array<f32>;
@group(0) @binding(2) var<storage, read> g: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;

@compute @workgroup_size(256)
fn sgd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_id(gid, nwg);
    if (i >= opt.len) {
        return;
    }
    let vel = opt.momentum * m[i] + g[i];
    m[i] = vel;
    p[i] = p[i] * (1.0 - step.lr * opt.weight_decay) - step.lr * vel;
}

@compute @workgroup_size(256)
fn adam(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_id(gid, nwg);
    if (i >= opt.len) {
        return;
    }
    let grad = g[i];
    let m1 = opt.beta1 * m[i] + (1.0 - opt.beta1) * grad;
    let v1 = opt.beta2 * v[i] + (1.0 - opt.beta2) * grad * grad;
    m[i] = m1;
    v[i] = v1;
    p[i] = p[i] * (1.0 - step.lr * opt.weight_decay) - step.adam_step * m1 / (sqrt(v1) * step.adam_v_scale + opt.eps);
}
