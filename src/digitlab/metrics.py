"""Scores shared by training, calibration and evaluation: NumPy only."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

EPS = 1e-12  # probabilities are clipped here before the log
REST = 1e-6  # probabilities that leave more than this of 1 leave it to "not a digit" (models.build_model)
SUGGESTION_RULE = (
    "one tenth of the learning rate at the smoothed loss's minimum: the loss is still falling fast there, "
    "well clear of where it blows up"
)


def temper(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature scaling of probabilities over the last axis, softmax(log p / T), float32: digits'
    (n, classes) and a line model's frames (n, frames, classes + 1) alike. The one place a run's
    calibrated temperature is applied. Probabilities that sum to less than 1 - REST (a model with a "not a
    digit" output, models.build_model) leave the rest to that class, scaled with the others and left out
    again; rows that sum to 1 are scaled exactly as a ten-class softmax."""
    probs = np.asarray(probs, np.float32)
    if temperature == 1.0:
        return probs
    logits = np.log(np.clip(probs, EPS, 1.0)) / temperature
    rest = 1.0 - probs.sum(axis=-1, keepdims=True, dtype=np.float64)
    rest = np.where(rest > REST, np.log(np.maximum(rest, EPS)) / temperature, -np.inf).astype(np.float32)
    top = np.maximum(logits.max(axis=-1, keepdims=True), rest)
    e = np.exp(logits - top)
    return (e / (e.sum(axis=-1, keepdims=True) + np.exp(rest - top))).astype(np.float32)


def nll(probs: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes `y` under `probs` (n, classes)."""
    y = np.asarray(y, dtype=int)
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], EPS, 1.0))))


def confidence_bins(confidence: np.ndarray, bins: int) -> np.ndarray:
    """The index (0..bins-1) of each confidence's equal-width bin over [0, 1]; 1.0 falls in the last."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    return np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)


def alignment(truth: Sequence, read: Sequence) -> tuple[list[tuple], int, int]:
    """A least-cost (Levenshtein) alignment of `read` against `truth`: the (true, read) pairs it matches
    or substitutes, in order, and how many of truth's items it deletes and how many it inserts. The edit
    distance is the substituted pairs plus the deletions plus the insertions."""
    n, m = len(truth), len(read)
    cost = np.zeros((n + 1, m + 1), int)
    cost[:, 0], cost[0, :] = np.arange(n + 1), np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost[i, j] = min(cost[i - 1, j] + 1, cost[i, j - 1] + 1, cost[i - 1, j - 1] + (truth[i - 1] != read[j - 1]))
    pairs, deleted, inserted = [], 0, 0
    i, j = n, m
    while i or j:  # back from the end, preferring a match or substitution
        if i and j and cost[i, j] == cost[i - 1, j - 1] + (truth[i - 1] != read[j - 1]):
            pairs.append((truth[i - 1], read[j - 1]))
            i, j = i - 1, j - 1
        elif i and cost[i, j] == cost[i - 1, j] + 1:
            deleted, i = deleted + 1, i - 1
        else:
            inserted, j = inserted + 1, j - 1
    return pairs[::-1], deleted, inserted


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance: the fewest items inserted, deleted or replaced to turn `a` into `b`."""
    pairs, deleted, inserted = alignment(a, b)
    return sum(x != y for x, y in pairs) + deleted + inserted


MIN_FALL = 0.05  # for a suggestion, the smoothed loss must fall this share below its start and chance level


def suggest_lr(lrs: np.ndarray, smoothed: np.ndarray, num_classes: int = 10) -> float | None:
    """One tenth of the learning rate at the smoothed loss's minimum (never below the first rate tried);
    None when the loss never fell MIN_FALL below both its start and chance level (ln of the class count):
    on a plateau, e.g. raw pixels stuck at chance, the minimum is noise, not a rate that trains."""
    reference = min(float(smoothed[0]), float(np.log(num_classes)))
    if not np.nanmin(smoothed) < (1.0 - MIN_FALL) * reference:
        return None
    return float(max(lrs[int(np.argmin(smoothed))] / 10.0, lrs[0]))
