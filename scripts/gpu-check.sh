#!/usr/bin/env bash
# The GPU check, for a machine with an NVIDIA GPU and no network (the `device` tool's H100 or
# H200), in one call: devices and auto's measured choice; GPU against CPU accuracy on the same
# seed with trusted kernels and with runtime bounds checks; `gpumlp bench --tune` (every GEMM
# variant per shape) and `bench` with checks on, for their cost; workload B1 for 3 epochs at
# batch 128 (GPU and CPU; on the GPU with split-K as tuned, with it off, and in mixed precision)
# and 1024, and 784-4096-4096-10 at batch 1024 in f32 and mixed precision; the same B1 in
# PyTorch eager on CUDA; then a summary of each figure against its target (issues 8 and 16).
#
# Prepare on the development machine, from the repository root:
#   cargo build --release                                    # target/release/gpumlp travels
#   (plain, without --features mpi, so it needs no MPI library there; the tests' build is the
#   MPI one: run this after them)
#   mkdir -p .gpucheck && cp -r /usr/share/datasets/fashion-mnist .gpucheck/
#   mkdir -p .gl && (cd .gl && apt-get download libvulkan1)   # the Vulkan loader, for a machine without one
#   echo /.gpucheck/ >> .git/info/exclude; echo /.gl/ >> .git/info/exclude
# then run there with carry [target/release/gpumlp, .gpucheck, .gl]:
#   scripts/gpu-check.sh
# `scripts/gpu-check.sh --cpu-only` runs the same steps on the CPU backend (parity against a
# software adapter, PyTorch on the CPU if it is installed), to test the script without a GPU.
set -uo pipefail
cd "$(dirname "$0")/.."

BIN=${GPUMLP_BIN:-target/release/gpumlp}
DATA=${GPUMLP_CHECK_DATA:-.gpucheck/fashion-mnist}
RESULTS=${OUT:-.gpucheck/out}
DEVICE=gpu
TORCH_DEVICE=cuda
PARITY_DEVICE=gpu
# Without a GPU, the parity step still compares two backends: the CPU and a software adapter.
if [ "${1:-}" = "--cpu-only" ]; then DEVICE=cpu; TORCH_DEVICE=cpu; PARITY_DEVICE=software; fi
mkdir -p "$RESULTS"
# A fresh cache, so the first run's GEMM tuning is timed here (its note gives the seconds).
export GPUMLP_CACHE_DIR="$RESULTS/cache"
rm -rf "$GPUMLP_CACHE_DIR"
[ -x "$BIN" ] || { echo "error: $BIN is missing: cargo build --release first" >&2; exit 2; }
[ -d "$DATA" ] || { echo "error: $DATA is missing: copy Fashion-MNIST's four IDX files there" >&2; exit 2; }

