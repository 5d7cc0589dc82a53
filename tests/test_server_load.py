"""The real server (uvicorn, as `digitlab serve` runs it, on loopback) under hostile and heavy load: cheap
bodies refused early while /api/health answers, a small request not starved by a heavy one, every client
over the connection limit answered 503 with a JSON body, and the hostile-input table: 0 answers 5xx, 0
resets, every refusal a 4xx or 503 with a JSON {"detail": ...}."""

import io
import json
import shutil
import socket
import threading
import time

import httpx
import pytest
from PIL import Image, ImageDraw

from digitlab.serve import MAX_BATCH, MAX_BODY, bind_socket, create_app, run_app
from digitlab.serve.schemas import MAX_MEGAPIXELS
from digitlab.serve.service import FairPool
from test_preprocess import png_with_chunk, zlib_bomb  # pytest puts tests/ on the path
from test_serve import BAD_INPUTS, drawn_digit

pytestmark = pytest.mark.slow
LOAD_SECONDS = 60  # no loop below runs longer


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, synthetic_mlp_run):
    return shutil.copytree(synthetic_mlp_run, tmp_path_factory.mktemp("load") / "mlp-synthetic")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(web_app, timeout: float = 5.0, limit_concurrency: int = 64) -> str:
    """`web_app` served by uvicorn (run_app) in a daemon thread on a loopback port; its base URL."""
    port = free_port()
    sock = bind_socket("127.0.0.1", port)
    kwargs = {"port": port, "access_log": False, "timeout": timeout, "limit_concurrency": limit_concurrency}
    threading.Thread(target=run_app, args=(web_app, sock), kwargs=kwargs, daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + LOAD_SECONDS
    while True:
        try:
            httpx.get(f"{url}/api/health", timeout=2)
            return url
        except httpx.TransportError:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def server(run_dir):
    return start(create_app(run_dir, timeout=5.0))


def many_pixels(n: int = 1_500_000) -> bytes:
    """{"pixels": [[[0]], ...]}: n entries in 9 MB, each a cheap bad grid."""
    return b'{"pixels": [' + b",".join([b"[[0]]"] * n) + b"]}"


def empty_parts() -> tuple[bytes, str]:
    """A multipart body of as many empty file parts as fit in MAX_BODY (about 150,000)."""
    part = b'--x\r\nContent-Disposition: form-data; name="files"; filename="a"\r\n\r\n\r\n'
    n = (MAX_BODY - 8) // len(part)
    return part * n + b"--x--\r\n", "multipart/form-data; boundary=x"


def blank_png(side: int) -> bytes:
    """A side x side PNG of white paper with a 7 drawn in its middle: many pixels, few bytes."""
    img = Image.new("L", (side, side), 255)
    c, s = side // 2, side // 40
    ImageDraw.Draw(img).line([(c - 5 * s, c - 8 * s), (c + 5 * s, c - 8 * s), (c, c + 8 * s)], fill=0, width=2 * s)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=1)
    return buf.getvalue()


def watch_health(url: str, stop: threading.Event, times: list[float]) -> None:
    with httpx.Client(timeout=LOAD_SECONDS) as client:
        end = time.monotonic() + LOAD_SECONDS
        while not stop.is_set() and time.monotonic() < end:
            start = time.monotonic()
            assert client.get(f"{url}/api/health").status_code == 200
            times.append(time.monotonic() - start)
            time.sleep(0.05)


def test_cheap_bodies_are_refused_early_while_health_answers(server):
    bodies = [(many_pixels(), "application/json")] * 2 + [empty_parts()]
    stop, times, answers = threading.Event(), [], []
    watcher = threading.Thread(target=watch_health, args=(server, stop, times))
    watcher.start()
    time.sleep(0.2)

    def post(body, media):
        answers.append(
            httpx.post(
                f"{server}/api/predict/batch", content=body, headers={"content-type": media}, timeout=LOAD_SECONDS
            )
        )

    senders = [threading.Thread(target=post, args=b) for b in bodies]
    for t in senders:
        t.start()
    for t in senders:
        t.join(LOAD_SECONDS)
    stop.set()
    watcher.join(LOAD_SECONDS)
    assert len(answers) == 3 and times
    for r in answers:
        assert r.status_code == 413, r.text[:300]
        assert f"at most {MAX_BATCH}" in r.json()["detail"]
    assert max(times) < 2.0, f"/api/health took {max(times):.2f} s while cheap bodies were parsed"


