"""The line model: its shape, CTC decoding and loss, a tiny training run's files, reading with it."""

import dataclasses
import json

import numpy as np
import pytest

from digitlab.config import PRESETS, ModelConfig, TrainConfig, resolve_configs
from digitlab.errors import DigitlabError
from digitlab.metrics import temper
from digitlab.predict.ctc import greedy_decode, texts

BLANK = 10
NAMES = tuple(str(i) for i in range(10))


def frames_of(classes, sure=0.9, classes_count=11) -> np.ndarray:
    """(1, len(classes), 11) probabilities: `sure` on each frame's class, the rest spread evenly."""
    p = np.full((1, len(classes), classes_count), (1 - sure) / (classes_count - 1), np.float32)
    for t, c in enumerate(classes):
        p[0, t, c] = sure
    return p


def test_greedy_decoding_merges_runs_and_drops_blanks():
    b = BLANK
    (d,) = greedy_decode(frames_of([3, 3, b, 3, b, b, 7]))
    assert d.digits == (3, 3, 7)
    assert d.frames == ((0, 2), (3, 4), (6, 7))
    assert d.confidence == pytest.approx(0.9**7, rel=1e-5)
    assert d.digit_confidences == pytest.approx((0.9, 0.9, 0.9))
    # Repeated digits need a blank between them: without one they are one digit.
    assert greedy_decode(frames_of([3, 3, 3]))[0].digits == (3,)
    assert greedy_decode(frames_of([b, b, b]))[0].digits == ()
    assert texts(greedy_decode(frames_of([b, 1, b, 1, 2, 2, b])), NAMES) == ["112"]


def test_greedy_decoding_agrees_with_keras():
    import keras

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (16, 20, 11)).astype(np.float32)
    logits[..., BLANK] += 1.5  # blanks frequent, as a trained model's are
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    decoded, _ = keras.ops.ctc_decode(probs, np.full(16, 20), strategy="greedy", mask_index=BLANK)
    expected = [tuple(int(v) for v in row if v >= 0) for row in keras.ops.convert_to_numpy(decoded[0])]
    assert [d.digits for d in greedy_decode(probs)] == expected


def test_temperature_flattens_or_sharpens_the_frames():
    p = frames_of([2, BLANK], sure=0.8)
    assert temper(p, 2.0)[0, 0, 2] < 0.8 < temper(p, 0.5)[0, 0, 2]
    np.testing.assert_allclose(temper(p, 1.0), p)
    np.testing.assert_allclose(temper(p, 3.0).sum(-1), 1.0, rtol=1e-5)


def test_the_line_model_gives_frames_over_digits_and_blank():
    from digitlab.models import build_line_model, build_model, frames

    cfg = PRESETS["numbers"][0]
    model = build_line_model(dataclasses.replace(cfg, filters=(4, 4, 4, 4), dense=8))
    out = model(np.zeros((2, 32, 256), np.float32))
    assert tuple(out.shape) == (2, frames(cfg), 11) == (2, 64, 11)
    np.testing.assert_allclose(np.asarray(out).sum(-1), 1.0, rtol=1e-5)
    names = [layer.name for layer in model.layers]
    assert [n for n in names if n.startswith("context_") and "_" not in n[8:]] == ["context_0", "context_1"]
    assert model.get_layer("context_0").kernel.shape == (5, 8, 8)  # 5 frames, dense wide in and out
    plain = build_line_model(dataclasses.replace(cfg, filters=(4, 4, 4, 4), dense=8, context=0))
    assert not [n for n in (layer.name for layer in plain.layers) if n.startswith("context")]
    with pytest.raises(DigitlabError, match="architecture 'line'"):
        build_line_model(ModelConfig())
    with pytest.raises(DigitlabError, match="input_shape"):
        build_line_model(dataclasses.replace(cfg, input_shape=(30, 256)))
    small = dataclasses.replace(cfg, filters=(4, 4, 4, 4), dense=8)
    assert [layer.name for layer in build_model(small).layers] == [layer.name for layer in model.layers]  # one builder


