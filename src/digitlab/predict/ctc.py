"""Reading a line model's output: greedy CTC decoding, the string's confidence and each digit's frames.

NumPy only, so that ONNX Runtime reads lines without Keras; it agrees with `keras.ops.ctc_decode`'s
greedy strategy (tests/test_line_model.py checks that). The blank is the last class.

Greedy decoding takes the most likely class in every frame, merges runs of the same class and drops
blanks: "3 3 _ 3 _ _ 7" reads "337", and two equal digits need a blank between them. The confidence
of the reading is the probability of that best path, each frame's probabilities tempered by the run's
calibration first (softmax(log p / T)); a digit's confidence is its class's highest tempered
probability over the frames of its run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from digitlab.metrics import EPS, temper


@dataclass(frozen=True)
class Decoded:
    digits: tuple[int, ...]  # class indices, left to right
    frames: tuple[tuple[int, int], ...]  # each digit's run of frames [start, end)
    digit_confidences: tuple[float, ...]
    confidence: float  # probability of the best path


def greedy_decode(probs: np.ndarray, temperature: float = 1.0) -> list[Decoded]:
    """(n, frames, classes) per-frame probabilities, blank last -> one Decoded per line."""
    probs = temper(probs, temperature)
    if probs.ndim != 3:
        raise ValueError(f"greedy_decode: expected probabilities (n, frames, classes), got shape {probs.shape}")
    blank = probs.shape[-1] - 1
    best = probs.argmax(-1)
    path = np.log(np.clip(probs.max(-1), EPS, 1.0)).sum(-1)
    out = []
    for row, p, log_p in zip(best, probs, path):
        starts = np.flatnonzero(np.r_[True, row[1:] != row[:-1]])  # where each run of one class begins
        ends = np.r_[starts[1:], len(row)]
        runs = [(int(s), int(e)) for s, e in zip(starts, ends) if row[s] != blank]
        digits = tuple(int(row[s]) for s, _ in runs)
        confidences = tuple(float(p[s:e, d].max()) for (s, e), d in zip(runs, digits))
        out.append(Decoded(digits, tuple(runs), confidences, float(np.exp(log_p))))
    return out


def texts(decoded: list[Decoded], class_names: tuple[str, ...]) -> list[str]:
    return ["".join(class_names[d] for d in line.digits) for line in decoded]
