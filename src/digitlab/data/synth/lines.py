"""Handwritten number lines, generated on the fly for the line model.

`make_lines(x, y, n, rng)` composes n lines of 1 to MAX_DIGITS digits from one split's 28x28 digits
(MNIST's: ink bright on black), each line in the hand of one *writer* (`Writer`: one slant, size, pen
width and spacing for the whole line, each digit varying a little around them; an "uneven" writer's
sizes and baselines vary a lot). Each digit is cut to its ink, scaled, slanted, thickened or thinned and
moved off a baseline that drifts across the line, set beside the previous one at the writer's spacing
give or take a few px (tight writers overlap their neighbours by up to OVERLAP of the narrower one's
width), sometimes joined to it by a connecting stroke. A share PHOTO of the lines is drawn as dark ink
on paper under uneven light with sensor noise and read back by `line_ink`, as a person's photo is; the
others' ink levels are taken from the drawing itself (the same `ink_levels`), which costs a fifth of
the time. Every line is then normalised by `normalize_line`. Training lines come from the training split
and validation lines from the validation split (`validation_lines`); nothing here knows which.

With `marks` (non-digit marks, `data.synth.nondigits.line_marks`), a share of the lines carries one of
them in place of one digit, labelled MARK_LABEL: the line model's "not a digit" symbol. A small mark (a
dash, a stray stroke) keeps MARK_GAP from its neighbours, or it would be a stroke joining two digits.

`normalize_line` (digitlab.preprocess.line) is the one line normalisation: the generator and
`digitlab read` both go through it. Why these sizes and ranges: docs/design/line-model.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage as ndi

from digitlab.config import TrainConfig
from digitlab.data import RunSplit, run_split
from digitlab.data.synth.nondigits import line_marks
from digitlab.data.synth.render import jpeg, lit, to_uint8
from digitlab.errors import DigitlabError
from digitlab.preprocess.ink import ink_levels
from digitlab.preprocess.line import LINE_HEIGHT, LINE_WIDTH, line_ink, normalize_line

MAX_DIGITS = 10  # digits in a generated line (the model reads any count that fits its frames)
PAD_LABEL = -1  # labels of a line are padded to MAX_DIGITS with this
VAL_SEED = 7  # the validation lines' seed, with the split seed
MARK_LABEL = 10  # a mark's label: the class after the ten digits, before the blank
VAL_MARKS = 1000  # validation-family marks the validation lines draw theirs from
SMALL_MARK = 16  # px: a mark whose ink box is shorter than this either way (of 28) is small ...
MARK_GAP = 2  # ... and keeps at least this many px of paper from its neighbours

# Drawing, at the scale where a digit's 28 px MNIST frame is DIGIT px tall.
DIGIT = 28  # px
# A writer: one per line.
SCALE = (0.8, 1.2)  # the writer's digit size, share of DIGIT ...
SIZE_JITTER = 0.06  # ... and each digit's own, up to this share either way
SLANT = 0.35  # the writer's slant: up to this many px sideways per px of height, either way ...
SLANT_JITTER = 0.05  # ... and each digit's own, around it
THICKNESS = (-0.5, 1.5)  # the writer's pen: share of a 1 px grey dilation (positive) or erosion (negative) ...
THICKNESS_JITTER = 0.2  # ... and each digit's own, around it
BASELINE = 2.0  # px each digit moves up or down, at most ...
TILT = 0.04  # ... off a baseline rising or falling by up to this many px per px across the line
UNEVEN = 0.3  # share of writers whose digits vary in size (UNEVEN_SCALE of the writer's) and baseline
UNEVEN_SCALE = (0.75, 1.3)
UNEVEN_BASELINE = 4.5  # px, at most, for an uneven writer
# Spacing: gaps between neighbours' ink boxes, px (negative overlaps).
TOUCHING = 0.5  # share of writers who write tightly, their spacing drawn from TOUCHING_GAP ...
TOUCHING_GAP = (-6, 1)  # px, inclusive
WIDE_GAP = (2, 14)  # px, inclusive: ... the others' from WIDE_GAP
GAP_SPREAD = 2.0  # px: each gap is the writer's spacing plus a normal draw of this standard deviation
OVERLAP = 1 / 3  # a digit overlaps at most this share of the narrower neighbour's width
JOIN = 0.2  # share of neighbours joined by a connecting stroke
JOIN_WIDTH = (1.5, 2.5)  # px, the connecting stroke's width
PAPER_MARGIN = (4, 14)  # px of paper around the ink
# Paper: a share PHOTO of the lines is photographed and read back as a person's photo is.
PHOTO = 0.4
SOFT_INK = 0.25  # a drawing's ink levels, outside PHOTO, are those where its cover is at least this
PAPER = (200.0, 250.0)  # grey level of the paper where it is lightest
GRADIENT = 0.5  # share of lines whose light fades across them (GRADIENT_DARK..GRADIENT_LIGHT)
JPEG = 0.25  # share of lines saved as JPEG ...
JPEG_QUALITY = (15, 90)  # ... at a quality of Pillow's scale, the first inclusive, the second not
GRADIENT_DARK = (120.0, 150.0)  # grey level of the paper's darker end under fading light
GRADIENT_LIGHT = (215.0, 225.0)  # ... and of its lighter end
INK_REFLECTANCE = (0.05, 0.2)  # share of the light the ink sends back
NOISE_SIGMA = (0.0, 15.0)  # grey levels of sensor noise
KEPT_INK = 0.6  # a line whose digit lost more than 40 % of its ink to `find_ink` is drawn again


@dataclass(frozen=True)
class Writer:
    """One line's hand: what every digit of the line shares."""

    slant: float  # px sideways per px of height
    scale: float  # digit size, share of DIGIT
    thickness: float  # pen: share of a 1 px dilation (positive) or erosion (negative)
    spacing: float  # px between neighbours' ink boxes, before each gap's own spread
    tilt: float  # px the baseline rises (negative) or falls per px across the line
    uneven: bool  # sizes and baselines vary a lot along the line

    @classmethod
    def draw(cls, rng: np.random.Generator, gaps: tuple[int, int] | None = None) -> Writer:
        """A random writer; `gaps` (px, inclusive) in place of the spacing ranges."""
        bounds = gaps or (TOUCHING_GAP if rng.random() < TOUCHING else WIDE_GAP)
        return cls(
            slant=float(rng.uniform(-SLANT, SLANT)),
            scale=float(rng.uniform(*SCALE)),
            thickness=float(rng.uniform(*THICKNESS)),
            spacing=float(rng.uniform(bounds[0], bounds[1])),
            tilt=float(rng.uniform(-TILT, TILT)),
            uneven=bool(rng.random() < UNEVEN),
        )


