"""The REST API and the drawing page: FastAPI over one run directory's model.

    GET  /                    the drawing page (static files from the package)
    POST /api/predict         one image: multipart `file`, JSON {"image": base64 or data: URL}, or
                              JSON {"pixels": 28x28 numbers 0-255, already MNIST-like}
    POST /api/predict/batch   several: multipart `files`, JSON {"images": [...]} or {"pixels": [...]}
    GET  /api/health          {"status": "ok", ...}
    GET  /api/model           the run's config.json, metrics and calibration
    GET  /docs                OpenAPI documentation (FastAPI's own)

An image goes through `digitlab.preprocess.preprocess`, the one preprocessing the CLI uses too, and
`digitlab.predict.classify`. The model is loaded once; its calls are serialised by a lock (preprocessing
runs in parallel in the thread pool). Bad input is a 4xx with {"detail": "<field>: <what was expected>"}.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import json
import math
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, WithJsonSchema, model_validator
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from digitlab import runs
from digitlab.errors import DigitlabError, RunError
from digitlab.predict import RUNTIMES, Predictor, classify, load_predictor
from digitlab.preprocess import SIDE, preprocess

MAX_BODY = 10 * 1024 * 1024  # bytes in one request body
MAX_BATCH = 256  # images in one batch request
MAX_ERRORS_SHOWN = 5  # validation errors listed in one `detail`
MULTIPART, JSON = "multipart/form-data", "application/json"

# --- request and response shapes (these are what /docs shows) ---------------------------------------

Pixel = Annotated[float, Field(strict=True, ge=0, le=255, allow_inf_nan=False)]
Pixels = Annotated[
    list[Annotated[list[Pixel], Field(min_length=SIDE, max_length=SIDE)]],
    Field(min_length=SIDE, max_length=SIDE, description=f"{SIDE} rows of {SIDE} numbers 0-255, ink bright on black "
                                                        "and centred as in MNIST; used as given, not preprocessed"),
]
PIXELS = TypeAdapter(Pixels)


class PredictRequest(BaseModel):
    """One image: exactly one of `image` or `pixels`."""

    model_config = ConfigDict(extra="forbid")
    image: str | None = Field(None, description="An image file (PNG, JPEG, BMP, GIF, WebP, TIFF), base64 or a "
                                                "data: URL such as a canvas's toDataURL()")
    pixels: Pixels | None = None

    @model_validator(mode="after")
    def _one_input(self):
        if (self.image is None) == (self.pixels is None):
            raise ValueError("expected exactly one of `image` (base64 or data: URL) or `pixels` (28x28 numbers 0-255)")
        return self


class BatchRequest(BaseModel):
    """Several images: exactly one of `images` or `pixels`. A bad entry gets an error; the rest go on."""

    model_config = ConfigDict(extra="forbid")
    images: list[str] | None = Field(None, description="Image files, each base64 or a data: URL")
    # Checked one entry at a time, so that one bad grid does not fail the others.
    pixels: Annotated[list[Any] | None, WithJsonSchema({"type": "array", "items": PIXELS.json_schema()})] = Field(
        None, description=f"Images as {SIDE}x{SIDE} numbers 0-255, already MNIST-like"
    )

    @model_validator(mode="after")
    def _one_input(self):
        if (self.images is None) == (self.pixels is None):
            raise ValueError("expected exactly one of `images` (base64 or data: URLs) or `pixels` (28x28 grids)")
        return self


RESULT_KEYS = ("digit", "label", "confidence", "probabilities", "top3", "unsure", "reason")  # from classify


class ModelName(BaseModel):
    name: str = Field(description="The run directory's name")
    architecture: str = Field(description="mlp or cnn")


class Candidate(BaseModel):
    digit: int
    label: str
    probability: float


class Prediction(BaseModel):
    digit: int | None = Field(description="The predicted class index; null when unsure")
    label: str | None = Field(description="The predicted class name; null when unsure")
    confidence: float = Field(description="Calibrated probability of the most likely class")
    probabilities: list[float] = Field(description="Calibrated probability of every class, in class order")
    top3: list[Candidate]
    unsure: bool
    reason: str | None = Field(description="Why the prediction is unsure: no ink, or confidence below the threshold")
    model: ModelName
    preprocessed: list[list[int]] = Field(description=f"The {SIDE}x{SIDE} image (0-255) the model received")


class BatchPrediction(Prediction):
    index: int = Field(description="Position in the request")
    name: str | None = Field(None, description="The uploaded file's name (multipart only)")


class BatchFailure(BaseModel):
    index: int
    name: str | None = None
    error: str = Field(description="What was wrong with this image")


class BatchResponse(BaseModel):
    results: list[BatchPrediction | BatchFailure]


class Health(BaseModel):
    status: str
    model: ModelName
    uptime_s: float
    internal_errors: int = Field(description="Requests answered 500 since start-up; should stay 0")
    pid: int = Field(description="The server process that answered (one of several with --workers)")


class ModelReport(BaseModel):
    name: str
    config: dict = Field(description="The run's config.json: model, training and data configuration")
    validation: dict | None = Field(description="Validation figures of the best epoch")
    test: dict | None = Field(description="Test figures, when the run has been evaluated")
    calibration: dict | None = Field(description="Temperature and unsure threshold, when fitted")


class Problem(BaseModel):
    detail: str


ERRORS = {
    413: {"model": Problem, "description": f"Body over {MAX_BODY} bytes, or more than {MAX_BATCH} images"},
    415: {"model": Problem, "description": "Content-Type is neither multipart/form-data nor application/json"},
    422: {"model": Problem, "description": "Not an image, empty, truncated, too many pixels, or a wrong field"},
}


def _body_doc(json_model: type[BaseModel], field: str, many: bool) -> dict:
    """OpenAPI for a body that is either JSON or multipart (the endpoint parses it itself)."""
    file = {"type": "string", "format": "binary"}
    part = {"type": "array", "items": file} if many else file
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": json_model.model_json_schema(ref_template="#/components/schemas/{model}")},
        "multipart/form-data": {"schema": {"type": "object", "required": [field], "properties": {field: part}}},
    }}}


# --- the service: a predictor and a lock --------------------------------------------------------------


@dataclasses.dataclass
class Service:
    predictor: Predictor
    model: dict  # {"name", "architecture"}, returned with every prediction
    config: dict  # the run's config.json
    run_dir: Path
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    pool: ThreadPoolExecutor = dataclasses.field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="digitlab"))
    started: float = dataclasses.field(default_factory=time.monotonic)
    internal_errors: int = 0

    @classmethod
    def load(cls, run_dir: Path, runtime: str = "keras") -> "Service":
        run_dir = Path(run_dir)
        predictor = load_predictor(run_dir, runtime=runtime)
        if predictor.input_shape != (SIDE, SIDE):
            raise RunError(f"{run_dir}: the model takes images of shape {predictor.input_shape}; "
                           f"the server gives it {SIDE}x{SIDE} images")
        config = runs.read_json(run_dir / runs.CONFIG)
        model = {"name": run_dir.resolve().name, "architecture": config.get("model", {}).get("architecture", "?")}
        service = cls(predictor=predictor, model=model, config=config, run_dir=run_dir)
        service.classify(np.zeros((1, *predictor.input_shape), np.uint8), [False])  # trace the graph now
        return service

    async def run(self, func, *args):
        """func(*args) in the service's threads: as many as CPUs, since the work is CPU-bound and more
        threads only contend for the GIL."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, func, *args)

    def classify(self, digits: np.ndarray, has_ink: list[bool]) -> list[dict]:
        with self.lock:  # one model call at a time: Keras models are not documented as thread-safe
            return classify(self.predictor, digits, has_ink)

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
                digit, has_ink = item, bool(item.max() > 0)
            else:
                try:
                    pre = preprocess(item)
                except DigitlabError as e:
                    out[i] = {"error": f"{field}: {e}"}
                    continue
                digit, has_ink = pre.digit, pre.has_ink
            ok.append(i)
            digits.append(digit)
            ink.append(has_ink)
        if ok:
            for i, digit, result in zip(ok, digits, self.classify(np.stack(digits), ink)):
                out[i] = {**{k: result[k] for k in RESULT_KEYS}, "model": self.model,
                          "preprocessed": np.rint(digit).astype(int).tolist()}
        return out


