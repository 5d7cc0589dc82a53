// The drawing page: strokes on #pad go to POST /api/predict as a PNG data URL; the reply fills in
// the digit, the probability bars and the 28x28 image the model received. No libraries, no build step.
// number.js, loaded after this file, uses inkPad, percent, sentence and drawGrid for the Number mode.
"use strict";

const DEBOUNCE_MS = 150; // after the last stroke segment, ask for a prediction
const STROKE_WIDTH = 18; // px on the 280 px pad: a felt pen on paper

const pad = document.getElementById("pad");
const ctx = pad.getContext("2d"); // the same context inkPad draws with
const seen = document.getElementById("seen");
const result = document.getElementById("result");
const digitEl = document.getElementById("digit");
const confidenceEl = document.getElementById("confidence");
const unsureEl = document.getElementById("unsure");
const barsEl = document.getElementById("bars");
const statusEl = document.getElementById("status");
const announceEl = document.getElementById("announce");
const uploadEl = document.getElementById("upload");

let classNames = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
let hasInk = false; // anything drawn or uploaded since the last clear
let version = 0; // bumped on every change of the pad; a reply for an older version is dropped
let shownVersion = 0;
let inFlight = false;
let timer = null;
let uploaded = null; // the uploaded File while the pad shows it unchanged: sent as itself, not re-encoded

// --- the pad ---------------------------------------------------------------------------------------

function inkPad(canvas, { onStart, onInk, onEnd }) {
  // Pointer strokes in black on a white canvas that CSS scales: onStart() as a stroke begins, onInk()
  // whenever ink is added, onEnd() as the pointer lifts. `drawing` is true while a stroke goes on.
  const g = canvas.getContext("2d");
  let stroke = null; // {id, x, y} of the pointer drawing now
  const self = {
    get drawing() {
      return stroke !== null;
    },
    clear() {
      g.fillStyle = "#fff";
      g.fillRect(0, 0, canvas.width, canvas.height);
      g.strokeStyle = "#000";
      g.fillStyle = "#000";
      g.lineWidth = STROKE_WIDTH;
      g.lineCap = "round";
      g.lineJoin = "round";
    },
  };

  function point(e) {
    // Client px -> canvas px; the canvas is scaled by CSS and has a border.
    const rect = canvas.getBoundingClientRect();
    return {
      x: ((e.clientX - rect.left - canvas.clientLeft) * canvas.width) / canvas.clientWidth,
      y: ((e.clientY - rect.top - canvas.clientTop) * canvas.height) / canvas.clientHeight,
    };
  }

  canvas.addEventListener("pointerdown", (e) => {
    if (e.pointerType === "mouse" && e.button !== 0) return;
    e.preventDefault();
    canvas.setPointerCapture(e.pointerId);
    const p = point(e);
    stroke = { id: e.pointerId, ...p };
    onStart();
    g.beginPath();
    g.arc(p.x, p.y, STROKE_WIDTH / 2, 0, 2 * Math.PI); // a tap leaves a dot
    g.fill();
    onInk();
  });

  canvas.addEventListener("pointermove", (e) => {
    if (!stroke || e.pointerId !== stroke.id) return;
    const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [e];
    g.beginPath();
    g.moveTo(stroke.x, stroke.y);
    for (const ev of events.length ? events : [e]) {
      const p = point(ev);
      g.lineTo(p.x, p.y);
      stroke.x = p.x;
      stroke.y = p.y;
    }
    g.stroke();
    onInk();
  });

  function endStroke(e) {
    if (!stroke || e.pointerId !== stroke.id) return;
    stroke = null;
    onEnd();
  }
  canvas.addEventListener("pointerup", endStroke);
  canvas.addEventListener("pointercancel", endStroke);
  return self;
}

function changed() {
  hasInk = true;
  version += 1;
  result.dataset.state = "pending";
}

const digitPad = inkPad(pad, {
  onStart: () => {
    uploaded = null;
  },
  onInk: () => {
    changed();
    schedule(DEBOUNCE_MS);
  },
  onEnd: () => schedule(0),
});

function clearPad() {
  digitPad.clear();
}

