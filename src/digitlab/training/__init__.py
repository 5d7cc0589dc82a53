"""Training: Keras `fit` on the seeded train/validation split, leaving a self-describing run directory.

One loop for every kind of model: what differs between a digit classifier and a line model (the data and
its batches, the loss, the validation score, the answers calibration is fitted on) is a task from
`training.tasks`, chosen once from `ModelConfig.kind`. Every epoch writes history.csv, model.keras when
the validation score improved, and `checkpoint.keras` (weights and optimizer state) and `state.json`
atomically, so `resume(run_dir)` (`digitlab train --resume`) continues an interrupted run: a kill loses
at most the epoch in progress. Once every epoch is done the best model is calibrated (digitlab.calibrate).

In history.csv a line run's `accuracy` and `val_accuracy` are string accuracies (whole lines exactly
right) and its `val_loss` the validation lines' CTC loss.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from digitlab import atomic, runs
from digitlab.calibrate import fit_calibration, fit_numbers
from digitlab.config import ModelConfig, TrainConfig, check_configs, resolve_configs, resolve_precision
from digitlab.data import run_split
from digitlab.data.synth.numbers import SUBSETS, compose_numbers
from digitlab.errors import DigitlabError, RunError
from digitlab.export import export
from digitlab.models import build_model
from digitlab.plots import plot_curves
from digitlab.predict import load_predictor, reading
from digitlab.predict.keras_runtime import load_keras_model
from digitlab.predict.segmented import open_image
from digitlab.training.tasks import DigitTask, LineTask, SmoothedCrossentropy, steps_per_epoch, task_for

__all__ = ["SmoothedCrossentropy", "TrainConfig", "calibrate_numbers", "resolve_configs", "resume", "train"]
EpochCallback = Callable[[dict], None]  # each epoch's history row, "epochs" (the total) and "loss_includes"
STEPS_PER_EXECUTION = DigitTask.steps_per_execution
HISTORY_FIELDS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"]


@keras.saving.register_keras_serializable(package="digitlab")
class OneCycle(keras.optimizers.schedules.CosineDecay):
    """Linear warm-up from peak/25 to `peak` over `warmup` of the steps, then cosine decay to peak/1e4,
    per optimizer step: Keras' CosineDecay with a warm-up, under the name and arguments runs save."""

    def __init__(self, peak: float, total_steps: int, warmup: float = 0.2):
        self.peak, self.total_steps, self.warmup = float(peak), int(total_steps), float(warmup)
        warm = max(1.0, self.warmup * self.total_steps)
        super().__init__(
            self.peak / 25.0,
            max(1.0, self.total_steps - warm),
            alpha=1e-4,
            warmup_target=self.peak,
            warmup_steps=warm,
        )

    def get_config(self) -> dict:
        return {"peak": self.peak, "total_steps": self.total_steps, "warmup": self.warmup}


def make_optimizer(cfg: TrainConfig, steps_per_epoch: int, clipnorm: float | None = None) -> keras.optimizers.Optimizer:
    lr = cfg.learning_rate
    if cfg.schedule == "onecycle":
        lr = OneCycle(cfg.learning_rate, cfg.epochs * steps_per_epoch, cfg.warmup)
    decay = cfg.weight_decay or None
    if cfg.optimizer == "sgd":
        return keras.optimizers.SGD(
            learning_rate=lr, momentum=0.9, nesterov=True, weight_decay=decay, clipnorm=clipnorm
        )
    if decay:
        return keras.optimizers.AdamW(learning_rate=lr, weight_decay=decay, clipnorm=clipnorm)
    return keras.optimizers.Adam(learning_rate=lr, clipnorm=clipnorm)


def compile_model(
    model: keras.Model, cfg: TrainConfig, steps_per_epoch: int, task: type[DigitTask] | type[LineTask] = DigitTask
) -> keras.Model:
    """The optimizer and schedule of `cfg`, and the loss and metrics of the task's kind."""
    model.compile(
        optimizer=make_optimizer(cfg, steps_per_epoch, task.clipnorm),
        loss=task.loss(cfg),
        metrics=task.metrics(cfg),
        steps_per_execution=task.steps_per_execution,
    )
    return model


class StepProgbar(keras.callbacks.ProgbarLogger):
    """Keras' progress bar, its step count held to the epoch's steps: with steps_per_execution, the last
    call of an epoch reports the step its full execution would have ended on (192/188)."""

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.target is not None:
            batch = min(batch, self.target - 1)
        super().on_train_batch_end(batch, logs)


