// reduce_subgroup.wgsl: a sum over the 256 invocations of a workgroup with subgroup
// operations: each subgroup adds its lanes in registers (subgroupAdd), then invocation 0 adds
// the subgroups' sums in order (one barrier instead of eight). Put in front of the kernels that
// reduce where the device has wgpu's SUBGROUP feature; reduce_plain.wgsl is the other choice.
//
//   workgroup_sum(v, t) = sum over all invocations t' of v(t')   (valid in invocation 0)
// Bindings: none.

struct Subgroup {
    @builtin(subgroup_invocation_id) lane: u32,
    @builtin(subgroup_id) id: u32,
    @builtin(num_subgroups) count: u32,
}

// One slot per subgroup (at least 4 invocations per subgroup on any device wgpu supports).
var<workgroup> sum_part: array<vec2<f32>, 64>;

fn workgroup_sum(v: vec2<f32>, t: u32, sg: Subgroup) -> vec2<f32> {
    let s = subgroupAdd(v);
    if (sg.lane == 0u) {
        sum_part[sg.id] = s;
    }
    workgroupBarrier();
    var total = vec2<f32>(0.0);
    if (t == 0u) {
        for (var i = 0u; i < sg.count; i++) {
            total += sum_part[i];
        }
    }
    return total;
}