def make_lines(
    x: np.ndarray,
    y: np.ndarray,
    n: int,
    rng: np.random.Generator,
    *,
    max_digits: int = MAX_DIGITS,
    length: int | None = None,
    gaps: tuple[int, int] | None = None,
    marks: np.ndarray | None = None,
    mark_share: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """n lines from digits `x` (m, 28, 28) uint8 and labels `y`: images (n, LINE_HEIGHT, LINE_WIDTH)
    uint8 and labels (n, max_digits) int32, padded with PAD_LABEL. Each line has 1 to max_digits
    digits, lengths equally likely, or `length` digits; `gaps` (px, inclusive) replaces the gaps'
    ranges (for measuring touching or separated digits apart). `marks` (k, 28, 28): `mark_share` of the
    lines have one of them in place of one digit, labelled MARK_LABEL; without, the lines are those the
    same `rng` gives without marks."""
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 3 or len(x) != len(y) or not len(x):
        raise DigitlabError(f"make_lines: expected digits (m, h, w) and m labels, got {x.shape} and {y.shape}")
    if not 1 <= max_digits <= MAX_DIGITS:
        raise DigitlabError(f"max_digits: expected 1 to {MAX_DIGITS}, got {max_digits}")
    if length is not None and not 1 <= length <= max_digits:
        raise DigitlabError(f"length: expected 1 to max_digits ({max_digits}), got {length}")
    if not 0.0 <= mark_share <= 1.0 or (mark_share and (marks is None or not len(marks))):
        raise DigitlabError(
            f"mark_share: expected a share from 0 to 1 of lines with a mark, and marks; got {mark_share}"
        )
    small = None if marks is None else np.array([max(_extent(m)) < SMALL_MARK for m in marks])
    images = np.zeros((n, LINE_HEIGHT, LINE_WIDTH), np.uint8)
    labels = np.full((n, max_digits), PAD_LABEL, np.int32)
    for i in range(n):
        while True:
            chosen = rng.integers(0, len(x), length or rng.integers(1, max_digits + 1))
            items, label, apart = x[chosen], np.asarray(y[chosen], np.int32), None
            if mark_share and rng.random() < mark_share:  # one of the line's places holds a mark
                at, k = int(rng.integers(len(chosen))), int(rng.integers(len(marks)))
                items, label = items.copy(), label.copy()
                items[at], label[at] = marks[k], MARK_LABEL
                apart = at if small[k] else None
            image = draw_line(items, rng, gaps, apart)
            if image is not None:
                break
        images[i] = image
        labels[i, : len(chosen)] = label
    return images, labels


def _extent(image: np.ndarray) -> tuple[int, int]:
    """px (rows, columns) of an image's ink box."""
    ink = image > 25
    return int(ink.any(1).sum()), int(ink.any(0).sum())


def draw_line(
    digits: np.ndarray, rng: np.random.Generator, gaps: tuple[int, int] | None = None, apart: int | None = None
) -> np.ndarray | None:
    """Digits (k, 28, 28) -> their normalised line, or None where `find_ink` lost one of them (drawn again);
    `apart`: the place of a small mark, MARK_GAP from its neighbours."""
    cover, boxes = compose(digits, rng, gaps, apart=apart)
    if rng.random() >= PHOTO:  # the drawing's own ink levels
        return normalize_line(ink_levels(cover, cover >= SOFT_INK, 0.0)[0])[0]
    grey = on_paper(cover, rng)
    ink = line_ink(grey)
    if ink is None:
        return None
    strong = cover > 0.25
    for x0, x1 in boxes:  # each digit must keep most of its ink, or its label would be wrong
        own = strong[:, x0:x1]
        if own.any() and ink.mask[:, x0:x1][own].mean() < KEPT_INK:
            return None
    return normalize_line(ink_levels(ink.bright, ink.mask, ink.paper)[0])[0]


def compose(
    digits: np.ndarray,
    rng: np.random.Generator,
    gaps: tuple[int, int] | None = None,
    writer: Writer | None = None,
    apart: int | None = None,
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Ink cover 0-1 of a line of digits in one writer's hand (`writer`, or a random one) with paper
    margins, and each digit's columns [x0, x1); `gaps` (px, inclusive) bound every gap instead of the
    writer's spacing and spread; the item at `apart` keeps MARK_GAP px from its neighbours, and no
    stroke joins it to them."""
    writer = writer or Writer.draw(rng, gaps)
    shapes = []
    for d in digits:
        jitter = rng.uniform(*UNEVEN_SCALE) if writer.uneven else 1.0 + rng.uniform(-SIZE_JITTER, SIZE_JITTER)
        shapes.append(
            _shape(
                d,
                writer.slant + rng.uniform(-SLANT_JITTER, SLANT_JITTER),
                writer.scale * jitter,
                writer.thickness + rng.uniform(-THICKNESS_JITTER, THICKNESS_JITTER),
            )
        )
    baseline = UNEVEN_BASELINE if writer.uneven else BASELINE
    spaces = [_gap(rng, writer, gaps, left, right) for left, right in zip(shapes, shapes[1:])]
    if apart is not None:
        spaces = [max(g, MARK_GAP) if apart in (k, k + 1) else g for k, g in enumerate(spaces)]
    width = sum(s.shape[1] for s in shapes) + sum(spaces)
    drift = abs(writer.tilt) * width
    pad = PAPER_MARGIN[1] + int(np.ceil(baseline + drift)) + 2
    tallest = max(s.shape[0] for s in shapes)
    height = tallest + 2 * pad
    cover = np.zeros((height, max(width + 2 * pad, 2 * pad + 1)), np.float32)
    boxes, x, previous = [], pad, None
    for k, shape in enumerate(shapes):
        if k:
            x += spaces[k - 1]
        h, w = shape.shape
        middle = pad + tallest / 2 + writer.tilt * (x - pad + w / 2 - width / 2)  # the drifting baseline's middle
        top = int(round(middle - h / 2 + rng.uniform(-baseline, baseline)))
        top = min(max(top, 0), height - h)
        np.maximum(cover[top : top + h, x : x + w], shape, out=cover[top : top + h, x : x + w])
        box = (x, top, x + w, top + h)
        if previous is not None and rng.random() < JOIN and apart not in (k - 1, k):
            _join(cover, previous, box, rng)
        boxes.append((x, x + w))
        previous, x = box, x + w
    return _trim(cover, rng), boxes


def _shape(digit: np.ndarray, slant: float, scale: float, thickness: float) -> np.ndarray:
    """One digit's ink 0-1, cut to its box, scaled to `scale` of DIGIT, slanted and thickened or thinned."""
    soft = digit.astype(np.float32) / 255.0
    rows, cols = np.flatnonzero((soft > 0.1).any(1)), np.flatnonzero((soft > 0.1).any(0))
    if not len(rows):
        return np.zeros((1, 1), np.float32)
    soft = soft[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    zoom = DIGIT / 20.0 * scale  # MNIST's box is 20 px of its 28 px frame
    h, w = soft.shape
    size = (max(1, round(w * zoom)), max(1, round(h * zoom)))
    image = Image.fromarray(soft).resize(size, Image.Resampling.BILINEAR)
    w, h = size
    extra = int(np.ceil(abs(slant) * h))  # x' = x + slant * (h - y): the top leans right for slant > 0
    # Pillow maps each output pixel back: x = x' + slant * y - (slant * (h - 1) + the shift that keeps x' >= 0).
    shift = slant * (h - 1) + (0 if slant > 0 else extra)
    matrix = (1.0, slant, -shift, 0.0, 1.0, 0.0)
    image = image.transform((w + extra, h), Image.Transform.AFFINE, matrix, Image.Resampling.BILINEAR)
    wide = np.asarray(image, dtype=np.float32)
    amount = thickness
    grown = ndi.grey_dilation(wide, size=(3, 3)) if amount > 0 else ndi.grey_erosion(wide, size=(3, 3))
    wide = np.clip(wide + abs(amount) * (grown - wide), 0.0, 1.0)
    keep = np.flatnonzero((wide > 0.1).any(0))
    return wide[:, keep[0] : keep[-1] + 1] if len(keep) else wide


def _gap(
    rng: np.random.Generator, writer: Writer, gaps: tuple[int, int] | None, left: np.ndarray, right: np.ndarray
) -> int:
    """px between two neighbours' ink boxes: the writer's spacing give or take GAP_SPREAD (or drawn within
    `gaps`), never overlapping more than OVERLAP of the narrower one."""
    if gaps is not None:
        gap = int(rng.integers(gaps[0], gaps[1] + 1))
    else:
        gap = int(round(writer.spacing + rng.normal(0.0, GAP_SPREAD)))
    return max(gap, -int(OVERLAP * min(left.shape[1], right.shape[1])))


def _join(cover: np.ndarray, left: tuple, right: tuple, rng: np.random.Generator) -> None:
    """A pen stroke from low on the left digit's right side to the right digit's left side, drawn in."""
    height = cover.shape[0]
    y0 = left[1] + (left[3] - left[1]) * rng.uniform(0.55, 0.95)
    y1 = right[1] + (right[3] - right[1]) * rng.uniform(0.3, 0.9)
    x0, x1 = left[2] - 3, right[0] + 3
    canvas = Image.new("F", (cover.shape[1], height), 0.0)
    ImageDraw.Draw(canvas).line([(x0, y0), (x1, y1)], fill=1.0, width=round(rng.uniform(*JOIN_WIDTH)))
    np.maximum(cover, ndi.gaussian_filter(np.asarray(canvas), 0.5), out=cover)


def _trim(cover: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Cut to the ink plus a random paper margin on each side; columns left of the ink keep their index."""
    rows = np.flatnonzero((cover > 0.1).any(1))
    if not len(rows):
        return cover
    margin = rng.integers(PAPER_MARGIN[0], PAPER_MARGIN[1] + 1, 2)
    return cover[max(rows[0] - margin[0], 0) : rows[-1] + margin[1] + 1]


def on_paper(cover: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Ink cover 0-1 -> a grey photo of it: dark ink on paper, sometimes under light that fades across
    the line, with sensor noise, sometimes through JPEG. uint8."""
    h, w = cover.shape
    if rng.random() < GRADIENT:
        dark, light = rng.uniform(*GRADIENT_DARK), rng.uniform(*GRADIENT_LIGHT)
        ramp = np.linspace(dark, light, w, dtype=np.float32)
        light_map = np.broadcast_to(ramp if rng.random() < 0.5 else ramp[::-1], (h, w))
    else:
        light_map = np.full((h, w), rng.uniform(*PAPER), np.float32)
    grey = lit(cover, light_map, rng.uniform(*INK_REFLECTANCE))
    grey = to_uint8(grey + rng.uniform(*NOISE_SIGMA) * rng.standard_normal((h, w), dtype=np.float32))
    if rng.random() < JPEG:
        grey = jpeg(grey, rng.integers(*JPEG_QUALITY))
    return grey


def validation_lines(
    train_config: TrainConfig, data: RunSplit | None = None, data_dir: Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A line run's validation lines: `val_lines` lines of the run's validation split (`data`, or
    loaded and split for `train_config`), the same for every run of a split. Never the test set. A run
    that learns marks (`outliers`) has that share of them carry a mark of the "validation" family, which
    it never trained on."""
    data = data or run_split(train_config, data_dir)
    rng = np.random.default_rng([train_config.split_seed, VAL_SEED])
    if not train_config.outliers:
        return make_lines(data.x_val, data.y_val, train_config.val_lines, rng)
    marks, _ = line_marks("validation", VAL_MARKS, seed=train_config.split_seed, cache=True)
    return make_lines(
        data.x_val, data.y_val, train_config.val_lines, rng, marks=marks, mark_share=train_config.outliers
    )


def label_text(labels: np.ndarray) -> str:
    """One line's padded labels -> its digits as text."""
    return "".join(str(int(v)) for v in labels if v != PAD_LABEL)
