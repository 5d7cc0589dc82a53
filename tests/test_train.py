import csv
import json
import os
import shutil

import numpy as np
import pytest

from digitlab import config, runs
from digitlab.config import ModelConfig, TrainConfig, resolve_configs
from digitlab.data import run_split
from digitlab.errors import DigitlabError, RunError
from digitlab.evaluation import evaluate
from digitlab.models import build_model
from digitlab.predict import load_predictor, predict_test_indices
from digitlab.predict.keras_runtime import load_keras_model
from digitlab.training import _RunRecorder, resume, train

MLP = ModelConfig(architecture="mlp", units=(16,))


def tiny(**changes):
    return TrainConfig(**{"epochs": 2, "batch_size": 32, "dataset": "synthetic", **changes})


def read_history(run_dir):
    with open(run_dir / runs.HISTORY) as f:
        return list(csv.DictReader(f))


def test_train_writes_a_complete_run(synthetic_mlp_run):
    out = synthetic_mlp_run  # conftest.py's train(MLP, tiny(), out): the config below says so
    for name in (
        "config.json",
        "model.keras",
        "checkpoint.keras",
        "history.csv",
        "curves.png",
        "metrics.json",
        "environment.json",
        "state.json",
    ):
        assert (out / name).is_file(), name
    history = read_history(out)
    assert [int(r["epoch"]) for r in history] == [1, 2]
    assert set(history[0]) >= {"loss", "accuracy", "val_loss", "val_accuracy", "lr"}
    config = json.loads((out / "config.json").read_text())
    assert ModelConfig.from_dict(config["model"]) == MLP
    assert TrainConfig.from_dict(config["train"]) == tiny()
    assert config["data"]["train"] == 240 and config["data"]["validation"] == 60  # 20 % of 300
    env = json.loads((out / "environment.json").read_text())
    assert env["seed"] == 42 and "keras" in env["packages"]
    metrics = runs.read_json(out / runs.METRICS)
    assert metrics["validation"]["best_epoch"] in (1, 2)
    assert metrics["validation"]["accuracy"] > 0.5  # learnable: 40 of the 60 validation images after 2 epochs


def test_same_seed_same_history(tmp_path, synthetic_dir, synthetic_mlp_run):
    a = synthetic_mlp_run  # trained as below, once for the whole test run
    assert TrainConfig.from_dict(runs.read_json(a / runs.CONFIG)["train"]) == tiny()
    metrics = train(MLP, tiny(), tmp_path / "b", data_dir=synthetic_dir, verbose=0)
    assert metrics == runs.read_json(tmp_path / "b" / runs.METRICS)  # train returns what it saved
    a, b = read_history(a), read_history(tmp_path / "b")
    assert len(a) == len(b) == 2
    for ra, rb in zip(a, b):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert float(ra[key]) == pytest.approx(float(rb[key]), rel=1e-5)


def test_existing_run_is_not_overwritten(tmp_path, synthetic_dir, synthetic_mlp_run):
    out = shutil.copytree(synthetic_mlp_run, tmp_path / "run")
    before = (out / "model.keras").read_bytes()
    with pytest.raises(RunError, match="already holds a run; pass --resume .* or --overwrite"):
        train(MLP, tiny(epochs=1), out, data_dir=synthetic_dir, verbose=0)
    assert (out / "model.keras").read_bytes() == before
    train(MLP, tiny(epochs=1, seed=1), out, data_dir=synthetic_dir, verbose=0, overwrite=True)
    assert json.loads((out / "config.json").read_text())["train"]["seed"] == 1
    assert [int(r["epoch"]) for r in read_history(out)] == [1]  # replaced, not appended to


