"""Open-set benchmark: how well trained runs tell digits from marks that are not digits, and what their
"unsure" threshold accepts.

    .venv/bin/python bench/open_set.py --run runs/fast [--run runs/robust ...] [--count 2000] [--out BENCHMARKS.md]

Digits: MNIST's test digits (reporting only: nothing is chosen here) and the wild set built from each run's
validation split (seed 0, not the calibration's seed 1), through `preprocess` as a person's image goes.
Non-digits (digitlab.data.synth.nondigits): the "validation" family, which a run's threshold may have been
chosen on (its figures are labelled validation), and the "test" family, which no run trained or was
calibrated on. The score is the calibrated confidence, the largest class probability after temperature.

Per run and family: AUROC of digits against non-digits; FPR95, the share of non-digits accepted at the
score where 95 % of the test digits are; at the run's own threshold, the share of non-digits refused, the
share of test and wild digits accepted, and how often the accepted test digits are right. A risk-coverage
curve of the test digits mixed with the held-out non-digits goes to --plot. The table goes into --out as its
own section.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from _sections import write_section  # bench/ is on sys.path when a bench script runs
from benchmark import command_line, machine
from digitlab import runs
from digitlab.config import TrainConfig
from digitlab.data import load_dataset, run_split
from digitlab.data.synth import wild
from digitlab.data.synth.nondigits import nondigits
from digitlab.predict import load_predictor

SEED = 11  # the non-digits' seed here: neither training's nor calibration's
WILD_PER_COLUMN = 100


def fpr_at_95(digit_scores: np.ndarray, other_scores: np.ndarray) -> float:
    """Share of non-digits scored at or above the score that keeps 95 % of the digits."""
    cut = np.quantile(digit_scores, 0.05)
    return float(np.mean(other_scores >= cut))


def measure(run: Path, count: int) -> dict:
    predictor = load_predictor(run)
    config = runs.read_run_config(run)
    train_config = TrainConfig.from_dict(config["train"])
    ds = load_dataset(train_config.dataset)
    split = run_split(train_config)
    test_probs = predictor.predict_proba(ds.x_test)
    test_score = test_probs.max(1)
    test_right = test_probs.argmax(1) == ds.y_test
    columns = wild.preprocess_wild(wild.build_wild(split.x_val, split.y_val, per_column=WILD_PER_COLUMN, seed=0))
    wild_digits = np.stack([d[i] for d, _, reasons in columns.values() for i, r in enumerate(reasons) if r is None])
    wild_score = predictor.predict_proba(wild_digits).max(1)
    threshold = predictor.threshold
    out = {
        "run": str(run),
        "threshold": threshold,
        "test_accepted": float(np.mean(test_score >= threshold)),
        "test_accepted_accuracy": float(test_right[test_score >= threshold].mean()),
        "wild_accepted": float(np.mean(wild_score >= threshold)),
        "families": {},
    }
    for family in ("validation", "test"):
        marks, _ = nondigits(family, count, seed=SEED, digits=split.x_val)
        score = predictor.predict_proba(marks).max(1)
        labels = np.r_[np.ones(len(test_score)), np.zeros(len(score))]
        out["families"][family] = {
            "auroc": float(roc_auc_score(labels, np.r_[test_score, score])),
            "fpr95": fpr_at_95(test_score, score),
            "refused": float(np.mean(score < threshold)),
        }
        if family == "test":
            out["risk_coverage"] = risk_coverage(
                np.r_[test_score, score], np.r_[test_right, np.zeros(len(score), bool)]
            )
    return out


def risk_coverage(score: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coverage (share answered) and risk (share of the answered that are wrong), most confident first."""
    order = np.argsort(-score)
    answered = np.arange(1, len(score) + 1)
    return answered / len(score), 1.0 - np.cumsum(right[order]) / answered


def plot(results: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for r in results:
        coverage, risk = r["risk_coverage"]
        ax.plot(coverage, risk * 100, label=Path(r["run"]).name)
    ax.set_xlabel("coverage: share of test digits and held-out non-digits answered")
    ax.set_ylabel("risk: answered wrong or not a digit (%)")
    ax.set_title("Risk against coverage, MNIST test digits + held-out non-digits")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=110, bbox_inches="tight")


def table(results: list[dict], count: int) -> str:
    head = (
        "| run | family | AUROC | FPR95 | non-digits refused | test digits accepted | accepted right | wild digits accepted |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- |\n"
    )
    rows = []
    for r in results:
        for family, f in r["families"].items():
            label = "validation (threshold chosen here)" if family == "validation" else "test (held out)"
            rows.append(
                f"| {Path(r['run']).name} | {label} | {f['auroc']:.4f} | {f['fpr95']:.1%} | {f['refused']:.1%} | "
                f"{r['test_accepted']:.1%} | {r['test_accepted_accuracy']:.2%} | {r['wild_accepted']:.1%} |"
            )
    return (
        "## Open set: digits against marks that are not digits\n\n"
        f"`{command_line()}` on {machine()}: {count} non-digits per family (digitlab.data.synth.nondigits), "
        f"the 10,000 MNIST test digits, {WILD_PER_COLUMN} wild digits per column. Score: calibrated confidence; "
        "threshold: the run's own (calibration.json).\n\n" + head + "\n".join(rows) + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, action="append", required=True, help="a trained run (repeatable)")
    parser.add_argument("--count", type=int, default=2000, help="non-digits per family (default 2000)")
    parser.add_argument("--out", type=Path, default=None, help="a Markdown file to write the section into")
    parser.add_argument("--plot", type=Path, default=None, help="a PNG for the risk-coverage curves")
    args = parser.parse_args()
    results = [measure(run, args.count) for run in args.run]
    text = table(results, args.count)
    print(text)
    if args.plot:
        plot(results, args.plot)
    if args.out:
        write_section(args.out, "open-set", text)


if __name__ == "__main__":
    sys.exit(main())
