"""Where a batch job's `BatchReader` runs. Both engines yield pyarrow Tables of result rows, one per
batch of paths, and leave writing them to the job.

local: batch after batch in this process; Ray is never imported.
ray:   Ray Data's `map_batches` over a pool of actors, each loading the model once; a local Ray started
       for the job (and stopped after it), a cluster given by --address, or the Ray this process has
       already started.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import os
import socket
import warnings
from collections.abc import Iterator

from digitlab.batch.output import to_table
from digitlab.batch.reader import BatchReader
from digitlab.errors import DigitlabError
from digitlab.predict import share_threads

CONNECT_TIMEOUT = 5.0  # s: a head node's port that does not answer in this time is unreachable


def local_results(reader: BatchReader, paths: list[str], batch_size: int) -> Iterator:
    for i in range(0, len(paths), batch_size):
        yield to_table(reader.read(paths[i : i + batch_size]), reader.task)


class NamesReader(BatchReader):
    """A BatchReader handed its paths as bytes (os.fsencode): a file's name need not be UTF-8, and Arrow's
    strings must be. Its rows hold each path as `output.utf8_text` writes it."""

    def __call__(self, batch):
        return to_table(self.read([os.fsdecode(p) for p in batch.column("path").to_pylist()]), self.task)


def import_ray():
    if importlib.util.find_spec("ray") is None:
        raise DigitlabError("--engine ray needs Ray Data: pip install 'digitlab[scale]' (or use --engine local)")
    import ray  # optional and slow to import (about 1 s): the `scale` extra
    import ray.data

    return ray


def check_address(address: str) -> None:
    """A one-line error for an --address that is neither auto nor [ray://]host:port."""
    if address in ("auto", "local"):
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not (sep and port.isdigit() and 0 < int(port) < 65536 and host) or any(c.isspace() for c in host):
        raise DigitlabError(
            f"--address {address!r}: expected host:port (a Ray head node's, as `ray start --head` prints it), "
            "ray://host:port or auto"
        )


def check_reachable(address: str) -> None:
    """Fail in one line, at once, when a host:port address does not answer: ray.init would wait for
    minutes. `auto` and other forms are left to Ray."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit() or not host:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT).close()
    except OSError as e:
        raise DigitlabError(
            f"--address {address}: unreachable ({e.strerror or e}); expected a Ray head node's address "
            "(`ray start --head` prints it) or auto"
        ) from None


@contextlib.contextmanager
def ray_session(address: str | None, workers: int | None) -> Iterator:
    """Ray for one job and the cores its workers share: the cluster at `address`, or a local Ray with
    `workers` CPUs on this machine's cores, shut down after the job; or the Ray this process has already
    started, left running. Yields (ray, cores)."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray, int(ray.cluster_resources().get("CPU", 1))
        return
    options = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
    if address is None:
        # "local": a new Ray even where `ray start` runs on this machine (--address auto joins that one).
        ray.init(address="local", num_cpus=workers or os.cpu_count(), **options)
        cores = os.cpu_count() or 1  # Ray schedules `workers` CPUs; the workers' threads may use them all
    else:
        check_reachable(address)
        try:
            ray.init(address=address, **options)
        except (ConnectionError, RuntimeError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DigitlabError(f"--address {address}: cannot join a Ray cluster there ({first})") from None
        cores = int(ray.cluster_resources().get("CPU", 1))
    try:
        yield ray, cores
    finally:
        ray.shutdown()


def pool_size(ray, workers: int | None, files: int) -> int:
    """The actors a job starts: --workers, else one per CPU of the cluster, and never more than there
    are files to read (an actor with no file would only load the model)."""
    return max(1, min(workers or int(ray.cluster_resources().get("CPU", 1)), files))


def _no_restarts() -> dict:
    return {"max_restarts": 0}


def ray_results(
    ray, paths: list[str], reader_options: dict, *, batch_size: int, workers: int | None, cores: int
) -> Iterator:
    """Result tables from Ray Data, in the order the actors finish them (each row names its path). Each
    of the workers (default: one per CPU of the cluster) runs the model on its share of `cores`."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the CLI draws the job's own bar
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    size = pool_size(ray, workers, len(paths))
    reader_options = {**reader_options, "threads": share_threads(size, cores)}
    # Every actor gets work: a batch no larger than an actor's share of the files (6 files, 2 workers: 3
    # each), else a small job is one block and one actor reads it all while the other idles.
    batch_size = min(batch_size, math.ceil(len(paths) / size))
    # Only the paths travel: each actor reads its files itself. One block per batch (blocks are what the
    # actors are handed, so many small ones keep all busy), built here: from_arrow would ask a Ray task
    # per block for its metadata, and wait for worker processes to start for them.
    names = [{"path": os.fsencode(p)} for p in paths]
    paths_ds = ray.data.from_items(names, override_num_blocks=math.ceil(len(paths) / batch_size))
    with warnings.catch_warnings():
        # Ray marks ray_remote_args_fn deprecated (for 2.64) and names no other way to set max_restarts;
        # without it Ray logs an alarming line for every actor pool.
        warnings.simplefilter("ignore", DeprecationWarning)
        results = paths_ds.map_batches(
            NamesReader,
            fn_constructor_kwargs=reader_options,
            batch_size=batch_size,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=size),
            num_cpus=1,
            # A worker that dies fails the job (a rerun resumes from the parts written) rather than restart.
            ray_remote_args_fn=_no_restarts,
        )
    yield from results.iter_batches(batch_size=None, batch_format="pyarrow")
