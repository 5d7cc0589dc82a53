"""Latency of the REST API under concurrent load, measured against the real server.

Starts `digitlab serve RUN [--workers N] [--runtime R]` on a free loopback port in a subprocess, then
CLIENTS concurrent keep-alive connections post images, REQUESTS each or until DURATION seconds pass, each
waiting for its answer before the next (a closed loop): to /api/predict a 280x280 PNG of a drawn digit;
with `--endpoint read`, to /api/read a 6-digit number composed from MNIST test digits (each client its
own, the numbers bench/read_numbers.py times). As multipart, or with `--form json` as the page's pads send
them, {"image": "data:image/png;base64,..."}. Prints p50/p95/p99 latency, throughput, errors, the CPU time
per request of server and clients, and the p50 that CPU time alone makes when the cores are the limit;
with --breakdown also the time of each stage measured in this process and one client's latency.

    .venv/bin/python bench/latency.py runs/fast-... [--clients 8] [--workers 2] [--duration 60]
    .venv/bin/python bench/latency.py runs/fast-... --endpoint read --form json --workers 2 [--runtime keras]

Neighbours share the server with the timed clients (`--neighbours N` of them), each posting back to back:
`--neighbour heavy` sends /api/read/batch requests of `--heavy-megapixels` (drawn pages of 10 MP each),
`--neighbour hostile` cheap bodies the server must refuse (1.5 million {"pixels": [[[0]], ...]} entries,
150,000 empty multipart parts), in turn. The timed clients' latency is the figure: a small /api/read
behind a heavy batch, or /api/health (`--endpoint health`) while hostile bodies arrive.

    .venv/bin/python bench/latency.py runs/fast-... --endpoint read --clients 1 --neighbour heavy --neighbours 2
    .venv/bin/python bench/latency.py runs/fast-... --endpoint health --clients 1 --neighbour hostile

Targets on a 2-core CPU: /api/predict p50 <= 20 ms, p99 <= 50 ms; /api/read p50 <= 15 ms with one client,
and >= 150 numbers/s with 8 clients and --workers 2; beside a heavy neighbour, /api/read p50 <= 1 s; beside
hostile bodies, /api/health p99 <= 100 ms. The server runs `digitlab serve`'s default runtime (ONNX Runtime
where the run has a current model.onnx) unless --runtime is given.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from digitlab.predict import choose_runtime
from digitlab.runs import cpu_name

TARGETS_MS = {"predict": (20.0, 50.0), "read": (15.0, math.inf), "health": (100.0, 100.0)}  # (p50, p99)
READ_THROUGHPUT = 150.0  # numbers/s through /api/read with 8 clients and --workers 2 (the p50 target: one client)
NEIGHBOUR_TARGETS_MS = {"heavy": (1000.0, math.inf), "hostile": (100.0, 100.0)}  # the timed clients' (p50, p99)
HEAVY_MEGAPIXELS = 40  # in each of the heavy neighbour's batches
WARMUP_SECONDS = 5.0  # of the same load before timing starts, so that every worker process is warm
NUMBER_LENGTH = 6  # digits in each number posted to /api/read


def drawn_digit_png(side: int = 280) -> bytes:
    """A 7 drawn with a thick round pen, black on white, as the page's canvas sends it."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (side, side), "white")
    s = side / 280
    ImageDraw.Draw(img).line(
        [(70 * s, 60 * s), (205 * s, 60 * s), (120 * s, 230 * s)], fill="black", width=round(18 * s), joint="curve"
    )
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def composed_numbers(count: int, seed: int = 0) -> list[bytes]:
    """`count` PNGs of NUMBER_LENGTH-digit numbers of well separated MNIST test digits (digitlab.data.synth.numbers):
    the first of bench/read_numbers.py's timed numbers at the same seed."""
    from PIL import Image

    from digitlab.data import load_dataset
    from digitlab.data.synth.numbers import LENGTHS, compose_numbers

    ds = load_dataset("mnist")
    numbers = compose_numbers(ds.x_test, ds.y_test, "separated", count * len(LENGTHS), seed=seed)
    out = []
    for n in [n for n in numbers if n.length == NUMBER_LENGTH][:count]:
        buf = io.BytesIO()
        Image.fromarray(n.image).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    run_dir: Path, port: int, workers: int = 1, runtime: str | None = None, timeout: float = 180.0
) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-c",
        "from digitlab.cli import main; main()",
        "serve",
        str(run_dir),
        "--port",
        str(port),
        "--no-access-log",
        "--workers",
        str(workers),
        *(["--runtime", runtime] if runtime else []),  # None: serve's default
    ]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"server exited with code {server.returncode}:\n{server.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1.0).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit(f"server did not answer /api/health within {timeout:.0f} s")


