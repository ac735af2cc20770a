"""gpumlp from Python: train a multilayer perceptron on NumPy arrays, on whatever GPU the machine
has (Vulkan, Metal, DX12 through wgpu and WGSL compute shaders) or on every CPU core.

    import gpumlp
    (x_train, y_train), (x_test, y_test) = gpumlp.load_data("mnist-sample")
    model = gpumlp.MLP(hidden=[512, 256])
    history = model.fit(x_train, y_train, epochs=20, validation_data=(x_test, y_test))
    model.evaluate(x_test, y_test)      # {"loss": ..., "accuracy": ...}
    model.predict(x_test[:5]); model.save("m.safetensors"); gpumlp.MLP.load("m.safetensors")

The same settings, defaults, errors and checkpoints as the `gpumlp` program: a model saved here
loads in `gpumlp eval` and in the browser page, and the other way round.
"""
import os
import sys
import tempfile

import numpy as np

# Mesa's Vulkan drivers complain on every adapter lookup where a machine has no desktop session
# (no XDG_RUNTIME_DIR): give them a private folder first, as the program does.
if sys.platform.startswith("linux") and "XDG_RUNTIME_DIR" not in os.environ:
    _runtime = os.path.join(tempfile.gettempdir(), f"gpumlp-runtime-{os.getuid()}")
    os.makedirs(_runtime, mode=0o700, exist_ok=True)
    os.environ["XDG_RUNTIME_DIR"] = _runtime

from ._gpumlp import GpuError, Model as _Model, devices, load_data  # noqa: E402

__all__ = ["MLP", "GpuError", "devices", "load_data"]


def _features(x, name="x"):
    """u8 arrays stay bytes (scaled by 1/255 as the program scales images); any other number
    type becomes float32. Shape [n, ...]: the trailing dimensions are the features."""
    x = np.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"{name}: shape {x.shape}; expected [n, features...]")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if x.dtype.kind not in "biuf":
        raise ValueError(f"{name}: dtype {x.dtype} is not a number type")
    return np.ascontiguousarray(x, dtype=np.float32)


def _labels(y, names, name="y"):
    """Integer labels as u32, or names (strings) as classes in sorted order (or `names`'s)."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"{name}: shape {y.shape}; expected [n] or [n, 1] labels")
    if y.dtype.kind in "USO":
        strings = y.astype(str)
        if names is None:
            names = sorted(set(strings.tolist()))
        index = {n: i for i, n in enumerate(names)}
        missing = [s for s in set(strings.tolist()) if s not in index]
        if missing:
            raise ValueError(f"{name}: '{missing[0]}' is not one of the model's classes")
        return np.array([index[s] for s in strings], dtype=np.uint32), names
    if y.dtype.kind not in "iu":
        raise ValueError(f"{name}: labels of dtype {y.dtype}; expected integers or strings")
    if y.size and (y.min() < 0 or y.max() >= 65536):
        raise ValueError(f"{name}: labels must be classes 0 to 65535")
    return y.astype(np.uint32), names


class MLP:
    """A multilayer perceptron: `hidden` layer widths, the hidden `activation` (relu,
    leaky-relu, tanh, sigmoid, gelu), the `device` (auto, cpu, gpu, igpu, software, or an index
    from `gpumlp.devices()`) and the GEMMs' `precision` (f32, or mixed on a GPU with cooperative
    matrices). The first and last layers' widths come from the data."""

    def __init__(self, hidden=(512, 256), activation="relu", device="auto", precision="f32"):
        self._model = _Model(list(hidden), activation, device, precision)

    @classmethod
    def load(cls, path, device="auto"):
        model = cls.__new__(cls)
        model._model = _Model.load(str(path), device)
        return model

    def fit(self, x, y, epochs=20, batch_size=128, optimizer="adam", lr=None, schedule="cosine",
            validation_data=None, seed=1, callback=None, verbose=True):
        """Trains for `epochs` more epochs; returns the history as Keras does: a dict of lists
        (`loss`, `accuracy`, and with `validation_data` `val_loss`, `val_accuracy`). Releases the
        GIL while it trains; Ctrl-C stops at a step boundary with the model kept."""
        x = _features(x)
        y, names = _labels(y, self._model.names)
        validation = None
        if validation_data is not None:
            vx, vy = validation_data
            vy, names = _labels(vy, names, "validation labels")
            validation = (_features(vx, "validation data"), vy)
        start = [0]

        def progress(epoch, logs):
            if verbose:
                line = f"epoch {epoch:>3}  loss {logs['loss']:.4f}  accuracy {100 * logs['accuracy']:6.2f}%"
                if "val_accuracy" in logs:
                    line += f"  val_loss {logs['val_loss']:.4f}  val_accuracy {100 * logs['val_accuracy']:6.2f}%"
                print(line, file=sys.stderr, flush=True)
            if callback is not None:
                callback(epoch, logs)
            start[0] = epoch

        return self._model.fit(x, y, names, validation, epochs, batch_size, optimizer, lr,
                               schedule, seed, progress)

    def evaluate(self, x, y):
        """{"loss": mean cross-entropy, "accuracy": share right} on `x`, `y`."""
        y, _ = _labels(y, self._model.names)
        loss, accuracy = self._model.evaluate(_features(x), y)
        return {"loss": loss, "accuracy": accuracy}

    def predict_proba(self, x):
        """Class probabilities, [n, classes]."""
        return self._model.predict_proba(_features(x))

    def predict(self, x):
        """The most probable class of each sample (its name, where the labels were names)."""
        classes = self.predict_proba(x).argmax(axis=1)
        names = self._model.names
        return np.array(names)[classes] if names is not None else classes

    def save(self, path):
        """Writes a safetensors checkpoint that `gpumlp eval`, `--resume` and the browser read."""
        self._model.save(str(path))

    @property
    def architecture(self):
        return self._model.architecture

    @property
    def classes_(self):
        return self._model.names

    def close(self):
        """Nothing stays open between calls (each `fit` opens and closes its device); kept so
        `with gpumlp.MLP(...) as model:` reads as it does for other GPU libraries."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
