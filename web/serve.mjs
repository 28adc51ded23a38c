// A tiny static file server for rvm-export's web folder, with the headers WASM threads need.
//
// onnxruntime-web runs several WASM threads only in a cross-origin isolated page (SharedArrayBuffer), which takes
// `Cross-Origin-Opener-Policy: same-origin` and `Cross-Origin-Embedder-Policy: require-corp` on the page and
// same-origin resources. `python -m http.server` sends neither, so threads would silently drop to one.
//
//   node serve.mjs [folder] [--port 8080] [--host 127.0.0.1]      then open http://127.0.0.1:8080/demo.html
//
// The browser harness (web/harness/harness.mjs) imports createServer() and adds its own routes.
import { createReadStream, promises as fs } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ISOLATION_HEADERS = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
  'Cross-Origin-Resource-Policy': 'same-origin',
  'Cache-Control': 'no-store',
};

const TYPES = {
  '.html': 'text/html; charset=utf-8', '.mjs': 'text/javascript', '.js': 'text/javascript',
  '.json': 'application/json', '.wasm': 'application/wasm', '.onnx': 'application/octet-stream',
  '.f32': 'application/octet-stream', '.png': 'image/png', '.jpg': 'image/jpeg', '.jpeg': 'image/jpeg',
  '.webm': 'video/webm', '.mp4': 'video/mp4', '.css': 'text/css', '.map': 'application/json',
};

/**
 * Create (not start) an HTTP server.
 * @param {Map<string, string>} mounts URL prefix ('/' or '/m/1/') -> folder on disk; the longest prefix wins.
 * @param {(req, res, url: URL) => boolean | Promise<boolean>} [route] handles a request first; true = handled.
 * @returns {http.Server}
 */
export function createServer(mounts, route) {
  return http.createServer(async (req, res) => {
    try {
      const url = new URL(req.url, 'http://localhost');
      if (route && (await route(req, res, url))) return;
      const file = resolveFile(mounts, decodeURIComponent(url.pathname));
      if (!file) return send(res, 404, 'not found');
      const stat = await fs.stat(file).catch(() => null);
      if (!stat || !stat.isFile()) return send(res, 404, 'not found');
      const type = TYPES[path.extname(file)] ?? 'application/octet-stream';
      res.writeHead(200, { ...ISOLATION_HEADERS, 'Content-Type': type, 'Content-Length': stat.size });
      if (req.method === 'HEAD') return res.end();
      createReadStream(file).pipe(res);
    } catch (error) {
      send(res, 500, String(error));
    }
  });
}

/** Answer with a short text body and the isolation headers. */
export function send(res, status, text) {
  res.writeHead(status, { ...ISOLATION_HEADERS, 'Content-Type': 'text/plain; charset=utf-8' });
  res.end(text);
}

function resolveFile(mounts, pathname) {
  const prefixes = [...mounts.keys()].filter((p) => pathname.startsWith(p)).sort((a, b) => b.length - a.length);
  if (!prefixes.length) return null;
  const root = path.resolve(mounts.get(prefixes[0]));
  const file = path.resolve(root, '.' + path.sep + pathname.slice(prefixes[0].length));
  return file === root || file.startsWith(root + path.sep) ? file : null;  // no escaping the folder
}

/** Start listening; resolves to the bound port (0 picks a free one). */
export function listen(server, port = 0, host = '127.0.0.1') {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve(server.address().port));
  });
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const option = (name, fallback) => (args.includes(name) ? args[args.indexOf(name) + 1] : fallback);
  const folder = args.find((a, i) => !a.startsWith('--') && !(i > 0 && args[i - 1].startsWith('--')))
    ?? path.dirname(fileURLToPath(import.meta.url));
  const host = option('--host', '127.0.0.1');
  const port = await listen(createServer(new Map([['/', folder]])), Number(option('--port', 8080)), host);
  console.log(`serving ${folder} at http://${host}:${port}/ (cross-origin isolated: WASM threads available)`);
}
