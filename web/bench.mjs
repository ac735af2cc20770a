// The in-browser benchmark, in headless Chromium: the CPU fallback's two builds (the
// single-threaded module, and the threaded one on every core the browser reports) and WebGPU,
// side by side in one run, on 784-128-10 and on B1's 784-512-256-10, batch 128, Adam, on the
// 8,000 sample digits. Two epochs each, training in the page's worker; the page reports the
// second (warm) epoch's time, from its first step to its stats, and samples/s from it; the
// last lines give the threaded build's speed over the single-threaded one's.
//   web/build.sh && (cd web && npm run bench)
import { start, train, text } from './browser.mjs';

const session = await start();
const rates = {};
try {
  for (const hidden of ['128', '512,256']) {
    for (const [name, query] of [['cpu, 1 thread', 'backend=cpu&threads=1'], ['cpu, threaded', 'backend=cpu'], ['webgpu', 'backend=webgpu']]) {
      const page = await train(session.browser, session.url,
        `${query}&hidden=${hidden}&batch=128&lr=0.001&optimizer=adam&epochs=2&autostart=1`);
      const [label, status, rate, epoch, accuracy] = await Promise.all(
        ['backend', 'status', 'samples-per-second', 'epoch-time', 'test-accuracy'].map((id) => text(page, id)));
      rates[`${hidden} ${name}`] = Number(rate);
      console.log(`784-${hidden.replace(',', '-')}-10, ${name} [${label}]: ${rate} samples/s, epoch ${epoch}, test accuracy ${accuracy} after 2 epochs (${status})`);
      await page.close();
    }
  }
  for (const hidden of ['128', '512,256']) {
    const ratio = rates[`${hidden} cpu, threaded`] / rates[`${hidden} cpu, 1 thread`];
    console.log(`784-${hidden.replace(',', '-')}-10: the threaded CPU build ${ratio.toFixed(2)}x the single-threaded one`);
  }
} finally {
  await session.close();
}
