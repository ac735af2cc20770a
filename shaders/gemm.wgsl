// gemm.wgsl: one family of block-tiled matrix products with a fused epilogue.
//
//   C[i, j] = epilogue( sum_k A[i, k] * B[k, j] )        C is M x N, row-major at c_off
//   A[i, k] = a[a_off + i*lda + k]    (A_T false)   or   a[a_off + k*lda + i]    (A_T true)
//   B[k, j] = b[b_off + k*ldb + j]    (B_T false)   or   b[b_off + j*ldb + k]    (B_T true)
//   epilogue 0: none          1: + bias[j]          2: activate(z), z = . + bias[j]
//               (KEEP_PRE: z also written to c[pre_off + i*N + j], for an activation whose
//               derivative needs it)
//            3: backward(., x[i, j]): the activation's derivative, with x its output or, where
//               it needs that, its pre-activation
//            4: none, and db[i] = sum_k A[i, k] as well (the bias gradient, written by the
//               workgroups of the first column of tiles into c[db_off + i])
//   (bias = aux[aux_off + j]; x = aux[aux_off + i*N + j]; `activate` and `backward` are the
//   run's activation, put in front of this file by the host: gpumlp::activation)
//   A_FROM_DATA: A[i, k] = feature k of sample order[o + i] * INPUT_SCALE    (o = step.order_offset)
//   B_FROM_DATA: B[k, j] = feature j of sample order[o + k] * INPUT_SCALE
//   (the first layer's input read straight from the resident dataset through the step's
//   shuffled order: no separate gather kernel, no input batch buffer. Each sample is ROW_WORDS
//   u32 words, zero-padded to whole vec4s of features: bytes packed four to a word, INPUT_SCALE
//   1/255, or, with DATA_FLOATS, one f32 per word, INPUT_SCALE 1)
//
// The MLP's products, with W [out, in] and activations [B, in] row-major:
//   forward   Z  = X @ W^T (+ b, f)       M = B,   N = out, K = in    A_T false, B_T true
//   backward  dW = dZ^T @ X  (db = dZ^T 1) M = out, N = in,  K = B     A_T true,  B_T false
//             dX = dZ @ W (* f')          M = B,   N = in,  K = out   A_T false, B_T false
// (X of the first layer from the dataset: A_FROM_DATA forward, B_FROM_DATA for its dW.)
// The batch changes on an epoch's last step, so `batch_dim` says which of M or K is the batch,
// taken from the step's slot.
//
// Split-K (SPLIT > 1, never with epilogue 4): workgroup z of the grid's SPLIT layers sums only
// its part of K, k in [z * KC, min((z + 1) * KC, K)) with KC = ceil(K / SPLIT) rounded up to
// whole BK slices (a part past K sums nothing and writes zeros), and writes its partial tile,
// no epilogue, to the workspace bound as `c`:  c[z * M * N + i * N + j]  (M, N: g.m, g.n, the
// largest the call runs). A second dispatch, `reduce_split`, with the workspace bound as `a`,
// sums the SPLIT parts of each element in order z = 0, 1, ... (the same sum every run) and
// applies the epilogue, writing C as the unsplit kernel does.
//
// Variants (pipeline-overridable constants, one pipeline per variant and layout, chosen per
// shape by timing on the device): each workgroup computes a BM x BN tile of C with
// (BM/TM) x (BN/TN) invocations, each accumulating a TM x TN register tile (TM in {4, 8},
// TN in {4, 8}). Slices of BK = 8 steps of k are staged through workgroup memory, double-
// buffered (the next slice loads while this one is multiplied), the A slice stored transposed
// (k-major) so the inner loop reads TM rows and TN columns as vec4s. Global
// loads run along the operand's contiguous dimension, so neighbouring invocations read
// neighbouring words, four at a time (A_VEC, B_VEC) where the host has checked that the
// operand's offset, leading dimension and contiguous extent are multiples of 4 (so a vec4 is
// wholly inside the operand or wholly past its edge). Edges are guarded only while staging and
// writing; indices into workgroup and register arrays are bounded by the constants above
// (BM, BN <= 128, TM, TN <= 8), which the host checks when it builds a variant.
// The operands are bound as vec4 arrays (their buffers are padded to 16 bytes); element e is
// a[e / 4][e % 4].
// Bindings (group 0): 0 params (uniform Gemm), 1 a vec4<f32>[], 2 b vec4<f32>[], 3 c f32[] (rw),
//                     4 aux f32[], 5 samples u32[N*ROW_WORDS], 6 order u32[] (5 and 6 read only
//                     by the first layer's products; the others bind a placeholder there).
// The host puts gemm_common.wgsl in front of this file: the `Gemm` parameters, the epilogues'
// codes, these bindings, the operand constants A_T ... KEEP_PRE, and the epilogue, `finish`.

