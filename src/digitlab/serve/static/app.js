// The drawing page: strokes on #pad are read in the browser (infer.js, when the run's model is there) or
// go to POST /api/predict as a PNG data URL; the answer fills in the digit, the probability bars and the
// 28x28 image the model received. No libraries, no build step.
// number.js, loaded after this file, uses inkPad, historyKeys, serverAsker, percent, sentence, drawGrid,
// notAnImage and the plain-words helpers for the Number mode.
"use strict";

const DEBOUNCE_MS = 150; // after the last stroke segment, ask for a prediction
const PEN_SHARE = 18 / 280; // the pen's width as a share of the height one digit takes on a pad: a felt pen

const pad = document.getElementById("pad");
const ctx = pad.getContext("2d", { willReadFrequently: true }); // the same context inkPad draws with
const seen = document.getElementById("seen");
const result = document.getElementById("result");
const digitEl = document.getElementById("digit");
const confidenceEl = document.getElementById("confidence");
const unsureEl = document.getElementById("unsure");
const toNumberEl = document.getElementById("to-number");
const barsEl = document.getElementById("bars");
const statusEl = document.getElementById("status");
const announceEl = document.getElementById("announce");
const uploadEl = document.getElementById("upload");
const undoEl = document.getElementById("undo");
const redoEl = document.getElementById("redo");

let classNames = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
let hasInk = false; // anything drawn or uploaded since the last clear
let version = 0; // bumped on every change of the pad; a reply for an older version is dropped
let shownVersion = 0;
let inFlight = false;
let timer = null;
let uploaded = null; // the uploaded File: sent as itself while the pad shows it with no strokes over it
let uploadedPixels = null; // ... and read in the browser from a canvas of its own size, as the server reads it

// --- the pad ---------------------------------------------------------------------------------------

