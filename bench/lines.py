"""The line model on validation lines: string accuracy on touching or overlapping digits and on separated
ones, and the time to read a 6-digit line in process.

Lines are composed by digitlab.data.synth.lines from the run's *validation* split (never the test split; the test
figures are bench/read_numbers.py's), with their own seed, so they are not the lines training chose its
epoch on. Two paths are measured:

  model   the generator's normalised lines straight into the model (what validation accuracy measures)
  read    the same kind of line as a photo (dark ink on lit, noisy paper) through `read_lines`:
          ink, line grouping, normalisation, model, decoding: what `digitlab read` does

    .venv/bin/python bench/lines.py runs/numbers [--count 1000] [--runtime keras|onnx]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from digitlab import runs
from digitlab.config import TrainConfig
from digitlab.data import run_split
from digitlab.data.synth.lines import MAX_DIGITS, TOUCHING_GAP, WIDE_GAP, compose, make_lines, on_paper
from digitlab.predict import load_predictor
from digitlab.predict.ctc import greedy_decode
from digitlab.predict.lines import read_lines

SUBSETS = {"touching": TOUCHING_GAP, "separated": WIDE_GAP}  # gaps in px at a 28 px digit height
LENGTH = 4  # digits per line in the accuracy subsets
TIMED_LENGTH = 6  # digits in the timed line
SEED = 11  # not the run's validation seed (lines.VAL_SEED)


def accuracy(predictor, x_val, y_val, gaps, count: int, seed: int) -> dict:
    rng = np.random.default_rng([seed, gaps[0] + 100])
    images, labels = make_lines(x_val, y_val, count, rng, length=LENGTH, gaps=gaps)
    truth = [tuple(int(v) for v in row if v >= 0) for row in labels]
    decoded = greedy_decode(predictor.raw_proba(images), predictor.temperature)
    model_right = np.mean([d.digits == t for d, t in zip(decoded, truth)])
    read_right = 0
    rng = np.random.default_rng([seed, gaps[0] + 200])
    for _ in range(count):
        chosen = rng.integers(0, len(x_val), LENGTH)
        cover, _ = compose(x_val[chosen], rng, gaps)
        grey = on_paper(cover, rng).astype(np.float32)
        fields = read_lines(predictor, grey, (grey.shape[1], grey.shape[0]))
        read_right += fields.text == "".join(str(int(v)) for v in y_val[chosen])
    return {"model": float(model_right), "read": read_right / count}


def by_length(predictor, x_val, y_val, count: int, seed: int) -> dict[int, float]:
    """String accuracy (model path) for each length 1 to MAX_DIGITS, gaps as in training."""
    out = {}
    for length in range(1, MAX_DIGITS + 1):
        images, labels = make_lines(x_val, y_val, count, np.random.default_rng([seed, length]), length=length)
        truth = [tuple(int(v) for v in row if v >= 0) for row in labels]
        decoded = greedy_decode(predictor.raw_proba(images))
        out[length] = float(np.mean([d.digits == t for d, t in zip(decoded, truth)]))
    return out


def time_line(predictor, x_val, repeats: int = 200) -> float:
    """Median ms to read one 6-digit line photo (ink, normalisation, model, decoding), in process."""
    rng = np.random.default_rng(SEED)
    cover, _ = compose(x_val[rng.integers(0, len(x_val), TIMED_LENGTH)], rng)
    grey = on_paper(cover, rng).astype(np.float32)
    size = (grey.shape[1], grey.shape[0])
    for _ in range(10):
        read_lines(predictor, grey, size)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        read_lines(predictor, grey, size)
        times.append(time.perf_counter() - started)
    return float(np.median(times) * 1000)


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--count", type=int, default=1000, help="lines per subset [default: 1000]")
    parser.add_argument("--runtime", default="keras", help="keras or onnx [default: keras]")
    args = parser.parse_args()
    # Mid-run (no calibration.json yet) the best epoch so far is measured: greedy decoding and its
    # timing do not depend on the temperature.
    calibrated = (args.run / runs.CALIBRATION).is_file()
    predictor = load_predictor(args.run, runtime=args.runtime, require_calibration=calibrated)
    config = runs.read_run_config(args.run)
    split = run_split(TrainConfig.from_dict(config["train"]))
    x_val, y_val = split.x_val, split.y_val
    result = {name: accuracy(predictor, x_val, y_val, gaps, args.count, SEED) for name, gaps in SUBSETS.items()}
    result["by_length"] = by_length(predictor, x_val, y_val, max(1, args.count // 5), SEED)
    result["ms_per_6_digit_line"] = time_line(predictor, x_val)
    result["cpu"] = runs.cpu_name()
    result["cores"] = os.cpu_count()
    result["runtime"] = args.runtime
    result["calibrated"] = calibrated
    result["epochs_done"] = (
        runs.read_json(args.run / runs.STATE)["epochs_done"] if (args.run / runs.STATE).is_file() else None
    )
    result["python"] = platform.python_version()
    return result


if __name__ == "__main__":
    figures = main()
    for name in SUBSETS:
        f = figures[name]
        print(f"{name:>9}, {LENGTH} digits: string accuracy {f['model']:.2%} (model), {f['read']:.2%} (read)")
    print(
        f"{TIMED_LENGTH}-digit line read in {figures['ms_per_6_digit_line']:.1f} ms ({figures['runtime']}, in process)"
    )
    print("by length:", ", ".join(f"{k}: {v:.1%}" for k, v in figures["by_length"].items()))
    print(json.dumps(figures))
