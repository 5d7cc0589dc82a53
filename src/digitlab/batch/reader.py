"""The work of a batch job, the same on every engine: a batch of paths -> one result row per path.

`BatchReader` loads the run's model once and is then called batch after batch: in the driver's own
process (`--engine local`) or as a Ray Data actor on each worker (`--engine ray`). Each file is read as
the CLI reads it: task digit as `digitlab predict` (`preprocess`, then one batched `classify` with the
run's calibration and unsure rule), task number as `digitlab read` (`digitlab.read` on each file: by
segmentation with a single-digit run, by line with a line model's run).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from digitlab import reading, runs
from digitlab.batch.output import to_table
from digitlab.batch.sources import is_uri, read_bytes
from digitlab.errors import DigitlabError, RunError
from digitlab.line_reading import is_line_model
from digitlab.predict import RUNTIMES, classify, load_predictor
from digitlab.preprocess import preprocess

TASKS = ("digit", "number")


def model_file(run_dir: Path, runtime: str) -> Path:
    """The file a runtime loads: model.keras or model.onnx."""
    if runtime not in RUNTIMES:
        raise DigitlabError(f"--runtime: expected one of {', '.join(RUNTIMES)}, got {runtime!r}")
    return Path(run_dir) / (runs.MODEL if runtime == "keras" else runs.ONNX)


def model_digest(run_dir: Path, runtime: str) -> str:
    """sha256 of the model file the runtime loads: every row names the exact model that wrote it."""
    digest = hashlib.sha256()
    with open(model_file(run_dir, runtime), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def run_id(run_dir: Path) -> str:
    """A run's name: its directory's."""
    return Path(run_dir).resolve().name


def read_one(path: str, read=preprocess):
    """`read(image)` (`preprocess`, or a number's reading) of one file given by local path or URI (a URI's
    errors name the URI, not its bytes)."""
    if not is_uri(path):
        return read(Path(path))
    data = read_bytes(path)
    try:
        return read(data)
    except DigitlabError as e:
        raise DigitlabError(f"{path}: {str(e).split(': ', 1)[-1]}") from None


def file_error(path: str, error: Exception) -> str:
    """One file's error as its row records it (the job goes on): the CLI's wording for what it names."""
    if isinstance(error, DigitlabError):
        return str(error)
    if isinstance(error, OSError):
        return f"{path}: cannot be read ({error.strerror or error})"
    return f"{path}: cannot be read ({type(error).__name__}: {error})"  # a decoder's own failure


class BatchReader:
    """A run's model, loaded once; called with a pyarrow Table of paths, returns their result rows."""

    def __init__(
        self, run_dir: str, runtime: str, task: str, expected_digest: str | None = None, threads: int | None = None
    ):
        """`threads`: ONNX Runtime's threads per model call (a Ray worker's share of the cores); None: its
        default."""
        if task not in TASKS:
            raise DigitlabError(f"--task: expected one of {', '.join(TASKS)}, got {task!r}")
        self.predictor = load_predictor(Path(run_dir), runtime, threads=threads)
        if task == "digit" and is_line_model(self.predictor):
            raise DigitlabError(
                f"--task digit: {run_dir} holds a line model, which reads whole lines; expected --task number"
            )
        self.task = task
        self.run_id = run_id(run_dir)
        self.model_digest = model_digest(run_dir, runtime)
        if expected_digest is not None and expected_digest != self.model_digest:
            # A worker of a cluster that sees another copy of the run than the driver does.
            raise RunError(
                f"{run_dir}: this worker's {model_file(run_dir, runtime).name} has {self.model_digest}, "
                f"the job's is {expected_digest}; every node must read the same run directory"
            )

    def __call__(self, batch):
        paths = [str(p) for p in batch.column("path").to_pylist()]
        return to_table(self.read(paths), self.task)

    def read(self, paths: list[str]) -> list[dict]:
        """One row per path: path, digit or text, confidence, unsure, reason, or error (the rest go on)."""
        return self.read_digits(paths) if self.task == "digit" else self.read_numbers(paths)

    def row(self, path: str) -> dict:
        return {"path": path, "run_id": self.run_id, "model_digest": self.model_digest}

    def read_numbers(self, paths: list[str]) -> list[dict]:
        """`digitlab.read` on each file, as `digitlab read` calls it."""
        rows = []
        for path in paths:
            row = self.row(path)
            rows.append(row)
            try:
                number = read_one(path, lambda image: reading.read(self.predictor, image))
            except Exception as e:  # one file's error, never the job's
                row["error"] = file_error(path, e)
                continue
            row.update(text=number.text, confidence=number.confidence, unsure=number.unsure, reason=number.reason)
        return rows

    def read_digits(self, paths: list[str]) -> list[dict]:
        """`preprocess` on each file, then one `classify` for the batch, as `digitlab predict` does."""
        rows, digits, ink, ok = [], [], [], []
        for path in paths:
            row = self.row(path)
            rows.append(row)
            try:
                pre = read_one(path)
            except Exception as e:  # one file's error, never the job's
                row["error"] = file_error(path, e)
                continue
            digits.append(pre.digit)
            ink.append(pre.reason)  # no ink, or not a digit: no numbers
            ok.append(row)
        x = np.array(digits).reshape(-1, *self.predictor.input_shape)
        for row, result in zip(ok, classify(self.predictor, x, ink)):
            row.update(digit=result["digit"], confidence=result["confidence"], unsure=result["unsure"])
            row.update(reason=result["reason"])
        return rows
