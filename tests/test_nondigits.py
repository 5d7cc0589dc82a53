"""Marks that are not digits: the generator's families, the two ways a model learns them (outlier exposure,
a "not a digit" output), and the unsure threshold chosen on validation digits and non-digits."""

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


def test_marks_along_one_line_are_drawn_again_and_the_cache_gives_the_same_marks(tmp_path, monkeypatch):
    line, disc = np.zeros((28, 28), np.uint8), np.zeros((28, 28), np.uint8)
    line[4:24, 13:15] = 255  # a 1
    disc[np.add.outer((np.arange(28) - 13.5) ** 2, (np.arange(28) - 13.5) ** 2) < 64] = 255
    assert nd.elongation(line) > nd.LINE_ELONGATION > nd.elongation(disc) == pytest.approx(1.0, abs=0.05)
    marks, kinds = nd.nondigits("test", 60, seed=2)
    assert max(nd.elongation(m) for m in marks) <= nd.LINE_ELONGATION
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    drawn = nd.nondigits("test", 60, seed=2, cache=True)
    assert np.array_equal(drawn[0], marks) and drawn[1] == kinds and len(list(tmp_path.rglob("*.npz"))) == 1
    monkeypatch.setattr(nd, "_nondigits", None)  # a second call draws nothing: it reads the cache
    assert np.array_equal(nd.nondigits("test", 60, seed=2, cache=True)[0], marks)


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


def test_the_non_digit_output_is_what_the_digits_leave_and_temperature_keeps_it():
    from digitlab.metrics import temper
    from digitlab.training.tasks import OUTLIER, SmoothedCrossentropy

    probs = np.array([[0.8] + [0.01] * 9, [0.02] * 10, [0.5, 0.45] + [0.0] * 8], np.float32)  # rests .11 .8 .05
    loss = np.asarray(
        SmoothedCrossentropy(0.0, 2.0, nondigit_class=True, reduction=None)(np.array([0, OUTLIER, OUTLIER]), probs)
    )
    assert loss[0] == pytest.approx(-math.log(0.8), rel=1e-4)
    assert loss[1] == pytest.approx(-2.0 * math.log(0.8), rel=1e-3) and loss[2] > loss[1]  # weighted, to the rest
    eleven = np.c_[probs, 1 - probs.sum(1)]  # the same answers as an eleven-class softmax, scaled by T = 0.5
    expected = eleven**2 / (eleven**2).sum(1, keepdims=True)
    assert temper(probs, 0.5) == pytest.approx(expected[:, :10], abs=1e-6)
    ten = eleven[:, :10] / eleven[:, :10].sum(1, keepdims=True)  # rows that sum to 1: scaled as ever
    assert temper(ten, 0.5) == pytest.approx(ten**2 / (ten**2).sum(1, keepdims=True), abs=1e-6)


def test_the_threshold_refuses_the_share_of_non_digits_asked_and_keeps_digits_right(tmp_path, monkeypatch):
    # A constructed mix: digits, all right but the least sure, and non-digits whose confidences overlap
    # theirs. The threshold is the higher of the digits' rule and the non-digits' refusal; each kind of
    # error is held to its own bound.
    monkeypatch.setattr(calibrate, "temperature_for", lambda loss: 1.0)  # the threshold rule alone
    rng = np.random.default_rng(0)
    n, m = 2000, 500

    def confident(conf, guess):
        probs = np.zeros((len(conf), 10))
        probs[np.arange(len(conf)), guess] = conf
        return probs + (1 - probs.sum(1, keepdims=True)) / 10

    guess, conf = rng.integers(0, 10, n), rng.uniform(0.3, 1.0, n)
    digit_probs = confident(conf, guess)
    y = np.where(conf < 0.32, (guess + 1) % 10, guess)  # the least sure digits are wrong
    mark_probs = confident(rng.uniform(0.3, 0.8, m), np.zeros(m, int))
    digits = calibrate.digit_answers(digit_probs, y)
    alone = calibrate.fit_calibration(tmp_path / "alone", digits)
    mixed = calibrate.fit_calibration(tmp_path / "mixed", digits, calibrate.nondigit_answers(mark_probs, "500 marks"))
    marks = mark_probs.max(1)
    assert mixed["threshold"] > alone["threshold"]
    assert (marks >= mixed["threshold"]).sum() == math.floor((1 - calibrate.NONDIGIT_REFUSAL) * m)  # no fewer
    assert mixed["nondigit_coverage"] <= 1 - calibrate.NONDIGIT_REFUSAL
    assert mixed["validation_accepted_accuracy"] >= calibrate.TARGET_ACCURACY
    assert "500 marks" in mixed["fitted_on"] and "non-digits refused" in mixed["threshold_rule"]
    # Non-digits that the digits' own threshold already refuses change nothing.
    easy = calibrate.nondigit_answers(confident(rng.uniform(0.1, 0.3, m), np.zeros(m, int)), "easy marks")
    assert calibrate.fit_calibration(tmp_path / "easy", digits, easy)["threshold"] == alone["threshold"]


