"""Turn a person's image of a digit into an MNIST-like 28x28 array: for the CLI, REST API and web page.

MNIST was made in a particular way: white ink on black, the digit's bounding box scaled (keeping its
aspect ratio, anti-aliased) to fit 20x20 px, then placed in 28x28 with its centre of mass at the centre.
A photo, a scan or a canvas drawing is brought to the same form, top to bottom:

    load -> grey (transparent = white paper) -> ink bright -> threshold -> drop specks
         -> crop -> stroke width -> 20 px box -> centred 28x28
"""

from __future__ import annotations

import io
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError
from scipy import ndimage as ndi

from digitlab.errors import DigitlabError

MAX_PIXELS = 40_000_000  # decoded pixels (40 MP); more is refused as a decompression bomb
WORK_SIDE = 160  # px: long side the heavy steps run at (8x the 20 px box); larger images are shrunk first
MIN_CONTRAST = 24.0  # grey levels (0-255) between paper and strongest ink; less is a blank image
SPECK_FRACTION = 0.08  # ink components smaller than this fraction of the largest are specks
STRONG_INK = 90  # percentile of the thresholded ink made 255, so stroke cores saturate as in MNIST
SIDE = 28  # px, MNIST's image
BOX_SIDE = 20  # px, MNIST's digits are scaled so the long side of their bounding box is this
CENTRE = 14.0  # px (row, column index) where MNIST's centre of mass sits
DEBUG_PANEL = 140  # px, long side of each picture in the debug strip
# Stroke width, in output px once the digit's box is 20 px: ink area / (boundary px / 2) of the
# thresholded ink. MNIST's digits, enlarged and measured so, have median 2.6, 10th percentile 2.1
# and 99th 4.8. Strokes outside the band are dilated or eroded to its nearest edge: the mapping is
# continuous (a digit near an edge does not jump) and leaves most of MNIST as it is.
STROKE_BAND = (2.0, 4.8)


_OPEN_LOCK = threading.Lock()


class ImageError(DigitlabError):
    """An image cannot be read: missing, empty, not an image, truncated, too large or an unknown mode."""


@dataclass(frozen=True, eq=False)
class Preprocessed:
    """An image brought to MNIST's form, with what was done to it."""

    digit: np.ndarray  # (28, 28) uint8, ink 255 on black 0, as in MNIST
    has_ink: bool  # False for a blank image: digit is then all zeros
    inverted: bool  # True when the input was dark ink on light paper
    steps: tuple[tuple[str, np.ndarray], ...] = ()  # (caption, uint8 image) when debug=True


def load_image(source: str | os.PathLike | bytes | bytearray | memoryview) -> Image.Image:
    """Open and fully decode an image file or its bytes, turned upright as its EXIF orientation says.

    Every failure is an ImageError naming the source and what was wrong.
    """
    return _open(source, draft_side=None)


def preprocess(image, *, debug: bool = False) -> Preprocessed:
    """A path, bytes, PIL image or array (H x W grey, H x W x 3 or 4) -> MNIST-like Preprocessed."""
    steps: list[tuple[str, np.ndarray]] = []

    def record(caption: str, a: np.ndarray) -> None:
        if debug:
            steps.append((caption, _to_uint8(a)))

    grey = _grey(image)
    record("input grey", grey)
    ink, inverted = _ink_bright(grey)
    if ink is None:
        return Preprocessed(np.zeros((SIDE, SIDE), np.uint8), False, False, tuple(steps))
    record("ink bright", ink)

    mask, paper = _threshold(ink)
    record("threshold", mask)
    mask = _drop_specks(mask)
    record("specks removed", mask)
    if not mask.any():
        return Preprocessed(np.zeros((SIDE, SIDE), np.uint8), False, inverted, tuple(steps))

    soft, mask = _crop(*_ink_levels(ink, mask, paper))
    soft, _ = _crop(_normalise_stroke(soft, mask))
    record("cropped", soft * 255.0)

    box = _fit_box(soft)
    record("20px box", box * 255.0)
    digit = _centre(box)
    record("centred 28x28", digit)
    return Preprocessed(digit, True, inverted, tuple(steps))