def test_ctc_loss_prefers_the_right_labels_and_respects_padding():
    from digitlab.training.tasks import CTCLoss

    b = BLANK
    probs = np.concatenate([frames_of([b, 4, b, 4, b, 2, b]), frames_of([b, 7, b, b, b, b, b])])
    loss = CTCLoss(reduction=None)
    right = np.array([[4, 4, 2, -1], [7, -1, -1, -1]])
    wrong = np.array([[4, 2, -1, -1], [1, -1, -1, -1]])
    right_loss, wrong_loss = np.asarray(loss(right, probs)), np.asarray(loss(wrong, probs))
    assert (right_loss < wrong_loss).all()
    assert right_loss[1] < 2.0  # the padding is not read as labels


def test_string_accuracy_counts_whole_lines():
    from digitlab.training.tasks import string_accuracy

    b = BLANK
    probs = np.concatenate([frames_of([b, 4, b, 4]), frames_of([b, 7, b, b])])
    assert string_accuracy(probs, np.array([[4, 4, -1], [7, -1, -1]])) == 1.0
    assert string_accuracy(probs, np.array([[4, -1, -1], [7, -1, -1]])) == 0.5


def test_numbers_preset_and_model_line():
    model_cfg, train_cfg = resolve_configs("numbers")
    assert model_cfg.architecture == "line" and model_cfg.input_shape == (32, 256)
    assert resolve_configs("fast", architecture="line")[0] == model_cfg
    with pytest.raises(DigitlabError, match="lines"):
        TrainConfig(lines=0)
    with pytest.raises(DigitlabError, match="recurrent"):
        ModelConfig(architecture="line", recurrent=-1)
    assert model_cfg.context == 2
    with pytest.raises(DigitlabError, match="context must be a count"):
        ModelConfig(architecture="line", context=-1)
    with pytest.raises(DigitlabError, match="context blocks need a hidden Dense"):
        ModelConfig(architecture="line", context=1, dense=0)


TINY = {"filters": (4, 8, 8, 8), "dense": 16}  # as conftest.py trains tiny_line_run


def test_tiny_training_leaves_a_run_directory(tiny_line_run):
    from digitlab import runs

    names = {p.name for p in tiny_line_run.iterdir()}
    for name in (runs.CONFIG, runs.MODEL, runs.CHECKPOINT, runs.STATE, runs.HISTORY, runs.CURVES, runs.METRICS):
        assert name in names
    assert {runs.CALIBRATION, runs.ENVIRONMENT} <= names
    config = json.loads((tiny_line_run / runs.CONFIG).read_text())
    assert ModelConfig.from_dict(config["model"]).filters == TINY["filters"]  # enough to rebuild it
    assert config["data"]["frames"] == 64
    history = (tiny_line_run / runs.HISTORY).read_text().splitlines()
    assert history[0] == "epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds" and len(history) == 3
    calibration = json.loads((tiny_line_run / runs.CALIBRATION).read_text())
    assert calibration["kind"] == "string" and calibration["temperature"] > 0
    assert 0.0 <= calibration["threshold"] <= 1.0
    metrics = json.loads((tiny_line_run / runs.METRICS).read_text())
    assert metrics["validation"]["lines"] == 48 and metrics["epochs"] == 2


def test_a_finished_line_run_refuses_to_resume_and_a_killed_one_completes(tiny_line_run, tmp_path, synthetic_dir):
    import shutil

    from digitlab import runs
    from digitlab.errors import RunError
    from digitlab.training import resume

    with pytest.raises(RunError, match="nothing to resume"):
        resume(tiny_line_run, data_dir=synthetic_dir, verbose=0)
    run = tmp_path / "run"
    shutil.copytree(tiny_line_run, run)
    (run / runs.CALIBRATION).unlink()  # killed after its last epoch, before its calibration
    metrics = resume(run, data_dir=synthetic_dir, verbose=0)
    assert (run / runs.CALIBRATION).is_file() and metrics["calibration"]["kind"] == "string"
    # Killed after its first epoch: the second is trained and the history grows by one row.
    state = json.loads((run / runs.STATE).read_text())
    state.update(epochs_done=1, history=state["history"][:1])
    (run / runs.STATE).write_text(json.dumps(state))
    (run / runs.CALIBRATION).unlink()
    metrics = resume(run, data_dir=synthetic_dir, verbose=0)
    assert metrics["epochs"] == 2 and len((run / runs.HISTORY).read_text().splitlines()) == 3


