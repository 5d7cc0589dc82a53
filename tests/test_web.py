"""Reading in the browser: ONNX Runtime Web fetched and verified, the page's model.json, the routes that
serve them, the static site (`digitlab export RUN --format web`), and in Debian's Chromium the parity of
serve/static/preprocess.js and infer.js with digitlab's Python on 500+ images, of segment.js (numbers) with
`digitlab read` on composed and drawn numbers, and the site read from a plain HTTP server with every other
request blocked.

The quick tests fake npm and ONNX Runtime Web's files (their digests patched to the fakes'); the browser
tests use the real, pinned package (fetched once into the cache, then reused)."""

import base64
import dataclasses
import functools
import hashlib
import io
import json
import math
import os
import shutil
import statistics
import tarfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from digitlab import runs, web
from digitlab.cli import app
from digitlab.errors import DataError, DigitlabError, RunError
from digitlab.export import export
from digitlab.predict.reading import NUMBER_FEATURES

FAKE_FILES = {name: f"/* fake {name} */".encode() for name in web.RUNTIME_FILES}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def fake_runtime(tmp_path, monkeypatch):
    """An `npm` first on PATH that "packs" a tarball of fake runtime files, whose digests are pinned in their
    stead; the cache in tmp_path. Returns the file recording each npm call."""
    tarball = tmp_path / "onnxruntime-web-1.22.0.tgz"
    with tarfile.open(tarball, "w:gz") as tar:
        for name, blob in FAKE_FILES.items():
            info = tarfile.TarInfo(f"package/dist/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    monkeypatch.setattr(web, "RUNTIME_TARBALL_SHA256", sha(tarball.read_bytes()))
    monkeypatch.setattr(web, "RUNTIME_FILES", {name: sha(blob) for name, blob in FAKE_FILES.items()})
    bin_dir, calls = tmp_path / "bin", tmp_path / "npm-calls"
    bin_dir.mkdir()
    (bin_dir / "npm").write_text(
        '#!/bin/sh\necho "$@" >> ' + str(calls) + "\ndest=.\n"
        'while [ $# -gt 0 ]; do [ "$1" = --pack-destination ] && dest="$2"; shift; done\n'
        f'cp "{tarball}" "$dest/"\n'
    )
    (bin_dir / "npm").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return calls


def test_runtime_is_fetched_verified_cached_and_refetched_when_damaged(fake_runtime):
    folder = web.fetch_runtime()
    assert folder == web.runtime_dir() and folder.parent.name == "digitlab"
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == FAKE_FILES
    assert len(fake_runtime.read_text().splitlines()) == 1
    assert web.fetch_runtime() == folder  # from the cache: npm is not asked again
    assert len(fake_runtime.read_text().splitlines()) == 1
    (folder / "ort.wasm.min.mjs").write_bytes(b"damaged")
    assert web.runtime_file("ort.wasm.min.mjs").read_bytes() == FAKE_FILES["ort.wasm.min.mjs"]
    assert len(fake_runtime.read_text().splitlines()) == 2
    assert "onnxruntime-web@" in fake_runtime.read_text()
    assert web.runtime_file("../model.onnx") is None


def test_a_verified_runtime_is_not_hashed_again_on_every_request(fake_runtime, monkeypatch):
    folder = web.fetch_runtime()
    hashed = []
    monkeypatch.setattr(web, "_sha256_file", lambda path: hashed.append(path) or sha(path.read_bytes()))
    for _ in range(3):
        assert web.runtime_file("ort.wasm.min.mjs") == folder / "ort.wasm.min.mjs"
    assert hashed == []  # verified once in this process, and unchanged on disk since
    (folder / "ort.wasm.min.mjs").write_bytes(FAKE_FILES["ort.wasm.min.mjs"])  # written again: checked again
    web.fetch_runtime()
    assert hashed


def test_a_tarball_that_does_not_match_its_digest_is_refused(fake_runtime, monkeypatch):
    monkeypatch.setattr(web, "RUNTIME_TARBALL_SHA256", "0" * 64)
    with pytest.raises(
        DataError, match=r"onnxruntime-web@1\.22\.0: SHA-256 of the tarball is .* expected 000000000000"
    ):
        web.fetch_runtime()


def test_a_file_that_does_not_match_its_digest_is_refused(fake_runtime, monkeypatch):
    monkeypatch.setitem(web.RUNTIME_FILES, "ort-wasm-simd-threaded.wasm", "1" * 64)
    with pytest.raises(
        DataError, match=r"package/dist/ort-wasm-simd-threaded\.wasm: SHA-256 is .* expected 111111111111"
    ):
        web.fetch_runtime()
    assert not any(web.runtime_dir().glob("*"))  # nothing unverified is kept


def test_the_pinned_files_are_the_runtime_the_page_loads():
    infer = (Path(web.__file__).parent / "serve" / "static" / "infer.js").read_text()
    assert f'"{web.RUNTIME_FOLDER}/"' in infer and "ort.wasm.min.mjs" in web.RUNTIME_FILES
    assert all(len(d) == 64 for d in [web.RUNTIME_TARBALL_SHA256, *web.RUNTIME_FILES.values()])


@pytest.fixture(scope="module")
def onnx_run(tmp_path_factory, synthetic_cnn_run, synthetic_dir):
    """A copy of the session's tiny CNN run with its model.onnx (exported and checked)."""
    run = shutil.copytree(synthetic_cnn_run, tmp_path_factory.mktemp("web") / "run")
    assert export(run, "onnx", data_dir=synthetic_dir)["passed"]
    return run


def test_page_model_carries_the_calibration_and_the_unsure_rule(onnx_run):
    model = web.page_model(onnx_run)
    calibration = runs.read_json(onnx_run / runs.CALIBRATION)
    assert model["kind"] == "digit" and model["name"] == onnx_run.name
    assert model["web"]["temperature"] == calibration["temperature"]
    assert model["web"]["threshold"] == calibration["threshold"]
    assert model["web"]["class_names"] == [str(i) for i in range(10)]
    assert model["web"]["model"] == "model.onnx" and model["config"]["model"]["architecture"] == "cnn"


def test_the_server_serves_the_model_and_the_runtime_only_with_a_model_onnx(onnx_run, fake_runtime, tmp_path):
    from digitlab.serve import create_app

    client = TestClient(create_app(onnx_run))
    assert client.get("/model.json").json()["web"] == web.page_model(onnx_run)["web"]
    assert client.get("/model.onnx").content == (onnx_run / "model.onnx").read_bytes()
    wasm = client.get("/ort/ort-wasm-simd-threaded.wasm")
    assert wasm.status_code == 200 and wasm.headers["content-type"] == "application/wasm"
    assert client.get("/ort/ort.wasm.min.mjs").headers["content-type"].startswith("text/javascript")
    assert client.get("/ort/other.js").status_code == 404
    page = client.get("/").text
    assert '/static/infer.js"' in page and 'id="engine"' in page

    bare = shutil.copytree(onnx_run, tmp_path / "bare")
    (bare / "model.onnx").unlink()
    client = TestClient(create_app(bare))
    for path in ("/model.json", "/model.onnx"):
        answer = client.get(path)
        assert answer.status_code == 404 and "model.onnx: none for the page to run" in answer.json()["detail"]


def test_export_web_writes_a_static_site(onnx_run, fake_runtime, tmp_path):
    run = shutil.copytree(onnx_run, tmp_path / "run")
    record = export(run, "web", tmp_path / "site")
    site = tmp_path / "site"
    assert record["passed"] and record["format"] == "web" and record["runtime"] == web.RUNTIME_PACKAGE
    names = sorted(str(p.relative_to(site)) for p in site.rglob("*") if p.is_file())
    assert names == sorted(
        [
            "index.html",
            "model.json",
            "model.onnx",
            *(f"ort/{n}" for n in web.RUNTIME_FILES),
            *(
                f"static/{p.name}"
                for p in (Path(web.__file__).parent / "serve" / "static").iterdir()
                if p.is_file() and p.name != "index.html"
            ),
        ]
    )
    assert record["files"] == len(names) and record["bytes"] == sum((site / n).stat().st_size for n in names)
    index = (site / "index.html").read_text()
    assert '"/static/' not in index and '"static/infer.js"' in index
    written = json.loads((site / "model.json").read_text())
    assert written["web"] == web.page_model(run)["web"] and written["site"] is True
    assert runs.read_json(run / runs.METRICS)["exports"]["web"]["path"] == str(site.resolve())
    again = export(run, "web", site)  # a site written before is replaced
    assert again["passed"] and again["files"] == record["files"]


def test_export_web_refuses_what_it_cannot_write(onnx_run, fake_runtime, tmp_path):
    run = shutil.copytree(onnx_run, tmp_path / "run")
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunError, match=r"--out .*file: is a file; expected a folder for the web export"):
        export(run, "web", tmp_path / "file")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match=r"--out .*other: a folder that holds other files"):
        export(run, "web", tmp_path / "other")
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"
    result = CliRunner().invoke(app, ["export", str(run), "--format", "webp"])
    assert result.exit_code != 0 and "expected one of onnx, tflite, saved_model, web, got 'webp'" in result.output