def test_a_batch_over_the_decode_budget_is_413_before_decoding(server):
    big = blank_png(3200)  # 10 MP each, well under the 40 MP of one image: over the budget only in total
    count = int(MAX_MEGAPIXELS * 1e6 // 3200**2) + 1
    files = [("files", (f"{i}.png", big, "image/png")) for i in range(count)]
    start = time.monotonic()
    r = httpx.post(f"{server}/api/read/batch", files=files, timeout=LOAD_SECONDS)
    assert r.status_code == 413, r.text[:300]
    assert r.json()["detail"].startswith("files: ") and f"at most {MAX_MEGAPIXELS:g} megapixels" in r.json()["detail"]
    assert time.monotonic() - start < 10  # refused from the headers: decoding them would take far longer


def test_a_small_request_is_answered_before_a_heavy_one_that_started_first(run_dir):
    web_app = create_app(run_dir, timeout=30.0)
    service = web_app.state.service
    service.pool.shutdown()
    service.pool = FairPool(1)  # one request thread, as on one core
    reading, read = threading.Event(), service.read

    def slow_read(inputs, fields, **options):  # a 9 MP image read in 0.2 s more: the heavy request takes seconds
        reading.set()
        time.sleep(0.2 * sum(f.startswith("files[") for f in fields))
        return read(inputs, fields, **options)

    service.read = slow_read
    url = start(web_app)
    big = blank_png(3000)  # 9 MP each
    heavy = [("files", (f"{i}.png", big, "image/png")) for i in range(int(MAX_MEGAPIXELS * 1e6 // 3000**2))]
    done = []

    def post_heavy():
        r = httpx.post(f"{url}/api/read/batch", files=heavy, timeout=LOAD_SECONDS)
        done.append(("heavy", r.status_code))

    heavy_thread = threading.Thread(target=post_heavy)
    heavy_thread.start()
    assert reading.wait(LOAD_SECONDS)  # the heavy one is being read
    small = {"file": ("seven.png", drawn_digit(), "image/png")}
    r = httpx.post(f"{url}/api/read", files=small, timeout=LOAD_SECONDS)
    done.append(("small", r.status_code))
    heavy_thread.join(LOAD_SECONDS)
    assert done == [("small", 200), ("heavy", 200)]


def test_every_client_over_the_connection_limit_gets_a_json_503(run_dir):
    url = start(create_app(run_dir, timeout=10.0), timeout=10.0, limit_concurrency=4)
    port = int(url.rsplit(":", 1)[1])
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]  # 3 of the 4 held
    upload = b"\x89PNG" + bytes(238_000)
    answers, resets = [], []

    def post():
        try:
            answers.append(httpx.post(f"{url}/api/predict", files={"file": ("a.png", upload, "image/png")}, timeout=30))
        except httpx.TransportError as e:
            resets.append(repr(e))

    try:
        clients = [threading.Thread(target=post) for _ in range(20)]
        for t in clients:
            t.start()
        for t in clients:
            t.join(LOAD_SECONDS)
    finally:
        for s in idle:
            s.close()
    assert resets == []
    assert len(answers) == 20
    for r in answers:
        assert r.status_code == 503, r.text[:200]
        assert r.headers["retry-after"] == "1" and "--limit-concurrency" in r.json()["detail"]


def raw_exchange(url: str, request: bytes) -> tuple[bool, bytes]:
    """Send `request` on a new connection and read the answer: (whether the server reset it, what came)."""
    host, port = url.removeprefix("http://").split(":")
    got = b""
    with socket.create_connection((host, int(port)), timeout=10) as s:
        try:
            s.sendall(request)
            while chunk := s.recv(65536):
                got += chunk
        except ConnectionResetError:
            return True, got
    return False, got


def test_a_request_with_two_host_headers_is_400(server):
    for hosts in ([b"localhost", b"evil.example"], [b"127.0.0.1", b"127.0.0.1"]):
        lines = b"".join(b"Host: " + h + b"\r\n" for h in hosts)
        reset, got = raw_exchange(server, b"GET /api/health HTTP/1.1\r\n" + lines + b"Connection: close\r\n\r\n")
        assert not reset and got.startswith(b"HTTP/1.1 400"), got[:200]
        assert b'"detail":"Host header: ' in got and b"expected one" in got


def chunk_bomb() -> bytes:
    return png_with_chunk(b"zTXt", b"Comment\0\0" + zlib_bomb())


def multipart_request(path: str, body: bytes, media: str) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {media}\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"Connection: close\r\n\r\n" + body


def httpx_request(path: str, request_args) -> bytes:
    """The bytes httpx would send for client.post(path, **request_args)."""
    args = request_args() if callable(request_args) else request_args
    req = httpx.Request("POST", f"http://127.0.0.1{path}", **args)
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in req.headers.items() if k.lower() not in ("host", "connection"))
    body = req.read()
    if req.headers.get("transfer-encoding") == "chunked":
        pieces = [body[i : i + 65536] for i in range(0, len(body), 65536)]
        body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    return head.encode() + b"\r\n" + body


# (name, the request's bytes lazily, the status expected)
HOSTILE = [
    (
        "pixels: 1.5 million cheap entries",
        lambda: multipart_request("/api/predict/batch", many_pixels(), "application/json"),
        413,
    ),
    ("multipart: 150,000 empty parts", lambda: multipart_request("/api/predict/batch", *empty_parts()), 413),
    (
        "read/batch over the decode budget",
        lambda: httpx_request(
            "/api/read/batch",
            {
                "files": [
                    ("files", (f"{i}.png", blank_png(3000), "image/png"))
                    for i in range(int(MAX_MEGAPIXELS * 1e6 // 3000**2) + 1)
                ]
            },
        ),
        413,
    ),
    (
        "two Host headers",
        lambda: b"GET /api/health HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
        400,
    ),
    (
        "a body over the size limit",
        lambda: multipart_request("/api/predict", b"{" + b" " * (MAX_BODY + 10) + b"}", "application/json"),
        413,
    ),
    (
        "predict: a chunk bomb",
        lambda: httpx_request("/api/predict", {"files": {"file": ("b.png", chunk_bomb(), "image/png")}}),
        422,
    ),
    (
        "read: a chunk bomb",
        lambda: httpx_request("/api/read", {"files": {"file": ("b.png", chunk_bomb(), "image/png")}}),
        422,
    ),
    *[(name, lambda p=path, a=args: httpx_request(p, a), status) for name, path, args, status, _ in BAD_INPUTS],
]


def test_the_hostile_input_table_against_a_real_server(server):
    """Every hostile request: its own 4xx with a JSON detail, no 5xx, no reset; health fast meanwhile."""
    stop, times = threading.Event(), []
    watcher = threading.Thread(target=watch_health, args=(server, stop, times))
    watcher.start()
    failures = []
    try:
        for name, request, status in HOSTILE:
            reset, got = raw_exchange(server, request())
            head, _, body = got.partition(b"\r\n\r\n")
            code = int(head.split(b" ")[1]) if head.startswith(b"HTTP/1.1 ") else None
            try:
                detail = json.loads(body)["detail"]
            except (ValueError, KeyError, TypeError):
                detail = None
            if reset or code != status or not isinstance(detail, str):
                failures.append(f"{name}: reset={reset} status={code} body={body[:120]!r}")
    finally:
        stop.set()
        watcher.join(LOAD_SECONDS)
    assert failures == [], "\n".join(failures)
    assert times and max(times) < 2.0
    assert httpx.get(f"{server}/api/health", timeout=10).json()["internal_errors"] == 0
