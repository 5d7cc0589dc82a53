"""Adaptation: a digit run fine-tuned on one person's labelled samples (`digitlab adapt`, `digitlab.adapt`).

Samples are a folder per digit (`0/` … `9/`, images inside), a CSV of `path,digit` (paths relative to
the CSV's folder, an optional `path,digit` header) or the JSON file the page's Teach mode downloads
(`{"format": "digitlab-samples", "version": 1, "samples": [{"digit": 7, "image": "data:image/png;base64,…"}]}`).
Each image is read and brought to MNIST's form by
`digitlab.preprocess`, as the reading path does; an image preprocessing refuses (no ink, not a digit,
several digits) is listed, not used. Bad input is a one-line error naming the file: a file that is not
an image, the same image twice, a label outside 0-9, or a digit with no sample.

The fine-tuning is the one training loop (`digitlab.training`) with a task of its own: one epoch of
`Recipe.steps` optimizer steps over the samples, each repeated and freshly warped (training.augment),
mixed with the run's own training split against forgetting, starting from the run's model; then the
one calibration, on the run's validation data as the base run was calibrated. The result is a normal
run directory; config.json's `adapt` section names the base run and the samples' digest and count, and
samples.csv lists every sample with what became of it. The base run is only read. Why the recipe is as
it is: docs/design/adapt.md.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import csv
import dataclasses
import hashlib
import io
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

import digitlab.data.synth as synth_package
import digitlab.preprocess as preprocess_package
from digitlab import __version__, atomic, runs
from digitlab.config import AUGMENTATIONS, ModelConfig, TrainConfig
from digitlab.data import RunSplit, default_cache_dir, run_split
from digitlab.errors import DataError, DigitlabError, RunError
from digitlab.predict.keras_runtime import load_keras_model
from digitlab.preprocess import preprocess
from digitlab.training import _fit, compile_model
from digitlab.training.tasks import WILD_CALIBRATION_SEED, DigitTask, steps_per_epoch

CLASSES = 10  # digits 0-9: a sample's label is its folder's name or the CSV's digit
MIN_PER_DIGIT = 1  # samples of each digit, after those preprocessing refuses
HEAD = ("dense", "bn_dense", "probabilities")  # the layers Recipe.layers "head" trains (models.build_model)
WILD_CACHE = "wild-calibration"  # the data cache's folder of wild calibration digits (AdaptTask.wild_digits)
_wild_cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # the same, for many adaptations in one process
LINE_RUNS = "adapt reads digit runs; line runs are not supported yet"
SAMPLES_FORMAT = ("digitlab-samples", 1)  # the page's samples file: its "format" and "version"
PNG_URL = "data:image/png;base64,"  # how the page's samples file holds each image
SOURCES = "a folder of sub-folders 0/ … 9/ or a CSV of path,digit, or the page's digitlab-samples .json"


@dataclass(frozen=True)
class Recipe:
    """How a run is fine-tuned; the defaults were chosen on simulated validation writers (bench/adapt.py
    --tune, docs/design/adapt.md)."""

    steps: int = 150  # optimizer steps, one epoch
    batch_size: int = 64  # images per step
    mix: float = 0.75  # share of each epoch drawn from the run's own training split, against forgetting
    layers: str = "head"  # "head" (the hidden Dense layer and the classifier; the convs frozen) or "all"
    learning_rate: float = 1e-3  # peak of the one-cycle schedule (Adam)
    # The warps each sample (and each mixed-in training digit) gets afresh (training.augment).
    shift: float = 1.5
    rotate: float = 12.0
    scale: float = 0.1
    shear: float = 0.25
    thickness: float = 0.5
    blur: float = 0.5
    elastic: float = 0.0  # elastic distortion strength (alpha, px; 0: none)

    def __post_init__(self) -> None:
        if self.layers not in ("all", "head"):
            raise DigitlabError(f"recipe.layers: expected all or head, got {self.layers!r}")
        if not 0.0 <= self.mix < 1.0:
            raise DigitlabError(f"recipe.mix: expected a share in [0, 1), got {self.mix}")
        if self.steps <= 0 or self.batch_size <= 0:
            raise DigitlabError(f"recipe: steps and batch_size must be positive, got {self.steps}, {self.batch_size}")

    def train_config(self, base: TrainConfig, seed: int) -> TrainConfig:
        """The run's training configuration with the adaptation's schedule and warps."""
        warps = {k: getattr(self, k) for k in AUGMENTATIONS}
        return dataclasses.replace(
            base,
            epochs=1,
            batch_size=self.batch_size,
            optimizer="adam",
            learning_rate=self.learning_rate,
            weight_decay=0.0,
            schedule="onecycle",
            precision="float32",
            seed=seed,
            **warps,
        )


RECIPE = Recipe()


@dataclass(frozen=True)
class Samples:
    """A person's labelled samples, read and preprocessed."""

    digits: np.ndarray  # (n, 28, 28) uint8, MNIST-like: the samples preprocessing accepted
    labels: np.ndarray  # (n,) int, 0-9
    files: tuple[str, ...]  # each accepted sample's file
    sha256: tuple[str, ...]  # each accepted sample's file contents' digest
    refused: tuple[tuple[str, int, str], ...] = ()  # (file, digit, why) for those preprocessing refused

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def digest(self) -> str:
        """One sha256 over every sample used, its file's digest and its digit, in a fixed order."""
        lines = sorted(f"{d} {int(y)}" for d, y in zip(self.sha256, self.labels))
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()

    def per_digit(self) -> dict[str, int]:
        return {str(k): int(np.sum(self.labels == k)) for k in range(CLASSES)}


