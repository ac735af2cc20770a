// accuracy.wgsl: add a batch's loss and correct count to the running stats on the GPU, so an
// epoch needs no readback until its end.
//
//   stats[4s + 0] += sum_r loss[r]     stats[4s + 1] += sum_r hit[r]     stats[4s + 2] += B
//   (s = step.split: 0 train, 1 test; row_stats holds loss[r], hit[r] pairs from softmax_xent)
//
// One workgroup: each invocation sums a fixed strided subset, then a tree in workgroup memory
// combines them, always in the same order, so the sums repeat exactly.
// Bindings (group 0): 0 row_stats f32[2B], 1 stats f32[8] (rw).

@group(0) @binding(0) var<storage, read> row_stats: array<f32>;
@group(0) @binding(1) var<storage, read_write> stats: array<f32>;

var<workgroup> loss_part: array<f32, 256>;
var<workgroup> hit_part: array<f32, 256>;

@compute @workgroup_size(256)
fn accumulate(@builtin(local_invocation_index) t: u32) {
    var loss = 0.0;
    var hits = 0.0;
    for (var r = t; r < step.batch; r += 256u) {
        loss += row_stats[2u * r];
        hits += row_stats[2u * r + 1u];
    }
    loss_part[t] = loss;
    hit_part[t] = hits;
    for (var width = 128u; width > 0u; width /= 2u) {
        workgroupBarrier();
        if (t < width) {
            loss_part[t] += loss_part[t + width];
            hit_part[t] += hit_part[t + width];
        }
    }
    if (t == 0u) {
        let s = 4u * step.split;
        stats[s] += loss_part[0];
        stats[s + 1u] += hit_part[0];
        stats[s + 2u] += f32(step.batch);
    }
}
