"""The REST API through FastAPI's TestClient, over an MLP trained for two epochs on the synthetic set."""

import base64
import io
import json
import shutil
import threading

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from digitlab.config import SERVE_LIMIT_CONCURRENCY, SERVE_TIMEOUT
from digitlab.serve import MAX_BATCH, MAX_BODY, BatchFailure, BatchPrediction, Prediction, create_app


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory, synthetic_mlp_run):
    """This module's copy of the session's small MLP run, named mlp-synthetic and never evaluated."""
    return shutil.copytree(synthetic_mlp_run, tmp_path_factory.mktemp("serve") / "mlp-synthetic")


@pytest.fixture(scope="module")
def app(synthetic_run):
    return create_app(synthetic_run)


@pytest.fixture(scope="module")
def client(app):
    # Server exceptions come back as 500s, so a test sees the status a real client would.
    return TestClient(app, raise_server_exceptions=False)


def png_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def drawn_digit(side: int = 280) -> bytes:
    """A black 7 on white, like the page's canvas."""
    img = Image.new("RGB", (side, side), "white")
    ImageDraw.Draw(img).line([(70, 60), (205, 60), (120, 230)], fill="black", width=18, joint="curve")
    return png_bytes(img)


def block_pixels(k: int) -> list[list[int]]:
    """A 28x28 grid shaped like synthetic class k: a bright block at one of ten places."""
    grid = np.zeros((28, 28), int)
    r, c = 2 + (k // 5) * 14, 2 + (k % 5) * 5
    grid[r : r + 6, c : c + 5] = 230
    return grid.tolist()


def check_prediction(body: dict) -> None:
    p = Prediction.model_validate(body)
    assert len(p.probabilities) == 10
    assert sum(p.probabilities) == pytest.approx(1.0, abs=1e-4)
    assert len(p.top3) == 3 and p.top3[0].probability == pytest.approx(p.confidence)
    assert np.asarray(p.preprocessed).shape == (28, 28)
    assert all(0 <= v <= 255 for row in p.preprocessed for v in row)
    assert p.model.architecture == "mlp" and p.model.name == "mlp-synthetic"
    if p.unsure:
        assert p.digit is None and p.label is None and p.reason
    else:
        assert p.digit == p.top3[0].digit and p.reason is None


# --- the endpoints ---------------------------------------------------------------------------------


def test_health(client):
    r = client.get("/api/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok" and r.json()["model"] == {"name": "mlp-synthetic", "architecture": "mlp"}


def test_health_and_model_say_it_is_a_single_digit_run_on_the_runtimes_threads(client):
    health = client.get("/api/health").json()
    assert health["kind"] == "digit" and health["threads"] is None  # one process: TensorFlow's default
    assert client.get("/api/model").json()["kind"] == "digit"


def test_model_report_has_config_metrics_and_calibration(client, synthetic_run):
    body = client.get("/api/model").json()
    assert body["name"] == "mlp-synthetic"
    assert body["config"]["model"]["units"] == [16]
    assert body["config"]["data"]["class_names"] == [str(i) for i in range(10)]
    assert body["validation"]["accuracy"] > 0.5  # the synthetic classes are learnable in two epochs
    assert body["validation"] == json.loads((synthetic_run / "metrics.json").read_text())["validation"]
    assert body["test"] is None  # not evaluated
    assert {"temperature", "threshold"} <= set(body["calibration"])


def test_page_and_static_files_are_local(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for element_id in ("pad", "clear", "digit", "confidence", "bars", "seen", "upload"):
        assert f'id="{element_id}"' in page.text
    for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and kind in r.headers["content-type"]
        assert "http://" not in r.text and "https://" not in r.text  # nothing from a CDN: works offline
    assert "http://" not in page.text and "https://" not in page.text


def test_openapi_documents_both_body_types(client):
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/api/predict"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "multipart/form-data"}
    assert "pixels" in body["application/json"]["schema"]["properties"]
    assert "413" in spec["paths"]["/api/predict/batch"]["post"]["responses"]
    assert client.get("/docs").status_code == 200


def test_predict_multipart_file(client):
    r = client.post("/api/predict", files={"file": ("seven.png", drawn_digit(), "image/png")})
    assert r.status_code == 200
    check_prediction(r.json())


def test_predict_base64_and_data_url_match_multipart(client):
    png = drawn_digit()
    by_file = client.post("/api/predict", files={"file": ("seven.png", png, "image/png")}).json()
    b64 = base64.b64encode(png).decode()
    for image in (b64, f"data:image/png;base64,{b64}", "\n".join(b64[i : i + 76] for i in range(0, len(b64), 76))):
        r = client.post("/api/predict", json={"image": image})
        assert r.status_code == 200
        assert r.json() == by_file


def test_predict_pixels_used_as_given_and_match_the_library(client, synthetic_run):
    from digitlab.predict import classify, load_predictor

    grid = block_pixels(3)
    r = client.post("/api/predict", json={"pixels": grid})
    assert r.status_code == 200
    body = r.json()
    check_prediction(body)
    assert body["preprocessed"] == grid  # no preprocessing
    expected = classify(load_predictor(synthetic_run), np.array([grid]), [True])[0]
    assert body["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-5)
    assert body["digit"] == expected["digit"]


def test_blank_image_is_unsure_with_a_reason(client):
    r = client.post(
        "/api/predict", files={"file": ("blank.png", png_bytes(Image.new("L", (200, 200), 255)), "image/png")}
    )
    assert r.status_code == 200
    assert r.json()["digit"] is None and r.json()["unsure"] is True
    assert "no ink" in r.json()["reason"]
    r = client.post("/api/predict", json={"pixels": [[0] * 28] * 28})
    assert r.json()["unsure"] is True and "no ink" in r.json()["reason"]


def test_a_blank_page_in_uneven_light_asks_for_another_photo_through_the_api(client):
    from digitlab.preprocess import UNEVEN_LIGHT

    rows, cols = np.mgrid[0:200, 0:200]
    shadowed = png_bytes(Image.fromarray((235 * (1 - 0.4 * (cols + 0.6 * rows > 150))).astype(np.uint8)))
    for endpoint in ("/api/predict", "/api/read"):
        r = client.post(endpoint, files={"file": ("shadow.png", shadowed, "image/png")})
        assert r.status_code == 200, r.text
        assert r.json()["unsure"] is True and r.json()["reason"] == UNEVEN_LIGHT, endpoint


def test_a_blank_image_has_no_numbers_and_the_schema_says_so(client):
    blank = png_bytes(Image.new("L", (200, 200), 255))
    for r in (client.post("/api/predict", files={"file": ("blank.png", blank, "image/png")}),
              client.post("/api/predict", json={"pixels": [[0] * 28] * 28})):  # fmt: skip
        assert r.status_code == 200, r.text
        assert [r.json()[k] for k in ("digit", "label", "confidence", "probabilities", "top3")] == [None] * 5
    schema = client.get("/openapi.json").json()["components"]["schemas"]["Prediction"]["properties"]
    for key in ("confidence", "probabilities", "top3"):
        assert {"type": "null"} in schema[key]["anyOf"], key


@pytest.mark.parametrize(
    "mark, reason",
    [((130, 130, 150, 150), "dot or a tap"), ((10, 10, 190, 190), "filled with ink")],
    ids=["tap", "filled"],
)
def test_a_mark_that_is_not_a_digit_has_no_numbers_and_says_why(client, mark, reason):
    im = Image.new("L", (200, 200), 255)
    ImageDraw.Draw(im).ellipse(mark, fill=0) if reason.startswith("dot") else ImageDraw.Draw(im).rectangle(mark, fill=0)
    r = client.post("/api/predict", files={"file": ("mark.png", png_bytes(im), "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [body[k] for k in ("digit", "confidence", "probabilities", "top3")] == [None] * 4
    assert body["unsure"] and reason in body["reason"]


def test_batch_multipart_keeps_order_and_reports_a_bad_file(client):
    png = drawn_digit()
    files = [
        ("files", ("a.png", png, "image/png")),
        ("files", ("bad.png", b"not an image", "image/png")),
        ("files", ("c.png", png, "image/png")),
    ]
    r = client.post("/api/predict/batch", files=files)
    assert r.status_code == 200
    results = r.json()["results"]
    assert [e["index"] for e in results] == [0, 1, 2]
    assert [e["name"] for e in results] == ["a.png", "bad.png", "c.png"]
    assert "not an image" in BatchFailure.model_validate(results[1]).error
    for e in (results[0], results[2]):
        check_prediction(BatchPrediction.model_validate(e).model_dump())
    assert results[0]["probabilities"] == results[2]["probabilities"]


def test_batch_json_images_and_pixels(client):
    b64 = base64.b64encode(drawn_digit()).decode()
    r = client.post("/api/predict/batch", json={"images": [b64, "not base64!", f"data:image/png;base64,{b64}"]})
    assert r.status_code == 200
    results = r.json()["results"]
    assert "images[1]: not valid base64" in results[1]["error"]
    assert results[0]["probabilities"] == results[2]["probabilities"]

    grids = [block_pixels(k) for k in range(10)]
    r = client.post("/api/predict/batch", json={"pixels": grids[:4] + [[[0] * 27] * 28] + grids[4:]})
    assert r.status_code == 200
    results = r.json()["results"]
    assert len(results) == 11
    assert results[4]["error"].startswith("pixels[4][0]: ")
    assert [e["preprocessed"] for e in results[:4] + results[5:]] == grids


# --- bad input: a documented 4xx, never a 500 --------------------------------------------------------


def huge_png() -> bytes:
    """A 48-megapixel PNG that compresses to a few tens of kB: a decompression bomb."""
    return png_bytes(Image.new("1", (8000, 6000), 1))


def truncated_png() -> bytes:
    data = drawn_digit()
    return data[: len(data) // 2]


def json_body(text: str) -> dict:
    return {"content": text.encode(), "headers": {"content-type": "application/json"}}


GRID = [[0] * 28] * 28

# (name, path, request keyword arguments (a callable gives them lazily), status, text the detail must contain)
BAD_INPUTS = [
    (
        "not an image",
        "/api/predict",
        {"files": {"file": ("x.png", b"hello, not a PNG", "image/png")}},
        422,
        "not an image",
    ),
    ("empty file", "/api/predict", {"files": {"file": ("x.png", b"", "image/png")}}, 422, "empty"),
    ("empty JSON body", "/api/predict", json_body(""), 422, "body: empty"),
    (
        "truncated PNG",
        "/api/predict",
        lambda: {"files": {"file": ("x.png", truncated_png(), "image/png")}},
        422,
        "truncated",
    ),
    (
        "over 40 megapixels",
        "/api/predict",
        lambda: {"files": {"file": ("bomb.png", huge_png(), "image/png")}},
        422,
        "megapixels",
    ),
    (
        "over 10 MB declared",
        "/api/predict",
        lambda: {"files": {"file": ("big.png", b"\0" * (MAX_BODY + 1), "image/png")}},
        413,
        "at most",
    ),
    (
        "over 10 MB streamed without a length",
        "/api/predict",
        lambda: {"content": iter([b"\0" * (1 << 20)] * 11), "headers": {"content-type": "application/json"}},
        413,
        "at most",
    ),
    ("invalid JSON", "/api/predict", json_body('{"pixels": [1, 2'), 422, "body: not valid JSON"),
    ("JSON not an object", "/api/predict", {"json": [1, 2, 3]}, 422, "body:"),
    ("neither image nor pixels", "/api/predict", {"json": {}}, 422, "exactly one of"),
    ("both image and pixels", "/api/predict", {"json": {"image": "aGk=", "pixels": GRID}}, 422, "exactly one of"),
    ("unknown field", "/api/predict", {"json": {"pixels": GRID, "label": 3}}, 422, "label: unknown field"),
    ("27 rows", "/api/predict", {"json": {"pixels": GRID[:27]}}, 422, "pixels: List should have at least 28"),
    (
        "29 columns",
        "/api/predict",
        {"json": {"pixels": [[0] * 29] * 28}},
        422,
        "pixels[0]: List should have at most 28",
    ),
    (
        "value over 255",
        "/api/predict",
        {"json": {"pixels": [[256] + [0] * 27] + GRID[1:]}},
        422,
        "pixels[0][0]: Input should be less than or equal to 255, got 256",
    ),
    (
        "negative value",
        "/api/predict",
        {"json": {"pixels": GRID[:5] + [[0, -1] + [0] * 26] + GRID[6:]}},
        422,
        "pixels[5][1]: Input should be greater than or equal to 0",
    ),
    (
        "NaN",
        "/api/predict",
        json_body(json.dumps({"pixels": [[float("nan")] * 28] * 28})),
        422,
        "pixels[0][0]: Input should be a finite number",
    ),
    (
        "string values",
        "/api/predict",
        {"json": {"pixels": [["12"] * 28] * 28}},
        422,
        "pixels[0][0]: Input should be a valid number, got '12'",
    ),
    ("pixels not a list", "/api/predict", {"json": {"pixels": "zeros"}}, 422, "pixels: Input should be a valid array"),
    ("image not base64", "/api/predict", {"json": {"image": "@@@"}}, 422, "image: not valid base64"),
    (
        "data URL without base64",
        "/api/predict",
        {"json": {"image": "data:image/png,abc"}},
        422,
        "image: expected a base64",
    ),
    ("image not a string", "/api/predict", {"json": {"image": 42}}, 422, "image: Input should be a valid string"),
    (
        "base64 of not an image",
        "/api/predict",
        {"json": {"image": base64.b64encode(b"plain text").decode()}},
        422,
        "not an image",
    ),
    ("text/plain", "/api/predict", {"content": b"1", "headers": {"content-type": "text/plain"}}, 415, "Content-Type"),
    ("no content type", "/api/predict", {"content": b"1"}, 415, "got 'none'"),
    ("form-urlencoded", "/api/predict", {"data": {"file": "x"}}, 415, "application/x-www-form-urlencoded"),
    (
        "multipart without the file field",
        "/api/predict",
        {"files": {"image": ("x.png", b"x", "image/png")}},
        422,
        "image: unknown field",
    ),
    (
        "multipart text field, no file",
        "/api/predict",
        {"data": {"file": "x"}, "files": {"dummy": ("", b"", "application/octet-stream")}},
        422,
        "unknown field",
    ),
    (
        "multipart text instead of a file",
        "/api/predict",
        {
            "content": b'--b\r\nContent-Disposition: form-data; name="file"\r\n\r\nabc\r\n--b--\r\n',
            "headers": {"content-type": "multipart/form-data; boundary=b"},
        },
        422,
        "file: expected a file",
    ),
    (
        "two files to /api/predict",
        "/api/predict",
        {"files": [("file", ("a.png", b"a", "image/png")), ("file", ("b.png", b"b", "image/png"))]},
        422,
        "expected one file",
    ),
    (
        "multipart without a boundary",
        "/api/predict",
        {"content": b"abc", "headers": {"content-type": "multipart/form-data"}},
        422,
        "malformed multipart",
    ),
    ("batch: empty list", "/api/predict/batch", {"json": {"images": []}}, 422, "images: empty list"),
    ("batch: empty pixels list", "/api/predict/batch", {"json": {"pixels": []}}, 422, "pixels: empty list"),
    (
        "batch: too many grids",
        "/api/predict/batch",
        {"json": {"pixels": [[[0]]] * (MAX_BATCH + 1)}},
        413,
        f"at most {MAX_BATCH}",
    ),
    (
        "batch: too many files",
        "/api/predict/batch",
        {"files": [("files", (f"{i}.png", b"x", "image/png")) for i in range(MAX_BATCH + 1)]},
        413,
        f"at most {MAX_BATCH}",
    ),
    (
        "batch: no files field",
        "/api/predict/batch",
        {"files": {"file": ("a.png", b"x", "image/png")}},
        422,
        "file: unknown field",
    ),
    (
        "batch: images not strings",
        "/api/predict/batch",
        {"json": {"images": [1, 2]}},
        422,
        "images[0]: Input should be a valid string",
    ),
    (
        "batch: unknown field",
        "/api/predict/batch",
        {"json": {"images": ["aGk="], "size": 1}},
        422,
        "size: unknown field",
    ),
]


@pytest.mark.parametrize(
    "path, request_args, status, detail", [case[1:] for case in BAD_INPUTS], ids=[case[0] for case in BAD_INPUTS]
)
def test_bad_input_gives_a_4xx_naming_the_problem(client, path, request_args, status, detail):
    r = client.post(path, **(request_args() if callable(request_args) else request_args))
    assert r.status_code == status, r.text
    assert detail in r.json()["detail"]
    assert isinstance(r.json()["detail"], str)


def test_server_goes_on_after_every_bad_input_and_none_reached_the_catch_all(client):
    for _, path, request_args, status, _ in BAD_INPUTS:
        assert client.post(path, **(request_args() if callable(request_args) else request_args)).status_code == status
    r = client.get("/api/health")
    assert r.status_code == 200 and r.json()["internal_errors"] == 0
    ok = client.post("/api/predict", files={"file": ("seven.png", drawn_digit(), "image/png")})
    assert ok.status_code == 200


def test_wrong_method_is_405(client):
    assert client.get("/api/predict").status_code == 405


def test_an_unexpected_error_is_a_json_500_and_the_server_goes_on(synthetic_run, monkeypatch):
    app = create_app(synthetic_run)
    client = TestClient(app, raise_server_exceptions=False)

    def broken(x):
        raise RuntimeError("simulated fault")

    monkeypatch.setattr(app.state.service.predictor, "forward", broken)  # the model call itself fails
    r = client.post("/api/predict", json={"pixels": GRID})
    assert r.status_code == 500
    assert r.json() == {"detail": "internal error (RuntimeError); the server goes on"}
    assert client.get("/api/health").json()["internal_errors"] == 1
    monkeypatch.undo()
    assert client.post("/api/predict", json={"pixels": GRID}).status_code == 200


# --- concurrency -----------------------------------------------------------------------------------


def test_concurrent_requests_all_succeed_with_their_own_answers(client):
    grids = [block_pixels(k % 10) for k in range(16)]
    expected = [client.post("/api/predict", json={"pixels": g}).json()["probabilities"] for g in grids[:10]]
    png = drawn_digit()
    answers, barrier = [None] * 16, threading.Barrier(16)

    def post(i: int) -> None:
        barrier.wait()
        if i % 2:
            answers[i] = client.post("/api/predict", files={"file": ("seven.png", png, "image/png")})
        else:
            answers[i] = client.post("/api/predict", json={"pixels": grids[i]})

    threads = [threading.Thread(target=post, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [a.status_code for a in answers] == [200] * 16
    for i in range(0, 16, 2):
        assert answers[i].json()["probabilities"] == pytest.approx(expected[i % 10], abs=1e-6)
    assert len({json.dumps(answers[i].json()["probabilities"]) for i in range(1, 16, 2)}) == 1


# --- the CLI command ---------------------------------------------------------------------------------


def test_cli_serve_loads_the_run_then_runs_the_app(synthetic_run, monkeypatch):
    from typer.testing import CliRunner

    import digitlab.serve
    from digitlab.cli import app as cli

    calls = []
    monkeypatch.setattr(
        digitlab.serve, "run_app", lambda app, sock, **kw: calls.append((app, {**kw, "sock": sock.getsockname()}))
    )
    port = free_port()
    result = CliRunner().invoke(cli, ["serve", str(synthetic_run), "--port", str(port), "--no-access-log"])
    assert result.exit_code == 0, result.output
    assert f"http://127.0.0.1:{port}/" in result.output
    assert calls[0][1].pop("sock") == ("127.0.0.1", port)  # bound by the CLI, closed once the server returned
    assert calls[0][1] == {
        "host": "127.0.0.1",
        "port": port,
        "access_log": False,
        "timeout": SERVE_TIMEOUT,
        "limit_concurrency": SERVE_LIMIT_CONCURRENCY,
    }


def test_cli_serve_with_a_missing_run_is_a_one_line_error(tmp_path):
    from typer.testing import CliRunner

    from digitlab.cli import app as cli

    result = CliRunner().invoke(cli, ["serve", str(tmp_path / "nope"), "--port", str(free_port())])
    assert result.exit_code == 2
    assert "no such run directory" in result.output


def test_cli_serve_workers_checks_the_run_then_starts_the_workers(synthetic_run, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import digitlab.serve
    from digitlab.cli import app as cli

    calls = []
    monkeypatch.setattr(
        digitlab.serve, "run_workers", lambda *a, sock, **kw: calls.append((a, {**kw, "sock": sock.getsockname()}))
    )
    port = free_port()
    result = CliRunner().invoke(
        cli, ["serve", str(synthetic_run), "--workers", "2", "--no-access-log", "--port", str(port)]
    )
    assert result.exit_code == 0, result.output
    assert "with 2 processes" in result.output
    assert calls[0][1].pop("sock") == ("127.0.0.1", port)
    assert calls == [
        (
            (synthetic_run, "keras", 2),
            {
                "host": "127.0.0.1",
                "port": port,
                "access_log": False,
                "allowed_hosts": ["localhost", "127.0.0.1", "[::1]"],
                "timeout": SERVE_TIMEOUT,
                "limit_concurrency": SERVE_LIMIT_CONCURRENCY,
            },
        )
    ]

    result = CliRunner().invoke(cli, ["serve", str(tmp_path / "nope"), "--workers", "2", "--port", str(free_port())])
    assert result.exit_code == 2 and "no such run directory" in result.output and not calls[1:]
    result = CliRunner().invoke(cli, ["serve", str(synthetic_run), "--workers", "0"])
    assert result.exit_code == 2 and "--workers" in result.output


@pytest.mark.slow
def test_serve_with_two_worker_processes(synthetic_run):
    """The real thing: `digitlab serve --workers 2` in a subprocess; both workers answer on loopback, each
    with its model on its share of the CPUs (TensorFlow's own setting, as the worker reports it)."""
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable,
        "-c",
        "from digitlab.cli import main; main()",
        "serve",
        str(synthetic_run),
        "--port",
        str(port),
        "--workers",
        "2",
        "--no-access-log",
    ]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        from digitlab.predict import share_threads

        health, deadline = {}, time.monotonic() + 240
        while len(health) < 2:  # fresh connections until both workers (still loading at first) have answered
            assert server.poll() is None, server.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, f"only workers {list(health)} answered in time"
            try:
                body = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5).json()
                health[body["pid"]] = body
            except httpx.TransportError:
                time.sleep(0.3)
        assert server.pid not in health  # the parent only supervises
        assert [h["threads"] for h in health.values()] == [share_threads(2)] * 2
        for k in range(10):
            r = httpx.post(f"http://127.0.0.1:{port}/api/predict", json={"pixels": block_pixels(k)}, timeout=30)
            assert r.status_code == 200, r.text
            check_prediction(r.json())
    finally:
        server.terminate()
        server.wait(timeout=60)


def test_the_served_model_call_answers_as_the_keras_model_at_any_batch_size(synthetic_run):
    from digitlab import runs
    from digitlab.predict import keras_runtime

    model = keras_runtime.load_keras_model(runs.require_model(synthetic_run))
    call = keras_runtime.forward(model)
    x = np.random.default_rng(0).integers(0, 256, (7, 28, 28)).astype(np.float32)
    for n in (1, 3, 7):
        np.testing.assert_allclose(call(x[:n]), np.asarray(model(x[:n], training=False)), atol=1e-6)


def test_workers_share_the_cpus_out_for_their_model_calls():
    import os

    from digitlab.predict import share_threads

    cpus = len(os.sched_getaffinity(0))
    assert share_threads(1) == cpus and share_threads(2) == max(1, cpus // 2)
    assert share_threads(4 * cpus) == 1  # never none


def test_an_onnx_server_runs_its_model_calls_on_the_threads_it_is_given(synthetic_run, synthetic_dir, tmp_path):
    """What each worker of `digitlab serve --runtime onnx --workers N` gets: its ONNX Runtime session on
    its share of the CPUs."""
    from digitlab.export import export

    run = shutil.copytree(synthetic_run, tmp_path / "mlp-synthetic")
    assert export(run, "onnx", data_dir=synthetic_dir)["passed"]
    client = TestClient(create_app(run, runtime="onnx", threads=1), raise_server_exceptions=False)
    assert client.get("/api/health").json()["threads"] == 1
    session = client.app.state.service.predictor.forward.args[0]  # run_session on its InferenceSession
    assert session.get_session_options().intra_op_num_threads == 1
    assert client.app.state.service.pool.threads == 1  # and one thread serving its requests
    r = client.post("/api/predict", json={"pixels": block_pixels(3)})
    assert r.status_code == 200, r.text
    check_prediction(r.json())


@pytest.mark.slow
def test_serve_workers_that_cannot_load_the_model_stop_the_server(synthetic_run, tmp_path):
    """A model file that passes the parent's checks but cannot be loaded: the workers stop at start-up
    (not restarted forever) and `digitlab serve` ends with a one-line error and a non-zero code."""
    import shutil
    import socket
    import subprocess
    import sys

    broken = tmp_path / "broken"
    shutil.copytree(synthetic_run, broken)
    (broken / "model.keras").write_bytes(b"not a keras file")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable,
        "-c",
        "from digitlab.cli import main; main()",
        "serve",
        str(broken),
        "--port",
        str(port),
        "--workers",
        "2",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "cannot be loaded as a Keras model" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: {broken}: the server's worker processes could not")


def test_a_workers_health_check_ends_once_the_worker_has_exited():
    """uvicorn's supervisor pings each worker and waits up to WORKER_HEALTHCHECK (60 s) for the answer;
    digitlab's workers stop waiting as soon as their process has exited (it never will answer)."""
    import threading
    from multiprocessing import Pipe

    from digitlab.serve.workers import Worker

    class Exited:
        def is_alive(self) -> bool:
            return False

    worker = Worker.__new__(Worker)  # no process started: one that has exited, and a pipe nobody answers
    worker.parent_conn, worker.child_conn = Pipe()
    worker.process = Exited()
    answers = []
    check = threading.Thread(target=lambda: answers.append(worker._healthcheck(3600.0)), daemon=True)
    check.start()
    check.join(30)
    assert answers == [None]


# --- the Host header (issue 14 row 14) and the port (row 24) ------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_create_app_with_allowed_hosts_refuses_another_host_with_a_json_400(synthetic_run):
    from digitlab.serve import LOOPBACK_HOSTS

    guarded = TestClient(create_app(synthetic_run, allowed_hosts=LOOPBACK_HOSTS), base_url="http://127.0.0.1:8000")
    for host in ("localhost", "localhost:8000", "127.0.0.1:1234", "[::1]:8000", "LOCALHOST"):
        assert guarded.get("/api/health", headers={"host": host}).status_code == 200, host
    for host in ("attacker.example", "attacker.example:8000", "127.0.0.1.attacker.example", "0.0.0.0:8000"):
        r = guarded.get("/api/health", headers={"host": host})
        assert r.status_code == 400, host
        assert r.headers["content-type"] == "application/json"
        detail = r.json()["detail"]
        assert "Host" in detail and host in detail and "\n" not in detail and "--allowed-hosts" in detail
    r = guarded.post("/api/predict", json={"pixels": block_pixels(3)}, headers={"host": "attacker.example"})
    assert r.status_code == 400


def test_allowed_hosts_are_checked_only_when_bound_to_loopback_or_asked():
    from digitlab.errors import DigitlabError
    from digitlab.serve import LOOPBACK_HOSTS, allowed_hosts_for

    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert allowed_hosts_for(host) == LOOPBACK_HOSTS
    assert allowed_hosts_for("127.0.0.1", ["a.example", "*.b.example"]) == [*LOOPBACK_HOSTS, "a.example", "*.b.example"]
    assert allowed_hosts_for("0.0.0.0") is None and allowed_hosts_for("192.168.1.5") is None
    assert allowed_hosts_for("0.0.0.0", ["a.example"]) == [*LOOPBACK_HOSTS, "a.example"]
    assert allowed_hosts_for("127.0.0.1", ["*"]) == ["*"]
    for bad in ("a.example:8000", "a*.example", "*example", ""):
        with pytest.raises(DigitlabError, match="--allowed-hosts"):
            allowed_hosts_for("127.0.0.1", [bad])


def test_cli_serve_on_loopback_refuses_other_hosts_unless_allowed(synthetic_run, monkeypatch):
    from typer.testing import CliRunner

    import digitlab.serve
    from digitlab.cli import app as cli

    calls = []
    monkeypatch.setattr(digitlab.serve, "run_app", lambda app, **kw: calls.append((app, kw)))
    port = free_port()
    result = CliRunner().invoke(
        cli, ["serve", str(synthetic_run), "--port", str(port), "--allowed-hosts", "me.example"]
    )
    assert result.exit_code == 0, result.output
    client = TestClient(calls[0][0], base_url=f"http://127.0.0.1:{port}")
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "me.example"):
        assert client.get("/api/health", headers={"host": host}).status_code == 200, host
    r = client.get("/api/health", headers={"host": "attacker.example"})
    assert r.status_code == 400 and "attacker.example" in r.json()["detail"]


def test_workers_get_the_allowed_hosts_from_the_environment(monkeypatch, tmp_path):
    import digitlab.serve.workers as workers

    made = []
    monkeypatch.setattr(workers, "create_app", lambda run_dir, runtime, **kw: made.append((run_dir, runtime, kw)))
    monkeypatch.setenv(workers.RUN_ENV, str(tmp_path))
    monkeypatch.setenv(workers.RUNTIME_ENV, "keras")
    monkeypatch.setenv(workers.HOSTS_ENV, "localhost,127.0.0.1,[::1],me.example")
    workers.app_from_env()
    monkeypatch.delenv(workers.HOSTS_ENV)
    workers.app_from_env()
    assert made == [
        (tmp_path, "keras", {"allowed_hosts": ["localhost", "127.0.0.1", "[::1]", "me.example"]}),
        (tmp_path, "keras", {"allowed_hosts": None}),
    ]


@pytest.mark.parametrize("port", ["99999", "65536", "0", "-5"])
@pytest.mark.parametrize("workers", ["1", "2"])
def test_cli_serve_refuses_a_bad_port_before_loading_the_model(synthetic_run, monkeypatch, port, workers):
    from typer.testing import CliRunner

    import digitlab.serve
    from digitlab.cli import app as cli

    touched = []
    for name in ("create_app", "check_run", "run_app", "run_workers"):
        monkeypatch.setattr(digitlab.serve, name, lambda *a, name=name, **kw: touched.append(name))
    result = CliRunner().invoke(cli, ["serve", str(synthetic_run), "--port", port, "--workers", workers])
    assert result.exit_code == 2, result.output
    assert result.output.strip() == f"error: --port: expected a TCP port from 1 to 65535, got {port}"
    assert touched == []


@pytest.mark.parametrize("workers", ["1", "2"])
def test_cli_serve_reports_a_port_in_use_before_loading_the_model(synthetic_run, monkeypatch, workers):
    import socket

    from typer.testing import CliRunner

    import digitlab.serve
    from digitlab.cli import app as cli

    touched = []
    for name in ("create_app", "check_run", "run_app", "run_workers"):
        monkeypatch.setattr(digitlab.serve, name, lambda *a, name=name, **kw: touched.append(name))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(cli, ["serve", str(synthetic_run), "--port", str(port), "--workers", workers])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot listen on 127.0.0.1:{port}: ")
    assert "in use" in lines[0]
    assert touched == []


def test_cli_serve_binds_the_port_and_hands_the_socket_to_the_server(synthetic_run, monkeypatch):
    import socket

    from typer.testing import CliRunner

    import digitlab.serve
    from digitlab.cli import app as cli

    seen = []

    def fake_run_app(app, sock, **kw):
        seen.append((sock.getsockname(), sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN), kw))
        with socket.create_connection(sock.getsockname(), timeout=5):
            pass  # the socket already listens: a client's connection is queued

    monkeypatch.setattr(digitlab.serve, "run_app", fake_run_app)
    port = free_port()
    result = CliRunner().invoke(cli, ["serve", str(synthetic_run), "--port", str(port), "--no-access-log"])
    assert result.exit_code == 0, result.output
    limits = {"timeout": SERVE_TIMEOUT, "limit_concurrency": SERVE_LIMIT_CONCURRENCY}
    assert seen == [(("127.0.0.1", port), 1, {"host": "127.0.0.1", "port": port, "access_log": False, **limits})]
    with socket.socket() as again:  # closed once the server returned
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))


# --- decoded size (issue 14 row 11), deadlines (row 12), disconnects (row 13) ------------------------


def test_a_16_bit_png_over_the_decoded_bytes_cap_is_a_422_naming_the_limit(client):
    from digitlab.preprocess.image import MAX_DECODED_BYTES, MAX_PIXELS

    side = 5000  # 25 MP, under the pixel cap; 2 bytes a pixel: 50 MB decoded
    assert side * side < MAX_PIXELS < side * side * 2 * 4 and side * side * 2 > MAX_DECODED_BYTES
    png = png_bytes(Image.new("I;16", (side, side), 0))
    assert len(png) < 200_000  # a small upload
    r = client.post("/api/predict", files={"file": ("deep.png", png, "image/png")})
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert "\n" not in detail
    assert detail.startswith("file: image bytes") and "5000x5000" in detail and "'I;16'" in detail
    assert f"at most {MAX_DECODED_BYTES / 1e6:.0f} MB" in detail
    grey = png_bytes(Image.new("L", (side, side), 255))  # the same size at 1 byte a pixel fits
    assert client.post("/api/predict", files={"file": ("grey.png", grey, "image/png")}).status_code == 200


@pytest.fixture(scope="module")
def live_server(synthetic_run):
    """The real server (uvicorn through run_app, as `digitlab serve` runs it) on loopback, with a 1 s
    deadline and room for 32 connections."""
    import time

    from digitlab.serve import bind_socket, run_app

    port = free_port()
    sock = bind_socket("127.0.0.1", port)
    web_app = create_app(synthetic_run, timeout=1.0)
    thread = threading.Thread(
        target=run_app,
        args=(web_app, sock),
        kwargs={"port": port, "access_log": False, "timeout": 1.0, "limit_concurrency": 32},
        daemon=True,
    )
    thread.start()
    import httpx

    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2)
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
    yield port, web_app.state.service
    sock.close()  # the thread is a daemon: it ends with the test session


def closed_within(sock, seconds: float) -> tuple[bool, bytes]:
    """Whether the server closed `sock` within `seconds`, and what it sent before."""
    import time

    sock.settimeout(0.2)
    got, end = b"", time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            continue
        except OSError:
            return True, got
        if not chunk:
            return True, got
        got += chunk
    return False, got


def test_stalled_clients_are_closed_after_the_deadline_and_others_are_served(live_server):
    import socket

    import httpx

    port, _ = live_server
    body = b'{"pixels": [[0, 0'
    half_headers = b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: appl"
    half_body = (
        b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 5000\r\n\r\n" + body
    )
    stalled = []
    for i in range(12):  # bounded: 12 of the 32 connections the server holds
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(half_headers if i % 2 else half_body)
        stalled.append(s)
    try:
        for k in range(5):  # served while the stalled ones wait
            r = httpx.post(f"http://127.0.0.1:{port}/api/predict", json={"pixels": block_pixels(k)}, timeout=10)
            assert r.status_code == 200
        for i, s in enumerate(stalled):
            closed, got = closed_within(s, 8.0)  # the deadline is 1 s
            assert closed, f"stalled connection {i} still open"
            if i % 2 == 0:  # the headers had arrived: the body's deadline answers first
                assert got.startswith(b"HTTP/1.1 408"), got[:200]
                assert b"body: " in got and b"--timeout" in got
            else:
                assert got == b""
    finally:
        for s in stalled:
            s.close()
    assert httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=10).status_code == 200


def test_a_client_gone_mid_body_is_a_disconnect_not_an_internal_error(live_server, caplog):
    import logging
    import socket
    import time

    import httpx

    port, service = live_server
    before = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=10).json()
    assert before["disconnects"] == service.disconnects
    with caplog.at_level(logging.WARNING, logger="digitlab.serve"):
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(
                    b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; "
                    b"boundary=x\r\nContent-Length: 100000\r\n\r\n--x\r\nContent-Disposition: form-data; "
                    b'name="file"; filename="a.png"\r\n\r\n\x89PNG'
                )
                time.sleep(0.2)  # the request is under way when the client goes
        deadline = time.monotonic() + 10
        while service.disconnects < before["disconnects"] + 3:
            assert time.monotonic() < deadline, "the disconnects were not counted"
            time.sleep(0.05)
    after = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=10).json()
    assert after["disconnects"] == before["disconnects"] + 3
    assert after["internal_errors"] == before["internal_errors"]
    lines = [r.getMessage() for r in caplog.records if r.name == "digitlab.serve"]
    assert len(lines) == 3 and all("disconnected" in line and "\n" not in line for line in lines)
    assert not [r for r in caplog.records if r.exc_info]  # no traceback logged


def test_cli_serve_refuses_a_bad_timeout_or_limit_before_loading_the_model(synthetic_run, monkeypatch):
    from typer.testing import CliRunner

    import digitlab.serve
    from digitlab.cli import app as cli

    touched = []
    for name in ("create_app", "check_run", "run_app", "run_workers", "bind_socket"):
        monkeypatch.setattr(digitlab.serve, name, lambda *a, name=name, **kw: touched.append(name))
    for args, message in (
        (["--timeout", "0"], "error: --timeout: expected seconds greater than 0, got 0"),
        (["--limit-concurrency", "0"], "error: --limit-concurrency: expected at least 1 connection, got 0"),
    ):
        result = CliRunner().invoke(cli, ["serve", str(synthetic_run), *args])
        assert result.exit_code == 2, result.output
        assert result.output.strip() == message
    assert touched == []


def test_every_answer_is_exactly_its_response_models_fields(client):
    """The routes' answers go through their declared response models: no field more, none missing."""
    from digitlab.serve.schemas import BatchReading, Health, ModelReport, Reading

    png = drawn_digit()
    one = client.post("/api/predict", files={"file": ("seven.png", png, "image/png")}).json()
    assert set(one) == set(Prediction.model_fields)
    batch = client.post("/api/predict/batch", json={"pixels": [GRID, [[1]]]}).json()["results"]
    assert set(batch[0]) == set(BatchPrediction.model_fields) and set(batch[1]) == set(BatchFailure.model_fields)
    number = client.post("/api/read", files={"file": ("seven.png", png, "image/png")}).json()
    assert set(number) == set(Reading.model_fields) and number["digits"]
    assert set(number["digits"][0]) == set(Reading.model_fields["digits"].annotation.__args__[0].model_fields)
    numbers = client.post("/api/read/batch", files=[("files", ("a.png", png, "image/png"))]).json()["results"]
    assert set(numbers[0]) == set(BatchReading.model_fields)
    assert set(client.get("/api/health").json()) == set(Health.model_fields)
    assert set(client.get("/api/model").json()) == set(ModelReport.model_fields)
    paths = client.app.openapi()["paths"]
    for path, model in [
        ("/api/predict", "Prediction"),
        ("/api/read", "Reading"),
        ("/api/read/batch", "ReadBatchResponse"),
    ]:
        ok = paths[path]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok == {"$ref": f"#/components/schemas/{model}"}, path
