"""The combined reader's rule for whole numbers: its features, its fit on validation numbers
(calibrate.fit_numbers), its checks in calibration.json, how it judges a reading, and its fit at the end of
a line run's training (training.calibrate_numbers)."""

from __future__ import annotations

import functools
import json
import math
import shutil

import numpy as np
import pytest

from digitlab import runs
from digitlab.errors import RunError


def frame_probs(classes, sure=0.9) -> np.ndarray:
    """(frames, 11) probabilities: `sure` on each frame's class (10 is the blank), the rest spread evenly."""
    p = np.full((len(classes), 11), (1 - sure) / 10, np.float32)
    p[np.arange(len(classes)), classes] = sure
    return p


def reading_of(text, confidences, unsure=False):
    from digitlab.predict.results import ReadDigit, Reading

    digits = tuple(ReadDigit(int(c), c, v, (0, 0, 1, 1), 0, False, None) for c, v in zip(text, confidences))
    return Reading(
        text, (text,), 0.5, unsure, "why" if unsure else None, digits, np.zeros((0, 28, 28), np.uint8), (9, 9)
    )


def candidates_of(probs, *found):
    """reading.Candidates from (reading, "line" or "segment") pairs, each scored by `probs` as candidates does."""
    from digitlab.predict.ctc import log_likelihood
    from digitlab.predict.reading import Candidates

    scored = tuple((r, how, (log_likelihood(probs, [int(c) for c in r.text]),)) for r, how in found)
    line = next(r for r, how in found if how == "line")
    segment = next(r for r, how in found if how == "segment")
    return Candidates(line, segment, scored)


def a_mix(n=4000, seed=0):
    """Validation numbers as fit_numbers sees them: 7 % wrong; the right ones mostly agreed on and less
    doubted, every feature a noisy hint of its own."""
    from digitlab.predict.reading import NUMBER_FEATURES

    rng = np.random.default_rng(seed)
    right = rng.random(n) < 0.93
    agree = (rng.random(n) < np.where(right, 0.95, 0.35)).astype(float)
    line_doubt = rng.normal(np.where(right, -5.0, -2.5), 1.5)
    segment_doubt = rng.normal(np.where(right, -4.0, -1.5), 1.5)
    ctc = rng.normal(np.where(right, -2.0, -4.0), 2.0)
    margin = np.where(agree > 0, 30.0, rng.normal(np.where(right, 3.0, 0.0), 3.0))
    x = np.stack([agree, line_doubt, segment_doubt, ctc, margin], axis=1)
    assert x.shape[1] == len(NUMBER_FEATURES)
    return x, right


def calibrated_dir(tmp_path):
    run = tmp_path / "run"
    run.mkdir(parents=True)
    runs.write_json(run / runs.CALIBRATION, {"kind": "string", "temperature": 0.5, "threshold": 0.6})
    return run


def test_the_rule_fitted_on_a_constructed_mix_ranks_better_than_any_one_feature_and_meets_its_target(tmp_path):
    from sklearn.metrics import roc_auc_score

    from digitlab.calibrate import TARGET_ACCURACY, fit_numbers
    from digitlab.predict.reading import NUMBER_FEATURES

    run = calibrated_dir(tmp_path)
    x, right = a_mix()
    fitted = fit_numbers(run, x, right, NUMBER_FEATURES, "a constructed mix")
    saved = runs.read_json(run / runs.CALIBRATION)
    assert saved["temperature"] == 0.5 and saved["threshold"] == 0.6  # the line model's own stays
    assert saved["numbers"] == fitted and runs.read_json(run / runs.METRICS)["calibration"]["numbers"] == fitted
    rule = runs.Calibration.read(run / runs.CALIBRATION).numbers
    assert rule.features == NUMBER_FEATURES and rule.threshold == fitted["threshold"]
    w = dict(zip(NUMBER_FEATURES, rule.weights))
    assert w["line_doubt"] < 0 and w["segment_doubt"] < 0  # the hints' directions (agree is in margin too)
    confidence = np.array([rule.confidence(row) for row in x])
    single = max(max(roc_auc_score(right, v), roc_auc_score(right, -v)) for v in x.T)
    assert fitted["auroc"] == pytest.approx(roc_auc_score(right, confidence)) and fitted["auroc"] > single + 0.01
    accepted = confidence >= rule.threshold
    assert right[accepted].mean() >= TARGET_ACCURACY and fitted["validation_accepted_accuracy"] >= TARGET_ACCURACY
    assert accepted.mean() == pytest.approx(fitted["validation_coverage"]) and accepted.mean() > 0.5
    # The lowest such threshold: one number more and the accepted fall below the target.
    below = np.sort(confidence[~accepted])[-1]
    assert right[confidence >= below].mean() < TARGET_ACCURACY
    assert abs(fitted["ece"]) < 0.05  # a logistic fit is calibrated on what it was fitted to


