"""The `digitlab` command: parses arguments, calls the library, prints. Nothing else lives here.

Options that several commands share are defined once below; their choices and defaults come from
digitlab.config, so the help cannot disagree with the code."""

from __future__ import annotations

import atexit
import contextlib
import errno
import functools
import importlib
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from digitlab import __version__, quiet, runs
from digitlab.config import (
    ARCHITECTURES,
    BATCH_ENGINES,
    BATCH_SIZE,
    BATCH_TASKS,
    DEFAULT_PRESET,
    OPTIMIZERS,
    PRECISION_CHOICES,
    PRESETS,
    QUICK_EPOCHS_DIVISOR,
    QUICK_LIMIT,
    READ_METHODS,
    RUNTIMES,
    SCHEDULES,
    SERVE_LIMIT_CONCURRENCY,
    SERVE_TIMEOUT,
    TrainConfig,
    parse_units,
    resolve_configs,
)
from digitlab.data import SPECS
from digitlab.errors import DigitlabError

# Each command imports its stage's module when it runs, after its arguments and run directory are
# checked: most stages load TensorFlow (seconds), which `digitlab --help`, a typo in --preset or a
# missing run must not wait for.

app = typer.Typer(
    help="Recognise handwritten digits: fetch MNIST, explore, train, evaluate, predict, serve.",
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
data_app = typer.Typer(help="Fetch, verify and describe the data sets.")
app.add_typer(data_app, name="data")

DataDirOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--data-dir",
        envvar="DIGITLAB_DATA_DIR",
        help="Directory with the four IDX files (raw or .gz) or mnist.npz; tried before the cache.",
    ),
]
DATASETS_HELP = f"{', '.join(SPECS)}, or any name for a 28x28 ten-class IDX set in --data-dir."
DatasetOpt = Annotated[str, typer.Option("--dataset", metavar="NAME", help=DATASETS_HELP)]
DEFAULTS = TrainConfig()


def _choices(values) -> str:
    return ", ".join(values)


# Shared by `train` and `lr-find`: None means "the preset's value".
PresetOpt = Annotated[str, typer.Option(metavar="NAME", help=f"Starting configuration: {_choices(PRESETS)}.")]
ModelOpt = Annotated[
    Optional[str],
    typer.Option("--model", metavar="ARCH", help=f"Architecture: {_choices(ARCHITECTURES)} [default: the preset's]."),
]
UnitsOpt = Annotated[
    Optional[str], typer.Option(metavar="W,W,...", help="MLP hidden widths, comma-separated, e.g. 4,4 or 10,10.")
]
NormalizeOpt = Annotated[
    Optional[bool],
    typer.Option("--normalize/--no-normalize", help="Scale pixels to 0-1 inside the model [default: on]."),
]
OptimizerOpt = Annotated[
    Optional[str], typer.Option(metavar="NAME", help=f"{_choices(OPTIMIZERS)} [default: the preset's].")
]
BatchSizeOpt = Annotated[Optional[int], typer.Option(metavar="N", help="Images per step [default: the preset's].")]
SeedOpt = Annotated[
    Optional[int],
    typer.Option(metavar="N", help=f"Seed for weights, shuffling and dropout [default: {DEFAULTS.seed}]."),
]
OptDatasetOpt = Annotated[Optional[str], typer.Option("--dataset", metavar="NAME", help=DATASETS_HELP)]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"digitlab {__version__}")
        raise typer.Exit()


def _help_without_a_command(ctx: typer.Context) -> None:
    """A group called without a command (bare `digitlab`, `digitlab data`): its help on stderr and exit
    code 2, as for any other incomplete command line."""
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help(), err=True)
        raise typer.Exit(2)


