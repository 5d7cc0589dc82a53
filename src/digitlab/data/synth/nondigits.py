"""Marks that are not digits, drawn as MNIST draws a digit: letters and symbols written with a pen,
scribbles, shapes, crossed-out digits and two digits overlapped in one box. What a model learns "not a
digit" from (outlier exposure), and what its "unsure" threshold and the open-set benchmark are measured on.

Each image is 28x28 uint8, ink bright on black, the mark's longer side scaled to 20 px and its centre of
mass at the centre, as MNIST's digits and `preprocess` make them. Seeded: the same family, count and seed
give the same images.

Three *families*, disjoint in what they draw from, so that a threshold is chosen on marks the model never
trained on and the figures reported are on marks neither saw:

- "train": letters and symbols of the Hershey fonts in FONTS["train"], scribbles, shapes, crossed-out and
  overlapped digits (digits of the split it is given);
- "validation": the fonts in FONTS["validation"], scribbles and shapes of other ranges;
- "test": the fonts in FONTS["test"], and marks of the remaining ranges.

Letters that people write like digits (O o D Q for 0, I l i for 1, Z z for 2, S s for 5, b G for 6, B for 8,
g q for 9, and / | \\ ( ) like a 1) are never drawn: they are digits' look-alikes by nature, not non-digits;
nor are marks of a stroke or two (brackets, quotes, dashes), which preprocessing refuses as ticks or which
read as a 1. A glyph, scribble or shape whose ink lies along one line (LINE_ELONGATION) is drawn again:
whatever font it came from, it is a 1 by look. Some glyphs of the symbol fonts still look like a digit: the
families are noisy at the edges.

Drawing takes about half a millisecond a mark; `cache=True` keeps a family's marks in the data cache
(~/.cache/digitlab/nondigits), keyed by everything that decides them, this module's source included.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from digitlab import atomic
from digitlab.data import default_cache_dir
from digitlab.errors import DigitlabError

FAMILIES = ("train", "validation", "test")
FONTS = {  # Hershey font names (the Hershey-Fonts package); each family its own
    "train": ("futural", "rowmans", "scripts", "greek", "symbolic", "astrology", "cyrillic"),
    "validation": ("cursive", "timesr", "gothiceng", "mathlow", "meteorology", "futuram"),
    "test": ("rowmant", "timesi", "gothicger", "scriptc", "music", "greekc", "cyrilc_1"),
}
LOOK_ALIKES = set("OoDQIli1Zz2Ss5bG6B8gq9/|\\()0347")  # drawn like a digit, or a digit
TOO_SMALL = set("[]{}'`\".,-_;:!")  # a stroke or two, read as a 1 or refused as a tick before any model
CHARACTERS = "".join(c for c in map(chr, range(33, 127)) if c not in LOOK_ALIKES | TOO_SMALL)
# The share of each kind of mark in a family: glyphs, scribbles, shapes, crossed-out digits, overlapped digits.
KINDS = ("glyph", "scribble", "shape", "crossed", "overlapped")
MIX = {"train": (0.5, 0.2, 0.1, 0.1, 0.1), "validation": (0.6, 0.2, 0.2, 0.0, 0.0), "test": (0.6, 0.2, 0.2, 0.0, 0.0)}
# Pen width (px at 4x the 28 px scale), slant (px sideways per px of height) and rotation (degrees) per family.
PEN = {"train": (5.0, 12.0), "validation": (6.0, 11.0), "test": (4.0, 13.0)}
SLANT = {"train": 0.4, "validation": 0.3, "test": 0.45}
ROTATION = {"train": 15.0, "validation": 10.0, "test": 20.0}
SCRIBBLE_POINTS = {"train": (4, 9), "validation": (3, 7), "test": (5, 12)}  # control points of a scribble
SHAPES = {
    "train": ("triangle", "square", "star", "zigzag"),
    "validation": ("saw", "wave"),
    "test": ("arrow", "hash"),
}
SCALE = 4  # drawn at 4x, then reduced: anti-aliased edges as MNIST's
BOX = 20  # px, the longer side of the mark in the 28x28 image, as MNIST's digits
SIDE = 28
# The ratio of the ink's longer to its shorter spread (the square root of its second moments' eigenvalues)
# above which a mark is a line, a 1 by look: MNIST's validation 1s have a median of 6.3, its other digits
# 3.3 or less for 95 % of them.
LINE_ELONGATION = 4.0
TRIES = 20  # draws of a mark before the last is kept, line or not
CACHE = "nondigits"  # the data cache's folder of drawn marks
# Marks among a line's digits (`line_marks`, for data.synth.lines): the family's glyphs, scribbles and
# shapes, and the short strokes a pen leaves between digits, which keep their size against the digits
# (a mark of its own is scaled to a digit's): a dash, and a stray stroke that is never upright (a 1).
LINE_KINDS = ("nondigit", "dash", "stroke")
LINE_MIX = (0.7, 0.15, 0.15)
DASH = {"train": (7.0, 13.0), "validation": (6.0, 11.0), "test": (8.0, 15.0)}  # px long, of the 28 px frame
DASH_TILT = {"train": 15.0, "validation": 10.0, "test": 20.0}  # degrees off the horizontal, at most
STROKE = {"train": (4.0, 9.0), "validation": (5.0, 8.0), "test": (4.0, 10.0)}  # px long
UPRIGHT = 30.0  # degrees: a stray stroke is at least this far from the vertical


def nondigits(
    family: str, n: int, *, seed: int = 0, digits: np.ndarray | None = None, cache: bool = False
) -> tuple[np.ndarray, list[str]]:
    """`n` non-digit marks of `family` as (n, 28, 28) uint8 images, and the kind of each. `digits`
    (m, 28, 28), MNIST-like digits of a split, are crossed out or overlapped for the kinds that need them;
    without them those kinds are drawn as glyphs. `cache`: read them from the data cache, or draw them and
    keep them there (a cache that cannot be written is no cache)."""
    if family not in FAMILIES:
        raise DigitlabError(f"family: expected one of {', '.join(FAMILIES)}, got {family!r}")
    if not cache:
        return _nondigits(family, n, seed, digits)
    key = hashlib.sha256(Path(__file__).read_bytes())
    key.update(f"{family} {n} {seed} {_versions()}".encode())
    if digits is not None:
        key.update(np.ascontiguousarray(digits).tobytes())
    path = default_cache_dir() / CACHE / f"{key.hexdigest()[:32]}.npz"
    try:
        with np.load(path) as cached:
            return cached["images"], [str(k) for k in cached["kinds"]]
    except (OSError, KeyError, ValueError):
        pass
    images, kinds = _nondigits(family, n, seed, digits)
    buffer = io.BytesIO()
    np.savez(buffer, images=images, kinds=np.array(kinds))
    with contextlib.suppress(OSError, DigitlabError):
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_bytes(path, buffer.getvalue())
    return images, kinds


def line_marks(family: str, n: int, *, seed: int = 0, cache: bool = False) -> tuple[np.ndarray, list[str]]:
    """`n` marks of `family` to set among a line's digits, (n, 28, 28) uint8 as `nondigits` draws them, and
    the kind of each: LINE_MIX of the family's glyphs, scribbles and shapes (never crossed-out or overlapped
    digits, which a line would show as digits touching), dashes and stray strokes at their own size."""
    if family not in FAMILIES:
        raise DigitlabError(f"family: expected one of {', '.join(FAMILIES)}, got {family!r}")
    rng = np.random.default_rng([seed, FAMILIES.index(family), len(FAMILIES)])  # not `nondigits`' stream
    kinds = rng.choice(LINE_KINDS, size=n, p=LINE_MIX)
    glyphs, glyph_kinds = nondigits(family, int(np.sum(kinds == "nondigit")), seed=seed, cache=cache)
    images = np.zeros((n, SIDE, SIDE), np.uint8)
    images[kinds == "nondigit"] = glyphs
    out = kinds.astype(object)
    out[kinds == "nondigit"] = glyph_kinds
    for i in np.flatnonzero(kinds != "nondigit"):
        if kinds[i] == "dash":
            length, tilt = rng.uniform(*DASH[family]), rng.uniform(-DASH_TILT[family], DASH_TILT[family])
        else:
            length = rng.uniform(*STROKE[family])
            tilt = rng.uniform(-(90.0 - UPRIGHT), 90.0 - UPRIGHT)
        images[i] = _short_stroke(length, np.deg2rad(tilt), rng.uniform(*PEN[family]))
    return images, [str(k) for k in out]


def _short_stroke(length: float, angle: float, width: float) -> np.ndarray:
    """A straight stroke `length` px long (of the 28 px frame), `angle` radians off the horizontal, drawn
    with a round pen `width` px wide at SCALE, centred, not scaled to BOX."""
    c = SIDE * SCALE / 2
    dx, dy = np.cos(angle) * length * SCALE / 2, -np.sin(angle) * length * SCALE / 2
    return np.asarray(_pen([[(c - dx, c - dy), (c + dx, c + dy)]], width), np.uint8)


def _pen(strokes: list[list[tuple[float, float]]], width: float) -> Image.Image:
    """Strokes (points in px of the SIDE * SCALE canvas) drawn with a round pen `width` px wide, the canvas
    then reduced to SIDE x SIDE."""
    big = SIDE * SCALE
    canvas = Image.new("L", (big, big), 0)
    pen = ImageDraw.Draw(canvas)
    for xy in strokes:
        pen.line(xy, fill=255, width=max(1, round(width)), joint="curve")
        for x, y in (xy[0], xy[-1]):  # round caps
            pen.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill=255)
    return canvas.resize((SIDE, SIDE), Image.Resampling.BOX)


def _versions() -> str:
    """The versions of what draws the marks besides this module: the fonts' package and Pillow's resizing."""
    from importlib.metadata import version

    return f"Hershey-Fonts {version('Hershey-Fonts')} Pillow {version('Pillow')} NumPy {np.__version__}"


def _nondigits(family: str, n: int, seed: int, digits: np.ndarray | None) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng([seed, FAMILIES.index(family)])
    fonts = _fonts(family)
    mix = np.array(MIX[family], float)
    if digits is None or not len(digits):
        mix[KINDS.index("glyph")] += mix[KINDS.index("crossed")] + mix[KINDS.index("overlapped")]
        mix[KINDS.index("crossed")] = mix[KINDS.index("overlapped")] = 0.0
    kinds = rng.choice(KINDS, size=n, p=mix / mix.sum())
    images = np.zeros((n, SIDE, SIDE), np.uint8)
    for i, kind in enumerate(kinds):
        if kind in ("glyph", "scribble", "shape"):
            for _ in range(TRIES):  # a mark along one line is a 1: drawn again
                images[i] = _mark(kind, family, fonts, rng)
                if elongation(images[i]) <= LINE_ELONGATION:
                    break
        elif kind == "crossed":
            digit = digits[rng.integers(len(digits))].astype(np.float32)
            lines = [_scribble(family, rng, points=2) for _ in range(rng.integers(2, 5))]
            images[i] = np.maximum(digit, _draw(lines, family, rng, centre=False)).astype(np.uint8)
        else:  # two digits in one box, shifted by a third to a half of the box either way
            a, b = digits[rng.integers(len(digits), size=2)]
            shift = rng.integers(7, 12) * rng.choice((-1, 1), 2)
            images[i] = np.maximum(a, np.roll(b, tuple(shift), axis=(0, 1)))
    return images, [str(k) for k in kinds]


def _mark(kind: str, family: str, fonts: list[dict[str, list[np.ndarray]]], rng: np.random.Generator) -> np.ndarray:
    """One glyph, scribble or shape of the family."""
    if kind == "glyph":
        strokes = fonts[rng.integers(len(fonts))][CHARACTERS[rng.integers(len(CHARACTERS))]]
        return _draw(_warp(strokes, family, rng), family, rng)
    if kind == "scribble":
        return _draw([_scribble(family, rng)], family, rng)
    return _draw(_warp(_shape(SHAPES[family][rng.integers(len(SHAPES[family]))]), family, rng), family, rng)


def elongation(image: np.ndarray) -> float:
    """How much longer than wide an image's ink is: the square root of the ratio of the largest to the
    smallest eigenvalue of its ink's second moments (1: round; MNIST's 1s about 6)."""
    ink = image.astype(np.float64)
    total = ink.sum()
    if not total:
        return 1.0
    rows, cols = np.indices(ink.shape)
    r, c = rows - (rows * ink).sum() / total, cols - (cols * ink).sum() / total
    moments = np.array([[(r * r * ink).sum(), (r * c * ink).sum()], [(r * c * ink).sum(), (c * c * ink).sum()]])
    small, large = np.linalg.eigvalsh(moments / total)
    return float(np.sqrt(large / max(small, 1e-9)))


_LOADED: dict[str, dict[str, list[np.ndarray]]] = {}


def _fonts(family: str) -> list[dict[str, list[np.ndarray]]]:
    """The family's fonts: character -> strokes, each (k, 2) points (x right, y down)."""
    from HersheyFonts import HersheyFonts  # the train extra; only where non-digits are drawn

    out = []
    for name in FONTS[family]:
        if name not in _LOADED:
            font = HersheyFonts()
            font.load_default_font(name)
            glyphs = {}
            for c in CHARACTERS:
                strokes = [np.array(s, np.float32) for s in font.strokes_for_text(c) if len(s) >= 2]
                if strokes:
                    glyphs[c] = strokes
            _LOADED[name] = glyphs
        glyphs = _LOADED[name]
        out.append({c: glyphs.get(c) or next(iter(glyphs.values())) for c in CHARACTERS})
    return out


