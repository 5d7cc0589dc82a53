"""Numbers composed from single digits, for the string benchmark and for choosing `read`'s constants.

`compose_numbers(x, y, subset, n, seed)` sets digits of one split (28x28 images, white ink on black, as
MNIST) side by side as dark ink on light paper, seeded, in the subsets of SUBSETS. Sizes are at MNIST's
scale: a digit's box is 28 px tall (its ink about 20 px), and a gap is the number of empty columns
between the ink of two neighbours. The benchmark composes its strings from the test split and the
tuning from the validation split (`bench/read_numbers.py`); nothing here knows which.

`score_readings` gives the figures a benchmark reports from the true and the read strings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from digitlab.data.synth.render import jpeg, lit
from digitlab.errors import DigitlabError
from digitlab.metrics import edit_distance

SUBSETS = ("separated", "close", "sizes", "slanted", "paper", "lines", "touching")
LENGTHS = tuple(range(1, 9))  # digits in a number (in each line, for "lines")
MARGIN = 8  # px of paper around the ink
SEPARATED_GAP = (4, 10)  # px between neighbours' ink, inclusive
CLOSE_GAP = (0, 2)  # px: touching at 0 where two strokes meet at the same column
TOUCHING_GAP = (-6, 1)  # px, "touching": negative overlaps, by at most half the narrower neighbour
SIZE_RANGE = (0.7, 1.3)  # "sizes": each digit's height, as a share of MNIST's
BASELINE_SHIFT = 0.15  # "sizes": each digit moved up or down by up to this share of 28 px
SIZES_GAP = (3, 8)  # px, "sizes"
SLANT = (0.15, 0.35)  # "slanted": horizontal shift per row of height (tan of 8.5-19 degrees), either way
PAPER_SCALE = 3  # "paper": photographed at 3x MNIST's scale
PAPER_LIGHT = (235, 150)  # "paper": grey level of the light and the dim end of the sheet
INK_STRENGTH = (0.6, 0.85)  # "paper": share of the paper's light the strongest ink absorbs
NOISE = (3.0, 9.0)  # "paper": sensor noise, standard deviation in grey levels
JPEG_QUALITY = (35, 80)  # "paper"
LINES = (2, 3)  # "lines": lines on the page
LINE_GAP = (6, 16)  # px between lines, "lines"
INDENT = 20  # px, "lines": each line starts up to this far right


@dataclass(frozen=True, eq=False)
class Number:
    image: np.ndarray  # uint8 (H, W): dark ink on light paper
    text: str  # the digits' labels, lines joined by "\n"
    subset: str
    length: int  # digits in the number (in each line, for "lines")


def compose_numbers(
    x: np.ndarray, y: np.ndarray, subset: str, n: int, seed: int = 0, lengths: tuple[int, ...] = LENGTHS
) -> list[Number]:
    """`n` numbers of the given subset, their lengths taking turns through `lengths`, each digit a random
    image of `x` (labels `y`). The same arguments give the same numbers."""
    if subset not in SUBSETS:
        raise DigitlabError(f"subset: {subset!r} is not one of {', '.join(SUBSETS)}")
    if len(x) != len(y) or x.ndim != 3 or not len(x):
        raise DigitlabError(f"compose_numbers: got images of shape {x.shape} and {len(y)} labels; expected (N, H, W)")
    if not lengths or min(lengths) < 1:
        raise DigitlabError(f"lengths: {lengths}; expected digits counts of at least 1")
    rng = np.random.default_rng([seed, SUBSETS.index(subset)])
    out = []
    for i in range(n):
        length = lengths[i % len(lengths)]
        lines = rng.integers(LINES[0], LINES[1] + 1) if subset == "lines" else 1
        picks = [rng.integers(0, len(x), size=length) for _ in range(lines)]
        rows = [_line(x[p], subset, rng) for p in picks]
        image = _stack(rows, rng) if subset == "lines" else rows[0]
        if subset == "paper":
            image = _photograph(image, rng)
        text = "\n".join("".join(str(int(y[k])) for k in p) for p in picks)
        out.append(Number(image=image, text=text, subset=subset, length=length))
    return out


def _ink_columns(digit: np.ndarray) -> np.ndarray:
    """The digit cut to the columns that hold ink (all rows kept, so the baseline stays MNIST's)."""
    cols = np.flatnonzero(digit.any(0))
    return digit[:, cols[0] : cols[-1] + 1] if len(cols) else digit[:, :1]


def _resized(digit: np.ndarray, scale: float) -> np.ndarray:
    h, w = digit.shape
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(digit).resize(size, Image.Resampling.BILINEAR))


