"""Evaluation on the test set: the only place it is touched. Nothing is ever selected on it.

A digit run is scored on the test images: accuracy, loss, per-class figures, the confusion matrix and
galleries. A line run is scored on lines composed from the test split's digits (digitlab.data.synth.lines, as its
training and validation lines are from theirs): exact-number accuracy, character error rate, accuracy per
length, the confusion of substituted digits, and what the unsure threshold accepts.

Either kind also reads whole numbers (`evaluate_numbers`, `digitlab evaluate --numbers N`): the
benchmark's numbers (digitlab.data.synth.numbers: separated, close, of mixed sizes, slanted, photographed,
on several lines, touching; 1-8 digits) composed from the test split's digits, read as `digitlab read`
reads them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.metrics import classification_report, confusion_matrix

from digitlab import runs
from digitlab.config import MARK, ModelConfig
from digitlab.data import Dataset, load_dataset
from digitlab.data.synth.lines import PAD_LABEL, make_lines
from digitlab.data.synth.numbers import SUBSETS, compose_numbers, score_readings
from digitlab.errors import DigitlabError, RunError
from digitlab.metrics import alignment, nll, temper
from digitlab.plots import plot_by_length, plot_confusion, plot_gallery, plot_numbers
from digitlab.predict import Predictor, load_predictor
from digitlab.predict.ctc import greedy_decode
from digitlab.predict.reading import choose_method, read

GALLERY = 32  # digits per gallery
CALIBRATED = "calibrated confidence"  # the run's temperature applied, as predict and serve show it
UNCALIBRATED = "uncalibrated confidence (the run has no calibration.json)"
TEST_LINES = 2000  # lines a line run is scored on
TEST_LINES_SEED = 3  # their seed: the same lines for every run
TEST_NUMBERS_SEED = 0  # the seed of `evaluate_numbers`' numbers: the same for every run, and bench/read_numbers.py's
COVERAGE = 0.9  # `evaluate_numbers` gives the exact share of the most confident numbers at this coverage


def run_kind(run_dir: Path) -> str:
    """ "digit" or "line", from the run's config.json (its ModelConfig); a config.json without a model
    section is a digit run's, the only kind there was before line models."""
    config = runs.read_run_config(run_dir)
    return ModelConfig.from_dict(config["model"]).kind if "model" in config else "digit"


def evaluate(run_dir: Path, *, data_dir: Path | None = None, seed: int = 0) -> dict:
    """The run's test figures and plots, for its kind; saved as `test` in metrics.json. `seed` picks the
    random gallery."""
    run_dir = Path(run_dir)
    # With its calibration where the run has one (a run killed before it has none): the confidences
    # shown are then the ones `digitlab predict` and the server give.
    calibrated = (run_dir / runs.CALIBRATION).is_file()
    kind = run_kind(run_dir)
    predictor = load_predictor(run_dir, require_calibration=calibrated)
    ds = load_dataset(runs.dataset_name(runs.read_run_config(run_dir)), data_dir=data_dir)
    confidence = CALIBRATED if calibrated else UNCALIBRATED
    evaluate_kind = _evaluate_lines if kind == "line" else _evaluate_digits
    test = {"kind": kind, **evaluate_kind(run_dir, predictor, ds, confidence, seed)}
    runs.update_json(run_dir / runs.METRICS, test=test)
    return test


def _evaluate_digits(run_dir: Path, predictor: Predictor, ds: Dataset, confidence: str, seed: int) -> dict:
    """Test accuracy and loss, per-class metrics, confusion matrix and galleries."""
    predictor.check_images(ds.x_test, str(run_dir))
    names = list(ds.class_names)
    # Accuracy and loss from the model's own (uncalibrated) probabilities: they describe the model itself.
    probs = predictor.raw_proba(ds.x_test)
    y, pred = ds.y_test.astype(int), probs.argmax(axis=1)  # the temperature keeps each row's argmax
    conf = temper(probs, predictor.temperature).max(axis=1)
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
    return test


