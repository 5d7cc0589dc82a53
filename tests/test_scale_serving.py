"""Serving on several machines, shown on one: two `digitlab serve` processes of the same run on loopback,
asked in turn as a round-robin load balancer asks them, give the same answers, and their health check
and model report say which run they serve (docs/scale.md, "Serving on several machines")."""

import contextlib
import io
import shutil
import socket
import subprocess
import sys
import time

import httpx
import pytest
from PIL import Image

from digitlab.data.synth.numbers import compose_numbers
from digitlab.export import export

START_SECONDS = 240  # for a server to load its model and answer, on a busy 2-core CPU
REQUEST_SECONDS = 30


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, trained_run):
    """This module's copy of the session's fast MNIST run, exported to ONNX (each node serves model.onnx,
    `digitlab serve`'s default where the run has one)."""
    run = shutil.copytree(trained_run, tmp_path_factory.mktemp("scale") / "fast")
    assert export(run, "onnx", n=100)["passed"]
    return run


def png(pixels) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def free_ports(count: int) -> list[int]:
    """`count` different ports free on loopback (all bound at once, then released for the servers)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


@contextlib.contextmanager
def nodes(run, count: int):
    """`count` `digitlab serve` processes of `run`, each on its own port; yields their base URLs once
    every one answers /api/health, and stops them after."""
    ports = free_ports(count)
    servers = [
        subprocess.Popen(
            [sys.executable, "-c", "from digitlab.cli import main; main()", "serve", str(run)]
            + ["--port", str(port), "--no-access-log"],  # serve's default runtime: ONNX Runtime, as exported
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for port in ports
    ]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        deadline = time.monotonic() + START_SECONDS
        for server, url in zip(servers, urls):
            while True:
                assert server.poll() is None, server.stderr.read().decode()[-2000:]
                assert time.monotonic() < deadline, f"{url} did not answer within {START_SECONDS} s"
                try:
                    if httpx.get(f"{url}/api/health", timeout=5).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.3)
        yield servers, urls
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


@pytest.mark.slow
def test_two_nodes_behind_a_round_robin_balancer_answer_alike(run_dir, mnist):
    digits = [png(255 - mnist.x_test[i]) for i in range(12)]
    numbers = [png(n.image) for n in compose_numbers(mnist.x_test, mnist.y_test, "separated", 4, lengths=(3, 5))]
    requests = [("/api/predict", image) for image in digits] + [("/api/read", image) for image in numbers]
    with nodes(run_dir, 2) as (servers, urls):
        health = [httpx.get(f"{url}/api/health", timeout=REQUEST_SECONDS).json() for url in urls]
        assert [h["status"] for h in health] == ["ok", "ok"]
        assert [h["runtime"] for h in health] == ["onnx", "onnx"]  # the run's current model.onnx, by default
        assert health[0]["model"] == health[1]["model"] and health[0]["model"]["name"] == run_dir.name
        assert health[0]["pid"] != health[1]["pid"]  # two processes, as two machines would run
        reports = [httpx.get(f"{url}/api/model", timeout=REQUEST_SECONDS).json() for url in urls]
        assert reports[0] == reports[1] and reports[0]["name"] == run_dir.name  # the run, its figures, calibration

        # The balancer sends request n to node n % 2; each image is sent twice in a row, so both nodes read it.
        answers: dict[int, list] = {}
        for n in range(2 * len(requests)):
            path, image = requests[n // 2]
            r = httpx.post(
                f"{urls[n % 2]}{path}", files={"file": ("scan.png", image, "image/png")}, timeout=REQUEST_SECONDS
            )
            assert r.status_code == 200, r.text
            answers.setdefault(n // 2, []).append(r.json())
        for k, (first, second) in answers.items():
            assert first == second, requests[k][0]
        read = [answers[k][0] for k in range(len(digits))]
        assert sum(a["digit"] == mnist.y_test[i] for i, a in enumerate(read)) >= 10  # digits read, not echoed

        # A node that stops fails the balancer's health check; the other goes on answering.
        servers[1].terminate()
        servers[1].wait(timeout=60)
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{urls[1]}/api/health", timeout=5)
        assert httpx.get(f"{urls[0]}/api/health", timeout=REQUEST_SECONDS).json()["status"] == "ok"


def test_a_worker_busy_on_a_shared_cpu_is_not_restarted_after_uvicorns_5_s():
    """uvicorn's supervisor kills a worker that has not answered its health check within
    timeout_worker_healthcheck s and starts another (imports and the model again, half a minute of a core on
    a loaded 2-core CPU, seen under bench/latency.py's load): `digitlab serve --workers` gives it a minute."""
    from digitlab.serve.workers import WORKER_HEALTHCHECK, server_config

    config = server_config("digitlab.serve.workers:app_from_env", 5.0, 64, factory=True, workers=2)
    assert config.timeout_worker_healthcheck == WORKER_HEALTHCHECK >= 30
