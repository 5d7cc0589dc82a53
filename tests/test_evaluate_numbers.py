"""`digitlab evaluate --numbers N`: either kind of run reads whole numbers composed from the test split."""

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from digitlab.cli import app
from digitlab.data.synth.numbers import SUBSETS
from digitlab.errors import DigitlabError
from digitlab.evaluation import evaluate_numbers


@pytest.mark.parametrize("fixture", ["synthetic_cnn_run", "tiny_line_run"])
def test_either_kind_reads_numbers_of_every_subset_and_length(fixture, request, tmp_path, synthetic_dir):
    run = tmp_path / "run"
    shutil.copytree(request.getfixturevalue(fixture), run)
    seen = []
    result = evaluate_numbers(run, 8, data_dir=synthetic_dir, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (8 * len(SUBSETS), 8 * len(SUBSETS)) and len(seen) == 8 * len(SUBSETS)
    assert result["method"] == ("line" if fixture == "tiny_line_run" else "segment")
    rows = result["rows"]
    assert [r["subset"] for r in rows if r["length"] == "all"] == list(SUBSETS)
    assert sorted({r["length"] for r in rows if r["length"] != "all"}) == list(range(1, 9))
    for r in rows:
        assert 0.0 <= r["exact"] <= 1.0 and 0.0 <= r["character_error_rate"] <= 1.0 and 0.0 <= r["unsure"] <= 1.0
    every = [r for r in rows if r["length"] == "all"]
    assert result["exact"] == pytest.approx(np.mean([r["exact"] for r in every]))  # equal counts per subset
    assert 0.0 <= result["exact_at_coverage"] <= 1.0
    assert (run / "numbers.png").stat().st_size > 10_000
    assert json.loads((run / "metrics.json").read_text())["numbers"]["rows"] == rows


def test_the_same_numbers_for_every_evaluation(synthetic_cnn_run, tmp_path, synthetic_dir):
    run = tmp_path / "run"
    shutil.copytree(synthetic_cnn_run, run)
    a = evaluate_numbers(run, 2, data_dir=synthetic_dir)
    b = evaluate_numbers(run, 2, data_dir=synthetic_dir)
    assert a["rows"] == b["rows"]


def test_numbers_count_must_be_positive(synthetic_cnn_run, tmp_path, synthetic_dir):
    with pytest.raises(DigitlabError, match="--numbers"):
        evaluate_numbers(synthetic_cnn_run, 0, data_dir=synthetic_dir)
    before = (synthetic_cnn_run / "metrics.json").read_bytes()
    result = CliRunner().invoke(app, ["evaluate", str(synthetic_cnn_run), "--numbers", "-3"])
    assert result.exit_code == 2 and "--numbers" in result.output
    assert (synthetic_cnn_run / "metrics.json").read_bytes() == before  # refused before anything is written


def test_evaluate_command_prints_the_numbers_table(synthetic_mlp_run, tmp_path, synthetic_dir):
    run = tmp_path / "run"
    shutil.copytree(synthetic_mlp_run, run)
    result = CliRunner().invoke(
        app, ["evaluate", str(run), "--numbers", "2", "--data-dir", str(synthetic_dir)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    for subset in SUBSETS:
        assert any(line.split()[:2] == [subset, "2"] for line in result.output.splitlines()), subset
    assert "numbers read exactly:" in result.output and "numbers.png" in result.output
