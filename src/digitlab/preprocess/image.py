"""Opening a person's image safely: any size, mode and orientation -> float32 grey 0-255."""

from __future__ import annotations

import contextlib
import io
import os
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageMode, ImageOps, UnidentifiedImageError

from digitlab.errors import DigitlabError
from digitlab.preprocess.ink import MIN_CONTRAST

# The formats digitlab opens; Pillow's other plugins are never reached (its EPS plugin runs Ghostscript).
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")
FORMATS_TEXT = "PNG, JPEG, BMP, GIF, WebP or TIFF"
MAX_PIXELS = 40_000_000  # decoded pixels (40 MP); more is refused as a decompression bomb
# Bytes an image may take decoded (40 MB), counting the copies made before it is shrunk (decoded_bytes):
# a 40 MP grey image, 20 MP at 16 bits, 10 MP in colour, 5 MP with alpha; a JPEG counts at its draft size.
MAX_DECODED_BYTES = 40_000_000
WORK_SIDE = 160  # px: long side the heavy steps run at (8x the 20 px box); larger images are shrunk first

_OPEN_LOCK = threading.Lock()


class ImageError(DigitlabError):
    """An image cannot be read: missing, empty, not an image, truncated, too large or an unknown mode."""


def load_image(source: str | os.PathLike | bytes | bytearray | memoryview) -> Image.Image:
    """Open and fully decode an image file or its bytes, turned upright as its EXIF orientation says.

    Every failure is an ImageError naming the source and what was wrong.
    """
    return _open(source, draft_side=None)


