"""Training a line model (architecture "line") with CTC on lines generated afresh every epoch.

`training.train` and `training.resume` hand a line model's run to `train` and `resume` here; the run
directory is the same as every run's (runs.py): config.json, environment.json, history.csv,
model.keras (best validation string accuracy), checkpoint.keras and state.json after every epoch,
curves.png, metrics.json, and calibration.json once every epoch is done.

In history.csv, `accuracy` and `val_accuracy` are *string* accuracies (whole lines exactly right, by
greedy decoding) on LINE_SAMPLE lines of the epoch's training lines and on the validation lines;
`val_loss` is the mean CTC loss on the validation lines.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import keras
import numpy as np
from scipy.optimize import minimize_scalar

from digitlab import runs
from digitlab.calibrate import MIN_COVERAGE, TARGET_ACCURACY
from digitlab.config import ModelConfig, TrainConfig
from digitlab.data import load_dataset
from digitlab.errors import RunError
from digitlab.line_model import build_line_model, frames
from digitlab.lines import PAD_LABEL, make_lines, split
from digitlab.metrics import confidence_bins
from digitlab.plots import plot_curves
from digitlab.predict.ctc import greedy_decode
from digitlab.predict.keras_runtime import load_keras_model

HISTORY_FIELDS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"]
LINE_SAMPLE = 512  # training lines whose string accuracy each epoch reports
VAL_SEED = 7  # the validation lines' seed, with the split seed: the same lines for every run of a split
STEPS_PER_EXECUTION = 8  # optimizer steps per call into the backend
CALIBRATION_BINS = 15
THRESHOLD_RULE = (
    f"lowest calibrated string confidence at which validation lines at or above it are {TARGET_ACCURACY:.1%} "
    f"right, capped so that at least {MIN_COVERAGE:.0%} of validation lines are accepted"
)


@keras.saving.register_keras_serializable(package="digitlab")
class CTCLoss(keras.losses.Loss):
    """CTC of padded labels (batch, max_digits), PAD_LABEL after the digits, against per-frame
    probabilities (batch, frames, classes + 1), the blank last. `keras.losses.CTC` takes every label
    row as full length; lines have 1 to 10 digits."""

    def __init__(self, name: str = "ctc", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        ops = keras.ops
        labels = ops.cast(y_true, "int32")
        present = labels != PAD_LABEL
        lengths = ops.sum(ops.cast(present, "int32"), axis=1)
        frames_ = ops.full((ops.shape(y_pred)[0],), ops.shape(y_pred)[1], dtype="int32")
        log_p = ops.log(ops.maximum(ops.cast(y_pred, "float32"), 1e-30))  # log-softmax of log p is log p
        blank = y_pred.shape[-1] - 1
        return ops.ctc_loss(ops.where(present, labels, 0), log_p, lengths, frames_, mask_index=blank)


class LineBatches(keras.utils.PyDataset):
    """Batches of `lines` freshly generated training lines per epoch; the next epoch's lines are drawn
    in a background thread while one trains. Epoch e's lines come from seed (seed, e), so a resumed run
    sees the lines an uninterrupted one would."""

    def __init__(self, x, y, lines: int, batch_size: int, *, seed: int, first_epoch: int, epochs: int):
        super().__init__()
        self.x, self.y, self.lines, self.batch_size, self.seed = x, y, lines, batch_size, seed
        self.next_epoch, self.last_epoch = first_epoch, epochs - 1
        self.current = self.upcoming = None
        self.sample = None  # the first LINE_SAMPLE lines of the epoch in progress or just ended
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="digitlab-lines")

    def draw(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        return make_lines(self.x, self.y, self.lines, np.random.default_rng([self.seed, epoch]))

    def _start_epoch(self):
        epoch = self.next_epoch
        self.current = self.upcoming.result() if self.upcoming is not None else self.draw(epoch)
        self.sample = (self.current[0][:LINE_SAMPLE], self.current[1][:LINE_SAMPLE])
        self.next_epoch += 1
        self.upcoming = self.executor.submit(self.draw, self.next_epoch) if self.next_epoch <= self.last_epoch else None

    def __len__(self):
        return math.ceil(self.lines / self.batch_size)

    def __getitem__(self, i):
        if self.current is None:
            self._start_epoch()
        batch = slice(i * self.batch_size, (i + 1) * self.batch_size)
        return self.current[0][batch].astype(np.float32), self.current[1][batch]

    def on_epoch_end(self):
        self.current = None
        if self.upcoming is None:
            self.executor.shutdown(wait=False)


def string_accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Share of lines whose greedy reading is exactly their label."""
    decoded = greedy_decode(probs)
    return float(np.mean([d.digits == tuple(int(v) for v in row if v != PAD_LABEL) for d, row in zip(decoded, labels)]))