# ---- in Chromium -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(onnx_run, tmp_path_factory):
    """The tiny CNN's static site with the real ONNX Runtime Web, served by Python's http.server."""
    out = tmp_path_factory.mktemp("site") / "site"
    web.write_site(onnx_run, out)
    handler = functools.partial(QuietHandler, directory=str(out))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", out
    server.shutdown()
    server.server_close()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):  # no line per request on stderr
        pass


def open_site(browser, url):
    """The page with every request outside `url` aborted and recorded: (page, elsewhere, errors, opened)."""
    context = browser.new_context(viewport={"width": 1000, "height": 760})
    page = context.new_page()
    elsewhere, errors = [], []

    def route(r):
        if r.request.url.startswith(url):
            r.continue_()
        else:
            elsewhere.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("pageerror", lambda e: errors.append(str(e)))
    opened = time.perf_counter()
    page.goto(url + "/")
    return page, elsewhere, errors, opened


def strokes_png(rng, digits: int = 1, pitch: int = 280) -> bytes:
    """Pen strokes as the pad draws them (18 px, round ends) on a white 280 px high canvas, `digits` glyph-like
    scribbles side by side, one every `pitch` px."""
    width = pitch * digits
    img = Image.new("RGBA", (width, 280), (255, 255, 255, 255))
    draw = ImageDraw.Draw(img)
    narrow = pitch / 280
    for k in range(digits):
        cx, cy = pitch / 2 + pitch * k + rng.uniform(-30, 30) * narrow, 140 + rng.uniform(-20, 20)
        rx, ry = rng.uniform(25, 70) * narrow, rng.uniform(60, 100)
        start, turn = rng.uniform(0, 2 * math.pi), rng.uniform(1.0, 2.2) * math.pi
        pts = [
            (cx + rx * math.cos(start + turn * t / 30), cy + ry * math.sin(start + turn * t / 30)) for t in range(31)
        ]
        if rng.random() < 0.5:
            pts.append((cx + rng.uniform(-rx, rx), cy + ry + rng.uniform(0, 20)))
        draw.line(pts, fill=(0, 0, 0, 255), width=18, joint="curve")
        for x, y in (pts[0], pts[-1]):
            draw.ellipse((x - 9, y - 9, x + 9, y + 9), fill=(0, 0, 0, 255))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).convert("RGBA").save(buf, "PNG")
    return buf.getvalue()


