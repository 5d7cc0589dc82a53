"""Prediction with a trained run: probabilities, digits and top-3 for arrays of 28x28 images."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitlab import runs
from digitlab.errors import DigitlabError

SMALL_BATCH = 256  # below this, call the model directly: model.predict costs tens of ms per call


@dataclass
class Predictor:
    """A loaded model plus what is needed to read its output: class names and calibration."""

    model: object
    class_names: tuple[str, ...]
    temperature: float = 1.0  # calibration: probabilities = softmax(log p / T)
    run_dir: Path | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.model.input_shape[1:])

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """(n, 28, 28) raw pixels 0-255 (uint8 or float) -> (n, classes) float32 probabilities."""
        x = np.asarray(x, dtype="float32")
        if x.ndim == 2:
            x = x[None]
        if tuple(x.shape[1:]) != self.input_shape:
            raise DigitlabError(f"images: expected shape (n, {', '.join(map(str, self.input_shape))}), got {x.shape}")
        if len(x) <= SMALL_BATCH:
            import keras

            probs = keras.ops.convert_to_numpy(self.model(x, training=False))
        else:
            probs = self.model.predict(x, batch_size=1024, verbose=0)
        return calibrate(np.asarray(probs, dtype="float32"), self.temperature)


def calibrate(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature scaling applied to probabilities: softmax(log(p) / T)."""
    if temperature == 1.0:
        return probs
    logits = np.log(np.clip(probs, 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return (e / e.sum(axis=1, keepdims=True)).astype("float32")


def load_predictor(run_dir: Path) -> Predictor:
    run_dir = Path(run_dir)
    model = runs.load_model(run_dir)
    config = runs.read_json(run_dir / runs.CONFIG)
    names = tuple(config.get("data", {}).get("class_names") or [str(i) for i in range(10)])
    temperature = 1.0
    calibration = run_dir / "calibration.json"
    if calibration.is_file():
        temperature = float(runs.read_json(calibration).get("temperature", 1.0))
    return Predictor(model=model, class_names=names, temperature=temperature, run_dir=run_dir)


def describe(probs: np.ndarray, class_names: tuple[str, ...], k: int = 3) -> list[dict]:
    """One dict per row: the digit, its probability and the top-k (class, probability) pairs."""
    out = []
    for p in np.atleast_2d(probs):
        order = np.argsort(p)[::-1][:k]
        out.append({
            "digit": int(order[0]),
            "label": class_names[order[0]],
            "confidence": float(p[order[0]]),
            "top3": [{"digit": int(i), "label": class_names[i], "probability": float(p[i])} for i in order],
        })
    return out


def predict_test_indices(run_dir: Path, indices: list[int], data_dir: Path | None = None) -> list[dict]:
    """Predictions for chosen test images, each with its true label."""
    from digitlab.data import load_dataset

    predictor = load_predictor(run_dir)
    dataset = runs.read_json(Path(run_dir) / runs.CONFIG)["train"].get("dataset", "mnist")
    ds = load_dataset(dataset, data_dir=data_dir)
    n = len(ds.x_test)
    bad = [i for i in indices if not 0 <= i < n]
    if bad:
        raise DigitlabError(f"--index: expected test indices in 0..{n - 1}, got {bad}")
    probs = predictor.predict_proba(ds.x_test[indices])
    rows = describe(probs, predictor.class_names)
    for row, i in zip(rows, indices):
        row.update(index=int(i), true=int(ds.y_test[i]))
    return rows
