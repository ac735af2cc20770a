"""The Python package against the program: the same losses for the same seed on the CPU, a
NumPy table with named classes, a model saved here evaluated by `gpumlp eval`, bad arrays
refused, the GIL released while training, and the GPU path on lavapipe. Run by scripts/test
(after `pip install ./python` into target/pyvenv); GPUMLP_BIN names the program."""
import json
import os
import subprocess
import threading

import numpy as np
import pytest

import gpumlp

BIN = os.environ.get("GPUMLP_BIN", os.path.join(os.path.dirname(__file__), "..", "..", "target", "release", "gpumlp"))


@pytest.fixture(scope="module")
def sample():
    return gpumlp.load_data("mnist-sample")


def test_the_sample_trains_to_the_programs_losses_for_the_same_seed(sample, tmp_path):
    (x, y), (tx, ty) = sample
    assert x.shape == (8000, 28, 28) and x.dtype == np.uint8 and ty.shape == (2000,)
    model = gpumlp.MLP(hidden=[64], device="cpu")
    epochs = []
    history = model.fit(x, y, epochs=2, validation_data=(tx, ty), seed=3,
                        callback=lambda epoch, logs: epochs.append(epoch), verbose=False)
    assert epochs == [1, 2]
    metrics = tmp_path / "m.jsonl"
    subprocess.run([BIN, "train", "--data", "mnist-sample", "--hidden", "64", "--epochs", "2",
                    "--seed", "3", "--device", "cpu", "--metrics", str(metrics)],
                   check=True, capture_output=True)
    program = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert history["loss"] == [e["train_loss"] for e in program]
    assert history["val_accuracy"] == [e["test_accuracy"] for e in program]
    result = model.evaluate(tx, ty)
    assert result["accuracy"] == program[-1]["test_accuracy"]
    assert model.predict(tx[:10]).shape == (10,)
    probs = model.predict_proba(tx[:3])
    assert probs.shape == (3, 10) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)


def test_a_numpy_table_with_named_classes_predicts_names():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 5))  # float64: used as floats
    names = np.array(["left", "right"])[(x[:, 0] + x[:, 1] > 0).astype(int)]
    model = gpumlp.MLP(hidden=[16], device="cpu")
    history = model.fit(x[:500], names[:500], epochs=30, batch_size=32, verbose=False)
    assert len(history["loss"]) == 30 and "val_loss" not in history
    assert model.classes_ == ["left", "right"]
    assert model.architecture == "5-16-2"
    accuracy = (model.predict(x[500:]) == names[500:]).mean()
    assert accuracy >= 0.9, accuracy
    assert model.evaluate(x[500:], names[500:])["accuracy"] == accuracy
    # fit again continues the run: 10 more epochs.
    assert len(model.fit(x[:500], names[:500], epochs=10, verbose=False)["loss"]) == 10


def test_a_model_saved_here_is_evaluated_by_the_program_and_loads_back(sample, tmp_path):
    (x, y), (tx, ty) = sample
    model = gpumlp.MLP(hidden=[32], device="cpu")
    model.fit(x, y, epochs=1, validation_data=(tx, ty), verbose=False)
    path = tmp_path / "m.safetensors"
    model.save(path)
    out = subprocess.run([BIN, "eval", "--model", str(path), "--data", "mnist-sample", "--json"],
                         check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    assert json.loads(out)["test_accuracy"] == model.evaluate(tx, ty)["accuracy"]
    again = gpumlp.MLP.load(path)
    assert np.array_equal(again.predict_proba(tx[:50]), model.predict_proba(tx[:50]))


def test_bad_arrays_and_settings_are_value_errors_with_the_programs_words():
    x = np.zeros((10, 4), dtype=np.float32)
    y = np.arange(10, dtype=np.int64) % 2
    with pytest.raises(ValueError, match="10 samples but 9 labels"):
        gpumlp.MLP(hidden=[4], device="cpu").fit(x, y[:9], epochs=1, verbose=False)
    bad = x.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="feature 2 of sample 3 is NaN"):
        gpumlp.MLP(hidden=[4], device="cpu").fit(bad, y, epochs=1, verbose=False)
    with pytest.raises(ValueError, match="labels must be classes"):
        gpumlp.MLP(hidden=[4], device="cpu").fit(x, -np.ones(10, dtype=int), epochs=1, verbose=False)
    with pytest.raises(ValueError, match="'swish' is not"):
        gpumlp.MLP(activation="swish")
    with pytest.raises(ValueError, match="batch size"):
        gpumlp.MLP(hidden=[4], device="cpu").fit(x, y, epochs=1, batch_size=0, verbose=False)
    with pytest.raises(ValueError, match="not trained"):
        gpumlp.MLP().predict(x)


def test_training_releases_the_gil(sample):
    (x, y), _ = sample
    ticks = []
    stop = threading.Event()

    def tick():
        while not stop.is_set():
            ticks.append(1)
            stop.wait(0.001)

    thread = threading.Thread(target=tick)
    thread.start()
    before = len(ticks)
    gpumlp.MLP(hidden=[128], device="cpu").fit(x, y, epochs=2, verbose=False)
    during = len(ticks) - before
    stop.set()
    thread.join()
    assert during > 20, f"the other thread ran {during} times during fit"


def test_the_gpu_path_on_a_software_adapter(sample):
    if not any(d["kind"] == "software-gpu" for d in gpumlp.devices()):
        if os.environ.get("CI") == "true":
            pytest.fail("no software GPU adapter (lavapipe) under CI")
        pytest.skip("no software GPU adapter: apt-get install mesa-vulkan-drivers gives lavapipe")
    (x, y), (tx, ty) = sample
    cpu = gpumlp.MLP(hidden=[32], device="cpu").fit(x[:2000], y[:2000], epochs=1, validation_data=(tx, ty), verbose=False)
    gpu = gpumlp.MLP(hidden=[32], device="software").fit(x[:2000], y[:2000], epochs=1, validation_data=(tx, ty), verbose=False)
    assert abs(gpu["val_accuracy"][-1] - cpu["val_accuracy"][-1]) <= 0.01
    with pytest.raises(gpumlp.GpuError, match="cooperative matrices"):
        gpumlp.MLP(hidden=[32], device="software", precision="mixed").fit(x[:100], y[:100], epochs=1, verbose=False)


def test_a_model_saved_by_the_program_predicts_here_as_the_program_does(sample, tmp_path):
    (_, _), (tx, ty) = sample
    path = tmp_path / "p.safetensors"
    subprocess.run([BIN, "train", "--data", "mnist-sample", "--hidden", "32", "--epochs", "1",
                    "--device", "cpu", "--save", str(path)], check=True, capture_output=True)
    rows = tmp_path / "rows.npy"
    np.save(rows, tx[:20])
    out = subprocess.run([BIN, "predict", "--model", str(path), "--json", str(rows)],
                         check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    program = [r["class"] for r in json.loads(out)]
    assert gpumlp.MLP.load(path).predict(tx[:20]).tolist() == program


def test_ctrl_c_stops_fit_at_a_step_with_the_model_kept(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(
        "import gpumlp, sys\n"
        "(x, y), (tx, ty) = gpumlp.load_data('mnist-sample')\n"
        "model = gpumlp.MLP(hidden=[256], device='cpu')\n"
        "print('ready', flush=True)\n"
        "try:\n"
        "    model.fit(x, y, epochs=500, verbose=False)\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', model.evaluate(tx, ty)['accuracy'] > 0.5, flush=True)\n"
    )
    import signal, sys, time
    p = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    time.sleep(3)
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=60)
    assert out.strip() == "interrupted True", out
