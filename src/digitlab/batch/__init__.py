"""Batch reading of an archive of images into Parquet: `run_batch(run, source, out)`.

    SOURCE -> list the files (sources.py) -> skip those already in --out (output.py)
           -> batches of paths -> BatchReader: preprocess + classify, or digitlab.read (reader.py)
              in this process or on Ray Data's actors (engines.py)
           -> part files, each written whole, with a manifest (output.py)

A file gets the same answer here as through `digitlab predict` (task digit: the same `preprocess`, the
same `classify`, the same calibration and unsure rule) or `digitlab read` (task number: `digitlab.read`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from digitlab import __version__, runs
from digitlab.batch import engines, output
from digitlab.batch.reader import BatchReader, model_digest, model_file, run_id
from digitlab.batch.sources import list_source
from digitlab.config import BATCH_ENGINES, BATCH_SIZE, BATCH_TASKS
from digitlab.errors import DigitlabError

__all__ = [
    "ENGINES",
    "TASKS",
    "Interrupted",
    "check_out",
    "default_engine",
    "default_runtime",
    "run_batch",
]


class Interrupted(KeyboardInterrupt):
    """A job stopped by Ctrl-C or SIGTERM once every row it had read was written: `rows` rows are in
    `out`, and the same job run again reads the rest."""

    def __init__(self, rows: int, out: Path):
        super().__init__(f"interrupted: {rows:,} rows kept in {out}")
        self.rows, self.out = rows, out


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM stops a job as Ctrl-C does (a KeyboardInterrupt), while it runs. Signals reach the main
    thread only, so a job in another thread is left to its caller."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    """A second Ctrl-C or SIGTERM does not cut short the writing of the rows in hand (under a second)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def default_engine() -> str:
    """ray when Ray is installed, else local."""
    return "ray" if importlib.util.find_spec("ray") is not None else "local"


def default_runtime(engine: str, run_dir: Path | None = None) -> str:
    """ONNX Runtime on Ray (its workers need no TensorFlow), Keras in this process (as `predict`); Keras on
    Ray too for a run with no model.onnx (not exported)."""
    if engine == "ray" and (run_dir is None or (Path(run_dir) / runs.ONNX).is_file()):
        return "onnx"
    return "keras"


def check_out(run_dir: Path, out: Path, *, task: str, runtime: str, overwrite: bool = False) -> dict:
    """The manifest a job writes into `out`, with its model file's digest; an `out` the job may not write
    into (a file, a run directory, another folder, another job's output unless `overwrite`) is refused
    here, from the model file alone: before any model loads or Ray starts, and with nothing written into
    it (not even a lock). A missing model file is left to the model's loader."""
    manifest = {
        "run_id": run_id(run_dir),
        "task": task,
        "model_digest": None,
        "runtime": runtime,
        "run_dir": str(Path(run_dir).absolute()),
        "columns": output.schema(task).names,
        "digitlab": __version__,
    }
    if model_file(run_dir, runtime).is_file():
        manifest["model_digest"] = model_digest(run_dir, runtime)
        output.check(Path(out), manifest, overwrite=overwrite)
    return manifest


