"""Marks that are not a digit, refused before the model is asked: a tap or a dot, a filled page, a short
tick, and several digits side by side. Each rule is judged against the image and the stroke width, so
that it holds for a 28 px MNIST digit and a 280 px canvas alike.

The thresholds sit well outside what real digits show (docs/design/preprocessing.md gives the rates on
MNIST's training digits and on the wild validation set) and inside what the marks show.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

FILLED_SHARE = 0.5  # ink covering more than this share of the image: a filled page
DOT_EXTENT = 2.25  # a mark whose long side is under this many stroke widths: a dot or a tap
TICK_SIDE = 0.08  # a mark whose long side is under this share of the image's short side: a short tick
TICK_EXTENT = 3.5  # ... or under this many stroke widths while under SMALL_SIDE of the image
SMALL_SIDE = 0.25
SEVERAL_HEIGHT = 0.6  # side-by-side groups of ink each at least this share of the tallest: several digits
SEVERAL_GAP = 0.05  # ... separated by a gap of at least this share of the tallest's height


@dataclass(frozen=True)
class Marks:
    """What the rules look at, for one image's ink (all lengths in the ink mask's pixels)."""

    ink_share: float  # ink pixels / image pixels
    long_side: int  # of the ink's bounding box
    short_image_side: int  # of the image
    stroke: float  # mean stroke width: area / (boundary / 2)
    groups: int  # side-by-side groups of ink of similar height (1 for one digit)


def stroke_width(mask: np.ndarray) -> float:
    """Mean stroke width in px of a binary ink mask: area / (boundary px / 2); a 1 px line reads 2."""
    boundary = mask & ~ndi.binary_erosion(mask)
    return 2.0 * float(mask.sum()) / max(int(boundary.sum()), 1)


def measure(mask: np.ndarray) -> Marks:
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    long_side = int(max(rows[-1] - rows[0], cols[-1] - cols[0])) + 1
    return Marks(
        ink_share=float(mask.mean()),
        long_side=long_side,
        short_image_side=min(mask.shape),
        stroke=stroke_width(mask),
        groups=side_by_side(mask),
    )


def side_by_side(mask: np.ndarray) -> int:
    """How many groups of ink stand side by side, each at least SEVERAL_HEIGHT of the tallest's height
    and apart by a gap of SEVERAL_GAP of it: the pieces of one digit (a 5's bar, a broken 4) overlap
    each other's columns and stay one group."""
    labels, n = ndi.label(mask, structure=np.ones((3, 3), bool))
    if n <= 1:
        return n
    spans = sorted((s[1].start, s[1].stop, s[0].start, s[0].stop) for s in ndi.find_objects(labels))
    groups: list[list[int]] = []  # [x0, x1, y0, y1] of each group of column-overlapping pieces
    for x0, x1, y0, y1 in spans:
        if groups and x0 < groups[-1][1]:
            g = groups[-1]
            g[1], g[2], g[3] = max(g[1], x1), min(g[2], y0), max(g[3], y1)
        else:
            groups.append([x0, x1, y0, y1])
    tallest = max(y1 - y0 for _, _, y0, y1 in groups)
    tall = [g for g in groups if g[3] - g[2] >= SEVERAL_HEIGHT * tallest]
    apart = 1 + sum(b[0] - a[1] >= SEVERAL_GAP * tallest for a, b in zip(tall, tall[1:]))
    return apart if len(tall) > 1 else 1


def not_a_digit(mask: np.ndarray) -> str | None:
    """Why the ink in `mask` is not one digit, or None when it may be one."""
    m = measure(mask)
    if m.ink_share > FILLED_SHARE:
        return f"the image is nearly filled with ink ({m.ink_share:.0%}), not a digit"
    if m.long_side < DOT_EXTENT * m.stroke:
        return "only a dot or a tap, not a digit"
    small = m.long_side < SMALL_SIDE * m.short_image_side
    if m.long_side < TICK_SIDE * m.short_image_side or (small and m.long_side < TICK_EXTENT * m.stroke):
        return "only a short mark, too small for a digit"
    if m.groups > 1:
        return f"looks like {m.groups} digits side by side: use `digitlab read` for numbers"
    return None