function inkPad(canvas, { onStart, onInk, onEnd, digitHeight = () => canvas.height }) {
  // Pointer strokes in black on a white canvas that CSS scales: onStart() as a stroke begins, onInk()
  // whenever ink is added, onEnd() as the pointer lifts. `drawing` is true while a stroke goes on. Every
  // stroke is kept, so that undo() and redo() repaint the pad without it or with it again. The pen is
  // PEN_SHARE of digitHeight(), the height one digit takes on this pad (its canvas px), so that the ink
  // keeps its weight whatever the pad's size. An image set with setImage() lies under the strokes.
  // Read after every stroke (infer.js reads its pixels): kept in memory, not read back from the GPU.
  const g = canvas.getContext("2d", { willReadFrequently: true });
  let stroke = null; // {id, width, points: [[x, y], ...], pieces: [[from, to], ...]} of the pointer drawing now
  let strokes = []; // the strokes on the pad, oldest first (the one drawing now included)
  let undone = []; // strokes taken back, the last one taken back last
  let image = null; // an uploaded image, fitted inside the pad and centred

  function paper() {
    g.fillStyle = "#fff";
    g.fillRect(0, 0, canvas.width, canvas.height);
    g.strokeStyle = "#000";
    g.fillStyle = "#000";
    g.lineCap = "round";
    g.lineJoin = "round";
    if (image) {
      const scale = Math.min(canvas.width / image.width, canvas.height / image.height);
      const w = image.width * scale;
      const h = image.height * scale;
      g.drawImage(image, (canvas.width - w) / 2, (canvas.height - h) / 2, w, h);
    }
  }

  function dot(s) {
    const [x, y] = s.points[0];
    g.beginPath();
    g.arc(x, y, s.width / 2, 0, 2 * Math.PI); // a tap leaves a dot
    g.fill();
  }

  function line(s, from, to) {
    // The stroke's segments from point `from` to point `to` (exclusive), as one path.
    g.lineWidth = s.width;
    g.beginPath();
    g.moveTo(...s.points[from - 1]);
    for (const p of s.points.slice(from, to)) g.lineTo(...p);
    g.stroke();
  }

  function repaint() {
    // Each stroke drawn again in the pieces it was drawn in, so that the pixels are the same as before.
    paper();
    for (const s of strokes) {
      dot(s);
      for (const [from, to] of s.pieces) line(s, from, to);
    }
  }

  const self = {
    get drawing() {
      return stroke !== null;
    },
    get strokes() {
      return strokes.length;
    },
    get empty() {
      return !strokes.length && !image;
    },
    get canUndo() {
      return !stroke && strokes.length > 0;
    },
    get canRedo() {
      return !stroke && undone.length > 0;
    },
    clear() {
      strokes = [];
      undone = [];
      image = null;
      repaint();
    },
    undo() {
      if (!self.canUndo) return false;
      undone.push(strokes.pop());
      repaint();
      return true;
    },
    redo() {
      if (!self.canRedo) return false;
      strokes.push(undone.pop());
      repaint();
      return true;
    },
    setImage(img) {
      // The image replaces what is on the pad; strokes can be drawn over it.
      strokes = [];
      undone = [];
      image = img;
      repaint();
    },
    repaint,
  };

  function point(e) {
    // Client px -> canvas px; the canvas is scaled by CSS and has a border.
    const rect = canvas.getBoundingClientRect();
    return [
      ((e.clientX - rect.left - canvas.clientLeft) * canvas.width) / canvas.clientWidth,
      ((e.clientY - rect.top - canvas.clientTop) * canvas.height) / canvas.clientHeight,
    ];
  }

  canvas.addEventListener("pointerdown", (e) => {
    if (e.pointerType === "mouse" && e.button !== 0) return;
    if (stroke) return; // a second finger while the first draws
    e.preventDefault();
    canvas.setPointerCapture(e.pointerId);
    stroke = { id: e.pointerId, width: PEN_SHARE * digitHeight(), points: [point(e)], pieces: [] };
    strokes.push(stroke);
    undone = []; // a new stroke: what was undone cannot come back
    onStart();
    dot(stroke);
    onInk();
  });

  canvas.addEventListener("pointermove", (e) => {
    if (!stroke || e.pointerId !== stroke.id) return;
    const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [e];
    const from = stroke.points.length;
    for (const ev of events.length ? events : [e]) stroke.points.push(point(ev));
    stroke.pieces.push([from, stroke.points.length]);
    line(stroke, from, stroke.points.length);
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

function historyKeys(mode, { undo, redo }) {
  // Ctrl+Z (Cmd+Z on a Mac) undoes on the pad of `mode` while it is shown; Ctrl+Shift+Z or Ctrl+Y redoes.
  document.addEventListener("keydown", (e) => {
    if (document.body.dataset.mode !== mode || !(e.ctrlKey || e.metaKey) || e.altKey) return;
    const key = e.key.toLowerCase();
    if (key === "z" && !e.shiftKey) undo();
    else if ((key === "z" && e.shiftKey) || key === "y") redo();
    else return;
    e.preventDefault();
  });
}

function showHistory(inkpad, undoButton, redoButton) {
  // The Undo and Redo buttons on or off, and the pad's hint shown while the pad is empty.
  undoButton.disabled = !inkpad.canUndo;
  redoButton.disabled = !inkpad.canRedo;
  undoButton.closest(".panel").querySelector(".hint").hidden = !inkpad.empty;
}

function changed() {
  hasInk = true;
  version += 1;
  result.dataset.state = "pending";
}

const digitPad = inkPad(pad, {
  onStart: () => showHistory(digitPad, undoEl, redoEl),
  onInk: () => {
    changed();
    schedule(DEBOUNCE_MS);
  },
  onEnd: () => {
    showHistory(digitPad, undoEl, redoEl);
    schedule(0);
  },
});

function clearPad() {
  digitPad.clear();
  showHistory(digitPad, undoEl, redoEl);
}

function clearAll() {
  clearPad();
  nothingToRead();
}

function nothingToRead() {
  // The pad is empty (cleared, or every stroke undone): no answer, none to wait for.
  hasInk = false;
  uploaded = null;
  uploadedPixels = null;
  version += 1;
  shownVersion = version;
  clearTimeout(timer);
  uploadEl.value = "";
  showEmpty();
}

function undoOrRedo(step) {
  // Undo or redo a stroke (step is digitPad.undo or digitPad.redo), then read the pad as it is now.
  if (!step()) return;
  showHistory(digitPad, undoEl, redoEl);
  if (digitPad.empty) {
    nothingToRead(); // what was undone can still be redone
    return;
  }
  changed();
  schedule(0);
}

document.getElementById("clear").addEventListener("click", clearAll);
undoEl.addEventListener("click", () => undoOrRedo(digitPad.undo));
redoEl.addEventListener("click", () => undoOrRedo(digitPad.redo));
historyKeys("digit", { undo: () => undoOrRedo(digitPad.undo), redo: () => undoOrRedo(digitPad.redo) });
document.addEventListener("keydown", (e) => {
  if (e.key === "Escape" && document.body.dataset.mode === "digit") clearAll(); // number.js, teach.js clear their own
});

uploadEl.addEventListener("change", () => {
  const file = uploadEl.files && uploadEl.files[0];
  if (!file) return;
  const url = URL.createObjectURL(file);
  const img = new Image();
  img.onload = () => {
    URL.revokeObjectURL(url);
    if (uploaded !== file || digitPad.strokes) return; // cleared or drawn on before the image loaded
    // Show the image on the pad, fitted inside it, so more strokes can be drawn over it.
    digitPad.setImage(img);
    showHistory(digitPad, undoEl, redoEl);
    uploadedPixels = ownPixels(img);
    if (browserReader.on) {
      changed(); // read in the browser at the image's own resolution, now that it is decoded
      schedule(0);
    }
  };
  img.onerror = async () => {
    URL.revokeObjectURL(url); // the server says what is wrong with it; in the browser, this page does
    if ((await browserReader.ready) && uploaded === file && !digitPad.strokes) {
      showError(notAnImage(file));
      shownVersion = version;
    }
  };
  img.src = url;
  clearPad();
  changed();
  uploaded = file;
  uploadedPixels = null;
  uploadEl.value = ""; // so that choosing the same file again is a change too
  schedule(0);
});

function notAnImage(file) {
  // What the page says of an upload the browser cannot decode, when no server reads it.
  return `${file.name}: not an image this browser can open (expected PNG, JPEG, BMP, GIF or WebP)`;
}

function ownPixels(img) {
  // The decoded image on a canvas of its own size (upright, as its EXIF orientation says): what the server
  // would read from the file, not the pad's 280 px copy of it.
  const canvas = document.createElement("canvas");
  canvas.width = img.naturalWidth;
  canvas.height = img.naturalHeight;
  canvas.getContext("2d", { willReadFrequently: true }).drawImage(img, 0, 0);
  return canvas;
}

// --- asking the server: a spinner when it is slow, a timeout, what to do when it is down ------------

const SERVER = { slowMs: 300, timeoutMs: 10000, pollMs: 1000 }; // tests shorten the waits

function serverAsker({ spinner, status, retry, again }) {
  // ask(path, request) -> {response, body}, or null after saying on `status` what went wrong: no answer
  // within SERVER.timeoutMs (a Retry button), or no server at all (the drawing is read `again()` as soon
  // as /api/health answers). The spinner shows once a request has waited SERVER.slowMs.
  let polling = null;
  retry.addEventListener("click", () => {
    retry.hidden = true;
    again();
  });

  function say(parts) {
    // parts: strings, and [text] for code
    status.replaceChildren(
      ...parts.map((p) => {
        if (typeof p === "string") return p;
        const code = document.createElement("code");
        code.textContent = p[0];
        return code;
      })
    );
    status.classList.add("error");
  }

  function watchForServer() {
    if (polling) return;
    polling = setInterval(async () => {
      try {
        if (!(await fetch("/api/health", { cache: "no-store" })).ok) return;
      } catch (err) {
        return; // still down
      }
      clearInterval(polling);
      polling = null;
      again();
    }, SERVER.pollMs);
  }

  async function ask(path, request) {
    retry.hidden = true;
    const slow = setTimeout(() => (spinner.hidden = false), SERVER.slowMs);
    const abort = new AbortController();
    const late = setTimeout(() => abort.abort(), SERVER.timeoutMs);
    try {
      const response = await fetch(path, { ...request, signal: abort.signal });
      const body = await response.json().catch(() => {
        if (abort.signal.aborted) throw new Error("timeout");
        return { detail: `HTTP ${response.status}` };
      });
      return { response, body };
    } catch (err) {
      if (abort.signal.aborted) {
        say([`The server did not answer within ${SERVER.timeoutMs / 1000} s.`]);
        retry.hidden = false;
      } else {
        say(["The server stopped: is ", ["digitlab serve"], " running? The drawing is read again once it is back."]);
        watchForServer();
      }
      return null;
    } finally {
      clearTimeout(slow);
      clearTimeout(late);
      spinner.hidden = true;
    }
  }

  return { ask };
}

function readAgain() {
  // The server is back, or Retry was pressed: read the pad as it is now.
  if (!hasInk) return;
  shownVersion = -1;
  schedule(0);
}

const digitServer = serverAsker({
  spinner: document.getElementById("spinner"),
  status: statusEl,
  retry: document.getElementById("retry"),
  again: readAgain,
});

function schedule(ms) {
  clearTimeout(timer);
  // Read in the browser at once: a timer would wait for the next frame to be drawn (about 10 ms).
  if (ms === 0 && browserReader.on) send();
  else timer = setTimeout(send, ms);
}

async function send() {
  if (inFlight || !hasInk || shownVersion === version) return; // the reply in flight re-sends when done
  inFlight = true;
  const asked = version;
  const local = await browserReader.ready; // infer.js: the run's model in this page, else the server
  let request;
  const own = uploaded && !digitPad.strokes ? uploadedPixels : pad; // an upload with no strokes over it
  if (local) {
    // read from the pad's pixels, or an upload's own once decoded (its onload asks again)
    if (!own) {
      inFlight = false;
      return;
    }
  } else if (uploaded && !digitPad.strokes) {
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
    const answer = local ? await browserReader.answer(own) : await digitServer.ask("/api/predict", request);
    if (asked === version) {
      if (!answer) showTrouble();
      else if (answer.response.ok) show(answer.body);
      else showError(answer.body.detail || `HTTP ${answer.response.status}`);
      shownVersion = asked;
    }
  } finally {
    inFlight = false;
    if (hasInk && shownVersion !== version && !digitPad.drawing) schedule(0);
  }
}

// --- answers in plain words ----------------------------------------------------------------------------

const COUNTS = ["no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"];

function aDigit(label) {
  // "a 4", "an 8": the article as the name is said
  return `${/^(8|11|18|[aeiou])/i.test(label) ? "an" : "a"} ${label}`;
}

function maybe(labels) {
  // "not sure: a 4 or a 9?"
  return `not sure: ${labels.map(aDigit).join(" or ")}?`;
}

function ordinal(n) {
  const words = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth"];
  return words[n - 1] || `${n}th`;
}

function plainReason(reason) {
  // The server's reason for one image with no digit, in a person's words: a drawing of several digits
  // points to the Number mode; figures in brackets are for the API's users, not shown.
  const several = /^looks like (\d+) digits side by side/.exec(reason || "");
  if (several) return sentence(`${COUNTS[+several[1]] || several[1]} digits here: switch to Number`);
  return sentence((reason || "no answer").replace(/\s*\([^)]*\)\s*$/, ""));
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
  if (noAnswer || (r.unsure && !/below the threshold/.test(r.reason || ""))) {
    message = plainReason(r.reason); // no digit, or not a digit
    spoken = `${message}.`;
  } else if (r.unsure) {
    message = sentence(maybe(r.top3.slice(0, 2).map((c) => c.label)));
    spoken = `${message} Confidence ${percent(r.confidence)}.`;
  } else {
    spoken = `${r.label}, confidence ${percent(r.confidence)}.`;
  }
  unsureEl.hidden = sure;
  unsureEl.textContent = message;
  unsureEl.title = r.reason || ""; // the exact figures, for whoever wants them
  toNumberEl.hidden = !/^looks like \d+ digits side by side/.test(r.reason || "");
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
  toNumberEl.hidden = true;
  result.classList.remove("is-unsure");
  barsEl.classList.remove("off");
  setBars(classNames.map(() => 0), -1);
  drawSeen(null);
  announceEl.textContent = "";
  statusEl.textContent = "";
  statusEl.classList.remove("error");
  document.getElementById("retry").hidden = true;
  result.dataset.state = "empty";
}

function showError(message) {
  digitEl.textContent = "?";
  confidenceEl.textContent = "–";
  announceEl.textContent = ""; // the status line below the pad says what went wrong
  unsureEl.hidden = true;
  toNumberEl.hidden = true;
  statusEl.textContent = message;
  statusEl.classList.add("error");
  result.dataset.state = "error";
}

function showTrouble() {
  // The server did not answer: the status line (serverAsker's) says why and what to do.
  digitEl.textContent = "?";
  confidenceEl.textContent = "–";
  announceEl.textContent = "";
  unsureEl.hidden = true;
  toNumberEl.hidden = true;
  result.dataset.state = "error";
}

toNumberEl.addEventListener("click", () => {
  const number = document.getElementById("mode-number");
  number.checked = true;
  number.dispatchEvent(new Event("change"));
  number.focus();
});

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