override BM: u32 = 64u;
override BN: u32 = 64u;
override TM: u32 = 4u;
override TN: u32 = 4u;
override A_VEC: bool = false;
override B_VEC: bool = false;
override SPLIT: u32 = 1u;
// Invocations per workgroup: (BM / TM) * (BN / TN), set by the host.
override WG: u32 = 256u;

const BK: u32 = 8u;
// Two slices, double-buffered: while the invocations multiply slice s (half s % 2), they load
// slice s+1 into the other half, so one barrier per slice separates writing from reading.
// a_s[base + kk * (BM/4) + i/4][i%4] = A[row0 + i, k0 + kk], base = 256 * half; b_s likewise
// for B's columns. Each half is sized for the largest tile, BK x 128.
var<workgroup> a_s: array<vec4<f32>, 512>;
var<workgroup> b_s: array<vec4<f32>, 512>;

// Features p .. p+3 (p a multiple of 4) of the sample in row `row` of the step's batch.
fn features4(row: u32, p: u32) -> vec4<f32> {
    let base = order[step.order_offset + row] * ROW_WORDS;
    if (DATA_FLOATS) {
        return bitcast<vec4<f32>>(vec4<u32>(
            samples[base + p], samples[base + p + 1u], samples[base + p + 2u], samples[base + p + 3u]));
    }
    let word = samples[base + p / 4u];
    let bytes = vec4<u32>(word & 0xffu, (word >> 8u) & 0xffu, (word >> 16u) & 0xffu, word >> 24u);
    return vec4<f32>(bytes) * INPUT_SCALE;
}

// The tile's place and shape, as each invocation sees it.
struct Tile {
    m: u32, n: u32, k: u32,
    row0: u32, col0: u32,
    t: u32,
    a4: u32, b4: u32,
}

