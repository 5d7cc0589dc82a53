"""Turn a person's image of a digit into an MNIST-like 28x28 array: for the CLI, REST API and web page.

MNIST was made in a particular way: white ink on black, the digit's bounding box scaled (keeping its
aspect ratio, anti-aliased) to fit 20x20 px, then placed in 28x28 with its centre of mass at the centre.
A photo, a scan or a canvas drawing is brought to the same form, top to bottom:

    load -> grey (transparent = white paper)                         image.py
         -> ink bright -> flatten the paper -> threshold -> drop specks    ink.py
         -> a digit at all? (a dot, a tick, a filled page, several)     marks.py
         -> crop -> stroke width -> 20 px box -> centred 28x28        normalize.py

and debug.py draws the steps side by side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from digitlab.preprocess.debug import save_debug_strip, to_uint8
from digitlab.preprocess.image import ImageError, load_image, to_grey
from digitlab.preprocess.ink import NO_INK, UNEVEN_LIGHT, blank_reason, find_ink, ink_levels
from digitlab.preprocess.marks import not_a_digit
from digitlab.preprocess.normalize import SIDE, normalize_digit

__all__ = [
    "NO_INK",
    "SIDE",
    "UNEVEN_LIGHT",
    "ImageError",
    "Preprocessed",
    "blank_reason",
    "load_image",
    "preprocess",
    "save_debug_strip",
]


@dataclass(frozen=True, eq=False)
class Preprocessed:
    """An image brought to MNIST's form, with what was done to it."""

    digit: np.ndarray  # (28, 28) uint8, ink 255 on black 0, as in MNIST
    has_ink: bool  # False for a blank image: digit is then all zeros
    inverted: bool  # True when the input was dark ink on light paper
    steps: tuple[tuple[str, np.ndarray], ...] = ()  # (caption, uint8 image) when debug=True
    # Why the image holds no digit to read (no ink; a dot, a tick, a filled page, several digits), or
    # None when it does; `digit` is still filled for the debug strip when there is ink.
    reason: str | None = None

    @property
    def is_digit(self) -> bool:
        return self.reason is None


def preprocess(image, *, debug: bool = False) -> Preprocessed:
    """A path, bytes, PIL image or array (H x W grey, H x W x 3 or 4) -> MNIST-like Preprocessed."""
    steps: list[tuple[str, np.ndarray]] = []

    def record(caption: str, a: np.ndarray) -> None:
        if debug:
            steps.append((caption, to_uint8(a)))

    grey = to_grey(image)
    record("input grey", grey)
    ink = find_ink(grey)
    if ink is None:
        return Preprocessed(np.zeros((SIDE, SIDE), np.uint8), False, False, tuple(steps), blank_reason(grey))
    if ink.paper_light is not None:
        record("paper light", ink.paper_light)
    record("ink bright" if ink.paper_light is None else "paper flattened", ink.bright)
    record("threshold", ink.threshold_mask)
    record("specks removed", ink.mask)
    if not ink.mask.any():
        return Preprocessed(np.zeros((SIDE, SIDE), np.uint8), False, ink.inverted, tuple(steps), blank_reason(grey))
    # The seam: segmentation of a number splits the ink here, before one digit is normalised.
    digit = normalize_digit(*ink_levels(ink.bright, ink.mask, ink.paper), record=record)
    record("centred 28x28", digit)
    return Preprocessed(digit, True, ink.inverted, tuple(steps), not_a_digit(ink.mask))