def save_debug_strip(pre: Preprocessed, path: str | os.PathLike) -> Path:
    """Write the steps side by side, each captioned with its name and size, as a PNG; returns the path."""
    steps = pre.steps or (("centred 28x28", pre.digit),)
    font = ImageFont.load_default(size=12)
    panels = []
    for caption, a in steps:
        scale = DEBUG_PANEL / max(a.shape)
        size = (max(1, round(a.shape[1] * scale)), max(1, round(a.shape[0] * scale)))
        resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.BOX  # show pixels as squares
        lines = (caption, f"{a.shape[1]}x{a.shape[0]}")
        width = max([size[0]] + [round(font.getlength(t)) for t in lines])
        panels.append((Image.fromarray(a).resize(size, resample), lines, width))

    gap, text_height = 12, 36  # px
    total_width = sum(width for *_, width in panels) + gap * (len(panels) + 1)
    strip = Image.new("L", (total_width, text_height + DEBUG_PANEL + gap), 255)
    draw = ImageDraw.Draw(strip)
    x = gap
    for im, lines, width in panels:
        left, top = x + (width - im.width) // 2, text_height + (DEBUG_PANEL - im.height) // 2
        strip.paste(im, (left, top))
        # A grey frame, so that a black picture on the white strip still shows its extent.
        draw.rectangle((left - 1, top - 1, left + im.width, top + im.height), outline=160)
        for i, text in enumerate(lines):
            draw.text((x + width / 2, 4 + 15 * i), text, fill=0, font=font, anchor="mt")
        x += width + gap
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    strip.save(path, "PNG")
    return path


# --- loading ---------------------------------------------------------------------------------------


