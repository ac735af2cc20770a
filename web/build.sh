#!/usr/bin/env bash
# Builds the browser demo's two WebAssembly modules, the JavaScript glue by wasm-bindgen (the CLI
# pinned to the crate's exact version) beside each:
#   web/pkg          single-threaded, with SIMD: any browser, any host
#   web/pkg-threads  the CPU backend on a rayon pool of workers (wasm-bindgen-rayon): atomics,
#                    shared memory and std rebuilt for them; used where the page is cross-origin
#                    isolated (web/worker.js picks)
#   web/build.sh            build both
#   web/build.sh --serve    build, then serve the demo on http://127.0.0.1:8080/web/
# Uses an installed wasm32 target where the toolchain has one (rustup target add
# wasm32-unknown-unknown) for the single-threaded module; Debian's rustc-web with build-std
# (apt-get install rustc-web cargo-web rust-web-src lld-22) for the threaded one, and for both
# where rustup has no wasm32 std. Without Debian's, the threaded module is skipped with a note.
set -euo pipefail
cd "$(dirname "$0")/.."

BINDGEN_VERSION=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')
WASM=wasm32-unknown-unknown
WASM_LD=/usr/lib/llvm-22/bin/wasm-ld
debian_wasm() { [ -x /usr/bin/rustc ] && [ -x "$WASM_LD" ]; }
# Debian's rustc with std rebuilt (build-std, allowed on a stable compiler by RUSTC_BOOTSTRAP).
debian_cargo() {
    RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="$WASM_LD" \
        /usr/bin/cargo build --release --target $WASM -Zbuild-std=std,panic_abort "$@"
}

# Single-threaded.
export RUSTFLAGS="-C target-feature=+simd128"
if rustup target list --installed 2>/dev/null | grep -q "^$WASM\$"; then
    cargo build --release --target $WASM -p gpumlp-web --target-dir target/wasm
elif debian_wasm; then
    debian_cargo -p gpumlp-web --target-dir target/wasm
else
    echo "error: no wasm32 toolchain: rustup target add wasm32-unknown-unknown, or apt-get install rustc-web cargo-web rust-web-src lld-22" >&2
    exit 2
fi

if ! wasm-bindgen --version 2>/dev/null | grep -q " $BINDGEN_VERSION\$"; then
    cargo install wasm-bindgen-cli --version "$BINDGEN_VERSION"
fi
wasm-bindgen --target web --out-dir web/pkg "target/wasm/$WASM/release/gpumlp_web.wasm"
echo "built web/pkg ($(du -h web/pkg/gpumlp_web_bg.wasm | cut -f1) of wasm)"

# Threaded: since late 2025 rustc no longer adds the shared-memory linker flags itself, and
# without them wasm-bindgen quietly treats the module as single-threaded.
if debian_wasm; then
    RUSTFLAGS="-C target-feature=+atomics,+bulk-memory,+simd128 -Clink-arg=--shared-memory \
-Clink-arg=--max-memory=1073741824 -Clink-arg=--import-memory -Clink-arg=--export=__wasm_init_tls \
-Clink-arg=--export=__tls_size -Clink-arg=--export=__tls_align -Clink-arg=--export=__tls_base" \
        debian_cargo -p gpumlp-web --features threads --target-dir target/wasm-threads
    rm -rf web/pkg-threads
    wasm-bindgen --target web --out-dir web/pkg-threads \
        "target/wasm-threads/$WASM/release/gpumlp_web.wasm"
    # wasm-bindgen-rayon's pool workers import the package as `../../..`, which only a bundler
    # resolves; name the module itself, so any static host serves it.
    helpers=(web/pkg-threads/snippets/wasm-bindgen-rayon-*/src/workerHelpers.js)
    grep -q "import('../../..')" "${helpers[@]}" ||
        { echo "error: wasm-bindgen-rayon's workerHelpers.js no longer imports '../../..': check web/build.sh" >&2; exit 2; }
    sed -i "s|import('../../..')|import('../../../gpumlp_web.js')|" "${helpers[@]}"
    echo "built web/pkg-threads ($(du -h web/pkg-threads/gpumlp_web_bg.wasm | cut -f1) of wasm)"
else
    rm -rf web/pkg-threads
    echo "note: no threaded module (it needs Debian's rustc-web, rust-web-src and lld-22); the page trains on one thread" >&2
fi

if [ "${1:-}" = "--serve" ]; then
    exec node web/server.mjs
fi
