"""The one way digitlab writes a file: to a temporary name beside it, fsync, then rename.

A reader (or a process killed mid-write) sees the old file or the new one, never half of one. Every
file a run, the cache or an export writes goes through here. A temporary names the process and the
machine that writes it, so that a later start (`remove_stale`) can remove what a killed writer left
and nothing else.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from digitlab.errors import DigitlabError

# Temporaries are named `.<target>.<pid>@<host>.<random>.tmp<suffix>` beside their target; <suffix> is
# the target's own (Keras and matplotlib pick the format from it), empty for a folder.
TEMP_SUFFIX = ".tmp"
_TEMP_NAME = re.compile(
    r"\.(?P<target>.+)\.(?P<pid>[1-9][0-9]{0,9})@(?P<host>[A-Za-z0-9-]{1,32})\.[a-z0-9_]{8}"
    + re.escape(TEMP_SUFFIX)
    + r"(?P<suffix>(\.[^.]+)?)"
)  # <random> is mkstemp's: 8 characters of a-z, 0-9 and _


def _host() -> str:
    # Another machine's writer (a cache on a shared file system) is never taken for a dead one here.
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:32] or "localhost"


def _prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}@{_host()}."


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
    on any failure it is removed and `path` is left as it was. A full disk (or quota), however the writer
    reports it, is a DigitlabError naming `path`."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=_prefix(path), suffix=f"{TEMP_SUFFIX}{path.suffix}")
        os.close(fd)
        tmp = Path(name)
        yield tmp
        install(tmp, path)
    except Exception as e:
        full = _no_space(e, path)
        if full is None:
            raise
        raise full from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _no_space(error: BaseException, path: Path) -> DigitlabError | None:
    """The one-line error for a write to `path` that ran out of space, or None for any other failure.
    Writers wrap the OSError (Keras) or keep only its message (h5py, Arrow), so the whole chain is read."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if (isinstance(error, OSError) and error.errno in NO_SPACE) or "No space left on device" in str(error):
            return DigitlabError(f"no space left on device writing {path}")
        error = error.__cause__ or error.__context__
    return None


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


def temporary_dir(path: str | os.PathLike) -> Path:
    """A new folder beside `path`, named as its temporary, for a writer that builds several files (an
    export, a download); the caller removes it when done."""
    path = Path(path)
    return Path(tempfile.mkdtemp(dir=path.parent, prefix=_prefix(path), suffix=TEMP_SUFFIX))


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    except OverflowError:
        return False  # beyond any pid the system hands out
    return True


def remove_stale(directory: str | os.PathLike, target: str | None = None) -> list[Path]:
    """Remove the temporaries in `directory` (of `target` only, if given) whose writer, a process on
    this machine, has exited: what a killed write, training or export left. Files not named like a
    temporary, and those of a live process or of another machine, are left. Returns what was removed;
    what cannot be removed (a read-only folder) is left for a later start."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return []
    removed = []
    for entry in entries:
        match = _TEMP_NAME.fullmatch(entry.name)
        if match is None or (target is not None and match["target"] != target):
            continue
        if match["suffix"] not in ("", Path(match["target"]).suffix):
            continue
        if match["host"] != _host() or _alive(int(match["pid"])):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        except OSError:
            continue
        removed.append(Path(entry.path))
    return removed
