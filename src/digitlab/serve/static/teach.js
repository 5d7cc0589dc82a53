// The page's Teach mode: it asks for each digit a few times in a shuffled order ("Write a 7"), reads each
// drawing the way the Digit mode does (in this browser when the run's model is here, else the server),
// and keeps the drawings as samples in this browser only (localStorage; nothing is sent). The samples
// download as one file for `digitlab adapt`:
//   {"format": "digitlab-samples", "version": 1, "samples": [{"digit": 7, "image": "data:image/png;base64,..."}]}
// In Digit mode, a reading that is wrong can be corrected by tapping the right digit: the drawing joins the
// same samples. Uses inkPad, historyKeys, showHistory, serverAsker, browserReader, percent, sentence, maybe,
// aDigit, plainReason, pad and digitPad from app.js and infer.js.
"use strict";

const teachSamples = (() => {
  const TIMES_EACH = 3; // how often each digit is asked for in one round
  const STORE_KEY = "digitlab-samples"; // localStorage: {samples: [{id, digit, image, from, read}], plan, kept}
  const FILE_NAME = "digitlab-samples.json";
  const FORMAT = { format: "digitlab-samples", version: 1 }; // what digitlab adapt reads (training/adapt.py)
  const READ_DEBOUNCE_MS = 150;

  const canvas = document.getElementById("teach-pad");
  const askEl = document.getElementById("teach-ask");
  const readEl = document.getElementById("teach-read");
  const progressEl = document.getElementById("teach-progress");
  const countEl = document.getElementById("teach-count");
  const nextEl = document.getElementById("teach-next");
  const backEl = document.getElementById("teach-back");
  const moreEl = document.getElementById("teach-more");
  const storedEl = document.getElementById("teach-stored");
  const missingEl = document.getElementById("teach-missing");
  const downloadEl = document.getElementById("teach-download");
  const forgetEl = document.getElementById("teach-forget");
  const statusEl = document.getElementById("teach-status");
  const sendEl = document.getElementById("teach-send");
  const sendSpinner = document.getElementById("teach-send-spinner");
  const sentEl = document.getElementById("teach-sent");
  const undoEl = document.getElementById("teach-undo");
  const redoEl = document.getElementById("teach-redo");
  const correctEl = document.getElementById("correct");
  const correctDigitsEl = document.getElementById("correct-digits");
  const correctSaidEl = document.getElementById("correct-said");
  const digitResult = document.getElementById("result");

  // --- the samples, kept in this browser ---------------------------------------------------------------

  let kept = true; // false once localStorage refused them: they last as long as the page
  let sending = false; // the samples are with the server, being adapted to
  const state = load();

  function shuffled() {
    // Each digit TIMES_EACH times, in a random order (Fisher-Yates)
    const plan = [];
    for (let d = 0; d < 10; d++) for (let k = 0; k < TIMES_EACH; k++) plan.push(d);
    for (let i = plan.length - 1; i > 0; i--) {
      const j = Math.floor(Math.random() * (i + 1));
      [plan[i], plan[j]] = [plan[j], plan[i]];
    }
    return plan;
  }

  function load() {
    let saved = null;
    try {
      saved = JSON.parse(localStorage.getItem(STORE_KEY) || "null");
    } catch (err) {
      kept = false; // no storage in this browser, or not for this page
    }
    const fresh = { samples: [], plan: shuffled(), kept: [], next: 1 };
    if (!saved || !Array.isArray(saved.samples) || !Array.isArray(saved.plan) || !Array.isArray(saved.kept)) return fresh;
    return { ...fresh, ...saved };
  }

  function save() {
    try {
      localStorage.setItem(STORE_KEY, JSON.stringify(state));
      kept = true;
    } catch (err) {
      kept = false; // full or refused: the samples stay in memory until the page closes
    }
    showStore();
  }

  function add(digit, image, from, read) {
    // A sample: its digit, the pad's PNG as a data URL, where it came from. The same drawing once only
    // (digitlab adapt refuses the same image twice). Returns the sample, or null when it was there.
    if (state.samples.some((s) => s.image === image)) return null;
    const sample = { id: state.next++, digit, image, from, read };
    state.samples.push(sample);
    save();
    return sample;
  }

  function remove(id) {
    state.samples = state.samples.filter((s) => s.id !== id);
  }

  function file() {
    // The file digitlab adapt reads: the digit and the image of every sample, oldest first
    return { ...FORMAT, samples: state.samples.map((s) => ({ digit: s.digit, image: s.image })) };
  }

  function download() {
    const blob = new Blob([JSON.stringify(file())], { type: "application/json" });
    const url = URL.createObjectURL(blob);
    const a = document.createElement("a");
    a.href = url;
    a.download = FILE_NAME;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  }

  function showStore() {
    const n = state.samples.length;
    const fromDigit = state.samples.filter((s) => s.from === "digit").length;
    const asked = state.samples.filter((s) => s.from === "teach" && s.read !== undefined);
    const right = asked.filter((s) => s.read === String(s.digit)).length;
    let text = `${n} sample${n === 1 ? "" : "s"} kept ${kept ? "in this browser" : "until this page closes"}`;
    if (fromDigit) text += ` (${fromDigit} from Digit mode)`;
    text += sendEl.hidden ? ". Nothing is sent." : ". Nothing is sent unless you press Teach the server's model.";
    if (asked.length) text += ` The model read ${right} of the ${asked.length} you wrote here right.`;
    storedEl.textContent = text;
    storedEl.dataset.count = String(n);
    const missing = [...Array(10).keys()].filter((d) => !state.samples.some((s) => s.digit === d));
    missingEl.hidden = !n || !missing.length;
    missingEl.textContent = `digitlab adapt needs at least one of each digit; none yet of ${missing.join(", ")}.`;
    downloadEl.disabled = !n;
    forgetEl.disabled = !n;
    sendEl.disabled = !n || sending;
  }

  // --- digitlab serve --allow-adapt: the samples sent, the server's model adapted to them ------------------

  async function offerToSend() {
    // The button shows only when the server says it adapts (never on the static site, which has none).
    const model = await browserReader.model();
    if (model && model.site) return;
    try {
      const response = await fetch("/api/adapt", { cache: "no-store" });
      sendEl.hidden = !(response.ok && (await response.json()).allowed);
    } catch (err) {
      sendEl.hidden = true; // no server to ask
    }
    showStore();
  }

  function readWithTheServer() {
    // The adapted run is served by Keras and has no model for the browser (serve --allow-adapt): the model
    // this page loaded is the old one, so from now on every mode asks the server, which holds the new one.
    browserReader.on = false;
    browserReader.ready = Promise.resolve(false);
    document.body.dataset.engine = "server";
    const engineEl = document.getElementById("engine");
    if (engineEl) engineEl.textContent = "read by the server (its model adapted to your samples)";
  }

  async function send() {
    // All the samples go to the server, which adapts a copy of its run to them and reads with it from then on.
    const n = state.samples.length;
    sending = true;
    sendEl.disabled = true;
    sendSpinner.hidden = false;
    sentEl.classList.remove("error");
    sentEl.textContent = `Sending ${n} samples; the server adapts its model to them, which takes a while…`;
    try {
      const response = await fetch("/api/adapt", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(file()),
      });
      const body = await response.json().catch(() => ({ detail: `HTTP ${response.status}` }));
      if (!response.ok) throw new Error(body.detail || `HTTP ${response.status}`);
      const was = body.base_validation_accuracy == null ? "" : ` (validation accuracy ${percent(body.base_validation_accuracy)} before)`;
      const inBrowser = browserReader.on;
      if (inBrowser) readWithTheServer();
      sentEl.textContent =
        `Done in ${Math.round(body.seconds)} s: the server reads with ${body.run} now, validation accuracy ` +
        `${percent(body.validation_accuracy)}${was}.` +
        (inBrowser ? " This page read with the old model in the browser; from now on the server reads for it, with the new one." : "");
      describeModel(); // app.js: the footer names the new run
    } catch (err) {
      sentEl.textContent = `Not adapted: ${err.message === "Failed to fetch" ? "the server stopped" : err.message}`;
      sentEl.classList.add("error");
    } finally {
      sending = false;
      sendSpinner.hidden = true;
      showStore();
    }
  }

  // --- the round: each digit asked for a few times ---------------------------------------------------

  const teachPad = inkPad(canvas, {
    onStart: () => showHistory(teachPad, undoEl, redoEl),
    onInk: () => {
      changed();
      schedule(READ_DEBOUNCE_MS);
    },
    onEnd: () => {
      showHistory(teachPad, undoEl, redoEl);
      schedule(0);
    },
  });

  let version = 0; // bumped on every change of the pad; a reading of an older drawing is dropped
  let shownVersion = 0;
  let reading; // what the model read in the drawing shown: a label, null for no digit, undefined for none yet
  let inFlight = false;
  let timer = null;

  function asked() {
    return state.kept.length < state.plan.length ? state.plan[state.kept.length] : null;
  }

  function showRound() {
    const digit = asked();
    const done = state.kept.length;
    const total = state.plan.length;
    askEl.textContent = digit === null ? `All ${total} written` : `Write ${aDigit(String(digit))}`;
    askEl.dataset.digit = digit === null ? "" : String(digit);
    progressEl.max = total;
    progressEl.value = done;
    countEl.textContent = `${done} of ${total}`;
    backEl.disabled = done === 0;
    moreEl.hidden = digit !== null;
    moreEl.textContent = `Ask for ${total} more`;
    nextEl.disabled = digit === null || teachPad.empty;
    canvas.closest(".pad-stage").querySelector(".hint").textContent =
      digit === null ? "Done: download them, or ask for more" : `Write ${aDigit(String(digit))} here`;
  }

  function changed() {
    version += 1;
    reading = undefined;
    readEl.dataset.state = "pending";
    nextEl.disabled = asked() === null || teachPad.empty;
  }

  function clearPad() {
    teachPad.clear();
    version += 1;
    shownVersion = version;
    reading = undefined;
    clearTimeout(timer);
    showHistory(teachPad, undoEl, redoEl);
    showReading(null);
    showRound();
  }

  function undoOrRedo(step) {
    if (!step()) return;
    showHistory(teachPad, undoEl, redoEl);
    if (teachPad.empty) {
      clearTimeout(timer);
      version += 1;
      shownVersion = version;
      showReading(null);
      showRound();
      return;
    }
    changed();
    schedule(0);
  }

  function next() {
    // The drawing becomes a sample of the digit asked for; the next digit is asked.
    const digit = asked();
    if (digit === null || teachPad.empty) return;
    const sample = add(digit, canvas.toDataURL("image/png"), "teach", shownVersion === version ? reading : undefined);
    if (!sample) {
      say("This drawing is kept already: write it again.");
      return;
    }
    state.kept.push(sample.id);
    save();
    say("");
    clearPad();
  }

  function back() {
    // The last sample of this round is dropped, and its digit asked for again.
    const id = state.kept.pop();
    if (id === undefined) return;
    remove(id);
    save();
    say(`Write ${aDigit(String(asked()))} again.`);
    clearPad();
  }

  function more() {
    state.plan = shuffled();
    state.kept = [];
    save();
    clearPad();
  }

  function say(text) {
    statusEl.textContent = text;
    statusEl.classList.remove("error");
  }

  // --- reading the drawing: the Digit mode's path ------------------------------------------------------

  const server = serverAsker({
    spinner: document.getElementById("teach-spinner"),
    status: statusEl,
    retry: document.getElementById("teach-retry"),
    again: () => {
      if (teachPad.empty) return;
      shownVersion = -1;
      schedule(0);
    },
  });

  function schedule(ms) {
    clearTimeout(timer);
    timer = setTimeout(read, ms);
  }

  async function read() {
    if (inFlight || teachPad.empty || shownVersion === version) return; // the reading in flight reads again when done
    inFlight = true;
    const now = version;
    try {
      const local = await browserReader.ready; // infer.js: the run's model in this page, else the server
      const answer = local
        ? await browserReader.answer(canvas)
        : await server.ask("/api/predict", {
            method: "POST",
            headers: { "Content-Type": "application/json" },
            body: JSON.stringify({ image: canvas.toDataURL("image/png") }),
          });
      if (now === version) {
        shownVersion = now;
        if (!answer) showReading(null, "error");
        else if (answer.response.ok) showReading(answer.body);
        else showReading(null, "error", answer.body.detail || `HTTP ${answer.response.status}`);
      }
    } finally {
      inFlight = false;
      if (!teachPad.empty && shownVersion !== version && !teachPad.drawing) schedule(0);
    }
  }

  function showReading(r, trouble, detail) {
    // What the model reads in the drawing, beside the digit asked for; nothing while the pad is empty.
    const digit = asked();
    readEl.classList.remove("right", "wrong");
    if (!r) {
      reading = undefined;
      readEl.textContent = trouble ? sentence(detail || "No reading: see below the pad.") : "The model's reading shows here.";
      readEl.dataset.state = trouble ? "error" : "empty";
      return;
    }
    const noDigit = r.top3 == null || r.confidence == null || /^no ink/.test(r.reason || "");
    const sure = !noDigit && !r.unsure;
    reading = sure ? String(r.label) : null;
    let text;
    if (noDigit || (r.unsure && !/below the threshold/.test(r.reason || ""))) text = `The model reads no digit: ${plainReason(r.reason).toLowerCase()}.`;
    else if (r.unsure) text = `The model is ${maybe(r.top3.slice(0, 2).map((c) => c.label))}`;
    else text = `The model reads ${aDigit(r.label)} (${percent(r.confidence)}).`;
    if (digit !== null && sure && reading === String(digit)) {
      text += " Right.";
      readEl.classList.add("right");
    } else if (digit !== null) {
      text += ` This sample teaches it your ${digit}.`;
      readEl.classList.add("wrong");
    }
    readEl.textContent = text;
    readEl.dataset.state = "done";
  }

  // --- Digit mode: "Wrong? Tap the right digit" -------------------------------------------------------

  correctDigitsEl.replaceChildren(
    ...[...Array(10).keys()].map((d) => {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = String(d);
      b.dataset.digit = String(d);
      b.title = `Keep this drawing as ${aDigit(String(d))}, to teach the model your handwriting`;
      b.addEventListener("click", () => correct(d));
      return b;
    })
  );

  function correct(digit) {
    // The drawing on the Digit pad becomes a sample of `digit`, beside the Teach mode's samples.
    if (digitPad.empty) return;
    const sample = add(digit, pad.toDataURL("image/png"), "digit", undefined);
    const n = state.samples.length;
    correctSaidEl.textContent = sample
      ? `Kept as ${aDigit(String(digit))} to teach the model: ${n} sample${n === 1 ? "" : "s"} in this browser (see Teach).`
      : "This drawing is kept already.";
    for (const b of correctDigitsEl.children) b.setAttribute("aria-pressed", String(sample !== null && b.dataset.digit === String(digit)));
  }

  function followDigitMode() {
    // The row shows under an answer to a drawing (also while the next one is read, so nothing jumps).
    const shown = digitResult.dataset.state;
    const show = !digitPad.empty && (shown === "done" || (shown === "pending" && !correctEl.hidden));
    if (shown === "pending") {
      correctSaidEl.textContent = "";
      for (const b of correctDigitsEl.children) b.removeAttribute("aria-pressed");
    }
    correctEl.hidden = !show;
  }
  new MutationObserver(followDigitMode).observe(digitResult, { attributes: true, attributeFilter: ["data-state"] });

  // --- wiring ----------------------------------------------------------------------------------------

  document.getElementById("teach-clear").addEventListener("click", clearPad);
  undoEl.addEventListener("click", () => undoOrRedo(teachPad.undo));
  redoEl.addEventListener("click", () => undoOrRedo(teachPad.redo));
  historyKeys("teach", { undo: () => undoOrRedo(teachPad.undo), redo: () => undoOrRedo(teachPad.redo) });
  nextEl.addEventListener("click", next);
  backEl.addEventListener("click", back);
  moreEl.addEventListener("click", more);
  downloadEl.addEventListener("click", download);
  sendEl.addEventListener("click", send);
  forgetEl.addEventListener("click", () => {
    if (!confirm(`Delete the ${state.samples.length} samples kept in this browser?`)) return;
    state.samples = [];
    state.kept = [];
    state.plan = shuffled();
    save();
    say("");
    clearPad();
  });
  document.addEventListener("keydown", (e) => {
    if (document.body.dataset.mode !== "teach" || e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === "Escape") clearPad();
    else if (e.key === "Enter" && e.target === document.body && !nextEl.disabled) next();
  });

  clearPad();
  showStore();
  offerToSend();
  return { file, get count() { return state.samples.length; } };
})();
