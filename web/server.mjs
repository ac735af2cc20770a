// A static file server for the demo, on 127.0.0.1 only. It serves what the page needs and
// nothing else: the page and its scripts (/web/, /web/main.js, /web/worker.js), the built
// modules (/web/pkg/*, and the threaded build's /web/pkg-threads/*) and the built-in sample
// (/data/mnist-sample/*.gz). Every answer carries the cross-origin isolation headers (COOP
// same-origin, COEP require-corp) that shared memory, and so the threaded build, needs. Every request gets an answer, whatever it
// holds: 400 for a malformed one, 405 for a method other than GET or HEAD, 404 for anything
// else, 500 (the server still running) if reading a file fails oddly; each refusal is logged
// as one line.
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const TYPES = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.mjs': 'text/javascript',
  '.wasm': 'application/wasm', '.css': 'text/css', '.png': 'image/png', '.json': 'application/json',
  '.gz': 'application/gzip',
};
// Longer paths than this are no file of the page's.
const MAX_PATH = 512;
// A file or folder name in web/pkg or the sample's folder: no dot-files, no separators.
const NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/;

/// The file under ROOT that the decoded request path `path` names, or null when it is none of
/// the page's files.
export function pageFile(path) {
  if (path === '/web/' || path === '/web/index.html') return 'web/index.html';
  if (path === '/web/main.js' || path === '/web/worker.js') return path.slice(1);
  const parts = path.split('/');
  // The built module, and what wasm-bindgen puts beside it (snippets/<crate>/...).
  if (parts.length >= 4 && parts.length <= 8 && parts[0] === '' && parts[1] === 'web'
      && (parts[2] === 'pkg' || parts[2] === 'pkg-threads')
      && parts.slice(3).every((p) => NAME.test(p))) {
    return parts.slice(1).join('/');
  }
  if (parts.length === 4 && parts[0] === '' && parts[1] === 'data' && parts[2] === 'mnist-sample'
      && NAME.test(parts[3]) && parts[3].endsWith('.gz')) {
    return `data/mnist-sample/${parts[3]}`;
  }
  return null;
}

class Refusal extends Error {
  constructor(status, why) { super(why); this.status = status; }
}

/// The decoded path of request URL `url`, or a Refusal: 400 where it is malformed.
function requestPath(url) {
  if (typeof url !== 'string' || !url.startsWith('/')) throw new Refusal(400, 'not a path');
  if (url.length > 4 * MAX_PATH) throw new Refusal(404, 'path too long');
  const raw = url.split('?')[0].split('#')[0];
  let path;
  try {
    path = decodeURIComponent(raw);
  } catch {
    throw new Refusal(400, 'malformed percent-encoding');
  }
  if (path.includes('\0')) throw new Refusal(400, 'NUL in the path');
  if (path.length > MAX_PATH) throw new Refusal(404, 'path too long');
  return path;
}

/// The headers that make the page cross-origin isolated (`crossOriginIsolated`, shared memory).
export const ISOLATION = {
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-embedder-policy': 'require-corp',
};

/// Starts serving; resolves to { url, close }. Port 0 picks a free one. `log(line)` receives one
/// line per refused request (stderr by default). `isolate: false` leaves out the isolation
/// headers (what a plain static host does; the tests check the page's fallback with it).
export function serve(port = 0, { log = (line) => console.error(line), isolate = true } = {}) {
  const isolation = isolate ? ISOLATION : {};
  const refuse = (req, res, status, why) => {
    log(`${status} ${String(req.method).slice(0, 16)} ${String(req.url).slice(0, 120)}: ${why}`);
    if (res.headersSent) { res.destroy(); return; }
    const headers = { ...isolation, ...(status === 405 ? { allow: 'GET, HEAD' } : {}) };
    res.writeHead(status, headers).end();
  };
  const server = createServer(async (req, res) => {
    try {
      if (req.method !== 'GET' && req.method !== 'HEAD') throw new Refusal(405, 'method not allowed');
      const path = requestPath(req.url);
      if (path === '/web') {
        res.writeHead(301, { ...isolation, location: '/web/' }).end();
        return;
      }
      const file = pageFile(path);
      if (!file) throw new Refusal(404, 'not a file of the page');
      let body;
      try {
        body = await readFile(join(ROOT, file));
      } catch (e) {
        throw e.code === 'ENOENT' ? new Refusal(404, 'not built or missing') : e;
      }
      res.writeHead(200, { ...isolation, 'content-type': TYPES[extname(file)] ?? 'application/octet-stream' });
      res.end(req.method === 'HEAD' ? undefined : body);
    } catch (e) {
      if (e instanceof Refusal) refuse(req, res, e.status, e.message);
      else refuse(req, res, 500, `internal error: ${String(e?.message ?? e).split('\n')[0]}`);
    }
  });
  // A request node's parser cannot read (bad request line, oversized headers) gets a 400 too.
  server.on('clientError', (err, socket) => {
    log(`400 (unparsable request): ${err.code ?? err.message}`);
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n');
    else socket.destroy();
  });
  return new Promise((resolve) => server.listen(port, '127.0.0.1', () => {
    const origin = `http://127.0.0.1:${server.address().port}`;
    resolve({ url: `${origin}/web/`, origin, close: () => server.close() });
  }));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { url } = await serve(Number(process.env.PORT ?? 8080));
  console.log(`gpumlp demo: open ${url}`);
}