def train_until_killed_after_first_epoch(model_config, train_config, out, data_dir, monkeypatch):
    original = _RunRecorder.on_epoch_end

    def interrupted(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch == 0:
            raise KeyboardInterrupt  # killed after the first epoch was saved

    monkeypatch.setattr(_RunRecorder, "on_epoch_end", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(model_config, train_config, out, data_dir=data_dir, verbose=0)
    monkeypatch.setattr(_RunRecorder, "on_epoch_end", original)


def test_resume_after_interruption(tmp_path, synthetic_dir, monkeypatch):
    out = tmp_path / "run"
    train_until_killed_after_first_epoch(MLP, tiny(epochs=3), out, synthetic_dir, monkeypatch)
    assert json.loads((out / "state.json").read_text())["epochs_done"] == 1
    metrics = resume(out, data_dir=synthetic_dir, verbose=0)
    assert [int(r["epoch"]) for r in read_history(out)] == [1, 2, 3]
    assert metrics["epochs"] == 3
    with pytest.raises(RunError, match="already trained all 3 epochs"):
        resume(out, data_dir=synthetic_dir, verbose=0)


def test_evaluate_and_predict(tmp_path, synthetic_dir, synthetic_mlp_run):
    out = shutil.copytree(synthetic_mlp_run, tmp_path / "run")  # evaluate writes into the run
    test = evaluate(out, data_dir=synthetic_dir)
    assert test["count"] == 100
    assert test["accuracy"] > 0.5  # the synthetic classes are easy
    assert np.array(test["confusion_matrix"]).sum() == 100
    assert set(test["per_class"]) == {str(i) for i in range(10)}
    for name in ("confusion_matrix.png", "mistakes.png", "predictions.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["test"]["accuracy"] == test["accuracy"] and "validation" in saved
    rows = predict_test_indices(out, [0, 7], data_dir=synthetic_dir)
    assert [r["index"] for r in rows] == [0, 7]
    assert [r["true"] for r in rows] == [0, 7]  # the synthetic set's labels are the index mod 10
    assert all(len(r["top3"]) == 3 and 0 <= r["confidence"] <= 1 for r in rows)
    assert all(r["confidence"] == r["top3"][0]["probability"] and r["digit"] == r["top3"][0]["digit"] for r in rows)
    probs = load_predictor(out).predict_proba(np.zeros((2, 28, 28), np.uint8))
    assert probs.shape == (2, 10)
    with pytest.raises(DigitlabError, match=r"--index: expected test indices in 0\.\.99, got \[100\]"):
        predict_test_indices(out, [100], data_dir=synthetic_dir)


def test_no_model_in_run_dir(tmp_path):
    with pytest.raises(RunError, match="no such run directory"):
        evaluate(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunError, match="no model.keras here"):
        load_predictor(tmp_path / "empty")


def test_model_input_shape_must_match_data(tmp_path, synthetic_dir):
    run = tmp_path / "run"
    run.mkdir()
    model = build_model(ModelConfig(architecture="mlp", units=(8,), input_shape=(14, 14)))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    runs.save_keras_atomic(model, run / "model.keras")
    runs.write_json(run / "config.json", {"train": {"dataset": "synthetic"}, "data": {}})
    with pytest.raises(RunError, match=r"expects images of shape \(14, 14\), the data has \(28, 28\)"):
        evaluate(run, data_dir=synthetic_dir)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"epochs": 0}, "--epochs: expected a positive integer, got 0"),
        ({"batch_size": -5}, "--batch-size: expected a positive integer, got -5"),
        ({"optimizer": "rmsprop"}, "--optimizer: expected one of adam, sgd"),
        ({"learning_rate": 0.0}, "--lr: expected a positive number"),
        ({"label_smoothing": 1.0}, r"--label-smoothing: expected a number in \[0, 1\), got 1.0"),
        ({"precision": "fp16"}, "--precision: expected one of auto, float32, bfloat16, got 'fp16'"),
    ],
)
def test_bad_training_options(changes, message):
    with pytest.raises(DigitlabError, match=message):
        TrainConfig(**changes)


