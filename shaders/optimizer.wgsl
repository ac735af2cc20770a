// optimizer.wgsl: one update of the whole flat parameter buffer, one invocation per parameter.
//
//   sgd:   vel = flush(mu*vel + g);                          p = p*decay - lr*vel
//   adam:  m = flush(b1*m + (1-b1)*g);  v = flush(b2*v + (1-b2)*g^2)
//          p = p*decay - adam_step*m / (sqrt(v)*adam_v_scale + eps)
// flush(x) stores a subnormal moment as 0, as the CPU backend does (`optim::flush_subnormal`:
// a moment that decays while its gradient is zero would otherwise sink into that range).
// decay, lr, adam_step and adam_v_scale change per step and come from the step table (computed
// by `OptimizerConfig::scalars`, as for the CPU backend); the rest is fixed per run.
// Each entry point binds its optimizer's state buffers in the order of
// `OptimizerKind::state_names`: sgd [velocity], adam [m, v].
// Bindings (group 0): 0 settings (uniform Opt), 1 p f32[P] (rw), 2 g f32[P],
//                     3 state0 f32[P] (rw), 4 state1 f32[P] (rw, adam only).

struct Opt {
    len: u32,
    momentum: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
}

@group(0) @binding(0) var<uniform> opt: Opt;
@group(0) @binding(1) var<storage, read_write> p: array<f32>;
@group(0) @binding(2) var<storage, read> g: array<f32>;
@group(0) @binding(3) var<storage, read_write> state0: array<f32>;
@group(0) @binding(4) var<storage, read_write> state1: array<f32>;

override WG: u32 = 256u;

/// `x`, or a zero of its sign where its magnitude is under f32's smallest normal number, 2^-126.
fn flush(x: f32) -> f32 {
    return select(x, bitcast<f32>(bitcast<u32>(x) & 0x80000000u), abs(x) < 0x1p-126f);
}

@compute @workgroup_size(WG)
fn sgd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_id(gid, nwg);
    if (i >= opt.len) {
        return;
    }
    let vel = flush(opt.momentum * state0[i] + g[i]);
    state0[i] = vel;
    p[i] = p[i] * step.decay - step.lr * vel;
}

@compute @workgroup_size(WG)
fn adam(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_id(gid, nwg);
    if (i >= opt.len) {
        return;
    }
    let grad = g[i];
    let m1 = flush(opt.beta1 * state0[i] + (1.0 - opt.beta1) * grad);
    let v1 = flush(opt.beta2 * state1[i] + (1.0 - opt.beta2) * grad * grad);
    state0[i] = m1;
    state1[i] = v1;
    p[i] = p[i] * step.decay - step.adam_step * m1 / (sqrt(v1) * step.adam_v_scale + opt.eps);
}
