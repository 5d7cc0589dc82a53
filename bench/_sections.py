"""BENCHMARKS.md is written by several bench scripts: each owns one section, between `<!-- NAME -->` and
`<!-- /NAME -->`, and replaces only that, so a rerun of one script keeps the others' figures.

    from _sections import write_section   # bench/ is on sys.path when a bench script runs
    write_section(path, "numbers", markdown)
"""

from __future__ import annotations

import re
from pathlib import Path

TITLE = "# Benchmarks\n"  # the head of a new file


def markers(name: str) -> tuple[str, str]:
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name):
        raise ValueError(f"section name {name!r}: expected lower-case letters, digits, '-' or '_'")
    return f"<!-- {name} -->", f"<!-- /{name} -->"


def replace_section(text: str, name: str, body: str) -> str:
    """`text` with the section `name` holding `body` (markers added): in place when it is there, else
    appended at the end. Nothing outside the markers changes."""
    begin, end = markers(name)
    section = f"{begin}\n{body.strip(chr(10))}\n{end}"
    start = text.find(begin)
    if start >= 0:
        stop = text.find(end, start)
        if stop < 0:
            raise ValueError(f"section {name!r}: {begin} has no {end} after it")
        return text[:start] + section + text[stop + len(end) :]
    return (text.rstrip("\n") + "\n\n" if text.strip() else TITLE + "\n") + section + "\n"


def write_section(path: Path, name: str, body: str) -> Path:
    """Replace (or add) section `name` of the Markdown file at `path`, creating the file if need be."""
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    path.write_text(replace_section(text, name, body), encoding="utf-8")
    return path
