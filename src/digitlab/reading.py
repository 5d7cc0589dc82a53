"""Reading a whole number: `read(run_or_predictor, image) -> Reading`, for the CLI, the REST API and the page.

    to_grey -> find_ink                                  the whole image, as `preprocess` does
            -> segment: lines, candidates, cuts          preprocess/segment.py
            -> normalize_digit, batched classify         the same steps as one digit; the run's calibration
                                                         and unsure rule: the wholes (and the cuts of those
                                                         too wide) in one call, the cuts of unsure ones next
            -> per candidate: whole or cut, by the classifier's combined probability

A single digit goes through exactly the steps `preprocess` takes, so it reads as `predict` reads it.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from digitlab import atomic, line_reading
from digitlab.errors import DigitlabError
from digitlab.predict import Predictor, classify, expand_paths, load_predictor
from digitlab.preprocess.image import FORMATS, to_grey
from digitlab.preprocess.ink import find_ink, ink_levels
from digitlab.preprocess.normalize import SIDE, normalize_digit
from digitlab.preprocess.segment import Segmentation, piece_mask, segment

# How a candidate's segmentations are scored, in log-probability: the sum over its digits of the log of
# each one's calibrated confidence, CUT_PENALTY per digit a cut adds, and WIDE_PENALTY per line height
# by which a digit is wider than WIDE_FROM line heights (the model is often sure of two digits squeezed
# into one box). A candidate the model reads surely (not unsure) and no wider than WIDE_FROM is kept
# whole: one digit stays as `predict` reads it. Chosen on numbers composed from validation digits, never
# test ones (`bench/read_numbers.py --tune`; the figures in docs/design/reading.md).
CUT_PENALTY = -1.2
WIDE_PENALTY = -4.0
WIDE_FROM = 1.1
# Two segmentations of a candidate whose combined log-probabilities lie within this are "ambiguous": the
# factor of those tried with the most accurate accepted validation numbers.
AMBIGUOUS = math.log(2.0)


@dataclass(frozen=True)
class Scoring:
    """The constants above, together, so that `bench/read_numbers.py --tune` can try others."""

    cut_penalty: float = CUT_PENALTY
    wide_penalty: float = WIDE_PENALTY
    wide_from: float = WIDE_FROM
    ambiguous: float = AMBIGUOUS


SCORING = Scoring()
NO_INK = "no ink found in the image"


@dataclass(frozen=True)
class ReadDigit:
    digit: int  # the most likely class index, even when unsure
    label: str  # its class name
    confidence: float  # calibrated probability of that class
    box: tuple[int, int, int, int]  # (x0, y0, x1, y1) in px of the input image, ends exclusive
    line: int  # 0-based line, top to bottom
    unsure: bool
    reason: str | None


@dataclass(frozen=True, eq=False)
class Reading:
    """What `read` saw. `confidence` is the product of the digits' calibrated confidences: the
    probability that every digit is right if their errors were independent, with the segmentation
    taken as right."""

    text: str | None  # the best reading, lines joined by "\\n"; None when there is no ink
    lines: tuple[str, ...]
    confidence: float | None  # None when there is no ink
    unsure: bool  # any digit unsure, the segmentation ambiguous, or no ink
    reason: str | None  # why unsure
    digits: tuple[ReadDigit, ...]
    crops: np.ndarray  # (len(digits), 28, 28) uint8: what the model was given for each digit
    size: tuple[int, int]  # (width, height) of the input image, in which the boxes are measured

    def to_dict(self) -> dict:
        """The JSON form (without the crops)."""
        return {
            "text": self.text,
            "lines": list(self.lines),
            "confidence": self.confidence,
            "unsure": self.unsure,
            "reason": self.reason,
            "digits": [
                {"digit": d.digit, "confidence": d.confidence, "box": list(d.box), "line": d.line, "unsure": d.unsure}
                for d in self.digits
            ],
        }


def read(
    run_or_predictor: Predictor | str | os.PathLike, image, scoring: Scoring = SCORING, method: str | None = None
) -> Reading:
    """Read the number in an image (a path, bytes, PIL image or array, as `preprocess` takes): its lines
    and digits, each with a calibrated confidence. Every candidate goes to the model in one call, and the
    cuts of those read unsurely in a second.
    `method` "segment" or "line" (a line model's run, digitlab.line_reading); None: the run's own."""
    predictor = run_or_predictor
    if not isinstance(predictor, Predictor):
        predictor = load_predictor(Path(run_or_predictor))
    if line_reading.choose_method(predictor, method) == "line":
        grey = to_grey(image)
        fields = line_reading.read_lines(predictor, grey, _input_size(image))  # after to_grey has checked it
        return Reading(**{**fields, "digits": tuple(ReadDigit(**d) for d in fields["digits"])})
    return decide(hypotheses(predictor, image, scoring), scoring)


@dataclass(frozen=True, eq=False)
class Hypotheses:
    """What `read` asks the model, before any segmentation is chosen: the candidates and cuts, and the
    model's answer and crop for each piece asked. `decide` turns it into a Reading under a Scoring."""

    size: tuple[int, int]  # (width, height) of the input image
    scale: tuple[float, float]  # input px per working px, (x, y)
    seg: Segmentation | None  # None when there is no ink
    results: dict  # Piece -> the classify row
    crops: dict  # Piece -> (28, 28) uint8
    scoring: Scoring | None = None  # the pieces asked are those `decide` needs under it; None: all of them


def hypotheses(predictor: Predictor, image, scoring: Scoring | None = None) -> Hypotheses:
    """Segment the image and classify its pieces. With `scoring`, only those `decide` can use under it:
    every whole candidate and the cuts' parts of a candidate too wide for one digit, in one call, then
    the cuts' parts of the candidates the model read unsurely, in a second call when there are any. None:
    every part of every cut too, in one call, so that any Scoring can decide (the tuner's)."""
    grey = to_grey(image)
    size = _input_size(image)  # after to_grey, which has checked the file
    scale = (size[0] / grey.shape[1], size[1] / grey.shape[0])
    ink = find_ink(grey)
    if ink is None or not ink.mask.any():
        return Hypotheses(size, scale, None, {}, {}, scoring)
    seg = segment(ink.mask)
    candidates = [(c, seg.line_heights[k]) for k, line in enumerate(seg.lines) for c in line]
    results: dict = {}  # Piece -> classify row
    crops: dict = {}  # Piece -> its 28x28 crop
    if scoring is None:
        _ask(predictor, ink, seg, [p for c, _ in candidates for p in (c.whole, *_parts(c))], results, crops)
    else:
        first = [p for c, h in candidates for p in (c.whole, *(_parts(c) if _too_wide(c, h, scoring) else ()))]
        _ask(predictor, ink, seg, first, results, crops)
        cut = [p for c, h in candidates if _cut(c, h, results, scoring) for p in _parts(c)]
        _ask(predictor, ink, seg, cut, results, crops)  # nothing left to ask when every whole is sure
    return Hypotheses(size, scale, seg, results, crops, scoring)


def _ask(predictor: Predictor, ink, seg: Segmentation, pieces: list, results: dict, crops: dict) -> None:
    """Normalise the pieces not asked yet, each once, and classify them in one call into results, crops."""
    pieces = [p for p in dict.fromkeys(pieces) if p not in results]
    if not pieces:
        return
    batch = np.stack([_normalise(ink, seg, p) for p in pieces])
    results.update(zip(pieces, classify(predictor, batch, [True] * len(pieces))))
    crops.update(zip(pieces, batch))


def _too_wide(candidate, height: float, scoring: Scoring) -> bool:
    return candidate.whole.width > scoring.wide_from * height


def _cut(candidate, height: float, results: dict, scoring: Scoring) -> bool:
    """Whether `decide` weighs the candidate's cuts: the model read it unsurely, or it is too wide."""
    return results[candidate.whole]["unsure"] or _too_wide(candidate, height, scoring)


def decide(h: Hypotheses, scoring: Scoring = SCORING) -> Reading:
    """Per candidate, whole or cut by the combined score; the reading with its reasons."""
    if h.scoring is not None and h.scoring.wide_from != scoring.wide_from:
        raise ValueError(f"decide: {scoring} needs every piece asked, hypotheses(..., scoring=None)")
    if h.seg is None:
        return Reading(None, (), None, True, NO_INK, (), np.zeros((0, SIDE, SIDE), np.uint8), h.size)
    seg, results = h.seg, h.results
    digits, crops_kept, lines, reasons = [], [], [], []
    sx, sy = h.scale
    for k, line in enumerate(seg.lines):
        text = ""
        for candidate in line:
            height = seg.line_heights[k]
            options = [(candidate.whole,)]
            if _cut(candidate, height, results, scoring):
                options += candidate.cuts
            scores = [
                score([results[p]["confidence"] for p in parts], [p.width / height for p in parts], scoring)
                for parts in options
            ]
            order = np.argsort(scores)[::-1]
            best = options[order[0]]
            first = len(digits) + 1
            for p in best:
                r = results[p]
                top = r["top3"][0]
                x0, y0, x1, y1 = p.box
                box = (math.floor(x0 * sx), math.floor(y0 * sy), math.ceil(x1 * sx), math.ceil(y1 * sy))
                digits.append(ReadDigit(top["digit"], top["label"], r["confidence"], box, k, r["unsure"], r["reason"]))
                crops_kept.append(h.crops[p])
                text += top["label"]
                if r["unsure"]:
                    reasons.append(f"digit {len(digits)}: {r['reason']}")
            if len(order) > 1 and scores[order[0]] - scores[order[1]] < scoring.ambiguous:
                other = options[order[1]]
                where = f"digit {first}" if len(best) == 1 else f"digits {first}-{first + len(best) - 1}"
                reasons.append(
                    f"{where}: segmentation ambiguous, read as {len(best)} digit(s) "
                    f"({math.exp(scores[order[0]]):.3f}) or {len(other)} ({math.exp(scores[order[1]]):.3f})"
                )
        lines.append(text)
    confidence = float(np.prod([d.confidence for d in digits]))
    return Reading(
        text="\n".join(lines),
        lines=tuple(lines),
        confidence=confidence,
        unsure=bool(reasons),
        reason="; ".join(reasons) or None,
        digits=tuple(digits),
        crops=np.stack(crops_kept),
        size=h.size,
    )


def score(confidences: list[float], widths: list[float], scoring: Scoring = SCORING) -> float:
    """The log-score of reading a candidate as these digits, of these widths (in line heights)."""
    fit = sum(math.log(max(p, 1e-12)) for p in confidences)
    wide = sum(scoring.wide_penalty * max(0.0, w - scoring.wide_from) for w in widths)
    return fit + wide + scoring.cut_penalty * (len(confidences) - 1)


def _parts(candidate):
    return [p for parts in candidate.cuts for p in parts]


def _normalise(ink, seg: Segmentation, piece) -> np.ndarray:
    """One piece's ink through the steps `preprocess` takes for one digit. The window is the piece's box
    plus 2 px: `ink_levels` keeps the box plus 1 px, so the result is that of the whole image; another
    candidate's ink in it is made paper."""
    window, mask = piece_mask(piece, seg.labels, margin=2)
    bright = ink.bright[window]
    others = (seg.labels[window] > 0) & ~mask
    if others.any():
        bright = np.where(others, np.float32(ink.paper), bright)
    return normalize_digit(*ink_levels(bright, mask, ink.paper))


def _input_size(image) -> tuple[int, int]:
    """(width, height) of the input as it stands upright: from the header for a file or bytes."""
    if isinstance(image, np.ndarray):
        return int(image.shape[1]), int(image.shape[0])
    if isinstance(image, Image.Image):
        return _upright_size(image)
    fp = io.BytesIO(bytes(image)) if isinstance(image, (bytes, bytearray, memoryview)) else Path(image)
    with Image.open(fp, formats=FORMATS) as img:  # the header only: to_grey has already read it safely
        return _upright_size(img)


def _upright_size(img: Image.Image) -> tuple[int, int]:
    turned = img.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # EXIF orientations that swap width and height
    return (img.height, img.width) if turned else img.size


def read_files(
    predictor: Predictor, paths: list[Path], debug_dir: Path | None = None, method: str | None = None
) -> list[dict]:
    """One row per image file: file and the Reading's JSON form, or file and error (the rest go on)."""
    rows = []
    for i, path in enumerate(expand_paths(paths)):
        row: dict = {"file": str(path)}
        try:
            reading = read(predictor, path, method=method)
        except DigitlabError as e:
            row["error"] = str(e)
        except OSError as e:
            row["error"] = f"{path}: cannot be read ({e.strerror or e})"
        else:
            row.update(reading.to_dict())
            if debug_dir is not None:
                row["debug"] = str(save_debug_image(reading, path, Path(debug_dir) / f"{i:04d}-{path.stem}.png"))
        rows.append(row)
    return rows


DEBUG_WIDTH = 720  # px, the drawn image's width in the debug picture
CROP_SCALE = 3  # each 28x28 crop is drawn 3x in the strip


def save_debug_image(reading: Reading, image, path: str | os.PathLike) -> Path:
    """Write the image with each digit's box, digit and confidence drawn on it (unsure in red), and the
    normalised 28x28 crops in a strip below, as a PNG; returns the path."""
    grey = to_grey(image)
    scale = DEBUG_WIDTH / grey.shape[1]
    shown = Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8)).convert("RGB")
    shown = shown.resize((DEBUG_WIDTH, max(1, round(grey.shape[0] * scale))), Image.Resampling.BILINEAR)
    font = ImageFont.load_default(size=14)
    side = SIDE * CROP_SCALE
    gap, caption = 8, 18  # px
    strip_height = side + caption + 2 * gap
    canvas = Image.new(
        "RGB", (max(DEBUG_WIDTH, gap + len(reading.digits) * (side + gap)), shown.height + strip_height), "white"
    )
    canvas.paste(shown, (0, 0))
    draw = ImageDraw.Draw(canvas)
    box_scale = DEBUG_WIDTH / reading.size[0]
    for d in reading.digits:
        colour = (220, 0, 0) if d.unsure else (0, 150, 0)
        x0, y0, x1, y1 = (round(v * box_scale) for v in d.box)
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=colour, width=2)
        draw.text((x0 + 2, max(0, y0 - 16)), f"{d.label} {d.confidence:.2f}", fill=colour, font=font)
    top = shown.height + gap
    for i, (d, crop) in enumerate(zip(reading.digits, reading.crops)):
        left = gap + i * (side + gap)
        tile = Image.fromarray(crop).resize((side, side), Image.Resampling.NEAREST)
        canvas.paste(tile.convert("RGB"), (left, top))
        draw.text((left + side / 2, top + side + 2), d.label, fill=(0, 0, 0), font=font, anchor="mt")
    if reading.text is None:
        draw.text((gap, top), reading.reason or "", fill=(220, 0, 0), font=font)
    with atomic.replacing(path) as tmp:
        canvas.save(tmp, "PNG")
    return Path(path)