def validation_lines(cfg: TrainConfig, data_dir=None) -> tuple[np.ndarray, np.ndarray]:
    """The run's validation lines: cfg.val_lines lines of the validation split, the same every epoch."""
    x_val, y_val = split(cfg, "validation", data_dir)
    return make_lines(x_val, y_val, cfg.val_lines, np.random.default_rng([cfg.split_seed, VAL_SEED]))


def _predict(model, x: np.ndarray) -> np.ndarray:
    return np.concatenate(
        [
            keras.ops.convert_to_numpy(model(x[i : i + 512].astype(np.float32), training=False))
            for i in range(0, len(x), 512)
        ]
    )


class _LineRecorder(keras.callbacks.Callback):
    """After every epoch: string accuracies and validation loss into history.csv, model.keras if the
    validation string accuracy improved, checkpoint.keras and state.json."""

    def __init__(self, run_dir: Path, rows: list[dict], best: float, batches: LineBatches, val, on_epoch=None):
        super().__init__()
        self.run_dir, self.rows, self.best, self.batches, self.val = run_dir, rows, best, batches, val
        self.on_epoch = on_epoch
        self.started = time.perf_counter()
        self.loss = CTCLoss()

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        x_val, y_val = self.val
        probs = _predict(self.model, x_val)
        sample = self.batches.sample
        train_probs = _predict(self.model, sample[0])
        row = {
            "epoch": epoch + 1,
            "loss": float((logs or {}).get("loss", float("nan"))),
            "accuracy": string_accuracy(train_probs, sample[1]),
            "val_loss": float(keras.ops.convert_to_numpy(self.loss(y_val, probs))),
            "val_accuracy": string_accuracy(probs, y_val),
            "lr": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
            "seconds": round(time.perf_counter() - self.started, 3),
        }
        self.rows.append(row)
        runs.write_csv(self.run_dir / runs.HISTORY, self.rows, HISTORY_FIELDS)
        if row["val_accuracy"] > self.best:
            self.best = row["val_accuracy"]
            runs.save_keras_atomic(self.model, self.run_dir / runs.MODEL)
        runs.save_keras_atomic(self.model, self.run_dir / runs.CHECKPOINT)
        runs.write_json(
            self.run_dir / runs.STATE, {"epochs_done": epoch + 1, "best_val_accuracy": self.best, "history": self.rows}
        )
        if self.on_epoch is not None:
            self.on_epoch({**row, "epochs": self.params["epochs"]})


