"""One self-contained HTML file per run (and one for the experiments ladder).

Every figure is inlined as a base64 `data:` URI and the CSS sits in a <style> element: the file opens
offline, from anywhere, in any browser, and can be mailed as it is. All text goes through `html.escape`.

`build_report` only reads a run directory: it trains and evaluates nothing. A run's report needs its test
figures (`needs_evaluation` says when they are missing); `write_report`, what `digitlab report` calls,
runs `evaluate` first then, and the learning-rate range test when asked.
The page's layout is template.html and its style style.css, beside this module.
"""

from __future__ import annotations

import base64
import csv
import html
import math
import string
import tempfile
import time
from importlib import resources
from pathlib import Path

import numpy as np

from digitlab import atomic, runs
from digitlab.config import ModelConfig, TrainConfig
from digitlab.data import data_info, load_dataset
from digitlab.errors import RunError
from digitlab.evaluation import evaluate
from digitlab.explore import explore
from digitlab.lr_find import lr_find
from digitlab.metrics import SUGGESTION_RULE, suggest_lr
from digitlab.predict.keras_runtime import load_keras_model

LR_FIND_STEPS = 100  # batches for `digitlab report --lr-find`: seconds on a CPU
# ModelConfig fields that one architecture ignores: left out of its report
UNUSED = {"mlp": {"filters", "dense"}, "cnn": {"units", "activation"}}