def cpu_seconds(pid: int, descendants: bool = True) -> float:
    """User + system CPU time a process and (by default) its live descendants, such as a server's worker
    processes, have used so far (Linux /proc)."""
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))  # ppid, utime + stime
    tree = {pid}
    while descendants:
        more = {p for p, (ppid, _) in stats.items() if ppid in tree} - tree
        if not more:
            break
        tree |= more
    ticks = sum(stats[p][1] for p in tree if p in stats)
    return ticks / os.sysconf("SC_CLK_TCK")


def multipart_request(port: int, png: bytes, path: str = "/api/predict") -> bytes:
    """One complete HTTP/1.1 keep-alive POST of `png` as the multipart field `file`, ready to send."""
    boundary = "digitlab-bench-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="digit.png"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + png
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def json_request(port: int, png: bytes, path: str = "/api/predict") -> bytes:
    """The same POST with `png` as JSON {"image": a data: URL}, the form the page's pads send."""
    body = json.dumps({"image": "data:image/png;base64," + base64.b64encode(png).decode()}).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def health_request(port: int, png: bytes = b"", path: str = "/api/health") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()


FORMS = {"multipart": multipart_request, "json": json_request}


def page_png(megapixels: float) -> bytes:
    """A square page of white paper of `megapixels` with a thick 7 drawn in its middle: many pixels to
    decode and search for ink, few bytes to send."""
    from PIL import Image, ImageDraw

    side = int(math.sqrt(megapixels * 1e6))
    img = Image.new("L", (side, side), 255)
    c, s = side // 2, side // 40
    ImageDraw.Draw(img).line([(c - 5 * s, c - 8 * s), (c + 5 * s, c - 8 * s), (c, c + 8 * s)], fill=0, width=2 * s)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def files_request(port: int, path: str, parts: list[bytes], field: str = "files") -> bytes:
    """A multipart POST of `parts` as the file field `field`, ready to send."""
    boundary = b"digitlab-bench-boundary"
    body = b"".join(
        b'--%s\r\nContent-Disposition: form-data; name="%s"; filename="%d.png"\r\n\r\n%s\r\n'
        % (boundary, field.encode(), i, part)
        for i, part in enumerate(parts)
    )
    body += b"--%s--\r\n" % boundary
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary.decode()}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def neighbour_requests(port: int, kind: str, megapixels: float = HEAVY_MEGAPIXELS, page: float = 10.0) -> list[bytes]:
    """The requests a neighbour sends in turn: heavy batches (of `page` MP pages, `megapixels` in all), or
    cheap bodies to refuse."""
    if kind == "heavy":
        pages = max(1, round(megapixels / page))
        return [files_request(port, "/api/read/batch", [page_png(megapixels / pages)] * pages)]
    pixels = b'{"pixels": [' + b",".join([b"[[0]]"] * 1_500_000) + b"]}"
    head = f"POST /api/predict/batch HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
    empty = files_request(port, "/api/predict/batch", [b""] * 140_000)
    return [head.encode() + f"Content-Length: {len(pixels)}\r\n\r\n".encode() + pixels, empty]


async def _client(
    port: int,
    request: bytes | list[bytes],
    requests: int,
    deadline: list[float],
    start: asyncio.Event,
    latencies: list[float],
    errors: list[str],
    reconnect: bool,
) -> None:
    """One client posting `request` (or each of a list in turn) back to back, each after the last answer, on
    one keep-alive connection or (reconnect) a new connection per request; a response is read by its
    Content-Length."""
    turns = request if isinstance(request, list) else [request]
    connection = await asyncio.open_connection("127.0.0.1", port) if not reconnect else None
    await start.wait()
    try:
        for i in range(requests):
            request = turns[i % len(turns)]
            if time.perf_counter() > deadline[0]:
                break
            t0 = time.perf_counter()
            reader, writer = connection or await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            body = await reader.readexactly(length)
            if reconnect:
                writer.close()
            if head.startswith(b"HTTP/1.1 200"):
                latencies.append((time.perf_counter() - t0) * 1e3)
            else:
                status = head.split(b"\r\n", 1)[0].decode()
                errors.append(f"{status}: {body[:100].decode(errors='replace')}")
    finally:
        if connection:
            connection[1].close()