def _warp(strokes: list[np.ndarray], family: str, rng: np.random.Generator) -> list[np.ndarray]:
    """Strokes slanted and rotated by the family's ranges, as a hand varies."""
    slant = rng.uniform(-SLANT[family], SLANT[family])
    angle = np.deg2rad(rng.uniform(-ROTATION[family], ROTATION[family]))
    c, s = np.cos(angle), np.sin(angle)
    matrix = np.array([[c, -s], [s, c]]) @ np.array([[1.0, -slant], [0.0, 1.0]])
    return [p @ matrix.T for p in strokes]


def _scribble(family: str, rng: np.random.Generator, points: int | None = None) -> np.ndarray:
    """A pen's wandering stroke: control points joined by a smooth curve (points in a unit box)."""
    k = points or int(rng.integers(*SCRIBBLE_POINTS[family]))
    control = rng.uniform(0.0, 1.0, (k, 2))
    t = np.linspace(0.0, k - 1, 12 * k)
    return np.stack([np.interp(t, np.arange(k), control[:, j]) for j in range(2)], axis=1).astype(np.float32)


def _shape(name: str) -> list[np.ndarray]:
    """Outlines of simple shapes, never a circle or an oval (a 0)."""
    if name == "triangle":
        return [np.array([[0, 1], [0.5, 0], [1, 1], [0, 1]], np.float32)]
    if name == "square":
        return [np.array([[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]], np.float32)]
    if name == "star":
        a = np.deg2rad(np.arange(6) * 144.0 - 90.0)
        return [np.stack([np.cos(a), np.sin(a)], 1).astype(np.float32)]
    if name == "zigzag":
        return [np.array([[0, 0], [0.25, 1], [0.5, 0], [0.75, 1], [1, 0]], np.float32)]
    if name == "saw":
        x = np.linspace(0, 1, 9)
        return [np.stack([x, np.arange(9) % 2 * 0.4], 1).astype(np.float32)]
    if name == "wave":
        t = np.linspace(0, 4 * np.pi, 60)
        return [np.stack([t, np.sin(t) * 2.0], 1).astype(np.float32)]
    if name == "arrow":
        return [np.array([[0, 0.5], [1, 0.5]], np.float32), np.array([[0.7, 0.2], [1, 0.5], [0.7, 0.8]], np.float32)]
    if name == "hash":
        return [
            np.array(line, np.float32)
            for line in ([[0.3, 0], [0.2, 1]], [[0.7, 0], [0.6, 1]], [[0, 0.35], [1, 0.3]], [[0, 0.7], [1, 0.65]])
        ]
    raise DigitlabError(f"shape: unknown {name!r}")


