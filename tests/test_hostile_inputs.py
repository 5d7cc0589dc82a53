"""Hostile inputs: files, names and folders built to break reading, serving and batch jobs. Each is one
file's error (an error row, a 422) and every other file is still answered; a job's own trouble is one line."""

import base64
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

import digitlab.batch
from digitlab.batch import Interrupted, default_runtime, output, run_batch
from digitlab.batch.sources import list_source
from digitlab.cli import app
from digitlab.serve import create_app
from test_preprocess import draw, encode, png_with_chunk, zlib_bomb  # pytest puts tests/ on the path

pq = pytest.importorskip("pyarrow.parquet")
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, synthetic_mlp_run):
    """This module's copy of the session's small MLP run."""
    return shutil.copytree(synthetic_mlp_run, tmp_path_factory.mktemp("hostile") / "mlp-synthetic")


@pytest.fixture(scope="module")
def chunk_bomb() -> bytes:
    """A drawn 7 as a PNG with a 196 kB zTXt chunk that inflates to 200 MB."""
    return png_with_chunk(b"zTXt", b"Comment\0\0" + zlib_bomb())


def good_png(kind: str = "7") -> bytes:
    return encode(draw(kind), "PNG")


def test_a_chunk_bomb_is_one_files_error_in_predict_read_and_batch(run_dir, chunk_bomb, tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    for name in ("a.png", "c.png"):
        (scans / name).write_bytes(good_png())
    (scans / "b.png").write_bytes(chunk_bomb)
    for command in ("predict", "read"):
        result = invoke(command, run_dir, scans, "--json")
        assert "Traceback" not in result.output
        rows = json.loads(result.output[: result.output.rindex("]") + 1])
        assert [r["file"] for r in rows] == [str(scans / n) for n in ("a.png", "b.png", "c.png")]
        assert [bool(r.get("error")) for r in rows] == [False, True, False], rows
        assert rows[1]["error"].startswith(f"{scans / 'b.png'}: ") and "too large" in rows[1]["error"]
        assert "\n" not in rows[1]["error"]
    out = tmp_path / "out"
    result = invoke("batch", run_dir, scans, "--out", out, "--engine", "local", "--runtime", "keras", "-q")
    assert result.exit_code == 1, result.output  # one file's error row, the others read
    got = {r["path"]: r for r in pq.read_table(out).to_pylist()}
    assert len(got) == 3 and got[str(scans / "a.png")]["confidence"] is not None
    assert got[str(scans / "b.png")]["error"].startswith(f"{scans / 'b.png'}: ")


def test_the_server_answers_a_chunk_bomb_with_422_and_reads_the_other_files(run_dir, chunk_bomb):
    client = TestClient(create_app(run_dir), raise_server_exceptions=False)
    good = good_png()
    for endpoint in ("/api/predict", "/api/read"):
        r = client.post(endpoint, files={"file": ("bomb.png", chunk_bomb, "image/png")})
        assert r.status_code == 422 and "too large" in r.json()["detail"], r.text
        r = client.post(endpoint, json={"image": base64.b64encode(chunk_bomb).decode()})
        assert r.status_code == 422, r.text
        assert client.post(endpoint, files={"file": ("a.png", good, "image/png")}).status_code == 200
    for endpoint in ("/api/predict/batch", "/api/read/batch"):
        files = [("files", (f"{i}.png", chunk_bomb if i == 3 else good, "image/png")) for i in range(6)]
        r = client.post(endpoint, files=files)
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert [bool(e.get("error")) for e in results] == [i == 3 for i in range(6)]


def batch(run_dir, source, out, *args):
    return invoke("batch", run_dir, source, "--out", out, "--engine", "local", "--runtime", "keras", "-q", *args)


def test_a_file_name_that_is_not_utf8_is_stored_escaped_and_the_job_goes_on(run_dir, tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    (scans / "a.png").write_bytes(good_png())
    with open(os.fsencode(scans) + b"/bad\xff\xfename.png", "wb") as f:  # not a UTF-8 name
        f.write(good_png("1"))
    with open(os.fsencode(scans) + b"/worse\xff.png", "wb") as f:  # and one that is not an image either
        f.write(b"not an image")
    out = tmp_path / "out"
    result = batch(run_dir, scans, out)
    assert result.exit_code == 1, result.output  # worse.png's error row
    got = {r["path"]: r for r in pq.read_table(out).to_pylist()}
    escaped = f"{scans}/bad\\xff\\xfename.png"  # each byte that is not UTF-8 as the four characters \xNN
    assert sorted(got) == sorted([str(scans / "a.png"), escaped, f"{scans}/worse\\xff.png"])
    assert got[escaped]["error"] is None and got[escaped]["confidence"] is not None  # read, not only named
    assert got[f"{scans}/worse\\xff.png"]["error"].startswith(f"{scans}/worse\\xff.png: not an image")
    again = batch(run_dir, scans, out, "--json")
    assert again.exit_code == 0, again.output
    assert (json.loads(again.output)["files"], json.loads(again.output)["skipped"]) == (0, 3)


@pytest.fixture
def tangled(tmp_path, monkeypatch):
    """A folder of scans with a link back to its parent, a second name for a subfolder, a link to a folder
    outside it, a broken link, a link to itself and a folder that cannot be read (os.scandir refuses it
    here, so the test runs as root too). Returns it and its real files."""
    scans, outside = tmp_path / "scans", tmp_path / "outside"
    for folder in (scans / "sub", scans / "locked", outside):
        folder.mkdir(parents=True)
    for path in (scans / "a.png", scans / "sub" / "b.png", scans / "locked" / "c.png", outside / "d.png"):
        path.write_bytes(good_png())
    (scans / "sub" / "up").symlink_to("..")  # a loop: scans/sub/up/sub/up/...
    (scans / "alias").symlink_to("sub")  # the same files under another name
    (scans / "ext").symlink_to(outside)  # files outside SOURCE, reached only through the link
    (scans / "dangling.png").symlink_to("nowhere.png")
    (scans / "self.png").symlink_to("self.png")
    (scans / "b-again.png").symlink_to("sub/b.png")
    scandir = os.scandir

    def refusing(path="."):
        if os.fspath(path) == str(scans / "locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)
    return scans, [str(scans / "a.png"), str(scans / "ext" / "d.png"), str(scans / "sub" / "b.png")]


def test_a_folder_or_glob_lists_each_real_file_once_and_names_what_it_cannot_list(tangled):
    scans, real = tangled
    problems = {
        str(scans / "locked"): "cannot be read (Permission denied)",
        str(scans / "dangling.png"): "broken link to nowhere.png",
        str(scans / "self.png"): "symlink loop",
    }
    for source in (scans, f"{scans}/**/*.png", f"{scans}/**"):
        listing = list_source(str(source))
        assert listing.files == real, source
        assert sorted(listing.problems) == sorted(problems), source
        for path, what in problems.items():
            assert listing.problems[path].startswith(f"{path}: {what}"), listing.problems[path]
    assert list_source(f"{scans}/*/*.png").files == [str(scans / "ext" / "d.png"), str(scans / "sub" / "b.png")]
    assert list_source(f"{scans}/s*/*.png").problems == {}  # only what the pattern reaches is looked at


def test_batch_writes_a_row_for_each_real_file_and_an_error_row_for_each_unlisted_one(run_dir, tangled, tmp_path):
    scans, real = tangled
    out = tmp_path / "out"
    result = batch(run_dir, f"{scans}/**/*.png", out, "--json")
    assert result.exit_code == 1, result.output  # the error rows
    summary = json.loads(result.output[: result.output.rindex("}") + 1])
    assert (summary["files"], summary["errors"], summary["rows"]) == (6, 3, 6)
    got = {r["path"]: r for r in pq.read_table(out).to_pylist()}
    assert sorted(got) == sorted([*real, str(scans / "locked"), str(scans / "dangling.png"), str(scans / "self.png")])
    assert "its files are left out" in got[str(scans / "locked")]["error"]
    assert all(got[p]["error"] is None for p in real)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a folder of mode 000; the os.scandir test covers it")
def test_a_folder_of_mode_000_is_reported(tmp_path):
    (tmp_path / "ok.png").write_bytes(good_png())
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "c.png").write_bytes(good_png())
    locked.chmod(0)
    try:
        listing = list_source(str(tmp_path))
    finally:
        locked.chmod(0o755)
    assert listing.files == [str(tmp_path / "ok.png")]
    assert listing.problems[str(locked)].startswith(f"{locked}: cannot be read (Permission denied)")


@pytest.fixture(scope="module")
def onnx_run(tmp_path_factory, synthetic_mlp_run, synthetic_dir):
    """Another copy of the small MLP run, exported to ONNX."""
    from digitlab.export import export

    run = shutil.copytree(synthetic_mlp_run, tmp_path_factory.mktemp("onnx") / "mlp-synthetic")
    export(run, "onnx", n=20, data_dir=synthetic_dir)
    return run


def test_an_out_of_the_other_runtime_is_refused_naming_it_before_any_model_loads(onnx_run, tmp_path, monkeypatch):
    scans = tmp_path / "scans"
    scans.mkdir()
    (scans / "a.png").write_bytes(good_png())
    out = tmp_path / "out"
    assert batch(onnx_run, scans, out, "--runtime", "onnx").exit_code == 0
    before = sorted(p.name for p in out.iterdir())

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(digitlab.batch, "BatchReader", no_model)
    result = invoke("batch", onnx_run, scans, "--out", out, "--engine", "local")  # keras, local's default
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.strip() == (
        f"error: --out {out}: written with the onnx runtime; this job uses keras: "
        "add --runtime onnx to continue it, or --overwrite"
    )
    assert sorted(p.name for p in out.iterdir()) == before


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs the scale extra")
def test_ray_reads_a_run_with_no_onnx_export_and_a_name_that_is_not_utf8(run_dir, tmp_path):
    assert not (run_dir / "model.onnx").exists()
    assert (default_runtime("ray", run_dir), default_runtime("ray")) == ("keras", "onnx")
    scans = tmp_path / "scans"
    scans.mkdir()
    (scans / "a.png").write_bytes(good_png())
    with open(os.fsencode(scans) + b"/bad\xff.png", "wb") as f:
        f.write(good_png("1"))
    summary = run_batch(run_dir, str(scans), tmp_path / "out", engine="ray", workers=1)
    assert (summary["runtime"], summary["files"], summary["errors"]) == ("keras", 2, 0)
    assert sorted(pq.read_table(tmp_path / "out").column("path").to_pylist()) == [
        f"{scans}/a.png",
        f"{scans}/bad\\xff.png",
    ]


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs the scale extra")
def test_an_address_that_is_not_host_port_is_one_line(run_dir, tmp_path):
    (tmp_path / "a.png").write_bytes(good_png())
    for address in ("not a host", "host:port", ":80"):
        result = invoke("batch", run_dir, tmp_path, "--out", tmp_path / "out", "--engine", "ray", "--address", address)
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert (
            result.output.startswith(f"error: --address {address!r}: expected host:port")
            and result.output.count("\n") == 1
        )
    assert not (tmp_path / "out").exists()


def test_a_refused_out_is_left_untouched_and_a_run_directory_is_refused(run_dir, tmp_path):
    (tmp_path / "a.png").write_bytes(good_png())
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    result = batch(run_dir, tmp_path / "a.png", foreign)
    assert result.exit_code == 2 and "notes.txt" in result.output
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]  # no lock file left in it
    run = shutil.copytree(run_dir, tmp_path / "run")
    lock = run / ".digitlab.lock"
    lock.write_text("4242")  # the process training into it
    before = sorted(p.name for p in run.iterdir())
    result = batch(run_dir, tmp_path / "a.png", run)
    assert (
        result.output.strip()
        == f"error: --out {run}: a run directory, expected a folder for Parquet parts (a new name)"
    )
    assert lock.read_text() == "4242" and sorted(p.name for p in run.iterdir()) == before


def test_a_folder_in_a_list_file_is_listed(tmp_path):
    (tmp_path / "scans" / "deep").mkdir(parents=True)
    for name in ("scans/a.png", "scans/deep/b.png", "c.png"):
        (tmp_path / name).write_bytes(good_png())
    listing = tmp_path / "list.txt"
    listing.write_text("scans\nc.png\n")
    assert list_source(str(listing)).files == [str(tmp_path / n) for n in ("scans/a.png", "scans/deep/b.png", "c.png")]


def test_an_out_holds_the_schema_before_its_first_part(run_dir, tmp_path, monkeypatch):
    (tmp_path / "a.png").write_bytes(good_png())

    def killed(*args, **kwargs):
        raise SystemExit("killed before the first result")

    monkeypatch.setattr(digitlab.batch.engines, "local_results", killed)
    with pytest.raises(SystemExit):
        run_batch(run_dir, str(tmp_path / "a.png"), tmp_path / "out", engine="local")
    table = pq.read_table(tmp_path / "out")
    assert table.num_rows == 0 and table.schema.names == output.schema("digit").names
    monkeypatch.undo()
    summary = run_batch(run_dir, str(tmp_path / "a.png"), tmp_path / "out", engine="local")
    assert (summary["files"], summary["rows"]) == (1, 1) and pq.read_table(tmp_path / "out").num_rows == 1


def scans_of(folder, n: int):
    folder.mkdir()
    png = good_png()
    for i in range(n):
        (folder / f"{i:04d}.png").write_bytes(png)
    return folder


def test_an_interrupt_writes_the_rows_in_hand_and_a_rerun_reads_the_rest(run_dir, tmp_path):
    scans, out = scans_of(tmp_path / "scans", 20), tmp_path / "out"

    def interrupt(done, total):
        if done >= 8:
            raise KeyboardInterrupt

    with pytest.raises(Interrupted) as stopped:
        run_batch(run_dir, str(scans), out, engine="local", batch_size=4, progress=interrupt)
    assert (stopped.value.rows, stopped.value.out) == (8, out)
    assert pq.read_table(out).num_rows == 8  # every row read is kept: none was only in memory
    summary = run_batch(run_dir, str(scans), out, engine="local", batch_size=4)
    assert (summary["skipped"], summary["files"], summary["rows"]) == (8, 12, 20)


@pytest.mark.slow
def test_ctrl_c_or_sigterm_exits_130_saying_how_many_rows_are_kept(run_dir, tmp_path):
    """Ctrl+C stops the job, SIGTERM stops its rerun, each after a batch; a third run reads the rest."""
    scans, out = scans_of(tmp_path / "scans", 2000), tmp_path / "out"
    command = [sys.executable, "-c", "from digitlab.cli import main; main()", "batch", str(run_dir), str(scans)]
    command += ["--out", str(out), "--engine", "local", "--batch-size", "8"]
    kept = [0]
    for signum in (signal.SIGINT, signal.SIGTERM):
        job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for line in job.stderr:  # the first progress line: a batch is done
            if line.startswith("batch:"):
                break
        job.send_signal(signum)
        start = time.monotonic()
        stdout, stderr = job.communicate(timeout=30)
        assert job.returncode == 130, (signum, stdout + stderr)
        assert time.monotonic() - start < 5, signum
        kept.append(pq.read_table(out).num_rows)
        assert kept[-2] < kept[-1] < 2000, (signum, kept)  # the rows before and the batch read since are kept
        assert f"interrupted: {kept[-1]:,} rows kept in {out}; run the same command to go on" in stdout + stderr
        assert "Traceback" not in stdout + stderr
    again = subprocess.run(command + ["--json", "-q"], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["rows"] == 2000 and pq.read_table(out).num_rows == 2000


def test_the_server_refuses_cheap_bodies_as_they_arrive_and_two_host_headers(run_dir):
    from digitlab.serve import MAX_BATCH

    client = TestClient(create_app(run_dir), raise_server_exceptions=False)
    cheap = b'{"pixels": [' + b",".join([b"[[0]]"] * 300_000) + b"]}"  # 300,000 bad grids in 1.8 MB
    r = client.post("/api/predict/batch", content=cheap, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["detail"] == (
        f"pixels: more than {MAX_BATCH} images, at most {MAX_BATCH} per request"
    )
    r = client.post(
        "/api/predict", content=b'{"pixels": [' + b"0," * 100_000 + b"0]}", headers={"content-type": "application/json"}
    )
    assert r.status_code == 413 and r.json()["detail"] == "pixels: more than 56 rows, at most 56 per request"
    part = b'--x\r\nContent-Disposition: form-data; name="files"; filename="a"\r\n\r\n\r\n'
    r = client.post(
        "/api/predict/batch",
        content=part * 20_000 + b"--x--\r\n",
        headers={"content-type": "multipart/form-data; boundary=x"},
    )
    assert (
        r.status_code == 413
        and r.json()["detail"] == f"files: more than {MAX_BATCH} files, at most {MAX_BATCH} per request"
    )
    r = client.get("/api/health", headers=[("host", "localhost"), ("host", "evil.example")])
    assert r.status_code == 400
    assert r.json()["detail"] == "Host header: 2 given ('localhost', 'evil.example'), expected one"
    assert client.get("/api/health").json()["internal_errors"] == 0


def test_a_request_over_the_decode_budget_is_413_naming_it(run_dir):
    from digitlab.serve.schemas import MAX_MEGAPIXELS

    page = encode(Image.new("L", (3200, 3200), 255), "PNG")  # 10.24 MP of paper, a few kB
    count = int(MAX_MEGAPIXELS // 10.24) + 1
    client = TestClient(create_app(run_dir), raise_server_exceptions=False)
    r = client.post("/api/read/batch", files=[("files", (f"{i}.png", page, "image/png")) for i in range(count)])
    assert r.status_code == 413, r.text[:200]
    assert r.json()["detail"] == (
        f"files: {count * 10.24:.1f} megapixels in {count} images, at most {MAX_MEGAPIXELS} megapixels per request; "
        "send them in several requests"
    )
    r = client.post("/api/read/batch", files=[("files", (f"{i}.png", page, "image/png")) for i in range(count - 1)])
    assert r.status_code == 200
