#!/usr/bin/env bash
# bench/compare_jax.py in a throwaway virtual environment with JAX (CPU) from the registry:
# B1 on gpumlp's CPU backend against JAX on the CPU, alternately, and their ratio.
# Needs the release build (cargo build --release) and Fashion-MNIST (Debian's
# dataset-fashion-mnist, or --data DIR). Arguments go to compare_jax.py.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(mktemp -d)
trap 'rm -rf "$venv"' EXIT
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "jax[cpu]" numpy
"$venv/bin/python" bench/compare_jax.py "$@"
