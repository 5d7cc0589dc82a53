"""The server's routes, as FastAPI routers: `pages` (the drawing page and the offline API docs) and
`api` (/api/...). Each reads the app's `Service` (app.state.service, set by `create_app`); each JSON
answer goes through its declared response model."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from pydantic import TypeAdapter

from digitlab import runs, web
from digitlab.errors import DigitlabError
from digitlab.predict.count import DigitCount, parse_digits
from digitlab.preprocess import SIDE
from digitlab.serve.adapting import ADAPT_ERRORS, AdaptAllowed, Adapted, adapt_served_model
from digitlab.serve.requests import problem, read_images
from digitlab.serve.schemas import (
    DIGITS_DOC,
    ERRORS,
    MAX_MEGAPIXELS,
    PREDICT_ERRORS,
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
from digitlab.serve.service import Service, pixel_count


def get_service(request: Request) -> Service:
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]

pages = APIRouter(include_in_schema=False)
api = APIRouter(prefix="/api")


@pages.get("/", response_class=HTMLResponse)
def index(request: Request) -> HTMLResponse:
    return HTMLResponse(request.app.state.page)


# Reading in the browser (static/infer.js): the run's model.onnx, what the page needs to read with it, and
# ONNX Runtime Web from digitlab's cache (fetched and verified once). No model.onnx: 404, the page asks /api.
def _web_model(service: Service) -> Path:
    onnx = service.run_dir / runs.ONNX
    if not onnx.is_file():
        raise problem(404, f"{onnx}: none for the page to run; `digitlab export RUN --format onnx` makes it")
    return onnx


@pages.get("/model.json")
def web_model(service: ServiceDep) -> JSONResponse:
    _web_model(service)
    try:
        return JSONResponse(web.page_model(service.run_dir))
    except DigitlabError as e:
        raise problem(404, str(e)) from None


@pages.get("/model.onnx")
def web_onnx(service: ServiceDep) -> FileResponse:
    return FileResponse(_web_model(service), media_type="application/octet-stream")


@pages.get(f"/{runs.DIGIT_PART}/{runs.ONNX}")
def web_digit_part(service: ServiceDep) -> FileResponse:
    """A line run's digit model, for the page's combined reader."""
    _web_model(service)
    part = web.digit_part(service.run_dir) if service.kind == "line" else None
    if part is None:
        raise problem(404, f"{service.run_dir / runs.DIGIT_PART / runs.ONNX}: none for the page to run")
    return FileResponse(part / runs.ONNX, media_type="application/octet-stream")


@pages.get("/ort/{name}")
def web_runtime(name: str) -> FileResponse:
    """ONNX Runtime Web's files (web.RUNTIME_FILES), from the cache; fetched with npm the first time."""
    if name not in web.RUNTIME_FILES:
        raise problem(404, f"/ort/{name}: expected one of {', '.join(web.RUNTIME_FILES)}")
    try:
        path = web.runtime_file(name)
    except DigitlabError as e:
        raise problem(503, f"ONNX Runtime Web is not available: {e}") from None
    media = "application/wasm" if name.endswith(".wasm") else "text/javascript"
    return FileResponse(path, media_type=media)


def _docs_asset(request: Request, name: str) -> str:
    return f"{request.scope.get('root_path', '')}/docs-assets/{name}"


# /docs and /redoc load their files from this server (the fastapi-offline package): FastAPI's own pages
# load them from CDNs.
@pages.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=request.scope.get("root_path", "") + request.app.openapi_url,
        title=f"{request.app.title} - Swagger UI",
        swagger_js_url=_docs_asset(request, "swagger-ui-bundle.js"),
        swagger_css_url=_docs_asset(request, "swagger-ui.css"),
        swagger_favicon_url=_docs_asset(request, "favicon.png"),
        swagger_ui_parameters={"validatorUrl": None},  # no badge fetched from the validator's site
    )


@pages.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    page = get_redoc_html(
        openapi_url=request.scope.get("root_path", "") + request.app.openapi_url,
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=_docs_asset(request, "redoc.standalone.js"),
        redoc_favicon_url=_docs_asset(request, "favicon.png"),
        with_google_fonts=False,
    )
    # ReDoc's sidebar shows its maker's logo from a CDN (no option turns it off): images only from this
    # server, so the browser never asks; the logo's error handler then leaves it out.
    page.headers["Content-Security-Policy"] = "img-src 'self' data: blob:"
    return page


def _refuse_digits(service: Service, path: str) -> None:
    """A 409 for /api/predict on a line run: its model reads whole lines, never one 28x28 digit."""
    if service.kind == "line":
        raise problem(
            409,
            f"{path}: the run {service.model['name']} holds a line model, which reads whole lines, not one "
            f"{SIDE}x{SIDE} digit; post the image to /api/read",
        )


