"""Training: Keras `fit` on the seeded train/validation split, leaving a self-describing run directory.

Every epoch writes `checkpoint.keras` (weights and optimizer state) and `state.json` atomically, so
`resume(run_dir)` (`digitlab train --resume`) continues an interrupted run: a kill loses at most the epoch in progress.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from digitlab import atomic, line_training, runs
from digitlab.augment import AugmentedBatches
from digitlab.calibrate import fit_calibration
from digitlab.config import ModelConfig, TrainConfig, resolve_configs, resolve_precision
from digitlab.data import load_dataset, split_train_val
from digitlab.errors import DigitlabError, RunError
from digitlab.models import build_model
from digitlab.plots import plot_curves
from digitlab.predict import load_predictor
from digitlab.predict.keras_runtime import load_keras_model
from digitlab.wild import build_wild, preprocess_wild

__all__ = ["TrainConfig", "resolve_configs", "resume", "train"]
EpochCallback = Callable[[dict], None]  # called with each epoch's history row and "epochs", the total
STEPS_PER_EXECUTION = 16  # optimizer steps per call into the backend: less Python per step, same maths
HISTORY_FIELDS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"]


@keras.saving.register_keras_serializable(package="digitlab")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from peak/25 to `peak`, then cosine decay to peak/1e4, per optimizer step."""

    def __init__(self, peak: float, total_steps: int, warmup: float = 0.2):
        self.peak = float(peak)
        self.total_steps = int(total_steps)
        self.warmup = float(warmup)

    def __call__(self, step):
        ops = keras.ops
        step = ops.cast(step, "float32")
        warm = max(1.0, self.warmup * self.total_steps)
        start, end = self.peak / 25.0, self.peak / 1e4
        rising = start + (self.peak - start) * step / warm
        progress = ops.clip((step - warm) / max(1.0, self.total_steps - warm), 0.0, 1.0)
        falling = end + (self.peak - end) * 0.5 * (1.0 + ops.cos(math.pi * progress))
        return ops.where(step < warm, rising, falling)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup": self.warmup}


