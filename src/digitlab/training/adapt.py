"""Adaptation: a run fine-tuned on one person's labelled samples (`digitlab adapt`, `digitlab.adapt`).

A digit run's samples are a folder per digit (`0/` … `9/`, images inside), a CSV of `path,digit` (paths
relative to the CSV's folder, an optional `path,digit` header) or the JSON file the page's Teach mode
downloads (`{"format": "digitlab-samples", "version": 1, "samples": [{"digit": 7, "image": "data:image/png;base64,…"}]}`).
Each image is read and brought to MNIST's form by `digitlab.preprocess`, as the reading path does; an
image preprocessing refuses (no ink, not a digit, several digits) is listed, not used. Bad input is a
one-line error naming the file: a file that is not an image, the same image twice, a label outside 0-9,
or a digit with no sample. A line run's samples are numbers with their text: a sub-folder per number
(`4096/`), a CSV of `path,text`, or a samples file whose samples hold `"text"`; each is normalised as
`digitlab read` normalises a line for the line model (LineSamples).

The fine-tuning is the one training loop (`digitlab.training`) with a task of its own: one epoch of
`Recipe.steps` optimizer steps over the samples, each repeated and freshly warped (training.augment),
mixed with the run's own training data against forgetting (AdaptTask: its training split's digits;
LineAdaptTask: the lines its generator draws), starting from the run's model; then the one calibration,
on the run's validation data as the base run was calibrated and, for a digit run, on the person's samples
read by models adapted on the others (AdaptTask.held_out). The result is a normal run directory;
config.json's `adapt` section names the base run and the samples' digest and count, and samples.csv lists
every sample with what became of it. The base run is only read. Why the recipe is as it is:
docs/design/adapt.md.
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
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

import digitlab.data.synth as synth_package
import digitlab.preprocess as preprocess_package
from digitlab import __version__, atomic, runs
from digitlab.calibrate import Answers, digit_answers
from digitlab.config import AUGMENTATIONS, ModelConfig, TrainConfig
from digitlab.data import RunSplit, default_cache_dir, run_split
from digitlab.data.synth.lines import MAX_DIGITS, PAD_LABEL
from digitlab.errors import DataError, DigitlabError, RunError
from digitlab.predict.keras_runtime import load_keras_model
from digitlab.predict.segmented import open_image
from digitlab.preprocess import NO_INK, preprocess
from digitlab.preprocess.ink import ink_levels
from digitlab.preprocess.line import line_ink, normalize_line
from digitlab.preprocess.segment import segment
from digitlab.training import _fit, calibrate_numbers, compile_model
from digitlab.training.augment import random_warp
from digitlab.training.epochs import EpochBatches
from digitlab.training.tasks import WILD_CALIBRATION_SEED, DigitTask, LineTask, steps_per_epoch

CLASSES = 10  # digits 0-9: a sample's label is its folder's name or the CSV's digit
MIN_PER_DIGIT = 1  # samples of each digit, after those preprocessing refuses
HEAD = {  # the layers Recipe.layers "head" trains, by the run's kind (models.build_model)
    "digit": ("dense", "bn_dense", "probabilities"),
    "line": ("dense", "context_0", "context_bn_0", "context_1", "context_bn_1", "gru", "probabilities"),
}
WILD_CACHE = "wild-calibration"  # the data cache's folder of wild calibration digits (AdaptTask.wild_digits)
_wild_cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # the same, for many adaptations in one process
SAMPLES_FORMAT = ("digitlab-samples", 1)  # the page's samples file: its "format" and "version"
PNG_URL = "data:image/png;base64,"  # how the page's samples file holds each image
SOURCES = (  # what samples may be, for a digit run and for a line run
    "a folder of sub-folders 0/ … 9/ or a CSV of path,digit, or the page's digitlab-samples .json",
    "a folder of sub-folders named for each number (4096/), a CSV of path,text, or a digitlab-samples .json",
)
# A number's normalised ink, as wide as tall: at least LINE_RATIO[0] per digit, at most LINE_RATIO[1] per
# digit plus LINE_RATIO[2]; the training lines span 0.21-2.05 for one digit, 1.9-5.3 for four, 4.0-11.8 for ten.
LINE_RATIO = (0.15, 1.6, 1.0)
LINE_INK = 64  # of 255: the normalised line's ink the ratio is measured on
EVALUATE_BATCH = 512  # digits per model call when scoring and taking features


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
    # Digit runs: the samples are dealt into this many folds, each read by a model adapted on the others,
    # and calibration's threshold must meet its rule on those answers too (AdaptTask.held_out; 0: not).
    writer_folds: int = 2
    # Digit runs: the samples' prototypes (nearest class mean on the classifier's input features) blended
    # into the classifier with this weight (fold_prototypes; 0: none), the means taken over each sample and
    # `prototype_warps` warped copies of it (the warps above).
    prototypes: float = 0.0
    prototype_warps: int = 16
    # Line runs with a digit model: validation numbers per subset the combined reader's rule for whole
    # numbers is fitted on again (training.calibrate_numbers), as the adapted line model reads them.
    numbers_per_subset: int = 120

    def __post_init__(self) -> None:
        if self.layers not in ("all", "head"):
            raise DigitlabError(f"recipe.layers: expected all or head, got {self.layers!r}")
        if not 0.0 <= self.mix < 1.0:
            raise DigitlabError(f"recipe.mix: expected a share in [0, 1), got {self.mix}")
        if self.steps <= 0 or self.batch_size <= 0:
            raise DigitlabError(f"recipe: steps and batch_size must be positive, got {self.steps}, {self.batch_size}")
        if self.numbers_per_subset < 1:
            raise DigitlabError(f"recipe.numbers_per_subset: expected at least 1, got {self.numbers_per_subset}")
        if self.prototypes < 0 or (self.prototypes and self.prototype_warps < 1):
            raise DigitlabError(
                f"recipe: prototypes must be >= 0, with prototype_warps >= 1, got {self.prototypes}, {self.prototype_warps}"
            )

    def train_config(self, base: TrainConfig, seed: int, line: bool = False) -> TrainConfig:
        """The run's training configuration with the adaptation's schedule and warps; for a line run, the
        generated lines it mixes in as its lines per epoch, and no warps (they are the person's lines' own,
        LineAdaptTask, and a line run's configuration holds none)."""
        if line:
            changes = {"lines": max(1, round(self.mix * self.steps * self.batch_size))}
        else:
            changes = {k: getattr(self, k) for k in AUGMENTATIONS}
        return dataclasses.replace(
            base,
            **changes,
            epochs=1,
            batch_size=self.batch_size,
            optimizer="adam",
            learning_rate=self.learning_rate,
            weight_decay=0.0,
            schedule="onecycle",
            precision="float32",
            seed=seed,
        )


RECIPE = Recipe()
# A line run's: every layer at a lower peak, fewer and smaller steps (a line costs about 20 digits); the
# warps apply to the person's lines only (the generated lines are drawn afresh), and no rotation or zoom,
# which would turn a 256 px line about a point near its start (training.augment works about 28 px).
LINE_RECIPE = Recipe(
    steps=60,
    batch_size=32,
    mix=0.75,  # bench/adapt.py --tune on a line run: 0.5 cost 1.4 points of validation lines, 0.75 none
    layers="all",
    learning_rate=3e-4,
    rotate=0.0,
    scale=0.0,
    shear=0.15,
    writer_folds=0,
)


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


@dataclass(frozen=True)
class LineSamples:
    """A person's numbers with their text, for a line run, each normalised as `digitlab read` normalises
    a line."""

    images: np.ndarray  # (n, LINE_HEIGHT, LINE_WIDTH) uint8, ink 255 on black
    texts: tuple[str, ...]  # each number's digits
    files: tuple[str, ...]
    sha256: tuple[str, ...]
    refused: tuple[tuple[str, str, str], ...] = ()  # (file, text, why)

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def digest(self) -> str:
        """One sha256 over every sample used, its file's digest and its text, in a fixed order."""
        return hashlib.sha256(
            "\n".join(sorted(f"{d} {t}" for d, t in zip(self.sha256, self.texts))).encode()
        ).hexdigest()

    def per_length(self) -> dict[str, int]:
        """Samples by their count of digits."""
        lengths = [len(t) for t in self.texts]
        return {str(n): lengths.count(n) for n in sorted(set(lengths))}

    def labels(self, width: int) -> np.ndarray:
        """The texts as the line task's padded labels (n, width), PAD_LABEL after the digits."""
        out = np.full((len(self), width), PAD_LABEL, np.int32)
        for i, text in enumerate(self.texts):
            out[i, : len(text)] = [int(c) for c in text]
        return out


def _label(text: str, where: str, line: bool = False) -> str:
    """A sample's label as written: one digit 0-9 for a digit run; a number's text, 1 to MAX_DIGITS digits
    0-9, for a line run."""
    text = text.strip()
    if line:
        if text.isascii() and text.isdigit() and len(text) <= MAX_DIGITS:
            return text
        raise DataError(f"{where}: text: expected a number of 1 to {MAX_DIGITS} digits 0-9, got {text!r:.40}")
    if text.isascii() and text.isdigit() and 0 <= int(text) < CLASSES:
        return str(int(text))
    raise DataError(f"{where}: digit: expected 0 to {CLASSES - 1}, got {text!r:.40}")


def _from_folder(folder: Path, line: bool) -> list[tuple[Path, str]]:
    """A folder of sub-folders 0/ … 9/ (for a line run, a sub-folder per number, named for it: 4096/): every
    file under each (hidden ones skipped) with its label."""
    entries, named = [], False
    for child in sorted(folder.iterdir()):
        if child.name.startswith("."):
            continue
        if not child.is_dir():
            raise DataError(f"{child}: a sample must stand in a sub-folder named for its {_what(line)}")
        named = True
        digit = _label(child.name, f"{child}/", line)
        entries += [(p, digit) for p in sorted(child.rglob("*")) if p.is_file() and not p.name.startswith(".")]
    if not named:
        raise DataError(f"{folder}: no sub-folders named for a {_what(line)}; expected {SOURCES[line]}")
    return entries


def _what(line: bool) -> str:
    return "number (4096/ …)" if line else "digit (0/ … 9/)"


def _from_csv(path: Path, line: bool) -> list[tuple[Path, str]]:
    """A CSV of path,digit (path,text for a line run): paths relative to the CSV's folder; a first row
    `path,digit` or `path,text` is a header."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot be read ({getattr(e, 'strerror', None) or e})") from None
    entries = []
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or not "".join(row).strip():
            continue
        where = f"{path}:{number}"
        if number == 1 and [c.strip().lower() for c in row] in (["path", "digit"], ["path", "text"]):
            continue
        fields = "path,text" if line else "path,digit"
        if len(row) != 2 or not row[0].strip():
            raise DataError(f"{where}: expected two fields, {fields}, got {len(row)}: {','.join(row)!r:.60}")
        entries.append((path.parent / row[0].strip(), _label(row[1], where, line)))
    return entries


def _from_json(path: Path, line: bool) -> list[tuple[Path, str, bytes]]:
    """The page's samples file: each sample named `FILE: samples[i]`, with its label and its PNG's bytes. A
    sample holds a digit; for a line run it may hold a number's text instead ("text": "4096")."""
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
        if line and isinstance(sample, dict) and isinstance(sample.get("text"), str) and "image" in sample:
            digit, image = _label(sample["text"], f"{where}.text", line), sample["image"]
        elif not isinstance(sample, dict) or "digit" not in sample or "image" not in sample:
            raise DataError(f"{where}: expected an object with {'text or ' if line else ''}digit and image")
        else:
            digit, image = sample["digit"], sample["image"]
            if isinstance(digit, bool) or not isinstance(digit, int) or not 0 <= digit < CLASSES:
                raise DataError(f"{where}.digit: expected 0 to {CLASSES - 1}, got {digit!r:.40}")
            digit = str(digit)
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


def read_samples(sources: Sequence[str | Path], kind: str = "digit") -> Samples | LineSamples:
    """Labelled samples from folders of 0/ … 9/, CSVs of path,digit and the page's samples files (.json),
    preprocessed as the reading path preprocesses a person's image; for a line run (`kind` "line"), numbers
    with their text (a folder per number, CSVs of path,text, samples files whose samples hold a text), each
    normalised as `digitlab read` normalises a line (LineSamples). A DataError (one line, naming the file)
    for a source or an image that cannot be read, a label outside 0-9, the same image twice, a digit left
    without a sample; for a line run, a number whose ink cannot hold its digits, or samples of single
    digits only."""
    if isinstance(sources, (str, Path)):
        sources = [sources]
    line = kind == "line"
    entries: list[tuple[Path, str]] = []
    inline: dict[Path, bytes] = {}  # the images inside a samples file, by the name they are listed under
    for source in map(Path, sources):
        if source.is_dir():
            entries += _from_folder(source, line)
        elif source.is_file() and source.suffix.lower() == ".csv":
            entries += _from_csv(source, line)
        elif source.is_file() and source.suffix.lower() == ".json":
            found = _from_json(source, line)
            inline.update((name, data) for name, _, data in found)
            entries += [(name, label) for name, label, _ in found]
        elif not source.exists():
            raise DataError(f"{source}: no such file or folder; expected {SOURCES[line]}")
        else:
            raise DataError(f"{source}: expected {SOURCES[line]}")
    if not entries:
        raise DataError(f"{', '.join(map(str, sources)) or 'samples'}: no sample images found")
    seen: dict[str, Path] = {}
    images, labels, files, digests, refused = [], [], [], [], []
    for path, label in entries:
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
            image, reason = _line_sample(data, label, path) if line else _digit_sample(data if path in inline else path)
        except DigitlabError as e:  # an ImageError: not an image, truncated, too large; it names the file
            raise DataError(f"{path}: {e}" if path in inline or line else str(e)) from None
        if reason is not None:
            refused.append((str(path), label, reason))
            continue
        images.append(image)
        labels.append(label)
        files.append(str(path))
        digests.append(digest)
    after = f" ({len(refused)} refused by preprocessing)" if refused else ""
    if line:
        if not labels:
            raise DataError(f"samples: no usable number{after}; expected numbers with their text")
        if all(len(t) == 1 for t in labels):
            raise DataError(
                f"samples: every usable sample is a single digit{after}; a line run learns whole numbers: "
                "expected numbers of two digits or more with their text (a CSV of path,text or a folder per number)"
            )
        return LineSamples(np.stack(images), tuple(labels), tuple(files), tuple(digests), tuple(refused))
    labels_ = np.array([int(t) for t in labels], dtype=int)
    counts = np.bincount(labels_, minlength=CLASSES)
    if len(set(labels)) == 1:
        raise DataError(f"samples: every usable sample is a {labels[0]}{after}; expected samples of each digit 0 to 9")
    missing = [str(k) for k in range(CLASSES) if counts[k] < MIN_PER_DIGIT]
    if missing:
        raise DataError(
            f"samples: no usable sample of digit {', '.join(missing)}{after}; "
            f"expected at least {MIN_PER_DIGIT} of each digit 0 to 9"
        )
    refused_ = tuple((f, int(t), why) for f, t, why in refused)
    return Samples(np.stack(images), labels_, tuple(files), tuple(digests), refused_)


def _digit_sample(image: Path | bytes) -> tuple[np.ndarray, str | None]:
    """One digit as `digitlab.preprocess` makes it MNIST-like, and why preprocessing refuses it (or None)."""
    pre = preprocess(image)
    return pre.digit, pre.reason


def _line_sample(data: bytes, text: str, where: Path) -> tuple[np.ndarray | None, str | None]:
    """One number's image as `digitlab read` normalises a line for the line model (predict.lines: the ink,
    its lines, normalize_line), and why it is refused (no ink, several lines), or None. A DataError naming
    the file when its ink is far narrower or wider than any line of its count of digits (a single digit's
    image labelled with a long number, a whole line labelled with one digit)."""
    grey, _ = open_image(data)
    ink = line_ink(grey)
    if ink is None:
        return None, NO_INK
    seg = segment(ink.mask)
    if len(seg.lines) != 1:
        return None, f"{len(seg.lines)} lines of ink; a sample is one line of digits"
    image = normalize_line(ink_levels(ink.bright, ink.mask, ink.paper)[0])[0]
    strong = image >= LINE_INK
    rows, cols = np.flatnonzero(strong.any(1)), np.flatnonzero(strong.any(0))
    ratio = (cols[-1] - cols[0] + 1) / (rows[-1] - rows[0] + 1) if len(rows) else 0.0
    narrow, wide = LINE_RATIO[0] * len(text), LINE_RATIO[1] * len(text) + LINE_RATIO[2]
    if not narrow <= ratio <= wide:
        n = len(text)
        raise DataError(
            f"{where}: its ink is {ratio:.1f} times as wide as tall, too {'narrow' if ratio < narrow else 'wide'} "
            f"for the {n} digit{'s' if n > 1 else ''} of {text!r} (expected {narrow:.1f} to {wide:.1f}): "
            "a sample is one number, labelled with its whole text"
        )
    return image, None


class AdaptTask(DigitTask):
    """The digit task on an adaptation's mix: the samples, each repeated, and a random share of the run's
    own training split (its non-digits included, when it learnt them), warped afresh; validated and
    calibrated on the run's validation data as the base run was."""

    def __init__(
        self,
        model_config: ModelConfig,
        cfg: TrainConfig,
        data: RunSplit,
        samples: Samples,
        recipe: Recipe,
        base_model: Path | None = None,
    ):
        super().__init__(model_config, cfg, data)
        self.model_config, self.recipe, self.base_model, self.person = model_config, recipe, base_model, samples
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

    def answers(self, run_dir: Path) -> list[Answers]:
        """The base run's calibration answers (DigitTask.answers) and, with `recipe.writer_folds` and a base
        model to start from, the person's own samples, each read by a model adapted on the other folds
        (held_out): the threshold must then meet the rule on this person's digits as well."""
        sets = super().answers(run_dir)
        held = self.held_out() if self.recipe.writer_folds and self.base_model is not None else None
        return sets if held is None else [*sets, held]

    def held_out(self) -> Answers | None:
        """The samples split into `recipe.writer_folds` folds, each digit's samples dealt in turn; each fold
        read by a copy of the base model adapted on the other folds (the same task, compiled and fitted as
        the adaptation, without a run directory): answers on this person's digits from models that never
        saw them. None when some digit has fewer samples than folds (a fold would leave it out)."""
        folds = self.recipe.writer_folds
        labels = self.person.labels
        if np.bincount(labels, minlength=CLASSES).min() < folds:
            return None
        fold = np.empty(len(labels), int)
        for k in range(CLASSES):
            fold[labels == k] = np.arange(np.sum(labels == k)) % folds
        probs = np.zeros((len(labels), CLASSES), np.float32)
        for f in range(folds):
            rest = Samples(self.person.digits[fold != f], labels[fold != f], (), ())
            task = AdaptTask(self.model_config, self.cfg, self.data, rest, self.recipe)
            keras.utils.set_random_seed(self.cfg.seed + 1 + f)
            model = load_keras_model(self.base_model)
            _choose_layers(model, self.recipe.layers, "digit")
            compile_model(model, self.cfg, steps_per_epoch(task, self.cfg))
            inputs = {k: v for k, v in task.fit_inputs(0).items() if k != "validation_data"}
            model.fit(**inputs, epochs=1, verbose=0)
            if self.recipe.prototypes:
                fold_prototypes(model, rest, self.recipe, self.cfg.seed)
            held = self.person.digits[fold == f].astype(np.float32)
            probs[fold == f] = keras.ops.convert_to_numpy(model(held, training=False))
        described = f"{len(labels)} of the person's samples, each read by a model adapted on the others"
        return digit_answers(probs, labels, described, name="writer")

    def fit_inputs(self, initial_epoch: int) -> dict:
        """DigitTask's; with prototypes the validation split is scored in `scores`, once they are folded in."""
        inputs = super().fit_inputs(initial_epoch)
        return {k: v for k, v in inputs.items() if k != "validation_data"} if self.recipe.prototypes else inputs

    def scores(self, model: keras.Model, logs: dict, inputs: dict) -> dict:
        """DigitTask's; with prototypes, at the epoch's end (an adaptation has one, and the recorder saves
        the model after it) they are folded into the classifier first, and the validation split is scored
        on the model as it is saved."""
        if not self.recipe.prototypes:
            return super().scores(model, logs, inputs)
        fold_prototypes(model, self.person, self.recipe, self.cfg.seed)
        d = self.data
        val = model.evaluate(d.x_val, d.y_val, batch_size=EVALUATE_BATCH, verbose=0, return_dict=True)
        return {
            **super().scores(model, logs, inputs),
            "val_loss": float(val["loss"]),
            "val_accuracy": float(val["accuracy"]),
        }

    def sizes(self) -> dict:
        return {
            "train": self.mixed,
            "validation": len(self.data.x_val),
            "samples": self.samples,
            "sample_repeats": self.repeats,
        }


class LineAdaptTask(LineTask):
    """The line task on an adaptation's mix: the person's numbers, each repeated and warped afresh, among
    the lines the run's own generator draws from its training split (`lines` of them, TrainConfig);
    validated and calibrated on the run's validation lines as the base run was."""

    def __init__(
        self, model_config: ModelConfig, cfg: TrainConfig, data: RunSplit, samples: LineSamples, recipe: Recipe
    ):
        super().__init__(model_config, cfg, data)
        total = recipe.steps * recipe.batch_size
        self.samples, self.recipe = samples, recipe
        self.repeats = max(1, math.ceil((total - cfg.lines) / len(samples)))
        self.train_size = cfg.lines + self.repeats * len(samples)

    def sizes(self) -> dict:
        return {**super().sizes(), "samples": len(self.samples), "sample_repeats": self.repeats}

    def fit_inputs(self, initial_epoch: int) -> dict:
        generated = super().fit_inputs(initial_epoch)["x"]
        return {"x": MixedLines(generated, self.samples, self.repeats, self.recipe, seed=self.cfg.seed)}


class MixedLines(EpochBatches):
    """An epoch of the run's generated lines (`generated`, the line task's own batches) with the person's
    lines, repeated and each warped afresh (training.augment, the recipe's warps), shuffled together."""

    def __init__(self, generated: EpochBatches, samples: LineSamples, repeats: int, recipe: Recipe, *, seed: int):
        size = generated.size + repeats * len(samples)
        super().__init__(size, generated.batch_size, first_epoch=generated.next_epoch, epochs=1, name="adapt-lines")
        self.generated, self.samples, self.repeats, self.seed = generated, samples, repeats, seed
        self.warps = {k: getattr(recipe, k) for k in AUGMENTATIONS}

    def draw(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        x, y = self.generated.draw(epoch)
        rng = np.random.default_rng([self.seed, epoch, len(self.samples)])
        mine = random_warp(np.tile(self.samples.images, (self.repeats, 1, 1)), rng, **self.warps)
        labels = np.tile(self.samples.labels(y.shape[1]), (self.repeats, 1))
        order = rng.permutation(len(x) + len(mine))
        images = np.concatenate([np.asarray(x, np.float32), np.clip(mine, 0, 255).astype(np.float32)])
        return images[order], np.concatenate([y, labels])[order]


def fold_prototypes(model: keras.Model, samples: Samples, recipe: Recipe, seed: int) -> None:
    """The samples' prototypes blended into a digit model's classifier, in its own weights: no layer is
    added, so every reader of the run (Keras, ONNX, the page) gives the blend, and the run loads as any.

    A prototype is a digit's mean feature vector (the classifier's input, `f`) over its samples and
    `recipe.prototype_warps` warped copies of each (nearest class mean, as in prototypical networks). The
    logit of digit c gains `recipe.prototypes` times -|f - mu_c|^2 / tau, less its mean over the digits,
    tau the copies' mean squared distance to their own digit's prototype. Expanded, that is
    (2 f.(mu_c - mean mu) - (|mu_c|^2 - mean |mu|^2)) / tau: linear in f (the |f|^2 term is the same for
    every digit and cancels), so it adds to the classifier's kernel and bias. A "not a digit" output gains
    nothing, and the digits' gains add up to zero, so a non-digit stays as likely against the digits."""
    layer = model.get_layer("probabilities")
    features = keras.Model(model.input, layer.input)
    rng = np.random.default_rng([seed, len(samples), 7])
    warps = {k: getattr(recipe, k) for k in AUGMENTATIONS}
    n = recipe.prototype_warps
    copies = random_warp(np.tile(samples.digits, (n, 1, 1)).astype(np.float32), rng, **warps)
    x = np.concatenate([samples.digits.astype(np.float32), np.clip(copies, 0, 255)])
    y = np.tile(samples.labels, n + 1)
    f = np.concatenate(
        [
            keras.ops.convert_to_numpy(features(x[i : i + EVALUATE_BATCH], training=False))
            for i in range(0, len(x), EVALUATE_BATCH)
        ]
    ).astype(np.float64)
    mu = np.stack([f[y == k].mean(axis=0) for k in range(CLASSES)])
    tau = max(float(np.mean(np.sum((f - mu[y]) ** 2, axis=1))), 1e-6)
    squares = np.sum(mu**2, axis=1)
    kernel, bias = (np.asarray(w, np.float64) for w in layer.get_weights())
    kernel[:, :CLASSES] += recipe.prototypes * 2.0 * (mu - mu.mean(axis=0)).T / tau
    bias[:CLASSES] -= recipe.prototypes * (squares - squares.mean()) / tau
    layer.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])


