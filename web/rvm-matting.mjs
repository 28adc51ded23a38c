// rvm-matting.mjs: Robust Video Matting (Lin et al., arXiv 2108.11515) in the browser with onnxruntime-web.
//
// rvm-export writes this module next to a static model (rvm_*.onnx), its contract (rvm_*.json) and the
// onnxruntime-web files it imports (ort.min.mjs + ort-wasm-simd-threaded.jsep.*). Nothing is fetched from a CDN.
//
//   import { create, composite } from './rvm-matting.mjs';
//   const matting = await create({ model: 'rvm_mobilenetv3_640x360_r0.5_fp32.onnx', backend: 'webgpu' });
//   const { fgr, pha } = await matting.step(video);        // ImageData | VideoFrame | <video> | <img> | <canvas> |
//   composite(canvas, { fgr, pha }, '#00ff00');            // ImageBitmap | Float32Array [1,3,H,W] | ort.Tensor
//   matting.reset();                                       // a cut: the next frame starts from zero states
//
// The module owns the recurrent loop: it feeds r1o..r4o back as r1i..r4i, starting from zeros of the exact shapes
// the contract lists (onnxruntime-web refuses broadcast [1,1,1,1] states). On WebGPU the states stay GPU buffers
// between frames (`preferredOutputLocation: 'gpu-buffer'`, the output tensors fed back as inputs): only fgr and pha
// come back to the CPU. Errors are thrown as `Error('rvm-matting: ...')` naming the problem.

const HERE = new URL('./', import.meta.url);
const STATE_PAIRS = [['r1o', 'r1i'], ['r2o', 'r2i'], ['r3o', 'r3i'], ['r4o', 'r4i']];
const CONTRACT_FORMAT = 'rvm-export web contract 1';
export const BACKENDS = ['wasm', 'webgpu'];
// onnxruntime-web's WebGPU kernels at preferredLayout NHWC computed a 3x3 convolution with 171 input channels (this
// network's decode3) wrong in the `ort.webgpu` bundle; NCHW is right on both bundles (docs/web.md).
export const WEBGPU_LAYOUTS = ['NCHW'];

let ortLoad = null;       // one onnxruntime-web instance per page
let ortThreads = null;    // env.wasm.numThreads is fixed once the first session exists
let ortAdapter = null;    // env.webgpu.adapter is fixed once the first WebGPU session exists

function fail(message) {
  throw new Error(`rvm-matting: ${message}`);
}

async function loadOrt(url) {
  ortLoad ??= import(url ?? new URL('ort.min.mjs', HERE).href);
  return ortLoad;
}

async function fetchJson(url, what) {
  const response = await fetch(url);
  if (!response.ok) fail(`cannot fetch the ${what} ${url}: HTTP ${response.status}`);
  return response.json();
}

/**
 * Load a model and return a {@link Matting} that runs it frame after frame.
 *
 * @param {object} options
 * @param {string} options.model URL of the .onnx (relative to the page).
 * @param {string} [options.contract] URL of its contract JSON; default: the model URL with `.json`.
 * @param {'wasm'|'webgpu'} [options.backend='wasm']
 * @param {number} [options.threads=1] WASM threads (> 1 needs a cross-origin isolated page: COOP/COEP headers).
 * @param {'NCHW'} [options.layout='NCHW'] WebGPU kernel layout; NHWC is refused (known wrong, see above).
 * @param {string} [options.ortUrl] where onnxruntime-web's ort.min.mjs is; default: next to this module.
 * @param {boolean} [options.logPlacement=false] log onnxruntime's node placement while the session is created (to the
 *   console: "All nodes placed on [JsExecutionProvider]" means no operator fell back to the CPU on WebGPU).
 * @returns {Promise<Matting>}
 * @throws {Error} unknown backend, threads without isolation, no WebGPU adapter, fp16 without shader-f16, a model
 *   whose inputs differ from the contract.
 */