def _line(digits: np.ndarray, subset: str, rng: np.random.Generator) -> np.ndarray:
    """One line of digits, white ink on black, with MARGIN px around it."""
    gaps = {"close": CLOSE_GAP, "sizes": SIZES_GAP, "touching": TOUCHING_GAP}.get(subset, SEPARATED_GAP)
    crops, shifts = [], []
    for d in digits:
        crop = _ink_columns(d)
        shift = 0
        if subset == "sizes":
            crop = _ink_columns(_resized(crop, rng.uniform(*SIZE_RANGE)))
            shift = round(rng.uniform(-BASELINE_SHIFT, BASELINE_SHIFT) * d.shape[0])
        crops.append(crop)
        shifts.append(shift)
    base = digits.shape[1]  # 28: every crop is placed with its box's bottom at the line's bottom
    tallest = max(c.shape[0] for c in crops)
    room = max(abs(s) for s in shifts)
    height = max(tallest, base) + 2 * room + 2 * MARGIN
    gap_px = [
        max(int(rng.integers(gaps[0], gaps[1] + 1)), -(min(a.shape[1], b.shape[1]) // 2))  # never hides a digit
        for a, b in zip(crops, crops[1:])
    ]
    width = sum(c.shape[1] for c in crops) + sum(gap_px) + 2 * MARGIN
    canvas = np.zeros((height, width), np.uint8)
    x0 = MARGIN
    bottom = MARGIN + room + max(tallest, base)
    for k, (c, s) in enumerate(zip(crops, shifts)):
        h = c.shape[0]
        # a smaller digit sits in the middle of where a full-sized one would, before its baseline shift
        top = bottom - base + (base - h) // 2 + s
        region = canvas[top : top + h, x0 : x0 + c.shape[1]]
        np.maximum(region, c, out=region)  # a gap of 0 lets strokes meet, not overwrite each other
        x0 += c.shape[1] + (gap_px[k] if k < len(gap_px) else 0)
    if subset == "slanted":
        canvas = _slant(canvas, rng.uniform(*SLANT) * rng.choice((-1, 1)))
    return 255 - canvas


def _slant(canvas: np.ndarray, shear: float) -> np.ndarray:
    """Shift each row by `shear` px per row above the bottom (italics), widening the canvas to keep the ink."""
    h, w = canvas.shape
    extra = int(np.ceil(abs(shear) * h))
    wide = np.zeros((h, w + extra), np.uint8)
    wide[:, (extra if shear < 0 else 0) : (extra if shear < 0 else 0) + w] = canvas
    # output (u, v) shows input (u + shear * (v - (h - 1)), v): rows above the bottom move right for shear > 0
    offset = shear * (h - 1)
    img = Image.fromarray(wide).transform(
        wide.shape[::-1], Image.Transform.AFFINE, (1, shear, -offset, 0, 1, 0), resample=Image.Resampling.BILINEAR
    )
    return np.asarray(img)


def _stack(rows: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Lines of dark ink on white, one below the other, each indented a little."""
    indents = [int(rng.integers(0, INDENT + 1)) for _ in rows]
    gaps = [int(rng.integers(LINE_GAP[0], LINE_GAP[1] + 1)) - 2 * MARGIN for _ in rows[1:]]  # margins overlap
    width = max(r.shape[1] + i for r, i in zip(rows, indents))
    height = sum(r.shape[0] for r in rows) + sum(gaps)
    page = np.full((height, width), 255, np.uint8)
    top = 0
    for k, (r, i) in enumerate(zip(rows, indents)):
        region = page[top : top + r.shape[0], i : i + r.shape[1]]
        np.minimum(region, r, out=region)
        top += r.shape[0] + (gaps[k] if k < len(gaps) else 0)
    return page


def _photograph(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Dark-on-white ink as a phone photographs it: enlarged and softened, under light that fades
    across the sheet in a random direction, with sensor noise, saved as a JPEG."""
    big = Image.fromarray(image).resize(
        (image.shape[1] * PAPER_SCALE, image.shape[0] * PAPER_SCALE), Image.Resampling.BICUBIC
    )
    ink = 1.0 - np.asarray(big.filter(ImageFilter.GaussianBlur(PAPER_SCALE / 2)), np.float32) / 255
    h, w = ink.shape
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    along = np.cos(angle) * xx / w + np.sin(angle) * yy / h
    along = (along - along.min()) / max(float(np.ptp(along)), 1e-6)  # 0 at the light end, 1 at the dim one
    light = PAPER_LIGHT[0] + (PAPER_LIGHT[1] - PAPER_LIGHT[0]) * along
    grey = lit(ink, light, 1.0 - rng.uniform(*INK_STRENGTH)) + rng.normal(0, rng.uniform(*NOISE), ink.shape)
    return jpeg(np.clip(grey, 0, 255).astype(np.uint8), rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1))


def score_readings(truths: list[str], texts: list[str | None], unsure: list[bool]) -> dict:
    """String accuracy (the whole text right, lines included), digit accuracy (1 - edit distance / length,
    summed over the numbers; a line break counts as a character, and a number's errors at most its
    length), the share marked unsure, and the string accuracy of those not marked unsure (None when
    every one is)."""
    if not (len(truths) == len(texts) == len(unsure)) or not truths:
        raise DigitlabError(f"score_readings: {len(truths)} truths, {len(texts)} texts, {len(unsure)} flags")
    right = [t == r for t, r in zip(truths, texts)]
    digits = sum(len(t) for t in truths)
    errors = sum(min(edit_distance(t, r or ""), len(t)) for t, r in zip(truths, texts))
    accepted = [ok for ok, u in zip(right, unsure) if not u]
    return {
        "count": len(truths),
        "string_accuracy": sum(right) / len(right),
        "digit_accuracy": 1 - errors / digits,
        "unsure": sum(unsure) / len(unsure),
        "accepted_accuracy": sum(accepted) / len(accepted) if accepted else None,
    }