def parity_images(mnist) -> list[tuple[str, bytes]]:
    """(kind, PNG) for 200 MNIST test digits pasted into canvases, 15 columns x 16 wild digits, 100 pen
    drawings and 6 blank pages photographed (grain, a shadow's edge) that only the rules for the paper's
    texture and for a shadow along the image's edge find blank: 546 images."""
    from digitlab.data.synth.marks import synthetic_marks
    from digitlab.data.synth.wild import build_wild

    rng = np.random.default_rng(29)
    images = []
    for i in rng.choice(len(mnist.x_test), 200, replace=False):
        side = round(28 * rng.uniform(1.0, 10.0))
        big = Image.fromarray(mnist.x_test[i]).resize((side, side), Image.Resampling.BICUBIC)
        height, width = side + int(rng.integers(0, 200)), side + int(rng.integers(0, 200))
        canvas = Image.new("L", (width, height), 0)
        canvas.paste(big, (int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))))
        a = np.asarray(canvas)
        images.append(("mnist", png(255 - a if rng.random() < 0.5 else a)))
    wild = build_wild(mnist.x_test[:1000], mnist.y_test[:1000], per_column=16, seed=29)
    images += [(column, png(a)) for column, (arrays, _) in wild.items() for a in arrays]
    images += [("drawn", strokes_png(rng)) for _ in range(100)]
    for kind, chosen in (("grain", (20, 41, 53)), ("shadow", (30, 70, 137))):
        pages = synthetic_marks(kind, max(chosen) + 1, seed=3)
        images += [(kind, png(pages[i])) for i in chosen]
    return images


DECODE_PNGS = """  const images = [];  // base64 PNGs decoded as the page decodes an upload
  for (const b64 of pngs) {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const bitmap = await createImageBitmap(new Blob([bytes], { type: "image/png" }),
      { colorSpaceConversion: "none", premultiplyAlpha: "none" });
    const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
    const g = canvas.getContext("2d");
    g.drawImage(bitmap, 0, 0);
    const { data, width, height } = g.getImageData(0, 0, bitmap.width, bitmap.height);
    images.push({ rgba: data, width, height });
  }
"""
READ_PNGS = (
    "async (pngs) => {\n"
    + DECODE_PNGS
    + """  const answers = await browserReader.readMany(images);
  return answers.map((r) => ({ digit: r.digit, unsure: r.unsure, reason: r.reason, pixels: r.preprocessed.flat() }));
}"""
)


