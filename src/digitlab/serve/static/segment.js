// Reading a whole number in the browser, as `digitlab read` does with a single-digit run (the segmentation
// method, no count of digits asked): digitlab.preprocess.segment (lines, digit candidates, the cuts worth
// asking) and digitlab.predict.segmented (the crops normalised as one digit is, the classifier's answers
// scored, whole or cut per candidate, the reasons) ported step for step, with Python's constants and tie
// orders. The model is asked through `classify`, one call for the wholes (and the parts of candidates too
// wide for one digit), a second only when some whole is read unsurely, as Python asks it.
// With a count of digits to meet (the combined reader of lines.js asks the segmentation for the line
// model's count), `hypotheses` then `decide(h, classify, least, most)`: the cut graphs, neighbours merged
// and the best-scoring reading with that count, as segmented.ask and decide do with a DigitCount.
// tests/test_web.py holds the two to each other in Chromium. Defines one global, digitlabSegment:
// { readNumber(rgba, width, height, classify) -> the JSON of /api/read without "model", and the steps }.
"use strict";

const digitlabSegment = (() => {
  const P = digitlabPreprocess;
  // preprocess/segment.py
  const MAX_CANDIDATES = 64;
  const LINE_OVERLAP = 0.5;
  const FLOAT_DISTANCE = 0.6;
  const SMALL = 0.75;
  const TINY = 0.5;
  const TINY_REACH = 0.25;
  const MERGE_OVERLAP = 0.5;
  const CONTAINED = 0.8;
  const MAX_DIGIT_WIDTH = 1.3;
  const TINY_WIDTH = 1.6;
  const SPLIT_WIDTH = 0.25;
  const THREE_WIDTH = 1.4;
  const MIN_PART = 0.1;
  const MAX_CUTS = 5;
  // predict/segmented.py: its Scoring
  const CUT_PENALTY = -1.2;
  const WIDE_PENALTY = -4.0;
  const WIDE_FROM = 1.1;
  const AMBIGUOUS = Math.log(2.0);
  const MAX_ASPECT = 20;
  const MAX_PARTS = 10;
  const WORK_SIDE = 160; // preprocess/image.py

  // --- pieces: {ids (sorted labels), box [x0, y0, x1, y1] ends exclusive, cols [c0, c1) or null} -----------

  function piece(ids, box, cols = null) {
    return { ids, box, cols, key: `${ids.join(",")}|${box.join(",")}|${cols ? cols.join(",") : ""}` };
  }
  const width = (p) => p.box[2] - p.box[0];
  const height = (p) => p.box[3] - p.box[1];
  const centreX2 = (p) => p.box[0] + p.box[2];
  const overlap = (a0, a1, b0, b1) => Math.max(0, Math.min(a1, b1) - Math.max(a0, b0));
  const byCentre = (a, b) => centreX2(a) - centreX2(b); // Array.prototype.sort is stable, as Python's sorted

  function union(a, b) {
    const box = [
      Math.min(a.box[0], b.box[0]),
      Math.min(a.box[1], b.box[1]),
      Math.max(a.box[2], b.box[2]),
      Math.max(a.box[3], b.box[3]),
    ];
    return piece([...a.ids, ...b.ids].sort((x, y) => x - y), box);
  }

  function median(values) {
    // np.median of Python numbers (float64)
    const v = values.slice().sort((a, b) => a - b);
    const n = v.length;
    return n % 2 ? v[(n - 1) / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
  }

  // --- segment.py ---------------------------------------------------------------------------------------

  function segment(mask, w, h) {
    // -> {labels, w, h, lines: [[{whole, cuts}]], heights}, or throws a one-line error for too many marks
    const { labels, comps } = P.label(mask, w, h);
    const pieces = comps.map((c, i) => piece([i + 1], [c.x0, c.y0, c.x1, c.y1]));
    const seg = { labels, w, h, lines: [], heights: [] };
    const grouped = groupLines(pieces).map((members) => {
      const lh = lineHeight(members);
      return [mergePieces(members, lh), lh];
    });
    const count = grouped.reduce((s, [m]) => s + m.length, 0);
    if (count > MAX_CANDIDATES)
      throw new Error(
        `image: ${count} separate marks found, at most ${MAX_CANDIDATES} digits are read in one image; ` +
          "expected a number (crop the image to it)"
      );
    for (const [members, lh] of grouped) {
      seg.lines.push(members.map((p) => ({ whole: p, cuts: proposeCuts(p, seg, lh) })));
      seg.heights.push(lh);
    }
    return seg;
  }

  function lineHeight(pieces) {
    const tallest = Math.max(...pieces.map(height));
    return median(pieces.map(height).filter((v) => v >= 0.5 * tallest));
  }

  function groupLines(pieces) {
    const lines = [];
    const spans = []; // [y0, y1) of each line's founding piece
    for (const p of pieces.slice().sort((a, b) => height(b) - height(a))) {
      const [, y0, , y1] = p.box;
      if (spans.length) {
        const shared = spans.map(([s0, s1]) => overlap(y0, y1, s0, s1));
        let best = 0;
        shared.forEach((v, k) => {
          if (v > shared[best]) best = k; // np.argmax: the first of the largest
        });
        if (shared[best] >= LINE_OVERLAP * height(p)) {
          lines[best].push(p);
          continue;
        }
      }
      let near = null; // [distance, line] of the nearest line a small piece may float by
      spans.forEach(([s0, s1], k) => {
        const d = Math.max(s0 - y1, y0 - s1);
        if (height(p) < SMALL * (s1 - s0) && d <= FLOAT_DISTANCE * (s1 - s0) && (near === null || d < near[0]))
          near = [d, k];
      });
      if (near) lines[near[1]].push(p);
      else {
        lines.push([p]);
        spans.push([y0, y1]);
      }
    }
    lines.forEach((line) => line.sort(byCentre));
    const order = lines.map((_, k) => k).sort((a, b) => spans[a][0] + spans[a][1] - (spans[b][0] + spans[b][1]));
    return order.map((k) => lines[k]);
  }

  function closeness(tiny, p) {
    // [minus the columns they share, the px between them]: smaller is closer
    const shared = overlap(tiny.box[0], tiny.box[2], p.box[0], p.box[2]);
    return [-shared, Math.max(p.box[0] - tiny.box[2], tiny.box[0] - p.box[2], 0)];
  }

  function mergePieces(members, lh) {
    let pieces = members.slice().sort(byCentre);
    const widest = MAX_DIGIT_WIDTH * lh;
    const fits = (a, b) => Math.max(a.box[2], b.box[2]) - Math.min(a.box[0], b.box[0]) <= widest;
    let merged = true;
    while (merged) {
      merged = false;
      search: for (let i = 0; i < pieces.length; i++)
        for (let j = i + 1; j < pieces.length; j++) {
          const a = pieces[i];
          const b = pieces[j];
          const shared = overlap(a.box[0], a.box[2], b.box[0], b.box[2]) / Math.min(width(a), width(b));
          const short = Math.min(height(a), height(b)) < SMALL * lh;
          if ((shared >= CONTAINED || (short && shared >= MERGE_OVERLAP)) && fits(a, b)) {
            pieces[i] = union(a, b);
            pieces.splice(j, 1);
            merged = true;
            break search;
          }
        }
    }
    const tinies = pieces.filter((p) => height(p) < TINY * lh).sort((a, b) => height(a) - height(b));
    for (const tiny of tinies) {
      if (pieces.length < 2 || !pieces.includes(tiny)) continue;
      const others = pieces.filter(
        (p) => p !== tiny && Math.max(p.box[2], tiny.box[2]) - Math.min(p.box[0], tiny.box[0]) <= TINY_WIDTH * lh
      );
      if (!others.length) continue;
      let best = others[0];
      let close = closeness(tiny, best);
      for (const p of others.slice(1)) {
        const c = closeness(tiny, p);
        if (c[0] < close[0] || (c[0] === close[0] && c[1] < close[1])) {
          best = p;
          close = c;
        }
      }
      if (close[0] < 0 || close[1] <= TINY_REACH * lh) {
        pieces[pieces.indexOf(best)] = union(best, tiny);
        pieces.splice(pieces.indexOf(tiny), 1);
      }
    }
    return pieces.sort(byCentre);
  }

  function pieceMask(p, seg, margin = 0) {
    // the piece's ink over its box grown by `margin` px (clipped): {x0, y0, w, h, mask}
    const x0 = Math.max(p.box[0] - margin, 0);
    const y0 = Math.max(p.box[1] - margin, 0);
    const x1 = Math.min(p.box[2] + margin, seg.w);
    const y1 = Math.min(p.box[3] + margin, seg.h);
    const w = x1 - x0;
    const h = y1 - y0;
    const ids = new Set(p.ids);
    const mask = new Uint8Array(w * h);
    const c0 = p.cols ? p.cols[0] : -Infinity;
    const c1 = p.cols ? p.cols[1] : Infinity;
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++) {
        const X = x0 + x;
        if (X >= c0 && X < c1 && ids.has(seg.labels[(y0 + y) * seg.w + X])) mask[y * w + x] = 1;
      }
    return { x0, y0, w, h, mask };
  }

  function part(p, seg, c0, c1) {
    // the piece's ink between columns [c0, c1) with its own tight box; null when that holds no ink
    const { w, h, mask } = pieceMask(piece(p.ids, p.box, [c0, c1]), seg);
    const box = P.bbox((i) => mask[i], w, h); // [r0, r1, k0, k1], ends exclusive
    if (box === null) return null;
    const [x0, y0] = p.box;
    return piece(p.ids, [x0 + box[2], y0 + box[0], x0 + box[3], y0 + box[1]], [c0, c1]);
  }

  function roundHalfEven(x) {
    const r = Math.round(x);
    return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
  }

  function cutColumns(profile, minPart, count) {
    const n = profile.length;
    const k = 1 / 3;
    const padded = [profile[0], ...profile, profile[n - 1]];
    const smooth = Array.from({ length: n }, (_, i) => padded[i] * k + padded[i + 1] * k + padded[i + 2] * k);
    const inner = [];
    for (let c = minPart; c < n - minPart + 1; c++) inner.push(c);
    const flat = 1e-9;
    const minima = inner.filter(
      (c) => smooth[c] <= smooth[c - 1] + flat && smooth[c] <= smooth[Math.min(c + 1, n - 1)] + flat
    );
    const ranked = (minima.length ? minima : inner)
      .slice()
      .sort(
        (a, b) =>
          profile[a] - profile[b] || smooth[a] - smooth[b] || Math.abs(a - n / 2) - Math.abs(b - n / 2)
      );
    const chosen = [];
    for (const c of ranked) {
      if (chosen.length === count) break;
      if (chosen.every((x) => Math.abs(c - x) >= minPart)) chosen.push(c);
    }
    return chosen.sort((a, b) => a - b);
  }

  function proposeCuts(p, seg, lh) {
    if (width(p) < SPLIT_WIDTH * lh || width(p) < 4) return [];
    const { w, h, mask } = pieceMask(p, seg);
    const profile = new Array(w).fill(0);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) profile[x] += mask[y * w + x];
    const minPart = Math.max(2, roundHalfEven(MIN_PART * lh));
    const columns = cutColumns(profile, minPart, MAX_CUTS).map((c) => p.box[0] + c);
    const splits = columns.map((c) => [c]);
    if (width(p) > THREE_WIDTH * lh)
      columns.forEach((a, i) => columns.slice(i + 1).forEach((b) => b - a >= minPart && splits.push([a, b])));
    const out = [];
    for (const cuts of splits) {
      const edges = [p.box[0], ...cuts, p.box[2]];
      const parts = edges.slice(1).map((c1, i) => part(p, seg, edges[i], c1));
      if (parts.every((q) => q !== null && height(q) >= TINY * lh)) out.push(parts); // no bar or tail alone
    }
    return out;
  }

  // --- segmented.py -------------------------------------------------------------------------------------

  function normalise(ink, seg, p) {
    // one piece's ink through the steps one digit takes; the window is its box plus 2 px, another
    // candidate's ink in it made paper
    const { x0, y0, w, h, mask } = pieceMask(p, seg, 2);
    const bright = new Float32Array(w * h);
    const paper = Math.fround(ink.paper);
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++) {
        const i = y * w + x;
        const j = (y0 + y) * seg.w + x0 + x;
        bright[i] = seg.labels[j] > 0 && !mask[i] ? paper : ink.bright.a[j];
      }
    const levels = P.inkLevels({ w, h, a: bright }, mask, ink.paper);
    return P.normalizeDigit(levels.soft, levels.mask);
  }

  async function ask(classify, ink, seg, pieces, results, crops) {
    // normalise the pieces not asked yet, each once, and classify them in one call
    const fresh = [];
    const seen = new Set();
    for (const p of pieces)
      if (!results.has(p.key) && !seen.has(p.key)) {
        seen.add(p.key);
        fresh.push(p);
      }
    if (!fresh.length) return;
    const batch = fresh.map((p) => normalise(ink, seg, p));
    const rows = await classify(batch);
    fresh.forEach((p, i) => {
      results.set(p.key, rows[i]);
      crops.set(p.key, batch[i]);
    });
  }

  const partsOf = (candidate) => candidate.cuts.flat();
  const tooWide = (candidate, lh) => width(candidate.whole) > WIDE_FROM * lh;
  const weighCuts = (candidate, lh, results) => results.get(candidate.whole.key).unsure || tooWide(candidate, lh);

  function score(confidences, widths) {
    let fit = 0;
    for (const p of confidences) fit += Math.log(Math.max(p, 1e-12));
    let wide = 0;
    for (const w of widths) wide += WIDE_PENALTY * Math.max(0.0, w - WIDE_FROM);
    return fit + wide + CUT_PENALTY * (confidences.length - 1);
  }

  function choose(seg, results) {
    // each candidate's best-scoring option, with the next best when within AMBIGUOUS
    const steps = [];
    seg.lines.forEach((line, k) => {
      const lh = seg.heights[k];
      for (const candidate of line) {
        const options = [[candidate.whole]];
        if (weighCuts(candidate, lh, results)) options.push(...candidate.cuts);
        const scores = options.map((parts) =>
          score(
            parts.map((p) => results.get(p.key).confidence),
            parts.map((p) => width(p) / lh)
          )
        );
        // np.argsort(scores)[::-1]: ascending, equal scores in their order, then reversed
        const order = scores
          .map((_, i) => i)
          .sort((a, b) => scores[a] - scores[b])
          .reverse();
        let other = null;
        if (order.length > 1 && scores[order[0]] - scores[order[1]] < AMBIGUOUS)
          other = [options[order[1]].length, scores[order[1]]];
        steps.push({ line: k, parts: options[order[0]], score: scores[order[0]], other });
      }
    });
    return steps;
  }

  function ordinal(n) {
    // results.ordinal: 1st, 2nd, 3rd, 4th, ... 11th, 12th, 13th, ... 21st
    const suffix = [11, 12, 13].includes(n % 100) ? "th" : { 1: "st", 2: "nd", 3: "rd" }[n % 10] || "th";
    return `${n}${suffix}`;
  }

  function reading(seg, size, scale, steps, results, crops, found = []) {
    const digits = [];
    const reasons = [...found];
    const texts = seg.lines.map(() => "");
    const [sx, sy] = scale;
    for (const step of steps) {
      const first = digits.length + 1;
      for (const p of step.parts) {
        const r = results.get(p.key);
        const [x0, y0, x1, y1] = p.box;
        const crop = crops.get(p.key);
        digits.push({
          digit: r.top3[0].digit,
          confidence: r.confidence,
          box: [Math.floor(x0 * sx), Math.floor(y0 * sy), Math.ceil(x1 * sx), Math.ceil(y1 * sy)],
          line: step.line,
          unsure: r.unsure,
          preprocessed: Array.from({ length: P.SIDE }, (_, y) => Array.from(crop.subarray(y * P.SIDE, (y + 1) * P.SIDE))),
        });
        texts[step.line] += r.top3[0].label;
        if (r.unsure) reasons.push(`the ${ordinal(digits.length)} digit: ${r.reason}`);
      }
      if (step.other !== null) {
        const [count, other] = step.other;
        const n = step.parts.length;
        const last = first + n - 1;
        const where = n === 1 ? `the ${ordinal(first)} digit` : `the ${ordinal(first)} to ${ordinal(last)} digits`;
        const plural = (m) => `${m} digit${m > 1 ? "s" : ""}`;
        const doubt =
          count === n
            ? "not sure where one digit ends and the next begins"
            : `not sure whether this is ${plural(n)} or ${plural(count)}`;
        reasons.push(`${where}: ${doubt} (${Math.exp(step.score).toFixed(3)} against ${Math.exp(other).toFixed(3)})`);
      }
    }
    let confidence = 1.0;
    for (const d of digits) confidence *= d.confidence;
    return readingOf(texts, confidence, reasons, digits, size);
  }

  function readingOf(texts, confidence, reasons, digits, size) {
    // results.Reading's fields: the lines' texts, unsure with its reasons joined as Python joins them
    return {
      text: texts.join("\n"),
      lines: texts,
      confidence,
      unsure: reasons.length > 0,
      reason: reasons.join("; ") || null,
      digits,
      size,
    };
  }

  function checkSize(width, height) {
    // segmented.open_image's refusal of an image too long and thin to hold readable digits
    if (Math.max(width, height) > MAX_ASPECT * Math.min(width, height)) {
      const wide = width > height;
      throw new Error(
        `image: ${width}x${height} px, ${roundHalfEven(Math.max(width, height) / Math.min(width, height))} times as ` +
          `${wide ? "wide" : "tall"} as it is ${wide ? "tall" : "wide"}; expected at most ${MAX_ASPECT} times ` +
          `(numbers are read with the long side at ${WORK_SIDE} px, where these digits would be too small): ` +
          "split a long line into several"
      );
    }
  }

  async function hypotheses(rgba, width, height, classify) {
    // segmented.ask without a count: {size, scale, seg, results, crops, ink}, seg null without ink;
    // `classify(crops)`: 28x28 Uint8Arrays -> one row each with digit, label, confidence, top3, unsure and
    // reason, as predict.classify gives
    checkSize(width, height);
    const size = [width, height];
    const grey = P.toGrey(rgba, width, height);
    const scale = [width / grey.w, height / grey.h];
    const ink = P.findInk(grey);
    const h = { size, scale, seg: null, results: new Map(), crops: new Map(), ink, graphs: null, merged: null };
    if (ink === null || !ink.mask.some((v) => v)) return { ...h, blank: P.blankReason(grey) };
    const seg = segment(ink.mask, grey.w, grey.h);
    h.seg = seg;
    const candidates = [];
    seg.lines.forEach((line, k) => line.forEach((c) => candidates.push([c, seg.heights[k]])));
    const first = candidates.flatMap(([c, lh]) => [c.whole, ...(tooWide(c, lh) ? partsOf(c) : [])]);
    await ask(classify, ink, seg, first, h.results, h.crops);
    const cut = candidates.filter(([c, lh]) => weighCuts(c, lh, h.results)).flatMap(([c]) => partsOf(c));
    await ask(classify, ink, seg, cut, h.results, h.crops); // nothing left to ask when every whole is sure
    return h;
  }

  const countOf = (steps) => steps.reduce((n, s) => n + s.parts.length, 0);
  const foundReason = (least, most, found, clearly) =>
    `expected ${least === most ? least : `${least}-${most}`} digit${most === 1 ? "" : "s"}, found ${found}` +
    (clearly ? " clearly" : "");

  async function decide(h, classify = null, least = null, most = null, logClearly = null) {
    // segmented.decide: the reading; with a count [least, most] (asking the model what it needs), the
    // best-scoring reading with that many digits when the best one has another count, its count "clearly"
    // found when the forced reading is less likely by logClearly (count.LOG_CLEARLY, from model.json)
    if (h.seg === null)
      return { text: null, lines: [], confidence: null, unsure: true, reason: h.blank, digits: [], size: h.size };
    let steps = choose(h.seg, h.results);
    const found = countOf(steps);
    const reasons = [];
    if (least !== null && (found < least || found > most)) {
      await askForCount(h, classify, most);
      const sure = !steps.some((s) => s.other) && !steps.some((s) => s.parts.some((p) => h.results.get(p.key).unsure));
      const forced = withCount(h, least, most, steps);
      if (forced === null) reasons.push(foundReason(least, most, found, sure));
      else {
        const gap = steps.reduce((a, s) => a + s.score, 0) - forced.reduce((a, s) => a + s.score, 0);
        reasons.push(foundReason(least, most, found, sure && gap > logClearly));
        steps = forced;
      }
    }
    return reading(h.seg, h.size, h.scale, steps, h.results, h.crops, reasons);
  }

  async function askForCount(h, classify, most) {
    // segmented.ask's last call with a count: every candidate's cut graph and each two neighbours merged
    const { seg } = h;
    const count = seg.lines.reduce((n, line) => n + line.length, 0);
    const parts = Math.min(MAX_PARTS, Math.max(3, most - (count - 1)));
    h.graphs = new Map();
    h.merged = new Map();
    seg.lines.forEach((line, k) =>
      line.forEach((c, i) => {
        h.graphs.set(`${k},${i}`, cutGraph(c.whole, seg, seg.heights[k], parts));
        if (i + 1 < line.length) h.merged.set(`${k},${i}`, union(c.whole, line[i + 1].whole));
      })
    );
    const more = [...[...h.graphs.values()].flatMap((g) => g.map(([, , q]) => q)), ...h.merged.values()];
    await ask(classify, h.ink, seg, more, h.results, h.crops);
  }

  function cutGraph(p, seg, lh, parts) {
    // segment.cut_graph: [c0, c1, piece] between any two columns where the candidate may be cut, in the
    // order Python's dict holds them
    if (width(p) < SPLIT_WIDTH * lh || width(p) < 4) return [];
    const { w, h, mask } = pieceMask(p, seg);
    const profile = new Array(w).fill(0);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) profile[x] += mask[y * w + x];
    const minPart = Math.max(2, roundHalfEven(MIN_PART * lh));
    const minima = new Set([0, w, ...cutColumns(profile, minPart, w)]);
    const even = new Set();
    for (let k = 2; k <= parts; k++) for (let i = 1; i < k; i++) even.add(roundHalfEven((w * i) / k));
    // an equal division within half a part's least width of a minimum adds nothing the minimum does not
    const apart = (c) => Math.min(...[...minima].map((m) => Math.abs(c - m))) * 2 >= minPart;
    const columns = [...new Set([...minima, ...[...even].filter(apart)])]
      .filter((c) => c === 0 || c === w || (minPart <= c && c <= w - minPart))
      .sort((a, b) => a - b);
    const out = [];
    const x0 = p.box[0];
    for (let i = 0; i < columns.length; i++)
      for (const b of columns.slice(i + 1)) {
        const a = columns[i];
        if (b - a > MAX_DIGIT_WIDTH * lh) break;
        if (b - a >= minPart) {
          const q = part(p, seg, x0 + a, x0 + b);
          if (q !== null && height(q) >= TINY * lh) out.push([x0 + a, x0 + b, q]);
        }
      }
    return out;
  }

  const optionScore = (parts, lh, results) =>
    score(
      parts.map((p) => results.get(p.key).confidence),
      parts.map((p) => width(p) / lh)
    );
  const partsKey = (parts) => parts.map((p) => p.key).join(" ");

  function bestPaths(h, k, i) {
    // segmented._best_paths: the best-scoring cut of the candidate into each number of digits from 2
    const graph = h.graphs.get(`${k},${i}`) || [];
    const lh = h.seg.heights[k];
    const { box } = h.seg.lines[k][i].whole;
    const best = new Map([[`${box[0]},0`, [0.0, []]]]);
    const sorted = graph.slice().sort((p, q) => p[0] - q[0] || p[1] - q[1]);
    for (const [a, b, q] of sorted) {
      const weight = optionScore([q], lh, h.results) + CUT_PENALTY;
      for (let m = 0; m < MAX_PARTS; m++) {
        const from = best.get(`${a},${m}`);
        const to = best.get(`${b},${m + 1}`);
        if (from && (!to || from[0] + weight > to[0])) best.set(`${b},${m + 1}`, [from[0] + weight, [...from[1], q]]);
      }
    }
    const out = [];
    for (let m = 2; m <= MAX_PARTS; m++) if (best.has(`${box[2]},${m}`)) out.push(best.get(`${box[2]},${m}`)[1]);
    return out;
  }

  function everyOption(h, k, i) {
    // segmented._options with every: the whole, then every cut whose parts were asked and the best paths
    const candidate = h.seg.lines[k][i];
    const options = [[candidate.whole]];
    const seen = new Set();
    for (const parts of [...candidate.cuts, ...bestPaths(h, k, i)]) {
      const key = partsKey(parts);
      if (seen.has(key)) continue;
      seen.add(key);
      if (parts.every((p) => h.results.has(p.key))) options.push(parts);
    }
    return options.map((parts) => [parts, optionScore(parts, h.seg.heights[k], h.results)]);
  }

  function withCount(h, least, most, best) {
    // segmented._with_count: the best-scoring reading with least to most digits (a dynamic programme over
    // the candidates, left to right, and the digits read so far); null when none has that many
    const places = [];
    h.seg.lines.forEach((line, k) => line.forEach((_, i) => places.push([k, i])));
    const kept = new Map(best.map((s) => [`${s.line}|${partsKey(s.parts)}`, s]));
    const table = places.map(() => new Map());
    table.push(new Map());
    table[0].set(0, [0.0, null, null, null]);
    places.forEach(([k, i], j) => {
      const moves = everyOption(h, k, i).map(([parts, value]) => [
        j + 1,
        kept.get(`${k}|${partsKey(parts)}`) || { line: k, parts, score: value, other: null },
      ]);
      const merged = h.merged.get(`${k},${i}`);
      if (merged && h.results.has(merged.key)) {
        // one cut penalty: the segmentation is overruled once, as a cut overrules it
        const value = optionScore([merged], h.seg.heights[k], h.results) + CUT_PENALTY;
        moves.push([j + 2, { line: k, parts: [merged], score: value, other: null }]);
      }
      for (const [n, [value]] of [...table[j].entries()])
        for (const [to, step] of moves) {
          const m = n + step.parts.length;
          const there = table[to].get(m);
          if (m <= most && (there === undefined || value + step.score > there[0]))
            table[to].set(m, [value + step.score, j, n, step]);
        }
    });
    let n = null;
    for (const [m, entry] of table[places.length])
      if (m >= least && m <= most && (n === null || entry[0] > table[places.length].get(n)[0])) n = m;
    if (n === null) return null;
    const steps = [];
    for (let j = places.length; j; ) {
      const [, back, before, step] = table[j].get(n);
      steps.push(step);
      j = back;
      n = before;
    }
    return steps.reverse();
  }

  async function readNumber(rgba, width, height, classify) {
    // RGBA pixels -> the reading, as /api/read answers (without "model")
    return decide(await hypotheses(rgba, width, height, classify));
  }

  return { readNumber, hypotheses, decide, segment, cutColumns, checkSize, readingOf, ordinal };
})();