@keras.saving.register_keras_serializable(package="digitlab")
class SmoothedCrossentropy(keras.losses.Loss):
    """Cross-entropy of integer labels against smoothed targets: 1 - smoothing on the true class plus
    smoothing / classes on every class. Keras's sparse loss has no smoothing; this saves one-hot labels."""

    def __init__(self, smoothing: float = 0.1, name: str = "smoothed_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.smoothing = float(smoothing)

    def call(self, y_true, y_pred):
        ops = keras.ops
        labels = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        one_hot = ops.one_hot(labels, y_pred.shape[-1], dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(one_hot, y_pred, label_smoothing=self.smoothing)

    def get_config(self):
        return {**super().get_config(), "smoothing": self.smoothing}


def make_loss(cfg: TrainConfig) -> keras.losses.Loss:
    if cfg.label_smoothing:
        return SmoothedCrossentropy(cfg.label_smoothing)
    return keras.losses.SparseCategoricalCrossentropy()


def make_optimizer(cfg: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    lr = cfg.learning_rate
    if cfg.schedule == "onecycle":
        lr = OneCycle(cfg.learning_rate, cfg.epochs * steps_per_epoch, cfg.warmup)
    decay = cfg.weight_decay or None
    if cfg.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate=lr, momentum=0.9, nesterov=True, weight_decay=decay)
    if decay:
        return keras.optimizers.AdamW(learning_rate=lr, weight_decay=decay)
    return keras.optimizers.Adam(learning_rate=lr)


def compile_model(model: keras.Model, cfg: TrainConfig, steps_per_epoch: int) -> keras.Model:
    model.compile(
        optimizer=make_optimizer(cfg, steps_per_epoch),
        loss=make_loss(cfg),
        metrics=["accuracy"],
        steps_per_execution=STEPS_PER_EXECUTION,
    )
    return model


def prepare_data(cfg: TrainConfig, data_dir: Path | None = None):
    """Load the data set and split it: (x_train, y_train, x_val, y_val, dataset). The test set stays out."""
    ds = load_dataset(cfg.dataset, data_dir=data_dir)
    x_tr, y_tr, x_val, y_val = split_train_val(ds.x_train, ds.y_train, cfg.val_fraction, seed=cfg.split_seed)
    if cfg.limit:
        x_tr, y_tr = x_tr[: cfg.limit], y_tr[: cfg.limit]
    return x_tr, y_tr, x_val, y_val, ds


def check_input_shape(model: keras.Model, x: np.ndarray, where: str) -> None:
    expected = tuple(model.input_shape[1:])
    if tuple(x.shape[1:]) != expected:
        raise RunError(f"{where}: the model expects images of shape {expected}, the data has {tuple(x.shape[1:])}")


class StepProgbar(keras.callbacks.ProgbarLogger):
    """Keras' progress bar, its step count held to the epoch's steps: with steps_per_execution, the last
    call of an epoch reports the step its full execution would have ended on (192/188)."""

    def on_train_batch_end(self, batch, logs=None):
        if self.target is not None:
            batch = min(batch, self.target - 1)
        super().on_train_batch_end(batch, logs)


class _RunRecorder(keras.callbacks.Callback):
    """After every epoch: history.csv, model.keras if validation improved, checkpoint and state.

    With `float32_twin` (training in bfloat16), model.keras is that float32 model holding the trained
    weights, so prediction, calibration and export never see the training precision; the checkpoint keeps
    the training model and its optimizer for --resume.
    """

    def __init__(
        self,
        run_dir: Path,
        rows: list[dict],
        best: float,
        started: float,
        float32_twin: keras.Model | None = None,
        on_epoch: EpochCallback | None = None,
    ):
        super().__init__()
        self.run_dir, self.rows, self.best = run_dir, rows, best
        self.epoch_started = started
        self.float32_twin = float32_twin
        self.on_epoch = on_epoch

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        row = {"epoch": epoch + 1, "lr": lr, "seconds": round(time.perf_counter() - self.epoch_started, 3)}
        row.update({k: float(logs[k]) for k in ("loss", "accuracy", "val_loss", "val_accuracy") if k in logs})
        self.rows.append(row)
        runs.write_csv(self.run_dir / runs.HISTORY, self.rows, HISTORY_FIELDS)
        if row.get("val_accuracy", -1.0) > self.best:
            self.best = row["val_accuracy"]
            best = self.model
            if self.float32_twin is not None:
                self.float32_twin.set_weights(self.model.get_weights())  # the variables are float32 already
                best = self.float32_twin
            runs.save_keras_atomic(best, self.run_dir / runs.MODEL)
        runs.save_keras_atomic(self.model, self.run_dir / runs.CHECKPOINT)
        runs.write_json(
            self.run_dir / runs.STATE,
            {"epochs_done": epoch + 1, "best_val_accuracy": self.best, "history": self.rows},
        )
        if self.on_epoch is not None:
            self.on_epoch({**row, "epochs": self.params["epochs"]})


def train(
    model_config: ModelConfig,
    train_config: TrainConfig,
    out_dir: Path,
    *,
    data_dir: Path | None = None,
    overwrite: bool = False,
    verbose: int = 1,
    on_epoch: EpochCallback | None = None,
) -> dict:
    """Train a fresh model into `out_dir`; returns the metrics dict (also in metrics.json).

    verbose 1: Keras' progress bar (for a terminal); 0: none. `on_epoch(row)` gets each epoch's history
    row (epoch, loss, accuracy, val_loss, val_accuracy, lr, seconds) and `epochs`, the total."""
    out_dir = Path(out_dir)
    atomic.remove_stale(out_dir)  # what a killed run left: before anything looks at the directory
    if out_dir.exists() and not out_dir.is_dir():
        raise RunError(f"--out {out_dir}: is a file; expected a new or empty directory")
    if out_dir.exists() and runs.has_files(out_dir):
        if not (out_dir / runs.CONFIG).is_file():
            raise RunError(f"{out_dir}: not empty and not a run directory; --out needs a new or empty directory")
        if not overwrite:
            raise RunError(f"{out_dir}: already holds a run; pass --resume to continue it or --overwrite to replace it")
    if model_config.architecture == "line":  # lines of digits with CTC: digitlab.line_training
        kwargs = {"data_dir": data_dir, "overwrite": overwrite, "verbose": verbose, "on_epoch": on_epoch}
        return line_training.train(model_config, train_config, out_dir, **kwargs)
    # The whole configuration is checked, the model built included, before anything is written.
    x_tr, y_tr, x_val, y_val, ds = prepare_data(train_config, data_dir)
    train_config = dataclasses.replace(train_config, precision=resolve_precision(train_config.precision))
    keras.utils.set_random_seed(train_config.seed)
    model = _build(model_config, train_config.precision)
    check_input_shape(model, x_tr, str(out_dir))
    steps = math.ceil(len(x_tr) / train_config.batch_size)
    compile_model(model, train_config, steps)
    with runs.lock_run(out_dir):
        if overwrite:
            runs.clear_run(out_dir)
        runs.write_run_config(out_dir, model_config, train_config, ds, {"train": len(x_tr), "validation": len(x_val)})
        return _fit(
            model,
            model_config,
            train_config,
            out_dir,
            (x_tr, y_tr, x_val, y_val),
            rows=[],
            best=-1.0,
            initial_epoch=0,
            verbose=verbose,
            on_epoch=on_epoch,
        )


def _build(model_config: ModelConfig, precision: str) -> keras.Model:
    """build_model, with a one-line error for an activation Keras does not know."""
    try:
        return build_model(model_config, precision)
    except ValueError as e:
        if "activation" in str(e).lower():
            raise DigitlabError(
                f"--activation: unknown activation {model_config.activation!r}; expected a Keras activation "
                "such as relu, gelu, tanh, sigmoid, elu or swish"
            ) from None
        raise


def resume(
    run_dir: Path, *, data_dir: Path | None = None, verbose: int = 1, on_epoch: EpochCallback | None = None
) -> dict:
    """Continue an interrupted run from its last completed epoch (verbose and on_epoch as for `train`)."""
    run_dir = Path(run_dir)
    atomic.remove_stale(run_dir)  # what the killed run left
    config = runs.read_run_config(run_dir)
    if config["model"].get("architecture") == "line":
        return line_training.resume(run_dir, config, data_dir=data_dir, verbose=verbose, on_epoch=on_epoch)
    train_config = TrainConfig.from_dict(config["train"])
    if not (run_dir / runs.CHECKPOINT).is_file() or not (run_dir / runs.STATE).is_file():
        raise RunError(f"{run_dir}: no {runs.CHECKPOINT} to resume from; the run never finished an epoch")
    state = runs.read_json(run_dir / runs.STATE)
    done = int(state["epochs_done"])
    finished = done >= train_config.epochs
    if finished and (run_dir / runs.CALIBRATION).is_file() and (run_dir / runs.CURVES).is_file():
        raise RunError(f"{run_dir}: already trained all {train_config.epochs} epochs and calibrated; nothing to resume")
    x_tr, y_tr, x_val, y_val, _ = prepare_data(train_config, data_dir)
    if finished:  # killed after its last epoch: only what follows the epochs is missing
        with runs.lock_run(run_dir):
            parameters = int(load_keras_model(run_dir / runs.MODEL).count_params())
            _finish(run_dir, list(state["history"]), parameters, 0.0, train_config, x_val, y_val)
        return runs.read_json(run_dir / runs.METRICS)
    # Fresh seed per resumed epoch: shuffling differs from an uninterrupted run (see README).
    keras.utils.set_random_seed(train_config.seed + done)
    model = load_keras_model(run_dir / runs.CHECKPOINT, compile=True)  # OneCycle etc. are registered above
    with runs.lock_run(run_dir):
        return _fit(
            model,
            ModelConfig.from_dict(config["model"]),
            train_config,
            run_dir,
            (x_tr, y_tr, x_val, y_val),
            rows=list(state["history"]),
            best=float(state["best_val_accuracy"]),
            initial_epoch=done,
            verbose=verbose,
            on_epoch=on_epoch,
        )


def _fit(
    model,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    run_dir: Path,
    split,
    *,
    rows,
    best,
    initial_epoch,
    verbose,
    on_epoch=None,
) -> dict:
    x_tr, y_tr, x_val, y_val = split
    twin = build_model(model_cfg) if cfg.precision != "float32" else None
    recorder = _RunRecorder(run_dir, rows, best, time.perf_counter(), float32_twin=twin, on_epoch=on_epoch)
    if cfg.augmentation():
        inputs = {
            "x": AugmentedBatches(
                x_tr,
                y_tr,
                cfg.batch_size,
                seed=cfg.seed + initial_epoch,
                epochs=cfg.epochs - initial_epoch,
                **cfg.augmentation(),
            )
        }
    else:
        inputs = {"x": x_tr.astype("float32"), "y": y_tr, "batch_size": cfg.batch_size}
    started = time.perf_counter()
    model.fit(
        **inputs,
        epochs=cfg.epochs,
        initial_epoch=initial_epoch,
        validation_data=(x_val.astype("float32"), y_val),
        callbacks=[recorder, StepProgbar()] if verbose else [recorder],
        verbose=verbose,
    )
    seconds = time.perf_counter() - started
    _finish(run_dir, recorder.rows, int(model.count_params()), seconds, cfg, x_val, y_val)
    return runs.read_json(run_dir / runs.METRICS)


def _finish(run_dir: Path, rows: list[dict], parameters: int, seconds: float, cfg: TrainConfig, x_val, y_val) -> None:
    """What a run needs after its epochs: metrics.json, curves.png and, once every epoch is done, the
    calibration of the best model on the validation split. `--resume` calls it again for a run killed
    between its last epoch and its calibration."""
    best_row = max(rows, key=lambda r: r.get("val_accuracy", -1.0))
    metrics = {
        "validation": {
            "best_epoch": best_row["epoch"],
            "accuracy": best_row["val_accuracy"],
            "loss": best_row["val_loss"],
        },
        "train": {"accuracy": best_row["accuracy"], "loss": best_row["loss"]},
        "epochs": len(rows),
        "train_seconds": round(sum(r["seconds"] for r in rows), 3),
        "last_fit_seconds": round(seconds, 3),
        "parameters": parameters,
    }
    runs.update_json(run_dir / runs.METRICS, **metrics)
    plot_curves(rows, run_dir / runs.CURVES)
    if len(rows) >= cfg.epochs:  # finished: calibrate the best model on the validation split
        (run_dir / runs.CALIBRATION).unlink(missing_ok=True)
        raw = load_predictor(run_dir, require_calibration=False)
        wild = None
        if cfg.calibrate_wild:
            digits, labels = _wild_validation(x_val, y_val, cfg.calibrate_wild)
            wild = (raw.predict_proba(digits), labels, f"{len(labels)} of its digits drawn as people's images")
        fit_calibration(run_dir, raw.predict_proba(x_val), y_val.astype(int), wild)


WILD_CALIBRATION_SEED = 1  # the wild set's benchmark (bench/robustness.py) draws with seed 0


def _wild_validation(x_val, y_val, per_column: int) -> tuple[np.ndarray, np.ndarray]:
    """Validation digits drawn as people's images and preprocessed as theirs are; those preprocessing
    refuses ("not a digit") are left out, as the model is never asked about them."""
    columns = preprocess_wild(build_wild(x_val, y_val, per_column=per_column, seed=WILD_CALIBRATION_SEED))
    kept = [(d[i], y[i]) for d, y, reasons in columns.values() for i, r in enumerate(reasons) if r is None]
    return np.stack([d for d, _ in kept]), np.array([y for _, y in kept], dtype=int)