def _evaluate_lines(run_dir: Path, predictor: Predictor, ds: Dataset, confidence: str, seed: int) -> dict:
    """Exact-number accuracy, character error rate, accuracy per length, substituted digits, the unsure
    threshold's acceptance, and the most confident mistakes, on TEST_LINES lines of test digits."""
    images, labels = make_lines(ds.x_test, ds.y_test, TEST_LINES, np.random.default_rng([TEST_LINES_SEED, seed]))
    decoded = greedy_decode(predictor.raw_proba(images), predictor.temperature)
    names = list(predictor.class_names)  # the digits', and a run's "not a digit" symbol when it learnt one
    truths = [tuple(int(v) for v in row if v != PAD_LABEL) for row in labels]
    right = np.array([d.digits == t for d, t in zip(decoded, truths)])
    conf = np.array([d.confidence for d in decoded])
    substitutions = np.zeros((len(names), len(names)), int)  # true digit -> digit read, aligned
    deleted = inserted = errors = 0
    for d, t in zip(decoded, truths):
        pairs, dropped, added = alignment(t, d.digits)
        for a, b in pairs:
            substitutions[a, b] += 1
        deleted, inserted = deleted + dropped, inserted + added
        errors += dropped + added + sum(a != b for a, b in pairs)
    lengths = np.array([len(t) for t in truths])
    by_length = {
        int(n): {"count": int((lengths == n).sum()), "accuracy": float(right[lengths == n].mean())}
        for n in np.unique(lengths)
    }
    marked = np.array([any(names[v] == MARK for v in d.digits) for d in decoded], bool)  # refused by the reader
    accepted = (conf >= predictor.threshold) & ~marked
    wrong = np.flatnonzero(~right)
    wrong = wrong[np.argsort(-conf[wrong])][: GALLERY // 2]  # the most confident mistakes first

    def text(digits: tuple[int, ...]) -> str:
        return "".join(names[v] for v in digits) or "(nothing)"

    figures = {
        "confusion_matrix": plot_confusion(substitutions, names, run_dir / runs.CONFUSION),
        "by_length": plot_by_length(by_length, run_dir / runs.BY_LENGTH),
        "mistakes": plot_gallery(
            images[wrong],
            [f"{text(truths[i])} → {text(decoded[i].digits)}  {conf[i]:.1%}" for i in wrong],
            run_dir / runs.MISTAKES,
            f"Most confident mistakes ({int((~right).sum())} of {len(right)} lines wrong; {confidence})",
            cols=4,
            cell=(3.6, 0.9),
        ),
    }
    return {
        "accuracy": float(right.mean()),
        "character_error_rate": errors / int(lengths.sum()),
        "errors": int((~right).sum()),
        "count": len(right),
        "lines": f"{len(right)} lines of 1-{int(lengths.max())} digits composed from the test split",
        "by_length": by_length,
        "substitutions": substitutions.tolist(),
        "deleted": deleted,
        "inserted": inserted,
        "class_names": names,
        "confidence": confidence,
        "coverage": float(accepted.mean()),
        "accepted_accuracy": float(right[accepted].mean()) if accepted.any() else None,
        "most_confident_mistakes": [
            {"index": int(i), "true": text(truths[i]), "read": text(decoded[i].digits), "confidence": float(conf[i])}
            for i in wrong
        ],
        "figures": {k: str(Path(v).name) for k, v in figures.items()},
    }


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
    kinds = {str(r): run_kind(r) for r in run_dirs}
    lines = [r for r, k in kinds.items() if k != "digit"]
    if lines:
        raise DigitlabError(
            f"ensemble: averages the probabilities of digit runs; {', '.join(lines)} "
            f"{'is a line run' if len(lines) == 1 else 'are line runs'}"
        )
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


def evaluate_numbers(
    run_dir: Path,
    per_subset: int,
    *,
    data_dir: Path | None = None,
    method: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Read `per_subset` numbers of each subset, composed from the test split (their lengths 1-8 in turn),
    as `digitlab read` reads them (the run's own method, or `method`); saved as `numbers` in metrics.json.

    Per subset and length, and per subset over all lengths: exact (the whole number right), character
    error rate, the share marked unsure, and the exact share of those not marked unsure. Over every
    number: the exact share of the most confident ones against their share (numbers.png), and at
    COVERAGE. `progress(done, total)` is called after each number."""
    run_dir = Path(run_dir)
    if isinstance(per_subset, bool) or not isinstance(per_subset, int) or per_subset < 1:
        raise DigitlabError(f"--numbers: expected a count of numbers per subset of at least 1, got {per_subset!r}")
    calibrated = (run_dir / runs.CALIBRATION).is_file()
    predictor = load_predictor(run_dir, require_calibration=calibrated)
    ds = load_dataset(runs.dataset_name(runs.read_run_config(run_dir)), data_dir=data_dir)
    total = per_subset * len(SUBSETS)
    rows, right, confidence = [], [], []
    for subset in SUBSETS:
        numbers = compose_numbers(ds.x_test, ds.y_test, subset, per_subset, seed=TEST_NUMBERS_SEED)
        texts, unsure = [], []
        for n in numbers:
            reading = read(predictor, n.image, method=method)
            texts.append(reading.text)
            unsure.append(reading.unsure)
            right.append(reading.text == n.text)
            confidence.append(-1.0 if reading.confidence is None else reading.confidence)  # no ink: least sure
            if progress is not None:
                progress(len(right), total)
        for length in [*sorted({n.length for n in numbers}), "all"]:
            k = [i for i, n in enumerate(numbers) if length in ("all", n.length)]
            scores = score_readings([numbers[i].text for i in k], [texts[i] for i in k], [unsure[i] for i in k])
            rows.append({"subset": subset, "length": length, **_number_scores(scores)})
    right_a = np.array(right)
    order = np.argsort(-np.array(confidence), kind="stable")
    curve = np.cumsum(right_a[order]) / np.arange(1, len(order) + 1)  # exact share of the k most confident
    result = {
        "numbers": f"{per_subset} numbers of 1-8 digits per subset, composed from the test split",
        "method": choose_method(predictor, method),
        "confidence": CALIBRATED if calibrated else UNCALIBRATED,
        "rows": rows,
        "exact": float(right_a.mean()),
        "coverage": COVERAGE,
        "exact_at_coverage": float(curve[max(1, round(COVERAGE * len(curve))) - 1]),
        "figures": {"numbers": plot_numbers(rows, curve, COVERAGE, run_dir / runs.NUMBERS).name},
    }
    runs.update_json(run_dir / runs.METRICS, numbers=result)
    return result


def _number_scores(scores: dict) -> dict:
    """score_readings' figures under evaluate's names (the character error rate is 1 - digit accuracy)."""
    return {
        "count": scores["count"],
        "exact": scores["string_accuracy"],
        "character_error_rate": 1.0 - scores["digit_accuracy"],
        "unsure": scores["unsure"],
        "accepted_exact": scores["accepted_accuracy"],
    }