# --- reading requests ----------------------------------------------------------------------------------


def _problem(status: int, detail: str) -> HTTPException:
    return HTTPException(status_code=status, detail=detail)


def _media_type(request: Request) -> str:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in (MULTIPART, JSON):
        raise _problem(415, f"Content-Type: expected multipart/form-data or application/json, got {media or 'none'!r}")
    return media


async def _read_body(request: Request) -> bytes:
    """The body, refused with 413 once it passes MAX_BODY bytes (declared or actually sent)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise _problem(413, f"body: {int(declared)} bytes, at most {MAX_BODY} allowed")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise _problem(413, f"body: more than {MAX_BODY} bytes, at most {MAX_BODY} allowed")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body:
        raise _problem(422, "body: empty; expected multipart/form-data or a JSON object")
    return body


async def _read_form(request: Request, body: bytes, field: str) -> list[tuple[str | None, bytes]]:
    """The (filename, bytes) of every part named `field`; any other part is an unknown field."""

    async def replay():
        yield body

    try:
        # Files are counted below (413 past MAX_BATCH); the body limit already bounds the parsing work.
        form = await MultiPartParser(request.headers, replay(), max_files=math.inf, max_fields=16).parse()
    except MultiPartException as e:
        raise _problem(422, f"body: malformed multipart/form-data ({e.message})") from None
    try:
        unknown = sorted(set(form.keys()) - {field})
        if unknown:
            raise _problem(422, f"{', '.join(unknown)}: unknown field; expected only {field!r}")
        parts = form.getlist(field)
        if not parts:
            raise _problem(422, f"{field}: missing; expected a multipart file field named {field!r}")
        if len(parts) > MAX_BATCH:
            raise _problem(413, f"{field}: {len(parts)} files, at most {MAX_BATCH} per request")
        files = []
        for part in parts:
            if not isinstance(part, UploadFile):
                raise _problem(422, f"{field}: expected a file (a part with a filename), got a text field")
            files.append((part.filename, await part.read()))
        return files
    finally:
        await form.close()


def _parse_json(model: type[BaseModel], body: bytes) -> BaseModel:
    try:
        return model.model_validate_json(body)
    except ValidationError as e:
        raise _problem(422, _explain(e)) from None


def _explain(e: ValidationError, prefix: str = "") -> str:
    """Pydantic's errors as one line: 'pixels[3][5]: Input should be ... 255, got 300; ...'."""
    parts = []
    for err in e.errors(include_url=False)[:MAX_ERRORS_SHOWN]:
        loc = prefix + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "json_invalid":
            msg = f"not valid JSON ({err.get('ctx', {}).get('error', msg)})"
        elif not isinstance(err.get("input"), (dict, list)) and err["type"] != "missing":
            msg += f", got {err['input']!r}"[:120]
        parts.append(f"{loc or 'body'}: {msg}")
    if e.error_count() > MAX_ERRORS_SHOWN:
        parts.append(f"and {e.error_count() - MAX_ERRORS_SHOWN} more")
    return "; ".join(parts)


