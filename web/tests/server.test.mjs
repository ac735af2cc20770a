// The demo's server (web/server.mjs) against what scanners and mistyped links send: malformed
// percent-encodings, traversals however spelled, NUL bytes, very long paths, other methods and
// requests node's parser cannot read. Each gets its status and one log line, the server keeps
// running, only the page's own files are served, and afterwards the demo still trains.
// Run by `cargo test` with the other browser tests (web/tests/browser.rs).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { chromium } from 'playwright-core';
import { serve } from '../server.mjs';
import { CHROMIUM, train, text } from '../browser.mjs';

let server;
const logged = [];

before(async () => { server = await serve(0, { log: (line) => logged.push(line) }); });
after(() => server?.close());

/// Sends `request` as raw bytes (so nothing normalises the path on the way) and returns the
/// status of the answer, or 0 if the connection closed without one.
function raw(request) {
  const { port } = new URL(server.origin);
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let answer = '';
    socket.setTimeout(5000, () => { socket.destroy(); reject(new Error(`no answer to ${JSON.stringify(request.slice(0, 60))}`)); });
    socket.on('data', (d) => { answer += d; });
    socket.on('error', reject);
    socket.on('close', () => resolve(Number(answer.match(/^HTTP\/1\.1 (\d{3})/)?.[1] ?? 0)));
    socket.write(request); // not end(): a half-closed socket would drop an answer still being read from disk
  });
}

const get = (path, method = 'GET') => raw(`${method} ${path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n`);

test('malformed, traversing, oversized and other-method requests are refused, each with one log line', async () => {
  const cases = [
    ['/%E0%A4%A', 400], // a malformed percent-encoding: the request that took the old server down
    ['/web/%', 400],
    ['/web/%00', 400],
    ['/.git/config', 404],
    ['/web/../.git/config', 404],
    ['/web/%2e%2e/.git/config', 404],
    ['/web/..%2f..%2fCargo.toml', 404],
    ['/web/%2E%2E%5C%2E%2E%5CCargo.toml', 404],
    ['/web\\..\\Cargo.toml', 404],
    ['/Cargo.toml', 404],
    ['/src/lib.rs', 404],
    ['/web/src/lib.rs', 404],
    ['/web/server.mjs', 404],
    ['/web/node_modules/playwright-core/package.json', 404],
    ['/web/pkg/.hidden', 404],
    ['/web/pkg/../../Cargo.toml', 404],
    ['/web/pkg-threads/../../Cargo.toml', 404],
    ['/web/pkg-threads/.hidden', 404],
    ['/target/release/gpumlp', 404],
    ['/data/README.md', 404],
    [`/web/${'a'.repeat(5000)}`, 404],
  ];
  for (const [path, want] of cases) {
    logged.length = 0;
    assert.equal(await get(path), want, path);
    assert.equal(logged.length, 1, `${path}: logged ${JSON.stringify(logged)}`);
    assert.ok(!logged[0].includes('\n') && !/at .*:\d+:\d+/.test(logged[0]), `a stack trace: ${logged[0]}`);
  }
  for (const method of ['POST', 'PUT', 'DELETE', 'OPTIONS', 'TRACE', 'PATCH']) {
    assert.equal(await get('/web/', method), 405, method);
  }
  // Not HTTP at all, and a request line node's parser refuses.
  assert.equal(await raw('hello\r\n\r\n'), 400);
  assert.equal(await raw('GET /web/ HTTP/1.1\r\nhost: x\r\nbad header\r\n\r\n'), 400);
});

test('the page, its worker, both modules and the sample are served, cross-origin isolated; HEAD too; /web redirects', async () => {
  for (const path of ['/web/', '/web/index.html', '/web/main.js', '/web/worker.js', '/web/pkg/gpumlp_web.js',
    '/web/pkg/gpumlp_web_bg.wasm', '/web/pkg-threads/gpumlp_web.js', '/web/pkg-threads/gpumlp_web_bg.wasm',
    '/data/mnist-sample/t10k-images-idx3-ubyte.gz']) {
    assert.equal(await get(path), 200, path);
  }
  for (const path of ['/web/', '/web/worker.js', '/nothing']) {
    const headers = (await fetch(`${server.origin}${path}`)).headers;
    assert.equal(headers.get('cross-origin-opener-policy'), 'same-origin', path);
    assert.equal(headers.get('cross-origin-embedder-policy'), 'require-corp', path);
  }
  assert.equal(await get('/web/', 'HEAD'), 200);
  assert.equal(await get('/web'), 301);
  const r = await fetch(`${server.origin}/data/mnist-sample/t10k-labels-idx1-ubyte.gz`);
  assert.equal(r.headers.get('content-type'), 'application/gzip');
  assert.ok((await r.arrayBuffer()).byteLength > 1000);
});

test('after a burst of bad requests the demo still loads and trains', async () => {
  const burst = [];
  for (let i = 0; i < 200; i++) {
    burst.push(get(['/%E0%A4%A', '/.git/config', `/${'x'.repeat(3000)}`, '/web/%00'][i % 4]));
    burst.push(get('/web/', ['POST', 'DELETE'][i % 2]));
  }
  const statuses = await Promise.all(burst);
  assert.ok(statuses.every((s) => s >= 400 && s < 500), `statuses ${[...new Set(statuses)]}`);
  assert.equal(await get('/web/'), 200);
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  try {
    const page = await train(browser, server.url, 'backend=cpu&hidden=32&epochs=1&autostart=1');
    assert.equal(await text(page, 'status'), 'done', page.errors.join('; '));
    assert.ok(Number(await text(page, 'test-accuracy')) > 0.8);
  } finally {
    await browser.close();
  }
});
