"""One digit's ink made the way MNIST's digits were: stroke width in MNIST's band, the bounding box
scaled to 20 px keeping the aspect ratio, placed in 28x28 with the centre of mass at the centre."""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

from digitlab.preprocess.marks import stroke_width

SIDE = 28  # px, MNIST's image
BOX_SIDE = 20  # px, MNIST's digits are scaled so the long side of their bounding box is this
CENTRE = 14.0  # px (row, column index) where MNIST's centre of mass sits
# Stroke width, in output px once the digit's box is 20 px: ink area / (boundary px / 2) of the
# thresholded ink. MNIST's digits, enlarged and measured so, have median 2.6, 10th percentile 2.1
# and 99th 4.8. Strokes outside the band are dilated or eroded to its nearest edge: the mapping is
# continuous (a digit near an edge does not jump) and leaves most of MNIST as it is.
STROKE_BAND = (2.0, 4.8)


def normalize_digit(soft: np.ndarray, mask: np.ndarray, record=None) -> np.ndarray:
    """Ink levels 0-1 and the ink mask of one digit -> (28, 28) uint8, ink 255 on black, as in MNIST.
    `record(caption, image)`, if given, is called with the intermediate pictures."""
    soft, mask = crop(soft, mask)
    soft, _ = crop(normalise_stroke(soft, mask))
    if record:
        record("cropped", soft * 255.0)
    box = fit_box(soft)
    if record:
        record("20px box", box * 255.0)
    return centre(box)


def crop(soft: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Both cut to the bounding box of the ink (soft > 0), which MNIST's 20 px box is fitted to."""
    rows, cols = np.flatnonzero((soft > 0).any(1)), np.flatnonzero((soft > 0).any(0))
    window = np.s_[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return soft[window], (None if mask is None else mask[window])


def normalise_stroke(soft: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Dilate or erode strokes outside STROKE_BAND so that, once the box is 20 px, they are MNIST-like.

    With w the stroke width and L the box's long side (both in crop px), growing every stroke by r px
    on each side gives width w + 2r in a box L + 2r long, i.e. (w + 2r) * 20 / (L + 2r) output px;
    setting that to the target width T gives r = (T * L - 20 * w) / (2 * (20 - T)). Negative r erodes.
    """
    w, long_side = stroke_width(mask), max(mask.shape)
    width_out = w * BOX_SIDE / long_side
    if STROKE_BAND[0] <= width_out <= STROKE_BAND[1]:
        return soft
    target = min(max(width_out, STROKE_BAND[0]), STROKE_BAND[1])
    r = (target * long_side - BOX_SIDE * w) / (2 * (BOX_SIDE - target))
    if r > 0:
        pad = int(np.ceil(r)) + 1
        mask = np.pad(mask, pad)
        outside = ndi.distance_transform_edt(~mask)  # px from each paper pixel to the nearest ink
        return np.maximum(np.pad(soft, pad), np.clip(r + 1.0 - outside, 0.0, 1.0)).astype(np.float32)
    inside = ndi.distance_transform_edt(mask)  # px from each ink pixel to the nearest paper
    eroded = soft * np.clip(inside + r, 0.0, 1.0)
    return eroded.astype(np.float32) if eroded.any() else soft


def fit_box(soft: np.ndarray) -> np.ndarray:
    """Scale so the long side is 20 px, keeping the aspect ratio; a thin "1" stays thin."""
    h, w = soft.shape
    scale = BOX_SIDE / max(h, w)
    size = (max(1, min(BOX_SIDE, round(w * scale))), max(1, min(BOX_SIDE, round(h * scale))))
    # Shrinking: Lanczos over the whole footprint anti-aliases; enlarging a tiny crop: bilinear, no ringing.
    resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BILINEAR
    box = np.asarray(Image.fromarray(soft.astype(np.float32)).resize(size, resample), dtype=np.float32)
    return np.clip(box, 0.0, 1.0)  # Lanczos overshoots a little at edges


def centre(box: np.ndarray) -> np.ndarray:
    """Place in 28x28 so the centre of mass is at (14, 14), rounded to whole px; stretch to 0-255."""
    total = float(box.sum())
    h, w = box.shape
    if total <= 0:
        cy, cx = (h - 1) / 2, (w - 1) / 2
    else:
        cy = float((box.sum(1) * np.arange(h)).sum()) / total
        cx = float((box.sum(0) * np.arange(w)).sum()) / total
    top = min(max(int(np.floor(CENTRE - cy + 0.5)), 0), SIDE - h)  # keep the whole box in the frame
    left = min(max(int(np.floor(CENTRE - cx + 0.5)), 0), SIDE - w)
    out = np.zeros((SIDE, SIDE), np.float32)
    out[top : top + h, left : left + w] = box
    peak = float(out.max())
    return np.round(out * (255.0 / peak)).astype(np.uint8) if peak > 0 else out.astype(np.uint8)
