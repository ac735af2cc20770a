// The demo page: settings, charts, the grid of test digits, the drawing canvas, and saving and
// loading models. Training runs in a Web Worker (worker.js), which holds the wasm module and the
// Demo; this page only draws, and talks to the worker by messages.
//
// Scripted use (tests, other tools) relies on: URL parameters hidden, batch, lr, epochs,
// optimizer, activation, backend=webgpu|cpu, threads=N (1: the single-threaded build),
// autostart=1; element ids backend, start, status, epoch, test-accuracy, draw, prediction,
// continue-cpu (shown when a GPU run fails after an epoch); and window.gpumlp = { demo,
// predictDrawing }, where demo has the Demo's methods (web/src/lib.rs), each returning a Promise
// of what the method returns, run in the worker in order.

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const GRID = 48;

const worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
const pending = new Map();
let nextId = 0;
/// Calls `method` in the worker; resolves to its result, rejects with its error.
function call(method, ...args) {
  const id = nextId++;
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject });
    worker.postMessage({ id, method, args });
  });
}
/// The Demo's methods, each a call into the worker.
const demo = new Proxy({}, {
  // Not a thenable: `await demo` is the proxy itself.
  get: (_, method) => (typeof method !== 'string' || method === 'then' ? undefined : (...args) => call(method, ...args)),
});

let running = false;
let history = [];

function setStatus(s) { $('status').textContent = s; }

async function fetchBytes(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return new Uint8Array(await r.arrayBuffer());
}

async function adapterLabel() {
  try {
    const adapter = await navigator.gpu?.requestAdapter();
    const info = adapter?.info;
    return info ? [info.description, info.vendor, info.architecture].filter(Boolean).join(' ') : '';
  } catch { return ''; }
}

function drawChart(canvas, values, lo, hi, color) {
  const ctx = canvas.getContext('2d');
  const { width: w, height: h } = canvas;
  ctx.clearRect(0, 0, w, h);
  ctx.strokeStyle = '#eee';
  for (let i = 1; i < 4; i++) { ctx.beginPath(); ctx.moveTo(0, h * i / 4); ctx.lineTo(w, h * i / 4); ctx.stroke(); }
  ctx.fillStyle = '#666';
  ctx.fillText(hi.toFixed(3), 2, 10);
  ctx.fillText(lo.toFixed(3), 2, h - 2);
  if (values.length === 0) return;
  ctx.strokeStyle = color;
  ctx.lineWidth = 2;
  ctx.beginPath();
  values.forEach((v, i) => {
    const x = values.length === 1 ? w / 2 : 30 + (w - 40) * i / (values.length - 1);
    const y = h - 4 - (h - 8) * (v - lo) / Math.max(hi - lo, 1e-9);
    if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    ctx.fillRect(x - 2, y - 2, 4, 4);
  });
  ctx.stroke();
}

function drawCharts() {
  const losses = history.map((e) => e.trainLoss);
  const accs = history.map((e) => e.testAccuracy);
  drawChart($('loss-chart'), losses, 0, Math.max(...losses, 0.1), '#26a');
  drawChart($('accuracy-chart'), accs, Math.min(...accs, 1) - 0.01, 1, '#d62');
}

async function buildGrid() {
  const grid = $('grid');
  grid.innerHTML = '';
  const digits = await demo.digit_data();
  // The grid and the drawing canvas show 28x28 grey images; other data says why they are off.
  $('draw-note').textContent = digits ? '' : 'drawing is for 28x28 grey digit data; this data is not';
  $('draw').style.opacity = digits ? 1 : 0.3;
  if (!digits) {
    grid.textContent = 'the grid shows 28x28 grey test images; this data is not images';
    return;
  }
  const images = await Promise.all([...Array(GRID).keys()].map((i) => demo.test_image(i)));
  for (let i = 0; i < GRID; i++) {
    const cell = document.createElement('div');
    const c = document.createElement('canvas');
    c.width = 28; c.height = 28;
    const pixels = images[i];
    const img = c.getContext('2d').createImageData(28, 28);
    pixels.forEach((v, p) => { img.data.set([255 - v, 255 - v, 255 - v, 255], 4 * p); });
    c.getContext('2d').putImageData(img, 0, 0);
    const label = document.createElement('span');
    label.textContent = '?';
    cell.append(c, document.createElement('br'), label);
    grid.append(cell);
  }
}

