"""Prediction with a trained run: probabilities, digits and top-3 for arrays of images.

The runtimes (keras_runtime, onnx_runtime) each turn a run directory into a forward callable; the
`Predictor` here adds calibration, class names and the "unsure" rule, the same for both. Images and
files are read by `reading.py` (the one reading path), numbers by segmentation (`segmented.py`) or by a
line model (`lines.py`, decoded by `ctc.py`), into the dataclasses of `results.py`.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path

import numpy as np

from digitlab import runs
from digitlab.config import RUNTIMES
from digitlab.data import load_dataset
from digitlab.errors import DigitlabError, RunError
from digitlab.metrics import temper
from digitlab.predict import keras_runtime, onnx_runtime
from digitlab.preprocess import NO_INK, Preprocessed

CHUNK = 1024  # images per model call
# A model that learnt non-digits gives them nearly even probabilities: when its two likeliest classes
# together hold less than this, an unsure answer is no digit at all rather than a doubt between two.
NOT_A_DIGIT = 0.5
NOT_A_DIGIT_REASON = "not a digit: it looks like a letter, a symbol or a scribble"


@dataclass
class Predictor:
    """A run's forward pass plus what is needed to read its output: class names and calibration.

    `forward` is the runtime's part (Keras or ONNX Runtime): float32 (n, *input_shape) raw pixels ->
    (n, classes) probabilities, uncalibrated. Everything else is the same for every runtime.
    """

    forward: Callable[[np.ndarray], np.ndarray]
    input_shape: tuple[int, ...]
    class_names: tuple[str, ...]
    temperature: float = 1.0  # calibration: probabilities = softmax(log p / T)
    threshold: float = 0.0  # calibrated confidence below this: "unsure", digit None
    run_dir: Path | None = None
    runtime: str = "keras"
    kind: str | None = None  # the run's ModelConfig.kind, "digit" or "line"; None: a model made without a run
    nondigits: bool = False  # the model learnt marks that are not digits (trained with --outliers)
    numbers: runs.NumberRule | None = None  # a line run's rule for whole numbers (reading.combine), if fitted

    def check_images(self, x: np.ndarray, where: str) -> None:
        """A RunError unless images `x` (n, h, w) have the shape the model takes."""
        if tuple(x.shape[1:]) != self.input_shape:
            raise RunError(
                f"{where}: the model expects images of shape {self.input_shape}, the data has {tuple(x.shape[1:])}"
            )

    def raw_proba(self, x: np.ndarray | Preprocessed | Sequence[Preprocessed]) -> np.ndarray:
        """(n, h, w) raw pixels 0-255 (uint8 or float), or `preprocess`'s results -> (n, classes) float32
        probabilities, uncalibrated."""
        if isinstance(x, Preprocessed):
            x = x.digit
        elif isinstance(x, (list, tuple)) and x and all(isinstance(p, Preprocessed) for p in x):
            x = np.stack([p.digit for p in x])
        x = np.asarray(x, dtype="float32")
        if x.ndim == 2:
            x = x[None]
        if tuple(x.shape[1:]) != self.input_shape:
            raise DigitlabError(f"images: expected shape (n, {', '.join(map(str, self.input_shape))}), got {x.shape}")
        if not len(x):
            return np.zeros((0, len(self.class_names)), "float32")
        # Direct calls in chunks: one call per image costs set-up, one call for all costs memory.
        return np.concatenate(
            [np.asarray(self.forward(x[i : i + CHUNK]), dtype="float32") for i in range(0, len(x), CHUNK)]
        )

    def predict_proba(self, x: np.ndarray | Preprocessed | Sequence[Preprocessed]) -> np.ndarray:
        """(n, h, w) raw pixels 0-255 (uint8 or float), or `preprocess`'s results -> (n, classes) float32
        calibrated probabilities."""
        return temper(self.raw_proba(x), self.temperature)


def share_threads(workers: int, cores: int | None = None) -> int:
    """Threads per model call for each of `workers` processes sharing `cores` (None: the CPUs this process
    may use): their share, at least 1. More, and their calls contend for the cores, as the runtimes'
    default, a thread per core in every process, has them do."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // workers)


def choose_runtime(run_dir: Path, runtime: str | None = None) -> str:
    """`runtime` when given; None: "onnx" where the run holds a model.onnx exported from its model.keras as
    it is now (onnx_runtime.is_current) and ONNX Runtime is installed, else "keras". ONNX Runtime answers
    a reading's model call in about a tenth of TensorFlow's time (docs/design/reading.md), with the same
    digits: an export is kept only when it agrees with the Keras model."""
    if runtime is not None:
        return runtime
    if importlib.util.find_spec("onnxruntime") is not None and onnx_runtime.is_current(Path(run_dir)):
        return "onnx"
    return "keras"


