"""`digitlab batch`: the same answers as `predict` and `read`, one Parquet row per file, resumable, and the
same rows on Ray's workers as in one process."""

import hashlib
import importlib.util
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from digitlab import runs
from digitlab.batch import Interrupted, output, run_batch
from digitlab.batch.reader import BatchReader
from digitlab.batch.sources import list_source
from digitlab.cli import app
from digitlab.data.synth.numbers import compose_numbers
from digitlab.errors import DigitlabError
from digitlab.export import export
from digitlab.predict import load_predictor, predict_files, share_threads
from digitlab.predict.reading import read_files

pq = pytest.importorskip("pyarrow.parquet")
runner = CliRunner()
HAS_RAY = importlib.util.find_spec("ray") is not None
COMPARED = ("path", "digit", "unsure", "reason", "error", "run_id", "model_digest")
NUMBER_COLUMNS = ("path", "text", "confidence", "unsure", "reason", "error")
pytestmark = pytest.mark.slow  # every test reads real MNIST scans; most with the fast MNIST run


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result, *fragments):
    assert result.exit_code != 0, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def rows(out) -> list[dict]:
    return sorted(pq.read_table(out).to_pylist(), key=lambda r: r["path"])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, trained_run):
    """This module's copy of the session's fast MNIST run, exported to ONNX."""
    run = shutil.copytree(trained_run, tmp_path_factory.mktemp("batch") / "fast")
    assert export(run, "onnx", n=100)["passed"]
    return run


@pytest.fixture(scope="module")
def images(tmp_path_factory, mnist):
    """300 MNIST test digits as scans (dark ink on white, 84 px) in two folders, PNG and JPEG, plus a
    blank page and a file that is not an image."""
    root = tmp_path_factory.mktemp("scans")
    for i in range(300):
        folder = root / ("png" if i % 2 else Path("jpeg") / "deep")
        folder.mkdir(parents=True, exist_ok=True)
        img = Image.fromarray(255 - mnist.x_test[i]).resize((84, 84))
        img.save(folder / f"{i:04d}.png") if i % 2 else img.convert("RGB").save(folder / f"{i:04d}.jpg", quality=92)
    Image.new("L", (60, 60), 255).save(root / "png" / "blank.png")
    (root / "png" / "broken.png").write_bytes(b"not an image")
    return root


@pytest.fixture(scope="module")
def numbers(tmp_path_factory, mnist):
    """36 generated numbers of MNIST test digits (12 lines of separated digits, 12 of touching ones, 12
    pages of 2-3 lines), PNG and JPEG, plus a blank page and a file that is not an image; and their texts."""
    root = tmp_path_factory.mktemp("numbers")
    texts = {}
    made = [
        n for subset in ("separated", "close", "lines") for n in compose_numbers(mnist.x_test, mnist.y_test, subset, 12)
    ]
    for i, number in enumerate(made):
        img = Image.fromarray(number.image).resize((number.image.shape[1] * 3, number.image.shape[0] * 3))
        path = root / (f"{i:03d}.png" if i % 2 else f"{i:03d}.jpg")
        img.save(path) if i % 2 else img.convert("RGB").save(path, quality=92)
        texts[str(path)] = number.text
    Image.new("L", (200, 80), 255).save(root / "blank.png")
    (root / "broken.png").write_bytes(b"not an image")
    return root, texts


def readings(predictor, folder) -> list[list]:
    """`digitlab read`'s rows for every file of `folder` (digitlab.read on each), as batch's columns."""
    renamed = [{**r, "path": r["file"]} for r in read_files(predictor, [folder])]
    return sorted([[r.get(k) for k in NUMBER_COLUMNS] for r in renamed], key=lambda r: r[0])


def same_readings(got: list[dict], want: list[list]) -> None:
    assert [r[0] for r in want] == [r["path"] for r in got]
    for row, expected in zip(got, want):
        wanted = dict(zip(NUMBER_COLUMNS, expected))
        assert {k: row[k] for k in NUMBER_COLUMNS if k != "confidence"} == {
            k: v for k, v in wanted.items() if k != "confidence"
        }, row["path"]
        assert row["confidence"] == pytest.approx(wanted["confidence"], abs=1e-6)


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray of two CPUs for this module's Ray tests, as CI starts it."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_source_forms_folder_glob_list_and_uri(images, tmp_path):
    folder = list_source(str(images)).files
    assert len(folder) == 302 and folder == sorted(folder)
    assert list_source(str(images / "png" / "*.png")).files == [p for p in folder if "/png/" in p]
    listing = tmp_path / "list.txt"
    listing.write_text(f"# scans\n{images}/png/0001.png\n\n{images}/png/0003.png\n{images}/png/0001.png\nmissing.png\n")
    listed = [f"{images}/png/0001.png", f"{images}/png/0003.png", f"{tmp_path}/missing.png"]
    assert list_source(str(listing)).files == listed
    assert list_source(f"file://{images}").files == [f"file://{p}" for p in folder]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DigitlabError, match=r"SOURCE .*empty: no images found \(expected .*\.png"):
        list_source(str(tmp_path / "empty"))
    with pytest.raises(DigitlabError, match="SOURCE .*nowhere: no such file or folder"):
        list_source(str(tmp_path / "nowhere"))


