"""Calibration, which decides when the product answers "unsure": the temperature fit, the unsure threshold,
the expected calibration error and the negative log-likelihood, each checked against a value known
independently of the implementation (a known scale factor, hand-computed figures)."""

import json
import math

import numpy as np
import pytest

from digitlab import calibrate

CLASSES = 10
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def sample_labels(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One label per row drawn from that row's distribution."""
    u = rng.uniform(size=(len(probs), 1))
    return np.minimum((probs.cumsum(axis=1) < u).sum(axis=1), probs.shape[1] - 1)


def miscalibrated(factor: float, n: int = 20_000, seed: int = 0):
    """Labels drawn from softmax(true_logits), probabilities given as softmax(true_logits * factor):
    the temperature that undoes the distortion is `factor`."""
    rng = np.random.default_rng(seed)
    true_logits = rng.normal(0.0, 2.0, size=(n, CLASSES))
    y = sample_labels(softmax(true_logits), rng)
    return softmax(true_logits * factor), y


def with_confidence(confidence, correct, seed: int = 0):
    """Probability rows whose top class has the given confidence (the rest spread evenly), and labels that
    make that top class right where `correct` is true and wrong elsewhere."""
    confidence, correct = np.asarray(confidence, float), np.asarray(correct, bool)
    rng = np.random.default_rng(seed)
    predicted = rng.integers(0, CLASSES, size=len(confidence))
    probs = np.repeat(((1.0 - confidence) / (CLASSES - 1))[:, None], CLASSES, axis=1)
    probs[np.arange(len(confidence)), predicted] = confidence
    y = np.where(correct, predicted, (predicted + 1) % CLASSES)
    return probs, y


# --- temperature -----------------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [2.5, 0.5])  # overconfident, underconfident
def test_fitted_temperature_recovers_a_known_scale_factor(factor):
    probs, y = miscalibrated(factor)
    assert calibrate.fit_temperature(probs, y) == pytest.approx(factor, rel=0.03)


def test_calibrated_probabilities_are_already_calibrated():
    probs, y = miscalibrated(1.0)
    assert calibrate.fit_temperature(probs, y) == pytest.approx(1.0, rel=0.03)


# --- the unsure threshold --------------------------------------------------------------------------


def accepted_by(threshold, probs, y):
    accepted = probs.max(axis=1) >= threshold
    return int(accepted.sum()), float((probs.argmax(axis=1) == y)[accepted].mean())


def test_threshold_accepts_as_many_as_the_target_accuracy_allows():
    # 960 right answers at confidence 0.9..1, 40 wrong ones at 0.3..0.6 (all confidences distinct): the
    # most confident 960 + k are 960 / (960 + k) right, at least 99.5 % for k <= 4, so 964 are accepted.
    rng = np.random.default_rng(1)
    confidence = np.concatenate([rng.uniform(0.9, 1.0, 960), rng.uniform(0.3, 0.6, 40)])
    probs, y = with_confidence(confidence, np.arange(1000) < 960)
    threshold = calibrate.choose_threshold(probs, y)
    count, accuracy = accepted_by(threshold, probs, y)
    assert count == 964
    assert accuracy == pytest.approx(960 / 964) and accuracy >= calibrate.TARGET_ACCURACY
    assert threshold == pytest.approx(np.sort(confidence[960:])[-4])  # the fourth most confident wrong answer


def test_threshold_on_a_hard_set_is_capped_at_the_minimum_coverage():
    # 70 % right, with no relation between confidence and being right: no large confident subset reaches
    # 99.5 %, so the cap decides: ceil(0.9 * 1001) = 901 accepted.
    n = 1001
    rng = np.random.default_rng(2)
    probs, y = with_confidence(rng.uniform(0.2, 1.0, n), rng.uniform(size=n) < 0.7)
    threshold = calibrate.choose_threshold(probs, y)
    count, accuracy = accepted_by(threshold, probs, y)
    assert count == math.ceil(calibrate.MIN_COVERAGE * n) == 901
    assert accuracy < calibrate.TARGET_ACCURACY


@pytest.mark.parametrize("factor, seed", [(1.0, 3), (2.5, 4), (0.5, 5), (0.2, 6)])
def test_threshold_rule_holds_on_the_data_it_was_chosen_on(factor, seed):
    probs, y = miscalibrated(factor, n=3000, seed=seed)
    threshold = calibrate.choose_threshold(probs, y)
    count, accuracy = accepted_by(threshold, probs, y)
    n, floor = len(y), math.ceil(calibrate.MIN_COVERAGE * len(y))
    assert count >= floor  # at most 10 % unsure
    assert accuracy >= calibrate.TARGET_ACCURACY or count == floor  # the target, unless the cap decided
    # ...and it is the lowest such threshold: accepting any more of the most confident falls below the target
    order = np.argsort(-probs.max(axis=1))
    right = (probs.argmax(axis=1) == y)[order]
    top_k_accuracy = np.cumsum(right) / np.arange(1, n + 1)
    assert (top_k_accuracy[count:] < calibrate.TARGET_ACCURACY).all()


# --- expected calibration error and negative log-likelihood ------------------------------------------


def test_ece_of_a_calibrated_set_is_zero():
    probs, y = with_confidence(np.full(100, 0.8), np.arange(100) < 80)  # 80 % right at confidence 0.8
    assert calibrate.expected_calibration_error(probs, y) == pytest.approx(0.0, abs=1e-9)


def test_ece_of_an_overconfident_set():
    probs, y = with_confidence(np.full(100, 0.9), np.arange(100) < 60)  # 60 % right at confidence 0.9
    assert calibrate.expected_calibration_error(probs, y) == pytest.approx(0.3)


def test_ece_weights_each_bin_by_its_size():
    # 40 at 0.95, all right: |1.00 - 0.95| = 0.05; 60 at 0.58, half right: |0.50 - 0.58| = 0.08.
    # ECE = 0.4 * 0.05 + 0.6 * 0.08 = 0.068 (one bin over all of them would give |0.70 - 0.728| = 0.028).
    confidence = np.r_[np.full(40, 0.95), np.full(60, 0.58)]
    correct = np.r_[np.ones(40, bool), np.arange(60) < 30]
    probs, y = with_confidence(confidence, correct)
    assert calibrate.expected_calibration_error(probs, y) == pytest.approx(0.068)
    assert calibrate.expected_calibration_error(probs, y, bins=1) == pytest.approx(0.028)


def test_nll_of_known_cases():
    half = np.array([[0.5, 0.5, 0.0], [0.25, 0.25, 0.5]])
    assert calibrate.nll(half, np.array([1, 2])) == pytest.approx(math.log(2))
    certain = np.eye(3)
    assert calibrate.nll(certain, np.array([0, 1, 2])) == pytest.approx(0.0, abs=1e-9)
    assert calibrate.nll(np.array([[0.1, 0.9]]), np.array([0])) == pytest.approx(math.log(10))
    assert np.isfinite(calibrate.nll(certain, np.array([1, 2, 0])))  # a zero probability is clipped, not inf


# --- the whole fit, as training runs it -----------------------------------------------------------


def test_fit_calibration_writes_its_files_and_improves_an_overconfident_model(tmp_path):
    probs, y = miscalibrated(2.5, n=5000, seed=7)
    result = calibrate.fit_calibration(tmp_path, calibrate.digit_answers(probs, y))
    assert {"temperature", "threshold", "ece_before", "ece_after"} <= set(result)
    assert json.loads((tmp_path / "calibration.json").read_text()) == pytest.approx(result)
    assert (tmp_path / "reliability.png").read_bytes()[:8] == PNG_MAGIC
    assert json.loads((tmp_path / "metrics.json").read_text())["calibration"]["temperature"] == result["temperature"]
    assert result["temperature"] == pytest.approx(2.5, rel=0.05)
    assert result["ece_after"] < result["ece_before"] / 2
    # the threshold was chosen on the temperature-scaled probabilities, by the rule tested above
    assert result["validation_coverage"] >= calibrate.MIN_COVERAGE
    calibrated = softmax(np.log(probs) / result["temperature"])
    count, accuracy = accepted_by(result["threshold"], calibrated, y)
    assert abs(count / len(y) - result["validation_coverage"]) <= 2 / len(y)  # float32 rounding at the edge
    assert accuracy == pytest.approx(result["validation_accepted_accuracy"], abs=1e-3)


def test_wild_digits_raise_the_threshold_to_what_they_need(tmp_path, monkeypatch):
    # Clean validation digits are right; people's images are sometimes wrong when unsure: the threshold
    # is the higher of the two each set asks for, and both acceptances are recorded.
    from digitlab.calibrate import fit_calibration

    monkeypatch.setattr(calibrate, "temperature_for", lambda loss: 1.0)  # the threshold rule alone

    def probabilities(conf, guess):
        p = np.full((len(conf), 10), 0.0)
        p[np.arange(len(conf)), guess] = conf
        return p + (1 - p.sum(1, keepdims=True)) / 10

    rng = np.random.default_rng(0)
    y, yw = rng.integers(0, 10, 2000), rng.integers(0, 10, 1000)
    clean = probabilities(rng.uniform(0.3, 1.0, 2000), y)
    conf = rng.uniform(0.3, 1.0, 1000)
    wild = probabilities(conf, np.where(conf < 0.35, (yw + 1) % 10, yw))  # the least sure are wrong
    alone = fit_calibration(tmp_path, calibrate.digit_answers(clean, y))
    both = fit_calibration(
        tmp_path, calibrate.digit_answers(clean, y), calibrate.digit_answers(wild, yw, "1000 wild digits", name="wild")
    )
    assert both["threshold"] > alone["threshold"]
    assert both["wild_accepted_accuracy"] >= 0.995 and "1000 wild digits" in both["fitted_on"]
    assert both["validation_coverage"] > 0.9
