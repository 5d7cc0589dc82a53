"""Reading a whole number by segmentation, with a single-digit run (`digitlab read --method segment`).

    to_grey -> find_ink                                  the whole image, as `preprocess` does
            -> segment: lines, candidates, cuts          preprocess/segment.py
            -> normalize_digit, batched classify         the same steps as one digit; the run's calibration
                                                         and unsure rule: the wholes (and the cuts of those
                                                         too wide) in one call, the cuts of unsure ones next
            -> per candidate: whole or cut, by the classifier's combined probability

A single digit goes through exactly the steps `preprocess` takes, so it reads as `predict` reads it.
`hypotheses` asks the model and `decide` chooses, so that `bench/read_numbers.py --tune` can try other
Scorings on the same answers.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from digitlab.predict import Predictor, classify
from digitlab.predict.results import ReadDigit, Reading, no_reading
from digitlab.preprocess import NO_INK
from digitlab.preprocess.image import FORMATS, to_grey
from digitlab.preprocess.ink import find_ink, ink_levels
from digitlab.preprocess.normalize import normalize_digit
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
    """Segment the image (a path, bytes, PIL image or array) and classify its pieces; see `ask`."""
    return ask(predictor, *open_image(image), scoring)


def ask(predictor: Predictor, grey: np.ndarray, size: tuple[int, int], scoring: Scoring | None) -> Hypotheses:
    """Segment a grey image (to_grey's) shown at `size` (width, height) px, and classify its pieces. With
    `scoring`, only those `decide` can use under it: every whole candidate and the cuts' parts of a
    candidate too wide for one digit, in one call, then the cuts' parts of the candidates the model read
    unsurely, in a second call when there are any. None: every part of every cut too, in one call, so
    that any Scoring can decide (the tuner's)."""
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
        return no_reading(NO_INK, h.size)
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


def open_image(image) -> tuple[np.ndarray, tuple[int, int]]:
    """An image (a path, bytes, PIL image or array) -> (to_grey's grey image, (width, height) of the input
    as it stands upright). A file is decoded once, by to_grey; its size then comes from its header."""
    grey = to_grey(image)  # checks the file: any error names it
    if isinstance(image, np.ndarray):
        return grey, (int(image.shape[1]), int(image.shape[0]))
    if isinstance(image, Image.Image):
        return grey, _upright_size(image)
    fp = io.BytesIO(bytes(image)) if isinstance(image, (bytes, bytearray, memoryview)) else Path(image)
    with Image.open(fp, formats=FORMATS) as img:  # the header only: to_grey has read the file safely
        return grey, _upright_size(img)


def _upright_size(img: Image.Image) -> tuple[int, int]:
    turned = img.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # EXIF orientations that swap width and height
    return (img.height, img.width) if turned else img.size
