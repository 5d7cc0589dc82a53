"""`digitlab.reading`: the names of the reading path under their earlier module, for callers that import
them from here. The code is in `digitlab.predict.reading` (the one path), `digitlab.predict.segmented`
(segmentation) and `digitlab.predict.results` (the dataclasses)."""

from digitlab.predict.reading import read, read_files, save_debug_image
from digitlab.predict.results import ReadDigit, Reading
from digitlab.predict.segmented import SCORING, Hypotheses, Scoring, decide, hypotheses, score

__all__ = [
    "SCORING",
    "Hypotheses",
    "ReadDigit",
    "Reading",
    "Scoring",
    "decide",
    "hypotheses",
    "read",
    "read_files",
    "save_debug_image",
    "score",
]
