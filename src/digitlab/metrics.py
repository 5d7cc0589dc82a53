"""Scores shared by training, calibration and evaluation: NumPy only."""

from __future__ import annotations

import numpy as np

EPS = 1e-12  # probabilities are clipped here before the log
SUGGESTION_RULE = (
    "one tenth of the learning rate at the smoothed loss's minimum: the loss is still falling fast there, "
    "well clear of where it blows up"
)


def nll(probs: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes `y` under `probs` (n, classes)."""
    y = np.asarray(y, dtype=int)
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], EPS, 1.0))))


def confidence_bins(confidence: np.ndarray, bins: int) -> np.ndarray:
    """The index (0..bins-1) of each confidence's equal-width bin over [0, 1]; 1.0 falls in the last."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    return np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)


MIN_FALL = 0.05  # for a suggestion, the smoothed loss must fall this share below its start and chance level


def suggest_lr(lrs: np.ndarray, smoothed: np.ndarray, num_classes: int = 10) -> float | None:
    """One tenth of the learning rate at the smoothed loss's minimum (never below the first rate tried);
    None when the loss never fell MIN_FALL below both its start and chance level (ln of the class count):
    on a plateau, e.g. raw pixels stuck at chance, the minimum is noise, not a rate that trains."""
    reference = min(float(smoothed[0]), float(np.log(num_classes)))
    if not np.nanmin(smoothed) < (1.0 - MIN_FALL) * reference:
        return None
    return float(max(lrs[int(np.argmin(smoothed))] / 10.0, lrs[0]))
