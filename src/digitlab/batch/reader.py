"""The work of a batch job, the same on every engine: a batch of paths -> one result row per path.

`BatchReader` loads the run's model once and is then called batch after batch: in the driver's own
process (`--engine local`) or as a Ray Data actor on each worker (`--engine ray`). Each file is read as
`digitlab predict` reads it: `preprocess`, then `classify` with the run's calibration and unsure rule.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from digitlab import runs
from digitlab.batch.output import to_table
from digitlab.batch.sources import is_uri, read_bytes
from digitlab.errors import DigitlabError, RunError
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


def read_one(path: str):
    """Preprocess one file given by local path or URI (a URI's errors name the URI, not its bytes)."""
    if not is_uri(path):
        return preprocess(Path(path))
    data = read_bytes(path)
    try:
        return preprocess(data)
    except DigitlabError as e:
        raise DigitlabError(f"{path}: {str(e).split(': ', 1)[-1]}") from None


class BatchReader:
    """A run's model, loaded once; called with a pyarrow Table of paths, returns their result rows."""

    def __init__(self, run_dir: str, runtime: str, task: str, expected_digest: str | None = None):
        if task not in TASKS:
            raise DigitlabError(f"--task: expected one of {', '.join(TASKS)}, got {task!r}")
        self.predictor = load_predictor(Path(run_dir), runtime)
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
        """One row per path: path, digit, confidence, unsure, reason, or error (the rest go on)."""
        rows, digits, ink, ok = [], [], [], []
        for path in paths:
            row = {"path": path, "run_id": self.run_id, "model_digest": self.model_digest}
            rows.append(row)
            try:
                pre = read_one(path)
            except DigitlabError as e:
                row["error"] = str(e)
                continue
            except OSError as e:
                row["error"] = f"{path}: cannot be read ({e.strerror or e})"
                continue
            except Exception as e:  # a decoder's own failure: one file's error, never the job's
                row["error"] = f"{path}: cannot be read ({type(e).__name__}: {e})"
                continue
            digits.append(pre.digit)
            ink.append(pre.reason)  # no ink, or not a digit: no numbers
            ok.append(row)
        x = np.array(digits).reshape(-1, *self.predictor.input_shape)
        for row, result in zip(ok, classify(self.predictor, x, ink)):
            row.update(digit=result["digit"], confidence=result["confidence"], unsure=result["unsure"])
            row.update(reason=result["reason"])
        return rows
