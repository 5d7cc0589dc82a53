"""The tuning ladder: `digitlab experiments --quick` on real MNIST through the CLI runner, run once for the
module (seven trainings), its tables, runs and callbacks checked by several tests; errors on the synthetic set."""

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
def quick_ladder(tmp_path_factory, mnist):
    """`digitlab experiments --quick` on MNIST: (out, what run_experiments returned, its on_step calls, the
    command's output)."""
    out = tmp_path_factory.mktemp("experiments") / "ladder"
    calls, returned = [], []
    run_experiments = experiments.run_experiments

    def recording(*args, on_step, **kwargs):
        def record(number, total, step, row):
            calls.append((number, total, step.name, row))
            on_step(number, total, step, row)

        returned.append(run_experiments(*args, on_step=record, **kwargs))
        return returned[-1]

    with pytest.MonkeyPatch.context() as patch:  # the command imports run_experiments when it runs
        patch.setattr(experiments, "run_experiments", recording)
        result = CliRunner().invoke(app, ["experiments", "--quick", "--out", str(out)])
    assert result.exit_code == 0, result.output
    (results,) = returned
    return out, results, calls, result.output


@pytest.mark.slow  # the ladder trains seven models: 35-45 s on 2 cores
def test_quick_ladder_writes_every_step_and_the_tables(quick_ladder):
    out, results, calls, _ = quick_ladder
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
            # the finder's conclusion: on 5,000 MNIST images and the quick ladder's few steps, the loss never falls
            found = result["suggested_lr"]
            conclusion = f"; suggested learning rate {found:.2g}" if found else "; the loss never fell"
            assert row["test_accuracy"] == "" and row["what_changed"] == result["what_changed"]
            assert row["what_changed"].endswith(conclusion), row["what_changed"]
            assert (out / row["name"] / "lr_find.png").read_bytes()[:8] == PNG_MAGIC
        assert float(row["seconds"]) > 0
    # even 5,000 images and two or three epochs show the ladder's first lesson and its last: the CNN (about
    # 95 %) well above every MLP (at most about 76 %)
    accuracy = {r["name"]: float(r["test_accuracy"]) for r in rows if r["test_accuracy"]}
    validation = {r["name"]: float(r["validation_accuracy"] or 0) for r in rows}
    assert validation["02-mlp-4-4-normalised"] > validation["01-mlp-4-4-raw"]
    assert accuracy["07-cnn-fast"] > 0.9 and validation["07-cnn-fast"] > 0.9
    assert accuracy["07-cnn-fast"] > max(a for name, a in accuracy.items() if "mlp" in name) + 0.15
    assert validation["07-cnn-fast"] > max(a for name, a in validation.items() if "mlp" in name) + 0.15
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
    out, results, _, _ = quick_ladder
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


@pytest.mark.slow  # the ladder trains seven models: 35-45 s on 2 cores
def test_cli_quick_ladder_on_mnist(quick_ladder):
    out, _, _, output = quick_ladder
    assert "[1/7] 01-mlp-4-4-raw" in output and "[7/7] done in" in output
    # one line as each step starts and one as it ends, in order
    steps = [line.split("]")[0] + "]" for line in output.splitlines() if line.startswith("[")]
    assert steps == [f"[{n}/7]" for n in range(1, 8) for _ in range(2)]
    assert [line for line in output.splitlines() if line.startswith("wrote")] == [
        f"wrote {out / name}" for name in ("results.md", "results.csv", "ladder.png", "report.html")
    ]
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
    out, results, _, _ = quick_ladder
    md = (out / "results.md").read_text()
    assert md.startswith("**A --quick smoke run") and "--quick" in (out / "report.html").read_text()
    for r in results:
        if r["kind"] == "train" and "epoch" in r["what_changed"]:  # the steps whose text names their epochs
            epochs = json.loads((out / r["name"] / "config.json").read_text())["train"]["epochs"]
            assert f"{epochs} epochs" in r["what_changed"], r["what_changed"]
    assert "20 epochs" not in md and "40 epochs" not in md and "60 epochs" not in md
