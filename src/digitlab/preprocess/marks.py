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


MARK_KINDS = ("tap", "dot", "tick", "filled", "blank")


def synthetic_marks(kind: str, n: int, *, seed: int = 0, side: int = 280) -> list[np.ndarray]:
    """`n` seeded side x side grey canvases (dark ink on light paper, as the page and a scan give them)
    holding one kind of mark that is not a digit: what the rules above are tuned and tested on."""
    from PIL import Image, ImageDraw  # the canvases are drawn only for tests and benchmarks

    if kind not in MARK_KINDS:
        raise ValueError(f"kind: expected one of {', '.join(MARK_KINDS)}, got {kind!r}")
    rng = np.random.default_rng([seed, MARK_KINDS.index(kind)])
    out = []
    for _ in range(n):
        paper = int(rng.integers(200, 256))
        im = Image.new("L", (side, side), paper)
        d = ImageDraw.Draw(im)
        ink = int(rng.integers(0, 80))
        cx, cy = rng.uniform(0.1, 0.9, 2) * side
        if kind in ("tap", "dot"):
            r = rng.uniform(0.01, 0.05) * side if kind == "tap" else rng.uniform(0.003, 0.012) * side
            r *= rng.uniform(1.0, 1.6, 2)  # a finger's tap is an oval
            d.ellipse((cx - r[0], cy - r[1], cx + r[0], cy + r[1]), fill=ink)
        elif kind == "tick":
            width = max(1, round(rng.uniform(0.015, 0.07) * side))
            length = rng.uniform(0.015, 0.06) * side  # a tick; longer strokes are how people write a 1
            a = rng.uniform(0, np.pi)
            end = (cx + length * np.cos(a), cy + length * np.sin(a))
            points = [(cx, cy), end]
            if rng.random() < 0.3:  # a check mark: a second, longer stroke up from the end
                points.append((end[0] + 1.5 * length * np.cos(a - 1.7), end[1] + 1.5 * length * np.sin(a - 1.7)))
            d.line(points, fill=ink, width=width, joint="curve")
        elif kind == "filled":
            share = rng.uniform(0.6, 0.97)  # of the side, each way: a scribbled block or a dark page
            w, h = share * side * rng.uniform(0.9, 1.1, 2)
            x0, y0 = rng.uniform(0, max(side - w, 1)), rng.uniform(0, max(side - h, 1))
            d.rectangle((x0, y0, x0 + w, y0 + h), fill=ink)
        a = np.asarray(im, np.float32)
        a = a + rng.normal(0, rng.uniform(0, 4), a.shape)  # sensor noise, none to a little
        out.append(np.clip(a, 0, 255).astype(np.uint8))
    return out
