// Reading whole lines in the browser with a line model's run, as `digitlab read` does: the line method
// (digitlab.preprocess.line and digitlab.predict.lines: the image's ink widened for lines, grouped into
// lines by segment.js, each line normalised to the model's input, one batched forward, greedy CTC
// decoding with the run's temperature and threshold, each digit's box and crop, Python's reasons) and the
// combined reader (digitlab.predict.reading: the line method's and the segmentation's readings, scored by
// the line model's CTC probability of their text; ctc.log_likelihood). The constants come from model.json
// (web.line_constants reads them from the Python modules), so that there is no second copy to keep in step.
// tests/test_web.py holds the two to each other in Chromium. Defines one global, digitlabLines:
// { readNumber(rgba, width, height, reader) -> the JSON of /api/read without "model" }, `reader` holding
// the line model's constants and calibration (web), its forward pass, and for the combined reader the
// digit model's classify.
"use strict";

const digitlabLines = (() => {
  const P = digitlabPreprocess;
  const S = digitlabSegment;
  const f32 = Math.fround;
  const SIDE = P.SIDE;

  // --- preprocess/line.py ------------------------------------------------------------------------------

  function lineInk(grey, C) {
    // line_ink: find_ink's ink, its mask widened by the thresholded components at least TALL of the ink's
    // height (a thin digit beside wide ones is no speck); null without ink
    const ink = P.findInk(grey);
    if (ink === null || !ink.mask.some((v) => v)) return null;
    const { w, h } = ink.bright;
    let r0 = h;
    let r1 = -1;
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++)
        if (ink.mask[y * w + x]) {
          r0 = Math.min(r0, y);
          r1 = Math.max(r1, y);
        }
    const { labels, comps } = P.label(ink.thresholdMask, w, h);
    const tall = comps.map((c) => c.y1 - c.y0 >= C.tall * (r1 - r0 + 1));
    const mask = Uint8Array.from(ink.mask, (v, i) => (v || (labels[i] && tall[labels[i] - 1]) ? 1 : 0));
    return { ...ink, mask };
  }

  function normalizeLine(soft, C) {
    // normalize_line: ink levels 0-1 cut to the ink -> the (height, width) uint8 line image and where the
    // ink went: {image, placement: {scale, offset: [x, y], margin: [x, y]}}
    let r0 = soft.h;
    let r1 = -1;
    let c0 = soft.w;
    let c1 = -1;
    for (let y = 0; y < soft.h; y++)
      for (let x = 0; x < soft.w; x++)
        if (soft.a[y * soft.w + x] > 0) {
          r0 = Math.min(r0, y);
          r1 = Math.max(r1, y);
          c0 = Math.min(c0, x);
          c1 = Math.max(c1, x);
        }
    if (r1 < 0) throw new Error("normalize_line: the line holds no ink");
    const h = r1 - r0 + 1;
    const w = c1 - c0 + 1;
    const cut = new Float32Array(w * h);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) cut[y * w + x] = soft.a[(r0 + y) * soft.w + c0 + x];
    const room = C.width - 2 * C.margin;
    const scale = Math.min(C.box / h, room / w);
    const sw = Math.max(1, Math.min(room, P.roundHalfEven(w * scale)));
    const sh = Math.max(1, Math.min(C.box, P.roundHalfEven(h * scale)));
    const box = P.resizeFloat({ w, h, a: cut }, sw, sh, scale < 1 ? "lanczos" : "bilinear");
    const top = Math.floor((C.height - sh) / 2);
    const image = new Uint8Array(C.height * C.width);
    for (let y = 0; y < sh; y++)
      for (let x = 0; x < sw; x++) {
        const v = Math.min(Math.max(box.a[y * sw + x], 0.0), 1.0);
        image[(top + y) * C.width + C.margin + x] = P.roundHalfEven(f32(v * 255.0));
      }
    return { image, placement: { scale: sw / w, offset: [c0, r0], margin: [C.margin, top] } };
  }

  // --- predict/lines.py: line_inputs --------------------------------------------------------------------

  function inkBox(mask, w, h) {
    // [c0, r0, c1, r1] (ends inclusive) of a mask's ink, or null
    const box = P.bbox((i) => mask[i], w, h);
    return box === null ? null : [box[2], box[0], box[3] - 1, box[1] - 1];
  }

  async function lineInputs(grey, reader) {
    // the image's lines, normalised and read by the model in one call; null without ink
    const C = reader.web.line;
    const ink = lineInk(grey, C);
    if (ink === null) return null;
    const { w, h } = ink.bright;
    const seg = S.segment(ink.mask, w, h); // throws for too many marks, as segmentation does
    const lines = seg.lines.map((line) => {
      const ids = new Set(line.flatMap((candidate) => candidate.whole.ids));
      const mask = Uint8Array.from(ink.mask, (v, i) => (v && ids.has(seg.labels[i]) ? 1 : 0));
      const [c0, r0] = inkBox(mask, w, h);
      const corner = [Math.max(c0 - 1, 0), Math.max(r0 - 1, 0)]; // where ink_levels' window starts
      const { image, placement } = normalizeLine(P.inkLevels(ink.bright, mask, ink.paper).soft, C);
      return { image, placement, corner, mask };
    });
    const pixels = new Float32Array(lines.length * C.height * C.width);
    lines.forEach((line, i) => pixels.set(line.image, i * C.height * C.width));
    const probs = await reader.forward(pixels, lines.length); // per line, per frame, the classes (blank last)
    lines.forEach((line, i) => (line.probs = probs[i]));
    return { lines, w, h };
  }

  // --- metrics.temper and predict/ctc.py ----------------------------------------------------------------

  function temper(p, web) {
    // softmax(log p / T) over one frame's classes, float32; a frame summing to less than 1 - 1e-6 leaves the
    // rest to a class of its own, scaled with the others and left out again
    const t = web.temperature;
    if (t === 1.0) return p.map(f32);
    const logits = p.map((v) => f32(f32(Math.log(Math.min(Math.max(v, web.eps), 1.0))) / t));
    const left = 1 - p.reduce((a, b) => a + b, 0);
    const rest = left > 1e-6 ? f32(Math.log(Math.max(left, web.eps)) / t) : -Infinity;
    const top = Math.max(...logits, rest);
    const e = logits.map((v) => f32(Math.exp(f32(v - top))));
    const sum = f32(e.reduce((a, b) => f32(a + b), 0) + f32(Math.exp(rest - top)));
    return e.map((v) => f32(v / sum));
  }

  function greedyDecode(frames, web) {
    // ctc.greedy_decode of one line's (frames, classes) probabilities, blank last -> {digits, runs,
    // confidences, confidence}: the best path, its runs of one digit and their probabilities
    const p = frames.map((row) => temper(row, web));
    const blank = p[0].length - 1;
    const best = p.map((row) => row.reduce((k, v, i) => (v > row[k] ? i : k), 0)); // argmax: the first
    let logP = 0;
    for (let t = 0; t < p.length; t++) logP += f32(Math.log(Math.min(Math.max(p[t][best[t]], web.eps), 1.0)));
    const runs = [];
    for (let s = 0; s < best.length; ) {
      let e = s + 1;
      while (e < best.length && best[e] === best[s]) e++;
      if (best[s] !== blank) runs.push([s, e]);
      s = e;
    }
    const digits = runs.map(([s]) => best[s]);
    const confidences = runs.map(([s, e], j) => Math.max(...p.slice(s, e).map((row) => row[digits[j]])));
    return { digits, runs, confidences, confidence: Math.exp(logP) };
  }

  function viterbi(logP, most) {
    // ctc._viterbi: one line's (frames, classes) log-probabilities -> the best path's log-probability for
    // each count of digits 0..most (-Infinity where none), and what `trace` needs to follow it back
    const frames = logP.length;
    const classes = logP[0].length;
    const blank = classes - 1;
    let score = Array.from({ length: most + 1 }, () => new Array(classes).fill(-Infinity));
    score[0][blank] = logP[0][blank];
    if (most) for (let c = 0; c < blank; c++) score[1][c] = logP[0][c];
    const cameFrom = []; // [t][n][class]: the previous frame's class
    const fresh = []; // [t][n][class]: the frame starts a digit
    const argmax = (row) => row.reduce((k, v, i) => (v > row[k] ? i : k), 0);
    cameFrom.push(score.map(() => new Array(classes).fill(0)));
    fresh.push(score.map((_, n) => Array.from({ length: classes }, (_, c) => n >= 1 && c < blank)));
    for (let t = 1; t < frames; t++) {
      const prev = score;
      const from = [];
      const starts = [];
      score = prev.map((row, n) => {
        const next = new Array(classes);
        const back = new Array(classes);
        const begins = new Array(classes).fill(false);
        back[blank] = argmax(row);
        next[blank] = row[back[blank]];
        const below = n ? prev[n - 1] : null; // one digit fewer
        for (let c = 0; c < blank; c++) {
          let startFrom = 0;
          let startBest = -Infinity;
          if (below)
            for (let q = 0; q < classes; q++) {
              const v = q === c ? -Infinity : below[q];
              if (q === 0 || v > startBest) {
                startBest = v;
                startFrom = q;
              }
            }
          begins[c] = startBest > row[c];
          next[c] = Math.max(row[c], startBest);
          back[c] = begins[c] ? startFrom : c;
        }
        from.push(back);
        starts.push(begins);
        return next.map((v, c) => v + logP[t][c]);
      });
      cameFrom.push(from);
      fresh.push(starts);
    }
    return { ends: score.map((row) => Math.max(...row)), last: score, cameFrom, fresh };
  }

  function trace(p, logP, pass, count) {
    // ctc._trace: the best path of one line with `count` digits, followed back, as greedyDecode's result
    const frames = logP.length;
    const blank = logP[0].length - 1;
    let c = pass.last[count].reduce((k, v, i) => (v > pass.last[count][k] ? i : k), 0);
    let n = count;
    const path = new Array(frames);
    for (let t = frames - 1; t >= 0; t--) {
      path[t] = c;
      const back = pass.cameFrom[t][n][c];
      n -= pass.fresh[t][n][c] ? 1 : 0;
      c = back;
    }
    const runs = [];
    for (let s = 0; s < frames; ) {
      let e = s + 1;
      while (e < frames && path[e] === path[s]) e++;
      if (path[s] !== blank) runs.push([s, e]);
      s = e;
    }
    const digits = runs.map(([s]) => path[s]);
    const confidences = runs.map(([s, e], j) => Math.max(...p.slice(s, e).map((row) => row[digits[j]])));
    let logSum = 0;
    for (let t = 0; t < frames; t++) logSum += logP[t][path[t]];
    return { digits, runs, confidences, confidence: Math.exp(logSum) };
  }

  function countDecode(lines, least, most, web) {
    // ctc.count_decode: the lines' most probable paths whose digits, all lines together, number from
    // least to most; null when none has that many
    const ps = lines.map((frames) => frames.map((row) => temper(row, web)));
    const logPs = ps.map((p) => p.map((row) => row.map((v) => f32(Math.log(Math.min(Math.max(v, web.eps), 1.0))))));
    most = Math.min(most, lines.length * lines[0].length);
    const passes = logPs.map((logP) => viterbi(logP, most));
    let best = passes[0].ends;
    const split = [];
    for (const pass of passes.slice(1)) {
      const merged = new Array(most + 1).fill(-Infinity);
      const share = new Array(most + 1).fill(0);
      for (let n = 0; n <= most; n++) {
        // np.argmax over this line's count k of the best total with n digits in all: the first of the largest
        let k = 0;
        let top = -Infinity;
        for (let j = 0; j <= most; j++) {
          const v = n - j >= 0 ? best[n - j] + pass.ends[j] : -Infinity;
          if (j === 0 || v > top) {
            top = v;
            k = j;
          }
        }
        merged[n] = top;
        share[n] = k;
      }
      best = merged;
      split.push(share);
    }
    if (least > most || !best.slice(least, most + 1).some((v) => Number.isFinite(v))) return null;
    let n = least;
    for (let m = least; m <= most; m++) if (best[m] > best[n]) n = m;
    const counts = [];
    for (const share of split.slice().reverse()) {
      counts.push(share[n]);
      n -= share[n];
    }
    counts.push(n);
    counts.reverse();
    return ps.map((p, i) => trace(p, logPs[i], passes[i], counts[i]));
  }

  function logAddExp(a, b) {
    if (a === -Infinity) return b;
    if (b === -Infinity) return a;
    const m = Math.max(a, b);
    return m + Math.log1p(Math.exp(-Math.abs(a - b)));
  }

  function logLikelihood(frames, digits, web) {
    // ctc.log_likelihood: log P(digits | the line's frames), every path that reads them summed
    const logP = frames.map((row) => temper(row, web).map((v) => f32(Math.log(Math.min(Math.max(v, web.eps), 1.0)))));
    const blank = logP[0].length - 1;
    const states = [blank];
    for (const d of digits) states.push(d, blank);
    const n = states.length;
    const skip = states.map((s, i) => i >= 2 && s !== blank && s !== states[i - 2]);
    let alpha = new Array(n).fill(-Infinity);
    alpha[0] = logP[0][blank];
    if (n > 1) alpha[1] = logP[0][states[1]];
    for (let t = 1; t < logP.length; t++) {
      alpha = alpha.map((a, i) => {
        let v = logAddExp(a, i >= 1 ? alpha[i - 1] : -Infinity);
        if (skip[i]) v = logAddExp(v, alpha[i - 2]);
        return v + logP[t][states[i]];
      });
    }
    return n > 1 ? logAddExp(alpha[n - 1], alpha[n - 2]) : alpha[n - 1];
  }

  // --- predict/lines.py: read_lines ---------------------------------------------------------------------

  function digitBox(line, lo, hi, w, h, scale) {
    // _box: the box, in input px, of the line's ink between normalised columns lo and hi
    const { placement, corner, mask } = line;
    const toWorking = (x) => (x - placement.margin[0]) / placement.scale + placement.offset[0] + corner[0];
    const [lc0, lr0, lc1, lr1] = inkBox(mask, w, h);
    const c0 = Math.min(Math.max(Math.floor(toWorking(lo)), lc0), lc1);
    const c1 = Math.max(Math.min(Math.ceil(toWorking(hi)), lc1 + 1), c0 + 1);
    const part = new Uint8Array((c1 - c0) * h);
    for (let y = 0; y < h; y++) for (let x = c0; x < c1; x++) part[y * (c1 - c0) + x - c0] = mask[y * w + x];
    let found = inkBox(part, c1 - c0, h);
    found = found === null ? [c0, lr0, c1 - 1, lr1] : [found[0] + c0, found[1], found[2] + c0, found[3]];
    const [sx, sy] = scale;
    return [
      Math.floor(found[0] * sx),
      Math.floor(found[1] * sy),
      Math.ceil((found[2] + 1) * sx),
      Math.ceil((found[3] + 1) * sy),
    ];
  }

  function digitCrop(image, lo, hi, C) {
    // _crop: the digit's columns of the normalised line, cut to its strong ink, fitted into 28 x 28
    const a = Math.max(0, Math.floor(lo));
    const b = Math.min(Math.max(Math.ceil(hi), Math.floor(lo) + 1), C.width);
    let w = b - a;
    let h = C.height;
    let part = new Uint8Array(w * h);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) part[y * w + x] = image[y * C.width + a + x];
    const strong = inkBox(
      part.map((v) => (v >= C.crop_ink ? 1 : 0)),
      w,
      h
    );
    if (strong !== null) {
      const [k0, r0, k1, r1] = strong;
      const cut = new Uint8Array((k1 - k0 + 1) * (r1 - r0 + 1));
      for (let y = r0; y <= r1; y++)
        for (let x = k0; x <= k1; x++) cut[(y - r0) * (k1 - k0 + 1) + x - k0] = part[y * w + x];
      part = cut;
      w = k1 - k0 + 1;
      h = r1 - r0 + 1;
    }
    const s = Math.min((SIDE - 4) / h, (SIDE - 4) / w);
    const fw = Math.max(1, P.roundHalfEven(w * s));
    const fh = Math.max(1, P.roundHalfEven(h * s));
    const fitted = P.resizeBytes(part, w, h, 1, fw, fh, "bilinear");
    const out = new Uint8Array(SIDE * SIDE);
    const top = Math.floor((SIDE - fh) / 2);
    const left = Math.floor((SIDE - fw) / 2);
    for (let y = 0; y < fh; y++) for (let x = 0; x < fw; x++) out[(top + y) * SIDE + left + x] = fitted[y * fw + x];
    return out;
  }

  const noReading = (reason, size) => ({
    text: null,
    lines: [],
    confidence: null,
    unsure: true,
    reason,
    digits: [],
    size,
  });

  function readLines(inputs, decoded, size, grey, reader, reasons = []) {
    // the Reading of the lines' decodings: texts, digits with boxes and crops, the reasons to be unsure
    const web = reader.web;
    const C = web.line;
    const names = web.class_names;
    const threshold = web.threshold;
    const scale = [size[0] / grey.w, size[1] / grey.h];
    const digits = [];
    const texts = [];
    reasons = [...reasons];
    let confidence = 1.0;
    decoded.forEach((d, k) => {
      const line = inputs.lines[k];
      const text = d.digits.map((c) => names[c]).join("");
      texts.push(text);
      confidence *= d.confidence;
      if (!text) reasons.push(`line ${k + 1}: ink, but no digit read`);
      else if (d.confidence < threshold)
        reasons.push(
          `line ${k + 1}: confidence ${d.confidence.toFixed(3)} is below the threshold ${threshold.toFixed(3)}`
        );
      const framePx = C.width / line.probs.length;
      const centres = d.runs.map(([s, e]) => ((s + e) / 2) * framePx);
      const bounds = [0.0, ...centres.slice(1).map((c, j) => (centres[j] + c) / 2), C.width];
      d.digits.forEach((c, j) => {
        const lo = bounds[j];
        const hi = bounds[j + 1];
        const crop = digitCrop(line.image, lo, hi, C);
        const mark = names[c] === C.mark; // not a digit: refused, wherever it stands and however sure
        if (mark) reasons.push(markReason(k, j, web));
        digits.push({
          digit: c,
          confidence: d.confidences[j],
          box: digitBox(line, lo, hi, inputs.w, inputs.h, scale),
          line: k,
          unsure: mark || d.confidences[j] < threshold,
          preprocessed: Array.from({ length: SIDE }, (_, y) => Array.from(crop.subarray(y * SIDE, (y + 1) * SIDE))),
        });
      });
    });
    return S.readingOf(texts, confidence, reasons, digits, size);
  }

  // lines.mark_reason: why a reading is refused where its line model read a mark (0-based line and place)
  const markReason = (line, place, web) => `line ${line + 1}, ${S.ordinal(place + 1)} place: ${web.not_a_digit_reason}`;

  function markReasons(reading, web) {
    // lines.mark_reasons: the markReason of every mark among a reading's digits
    const places = new Map();
    const found = [];
    for (const d of reading.digits) {
      const place = (places.has(d.line) ? places.get(d.line) : -1) + 1;
      places.set(d.line, place);
      if (web.class_names[d.digit] === web.line.mark) found.push(markReason(d.line, place, web));
    }
    return found;
  }

  function flagMarks(chosen, line, web) {
    // reading.combine's last step: where the line model read a mark, unsure, saying where first
    const missing = markReasons(line, web).filter((m) => !(chosen.reason || "").includes(m));
    if (!missing.length) return chosen;
    return { ...chosen, unsure: true, reason: [...missing, ...(chosen.reason ? [chosen.reason] : [])].join("; ") };
  }

  function meetCount(inputs, decoded, least, web) {
    // lines._meet_count for an exact count (the combined reader's): the best paths with that many digits,
    // and the reason to be unsure of them
    const found = decoded.reduce((n, d) => n + d.digits.length, 0);
    const expected = `expected ${least} digit${least === 1 ? "" : "s"}, found ${found}`;
    if (found === least) return [decoded, []];
    const sure = decoded.every((d) => d.digits.length && d.confidence >= web.threshold);
    const forced = countDecode(
      inputs.lines.map((line) => line.probs),
      least,
      least,
      web
    );
    if (forced === null) return [decoded, [expected + (sure ? " clearly" : "")]];
    const log = (v) => Math.log(Math.max(v, 1e-300));
    const gap = decoded.reduce((g, d, i) => g + log(d.confidence) - log(forced[i].confidence), 0);
    return [forced, [expected + (sure && gap > web.line.log_clearly ? " clearly" : "")]];
  }

  const count = (reading) => reading.lines.reduce((n, t) => n + t.length, 0);

  function ctcScores(inputs, reading, web) {
    // reading._ctc: the line model's log-probability of each line of the reading's text; null when its
    // lines are not the line model's
    if (inputs === null || reading.text === null || reading.lines.length !== inputs.lines.length) return null;
    const names = new Map(web.class_names.map((name, i) => [name, i]));
    return reading.lines.map((text, k) =>
      logLikelihood(
        inputs.lines[k].probs,
        [...text].map((c) => names.get(c)),
        web
      )
    );
  }

  const sum = (values) => values.reduce((a, b) => a + b, 0);
  const shown = (t) => t.replaceAll("\n", " / ");

  function best(scores) {
    // max(scores, key=scores.get): the first text of the highest score
    let text = null;
    for (const [t, v] of scores) if (text === null || v > scores.get(text)) text = t;
    return text;
  }

  function disagree(text, scores) {
    // reading._disagree without a count asked
    const others = [...scores.keys()].filter((t) => t !== text).map(shown).join(" or ");
    return `the two readers disagree: ${shown(text)} or ${others}`;
  }

  function combine(line, segment, scored, web) {
    // reading.combine without a count asked, with reading.COMBINING's constants (model.json's)
    const { segment_bonus: bonus, both_sure: bothSure } = web.line.combining;
    if (segment.text === null || line.text === null) return segment.text === null ? line : segment;
    if (line.text === segment.text) {
      // two readers agree
      const chosen = !segment.unsure || line.unsure ? segment : line;
      const confidence = 1.0 - (1.0 - (line.confidence || 0.0)) * (1.0 - (segment.confidence || 0.0));
      const unsure = bothSure ? line.unsure || segment.unsure : line.unsure && segment.unsure;
      if (unsure && !chosen.unsure) {
        const doubt = line.unsure
          ? `the line model is unsure: ${line.reason}`
          : `the segmentation is unsure: ${segment.reason}`;
        return { ...chosen, confidence, unsure: true, reason: doubt };
      }
      return { ...chosen, confidence, unsure, reason: unsure ? chosen.reason : null };
    }
    if (line.lines.length > 1 && scored.every(([, , ctc]) => ctc !== null)) return combineLines(line, scored, bonus);
    const scores = new Map(); // text -> best score, in the order first met
    const bestOf = new Map();
    for (const [reading, how, ctc] of scored) {
      if (ctc === null) continue;
      const value = sum(ctc) + (how === "segment" && !reading.unsure ? bonus : 0.0);
      if (!scores.has(reading.text) || value > scores.get(reading.text)) {
        scores.set(reading.text, value);
        bestOf.set(reading.text, reading);
      }
    }
    if (!scores.size) return segment; // the line model cannot score them (other lines)
    const text = best(scores);
    const top = scores.get(text);
    let total = 0;
    for (const v of scores.values()) total += Math.exp(v - top);
    const chosen = bestOf.get(text);
    return { ...chosen, confidence: (chosen.confidence || 0.0) * (1.0 / total), unsure: true, reason: disagree(text, scores) };
  }

  function combineLines(line, scored, bonus) {
    // reading._combine_lines: several lines, each chosen apart (its CTC log-probability, plus the bonus
    // where the segmentation read that line's digits surely), the reading put together from them
    const chosenLines = [];
    const texts = [];
    let share = 1.0;
    line.lines.forEach((_, k) => {
      const scores = new Map();
      const bestOf = new Map();
      for (const [reading, how, ctc] of scored) {
        const sure = how === "segment" && !reading.digits.some((d) => d.line === k && d.unsure);
        const value = ctc[k] + (sure && reading.lines[k] ? bonus : 0.0);
        const t = reading.lines[k];
        if (!scores.has(t) || value > scores.get(t)) {
          scores.set(t, value);
          bestOf.set(t, reading);
        }
      }
      const text = best(scores);
      chosenLines.push(bestOf.get(text));
      texts.push(text);
      let total = 0;
      for (const v of scores.values()) total += Math.exp(v - scores.get(text));
      share *= 1.0 / total;
    });
    const text = texts.join("\n");
    const whole = new Map(); // {r.text: sum(ctc)} then {**whole, text: 0.0}: each text where first met
    for (const [r, , ctc] of scored) whole.set(r.text, sum(ctc));
    whole.set(text, 0.0);
    return {
      text,
      lines: texts,
      confidence: Math.min(...chosenLines.map((r) => r.confidence || 0.0)) * share,
      unsure: true,
      reason: disagree(text, whole),
      digits: chosenLines.flatMap((r, k) => r.digits.filter((d) => d.line === k)),
      size: line.size,
    };
  }

  async function readNumber(rgba, width, height, reader) {
    // RGBA pixels -> the reading (without "model") by reader.method: "line" (lines.read_lines) or
    // "combined" (reading.candidates and combine, the digit model asked through reader.classify)
    S.checkSize(width, height);
    const size = [width, height];
    const grey = P.toGrey(rgba, width, height);
    const web = reader.web;
    const inputs = await lineInputs(grey, reader);
    const greedy = inputs && inputs.lines.map((line) => greedyDecode(line.probs, web));
    const line =
      inputs === null ? noReading(P.blankReason(grey), size) : readLines(inputs, greedy, size, grey, reader);
    if (reader.method !== "combined") return line;
    const h = await S.hypotheses(rgba, width, height, reader.classify);
    const segment = await S.decide(h);
    const found = [
      [line, "line"],
      [segment, "segment"],
    ];
    const [nLine, nSegment] = [count(line), count(segment)];
    // Each reader asked for the other's count, when both counts are ones a reading may have (reading.candidates).
    const cross = nLine !== nSegment && Math.min(nLine, nSegment) > 0 && Math.max(nLine, nSegment) <= web.line.max_digits;
    if (inputs !== null && line.text !== segment.text && cross) {
      const [forced, reasons] = meetCount(inputs, greedy, nSegment, web);
      found.push([readLines(inputs, forced, size, grey, reader, reasons), "line"]);
      found.push([await S.decide(h, reader.classify, nLine, nLine, web.line.log_clearly), "segment"]);
    }
    const scored = found.map(([r, how]) => [r, how, ctcScores(inputs, r, web)]);
    const chosen = judge(line, segment, scored, combine(line, segment, scored, web), web);
    return flagMarks(chosen, line, web);
  }

  function numberFeatures(line, segment, scored, chosen, C) {
    // reading.number_features: the evidence a NumberRule weighs, in NUMBER_FEATURES' order
    const doubt = (r) =>
      r.digits.length ? Math.log(r.digits.reduce((s, d) => s + (1.0 - d.confidence), 0) + C.doubt_floor) : 0.0;
    const perLine = chosen.lines.map(() => new Map()); // line k: its text -> CTC log-probability
    const whole = new Map(); // each candidate's text -> CTC log-probability, all lines
    for (const [r, , ctc] of scored) {
      if (ctc === null || ctc.length !== chosen.lines.length) continue;
      whole.set(r.text, sum(ctc));
      r.lines.forEach((t, k) => perLine[k].set(t, ctc[k]));
    }
    const total = chosen.lines.reduce((s, t, k) => s + (perLine[k].has(t) ? perLine[k].get(t) : -Infinity), 0);
    const ctc = Math.max(total, C.ctc_floor);
    const others = [...whole].filter(([t]) => t !== chosen.text).map(([, v]) => v);
    const margin = others.length ? Math.min(Math.max(ctc - Math.max(...others), -C.margin_cap), C.margin_cap) : C.margin_cap;
    return [line.text === segment.text ? 1.0 : 0.0, doubt(line), doubt(segment), ctc, margin];
  }

  function judge(line, segment, scored, chosen, web) {
    // reading.judge without a count asked: the run's NumberRule (model.json's web.numbers) gives the
    // confidence, unsure below its threshold; without one, the reading as it is
    const rule = web.numbers;
    if (!rule || chosen.text === null) return chosen;
    const x = numberFeatures(line, segment, scored, chosen, web.line.number);
    const z = rule.weights.reduce((s, w, i) => s + w * x[i], rule.bias); // in order, as runs.NumberRule adds them
    const confidence = z >= 0 ? 1.0 / (1.0 + Math.exp(-z)) : Math.exp(z) / (1.0 + Math.exp(z));
    const low = confidence < rule.threshold;
    const reasons = low && chosen.unsure && chosen.reason ? [chosen.reason] : [];
    if (low) reasons.push(`confidence ${confidence.toFixed(3)} is below the threshold ${rule.threshold.toFixed(3)}`);
    return { ...chosen, confidence, unsure: low, reason: reasons.join("; ") || null };
  }

  return { readNumber, logLikelihood, greedyDecode, countDecode };
})();
