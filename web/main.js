// The demo page: settings, the training loop (a slice of steps, then back to the browser),
// charts, the grid of test digits, the drawing canvas, and saving and loading models.
//
// Scripted use (tests, other tools) relies on: URL parameters hidden, batch, lr, epochs,
// optimizer, activation, backend=webgpu|cpu, autostart=1; element ids backend, start, status, epoch,
// test-accuracy, draw, prediction, continue-cpu (shown when a GPU run fails after an epoch); and
// window.gpumlp = { demo, predictDrawing }.

import init, { Demo } from './pkg/gpumlp_web.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const GRID = 48;
/// Wall time one training slice should take before yielding to the page.
const SLICE_MS = 30;

let demo;
let running = false;
let history = [];
let stepsPerSlice = 4;

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

function buildGrid() {
  const grid = $('grid');
  grid.innerHTML = '';
  const digits = demo.digit_data();
  // The grid and the drawing canvas show 28x28 grey images; other data says why they are off.
  $('draw-note').textContent = digits ? '' : 'drawing is for 28x28 grey digit data; this data is not';
  $('draw').style.opacity = digits ? 1 : 0.3;
  if (!digits) {
    grid.textContent = 'the grid shows 28x28 grey test images; this data is not images';
    return;
  }
  for (let i = 0; i < GRID; i++) {
    const cell = document.createElement('div');
    const c = document.createElement('canvas');
    c.width = 28; c.height = 28;
    const pixels = demo.test_image(i);
    const img = c.getContext('2d').createImageData(28, 28);
    pixels.forEach((v, p) => { img.data.set([255 - v, 255 - v, 255 - v, 255], 4 * p); });
    c.getContext('2d').putImageData(img, 0, 0);
    const label = document.createElement('span');
    label.textContent = '?';
    cell.append(c, document.createElement('br'), label);
    grid.append(cell);
  }
}

function refreshGrid() {
  if (!demo.digit_data()) return;
  const predicted = demo.predict_test(GRID);
  const truth = demo.test_labels(GRID);
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

async function train() {
  if (running) return;
  const progress = demo.progress();
  if (progress[3] === 0 || progress[2] >= progress[3]) {
    const s = settings();
    await demo.configure(s.hidden, s.batch, s.lr, s.optimizer, s.epochs, s.activation);
    history = [];
    drawCharts();
  }
  running = true;
  setStatus('training');
  let epochStart = performance.now();
  while (running) {
    const t0 = performance.now();
    const result = await demo.train(stepsPerSlice);
    const took = performance.now() - t0;
    // Keep each slice near SLICE_MS so the page stays responsive however fast the device is.
    stepsPerSlice = Math.max(1, Math.min(512, Math.round(stepsPerSlice * (took > 0 ? SLICE_MS / took : 2))));
    const [done, total, epoch, epochs] = demo.progress();
    $('step').textContent = `${done}/${total}`;
    $('epoch').textContent = `${epoch}/${epochs}`;
    if (result.length > 0) {
      const seconds = (performance.now() - epochStart) / 1000;
      const [n, trainLoss, trainAccuracy, testLoss, testAccuracy] = result;
      history.push({ epoch: n, trainLoss, trainAccuracy, testLoss, testAccuracy, seconds });
      $('test-accuracy').textContent = testAccuracy.toFixed(4);
      $('train-loss').textContent = trainLoss.toFixed(4);
      $('epoch-time').textContent = `${seconds.toFixed(2)} s`;
      $('samples-per-second').textContent = Math.round(demo.train_count() / seconds);
      drawCharts();
      refreshGrid();
      predictDrawing();
      if (epoch >= epochs) {
        running = false;
        setStatus('done');
        return;
      }
      epochStart = performance.now();
    }
    await new Promise((resolve) => setTimeout(resolve, 0)); // let the page breathe
  }
  setStatus('idle');
}

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

function predictDrawing() {
  const image = pen.getImageData(0, 0, draw.width, draw.height);
  let probs;
  try {
    probs = demo.predict_drawing(new Uint8Array(image.data.buffer), draw.width, draw.height);
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
  await init();
  const want = params.get('backend') === 'cpu' || !navigator.gpu ? 'cpu' : 'webgpu';
  const [images, labels] = await Promise.all([
    fetchBytes('../data/mnist-sample/t10k-images-idx3-ubyte.gz'),
    fetchBytes('../data/mnist-sample/t10k-labels-idx1-ubyte.gz'),
  ]);
  demo = await Demo.create(images, labels, want, want === 'cpu' ? '' : await adapterLabel());
  let label = demo.backend();
  if (!navigator.gpu && params.get('backend') !== 'cpu') label = 'cpu: this browser has no WebGPU (navigator.gpu)';
  $('backend').textContent = label;
  window.gpumlp = { demo, predictDrawing };
  buildGrid();
  clearDrawing();

  $('start').onclick = () => train().catch(fail);
  $('pause').onclick = () => { running = false; };
  $('reset').onclick = async () => {
    running = false;
    await new Promise((r) => setTimeout(r, 50));
    const s = settings();
    await demo.configure(s.hidden, s.batch, s.lr, s.optimizer, s.epochs, s.activation).catch(fail);
    history = []; drawCharts(); setStatus('idle');
    $('epoch').textContent = '0/0'; $('step').textContent = '0/0'; $('test-accuracy').textContent = '0';
  };
  $('clear').onclick = clearDrawing;
  $('continue-cpu').onclick = () => {
    try {
      $('backend').textContent = demo.continue_on_cpu();
      $('continue-cpu').hidden = true;
      train().catch(fail);
    } catch (e) { fail(e); }
  };
  $('save').onclick = () => {
    try {
      const bytes = demo.save();
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
      const sizes = demo.load(new Uint8Array(await file.arrayBuffer()));
      setStatus(`idle`);
      $('data-info').textContent = `loaded model ${sizes}`;
      refreshGrid();
      predictDrawing();
    } catch (err) { fail(err); }
  };
  $('data-files').onchange = async (e) => {
    const files = [...e.target.files];
    if (files.length === 1 && /\.(npz|csv)$/i.test(files[0].name)) {
      try {
        $('data-info').textContent = demo.set_file(files[0].name, new Uint8Array(await files[0].arrayBuffer()));
        buildGrid();
      } catch (err) { fail(err); }
      return;
    }
    const find = (stem) => files.find((f) => f.name.startsWith(stem));
    const parts = ['train-images', 'train-labels', 't10k-images', 't10k-labels'].map(find);
    if (parts.some((f) => !f)) { fail(new Error('pick the four IDX files (train-images, train-labels, t10k-images, t10k-labels), or one .npz or .csv file')); return; }
    try {
      const bytes = await Promise.all(parts.map(async (f) => new Uint8Array(await f.arrayBuffer())));
      $('data-info').textContent = demo.set_data(...bytes);
      buildGrid();
    } catch (err) { fail(err); }
  };
  setStatus('idle');
  if (params.get('autostart') === '1') train().catch(fail);
}

function fail(e) {
  running = false;
  setStatus(`error: ${e?.message ?? e}`);
  console.error(e);
  // A run on the GPU that fails after a finished epoch (a lost device) can go on on the CPU.
  const progress = demo?.progress?.() ?? [0, 0, 0, 0];
  if ($('backend').textContent.startsWith('webgpu') && progress[2] > 0 && progress[2] < progress[3]) {
    $('continue-cpu').hidden = false;
  }
}

main().catch(fail);