def _draw(strokes: list[np.ndarray], family: str, rng: np.random.Generator, centre: bool = True) -> np.ndarray:
    """Strokes drawn with a round pen, the longer side of their box scaled to BOX px and their centre of
    mass moved to the centre (`centre`), or drawn across the whole image (False: a crossing-out)."""
    points = np.concatenate(strokes)
    lo, hi = points.min(0), points.max(0)
    span = float(max(hi - lo)) or 1.0
    width = rng.uniform(*PEN[family])
    big = SIDE * SCALE
    if centre:
        scale, offset = (BOX * SCALE - width) / span, (big - (hi - lo) * (BOX * SCALE - width) / span) / 2
    else:
        scale, offset = (big * 0.8) / span, big * 0.1
    image = np.asarray(
        _pen([[tuple(p) for p in (stroke - lo) * scale + offset] for stroke in strokes], width), np.float32
    )
    if centre and image.sum() > 0:  # centre of mass to the centre, as MNIST
        rows, cols = np.indices(image.shape)
        total = image.sum()
        dy = int(round((SIDE - 1) / 2 - (rows * image).sum() / total))
        dx = int(round((SIDE - 1) / 2 - (cols * image).sum() / total))
        image = np.roll(image, (dy, dx), axis=(0, 1))
    return np.clip(image, 0, 255).astype(np.uint8)
