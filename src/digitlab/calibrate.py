"""Calibrated confidence: temperature scaling and an "unsure" threshold, both fitted on validation data
(never the test set), saved as calibration.json in the run directory.

One procedure for every kind of model. A digit model's answer is a class and its probability; a line
model's answer is a whole string and the probability of its best path. Calibration sees either as
`Answers`: how confident each answer is at a temperature, whether it is right, and the loss the
temperature is fitted to minimise (the negative log-likelihood of the labels for digits; of "the
string is right" for lines). The threshold rule, the expected calibration error and the reliability
diagram are the same for both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar

from digitlab import runs
from digitlab.metrics import EPS, confidence_bins, nll, temper
from digitlab.plots import plot_reliability
from digitlab.predict.ctc import greedy_decode

BINS = 15  # equal-width confidence bins for the expected calibration error
TARGET_ACCURACY = 0.995  # accepted answers should be right this often on validation...
MIN_COVERAGE = 0.90  # ...but never mark more than 10 % of validation answers unsure
# Of validation marks that are not digits, at least this share is refused: a point over the 97 % asked of
# marks of other families (docs/design/non-digits.md).
NONDIGIT_REFUSAL = 0.98
TEMPERATURES = (0.05, 20.0)  # the range the temperature is fitted in
THRESHOLD_RULE = (
    f"lowest calibrated confidence at which validation answers at or above it are "
    f"{TARGET_ACCURACY:.1%} right, capped so that at least {MIN_COVERAGE:.0%} of validation answers are accepted"
)
NONDIGIT_RULE = f"; and at least {NONDIGIT_REFUSAL:.0%} of the validation non-digits refused"
# Whole numbers read by the combined reader (fit_numbers): the same target, without the coverage floor, which
# numbers cannot meet with it (docs/design/reading.md); NUMBER_C: the inverse L2 strength of the logistic fit.
NUMBER_RULE = (
    f"a logistic model of the combined reader's evidence; unsure below the lowest confidence at which "
    f"validation numbers at or above it are {TARGET_ACCURACY:.1%} right"
)
NUMBER_C = 1.0


@dataclass(frozen=True)
class Answers:
    """A model's answers on validation data, as calibration sees them."""

    confidence: Callable[[float], np.ndarray]  # temperature -> (n,) confidence of each answer
    right: np.ndarray  # (n,) bool; scaling by a temperature never changes an answer, only its confidence
    loss: Callable[[float], float]  # temperature -> the mean loss the temperature minimises
    kind: str  # "digit" or "string"
    description: str  # what they are, for calibration.json's fitted_on: "the validation split (12000 images)"
    name: str = "validation"  # the prefix of its figures in calibration.json: validation_coverage, ...
    digits: bool = True  # False: marks that are not digits, every answer wrong, left out of the coverage floor

    def __len__(self) -> int:
        return len(self.right)


def digit_answers(
    probs: np.ndarray, y: np.ndarray, description: str | None = None, name: str = "validation"
) -> Answers:
    """(n, classes) uncalibrated probabilities and the true classes."""
    probs, y = np.asarray(probs, np.float32), np.asarray(y, dtype=int)
    return Answers(
        confidence=lambda t: temper(probs, t).max(axis=1),
        right=probs.argmax(axis=1) == y,
        loss=lambda t: nll(temper(probs, t), y),
        kind="digit",
        description=description or f"validation split ({len(y)} images)",
        name=name,
    )


def nondigit_answers(probs: np.ndarray, description: str) -> Answers:
    """(n, classes) uncalibrated probabilities of marks that are not digits: whatever digit is answered is
    wrong. They decide nothing of the temperature, only where the threshold must stand."""
    probs = np.asarray(probs, np.float32)
    return Answers(
        confidence=lambda t: temper(probs, t).max(axis=1),
        right=np.zeros(len(probs), bool),
        loss=lambda t: 0.0,
        kind="digit",
        description=description,
        name="nondigit",
        digits=False,
    )


