"""Serving a line model's run (`digitlab train --preset numbers`): /api/read reads whole lines with it,
/api/predict says to use /api/read, /api/health and /api/model say which kind of run it is. Against the
real server on loopback, over conftest.py's tiny line run."""

import base64
import io
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from digitlab.data.synth.lines import compose, on_paper
from digitlab.serve.schemas import ReadBatchResponse, Reading
from test_lines import X  # pytest puts tests/ on the path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port: int, server=None, seconds: float = 240) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        if server is not None:
            assert server.poll() is None, server.stderr.read().decode()[-2000:]
        try:
            return httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5).json()
        except httpx.TransportError:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)


@pytest.fixture(scope="module")
def line_server(tiny_line_run):
    """The real server (uvicorn through run_app, as `digitlab serve` runs it) over the line run."""
    from digitlab.serve import bind_socket, create_app, run_app

    port = free_port()
    sock = bind_socket("127.0.0.1", port)
    thread = threading.Thread(
        target=run_app, args=(create_app(tiny_line_run), sock), kwargs={"port": port, "access_log": False}, daemon=True
    )
    thread.start()
    wait_for(port)
    yield f"http://127.0.0.1:{port}"
    sock.close()  # the thread is a daemon: it ends with the test session


def line_png(digits, seed: int) -> bytes:
    cover, _ = compose(X[digits], np.random.default_rng(seed))
    buf = io.BytesIO()
    Image.fromarray(on_paper(cover, np.random.default_rng(seed + 1))).save(buf, format="PNG")
    return buf.getvalue()


def test_health_and_model_say_it_is_a_line_run(line_server):
    health = httpx.get(f"{line_server}/api/health").json()
    assert health["kind"] == "line" and health["model"]["architecture"] == "line"
    report = httpx.get(f"{line_server}/api/model").json()
    assert report["kind"] == "line" and report["config"]["model"]["architecture"] == "line"


def test_read_reads_with_the_line_model_as_the_library_does(line_server, tiny_line_run):
    from digitlab import read
    from digitlab.predict import load_predictor

    image = line_png([3, 1, 4, 1], seed=0)
    expected = read(load_predictor(tiny_line_run), image)
    r = httpx.post(f"{line_server}/api/read", files={"file": ("line.png", image, "image/png")})
    assert r.status_code == 200, r.text
    body = Reading.model_validate(r.json())
    assert (body.text, tuple(body.lines), body.unsure, body.reason) == (
        expected.text,
        expected.lines,
        expected.unsure,
        expected.reason,
    )
    assert body.confidence == pytest.approx(expected.confidence, abs=1e-5)
    assert [d.box for d in body.digits] == [list(d.box) for d in expected.digits]
    assert [d.preprocessed for d in body.digits] == [c.tolist() for c in expected.crops]
    assert body.size == list(expected.size) and body.model.architecture == "line"
    data_url = "data:image/png;base64," + base64.b64encode(image).decode()
    assert httpx.post(f"{line_server}/api/read", json={"image": data_url}).json()["text"] == expected.text


def test_read_batch_reads_each_line_and_reports_a_bad_file(line_server):
    images = [line_png([2, 0, 2, 6], seed=2), line_png([7], seed=4)]
    files = [("files", (f"{i}.png", im, "image/png")) for i, im in enumerate(images)]
    r = httpx.post(f"{line_server}/api/read/batch", files=[*files, ("files", ("bad.png", b"junk", "image/png"))])
    assert r.status_code == 200, r.text
    first, second, bad = ReadBatchResponse.model_validate(r.json()).results
    for i, (entry, image) in enumerate(zip((first, second), images)):
        alone = httpx.post(f"{line_server}/api/read", files={"file": ("x.png", image, "image/png")}).json()
        assert (entry.index, entry.name, entry.text) == (i, f"{i}.png", alone["text"])
    assert bad.index == 2 and bad.error.startswith("files[2]") and "not an image" in bad.error


@pytest.mark.parametrize(
    "path, request_args",
    [
        ("/api/predict", {"files": {"file": ("line.png", line_png([5, 0], seed=6), "image/png")}}),
        ("/api/predict", {"json": {"pixels": X[3].tolist()}}),
        ("/api/predict/batch", {"json": {"images": [base64.b64encode(line_png([5], seed=8)).decode()]}}),
    ],
    ids=["multipart", "pixels", "batch"],
)
def test_predict_on_a_line_run_is_a_409_that_names_api_read(line_server, path, request_args):
    before = httpx.get(f"{line_server}/api/health").json()["internal_errors"]
    r = httpx.post(f"{line_server}{path}", **request_args)
    assert r.status_code == 409, r.text
    detail = r.json()["detail"]
    assert "\n" not in detail and detail.startswith(f"{path}: ")
    assert "line model" in detail and "whole lines" in detail and "/api/read" in detail
    assert httpx.get(f"{line_server}/api/health").json()["internal_errors"] == before


@pytest.mark.slow
def test_digitlab_serve_with_two_workers_serves_a_line_run(tiny_line_run):
    port = free_port()
    cmd = [sys.executable, "-c", "from digitlab.cli import main; main()", "serve", str(tiny_line_run)]
    server = subprocess.Popen(
        [*cmd, "--port", str(port), "--workers", "2", "--no-access-log"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert wait_for(port, server)["kind"] == "line"
        r = httpx.post(
            f"http://127.0.0.1:{port}/api/read", files={"file": ("l.png", line_png([9, 4], 10), "image/png")}
        )
        assert r.status_code == 200, r.text
        assert Reading.model_validate(r.json()).model.architecture == "line"
    finally:
        server.terminate()
        server.wait(timeout=60)


@pytest.mark.browser
@pytest.mark.slow
def test_the_page_opens_in_number_mode_and_reads_with_the_line_model(line_server, browser):
    from test_browser import draw, number_strokes

    page = browser.new_page(viewport={"width": 1000, "height": 760})
    try:
        asked = []
        page.on("request", lambda r: asked.append(r.url))
        page.goto(line_server)
        page.wait_for_function("document.body.dataset.mode === 'number'", timeout=20_000)
        assert page.locator("#number-pad").is_visible() and not page.locator("#pad").is_visible()
        assert page.locator("#mode-digit").is_disabled()
        assert "whole lines" in page.locator("#sub-number").text_content()
        # Teach mode asks for single digits, which a line run does not learn from (adapt takes numbers): off
        assert page.locator("#mode-teach").is_disabled()
        page.evaluate("location.hash = '#teach'")
        assert page.evaluate("document.body.dataset.mode") == "number" and page.locator("#teach-pad").is_hidden()
        draw(page, number_strokes("2026"), "#number-pad")
        page.wait_for_selector('#number-result[data-state="done"]', timeout=20_000)
        assert not page.locator("#number-status").text_content()  # no error shown
        assert f"{line_server}/api/read" in asked and f"{line_server}/api/predict" not in asked
    finally:
        page.close()
