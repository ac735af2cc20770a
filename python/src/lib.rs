//! `gpumlp._gpumlp`: the core crate behind the Python package (`python/gpumlp/`, which turns
//! whatever arrays a user has into the two forms taken here: u8 or f32 features of shape
//! `[n, ...]`, u32 labels with their names).
//!
//! Training releases the GIL (`Python::detach`) and runs on the calling thread: the trainer, its
//! backend and its GPU device are made, used and dropped inside that one call, so they never
//! cross threads (the core's trait objects are not `Send`) and the device is shut down when
//! `fit` returns, never at interpreter exit (where Vulkan's teardown has known crashes). The
//! model between calls is its checkpoint: parameters, optimizer state, data description.

use gpumlp::backend::{Backend, CpuBackend, Split, Tensor};
use gpumlp::data_spec::Input;
use gpumlp::dataset::{Dataset, Features, Splits};
use gpumlp::inference::probabilities;
use gpumlp::{Activation, Checkpoint, OptimizerConfig, OptimizerKind, Precision, Schedule};
use gpumlp::{TrainConfig, Trainer};
use gpumlp_native::cli::Device;
use gpumlp_native::ranks::Job;
use numpy::prelude::*;
use numpy::{PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArrayDyn};
use pyo3::create_exception;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::Mutex;

create_exception!(_gpumlp, GpuError, PyRuntimeError, "A GPU fault or a device that cannot do what was asked.");

/// Steps handed to the device between two looks at Ctrl-C (as the program's slices).
const SLICE: usize = 32;

/// A core error as the Python exception a user expects: bad settings or data are `ValueError`,
/// the GPU's faults `GpuError`; the message is the program's one line.
fn py_err(e: gpumlp::Error) -> PyErr {
    match e {
        gpumlp::Error::Gpu(_) => GpuError::new_err(e.to_string()),
        gpumlp::Error::Setting { .. } | gpumlp::Error::Data { .. } | gpumlp::Error::Config(_) => {
            PyValueError::new_err(e.to_string())
        }
        other => PyRuntimeError::new_err(other.to_string()),
    }
}

/// An error of the program's device handling (an unknown device, none found).
fn device_err(e: anyhow::Error) -> PyErr {
    match e.downcast_ref::<gpumlp::Error>() {
        Some(gpumlp::Error::Gpu(_)) | None => GpuError::new_err(format!("{e:#}")),
        Some(_) => PyValueError::new_err(format!("{e:#}")),
    }
}

fn parse_device(s: &str) -> PyResult<Device> {
    gpumlp_native::cli::parse_device(s).map_err(|e| PyValueError::new_err(format!("device: {e}")))
}

/// Features of `x` (u8 or f32, `[n, ...]`): the samples, their width, and the image shape of a
/// u8 `[n, h, w]` or `[n, h, w, c]`.
fn features(x: &Bound<'_, PyAny>) -> PyResult<(Features, usize, Option<[usize; 3]>)> {
    let (features, shape) = if let Ok(a) = x.extract::<PyReadonlyArrayDyn<u8>>() {
        (Features::Bytes(a.as_array().iter().copied().collect()), a.shape().to_vec())
    } else if let Ok(a) = x.extract::<PyReadonlyArrayDyn<f32>>() {
        (Features::Floats(a.as_array().iter().copied().collect()), a.shape().to_vec())
    } else {
        return Err(PyValueError::new_err("x: expected a uint8 or float32 array"));
    };
    let (n, width) = match shape.split_first() {
        Some((&n, rest)) => (n, rest.iter().product::<usize>()),
        None => return Err(PyValueError::new_err("x: a scalar is not samples of features")),
    };
    if n == 0 || width == 0 {
        return Err(PyValueError::new_err(format!("x: an array of shape {shape:?} holds no samples")));
    }
    let image = match (&features, &shape[1..]) {
        (Features::Bytes(_), &[h, w]) => Some([h, w, 1]),
        (Features::Bytes(_), &[h, w, c]) if matches!(c, 1 | 3 | 4) => Some([h, w, c]),
        _ => None,
    };
    Ok((features, width, image))
}

fn dataset(name: &str, x: &Bound<'_, PyAny>, y: PyReadonlyArray1<u32>) -> PyResult<(Dataset, Option<[usize; 3]>)> {
    let (features, width, image) = features(x)?;
    let set = Dataset::new(name, features, width, y.as_array().to_vec()).map_err(py_err)?;
    Ok((set, image))
}