export async function create(options = {}) {
  const { model, backend = 'wasm', threads = 1, layout = 'NCHW', ortUrl, logPlacement = false } = options;
  if (!model) fail('create() needs {model: URL of the .onnx}');
  if (!BACKENDS.includes(backend)) fail(`unknown backend ${JSON.stringify(backend)}; expected one of ${BACKENDS}`);
  if (!Number.isInteger(threads) || threads < 1) fail(`threads must be a whole number >= 1, got ${threads}`);
  if (backend === 'webgpu' && !WEBGPU_LAYOUTS.includes(layout)) {
    fail(`WebGPU layout ${layout} is refused: onnxruntime-web computed a 3x3 convolution with 171 input channels ` +
         `wrong on it; use layout 'NCHW'`);
  }
  if (threads > 1 && !globalThis.crossOriginIsolated) {
    fail(`${threads} WASM threads need a cross-origin isolated page (serve it with Cross-Origin-Opener-Policy: ` +
         'same-origin and Cross-Origin-Embedder-Policy: require-corp, e.g. node serve.mjs); this page is not');
  }
  const modelUrl = new URL(model, globalThis.location?.href ?? HERE).href;
  const contractUrl = options.contract ? new URL(options.contract, globalThis.location?.href ?? HERE).href
    : modelUrl.replace(/\.onnx$/, '.json');
  const contract = await fetchJson(contractUrl, 'contract');
  if (contract.format !== CONTRACT_FORMAT) fail(`${contractUrl} is not an rvm-export web contract`);

  const ort = await loadOrt(ortUrl);
  if (ortThreads !== null && ortThreads !== threads) {
    fail(`this page already runs onnxruntime-web with ${ortThreads} thread(s); the thread count is fixed per page`);
  }
  ort.env.wasm.numThreads = threads;
  ort.env.wasm.proxy = false;
  ort.env.wasm.wasmPaths = ortUrl ? new URL('./', ortUrl).href : HERE.href;

  let adapterInfo = null;
  if (backend === 'webgpu') {
    if (!globalThis.navigator?.gpu) {
      fail('this browser offers no WebGPU (navigator.gpu is missing; headless Chromium needs --enable-unsafe-webgpu)');
    }
    ortAdapter ??= await navigator.gpu.requestAdapter();
    if (!ortAdapter) fail('navigator.gpu.requestAdapter() returned no adapter: WebGPU cannot run here');
    const info = ortAdapter.info ?? {};
    adapterInfo = { vendor: info.vendor, architecture: info.architecture, device: info.device,
      description: info.description, features: [...ortAdapter.features].sort(),
      fallback: Boolean(info.isFallbackAdapter ?? ortAdapter.isFallbackAdapter) };
    if (contract.precision === 'fp16' && !ortAdapter.features.has('shader-f16')) {
      fail(`this WebGPU adapter (${describeAdapter(adapterInfo)}) has no shader-f16, so it cannot run the fp16 ` +
           'model; use the fp32 model on WebGPU or the fp16 model on WASM');
    }
    ort.env.webgpu.adapter = ortAdapter;
  }

  const session = await ort.InferenceSession.create(modelUrl, {
    executionProviders: backend === 'webgpu' ? [{ name: 'webgpu', preferredLayout: layout }] : ['wasm'],
    graphOptimizationLevel: 'all',
    ...(logPlacement ? { logSeverityLevel: 0, logVerbosityLevel: 0 } : {}),
    ...(backend === 'webgpu' ? { preferredOutputLocation: {
      fgr: 'cpu', pha: 'cpu', r1o: 'gpu-buffer', r2o: 'gpu-buffer', r3o: 'gpu-buffer', r4o: 'gpu-buffer' } } : {}),
  });
  ortThreads = threads;
  checkSession(session, contract);
  return new Matting({ ort, session, contract, backend, threads, layout, adapterInfo });
}

function describeAdapter(info) {
  return [info.vendor, info.architecture, info.description].filter(Boolean).join(' / ') || 'unnamed adapter';
}

