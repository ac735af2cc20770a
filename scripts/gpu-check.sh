#!/usr/bin/env bash
# The GPU check, for a machine with an NVIDIA GPU and no network (the `device` tool's H100):
# GPU against CPU accuracy on the same seed, `gpumlp bench`, workload B1 for 3 epochs, and the
# same B1 in PyTorch eager on CUDA, with every figure printed and a summary of the ratios.
#
# Prepare on the development machine, from the repository root:
#   cargo build --release                                    # target/release/gpumlp travels
#   mkdir -p .gpucheck && cp -r /usr/share/datasets/fashion-mnist .gpucheck/
#   the Vulkan loader debs in .gl/ (recipe in /work/.library/device/README.md)
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

step "$PARITY_DEVICE against CPU, same seed (784-256-10 on the sample, 3 epochs)"
for dev in cpu "$PARITY_DEVICE"; do
    "$BIN" train --data mnist-sample --hidden 256 --epochs 3 --seed 7 --device "$dev" --json \
        > "$RESULTS/parity-$dev.txt" 2> "$RESULTS/parity-$dev.err" || { cat "$RESULTS/parity-$dev.err"; failed=1; }
    tail -n 2 "$RESULTS/parity-$dev.txt" | head -n 1
done

step "gpumlp bench --device $DEVICE"
"$BIN" bench --device "$DEVICE" --json | tee "$RESULTS/bench.txt" || failed=1

step "B1 with gpumlp on $DEVICE (784-512-256-10, batch 128, Adam 1e-3, Fashion-MNIST, 3 epochs)"
"$BIN" train --data "$DATA" --hidden 512,256 --batch 128 --optimizer adam --lr 0.001 --schedule constant \
    --epochs 3 --device "$DEVICE" --metrics "$RESULTS/b1.jsonl" --json > "$RESULTS/b1.txt" || failed=1
cat "$RESULTS/b1.jsonl"; tail -n 2 "$RESULTS/b1.txt" | head -n 1

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
bench = last_json("bench.txt")
if bench:
    sq = bench["gemm"][0]
    print(f"GEMM {sq['m']}^3: {sq['gflops']:.0f} GFLOP/s on {bench['device']['name']}; "
          f"B1 step {1e3*bench['train_step']['seconds']:.3f} ms, {bench['train_step']['samples_per_second']:.0f} samples/s")
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
