"""A batch job's output folder: Parquet part files, each written whole under a temporary name and
renamed, beside a manifest naming the run, model and task that wrote them.

    results.parquet/
      _digitlab_batch.json   run id, model digest, runtime, task, columns
      part-000000.parquet    one row per input file
      part-000001.parquet    ...

Parquet readers (pyarrow, pandas, DuckDB, Spark) read the folder as one table and skip names that
start with `_` or `.`: the manifest, the lock and unfinished temporaries.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from digitlab import atomic, runs
from digitlab.errors import DigitlabError, RunError

MANIFEST = "_digitlab_batch.json"
PART = "part-{:06d}.parquet"
PART_PATTERN = re.compile(r"^part-(\d{6,})\.parquet$")
PART_ROWS = 10_000  # rows per part file at most
PART_SECONDS = 10.0  # s: a part is written at least this often, so a kill -9 loses at most ~10 s of work
IDENTITY = ("run_id", "task", "model_digest")  # an --out written with other values is another job's


def pyarrow():
    """pyarrow and pyarrow.parquet, or one line naming the extra that installs them."""
    try:
        import pyarrow as pa  # optional: the `scale` extra; `digitlab --help` must not need it
        import pyarrow.parquet as pq
    except ImportError:
        raise DigitlabError("digitlab batch writes Parquet with pyarrow: pip install 'digitlab[scale]'") from None
    return pa, pq


def schema(task: str):
    """The columns of one row per input file; `digit` for task digit, `text` for task number. Task digit
    keeps `top3` (label and calibrated probability, most likely first), so that an unsure row, whose digit
    is null, still holds the best guess and its confidence, as `predict --json` and `--csv` do."""
    pa, _ = pyarrow()
    answer = pa.field("digit", pa.int16()) if task == "digit" else pa.field("text", pa.string())
    guesses = pa.list_(pa.struct([pa.field("label", pa.string()), pa.field("probability", pa.float64())]))
    return pa.schema(
        [
            pa.field("path", pa.string()),
            answer,
            pa.field("confidence", pa.float64()),
            pa.field("unsure", pa.bool_()),
            pa.field("reason", pa.string()),
            *([pa.field("top3", guesses)] if task == "digit" else []),
            pa.field("error", pa.string()),
            pa.field("run_id", pa.string()),
            pa.field("model_digest", pa.string()),
        ]
    )


def to_table(rows: list[dict], task: str):
    """Row dicts (missing keys are nulls) -> a pyarrow Table with the task's schema; text as `utf8_text`."""
    pa, _ = pyarrow()
    columns = schema(task)
    return pa.Table.from_pylist(
        [{name: _cell(row.get(name)) for name in columns.names} for row in rows], schema=columns
    )


def utf8_text(text: str) -> str:
    """`text` as Parquet can store it: valid UTF-8. A file name that is not UTF-8 reaches Python with each
    such byte as a lone surrogate (os.fsdecode); it is stored with that byte as the four characters \\xNN,
    so `bad\\xff.png` in a `path` is the file whose name holds the byte 0xff (os.fsencode(path) of the
    name Python lists)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate no file name makes: written as \udNNN
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _cell(value):
    return utf8_text(value) if isinstance(value, str) else value


def part_files(out: Path) -> list[Path]:
    return sorted(p for p in Path(out).iterdir() if PART_PATTERN.match(p.name)) if Path(out).is_dir() else []


def _ours(path: Path) -> bool:
    return path.name in (MANIFEST, runs.LOCK) or bool(PART_PATTERN.match(path.name)) or runs.is_temporary(path)


def check(out: Path, manifest: dict, *, overwrite: bool) -> None:
    """Refuse an `out` this job may not write into, touching nothing: a file, a run directory, a folder
    holding anything a batch job does not write, or (unless `overwrite`) another job's output."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunError(f"--out {out}: a file, expected a folder for Parquet parts (a new name, or an earlier job's)")
    if not out.is_dir():
        return
    if (out / runs.CONFIG).is_file():
        raise RunError(f"--out {out}: a run directory, expected a folder for Parquet parts (a new name)")
    foreign = sorted(p.name for p in out.iterdir() if not _ours(p))
    if foreign:
        raise RunError(
            f"--out {out}: holds files a batch job did not write ({', '.join(foreign[:3])}); "
            "expected a new folder or an earlier job's output"
        )
    if not overwrite:
        _check_identity(out, manifest)