/// A multilayer perceptron: its settings, and once trained or loaded, its checkpoint.
#[pyclass(module = "gpumlp._gpumlp")]
struct Model {
    hidden: Vec<usize>,
    activation: Activation,
    device: String,
    precision: Precision,
    state: Mutex<Option<Checkpoint>>,
}

impl Model {
    fn checkpoint(&self) -> PyResult<Checkpoint> {
        self.state
            .lock()
            .map_err(|_| PyRuntimeError::new_err("the model's lock was poisoned"))?
            .clone()
            .ok_or_else(|| PyValueError::new_err("the model is not trained: call fit or load one first"))
    }
}

#[pymethods]
impl Model {
    #[new]
    fn new(hidden: Vec<usize>, activation: &str, device: &str, precision: &str) -> PyResult<Self> {
        let activation: Activation = activation.parse().map_err(py_err)?;
        let precision: Precision = precision.parse().map_err(py_err)?;
        parse_device(device)?;
        gpumlp::Architecture::new(1, &hidden, 2).map_err(py_err)?;
        Ok(Model {
            hidden,
            activation,
            device: device.to_string(),
            precision,
            state: Mutex::new(None),
        })
    }

    /// Trains on `x`, `y` for `epochs` more epochs (continuing where an earlier `fit` or a
    /// loaded training checkpoint left off); `callback(epoch, logs)` after each epoch. Returns
    /// the history: `loss`, `accuracy` and, with validation data, `val_loss`, `val_accuracy`.
    #[pyo3(signature = (x, y, names, validation, epochs, batch_size, optimizer, lr, schedule, seed, callback))]
    #[allow(clippy::too_many_arguments)]
    fn fit<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        y: PyReadonlyArray1<u32>,
        names: Option<Vec<String>>,
        validation: Option<(Bound<'py, PyAny>, PyReadonlyArray1<u32>)>,
        epochs: usize,
        batch_size: usize,
        optimizer: &str,
        lr: Option<f32>,
        schedule: &str,
        seed: u64,
        callback: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let (train, image) = dataset("x", x, y)?;
        let has_validation = validation.is_some();
        let test = match validation {
            Some((vx, vy)) => dataset("validation data", &vx, vy)?.0,
            // The trainer evaluates a test set: without one, the training set (not reported).
            None => train.clone(),
        };
        let mut data = Splits::new("arrays", train, test, image, names).map_err(py_err)?;
        let kind: OptimizerKind = optimizer.parse().map_err(py_err)?;
        let mut opt = OptimizerConfig::new(kind);
        if let Some(lr) = lr {
            opt.lr = lr;
        }
        let schedule: Schedule = schedule.parse().map_err(py_err)?;
        let device = parse_device(&self.device)?;
        let previous = self.state.lock().map_err(|_| PyRuntimeError::new_err("poisoned"))?.clone();
        let resumed = previous.filter(|c| c.training.is_some());
        // A run resumed from a checkpoint of standardised features reads its data that way.
        if let Some(s) = resumed
            .as_ref()
            .and_then(|c| c.data.standardization.as_ref())
        {
            data.standardize(Some(s)).map_err(py_err)?;
        }
        let history = Mutex::new(Vec::<[f64; 4]>::new());
        let precision = self.precision;
        let config = TrainConfig {
            hidden: self.hidden.clone(),
            activation: self.activation,
            epochs,
            batch: batch_size,
            optimizer: opt,
            schedule,
            seed,
            precision,
        };
        config.validate().map_err(py_err)?;
        let outcome: PyResult<Checkpoint> = py.detach(|| {
            let gpu = gpumlp_native::devices::open_gpu(&device, &Job::alone()).map_err(device_err)?;
            gpumlp_native::devices::check_precision(gpu.as_ref(), precision).map_err(device_err)?;
            let arch = match &resumed {
                Some(c) => c.architecture.clone(),
                None => config.architecture(&data.spec).map_err(py_err)?,
            };
            let (backend, _, _) = gpumlp_native::devices::on(gpu, &arch, precision).map_err(device_err)?;
            let mut trainer = match &resumed {
                Some(c) => {
                    let done = c.training.as_ref().map_or(0, |t| t.epoch);
                    Trainer::resume(c, done + epochs, backend, &data)
                }
                None => Trainer::new(config.clone(), backend, &data),
            }
            .map_err(py_err)?;
            while !trainer.finished() {
                loop {
                    let ended = pollster::block_on(trainer.advance(SLICE, &mut |_, _| {})).map_err(py_err)?;
                    if ended {
                        break;
                    }
                    // Ctrl-C at a step boundary: keep the model as it is, then raise.
                    if let Err(e) = Python::attach(|py| py.check_signals()) {
                        let kept = pollster::block_on(trainer.checkpoint()).map_err(py_err)?;
                        *self.state.lock().map_err(|_| PyRuntimeError::new_err("poisoned"))? = Some(kept);
                        return Err(e);
                    }
                }
                let epoch = pollster::block_on(trainer.finish_epoch()).map_err(py_err)?;
                let test = if has_validation {
                    Some(pollster::block_on(trainer.evaluate()).map_err(py_err)?)
                } else {
                    None
                };
                let row = [
                    epoch.train.loss(),
                    epoch.train.accuracy(),
                    test.map_or(f64::NAN, |t| t.loss()),
                    test.map_or(f64::NAN, |t| t.accuracy()),
                ];
                history.lock().expect("history").push(row);
                if let Some(cb) = &callback {
                    let called = Python::attach(|py| -> PyResult<()> {
                        let logs = PyDict::new(py);
                        logs.set_item("loss", row[0])?;
                        logs.set_item("accuracy", row[1])?;
                        if has_validation {
                            logs.set_item("val_loss", row[2])?;
                            logs.set_item("val_accuracy", row[3])?;
                        }
                        cb.call1(py, (epoch.epoch, logs))?;
                        Ok(())
                    });
                    // An exception in the callback (Ctrl-C arrives there too, in Python code)
                    // keeps the epochs trained so far.
                    if let Err(e) = called {
                        let kept = pollster::block_on(trainer.checkpoint()).map_err(py_err)?;
                        *self.state.lock().map_err(|_| PyRuntimeError::new_err("poisoned"))? =
                            Some(kept);
                        return Err(e);
                    }
                }
            }
            pollster::block_on(trainer.checkpoint()).map_err(py_err)
            // The trainer, its backend and its device are dropped here, on this thread.
        });
        let mut checkpoint = outcome?;
        checkpoint.name = "model".into();
        *self.state.lock().map_err(|_| PyRuntimeError::new_err("poisoned"))? = Some(checkpoint);
        let out = PyDict::new(py);
        let rows = history.into_inner().expect("history");
        let column = |i: usize| rows.iter().map(|r| r[i]).collect::<Vec<f64>>();
        out.set_item("loss", column(0))?;
        out.set_item("accuracy", column(1))?;
        if has_validation {
            out.set_item("val_loss", column(2))?;
            out.set_item("val_accuracy", column(3))?;
        }
        Ok(out)
    }