# ---- HTML pieces: every piece of text is escaped here ----


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def prose(value) -> str:
    """Escaped text with `code` spans (as in the library's messages) shown as <code>, not as backticks."""
    parts = esc(value).split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: the text as it is
        return esc(value)
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure(path: Path | None, caption: str, full: bool = False) -> str:
    """The PNG at `path` inlined, or a note when there is none; `full`: at most its own size, up to the
    report's width, outside any column (a confusion matrix's numbers stay readable)."""
    if path is None or not Path(path).is_file():
        name = Path(path).name if path is not None else "figure"
        return f'<p class="note">No {esc(name)}: {esc(caption)} is not available.</p>'
    return (
        f'<figure{_cls("full", full)}><img src="{data_uri(Path(path).read_bytes())}" alt="{esc(caption)}">'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def _cls(name: str, on: bool) -> str:
    return f' class="{name}"' if on else ""


def table(
    headers: list[str], rows: list[list], numeric: set[int] = frozenset(), highlight: set[int] = frozenset()
) -> str:
    """An HTML table; columns in `numeric` align right, rows in `highlight` are shaded."""
    head = "".join(f"<th{_cls('num', i in numeric)}>{esc(h)}</th>" for i, h in enumerate(headers))
    body = []
    for r, row in enumerate(rows):
        cells = "".join(f"<td{_cls('num', i in numeric)}>{prose(v)}</td>" for i, v in enumerate(row))
        body.append(f"<tr{_cls('best', r in highlight)}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def kv_table(rows: list[list]) -> str:
    """A two-column table of (name, value) rows, the names as row headings."""
    body = "".join(f'<tr><th scope="row">{esc(k)}</th><td>{prose(v)}</td></tr>' for k, v in rows)
    return f'<table class="kv"><tbody>{body}</tbody></table>'


def cards(items: list[tuple[str, str]]) -> str:
    return (
        '<div class="cards">'
        + "".join(f'<div class="card">{esc(label)}<b>{esc(value)}</b></div>' for label, value in items)
        + "</div>"
    )


def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{body}</section>'


def page(title: str, subtitle: str, sections: list[tuple[str, str, str]]) -> str:
    """A whole document: (anchor, heading, body HTML) per section, a contents line on top."""
    nav = "".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t, _ in sections)
    body = "".join(section(a, t, b) for a, t, b in sections)
    template = string.Template(resources.files(__package__).joinpath("template.html").read_text("utf-8"))
    css = resources.files(__package__).joinpath("style.css").read_text("utf-8")
    return template.substitute(title=esc(title), subtitle=esc(subtitle), nav=nav, body=body, css=css)


def pct(x) -> str:
    return "" if x is None or x == "" else f"{float(x):.2%}"


def num(x, digits: int = 4) -> str:
    return "" if x is None or x == "" else f"{float(x):.{digits}f}"


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_html(path: Path, text: str) -> Path:
    return atomic.write_bytes(Path(path), text.encode("utf-8"))


# ---- a run's report ----


def needs_evaluation(run_dir: Path) -> bool:
    """Whether the run lacks the test figures a report shows (metrics.json's `test` section and its PNGs)."""
    run_dir = Path(run_dir)
    metrics = runs.read_json(run_dir / runs.METRICS) if (run_dir / runs.METRICS).is_file() else {}
    test = metrics.get("test")
    return test is None or any(not (run_dir / f).is_file() for f in test.get("figures", {}).values())


def write_report(
    run_dir: Path, out: Path | None = None, *, with_lr_find: bool = False, data_dir: Path | None = None
) -> Path:
    """`digitlab report`: a quick learning-rate range test into the run first if `with_lr_find`
    (LR_FIND_STEPS batches), an evaluation on the test set if the run has none yet, then build_report.
    Returns the report's path."""
    run_dir = Path(run_dir)
    runs.require_model(run_dir)
    if with_lr_find:
        config = runs.read_run_config(run_dir)
        model_config, train_config = ModelConfig.from_dict(config["model"]), TrainConfig.from_dict(config["train"])
        lr_find(model_config, train_config, run_dir, steps=LR_FIND_STEPS, data_dir=data_dir, overwrite=True)
    evaluated_now = needs_evaluation(run_dir)
    if evaluated_now:
        evaluate(run_dir, data_dir=data_dir)
    return build_report(run_dir, out, data_dir=data_dir, evaluated_now=evaluated_now)


def build_report(
    run_dir: Path, out: Path | None = None, *, data_dir: Path | None = None, evaluated_now: bool = False
) -> Path:
    """Write one self-contained HTML report of a run; returns its path (default `run_dir/report.html`).

    The run must have its test figures (see needs_evaluation); `evaluated_now` only changes the note that
    says where they came from."""
    run_dir = Path(run_dir)
    runs.require_model(run_dir)
    config = runs.read_run_config(run_dir)
    out = Path(out) if out is not None else run_dir / runs.REPORT
    if needs_evaluation(run_dir):
        raise RunError(f"{run_dir}: no test figures yet; run `digitlab evaluate {run_dir}` first")
    metrics = runs.read_json(run_dir / runs.METRICS)
    test = metrics["test"]
    sections = [
        ("summary", "Summary", _summary(run_dir, config, metrics, test, evaluated_now)),
        ("data", "Data", _data_section(config, data_dir)),
        ("model", "Model", _model_section(run_dir, config)),
        ("training", "Training", _training_section(run_dir, config, metrics)),
        ("lr-find", "Learning-rate finder", _lr_find_section(run_dir)),
        ("test", "Test set", _test_section(run_dir, test, evaluated_now)),
        ("calibration", "Calibration", _calibration_section(run_dir)),
        ("environment", "Environment", _environment_section(run_dir)),
    ]
    subtitle = f"run directory {run_dir.resolve()} · report written {time.strftime('%Y-%m-%d %H:%M:%S')}"
    return write_html(out, page(f"digitlab report: {run_dir.resolve().name}", subtitle, sections))


def _summary(run_dir: Path, config: dict, metrics: dict, test: dict, evaluated_now: bool) -> str:
    model, train = config["model"], config["train"]
    v = metrics.get("validation", {})
    widths = model.get("units") if model["architecture"] == "mlp" else model.get("filters")
    shape = f"{model['architecture'].upper()} {'-'.join(map(str, widths or []))}"
    items = [
        ("test accuracy", pct(test["accuracy"])),
        ("validation accuracy", pct(v.get("accuracy"))),
        ("train accuracy", pct(metrics.get("train", {}).get("accuracy"))),
        ("model", shape),
        ("parameters", f"{metrics.get('parameters', 0):,}"),
        ("epochs", f"{metrics.get('epochs', '?')} (best {v.get('best_epoch', '?')})"),
    ]
    note = (
        "The test set was evaluated while writing this report (metrics.json had no test figures)."
        if evaluated_now
        else "Test figures from an earlier `digitlab evaluate`."
    )
    if test.get("kind") == "line":
        figures = (
            f"({esc(test['errors'])} of {esc(test['count'])} test lines wrong), character error rate "
            f"{esc(pct(test['character_error_rate']))}. "
        )
    else:
        figures = (
            f"({esc(test['errors'])} of {esc(test['count'])} test images wrong), test loss {esc(num(test['loss']))}. "
        )
    return (
        cards(items)
        + f"<p>Test accuracy: <b>{esc(pct(test['accuracy']))}</b> "
        + figures
        + f"Data set <code>{esc(train.get('dataset', 'mnist'))}</code>, seed {esc(train['seed'])}.</p>"
        f'<p class="note">{prose(note)} The best epoch was chosen on the validation split; the test set '
        "only reports.</p>"
    )


def _data_section(config: dict, data_dir: Path | None) -> str:
    ds = load_dataset(runs.dataset_name(config), data_dir=data_dir)
    info = data_info(ds)
    with tempfile.TemporaryDirectory(prefix="digitlab-report-") as tmp:
        figures = explore(ds, tmp)["figures"]
        grid = figure(figures["samples_gray"], "25 random training images")
        counts = figure(figures["class_counts"], "Images per class, train and test")
        pixels = figure(figures["pixel_histogram"], "Pixel values, raw and divided by 255 (log scale)")
    split = config.get("data", {})
    limit = config["train"].get("limit")
    facts = [
        ["data set", info["name"]],
        ["source", info["source"]],
        ["verified", "yes, SHA-256 of every file matches" if info["verified"] else "no (no pinned digests)"],
        *[[key, f"{tuple(shape)} {info['dtypes'][key]}"] for key, shape in info["shapes"].items()],
        [
            "split (seeded, stratified)",
            f"{split.get('train', '?')} train / {split.get('validation', '?')} validation"
            f" (validation fraction {config['train'].get('val_fraction')}, split seed {config['train'].get('split_seed')})"
            + (f"; training limited to the first {limit} images" if limit else ""),
        ],
        *[
            [f"pixels ({s})", f"min {p['min']}, max {p['max']}, mean {p['mean']:.2f}"]
            for s, p in info["pixels"].items()
        ],
    ]
    names = info["class_names"]
    tr, te = info["counts"]["train"], info["counts"]["test"]
    count_rows = [[n, a, b] for n, a, b in zip(names, tr, te)] + [["total", sum(tr), sum(te)]]
    return (
        kv_table(facts)
        + '<div class="grid"><div><h3>Images per class</h3>'
        + table(["class", "train", "test"], count_rows, numeric={1, 2})
        + "</div>"
        + f"<div><h3>Sample grid</h3>{grid}</div></div>"
        + f"<h3>Class distribution</h3>{counts}<h3>Pixel histogram</h3>{pixels}"
    )


def layer_summary(model) -> list[list]:
    """(name, type, output shape, parameters) per layer of a loaded Keras model."""
    rows = []
    for layer in model.layers:
        try:
            shape = tuple(layer.output.shape)
        except (AttributeError, ValueError):
            shape = "?"
        shape = str(shape).replace("None", "batch")
        rows.append([layer.name, type(layer).__name__, shape, f"{layer.count_params():,}"])
    return rows


def _model_section(run_dir: Path, config: dict) -> str:
    model = load_keras_model(runs.require_model(run_dir))
    trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
    total = int(model.count_params())
    size = (run_dir / runs.MODEL).stat().st_size
    unused = UNUSED.get(config["model"]["architecture"], ())
    conf = [[k, _value(v)] for k, v in config["model"].items() if k not in unused]
    return (
        cards(
            [("parameters", f"{total:,}"), ("trainable", f"{trainable:,}"), ("model.keras", f"{size / 1024:,.1f} KiB")]
        )
        + '<div class="grid side"><div><h3>Configuration</h3>'
        + kv_table(conf)
        + "</div>"
        + "<div><h3>Layers</h3>"
        + table(["layer", "type", "output shape", "parameters"], layer_summary(model), numeric={3})
        + "</div></div>"
    )


def _value(v) -> str:
    return ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)