@pytest.mark.slow
@pytest.mark.browser
def test_the_browser_reads_as_python_does_on_546_images(browser, site, onnx_run, mnist):
    """preprocess.js + infer.js against digitlab.preprocess + the ONNX predictor, in one page load."""
    from digitlab.predict import classify, load_predictor
    from digitlab.preprocess import preprocess

    images = parity_images(mnist)
    predictor = load_predictor(onnx_run, "onnx")
    pres = [preprocess(data) for _, data in images]
    expected = classify(predictor, np.stack([p.digit for p in pres]), [p.reason for p in pres])

    url, _ = site
    page, elsewhere, errors, _ = open_site(browser, url)
    assert page.evaluate("browserReader.ready") is True
    got = []
    for i in range(0, len(images), 60):  # batches keep each message small
        got += page.evaluate(READ_PNGS, [base64.b64encode(d).decode() for _, d in images[i : i + 60]])
    differ, far, gaps, worded = [], [], [], []
    for k, ((kind, _), pre, want, have) in enumerate(zip(images, pres, expected, got)):
        gap = int(np.abs(np.asarray(have["pixels"]) - pre.digit.astype(int).ravel()).max())
        gaps.append(gap)
        if gap > 8:  # grey levels of 255: a pixel's rounding, never a different crop or place
            far.append((k, kind, gap))
        if (have["digit"], have["unsure"]) != (want["digit"], want["unsure"]):
            differ.append((k, kind, want["digit"], want["unsure"], have["digit"], have["unsure"], gap))
        elif have["reason"] != want["reason"]:  # the same words; a confidence's third decimal may round apart
            worded.append((k, kind, want["reason"], have["reason"]))
    agree = 1 - len(differ) / len(images)
    print(
        f"\nparity on {len(images)} images: answers agree on {agree:.2%}; largest input difference {max(gaps)} "
        f"grey levels ({sum(g > 0 for g in gaps)} inputs differ at all); further than 8 levels: {far}; "
        f"reasons worded otherwise: {worded}"
    )
    assert agree >= 0.995, f"answers differ (index, kind, python digit/unsure, browser digit/unsure, gap): {differ}"
    assert not [d for d in differ + worded if d[1] in ("grain", "shadow")], (differ, worded)  # blank in both
    assert len(far) <= len(images) // 200, far
    assert len(worded) <= len(images) // 100, worded
    assert not elsewhere and not errors, (elsewhere, errors)
    page.context.close()


def blank_pages() -> list[tuple[str, bytes]]:
    """("blank", PNG) for a blank page under a shadow (the reason asks for another photo) and an evenly lit
    one (plain "no ink")."""
    rows, cols = np.mgrid[0:120, 0:300]
    shadowed = (235 * (1 - 0.4 * (cols + 0.6 * rows > 150))).astype(np.uint8)
    return [("blank", png(shadowed)), ("blank", png(np.full((120, 300), 235, np.uint8)))]


def parity_numbers(mnist) -> list[tuple[str, bytes]]:
    """(kind, PNG) for 140 numbers composed from MNIST test digits (20 of each subset of the benchmark's
    composer, 1-8 digits), 30 drawn with the pad's pen (2-6 scribbles side by side, some in two lines) and
    two blank pages."""
    from digitlab.data.synth.numbers import SUBSETS, compose_numbers

    images = []
    for subset in SUBSETS:
        images += [(subset, png(n.image)) for n in compose_numbers(mnist.x_test, mnist.y_test, subset, 20, seed=29)]
    rng = np.random.default_rng(290)
    for k in range(30):
        images.append(("drawn", drawn_number_png(rng, k)))
    return images + blank_pages()


def drawn_number_png(rng, k: int) -> bytes:
    """The k-th pen-drawn number of a parity test: 2-6 scribbles, every fourth with a second line below."""
    one = Image.open(io.BytesIO(strokes_png(rng, 2 + k % 5))).convert("RGBA")
    if k % 4 == 3:
        two = Image.open(io.BytesIO(strokes_png(rng, 2 + k % 3))).convert("RGBA")
        page = Image.new("RGBA", (max(one.width, two.width), one.height + two.height + 40), (255, 255, 255, 255))
        page.paste(one, (0, 0))
        page.paste(two, (int(rng.integers(0, 60)), one.height + 40))
        one = page
    buf = io.BytesIO()
    one.save(buf, "PNG")
    return buf.getvalue()


READ_NUMBER_PNGS = (
    "async (pngs) => {\n"
    + DECODE_PNGS
    + """  const out = [];
  for (const image of images) {
    const { body } = await browserReader.numberAnswer(image);
    out.push(body.detail ? { error: body.detail } : {
      text: body.text, unsure: body.unsure, reason: body.reason, confidence: body.confidence,
      boxes: body.digits.map((d) => d.box), crops: body.digits.map((d) => d.preprocessed.flat()),
    });
  }
  return out;
}"""
)


