"""A person's line of digits made into what the line model reads: the one line normalisation, used by
`digitlab read` with a line model (digitlab.predict.lines) and by the line generator that trains it
(digitlab.data.synth.lines).

A line's ink is scaled so that its box is LINE_BOX px tall (a digit about MNIST's 20 px box once
baselines wander) in a LINE_HEIGHT x LINE_WIDTH image, left-aligned, ink bright on black. Why these
sizes: docs/design/line-model.md.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

from digitlab.errors import DigitlabError
from digitlab.preprocess.ink import Ink, find_ink, ink_levels

LINE_HEIGHT = 32  # px, the model's input height
LINE_WIDTH = 256  # px, its width: 10 digits at a 20 px height with gaps fit; 64 frames of 4 px
LINE_BOX = 24  # px, the height of a line's ink box in the normalised image
MARGIN = 4  # px of black left of the ink (and at least this right of it)
TALL = 0.4  # share of a line's ink height: a component this tall is a digit's, never a speck


@dataclass(frozen=True)
class Placement:
    """Where a line puts its ink in the normalised image: normalised px = (input px - offset) * scale + margin."""

    scale: float  # normalised px per input px
    offset: tuple[float, float]  # (x, y) of the ink box's corner, input px
    margin: tuple[float, float]  # (x, y) where that corner lands, normalised px


def normalize_line(soft: np.ndarray) -> tuple[np.ndarray, Placement]:
    """Ink levels 0-1 of one line, cut to its ink (as `ink_levels` returns them) -> the (LINE_HEIGHT,
    LINE_WIDTH) uint8 image the line model reads, ink 255 on black, and where the ink went. The box is
    scaled to LINE_BOX px tall, or less where it would be wider than the image."""
    rows, cols = np.flatnonzero((soft > 0).any(1)), np.flatnonzero((soft > 0).any(0))
    if not len(rows):
        raise DigitlabError("normalize_line: the line holds no ink")
    soft = soft[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    h, w = soft.shape
    scale = min(LINE_BOX / h, (LINE_WIDTH - 2 * MARGIN) / w)
    size = (max(1, min(LINE_WIDTH - 2 * MARGIN, round(w * scale))), max(1, min(LINE_BOX, round(h * scale))))
    resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BILINEAR
    box = np.clip(np.asarray(Image.fromarray(soft.astype(np.float32)).resize(size, resample)), 0.0, 1.0)
    top = (LINE_HEIGHT - size[1]) // 2
    out = np.zeros((LINE_HEIGHT, LINE_WIDTH), np.float32)
    out[top : top + size[1], MARGIN : MARGIN + size[0]] = box
    placement = Placement(size[0] / w, (float(cols[0]), float(rows[0])), (float(MARGIN), float(top)))
    return np.round(out * 255.0).astype(np.uint8), placement


def line_ink(grey: np.ndarray) -> Ink | None:
    """The `Ink` of a grey image holding lines of digits, its mask widened for lines: `find_ink` drops
    components small beside the largest (specks beside one digit), which on a line of joined digits can
    be a thin digit of its own; components at least TALL of the ink's height stay. None without ink."""
    ink = find_ink(np.asarray(grey, np.float32))
    if ink is None or not ink.mask.any():
        return None
    labels, _ = ndi.label(ink.threshold_mask, structure=np.ones((3, 3), bool))
    rows = np.flatnonzero(ink.mask.any(1))
    tall = [
        i + 1
        for i, s in enumerate(ndi.find_objects(labels))
        if s and s[0].stop - s[0].start >= TALL * (rows[-1] - rows[0] + 1)
    ]
    return dataclasses.replace(ink, mask=ink.mask | np.isin(labels, tall))


def line_image(grey: np.ndarray) -> np.ndarray | None:
    """A grey image of one line (any ink on any paper) -> its normalised line, or None without ink."""
    ink = line_ink(grey)
    if ink is None:
        return None
    return normalize_line(ink_levels(ink.bright, ink.mask, ink.paper)[0])[0]