if [ "$DEVICE" = gpu ]; then
    # The Vulkan loader, where the machine has none, from the carried debs.
    if ! ldconfig -p | grep -q 'libvulkan.so.1'; then
        for f in .gl/*.deb; do [ -e "$f" ] && dpkg -x "$f" /; done
        ldconfig
    fi
    icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f "$icd" ] && ! ls /usr/share/vulkan/icd.d/nvidia* >/dev/null 2>&1; then
        export VK_DRIVER_FILES=$icd
        export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
    fi
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
fi

step() { echo; echo "== $*"; }
failed=0

step "devices"
"$BIN" devices || failed=1

step "$PARITY_DEVICE against CPU, same seed (784-256-10 on the sample, 3 epochs), trusted and checked kernels"
for dev in cpu "$PARITY_DEVICE"; do
    "$BIN" train --data mnist-sample --hidden 256 --epochs 3 --seed 7 --device "$dev" --json \
        > "$RESULTS/parity-$dev.txt" 2> "$RESULTS/parity-$dev.err" || { cat "$RESULTS/parity-$dev.err"; failed=1; }
    tail -n 2 "$RESULTS/parity-$dev.txt" | head -n 1
done
cat "$RESULTS/parity-$PARITY_DEVICE.err"
GPUMLP_CHECKED=1 "$BIN" train --data mnist-sample --hidden 256 --epochs 3 --seed 7 --device "$PARITY_DEVICE" \
    --json > "$RESULTS/checked-parity.txt" || failed=1
tail -n 2 "$RESULTS/checked-parity.txt" | head -n 1

step "auto's choice (measured once, then cached)"
"$BIN" train --data mnist-sample --hidden 16 --epochs 1 --json 2>&1 >/dev/null | grep 'auto' || true

if [ "$DEVICE" = gpu ]; then
    step "gpumlp bench --tune --device gpu (every GEMM variant per shape)"
    "$BIN" bench --device gpu --tune --json | tee "$RESULTS/bench.txt" || failed=1
    step "gpumlp bench with runtime bounds checks (GPUMLP_CHECKED=1)"
    GPUMLP_CHECKED=1 "$BIN" bench --device gpu --json | tee "$RESULTS/bench-checked.txt" || failed=1
else
    step "gpumlp bench --device cpu"
    "$BIN" bench --device cpu --json | tee "$RESULTS/bench.txt" || failed=1
fi

b1() { # name device batch hidden epochs [precision]
    step "$1: gpumlp on $2 (--hidden $4, batch $3, Adam 1e-3, Fashion-MNIST, $5 epochs, ${6:-f32})"
    "$BIN" train --data "$DATA" --hidden "$4" --batch "$3" --optimizer adam --lr 0.001 --schedule constant \
        --epochs "$5" --device "$2" --precision "${6:-f32}" --metrics "$RESULTS/$1.jsonl" --json \
        > "$RESULTS/$1.txt" || failed=1
    cat "$RESULTS/$1.jsonl"; tail -n 2 "$RESULTS/$1.txt" | head -n 1
}
b1 b1 "$DEVICE" 128 512,256 3
if [ "$DEVICE" = gpu ]; then
    # Split-K off: every product whole (its own tuning cache, so nothing tuned with splits is reused).
    GPUMLP_NO_SPLIT_K=1 GPUMLP_CACHE_DIR="$RESULTS/cache-nosplit" b1 b1-nosplit gpu 128 512,256 3
    b1 b1-mixed gpu 128 512,256 3 mixed
    b1 b1-cpu cpu 128 512,256 3
    b1 b1-1024 gpu 1024 512,256 3
    b1 wide-1024 gpu 1024 4096,4096 2
    b1 wide-1024-mixed gpu 1024 4096,4096 2 mixed
fi

step "B1 with PyTorch eager on $TORCH_DEVICE"
if python3 -c 'import torch' 2>/dev/null; then
    PYTHONUNBUFFERED=1 python3 bench/b1_torch.py --data "$DATA" --epochs 3 --device "$TORCH_DEVICE" | tee "$RESULTS/torch.txt" || failed=1
elif [ "$DEVICE" = gpu ]; then
    echo "error: PyTorch is not installed here: the comparison cannot run" >&2; failed=1
else
    echo "SKIPPED: PyTorch is not installed on this machine (the GPU machine has it)"
fi

step "summary"
python3 - "$RESULTS" <<'PY'
import json, statistics, sys
from pathlib import Path
r = Path(sys.argv[1])
def last_json(name):
    p = r / name
    return json.loads(p.read_text().strip().splitlines()[-1]) if p.exists() and p.read_text().strip() else None
cpu, dev = last_json("parity-cpu.txt"), None
for f in sorted(r.glob("parity-*.txt")):
    if f.name != "parity-cpu.txt": dev = last_json(f.name)
if cpu and dev:
    d = abs(dev["test_accuracy"] - cpu["test_accuracy"])
    print(f"parity: {dev['device']['name']} {100*dev['test_accuracy']:.2f}% vs CPU {100*cpu['test_accuracy']:.2f}%: "
          f"{100*d:.2f} points apart ({'ok' if d <= 0.01 else 'MORE THAN 1 POINT'})")
checked = last_json("checked-parity.txt")
if checked and dev:
    print(f"checked kernels: {100*checked['test_accuracy']:.2f}% (trusted {100*dev['test_accuracy']:.2f}%)")
bench, bench_checked = last_json("bench.txt"), last_json("bench-checked.txt")
if bench:
    sq = bench["gemm"][0]
    ts = bench["train_step"]
    print(f"GEMM {sq['m']}^3: {sq['gflops']/1e3:.2f} TFLOP/s on {bench['device']['name']} [{sq.get('variant', 'cpu')}] "
          f"(bar: >= 30); B1 step {1e3*ts['seconds']:.3f} ms, {ts['samples_per_second']:.0f} samples/s, "
          f"{ts.get('dispatches_per_step')} dispatches, encoding {ts.get('encode_seconds') or 0:.2e} s")
    for g in bench["gemm"][1:]:
        print(f"  {g['m']}x{g['k']}x{g['n']} {g['what']}: {1e6*g['seconds']:.1f} us [{g.get('variant', '-')}]")
    if bench_checked:
        c = bench_checked["gemm"][0]
        print(f"runtime checks cost: GEMM {sq['m']}^3 {c['seconds']/sq['seconds']:.1f}x, "
              f"B1 step {bench_checked['train_step']['seconds']/ts['seconds']:.1f}x")
for name, bar in [("b1", 0.040), ("b1-nosplit", None), ("b1-mixed", None), ("b1-cpu", None),
                  ("b1-1024", 0.010), ("wide-1024", 0.25), ("wide-1024-mixed", 0.12)]:
    p = r / f"{name}.jsonl"
    if p.exists() and p.read_text().strip():
        rows = [json.loads(l) for l in p.read_text().splitlines()]
        later = [e["seconds"] for e in rows[1:]] or [rows[0]["seconds"]]
        verdict = "" if bar is None else f" (bar: <= {bar} s: {'met' if statistics.median(later) <= bar else 'NOT MET'})"
        listing = ", ".join(f"{e['seconds']:.3f}" for e in rows)
        print(f"{name}: epochs {listing} s, median after the first "
              f"{statistics.median(later):.3f} s{verdict}; test accuracy {100*rows[-1]['test_accuracy']:.2f}%")
for f32_run, mixed_run in [("b1.txt", "b1-mixed.txt"), ("wide-1024.txt", "wide-1024-mixed.txt")]:
    a, b = last_json(f32_run), last_json(mixed_run)
    if a and b:
        d = abs(a["test_accuracy"] - b["test_accuracy"])
        print(f"{mixed_run[:-4]}: test accuracy {100*b['test_accuracy']:.2f}% vs f32 {100*a['test_accuracy']:.2f}% "
              f"({100*d:.2f} points; bar: within 0.5: {'met' if d <= 0.005 else 'NOT MET'})")
cpu_b1, gpu_b1 = last_json("b1-cpu.txt"), last_json("b1.txt")
if cpu_b1 and gpu_b1:
    d = abs(gpu_b1["test_accuracy"] - cpu_b1["test_accuracy"])
    print(f"B1 after 3 epochs: GPU {100*gpu_b1['test_accuracy']:.2f}% vs CPU {100*cpu_b1['test_accuracy']:.2f}% "
          f"({100*d:.2f} points; bar: within 1)")
epochs = [json.loads(l) for l in (r / "b1.jsonl").read_text().splitlines()] if (r / "b1.jsonl").exists() else []
torch = last_json("torch.txt")
if epochs:
    ours = [e["seconds"] for e in epochs]
    print(f"B1 gpumlp: epochs {', '.join(f'{s*1e3:.0f}' for s in ours)} ms; median {1e3*statistics.median(ours):.0f} ms; "
          f"test accuracy {100*epochs[-1]['test_accuracy']:.2f}% after {len(epochs)} epochs")
    if torch:
        theirs = torch["epoch_seconds"]
        print(f"B1 PyTorch {torch['torch']} on {torch['device']}: epochs {', '.join(f'{s*1e3:.0f}' for s in theirs)} ms; "
              f"test accuracy {100*torch['test_accuracy']:.2f}%")
        print(f"gpumlp is {statistics.median(theirs)/statistics.median(ours):.2f}x PyTorch eager (median epochs)")
PY
exit $failed
