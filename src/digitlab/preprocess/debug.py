"""The debug strip: every step of `preprocess` side by side, to see what the model was given."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from digitlab import atomic

DEBUG_PANEL = 140  # px, long side of each picture in the debug strip
ANSWER_BAND = 24  # px, the line under the pictures that says what the model answered


def save_debug_strip(pre, path: str | os.PathLike, answer: str | None = None) -> Path:
    """Write the steps side by side, each captioned with its name and size, as a PNG, with `answer` (what
    was answered for the image, e.g. "answer: 7 (0.991)") on a line beneath; returns the path."""
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
    band = ANSWER_BAND if answer else 0
    total_width = sum(width for *_, width in panels) + gap * (len(panels) + 1)
    if answer:
        total_width = max(total_width, round(ImageFont.load_default(size=14).getlength(answer)) + 2 * gap)
    strip = Image.new("L", (total_width, text_height + DEBUG_PANEL + gap + band), 255)
    draw = ImageDraw.Draw(strip)
    if answer:
        draw.text((gap, text_height + DEBUG_PANEL + gap), answer, fill=0, font=ImageFont.load_default(size=14))
    x = gap
    for im, lines, width in panels:
        left, top = x + (width - im.width) // 2, text_height + (DEBUG_PANEL - im.height) // 2
        strip.paste(im, (left, top))
        # A grey frame, so that a black picture on the white strip still shows its extent.
        draw.rectangle((left - 1, top - 1, left + im.width, top + im.height), outline=160)
        for i, text in enumerate(lines):
            draw.text((x + width / 2, 4 + 15 * i), text, fill=0, font=font, anchor="mt")
        x += width + gap
    with atomic.replacing(path) as tmp:
        strip.save(tmp, "PNG")
    return Path(path)


def to_uint8(a: np.ndarray) -> np.ndarray:
    """A picture of one step for the debug strip: bool masks become 0/255, levels are clipped to 0-255."""
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    return np.clip(np.round(a), 0, 255).astype(np.uint8)
