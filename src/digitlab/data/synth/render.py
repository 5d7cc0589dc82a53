"""Ink on paper: the one renderer the synthetic generators draw with. Deterministic: the generators draw
their own random parameters and pass them in, so each keeps its random stream.

A *cover* is how much ink each pixel holds, 0 (paper) to 1 (full ink), float32.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def to_uint8(a: np.ndarray) -> np.ndarray:
    """Grey levels -> uint8, rounded and clipped; a float32 `a` is overwritten on the way (a temporary)."""
    a = a if a.dtype == np.float32 else a.astype(np.float32)
    np.rint(a, out=a)
    np.clip(a, 0, 255, out=a)
    return a.astype(np.uint8)


def on_paper(cover: np.ndarray, paper: float | np.ndarray = 255.0, ink: float | np.ndarray = 0.0) -> np.ndarray:
    """A cover under even light -> uint8 grey images, or colour ones with (m, 1, 1, 3) paper and ink."""
    if np.ndim(paper) == 4:  # channel by channel: each a contiguous (m, H, W) pass
        return np.stack([on_paper(cover, paper[..., k], ink[..., k]) for k in range(3)], axis=-1)
    grey = cover * np.asarray(ink - paper, np.float32)
    grey += np.asarray(paper, np.float32)
    return to_uint8(grey)


def lit(cover: np.ndarray, light: float | np.ndarray, reflectance: float | np.ndarray) -> np.ndarray:
    """A cover under uneven `light` (the paper's grey level at each pixel) -> float grey levels: the paper
    sends back all of its light, full ink the share `reflectance` of it."""
    return light * (1.0 - cover * (1.0 - reflectance))


def jpeg(grey: np.ndarray, quality: int) -> np.ndarray:
    """A uint8 grey image saved as a JPEG of Pillow's `quality` and read back."""
    buffer = io.BytesIO()
    Image.fromarray(grey).save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    return np.asarray(Image.open(buffer).convert("L"))
