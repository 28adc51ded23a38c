// harness.mjs: rvm-export's bridge between Python and a real browser (headless Chromium via playwright-core).
//
//   node harness.mjs --chromium /usr/bin/chromium
//
// It serves folders over HTTP on 127.0.0.1 with the cross-origin isolation headers (serve.mjs), launches one
// Chromium, opens one page per model (page.html, which imports the module shipped in the export folder) and answers
// requests from Python on stdin/stdout. Every message is one JSON line, followed by `bytes` raw bytes when the line
// says so. Requests: {cmd: 'hello'} | {cmd: 'mount', dir} | {cmd: 'open', args} | {cmd: 'call', page, fn, args,
// bytes?} | {cmd: 'logs', page} | {cmd: 'close', page} | {cmd: 'quit'}. Replies: {ok: true, ...} or {ok: false,
// error}. Raw float32 frames travel to the page through GET /__io/<page>/src and back through POST /__io/<page>/out.
// Nothing but replies goes to stdout; diagnostics go to stderr.
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

import { createServer, listen, send } from '../serve.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const option = (name, fallback) => (args.includes(name) ? args[args.indexOf(name) + 1] : fallback);
// Headless Chromium on a closed network: without the background-networking switches it stalls on requests that
// never answer. --enable-unsafe-webgpu exposes WebGPU headless (here: the SwiftShader software adapter).
// --disable-gpu keeps Chromium off the host's GL stack; it does not hide the WebGPU software adapter (measured).
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-default-apps',
  '--disable-extensions', '--enable-unsafe-webgpu', ...(option('--chromium-args', '') || '').split(' ').filter(Boolean)];

class Reader {
  constructor(stream) {
    this.buffer = Buffer.alloc(0);
    this.waiters = [];
    this.ended = false;
    stream.on('data', (chunk) => { this.buffer = Buffer.concat([this.buffer, chunk]); this.wake(); });
    stream.on('end', () => { this.ended = true; this.wake(); });
  }
  wake() { const waiters = this.waiters; this.waiters = []; waiters.forEach((f) => f()); }
  async until(ready) {
    while (!ready()) {
      if (this.ended) return false;
      await new Promise((resolve) => this.waiters.push(resolve));
    }
    return true;
  }
  async line() {
    if (!(await this.until(() => this.buffer.indexOf(10) >= 0))) return null;
    const end = this.buffer.indexOf(10);
    const text = this.buffer.subarray(0, end).toString('utf8');
    this.buffer = this.buffer.subarray(end + 1);
    return text;
  }
  async bytes(count) {
    if (!(await this.until(() => this.buffer.length >= count))) throw new Error('stdin closed inside a payload');
    const data = Buffer.from(this.buffer.subarray(0, count));
    this.buffer = this.buffer.subarray(count);
    return data;
  }
}

async function write(header, payload) {
  const chunks = [Buffer.from(JSON.stringify(header) + '\n'), ...(payload ? [payload] : [])];
  for (const chunk of chunks) {
    if (!process.stdout.write(chunk)) await new Promise((resolve) => process.stdout.once('drain', resolve));
  }
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const parts = [];
    req.on('data', (c) => parts.push(c));
    req.on('end', () => resolve(Buffer.concat(parts)));
    req.on('error', reject);
  });
}

const mounts = new Map([['/__harness/', HERE]]);
const pages = new Map();  // id -> {page, context, input, output, logs}
const server = createServer(mounts, async (req, res, url) => {
  const match = url.pathname.match(/^\/__io\/(\d+)\/(src|out)$/);
  if (!match) return false;
  const slot = pages.get(Number(match[1]));
  if (!slot) { send(res, 404, 'no such page'); return true; }
  if (match[2] === 'src') {
    res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': slot.input.length,
      'Cross-Origin-Resource-Policy': 'same-origin', 'Cache-Control': 'no-store' });
    res.end(slot.input);
  } else {
    slot.output = await readBody(req);
    send(res, 200, 'ok');
  }
  return true;
});
const port = await listen(server);
const origin = `http://127.0.0.1:${port}`;
const executablePath = option('--chromium', '/usr/bin/chromium');
const browser = await chromium.launch({ executablePath, headless: true, args: CHROMIUM_ARGS, timeout: 120000 });
let nextPage = 1;

const handlers = {
  hello: async () => ({ chromium: browser.version(), origin, args: CHROMIUM_ARGS }),
  mount: async ({ dir }) => {
    const existing = [...mounts].find(([, d]) => d === dir);
    const prefix = existing ? existing[0] : `/m/${mounts.size}/`;
    mounts.set(prefix, dir);
    return { prefix, origin };
  },
  open: async ({ args: openArgs }) => {
    const id = nextPage++;
    const context = await browser.newContext();
    const page = await context.newPage();
    const slot = { page, context, input: Buffer.alloc(0), output: null, logs: [] };
    pages.set(id, slot);
    page.on('console', (m) => slot.logs.push(`${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => slot.logs.push(`pageerror: ${e.message}`));
    await page.goto(`${origin}/__harness/page.html`);
    await page.waitForFunction(() => window.rvmReady === true);
    try {
      const info = await page.evaluate((a) => window.rvmHarness.open(a), openArgs);
      return { page: id, info, logs: slot.logs.splice(0) };
    } catch (error) {
      await context.close();
      pages.delete(id);
      throw error;
    }
  },
  call: async ({ page: id, fn, args: callArgs = {} }, payload) => {
    const slot = pages.get(id);
    if (!slot) throw new Error(`no page ${id}`);
    slot.input = payload ?? Buffer.alloc(0);
    slot.output = null;
    const call = [fn, { ...callArgs, io: `/__io/${id}` }];
    const result = await slot.page.evaluate(([f, a]) => window.rvmHarness[f](a), call);
    const output = slot.output;
    slot.output = null;
    return [{ result: result ?? null }, output];
  },
  logs: async ({ page: id }) => ({ logs: pages.get(id)?.logs.splice(0) ?? [] }),
  close: async ({ page: id }) => {
    const slot = pages.get(id);
    pages.delete(id);
    if (slot) await slot.context.close();
    return {};
  },
};

async function shutdown(code) {
  await browser.close().catch(() => {});
  server.close();
  process.exit(code);
}

const reader = new Reader(process.stdin);
for (;;) {
  const line = await reader.line();
  if (line === null) await shutdown(0);
  if (!line.trim()) continue;
  let request;
  try {
    request = JSON.parse(line);
  } catch (error) {
    await write({ ok: false, error: `bad request line: ${error.message}` });
    continue;
  }
  const payload = request.bytes ? await reader.bytes(request.bytes) : null;
  if (request.cmd === 'quit') {
    await write({ ok: true });
    await shutdown(0);
  }
  try {
    const handler = handlers[request.cmd];
    if (!handler) throw new Error(`unknown command ${request.cmd}`);
    const answer = await handler(request, payload);
    const [header, output] = Array.isArray(answer) ? answer : [answer, null];
    await write({ ok: true, ...header, bytes: output ? output.length : 0 }, output);
  } catch (error) {
    const logs = request.page ? pages.get(request.page)?.logs.splice(0) ?? [] : [];
    const message = String(error?.message ?? error).split('\n')[0].replace(/^page\.evaluate: (Error: )?/, '');
    await write({ ok: false, error: message, logs: logs.slice(-20) });
  }
}