def decode_image(text: str, field: str) -> bytes:
    """Base64, or a data: URL with base64 content, -> the image file's bytes."""
    if text.startswith("data:"):
        header, comma, text = text.partition(",")
        if not comma or not header.endswith(";base64"):
            raise DigitlabError(f"{field}: expected a base64 data: URL like data:image/png;base64,..., "
                                f"got {header[:40]!r}")
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise DigitlabError(f"{field}: not valid base64; expected an image file in base64 or a data: URL") from None
    if not data:
        raise DigitlabError(f"{field}: empty; expected an image file in base64 or a data: URL")
    return data


def _decode_all(texts: list[str]) -> list:
    """Each base64 image's bytes, or the error that stands in for it."""
    out = []
    for i, text in enumerate(texts):
        try:
            out.append(decode_image(text, f"images[{i}]"))
        except DigitlabError as e:
            out.append(e)
    return out


def _check_grids(grids: list) -> list:
    """Each 28x28 grid as float32, or the error that stands in for it."""
    out = []
    for i, grid in enumerate(grids):
        try:
            out.append(np.asarray(PIXELS.validate_python(grid, strict=True), np.float32))
        except ValidationError as e:
            out.append(DigitlabError(_explain(e, prefix=f"pixels[{i}]")))
    return out


