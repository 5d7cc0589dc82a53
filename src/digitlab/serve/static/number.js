// The page's Number mode: strokes on the wide #number-pad go to POST /api/read as a PNG data URL a
// moment after each stroke ends; the reply draws each digit's box over the ink with its digit and
// confidence, the whole reading, and the 28x28 image the model received for each digit. Uses inkPad,
// percent, sentence and drawGrid from app.js.
"use strict";

(() => {
  const READ_DEBOUNCE_MS = 300; // after a stroke ends: a digit is often more than one stroke
  const CROP_PX = 56; // backing store of each 28x28 crop, so that it is drawn with crisp pixels
  const TAG_ROOM = 0.12; // share of the pad's height a box's label needs above the box

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

  let hasInk = false;
  let version = 0; // bumped on every change of the pad; a reply for an older version is dropped
  let shownVersion = 0;
  let inFlight = false;
  let timer = null;

  const numberPad = inkPad(canvas, {
    onStart: () => clearTimeout(timer), // a stroke begins: wait for the digit to be finished
    onInk: () => {
      hasInk = true;
      version += 1;
      resultEl.dataset.state = "pending";
    },
    onEnd: () => schedule(READ_DEBOUNCE_MS),
  });

  function schedule(ms) {
    clearTimeout(timer);
    timer = setTimeout(send, ms);
  }

  async function send() {
    if (inFlight || !hasInk || shownVersion === version) return; // the reply in flight re-sends when done
    inFlight = true;
    const asked = version;
    const request = {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ image: canvas.toDataURL("image/png") }),
    };
    try {
      const response = await fetch("/api/read", request);
      const body = await response.json().catch(() => ({ detail: `HTTP ${response.status}` }));
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
      if (hasInk && shownVersion !== version && !numberPad.drawing) schedule(0);
    }
  }

  // --- showing the reading ---------------------------------------------------------------------------

  function drawBoxes(digits, size) {
    // Boxes in shares of the image the server read (the pad's own pixels): they scale with the pad.
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
        // The label above the box; below it when the box touches the top, inside when it fills the height.
        if (y0 / h < TAG_ROOM) box.classList.add(y1 / h > 1 - TAG_ROOM ? "tag-inside" : "tag-below");
        const tag = document.createElement("span");
        tag.className = "tag";
        tag.textContent = `${d.digit}${d.unsure ? "?" : ""} ${percent(d.confidence)}`;
        box.append(tag);
        return box;
      })
    );
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
    drawBoxes(noText ? [] : digits, r.size || [canvas.width, canvas.height]);
    drawCrops(noText ? [] : digits);
    resultEl.classList.toggle("is-unsure", noText || r.unsure);
    textEl.textContent = noText ? "–" : r.text;
    confidenceEl.textContent = noText || r.confidence == null ? "–" : percent(r.confidence);
    countEl.textContent = noText ? "" : digits.length === 1 ? "1 digit" : `${digits.length} digits`;
    let spoken;
    if (noText) {
      unsureEl.textContent = sentence(r.reason || "no number found");
      spoken = `${unsureEl.textContent}.`;
    } else {
      const said = r.text.split("\n").join(", next line, ");
      unsureEl.textContent = r.unsure ? `Not sure — ${r.reason || "some digits are unclear"}` : "";
      spoken = r.unsure
        ? `Not sure: read ${said} (${r.reason || "some digits are unclear"}).`
        : `Read ${said}, confidence ${percent(r.confidence)}.`;
    }
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
    resultEl.dataset.state = "empty";
  }

  function showError(message) {
    drawBoxes([], [canvas.width, canvas.height]);
    drawCrops([]);
    textEl.textContent = "–";
    confidenceEl.textContent = "–";
    countEl.textContent = "";
    unsureEl.hidden = true;
    announceEl.textContent = ""; // the status line below the pad says what went wrong
    statusEl.textContent = message;
    statusEl.classList.add("error");
    resultEl.dataset.state = "error";
  }

  function clearAll() {
    numberPad.clear();
    hasInk = false;
    version += 1;
    shownVersion = version;
    clearTimeout(timer);
    showEmpty();
  }

  document.getElementById("number-clear").addEventListener("click", clearAll);
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && document.body.dataset.mode === "number") clearAll();
  });

  // --- the mode switch -------------------------------------------------------------------------------

  const MODES = ["digit", "number"];

  function setMode(mode) {
    document.body.dataset.mode = mode;
    for (const m of MODES) {
      document.getElementById(`${m}-mode`).hidden = m !== mode;
      document.getElementById(`sub-${m}`).hidden = m !== mode;
      document.getElementById(`mode-${m}`).checked = m === mode;
    }
    document.title = mode === "number" ? "digitlab: write a number" : "digitlab: draw a digit";
    // The address says the mode, so that a link or a reload opens it.
    history.replaceState(null, "", mode === "number" ? "#number" : location.pathname + location.search);
  }

  for (const m of MODES) {
    document.getElementById(`mode-${m}`).addEventListener("change", (e) => {
      if (e.target.checked) setMode(m);
    });
  }

  // A line model's run reads whole lines, never one digit (/api/predict answers 409): Number mode only.
  async function followTheRun() {
    try {
      const health = await (await fetch("/api/health")).json();
      if (health.kind !== "line") return;
      const digitMode = document.getElementById("mode-digit");
      digitMode.disabled = true;
      document.querySelector('label[for="mode-digit"]').title = "This run's model reads whole lines only";
      document.getElementById("sub-number").textContent +=
        " This run's model reads whole lines, so the Digit mode is off.";
      setMode("number");
    } catch (err) {
      // no answer: both modes stay; the Number mode's own requests say what is wrong
    }
  }

  numberPad.clear();
  showEmpty();
  if (location.hash === "#number") setMode("number");
  followTheRun();
})();
