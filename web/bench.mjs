// The in-browser benchmark, in headless Chromium: the CPU fallback's two builds (the
// single-threaded module, and the threaded one on every core the browser reports) and WebGPU,
// side by side in one run, on 784-128-10 and on B1's 784-512-256-10, batch 128, Adam, on the
// 8,000 sample digits, training in the page's worker. Each run is two epochs; the page reports
// the second (warm) epoch's time, from its first step to its stats, and samples/s from it. The
// two CPU builds run alternately, `ROUNDS` times each, so a noisy neighbour hurts both alike; the
// last lines give the ratio of their medians.
//   web/build.sh && (cd web && npm run bench)
import { start, train, text } from './browser.mjs';

const ROUNDS = Number(process.env.ROUNDS ?? 5);
const median = (v) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];

const session = await start();
try {
  for (const hidden of ['128', '512,256']) {
    const net = `784-${hidden.replace(',', '-')}-10`;
    const run = async (query) => {
      const page = await train(session.browser, session.url,
        `${query}&hidden=${hidden}&batch=128&lr=0.001&optimizer=adam&epochs=2&autostart=1`);
      const [label, status, rate, epoch, accuracy] = await Promise.all(
        ['backend', 'status', 'samples-per-second', 'epoch-time', 'test-accuracy'].map((id) => text(page, id)));
      await page.close();
      return { label, status, rate: Number(rate), epoch, accuracy };
    };
    const builds = { 'cpu, 1 thread': 'backend=cpu&threads=1', 'cpu, threaded': 'backend=cpu' };
    const rates = {};
    let last = {};
    for (let round = 0; round < ROUNDS; round++) {
      for (const [name, query] of Object.entries(builds)) {
        last[name] = await run(query);
        (rates[name] ??= []).push(last[name].rate);
      }
    }
    for (const name of Object.keys(builds)) {
      const r = last[name];
      console.log(`${net}, ${name} [${r.label}]: median ${median(rates[name])} samples/s (${rates[name].join(', ')}), test accuracy ${r.accuracy} after 2 epochs (${r.status})`);
    }
    const gpu = await run('backend=webgpu');
    console.log(`${net}, webgpu [${gpu.label}]: ${gpu.rate} samples/s, epoch ${gpu.epoch}, test accuracy ${gpu.accuracy} after 2 epochs (${gpu.status})`);
    const ratio = median(rates['cpu, threaded']) / median(rates['cpu, 1 thread']);
    console.log(`${net}: the threaded CPU build ${ratio.toFixed(2)}x the single-threaded one (medians of ${ROUNDS} alternating runs)`);
  }
} finally {
  await session.close();
}