function clearAll() {
  clearPad();
  hasInk = false;
  uploaded = null;
  version += 1;
  shownVersion = version;
  clearTimeout(timer);
  uploadEl.value = "";
  showEmpty();
}

document.getElementById("clear").addEventListener("click", clearAll);
document.addEventListener("keydown", (e) => {
  if (e.key === "Escape" && document.body.dataset.mode !== "number") clearAll(); // number.js clears its own pad
});

uploadEl.addEventListener("change", () => {
  const file = uploadEl.files && uploadEl.files[0];
  if (!file) return;
  const url = URL.createObjectURL(file);
  const img = new Image();
  img.onload = () => {
    URL.revokeObjectURL(url);
    if (uploaded !== file) return; // cleared or drawn on before the image loaded
    // Show the image on the pad, fitted inside it, so more strokes can be drawn over it.
    clearPad();
    const scale = Math.min(pad.width / img.width, pad.height / img.height);
    const w = img.width * scale;
    const h = img.height * scale;
    ctx.drawImage(img, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
    if (browserReader.on) {
      changed(); // read in the browser from the pad, now that the image is on it
      schedule(0);
    }
  };
  img.onerror = () => URL.revokeObjectURL(url); // the server says what is wrong with it
  img.src = url;
  clearPad();
  changed();
  uploaded = file;
  uploadEl.value = ""; // so that choosing the same file again is a change too
  schedule(0);
});

// --- asking the server -----------------------------------------------------------------------------

function schedule(ms) {
  clearTimeout(timer);
  timer = setTimeout(send, ms);
}

async function send() {
  if (inFlight || !hasInk || shownVersion === version) return; // the reply in flight re-sends when done
  inFlight = true;
  const asked = version;
  const local = await browserReader.ready; // infer.js: the run's model in this page, else the server
  let request;
  if (local) {
    // read from the pad's pixels; an upload once it is drawn there (its onload asks again)
  } else if (uploaded) {
    const form = new FormData();
    form.append("file", uploaded, uploaded.name);
    request = { method: "POST", body: form };
  } else {
    request = {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ image: pad.toDataURL("image/png") }),
    };
  }
  try {
    const { response, body } = local
      ? await browserReader.answer(pad)
      : await fetch("/api/predict", request).then(async (response) => ({
          response,
          body: await response.json().catch(() => ({ detail: `HTTP ${response.status}` })),
        }));
    if (asked === version) {
      if (response.ok) show(body);
      else showError(body.detail || `HTTP ${response.status}`);
      shownVersion = asked;
    }
  } catch (err) {
    if (asked === version) {
      showError(`cannot reach the server (${err.message})`);
      shownVersion = asked;
    }
  } finally {
    inFlight = false;
    if (hasInk && shownVersion !== version && !digitPad.drawing) schedule(0);
  }
}

// --- showing the answer ----------------------------------------------------------------------------

function buildBars() {
  barsEl.replaceChildren(
    ...classNames.map((name) => {
      const li = document.createElement("li");
      li.innerHTML = '<span class="name"></span><span class="track"><span class="fill"></span></span><span class="pct"></span>';
      li.querySelector(".name").textContent = name;
      return li;
    })
  );
}

function percent(p) {
  const text = (100 * p).toFixed(1); // one decimal; whole 0 and 100 without it
  return `${text === "0.0" ? "0" : text === "100.0" ? "100" : text}%`;
}

function setBars(probabilities, top) {
  // top: the index of the bar to highlight; -1 for none
  if (probabilities.length !== barsEl.children.length) {
    classNames = probabilities.map((_, i) => classNames[i] ?? String(i));
    buildBars();
  }
  probabilities.forEach((p, i) => {
    const li = barsEl.children[i];
    li.classList.toggle("top", i === top);
    li.querySelector(".fill").style.width = `${(100 * p).toFixed(1)}%`;
    li.querySelector(".pct").textContent = percent(p);
  });
}

function drawSeen(rows) {
  drawGrid(seen, rows);
}