@app.callback(invoke_without_command=True)
def _main(
    ctx: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Recognise handwritten digits: fetch MNIST, explore, train, evaluate, predict, serve.

    Add --verbose anywhere to see TensorFlow's own start-up messages."""
    _show_data_messages(ctx)
    _help_without_a_command(ctx)


@data_app.callback(invoke_without_command=True)
def _data(ctx: typer.Context) -> None:
    _help_without_a_command(ctx)


class _EchoHandler(logging.Handler):
    """A log record as a plain line on stderr (wherever stderr is when it is written)."""

    def emit(self, record: logging.LogRecord) -> None:
        typer.echo(self.format(record), err=True)


def _show_data_messages(ctx: typer.Context) -> None:
    """Show what digitlab.data logs while the command runs: a fetch under way (seconds to minutes), a
    damaged cache refetched. The logger is as it was once the command ends."""
    log = logging.getLogger("digitlab.data")
    handler, level = _EchoHandler(), log.level
    log.setLevel(logging.INFO)
    log.addHandler(handler)

    def restore() -> None:
        log.removeHandler(handler)
        log.setLevel(level)

    ctx.call_on_close(restore)


# The one rule of `predict`, `read` and `batch` (shown in their --help and the README's Errors section).
EXIT_CODES = (
    "Exit codes: 0 every file was read (some may be unsure); 1 some files could not be read, each with its "
    "error row, the others read; 2 stopped with one error line: a usage error, bad input (an option, the run, "
    "a source with no images) or output that could not be written (a full disk); 130 interrupted."
)


def fail(message: str, code: int = 2) -> None:
    """Print a one-line error and exit non-zero (2: the command stopped; see EXIT_CODES)."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def reports_errors(command):
    """Decorate every command: a DigitlabError becomes a one-line message and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except DigitlabError as e:
            fail(str(e))

    return wrapper


_exit_code: int | None = None  # what main() exits with, once it returns normally


def main() -> None:
    """The console script: `--verbose` taken out of the arguments, Typer's parsing errors printed as one line."""
    atexit.register(_skip_teardown)  # registered first, so it runs after every other exit handler
    _no_huge_page_stalls()
    args = [a for a in sys.argv[1:] if a != "--verbose"]
    if len(args) < len(sys.argv) - 1:
        quiet.verbose()  # TensorFlow's own start-up lines show, here and in the processes the command starts
    # Not standalone: Typer's parsing errors come back as exceptions, printed in the project's one-line style.
    command = typer.main.get_command(app)
    try:
        code = _flushed(command.main(args=args, prog_name="digitlab", standalone_mode=False))
    except typer.TyperException as e:  # the public base of every usage error (Click's, vendored in Typer)
        typer.secho(f"error: {usage_error_line(e)}", fg=typer.colors.RED, err=True)
        _exit(e.exit_code)
    except typer.Abort:
        typer.secho("error: aborted", fg=typer.colors.RED, err=True)
        _exit(1)
    except OSError as e:  # a full disk under a write that is not the atomic writer's, stdout's above all
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = e.filename or _stdout_name()
        typer.secho(f"error: no space left on device writing {where}", fg=typer.colors.RED, err=True)
        _discard_stdout()
        _exit(2)
    _exit(code if isinstance(code, int) else 0)


def _no_huge_page_stalls() -> None:
    """NumPy asks Linux for transparent huge pages for every large array (madvise); where the kernel then
    compacts memory to find them (defrag "madvise", the common default), a command's first touch of each
    new array waits on it: 0.4-0.5 s of system time in `digitlab train --preset fast`. The command's arrays
    get ordinary pages instead. NumPy's switch is private, so a NumPy without it keeps its own way."""
    with contextlib.suppress(ImportError, AttributeError):
        from numpy._core.multiarray import _set_madvise_hugepage

        _set_madvise_hugepage(False)


def _exit(code: int) -> None:
    global _exit_code
    _exit_code = code
    sys.exit(code)


def _skip_teardown() -> None:
    """The last exit handler of a command that ended normally: once TensorFlow is loaded, Python's teardown
    of its modules takes 1-1.5 s of every command that used a model, after everything digitlab writes is
    written and every other exit handler (Ray's, temporary files') has run. The process ends here instead."""
    if _exit_code is None or "tensorflow" not in sys.modules:
        return
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(_exit_code)


def _flushed(code):
    """The command's exit code once its output is written: rows still buffered (a CSV) reach stdout here,
    where a full disk is reported, not in Python's shutdown."""
    sys.stdout.flush()
    return code


def _stdout_name() -> str:
    """Where stdout goes (/dev/full, a file), for an error that names it."""
    try:
        return os.readlink(f"/proc/self/fd/{sys.stdout.fileno()}")
    except (OSError, ValueError, AttributeError):
        return "standard output"


def _discard_stdout() -> None:
    """Point stdout at /dev/null: what is still buffered for a full disk would otherwise fail again, with a
    traceback, when Python flushes it at exit."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def usage_error_line(e: Exception) -> str:
    """A parsing error as one line: the option, what it expects and the value given, when known."""
    cause = e.__cause__
    if isinstance(e, typer.BadParameter) and e.param is not None and hasattr(cause, "errors"):
        # Typer checks a value's type with pydantic; its ValidationError holds the value given.
        first = cause.errors()[0]
        hint = e.param.get_error_hint().replace("'", "")
        message = f"{hint}: {first['msg'][:1].lower()}{first['msg'][1:]} (got {first['input']!r})"
    else:
        message = e.format_message().rstrip(".")
        message = message[:1].lower() + message[1:]
    ctx = getattr(e, "ctx", None)
    return message + (f"; see {ctx.command_path} --help" if ctx is not None else "")


def start_tensorflow() -> None:
    """Import Keras, and with it TensorFlow (quietly unless --verbose: digitlab.quiet), once a command has
    checked its arguments and run and is about to use a model."""
    with contextlib.suppress(ImportError):  # the command reports a missing Keras itself, in one line
        importlib.import_module("keras")


def prepare_run(run: Path, runtime: str = "keras") -> None:
    """A run directory's cheap checks, then TensorFlow if the Keras runtime is to read it: a RunError for a
    missing directory, a missing model.keras with the Keras runtime (ONNX Runtime's loader names a missing
    model.onnx) or a config.json that is not what digitlab writes, before anything slow is loaded."""
    if runtime == "keras":
        runs.require_model(run)
    runs.read_run_config(run)
    if runtime == "keras":
        start_tensorflow()


def describe_configs(model_cfg, train_cfg) -> str:
    """A short summary of what a run trains, for the terminal."""
    if model_cfg.architecture == "mlp":
        shape = f"mlp {'-'.join(map(str, model_cfg.units))} ({model_cfg.activation})"
    else:
        shape = f"{model_cfg.architecture} {'-'.join(map(str, model_cfg.filters))}" + (
            f", dense {model_cfg.dense}" if model_cfg.dense else ""
        )
    shape += f", dropout {model_cfg.dropout:g}" if model_cfg.dropout else ""
    pixels = "standardized" if model_cfg.standardize else "scaled to 0-1" if model_cfg.normalize else "raw 0-255"
    epochs = f"{train_cfg.epochs} epoch{'s' if train_cfg.epochs != 1 else ''}"
    schedule = f"{train_cfg.schedule} lr {train_cfg.learning_rate:g}"
    extras = [f"weight decay {train_cfg.weight_decay:g}"] if train_cfg.weight_decay else []
    extras += [f"label smoothing {train_cfg.label_smoothing:g}"] if train_cfg.label_smoothing else []
    warps = [f"{k} {v:g}" for k, v in train_cfg.augmentation().items() if v]
    extras += [f"augmentation {', '.join(warps)}"] if warps else []
    limit = f", first {train_cfg.limit:,} training images" if train_cfg.limit else ""
    return (
        f"model: {shape}, pixels {pixels}\n"
        f"training: {epochs}, batch {train_cfg.batch_size}, {train_cfg.optimizer} {schedule}"
        + "".join(f", {e}" for e in extras)
        + f", {train_cfg.precision}, seed {train_cfg.seed}\n"
        f"data: {train_cfg.dataset}, validation {train_cfg.val_fraction:.0%} (split seed {train_cfg.split_seed}){limit}"
    )


# ---- data and explore ----


def _count_table(class_names: list[str], counts: dict[str, list[int]]) -> list[str]:
    width = max(5, *map(len, class_names))
    lines = [f"{'class':<{width}}  {'train':>6}  {'test':>6}"]
    lines += [f"{n:<{width}}  {tr:>6}  {te:>6}" for n, tr, te in zip(class_names, counts["train"], counts["test"])]
    lines.append(f"{'total':<{width}}  {sum(counts['train']):>6}  {sum(counts['test']):>6}")
    return lines


@data_app.command("fetch")
@reports_errors
def data_fetch(dataset: DatasetOpt = "mnist", data_dir: DataDirOpt = None) -> None:
    """Fetch and verify a data set, and store it in digitlab's cache."""
    from digitlab.data import DIGESTS, cache_path, fetch

    ds = fetch(dataset, data_dir=data_dir)
    typer.echo(f"{ds.name}: {len(ds.x_train)} train + {len(ds.x_test)} test images from {ds.source}")
    typer.echo(f"verified: {'yes, SHA-256 matches' if ds.verified else 'no (no pinned digests for this name)'}")
    if ds.name in DIGESTS:
        typer.echo(f"cached in {cache_path(ds.name)}")
    else:
        typer.echo("not cached: only data sets with pinned digests are")


@data_app.command("info")
@reports_errors
def data_info_command(
    dataset: DatasetOpt = "mnist",
    data_dir: DataDirOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the information as JSON.")] = False,
) -> None:
    """Describe a data set: source, verification, shapes, dtypes, images per class, pixel values."""
    import json

    from digitlab.data import data_info, load_dataset

    info = data_info(load_dataset(dataset, data_dir=data_dir))
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    typer.echo(f"{'dataset':<9} {info['name']}")
    typer.echo(f"{'source':<9} {info['source']}")
    typer.echo(f"{'verified':<9} {'yes (SHA-256 matches)' if info['verified'] else 'no (no pinned digests)'}")
    for key, shape in info["shapes"].items():
        typer.echo(f"{key:<9} {str(tuple(shape)):<16} {info['dtypes'][key]}")
    for split, p in info["pixels"].items():
        typer.echo(f"{'pixels':<9} {split:<5} min {p['min']:>3}  max {p['max']:>3}  mean {p['mean']:.2f}")
    typer.echo("")
    for line in _count_table(info["class_names"], info["counts"]):
        typer.echo(line)


@app.command("explore")
@reports_errors
def explore_command(
    dataset: DatasetOpt = "mnist",
    data_dir: DataDirOpt = None,
    index: Annotated[int, typer.Option("--index", help="Train image to print raw.")] = 0,
    out: Annotated[Path, typer.Option("--out", help="Directory for the PNG figures.")] = Path("explore"),
    samples: Annotated[int, typer.Option("--samples", help="Digits in the sample grids.")] = 25,
    seed: Annotated[int, typer.Option("--seed", help="Seed for picking the sample digits.")] = 0,
) -> None:
    """Print one digit's raw pixels and the class counts; write sample grids, counts and histograms."""
    from digitlab.data import load_dataset
    from digitlab.explore import explore

    result = explore(load_dataset(dataset, data_dir=data_dir), out, index=index, n_samples=samples, seed=seed)
    typer.echo(f"train image {result['index']}, label {result['label']} ({result['class_name']}), raw pixels:")
    for row in result["raw"]:
        typer.echo(" ".join(f"{int(v):3d}" for v in row))
    typer.echo("")
    for line in _count_table(result["class_names"], result["counts"]):
        typer.echo(line)
    typer.echo("")
    for path in result["figures"].values():
        typer.echo(f"wrote {path}")


# ---- end data and explore ----

# ---- model commands: train, lr-find, evaluate, predict, ensemble ----

RunArg = Annotated[Path, typer.Argument(help="A run directory made by `digitlab train`.", show_default=False)]
RuntimeOpt = Annotated[
    str,
    typer.Option(
        "--runtime",
        metavar="NAME",
        help=f"{_choices(RUNTIMES)}: model.keras, or model.onnx from `digitlab export` (no TensorFlow).",
    ),
]
# predict, read and serve: ONNX Runtime where the run has a model.onnx exported from its model.keras as it is
ReadRuntimeOpt = Annotated[
    Optional[str],
    typer.Option(
        "--runtime",
        metavar="NAME",
        help=f"{_choices(RUNTIMES)}: model.keras, or model.onnx from `digitlab export` (no TensorFlow) "
        "[default: onnx where `digitlab export` made model.onnx from the run's model.keras as it is, else keras].",
        show_default=False,
    ),
]


@app.command()
@reports_errors
def train(
    out: Annotated[
        Optional[Path], typer.Option("--out", help="Run directory to create [default: runs/<preset>-<time>].")
    ] = None,
    preset: PresetOpt = DEFAULT_PRESET,
    model: ModelOpt = None,
    units: UnitsOpt = None,
    activation: Annotated[
        Optional[str], typer.Option(metavar="NAME", help="MLP hidden activation, e.g. relu, tanh.")
    ] = None,
    normalize: NormalizeOpt = None,
    dropout: Annotated[
        Optional[float],
        typer.Option(
            metavar="RATE",
            help="Dropout before the classifier, 0 to <1 (TensorFlow's quickstart: --units 128 --dropout 0.2) "
            "[default: the preset's].",
        ),
    ] = None,
    optimizer: OptimizerOpt = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="(Peak) learning rate.")] = None,
    weight_decay: Annotated[Optional[float], typer.Option(help="Decoupled weight decay (0: none).")] = None,
    schedule: Annotated[
        Optional[str], typer.Option(metavar="NAME", help=f"{_choices(SCHEDULES)} [default: the preset's].")
    ] = None,
    label_smoothing: Annotated[
        Optional[float], typer.Option(help="Spread this share of each target over all classes (0: none).")
    ] = None,
    batch_size: BatchSizeOpt = None,
    epochs: Annotated[Optional[int], typer.Option(help="Passes over the training split.")] = None,
    shift: Annotated[
        Optional[float], typer.Option(help="Augmentation: random shift up to this many pixels (0: off).")
    ] = None,
    rotate: Annotated[
        Optional[float], typer.Option(help="Augmentation: random rotation up to this many degrees.")
    ] = None,
    scale: Annotated[Optional[float], typer.Option(help="Augmentation: random zoom up to this fraction.")] = None,
    elastic: Annotated[
        Optional[float], typer.Option(help="Augmentation: elastic distortion strength (alpha, e.g. 34; 0: off).")
    ] = None,
    shear: Annotated[
        Optional[float], typer.Option(help="Augmentation: random slant up to this many px sideways per px of height.")
    ] = None,
    thickness: Annotated[
        Optional[float], typer.Option(help="Augmentation: thicken or thin strokes by up to this share of 1 px.")
    ] = None,
    blur: Annotated[
        Optional[float], typer.Option(help="Augmentation: blur half the images, Gaussian sigma up to this (px).")
    ] = None,
    outliers: Annotated[
        Optional[float],
        typer.Option(
            metavar="SHARE",
            help="Non-digit marks (letters, symbols, scribbles) added per training digit, learnt as "
            "'not a digit'; the unsure threshold is then chosen with validation non-digits too; for a line model, "
            "the share of lines with a mark among their digits [default: the preset's].",
        ),
    ] = None,
    precision: Annotated[
        Optional[str],
        typer.Option(
            metavar="NAME",
            help=f"{_choices(PRECISION_CHOICES)}: auto is bfloat16 where the CPU has it natively under TensorFlow, else float32 [default: the preset's; model.keras is float32].",
        ),
    ] = None,
    seed: SeedOpt = None,
    limit: Annotated[
        Optional[int], typer.Option(help="Train on the first N training images only (quick runs).")
    ] = None,
    val_fraction: Annotated[
        Optional[float],
        typer.Option(help=f"Share of the training set held out for validation [default: {DEFAULTS.val_fraction}]."),
    ] = None,
    split_seed: Annotated[
        Optional[int],
        typer.Option(
            help=f"Seed of the train/validation split [default: {DEFAULTS.split_seed}, the same for every run]."
        ),
    ] = None,
    dataset: OptDatasetOpt = None,
    data_dir: DataDirOpt = None,
    resume: Annotated[Optional[Path], typer.Option(help="Continue the interrupted run in this directory.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace the run already in --out.")] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bar: one line per epoch, as when not on a terminal.")
    ] = False,
) -> None:
    """Train a model on the train split, choose the best epoch on validation, save a run directory."""
    # Keras' bar on a terminal; elsewhere (a log file, a pipe) and with -q one plain line per epoch.
    bar = not quiet and sys.stdout.isatty()
    verbose, on_epoch = (1, None) if bar else (0, _echo_epoch)
    if resume is not None:
        runs.read_run_config(resume)
        start_tensorflow()
        from digitlab import training

        metrics = training.resume(resume, data_dir=data_dir, verbose=verbose, on_epoch=on_epoch)
        out = resume
    else:
        model_cfg, train_cfg = resolve_configs(
            preset,
            architecture=model,
            units=parse_units(units) if units else None,
            activation=activation,
            normalize=normalize,
            dropout=dropout,
            optimizer=optimizer,
            learning_rate=lr,
            weight_decay=weight_decay,
            schedule=schedule,
            label_smoothing=label_smoothing,
            batch_size=batch_size,
            epochs=epochs,
            seed=seed,
            limit=limit,
            dataset=dataset,
            val_fraction=val_fraction,
            split_seed=split_seed,
            shift=shift,
            rotate=rotate,
            scale=scale,
            elastic=elastic,
            shear=shear,
            thickness=thickness,
            blur=blur,
            outliers=outliers,
            precision=precision,
        )
        if out is None:
            import time

            out = Path("runs") / f"{model or preset}-{time.strftime('%Y%m%d-%H%M%S')}"
        runs.check_new_run(out, overwrite)
        typer.echo(describe_configs(model_cfg, train_cfg))
        start_tensorflow()
        from digitlab import training
        from digitlab.models import build_model

        # The layers, their output shapes and parameters, as the tutorial's model.summary() shows them.
        build_model(model_cfg).summary(print_fn=lambda text, line_break=True: typer.echo(text.rstrip("\n")))

        metrics = training.train(
            model_cfg, train_cfg, out, data_dir=data_dir, overwrite=overwrite, verbose=verbose, on_epoch=on_epoch
        )
    v = metrics["validation"]
    typer.echo(
        f"best epoch {v['best_epoch']}: validation accuracy {v['accuracy']:.4f}, loss {v['loss']:.4f}; "
        f"train accuracy {metrics['train']['accuracy']:.4f}; {metrics['train_seconds']:.1f} s training"
    )
    if metrics.get("exports", {}).get("onnx", {}).get("passed"):
        typer.echo("model.onnx: exported and checked; read, predict and serve run it on ONNX Runtime")
    typer.echo(f"run directory: {out}")


