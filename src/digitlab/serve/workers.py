"""Running the app: one process, or several worker processes sharing one listening socket (uvicorn)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from digitlab import runs
from digitlab.errors import DigitlabError, RunError
from digitlab.predict import RUNTIMES
from digitlab.predict.onnx_runtime import load_session
from digitlab.serve.app import create_app


def run_app(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, access_log: bool = True) -> None:
    """Serve `app` with uvicorn until interrupted."""

    uvicorn.run(app, host=host, port=port, access_log=access_log, log_level="info")


RUN_ENV, RUNTIME_ENV = "DIGITLAB_SERVE_RUN", "DIGITLAB_SERVE_RUNTIME"


def app_from_env() -> FastAPI:
    """`create_app` in a uvicorn worker process; the run directory and runtime come from the environment.

    A run that cannot be loaded ends the worker with uvicorn's start-up failure code, which stops the
    supervisor instead of having it restart the worker forever."""

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
        load_session(run_dir)
    elif runtime == "keras":
        runs.require_model(run_dir)
    else:
        raise DigitlabError(f"--runtime: expected one of {', '.join(RUNTIMES)}, got {runtime!r}")
    runs.read_json(run_dir / runs.CONFIG)


def run_workers(
    run_dir: Path,
    runtime: str = "keras",
    workers: int = 2,
    host: str = "127.0.0.1",
    port: int = 8000,
    access_log: bool = True,
) -> None:
    """Serve with `workers` processes, each loading the model, sharing one listening socket.

    One process runs Python (HTTP, multipart, preprocessing) on one core at a time; with several
    processes every core serves requests. Each holds its own copy of the model. A RunError if the
    workers could not start."""

    os.environ[RUN_ENV], os.environ[RUNTIME_ENV] = str(Path(run_dir).resolve()), runtime
    config = uvicorn.Config(
        "digitlab.serve.workers:app_from_env",
        factory=True,
        workers=workers,
        host=host,
        port=port,
        access_log=access_log,
        log_level="info",
    )
    supervisor = Multiprocess(config, sockets=[config.bind_socket()])
    supervisor.run()
    if any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes):
        raise RunError(f"{run_dir}: the server's worker processes could not start (the reason is logged above)")