def test_local_engine_gives_predicts_answers_one_row_per_file(run_dir, images, tmp_path, mnist):
    out = tmp_path / "results.parquet"
    result = invoke("batch", run_dir, images, "--out", out, "--engine", "local", "--runtime", "keras")
    assert result.exit_code == 1, result.output  # one file could not be read, the others were
    assert "read 302 files" in result.output and ": 1 error," in result.output
    got = {r["path"]: r for r in rows(out)}
    assert list(pq.read_schema(next(out.glob("part-*.parquet"))).names) == output.schema("digit").names
    expected = predict_files(load_predictor(run_dir), [images])
    assert len(got) == len(expected) == 302
    for want in expected:
        row = got[str(want["file"])]
        if want.get("error"):
            assert row["error"] == want["error"] and row["digit"] is None
            continue
        assert row["error"] is None
        assert (row["digit"], row["unsure"], row["reason"]) == (want["digit"], want["unsure"], want["reason"])
        assert row["confidence"] == pytest.approx(want["confidence"], abs=1e-6)
    assert "not an image" in got[f"{images}/png/broken.png"]["error"]
    assert got[f"{images}/png/blank.png"]["reason"] == "no ink found in the image"
    assert {r["run_id"] for r in got.values()} == {"fast"}
    assert {r["model_digest"] for r in got.values()} == {
        "sha256:" + hashlib.sha256((run_dir / runs.MODEL).read_bytes()).hexdigest()
    }
    right = sum(r["digit"] == mnist.y_test[int(Path(p).stem)] for p, r in got.items() if r["digit"] is not None)
    assert right >= 0.9 * 300  # the digits themselves are read, not only recorded


def test_a_crash_keeps_finished_parts_and_the_rerun_reads_only_the_rest(run_dir, images, tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setattr(output, "PART_ROWS", 64)  # a part every two batches of 32

    def crash(done, total):
        if done >= 160:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted) as stopped:
        run_batch(run_dir, str(images), out, engine="local", runtime="onnx", batch_size=32, progress=crash)
    parts = sorted(p.name for p in out.glob("part-*.parquet"))
    # The schema's empty part, two of 64 rows, and the 32 rows in hand when the interrupt came.
    assert parts == [f"part-00000{i}.parquet" for i in range(4)]
    assert not [p for p in out.iterdir() if runs.is_temporary(p)]
    assert len(rows(out)) == stopped.value.rows == 160
    summary = run_batch(run_dir, str(images), out, engine="local", runtime="onnx", batch_size=32)
    assert (summary["skipped"], summary["files"], summary["rows"]) == (160, 142, 302)
    paths = [r["path"] for r in rows(out)]
    assert len(paths) == len(set(paths)) == 302
    again = run_batch(run_dir, str(images), out, engine="local", runtime="onnx")
    assert (again["files"], again["skipped"], again["parts"]) == (0, 302, 0)


def test_an_out_of_another_model_or_task_is_refused_unless_overwrite(run_dir, images, tmp_path):
    out = tmp_path / "out"
    source = images / "png" / "000*.png"
    assert invoke("batch", run_dir, source, "--out", out, "--engine", "local", "--runtime", "onnx").exit_code == 0
    before = sorted(p.name for p in out.iterdir())
    result = invoke("batch", run_dir, source, "--out", out, "--engine", "local", "--runtime", "keras")
    one_line_error(result, f"--out {out}", "written with the onnx runtime; this job uses keras", "--runtime onnx")
    assert sorted(p.name for p in out.iterdir()) == before  # nothing already saved is lost
    result = invoke("batch", run_dir, source, "--out", out, "--engine", "local", "--runtime", "keras", "--overwrite")
    assert result.exit_code == 0, result.output
    assert runs.read_json(out / output.MANIFEST)["runtime"] == "keras" and len(rows(out)) == 5
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    one_line_error(invoke("batch", run_dir, source, "--out", foreign, "--engine", "local"), "notes.txt")
    (tmp_path / "file.parquet").write_bytes(b"x")
    one_line_error(invoke("batch", run_dir, source, "--out", tmp_path / "file.parquet", "--engine", "local"), "a file")


def test_bad_input_is_one_line(run_dir, images, tmp_path):
    out = tmp_path / "out"
    (tmp_path / "empty").mkdir()
    one_line_error(invoke("batch", run_dir, tmp_path / "empty", "--out", out, "--engine", "local"), "no images found")
    bare = shutil.copytree(run_dir, tmp_path / "bare")
    (bare / runs.ONNX).unlink()
    result = invoke("batch", bare, images, "--out", out, "--engine", "local", "--runtime", "onnx")
    one_line_error(result, "no model.onnx", f"digitlab export {bare}")
    one_line_error(invoke("batch", run_dir, images, "--out", out, "--engine", "spark"), "--engine", "ray, local")
    one_line_error(invoke("batch", run_dir, images, "--out", out, "--engine", "local", "--workers", "2"), "--workers")
    assert not out.exists()


