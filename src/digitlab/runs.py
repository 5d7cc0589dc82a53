"""Run directories: every file a run leaves, written atomically, and read back with clear errors.

A run directory holds:
  config.json       model, training and data configuration (enough to rebuild the model)
  model.keras       the weights of the best validation epoch
  checkpoint.keras  the latest epoch, optimizer state included, for --resume
  state.json        how far training got (epochs done, best validation accuracy)
  history.csv       loss, accuracy, val_loss, val_accuracy, lr per epoch
  curves.png        training vs validation loss and accuracy
  metrics.json      validation and (after `evaluate`) test figures
  environment.json  package versions, backend, seed, machine
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import sys
import tempfile
from importlib import metadata
from pathlib import Path

from digitlab.errors import RunError

CONFIG = "config.json"
MODEL = "model.keras"
CHECKPOINT = "checkpoint.keras"
STATE = "state.json"
HISTORY = "history.csv"
CURVES = "curves.png"
METRICS = "metrics.json"
ENVIRONMENT = "environment.json"


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write to a temporary file beside `path`, then rename: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; a run's files should read like any other
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: Path, obj) -> Path:
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


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
    return atomic_write_bytes(path, buf.getvalue().encode())


def save_keras_atomic(model, path: Path) -> Path:
    """model.save needs a `.keras` name, so the temporary file gets one too."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)
    return path


def clear_run(run_dir: Path) -> None:
    """Remove what a run left (for --overwrite): files of the old model must not outlive it."""
    import shutil

    for path in Path(run_dir).iterdir():
        if path.is_dir() and path.name == "saved_model":
            shutil.rmtree(path)
        elif path.is_file() and (path.suffix in (".keras", ".json", ".csv", ".png", ".onnx", ".tflite", ".html")
                                 or path.name.startswith(".")):
            path.unlink()


def require_model(run_dir: Path) -> Path:
    """The path of a run's model.keras, or a clear error."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: no such run directory")
    model_path = run_dir / MODEL
    if not model_path.is_file():
        raise RunError(f"{run_dir}: no {MODEL} here; expected a run directory made by `digitlab train`")
    return model_path


def load_model(run_dir: Path):
    """The trained Keras model of a run directory."""
    return load_model_file(require_model(run_dir))


def load_model_file(model_path: Path):
    try:
        import keras
    except ImportError:
        raise RunError(f"{model_path}: loading a Keras model needs the train extra: pip install 'digitlab[train]'"
                       " (or use --runtime onnx)") from None

    import digitlab.train  # noqa: F401  registers the OneCycle schedule for deserialisation

    try:
        return keras.saving.load_model(model_path)
    except Exception as e:  # a corrupt zip, a missing layer class...
        raise RunError(f"{model_path}: cannot be loaded as a Keras model ({type(e).__name__}: {e})") from None


def package_versions(names=("digitlab", "keras", "tensorflow", "tensorflow-cpu", "jax", "torch", "numpy",
                            "scikit-learn", "matplotlib", "pillow", "onnxruntime")) -> dict:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def environment(seed: int | None = None) -> dict:
    """What produced a run: enough to know whether another machine should reproduce it."""
    import keras

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "keras_backend": keras.backend.backend(),
        "seed": seed,
        "packages": package_versions(),
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()
