"""What reading an image gives, as the reading modules pass it to each other and to the CLI, the server
and batch: `Prediction` (one digit), `Reading` (a whole number) and `Outcome` (one input of many: its
result or its error). Each has `to_dict`, the JSON form the CLI, the REST API and batch emit."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitlab.preprocess.normalize import SIDE

RESULT_KEYS = ("digit", "label", "confidence", "probabilities", "top3", "unsure", "reason")  # a Prediction's JSON


@dataclass(frozen=True, eq=False)
class Prediction:
    """One digit as `classify` reads it. A rejected image (no ink, not a digit) has digit, label,
    confidence, probabilities and top3 None; an unsure one keeps its numbers with digit and label None."""

    digit: int | None
    label: str | None
    confidence: float | None  # calibrated probability of the most likely class
    probabilities: list[float] | None  # calibrated, in class order
    top3: list[dict] | None  # {"digit", "label", "probability"}, most likely first
    unsure: bool
    reason: str | None  # why unsure: no ink, not a digit, or confidence below the threshold
    image: np.ndarray  # (28, 28): what the model was given

    def to_dict(self) -> dict:
        """The JSON form: RESULT_KEYS (without the image)."""
        return {key: getattr(self, key) for key in RESULT_KEYS}


@dataclass(frozen=True)
class ReadDigit:
    digit: int  # the most likely class index, even when unsure
    label: str  # its class name
    confidence: float  # calibrated probability of that class
    box: tuple[int, int, int, int]  # (x0, y0, x1, y1) in px of the input image, ends exclusive
    line: int  # 0-based line, top to bottom
    unsure: bool
    reason: str | None


@dataclass(frozen=True, eq=False)
class Reading:
    """What `read` saw. `confidence` is the product of the digits' calibrated confidences (or of the
    lines' for a line model): the probability that every digit is right if their errors were
    independent, with the segmentation taken as right; for the combined reader of a run with a rule for
    numbers (calibration.json's "numbers"), that rule's probability that the whole number is right."""

    text: str | None  # the best reading, lines joined by "\\n"; None when there is no ink
    lines: tuple[str, ...]
    confidence: float | None  # None when there is no ink
    unsure: bool  # any digit unsure, the segmentation ambiguous, or no ink
    reason: str | None  # why unsure
    digits: tuple[ReadDigit, ...]
    crops: np.ndarray  # (len(digits), 28, 28) uint8: what the model was given for each digit
    size: tuple[int, int]  # (width, height) of the input image, in which the boxes are measured

    def to_dict(self) -> dict:
        """The JSON form (without the crops)."""
        return {
            "text": self.text,
            "lines": list(self.lines),
            "confidence": self.confidence,
            "unsure": self.unsure,
            "reason": self.reason,
            "digits": [
                {"digit": d.digit, "confidence": d.confidence, "box": list(d.box), "line": d.line, "unsure": d.unsure}
                for d in self.digits
            ],
        }


def no_reading(reason: str, size: tuple[int, int]) -> Reading:
    """The Reading of an image with nothing to read (no ink): no text, unsure for `reason`."""
    return Reading(None, (), None, True, reason, (), np.zeros((0, SIDE, SIDE), np.uint8), size)


@dataclass(frozen=True, eq=False)
class Outcome:
    """One input of many: its result, or the one-line error that stands in for it (the rest go on)."""

    name: str  # how the input is named: its path or URI, or the request's field ("files[2]")
    result: Prediction | Reading | None  # None when there is an error
    error: str | None = None  # "<name>: <what was wrong>"
    debug: Path | None = None  # the debug picture written for it, if asked


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, ... 11th, 12th, 13th, ... 21st: a digit's place in a number, which "digit 1"
    would read as a value."""
    suffix = "th" if n % 100 in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