def make_optimizer(cfg: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """Adam(W); "onecycle": linear warm-up from lr/25 to lr over `warmup` of the steps, then cosine decay."""
    lr = cfg.learning_rate
    if cfg.schedule == "onecycle":
        total = cfg.epochs * steps_per_epoch
        warm = max(1, round(cfg.warmup * total))
        lr = keras.optimizers.schedules.CosineDecay(
            cfg.learning_rate / 25.0,
            max(1, total - warm),
            alpha=1e-4,
            warmup_target=cfg.learning_rate,
            warmup_steps=warm,
        )
    if cfg.weight_decay:
        return keras.optimizers.AdamW(learning_rate=lr, weight_decay=cfg.weight_decay, clipnorm=5.0)
    return keras.optimizers.Adam(learning_rate=lr, clipnorm=5.0)  # CTC's early gradients can spike


def train(
    model_config: ModelConfig,
    train_config: TrainConfig,
    out_dir: Path,
    *,
    data_dir=None,
    overwrite=False,
    verbose=1,
    on_epoch=None,
) -> dict:
    """Train a fresh line model into `out_dir` (checked by `training.train`); returns metrics.json's dict."""
    out_dir = Path(out_dir)
    x_tr, y_tr = split(train_config, "train", data_dir)
    keras.utils.set_random_seed(train_config.seed)
    model = build_line_model(model_config)
    steps = math.ceil(train_config.lines / train_config.batch_size)
    model.compile(
        optimizer=make_optimizer(train_config, steps), loss=CTCLoss(), steps_per_execution=STEPS_PER_EXECUTION
    )
    with runs.lock_run(out_dir):
        if overwrite:
            runs.clear_run(out_dir)
        ds = load_dataset(train_config.dataset, data_dir=data_dir)
        lines = {"lines_per_epoch": train_config.lines, "frames": frames(model_config)}
        data = {"train": len(x_tr), "validation": train_config.val_lines, **lines}
        runs.write_run_config(out_dir, model_config, train_config, ds, data)
        return _fit(
            model,
            train_config,
            out_dir,
            (x_tr, y_tr),
            rows=[],
            best=-1.0,
            initial_epoch=0,
            data_dir=data_dir,
            verbose=verbose,
            on_epoch=on_epoch,
        )


def resume(run_dir: Path, config: dict, *, data_dir=None, verbose=1, on_epoch=None) -> dict:
    """Continue an interrupted line run (config: its config.json) from its last completed epoch."""
    run_dir = Path(run_dir)
    train_config = TrainConfig.from_dict(config["train"])
    if not (run_dir / runs.CHECKPOINT).is_file() or not (run_dir / runs.STATE).is_file():
        raise RunError(f"{run_dir}: no {runs.CHECKPOINT} to resume from; the run never finished an epoch")
    state = runs.read_json(run_dir / runs.STATE)
    done = int(state["epochs_done"])
    if done >= train_config.epochs and (run_dir / runs.CALIBRATION).is_file():
        raise RunError(f"{run_dir}: already trained all {train_config.epochs} epochs and calibrated; nothing to resume")
    x_tr, y_tr = split(train_config, "train", data_dir)
    with runs.lock_run(run_dir):
        if done >= train_config.epochs:
            _finish(run_dir, list(state["history"]), 0.0, train_config, validation_lines(train_config, data_dir))
            return runs.read_json(run_dir / runs.METRICS)
        keras.utils.set_random_seed(train_config.seed + done)
        model = load_keras_model(run_dir / runs.CHECKPOINT, compile=True)
        return _fit(
            model,
            train_config,
            run_dir,
            (x_tr, y_tr),
            rows=list(state["history"]),
            best=float(state["best_val_accuracy"]),
            initial_epoch=done,
            data_dir=data_dir,
            verbose=verbose,
            on_epoch=on_epoch,
        )


def _fit(
    model, cfg: TrainConfig, run_dir: Path, train_split, *, rows, best, initial_epoch, data_dir, verbose, on_epoch
) -> dict:
    val = validation_lines(cfg, data_dir)
    batches = LineBatches(
        *train_split, cfg.lines, cfg.batch_size, seed=cfg.seed, first_epoch=initial_epoch, epochs=cfg.epochs
    )
    recorder = _LineRecorder(run_dir, rows, best, batches, val, on_epoch)
    started = time.perf_counter()
    model.fit(batches, epochs=cfg.epochs, initial_epoch=initial_epoch, callbacks=[recorder], verbose=verbose)
    _finish(run_dir, recorder.rows, time.perf_counter() - started, cfg, val, int(model.count_params()))
    return runs.read_json(run_dir / runs.METRICS)


def _finish(
    run_dir: Path, rows: list[dict], seconds: float, cfg: TrainConfig, val, parameters: int | None = None
) -> None:
    """metrics.json and curves.png; once every epoch is done, the string confidence's calibration."""
    best_row = max(rows, key=lambda r: r["val_accuracy"])
    metrics = {
        "validation": {
            "best_epoch": best_row["epoch"],
            "accuracy": best_row["val_accuracy"],
            "string_accuracy": best_row["val_accuracy"],
            "loss": best_row["val_loss"],
            "lines": len(val[0]),
        },
        "train": {"accuracy": best_row["accuracy"], "loss": best_row["loss"]},
        "epochs": len(rows),
        "train_seconds": round(sum(r["seconds"] for r in rows), 3),
        "last_fit_seconds": round(seconds, 3),
    }
    if parameters is not None:
        metrics["parameters"] = parameters
    runs.update_json(run_dir / runs.METRICS, **metrics)
    plot_curves(rows, run_dir / runs.CURVES)
    if len(rows) >= cfg.epochs:
        model = load_keras_model(run_dir / runs.MODEL)
        calibrate_lines(run_dir, _predict(model, val[0]), val[1])


def calibrate_lines(run_dir: Path, probs: np.ndarray, labels: np.ndarray) -> dict:
    """Fit the temperature of the frames' probabilities so that the best path's probability is the
    chance that the line is read right (least log-loss on validation lines), and the unsure threshold
    by the same rule as single digits; calibration.json, and `calibration` in metrics.json."""
    truth = [tuple(int(v) for v in row if v != PAD_LABEL) for row in labels]
    right = np.array([d.digits == t for d, t in zip(greedy_decode(probs), truth)])

    def confidences(temperature: float) -> np.ndarray:
        return np.array([d.confidence for d in greedy_decode(probs, temperature)])

    def log_loss(log_t: float) -> float:
        c = np.clip(confidences(float(np.exp(log_t))), 1e-6, 1 - 1e-6)
        return float(-np.mean(np.where(right, np.log(c), np.log(1 - c))))

    fitted = minimize_scalar(log_loss, bounds=(np.log(0.2), np.log(5.0)), method="bounded", options={"xatol": 1e-3})
    temperature = float(np.exp(fitted.x))
    before, after = confidences(1.0), confidences(temperature)
    order = np.argsort(-after)
    accepted_accuracy = np.cumsum(right[order]) / np.arange(1, len(right) + 1)
    ok = np.flatnonzero(accepted_accuracy >= TARGET_ACCURACY)
    n = max(int(ok[-1]) + 1 if ok.size else 0, int(np.ceil(MIN_COVERAGE * len(right))))
    threshold = float(after[order][min(n, len(right)) - 1])
    accepted = after >= threshold
    result = {
        "kind": "string",
        "temperature": temperature,
        "threshold": threshold,
        "threshold_rule": THRESHOLD_RULE,
        "fitted_on": f"{len(right)} validation lines",
        "string_accuracy": float(right.mean()),
        "ece_before": _ece(before, right),
        "ece_after": _ece(after, right),
        "validation_coverage": float(accepted.mean()),
        "validation_accepted_accuracy": float(right[accepted].mean()) if accepted.any() else float("nan"),
    }
    runs.write_json(Path(run_dir) / runs.CALIBRATION, result)
    runs.update_json(Path(run_dir) / runs.METRICS, calibration=result)
    return result


def _ece(confidence: np.ndarray, right: np.ndarray) -> float:
    """Expected calibration error of a binary confidence (is the line right?), equal-width bins."""
    which = confidence_bins(confidence, CALIBRATION_BINS)
    return float(
        sum(
            (which == b).mean() * abs(right[which == b].mean() - confidence[which == b].mean())
            for b in range(CALIBRATION_BINS)
            if (which == b).any()
        )
    )
