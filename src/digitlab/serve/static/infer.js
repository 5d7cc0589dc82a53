// Reading in the browser: the run's model.onnx on ONNX Runtime Web (WebAssembly, one thread), after
// preprocess.js for a digit and segment.js for a number (lines.js for a line model's run, with its
// digit model digits/model.onnx when it has one), with the run's calibration and unsure rule from
// model.json, so that the answers have the fields /api/predict and /api/read give. Used when model.json, model.onnx and ort/ are served beside the page
// (`digitlab serve` with a run exported to ONNX, or `digitlab export RUN --format web`); otherwise the page
// asks the server. Defines one global, browserReader.
"use strict";

const browserReader = (() => {
  const RUNTIME = "ort/"; // ONNX Runtime Web's files, beside the page
  const RUNTIME_MODULE = "ort.wasm.min.mjs";
  const SIDE = digitlabPreprocess.SIDE;
  const engineEl = document.getElementById("engine");
  const here = (path) => new URL(path, document.baseURI).href;

  let model = null; // model.json: what /api/model says, and under "web" the calibration and classes
  let session = null;
  let ort = null;
  let part = null; // a line run's digit model: {web, session}, for the combined reader

  const weightsOf = (path) =>
    fetch(here(path)).then((r) => {
      if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
      return r.arrayBuffer();
    });
  const inputShape = (web) => (web.line ? [web.line.height, web.line.width] : [SIDE, SIDE]);

  async function load() {
    const response = await fetch(here("model.json"));
    if (!response.ok) return false; // no model.onnx for this run: the server reads
    model = await response.json();
    if (!model.web || !["digit", "line"].includes(model.kind)) return false;
    performance.mark("digitlab:model.json"); // the steps' times, for bench figures and the devtools
    const weights = weightsOf(model.web.model); // fetched while the runtime loads
    const partWeights = model.digits ? weightsOf(model.digits.web.model) : null;
    ort = await import(here(RUNTIME + RUNTIME_MODULE));
    ort.env.wasm.numThreads = 1; // several threads need a cross-origin isolated page (COOP and COEP headers)
    ort.env.wasm.wasmPaths = here(RUNTIME);
    const options = { executionProviders: ["wasm"] };
    session = await ort.InferenceSession.create(new Uint8Array(await weights), options);
    if (partWeights)
      part = {
        web: model.digits.web,
        session: await ort.InferenceSession.create(new Uint8Array(await partWeights), options),
      };
    performance.mark("digitlab:session");
    const [h, w] = inputShape(model.web);
    await forward(new Float32Array(h * w), 1); // the first run sets up its buffers: not on a pen-up
    if (part) await forward(new Float32Array(SIDE * SIDE), 1, part.session);
    return true;
  }

  const self = {
    on: false, // true once the model answers in this browser
    readyAt: null, // ms after the page was opened that the model was ready to answer (or given up)
    ready: null, // a promise: whether it does
    model: async () => ((await self.ready) ? model : null),
    readCanvas,
    readPixels,
    readMany,
    readNumber,
    method: () => (model.kind !== "line" ? "segment" : part ? "combined" : "line"), // how numbers are read
    answer: async (canvas) => ({ response: { ok: true, status: 200 }, body: await readCanvas(canvas) }), // as the server's
    numberAnswer, // as /api/read's
  };

  self.ready = load()
    .catch((err) => {
      console.warn(`reading in the browser is off: ${err.message}`); // the server reads instead
      return false;
    })
    .then((on) => {
      self.on = on;
      self.readyAt = performance.now();
      const methods = { combined: ", the combined reader", line: ", the line model alone" }; // `digitlab read --method`
      const how = on ? methods[self.method()] || "" : "";
      if (engineEl) engineEl.textContent = on ? `read in this browser (ONNX Runtime Web${how})` : "read by the server";
      document.body.dataset.engine = on ? "browser" : "server";
      return on;
    });

  async function forward(pixels, n, on = session) {
    // (n, 28, 28) raw pixels 0-255 -> n rows of probabilities, uncalibrated; a line model's (n, 32, 256)
    // -> n lines of frames of probabilities
    const shape = on === session ? inputShape(model.web) : [SIDE, SIDE];
    const input = new ort.Tensor("float32", pixels, [n, ...shape]);
    const output = await on.run({ [on.inputNames[0]]: input });
    const out = output[on.outputNames[0]];
    const p = out.data;
    const k = p.length / n;
    const rows = Array.from({ length: n }, (_, i) => Array.from(p.subarray(i * k, (i + 1) * k)));
    if (out.dims.length !== 3) return rows;
    const c = out.dims[2];
    return rows.map((row) => Array.from({ length: out.dims[1] }, (_, t) => row.slice(t * c, (t + 1) * c)));
  }

  function temper(p, web = model.web) {
    // metrics.temper: softmax(log p / T); what p leaves of 1 (over 1e-6, metrics.REST) is "not a digit"'s
    const t = web.temperature;
    if (t === 1.0) return p;
    const logits = p.map((v) => Math.log(Math.min(Math.max(v, web.eps), 1.0)) / t);
    const left = 1 - p.reduce((a, b) => a + b, 0);
    const rest = left > 1e-6 ? Math.log(Math.max(left, web.eps)) / t : -Infinity;
    const top = Math.max(...logits, rest);
    const e = logits.map((v) => Math.exp(v - top));
    const sum = e.reduce((a, b) => a + b, 0) + Math.exp(rest - top);
    return e.map((v) => Math.fround(v / sum));
  }

  function classifyRow(raw, web = model.web) {
    // predict.classify for one digit the model was asked about: digit and label (null when unsure),
    // confidence, probabilities, top3, unsure and the reason, in Python's words
    const names = web.class_names;
    const p = temper(raw, web);
    const order = p.map((_, i) => i).sort((a, b) => p[b] - p[a] || a - b);
    const top3 = order.slice(0, 3).map((i) => ({ digit: i, label: names[i], probability: p[i] }));
    const best = order[0];
    const threshold = web.threshold;
    let reason = null;
    if (p[best] < threshold) {
      reason =
        `unsure: ${top3[0].label} or ${top3[1].label} (confidence ${p[best].toFixed(3)}, ` +
        `below the threshold ${threshold.toFixed(3)})`;
      if (web.nondigits && top3[0].probability + top3[1].probability < web.not_a_digit) reason = web.not_a_digit_reason;
    }
    const sure = reason === null;
    return {
      digit: sure ? best : null,
      label: sure ? names[best] : null,
      confidence: p[best],
      probabilities: p,
      top3,
      unsure: !sure,
      reason,
    };
  }

  function gridRows(digit) {
    return Array.from({ length: SIDE }, (_, y) => Array.from(digit.subarray(y * SIDE, (y + 1) * SIDE)));
  }

  function answer(pre, raw) {
    // the fields of /api/predict's answer, and the 28x28 input
    const r = { preprocessed: gridRows(pre.digit), model: { name: model.name } };
    if (pre.reason !== null || raw === null) {
      return { ...r, digit: null, label: null, confidence: null, probabilities: null, top3: null, unsure: true, reason: pre.reason };
    }
    return { ...r, ...classifyRow(raw) };
  }

  async function classifyMany(crops, on = session, web = model.web) {
    // 28x28 Uint8Arrays -> one classify row each, the model asked once
    const pixels = new Float32Array(crops.length * SIDE * SIDE);
    crops.forEach((crop, i) => pixels.set(crop, i * SIDE * SIDE));
    return (await forward(pixels, crops.length, on)).map((raw) => classifyRow(raw, web));
  }

  async function readNumber(rgba, width, height, method = self.method()) {
    // the number in RGBA pixels, as /api/read reads it: the segmentation method (a digit run's), or a line
    // run's own (lines.js: the combined reader with its digit model, else the line method)
    const reading =
      model.kind === "line"
        ? await digitlabLines.readNumber(rgba, width, height, {
            web: model.web,
            method,
            forward: (pixels, n) => forward(pixels, n),
            classify: part ? (crops) => classifyMany(crops, part.session, part.web) : null,
          })
        : await digitlabSegment.readNumber(rgba, width, height, classifyMany);
    return { ...reading, model: { name: model.name, architecture: model.config?.model?.architecture ?? "?" } };
  }

  async function numberAnswer(source) {
    // A canvas (or {rgba, width, height, method}) read as a number: {response, body} as the server's
    // /api/read answers, a 422 with its one-line detail for an image it refuses (too many marks, too long
    // and thin). `method`: a line run's "line" or "combined" (the run's own when not given).
    const { data, width, height } =
      source instanceof HTMLCanvasElement
        ? source.getContext("2d").getImageData(0, 0, source.width, source.height)
        : { data: source.rgba, width: source.width, height: source.height };
    try {
      return { response: { ok: true, status: 200 }, body: await readNumber(data, width, height, source.method) };
    } catch (err) {
      if (!/^image: /.test(err.message)) throw err;
      return { response: { ok: false, status: 422 }, body: { detail: err.message } };
    }
  }

  async function readMany(images) {
    // [{rgba, width, height}] -> one answer each, the model asked once for all of them
    const pres = images.map(({ rgba, width, height }) => digitlabPreprocess.preprocessRGBA(rgba, width, height));
    const asked = pres.filter((pre) => pre.reason === null);
    const pixels = new Float32Array(asked.length * SIDE * SIDE);
    asked.forEach((pre, i) => pixels.set(pre.digit, i * SIDE * SIDE));
    const raw = asked.length ? await forward(pixels, asked.length) : [];
    let k = 0;
    return pres.map((pre) => answer(pre, pre.reason === null ? raw[k++] : null));
  }

  async function readPixels(rgba, width, height) {
    return (await readMany([{ rgba, width, height }]))[0];
  }

  async function readCanvas(canvas) {
    const { data, width, height } = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
    return readPixels(data, width, height);
  }

  return self;
})();
