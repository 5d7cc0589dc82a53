"""The one-file HTML report of a run: self-contained, escaped, and rendered by headless Chromium."""

import json
import re
import shutil

import pytest
from typer.testing import CliRunner

from digitlab.cli import app
from digitlab.errors import RunError
from digitlab.report import build_report, table

HEADINGS = ["Summary", "Data", "Model", "Training", "Learning-rate finder", "Test set", "Calibration", "Environment"]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, synthetic_mlp_run):
    """This module's copy of the session's small MLP run: the report writes into it."""
    return shutil.copytree(synthetic_mlp_run, tmp_path_factory.mktemp("report") / "small-run")


@pytest.fixture(scope="module")
def report(small_run, synthetic_dir):
    """The report of the small run through the CLI, with a learning-rate range test run into it first
    (and `evaluate`, since the run has no test figures yet)."""
    result = CliRunner().invoke(app, ["report", str(small_run), "--lr-find", "--data-dir", str(synthetic_dir)])
    assert result.exit_code == 0, result.output
    return small_run / "report.html"


def test_build_report_only_reads_a_run(tmp_path, synthetic_mlp_run):
    run = shutil.copytree(synthetic_mlp_run, tmp_path / "run")
    with pytest.raises(RunError, match="no test figures yet; run `digitlab evaluate"):
        build_report(run)
    assert not (run / "report.html").exists() and "test" not in json.loads((run / "metrics.json").read_text())


def test_report_is_self_contained(report, small_run):
    assert report == small_run / "report.html"
    html = report.read_text()
    assert 'src="http' not in html and 'href="http' not in html
    assert "<link" not in html and "<script" not in html and "@import" not in html and "url(" not in html
    images = re.findall(r'<img src="([^"]+)"', html)
    assert len(images) == 9 and all(src.startswith("data:image/png;base64,") for src in images)
    for heading in HEADINGS:
        assert f"<h2>{heading}</h2>" in html


def test_report_evaluates_on_the_test_set_when_needed(report, small_run):
    test = json.loads((small_run / "metrics.json").read_text())["test"]
    html = report.read_text()
    assert f"{test['accuracy']:.2%}" in html
    assert "evaluated while writing this report" in html
    assert (small_run / "lr_find.png").is_file()
    for layer in ("dense_0", "Dense", "probabilities", "(batch, 16)"):
        assert layer in html


def test_report_escapes_text():
    assert table(["<b>"], [["<script>alert(1)</script>"]]) == (
        "<table><thead><tr><th>&lt;b&gt;</th></tr></thead>"
        "<tbody><tr><td>&lt;script&gt;alert(1)&lt;/script&gt;</td></tr></tbody></table>"
    )


def test_report_cli_and_errors(small_run, synthetic_dir, tmp_path):
    out = tmp_path / "elsewhere" / "r.html"
    result = CliRunner().invoke(app, ["report", str(small_run), "--out", str(out), "--data-dir", str(synthetic_dir)])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output and out.is_file()
    assert "Test figures from an earlier" in out.read_text()  # the test figures were reused
    with pytest.raises(RunError, match="no model.keras here"):
        build_report(tmp_path)
    result = CliRunner().invoke(app, ["report", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "error: " in result.output and "no such run directory" in result.output


@pytest.mark.browser
@pytest.mark.slow
def test_report_renders_offline_in_chromium(report, small_run, artifacts, browser):
    accuracy = json.loads((small_run / "metrics.json").read_text())["test"]["accuracy"]
    requests = []
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    try:
        page.on("request", lambda request: requests.append(request.url))

        def only_local(route):  # record and block anything that would leave the machine
            if route.request.url.startswith(("file:", "data:")):
                route.continue_()
            else:
                route.abort()

        page.route("**/*", only_local)
        page.goto(report.as_uri(), wait_until="load")
        assert page.title() == f"digitlab report: {small_run.name}"
        assert page.locator("h1").inner_text() == f"digitlab report: {small_run.name}"
        assert page.locator("h2").all_inner_texts() == HEADINGS
        images = page.eval_on_selector_all("img", "els => els.map(e => [e.complete, e.naturalWidth, e.alt])")
        assert len(images) == 9
        assert all(complete and width > 0 for complete, width, _ in images), images
        assert f"{accuracy:.2%}" in page.locator("#test").inner_text()
        page.screenshot(path=str(artifacts / "report.png"), full_page=True)
    finally:
        page.close()
    assert requests and all(url.startswith(("file:", "data:")) for url in requests), requests


def test_mistakes_show_the_calibrated_confidence_that_predict_gives(tmp_path, synthetic_mlp_run, synthetic_dir):
    """A run whose temperature moves every confidence, on a test set whose labels are all shifted by one
    (every digit a mistake): the report, metrics.json and `predict --index` agree on each confidence."""
    import numpy as np

    from digitlab.data import write_idx
    from digitlab.evaluation import evaluate
    from digitlab.predict import predict_test_indices

    run = shutil.copytree(synthetic_mlp_run, tmp_path / "run")
    calibration = json.loads((run / "calibration.json").read_text())
    (run / "calibration.json").write_text(json.dumps({**calibration, "temperature": 3.0}))
    data = shutil.copytree(synthetic_dir, tmp_path / "data")
    write_idx(data / "t10k-labels-idx1-ubyte", ((np.arange(100) % 10 + 1) % 10).astype(np.uint8))
    test = evaluate(run, data_dir=data)
    shown = test["most_confident_mistakes"][:5]
    predicted = predict_test_indices(run, [m["index"] for m in shown], data_dir=data)
    for mistake, row in zip(shown, predicted):
        assert mistake["confidence"] == pytest.approx(row["confidence"], abs=1e-6)
    html = build_report(run, data_dir=data).read_text()
    assert "calibrated confidence" in html and f'<td class="num">{shown[0]["confidence"]:.2%}</td>' in html


def test_report_has_no_literal_backticks_and_a_full_width_confusion_matrix(report, small_run, synthetic_dir, tmp_path):
    html = build_report(small_run, tmp_path / "again.html", data_dir=synthetic_dir).read_text()  # reused figures
    assert "`" not in html and "<code>digitlab" in html
    test_section = html[html.index('<section id="test">') :]
    confusion = test_section.index('alt="Rows: true class; columns: predicted"')
    # the matrix stands in a figure of its own, the report's full width, not in a column of the grid
    assert test_section.rfind('<figure class="full">', 0, confusion) > test_section.rfind("<div", 0, confusion)


def test_curves_have_whole_epoch_ticks():
    from digitlab.plots import curves_figure

    rows = [{"epoch": e, "loss": 1.0 / e, "accuracy": 0.5, "val_loss": 1.0, "val_accuracy": 0.5} for e in (1, 2)]
    for ax in curves_figure(rows).axes:
        ticks = [t for t in ax.get_xticks() if 1 <= t <= 2]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_reliability_diagram_shows_each_bins_count():
    import numpy as np

    from digitlab.metrics import confidence_bins
    from digitlab.plots import reliability_figure

    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(10) * 0.3, size=200).astype("float32")
    y = rng.integers(0, 10, 200)
    conf, right = probs.max(axis=1), probs.argmax(axis=1) == y  # each answer's confidence, and whether it is right
    texts = [t.get_text() for t in reliability_figure(conf, conf, right, 5).axes[0].texts]
    counts = np.bincount(confidence_bins(conf, 5), minlength=5)
    assert sorted(texts) == sorted(f"n={n}" for n in counts if n)
