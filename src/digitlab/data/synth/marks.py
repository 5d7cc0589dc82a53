"""Marks that are not digits, as people leave them on the page or a scan: a finger's tap, a dot, a short
tick or check mark, a filled block or dark page, blank paper, and blank paper photographed: its grain and
texture, sensor noise and JPEG blocks, the shadow of a hand or a phone and a vignette, and no ink at all. What preprocessing's refusals
(digitlab.preprocess.marks) are tuned and tested on."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage as ndi

from digitlab.data.synth.render import jpeg
from digitlab.errors import DigitlabError

MARK_KINDS = ("tap", "dot", "tick", "filled", "blank", "grain", "shadow")
GRAIN = (2.0, 10.0)  # grey levels of the paper's texture (its standard deviation), blank pages photographed
GRAIN_SIZE = (0.5, 3.0)  # px, the texture's Gaussian smoothing
JPEG_QUALITY = (20, 80)  # Pillow's quality, half the grainy pages
# Blank pages photographed in uneven light: the share of the paper's light a shadow or a vignette takes
# away at its darkest, and a soft shadow's edge (its Gaussian blur, as a share of the side).
SHADOW_DEPTH = (0.15, 0.55)
SHADOW_EDGE = (0.002, 0.1)


def synthetic_marks(kind: str, n: int, *, seed: int = 0, side: int = 280) -> list[np.ndarray]:
    """`n` seeded side x side grey canvases (dark ink on light paper, as the page and a scan give them)
    holding one kind of mark that is not a digit: what the rules above are tuned and tested on."""
    if kind not in MARK_KINDS:
        raise DigitlabError(f"kind: expected one of {', '.join(MARK_KINDS)}, got {kind!r}")
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
        if kind == "shadow":
            a = a * (1.0 - rng.uniform(*SHADOW_DEPTH) * _shade(rng, side))
        if kind in ("grain", "shadow"):  # the paper's texture, no ink: a blank page photographed
            texture = ndi.gaussian_filter(rng.standard_normal(a.shape).astype(np.float32), rng.uniform(*GRAIN_SIZE))
            a = a + texture / (texture.std() + 1e-6) * rng.uniform(*GRAIN)
        a = a + rng.normal(0, rng.uniform(0, 4), a.shape)  # sensor noise, none to a little
        a = np.clip(a, 0, 255).astype(np.uint8)  # truncated: what the refusals were tuned on
        photographed = kind in ("grain", "shadow")
        out.append(jpeg(a, rng.integers(*JPEG_QUALITY)) if photographed and rng.random() < 0.5 else a)
    return out


def _shade(rng: np.random.Generator, side: int) -> np.ndarray:
    """(side, side) 0-1: where a shadow falls on the page, 1 at its darkest. Half are the straight edge of
    a hand's or a phone's shadow, soft or sharp, over part of the page; half a vignette, darkest in the
    corners far from a lit spot."""
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    if rng.random() < 0.5:
        angle, offset = rng.uniform(0, 2 * np.pi), rng.uniform(-0.35, 0.35)
        inside = (np.cos(angle) * (xx - 0.5) + np.sin(angle) * (yy - 0.5) > offset).astype(np.float32)
        return ndi.gaussian_filter(inside, rng.uniform(*SHADOW_EDGE) * side)
    r = np.hypot(xx - rng.uniform(0.3, 0.7), yy - rng.uniform(0.3, 0.7))
    return np.clip(r / 0.7, 0.0, 1.0) ** 2
