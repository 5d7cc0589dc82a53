"""The `digitlab` command: parses arguments, calls the library, prints. Nothing else lives here."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from digitlab.errors import DigitlabError

app = typer.Typer(
    help="Recognise handwritten digits: fetch MNIST, explore, train, evaluate, predict, serve.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
data_app = typer.Typer(help="Fetch, verify and describe the data sets.", no_args_is_help=True)
app.add_typer(data_app, name="data")

DataDirOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--data-dir",
        envvar="DIGITLAB_DATA_DIR",
        help="Directory with the four IDX files (raw or .gz) or mnist.npz; tried before the cache.",
    ),
]
DatasetOpt = Annotated[
    str, typer.Option("--dataset", help="mnist, fashion-mnist, or any name for a 28x28 IDX set in --data-dir.")
]


def fail(message: str, code: int = 2) -> None:
    """Print a one-line error and exit non-zero."""
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


def main() -> None:
    app()


# ---- data and explore commands (data.py, explore.py) ----

# ---- end data and explore ----

# ---- model commands: train, lr-find, evaluate, predict (models.py, train.py, evaluate.py, predict.py) ----

# ---- end model commands ----

# ---- serve (serve.py) ----

# ---- end serve ----