// Stages slice k0 (BM x BK of A, BK x BN of B) into half `half` of a_s and b_s, the index
// running along each operand's contiguous dimension: four elements per load where the host
// allows it, else one.
fn stage(tile: Tile, k0: u32, half: u32) {
    let base = 256u * half;
    let m = tile.m; let n = tile.n; let k = tile.k;
    let row0 = tile.row0; let col0 = tile.col0; let t = tile.t;
    let a4 = tile.a4; let b4 = tile.b4;
    if (A_FROM_DATA) {
        for (var e = t; e < BM * BK / 4u; e += WG) {
            let i = e / (BK / 4u);
            let kk = (e % (BK / 4u)) * 4u;
            var v = vec4<f32>(0.0);
            if (row0 + i < m && k0 + kk < k) {
                v = features4(row0 + i, k0 + kk);
            }
            for (var q = 0u; q < 4u; q++) {
                a_s[base + (kk + q) * a4 + i / 4u][i % 4u] = v[q];
            }
        }
    } else if (A_VEC) {
        for (var e = t; e < BM * BK / 4u; e += WG) {
            if (A_T) {
                let i = (e % a4) * 4u;
                let kk = e / a4;
                var v = vec4<f32>(0.0);
                if (row0 + i < m && k0 + kk < k) {
                    v = a[(g.a_off + (k0 + kk) * g.lda + row0 + i) / 4u];
                }
                a_s[base + kk * a4 + i / 4u] = v;
            } else {
                let i = e / (BK / 4u);
                let kk = (e % (BK / 4u)) * 4u;
                var v = vec4<f32>(0.0);
                if (row0 + i < m && k0 + kk < k) {
                    v = a[(g.a_off + (row0 + i) * g.lda + k0 + kk) / 4u];
                }
                for (var q = 0u; q < 4u; q++) {
                    a_s[base + (kk + q) * a4 + i / 4u][i % 4u] = v[q];
                }
            }
        }
    } else {
        for (var e = t; e < BM * BK; e += WG) {
            var i: u32; var kk: u32;
            if (A_T) { i = e % BM; kk = e / BM; } else { i = e / BK; kk = e % BK; }
            var v = 0.0;
            if (row0 + i < m && k0 + kk < k) {
                var at: u32;
                if (A_T) {
                    at = g.a_off + (k0 + kk) * g.lda + row0 + i;
                } else {
                    at = g.a_off + (row0 + i) * g.lda + k0 + kk;
                }
                v = a[at / 4u][at % 4u];
            }
            a_s[base + kk * a4 + i / 4u][i % 4u] = v;
        }
    }
    if (B_FROM_DATA) {
        for (var e = t; e < BK * BN / 4u; e += WG) {
            let j = (e % b4) * 4u;
            let kk = e / b4;
            var v = vec4<f32>(0.0);
            if (col0 + j < n && k0 + kk < k) {
                v = features4(k0 + kk, col0 + j);
            }
            b_s[base + kk * b4 + j / 4u] = v;
        }
    } else if (B_VEC) {
        for (var e = t; e < BK * BN / 4u; e += WG) {
            if (B_T) {
                let j = e / (BK / 4u);
                let kk = (e % (BK / 4u)) * 4u;
                var v = vec4<f32>(0.0);
                if (col0 + j < n && k0 + kk < k) {
                    v = b[(g.b_off + (col0 + j) * g.ldb + k0 + kk) / 4u];
                }
                for (var q = 0u; q < 4u; q++) {
                    b_s[base + (kk + q) * b4 + j / 4u][j % 4u] = v[q];
                }
            } else {
                let j = (e % b4) * 4u;
                let kk = e / b4;
                var v = vec4<f32>(0.0);
                if (col0 + j < n && k0 + kk < k) {
                    v = b[(g.b_off + (k0 + kk) * g.ldb + col0 + j) / 4u];
                }
                b_s[base + kk * b4 + j / 4u] = v;
            }
        }
    } else {
        for (var e = t; e < BK * BN; e += WG) {
            var j: u32; var kk: u32;
            if (B_T) { j = e / BK; kk = e % BK; } else { j = e % BN; kk = e / BN; }
            var v = 0.0;
            if (col0 + j < n && k0 + kk < k) {
                var at: u32;
                if (B_T) {
                    at = g.b_off + (col0 + j) * g.ldb + k0 + kk;
                } else {
                    at = g.b_off + (k0 + kk) * g.ldb + col0 + j;
                }
                v = b[at / 4u][at % 4u];
            }
            b_s[base + kk * b4 + j / 4u][j % 4u] = v;
        }
    }
}

// The second dispatch of a split product: one invocation per element of C (i, j), over a grid
// of (x, y) workgroups of 256 (x * y * 256 >= M * N).
@compute @workgroup_size(256)
fn reduce_split(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
                @builtin(local_invocation_index) t: u32) {
    var m = g.m;
    if (g.batch_dim == 1u) { m = step.batch; }
    let n = g.n;
    let e = (wid.y * groups.x + wid.x) * 256u + t;
    let i = e / n;
    let j = e % n;
    if (i >= m) {
        return;
    }
    var sum = 0.0;
    for (var z = 0u; z < SPLIT; z++) {
        let at = z * g.m * n + e;
        sum += a[at / 4u][at % 4u];
    }
    finish(i, j, n, sum);
}