SCORED_LINES = 400  # lines the tests below score in place of evaluation.TEST_LINES (2,000): every length still


@pytest.mark.slow  # scores SCORED_LINES lines twice
def test_a_line_run_is_evaluated_on_lines_of_test_digits(tiny_line_run, tmp_path, synthetic_dir, monkeypatch):
    import shutil

    from digitlab import evaluation, runs
    from digitlab.evaluation import evaluate, evaluate_ensemble

    monkeypatch.setattr(evaluation, "TEST_LINES", SCORED_LINES)
    run = tmp_path / "run"
    shutil.copytree(tiny_line_run, run)
    test = evaluate(run, data_dir=synthetic_dir)
    assert test["kind"] == "line" and test["count"] == SCORED_LINES
    assert 0.0 <= test["accuracy"] <= 1.0 and test["character_error_rate"] >= 0.0
    assert sum(v["count"] for v in test["by_length"].values()) == SCORED_LINES
    assert set(test["by_length"]) == set(range(1, 11))  # every length a line can have
    substitutions = np.array(test["substitutions"])
    assert substitutions.shape == (10, 10) and substitutions.sum() > 0
    assert test["errors"] == round((1 - test["accuracy"]) * SCORED_LINES)
    for name in ("confusion_matrix", "by_length", "mistakes"):
        assert (run / test["figures"][name]).read_bytes()[:4] == b"\x89PNG"
    assert json.loads((run / runs.METRICS).read_text())["test"]["character_error_rate"] == test["character_error_rate"]
    assert evaluate(run, data_dir=synthetic_dir)["accuracy"] == test["accuracy"]  # the same lines every time
    with pytest.raises(DigitlabError, match="are line runs"):
        evaluate_ensemble([run, tiny_line_run], data_dir=synthetic_dir)


@pytest.mark.slow  # scores SCORED_LINES lines, twice
def test_evaluate_and_report_commands_work_on_a_line_run(tiny_line_run, tmp_path, synthetic_dir, monkeypatch):
    import shutil

    from typer.testing import CliRunner

    from digitlab import evaluation
    from digitlab.cli import app

    monkeypatch.setattr(evaluation, "TEST_LINES", SCORED_LINES)

    run = tmp_path / "run"
    shutil.copytree(tiny_line_run, run)
    data = ["--data-dir", str(synthetic_dir)]
    result = CliRunner().invoke(app, ["evaluate", str(run), *data, "--min-accuracy", "0"])
    assert result.exit_code == 0, result.output
    assert "character error rate" in result.output and "numbers exactly right" in result.output
    assert "input shape" not in result.output.lower()
    result = CliRunner().invoke(app, ["report", str(run), *data])
    assert result.exit_code == 0, result.output
    html = (run / "report.html").read_text()
    assert "numbers exactly right" in html and "By length" in html and "Substituted digits" in html
    result = CliRunner().invoke(app, ["evaluate", str(run), *data, "--min-accuracy", "1.01"])
    assert result.exit_code == 1 and "below --min-accuracy" in result.output