def _training_section(run_dir: Path, config: dict, metrics: dict) -> str:
    conf = [[k, _value(v)] for k, v in config["train"].items()]
    history = read_csv(run_dir / runs.HISTORY) if (run_dir / runs.HISTORY).is_file() else []
    best = metrics.get("validation", {}).get("best_epoch")
    rows = [
        [
            r["epoch"],
            num(r.get("loss")),
            pct(r.get("accuracy")),
            num(r.get("val_loss")),
            pct(r.get("val_accuracy")),
            f"{float(r['lr']):.3g}" if r.get("lr") else "",
            num(r.get("seconds"), 1),
        ]
        for r in history
    ]
    best_rows = {i for i, r in enumerate(history) if str(best) == r["epoch"]}
    secs = metrics.get("train_seconds")
    return (
        figure(run_dir / runs.CURVES, "Training and validation loss and accuracy per epoch")
        + '<div class="grid side"><div><h3>Configuration</h3>'
        + kv_table(conf)
        + "</div>"
        + "<div><h3>History</h3>"
        + table(
            ["epoch", "loss", "accuracy", "val loss", "val accuracy", "lr", "seconds"],
            rows,
            numeric={0, 1, 2, 3, 4, 5, 6},
            highlight=best_rows,
        )
        + f'<p class="note">Shaded: the best validation epoch, whose weights are model.keras. '
        f"{esc(f'{secs:.1f} s of training in all.' if secs is not None else '')}</p></div></div>"
    )


