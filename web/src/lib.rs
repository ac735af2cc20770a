//! The browser demo's WebAssembly side: the core crate behind a small JavaScript API.
//!
//! Training runs on WebGPU through the same GPU backend and WGSL kernels as the native program,
//! or on the CPU backend compiled to wasm (with SIMD) where WebGPU is missing or `?backend=cpu`
//! asks for it; built with the `threads` feature, on a rayon pool of Web Workers. The demo runs
//! in a Web Worker (web/worker.js), which trains a slice of steps per call and answers the
//! page's calls in between; every GPU readback is awaited. Predictions (the drawing canvas, the
//! grid of test digits) run on a CPU copy of the model taken after each epoch.
//!
//! Data: the built-in sample, the four IDX files of a dataset, or one `.npz` archive or CSV
//! table picked from disk (cut 80/20 into training and test where it has no test split, float
//! features standardised, as `gpumlp train --standardize` does). The drawing canvas and the
//! digit grid are for 28x28 grey images; the page says so for other data.
//!
//! JavaScript calls one method at a time and awaits it; a call made while another is still
//! running is refused with an error rather than interleaved.

use gpumlp::backend::gpu::{self, GpuBackend, GpuContext};
use gpumlp::backend::{argmax, Backend};
use gpumlp::dataset::{split_sample, Dataset, Splits};
use gpumlp::inference::probabilities;
use gpumlp::preprocess::{digit_from_luma, luma_over_white};
use gpumlp::{
    csv_table, numpy, Activation, Architecture, Checkpoint, CpuBackend, Features, Input,
    OptimizerConfig, OptimizerKind, Schedule, Setting, TrainConfig, Trainer,
};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;

// The threaded build's pool: `await initThreadPool(n)` from a Web Worker before `Demo.create`.
#[cfg(feature = "threads")]
pub use wasm_bindgen_rayon::init_thread_pool;

/// Threads the CPU backend trains on: 1 in the single-threaded build, the pool's size in the
/// threaded one.
#[wasm_bindgen]
pub fn cpu_threads() -> usize {
    gpumlp::backend::cpu_threads()
}

/// The demo: data, the device, the run, and the model predictions use.
#[wasm_bindgen]
pub struct Demo {
    inner: Rc<RefCell<Inner>>,
    /// The GPU the run trains on, apart from `inner` (which a training call holds), so the
    /// tests can lose it in the middle of a run.
    gpu: Rc<RefCell<Option<GpuContext>>>,
}

struct Inner {
    data: Splits,
    adapter: Option<wgpu::Adapter>,
    backend_label: String,
    trainer: Option<Trainer>,
    /// The model predictions use: the last finished epoch's checkpoint (with what resuming
    /// needs), or a loaded file.
    model: Option<Checkpoint>,
}

fn err(e: impl std::fmt::Display) -> JsError {
    JsError::new(&e.to_string())
}

/// A core error, with a setting named by the page's form field (as the URL parameters name it).
fn field_err(e: gpumlp::Error) -> JsError {
    match e {
        gpumlp::Error::Setting { setting, reason } => {
            let field = match setting {
                Setting::Hidden => "hidden",
                Setting::Batch => "batch",
                Setting::LearningRate => "lr",
                Setting::Optimizer => "optimizer",
                Setting::Epochs => "epochs",
                other => return err(format!("{other}: {reason}")),
            };
            err(format!("{field}: {reason}"))
        }
        other => err(other),
    }
}

impl Demo {
    fn inner(&self) -> Result<std::cell::RefMut<'_, Inner>, JsError> {
        self.inner
            .try_borrow_mut()
            .map_err(|_| err("busy: the previous call has not finished"))
    }
}

#[wasm_bindgen]
impl Demo {
    /// Loads the built-in sample from its two gzip IDX files (split as natively: 8,000 train,
    /// 2,000 test) and finds a device: WebGPU unless `backend` is "cpu". `adapter_label` is what
    /// the page read of the adapter, for the backend text.
    pub async fn create(
        images_gz: Vec<u8>,
        labels_gz: Vec<u8>,
        backend: String,
        adapter_label: String,
    ) -> Result<Demo, JsError> {
        console_panic_hook();
        let (all, _) = Dataset::from_idx("sample images", &images_gz, "sample labels", &labels_gz)
            .map_err(err)?;
        let data = split_sample(&all);
        let (adapter, backend_label) = if backend == "cpu" {
            (None, "cpu: forced by backend=cpu".to_string())
        } else {
            match gpu::adapters().await.into_iter().next() {
                Some(adapter) => {
                    let name = adapter.get_info().name;
                    let label = [adapter_label.as_str(), name.as_str()]
                        .into_iter()
                        .find(|s| !s.is_empty())
                        .unwrap_or("adapter");
                    (Some(adapter), format!("webgpu: {label}"))
                }
                None => (
                    None,
                    "cpu: WebGPU is unavailable (the browser offers no adapter)".to_string(),
                ),
            }
        };
        Ok(Demo {
            inner: Rc::new(RefCell::new(Inner {
                data,
                adapter,
                backend_label,
                trainer: None,
                model: None,
            })),
            gpu: Rc::new(RefCell::new(None)),
        })
    }