def _echo_epoch(row: dict) -> None:
    from digitlab.training import epoch_line  # imported already: the epoch has run

    typer.echo(epoch_line(row))


@app.command()
@reports_errors
def adapt(
    run: RunArg,
    samples: Annotated[
        list[Path],
        typer.Argument(
            help="Folders of sub-folders 0/ … 9/ of images, CSVs of path,digit, or the page's digitlab-samples.json; "
            "for a line run, numbers: a sub-folder per number (4096/), CSVs of path,text.",
            show_default=False,
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="The new run directory to write.")],
    overwrite: Annotated[bool, typer.Option(help="Replace the run already in --out.")] = False,
    seed: Annotated[int, typer.Option(metavar="N", help="Seed for the warps, the mix and the weights.")] = 0,
    data_dir: DataDirOpt = None,
) -> None:
    """Fine-tune a copy of a run on a person's labelled digits or numbers, recalibrate it, save a new run."""
    prepare_run(run)
    from digitlab.training.adapt import adapt as adapt_run

    metrics = adapt_run(run, samples, out, overwrite=overwrite, seed=seed, data_dir=data_dir)
    about = metrics["adapt"]
    for refused in about["refused"]:
        label = f"digit {refused['digit']}" if "digit" in refused else f"text {refused['text']}"
        typer.echo(f"not used: {refused['file']} ({label}): {refused['reason']}")
    before = about["base_validation_accuracy"]
    typer.echo(
        f"adapted on {about['samples']} samples in {about['seconds']:.1f} s: validation accuracy "
        + (f"{before:.4f} -> " if before is not None else "")
        + f"{metrics['validation']['accuracy']:.4f}, unsure below {metrics['calibration']['threshold']:.3f}"
    )
    typer.echo(f"run directory: {out}")


