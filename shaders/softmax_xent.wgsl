// softmax_xent.wgsl: softmax cross-entropy, forward and backward, and the running stats, in one
// workgroup for the whole batch (B x CLASSES is little work next to the GEMMs; one dispatch
// instead of two). Each invocation walks its rows' classes in a loop, so any class count works.
//
//   p[r, :]  = softmax(z[r, :])                                  z: logits [B, CLASSES]
//   loss[r]  = log(sum_c exp(z[r, c] - max)) - (z[r, y[r]] - max)
//   hit[r]   = (argmax_c z[r, c] == y[r])    (first maximum on ties, as on the CPU)
//   y[r]     = labels[order[o + r]]          (o = step.order_offset: the batch's own labels)
//   dz[r, c] = (p[r, c] - [c == y[r]]) * step.inv_batch   (the loss gradient backward starts from:
//              1 / B for the mean loss, 1 / the global batch for a data-parallel rank's share)
//   stats[4s + 0] += sum_r loss[r]    stats[4s + 1] += sum_r hit[r]    stats[4s + 2] += B
//   (s = step.split: 0 train, 1 test)
//
// Invocation t takes rows t, t + 256, ...; `workgroup_sum` then adds the 256 partial sums in a
// fixed order, so the sums repeat exactly run to run: with subgroup operations where the device
// has them (reduce_subgroup.wgsl), else by a tree in workgroup memory (reduce_plain.wgsl); the
// host puts one of the two in front of this file. The stats stay on the GPU until the trainer
// reads them, once per epoch.
// Bindings (group 0): 0 z f32[B*CLASSES], 1 labels u32[N], 2 dz f32[B*CLASSES] (rw),
//                     3 stats f32[8] (rw),
//                     4 order u32[].

@group(0) @binding(0) var<storage, read> z: array<f32>;
@group(0) @binding(1) var<storage, read> labels: array<u32>;
@group(0) @binding(2) var<storage, read_write> dz: array<f32>;
@group(0) @binding(3) var<storage, read_write> stats: array<f32>;
@group(0) @binding(4) var<storage, read> order: array<u32>;

override CLASSES: u32 = 10u;
const WG: u32 = 256u;

@compute @workgroup_size(WG)
fn softmax_xent(@builtin(local_invocation_index) t: u32, sg: Subgroup) {
    var loss = 0.0;
    var hits = 0.0;
    for (var r = t; r < step.batch; r += WG) {
        let base = r * CLASSES;
        var max_z = z[base];
        var best = 0u;
        for (var c = 1u; c < CLASSES; c++) {
            if (z[base + c] > max_z) {
                max_z = z[base + c];
                best = c;
            }
        }
        var sum = 0.0;
        for (var c = 0u; c < CLASSES; c++) {
            sum += exp(z[base + c] - max_z);
        }
        let label = labels[order[step.order_offset + r]];
        loss += log(sum) - (z[base + label] - max_z);
        hits += select(0.0, 1.0, best == label);
        for (var c = 0u; c < CLASSES; c++) {
            let p = exp(z[base + c] - max_z) / sum;
            dz[base + c] = (p - select(0.0, 1.0, c == label)) * step.inv_batch;
        }
    }
    let total = workgroup_sum(vec2<f32>(loss, hits), t, sg);
    if (t == 0u) {
        let s = 4u * step.split;
        stats[s] += total.x;
        stats[s + 1u] += total.y;
        stats[s + 2u] += f32(step.batch);
    }
}