async function refreshGrid() {
  if (!await demo.digit_data()) return;
  const [predicted, truth] = await Promise.all([demo.predict_test(GRID), demo.test_labels(GRID)]);
  [...$('grid').children].forEach((cell, i) => {
    if (predicted.length === 0) return;
    cell.lastChild.textContent = `${predicted[i]}`;
    cell.classList.toggle('wrong', predicted[i] !== truth[i]);
  });
}

function settings() {
  return {
    hidden: $('hidden').value,
    batch: Number($('batch').value),
    lr: Number($('lr').value),
    optimizer: $('optimizer').value,
    epochs: Number($('epochs').value),
    activation: $('activation').value,
  };
}

/// Starts (or resumes) training in the worker; what it reports arrives in `onEvent`.
async function train() {
  if (running) return;
  const progress = await demo.progress();
  if (progress[3] === 0 || progress[2] >= progress[3]) {
    const s = settings();
    await demo.configure(s.hidden, s.batch, s.lr, s.optimizer, s.epochs, s.activation);
    history = [];
    drawCharts();
  }
  running = true;
  setStatus('training');
  await call('start');
}

/// What the worker's training loop reports: a slice done (with an epoch's figures when it ended
/// one), or the loop's end.
function onEvent({ event, progress, epoch, message }) {
  if (progress) {
    const [done, total, epochDone, epochs] = progress;
    $('step').textContent = `${done}/${total}`;
    $('epoch').textContent = `${epochDone}/${epochs}`;
  }
  if (epoch) {
    history.push(epoch);
    $('test-accuracy').textContent = epoch.testAccuracy.toFixed(4);
    $('train-loss').textContent = epoch.trainLoss.toFixed(4);
    $('epoch-time').textContent = `${epoch.seconds.toFixed(2)} s`;
    $('samples-per-second').textContent = Math.round(epoch.samplesPerSecond);
    drawCharts();
    refreshGrid().catch(fail);
    predictDrawing();
  }
  if (event === 'done') { running = false; setStatus('done'); }
  if (event === 'paused') { running = false; setStatus('idle'); }
  if (event === 'error') fail(new Error(message), progress);
}

worker.onmessage = ({ data }) => {
  if (data.event) return onEvent(data);
  const { id, result, error } = data;
  const waiting = pending.get(id);
  pending.delete(id);
  if (error !== undefined) waiting?.reject(new Error(error)); else waiting?.resolve(result);
};
worker.onerror = (e) => fail(new Error(`the training worker failed: ${e.message ?? e}`));

// Drawing: black strokes on white, read back on every stroke.
const draw = $('draw');
const pen = draw.getContext('2d');
function clearDrawing() {
  pen.fillStyle = '#fff';
  pen.fillRect(0, 0, draw.width, draw.height);
  $('prediction').textContent = '-';
  $('probs').innerHTML = '';
}
let drawing = false;
function at(e) {
  const r = draw.getBoundingClientRect();
  return [(e.clientX - r.left) * draw.width / r.width, (e.clientY - r.top) * draw.height / r.height];
}
draw.addEventListener('pointerdown', (e) => { drawing = true; pen.beginPath(); pen.moveTo(...at(e)); });
draw.addEventListener('pointermove', (e) => {
  if (!drawing) return;
  pen.lineWidth = 20; pen.lineCap = 'round'; pen.strokeStyle = '#000';
  pen.lineTo(...at(e)); pen.stroke();
});
const endStroke = () => { if (drawing) { drawing = false; predictDrawing(); } };
draw.addEventListener('pointerup', endStroke);
draw.addEventListener('pointerleave', endStroke);

/// Asks the worker for the drawing's class probabilities and shows them; resolves when shown.
async function predictDrawing() {
  const image = pen.getImageData(0, 0, draw.width, draw.height);
  let probs;
  try {
    probs = await demo.predict_drawing(new Uint8Array(image.data.buffer), draw.width, draw.height);
  } catch (e) {
    $('prediction').textContent = '-';
    const message = String(e.message ?? e);
    $('probs').textContent = message.startsWith('no digit found') ? 'draw a digit in the box' : message;
    return;
  }
  if (probs.length === 0) { $('probs').textContent = 'train an epoch or load a model first'; return; }
  const best = probs.indexOf(Math.max(...probs));
  $('prediction').textContent = `${best}`;
  $('probs').innerHTML = [...probs].map((p, c) =>
    `<div>${c} <span class="bar" style="width:${Math.round(120 * p)}px"></span> ${p.toFixed(3)}</div>`).join('');
}