    /// `(loss, accuracy)` of the model on `x`, `y` (on the CPU backend).
    fn evaluate(&self, py: Python<'_>, x: &Bound<'_, PyAny>, y: PyReadonlyArray1<u32>) -> PyResult<(f64, f64)> {
        let model = self.checkpoint()?;
        let (set, _) = dataset("x", x, y)?;
        let set = Dataset::new("x", model.data.prepare("x", set.features).map_err(py_err)?, set.width, set.labels)
            .map_err(py_err)?;
        py.detach(|| {
            let mut cpu = CpuBackend::new(&model.architecture);
            cpu.write(Tensor::Params, &model.params).map_err(py_err)?;
            cpu.upload(Split::Test, &set).map_err(py_err)?;
            let stats = pollster::block_on(cpu.evaluate(Split::Test, set.len())).map_err(py_err)?;
            Ok((stats.loss(), stats.accuracy()))
        })
    }

    /// Class probabilities of `x`, `[n, classes]` (on the CPU backend).
    fn predict_proba<'py>(&self, py: Python<'py>, x: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let model = self.checkpoint()?;
        let (features, width, _) = features(x)?;
        if width != model.data.features {
            return Err(PyValueError::new_err(format!(
                "x: samples of {width} features; the model reads {}",
                model.data.features
            )));
        }
        let features = model.data.prepare("x", features).map_err(py_err)?;
        let classes = model.data.classes;
        let probs = py.detach(|| probabilities(&model.architecture, &model.params, features).map_err(py_err))?;
        let rows = probs.len() / classes;
        Ok(PyArray1::from_vec(py, probs).reshape([rows, classes])?)
    }

    /// Writes the model as a safetensors checkpoint (what `gpumlp train --save` writes).
    fn save(&self, path: std::path::PathBuf) -> PyResult<()> {
        let model = self.checkpoint()?;
        let bytes = model.to_bytes().map_err(py_err)?;
        gpumlp_native::files::write_atomic(&path, &bytes).map_err(|e| PyValueError::new_err(format!("{e:#}")))
    }

    /// A model from a checkpoint written by `save` or by `gpumlp train --save`.
    #[staticmethod]
    #[pyo3(signature = (path, device = "auto"))]
    fn load(path: std::path::PathBuf, device: &str) -> PyResult<Model> {
        let bytes = std::fs::read(&path).map_err(|e| PyValueError::new_err(format!("{}: cannot read: {e}", path.display())))?;
        let ckpt = Checkpoint::from_bytes(&path.display().to_string(), &bytes).map_err(py_err)?;
        parse_device(device)?;
        Ok(Model {
            hidden: ckpt.architecture.hidden().to_vec(),
            activation: ckpt.architecture.activation,
            device: device.to_string(),
            precision: ckpt.training.as_ref().map_or(Precision::F32, |t| t.config.precision),
            state: Mutex::new(Some(ckpt)),
        })
    }

    /// The network, `784-512-256-10` (empty before training).
    #[getter]
    fn architecture(&self) -> String {
        self.state
            .lock()
            .ok()
            .and_then(|s| s.as_ref().map(|c| c.architecture.to_string()))
            .unwrap_or_default()
    }

    /// The class names, where the labels were names.
    #[getter]
    fn names(&self) -> Option<Vec<String>> {
        self.state.lock().ok()?.as_ref()?.data.names.clone()
    }

    /// Whether the model reads its features as bytes (u8 images, scaled by 1/255).
    #[getter]
    fn reads_bytes(&self) -> Option<bool> {
        Some(self.state.lock().ok()?.as_ref()?.data.input == Input::Bytes)
    }
}

