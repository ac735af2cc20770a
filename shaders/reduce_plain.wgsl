// reduce_plain.wgsl: a sum over the 256 invocations of a workgroup, by a tree in workgroup
// memory (8 barriers), in a fixed order. Put in front of the kernels that reduce where the device
// has no subgroup operations; reduce_subgroup.wgsl is the other choice.
//
//   workgroup_sum(v, t) = sum over all invocations t' of v(t')   (valid in invocation 0)
// Bindings: none.

// What the subgroup version reads of its invocation; unused here.
struct Subgroup {
    @builtin(local_invocation_id) unused: vec3<u32>,
}

var<workgroup> sum_part: array<vec2<f32>, 256>;

fn workgroup_sum(v: vec2<f32>, t: u32, sg: Subgroup) -> vec2<f32> {
    sum_part[t] = v;
    for (var width = 128u; width > 0u; width /= 2u) {
        workgroupBarrier();
        if (t < width) {
            sum_part[t] += sum_part[t + width];
        }
    }
    workgroupBarrier();
    return sum_part[0];
}
