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

The routes are in routes.py, the model they ask in service.py: every image goes through
`digitlab.predict.reading.read_inputs`, the reading path `digitlab predict`, `digitlab read` and batch use
(a number by segmentation with a single-digit run, with the line model with a line run, `--preset
numbers`). A line run reads whole lines only: /api/predict answers it with a 409 naming /api/read. The
model is loaded once; its calls are serialised by a lock (preprocessing runs in parallel in the service's
threads). Bad input is a 4xx with {"detail": "<field>: <what was expected>"}; a body that has not all arrived within `timeout`
seconds is a 408. A client that goes away before its body has arrived is counted in `disconnects` and
logged in one line.

Every request passes `RequestGuard` first: more than one Host header is a 400, and an answer given before
the request's body has all arrived (a 413, a 415, a refusal from the headers) waits until the rest is read
and dropped, up to DRAIN_LIMIT bytes: a client still sending gets its answer, not a reset.

With `allowed_hosts`, a request whose Host header names another host is a 400 before it reaches the API
(Starlette's TrustedHostMiddleware): a server on loopback cannot be read by a page whose DNS name an
attacker rebinds to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import Headers
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from digitlab.config import SERVE_TIMEOUT
from digitlab.serve import routes
from digitlab.serve.adapting import Adapting
from digitlab.serve.schemas import MAX_BODY
from digitlab.serve.service import Service

__all__ = ["DRAIN_LIMIT", "LOOPBACK_HOSTS", "HostCheck", "RequestGuard", "Service", "create_app", "drain"]


LOG = logging.getLogger("digitlab.serve")

# The names a browser sends for a server on loopback; the Host header's port is not compared.
LOOPBACK_HOSTS = ["localhost", "127.0.0.1", "[::1]"]


DRAIN_LIMIT = 2 * MAX_BODY  # bytes of a request read and dropped so that a refused client hears its answer


async def drain(receive: Receive, limit: int, timeout: float) -> bool:
    """Read and drop the rest of a request's body: whether it all came within `limit` bytes and `timeout`
    seconds (else the connection is to be closed)."""
    size = 0
    try:
        async with asyncio.timeout(timeout):
            while size <= limit:
                message = await receive()
                if message["type"] != "http.request":  # the client is gone
                    return False
                size += len(message.get("body", b""))
                if not message.get("more_body", False):
                    return True
    except TimeoutError:
        pass
    return False


class RequestGuard:
    """The middleware every request passes first. More than one Host header is a 400 (which one the Host
    check, a proxy or a log would read is anyone's guess). An answer that starts before the request's body
    has all arrived first reads and drops the rest (`drain`, within DRAIN_LIMIT bytes and `timeout`
    seconds), so that a client still sending gets its answer instead of a reset; an answer that closes
    the connection itself (a 408) is sent at once."""

    def __init__(self, app: ASGIApp, timeout: float) -> None:
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        arrived, size = False, 0

        async def receiving() -> dict:
            nonlocal arrived, size
            message = await receive()
            size += len(message.get("body", b""))
            arrived = arrived or message["type"] != "http.request" or not message.get("more_body", False)
            return message

        async def sending(message: dict) -> None:
            nonlocal arrived
            if message["type"] == "http.response.start" and not arrived:
                headers = Headers(raw=message.get("headers", []))
                if "close" not in headers.get("connection", "").lower():
                    arrived = True
                    if not await drain(receive, DRAIN_LIMIT - size, self.timeout):
                        message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        hosts = [value for name, value in scope["headers"] if name == b"host"]
        if len(hosts) > 1:
            given = ", ".join(repr(h.decode("latin-1")) for h in hosts)
            refused = JSONResponse({"detail": f"Host header: {len(hosts)} given ({given}), expected one"}, 400)
            await refused(scope, receiving, sending)
            return
        await self.app(scope, receiving, sending)


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
    runtime: str | None = None,
    allowed_hosts: list[str] | None = None,
    timeout: float = SERVE_TIMEOUT,
    threads: int | None = None,
    adapting: Adapting | None = None,
) -> FastAPI:
    """The web app over `run_dir`'s model, loaded now (a RunError if the run cannot be loaded): a
    single-digit run, or a line model's run (`digitlab train --preset numbers`), which serves /api/read.

    `allowed_hosts`: the Host header names (Starlette patterns: "a.example", "*.a.example", "*") a request
    must carry, any other being a 400; None checks nothing (`digitlab serve` passes LOOPBACK_HOSTS when
    it listens on loopback). `timeout`: seconds a request's body may take to arrive, else a 408.
    `runtime`, `threads`: as for Service.load. `adapting`: POST /api/adapt's settings (`--allow-adapt`); None: off."""
    service = Service.load(run_dir, runtime=runtime, threads=threads)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        service.pool.shutdown(wait=False)

    what = "numbers" if service.kind == "line" else "digits"
    summary = f"Handwritten {what} recognised by the run {service.model['name']} ({service.model['architecture']})"
    # /docs and /redoc are served by routes.pages from local files: FastAPI's own pages load them from CDNs.
    app = FastAPI(title="digitlab", version="1", summary=summary, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.service = service
    app.state.adapting = adapting
    app.state.timeout = timeout  # read by digitlab.serve.requests
    app.state.page = (resources.files(__package__) / "static" / "index.html").read_text(encoding="utf-8")
    app.mount("/static", StaticFiles(packages=[(__package__, "static")]), name="static")
    app.mount("/docs-assets", StaticFiles(packages=[("fastapi_offline", "static")]), name="docs-assets")
    if allowed_hosts is not None:
        app.add_middleware(HostCheck, allowed_hosts=allowed_hosts)
    app.add_middleware(RequestGuard, timeout=timeout)  # added last: the outermost, before the Host check
    app.add_exception_handler(Exception, internal_error)
    app.add_exception_handler(ClientDisconnect, client_disconnect)
    app.include_router(routes.pages)
    app.include_router(routes.api)
    return app


async def internal_error(request: Request, exc: Exception) -> JSONResponse:
    request.app.state.service.internal_errors += 1  # the exception is still logged by the server
    return JSONResponse({"detail": f"internal error ({type(exc).__name__}); the server goes on"}, status_code=500)


async def client_disconnect(request: Request, exc: ClientDisconnect) -> Response:
    """A client gone before its body had all arrived: counted and logged in one line, no 500 and no
    traceback (not the catch-all above)."""
    request.app.state.service.disconnects += 1
    client = f"{request.client.host}:{request.client.port}" if request.client else "a client"
    LOG.warning("%s disconnected before its %s %s request had all arrived", client, request.method, request.url.path)
    return Response(status_code=400)  # nobody reads it: the connection is gone