def _label(text: str, where: str) -> int:
    if text.strip().isdigit() and 0 <= int(text.strip()) < CLASSES:
        return int(text.strip())
    raise DataError(f"{where}: digit: expected 0 to {CLASSES - 1}, got {text.strip()!r:.40}")


def _from_folder(folder: Path) -> list[tuple[Path, int]]:
    """A folder of sub-folders 0/ … 9/: every file under each (hidden ones skipped) with its digit."""
    entries, named = [], False
    for child in sorted(folder.iterdir()):
        if child.name.startswith("."):
            continue
        if not child.is_dir():
            raise DataError(f"{child}: a sample must stand in a sub-folder named for its digit (0/ … 9/)")
        named = True
        digit = _label(child.name, f"{child}/")
        entries += [(p, digit) for p in sorted(child.rglob("*")) if p.is_file() and not p.name.startswith(".")]
    if not named:
        raise DataError(f"{folder}: no sub-folders 0/ … 9/; expected a folder per digit or a CSV of path,digit")
    return entries


def _from_csv(path: Path) -> list[tuple[Path, int]]:
    """A CSV of path,digit: paths relative to the CSV's folder; a first row `path,digit` is a header."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot be read ({getattr(e, 'strerror', None) or e})") from None
    entries = []
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or not "".join(row).strip():
            continue
        where = f"{path}:{number}"
        if number == 1 and [c.strip().lower() for c in row] == ["path", "digit"]:
            continue
        if len(row) != 2 or not row[0].strip():
            raise DataError(f"{where}: expected two fields, path,digit, got {len(row)}: {','.join(row)!r:.60}")
        entries.append((path.parent / row[0].strip(), _label(row[1], where)))
    return entries


def _from_json(path: Path) -> list[tuple[Path, int, bytes]]:
    """The page's samples file: each sample named `FILE: samples[i]`, with its digit and its PNG's bytes."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot be read ({getattr(e, 'strerror', None) or e})") from None
    except json.JSONDecodeError as e:
        raise DataError(
            f"{path}: not valid JSON ({e.msg}, line {e.lineno}); expected a digitlab-samples file"
        ) from None
    fmt = doc.get("format") if isinstance(doc, dict) else None
    if fmt != SAMPLES_FORMAT[0]:
        raise DataError(f"{path}: format: expected {SAMPLES_FORMAT[0]!r}, got {fmt!r:.40}")
    if doc.get("version") != SAMPLES_FORMAT[1]:
        raise DataError(f"{path}: version: expected {SAMPLES_FORMAT[1]}, got {doc.get('version')!r:.20}")
    if not isinstance(doc.get("samples"), list):
        raise DataError(f"{path}: samples: expected a list of {{digit, image}}")
    entries = []
    for i, sample in enumerate(doc["samples"]):
        where = f"{path}: samples[{i}]"
        if not isinstance(sample, dict) or "digit" not in sample or "image" not in sample:
            raise DataError(f"{where}: expected an object with digit and image")
        digit, image = sample["digit"], sample["image"]
        if isinstance(digit, bool) or not isinstance(digit, int) or not 0 <= digit < CLASSES:
            raise DataError(f"{where}.digit: expected 0 to {CLASSES - 1}, got {digit!r:.40}")
        if not isinstance(image, str) or not image.startswith(PNG_URL):
            got = image[: len(PNG_URL)] if isinstance(image, str) else type(image).__name__
            raise DataError(f"{where}.image: expected a PNG data URL ({PNG_URL}...), got {got!r}")
        try:
            data = base64.b64decode(image[len(PNG_URL) :], validate=True)
        except (binascii.Error, ValueError):
            raise DataError(f"{where}.image: not valid base64; expected a PNG data URL") from None
        if not data.startswith(b"\x89PNG\r\n\x1a\n"):
            raise DataError(f"{where}.image: not a PNG image; expected a PNG data URL")
        entries.append((Path(where), digit, data))
    return entries


