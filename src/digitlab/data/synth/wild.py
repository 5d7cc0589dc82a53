"""The wild validation set: MNIST's validation digits as people's images show them.

In the spirit of MNIST-C (Mu & Gilmer, 2019), but aimed at handwriting in the wild: each column takes
the same validation digits, draws them as a person's image (dark ink on light paper at a photo's size,
unless the column says otherwise) and changes one thing: the pen, the slant, the size and place on the
page, the focus, the resolution, the light, the sensor, the colours. Every image is a uint8 array that
`digitlab.preprocess.preprocess` takes, so a column measures the whole path a user's image follows.

Built only from the validation split that training holds out (the same `split_train_val` call as
`digitlab.data.run_split`), never from the test set, and never trained on. Seeded and deterministic:
the same seed gives the same arrays, and each column has its own random stream, so building a subset
of the columns gives the same images. Why each column is as it is: docs/design/wild-set.md.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image
from scipy import ndimage as ndi
from skimage.morphology import skeletonize

from digitlab.data.synth.render import jpeg, lit, on_paper, to_uint8
from digitlab.errors import DigitlabError
from digitlab.preprocess import preprocess

COLUMNS = (
    "clean",
    "thin",
    "thick",
    "slant",
    "rotate",
    "large",
    "small",
    "off_centre",
    "blur",
    "low_res",
    "gradient",
    "shadow",
    "noise_jpeg",
    "colour",
    "chalkboard",
)
PER_COLUMN = 1000  # digits per column: the same validation digits in every column

SIDE = 160  # px, the canvas of most columns: a photo's or a scan's crop around one digit
DIGIT = 100  # px, the long side of the digit's bounding box on it (MNIST's 20 px box, 5x)
BIG_SIDE = 280  # px, the canvas of the size and place columns, as the web page's drawing pad
BIG_CANVAS = ("large", "small", "off_centre")  # the columns drawn on the big canvas
INK_LEVEL = 0.2  # a 28 px digit's bounding box: its pixels above this share of full ink

# The ranges each column draws from, per image (uniform unless said otherwise).
THIN_PEN = (1.0, 4.0)  # px on the 100 px digit: a hairline to a fine pen
THICK_PEN = (0.15, 0.25)  # share of the digit's long side: a felt tip to a broad marker
SLANT = (0.2, 0.5)  # px sideways per px of height, either way
ROTATION = (5.0, 20.0)  # degrees, either way
LARGE = (0.6, 0.9)  # the digit's long side as a share of the big canvas's side
SMALL = (0.15, 0.3)
OFF_CENTRE = (0.3, 0.5)  # ... drawn within 15 % of the canvas's edges
BLUR = (2.0, 8.0)  # Gaussian sigma, px on the 100 px digit (a stroke is about 13 px wide): soft to out of focus
LOW_RES = (8.0, 16.0)  # px, the digit's long side at the resolution it is sampled through
GRADIENT_DARK = (120.0, 150.0)  # grey level of the paper's darkest corner
GRADIENT_LIGHT = (215.0, 225.0)  # ... and of its lightest (at least 65 levels apart)
SHADOW_PAPER = (215.0, 245.0)  # grey level of the lit paper
SHADOW_LIGHT = (0.45, 0.65)  # share of the light left inside the shadow
INK_REFLECTANCE = (0.05, 0.2)  # share of the light the ink sends back (the light columns)
NOISE_PAPER = (190.0, 245.0)  # grey levels of paper and ink in the noise column
NOISE_INK = (15.0, 70.0)
NOISE_SIGMA = (5.0, 15.0)  # grey levels of sensor noise
JPEG_QUALITY = (15, 50)  # Pillow's quality scale, inclusive
# Colours (R, G, B) that each image jitters by up to COLOUR_JITTER levels per channel.
PAPERS = ((250, 250, 245), (250, 235, 130), (200, 225, 245), (250, 210, 220), (210, 240, 200), (215, 190, 150))
INKS = ((20, 40, 150), (180, 20, 30), (20, 110, 50), (25, 25, 30), (90, 30, 130))
BOARDS = ((35, 60, 45), (30, 32, 35), (45, 55, 70))
CHALK = (235, 235, 228)
COLOUR_JITTER = 15


def build_wild(
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    per_column: int = PER_COLUMN,
    seed: int = 0,
    columns: tuple[str, ...] = COLUMNS,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Validation digits (n, h, w) uint8, ink bright on black as in MNIST, and their labels -> for each
    column, `(images, labels)`: images uint8 (m, H, W) grey or (m, H, W, 3) colour, m = min(per_column, n).
    The same m digits (chosen by `seed`) appear in every column, in the same order."""
    x_val, y_val = np.asarray(x_val), np.asarray(y_val)
    if x_val.ndim != 3 or len(x_val) != len(y_val) or not len(x_val):
        raise DigitlabError(
            f"build_wild: expected images (n, h, w) and n labels with n > 0, got {x_val.shape} and {y_val.shape}"
        )
    if not isinstance(per_column, (int, np.integer)) or per_column <= 0:
        raise DigitlabError(f"per_column: expected a positive integer, got {per_column!r}")
    unknown = [c for c in columns if c not in COLUMNS]
    if unknown:
        raise DigitlabError(f"columns: expected names from {', '.join(COLUMNS)}, got {', '.join(map(str, unknown))}")
    chosen = np.random.default_rng(seed).choice(len(x_val), size=min(per_column, len(x_val)), replace=False)
    crops = [_crop(d) for d in x_val[chosen].astype(np.float32) / 255.0]
    # Most columns start from the same centred drawing: made once, read-only to them.
    cover = _centred(crops) if set(columns) - set(BIG_CANVAS) else None
    labels = y_val[chosen].copy()
    return {
        name: (RENDERERS[name](crops, cover, np.random.default_rng([seed, COLUMNS.index(name)])), labels.copy())
        for name in columns
    }