def test_smoothed_crossentropy_spreads_the_target():
    import keras

    from digitlab.training import SmoothedCrossentropy

    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], "float32")
    labels = np.array([0, 2])
    smoothed = keras.ops.convert_to_numpy(SmoothedCrossentropy(0.3)(labels, probs))
    # targets 0.7 on the label + 0.3 / 3 everywhere: [0.8, 0.1, 0.1] and [0.1, 0.1, 0.8], so by hand
    # row 1: 0.8 ln(1/0.7) + 0.1 ln(1/0.2) + 0.1 ln(1/0.1) = 0.676542; row 2: 0.2 ln 10 + 0.8 ln 1.25 = 0.639032
    assert smoothed == pytest.approx(0.657787, rel=1e-5)
    plain = keras.ops.convert_to_numpy(keras.losses.SparseCategoricalCrossentropy()(labels, probs))
    assert keras.ops.convert_to_numpy(SmoothedCrossentropy(0.0)(labels, probs)) == pytest.approx(plain, rel=1e-5)
    assert plain == pytest.approx(0.289909, rel=1e-5)  # (ln(1/0.7) + ln(1/0.8)) / 2


def test_label_smoothing_run_saves_and_loads(tmp_path, synthetic_dir):
    out = tmp_path / "run"
    train(
        ModelConfig(architecture="mlp", units=(16,), standardize=True),
        tiny(label_smoothing=0.1),
        out,
        data_dir=synthetic_dir,
        verbose=0,
    )
    assert runs.read_json(out / "config.json")["train"]["label_smoothing"] == 0.1
    model = load_keras_model(out / "model.keras", compile=True)  # the custom loss is registered for deserialisation
    assert model.loss.smoothing == pytest.approx(0.1)


def test_bfloat16_run_saves_a_float32_model_and_resumes_in_bfloat16(tmp_path, synthetic_dir, monkeypatch):
    cnn = ModelConfig(architecture="cnn", filters=(4, 8), kernels=(3, 3), strides=(2, 2), dense=16, norm_from=1)
    out = tmp_path / "run"
    train_until_killed_after_first_epoch(cnn, tiny(epochs=2, precision="bfloat16"), out, synthetic_dir, monkeypatch)
    assert load_keras_model(out / "checkpoint.keras").get_layer("conv_0_0").compute_dtype == "bfloat16"
    metrics = resume(out, data_dir=synthetic_dir, verbose=0)
    assert metrics["epochs"] == 2
    saved = load_keras_model(out / "model.keras")
    assert {layer.compute_dtype for layer in saved.layers if layer.weights} == {"float32"}
    assert load_keras_model(out / "checkpoint.keras").get_layer("conv_0_0").compute_dtype == "bfloat16"
    # model.keras holds the best epoch's weights: scoring the validation split with it repeats its figure
    split = run_split(tiny(), synthetic_dir)
    x_val, y_val = split.x_val, split.y_val
    accuracy = float(np.mean(load_predictor(out).predict_proba(x_val).argmax(axis=1) == y_val))
    assert accuracy == pytest.approx(metrics["validation"]["accuracy"], abs=0.05)


def test_resolve_configs():
    model_cfg, train_cfg = resolve_configs("fast", architecture="mlp", units=(10, 10), epochs=20)
    assert model_cfg.architecture == "mlp" and model_cfg.units == (10, 10)
    assert train_cfg.epochs == 20
    assert resolve_configs("fast")[0].standardize
    assert not resolve_configs("fast", normalize=False)[0].standardize  # raw pixels: nothing standardized
    with pytest.raises(DigitlabError, match="unknown architecture 'vit'"):
        resolve_configs("fast", architecture="vit")
    with pytest.raises(DigitlabError, match="--preset: expected one of"):
        resolve_configs("huge")


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_resolved_before_the_run_records_it(tmp_path, synthetic_dir, monkeypatch, native):
    monkeypatch.setattr(config, "native_bfloat16", lambda: native)
    resolved = "bfloat16" if native else "float32"
    assert resolve_configs("fast")[1].precision == resolve_configs("accurate")[1].precision == resolved
    assert resolve_configs("fast", precision="float32")[1].precision == "float32"
    assert resolve_configs("mlp")[1].precision == "float32"
    out = tmp_path / "run"
    train(MLP, tiny(epochs=1, precision="auto"), out, data_dir=synthetic_dir, verbose=0)
    assert runs.read_json(out / runs.CONFIG)["train"]["precision"] == resolved