def string_answers(frames: np.ndarray, truths: list[tuple[int, ...]], description: str | None = None) -> Answers:
    """A line model's (n, frames, classes + 1) uncalibrated per-frame probabilities and each line's digits:
    the answer is the greedy reading, its confidence the probability of its best path."""

    def confidence(t: float) -> np.ndarray:
        return np.array([d.confidence for d in greedy_decode(frames, t)])

    right = np.array([d.digits == tuple(t) for d, t in zip(greedy_decode(frames), truths)])

    def loss(t: float) -> float:
        c = np.clip(confidence(t), EPS, 1.0 - 1e-6)
        return float(-np.mean(np.where(right, np.log(c), np.log1p(-c))))

    return Answers(confidence, right, loss, "string", description or f"{len(truths)} validation lines")


def temperature_for(loss: Callable[[float], float]) -> float:
    """The temperature in TEMPERATURES that minimises `loss` (temperature -> mean loss of some answers)."""
    result = minimize_scalar(lambda log_t: loss(float(np.exp(log_t))), bounds=np.log(TEMPERATURES), method="bounded")
    return float(np.exp(result.x))


def threshold_for(confidence: np.ndarray, right: np.ndarray, min_coverage: float = MIN_COVERAGE) -> float:
    """The lowest confidence at which the answers at or above it meet TARGET_ACCURACY, never accepting
    fewer than `min_coverage` of them (THRESHOLD_RULE); above every confidence when none may be accepted."""
    order = np.argsort(-confidence)  # most confident first
    accepted_accuracy = np.cumsum(right[order]) / np.arange(1, len(right) + 1)
    ok = np.flatnonzero(accepted_accuracy >= TARGET_ACCURACY)
    floor = np.ceil(min_coverage * len(right))
    n = max(int(ok[-1]) + 1 if ok.size else 0, int(floor))  # how many to accept
    if n == 0:
        return float(min(np.nextafter(confidence.max(), np.inf), 1.0)) if len(confidence) else 1.0
    return float(confidence[order][min(n, len(right)) - 1])


def refusing_threshold(confidence: np.ndarray, share: float = NONDIGIT_REFUSAL) -> float:
    """The lowest confidence below which at least `share` of `confidence` (answers that should all be
    refused) falls: at most floor((1 - share) n) of them are at or above it."""
    if not len(confidence):
        return 0.0
    accepted = int(np.floor((1.0 - share) * len(confidence) + 1e-9))  # how many may be accepted
    highest_refused = np.sort(confidence)[len(confidence) - accepted - 1]
    return float(np.nextafter(np.float32(highest_refused), np.float32(np.inf)))


def calibration_error(confidence: np.ndarray, right: np.ndarray, bins: int = BINS) -> float:
    """Expected calibration error: mean |accuracy - confidence| over equal-width confidence bins,
    weighted by the bins' sizes."""
    which = confidence_bins(confidence, bins)
    return float(
        sum(
            (which == b).mean() * abs(right[which == b].mean() - confidence[which == b].mean())
            for b in range(bins)
            if (which == b).any()
        )
    )


# Digits' probabilities directly, as the tests and benchmarks use them.
def fit_temperature(probs: np.ndarray, y: np.ndarray) -> float:
    """The T in softmax(log p / T) that minimises the negative log-likelihood of `y`."""
    return temperature_for(digit_answers(probs, y).loss)


def choose_threshold(probs: np.ndarray, y: np.ndarray) -> float:
    return threshold_for(probs.max(axis=1), probs.argmax(axis=1) == y)


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int = BINS) -> float:
    return calibration_error(probs.max(axis=1), probs.argmax(axis=1) == y, bins)


