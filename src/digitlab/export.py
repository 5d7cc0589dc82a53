"""Export a trained run for deployment with Keras's own `model.export`, checked before it is kept.

  model.onnx     ONNX, dynamic batch: `digitlab predict/serve --runtime onnx` run it on ONNX Runtime
  model.tflite   TensorFlow Lite (Keras's "litert" format)
  saved_model/   TensorFlow SavedModel; signature `serving_default`, endpoint `serve`
  site/          `--format web`: the drawing page reading with model.onnx in the browser, static files
                 (web.write_site); the ONNX export, checked as above, is made first when the run lacks it

Every export takes raw pixels, (batch, 28, 28) float32 0-255, under the input name `pixels`, and returns
softmax probabilities (batch, 10), uncalibrated: the run's calibration.json is applied by the predictor.
An export is written to a temporary name beside its destination, run on the first `n` test images and
compared with the Keras model (a line model: on its first `n` validation lines, the greedily decoded
strings); only when argmax (the strings) agrees everywhere and probabilities differ by at most
ATOL does it replace what was there. The check's record goes under `exports` in metrics.json.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
import time
import warnings
from pathlib import Path

import numpy as np

from digitlab import atomic, runs, web
from digitlab.config import ModelConfig, TrainConfig
from digitlab.data import load_dataset
from digitlab.data.synth.lines import validation_lines
from digitlab.errors import DigitlabError, RunError
from digitlab.predict.ctc import greedy_decode
from digitlab.predict.keras_runtime import load_keras_model
from digitlab.predict.onnx_runtime import open_session, run_session, sha256

FORMATS = {"onnx": runs.ONNX, "tflite": runs.TFLITE, "saved_model": runs.SAVED_MODEL}  # default names
KERAS_FORMATS = {"onnx": "onnx", "tflite": "litert", "saved_model": "tf_saved_model"}  # model.export's names
WEB, SITE = "web", "site"  # the static site's format and default folder in the run
ATOL = 1e-4  # largest |probability difference| allowed against the Keras model
CHECK_IMAGES = 1000  # test images the check runs (capped at the test set's size)


def export(
    run_dir: Path, fmt: str, out: Path | None = None, *, n: int = CHECK_IMAGES, data_dir: Path | None = None
) -> dict:
    """Export a run's model.keras as `fmt` to `out` (default: FORMATS[fmt] in the run directory).

    Returns the check's record (also saved in metrics.json). record["passed"] False: the new export was
    discarded and any earlier export at `out` is left as it was.
    """
    if fmt not in (*FORMATS, WEB):
        raise DigitlabError(f"--format: expected one of {', '.join((*FORMATS, WEB))}, got {fmt!r}")
    if n <= 0:
        raise DigitlabError(f"--check-images: expected a positive integer, got {n}")
    if fmt == WEB:
        return export_web(run_dir, out, n=n, data_dir=data_dir)
    run_dir = Path(run_dir)
    model_path = runs.require_model(run_dir)
    runs.check_run(run_dir, calibrated=False)  # config.json's fields, one line each, before the model loads
    _require_exporter(fmt)
    dest = _destination(run_dir, fmt, out)
    atomic.remove_stale(dest.parent)  # what a killed export left
    x, dataset = check_images(run_dir, n, data_dir)
    model = load_keras_model(model_path)

    work = atomic.temporary_dir(dest)
    try:
        staged = work / FORMATS[fmt]  # Keras wants a .tflite name; the rename below gives the final one
        started = time.perf_counter()
        write_export(model, fmt, staged)
        export_seconds = time.perf_counter() - started
        record = check_export(fmt, staged, model, x)
        record.update(
            format=fmt,
            path=_relative(dest, run_dir),
            dataset=dataset,
            bytes=_size(staged),
            export_seconds=round(export_seconds, 3),
            source_sha256=sha256(model_path),
            packages=runs.package_versions(("keras", "tensorflow", "tensorflow-cpu", "tf2onnx", "onnx", "onnxruntime")),
        )
        if record["passed"]:
            _install(staged, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _save_record(run_dir, fmt, record)
    return record


def export_web(run_dir: Path, out: Path | None = None, *, n: int = CHECK_IMAGES, data_dir: Path | None = None) -> dict:
    """The static site of a run (web.write_site) in `out` (default: site/ in the run): its model.onnx (and a
    line run's digits/model.onnx), exported and checked first when the run has none. Returns the ONNX check's record with the
    site's path, files and bytes (also saved under exports["web"] in metrics.json)."""
    run_dir = Path(run_dir)
    runs.require_model(run_dir)
    checked = runs.check_run(run_dir, calibrated=True)
    dest = run_dir / SITE if out is None else Path(out)
    if dest.resolve() in {(run_dir / name).resolve() for name in runs.RUN_FILES}:
        raise RunError(f"--out {dest}: one of the run's own files; choose another name")
    started = time.perf_counter()
    part = run_dir / runs.DIGIT_PART  # a line run's digit model, read by the combined reader: exported too
    for source in (*((part,) if checked.kind == "line" and (part / runs.CONFIG).is_file() else ()), run_dir):
        record = _current_onnx(source) or export(source, "onnx", n=n, data_dir=data_dir)
        if not record["passed"]:
            return {**record, "format": WEB}
    site = web.write_site(run_dir, dest)
    record = {
        **record,
        "format": WEB,
        "path": _relative(dest, run_dir),
        "files": site["files"],
        "bytes": site["bytes"],
        "export_seconds": round(time.perf_counter() - started, 3),
        "runtime": web.RUNTIME_PACKAGE,
    }
    _save_record(run_dir, WEB, record)
    return record


def _current_onnx(run_dir: Path) -> dict | None:
    """The run's ONNX export record when its model.onnx was exported and checked from its model.keras as it is."""
    record = (
        runs.read_json(run_dir / runs.METRICS).get("exports", {}).get("onnx")
        if (run_dir / runs.METRICS).exists()
        else None
    )
    fresh = (
        record is not None
        and record.get("passed")
        and record.get("source_sha256") == sha256(runs.require_model(run_dir))
    )
    return record if fresh and (run_dir / runs.ONNX).is_file() else None


def _require_exporter(fmt: str) -> None:
    needed = ("keras", "tensorflow", *(("tf2onnx", "onnx", "onnxruntime") if fmt == "onnx" else ()))
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        raise DigitlabError(f"--format {fmt} needs {', '.join(missing)}: pip install 'digitlab[export]'")


def _destination(run_dir: Path, fmt: str, out: Path | None) -> Path:
    """Where the export goes; an existing folder is replaced only if it is a SavedModel."""
    dest = run_dir / FORMATS[fmt] if out is None else Path(out)
    if dest.is_dir() and fmt != "saved_model":
        dest = dest / FORMATS[fmt]  # --out names a folder: the default file name inside it
    if dest.resolve() in {(run_dir / name).resolve() for name in runs.RUN_FILES}:
        raise RunError(f"--out {dest}: one of the run's own files; choose another name")
    suffix = Path(FORMATS[fmt]).suffix
    if suffix and dest.suffix != suffix:
        raise RunError(f"--out {dest}: expected a {suffix} file name for --format {fmt}")
    if fmt == "saved_model" and dest.exists() and not (dest / "saved_model.pb").is_file():
        raise RunError(f"{dest}: exists and is not a SavedModel; choose another --out")
    if fmt != "saved_model" and dest.is_dir():
        raise RunError(f"{dest}: is a folder; expected a file name for the {fmt} export")
    dest.parent.mkdir(parents=True, exist_ok=True)
    return dest


def check_images(run_dir: Path, n: int, data_dir: Path | None = None) -> tuple[np.ndarray, str]:
    """The first n test images of the run's data set, float32 raw pixels, and the set's name; for a line
    model, the first n of its validation lines (lines are never composed from the test set outside
    bench/read_numbers.py) and "<name> validation lines"."""
    config = runs.read_json(run_dir / runs.CONFIG)
    name = config["train"].get("dataset", "mnist")
    if ModelConfig.from_dict(config["model"]).kind == "line":
        cfg = dataclasses.replace(TrainConfig.from_dict(config["train"]), val_lines=n)
        return validation_lines(cfg, data_dir=data_dir)[0].astype("float32"), f"{name} validation lines"
    return load_dataset(name, data_dir=data_dir).x_test[:n].astype("float32"), name


def write_export(model, fmt: str, path: Path) -> None:
    import keras

    # Batch dimension None: every format accepts any number of images (TFLite after a resize).
    signature = [keras.InputSpec(shape=(None, *model.input_shape[1:]), dtype="float32", name="pixels")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf2onnx's NumPy 2 patch and converter deprecation notices
        try:
            model.export(str(path), format=KERAS_FORMATS[fmt], input_signature=signature, verbose=False)
        except Exception as e:
            raise DigitlabError(
                f"{path.name}: Keras could not export the model as {fmt} ({type(e).__name__}: {e})"
            ) from None


def check_export(fmt: str, path: Path, model, x: np.ndarray) -> dict:
    """Run the export on x and compare with the Keras model: argmax and max |probability difference|."""
    import keras

    expected = keras.ops.convert_to_numpy(model(x, training=False))
    record = {"n": len(x), "tolerance": ATOL}
    try:
        got = np.asarray(RUNNERS[fmt](path, x), dtype="float32")
    except Exception as e:  # the export loads or runs wrongly: a failed check, not a crash
        return {**record, "passed": False, "error": f"{type(e).__name__}: {e}"}
    if got.shape != expected.shape:
        return {**record, "passed": False, "error": f"output shape {got.shape}, expected {expected.shape}"}
    diff = float(np.abs(got - expected).max())
    if expected.ndim == 3:  # a line model's frames: the greedily decoded strings must agree
        mismatches = sum(a.digits != b.digits for a, b in zip(greedy_decode(got), greedy_decode(expected)))
    else:
        mismatches = int((got.argmax(axis=1) != expected.argmax(axis=1)).sum())
    return {
        **record,
        "max_abs_diff": diff,
        "argmax_agreement": 1.0 - mismatches / len(x),
        "argmax_mismatches": mismatches,
        "passed": mismatches == 0 and diff <= ATOL,
    }


def _run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    return run_session(open_session(path), x)  # one call for all n: the batch dimension is dynamic


def _run_tflite(path: Path, x: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "tf.lite.Interpreter is deprecated": it still ships with TF 2.21
        interpreter = tf.lite.Interpreter(model_path=str(path))
    (pixels,), (probs,) = interpreter.get_input_details(), interpreter.get_output_details()
    interpreter.resize_tensor_input(pixels["index"], x.shape)  # the file's batch dimension is 1
    interpreter.allocate_tensors()
    interpreter.set_tensor(pixels["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(probs["index"])


def _run_saved_model(path: Path, x: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    serving = tf.saved_model.load(str(path)).signatures["serving_default"]  # what TF Serving calls
    (probs,) = serving(pixels=tf.constant(x)).values()
    return probs.numpy()


RUNNERS = {"onnx": _run_onnx, "tflite": _run_tflite, "saved_model": _run_saved_model}


def _relative(path: Path, run_dir: Path) -> str:
    """Relative to the run directory when inside it (the run can move), else absolute."""
    try:
        return str(path.resolve().relative_to(run_dir.resolve()))
    except ValueError:
        return str(path.resolve())


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _install(staged: Path, dest: Path) -> None:
    """Rename the checked export into place. A file is replaced atomically; a SavedModel folder cannot
    be, so the old one is moved aside first and removed after (a crash between leaves it as .old)."""
    if not staged.is_dir():
        atomic.install(staged, dest)
        return
    if dest.is_dir():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.replace(dest, old)
        os.replace(staged, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staged, dest)


def _save_record(run_dir: Path, fmt: str, record: dict) -> None:
    """exports[fmt] describes the export in place; a failed attempt is kept beside it, replacing nothing."""
    metrics = run_dir / runs.METRICS
    exports = runs.read_json(metrics).get("exports", {}) if metrics.exists() else {}
    if record["passed"]:
        exports[fmt] = record
    else:
        kept = {k: v for k, v in exports.get(fmt, {}).items() if k != "last_failed_check"}
        exports[fmt] = {**kept, "last_failed_check": record}
    runs.update_json(metrics, exports=exports)
