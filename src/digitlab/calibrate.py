"""Calibrated confidence: temperature scaling and an "unsure" threshold, both fitted on the
validation split (never the test set), saved as calibration.json in the run directory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar

from digitlab import runs
from digitlab.metrics import confidence_bins, nll
from digitlab.plots import plot_reliability
from digitlab.predict import apply_temperature

BINS = 15  # equal-width confidence bins for the expected calibration error
TARGET_ACCURACY = 0.995  # accepted predictions should be right this often on validation...
MIN_COVERAGE = 0.90  # ...but never mark more than 10 % of validation digits unsure
THRESHOLD_RULE = (
    f"lowest calibrated confidence at which validation predictions at or above it are "
    f"{TARGET_ACCURACY:.1%} correct, capped so that at least {MIN_COVERAGE:.0%} of validation digits are accepted"
)


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int = BINS) -> float:
    """Mean |accuracy - confidence| over confidence bins, weighted by the bins' sizes."""
    conf, correct = probs.max(axis=1), probs.argmax(axis=1) == y
    which = confidence_bins(conf, bins)
    ece = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def fit_temperature(probs: np.ndarray, y: np.ndarray) -> float:
    """The T in softmax(log p / T) that minimises validation negative log-likelihood."""
    result = minimize_scalar(
        lambda log_t: nll(apply_temperature(probs, float(np.exp(log_t))), y),
        bounds=(np.log(0.05), np.log(20.0)),
        method="bounded",
    )
    return float(np.exp(result.x))


def choose_threshold(probs: np.ndarray, y: np.ndarray) -> float:
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    order = np.argsort(-conf)  # most confident first
    accepted_accuracy = np.cumsum(correct[order]) / np.arange(1, len(y) + 1)
    min_accepted = int(np.ceil(MIN_COVERAGE * len(y)))
    ok = np.flatnonzero(accepted_accuracy >= TARGET_ACCURACY)
    n = max(int(ok[-1]) + 1 if ok.size else 0, min_accepted)  # how many to accept
    return float(conf[order][min(n, len(y)) - 1])


def fit_calibration(run_dir: Path, probs: np.ndarray, y: np.ndarray) -> dict:
    """Fit temperature and threshold on validation probabilities; write calibration.json and reliability.png."""
    run_dir = Path(run_dir)
    temperature = fit_temperature(probs, y)
    calibrated = apply_temperature(probs, temperature)
    threshold = choose_threshold(calibrated, y)
    accepted = calibrated.max(axis=1) >= threshold
    result = {
        "temperature": temperature,
        "threshold": threshold,
        "threshold_rule": THRESHOLD_RULE,
        "fitted_on": f"validation split ({len(y)} images)",
        "ece_before": expected_calibration_error(probs, y),
        "ece_after": expected_calibration_error(calibrated, y),
        "nll_before": nll(probs, y),
        "nll_after": nll(calibrated, y),
        "validation_coverage": float(accepted.mean()),
        "validation_accepted_accuracy": float((calibrated.argmax(1) == y)[accepted].mean()),
    }
    plot_reliability(probs, calibrated, y, BINS, run_dir / runs.RELIABILITY)
    runs.write_json(run_dir / runs.CALIBRATION, result)
    runs.update_json(run_dir / runs.METRICS, calibration=result)
    return result
