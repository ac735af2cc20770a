// Headless Chromium (Debian's) with WebGPU, driven by Playwright (which gives it a fresh
// profile), and the demo served on 127.0.0.1: shared by the tests and the benchmark.
import { chromium } from 'playwright-core';
import { serve } from './server.mjs';

export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';

/// Starts the server (and a second one without the cross-origin isolation headers, as a plain
/// static host serves) and the browser; returns { url, plainUrl, browser, close }.
export async function start() {
  const server = await serve(0);
  const plain = await serve(0, { isolate: false });
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--enable-unsafe-webgpu', '--no-sandbox', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
  return {
    url: server.url,
    plainUrl: plain.url,
    browser,
    close: async () => { await browser.close(); server.close(); plain.close(); },
  };
}

/// Opens the demo with `query`, waits for its status to leave `training`, returns the page.
export async function train(browser, url, query, timeout = 240_000) {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(`${url}?${query}`);
  await page.waitForFunction(() => {
    const s = document.getElementById('status').textContent;
    return s === 'done' || s.startsWith('error');
  }, null, { timeout, polling: 200 });
  page.errors = errors;
  return page;
}

export const text = (page, id) => page.locator(`#${id}`).textContent();