class _RunRecorder(keras.callbacks.Callback):
    """After every epoch: the task's scores and the learning rate into history.csv, model.keras if the
    validation score improved, checkpoint.keras and state.json.

    With `float32_twin` (training in bfloat16), model.keras is that float32 model holding the trained
    weights, so prediction, calibration and export never see the training precision; the checkpoint keeps
    the training model and its optimizer for --resume.
    """

    def __init__(
        self,
        run_dir: Path,
        task: DigitTask | LineTask,
        inputs: dict,
        rows: list[dict],
        best: float,
        float32_twin: keras.Model | None = None,
        on_epoch: EpochCallback | None = None,
    ):
        super().__init__()
        self.run_dir, self.task, self.inputs, self.rows, self.best = run_dir, task, inputs, rows, best
        self.epoch_started = time.perf_counter()
        self.float32_twin = float32_twin
        self.on_epoch = on_epoch

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        scores = self.task.scores(self.model, logs or {}, self.inputs)
        lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        row = {"epoch": epoch + 1, **scores, "lr": lr, "seconds": round(time.perf_counter() - self.epoch_started, 3)}
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
            includes = loss_includes(self.task.cfg) if isinstance(self.task, DigitTask) else ""
            self.on_epoch({**row, "epochs": self.params["epochs"], "loss_includes": includes})


def epoch_line(row: dict) -> str:
    """One epoch as one plain line (what `digitlab train` prints off a terminal, and `train()` in a pipe or
    a notebook), saying what besides cross-entropy its losses hold (label smoothing), so that they are not
    mistaken for `evaluate`'s plain test loss."""
    line = f"epoch {row['epoch']}/{row['epochs']}: loss {row['loss']:.4f}, accuracy {row['accuracy']:.4f}"
    if "val_loss" in row:
        line += f", val loss {row['val_loss']:.4f}, val accuracy {row['val_accuracy']:.4f}"
    line += f", {row['seconds']:.1f} s"
    return line + (f" (losses include {row['loss_includes']})" if row.get("loss_includes") else "")


def loss_includes(train_config: TrainConfig) -> str:
    """What a digit run's training and validation losses hold besides cross-entropy, in words ("" if nothing)."""
    parts = [f"label smoothing {train_config.label_smoothing:g}"] if train_config.label_smoothing else []
    parts += ["the non-digits' term"] if train_config.outliers else []
    return " and ".join(parts)


def _print_epoch(row: dict) -> None:
    print(epoch_line(row), flush=True)


def _progress(verbose: int | str, on_epoch: EpochCallback | None) -> tuple[int, EpochCallback | None]:
    """verbose "auto": Keras' bar on a terminal only; elsewhere (a pipe, a log, a notebook) one plain line
    per epoch, never a bar's carriage returns and ANSI escapes."""
    if verbose != "auto":
        return int(verbose), on_epoch
    if sys.stdout.isatty():
        return 1, on_epoch
    return 0, on_epoch or _print_epoch


def train(
    model_config: ModelConfig,
    train_config: TrainConfig,
    out_dir: Path,
    *,
    data_dir: Path | None = None,
    overwrite: bool = False,
    verbose: int | str = "auto",
    on_epoch: EpochCallback | None = None,
) -> dict:
    """Train a fresh model of any kind into `out_dir`; returns the metrics dict (also in metrics.json).

    verbose 1: Keras' progress bar (for a terminal); 0: none; "auto": the bar on a terminal, else one line
    per epoch (`epoch_line`). `on_epoch(row)` gets each epoch's history row (epoch, loss, accuracy,
    val_loss, val_accuracy, lr, seconds), `epochs`, the total, and `loss_includes` (`loss_includes`)."""
    verbose, on_epoch = _progress(verbose, on_epoch)
    out_dir = Path(out_dir)
    runs.check_new_run(out_dir, overwrite)
    # The whole configuration is checked, the model built included, before anything is written.
    check_configs(model_config, train_config)
    train_config = dataclasses.replace(train_config, precision=resolve_precision(train_config.precision))
    task = task_for(model_config, train_config, data_dir)
    keras.utils.set_random_seed(train_config.seed)
    model = _build(model_config, train_config.precision)
    task.check(model, str(out_dir))
    compile_model(model, train_config, steps_per_epoch(task, train_config), type(task))
    with runs.lock_run(out_dir):
        if overwrite:
            runs.clear_run(out_dir)
        runs.write_run_config(out_dir, model_config, train_config, task.data.dataset, task.sizes())
        metrics = _fit(
            model, model_config, task, out_dir, rows=[], best=-1.0, initial_epoch=0, verbose=verbose, on_epoch=on_epoch
        )
        metrics = export_onnx(out_dir, train_config, data_dir) or metrics
    train_digit_part(out_dir, train_config, data_dir, verbose)
    return calibrate_numbers(out_dir, data_dir) or metrics