def test_augmented_training(tmp_path, synthetic_dir):
    out = tmp_path / "run"
    metrics = train(MLP, tiny(shift=2.0, rotate=10.0, scale=0.1), out, data_dir=synthetic_dir, verbose=0)
    assert metrics["epochs"] == 2 and (out / "model.keras").is_file()


def test_random_warp_identity_shift_and_elastic():
    from digitlab.training.augment import random_warp

    rng = np.random.default_rng(0)
    x = np.zeros((2, 28, 28), "float32")
    x[:, 10:18, 12:16] = 255.0
    np.testing.assert_allclose(random_warp(x, rng), x, atol=1e-4)
    moved = random_warp(x, rng, shift=3)  # a whole-pixel-or-less shift: the block moves, its ink stays
    assert abs(moved.sum() / x.sum() - 1) < 0.2
    for params in ({"shift": 3, "rotate": 15, "scale": 0.1}, {"elastic": 34.0}, {"rotate": 10, "elastic": 34.0}):
        warped = random_warp(x, rng, **params)
        assert warped.shape == x.shape and not np.allclose(warped, x), params
        assert abs(warped.sum() / x.sum() - 1) < 0.25, params  # ink is moved, not lost
    a, b = (
        random_warp(x, np.random.default_rng(1), elastic=34.0),
        random_warp(x, np.random.default_rng(1), elastic=34.0),
    )
    np.testing.assert_array_equal(a, b)  # reproducible from the seed


def test_augmented_batches_cover_every_image_once_per_epoch():
    from digitlab.training.augment import AugmentedBatches

    x = np.random.default_rng(0).uniform(0, 255, (2500, 28, 28)).astype("float32")
    y = np.arange(2500) % 10
    batches = AugmentedBatches(x, y, 256, seed=3, shift=2.0, rotate=10.0)
    assert len(batches) == 10 and len(batches[9][0]) == 2500 - 9 * 256
    first = [batches[i] for i in range(len(batches))]
    labels = np.concatenate([b[1] for b in first])
    assert sorted(labels) == sorted(y) and not np.array_equal(labels, y)  # every image once, shuffled
    batches.on_epoch_end()
    second = np.concatenate([batches[i][0] for i in range(len(batches))])
    assert not np.allclose(second, np.concatenate([b[0] for b in first]))  # a new warp and order each epoch
    again = AugmentedBatches(x, y, 256, seed=3, shift=2.0, rotate=10.0)
    np.testing.assert_array_equal(again[4][0], first[4][0])  # reproducible from the seed


def test_augmented_batches_warp_the_next_epoch_in_the_background_and_stop_after_the_last():
    from digitlab.training.augment import AugmentedBatches

    x = np.random.default_rng(0).uniform(0, 255, (600, 28, 28)).astype("float32")
    y = np.arange(600) % 10

    def epochs(batches, n):
        out = []
        for _ in range(n):
            out.append(np.concatenate([batches[i][0] for i in range(len(batches))]))
            batches.on_epoch_end()
        return out

    ahead = AugmentedBatches(x, y, 128, seed=5, epochs=3, shift=2.0, elastic=8.0)
    background = epochs(ahead, 3)
    assert ahead.executor is None and ahead.upcoming is None  # nothing warped past the last epoch
    inline = epochs(AugmentedBatches(x, y, 128, seed=5, shift=2.0, elastic=8.0), 3)
    for a, b in zip(background, inline):
        np.testing.assert_array_equal(a, b)  # the same warps, in the same order, as warping in line


