// softmax_xent.wgsl: softmax cross-entropy, forward and backward in one pass per row.
//
//   p[r, :]  = softmax(z[r, :])                                  z: logits [B, 10]
//   loss[r]  = log(sum_c exp(z[r, c] - max)) - (z[r, y[r]] - max)
//   hit[r]   = (argmax_c z[r, c] == y[r])    (first maximum on ties, as on the CPU)
//   dz[r, c] = (p[r, c] - [c == y[r]]) / B   (only when step.train: the mean loss's gradient)
//
// Per-row loss and hit go to `row_stats` for accuracy.wgsl to sum.
// Bindings (group 0): 0 z f32[B*10], 1 y u32[B], 2 dz f32[B*10] (rw), 3 row_stats f32[2B] (rw).

@group(0) @binding(0) var<storage, read> z: array<f32>;
@group(0) @binding(1) var<storage, read> y: array<u32>;
@group(0) @binding(2) var<storage, read_write> dz: array<f32>;
@group(0) @binding(3) var<storage, read_write> row_stats: array<f32>;

const CLASSES: u32 = 10u;

@compute @workgroup_size(256)
fn softmax_xent(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = flat_id(gid, nwg);
    if (r >= step.batch) {
        return;
    }
    let base = r * CLASSES;
    var max_z = z[base];
    var best = 0u;
    for (var c = 1u; c < CLASSES; c++) {
        if (z[base + c] > max_z) {
            max_z = z[base + c];
            best = c;
        }
    }
    var e: array<f32, 10>;
    var sum = 0.0;
    for (var c = 0u; c < CLASSES; c++) {
        e[c] = exp(z[base + c] - max_z);
        sum += e[c];
    }
    let label = y[r];
    row_stats[2u * r] = log(sum) - (z[base + label] - max_z);
    row_stats[2u * r + 1u] = select(0.0, 1.0, best == label);
    if (step.train == 1u) {
        for (var c = 0u; c < CLASSES; c++) {
            let p = e[c] / sum;
            dz[base + c] = (p - select(0.0, 1.0, c == label)) * step.inv_batch;
        }
    }
}
