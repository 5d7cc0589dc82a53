"""Figures shared by training and evaluation. Matplotlib's object-oriented API: no display needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # the object-oriented API: no pyplot state, no GUI backend
from matplotlib.ticker import MaxNLocator

from digitlab import atomic
from digitlab.metrics import confidence_bins


def _save(fig, path: Path) -> Path:
    with atomic.replacing(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    return Path(path)


def plot_curves(rows: list[dict], path: Path) -> Path:
    """Training vs validation loss and accuracy per epoch, saved as a PNG."""
    return _save(curves_figure(rows), path)


def curves_figure(rows: list[dict]) -> Figure:
    """Training vs validation loss and accuracy per epoch, on whole-epoch ticks."""
    epochs = [r["epoch"] for r in rows]
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    for ax, key, title in ((axes[0], "loss", "Loss"), (axes[1], "accuracy", "Accuracy")):
        ax.plot(epochs, [r[key] for r in rows], "o-", label="train")
        if all(f"val_{key}" in r for r in rows):
            ax.plot(epochs, [r[f"val_{key}"] for r in rows], "s-", label="validation")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 1.5
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


def plot_lr_find(
    lrs: np.ndarray, losses: np.ndarray, smoothed: np.ndarray, suggested: float | None, path: Path
) -> Path:
    """Loss against learning rate on a log axis, the suggestion marked."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    ax.semilogx(lrs, losses, alpha=0.3, label="loss per batch")
    ax.semilogx(lrs, smoothed, label="smoothed")
    if suggested is not None:
        ax.axvline(suggested, color="tab:red", ls="--", label=f"suggested {suggested:.2g}")
    finite = smoothed[np.isfinite(smoothed)]
    if finite.size:
        ax.set_ylim(max(0.0, finite.min() * 0.8), min(finite.max(), finite[0] * 2.5) * 1.05)
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("loss")
    ax.set_title("Learning-rate range test")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return _save(fig, path)


def plot_confusion(cm: np.ndarray, class_names: list[str], path: Path) -> Path:
    """Counts in each cell, with the row-normalised percentage (recall of the true class) below."""
    pct = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) * 100.0
    n = len(class_names)
    fig = Figure(figsize=(1.0 * n + 2, 1.0 * n + 1))
    ax = fig.subplots()
    ax.imshow(pct, cmap="Blues", vmin=0, vmax=100)
    for i in range(n):
        for j in range(n):
            dark = pct[i, j] > 60
            ax.text(
                j,
                i,
                f"{cm[i, j]}\n{pct[i, j]:.1f}%",
                ha="center",
                va="center",
                fontsize=10,  # readable at the report's width, where the PNG is shown at about 80 %
                color="white" if dark else "black",
            )
    ax.set_xticks(
        range(n),
        class_names,
        rotation=45 if max(map(len, class_names)) > 2 else 0,
        ha="right" if max(map(len, class_names)) > 2 else "center",
    )
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix (count, % of true class)")
    return _save(fig, path)