@pytest.mark.slow
@pytest.mark.browser
def test_the_browser_reads_numbers_as_digitlab_read_does(browser, site, onnx_run, mnist):
    """segment.js + infer.js against `digitlab read` (segmentation, the ONNX predictor) on 172 numbers (two
    of them blank pages), in one page load of the static site: text and unsure agree on >= 99.5 %; where
    they differ is printed."""
    from digitlab.predict import load_predictor
    from digitlab.predict.reading import read

    images = parity_numbers(mnist)
    predictor = load_predictor(onnx_run, "onnx")
    expected = [read(predictor, data) for _, data in images]

    url, _ = site
    page, elsewhere, errors, _ = open_site(browser, url)
    assert page.evaluate("browserReader.ready") is True
    got = []
    for i in range(0, len(images), 25):  # batches keep each message small
        got += page.evaluate(READ_NUMBER_PNGS, [base64.b64encode(d).decode() for _, d in images[i : i + 25]])
    differ, other, gaps = [], [], []
    for k, ((kind, _), want, have) in enumerate(zip(images, expected, got)):
        if (have.get("text"), have.get("unsure")) != (want.text, want.unsure):
            differ.append((k, kind, want.text, want.unsure, have.get("text"), have.get("unsure"), have.get("error")))
            continue
        boxes = [list(d.box) for d in want.digits]
        if have["reason"] != want.reason or have["boxes"] != boxes:
            other.append((k, kind, want.reason, have["reason"]))
        if want.digits:
            gaps.append(
                int(np.abs(np.asarray(have["crops"]) - want.crops.astype(int).reshape(len(want.digits), -1)).max())
            )
            assert math.isclose(have["confidence"], want.confidence, rel_tol=1e-3), (k, kind)
    agree = 1 - len(differ) / len(images)
    unsure = sum(r.unsure for r in expected)
    print(
        f"\nnumber parity on {len(images)} numbers ({unsure} unsure in Python): text and unsure agree on "
        f"{agree:.2%}; reasons or boxes differ on {len(other)}; largest crop difference {max(gaps)} grey levels"
    )
    assert agree >= 0.995, f"readings differ (index, kind, python text/unsure, browser text/unsure/error): {differ}"
    assert len(other) <= len(images) // 100, other
    assert not [d for d in differ + other if d[1] == "blank"], (differ, other)  # the same reason, word for word
    # More marks than digits are read in one image: the same one-line error (a 422 from the server).
    marks = np.full((300, 600), 255, np.uint8)
    for i, j in np.ndindex(8, 12):
        marks[20 + 35 * i : 42 + 35 * i, 20 + 48 * j : 28 + 48 * j] = 0
    with pytest.raises(DigitlabError) as raised:
        read(predictor, png(marks))
    (refused,) = page.evaluate(READ_NUMBER_PNGS, [base64.b64encode(png(marks)).decode()])
    assert refused == {"error": str(raised.value)} and "96 separate marks found" in refused["error"]
    assert not elsewhere and not errors, (elsewhere, errors)
    page.context.close()


# The 28x28 input #seen shows (4 px per pixel) and the one read from the pad's pixels.
SHOWN_AND_PAD = """async () => {
  const seen = document.getElementById("seen").getContext("2d").getImageData(0, 0, 112, 112).data;
  const shown = [];
  for (let y = 0; y < 28; y++) for (let x = 0; x < 28; x++) shown.push(seen[4 * ((4 * y + 2) * 112 + 4 * x + 2)]);
  const pad = await browserReader.readCanvas(document.getElementById("pad"));
  return [shown, pad.preprocessed.flat()];
}"""


def timed_reads(read: str, check: str = "") -> str:
    """A page function that draws one base64 PNG on a canvas and times n reads of it: `read` is the awaited
    call on `canvas`, `check` a statement on its `answer`."""
    return f"""async ([b64, n]) => {{
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const bitmap = await createImageBitmap(new Blob([bytes], {{ type: "image/png" }}));
  const canvas = document.createElement("canvas");
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  canvas.getContext("2d").drawImage(bitmap, 0, 0);
  const times = [];
  for (let i = 0; i < n; i++) {{
    const t0 = performance.now();
    const answer = await {read};
    times.push(performance.now() - t0);
    {check}
  }}
  return times;
}}"""


TIME_READS = timed_reads("browserReader.readCanvas(canvas)")
TIME_NUMBER_READS = timed_reads(
    "browserReader.numberAnswer(canvas)",
    "if (answer.body.digits.length < 2) throw new Error(`read ${answer.body.text}`);",
)