def preprocess_wild(
    wild: dict[str, tuple[np.ndarray, np.ndarray]],
) -> dict[str, tuple[np.ndarray, np.ndarray, list[str | None]]]:
    """Each column's images through `preprocess`, as a user's image goes: `(digits, labels, reasons)`,
    digits uint8 (m, 28, 28); reasons[i] is None for a digit the model is asked about, else why not
    (no ink found, or preprocessing's "not a digit" reason)."""
    out = {}
    for name, (images, labels) in wild.items():
        digits = np.zeros((len(images), 28, 28), np.uint8)
        reasons: list[str | None] = []
        for i, image in enumerate(images):
            pre = preprocess(image)
            digits[i] = pre.digit
            # `reason`: preprocessing's "not a digit" rule, where this version of it has one.
            reason = getattr(pre, "reason", None)
            reasons.append(reason if reason else (None if pre.has_ink else "no ink found in the image"))
        out[name] = (digits, labels, reasons)
    return out


# ---- drawing one digit ----


def _crop(digit: np.ndarray) -> np.ndarray:
    """A 28 px digit (ink 0-1) cut to its bounding box plus 1 px of its anti-aliased edge."""
    rows, cols = np.flatnonzero((digit > INK_LEVEL).any(1)), np.flatnonzero((digit > INK_LEVEL).any(0))
    if not len(rows):  # no ink: the whole frame
        return digit
    return np.pad(digit, 1)[rows[0] : rows[-1] + 3, cols[0] : cols[-1] + 3]


def _draw(crop: np.ndarray, long_side: float, side: int, centre: tuple[float, float]) -> np.ndarray:
    """Ink cover 0-1 on a side x side canvas: the digit's box `long_side` px long, centred at (row, col)."""
    h, w = crop.shape
    scale = long_side / max(max(h, w) - 2, 1)  # the 1 px edge each side is not part of the box
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    big = np.clip(np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.BICUBIC)), 0.0, 1.0)
    canvas = np.zeros((side, side), np.float32)
    top, left = round(centre[0] - size[1] / 2), round(centre[1] - size[0] / 2)
    r0, c0 = max(top, 0), max(left, 0)
    r1, c1 = min(top + size[1], side), min(left + size[0], side)
    if r1 > r0 and c1 > c0:
        canvas[r0:r1, c0:c1] = big[r0 - top : r1 - top, c0 - left : c1 - left]
    return canvas


def _centred(crops: list[np.ndarray]) -> np.ndarray:
    """(m, SIDE, SIDE) ink cover: each digit DIGIT px long at the canvas's centre."""
    return np.stack([_draw(c, DIGIT, SIDE, (SIDE / 2, SIDE / 2)) for c in crops])


def _each(rng: np.random.Generator, bounds: tuple[float, float], m: int) -> np.ndarray:
    """(m, 1, 1) float32 draws from `bounds`, one per image, to broadcast over its pixels."""
    return rng.uniform(*bounds, (m, 1, 1)).astype(np.float32)


def _either_way(rng: np.random.Generator, bounds: tuple[float, float], m: int) -> np.ndarray:
    """m magnitudes from `bounds`, each with a random sign."""
    return rng.uniform(*bounds, m) * rng.choice((-1.0, 1.0), m)


# ---- the columns ----


