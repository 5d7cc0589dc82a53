"""The networks, every architecture. A model knows nothing of training: its shape is a frozen
`ModelConfig` (digitlab.config), saved in every run's config.json and enough to rebuild it.

Every model takes raw pixels, shape (batch, height, width), values 0-255; with `normalize=True` the
first layer scales them to 0-1, so callers never have to remember to divide by 255.

A digit model ("mlp", "cnn") gives (batch, classes) probabilities. With `nondigit` its softmax has one
output more, "not a digit", which the model's output leaves out (a slice, no layer of its own): it still
gives the digits' probabilities, so every reader of a ten-class model reads it, and what they leave of 1 is
the non-digit's (metrics.temper keeps it when it scales them).
The line model ("line") is a CNN over
a whole line of digits giving, per frame, probabilities over the ten digits and the CTC blank:

    pixels (b, 32, 256) 0-255
    -> per stage: conv k x k (+ 3x3 convs), BatchNorm, ReLU; max-pool 2 high, `pool_widths[i]` wide
    -> the remaining rows folded into channels: one feature vector per column = per frame
    -> Dense(dense) + ReLU, `context` residual Conv1D blocks over the frames, dropout,
       optionally a bidirectional GRU (`recurrent` units)
    -> Dense(num_classes + 1) softmax                      (b, frames, 11), the blank last

With `nondigit` a line model has one symbol more, "not a digit" (config.MARK), before the blank: (b, frames,
12), the blank still last; it is a class of its own, read like a digit and refused by the reader.

With pool widths (2, 2, 1, 1) a frame is 4 px of the line: 64 frames, room for 10 digits with a blank
between repeats. Decoding (greedy, in NumPy, so ONNX Runtime needs no Keras) is digitlab.predict.ctc.
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
    dtype = "mixed_bfloat16" if resolve_precision(precision) == "bfloat16" else "float32"
    if config.kind == "line":
        return build_line_model(config, dtype)
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
    if config.dropout:  # before the classifier (TensorFlow's quickstart: Dense 128, Dropout 0.2, Dense 10)
        x = layers.Dropout(config.dropout, name="dropout", dtype=dtype)(x)
    classes = config.num_classes + config.nondigit
    outputs = layers.Dense(classes, activation="softmax", name="probabilities", dtype="float32")(x)
    if config.nondigit:  # the digits' probabilities; the non-digit's is what they leave of 1
        outputs = outputs[..., :-1]
    return keras.Model(inputs, outputs, name=f"digitlab_{config.architecture}")


CONTEXT_KERNEL = 5  # frames a context block's Conv1D spans (20 px of the line at 4 px a frame)


def frames(config: ModelConfig) -> int:
    """Frames the model gives for one line: its width divided by the stages' horizontal pooling."""
    width = config.input_shape[1]
    for pool in config.pool_widths:
        width //= pool
    return width


def build_line_model(config: ModelConfig, dtype: str = "float32") -> keras.Model:
    """A fresh, uncompiled line model for `config` (architecture "line"); `dtype` a Keras dtype policy
    ("float32" or "mixed_bfloat16"), the probabilities always float32."""
    if config.architecture != "line":
        raise DigitlabError(f"build_line_model: expected architecture 'line', got {config.architecture!r}")
    h, w = config.input_shape
    if h % 2 ** len(config.filters) or any(w % p for p in config.pool_widths):
        raise DigitlabError(
            f"model: input_shape {config.input_shape} must halve {len(config.filters)} times in height and "
            f"divide by each of pool_widths {config.pool_widths} in width"
        )
    inputs = keras.Input(shape=(h, w), name="pixels")  # raw 0-255, float32
    x = layers.Rescaling(1.0 / 255.0, name="scale", dtype=dtype)(inputs)
    x = layers.Reshape((h, w, 1), name="channel", dtype=dtype)(x)  # shape (b, 32, 256, 1)
    stages = zip(config.filters, config.kernels, config.pool_widths, config.stage_convs())
    for i, (channels, kernel, pool, convs) in enumerate(stages):
        for j in range(convs):
            x = layers.Conv2D(
                channels, kernel if j == 0 else 3, padding="same", use_bias=False, name=f"conv_{i}_{j}", dtype=dtype
            )(x)
            x = layers.BatchNormalization(momentum=config.bn_momentum, name=f"bn_{i}_{j}", dtype=dtype)(x)
            x = layers.Activation("relu", name=f"relu_{i}_{j}", dtype=dtype)(x)
        x = layers.MaxPooling2D((2, pool), name=f"pool_{i}", dtype=dtype)(x)
    rows, cols, channels = x.shape[1:]
    x = layers.Permute((2, 1, 3), name="columns", dtype=dtype)(x)  # (b, frames, rows, channels)
    x = layers.Reshape((cols, rows * channels), name="frames", dtype=dtype)(x)
    if config.dense:
        x = layers.Dense(config.dense, activation="relu", name="dense", dtype=dtype)(x)
    for i in range(config.context):  # each block widens what a frame sees by 2 frames (8 px) either way
        y = layers.Conv1D(
            config.dense, CONTEXT_KERNEL, padding="same", use_bias=False, name=f"context_{i}", dtype=dtype
        )(x)
        y = layers.BatchNormalization(momentum=config.bn_momentum, name=f"context_bn_{i}", dtype=dtype)(y)
        x = layers.Add(name=f"context_add_{i}", dtype=dtype)(
            [x, layers.Activation("relu", name=f"context_relu_{i}", dtype=dtype)(y)]
        )
    if config.dropout:
        x = layers.Dropout(config.dropout, name="dropout", dtype=dtype)(x)
    if config.recurrent:
        x = layers.Bidirectional(layers.GRU(config.recurrent, return_sequences=True), name="gru", dtype=dtype)(x)
    classes = config.num_classes + config.nondigit + 1  # the digits, "not a digit" when learnt, the blank
    outputs = layers.Dense(classes, activation="softmax", name="probabilities", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="digitlab_line")
