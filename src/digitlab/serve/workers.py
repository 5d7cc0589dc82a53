"""Running the app: one process, or several worker processes sharing one listening socket (uvicorn).

A client gets `timeout` seconds to send a request's headers (from connecting, or from the last answer on a
kept-alive connection), then is disconnected; the body has as long again (`digitlab.serve.requests`, a 408).
Past `limit_concurrency` open connections in one process, a request's body is read and dropped, then it is
answered 503 with Retry-After and a JSON detail, and its connection closed."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import pickle
import socket
import sys
import time
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from uvicorn.config import STARTUP_FAILURE
from uvicorn.protocols.http.auto import AutoHTTPProtocol
from uvicorn.supervisors import Multiprocess, multiprocess

from digitlab import runs
from digitlab.config import RUNTIMES, SERVE_LIMIT_CONCURRENCY, SERVE_TIMEOUT
from digitlab.errors import DigitlabError, RunError
from digitlab.predict import choose_runtime, share_threads
from digitlab.predict.onnx_runtime import load_session
from digitlab.serve.app import DRAIN_LIMIT, LOOPBACK_HOSTS, create_app, drain

LOG = logging.getLogger("uvicorn.error")  # uvicorn's own log, which it sets up in every worker process


RETRY_AFTER = 1  # s a client refused for overload is told to wait
# s a worker process has to answer its supervisor's health check before it is killed and started again
# (uvicorn's default is 5): on a CPU shared with other work a worker loading its model, or reading while
# others take the cores, can miss 5 s, and its restart (imports, the model) costs a core for half a minute.
WORKER_HEALTHCHECK = 60
HEALTHCHECK_SLICE = 0.25  # s between looks at whether a worker that has not answered is still running


class HeaderDeadline(AutoHTTPProtocol):
    """uvicorn's HTTP protocol (httptools or h11), closing a connection whose request headers have not all
    arrived `timeout_keep_alive` seconds after it opened or after its last answer. uvicorn's own keep-alive
    timer only runs while nothing arrives, so a client sending half the headers would hold it for ever.

    It also answers past the connection limit itself: uvicorn's own answer is a plain-text 503 that closes
    the connection at once, a reset for a client still sending its body."""

    _header_deadline: asyncio.TimerHandle | None = None

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.connection_limit, self.limit_concurrency = self.limit_concurrency, None  # uvicorn's check off
        self.app, self._served_app = self._admit, self.app

    async def _admit(self, scope, receive, send) -> None:
        """The app, or past the limit (uvicorn's rule: this connection counted, this request not) a 503
        once the body has been read and dropped."""
        limit = self.connection_limit
        if limit is None or (len(self.connections) < limit and len(self.tasks) <= limit):
            await self._served_app(scope, receive, send)
            return
        LOG.warning("Exceeded concurrency limit: %d connections open, at most %d", len(self.connections), limit)
        await drain(receive, DRAIN_LIMIT, self.timeout_keep_alive)
        busy = JSONResponse(
            {
                "detail": f"connections: {len(self.connections)} open, at most {limit} "
                f"(--limit-concurrency); retry after {RETRY_AFTER} s"
            },
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER), "Connection": "close"},
        )
        await busy(scope, receive, send)

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_deadline()

    def connection_lost(self, exc) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
        super().connection_lost(exc)

    def _arm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
        self._header_deadline = self.loop.call_later(self.timeout_keep_alive, self._header_deadline_passed)

    def _header_deadline_passed(self) -> None:
        awaiting_headers = self.cycle is None or self.cycle.response_complete  # no request under way
        if awaiting_headers and not self.transport.is_closing():
            self.transport.close()


def check_limits(timeout: float, limit_concurrency: int) -> None:
    """A DigitlabError for a deadline or a connection limit out of range."""
    if not timeout > 0:
        raise DigitlabError(f"--timeout: expected seconds greater than 0, got {timeout:g}")
    if limit_concurrency < 1:
        raise DigitlabError(f"--limit-concurrency: expected at least 1 connection, got {limit_concurrency}")


def server_config(app, timeout: float, limit_concurrency: int, **kwargs) -> uvicorn.Config:
    """uvicorn's configuration with the header deadline and the connection limit."""
    check_limits(timeout, limit_concurrency)
    return uvicorn.Config(
        app,
        http=HeaderDeadline,
        timeout_keep_alive=timeout,
        limit_concurrency=limit_concurrency,
        log_level="info",
        timeout_worker_healthcheck=WORKER_HEALTHCHECK,
        **kwargs,
    )


def is_loopback(host: str) -> bool:
    """Whether `host` (an address to listen on) is only reachable from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def allowed_hosts_for(host: str, extra: list[str] | tuple[str, ...] = ()) -> list[str] | None:
    """The Host header names a server listening on `host` accepts: the loopback names when it listens on
    loopback, with `extra` (--allowed-hosts) added; None (any) for another address without `extra`.
    A DigitlabError for a name the check could never match."""
    extra = list(extra)
    for name in extra:
        if name.startswith("[") and name.endswith("]") and is_ipv6(name[1:-1]):
            continue  # an IPv6 literal, as a Host header carries it
        if not name or ":" in name:
            raise DigitlabError(
                f"--allowed-hosts: expected host names without a port (an IPv6 address in brackets), got {name!r}"
            )
        if "*" in name and name != "*" and not (name.startswith("*.") and "*" not in name[1:]):
            raise DigitlabError(
                f"--allowed-hosts: a wildcard must be the whole name (*) or lead it (*.example.com), got {name!r}"
            )
    if "*" in extra:
        return ["*"]
    if not extra and not is_loopback(host):
        return None
    return [*LOOPBACK_HOSTS, *extra]


def bind_socket(host: str, port: int) -> socket.socket:
    """A socket listening on host:port, made before the (slow) model load so that a bad port or one in use
    is a one-line DigitlabError at once. uvicorn then serves on it."""
    if not 1 <= port <= 65535:
        raise DigitlabError(f"--port: expected a TCP port from 1 to 65535, got {port}")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    where = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)  # uvicorn's default backlog
    except OSError as e:
        sock.close()
        reason = "the port is in use" if e.errno == errno.EADDRINUSE else (e.strerror or str(e))
        raise DigitlabError(f"cannot listen on {where}: {reason}") from None
    sock.set_inheritable(True)  # as uvicorn's own bind_socket: worker processes share it
    return sock


def run_app(
    app: FastAPI,
    sock: socket.socket,
    host: str = "127.0.0.1",
    port: int = 8000,
    access_log: bool = True,
    timeout: float = SERVE_TIMEOUT,
    limit_concurrency: int = SERVE_LIMIT_CONCURRENCY,
) -> None:
    """Serve `app` with uvicorn on the listening socket `sock` (from bind_socket) until interrupted;
    `timeout` (s) is the header deadline (the app's own `timeout` bounds the body)."""

    config = server_config(app, timeout, limit_concurrency, host=host, port=port, access_log=access_log)
    uvicorn.Server(config).run(sockets=[sock])


RUN_ENV, RUNTIME_ENV = "DIGITLAB_SERVE_RUN", "DIGITLAB_SERVE_RUNTIME"
HOSTS_ENV = "DIGITLAB_SERVE_ALLOWED_HOSTS"  # comma-separated; unset: no Host check
TIMEOUT_ENV = "DIGITLAB_SERVE_TIMEOUT"  # seconds; unset: SERVE_TIMEOUT
THREADS_ENV = "DIGITLAB_SERVE_THREADS"  # threads per model call in each worker; unset: the runtime's default


class Worker(multiprocess.Process):
    """uvicorn's worker process, whose health check ends once the process has exited: uvicorn waits for an
    answer for the whole WORKER_HEALTHCHECK, so a worker that could not load the model (and so ended with
    uvicorn's start-up failure code) stopped the server only a minute later."""

    def _healthcheck(self, timeout: float) -> bool | None:
        deadline = time.monotonic() + timeout
        try:
            self.parent_conn.send(b"ping")
            while not self.parent_conn.poll(max(0.0, min(HEALTHCHECK_SLICE, deadline - time.monotonic()))):
                if not self.process.is_alive() or time.monotonic() >= deadline:
                    return None
            return self.parent_conn.recv()
        except (OSError, EOFError, pickle.UnpicklingError):
            return None


def app_from_env() -> FastAPI:
    """`create_app` in a uvicorn worker process; the run directory and runtime come from the environment.

    A run that cannot be loaded ends the worker with uvicorn's start-up failure code, which stops the
    supervisor instead of having it restart the worker forever."""

    try:
        hosts = os.environ.get(HOSTS_ENV)
        allowed_hosts = hosts.split(",") if hosts is not None else None
        kwargs = {"timeout": float(os.environ[TIMEOUT_ENV])} if TIMEOUT_ENV in os.environ else {}
        if THREADS_ENV in os.environ:
            kwargs["threads"] = int(os.environ[THREADS_ENV])
        return create_app(
            Path(os.environ[RUN_ENV]), os.environ.get(RUNTIME_ENV, "keras"), allowed_hosts=allowed_hosts, **kwargs
        )
    except DigitlabError as e:
        LOG.error("%s", e)
        sys.exit(STARTUP_FAILURE)


def check_run(run_dir: Path, runtime: str | None = None) -> None:
    """The cheap checks of a run a server needs, made before worker processes start: a RunError if its
    model file is missing, or config.json or calibration.json is not what `load_predictor` reads
    (runs.check_run, the same check). (A model that cannot be loaded, or whose output does not fit the class
    names, stops the workers at start-up.)"""
    run_dir = Path(run_dir)
    runtime = choose_runtime(run_dir, runtime)
    if runtime == "onnx":
        load_session(run_dir)
    elif runtime == "keras":
        runs.require_model(run_dir)
    else:
        raise DigitlabError(f"--runtime: expected one of {', '.join(RUNTIMES)}, got {runtime!r}")
    runs.check_run(run_dir)


def run_workers(
    run_dir: Path,
    runtime: str | None = None,
    workers: int = 2,
    host: str = "127.0.0.1",
    port: int = 8000,
    access_log: bool = True,
    sock: socket.socket | None = None,
    allowed_hosts: list[str] | None = None,
    timeout: float = SERVE_TIMEOUT,
    limit_concurrency: int = SERVE_LIMIT_CONCURRENCY,
) -> None:
    """Serve with `workers` processes, each loading the model, sharing one listening socket: `sock`, or
    one bound here (bind_socket) before anything is loaded. `allowed_hosts` as for create_app; `timeout`
    and `limit_concurrency` as for run_app, in each process.

    One process runs Python (HTTP, multipart, preprocessing) on one core at a time; with several
    processes every core serves requests. Each holds its own copy of the model, whose calls use the
    worker's share of the CPUs (digitlab.predict.share_threads). A RunError if the workers could not start."""

    if sock is None:
        sock = bind_socket(host, port)
    runtime = choose_runtime(run_dir, runtime)  # once, for every worker
    os.environ[RUN_ENV], os.environ[RUNTIME_ENV] = str(Path(run_dir).resolve()), runtime
    if allowed_hosts is None:
        os.environ.pop(HOSTS_ENV, None)
    else:
        os.environ[HOSTS_ENV] = ",".join(allowed_hosts)
    os.environ[TIMEOUT_ENV] = str(timeout)
    os.environ[THREADS_ENV] = str(share_threads(workers))
    config = server_config(
        "digitlab.serve.workers:app_from_env",
        timeout,
        limit_concurrency,
        factory=True,
        workers=workers,
        host=host,
        port=port,
        access_log=access_log,
    )
    supervisor = Multiprocess(config, sockets=[sock])
    uvicorns, multiprocess.Process = multiprocess.Process, Worker  # the workers the supervisor starts and restarts
    try:
        supervisor.run()
    finally:
        multiprocess.Process = uvicorns
    if any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes):
        raise RunError(f"{run_dir}: the server's worker processes could not start (the reason is logged above)")