@pytest.mark.slow
@pytest.mark.browser
def test_the_static_site_reads_a_drawn_digit_from_a_plain_http_server(browser, site, onnx_run):
    """Every request outside the server aborted: the page reads a digit drawn with pointer strokes in the
    browser, and says so, and a number written on the number pad as `digitlab read` reads the pad's PNG;
    with the pen-up-to-answer figures printed (a digit on the 280 px pad, 6 scribbles on the number pad)."""
    from digitlab.predict import load_predictor
    from digitlab.predict.reading import read

    url, _ = site
    page, elsewhere, errors, opened = open_site(browser, url)
    page.wait_for_function("document.body.dataset.engine !== undefined")
    box = page.locator("#pad").bounding_box()
    scale = box["width"] / 280
    points = [(150, 45), (146, 100), (140, 160), (134, 236)]
    page.mouse.move(box["x"] + points[0][0] * scale, box["y"] + points[0][1] * scale)
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(box["x"] + x * scale, box["y"] + y * scale, steps=4)
    page.mouse.up()
    page.wait_for_function("document.getElementById('result').dataset.state === 'done'")
    first = time.perf_counter() - opened
    assert page.locator("#engine").text_content() == "read in this browser (ONNX Runtime Web)"
    assert page.evaluate(
        "document.getElementById('seen').getContext('2d').getImageData(0, 0, 112, 112)"
        ".data.some((v, i) => i % 4 === 0 && v > 0)"
    ), "the 28x28 input is not shown"
    # An upload is read in the browser too, at its own resolution as the server reads the file, not from the
    # pad's 280 px copy of it: a wide image of thin strokes, which the pad shrinks.
    thin = Image.open(io.BytesIO(strokes_png(np.random.default_rng(7)))).resize((1500, 500), Image.Resampling.BOX)
    buf = io.BytesIO()
    thin.save(buf, "PNG")
    page.locator("#upload").set_input_files(
        files=[{"name": "wide.png", "mimeType": "image/png", "buffer": buf.getvalue()}]
    )
    page.wait_for_function(
        "document.getElementById('result').dataset.state === 'done' && "
        "document.getElementById('digit').textContent !== ''"
    )
    shown, from_pad = page.evaluate(SHOWN_AND_PAD)
    (own,) = page.evaluate(READ_PNGS, [base64.b64encode(buf.getvalue()).decode()])
    assert shown == own["pixels"] and from_pad != own["pixels"]
    notes = [{"name": "notes.png", "mimeType": "image/png", "buffer": b"not an image"}]
    page.locator("#upload").set_input_files(files=notes)  # no server to say why: the page does
    page.wait_for_function("document.getElementById('result').dataset.state === 'error'")
    assert page.locator("#status").text_content().startswith("notes.png: not an image this browser can open")
    ready = page.evaluate("browserReader.readyAt")
    rng = np.random.default_rng(6)
    single = page.evaluate(TIME_READS, [base64.b64encode(strokes_png(rng)).decode(), 60])[10:]
    six = page.evaluate(TIME_NUMBER_READS, [base64.b64encode(strokes_png(rng, 6, pitch=140)).decode(), 30])[5:]
    print(
        f"\nstatic site: model ready {ready:.0f} ms after navigation started; "
        f"first answer {first:.2f} s after opening (with a drawn stroke); pen-up to answer, "
        f"single digit: p50 {statistics.median(single):.1f} ms, p90 {np.percentile(single, 90):.1f} ms; "
        f"6 scribbles on the 840 px number pad: p50 {statistics.median(six):.1f} ms"
    )
    # The Number mode reads in the browser too: two digits written with the mouse.
    page.click('label[for="mode-number"]')
    box = page.locator("#number-pad").bounding_box()
    for cx in (0.3, 0.7):
        page.mouse.move(box["x"] + box["width"] * cx, box["y"] + box["height"] * 0.2)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * (cx - 0.02), box["y"] + box["height"] * 0.8, steps=6)
        page.mouse.up()
    page.wait_for_function(
        "document.getElementById('number-result').dataset.state === 'done' && "
        "document.querySelectorAll('#number-boxes .box').length === 2"
    )
    drawn = page.evaluate("document.getElementById('number-pad').toDataURL('image/png')")
    want = read(load_predictor(onnx_run, "onnx"), base64.b64decode(drawn.split(",", 1)[1]))
    assert len(want.text) == 2 and page.locator("#number-text").text_content() == want.text
    assert ("is-unsure" in page.locator("#number-result").get_attribute("class")) == want.unsure
    page.locator("#number-upload").set_input_files(files=notes)
    page.wait_for_function("document.getElementById('number-result').dataset.state === 'error'")
    assert page.locator("#number-status").text_content().startswith("notes.png: not an image this browser")
    assert not elsewhere and not errors, (elsewhere, errors)
    page.context.close()


@pytest.fixture
def served(serve_app):
    """`start(run)`: the app over `run` served on loopback (conftest's serve_app), its URL."""
    from digitlab.serve import create_app

    return lambda run: serve_app(create_app(run))