def _lr_find_section(run_dir: Path) -> str:
    csv_path = run_dir / runs.LR_FIND_CSV
    if not (run_dir / runs.LR_FIND_PNG).is_file():
        return (
            '<p class="note">No learning-rate range test in this run directory. '
            "<code>digitlab report RUN --lr-find</code> runs a quick one into it.</p>"
        )
    text = ""
    if csv_path.is_file():
        rows = read_csv(csv_path)
        lrs = np.array([float(r["lr"]) for r in rows])
        smoothed = np.array([float(r["smoothed"]) for r in rows])
        text = f"<p>{len(rows)} batches, learning rate {lrs[0]:.2g} to {lrs[-1]:.2g}; " + (
            f"suggested <b>{suggested:.3g}</b> ({esc(SUGGESTION_RULE)}).</p>"
            if (suggested := suggest_lr(lrs, smoothed))
            else "no suggestion: the loss never fell.</p>"
        )
    return text + figure(run_dir / runs.LR_FIND_PNG, "Loss against learning rate (log scale)")


def _test_section(run_dir: Path, test: dict, evaluated_now: bool) -> str:
    if test.get("kind") == "line":
        return _line_test_section(run_dir, test, evaluated_now)
    per_class = [
        [name, num(m["precision"]), num(m["recall"]), num(m["f1-score"]), int(m["support"])]
        for name, m in test["per_class"].items()
    ]
    figures = test.get("figures", {})
    mistakes = test.get("most_confident_mistakes", [])
    names = test.get("class_names") or list(test["per_class"])
    mistake_rows = [[m["index"], names[m["true"]], names[m["predicted"]], pct(m["confidence"])] for m in mistakes[:10]]
    # Older runs' metrics.json say nothing: their confidences were the model's own.
    confidence = test.get("confidence", "uncalibrated confidence")
    touched = (
        "evaluated by this report: it ran digitlab.evaluate on the test set" if evaluated_now else "from metrics.json"
    )
    return (
        cards(
            [
                ("test accuracy", pct(test["accuracy"])),
                ("test loss", num(test["loss"])),
                ("wrong", f"{test['errors']} of {test['count']}"),
                ("macro F1", num(test.get("macro_f1"))),
            ]
        )
        + f'<p class="note">Test figures {esc(touched)}. Accuracy and loss from the model\'s own probabilities; '
        f"the confidences below are the {esc(confidence)}, as <code>digitlab predict</code> shows them.</p>"
        + "<h3>Per class</h3>"
        + table(["class", "precision", "recall", "F1", "support"], per_class, numeric={1, 2, 3, 4})
        + "<h3>Confusion matrix</h3>"
        + figure(
            run_dir / figures.get("confusion_matrix", "confusion_matrix.png"),
            "Rows: true class; columns: predicted",
            full=True,
        )
        + _mistakes(run_dir, figures, ["test index", "true", "predicted", confidence], mistake_rows)
        + figure(run_dir / figures.get("predictions", "predictions.png"), "Random test predictions (red: wrong)")
    )


