// gather.wgsl: build a training or evaluation batch from the dataset resident on the GPU.
//
//   x[r, p] = images[order[o + r], p] * INPUT_SCALE      r < B, p < PIXELS   (o = step.order_offset)
//   y[r]    = labels[order[o + r]]
//
// The dataset is uploaded once as bytes packed four to a u32 (little-endian), PIXELS / 4 words
// per image; each invocation unpacks one word into four pixels. PIXELS and INPUT_SCALE come
// from the core crate (`idx::PIXELS`, `model::INPUT_SCALE`) as pipeline constants.
// Bindings (group 0): 0 images u32[N*PIXELS/4], 1 labels u32[N], 2 order u32[>= o+B],
//                     3 x f32[B*PIXELS] (rw), 4 y u32[B] (rw).

@group(0) @binding(0) var<storage, read> images: array<u32>;
@group(0) @binding(1) var<storage, read> labels: array<u32>;
@group(0) @binding(2) var<storage, read> order: array<u32>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<u32>;

override PIXELS: u32 = 784u;
override INPUT_SCALE: f32 = 0.003921569;

@compute @workgroup_size(256)
fn gather(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let words = PIXELS / 4u;
    let i = flat_id(gid, nwg);
    if (i >= step.batch * words) {
        return;
    }
    let r = i / words;
    let w = i % words;
    let image = order[step.order_offset + r];
    let word = images[image * words + w];
    for (var b = 0u; b < 4u; b++) {
        x[r * PIXELS + w * 4u + b] = f32((word >> (8u * b)) & 0xffu) * INPUT_SCALE;
    }
    if (w == 0u) {
        y[r] = labels[image];
    }
}
