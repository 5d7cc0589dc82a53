"""Starting a server for `digitlab serve`: every check that needs no model first, then the model, then uvicorn.

`open_server` checks the limits and host names, binds the listening socket and checks the run; a bad
option, a busy port or a missing run fail there, in one line, before TensorFlow or the model load.
`Server.serve` then loads the model (one process) or starts the worker processes, and serves until
interrupted.

The server's parts are called through the `digitlab.serve` package, the names it exports, so that a test
can stand in for one of them (uvicorn's loop, the model load)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI

from digitlab import serve as server
from digitlab.errors import DigitlabError
from digitlab.serve.adapting import Adapting


@dataclass
class Server:
    """A checked run and a bound socket, ready to serve. Close it if `serve` is not called."""

    run_dir: Path
    runtime: str
    sock: socket.socket
    host: str
    port: int
    workers: int
    allowed_hosts: list[str] | None  # Host header names accepted; None: any
    timeout: float  # s for a request's headers, and as long again for its body
    limit_concurrency: int  # open connections per process
    access_log: bool
    allow_adapt: bool = False  # POST /api/adapt adapts the served run (serve.adapting)

    @property
    def url(self) -> str:
        host = f"[{self.host.strip('[]')}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def serve(self, on_ready: Callable[[], None] | None = None) -> None:
        """Load the model (or start the workers, each loading its own), call `on_ready` once it is loaded
        in this process, serve until interrupted, and close the socket."""
        try:
            app = self._load() if self.workers == 1 else None
            if on_ready is not None:
                on_ready()
            if app is not None:
                server.run_app(
                    app,
                    sock=self.sock,
                    host=self.host,
                    port=self.port,
                    access_log=self.access_log,
                    timeout=self.timeout,
                    limit_concurrency=self.limit_concurrency,
                )
            else:
                server.run_workers(
                    self.run_dir,
                    self.runtime,
                    self.workers,
                    host=self.host,
                    port=self.port,
                    access_log=self.access_log,
                    sock=self.sock,
                    allowed_hosts=self.allowed_hosts,
                    timeout=self.timeout,
                    limit_concurrency=self.limit_concurrency,
                )
        finally:
            self.close()

    def close(self) -> None:
        self.sock.close()

    def _load(self) -> FastAPI:
        return server.create_app(
            self.run_dir,
            runtime=self.runtime,
            allowed_hosts=self.allowed_hosts,
            timeout=self.timeout,
            adapting=Adapting(base=self.run_dir) if self.allow_adapt else None,
        )


def open_server(
    run_dir: Path,
    *,
    host: str,
    port: int,
    runtime: str,
    workers: int,
    allowed_hosts: list[str],
    timeout: float,
    limit_concurrency: int,
    access_log: bool,
    allow_adapt: bool = False,
) -> Server:
    """Check everything that needs no model and bind host:port: a DigitlabError for a limit out of range,
    a host name the Host check could never match, a bad or busy port, or a run without its model.
    `allowed_hosts`: names accepted besides the loopback ones (--allowed-hosts)."""
    if workers < 1:
        raise DigitlabError(f"--workers: expected 1 or more processes, got {workers}")
    server.check_limits(timeout, limit_concurrency)
    hosts = server.allowed_hosts_for(host, allowed_hosts)
    if allow_adapt:
        check_allow_adapt(host, hosts, workers, runtime)
    sock = server.bind_socket(host, port)
    try:
        server.check_run(Path(run_dir), runtime)
    except BaseException:
        sock.close()
        raise
    return Server(
        run_dir=Path(run_dir),
        runtime=runtime,
        sock=sock,
        host=host,
        port=port,
        workers=workers,
        allowed_hosts=hosts,
        timeout=timeout,
        limit_concurrency=limit_concurrency,
        access_log=access_log,
        allow_adapt=allow_adapt,
    )


def check_allow_adapt(host: str, hosts: list[str] | None, workers: int, runtime: str) -> None:
    """--allow-adapt: one process (the one whose model it replaces), the Keras runtime (an adapted run has
    no model.onnx), and a Host check (loopback, or the names --allowed-hosts gives)."""
    if workers != 1:
        raise DigitlabError(f"--allow-adapt: needs --workers 1 (one process holds the model it adapts), got {workers}")
    if runtime != "keras":
        raise DigitlabError(f"--allow-adapt: needs --runtime keras (an adapted run has no model.onnx), got {runtime}")
    if hosts is None:
        raise DigitlabError(
            f"--allow-adapt: on {host} only with --allowed-hosts naming the hosts that may ask (loopback by default)"
        )