/// Every GPU adapter and the CPU backend: name, kind, backend and, for adapters, driver and the
/// cooperative matrix sizes mixed precision can use.
#[pyfunction]
fn devices(py: Python<'_>) -> PyResult<Vec<Bound<'_, PyDict>>> {
    let mut out = Vec::new();
    for adapter in gpumlp_native::devices::adapters() {
        let info = adapter.get_info();
        let d = PyDict::new(py);
        d.set_item("name", &info.name)?;
        d.set_item("kind", gpumlp::backend::gpu::device_kind(info.device_type))?;
        d.set_item("backend", info.backend.to_str())?;
        d.set_item("driver", format!("{} {}", info.driver, info.driver_info))?;
        d.set_item("cooperative_matrices", gpumlp::backend::gpu::GpuContext::cooperative_sizes(&adapter))?;
        out.push(d);
    }
    let cpu = gpumlp_native::devices::cpu_device();
    let d = PyDict::new(py);
    d.set_item("name", cpu.name)?;
    d.set_item("kind", cpu.kind)?;
    d.set_item("backend", cpu.backend)?;
    out.push(d);
    Ok(out)
}

/// `((x_train, y_train), (x_test, y_test))` of a dataset the program knows (`mnist-sample`,
/// `mnist`, `fashion-mnist`, a folder or file), as `keras.datasets` gives them: u8 images
/// `[n, h, w]` (or float32 `[n, features]`) and integer labels.
#[pyfunction]
#[allow(clippy::type_complexity)]
fn load_data(py: Python<'_>, name: &str) -> PyResult<((Py<PyAny>, Py<PyAny>), (Py<PyAny>, Py<PyAny>))> {
    let source = gpumlp_native::data::DataSource::parse(name).map_err(PyValueError::new_err)?;
    let splits = py
        .detach(|| gpumlp_native::data::load(&source, &Default::default(), &mut |_, _| {}))
        .map_err(|e| PyValueError::new_err(format!("{e:#}")))?;
    let arrays = |set: &Dataset| -> PyResult<(Py<PyAny>, Py<PyAny>)> {
        let mut shape = vec![set.len()];
        match splits.spec.image {
            Some([h, w, 1]) => shape.extend([h, w]),
            Some([h, w, c]) => shape.extend([h, w, c]),
            None => shape.push(set.width),
        }
        let x: Py<PyAny> = match &set.features {
            Features::Bytes(v) => PyArray1::from_vec(py, v.clone()).reshape(shape)?.into_any().unbind(),
            Features::Floats(v) => PyArray1::from_vec(py, v.clone()).reshape(shape)?.into_any().unbind(),
        };
        let y = PyArray1::from_vec(py, set.labels.iter().map(|&l| l as i64).collect()).into_any().unbind();
        Ok((x, y))
    };
    Ok((arrays(&splits.train)?, arrays(&splits.test)?))
}

#[pymodule]
fn _gpumlp(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Model>()?;
    m.add_function(wrap_pyfunction!(devices, m)?)?;
    m.add_function(wrap_pyfunction!(load_data, m)?)?;
    m.add("GpuError", m.py().get_type::<GpuError>())?;
    Ok(())
}
