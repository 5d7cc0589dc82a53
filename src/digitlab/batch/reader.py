"""The work of a batch job, the same on every engine: a batch of paths -> one result row per path.

`BatchReader` loads the run's model once and is then called batch after batch: in the driver's own
process (`--engine local`) or as a Ray Data actor on each worker (`--engine ray`). Each batch goes through
`digitlab.predict.reading.read_inputs`, as the CLI's files do: task digit as `digitlab predict` (each file
preprocessed, then one batched model call with the run's calibration and unsure rule), task number as
`digitlab read` (by segmentation with a single-digit run, by line with a line model's run). A file that
cannot be read gets its row with the same one-line error the CLI prints; the job goes on.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from digitlab import runs
from digitlab.batch.output import to_table
from digitlab.batch.sources import is_uri, read_bytes
from digitlab.config import BATCH_TASKS, RUNTIMES
from digitlab.errors import DigitlabError, RunError
from digitlab.predict import load_predictor
from digitlab.predict.count import parse_digits
from digitlab.predict.reading import DIGIT, choose_method, kind, read_inputs
from digitlab.predict.results import Outcome, Prediction


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


def fetch(path: str):
    """What `read_inputs` is given for a path: the local path, a URI's bytes, or the error met fetching them."""
    if not is_uri(path):
        return Path(path)
    try:
        return read_bytes(path)
    except Exception as e:  # one file's error, never the job's: read_inputs words it
        return e


class BatchReader:
    """A run's model, loaded once; called with a pyarrow Table of paths, returns their result rows."""

    def __init__(
        self,
        run_dir: str,
        runtime: str,
        task: str,
        expected_digest: str | None = None,
        threads: int | None = None,
        digits: str | None = None,
    ):
        """`threads`: ONNX Runtime's threads per model call (a Ray worker's share of the cores); None: its
        default. `digits`: each number's count of digits, as `--digits` gives it (task number)."""
        if task not in BATCH_TASKS:
            raise DigitlabError(f"--task: expected one of {', '.join(BATCH_TASKS)}, got {task!r}")
        self.digits = parse_digits(digits)
        if self.digits is not None and task != "number":
            raise DigitlabError(f"--digits: counts a number's digits; expected --task number, got --task {task}")
        self.predictor = load_predictor(Path(run_dir), runtime, threads=threads)
        if task == "digit" and kind(self.predictor) == "line":
            raise DigitlabError(
                f"--task digit: {run_dir} holds a line model, which reads whole lines; expected --task number"
            )
        self.task = task
        self.method = DIGIT if task == "digit" else choose_method(self.predictor, None)
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
        """One row per path: path, digit or text, confidence, unsure, reason (and top3 for a digit), or error
        (the rest go on)."""
        inputs = [fetch(p) for p in paths]
        return [self.row(o) for o in read_inputs(self.predictor, inputs, paths, self.method, digits=self.digits)]

    def row(self, outcome: Outcome) -> dict:
        row = {"path": outcome.name, "run_id": self.run_id, "model_digest": self.model_digest}
        result = outcome.result
        if result is None:
            row["error"] = outcome.error
        elif isinstance(result, Prediction):
            top3 = (
                [{"label": t["label"], "probability": t["probability"]} for t in result.top3] if result.top3 else None
            )
            row.update(
                digit=result.digit, confidence=result.confidence, unsure=result.unsure, reason=result.reason, top3=top3
            )
        else:
            row.update(text=result.text, confidence=result.confidence, unsure=result.unsure, reason=result.reason)
        return row