    /// `webgpu: <adapter>` or `cpu: <why>`.
    pub fn backend(&self) -> Result<String, JsError> {
        Ok(self.inner()?.backend_label.clone())
    }

    /// Replaces the data with the four IDX files of a full dataset (gz or raw).
    pub fn set_data(
        &self,
        train_images: Vec<u8>,
        train_labels: Vec<u8>,
        test_images: Vec<u8>,
        test_labels: Vec<u8>,
    ) -> Result<String, JsError> {
        let mut inner = self.inner()?;
        let (train, shape) =
            Dataset::from_idx("train images", &train_images, "train labels", &train_labels)
                .map_err(err)?;
        let (test, test_shape) =
            Dataset::from_idx("test images", &test_images, "test labels", &test_labels)
                .map_err(err)?;
        if shape != test_shape {
            return Err(err(format!(
                "the training images are {shape:?}, the test images {test_shape:?}"
            )));
        }
        inner.data = Splits::new("files", train, test, Some(shape), None).map_err(err)?;
        inner.trainer = None;
        Ok(format!(
            "{} train / {} test images",
            inner.data.train.len(),
            inner.data.test.len()
        ))
    }

    /// Replaces the data with one `.npz` archive or CSV table (by `name`'s extension): cut 80/20
    /// where it has no test split, float features standardised. Returns what it holds.
    pub fn set_file(&self, name: String, bytes: Vec<u8>) -> Result<String, JsError> {
        let mut inner = self.inner()?;
        let lower = name.to_lowercase();
        let mut data = if lower.ends_with(".npz") {
            let arrays = numpy::read_npz(&name, &bytes).map_err(err)?;
            numpy::splits(&name, arrays, TEST_FRACTION).map_err(err)?
        } else if lower.ends_with(".csv") {
            let table = csv_table::read(&name, &bytes, None, None).map_err(err)?;
            Splits::cut(&name, table.data, TEST_FRACTION, None, table.names).map_err(err)?
        } else {
            return Err(err(format!(
                "{name}: pick an .npz archive, a .csv table, or the four IDX files"
            )));
        };
        if data.spec.input == Input::Floats {
            data.standardize(None).map_err(err)?;
        }
        inner.data = data;
        inner.trainer = None;
        let spec = &inner.data.spec;
        Ok(format!(
            "{} train / {} test samples, {} features, {} classes",
            inner.data.train.len(),
            inner.data.test.len(),
            spec.features,
            spec.classes
        ))
    }

    /// Whether the data is 28x28 grey images: the drawing canvas and the digit grid need them.
    pub fn digit_data(&self) -> Result<bool, JsError> {
        Ok(self.inner()?.data.spec.is_digit_image())
    }

    /// The class names of the data (numbers where it has none).
    pub fn class_names(&self) -> Result<Vec<String>, JsError> {
        let inner = self.inner()?;
        let spec = &inner.data.spec;
        Ok((0..spec.classes).map(|c| spec.class_name(c)).collect())
    }

