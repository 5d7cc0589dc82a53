"""Reading in the browser: the static site of a run (`digitlab export RUN --format web`) in Debian's Chromium.

Writes the site into a temporary folder (the run must have model.onnx), serves it with Python's http.server on
loopback and opens it OPENS times in fresh browser contexts: how long after navigation starts the model is
ready (model.json, ONNX Runtime Web's WebAssembly, the session and one warm-up run), and the first answer
(ready, then one digit read). Then, in one page, pen-up to answer for a single digit drawn on the 280 px pad
READS times: the pad's pixels, preprocess.js, the model on ONNX Runtime Web and the answer's fields; the
same for a 6-digit number written on the 840x280 px number pad (segment.js, the model asked for every crop
in one call, a second for the cuts of unsure ones), READS / 4 times; STROKES strokes drawn with the mouse
(Chromium's own input events), each timed from the pointer's release to the answer shown on the page; and
NUMBERS numbers of six strokes (six 1s) written with the mouse in Number mode, from the release of the
sixth to the reading shown.

    .venv/bin/python bench/web.py runs/fast-... [--opens 5] [--reads 200] [--strokes 40] [--numbers 10]

Targets (Chromium, a 2-core CPU): single digit p50 <= 10 ms; a 6-digit number p50 <= 30 ms; first answer
<= 1.5 s after opening.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from digitlab import web

CHROMIUM = "/usr/bin/chromium"

DRAW_AND_TIME = """async (n) => {
  const pad = document.getElementById("pad");
  const g = pad.getContext("2d");
  g.fillStyle = "#fff";
  g.fillRect(0, 0, pad.width, pad.height);
  g.lineWidth = 18;
  g.lineCap = "round";
  g.beginPath();
  for (let t = 0; t <= 48; t++) {  // a 0, as a person draws it
    const a = (2 * Math.PI * t) / 48;
    g.lineTo(140 + 62 * Math.sin(a), 140 - 92 * Math.cos(a));
  }
  g.stroke();
  const times = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await browserReader.readCanvas(pad);
    times.push(performance.now() - t0);
  }
  return times;
}"""


# A 6-digit number, 2 0 1 7 4 9, written on a canvas the size of the number pad with its pen (18 px).
WRITE_NUMBER_AND_TIME = """async (n) => {
  const pad = document.createElement("canvas");
  pad.width = 840;
  pad.height = 280;
  const g = pad.getContext("2d");
  g.fillStyle = "#fff";
  g.fillRect(0, 0, pad.width, pad.height);
  g.lineWidth = 18;
  g.lineCap = g.lineJoin = "round";
  const glyphs = [  // unit strokes: x in -1..1 of a half width, y in 0..1 of the height
    [[[-0.9, 0.25], [-0.5, 0], [0.5, 0], [0.9, 0.25], [0.7, 0.5], [-0.9, 1], [0.9, 1]]],
    [[[0, 0], [0.8, 0.2], [0.9, 0.8], [0, 1], [-0.9, 0.8], [-0.8, 0.2], [0, 0]]],
    [[[-0.3, 0.15], [0.2, 0], [0.2, 1]]],
    [[[-0.9, 0], [0.9, 0], [-0.2, 1]]],
    [[[0.4, 0], [-0.9, 0.65], [0.9, 0.65]], [[0.4, 0.3], [0.4, 1]]],
    [[[0.8, 0.3], [0, 0.45], [-0.8, 0.25], [0, 0], [0.8, 0.3], [0.6, 1]]],
  ];
  glyphs.forEach((strokes, k) => {
    for (const stroke of strokes) {
      g.beginPath();
      for (const [u, v] of stroke) g.lineTo(70 + 140 * k + 45 * u, 50 + 180 * v);
      g.stroke();
    }
  });
  const times = [];
  let read = null;
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    const { body } = await browserReader.numberAnswer(pad);
    times.push(performance.now() - t0);
    read = body;
  }
  return { times, text: read.text, digits: read.digits.length };
}"""


# From each release of the pointer to the answer on the page (#result's state "done"), in the page's clock.
WATCH_PEN_UPS = """() => {
  window.penUps = [];
  const result = document.getElementById("result");
  window.addEventListener("pointerup", () => {
    const t0 = performance.now();
    const watch = new MutationObserver(() => {
      if (result.dataset.state === "done") {
        window.penUps.push(performance.now() - t0);
        watch.disconnect();
      }
    });
    watch.observe(result, { attributes: true });
  }, true);
}"""


def draw_strokes(page, n: int) -> list[float]:
    """n vertical strokes (a 1) drawn with the mouse, the pad cleared before each: pen-up to answer, ms."""
    page.evaluate(WATCH_PEN_UPS)
    box = page.locator("#pad").bounding_box()
    x = box["x"] + box["width"] / 2
    for i in range(n):
        page.keyboard.press("Escape")
        page.mouse.move(x, box["y"] + box["height"] * 0.15)
        page.mouse.down()
        page.mouse.move(x - box["width"] * 0.03, box["y"] + box["height"] * 0.85, steps=3)
        page.mouse.up()
        page.wait_for_function(f"window.penUps.length > {i}")
    return page.evaluate("window.penUps")


# From each release of the pointer to the reading on the page (#number-result's state "done").
WATCH_NUMBER_PEN_UPS = """() => {
  window.numberPenUps = [];
  const result = document.getElementById("number-result");
  window.addEventListener("pointerup", () => {
    const t0 = performance.now();
    const watch = new MutationObserver(() => {
      if (result.dataset.state === "done") {
        window.numberPenUps.push([performance.now() - t0, document.querySelectorAll("#number-boxes .box").length]);
        watch.disconnect();
      }
    });
    watch.observe(result, { attributes: true });
  }, true);
}"""


def write_numbers(page, n: int) -> list[float]:
    """n numbers of six 1s written with the mouse in Number mode, the pad cleared before each: from the
    release of the sixth stroke to the reading shown, ms (only readings of six digits)."""
    page.click('label[for="mode-number"]')
    page.evaluate(WATCH_NUMBER_PEN_UPS)
    box = page.locator("#number-pad").bounding_box()
    for i in range(n):
        page.keyboard.press("Escape")
        for k in range(6):
            x = box["x"] + box["width"] * (k + 0.5) / 6
            page.mouse.move(x, box["y"] + box["height"] * 0.2)
            page.mouse.down()
            page.mouse.move(x - box["width"] * 0.01, box["y"] + box["height"] * 0.75, steps=3)
            page.mouse.up()
            page.wait_for_function(f"window.numberPenUps.length > {6 * i + k}")
    return [t for t, digits in page.evaluate("window.numberPenUps")[5::6] if digits == 6]


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--opens", type=int, default=5, help="fresh page loads timed")
    parser.add_argument("--reads", type=int, default=200, help="single-digit reads timed (after 20 untimed)")
    parser.add_argument("--strokes", type=int, default=40, help="strokes drawn with the mouse, pen-up to answer")
    parser.add_argument("--numbers", type=int, default=10, help="6-digit numbers written with the mouse")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        site = web.write_site(args.run, Path(tmp) / "site")
        print(f"site: {site['files']} files, {site['bytes'] / 2**20:.1f} MiB")
        server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=site["path"]))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
            ready, first = [], []
            for _ in range(args.opens):
                context = browser.new_context()
                page = context.new_page()
                page.goto(url)
                page.wait_for_function("typeof browserReader !== 'undefined' && browserReader.readyAt !== null")
                assert page.evaluate("browserReader.on"), "the page did not read in the browser"
                ready.append(page.evaluate("browserReader.readyAt"))
                first.append(ready[-1] + page.evaluate(DRAW_AND_TIME, 1)[0])
                context.close()
            page = browser.new_page()
            page.goto(url)
            page.wait_for_function("typeof browserReader !== 'undefined' && browserReader.readyAt !== null")
            times = page.evaluate(DRAW_AND_TIME, args.reads + 20)[20:]
            pen_ups = draw_strokes(page, args.strokes)
            number = page.evaluate(WRITE_NUMBER_AND_TIME, args.reads // 4 + 5)
            number_times = number["times"][5:]
            number_pen_ups = write_numbers(page, args.numbers)
            browser.close()
        server.shutdown()
    print(f"model ready after opening: median {statistics.median(ready):.0f} ms (each: {[round(t) for t in ready]})")
    print(f"first answer after opening: median {statistics.median(first):.0f} ms")
    print(
        f"pen-up to answer, single digit ({len(times)} reads): p50 {np.percentile(times, 50):.1f} ms, "
        f"p90 {np.percentile(times, 90):.1f} ms, p99 {np.percentile(times, 99):.1f} ms"
    )
    print(
        f"pen-up to answer on the page, a stroke drawn with the mouse ({len(pen_ups)} strokes): "
        f"p50 {np.percentile(pen_ups, 50):.1f} ms, p90 {np.percentile(pen_ups, 90):.1f} ms"
    )
    print(
        f"pen-up to answer, a 6-digit number on the number pad ({len(number_times)} reads, read as "
        f"{number['text']!r}, {number['digits']} digits): p50 {np.percentile(number_times, 50):.1f} ms, "
        f"p90 {np.percentile(number_times, 90):.1f} ms"
    )
    if number_pen_ups:
        print(
            f"pen-up to reading on the page, the sixth 1 written with the mouse ({len(number_pen_ups)} numbers): "
            f"p50 {np.percentile(number_pen_ups, 50):.1f} ms, p90 {np.percentile(number_pen_ups, 90):.1f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
