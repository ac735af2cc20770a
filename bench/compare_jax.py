#!/usr/bin/env python3
"""Workload B1, gpumlp's CPU backend against JAX on the CPU (XLA), in one run on one machine.

B1: MLP 784-512-256-10, ReLU, softmax cross-entropy, batch 128, Adam at 1e-3 (constant),
Fashion-MNIST 60,000 train / 10,000 test, pixels scaled to [0, 1], f32, CPU.

JAX is written as its users write it for speed: the whole epoch one jitted `lax.scan` over the
shuffled batches, data already on the device, Adam by hand (optax's update rule). Its first
epoch (compilation) is not timed, nor is gpumlp's evaluation. The two are run alternately,
`--rounds` times each, so a noisy neighbour hurts both alike; the ratio of their median
training rates is what to read. `bench/compare_jax.sh` runs this in a throwaway virtual
environment with JAX from the registry.

    cargo build --release
    bench/compare_jax.sh [--rounds 3] [--epochs 3] [--data /usr/share/datasets/fashion-mnist]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from compare_keras import ROOT, SIZES, load  # the same IDX loading as the Keras comparison

BATCH = 128


class Jax:
    """B1 in JAX, compiled once; `epoch()` trains one epoch and returns its seconds."""

    def __init__(self, data_dir):
        import jax
        import jax.numpy as jnp
        import numpy as np

        self.jax, self.jnp = jax, jnp
        xtr, ytr, xte, yte = load(data_dir)
        self.x = jnp.asarray(xtr.reshape(-1, 784).astype(np.float32) / 255.0)
        self.y = jnp.asarray(ytr.astype(np.int32))
        self.xte = jnp.asarray(xte.reshape(-1, 784).astype(np.float32) / 255.0)
        self.yte = jnp.asarray(yte.astype(np.int32))
        key = jax.random.PRNGKey(1)
        params = []
        for fan_in, fan_out in zip(SIZES, SIZES[1:]):
            key, k = jax.random.split(key)
            params.append((jax.random.normal(k, (fan_in, fan_out)) * (2.0 / fan_in) ** 0.5, jnp.zeros(fan_out)))
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        self.state = (params, zeros, zeros, jnp.zeros((), jnp.int32))
        self.key = jax.random.PRNGKey(2)
        self.steps = self.x.shape[0] // BATCH  # whole batches: a scan needs one shape

        def logits(params, x):
            for w, b in params[:-1]:
                x = jax.nn.relu(x @ w + b)
            w, b = params[-1]
            return x @ w + b

        def loss(params, x, y):
            z = logits(params, x)
            return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(z), y[:, None], axis=1))

        def step(state, batch):
            params, m, v, t = state
            x, y = batch
            g = jax.grad(loss)(params, x, y)
            t = t + 1
            b1, b2, lr, eps = 0.9, 0.999, 1e-3, 1e-8
            m = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, m, g)
            v = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, v, g)
            mhat = jax.tree_util.tree_map(lambda m: m / (1 - b1**t), m)
            vhat = jax.tree_util.tree_map(lambda v: v / (1 - b2**t), v)
            params = jax.tree_util.tree_map(lambda p, m, v: p - lr * m / (jnp.sqrt(v) + eps), params, mhat, vhat)
            return (params, m, v, t), None

        @jax.jit
        def epoch(state, x, y, key):
            order = jax.random.permutation(key, x.shape[0])[: self.steps * BATCH].reshape(self.steps, BATCH)
            state, _ = jax.lax.scan(step, state, (x[order], y[order]))
            return state

        @jax.jit
        def accuracy(params, x, y):
            return jnp.mean(jnp.argmax(logits(params, x), axis=1) == y)

        self._epoch, self._accuracy = epoch, accuracy
        self.epoch()  # compiles

    def epoch(self):
        self.key, k = self.jax.random.split(self.key)
        start = time.perf_counter()
        self.state = self._epoch(self.state, self.x, self.y, k)
        self.jax.block_until_ready(self.state)
        return time.perf_counter() - start

    def accuracy(self):
        return float(self._accuracy(self.state[0], self.xte, self.yte))


def run_gpumlp(data_dir, epochs, binary):
    with tempfile.TemporaryDirectory() as tmp:
        metrics = Path(tmp) / "run.jsonl"
        cmd = [str(binary), "train", "--data", str(data_dir), "--hidden", "512,256", "--batch", str(BATCH),
               "--optimizer", "adam", "--lr", "0.001", "--schedule", "constant", "--epochs", str(epochs),
               "--device", "cpu", "--metrics", str(metrics), "--json"]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"error: gpumlp failed: {out.stderr.strip()}")
        summary = json.loads(out.stdout.strip().splitlines()[-1])
        rates = [json.loads(line)["samples_per_second"] for line in metrics.read_text().splitlines()]
    return rates, summary["test_accuracy"], summary["device"]["name"]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="alternating runs of each")
    p.add_argument("--epochs", type=int, default=3, help="epochs per run")
    p.add_argument("--data", default=os.environ.get("GPUMLP_FASHION_DIR", "/usr/share/datasets/fashion-mnist"))
    p.add_argument("--binary", default=str(ROOT / "target" / "release" / "gpumlp"))
    args = p.parse_args()
    if not Path(args.binary).exists():
        sys.exit(f"error: {args.binary} not found: run `cargo build --release` first")
    import jax

    jx = Jax(args.data)
    g_rates, j_rates = [], []
    for r in range(args.rounds):
        rates, g_acc, device = run_gpumlp(args.data, args.epochs, args.binary)
        g_rates += rates
        j_rates += [jx.steps * BATCH / jx.epoch() for _ in range(args.epochs)]
        print(f"round {r + 1}: gpumlp {statistics.median(rates):,.0f} samples/s, JAX {statistics.median(j_rates[-args.epochs:]):,.0f}", flush=True)
    g, j = statistics.median(g_rates), statistics.median(j_rates)
    print(f"B1 (784-512-256-10, batch {BATCH}, Adam 1e-3, Fashion-MNIST), {os.cpu_count()} CPUs, {args.rounds} alternating rounds of {args.epochs} epochs")
    print(f"  gpumlp CPU backend ({device}): median {g:,.0f} samples/s (epochs {min(g_rates):,.0f}-{max(g_rates):,.0f}), test accuracy {100 * g_acc:.2f}% after {args.epochs} epochs")
    print(f"  JAX {jax.__version__} CPU (XLA, epoch as one lax.scan): median {j:,.0f} samples/s (epochs {min(j_rates):,.0f}-{max(j_rates):,.0f}), test accuracy {100 * jx.accuracy():.2f}% after {1 + args.rounds * args.epochs} epochs")
    print(f"  gpumlp / JAX: {g / j:.2f}x")


if __name__ == "__main__":
    main()