def test_answers_all_wrong_accept_none_and_all_right_accept_all(tmp_path):
    from digitlab.calibrate import fit_numbers, threshold_for
    from digitlab.predict.reading import NUMBER_FEATURES

    x, _ = a_mix(200)
    wrong = fit_numbers(calibrated_dir(tmp_path / "a"), x, np.zeros(200, bool), NUMBER_FEATURES, "all wrong")
    assert wrong["validation_coverage"] == 0.0 and wrong["weights"] == [0.0] * len(NUMBER_FEATURES)
    right = fit_numbers(calibrated_dir(tmp_path / "b"), x, np.ones(200, bool), NUMBER_FEATURES, "all right")
    assert right["validation_coverage"] == 1.0
    # Without the coverage floor, a set that never reaches the target accepts nothing; with it, its floor.
    confidence, hits = np.linspace(0.1, 0.9, 10), np.array([True, False] * 5)  # the most confident wrong
    assert (confidence >= threshold_for(confidence, hits, min_coverage=0.0)).sum() == 0
    assert (confidence >= threshold_for(confidence, hits)).sum() == 9


def test_number_features_of_agreeing_and_disagreeing_readers():
    from digitlab.predict.ctc import log_likelihood
    from digitlab.predict.reading import CTC_FLOOR, DOUBT_FLOOR, MARGIN_CAP, number_features

    probs = frame_probs([10, 4, 10, 7, 10])
    line, segment = reading_of("47", (0.9, 0.8)), reading_of("47", (0.99, 0.97))
    agree = number_features(candidates_of(probs, (line, "line"), (segment, "segment")), segment)
    assert agree == pytest.approx(
        [1.0, math.log(DOUBT_FLOOR + 0.3), math.log(DOUBT_FLOOR + 0.04), log_likelihood(probs, [4, 7]), MARGIN_CAP]
    )
    other = reading_of("41", (0.99, 0.6))
    c = candidates_of(probs, (line, "line"), (other, "segment"))
    f = number_features(c, other)
    assert f[0] == 0.0 and f[3] == pytest.approx(log_likelihood(probs, [4, 1]))
    assert f[4] == pytest.approx(log_likelihood(probs, [4, 1]) - log_likelihood(probs, [4, 7]))
    assert number_features(c, reading_of("4", (0.9,)))[3] == CTC_FLOOR  # a text no candidate scored
    empty = reading_of("", ())
    assert number_features(candidates_of(probs, (empty, "line"), (other, "segment")), other)[1] == 0.0


def a_rule(threshold, weights=(4.0, 0.0, 0.0, 0.0, 0.0), bias=-2.0):
    from digitlab.predict.reading import NUMBER_FEATURES

    return runs.NumberRule(NUMBER_FEATURES, weights, bias, threshold)


def test_the_rule_gives_the_confidence_and_decides_unsure_in_place_of_the_readers():
    from digitlab.predict.count import DigitCount
    from digitlab.predict.reading import combine

    probs = frame_probs([10, 4, 10, 7, 10])
    same = candidates_of(probs, (reading_of("47", (0.9, 0.9)), "line"), (reading_of("47", (0.9, 0.9)), "segment"))
    sure = 1 / (1 + math.exp(-2.0))  # agree: 4 - 2
    chosen = combine(same, rule=a_rule(0.5))
    assert (chosen.text, chosen.unsure, chosen.reason) == ("47", False, None)
    assert chosen.confidence == pytest.approx(sure)
    doubted = combine(same, rule=a_rule(0.9))
    assert doubted.unsure and doubted.reason == f"confidence {sure:.3f} is below the threshold 0.900"
    differ = candidates_of(probs, (reading_of("47", (0.9, 0.9)), "line"), (reading_of("41", (0.9, 0.9)), "segment"))
    assert combine(differ).unsure  # the readers' own rule: they disagree
    low = combine(differ, rule=a_rule(0.5))
    assert low.unsure and low.confidence == pytest.approx(1 - sure)
    assert low.text == "41"  # the sure segmentation's, by its bonus
    assert low.reason == f"the two readers disagree: 41 or 47; confidence {1 - sure:.3f} is below the threshold 0.500"
    accepted = combine(differ, rule=a_rule(0.1))  # a rule that trusts the choice between them
    assert (accepted.text, accepted.unsure, accepted.reason) == ("41", False, None)
    # With a count asked (which the rule was not fitted with), the readers' doubts stand as well.
    assert combine(differ, digits=DigitCount(2, 2), rule=a_rule(0.1)).unsure
    stale = runs.NumberRule(("agree",), (1.0,), 0.0, 0.5)
    with pytest.raises(RunError, match=r"numbers.features is \['agree'\]"):
        combine(same, rule=stale)


