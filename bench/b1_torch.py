#!/usr/bin/env python3
"""Workload B1 in PyTorch eager, the baseline gpumlp's GPU backend is compared with.

B1: MLP 784-512-256-10, ReLU, cross-entropy, batch 128, Adam 1e-3, Fashion-MNIST 60,000 train /
10,000 test, pixels / 255, data preloaded on the device, f32. Prints one JSON line:
{"device", "epoch_seconds": [...], "test_accuracy"}. Each epoch is timed with the device
synchronised at both ends.

    python3 bench/b1_torch.py --data DIR [--epochs 3] [--device cuda|cpu]
"""

import argparse
import gzip
import json
import time
from pathlib import Path

import numpy as np
import torch


def load_idx(data_dir, base):
    for name in (base + ".gz", base):
        path = Path(data_dir) / name
        if path.exists():
            raw = path.read_bytes()
            if raw[:2] == b"\x1f\x8b":
                raw = gzip.decompress(raw)
            ndim = raw[3]
            dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
            return np.frombuffer(raw[4 + 4 * ndim :], dtype=np.uint8).reshape(dims)
    raise SystemExit(f"error: {data_dir} has no {base}(.gz)")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--device", default="cuda")
    args = p.parse_args()
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def tensor(base, images):
        a = load_idx(args.data, base)
        t = torch.from_numpy(a.reshape(len(a), -1).astype(np.float32) / 255.0) if images else torch.from_numpy(a.astype(np.int64))
        return t.to(dev)

    xtr, ytr = tensor("train-images-idx3-ubyte", True), tensor("train-labels-idx1-ubyte", False)
    xte, yte = tensor("t10k-images-idx3-ubyte", True), tensor("t10k-labels-idx1-ubyte", False)
    torch.manual_seed(1)
    model = torch.nn.Sequential(
        torch.nn.Linear(784, 512), torch.nn.ReLU(), torch.nn.Linear(512, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)
    ).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    times = []
    for _ in range(args.epochs):
        sync()
        start = time.perf_counter()
        order = torch.randperm(len(xtr), device=dev)
        for i in range(0, len(xtr), 128):
            idx = order[i : i + 128]
            opt.zero_grad(set_to_none=True)
            loss_fn(model(xtr[idx]), ytr[idx]).backward()
            opt.step()
        sync()
        times.append(time.perf_counter() - start)
    with torch.no_grad():
        accuracy = (model(xte).argmax(1) == yte).float().mean().item()
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(json.dumps({"device": name, "torch": torch.__version__, "epoch_seconds": times, "test_accuracy": accuracy}))


if __name__ == "__main__":
    main()
