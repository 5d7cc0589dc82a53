"""The same code on Keras's other backends: a GPU machine runs digitlab with KERAS_BACKEND=jax (it has no
TensorFlow), so that path is exercised here on the CPU. The backend is fixed when Keras is imported, so
the commands run in a subprocess: one process runs them in turn through the console script's `main`, so
that JAX and Keras are imported once."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

BACKENDS = ["jax"]

# Runs each command of argv[1] (a JSON list of argument lists) through digitlab's console script, in turn,
# and prints one JSON line per command: its exit code and what it printed.
RUN_COMMANDS = """
import contextlib, io, json, sys
from digitlab.cli import main
for args in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    sys.argv = ["digitlab", *args]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main()
            code = 0
        except SystemExit as e:
            code = e.code or 0
    print(json.dumps({"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}), flush=True)
    if code:
        break
"""


def cli(*commands: list[str], backend: str, data_dir) -> list[dict]:
    """Each command's exit code, stdout and stderr; the commands after a failing one do not run."""
    env = {**os.environ, "KERAS_BACKEND": backend, "DIGITLAB_DATA_DIR": str(data_dir), "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
        [sys.executable, "-c", RUN_COMMANDS, json.dumps([list(c) for c in commands])],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])  # the fast preset's and the accurate preset's
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.slow
def test_train_predict_evaluate_on_another_backend(backend, precision, tmp_path, synthetic_dir):
    pytest.importorskip(backend)
    run = tmp_path / "run"
    image = tmp_path / "digit.png"
    from PIL import Image

    grid = np.zeros((28, 28), np.uint8)
    grid[5:8, 8:20] = 230  # a "7": a bar and a stroke down (a lone block would be refused as a dot)
    grid[8:24, 16:19] = 230
    Image.fromarray(grid).save(image)
    # The fast preset's CNN and one-cycle schedule, plus the augmentation path, for two short epochs; without
    # non-digits, which two epochs of the tiny set do not learn (test_nondigits trains them).
    train = [
        "train",
        "--dataset",
        "synthetic",
        "--epochs",
        "2",
        "--batch-size",
        "32",
        "--shift",
        "2",
        "--outliers",
        "0",
    ]
    train += ["--rotate", "10", "--precision", precision, "--out", str(run), "--quiet"]
    trained, evaluated, predicted = cli(
        train,
        ["evaluate", str(run)],
        ["predict", str(run), str(image), "--json"],
        backend=backend,
        data_dir=synthetic_dir,
    )
    assert trained["code"] == 0, trained["stderr"][-3000:]
    environment = json.loads((run / "environment.json").read_text())
    assert environment["keras_backend"] == backend
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["architecture"] == "cnn" and config["train"]["precision"] == precision
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 2
    assert metrics["validation"]["accuracy"] > 0.9, metrics["validation"]  # the synthetic classes are easy

    assert evaluated["code"] == 0, evaluated["stderr"][-3000:]
    assert "test accuracy" in evaluated["stdout"]
    assert json.loads((run / "metrics.json").read_text())["test"]["accuracy"] > 0.9

    assert predicted["code"] == 0, predicted["stderr"][-3000:]
    (row,) = json.loads(predicted["stdout"])
    assert row["file"].endswith("digit.png") and len(row["top3"]) == 3

    # The same weights give the same probabilities on TensorFlow: the saved model is backend-neutral.
    from digitlab.predict import load_predictor
    from digitlab.preprocess import preprocess

    tf_probs = load_predictor(run).predict_proba(preprocess(image).digit[None])[0]
    assert row["confidence"] == pytest.approx(float(tf_probs.max()), abs=1e-3)