def test_a_run_trained_with_a_non_digit_output_records_it_and_answers_ten_digits(tmp_path, synthetic_dir):
    import json

    from digitlab.config import ModelConfig, TrainConfig, resolve_configs
    from digitlab.predict import load_predictor
    from digitlab.training import train

    cfg = TrainConfig(
        epochs=2, batch_size=32, dataset="synthetic", outliers=0.5, outlier_loss="class", calibrate_nondigits=60
    )
    model = ModelConfig(architecture="mlp", units=(16,), nondigit=True)
    metrics = train(model, cfg, tmp_path / "run", data_dir=synthetic_dir, verbose=0)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["data"]["nondigits"] == 120 and config["data"]["train"] == 240 and config["model"]["nondigit"]
    assert 0.0 <= metrics["train"]["accuracy"] <= 1.0  # of the digits alone
    calibration = metrics["calibration"]
    assert "60 non-digit marks" in calibration["fitted_on"] and 0.0 <= calibration["nondigit_coverage"] <= 1.0
    predictor = load_predictor(tmp_path / "run")
    raw = predictor.raw_proba(nd.nondigits("test", 20, seed=1)[0])
    assert raw.shape == (20, 10) and (raw.sum(1) < 1 - 1e-3).all()  # ten digits; the rest is "not a digit"
    assert predictor.class_names == tuple(str(i) for i in range(10))
    with pytest.raises(DigitlabError, match="model.nondigit"):  # the output and the training go together
        train(ModelConfig(architecture="mlp", units=(16,)), cfg, tmp_path / "other", data_dir=synthetic_dir)
    assert resolve_configs("fast")[0].nondigit and not resolve_configs("fast", outliers=0.0)[0].nondigit
    assert not resolve_configs("tutorial")[0].nondigit
    assert resolve_configs("numbers")[0].nondigit and not resolve_configs("numbers", outliers=0.0)[0].nondigit
    with pytest.raises(DigitlabError, match="outlier_loss"):  # a line model's marks are a symbol of their own
        resolve_configs("numbers", outliers=0.1, outlier_loss="uniform")
    with pytest.raises(DigitlabError, match="--calibrate-nondigits"):  # its validation lines carry its marks
        resolve_configs("numbers", calibrate_nondigits=100)


def test_a_run_trained_before_the_non_digit_output_loads_and_answers_as_before(tmp_path, synthetic_cnn_run):
    import json
    import shutil

    from digitlab.predict import load_predictor

    run = shutil.copytree(synthetic_cnn_run, tmp_path / "old")
    config = json.loads((run / "config.json").read_text())
    config["model"].pop("nondigit")
    config["train"].pop("outlier_loss")
    (run / "config.json").write_text(json.dumps(config))
    digits = np.random.default_rng(0).integers(0, 256, (8, 28, 28)).astype(np.uint8)
    old, now = load_predictor(run), load_predictor(synthetic_cnn_run)
    assert not old.nondigits and np.array_equal(old.predict_proba(digits), now.predict_proba(digits))
    assert np.allclose(old.raw_proba(digits).sum(1), 1.0, atol=1e-5)


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


def test_line_marks_are_seeded_of_their_family_and_never_upright():
    from digitlab.data.synth.nondigits import LINE_KINDS, line_marks

    a, kinds = line_marks("validation", 60, seed=2)
    b, _ = line_marks("validation", 60, seed=2)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (60, 28, 28) and a.dtype == np.uint8 and (a.max((1, 2)) > 0).all()
    assert {"dash", "stroke"} <= set(kinds) <= {*LINE_KINDS, "glyph", "scribble", "shape"}  # no digits in them
    other, _ = line_marks("test", 60, seed=2)
    assert not any((m == a).all(1).all(1).any() for m in other)  # another family, other marks
    for image, kind in zip(a, kinds):
        if kind in ("dash", "stroke"):
            height, width = np.ptp(np.flatnonzero(image.any(1))) + 1, np.ptp(np.flatnonzero(image.any(0))) + 1
            assert height <= 1.8 * width  # at least 30 degrees off the upright (tan 60 = 1.73): not a 1
    with pytest.raises(DigitlabError, match="family"):
        line_marks("other", 1)