def _clean(crops: list[np.ndarray], cover: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return on_paper(cover)


def _pen(cover: np.ndarray, width: float) -> np.ndarray:
    """The digit's centre line traced by a round pen `width` px wide, with an anti-aliased edge."""
    line = skeletonize(cover > 0.5)
    if not line.any():
        return cover
    distance = ndi.distance_transform_edt(~line)  # px from each pixel to the centre line
    return np.clip(width / 2 + 0.5 - distance, 0.0, 1.0).astype(np.float32)


def _thin(crops: list[np.ndarray], cover: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    widths = rng.uniform(*THIN_PEN, len(crops))
    return on_paper(np.stack([_pen(c, w) for c, w in zip(cover, widths)]))


def _thick(crops: list[np.ndarray], cover: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    widths = rng.uniform(*THICK_PEN, len(crops)) * DIGIT
    return on_paper(np.stack([_pen(c, w) for c, w in zip(cover, widths)]))


def _warp(cover: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """`cover` mapped through the 2x2 `matrix` (on x right, y down) about the canvas's centre."""
    inverse = np.linalg.inv(matrix)  # Pillow maps each output pixel back to the input
    c = np.array([cover.shape[1] / 2, cover.shape[0] / 2])
    shift = c - inverse @ c
    data = (inverse[0, 0], inverse[0, 1], shift[0], inverse[1, 0], inverse[1, 1], shift[1])
    out = Image.fromarray(cover).transform(cover.shape[::-1], Image.Transform.AFFINE, data, Image.Resampling.BILINEAR)
    return np.asarray(out)


def _slant(crops: list[np.ndarray], cover: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # x' = x - s * y (y down): positive s leans the top to the right, as italic writing does.
    shears = _either_way(rng, SLANT, len(crops))
    return on_paper(np.stack([_warp(c, np.array([[1.0, -s], [0.0, 1.0]])) for c, s in zip(cover, shears)]))


def _rotate(crops: list[np.ndarray], cover: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    angles = np.radians(_either_way(rng, ROTATION, len(crops)))
    rotations = [np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) for a in angles]
    return on_paper(np.stack([_warp(c, r) for c, r in zip(cover, rotations)]))


def _placed(
    crops: list[np.ndarray], rng: np.random.Generator, sizes: tuple[float, float], near_edge: bool
) -> np.ndarray:
    """Each digit on the big canvas at a size from `sizes` (share of its side), anywhere it fits whole,
    or near one of its edges on each axis."""
    m = len(crops)
    long_sides = rng.uniform(*sizes, m) * BIG_SIDE
    where = rng.uniform(0.0, 1.0, (m, 2))  # 0: against the top or left edge, 1: the bottom or right
    if near_edge:
        where = np.where(rng.random((m, 2)) < 0.5, where * 0.15, 1.0 - where * 0.15)
    images = np.empty((m, BIG_SIDE, BIG_SIDE), np.uint8)
    for i, (crop, long_side) in enumerate(zip(crops, long_sides)):
        h, w = (np.array(crop.shape) - 2) * long_side / max(max(crop.shape) - 2, 1)
        margin = 2.0  # px kept between the box and the canvas's edge
        lo = np.array([h, w]) / 2 + margin
        centre = lo + where[i] * np.maximum(BIG_SIDE - 2 * lo, 0.0)
        images[i] = on_paper(_draw(crop, long_side, BIG_SIDE, tuple(centre)))
    return images


def _large(crops: list[np.ndarray], cover: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return _placed(crops, rng, LARGE, near_edge=False)


def _small(crops: list[np.ndarray], cover: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return _placed(crops, rng, SMALL, near_edge=False)


def _off_centre(crops: list[np.ndarray], cover: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return _placed(crops, rng, OFF_CENTRE, near_edge=True)


def _blur(crops: list[np.ndarray], cover: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    sigmas = rng.uniform(*BLUR, len(crops))
    return on_paper(np.stack([ndi.gaussian_filter(c, s) for c, s in zip(cover, sigmas)]))


def _low_res(crops: list[np.ndarray], cover: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # Sampled through a grid on which the digit is 8-16 px long (area average, as a sensor does), then
    # enlarged back bilinearly, as a viewer or a phone shows a small image.
    small = np.round(SIDE * rng.uniform(*LOW_RES, len(crops)) / DIGIT).astype(int)
    out = []
    for c, n in zip(cover, small):
        low = Image.fromarray(c).resize((n, n), Image.Resampling.BOX)
        out.append(np.asarray(low.resize((SIDE, SIDE), Image.Resampling.BILINEAR)))
    return on_paper(np.stack(out))


def _lit(cover: np.ndarray, light: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Grey images under uneven `light` (grey level of the paper at each pixel): light x reflectance."""
    return to_uint8(lit(cover, light, _each(rng, INK_REFLECTANCE, len(cover))))


def _grid() -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (rows, cols) of the canvas, 0-1 across it."""
    t = (np.arange(SIDE, dtype=np.float32) + 0.5) / SIDE
    return t[:, None], t[None, :]


def _gradient(crops: list[np.ndarray], cover: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # The paper fades linearly along a random direction from its darkest corner to its lightest.
    m = len(crops)
    angle = _each(rng, (0.0, 2 * np.pi), m)
    rows, cols = _grid()
    along = cols * np.cos(angle) + rows * np.sin(angle)  # (m, SIDE, SIDE)
    lo, hi = along.min(axis=(1, 2), keepdims=True), along.max(axis=(1, 2), keepdims=True)
    dark, light = _each(rng, GRADIENT_DARK, m), _each(rng, GRADIENT_LIGHT, m)
    return _lit(cover, dark + (light - dark) * (along - lo) / (hi - lo), rng)


def _shadow(crops: list[np.ndarray], cover: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # A soft band of shadow (a hand, a phone) across the paper, passing near the digit.
    m = len(crops)
    angle = _each(rng, (0.0, np.pi), m)
    offset = _each(rng, (-0.25, 0.25), m)  # of the side, from the centre
    half = _each(rng, (0.1, 0.3), m)  # half the band's width, share of the side
    soft = _each(rng, (0.03, 0.1), m)  # the width of its edges, share of the side
    rows, cols = _grid()
    across = (cols - 0.5) * np.cos(angle) + (rows - 0.5) * np.sin(angle) - offset
    inside = 1.0 / (1.0 + np.exp(-(half - np.abs(across)) / soft))
    kept, paper = _each(rng, SHADOW_LIGHT, m), _each(rng, SHADOW_PAPER, m)
    return _lit(cover, paper * (1.0 - (1.0 - kept) * inside), rng)


def _noise_jpeg(crops: list[np.ndarray], cover: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    m = len(crops)
    paper, ink, sigma = _each(rng, NOISE_PAPER, m), _each(rng, NOISE_INK, m), _each(rng, NOISE_SIGMA, m)
    noise = rng.standard_normal((m, SIDE, SIDE), dtype=np.float32)
    grey = to_uint8(paper + (ink - paper) * cover + sigma * noise)
    quality = rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1, m)
    out = np.empty_like(grey)
    for i, (image, q) in enumerate(zip(grey, quality)):
        out[i] = jpeg(image, q)
    return out


def _colours(rng: np.random.Generator, palette: tuple[tuple[int, int, int], ...], m: int) -> np.ndarray:
    """(m, 1, 1, 3): a colour from `palette` for each image, jittered."""
    base = np.asarray(palette, np.float32)[rng.integers(0, len(palette), m)]
    jitter = rng.uniform(-COLOUR_JITTER, COLOUR_JITTER, (m, 3)).astype(np.float32)
    return (base + jitter).reshape(m, 1, 1, 3)


def _colour(crops: list[np.ndarray], cover: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    m = len(crops)
    paper, ink = _colours(rng, PAPERS, m), _colours(rng, INKS, m)
    return on_paper(cover, paper, ink)


def _chalkboard(crops: list[np.ndarray], cover: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # Light chalk on a dark board: the chalk's grain leaves gaps in the strokes, its dust a haze.
    m = len(crops)
    board = _colours(rng, BOARDS, m)
    chalk = np.asarray(CHALK, np.float32) - _each(rng, (0.0, 25.0), m)[..., None]
    grain = ndi.gaussian_filter(rng.random((m, SIDE, SIDE), dtype=np.float32), (0, 0.7, 0.7), truncate=2.0)
    grain = np.clip(0.75 + 0.25 * (grain - grain.mean()) / (grain.std() + 1e-6), 0.0, 1.0)
    # The dust is smooth: the product of two random curves across and down the board (levels at 6
    # points each, interpolated), up to 8 % of the way from board to chalk.
    across, down = (ndi.zoom(rng.random((m, 6), dtype=np.float32), (1, SIDE / 6), order=1) for _ in range(2))
    dust = 0.08 * down[:, :, None] * across[:, None, :]
    cover = np.clip(cover * grain + dust, 0.0, 1.0)
    return on_paper(cover, board, chalk)


RENDERERS: dict[str, Callable[[list[np.ndarray], np.random.Generator], np.ndarray]] = {
    "clean": _clean,
    "thin": _thin,
    "thick": _thick,
    "slant": _slant,
    "rotate": _rotate,
    "large": _large,
    "small": _small,
    "off_centre": _off_centre,
    "blur": _blur,
    "low_res": _low_res,
    "gradient": _gradient,
    "shadow": _shadow,
    "noise_jpeg": _noise_jpeg,
    "colour": _colour,
    "chalkboard": _chalkboard,
}
