"""Robustness benchmark: trained runs on the wild validation set (digitlab.data.synth.wild), column by column.

    .venv/bin/python bench/robustness.py --run runs/fast [--run runs/default ...] [--per-column 1000] [--seed 0] [--out BENCHMARKS.md]

Each run is read as a user reads it: every image goes through `digitlab.preprocess.preprocess`, then
the run's Predictor with its calibration and "unsure" rule (`digitlab.predict.classify`). Per column:

- best guess: share whose most probable class is right, whatever the unsure rule and the "not a
  digit" rules say (the model's own robustness);
- coverage: share answered with a digit: not refused by preprocessing, not marked unsure;
- accepted accuracy: share right among those answered;
- rejected: share preprocessing refused (no ink, or "not a digit").

The wild set is built from each run's own validation split (never its training images, never the
test set); runs with the same split share one build. MNIST test accuracy is the one in the run's
metrics.json (`digitlab evaluate RUN` writes it); nothing here reads the test set. The table goes
into --out as its own section between comment markers, replaced when the benchmark runs again.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from benchmark import command_line, machine  # the same headings as the speed benchmark
from digitlab import runs
from digitlab.config import PRESETS, RUNTIMES, ModelConfig, TrainConfig, resolve_configs
from digitlab.data import run_split
from digitlab.data.synth import wild
from digitlab.errors import DigitlabError
from digitlab.predict import classify, load_predictor

ROOT = Path(__file__).resolve().parent.parent
HEADING = "## Robustness: the wild validation set"
BEGIN, END = "<!-- bench/robustness.py: begin -->", "<!-- bench/robustness.py: end -->"  # the section's bounds


def preset_of(config: dict) -> str:
    """The preset a run was trained with: config.json's "preset" where it names one, else the preset
    whose configurations it matches (seed and precision aside), else "custom"."""
    if config.get("preset"):
        return str(config["preset"])
    try:
        model, train = ModelConfig.from_dict(config["model"]), TrainConfig.from_dict(config["train"])
    except (KeyError, TypeError, DigitlabError):
        return "custom"
    for name in PRESETS:
        preset_model, preset_train = resolve_configs(name)
        same = dataclasses.replace(preset_train, seed=train.seed, precision=train.precision)
        if preset_model == model and same == train:
            return name
    return "custom"


def build(train_config: TrainConfig, per_column: int, seed: int) -> dict:
    """The wild set of a run's validation split, preprocessed, with the seconds each step took."""
    started = time.perf_counter()
    split = run_split(train_config)
    x_val, y_val = split.x_val, split.y_val
    loaded = time.perf_counter()
    images = wild.build_wild(x_val, y_val, per_column=per_column, seed=seed)
    built = time.perf_counter()
    columns = wild.preprocess_wild(images)
    done = time.perf_counter()
    return {
        "columns": columns,
        "load_seconds": loaded - started,
        "build_seconds": built - loaded,
        "preprocess_seconds": done - built,
        "images": sum(len(labels) for _, labels in images.values()),
    }


def score(predictor, digits, labels, reasons) -> dict:
    """Best guess, coverage, accepted accuracy and rejection of one column, with the unsure rule users get."""
    results = classify(predictor, digits, reasons)  # refused images get no numbers: a wrong best guess
    n = len(results)
    best = [None if r["probabilities"] is None else int(np.argmax(r["probabilities"])) for r in results]
    answered = [(r["digit"], int(y)) for r, y in zip(results, labels) if r["digit"] is not None]
    return {
        "best_guess": sum(b == int(y) for b, y in zip(best, labels)) / n,
        "coverage": len(answered) / n,
        "accepted_accuracy": (sum(d == y for d, y in answered) / len(answered)) if answered else None,
        "rejected": sum(r is not None for r in reasons) / n,
        "reasons": sorted({r for r in reasons if r}),
    }


def summarise(scores: dict[str, dict]) -> dict:
    """Means over the wild columns (every column but clean) and the worst of them."""
    transformed = {k: v for k, v in scores.items() if k != "clean"}
    accepted = [v["accepted_accuracy"] for v in transformed.values() if v["accepted_accuracy"] is not None]
    worst = min(transformed, key=lambda k: transformed[k]["best_guess"])
    return {
        "best_guess": statistics.mean(v["best_guess"] for v in transformed.values()),
        "coverage": statistics.mean(v["coverage"] for v in transformed.values()),
        "accepted_accuracy": statistics.mean(accepted) if accepted else None,
        "rejected": statistics.mean(v["rejected"] for v in transformed.values()),
        "worst": worst,
        "worst_best_guess": transformed[worst]["best_guess"],
    }


def test_accuracy(run_dir: Path) -> float | None:
    """MNIST test accuracy from the run's metrics.json, when `digitlab evaluate` has written it."""
    path = run_dir / runs.METRICS
    if not path.is_file():
        return None
    return runs.read_json(path).get("test", {}).get("accuracy")


def pct(v: float | None, digits: int = 1) -> str:
    return "n/a" if v is None else f"{100 * v:.{digits}f} %"


