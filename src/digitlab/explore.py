"""Look at a data set before training on it: one raw digit (its pixels and a colour bar), sample grids, class
balance, pixel values."""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # the object-oriented API: no pyplot state, no GUI backend

from digitlab import atomic
from digitlab.data import Dataset, class_counts
from digitlab.errors import DataError


def explore(ds: Dataset, out_dir: str | os.PathLike, index: int = 0, n_samples: int = 25, seed: int = 0) -> dict:
    """Write the figures to `out_dir` and return train image `index` raw, its label, counts and the paths."""
    n_train = len(ds.x_train)
    if not 0 <= index < n_train:
        raise DataError(f"index {index} is out of range; expected 0 to {n_train - 1} (the {ds.name} train set)")
    if n_samples < 1:
        raise DataError(f"n_samples is {n_samples}; expected 1 or more")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    picks = np.random.default_rng(seed).choice(n_train, size=min(n_samples, n_train), replace=False)
    counts = {"train": class_counts(ds.y_train), "test": class_counts(ds.y_test)}
    figures = {
        "digit": _save(_digit_figure(ds, index), out_dir / "digit.png"),
        "samples_gray": _save(_sample_grid(ds, picks, cmap="gray"), out_dir / "samples_gray.png"),
        # matplotlib's default colour map, as `plt.imshow(image)` shows a digit without cmap
        "samples_color": _save(_sample_grid(ds, picks, cmap=None), out_dir / "samples_color.png"),
        "class_counts": _save(_class_counts_figure(ds.class_names, counts), out_dir / "class_counts.png"),
        "pixel_histogram": _save(_pixel_histogram(ds.x_train), out_dir / "pixel_histogram.png"),
    }
    label = int(ds.y_train[index])
    return {
        "index": index,
        "raw": ds.x_train[index],  # shape (28, 28), uint8 0..255
        "label": label,
        "class_name": ds.class_names[label],
        "class_names": list(ds.class_names),
        "counts": counts,
        "figures": figures,
    }


def _digit_figure(ds: Dataset, index: int) -> Figure:
    """One training image with a colour bar of its pixel values, as the tutorial's `plt.imshow(image)`,
    `plt.colorbar()` shows it (matplotlib's default colour map, 0-255)."""
    fig = Figure(figsize=(4.2, 3.6), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(ds.x_train[index])
    fig.colorbar(image, ax=ax, label="pixel value")
    ax.set_title(f"{ds.name} train image {index}: {ds.class_names[ds.y_train[index]]}")
    ax.grid(False)
    return fig


def _sample_grid(ds: Dataset, picks: np.ndarray, cmap: str | None) -> Figure:
    cols = math.ceil(math.sqrt(len(picks)))
    rows = math.ceil(len(picks) / cols)
    fig = Figure(figsize=(1.4 * cols, 1.6 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes:
        ax.set_axis_off()
    for ax, i in zip(axes, picks):
        ax.imshow(ds.x_train[i], cmap=cmap)
        ax.set_title(f"{ds.class_names[ds.y_train[i]]} (#{i})", fontsize=8)
    fig.suptitle(f"{ds.name}: {len(picks)} training images")
    return fig


def _class_counts_figure(class_names: tuple[str, ...], counts: dict) -> Figure:
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(class_names))
    width = 0.4
    for offset, split in ((-width / 2, "train"), (width / 2, "test")):
        bars = ax.bar(x + offset, counts[split], width, label=f"{split} ({sum(counts[split])})")
        ax.bar_label(bars, fontsize=6, rotation=90, padding=2)
    long_names = max(map(len, class_names)) > 2
    ax.set_xticks(x, class_names, rotation=30 if long_names else 0, ha="right" if long_names else "center")
    ax.set_ylabel("images")
    ax.set_title("Images per class")
    ax.legend()
    ax.margins(y=0.15)
    return fig


def _pixel_histogram(x: np.ndarray) -> Figure:
    # Normalising is x / 255, a linear map: the same 256 counts, drawn over 0..1 instead of 0..255.
    counts = np.bincount(x.ravel(), minlength=256)
    fig = Figure(figsize=(9, 3.5), layout="constrained")
    before, after = fig.subplots(1, 2)
    before.stairs(counts, np.arange(257) - 0.5, fill=True)
    before.set(title=f"Raw pixels (mean {x.mean():.1f})", xlabel="value (0-255)", ylabel="pixels", yscale="log")
    after.stairs(counts, (np.arange(257) - 0.5) / 255, fill=True, color="tab:orange")
    after.set(title=f"Normalised x / 255 (mean {x.mean() / 255:.3f})", xlabel="value (0-1)", yscale="log")
    return fig


def _save(fig: Figure, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return atomic.write_bytes(path, buffer.getvalue())