@app.command("lr-find")
@reports_errors
def lr_find(
    out: Annotated[Path, typer.Option(help="Where lr_find.png and lr_find.csv go.")] = Path("runs/lr-find"),
    preset: PresetOpt = DEFAULT_PRESET,
    model: ModelOpt = None,
    units: UnitsOpt = None,
    normalize: NormalizeOpt = None,
    optimizer: OptimizerOpt = None,
    batch_size: BatchSizeOpt = None,
    start_lr: Annotated[float, typer.Option(help="First learning rate.")] = 1e-5,
    end_lr: Annotated[
        float, typer.Option(help="Last learning rate (the test stops early if the loss explodes).")
    ] = 10.0,
    steps: Annotated[int, typer.Option(help="Batches; the rate grows exponentially from start to end.")] = 200,
    seed: SeedOpt = None,
    dataset: OptDatasetOpt = None,
    data_dir: DataDirOpt = None,
    overwrite: Annotated[bool, typer.Option(help="Replace the lr_find.png and lr_find.csv already in --out.")] = False,
) -> None:
    """Find a learning rate: grow it exponentially per batch, plot loss against it on a log axis."""
    model_cfg, train_cfg = resolve_configs(
        preset,
        architecture=model,
        units=parse_units(units) if units else None,
        normalize=normalize,
        optimizer=optimizer,
        batch_size=batch_size,
        seed=seed,
        dataset=dataset,
    )
    runs.check_lr_find_out(out, overwrite)  # before TensorFlow, as train checks its --out
    start_tensorflow()
    from digitlab import lr_find as finder

    with _progress_bar("lr-find", "batch", "batches") as progress:
        result = finder.lr_find(
            model_cfg,
            train_cfg,
            out,
            start_lr=start_lr,
            end_lr=end_lr,
            steps=steps,
            data_dir=data_dir,
            progress=progress,
            overwrite=overwrite,
        )
    typer.echo(f"tested {len(result['lrs'])} learning rates from {result['lrs'][0]:.2g} to {result['lrs'][-1]:.2g}")
    typer.echo(f"lowest smoothed loss at lr {result['min_loss_lr']:.3g}")
    if result["suggested_lr"] is None:
        typer.echo(
            f"no suggestion: the loss never fell (smoothed {result['smoothed'][0]:.3f} at the start, at best "
            f"{min(result['smoothed']):.3f}); the network is not learning at any of these rates (raw pixels? "
            "drop --no-normalize)"
        )
    else:
        typer.echo(f"suggested learning rate: {result['suggested_lr']:.3g} ({result['rule']})")
    typer.echo(f"plot: {result['plot']}")


