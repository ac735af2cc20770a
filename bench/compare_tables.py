"""gpumlp against scikit-learn's MLPClassifier on the real tables of data/tables.

For each table and each of SPLITS seeded 80/20 splits, the split is written as NumPy arrays
(x_train.npy, y_train.npy, x_test.npy, y_test.npy) that both read: gpumlp through
`train --data DIR --standardize`, scikit-learn after a StandardScaler fitted on the training
split. Both train one hidden layer of 32 ReLU units with Adam (learning rate 0.002, batch 16,
EPOCHS epochs, a constant rate for both) and report test accuracy.

    bench/compare_tables.sh [--splits 10] [--epochs 60]
"""
import argparse
import csv
import json
import os
import subprocess
import tempfile
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
GPUMLP = os.path.join(ROOT, "target", "release", "gpumlp")


def read_table(path):
    with open(path) as f:
        rows = list(csv.reader(f))[1:]
    x = np.array([[float(v) for v in r[:-1]] for r in rows], dtype=np.float32)
    names = sorted({r[-1] for r in rows})
    y = np.array([names.index(r[-1]) for r in rows], dtype=np.int64)
    return x, y


def gpumlp_accuracy(folder, epochs):
    out = subprocess.run(
        [GPUMLP, "train", "--data", folder, "--standardize", "--hidden", "32",
         "--batch", "16", "--epochs", str(epochs), "--schedule", "constant", "--device", "cpu",
         "--json"],
        check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["test_accuracy"]


def sklearn_accuracy(x_train, y_train, x_test, y_test, epochs, seed):
    scaler = StandardScaler().fit(x_train)
    model = MLPClassifier(hidden_layer_sizes=(32,), solver="adam", learning_rate_init=0.002,
                          batch_size=16, max_iter=epochs, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(scaler.transform(x_train), y_train)
    return model.score(scaler.transform(x_test), y_test)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--splits", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=60)
    args = parser.parse_args()
    for table in ["iris.csv", "wine.csv"]:
        x, y = read_table(os.path.join(ROOT, "data", "tables", table))
        ours, theirs = [], []
        for seed in range(args.splits):
            order = np.random.default_rng(seed).permutation(len(y))
            cut = len(y) - round(0.2 * len(y))
            train, test = order[:cut], order[cut:]
            with tempfile.TemporaryDirectory() as folder:
                for name, values in [("x_train", x[train]), ("y_train", y[train]),
                                     ("x_test", x[test]), ("y_test", y[test])]:
                    np.save(os.path.join(folder, name + ".npy"), values)
                ours.append(gpumlp_accuracy(folder, args.epochs))
            theirs.append(sklearn_accuracy(x[train], y[train], x[test], y[test], args.epochs, seed))
        print(f"{table}: {args.splits} splits, {args.epochs} epochs: "
              f"gpumlp mean {100 * np.mean(ours):.2f}% (min {100 * min(ours):.2f}%), "
              f"scikit-learn mean {100 * np.mean(theirs):.2f}% (min {100 * min(theirs):.2f}%)")


if __name__ == "__main__":
    main()