@pytest.mark.slow
@pytest.mark.browser
def test_the_served_page_reads_in_the_browser_with_model_onnx_and_asks_the_server_without(
    browser, served, onnx_run, tiny_line_run, line_onnx_run, tmp_path
):
    """Both modes read in the browser with model.onnx and ask /api/predict and /api/read without it; a line
    model's run without model.onnx is read by the server, and the footer says why; with one, its numbers
    are read in the browser by the combined reader."""
    bare = shutil.copytree(onnx_run, tmp_path / "bare")
    (bare / "model.onnx").unlink()
    for run, engine, asks in (
        (onnx_run, "read in this browser (ONNX Runtime Web)", False),
        (bare, "read by the server", True),
    ):
        url = served(run)
        page, elsewhere, errors, _ = open_site(browser, url)
        asked = []
        page.on("request", lambda r, asked=asked: asked.append(r.url) if "/api/" in r.url else None)
        page.wait_for_function("document.body.dataset.engine !== undefined")
        assert page.locator("#engine").text_content() == engine
        box = page.locator("#pad").bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] * 0.15)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] * 0.85, steps=8)
        page.mouse.up()
        page.wait_for_function("document.getElementById('result').dataset.state === 'done'")
        page.click('label[for="mode-number"]')
        box = page.locator("#number-pad").bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.2)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.8, steps=8)
        page.mouse.up()
        page.wait_for_function("document.getElementById('number-result').dataset.state === 'done'")
        paths = {u.split(url, 1)[1].split("?")[0] for u in asked}
        assert ("/api/predict" in paths, "/api/read" in paths) == (asks, asks), paths
        assert not elsewhere and not errors, (elsewhere, errors)
        page.context.close()
    page, elsewhere, errors, _ = open_site(browser, served(tiny_line_run))
    page.wait_for_function("document.body.dataset.mode === 'number'")
    page.wait_for_function("document.getElementById('engine').textContent.includes('model.onnx')")
    assert page.locator("#engine").text_content() == "read by the server (no model.onnx for the browser)"
    assert not elsewhere and not errors, (elsewhere, errors)
    page.context.close()
    url = served(line_onnx_run)
    page, elsewhere, errors, _ = open_site(browser, url)
    asked = []
    page.on("request", lambda r: asked.append(r.url) if "/api/read" in r.url else None)
    page.wait_for_function("document.body.dataset.mode === 'number' && document.body.dataset.engine === 'browser'")
    assert page.locator("#engine").text_content() == "read in this browser (ONNX Runtime Web, the combined reader)"
    box = page.locator("#number-pad").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.8, steps=8)
    page.mouse.up()
    page.wait_for_function("document.getElementById('number-result').dataset.state === 'done'")
    assert not asked and not elsewhere and not errors, (asked, elsewhere, errors)
    page.context.close()


# ---- a line run in the browser ---------------------------------------------------------------------------


# A trained `--preset numbers` run to hold the browser to instead of the tiny one (copied, never written):
# DIGITLAB_TEST_LINE_RUN=runs/numbers pytest tests/test_web.py -k line_run -s -n 0
LINE_RUN = os.environ.get("DIGITLAB_TEST_LINE_RUN")


@pytest.fixture(scope="module")
def line_onnx_run(line_digit_run, synthetic_dir, tmp_path_factory):
    """A copy of the line run holding a digit model (`line_digit_run`, or LINE_RUN), both models exported
    to ONNX."""
    run = shutil.copytree(LINE_RUN or line_digit_run, tmp_path_factory.mktemp("line-web") / "run")
    data_dir = None if LINE_RUN else synthetic_dir
    assert export(run / "digits", "onnx", n=200, data_dir=data_dir)["passed"]
    assert export(run, "onnx", n=200, data_dir=data_dir)["passed"]
    if "numbers" not in runs.read_json(run / runs.CALIBRATION):  # a rule for numbers, so the page applies one
        rule = {"features": list(NUMBER_FEATURES), "weights": [2.0, -0.5, -0.5, 0.05, 0.05], "bias": 0.0}
        runs.update_json(run / runs.CALIBRATION, numbers={**rule, "threshold": 0.5})
    return run


def test_a_line_run_is_exported_and_served_for_the_page_with_its_digit_model(line_onnx_run, fake_runtime, tmp_path):
    from digitlab.predict import lines, reading
    from digitlab.preprocess import line
    from digitlab.serve import create_app

    run = shutil.copytree(line_onnx_run, tmp_path / "run")
    model = web.page_model(run)
    assert model["kind"] == "line" and model["web"]["line"]["width"] == line.LINE_WIDTH
    assert model["web"]["line"]["crop_ink"] == lines.CROP_INK
    assert model["web"]["line"]["combining"] == dataclasses.asdict(reading.COMBINING)
    assert model["digits"]["web"]["model"] == "digits/model.onnx"
    assert model["digits"]["web"]["threshold"] == runs.read_json(run / "digits" / runs.CALIBRATION)["threshold"]
    record = export(run, "web", tmp_path / "site")
    assert record["passed"] and record["files"] == len(web.static_files()) + 3 + len(web.RUNTIME_FILES)
    for name in ("model.onnx", "digits/model.onnx"):
        assert (tmp_path / "site" / name).read_bytes() == (run / name).read_bytes()
    client = TestClient(create_app(run))
    assert client.get("/model.json").json()["web"]["line"] == model["web"]["line"]
    assert client.get("/digits/model.onnx").content == (run / "digits" / "model.onnx").read_bytes()
    (run / "digits" / "model.onnx").unlink()  # the page would read otherwise than `digitlab read`: the server reads
    client = TestClient(create_app(run))
    answer = client.get("/model.json")
    assert answer.status_code == 404 and "digits/model.onnx: missing; the page reads a line run" in answer.text
    assert client.get("/digits/model.onnx").status_code == 404
    shutil.rmtree(run / "digits")  # a line run without a digit model: the line method alone
    assert "digits" not in TestClient(create_app(run)).get("/model.json").json()


