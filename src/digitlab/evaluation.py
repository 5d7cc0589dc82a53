"""Evaluation on the test set: the only place it is touched. Nothing is ever selected on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.metrics import classification_report, confusion_matrix

from digitlab import runs
from digitlab.data import load_dataset
from digitlab.errors import DigitlabError, RunError
from digitlab.metrics import nll
from digitlab.plots import plot_confusion, plot_gallery
from digitlab.predict import apply_temperature, load_predictor

GALLERY = 32  # digits per gallery
CALIBRATED = "calibrated confidence"  # the run's temperature applied, as predict and serve show it
UNCALIBRATED = "uncalibrated confidence (the run has no calibration.json)"


def evaluate(run_dir: Path, *, data_dir: Path | None = None, seed: int = 0) -> dict:
    """Test accuracy and loss, per-class metrics, confusion matrix and galleries; saved in metrics.json."""
    run_dir = Path(run_dir)
    # With its calibration where the run has one (a run killed before it has none): the confidences
    # shown are then the ones `digitlab predict` and the server give.
    calibrated = (run_dir / runs.CALIBRATION).is_file()
    predictor = load_predictor(run_dir, require_calibration=calibrated)
    ds = load_dataset(runs.dataset_name(runs.read_run_config(run_dir)), data_dir=data_dir)
    predictor.check_images(ds.x_test, str(run_dir))
    names = list(ds.class_names)
    # Accuracy and loss from the model's own (uncalibrated) probabilities: they describe the model itself.
    probs = predictor.raw_proba(ds.x_test)
    y, pred = ds.y_test.astype(int), probs.argmax(axis=1)  # the temperature keeps each row's argmax
    conf = apply_temperature(probs, predictor.temperature).max(axis=1)
    confidence = CALIBRATED if calibrated else UNCALIBRATED
    loss = nll(probs, y)
    accuracy = float(np.mean(pred == y))
    report = classification_report(
        y, pred, labels=range(len(names)), target_names=names, output_dict=True, zero_division=0
    )
    cm = confusion_matrix(y, pred, labels=range(len(names)))

    wrong = np.flatnonzero(pred != y)
    wrong = wrong[np.argsort(-conf[wrong])]  # most confident mistakes first
    shown = wrong[:GALLERY]
    figures = {
        "confusion_matrix": plot_confusion(cm, names, run_dir / runs.CONFUSION),
        "mistakes": plot_gallery(
            ds.x_test[shown],
            [f"true {names[y[i]]} → {names[pred[i]]}\n{conf[i]:.1%}" for i in shown],
            run_dir / runs.MISTAKES,
            f"Most confident mistakes ({len(wrong)} of {len(y)} wrong; {confidence})",
        ),
    }
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(len(y), size=min(GALLERY, len(y)), replace=False))
    figures["predictions"] = plot_gallery(
        ds.x_test[sample],
        [
            f"#{i}: {names[pred[i]]} {conf[i]:.0%}" + ("" if pred[i] == y[i] else f"\n(true {names[y[i]]})")
            for i in sample
        ],
        run_dir / runs.PREDICTIONS,
        f"Random test predictions (red: wrong; {confidence})",
        colors=["black" if pred[i] == y[i] else "red" for i in sample],
    )
    test = {
        "accuracy": accuracy,
        "loss": loss,
        "errors": int(len(wrong)),
        "count": int(len(y)),
        "per_class": {
            n: {k: float(report[n][k]) for k in ("precision", "recall", "f1-score", "support")} for n in names
        },
        "macro_f1": float(report["macro avg"]["f1-score"]),
        "confusion_matrix": cm.tolist(),
        "class_names": names,
        "confidence": confidence,  # what the mistakes' confidences are
        "most_confident_mistakes": [
            {"index": int(i), "true": int(y[i]), "predicted": int(pred[i]), "confidence": float(conf[i])} for i in shown
        ],
        "figures": {k: str(Path(v).name) for k, v in figures.items()},
    }
    runs.update_json(run_dir / runs.METRICS, test=test)
    return test


def evaluate_ensemble(
    run_dirs: list[Path], *, out_dir: Path | None = None, data_dir: Path | None = None, overwrite: bool = False
) -> dict:
    """Average the (uncalibrated) test probabilities of several runs and evaluate the average.

    Each member is also scored alone, so the gain of the ensemble is visible. With `out_dir`, writes
    metrics.json and confusion_matrix.png there.
    """
    if out_dir is not None and Path(out_dir).is_dir() and any(Path(out_dir).iterdir()) and not overwrite:
        kind = "a run" if (Path(out_dir) / runs.CONFIG).is_file() else "files"
        raise RunError(
            f"--out {out_dir}: already holds {kind}; an ensemble writes a directory of its own "
            "(choose another --out, or pass --overwrite)"
        )
    if len(run_dirs) < 2:
        raise DigitlabError(f"ensemble: expected at least two run directories, got {len(run_dirs)}")
    datasets = {runs.dataset_name(runs.read_run_config(r)) for r in run_dirs}
    if len(datasets) > 1:
        raise DigitlabError(f"ensemble: the runs were trained on different data sets: {sorted(datasets)}")
    ds = load_dataset(datasets.pop(), data_dir=data_dir)
    y = ds.y_test.astype(int)
    members, total = [], None
    for run_dir in run_dirs:
        predictor = load_predictor(run_dir, require_calibration=False)
        predictor.check_images(ds.x_test, str(run_dir))
        probs = predictor.raw_proba(ds.x_test)
        members.append({"run": str(run_dir), "accuracy": float(np.mean(probs.argmax(1) == y))})
        total = probs if total is None else total + probs
    probs = total / len(run_dirs)
    pred = probs.argmax(axis=1)
    result = {
        "members": members,
        "accuracy": float(np.mean(pred == y)),
        "loss": nll(probs, y),
        "errors": int(np.sum(pred != y)),
        "count": int(len(y)),
    }
    if out_dir is not None:
        out_dir = Path(out_dir)
        cm = confusion_matrix(y, pred, labels=range(len(ds.class_names)))
        plot_confusion(cm, list(ds.class_names), out_dir / runs.CONFUSION)
        runs.write_json(out_dir / runs.METRICS, {"ensemble": {**result, "confusion_matrix": cm.tolist()}})
    return result