def export_onnx(run_dir: Path, cfg: TrainConfig, data_dir: Path | None = None) -> dict | None:
    """With `cfg.export_onnx`, the finished run's model.onnx exported and checked as `digitlab export RUN`
    does (its record lands in metrics.json under exports); the metrics then, else None. Without the export
    extra (tf2onnx), on another Keras backend, or when the check fails, the run simply has no model.onnx and
    reads on Keras."""
    if not cfg.export_onnx or keras.backend.backend() != "tensorflow":
        return None
    try:
        export(run_dir, "onnx", data_dir=data_dir)
    except DigitlabError:  # the export extra missing, or a layer tf2onnx cannot convert: `digitlab export` says
        return None
    return runs.read_json(run_dir / runs.METRICS)


def train_digit_part(run_dir: Path, cfg: TrainConfig, data_dir: Path | None = None, verbose: int | str = 0) -> None:
    """A line run's digit model (`cfg.digit_model`, a digit preset) trained into its digits/ folder on the
    same data, split and seed, for the combined reader; nothing when it names none or one is there."""
    part = Path(run_dir) / runs.DIGIT_PART
    if cfg.digit_model is None or (part / runs.CALIBRATION).is_file():
        return
    same = {k: getattr(cfg, k) for k in ("seed", "split_seed", "val_fraction", "dataset", "limit")}
    model_config, train_config = resolve_configs(cfg.digit_model, **same)
    train(model_config, train_config, part, data_dir=data_dir, overwrite=True, verbose=verbose)


NUMBERS_PER_SUBSET = 240  # validation numbers per subset of data.synth.numbers that calibrate_numbers reads
NUMBERS_SEED = 0


def calibrate_numbers(
    run_dir: Path, data_dir: Path | None = None, per_subset: int = NUMBERS_PER_SUBSET, seed: int = NUMBERS_SEED
) -> dict | None:
    """A line run holding a digit model (digits/): the combined reader's rule for whole numbers fitted
    (calibrate.fit_numbers) on `per_subset` numbers of each subset of data.synth.numbers composed from the
    run's validation split, read as `read` reads them (ONNX Runtime where exported); the run's metrics then.
    None, and nothing written, for any other run. Training's end calls it after the digit model; it can be
    called on a finished run to refit the rule alone."""
    run_dir = Path(run_dir)
    if not (run_dir / runs.DIGIT_PART / runs.CALIBRATION).is_file() or not (run_dir / runs.CALIBRATION).is_file():
        return None
    cfg = TrainConfig.from_dict(runs.read_run_config(run_dir)["train"])
    split = run_split(cfg, data_dir)
    predictor = load_predictor(run_dir, runtime=None)
    digits = reading.digit_part(predictor)
    if digits is None:
        return None
    features, right = [], []
    for subset in SUBSETS:
        for number in compose_numbers(split.x_val, split.y_val, subset, per_subset, seed=seed):
            seen = reading.candidates(predictor, digits, *open_image(number.image))
            chosen = reading.combine(seen)  # the text the rule judges: the same with any rule
            if chosen.text is not None:
                features.append(reading.number_features(seen, chosen))
                right.append(chosen.text == number.text)
    with runs.lock_run(run_dir):
        fit_numbers(
            run_dir,
            np.array(features).reshape(len(features), len(reading.NUMBER_FEATURES)),
            np.array(right, bool),
            reading.NUMBER_FEATURES,
            f"{len(right)} numbers composed from the validation split ({per_subset} per subset: {', '.join(SUBSETS)})",
        )
    return runs.read_json(run_dir / runs.METRICS)


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
    run_dir: Path, *, data_dir: Path | None = None, verbose: int | str = "auto", on_epoch: EpochCallback | None = None
) -> dict:
    """Continue an interrupted run of any kind from its last completed epoch (verbose and on_epoch as for
    `train`)."""
    verbose, on_epoch = _progress(verbose, on_epoch)
    run_dir = Path(run_dir)
    atomic.remove_stale(run_dir)  # what the killed run left
    config = runs.read_run_config(run_dir)
    model_config = ModelConfig.from_dict(config["model"])
    train_config = TrainConfig.from_dict(config["train"])
    if not (run_dir / runs.CHECKPOINT).is_file() or not (run_dir / runs.STATE).is_file():
        raise RunError(runs.unfinished(run_dir))  # the same advice as predict's
    state = runs.read_json(run_dir / runs.STATE)
    done = int(state["epochs_done"])
    finished = done >= train_config.epochs
    if finished and (run_dir / runs.CALIBRATION).is_file() and (run_dir / runs.CURVES).is_file():
        if train_config.digit_model and (
            not (run_dir / runs.DIGIT_PART / runs.CALIBRATION).is_file()
            or "numbers" not in runs.read_json(run_dir / runs.CALIBRATION)
        ):  # killed while training its digit model (a finished one is kept), or before its rule for numbers
            train_digit_part(run_dir, train_config, data_dir, verbose)
            return calibrate_numbers(run_dir, data_dir) or runs.read_json(run_dir / runs.METRICS)
        raise RunError(f"{run_dir}: already trained all {train_config.epochs} epochs and calibrated; nothing to resume")
    task = task_for(model_config, train_config, data_dir)
    rows = list(state["history"])
    if finished:  # killed after its last epoch: only what follows the epochs is missing
        with runs.lock_run(run_dir):
            _finish(run_dir, task, rows, int(load_keras_model(run_dir / runs.MODEL).count_params()), 0.0)
            export_onnx(run_dir, train_config, data_dir)
        train_digit_part(run_dir, train_config, data_dir, verbose)
        return calibrate_numbers(run_dir, data_dir) or runs.read_json(run_dir / runs.METRICS)
    # Fresh seed per resumed epoch: shuffling differs from an uninterrupted run (see README).
    keras.utils.set_random_seed(train_config.seed + done)
    model = load_keras_model(run_dir / runs.CHECKPOINT, compile=True)  # the losses and OneCycle are registered
    with runs.lock_run(run_dir):
        metrics = _fit(
            model,
            model_config,
            task,
            run_dir,
            rows=rows,
            best=float(state["best_val_accuracy"]),
            initial_epoch=done,
            verbose=verbose,
            on_epoch=on_epoch,
        )
        metrics = export_onnx(run_dir, train_config, data_dir) or metrics
    train_digit_part(run_dir, train_config, data_dir, verbose)
    return calibrate_numbers(run_dir, data_dir) or metrics