def test_a_line_config_means_one_thing_per_field():
    cfg = PRESETS["numbers"][0]
    assert cfg.strides == (1, 1, 1, 1) and cfg.pool_widths == (2, 2, 1, 1) and cfg.kind == "line"
    old = {**cfg.to_dict(), "strides": [2, 2, 1, 1]}  # a line run's config.json before pool_widths
    del old["pool_widths"]
    assert ModelConfig.from_dict(old) == cfg
    with pytest.raises(DigitlabError, match="pool width per stage"):
        dataclasses.replace(cfg, pool_widths=(2, 2))
    with pytest.raises(DigitlabError, match="stride 1"):
        dataclasses.replace(cfg, strides=(2, 2, 1, 1))
    with pytest.raises(DigitlabError, match="pool_widths is a line model's"):
        ModelConfig(pool_widths=(2, 2))
    with pytest.raises(DigitlabError, match="--shift, --blur: for digit models"):
        resolve_configs("numbers", shift=1.0, blur=0.5)
    with pytest.raises(DigitlabError, match="--label-smoothing"):
        resolve_configs("numbers", label_smoothing=0.1)
    assert ModelConfig().kind == ModelConfig(architecture="mlp").kind == "digit"


def test_alignment_names_substitutions_deletions_and_insertions():
    from digitlab.metrics import alignment, edit_distance

    pairs, deleted, inserted = alignment((3, 7, 7, 6), (8, 7))  # two digits read as one: "3776" -> "87"
    assert len(pairs) == 2 and (deleted, inserted) == (2, 0) and edit_distance((3, 7, 7, 6), (8, 7)) == 3
    pairs, deleted, inserted = alignment((5, 2, 1), (5, 2, 1))
    assert pairs == [(5, 5), (2, 2), (1, 1)] and deleted == inserted == 0
    pairs, deleted, inserted = alignment((1, 2), (1, 9, 2))
    assert pairs == [(1, 1), (2, 2)] and (deleted, inserted) == (0, 1)
    pairs, deleted, inserted = alignment((4, 4, 2), (4, 7))
    assert sum(a != b for a, b in pairs) + deleted + inserted == edit_distance((4, 4, 2), (4, 7)) == 2


def test_reading_with_the_line_model(tiny_line_run):
    from digitlab.data.synth.lines import compose, on_paper
    from digitlab.predict import load_predictor
    from digitlab.predict.lines import read_lines
    from digitlab.predict.reading import choose_method
    from test_lines import X  # pytest puts tests/ on the path

    predictor = load_predictor(tiny_line_run)
    assert choose_method(predictor, None) == "line"
    with pytest.raises(DigitlabError, match="--method segment"):
        choose_method(predictor, "segment")
    cover, _ = compose(X[[3, 1, 4, 1]], np.random.default_rng(0))
    grey = on_paper(cover, np.random.default_rng(1)).astype(np.float32)
    fields = read_lines(predictor, grey, (grey.shape[1] * 2, grey.shape[0] * 2))
    assert fields.lines == (fields.text,) and 0.0 <= fields.confidence <= 1.0
    assert len(fields.digits) == len(fields.text) == len(fields.crops)
    for d in fields.digits:  # boxes in the input's px, inside it
        x0, y0, x1, y1 = d.box
        assert 0 <= x0 < x1 <= grey.shape[1] * 2 and 0 <= y0 < y1 <= grey.shape[0] * 2
    blank = read_lines(predictor, np.full((40, 90), 220.0, np.float32), (90, 40))
    assert blank.text is None and blank.unsure


def seventeen():
    """A stand-in line model that reads "17" (a 1 at frame 2, a 7 at frame 40) and an image of two bars."""
    from digitlab.predict import Predictor

    spikes = [BLANK] * 64
    spikes[2], spikes[40] = 1, 7
    probs = frames_of(spikes, sure=0.95)
    predictor = Predictor(lambda x: np.repeat(probs, len(x), 0), (32, 256), NAMES, threshold=0.01)
    grey = np.full((60, 170), 230.0, np.float32)
    grey[10:50, 10:14] = 20.0  # the "1"
    grey[10:50, 150:154] = 20.0  # the "7"
    return predictor, grey


