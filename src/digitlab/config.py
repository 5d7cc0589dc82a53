"""Configurations: the frozen dataclasses that describe a model and its training, and the named presets.

Free of Keras, so `--help`, an ONNX deployment and reports read configurations without TensorFlow.
A model's shape is a `ModelConfig`, saved in every run's config.json and enough to rebuild it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from digitlab.errors import DigitlabError

ARCHITECTURES = ("mlp", "cnn", "line")  # "line": a whole line of digits, CTC (models.build_line_model)
KINDS = {"mlp": "digit", "cnn": "digit", "line": "line"}  # what each architecture reads
READ_METHODS = ("segment", "line", "combined")  # how `read` finds digits: segmentation + one digit,
# a line model, or both (a line run that holds a digit model; digitlab.predict.reading.combine)
PRECISIONS = ("float32", "bfloat16")  # what the layers compute in; weights are always float32
PRECISION_CHOICES = ("auto", *PRECISIONS)  # "auto": bfloat16 where it is native (see native_bfloat16)
BF16_CPU_FLAGS = {"avx512_bf16", "amx_bf16"}  # /proc/cpuinfo: bfloat16 dot products in hardware
PIXEL_MEAN, PIXEL_STD = 0.1307, 0.3081  # of the MNIST training images, scaled to 0-1
OPTIMIZERS = ("adam", "sgd")
RUNTIMES = ("keras", "onnx")  # what runs a trained model: Keras (model.keras) or ONNX Runtime (model.onnx)
MARK = "?"  # a line model's "not a digit" symbol, as a reading's text shows it (ModelConfig.nondigit)
BATCH_TASKS = ("digit", "number")  # `digitlab batch --task`: one digit per image, or a whole number
BATCH_ENGINES = ("ray", "local")  # `digitlab batch --engine`: Ray Data's workers, or this process alone
BATCH_SIZE = 256  # files per model call and per Ray block: a fraction of a second of one worker's time
SERVE_TIMEOUT = 30.0  # s a client has for a request's headers, and as long again for its body
SERVE_LIMIT_CONCURRENCY = 256  # open connections per server process: well under the usual 1024 descriptors
QUICK_LIMIT = 5000  # `digitlab experiments --quick`: training images per step
QUICK_EPOCHS_DIVISOR = 20  # ... and epochs divided by this (20 -> 1, 40 -> 2, 60 -> 3, then at least 2)
SCHEDULES = ("constant", "onecycle")
# What a digit model learns from non-digit marks: "uniform", every digit equally likely (outlier exposure);
# "class", an eleventh output of its own (ModelConfig.nondigit). Why: docs/design/non-digits.md.
OUTLIER_LOSSES = ("uniform", "class")
AUGMENTATIONS = ("shift", "rotate", "scale", "elastic", "shear", "thickness", "blur")  # TrainConfig fields


@dataclass(frozen=True)
class ModelConfig:
    architecture: str = "cnn"  # "mlp" (the tutorial's network) or "cnn"
    units: tuple[int, ...] = (128,)  # mlp: hidden Dense widths, e.g. (4, 4) or (10, 10)
    activation: str = "relu"  # mlp hidden activation
    normalize: bool = True  # scale pixels 0-255 -> 0-1 inside the model
    standardize: bool = False  # with normalize: also centre on MNIST's pixel mean and divide by its std
    filters: tuple[int, ...] = (16, 32)  # cnn: channels of each conv stage
    kernels: tuple[int, ...] = (5, 3)  # cnn: kernel size of each stage's first conv (pixels)
    strides: tuple[int, ...] = (2, 2)  # stride of each stage's first conv (a line model's are all 1)
    convs: int | tuple[int, ...] = (
        1  # cnn: conv layers per stage, or one count per stage (the others are 3x3, stride 1)
    )
    pool: bool = False  # cnn: 2x2 max-pool at the end of each stage
    dense: int = 128  # cnn: width of a hidden Dense layer before the classifier (0: none)
    dropout: float = 0.0  # mlp, cnn, line: dropout rate before the classifier
    bn_momentum: float = 0.9  # BatchNorm running averages; 0.99 lags far behind in a 2-epoch run
    norm_from: int = 0  # cnn: first stage with BatchNorm; earlier stages' convs take a bias instead
    input_shape: tuple[int, int] = (28, 28)  # pixels (height, width)
    num_classes: int = 10
    # digits: an eleventh output, "not a digit", trained on non-digit marks (TrainConfig.outlier_loss "class")
    # and folded away: the model gives the ten digits' probabilities, and what they leave of 1 is the
    # non-digit's (models.build_model, metrics.temper). A run without it gives ten that sum to 1.
    # lines: a CTC symbol of its own, "not a digit" (MARK), between the digits and the blank, learnt from
    # lines that carry a mark (TrainConfig.outliers); a run without it has the digits and the blank only.
    nondigit: bool = False
    pool_widths: tuple[int, ...] = ()  # line: each stage's max-pool width in px (its height always halves)
    recurrent: int = 0  # line: units of a bidirectional GRU over the frames (0: none)
    context: int = 0  # line: residual Conv1D blocks (kernel 5, `dense` wide) over the frames (0: none)

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise DigitlabError(
                f"model: unknown architecture {self.architecture!r}; expected one of {', '.join(ARCHITECTURES)}"
            )
        if not len(self.filters) == len(self.kernels) == len(self.strides):
            raise DigitlabError(
                f"model: filters, kernels and strides need one value per stage, got {self.filters}, "
                f"{self.kernels}, {self.strides}"
            )
        if isinstance(self.convs, tuple) and len(self.convs) != len(self.filters):
            raise DigitlabError(f"model: convs needs one value per stage (or one for all), got {self.convs}")
        if any(not isinstance(c, int) or c <= 0 for c in self.stage_convs()):
            raise DigitlabError(f"model: convs must be positive integers, got {self.convs!r}")
        for name in ("units", "filters", "kernels", "strides"):
            values = getattr(self, name)
            if not values or any(not isinstance(v, int) or v <= 0 for v in values):
                raise DigitlabError(f"model: {name} must be positive integers, got {values!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise DigitlabError(f"model: dropout must be in [0, 1), got {self.dropout}")
        if not isinstance(self.num_classes, int) or self.num_classes < 2:
            raise DigitlabError(f"model: num_classes must be an integer of at least 2, got {self.num_classes!r}")
        if len(self.input_shape) != 2 or any(not isinstance(s, int) or s <= 0 for s in self.input_shape):
            raise DigitlabError(f"model: input_shape must be two positive integers, got {self.input_shape!r}")
        if not 0.0 <= self.bn_momentum < 1.0:
            raise DigitlabError(f"model: bn_momentum must be in [0, 1), got {self.bn_momentum}")
        if not isinstance(self.norm_from, int) or not 0 <= self.norm_from <= len(self.filters):
            raise DigitlabError(
                f"model: norm_from must be a stage index from 0 to {len(self.filters)} (no BatchNorm in the convs), "
                f"got {self.norm_from!r}"
            )
        if not isinstance(self.recurrent, int) or self.recurrent < 0:
            raise DigitlabError(f"model: recurrent must be a width >= 0 (0: no GRU), got {self.recurrent!r}")
        if not isinstance(self.context, int) or self.context < 0:
            raise DigitlabError(f"model: context must be a count >= 0 of Conv1D blocks, got {self.context!r}")
        if self.context and not self.dense:
            raise DigitlabError("model: context blocks need a hidden Dense layer (dense > 0) to set their width")
        if not isinstance(self.dense, int) or self.dense < 0:
            raise DigitlabError(f"model: dense must be a width >= 0 (0: no hidden Dense layer), got {self.dense!r}")
        if self.kind == "line":
            if len(self.pool_widths) != len(self.filters) or any(
                not isinstance(p, int) or p <= 0 for p in self.pool_widths
            ):
                raise DigitlabError(
                    f"model: a line model needs one positive pool width per stage, got {self.pool_widths!r}"
                )
            if any(s != 1 for s in self.strides):
                raise DigitlabError(f"model: a line model's convs have stride 1 (it pools), got {self.strides!r}")
        elif self.pool_widths:
            raise DigitlabError(f"model: pool_widths is a line model's; a {self.architecture} takes pool")

    @property
    def kind(self) -> str:
        """What the model reads: "digit" (one 28x28 digit: mlp, cnn) or "line" (a line of digits, CTC).
        The one place a run's kind is decided; every stage asks this."""
        return KINDS[self.architecture]

    def stage_convs(self) -> tuple[int, ...]:
        """Conv layers in each stage."""
        return self.convs if isinstance(self.convs, tuple) else (self.convs,) * len(self.filters)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        """config.json's model section, each field's JSON type checked first: a DigitlabError naming the
        field (`model.units`), the value and what was expected."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise DigitlabError(f"model config: unknown fields {sorted(unknown)}")
        d = check_json_fields(cls, "model", d)
        if d.get("architecture") == "line" and "pool_widths" not in d and "strides" in d:
            # Line runs written before pool_widths held their pooling widths in strides.
            d["pool_widths"], d["strides"] = d["strides"], (1,) * len(d["strides"])
        return cls(**d)


def parse_units(text: str) -> tuple[int, ...]:
    """'4,4' -> (4, 4); a clear error for anything else."""
    try:
        units = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise DigitlabError(f"--units: expected comma-separated positive integers like 10,10, got {text!r}") from None
    if any(u <= 0 for u in units):
        raise DigitlabError(f"--units: expected positive integers, got {text!r}")
    return units


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 2
    batch_size: int = 128  # images per step
    optimizer: str = "adam"  # "adam" or "sgd" (with Nesterov momentum 0.9)
    learning_rate: float = 1e-3  # peak learning rate for "onecycle"
    weight_decay: float = 0.0  # decoupled (AdamW-style) weight decay; 0: none
    schedule: str = "constant"  # "constant" or "onecycle" (warm up, then cosine decay to ~0, per step)
    label_smoothing: float = 0.0  # digits: share of each target spread evenly over all classes (0: plain one-hot)
    warmup: float = 0.2  # onecycle: fraction of all steps spent warming up
    # Augmentation of digits (AUGMENTATIONS): a fresh warp of each training digit every epoch.
    shift: float = 0.0  # augmentation: random shift, up to this many pixels (0: no augmentation)
    rotate: float = 0.0  # augmentation: random rotation, up to this many degrees
    scale: float = 0.0  # augmentation: random zoom, up to this fraction either way
    elastic: float = 0.0  # augmentation: elastic distortion strength (Simard's alpha, pixels; 0: none)
    shear: float = 0.0  # augmentation: random slant, up to this many px sideways per px of height
    thickness: float = 0.0  # augmentation: strokes thickened or thinned by up to this share of 1 px
    blur: float = 0.0  # augmentation: half the images blurred, Gaussian sigma up to this many pixels
    # Calibration: validation digits per column of the wild set (digitlab.data.synth.wild, drawn as people's images
    # from the same validation split) added to the validation split it is fitted on; 0: the split only.
    calibrate_wild: int = 0  # digits only
    # Non-digits (digits): non-digit marks (data.synth.nondigits, its "train" family) added to the training
    # digits, this many per digit (0: none), taught `outlier_loss`; calibration then also sees validation
    # non-digits of another family, `calibrate_nondigits` of them. Line models: the share of lines that
    # carry a mark among their digits (the "train" family's; the validation lines the "validation" family's),
    # taught the "not a digit" symbol (outlier_loss "class").
    outliers: float = 0.0
    outlier_weight: float = 0.5  # the non-digits' loss, against a digit's
    outlier_loss: str = "uniform"  # OUTLIER_LOSSES: to the uniform over the digits, or to a class of its own
    calibrate_nondigits: int = 0
    # "float32", "bfloat16" (bfloat16 maths on float32 weights) or "auto" (bfloat16 where the CPU has it
    # natively, see native_bfloat16); runs record the resolved one. model.keras is always float32.
    precision: str = "float32"
    seed: int = 42  # weights, shuffling and dropout
    split_seed: int = 42  # the train/validation split, fixed across seeds so runs compare
    val_fraction: float = 0.2  # 60,000 -> 48,000 train / 12,000 validation
    limit: int | None = None  # train on the first N images of the train split only (quick runs)
    dataset: str = "mnist"
    lines: int = 20000  # line models: training lines generated afresh each epoch (digitlab.data.synth.lines)
    val_lines: int = 2000  # line models: validation lines, the same every epoch
    digit_model: str | None = None  # line models: a digit preset also trained into the run's digits/ folder
    # model.onnx exported and checked once training ends (as `digitlab export RUN` does), so that read,
    # predict and serve run on ONNX Runtime: the presets that train for minutes, where it costs 3-5 s.
    export_onnx: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.epochs, int) or self.epochs <= 0:
            raise DigitlabError(f"--epochs: expected a positive integer, got {self.epochs}")
        if not isinstance(self.batch_size, int) or self.batch_size <= 0:
            raise DigitlabError(f"--batch-size: expected a positive integer, got {self.batch_size}")
        if not self.learning_rate > 0 or not math.isfinite(self.learning_rate):
            raise DigitlabError(f"--lr: expected a positive number, got {self.learning_rate}")
        if self.optimizer not in OPTIMIZERS:
            raise DigitlabError(f"--optimizer: expected one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.precision not in PRECISION_CHOICES:
            raise DigitlabError(f"--precision: expected one of {', '.join(PRECISION_CHOICES)}, got {self.precision!r}")
        if self.schedule not in SCHEDULES:
            raise DigitlabError(f"--schedule: expected one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if not 0.0 <= self.weight_decay < 1.0:
            raise DigitlabError(f"--weight-decay: expected a number in [0, 1), got {self.weight_decay}")
        if not 0.0 <= self.outliers <= 1.0 or not self.outlier_weight > 0:
            raise DigitlabError(
                f"--outliers: expected a share from 0 to 1 and a positive weight, got {self.outliers}, {self.outlier_weight}"
            )
        if self.outlier_loss not in OUTLIER_LOSSES:
            raise DigitlabError(f"outlier_loss: expected one of {', '.join(OUTLIER_LOSSES)}, got {self.outlier_loss!r}")
        if not isinstance(self.calibrate_nondigits, int) or self.calibrate_nondigits < 0:
            raise DigitlabError(f"calibrate_nondigits: expected a count >= 0, got {self.calibrate_nondigits!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise DigitlabError(f"--label-smoothing: expected a number in [0, 1), got {self.label_smoothing}")
        if not 0.0 < self.val_fraction < 1.0:
            raise DigitlabError(f"--val-fraction: expected a number between 0 and 1, got {self.val_fraction}")
        if min(self.shift, self.rotate, self.scale, self.elastic, self.shear, self.thickness, self.blur) < 0:
            raise DigitlabError(
                "--shift, --rotate, --scale, --elastic, --shear, --thickness, --blur: expected non-negative amounts"
            )
        if self.scale >= 1 or self.thickness > 1:
            raise DigitlabError("--scale: expected an amount below 1; --thickness: at most 1 (px)")
        if not isinstance(self.calibrate_wild, int) or self.calibrate_wild < 0:
            raise DigitlabError(f"calibrate_wild: expected a count >= 0, got {self.calibrate_wild!r}")
        if self.digit_model is not None and self.digit_model not in DIGIT_PRESETS:
            raise DigitlabError(
                f"digit_model: expected a digit preset ({', '.join(DIGIT_PRESETS)}) or null, got {self.digit_model!r}"
            )
        for name in ("lines", "val_lines"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise DigitlabError(f"{name}: expected a positive integer, got {getattr(self, name)!r}")
        if self.limit is not None and self.limit <= 0:
            raise DigitlabError(f"--limit: expected a positive integer, got {self.limit}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def augmentation(self) -> dict[str, float]:
        """The warps `augment.random_warp` takes; empty when the training images are used as they are."""
        warps = {k: getattr(self, k) for k in AUGMENTATIONS}
        return warps if any(warps.values()) else {}

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """config.json's train section (fields this version does not know are skipped), each field's JSON
        type checked first as for ModelConfig.from_dict."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**check_json_fields(cls, "train", {k: v for k, v in d.items() if k in known}))


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# What each annotation of ModelConfig's and TrainConfig's fields accepts from JSON, where a tuple arrives as
# a list: a test, and the words for an error.
JSON_TYPES = {
    "str": (lambda v: isinstance(v, str), "a string"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "int": (_is_int, "an integer"),
    "float": (lambda v: _is_int(v) or isinstance(v, float), "a number"),
    "None": (lambda v: v is None, "null"),
    "tuple[int, ...]": (lambda v: isinstance(v, tuple) and all(map(_is_int, v)), "a list of integers"),
    "tuple[int, int]": (lambda v: isinstance(v, tuple) and len(v) == 2 and all(map(_is_int, v)), "two integers"),
}


def check_json_fields(cls, section: str, d: dict) -> dict:
    """`d` (a section of config.json) with lists made tuples, once every value has its field's type: a
    DigitlabError naming `section.field`, the value and the type expected. Before the dataclass's own
    checks, which compare values and take their types for granted."""
    checked = {}
    types = {f.name: f.type.split(" | ") for f in dataclasses.fields(cls)}
    for name, value in d.items():
        value = tuple(value) if isinstance(value, list) else value
        if not any(JSON_TYPES[t][0](value) for t in types[name]):
            expected = " or ".join(JSON_TYPES[t][1] for t in types[name])
            raise DigitlabError(f"{section}.{name}: expected {expected}, got {_short(d[name])}")
        checked[name] = value
    return checked


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


# Named starting points; every field can still be overridden from the CLI.
DIGIT_PRESETS = ("robust", "fast", "accurate")  # what a line run's digit_model may name
DEFAULT_PRESET = "robust"
# How the digit presets (not the tutorial's) learn what is not a digit: 25 non-digit marks per 100 digits,
# taught to a "not a digit" output of their own; the fast preset 15, each weighing twice a digit, for its
# time. Why: docs/design/non-digits.md.
NONDIGITS = {"outliers": 0.25, "outlier_loss": "class", "outlier_weight": 1.0}
# The numbers preset's share of training lines that carry a non-digit mark (chosen on validation lines:
# docs/design/line-model.md).
LINE_MARKS = 0.2
# Seconds to 99 %: a small strided CNN, two epochs of one-cycle Adam with label smoothing on
# standardized pixels, mixed bfloat16 where native. Why: docs/design/fast-preset.md, bfloat16.md.
_FAST = (
    ModelConfig(
        architecture="cnn", filters=(16, 32), kernels=(5, 3), strides=(2, 2), dense=128, norm_from=2, standardize=True
    ),
    TrainConfig(
        epochs=2,
        batch_size=256,
        learning_rate=3e-2,
        schedule="onecycle",
        label_smoothing=0.1,
        precision="auto",
        **{**NONDIGITS, "outliers": 0.15, "outlier_weight": 2.0},
    ),
)
PRESETS: dict[str, tuple[ModelConfig, TrainConfig]] = {
    # The default, for people's digits: the fast preset's network trained longer on digits slanted,
    # rotated, thickened, thinned and blurred as people's images are, calibrated on validation digits
    # drawn as people's images (the wild set). Why: docs/design/robust-preset.md.
    "robust": (
        _FAST[0],
        dataclasses.replace(
            _FAST[1],
            epochs=8,
            shift=1.5,
            rotate=15.0,
            scale=0.1,
            shear=0.4,
            thickness=0.8,
            blur=0.8,
            calibrate_wild=300,
            export_onnx=True,
            **NONDIGITS,
        ),
    ),
    "fast": _FAST,
    # Accuracy within half an hour on a 2-core CPU: Conv 32 5x5, two stages of two 3x3 convs (48, 96),
    # max-pooling after each stage; a fresh random shift, rotation, zoom, elastic distortion, slant,
    # thickness and blur of each digit every epoch; 40 epochs of one-cycle AdamW; calibrated as the
    # robust preset. Why: docs/design/accurate-preset.md.
    "accurate": (
        ModelConfig(
            architecture="cnn",
            filters=(32, 48, 96),
            kernels=(5, 3, 3),
            strides=(1, 1, 1),
            convs=(1, 2, 2),
            pool=True,
            dense=256,
            dropout=0.3,
            norm_from=1,
        ),
        TrainConfig(
            epochs=40,
            batch_size=128,
            learning_rate=3e-3,
            schedule="onecycle",
            weight_decay=5e-4,
            shift=2.0,
            rotate=15.0,
            scale=0.1,
            elastic=12.0,
            shear=0.4,
            thickness=0.8,
            blur=0.8,
            calibrate_wild=300,
            precision="auto",
            export_onnx=True,
            **NONDIGITS,
        ),
    ),
    # Whole numbers without segmenting: a CNN over a 32x256 line giving 64 frames over the digits and
    # the CTC blank, trained on handwritten lines generated afresh each epoch from the training split
    # (digitlab.data.synth.lines). Why: docs/design/line-model.md.
    "numbers": (
        ModelConfig(
            architecture="line",
            filters=(16, 32, 64, 96),
            kernels=(3, 3, 3, 3),
            strides=(1, 1, 1, 1),
            pool_widths=(2, 2, 1, 1),  # each stage's max-pool width (height always halves): 4 px a frame
            dense=128,
            context=2,  # line: two residual Conv1D blocks over the frames, so a frame sees 55 px of the line
            dropout=0.2,
            input_shape=(32, 256),
        ),
        TrainConfig(
            epochs=8,
            batch_size=64,
            learning_rate=3e-3,
            schedule="onecycle",
            lines=10000,
            val_lines=2000,
            digit_model="robust",  # the combined reader's digit model, trained into digits/ after the line model
            export_onnx=True,
            outliers=LINE_MARKS,  # lines with a non-digit mark among their digits, read as MARK
            outlier_loss="class",
        ),
    ),
    # `--model mlp`: the tutorial's Dense(10)-Dense(10), trained the best way found on the validation
    # split (GELU, one-cycle Adam at 1e-2, weight decay; 94.7 % validation vs 93.2 % the tutorial's way).
    "mlp": (
        ModelConfig(architecture="mlp", units=(10, 10), activation="gelu"),
        TrainConfig(epochs=20, batch_size=64, learning_rate=1e-2, schedule="onecycle", weight_decay=5e-2),
    ),
    # The tutorial's own recipe: ReLU, Adam at its default rate, batch 32, 20 epochs.
    "tutorial": (
        ModelConfig(architecture="mlp", units=(10, 10)),
        TrainConfig(epochs=20, batch_size=32, learning_rate=1e-3, schedule="constant"),
    ),
}


def keras_backend() -> str:
    """The Keras backend in use, or the one Keras will pick, without importing Keras (which would import
    TensorFlow): KERAS_BACKEND, else the backend in $KERAS_HOME/keras.json, else tensorflow."""
    if "keras" in sys.modules:
        return sys.modules["keras"].config.backend()
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")
    try:
        return str(json.loads((home / "keras.json").read_text()).get("backend", "tensorflow"))
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


def native_bfloat16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether bfloat16 maths pays here: the TensorFlow backend (oneDNN) on a CPU that advertises
    AVX512-BF16 or AMX-BF16. Elsewhere (no such flags, no /proc/cpuinfo, JAX or PyTorch on a CPU)
    bfloat16 is emulated and slower than float32."""
    if keras_backend() != "tensorflow":
        return False
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return bool(BF16_CPU_FLAGS.intersection(flags))


def resolve_precision(precision: str) -> str:
    """ "auto" -> "bfloat16" where it is native (native_bfloat16), else "float32"; others unchanged."""
    if precision == "auto":
        return "bfloat16" if native_bfloat16() else "float32"
    if precision not in PRECISIONS:
        raise DigitlabError(f"precision: expected one of {', '.join(PRECISIONS)}, got {precision!r} (or auto)")
    return precision


def resolve_configs(
    preset: str = DEFAULT_PRESET,
    *,
    architecture: str | None = None,
    units: tuple[int, ...] | None = None,
    activation: str | None = None,
    normalize: bool | None = None,
    dropout: float | None = None,
    **train_overrides,
) -> tuple[ModelConfig, TrainConfig]:
    """A preset's configurations with the given fields replaced (None: keep the preset's value).

    Naming an architecture other than the preset's starts from that architecture's own defaults:
    `--model mlp` on the fast preset trains the tutorial's MLP the tutorial's way.
    """
    if preset not in PRESETS:
        raise DigitlabError(f"--preset: expected one of {', '.join(PRESETS)}, got {preset!r}")
    model_cfg, train_cfg = PRESETS[preset]
    if architecture is not None and architecture != model_cfg.architecture:
        base = next((p for p in PRESETS.values() if p[0].architecture == architecture), None)
        if base is None:
            ModelConfig(architecture=architecture)  # raises the unknown-architecture error
        model_cfg, train_cfg = base
    if model_cfg.architecture != "mlp":
        for option, value in (("--units", units), ("--activation", activation)):
            if value is not None:
                raise DigitlabError(
                    f"{option} applies to --model mlp; the {preset} preset trains a {model_cfg.architecture}"
                )
    model_changes = {"units": units, "activation": activation, "normalize": normalize, "dropout": dropout}
    if normalize is False:  # standardizing is a form of normalizing: --no-normalize turns both off
        model_changes["standardize"] = False
    model_cfg = dataclasses.replace(model_cfg, **{k: v for k, v in model_changes.items() if v is not None})
    train_cfg = dataclasses.replace(train_cfg, **{k: v for k, v in train_overrides.items() if v is not None})
    if train_cfg.outliers and not train_cfg.calibrate_nondigits and model_cfg.kind == "digit":
        train_cfg = dataclasses.replace(train_cfg, calibrate_nondigits=CALIBRATE_NONDIGITS)  # checked on marks
    # the "not a digit" output where, and only where, it is trained
    model_cfg = dataclasses.replace(model_cfg, nondigit=nondigit_output(train_cfg))
    check_configs(model_cfg, train_cfg)
    return model_cfg, dataclasses.replace(train_cfg, precision=resolve_precision(train_cfg.precision))


CALIBRATE_NONDIGITS = 2000  # validation non-digits calibration sees when a run learns non-digits
DIGIT_TRAINING = (
    *AUGMENTATIONS,
    "label_smoothing",
    "calibrate_wild",
    "calibrate_nondigits",
)  # TrainConfig fields only digit models use


def nondigit_output(train_config: TrainConfig) -> bool:
    """Whether a digit model trained this way has the "not a digit" output (ModelConfig.nondigit)."""
    return bool(train_config.outliers) and train_config.outlier_loss == "class"


def check_configs(model_config: ModelConfig, train_config: TrainConfig) -> None:
    """A DigitlabError when the training configuration asks for what the model's kind does not do: a line
    model is trained on generated lines (`lines`, `val_lines`), never on warped single digits; a model
    has a "not a digit" output exactly when it learns non-digits as a class."""
    if model_config.nondigit != nondigit_output(train_config):
        raise DigitlabError(
            f'model.nondigit is {str(model_config.nondigit).lower()}: a model has the "not a digit" output '
            'exactly when it trains with --outliers and outlier_loss "class"'
        )
    if model_config.kind == "line" and train_config.outliers and train_config.outlier_loss != "class":
        raise DigitlabError(
            f'outlier_loss: a line model learns its marks as a "not a digit" symbol ("class"), got '
            f"{train_config.outlier_loss!r}"
        )
    if model_config.kind == "digit" and train_config.digit_model is not None:
        raise DigitlabError("digit_model: for line models, which also train a digit model into digits/")
    if model_config.kind == "line":
        asked = [name for name in DIGIT_TRAINING if getattr(train_config, name)]
        if asked:
            options = ", ".join("--" + name.replace("_", "-") for name in asked)
            raise DigitlabError(f"{options}: for digit models; a line model trains on generated lines")
