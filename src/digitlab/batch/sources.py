"""What a batch job reads: SOURCE as a folder, a glob, a text file listing paths, or one image; each a
local path or a URI of a file system pyarrow knows (s3://, gs://, hdfs://, file://).

Local paths are made absolute: Ray's workers do not share the driver's working directory, and a
rerun from another directory must find its finished rows by the same names."""

from __future__ import annotations

import errno
import fnmatch
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from digitlab.batch.output import pyarrow
from digitlab.errors import DataError
from digitlab.predict import IMAGE_SUFFIXES

GLOB_CHARS = "*?["


def is_uri(path: str) -> bool:
    return "://" in path


def is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


@dataclass(frozen=True)
class Listing:
    """SOURCE's files, and what could hold images but cannot be listed (each with its one-line error)."""

    files: list[str]  # each real file once
    problems: dict[str, str] = field(default_factory=dict)  # path -> error: unreadable folders, broken links


def list_source(source: str) -> Listing:
    """The files of SOURCE, each once, in order: folders and globs sorted, listed files as listed.
    A DataError when SOURCE does not exist or holds no image.

    Folders are searched through symbolic links, each real folder once (a link back to a folder above
    is not followed round again) and each real file once, by its own name where SOURCE reaches it by
    one. A folder that cannot be read and a link to nothing (or to itself) named like an image are
    `problems`."""
    if is_uri(source):
        listing = Listing(_list_uri(source))
    else:
        listing = _list_local(source)
    files = list(dict.fromkeys(listing.files))  # a file listed twice is read once
    if not files:
        if listing.problems:
            first = next(iter(listing.problems.values()))
            raise DataError(f"SOURCE {source}: no images could be listed ({first})")
        raise DataError(f"SOURCE {source}: no images found (expected {', '.join(sorted(IMAGE_SUFFIXES))} files)")
    return Listing(files, listing.problems)


def _list_local(source: str) -> Listing:
    path = Path(source).expanduser()
    if any(c in source for c in GLOB_CHARS) and not path.exists():
        base, pattern = _split_glob(path.absolute())
        if not base.is_dir():
            return Listing([])
        return _walk(base, pattern)
    if path.is_dir():
        return _walk(path.absolute())
    if not path.exists():
        raise DataError(f"SOURCE {source}: no such file or folder (expected a folder, a glob or a list of paths)")
    if is_image_name(path.name):
        return Listing([str(path.absolute())])
    files: list[str] = []
    problems: dict[str, str] = {}
    for line in _listed(path.read_text(errors="replace")):
        entry = _resolve_listed(line, path.parent)
        if not is_uri(entry) and Path(entry).is_dir():  # a listed folder: its files, as for SOURCE
            found = _walk(Path(entry))
            files += found.files
            problems.update(found.problems)
        else:
            files.append(entry)
    return Listing(files, problems)


def _split_glob(pattern: Path) -> tuple[Path, tuple[str, ...]]:
    """A glob -> the folder before its first wildcard and the rest's components."""
    parts = pattern.parts
    first = next(i for i, part in enumerate(parts) if any(c in part for c in GLOB_CHARS))
    return Path(*parts[:first]), parts[first:]


def _walk(root: Path, pattern: tuple[str, ...] | None = None) -> Listing:
    """The image files under `root` (those whose path below it matches `pattern`, a glob's components,
    when given), through symbolic links, each real folder entered once and each real file listed once.
    The folders and files reached without a link come first, so a file keeps its own name."""
    seen_folders: set[tuple[int, int]] = set()
    seen_files: set[tuple[int, int]] = set()
    files: list[str] = []
    problems: dict[str, str] = {}
    folders: list[tuple[Path, tuple[str, ...]]] = [(root, ())]  # folders to enter, depth first, sorted
    links: list[tuple[Path, tuple[str, ...]]] = []  # links to files and folders: followed after the rest

    def add_file(path: Path, rel: tuple[str, ...], info: os.stat_result) -> None:
        if (info.st_dev, info.st_ino) in seen_files or not is_image_name(path.name):
            return
        if pattern is None or _matches(rel, pattern):
            seen_files.add((info.st_dev, info.st_ino))
            files.append(str(path))

    def enter(folder: Path, rel: tuple[str, ...], info: os.stat_result) -> None:
        if (info.st_dev, info.st_ino) in seen_folders or not (pattern is None or _reaches(rel, pattern)):
            return
        seen_folders.add((info.st_dev, info.st_ino))
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            problems[str(folder)] = f"{folder}: cannot be read ({e.strerror or e}); its files are left out"
            return
        subfolders = []
        for entry in entries:
            path, sub = Path(entry.path), (*rel, entry.name)
            try:
                if entry.is_symlink():
                    links.append((path, sub))
                elif entry.is_dir(follow_symlinks=False):
                    subfolders.append((path, sub))
                elif entry.is_file(follow_symlinks=False):
                    add_file(path, sub, entry.stat(follow_symlinks=False))
            except OSError as e:  # gone or unreadable between the listing and the look
                if is_image_name(entry.name):
                    problems[str(path)] = f"{path}: cannot be read ({e.strerror or e})"
        folders[:0] = subfolders  # depth first, in sorted order

    while folders or links:
        if folders:
            folder, rel = folders.pop(0)
            try:
                info = folder.stat()
            except OSError as e:
                problems[str(folder)] = f"{folder}: cannot be read ({e.strerror or e}); its files are left out"
                continue
            enter(folder, rel, info)
            continue
        link, rel = links.pop(0)
        try:
            info = link.stat()  # follows the link
        except OSError as e:
            if is_image_name(link.name) and (pattern is None or _matches(rel, pattern)):
                what = "symlink loop" if e.errno == errno.ELOOP else f"broken link to {os.readlink(link)}"
                problems[str(link)] = f"{link}: {what}, expected an image file"
            continue
        if stat.S_ISDIR(info.st_mode):
            folders.append((link, rel))
        elif stat.S_ISREG(info.st_mode):
            add_file(link, rel, info)
    return Listing(sorted(files), problems)


def _component(name: str, pattern: str) -> bool:
    """A glob's component matches a name; a name starting with "." only a component that does too."""
    if name.startswith(".") and not pattern.startswith("."):
        return False
    return fnmatch.fnmatchcase(name, pattern)


def _matches(parts: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    """Whether the path `parts` matches the glob `pattern` (`**`: any number of folders), or lies in a
    folder that does (a matched folder's files are its files, as for a folder given as SOURCE)."""
    if not pattern:
        return True
    if not parts:
        return all(p == "**" for p in pattern)
    if pattern[0] == "**":
        return _matches(parts, pattern[1:]) or (not parts[0].startswith(".") and _matches(parts[1:], pattern))
    return _component(parts[0], pattern[0]) and _matches(parts[1:], pattern[1:])


def _reaches(parts: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    """Whether a file in the folder `parts` may match `pattern`: folders that cannot are not entered."""
    if not parts or not pattern:
        return True
    if pattern[0] == "**":
        return _reaches(parts, pattern[1:]) or (not parts[0].startswith(".") and _reaches(parts[1:], pattern))
    return _component(parts[0], pattern[0]) and _reaches(parts[1:], pattern[1:])


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
