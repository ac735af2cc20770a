// gemm.wgsl: tiled matrix product with strided operands and a fused epilogue.
//
//   C[i, j] = epilogue( sum_k A[i, k] * B[k, j] )        C is M x N row-major
//   A[i, k] = a[a_off + i*a_rs + k*a_cs]                  any strides: A or A^T
//   B[k, j] = b[b_off + k*b_rs + j*b_cs]                  any strides: B or B^T
//   epilogue: 0 none, 1 + bias[j], 2 relu(. + bias[j]), 3 . * (mask[i, j] > 0)
//   (bias = aux[aux_off + j]; mask = aux[aux_off + i*N + j], ReLU's derivative read off its output)
//
// The MLP's products, with W [out, in] and A [B, in]:
//   forward   Z  = A @ W^T (+ b, ReLU)   M = B,   N = out, K = in
//   backward  dW = dZ^T @ A              M = out, N = in,  K = B
//             dA = dZ @ W (* (A > 0))    M = B,   N = in,  K = out
// The batch size changes on an epoch's last step, so `batch_dim` says which of M or K is the
// batch, taken from the step's slot.
//
// Each 16x16 workgroup computes a 64x64 tile of C; each invocation a 4x4 register block, from
// 64x16 slices of A and B staged through workgroup memory and read back as vec4. Bounds are
// checked only while staging and writing, so ragged edges cost nothing in the inner loop.
// Bindings (group 0): 0 params (uniform Gemm), 1 a f32[], 2 b f32[], 3 c f32[] (rw), 4 aux f32[].

struct Gemm {
    m: u32, n: u32, k: u32,
    batch_dim: u32,      // 0 none, 1 M is the batch, 2 K is the batch
    a_off: u32, a_rs: u32, a_cs: u32,
    b_off: u32, b_rs: u32, b_cs: u32,
    c_off: u32,
    aux_off: u32,
    epilogue: u32,
}

@group(0) @binding(0) var<uniform> g: Gemm;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
@group(0) @binding(4) var<storage, read> aux: array<f32>;

const TILE: u32 = 64u;
const KT: u32 = 16u;

// Slices of A (64 rows) and B (64 columns) for KT steps of k, as vec4 along rows/columns:
// a_tile[kk * 16 + q] holds rows 4q..4q+3 of column kk.
var<workgroup> a_tile: array<vec4<f32>, 256>;
var<workgroup> b_tile: array<vec4<f32>, 256>;

@compute @workgroup_size(16, 16)
fn gemm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    var m = g.m;
    var k = g.k;
    if (g.batch_dim == 1u) { m = step.batch; }
    if (g.batch_dim == 2u) { k = step.batch; }
    let n = g.n;
    let row0 = wid.y * TILE;
    let col0 = wid.x * TILE;
    if (row0 >= m) {
        return; // whole tile past a short batch: no barrier is reached by anyone here
    }
    let tid = lid.y * 16u + lid.x;
    var acc: array<vec4<f32>, 4>;   // acc[r][cc]: row 4*lid.y + r, column 4*lid.x + cc

    for (var k0 = 0u; k0 < k; k0 += KT) {
        // Stage 64 x KT of A and KT x 64 of B: 1024 values each, 4 per invocation. The index
        // runs along whichever dimension is contiguous in memory, so loads coalesce.
        for (var q = 0u; q < 4u; q++) {
            let e = tid + 256u * q;
            var i: u32; var kk: u32;
            if (g.a_cs == 1u) { i = e / KT; kk = e % KT; } else { i = e % TILE; kk = e / TILE; }
            var av = 0.0;
            if (row0 + i < m && k0 + kk < k) {
                av = a[g.a_off + (row0 + i) * g.a_rs + (k0 + kk) * g.a_cs];
            }
            a_tile[kk * 16u + i / 4u][i % 4u] = av;

            var j: u32; var kb: u32;
            if (g.b_cs == 1u) { j = e % TILE; kb = e / TILE; } else { j = e / KT; kb = e % KT; }
            var bv = 0.0;
            if (col0 + j < n && k0 + kb < k) {
                bv = b[g.b_off + (k0 + kb) * g.b_rs + (col0 + j) * g.b_cs];
            }
            b_tile[kb * 16u + j / 4u][j % 4u] = bv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < KT; kk++) {
            let av = a_tile[kk * 16u + lid.y];
            let bv = b_tile[kk * 16u + lid.x];
            acc[0] += av.x * bv;
            acc[1] += av.y * bv;
            acc[2] += av.z * bv;
            acc[3] += av.w * bv;
        }
        workgroupBarrier();
    }

    for (var r = 0u; r < 4u; r++) {
        let i = row0 + lid.y * 4u + r;
        for (var cc = 0u; cc < 4u; cc++) {
            let j = col0 + lid.x * 4u + cc;
            if (i < m && j < n) {
                var v = acc[r][cc];
                switch g.epilogue {
                    case 1u: { v += aux[g.aux_off + j]; }
                    case 2u: { v = max(v + aux[g.aux_off + j], 0.0); }
                    case 3u: { if (aux[g.aux_off + i * n + j] <= 0.0) { v = 0.0; } }
                    default: {}
                }
                c[g.c_off + i * n + j] = v;
            }
        }
    }
}
