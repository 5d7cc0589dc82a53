"""The model a server holds, and what it does with a request's images: `Service`.

The run is loaded once. Its model calls take a lock, one at a time (Keras models are not documented as
thread-safe); preprocessing and segmentation run in parallel in the service's threads. Every image goes
through `digitlab.predict.reading.read_inputs`, the reading path the CLI and batch use: a bad image gets
its one-line error and the others are still read.

A request's images are read in chunks of at most CHUNK_MEGAPIXELS (or CHUNK_IMAGES), each request
having at most as many chunks queued as the service has threads: the threads take chunks first come,
first served, so a small request waits for a chunk or two of a heavy one, not for all of it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from digitlab import runs
from digitlab.predict import Predictor, classify, keras_runtime, load_predictor
from digitlab.predict.reading import DIGIT, choose_method, kind, read_inputs
from digitlab.predict.results import Outcome, Prediction, Reading
from digitlab.preprocess.image import FORMATS, MAX_PIXELS

CHUNK_MEGAPIXELS = 4  # decoded pixels read in one go in one thread: a 40 MP image is a chunk of its own
CHUNK_IMAGES = 64  # images (28x28 grids, small files) read in one go: one model call


@dataclasses.dataclass
class Service:
    predictor: Predictor  # the run's, as loaded; `reader` is it with its model calls taking `lock`
    model: dict  # {"name", "architecture"}, returned with every prediction
    config: dict  # the run's config.json
    run_dir: Path
    kind: str = "digit"  # "digit": a single-digit run; "line": a line model's run, which reads whole lines
    method: str = "segment"  # how /api/read reads a number: "segment" (a digit run) or "line" (a line run)
    threads: int | None = None  # threads per model call (intra-op); None: the runtime's default, one per core
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    pool: ThreadPoolExecutor = dataclasses.field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="digitlab")
    )
    started: float = dataclasses.field(default_factory=time.monotonic)
    internal_errors: int = 0
    disconnects: int = 0  # clients gone before their request had all arrived: theirs, not the server's
    reader: Predictor = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.reader = dataclasses.replace(self.predictor, forward=self._forward)

    def _forward(self, x: np.ndarray) -> np.ndarray:
        with self.lock:  # one model call at a time: Keras models are not documented as thread-safe
            return self.predictor.forward(x)

    @classmethod
    def load(cls, run_dir: Path, runtime: str = "keras", threads: int | None = None) -> Service:
        """A run's model, ready to serve (a RunError if it cannot be). `threads`: the CPUs it may use (a
        worker of `digitlab serve --workers` gets its share): threads per model call, set before the model
        is loaded, and threads serving requests; None: a thread per core for both."""
        run_dir = Path(run_dir)
        if threads is not None and runtime == "keras":
            threads = keras_runtime.set_threads(threads)  # TensorFlow's are the process's, set before it starts
        predictor = load_predictor(run_dir, runtime=runtime, threads=threads)  # ONNX Runtime's are the session's
        run_kind = kind(predictor)  # a RunError for a model that reads neither digits nor lines
        method = choose_method(predictor, None)  # the run's own, chosen once
        config = runs.read_json(run_dir / runs.CONFIG)
        model = {"name": run_dir.resolve().name, "architecture": config.get("model", {}).get("architecture", "?")}
        service = cls(predictor, model, config, run_dir, kind=run_kind, method=method, threads=threads)
        if threads is not None:  # a worker's share of the CPUs: as many request threads as it has cores
            service.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="digitlab")
        service.reader.raw_proba(np.zeros((1, *predictor.input_shape), np.float32))  # trace the graph now
        return service

    async def answer(self, work, inputs: list, fields: list[str], pixels: list[int]) -> list[dict]:
        """work(inputs, fields) (self.predict or self.read) in chunks of at most CHUNK_MEGAPIXELS of
        `pixels` (each input's, from `pixel_counts`) or CHUNK_IMAGES, at most one chunk per thread of
        this request in the queue at a time: another request's work is queued between them."""
        chunks, size = [[]], 0
        for i, n in enumerate(pixels):
            if chunks[-1] and (size + n > CHUNK_MEGAPIXELS * 1e6 or len(chunks[-1]) >= CHUNK_IMAGES):
                chunks.append([])
                size = 0
            chunks[-1].append(i)
            size += n
        queued = asyncio.Semaphore(self.pool._max_workers)  # the executor's thread count

        async def one(chunk: list[int]) -> list[dict]:
            async with queued:
                return await self.run(work, [inputs[i] for i in chunk], [fields[i] for i in chunk])

        parts = await asyncio.gather(*(one(chunk) for chunk in chunks))
        return [result for part in parts for result in part]

    async def run(self, func, *args):
        """func(*args) in the service's threads: as many as the CPUs it has (all, or its share as a worker
        of several), since the work is CPU-bound and more threads only contend for the GIL."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, func, *args)

    def classify(self, digits: np.ndarray, rejected: list[str | bool | None]) -> list[dict]:
        """`digitlab.predict.classify` with the run's model: MNIST-like digits -> one result each."""
        return classify(self.reader, digits, rejected)

    def predict(self, inputs: list, fields: list[str]) -> list[dict]:
        """Image bytes or validated pixel grids -> one Prediction's JSON each, with the 28x28 image the
        model was given; a bad one gets {"error": ...}, its message starting with its field ("files[2]")."""
        return [self.body(o) for o in read_inputs(self.reader, inputs, fields, DIGIT)]

    def read(self, inputs: list, fields: list[str]) -> list[dict]:
        """Image bytes or pixel grids -> one Reading's JSON each, with each digit's 28x28 crop; a bad one
        gets {"error": ...} starting with its field."""
        return [self.body(o) for o in read_inputs(self.reader, inputs, fields, self.method)]

    def body(self, outcome: Outcome) -> dict:
        """An Outcome as the API answers it."""
        result = outcome.result
        if isinstance(result, Prediction):
            return {**result.to_dict(), "model": self.model, "preprocessed": np.rint(result.image).astype(int).tolist()}
        if isinstance(result, Reading):
            body = result.to_dict()
            for digit, crop in zip(body["digits"], result.crops):
                digit["preprocessed"] = crop.astype(int).tolist()
            return {**body, "size": list(result.size), "model": self.model}
        return {"error": outcome.error}

    def health(self) -> dict:
        return {
            "status": "ok",
            "kind": self.kind,
            "model": self.model,
            "threads": self.threads,
            "uptime_s": round(time.monotonic() - self.started, 3),
            "internal_errors": self.internal_errors,
            "disconnects": self.disconnects,
            "pid": os.getpid(),
        }

    def report(self) -> dict:
        """The run's configuration, its validation and test figures, and its calibration, read now:
        `digitlab evaluate` may have run since start-up."""
        metrics = _read_optional(self.run_dir / runs.METRICS)
        calibration = _read_optional(self.run_dir / runs.CALIBRATION) or metrics.get("calibration")
        return {
            "name": self.model["name"],
            "kind": self.kind,
            "config": self.config,
            "validation": metrics.get("validation"),
            "test": metrics.get("test"),
            "calibration": calibration,
        }


def pixel_counts(inputs: list) -> list[int]:
    """The pixels each input decodes to, from its header (nothing decoded): 0 for an input that is an
    error already, is not an image, or is over MAX_PIXELS (refused from its header when read, its own
    error), so that only work that would be done is counted."""
    counts = []
    for item in inputs:
        n = 0
        if isinstance(item, np.ndarray):
            n = item.size
        elif isinstance(item, (bytes, bytearray)):
            try:
                with Image.open(io.BytesIO(item), formats=FORMATS) as img:
                    n = img.width * img.height
            except Exception:  # any refusal is the image's own error when it is read
                n = 0
        counts.append(n if n <= MAX_PIXELS else 0)
    return counts


def _read_optional(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