def _open(source, draft_side: int | None) -> Image.Image:
    """Open, check the size from the header, then decode (JPEG at a reduced size when draft_side is set)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        name = f"image bytes ({len(data)} bytes)"
        if not data:
            raise ImageError(f"{name}: empty, expected an image file's contents")
        fp = io.BytesIO(data)
    elif isinstance(source, (str, os.PathLike)):
        fp = Path(source)
        name = str(fp)
        if not fp.is_file():
            raise ImageError(f"{name}: no such file")
        if fp.stat().st_size == 0:
            raise ImageError(f"{name}: empty file, expected an image")
    else:
        raise TypeError(f"expected a path or bytes, got {type(source).__name__}")

    try:
        # Pillow warns above Image.MAX_IMAGE_PIXELS and refuses above twice that; both become ours,
        # scoped to this call so the process-wide limit is left alone. catch_warnings swaps the
        # process's filter list, so threads (the server's pool) take turns; open reads only the header.
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(fp)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{name}: too large, more than {MAX_PIXELS / 1e6:.0f} megapixels ({e})") from e
    except UnidentifiedImageError as e:
        raise ImageError(f"{name}: not an image (expected PNG, JPEG, BMP, GIF, WebP or TIFF)") from e
    except OSError as e:
        raise ImageError(f"{name}: cannot be read ({e})") from e

    try:
        width, height = img.size
        if width * height > MAX_PIXELS:  # from the header, before any pixel is decoded
            raise ImageError(
                f"{name}: too large, {width}x{height} = {width * height / 1e6:.0f} megapixels, "
                f"at most {MAX_PIXELS / 1e6:.0f} allowed"
            )
        if width == 0 or height == 0:
            raise ImageError(f"{name}: empty, {width}x{height} pixels")
        if draft_side is not None and img.format == "JPEG":
            img.draft(None, (draft_side, draft_side))  # decode at 1/2, 1/4 or 1/8 scale: much faster
        img.load()  # decodes now, so a truncated or corrupt file fails here
    except ImageError:
        img.close()
        raise
    except Exception as e:  # Pillow's decoders raise many types (OSError, SyntaxError, struct.error...)
        img.close()
        raise ImageError(f"{name}: truncated or corrupt {img.format or 'image'} ({e})") from e
    upright = _upright(img)
    if upright is not img:
        img.close()  # a turned copy was made; the original may still hold the file open
    return upright


def _grey(image) -> np.ndarray:
    """Any input -> float32 (H, W) grey 0-255 at most WORK_SIDE px long; transparency becomes paper."""
    if isinstance(image, (str, os.PathLike, bytes, bytearray, memoryview)):
        with _open(image, draft_side=WORK_SIDE) as img:  # closed here: GIF and TIFF keep their file open
            grey, alpha = _pil_grey_alpha(img)
    elif isinstance(image, Image.Image):
        grey, alpha = _pil_grey_alpha(image)
    elif isinstance(image, np.ndarray):
        grey, alpha = _array_grey_alpha(image)
    else:
        raise TypeError(f"expected a path, bytes, PIL image or numpy array, got {type(image).__name__}")
    if alpha is None:
        return grey
    on_white = grey * alpha + 255.0 * (1.0 - alpha)
    if np.ptp(on_white) < MIN_CONTRAST <= np.ptp(255.0 * alpha):
        return grey * alpha  # white ink on a transparent background: put it on black paper instead
    return on_white


def _upright(img: Image.Image) -> Image.Image:
    if img.getexif().get(ExifTags.Base.Orientation, 1) in (None, 1):
        return img  # exif_transpose would copy the image for nothing
    return ImageOps.exif_transpose(img)  # the tag is dropped from the copy, so this is done only once


def _pil_grey_alpha(img: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    img = _upright(img)  # a PIL image passed in directly may still carry its orientation
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        return _array_grey_alpha(np.asarray(img))
    try:
        if img.mode in ("LA", "La", "PA", "RGBA", "RGBa"):
            img = img.convert("LA")
        elif "transparency" in img.info:  # a palette index or a colour that marks transparent pixels
            img = img.convert("RGBA").convert("LA")
        elif img.mode in ("1", "P", "RGB"):
            img = img.convert("L")
        elif img.mode != "L":  # CMYK, YCbCr, LAB, HSV, RGBX
            img = img.convert("RGB").convert("L")
    except ValueError as e:
        expected = "grey, RGB, RGBA, palette or CMYK"
        raise ImageError(f"image mode {img.mode!r}: unsupported, expected {expected}") from e
    img = _shrink(img)
    if img.mode == "LA":
        a = np.asarray(img, dtype=np.float32)
        return a[..., 0], a[..., 1] / 255.0
    return np.asarray(img, dtype=np.float32), None


def _array_grey_alpha(a: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))) or min(a.shape[:2]) == 0:
        raise ImageError(f"array of shape {a.shape}: expected (H, W) grey or (H, W, 3 or 4) colour")
    if a.dtype == bool:
        scale = 255.0
    elif a.dtype.kind == "f":
        scale = 255.0 if np.nanmax(a) <= 1.0 else 1.0  # floats 0-1 or already 0-255
    elif a.dtype.kind in "iu":
        scale = 1.0 / 257.0 if a.max() > 255 else 1.0  # 16-bit (0-65535) or 8-bit levels
    else:
        raise ImageError(f"array of dtype {a.dtype}: expected bool, integers or floats")
    a = np.nan_to_num(a.astype(np.float32) * np.float32(scale))
    alpha = None
    if a.ndim == 3:
        if a.shape[2] == 4:
            alpha = np.clip(a[..., 3] / 255.0, 0.0, 1.0)
        a = a[..., 0] * 0.299 + a[..., 1] * 0.587 + a[..., 2] * 0.114  # ITU-R 601 luma, as Pillow's "L"
    grey = _shrink_array(a)
    return grey, (None if alpha is None else _shrink_array(alpha))


def _shrink(img: Image.Image) -> Image.Image:
    scale = WORK_SIDE / max(img.size)
    if scale >= 1.0:
        return img
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.BOX)  # area average; LA is premultiplied by Pillow


def _shrink_array(a: np.ndarray) -> np.ndarray:
    if max(a.shape) <= WORK_SIDE:
        return a
    return np.asarray(_shrink(Image.fromarray(a.astype(np.float32))), dtype=np.float32)


# --- ink -------------------------------------------------------------------------------------------


def _ink_bright(grey: np.ndarray) -> tuple[np.ndarray | None, bool]:
    """Make ink bright on dark paper; None when there is too little contrast to hold any ink."""
    lo, hi = float(grey.min()), float(grey.max())
    if hi - lo < MIN_CONTRAST:
        return None, False
    # Paper is what the border mostly shows: light paper lies nearer the brightest level than the darkest.
    inverted = bool(np.median(_border(grey)) > (lo + hi) / 2)
    return (255.0 - grey if inverted else grey), inverted


def _border(a: np.ndarray) -> np.ndarray:
    k = max(1, round(0.02 * min(a.shape)))  # a frame 2% of the short side wide
    return np.concatenate([a[:k].ravel(), a[-k:].ravel(), a[k:-k, :k].ravel(), a[k:-k, -k:].ravel()])


def _otsu(levels: np.ndarray) -> float:
    """Otsu's threshold on 0-255 levels: the one that maximises the variance between the two classes."""
    hist = np.bincount(np.clip(levels, 0, 255).astype(np.uint8).ravel(), minlength=256)
    p = hist / hist.sum()
    w0 = np.cumsum(p)  # weight of the class at or below each level
    mu0 = np.cumsum(p * np.arange(256))
    w1 = 1.0 - w0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = np.where((w0 > 0) & (w1 > 1e-12), (mu0[-1] * w0 - mu0) ** 2 / (w0 * w1), -1.0)
    return float(np.argmax(between)) + 0.5