def prepare(out: Path, manifest: dict, *, overwrite: bool) -> set[str]:
    """Make `out` ready for this job (after `check`) and return the paths already written there (to
    skip). An earlier job's parts are kept unless `overwrite`, which removes only the files a batch job
    writes; a folder holding anything else is never written into."""
    out = Path(out)
    check(out, manifest, overwrite=overwrite)
    if out.is_dir():
        if overwrite:
            clear(out)
        else:
            for tmp in (p for p in out.iterdir() if runs.is_temporary(p)):
                tmp.unlink()  # a part a crashed job was writing: its files are read again
    out.mkdir(parents=True, exist_ok=True)
    runs.write_json(out / MANIFEST, manifest)
    if not part_files(out):  # a job stopped before its first part still reads as a table of these columns
        _, pq = pyarrow()
        with atomic.replacing(out / PART.format(0)) as tmp:
            pq.write_table(schema(manifest["task"]).empty_table(), tmp)
    return done_paths(out)


def _check_identity(out: Path, manifest: dict) -> None:
    manifest_path = out / MANIFEST
    if manifest_path.is_file():
        old = runs.read_json(manifest_path)
        changed = [k for k in IDENTITY if old.get(k) != manifest[k]]
        if changed == ["model_digest"] and old.get("runtime") not in (None, manifest["runtime"]):
            raise RunError(
                f"--out {out}: written with the {old['runtime']} runtime; this job uses {manifest['runtime']}: "
                f"add --runtime {old['runtime']} to continue it, or --overwrite"
            )
        if changed:
            what = ", ".join(f"{k} {old.get(k)!r} (this job: {manifest[k]!r})" for k in changed)
            raise RunError(
                f"--out {out}: written by another job, {what}; give another --out, or --overwrite to replace it"
            )
        if old.get("columns", manifest["columns"]) != manifest["columns"]:  # parts of one table share columns
            raise RunError(
                f"--out {out}: its parts have the columns {', '.join(old['columns'])}; this version of digitlab "
                f"writes {', '.join(manifest['columns'])}: give another --out, or --overwrite to replace it"
            )
    elif part_files(out):
        raise RunError(f"--out {out}: Parquet parts without {MANIFEST}; give another --out, or --overwrite")


def clear(out: Path) -> None:
    """Remove the parts and manifest of an earlier job (for --overwrite), and nothing else."""
    for path in Path(out).iterdir():
        if path.name != runs.LOCK and _ours(path):
            path.unlink()


def done_paths(out: Path) -> set[str]:
    """The `path` of every row in the finished parts of `out`."""
    _, pq = pyarrow()
    done: set[str] = set()
    for part in part_files(out):
        done.update(pq.read_table(part, columns=["path"]).column("path").to_pylist())
    return done


class PartWriter:
    """Collects result tables and writes them as numbered part files, each atomically."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.part_rows, self.part_seconds = PART_ROWS, PART_SECONDS
        numbers = [int(PART_PATTERN.match(p.name).group(1)) for p in part_files(self.out)]
        self.next = max(numbers, default=-1) + 1
        self.pending: list = []  # pyarrow Tables not yet written
        self.rows = 0
        self.last = time.monotonic()
        self.written: list[Path] = []

    def add(self, table) -> None:
        self.pending.append(table)
        self.rows += table.num_rows
        if self.rows >= self.part_rows or time.monotonic() - self.last >= self.part_seconds:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        pa, pq = pyarrow()
        path = self.out / PART.format(self.next)
        with atomic.replacing(path) as tmp:
            pq.write_table(pa.concat_tables(self.pending), tmp)
        self.written.append(path)
        self.next += 1
        self.pending, self.rows, self.last = [], 0, time.monotonic()
