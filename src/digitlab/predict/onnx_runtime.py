"""A run's exported model.onnx on ONNX Runtime: the deployment path, without TensorFlow or Keras.

A deployment needs three files of the run directory, model.onnx (from `digitlab export RUN --format
onnx`), config.json (class names) and calibration.json (if the run has one), and the core install plus
the `onnx` extra: NumPy, Pillow, SciPy, Typer and ONNX Runtime. Nothing here imports TensorFlow or Keras.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from digitlab import runs
from digitlab.errors import DigitlabError, RunError


def open_session(path: Path, threads: int | None = None):
    """An ONNX Runtime session for one .onnx file, on the CPU. `threads`: threads one model call may use
    (processes sharing the cores, as Ray's workers do, each take their share); None: ONNX Runtime's
    default, a thread per physical core."""
    try:
        import onnxruntime  # optional: the `onnx` extra
    except ImportError:
        raise DigitlabError("the ONNX runtime needs onnxruntime: pip install 'digitlab[onnx]'") from None
    options = onnxruntime.SessionOptions()
    # Its threads wait for the next call by sleeping, not spinning: spinning burns a core for a while after
    # every call, about 4 ms of CPU per 0.3 ms call of a reading on 2 cores, which a server's other requests
    # (and other processes) need; a call then starts a few microseconds later.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if threads is not None:
        options.intra_op_num_threads = threads  # within one operator
        options.inter_op_num_threads = threads  # across operators (only in the parallel execution mode)
    try:
        return onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as e:  # a truncated or foreign file
        raise RunError(f"{path}: cannot be loaded by ONNX Runtime ({type(e).__name__}: {e})") from None


def run_session(inference, x: np.ndarray) -> np.ndarray:
    """(n, 28, 28) float32 raw pixels -> (n, classes) probabilities, uncalibrated."""
    (pixels,) = inference.get_inputs()
    return inference.run(None, {pixels.name: np.ascontiguousarray(x, dtype="float32")})[0]


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_session(run_dir: Path, threads: int | None = None):
    """The session for a run's model.onnx, refusing one exported from an older model.keras; `threads` as
    for open_session."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: no such run directory")
    path = run_dir / runs.ONNX
    if not path.is_file():
        raise RunError(f"{run_dir}: no {runs.ONNX} here; make it with `digitlab export {run_dir} --format onnx`")
    _check_fresh(run_dir, path)
    return open_session(path, threads)


def _check_fresh(run_dir: Path, path: Path) -> None:
    """`train --resume` or `--overwrite` rewrites model.keras but not model.onnx: catch the stale file.
    A deployment that ships without model.keras or metrics.json skips this check."""
    keras_file, metrics = run_dir / runs.MODEL, run_dir / runs.METRICS
    if not keras_file.is_file() or not metrics.is_file():
        return
    record = runs.read_json(metrics).get("exports", {}).get("onnx", {})
    if "source_sha256" not in record or (run_dir / record["path"]).resolve() != path.resolve():
        return
    if record["source_sha256"] != sha256(keras_file):
        raise RunError(
            f"{path}: exported from an earlier {runs.MODEL} (the run was trained again since); "
            f"run `digitlab export {run_dir} --format onnx` again"
        )


def is_current(run_dir: Path) -> bool:
    """Whether a run's model.onnx is there and its model.keras, if any, is the one it was exported from:
    metrics.json's export record holds the digest of that model.keras, and the export passed its check."""
    run_dir = Path(run_dir)
    path, keras_file = run_dir / runs.ONNX, run_dir / runs.MODEL
    if not path.is_file():
        return False
    if not keras_file.is_file():  # a deployment: model.onnx is all there is
        return True
    try:
        record = runs.read_json(run_dir / runs.METRICS).get("exports", {}).get("onnx", {})
    except (OSError, ValueError, DigitlabError):
        return False
    return (
        bool(record.get("passed"))
        and (run_dir / record.get("path", "")).resolve() == path.resolve()
        and record.get("source_sha256") == sha256(keras_file)
    )


def load(run_dir: Path, threads: int | None = None) -> tuple[Callable[[np.ndarray], np.ndarray], tuple[int, ...]]:
    """The forward callable (run_session on the session, its `args[0]`) and input shape (without the
    batch) of a run's model.onnx; `threads` as for open_session."""
    inference = load_session(run_dir, threads)  # an onnxruntime.InferenceSession
    input_shape = tuple(inference.get_inputs()[0].shape[1:])  # the batch dimension is dynamic
    return functools.partial(run_session, inference), input_shape