def test_out_must_be_new_empty_or_a_run(tmp_path, synthetic_dir):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(RunError, match="not empty and not a run directory"):
        train(MLP, tiny(epochs=1), tmp_path, data_dir=synthetic_dir, verbose=0, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_ensemble(tmp_path, synthetic_dir, synthetic_mlp_run):
    from digitlab.evaluation import evaluate_ensemble

    train(MLP, tiny(seed=1), tmp_path / "r1", data_dir=synthetic_dir, verbose=0)  # the shared run has seed 42
    result = evaluate_ensemble([tmp_path / "r1", synthetic_mlp_run], out_dir=tmp_path / "ens", data_dir=synthetic_dir)
    assert len(result["members"]) == 2 and result["count"] == 100
    assert (tmp_path / "ens" / "confusion_matrix.png").is_file()
    with pytest.raises(DigitlabError, match="at least two run directories"):
        evaluate_ensemble([tmp_path / "r1"], data_dir=synthetic_dir)


def test_lr_suggestion_rule():
    from digitlab.metrics import suggest_lr as suggest

    lrs = np.logspace(-5, 1, 61)
    loss = np.where(lrs < 0.1, 2.3 - 0.2 * np.log10(lrs / 1e-5), 10.0)  # falls until 0.1, then explodes
    assert suggest(lrs, loss) == pytest.approx(lrs[np.argmin(loss)] / 10)


def test_a_bad_activation_is_one_line_and_creates_nothing(tmp_path, synthetic_dir):
    out = tmp_path / "run"
    with pytest.raises(DigitlabError, match="--activation: unknown activation 'foo'"):
        train(ModelConfig(architecture="mlp", units=(8,), activation="foo"), tiny(), out, data_dir=synthetic_dir)
    assert not out.exists()


def test_units_apply_to_the_mlp_only():
    with pytest.raises(DigitlabError, match="--units applies to --model mlp"):
        resolve_configs("fast", units=(4, 4))
    assert resolve_configs("fast", architecture="mlp", units=(4, 4))[0].units == (4, 4)


def test_a_run_directory_in_use_is_refused(tmp_path, synthetic_dir):
    out = tmp_path / "run"
    with runs.lock_run(out), pytest.raises(RunError, match=rf"{out} is in use by process {os.getpid()}"):
        train(MLP, tiny(), out, data_dir=synthetic_dir, verbose=0)
    train(MLP, tiny(), out, data_dir=synthetic_dir, verbose=0)  # free again once the other is done
    assert (out / runs.MODEL).is_file()


def test_predict_index_has_the_unsure_rule(synthetic_dir, synthetic_mlp_run):
    rows = predict_test_indices(synthetic_mlp_run, [0, 1], data_dir=synthetic_dir)
    for row in rows:
        assert "unsure" in row and "reason" in row
        assert (row["digit"] is None) == row["unsure"]


def test_resume_finishes_a_run_killed_before_its_calibration(tmp_path, synthetic_dir, synthetic_mlp_run):
    out = shutil.copytree(synthetic_mlp_run, tmp_path / "run")
    fitted = json.loads((out / runs.CALIBRATION).read_text())
    (out / runs.CALIBRATION).unlink()  # as a kill -9 between the last epoch and the calibration leaves it
    with pytest.raises(RunError, match=rf"no calibration.json.*digitlab train --resume {out}"):
        load_predictor(out)
    resume(out, data_dir=synthetic_dir, verbose=0)
    assert json.loads((out / runs.CALIBRATION).read_text())["threshold"] == pytest.approx(fitted["threshold"])
    assert load_predictor(out).threshold == pytest.approx(fitted["threshold"])
    with pytest.raises(RunError, match="nothing to resume"):
        resume(out, data_dir=synthetic_dir, verbose=0)


def test_no_learning_rate_is_suggested_when_the_loss_never_falls():
    from digitlab.metrics import suggest_lr

    lrs = np.geomspace(1e-5, 10, 200)
    plateau = 2.30 + 0.01 * np.sin(np.arange(200))  # chance level all the way, as on raw pixels 0-255
    assert suggest_lr(lrs, plateau) is None
    falling = np.concatenate([np.linspace(2.3, 0.4, 150), np.linspace(0.4, 5.0, 50)])
    assert suggest_lr(lrs, falling) == pytest.approx(lrs[149] / 10)
