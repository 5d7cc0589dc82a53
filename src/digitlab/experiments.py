"""The tutorial's tuning ladder, reproduced in one call: each step a normal run directory.

    raw pixels -> pixels / 255 -> learning-rate range test -> lr 0.01, longer -> lr 1e-3, longer still
    -> a wider MLP (10-10) -> the fast CNN -> (optionally) the accurate preset

Every step uses the same seed and the same train/validation split. The best epoch of each step is
chosen on validation; the test set is only evaluated, to report. `out_dir` ends up holding one run
directory per step, results.csv and results.md, ladder.png and report.html.
"""

from __future__ import annotations

import dataclasses
import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from digitlab import atomic, runs
from digitlab.config import PRESETS, QUICK_EPOCHS_DIVISOR, QUICK_LIMIT, resolve_configs
from digitlab.errors import DigitlabError, RunError
from digitlab.evaluation import evaluate
from digitlab.lr_find import lr_find
from digitlab.report import build_experiments_report
from digitlab.training import train

RESULTS_CSV = "results.csv"
RESULTS_MD = "results.md"
LADDER_PNG = "ladder.png"
COLUMNS = [
    "step",
    "name",
    "what_changed",
    "train_accuracy",
    "validation_accuracy",
    "test_accuracy",
    "test_loss",
    "seconds",
]
HEADINGS = [
    "step",
    "name",
    "what changed",
    "train accuracy",
    "validation accuracy",
    "test accuracy",
    "test loss",
    "seconds",
]

# --quick: the same steps, shortened for a smoke run
LR_FIND_STEPS = 200  # batches of 32: about 6,400 images, an eighth of an epoch
QUICK_LR_FIND_STEPS = 30
QUICK_MIN_EPOCHS = 2  # a curve needs two points


@dataclass(frozen=True)
class Step:
    """One rung of the ladder; None fields keep the preset's value."""

    name: str  # its run directory under out_dir
    what_changed: str  # "{epochs}" in it becomes the epochs the step trains, --quick or not
    kind: str = "train"  # "train" or "lr_find"
    preset: str = "tutorial"  # MLP, batch 32, constant Adam 1e-3
    units: tuple[int, ...] | None = None
    normalize: bool | None = None
    learning_rate: float | None = None
    epochs: int | None = None
    tutorial: str = ""  # what the tutorial reported, for comparison


def ladder(with_accurate: bool = False) -> list[Step]:
    """The tutorial's sequence of experiments, in order."""
    steps = [
        Step(
            "01-mlp-4-4-raw",
            "MLP 4-4 on raw pixels 0-255, Adam lr 1e-3, {epochs}",
            units=(4, 4),
            normalize=False,
            learning_rate=1e-3,
            epochs=20,
            tutorial="about 66 %",
        ),
        Step(
            "02-mlp-4-4-normalised",
            "the same on pixels / 255",
            units=(4, 4),
            normalize=True,
            learning_rate=1e-3,
            epochs=20,
            tutorial="about 86 %",
        ),
        Step(
            "03-lr-find",
            "learning-rate range test (loss against learning rate) on the normalised MLP 4-4",
            kind="lr_find",
            units=(4, 4),
            normalize=True,
        ),
        Step(
            "04-mlp-4-4-lr0.01",
            "learning rate 0.01, trained longer ({epochs})",
            units=(4, 4),
            normalize=True,
            learning_rate=0.01,
            epochs=40,
            tutorial="about 88 %",
        ),
        Step(
            "05-mlp-4-4-long",
            "back to learning rate 1e-3, longer still ({epochs})",
            units=(4, 4),
            normalize=True,
            learning_rate=1e-3,
            epochs=60,
            tutorial="little change: a 4-4 network is too small",
        ),
        Step(
            "06-mlp-10-10",
            "hidden layers widened to 10-10, {epochs}",
            units=(10, 10),
            normalize=True,
            learning_rate=1e-3,
            epochs=20,
            tutorial="about 95 % train / 93 % validation",
        ),
        Step("07-cnn-fast", "the fast CNN preset (2 conv stages, one-cycle schedule)", preset="fast"),
    ]
    if with_accurate:
        steps.append(Step("08-cnn-accurate", "the accurate preset", preset="accurate"))
    return steps


