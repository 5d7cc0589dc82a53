"""Reading whole lines with a line model (architecture "line"): `digitlab.read` calls `read_lines` when
the run is one.

    grey -> line_ink                                     the image's ink (lines.line_ink)
         -> segment(...).lines                           only to group the ink into lines, top to bottom
         -> normalize_line per line                      the generator's normalisation (digitlab.data.synth.lines)
         -> one batched forward, greedy CTC decoding     digitlab.predict.ctc, the run's temperature
         -> each digit's box: x between the midpoints of its neighbours' frames, y from the ink there

A line's confidence is its best path's calibrated probability; the reading's is the product over its
lines, and it is unsure when that is below the run's threshold. A run that learnt marks (ModelConfig.nondigit)
reads a mark among the digits as config.MARK in the text: the reading is unsure, saying where, whatever its
confidence. With a count of digits to meet
(`--digits`), a best path with another count is replaced by the most probable paths with that many digits
over all lines (`ctc.count_decode`); see `digitlab.predict.count` for when that makes it unsure. NumPy
only: it runs on ONNX Runtime.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from digitlab.config import MARK
from digitlab.predict import NOT_A_DIGIT_REASON, Predictor
from digitlab.predict.count import LOG_CLEARLY, DigitCount, found_reason
from digitlab.predict.ctc import Decoded, count_decode, greedy_decode
from digitlab.predict.results import ReadDigit, Reading, no_reading, ordinal
from digitlab.preprocess import blank_reason
from digitlab.preprocess.ink import ink_levels
from digitlab.preprocess.line import LINE_HEIGHT, LINE_WIDTH, line_ink, normalize_line
from digitlab.preprocess.normalize import SIDE
from digitlab.preprocess.segment import segment

CROP_INK = 64  # of 255: a digit's crop is cut to the columns and rows with ink at least this strong
SHAPE = (LINE_HEIGHT, LINE_WIDTH)  # px (height, width): a line model's input


@dataclass(frozen=True, eq=False)
class LineInputs:
    """What the line model was given and gave for one image: each line's normalised image, where its ink
    went (placement, working-px corner), its ink mask, and the model's per-frame probabilities
    (lines, frames, classes), uncalibrated."""

    images: list
    places: list
    masks: list
    probs: np.ndarray


def line_inputs(predictor: Predictor, grey: np.ndarray) -> LineInputs | None:
    """A grey image's lines, normalised and read by the model in one call; None without ink."""
    ink = line_ink(grey)
    if ink is None:
        return None
    seg = segment(ink.mask)  # raises for more than MAX_CANDIDATES pieces, as segmentation does
    images, places, masks = [], [], []
    for line in seg.lines:
        ids = [i for candidate in line for i in candidate.whole.ids]
        mask = ink.mask & np.isin(seg.labels, ids)
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        corner = (max(int(cols[0]) - 1, 0), max(int(rows[0]) - 1, 0))  # where ink_levels' window starts
        image, placement = normalize_line(ink_levels(ink.bright, mask, ink.paper)[0])
        images.append(image)
        places.append((placement, corner))
        masks.append(mask)
    return LineInputs(images, places, masks, predictor.raw_proba(np.stack(images)))


def read_lines(
    predictor: Predictor,
    grey: np.ndarray,
    size: tuple[int, int],
    digits: DigitCount | None = None,
    inputs: LineInputs | None = None,
) -> Reading:
    """A grey image (to_grey's) of one or more lines, shown at `size` (width, height) px -> its Reading;
    with `digits`, the best reading with that many digits, all lines together. `inputs`: the image's
    `line_inputs`, when the caller has them already."""
    sx, sy = size[0] / grey.shape[1], size[1] / grey.shape[0]
    inputs = inputs or line_inputs(predictor, grey)
    if inputs is None:
        return no_reading(blank_reason(grey), size)
    images, places, masks, probs = inputs.images, inputs.places, inputs.masks, inputs.probs
    decoded = greedy_decode(probs, predictor.temperature)
    reasons = []
    if digits is not None:
        decoded, reasons = _meet_count(predictor, probs, decoded, digits)
    frame_px = LINE_WIDTH / probs.shape[1]  # normalised px per frame
    read_digits, crops, texts, confidence = [], [], [], 1.0
    for k, (line, image, (placement, corner), mask) in enumerate(zip(decoded, images, places, masks)):
        text = "".join(predictor.class_names[d] for d in line.digits)
        texts.append(text)
        confidence *= line.confidence
        if not text:
            reasons.append(f"line {k + 1}: ink, but no digit read")
        elif line.confidence < predictor.threshold:
            reasons.append(
                f"line {k + 1}: confidence {line.confidence:.3f} is below the threshold {predictor.threshold:.3f}"
            )
        centres = [(s + e) / 2 * frame_px for s, e in line.frames]
        bounds = [0.0, *((a + b) / 2 for a, b in zip(centres, centres[1:])), float(LINE_WIDTH)]
        for j, (d, c) in enumerate(zip(line.digits, line.digit_confidences)):
            lo, hi = bounds[j], bounds[j + 1]
            unsure = c < predictor.threshold
            reason = f"confidence {c:.3f} is below the threshold {predictor.threshold:.3f}" if unsure else None
            if predictor.class_names[d] == MARK:  # not a digit: refused, wherever it stands and however sure
                unsure, reason = True, NOT_A_DIGIT_REASON
                reasons.append(mark_reason(k, j))
            box = _box(mask, placement, corner, lo, hi, (sx, sy))
            read_digits.append(ReadDigit(d, predictor.class_names[d], c, box, k, unsure, reason))
            crops.append(_crop(image, lo, hi))
    return Reading(
        text="\n".join(texts),
        lines=tuple(texts),
        confidence=float(confidence),
        unsure=bool(reasons),
        reason="; ".join(reasons) or None,
        digits=tuple(read_digits),
        crops=np.stack(crops) if crops else np.zeros((0, SIDE, SIDE), np.uint8),
        size=size,
    )


