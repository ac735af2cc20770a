#!/usr/bin/env bash
# bench/compare_tables.py in a throwaway virtual environment with scikit-learn from the
# registry: gpumlp and scikit-learn's MLPClassifier on the same 80/20 splits of the Iris and
# Wine tables in data/tables. Needs the release build (cargo build --release). Arguments go to
# compare_tables.py.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(mktemp -d)
trap 'rm -rf "$venv"' EXIT
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check scikit-learn numpy
"$venv/bin/python" bench/compare_tables.py "$@"
