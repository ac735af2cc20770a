// gemm_mixed.wgsl: the GEMM family of gemm.wgsl in mixed precision, on cooperative matrices
// (Vulkan's VK_KHR_cooperative_matrix, Metal's simdgroup matrices): the same products, operands,
// epilogues and bindings, with the operands rounded to f16 and the sums kept in f32.
//
//   C[i, j] = epilogue( (sum_k f16(A[i, k] * A_SCALE) * f16(B[k, j])) / A_SCALE )
//
// (A, B, the epilogues, A_FROM_DATA / B_FROM_DATA and `batch_dim` exactly as in gemm.wgsl.)
// A_SCALE is the loss scale: 1 for a forward product, 1024 where A is a loss gradient (dZ), whose
// smallest entries would otherwise fall below f16's normal range (6.1e-5) and lose their digits;
// 1024 keeps them in range while |dZ| * 1024 stays far below f16's largest value (65504), and it is
// divided out of the f32 sums exactly (a power of two).
//
// One workgroup is one subgroup (WG invocations, the adapter's subgroup size) and computes a
// BM x BN tile of C, BM = MS * TMC, BN = MS * TNC: TMC x TNC cooperative MS x MS x MS products
// (MS 8 or 16: what the adapter offers) accumulated in f32 matrices over K, MS at a time. Each
// slice of A (BM x MS) and B (MS x BN) is converted to f16 in workgroup memory, guarded at the
// edges (zeros past M, N or K), and loaded row-major from there. The f32 result goes through
// workgroup memory too, so the epilogue is applied element by element as in gemm.wgsl. The bias
// gradient of epilogue 4 is summed in f32 from A directly by the first column of workgroups.
// The host puts in front of this file: `const MS`, the aliases MatA, MatB, MatC of the
// cooperative matrix types of that size, the run's `activate` and `backward`, and
// gemm_common.wgsl (gemm.wgsl's parameters, epilogue codes, bindings, operand constants and
// epilogue, `finish`).
// Bindings (group 0) as gemm.wgsl's: 0 params, 1 a, 2 b, 3 c (rw), 4 aux, 5 samples, 6 order.

enable f16;
enable wgpu_cooperative_matrix;

override TMC: u32 = 1u;
override TNC: u32 = 1u;
override WG: u32 = 32u;
override A_SCALE: f32 = 1.0;

// Sized for the largest tile, 32 x 32 (MS 16, 2 x 2 matrices).
var<workgroup> a_s: array<f16, 512>;   // BM x MS, row-major
var<workgroup> b_s: array<f16, 512>;   // MS x BN, row-major
var<workgroup> c_s: array<f32, 1024>;  // BM x BN, row-major

// Feature p of the sample in row `row` of the step's batch (gemm.wgsl's `features4`, one at a time).
fn feature(row: u32, p: u32) -> f32 {
    let base = order[step.order_offset + row] * ROW_WORDS;
    if (DATA_FLOATS) {
        return bitcast<f32>(samples[base + p]);
    }
    let word = samples[base + p / 4u];
    return f32((word >> (8u * (p % 4u))) & 0xffu) * INPUT_SCALE;
}

fn a_at(i: u32, k: u32) -> f32 {
    if (A_FROM_DATA) {
        return feature(i, k);
    }
    var at: u32;
    if (A_T) { at = g.a_off + k * g.lda + i; } else { at = g.a_off + i * g.lda + k; }
    return a[at / 4u][at % 4u];
}

fn b_at(k: u32, j: u32) -> f32 {
    if (B_FROM_DATA) {
        return feature(k, j);
    }
    var at: u32;
    if (B_T) { at = g.b_off + j * g.ldb + k; } else { at = g.b_off + k * g.ldb + j; }
    return b[at / 4u][at % 4u];
}

@compute @workgroup_size(WG)
fn gemm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    var m = g.m;
    var k = g.k;
    if (g.batch_dim == 1u) { m = step.batch; }
    if (g.batch_dim == 2u) { k = step.batch; }
    let n = g.n;
    let bm = MS * TMC;
    let bn = MS * TNC;
    let row0 = wid.y * bm;
    let col0 = wid.x * bn;
    // (No early return for a tile past a short batch, as gemm.wgsl has: cooperative operations
    // need uniform control flow. Its loads are guarded to zeros and its stores skipped.)
    var c00: MatC;
    var c01: MatC;
    var c10: MatC;
    var c11: MatC;
    for (var k0 = 0u; k0 < k; k0 += MS) {
        for (var e = t; e < bm * MS; e += WG) {
            let i = e / MS;
            let kk = e % MS;
            var v = 0.0;
            if (row0 + i < m && k0 + kk < k) {
                v = a_at(row0 + i, k0 + kk) * A_SCALE;
            }
            a_s[e] = f16(v);
        }
        for (var e = t; e < MS * bn; e += WG) {
            let kk = e / bn;
            let j = e % bn;
            var v = 0.0;
            if (col0 + j < n && k0 + kk < k) {
                v = b_at(k0 + kk, col0 + j);
            }
            b_s[e] = f16(v);
        }
        workgroupBarrier();
        let a0 = coopLoadT<MatA>(&a_s[0], MS);
        let b0 = coopLoadT<MatB>(&b_s[0], bn);
        c00 = coopMultiplyAdd(a0, b0, c00);
        if (TNC == 2u) {
            let b1 = coopLoadT<MatB>(&b_s[MS], bn);
            c01 = coopMultiplyAdd(a0, b1, c01);
        }
        if (TMC == 2u) {
            let a1 = coopLoadT<MatA>(&a_s[MS * MS], MS);
            c10 = coopMultiplyAdd(a1, b0, c10);
            if (TNC == 2u) {
                let b1 = coopLoadT<MatB>(&b_s[MS], bn);
                c11 = coopMultiplyAdd(a1, b1, c11);
            }
        }
        workgroupBarrier();
    }
    coopStoreT(c00, &c_s[0], bn);
    if (TNC == 2u) { coopStoreT(c01, &c_s[MS], bn); }
    if (TMC == 2u) {
        coopStoreT(c10, &c_s[MS * bn], bn);
        if (TNC == 2u) { coopStoreT(c11, &c_s[MS * bn + MS], bn); }
    }
    workgroupBarrier();
    for (var e = t; e < bm * bn; e += WG) {
        let i = row0 + e / bn;
        let j = col0 + e % bn;
        if (i < m && j < n) {
            finish(i, j, n, c_s[e] / A_SCALE);
        }
    }
    if (EPILOGUE == EPILOGUE_ROW_SUMS && wid.x == 0u) {
        for (var r = t; r < bm; r += WG) {
            let i = row0 + r;
            if (i < m) {
                var sum = 0.0;
                for (var kk = 0u; kk < k; kk++) {
                    sum += a_at(i, kk);
                }
                c[g.db_off + i] = sum;
            }
        }
    }
}
