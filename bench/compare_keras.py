#!/usr/bin/env python3
"""Workload B1, gpumlp against TensorFlow/Keras on the same machine, data and configuration.

B1: MLP 784-512-256-10, ReLU, softmax cross-entropy, batch 128, Adam at 1e-3 (constant),
Fashion-MNIST 60,000 train / 10,000 test, pixels scaled to [0, 1], 3 epochs, f32, CPU.

Runs Keras, then the gpumlp release binary, and prints both epoch times and their ratio, both
test accuracies, and gpumlp's effective GEMM GFLOP/s against numpy's sgemm GFLOP/s (OpenBLAS)
on B1's own shapes. Timings are of one run on a shared machine: compare the ratios.

    pip install tensorflow-cpu numpy        # once
    cargo build --release
    python3 bench/compare_keras.py [--epochs 3] [--data /usr/share/datasets/fashion-mnist]
"""

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZES = [784, 512, 256, 10]
# GEMM flops of one training step per sample: forward, weight gradients, and input gradients of
# every layer but the first (the same count gpumlp reports).
MACS = sum(a * b for a, b in zip(SIZES, SIZES[1:]))
FLOPS_PER_SAMPLE = 2 * (3 * MACS - SIZES[0] * SIZES[1])


def load_idx(path):
    import numpy as np

    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw[4 + 4 * ndim :], dtype=np.uint8).reshape(dims)


def load(data_dir):
    def find(base):
        for name in (base + ".gz", base):
            if (Path(data_dir) / name).exists():
                return Path(data_dir) / name
        sys.exit(f"error: {data_dir} has no {base}(.gz); install Debian's dataset-fashion-mnist or pass --data")

    return [load_idx(find(f)) for f in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")]


def run_keras(data_dir, epochs):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    xtr, ytr, xte, yte = load(data_dir)
    xtr = xtr.reshape(-1, 784).astype(np.float32) / 255.0
    xte = xte.reshape(-1, 784).astype(np.float32) / 255.0
    tf.keras.utils.set_random_seed(1)
    model = tf.keras.Sequential(
        [tf.keras.Input((784,))]
        + [tf.keras.layers.Dense(n, activation="relu") for n in SIZES[1:-1]]
        + [tf.keras.layers.Dense(SIZES[-1])]
    )
    model.compile(
        optimizer=tf.keras.optimizers.Adam(1e-3),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )

    class Timer(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    times = []
    model.fit(xtr, ytr, batch_size=128, epochs=epochs, shuffle=True, verbose=0, callbacks=[Timer()])
    _, accuracy = model.evaluate(xte, yte, batch_size=1000, verbose=0)
    return times, accuracy, tf.__version__


def run_gpumlp(data_dir, epochs, binary):
    with tempfile.TemporaryDirectory() as tmp:
        metrics = Path(tmp) / "run.jsonl"
        cmd = [str(binary), "train", "--data", str(data_dir), "--hidden", "512,256", "--batch", "128",
               "--optimizer", "adam", "--lr", "0.001", "--schedule", "constant", "--epochs", str(epochs),
               "--device", "cpu", "--metrics", str(metrics), "--json"]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"error: gpumlp failed: {out.stderr.strip()}")
        summary = json.loads(out.stdout.strip().splitlines()[-1])
        times = [json.loads(line)["seconds"] for line in metrics.read_text().splitlines()]
    return times, summary["test_accuracy"], summary["device"]["name"]


NUMPY_SGEMM = r"""
import json, time, numpy as np
shapes = [(128, 784, 512), (128, 512, 256), (512, 128, 784), (256, 128, 512), (128, 256, 512), (2048, 2048, 2048)]
out = {}
for m, k, n in shapes:
    a = np.random.rand(m, k).astype(np.float32); b = np.random.rand(k, n).astype(np.float32)
    a @ b
    reps = max(3, int(2e9 / (2 * m * k * n)))
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    out[f"{m}x{k}x{n}"] = 2 * m * k * n * reps / (time.perf_counter() - t) / 1e9
print(json.dumps(out))
"""


def numpy_sgemm():
    # OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, set on some of these machines for old OpenBLAS builds,
    # slow a current numpy: measure without them, in this subprocess only.
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    out = subprocess.run([sys.executable, "-c", NUMPY_SGEMM], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--data", default=os.environ.get("GPUMLP_FASHION_DIR", "/usr/share/datasets/fashion-mnist"))
    p.add_argument("--binary", default=str(ROOT / "target" / "release" / "gpumlp"))
    args = p.parse_args()
    if not Path(args.binary).exists():
        sys.exit(f"error: {args.binary} not found: run `cargo build --release` first")

    g_times, g_acc, device = run_gpumlp(args.data, args.epochs, args.binary)
    k_times, k_acc, tf_version = run_keras(args.data, args.epochs)
    sgemm = numpy_sgemm()

    g_epoch, k_epoch = statistics.mean(g_times), statistics.mean(k_times)
    train = 60000
    gflops = FLOPS_PER_SAMPLE * train / g_epoch / 1e9
    b1_shapes = [s for s in sgemm if s != "2048x2048x2048"]
    # numpy's rate on B1's shapes, weighted by each shape's share of the flops (harmonic mean).
    numpy_b1 = len(b1_shapes) / sum(1 / sgemm[s] for s in b1_shapes)

    print(f"B1 (784-512-256-10, batch 128, Adam 1e-3, Fashion-MNIST, {args.epochs} epochs), {os.cpu_count()} CPUs")
    print(f"  gpumlp ({device}): epochs {', '.join(f'{t:.2f}' for t in g_times)} s, mean {g_epoch:.2f} s, test accuracy {100 * g_acc:.2f}%")
    print(f"  Keras {tf_version} CPU:      epochs {', '.join(f'{t:.2f}' for t in k_times)} s, mean {k_epoch:.2f} s, test accuracy {100 * k_acc:.2f}%")
    print(f"  speed-up gpumlp over Keras: {k_epoch / g_epoch:.2f}x per epoch")
    print(f"  gpumlp effective GEMM rate: {gflops:.0f} GFLOP/s ({FLOPS_PER_SAMPLE * train / 1e9:.0f} GFLOP per epoch)")
    print("  numpy sgemm: " + ", ".join(f"{s} {v:.0f}" for s, v in sgemm.items()) + " GFLOP/s")
    print(f"  gpumlp end to end reaches {100 * gflops / numpy_b1:.0f}% of numpy's sgemm rate on B1's shapes ({numpy_b1:.0f} GFLOP/s)")


if __name__ == "__main__":
    main()