def read_samples(sources: Sequence[str | Path]) -> Samples:
    """Labelled samples from folders of 0/ … 9/, CSVs of path,digit and the page's samples files (.json),
    preprocessed as the reading path
    preprocesses a person's image. A DataError (one line, naming the file) for a source or an image that
    cannot be read, a label outside 0-9, the same image twice, or a digit left without a sample."""
    if isinstance(sources, (str, Path)):
        sources = [sources]
    entries: list[tuple[Path, int]] = []
    inline: dict[Path, bytes] = {}  # the images inside a samples file, by the name they are listed under
    for source in map(Path, sources):
        if source.is_dir():
            entries += _from_folder(source)
        elif source.is_file() and source.suffix.lower() == ".csv":
            entries += _from_csv(source)
        elif source.is_file() and source.suffix.lower() == ".json":
            found = _from_json(source)
            inline.update((name, data) for name, _, data in found)
            entries += [(name, digit) for name, digit, _ in found]
        elif not source.exists():
            raise DataError(f"{source}: no such file or folder; expected {SOURCES}")
        else:
            raise DataError(f"{source}: expected {SOURCES}")
    if not entries:
        raise DataError(f"{', '.join(map(str, sources)) or 'samples'}: no sample images found")
    seen: dict[str, Path] = {}
    digits, labels, files, digests, refused = [], [], [], [], []
    for path, digit in entries:
        try:
            data = inline[path] if path in inline else path.read_bytes()
        except FileNotFoundError:
            raise DataError(f"{path}: no such file") from None
        except OSError as e:
            raise DataError(f"{path}: cannot be read ({e.strerror or e})") from None
        digest = hashlib.sha256(data).hexdigest()
        if digest in seen:
            raise DataError(f"{path}: the same image as {seen[digest]}; each sample may appear once")
        seen[digest] = path
        try:
            pre = preprocess(data if path in inline else path)
        except DigitlabError as e:  # an ImageError: not an image, truncated, too large; it names the file
            raise DataError(f"{path}: {e}" if path in inline else str(e)) from None
        if pre.reason is not None:
            refused.append((str(path), digit, pre.reason))
            continue
        digits.append(pre.digit)
        labels.append(digit)
        files.append(str(path))
        digests.append(digest)
    labels_ = np.array(labels, dtype=int)
    counts = np.bincount(labels_, minlength=CLASSES)
    after = f" ({len(refused)} refused by preprocessing)" if refused else ""
    if len(set(labels)) == 1:
        raise DataError(f"samples: every usable sample is a {labels[0]}{after}; expected samples of each digit 0 to 9")
    missing = [str(k) for k in range(CLASSES) if counts[k] < MIN_PER_DIGIT]
    if missing:
        raise DataError(
            f"samples: no usable sample of digit {', '.join(missing)}{after}; "
            f"expected at least {MIN_PER_DIGIT} of each digit 0 to 9"
        )
    return Samples(np.stack(digits), labels_, tuple(files), tuple(digests), tuple(refused))


class AdaptTask(DigitTask):
    """The digit task on an adaptation's mix: the samples, each repeated, and a random share of the run's
    own training split (its non-digits included, when it learnt them), warped afresh; validated and
    calibrated on the run's validation data as the base run was."""

    def __init__(self, model_config: ModelConfig, cfg: TrainConfig, data: RunSplit, samples: Samples, recipe: Recipe):
        super().__init__(model_config, cfg, data)
        rng = np.random.default_rng([cfg.seed, len(samples)])
        total = recipe.steps * recipe.batch_size
        own = min(round(recipe.mix * total), len(self.x_train))
        self.repeats = math.ceil((total - own) / len(samples))
        chosen = rng.choice(len(self.x_train), size=own, replace=False)
        self.mixed = own
        self.samples = len(samples)
        self.x_train = np.concatenate([np.tile(samples.digits, (self.repeats, 1, 1)), self.x_train[chosen]])
        self.y_train = np.concatenate([np.tile(samples.labels.astype(np.int32), self.repeats), self.y_train[chosen]])
        self.train_size = len(self.x_train)

    def wild_digits(self) -> tuple[np.ndarray, np.ndarray]:
        """The base run's wild calibration digits (DigitTask.wild_digits), kept in the data cache after the
        first adaptation of a run's split: they are the same for every adaptation, and drawing and
        preprocessing them takes most of an adaptation's time. Keyed by the validation digits, the count
        per column, digitlab's version and the source of the code that draws and preprocesses them."""
        d = self.data
        key = hashlib.sha256(d.x_val.tobytes() + d.y_val.tobytes())
        key.update(f"{self.cfg.calibrate_wild} {WILD_CALIBRATION_SEED} {__version__}".encode())
        for package in (synth_package, preprocess_package):  # a change to either draws other digits
            for source in sorted(Path(package.__file__).parent.glob("*.py")):
                key.update(source.read_bytes())
        path = default_cache_dir() / WILD_CACHE / f"{key.hexdigest()[:32]}.npz"
        if key.hexdigest() in _wild_cache:
            return _wild_cache[key.hexdigest()]
        try:
            with np.load(path) as cached:
                found = cached["digits"], cached["labels"]
        except (OSError, KeyError, ValueError):
            found = super().wild_digits()
            buffer = io.BytesIO()
            np.savez(buffer, digits=found[0], labels=found[1])
            with contextlib.suppress(OSError, DigitlabError):  # a cache that cannot be written is no cache
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic.write_bytes(path, buffer.getvalue())
        _wild_cache[key.hexdigest()] = found
        return found

    def sizes(self) -> dict:
        return {
            "train": self.mixed,
            "validation": len(self.data.x_val),
            "samples": self.samples,
            "sample_repeats": self.repeats,
        }


