// The page's Number mode: a moment after each stroke ends, the wide #number-pad is read in the browser
// (infer.js and segment.js, when the run's model is there) or sent to POST /api/read as a PNG data URL; the reply draws each digit's box over the ink with its digit (and its
// confidence, for a single-digit run's model), the whole reading, and the 28x28 image the model received
// for each digit. Uses inkPad, historyKeys, showHistory, serverAsker, percent, sentence, drawGrid and the
// plain-words helpers from app.js.
"use strict";

(() => {
  const READ_DEBOUNCE_MS = 300; // after a stroke ends, before asking the server: a digit is often more than one stroke
  const CROP_PX = 56; // backing store of each 28x28 crop, so that it is drawn with crisp pixels
  const ONE_LINE = 1 / 3; // the pad's height as a share of its width: at least one line of digits...
  const SQUARE = 1; // ...and at most as tall as it is wide (a phone held upright)
  const READING_ROOM = 96; // CSS px kept below the pad for the reading to grow into (the crops, a message)
  const TAG_GAP = 1; // CSS px between a label and the box it names

  const canvas = document.getElementById("number-pad");
  const boxesEl = document.getElementById("number-boxes");
  const resultEl = document.getElementById("number-result");
  const textEl = document.getElementById("number-text");
  const confidenceEl = document.getElementById("number-confidence");
  const countEl = document.getElementById("number-count");
  const unsureEl = document.getElementById("number-unsure");
  const cropsEl = document.getElementById("crops");
  const statusEl = document.getElementById("number-status");
  const announceEl = document.getElementById("number-announce");
  const uploadEl = document.getElementById("number-upload");
  const undoEl = document.getElementById("number-undo");
  const redoEl = document.getElementById("number-redo");
  const retryEl = document.getElementById("number-retry");

  let hasInk = false;
  let version = 0; // bumped on every change of the pad; a reply for an older version is dropped
  let shownVersion = 0;
  let inFlight = false;
  let timer = null;
  let unreadable = null; // an uploaded file the browser cannot show: sent as itself, the server says why

  const numberPad = inkPad(canvas, {
    onStart: () => {
      clearTimeout(timer); // a stroke begins: wait for the digit to be finished
      unreadable = null;
      showHistory(numberPad, undoEl, redoEl);
    },
    onInk: changed,
    onEnd: () => {
      showHistory(numberPad, undoEl, redoEl);
      schedule(browserReader.on ? 0 : READ_DEBOUNCE_MS); // in the browser a reading costs milliseconds: read now
    },
    digitHeight: () => Math.min(canvas.height, canvas.width * ONE_LINE), // a line's height
  });

  function changed() {
    hasInk = true;
    version += 1;
    resultEl.dataset.state = "pending";
  }

  // --- the pad's size ----------------------------------------------------------------------------------

  function fitPad() {
    // The pad keeps its 840 px of drawing across; its height follows the room the screen has below it,
    // from one line (a third of its width) to a square. Only an empty pad changes: ink stays where it is.
    if (!numberPad.empty || document.getElementById("number-mode").hidden) return;
    const shown = canvas.getBoundingClientRect();
    if (!shown.width) return;
    const others = document.body.offsetHeight - shown.height;
    const share = Math.min(SQUARE, Math.max(ONE_LINE, (window.innerHeight - others - READING_ROOM) / shown.width));
    const height = 10 * Math.round((canvas.width * share) / 10);
    if (height !== canvas.height) {
      canvas.height = height;
      canvas.parentElement.style.setProperty("--pad-aspect", String(canvas.width / height));
      numberPad.repaint();
    }
  }

  // --- asking the server -------------------------------------------------------------------------------

  const server = serverAsker({
    spinner: document.getElementById("number-spinner"),
    status: statusEl,
    retry: retryEl,
    again: () => {
      if (!hasInk) return;
      shownVersion = -1;
      schedule(0);
    },
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
    const local = (await browserReader.ready) && !unreadable; // a file the browser cannot show: the server says why
    let request;
    if (local) {
      // read from the pad's pixels in this page
    } else if (unreadable) {
      const form = new FormData();
      form.append("file", unreadable, unreadable.name);
      request = { method: "POST", body: form };
    } else {
      request = {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ image: canvas.toDataURL("image/png") }),
      };
    }
    try {
      const answer = local ? await browserReader.numberAnswer(canvas) : await server.ask("/api/read", request);
      if (asked === version) {
        if (!answer) showTrouble();
        else if (answer.response.ok) show(answer.body);
        else showError(answer.body.detail || `HTTP ${answer.response.status}`);
        shownVersion = asked;
      }
    } finally {
      inFlight = false;
      if (hasInk && shownVersion !== version && !numberPad.drawing) schedule(0);
    }
  }

  // --- the reading in plain words ----------------------------------------------------------------------

  function plainReading(r, digits) {
    // What is unsure, in a person's words: the unsure digits (from their flags), then the server's other
    // reasons (a line read unsurely, ink whose split into digits is unclear) without their figures.
    const several = new Set(digits.map((d) => d.line)).size > 1;
    const place = (d) => {
      const inLine = digits.filter((e) => e.line === d.line);
      const where = `the ${ordinal(inLine.indexOf(d) + 1)} digit`;
      return several ? `${where} of line ${d.line + 1}` : where;
    };
    const reasons = (r.reason || "").split("; ").filter(Boolean);
    const guess = (d) => {
      // the two likeliest digits when the server's reason names them ("the 2nd digit: unsure: 4 or 9 (...)")
      const named = reasons.map((t) => /^the (\d+)(?:st|nd|rd|th) digit: unsure: (\S+) or (\S+) \(/.exec(t));
      const two = named.find((m) => m && +m[1] === digits.indexOf(d) + 1);
      return two ? `${aDigit(two[2])} or ${aDigit(two[3])}?` : `is it ${aDigit(String(d.digit))}?`;
    };
    const parts = digits.filter((d) => d.unsure).map((d) => `not sure of ${place(d)}: ${guess(d)}`);
    for (const reason of reasons) {
      if (/^the \d+(?:st|nd|rd|th) digit: .*below the threshold/.test(reason)) continue; // said above, from its flag
      const line = /^line (\d+): confidence .*below the threshold/.exec(reason);
      if (line) {
        if (!digits.some((d) => d.unsure && d.line === +line[1] - 1)) {
          parts.push(several ? `not sure of line ${line[1]}` : "not sure of this reading");
        }
        continue;
      }
      parts.push(reason.replace(/\s*\([^)]*\)\s*$/, ""));
    }
    return parts.length ? parts.map(sentence).join(". ") + (/[?.]$/.test(parts.at(-1)) ? "" : ".") : "";
  }

  // --- showing the reading -------------------------------------------------------------------------------

  function drawBoxes(digits, size, withConfidence) {
    // Boxes in shares of the image the server read (the pad's own pixels): they scale with the pad. An
    // unsure box is an outline only, so the ink under it stays in sight.
    const [w, h] = size;
    boxesEl.replaceChildren(
      ...digits.map((d) => {
        const [x0, y0, x1, y1] = d.box;
        const box = document.createElement("div");
        box.className = "box";
        box.classList.toggle("unsure", d.unsure);
        box.dataset.digit = String(d.digit);
        box.style.left = `${(100 * x0) / w}%`;
        box.style.top = `${(100 * y0) / h}%`;
        box.style.width = `${(100 * (x1 - x0)) / w}%`;
        box.style.height = `${(100 * (y1 - y0)) / h}%`;
        const tag = document.createElement("span");
        tag.className = "tag";
        tag.textContent = `${d.digit}${d.unsure ? "?" : ""}${withConfidence ? ` ${percent(d.confidence)}` : ""}`;
        box.append(tag);
        return box;
      })
    );
    placeTags();
  }

  function placeTags() {
    // Each box's label where it covers no other label and no other box, inside the pad: above the box,
    // else below it, at its left or right edge; else inside it at the top or bottom; else the place that
    // covers least. Boxes in reading order, so the first line's labels are placed first.
    const area = boxesEl.getBoundingClientRect();
    const boxes = [...boxesEl.querySelectorAll(".box")];
    const rects = boxes.map((b) => b.getBoundingClientRect());
    const placed = [];
    const overlap = (a, b) =>
      Math.max(0, Math.min(a.right, b.right) - Math.max(a.left, b.left)) *
      Math.max(0, Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top));
    boxes.forEach((box, i) => {
      const tag = box.querySelector(".tag");
      const w = tag.offsetWidth;
      const h = tag.offsetHeight;
      const r = rects[i];
      const xs = [r.left, r.right - w].map((x) => Math.min(Math.max(x, area.left), area.right - w));
      const ys = [r.top - h - TAG_GAP, r.bottom + TAG_GAP, r.top + 2, r.bottom - h - 2];
      let best = null;
      for (const y of ys) {
        for (const x of xs) {
          const at = { left: x, top: y, right: x + w, bottom: y + h };
          const outside = at.top < area.top || at.bottom > area.bottom ? w * h : 0;
          const cost =
            outside +
            placed.reduce((s, p) => s + overlap(at, p), 0) +
            rects.reduce((s, b, j) => s + (j === i ? 0 : overlap(at, b)), 0);
          if (!best || cost < best.cost) best = { ...at, cost };
        }
        if (best.cost === 0) break;
      }
      placed.push(best);
      // The tag is placed in its box's padding box: the box's own border is the origin's offset.
      tag.style.left = `${best.left - r.left - box.clientLeft}px`;
      tag.style.top = `${best.top - r.top - box.clientTop}px`;
    });
  }

  function drawCrops(digits) {
    cropsEl.replaceChildren(
      ...digits.map((d, i) => {
        const li = document.createElement("li");
        li.classList.toggle("unsure", d.unsure);
        const crop = document.createElement("canvas");
        crop.width = crop.height = CROP_PX;
        crop.setAttribute("aria-label", `digit ${i + 1}, read as ${d.digit}`);
        drawGrid(crop, d.preprocessed);
        const name = document.createElement("span");
        name.textContent = String(d.digit);
        li.append(crop, name);
        return li;
      })
    );
  }

  function show(r) {
    const digits = Array.isArray(r.digits) ? r.digits : [];
    const noText = r.text == null || !digits.length;
    // A line model reads a line at once: its per-digit figures are near 100 % even when the line is a
    // guess, so only the whole reading's confidence is shown.
    const lineModel = r.model && r.model.architecture === "line";
    drawBoxes(noText ? [] : digits, r.size || [canvas.width, canvas.height], !lineModel);
    drawCrops(noText ? [] : digits);
    resultEl.classList.toggle("is-unsure", noText || r.unsure);
    textEl.textContent = noText ? "–" : r.text;
    confidenceEl.textContent = noText || r.confidence == null ? "–" : percent(r.confidence);
    countEl.textContent = noText ? "" : digits.length === 1 ? "1 digit" : `${digits.length} digits`;
    let spoken;
    if (noText) {
      unsureEl.textContent = plainReason(r.reason || "no number found");
      spoken = `${unsureEl.textContent}.`;
    } else {
      const said = r.text.split("\n").join(", next line, ");
      unsureEl.textContent = r.unsure ? plainReading(r, digits) || "Not sure of some digits." : "";
      spoken = r.unsure
        ? `Read ${said}. ${unsureEl.textContent}`
        : `Read ${said}, confidence ${percent(r.confidence)}.`;
    }
    unsureEl.title = r.reason || ""; // the exact figures, for whoever wants them
    unsureEl.hidden = !unsureEl.textContent;
    announceEl.textContent = spoken;
    statusEl.textContent = "";
    statusEl.classList.remove("error");
    resultEl.dataset.state = "done";
  }

  function showEmpty() {
    drawBoxes([], [canvas.width, canvas.height]);
    drawCrops([]);
    resultEl.classList.remove("is-unsure");
    textEl.textContent = "–";
    confidenceEl.textContent = "–";
    countEl.textContent = "";
    unsureEl.hidden = true;
    unsureEl.textContent = "";
    announceEl.textContent = "";
    statusEl.textContent = "";
    statusEl.classList.remove("error");
    retryEl.hidden = true;
    resultEl.dataset.state = "empty";
  }

  function showError(message) {
    showTrouble();
    statusEl.textContent = message;
    statusEl.classList.add("error");
  }

  function showTrouble() {
    // No reading: the status line says why (serverAsker's words when the server did not answer).
    drawBoxes([], [canvas.width, canvas.height]);
    drawCrops([]);
    textEl.textContent = "–";
    confidenceEl.textContent = "–";
    countEl.textContent = "";
    unsureEl.hidden = true;
    announceEl.textContent = ""; // the status line below the pad says what went wrong
    resultEl.dataset.state = "error";
  }

  function clearAll() {
    numberPad.clear();
    showHistory(numberPad, undoEl, redoEl);
    nothingToRead();
  }

  function nothingToRead() {
    // The pad is empty (cleared, or every stroke undone): no reading, none to wait for.
    hasInk = false;
    unreadable = null;
    version += 1;
    shownVersion = version;
    clearTimeout(timer);
    uploadEl.value = "";
    showEmpty();
    fitPad();
  }

  function undoOrRedo(step) {
    // Undo or redo a stroke (step is numberPad.undo or numberPad.redo), then read the pad as it is now.
    if (!step()) return;
    showHistory(numberPad, undoEl, redoEl);
    if (numberPad.empty) {
      nothingToRead(); // what was undone can still be redone
      return;
    }
    changed();
    schedule(0);
  }

  document.getElementById("number-clear").addEventListener("click", clearAll);
  undoEl.addEventListener("click", () => undoOrRedo(numberPad.undo));
  redoEl.addEventListener("click", () => undoOrRedo(numberPad.redo));
  historyKeys("number", { undo: () => undoOrRedo(numberPad.undo), redo: () => undoOrRedo(numberPad.redo) });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && document.body.dataset.mode === "number") clearAll();
  });

  uploadEl.addEventListener("change", () => {
    // The image is drawn on the pad, fitted inside it, and the pad is read: the boxes lie over it, and
    // more strokes can be drawn over it. A file the browser cannot show goes as it is: the server says why.
    const file = uploadEl.files && uploadEl.files[0];
    if (!file) return;
    uploadEl.value = ""; // so that choosing the same file again is a change too
    const url = URL.createObjectURL(file);
    const img = new Image();
    const asked = version + 1;
    img.onload = () => {
      URL.revokeObjectURL(url);
      if (version !== asked) return; // drawn on or cleared before the image loaded
      numberPad.setImage(img);
      showHistory(numberPad, undoEl, redoEl);
      changed();
      schedule(0);
    };
    img.onerror = async () => {
      URL.revokeObjectURL(url);
      if (version !== asked) return;
      if (await browserReader.ready) {
        // read in the browser: no server to say why (the static site has none)
        if (version === asked) showError(notAnImage(file));
        return;
      }
      unreadable = file;
      changed();
      schedule(0);
    };
    clearAll(); // bumps version to `asked`
    resultEl.dataset.state = "pending";
    img.src = url;
  });

  new ResizeObserver(() => placeTags()).observe(canvas);
  window.addEventListener("resize", fitPad);

  // --- the mode switch -------------------------------------------------------------------------------

  const MODES = ["digit", "number", "teach"].filter((m) => document.getElementById(`${m}-mode`)); // teach.js's too
  const TITLES = { digit: "draw a digit", number: "write a number", teach: "teach it your handwriting" };

  function setMode(mode) {
    document.body.dataset.mode = mode;
    for (const m of MODES) {
      document.getElementById(`${m}-mode`).hidden = m !== mode;
      document.getElementById(`sub-${m}`).hidden = m !== mode;
      document.getElementById(`mode-${m}`).checked = m === mode;
    }
    document.title = `digitlab: ${TITLES[mode]}`;
    // The address says the mode, so that a link or a reload opens it.
    history.replaceState(null, "", mode === "digit" ? location.pathname + location.search : `#${mode}`);
    fitPad();
  }

  for (const m of MODES) {
    document.getElementById(`mode-${m}`).addEventListener("change", (e) => {
      if (e.target.checked) setMode(m);
    });
  }

  // An address typed or followed with #number (or #teach) opens that mode, without it the Digit mode
  // (unless the run reads whole lines only).
  function modeOfAddress() {
    const asked = location.hash.slice(1);
    if (document.getElementById("mode-digit").disabled) return "number";
    return MODES.includes(asked) && !document.getElementById(`mode-${asked}`).disabled ? asked : "digit";
  }
  window.addEventListener("hashchange", () => setMode(modeOfAddress()));

  // A line model's run reads whole lines, never one digit (/api/predict answers 409): Number mode only.
  async function followTheRun() {
    try {
      const asked = await fetch("/api/health").catch(() => null); // at once, before the model has loaded
      const health = asked && asked.ok ? await asked.json() : await browserReader.model(); // a static site's
      if (!health || health.kind !== "line") return;
      const digitMode = document.getElementById("mode-digit");
      digitMode.disabled = true;
      const teach = document.getElementById("mode-teach"); // teaching is for digits too
      if (teach) teach.disabled = true;
      document.querySelector('label[for="mode-digit"]').title = "This run's model reads whole lines only";
      document.getElementById("sub-number").textContent +=
        " This run's model reads whole lines, so the Digit mode is off.";
      setMode("number");
      if (!(await browserReader.ready))
        document.getElementById("engine").textContent = "read by the server (no model.onnx for the browser)";
    } catch (err) {
      // no answer: both modes stay; the Number mode's own requests say what is wrong
    }
  }

  numberPad.clear();
  showHistory(numberPad, undoEl, redoEl);
  showEmpty();
  if (location.hash && modeOfAddress() !== "digit") setMode(modeOfAddress());
  followTheRun();
})();
