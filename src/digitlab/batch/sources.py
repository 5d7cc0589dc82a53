"""What a batch job reads: SOURCE as a folder, a glob, a text file listing paths, or one image; each a
local path or a URI of a file system pyarrow knows (s3://, gs://, hdfs://, file://).

Local paths are made absolute: Ray's workers do not share the driver's working directory, and a
rerun from another directory must find its finished rows by the same names."""

from __future__ import annotations

import fnmatch
import glob
from pathlib import Path

from digitlab.batch.output import pyarrow
from digitlab.errors import DataError
from digitlab.predict import IMAGE_SUFFIXES, expand_paths

GLOB_CHARS = "*?["


def is_uri(path: str) -> bool:
    return "://" in path


def is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


def list_source(source: str) -> list[str]:
    """The files of SOURCE, each once, in order: folders and globs sorted, listed files as listed.
    A DataError when SOURCE does not exist or holds no image."""
    files = _list_uri(source) if is_uri(source) else _list_local(source)
    files = list(dict.fromkeys(files))  # a file listed twice is read once
    if not files:
        raise DataError(f"SOURCE {source}: no images found (expected {', '.join(sorted(IMAGE_SUFFIXES))} files)")
    return files


def _list_local(source: str) -> list[str]:
    path = Path(source).expanduser()
    if any(c in source for c in GLOB_CHARS) and not path.exists():
        matches = [Path(m) for m in sorted(glob.glob(str(path), recursive=True))]
        return [str(p.absolute()) for p in expand_paths(matches) if p.is_file() and is_image_name(p.name)]
    if path.is_dir():
        return [str(p.absolute()) for p in expand_paths([path])]
    if not path.exists():
        raise DataError(f"SOURCE {source}: no such file or folder (expected a folder, a glob or a list of paths)")
    if is_image_name(path.name):
        return [str(path.absolute())]
    return [_resolve_listed(line, path.parent) for line in _listed(path.read_text(errors="replace"))]


def _listed(text: str) -> list[str]:
    """A list file's entries: one path a line; blank lines and lines starting with # are skipped."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _resolve_listed(entry: str, base: Path) -> str:
    """A listed path as read: URIs as they are, relative paths from the list file's folder."""
    if is_uri(entry):
        return entry
    path = Path(entry).expanduser()
    return str(path if path.is_absolute() else (base / path).absolute())


def _list_uri(source: str) -> list[str]:
    pa, _ = pyarrow()
    import pyarrow.fs as pafs  # part of pyarrow, loaded with it

    scheme = source.split("://", 1)[0]
    pattern = None
    if any(c in source for c in GLOB_CHARS):
        # The folder before the first wildcard is listed recursively and matched against the whole pattern.
        head = source[: min(source.index(c) for c in GLOB_CHARS if c in source)]
        source, pattern = head.rsplit("/", 1)[0], source
    try:
        fs, root = pafs.FileSystem.from_uri(source)
        info = fs.get_file_info(root)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise DataError(f"SOURCE {source}: cannot be opened ({e})") from None
    if info.type == pafs.FileType.NotFound:
        raise DataError(f"SOURCE {source}: no such file or folder")

    def uri(path: str) -> str:
        return f"{scheme}://{path}"

    if info.type == pafs.FileType.Directory:
        found = fs.get_file_info(pafs.FileSelector(root, recursive=True))
        names = sorted(uri(f.path) for f in found if f.type == pafs.FileType.File and is_image_name(f.path))
        return [n for n in names if pattern is None or fnmatch.fnmatchcase(n, pattern)]
    if is_image_name(root):
        return [uri(root)]
    base = root.rsplit("/", 1)[0]
    with fs.open_input_stream(root) as f:
        entries = _listed(f.read().decode(errors="replace"))
    return [e if is_uri(e) else uri(e if e.startswith("/") else f"{base}/{e}") for e in entries]


def read_bytes(uri: str) -> bytes:
    """The contents of a file named by URI (an OSError when it cannot be read, as for a local file)."""
    import pyarrow.fs as pafs  # optional: the `scale` extra; only URIs need it

    fs, path = pafs.FileSystem.from_uri(uri)
    with fs.open_input_stream(path) as f:
        return f.read()