def fit_calibration(run_dir: Path, answers: Answers, *more: Answers) -> dict:
    """Fit temperature and threshold on validation answers; write calibration.json and reliability.png,
    and `calibration` in metrics.json.

    `more` are answers on other validation data: digits drawn as people's images (the wild set) and
    marks that are not digits. The temperature is fitted on every set of digits; the threshold is the
    highest that THRESHOLD_RULE asks of each set of digits, so that what is accepted meets it on people's
    images as well as on MNIST's, and that NONDIGIT_RULE asks of the non-digits: the two kinds of error,
    a digit refused and a non-digit answered, each held to its own bound rather than traded in one mix."""
    run_dir = Path(run_dir)
    sets = [answers, *more]
    digit_sets = [s for s in sets if s.digits]
    total = sum(len(s) for s in digit_sets)

    def loss(t: float) -> float:  # the mean over every answer of the sets of digits
        return sum(len(s) * s.loss(t) for s in digit_sets) / total

    temperature = temperature_for(loss)
    threshold = max(threshold_for(s.confidence(temperature), s.right) for s in digit_sets)
    for s in sets:
        if not s.digits:
            threshold = max(threshold, refusing_threshold(s.confidence(temperature)))
    before = np.concatenate([s.confidence(1.0) for s in sets])
    after = np.concatenate([s.confidence(temperature) for s in sets])
    right = np.concatenate([s.right for s in sets])
    result = {
        "kind": answers.kind,
        "temperature": temperature,
        "threshold": threshold,
        "threshold_rule": THRESHOLD_RULE + (NONDIGIT_RULE if len(digit_sets) < len(sets) else ""),
        "fitted_on": " and ".join(s.description for s in sets),
        "accuracy": float(answers.right.mean()),
        "ece_before": calibration_error(before, right),
        "ece_after": calibration_error(after, right),
        "nll_before": loss(1.0),
        "nll_after": loss(temperature),
    }
    for s in sets:
        result.update(_acceptance(s.confidence(temperature), s.right, threshold, f"{s.name}_"))
    plot_reliability(before, after, right, BINS, run_dir / runs.RELIABILITY, answers.kind)
    runs.write_json(run_dir / runs.CALIBRATION, result)
    runs.update_json(run_dir / runs.METRICS, calibration=result)
    return result


def _acceptance(confidence: np.ndarray, right: np.ndarray, threshold: float, prefix: str) -> dict:
    accepted = confidence >= threshold
    return {
        f"{prefix}coverage": float(accepted.mean()),
        f"{prefix}accepted_accuracy": float(right[accepted].mean()) if accepted.any() else float("nan"),
    }


def fit_numbers(
    run_dir: Path, features: np.ndarray, right: np.ndarray, names: tuple[str, ...], description: str
) -> dict:
    """The combined reader's rule for whole numbers (runs.NumberRule), fitted on validation numbers:
    `features` (n, len(names)), reading.number_features of each number's answer, and whether it is right.
    Its confidence is a logistic regression of rightness on the features (Platt's scaling of several
    scores: a temperature's role for the one score of a digit), and its threshold the one rule's
    (threshold_for) without the coverage floor (NUMBER_RULE). Written as "numbers" into calibration.json
    and into metrics.json's calibration; returns it."""
    # Late: scikit-learn takes about a second to import, and only this fit needs it.
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    x, right = np.asarray(features, np.float64), np.asarray(right, bool)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    if right.all() or not right.any():  # one class only: the share right, whatever the features say
        weights = np.zeros(x.shape[1])
        share = float(np.clip(right.mean(), 1e-3, 1 - 1e-3))
        bias = float(np.log(share / (1 - share)))
    else:  # fitted on standardised features, kept as weights of the features themselves
        model = LogisticRegression(C=NUMBER_C, max_iter=1000).fit((x - mean) / scale, right)
        weights = model.coef_[0] / scale
        bias = float(model.intercept_[0] - weights @ mean)
    confidence = 1.0 / (1.0 + np.exp(-(x @ weights + bias)))
    threshold = threshold_for(confidence, right, min_coverage=0.0)
    result = {
        "features": list(names),
        "weights": [float(w) for w in weights],
        "bias": bias,
        "threshold": threshold,
        "threshold_rule": NUMBER_RULE,
        "fitted_on": description,
        "accuracy": float(right.mean()),
        "auroc": float(roc_auc_score(right, confidence)) if 0 < right.sum() < len(right) else None,
        "ece": calibration_error(confidence, right),
        **_acceptance(confidence, right, threshold, "validation_"),
    }
    run_dir = Path(run_dir)
    calibration = runs.update_json(run_dir / runs.CALIBRATION, numbers=result)
    runs.update_json(run_dir / runs.METRICS, calibration=calibration)
    return result