function drawGrid(canvas, rows) {
  // A grid of grey levels (rows of 0-255) onto a canvas, each pixel a crisp square; nothing when there is
  // no grid.
  const big = canvas.getContext("2d");
  big.clearRect(0, 0, canvas.width, canvas.height);
  if (!Array.isArray(rows) || !rows.length) return;
  const h = rows.length;
  const w = rows[0].length;
  const small = document.createElement("canvas");
  small.width = w;
  small.height = h;
  const img = small.getContext("2d").createImageData(w, h);
  rows.forEach((row, y) =>
    row.forEach((v, x) => {
      const k = 4 * (y * w + x);
      img.data[k] = img.data[k + 1] = img.data[k + 2] = v;
      img.data[k + 3] = 255;
    })
  );
  small.getContext("2d").putImageData(img, 0, 0);
  big.imageSmoothingEnabled = false;
  big.drawImage(small, 0, 0, canvas.width, canvas.height);
}

function sentence(text) {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function show(r) {
  // No digit to give (a blank pad, a mark that is not a digit): the API sends nulls and a reason. An
  // older server still sends numbers beside "no ink found"; those mean nothing either.
  const noAnswer =
    r.top3 == null || r.probabilities == null || r.confidence == null || /^no ink/.test(r.reason || "");
  const sure = !noAnswer && !r.unsure;
  digitEl.textContent = sure ? r.label : "?";
  digitEl.classList.toggle("long", digitEl.textContent.length > 2); // a class name such as "Sneaker"
  confidenceEl.textContent = sure ? percent(r.confidence) : "–";
  result.classList.toggle("is-unsure", !sure);
  let message = "";
  let spoken;
  if (noAnswer) {
    message = sentence(r.reason || "no answer");
    spoken = `${message}.`;
  } else if (r.unsure) {
    message = `Not sure — maybe ${r.top3.slice(0, 2).map((c) => c.label).join(" or ")}`;
    spoken = `${message} (${r.reason || `confidence ${percent(r.confidence)}`}).`;
  } else {
    spoken = `${r.label}, confidence ${percent(r.confidence)}.`;
  }
  unsureEl.hidden = sure;
  unsureEl.textContent = message;
  unsureEl.title = r.unsure && r.reason ? r.reason : ""; // the exact figures, for whoever wants them
  barsEl.classList.toggle("off", noAnswer);
  if (noAnswer) setBars(classNames.map(() => 0), -1);
  else setBars(r.probabilities, sure ? r.digit : -1);
  drawSeen(r.preprocessed);
  announceEl.textContent = spoken;
  statusEl.textContent = "";
  statusEl.classList.remove("error");
  result.dataset.state = "done";
}

function showEmpty() {
  digitEl.textContent = "?";
  confidenceEl.textContent = "–";
  unsureEl.hidden = true;
  unsureEl.textContent = "";
  result.classList.remove("is-unsure");
  barsEl.classList.remove("off");
  setBars(classNames.map(() => 0), -1);
  drawSeen(null);
  announceEl.textContent = "";
  statusEl.textContent = "";
  statusEl.classList.remove("error");
  result.dataset.state = "empty";
}

function showError(message) {
  digitEl.textContent = "?";
  confidenceEl.textContent = "–";
  announceEl.textContent = ""; // the status line below the pad says what went wrong
  unsureEl.hidden = true;
  statusEl.textContent = message;
  statusEl.classList.add("error");
  result.dataset.state = "error";
}

async function describeModel() {
  const el = document.getElementById("model");
  try {
    const m = (await browserReader.model()) || (await (await fetch("/api/model")).json());
    const names = m.config && m.config.data && m.config.data.class_names;
    if (Array.isArray(names) && names.length) {
      classNames = names.map(String);
      buildBars();
      if (result.dataset.state === "empty") showEmpty();
    }
    const arch = (m.config && m.config.model && m.config.model.architecture) || "?";
    const acc = m.test ? `, test accuracy ${(100 * m.test.accuracy).toFixed(2)}%` : "";
    el.textContent = `model ${m.name} (${arch}${acc})`;
  } catch (err) {
    el.textContent = "model information unavailable";
  }
}

// Bigger backing store for the preview than its 28 px, so drawImage scales it with crisp pixels.
seen.width = seen.height = 112;
clearPad();
buildBars();
showEmpty();
describeModel();
