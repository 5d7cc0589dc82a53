"""The line model: a CNN over a whole line of digits giving, per frame, probabilities over the ten
digits and the CTC blank. It knows nothing of training; its shape is a `ModelConfig` with
architecture "line", saved in config.json and enough to rebuild it.

    pixels (b, 32, 256) 0-255
    -> per stage: conv k x k (+ 3x3 convs), BatchNorm, ReLU; max-pool 2 high, `strides[i]` wide
    -> the remaining rows folded into channels: one feature vector per column = per frame
    -> Dense(dense) + ReLU, `context` residual Conv1D blocks over the frames, dropout,
       optionally a bidirectional GRU (`recurrent` units)
    -> Dense(num_classes + 1) softmax                      (b, frames, 11), the blank last

With strides (2, 2, 1, 1) a frame is 4 px of the line: 64 frames, room for 10 digits with a blank
between repeats. Decoding (greedy, in NumPy, so ONNX Runtime needs no Keras) is digitlab.predict.ctc.
"""

from __future__ import annotations

import keras
from keras import layers

from digitlab.config import ModelConfig
from digitlab.errors import DigitlabError

CONTEXT_KERNEL = 5  # frames a context block's Conv1D spans (20 px of the line at 4 px a frame)


def frames(config: ModelConfig) -> int:
    """Frames the model gives for one line: its width divided by the stages' horizontal pooling."""
    width = config.input_shape[1]
    for stride in config.strides:
        width //= stride
    return width


def build_line_model(config: ModelConfig) -> keras.Model:
    """A fresh, uncompiled line model for `config` (architecture "line"), float32."""
    if config.architecture != "line":
        raise DigitlabError(f"build_line_model: expected architecture 'line', got {config.architecture!r}")
    h, w = config.input_shape
    if h % 2 ** len(config.filters) or any(w % s for s in config.strides):
        raise DigitlabError(
            f"model: input_shape {config.input_shape} must halve {len(config.filters)} times in height and "
            f"divide by each of strides {config.strides} in width"
        )
    inputs = keras.Input(shape=(h, w), name="pixels")  # raw 0-255, float32
    x = layers.Rescaling(1.0 / 255.0, name="scale")(inputs)
    x = layers.Reshape((h, w, 1), name="channel")(x)  # shape (b, 32, 256, 1)
    stages = zip(config.filters, config.kernels, config.strides, config.stage_convs())
    for i, (channels, kernel, stride, convs) in enumerate(stages):
        for j in range(convs):
            x = layers.Conv2D(channels, kernel if j == 0 else 3, padding="same", use_bias=False, name=f"conv_{i}_{j}")(
                x
            )
            x = layers.BatchNormalization(momentum=config.bn_momentum, name=f"bn_{i}_{j}")(x)
            x = layers.Activation("relu", name=f"relu_{i}_{j}")(x)
        x = layers.MaxPooling2D((2, stride), name=f"pool_{i}")(x)
    rows, cols, channels = x.shape[1:]
    x = layers.Permute((2, 1, 3), name="columns")(x)  # (b, frames, rows, channels)
    x = layers.Reshape((cols, rows * channels), name="frames")(x)
    if config.dense:
        x = layers.Dense(config.dense, activation="relu", name="dense")(x)
    for i in range(config.context):  # each block widens what a frame sees by 2 frames (8 px) either way
        y = layers.Conv1D(config.dense, CONTEXT_KERNEL, padding="same", use_bias=False, name=f"context_{i}")(x)
        y = layers.BatchNormalization(momentum=config.bn_momentum, name=f"context_bn_{i}")(y)
        x = layers.Add(name=f"context_add_{i}")([x, layers.Activation("relu", name=f"context_relu_{i}")(y)])
    if config.dropout:
        x = layers.Dropout(config.dropout, name="dropout")(x)
    if config.recurrent:
        x = layers.Bidirectional(layers.GRU(config.recurrent, return_sequences=True), name="gru")(x)
    outputs = layers.Dense(config.num_classes + 1, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="digitlab_line")