async function main() {
  for (const [name, id] of [['hidden', 'hidden'], ['batch', 'batch'], ['lr', 'lr'], ['epochs', 'epochs'], ['optimizer', 'optimizer'], ['activation', 'activation']]) {
    if (params.has(name)) $(id).value = params.get(name);
  }
  const want = params.get('backend') === 'cpu' || !navigator.gpu ? 'cpu' : 'webgpu';
  const [images, labels] = await Promise.all([
    fetchBytes('../data/mnist-sample/t10k-images-idx3-ubyte.gz'),
    fetchBytes('../data/mnist-sample/t10k-labels-idx1-ubyte.gz'),
  ]);
  const made = await call('init', want, want === 'cpu' ? '' : await adapterLabel(), params.get('threads') ?? '', images, labels);
  threadText = made.threads;
  let label = made.backend;
  if (!navigator.gpu && params.get('backend') !== 'cpu') label = 'cpu: this browser has no WebGPU (navigator.gpu)';
  showBackend(label);
  window.gpumlp = { demo, predictDrawing };
  await buildGrid();
  clearDrawing();

  $('start').onclick = () => train().catch(fail);
  $('pause').onclick = () => { call('pause').catch(fail); };
  $('reset').onclick = async () => {
    await call('pause');
    running = false;
    const s = settings();
    await demo.configure(s.hidden, s.batch, s.lr, s.optimizer, s.epochs, s.activation).catch(fail);
    history = []; drawCharts(); setStatus('idle');
    $('epoch').textContent = '0/0'; $('step').textContent = '0/0'; $('test-accuracy').textContent = '0';
  };
  $('clear').onclick = clearDrawing;
  $('continue-cpu').onclick = async () => {
    // At once, before the worker answers: the error shown is over.
    setStatus('training');
    try {
      showBackend(await demo.continue_on_cpu());
      $('continue-cpu').hidden = true;
      await train();
    } catch (e) { fail(e); }
  };
  $('save').onclick = async () => {
    try {
      const bytes = await demo.save();
      const a = document.createElement('a');
      a.href = URL.createObjectURL(new Blob([bytes], { type: 'application/octet-stream' }));
      a.download = 'gpumlp-model.safetensors';
      a.click();
    } catch (e) { fail(e); }
  };
  $('load-model').onchange = async (e) => {
    const file = e.target.files[0];
    if (!file) return;
    try {
      const sizes = await demo.load(new Uint8Array(await file.arrayBuffer()));
      setStatus(`idle`);
      $('data-info').textContent = `loaded model ${sizes}`;
      await refreshGrid();
      await predictDrawing();
    } catch (err) { fail(err); }
  };
  $('data-files').onchange = async (e) => {
    const files = [...e.target.files];
    if (files.length === 1 && /\.(npz|csv)$/i.test(files[0].name)) {
      try {
        $('data-info').textContent = await demo.set_file(files[0].name, new Uint8Array(await files[0].arrayBuffer()));
        await buildGrid();
      } catch (err) { fail(err); }
      return;
    }
    const find = (stem) => files.find((f) => f.name.startsWith(stem));
    const parts = ['train-images', 'train-labels', 't10k-images', 't10k-labels'].map(find);
    if (parts.some((f) => !f)) { fail(new Error('pick the four IDX files (train-images, train-labels, t10k-images, t10k-labels), or one .npz or .csv file')); return; }
    try {
      const bytes = await Promise.all(parts.map(async (f) => new Uint8Array(await f.arrayBuffer())));
      $('data-info').textContent = await demo.set_data(...bytes);
      await buildGrid();
    } catch (err) { fail(err); }
  };
  setStatus('idle');
  if (params.get('autostart') === '1') train().catch(fail);
}

/// The thread text the worker gave for the CPU backend (`2 threads`, `1 thread (why)`).
let threadText = '';
/// Shows the Demo's backend text, the CPU's with its threads: `cpu: 2 threads (forced by
/// backend=cpu)`, `cpu: 1 thread (page not cross-origin isolated) (...)`.
function showBackend(label) {
  $('backend').textContent = label.startsWith('cpu: ') ? `cpu: ${threadText} (${label.slice(5)})` : label;
}

/// Shows an error; `progress`, where known, says whether a GPU run can go on on the CPU.
function fail(e, progress = [0, 0, 0, 0]) {
  running = false;
  setStatus(`error: ${e?.message ?? e}`);
  console.error(e);
  // A run on the GPU that fails after a finished epoch (a lost device) can go on on the CPU.
  if ($('backend').textContent.startsWith('webgpu') && progress[2] > 0 && progress[2] < progress[3]) {
    $('continue-cpu').hidden = false;
  }
}

main().catch(fail);
