"""The networks. A model knows nothing of training: its shape is a frozen `ModelConfig`, saved
in every run's config.json and enough to rebuild it.

Every model takes raw pixels, shape (batch, 28, 28), values 0-255; with `normalize=True` the
first layer scales them to 0-1, so callers never have to remember to divide by 255.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import keras
from keras import layers

from digitlab.errors import DigitlabError

ARCHITECTURES = ("mlp", "cnn")
PRECISIONS = ("float32", "bfloat16")  # what the layers compute in; weights are always float32
PRECISION_CHOICES = ("auto", *PRECISIONS)  # "auto": bfloat16 where it is native (see native_bfloat16)
BF16_CPU_FLAGS = {"avx512_bf16", "amx_bf16"}  # /proc/cpuinfo: bfloat16 dot products in hardware
PIXEL_MEAN, PIXEL_STD = 0.1307, 0.3081  # of the MNIST training images, scaled to 0-1


@dataclass(frozen=True)
class ModelConfig:
    architecture: str = "cnn"  # "mlp" (the tutorial's network) or "cnn"
    units: tuple[int, ...] = (128,)  # mlp: hidden Dense widths, e.g. (4, 4) or (10, 10)
    activation: str = "relu"  # mlp hidden activation
    normalize: bool = True  # scale pixels 0-255 -> 0-1 inside the model
    standardize: bool = False  # with normalize: also centre on MNIST's pixel mean and divide by its std
    filters: tuple[int, ...] = (16, 32)  # cnn: channels of each conv stage
    kernels: tuple[int, ...] = (5, 3)  # cnn: kernel size of each stage's first conv (pixels)
    strides: tuple[int, ...] = (2, 2)  # cnn: stride of each stage's first conv
    convs: int | tuple[int, ...] = 1  # cnn: conv layers per stage, or one count per stage (the others are 3x3, stride 1)
    pool: bool = False  # cnn: 2x2 max-pool at the end of each stage
    dense: int = 128  # cnn: width of a hidden Dense layer before the classifier (0: none)
    dropout: float = 0.0  # cnn: dropout rate before the classifier
    bn_momentum: float = 0.9  # BatchNorm running averages; 0.99 lags far behind in a 2-epoch run
    norm_from: int = 0  # cnn: first stage with BatchNorm; earlier stages' convs take a bias instead
    input_shape: tuple[int, int] = (28, 28)  # pixels (height, width)
    num_classes: int = 10

    def __post_init__(self):
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
        if not 0.0 <= self.bn_momentum < 1.0:
            raise DigitlabError(f"model: bn_momentum must be in [0, 1), got {self.bn_momentum}")
        if not isinstance(self.norm_from, int) or not 0 <= self.norm_from <= len(self.filters):
            raise DigitlabError(
                f"model: norm_from must be a stage index from 0 to {len(self.filters)} (no BatchNorm in the convs), "
                f"got {self.norm_from!r}"
            )
        if not isinstance(self.dense, int) or self.dense < 0:
            raise DigitlabError(f"model: dense must be a width >= 0 (0: no hidden Dense layer), got {self.dense!r}")

    def stage_convs(self) -> tuple[int, ...]:
        """Conv layers in each stage."""
        return self.convs if isinstance(self.convs, tuple) else (self.convs,) * len(self.filters)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise DigitlabError(f"model config: unknown fields {sorted(unknown)}")
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
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


def native_bfloat16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether bfloat16 maths pays here: the TensorFlow backend (oneDNN) on a CPU that advertises
    AVX512-BF16 or AMX-BF16. Elsewhere (no such flags, no /proc/cpuinfo, JAX or PyTorch on a CPU)
    bfloat16 is emulated and slower than float32."""
    if keras.config.backend() != "tensorflow":
        return False
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return bool(BF16_CPU_FLAGS.intersection(flags))


def resolve_precision(precision: str) -> str:
    """"auto" -> "bfloat16" where it is native (native_bfloat16), else "float32"; others unchanged."""
    if precision == "auto":
        return "bfloat16" if native_bfloat16() else "float32"
    return precision


def build_model(config: ModelConfig, precision: str = "float32") -> keras.Model:
    """A fresh, uncompiled model for `config`.

    precision "bfloat16": every layer but the softmax computes in bfloat16 on float32 weights (Keras's
    mixed_bfloat16 policy); on a CPU with AVX512-BF16 the accurate preset's epochs ran about 1.3x faster,
    the fast preset's training about 1.15x. "auto": bfloat16 where that holds, float32 elsewhere.
    """
    precision = resolve_precision(precision)
    if precision not in PRECISIONS:
        raise DigitlabError(f"precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    dtype = "mixed_bfloat16" if precision == "bfloat16" else "float32"
    h, w = config.input_shape
    inputs = keras.Input(shape=(h, w), name="pixels")  # raw 0-255, float32
    if config.normalize and config.standardize:  # (x / 255 - mean) / std in one multiply-add
        x = layers.Rescaling(1.0 / (255.0 * PIXEL_STD), offset=-PIXEL_MEAN / PIXEL_STD, name="scale",
                             dtype=dtype)(inputs)
    elif config.normalize:
        x = layers.Rescaling(1.0 / 255.0, name="scale", dtype=dtype)(inputs)
    else:
        x = inputs
    if config.architecture == "mlp":
        x = layers.Flatten(name="flatten", dtype=dtype)(x)
        for i, width in enumerate(config.units):
            x = layers.Dense(width, activation=config.activation, name=f"dense_{i}", dtype=dtype)(x)
    else:
        x = layers.Reshape((h, w, 1), name="channel", dtype=dtype)(x)  # shape (b, 28, 28, 1)
        stages = zip(config.filters, config.kernels, config.strides, config.stage_convs())
        for i, (channels, kernel, stride, convs) in enumerate(stages):
            norm = i >= config.norm_from
            for j in range(convs):
                first = j == 0
                x = layers.Conv2D(channels, kernel if first else 3, strides=stride if first else 1, padding="same",
                                  use_bias=not norm, name=f"conv_{i}_{j}", dtype=dtype)(x)
                if norm:
                    x = layers.BatchNormalization(momentum=config.bn_momentum, name=f"bn_{i}_{j}", dtype=dtype)(x)
                x = layers.Activation("relu", name=f"relu_{i}_{j}", dtype=dtype)(x)
            if config.pool:
                x = layers.MaxPooling2D(2, name=f"pool_{i}", dtype=dtype)(x)  # halves the resolution
        x = layers.Flatten(name="flatten", dtype=dtype)(x)
        if config.dense:
            x = layers.Dense(config.dense, use_bias=False, name="dense", dtype=dtype)(x)
            x = layers.BatchNormalization(momentum=config.bn_momentum, name="bn_dense", dtype=dtype)(x)
            x = layers.Activation("relu", name="relu_dense", dtype=dtype)(x)
        if config.dropout:
            x = layers.Dropout(config.dropout, name="dropout", dtype=dtype)(x)
    outputs = layers.Dense(config.num_classes, activation="softmax", name="probabilities", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=f"digitlab_{config.architecture}")
