// The demo's training side, in a dedicated Web Worker, so that the page's thread only draws: the
// wasm module, the Demo (data, device, run, model) and the training loop. WebGPU works here as
// on the page; the CPU backend may block on its thread pool here, which a page's main thread may
// not do.
//
// Which module: the threaded build (web/pkg-threads: the CPU backend on a rayon pool of workers
// through wasm-bindgen-rayon) where the page is cross-origin isolated and the page did not ask
// for `threads=1`; otherwise the single-threaded build (web/pkg). The backend text says which,
// and why: `cpu: 2 threads`, `cpu: 1 thread (page not cross-origin isolated)`.
//
// Messages in: {id, method, args}. `init` loads the module and creates the Demo, `start` and
// `pause` drive the training loop, any other method is the Demo's own. Out: {id, result} or
// {id, error}; while training, {event: 'slice', progress, epoch?}, then {event: 'done' |
// 'paused' | 'error'}.

/// Wall time of one training slice: between slices the worker answers the page's calls (a
/// prediction, a pause), so this bounds how long they wait.
const SLICE_MS = 60;

let pkg;
let demo;
let running = false;
let stepsPerSlice = 4;
let queue = Promise.resolve();

/// Runs `f` after every call queued before it: the Demo takes one call at a time.
function serial(f) {
  const run = queue.then(f, f);
  queue = run.catch(() => {});
  return run;
}

/// Loads a module; returns the thread text for the backend label.
async function load(threads) {
  const isolated = self.crossOriginIsolated && typeof SharedArrayBuffer === 'function';
  if (isolated && threads !== '1') {
    try {
      pkg = await import('./pkg-threads/gpumlp_web.js');
      await pkg.default();
      const n = Math.max(1, Math.min(Number(threads) || navigator.hardwareConcurrency || 1, 64));
      await pkg.initThreadPool(n);
      const got = pkg.cpu_threads();
      return `${got} thread${got === 1 ? '' : 's'}`;
    } catch (e) {
      console.warn('the threaded module did not load; training on one thread', e);
      pkg = await import('./pkg/gpumlp_web.js');
      await pkg.default();
      return `1 thread (the threaded build did not load: ${e?.message ?? e})`;
    }
  }
  pkg = await import('./pkg/gpumlp_web.js');
  await pkg.default();
  if (!isolated) return '1 thread (page not cross-origin isolated)';
  return '1 thread (threads=1)';
}

async function init(want, adapterLabel, threads, images, labels) {
  const threadText = await load(threads);
  demo = await pkg.Demo.create(images, labels, want, adapterLabel);
  return { backend: demo.backend(), threads: threadText };
}

async function trainLoop() {
  running = true;
  let epochStart = performance.now();
  try {
    while (running) {
      const t0 = performance.now();
      const result = await serial(() => demo.train(stepsPerSlice));
      const took = performance.now() - t0;
      stepsPerSlice = Math.max(1, Math.min(4096, Math.round(stepsPerSlice * (took > 0 ? SLICE_MS / took : 2))));
      const progress = await serial(() => demo.progress());
      let epoch;
      if (result.length > 0) {
        const seconds = (performance.now() - epochStart) / 1000;
        const [n, trainLoss, trainAccuracy, testLoss, testAccuracy] = result;
        const samples = await serial(() => demo.train_count());
        epoch = { epoch: n, trainLoss, trainAccuracy, testLoss, testAccuracy, seconds, samplesPerSecond: samples / seconds };
        epochStart = performance.now();
      }
      postMessage({ event: 'slice', progress, epoch });
      if (epoch && progress[2] >= progress[3]) {
        running = false;
        postMessage({ event: 'done' });
        return;
      }
      // Let the page's calls in.
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
    postMessage({ event: 'paused' });
  } catch (e) {
    running = false;
    const progress = await serial(() => demo.progress()).catch(() => [0, 0, 0, 0]);
    postMessage({ event: 'error', message: String(e?.message ?? e), progress });
  }
}

self.onmessage = async ({ data: { id, method, args = [] } }) => {
  try {
    let result;
    if (method === 'init') {
      result = await init(...args);
    } else if (method === 'start') {
      if (!running) trainLoop();
    } else if (method === 'pause') {
      running = false;
    } else if (typeof demo?.[method] === 'function' && !method.startsWith('_') && method !== 'constructor') {
      result = await serial(() => demo[method](...args));
    } else {
      throw new Error(`no such call: ${method}`);
    }
    postMessage({ id, result });
  } catch (e) {
    postMessage({ id, error: String(e?.message ?? e) });
  }
};