def test_boxes_come_from_the_frames_and_the_ink():
    """Each digit's box is the ink between the midpoint of the digits' frames and the line's ends, in
    the input's px."""
    from digitlab.predict.lines import read_lines

    predictor, grey = seventeen()
    fields = read_lines(predictor, grey, (340, 120))  # the input was twice as large
    assert fields.text == "17" and not fields.unsure
    assert fields.confidence == pytest.approx(0.95**64, rel=1e-4)
    (one, seven) = fields.digits
    assert tuple(one.box) == (20, 20, 28, 100)
    assert tuple(seven.box) == (300, 20, 308, 100)
    assert fields.crops.shape == (2, 28, 28)
    for crop in fields.crops:  # each digit's ink fills its crop's height, as a 28x28 digit does
        rows = np.flatnonzero(crop.any(1))
        assert rows[-1] - rows[0] + 1 >= 20
    unsure = read_lines(dataclasses.replace(predictor, threshold=0.999), grey, (170, 60))
    assert unsure.unsure and "below the threshold" in unsure.reason


def test_onnx_export_of_a_line_model_reads_the_same(tiny_line_run, tmp_path, synthetic_dir):
    import shutil

    from digitlab.data.synth.lines import compose, on_paper
    from digitlab.export import export
    from digitlab.predict import load_predictor
    from digitlab.predict.lines import read_lines
    from test_lines import X  # pytest puts tests/ on the path

    run = tmp_path / "run"
    shutil.copytree(tiny_line_run, run)
    record = export(run, "onnx", n=40, data_dir=synthetic_dir)
    assert record["passed"], record
    assert record["n"] == 40 and record["argmax_mismatches"] == 0 and record["max_abs_diff"] <= 1e-4
    assert record["dataset"] == "synthetic validation lines"
    cover, _ = compose(X[[2, 0, 2, 6]], np.random.default_rng(3))
    grey = on_paper(cover, np.random.default_rng(4)).astype(np.float32)
    size = (grey.shape[1], grey.shape[0])
    keras_fields = read_lines(load_predictor(run), grey, size)
    onnx_fields = read_lines(load_predictor(run, runtime="onnx"), grey, size)
    assert onnx_fields.text == keras_fields.text
    assert onnx_fields.confidence == pytest.approx(keras_fields.confidence, abs=1e-4)


