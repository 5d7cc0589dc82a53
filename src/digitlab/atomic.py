"""The one way digitlab writes a file: to a temporary name beside it, fsync, then rename.

A reader (or a process killed mid-write) sees the old file or the new one, never half of one. Every
file a run, the cache or an export writes goes through here.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

TEMP_SUFFIX = ".tmp"  # temporaries are named `.<name>.<random><suffix>.tmp` beside their target


def _mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask  # mkstemp makes 0600; written files should read like any other


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


@contextlib.contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `path`, with the same suffix (Keras and matplotlib pick the format from it),
    for a writer that needs a file name; on success it is synced, made readable and renamed to `path`;
    on any failure it is removed and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f"{TEMP_SUFFIX}{path.suffix}")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        install(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def install(written: Path, path: str | os.PathLike) -> Path:
    """Make a finished file in `path`'s directory readable, sync it and rename it to `path`."""
    os.chmod(written, _mode())
    _fsync(Path(written))
    os.replace(written, path)
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes | bytearray) -> Path:
    """Write `data` to `path` atomically."""
    with replacing(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)