@compute @workgroup_size(WG)
fn gemm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    var m = g.m;
    var k = g.k;
    if (g.batch_dim == 1u) { m = step.batch; }
    if (g.batch_dim == 2u) { k = step.batch; }
    let n = g.n;
    // This workgroup's part of K (all of it unless split).
    var k_lo = 0u;
    if (SPLIT > 1u) {
        let part = ((k + SPLIT - 1u) / SPLIT + BK - 1u) / BK * BK;
        k_lo = min(wid.z * part, k);
        k = min(k_lo + part, k);
    }
    let row0 = wid.y * BM;
    let col0 = wid.x * BN;
    if (row0 >= m) {
        return; // the whole tile is past a short batch: nobody here reaches a barrier
    }
    let cols = BN / TN;           // invocations along a row of the tile
    let tx = t % cols;
    let ty = t / cols;
    let a4 = BM / 4u;
    let b4 = BN / 4u;

    // The TM x TN register tile as named registers (rows 0..7, column vectors 0..1), so no
    // compiler has to keep an indexed array in memory; the ones a variant does not use are
    // never touched (TM and TN are constants of the pipeline).
    var r0c0 = vec4<f32>(0.0); var r0c1 = vec4<f32>(0.0);
    var r1c0 = vec4<f32>(0.0); var r1c1 = vec4<f32>(0.0);
    var r2c0 = vec4<f32>(0.0); var r2c1 = vec4<f32>(0.0);
    var r3c0 = vec4<f32>(0.0); var r3c1 = vec4<f32>(0.0);
    var r4c0 = vec4<f32>(0.0); var r4c1 = vec4<f32>(0.0);
    var r5c0 = vec4<f32>(0.0); var r5c1 = vec4<f32>(0.0);
    var r6c0 = vec4<f32>(0.0); var r6c1 = vec4<f32>(0.0);
    var r7c0 = vec4<f32>(0.0); var r7c1 = vec4<f32>(0.0);
    var sum0 = vec4<f32>(0.0);   // epilogue 4: sum over k of rows 0..3 of this invocation
    var sum1 = vec4<f32>(0.0);   // and of rows 4..7

    let tile = Tile(m, n, k, row0, col0, t, a4, b4);
    stage(tile, k_lo, (k_lo / BK) % 2u);
    workgroupBarrier();
    for (var k0 = k_lo; k0 < k; k0 += BK) {
        let base = 256u * ((k0 / BK) % 2u);
        if (k0 + BK < k) {
            stage(tile, k0 + BK, 1u - (k0 / BK) % 2u);
        }
        for (var kk = 0u; kk < BK; kk++) {
            let b0 = b_s[base + kk * b4 + tx * (TN / 4u)];
            let a0 = a_s[base + kk * a4 + ty * (TM / 4u)];
            r0c0 += a0.x * b0; r1c0 += a0.y * b0; r2c0 += a0.z * b0; r3c0 += a0.w * b0;
            if (EPILOGUE == EPILOGUE_ROW_SUMS) { sum0 += a0; }
            if (TN == 8u) {
                let b1 = b_s[base + kk * b4 + tx * 2u + 1u];
                r0c1 += a0.x * b1; r1c1 += a0.y * b1; r2c1 += a0.z * b1; r3c1 += a0.w * b1;
                if (TM == 8u) {
                    let a1 = a_s[base + kk * a4 + ty * 2u + 1u];
                    r4c1 += a1.x * b1; r5c1 += a1.y * b1; r6c1 += a1.z * b1; r7c1 += a1.w * b1;
                }
            }
            if (TM == 8u) {
                let a1 = a_s[base + kk * a4 + ty * 2u + 1u];
                r4c0 += a1.x * b0; r5c0 += a1.y * b0; r6c0 += a1.z * b0; r7c0 += a1.w * b0;
                if (EPILOGUE == EPILOGUE_ROW_SUMS) { sum1 += a1; }
            }
        }
        workgroupBarrier();
    }
    let acc = array<vec4<f32>, 16>(r0c0, r0c1, r1c0, r1c1, r2c0, r2c1, r3c0, r3c1,
                                   r4c0, r4c1, r5c0, r5c1, r6c0, r6c1, r7c0, r7c1);
    let row_sum = array<vec4<f32>, 2>(sum0, sum1);

    for (var r = 0u; r < TM; r++) {
        let i = row0 + ty * TM + r;
        if (i >= m) {
            break;
        }
        if (EPILOGUE == EPILOGUE_ROW_SUMS && wid.x == 0u && tx == 0u) {
            c[g.db_off + i] = row_sum[r / 4u][r % 4u];
        }
        for (var q = 0u; q < TN / 4u; q++) {
            for (var s = 0u; s < 4u; s++) {
                let j = col0 + tx * TN + q * 4u + s;
                if (j < n) {
                    let v = acc[r * 2u + q][s];
                    if (SPLIT > 1u) {
                        c[wid.z * g.m * n + i * n + j] = v;
                    } else {
                        finish(i, j, n, v);
                    }
                }
            }
        }
    }
}
