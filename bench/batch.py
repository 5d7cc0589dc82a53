"""Batch reading throughput: `digitlab batch` on generated scans, the local engine against Ray Data with
1 and 2 workers. Prints the figures and writes them into their own section of BENCHMARKS.md (replaced
on a rerun, the rest of the file kept).

    .venv/bin/python bench/batch.py RUN [--count 10000] [--work DIR] [--out BENCHMARKS.md]

The scans: MNIST test digits as dark ink on white paper, three in four a single digit crop (96-160 px),
one in four a number line of 4-6 digits side by side (about 400 x 110 px); PNG and JPEG alternately.
Each configuration is a fresh `digitlab batch` process on ONNX Runtime. Measured per configuration:
files/s over the whole job, the steady rate once results flow, the start-up overhead (wall time less
files / steady rate: imports, Ray, the workers' model loads), and peak resident memory of the driver
(wait4) and of each Ray worker (VmHWM sampled from /proc).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from digitlab.data import load_dataset
from digitlab.runs import cpu_name

ROOT = Path(__file__).resolve().parents[1]
DIGITLAB = Path(sys.executable).with_name("digitlab")
CONFIGS = (("local", None), ("ray", 1), ("ray", 2))
BEGIN, END = "<!-- bench/batch.py: begin -->", "<!-- bench/batch.py: end -->"
NODES = (1, 10, 100)  # cluster sizes for the figures on paper
NODE_CORES = 16  # cores per node on paper
ARCHIVE = 10_000_000  # scans in the archive on paper


def make_scans(folder: Path, count: int, seed: int = 0) -> Path:
    """`count` generated scans in `folder` (made once per count and kept)."""
    done = folder / f".complete-{count}"
    if done.exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    ds = load_dataset("mnist")
    rng = np.random.default_rng(seed)
    for i in range(count):
        if i % 4 == 3:  # a number line: MNIST digits side by side, a little overlap and jitter
            picks = rng.integers(0, len(ds.x_test), rng.integers(4, 7))
            line = np.concatenate([ds.x_test[k][:, 3:25] for k in picks], axis=1)
            page = Image.fromarray(255 - line).resize((line.shape[1] * 4, 110))
        else:
            side = int(rng.integers(96, 161))
            page = Image.fromarray(255 - ds.x_test[i % len(ds.x_test)]).resize((side, side))
        sub = folder / f"{i // 1000:03d}"
        sub.mkdir(exist_ok=True)
        if i % 2:
            page.save(sub / f"{i:07d}.png")
        else:
            page.convert("RGB").save(sub / f"{i:07d}.jpg", quality=90)
    done.touch()
    return folder


class WorkerPeaks(threading.Thread):
    """Samples /proc for Ray's map workers and keeps each one's peak resident memory (VmHWM, KiB)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peaks: dict[int, int] = {}
        self.stop = threading.Event()

    def run(self):
        while not self.stop.wait(0.25):
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit():
                    continue
                try:
                    if b"MapWorker" not in (entry / "cmdline").read_bytes():
                        continue
                    hwm = re.search(r"VmHWM:\s+(\d+)", (entry / "status").read_text())
                except OSError:
                    continue
                if hwm:
                    self.peaks[int(entry.name)] = max(self.peaks.get(int(entry.name), 0), int(hwm.group(1)))


def measure(run: Path, scans: Path, work: Path, engine: str, workers: int | None) -> dict:
    out = work / f"out-{engine}-{workers or 1}"
    shutil.rmtree(out, ignore_errors=True)
    command = [str(DIGITLAB), "batch", str(run), str(scans), "--out", str(out), "--engine", engine]
    command += ["--runtime", "onnx", "--json", "-q"] + (["--workers", str(workers)] if workers else [])
    peaks = WorkerPeaks()
    peaks.start()
    start = time.monotonic()
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr, text=True)
        _, status, usage = os.wait4(process.pid, 0)  # reaps the driver and gives its peak memory
        process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.monotonic() - start
        peaks.stop.set()
        peaks.join()
        stdout.seek(0), stderr.seek(0)
        if process.returncode:
            raise SystemExit(f"{' '.join(command)} failed:\n{stderr.read()}")
        summary = json.loads(stdout.read())
    steady = (summary["files"] - BATCH) / max(1e-9, summary["seconds"] - summary["first_result_seconds"])
    return {
        "engine": engine if engine == "local" else f"ray, {workers} worker{'s' if workers > 1 else ''}",
        "workers": workers or 1,
        "files": summary["files"],
        "errors": summary["errors"],
        "wall_s": wall,
        "files_per_s": summary["files"] / wall,
        "steady_files_per_s": steady,
        "startup_s": max(0.0, wall - summary["files"] / steady),
        "driver_peak_mb": usage.ru_maxrss / 1024,  # KiB on Linux
        "worker_peak_mb": [kb / 1024 for kb in peaks.peaks.values()],
    }