def load_predictor(
    run_dir: Path, runtime: str | None = "keras", *, require_calibration: bool = True, threads: int | None = None
) -> Predictor:
    """A run's model with its class names and calibration. runtime "keras": model.keras; "onnx":
    model.onnx (from `digitlab export`) on ONNX Runtime, without importing TensorFlow or Keras; None: as
    `choose_runtime` chooses.

    The run's files are checked first (runs.check_run), then its class names against the model's output:
    a RunError naming the file and field. A run without calibration.json (killed after its last epoch, or
    before its first) is refused, saying which command completes it: its confidences would be
    uncalibrated and nothing would be marked unsure. require_calibration=False reads the model's own
    probabilities (training's calibration step and evaluation need them). `threads`: ONNX Runtime's threads
    per model call (None: its default, a thread per physical core); TensorFlow's are set per process."""
    run_dir = Path(run_dir)
    runtime = choose_runtime(run_dir, runtime)
    if runtime not in RUNTIMES:
        raise DigitlabError(f"--runtime: expected one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if runtime == "keras":
        runs.require_model(run_dir)
    elif not (run_dir / runs.ONNX).is_file():
        onnx_runtime.load_session(run_dir)  # its error names the missing file and the command that makes it
    checked = runs.check_run(run_dir, calibrated=require_calibration)  # before the model is loaded
    if runtime == "keras":
        forward, input_shape = keras_runtime.load(run_dir)
    else:
        forward, input_shape = onnx_runtime.load(run_dir, threads)
    # The model's real output for one blank image: the class names must fit it before any request is read.
    outputs = np.asarray(forward(np.zeros((1, *input_shape), "float32"))).shape[-1]
    calibration = checked.calibration or runs.Calibration()
    return Predictor(
        forward=forward,
        input_shape=input_shape,
        class_names=checked.class_names(outputs),
        temperature=calibration.temperature,
        threshold=calibration.threshold,
        run_dir=run_dir,
        runtime=runtime,
        kind=checked.kind,
        nondigits=bool(checked.config.get("train", {}).get("outliers")),
        numbers=calibration.numbers,
    )


def describe(probs: np.ndarray, class_names: tuple[str, ...], k: int = 3) -> list[dict]:
    """One dict per row: the digit, its probability and the top-k (class, probability) pairs."""
    out = []
    for p in np.atleast_2d(probs):
        order = np.argsort(p)[::-1][:k]
        out.append(
            {
                "digit": int(order[0]),
                "label": class_names[order[0]],
                "confidence": float(p[order[0]]),
                "top3": [{"digit": int(i), "label": class_names[i], "probability": float(p[i])} for i in order],
            }
        )
    return out


def predict_test_indices(run_dir: Path, indices: list[int], data_dir: Path | None = None) -> list[dict]:
    """Predictions for chosen test images, each with its true label."""
    predictor = load_predictor(run_dir)
    dataset = runs.dataset_name(runs.read_run_config(run_dir))
    ds = load_dataset(dataset, data_dir=data_dir)
    n = len(ds.x_test)
    bad = [i for i in indices if not 0 <= i < n]
    if bad:
        raise DigitlabError(f"--index: expected test indices in 0..{n - 1}, got {bad}")
    rows = classify(predictor, ds.x_test[indices], [None] * len(indices))  # the same unsure rule as for files
    for row, i in zip(rows, indices):
        row.update(index=int(i), true=int(ds.y_test[i]))
    return rows


def classify(predictor: Predictor, digits: np.ndarray, rejected: Sequence[str | bool | None]) -> list[dict]:
    """Preprocessed 28x28 digits -> one result each: digit (None when unsure), confidence, probabilities,
    top-3, and the reason when unsure.

    `rejected` holds, per image, why it holds no digit to read (preprocessing's `Preprocessed.reason`:
    no ink, a dot, a filled page, ...) or None when it does; a bool is read as "has ink" (a pixel grid
    has no other test). A rejected image gets digit, label, confidence, probabilities and top3 all None:
    the model's answer for it would be a number about nothing. A digit whose calibrated confidence is
    below the run's threshold keeps its numbers, with digit and label None."""
    digits = np.asarray(digits)
    probs = predictor.predict_proba(digits) if len(digits) else np.zeros((0, len(predictor.class_names)))
    results = []
    for row, p, entry in zip(describe(probs, predictor.class_names), probs, rejected):
        reason = rejection_reason(entry)
        if reason is not None:
            row.update(digit=None, label=None, confidence=None, top3=None, probabilities=None)
        else:
            row["probabilities"] = [float(v) for v in p]
            if row["confidence"] < predictor.threshold:
                first, second = (t["label"] for t in row["top3"][:2])
                reason = (
                    f"unsure: {first} or {second} (confidence {row['confidence']:.3f}, "
                    f"below the threshold {predictor.threshold:.3f})"
                )
                if predictor.nondigits and sum(t["probability"] for t in row["top3"][:2]) < NOT_A_DIGIT:
                    reason = NOT_A_DIGIT_REASON
                row.update(digit=None, label=None)
        row.update(unsure=reason is not None, reason=reason)
        results.append(row)
    return results


def rejection_reason(entry: str | bool | None) -> str | None:
    """One entry of classify's `rejected`: a reason, None (a digit to read), or has-ink as a bool."""
    if isinstance(entry, bool):
        return None if entry else NO_INK
    return entry


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def expand_paths(paths: list[Path]) -> list[Path]:
    """Files as given; folders searched recursively for image files, in sorted order."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            files.append(path)
    return files


# `digitlab predict`'s files go through the one reading path, which imports this module: found there
# when first used, as `digitlab.read` is.
_LAZY = {"predict_files": "digitlab.predict.reading", "read_files": "digitlab.predict.reading"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'digitlab.predict' has no attribute {name!r}")