def _mistakes(run_dir: Path, figures: dict, header: list[str], rows: list[list]) -> str:
    """The most confident mistakes: a table of the first ones (index, true, read, confidence) and the gallery."""
    return (
        "<h3>Most confident mistakes</h3>"
        + (table(header, rows, numeric={0, 3}) if rows else '<p class="note">No mistakes.</p>')
        + figure(run_dir / figures.get("mistakes", runs.MISTAKES), "Most confident mistakes first")
    )


def _line_test_section(run_dir: Path, test: dict, evaluated_now: bool) -> str:
    """A line run's test figures: on lines composed from the test split's digits."""
    figures = test.get("figures", {})
    touched = (
        "evaluated by this report: it ran digitlab.evaluate on the test lines" if evaluated_now else "from metrics.json"
    )
    confidence = test.get("confidence", "uncalibrated confidence")
    by_length = [[n, m["count"], pct(m["accuracy"])] for n, m in test["by_length"].items()]
    mistakes = [[m["index"], m["true"], m["read"], pct(m["confidence"])] for m in test["most_confident_mistakes"][:10]]
    accepted = test.get("accepted_accuracy")
    return (
        cards(
            [
                ("numbers exactly right", pct(test["accuracy"])),
                ("character error rate", pct(test["character_error_rate"])),
                ("wrong", f"{test['errors']} of {test['count']}"),
                ("accepted (not unsure)", pct(test["coverage"])),
                ("accepted exactly right", pct(accepted) if accepted is not None else "none accepted"),
            ]
        )
        + f'<p class="note">Test figures {esc(touched)}: {esc(test["lines"])}. Digits dropped: '
        f"{test['deleted']}, digits added: {test['inserted']}; the confidences are the {esc(confidence)} "
        "of the whole number, as <code>digitlab read</code> shows it.</p>"
        + "<h3>By length</h3>"
        + table(["digits", "lines", "exactly right"], by_length, numeric={0, 1, 2})
        + figure(run_dir / figures.get("by_length", runs.BY_LENGTH), "Test lines read exactly, by length")
        + "<h3>Substituted digits</h3>"
        + figure(
            run_dir / figures.get("confusion_matrix", runs.CONFUSION),
            "Rows: true digit; columns: the digit read in its place (aligned by edit distance)",
            full=True,
        )
        + _mistakes(run_dir, figures, ["line", "true", "read", confidence], mistakes)
    )


def _calibration_section(run_dir: Path) -> str:
    path = run_dir / runs.CALIBRATION
    if not path.is_file():
        return '<p class="note">No calibration.json: the run has not finished training.</p>'
    c = runs.read_json(path)
    rows = [
        ["temperature", f"{c['temperature']:.3f}"],
        ["unsure threshold (calibrated confidence)", f"{c['threshold']:.4f}"],
        ["threshold rule", c.get("threshold_rule", "")],
        ["fitted on", c.get("fitted_on", "")],
        ["expected calibration error (ECE)", f"{c['ece_before']:.4f} before, {c['ece_after']:.4f} after"],
        ["negative log-likelihood", f"{c['nll_before']:.4f} before, {c['nll_after']:.4f} after"],
        [
            f"validation {'lines' if c.get('kind') == 'string' else 'digits'} accepted",
            pct(c.get("validation_coverage")),
        ],
        ["accuracy of the accepted", pct(c.get("validation_accepted_accuracy"))],
    ]
    return (
        '<div class="grid"><div>'
        + kv_table(rows)
        + "</div><div>"
        + figure(run_dir / runs.RELIABILITY, "Reliability: accuracy against confidence, validation split")
        + "</div></div>"
    )


