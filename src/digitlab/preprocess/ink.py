"""Finding the ink: which way round it is, the paper's uneven light, where the paper ends, and which
marks are specks.

This is the seam between opening an image and normalising one digit: `find_ink` returns the ink of the
whole image; one digit's ink goes to `normalize.normalize_digit` (segmenting a number into digits
splits it in between).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu

NO_INK = "no ink found in the image"
# ... on paper in uneven light (a shadow, a vignette), which can hide faint writing (docs/design/non-digits.md)
UNEVEN_LIGHT = f"{NO_INK}; the light is uneven: if something is written there, take the photo again without the shadow"
MIN_CONTRAST = 24.0  # grey levels (0-255) between paper and strongest ink; less is a blank image
# ... and between the paper and the median of what the threshold keeps as ink: less is the paper's texture
# (its grain stands 5-15 levels above it on photographed blank pages; people's digits 70 or more).
# What the threshold keeps as ink must stand out from the paper: the median of its levels at least this many
# times the spread of the paper's own levels (1.4826 x their median absolute deviation) above the paper.
# Below it, the "ink" is the paper's grain and noise: a blank page photographed (about 2x), not a pen's
# stroke (people's digits drawn as the wild set: 12x in the noisiest column, most far above).
MIN_INK_RATIO = 5.0
# On paper whose light was flattened (a shadow, a vignette), what is left of a shadow's edge mostly stands
# out from the paper's grain by 5-12x; the photographed numbers of the benchmark (dim light, noise, JPEG)
# by 13x or more, the wild set's digits in uneven light by 27x or more.
UNEVEN_INK_RATIO = 10.0
SPECK_FRACTION = 0.08  # ink components smaller than this fraction of the largest are specks
STRONG_INK = 90  # percentile of the thresholded ink made 255, so stroke cores saturate as in MNIST
# The paper's light is estimated by a grey opening (the ink removed, the paper kept) over a square this
# share of the image's short side: wider than any stroke of a digit that fills the image, narrower than
# a shadow. Paper whose estimate varies by less than FLAT_PAPER grey levels is left as it is.
PAPER_SCALE = 1 / 3
PAPER_SIDE = 40  # px: the paper's light is estimated on a copy about this short
FLAT_PAPER = 16.0
SHADOW = 0.45  # the darkest paper light a shadow gives, as a share of the lightest paper's grey level
SPECK_SIDE = 0.035  # ink components whose long side is under this share of the image's short side are dust
# What is left of a shadow once the paper is flattened is smooth: it rises from the paper over tens of
# pixels, where a pen's stroke rises over a few. On flattened paper, an ink component whose levels stand
# above a blur of the image (a Gaussian SMOOTH_SIGMA of the short side) by less than SMOOTH of their
# height above the paper is the paper's light, not ink. A shadow's rest keeps about 0.1 of its height, the
# strokes of the wild set's digits 0.2 or more (docs/design/non-digits.md).
SMOOTH = 0.15
SMOOTH_SIGMA = 1 / 16
SOLID_EDGE = 0.2  # ... unless its edge rises this share of its height per px: a solid mark's step
# ... and one that runs along the image's edge for at least this share of the frame (_border's) is a shadow
# cast over the page, sharp or soft: a pen's digit meets the edge at a stroke's width or not at all (the
# wild set's digits in uneven light cover 8 % of it at most), a hand's or a phone's shadow 15-50 %.
SHADOW_BORDER = 0.12
SMOOTH_SIDE = 96  # px: the blur is taken on a copy about this short


@dataclass(frozen=True, eq=False)
class Ink:
    """The ink of an image, bright on dark."""

    bright: np.ndarray  # float32 (H, W) 0-255: the grey image turned so that ink is bright, paper flattened
    mask: np.ndarray  # bool (H, W): thresholded ink, specks removed
    paper: float  # the paper's level in `bright`
    inverted: bool  # True when the input was dark ink on light paper
    threshold_mask: np.ndarray  # bool (H, W): the threshold before specks were removed (for the debug strip)
    paper_light: np.ndarray | None = None  # float32 (H, W): the paper's estimated level; None when it was flat


def find_ink(grey: np.ndarray) -> Ink | None:
    """The ink of a float32 grey image, or None when there is too little contrast to hold any.
    (`mask` may still be empty when the threshold keeps nothing.)"""
    bright, inverted = _ink_bright(grey)
    if bright is None:
        return None
    bright, paper_light = flatten_paper(bright)
    threshold_mask, paper = _threshold(bright)
    mask = _drop_specks(threshold_mask)
    if paper_light is not None and mask.any():
        mask = _drop_shadows(bright, mask, paper)
        if not mask.any():
            return None  # only the shadow's edge: a blank page in uneven light
    if mask.any() and _faint(bright, mask, paper, MIN_INK_RATIO if paper_light is None else UNEVEN_INK_RATIO):
        return None  # the paper's grain or texture, or a shadow's edge: a blank page
    return Ink(bright, mask, paper, inverted, threshold_mask, paper_light)


def blank_reason(grey: np.ndarray) -> str:
    """Why an image `find_ink` finds no ink in is blank: NO_INK, or UNEVEN_LIGHT when its paper is lit
    unevenly (flatten_paper has a shadow or a gradient to divide out), which may have hidden faint writing."""
    bright, _ = _ink_bright(np.asarray(grey, np.float32))
    return NO_INK if bright is None or flatten_paper(bright)[1] is None else UNEVEN_LIGHT


def flatten_paper(bright: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Divide out the paper's uneven light (a gradient, a shadow) from an ink-bright image.

    Light multiplies what the paper reflects, so in grey terms the flat image is grey / paper; with
    ink bright (b = 255 - grey) that is (b - p) / (255 - p) * 255, where p, the paper's level in b, is
    the grey opening of b: strokes narrower than the window vanish, the paper's shape stays. Returns
    the image unchanged, and None, when the paper is already flat."""
    # The paper's light is smooth: estimate it on a copy PAPER_SIDE px short, then bring it back.
    h, w = bright.shape
    factor = max(1, min(h, w) // PAPER_SIDE)
    small = bright if factor == 1 else _resize(bright, (max(1, w // factor), max(1, h // factor)), Image.Resampling.BOX)
    size = max(3, round(min(small.shape) * PAPER_SCALE))
    # An opening cuts a slope that rises towards the image's edge. Padding by odd reflection continues
    # such a slope past the edge; by even reflection, it mirrors ink near the edge as ink (odd would turn
    # it into a hole the opening keeps). The larger of the two does both.
    padded = np.maximum(np.pad(small, size, mode="reflect", reflect_type="odd"), np.pad(small, size, mode="reflect"))
    paper = ndi.grey_opening(padded, size=(size, size))[size:-size, size:-size]
    # A shadow dims the paper; ink is darker still. Where the estimate is darker than SHADOW of the
    # lightest paper, it is ink wider than the window (a filled block), not light: it is kept as ink.
    lightest = float(paper.min())
    paper = np.minimum(paper, lightest + (1.0 - SHADOW) * (255.0 - lightest))
    if factor > 1:
        paper = _resize(paper, (w, h), Image.Resampling.BILINEAR)
    if float(paper.max() - paper.min()) < FLAT_PAPER:
        return bright, None
    flat = (bright - paper) * (255.0 / np.maximum(255.0 - paper, 1.0))
    return np.clip(flat, 0.0, 255.0).astype(np.float32), paper


def _resize(a: np.ndarray, size: tuple[int, int], resample) -> np.ndarray:
    """A float32 array resized to (width, height)."""
    return np.asarray(Image.fromarray(a.astype(np.float32)).resize(size, resample), dtype=np.float32)


def _ink_bright(grey: np.ndarray) -> tuple[np.ndarray | None, bool]:
    """Make ink bright on dark paper; None when there is too little contrast to hold any ink."""
    lo, hi = float(grey.min()), float(grey.max())
    if hi - lo < MIN_CONTRAST:
        return None, False
    # Paper is what the border mostly shows: light paper lies nearer the brightest level than the darkest.
    inverted = bool(np.median(_border(grey)) > (lo + hi) / 2)
    return (255.0 - grey if inverted else grey), inverted


def _border(a: np.ndarray) -> np.ndarray:
    return a[_frame(a.shape)]


def _frame(shape: tuple[int, int]) -> np.ndarray:
    """bool (H, W): a frame 2 % of the short side wide along the image's edges."""
    k = max(1, round(0.02 * min(shape)))
    frame = np.zeros(shape, bool)
    frame[:k], frame[-k:], frame[:, :k], frame[:, -k:] = True, True, True, True
    return frame


def _otsu(levels: np.ndarray) -> float:
    """Otsu's threshold on 0-255 levels, from their 256-bin histogram."""
    hist = np.bincount(np.clip(levels, 0, 255).astype(np.uint8).ravel(), minlength=256)
    return float(threshold_otsu(hist=(hist, np.arange(256)))) + 0.5


def _threshold(ink: np.ndarray) -> tuple[np.ndarray, float]:
    """Ink mask by Otsu on the ink-bright image; also returns the paper level."""
    paper = float(np.median(_border(ink)))
    # Otsu can split the paper's own noise when the ink is a tiny fraction of the image; never go
    # that low: at least a quarter of the way from paper to the brightest ink.
    t = max(_otsu(ink), paper + 0.25 * (float(ink.max()) - paper))
    return ink > t, paper


def _faint(bright: np.ndarray, mask: np.ndarray, paper: float, ratio: float) -> bool:
    """Whether the ink kept stands above the paper by less than MIN_CONTRAST grey levels, or by less than
    `ratio` times the spread of the paper's own grain (its median in either case)."""
    rest = bright[~mask]
    spread = 1.4826 * float(np.median(np.abs(rest - np.median(rest)))) if rest.size else 0.0
    height = float(np.median(bright[mask])) - paper
    return height < MIN_CONTRAST or height < ratio * spread


def _drop_specks(mask: np.ndarray) -> np.ndarray:
    """Drop components small beside the largest (SPECK_FRACTION of its area), and dust (SPECK_SIDE):
    paper noise or JPEG blocks thresholded on a blank page leave only dust, so nothing."""
    labels, n = ndi.label(mask, structure=np.ones((3, 3), bool))  # 8-connected: diagonal strokes hold
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    extents = np.array([0] + [max(r.stop - r.start, c.stop - c.start) for r, c in ndi.find_objects(labels)])
    keep = (sizes >= SPECK_FRACTION * sizes.max()) & (extents >= SPECK_SIDE * min(mask.shape))
    keep[0] = False
    return keep[labels]


def _drop_shadows(bright: np.ndarray, mask: np.ndarray, paper: float) -> np.ndarray:
    """Drop the ink components that are the smooth rest of a shadow (SMOOTH), not a pen's strokes, and those
    that run along the image's edge (SHADOW_BORDER): a shadow's edge, however sharp."""
    h, w = bright.shape
    factor = max(1, min(h, w) // SMOOTH_SIDE)
    if factor > 1:
        small = _resize(bright, (max(1, w // factor), max(1, h // factor)), Image.Resampling.BOX)
        blur = _resize(ndi.gaussian_filter(small, SMOOTH_SIGMA * min(small.shape)), (w, h), Image.Resampling.BILINEAR)
    else:
        blur = ndi.gaussian_filter(bright, SMOOTH_SIGMA * min(h, w))
    labels, n = ndi.label(mask, structure=np.ones((3, 3), bool))
    index = np.arange(1, n + 1)
    height = np.asarray(ndi.median(bright, labels, index)) - paper
    sharp = np.asarray(ndi.median(bright - blur, labels, index))
    # A solid mark (a filled block) is as smooth inside, but its edge is a step, not a slope: it stays.
    slope = ndi.gaussian_gradient_magnitude(bright, 1.0)
    edge = mask & ~ndi.binary_erosion(mask)
    step = np.asarray(ndi.labeled_comprehension(slope, labels * edge, index, lambda v: np.percentile(v, 90), float, 0))
    frame = _frame(mask.shape)
    along = np.asarray(ndi.sum(frame, labels, index)) / frame.sum()
    keep = np.r_[False, ((sharp >= SMOOTH * height) | (step >= SOLID_EDGE * height)) & (along < SHADOW_BORDER)]
    return keep[labels]


def ink_levels(ink: np.ndarray, mask: np.ndarray, paper: float) -> tuple[np.ndarray, np.ndarray]:
    """Ink 0-1 with its anti-aliased edge kept (paper 0, strong ink 1, zero away from the kept strokes),
    and the mask, both cut to the ink's bounding box plus 1 px."""
    strong = float(np.percentile(ink[mask], STRONG_INK))
    # Only the mask's bounding box plus a 1 px edge can be kept: work on that window, not the whole image.
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    window = np.s_[max(rows[0] - 1, 0) : rows[-1] + 2, max(cols[0] - 1, 0) : cols[-1] + 2]
    ink, mask = ink[window], mask[window]
    soft = np.clip((ink - paper) / max(strong - paper, 1e-6), 0.0, 1.0)
    near = ndi.binary_dilation(mask, structure=np.ones((3, 3), bool))  # mask plus a 1 px edge
    return np.where(near, soft, 0.0).astype(np.float32), mask
