"""Adaptation benchmark: simulated writers, each taught to a run with `digitlab.adapt` on k samples per digit.

    .venv/bin/python bench/adapt.py --run runs/robust [--writers 20] [--ks 1,3,5,10] [--out BENCHMARKS.md]
    .venv/bin/python bench/adapt.py --run runs/robust --tune     # the recipe's choice, on tuning writers

A writer is a consistent style drawn into MNIST *validation* digits (never the test set) with the wild
set's renderer (digitlab.data.synth.wild): glyph habits drawn into the digit (a 1 with a flag and a foot,
a crossed 7, a 4 open at the top, a slashed 0, each habit taken by a writer at random), a strong
personal slant and rotation, one pen width, and one smooth elastic field bending all of the writer's
digits the same way; dark ink on light paper, as a person's image. Each image goes through
`digitlab.preprocess` as a user's does.

For each writer: the base run's accuracy on the writer's evaluation digits; then for each k, the run
adapted on the first k samples per digit the preprocessing accepts (a person would draw a refused one
again), its accuracy on the writer's *other* digits (never shown to adapt), its accepted accuracy and
coverage there under its new calibration, its MNIST test accuracy (forgetting), and the seconds the
adaptation took. `--tune` instead adapts tuning writers (other seeds) with each candidate recipe at
k = 5 and reports the writers' error and the MNIST *validation* accuracy: the recipe is chosen there,
never on the benchmark's writers or the test set.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage as ndi

from _sections import write_section  # bench/ is on sys.path when a bench script runs
from benchmark import command_line, machine  # the same headings as the speed benchmark
from digitlab import runs
from digitlab.config import TrainConfig
from digitlab.data import load_dataset, run_split
from digitlab.data.synth import wild
from digitlab.data.synth.lines import make_lines
from digitlab.data.synth.render import on_paper
from digitlab.plots import plot_gallery
from digitlab.predict import load_predictor
from digitlab.predict.ctc import greedy_decode
from digitlab.preprocess import preprocess
from digitlab.training.adapt import LINE_RECIPE, RECIPE, LineSamples, adapt
from digitlab.training.tasks import truths
from robustness import preset_of  # the preset a run was trained with

ROOT = Path(__file__).resolve().parent.parent
SECTION = "adapt"
LINE_SECTION = "adapt-lines"  # a line run's figures (bench/adapt.py --run LINE_RUN)
NUMBERS = 30  # numbers a writer gives a line run
LINE_EVALUATE = 150  # the writer's other numbers, made of digits the samples do not hold
LINE_DIGITS = 6  # numbers of 1 to this many digits
TEST_LINES = 500  # lines of MNIST test digits, for forgetting
PLOT = ROOT / "docs" / "images" / "adapt.png"
ERRORS = ROOT / "docs" / "images" / "adapt-errors.png"  # what the adapted runs still misread
ERRORS_PER_WRITER = 6  # of each writer's misread digits, the first this many are drawn
KS = (1, 3, 5, 10)
POOL = 12  # samples drawn per digit and writer, of which the first k the preprocessing accepts are used
EVALUATE = 30  # the writer's other digits per digit class
TUNING_SEED = 1000  # tuning writers' seeds start here; the benchmark's writers are 0, 1, 2, ...
# The recipes --tune compares: changes to the default recipe (fields of digitlab.training.adapt.Recipe).
START = RECIPE
CANDIDATES = {
    "default": {},
    "no held-out folds": {"writer_folds": 0},
    "3 held-out folds": {"writer_folds": 3},
    "300 steps": {"steps": 300},
    "all 3e-4": {"layers": "all", "learning_rate": 3e-4},
    "all 3e-4 300 steps": {"layers": "all", "learning_rate": 3e-4, "steps": 300},
    "head 3e-3": {"learning_rate": 3e-3},
    "elastic 4": {"elastic": 4.0},
    "prototypes 0.5": {"prototypes": 0.5},
    "prototypes 1": {"prototypes": 1.0},
    "prototypes 0.5 50 steps": {"prototypes": 0.5, "steps": 50},
    "prototypes 0.5 all layers": {"prototypes": 0.5, "layers": "all"},
}
# A writer's style: ranges each writer draws from once.
SLANT = (0.3, 0.6)  # px sideways per px of height, either way: stronger than most of MNIST's writers
ROTATION = (0.0, 10.0)  # degrees, either way
PENS = ((2.0, 4.0), (10.0, 16.0))  # px on the 100 px digit: a fine pen or a felt tip
ELASTIC = (6.0, 10.0)  # px, the largest displacement of the writer's field on the 160 px canvas
ELASTIC_SIGMA = 20.0  # px, smoothness of the field: it bends whole strokes, not their edges
HABIT_SHARE = 0.7  # each glyph habit is taken by this share of writers
JITTER = 0.04  # per-digit slant jitter around the writer's, px per px
OPEN_TOP = 0.35  # share of an open 4's height above its left arm


@dataclasses.dataclass(frozen=True)
class Writer:
    seed: int
    slant: float
    rotation: float
    pen: float
    field: np.ndarray  # (2, SIDE, SIDE) displacement, px
    habits: tuple[str, ...]
    paper: float
    ink: float


def make_writer(seed: int) -> Writer:
    rng = np.random.default_rng([seed, 30])
    field = ndi.gaussian_filter(rng.uniform(-1, 1, (2, wild.SIDE, wild.SIDE)), (0, ELASTIC_SIGMA, ELASTIC_SIGMA))
    field *= rng.uniform(*ELASTIC) / np.abs(field).max()
    habits = tuple(h for h in ("flagged 1", "crossed 7", "open 4", "slashed 0") if rng.random() < HABIT_SHARE)
    return Writer(
        seed=seed,
        slant=float(rng.uniform(*SLANT) * rng.choice((-1, 1))),
        rotation=float(rng.uniform(*ROTATION) * rng.choice((-1, 1))),
        pen=float(rng.uniform(*PENS[rng.integers(2)])),
        field=field.astype(np.float32),
        habits=habits,
        paper=float(rng.uniform(200, 250)),
        ink=float(rng.uniform(10, 80)),
    )


def _habit(cover: np.ndarray, digit: int, habits: tuple[str, ...]) -> np.ndarray:
    """The writer's glyph habit for `digit` drawn into its centred cover (ink 0-1), in strokes placed by the
    digit's own ink box; the pen later traces them as it traces the digit."""
    ink = cover > 0.5
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    if not len(rows):
        return cover
    r0, r1, c0, c1 = rows[0], rows[-1], cols[0], cols[-1]
    h = r1 - r0
    image = Image.fromarray((cover * 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    width = 11  # px, about a stroke of the 100 px digit

    def centre_col(r: int) -> float:
        found = np.flatnonzero(ink[r])
        return float(found.mean()) if len(found) else (c0 + c1) / 2

    if digit == 1 and "flagged 1" in habits:
        top = centre_col(r0)
        draw.line([(top, r0), (top - 0.35 * h, r0 + 0.3 * h)], fill=255, width=width)
        bottom = centre_col(r1)
        draw.line([(bottom - 0.25 * h, r1), (bottom + 0.25 * h, r1)], fill=255, width=width)
    elif digit == 7 and "crossed 7" in habits:
        r = int(r0 + 0.55 * h)
        mid = centre_col(r)
        draw.line([(mid - 0.22 * h, r), (mid + 0.22 * h, r)], fill=255, width=width)
    elif digit == 4 and "open 4" in habits:
        # Open at the top: the top OPEN_TOP of the 4 keeps only its stem (the stroke its foot stands on), so
        # its left arm starts lower and never meets the stem, closed or nearly so in most of MNIST's 4s.
        stem = centre_col(r1)
        top = int(r0 + OPEN_TOP * h)
        opened = cover.copy()
        opened[r0:top, : max(0, int(stem - width))] = 0.0
        return opened
    elif digit == 0 and "slashed 0" in habits:
        draw.line([(c0 + 0.1 * (c1 - c0), r1 - 0.05 * h), (c1 - 0.1 * (c1 - c0), r0 + 0.05 * h)], fill=255, width=width)
    return np.maximum(cover, np.asarray(image, np.float32) / 255.0)


def draw_digits(writer: Writer, x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """MNIST digits (n, 28, 28) and labels -> (n, SIDE, SIDE) uint8 images in the writer's hand."""
    rng = np.random.default_rng([writer.seed, seed])
    covers = wild._centred([wild._crop(d) for d in x.astype(np.float32) / 255.0])  # the wild set's drawing
    side = wild.SIDE
    grid = np.mgrid[0:side, 0:side].astype(np.float32) - side / 2
    out = np.empty((len(x), side, side), np.uint8)
    for i, (cover, digit) in enumerate(zip(covers, y)):
        cover = _habit(cover, int(digit), writer.habits)
        slant = writer.slant + rng.normal(0, JITTER)
        angle = np.radians(writer.rotation + rng.normal(0, 2.0))
        c, s = np.cos(angle), np.sin(angle)
        rows, cols = grid
        # Inverse map: each output pixel reads the source unrotated, unslanted, then moved by the field.
        src_cols = c * cols + s * rows + slant * rows + side / 2 + writer.field[1]
        src_rows = -s * cols + c * rows + side / 2 + writer.field[0]
        bent = ndi.map_coordinates(cover, [src_rows, src_cols], order=1, mode="constant")
        out[i] = on_paper(wild._pen(bent, writer.pen * (1 + rng.normal(0, 0.05))), writer.paper, writer.ink)
    return out


@dataclasses.dataclass
class Hand:
    """A writer's samples and evaluation digits, preprocessed."""

    pool: list[list[tuple[np.ndarray, np.ndarray]]]  # per digit: (image, preprocessed) the preprocessing accepts
    digits: np.ndarray  # evaluation digits, preprocessed
    labels: np.ndarray
    refused: int  # evaluation images the preprocessing refused (not counted)


def hand(writer: Writer, x_val: np.ndarray, y_val: np.ndarray) -> Hand:
    rng = np.random.default_rng([writer.seed, 31])
    chosen = np.concatenate([rng.choice(np.flatnonzero(y_val == k), POOL + EVALUATE, replace=False) for k in range(10)])
    images = draw_digits(writer, x_val[chosen], y_val[chosen], seed=32)
    pre = [preprocess(image) for image in images]
    pool: list[list] = [[] for _ in range(10)]
    digits, labels, refused = [], [], 0
    for j, (image, p) in enumerate(zip(images, pre)):
        k, sample = divmod(j, POOL + EVALUATE)
        if sample < POOL:
            if p.reason is None:
                pool[k].append((image, p.digit))
        elif p.reason is None:
            digits.append(p.digit)
            labels.append(k)
        else:
            refused += 1
    return Hand(pool, np.stack(digits), np.array(labels), refused)


def write_samples(pool, k: int, folder: Path) -> Path:
    for digit, samples in enumerate(pool):
        (folder / str(digit)).mkdir(parents=True, exist_ok=True)
        for i, (image, _) in enumerate(samples[:k]):
            Image.fromarray(image).save(folder / str(digit) / f"{i}.png")
    return folder


def scores(run: Path, digits: np.ndarray, labels: np.ndarray) -> dict:
    predictor = load_predictor(run)
    probs = predictor.predict_proba(digits)
    right = probs.argmax(1) == labels
    accepted = probs.max(1) >= predictor.threshold
    return {
        "accuracy": float(right.mean()),
        "errors_by_digit": np.bincount(labels[~right], minlength=10).tolist(),
        "coverage": float(accepted.mean()),
        "accepted_right": int(right[accepted].sum()),
        "accepted": int(accepted.sum()),
    }


def mistakes(run: Path, h: Hand, writer: int) -> list[tuple[np.ndarray, str]]:
    """The first ERRORS_PER_WRITER of the writer's other digits the run misreads: (digit as the model sees it,
    caption)."""
    probs = load_predictor(run).predict_proba(h.digits)
    wrong = np.flatnonzero(probs.argmax(1) != h.labels)[:ERRORS_PER_WRITER]
    return [(h.digits[i], f"w{writer}: {h.labels[i]} as {probs[i].argmax()} {probs[i].max():.2f}") for i in wrong]


def test_accuracy(run: Path, x_test: np.ndarray, y_test: np.ndarray) -> float:
    return float(np.mean(load_predictor(run).raw_proba(x_test).argmax(1) == y_test))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="the base digit run")
    parser.add_argument("--writers", type=int, default=20)
    parser.add_argument(
        "--writers-seed",
        type=int,
        default=0,
        help=f"the first writer's seed: 0 for the benchmark's writers; {TUNING_SEED} and up are the tuning writers, "
        "on which a recipe is chosen (--tune) and checked whole (this command with --writers-seed)",
    )
    parser.add_argument(
        "--ks", default=",".join(map(str, KS)), help="samples per digit, comma-separated, in the order run"
    )
    parser.add_argument("--tune", action="store_true", help="compare the candidate recipes on tuning writers")
    parser.add_argument("--candidates", default=",".join(CANDIDATES), help="--tune: the recipes, comma-separated")
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--plot", type=Path, default=PLOT)
    parser.add_argument(
        "--errors",
        type=Path,
        default=ERRORS,
        help="draw here the writers' other digits the runs adapted on 5 samples per digit still misread (with 5 in --ks)",
    )
    parser.add_argument("--rows", type=Path, help="also write each writer's figures here as JSON, after every writer")
    parser.add_argument(
        "--from-rows",
        type=Path,
        nargs="+",
        help="write the section and the plot from the --rows files of earlier runs on the same writers with other "
        "--ks (run side by side), without adapting again",
    )
    args = parser.parse_args(argv)
    if args.from_rows:
        return merge_rows(args)
    config = runs.read_run_config(args.run)
    split = run_split(TrainConfig.from_dict(config["train"]))
    work = Path(tempfile.mkdtemp(prefix="digitlab-adapt-"))
    if config["model"].get("architecture") == "line":
        return line_tune(args, split, work) if args.tune else line_writers(args, split, work)
    if args.tune:
        return tune(args, split, work)
    ks = tuple(int(k) for k in args.ks.split(","))
    test = load_dataset("mnist")
    base_test = test_accuracy(args.run, test.x_test, test.y_test)
    rows, misread = [], []
    for w in range(args.writers_seed, args.writers_seed + args.writers):
        writer = make_writer(w)
        h = hand(writer, split.x_val, split.y_val)
        row = {"writer": w, "habits": writer.habits, "base": scores(args.run, h.digits, h.labels), "k": {}}
        for k in ks:
            out = work / f"w{w}-k{k}"
            started = time.perf_counter()
            adapt(args.run, write_samples(h.pool, k, work / f"samples-w{w}-k{k}"), out, seed=w)
            seconds = time.perf_counter() - started
            row["k"][k] = {
                **scores(out, h.digits, h.labels),
                "test": test_accuracy(out, test.x_test, test.y_test),
                "seconds": seconds,
            }
            if k == 5:  # the target: what is left of the errors there
                misread += mistakes(out, h, w)
        rows.append(row)
        print(
            f"writer {w} {'/'.join(writer.habits) or 'no habits'}: base {row['base']['accuracy']:.3f} "
            + " ".join(f"k={k} {r['accuracy']:.3f} ({r['seconds']:.0f} s)" for k, r in row["k"].items()),
            flush=True,
        )
        plot(rows, tuple(sorted(ks)), args.plot)
        if misread:
            images, captions = zip(*misread)
            title = "writers' other digits still misread after adapting on 5 samples per digit"
            plot_gallery(np.stack(images), list(captions), args.errors, title, cols=ERRORS_PER_WRITER * 2)
        # after every writer: an interrupted run keeps them
        body = section(args, rows, tuple(sorted(ks)), base_test, args.errors if misread else None)
        write_section(args.out, SECTION, body)
        if args.rows:
            args.rows.write_text(json.dumps(rows, indent=1, default=str))
    print(body)
    return 0


def merge_rows(args) -> int:
    """The section and the plot from several --rows files: each writer's figures for every k they hold."""
    merged: dict[int, dict] = {}
    for path in args.from_rows:
        for row in json.loads(path.read_text()):
            ks = {int(k): r for k, r in row["k"].items()}
            merged.setdefault(row["writer"], {**row, "k": {}})["k"].update(ks)
    rows = [merged[w] for w in sorted(merged)]
    ks = sorted(set.intersection(*(set(r["k"]) for r in rows)))
    test = load_dataset("mnist")
    errors = args.errors if 5 in ks and args.errors.is_file() else None  # drawn by the run that adapted k = 5
    body = section(args, rows, tuple(ks), test_accuracy(args.run, test.x_test, test.y_test), errors)
    plot(rows, tuple(ks), args.plot)
    write_section(args.out, SECTION, body)
    print(body)
    return 0


def section(args, rows: list[dict], ks: tuple[int, ...], base_test: float, errors: Path | None = None) -> str:
    base_error = [1 - r["base"]["accuracy"] for r in rows]
    lines = [
        "## Adaptation: teaching a run a writer (`digitlab adapt`)",
        "",
        f"`{command_line()}`",
        "",
        machine(),
        "",
        f"{len(rows)} of {args.writers} simulated writers{_which(args)} (bench/adapt.py: glyph habits, slant, pen and an elastic field drawn into "
        f"MNIST validation digits), {EVALUATE} evaluation digits per digit each; the base run is "
        f"`{args.run}` (preset: {preset_of(runs.read_run_config(args.run))}), its MNIST test accuracy "
        f"{base_test:.2%}. Mean over writers; *other digits* are the "
        "writer's digits adapt never saw; *accepted* are those the adapted run's calibration accepts.",
        "",
        "| samples per digit | error on other digits | error halved (writers) | accepted right | coverage "
        "| MNIST test accuracy | seconds per adaptation |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| 0 (base run) | {statistics.mean(base_error):.2%} | - | "
        f"{_accepted(r['base'] for r in rows)} | {statistics.mean(r['base']['coverage'] for r in rows):.1%} "
        f"| {base_test:.2%} | - |",
    ]
    for k in ks:
        got = [r["k"][k] for r in rows]
        error = [1 - g["accuracy"] for g in got]
        halved = sum(e <= b / 2 for e, b in zip(error, base_error))
        lines.append(
            f"| {k} | {statistics.mean(error):.2%} | {halved} of {len(rows)} | {_accepted(got)} "
            f"| {statistics.mean(g['coverage'] for g in got):.1%} | {statistics.mean(g['test'] for g in got):.2%} "
            f"| {statistics.median(g['seconds'] for g in got):.1f} (median), {max(g['seconds'] for g in got):.1f} (max) |"
        )
    lines += ["", f"![accuracy against samples per digit]({_shown(args.plot)})", ""]
    lines += by_digit(rows, ks)
    if errors is not None:
        lines += [f"![digits the adapted runs still misread]({_shown(errors)})", ""]
    lines.append(
        "Seconds are wall-clock per `adapt` call in one process (TensorFlow already loaded; the wild calibration "
        "digits drawn once, then cached), on a CPU shared with other work."
    )
    if 5 in ks:  # the targets, at 5 samples per digit
        got = [r["k"][5] for r in rows]
        error = statistics.mean(1 - g["accuracy"] for g in got)
        test = statistics.mean(g["test"] for g in got)
        lines += [
            "",
            f"Targets at k = 5: the error on the writers' other digits falls by {1 - error / statistics.mean(base_error):.0%} "
            f"on average (target: halved); MNIST test accuracy {100 * (test - base_test):+.2f} points from the base run "
            f"(target: within 0.1); accepted digits of the writers {_accepted(got)} right (target: 99.5 %).",
        ]
    return "\n".join(lines)


def _shown(path: Path) -> Path:
    """A figure's path as the section links it: relative to the repository when inside it."""
    path = path.resolve()
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def by_digit(rows: list[dict], ks: tuple[int, ...]) -> list[str]:
    """The writers' errors on their other digits, all writers together, by the digit written: which of them
    adapting removes (the glyph habits' digits) and which it leaves. Rows written before the count was kept
    have none: no table."""
    if not all("errors_by_digit" in r["base"] and all("errors_by_digit" in r["k"][k] for k in ks) for r in rows):
        return []
    counts = [("0 (base run)", [r["base"] for r in rows])] + [(str(k), [r["k"][k] for r in rows]) for k in ks]
    lines = [
        "Errors on the writers' other digits, all writers together, by the digit written "
        f"(up to {EVALUATE * len(rows)} of each):",
        "",
        "| samples per digit | " + " | ".join(map(str, range(10))) + " | all |",
        "| --- " * 12 + "|",
    ]
    for label, got in counts:
        errors = np.sum([g["errors_by_digit"] for g in got], axis=0)
        lines.append(f"| {label} | " + " | ".join(str(int(e)) for e in errors) + f" | {int(errors.sum())} |")
    return [*lines, ""]


def _which(args) -> str:
    """Which writers, when they are not the benchmark's own (seeds 0 and up)."""
    if not args.writers_seed:
        return ""
    kind = ", tuning writers" if args.writers_seed >= TUNING_SEED else ""
    return f" (seeds {args.writers_seed}-{args.writers_seed + args.writers - 1}{kind})"


def _accepted(results) -> str:
    results = list(results)
    right, accepted = sum(r["accepted_right"] for r in results), sum(r["accepted"] for r in results)
    return f"{right / accepted:.2%}" if accepted else "-"


def plot(rows: list[dict], ks: tuple[int, ...], path: Path) -> None:
    import matplotlib  # heavy: only when the figure is drawn

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    xs = (0, *ks)
    for r in rows:
        ax.plot(xs, [r["base"]["accuracy"], *(r["k"][k]["accuracy"] for k in ks)], color="0.8", lw=0.8)
    means = [statistics.mean(r["base"]["accuracy"] for r in rows)]
    means += [statistics.mean(r["k"][k]["accuracy"] for r in rows) for k in ks]
    tests = [statistics.mean(r["k"][k]["test"] for r in rows) for k in ks]
    ax.plot(xs, means, "o-", color="C0", label="writer's other digits (mean)")
    ax.plot(ks, tests, "s--", color="C1", label="MNIST test (mean)")
    ax.set_xlabel("samples per digit (0: the base run)")
    ax.set_ylabel("accuracy")
    ax.set_xticks(xs)
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")


def tune(args, split, work: Path) -> int:
    """Each candidate recipe on `--writers` tuning writers at k = 5: the writers' error and MNIST validation
    accuracy (metrics.json's, the adapted run's own validation pass)."""
    hands = [hand(make_writer(TUNING_SEED + w), split.x_val, split.y_val) for w in range(args.writers)]
    base = [1 - scores(args.run, h.digits, h.labels)["accuracy"] for h in hands]
    base_val = runs.read_json(args.run / runs.METRICS)["validation"]["accuracy"]
    print(f"base: writers' error {statistics.mean(base):.4f}, validation accuracy {base_val:.4f}")
    for name in args.candidates.split(","):
        recipe = dataclasses.replace(START, **CANDIDATES[name])
        errors, vals, seconds, got = [], [], [], []
        for w, h in enumerate(hands):
            out = work / f"tune-{len(errors)}-{name.replace(' ', '-')}"
            started = time.perf_counter()
            metrics = adapt(args.run, write_samples(h.pool, 5, work / f"tune-samples-{w}"), out, recipe=recipe, seed=w)
            seconds.append(time.perf_counter() - started)
            got.append(scores(out, h.digits, h.labels))
            errors.append(1 - got[-1]["accuracy"])
            vals.append(metrics["validation"]["accuracy"])
        print(
            f"{name:>10}: writers' error {statistics.mean(errors):.4f}, validation accuracy "
            f"{statistics.mean(vals):.4f}, accepted right {_accepted(got)}, coverage "
            f"{statistics.mean(g['coverage'] for g in got):.3f}, {statistics.mean(seconds):.1f} s",
            flush=True,
        )
    return 0


LINE_CANDIDATES = {"default": {}, "mix 0.75": {"mix": 0.75}}  # line runs: changes to LINE_RECIPE


def line_hand(w: int, split) -> tuple[LineSamples, np.ndarray, np.ndarray]:
    """Writer w's NUMBERS numbers (LineSamples) and LINE_EVALUATE numbers of its other digits (images, labels)."""
    h = hand(make_writer(w), split.x_val, split.y_val)
    pool = [(d, k) for k in range(10) for _, d in h.pool[k]]
    rng = np.random.default_rng([w, 34])
    x, y = make_lines(
        np.stack([d for d, _ in pool]), np.array([k for _, k in pool]), NUMBERS, rng, max_digits=LINE_DIGITS
    )
    texts = tuple("".join(map(str, t)) for t in truths(y))
    digests = tuple(hashlib.sha256(image.tobytes()).hexdigest() for image in x)
    samples = LineSamples(x, texts, tuple(f"writer {w} number {i}" for i in range(len(x))), digests)
    eval_x, eval_y = make_lines(h.digits, h.labels, LINE_EVALUATE, rng, max_digits=LINE_DIGITS)
    return samples, eval_x, eval_y


def line_tune(args, split, work: Path) -> int:
    """Each line recipe in LINE_CANDIDATES on `--writers` tuning writers: their other numbers exact and the
    adapted run's validation lines exact (metrics.json's), never the test set."""
    hands = [line_hand(TUNING_SEED + w, split) for w in range(args.writers)]
    base = statistics.mean(read_numbers(args.run, x, y)["exact"] for _, x, y in hands)
    base_val = runs.read_json(args.run / runs.METRICS)["validation"]["accuracy"]
    print(f"base: writers' numbers exact {base:.4f}, validation lines exact {base_val:.4f}", flush=True)
    for name, changes in LINE_CANDIDATES.items():
        recipe = dataclasses.replace(LINE_RECIPE, **changes)
        exact, vals, seconds = [], [], []
        for w, (samples, x, y) in enumerate(hands):
            out = work / f"line-tune-{w}-{name.replace(' ', '-').replace(',', '')}"
            started = time.perf_counter()
            metrics = adapt(args.run, samples, out, recipe=recipe, seed=w)
            seconds.append(time.perf_counter() - started)
            exact.append(read_numbers(out, x, y)["exact"])
            vals.append(metrics["validation"]["accuracy"])
        print(
            f"{name}: writers' numbers exact {statistics.mean(exact):.4f}, validation lines exact "
            f"{statistics.mean(vals):.4f}, {statistics.mean(seconds):.0f} s",
            flush=True,
        )
    return 0


def line_writers(args, split, work: Path) -> int:
    """A line run taught each writer's numbers: NUMBERS numbers composed by the run's own line generator
    from the writer's sample digits, LINE_EVALUATE numbers from the writer's other digits, exact numbers
    (greedy reading) before and after, accepted exact under each run's calibration, and exact numbers on
    lines of MNIST test digits (forgetting)."""
    test = load_dataset("mnist")
    test_x, test_y = make_lines(test.x_test, test.y_test, TEST_LINES, np.random.default_rng(0), max_digits=LINE_DIGITS)
    base_test = read_numbers(args.run, test_x, test_y)["exact"]
    rows = []
    for w in range(args.writers):
        samples, eval_x, eval_y = line_hand(w, split)
        out = work / f"line-w{w}"
        started = time.perf_counter()
        adapt(args.run, samples, out, seed=w)
        seconds = time.perf_counter() - started
        row = {
            "writer": w,
            "base": read_numbers(args.run, eval_x, eval_y),
            "adapted": read_numbers(out, eval_x, eval_y),
            "test": read_numbers(out, test_x, test_y)["exact"],
            "seconds": seconds,
        }
        rows.append(row)
        print(
            f"writer {w}: exact {row['base']['exact']:.3f} -> {row['adapted']['exact']:.3f}, "
            f"test lines {row['test']:.3f}, {seconds:.0f} s",
            flush=True,
        )
    mean = lambda key, part: statistics.mean(r[key][part] for r in rows)  # noqa: E731
    accepted = lambda key: _accepted(r[key] for r in rows)  # noqa: E731
    body = "\n".join(
        [
            "### A line run: numbers in a writer's hand",
            "",
            f"`{command_line()}`",
            "",
            machine(),
            "",
            f"{len(rows)} simulated writers (the digit writers above); each gives adapt {NUMBERS} numbers of 1 to "
            f"{LINE_DIGITS} digits composed by the run's own line generator from the writer's sample digits, and is "
            f"read on {LINE_EVALUATE} numbers composed from the writer's other digits. Base run `{args.run}` "
            f"({about_line_run(args.run)}); forgetting: {TEST_LINES} lines of MNIST test digits (1 to {LINE_DIGITS} "
            "digits). Exact: the whole number right (greedy reading).",
            "",
            "| | writer's other numbers exact | accepted exact | coverage | test lines exact | seconds per adaptation |",
            "| --- | --- | --- | --- | --- | --- |",
            f"| base run | {mean('base', 'exact'):.1%} | {accepted('base')} | {mean('base', 'coverage'):.1%} "
            f"| {base_test:.1%} | - |",
            f"| adapted on {NUMBERS} numbers | {mean('adapted', 'exact'):.1%} | {accepted('adapted')} "
            f"| {mean('adapted', 'coverage'):.1%} | {statistics.mean(r['test'] for r in rows):.1%} "
            f"| {statistics.median(r['seconds'] for r in rows):.0f} (median) |",
        ]
    )
    write_section(args.out, LINE_SECTION, body)
    print(body)
    return 0


def about_line_run(run: Path) -> str:
    """A line run's architecture, training and validation figure, in words."""
    config = runs.read_run_config(run)
    train, model = config["train"], config["model"]
    accuracy = runs.read_json(run / runs.METRICS)["validation"]["string_accuracy"]
    return (
        f"filters {'/'.join(map(str, model['filters']))}, {train['epochs']} epochs of {train['lines']} lines, "
        f"{accuracy:.1%} of {train['val_lines']} validation lines exact"
    )


def read_numbers(run: Path, x: np.ndarray, y: np.ndarray) -> dict:
    """Exact numbers of a line run's greedy reading, and those its calibration accepts."""
    predictor = load_predictor(run)
    decoded = greedy_decode(predictor.raw_proba(x), predictor.temperature)
    right = np.array([d.digits == t for d, t in zip(decoded, truths(y))])
    accepted = np.array([d.confidence >= predictor.threshold for d in decoded])
    return {
        "exact": float(right.mean()),
        "coverage": float(accepted.mean()),
        "accepted_right": int(right[accepted].sum()),
        "accepted": int(accepted.sum()),
    }


if __name__ == "__main__":
    sys.exit(main())
