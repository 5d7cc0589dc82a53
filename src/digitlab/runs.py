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
  calibration.json      temperature and unsure threshold, fitted on validation data (a line run with
                        digits/: also "numbers", the combined reader's rule for a whole number)
  reliability.png       accuracy against confidence, before and after the temperature
  digits/               a line run's digit model (train.digit_model; `--preset numbers`), a run of its
                        own: `read` combines both models (digitlab.predict.reading.combine)
after `digitlab evaluate`:
  confusion_matrix.png  test confusion matrix (a line run: digits read in place of others)
  mistakes.png          the most confident test mistakes
  predictions.png       random test digits, wrong ones in red (digit runs)
  by_length.png         test lines read exactly, per length (line runs)
after `digitlab evaluate --numbers N`:
  numbers.png           test numbers read exactly, per subset, and against coverage
after `digitlab report`, `digitlab lr-find`, `digitlab export`:
  report.html           the self-contained report
  lr_find.png           loss against learning rate
  lr_find.csv           the same, as numbers
  model.onnx            ONNX export (`--format onnx`, the default)
  model.tflite          TensorFlow Lite export
  saved_model/          TensorFlow SavedModel export
after `digitlab adapt` (a run fine-tuned on a person's samples):
  samples.csv           each sample: file, digit, sha256, used or why preprocessing refused it
while a process writes into it:
  .digitlab.lock        held (flock) by that process, with its pid
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import math
import os
import platform
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from digitlab import atomic
from digitlab.config import MARK, ModelConfig, TrainConfig, keras_backend
from digitlab.errors import DigitlabError, RunError

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
NUMBERS = "numbers.png"
ONNX = "model.onnx"
DIGIT_PART = "digits"  # a line run's digit model, a run directory of its own
TFLITE = "model.tflite"
SAVED_MODEL = "saved_model"
REPORT = "report.html"
LR_FIND_PNG = "lr_find.png"
LR_FIND_CSV = "lr_find.csv"
SAMPLES = "samples.csv"
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
    NUMBERS,
    REPORT,
    LR_FIND_PNG,
    LR_FIND_CSV,
    SAMPLES,
)
EXPORTS = (ONNX, TFLITE, SAVED_MODEL)
LOCK = ".digitlab.lock"  # held (flock) by the process training into the directory; holds its pid


def write_json(path: Path, obj) -> Path:
    return atomic.write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def read_json(path: Path) -> dict:
    """A JSON object from a file; a RunError naming the file when it is missing, not JSON or not an object
    (every JSON file digitlab writes holds one)."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunError(f"{path}: not found") from None
    except json.JSONDecodeError as e:
        raise RunError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise RunError(f"{path}: cannot be read ({e})") from None
    if not isinstance(obj, dict):
        raise RunError(f"{path}: expected a JSON object, got {_json_kind(obj)}")
    return obj


def _json_kind(value) -> str:
    names = {list: "a list", str: "a string", bool: "true or false", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


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


def check_lr_find_out(out_dir: Path, overwrite: bool = False) -> None:
    """A RunError unless a learning-rate range test may write into `out_dir`: not a file, and holding no
    earlier test's lr_find.csv or lr_find.png unless `overwrite` (as `check_new_run` keeps a run)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise RunError(f"--out {out_dir}: is a file; expected a directory for {LR_FIND_PNG} and {LR_FIND_CSV}")
    earlier = [name for name in (LR_FIND_CSV, LR_FIND_PNG) if (out_dir / name).exists()]
    if earlier and not overwrite:
        raise RunError(
            f"--out {out_dir}: already holds {' and '.join(earlier)} from an earlier test; pass --overwrite to "
            "replace them, or another --out"
        )


def read_history(run_dir: Path) -> list[dict]:
    """A run's history.csv: one dict per epoch (epoch, loss, accuracy, val_loss, val_accuracy, lr, seconds),
    numbers as numbers."""
    path = Path(run_dir) / HISTORY
    try:
        rows = list(csv.DictReader(io.StringIO(path.read_text())))
    except OSError as e:
        raise RunError(f"{path}: cannot be read ({e.strerror or e})") from None
    return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items() if v != ""} for row in rows]


def read_run_config(run_dir: Path) -> dict:
    """A run's config.json, checked: a RunError naming the file and the field when it is missing, not
    JSON, or a section (`model`, `train`, `data`) does not hold what digitlab writes there. A section may be
    absent (a config.json without `model` is a digit run's); one that is present is checked."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: no such run directory")
    path = run_dir / CONFIG
    config = read_json(path)
    try:
        for section, what in (("model", "the model's configuration"), ("train", "the training's"), ("data", "")):
            if section in config and not isinstance(config[section], dict):
                what = f" ({what})" if what else ""
                raise DigitlabError(f"{section}: expected an object{what}, got {_json_kind(config[section])}")
        if "model" in config:
            ModelConfig.from_dict(config["model"])
        if "train" in config:
            TrainConfig.from_dict(config["train"])
        names = config.get("data", {}).get("class_names")
        if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
            raise DigitlabError(f"data.class_names: expected a list of strings, one per class, got {names!r:.60}")
    except DigitlabError as e:
        raise RunError(f"{path}: {e}") from None
    return config


def dataset_name(config: dict) -> str:
    """The data set a run was trained on, from its config.json."""
    return config.get("train", {}).get("dataset", "mnist")


@dataclass(frozen=True)
class NumberRule:
    """calibration.json's "numbers" (a line run holding a digit model): the combined reader's confidence in
    a whole number, 1 / (1 + exp(-(weights . features + bias))) over the features named (in
    digitlab.predict.reading.NUMBER_FEATURES' order), and "unsure" below `threshold`."""

    features: tuple[str, ...]
    weights: tuple[float, ...]
    bias: float
    threshold: float

    def confidence(self, values) -> float:
        """The number's confidence from its features' values, in `features`' order."""
        z = self.bias
        for w, v in zip(self.weights, values):  # in order, as the page's lines.js adds them
            z += w * float(v)
        return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))

    @classmethod
    def read(cls, fitted, path: Path) -> NumberRule:
        """calibration.json's "numbers", checked: a RunError naming the file and the field."""

        def number(v) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        where = f"{path}: numbers"
        if not isinstance(fitted, dict):
            raise RunError(f"{where}: expected an object (features, weights, bias, threshold), got {fitted!r:.60}")
        features, weights = fitted.get("features"), fitted.get("weights")
        if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
            raise RunError(f"{where}.features: expected a list of feature names, got {features!r:.60}")
        if not isinstance(weights, list) or len(weights) != len(features) or not all(map(number, weights)):
            raise RunError(f"{where}.weights: expected {len(features)} numbers, one per feature, got {weights!r:.60}")
        if not number(fitted.get("bias")):
            raise RunError(f"{where}.bias: expected a number, got {fitted.get('bias')!r:.60}")
        threshold = fitted.get("threshold")
        if not number(threshold) or not 0 <= threshold <= 1:
            raise RunError(f"{where}.threshold: expected a number in [0, 1], got {threshold!r:.60}")
        return cls(tuple(features), tuple(map(float, weights)), float(fitted["bias"]), float(threshold))