def column_table(scores: dict[str, dict], summary: dict) -> list[str]:
    lines = [
        "| column | best guess | coverage | accepted accuracy | rejected |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, s in scores.items():
        lines.append(
            f"| {name} | {pct(s['best_guess'])} | {pct(s['coverage'])} | {pct(s['accepted_accuracy'])} |"
            f" {pct(s['rejected'], 2)} |"
        )
    lines.append(
        f"| **mean of the {len(scores) - 1} wild columns** | **{pct(summary['best_guess'])}** |"
        f" **{pct(summary['coverage'])}** | **{pct(summary['accepted_accuracy'])}** | **{pct(summary['rejected'], 2)}** |"
    )
    return lines


def report(results: list[dict], builds: list[dict], args) -> list[str]:
    per_column = results[0]["per_column"] if results else args.per_column
    seconds = ", ".join(
        f"{b['build_seconds']:.1f} s to build {b['images']:,} images and {b['preprocess_seconds']:.1f} s to"
        f" preprocess them ({b['build_seconds'] + b['preprocess_seconds']:.1f} s)"
        for b in builds
    )
    lines = [
        HEADING,
        "",
        f"Written by `{command_line()}` on {time.strftime('%Y-%m-%d')}; machine: {machine()}, shared with other",
        "work while it ran, so the seconds are upper bounds.",
        "",
        f"The wild validation set (`digitlab.data.synth.wild`, seed {args.seed}): the same {per_column:,} digits of each run's"
        " validation split in every column,",
        "drawn as people's images (docs/design/wild-set.md), each read through `preprocess` and the run's Predictor.",
        'Best guess ignores the unsure and "not a digit" rules; coverage is the share answered with a digit;',
        "accepted accuracy is the share right among those; rejected is the share preprocessing refused.",
        f"Set: {seconds}.",
        "",
        "| run | preset | MNIST test | clean column | wild mean best guess | worst column |"
        " wild mean coverage | wild mean accepted accuracy | rejected |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        s, clean = r["summary"], r["scores"]["clean"]
        lines.append(
            f"| `{r['run']}` | {r['preset']} | {pct(r['test_accuracy'], 2)} | {pct(clean['best_guess'])} |"
            f" {pct(s['best_guess'])} | {s['worst']} {pct(s['worst_best_guess'])} | {pct(s['coverage'])} |"
            f" {pct(s['accepted_accuracy'])} | {pct(s['rejected'], 2)} |"
        )
    for r in results:
        lines += ["", f"### {r['preset']} (`{r['run']}`)", "", *column_table(r["scores"], r["summary"])]
    return lines


def write_section(path: Path, section: list[str]) -> None:
    """Put `section` into the Markdown file at `path` between this script's markers: in place of its
    previous version, else at the end."""
    lines = path.read_text().splitlines() if path.is_file() else []
    marked = [BEGIN, *section, END]
    if BEGIN in lines and END in lines[lines.index(BEGIN) :]:
        start = lines.index(BEGIN)
        end = lines.index(END, start) + 1
    else:
        start = end = len(lines)
        marked = ([""] if lines and lines[-1] else []) + marked
    path.write_text("\n".join(lines[:start] + marked + lines[end:]) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--run", type=Path, action="append", required=True, help="a trained run directory (repeat for several)"
    )
    parser.add_argument(
        "--per-column", type=int, default=wild.PER_COLUMN, help=f"digits per column (default {wild.PER_COLUMN})"
    )
    parser.add_argument("--seed", type=int, default=0, help="the wild set's seed (default 0)")
    parser.add_argument(
        "--runtime", choices=RUNTIMES, default=RUNTIMES[0], help=f"the runs' runtime (default {RUNTIMES[0]})"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "BENCHMARKS.md",
        help="Markdown file the section goes into (default BENCHMARKS.md)",
    )
    args = parser.parse_args()
    if args.per_column <= 0:
        parser.error(f"--per-column: expected a positive integer, got {args.per_column}")

    cache: dict[tuple, dict] = {}  # one build per split
    results = []
    try:
        for run_dir in args.run:
            config = runs.read_run_config(run_dir)
            train_config = TrainConfig.from_dict(config.get("train", {}))
            split = (train_config.dataset, train_config.val_fraction, train_config.split_seed)
            if split not in cache:
                cache[split] = build(train_config, args.per_column, args.seed)
                b = cache[split]
                print(
                    f"wild set of {split[0]} (validation {split[1]:.0%}, split seed {split[2]}): "
                    f"{b['images']:,} images built in {b['build_seconds']:.1f} s, preprocessed in "
                    f"{b['preprocess_seconds']:.1f} s (data loaded in {b['load_seconds']:.1f} s)",
                    flush=True,
                )
            predictor = load_predictor(run_dir, args.runtime)
            columns = cache[split]["columns"]
            scores = {name: score(predictor, *columns[name]) for name in wild.COLUMNS}
            result = {
                "run": str(run_dir),
                "preset": preset_of(config),
                "per_column": len(columns["clean"][1]),
                "test_accuracy": test_accuracy(Path(run_dir)),
                "scores": scores,
                "summary": summarise(scores),
            }
            results.append(result)
            print(f"\n{result['preset']} ({run_dir}), MNIST test {pct(result['test_accuracy'], 2)}:")
            print("\n".join(column_table(scores, result["summary"])), flush=True)
            for name, s in scores.items():
                if s["reasons"]:
                    print(f"  {name}: refused because {'; '.join(s['reasons'])}")
    except DigitlabError as e:
        sys.exit(f"error: {e}")
    write_section(args.out, report(results, list(cache.values()), args))
    print(f"\nwrote the section {HEADING[3:]!r} into {args.out}")


if __name__ == "__main__":
    main()