def _open(source, draft_side: int | None) -> Image.Image:
    """Open, check the size from the header, then decode (JPEG at a reduced size when draft_side is set)."""
    name = _name(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise ImageError(f"{name}: empty, expected an image file's contents")
        fp = io.BytesIO(data)
    elif isinstance(source, (str, os.PathLike)):
        fp = Path(source)
        try:
            if fp.is_dir():
                raise ImageError(f"{name}: is a folder, expected an image file")
            if not fp.is_file():
                raise ImageError(f"{name}: no such file")
            if fp.stat().st_size == 0:
                raise ImageError(f"{name}: empty file, expected an image")
        except OSError as e:  # a folder on the way that may not be read, a name too long
            raise ImageError(f"{name}: cannot be read ({e.strerror or e})") from None
    else:
        raise TypeError(f"expected a path or bytes, got {type(source).__name__}")

    try:
        # Pillow warns above Image.MAX_IMAGE_PIXELS and refuses above twice that; both become ours,
        # scoped to this call so the process-wide limit is left alone. catch_warnings swaps the
        # process's filter list, so threads (the server's pool) take turns; open reads only the header.
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(fp, formats=FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{name}: too large, more than {MAX_PIXELS / 1e6:.0f} megapixels ({e})") from e
    except UnidentifiedImageError as e:
        other = _foreign_format(fp)
        what = f"{other} is not a supported format" if other else "not an image"
        raise ImageError(f"{name}: {what} (expected {FORMATS_TEXT})") from e
    except OSError as e:
        raise ImageError(f"{name}: cannot be read ({e})") from e
    except Exception as e:  # a plugin's own refusal while reading the header, e.g. Pillow's ValueError for a
        # compressed text or colour-profile chunk that inflates past its MAX_TEXT_CHUNK
        raise ImageError(f"{name}: cannot be read ({type(e).__name__}: {_one_line(e)})") from e

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
        _check_cost(img, name, loaded=False)  # still from the header (and the draft size): nothing decoded yet
        img.load()  # decodes now, so a truncated or corrupt file fails here
        _check_cost(img, name, loaded=True)  # a PNG's EXIF after its pixels is known only now: before turning
        upright = _upright(img)
    except ImageError:
        img.close()
        raise
    except Exception as e:  # Pillow's decoders raise many types (OSError, SyntaxError, struct.error...)
        img.close()
        raise ImageError(f"{name}: truncated or corrupt {img.format or 'image'} ({_one_line(e)})") from e
    if upright is not img:
        img.close()  # a turned copy was made; the original may still hold the file open
    return upright


def _name(source) -> str:
    """How errors name an image: its path, or its bytes' size."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"image bytes ({len(source)} bytes)"
    return str(Path(source)) if isinstance(source, (str, os.PathLike)) else type(source).__name__


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _check_cost(img: Image.Image, name: str, *, loaded: bool) -> None:
    cost = decoded_bytes(img)
    turned = _turned_bytes(img, loaded)
    if cost + turned > MAX_DECODED_BYTES:
        how = f" and turned upright ({turned / 1e6:.0f} MB more)" if turned else ""
        raise ImageError(
            f"{name}: too large to decode, {img.width}x{img.height} in mode {img.mode!r}{how} takes "
            f"{(cost + turned) / 1e6:.0f} MB, at most {MAX_DECODED_BYTES / 1e6:.0f} MB allowed"
        )


def _turned_bytes(img: Image.Image, loaded: bool) -> int:
    """Bytes of the copy _upright makes of an image its EXIF orientation turns or flips (0 if none). A PNG
    whose EXIF follows its pixels tells only once decoded (Pillow would decode it to look)."""
    if not loaded and img.format == "PNG" and "exif" not in img.info:
        return 0
    if img.getexif().get(ExifTags.Base.Orientation, 1) in (None, 1):
        return 0
    return img.width * img.height * _bytes_per_pixel(img.mode)


def _bytes_per_pixel(mode: str) -> int:
    """Bytes Pillow stores a pixel of `mode` in: 4 for every mode of several bands (RGB too), else the
    band's size ('1', 'L' and 'P' 1, 'I;16' 2, 'I' and 'F' 4)."""
    desc = ImageMode.getmode(mode)
    return 4 if len(desc.bands) > 1 else np.dtype(desc.typestr).itemsize


def decoded_bytes(img: Image.Image) -> int:
    """Bytes `img` takes once decoded, with the full-size copies made before it is shrunk: the one in the
    mode it is shrunk in (_shrink_mode), and the one with alpha premultiplied that Pillow's resize makes."""
    mode = _shrink_mode(img)
    per_pixel = _bytes_per_pixel(img.mode)
    if mode != img.mode:
        per_pixel += _bytes_per_pixel(mode)
    if mode in ("LA", "RGBA"):
        per_pixel += _bytes_per_pixel(mode)
    return img.width * img.height * per_pixel


def _foreign_format(fp) -> str | None:
    """The name of another format Pillow knows whose magic number the file starts with: only the plugins'
    `accept` checks of the first bytes run, never a decoder."""
    if isinstance(fp, Path):
        with open(fp, "rb") as f:
            prefix = f.read(32)
    else:
        fp.seek(0)
        prefix = fp.read(32)
    Image.init()
    for fmt in Image.ID:
        accept = Image.OPEN[fmt][1]
        if fmt not in FORMATS and accept is not None:
            with contextlib.suppress(Exception):
                if accept(prefix):
                    return fmt
    return None


def to_grey(image) -> np.ndarray:
    """Any input -> float32 (H, W) grey 0-255 at most WORK_SIDE px long; transparency becomes paper."""
    if isinstance(image, (str, os.PathLike, bytes, bytearray, memoryview)):
        with _open(image, draft_side=WORK_SIDE) as img:  # closed here: GIF and TIFF keep their file open
            try:
                grey, alpha = _pil_grey_alpha(img)
            except ImageError as e:
                raise ImageError(f"{_name(image)}: {e}") from None
            except Exception as e:  # a decoder that fails only when the pixels are converted: this image's error
                raise ImageError(f"{_name(image)}: cannot be read ({type(e).__name__}: {_one_line(e)})") from e
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


def _shrink_mode(img: Image.Image) -> str:
    """The mode an image is area-averaged in: its own, except '1' and 'P' (which Pillow would resize by
    picking pixels) and a colour that marks transparent pixels (which averaging would lose)."""
    if "transparency" in img.info and img.mode in ("1", "L", "P", "RGB"):
        return "LA"  # Pillow applies the transparent index or colour when converting
    if img.mode in ("1", "P"):
        return "L"
    return img.mode


def _pil_grey_alpha(img: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    img = _upright(img)  # a PIL image passed in directly may still carry its orientation
    try:
        if _shrink_mode(img) != img.mode:
            img = img.convert(_shrink_mode(img))
        # Shrunk first, at the image's own depth: every copy below is at most WORK_SIDE px long.
        img = _shrink(img)
        if img.mode in ("I", "F") or img.mode.startswith("I;16"):
            return _array_grey_alpha(np.asarray(img))
        if img.mode in ("LA", "La", "PA", "RGBA", "RGBa"):
            img = img.convert("LA")
        elif img.mode == "RGB":
            img = img.convert("L")
        elif img.mode != "L":  # CMYK, YCbCr, LAB, HSV, RGBX
            img = img.convert("RGB").convert("L")
    except ValueError as e:
        expected = "grey, RGB, RGBA, palette or CMYK"
        raise ImageError(f"image mode {img.mode!r}: unsupported, expected {expected}") from e
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
