// gemm_common.wgsl: what the two GEMM kernel families share, put by the host in front of each:
// gemm.wgsl (f32) and gemm_mixed.wgsl (f16 operands on cooperative matrices). The call's
// parameters, the epilogues' codes, the bindings, the constants that say how the operands are
// read, and the epilogue itself; gemm.wgsl's opening comment gives the math of each.
//
//   C[i, j] = finish(sum_k A[i, k] * B[k, j]):
//     epilogue 0: none    1: + bias[j]    2: activate(z), z = . + bias[j] (KEEP_PRE: z kept too)
//              3: backward(., x[i, j])    4: none (each family writes the bias gradient beside)
//   (bias = aux[aux_off + j]; x = aux[aux_off + i*N + j]; `activate` and `backward` are the
//   run's activation, injected by the host.)
// Bindings (group 0): 0 params (uniform Gemm), 1 a vec4<f32>[], 2 b vec4<f32>[], 3 c f32[] (rw),
//                     4 aux f32[], 5 samples u32[N*ROW_WORDS], 6 order u32[].

struct Gemm {
    m: u32, n: u32, k: u32,
    batch_dim: u32,      // 0 none, 1 M is the batch, 2 K is the batch
    a_off: u32, lda: u32,
    b_off: u32, ldb: u32,
    c_off: u32,
    aux_off: u32,
    db_off: u32,
    pre_off: u32,
}

// The epilogues' codes (`Epilogue` on the host: a test holds the two together).
const EPILOGUE_NONE: u32 = 0u;
const EPILOGUE_BIAS: u32 = 1u;
const EPILOGUE_BIAS_ACTIVATE: u32 = 2u;
const EPILOGUE_ACTIVATION_GRAD: u32 = 3u;
const EPILOGUE_ROW_SUMS: u32 = 4u;

@group(0) @binding(0) var<uniform> g: Gemm;
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
@group(0) @binding(4) var<storage, read> aux: array<f32>;
@group(0) @binding(5) var<storage, read> samples: array<u32>;
@group(0) @binding(6) var<storage, read> order: array<u32>;

override A_T: bool = false;
override B_T: bool = false;
override A_FROM_DATA: bool = false;
override B_FROM_DATA: bool = false;
override ROW_WORDS: u32 = 196u;
override DATA_FLOATS: bool = false;
override INPUT_SCALE: f32 = 0.003921569;
override EPILOGUE: u32 = 0u;
override KEEP_PRE: bool = false;

// C[i, j] = the epilogue applied to the product's sum (what every GEMM kernel writes, the split
// product's `reduce_split` too).
fn finish(i: u32, j: u32, n: u32, sum: f32) {
    var v = sum;
    switch EPILOGUE {
        case EPILOGUE_BIAS: { v += aux[g.aux_off + j]; }
        case EPILOGUE_BIAS_ACTIVATE: {
            let z = v + aux[g.aux_off + j];
            if (KEEP_PRE) { c[g.pre_off + i * n + j] = z; }
            v = activate(z);
        }
        case EPILOGUE_ACTIVATION_GRAD: { v = backward(v, aux[g.aux_off + i * n + j]); }
        default: {}
    }
    c[g.c_off + i * n + j] = v;
}
