"""Exports (ONNX, TFLite, SavedModel) checked against the Keras model, and the ONNX Runtime predictor."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from digitlab import runs
from digitlab.cli import app
from digitlab.data import load_dataset
from digitlab.errors import DigitlabError, RunError
from digitlab.export import ATOL, FORMATS, export
from digitlab.predict import Predictor, classify, load_predictor

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, synthetic_cnn_run):
    """This module's copy of the session's tiny CNN run (100 synthetic test images): exports write into it."""
    return shutil.copytree(synthetic_cnn_run, tmp_path_factory.mktemp("export") / "run")


@pytest.fixture(scope="module")
def exported(run_dir, synthetic_dir):
    """The run exported in every format: {format: the check's record}."""
    return {fmt: export(run_dir, fmt, data_dir=synthetic_dir) for fmt in FORMATS}


@pytest.fixture(scope="module")
def test_images(synthetic_dir):
    return load_dataset("synthetic", data_dir=synthetic_dir).x_test


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_export_passes_its_check(exported, run_dir, fmt):
    record = exported[fmt]
    assert record["passed"], record
    assert record["n"] == 100  # 1,000 asked for, capped at the synthetic test set's size
    assert record["argmax_mismatches"] == 0 and record["argmax_agreement"] == 1.0
    assert 0.0 <= record["max_abs_diff"] <= ATOL
    assert record["path"] == FORMATS[fmt]
    assert (run_dir / FORMATS[fmt]).exists()
    assert runs.read_json(run_dir / runs.METRICS)["exports"][fmt]["passed"]
    assert not list(run_dir.glob(".*.tmp")), "temporary export left behind"


def test_saved_model_has_a_serving_signature(exported, run_dir):
    assert (run_dir / "saved_model" / "saved_model.pb").is_file()
    assert (run_dir / "saved_model" / "variables").is_dir()


def test_onnx_predictor_matches_keras(exported, run_dir, test_images):
    keras_predictor = load_predictor(run_dir)
    onnx_predictor = load_predictor(run_dir, runtime="onnx")
    assert isinstance(onnx_predictor, Predictor) and onnx_predictor.runtime == "onnx"
    for name in ("class_names", "temperature", "threshold", "input_shape", "run_dir"):
        assert getattr(onnx_predictor, name) == getattr(keras_predictor, name), name
    expected = keras_predictor.predict_proba(test_images)
    got = onnx_predictor.predict_proba(test_images)
    assert got.shape == (100, 10) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert (got.argmax(1) == expected.argmax(1)).all()
    # dynamic batch: one image (2-D too), three images
    assert onnx_predictor.predict_proba(test_images[0]).shape == (1, 10)
    assert onnx_predictor.predict_proba(test_images[:3].astype("uint8")).shape == (3, 10)
    results = classify(onnx_predictor, test_images[:2], [True, True])
    assert [r["digit"] is None or 0 <= r["digit"] <= 9 for r in results] == [True, True]


def test_onnx_predictor_rejects_wrong_shape(exported, run_dir):
    with pytest.raises(DigitlabError, match=r"expected shape \(n, 28, 28\), got \(2, 28, 27\)"):
        load_predictor(run_dir, runtime="onnx").predict_proba(np.zeros((2, 28, 27)))


NO_TENSORFLOW = """
import importlib.abc, sys

class NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras", "tf2onnx"):
            raise ImportError(f"the ONNX path imported {name}")

sys.meta_path.insert(0, NoTensorFlow())
"""


@pytest.mark.slow
def test_onnx_predictor_never_imports_tensorflow(exported, run_dir):
    code = (
        NO_TENSORFLOW
        + f"""
import numpy as np
from digitlab.predict import load_predictor
p = load_predictor({str(run_dir)!r}, runtime="onnx")
assert p.predict_proba(np.zeros((4, 28, 28), np.uint8)).shape == (4, 10)
loaded = [m for m in ("tensorflow", "keras", "tf2onnx") if m in sys.modules]
assert not loaded, loaded
"""
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_cli_predict_onnx_never_imports_tensorflow(exported, run_dir, test_images, tmp_path):
    from PIL import Image

    image = tmp_path / "digit.png"
    Image.fromarray(test_images[3]).save(image)
    code = (
        NO_TENSORFLOW
        + f"""
from digitlab.cli import main
sys.argv = ["digitlab", "predict", "--runtime", "onnx", {str(run_dir)!r}, {str(image)!r}, "--json"]
try:
    main()
except SystemExit as e:
    code = e.code
loaded = [m for m in ("tensorflow", "keras", "tf2onnx") if m in sys.modules]
assert not loaded, loaded
sys.exit(code)
"""
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)
    keras_row = json.loads(invoke("predict", run_dir, image, "--json").output)[0]
    assert row["confidence"] == pytest.approx(keras_row["confidence"], abs=1e-5)
    assert row["digit"] == keras_row["digit"]


def test_cli_export_prints_the_check(exported, run_dir, synthetic_dir, tmp_path):
    out = tmp_path / "elsewhere.onnx"
    result = invoke("export", run_dir, "--format", "onnx", "--out", out, "--data-dir", synthetic_dir)
    assert result.exit_code == 0, result.output
    assert "argmax agrees on 100/100" in result.output
    assert f"wrote {out}" in result.output
    assert out.is_file()
    assert runs.read_json(run_dir / runs.METRICS)["exports"]["onnx"]["path"] == str(out.resolve())
    # put the record back on the run's own model.onnx for the tests after this one
    assert export(run_dir, "onnx", data_dir=synthetic_dir)["passed"]


def test_reexport_replaces_a_saved_model(exported, run_dir, synthetic_dir):
    marker = run_dir / "saved_model" / "stale.txt"
    marker.write_text("from the previous export")
    assert export(run_dir, "saved_model", data_dir=synthetic_dir)["passed"]
    assert (run_dir / "saved_model" / "saved_model.pb").is_file() and not marker.exists()
    assert not list(run_dir.glob(".saved_model.*")), "old SavedModel left beside the new one"


def contents(path):
    """A file's bytes, or a folder's {relative path: bytes}."""
    if path.is_dir():
        return {p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()}
    return path.read_bytes()


@pytest.mark.parametrize("fmt", ["onnx", "saved_model"])
def test_failed_check_keeps_the_existing_export(exported, run_dir, synthetic_dir, monkeypatch, fmt):
    import digitlab.export

    before = contents(run_dir / FORMATS[fmt])
    failing = {
        "n": 100,
        "tolerance": ATOL,
        "max_abs_diff": 0.5,
        "argmax_agreement": 0.9,
        "argmax_mismatches": 10,
        "passed": False,
    }
    monkeypatch.setattr(digitlab.export, "check_export", lambda *args: dict(failing))
    result = invoke("export", run_dir, "--format", fmt, "--data-dir", synthetic_dir)
    assert result.exit_code == 1, result.output
    assert "argmax agrees on 90/100" in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "failed its check; nothing was replaced" in errors[0]
    assert contents(run_dir / FORMATS[fmt]) == before
    assert not list(run_dir.glob(f".{FORMATS[fmt]}.*")), "failed export left behind"
    record = runs.read_json(run_dir / runs.METRICS)["exports"][fmt]
    assert record["passed"] and record["last_failed_check"]["max_abs_diff"] == 0.5


def test_stale_onnx_export_is_refused(exported, run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    runs.update_json(copy / runs.METRICS, exports={"onnx": {"path": "model.onnx", "source_sha256": "0" * 64}})
    with pytest.raises(RunError, match="exported from an earlier model.keras"):
        load_predictor(copy, runtime="onnx")
    (copy / runs.MODEL).unlink()  # a deployment without model.keras: nothing to compare with
    assert load_predictor(copy, runtime="onnx").input_shape == (28, 28)


def test_unknown_format_is_one_line_error(run_dir):
    result = invoke("export", run_dir, "--format", "pickle")
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert errors == ["error: --format: expected one of onnx, tflite, saved_model, web, got 'pickle'"]


def test_run_without_model(tmp_path):
    with pytest.raises(RunError, match="no model.keras here"):
        export(tmp_path, "onnx")
    with pytest.raises(RunError, match="no such run directory"):
        export(tmp_path / "missing", "tflite")
    result = invoke("export", tmp_path / "missing")
    assert result.exit_code == 2 and "error: " in result.output and "no such run directory" in result.output


def test_onnx_runtime_needs_an_export(tmp_path):
    (tmp_path / runs.CONFIG).write_text("{}")
    with pytest.raises(RunError, match=r"no model.onnx here; make it with `digitlab export .* --format onnx`"):
        load_predictor(tmp_path, runtime="onnx")
    with pytest.raises(DigitlabError, match="--runtime: expected one of keras, onnx, got 'torch'"):
        load_predictor(tmp_path, runtime="torch")


def test_saved_model_out_never_replaces_another_folder(run_dir, tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(RunError, match="exists and is not a SavedModel"):
        export(run_dir, "saved_model", out=tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_check_images_must_be_positive(run_dir):
    with pytest.raises(DigitlabError, match="--check-images: expected a positive integer, got 0"):
        export(run_dir, "onnx", n=0)


def test_serve_on_onnx_runtime(run_dir, exported, test_images):
    from fastapi.testclient import TestClient

    from digitlab.serve import create_app

    client = TestClient(create_app(run_dir, runtime="onnx"))
    keras_probs = load_predictor(run_dir).predict_proba(test_images[:1])
    response = client.post("/api/predict", json={"pixels": test_images[0].tolist()})
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json()["probabilities"], keras_probs[0], atol=1e-4)


@pytest.mark.parametrize(
    "fmt, name, message",
    [
        ("onnx", "model.keras", "one of the run's own files"),
        ("onnx", "config.json", "one of the run's own files"),
        ("onnx", "model.tflite", "expected a .onnx file name for --format onnx"),
        ("tflite", "out.onnx", "expected a .tflite file name for --format tflite"),
    ],
)
def test_export_refuses_the_runs_own_files_and_a_wrong_suffix(tmp_path, fmt, name, message):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").write_bytes(b"the trained model")
    (run / "config.json").write_text("{}")
    with pytest.raises(DigitlabError, match=message):
        export(run, fmt, run / name)
    assert (run / "model.keras").read_bytes() == b"the trained model"


def test_presets_that_train_for_minutes_export_model_onnx_when_training_ends(tmp_path, synthetic_dir):
    """robust, accurate and numbers (export_onnx) leave a checked model.onnx, so that read, predict and
    serve run on ONNX Runtime; fast and the tutorial's do not (3-5 s against seconds of training)."""
    import dataclasses

    from digitlab.config import ModelConfig, resolve_configs
    from digitlab.predict import choose_runtime
    from digitlab.training import train

    assert all(resolve_configs(p)[1].export_onnx for p in ("robust", "accurate", "numbers"))
    assert not any(resolve_configs(p)[1].export_onnx for p in ("fast", "tutorial"))
    train_cfg = dataclasses.replace(
        resolve_configs("robust", epochs=1, batch_size=32, dataset="synthetic", calibrate_wild=0)[1],
        outliers=0.0,
        calibrate_nondigits=0,
    )
    model_cfg = ModelConfig(architecture="cnn", filters=(4, 8))
    metrics = train(model_cfg, train_cfg, tmp_path / "run", data_dir=synthetic_dir, verbose=0)
    assert metrics["exports"]["onnx"]["passed"] and (tmp_path / "run" / runs.ONNX).is_file()
    assert choose_runtime(tmp_path / "run") == "onnx"
