"""The REST API and the drawing page.

app.py       the FastAPI app over one run's model: middleware, error handlers, the routers
routes.py    the routes, as APIRouters, each answer through its response model
service.py   the model the server holds and what it does with a request's images (the reading path)
schemas.py   request and response shapes (what /docs shows)
requests.py  reading a request's images, with a 4xx naming the field for bad input
workers.py   running it: one process or several sharing a socket
launch.py    `digitlab serve`: the checks that need no model, then the model, then uvicorn
static/      the drawing page: plain HTML, CSS and JavaScript
"""

from digitlab.serve.app import LOOPBACK_HOSTS, HostCheck, Service, create_app
from digitlab.serve.schemas import MAX_BATCH, MAX_BODY, BatchFailure, BatchPrediction, Prediction
from digitlab.serve.workers import (
    allowed_hosts_for,
    app_from_env,
    bind_socket,
    check_limits,
    check_run,
    is_loopback,
    run_app,
    run_workers,
)

__all__ = [
    "LOOPBACK_HOSTS",
    "MAX_BATCH",
    "MAX_BODY",
    "BatchFailure",
    "BatchPrediction",
    "HostCheck",
    "Prediction",
    "Service",
    "allowed_hosts_for",
    "app_from_env",
    "bind_socket",
    "check_limits",
    "check_run",
    "create_app",
    "is_loopback",
    "run_app",
    "run_workers",
]
