#!/usr/bin/env python3
"""Workload B1 from Python: `gpumlp.MLP.fit` against the `gpumlp` program and against Keras's
`Model.fit`, on the CPU, in one run (each ROUNDS times, alternately).

B1 as in compare_keras.py: 784-512-256-10, ReLU, batch 128, Adam at 1e-3 constant,
Fashion-MNIST, EPOCHS epochs; the epoch time is the median of the epochs after the first.
Prints each one's epoch time, the Python package's overhead against the program, and both
against Keras. Needs a Python with tensorflow-cpu and the package (`pip install ./python`).

    python bench/compare_python.py [--epochs 3] [--rounds 2] [--data /usr/share/datasets/fashion-mnist]
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_keras import ROOT, load, run_gpumlp, run_keras  # noqa: E402


def run_python(data_dir, epochs):
    import gpumlp

    xtr, ytr, xte, yte = load(data_dir)
    model = gpumlp.MLP(hidden=[512, 256], device="cpu")
    ends = [time.perf_counter()]
    model.fit(xtr, ytr, epochs=epochs, batch_size=128, optimizer="adam", lr=1e-3, schedule="constant",
              callback=lambda epoch, logs: ends.append(time.perf_counter()), verbose=False)
    times = [b - a for a, b in zip(ends, ends[1:])]
    return times, model.evaluate(xte, yte)["accuracy"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    args = parser.parse_args()
    binary = ROOT / "target" / "release" / "gpumlp"
    runs = {"program": [], "python": [], "keras": []}
    for _ in range(args.rounds):
        runs["program"].append(run_gpumlp(args.data, args.epochs, binary)[:2])
        runs["python"].append(run_python(args.data, args.epochs))
        runs["keras"].append(run_keras(args.data, args.epochs)[:2])
    epoch = {}
    for name, results in runs.items():
        # Each round's median epoch after the first (which warms up), then the best round.
        epoch[name] = min(statistics.median(times[1:] or times) for times, _ in results)
        accuracy = results[-1][1]
        print(f"{name}: epoch {epoch[name]:.3f} s, test accuracy {100 * accuracy:.2f}%")
    print(f"the Python package's epoch is {epoch['python'] / epoch['program']:.3f}x the program's "
          f"(overhead {1e3 * (epoch['python'] - epoch['program']):+.0f} ms per epoch)")
    print(f"against Keras: the program {epoch['keras'] / epoch['program']:.2f}x faster, "
          f"the Python package {epoch['keras'] / epoch['python']:.2f}x faster")


if __name__ == "__main__":
    main()
