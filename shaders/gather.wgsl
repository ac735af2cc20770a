// gather.wgsl: build a training or evaluation batch from the dataset resident on the GPU.
//
//   x[r, p] = images[order[o + r], p] / 255      r < B, p < 784   (o = step.order_offset)
//   y[r]    = labels[order[o + r]]
//
// The dataset is uploaded once as bytes packed four to a u32 (little-endian), 196 words per
// 28x28 image; each invocation unpacks one word into four pixels.
// Bindings (group 0): 0 images u32[N*196], 1 labels u32[N], 2 order u32[>= o+B],
//                     3 x f32[B*784] (rw), 4 y u32[B] (rw).

@group(0) @binding(0) var<storage, read> images: array<u32>;
@group(0) @binding(1) var<storage, read> labels: array<u32>;
@group(0) @binding(2) var<storage, read> order: array<u32>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<u32>;

const WORDS: u32 = 196u;

@compute @workgroup_size(256)
fn gather(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_id(gid, nwg);
    if (i >= step.batch * WORDS) {
        return;
    }
    let r = i / WORDS;
    let w = i % WORDS;
    let image = order[step.order_offset + r];
    let word = images[image * WORDS + w];
    for (var b = 0u; b < 4u; b++) {
        x[r * 784u + w * 4u + b] = f32((word >> (8u * b)) & 0xffu) * (1.0 / 255.0);
    }
    if (w == 0u) {
        y[r] = labels[image];
    }
}