def load(
    port: int,
    bodies: list[bytes],
    clients: int,
    requests: int,
    duration: float,
    server_pid: int,
    reconnect: bool = False,
    neighbour: list[bytes] | None = None,
    neighbours: int = 1,
) -> dict:
    """CLIENTS concurrent keep-alive connections posting REQUESTS each (or until DURATION s), client k the
    request bodies[k % len(bodies)] (complete HTTP requests); latencies in ms, CPU ms per request.

    The clients are one asyncio loop over raw sockets, not a full HTTP library: they share this machine's
    CPUs with the server, and a lean client (about 0.2 ms of CPU per request, against about 3 ms for
    thread-per-client httpx) leaves them to the server, as separate client machines would. With `neighbour`,
    `neighbours` more clients send those requests in turn, each on a new connection, counted apart."""
    beside: dict = {"answers": [], "statuses": []}

    async def run() -> tuple[list[float], list[str], float, tuple[float, float]]:
        latencies: list[float] = []
        errors: list[str] = []
        start, deadline = asyncio.Event(), [math.inf]
        tasks = [
            asyncio.create_task(
                _client(port, neighbour, 10**6, deadline, start, beside["answers"], beside["statuses"], True)
            )
            for _ in range(neighbours if neighbour else 0)
        ]
        tasks += [
            asyncio.create_task(
                _client(port, bodies[k % len(bodies)], requests, deadline, start, latencies, errors, reconnect)
            )
            for k in range(clients)
        ]
        await asyncio.sleep(0.2)  # every connection open before the clock starts
        cpu0 = cpu_seconds(server_pid), cpu_seconds(os.getpid(), descendants=False)
        t0 = time.perf_counter()
        deadline[0] = t0 + duration
        start.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        errors.extend(f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException))
        return latencies, errors, time.perf_counter() - t0, cpu0

    latencies, errors, wall, cpu0 = asyncio.run(run())
    server_cpu = cpu_seconds(server_pid) - cpu0[0]
    client_cpu = cpu_seconds(os.getpid(), descendants=False) - cpu0[1]
    ms = np.asarray(latencies)
    pct = np.percentile(ms, [50, 95, 99]) if len(ms) else [float("nan")] * 3
    return {
        "clients": clients,
        "requests": int(len(ms)),
        "errors": len(errors),
        "first_errors": errors[:3],
        "seconds": wall,
        "throughput": len(ms) / wall,
        "p50": pct[0],
        "p95": pct[1],
        "p99": pct[2],
        "mean": float(ms.mean()) if len(ms) else float("nan"),
        "max": float(ms.max()) if len(ms) else float("nan"),
        "server_cpu_ms": 1e3 * server_cpu / max(len(ms), 1),
        "client_cpu_ms": 1e3 * client_cpu / max(len(ms), 1),
        # A closed loop on cores that are the limit: throughput = cores / CPU per request, and each of the
        # clients waits for the others' requests (Little's law), so p50 ~ clients x CPU per request / cores.
        "cpu_bound_p50": clients * 1e3 * (server_cpu + client_cpu) / max(len(ms), 1) / (os.cpu_count() or 1),
        "neighbour_ok": len(beside["answers"]),
        "neighbour_ok_p50": float(np.median(beside["answers"])) if beside["answers"] else float("nan"),
        "neighbour_refused": sorted({s.split(":")[0] for s in beside["statuses"]}),
        "neighbour_refusals": len(beside["statuses"]),
    }


