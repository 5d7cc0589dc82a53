"""The model a server holds, and what it does with a request's images: `Service`.

The run is loaded once. Its model calls take a lock, one at a time (Keras models are not documented as
thread-safe); preprocessing and segmentation run in parallel in the service's threads. Every image goes
through `digitlab.predict.reading.read_inputs`, the reading path the CLI and batch use: a bad image gets
its one-line error and the others are still read.

A request's images are read in chunks of at most CHUNK_MEGAPIXELS (or CHUNK_IMAGES), and the threads
(`FairPool`) take next a chunk of the request that has had fewest read: a small request waits for the
chunks being read when it arrives, not for the rest of a heavy one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import itertools
import json
import os
import threading
import time
from collections import deque
from concurrent.futures import Future
from pathlib import Path

import numpy as np
from PIL import Image

from digitlab import runs
from digitlab.predict import Predictor, choose_runtime, classify, keras_runtime, load_predictor
from digitlab.predict.count import DigitCount
from digitlab.predict.reading import DIGIT, choose_method, kind, read_inputs
from digitlab.predict.results import Outcome, Prediction, Reading
from digitlab.preprocess.image import FORMATS, MAX_PIXELS

CHUNK_MEGAPIXELS = 4  # decoded pixels read in one go in one thread: a 40 MP image is a chunk of its own
CHUNK_IMAGES = 64  # images (28x28 grids, small files) read in one go: one model call


class FairPool:
    """Threads that take work from several queues. Each request queues its chunks under its own key; a
    free thread takes the next chunk of the key that has had fewest taken (the oldest key among equals),
    and one key holds at most all the threads but one, so a request of one chunk, arriving behind one of a
    hundred, is read at once or next, not last."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self.per_key = max(1, threads - 1)  # threads one request may hold: one is left for the next
        self._queues: dict[object, list] = {}  # key -> [chunks taken, arrival, deque of work, running]
        self._ready = threading.Condition()
        self._arrivals = itertools.count()
        self._closed = False
        for i in range(threads):
            threading.Thread(target=self._work, name=f"digitlab-{i}", daemon=True).start()

    def submit(self, key: object, func, *args) -> Future:
        """func(*args) in a thread, in `key`'s turn."""
        future: Future = Future()
        with self._ready:
            if self._closed:
                raise RuntimeError("the service's threads are shut down")
            entry = self._queues.setdefault(key, [0, next(self._arrivals), deque(), 0])
            entry[2].append((future, func, args))
            self._ready.notify()
        return future

    def _next(self) -> tuple[object, list] | None:
        """The key whose chunk is next, and its entry; None if every key with work holds its share."""
        ready = [k for k, e in self._queues.items() if e[2] and e[3] < self.per_key]  # a few: one per request
        if not ready:
            return None
        key = min(ready, key=lambda k: self._queues[k][:2])
        return key, self._queues[key]

    def _work(self) -> None:
        while True:
            with self._ready:
                while not self._closed and (chosen := self._next()) is None:
                    self._ready.wait()
                if self._closed:
                    return
                key, entry = chosen
                future, func, args = entry[2].popleft()
                entry[0] += 1
                entry[3] += 1
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(func(*args))
                except BaseException as e:  # the caller's to handle, in its request
                    future.set_exception(e)
            with self._ready:
                entry[3] -= 1
                if not entry[2] and not entry[3]:
                    del self._queues[key]
                self._ready.notify()

    def shutdown(self, wait: bool = False) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()