async def _answer(service: Service, work, inputs: list, fields: list[str]) -> list[dict]:
    """work's results for a request's images, after a 413 if they decode to more than MAX_MEGAPIXELS in
    all (counted from their headers before any is decoded, the loop serving others between two)."""
    pixels = []
    for item in inputs:
        pixels.append(pixel_count(item))
        await asyncio.sleep(0)
    if sum(pixels) > MAX_MEGAPIXELS * 1e6:
        field = fields[0].split("[")[0]
        raise problem(
            413,
            f"{field}: {sum(pixels) / 1e6:.1f} megapixels in {len(inputs)} images, "
            f"at most {MAX_MEGAPIXELS:g} megapixels per request; send them in several requests",
        )
    return await service.answer(work, inputs, fields, pixels)


async def _one(request: Request, service: Service, work) -> dict:
    """One image's answer from `work` (service.predict or service.read); its error is a 422."""
    inputs, fields, _ = await read_images(request, many=False)
    (result,) = await _answer(service, work, inputs, fields)
    if "error" in result:
        raise problem(422, result["error"])
    return result


async def _many(request: Request, service: Service, work) -> dict:
    """A batch's answer from `work`: each result with its position in the request and its file name."""
    inputs, fields, names = await read_images(request, many=True)
    results = await _answer(service, work, inputs, fields)
    return {"results": [{**r, "index": i, "name": n} for i, (r, n) in enumerate(zip(results, names))]}


@api.post(
    "/predict",
    response_model=Prediction,
    responses=PREDICT_ERRORS,
    openapi_extra=body_doc(PredictRequest, "file", many=False),
)
async def predict(request: Request, service: ServiceDep) -> dict:
    """Classify one image: a multipart file `file`, JSON `image` (base64 or data: URL) or JSON `pixels`.
    A line run (whose model reads whole lines) answers 409: /api/read reads with it."""
    _refuse_digits(service, request.url.path)
    return await _one(request, service, service.predict)


@api.post(
    "/predict/batch",
    response_model=BatchResponse,
    responses=PREDICT_ERRORS,
    openapi_extra=body_doc(BatchRequest, "files", many=True),
)
async def predict_batch(request: Request, service: ServiceDep) -> dict:
    """Classify up to 256 images: multipart `files`, JSON `images` or JSON `pixels`. A bad image gets an
    entry with `error` and the others are still classified. A line run answers 409, as /api/predict."""
    _refuse_digits(service, request.url.path)
    return await _many(request, service, service.predict)


# Checked by the route (parse_digits), not by FastAPI, so that a bad value is a 422 whose detail is one line.
DigitsParam = Annotated[str | None, Query(description=DIGITS_DOC, examples=["4", "5-9"])]


def _digits(value: str | None) -> DigitCount | None:
    try:
        return parse_digits(value, "digits")
    except DigitlabError as e:
        raise problem(422, str(e)) from None


@api.post(
    "/read",
    response_model=Reading,
    responses=ERRORS,
    openapi_extra=body_doc(PredictRequest, "file", many=False),
)
async def read_number(request: Request, service: ServiceDep, digits: DigitsParam = None) -> Response:
    """Read a whole number (several digits, several lines): the same inputs as /api/predict. A single-digit
    run segments it; a line run reads each line with its line model. `?digits=4`: the best reading with
    that many digits."""
    result = await _one(request, service, functools.partial(service.read, digits=_digits(digits)))
    return Response(READING.dump_json(READING.validate_python(result)), media_type="application/json")


# /api/read's answer is checked against its response model and written as JSON by pydantic in one step: the
# same JSON values as FastAPI's check, conversion and json.dumps, for a third of their CPU (0.15 against 0.47 ms
# for 6 digits with their 28x28 crops, about 7 % of a request).
READING = TypeAdapter(Reading)


@api.post(
    "/read/batch",
    response_model=ReadBatchResponse,
    responses=ERRORS,
    openapi_extra=body_doc(BatchRequest, "files", many=True),
)
async def read_batch(request: Request, service: ServiceDep, digits: DigitsParam = None) -> dict:
    """Read up to 256 images of numbers: the same inputs as /api/predict/batch; a bad image gets an entry
    with `error` and the others are still read. `?digits=4`: each number's count of digits."""
    return await _many(request, service, functools.partial(service.read, digits=_digits(digits)))


@api.get("/adapt", response_model=AdaptAllowed)
def adapt_allowed(request: Request) -> dict:
    """Whether this server adapts its model on samples sent to it (`digitlab serve --allow-adapt`)."""
    return {"allowed": request.app.state.adapting is not None}


@api.post("/adapt", response_model=Adapted, responses=ADAPT_ERRORS)
async def adapt_model(request: Request) -> dict:
    """Adapt a copy of the served run on a person's samples (the page's digitlab-samples file, as JSON) and
    serve it from then on. Only with `digitlab serve --allow-adapt` (else 403); JSON only (415), so that
    another site's page cannot send it without the browser asking first; 422 for a bad samples file."""
    if request.app.state.adapting is None:
        raise problem(403, "adapting is off: start the server with digitlab serve --allow-adapt")
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise problem(415, "expected the samples file as application/json")
    return await adapt_served_model(request.app, await request.body())


@api.get("/health", response_model=Health)
def health(service: ServiceDep) -> dict:
    return service.health()


@api.get("/model", response_model=ModelReport)
def model_report(service: ServiceDep) -> dict:
    """The run's configuration, its validation and test figures, and its calibration."""
    return service.report()