def _fit(
    model: keras.Model,
    model_config: ModelConfig,
    task: DigitTask | LineTask,
    run_dir: Path,
    *,
    rows: list[dict],
    best: float,
    initial_epoch: int,
    verbose: int,
    on_epoch: EpochCallback | None,
) -> dict:
    cfg = task.cfg
    twin = build_model(model_config) if cfg.precision != "float32" else None
    inputs = task.fit_inputs(initial_epoch)
    recorder = _RunRecorder(run_dir, task, inputs, rows, best, float32_twin=twin, on_epoch=on_epoch)
    started = time.perf_counter()
    model.fit(
        **inputs,
        epochs=cfg.epochs,
        initial_epoch=initial_epoch,
        callbacks=[recorder, StepProgbar()] if verbose else [recorder],
        verbose=verbose,
    )
    _finish(run_dir, task, recorder.rows, int(model.count_params()), time.perf_counter() - started)
    return runs.read_json(run_dir / runs.METRICS)


def _finish(run_dir: Path, task: DigitTask | LineTask, rows: list[dict], parameters: int, seconds: float) -> None:
    """What a run needs after its epochs: metrics.json, curves.png and, once every epoch is done, the
    calibration of the best model on validation data. `--resume` calls it again for a run killed between
    its last epoch and its calibration."""
    best_row = max(rows, key=lambda r: r.get("val_accuracy", -1.0))
    metrics = {
        "validation": {
            "best_epoch": best_row["epoch"],
            "accuracy": best_row["val_accuracy"],
            "loss": best_row["val_loss"],
            **task.validation_metrics(best_row),
        },
        "train": {"accuracy": best_row["accuracy"], "loss": best_row["loss"]},
        "epochs": len(rows),
        "train_seconds": round(sum(r["seconds"] for r in rows), 3),
        "last_fit_seconds": round(seconds, 3),
        "parameters": parameters,
    }
    runs.update_json(run_dir / runs.METRICS, **metrics)
    plot_curves(rows, run_dir / runs.CURVES)
    if len(rows) >= task.cfg.epochs:  # finished: calibrate the best model on validation data
        (run_dir / runs.CALIBRATION).unlink(missing_ok=True)
        fit_calibration(run_dir, *task.answers(run_dir))
