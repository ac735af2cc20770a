// Refreshes web/screenshot.png, the picture README.md shows: the demo after one epoch on
// WebGPU in headless Chromium. Its own command (`npm run screenshot`, after web/build.sh), so
// running the tests never changes a tracked file.
import { fileURLToPath } from 'node:url';
import { start, train, text } from './browser.mjs';

const session = await start();
try {
  const page = await train(session.browser, session.url, 'backend=webgpu&hidden=64&batch=128&lr=0.002&epochs=1&autostart=1');
  const status = await text(page, 'status');
  if (status !== 'done') throw new Error(`the demo ended with '${status}'`);
  const path = fileURLToPath(new URL('screenshot.png', import.meta.url));
  await page.screenshot({ path, fullPage: true });
  console.log(`wrote ${path} (${await text(page, 'backend')}, test accuracy ${await text(page, 'test-accuracy')})`);
} finally {
  await session.close();
}