@app.command()
@reports_errors
def evaluate(
    run: RunArg,
    min_accuracy: Annotated[
        Optional[float], typer.Option(help="Exit with code 1 if test accuracy is below this (0-1).")
    ] = None,
    data_dir: DataDirOpt = None,
    numbers: Annotated[
        int,
        typer.Option(
            help="Also read N whole numbers per subset (separated, close, sizes, slanted, paper, lines, touching; "
            "1-8 digits, from the test split) as `read` does: exact, character error rate, unsure, numbers.png.",
            metavar="N",
        ),
    ] = 0,
) -> None:
    """Evaluate a run on the test set: accuracy, loss, per-class metrics, confusion matrix, galleries; for a
    line run, exact numbers, character error rate and accuracy per length on lines of test digits. With
    --numbers N, either kind also reads whole numbers."""
    prepare_run(run)
    if numbers < 0:
        fail(f"--numbers: expected a count of numbers per subset (0: none), got {numbers}")
    from digitlab.evaluation import evaluate as run_evaluation
    from digitlab.evaluation import evaluate_numbers

    test = run_evaluation(run, data_dir=data_dir)
    if test["kind"] == "line":
        typer.echo(f"{test['lines']}")
        typer.echo(f"{'digits':>6} {'lines':>6} {'exact':>7}")
        for length, m in test["by_length"].items():
            typer.echo(f"{length:>6} {m['count']:6d} {m['accuracy']:7.4f}")
        accepted = test["accepted_accuracy"]
        typer.echo(
            f"accepted (not unsure): {test['coverage']:.1%} of lines, "
            + ("none" if accepted is None else f"{accepted:.4f} exact")
        )
    else:
        typer.echo(f"{'class':>12} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}")
        for name, m in test["per_class"].items():
            typer.echo(
                f"{name:>12} {m['precision']:9.4f} {m['recall']:9.4f} {m['f1-score']:9.4f} {int(m['support']):8d}"
            )
    typer.echo(f"figures: {', '.join(str(run / f) for f in test['figures'].values())}")
    if test["kind"] == "line":
        typer.echo(
            f"test accuracy: {test['accuracy']:.4f} of numbers exactly right ({test['errors']} of {test['count']} "
            f"wrong), character error rate {test['character_error_rate']:.4f}"
        )
    else:
        typer.echo(
            f"test accuracy: {test['accuracy']:.4f} ({test['errors']} of {test['count']} wrong), "
            f"loss {test['loss']:.4f}"
        )
    if numbers:
        with _progress_bar("reading numbers", "number", "numbers") as update:
            read_back = evaluate_numbers(run, numbers, data_dir=data_dir, progress=update)
        typer.echo(f"{read_back['numbers']}, read by {read_back['method']}")
        typer.echo(f"{'subset':>10} {'numbers':>7} {'exact':>7} {'CER':>7} {'unsure':>7} {'accepted':>9}")
        for r in (r for r in read_back["rows"] if r["length"] == "all"):
            accepted = "-" if r["accepted_exact"] is None else f"{r['accepted_exact']:.4f}"
            typer.echo(
                f"{r['subset']:>10} {r['count']:7d} {r['exact']:7.4f} {r['character_error_rate']:7.4f} "
                f"{r['unsure']:7.1%} {accepted:>9}"
            )
        typer.echo(
            f"numbers read exactly: {read_back['exact']:.4f}; the {read_back['coverage']:.0%} most confident: "
            f"{read_back['exact_at_coverage']:.4f}; figure: {run / read_back['figures']['numbers']}"
        )
    if min_accuracy is not None and test["accuracy"] < min_accuracy:
        fail(f"test accuracy {test['accuracy']:.4f} is below --min-accuracy {min_accuracy}", code=1)


