#!/usr/bin/env bash
# Builds the browser demo into web/pkg: the gpumlp-web crate for wasm32 with SIMD, then the
# JavaScript glue by wasm-bindgen (the CLI pinned to the crate's exact version).
#   web/build.sh            build
#   web/build.sh --serve    build, then serve the demo on http://127.0.0.1:8080/web/
# Uses an installed wasm32 target where the toolchain has one (rustup target add
# wasm32-unknown-unknown); otherwise Debian's rustc-web with build-std (apt-get install
# rustc-web cargo-web rust-web-src lld-22): rustup there may have no wasm32 std to download.
set -euo pipefail
cd "$(dirname "$0")/.."

BINDGEN_VERSION=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')
TARGET_DIR=target/wasm
export RUSTFLAGS="-C target-feature=+simd128"
if rustup target list --installed 2>/dev/null | grep -q '^wasm32-unknown-unknown$'; then
    cargo build --release --target wasm32-unknown-unknown -p gpumlp-web --target-dir "$TARGET_DIR"
elif [ -x /usr/bin/rustc ] && [ -x /usr/lib/llvm-22/bin/wasm-ld ]; then
    RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
    CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=/usr/lib/llvm-22/bin/wasm-ld \
        /usr/bin/cargo build --release --target wasm32-unknown-unknown -Zbuild-std=std,panic_abort \
        -p gpumlp-web --target-dir "$TARGET_DIR"
else
    echo "error: no wasm32 toolchain: rustup target add wasm32-unknown-unknown, or apt-get install rustc-web cargo-web rust-web-src lld-22" >&2
    exit 2
fi

if ! wasm-bindgen --version 2>/dev/null | grep -q " $BINDGEN_VERSION\$"; then
    cargo install wasm-bindgen-cli --version "$BINDGEN_VERSION"
fi
wasm-bindgen --target web --out-dir web/pkg "$TARGET_DIR/wasm32-unknown-unknown/release/gpumlp_web.wasm"
echo "built web/pkg ($(du -h web/pkg/gpumlp_web_bg.wasm | cut -f1) of wasm)"

if [ "${1:-}" = "--serve" ]; then
    exec node web/server.mjs
fi
