"""The tuning ladder: `run_experiments(quick=True)` on the synthetic set, and `digitlab experiments --quick`
on real MNIST through the CLI runner."""

import csv
import json

import pytest
from typer.testing import CliRunner

from digitlab import experiments
from digitlab.cli import app
from digitlab.errors import DigitlabError, RunError
from digitlab.experiments import COLUMNS, ladder, run_experiments

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NAMES = [s.name for s in ladder()]


def read_results(out):
    with open(out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def quick_ladder(tmp_path_factory, synthetic_dir):
    out = tmp_path_factory.mktemp("experiments") / "ladder"
    calls = []
    results = run_experiments(
        out,
        quick=True,
        dataset="synthetic",
        data_dir=synthetic_dir,
        on_step=lambda number, total, step, row: calls.append((number, total, step.name, row)),
    )
    return out, results, calls


@pytest.mark.slow  # the ladder trains seven models: 35-45 s on 2 cores
def test_quick_ladder_writes_every_step_and_the_tables(quick_ladder):
    out, results, calls = quick_ladder
    assert [r["name"] for r in results] == NAMES
    assert [r["step"] for r in results] == list(range(1, len(NAMES) + 1))
    rows = read_results(out)
    assert list(rows[0]) == COLUMNS
    assert [r["name"] for r in rows] == NAMES
    for row, result in zip(rows, results):
        if result["kind"] == "train":
            run = out / row["name"]
            # the table reports what the step's own run measured
            metrics = json.loads((run / "metrics.json").read_text())
            for key, split in (
                ("train_accuracy", "train"),
                ("validation_accuracy", "validation"),
                ("test_accuracy", "test"),
            ):
                assert float(row[key]) == pytest.approx(metrics[split]["accuracy"], abs=1e-6), (row["name"], key)
            assert float(row["test_loss"]) == pytest.approx(metrics["test"]["loss"], abs=1e-6)
            assert float(row["test_loss"]) > 0
            for name in (
                "config.json",
                "model.keras",
                "history.csv",
                "curves.png",
                "metrics.json",
                "environment.json",
                "confusion_matrix.png",
                "calibration.json",
            ):
                assert (run / name).is_file(), (row["name"], name)
        else:
            assert row["test_accuracy"] == "" and "suggested learning rate" in row["what_changed"]
            assert (out / row["name"] / "lr_find.png").read_bytes()[:8] == PNG_MAGIC
        assert float(row["seconds"]) > 0
    # the synthetic classes are easy for the CNN, while two or three epochs of a tiny MLP on 240 images stay
    # near chance: the ladder's last lesson holds on them too
    accuracy = {r["name"]: float(r["test_accuracy"]) for r in rows if r["test_accuracy"]}
    assert accuracy["07-cnn-fast"] > 0.9
    assert float(rows[NAMES.index("07-cnn-fast")]["validation_accuracy"]) > 0.9
    assert accuracy["07-cnn-fast"] > max(a for name, a in accuracy.items() if "mlp" in name) + 0.3
    md = [line for line in (out / "results.md").read_text().splitlines() if line.startswith("|")]
    assert md[0].startswith("| step | name | what changed | train accuracy")
    assert len(md) == 2 + len(NAMES)
    for name in ("ladder.png", "report.html"):
        assert (out / name).is_file()
    assert (out / "ladder.png").read_bytes()[:8] == PNG_MAGIC
    # a start and an end call per step, in order
    assert [(n, row is None) for n, _, _, row in calls] == [(n, s) for n in range(1, 8) for s in (True, False)]
    assert all(total == len(NAMES) for _, total, _, _ in calls)


@pytest.mark.slow  # the ladder trains seven models: 35-45 s on 2 cores
def test_quick_ladder_trains_what_the_tutorial_did(quick_ladder):
    out, results, _ = quick_ladder
    import json

    config = {r["name"]: json.loads((out / r["name"] / "config.json").read_text()) for r in results}
    raw, norm = config["01-mlp-4-4-raw"], config["02-mlp-4-4-normalised"]
    assert raw["model"]["units"] == [4, 4] and raw["model"]["normalize"] is False
    assert norm["model"]["normalize"] is True
    assert raw["train"]["batch_size"] == 32 and raw["train"]["schedule"] == "constant"
    assert config["04-mlp-4-4-lr0.01"]["train"]["learning_rate"] == 0.01
    assert config["06-mlp-10-10"]["model"]["units"] == [10, 10]
    assert config["07-cnn-fast"]["model"]["architecture"] == "cnn"
    # --quick shortens each step by the same rule, and every step has the same seed and split
    epochs = [config[n]["train"]["epochs"] for n in ("01-mlp-4-4-raw", "04-mlp-4-4-lr0.01", "05-mlp-4-4-long")]
    assert epochs == [2, 2, 3]  # a twentieth of 20, 40, 60 epochs, at least 2
    assert {c["train"]["seed"] for c in config.values()} == {42}
    assert {c["train"]["split_seed"] for c in config.values()} == {42}
    html = (out / "report.html").read_text()
    assert "the tuning ladder" in html and "data:image/png;base64," in html
    assert 'src="http' not in html and 'href="http' not in html


def test_full_ladder_keeps_the_tutorials_settings():
    steps = {s.name: s for s in ladder(with_accurate=True)}
    model, train = experiments.step_configs(steps["05-mlp-4-4-long"], quick=False, seed=7, dataset="mnist")
    assert model.units == (4, 4) and train.epochs == 60 and train.learning_rate == 1e-3 and train.seed == 7
    assert train.limit is None and train.batch_size == 32
    assert list(steps)[-1] == "08-cnn-accurate"


def test_existing_experiments_are_not_overwritten(tmp_path, synthetic_dir):
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(RunError, match="already holds files; choose another --out or pass --overwrite"):
        run_experiments(tmp_path, quick=True, dataset="synthetic", data_dir=synthetic_dir)


def test_missing_accurate_preset_fails_before_training(tmp_path, synthetic_dir, monkeypatch):
    from digitlab import config

    monkeypatch.delitem(config.PRESETS, "accurate", raising=False)
    with pytest.raises(DigitlabError, match="needs the 'accurate' preset, which digitlab.config does not define"):
        run_experiments(tmp_path / "x", quick=True, with_accurate=True, dataset="synthetic", data_dir=synthetic_dir)
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_cli_quick_ladder_on_mnist(tmp_path, mnist):
    out = tmp_path / "experiments"
    result = CliRunner().invoke(app, ["experiments", "--quick", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "[1/7] 01-mlp-4-4-raw" in result.output and "[7/7] done in" in result.output
    rows = read_results(out)
    assert [r["name"] for r in rows] == NAMES
    accuracy = {r["name"]: float(r["validation_accuracy"] or 0) for r in rows}
    # even 5,000 images and two or three epochs show the ladder's first lesson and its last
    assert accuracy["02-mlp-4-4-normalised"] > accuracy["01-mlp-4-4-raw"]
    assert accuracy["07-cnn-fast"] > max(a for name, a in accuracy.items() if "mlp" in name)
    assert accuracy["07-cnn-fast"] > 0.4
    assert (out / "report.html").is_file()


def test_cli_help_and_errors(tmp_path, synthetic_dir):
    runner = CliRunner()
    result = runner.invoke(app, ["experiments", "--help"])
    assert result.exit_code == 0 and "--quick" in result.output and "--with-accurate" in result.output
    (tmp_path / "old.txt").write_text("x")
    result = runner.invoke(
        app,
        ["experiments", "--quick", "--out", str(tmp_path), "--dataset", "synthetic", "--data-dir", str(synthetic_dir)],
    )
    assert result.exit_code == 2
    assert [line for line in result.output.splitlines() if line.startswith("error:")] == [
        f"error: {tmp_path}: already holds files; choose another --out or pass --overwrite to replace them"
    ]


@pytest.mark.slow  # the ladder trains seven models: 35-45 s on 2 cores
def test_a_quick_ladder_says_so_with_the_epochs_it_ran(quick_ladder):
    out, results, _ = quick_ladder
    md = (out / "results.md").read_text()
    assert md.startswith("**A --quick smoke run") and "--quick" in (out / "report.html").read_text()
    for r in results:
        if r["kind"] == "train" and "epoch" in r["what_changed"]:  # the steps whose text names their epochs
            epochs = json.loads((out / r["name"] / "config.json").read_text())["train"]["epochs"]
            assert f"{epochs} epochs" in r["what_changed"], r["what_changed"]
    assert "20 epochs" not in md and "40 epochs" not in md and "60 epochs" not in md