def test_cli_reads_with_a_line_run_and_names_a_wrong_method(tiny_line_run, tmp_path):
    from PIL import Image
    from typer.testing import CliRunner

    from digitlab.cli import app
    from digitlab.data.synth.lines import compose, on_paper
    from test_lines import X  # pytest puts tests/ on the path

    cover, _ = compose(X[[5, 0, 5]], np.random.default_rng(6))
    path = tmp_path / "number.png"
    Image.fromarray(on_paper(cover, np.random.default_rng(7))).save(path)
    result = CliRunner().invoke(app, ["read", str(tiny_line_run), str(path), "--json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)
    assert row["file"] == str(path) and "text" in row and "confidence" in row
    result = CliRunner().invoke(app, ["read", str(tiny_line_run), str(path), "--method", "segment"])
    assert result.exit_code != 0 and "--method segment" in result.output and "line model" in result.output
    result = CliRunner().invoke(app, ["read", str(tiny_line_run), str(path), "--method", "lines"])
    assert result.exit_code != 0 and "expected one of segment, line" in result.output


def test_read_goes_through_the_line_model_for_a_line_run():
    from digitlab.predict.reading import read
    from digitlab.predict.results import Reading

    predictor, grey = seventeen()
    reading = read(predictor, grey.astype(np.uint8))
    assert isinstance(reading, Reading) and reading.text == "17" and reading.lines == ("17",)
    assert [d.label for d in reading.digits] == ["1", "7"] and reading.size == (170, 60)
    # to_grey's image, not the array as given: the boxes hold the bars to a pixel.
    assert np.allclose(reading.digits[1].box, (150, 10, 154, 50), atol=1)
    assert np.allclose(reading.to_dict()["digits"][0]["box"], [10, 10, 14, 50], atol=1)
    with pytest.raises(DigitlabError, match="--method segment"):
        read(predictor, grey.astype(np.uint8), method="segment")


# --- constrained decoding: the best path with a count of digits (--digits) ----------------------------


def test_a_four_digit_reading_is_forced_from_a_three_digit_best_path():
    from digitlab.predict.ctc import count_decode

    b = BLANK
    probs = frames_of([b, 3, 3, b, 7, 7, b, b, 2, 2, b])
    probs[0, 6, 5], probs[0, 6, b] = 0.35, 0.55  # a faint 5 between the 7 and the 2
    (best,) = greedy_decode(probs)
    assert best.digits == (3, 7, 2)
    (four,) = count_decode(probs, 4, 4)
    assert four.digits == (3, 7, 5, 2) and four.frames == ((1, 3), (4, 6), (6, 7), (8, 10))
    assert four.confidence == pytest.approx(best.confidence * 0.35 / 0.55, rel=1e-5)
    assert four.digit_confidences == pytest.approx((0.9, 0.9, 0.35, 0.9))
    (three,) = count_decode(probs, 2, 3)  # the best path's count is in range: the best path
    assert three == best
    (two,) = count_decode(probs, 2, 2)  # one digit fewer: its frames read as blanks or as a neighbour
    assert len(two.digits) == 2 and two.confidence < best.confidence
    assert count_decode(frames_of([3, b, 3]), 4, 5) is None  # three frames hold at most three digits


def test_constrained_decoding_is_exact_on_every_count():
    """Against every path of a short line: the most probable path with each count, and no count missed."""
    import itertools

    from digitlab.predict.ctc import count_decode

    rng = np.random.default_rng(3)
    for _ in range(8):
        logits = rng.normal(0, 2, (1, 6, 4))
        probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
        best: dict = {}
        for path in itertools.product(range(4), repeat=6):
            digits = tuple(c for t, c in enumerate(path) if c != 3 and (t == 0 or path[t - 1] != c))
            p = float(np.prod(probs[0, np.arange(6), path]))
            best[len(digits)] = max(best.get(len(digits), 0.0), p)
        for n in range(7):
            decoded = count_decode(probs, n, n)
            assert (decoded is None) == (n not in best)
            if decoded:
                assert len(decoded[0].digits) == n and decoded[0].confidence == pytest.approx(best[n], rel=1e-6)
        assert count_decode(probs, 0, 6)[0].digits == greedy_decode(probs)[0].digits


def test_a_count_over_several_lines_is_shared_out_by_probability():
    from digitlab.predict.ctc import count_decode

    b = BLANK
    probs = np.concatenate([frames_of([1, b, 2, b]), frames_of([4, b, b, b])])
    probs[1, 2, 6], probs[1, 2, b] = 0.45, 0.5  # the second line's likelier extra digit
    first, second = count_decode(probs, 4, 4)
    assert (first.digits, second.digits) == ((1, 2), (4, 6))


def test_reading_a_line_with_a_count_of_digits_expected():
    """The line model's stand-in reads "17" surely: 3 digits asked is a 3-digit reading marked unsure,
    'found 2 clearly'; a frame that nearly holds a third digit gives it, 'found 2' but not clearly."""
    from digitlab.predict.count import DigitCount
    from digitlab.predict.lines import read_lines

    predictor, grey = seventeen()
    assert read_lines(predictor, grey, (170, 60), digits=None).text == "17"
    forced = read_lines(predictor, grey, (170, 60), DigitCount(3, 3))
    assert len(forced.text) == 3 and forced.unsure
    assert forced.reason.startswith("expected 3 digits, found 2 clearly; line 1: confidence")  # and improbable
    assert len(forced.digits) == 3 and forced.crops.shape == (3, 28, 28)
    probs = predictor.forward(np.zeros((1, 32, 256)))
    probs[0, 20, 4], probs[0, 20, BLANK] = 0.3, 0.65  # a faint 4 between them
    near = dataclasses.replace(predictor, forward=lambda x: np.repeat(probs, len(x), 0))
    three = read_lines(near, grey, (170, 60), DigitCount(3, 3))
    assert three.text == "147" and three.reason == "expected 3 digits, found 2"
    assert read_lines(near, grey, (170, 60), DigitCount(1, 2)).text == "17"


def test_numbers_preset_trains_a_digit_model_into_digits(tmp_path, monkeypatch):
    import digitlab.training as training

    _, train_cfg = resolve_configs("numbers", seed=3, split_seed=5, limit=40)
    assert train_cfg.digit_model == "robust"
    calls = []
    monkeypatch.setattr(training, "train", lambda m, t, out, **kw: calls.append((m, t, out, kw)))
    training.train_digit_part(tmp_path, train_cfg, data_dir=tmp_path / "data")
    ((model_cfg, digit_cfg, out, kw),) = calls
    assert out == tmp_path / "digits" and kw["data_dir"] == tmp_path / "data"
    assert model_cfg.kind == "digit" and model_cfg == resolve_configs("robust")[0]
    assert (digit_cfg.seed, digit_cfg.split_seed, digit_cfg.limit) == (3, 5, 40)  # the line model's data and split
    (tmp_path / "digits").mkdir()
    (tmp_path / "digits" / "calibration.json").write_text("{}")
    training.train_digit_part(tmp_path, train_cfg)  # one there already: nothing trained
    training.train_digit_part(tmp_path / "other", dataclasses.replace(train_cfg, digit_model=None))
    assert len(calls) == 1


def test_digit_model_is_a_line_runs_digit_preset():
    with pytest.raises(DigitlabError, match="digit_model: expected a digit preset"):
        TrainConfig(digit_model="numbers")
    with pytest.raises(DigitlabError, match="digit_model: for line models"):
        resolve_configs("fast", digit_model="robust")
    assert TrainConfig.from_dict({"digit_model": None}).digit_model is None


# --- marks that are not digits: a CTC symbol of their own, "not a digit", before the blank ------------------

MARK, MBLANK = 10, 11  # a run that learnt marks: the ten digits, the mark, the blank
MARKED_NAMES = (*NAMES, "?")


def test_a_line_model_that_learns_marks_has_a_symbol_before_the_blank():
    import keras

    from digitlab.models import build_line_model

    cfg = dataclasses.replace(PRESETS["numbers"][0], filters=(4, 4, 4, 4), dense=8, nondigit=True)
    assert tuple(build_line_model(cfg)(np.zeros((1, 32, 256), np.float32)).shape) == (1, 64, 12)
    model_cfg, train_cfg = resolve_configs("numbers")
    assert model_cfg.nondigit and 0 < train_cfg.outliers < 1 and train_cfg.outlier_loss == "class"
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, (16, 20, 12)).astype(np.float32)
    logits[..., MBLANK] += 1.5
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    decoded, _ = keras.ops.ctc_decode(probs, np.full(16, 20), strategy="greedy", mask_index=MBLANK)
    expected = [tuple(int(v) for v in row if v >= 0) for row in keras.ops.convert_to_numpy(decoded[0])]
    assert [d.digits for d in greedy_decode(probs)] == expected  # the mark decoded as any other symbol
    assert any(MARK in e for e in expected)


def marked_predictor(classes, names=MARKED_NAMES, threshold=0.5):
    """A line Predictor whose model gives the same frames for every line: `sure` on `classes`, blank after."""
    from digitlab.predict import Predictor

    count = len(names) + 1
    frames = np.full((64, count), 0.001 / (count - 1), np.float32)
    path = [*classes, *[count - 1] * (64 - len(classes))]
    frames[np.arange(64), path] = 0.999
    return Predictor(lambda x: np.repeat(frames[None], len(x), 0), (32, 256), names, threshold=threshold, kind="line")


def three_bars() -> np.ndarray:
    image = np.full((40, 160), 255, np.uint8)
    for x in (20, 70, 120):
        image[8:32, x : x + 5] = 0
    return image


def test_a_mark_read_in_a_line_is_refused_saying_where():
    from digitlab.predict.ctc import log_likelihood
    from digitlab.predict.lines import read_lines
    from digitlab.predict.reading import Candidates, Combining, combine, file_rows, read_inputs

    b = MBLANK
    predictor = marked_predictor([b, 1, 1, b, b, MARK, MARK, b, b, 2, b])
    reading = read_lines(predictor, three_bars(), (160, 40))
    assert reading.text == "1?2" and reading.unsure
    reason = "line 1, 2nd place: not a digit: it looks like a letter, a symbol or a scribble"
    assert reading.reason == reason  # sure of the mark, so the one reason
    mark = reading.digits[1]
    assert (mark.digit, mark.label, mark.unsure) == (MARK, "?", True) and not reading.digits[0].unsure
    assert reading.to_dict()["digits"][1]["unsure"]
    (row,) = file_rows(read_inputs(predictor, [three_bars()], ["x.png"], "line"))  # the CLI's, JSON's, batch's
    assert (row["text"], row["unsure"], row["reason"]) == ("1?2", True, reason)
    # The combined reader: whichever reading it chooses, a mark the line model read makes it unsure, saying where.
    segment = dataclasses.replace(reading, text="172", lines=("172",), unsure=False, reason=None, confidence=0.99)
    probs = predictor.raw_proba(np.zeros((1, 32, 256)))[0]
    scored = tuple(
        (r, how, (log_likelihood(probs, t),))
        for r, how, t in ((reading, "line", (1, MARK, 2)), (segment, "segment", (1, 7, 2)))
    )
    for bonus in (0.0, 500.0):  # the line's reading chosen, then the segmentation's
        chosen = combine(Candidates(reading, segment, scored), Combining(segment_bonus=bonus))
        assert chosen.unsure and chosen.reason.startswith(reason) and "disagree" in chosen.reason
    assert combine(Candidates(reading, segment, scored), Combining(segment_bonus=500.0)).text == "172"


def test_a_line_run_of_eleven_classes_reads_as_before(tiny_line_run):
    """A run trained before the "not a digit" symbol (tiny_line_run learns no marks): ten class names, eleven
    outputs a frame, and its reading is the greedy decoding with the blank last, digits only."""
    from digitlab.predict import load_predictor
    from digitlab.predict.lines import line_inputs, read_lines

    predictor = load_predictor(tiny_line_run)
    assert predictor.class_names == NAMES
    inputs = line_inputs(predictor, three_bars())
    assert inputs.probs.shape[-1] == 11
    reading = read_lines(predictor, three_bars(), (160, 40), inputs=inputs)
    (decoded,) = greedy_decode(inputs.probs, predictor.temperature)
    assert reading.text == "".join(NAMES[d] for d in decoded.digits) and "?" not in reading.text
    assert "not a digit" not in (reading.reason or "")


@pytest.mark.slow  # trains a tiny line run and exports it
def test_a_line_run_learns_marks_and_every_reader_knows_its_symbol(tmp_path, synthetic_dir):
    from digitlab import runs
    from digitlab.predict import load_predictor
    from digitlab.training import train
    from digitlab.web import page_model

    model_cfg, train_cfg = resolve_configs("numbers", epochs=1, lines=64, val_lines=32, batch_size=32)
    model_cfg = dataclasses.replace(model_cfg, **TINY)
    train_cfg = dataclasses.replace(train_cfg, dataset="synthetic", digit_model=None, export_onnx=True)
    run = tmp_path / "run"
    train(model_cfg, train_cfg, run, data_dir=synthetic_dir, verbose=0)
    config = json.loads((run / runs.CONFIG).read_text())
    assert config["model"]["nondigit"] and config["data"]["lines_with_a_mark"] == train_cfg.outliers
    assert (
        "validation lines read without a mark (of 32)" in json.loads((run / runs.CALIBRATION).read_text())["fitted_on"]
    )
    for runtime in ("keras", "onnx"):
        predictor = load_predictor(run, runtime)
        assert predictor.class_names == MARKED_NAMES
        assert predictor.raw_proba(np.zeros((1, 32, 256))).shape == (1, 64, 12)
    assert page_model(run)["web"]["class_names"] == list(MARKED_NAMES)