async def read_images(request: Request, many: bool) -> tuple[list, list[str], list[str | None]]:
    """A request's images, checked: (inputs, the field of each, the file name of each). An input is image
    bytes, a float32 28x28 array, or (batch only) the DigitlabError that stands in for a bad image."""
    media = _media_type(request)
    body = await _read_body(request)
    if media == MULTIPART:
        files = await _read_form(request, body, "files" if many else "file")
        if not many and len(files) != 1:
            raise _problem(422, f"file: expected one file, got {len(files)}; /api/predict/batch takes several")
        fields = [f"files[{i}]" for i in range(len(files))] if many else ["file"]
        return [data for _, data in files], fields, [name for name, _ in files]
    if not many:
        req = _parse_json(PredictRequest, body)
        if req.pixels is not None:
            return [np.asarray(req.pixels, np.float32)], ["pixels"], [None]
        try:
            return [decode_image(req.image, "image")], ["image"], [None]
        except DigitlabError as e:
            raise _problem(422, str(e)) from None
    req = _parse_json(BatchRequest, body)
    field = "images" if req.images is not None else "pixels"
    items = getattr(req, field)
    if not items:
        raise _problem(422, f"{field}: empty list; expected at least one image")
    if len(items) > MAX_BATCH:
        raise _problem(413, f"{field}: {len(items)} images, at most {MAX_BATCH} per request")
    inputs = _decode_all(items) if field == "images" else _check_grids(items)
    return inputs, [f"{field}[{i}]" for i in range(len(items))], [None] * len(items)


# --- the app -------------------------------------------------------------------------------------------


