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


def fit_calibration(
    run_dir: Path, probs: np.ndarray, y: np.ndarray, wild: tuple[np.ndarray, np.ndarray, str] | None = None
) -> dict:
    """Fit temperature and threshold on validation probabilities; write calibration.json and reliability.png.

    `wild`, if given, is (probabilities, labels, description) of validation digits drawn as people's
    images: the temperature is fitted on both, and the threshold is the higher of the two each set
    asks for, so that what is accepted meets the rule on people's images as well as on MNIST's."""
    run_dir = Path(run_dir)
    fitted_on = f"validation split ({len(y)} images)"
    all_probs, all_y = probs, y
    if wild is not None:
        all_probs, all_y = np.concatenate([probs, wild[0]]), np.concatenate([y, wild[1]])
        fitted_on += f" and {wild[2]}"
    temperature = fit_temperature(all_probs, all_y)
    calibrated = apply_temperature(probs, temperature)
    threshold = choose_threshold(calibrated, y)
    result = {"temperature": temperature, "threshold": threshold}
    if wild is not None:
        calibrated_wild = apply_temperature(wild[0], temperature)
        threshold = max(threshold, choose_threshold(calibrated_wild, wild[1]))
        result["threshold"] = threshold
        result.update(_acceptance(calibrated_wild, wild[1], threshold, "wild_"))
    all_calibrated = apply_temperature(all_probs, temperature)
    result.update(
        threshold_rule=THRESHOLD_RULE,
        fitted_on=fitted_on,
        ece_before=expected_calibration_error(all_probs, all_y),
        ece_after=expected_calibration_error(all_calibrated, all_y),
        nll_before=nll(all_probs, all_y),
        nll_after=nll(all_calibrated, all_y),
        **_acceptance(calibrated, y, threshold, "validation_"),
    )
    plot_reliability(all_probs, all_calibrated, all_y, BINS, run_dir / runs.RELIABILITY)
    runs.write_json(run_dir / runs.CALIBRATION, result)
    runs.update_json(run_dir / runs.METRICS, calibration=result)
    return result


def _acceptance(calibrated: np.ndarray, y: np.ndarray, threshold: float, prefix: str) -> dict:
    accepted = calibrated.max(axis=1) >= threshold
    right = calibrated.argmax(1) == y
    return {
        f"{prefix}coverage": float(accepted.mean()),
        f"{prefix}accepted_accuracy": float(right[accepted].mean()) if accepted.any() else float("nan"),
    }