def _choose_layers(model: keras.Model, layers: str) -> None:
    for layer in model.layers:
        layer.trainable = layers == "all" or layer.name in HEAD


def adapt(
    run: str | Path,
    samples: Samples | str | Path | Sequence[str | Path],
    out: str | Path,
    *,
    overwrite: bool = False,
    recipe: Recipe = RECIPE,
    seed: int = 0,
    data_dir: Path | None = None,
    verbose: int = 0,
) -> dict:
    """Fine-tune a copy of the digit run `run` on `samples` (folders of 0/ … 9/, CSVs of path,digit, or
    Samples from read_samples) into the new run directory `out`; returns its metrics (also in
    metrics.json), with an `adapt` section: the base run, the samples used and refused, seconds."""
    started = time.perf_counter()
    run, out = Path(run), Path(out)
    checked = runs.check_run(run)
    if checked.kind == "line":
        raise RunError(f"{run}: {LINE_RUNS}")
    base_model = runs.require_model(run)
    if out.resolve() == run.resolve():
        raise RunError(f"--out {out}: is the base run; adapt writes a new run directory and never changes the base")
    if out.exists() and out.is_dir() and runs.has_files(out) and not overwrite:
        raise RunError(f"--out {out}: already exists; pass --overwrite to replace it")
    runs.check_new_run(out, overwrite)
    if not isinstance(samples, Samples):
        samples = read_samples([samples] if isinstance(samples, (str, Path)) else samples)
    model_config = checked.model or ModelConfig.from_dict({})
    base_train = TrainConfig.from_dict(checked.config.get("train", {}))
    train_config = recipe.train_config(base_train, seed)
    task = AdaptTask(model_config, train_config, run_split(train_config, data_dir), samples, recipe)
    keras.utils.set_random_seed(seed)
    model = load_keras_model(base_model)
    task.check(model, str(run))
    _choose_layers(model, recipe.layers)
    compile_model(model, train_config, steps_per_epoch(task, train_config))
    base_metrics = runs.read_json(run / runs.METRICS) if (run / runs.METRICS).is_file() else {}
    about = {
        "base_run": str(run.resolve()),
        "base_model_sha256": hashlib.sha256(base_model.read_bytes()).hexdigest(),
        "samples_digest": samples.digest,
        "samples": len(samples),
        "per_digit": samples.per_digit(),
        "refused": len(samples.refused),
        "recipe": dataclasses.asdict(recipe),
    }
    with runs.lock_run(out):
        if overwrite:
            runs.clear_run(out)
        runs.write_run_config(out, model_config, train_config, task.data.dataset, task.sizes())
        runs.update_json(out / runs.CONFIG, adapt=about)
        _write_samples(out / runs.SAMPLES, samples)
        _fit(model, model_config, task, out, rows=[], best=-1.0, initial_epoch=0, verbose=verbose, on_epoch=None)
        result = {
            "base_run": about["base_run"],
            "samples": len(samples),
            "refused": [{"file": f, "digit": d, "reason": r} for f, d, r in samples.refused],
            "base_validation_accuracy": base_metrics.get("validation", {}).get("accuracy"),
            "seconds": round(time.perf_counter() - started, 3),
        }
        return runs.update_json(out / runs.METRICS, adapt=result) | {"adapt": result}


def _write_samples(path: Path, samples: Samples) -> None:
    rows = [
        {"file": f, "digit": int(y), "sha256": d, "used": "yes"}
        for f, y, d in zip(samples.files, samples.labels, samples.sha256)
    ]
    rows += [{"file": f, "digit": y, "sha256": "", "used": f"refused: {r}"} for f, y, r in samples.refused]
    runs.write_csv(path, rows, ["file", "digit", "sha256", "used"])