def run_batch(
    run_dir: Path,
    source: str,
    out: Path,
    *,
    task: str = "digit",
    engine: str | None = None,
    runtime: str | None = None,
    address: str | None = None,
    workers: int | None = None,
    batch_size: int = BATCH_SIZE,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    digits: str | None = None,
) -> dict:
    """Read every image of `source` with the run's model into Parquet parts in the folder `out`.

    Files already in `out` (from an earlier, interrupted job of the same run, model and task) are
    skipped. Ctrl-C or SIGTERM writes every row read so far and raises `Interrupted`; running the same job
    again reads the rest. `digits` (task number): each number's count, as `--digits` ("4", "5-9").
    `progress(done, total)` is called after every batch. Returns the summary: files, skipped,
    errors, unsure, unsure_share, seconds, files_per_s, first_result_seconds, parts, rows, and the
    engine, runtime and workers used."""
    start = time.monotonic()
    engine = engine or default_engine()
    if engine not in BATCH_ENGINES:
        raise DigitlabError(f"--engine: expected one of {', '.join(BATCH_ENGINES)}, got {engine!r}")
    if task not in BATCH_TASKS:
        raise DigitlabError(f"--task: expected one of {', '.join(BATCH_TASKS)}, got {task!r}")
    if batch_size < 1:
        raise DigitlabError(f"--batch-size: expected 1 or more, got {batch_size}")
    if workers is not None and workers < 1:
        raise DigitlabError(f"--workers: expected 1 or more, got {workers}")
    if engine == "local" and (address is not None or (workers or 1) > 1):
        raise DigitlabError("--address and --workers: for --engine ray; --engine local runs in this process")
    if address is not None:
        engines.check_address(address)
    if engine == "ray":
        engines.import_ray()  # a missing Ray fails here, before the model loads
    runtime = runtime or default_runtime(engine, run_dir)
    out = Path(out)
    options = {"run_dir": str(Path(run_dir).absolute()), "runtime": runtime, "task": task}
    if digits is not None:  # each number's count of digits (--digits), checked by BatchReader below
        options["digits"] = str(digits)
    manifest = check_out(run_dir, out, task=task, runtime=runtime, overwrite=overwrite)
    listing = list_source(source)
    files = listing.files
    reader = BatchReader(**options)  # a bad run fails here, before Ray starts; the local engine's reader
    digest = manifest["model_digest"] = reader.model_digest
    output.check(out, manifest, overwrite=overwrite)
    with contextlib.ExitStack() as stack:
        if engine == "ray":
            # An unreachable --address fails here, before the output folder is touched.
            ray, cores = stack.enter_context(engines.ray_session(address, workers))
            del reader  # the actors load their own model
        stack.enter_context(runs.lock_run(out))  # a second job on the same --out stops at once
        done = output.prepare(out, manifest, overwrite=overwrite)
        todo = [f for f in files if output.utf8_text(f) not in done]  # rows name files as utf8_text writes them
        writer = output.PartWriter(out)
        pool = engines.pool_size(ray, workers, len(todo)) if engine == "ray" else 1
        counts = {"files": 0, "errors": 0, "unsure": 0}
        first_result = None
        unlisted = [
            {"path": path, "error": error, "run_id": manifest["run_id"], "model_digest": digest}
            for path, error in listing.problems.items()
            if output.utf8_text(path) not in done
        ]
        stack.enter_context(_terminate_as_interrupt())
        try:
            if unlisted:  # folders that cannot be read, broken links: a row each, as a file that cannot be read
                writer.add(output.to_table(unlisted, task))
                counts["files"] += len(unlisted)
                counts["errors"] += len(unlisted)
            if not todo:
                results = iter(())
            elif engine == "local":
                results = engines.local_results(reader, todo, batch_size)
            else:
                options["expected_digest"] = digest
                results = engines.ray_results(ray, todo, options, batch_size=batch_size, workers=workers, cores=cores)
            for table in results:
                first_result = first_result or time.monotonic() - start
                writer.add(table)
                counts["files"] += table.num_rows
                counts["errors"] += table.num_rows - table.column("error").null_count
                counts["unsure"] += sum(1 for v in table.column("unsure").to_pylist() if v)
                if progress is not None:
                    progress(counts["files"], len(todo) + len(unlisted))
        except KeyboardInterrupt:
            with _signals_ignored():
                writer.flush()  # every row read so far; the batch being read when the signal came is read again
            raise Interrupted(len(done) + counts["files"], out) from None
        except BaseException:
            with contextlib.suppress(Exception):
                writer.flush()  # rows already read are kept, whatever stopped the job
            raise
        writer.flush()
    seconds = time.monotonic() - start
    readable = counts["files"] - counts["errors"]
    return {
        **counts,
        "skipped": len(files) + len(listing.problems) - len(todo) - len(unlisted),
        "unsure_share": counts["unsure"] / readable if readable else 0.0,
        "seconds": seconds,
        "files_per_s": counts["files"] / seconds if seconds else 0.0,
        "first_result_seconds": first_result,
        "parts": len(writer.written),
        "rows": len(done) + counts["files"],
        "engine": engine,
        "runtime": runtime,
        "workers": pool,  # the actors started: --workers (one per CPU of the cluster), at most one per file
        "out": str(out),
    }