def _environment_section(run_dir: Path) -> str:
    path = run_dir / runs.ENVIRONMENT
    if not path.is_file():
        return '<p class="note">No environment.json in this run directory.</p>'
    env = runs.read_json(path)
    rows = [[k, v] for k, v in env.items() if k != "packages"]
    packages = [[k, v] for k, v in env.get("packages", {}).items()]
    return (
        '<div class="grid"><div>'
        + kv_table(rows)
        + "</div><div>"
        + table(["package", "version"], packages)
        + "</div></div>"
    )


# ---- the experiments ladder's report ----


def _epochs(n) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def build_experiments_report(out_dir: Path, results: list[dict], out: Path | None = None, note: str = "") -> Path:
    """One HTML file summarising the ladder: the results table, the ladder chart, each step's figures.

    `note` (say, that this was a --quick run) goes under the title."""
    out_dir = Path(out_dir)
    out = Path(out) if out is not None else out_dir / runs.REPORT
    if not results:
        raise RunError(f"{out_dir}: no experiment results to report")
    trained = [r for r in results if r.get("kind") == "train"]
    headers = [
        "step",
        "name",
        "what changed",
        "train accuracy",
        "validation accuracy",
        "test accuracy",
        "test loss",
        "seconds",
        "tutorial",
    ]
    rows = [
        [
            r["step"],
            r["name"],
            r["what_changed"],
            pct(r["train_accuracy"]),
            pct(r["validation_accuracy"]),
            pct(r["test_accuracy"]),
            num(r["test_loss"]),
            num(r["seconds"], 1),
            r.get("tutorial", ""),
        ]
        for r in results
    ]
    best_val = max(trained, key=lambda r: r["validation_accuracy"], default=None)
    summary = (
        (f"<p><b>{prose(note)}</b></p>" if note else "")
        + table(
            headers, rows, numeric={0, 3, 4, 5, 6, 7}, highlight={i for i, r in enumerate(results) if r is best_val}
        )
        + '<p class="note">Shaded: the best validation accuracy. Every step trains on the same seeded '
        "split; the best epoch of each step is chosen on validation, and the test set only reports.</p>"
        + figure(out_dir / "ladder.png", "Train, validation and test accuracy per step")
    )
    steps = []
    for r in results:
        run = out_dir / r["name"]
        head = f"<h3>{esc(r['step'])}. {esc(r['name'])}</h3><p>{esc(r['what_changed'])}"
        head += f' <span class="note">(tutorial: {esc(r["tutorial"])})</span></p>' if r.get("tutorial") else "</p>"
        if r.get("kind") == "lr_find":
            body = figure(run / runs.LR_FIND_PNG, "Loss against learning rate (log scale)")
        else:
            head += (
                f"<p>train {esc(pct(r['train_accuracy']))}, validation {esc(pct(r['validation_accuracy']))}, "
                f"test {esc(pct(r['test_accuracy']))}; {esc(r.get('parameters', '?'))} parameters, "
                f"{esc(_epochs(r.get('epochs')))}, {esc(num(r['seconds'], 1))} s.</p>"
            )
            body = (
                '<div class="grid pair">'
                + figure(run / runs.CURVES, f"{r['name']}: loss and accuracy per epoch")
                + figure(run / runs.CONFUSION, f"{r['name']}: test confusion matrix")
                + "</div>"
            )
        steps.append(head + body)
    env = _environment_section(out_dir / trained[0]["name"]) if trained else ""
    sections = [("results", "Results", summary), ("steps", "Steps", "".join(steps))]
    if env:
        sections.append(("environment", "Environment", env))
    subtitle = f"{out_dir.resolve()} · report written {time.strftime('%Y-%m-%d %H:%M:%S')}"
    return write_html(out, page("digitlab experiments: the tuning ladder", subtitle, sections))
