"""String benchmark: numbers of 1-8 digits composed from MNIST digits (`digitlab.data.synth.numbers`), read by
`digitlab.read` with a trained run. Prints, per subset and length, the share of numbers read exactly
right, digit accuracy, the share marked unsure and the accuracy on what is not, the median time per
number in process, and the latency of /api/read through `digitlab serve RUN --workers 2` with
concurrent clients; writes them into their own section of BENCHMARKS.md (`<!-- numbers -->`).

    .venv/bin/python bench/read_numbers.py RUN [RUN...] [--count 480] [--seed 0] [--clients 8] [--duration 20] [--out BENCHMARKS.md]
    .venv/bin/python bench/read_numbers.py RUN --digits --no-api --out other.md    each number read with its length known
    .venv/bin/python bench/read_numbers.py RUN --tune [--tune-count 240]
    .venv/bin/python bench/read_numbers.py RUN --tune-combined [--tune-count 240]    a line run with digits/
    .venv/bin/python bench/read_numbers.py RUN --methods [--count 480]    each method and the combination, test
    .venv/bin/python bench/read_numbers.py RUN --calibrate [--tune-count 240]    refit the run's rule for numbers
    .venv/bin/python bench/read_numbers.py RUN --coverage [--count 480]    accepted numbers against coverage, test
    .venv/bin/python bench/read_numbers.py RUN --evidence [--tune-count 240]    the rule's evidence compared, validation

Several runs are read on the same numbers and set side by side, each by its own method (a digit run by
segmentation, a line model's run, `--preset numbers`, by its line model); the first is the one timed
through the API and detailed per length. The benchmark's strings are composed from the test split and
used for nothing else. `--tune` composes
the same subsets from the run's validation split (the split `digitlab train` held out, from the run's
config.json) and chooses the constants of preprocess/segment.py and the Scoring of reading.py on them
alone: a sweep of each segmentation constant in turn (the best value kept before the next), then a grid
over the scoring constants; it prints every point and the choice and edits no file. `--tune-combined`
does the same for the combined reader's Combining (a line run holding a digit model), beside each
method alone on the same validation numbers. `--method` reads with another method than the run's own.
`--calibrate` fits a line run's rule for whole numbers on validation numbers, as training's end does
(`digitlab.training.calibrate_numbers`), into the run itself: copy a run first to keep it as it is.
`--coverage` reports, on the test numbers, the accepted numbers' accuracy at the run's threshold and against
coverage, for the run's rule and for the readers' own (into its section `<!-- numbers-coverage -->`).
`--evidence` compares, on validation numbers by 5-fold cross-validation, the rule fitted on each piece
of its evidence alone, on all of it, and on the readers' own confidence.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import itertools
import math
import os
import statistics
import time
from pathlib import Path
from unittest import mock

import numpy as np
from PIL import Image

from _sections import write_section  # bench/_sections.py: this script's directory is on sys.path
from digitlab.data.synth.numbers import LENGTHS, SUBSETS, compose_numbers, score_readings
from digitlab.predict.reading import COMBINING, Combining, combine, read
from digitlab.predict.segmented import SCORING, Scoring, decide, hypotheses
from digitlab.preprocess import segment as segment_module
from digitlab.runs import cpu_name
from latency import free_port, json_request, load, start_server  # the API load tool's pieces

ROOT = Path(__file__).resolve().parents[1]
SECTION = "numbers"
TIMED_LENGTH = 6  # digits: the in-process target is for a number this long
TARGET_MS = 10.0  # in process, a 6-digit number
TARGET_API_P50_MS = 15.0  # through /api/read, one client
TARGET_API_THROUGHPUT = 150.0  # numbers/s through /api/read, --clients 8 and --workers 2
WARMUP_SECONDS = 5.0  # of the same load before the API timing starts
ANCHORS = "ORAND-CAR-A 92.2 % and CAR-B 94.0 % (Zhan et al., ICPR 2018), CVL HDS 84 % (Hochuli et al., 2021)"

# --tune: the values tried for each constant of preprocess/segment.py, swept one at a time in this order
SEGMENT_GRID = {
    "LINE_OVERLAP": (0.3, 0.5, 0.7),
    "FLOAT_DISTANCE": (0.4, 0.6, 0.8),
    "SMALL": (0.6, 0.75, 0.9),
    "TINY": (0.3, 0.4, 0.5),
    "TINY_REACH": (0.1, 0.25, 0.4),
    "MERGE_OVERLAP": (0.3, 0.5, 0.7),
    "CONTAINED": (0.6, 0.7, 0.8, 0.9),
    "MAX_DIGIT_WIDTH": (1.0, 1.15, 1.3, 1.5),
    "TINY_WIDTH": (1.3, 1.6, 1.9),
    "SPLIT_WIDTH": (0.15, 0.25, 0.35),
    "THREE_WIDTH": (1.2, 1.4, 1.7),
    "MIN_PART": (0.05, 0.1, 0.15),
    "MAX_CUTS": (2, 3, 4, 5),
}
# ... then every combination of these for reading.py's Scoring, at the chosen segmentation
SCORING_GRID = {
    "cut_penalty": (0.0, -0.3, -0.7, -1.2, -2.0),
    "wide_penalty": (-1.0, -2.0, -4.0, -8.0),
    "wide_from": (1.0, 1.1, 1.25, 1.4, 1.6),
}
# A value replaces the one in place only when it gets at least this share more of the validation numbers
# exactly right (0.25 percentage points: 4 of the 1,440 numbers at the default --tune-count); smaller
# differences are a few numbers' luck, and the constants in place are what the drawn cases of
# tests/test_read.py (two 1s touching, a 5's detached bar) were written against.
MIN_GAIN = 0.0025
AMBIGUOUS_FACTORS = (1.25, 1.5, 2.0, 3.0, 5.0)  # shown: the unsure share against accepted accuracy


def validation_split(run: Path) -> tuple[np.ndarray, np.ndarray]:
    """The validation images and labels the run was trained beside, split as `digitlab train` split them."""
    from digitlab.config import TrainConfig
    from digitlab.data import run_split
    from digitlab.runs import read_run_config

    split = run_split(TrainConfig.from_dict(read_run_config(run)["train"]))
    return split.x_val, split.y_val


def compose_all(x, y, count: int, seed: int) -> dict[str, list]:
    return {s: compose_numbers(x, y, s, count, seed=seed) for s in SUBSETS}


def figures(numbers: list, texts: list, unsure: list, ms: list | None = None) -> dict:
    out = score_readings([n.text for n in numbers], texts, unsure)
    if ms is not None:
        out["median_ms"] = statistics.median(ms)
    return out


def bench_in_process(predictor, sets: dict[str, list], known: bool = False, method: str | None = None) -> list[dict]:
    """Read every number, timed one by one; rows per subset and length, then per subset ("all"). `known`:
    each with its count of digits given, as `digitlab read --digits N`; `method` as `read --method`."""
    read(predictor, sets[SUBSETS[0]][0].image, method=method)  # warm-up: traces the model
    rows = []
    for subset, numbers in sets.items():
        texts, unsure, ms = [], [], []
        for n in numbers:
            t0 = time.perf_counter()
            count = len(n.text.replace("\n", ""))  # all lines together (a lines number has `length` a line)
            r = read(predictor, n.image, digits=count if known else None, method=method)
            ms.append((time.perf_counter() - t0) * 1e3)
            texts.append(r.text)
            unsure.append(r.unsure)
        for length in sorted({n.length for n in numbers}):
            k = [i for i, n in enumerate(numbers) if n.length == length]
            pick = [numbers[i] for i in k]
            rows.append(
                {
                    "subset": subset,
                    "length": length,
                    **figures(pick, [texts[i] for i in k], [unsure[i] for i in k], [ms[i] for i in k]),
                }
            )
        rows.append({"subset": subset, "length": "all", **figures(numbers, texts, unsure, ms)})
        print(_row_text(rows[-1]), flush=True)
    return rows


def png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def bench_api(run: Path, images: list[np.ndarray], clients: int, workers: int, duration: float) -> dict:
    """`digitlab serve RUN --workers W` (its default runtime) on a free loopback port; one client, then
    CLIENTS, keep-alive connections each posting its own number as a PNG to /api/read back to back (a closed
    loop), as the page sends its pad: JSON {"image": a data: URL}. The clients run on the same cores as the
    server (latency.load: one asyncio loop, about 0.2 ms of CPU a request). Latency in ms, the server's
    CPU ms per request."""
    port = free_port()
    requests = [json_request(port, png(images[i % len(images)]), "/api/read") for i in range(clients)]
    server = start_server(run, port, workers)
    try:
        warm = load(port, requests, clients, 10**9, WARMUP_SECONDS, server.pid, True)  # every worker warm
        if warm["errors"]:
            raise SystemExit(f"/api/read warm-up failed: {warm['first_errors']}")
        one = load(port, requests[:1], 1, 10**9, duration / 2, server.pid)
        many = load(port, requests, clients, 10**9, duration, server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    keys = ("requests", "errors", "first_errors", "throughput", "p50", "p95", "server_cpu_ms", "client_cpu_ms")
    return {
        "clients": clients,
        "workers": workers,
        "one": {k: one[k] for k in keys},
        "many": {k: many[k] for k in keys},
    }


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f} %"


def _row_text(r: dict) -> str:
    return (
        f"{r['subset']:>9} {str(r['length']):>3}: n {r['count']:4d}  exact {_pct(r['string_accuracy']):>7}  "
        f"digits {_pct(r['digit_accuracy']):>7}  unsure {_pct(r['unsure']):>7}  "
        f"accepted {_pct(r['accepted_accuracy']):>7}  {r.get('median_ms', math.nan):5.1f} ms"
    )


def report(args, results: dict[Path, list[dict]], api: dict | None) -> str:
    rows = results[args.runs[0]]
    by = {(r["subset"], r["length"]): r for r in rows}
    timed = statistics.median(r["median_ms"] for r in rows if r["length"] == TIMED_LENGTH)
    lines = [
        "## Reading numbers (`digitlab read`)",
        "",
        f"Written by `.venv/bin/python bench/read_numbers.py {' '.join(['RUN'] * len(args.runs))} --count "
        f"{args.count} --seed {args.seed}{' --digits' if args.digits else ''}` on {time.strftime('%Y-%m-%d')}, "
        f"{'; '.join(f'run `{r}` ({_run_name(r)})' for r in args.runs)}, CPU {cpu_name()}, "
        f"{os.cpu_count()} cores, shared with other work while it ran (load average "
        f"{', '.join(f'{v:.1f}' for v in args.load)} over 1, 5, 15 min at the end; timings vary with the load).",
        "",
        f"{args.count} numbers per subset, composed from the MNIST **test** split (used for nothing else), of 1-8",
        "digits taking turns (`digitlab.data.synth.numbers` says how each subset is made). The constants of the segmentation",
        "and of the scoring are chosen on the same subsets composed from the validation split (`--tune`,",
        "docs/design/reading.md). Exact: the whole text right, every line in order; digits: 1 − edit distance /",
        "length; unsure: the share `read` marks unsure; accepted: exact among those not marked unsure.",
        f"Published string accuracy on real handwriting, for scale: {ANCHORS}.",
        *_comparison(args, results),
        "",
        f"`{args.runs[0]}`:",
        "",
        "| subset | exact | digits | unsure | accepted | exact, 4 digits | median ms |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in SUBSETS:
        a, four = by[(s, "all")], by.get((s, 4))
        lines.append(
            f"| {s} | {_pct(a['string_accuracy'])} | {_pct(a['digit_accuracy'])} | {_pct(a['unsure'])} | "
            f"{_pct(a['accepted_accuracy'])} | {_pct(four and four['string_accuracy'])} | {a['median_ms']:.1f} |"
        )
    lines += [
        "",
        f"In process, a {TIMED_LENGTH}-digit number: **{timed:.1f} ms** median over the subsets (target ≤ "
        f"{TARGET_MS:.0f} ms): `read` from a grey array on {args.runtime}, segmentation, normalisation and "
        "one batched model call (a second for the cuts of digits read unsurely).",
    ]
    if api:
        one, many = api["one"], api["many"]
        lines.append(
            f"Through the API, `digitlab serve RUN --workers {api['workers']}` on 127.0.0.1, keep-alive clients on "
            f"the same cores each posting a {TIMED_LENGTH}-digit number (a PNG data URL in JSON, as the page does) to "
            f"/api/read back to back: one client **p50 {one['p50']:.1f} ms** (target ≤ {TARGET_API_P50_MS:.0f} ms), "
            f"p95 {one['p95']:.1f} ms; {api['clients']} clients **{many['throughput']:.0f} numbers/s** (target ≥ "
            f"{TARGET_API_THROUGHPUT:.0f}), p50 {many['p50']:.1f} ms, p95 {many['p95']:.1f} ms; the server's CPU per "
            f"number {many['server_cpu_ms']:.1f} ms; {one['errors'] + many['errors']} errors."
        )
    lines += [
        "",
        "<details><summary>Per subset and length</summary>",
        "",
        "| subset | digits | numbers | exact | digits right | unsure | accepted | median ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in SUBSETS:
        for n in LENGTHS:
            r = by.get((s, n))
            if r is not None:
                lines.append(
                    f"| {s} | {n} | {r['count']} | {_pct(r['string_accuracy'])} | {_pct(r['digit_accuracy'])} | "
                    f"{_pct(r['unsure'])} | {_pct(r['accepted_accuracy'])} | {r['median_ms']:.1f} |"
                )
    lines += ["", "</details>"]
    return "\n".join(lines)


def _comparison(args, results: dict[Path, list[dict]]) -> list[str]:
    """With several runs: exact share per subset, all lengths and 4 digits, one column pair per run."""
    if len(results) < 2:
        return []
    lines = [
        "",
        "Numbers exactly right, all lengths / 4 digits, by run and the method `read` uses for it:",
        "",
        "| subset | " + " | ".join(f"`{r}` ({_method(r)})" for r in results) + " |",
        "| --- |" + " --- |" * len(results),
    ]
    for s in SUBSETS:
        cells = []
        for rows in results.values():
            by = {(r["subset"], r["length"]): r for r in rows}
            four = by.get((s, 4))
            cells.append(f"{_pct(by[(s, 'all')]['string_accuracy'])} / {_pct(four and four['string_accuracy'])}")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return lines


def _method(run: Path) -> str:
    from digitlab.runs import DIGIT_PART, read_run_config

    if read_run_config(run)["model"].get("architecture") != "line":
        return "segmentation"
    return "combined" if (run / DIGIT_PART).is_dir() else "line model"


def _run_name(run: Path) -> str:
    from digitlab.runs import read_run_config

    train = read_run_config(run)["train"]
    return f"{train.get('epochs')} epochs, validation fraction {train.get('val_fraction')}"


# --- tuning on validation ---------------------------------------------------------------------------


def accuracy(sets: dict[str, list], readings: dict[str, list]) -> dict:
    """Validation figures over all subsets: the mean over subsets of each figure."""
    per = [figures(sets[s], [r.text for r in readings[s]], [r.unsure for r in readings[s]]) for s in sets]
    out = {k: statistics.mean(p[k] for p in per) for k in ("string_accuracy", "digit_accuracy", "unsure")}
    out["per_subset"] = {s: p["string_accuracy"] for s, p in zip(sets, per)}
    return out


def _better(a: dict, b: dict | None, margin: float = 0.0) -> bool:
    """More numbers exactly right by more than `margin`; then, at equal string accuracy, more digits
    right, then fewer unsure."""
    if b is None:
        return True
    if a["string_accuracy"] != b["string_accuracy"]:
        return a["string_accuracy"] > b["string_accuracy"] + margin
    return (a["digit_accuracy"], -a["unsure"]) > (b["digit_accuracy"], -b["unsure"]) and margin == 0.0


def tune(predictor, sets: dict[str, list]) -> tuple[dict, Scoring]:
    """Segmentation constants one at a time (each at its best before the next), then the scoring grid.
    The best value of each sweep, and the grid's best point, replace those in place only when they get
    at least MIN_GAIN more of the numbers exactly right."""

    def looked(overrides: dict) -> dict[str, list]:
        with mock.patch.multiple(segment_module, **overrides):
            return {s: [hypotheses(predictor, n.image) for n in numbers] for s, numbers in sets.items()}

    chosen = {name: getattr(segment_module, name) for name in SEGMENT_GRID}
    print(f"segmentation, swept one constant at a time from {chosen}", flush=True)
    cache = {}
    for name, values in SEGMENT_GRID.items():
        figs = {}
        for v in sorted({chosen[name], *values}, key=lambda v: v != chosen[name]):  # the value in place first
            trial = {**chosen, name: v}
            key = tuple(sorted(trial.items()))
            if key not in cache:
                h = looked(trial)
                cache[key] = (h, accuracy(sets, {s: [decide(x) for x in hs] for s, hs in h.items()}))
            figs[v] = cache[key][1]
            print(f"  {name} = {v}: {_fig(figs[v])}", flush=True)
        best = chosen[name]
        for v, fig in figs.items():
            if _better(fig, figs[best]):
                best = v
        kept = best if _better(figs[best], figs[chosen[name]], MIN_GAIN) else chosen[name]
        print(f"  -> {name} = {kept}" + ("" if kept == best else f" (best {best}, by less than {MIN_GAIN:.2%})"))
        chosen[name] = kept
    seen = cache[tuple(sorted(chosen.items()))][0]
    print("scoring grid at that segmentation (exact / digits / unsure, mean over subsets):", flush=True)
    best_scoring = SCORING
    best_fig = in_place = accuracy(sets, {k: [decide(x, SCORING) for x in hs] for k, hs in seen.items()})
    print(f"  in place, {SCORING}: {_fig(best_fig)}", flush=True)
    for cut, wide, wide_from in itertools.product(*SCORING_GRID.values()):
        s = dataclasses.replace(SCORING, cut_penalty=cut, wide_penalty=wide, wide_from=wide_from)
        fig = accuracy(sets, {k: [decide(x, s) for x in hs] for k, hs in seen.items()})
        print(f"  cut {cut:5.2f}  wide {wide:5.1f}  from {wide_from:4.2f}: {_fig(fig)}", flush=True)
        if _better(fig, best_fig):
            best_scoring, best_fig = s, fig
    if not _better(best_fig, in_place, MIN_GAIN):
        print(f"  (best {best_scoring}: {_fig(best_fig)}, by less than {MIN_GAIN:.2%})")
        best_scoring, best_fig = SCORING, in_place
    print(f"  -> {best_scoring}: {_fig(best_fig)}")
    print(f"     per subset: {', '.join(f'{k} {_pct(v)}' for k, v in best_fig['per_subset'].items())}")
    print("ambiguity margin at that scoring (unsure share against the accuracy of the accepted):")
    for factor in AMBIGUOUS_FACTORS:
        s = dataclasses.replace(best_scoring, ambiguous=math.log(factor))
        readings = {k: [decide(x, s) for x in hs] for k, hs in seen.items()}
        numbers = [n for k in sets for n in sets[k]]
        flat = [r for k in sets for r in readings[k]]
        fig = figures(numbers, [r.text for r in flat], [r.unsure for r in flat])
        print(f"  factor {factor:4.2f}: unsure {_pct(fig['unsure'])}, accepted {_pct(fig['accepted_accuracy'])}")
    return chosen, best_scoring


SEGMENT_BONUSES = (-2.0, 0.0, 1.0, 2.0, 4.0, 8.0, 12.0, 16.0, 1e9)  # --tune-combined: 1e9 is "segmentation when sure"


def compare_methods(predictor, sets: dict[str, list]) -> dict[str, dict[str, dict]]:
    """A line run holding a digit model: every number read once by both methods (`reading.candidates`), and
    figures per subset for the line model alone, segmentation alone and the combination, side by side."""
    from digitlab.predict.reading import candidates, digit_part
    from digitlab.predict.segmented import open_image

    digits = digit_part(predictor)
    if digits is None:
        raise SystemExit("--methods: the run holds no digit model (digits/); train it with --preset numbers")
    out: dict[str, dict[str, dict]] = {"line": {}, "segment": {}, "combined": {}}
    for subset, numbers in sets.items():
        seen = [candidates(predictor, digits, *open_image(n.image)) for n in numbers]
        combined = lambda c: combine(c, COMBINING, None, predictor.numbers)  # noqa: E731
        for name, pick in (("line", lambda c: c.line), ("segment", lambda c: c.segment), ("combined", combined)):
            readings = [pick(c) for c in seen]
            out[name][subset] = figures(numbers, [r.text for r in readings], [r.unsure for r in readings])
        print(f"{subset}: " + ", ".join(f"{k} {_pct(out[k][subset]['string_accuracy'])}" for k in out), flush=True)
    return out


def tune_combined(predictor, sets: dict[str, list]) -> Combining:
    """The combined reader's constants on validation numbers: each method alone, then the segmentation
    bonus (by exact numbers); then, shown, the unsure share and the accepted numbers' accuracy when an
    agreement needs both readers sure or either."""
    from digitlab.predict.reading import candidates, digit_part
    from digitlab.predict.segmented import open_image

    digits = digit_part(predictor)
    seen = {s: [candidates(predictor, digits, *open_image(n.image)) for n in numbers] for s, numbers in sets.items()}
    for name, pick in (("line model alone", lambda c: c.line), ("segmentation alone", lambda c: c.segment)):
        print(f"  {name}: {_fig(accuracy(sets, {k: [pick(c) for c in cs] for k, cs in seen.items()}))}")
        print(
            f"     per subset: {', '.join(f'{k} {_pct(v)}' for k, v in accuracy(sets, {k: [pick(c) for c in cs] for k, cs in seen.items()})['per_subset'].items())}"
        )
    best, best_fig = COMBINING, None
    for bonus in SEGMENT_BONUSES:
        c = dataclasses.replace(COMBINING, segment_bonus=bonus)
        fig = accuracy(sets, {k: [combine(x, c) for x in cs] for k, cs in seen.items()})
        print(f"  segment_bonus {bonus:g}: {_fig(fig)}", flush=True)
        if _better(fig, best_fig):
            best, best_fig = c, fig
    print(f"  -> {best}: {_fig(best_fig)}")
    print(f"     per subset: {', '.join(f'{k} {_pct(v)}' for k, v in best_fig['per_subset'].items())}")
    numbers = [n for k in sets for n in sets[k]]
    for both in (True, False):
        c = dataclasses.replace(best, both_sure=both)
        flat = [combine(x, c) for k in sets for x in seen[k]]
        fig = figures(numbers, [r.text for r in flat], [r.unsure for r in flat])
        print(f"  both_sure {both}: unsure {_pct(fig['unsure'])}, accepted {_pct(fig['accepted_accuracy'])}")
    return best


COVERAGES = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0)  # --coverage: the most confident share accepted
TARGET_ACCEPTED = 0.99  # accepted numbers exactly right (issue: at TARGET_COVERAGE or more)
TARGET_COVERAGE = 0.90


def coverage_figures(predictor, sets: dict[str, list]) -> dict:
    """Every test number read once by both readers (`reading.candidates`), and judged by the run's rule
    (`reading.combine` with predictor.numbers) and by the readers' own (without it): per rule, the
    confidences, rightness, unsure flags and subsets, over all subsets."""
    from digitlab.predict.reading import candidates, digit_part
    from digitlab.predict.segmented import open_image

    digits = digit_part(predictor)
    if digits is None:
        raise SystemExit("--coverage: the run holds no digit model (digits/); train it with --preset numbers")
    if predictor.numbers is None:
        raise SystemExit("--coverage: the run's calibration.json holds no rule for numbers; fit it with --calibrate")
    out = {name: {"confidence": [], "right": [], "unsure": [], "subset": []} for name in ("rule", "readers")}
    for subset, numbers in sets.items():
        for n in numbers:
            seen = candidates(predictor, digits, *open_image(n.image))
            for name, rule in (("rule", predictor.numbers), ("readers", None)):
                r = combine(seen, COMBINING, None, rule)
                o = out[name]
                o["confidence"].append(r.confidence or 0.0)
                o["right"].append(r.text == n.text)
                o["unsure"].append(r.unsure)
                o["subset"].append(subset)
        print(f"{subset}: read", flush=True)
    return {k: {f: np.array(v) for f, v in o.items()} for k, o in out.items()}


def accepted_at(confidence: np.ndarray, right: np.ndarray) -> tuple[list[float], float]:
    """The accuracy of the most confident share at each of COVERAGES, and the largest share at least
    TARGET_ACCEPTED right."""
    order = np.argsort(-confidence, kind="stable")
    accuracy = np.cumsum(right[order]) / np.arange(1, len(right) + 1)
    at = [float(accuracy[max(int(np.ceil(c * len(right))), 1) - 1]) for c in COVERAGES]
    ok = np.flatnonzero(accuracy >= TARGET_ACCEPTED)
    return at, (int(ok[-1]) + 1) / len(right) if ok.size else 0.0


def compare_evidence(predictor, sets: dict[str, list]) -> None:
    """Validation numbers read once; a logistic rule (calibrate.fit_numbers' model) fitted by 5-fold
    cross-validation on each feature of reading.number_features alone, on all of them, and on the readers'
    own confidence: AUROC, coverage at TARGET_ACCURACY and the share right at TARGET_COVERAGE."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from digitlab.calibrate import NUMBER_C, TARGET_ACCURACY
    from digitlab.predict.reading import NUMBER_FEATURES, candidates, digit_part, number_features
    from digitlab.predict.segmented import open_image

    digits = digit_part(predictor)
    rows, right = [], []
    for numbers in sets.values():
        for n in numbers:
            seen = candidates(predictor, digits, *open_image(n.image))
            chosen = combine(seen)
            if chosen.text is not None:
                rows.append([*number_features(seen, chosen), math.log(max(chosen.confidence or 0.0, 1e-300))])
                right.append(chosen.text == n.text)
    x, right = np.array(rows), np.array(right)
    print(f"{len(right)} validation numbers, {100 * right.mean():.1f} % right; 5-fold cross-validation:")
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    names = [*NUMBER_FEATURES, "readers' confidence (log)"]
    for label, cols in [
        *((name, [k]) for k, name in enumerate(names)),
        ("all of the rule's", list(range(len(NUMBER_FEATURES)))),
    ]:
        model = make_pipeline(StandardScaler(), LogisticRegression(C=NUMBER_C, max_iter=1000))
        p = cross_val_predict(model, x[:, cols], right, cv=folds, method="predict_proba")[:, 1]
        order = np.argsort(-p, kind="stable")
        accuracy = np.cumsum(right[order]) / np.arange(1, len(right) + 1)
        ok = np.flatnonzero(accuracy >= TARGET_ACCURACY)
        print(
            f"  {label:26s} AUROC {roc_auc_score(right, p):.3f}  coverage at {100 * TARGET_ACCURACY:.1f} % right "
            f"{_pct((ok[-1] + 1) / len(right) if ok.size else 0.0)}  right at {100 * TARGET_COVERAGE:.0f} % "
            f"{_pct(accuracy[int(np.ceil(TARGET_COVERAGE * len(right))) - 1])}"
        )


def coverage_report(args, figs: dict) -> str:
    from digitlab.runs import read_json

    rule = read_json(args.runs[0] / "calibration.json")["numbers"]
    lines = [
        "## Accepted numbers against coverage (the combined reader's rule)",
        "",
        f"Written by `.venv/bin/python bench/read_numbers.py RUN --coverage --count {args.count} --seed {args.seed}` "
        f"on {time.strftime('%Y-%m-%d')}, run `{args.runs[0]}`, CPU {cpu_name()}, {os.cpu_count()} cores, shared "
        f"with other work. {args.count} test numbers per subset, as above; the rule (calibration.json's "
        f'"numbers", `reading.judge`) was fitted on {rule["fitted_on"]}: validation AUROC {rule["auroc"]:.3f}, '
        f"threshold {rule['threshold']:.3f}, {100 * rule['validation_coverage']:.1f} % of them accepted, "
        f"{100 * rule['validation_accepted_accuracy']:.2f} % of those right.",
        "",
        "| rule | accepted | accepted right | coverage at ≥ 99 % right | "
        + " | ".join(f"right at {100 * c:.0f} %" for c in COVERAGES)
        + " |",
        "| --- |" + " --- |" * (3 + len(COVERAGES)),
    ]
    names = {"rule": "the run's rule for numbers", "readers": "the readers' own (agreement, both sure)"}
    for name, f in figs.items():
        accepted = ~f["unsure"]
        at, reach = accepted_at(f["confidence"], f["right"])
        lines.append(
            f"| {names[name]} | {_pct(accepted.mean())} | {_pct(f['right'][accepted].mean())} | {_pct(reach)} | "
            + " | ".join(_pct(v) for v in at)
            + " |"
        )
    f = figs["rule"]
    lines += ["", "Per subset, the run's rule: accepted / accepted right.", ""]
    lines.append("| " + " | ".join(SUBSETS) + " |")
    lines.append("|" + " --- |" * len(SUBSETS))
    cells = []
    for s in SUBSETS:
        k = (f["subset"] == s) & ~f["unsure"]
        cells.append(f"{_pct(k.sum() / (f['subset'] == s).sum())} / {_pct(f['right'][k].mean() if k.any() else None)}")
    lines.append("| " + " | ".join(cells) + " |")
    at, reach = accepted_at(f["confidence"], f["right"])
    met = reach >= TARGET_COVERAGE
    lines += [
        "",
        f"Target: accepted numbers ≥ {100 * TARGET_ACCEPTED:.0f} % exactly right at ≥ {100 * TARGET_COVERAGE:.0f} % "
        f"coverage: {'met' if met else 'missed'}; the most confident {100 * TARGET_COVERAGE:.0f} % are "
        f"{_pct(at[COVERAGES.index(TARGET_COVERAGE)])} right, and {_pct(reach)} of the numbers can be accepted "
        f"at ≥ {100 * TARGET_ACCEPTED:.0f} %. Load average {', '.join(f'{v:.1f}' for v in os.getloadavg())}.",
    ]
    return "\n".join(lines)


def _fig(f: dict) -> str:
    return f"exact {100 * f['string_accuracy']:.2f} %  digits {_pct(f['digit_accuracy'])}  unsure {_pct(f['unsure'])}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "runs", type=Path, nargs="+", metavar="RUN", help="run directories made by `digitlab train`; the first is timed"
    )
    parser.add_argument("--count", type=int, default=480, help="numbers per subset (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the composed numbers (default %(default)s)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent /api/read clients (default %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="digitlab serve --workers (default %(default)s)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of API load (default %(default)s)")
    parser.add_argument("--no-api", action="store_true", help="skip the API latency")
    parser.add_argument(
        "--digits", action="store_true", help="read each number with its count of digits known (read --digits N)"
    )
    parser.add_argument("--tune", action="store_true", help="choose the constants on validation strings instead")
    parser.add_argument(
        "--tune-combined", action="store_true", help="choose the combined reader's constants on validation strings"
    )
    parser.add_argument(
        "--methods", action="store_true", help="a line run with digits/: each method alone and combined, test numbers"
    )
    parser.add_argument("--method", default=None, help="segment, line or combined: as `read --method`")
    parser.add_argument(
        "--calibrate", action="store_true", help="refit a line run's rule for numbers on validation numbers, in place"
    )
    parser.add_argument(
        "--coverage", action="store_true", help="accepted test numbers against coverage, by the run's rule"
    )
    parser.add_argument(
        "--evidence", action="store_true", help="the rule for numbers' evidence compared on validation numbers"
    )
    parser.add_argument(
        "--tune-count", type=int, default=240, help="validation numbers per subset (default %(default)s)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md", help="report to update")
    args = parser.parse_args()
    from digitlab.predict import load_predictor

    if args.calibrate:
        from digitlab.training import calibrate_numbers

        metrics = calibrate_numbers(args.runs[0], per_subset=args.tune_count, seed=args.seed)
        if metrics is None:
            raise SystemExit(f"--calibrate: {args.runs[0]} is not a line run holding a digit model (digits/)")
        rule = metrics["calibration"]["numbers"]
        print({k: v for k, v in rule.items() if k not in ("threshold_rule",)})
        return
    predictor = load_predictor(args.runs[0], runtime=None)  # as `digitlab read` chooses: ONNX where exported
    args.runtime = predictor.runtime
    if args.evidence:
        x_val, y_val = validation_split(args.runs[0])
        compare_evidence(predictor, compose_all(x_val, y_val, args.tune_count, args.seed))
        return
    if args.tune_combined:
        x_val, y_val = validation_split(args.runs[0])
        print(f"validation split: {len(y_val)} digits; {args.tune_count} numbers per subset", flush=True)
        print(
            f"chosen on validation: {tune_combined(predictor, compose_all(x_val, y_val, args.tune_count, args.seed))}"
        )
        return
    if args.tune:
        if _method(args.runs[0]) != "segmentation":
            raise SystemExit(f"--tune: {args.runs[0]} is a line model's run; the constants tuned are segmentation's")
        x_val, y_val = validation_split(args.runs[0])
        print(f"validation split: {len(y_val)} digits; {args.tune_count} numbers per subset", flush=True)
        segmentation, scoring = tune(predictor, compose_all(x_val, y_val, args.tune_count, args.seed))
        print(f"chosen on validation: {segmentation}, {scoring}")
        return
    from digitlab.data import load_dataset

    ds = load_dataset("mnist")
    sets = compose_all(ds.x_test, ds.y_test, args.count, args.seed)
    print(f"CPU {cpu_name()}, {os.cpu_count()} cores; {args.count} test numbers per subset", flush=True)
    if args.coverage:
        section = coverage_report(args, coverage_figures(predictor, sets))
        print(section)
        write_section(args.out, "numbers-coverage", section)
        print(f"wrote its section of {args.out}")
        return
    if args.methods:
        figs = compare_methods(predictor, sets)
        print("| method | " + " | ".join(SUBSETS) + " | accepted (unsure) |")
        for name, per in figs.items():
            flat = [per[s]["accepted_accuracy"] or 0.0 for s in SUBSETS]
            unsure = statistics.mean(per[s]["unsure"] for s in SUBSETS)
            cells = " | ".join(_pct(per[s]["string_accuracy"]) for s in SUBSETS)
            print(f"| {name} | {cells} | {_pct(statistics.mean(flat))} ({_pct(unsure)}) |")
        print(f"load average {os.getloadavg()}")
        return
    results = {args.runs[0]: bench_in_process(predictor, sets, args.digits, args.method)}
    for run in args.runs[1:]:
        print(f"{run}:", flush=True)
        results[run] = bench_in_process(load_predictor(run), sets, args.digits)
    api = None
    if not args.no_api:
        six = [n.image for n in sets["separated"] if n.length == TIMED_LENGTH]
        api = bench_api(args.runs[0], six, args.clients, args.workers, args.duration)
        print(f"/api/read: {api}", flush=True)
    for r in results[args.runs[0]]:
        print(_row_text(r))
    args.load = os.getloadavg()
    section = report(args, results, api)
    print(section)
    write_section(args.out, SECTION, section)
    print(f"wrote its section of {args.out}")


if __name__ == "__main__":
    main()