def breakdown(run_dir: Path, png: bytes, url: str, endpoint: str, runtime: str | None, form: str, n: int = 100) -> dict:
    """Median ms per stage in this process, and one client's median latency through HTTP."""
    from digitlab.predict.reading import read
    from digitlab.preprocess import preprocess
    from digitlab.serve import Service

    def median_ms(f) -> float:
        f()
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            f()
            times.append((time.perf_counter() - t0) * 1e3)
        return float(np.median(times))

    service = Service.load(run_dir, runtime=runtime)
    with httpx.Client() as http:
        if form == "json":
            sent = {"json": {"image": "data:image/png;base64," + base64.b64encode(png).decode()}}
        else:
            sent = {"files": {"file": ("image.png", png, "image/png")}}
        one = lambda: http.post(url, **sent).raise_for_status()  # noqa: E731
        if endpoint == "read":
            stages = {"read (in process)": median_ms(lambda: read(service.predictor, png))}
        else:
            pre = preprocess(png)
            stages = {
                "preprocess": median_ms(lambda: preprocess(png)),
                "model (classify, compiled)": median_ms(lambda: service.classify(pre.digit[None], [True])),
            }
        in_process = sum(stages.values())
        stages["one client, HTTP round trip"] = median_ms(one)
    stages["HTTP + server overhead"] = stages["one client, HTTP round trip"] - in_process
    return stages