def step_configs(step: Step, *, quick: bool, seed: int, dataset: str):
    """The (ModelConfig, TrainConfig) of a step; quick runs shorten it, nothing else changes."""
    if step.preset not in PRESETS:
        raise DigitlabError(
            f"experiments: step {step.name} needs the {step.preset!r} preset, which digitlab.config "
            f"does not define (it has {', '.join(PRESETS)}); run without --with-accurate"
        )
    epochs = step.epochs or PRESETS[step.preset][1].epochs
    if quick:
        epochs = max(QUICK_MIN_EPOCHS, epochs // QUICK_EPOCHS_DIVISOR)
    return resolve_configs(
        step.preset,
        units=step.units,
        normalize=step.normalize,
        learning_rate=step.learning_rate,
        epochs=epochs,
        seed=seed,
        dataset=dataset,
        limit=QUICK_LIMIT if quick else None,
    )


def run_experiments(
    out_dir: Path,
    quick: bool = False,
    with_accurate: bool = False,
    seed: int = 42,
    data_dir: Path | None = None,
    dataset: str = "mnist",
    overwrite: bool = False,
    on_step: Callable[[int, int, Step, dict | None], None] | None = None,
) -> list[dict]:
    """Run the ladder into `out_dir`; returns one result dict per step (also in results.csv).

    `on_step(number, total, step, None)` is called as a step starts, and `on_step(number, total, step,
    result)` as it ends. The `seconds` of a step are its wall-clock time: training, calibration on the
    validation split and evaluation on the test set.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise RunError(f"{out_dir}: already holds files; choose another --out or pass --overwrite to replace them")
    steps = ladder(with_accurate)
    for step in steps:  # fail on a missing preset before hours of training, not after
        step_configs(step, quick=quick, seed=seed, dataset=dataset)
    out_dir.mkdir(parents=True, exist_ok=True)
    note = (
        f"A --quick smoke run: {QUICK_LIMIT:,} training images and 1/{QUICK_EPOCHS_DIVISOR} of the epochs "
        f"(at least {QUICK_MIN_EPOCHS}) per step, {QUICK_LR_FIND_STEPS} learning-rate finder batches."
        if quick
        else ""
    )
    results = []
    for number, step in enumerate(steps, start=1):
        started = time.perf_counter()
        model_cfg, train_cfg = step_configs(step, quick=quick, seed=seed, dataset=dataset)
        step = dataclasses.replace(step, what_changed=step.what_changed.format(epochs=_epochs(train_cfg.epochs)))
        if on_step:
            on_step(number, len(steps), step, None)
        run_dir = out_dir / step.name
        row = {
            "step": number,
            "name": step.name,
            "what_changed": step.what_changed,
            "kind": step.kind,
            "tutorial": step.tutorial,
            "run_dir": str(run_dir),
            "train_accuracy": "",
            "validation_accuracy": "",
            "test_accuracy": "",
            "test_loss": "",
        }
        if step.kind == "lr_find":
            row.update(_lr_find_step(model_cfg, train_cfg, run_dir, quick, data_dir))
            found = row["suggested_lr"]
            row["what_changed"] += f"; suggested learning rate {found:.2g}" if found else "; the loss never fell"
        else:
            row.update(_train_step(model_cfg, train_cfg, run_dir, data_dir, overwrite))
        row["seconds"] = round(time.perf_counter() - started, 1)
        results.append(row)
        _write_results(out_dir, results, note)  # after every step: an interrupted ladder keeps what it did
        if on_step:
            on_step(number, len(steps), step, row)
    _plot_ladder(results, out_dir / LADDER_PNG, quick)
    build_experiments_report(out_dir, results, note=note)
    return results


def _train_step(model_cfg, train_cfg, run_dir: Path, data_dir, overwrite: bool) -> dict:
    metrics = train(model_cfg, train_cfg, run_dir, data_dir=data_dir, overwrite=overwrite, verbose=0)
    test = evaluate(run_dir, data_dir=data_dir)  # reported only; nothing is chosen on it
    return {  # float32 figures: 6 decimals hold all they have
        "train_accuracy": round(metrics["train"]["accuracy"], 6),
        "validation_accuracy": round(metrics["validation"]["accuracy"], 6),
        "test_accuracy": round(test["accuracy"], 6),
        "test_loss": round(test["loss"], 6),
        "best_epoch": metrics["validation"]["best_epoch"],
        "epochs": metrics["epochs"],
        "parameters": metrics["parameters"],
        "learning_rate": train_cfg.learning_rate,
    }


def _lr_find_step(model_cfg, train_cfg, run_dir: Path, quick: bool, data_dir) -> dict:
    found = lr_find(
        model_cfg,
        train_cfg,
        run_dir,
        steps=QUICK_LR_FIND_STEPS if quick else LR_FIND_STEPS,
        data_dir=data_dir,
        overwrite=True,  # run_experiments decides whether its --out may be written
    )
    # No model here, but the directory still says what produced it.
    runs.write_json(run_dir / runs.CONFIG, {"model": model_cfg.to_dict(), "train": train_cfg.to_dict()})
    runs.write_json(run_dir / runs.ENVIRONMENT, runs.environment(train_cfg.seed))
    return {"suggested_lr": found["suggested_lr"], "min_loss_lr": float(found["min_loss_lr"])}


def _epochs(n: int) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def _fmt(value, digits: int) -> str:
    return "" if value == "" else f"{value:.{digits}f}"


def _write_results(out_dir: Path, results: list[dict], note: str = "") -> None:
    runs.write_csv(out_dir / RESULTS_CSV, results, COLUMNS)
    lines = ([f"**{note}**", ""] if note else []) + [
        "| " + " | ".join(HEADINGS) + " |",
        "|" + "|".join(["---"] * len(HEADINGS)) + "|",
    ]
    for r in results:
        cells = [
            r["step"],
            r["name"],
            r["what_changed"],
            _fmt(r["train_accuracy"], 4),
            _fmt(r["validation_accuracy"], 4),
            _fmt(r["test_accuracy"], 4),
            _fmt(r["test_loss"], 4),
            _fmt(r["seconds"], 1),
        ]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    atomic.write_bytes(out_dir / RESULTS_MD, ("\n".join(lines) + "\n").encode())


def _plot_ladder(results: list[dict], path: Path, quick: bool = False) -> Path:
    """Grouped bars: train, validation and test accuracy per trained step."""
    trained = [r for r in results if r["kind"] == "train"]
    fig = Figure(figsize=(max(7.0, 1.5 * len(trained) + 2), 4.8), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(trained))
    width = 0.27
    for offset, key, label in (
        (-width, "train_accuracy", "train"),
        (0.0, "validation_accuracy", "validation"),
        (width, "test_accuracy", "test"),
    ):
        bars = ax.bar(x + offset, [r[key] for r in trained], width, label=label)
        ax.bar_label(bars, fmt="%.2f", fontsize=7, rotation=90, padding=2)
    ax.set_xticks(x, [r["name"].split("-", 1)[1] for r in trained], rotation=20, ha="right")
    ax.set(
        ylim=(0, 1.12),
        ylabel="accuracy",
        title="The tuning ladder: accuracy per step" + (" (--quick smoke run)" if quick else ""),
    )
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", ncols=3)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return atomic.write_bytes(path, buffer.getvalue())
