"""Marks that are not digits: the generator's families, outlier exposure in training, and the unsure
threshold chosen on a mix of digits and non-digits."""

import math

import numpy as np
import pytest

from digitlab import calibrate
from digitlab.data.synth import nondigits as nd
from digitlab.errors import DigitlabError


def test_the_families_are_seeded_disjoint_and_drawn_as_mnist_draws_a_digit():
    a, kinds = nd.nondigits("validation", 40, seed=3)
    b, _ = nd.nondigits("validation", 40, seed=3)
    assert a.shape == (40, 28, 28) and a.dtype == np.uint8 and np.array_equal(a, b)
    assert not np.array_equal(a, nd.nondigits("validation", 40, seed=4)[0])
    assert set(kinds) <= {"glyph", "scribble", "shape"}  # no digits given: nothing crossed out or overlapped
    fonts = [set(nd.FONTS[f]) for f in nd.FAMILIES]
    assert all(not (x & y) for i, x in enumerate(fonts) for y in fonts[i + 1 :])  # no font in two families
    shapes = [set(nd.SHAPES[f]) for f in nd.FAMILIES]
    assert all(not (x & y) for i, x in enumerate(shapes) for y in shapes[i + 1 :])
    assert not set(nd.CHARACTERS) & set("0123456789OoIlZSB")  # digits and their look-alikes are never drawn
    for image in a:  # ink in a 20 px box around the centre, bright on black
        rows, cols = np.flatnonzero(image.any(1)), np.flatnonzero(image.any(0))
        assert 10 <= max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 <= 22
        assert image[0].max() == image[-1].max() == 0 and image.max() > 200
    with pytest.raises(DigitlabError, match="family"):
        nd.nondigits("nope", 1)


def test_crossed_out_and_overlapped_digits_need_digits():
    digits = np.zeros((5, 28, 28), np.uint8)
    digits[:, 6:22, 12:16] = 255
    _, kinds = nd.nondigits("train", 300, seed=0, digits=digits)
    assert {"crossed", "overlapped", "glyph"} <= set(kinds)


def test_the_outlier_loss_teaches_non_digits_the_uniform_distribution():
    from digitlab.training.tasks import OUTLIER, DigitAccuracy, SmoothedCrossentropy

    probs = np.array([[0.91] + [0.01] * 9, [0.1] * 10, [0.91] + [0.01] * 9], np.float32)
    labels = np.array([0, OUTLIER, OUTLIER])
    loss = np.asarray(SmoothedCrossentropy(0.0, 0.5, reduction=None)(labels, probs))
    assert loss[0] == pytest.approx(-math.log(0.91), rel=1e-4)
    assert loss[1] == pytest.approx(0.5 * math.log(10), rel=1e-4)  # uniform: the least it can be
    assert loss[2] > loss[1]  # a confident answer for a non-digit costs more
    accuracy = DigitAccuracy()
    accuracy.update_state(np.array([0, OUTLIER, 3]), probs)
    assert float(accuracy.result()) == pytest.approx(0.5)  # one of the two digits; the non-digit left out


def test_the_threshold_on_a_mix_keeps_confident_non_digits_out(tmp_path, monkeypatch):
    monkeypatch.setattr(calibrate, "temperature_for", lambda loss: 1.0)  # the threshold rule alone
    rng = np.random.default_rng(0)
    n = 2000

    def confident(conf, guess):
        probs = np.zeros((len(conf), 10))
        probs[np.arange(len(conf)), guess] = conf
        return probs + (1 - probs.sum(1, keepdims=True)) / 10

    guess = rng.integers(0, 10, n)
    digit_probs = confident(rng.uniform(0.55, 1.0, n), guess)  # every digit right
    mark_probs = confident(rng.uniform(0.5, 0.58, 200), np.zeros(200, int))
    digits = calibrate.digit_answers(digit_probs, guess)
    alone = calibrate.fit_calibration(tmp_path / "alone", digits)
    mixed = calibrate.fit_calibration(tmp_path / "mixed", digits, calibrate.nondigit_answers(mark_probs, "200 marks"))
    assert mixed["threshold"] > alone["threshold"]
    accepted_digits = (digit_probs.max(1) >= mixed["threshold"]).sum()
    accepted_marks = (mark_probs.max(1) >= mixed["threshold"]).sum()
    assert accepted_digits / (accepted_digits + accepted_marks) >= calibrate.TARGET_ACCURACY
    assert accepted_digits >= math.ceil(calibrate.MIN_COVERAGE * n)
    assert mixed["nondigit_coverage"] == pytest.approx(accepted_marks / 200)
    assert mixed["validation_coverage"] == pytest.approx(accepted_digits / n)
    assert "200 marks" in mixed["fitted_on"]


def test_a_run_trained_with_non_digits_records_them_and_calibrates_on_a_mix(tmp_path, synthetic_dir):
    import json

    from digitlab.config import ModelConfig, TrainConfig
    from digitlab.training import train

    cfg = TrainConfig(epochs=2, batch_size=32, dataset="synthetic", outliers=0.5, calibrate_nondigits=60)
    metrics = train(
        ModelConfig(architecture="mlp", units=(16,)), cfg, tmp_path / "run", data_dir=synthetic_dir, verbose=0
    )
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["data"]["nondigits"] == 120 and config["data"]["train"] == 240
    assert 0.0 <= metrics["train"]["accuracy"] <= 1.0  # of the digits alone
    calibration = metrics["calibration"]
    assert "60 non-digit marks" in calibration["fitted_on"] and 0.0 <= calibration["nondigit_coverage"] <= 1.0
    from digitlab.config import resolve_configs

    with pytest.raises(DigitlabError, match="--outliers"):
        resolve_configs("numbers", outliers=0.1)


def test_a_model_that_learnt_non_digits_says_not_a_digit_when_no_class_stands_out():
    from digitlab.predict import NOT_A_DIGIT_REASON, Predictor, classify

    even = np.full(10, 0.1, np.float32)
    doubt = np.full(10, 0.02, np.float32)
    doubt[[4, 9]] = 0.43, 0.41
    probs = np.stack([even, doubt])
    names = tuple(str(i) for i in range(10))
    learnt = Predictor(lambda x: probs[: len(x)], (28, 28), names, threshold=0.6, nondigits=True)
    rows = classify(learnt, np.zeros((2, 28, 28), np.uint8), [None, None])
    assert rows[0]["reason"] == NOT_A_DIGIT_REASON and rows[0]["unsure"] and rows[0]["digit"] is None
    # A doubt between a 4 and a 9 stays a doubt, said as such.
    assert rows[1]["reason"] == "unsure: 4 or 9 (confidence 0.430, below the threshold 0.600)"
    plain = Predictor(lambda x: probs[: len(x)], (28, 28), names, threshold=0.6)
    assert "below the threshold" in classify(plain, np.zeros((1, 28, 28), np.uint8), [None])[0]["reason"]