BATCH = 256  # digitlab batch's default batch size: the first batch's files arrive with the first result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a run directory (exported to ONNX here if it is not yet)")
    parser.add_argument("--count", type=int, default=10_000, help="generated scans (default 10000)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "digitlab-bench-batch")
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md", help="report to update")
    args = parser.parse_args()
    if not (args.run / "model.onnx").is_file():
        subprocess.run([str(DIGITLAB), "export", str(args.run)], check=True)
    started = time.monotonic()
    scans = make_scans(args.work / f"scans-{args.count}", args.count)
    print(f"{args.count:,} scans in {scans} ({time.monotonic() - started:.0f} s)", flush=True)
    results = []
    for engine, workers in CONFIGS:
        results.append(measure(args.run, scans, args.work, engine, workers))
        print(json.dumps(results[-1]), flush=True)
    section = report(args, results)
    print(section)
    write_section(args.out, section)


def report(args, results: list[dict]) -> str:
    by = {r["workers"] if r["engine"] != "local" else 0: r for r in results}
    one, two, local = by[1], by[2], by[0]
    efficiency = two["steady_files_per_s"] / (2 * one["steady_files_per_s"])
    lines = [
        BEGIN,
        "## Batch reading (`digitlab batch`)",
        "",
        f"Written by `.venv/bin/python bench/batch.py RUN --count {args.count}` on {time.strftime('%Y-%m-%d')}, "
        f"CPU {cpu_name()}, {os.cpu_count()} cores, shared with other work while it ran (timings vary with the load).",
        f"{args.count:,} generated scans (3 in 4 one digit of 96-160 px, 1 in 4 a line of 4-6 digits of about "
        "400 x 110 px; PNG and JPEG alternately), `--runtime onnx`, batches of 256, each a fresh process.",
        "",
        "| engine | files/s (whole job) | files/s (steady) | start-up overhead s | driver peak MB | worker peak MB |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        worker = ", ".join(f"{m:.0f}" for m in r["worker_peak_mb"]) or "(in the driver)"
        lines.append(
            f"| {r['engine']} | {r['files_per_s']:.0f} | {r['steady_files_per_s']:.0f} | {r['startup_s']:.1f} | "
            f"{r['driver_peak_mb']:.0f} | {worker} |"
        )
    r1 = one["steady_files_per_s"]
    lines += [
        "",
        f"Ray, 2 workers against the local engine: **{two['files_per_s'] / local['files_per_s']:.2f}x** (whole job), "
        f"{two['steady_files_per_s'] / local['steady_files_per_s']:.2f}x (steady). Scaling from 1 to 2 workers: "
        f"{two['steady_files_per_s'] / r1:.2f}x, an efficiency of {efficiency:.0%}.",
        "",
        f"On paper, a cluster of N nodes of {NODE_CORES} cores, one worker a core, each at the {r1:.0f} files/s one "
        f"worker reads here and the {efficiency:.0%} efficiency measured from 1 to 2 (storage and the driver "
        "assumed not to be the limit):",
        "",
        f"| nodes | workers | files/s | hours for {ARCHIVE:,} scans |",
        "| --- | --- | --- | --- |",
    ]
    for n in NODES:
        rate = n * NODE_CORES * r1 * efficiency
        lines.append(f"| {n} | {n * NODE_CORES} | {rate:,.0f} | {ARCHIVE / rate / 3600:.2f} |")
    lines.append(END)
    return "\n".join(lines)


def write_section(path: Path, section: str) -> None:
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


if __name__ == "__main__":
    main()