def plot_gallery(
    images: np.ndarray,
    captions: list[str],
    path: Path,
    title: str,
    cols: int = 8,
    colors: list[str] | None = None,
    cell: tuple[float, float] = (1.4, 1.6),
) -> Path:
    """A grid of images (28x28 digits; lines with a wider `cell`, inches) with a caption under each."""
    n = max(1, len(images))
    rows = int(np.ceil(n / cols))
    fig = Figure(figsize=(cols * cell[0], rows * cell[1] + 0.4))
    axes = fig.subplots(rows, cols, squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.axis("off")
        if k < len(images):
            ax.imshow(images[k], cmap="gray")
            ax.set_title(captions[k], fontsize=7.5, color=(colors[k] if colors else "black"))
    fig.suptitle(title)
    return _save(fig, path)


def plot_by_length(by_length: dict[int, dict], path: Path) -> Path:
    """A line run's test accuracy per number of digits in the line, each bar labelled with its count."""
    lengths = sorted(by_length)
    fig = Figure(figsize=(7, 3.5))
    ax = fig.subplots()
    bars = ax.bar(lengths, [100 * by_length[n]["accuracy"] for n in lengths], color="tab:blue")
    for bar, n in zip(bars, lengths):
        ax.annotate(
            f"n={by_length[n]['count']}",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            textcoords="offset points",
            xytext=(0, 3),
            ha="center",
            fontsize=7,
        )
    ax.set_xticks(lengths)
    ax.set_xlabel("digits in the line")
    ax.set_ylabel("lines read exactly (%)")
    ax.set_ylim(0, 105)
    ax.set_title("Test lines read exactly, by length")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_reliability(
    before: np.ndarray, after: np.ndarray, right: np.ndarray, bins: int, path: Path, kind: str = "digit"
) -> Path:
    """Reliability diagram (see reliability_figure), saved as a PNG."""
    return _save(reliability_figure(before, after, right, bins, kind), path)


def reliability_figure(
    before: np.ndarray, after: np.ndarray, right: np.ndarray, bins: int, kind: str = "digit"
) -> Figure:
    """Reliability diagram: accuracy against confidence per bin, before and after temperature scaling,
    each calibrated point labelled with its bin's count of answers (a bin of 3 says little). `before`
    and `after` are each answer's confidence, `right` whether it is right; `kind` "digit" or "string"."""
    fig = Figure(figsize=(5.5, 5.6), layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], "k:", label="perfect calibration")
    for conf, label, marker in ((before, "before", "o-"), (after, "after temperature scaling", "s-")):
        which = confidence_bins(conf, bins)
        xs, ys, ns = [], [], []
        for b in range(bins):
            m = which == b
            if m.any():
                xs.append(conf[m].mean())
                ys.append(right[m].mean())
                ns.append(int(m.sum()))
        ax.plot(xs, ys, marker, label=label)
    for x, acc, n in zip(xs, ys, ns):  # the last curve's: after temperature scaling
        # Near the right edge a count ends at its point, so that it stays inside the figure.
        ax.annotate(
            f"n={n}", (x, acc), textcoords="offset points", xytext=(0, -12), ha="right" if x > 0.9 else "center",
            fontsize=7,
        )  # fmt: skip
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    what = "lines" if kind == "string" else "images"
    ax.set_title(f"Reliability on the validation split (n: {what} per bin, after scaling)", fontsize=10)
    ax.grid(alpha=0.3)
    # Below the plot: inside it, the legend would cover the points or their counts wherever they fall.
    fig.legend(loc="outside lower center", ncols=3, fontsize=8)
    return fig


def plot_numbers(rows: list[dict], curve: np.ndarray, coverage: float, path: Path) -> Path:
    """Whole numbers read: each subset's exact share, all numbers and those not marked unsure (left); the
    exact share of the most confident numbers against their share of all (right), marked at `coverage`."""
    fig = Figure(figsize=(11, 3.8))
    bars_ax, curve_ax = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    every = [r for r in rows if r["length"] == "all"]
    x = np.arange(len(every))
    bars_ax.bar(x - 0.2, [100 * r["exact"] for r in every], 0.4, label="all numbers", color="tab:blue")
    accepted = [100 * (r["accepted_exact"] or 0.0) for r in every]
    bars_ax.bar(x + 0.2, accepted, 0.4, label="not marked unsure", color="tab:green")
    bars_ax.set_xticks(x, [r["subset"] for r in every], rotation=20)
    bars_ax.set_ylabel("read exactly (%)")
    bars_ax.set_ylim(0, 118)  # room above the bars for the legend
    bars_ax.set_yticks(range(0, 101, 20))
    bars_ax.set_title("Test numbers read exactly, by subset")
    bars_ax.legend(loc="upper center", ncols=2, fontsize=8)
    bars_ax.grid(axis="y", alpha=0.3)
    share = 100 * np.arange(1, len(curve) + 1) / len(curve)
    curve_ax.plot(share, 100 * curve, color="tab:blue")
    at = max(1, round(coverage * len(curve))) - 1
    curve_ax.plot([share[at]], [100 * curve[at]], "o", color="tab:red")
    curve_ax.annotate(
        f"{100 * curve[at]:.1f} % at {100 * coverage:.0f} %",
        (share[at], 100 * curve[at]),
        xytext=(-90, -25),
        textcoords="offset points",
        fontsize=8,
        arrowprops={"arrowstyle": "-", "color": "0.5"},
    )
    curve_ax.set_xlabel("numbers answered, most confident first (%)")
    curve_ax.set_ylabel("read exactly (%)")
    curve_ax.set_title("Exact against coverage")
    curve_ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)
