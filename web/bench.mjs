// The in-browser benchmark: 784-128-10, batch 128, Adam, on the 8,000 sample digits, on the CPU
// fallback (wasm SIMD) and on WebGPU, in headless Chromium. Two epochs each; the page reports
// the second (warm) epoch's time, from its first step to its stats, and samples/s from it.
//   web/build.sh && (cd web && npm run bench)
import { start, train, text } from './browser.mjs';

const session = await start();
try {
  for (const backend of ['cpu', 'webgpu']) {
    const page = await train(session.browser, session.url,
      `backend=${backend}&hidden=128&batch=128&lr=0.001&optimizer=adam&epochs=2&autostart=1`);
    const [label, status, rate, epoch, accuracy] = await Promise.all(
      ['backend', 'status', 'samples-per-second', 'epoch-time', 'test-accuracy'].map((id) => text(page, id)));
    console.log(`${label}: ${rate} samples/s, epoch ${epoch}, test accuracy ${accuracy} after 2 epochs (${status})`);
    await page.close();
  }
} finally {
  await session.close();
}
