"""`digitlab serve --allow-adapt`: the page sends a person's samples (the Teach mode's digitlab-samples
file) to POST /api/adapt; the server adapts a copy of the run it serves (`digitlab.training.adapt`, the
one adaptation path), writes it as a new run directory beside it (`RUN-adapted-N`, never over anything),
and serves the new model from then on, without a restart. Each adaptation starts from the run the server
was started with, on every sample sent (the page sends all it keeps). Off by default; one adaptation at a time. The
samples file is read by `read_samples`, as `digitlab adapt` reads it from disk: the same one-line errors,
as a 422."""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI
from pydantic import BaseModel, Field

import digitlab  # digitlab.adapt: loaded (with TensorFlow) at the first adaptation, not when the server starts
from digitlab.errors import DataError, DigitlabError
from digitlab.serve.requests import problem
from digitlab.serve.schemas import ERRORS, Problem
from digitlab.serve.service import Service

SAMPLES_NAME = "digitlab-samples.json"  # what the page downloads, and what errors name


ADAPT_ERRORS = {
    **ERRORS,
    403: {"model": Problem, "description": "Adapting is off: the server was started without --allow-adapt"},
    409: {"model": Problem, "description": "Another adaptation is running, or the run cannot be adapted"},
}


class AdaptAllowed(BaseModel):
    allowed: bool = Field(description="Whether POST /api/adapt adapts the served model (--allow-adapt)")


class Adapted(BaseModel):
    run: str = Field(description="The new run directory's name, beside the run the server started with")
    samples: int = Field(description="Samples used")
    refused: list[dict] = Field(description="Samples preprocessing refused: file, digit, reason")
    validation_accuracy: float
    base_validation_accuracy: float | None
    seconds: float


@dataclass
class Adapting:
    """What POST /api/adapt adapts: the run the server started with (every adaptation starts from it, on
    all the samples sent), where its training data is (None: digitlab's cache) and the recipe (None: the
    chosen one; tests give a short one)."""

    base: Path
    data_dir: Path | None = None
    recipe: object | None = None  # a digitlab.training.adapt.Recipe
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def next_out(run_dir: Path) -> Path:
    """The first free `RUN-adapted-N` beside the run."""
    n = 1
    while (out := run_dir.parent / f"{run_dir.name}-adapted-{n}").exists():
        n += 1
    return out


def _adapt_and_load(app: FastAPI, body: bytes) -> dict:
    # In a thread: reading the samples, fine-tuning and loading the new run take seconds of CPU.
    adapting: Adapting = app.state.adapting
    service = app.state.service
    out = next_out(adapting.base)
    recipe = {"recipe": adapting.recipe} if adapting.recipe is not None else {}
    with tempfile.TemporaryDirectory(prefix="digitlab-adapt-") as folder:
        path = Path(folder) / SAMPLES_NAME
        path.write_bytes(body)
        try:
            metrics = digitlab.adapt(adapting.base, path, out, data_dir=adapting.data_dir, **recipe)
        except DigitlabError as e:  # the samples named as the page names its file, not by the temporary folder
            raise problem(422 if isinstance(e, DataError) else 409, str(e).replace(f"{folder}/", "")) from None
    app.state.service = Service.load(out, threads=service.threads)
    service.pool.shutdown(wait=False)  # requests already taken by the old model finish with it
    return {
        "run": out.name,
        "samples": metrics["adapt"]["samples"],
        "refused": metrics["adapt"]["refused"],
        "validation_accuracy": metrics["validation"]["accuracy"],
        "base_validation_accuracy": metrics["adapt"]["base_validation_accuracy"],
        "seconds": metrics["adapt"]["seconds"],
    }


async def adapt_served_model(app: FastAPI, body: bytes) -> dict:
    """Adapt the served run on `body` (a digitlab-samples file) and serve the result; a 409 while another
    adaptation runs."""
    adapting: Adapting = app.state.adapting
    if adapting.lock.locked():
        raise problem(409, "an adaptation is already running; try again when it is done")
    async with adapting.lock:
        return await asyncio.to_thread(_adapt_and_load, app, body)