@pytest.mark.skipif(not HAS_RAY, reason="needs the scale extra")
def test_an_unreachable_address_is_one_line_naming_it(run_dir, images, tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "out"
    result = invoke("batch", run_dir, images, "--out", out, "--engine", "ray", "--address", f"127.0.0.1:{port}")
    one_line_error(result, f"--address 127.0.0.1:{port}", "unreachable")
    assert not out.exists()


def test_local_engine_imports_neither_ray_nor_tensorflow(run_dir, images, tmp_path):
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from digitlab.cli import app\n"
        f"r = CliRunner().invoke(app, ['batch', {str(run_dir)!r}, {str(images / 'png')!r}, '--out', "
        f"{str(tmp_path / 'out')!r}, '--engine', 'local', '--runtime', 'onnx', '-q'])\n"
        "assert r.exit_code == 1, r.output\n"  # broken.png's error row
        "print(sorted(m for m in ('ray', 'tensorflow', 'keras') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_number_task_gives_reads_answers_one_row_per_file(run_dir, numbers, tmp_path):
    folder, texts = numbers
    out = tmp_path / "numbers.parquet"
    result = invoke("batch", run_dir, folder, "--out", out, "--task", "number", "--engine", "local")
    assert result.exit_code == 1, result.output  # one file could not be read, the others were
    assert "read 38 files" in result.output and ": 1 error," in result.output
    assert list(pq.read_schema(next(out.glob("part-*.parquet"))).names) == output.schema("number").names
    got = rows(out)
    same_readings(got, readings(load_predictor(run_dir), folder))  # Keras, as `digitlab read` by default
    by_path = {r["path"]: r for r in got}
    assert "not an image" in by_path[f"{folder}/broken.png"]["error"]
    assert by_path[f"{folder}/blank.png"]["text"] is None and by_path[f"{folder}/blank.png"]["unsure"]
    assert {r["run_id"] for r in got} == {"fast"} and len({r["model_digest"] for r in got}) == 1
    right = sum(by_path[p]["text"] == text for p, text in texts.items())
    assert right >= 0.5 * len(texts)  # whole numbers are read, not only recorded
    again = invoke("batch", run_dir, folder, "--out", out, "--engine", "local")  # --task digit on its output
    one_line_error(again, f"--out {out}", "task 'number'")


def test_a_line_run_reads_numbers_by_line_and_refuses_the_digit_task(tiny_line_run, numbers, tmp_path):
    folder, _ = numbers
    out = tmp_path / "lines.parquet"
    result = invoke("batch", tiny_line_run, folder, "--out", out, "--task", "number", "--engine", "local")
    assert result.exit_code == 1, result.output  # the folder's one file that is not an image
    same_readings(rows(out), readings(load_predictor(tiny_line_run), folder))  # `digitlab read` reads it by line
    result = invoke("batch", tiny_line_run, folder, "--out", tmp_path / "digits", "--engine", "local")
    one_line_error(result, "--task digit", "holds a line model", "--task number")
    assert not (tmp_path / "digits").exists()


def test_onnx_threads_are_an_option_and_ray_workers_share_the_cores(run_dir):
    options = BatchReader(str(run_dir), "onnx", "digit", threads=1).predictor.forward.args[0].get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 1)
    default = BatchReader(str(run_dir), "onnx", "digit").predictor.forward.args[0].get_session_options()
    assert default.intra_op_num_threads == 0  # ONNX Runtime's own choice, as before
    shares = {(cores, workers): share_threads(workers, cores) for cores, workers in [(2, 2), (16, 4), (2, 4)]}
    assert shares == {(2, 2): 1, (16, 4): 4, (2, 4): 1}


@pytest.mark.skipif(not HAS_RAY, reason="needs the scale extra")
def test_ray_with_two_workers_gives_the_local_rows(run_dir, images, tmp_path, local_ray):
    local = run_batch(run_dir, str(images), tmp_path / "local", engine="local", runtime="onnx", batch_size=32)
    remote = run_batch(run_dir, str(images), tmp_path / "ray", engine="ray", workers=2, batch_size=32)
    assert remote["runtime"] == "onnx" and remote["files"] == local["files"] == 302
    on_ray, here = rows(tmp_path / "ray"), rows(tmp_path / "local")
    assert [[r[k] for k in COMPARED] for r in on_ray] == [[r[k] for k in COMPARED] for r in here]
    for a, b in zip(on_ray, here):
        assert a["confidence"] == pytest.approx(b["confidence"], abs=1e-6)


@pytest.mark.skipif(not HAS_RAY, reason="needs the scale extra")
def test_ray_number_task_gives_reads_answers(run_dir, numbers, tmp_path, local_ray):
    folder, _ = numbers
    summary = run_batch(run_dir, str(folder), tmp_path / "ray", task="number", engine="ray", workers=2, batch_size=8)
    assert (summary["runtime"], summary["files"], summary["errors"]) == ("onnx", 38, 1)
    same_readings(rows(tmp_path / "ray"), readings(load_predictor(run_dir, "onnx"), folder))
