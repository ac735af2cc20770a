// common.wgsl: prepended to every kernel file (WGSL has no includes).
//
// Per-step values, one 256-byte slot per training step in a uniform buffer bound with a dynamic
// offset, so a whole epoch is encoded at once and each dispatch reads its own step's slot.
// Bindings: @group(1) @binding(0) step (uniform, dynamic offset).

struct Step {
    order_offset: u32,   // first entry of `order` that this batch uses
    batch: u32,          // rows in this batch, B
    split: u32,          // 0 train, 1 test: which running stats the batch adds to
    inv_batch: f32,      // 1 / mean_over: B for the mean loss, a global batch for a rank's share
    lr: f32,             // learning rate of this step (after the schedule)
    decay: f32,          // 1 - lr * weight_decay (decoupled weight decay)
    adam_step: f32,      // lr / (1 - beta1^t), Adam's bias-corrected step size
    adam_v_scale: f32,   // 1 / sqrt(1 - beta2^t), Adam's second-moment correction
}
// (The optimizer's scalars come from `OptimizerConfig::scalars`, as the CPU backend's do.)

@group(1) @binding(0) var<uniform> step: Step;

// Workgroups per dispatch dimension are capped (65,535 on WebGPU), so 1-D work is dispatched as
// a 2-D grid of WG-wide workgroups and flattened back here (each file declares its WG).
fn flat_id(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG;
}
