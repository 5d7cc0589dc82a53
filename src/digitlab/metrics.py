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


def suggest_lr(lrs: np.ndarray, smoothed: np.ndarray) -> float:
    """One tenth of the learning rate at the smoothed loss's minimum (never below the first rate tried)."""
    return float(max(lrs[int(np.argmin(smoothed))] / 10.0, lrs[0]))