def _threshold(ink: np.ndarray) -> tuple[np.ndarray, float]:
    """Ink mask by Otsu on the ink-bright image; also returns the paper level."""
    paper = float(np.median(_border(ink)))
    # Otsu can split the paper's own noise when the ink is a tiny fraction of the image; never go
    # that low: at least a quarter of the way from paper to the brightest ink.
    t = max(_otsu(ink), paper + 0.25 * (float(ink.max()) - paper))
    return ink > t, paper


def _drop_specks(mask: np.ndarray) -> np.ndarray:
    labels, n = ndi.label(mask, structure=np.ones((3, 3), bool))  # 8-connected: diagonal strokes hold
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    keep = sizes >= SPECK_FRACTION * sizes.max()
    keep[0] = False
    return keep[labels]


def _ink_levels(ink: np.ndarray, mask: np.ndarray, paper: float) -> tuple[np.ndarray, np.ndarray]:
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


def _crop(soft: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Both cut to the bounding box of the ink (soft > 0), which MNIST's 20 px box is fitted to."""
    rows, cols = np.flatnonzero((soft > 0).any(1)), np.flatnonzero((soft > 0).any(0))
    window = np.s_[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return soft[window], (None if mask is None else mask[window])


def _stroke_width(mask: np.ndarray) -> float:
    """Mean stroke width in px of a binary ink mask: area / (boundary px / 2); a 1 px line reads 2."""
    boundary = mask & ~ndi.binary_erosion(mask)
    return 2.0 * float(mask.sum()) / max(int(boundary.sum()), 1)


def _normalise_stroke(soft: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Dilate or erode strokes outside STROKE_BAND so that, once the box is 20 px, they are MNIST-like.

    With w the stroke width and L the box's long side (both in crop px), growing every stroke by r px
    on each side gives width w + 2r in a box L + 2r long, i.e. (w + 2r) * 20 / (L + 2r) output px;
    setting that to the target width T gives r = (T * L - 20 * w) / (2 * (20 - T)). Negative r erodes.
    """
    w, long_side = _stroke_width(mask), max(mask.shape)
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


# --- MNIST's box and centring ----------------------------------------------------------------------


def _fit_box(soft: np.ndarray) -> np.ndarray:
    """Scale so the long side is 20 px, keeping the aspect ratio; a thin "1" stays thin."""
    h, w = soft.shape
    scale = BOX_SIDE / max(h, w)
    size = (max(1, min(BOX_SIDE, round(w * scale))), max(1, min(BOX_SIDE, round(h * scale))))
    # Shrinking: Lanczos over the whole footprint anti-aliases; enlarging a tiny crop: bilinear, no ringing.
    resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BILINEAR
    box = np.asarray(Image.fromarray(soft.astype(np.float32)).resize(size, resample), dtype=np.float32)
    return np.clip(box, 0.0, 1.0)  # Lanczos overshoots a little at edges


def _centre(box: np.ndarray) -> np.ndarray:
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


def _to_uint8(a: np.ndarray) -> np.ndarray:
    """A picture of one step for the debug strip: bool masks become 0/255, levels are clipped to 0-255."""
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    return np.clip(np.round(a), 0, 255).astype(np.uint8)
