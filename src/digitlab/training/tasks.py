"""What differs between training a digit model and a line model, chosen once from the run's kind: the
data and its batches, the loss, the validation score, and the answers calibration is fitted on. The loop
that uses them, the recorder and the run directory are the same for both (digitlab.training).

- digits (architectures "mlp", "cnn"): the run's split of 28x28 digits, with `outliers` non-digit marks
  among them (digitlab.data.synth.nondigits), warped afresh each epoch when the configuration asks for it
  (training.augment); cross-entropy, optionally label-smoothed, for non-digits to the uniform over the
  digits or to the model's "not a digit" output (TrainConfig.outlier_loss); the
  score is accuracy, from Keras' own validation pass; calibration on the validation digits and, with
  `calibrate_wild` and `calibrate_nondigits`, on validation digits drawn as people's images
  (digitlab.data.synth.wild) and on validation non-digits.
- lines (architecture "line"): `lines` handwritten number lines generated afresh each epoch from the
  training digits (digitlab.data.synth.lines), CTC; the score is *string* accuracy (whole lines exactly
  right, by greedy decoding) on LINE_SAMPLE of the epoch's training lines and on `val_lines` validation lines, the
  same every epoch; calibration of the string's confidence on those validation lines. With `outliers`, that
  share of the lines carries a non-digit mark in place of a digit ("train" family; the validation lines the
  "validation" family's), labelled the model's "not a digit" symbol; the reader refuses a line read with
  one whatever its confidence, so calibration's threshold is fitted on the lines read without.
"""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np

from digitlab.calibrate import Answers, digit_answers, nondigit_answers, string_answers
from digitlab.config import ModelConfig, TrainConfig, nondigit_output
from digitlab.data import RunSplit, run_split
from digitlab.data.synth.lines import MARK_LABEL, PAD_LABEL, make_lines, validation_lines
from digitlab.data.synth.nondigits import line_marks, nondigits
from digitlab.data.synth.wild import build_wild, preprocess_wild
from digitlab.errors import RunError
from digitlab.models import frames
from digitlab.predict import load_predictor
from digitlab.predict.ctc import greedy_decode
from digitlab.training.augment import AugmentedBatches
from digitlab.training.epochs import EpochBatches

LINE_SAMPLE = 512  # training lines whose string accuracy each epoch reports
WILD_CALIBRATION_SEED = 1  # the wild set's benchmark (bench/robustness.py) draws with seed 0
CHUNK = 512  # lines per model call when scoring
OUTLIER = -1  # the label of a non-digit in a digit model's training data
NONDIGIT_SEED = 5  # the non-digits' seed, with the run's seed
LINE_MARKS = 4000  # "train" marks a line model's training lines draw theirs from


@keras.saving.register_keras_serializable(package="digitlab")
class SmoothedCrossentropy(keras.losses.Loss):
    """Cross-entropy of integer labels against smoothed targets: 1 - smoothing on the true class plus
    smoothing / classes on every class. Keras's sparse loss has no smoothing; this saves one-hot labels.

    A label of OUTLIER marks a non-digit, whose loss is `outlier_weight` times
    - outlier exposure (Hendrycks et al., ICLR 2019): the cross-entropy of its probabilities to the uniform
      distribution, so that the model learns to be unsure of what is not a digit;
    - with `nondigit_class`, a model with a "not a digit" output (models.build_model, whose probabilities
      leave it what they leave of 1): the smoothed cross-entropy to that output, which every digit's
      target also spreads its smoothing over."""

    def __init__(
        self,
        smoothing: float = 0.1,
        outlier_weight: float = 0.0,
        name: str = "smoothed_crossentropy",
        nondigit_class: bool = False,
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.smoothing = float(smoothing)
        self.outlier_weight = float(outlier_weight)
        self.nondigit_class = bool(nondigit_class)

    def call(self, y_true, y_pred):  # tensors of the backend
        ops = keras.ops
        labels = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        if self.nondigit_class:  # the non-digit's probability is the rest, the last class
            y_pred = ops.cast(y_pred, "float32")
            y_pred = ops.concatenate([y_pred, 1.0 - ops.sum(y_pred, axis=-1, keepdims=True)], axis=-1)
            labels = ops.where(labels == OUTLIER, y_pred.shape[-1] - 1, labels)
        one_hot = ops.one_hot(ops.maximum(labels, 0), y_pred.shape[-1], dtype=y_pred.dtype)
        loss = keras.losses.categorical_crossentropy(one_hot, y_pred, label_smoothing=self.smoothing)
        if not self.outlier_weight:
            return loss
        if self.nondigit_class:
            weight = ops.where(labels == y_pred.shape[-1] - 1, self.outlier_weight, 1.0)
            return weight * ops.cast(loss, "float32")
        uniform = -ops.mean(ops.log(ops.clip(ops.cast(y_pred, "float32"), 1e-7, 1.0)), axis=-1)
        return ops.where(labels == OUTLIER, self.outlier_weight * uniform, ops.cast(loss, "float32"))

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "smoothing": self.smoothing,
            "outlier_weight": self.outlier_weight,
            "nondigit_class": self.nondigit_class,
        }