def main(
    run_dir: Path,
    clients: int = 8,
    requests: int = 200,
    duration: float = 60.0,
    repeat: int = 1,
    with_breakdown: bool = False,
    workers: int = 1,
    runtime: str | None = None,
    reconnect: bool = False,
    endpoint: str = "predict",
    form: str = "multipart",
    neighbour: str | None = None,
    neighbours: int = 1,
    heavy_megapixels: float = HEAVY_MEGAPIXELS,
    page_megapixels: float = 10.0,
) -> dict:
    run_dir = Path(run_dir)
    if not (run_dir / "model.keras").is_file():
        raise SystemExit(f"{run_dir}: no model.keras; expected a run directory made by `digitlab train`")
    pngs = composed_numbers(clients) if endpoint == "read" else [drawn_digit_png()]
    port = free_port()
    path = f"/api/{endpoint}"
    build = health_request if endpoint == "health" else FORMS[form]
    bodies = [build(port, png, path) for png in pngs]
    beside = neighbour_requests(port, neighbour, heavy_megapixels, page_megapixels) if neighbour else None
    server = start_server(run_dir, port, workers, runtime)
    try:
        warmup = load(port, bodies, clients, 10**6, WARMUP_SECONDS, server.pid, True)  # every worker warm; not counted
        if warmup["errors"]:
            raise SystemExit(f"warm-up failed: {warmup['first_errors']}")
        rounds = [load(port, bodies, clients, requests, duration, server.pid, reconnect, beside) for _ in range(repeat)]
        url = f"http://127.0.0.1:{port}{path}"
        stages = breakdown(run_dir, pngs[0], url, endpoint, runtime, form) if with_breakdown else None
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {
        "rounds": rounds,
        "stages": stages,
        "endpoint": endpoint,
        "form": form,
        "png_bytes": [len(png) for png in pngs],
        "cpus": os.cpu_count(),
        "workers": workers,
        "runtime": runtime or f"default ({choose_runtime(run_dir)})",
        "reconnect": reconnect,
        "neighbour": neighbour,
        "neighbours": neighbours,
        "heavy_megapixels": heavy_megapixels,
        "page_megapixels": page_megapixels,
        "loadavg_before_end": os.getloadavg(),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("run_dir", type=Path, help="a run directory made by `digitlab train`")
    parser.add_argument("--clients", type=int, default=8, help="concurrent client threads")
    parser.add_argument("--requests", type=int, default=200, help="requests per client")
    parser.add_argument("--duration", type=float, default=60.0, help="stop each round after this many seconds")
    parser.add_argument("--repeat", type=int, default=1, help="rounds against the same server")
    parser.add_argument("--workers", type=int, default=1, help="server processes (digitlab serve --workers)")
    parser.add_argument(
        "--runtime", default=None, help="keras or onnx (digitlab serve --runtime); default: serve's default"
    )
    parser.add_argument(
        "--reconnect",
        action="store_true",
        help="a new connection per request instead of one keep-alive connection per client",
    )
    parser.add_argument("--breakdown", action="store_true", help="also time the stages in process and one client")
    parser.add_argument(
        "--endpoint",
        choices=list(TARGETS_MS),
        default="predict",
        help=f"/api/predict (a drawn digit), /api/read (a {NUMBER_LENGTH}-digit number of MNIST test digits) "
        "or /api/health",
    )
    parser.add_argument(
        "--neighbour",
        choices=list(NEIGHBOUR_TARGETS_MS),
        default=None,
        help=f"more clients: {HEAVY_MEGAPIXELS} MP /api/read/batch requests, or cheap bodies to refuse",
    )
    parser.add_argument("--neighbours", type=int, default=1, help="how many neighbour clients")
    parser.add_argument(
        "--heavy-megapixels", type=float, default=HEAVY_MEGAPIXELS, help="in each heavy neighbour's batch"
    )
    parser.add_argument("--page-megapixels", type=float, default=10.0, help="in each page of a heavy batch")
    parser.add_argument(
        "--form",
        choices=list(FORMS),
        default="multipart",
        help='the body: a multipart file, or JSON {"image": a data: URL} as the page sends its pads',
    )
    args = parser.parse_args()
    result = main(
        args.run_dir,
        args.clients,
        args.requests,
        args.duration,
        args.repeat,
        args.breakdown,
        args.workers,
        args.runtime,
        args.reconnect,
        args.endpoint,
        args.form,
        args.neighbour,
        args.neighbours,
        args.heavy_megapixels,
        args.page_megapixels,
    )
    connections = "a new connection per request" if result["reconnect"] else "keep-alive connections"
    images = (
        ""
        if result["endpoint"] == "health"
        else f"{NUMBER_LENGTH}-digit numbers, PNGs of {min(result['png_bytes'])}-{max(result['png_bytes'])} bytes"
        if result["endpoint"] == "read"
        else f"a {result['png_bytes'][0]} byte PNG (280x280)"
    )
    if result["neighbour"]:
        heavy = (
            f" ({result['heavy_megapixels']:g} MP batches of {result['page_megapixels']:g} MP pages)"
            if result["neighbour"] == "heavy"
            else ""
        )
        images += f"; beside {result['neighbours']} {result['neighbour']} neighbour(s){heavy}"
    print(
        f"digitlab serve --workers {result['workers']} --runtime {result['runtime']}; /api/{result['endpoint']}, "
        f"{images} as {result['form']}; {connections}; CPU {cpu_name()}, {result['cpus']} CPUs, "
        f"load average {', '.join(f'{x:.2f}' for x in result['loadavg_before_end'])} (1, 5, 15 min)"
    )
    target_p50, target_p99 = (
        NEIGHBOUR_TARGETS_MS[result["neighbour"]] if result["neighbour"] else TARGETS_MS[result["endpoint"]]
    )
    for i, r in enumerate(result["rounds"], 1):
        if result["endpoint"] == "read" and r["clients"] > 1 and not result["neighbour"]:  # a throughput target
            verdict = "meets" if r["throughput"] >= READ_THROUGHPUT else "misses"
            target = f"{verdict} >= {READ_THROUGHPUT:.0f} req/s"
        else:
            verdict = "meets" if r["p50"] <= target_p50 and r["p99"] <= target_p99 else "misses"
            target = f"{verdict} p50 <= {target_p50:.0f}" + (
                f", p99 <= {target_p99:.0f}" if target_p99 < math.inf else ""
            )
        print(
            f"round {i}: {r['clients']} clients, {r['requests']} requests in {r['seconds']:.1f} s = "
            f"{r['throughput']:.0f} req/s; latency ms p50 {r['p50']:.1f}  p95 {r['p95']:.1f}  "
            f"p99 {r['p99']:.1f}  mean {r['mean']:.1f}  max {r['max']:.1f}; errors {r['errors']}  "
            f"({target}); CPU ms per request: server {r['server_cpu_ms']:.1f}, clients {r['client_cpu_ms']:.1f}; "
            f"p50 if the CPUs are the limit {r['cpu_bound_p50']:.1f}"
        )
        for e in r["first_errors"]:
            print(f"  error: {e}")
        if result["neighbour"]:
            print(
                f"  neighbour: {r['neighbour_ok']} answered 200 (p50 {r['neighbour_ok_p50']:.0f} ms), "
                f"{r['neighbour_refusals']} refused {', '.join(r['neighbour_refused']) or ''}"
            )
    if result["stages"]:
        print("median ms per request, by stage:")
        for name, ms in result["stages"].items():
            print(f"  {name:<30} {ms:6.2f}")
