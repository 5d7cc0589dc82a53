"""The learning-rate range test, per batch.

The tutorial grew the learning rate as 1e-4 * 10**(epoch/20) over 100 epochs. Here it grows the same
way, exponentially, but once per batch over a fraction of one epoch, so the test takes seconds.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from digitlab import runs
from digitlab.config import ModelConfig, TrainConfig
from digitlab.data import run_split
from digitlab.errors import DigitlabError
from digitlab.metrics import SUGGESTION_RULE, suggest_lr
from digitlab.models import build_model
from digitlab.plots import plot_lr_find
from digitlab.training import compile_model


def lr_find(
    model_config: ModelConfig,
    train_config: TrainConfig,
    out_dir: Path,
    *,
    start_lr: float = 1e-5,
    end_lr: float = 10.0,
    steps: int = 200,  # batches; 200 x 128 images is about half an epoch of MNIST
    data_dir: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    overwrite: bool = False,
) -> dict:
    """Train a fresh model while the learning rate grows from start_lr to end_lr; stop when the loss explodes.

    `progress(done, steps)` is called after every batch. Returns {"lrs", "losses", "smoothed", "suggested_lr",
    "rule", "plot", "min_loss_lr"}; writes lr_find.png and lr_find.csv, replacing an earlier test's only
    with `overwrite` (refused before anything is trained).
    """
    out_dir = Path(out_dir)
    runs.check_lr_find_out(out_dir, overwrite)
    if not 0 < start_lr < end_lr:
        raise DigitlabError(f"lr-find: expected 0 < --start-lr < --end-lr, got {start_lr} and {end_lr}")
    if steps < 10:
        raise DigitlabError(f"lr-find: --steps must be at least 10, got {steps}")
    if model_config.kind != "digit":
        raise DigitlabError(
            f"lr-find: finds a learning rate for digit models (mlp, cnn); got a {model_config.architecture} model"
        )
    split = run_split(train_config, data_dir)
    x_tr, y_tr = split.x_train, split.y_train
    keras.utils.set_random_seed(train_config.seed)
    model = compile_model(build_model(model_config), _constant(train_config), steps)
    rng = np.random.default_rng(train_config.seed)
    bs = train_config.batch_size
    factor = (end_lr / start_lr) ** (1.0 / (steps - 1))  # growth per batch
    lrs, losses, smoothed = [], [], []
    avg, best = 0.0, math.inf
    order = rng.permutation(len(x_tr))
    for step in range(steps):
        lr = start_lr * factor**step
        model.optimizer.learning_rate = lr
        start = (step * bs) % max(1, len(x_tr) - bs + 1)
        idx = order[start : start + bs]
        loss = float(model.train_on_batch(x_tr[idx].astype("float32"), y_tr[idx], return_dict=True)["loss"])
        avg = 0.9 * avg + 0.1 * loss  # exponential moving average, bias-corrected below
        smooth = avg / (1 - 0.9 ** (step + 1))
        lrs.append(lr)
        losses.append(loss)
        smoothed.append(smooth)
        best = min(best, smooth)
        if progress:
            progress(step + 1, steps)
        if not math.isfinite(loss) or (step > 10 and smooth > 4 * best):
            break  # diverged: larger rates tell nothing more
    lrs, losses, smoothed = np.array(lrs), np.array(losses), np.array(smoothed)
    suggested = suggest_lr(lrs, smoothed)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs.write_csv(
        out_dir / runs.LR_FIND_CSV,
        [{"lr": a, "loss": b, "smoothed": c} for a, b, c in zip(lrs, losses, smoothed)],
        ["lr", "loss", "smoothed"],
    )
    plot = plot_lr_find(lrs, losses, smoothed, suggested, out_dir / runs.LR_FIND_PNG)
    return {
        "lrs": lrs,
        "losses": losses,
        "smoothed": smoothed,
        "suggested_lr": suggested,
        "rule": SUGGESTION_RULE,
        "plot": plot,
        "min_loss_lr": float(lrs[int(np.argmin(smoothed))]),
    }


def _constant(cfg: TrainConfig) -> TrainConfig:
    return dataclasses.replace(cfg, schedule="constant")