@app.command(epilog=EXIT_CODES)
@reports_errors
def predict(
    run: RunArg,
    paths: Annotated[
        Optional[list[str]], typer.Argument(help="Image files or folders (searched recursively).", show_default=False)
    ] = None,
    index: Annotated[
        Optional[list[int]], typer.Option("--index", help="Test-set indices instead of files: --index 0 7 42.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV.")] = False,
    debug: Annotated[
        Optional[Path], typer.Option(help="Write a strip of each image's preprocessing steps into this folder.")
    ] = None,
    data_dir: DataDirOpt = None,
    runtime: ReadRuntimeOpt = None,
) -> None:
    """Predict digits: in image files (PNG, JPEG, ...) or, with --index, in the test set."""
    import json

    paths = list(paths or [])
    if index:
        # `--index 0 7 42`: the numbers after the first arrive as positional arguments.
        extra = [p for p in paths if p.isdigit() and not Path(p).exists()]
        indices = list(index) + [int(p) for p in extra]
        if len(extra) != len(paths):
            fail("predict: give either image paths or --index, not both")
        if runtime not in (None, "keras"):
            fail("predict: --index runs the Keras model only; give image files for --runtime onnx")
    elif not paths:
        fail("predict: give image files or folders, or --index N ... for test digits")
    from digitlab.predict import choose_runtime

    runtime = "keras" if index else choose_runtime(run, runtime)
    prepare_run(run, runtime)
    from digitlab import predict as prediction
    from digitlab.predict import reading

    if index:
        rows = prediction.predict_test_indices(run, indices, data_dir=data_dir)
        columns = ["index", "true", "digit", "confidence", "top3"]
    else:
        for path in map(Path, paths):
            if path.is_dir() and not prediction.expand_paths([path]):
                fail(f"no images found in {path}/ (expected {', '.join(sorted(prediction.IMAGE_SUFFIXES))} files)")
        rows = reading.predict_files(
            prediction.load_predictor(run, runtime=runtime), [Path(p) for p in paths], debug_dir=debug
        )
        # JSON's fields but label and probabilities: an unsure row keeps its reason and its best guesses.
        columns = ["file", "digit", "confidence", "unsure", "reason", "top3", "error"]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    elif as_csv:
        import csv
        import sys

        writer = csv.writer(sys.stdout)  # RFC 4180: CRLF rows, so a CR or LF inside a name is quoted
        writer.writerow(columns)
        for r in rows:
            writer.writerow([_cell(r.get(c)) for c in columns])
    elif _is_terminal():
        for line in _prediction_table(rows):
            typer.echo(line)
    else:
        for r in rows:
            where = f"test #{r['index']}" if "index" in r else _printable(r["file"])
            if r.get("error"):
                typer.echo(_printable(f"{where}: error: {r['error']}"))
                continue
            extra = f"  true {r['true']}" if "true" in r else ""
            if r["confidence"] is None:  # refused before the model (no ink, not a digit): no numbers to show
                typer.echo(_printable(f"{where}: no digit: {r['reason']}{extra}"))
                continue
            top = "  ".join(f"{t['label']}:{t['probability']:.3f}" for t in r["top3"])
            digit = r["label"] if r["digit"] is not None else "?"
            extra += f"  unsure: {r['reason']}" if r.get("reason") else ""
            typer.echo(f"{where}: {digit} ({r['confidence']:.3f})  top-3 {top}{extra}")
    failed = [r for r in rows if r.get("error")]
    if failed:
        fail(f"{len(failed)} of {len(rows)} files could not be read", code=1)


DIGITS_HELP = (
    "How many digits each number has, all lines together: 4, or a range like 5-9. The reading is the best "
    "one with that many digits; one that had to be forced to it is unsure (expected 4 digits, found 3)."
)


