// bias_grad.wgsl: the bias gradient, a column sum of the layer's output gradient.
//
//   db[j] = sum_r dz[r, j]        dz [B, N] row-major; db = grads[db_off .. db_off + N]
//
// One invocation per column, summing rows in order: the same order as the CPU backend, and
// coalesced across the invocations of a workgroup.
// Bindings (group 0): 0 params (uniform BiasGrad), 1 dz f32[B*N], 2 grads f32[] (rw).

struct BiasGrad {
    n: u32,
    db_off: u32,
}

@group(0) @binding(0) var<uniform> bg: BiasGrad;
@group(0) @binding(1) var<storage, read> dz: array<f32>;
@group(0) @binding(2) var<storage, read_write> grads: array<f32>;

@compute @workgroup_size(256)
fn bias_grad(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = flat_id(gid, nwg);
    if (j >= bg.n) {
        return;
    }
    var sum = 0.0;
    for (var r = 0u; r < step.batch; r++) {
        sum += dz[r * bg.n + j];
    }
    grads[bg.db_off + j] = sum;
}