@pytest.mark.parametrize(
    "numbers, field",
    [
        ({"features": ["agree"], "weights": [1.0, 2.0], "bias": 0.0, "threshold": 0.5}, "numbers.weights"),
        ({"features": "agree", "weights": [1.0], "bias": 0.0, "threshold": 0.5}, "numbers.features"),
        ({"features": ["agree"], "weights": [1.0], "bias": "x", "threshold": 0.5}, "numbers.bias"),
        ({"features": ["agree"], "weights": [1.0], "bias": 0.0, "threshold": 1.5}, "numbers.threshold"),
        ([1, 2], "numbers"),
    ],
)
def test_a_malformed_rule_in_calibration_json_names_its_field(tmp_path, numbers, field):
    path = tmp_path / runs.CALIBRATION
    path.write_text(json.dumps({"temperature": 1.0, "threshold": 0.5, "numbers": numbers}))
    with pytest.raises(RunError, match=f"{path}: {field}"):
        runs.Calibration.read(path)


def test_the_page_model_of_a_line_run_carries_its_rule(tiny_line_run, tmp_path):
    from digitlab import web
    from digitlab.predict import reading

    run = shutil.copytree(tiny_line_run, tmp_path / "run")
    assert web.page_model(run)["web"]["numbers"] is None
    rule = {"features": list(reading.NUMBER_FEATURES), "weights": [1.0, -1.0, -1.0, 0.1, 0.1], "bias": 0.5}
    runs.update_json(run / runs.CALIBRATION, numbers={**rule, "threshold": 0.7, "fitted_on": "made"})
    model = web.page_model(run)["web"]
    assert json.loads(json.dumps(model["numbers"])) == {**rule, "threshold": 0.7}  # as model.json gives it
    assert model["line"]["number"] == {
        "features": list(reading.NUMBER_FEATURES),
        "doubt_floor": reading.DOUBT_FLOOR,
        "ctc_floor": reading.CTC_FLOOR,
        "margin_cap": reading.MARGIN_CAP,
    }


def test_a_line_run_with_a_digit_model_gets_its_rule_for_numbers(
    line_digit_run, tiny_line_run, synthetic_dir, tmp_path
):
    from fastapi.testclient import TestClient
    from PIL import Image

    from digitlab import training
    from digitlab.predict import load_predictor
    from digitlab.predict.reading import NUMBER_FEATURES, read, read_files
    from digitlab.serve import create_app

    assert training.calibrate_numbers(shutil.copytree(tiny_line_run, tmp_path / "alone"), synthetic_dir) is None
    run = shutil.copytree(line_digit_run, tmp_path / "run")
    metrics = training.calibrate_numbers(run, synthetic_dir, per_subset=1)
    fitted = runs.read_json(run / runs.CALIBRATION)["numbers"]
    assert metrics["calibration"]["numbers"] == fitted and fitted["features"] == list(NUMBER_FEATURES)
    assert fitted["fitted_on"].startswith("7 numbers composed from the validation split")
    predictor = load_predictor(run)
    assert predictor.numbers is not None
    image = np.full((40, 120), 255, np.uint8)
    image[10:30, 20:24] = 0
    image[10:30, 60:64] = 0
    r = read(predictor, image)
    assert r.unsure == (r.confidence < fitted["threshold"])
    # The same confidence and unsure in the CLI's rows and through the API.
    path = tmp_path / "number.png"
    Image.fromarray(image).save(path)
    (row,) = read_files(predictor, [path])
    assert (row["confidence"], row["unsure"], row["reason"]) == (r.confidence, r.unsure, r.reason)
    answer = TestClient(create_app(run, "keras")).post("/api/read", files={"file": ("n.png", path.read_bytes())})
    assert answer.status_code == 200
    assert answer.json()["confidence"] == pytest.approx(r.confidence) and answer.json()["unsure"] == r.unsure


def test_resume_fits_the_rule_a_killed_run_is_missing(line_digit_run, synthetic_dir, tmp_path, monkeypatch):
    from digitlab import training

    run = shutil.copytree(line_digit_run, tmp_path / "run")
    config = runs.read_json(run / runs.CONFIG)
    config["train"]["digit_model"] = "robust"  # as --preset numbers leaves it; its digits/ is there already
    runs.write_json(run / runs.CONFIG, config)
    monkeypatch.setattr(training, "calibrate_numbers", functools.partial(training.calibrate_numbers, per_subset=1))
    metrics = training.resume(run, data_dir=synthetic_dir, verbose=0)
    assert "numbers" in metrics["calibration"] and "numbers" in runs.read_json(run / runs.CALIBRATION)
    with pytest.raises(RunError, match="nothing to resume"):
        training.resume(run, data_dir=synthetic_dir, verbose=0)