    /// Starts a new run (dropping the current one) with these settings; `activation` (relu,
    /// leaky-relu, tanh, sigmoid, gelu) may be left out: ReLU.
    // The borrow is held across awaits on purpose: it is the "one call at a time" lock.
    #[allow(clippy::await_holding_refcell_ref)]
    pub async fn configure(
        &self,
        hidden: String,
        batch: u32,
        lr: f32,
        optimizer: String,
        epochs: u32,
        activation: Option<String>,
    ) -> Result<(), JsError> {
        let mut inner = self.inner()?;
        let activation: Activation = match activation {
            Some(name) => name.parse().map_err(field_err)?,
            None => Activation::default(),
        };
        let hidden = hidden.parse::<Architecture>().map_err(field_err)?;
        let kind: OptimizerKind = optimizer.parse().map_err(field_err)?;
        let mut opt = OptimizerConfig::new(kind);
        opt.lr = lr;
        let config = TrainConfig {
            hidden: hidden.hidden().to_vec(),
            activation,
            epochs: epochs as usize,
            batch: batch as usize,
            optimizer: opt,
            schedule: Schedule::Cosine,
            seed: 1,
            // The browser keeps f32: WebGPU has no cooperative matrices.
            precision: gpumlp::Precision::F32,
        };
        config.validate().map_err(field_err)?;
        // The data decides the network's ends.
        let arch = config.architecture(&inner.data.spec).map_err(field_err)?;
        let backend: Box<dyn Backend> = match &inner.adapter {
            Some(adapter) => {
                let ctx = GpuContext::new(adapter).await.map_err(err)?;
                // WebGPU does not say what kind of device it is; the page's adapter label does
                // (a software rasterizer wants the GEMM's largest tiles: see GemmTuning).
                if inner.backend_label.to_lowercase().contains("swiftshader") {
                    ctx.tuning.lock().map_err(err)?.software = true;
                }
                *self.gpu.borrow_mut() = Some(ctx.clone());
                Box::new(GpuBackend::new(ctx, &arch).map_err(err)?)
            }
            None => Box::new(CpuBackend::new(&arch)),
        };
        inner.trainer = Some(Trainer::new(config, backend, &inner.data).map_err(err)?);
        Ok(())
    }

    /// Trains at most `max_steps` steps. When that ends an epoch, evaluates on the test set,
    /// refreshes the model predictions use, and returns
    /// `[epoch, train_loss, train_accuracy, test_loss, test_accuracy, lr]`; else an empty array.
    #[allow(clippy::await_holding_refcell_ref)]
    pub async fn train(&self, max_steps: u32) -> Result<Vec<f64>, JsError> {
        let mut inner = self.inner()?;
        let inner = &mut *inner;
        let trainer = inner
            .trainer
            .as_mut()
            .ok_or_else(|| err("configure a run first"))?;
        if !trainer
            .advance(max_steps as usize, &mut |_, _| {})
            .await
            .map_err(err)?
        {
            return Ok(Vec::new());
        }
        let epoch = trainer.finish_epoch().await.map_err(err)?;
        let test = trainer.evaluate().await.map_err(err)?;
        // The whole state, so a run whose GPU is lost can continue from here on the CPU.
        let mut model = trainer.checkpoint().await.map_err(err)?;
        model.name = "trained".into();
        inner.model = Some(model);
        Ok(vec![
            epoch.epoch as f64,
            epoch.train.loss(),
            epoch.train.accuracy(),
            test.loss(),
            test.accuracy(),
            epoch.lr as f64,
        ])
    }

    /// Continues the run on the CPU backend from its last finished epoch: what the page offers
    /// when the GPU fails (a lost device, a tab losing its adapter). Returns the backend text.
    pub fn continue_on_cpu(&self) -> Result<String, JsError> {
        let mut inner = self.inner()?;
        let inner = &mut *inner;
        let model = inner
            .model
            .clone()
            .filter(|m| m.training.is_some())
            .ok_or_else(|| err("no finished epoch to continue from: start again"))?;
        let epochs = inner.trainer.as_ref().map_or(1, |t| t.config.epochs);
        let backend = Box::new(CpuBackend::new(&model.architecture));
        let trainer = Trainer::resume(&model, epochs, backend, &inner.data).map_err(err)?;
        let done = trainer.epoch;
        inner.trainer = Some(trainer);
        inner.adapter = None;
        *self.gpu.borrow_mut() = None;
        inner.backend_label = format!("cpu: continuing from epoch {done} after the GPU failed");
        Ok(inner.backend_label.clone())
    }

    /// For the tests: loses the GPU device as a driver reset would.
    pub fn lose_device_for_test(&self) -> Result<(), JsError> {
        let gpu = self.gpu.borrow();
        let gpu = gpu.as_ref().ok_or_else(|| err("the run is not on a GPU"))?;
        gpu.device.destroy();
        Ok(())
    }

    /// `[steps done, steps per epoch, epochs done, epochs]` of the run (zeros before one).
    pub fn progress(&self) -> Result<Vec<u32>, JsError> {
        let inner = self.inner()?;
        Ok(match &inner.trainer {
            Some(t) => {
                let (done, total) = t.epoch_progress();
                vec![
                    done as u32,
                    total as u32,
                    t.epoch as u32,
                    t.config.epochs as u32,
                ]
            }
            None => vec![0; 4],
        })
    }

