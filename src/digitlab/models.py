"""The networks. A model knows nothing of training: its shape is a frozen `ModelConfig` (digitlab.config),
saved in every run's config.json and enough to rebuild it.

Every model takes raw pixels, shape (batch, height, width), values 0-255; with `normalize=True` the
first layer scales them to 0-1, so callers never have to remember to divide by 255.
"""

from __future__ import annotations

import keras
from keras import layers

from digitlab.config import PIXEL_MEAN, PIXEL_STD, ModelConfig, resolve_precision
from digitlab.errors import DigitlabError


def build_model(config: ModelConfig, precision: str = "float32") -> keras.Model:
    """A fresh, uncompiled model for `config`.

    precision "bfloat16": every layer but the softmax computes in bfloat16 on float32 weights (Keras's
    mixed_bfloat16 policy); on a CPU with AVX512-BF16 the accurate preset's epochs ran about 1.3x faster,
    the fast preset's training about 1.15x. "auto": bfloat16 where that holds, float32 elsewhere.
    """
    if config.architecture == "line":  # a line of digits with CTC: another network and another loss
        raise DigitlabError("model: architecture 'line' is built by digitlab.line_model.build_line_model")
    precision = resolve_precision(precision)
    dtype = "mixed_bfloat16" if precision == "bfloat16" else "float32"
    h, w = config.input_shape
    inputs = keras.Input(shape=(h, w), name="pixels")  # raw 0-255, float32
    if config.normalize and config.standardize:  # (x / 255 - mean) / std in one multiply-add
        x = layers.Rescaling(1.0 / (255.0 * PIXEL_STD), offset=-PIXEL_MEAN / PIXEL_STD, name="scale", dtype=dtype)(
            inputs
        )
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
                x = layers.Conv2D(
                    channels,
                    kernel if first else 3,
                    strides=stride if first else 1,
                    padding="same",
                    use_bias=not norm,
                    name=f"conv_{i}_{j}",
                    dtype=dtype,
                )(x)
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