@dataclass(frozen=True)
class Calibration:
    """calibration.json's answer: probabilities = softmax(log p / temperature); below `threshold` the
    calibrated confidence reads "unsure". `numbers`: a line run's rule for whole numbers read by the
    combined reader, when it holds one."""

    temperature: float = 1.0
    threshold: float = 0.0
    numbers: NumberRule | None = None

    @classmethod
    def read(cls, path: Path) -> Calibration:
        """calibration.json, checked: a RunError naming the file and the field unless the temperature is a
        positive finite number and the threshold a number from 0 to 1."""
        fitted = read_json(path)
        values = {}
        for name, expected, ok in (
            ("temperature", "a positive number", lambda v: math.isfinite(v) and v > 0),
            ("threshold", "a number in [0, 1]", lambda v: 0 <= v <= 1),
        ):
            if name not in fitted:
                raise RunError(f"{path}: {name}: missing; expected {expected} (`digitlab train --resume` refits it)")
            value = fitted[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
                raise RunError(f"{path}: {name}: expected {expected}, got {value!r:.60}")
            values[name] = float(value)
        if "numbers" in fitted:
            values["numbers"] = NumberRule.read(fitted["numbers"], path)
        return cls(**values)


@dataclass(frozen=True)
class CheckedRun:
    """What `check_run` read from a run directory: its config.json and calibration.json, well formed."""

    run_dir: Path
    config: dict  # config.json, every section checked
    model: ModelConfig | None  # None: config.json has no model section (a digit run)
    calibration: Calibration | None  # None: not asked for

    @property
    def kind(self) -> str | None:
        return self.model.kind if self.model is not None else None

    def class_names(self, outputs: int) -> tuple[str, ...]:
        """The class names for a model whose output holds `outputs` values per image (per frame for a line
        model, whose last one is the blank): config.json's, or "0", "1", ... when it records none, and a line
        model's "not a digit" symbol (config.MARK) after them when it learnt one. A RunError naming the
        field when config.json's disagree with the model."""
        mark = self.kind == "line" and self.model.nondigit
        classes = outputs - 1 - mark if self.kind == "line" else outputs
        where = self.run_dir / CONFIG
        if self.model is not None and "num_classes" in self.config["model"] and self.model.num_classes != classes:
            raise RunError(f"{where}: model.num_classes is {self.model.num_classes}; the model gives {classes} classes")
        names = self.config.get("data", {}).get("class_names")
        if names is None:
            names = [str(i) for i in range(classes)]
        if len(names) != classes:
            raise RunError(
                f"{where}: data.class_names holds {len(names)} names; the model gives {classes} classes, one name each"
            )
        return (*names, MARK) if mark else tuple(names)


def check_run(run_dir: Path, *, calibrated: bool = True) -> CheckedRun:
    """The one check of a run directory before its model is loaded, for `predict`, `read`, `serve`,
    `export` and `evaluate`: config.json (read_run_config) and, with `calibrated`, calibration.json, each
    error one line naming the file and the field. A run without calibration.json is one that did not
    finish: the error says which command completes it (`unfinished`). The class names are checked against
    the model's output once it is loaded (CheckedRun.class_names)."""
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    model = ModelConfig.from_dict(config["model"]) if "model" in config else None
    calibration = None
    if calibrated:
        if not (run_dir / CALIBRATION).is_file():
            raise RunError(unfinished(run_dir))
        calibration = Calibration.read(run_dir / CALIBRATION)
    return CheckedRun(run_dir, config, model, calibration)


def unfinished(run_dir: Path) -> str:
    """What to do with a run that did not finish, the one wording of `predict`, `serve` and `train
    --resume`: `--resume` where it has a checkpoint to go on from, else training it again."""
    run_dir = Path(run_dir)
    if (run_dir / CHECKPOINT).is_file() and (run_dir / STATE).is_file():
        return (
            f"{run_dir}: no {CALIBRATION}, so the run did not finish; `digitlab train --resume {run_dir}` completes it"
        )
    return (
        f"{run_dir}: the run never finished an epoch (no {CHECKPOINT}), so --resume cannot go on from it; "
        f"train it again with `digitlab train --out {run_dir} --overwrite` and the options in its {CONFIG}"
    )


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
