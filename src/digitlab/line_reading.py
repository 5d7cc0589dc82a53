"""`digitlab.line_reading`: reading with a line model under its earlier module, for callers that import
it from here. The code is in `digitlab.predict.lines`, which returns a `Reading`; `read_lines` here gives
that Reading's fields as a dict, its digits as dicts, the form these callers index."""

from __future__ import annotations

import dataclasses

import numpy as np

from digitlab.predict import Predictor
from digitlab.predict import lines as _lines
from digitlab.predict.reading import choose_method, kind

__all__ = ["choose_method", "is_line_model", "read_lines"]


def is_line_model(predictor: Predictor) -> bool:
    """Whether the predictor's model reads whole lines."""
    return kind(predictor) == "line"


def read_lines(predictor: Predictor, grey: np.ndarray, size: tuple[int, int]) -> dict:
    """`digitlab.predict.lines.read_lines` as a dict of the Reading's fields."""
    reading = _lines.read_lines(predictor, grey, size)
    fields = {f.name: getattr(reading, f.name) for f in dataclasses.fields(reading)}
    fields["digits"] = [dataclasses.asdict(d) for d in reading.digits]
    return fields
