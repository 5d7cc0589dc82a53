"""Speed benchmark: time to 99.0 % MNIST test accuracy, reference recipe vs the fast preset, plus
inference throughput and latency, cache load time and peak memory. Writes its section of BENCHMARKS.md
(`<!-- benchmark -->`, the other scripts' sections kept), headed by the command line and the machine,
and BENCHMARKS.json beside it with the same figures.

    .venv/bin/python bench/benchmark.py [--seeds 5] [--reference-epochs 15] [--reference-seeds 3] [--accurate-seeds 3] [--bagged-members 0] [--out BENCHMARKS.md]

Each training run is its own subprocess (a fresh TensorFlow, its peak memory measured alone). Test
accuracy is evaluated after every epoch only to time when 99.0 % is reached; nothing is chosen on it
(the fast preset's hyperparameters are chosen on the validation split).

The reference is the keras-io MNIST convnet: Conv32-pool-Conv64-pool-dropout-Dense10, Adam, batch
128, on the same 48,000-image train split.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _sections import write_section  # bench/_sections.py: this script's directory is on sys.path

TARGET = 0.99
ROOT = Path(__file__).resolve().parent.parent


def child_train(kind: str, seed: int, epochs: int) -> dict:
    """Runs in a subprocess: train, evaluating test accuracy after each epoch; returns the timeline."""
    import keras

    from digitlab.config import resolve_configs
    from digitlab.data import load_dataset, run_split, split_train_val
    from digitlab.models import build_model
    from digitlab.training import STEPS_PER_EXECUTION, compile_model
    from digitlab.training.tasks import DigitTask, steps_per_epoch

    ds = load_dataset("mnist")
    x_tr, y_tr, _, _ = split_train_val(ds.x_train, ds.y_train, 0.2, seed=42)
    x_tr = x_tr.astype("float32")
    x_te = ds.x_test.astype("float32")
    keras.utils.set_random_seed(seed)
    if kind == "reference":
        model = keras.Sequential(
            [
                keras.Input((28, 28)),
                keras.layers.Rescaling(1 / 255),
                keras.layers.Reshape((28, 28, 1)),
                keras.layers.Conv2D(32, 3, activation="relu"),
                keras.layers.MaxPooling2D(2),
                keras.layers.Conv2D(64, 3, activation="relu"),
                keras.layers.MaxPooling2D(2),
                keras.layers.Flatten(),
                keras.layers.Dropout(0.5),
                keras.layers.Dense(10, activation="softmax"),
            ]
        )
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        batch_size = 128
    else:
        model_cfg, train_cfg = resolve_configs("fast", seed=seed)
        task = DigitTask(model_cfg, train_cfg, run_split(train_cfg))  # the split and the preset's non-digit marks
        x_tr, y_tr = task.x_train.astype("float32"), task.y_train
        epochs = train_cfg.epochs
        batch_size = train_cfg.batch_size
        model = compile_model(build_model(model_cfg, train_cfg.precision), train_cfg, steps_per_epoch(task, train_cfg))
    timeline, trained = [], 0.0
    for epoch in range(epochs):
        started = time.perf_counter()
        model.fit(x_tr, y_tr, batch_size=batch_size, epochs=epoch + 1, initial_epoch=epoch, verbose=0)
        trained += time.perf_counter() - started  # training time only: the test pass is not counted
        acc = float(model.evaluate(x_te, ds.y_test, batch_size=1024, verbose=0)[1])
        timeline.append({"epoch": epoch + 1, "train_seconds": round(trained, 3), "test_accuracy": acc})
    reached = next((t for t in timeline if t["test_accuracy"] >= TARGET), None)
    return {
        "kind": kind,
        "seed": seed,
        "timeline": timeline,
        "final_accuracy": timeline[-1]["test_accuracy"],
        "seconds_to_target": reached["train_seconds"] if reached else None,
        "epochs_to_target": reached["epoch"] if reached else None,
        "train_seconds": timeline[-1]["train_seconds"],
        "steps_per_execution": STEPS_PER_EXECUTION if kind == "fast" else 1,
    }


def child_inference(run_dir: str) -> dict:
    """Runs in a subprocess: batch throughput and single-image latency of a trained fast run."""
    from digitlab.data import load_dataset, load_mnist
    from digitlab.predict import load_predictor

    started = time.perf_counter()
    load_mnist()
    cache_load = time.perf_counter() - started
    predictor = load_predictor(run_dir)
    x = load_dataset("mnist").x_test
    predictor.predict_proba(x[:2048])  # warm-up: traces the graph
    rounds = []
    for _ in range(3):
        started = time.perf_counter()
        predictor.predict_proba(x)
        rounds.append(time.perf_counter() - started)
    single = []
    for i in range(300):
        started = time.perf_counter()
        predictor.predict_proba(x[i : i + 1])
        single.append((time.perf_counter() - started) * 1000)
    single.sort()
    return {
        "cache_load_seconds": round(cache_load, 3),
        "batch_images_per_second": round(len(x) / min(rounds)),
        "single_ms_p50": round(single[len(single) // 2], 3),
        "single_ms_p99": round(single[int(len(single) * 0.99)], 3),
    }


def run_child(*args: str) -> tuple[dict, float]:
    """Run this script in a subprocess for one job; returns its JSON result and its peak RSS (MB)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{out.stderr[-3000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux: the largest child so far
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result, (peak / 1024 if peak > before else None)


def peak_memory_of_cli_train(tmp: Path) -> float:
    """Peak resident memory (MB) of `digitlab train` with the fast preset, measured by GNU time if present."""
    cmd = [
        sys.executable,
        "-c",
        "from digitlab.cli import main; main()",
        "train",
        "--out",
        str(tmp),
        "--quiet",
        "--overwrite",
    ]
    script = (
        "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run([sys.executable, "-c", script, *cmd], capture_output=True, text=True, check=True)
    return int(out.stdout.strip()) / 1024


def digitlab_cli(*args: str) -> None:
    """Run `digitlab ARGS` in a subprocess (quiet TensorFlow); a failure ends the benchmark with its output."""
    cmd = [sys.executable, "-c", "from digitlab.cli import main; main()", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if out.returncode != 0:
        raise SystemExit(f"digitlab {' '.join(args)} failed:\n{out.stderr[-3000:]}")


BAGGED_VAL_FRACTION = 0.1


def member_overrides(seed: int, bagged: bool) -> dict:
    """A bagged ensemble member holds out its own 10 % for validation (split seed = its seed), so the
    members train on different 54,000-image subsets and make less correlated mistakes."""
    return {"split_seed": seed, "val_fraction": BAGGED_VAL_FRACTION} if bagged else {}


def finished_accurate_run(run: Path, seed: int, bagged: bool = False) -> bool:
    """Whether `run` already holds a finished run of the current accurate preset with this seed (and split):
    training is deterministic for a seed, so an interrupted benchmark picks up where it stopped."""
    from digitlab.config import ModelConfig, TrainConfig, resolve_configs
    from digitlab.errors import DigitlabError
    from digitlab.runs import read_json

    try:
        config, state = read_json(run / "config.json"), read_json(run / "state.json")
        saved = ModelConfig.from_dict(config["model"]), TrainConfig.from_dict(config["train"])
    except (DigitlabError, KeyError):
        return False
    preset = resolve_configs("accurate", seed=seed, **member_overrides(seed, bagged))
    return saved == preset and state.get("epochs_done") == preset[1].epochs and (run / "calibration.json").is_file()


def accurate_runs(seeds: int, bagged: int, root: Path) -> dict:
    """Train the accurate preset for each seed with `digitlab train` (then `bagged` more members, seeds
    following, each on its own split), evaluate each on the test set, then the ensemble of all of them
    (`digitlab ensemble`). The median is over the preset's own seeds. Nothing is chosen on the test figures."""
    members = []
    for seed in range(seeds + bagged):
        is_bagged = seed >= seeds
        run = root / f"{'bagged' if is_bagged else 'accurate'}-{seed}"
        overrides = member_overrides(seed, is_bagged)
        if finished_accurate_run(run, seed, is_bagged):
            print(f"accurate seed {seed}: reusing the finished run in {run} (same preset, seed and split)", flush=True)
        else:
            split = ["--split-seed", str(seed), "--val-fraction", str(BAGGED_VAL_FRACTION)] if is_bagged else []
            digitlab_cli(
                "train",
                "--preset",
                "accurate",
                "--seed",
                str(seed),
                *split,
                "--out",
                str(run),
                "--quiet",
                "--overwrite",
            )
        digitlab_cli("evaluate", str(run))
        m = json.loads((run / "metrics.json").read_text())
        members.append(
            {
                "seed": seed,
                "run": str(run),
                "train_seconds": m["train_seconds"],
                "epochs": m["epochs"],
                "bagged": is_bagged,
                "split": f"seed {overrides.get('split_seed', 42)}, {overrides.get('val_fraction', 0.2):.0%} held out",
                "validation_accuracy": m["validation"]["accuracy"],
                "test_accuracy": m["test"]["accuracy"],
            }
        )
        print(
            f"accurate seed {seed} ({members[-1]['split']}): test {members[-1]['test_accuracy']:.4f} (validation "
            f"{members[-1]['validation_accuracy']:.4f}), {m['train_seconds'] / 60:.1f} min training",
            flush=True,
        )
    ensemble = None
    if len(members) >= 2:
        out = root / "accurate-ensemble"
        digitlab_cli("ensemble", *(r["run"] for r in members), "--out", str(out))
        ensemble = json.loads((out / "metrics.json").read_text())["ensemble"]["accuracy"]
        print(f"ensemble of {len(members)}: test {ensemble:.4f}", flush=True)
    own = [r["test_accuracy"] for r in members if not r["bagged"]]
    return {
        "members": members,
        "median_test_accuracy": statistics.median(own),
        "seeds": len(own),
        "max_train_minutes": max(r["train_seconds"] for r in members) / 60,
        "ensemble_test_accuracy": ensemble,
    }


def versions() -> dict:
    from digitlab.runs import package_versions

    return package_versions()


def machine() -> str:
    from digitlab.runs import cpu_name

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu_name()}, {os.cpu_count()} cores, {mem:.0f} GiB, {platform.platform()}"


def command_line() -> str:
    """The command that is running, as it could be typed again (the interpreter relative when under the cwd)."""
    python = os.path.relpath(sys.executable) if sys.executable.startswith(os.getcwd() + os.sep) else sys.executable
    return shlex.join([python, *sys.argv])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5, help="fast-preset seeds (default 5)")
    parser.add_argument("--reference-epochs", type=int, default=15, help="reference recipe epochs (default 15)")
    parser.add_argument(
        "--reference-seeds",
        type=int,
        default=3,
        help="reference recipe seeds; its median time to 99.0 %% is compared (default 3)",
    )
    parser.add_argument(
        "--accurate-seeds",
        type=int,
        default=0,
        help="also train the accurate preset with this many seeds and evaluate them and their "
        "ensemble (about 12-20 min each on a 2-core CPU with AVX512-BF16; default 0: skipped)",
    )
    parser.add_argument(
        "--bagged-members",
        type=int,
        default=0,
        help="more accurate-preset members for the ensemble, seeds after --accurate-seeds, each "
        "holding out its own 10 %% for validation (about 12-20 min each; default 0)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "BENCHMARKS.md",
        help="Markdown report; a .json with the same figures goes beside it (default BENCHMARKS.md)",
    )
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        job, *rest = args.child
        result = child_inference(rest[0]) if job == "inference" else child_train(job, int(rest[0]), int(rest[1]))
        print(json.dumps(result))
        return

    import keras

    backend = keras.backend.backend()
    print(f"machine: {machine()}\nbackend: {backend}", flush=True)
    fast, reference = [], []
    for seed in range(args.seeds):
        result, _ = run_child("fast", str(seed), "0")
        fast.append(result)
        print(
            f"fast seed {seed}: test {result['final_accuracy']:.4f}, {result['train_seconds']:.2f} s training, "
            f"99.0 % after {result['seconds_to_target']} s",
            flush=True,
        )
    for seed in range(args.reference_seeds):
        result, _ = run_child("reference", str(seed), str(args.reference_epochs))
        reference.append(result)
        print(
            f"reference seed {seed}: test {result['final_accuracy']:.4f} after {args.reference_epochs} epochs, "
            f"99.0 % after {result['seconds_to_target']} s (epoch {result['epochs_to_target']})",
            flush=True,
        )

    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / "digitlab-bench-run"
    peak_mb = peak_memory_of_cli_train(tmp)
    print(f"peak memory of `digitlab train` (fast preset): {peak_mb:.0f} MB", flush=True)
    inference, _ = run_child("inference", str(tmp))
    print(f"inference: {inference}", flush=True)
    accurate = (
        accurate_runs(args.accurate_seeds, args.bagged_members, tmp.parent / "digitlab-bench-accurate")
        if args.accurate_seeds
        else None
    )

    fast_acc = statistics.median(r["final_accuracy"] for r in fast)
    fast_time = statistics.median(r["train_seconds"] for r in fast)
    fast_to_target = [r["seconds_to_target"] for r in fast if r["seconds_to_target"] is not None]
    ref_to_target = [r["seconds_to_target"] for r in reference if r["seconds_to_target"] is not None]
    fast_t = statistics.median(fast_to_target) if len(fast_to_target) > len(fast) // 2 else None
    ref_t = statistics.median(ref_to_target) if ref_to_target else None
    ratio = ref_t / fast_t if (ref_t and fast_t) else None
    summary = {
        "fast_median_test_accuracy": fast_acc,
        "fast_median_train_seconds": fast_time,
        "fast_median_seconds_to_99": fast_t,
        "reference_seconds_to_99": ref_t,
        "ratio_reference_over_fast": ratio,
        "peak_memory_mb_train_fast": round(peak_mb),
        **inference,
    }
    if accurate:
        summary.update(
            {
                "accurate_median_test_accuracy": accurate["median_test_accuracy"],
                "accurate_max_train_minutes": round(accurate["max_train_minutes"], 1),
                "accurate_ensemble_test_accuracy": accurate["ensemble_test_accuracy"],
            }
        )
    print(json.dumps(summary, indent=2))
    write_report(args.out, backend, fast, reference, summary, accurate)
    print(f"wrote {args.out} and {args.out.with_suffix('.json')}")


def write_report(path: Path, backend: str, fast: list, reference: list, s: dict, accurate: dict | None) -> None:
    def fmt(v, spec=".2f"):
        return "not reached" if v is None else format(v, spec)

    command, host = command_line(), machine()
    lines = [
        f"Written by `{command}` on {time.strftime('%Y-%m-%d')}.",
        "",
        f"Machine: {host}; Keras backend `{backend}`.",
        "",
        "Training time counts `fit` only (graph tracing included, data already loaded from the cache); test accuracy",
        "is measured after every epoch only to see when 99.0 % is reached. Each run is a fresh process.",
        "",
        "## Time to 99.0 % test accuracy",
        "",
        "| recipe | seeds | median seconds to 99.0 % | median final test accuracy | median training seconds |",
        "| --- | --- | --- | --- | --- |",
        f"| fast preset | {len(fast)} | {fmt(s['fast_median_seconds_to_99'])} | {s['fast_median_test_accuracy']:.4f} |"
        f" {s['fast_median_train_seconds']:.2f} |",
        f"| keras-io reference | {len(reference)} | {fmt(s['reference_seconds_to_99'])} |"
        f" {statistics.median(r['final_accuracy'] for r in reference):.4f} |"
        f" {statistics.median(r['train_seconds'] for r in reference):.2f} |",
        "",
        f"Ratio reference / fast to 99.0 %: **{fmt(s['ratio_reference_over_fast'], '.1f')}×**",
        "",
        "Per run (seconds of training after each epoch: test accuracy):",
        "",
    ]
    for r in fast + reference:
        steps = ", ".join(f"{t['train_seconds']:.1f} s: {t['test_accuracy']:.4f}" for t in r["timeline"])
        lines.append(f"- {r['kind']} seed {r['seed']}: {steps}")
    lines += [
        "",
        "## Inference and memory (fast preset)",
        "",
        "| figure | value |",
        "| --- | --- |",
        f"| batch inference (10,000 test images, chunks of 1024) | {s['batch_images_per_second']:,} images/s |",
        f"| single image, in process (p50 / p99) | {s['single_ms_p50']} ms / {s['single_ms_p99']} ms |",
        f"| loading cached MNIST (SHA-256 verified) | {s['cache_load_seconds']} s |",
        f"| peak memory of `digitlab train` (fast preset, whole process) | {s['peak_memory_mb_train_fast']} MB |",
        "",
    ]
    if accurate:
        lines += [
            "## Accurate preset and ensemble",
            "",
            "`digitlab train --preset accurate --seed N`, then `digitlab evaluate`; bagged members add",
            "`--split-seed N --val-fraction 0.1` (each holds out its own 6,000 images, so each validation figure is",
            "on a different split). The ensemble averages the probabilities of all of them (`digitlab ensemble`).",
            "",
            "| seed | split | training minutes | epochs | validation accuracy | test accuracy |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {r['seed']} | {r['split']} | {r['train_seconds'] / 60:.1f} | {r['epochs']} |"
            f" {r['validation_accuracy']:.4f} | {r['test_accuracy']:.4f} |"
            for r in accurate["members"]
        ]
        lines += [
            "",
            f"Median test accuracy over the preset's {accurate['seeds']} seeds (split seed 42):"
            f" **{accurate['median_test_accuracy']:.4f}**;"
            f" ensemble of {len(accurate['members'])}: **{fmt(accurate['ensemble_test_accuracy'], '.4f')}**.",
            "",
        ]
    lines += [
        "## Versions",
        "",
    ]
    lines += [f"- {k} {v}" for k, v in versions().items()]
    write_section(path, "benchmark", "\n".join(lines))
    record = {
        "command": command,
        "date": time.strftime("%Y-%m-%d"),
        "machine": host,
        "backend": backend,
        "summary": s,
        "fast": fast,
        "reference": reference,
        "accurate": accurate,
        "versions": versions(),
    }
    path.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")  # the same figures, for tools


if __name__ == "__main__":
    main()