def mark_reason(line: int, place: int) -> str:
    """Why a reading is refused where its line model read a mark: at 0-based `line` and `place`."""
    return f"line {line + 1}, {ordinal(place + 1)} place: {NOT_A_DIGIT_REASON}"


def mark_reasons(reading: Reading) -> list[str]:
    """The `mark_reason` of every mark (config.MARK) among a reading's digits."""
    places: dict[int, int] = {}  # line -> places so far
    found = []
    for d in reading.digits:
        place = places[d.line] = places.get(d.line, -1) + 1
        if d.label == MARK:
            found.append(mark_reason(d.line, place))
    return found


def _meet_count(
    predictor: Predictor, probs: np.ndarray, decoded: list[Decoded], digits: DigitCount
) -> tuple[list[Decoded], list[str]]:
    """The lines' decodings with `digits` digits in all, and the reason to be unsure for their count: the
    best paths as they are when their count fits; else the best paths with that count (ctc.count_decode).
    A reading so forced is unsure (see digitlab.predict.count); the found count is clear when every line was
    read surely and the paths with the expected count are less than 1/CLEARLY as likely. No path with that
    count (more digits than frames) keeps the best paths."""
    found = sum(len(line.digits) for line in decoded)
    if found in digits:
        return decoded, []
    sure = all(line.digits and line.confidence >= predictor.threshold for line in decoded)
    forced = count_decode(probs, digits.least, digits.most, predictor.temperature)
    if forced is None:
        return decoded, [found_reason(digits, found, sure)]
    gap = sum(
        math.log(max(a.confidence, 1e-300)) - math.log(max(b.confidence, 1e-300)) for a, b in zip(decoded, forced)
    )
    return forced, [found_reason(digits, found, sure and gap > LOG_CLEARLY)]


def _box(mask, placement, corner, lo: float, hi: float, scale) -> tuple[int, int, int, int]:
    """The box, in input px, of the line's ink between normalised columns lo and hi."""
    # normalised x = (working x - corner - offset) * scale + margin, so working x from normalised x:
    to_working = lambda x: (x - placement.margin[0]) / placement.scale + placement.offset[0] + corner[0]  # noqa: E731
    line_cols = np.flatnonzero(mask.any(0))
    c0 = min(max(math.floor(to_working(lo)), line_cols[0]), line_cols[-1])  # kept within the line's ink
    c1 = max(min(math.ceil(to_working(hi)), line_cols[-1] + 1), c0 + 1)
    cols = np.flatnonzero(mask[:, c0:c1].any(0)) + c0
    rows = np.flatnonzero(mask[:, c0:c1].any(1))
    if not len(cols):  # no ink in the digit's columns (a spike over a gap): its columns, the line's rows
        rows, cols = np.flatnonzero(mask.any(1)), np.array([c0, c1 - 1])
    sx, sy = scale
    return (
        math.floor(cols[0] * sx),
        math.floor(rows[0] * sy),
        math.ceil((cols[-1] + 1) * sx),
        math.ceil((rows[-1] + 1) * sy),
    )


def _crop(image: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """The digit's columns of the normalised line, fitted into SIDE x SIDE for the debug strip and page."""
    part = image[:, max(0, math.floor(lo)) : max(math.ceil(hi), math.floor(lo) + 1)]
    strong = part >= CROP_INK  # a neighbour's anti-aliased edge at the boundary is not this digit's ink
    rows, cols = np.flatnonzero(strong.any(1)), np.flatnonzero(strong.any(0))
    if len(rows):  # cut to the ink: the first and last digits' columns run to the image's ends
        part = part[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    h, w = part.shape
    scale = min((SIDE - 4) / h, (SIDE - 4) / w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    fitted = np.asarray(Image.fromarray(part).resize(size, Image.Resampling.BILINEAR))
    out = np.zeros((SIDE, SIDE), np.uint8)
    top, left = (SIDE - size[1]) // 2, (SIDE - size[0]) // 2
    out[top : top + size[1], left : left + size[0]] = fitted
    return out
