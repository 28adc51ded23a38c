// rvm-golden.mjs: read rvm-export's golden frames and check a model against them (for an app's own CI).
//
// Format (docs/web.md, "Golden frames"): golden/golden.json indexes, per bucket, a few consecutive frames of a
// rollout from zero states: the input `src` and PyTorch's outputs `fgr`, `pha`, `r1o..r4o`, each a raw
// little-endian float32 file in C order with its shape and sha256, plus the artifacts it applies to and their
// tolerance (max abs on frames / on states).
//
//   import { loadGolden, checkGolden } from './rvm-golden.mjs';
//   const golden = await loadGolden('../golden/golden.json');
//   const report = await checkGolden(matting, golden, '256x144@0.5', 1e-4, 1e-4);   // report.passed

const FORMAT = 'rvm-export golden frames 1';

function fail(message) {
  throw new Error(`rvm-golden: ${message}`);
}

/** Fetch and parse golden.json; file URLs are resolved against it. @returns {Promise<object>} */
export async function loadGolden(url) {
  const absolute = new URL(url, globalThis.location?.href).href;
  const response = await fetch(absolute);
  if (!response.ok) fail(`cannot fetch ${absolute}: HTTP ${response.status}`);
  const index = await response.json();
  if (index.format !== FORMAT) fail(`${absolute} is not "${FORMAT}" (format ${JSON.stringify(index.format)})`);
  return { ...index, baseUrl: absolute };
}

async function sha256(buffer) {
  const digest = await crypto.subtle.digest('SHA-256', buffer);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * Fetch one tensor entry ({file, shape, dtype, sha256}) as a Float32Array, checking its size and digest.
 * @throws {Error} wrong dtype, size or sha256.
 */
export async function readTensor(golden, entry) {
  if (entry.dtype !== 'float32' || entry.byte_order !== 'little') fail(`${entry.file}: not little-endian float32`);
  const response = await fetch(new URL(entry.file, golden.baseUrl));
  if (!response.ok) fail(`cannot fetch ${entry.file}: HTTP ${response.status}`);
  const buffer = await response.arrayBuffer();
  const count = entry.shape.reduce((a, b) => a * b, 1);
  if (buffer.byteLength !== 4 * count) fail(`${entry.file}: ${buffer.byteLength} bytes, expected ${4 * count}`);
  if (entry.sha256 && (await sha256(buffer)) !== entry.sha256) fail(`${entry.file}: sha256 differs from the index`);
  return new Float32Array(buffer);  // the platform's byte order: little-endian on every browser engine in use
}

function maxAbs(a, b) {
  if (a.length !== b.length) return Infinity;
  let worst = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!(d <= worst)) worst = Number.isNaN(d) ? Infinity : Math.max(worst, d);
  }
  return worst;
}

/**
 * Reset `matting`, step it through the bucket's golden frames and compare every output with PyTorch's.
 * @param {import('./rvm-matting.mjs').Matting} matting a model built for this bucket.
 * @param {object} golden from {@link loadGolden}.
 * @param {string} bucket e.g. '256x144@0.5'.
 * @param {number} frameBound max abs allowed on fgr and pha; @param {number} stateBound on r1o..r4o.
 * @returns {Promise<{bucket: string, frames: number, maxAbs: Object<string, number>, perFrame: object[],
 *   passed: boolean, failures: string[]}>}
 */
export async function checkGolden(matting, golden, bucket, frameBound, stateBound) {
  const entry = golden.buckets?.[bucket];
  if (!entry) fail(`no golden frames for ${bucket}; the index has ${Object.keys(golden.buckets ?? {})}`);
  if (entry.width !== matting.width || entry.height !== matting.height) {
    fail(`the golden frames are ${entry.width}x${entry.height}, the model ${matting.width}x${matting.height}`);
  }
  matting.reset();
  const worst = {};
  const perFrame = [];
  for (const frame of entry.frames) {
    const src = await readTensor(golden, frame.src);
    const out = await matting.step(src);
    const got = { fgr: out.fgr.data, pha: out.pha.data };
    const withStates = Object.keys(frame.expected).some((name) => name.startsWith('r'));
    if (withStates) Object.assign(got, await matting.readStates());
    const errors = {};
    for (const [name, tensor] of Object.entries(frame.expected)) {
      errors[name] = maxAbs(got[name], await readTensor(golden, tensor));
      worst[name] = Math.max(worst[name] ?? 0, errors[name]);
    }
    perFrame.push(errors);
  }
  const failures = Object.entries(worst)
    .filter(([name, value]) => !(value <= (name === 'fgr' || name === 'pha' ? frameBound : stateBound)))
    .map(([name, value]) => `${name}: max abs ${value.toExponential(2)} over the bound`);
  return { bucket, frames: entry.frames.length, maxAbs: worst, perFrame, passed: failures.length === 0, failures };
}
