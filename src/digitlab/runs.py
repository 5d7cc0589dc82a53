"""Run directories: every file a run leaves, written atomically, and read back with clear errors.

A run directory holds, for a model of either kind (digits or lines):
  config.json           model, training and data configuration (enough to rebuild the model)
  environment.json      package versions, backend, seed, machine
  model.keras           the weights of the best validation epoch
  checkpoint.keras      the latest epoch, optimizer state included, for --resume
  state.json            how far training got (epochs done, best validation score, the history)
  history.csv           loss, accuracy, val_loss, val_accuracy, lr, seconds per epoch
  curves.png            training vs validation loss and accuracy
  metrics.json          validation, calibration and (after `evaluate`) test figures
  calibration.json      temperature and unsure threshold, fitted on validation data
  reliability.png       accuracy against confidence, before and after the temperature
after `digitlab evaluate`:
  confusion_matrix.png  test confusion matrix (a line run: digits read in place of others)
  mistakes.png          the most confident test mistakes
  predictions.png       random test digits, wrong ones in red (digit runs)
  by_length.png         test lines read exactly, per length (line runs)
after `digitlab report`, `digitlab lr-find`, `digitlab export`:
  report.html           the self-contained report
  lr_find.png           loss against learning rate
  lr_find.csv           the same, as numbers
  model.onnx            ONNX export (`--format onnx`, the default)
  model.tflite          TensorFlow Lite export
  saved_model/          TensorFlow SavedModel export
while a process writes into it:
  .digitlab.lock        held (flock) by that process, with its pid
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import os
import platform
import shutil
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

from digitlab import atomic
from digitlab.config import keras_backend
from digitlab.errors import RunError

CONFIG = "config.json"
MODEL = "model.keras"
CHECKPOINT = "checkpoint.keras"
STATE = "state.json"
HISTORY = "history.csv"
CURVES = "curves.png"
METRICS = "metrics.json"
ENVIRONMENT = "environment.json"
CALIBRATION = "calibration.json"
RELIABILITY = "reliability.png"
CONFUSION = "confusion_matrix.png"
MISTAKES = "mistakes.png"
PREDICTIONS = "predictions.png"
BY_LENGTH = "by_length.png"
ONNX = "model.onnx"
TFLITE = "model.tflite"
SAVED_MODEL = "saved_model"
REPORT = "report.html"
LR_FIND_PNG = "lr_find.png"
LR_FIND_CSV = "lr_find.csv"
# Every file digitlab writes into a run directory; `--overwrite` removes these and nothing else.
RUN_FILES = (
    CONFIG,
    MODEL,
    CHECKPOINT,
    STATE,
    HISTORY,
    CURVES,
    METRICS,
    ENVIRONMENT,
    CALIBRATION,
    RELIABILITY,
    CONFUSION,
    MISTAKES,
    PREDICTIONS,
    BY_LENGTH,
    REPORT,
    LR_FIND_PNG,
    LR_FIND_CSV,
)
EXPORTS = (ONNX, TFLITE, SAVED_MODEL)
LOCK = ".digitlab.lock"  # held (flock) by the process training into the directory; holds its pid


def write_json(path: Path, obj) -> Path:
    return atomic.write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def read_json(path: Path) -> dict:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RunError(f"{path}: not found") from None
    except json.JSONDecodeError as e:
        raise RunError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None


def update_json(path: Path, **sections) -> dict:
    """Merge top-level sections into a JSON file (created if missing)."""
    path = Path(path)
    obj = read_json(path) if path.exists() else {}
    obj.update(sections)
    write_json(path, obj)
    return obj


def write_csv(path: Path, rows: list[dict], fieldnames: list[str]) -> Path:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fieldnames, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic.write_bytes(path, buf.getvalue().encode())


def save_keras_atomic(model, path: Path) -> Path:
    """model.save through the atomic writer (the temporary name keeps the `.keras` suffix Keras needs)."""
    with atomic.replacing(path) as tmp:
        model.save(tmp)
    return Path(path)


def clear_run(run_dir: Path) -> None:
    """Remove what a run left (for --overwrite): files of the old model must not outlive it. Only the
    files digitlab writes go (RUN_FILES, exports, its own temporaries); anything else stays."""
    for path in Path(run_dir).iterdir():
        if path.name == SAVED_MODEL and path.is_dir():
            shutil.rmtree(path)
        elif path.is_file() and (path.name in RUN_FILES or path.name in EXPORTS or is_temporary(path)):
            path.unlink()


@contextlib.contextmanager
def lock_run(run_dir: Path) -> Iterator[Path]:
    """Hold the run directory (created if missing) for this process: another `train` or `--resume` of the
    same directory stops at once with a RunError naming the process that holds it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise RunError(f"{run_dir} is in use by process {holder}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield run_dir
    finally:
        os.close(fd)  # releases the lock


def has_files(directory: Path) -> bool:
    """Whether `directory` holds anything besides digitlab's lock file."""
    return any(p.name != LOCK for p in Path(directory).iterdir())


def is_temporary(path: Path) -> bool:
    """Whether `path` is one of digitlab's atomic-write temporaries (`.<name>.<random>.tmp<suffix>`)."""
    return path.name.startswith(".") and atomic.TEMP_SUFFIX in path.name


def write_run_config(run_dir: Path, model_config, train_config, dataset, data: dict) -> None:
    """config.json (model, training and data, enough to rebuild the model) and environment.json of a
    new run; `data` adds the split's sizes and anything else the run's kind records."""
    about = {"name": dataset.name, "source": dataset.source, "verified": dataset.verified}
    about["class_names"] = list(dataset.class_names)
    config = {"model": model_config.to_dict(), "train": train_config.to_dict(), "data": {**about, **data}}
    write_json(Path(run_dir) / CONFIG, config)
    write_json(Path(run_dir) / ENVIRONMENT, environment(train_config.seed))


def check_new_run(out_dir: Path, overwrite: bool = False) -> None:
    """A RunError unless a new run may be trained into `out_dir`: a new or empty directory, or a run
    directory with `overwrite`. What a killed writer left there is removed first."""
    out_dir = Path(out_dir)
    atomic.remove_stale(out_dir)  # before anything looks at the directory
    if out_dir.exists() and not out_dir.is_dir():
        raise RunError(f"--out {out_dir}: is a file; expected a new or empty directory")
    if out_dir.exists() and has_files(out_dir):
        if not (out_dir / CONFIG).is_file():
            raise RunError(f"{out_dir}: not empty and not a run directory; --out needs a new or empty directory")
        if not overwrite:
            raise RunError(f"{out_dir}: already holds a run; pass --resume to continue it or --overwrite to replace it")


def read_run_config(run_dir: Path) -> dict:
    """A run's config.json, with a clear error when it is missing or unreadable."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: no such run directory")
    return read_json(run_dir / CONFIG)


def dataset_name(config: dict) -> str:
    """The data set a run was trained on, from its config.json."""
    return config["train"].get("dataset", "mnist")


def require_model(run_dir: Path) -> Path:
    """The path of a run's model.keras, or a clear error."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: no such run directory")
    model_path = run_dir / MODEL
    if not model_path.is_file():
        raise RunError(f"{run_dir}: no {MODEL} here; expected a run directory made by `digitlab train`")
    return model_path


def package_versions(
    names=(
        "digitlab",
        "keras",
        "tensorflow",
        "tensorflow-cpu",
        "jax",
        "torch",
        "numpy",
        "scikit-learn",
        "matplotlib",
        "pillow",
        "onnxruntime",
    ),
) -> dict:
    versions = {}
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def environment(seed: int | None = None) -> dict:
    """What produced a run: enough to know whether another machine should reproduce it."""
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": cpu_name(),
        "cpu_count": os.cpu_count(),
        "keras_backend": keras_backend(),
        "seed": seed,
        "packages": package_versions(),
    }


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()