_KEYS = itertools.count()  # one key per call of Service.run or Service.answer


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
    pool: FairPool = dataclasses.field(default_factory=lambda: FairPool(os.cpu_count() or 2))
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
    def load(cls, run_dir: Path, runtime: str | None = None, threads: int | None = None) -> Service:
        """A run's model, ready to serve (a RunError if it cannot be). `runtime` None: ONNX Runtime where the
        run has a current model.onnx, else Keras (choose_runtime). `threads`: the CPUs it may use (a
        worker of `digitlab serve --workers` gets its share): threads per model call, set before the model
        is loaded, and threads serving requests; None: a thread per core for both."""
        run_dir = Path(run_dir)
        runtime = choose_runtime(run_dir, runtime)
        if threads is not None and runtime == "keras":
            threads = keras_runtime.set_threads(threads)  # TensorFlow's are the process's, set before it starts
        predictor = load_predictor(run_dir, runtime=runtime, threads=threads)  # ONNX Runtime's are the session's
        run_kind = kind(predictor)  # a RunError for a model that reads neither digits nor lines
        method = choose_method(predictor, None)  # the run's own, chosen once
        config = runs.read_json(run_dir / runs.CONFIG)
        model = {"name": run_dir.resolve().name, "architecture": config.get("model", {}).get("architecture", "?")}
        service = cls(predictor, model, config, run_dir, kind=run_kind, method=method, threads=threads)
        if threads is not None:  # a worker's share of the CPUs: as many request threads as it has cores
            service.pool.shutdown()
            service.pool = FairPool(threads)
        service.reader.raw_proba(np.zeros((1, *predictor.input_shape), np.float32))  # trace the graph now
        return service

    async def answer(self, work, inputs: list, fields: list[str], pixels: list[int]) -> list[dict]:
        """work(inputs, fields) (self.predict or self.read) in chunks of at most CHUNK_MEGAPIXELS of
        `pixels` (each input's, from `pixel_count`) or CHUNK_IMAGES, queued in this request's own turn."""
        chunks, size = [[]], 0
        for i, n in enumerate(pixels):
            if chunks[-1] and (size + n > CHUNK_MEGAPIXELS * 1e6 or len(chunks[-1]) >= CHUNK_IMAGES):
                chunks.append([])
                size = 0
            chunks[-1].append(i)
            size += n
        key = next(_KEYS)
        parts = await asyncio.gather(
            *(
                asyncio.wrap_future(self.pool.submit(key, work, [inputs[i] for i in c], [fields[i] for i in c]))
                for c in chunks
            )
        )
        return [result for part in parts for result in part]

    async def run(self, func, *args):
        """func(*args) in the service's threads, in a turn of its own: as many threads as the CPUs it has
        (all, or its share as a worker of several), since the work is CPU-bound and more threads only
        contend for the GIL."""
        return await asyncio.wrap_future(self.pool.submit(next(_KEYS), func, *args))

    def classify(self, digits: np.ndarray, rejected: list[str | bool | None]) -> list[dict]:
        """`digitlab.predict.classify` with the run's model: MNIST-like digits -> one result each."""
        return classify(self.reader, digits, rejected)

    def predict(self, inputs: list, fields: list[str]) -> list[dict]:
        """Image bytes or validated pixel grids -> one Prediction's JSON each, with the 28x28 image the
        model was given; a bad one gets {"error": ...}, its message starting with its field ("files[2]")."""
        return [self.body(o) for o in read_inputs(self.reader, inputs, fields, DIGIT)]

    def read(self, inputs: list, fields: list[str], digits: DigitCount | None = None) -> list[dict]:
        """Image bytes or pixel grids -> one Reading's JSON each, with each digit's 28x28 crop; a bad one
        gets {"error": ...} starting with its field. `digits`: each number's count (the `digits` parameter)."""
        return [self.body(o) for o in read_inputs(self.reader, inputs, fields, self.method, digits=digits)]

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
            "runtime": self.predictor.runtime,
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


def pixel_count(item) -> int:
    """The pixels an input decodes to, from its header (nothing decoded; a few ms at most, for a PNG's
    compressed text chunks): 0 for an input that is an error already, is not an image, or is over
    MAX_PIXELS (refused from its header when read, its own error), so that only work to be done counts."""
    n = 0
    if isinstance(item, np.ndarray):
        n = item.size
    elif isinstance(item, (bytes, bytearray)):
        try:
            with Image.open(io.BytesIO(item), formats=FORMATS) as img:
                n = img.width * img.height
        except Exception:  # any refusal is the image's own error when it is read
            n = 0
    return n if n <= MAX_PIXELS else 0


def _read_optional(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