    /// Samples in the training set.
    pub fn train_count(&self) -> Result<u32, JsError> {
        Ok(self.inner()?.data.train.len() as u32)
    }

    /// The 784 pixels of test digit `i`.
    pub fn test_image(&self, i: u32) -> Result<Vec<u8>, JsError> {
        let inner = self.inner()?;
        let test = &inner.data.test;
        if !inner.data.spec.is_digit_image() {
            return Err(err("the data is not 28x28 grey images"));
        }
        if i as usize >= test.len() {
            return Err(err(format!(
                "test digit {i} is past the {} there are",
                test.len()
            )));
        }
        Ok(test.image(i as usize).to_vec())
    }

    /// The labels of the first `count` test samples.
    pub fn test_labels(&self, count: u32) -> Result<Vec<u32>, JsError> {
        let inner = self.inner()?;
        let n = (count as usize).min(inner.data.test.len());
        Ok(inner.data.test.labels[..n].to_vec())
    }

    /// The model's classes for the first `count` test samples (empty before there is a model,
    /// or where the model was made for other data).
    pub fn predict_test(&self, count: u32) -> Result<Vec<u32>, JsError> {
        let inner = self.inner()?;
        let Some(model) = &inner.model else {
            return Ok(Vec::new());
        };
        if model
            .data
            .accepts(&inner.data.spec, &inner.data.name)
            .is_err()
        {
            return Ok(Vec::new());
        }
        let n = (count as usize).min(inner.data.test.len());
        let features: Features = inner.data.test.select(&(0..n).collect::<Vec<_>>()).features;
        let probabilities =
            probabilities(&model.architecture, &model.params, features).map_err(err)?;
        let classes = model.data.classes;
        Ok(probabilities
            .chunks(classes)
            .map(|p| argmax(p) as u32)
            .collect())
    }

    /// Class probabilities for a drawing (RGBA pixels of a `width` x `height` canvas; transparent
    /// counts as white paper), prepared as MNIST digits were. Empty before there is a model.
    pub fn predict_drawing(
        &self,
        rgba: Vec<u8>,
        width: u32,
        height: u32,
    ) -> Result<Vec<f32>, JsError> {
        let inner = self.inner()?;
        let Some(model) = &inner.model else {
            return Ok(Vec::new());
        };
        if !model.data.is_digit_image() {
            return Err(err(format!(
                "drawing needs a model of 28x28 grey digits; this one reads {} features",
                model.data.features
            )));
        }
        if rgba.len() != 4 * (width * height) as usize {
            return Err(err("the drawing's pixels do not match its size"));
        }
        let digit = digit_from_luma(width, height, &luma_over_white(&rgba)).map_err(err)?;
        let digit = model
            .data
            .prepare("the drawing", Features::Bytes(digit))
            .map_err(err)?;
        probabilities(&model.architecture, &model.params, digit).map_err(err)
    }

    /// The model predictions use, as a safetensors file (the native program reads it too).
    pub fn save(&self) -> Result<Vec<u8>, JsError> {
        let inner = self.inner()?;
        let model = inner
            .model
            .as_ref()
            .ok_or_else(|| err("no model yet: train an epoch or load a file"))?;
        model.to_bytes().map_err(err)
    }

    /// Loads a safetensors model (one written by `gpumlp train --save`, or by `save`) for
    /// predictions; returns its architecture as text.
    pub fn load(&self, bytes: Vec<u8>) -> Result<String, JsError> {
        let mut inner = self.inner()?;
        let model = Checkpoint::from_bytes("the model file", &bytes).map_err(err)?;
        let name = model.architecture.to_string();
        inner.model = Some(model);
        Ok(name)
    }

    /// Whether a model is there for predictions.
    pub fn has_model(&self) -> Result<bool, JsError> {
        Ok(self.inner()?.model.is_some())
    }
}

/// The share of a single file held out for testing (as `gpumlp train` does by default).
const TEST_FRACTION: f64 = 0.2;

/// Panics show up in the browser console with their message (wasm otherwise says "unreachable").
fn console_panic_hook() {
    #[cfg(target_arch = "wasm32")]
    std::panic::set_hook(Box::new(|info| {
        web_sys::console::error_1(&info.to_string().into());
    }));
}