def create_app(run_dir: Path, runtime: str = "keras") -> FastAPI:
    """The web app over `run_dir`'s model, loaded now (a RunError if the run cannot be loaded)."""
    service = Service.load(run_dir, runtime=runtime)
    static = resources.files("digitlab") / "static"
    page = (static / "index.html").read_text(encoding="utf-8")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        service.pool.shutdown(wait=False)

    summary = f"Handwritten digits recognised by the run {service.model['name']} ({service.model['architecture']})"
    app = FastAPI(title="digitlab", version="1", summary=summary, lifespan=lifespan)
    app.state.service = service
    app.mount("/static", StaticFiles(packages=[("digitlab", "static")]), name="static")

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        service.internal_errors += 1  # the exception is still logged by the server
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); the server goes on"}, status_code=500)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.post("/api/predict", response_model=Prediction, responses=ERRORS,
              openapi_extra=_body_doc(PredictRequest, "file", many=False))
    async def predict(request: Request) -> dict:
        """Classify one image: a multipart file `file`, JSON `image` (base64 or data: URL) or JSON `pixels`."""
        inputs, fields, _ = await read_images(request, many=False)
        (result,) = await service.run(service.predict, inputs, fields)
        if "error" in result:
            raise _problem(422, result["error"])
        # Already the documented shape: a plain JSONResponse skips re-validating 784 pixels per request.
        return JSONResponse(result)

    @app.post("/api/predict/batch", response_model=BatchResponse, responses=ERRORS,
              openapi_extra=_body_doc(BatchRequest, "files", many=True))
    async def predict_batch(request: Request) -> dict:
        """Classify up to 256 images: multipart `files`, JSON `images` or JSON `pixels`. A bad image gets an
        entry with `error` and the others are still classified."""
        inputs, fields, names = await read_images(request, many=True)
        results = await service.run(service.predict, inputs, fields)
        return {"results": [{**r, "index": i, "name": n} for i, (r, n) in enumerate(zip(results, names))]}

    @app.get("/api/health", response_model=Health)
    def health() -> dict:
        return {"status": "ok", "model": service.model, "uptime_s": round(time.monotonic() - service.started, 3),
                "internal_errors": service.internal_errors, "pid": os.getpid()}

    @app.get("/api/model", response_model=ModelReport)
    def model_report() -> dict:
        """The run's configuration, its validation and test figures, and its calibration."""
        metrics = _read_optional(service.run_dir / runs.METRICS)  # read now: `evaluate` may have run since start-up
        calibration = _read_optional(service.run_dir / "calibration.json") or metrics.get("calibration")
        return {"name": service.model["name"], "config": service.config, "validation": metrics.get("validation"),
                "test": metrics.get("test"), "calibration": calibration}

    return app


def _read_optional(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def run_app(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, access_log: bool = True) -> None:
    """Serve `app` with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, access_log=access_log, log_level="info")


RUN_ENV, RUNTIME_ENV = "DIGITLAB_SERVE_RUN", "DIGITLAB_SERVE_RUNTIME"


def app_from_env() -> FastAPI:
    """`create_app` in a uvicorn worker process; the run directory and runtime come from the environment.

    A run that cannot be loaded ends the worker with uvicorn's start-up failure code, which stops the
    supervisor instead of having it restart the worker forever."""
    from uvicorn.config import STARTUP_FAILURE

    try:
        return create_app(Path(os.environ[RUN_ENV]), os.environ.get(RUNTIME_ENV, "keras"))
    except DigitlabError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(STARTUP_FAILURE)


def check_run(run_dir: Path, runtime: str = "keras") -> None:
    """The cheap checks of a run a server needs, made before worker processes start: a RunError if its
    model file or config.json is missing. (A model that cannot be loaded stops the workers at start-up.)"""
    run_dir = Path(run_dir)
    if runtime == "onnx":
        from digitlab.onnx_runtime import load_session

        load_session(run_dir)
    elif runtime == "keras":
        runs.require_model(run_dir)
    else:
        raise DigitlabError(f"--runtime: expected one of {', '.join(RUNTIMES)}, got {runtime!r}")
    runs.read_json(run_dir / runs.CONFIG)


def run_workers(run_dir: Path, runtime: str = "keras", workers: int = 2, host: str = "127.0.0.1",
                port: int = 8000, access_log: bool = True) -> None:
    """Serve with `workers` processes, each loading the model, sharing one listening socket.

    One process runs Python (HTTP, multipart, preprocessing) on one core at a time; with several
    processes every core serves requests. Each holds its own copy of the model. A RunError if the
    workers could not start."""
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    os.environ[RUN_ENV], os.environ[RUNTIME_ENV] = str(Path(run_dir).resolve()), runtime
    config = uvicorn.Config("digitlab.serve:app_from_env", factory=True, workers=workers, host=host, port=port,
                            access_log=access_log, log_level="info")
    supervisor = Multiprocess(config, sockets=[config.bind_socket()])
    supervisor.run()
    if any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes):
        raise RunError(f"{run_dir}: the server's worker processes could not start (the reason is logged above)")