def _choose_layers(model: keras.Model, layers: str, kind: str) -> None:
    for layer in model.layers:
        layer.trainable = layers == "all" or layer.name in HEAD[kind]


def adapt(
    run: str | Path,
    samples: Samples | LineSamples | str | Path | Sequence[str | Path],
    out: str | Path,
    *,
    overwrite: bool = False,
    recipe: Recipe | None = None,
    seed: int = 0,
    data_dir: Path | None = None,
    verbose: int = 0,
) -> dict:
    """Fine-tune a copy of the run `run` on `samples` (for a digit run folders of 0/ … 9/, CSVs of
    path,digit, samples files; for a line run numbers with their text; or what read_samples returned) into
    the new run directory `out`, with `recipe` (RECIPE for a digit run, LINE_RECIPE for a line run); returns
    its metrics (also in metrics.json), with an `adapt` section: the base run, the samples used and refused,
    seconds."""
    started = time.perf_counter()
    run, out = Path(run), Path(out)
    checked = runs.check_run(run)
    kind = "line" if checked.kind == "line" else "digit"
    recipe = recipe or (LINE_RECIPE if kind == "line" else RECIPE)
    base_model = runs.require_model(run)
    if out.resolve() == run.resolve():
        raise RunError(f"--out {out}: is the base run; adapt writes a new run directory and never changes the base")
    if out.exists() and out.is_dir() and runs.has_files(out) and not overwrite:
        raise RunError(f"--out {out}: already exists; pass --overwrite to replace it")
    runs.check_new_run(out, overwrite)
    if not isinstance(samples, (Samples, LineSamples)):
        samples = read_samples([samples] if isinstance(samples, (str, Path)) else samples, kind)
    if isinstance(samples, LineSamples) != (kind == "line"):
        expected = "numbers with their text" if kind == "line" else "digits"
        raise DataError(f"samples: {run} is a {kind} run; expected {expected}, got {type(samples).__name__}")
    model_config = checked.model or ModelConfig.from_dict({})
    base_train = TrainConfig.from_dict(checked.config.get("train", {}))
    train_config = recipe.train_config(base_train, seed, line=kind == "line")
    # A line run's digit model (digits/, for the combined reader) is its own run: kept as it is, or none.
    digit_part = run / runs.DIGIT_PART if (run / runs.DIGIT_PART / runs.CALIBRATION).is_file() else None
    if kind == "line" and digit_part is None:
        train_config = dataclasses.replace(train_config, digit_model=None)
    split = run_split(train_config, data_dir)
    if kind == "line":
        task = LineAdaptTask(model_config, train_config, split, samples, recipe)
    else:
        task = AdaptTask(model_config, train_config, split, samples, recipe, base_model)
    keras.utils.set_random_seed(seed)
    model = load_keras_model(base_model)
    task.check(model, str(run))
    _choose_layers(model, recipe.layers, kind)
    compile_model(model, train_config, steps_per_epoch(task, train_config), type(task))
    base_metrics = runs.read_json(run / runs.METRICS) if (run / runs.METRICS).is_file() else {}
    label = "text" if kind == "line" else "digit"
    about = {
        "base_run": str(run.resolve()),
        "base_model_sha256": hashlib.sha256(base_model.read_bytes()).hexdigest(),
        "samples_digest": samples.digest,
        "samples": len(samples),
        **({"per_length": samples.per_length()} if kind == "line" else {"per_digit": samples.per_digit()}),
        "refused": len(samples.refused),
        "recipe": dataclasses.asdict(recipe),
    }
    with runs.lock_run(out):
        if overwrite:
            runs.clear_run(out)
        runs.write_run_config(out, model_config, train_config, task.data.dataset, task.sizes())
        runs.update_json(out / runs.CONFIG, adapt=about)
        _write_samples(out / runs.SAMPLES, samples, label)
        _fit(model, model_config, task, out, rows=[], best=-1.0, initial_epoch=0, verbose=verbose, on_epoch=None)
        if kind == "line" and digit_part is not None:
            shutil.copytree(digit_part, out / runs.DIGIT_PART, ignore=shutil.ignore_patterns(runs.LOCK))
        result = {
            "base_run": about["base_run"],
            "samples": len(samples),
            "refused": [{"file": f, label: d, "reason": r} for f, d, r in samples.refused],
            "base_validation_accuracy": base_metrics.get("validation", {}).get("accuracy"),
            "seconds": round(time.perf_counter() - started, 3),
        }
        runs.update_json(out / runs.METRICS, adapt=result)
    if kind == "line" and digit_part is not None:  # the rule for whole numbers, as the adapted model reads them
        calibrate_numbers(out, data_dir, per_subset=recipe.numbers_per_subset)
        result["seconds"] = round(time.perf_counter() - started, 3)
    return runs.update_json(out / runs.METRICS, adapt=result) | {"adapt": result}


def _write_samples(path: Path, samples: Samples | LineSamples, label: str) -> None:
    values = samples.texts if isinstance(samples, LineSamples) else [int(y) for y in samples.labels]
    rows = [{"file": f, label: y, "sha256": d, "used": "yes"} for f, y, d in zip(samples.files, values, samples.sha256)]
    rows += [{"file": f, label: y, "sha256": "", "used": f"refused: {r}"} for f, y, r in samples.refused]
    runs.write_csv(path, rows, ["file", label, "sha256", "used"])