@pytest.fixture(scope="module")
def line_site(line_onnx_run, tmp_path_factory):
    """`line_onnx_run`'s static site, served by Python's http.server: (url, run)."""
    run = line_onnx_run
    out = tmp_path_factory.mktemp("line-site") / "site"
    web.write_site(run, out)
    handler = functools.partial(QuietHandler, directory=str(out))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", run
    server.shutdown()
    server.server_close()


def parity_lines(mnist) -> list[tuple[str, bytes]]:
    """(kind, PNG) for 100 numbers: 60 composed from MNIST test digits (10 of each of the benchmark's
    composer's subsets), 40 drawn with the pad's pen (2-6 scribbles, some in two lines); and two blank
    pages."""
    from digitlab.data.synth.numbers import SUBSETS, compose_numbers

    images = []
    per = 60 // len(SUBSETS)
    for subset in SUBSETS:
        images += [(subset, png(n.image)) for n in compose_numbers(mnist.x_test, mnist.y_test, subset, per, seed=31)]
    rng = np.random.default_rng(291)
    while len(images) < 100:
        k = len(images)
        images.append(("drawn", drawn_number_png(rng, k)))
    return images + blank_pages()


def python_reading(predictor, data: bytes, method: str):
    """`digitlab read --method METHOD` of one image."""
    from digitlab.predict.reading import read

    return read(predictor, data, method=method)


READ_LINE_PNGS = READ_NUMBER_PNGS.replace("numberAnswer(image)", "numberAnswer({ ...image, method })")
READ_LINE_PNGS = READ_LINE_PNGS.replace("async (pngs) => {", "async ([pngs, method]) => {")


@pytest.mark.slow
@pytest.mark.browser
def test_the_browser_reads_a_line_run_as_digitlab_read_does(browser, line_site, mnist):
    """lines.js + infer.js against `digitlab read` (ONNX predictors) on 102 numbers (two of them blank
    pages), by the line method and the combined reader, in one page load of a line run's static site: text
    and unsure agree on >= 99.5 %; where they differ is printed."""
    from digitlab.predict import load_predictor

    url, run = line_site
    images = parity_lines(mnist)
    predictor = load_predictor(run, "onnx")
    page, elsewhere, errors, _ = open_site(browser, url)
    assert page.evaluate("browserReader.ready") is True
    assert page.locator("#engine").text_content() == "read in this browser (ONNX Runtime Web, the combined reader)"
    encoded = [base64.b64encode(d).decode() for _, d in images]
    for method in ("line", "combined"):
        expected = [python_reading(predictor, data, method) for _, data in images]
        got = []
        for i in range(0, len(images), 25):  # batches keep each message small
            got += page.evaluate(READ_LINE_PNGS, [encoded[i : i + 25], method])
        differ, other, gaps = [], [], []
        for k, ((kind, _), want, have) in enumerate(zip(images, expected, got)):
            if (have.get("text"), have.get("unsure")) != (want.text, want.unsure):
                differ.append(
                    (k, kind, want.text, want.unsure, have.get("text"), have.get("unsure"), have.get("error"))
                )
                continue
            if have["reason"] != want.reason or have["boxes"] != [list(d.box) for d in want.digits]:
                other.append((k, kind, want.reason, have["reason"]))
            if want.digits:
                crops = want.crops.astype(int).reshape(len(want.digits), -1)
                gaps.append(int(np.abs(np.asarray(have["crops"]) - crops).max()))
        compared = [r for r in expected if r is not None]
        agree = 1 - len(differ) / len(compared)
        print(
            f"\n{method} parity on {len(compared)} of {len(images)} numbers ({sum(r.unsure for r in compared)} "
            f"unsure in Python): "
            f"text and unsure agree on {agree:.2%}; reasons or boxes differ on {len(other)}; largest crop "
            f"difference {max(gaps, default=0)} grey levels"
        )
        assert agree >= 0.995, f"{method}: readings differ (index, kind, python, browser): {differ}"
        assert len(other) <= len(images) // 100, (method, other)
        assert not [d for d in differ + other if d[1] == "blank"], (method, differ, other)
    assert not elsewhere and not errors, (elsewhere, errors)
    page.context.close()