function checkSession(session, contract) {
  const want = ['src', 'r1i', 'r2i', 'r3i', 'r4i'];
  const missing = want.filter((n) => !session.inputNames.includes(n));
  const outs = ['fgr', 'pha', 'r1o', 'r2o', 'r3o', 'r4o'].filter((n) => !session.outputNames.includes(n));
  if (missing.length || outs.length) fail(`the model lacks contract inputs/outputs: ${[...missing, ...outs]}`);
  for (const meta of session.inputMetadata ?? []) {
    const declared = contract.inputs.find((t) => t.name === meta.name);
    if (declared && meta.shape && JSON.stringify(meta.shape) !== JSON.stringify(declared.shape)) {
      fail(`${meta.name}: the model says [${meta.shape}], the contract [${declared.shape}]`);
    }
  }
}

/** A loaded model and its recurrent states. Make one with {@link create}. */
export class Matting {
  #ort; #session; #states; #zeros; #busy = false; #canvas = null;

  constructor({ ort, session, contract, backend, threads, layout, adapterInfo }) {
    this.#ort = ort;
    this.#session = session;
    /** The contract JSON (names, shapes, precision, width, height, downsample_ratio). */
    this.contract = contract;
    /** Model input size in pixels: frames of another size are scaled to it by step(). */
    this.width = contract.width;
    this.height = contract.height;
    /** What runs it: backend, threads, WebGPU adapter, onnxruntime-web version, isolation. */
    this.info = { backend, threads: backend === 'wasm' ? threads : null, layout: backend === 'webgpu' ? layout : null,
      adapter: adapterInfo, ortVersion: ort.env.versions?.web ?? null, precision: contract.precision,
      crossOriginIsolated: Boolean(globalThis.crossOriginIsolated),
      userAgent: globalThis.navigator?.userAgent ?? null, statesOnGpu: backend === 'webgpu' };
    this.#zeros = Object.fromEntries(Object.entries(contract.zero_states).map(([name, shape]) =>
      [name, new ort.Tensor('float32', new Float32Array(shape.reduce((a, b) => a * b, 1)), shape)]));
    this.#states = { ...this.#zeros };
  }

  /** The onnxruntime-web module and session, for advanced use (e.g. a custom run). */
  get ort() { return this.#ort; }
  get session() { return this.#session; }

  /**
   * Matte one frame and keep the recurrent states for the next.
   * @param {ImageData|VideoFrame|HTMLVideoElement|HTMLImageElement|HTMLCanvasElement|OffscreenCanvas|ImageBitmap|
   *   Float32Array|object} frame RGB frame; a Float32Array / ort.Tensor is planar RGB in [0, 1], shape [1,3,H,W].
   * @returns {Promise<{fgr: object, pha: object, ms: {run: number, step: number}}>} `fgr` [1,3,H,W] and `pha`
   *   [1,1,H,W] as float32 ort.Tensors on the CPU (`.data`, `.dims`); `ms`: performance.now() around session.run and
   *   around the whole step (frame conversion + run + outputs on the CPU).
   */
  async step(frame) {
    if (this.#busy) fail('step() called before the previous step() finished; await each step');
    this.#busy = true;
    try {
      const start = performance.now();
      const src = this.#toTensor(frame);
      const before = performance.now();
      const out = await this.#session.run({ src, ...this.#states });
      const ran = performance.now();
      const previous = this.#states;
      this.#states = Object.fromEntries(STATE_PAIRS.map(([o, i]) => [i, out[o]]));
      for (const [name, tensor] of Object.entries(previous)) {
        if (tensor !== this.#zeros[name] && tensor.location === 'gpu-buffer') tensor.dispose();
      }
      return { fgr: out.fgr, pha: out.pha, ms: { run: ran - before, step: performance.now() - start } };
    } finally {
      this.#busy = false;
    }
  }

  /** Start a new clip (a cut, a new video): the next step() uses zero states. */
  reset() {
    if (this.#busy) fail('reset() called while a step() is running; await it first');
    for (const [name, tensor] of Object.entries(this.#states)) {
      if (tensor !== this.#zeros[name] && tensor.location === 'gpu-buffer') tensor.dispose();
    }
    this.#states = { ...this.#zeros };
  }

  /** The states the next step() will feed, downloaded to the CPU (a copy; for checks, not for every frame).
   * @returns {Promise<Object<string, Float32Array>>} keyed r1o..r4o (the last step's outputs). */
  async readStates() {
    const entries = await Promise.all(STATE_PAIRS.map(async ([o, i]) => [o, await this.#states[i].getData()]));
    return Object.fromEntries(entries);
  }

  /** Free the session and the GPU states. */
  async release() {
    this.reset();
    await this.#session.release();
  }

  #toTensor(frame) {
    const { width: w, height: h } = this;
    const ort = this.#ort;
    if (frame instanceof Float32Array) {
      if (frame.length !== 3 * w * h) fail(`a Float32Array frame must hold 3*${h}*${w} values, got ${frame.length}`);
      return new ort.Tensor('float32', frame, [1, 3, h, w]);
    }
    if (frame && frame.dims && frame.type) {  // an ort.Tensor (any onnxruntime-web instance)
      if (frame.type !== 'float32' || JSON.stringify(frame.dims) !== JSON.stringify([1, 3, h, w])) {
        fail(`a tensor frame must be float32 [1,3,${h},${w}], got ${frame.type} [${frame.dims}]`);
      }
      return frame;
    }
    const rgba = this.#pixels(frame);
    const plane = w * h;
    const data = new Float32Array(3 * plane);
    for (let i = 0; i < plane; i++) {
      data[i] = rgba[4 * i] / 255;
      data[plane + i] = rgba[4 * i + 1] / 255;
      data[2 * plane + i] = rgba[4 * i + 2] / 255;
    }
    return new ort.Tensor('float32', data, [1, 3, h, w]);
  }

  #pixels(frame) {
    const { width: w, height: h } = this;
    const imageData = globalThis.ImageData && frame instanceof ImageData;
    if (imageData && frame.width === w && frame.height === h) return frame.data;
    this.#canvas ??= new OffscreenCanvas(w, h);
    const context = this.#canvas.getContext('2d', { willReadFrequently: true });
    if (imageData) {
      fail(`an ImageData frame must be ${w}x${h} (the model's size), got ${frame.width}x${frame.height}; ` +
           'pass the canvas or video instead and it is scaled');
    }
    try {
      context.drawImage(frame, 0, 0, w, h);
    } catch (error) {
      fail(`cannot read pixels from ${frame?.constructor?.name ?? typeof frame}: ${error.message}`);
    }
    return context.getImageData(0, 0, w, h).data;
  }
}

/**
 * Draw `fgr` over `background` with alpha `pha` onto `canvas` (scaled to the canvas size).
 * @param {HTMLCanvasElement|OffscreenCanvas} canvas
 * @param {{fgr: object, pha: object}} result step()'s output (ort.Tensors or {data, dims}).
 * @param {string|number[]|CanvasImageSource|null} [background] a CSS colour, [r, g, b] in 0..255, an image/video, or
 *   null for transparent.
 */
export function composite(canvas, { fgr, pha }, background = null) {
  const [, , h, w] = fgr.dims;
  const plane = w * h;
  const rgb = fgr.data;
  const alpha = pha.data;
  const pixels = new ImageData(w, h);
  const out = pixels.data;
  for (let i = 0; i < plane; i++) {
    out[4 * i] = rgb[i] * 255 + 0.5;             // Uint8ClampedArray clamps and truncates
    out[4 * i + 1] = rgb[plane + i] * 255 + 0.5;
    out[4 * i + 2] = rgb[2 * plane + i] * 255 + 0.5;
    out[4 * i + 3] = alpha[i] * 255 + 0.5;
  }
  const layer = new OffscreenCanvas(w, h);
  layer.getContext('2d').putImageData(pixels, 0, 0);
  const context = canvas.getContext('2d');
  context.clearRect(0, 0, canvas.width, canvas.height);
  if (typeof background === 'string') {
    context.fillStyle = background;
    context.fillRect(0, 0, canvas.width, canvas.height);
  } else if (Array.isArray(background)) {
    context.fillStyle = `rgb(${background.slice(0, 3).join(',')})`;
    context.fillRect(0, 0, canvas.width, canvas.height);
  } else if (background) {
    context.drawImage(background, 0, 0, canvas.width, canvas.height);
  }
  context.drawImage(layer, 0, 0, canvas.width, canvas.height);
}