@app.command(epilog=EXIT_CODES)
@reports_errors
def read(
    run: RunArg,
    paths: Annotated[
        list[str], typer.Argument(help="Image files or folders (searched recursively).", show_default=False)
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV.")] = False,
    debug: Annotated[
        Optional[Path],
        typer.Option(help="Write each image with its digits' boxes drawn and their 28x28 crops into this folder."),
    ] = None,
    runtime: ReadRuntimeOpt = None,
    method: Annotated[
        Optional[str],
        typer.Option(
            metavar="NAME",
            help=f"{_choices(READ_METHODS)}: segment the digits for a single-digit run, read whole lines "
            "with a line model's run, or both together where the run holds both (--preset numbers) "
            "[default: the run's best].",
        ),
    ] = None,
    digits: Annotated[Optional[str], typer.Option(metavar="N|A-B", help=DIGITS_HELP)] = None,
) -> None:
    """Read whole numbers (several digits, several lines) in image files."""
    import json

    from digitlab.predict.count import parse_digits

    count = parse_digits(digits)  # a bad --digits before the run is loaded
    from digitlab.predict import choose_runtime

    runtime = choose_runtime(run, runtime)
    prepare_run(run, runtime)
    from digitlab import predict as prediction
    from digitlab.predict import reading

    predictor = prediction.load_predictor(run, runtime=runtime)
    method = reading.choose_method(predictor, method)
    for path in map(Path, paths):
        if path.is_dir() and not prediction.expand_paths([path]):
            fail(f"no images found in {path}/ (expected {', '.join(sorted(prediction.IMAGE_SUFFIXES))} files)")
    rows = reading.read_files(predictor, [Path(p) for p in paths], debug_dir=debug, method=method, digits=count)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    elif as_csv:
        import csv
        import sys

        columns = ["file", "text", "confidence", "unsure", "reason", "error"]
        writer = csv.writer(sys.stdout)  # a text of several lines is quoted, as is a name with a newline
        writer.writerow(columns)
        for r in rows:
            writer.writerow([_cell(r.get(c)) for c in columns])
    else:
        for r in rows:
            where = _printable(r["file"])
            if r.get("error"):
                typer.echo(_printable(f"{where}: error: {r['error']}"))
            elif r["text"] is None:
                typer.echo(f"{where}: ? ({r['reason']})")
            else:
                extra = f"  unsure: {r['reason']}" if r["unsure"] else ""
                typer.echo(f"{where}: {' / '.join(r['lines'])} ({r['confidence']:.3f}){extra}")
    failed = [r for r in rows if r.get("error")]
    if failed:
        fail(f"{len(failed)} of {len(rows)} files could not be read", code=1)


def _is_terminal() -> bool:
    """Whether stdout is a terminal (a person reading): tables there, one plain line per file elsewhere."""
    return sys.stdout.isatty()


def _prediction_table(rows: list[dict]) -> list[str]:
    """predict's rows as an aligned table, for a terminal: file (or test index), digit, confidence, top-3,
    and a note (the true digit, why unsure, why no digit, an error)."""
    table = [("file", "digit", "confidence", "top-3", "")]
    for r in rows:
        where = f"test #{r['index']}" if "index" in r else _printable(r["file"])
        note = f"true {r['true']}" if "true" in r else ""
        if r.get("error"):
            table.append((where, "", "", "", _printable(f"error: {r['error']}")))
            continue
        if r["confidence"] is None:  # refused before the model: no numbers to show
            table.append((where, "-", "", "", f"no digit: {r['reason']}"))
            continue
        top = "  ".join(f"{t['label']}:{t['probability']:.3f}" for t in r["top3"])
        note += ("  " if note else "") + (f"unsure: {r['reason']}" if r.get("reason") else "")
        table.append((where, r["label"] if r["digit"] is not None else "?", f"{r['confidence']:.3f}", top, note))
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    return [
        ("  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths)) + f"  {row[4]}").rstrip() for row in table
    ]


def _printable(text: str) -> str:
    """Control characters (newline, carriage return, ANSI escapes) shown as escapes: a file name cannot
    forge a line of the table or restyle the terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _cell(value) -> str:
    if isinstance(value, list):  # top3
        return " ".join(f"{t['label']}:{t['probability']:.4f}" for t in value)
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


@app.command()
@reports_errors
def ensemble(
    runs_: Annotated[
        list[Path], typer.Argument(metavar="RUN...", help="Two or more run directories.", show_default=False)
    ],
    out: Annotated[
        Optional[Path], typer.Option(help="Also write metrics.json and confusion_matrix.png into this new directory.")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Write into --out even if it already holds files.")] = False,
    data_dir: DataDirOpt = None,
) -> None:
    """Average the probabilities of several runs and evaluate the ensemble on the test set."""
    for run in runs_:
        prepare_run(run)
    from digitlab.evaluation import evaluate_ensemble

    result = evaluate_ensemble(runs_, out_dir=out, data_dir=data_dir, overwrite=overwrite)
    for m in result["members"]:
        typer.echo(f"{m['run']}: test accuracy {m['accuracy']:.4f}")
    typer.echo(
        f"ensemble of {len(result['members'])}: test accuracy {result['accuracy']:.4f} "
        f"({result['errors']} of {result['count']} wrong), loss {result['loss']:.4f}"
    )


# ---- end model commands ----

# ---- export (export.py) ----


@app.command("export")
@reports_errors
def export_command(
    run: RunArg,
    fmt: Annotated[
        str,
        typer.Option(
            "--format", "-f", metavar="NAME", help="onnx, tflite, saved_model or web (the page as static files)."
        ),
    ] = "onnx",
    out: Annotated[
        Optional[Path],
        typer.Option(
            "--out", help="Where to write it [default: model.onnx, model.tflite, saved_model/ or site/ in the run]."
        ),
    ] = None,
    check_images: Annotated[
        int, typer.Option("--check-images", help="Test images the export must agree on with the Keras model.")
    ] = 1000,
    data_dir: DataDirOpt = None,
) -> None:
    """Export a run for deployment (ONNX, TFLite, SavedModel), checked against the Keras model first."""
    prepare_run(run)
    from digitlab.export import export

    record = export(run, fmt, out, n=check_images, data_dir=data_dir)
    inputs = record["dataset"] if record["dataset"].endswith(" lines") else f"{record['dataset']} test images"
    check = f"check on {record['n']} {inputs}"
    if "error" in record:
        typer.echo(f"{check}: the export did not run ({record['error']})")
    else:
        typer.echo(
            f"{check}: {'decoded strings agree' if inputs.endswith(' lines') else 'argmax agrees'} on "
            f"{record['n'] - record['argmax_mismatches']}/{record['n']}, "
            f"max |probability difference| {record['max_abs_diff']:.1e} (limit {record['tolerance']:.0e})"
        )
    if not record["passed"]:
        fail(f"{fmt} export failed its check; nothing was replaced (record in {run / 'metrics.json'})", code=1)
    typer.echo(
        f"wrote {Path(run) / record['path']} ({record['bytes'] / 1024:.0f} KiB) in {record['export_seconds']:.1f} s"
    )


# ---- end export ----

# ---- batch (batch/) ----


@app.command("batch", epilog=EXIT_CODES)
@reports_errors
def batch_command(
    run: RunArg,
    source: Annotated[
        str,
        typer.Argument(
            help="A folder (searched recursively), a glob ('scans/**/*.png'), a text file listing one path a line, "
            "or the same as URIs pyarrow reads (s3://, gs://, hdfs://).",
            show_default=False,
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder of Parquet parts to write; the same --out again resumes.")],
    task: Annotated[
        str, typer.Option(metavar="NAME", help=f"{_choices(BATCH_TASKS)}: one digit per image, or a whole number.")
    ] = BATCH_TASKS[0],
    engine: Annotated[
        Optional[str],
        typer.Option(
            metavar="NAME",
            help=f"{_choices(BATCH_ENGINES)}: Ray Data's workers, or this process alone "
            "[default: ray when Ray is installed, else local].",
        ),
    ] = None,
    address: Annotated[
        Optional[str],
        typer.Option(help="A running Ray cluster (host:port, or auto) [default: start a local Ray for the job]."),
    ] = None,
    workers: Annotated[
        Optional[int], typer.Option(metavar="N", help="Ray workers, each with its own model [default: one per CPU].")
    ] = None,
    batch_size: Annotated[int, typer.Option(metavar="N", help="Files per batch.")] = BATCH_SIZE,
    runtime: Annotated[
        Optional[str],
        typer.Option(
            metavar="NAME",
            help=f"{_choices(RUNTIMES)} [default: onnx on Ray where the run has model.onnx (`digitlab export RUN`), "
            "else keras].",
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an --out written by another run, model or task.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    digits: Annotated[Optional[str], typer.Option(metavar="N|A-B", help=f"--task number: {DIGITS_HELP}")] = None,
) -> None:
    """Read an archive of images into Parquet, one row per file; resumable; locally or on Ray."""
    import json

    from digitlab.batch import Interrupted, check_out, default_engine, default_runtime, run_batch
    from digitlab.predict.count import parse_digits

    parse_digits(digits)  # a bad --digits before anything is read

    runtime = runtime or default_runtime(engine or default_engine(), run)
    if task in BATCH_TASKS:
        check_out(run, out, task=task, runtime=runtime, overwrite=overwrite)  # a refused --out: before TensorFlow
    prepare_run(run, runtime)
    try:
        with contextlib.nullcontext() if quiet else _progress_bar("batch", "file", "files") as progress:
            summary = run_batch(
                run,
                source,
                out,
                task=task,
                engine=engine,
                runtime=runtime,
                address=address,
                workers=workers,
                batch_size=batch_size,
                overwrite=overwrite,
                progress=progress,
                digits=digits,
            )
    except Interrupted as e:  # Ctrl-C or SIGTERM: every row read is written
        typer.echo(f"interrupted: {e.rows:,} rows kept in {out}; run the same command to go on", err=True)
        raise typer.Exit(130) from None
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        skipped = f"; {summary['skipped']:,} already in {out} skipped" if summary["skipped"] else ""
        pool = ""
        if summary["engine"] == "ray":
            pool = f", {_count(summary['workers'], 'worker')}"
            if workers and summary["workers"] < workers:  # an actor with no file to read is not started
                pool += f" for {_count(summary['files'], 'file')}"
        typer.echo(
            f"read {_count(summary['files'], 'file')} in {summary['seconds']:.1f} s "
            f"({summary['files_per_s']:.0f} files/s) on {summary['engine']} ({summary['runtime']}{pool}): "
            f"{_count(summary['errors'], 'error')}, {summary['unsure_share']:.1%} unsure{skipped}"
        )
        typer.echo(f"wrote {_count(summary['parts'], 'part file')}; {out} holds {_count(summary['rows'], 'row')}")
    if summary["errors"]:  # as predict and read (EXIT_CODES)
        fail(f"{summary['errors']:,} of {summary['files']:,} files could not be read; their rows say why", code=1)


def _count(n: int, noun: str) -> str:
    """`1 part file`, `2 part files`, `1,200 rows`."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


@contextlib.contextmanager
def _progress_bar(desc: str, unit: str, units: str):
    """A progress callback `update(done, total)`: tqdm's bar (rate, ETA) on a terminal, else a plain line
    every PLAIN_EVERY seconds (logs of a job on a cluster). The bar is closed on leaving."""
    import time

    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = None

        def update(done, total):
            nonlocal bar
            if bar is None:
                bar = tqdm(total=total, unit=unit, desc=desc, smoothing=0.05)
            bar.update(done - bar.n)

        try:
            yield update
        finally:
            if bar is not None:
                bar.close()
        return
    start, last = time.monotonic(), [0.0]

    def plain(done, total):
        now = time.monotonic()
        if now - last[0] < PLAIN_EVERY and done < total:
            return
        last[0] = now
        rate = done / (now - start)
        eta = (total - done) / rate if rate else 0.0
        typer.echo(f"{desc}: {done:,}/{total:,} {units}, {rate:.0f} {units}/s, ETA {eta:.0f} s", err=True)

    yield plain


PLAIN_EVERY = 10.0  # s between progress lines when stderr is not a terminal


# ---- end batch ----

# ---- experiments and report ----


@app.command()
@reports_errors
def experiments(
    out: Annotated[
        Path, typer.Option(help="Directory for the step runs, results.csv/.md, ladder.png, report.html.")
    ] = Path("experiments"),
    quick: Annotated[
        bool,
        typer.Option(
            "--quick",
            help=f"Smoke run: every step shortened ({QUICK_LIMIT:,} images, epochs / {QUICK_EPOCHS_DIVISOR}).",
        ),
    ] = False,
    with_accurate: Annotated[
        bool, typer.Option("--with-accurate", help="Add the accurate preset as a last step (slow).")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed for weights and shuffling, the same for every step.")] = 42,
    dataset: DatasetOpt = "mnist",
    data_dir: DataDirOpt = None,
    overwrite: Annotated[bool, typer.Option(help="Replace the experiments already in --out.")] = False,
) -> None:
    """Reproduce the tutorial's tuning ladder: raw pixels, /255, lr finder, lr 0.01, 10-10, CNN."""
    start_tensorflow()
    from digitlab.experiments import run_experiments

    def progress(number, total, step, result):
        if result is None:
            typer.echo(f"[{number}/{total}] {step.name}: {step.what_changed} ...")
        elif result["kind"] == "lr_find":
            typer.echo(
                f"[{number}/{total}] done in {result['seconds']:.1f} s: {result['what_changed'].split('; ')[-1]}"
            )
        else:
            typer.echo(
                f"[{number}/{total}] done in {result['seconds']:.1f} s: train {result['train_accuracy']:.4f}, "
                f"validation {result['validation_accuracy']:.4f}, test {result['test_accuracy']:.4f}"
            )

    run_experiments(
        out,
        quick=quick,
        with_accurate=with_accurate,
        seed=seed,
        data_dir=data_dir,
        dataset=dataset,
        overwrite=overwrite,
        on_step=progress,
    )
    for name in ("results.md", "results.csv", "ladder.png", "report.html"):
        typer.echo(f"wrote {out / name}")


@app.command()
@reports_errors
def report(
    run: RunArg,
    out: Annotated[Optional[Path], typer.Option(help="HTML file to write [default: RUN/report.html].")] = None,
    lr_find: Annotated[
        bool, typer.Option("--lr-find", help="First run a quick learning-rate range test into RUN.")
    ] = False,
    data_dir: DataDirOpt = None,
) -> None:
    """Write one self-contained HTML report of a run (evaluates on the test set if not done yet)."""
    prepare_run(run)
    from digitlab.report import write_report

    typer.echo(f"wrote {write_report(run, out, with_lr_find=lr_find, data_dir=data_dir)}")


# ---- end experiments and report ----

# ---- serve ----


@app.command()
@reports_errors
def serve(
    run: RunArg,
    host: Annotated[str, typer.Option(help="Address to listen on; 0.0.0.0 for every interface.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port, 1 to 65535.")] = 8000,
    runtime: ReadRuntimeOpt = None,
    access_log: Annotated[bool, typer.Option("--access-log/--no-access-log", help="Log every request.")] = True,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Server processes, each with its own copy of the model; one per CPU core serves the most requests.",
        ),
    ] = 1,
    allowed_hosts: Annotated[
        Optional[str],
        typer.Option(
            "--allowed-hosts",
            help="Comma-separated host names (a.example, *.a.example, * for any) accepted in the Host header "
            "besides localhost, 127.0.0.1 and [::1]. On a loopback --host only those are accepted by default "
            "(against DNS rebinding); on another address any is, unless this is given.",
        ),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(
            help="Seconds a client has to send a request's headers (from connecting or its last answer), and as "
            "long again for the body; a stalled client is then disconnected, a stalled body answered 408.",
        ),
    ] = SERVE_TIMEOUT,
    limit_concurrency: Annotated[
        int,
        typer.Option(
            help="Open connections one server process holds; past it requests are answered 503 at once.",
        ),
    ] = SERVE_LIMIT_CONCURRENCY,
    allow_adapt: Annotated[
        bool,
        typer.Option(
            "--allow-adapt",
            help="Let the page's Teach mode send its samples (POST /api/adapt): the server adapts a copy of the run "
            "into RUN-adapted-N beside it and serves that, without a restart. One process, loopback unless "
            "--allowed-hosts.",
        ),
    ] = False,
) -> None:
    """Serve the drawing page and the REST API (/api/predict, /docs) for a trained run."""
    from digitlab.predict import choose_runtime
    from digitlab.serve.launch import open_server

    runtime = runtime or ("keras" if allow_adapt else choose_runtime(run))  # an adapted run has no model.onnx

    server = open_server(
        run,
        host=host,
        port=port,
        runtime=runtime,
        workers=workers,
        allowed_hosts=[name.strip() for name in allowed_hosts.split(",")] if allowed_hosts is not None else [],
        timeout=timeout,
        limit_concurrency=limit_concurrency,
        access_log=access_log,
        allow_adapt=allow_adapt,
    )
    with contextlib.closing(server):
        if runtime == "keras" and workers == 1:
            start_tensorflow()  # the model loads in this process
        processes = f"{workers} process{'es' if workers > 1 else ''}"
        server.serve(
            on_ready=lambda: typer.echo(
                f"serving {run} on {server.url} with {processes}  (API docs at /docs; Ctrl+C stops)"
            )
        )


# ---- end serve ----