@keras.saving.register_keras_serializable(package="digitlab")
class DigitAccuracy(keras.metrics.Metric):
    """Accuracy over the digits of a batch, the non-digits (label OUTLIER) left out: the training accuracy of
    a run with outlier exposure means what it means without."""

    def __init__(self, name: str = "accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.right = self.add_variable(shape=(), initializer="zeros", name="right")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):  # tensors of the backend
        ops = keras.ops
        labels = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        digit = ops.cast(labels >= 0, "float32")
        hit = ops.cast(ops.cast(ops.argmax(y_pred, axis=-1), "int32") == labels, "float32")
        self.right.assign_add(ops.sum(hit * digit))
        self.count.assign_add(ops.sum(digit))

    def result(self):
        return self.right / keras.ops.maximum(self.count, 1.0)

    def reset_state(self) -> None:
        self.right.assign(0.0)
        self.count.assign(0.0)


@keras.saving.register_keras_serializable(package="digitlab")
class CTCLoss(keras.losses.Loss):
    """CTC of padded labels (batch, max_digits), PAD_LABEL after the digits, against per-frame
    probabilities (batch, frames, classes + 1), the blank last. `keras.losses.CTC` takes every label
    row as full length; lines have 1 to 10 digits."""

    def __init__(self, name: str = "ctc", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):  # tensors of the backend
        ops = keras.ops
        labels = ops.cast(y_true, "int32")
        present = labels != PAD_LABEL
        lengths = ops.sum(ops.cast(present, "int32"), axis=1)
        frames_ = ops.full((ops.shape(y_pred)[0],), ops.shape(y_pred)[1], dtype="int32")
        log_p = ops.log(ops.maximum(ops.cast(y_pred, "float32"), 1e-30))  # log-softmax of log p is log p
        blank = y_pred.shape[-1] - 1
        return ops.ctc_loss(ops.where(present, labels, 0), log_p, lengths, frames_, mask_index=blank)


def truths(labels: np.ndarray) -> list[tuple[int, ...]]:
    """Padded line labels (n, max_digits) -> each line's digits."""
    return [tuple(int(v) for v in row if v != PAD_LABEL) for row in labels]


def string_accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Share of lines whose greedy reading is exactly their label."""
    return float(np.mean([d.digits == t for d, t in zip(greedy_decode(probs), truths(labels))]))


def _predict(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """The live model's probabilities, in chunks."""
    return np.concatenate(
        [
            keras.ops.convert_to_numpy(model(x[i : i + CHUNK].astype(np.float32), training=False))
            for i in range(0, len(x), CHUNK)
        ]
    )


class DigitTask:
    """Training a digit classifier (architectures "mlp" and "cnn")."""

    steps_per_execution = 16  # optimizer steps per call into the backend: less Python per step, same maths
    clipnorm = None

    def __init__(self, model_config: ModelConfig, cfg: TrainConfig, data: RunSplit):
        self.cfg, self.data = cfg, data
        self.x_train, self.y_train = data.x_train, data.y_train
        if cfg.outliers:  # non-digits among the training digits, labelled OUTLIER
            count = round(cfg.outliers * len(data.x_train))
            marks, _ = nondigits("train", count, seed=cfg.seed + NONDIGIT_SEED, digits=data.x_train, cache=True)
            self.x_train = np.concatenate([data.x_train, marks])
            self.y_train = np.concatenate([data.y_train.astype(np.int32), np.full(count, OUTLIER, np.int32)])
        self.train_size = len(self.x_train)

    def check(self, model: keras.Model, where: str) -> None:
        expected, got = tuple(model.input_shape[1:]), tuple(self.data.x_train.shape[1:])
        if got != expected:
            raise RunError(f"{where}: the model expects images of shape {expected}, the data has {got}")

    def sizes(self) -> dict:
        sizes = {"train": len(self.data.x_train), "validation": len(self.data.x_val)}
        return {**sizes, "nondigits": self.train_size - sizes["train"]} if self.cfg.outliers else sizes

    @staticmethod
    def loss(cfg: TrainConfig) -> keras.losses.Loss:
        if cfg.label_smoothing or cfg.outliers:
            return SmoothedCrossentropy(
                cfg.label_smoothing,
                cfg.outlier_weight if cfg.outliers else 0.0,
                nondigit_class=nondigit_output(cfg),
            )
        return keras.losses.SparseCategoricalCrossentropy()

    @staticmethod
    def metrics(cfg: TrainConfig) -> list:
        return [DigitAccuracy()] if cfg.outliers else ["accuracy"]

    def fit_inputs(self, initial_epoch: int) -> dict:
        """model.fit's data: the training examples (warped afresh each epoch, or as they are) and the
        validation data Keras scores each epoch."""
        cfg, d = self.cfg, self.data
        # uint8 pixels as they are: the model casts them as they enter (float32 copies: 4x the bytes for
        # Keras to convert)
        validation = (d.x_val, d.y_val)
        if cfg.augmentation():
            batches = AugmentedBatches(
                self.x_train,
                self.y_train,
                cfg.batch_size,
                seed=cfg.seed + initial_epoch,
                epochs=cfg.epochs - initial_epoch,
                **cfg.augmentation(),
            )
            return {"x": batches, "validation_data": validation}
        return {
            "x": self.x_train,
            "y": self.y_train,
            "batch_size": cfg.batch_size,
            "validation_data": validation,
        }

    def scores(self, model: keras.Model, logs: dict, inputs: dict) -> dict:
        """The epoch's loss and accuracy on training and validation data: Keras measured them."""
        return {k: float(logs[k]) for k in ("loss", "accuracy", "val_loss", "val_accuracy") if k in logs}

    def validation_metrics(self, best_row: dict) -> dict:
        return {}

    def wild_digits(self) -> tuple[np.ndarray, np.ndarray]:
        """`calibrate_wild` validation digits per column of the wild set, drawn as people's images and
        preprocessed as theirs are, and their labels; those preprocessing refuses are left out, as the model
        is never asked about them."""
        d = self.data
        wild = build_wild(d.x_val, d.y_val, per_column=self.cfg.calibrate_wild, seed=WILD_CALIBRATION_SEED)
        kept = [
            (x[i], y[i]) for x, y, reasons in preprocess_wild(wild).values() for i, r in enumerate(reasons) if r is None
        ]
        return np.stack([x for x, _ in kept]), np.array([y for _, y in kept], dtype=int)

    def answers(self, run_dir: Path) -> list[Answers]:
        """The best model's answers on the validation digits; with `calibrate_wild`, on validation digits
        drawn as people's images and preprocessed as theirs are (those preprocessing refuses are left out,
        as the model is never asked about them); with `calibrate_nondigits`, on non-digit marks of the
        "validation" family, which the model never trained on."""
        raw = load_predictor(run_dir, require_calibration=False)
        d, cfg = self.data, self.cfg
        sets = [digit_answers(raw.raw_proba(d.x_val), d.y_val)]
        if cfg.calibrate_wild:
            digits, labels = self.wild_digits()
            described = f"{len(labels)} of its digits drawn as people's images"
            sets.append(digit_answers(raw.raw_proba(digits), labels, described, name="wild"))
        if cfg.calibrate_nondigits:
            marks, _ = nondigits("validation", cfg.calibrate_nondigits, seed=cfg.split_seed, digits=d.x_val, cache=True)
            sets.append(nondigit_answers(raw.raw_proba(marks), f"{len(marks)} non-digit marks"))
        return sets


class LineTask:
    """Training a line model (architecture "line") with CTC on lines generated afresh every epoch."""

    steps_per_execution = 8
    clipnorm = 5.0  # CTC's early gradients can spike

    def __init__(self, model_config: ModelConfig, cfg: TrainConfig, data: RunSplit):
        self.cfg, self.data = cfg, data
        self.frames = frames(model_config)
        self.train_size = cfg.lines
        self.val = validation_lines(cfg, data)
        self.marks = None
        if cfg.outliers:  # marks among the training lines' digits
            self.marks, _ = line_marks("train", LINE_MARKS, seed=cfg.seed + NONDIGIT_SEED, cache=True)

    def check(self, model: keras.Model, where: str) -> None:
        """Lines are drawn at the model's input size: nothing to check."""

    def sizes(self) -> dict:
        return {
            "train": len(self.data.x_train),
            "validation": self.cfg.val_lines,
            "lines_per_epoch": self.cfg.lines,
            "frames": self.frames,
            **({"lines_with_a_mark": self.cfg.outliers} if self.cfg.outliers else {}),
        }

    @staticmethod
    def loss(cfg: TrainConfig) -> keras.losses.Loss:
        return CTCLoss()

    @staticmethod
    def metrics(cfg: TrainConfig) -> list:
        return []

    def fit_inputs(self, initial_epoch: int) -> dict:
        cfg, d = self.cfg, self.data
        batches = LineBatches(
            d.x_train,
            d.y_train,
            cfg.lines,
            cfg.batch_size,
            seed=cfg.seed,
            first_epoch=initial_epoch,
            epochs=cfg.epochs,
            marks=self.marks,
            mark_share=cfg.outliers,
        )
        return {"x": batches}

    def scores(self, model: keras.Model, logs: dict, inputs: dict) -> dict:
        """String accuracies on the epoch's first LINE_SAMPLE training lines and on the validation lines,
        and the validation lines' CTC loss."""
        x_val, y_val = self.val
        probs = _predict(model, x_val)
        sample_x, sample_y = (a[:LINE_SAMPLE] for a in inputs["x"].last)
        return {
            "loss": float(logs.get("loss", float("nan"))),
            "accuracy": string_accuracy(_predict(model, sample_x), sample_y),
            "val_loss": float(keras.ops.convert_to_numpy(CTCLoss()(y_val, probs))),
            "val_accuracy": string_accuracy(probs, y_val),
        }

    def validation_metrics(self, best_row: dict) -> dict:
        return {"string_accuracy": best_row["val_accuracy"], "lines": len(self.val[0])}

    def answers(self, run_dir: Path) -> list[Answers]:
        """The best model's greedy readings of the validation lines; those read with a mark are left out,
        as the reader refuses them whatever their confidence (a mark missed is a wrong reading)."""
        x_val, y_val = self.val
        probs = load_predictor(run_dir, require_calibration=False).raw_proba(x_val)
        if not self.cfg.outliers:
            return [string_answers(probs, truths(y_val))]
        kept = np.array([MARK_LABEL not in d.digits for d in greedy_decode(probs)])
        described = f"{int(kept.sum())} validation lines read without a mark (of {len(kept)})"
        return [string_answers(probs[kept], truths(y_val[kept]), described)]


class LineBatches(EpochBatches):
    """Batches of `lines` freshly generated training lines per epoch. Epoch e's lines come from seed
    (seed, e), so a resumed run sees the lines an uninterrupted one would."""

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        lines: int,
        batch_size: int,
        *,
        seed: int,
        first_epoch: int,
        epochs: int,
        marks: np.ndarray | None = None,
        mark_share: float = 0.0,
    ) -> None:
        super().__init__(lines, batch_size, first_epoch=first_epoch, epochs=epochs, name="lines")
        self.x, self.y, self.seed = x, y, seed
        self.marks, self.mark_share = marks, mark_share

    def draw(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch])
        return make_lines(self.x, self.y, self.size, rng, marks=self.marks, mark_share=self.mark_share)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        x, y = super().__getitem__(i)
        return x.astype(np.float32), y  # lines are kept as uint8: a quarter of the memory


def task_for(model_config: ModelConfig, cfg: TrainConfig, data_dir: Path | None = None) -> DigitTask | LineTask:
    """The task of the run's kind, with its data loaded and split."""
    task = LineTask if model_config.kind == "line" else DigitTask
    return task(model_config, cfg, run_split(cfg, data_dir))


def steps_per_epoch(task: DigitTask | LineTask, cfg: TrainConfig) -> int:
    return math.ceil(task.train_size / cfg.batch_size)
