// digitlab's preprocessing of one digit (digitlab.preprocess: image.py, ink.py, marks.py, normalize.py)
// in the browser, step for step, so that the page gives the model the 28x28 input the server would.
// Pillow's resampling (BOX, BILINEAR, LANCZOS), scikit-image's Otsu threshold and SciPy's labelling,
// morphology and Euclidean distance transform are ported with the same arithmetic: float32 where the
// Python steps keep float32, Pillow's fixed point for 8-bit images. The constants are Python's;
// tests/test_web.py holds the two to each other on 500+ images in Chromium.
// Defines one global, digitlabPreprocess: { preprocessRGBA(rgba, width, height) -> result, and the steps
// segment.js reads a number with }.
"use strict";

const digitlabPreprocess = (() => {
  // image.py
  const WORK_SIDE = 160;
  // ink.py
  const MIN_CONTRAST = 24.0;
  const MIN_INK_RATIO = 5.0;
  const UNEVEN_INK_RATIO = 10.0;
  const SPECK_FRACTION = 0.08;
  const STRONG_INK = 90;
  const PAPER_SCALE = 1 / 3;
  const PAPER_SIDE = 40;
  const FLAT_PAPER = 16.0;
  const SHADOW = 0.45;
  const SPECK_SIDE = 0.035;
  const SMOOTH = 0.15;
  const SMOOTH_SIGMA = 1 / 16;
  const SOLID_EDGE = 0.2;
  const SMOOTH_SIDE = 96;
  const SHADOW_BORDER = 0.12;
  // marks.py
  const FILLED_SHARE = 0.5;
  const DOT_EXTENT = 2.25;
  const TICK_SIDE = 0.08;
  const TICK_EXTENT = 3.5;
  const SMALL_SIDE = 0.25;
  const SEVERAL_HEIGHT = 0.6;
  const SEVERAL_GAP = 0.05;
  // normalize.py
  const SIDE = 28;
  const BOX_SIDE = 20;
  const CENTRE = 14.0;
  const STROKE_BAND = [2.0, 4.8];
  // preprocess/__init__.py
  const NO_INK = "no ink found in the image";
  const UNEVEN_LIGHT =
    `${NO_INK}; the light is uneven: if something is written there, take the photo again without the shadow`;

  const f32 = Math.fround;

  function roundHalfEven(x) {
    // Python's round() and NumPy's np.round
    const r = Math.round(x);
    return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
  }

  // --- images: {w, h, a} with `a` a Float32Array of h rows of w --------------------------------------

  function image(w, h, a) {
    return { w, h, a: a || new Float32Array(w * h) };
  }

  function select(v, k) {
    // the k-th smallest of v (reordered in place), by quickselect
    let lo = 0;
    let hi = v.length - 1;
    while (lo < hi) {
      const pivot = v[(lo + hi) >> 1];
      let i = lo;
      let j = hi;
      while (i <= j) {
        while (v[i] < pivot) i++;
        while (v[j] > pivot) j--;
        if (i <= j) {
          const t = v[i];
          v[i] = v[j];
          v[j] = t;
          i++;
          j--;
        }
      }
      if (k <= j) hi = j;
      else if (k >= i) lo = i;
      else return v[k];
    }
    return v[k];
  }

  function median(values, inPlace = false) {
    // NumPy's median of float32 values: the mean of the two middle values for an even count. inPlace:
    // `values`, a Float32Array, may be reordered
    const v = inPlace ? values : Float32Array.from(values);
    const n = v.length;
    if (!n) return NaN;
    if (n % 2) return select(v, (n - 1) / 2);
    const upper = select(v, n / 2);
    let lower = -Infinity; // the largest value below the upper middle one, after select's partition
    for (let i = 0; i < n / 2; i++) if (v[i] > lower) lower = v[i];
    return f32((lower + upper) / 2);
  }

  function percentile(values, q) {
    // NumPy's percentile, linear interpolation
    const v = Float32Array.from(values).sort();
    const pos = (q / 100) * (v.length - 1);
    const lo = Math.floor(pos);
    const hi = Math.min(lo + 1, v.length - 1);
    const t = pos - lo;
    return t >= 0.5 ? v[hi] - (v[hi] - v[lo]) * (1 - t) : v[lo] + (v[hi] - v[lo]) * t;
  }

  // --- Pillow's resampling (Resample.c) --------------------------------------------------------------

  const FILTERS = {
    box: { support: 0.5, f: (x) => (x > -0.5 && x <= 0.5 ? 1.0 : 0.0) },
    bilinear: {
      support: 1.0,
      f: (x) => {
        x = Math.abs(x);
        return x < 1.0 ? 1.0 - x : 0.0;
      },
    },
    lanczos: {
      support: 3.0,
      f: (x) => (-3.0 <= x && x < 3.0 ? sinc(x) * sinc(x / 3) : 0.0),
    },
  };

  function sinc(x) {
    if (x === 0.0) return 1.0;
    x *= Math.PI;
    return Math.sin(x) / x;
  }

  const COEFFICIENTS = new Map(); // the pad's sizes come again and again

  function coefficients(inSize, outSize, filter) {
    const key = `${inSize} ${outSize} ${filter.support}`;
    if (!COEFFICIENTS.has(key)) {
      if (COEFFICIENTS.size > 256) COEFFICIENTS.clear();
      COEFFICIENTS.set(key, weights(inSize, outSize, filter));
    }
    return COEFFICIENTS.get(key);
  }

  function weights(inSize, outSize, filter) {
    // precompute_coeffs: for each output pixel, the first input pixel and the normalised weights
    const scale = inSize / outSize;
    const filterscale = Math.max(scale, 1.0);
    const support = filter.support * filterscale;
    const ss = 1.0 / filterscale;
    const out = [];
    for (let xx = 0; xx < outSize; xx++) {
      const center = (xx + 0.5) * scale;
      const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
      const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
      const k = new Float64Array(Math.max(xmax, 0));
      let ww = 0.0;
      for (let x = 0; x < xmax; x++) {
        const w = filter.f((x + xmin - center + 0.5) * ss);
        k[x] = w;
        ww += w;
      }
      if (ww !== 0.0) for (let x = 0; x < xmax; x++) k[x] /= ww;
      out.push({ xmin, k });
    }
    return out;
  }

  function resizeFloat(img, w, h, filterName) {
    // Pillow's resize of an "F" image: weights and sums in double, each pass stored as float32;
    // horizontal first, a pass skipped when its size is unchanged.
    const filter = FILTERS[filterName];
    let cur = img;
    if (w !== cur.w) {
      const cs = coefficients(cur.w, w, filter);
      const next = image(w, cur.h);
      for (let y = 0; y < cur.h; y++) {
        const row = y * cur.w;
        for (let xx = 0; xx < w; xx++) {
          const { xmin, k } = cs[xx];
          let ss = 0.0;
          for (let x = 0; x < k.length; x++) ss += cur.a[row + xmin + x] * k[x];
          next.a[y * w + xx] = ss;
        }
      }
      cur = next;
    }
    if (h !== cur.h) {
      const cs = coefficients(cur.h, h, filter);
      const next = image(cur.w, h);
      for (let yy = 0; yy < h; yy++) {
        const { xmin, k } = cs[yy];
        for (let x = 0; x < cur.w; x++) {
          let ss = 0.0;
          for (let y = 0; y < k.length; y++) ss += cur.a[(xmin + y) * cur.w + x] * k[y];
          next.a[yy * cur.w + x] = ss;
        }
      }
      cur = next;
    }
    return cur === img ? image(img.w, img.h, Float32Array.from(img.a)) : cur;
  }

  const PRECISION_BITS = 32 - 8 - 2;

  function fixedPoint(cs) {
    // normalize_coeffs_8bpc, laid out flat: for output pixel i, taps [start[i], start[i + 1]) of k
    const start = new Int32Array(cs.length + 1);
    const xmin = new Int32Array(cs.length);
    cs.forEach((c, i) => {
      start[i + 1] = start[i] + c.k.length;
      xmin[i] = c.xmin;
    });
    const k = new Int32Array(start[cs.length]);
    cs.forEach((c, i) =>
      c.k.forEach((v, j) => {
        k[start[i] + j] = v < 0 ? Math.trunc(-0.5 + v * (1 << PRECISION_BITS)) : Math.trunc(0.5 + v * (1 << PRECISION_BITS));
      })
    );
    return { start, xmin, k };
  }

  const CLIP_HIGH = 1 << (PRECISION_BITS + 8);

  function resizeBytes(bytes, inW, inH, channels, w, h, filterName) {
    // Pillow's resize of an 8-bit image (channels interleaved): fixed-point weights, each pass clipped
    // to 0-255
    const filter = FILTERS[filterName];
    const half = 1 << (PRECISION_BITS - 1);
    let cur = bytes;
    let cw = inW;
    let ch = inH;
    if (w !== cw) {
      const { start, xmin, k } = fixedPoint(coefficients(cw, w, filter));
      const next = new Uint8Array(w * ch * channels);
      for (let y = 0; y < ch; y++) {
        const row = y * cw;
        for (let xx = 0; xx < w; xx++) {
          const s0 = start[xx];
          const taps = start[xx + 1] - s0;
          const first = (row + xmin[xx]) * channels;
          for (let c = 0; c < channels; c++) {
            let ss = half;
            for (let x = 0; x < taps; x++) ss += cur[first + x * channels + c] * k[s0 + x];
            next[(y * w + xx) * channels + c] = ss >= CLIP_HIGH ? 255 : ss <= 0 ? 0 : ss >> PRECISION_BITS;
          }
        }
      }
      cur = next;
      cw = w;
    }
    if (h !== ch) {
      const { start, xmin, k } = fixedPoint(coefficients(ch, h, filter));
      const next = new Uint8Array(cw * h * channels);
      const stride = cw * channels;
      for (let yy = 0; yy < h; yy++) {
        const s0 = start[yy];
        const taps = start[yy + 1] - s0;
        const first = xmin[yy] * stride;
        for (let x = 0; x < stride; x++) {
          let ss = half;
          for (let y = 0; y < taps; y++) ss += cur[first + y * stride + x] * k[s0 + y];
          next[yy * stride + x] = ss >= CLIP_HIGH ? 255 : ss <= 0 ? 0 : ss >> PRECISION_BITS;
        }
      }
      cur = next;
      ch = h;
    }
    return cur;
  }

  // --- image.py: RGBA pixels -> float32 grey at most WORK_SIDE long --------------------------------

  function premultiply(rgba) {
    // Pillow's RGBA -> RGBa before resizing (exact for opaque pixels)
    const out = new Uint8Array(rgba.length);
    for (let i = 0; i < rgba.length; i += 4) {
      const a = rgba[i + 3];
      for (let c = 0; c < 3; c++) {
        const t = rgba[i + c] * a + 128;
        out[i + c] = (t + (t >> 8)) >> 8;
      }
      out[i + 3] = a;
    }
    return out;
  }

  function unpremultiply(rgba) {
    // Pillow's RGBa -> RGBA
    const out = new Uint8ClampedArray(rgba.length);
    for (let i = 0; i < rgba.length; i += 4) {
      const a = rgba[i + 3];
      for (let c = 0; c < 3; c++) out[i + c] = a === 0 || a === 255 ? rgba[i + c] : Math.min(255, Math.trunc((255 * rgba[i + c]) / a));
      out[i + 3] = a;
    }
    return out;
  }

  function toGrey(rgba, width, height) {
    // to_grey for a decoded RGBA image (a canvas's pixels, a PNG): shrunk by area averaging to WORK_SIDE
    // in Pillow's RGBA arithmetic, then Pillow's L (ITU-R 601 luma, fixed point), transparency as paper.
    let w = width;
    let h = height;
    let px = rgba;
    const scale = WORK_SIDE / Math.max(width, height);
    if (scale < 1.0) {
      w = Math.max(1, roundHalfEven(width * scale));
      h = Math.max(1, roundHalfEven(height * scale));
      let greyOpaque = true; // a pad's pixels: each channel is resized alike, so one does for all
      const one = new Uint8Array(width * height);
      for (let i = 0, k = 0; i < one.length; i++, k += 4) {
        const v = rgba[k];
        if (rgba[k + 3] !== 255 || rgba[k + 1] !== v || rgba[k + 2] !== v) {
          greyOpaque = false;
          break;
        }
        one[i] = v;
      }
      if (greyOpaque) {
        const small = resizeBytes(one, width, height, 1, w, h, "box");
        const grey = image(w, h);
        for (let i = 0; i < small.length; i++) grey.a[i] = small[i]; // Pillow's L of (v, v, v) is v
        return grey;
      }
      px = unpremultiply(resizeBytes(premultiply(rgba), width, height, 4, w, h, "box"));
    }
    const grey = image(w, h);
    const alpha = new Float32Array(w * h);
    let opaque = true;
    for (let i = 0; i < w * h; i++) {
      const k = 4 * i;
      grey.a[i] = (px[k] * 19595 + px[k + 1] * 38470 + px[k + 2] * 7471 + 0x8000) >> 16;
      alpha[i] = f32(px[k + 3] / 255.0);
      if (px[k + 3] !== 255) opaque = false;
    }
    if (opaque) return grey;
    const onWhite = image(w, h);
    const inkOnly = image(w, h);
    for (let i = 0; i < w * h; i++) {
      onWhite.a[i] = f32(grey.a[i] * alpha[i]) + f32(255.0 * f32(1.0 - alpha[i]));
      inkOnly.a[i] = grey.a[i] * alpha[i];
    }
    const ptp = (a) => Math.max(...a) - Math.min(...a);
    const alpha255 = alpha.map((v) => 255.0 * v);
    if (ptp(onWhite.a) < MIN_CONTRAST && MIN_CONTRAST <= ptp(alpha255)) return inkOnly; // white ink on transparency
    return onWhite;
  }

  // --- ink.py ----------------------------------------------------------------------------------------

  function border(img) {
    const { w, h, a } = img;
    const frame = edgeFrame(w, h);
    const out = [];
    for (let i = 0; i < w * h; i++) if (frame[i]) out.push(a[i]);
    return out;
  }

  function edgeFrame(w, h) {
    // ink.py's _frame: 1 on a frame 2 % of the short side wide along the image's edges
    const k = Math.max(1, roundHalfEven(0.02 * Math.min(w, h)));
    const frame = new Uint8Array(w * h);
    for (let y = 0; y < h; y++) {
      const edgeRow = y < k || y >= h - k;
      for (let x = 0; x < w; x++) frame[y * w + x] = edgeRow || x < k || x >= w - k ? 1 : 0;
    }
    return frame;
  }

  function minMax(a) {
    let lo = Infinity;
    let hi = -Infinity;
    for (let i = 0; i < a.length; i++) {
      const v = a[i];
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    return [lo, hi];
  }

  function inkBright(grey) {
    const [lo, hi] = minMax(grey.a);
    if (hi - lo < MIN_CONTRAST) return [null, false];
    const inverted = median(border(grey)) > (lo + hi) / 2;
    if (!inverted) return [grey, false];
    const bright = image(grey.w, grey.h);
    for (let i = 0; i < bright.a.length; i++) bright.a[i] = 255.0 - grey.a[i];
    return [bright, true];
  }

  function reflectIndex(i, n) {
    // SciPy's "reflect" (d c b a | a b c d | d c b a)
    const period = 2 * n;
    i = ((i % period) + period) % period;
    return i < n ? i : period - 1 - i;
  }

  function filter1d(img, size, before, take, axis) {
    // A min or max filter of `size` along one axis, the window [i - before, i - before + size - 1], by
    // van Herk and Gil-Werman's running minima over blocks of `size`
    const { w, h, a } = img;
    const out = new Float32Array(w * h);
    const n = axis === 0 ? h : w;
    const lines = axis === 0 ? w : h;
    const step = axis === 0 ? w : 1;
    const m = n + size - 1; // the line with its reflected ends
    const blocks = Math.ceil(m / size) * size;
    const ext = new Float32Array(blocks);
    const left = new Float32Array(blocks);
    const right = new Float32Array(blocks);
    const src = new Int32Array(m);
    for (let j = 0; j < m; j++) src[j] = reflectIndex(j - before, n) * step;
    const sign = take === "min" ? 1 : -1; // a max filter is a min filter of the negated levels
    for (let line = 0; line < lines; line++) {
      const base = axis === 0 ? line : line * w;
      for (let j = 0; j < m; j++) ext[j] = sign * a[base + src[j]];
      for (let j = m; j < blocks; j++) ext[j] = Infinity;
      for (let b = 0; b < blocks; b += size) {
        left[b] = ext[b];
        for (let j = b + 1; j < b + size; j++) left[j] = left[j - 1] < ext[j] ? left[j - 1] : ext[j];
        right[b + size - 1] = ext[b + size - 1];
        for (let j = b + size - 2; j >= b; j--) right[j] = right[j + 1] < ext[j] ? right[j + 1] : ext[j];
      }
      for (let i = 0; i < n; i++) {
        const u = right[i];
        const v = left[i + size - 1];
        out[base + i * step] = sign * (u < v ? u : v);
      }
    }
    return image(w, h, out);
  }

  function greyOpening(img, size) {
    // ndi.grey_opening with a flat size x size square: erosion, then dilation (its window mirrored)
    const eBefore = Math.floor(size / 2);
    const dBefore = size - 1 - eBefore;
    let e = filter1d(img, size, eBefore, "min", 0);
    e = filter1d(e, size, eBefore, "min", 1);
    let d = filter1d(e, size, dBefore, "max", 0);
    d = filter1d(d, size, dBefore, "max", 1);
    return d;
  }

  function padReflect(img, p) {
    // np.maximum of np.pad(mode="reflect") with reflect_type "odd" and "even", p px on every side
    const { w, h, a } = img;
    const W = w + 2 * p;
    const H = h + 2 * p;
    const mirror = (n, size) => {
      // per padded index: the mirrored index, and the edge it mirrors about (-1 inside)
      const at = new Int32Array(size);
      const edge = new Int32Array(size);
      for (let I = 0; I < size; I++) {
        const i = I - p;
        at[I] = i < 0 ? -i : i >= n ? 2 * (n - 1) - i : i;
        edge[I] = i < 0 ? 0 : i >= n ? n - 1 : -1;
      }
      return [at, edge];
    };
    const [ys, eys] = mirror(h, H);
    const [xs, exs] = mirror(w, W);
    const out = image(W, H);
    for (let Y = 0; Y < H; Y++) {
      const y = ys[Y];
      const ey = eys[Y];
      for (let X = 0; X < W; X++) {
        const x = xs[X];
        const ex = exs[X];
        const even = a[y * w + x];
        // odd: 2 * edge - mirrored, down the rows first, then along them (np.pad's order)
        let odd = ey < 0 ? even : f32(2 * a[ey * w + x] - even);
        if (ex >= 0) {
          const atEdge = ey < 0 ? a[y * w + ex] : f32(2 * a[ey * w + ex] - a[y * w + ex]);
          odd = f32(2 * atEdge - odd);
        }
        out.a[Y * W + X] = odd > even ? odd : even;
      }
    }
    return out;
  }

  function flattenPaper(bright) {
    const { w, h } = bright;
    const factor = Math.max(1, Math.floor(Math.min(h, w) / PAPER_SIDE));
    const small =
      factor === 1
        ? bright
        : resizeFloat(bright, Math.max(1, Math.floor(w / factor)), Math.max(1, Math.floor(h / factor)), "box");
    const size = Math.max(3, roundHalfEven(Math.min(small.w, small.h) * PAPER_SCALE));
    const padded = padReflect(small, size);
    const opened = greyOpening(padded, size);
    let paper = image(small.w, small.h);
    for (let y = 0; y < small.h; y++)
      for (let x = 0; x < small.w; x++) paper.a[y * small.w + x] = opened.a[(y + size) * padded.w + x + size];
    const [lightest] = minMax(paper.a);
    const cap = f32(lightest + (1.0 - SHADOW) * (255.0 - lightest));
    paper.a = paper.a.map((v) => Math.min(v, cap));
    const [slo, shi] = minMax(paper.a);
    if (shi - slo < FLAT_PAPER) return [bright, null]; // bilinear weights are positive: enlarged, as flat
    if (factor > 1) paper = resizeFloat(paper, w, h, "bilinear");
    const [plo, phi] = minMax(paper.a);
    if (phi - plo < FLAT_PAPER) return [bright, null];
    const flat = image(w, h);
    for (let i = 0; i < w * h; i++) {
      const p = paper.a[i];
      const v = f32(f32(bright.a[i] - p) * f32(255.0 / Math.max(f32(255.0 - p), 1.0)));
      flat.a[i] = Math.min(Math.max(v, 0.0), 255.0);
    }
    return [flat, paper];
  }

  function otsu(img) {
    // scikit-image's threshold_otsu on the 256-bin histogram of the levels, counts in float32
    const hist = new Float64Array(256);
    for (const v of img.a) hist[Math.trunc(Math.min(Math.max(v, 0), 255))] += 1;
    let start = 0;
    let end = 256;
    if (hist[0] === 0 || hist[255] === 0) {
      while (start < 256 && hist[start] === 0) start++;
      while (end > start && hist[end - 1] === 0) end--;
    }
    const n = end - start;
    const w1 = new Float64Array(n);
    const w2 = new Float64Array(n);
    const m1 = new Float64Array(n);
    const m2 = new Float64Array(n);
    let cw = 0;
    let cm = 0;
    for (let i = 0; i < n; i++) {
      cw = f32(cw + hist[start + i]);
      cm += hist[start + i] * (start + i);
      w1[i] = cw;
      m1[i] = cm / cw;
    }
    cw = 0;
    cm = 0;
    for (let i = n - 1; i >= 0; i--) {
      cw = f32(cw + hist[start + i]);
      cm += hist[start + i] * (start + i);
      w2[i] = cw;
      m2[i] = cm / cw;
    }
    let best = -Infinity;
    let idx = 0;
    for (let i = 0; i < n - 1; i++) {
      const v = f32(w1[i] * w2[i + 1]) * (m1[i] - m2[i + 1]) ** 2;
      if (v > best) {
        best = v;
        idx = i;
      }
    }
    return start + idx + 0.5;
  }

  function label(mask, w, h) {
    // ndi.label, 8-connected: labels 1..n in raster order of first pixel, with each one's size and box
    const labels = new Int32Array(w * h);
    const comps = [];
    const stack = new Int32Array(w * h);
    for (let i = 0; i < w * h; i++) {
      if (!mask[i] || labels[i]) continue;
      const id = comps.length + 1;
      const c = { size: 0, y0: h, y1: 0, x0: w, x1: 0 };
      labels[i] = id;
      let top = 0;
      stack[top++] = i;
      while (top) {
        const j = stack[--top];
        const y = Math.floor(j / w);
        const x = j - y * w;
        c.size++;
        if (y < c.y0) c.y0 = y;
        if (y + 1 > c.y1) c.y1 = y + 1;
        if (x < c.x0) c.x0 = x;
        if (x + 1 > c.x1) c.x1 = x + 1;
        for (let dy = -1; dy <= 1; dy++) {
          const yy = y + dy;
          if (yy < 0 || yy >= h) continue;
          for (let dx = -1; dx <= 1; dx++) {
            const xx = x + dx;
            if (xx < 0 || xx >= w) continue;
            const k = yy * w + xx;
            if (mask[k] && !labels[k]) {
              labels[k] = id;
              stack[top++] = k;
            }
          }
        }
      }
      comps.push(c);
    }
    return { labels, comps };
  }

  function dropSpecks(mask, w, h) {
    const { labels, comps } = label(mask, w, h);
    if (!comps.length) return mask;
    const largest = Math.max(...comps.map((c) => c.size));
    const keep = comps.map(
      (c) => c.size >= SPECK_FRACTION * largest && Math.max(c.y1 - c.y0, c.x1 - c.x0) >= SPECK_SIDE * Math.min(w, h)
    );
    const kept = new Uint8Array(mask.length);
    for (let i = 0; i < mask.length; i++) kept[i] = labels[i] && keep[labels[i] - 1] ? 1 : 0;
    return kept;
  }

  function faint(bright, mask, paper, ratio) {
    // ink.py's _faint: the ink's median under MIN_CONTRAST levels above the paper, or under ratio x its grain
    let count = 0;
    for (const v of mask) count += v;
    const rest = new Float32Array(mask.length - count);
    const ink = new Float32Array(count);
    for (let i = 0, r = 0, k = 0; i < mask.length; i++) {
      if (mask[i]) ink[k++] = bright.a[i];
      else rest[r++] = bright.a[i];
    }
    let spread = 0.0;
    if (rest.length) {
      const m = median(rest, true);
      for (let i = 0; i < rest.length; i++) rest[i] = Math.abs(rest[i] - m);
      spread = 1.4826 * median(rest, true);
    }
    const height = median(ink, true) - paper;
    return height < MIN_CONTRAST || height < ratio * spread;
  }

  function gaussianKernel(sigma, order) {
    // SciPy's _gaussian_kernel1d, reversed as gaussian_filter1d correlates with it (radius 4 sigma)
    const radius = Math.trunc(4.0 * sigma + 0.5);
    const phi = [];
    let sum = 0;
    for (let x = -radius; x <= radius; x++) {
      const v = Math.exp((-0.5 / (sigma * sigma)) * x * x);
      phi.push(v);
      sum += v;
    }
    const k = phi.map((v, i) => (order === 0 ? v / sum : ((-(i - radius) / (sigma * sigma)) * v) / sum));
    return { radius, k: Float64Array.from(k.reverse()) };
  }

  function correlate1d(img, kernel, axis) {
    // ndi.correlate1d with "reflect" boundaries, float32 out
    const { w, h, a } = img;
    const { radius, k } = kernel;
    const out = new Float32Array(w * h);
    const n = axis === 0 ? h : w;
    const step = axis === 0 ? w : 1;
    const src = new Int32Array(n + 2 * radius);
    for (let j = 0; j < src.length; j++) src[j] = reflectIndex(j - radius, n) * step;
    for (let line = 0; line < (axis === 0 ? w : h); line++) {
      const base = axis === 0 ? line : line * w;
      for (let i = 0; i < n; i++) {
        let s = 0;
        for (let j = 0; j < k.length; j++) s += a[base + src[i + j]] * k[j];
        out[base + i * step] = s;
      }
    }
    return image(w, h, out);
  }

  function gaussian(img, sigma, orders) {
    // ndi.gaussian_filter with an order per axis, axis 0 first
    let out = img;
    orders.forEach((order, axis) => (out = correlate1d(out, gaussianKernel(sigma, order), axis)));
    return out;
  }

  function medianBy(values, labels, n) {
    // ndi.median per label 1..n
    const groups = Array.from({ length: n + 1 }, () => []);
    for (let i = 0; i < labels.length; i++) if (labels[i]) groups[labels[i]].push(values[i]);
    return groups.map((g) => (g.length ? median(g) : 0));
  }

  function dropShadows(bright, mask, paper) {
    // ink.py's _drop_shadows: components that are the smooth rest of a shadow, not a pen's strokes
    const { w, h } = bright;
    if (Math.floor(Math.min(h, w) / SMOOTH_SIDE) > 1) throw new Error("images are at most 160 px here");
    const blur = gaussian(bright, SMOOTH_SIGMA * Math.min(h, w), [0, 0]);
    const { labels, comps } = label(mask, w, h);
    const n = comps.length;
    const above = new Float32Array(w * h); // bright - blur
    for (let i = 0; i < w * h; i++) above[i] = bright.a[i] - blur.a[i];
    const height = medianBy(bright.a, labels, n).map((v) => v - paper);
    const sharp = medianBy(above, labels, n);
    // A solid mark (a filled block) is as smooth inside, but its edge is a step, not a slope: it stays.
    const dy = gaussian(bright, 1.0, [1, 0]).a;
    const dx = gaussian(bright, 1.0, [0, 1]).a;
    const edges = Array.from({ length: n + 1 }, () => []);
    const at = (y, x) => y >= 0 && y < h && x >= 0 && x < w && mask[y * w + x];
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++) {
        const i = y * w + x;
        if (!mask[i] || (at(y - 1, x) && at(y + 1, x) && at(y, x - 1) && at(y, x + 1))) continue;
        edges[labels[i]].push(Math.sqrt(f32(f32(dy[i] * dy[i]) + f32(dx[i] * dx[i]))));
      }
    // ... and a component that runs along the image's edge is a shadow cast over the page, however sharp
    const frame = edgeFrame(w, h);
    const along = new Float64Array(n + 1);
    let frameSize = 0;
    for (let i = 0; i < w * h; i++) {
      frameSize += frame[i];
      if (frame[i]) along[labels[i]] += 1;
    }
    const keep = new Uint8Array(n + 1);
    for (let c = 1; c <= n; c++) {
      const step = edges[c].length ? percentile(edges[c], 90) : 0;
      const stroke = sharp[c] >= SMOOTH * height[c] || step >= SOLID_EDGE * height[c];
      keep[c] = stroke && along[c] / frameSize < SHADOW_BORDER ? 1 : 0;
    }
    const kept = new Uint8Array(w * h);
    for (let i = 0; i < w * h; i++) kept[i] = keep[labels[i]];
    return kept;
  }

  function blankReason(grey) {
    // ink.py's blank_reason: NO_INK, or UNEVEN_LIGHT when the paper is lit unevenly
    const [bright] = inkBright(grey);
    return bright === null || flattenPaper(bright)[1] === null ? NO_INK : UNEVEN_LIGHT;
  }

  function findInk(grey) {
    const [bright0, inverted] = inkBright(grey);
    if (bright0 === null) return null;
    const [bright, paperLight] = flattenPaper(bright0);
    const paper = median(border(bright));
    const [, hi] = minMax(bright.a);
    const t = Math.max(otsu(bright), paper + 0.25 * (hi - paper));
    const thresholded = new Uint8Array(bright.a.length);
    for (let i = 0; i < thresholded.length; i++) thresholded[i] = bright.a[i] > t ? 1 : 0;
    let mask = dropSpecks(thresholded, bright.w, bright.h);
    if (paperLight !== null && mask.some((v) => v)) {
      mask = dropShadows(bright, mask, paper);
      if (!mask.some((v) => v)) return null; // only the shadow's edge: a blank page in uneven light
    }
    if (mask.some((v) => v) && faint(bright, mask, paper, paperLight === null ? MIN_INK_RATIO : UNEVEN_INK_RATIO))
      return null;
    return { bright, mask, paper, inverted, thresholdMask: thresholded };
  }

  // --- masks -------------------------------------------------------------------------------------------

  function bbox(test, w, h) {
    // [y0, y1, x0, x1] (ends exclusive) of the pixels i where test(i), or null
    let y0 = h;
    let y1 = -1;
    let x0 = w;
    let x1 = -1;
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++)
        if (test(y * w + x)) {
          if (y < y0) y0 = y;
          if (y > y1) y1 = y;
          if (x < x0) x0 = x;
          if (x > x1) x1 = x;
        }
    return y1 < 0 ? null : [y0, y1 + 1, x0, x1 + 1];
  }

  function cut(a, w, [y0, y1, x0, x1], Type) {
    const out = new Type((y1 - y0) * (x1 - x0));
    for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) out[(y - y0) * (x1 - x0) + x - x0] = a[y * w + x];
    return out;
  }

  function strokeWidth(mask, w, h) {
    // marks.stroke_width: area / (boundary / 2); the boundary is what a cross-shaped erosion removes,
    // outside the image counting as paper
    let area = 0;
    let boundary = 0;
    const at = (y, x) => y >= 0 && y < h && x >= 0 && x < w && mask[y * w + x];
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++) {
        if (!mask[y * w + x]) continue;
        area++;
        if (!(at(y - 1, x) && at(y + 1, x) && at(y, x - 1) && at(y, x + 1))) boundary++;
      }
    return (2.0 * area) / Math.max(boundary, 1);
  }

  function sideBySide(mask, w, h) {
    const { comps } = label(mask, w, h);
    if (comps.length <= 1) return comps.length;
    const spans = comps
      .map((c) => [c.x0, c.x1, c.y0, c.y1])
      .sort((p, q) => p[0] - q[0] || p[1] - q[1] || p[2] - q[2] || p[3] - q[3]);
    const groups = [];
    for (const [x0, x1, y0, y1] of spans) {
      const g = groups[groups.length - 1];
      if (g && x0 < g[1]) {
        g[1] = Math.max(g[1], x1);
        g[2] = Math.min(g[2], y0);
        g[3] = Math.max(g[3], y1);
      } else groups.push([x0, x1, y0, y1]);
    }
    const tallest = Math.max(...groups.map((g) => g[3] - g[2]));
    const tall = groups.filter((g) => g[3] - g[2] >= SEVERAL_HEIGHT * tallest);
    let apart = 1;
    for (let i = 1; i < tall.length; i++) if (tall[i][0] - tall[i - 1][1] >= SEVERAL_GAP * tallest) apart++;
    return tall.length > 1 ? apart : 1;
  }

  function notADigit(mask, w, h) {
    // marks.not_a_digit
    let count = 0;
    for (const v of mask) count += v;
    const share = count / (w * h);
    const [y0, y1, x0, x1] = bbox((i) => mask[i], w, h);
    const longSide = Math.max(y1 - 1 - y0, x1 - 1 - x0) + 1;
    const shortImageSide = Math.min(w, h);
    const stroke = strokeWidth(mask, w, h);
    if (share > FILLED_SHARE) return `the image is nearly filled with ink (${roundHalfEven(100 * share)}%), not a digit`;
    if (longSide < DOT_EXTENT * stroke) return "only a dot or a tap, not a digit";
    const small = longSide < SMALL_SIDE * shortImageSide;
    if (longSide < TICK_SIDE * shortImageSide || (small && longSide < TICK_EXTENT * stroke))
      return "only a short mark, too small for a digit";
    const groups = sideBySide(mask, w, h);
    if (groups > 1) return `looks like ${groups} digits side by side: use \`digitlab read\` for numbers`;
    return null;
  }

  function inkLevels(bright, mask, paper) {
    // ink.ink_levels: ink 0-1 (anti-aliased edge kept) and the mask, in the mask's box plus 1 px
    const { w, h } = bright;
    let count = 0;
    for (let i = 0; i < mask.length; i++) count += mask[i];
    const inkValues = new Float32Array(count);
    for (let i = 0, k = 0; i < mask.length; i++) if (mask[i]) inkValues[k++] = bright.a[i];
    const strong = percentile(inkValues, STRONG_INK);
    const [y0, y1, x0, x1] = bbox((i) => mask[i], w, h);
    const win = [Math.max(y0 - 1, 0), Math.min(y1 + 1, h), Math.max(x0 - 1, 0), Math.min(x1 + 1, w)];
    const ww = win[3] - win[2];
    const hh = win[1] - win[0];
    const ink = cut(bright.a, w, win, Float32Array);
    const m = cut(mask, w, win, Uint8Array);
    const denom = f32(Math.max(strong - paper, 1e-6)); // NumPy casts Python floats to float32
    const level = f32(paper);
    const soft = new Float32Array(ww * hh);
    const across = new Uint8Array(ww * hh); // the mask dilated by a 3x3 square: along the rows, then down
    for (let y = 0; y < hh; y++)
      for (let x = 0; x < ww; x++) {
        const i = y * ww + x;
        across[i] = m[i] | (x > 0 && m[i - 1]) | (x < ww - 1 && m[i + 1]);
      }
    for (let y = 0; y < hh; y++)
      for (let x = 0; x < ww; x++) {
        const i = y * ww + x;
        if (across[i] | (y > 0 && across[i - ww]) | (y < hh - 1 && across[i + ww]))
          soft[i] = Math.min(Math.max(f32(f32(ink[i] - level) / denom), 0.0), 1.0);
      }
    return { soft: image(ww, hh, soft), mask: m };
  }

  // --- normalize.py ------------------------------------------------------------------------------------

  function edt(feature, w, h) {
    // Exact Euclidean distance from each pixel to the nearest pixel where feature is false (SciPy's
    // distance_transform_edt of `feature`): Felzenszwalb and Huttenlocher's lower envelope of parabolas,
    // down the columns, then along the rows
    const INF = 1e20;
    const d = new Float64Array(w * h);
    for (let i = 0; i < w * h; i++) d[i] = feature[i] ? INF : 0;
    const n = Math.max(w, h);
    const f = new Float64Array(n);
    const v = new Int32Array(n);
    const z = new Float64Array(n + 1);
    const pass = (start, step, len) => {
      for (let i = 0; i < len; i++) f[i] = d[start + i * step];
      let k = 0;
      v[0] = 0;
      z[0] = -Infinity;
      z[1] = Infinity;
      for (let q = 1; q < len; q++) {
        let s = (f[q] + q * q - (f[v[k]] + v[k] * v[k])) / (2 * q - 2 * v[k]);
        while (s <= z[k]) {
          k--;
          s = (f[q] + q * q - (f[v[k]] + v[k] * v[k])) / (2 * q - 2 * v[k]);
        }
        k++;
        v[k] = q;
        z[k] = s;
        z[k + 1] = Infinity;
      }
      k = 0;
      for (let q = 0; q < len; q++) {
        while (z[k + 1] < q) k++;
        d[start + q * step] = (q - v[k]) * (q - v[k]) + f[v[k]];
      }
    };
    for (let x = 0; x < w; x++) pass(x, w, h);
    for (let y = 0; y < h; y++) pass(y * w, 1, w);
    return d.map(Math.sqrt);
  }

  function crop(soft, mask) {
    const box = bbox((i) => soft.a[i] > 0, soft.w, soft.h);
    const w = box[3] - box[2];
    const h = box[1] - box[0];
    return [image(w, h, cut(soft.a, soft.w, box, Float32Array)), mask ? cut(mask, soft.w, box, Uint8Array) : null];
  }

  function normaliseStroke(soft, mask) {
    const { w: W, h: H } = soft;
    const sw = strokeWidth(mask, W, H);
    const longSide = Math.max(W, H);
    const widthOut = (sw * BOX_SIDE) / longSide;
    if (STROKE_BAND[0] <= widthOut && widthOut <= STROKE_BAND[1]) return soft;
    const target = Math.min(Math.max(widthOut, STROKE_BAND[0]), STROKE_BAND[1]);
    const r = (target * longSide - BOX_SIDE * sw) / (2 * (BOX_SIDE - target));
    if (r > 0) {
      const pad = Math.ceil(r) + 1;
      const w = W + 2 * pad;
      const h = H + 2 * pad;
      const paperMask = new Uint8Array(w * h).fill(1);
      const out = image(w, h);
      for (let y = 0; y < H; y++)
        for (let x = 0; x < W; x++) {
          paperMask[(y + pad) * w + x + pad] = mask[y * W + x] ? 0 : 1;
          out.a[(y + pad) * w + x + pad] = soft.a[y * W + x];
        }
      const outside = edt(paperMask, w, h); // px from each paper pixel to the nearest ink
      for (let i = 0; i < w * h; i++) out.a[i] = Math.max(out.a[i], Math.min(Math.max(r + 1.0 - outside[i], 0.0), 1.0));
      return out;
    }
    const inside = edt(mask, W, H); // px from each ink pixel to the nearest paper
    const eroded = image(W, H);
    let any = false;
    for (let i = 0; i < W * H; i++) {
      eroded.a[i] = soft.a[i] * Math.min(Math.max(inside[i] + r, 0.0), 1.0);
      if (eroded.a[i]) any = true;
    }
    return any ? eroded : soft;
  }

  function fitBox(soft) {
    const { w, h } = soft;
    const scale = BOX_SIDE / Math.max(h, w);
    const ow = Math.max(1, Math.min(BOX_SIDE, roundHalfEven(w * scale)));
    const oh = Math.max(1, Math.min(BOX_SIDE, roundHalfEven(h * scale)));
    const box = resizeFloat(soft, ow, oh, scale < 1 ? "lanczos" : "bilinear");
    box.a = box.a.map((v) => Math.min(Math.max(v, 0.0), 1.0));
    return box;
  }

  function centre(box) {
    const { w, h, a } = box;
    let total = 0;
    let sy = 0;
    let sx = 0;
    const cols = new Float64Array(w);
    for (let y = 0; y < h; y++) {
      let row = 0;
      for (let x = 0; x < w; x++) {
        row += a[y * w + x];
        cols[x] += a[y * w + x];
      }
      total += row;
      sy += f32(row) * y;
    }
    for (let x = 0; x < w; x++) sx += f32(cols[x]) * x;
    let cy = (h - 1) / 2;
    let cx = (w - 1) / 2;
    if (total > 0) {
      cy = sy / total;
      cx = sx / total;
    }
    const top = Math.min(Math.max(Math.floor(CENTRE - cy + 0.5), 0), SIDE - h);
    const left = Math.min(Math.max(Math.floor(CENTRE - cx + 0.5), 0), SIDE - w);
    const out = new Float32Array(SIDE * SIDE);
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) out[(top + y) * SIDE + left + x] = a[y * w + x];
    const [, peak] = minMax(out);
    const digit = new Uint8Array(SIDE * SIDE);
    if (peak > 0) {
      const k = 255.0 / peak;
      for (let i = 0; i < out.length; i++) digit[i] = roundHalfEven(f32(out[i] * k));
    }
    return digit;
  }

  function normalizeDigit(soft, mask) {
    [soft, mask] = crop(soft, mask);
    [soft] = crop(normaliseStroke(soft, mask));
    return centre(fitBox(soft));
  }

  // --- preprocess/__init__.py --------------------------------------------------------------------------

  function preprocessRGBA(rgba, width, height) {
    // -> {digit: Uint8Array(784) ink 255 on black, hasInk, inverted, reason (null when it is a digit)}
    const grey = toGrey(rgba, width, height);
    const ink = findInk(grey);
    const empty = new Uint8Array(SIDE * SIDE);
    if (ink === null || !ink.mask.some((v) => v))
      return { digit: empty, hasInk: false, inverted: ink !== null && ink.inverted, reason: blankReason(grey) };
    const { soft, mask } = inkLevels(ink.bright, ink.mask, ink.paper);
    const digit = normalizeDigit(soft, mask);
    return { digit, hasInk: true, inverted: ink.inverted, reason: notADigit(ink.mask, ink.bright.w, ink.bright.h) };
  }

  return {
    SIDE,
    NO_INK,
    UNEVEN_LIGHT,
    blankReason,
    preprocessRGBA,
    toGrey,
    findInk,
    bbox,
    label,
    inkLevels,
    normalizeDigit,
    edt,
    resizeFloat,
    resizeBytes,
    roundHalfEven,
    otsu,
  };
})();
