"""The REST API and the drawing page: FastAPI over one run directory's model.

    GET  /                    the drawing page (static files from the package)
    POST /api/predict         one image: multipart `file`, JSON {"image": base64 or data: URL}, or
                              JSON {"pixels": 28x28 numbers 0-255, already MNIST-like}
    POST /api/predict/batch   several: multipart `files`, JSON {"images": [...]} or {"pixels": [...]}
    POST /api/read            a whole number: the same inputs as /api/predict
    POST /api/read/batch      several numbers
    GET  /api/health          {"status": "ok", "kind": "digit" or "line", ...}
    GET  /api/model           the run's kind, config.json, metrics and calibration
    GET  /docs, /redoc        OpenAPI documentation: Swagger UI and ReDoc, served from this server (the
                              files of the fastapi-offline package), so that they work offline

An image goes through `digitlab.preprocess.preprocess`, the one preprocessing the CLI uses too, and
`digitlab.predict.classify`; a number through `digitlab.read`, which reads it as `digitlab read` does:
by segmentation with a single-digit run, with the line model with a line run (`--preset numbers`). A line
run reads whole lines only: /api/predict answers it with a 409 naming /api/read. The model is loaded once;
its calls are serialised by a lock (preprocessing runs in parallel in the thread pool). Bad input is a
4xx with {"detail": "<field>: <what was expected>"}; a body that has not all arrived within `timeout`
seconds is a 408. A client that goes away before its body has arrived is counted in `disconnects` and
logged in one line.

With `allowed_hosts`, a request whose Host header names another host is a 400 before it reaches the API
(Starlette's TrustedHostMiddleware): a server on loopback cannot be read by a page whose DNS name an
attacker rebinds to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import Headers
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from digitlab import runs
from digitlab.errors import DigitlabError, RunError
from digitlab.line_reading import is_line_model
from digitlab.lines import LINE_HEIGHT, LINE_WIDTH
from digitlab.predict import Predictor, classify, keras_runtime, load_predictor
from digitlab.preprocess import SIDE, preprocess
from digitlab.reading import read
from digitlab.serve.requests import DEFAULT_TIMEOUT, problem, read_images
from digitlab.serve.schemas import (
    ERRORS,
    PREDICT_ERRORS,
    RESULT_KEYS,
    BatchRequest,
    BatchResponse,
    Health,
    ModelReport,
    Prediction,
    PredictRequest,
    ReadBatchResponse,
    Reading,
    body_doc,
)


@dataclasses.dataclass
class Service:
    predictor: Predictor
    model: dict  # {"name", "architecture"}, returned with every prediction
    config: dict  # the run's config.json
    run_dir: Path
    kind: str = "digit"  # "digit": a single-digit run; "line": a line model's run, which reads whole lines
    threads: int | None = None  # threads per model call (intra-op); None: the runtime's default, one per core
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    pool: ThreadPoolExecutor = dataclasses.field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="digitlab")
    )
    started: float = dataclasses.field(default_factory=time.monotonic)
    internal_errors: int = 0
    disconnects: int = 0  # clients gone before their request had all arrived: theirs, not the server's

    @classmethod
    def load(cls, run_dir: Path, runtime: str = "keras", threads: int | None = None) -> Service:
        """A run's model, ready to serve. `threads`: the CPUs it may use (a worker of `digitlab serve
        --workers` gets its share): threads per model call, set before the model is loaded, and threads
        serving requests; None: a thread per core for both."""
        run_dir = Path(run_dir)
        if threads is not None and runtime == "keras":
            threads = keras_runtime.set_threads(threads)  # TensorFlow's are the process's, set before it starts
        predictor = load_predictor(run_dir, runtime=runtime, threads=threads)  # ONNX Runtime's are the session's
        if is_line_model(predictor):
            kind = "line"
        elif predictor.input_shape == (SIDE, SIDE):
            kind = "digit"
        else:
            raise RunError(
                f"{run_dir}: the model takes images of shape {predictor.input_shape}; the server gives a "
                f"single-digit model {SIDE}x{SIDE} digits and a line model {LINE_HEIGHT}x{LINE_WIDTH} lines"
            )
        config = runs.read_json(run_dir / runs.CONFIG)
        model = {"name": run_dir.resolve().name, "architecture": config.get("model", {}).get("architecture", "?")}
        service = cls(predictor=predictor, model=model, config=config, run_dir=run_dir, kind=kind, threads=threads)
        if threads is not None:  # a worker's share of the CPUs: as many request threads as it has cores
            service.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="digitlab")
        with service.lock:  # trace the graph now, not at the first request
            predictor.raw_proba(np.zeros((1, *predictor.input_shape), np.float32))
        return service

    def refuse_digits(self, path: str) -> None:
        """A 409 for /api/predict on a line run: its model reads whole lines, never one 28x28 digit."""
        if self.kind == "line":
            raise problem(
                409,
                f"{path}: the run {self.model['name']} holds a line model, which reads whole lines, not one "
                f"{SIDE}x{SIDE} digit; post the image to /api/read",
            )

    async def run(self, func, *args):
        """func(*args) in the service's threads: as many as the CPUs it has (all, or its share as a worker
        of several), since the work is CPU-bound and more threads only contend for the GIL."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, func, *args)

    def classify(self, digits: np.ndarray, rejected: list[str | bool | None]) -> list[dict]:
        with self.lock:  # one model call at a time: Keras models are not documented as thread-safe
            return classify(self.predictor, digits, rejected)

    def predict(self, inputs: list, fields: list[str]) -> list[dict]:
        """Image bytes or validated pixel grids -> one result each; a bad one gets {"error": ...} whose
        message starts with its field, e.g. "files[2]"."""
        out: list[dict] = [{} for _ in inputs]
        ok, digits, ink = [], [], []
        for i, (item, field) in enumerate(zip(inputs, fields)):
            if isinstance(item, Exception):  # found bad while reading the request
                out[i] = {"error": str(item)}
                continue
            if isinstance(item, np.ndarray):  # pixels: MNIST-like already, used as given
                digit, rejected = item, bool(item.max() > 0)  # a grid has no other test than its ink
            else:
                try:
                    pre = preprocess(item)
                except DigitlabError as e:
                    out[i] = {"error": f"{field}: {e}"}
                    continue
                digit, rejected = pre.digit, pre.reason  # no ink, or not a digit: no numbers
            ok.append(i)
            digits.append(digit)
            ink.append(rejected)
        if ok:
            for i, digit, result in zip(ok, digits, self.classify(np.stack(digits), ink)):
                out[i] = {
                    **{k: result[k] for k in RESULT_KEYS},
                    "model": self.model,
                    "preprocessed": np.rint(digit).astype(int).tolist(),
                }
        return out


LOG = logging.getLogger("digitlab.serve")

# The names a browser sends for a server on loopback; the Host header's port is not compared.
LOOPBACK_HOSTS = ["localhost", "127.0.0.1", "[::1]"]


class HostCheck:
    """Starlette's TrustedHostMiddleware, answering a refused Host header with the API's one-line JSON
    {"detail": ...} instead of its plain-text "Invalid host header"."""

    def __init__(self, app: ASGIApp, allowed_hosts: list[str]) -> None:
        self.app = app
        self.allowed_hosts = list(allowed_hosts)
        self.trusted = TrustedHostMiddleware(self._accepted, allowed_hosts=self.allowed_hosts, www_redirect=False)

    async def _accepted(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, scope["digitlab.send"])  # the real `send`, not `refuse` below

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan; websocket (none served) keeps the middleware's own answer
            await self.trusted({**scope, "digitlab.send": send}, receive, send)
            return
        host = Headers(scope=scope).get("host")
        refused = JSONResponse(
            {
                "detail": f"Host header: {host!r} is not a name this server answers to "
                f"({', '.join(self.allowed_hosts)}; `digitlab serve --allowed-hosts` adds names)"
            },
            status_code=400,
        )

        async def refuse(message: dict) -> None:  # only the middleware's refusal comes here
            if message["type"] == "http.response.start":
                await refused(scope, receive, send)

        await self.trusted({**scope, "digitlab.send": send}, receive, refuse)


def create_app(
    run_dir: Path,
    runtime: str = "keras",
    allowed_hosts: list[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    threads: int | None = None,
) -> FastAPI:
    """The web app over `run_dir`'s model, loaded now (a RunError if the run cannot be loaded): a
    single-digit run, or a line model's run (`digitlab train --preset numbers`), which serves /api/read.

    `allowed_hosts`: the Host header names (Starlette patterns: "a.example", "*.a.example", "*") a request
    must carry, any other being a 400; None checks nothing (`digitlab serve` passes LOOPBACK_HOSTS when
    it listens on loopback). `timeout`: seconds a request's body may take to arrive, else a 408.
    `threads`: as for Service.load."""
    service = Service.load(run_dir, runtime=runtime, threads=threads)
    static = resources.files(__package__) / "static"
    page = (static / "index.html").read_text(encoding="utf-8")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        service.pool.shutdown(wait=False)

    what = "numbers" if service.kind == "line" else "digits"
    summary = f"Handwritten {what} recognised by the run {service.model['name']} ({service.model['architecture']})"
    # /docs and /redoc are served below from local files: FastAPI's own pages load them from CDNs.
    app = FastAPI(title="digitlab", version="1", summary=summary, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.service = service
    app.state.timeout = timeout  # read by digitlab.serve.requests
    app.mount("/static", StaticFiles(packages=[(__package__, "static")]), name="static")
    app.mount("/docs-assets", StaticFiles(packages=[("fastapi_offline", "static")]), name="docs-assets")
    if allowed_hosts is not None:
        app.add_middleware(HostCheck, allowed_hosts=allowed_hosts)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        service.internal_errors += 1  # the exception is still logged by the server
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); the server goes on"}, status_code=500)

    @app.exception_handler(ClientDisconnect)
    async def client_disconnect(request: Request, exc: ClientDisconnect) -> Response:
        # Handled here, not by the catch-all above: no 500 counted, no traceback in the log.
        service.disconnects += 1
        client = f"{request.client.host}:{request.client.port}" if request.client else "a client"
        LOG.warning(
            "%s disconnected before its %s %s request had all arrived", client, request.method, request.url.path
        )
        return Response(status_code=400)  # nobody reads it: the connection is gone

    def docs_asset(request: Request, name: str) -> str:
        return f"{request.scope.get('root_path', '')}/docs-assets/{name}"

    @app.get("/docs", include_in_schema=False)
    def swagger_ui(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=request.scope.get("root_path", "") + app.openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=docs_asset(request, "swagger-ui-bundle.js"),
            swagger_css_url=docs_asset(request, "swagger-ui.css"),
            swagger_favicon_url=docs_asset(request, "favicon.png"),
            swagger_ui_parameters={"validatorUrl": None},  # no badge fetched from the validator's site
        )

    @app.get("/redoc", include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(
            openapi_url=request.scope.get("root_path", "") + app.openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=docs_asset(request, "redoc.standalone.js"),
            redoc_favicon_url=docs_asset(request, "favicon.png"),
            with_google_fonts=False,
        )

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.post(
        "/api/predict",
        response_model=Prediction,
        responses=PREDICT_ERRORS,
        openapi_extra=body_doc(PredictRequest, "file", many=False),
    )
    async def predict(request: Request) -> dict:
        """Classify one image: a multipart file `file`, JSON `image` (base64 or data: URL) or JSON `pixels`.
        A line run (whose model reads whole lines) answers 409: /api/read reads with it."""
        service.refuse_digits(request.url.path)
        inputs, fields, _ = await read_images(request, many=False)
        (result,) = await service.run(service.predict, inputs, fields)
        if "error" in result:
            raise problem(422, result["error"])
        # Already the documented shape: a plain JSONResponse skips re-validating 784 pixels per request.
        return JSONResponse(result)

    @app.post(
        "/api/predict/batch",
        response_model=BatchResponse,
        responses=PREDICT_ERRORS,
        openapi_extra=body_doc(BatchRequest, "files", many=True),
    )
    async def predict_batch(request: Request) -> dict:
        """Classify up to 256 images: multipart `files`, JSON `images` or JSON `pixels`. A bad image gets an
        entry with `error` and the others are still classified. A line run answers 409, as /api/predict."""
        service.refuse_digits(request.url.path)
        inputs, fields, names = await read_images(request, many=True)
        results = await service.run(service.predict, inputs, fields)
        return {"results": [{**r, "index": i, "name": n} for i, (r, n) in enumerate(zip(results, names))]}

    # `read` preprocesses in the pool's threads; only its one model call per image takes the lock.
    reader = dataclasses.replace(service.predictor, forward=_locked(service.lock, service.predictor.forward))

    @app.post(
        "/api/read",
        response_model=Reading,
        responses=ERRORS,
        openapi_extra=body_doc(PredictRequest, "file", many=False),
    )
    async def read_number(request: Request) -> dict:
        """Read a whole number (several digits, several lines): the same inputs as /api/predict. A single-digit
        run segments it; a line run reads each line with its line model."""
        inputs, fields, _ = await read_images(request, many=False)
        (result,) = await service.run(read_inputs, reader, service.model, inputs, fields)
        if "error" in result:
            raise problem(422, result["error"])
        return JSONResponse(result)

    @app.post(
        "/api/read/batch",
        response_model=ReadBatchResponse,
        responses=ERRORS,
        openapi_extra=body_doc(BatchRequest, "files", many=True),
    )
    async def read_batch(request: Request) -> dict:
        """Read up to 256 images of numbers: the same inputs as /api/predict/batch; a bad image gets an entry
        with `error` and the others are still read."""
        inputs, fields, names = await read_images(request, many=True)
        results = await service.run(read_inputs, reader, service.model, inputs, fields)
        return JSONResponse({"results": [{**r, "index": i, "name": n} for i, (r, n) in enumerate(zip(results, names))]})

    @app.get("/api/health", response_model=Health)
    def health() -> dict:
        return {
            "status": "ok",
            "kind": service.kind,
            "model": service.model,
            "threads": service.threads,
            "uptime_s": round(time.monotonic() - service.started, 3),
            "internal_errors": service.internal_errors,
            "disconnects": service.disconnects,
            "pid": os.getpid(),
        }

    @app.get("/api/model", response_model=ModelReport)
    def model_report() -> dict:
        """The run's configuration, its validation and test figures, and its calibration."""
        metrics = _read_optional(service.run_dir / runs.METRICS)  # read now: `evaluate` may have run since start-up
        calibration = _read_optional(service.run_dir / runs.CALIBRATION) or metrics.get("calibration")
        return {
            "name": service.model["name"],
            "kind": service.kind,
            "config": service.config,
            "validation": metrics.get("validation"),
            "test": metrics.get("test"),
            "calibration": calibration,
        }

    return app


def _locked(lock: threading.Lock, forward):
    def call(x):
        with lock:  # one model call at a time, as in Service.classify
            return forward(x)

    return call


def read_inputs(predictor: Predictor, model: dict, inputs: list, fields: list[str]) -> list[dict]:
    """Image bytes or pixel grids -> one Reading's JSON each, with each digit's 28x28 crop; a bad one gets
    {"error": ...} starting with its field."""
    out = []
    for item, field in zip(inputs, fields):
        if isinstance(item, Exception):  # found bad while reading the request
            out.append({"error": str(item)})
            continue
        try:
            reading = read(predictor, item)
        except DigitlabError as e:
            out.append({"error": f"{field}: {e}"})
            continue
        body = reading.to_dict()
        for digit, crop in zip(body["digits"], reading.crops):
            digit["preprocessed"] = crop.astype(int).tolist()
        out.append({**body, "size": list(reading.size), "model": model})
    return out


def _read_optional(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
